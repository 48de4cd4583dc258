//! The compile-time layout check of the types that cross the kernel/user
//! boundary.
//!
//! [`plain!`] checks, when this crate compiles (for `bpfel-unknown-none`
//! and for the host alike), that every field of a shared struct is a plain
//! integer, an array of them or another checked struct ([`Plain`]: no
//! `bool`, no enum, no pointer, so every bit pattern is a value), and that
//! the fields lie back to back in declaration order from offset 0 and fill
//! the struct (no padding, and the same layout on every target). Only then
//! does it implement `aya::Pod` (feature `user`), whose contract is exactly
//! that. The struct's size and alignment are asserted by hand next to its
//! definition, so that a reader sees the numbers.
#![allow(unsafe_code)]

/// A type with no padding whose every bit pattern is a valid value, and
/// whose layout does not depend on the target.
///
/// # Safety
/// Implemented only for the fixed-width integers, arrays of `Plain` types
/// and structs checked by [`plain!`].
pub(crate) unsafe trait Plain: Copy + 'static {}

// SAFETY: fixed-width integers: no padding, every bit pattern valid.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: an array of plain elements has no padding between them
// (`size_of` is a multiple of `align_of`).
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// The size of the field `f` selects, if it is [`Plain`] (a compile error
/// otherwise). Only its type matters: `f` is never called.
pub(crate) const fn plain_size<T, F: Plain>(_f: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// `plain!(T { f1, f2, ... })`, after a `#[repr(C)]` struct `T` with
/// exactly those fields in that order: checks at compile time that each
/// field is [`Plain`], starts where the one before it ends and that the
/// last ends at `size_of::<T>()`; then implements [`Plain`] for `T` and,
/// with the `user` feature, `aya::Pod`. A field left out of the list, a
/// `bool`, or padding anywhere fails the build.
macro_rules! plain {
    ($t:ident { $($f:ident),+ $(,)? }) => {
        const _: () = {
            let mut end = 0usize;
            $(
                assert!(
                    core::mem::offset_of!($t, $f) == end,
                    concat!(
                        stringify!($t), ".", stringify!($f),
                        ": padding before it, or the list is out of order",
                    ),
                );
                end += $crate::layout::plain_size(|s: &$t| &s.$f);
            )+
            assert!(
                end == core::mem::size_of::<$t>(),
                concat!(
                    stringify!($t),
                    ": padding at the end, or a field missing from the list",
                ),
            );
        };
        // SAFETY: checked just above: plain fields, back to back, no
        // padding.
        #[allow(unsafe_code)]
        unsafe impl $crate::layout::Plain for $t {}
        // SAFETY: as above: no padding and every bit pattern is a value,
        // which is `Pod`'s contract.
        #[cfg(feature = "user")]
        #[allow(unsafe_code)]
        unsafe impl aya::Pod for $t {}
    };
}
