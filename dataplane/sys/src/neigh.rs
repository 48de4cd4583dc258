//! The kernel's neighbour table (ARP and ND) over rtnetlink: a socket
//! subscribed to neighbour, link and route changes, dumps of the link and
//! neighbour tables, and resolution requests (`RTM_NEWNEIGH` with
//! `NTF_USE`: the kernel resolves the address as if a packet were waiting
//! for it, and reports the outcome as a change); and [`RouteQuery`], which
//! asks the kernel for the next hop towards an address (`ip route get`),
//! for LAN hosts behind a router.
//!
//! The gateway's workers keep their LAN hosts' MAC addresses from here
//! rather than from the frames the hosts send: a frame's source address
//! proves nothing, the kernel's table is what the kernel itself would use
//! (its ARP and ND handling). Messages are parsed into [`NeighEvent`]s
//! without allocating; the parsers are plain functions over bytes, tested
//! with byte vectors.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use crate::wire::ethernet::Mac;

/// `RTNLGRP_LINK`, `RTNLGRP_NEIGH` and the IPv4 and IPv6 route groups as
/// legacy group bits.
const GROUPS: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_NEIGH | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE)
        as u32;

const NLMSG_HDR_LEN: usize = 16;
const NDMSG_LEN: usize = 12;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
/// `ndm_flags`: resolve as if used (`neigh_event_send`).
const NTF_USE: u8 = 0x01;

/// Neighbour states (`NUD_*`) in which the kernel has a MAC address it
/// would use: reachable, stale, delay, probe, permanent.
pub const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// One change (or dump entry) from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighEvent {
    /// A neighbour entry: new, changed, or (`gone`) deleted.
    Neigh {
        /// The interface it is on.
        ifindex: u32,
        /// The neighbour's address.
        addr: IpAddr,
        /// Its link-layer address, if the message carries one of 6 bytes.
        mac: Option<Mac>,
        /// `NUD_*` state.
        state: u16,
        /// `RTM_DELNEIGH`.
        gone: bool,
    },
    /// A link: new, changed, or (`gone`) deleted.
    Link {
        /// Its index.
        ifindex: u32,
        /// The link it sits on (`IFLA_LINK`; 0 if none): a VLAN device's
        /// parent.
        parent: u32,
        /// Its VLAN id, if it is a VLAN device.
        vlan: Option<u16>,
        /// `RTM_DELLINK`.
        gone: bool,
    },
    /// A route was added, changed or removed (next hops may have moved).
    Route,
    /// The end of a dump.
    Done,
    /// Messages were lost (the socket overran): dump again.
    Overrun,
}

/// A non-blocking, close-on-exec rtnetlink socket subscribed to link and
/// neighbour changes.
#[derive(Debug)]
pub struct NeighSocket {
    fd: OwnedFd,
    buf: Box<[u8]>,
    seq: u32,
}

impl AsRawFd for NeighSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NeighSocket {
    /// Opens the socket and joins the groups (no privilege needed; a
    /// resolution request needs `CAP_NET_ADMIN`).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant arguments; checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by the kernel, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = sockaddr_nl();
        addr.nl_groups = GROUPS;
        // SAFETY: a valid `sockaddr_nl` and its size, for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // A burst of changes (a big LAN coming up) must not overrun it.
        let size: libc::c_int = 1 << 20;
        // SAFETY: a valid int and its size, for the call; failure is only
        // a smaller buffer (overruns are reported and handled).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Self {
            fd,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            seq: 0,
        })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let mut to = sockaddr_nl();
        to.nl_pid = 0;
        // SAFETY: `msg` is readable for its length and `to` is a valid
        // netlink address, for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Asks for a dump of every link (answered with [`NeighEvent::Link`]s
    /// then [`NeighEvent::Done`]).
    pub(crate) fn request_links(&mut self) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = [0u8; NLMSG_HDR_LEN + IFINFOMSG_LEN];
        header(
            &mut m,
            RTM_GETLINK,
            libc::NLM_F_REQUEST | libc::NLM_F_DUMP,
            seq,
        );
        m[NLMSG_HDR_LEN] = libc::AF_UNSPEC as u8;
        self.send(&m)
    }

    /// Asks for a dump of every neighbour entry of both families.
    pub(crate) fn request_neighbours(&mut self) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = [0u8; NLMSG_HDR_LEN + NDMSG_LEN];
        header(
            &mut m,
            RTM_GETNEIGH,
            libc::NLM_F_REQUEST | libc::NLM_F_DUMP,
            seq,
        );
        m[NLMSG_HDR_LEN] = libc::AF_UNSPEC as u8;
        self.send(&m)
    }

    /// Asks the kernel to resolve `addr` on `ifindex` (as if a packet
    /// waited for it): an ARP request or neighbour solicitation goes out
    /// unless the entry is fresh, and the outcome arrives as an event.
    /// No answer is waited for.
    pub fn resolve(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = [0u8; NLMSG_HDR_LEN + NDMSG_LEN + 4 + 16];
        let len = resolve_request(&mut m, seq, ifindex, addr);
        self.send(&m[..len])
    }

    /// Reads what is pending (non-blocking), calling `f` for each event.
    /// Returns whether anything was read; at most `max_reads` reads.
    pub fn recv(&mut self, max_reads: usize, f: &mut impl FnMut(NeighEvent)) -> io::Result<bool> {
        let mut any = false;
        for _ in 0..max_reads {
            let mut from = sockaddr_nl();
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is writable for its length, `from` and
            // `from_len` valid for writes, for the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &raw mut from_len,
                )
            };
            if n >= 0 {
                any = true;
                // Only the kernel (port 0) speaks for the table.
                if from.nl_pid == 0 {
                    let len = usize::try_from(n).unwrap_or(0).min(self.buf.len());
                    parse_messages(&self.buf[..len], f);
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) => {
                    any = true;
                    f(NeighEvent::Overrun);
                }
                Some(libc::EINTR) => {}
                _ if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                _ => return Err(e),
            }
        }
        Ok(any)
    }

    /// One datagram into the buffer (non-blocking), from the kernel only:
    /// its length, or `None` if none waits.
    fn recv_raw(&mut self) -> io::Result<Option<usize>> {
        loop {
            let mut from = sockaddr_nl();
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: as in `recv`.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &raw mut from_len,
                )
            };
            if n >= 0 {
                if from.nl_pid != 0 {
                    continue;
                }
                return Ok(Some(usize::try_from(n).unwrap_or(0).min(self.buf.len())));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::ENOBUFS) => {}
                _ if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for the socket to be readable.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid `pollfd`, for the call.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(rc > 0)
    }

    /// Dumps links then neighbours, calling `f` for every entry, waiting
    /// at most `timeout` in all (start-up; not for the packet path).
    pub fn dump(&mut self, timeout: Duration, f: &mut impl FnMut(NeighEvent)) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        for ask in [Self::request_links, Self::request_neighbours] {
            ask(self)?;
            let mut done = false;
            while !done {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "rtnetlink dump did not finish",
                    ));
                }
                self.wait(left)?;
                self.recv(64, &mut |e| {
                    if e == NeighEvent::Done {
                        done = true;
                    }
                    f(e);
                })?;
            }
        }
        Ok(())
    }
}

/// Where the kernel sends packets for an address: the interface and, for
/// a destination behind a router, the router's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The output interface's index.
    pub oif: u32,
    /// The gateway, if not on-link.
    pub gateway: Option<IpAddr>,
}

/// Asks the kernel for routes (`RTM_GETROUTE` for one address, answered
/// at once): a socket of its own, joined to no group, so that only the
/// answers arrive on it.
#[derive(Debug)]
pub struct RouteQuery {
    sock: NeighSocket,
}

/// How long a route answer may take (the kernel answers within the
/// request's own system call; this only bounds a broken kernel).
const ROUTE_ANSWER: Duration = Duration::from_millis(50);

impl RouteQuery {
    /// Opens the socket.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant arguments; checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by the kernel, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            sock: NeighSocket {
                fd,
                buf: vec![0; 8 * 1024].into_boxed_slice(),
                seq: 0,
            },
        })
    }

    /// The next hop towards `dst` (`None`: no route, or unreachable).
    /// Two system calls: for the first packet towards an address only.
    pub fn next_hop(&mut self, dst: IpAddr) -> io::Result<Option<NextHop>> {
        // Answers to earlier, timed-out questions would be taken for this
        // one's: drop them.
        self.sock.recv(4, &mut |_| {})?;
        let seq = self.sock.next_seq();
        let mut m = [0u8; NLMSG_HDR_LEN + RTMSG_LEN + 4 + 16];
        let len = route_request(&mut m, seq, dst);
        self.sock.send(&m[..len])?;
        let deadline = Instant::now() + ROUTE_ANSWER;
        loop {
            let mut answer = None;
            let n = self.sock.recv_raw()?;
            if let Some(n) = n {
                answer = parse_route_answer(&self.sock.buf[..n], seq);
            }
            match answer {
                Some(RouteAnswer::Hop(hop)) => return Ok(hop),
                Some(RouteAnswer::NoRoute) => return Ok(None),
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to a route query",
                ));
            }
            if n.is_none() {
                self.sock.wait(left)?;
            }
        }
    }
}

/// Writes an `RTM_GETROUTE` for `dst` into `m` (at least 48 bytes);
/// returns its length.
fn route_request(m: &mut [u8], seq: u32, dst: IpAddr) -> usize {
    let (family, bytes, alen) = match dst {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (libc::AF_INET as u8, b, 4)
        }
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets(), 16),
    };
    let len = NLMSG_HDR_LEN + RTMSG_LEN + 4 + alen;
    header(&mut m[..len], RTM_GETROUTE, libc::NLM_F_REQUEST, seq);
    let rt = &mut m[NLMSG_HDR_LEN..NLMSG_HDR_LEN + RTMSG_LEN];
    rt.fill(0);
    rt[0] = family;
    rt[1] = (alen * 8) as u8;
    let at = NLMSG_HDR_LEN + RTMSG_LEN;
    m[at..at + 2].copy_from_slice(&((4 + alen) as u16).to_ne_bytes());
    m[at + 2..at + 4].copy_from_slice(&RTA_DST.to_ne_bytes());
    m[at + 4..at + 4 + alen].copy_from_slice(&bytes[..alen]);
    len
}

/// The kernel's answer to a route query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteAnswer {
    /// The route's next hop (`None`: a route without an output interface).
    Hop(Option<NextHop>),
    /// An error: no route, unreachable.
    NoRoute,
}

/// The answer to route query `seq` in one datagram, if it is there.
fn parse_route_answer(mut b: &[u8], seq: u32) -> Option<RouteAnswer> {
    while b.len() >= NLMSG_HDR_LEN {
        let len = usize::try_from(u32_at(b, 0)?).ok()?;
        let kind = u16_at(b, 4)?;
        if len < NLMSG_HDR_LEN || len > b.len() {
            return None;
        }
        let body = &b[NLMSG_HDR_LEN..len];
        if u32_at(b, 8) == Some(seq) {
            match kind {
                NLMSG_ERROR => return Some(RouteAnswer::NoRoute),
                RTM_NEWROUTE => {
                    let family = i32::from(*body.first()?);
                    let mut oif = None;
                    let mut gateway = None;
                    for (t, p) in attrs(body.get(RTMSG_LEN..)?) {
                        match t {
                            RTA_OIF => oif = u32_at(p, 0),
                            RTA_GATEWAY => {
                                gateway = match (family, p.len()) {
                                    (libc::AF_INET, 4) => <[u8; 4]>::try_from(p)
                                        .ok()
                                        .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                                    (libc::AF_INET6, 16) => <[u8; 16]>::try_from(p)
                                        .ok()
                                        .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
                                    _ => None,
                                };
                            }
                            _ => {}
                        }
                    }
                    return Some(RouteAnswer::Hop(oif.map(|oif| NextHop { oif, gateway })));
                }
                _ => {}
            }
        }
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

fn header(m: &mut [u8], kind: u16, flags: libc::c_int, seq: u32) {
    let len = u32::try_from(m.len()).unwrap_or(u32::MAX);
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
}

/// Writes an `RTM_NEWNEIGH` with `NTF_USE` for `addr` on `ifindex` into
/// `m` (at least 48 bytes); returns its length.
fn resolve_request(m: &mut [u8], seq: u32, ifindex: u32, addr: IpAddr) -> usize {
    let (family, bytes, alen) = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (libc::AF_INET as u8, b, 4)
        }
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets(), 16),
    };
    let len = NLMSG_HDR_LEN + NDMSG_LEN + 4 + alen;
    header(
        &mut m[..len],
        RTM_NEWNEIGH,
        libc::NLM_F_REQUEST | libc::NLM_F_CREATE | libc::NLM_F_REPLACE,
        seq,
    );
    let nd = &mut m[NLMSG_HDR_LEN..NLMSG_HDR_LEN + NDMSG_LEN];
    nd.fill(0);
    nd[0] = family;
    nd[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    // ndm_state stays NUD_NONE: the kernel only resolves.
    nd[10] = NTF_USE;
    let at = NLMSG_HDR_LEN + NDMSG_LEN;
    m[at..at + 2].copy_from_slice(&((4 + alen) as u16).to_ne_bytes());
    m[at + 2..at + 4].copy_from_slice(&NDA_DST.to_ne_bytes());
    m[at + 4..at + 4 + alen].copy_from_slice(&bytes[..alen]);
    len
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The route attributes in `b`: `(type, payload)`, 4-byte aligned;
/// stops at the first malformed one.
fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, at)?);
        let kind = u16_at(b, at + 2)? & 0x3fff;
        if len < 4 {
            return None;
        }
        let payload = b.get(at + 4..at + len)?;
        at += len.next_multiple_of(4);
        Some((kind, payload))
    })
}

/// Parses every netlink message in one datagram.
pub(crate) fn parse_messages(mut b: &[u8], f: &mut impl FnMut(NeighEvent)) {
    while b.len() >= NLMSG_HDR_LEN {
        let Some(len) = u32_at(b, 0).and_then(|l| usize::try_from(l).ok()) else {
            return;
        };
        let Some(kind) = u16_at(b, 4) else {
            return;
        };
        if len < NLMSG_HDR_LEN || len > b.len() {
            return;
        }
        let body = &b[NLMSG_HDR_LEN..len];
        match kind {
            NLMSG_DONE => f(NeighEvent::Done),
            // A dump refused (or an error for a resolution request, which
            // is not waited for): the dump is over either way.
            NLMSG_ERROR if u32_at(body, 0).is_some_and(|e| e != 0) => f(NeighEvent::Done),
            RTM_NEWNEIGH | RTM_DELNEIGH => {
                if let Some(e) = parse_neigh(body, kind == RTM_DELNEIGH) {
                    f(e);
                }
            }
            RTM_NEWLINK | RTM_DELLINK => {
                if let Some(e) = parse_link(body, kind == RTM_DELLINK) {
                    f(e);
                }
            }
            RTM_NEWROUTE | RTM_DELROUTE => f(NeighEvent::Route),
            _ => {}
        }
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
}

/// An `ndmsg` and its attributes.
fn parse_neigh(b: &[u8], gone: bool) -> Option<NeighEvent> {
    let family = i32::from(*b.first()?);
    let ifindex = u32_at(b, 4)?;
    let state = u16_at(b, 8)?;
    let mut addr = None;
    let mut mac = None;
    for (kind, p) in attrs(b.get(NDMSG_LEN..)?) {
        match kind {
            NDA_DST => {
                addr = match (family, p.len()) {
                    (libc::AF_INET, 4) => {
                        Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p).ok()?)))
                    }
                    (libc::AF_INET6, 16) => {
                        Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p).ok()?)))
                    }
                    _ => None,
                };
            }
            NDA_LLADDR => mac = <[u8; 6]>::try_from(p).ok(),
            _ => {}
        }
    }
    Some(NeighEvent::Neigh {
        ifindex,
        addr: addr?,
        mac,
        state,
        gone,
    })
}

/// An `ifinfomsg` and the attributes that make a VLAN device.
fn parse_link(b: &[u8], gone: bool) -> Option<NeighEvent> {
    let ifindex = u32_at(b, 4)?;
    let mut parent = 0;
    let mut vlan = None;
    for (kind, p) in attrs(b.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_LINK => parent = u32_at(p, 0).unwrap_or(0),
            IFLA_LINKINFO => {
                let mut is_vlan = false;
                let mut id = None;
                for (k, q) in attrs(p) {
                    match k {
                        IFLA_INFO_KIND => is_vlan = q.strip_suffix(b"\0").unwrap_or(q) == b"vlan",
                        IFLA_INFO_DATA => {
                            id = attrs(q)
                                .find(|(t, _)| *t == IFLA_VLAN_ID)
                                .and_then(|(_, v)| u16_at(v, 0));
                        }
                        _ => {}
                    }
                }
                if is_vlan {
                    vlan = id;
                }
            }
            _ => {}
        }
    }
    Some(NeighEvent::Link {
        ifindex,
        parent,
        vlan,
        gone,
    })
}

fn sockaddr_nl() -> libc::sockaddr_nl {
    // SAFETY: plain integers, for which all-zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RTM_NEWNEIGH` 192.0.2.10 on ifindex 3, REACHABLE, lladdr
    /// 02:00:00:00:00:10 (native endian, as the kernel sends it).
    fn neigh_msg(kind: u16, family: u8, dst: &[u8], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&3u32.to_ne_bytes());
        body.extend_from_slice(&0x02u16.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        let attr = |t: u16, p: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
            out.extend_from_slice(&t.to_ne_bytes());
            out.extend_from_slice(p);
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        };
        attr(NDA_DST, dst, &mut body);
        if let Some(m) = mac {
            attr(NDA_LLADDR, &m, &mut body);
        }
        let mut m = vec![0u8; NLMSG_HDR_LEN];
        m.extend_from_slice(&body);
        let len = m.len();
        header(&mut m[..len], kind, 0, 1);
        m
    }

    fn collect(b: &[u8]) -> Vec<NeighEvent> {
        let mut v = Vec::new();
        parse_messages(b, &mut |e| v.push(e));
        v
    }

    #[test]
    fn parses_neighbour_messages() {
        let mut two = neigh_msg(
            RTM_NEWNEIGH,
            2,
            &[192, 0, 2, 10],
            Some([2, 0, 0, 0, 0, 0x10]),
        );
        let v6: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        two.extend(neigh_msg(RTM_DELNEIGH, 10, &v6.octets(), None));
        assert_eq!(
            collect(&two),
            [
                NeighEvent::Neigh {
                    ifindex: 3,
                    addr: "192.0.2.10".parse().unwrap(),
                    mac: Some([2, 0, 0, 0, 0, 0x10]),
                    state: 0x02,
                    gone: false,
                },
                NeighEvent::Neigh {
                    ifindex: 3,
                    addr: v6.into(),
                    mac: None,
                    state: 0x02,
                    gone: true,
                },
            ]
        );
    }

    #[test]
    fn survives_garbage() {
        // A length past the end, a length below the header, an address of
        // the wrong size, attributes cut short: nothing, no panic.
        let good = neigh_msg(RTM_NEWNEIGH, 2, &[192, 0, 2, 10], None);
        for cut in 0..good.len() {
            let _ = collect(&good[..cut]);
        }
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(collect(&bad).is_empty());
        assert!(collect(&neigh_msg(RTM_NEWNEIGH, 2, &[1, 2, 3], None)).is_empty());
        let mut rng = crate::testutil::XorShift::new(7);
        for _ in 0..2000 {
            let n = (rng.next_u64() % 96) as usize;
            let b: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let _ = collect(&b);
        }
    }

    #[test]
    fn parses_a_vlan_link() {
        // ifinfomsg for ifindex 7 on parent 3, kind "vlan", id 10.
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        let attr = |t: u16, p: &[u8]| {
            let mut out = ((4 + p.len()) as u16).to_ne_bytes().to_vec();
            out.extend_from_slice(&t.to_ne_bytes());
            out.extend_from_slice(p);
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
            out
        };
        body.extend(attr(IFLA_LINK, &3u32.to_ne_bytes()));
        let data = attr(IFLA_VLAN_ID, &10u16.to_ne_bytes());
        let mut info = attr(IFLA_INFO_KIND, b"vlan\0");
        info.extend(attr(IFLA_INFO_DATA, &data));
        body.extend(attr(IFLA_LINKINFO, &info));
        let mut m = vec![0u8; NLMSG_HDR_LEN];
        m.extend_from_slice(&body);
        let len = m.len();
        header(&mut m[..len], RTM_NEWLINK, 0, 1);
        assert_eq!(
            collect(&m),
            [NeighEvent::Link {
                ifindex: 7,
                parent: 3,
                vlan: Some(10),
                gone: false
            }]
        );
    }

    #[test]
    fn parses_a_route_answer() {
        let mut m = [0u8; 48];
        let n = route_request(&mut m, 5, "203.0.113.9".parse().unwrap());
        assert_eq!(n, NLMSG_HDR_LEN + RTMSG_LEN + 8);
        assert_eq!(
            (m[NLMSG_HDR_LEN], m[NLMSG_HDR_LEN + 1]),
            (libc::AF_INET as u8, 32)
        );
        // RTM_NEWROUTE seq 5: oif 3, gateway 192.0.2.254.
        let attr = |t: u16, p: &[u8]| {
            let mut out = ((4 + p.len()) as u16).to_ne_bytes().to_vec();
            out.extend_from_slice(&t.to_ne_bytes());
            out.extend_from_slice(p);
            out
        };
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        body.extend(attr(RTA_OIF, &3u32.to_ne_bytes()));
        body.extend(attr(RTA_GATEWAY, &[192, 0, 2, 254]));
        let mut msg = vec![0u8; NLMSG_HDR_LEN];
        msg.extend_from_slice(&body);
        let len = msg.len();
        header(&mut msg[..len], RTM_NEWROUTE, 0, 5);
        assert_eq!(
            parse_route_answer(&msg, 5),
            Some(RouteAnswer::Hop(Some(NextHop {
                oif: 3,
                gateway: Some("192.0.2.254".parse().unwrap())
            })))
        );
        assert_eq!(parse_route_answer(&msg, 6), None, "another question's");
        let mut err = vec![0u8; NLMSG_HDR_LEN + 4];
        err[NLMSG_HDR_LEN..].copy_from_slice(&(-101i32).to_ne_bytes());
        header(&mut err, NLMSG_ERROR, 0, 5);
        assert_eq!(parse_route_answer(&err, 5), Some(RouteAnswer::NoRoute));
        for cut in 0..msg.len() {
            let _ = parse_route_answer(&msg[..cut], 5);
        }
        assert_eq!(collect(&msg), [NeighEvent::Route]);
    }

    #[test]
    fn builds_a_resolution_request() {
        let mut m = [0u8; 48];
        let n = resolve_request(&mut m, 9, 4, "192.0.2.10".parse().unwrap());
        assert_eq!(n, NLMSG_HDR_LEN + NDMSG_LEN + 8);
        assert_eq!(u32_at(&m, 0), Some(n as u32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWNEIGH));
        assert_eq!(m[NLMSG_HDR_LEN], libc::AF_INET as u8);
        assert_eq!(m[NLMSG_HDR_LEN + 10], NTF_USE);
        assert_eq!(&m[n - 4..n], &[192, 0, 2, 10]);
        let n6 = resolve_request(&mut m, 9, 4, "2001:db8::1".parse().unwrap());
        assert_eq!(n6, 48);
    }
}
