//! TCP socket options the tunnel driver sets that the standard library
//! and mio do not offer.
use std::{
    io,
    os::fd::{AsFd, AsRawFd as _},
};

/// `TCP_NOTSENT_LOWAT`: the socket reports writable (and takes more
/// bytes) only while less than `bytes` of what was written is still
/// unsent. Bytes beyond that wait in user space, where the tunnel session
/// sees them: a probe sent behind them knows it queued (the edge
/// selection takes no RTT sample from it), and the kernel's send buffer
/// no longer hides a deep backlog.
///
/// # Errors
/// The socket refuses the option.
pub fn set_notsent_lowat(sock: &impl AsFd, bytes: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid int and its size, for the call, on a descriptor
    // the caller's borrow keeps open.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes written to a TCP socket that the kernel has not sent yet
/// (`SIOCOUTQNSD`; up to the `TCP_NOTSENT_LOWAT` mark and beyond what the
/// peer's window takes): with what waits in user space, how long a probe
/// written now queues behind data.
///
/// # Errors
/// The socket refuses the request (not TCP).
pub fn unsent_bytes(sock: &impl AsFd) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one int to the pointer, valid for the
    // call, on a descriptor the caller's borrow keeps open.
    let rc = unsafe { libc::ioctl(sock.as_fd().as_raw_fd(), libc::SIOCOUTQNSD, &raw mut v) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(v).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written to a peer that does not read: once its receive window is
    /// full, what is left counts as unsent.
    #[test]
    fn unsent_bytes_counts_what_the_kernel_holds() {
        use std::io::Write as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_peer, _) = l.accept().unwrap();
        assert_eq!(unsent_bytes(&s).unwrap(), 0);
        s.set_nonblocking(true).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0usize;
        while written < 64 << 20 {
            match s.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        let unsent = unsent_bytes(&s).unwrap();
        assert!(
            unsent > 0 && unsent <= written,
            "unsent {unsent} of {written}"
        );
    }

    #[test]
    fn notsent_lowat_is_set_and_read_back() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        set_notsent_lowat(&s, 128 * 1024).unwrap();
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid int and its length, for the call.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&raw mut v).cast(),
                &raw mut len,
            )
        };
        assert_eq!((rc, v), (0, 128 * 1024));
    }
}
