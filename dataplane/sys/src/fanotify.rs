//! fanotify permission events for `execve` (`FAN_OPEN_EXEC_PERM`): the
//! kernel holds every process that opens a file to execute it until sluice
//! answers, which gives endpoint mode a window to write the process's
//! bypass verdict before the new program runs a single instruction.
//!
//! sluice always answers "allow": it steers, never blocks. Each event must
//! be answered exactly once (an unanswered event holds its process until
//! the group's descriptor closes, which releases every pending event):
//! [`ExecEvent`] answers on drop.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

const FAN_CLOEXEC: libc::c_uint = 0x1;
const FAN_NONBLOCK: libc::c_uint = 0x2;
/// No queue limit: an overflowing queue would let execs through unseen
/// (their processes are then tunnelled, but needlessly).
const FAN_UNLIMITED_QUEUE: libc::c_uint = 0x10;
const FAN_ALLOW: u32 = 0x01;
const FAN_MARK_ADD: libc::c_uint = 0x1;
/// `struct fanotify_event_metadata`: 24 bytes in version 3.
const META_LEN: usize = 24;
const FANOTIFY_METADATA_VERSION: u8 = 3;

/// A fanotify group that receives exec permission events.
#[derive(Debug)]
pub struct ExecWatch {
    fd: OwnedFd,
}

/// One process about to execute a file. Answered (allowed) on drop.
#[derive(Debug)]
pub struct ExecEvent<'a> {
    group: BorrowedFd<'a>,
    /// The file being executed, opened read-only by the kernel for us.
    pub file: File,
    /// The process (thread group id) executing it.
    pub pid: u32,
}

impl ExecEvent<'_> {
    /// The file's path, as the kernel resolves it (`/proc/self/fd`).
    pub fn path(&self) -> io::Result<PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

impl Drop for ExecEvent<'_> {
    fn drop(&mut self) {
        let resp = libc::fanotify_response {
            fd: self.file.as_raw_fd(),
            response: FAN_ALLOW,
        };
        // SAFETY: writes the 8-byte response struct from a live local to
        // the group's descriptor; nothing is retained.
        let rc = unsafe {
            libc::write(
                self.group.as_raw_fd(),
                (&raw const resp).cast(),
                std::mem::size_of::<libc::fanotify_response>(),
            )
        };
        if rc < 0 {
            log::error!(
                "fanotify: answering the exec of process {}: {}",
                self.pid,
                io::Error::last_os_error()
            );
        }
    }
}

impl ExecWatch {
    /// A new group (`FAN_CLASS_CONTENT`: permission events), non-blocking.
    /// Raises the open-file limit to its hard maximum first: every event
    /// read holds a descriptor, and one the kernel cannot create denies
    /// that exec.
    pub fn new() -> io::Result<Self> {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) == 0 && r.rlim_cur < r.rlim_max {
                r.rlim_cur = r.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &raw const r);
            }
        }
        // SAFETY: plain syscall; the result is checked and owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by no
        // one else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches every exec of a file on the filesystem that holds `path`
    /// (in every mount of it, in every mount namespace).
    pub fn watch_filesystem(&self, path: &Path) -> io::Result<()> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: `c` is a valid C string for the duration of the call.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN_EXEC_PERM,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for events and returns those read (empty
    /// on timeout). `buf` is scratch space, at least 4 KiB.
    pub fn read<'a>(&'a self, buf: &mut [u8], timeout_ms: i32) -> io::Result<Vec<ExecEvent<'a>>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        if rc == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: reads into `buf`, at most its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        let mut out = Vec::new();
        let mut rest = &buf[..n as usize];
        while rest.len() >= META_LEN {
            let word = |i: usize| [rest[i], rest[i + 1], rest[i + 2], rest[i + 3]];
            let event_len = u32::from_ne_bytes(word(0)) as usize;
            let vers = rest[4];
            let fd = i32::from_ne_bytes(word(16));
            let pid = i32::from_ne_bytes(word(20));
            if event_len < META_LEN || event_len > rest.len() || vers != FANOTIFY_METADATA_VERSION {
                // The rest of the buffer cannot be parsed, so its events
                // cannot be answered: the caller must close the group
                // (which answers every pending event).
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed fanotify event (length {event_len}, version {vers})"),
                ));
            }
            rest = &rest[event_len..];
            if fd < 0 {
                // FAN_NOFD: a queue overflow notice, no process waiting.
                log::warn!("fanotify: event queue overflow");
                continue;
            }
            // SAFETY: the kernel opened `fd` for this event and hands its
            // ownership to us.
            let file = unsafe { File::from_raw_fd(fd) };
            out.push(ExecEvent {
                group: self.fd.as_fd(),
                file,
                pid: pid.max(0) as u32,
            });
        }
        Ok(out)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills a live local; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Whether this process runs in the initial PID namespace (process ids as
/// the kernel's hooks see them).
pub fn in_initial_pid_namespace() -> io::Result<bool> {
    /// `PROC_PID_INIT_INO`.
    const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/self/ns/pid")?.ino() == INIT_PID_NS_INO)
}

/// The cookie of the calling thread's network namespace
/// (`SO_NETNS_COOKIE`, Linux 5.14+), as the socket hooks see it.
pub fn netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))?;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Mounts tracefs at `/sys/kernel/tracing` unless one is there already
/// (the tracepoint hooks are found through it).
pub fn ensure_tracefs() -> io::Result<PathBuf> {
    const TRACEFS_MAGIC: i64 = 0x7472_6163;
    let path = PathBuf::from("/sys/kernel/tracing");
    let c = c"/sys/kernel/tracing";
    // SAFETY: `st` is a live local; `c` a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    if rc == 0 && st.f_type as i64 == TRACEFS_MAGIC {
        return Ok(path);
    }
    let fstype = c"tracefs";
    // SAFETY: valid C strings, null data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(path)
}
