//! Link, address and route change notifications from rtnetlink: a
//! `NETLINK_ROUTE` socket subscribed to the link, IPv4/IPv6 address and
//! IPv4/IPv6 route multicast groups. Trusted-network detection re-evaluates
//! when [`RouteMonitor::wait`] reports a change.
//!
//! Messages are counted, not parsed: any message from the kernel in these
//! groups is a change, and so is an overrun (`ENOBUFS`: messages were lost).
//! The socket is read-only; it changes nothing and needs no privilege.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// The multicast groups: links, IPv4 and IPv6 addresses and routes.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// At most this many messages are read per [`RouteMonitor::wait`], so that a
/// flood of changes cannot keep the caller in the drain loop.
const MAX_DRAIN: usize = 1024;

/// A non-blocking, close-on-exec rtnetlink socket bound to the link,
/// address and route change groups.
#[derive(Debug)]
pub struct RouteMonitor {
    fd: OwnedFd,
    buf: Box<[u8]>,
}

impl RouteMonitor {
    /// Opens the socket and joins the groups.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant arguments; the result is
        // checked before use.
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
        // SAFETY: `fd` was just returned by the kernel and nothing else owns
        // it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = sockaddr_nl();
        addr.nl_groups = GROUPS;
        // SAFETY: `addr` is a valid `sockaddr_nl` for the duration of the
        // call and the length passed is its size.
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
        Ok(Self {
            fd,
            buf: vec![0; 16 * 1024].into_boxed_slice(),
        })
    }

    /// Waits up to `timeout` for notifications, then drains every pending
    /// one (up to 1024). True if any change arrived or messages were lost;
    /// false on timeout or when a signal interrupted the wait.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms =
            libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid `pollfd`, for the duration of the call.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if rc == 0 {
            return Ok(false);
        }
        self.drain()
    }

    /// Reads pending messages until none is left; true if one came from the
    /// kernel or the socket overran.
    fn drain(&mut self) -> io::Result<bool> {
        let mut changed = false;
        for _ in 0..MAX_DRAIN {
            let mut from = sockaddr_nl();
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is writable for `buf.len()` bytes, and `from` and
            // `from_len` are valid for writes, for the duration of the call.
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
                // Only the kernel (port 0) reports changes; another process
                // could unicast to this socket.
                changed |= from.nl_pid == 0;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) => changed = true,
                Some(libc::EINTR) => {}
                _ if e.kind() == io::ErrorKind::WouldBlock => return Ok(changed),
                _ => return Err(e),
            }
        }
        Ok(changed)
    }
}

/// An all-zero netlink address of the `AF_NETLINK` family.
fn sockaddr_nl() -> libc::sockaddr_nl {
    // SAFETY: `sockaddr_nl` is plain integers, for which all-zero is valid
    // (it has a private padding field, so it cannot be built as a literal).
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_waits_without_privileges() {
        let mut m = RouteMonitor::new().expect("rtnetlink socket");
        // Whether a change happens to arrive is up to the host; the wait
        // itself must succeed and return.
        m.wait(Duration::from_millis(10)).expect("wait");
        m.wait(Duration::ZERO).expect("wait without timeout");
    }
}
