//! TCP listeners sharing one address (`SO_REUSEPORT`): one per edge
//! worker, the kernel spreading new connections over them (by a hash of
//! each connection's addresses and ports).

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// The listen queue of each listener.
const BACKLOG: libc::c_int = 1024;

/// `n` non-blocking listeners on `addr`, all in one `SO_REUSEPORT` group
/// (with port 0, the port the first one gets).
///
/// Refuses (`AddrInUse`) if anything listens on `addr` already, as a plain
/// bind would: another process's listeners could otherwise join the group
/// (same user) and take a share of the connections. The check is a plain
/// bind just before (a moment's race with a process starting at the same
/// time remains).
pub fn tcp_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        drop(TcpListener::bind(addr)?);
    }
    let mut out: Vec<TcpListener> = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let l = listener(at)?;
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

fn set(fd: &OwnedFd, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid int and its size, for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2); the descriptor is owned below.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set(&fd, libc::SO_REUSEADDR)?;
    set(&fd, libc::SO_REUSEPORT)?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a valid `sockaddr_in` and its size, for the call.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: a valid `sockaddr_in6` and its size, for the call.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain listen(2) on the descriptor owned above.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    /// Every listener of the group shares the port, connections reach
    /// them, and a second group on the same address is refused.
    #[test]
    fn listeners_share_a_port_and_refuse_strangers() {
        let ls = tcp_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let clients: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let accepted: usize = ls
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .sum();
        assert_eq!(accepted, clients.len());
        let e = tcp_listeners(addr, 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }
}
