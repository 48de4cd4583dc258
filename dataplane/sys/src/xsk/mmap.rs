//! An owned memory mapping, unmapped on drop.

use std::{io, os::fd::BorrowedFd, ptr::NonNull};

/// A mapping made by `mmap(2)` and owned by this value.
#[derive(Debug)]
pub(super) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide, owned by this value alone, and
// `munmap` may run on any thread.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Private, anonymous, pre-faulted memory (the UMEM), on 2 MiB huge
    /// pages if asked (then `len` must be a multiple of 2 MiB and enough
    /// huge pages reserved).
    pub(super) fn anonymous(len: usize, hugepages: bool) -> io::Result<Self> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if hugepages {
            flags |= libc::MAP_HUGETLB;
        }
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing; it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        Self::from_result(ptr, len)
    }

    /// A shared mapping of `len` bytes of an `AF_XDP` socket's ring at page
    /// offset `offset` (`XDP_PGOFF_*`).
    pub(super) fn ring(fd: BorrowedFd<'_>, len: usize, offset: libc::off_t) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: maps kernel ring memory of a socket we hold open, at an
        // address of the kernel's choosing; it aliases nothing of ours.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_result(ptr, len)
    }

    fn from_result(ptr: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len })
    }

    /// Start of the mapping.
    pub(super) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned and nothing
        // derived from them outlives `self` (owners drop their views first).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap: {}", io::Error::last_os_error());
    }
}
