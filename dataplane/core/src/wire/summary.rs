//! The XDP classifier's header walk, stated again in user space: what the
//! classifier makes of a frame (its kind, addresses, transport protocol and
//! ports, fragment, VLAN tags), or which malformation it drops it for.
//!
//! The differential fuzz target (`dataplane/fuzz`, `classifier_diff`) runs
//! every input through the real classifier in the kernel (its parse probe,
//! `BPF_PROG_TEST_RUN`) and through [`summary`], and requires the same
//! answer: two independent readings of the same rules (`ebpf/classifier/
//! src/parse.rs`), one of them verified by the kernel's verifier, the
//! other by the Rust compiler's bounds checks.
//!
//! The rules, in order (first failure wins):
//! - Ethernet: 14 bytes, else truncated. Up to
//!   [`sluice_common::MAX_VLAN_TAGS`] tags (802.1Q or 802.1ad) are walked,
//!   each of 4 bytes (cut: truncated); a third tag drops the frame
//!   (`drop_vlan_depth`).
//! - ARP passes whatever it holds; an Ethernet/IPv4 message's sender
//!   address is noted. Other non-IP passes.
//! - IPv4: 20 bytes (truncated), version 4, IHL at least 5 and total length
//!   at least the header (`drop_bad_ipv4`); options cut (truncated); total
//!   length past the frame (`drop_bad_ipv4`). Ports only for TCP, UDP and
//!   SCTP when the fragment offset is 0 and 4 bytes lie within the frame
//!   and the packet.
//! - IPv6: 40 bytes (truncated), version 6 and payload within the frame
//!   (`drop_bad_ipv6`); up to [`sluice_common::MAX_IPV6_EXT_HEADERS`]
//!   extension headers within the payload (cut: truncated; hop-by-hop not
//!   first, or one too many: `drop_ext_headers`); a fragment header with an
//!   offset ends the walk (a later fragment); `ICMPv6` needs its 4 first
//!   bytes (truncated) and is neighbour discovery for types 133 to 137.
use sluice_common::{
    Counter, FRAG_FIRST, FRAG_LATER, FRAG_NONE, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, ParseSummary,
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const NONE: u8 = 59;
const DSTOPTS: u8 = 60;
const ICMPV6: u8 = 58;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn is_vlan(t: u16) -> bool {
    t == ETH_P_8021Q || t == ETH_P_8021AD
}

fn is_ext(p: u8) -> bool {
    matches!(p, HOPOPTS | ROUTING | FRAGMENT | DSTOPTS | AH)
}

fn has_ports(p: u8) -> bool {
    p == 6 || p == 17 || p == 132
}

/// What the classifier's parse makes of `frame`, as the parse probe
/// reports it (`runs` 0; `error` the drop counter's index plus one).
pub fn summary(frame: &[u8]) -> ParseSummary {
    match walk(frame) {
        Ok(s) => s,
        Err(c) => ParseSummary {
            error: c.index() + 1,
            ..ParseSummary::default()
        },
    }
}

fn walk(b: &[u8]) -> Result<ParseSummary, Counter> {
    let mut s = ParseSummary::default();
    if b.len() < 14 {
        return Err(Counter::DropTruncated);
    }
    s.l2_multicast = b[0] & 1;
    let mut ether_type = be16(b, 12).ok_or(Counter::DropTruncated)?;
    let mut off = 14;
    for i in 0..MAX_VLAN_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        if off + 4 > b.len() {
            return Err(Counter::DropTruncated);
        }
        if i == 0 {
            s.vlan_tci = be16(b, off).unwrap_or(0);
        }
        ether_type = be16(b, off + 2).unwrap_or(0);
        off += 4;
        s.vlan_tags += 1;
    }
    if is_vlan(ether_type) {
        return Err(Counter::DropVlanDepth);
    }
    match ether_type {
        ETH_P_ARP => {
            s.kind = 1;
            // htype, ptype, hlen, plen, op, sha: the sender's address at 14.
            if off + 18 <= b.len()
                && be16(b, off + 2) == Some(ETH_P_IPV4)
                && b[off + 4] == 6
                && b[off + 5] == 4
            {
                s.src[..4].copy_from_slice(&b[off + 14..off + 18]);
            }
            Ok(s)
        }
        ETH_P_IPV4 => ipv4(b, off, s),
        ETH_P_IPV6 => ipv6(b, off, s),
        _ => {
            s.kind = 2;
            Ok(s)
        }
    }
}

fn ports(b: &[u8], proto: u8, off: usize, packet_end: usize) -> (u16, u16) {
    if !has_ports(proto) || off + 4 > b.len() || off + 4 > packet_end {
        return (0, 0);
    }
    (be16(b, off).unwrap_or(0), be16(b, off + 2).unwrap_or(0))
}

fn ipv4(b: &[u8], off: usize, mut s: ParseSummary) -> Result<ParseSummary, Counter> {
    if off + 20 > b.len() {
        return Err(Counter::DropTruncated);
    }
    let h = &b[off..off + 20];
    if h[0] >> 4 != 4 {
        return Err(Counter::DropBadIpv4);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if header_len < 20 || total < header_len {
        return Err(Counter::DropBadIpv4);
    }
    if off + header_len > b.len() {
        return Err(Counter::DropTruncated);
    }
    if off + total > b.len() {
        return Err(Counter::DropBadIpv4);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let id = u16::from_be_bytes([h[4], h[5]]);
    s.kind = 4;
    s.proto = h[9];
    s.src[..4].copy_from_slice(&h[12..16]);
    s.dst[..4].copy_from_slice(&h[16..20]);
    if frag & 0x1fff != 0 {
        s.frag = FRAG_LATER;
    } else {
        (s.sport, s.dport) = ports(b, s.proto, off + header_len, off + total);
        s.frag = if frag & 0x2000 != 0 {
            FRAG_FIRST
        } else {
            FRAG_NONE
        };
    }
    if s.frag != FRAG_NONE {
        s.frag_id = u32::from(id);
    }
    Ok(s)
}

fn ipv6(b: &[u8], off: usize, mut s: ParseSummary) -> Result<ParseSummary, Counter> {
    if off + 40 > b.len() {
        return Err(Counter::DropTruncated);
    }
    let h = &b[off..off + 40];
    if h[0] >> 4 != 6 {
        return Err(Counter::DropBadIpv6);
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let payload = off + 40;
    if payload + payload_len > b.len() {
        return Err(Counter::DropBadIpv6);
    }
    let packet_end = payload + payload_len;
    s.kind = 6;
    s.src.copy_from_slice(&h[8..24]);
    s.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut at = payload;
    for i in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext(next) {
            break;
        }
        if next == HOPOPTS && i != 0 {
            return Err(Counter::DropExtHeaders);
        }
        let len = if next == FRAGMENT {
            if at + 8 > b.len() || at + 8 > packet_end {
                return Err(Counter::DropTruncated);
            }
            let offset_flags = u16::from_be_bytes([b[at + 2], b[at + 3]]);
            let id = u32::from_be_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]);
            if offset_flags >> 3 != 0 {
                s.proto = b[at];
                s.frag = FRAG_LATER;
                s.frag_id = id;
                return Ok(s);
            }
            if offset_flags & 1 != 0 {
                s.frag = FRAG_FIRST;
                s.frag_id = id;
            }
            next = b[at];
            8
        } else {
            if at + 2 > b.len() {
                return Err(Counter::DropTruncated);
            }
            let n = usize::from(b[at + 1]);
            let len = if next == AH { (n + 2) * 4 } else { (n + 1) * 8 };
            if at + len > packet_end {
                return Err(Counter::DropTruncated);
            }
            next = b[at];
            len
        };
        at += len;
    }
    if is_ext(next) {
        return Err(Counter::DropExtHeaders);
    }
    if next == NONE {
        return Ok(s);
    }
    s.proto = next;
    if next == ICMPV6 {
        if at + 4 > b.len() || at + 4 > packet_end {
            return Err(Counter::DropTruncated);
        }
        s.neighbor_discovery = u8::from((133..=137).contains(&b[at]));
    } else {
        (s.sport, s.dport) = ports(b, next, at, packet_end);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tagged (VLAN 10) IPv4 UDP first fragment 192.0.2.10:50000 ->
    /// 203.0.113.10:9000, id 0x1234.
    const TAGGED_FIRST_FRAGMENT: [u8; 50] = [
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x10, // MACs
        0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, // 802.1Q VID 10, IPv4
        0x45, 0, 0, 32, 0x12, 0x34, 0x20, 0x00, 64, 17, 0, 0, // MF set, offset 0
        192, 0, 2, 10, 203, 0, 113, 10, //
        0xc3, 0x50, 0x23, 0x28, 0, 12, 0, 0, 1, 2, 3, 4,
    ];

    #[test]
    fn reads_a_tagged_first_fragment() {
        let s = summary(&TAGGED_FIRST_FRAGMENT);
        assert_eq!(s.error, 0);
        assert_eq!((s.kind, s.proto, s.sport, s.dport), (4, 17, 50000, 9000));
        assert_eq!((s.frag, s.frag_id), (FRAG_FIRST, 0x1234));
        assert_eq!((s.vlan_tags, s.vlan_tci), (1, 10));
        assert_eq!(&s.dst[..4], &[203, 0, 113, 10]);
        // A later fragment: no ports.
        let mut later = TAGGED_FIRST_FRAGMENT;
        later[24..26].copy_from_slice(&[0x00, 0x10]);
        let s = summary(&later);
        assert_eq!((s.frag, s.sport, s.dport), (FRAG_LATER, 0, 0));
    }

    #[test]
    fn names_the_drop_reason() {
        let reason = |b: &[u8]| summary(b).error.checked_sub(1);
        let t = TAGGED_FIRST_FRAGMENT;
        assert_eq!(reason(&t[..16]), Some(Counter::DropTruncated.index()));
        assert_eq!(reason(&t[..30]), Some(Counter::DropTruncated.index()));
        assert_eq!(reason(&t[..45]), Some(Counter::DropBadIpv4.index()));
        let mut v = t;
        v[18] = 0x65;
        assert_eq!(reason(&v), Some(Counter::DropBadIpv4.index()));
        let mut deep = [0u8; 40];
        for at in [12, 16, 20] {
            deep[at..at + 2].copy_from_slice(&[0x81, 0x00]);
        }
        assert_eq!(reason(&deep), Some(Counter::DropVlanDepth.index()));
        // IPv6 with a hop-by-hop header second.
        let mut v6 = vec![0u8; 14 + 40 + 16];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
        v6[18..20].copy_from_slice(&16u16.to_be_bytes());
        v6[20] = DSTOPTS;
        v6[54] = HOPOPTS;
        assert_eq!(reason(&v6), Some(Counter::DropExtHeaders.index()));
    }
}
