//! TUN devices (`/dev/net/tun`, layer 3, no packet-info header): the edge
//! hands decapsulated packets to the kernel through one and reads replies
//! from it. Optionally with virtio-net headers (`IFF_VNET_HDR`), so that a
//! write can carry a GSO packet (see [`crate::gro`]).

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
            flags: IFF_TUN | IFF_NO_PI | if vnet_hdr { IFF_VNET_HDR } else { 0 },
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
