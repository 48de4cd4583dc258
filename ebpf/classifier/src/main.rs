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
//! - [`maps`]: the maps shared with user space and the counter helper;
//! - [`vlan`]: untag mode (tags removed before the kernel, put back on
//!   its frames by a tc egress program);
//! - [`probe`]: the header walk alone, for the differential fuzz target;
//! - [`lab`]: programs for the namespace lab only (a host on a VLAN).
//!
//! This program must not allocate, loop without a constant bound, or keep
//! state beyond its maps. Every packet increments exactly one verdict
//! counter (plus `DropNoSocket`, see [`sluice_common::Counter`]).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod lab;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod probe;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod verdict;
#[cfg(target_arch = "bpf")]
mod vlan;

/// Host builds of this crate (e.g. `cargo check --workspace`) get an empty
/// binary: the program only means something for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        macros::{cgroup_sock, cgroup_sock_addr, classifier, tracepoint, xdp},
        programs::{SockAddrContext, SockContext, TcContext, TracePointContext, XdpContext},
    };
    use sluice_common::{Counter, VLAN_MODE_UNTAG, setting};

    use crate::{
        lab, maps, parse, probe, sock,
        verdict::{self, Verdict},
        vlan,
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

    /// Untag mode: tags the kernel's frames to LAN hosts on a VLAN
    /// ([`sluice_common::VLAN_EGRESS_PROGRAM`], tc egress of the LAN).
    #[classifier]
    pub fn vlan_egress(ctx: TcContext) -> i32 {
        vlan::egress(&ctx)
    }

    /// The header walk alone, for the differential fuzz target
    /// ([`sluice_common::PARSE_PROBE_PROGRAM`]).
    #[xdp]
    pub fn parse_probe(ctx: XdpContext) -> u32 {
        probe::run(&ctx);
        xdp_action::XDP_PASS
    }

    /// Lab only: tags a lab host's frames ([`sluice_common::LAB_VLAN_PUSH_PROGRAM`]).
    #[classifier]
    pub fn lab_vlan_push(ctx: TcContext) -> i32 {
        lab::push(&ctx)
    }

    /// Lab only: untags a lab host's VLAN, drops the rest
    /// ([`sluice_common::LAB_VLAN_POP_PROGRAM`]).
    #[classifier]
    pub fn lab_vlan_pop(ctx: TcContext) -> i32 {
        lab::pop(&ctx)
    }

    /// Endpoint mode: marks the sockets of bypassed processes
    /// ([`sluice_common::sock_programs::SOCK_CREATE`]).
    #[cgroup_sock(sock_create)]
    pub fn sock_create(ctx: SockContext) -> i32 {
        sock::sock_create(&ctx)
    }

    /// Endpoint mode: forgets a released socket's flow.
    #[cgroup_sock(sock_release)]
    pub fn sock_release(ctx: SockContext) -> i32 {
        sock::sock_release(&ctx)
    }

    /// Endpoint mode: IPv4 destination bypass and flow table.
    #[cgroup_sock_addr(connect4)]
    pub fn connect4(ctx: SockAddrContext) -> i32 {
        sock::connect(&ctx, false)
    }

    /// Endpoint mode: IPv6 destination bypass and flow table.
    #[cgroup_sock_addr(connect6)]
    pub fn connect6(ctx: SockAddrContext) -> i32 {
        sock::connect(&ctx, true)
    }

    /// Endpoint mode: unconnected IPv4 sends of marked sockets.
    #[cgroup_sock_addr(sendmsg4)]
    pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
        sock::sendmsg(&ctx, false)
    }

    /// Endpoint mode: unconnected IPv6 sends of marked sockets.
    #[cgroup_sock_addr(sendmsg6)]
    pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
        sock::sendmsg(&ctx, true)
    }

    /// Endpoint mode: a successful exec applies its verdict.
    #[tracepoint]
    pub fn process_exec(ctx: TracePointContext) -> u32 {
        sock::process_exec(&ctx)
    }

    /// Endpoint mode: a child inherits its parent's bypass.
    #[tracepoint]
    pub fn process_fork(ctx: TracePointContext) -> u32 {
        sock::process_fork(&ctx)
    }

    /// Endpoint mode: an exiting task's bypass entry goes.
    #[tracepoint]
    pub fn process_exit(ctx: TracePointContext) -> u32 {
        sock::process_exit(&ctx)
    }

    /// Parses, decides, counts. `Err` carries the drop counter of a
    /// malformed frame; every `Ok` path has counted its verdict already.
    #[inline(always)]
    fn try_classify(ctx: &XdpContext) -> Result<u32, Counter> {
        let frame = parse::parse(ctx)?;
        Ok(match verdict::decide(&frame) {
            Verdict::Pass(counter) => {
                if vlan::wants_untag(&frame) && maps::setting(setting::VLAN_MODE) == VLAN_MODE_UNTAG
                {
                    if !vlan::untag(ctx, &frame) {
                        maps::count(Counter::DropUntag);
                        return Ok(xdp_action::XDP_DROP);
                    }
                    maps::count(Counter::PassUntagged);
                } else if frame.vlan_tags == 0
                    && (counter == Counter::PassArp || counter == Counter::PassNeighbor)
                    && maps::setting(setting::VLAN_MODE) == VLAN_MODE_UNTAG
                {
                    vlan::forget(ctx, &frame);
                }
                maps::count(counter);
                xdp_action::XDP_PASS
            }
            Verdict::Tunnel {
                action,
                generation,
                counter,
            } => {
                if !put_meta(ctx, action, generation) {
                    maps::count(Counter::DropNoMeta);
                    return Ok(xdp_action::XDP_DROP);
                }
                maps::count(counter);
                maps::redirect_to_socket(ctx)
            }
        })
    }

    /// Puts `[META_MAGIC, action, generation]` in the metadata area in
    /// front of the frame, where the worker reads it from the UMEM frame.
    /// False if the driver has no room for it.
    #[inline(always)]
    fn put_meta(ctx: &XdpContext, action: u8, generation: u32) -> bool {
        use sluice_common::META_LEN;
        // SAFETY: the helper only moves `data_meta`; the context stays
        // valid and every later access is bounds-checked again.
        let rc = unsafe { aya_ebpf::helpers::bpf_xdp_adjust_meta(ctx.ctx, -(META_LEN as i32)) };
        if rc != 0 {
            return false;
        }
        let meta = ctx.metadata();
        if meta + META_LEN > ctx.data() {
            return false;
        }
        let b = sluice_common::XdpMeta::new(action, generation).encode();
        // SAFETY: the four bytes lie between `data_meta` and `data`, as
        // just checked; byte writes need no alignment.
        unsafe {
            let p = meta as *mut u8;
            *p = b[0];
            *p.add(1) = b[1];
            *p.add(2) = b[2];
            *p.add(3) = b[3];
        }
        true
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // Unreachable in a verified program: the verifier rejects any path
        // that could get here, and the code has no panicking operations.
        loop {}
    }
}
