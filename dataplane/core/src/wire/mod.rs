//! Zero-copy views over wire formats: the headers the hot path needs
//! ([`ethernet`]; [`ipv4`], [`ipv6`], [`tcp`], [`udp`], and [`ip`], the
//! version-independent facts the tunneler asks of any IP packet), the
//! tunnel's own framing ([`tunnel`]), the datagram transport's record
//! ([`datagram`]) and the Internet [`checksum`];
//! [`summary`] states the XDP classifier's header walk in user space (the
//! differential fuzz target's reference).
//!
//! Each view wraps a buffer (`T: AsRef<[u8]>`) in the manner of smoltcp's
//! `wire` module: its field offsets are constants in one private `mod
//! field`; `new_unchecked` wraps without a look, `new_checked` (or
//! `check_len` on an unchecked view) checks the lengths, version and
//! header-length fields once, and after it succeeds no accessor panics.
//! Setters live in the `AsMut<[u8]>` impl blocks; a setter of a length
//! field can break what `check_len` established (its documentation says
//! so). Where that contract is broken (an unchecked view, or a length set
//! past the buffer), a fixed field out of the buffer panics and a
//! variable-length part (options, payload) comes back empty. Nothing here
//! allocates or does I/O; use `etherparse` where a full parse is needed
//! instead.

pub mod checksum;
pub mod datagram;
pub mod ethernet;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod summary;
pub mod tcp;
pub mod tunnel;
pub mod udp;

/// Big-endian reads and writes of the fixed-size fields the views name by
/// `Range<usize>` constants. Each indexes its slice (safe code: a bounds
/// check the compiler folds away once the view's length is known), so a
/// view that skipped `check_len` panics rather than reads past its buffer.
///
/// `#[inline(always)]`: with plain `#[inline]`, LLVM kept `u32_at` out of
/// line in GRO's large `push` (a call, and a range check it could not fold,
/// per field read: GRO's criterion bench measured it). Inlined, each read
/// is the load the hand-written offsets were.
#[allow(
    clippy::inline_always,
    reason = "measured: out-of-line field reads slowed GRO; see above"
)]
mod be {
    #[inline(always)]
    pub(super) fn u16_at(b: &[u8], r: core::ops::Range<usize>) -> u16 {
        let b = &b[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline(always)]
    pub(super) fn u32_at(b: &[u8], r: core::ops::Range<usize>) -> u32 {
        let b = &b[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[inline(always)]
    pub(super) fn set_u16(b: &mut [u8], r: core::ops::Range<usize>, v: u16) {
        b[r].copy_from_slice(&v.to_be_bytes());
    }

    #[inline(always)]
    pub(super) fn set_u32(b: &mut [u8], r: core::ops::Range<usize>, v: u32) {
        b[r].copy_from_slice(&v.to_be_bytes());
    }
}

/// A buffer was shorter than the header it must hold, or a length field
/// pointed past its end. Cheap and `Copy`: used on the per-packet path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}
