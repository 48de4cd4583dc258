//! Batched UDP sockets for the datagram transport: many datagrams per
//! syscall (`sendmmsg`, `recvmmsg`), UDP segmentation offload on send
//! (`UDP_SEGMENT`, "GSO") and coalescing on receive (`UDP_GRO`) where the
//! kernel offers them, and `SO_REUSEPORT` groups whose datagrams are
//! steered to a socket by a field of their payload ([`steer`]).
//!
//! - [`UdpSocket`]: one non-blocking IPv4 or IPv6 socket, bound (the
//!   edge's workers, optionally in a reuseport group) or connected (a
//!   gateway's socket to one edge). Usable with mio as an
//!   [`mio::event::Source`] or through its descriptor.
//! - [`SendBatch`]: caller-owned slots a worker seals records into, then
//!   [`UdpSocket::send_batch`]; [`UdpSocket::send_many`] sends from the
//!   caller's own slices and [`UdpSocket::send_segments`] from one
//!   contiguous buffer of equal-sized records.
//! - [`RecvBatch`]: caller-owned slots [`UdpSocket::recv_batch`] fills;
//!   its records come out one per datagram, coalesced (GRO) receives split
//!   back into the datagrams they were made of.
//!
//! Nothing here allocates after construction: every syscall's message
//! headers live on the stack (at most [`MAX_BATCH`] at a time), the data in
//! the batches' slabs. GSO is probed once per socket (`getsockopt`) and
//! used whenever consecutive datagrams to one destination have equal
//! lengths (the last of a run may be shorter); if the kernel refuses a GSO
//! send with `EIO` (a device without checksum offload), the socket stops
//! using GSO for good and the datagrams go one message each.
//!
//! What it must not do: look inside a datagram (apart from the steering
//! program's one field), decide anything about sessions, or retry on its
//! own beyond `EINTR`: what to do when the socket is full or the kernel
//! refuses is the caller's (see each method's "Errors").

use std::{
    io,
    mem::{self, size_of},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

use mio::{Interest, Registry, Token, event::Source, unix::SourceFd};

mod batch;
pub mod steer;
#[cfg(test)]
mod tests;

pub use batch::{Records, RecordsMut, RecvBatch, SendBatch};
pub use steer::{DATAGRAM_RECEIVER_OFFSET, ReuseportSteering, SHORT_DATAGRAM_INDEX};

/// The most messages one `sendmmsg`/`recvmmsg` carries (and the most
/// datagrams one `sendmmsg` of [`UdpSocket::send_batch`] plans at a time).
pub const MAX_BATCH: usize = 64;
/// The largest UDP payload (IPv4's limit; IPv6's is 20 bytes more, not
/// used): a datagram, or a whole GSO send, is at most this long.
pub const MAX_PAYLOAD: usize = 65_507;
/// The most segments one GSO send carries (the kernel's
/// `UDP_MAX_SEGMENTS`: 64 since 4.18, 128 on newer kernels; the lower).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// The slot length a [`RecvBatch`] needs so that a coalesced (GRO) receive
/// is never cut short.
pub const GRO_SLOT_LEN: usize = 65_535;

/// How a socket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // four independent switches
pub struct UdpConfig {
    /// Set `SO_REUSEPORT` before binding (the edge's workers share one
    /// port, one socket each; see [`UdpSocket::attach_reuseport_cbpf`]).
    pub reuseport: bool,
    /// Use UDP GSO on send if the kernel offers it (default true).
    pub gso: bool,
    /// Ask for UDP GRO on receive (`UDP_GRO`); ignored if the kernel does
    /// not offer it ([`UdpSocket::gro`] says). Receives are then up to
    /// 64 KiB long: give [`RecvBatch`] slots of [`GRO_SLOT_LEN`].
    pub gro: bool,
    /// Set `IPV6_V6ONLY` on an IPv6 socket (default false: the kernel's
    /// dual-stack default, IPv4 peers appear as plain IPv4 addresses).
    pub v6_only: bool,
    /// The receive buffer in bytes (the kernel doubles it): `SO_RCVBUFFORCE`
    /// where the process may (`CAP_NET_ADMIN`), else `SO_RCVBUF`, capped at
    /// `net.core.rmem_max`; `None` keeps the default.
    pub recv_buffer: Option<usize>,
    /// The send buffer in bytes (likewise: `SO_SNDBUFFORCE`, else
    /// `SO_SNDBUF` capped at `net.core.wmem_max`).
    pub send_buffer: Option<usize>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            reuseport: false,
            gso: true,
            gro: false,
            v6_only: false,
            recv_buffer: None,
            send_buffer: None,
        }
    }
}

/// What a socket's batched calls have done so far (relaxed counters,
/// bumped once per syscall, not per datagram; the per-packet `send`,
/// `send_to` and `recv_from` are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// `sendmmsg` calls that sent at least one message.
    pub send_calls: u64,
    /// Messages sent (a GSO message counts once).
    pub sent_messages: u64,
    /// Of those, GSO messages (more than one datagram each).
    pub sent_gso_messages: u64,
    /// Datagrams sent (each segment of a GSO message counts).
    pub sent_datagrams: u64,
    /// Datagrams the kernel refused (dropped from a [`SendBatch`]).
    pub send_errors: u64,
    /// GSO sends the kernel refused, resent without GSO.
    pub gso_fallbacks: u64,
    /// `recvmmsg` calls that received at least one message.
    pub recv_calls: u64,
    /// Messages received (a coalesced receive counts once).
    pub recv_messages: u64,
    /// Of those, coalesced ones (GRO, more than one datagram).
    pub recv_gro_messages: u64,
    /// Datagrams received and handed out (after splitting).
    pub recv_datagrams: u64,
    /// Messages longer than their slot: a plain datagram so cut is
    /// dropped; of a coalesced one, the whole segments that fit are kept.
    pub recv_truncated: u64,
}

#[derive(Debug, Default)]
struct Counters {
    send_calls: AtomicU64,
    sent_messages: AtomicU64,
    sent_gso_messages: AtomicU64,
    sent_datagrams: AtomicU64,
    send_errors: AtomicU64,
    gso_fallbacks: AtomicU64,
    recv_calls: AtomicU64,
    recv_messages: AtomicU64,
    recv_gro_messages: AtomicU64,
    recv_datagrams: AtomicU64,
    recv_truncated: AtomicU64,
}

fn bump(counter: &AtomicU64, by: usize) {
    if by != 0 {
        counter.fetch_add(by as u64, Relaxed);
    }
}

/// A non-blocking UDP socket (IPv4 or IPv6) with batched I/O. Owned by one
/// worker; `Send` and `Sync` (its only shared state is the GSO flag and
/// the counters, both atomic).
#[derive(Debug)]
pub struct UdpSocket {
    fd: OwnedFd,
    v6: bool,
    gso: AtomicBool,
    gro: bool,
    counters: Counters,
}

impl UdpSocket {
    /// A socket bound to `addr` (port 0: the kernel picks one), with
    /// `SO_REUSEPORT` first if `config` asks: every socket of a reuseport
    /// group is bound to the same address this way, in the order that
    /// gives their group indices ([`steer`]).
    ///
    /// # Errors
    /// The kernel's, from `socket`, `setsockopt` or `bind`
    /// (`EADDRINUSE` when the port is taken by a socket outside the group).
    pub fn bind(addr: SocketAddr, config: &UdpConfig) -> io::Result<Self> {
        let sock = Self::new(addr.is_ipv6(), config)?;
        let (raw, len) = SockAddr::new(addr, sock.v6);
        // SAFETY: `raw` is a `sockaddr_in`/`sockaddr_in6` of `len` bytes that
        // outlives the call; `bind` only reads it.
        let rc = unsafe { libc::bind(sock.fd.as_raw_fd(), raw.as_ptr(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// A socket connected to `peer` from an ephemeral port (a gateway's
    /// socket to one edge): sends without a destination go to `peer`, and
    /// only `peer`'s datagrams are received.
    ///
    /// # Errors
    /// The kernel's (`ENETUNREACH`, ...).
    pub fn connect(peer: SocketAddr, config: &UdpConfig) -> io::Result<Self> {
        let sock = Self::new(peer.is_ipv6(), config)?;
        sock.connect_to(peer)?;
        Ok(sock)
    }

    /// As [`UdpSocket::connect`], from the local address `local`.
    ///
    /// # Errors
    /// The kernel's, from `bind` or `connect`.
    pub fn connect_from(
        local: SocketAddr,
        peer: SocketAddr,
        config: &UdpConfig,
    ) -> io::Result<Self> {
        let sock = Self::bind(local, config)?;
        sock.connect_to(peer)?;
        Ok(sock)
    }

    fn connect_to(&self, peer: SocketAddr) -> io::Result<()> {
        let (raw, len) = SockAddr::new(peer, self.v6);
        // SAFETY: as in `bind`: `raw` is a valid address of `len` bytes.
        let rc = unsafe { libc::connect(self.fd.as_raw_fd(), raw.as_ptr(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn new(v6: bool, config: &UdpConfig) -> io::Result<Self> {
        let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: a plain syscall with constant arguments; a non-negative
        // result is a new descriptor that nothing else owns.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by `socket` and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Self::from_fd(fd, v6, config)
    }

    /// Sets `config`'s options on a fresh datagram socket and probes the
    /// offloads (also used by the tests on a Unix socket pair).
    fn from_fd(fd: OwnedFd, v6: bool, config: &UdpConfig) -> io::Result<Self> {
        let raw = fd.as_fd();
        if config.reuseport {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, &1)?;
        }
        if v6 && config.v6_only {
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &1)?;
        }
        // With CAP_NET_ADMIN (the gateway and the edge run as root) the
        // FORCE options take the size asked for: plain SO_RCVBUF is capped
        // at `net.core.rmem_max`, 208 KiB on a stock kernel, which a burst
        // of a few hundred datagrams overflows.
        for (bytes, force, plain) in [
            (config.recv_buffer, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (config.send_buffer, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if let Some(bytes) = bytes {
                let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
                if setsockopt(raw, libc::SOL_SOCKET, force, &bytes).is_err() {
                    setsockopt(raw, libc::SOL_SOCKET, plain, &bytes)?;
                    // Without CAP_NET_ADMIN the kernel caps it silently
                    // (it reports twice what it grants).
                    let got = getsockopt_int(raw, libc::SOL_SOCKET, plain).unwrap_or(0) / 2;
                    if got < bytes {
                        log::warn!(
                            "UDP socket buffer: asked for {bytes} bytes, the kernel granted {got} (net.core.{}_max; run as root or raise it): bursts above it are dropped",
                            if plain == libc::SO_RCVBUF {
                                "rmem"
                            } else {
                                "wmem"
                            }
                        );
                    }
                }
            }
        }
        // UDP_SEGMENT is readable on kernels that segment (4.18+); reading
        // it changes nothing (setting it would make every send a GSO send).
        let gso = config.gso && getsockopt_int(raw, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
        // UDP_GRO (5.0+): ENOPROTOOPT where the kernel does not coalesce.
        let gro = config.gro && setsockopt(raw, libc::SOL_UDP, libc::UDP_GRO, &1).is_ok();
        Ok(Self {
            fd,
            v6,
            gso: AtomicBool::new(gso),
            gro,
            counters: Counters::default(),
        })
    }

    /// True for an IPv6 socket.
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    /// True while sends use UDP GSO (offered by the kernel, allowed by the
    /// config, not given up after an `EIO`).
    pub fn gso(&self) -> bool {
        self.gso.load(Relaxed)
    }

    /// True if receives may be coalesced (`UDP_GRO` is on).
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The counters so far.
    pub fn stats(&self) -> UdpStats {
        let c = &self.counters;
        UdpStats {
            send_calls: c.send_calls.load(Relaxed),
            sent_messages: c.sent_messages.load(Relaxed),
            sent_gso_messages: c.sent_gso_messages.load(Relaxed),
            sent_datagrams: c.sent_datagrams.load(Relaxed),
            send_errors: c.send_errors.load(Relaxed),
            gso_fallbacks: c.gso_fallbacks.load(Relaxed),
            recv_calls: c.recv_calls.load(Relaxed),
            recv_messages: c.recv_messages.load(Relaxed),
            recv_gro_messages: c.recv_gro_messages.load(Relaxed),
            recv_datagrams: c.recv_datagrams.load(Relaxed),
            recv_truncated: c.recv_truncated.load(Relaxed),
        }
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    /// The kernel's, from `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: `getsockname` writes at most `len` bytes into `raw`.
        self.name(|fd, raw, len| unsafe { libc::getsockname(fd, raw, len) })
    }

    /// The connected peer.
    ///
    /// # Errors
    /// `ENOTCONN` for an unconnected socket.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: `getpeername` writes at most `len` bytes into `raw`.
        self.name(|fd, raw, len| unsafe { libc::getpeername(fd, raw, len) })
    }

    fn name(
        &self,
        call: impl FnOnce(RawFd, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
    ) -> io::Result<SocketAddr> {
        let mut raw = SockAddr::ZERO;
        let mut len = SockAddr::LEN;
        if call(self.fd.as_raw_fd(), raw.as_mut_ptr(), &raw mut len) < 0 {
            return Err(io::Error::last_os_error());
        }
        raw.to_std(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }

    /// Sends one datagram to the connected peer (`send`): the per-packet
    /// baseline.
    ///
    /// # Errors
    /// `WouldBlock` if the socket buffer is full; the kernel's otherwise.
    pub fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `datagram` is readable for its length during the call.
            let rc = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    datagram.as_ptr().cast(),
                    datagram.len(),
                    0,
                )
            };
            if let Some(r) = retry(rc) {
                return r;
            }
        }
    }

    /// Sends one datagram to `to` (`sendto`): the per-packet baseline.
    ///
    /// # Errors
    /// As [`UdpSocket::send`].
    pub fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        let (raw, len) = SockAddr::new(to, self.v6);
        loop {
            // SAFETY: `datagram` is readable for its length and `raw` is a
            // valid address of `len` bytes, both for the call.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    datagram.as_ptr().cast(),
                    datagram.len(),
                    0,
                    raw.as_ptr(),
                    len,
                )
            };
            if let Some(r) = retry(rc) {
                return r;
            }
        }
    }

    /// Receives one datagram (`recvfrom`): its length (cut to `buf`'s if
    /// longer, as the kernel does) and source. The per-packet baseline.
    ///
    /// # Errors
    /// `WouldBlock` when nothing is waiting; the kernel's otherwise.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut raw = SockAddr::ZERO;
        loop {
            let mut len = SockAddr::LEN;
            // SAFETY: `buf` is writable for its length and `raw` for `len`
            // bytes during the call; the kernel writes no more.
            let rc = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    raw.as_mut_ptr(),
                    &raw mut len,
                )
            };
            if let Some(r) = retry(rc) {
                return r.map(|n| (n, raw.to_std(len).unwrap_or(UNSPECIFIED)));
            }
        }
    }

    /// Sends the datagrams waiting in `batch`, oldest first, in as few
    /// `sendmmsg` calls as the socket takes (one per [`MAX_BATCH`]
    /// datagrams), with GSO for runs of equal length to one destination.
    /// Those sent leave the batch; returns how many.
    ///
    /// # Errors
    /// - `WouldBlock`: the socket buffer is full and nothing was sent; the
    ///   batch is unchanged (wait for writability). When some were sent
    ///   first, the result is `Ok` with their number and the rest wait.
    /// - Another error: the kernel refused the oldest datagram (too long,
    ///   no route, blocked by a firewall: `EPERM`, an address of the
    ///   wrong family, ...). That one datagram is dropped
    ///   from the batch (counted in [`UdpStats::send_errors`]) so that a
    ///   retry makes progress; the others wait. When some were sent
    ///   first, the result is `Ok` and the error comes on the next call.
    pub fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let mut sent = 0;
        while !batch.is_empty() {
            let mut records: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
            let mut dests = [None; MAX_BATCH];
            let n = batch.pending_into(&mut records, &mut dests);
            match self.send_records(&records[..n], &dests[..n]) {
                Ok(k) => {
                    batch.discard(k);
                    sent += k;
                    if k < n {
                        break;
                    }
                }
                Err(_) if sent > 0 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    batch.discard(1);
                    bump(&self.counters.send_errors, 1);
                    return Err(e);
                }
            }
        }
        Ok(sent)
    }

    /// Sends `datagrams`, each its own datagram, to `to` (`None`: the
    /// connected peer), in `sendmmsg` calls of up to [`MAX_BATCH`], with
    /// GSO for runs of equal length. Returns how many went (the first
    /// ones); the caller keeps the rest.
    ///
    /// # Errors
    /// `WouldBlock` if none went; the kernel's refusal of the first
    /// datagram otherwise (nothing is dropped: the caller decides).
    pub fn send_many(&self, datagrams: &[&[u8]], to: Option<SocketAddr>) -> io::Result<usize> {
        let dests = [to; MAX_BATCH];
        let mut sent = 0;
        for chunk in datagrams.chunks(MAX_BATCH) {
            match self.send_records(chunk, &dests[..chunk.len()]) {
                Ok(k) => {
                    sent += k;
                    if k < chunk.len() {
                        break;
                    }
                }
                Err(_) if sent > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// Sends `buf` as datagrams of `segment` bytes each (the last one may
    /// be shorter) to `to` (`None`: the connected peer): with GSO, one
    /// message per [`MAX_GSO_SEGMENTS`] datagrams (or 64 KiB); without,
    /// one `sendmmsg` per [`MAX_BATCH`] datagrams. Returns how many
    /// datagrams went: the first `n * segment` bytes of `buf`.
    ///
    /// # Errors
    /// `InvalidInput` for a zero `segment`; otherwise as
    /// [`UdpSocket::send_many`].
    pub fn send_segments(
        &self,
        buf: &[u8],
        segment: usize,
        to: Option<SocketAddr>,
    ) -> io::Result<usize> {
        if segment == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "zero segment size",
            ));
        }
        let mut records: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        let dests = [to; MAX_BATCH];
        let mut sent = 0;
        let mut chunks = buf.chunks(segment).peekable();
        while chunks.peek().is_some() {
            let mut n = 0;
            for (slot, chunk) in records.iter_mut().zip(chunks.by_ref()) {
                *slot = chunk;
                n += 1;
            }
            match self.send_records(&records[..n], &dests[..n]) {
                Ok(k) => {
                    sent += k;
                    if k < n {
                        break;
                    }
                }
                Err(_) if sent > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// One `sendmmsg` of up to [`MAX_BATCH`] records: returns how many
    /// records (not messages) went.
    fn send_records(&self, records: &[&[u8]], dests: &[Option<SocketAddr>]) -> io::Result<usize> {
        debug_assert!(records.len() <= MAX_BATCH && records.len() == dests.len());
        if records.is_empty() {
            return Ok(0);
        }
        let mut gso = self.gso.load(Relaxed);
        loop {
            let mut plan = [Msg::default(); MAX_BATCH];
            let nmsgs = plan_messages(records, dests, gso, &mut plan);
            let plan = &plan[..nmsgs];

            let mut iovs = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_BATCH];
            for (iov, rec) in iovs.iter_mut().zip(records) {
                // The kernel only reads through a send's iovecs.
                iov.iov_base = rec.as_ptr().cast_mut().cast();
                iov.iov_len = rec.len();
            }
            let mut names = [SockAddr::ZERO; MAX_BATCH];
            let mut name_lens: [libc::socklen_t; MAX_BATCH] = [0; MAX_BATCH];
            let mut cmsgs = [SegmentCmsg::new(0); MAX_BATCH];
            for (i, m) in plan.iter().enumerate() {
                if let Some(to) = dests[m.start] {
                    (names[i], name_lens[i]) = SockAddr::new(to, self.v6);
                }
                if m.seg != 0 {
                    cmsgs[i] = SegmentCmsg::new(m.seg);
                }
            }
            // One base pointer per array, every header's derived from it.
            let (iov_base, name_base, cmsg_base) =
                (iovs.as_mut_ptr(), names.as_mut_ptr(), cmsgs.as_mut_ptr());
            // SAFETY: `mmsghdr` is integers and raw pointers: all zero is
            // a valid value (null pointers, zero lengths).
            let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
            for (i, (h, m)) in hdrs.iter_mut().zip(plan).enumerate() {
                let h = &mut h.msg_hdr;
                h.msg_iov = iov_base.wrapping_add(m.start);
                h.msg_iovlen = m.count;
                if name_lens[i] != 0 {
                    h.msg_name = name_base.wrapping_add(i).cast();
                    h.msg_namelen = name_lens[i];
                }
                if m.seg != 0 {
                    h.msg_control = cmsg_base.wrapping_add(i).cast();
                    h.msg_controllen = size_of::<SegmentCmsg>();
                }
            }
            // SAFETY: `hdrs[..nmsgs]` point into `iovs`, `names` and
            // `cmsgs` (alive until the end of this iteration), and the
            // iovecs into `records` (borrowed for the call); every pointer
            // is paired with its length. The kernel reads them and writes
            // only each header's `msg_len`.
            let rc =
                unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), nmsgs as u32, 0) };
            if rc >= 0 {
                let done = &plan[..rc as usize];
                let datagrams: usize = done.iter().map(|m| m.count).sum();
                let c = &self.counters;
                bump(&c.send_calls, usize::from(rc > 0));
                bump(&c.sent_messages, done.len());
                bump(
                    &c.sent_gso_messages,
                    done.iter().filter(|m| m.seg != 0).count(),
                );
                bump(&c.sent_datagrams, datagrams);
                return Ok(datagrams);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                // The first message was a GSO one the kernel would not
                // segment: `EIO` (IPsec on the route; a device without
                // checksum offload on kernels before commit 10154dbded6d,
                // 2024) will not change, so stop asking;
                // `EMSGSIZE` (6.x) or `EINVAL` (older kernels) for a
                // segment bigger than the route's MTU allows is this
                // send's only: its datagrams go one by one (and are
                // fragmented, or refused, as any such datagram).
                Some(code @ (libc::EIO | libc::EINVAL | libc::EMSGSIZE))
                    if gso && plan[0].seg != 0 =>
                {
                    if code == libc::EIO {
                        self.gso.store(false, Relaxed);
                        log::warn!("UDP GSO refused with EIO: sending without it");
                    }
                    bump(&self.counters.gso_fallbacks, 1);
                    gso = false;
                }
                _ => return Err(err),
            }
        }
    }

    /// Receives up to [`MAX_BATCH`] (and the batch's slot count) messages
    /// in one `recvmmsg` into `batch`, replacing what it held; returns how
    /// many datagrams they hold (coalesced receives count each segment).
    /// Read them with [`RecvBatch::records`] or [`RecvBatch::records_mut`].
    ///
    /// A message longer than its slot is cut by the kernel: a plain
    /// datagram so cut is skipped, of a coalesced one the whole segments
    /// that fit are kept; both are counted in [`UdpStats::recv_truncated`]
    /// and [`RecvBatch::truncated`].
    ///
    /// # Errors
    /// `WouldBlock` when nothing is waiting (the batch is then empty);
    /// the kernel's otherwise (a connected socket's pending ICMP error,
    /// `ECONNREFUSED`, is reported once this way).
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.clear();
        let n = batch.slots();
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_BATCH];
        // SAFETY: as in `send_records`: all zero is a valid `mmsghdr`.
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
        let slot_len = batch.slot_len();
        // One base pointer per buffer, each slot's derived from it (so no
        // later borrow of the batch invalidates an earlier slot's pointer).
        let (slab, names, controls) = batch.raw_parts();
        for (i, (iov, h)) in iovs.iter_mut().zip(hdrs.iter_mut()).take(n).enumerate() {
            iov.iov_base = slab.wrapping_add(i * slot_len).cast();
            iov.iov_len = slot_len;
            let h = &mut h.msg_hdr;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_name = names.wrapping_add(i).cast();
            h.msg_namelen = SockAddr::LEN;
            if self.gro {
                h.msg_control = controls.wrapping_add(i).cast();
                h.msg_controllen = size_of::<ControlBuf>();
            }
        }
        let got = loop {
            // SAFETY: `hdrs[..n]` point into the batch's slots, names and
            // control buffers (borrowed mutably for the call, each its own
            // region) and into `iovs`, each pointer with its length; the
            // kernel writes within those lengths and into `msg_len`,
            // `msg_namelen`, `msg_controllen` and `msg_flags`.
            let rc = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as u32,
                    0,
                    std::ptr::null_mut(),
                )
            };
            match retry(rc) {
                Some(Ok(m)) => break m,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        };
        let (mut gro_msgs, mut truncated) = (0, 0);
        for (i, h) in hdrs.iter().take(got).enumerate() {
            let len = h.msg_len as usize;
            let m = &h.msg_hdr;
            let seg = if self.gro && m.msg_controllen > 0 {
                let ctrl = &batch.controls()[i].0;
                gro_segment(&ctrl[..m.msg_controllen.min(ctrl.len())])
            } else {
                None
            };
            let from = batch.names()[i]
                .to_std(m.msg_namelen)
                .unwrap_or(UNSPECIFIED);
            let cut = m.msg_flags & libc::MSG_TRUNC != 0;
            // A coalesced receive whose segment size we could not read
            // cannot be split: dropped as cut.
            let ctrl_cut = self.gro && m.msg_flags & libc::MSG_CTRUNC != 0 && seg.is_none();
            truncated += usize::from(cut || ctrl_cut);
            gro_msgs += usize::from(seg.is_some_and(|s| len > s));
            batch.set(i, len, seg, from, cut || ctrl_cut);
        }
        batch.set_count(got);
        let datagrams = batch.len();
        let c = &self.counters;
        bump(&c.recv_calls, usize::from(got > 0));
        bump(&c.recv_messages, got);
        bump(&c.recv_gro_messages, gro_msgs);
        bump(&c.recv_datagrams, datagrams);
        bump(&c.recv_truncated, truncated);
        Ok(datagrams)
    }

    /// Attaches `steering` as the classic BPF program
    /// (`SO_ATTACH_REUSEPORT_CBPF`) of this socket's reuseport group: from
    /// then on each datagram to the group's port goes to the socket whose
    /// index [`ReuseportSteering::index`] gives (see [`steer`] for the
    /// indices, the short-datagram rule and what happens when a socket
    /// leaves). One call on any socket of the group (bound with
    /// [`UdpConfig::reuseport`]) covers the group; a later call replaces
    /// the program.
    ///
    /// # Errors
    /// `EINVAL` if the socket is not in a reuseport group; the kernel's
    /// otherwise.
    pub fn attach_reuseport_cbpf(&self, steering: &ReuseportSteering) -> io::Result<()> {
        let mut program = steering.program();
        let prog = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            filter: program.as_mut_ptr(),
        };
        setsockopt(
            self.fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &prog,
        )
    }

    /// The socket's pending error (`SO_ERROR`), cleared by reading it: a
    /// connected socket's ICMP error (`ECONNREFUSED`, ...).
    ///
    /// # Errors
    /// The kernel's, from `getsockopt`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let code = getsockopt_int(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR)?;
        Ok((code != 0).then(|| io::Error::from_raw_os_error(code)))
    }

    #[cfg(test)]
    fn from_fd_for_tests(fd: OwnedFd, config: &UdpConfig) -> io::Result<Self> {
        Self::from_fd(fd, false, config)
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Source for UdpSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

/// The source of a datagram whose address the kernel did not give (not
/// seen on UDP sockets; a Unix socket pair in the tests).
const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A syscall's return: `Some(Ok(n))`, `Some(Err(e))`, or `None` to retry
/// (`EINTR`).
fn retry<T: TryInto<usize>>(rc: T) -> Option<io::Result<usize>> {
    if let Ok(n) = rc.try_into() {
        return Some(Ok(n));
    }
    let err = io::Error::last_os_error();
    (err.kind() != io::ErrorKind::Interrupted).then_some(Err(err))
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` for the call and the length passed is
    // its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; the kernel writes at
    // most that many and sets `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// One message of a send plan: records `start..start + count`, as one GSO
/// message of `seg`-byte segments if `seg != 0`, else one datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Msg {
    start: usize,
    count: usize,
    seg: u16,
}

/// Groups `records` into messages: with `gso`, a run of records to one
/// destination with equal lengths (the last may be shorter), at most
/// [`MAX_GSO_SEGMENTS`] and [`MAX_PAYLOAD`] bytes, becomes one message;
/// every other record is a message of its own. Returns the message count.
fn plan_messages(
    records: &[&[u8]],
    dests: &[Option<SocketAddr>],
    gso: bool,
    out: &mut [Msg; MAX_BATCH],
) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < records.len() && n < MAX_BATCH {
        let seg = records[i].len();
        let mut count = 1;
        if gso && seg > 0 && u16::try_from(seg).is_ok() {
            let mut total = seg;
            while let Some(next) = records.get(i + count) {
                let l = next.len();
                if count == MAX_GSO_SEGMENTS
                    || dests[i + count] != dests[i]
                    || l == 0
                    || l > seg
                    || total + l > MAX_PAYLOAD
                {
                    break;
                }
                count += 1;
                total += l;
                if l < seg {
                    break;
                }
            }
        }
        out[n] = Msg {
            start: i,
            count,
            seg: if count > 1 { seg as u16 } else { 0 },
        };
        n += 1;
        i += count;
    }
    n
}

/// The `UDP_SEGMENT` control message of a GSO send: a `cmsghdr` and the
/// segment size (`u16`), padded to `CMSG_SPACE(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    _pad: [u8; 6],
}

impl SegmentCmsg {
    fn new(size: u16) -> Self {
        Self {
            hdr: libc::cmsghdr {
                // CMSG_LEN(sizeof(u16)): the header, then the data.
                cmsg_len: size_of::<libc::cmsghdr>() + size_of::<u16>(),
                cmsg_level: libc::SOL_UDP,
                cmsg_type: libc::UDP_SEGMENT,
            },
            size,
            _pad: [0; 6],
        }
    }
}

// SAFETY (of the const evaluation): CMSG_SPACE only computes a length.
const _: () = assert!(size_of::<SegmentCmsg>() == unsafe { libc::CMSG_SPACE(2) } as usize);
const _: () = assert!(mem::offset_of!(SegmentCmsg, size) == unsafe { libc::CMSG_LEN(0) } as usize);

/// Room for a receive's control messages (`UDP_GRO`'s `int` needs
/// `CMSG_SPACE(4)` = 24 bytes), aligned as `cmsghdr`.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
struct ControlBuf([u8; 64]);

/// The segment size a coalesced receive carries (the `UDP_GRO` control
/// message), read from the control bytes without trusting their lengths.
fn gro_segment(control: &[u8]) -> Option<usize> {
    const WORD: usize = size_of::<usize>();
    let header = size_of::<libc::cmsghdr>();
    let mut off = 0;
    while let Some(h) = control.get(off..off + header) {
        let len = usize::from_ne_bytes(h[..WORD].try_into().ok()?);
        let level = i32::from_ne_bytes(h[WORD..WORD + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(h[WORD + 4..WORD + 8].try_into().ok()?);
        // A message shorter than its header or running past the buffer
        // ends the walk (as `CMSG_NXTHDR` would).
        if len < header || len > control.len() - off {
            return None;
        }
        if level == libc::SOL_UDP && kind == libc::UDP_GRO {
            let data = control[off..off + len].get(header..header + 4)?;
            let seg = i32::from_ne_bytes(data.try_into().ok()?);
            return usize::try_from(seg).ok().filter(|&s| s > 0);
        }
        // CMSG_NXTHDR: the next header starts at the aligned end.
        off += len.checked_add(WORD - 1)? & !(WORD - 1);
    }
    None
}

/// A socket address as the kernel takes and gives it: `sockaddr_in` or
/// `sockaddr_in6`, the family field first in both.
#[repr(C)]
#[derive(Clone, Copy)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SockAddr")
    }
}

impl SockAddr {
    const LEN: libc::socklen_t = size_of::<Self>() as libc::socklen_t;
    /// All zero, in the larger variant: every byte initialised.
    const ZERO: Self = Self {
        v6: libc::sockaddr_in6 {
            sin6_family: 0,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        },
    };

    /// `addr` for a socket of the given family (an IPv4 address becomes
    /// IPv4-mapped for an IPv6 socket), with its length.
    fn new(addr: SocketAddr, v6_socket: bool) -> (Self, libc::socklen_t) {
        let addr = match addr {
            SocketAddr::V4(a) if v6_socket => {
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
            }
            a => a,
        };
        let mut out = Self::ZERO;
        let len = match addr {
            SocketAddr::V4(a) => {
                out.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                out.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                size_of::<libc::sockaddr_in6>()
            }
        };
        (out, len as libc::socklen_t)
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        std::ptr::from_ref(self).cast()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        std::ptr::from_mut(self).cast()
    }

    /// The address the kernel wrote (`len` bytes of it); an IPv4-mapped
    /// IPv6 address comes back as IPv4.
    fn to_std(self, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        // SAFETY: both variants are plain integers and byte arrays (every
        // bit pattern valid), and every byte of `self` is initialised
        // (made from `ZERO`, then written by us or the kernel): reading
        // either variant is sound. The family says which one is meaningful.
        let (family, v4, v6) = unsafe { (self.v4.sin_family, self.v4, self.v6) };
        match i32::from(family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
                let port = u16::from_be(v6.sin6_port);
                Some(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        port,
                        v6.sin6_flowinfo,
                        v6.sin6_scope_id,
                    )),
                })
            }
            _ => None,
        }
    }
}
