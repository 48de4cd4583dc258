//! The process's descriptor limit (`RLIMIT_NOFILE`).
use std::io;

/// The soft and hard `RLIMIT_NOFILE`.
///
/// # Errors
/// The kernel's error.
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` if it can: to the
/// hard limit, and past it when the process may (`CAP_SYS_RESOURCE`, up to
/// `fs.nr_open`). Never lowers either limit. Returns the soft limit now in
/// force.
///
/// # Errors
/// When the current limits cannot be read.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let (soft, hard) = nofile()?;
    if soft >= want {
        return Ok(soft);
    }
    let set = |cur: u64, max: u64| {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit reads the valid struct it is given.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0 }
    };
    if hard < want && set(want, want) {
        return Ok(want);
    }
    if set(want.min(hard), hard) {
        return Ok(want.min(hard));
    }
    Ok(soft)
}
