//! Lab-only programs: a LAN host that lives on a VLAN, for the namespace
//! lab on a kernel without 802.1Q devices. Attached in the lab client's
//! namespace only (never by sluice): [`push`] on egress tags every frame
//! with the VLAN in [`sluice_common::map_names::LAB_VLAN`]; [`pop`] on
//! ingress untags frames of that VLAN and drops every other frame, so
//! the host hears only what reaches it tagged.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{maps::LAB_VLAN, parse::ETH_P_8021Q};

/// Lab only: tags a lab host's frames ([`sluice_common::LAB_VLAN_PUSH_PROGRAM`]).
#[classifier]
pub fn lab_vlan_push(ctx: TcContext) -> i32 {
    push(&ctx)
}

/// Lab only: untags a lab host's VLAN, drops the rest
/// ([`sluice_common::LAB_VLAN_POP_PROGRAM`]).
#[classifier]
pub fn lab_vlan_pop(ctx: TcContext) -> i32 {
    pop(&ctx)
}

fn vid() -> u32 {
    LAB_VLAN.get(0).copied().unwrap_or(0) & 0x0fff
}

/// Egress: tag.
fn push(ctx: &TcContext) -> i32 {
    let vid = vid();
    if vid == 0 {
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: the helper takes the context's own `__sk_buff`.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_vlan_push(ctx.skb.skb, ETH_P_8021Q.to_be(), vid as u16)
    };
    if rc == 0 {
        TC_ACT_OK as i32
    } else {
        TC_ACT_SHOT as i32
    }
}

/// Ingress: untag this VLAN's frames, drop the rest.
fn pop(ctx: &TcContext) -> i32 {
    let vid = vid();
    // SAFETY: the context's `__sk_buff` is valid for the program's run
    // (the kernel has moved a received tag into it by now).
    let (present, tci) = unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).vlan_tci) };
    if present == 0 || tci & 0x0fff != vid || vid == 0 {
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: as in `push`.
    if unsafe { aya_ebpf::helpers::bpf_skb_vlan_pop(ctx.skb.skb) } != 0 {
        return TC_ACT_SHOT as i32;
    }
    TC_ACT_OK as i32
}
