//! Thin, safe wrappers over the libc calls the edge's hostile-peer tests
//! need in the test process itself: a thread that enters a lab namespace
//! (`setns`), TCP connections from a chosen source address, and the
//! process's descriptor limit. Everything else in the crate is
//! `#![deny(unsafe_code)]`.
//!
//! A thread that entered a namespace stays there until it ends, and every
//! socket it opens lives in that namespace: the callers run such threads in
//! a `std::thread::scope` and close every socket before the lab is dropped.
#![allow(unsafe_code)]

use std::{
    fs::File,
    io,
    net::{SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _},
    time::Duration,
};

/// Moves the calling thread into the network namespace `ns` (a name under
/// `/run/netns`, as `ip netns add` makes). Only for threads that end when
/// their work in the namespace is done.
///
/// # Errors
/// When the namespace cannot be opened or entered.
pub(crate) fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns with a valid namespace fd only changes this thread's
    // network namespace; no memory is touched.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns
/// the soft limit now in force.
pub(crate) fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the valid struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Connects a TCP socket from `src` (port chosen by the kernel) to `dst`,
/// waiting at most `timeout`; the stream is returned non-blocking.
///
/// # Errors
/// When the socket cannot be made, bound or connected in time.
pub(crate) fn connect_from(
    src: std::net::IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket this function owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (src_sa, src_len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: `src_sa` is a valid sockaddr of `src_len` bytes.
    if unsafe { libc::bind(fd, (&raw const src_sa).cast(), src_len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (dst_sa, dst_len) = sockaddr(dst);
    // SAFETY: `dst_sa` is a valid sockaddr of `dst_len` bytes.
    let r = unsafe { libc::connect(fd, (&raw const dst_sa).cast(), dst_len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Makes closing `s` reset the connection (`SO_LINGER` on with a zero
/// timeout: the kernel sends RST and drops unsent data) instead of the
/// orderly FIN, as a host or middlebox that drops a connection does.
///
/// # Errors
/// When the option cannot be set.
pub(crate) fn reset_on_close(s: &TcpStream) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size given; the fd is
    // `s`'s, open for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
