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

#[cfg(test)]
mod tests {
    use super::*;

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
