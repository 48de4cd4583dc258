//! Who is at the other end of a Unix socket (`SO_PEERCRED`,
//! `SO_PEERGROUPS`), and a group's id by name (`getgrnam_r`): the admin
//! socket's authorisation.
use std::{io, os::fd::AsRawFd};

/// The credentials the kernel recorded for a Unix socket's peer when it
/// connected: not what the peer claims, so they cannot be forged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    /// Its process id at connect time.
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
}

/// The peer's credentials and supplementary groups.
///
/// # Errors
/// The kernel's error (`ENOTCONN`, not a Unix socket, ...).
pub fn peer_cred(sock: &impl AsRawFd) -> io::Result<PeerCred> {
    let fd = sock.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable `ucred` and `len` its size; the
    // kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Supplementary groups (Linux 4.13+): at most NGROUPS_MAX (65536).
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * 4).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `groups` is valid and writable for `len` bytes; the kernel
        // writes at most `len` bytes and sets `len` to what it wrote or needs.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let want = len as usize / 4;
        if rc == 0 {
            groups.truncate(want);
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && want > groups.len() && want <= 65_536 {
            groups.resize(want, 0);
            continue;
        }
        return Err(e);
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups,
    })
}

/// The id of group `name`, through the system's name service
/// (`getgrnam_r`): `None` if there is no such group.
///
/// # Errors
/// A lookup failure other than "not found", or a name with a NUL byte.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a group name"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `group` (null pointers, id 0).
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is
        // NUL-terminated, `grp` and `result` are writable, `buf` is
        // writable for `buf.len()` bytes; the strings `grp` points to live
        // in `buf`, which we do not read.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &raw mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!result.is_null()).then_some(grp.gr_gid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_sees_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.pid, i32::try_from(std::process::id()).unwrap());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(c.uid, unsafe { libc::geteuid() });
    }

    #[test]
    fn groups_by_name() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-sluice").unwrap(), None);
        assert!(group_id("a\0b").is_err());
    }
}
