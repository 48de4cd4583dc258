//! Memory advice for large lookup tables.
//!
//! The userspace LPM's first-level tables (32 MiB for IPv4, 4 MiB for
//! IPv6) are read at random addresses: with 4 KiB pages nearly every lookup
//! also misses the TLB, and under a hypervisor a TLB miss is a
//! two-dimensional page walk. Backing them with 2 MiB transparent huge
//! pages removes most of those misses. This machine's kind (and Debian's
//! default) runs THP in `madvise` mode, so the table has to ask.
use std::io;

/// Size of an x86-64 / arm64 transparent huge page.
const HUGE: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `buf` with transparent
/// huge pages (`madvise(MADV_HUGEPAGE)`). Call it before the first write
/// to freshly allocated (zeroed, untouched) memory, so that the first
/// touch faults in huge pages. Contents are unchanged; it is only advice.
/// Slices smaller than one aligned huge page are left alone.
///
/// # Errors
/// The kernel's error (`EINVAL` where THP is compiled out); callers may
/// ignore it: the table works the same, only slower.
pub(crate) fn advise_huge_pages<T>(buf: &mut [T]) -> io::Result<()> {
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let aligned = start.next_multiple_of(HUGE);
    let aligned_end = end & !(HUGE - 1);
    if aligned_end <= aligned {
        return Ok(());
    }
    // SAFETY: [aligned, aligned_end) lies within `buf`, which we borrow
    // mutably, so it is mapped and no one else uses it; MADV_HUGEPAGE does
    // not change the range's contents or mapping, only how it is backed.
    let rc = unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            aligned_end - aligned,
            libc::MADV_HUGEPAGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The [`crate::lpm::Advise`] of the system: transparent huge pages for
/// the big tables ([`advise_huge_pages`], errors ignored: the table works
/// the same, only slower).
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

impl crate::lpm::Advise for HugePages {
    fn advise_u16(&self, table: &mut [u16]) {
        let _ = advise_huge_pages(table);
    }
    fn advise_u32(&self, table: &mut [u32]) {
        let _ = advise_huge_pages(table);
    }
}
