//! sluice's XDP classifier (kernel side).
//!
//! Runs on the gateway's LAN interface and decides, per frame, whether the
//! kernel handles it (`XDP_PASS`: non-IP, ARP, neighbour discovery,
//! multicast, traffic to the gateway itself, bypassed destinations) or
//! whether it goes down the tunnel (redirected into the `AF_XDP` socket of its
//! RX queue). Malformed frames are counted and dropped, never passed on
//! half-parsed; tunnelled traffic with no socket to take it is dropped too
//! (fail-closed: it must never leak to the kernel's routing).
//!
//! Layout:
//! - [`parse`]: bounds-checked header walk (Ethernet, VLAN, IPv4, IPv6 and
//!   its extension headers) into a small [`parse::Frame`] summary;
//! - [`verdict`]: the ordered policy that turns a summary into a verdict,
//!   with the map lookups it needs;
//! - [`maps`]: the maps shared with user space and the counter helper.
//!
//! This program must not allocate, loop without a constant bound, or keep
//! state beyond its maps. Every packet increments exactly one verdict
//! counter (plus `DropNoSocket`, see [`sluice_common::Counter`]).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod verdict;

/// Host builds of this crate (e.g. `cargo check --workspace`) get an empty
/// binary: the program only means something for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
    use sluice_common::Counter;

    use crate::{
        maps, parse,
        verdict::{self, Verdict},
    };

    /// The kernel only lets GPL-compatible programs call GPL-only helpers;
    /// the object declares the workspace's dual licence.
    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    /// The XDP entry point ([`sluice_common::CLASSIFIER_PROGRAM`]).
    #[xdp]
    pub fn classify(ctx: XdpContext) -> u32 {
        match try_classify(&ctx) {
            Ok(action) => action,
            Err(drop) => {
                maps::count(drop);
                xdp_action::XDP_DROP
            }
        }
    }

    /// Passes every frame untouched: the "kernel forwarding with an XDP
    /// program attached" baseline of the lab benchmark
    /// ([`sluice_common::NOOP_PROGRAM`]).
    #[xdp]
    pub fn noop(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// Parses, decides, counts. `Err` carries the drop counter of a
    /// malformed frame; every `Ok` path has counted its verdict already.
    #[inline(always)]
    fn try_classify(ctx: &XdpContext) -> Result<u32, Counter> {
        let frame = parse::parse(ctx)?;
        Ok(match verdict::decide(&frame) {
            Verdict::Pass(counter) => {
                maps::count(counter);
                xdp_action::XDP_PASS
            }
            Verdict::Tunnel => {
                maps::count(Counter::Tunnel);
                maps::redirect_to_socket(ctx)
            }
        })
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // Unreachable in a verified program: the verifier rejects any path
        // that could get here, and the code has no panicking operations.
        loop {}
    }
}
