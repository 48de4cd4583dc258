//! Finding the process behind a connection the way most tools do it: ask
//! the kernel for the socket's inode with a netlink `SOCK_DIAG_BY_FAMILY`
//! request (exact 4-tuple), then walk `/proc/<pid>/fd/*` for the process
//! that holds `socket:[<inode>]`. sluice attributes sockets with eBPF
//! hooks instead; this is the baseline it is measured against, and a
//! fallback for flows that began before sluice started.
//!
//! Request and reply are built and read as bytes (no struct casts); the
//! only `unsafe` is the three syscalls on the netlink socket.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// `nlmsghdr` (16) + `inet_diag_req_v2` (56).
const REQ_LEN: usize = 16 + 56;
/// Offset of `idiag_inode` in a reply: `nlmsghdr` (16), then in
/// `inet_diag_msg` the family/state/timer/retrans bytes (4), the socket id
/// (48), expires, rqueue, wqueue and uid (16).
const INODE_AT: usize = 16 + 4 + 48 + 16;

/// The transport of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The inode of the socket bound to `local` and connected to `remote`, or
/// `None` if the kernel knows no such socket.
///
/// # Errors
/// The netlink socket's errors, or `InvalidData` for a malformed reply.
pub fn socket_inode(
    proto: Proto,
    local: SocketAddr,
    remote: SocketAddr,
) -> io::Result<Option<u32>> {
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "local and remote addresses of different families",
            ));
        }
    };
    let mut req = [0u8; REQ_LEN];
    req[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // inet_diag_req_v2
    req[16] = family as u8;
    req[17] = match proto {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
    };
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    // inet_diag_sockid at 24: sport, dport (network order), src, dst,
    // interface, cookie (INET_DIAG_NOCOOKIE).
    req[24..26].copy_from_slice(&local.port().to_be_bytes());
    req[26..28].copy_from_slice(&remote.port().to_be_bytes());
    put_addr(&mut req[28..44], local.ip());
    put_addr(&mut req[44..60], remote.ip());
    req[64..72].fill(0xff);

    // SAFETY: plain syscall; the result is checked and owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `req` is valid for `req.len()` bytes for the call.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: `buf` is writable for `buf.len()` bytes for the call.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_reply(&buf[..n as usize])
}

fn put_addr(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
}

/// The first message of a reply: the inode, `None` for "no such socket".
fn parse_reply(b: &[u8]) -> io::Result<Option<u32>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply");
    let u32_at = |at: usize| -> io::Result<u32> {
        let s = b.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let len = u32_at(0)? as usize;
    if len < 16 || len > b.len() {
        return Err(bad());
    }
    let kind = u16::from_ne_bytes([b[4], b[5]]);
    if kind == NLMSG_ERROR {
        let errno = -(u32_at(16)? as i32);
        return if errno == libc::ENOENT {
            Ok(None)
        } else {
            Err(io::Error::from_raw_os_error(errno))
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY || len < INODE_AT + 4 {
        return Err(bad());
    }
    u32_at(INODE_AT).map(Some)
}

/// The first process (by `/proc` order) holding `socket:[inode]` open,
/// and its executable. Reads every process's descriptor table: the cost
/// grows with processes times open files.
pub fn process_of_inode(inode: u32) -> Option<(u32, PathBuf)> {
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
                return Some((pid, exe));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_behind_its_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let local = client.local_addr().unwrap();
        let inode = socket_inode(Proto::Tcp, local, server)
            .unwrap()
            .expect("the kernel knows the connection");
        let (pid, exe) = process_of_inode(inode).expect("this process holds it");
        assert_eq!(pid, std::process::id());
        assert_eq!(exe, std::env::current_exe().unwrap());
        // A connection that does not exist.
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_inode(Proto::Tcp, local, other).unwrap(), None);
        assert!(socket_inode(Proto::Tcp, local, "[::1]:1".parse().unwrap()).is_err());
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse_reply(&[]).is_err());
        assert!(parse_reply(&[0xff; 20]).is_err());
        let mut short = [0u8; 40];
        short[0] = 40;
        short[4] = SOCK_DIAG_BY_FAMILY as u8;
        assert!(parse_reply(&short).is_err());
    }
}
