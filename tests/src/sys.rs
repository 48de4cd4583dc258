//! The crate's only unsafe code: thin, safe wrappers over the few libc calls
//! the lab needs (signals, a non-reaping exit check, the parent-death signal).
//! Everything else in the crate is `#![deny(unsafe_code)]`.
#![allow(unsafe_code)]

use std::{io, os::unix::process::CommandExt as _, process::Command};

pub(crate) use libc::{SIGKILL, SIGTERM};

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a process with this pid exists and is not a zombie (EPERM counts
/// as alive). Zombies count as dead: on machines whose init does not reap
/// orphans they linger, but they run nothing.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(raw, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // `/proc/<pid>/stat` is `pid (comm) S ...`; comm may contain spaces and
    // parentheses, the state follows the last `)`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => true,
    }
}

/// Sends `sig` to every process of the process group `pgid`. Errors (the
/// group is empty) are ignored: callers use this to make sure things are gone.
///
/// Callers only pass the pgid of a child they have not reaped yet (alive or a
/// zombie), so the id cannot have been reused.
pub(crate) fn signal_group(pgid: u32, sig: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return; // never signal "every process" or init's group
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// Sends `sig` to one process; errors are ignored (see [`signal_group`]).
pub(crate) fn signal_pid(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether our child `pid` has exited, WITHOUT reaping it: the zombie keeps
/// the pid (and so its process group id) reserved until `Child::wait`, so
/// that the group can still be signalled safely. A pid that is not (or no
/// longer) our child counts as exited.
pub(crate) fn has_exited(pid: u32) -> bool {
    let id: libc::id_t = pid;
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child
    // waitable, WNOHANG makes the call non-blocking.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return true; // ECHILD: already reaped or not ours
    }
    // SAFETY: waitid filled `info` (or left it zeroed when nothing exited);
    // si_pid is valid for SIGCHLD-style siginfo.
    unsafe { info.si_pid() != 0 }
}

/// Makes the child get SIGKILL when the thread that forked it ends, i.e. when
/// this process dies (children are forked from a thread that lives as long
/// as the process, see `proc::start`). This is what keeps a killed test
/// binary (Ctrl-C, SIGKILL) from leaving daemons running inside namespaces.
pub(crate) fn die_with_parent(cmd: &mut Command) {
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
