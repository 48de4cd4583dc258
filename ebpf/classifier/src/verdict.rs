//! The classification policy: the ordered rules that turn a parsed
//! [`Frame`] into a verdict. First match wins:
//!
//! 1. ARP → pass ([`Counter::PassArp`]); other non-IP → pass
//!    ([`Counter::PassNonIp`]).
//! 2. ICMPv6 router/neighbour discovery → pass ([`Counter::PassNeighbor`]),
//!    ahead of rule 3 since ND is mostly multicast.
//! 3. Group MAC destination, IPv4 multicast (224/4), limited broadcast,
//!    link-local (169.254/16), IPv6 multicast (ff00::/8) or link-local
//!    (fe80::/10) destination → pass ([`Counter::PassMulticast`]).
//! 4. One of the gateway's own addresses → pass ([`Counter::PassLocal`]).
//! 5. In a bypass prefix → pass ([`Counter::Bypass`]): kernel routing sends
//!    it out of the WAN.
//! 6. Anything else → tunnel.
//!
//! No packet access here: only the parsed summary and map lookups.
use sluice_common::{Counter, Ipv4Key, Ipv6Key};

use crate::{
    maps,
    parse::{Frame, Kind},
};

/// What to do with a well-formed frame.
pub(crate) enum Verdict {
    /// Hand it to the kernel (`XDP_PASS`), counting this verdict counter.
    Pass(Counter),
    /// Send it to the `AF_XDP` socket of its RX queue.
    Tunnel,
}

/// Applies the rules above.
#[inline(always)]
pub(crate) fn decide(frame: &Frame) -> Verdict {
    match frame.kind {
        Kind::Arp => Verdict::Pass(Counter::PassArp),
        Kind::NonIp => Verdict::Pass(Counter::PassNonIp),
        Kind::Ipv4 => {
            let dst = &frame.dst_v4;
            if frame.l2_multicast || is_special_v4(dst) {
                Verdict::Pass(Counter::PassMulticast)
            } else if maps::is_local_v4(dst) {
                Verdict::Pass(Counter::PassLocal)
            } else if maps::is_bypass_v4(dst) {
                Verdict::Pass(Counter::Bypass)
            } else {
                Verdict::Tunnel
            }
        }
        Kind::Ipv6 => {
            let dst = &frame.dst_v6;
            if frame.neighbor_discovery {
                Verdict::Pass(Counter::PassNeighbor)
            } else if frame.l2_multicast || is_special_v6(dst) {
                Verdict::Pass(Counter::PassMulticast)
            } else if maps::is_local_v6(dst) {
                Verdict::Pass(Counter::PassLocal)
            } else if maps::is_bypass_v6(dst) {
                Verdict::Pass(Counter::Bypass)
            } else {
                Verdict::Tunnel
            }
        }
    }
}

/// Multicast 224.0.0.0/4, limited broadcast 255.255.255.255, link-local
/// 169.254.0.0/16: never routed through the tunnel.
#[inline(always)]
fn is_special_v4(dst: &Ipv4Key) -> bool {
    dst[0] & 0xf0 == 0xe0 || *dst == [255; 4] || (dst[0] == 169 && dst[1] == 254)
}

/// Multicast ff00::/8 and link-local unicast fe80::/10.
#[inline(always)]
fn is_special_v6(dst: &Ipv6Key) -> bool {
    dst[0] == 0xff || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80)
}
