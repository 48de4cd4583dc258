//! Child processes sluice runs (`ip`, `nft`) die with the thread that
//! started them.
//!
//! Why it matters: between `fork` and `exec` a child holds copies of all of
//! sluice's descriptors, the exec watcher's fanotify group included, and its
//! own `execve` waits for that group's permission answer. If sluice ends
//! (or its watcher stops) in that window, the child would keep the group
//! alive while waiting on it, and every exec on the host would wait with
//! it. With `PR_SET_PDEATHSIG` the child is killed (the wait is killable)
//! when the thread that forked it goes, the group's last holder goes, and
//! the kernel lets the held execs run.
use std::{io, os::unix::process::CommandExt as _, process::Command};

/// Makes `cmd`'s child get SIGKILL when the thread that forks it ends.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl,
    // getppid) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
