//! The parse probe ([`sluice_common::PARSE_PROBE_PROGRAM`]): the
//! classifier's own header walk ([`crate::parse`]), its summary stored in
//! [`sluice_common::map_names::PARSE_PROBE`] for the differential fuzz
//! target to compare with the user-space views. Never attached.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{
    maps::PARSE_PROBE,
    parse::{self, Kind},
};

/// The header walk alone, for the differential fuzz target
/// ([`sluice_common::PARSE_PROBE_PROGRAM`]).
#[xdp]
pub fn parse_probe(ctx: XdpContext) -> u32 {
    run(&ctx);
    xdp_action::XDP_PASS
}

/// Parses `ctx`'s frame and stores the summary.
#[inline(always)]
fn run(ctx: &XdpContext) {
    let Some(out) = PARSE_PROBE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid pointer into the array map's only value; the
    // program does not run concurrently with itself on one CPU, and the
    // fuzz target runs one frame at a time. Fields are written in place:
    // a summary built on the stack next to the parse's `Frame` would not
    // fit the BPF stack.
    unsafe {
        (*out).runs = (*out).runs.wrapping_add(1);
        (*out).error = 0;
        (*out).src = [0; 16];
        (*out).dst = [0; 16];
        (*out).kind = 0;
        (*out).l2_multicast = 0;
        (*out).neighbor_discovery = 0;
        (*out).proto = 0;
        (*out).sport = 0;
        (*out).dport = 0;
        (*out).frag = 0;
        (*out).vlan_tags = 0;
        (*out).vlan_tci = 0;
        (*out).frag_id = 0;
    }
    let f = match parse::parse(ctx) {
        Ok(f) => f,
        Err(c) => {
            // SAFETY: as above.
            unsafe { (*out).error = c.index() + 1 };
            return;
        }
    };
    // SAFETY: as above.
    unsafe {
        (*out).kind = match f.kind {
            Kind::Arp => 1,
            Kind::NonIp => 2,
            Kind::Ipv4 => 4,
            Kind::Ipv6 => 6,
        };
        if f.kind == Kind::Ipv6 {
            (*out).src = f.src_v6;
            (*out).dst = f.dst_v6;
        } else {
            let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
            src[..4].copy_from_slice(&f.src_v4);
            dst[..4].copy_from_slice(&f.dst_v4);
            (*out).src = src;
            (*out).dst = dst;
        }
        (*out).l2_multicast = u8::from(f.l2_multicast);
        (*out).neighbor_discovery = u8::from(f.neighbor_discovery);
        (*out).proto = f.proto;
        (*out).sport = f.sport;
        (*out).dport = f.dport;
        (*out).frag = f.frag;
        (*out).frag_id = f.frag_id;
        (*out).vlan_tags = f.vlan_tags;
        (*out).vlan_tci = f.vlan_tci;
    }
}
