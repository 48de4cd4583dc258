//! Creating, binding and tearing down one `AF_XDP` socket.

use std::{
    ffi::CString,
    fmt, io, mem,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    sync::atomic::AtomicU32,
    time::{Duration, Instant},
};

use super::{
    BindMode, Interface, XskConfig, XskStatistics,
    error::{RingKind, SetupStep, XskError},
    mmap::Mmap,
    queues::{Queues, Rings, RxBatch, TxBatch, Umem, XskCounters},
    ring::{RawRing, RingCons, RingProd},
};

/// An `AF_XDP` socket bound to one queue of one interface, with its own UMEM
/// and its four rings. Owned by one worker thread (`Send`, not `Sync`:
/// every ring operation takes `&mut self`).
///
/// Dropping it unmaps the rings, closes the socket (which also removes it
/// from any XSKMAP) and unmaps the UMEM, in that order.
pub struct XskSocket {
    queues: Queues,
    config: XskConfig,
    ifindex: u32,
    queue_id: u32,
    zero_copy: bool,
    // Owners of what `queues` points into; fields drop in declaration
    // order, so these go after it: the rings, then the socket, then the
    // UMEM (which the kernel has pinned until the socket is released).
    _rings: [Mmap; 4],
    fd: OwnedFd,
    _umem: Mmap,
}

impl XskSocket {
    /// Creates a socket with a UMEM of `config`'s size, binds it to queue
    /// `queue_id` of `iface` in `mode` (with `XDP_USE_NEED_WAKEUP`), and
    /// posts half the frames to the fill ring.
    ///
    /// Packets only arrive once an XDP program on that queue redirects them
    /// into an XSKMAP entry holding this socket (its [`AsFd`] impl).
    ///
    /// If the queue is taken (`EBUSY`), binding is retried for up to 200 ms:
    /// the kernel frees a queue shortly *after* its previous socket is
    /// closed, so re-creating a socket at once would otherwise fail.
    pub fn new<'n>(
        iface: impl Into<Interface<'n>>,
        queue_id: u32,
        config: &XskConfig,
        mode: BindMode,
    ) -> Result<Self, XskError> {
        let umem_len = config.checked_umem_len()?;
        let ifindex = match iface.into() {
            Interface::Index(index) => index,
            Interface::Name(name) => ifindex_of(name)?,
        };
        let fail = |(step, source)| XskError::Setup {
            step,
            ifindex,
            queue_id,
            source,
        };

        let fd = socket().map_err(|e| fail((SetupStep::Socket, e)))?;
        let umem = register_umem(fd.as_fd(), config, umem_len).map_err(fail)?;
        let (maps, raw) = map_rings(fd.as_fd(), config).map_err(fail)?;
        let flags = libc::XDP_USE_NEED_WAKEUP
            | match mode {
                BindMode::Copy => libc::XDP_COPY,
                BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                BindMode::Auto => 0,
            };
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue_id,
            sxdp_shared_umem_fd: 0,
        };
        bind(fd.as_fd(), &addr).map_err(|e| fail((SetupStep::Bind, e)))?;
        let (options, _) = getsockopt::<libc::xdp_options>(fd.as_fd(), libc::XDP_OPTIONS)
            .map_err(|e| fail((SetupStep::Options, e)))?;
        let zero_copy = options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;

        // SAFETY: each `RawRing` points into its mapping (checked by
        // `map_ring`), which `Self` owns and drops after `queues`; the
        // kernel only consumes from the fill and TX rings and only produces
        // into the completion and RX rings, and these are the only user
        // ends.
        let rings = unsafe {
            Rings {
                fill: RingProd::new(raw.fill),
                comp: RingCons::new(raw.comp),
                rx: RingCons::new(raw.rx),
                tx: RingProd::new(raw.tx),
            }
        };
        // SAFETY: the UMEM mapping is owned by `Self` and dropped after
        // `queues`; nothing else in the process uses it; `frame_size` (2048
        // or 4096) divides its length.
        let view = unsafe { Umem::new(umem.ptr(), umem.len(), config.frame_size) };
        let queues = Queues::new(
            rings,
            view,
            fd.as_raw_fd(),
            zero_copy,
            config.meta_in_head,
            config.rx_frames(),
        );
        Ok(Self {
            queues,
            config: *config,
            ifindex,
            queue_id,
            zero_copy,
            _rings: maps,
            fd,
            _umem: umem,
        })
    }

    /// Up to `max` received frames. Returns an empty batch at once if there
    /// are none (after waking the driver up if the fill ring asks for it).
    pub fn rx(&mut self, max: usize) -> RxBatch<'_> {
        self.queues.rx(max)
    }

    /// Whether the RX ring holds frames (without taking them).
    pub fn has_rx(&mut self) -> bool {
        self.queues.rx_ready()
    }

    /// Reaps the completion ring, then reserves up to `max` free frames (as
    /// many as are free and fit the TX ring) to write and send.
    pub fn tx(&mut self, max: usize) -> TxBatch<'_> {
        self.queues.tx(max)
    }

    /// Moves the frames the kernel has finished sending back to the free
    /// list; returns how many. [`tx`](Self::tx) does this too; call it as
    /// well when idle so that the completion ring does not fill up.
    pub fn complete(&mut self) -> usize {
        self.queues.complete()
    }

    /// Wakes the kernel up to send what is still in the TX ring (copy mode
    /// sends a bounded number of frames per wakeup, and stops when the
    /// completion ring or the send buffer is full). Only makes a syscall
    /// if the kernel asked for it and frames are waiting.
    pub fn kick_tx(&mut self) -> io::Result<()> {
        self.queues.wakeup_tx()
    }

    /// Frames submitted to the TX ring that the kernel has not taken yet.
    pub fn tx_in_flight(&self) -> usize {
        self.queues.tx_in_flight() as usize
    }

    /// Frames on the free list (available for TX).
    pub fn free_frames(&self) -> usize {
        self.queues.free_frames()
    }

    /// Bytes per frame: the longest packet that can be sent or received.
    pub fn frame_size(&self) -> usize {
        self.queues.frame_size() as usize
    }

    /// The configuration the socket was created with.
    pub fn config(&self) -> &XskConfig {
        &self.config
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The queue the socket is bound to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Whether the kernel bound in zero-copy mode (`XDP_OPTIONS`).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// User-space counters.
    pub fn counters(&self) -> XskCounters {
        self.queues.counters()
    }

    /// The kernel's counters (`getsockopt(XDP_STATISTICS)`); a syscall.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        let (s, _) = getsockopt::<libc::xdp_statistics>(self.fd.as_fd(), libc::XDP_STATISTICS)?;
        // Kernels before 5.9 fill only the first three; the rest stay 0.
        Ok(XskStatistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

impl AsFd for XskSocket {
    /// The socket, for the XSKMAP and for a poller (`mio::unix::SourceFd`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("ifindex", &self.ifindex)
            .field("queue_id", &self.queue_id)
            .field("zero_copy", &self.zero_copy)
            .field("free_frames", &self.free_frames())
            .finish_non_exhaustive()
    }
}

/// `XskSocket` moves to its worker thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<XskSocket>();
};

/// Where the four rings are, before we take our ends of them.
struct RawRings {
    fill: RawRing<u64>,
    comp: RawRing<u64>,
    rx: RawRing<libc::xdp_desc>,
    tx: RawRing<libc::xdp_desc>,
}

/// A step's failure, before the socket's identity is added.
type StepError = (SetupStep, io::Error);

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; no pointers involved.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Maps the UMEM and registers it with the socket.
fn register_umem(fd: BorrowedFd<'_>, config: &XskConfig, len: usize) -> Result<Mmap, StepError> {
    let umem = Mmap::anonymous(len, config.hugepages).map_err(|e| (SetupStep::UmemMmap, e))?;
    let reg = libc::xdp_umem_reg {
        addr: umem.ptr().as_ptr() as u64,
        len: len as u64,
        chunk_size: config.frame_size,
        headroom: config.frame_headroom,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(fd, libc::XDP_UMEM_REG, &reg).map_err(|e| (SetupStep::UmemReg, e))?;
    Ok(umem)
}

/// Sizes the four rings and maps them (fill, completion, RX, TX).
fn map_rings(fd: BorrowedFd<'_>, config: &XskConfig) -> Result<([Mmap; 4], RawRings), StepError> {
    for (opt, size, ring) in [
        (libc::XDP_UMEM_FILL_RING, config.fill_size, RingKind::Fill),
        (
            libc::XDP_UMEM_COMPLETION_RING,
            config.completion_size,
            RingKind::Completion,
        ),
        (libc::XDP_RX_RING, config.rx_size, RingKind::Rx),
        (libc::XDP_TX_RING, config.tx_size, RingKind::Tx),
    ] {
        let entries = size as libc::c_int;
        setsockopt(fd, opt, &entries).map_err(|e| (SetupStep::RingSize(ring), e))?;
    }
    let step = SetupStep::MmapOffsets;
    let (off, len) =
        getsockopt::<libc::xdp_mmap_offsets>(fd, libc::XDP_MMAP_OFFSETS).map_err(|e| (step, e))?;
    if len as usize != mem::size_of::<libc::xdp_mmap_offsets>() {
        // Kernels before 5.4 have no `flags` word (hence no need_wakeup).
        return Err((
            step,
            io::Error::new(io::ErrorKind::Unsupported, "pre-5.4 ring layout"),
        ));
    }
    let mapped = |ring| move |e| (SetupStep::RingMmap(ring), e);
    let pgoff = |p: u64| p as libc::off_t;
    let (fill_map, fill) = map_ring(
        fd,
        &off.fr,
        config.fill_size,
        pgoff(libc::XDP_UMEM_PGOFF_FILL_RING),
    )
    .map_err(mapped(RingKind::Fill))?;
    let (comp_map, comp) = map_ring(
        fd,
        &off.cr,
        config.completion_size,
        pgoff(libc::XDP_UMEM_PGOFF_COMPLETION_RING),
    )
    .map_err(mapped(RingKind::Completion))?;
    let (rx_map, rx) = map_ring(fd, &off.rx, config.rx_size, libc::XDP_PGOFF_RX_RING)
        .map_err(mapped(RingKind::Rx))?;
    let (tx_map, tx) = map_ring(fd, &off.tx, config.tx_size, libc::XDP_PGOFF_TX_RING)
        .map_err(mapped(RingKind::Tx))?;
    Ok((
        [fill_map, comp_map, rx_map, tx_map],
        RawRings { fill, comp, rx, tx },
    ))
}

/// How long `bind` retries `EBUSY`, in steps of [`BIND_RETRY_STEP`].
const BIND_RETRY_FOR: Duration = Duration::from_millis(200);
const BIND_RETRY_STEP: Duration = Duration::from_millis(2);

/// Binds `fd` to `addr`'s interface and queue.
///
/// A socket closed on the same queue releases it from a kernel work item
/// (`xp_release_deferred`), shortly after `close` returns: binding again at
/// once fails with `EBUSY` for a moment (seen here: one retry after a
/// fraction of a millisecond). So `EBUSY` is retried for up to
/// [`BIND_RETRY_FOR`]; a queue that is really taken still fails, just
/// later. A failed bind leaves the socket as it was, ready to bind again.
fn bind(fd: BorrowedFd<'_>, addr: &libc::sockaddr_xdp) -> io::Result<()> {
    let start = Instant::now();
    loop {
        // SAFETY: `addr` is a valid `sockaddr_xdp` of the length given,
        // read by the kernel during the call only.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const *addr).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) || start.elapsed() >= BIND_RETRY_FOR {
            return Err(err);
        }
        std::thread::sleep(BIND_RETRY_STEP);
    }
}

fn ifindex_of(name: &str) -> Result<u32, XskError> {
    let err = |source| XskError::Interface {
        name: name.to_owned(),
        source,
    };
    let c_name = CString::new(name).map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(index)
}

/// `setsockopt(fd, SOL_XDP, name, value)`.
fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the kernel reads at most `size_of::<T>()` bytes from `value`,
    // a valid reference for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (&raw const *value).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Plain structs of integers: any bit pattern (zero included) is valid.
///
/// # Safety
/// Implement only for such types.
unsafe trait Pod: Copy {}
// SAFETY: integers only.
unsafe impl Pod for libc::xdp_mmap_offsets {}
// SAFETY: integers only.
unsafe impl Pod for libc::xdp_options {}
// SAFETY: integers only.
unsafe impl Pod for libc::xdp_statistics {}

/// `getsockopt(fd, SOL_XDP, name)`: the value (zero where the kernel wrote
/// nothing) and the length the kernel wrote.
fn getsockopt<T: Pod>(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<(T, libc::socklen_t)> {
    // SAFETY: `T: Pod`, so all zeros is a valid `T`.
    let mut value: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes to `value`, a valid
    // `T` for which any bytes are valid (`Pod`), and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((value, len))
}

/// Maps one ring (`entries` descriptors of `T` after the offsets in `off`)
/// and finds its words in the mapping.
fn map_ring<T>(
    fd: BorrowedFd<'_>,
    off: &libc::xdp_ring_offset,
    entries: u32,
    pgoff: libc::off_t,
) -> io::Result<(Mmap, RawRing<T>)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected ring offsets from the kernel",
        )
    };
    let desc = usize::try_from(off.desc).map_err(|_| bad())?;
    let len = mem::size_of::<T>()
        .checked_mul(entries as usize)
        .and_then(|n| n.checked_add(desc))
        .ok_or_else(bad)?;
    if desc % mem::align_of::<T>() != 0 {
        return Err(bad());
    }
    let map = Mmap::ring(fd, len, pgoff)?;
    // Each word must be aligned and lie before the descriptors.
    let word = |offset: u64| {
        let offset = usize::try_from(offset)
            .ok()
            .filter(|&o| o % 4 == 0 && o + 4 <= desc);
        // SAFETY: `offset + 4 <= desc < len`: inside the mapping.
        offset.map(|o| unsafe { map.ptr().add(o) }.cast::<AtomicU32>())
    };
    let (Some(producer), Some(consumer), Some(flags)) =
        (word(off.producer), word(off.consumer), word(off.flags))
    else {
        return Err(bad());
    };
    // SAFETY: `desc + entries * size_of::<T>() == len`: inside the mapping.
    let descs = unsafe { map.ptr().add(desc) }.cast::<T>();
    let raw = RawRing {
        producer,
        consumer,
        flags,
        descs,
        size: entries,
    };
    Ok((map, raw))
}
