//! An exclusive advisory lock (`flock`) held for the life of a process:
//! one sluice gateway per LAN interface and network namespace, and none
//! while the operator's `sluice gateway detach` removes what a stopped one
//! left. The kernel drops the lock when the process ends, however it ends.
use std::{
    fs::{File, OpenOptions},
    io,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock on `path` (created 0600, its directory 0755 if
    /// missing) without waiting. `Ok(None)` if another process holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        loop {
            // SAFETY: `file` is an open descriptor for the duration of the
            // call; flock takes no pointers.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Some(Self {
                    _file: file,
                    path: path.to_path_buf(),
                }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(None),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("sluice-lock-{}", std::process::id()));
        let p = dir.join("x.lock");
        let a = Lock::try_acquire(&p).unwrap().expect("first");
        // flock locks belong to the open file: a second open is refused.
        assert!(Lock::try_acquire(&p).unwrap().is_none());
        drop(a);
        assert!(Lock::try_acquire(&p).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
