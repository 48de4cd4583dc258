//! CPU affinity of worker threads (`sched_getaffinity` / `sched_setaffinity`).
use std::io;

/// Most CPUs a `cpu_set_t` describes.
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// The CPUs this process may run on (its affinity mask, which `taskset`,
/// cgroup cpusets and container runtimes narrow), in ascending order.
///
/// # Errors
/// The kernel's error from `sched_getaffinity`.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain bits; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `set` was filled by the kernel; CPU_ISSET reads within it.
    Ok((0..MAX_CPUS)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
///
/// # Errors
/// `InvalidInput` beyond [`MAX_CPUS`]; otherwise the kernel's error (for
/// example `EINVAL` for a CPU outside the process's allowed set).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= MAX_CPUS {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: as above; `cpu` is below CPU_SETSIZE, checked.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_to_an_allowed_cpu_narrows_the_thread_to_it() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        // In a thread of its own: the test harness's threads stay as they are.
        std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
        assert!(pin_current_thread(MAX_CPUS).is_err());
    }
}
