//! A BPF array map of 64-bit words, mapped into this process
//! (`BPF_F_MMAPABLE`): each word is read and written with one atomic
//! access, which a program in the kernel sees as one 8-byte store. The
//! classifier's policy state word lives in such a map, so that a frame
//! never reads half of a change (see [`sluice_common::PolicyState`]).
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// The words of a `BPF_F_MMAPABLE` array map with 8-byte values, shared
/// with the kernel. Unmapped when dropped (the map itself lives on as
/// long as its file descriptor or a program holds it).
#[derive(Debug)]
pub struct MappedWords {
    base: NonNull<AtomicU64>,
    words: usize,
    len: usize,
}

// SAFETY: the mapping is only accessed through `AtomicU64`s, which may be
// shared and sent between threads.
unsafe impl Send for MappedWords {}
// SAFETY: as above.
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Maps the first `words` 8-byte values of the array map `fd` (which
    /// must have been created with `BPF_F_MMAPABLE`, value size 8 and at
    /// least `words` entries: the kernel refuses a longer mapping).
    pub fn new(fd: BorrowedFd<'_>, words: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(4096);
        let len = (words * 8).div_ceil(page).max(1) * page;
        // SAFETY: a fresh shared mapping of the map's fd; nothing else in
        // this process refers to that address range. The kernel checks the
        // length against the map's size.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<AtomicU64>()).ok_or_else(|| io::Error::other("mmap"))?;
        Ok(Self { base, words, len })
    }

    fn word(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: `i < words`, within the mapping (page aligned, so every
        // word is 8-byte aligned); the memory lives until `drop`, and is
        // only accessed atomically.
        (i < self.words).then(|| unsafe { &*self.base.as_ptr().add(i) })
    }

    /// Stores `v` in word `i` (release: everything written before is
    /// visible to whoever sees `v`). Out of range: ignored.
    pub fn store(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            w.store(v, Ordering::Release);
        }
    }

    /// Word `i` (0 out of range).
    pub fn load(&self, i: usize) -> u64 {
        self.word(i).map_or(0, |w| w.load(Ordering::Acquire))
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `new` and is not used after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
