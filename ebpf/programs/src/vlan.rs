//! Untag mode ([`sluice_common::VLAN_MODE_UNTAG`]), for gateways whose
//! kernel has no VLAN devices: the classifier removes the single 802.1Q
//! tag of a frame it passes to the kernel ([`untag`]), after noting the
//! host's VLAN by MAC and by address; the tc egress program
//! ([`vlan_egress`]) tags the kernel's frames to those hosts again (unicast by
//! destination MAC; ARP requests and neighbour solicitations by the
//! address they ask for). Frames the workers send (`AF_XDP`) never pass
//! here: the worker tags them itself.
//!
//! Only one 802.1Q tag is removed: a frame with two tags (`QinQ`) or an
//! 802.1ad outer tag is passed as it came (the kernel needs VLAN devices
//! for it).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::{TcContext, XdpContext},
};
use sluice_common::{Counter, MacKey};

use crate::{
    maps::{self, VLAN_ADDRS, VLAN_HOSTS},
    parse::{ETH_P_8021Q, Frame, Kind},
};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;

/// Whether untag mode applies to `frame`: exactly one 802.1Q tag.
#[inline(always)]
pub(crate) fn wants_untag(frame: &Frame) -> bool {
    frame.vlan_tags == 1 && frame.vlan_8021q
}

/// The IPv4-mapped form of an IPv4 address (the address map's key).
#[inline(always)]
fn mapped(v4: &[u8; 4]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[10] = 0xff;
    k[11] = 0xff;
    k[12..].copy_from_slice(v4);
    k
}

/// Notes the host's VLAN and removes the tag: the two MAC addresses move
/// four bytes up over the tag, and the frame starts four bytes later.
/// False if the frame could not be changed (the caller drops it).
#[inline(always)]
pub(crate) fn untag(ctx: &XdpContext, frame: &Frame) -> bool {
    let data = ctx.data();
    if data + 18 > ctx.data_end() {
        return false;
    }
    let p = data as *mut u8;
    let tci = u32::from(frame.vlan_tci);
    let mut mac: MacKey = [0; 8];
    // SAFETY: bytes 6..12 lie within the 18 just checked.
    unsafe {
        for i in 0..6 {
            mac[i] = *p.add(6 + i);
        }
    }
    // A full LRU map evicts its oldest entry; a failed insert only means
    // the kernel's frames to that host leave untagged until its next one.
    let _ = VLAN_HOSTS.insert(&mac, &tci, 0);
    let addr = match frame.kind {
        Kind::Ipv4 | Kind::Arp if frame.src_v4 != [0; 4] => Some(mapped(&frame.src_v4)),
        Kind::Ipv6 if frame.src_v6 != [0; 16] => Some(frame.src_v6),
        _ => None,
    };
    if let Some(a) = addr {
        let _ = VLAN_ADDRS.insert(&a, &tci, 0);
    }
    // SAFETY: bytes 0..16 lie within the 18 checked; copying from the top
    // down never reads a byte already overwritten (each write lands four
    // bytes above the read).
    unsafe {
        let mut i = 12;
        while i > 0 {
            i -= 1;
            *p.add(i + 4) = *p.add(i);
        }
    }
    // SAFETY: the helper only moves `data`; every later access is
    // bounds-checked again.
    unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, 4) == 0 }
}

/// An untagged ARP or neighbour-discovery frame passed in untag mode: the
/// host is (now) on the untagged LAN, so its VLAN entries go (a host that
/// moved would otherwise keep getting the kernel's frames tagged). Only
/// for these rare frames: hosts announce themselves with them.
#[inline(always)]
pub(crate) fn forget(ctx: &XdpContext, frame: &Frame) {
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        return;
    }
    let p = data as *const u8;
    let mut mac: MacKey = [0; 8];
    // SAFETY: bytes 6..12 lie within the 12 just checked.
    unsafe {
        for i in 0..6 {
            mac[i] = *p.add(6 + i);
        }
    }
    let _ = VLAN_HOSTS.remove(&mac);
    let addr = match frame.kind {
        Kind::Arp if frame.src_v4 != [0; 4] => Some(mapped(&frame.src_v4)),
        Kind::Ipv6 if frame.src_v6 != [0; 16] => Some(frame.src_v6),
        _ => None,
    };
    if let Some(a) = addr {
        let _ = VLAN_ADDRS.remove(&a);
    }
}

/// The VLAN TCI the kernel's frame needs, if it goes to a host that lives
/// on a VLAN.
#[inline(always)]
fn egress_tci(ctx: &TcContext) -> Option<u32> {
    let eth: [u8; 14] = ctx.load(0).ok()?;
    let ether_type = u16::from_be_bytes([eth[12], eth[13]]);
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return None;
    }
    if eth[0] & 1 == 0 {
        let mut mac: MacKey = [0; 8];
        mac[..6].copy_from_slice(&eth[..6]);
        // SAFETY: a hash-map lookup; the value is copied out at once.
        return unsafe { VLAN_HOSTS.get(&mac).copied() };
    }
    // Broadcast and multicast: only address resolution is for one host.
    let target = match ether_type {
        ETH_P_ARP => {
            // Ethernet/IPv4 ARP: the target address at 24.
            let t: [u8; 4] = ctx.load(14 + 24).ok()?;
            mapped(&t)
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(14 + 6).ok()?;
            let kind: u8 = ctx.load(14 + 40).ok()?;
            if next != IPPROTO_ICMPV6 || kind != ND_NEIGHBOR_SOLICIT {
                return None;
            }
            ctx.load::<[u8; 16]>(14 + 40 + 8).ok()?
        }
        _ => return None,
    };
    // SAFETY: as above.
    unsafe { VLAN_ADDRS.get(&target).copied() }
}

/// Untag mode: tags the kernel's frames to LAN hosts on a VLAN
/// ([`sluice_common::VLAN_EGRESS_PROGRAM`], tc egress of the LAN).
#[classifier]
pub fn vlan_egress(ctx: TcContext) -> i32 {
    egress(&ctx)
}

/// The egress program: tags the kernel's frames to hosts on a VLAN.
#[inline(always)]
fn egress(ctx: &TcContext) -> i32 {
    // SAFETY: the context's `__sk_buff` is valid for the program's run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return TC_ACT_OK as i32;
    }
    let Some(tci) = egress_tci(ctx) else {
        return TC_ACT_OK as i32;
    };
    // SAFETY: the helper takes the context's own `__sk_buff`.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_vlan_push(ctx.skb.skb, ETH_P_8021Q.to_be(), tci as u16)
    };
    if rc != 0 {
        // Untagged it would reach the native VLAN instead of its host's.
        return TC_ACT_SHOT as i32;
    }
    maps::count(Counter::EgressTagged);
    TC_ACT_OK as i32
}
