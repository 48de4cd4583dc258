//! Types shared by the kernel side (`sluice-ebpf`: the XDP classifier and
//! the socket hooks) and the user side (`sluice`: the loader, the workers,
//! endpoint mode) of the dataplane.
//!
//! Everything that crosses the kernel/user boundary is defined here exactly
//! once: map and program names, map sizes, map key and value layouts, the
//! metadata the classifier puts in front of a redirected frame
//! ([`XdpMeta`]), and the counter indices of the statistics maps. Every
//! shared struct is `#[repr(C)]` and padding-free (flags are `u32`, never
//! `bool`), so the byte layout seen by the verifier and by `bpf(2)` from
//! user space is the same; each one's size and alignment are asserted next
//! to its definition, and a field-by-field check proves it has no padding,
//! when this crate compiles for either target (a field added on one side
//! breaks the build, not only a test).
//!
//! The source is split by concern; every item is re-exported at the root
//! (`sluice_common::X`), the one path users name:
//! - `names`: the object's map and program names;
//! - `xdp`: the classifier's frame path: [`XdpMeta`], [`Counter`],
//!   [`setting`], the header-walk limits, [`ParseSummary`];
//! - `frag`: fragments following their first fragment;
//! - `vlan`: untag mode;
//! - `policy`: the policy slots, tries and state word, and the bypass
//!   tries;
//! - `sock`: endpoint mode's socket hooks and process tracepoints.
//!
//! What this crate must not do: depend on `std` or allocate (it is
//! `no_std` and builds for `bpfel-unknown-none`), hold anything but plain
//! data and `const` codecs of it (no I/O, no state), or have a dependency on
//! the kernel side. The `user` feature adds `unsafe impl aya::Pod` for the
//! shared structs (through the layout check, the crate's only `unsafe`).
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[macro_use]
mod layout;

mod frag;
mod names;
mod policy;
mod sock;
mod vlan;
mod xdp;

pub use frag::*;
pub use names::*;
pub use policy::*;
pub use sock::*;
pub use vlan::*;
pub use xdp::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_structs_have_no_padding() {
        assert_eq!(core::mem::size_of::<SockConfig>(), 24);
        assert_eq!(core::mem::size_of::<ProcessEntry>(), 8);
        assert_eq!(core::mem::size_of::<ExecGrant>(), 24);
        assert_eq!(core::mem::size_of::<ExecFileOffsets>(), 32);
        assert_eq!(core::mem::size_of::<FlowEntry>(), 48);
        assert_eq!(core::mem::size_of::<FragKey>(), 40);
        assert_eq!(core::mem::size_of::<FragEntry>(), 16);
        assert_eq!(core::mem::size_of::<ParseSummary>(), 56);
        assert_eq!(core::mem::size_of::<ProfileEntry>(), 32);
        assert_eq!(core::mem::size_of::<DestEntry>(), 36);
        assert_eq!(core::mem::size_of::<DnsEntry>(), 24);
    }
}
