//! Zero-copy views over wire formats: the headers the hot path needs
//! ([`ethernet`], [`ip`]), the tunnel's own framing ([`tunnel`]) and the
//! Internet [`checksum`]; [`summary`] states the XDP classifier's header
//! walk in user space (the differential fuzz target's reference).
//!
//! Each view wraps a borrowed buffer (`T: AsRef<[u8]>`), checks lengths once in
//! `new_checked`, and after that no accessor panics. Setters live in the
//! `AsMut<[u8]>` impl blocks. Nothing here allocates or does I/O; use
//! `etherparse` where a full parse is needed instead.

pub mod checksum;
pub mod ethernet;
pub mod ip;
pub mod summary;
pub mod tunnel;

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
