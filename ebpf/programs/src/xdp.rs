//! The XDP programs: the classifier's entry point ([`classify`]), which
//! parses ([`crate::parse`]), decides ([`crate::verdict`]), counts, and for
//! a tunnel verdict puts the [`XdpMeta`] in front of the frame and
//! redirects it to its RX queue's `AF_XDP` socket; and the pass-everything
//! baseline ([`noop`]).
//!
//! This module is the only writer of the frame's metadata area, and it
//! writes it only as an [`XdpMeta`] (the type the workers decode).
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sluice_common::{Counter, META_LEN, VLAN_MODE_UNTAG, XdpMeta, setting};

use crate::{
    maps, parse,
    verdict::{self, Verdict},
    vlan,
};

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
            if vlan::wants_untag(&frame) && maps::setting(setting::VLAN_MODE) == VLAN_MODE_UNTAG {
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
            if !put_meta(ctx, XdpMeta::new(action, generation)) {
                maps::count(Counter::DropNoMeta);
                return Ok(xdp_action::XDP_DROP);
            }
            maps::count(counter);
            maps::redirect_to_socket(ctx)
        }
    })
}

/// Puts `meta` in the metadata area in front of the frame, where the
/// worker reads it from the UMEM frame ([`XdpMeta::decode`]). False if
/// the driver has no room for it.
#[inline(always)]
fn put_meta(ctx: &XdpContext, meta: XdpMeta) -> bool {
    // SAFETY: the helper only moves `data_meta`; the context stays
    // valid and every later access is bounds-checked again.
    let rc = unsafe { aya_ebpf::helpers::bpf_xdp_adjust_meta(ctx.ctx, -(META_LEN as i32)) };
    if rc != 0 {
        return false;
    }
    let at = ctx.metadata();
    if at + META_LEN > ctx.data() {
        return false;
    }
    // SAFETY: the `META_LEN` bytes (`size_of::<XdpMeta>()`, asserted in
    // `sluice_common`) lie between `data_meta` and `data`, as just checked;
    // `XdpMeta` has alignment 1, so any address is aligned for it.
    unsafe { (at as *mut XdpMeta).write(meta) };
    true
}
