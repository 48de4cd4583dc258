//! The XDP programs: the classifier's entry points ([`classify`] and
//! [`classify_head`]), which parse ([`crate::parse`]), decide
//! ([`crate::verdict`]), count, and for a tunnel verdict put the
//! [`XdpMeta`] in front of the frame and redirect it to its RX queue's
//! `AF_XDP` socket; and the pass-everything baseline ([`noop`]).
//!
//! The two classifier programs differ only in where the metadata goes
//! ([`put_meta`]): `classify` puts it in the metadata area
//! (`bpf_xdp_adjust_meta`, in front of `data`), `classify_head` in front
//! of the frame itself (`bpf_xdp_adjust_head`: the socket receives
//! `[meta][Ethernet frame]`), for kernels that refuse
//! `bpf_xdp_adjust_meta` to XDP programs. User space loads one of them
//! and reads the metadata accordingly. The verdict logic is written once
//! ([`try_classify`]) and instantiated twice through a const generic, so
//! each program's instruction stream holds only its own helper.
//!
//! This module is the only writer of the frame's metadata, and it
//! writes it only as an [`XdpMeta`] (the type the workers decode).
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sluice_common::{Counter, META_LEN, VLAN_MODE_UNTAG, XdpMeta, setting};

use crate::{
    maps, parse,
    verdict::{self, Verdict},
    vlan,
};

/// The XDP entry point ([`sluice_common::CLASSIFIER_PROGRAM`]): the
/// metadata goes in the metadata area.
#[xdp]
pub fn classify(ctx: XdpContext) -> u32 {
    run::<false>(&ctx)
}

/// The same classifier ([`sluice_common::CLASSIFIER_HEAD_PROGRAM`]), the
/// metadata in front of the frame: for kernels that refuse
/// `bpf_xdp_adjust_meta` to XDP programs.
#[xdp]
pub fn classify_head(ctx: XdpContext) -> u32 {
    run::<true>(&ctx)
}

/// Passes every frame untouched: the "kernel forwarding with an XDP
/// program attached" baseline of the lab benchmark
/// ([`sluice_common::NOOP_PROGRAM`]).
#[xdp]
pub fn noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Either classifier: `HEAD` picks where [`put_meta`] writes.
#[inline(always)]
fn run<const HEAD: bool>(ctx: &XdpContext) -> u32 {
    match try_classify::<HEAD>(ctx) {
        Ok(action) => action,
        Err(drop) => {
            maps::count(drop);
            xdp_action::XDP_DROP
        }
    }
}

/// Parses, decides, counts. `Err` carries the drop counter of a
/// malformed frame; every `Ok` path has counted its verdict already.
#[inline(always)]
fn try_classify<const HEAD: bool>(ctx: &XdpContext) -> Result<u32, Counter> {
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
            if !put_meta::<HEAD>(ctx, XdpMeta::new(action, generation)) {
                maps::count(Counter::DropNoMeta);
                return Ok(xdp_action::XDP_DROP);
            }
            // From here on the frame is only redirected or dropped: in
            // head mode it no longer starts with its Ethernet header, so
            // it must never be passed to the kernel.
            maps::count(counter);
            maps::redirect_to_socket(ctx)
        }
    })
}

/// Puts `meta` in front of the frame, where the worker reads it from the
/// UMEM frame ([`XdpMeta::decode`]): in the metadata area
/// (`bpf_xdp_adjust_meta`; the socket's descriptor points at the frame,
/// the metadata lies just before it), or with `HEAD` in front of the frame
/// itself (`bpf_xdp_adjust_head`; the descriptor points at the metadata,
/// the frame follows it). False if the driver has no room for it.
#[inline(always)]
fn put_meta<const HEAD: bool>(ctx: &XdpContext, meta: XdpMeta) -> bool {
    let delta = -(META_LEN as i32);
    // SAFETY: the helpers only move `data_meta` (or `data`); the context
    // stays valid and every later access is bounds-checked again (the
    // verifier forgets every packet bound across these calls).
    let rc = unsafe {
        if HEAD {
            aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, delta)
        } else {
            aya_ebpf::helpers::bpf_xdp_adjust_meta(ctx.ctx, delta)
        }
    };
    if rc != 0 {
        return false;
    }
    let (at, end) = if HEAD {
        (ctx.data(), ctx.data_end())
    } else {
        (ctx.metadata(), ctx.data())
    };
    if at + META_LEN > end {
        return false;
    }
    // SAFETY: the `META_LEN` bytes (`size_of::<XdpMeta>()`, asserted in
    // `sluice_common`) lie between `data_meta` and `data` (or, with `HEAD`,
    // between `data` and `data_end`), as just checked; `XdpMeta` has
    // alignment 1, so any address is aligned for it.
    unsafe { (at as *mut XdpMeta).write(meta) };
    true
}
