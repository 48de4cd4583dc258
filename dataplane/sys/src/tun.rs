//! TUN devices (`/dev/net/tun`, layer 3, no packet-info header): the edge
//! hands decapsulated packets to the kernel through one and reads replies
//! from it. Optionally with virtio-net headers (`IFF_VNET_HDR`), so that a
//! write can carry a GSO packet (see [`crate::gro`]).
//!
//! A device may have several queues ([`Tun::open_queues`],
//! `IFF_MULTI_QUEUE`): one descriptor each, every one with the same flags
//! (virtio-net headers or not), one per edge worker. The kernel's tun
//! driver then steers each packet it sends to user space to the queue
//! user space last wrote a packet of the same flow from (its flow table,
//! keyed by the flow's symmetric hash: a reply finds the queue its
//! request came from; entries expire after about 3 s without a write,
//! at most 4,096 flows), other packets by their hash alone.

use std::{
    fs::{File, OpenOptions},
    io::{self, IoSlice, Read as _, Write as _},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
        unix::fs::OpenOptionsExt as _,
    },
};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// The kernel's `MAX_TAP_QUEUES`.
pub const MAX_QUEUES: usize = 256;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags, padded to
/// the kernel's 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN device, non-blocking. Deleted by the kernel when dropped
/// (unless made persistent elsewhere).
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    vnet_hdr: bool,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name`.
    pub fn open(name: &str) -> io::Result<Self> {
        Self::open_with(name, false)
    }

    /// Creates (or attaches to) the TUN device `name`; with `vnet_hdr`,
    /// every packet read or written is preceded by a 10-byte
    /// `struct virtio_net_hdr` ([`crate::gro::VnetHdr`]). No receive
    /// offloads are enabled: reads are never GSO packets and have complete
    /// checksums.
    pub fn open_with(name: &str, vnet_hdr: bool) -> io::Result<Self> {
        Self::attach(name, vnet_hdr, false)
    }

    /// Creates the TUN device `name` with `queues` queues (at most
    /// [`MAX_QUEUES`]), every one with the same flags ([`Tun::open_with`]).
    /// One queue is [`Tun::open_with`]: a device of one queue, as before.
    ///
    /// The device must not exist: with several queues the kernel would
    /// otherwise attach them to another process's device (another edge
    /// using the same name), and the two would share its traffic.
    pub fn open_queues(name: &str, vnet_hdr: bool, queues: usize) -> io::Result<Vec<Self>> {
        if queues <= 1 {
            return Ok(vec![Self::open_with(name, vnet_hdr)?]);
        }
        if queues > MAX_QUEUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_QUEUES} TUN queues"),
            ));
        }
        if exists(name)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("network device {name} exists already (another sluice edge?)"),
            ));
        }
        (0..queues)
            .map(|_| Self::attach(name, vnet_hdr, true))
            .collect()
    }

    fn attach(name: &str, vnet_hdr: bool, multi_queue: bool) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad TUN name"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN
                | IFF_NO_PI
                | if vnet_hdr { IFF_VNET_HDR } else { 0 }
                | if multi_queue { IFF_MULTI_QUEUE } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `file` is an open /dev/net/tun descriptor; TUNSETIFF reads
        // and writes a `struct ifreq`, which `req` is laid out as (40 bytes,
        // name then flags) and which outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &raw mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        Ok(Self {
            file,
            name: String::from_utf8_lossy(&req.name[..end]).into_owned(),
            vnet_hdr,
        })
    }

    /// True if packets carry virtio-net headers.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The device's name as the kernel assigned it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet (after its virtio-net header, with
    /// [`Tun::has_vnet_hdr`]); `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet (without virtio-net header).
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }

    /// Writes a virtio-net header and a packet in one `writev`: one packet,
    /// or one GSO packet the kernel segments where it must.
    pub fn send_vnet(&self, hdr: &[u8], packet: &[u8]) -> io::Result<usize> {
        (&self.file).write_vectored(&[IoSlice::new(hdr), IoSlice::new(packet)])
    }
}

/// Whether a network device `name` exists in this network namespace.
fn exists(name: &str) -> io::Result<bool> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad TUN name"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => Ok(false),
        _ => Err(e),
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
