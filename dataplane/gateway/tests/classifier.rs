//! Verdict fixtures for the XDP classifier, run in the kernel through
//! `BPF_PROG_TEST_RUN` (in the style of katran's `BpfTester`): each fixture
//! is a frame, the XDP action the classifier must return and the counters
//! that frame must move (every other counter must stay put).
//!
//! Loading the classifier runs the verifier, so these tests also prove the
//! program loads on this kernel. They need root: without it they skip
//! loudly, or fail under `CI=true`.
//!
//! Addresses are documentation ranges only (see `lab-network.md`).
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
};

use sluice_common::{BypassEntry, Counter, MAX_IPV6_EXT_HEADERS, MAX_QUEUES};
use sluice_core::net::Prefix;
use sluice_gateway::ebpf::{
    AttachMode, AttachedMode, EbpfError, MetaPlacement, Programs, XDP_DROP, XDP_PASS,
    xdp_action_name,
};

// ---------------------------------------------------------------------------
// The lab setup every fixture runs against.

/// Bypassed prefixes.
const BYPASS: &[&str] = &["203.0.113.0/24", "2001:db8:b::/48"];
/// The gateway's own addresses.
const LOCAL: &[&str] = &["192.0.2.1", "2001:db8:1::1"];

/// A LAN host (source of most frames).
const HOST_V4: [u8; 4] = [192, 0, 2, 10];
const HOST_V6: [u8; 16] = v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10]);
/// The gateway.
const GW_V4: [u8; 4] = [192, 0, 2, 1];
const GW_V6: [u8; 16] = v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 1]);
/// Destinations reached through the tunnel.
const TUNNEL_V4: [u8; 4] = [198, 51, 100, 7];
const TUNNEL_V6: [u8; 16] = v6([0x2001, 0xdb8, 2, 0, 0, 0, 0, 7]);
/// Destinations in a bypass prefix.
const BYPASS_V4: [u8; 4] = [203, 0, 113, 9];
const BYPASS_V6: [u8; 16] = v6([0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 9]);

const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const BROADCAST_MAC: [u8; 6] = [0xff; 6];

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_LLDP: u16 = 0x88cc;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const NO_NEXT_HEADER: u8 = 59;

const fn v6(s: [u16; 8]) -> [u8; 16] {
    let mut out = [0; 16];
    let mut i = 0;
    while i < 8 {
        out[2 * i] = (s[i] >> 8) as u8;
        out[2 * i + 1] = s[i] as u8;
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Frame builders. Well-formed by default; the malformed fixtures cut or
// patch their output.

/// Ethernet II to `dst` with one VLAN tag per TPID in `tags`.
fn eth(dst: [u8; 6], tags: &[u16], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&HOST_MAC);
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // PCP 0, VID 100+
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet; `frag_offset` in 8-byte units, `more` the MF flag.
fn ipv4_frag(dst: [u8; 4], proto: u8, frag_offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len() as u16;
    let flags = frag_offset | if more { 0x2000 } else { 0 };
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&HOST_V4);
    h.extend_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv4(dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_frag(dst, proto, 0, false, payload)
}

/// A bare IPv6 packet: `next` is the first header after the fixed one,
/// `payload` everything after it (extension headers included).
fn ipv6(dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&HOST_V6);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A minimal TCP SYN header (checksum left zero: the classifier does not
/// look at it).
fn tcp() -> Vec<u8> {
    let mut h = vec![0xc3, 0x50, 0x01, 0xbb]; // 50000 -> 443
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    h.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0xc3, 0x50, 0x00, 0x35];
    h.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// An IPv6 ICMP message of type `kind` with an 8-byte body (enough for the fixed
/// part of NS and NA; the classifier reads only the type).
fn icmpv6(kind: u8) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&TUNNEL_V6);
    m
}

/// IPv6 extension headers for [`ipv6_chain`].
#[derive(Clone, Copy)]
enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Offset in 8-byte units, M flag.
    Fragment(u16, bool),
    /// 24 bytes: payload length field 4, i.e. (4 + 2) * 4.
    Auth,
}

impl Ext {
    fn proto(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::Fragment(..) => 44,
            Ext::Auth => 51,
            Ext::DestOpts => 60,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            // 8 bytes: next, len 0, PadN option of 4 bytes.
            Ext::HopByHop | Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            // Type 0 routing with no segments left.
            Ext::Routing => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Ext::Fragment(offset, more) => {
                let field = (offset << 3) | u16::from(more);
                let [a, b] = field.to_be_bytes();
                vec![next, 0, a, b, 0xde, 0xad, 0xbe, 0xef]
            }
            Ext::Auth => {
                let mut h = vec![next, 4, 0, 0];
                h.extend_from_slice(&[0, 0, 0x10, 0x01]); // SPI
                h.extend_from_slice(&[0, 0, 0, 1]); // sequence
                h.extend_from_slice(&[0xaa; 12]); // ICV
                h
            }
        }
    }
}

/// IPv6 to `dst` with `exts` in order, then `proto` with `l4`.
fn ipv6_chain(dst: [u8; 16], exts: &[Ext], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut payload = l4.to_vec();
    let mut next = proto;
    for ext in exts.iter().rev() {
        let mut h = ext.bytes(next);
        h.extend_from_slice(&payload);
        payload = h;
        next = ext.proto();
    }
    ipv6(dst, next, &payload)
}

fn eth_v4(dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(GW_MAC, &[], ETH_P_IPV4, &ipv4(dst, proto, l4))
}

fn eth_v6(dst: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(GW_MAC, &[], ETH_P_IPV6, &ipv6(dst, proto, l4))
}

fn eth_v6_chain(dst: [u8; 16], exts: &[Ext], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(GW_MAC, &[], ETH_P_IPV6, &ipv6_chain(dst, exts, proto, l4))
}

/// An ARP who-has for the gateway, broadcast.
fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&HOST_MAC);
    a.extend_from_slice(&HOST_V4);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&GW_V4);
    a
}

/// Offset of the IPv4/IPv6 header in an untagged frame.
const L3: usize = 14;

fn patched(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

fn cut(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

fn padded(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.resize(len, 0);
    frame
}

// ---------------------------------------------------------------------------
// The table.

struct Fixture {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    /// Counters that must go up by one; all others must not move.
    counters: &'static [Counter],
}

const TUNNEL: &[Counter] = &[Counter::Tunnel, Counter::DropNoSocket];

fn fx(name: &'static str, frame: Vec<u8>, action: u32, counters: &'static [Counter]) -> Fixture {
    Fixture {
        name,
        frame,
        action,
        counters,
    }
}

/// Tunnelled: with no `AF_XDP` socket registered the frame is dropped
/// (fail-closed) and counted as both `Tunnel` and `DropNoSocket`.
fn tunnel(name: &'static str, frame: Vec<u8>) -> Fixture {
    fx(name, frame, XDP_DROP, TUNNEL)
}

fn pass(name: &'static str, frame: Vec<u8>, counters: &'static [Counter]) -> Fixture {
    fx(name, frame, XDP_PASS, counters)
}

fn dropped(name: &'static str, frame: Vec<u8>, counters: &'static [Counter]) -> Fixture {
    fx(name, frame, XDP_DROP, counters)
}

#[expect(clippy::too_many_lines, reason = "a table")]
fn fixtures() -> Vec<Fixture> {
    use Counter::*;
    use Ext::*;
    let t = tcp();
    let u = udp(b"sluice");
    // Eight extension headers (the limit) and one more.
    let max_chain: Vec<Ext> = std::iter::once(HopByHop)
        .chain(std::iter::repeat_n(DestOpts, MAX_IPV6_EXT_HEADERS - 1))
        .collect();
    let too_long: Vec<Ext> = std::iter::once(HopByHop)
        .chain(std::iter::repeat_n(DestOpts, MAX_IPV6_EXT_HEADERS))
        .collect();
    let v4_tcp = eth_v4(TUNNEL_V4, TCP, &t);
    let v6_tcp = eth_v6(TUNNEL_V6, TCP, &t);
    vec![
        // --- IPv4 verdicts
        tunnel("ipv4_tcp_tunnel", v4_tcp.clone()),
        tunnel("ipv4_tcp_tunnel_padded_to_60", padded(v4_tcp.clone(), 60)),
        pass("ipv4_udp_bypass", eth_v4(BYPASS_V4, UDP, &u), &[Bypass]),
        tunnel(
            "ipv4_just_outside_bypass_prefix",
            eth_v4([203, 0, 114, 9], UDP, &u),
        ),
        pass("ipv4_local", eth_v4(GW_V4, TCP, &t), &[PassLocal]),
        // --- IPv6 verdicts
        tunnel("ipv6_tcp_tunnel", v6_tcp.clone()),
        pass("ipv6_udp_bypass", eth_v6(BYPASS_V6, UDP, &u), &[Bypass]),
        pass("ipv6_local", eth_v6(GW_V6, TCP, &t), &[PassLocal]),
        tunnel(
            "ipv6_just_outside_bypass_prefix",
            eth_v6(v6([0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 9]), UDP, &u),
        ),
        tunnel(
            "ipv6_icmp_echo_to_tunnel",
            eth_v6(TUNNEL_V6, ICMPV6, &icmpv6(128)),
        ),
        tunnel(
            "ipv6_no_next_header",
            eth_v6(TUNNEL_V6, NO_NEXT_HEADER, &[]),
        ),
        // --- non-IP
        pass(
            "arp_request_broadcast",
            eth(BROADCAST_MAC, &[], ETH_P_ARP, &arp_request()),
            &[PassArp],
        ),
        pass(
            "arp_in_vlan",
            eth(BROADCAST_MAC, &[ETH_P_8021Q], ETH_P_ARP, &arp_request()),
            &[PassArp],
        ),
        pass(
            "lldp",
            eth(
                [0x01, 0x80, 0xc2, 0, 0, 0x0e],
                &[],
                ETH_P_LLDP,
                &[0x02, 0x07, 0x04, 2, 0, 0, 0, 0, 0x10],
            ),
            &[PassNonIp],
        ),
        // --- multicast, broadcast, link-local
        pass(
            "l2_broadcast_ipv4",
            eth(BROADCAST_MAC, &[], ETH_P_IPV4, &ipv4(TUNNEL_V4, UDP, &u)),
            &[PassMulticast],
        ),
        pass(
            "ipv4_multicast_mdns",
            eth(
                [0x01, 0, 0x5e, 0, 0, 0xfb],
                &[],
                ETH_P_IPV4,
                &ipv4([224, 0, 0, 251], UDP, &u),
            ),
            &[PassMulticast],
        ),
        pass(
            "ipv4_multicast_unicast_mac",
            eth_v4([239, 1, 2, 3], UDP, &u),
            &[PassMulticast],
        ),
        pass(
            "ipv4_limited_broadcast",
            eth_v4([255; 4], UDP, &u),
            &[PassMulticast],
        ),
        pass(
            "ipv4_link_local",
            eth_v4([169, 254, 1, 1], UDP, &u),
            &[PassMulticast],
        ),
        pass(
            "ipv6_multicast_all_nodes",
            eth(
                [0x33, 0x33, 0, 0, 0, 1],
                &[],
                ETH_P_IPV6,
                &ipv6(v6([0xff02, 0, 0, 0, 0, 0, 0, 1]), UDP, &u),
            ),
            &[PassMulticast],
        ),
        pass(
            "ipv6_link_local",
            eth_v6(v6([0xfe80, 0, 0, 0, 0, 0, 0, 2]), TCP, &t),
            &[PassMulticast],
        ),
        pass(
            "ipv6_link_local_upper_end",
            eth_v6(v6([0xfebf, 0, 0, 0, 0, 0, 0, 2]), TCP, &t),
            &[PassMulticast],
        ),
        tunnel(
            "ipv6_fec0_is_not_link_local",
            eth_v6(v6([0xfec0, 0, 0, 0, 0, 0, 0, 2]), TCP, &t),
        ),
        pass(
            "ipv6_mld_report_132_is_multicast_not_nd",
            eth_v6(v6([0xff02, 0, 0, 0, 0, 0, 0, 2]), ICMPV6, &icmpv6(132)),
            &[PassMulticast],
        ),
        pass(
            "ipv6_icmp_138_is_multicast_not_nd",
            eth_v6(v6([0xff02, 0, 0, 0, 0, 0, 0, 2]), ICMPV6, &icmpv6(138)),
            &[PassMulticast],
        ),
        // --- neighbour discovery
        pass(
            "nd_neighbor_solicitation_multicast",
            eth(
                [0x33, 0x33, 0xff, 0, 0, 0x07],
                &[],
                ETH_P_IPV6,
                &ipv6(v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 7]), ICMPV6, &icmpv6(135)),
            ),
            &[PassNeighbor],
        ),
        // Neighbour unreachability detection of the gateway: unicast to
        // its own address, or to its link-local one.
        pass(
            "nd_neighbor_solicitation_unicast_to_the_gateway",
            eth_v6(GW_V6, ICMPV6, &icmpv6(135)),
            &[PassNeighbor],
        ),
        pass(
            "nd_neighbor_advertisement_to_link_local",
            eth_v6(v6([0xfe80, 0, 0, 0, 0, 0, 0, 1]), ICMPV6, &icmpv6(136)),
            &[PassNeighbor],
        ),
        // Review finding (issue 14): neighbour discovery addressed to a
        // remote unicast destination is no neighbour discovery the
        // kernel needs; passed, the kernel forwards it out of the WAN
        // directly (any payload, to any address). It takes the policy.
        tunnel(
            "nd_neighbor_solicitation_unicast_to_tunnel_dest",
            eth_v6(TUNNEL_V6, ICMPV6, &icmpv6(135)),
        ),
        pass(
            "nd_neighbor_solicitation_unicast_to_bypass_dest",
            eth_v6(BYPASS_V6, ICMPV6, &icmpv6(135)),
            &[Bypass],
        ),
        tunnel(
            "nd_first_fragment_to_tunnel_dest",
            eth_v6_chain(TUNNEL_V6, &[Fragment(0, true)], ICMPV6, &icmpv6(135)),
        ),
        pass(
            "nd_router_solicitation_133",
            eth_v6(v6([0xff02, 0, 0, 0, 0, 0, 0, 2]), ICMPV6, &icmpv6(133)),
            &[PassNeighbor],
        ),
        tunnel(
            "nd_redirect_137_to_tunnel_dest",
            eth_v6(TUNNEL_V6, ICMPV6, &icmpv6(137)),
        ),
        pass(
            "nd_redirect_137_to_the_gateway",
            eth_v6(GW_V6, ICMPV6, &icmpv6(137)),
            &[PassNeighbor],
        ),
        tunnel(
            "nd_behind_hop_by_hop_to_tunnel_dest",
            eth_v6_chain(TUNNEL_V6, &[HopByHop], ICMPV6, &icmpv6(136)),
        ),
        pass(
            "nd_behind_hop_by_hop",
            eth_v6_chain(
                v6([0xff02, 0, 0, 0, 0, 0, 0, 1]),
                &[HopByHop],
                ICMPV6,
                &icmpv6(136),
            ),
            &[PassNeighbor],
        ),
        // --- extension header chains
        tunnel(
            "ipv6_hbh_routing_destopts_tcp_tunnel",
            eth_v6_chain(TUNNEL_V6, &[HopByHop, Routing, DestOpts], TCP, &t),
        ),
        pass(
            "ipv6_hbh_routing_destopts_tcp_bypass",
            eth_v6_chain(BYPASS_V6, &[HopByHop, Routing, DestOpts], TCP, &t),
            &[Bypass],
        ),
        tunnel(
            "ipv6_auth_header_tcp",
            eth_v6_chain(TUNNEL_V6, &[Auth], TCP, &t),
        ),
        pass(
            "nd_behind_auth_header",
            eth_v6_chain(GW_V6, &[Auth], ICMPV6, &icmpv6(135)),
            &[PassNeighbor],
        ),
        tunnel(
            "nd_behind_auth_header_to_tunnel_dest",
            eth_v6_chain(TUNNEL_V6, &[Auth], ICMPV6, &icmpv6(135)),
        ),
        tunnel(
            "ipv6_max_ext_headers",
            eth_v6_chain(TUNNEL_V6, &max_chain, TCP, &t),
        ),
        dropped(
            "ipv6_too_many_ext_headers",
            eth_v6_chain(TUNNEL_V6, &too_long, TCP, &t),
            &[DropExtHeaders],
        ),
        dropped(
            "ipv6_hop_by_hop_not_first",
            eth_v6_chain(TUNNEL_V6, &[DestOpts, HopByHop], TCP, &t),
            &[DropExtHeaders],
        ),
        // --- fragments: classified by destination
        tunnel(
            "ipv4_first_fragment_tunnel",
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV4,
                &ipv4_frag(TUNNEL_V4, UDP, 0, true, &u),
            ),
        ),
        pass(
            "ipv4_first_fragment_bypass",
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV4,
                &ipv4_frag(BYPASS_V4, UDP, 0, true, &u),
            ),
            &[Bypass],
        ),
        tunnel(
            "ipv4_non_first_fragment_tunnel",
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV4,
                &ipv4_frag(TUNNEL_V4, UDP, 185, false, &u),
            ),
        ),
        pass(
            "ipv4_non_first_fragment_bypass",
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV4,
                &ipv4_frag(BYPASS_V4, UDP, 185, true, &u),
            ),
            &[Bypass],
        ),
        tunnel(
            "ipv6_first_fragment_tunnel",
            eth_v6_chain(TUNNEL_V6, &[Fragment(0, true)], TCP, &t),
        ),
        pass(
            "ipv6_first_fragment_bypass",
            eth_v6_chain(BYPASS_V6, &[Fragment(0, true)], UDP, &u),
            &[Bypass],
        ),
        // The payload of a non-first fragment starts with 135 but is not an
        // ICMPv6 header: it must not be taken for neighbour discovery.
        tunnel(
            "ipv6_non_first_fragment_looks_like_nd",
            eth_v6_chain(TUNNEL_V6, &[Fragment(100, false)], ICMPV6, &icmpv6(135)),
        ),
        pass(
            "ipv6_non_first_fragment_bypass",
            eth_v6_chain(BYPASS_V6, &[HopByHop, Fragment(100, true)], TCP, &t),
            &[Bypass],
        ),
        // --- VLAN
        tunnel(
            "vlan_ipv4_tunnel",
            eth(
                GW_MAC,
                &[ETH_P_8021Q],
                ETH_P_IPV4,
                &ipv4(TUNNEL_V4, TCP, &t),
            ),
        ),
        pass(
            "vlan_ipv4_bypass",
            eth(
                GW_MAC,
                &[ETH_P_8021Q],
                ETH_P_IPV4,
                &ipv4(BYPASS_V4, TCP, &t),
            ),
            &[Bypass],
        ),
        tunnel(
            "qinq_ipv6_tunnel",
            eth(
                GW_MAC,
                &[ETH_P_8021AD, ETH_P_8021Q],
                ETH_P_IPV6,
                &ipv6(TUNNEL_V6, TCP, &t),
            ),
        ),
        pass(
            "qinq_ipv4_bypass",
            eth(
                GW_MAC,
                &[ETH_P_8021AD, ETH_P_8021Q],
                ETH_P_IPV4,
                &ipv4(BYPASS_V4, UDP, &u),
            ),
            &[Bypass],
        ),
        pass(
            "qinq_ipv6_local",
            eth(
                GW_MAC,
                &[ETH_P_8021Q, ETH_P_8021Q],
                ETH_P_IPV6,
                &ipv6(GW_V6, TCP, &t),
            ),
            &[PassLocal],
        ),
        dropped(
            "three_vlan_tags",
            eth(
                GW_MAC,
                &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
                ETH_P_IPV4,
                &ipv4(TUNNEL_V4, TCP, &t),
            ),
            &[DropVlanDepth],
        ),
        // --- truncated at every layer
        // (Frames under 14 bytes: see `test_run_refuses_runts`.)
        dropped(
            "ethernet_header_only_ipv4",
            cut(v4_tcp.clone(), 14),
            &[DropTruncated],
        ),
        dropped(
            "ethernet_header_only_ipv6",
            cut(v6_tcp.clone(), 14),
            &[DropTruncated],
        ),
        dropped(
            "ethernet_header_only_vlan",
            cut(
                eth(
                    GW_MAC,
                    &[ETH_P_8021Q],
                    ETH_P_IPV4,
                    &ipv4(TUNNEL_V4, TCP, &t),
                ),
                14,
            ),
            &[DropTruncated],
        ),
        dropped(
            "vlan_tag_cut",
            cut(
                eth(
                    GW_MAC,
                    &[ETH_P_8021Q],
                    ETH_P_IPV4,
                    &ipv4(TUNNEL_V4, TCP, &t),
                ),
                16,
            ),
            &[DropTruncated],
        ),
        dropped(
            "second_vlan_tag_cut",
            cut(
                eth(
                    GW_MAC,
                    &[ETH_P_8021AD, ETH_P_8021Q],
                    ETH_P_IPV4,
                    &ipv4(TUNNEL_V4, TCP, &t),
                ),
                20,
            ),
            &[DropTruncated],
        ),
        dropped(
            "ipv4_header_cut",
            cut(v4_tcp.clone(), L3 + 19),
            &[DropTruncated],
        ),
        dropped(
            "ipv4_options_cut",
            // IHL 6 announces 24 bytes of header; the frame ends after 20.
            cut(patched(v4_tcp.clone(), L3, &[0x46]), L3 + 20),
            &[DropTruncated],
        ),
        dropped(
            "ipv4_options_cut_with_the_largest_total_length",
            // As above, with a total length of 65,535: still truncated,
            // not a bad header (the verifier's bound on the total length
            // comes after the truncation check; found by classifier_diff).
            cut(
                patched(patched(v4_tcp.clone(), L3, &[0x46]), L3 + 2, &[0xff, 0xff]),
                L3 + 20,
            ),
            &[DropTruncated],
        ),
        dropped(
            "ipv4_total_length_over_the_bound",
            // A whole header claiming 65,522 bytes (over 65,535 less the
            // Ethernet header): a bad header, as any length beyond the
            // frame is.
            patched(v4_tcp.clone(), L3 + 2, &[0xff, 0xf2]),
            &[DropBadIpv4],
        ),
        dropped(
            "ipv6_header_cut",
            cut(v6_tcp.clone(), L3 + 39),
            &[DropTruncated],
        ),
        dropped(
            "ipv6_ext_header_cut",
            // Hop-by-hop of 8 bytes, but the packet holds only 4.
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV6,
                &ipv6(TUNNEL_V6, 0, &[TCP, 0, 1, 2]),
            ),
            &[DropTruncated],
        ),
        dropped(
            "ipv6_ext_header_cut_in_first_bytes",
            eth(GW_MAC, &[], ETH_P_IPV6, &ipv6(TUNNEL_V6, 43, &[TCP])),
            &[DropTruncated],
        ),
        dropped(
            "ipv6_ext_header_beyond_payload_into_padding",
            // The routing header is whole in the frame only thanks to the
            // Ethernet padding: the IPv6 payload length says 4 bytes.
            padded(
                eth(
                    GW_MAC,
                    &[],
                    ETH_P_IPV6,
                    &ipv6(TUNNEL_V6, 43, &[TCP, 0, 0, 0]),
                ),
                L3 + 40 + 16,
            ),
            &[DropTruncated],
        ),
        dropped(
            "ipv6_fragment_header_cut",
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV6,
                &ipv6(TUNNEL_V6, 44, &[TCP, 0, 0, 0]),
            ),
            &[DropTruncated],
        ),
        dropped(
            "ipv6_auth_header_cut",
            // AH announces (4 + 2) * 4 = 24 bytes; the packet holds 8.
            eth(
                GW_MAC,
                &[],
                ETH_P_IPV6,
                &ipv6(TUNNEL_V6, 51, &[TCP, 4, 0, 0, 0, 0, 0x10, 0x01]),
            ),
            &[DropTruncated],
        ),
        dropped(
            "ipv6_frame_cut_inside_auth_header",
            // A capture cut short: the payload length no longer fits.
            cut(
                eth_v6_chain(TUNNEL_V6, &[Auth], NO_NEXT_HEADER, &[]),
                L3 + 40 + 20,
            ),
            &[DropBadIpv6],
        ),
        dropped(
            "icmpv6_header_cut",
            eth(GW_MAC, &[], ETH_P_IPV6, &ipv6(TUNNEL_V6, ICMPV6, &[135, 0])),
            &[DropTruncated],
        ),
        // --- malformed IP headers
        dropped(
            "ipv4_ihl_4",
            patched(v4_tcp.clone(), L3, &[0x44]),
            &[DropBadIpv4],
        ),
        dropped(
            "ipv4_version_6_in_ipv4_ethertype",
            patched(v4_tcp.clone(), L3, &[0x65]),
            &[DropBadIpv4],
        ),
        dropped(
            "ipv4_total_length_beyond_frame",
            patched(v4_tcp.clone(), L3 + 2, &1500u16.to_be_bytes()),
            &[DropBadIpv4],
        ),
        dropped(
            "ipv4_total_length_below_header",
            patched(v4_tcp.clone(), L3 + 2, &16u16.to_be_bytes()),
            &[DropBadIpv4],
        ),
        dropped(
            "ipv6_version_4_in_ipv6_ethertype",
            patched(v6_tcp.clone(), L3, &[0x40]),
            &[DropBadIpv6],
        ),
        dropped(
            "ipv6_payload_length_beyond_frame",
            patched(v6_tcp.clone(), L3 + 4, &1400u16.to_be_bytes()),
            &[DropBadIpv6],
        ),
    ]
}

// ---------------------------------------------------------------------------
// Running them.

fn prefixes(list: &[&str]) -> Vec<Prefix> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn lab_classifier() -> Programs {
    lab_classifier_with(MetaPlacement::Auto)
}

/// [`lab_classifier`] with the program that puts the metadata where
/// `placement` says.
fn lab_classifier_with(placement: MetaPlacement) -> Programs {
    let mut c = Programs::load_with(placement)
        .unwrap_or_else(|e| panic!("loading the classifier ({placement:?}): {}", chain(&e)));
    c.set_bypass(&prefixes(BYPASS)).unwrap();
    c.set_local_addrs(&addrs(LOCAL)).unwrap();
    c
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

/// Runs `frame` and returns the action and the counter deltas.
fn run(c: &Programs, frame: &[u8]) -> (u32, [u64; Counter::COUNT as usize]) {
    let before = c.counters().unwrap();
    let action = c
        .test_run(frame)
        .unwrap_or_else(|e| panic!("test run: {}", chain(&e)));
    let after = c.counters().unwrap();
    let mut delta = [0; Counter::COUNT as usize];
    for i in 0..delta.len() {
        delta[i] = after[i] - before[i];
    }
    (action, delta)
}

fn expected_delta(counters: &[Counter]) -> [u64; Counter::COUNT as usize] {
    let mut d = [0; Counter::COUNT as usize];
    for c in counters {
        d[c.index() as usize] += 1;
    }
    d
}

fn describe(delta: &[u64]) -> String {
    let moved: Vec<String> = Counter::ALL
        .iter()
        .zip(delta)
        .filter(|&(_, &n)| n != 0)
        .map(|(c, n)| format!("{}+{n}", c.name()))
        .collect();
    format!("[{}]", moved.join(", "))
}

#[test]
fn verdict_fixtures() {
    if !sluice_lab::require_root("verdict_fixtures") {
        return;
    }
    check_fixtures(&lab_classifier());
}

/// Every fixture's action and counters on `c`.
fn check_fixtures(c: &Programs) {
    let fixtures = fixtures();
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for f in &fixtures {
        assert!(names.insert(f.name), "duplicate fixture name {}", f.name);
        let (action, delta) = run(c, &f.frame);
        let want = expected_delta(f.counters);
        let ok = action == f.action && delta == want;
        eprintln!(
            "{} {:<50} {:<9} {}",
            if ok { "ok  " } else { "FAIL" },
            f.name,
            xdp_action_name(action),
            describe(&delta)
        );
        if !ok {
            failures.push(format!(
                "{}: got {} {}, want {} {}",
                f.name,
                xdp_action_name(action),
                describe(&delta),
                xdp_action_name(f.action),
                describe(&want)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

/// The classifier that puts its metadata in front of the frame
/// (`classify_head`, for kernels that refuse `bpf_xdp_adjust_meta` to XDP)
/// is forced here, so that it is tested on every kernel: the same actions
/// and counters for every fixture, and the same metadata and frame out of
/// `test_run_out`. Where the kernel allows `bpf_xdp_adjust_meta`, both
/// programs run side by side and must agree byte for byte.
#[test]
fn verdict_fixtures_with_the_metadata_in_front_of_the_frame() {
    if !sluice_lab::require_root("verdict_fixtures_with_the_metadata_in_front_of_the_frame") {
        return;
    }
    let head = lab_classifier_with(MetaPlacement::Head);
    assert!(head.meta_in_head());
    check_fixtures(&head);
    let area = {
        let auto = lab_classifier();
        if auto.meta_in_head() {
            eprintln!(
                "this kernel refuses bpf_xdp_adjust_meta to XDP: classify_head only (as the gateway does)"
            );
            None
        } else {
            let area = lab_classifier_with(MetaPlacement::Area);
            assert!(!area.meta_in_head());
            Some(area)
        }
    };
    let mut tunnelled = 0;
    for f in fixtures() {
        let (action, meta, out) = head
            .test_run_out(&f.frame)
            .unwrap_or_else(|e| panic!("{}: test run: {}", f.name, chain(&e)));
        if f.counters.contains(&Counter::Tunnel) {
            tunnelled += 1;
            let m = meta.unwrap_or_else(|| panic!("{}: no metadata", f.name));
            let m = sluice_common::XdpMeta::decode(m)
                .unwrap_or_else(|| panic!("{}: metadata without its magic: {m:?}", f.name));
            assert_eq!(m.tunnel(), Some(0), "{}: the internet tenant", f.name);
            assert_eq!(out, f.frame, "{}: the frame after the metadata", f.name);
        } else {
            assert_eq!(meta, None, "{}: metadata on a frame not tunnelled", f.name);
        }
        if let Some(area) = &area {
            let other = area.test_run_out(&f.frame).unwrap();
            assert_eq!((action, meta, out), other, "{}: head vs area", f.name);
        }
    }
    assert!(tunnelled > 10, "the table tunnels frames: {tunnelled}");
}

/// Every fixture moves exactly one verdict counter (plus `DropNoSocket`
/// for tunnelled frames): the table itself keeps to the counting rule.
#[test]
fn fixtures_count_one_verdict_each() {
    for f in fixtures() {
        let verdicts = f.counters.iter().filter(|c| c.is_verdict()).count();
        assert_eq!(verdicts, 1, "{}", f.name);
        if f.counters.contains(&Counter::DropNoSocket) {
            assert!(f.counters.contains(&Counter::Tunnel), "{}", f.name);
        }
    }
}

/// The frames the classifier accepts are well-formed as far as an
/// independent parser (etherparse) can tell, so the verdicts are about
/// real packets, not artefacts of the builders.
#[test]
fn accepted_fixtures_are_well_formed() {
    for f in fixtures() {
        let dropped_as_malformed = f
            .counters
            .iter()
            .any(|c| c.name().starts_with("drop_") && c.is_verdict());
        if dropped_as_malformed {
            continue;
        }
        if let Err(e) = etherparse::SlicedPacket::from_ethernet(&f.frame) {
            panic!("{}: etherparse refuses the frame: {e}", f.name);
        }
    }
}

/// `BPF_PROG_TEST_RUN` refuses XDP frames shorter than an Ethernet header,
/// so the classifier's own check of the Ethernet header (which the verifier
/// insists on before the first read) cannot be driven from here.
#[test]
fn test_run_refuses_runts() {
    if !sluice_lab::require_root("test_run_refuses_runts") {
        return;
    }
    let c = lab_classifier();
    let frame = eth_v4(TUNNEL_V4, TCP, &tcp());
    for len in [0, 1, 13] {
        match c.test_run(&frame[..len]) {
            Err(EbpfError::TestRun { len: l, .. }) => assert_eq!(l, len),
            other => panic!("{len}-byte frame: {other:?}"),
        }
    }
    assert_eq!(c.counters().unwrap(), [0; Counter::COUNT as usize]);
}

#[test]
fn bypass_replacement_keeps_other_sources() {
    if !sluice_lab::require_root("bypass_replacement_keeps_other_sources") {
        return;
    }
    let mut c = lab_classifier();
    let to = |dst: [u8; 4]| eth_v4(dst, UDP, &udp(b"x"));
    c.replace_bypass(BypassEntry::SOURCE_DNS, &prefixes(&["198.51.100.0/25"]))
        .unwrap();
    assert_eq!(run(&c, &to(TUNNEL_V4)).0, XDP_PASS, "DNS entry bypasses");

    // Replace the config set: 203.0.113.0/24 goes, 2001:db8:b::/48 stays,
    // the DNS entry is not the config's to remove.
    c.set_bypass(&prefixes(&["2001:db8:b::/48", "203.0.113.128/25"]))
        .unwrap();
    let (action, delta) = run(&c, &to(BYPASS_V4));
    assert_eq!((action, delta), (XDP_DROP, expected_delta(TUNNEL)));
    assert_eq!(run(&c, &to([203, 0, 113, 200])).0, XDP_PASS);
    assert_eq!(run(&c, &to(TUNNEL_V4)).0, XDP_PASS);
    assert_eq!(
        run(&c, &eth_v6(BYPASS_V6, UDP, &udp(b"x"))).0,
        XDP_PASS,
        "IPv6 entry kept"
    );

    let mut entries = c.bypass_entries().unwrap();
    entries.sort_by_key(|(p, _)| *p);
    let source = |s| BypassEntry {
        source: s,
        reserved: 0,
    };
    assert_eq!(
        entries,
        [
            (
                "198.51.100.0/25".parse().unwrap(),
                source(BypassEntry::SOURCE_DNS)
            ),
            (
                "203.0.113.128/25".parse().unwrap(),
                source(BypassEntry::SOURCE_CONFIG)
            ),
            (
                "2001:db8:b::/48".parse().unwrap(),
                source(BypassEntry::SOURCE_CONFIG)
            ),
        ]
    );

    // Emptying the config set leaves the DNS entry.
    c.set_bypass(&[]).unwrap();
    assert_eq!(c.bypass_entries().unwrap().len(), 1);
}

#[test]
fn local_addrs_replacement() {
    if !sluice_lab::require_root("local_addrs_replacement") {
        return;
    }
    let mut c = lab_classifier();
    let new_v4 = Ipv4Addr::new(192, 0, 2, 2);
    let new_v6: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    c.set_local_addrs(&[new_v4.into(), new_v6.into()]).unwrap();
    let local = expected_delta(&[Counter::PassLocal]);
    assert_eq!(
        run(&c, &eth_v4(new_v4.octets(), TCP, &tcp())),
        (XDP_PASS, local)
    );
    assert_eq!(
        run(&c, &eth_v6(new_v6.octets(), TCP, &tcp())),
        (XDP_PASS, local)
    );
    let tunnelled = (XDP_DROP, expected_delta(TUNNEL));
    assert_eq!(
        run(&c, &eth_v4(GW_V4, TCP, &tcp())),
        tunnelled,
        "old v4 gone"
    );
    assert_eq!(
        run(&c, &eth_v6(GW_V6, TCP, &tcp())),
        tunnelled,
        "old v6 gone"
    );
}

#[test]
fn register_socket_checks_queue_and_socket_type() {
    if !sluice_lab::require_root("register_socket_checks_queue_and_socket_type") {
        return;
    }
    let mut c = lab_classifier();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        c.register_socket(MAX_QUEUES, udp.as_fd()),
        Err(EbpfError::QueueOutOfRange { queue }) if queue == MAX_QUEUES
    ));
    // The kernel only takes AF_XDP sockets in an XSKMAP.
    assert!(matches!(
        c.register_socket(0, udp.as_fd()),
        Err(EbpfError::MapUpdate { .. })
    ));
    // Unregistering an empty slot is fine; tunnelled frames still drop.
    c.unregister_socket(0).unwrap();
    assert_eq!(
        run(&c, &eth_v4(TUNNEL_V4, TCP, &tcp())),
        (XDP_DROP, expected_delta(TUNNEL))
    );
}

/// Attaches in native mode to a veth pair inside a network namespace of
/// the test thread's own: the namespace, and the links in it, vanish when
/// the thread ends, whatever happens.
#[test]
fn attaches_natively_to_veth() {
    if !sluice_lab::require_root("attaches_natively_to_veth") {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET
        // moves only this thread into a fresh, empty network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&[
            "link", "add", "sl-lan0", "type", "veth", "peer", "name", "sl-lan1",
        ]);
        ip(&["link", "set", "sl-lan0", "up"]);
        ip(&["link", "set", "sl-lan1", "up"]);

        let mut c = lab_classifier();
        assert!(matches!(
            c.attach("sl-nonexistent", AttachMode::Auto),
            Err(EbpfError::Attach { .. })
        ));
        assert_eq!(
            c.attach("sl-lan0", AttachMode::Native).unwrap(),
            AttachedMode::Native
        );
        assert_eq!(c.attached(), Some(("sl-lan0", AttachedMode::Native)));
        assert!(matches!(
            c.attach("sl-lan1", AttachMode::Auto),
            Err(EbpfError::AlreadyAttached { .. })
        ));
        c.detach().unwrap();
        assert_eq!(c.attached(), None);
        assert_eq!(
            c.attach("sl-lan0", AttachMode::Auto).unwrap(),
            AttachedMode::Native
        );
        drop(c);
        // Dropping the classifier detached it: a new one attaches again.
        let mut c = lab_classifier();
        assert_eq!(
            c.attach("sl-lan0", AttachMode::Generic).unwrap(),
            AttachedMode::Generic
        );
    })
    .join()
    .expect("attach test thread");
}

// ---------------------------------------------------------------------------
// The compiled policy in the kernel: verdicts, metadata, the two slots and
// the runtime state.

/// The policy fixtures, for the modules below.
use policy as policy_fixture;

mod policy {
    use std::time::Duration;

    use sluice_common::{ACTION_TUNNEL, Counter, DnsEntry};
    use sluice_core::policy::{
        FailMode, Identity, Match, Policy, Profile, Proto, Rule, Tenant, Verdict, compile::Tables,
    };

    use super::*;

    const ALICE: [u8; 4] = [192, 0, 2, 10];
    const BOB: [u8; 4] = [192, 0, 2, 20];
    const WEB: [u8; 4] = [198, 51, 100, 7];
    const CORP_APP: [u8; 4] = [198, 51, 100, 130];

    fn tunnel_cfg() -> sluice_config::TunnelConfig {
        sluice_config::TunnelConfig {
            edge: "198.51.100.9:4443".parse().unwrap(),
            edges: sluice_core::select::EdgeSet::single("198.51.100.9:4443".parse().unwrap()),
            server_name: "corp.test".into(),
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "k.pem".into(),
            crl: None,
            keepalive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            coalesce_delay: Duration::ZERO,
            mtu: 1420,
            transport: sluice_core::datagram::path::PathConfig::default(),
        }
    }

    fn identity(addr: &str, group: &str) -> Identity {
        Identity {
            source: addr.parse().unwrap(),
            user: group.to_string(),
            groups: vec![group.to_string()],
            device: None,
        }
    }

    /// alice (engineering): 198.51.100.0/24 excluded but its TCP 443
    /// included; bob (sales): corp's private apps; everyone else: defaults.
    /// The default profile's captive-portal grace. Short, so that "down
    /// for longer than the grace" is a time after boot on any machine
    /// (the monotonic clock starts near 0 at boot).
    const GRACE: Duration = Duration::from_secs(2);

    pub(super) fn lab_policy() -> Policy {
        let mut eng = Profile::with_defaults("engineering", 1);
        eng.exclude.push("198.51.100.0/24".parse().unwrap());
        eng.include.push("198.51.100.0/24:443:tcp".parse().unwrap());
        eng.private_tenants.clear();
        let mut sales = Profile::with_defaults("sales", 1);
        sales.fail = FailMode::Open;
        let mut default = Profile::with_defaults("default", 1);
        default.captive_portal_grace = GRACE;
        Policy {
            identities: vec![
                identity("192.0.2.10", "engineering"),
                identity("192.0.2.20", "sales"),
            ],
            local: identity("198.18.3.1", "local"),
            profiles: vec![eng, sales, default],
            rules: vec![
                Rule {
                    matches: Match::Group("engineering".into()),
                    profile: 0,
                },
                Rule {
                    matches: Match::Group("sales".into()),
                    profile: 1,
                },
            ],
            default_profile: 2,
            tenants: vec![Tenant {
                name: "corp".into(),
                tunnel: tunnel_cfg(),
                segments: vec!["198.51.100.128/25".parse().unwrap()],
                domains: vec![],
            }],
            active_tenant: Some(0),
            forwarding: sluice_core::policy::Forwarding::default(),
        }
    }

    fn from(src: [u8; 4], frame: Vec<u8>) -> Vec<u8> {
        patched(frame, L3 + 12, &src)
    }

    fn install(c: &mut Programs, p: &Policy) -> (Tables, u32) {
        let t = Tables::compile(p).unwrap();
        let prepared = c
            .prepare_policy(&t)
            .unwrap_or_else(|e| panic!("prepare: {}", chain(&e)));
        let generation = c.commit_policy(prepared, false).unwrap();
        (t, generation)
    }

    /// Runs `frame`; returns the action, the counters that moved and the
    /// verdict the metadata carries (if any).
    fn run_meta(c: &Programs, frame: &[u8]) -> (u32, String, Option<(u8, u16)>) {
        let before = c.counters().unwrap();
        let (action, meta) = c
            .test_run_meta(frame)
            .unwrap_or_else(|e| panic!("test run: {}", chain(&e)));
        let after = c.counters().unwrap();
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let meta = meta.map(|m| {
            let m = sluice_common::XdpMeta::decode(m).expect("metadata magic");
            (m.action, m.generation())
        });
        (action, describe(&delta), meta)
    }

    #[test]
    fn verdicts_follow_the_sources_profile_and_carry_the_tunnel() {
        let mut c = lab_classifier();
        let (t, generation) = install(&mut c, &lab_policy());
        let tcp443 = tcp();
        let dns = udp(b"q");
        let cases: Vec<(&str, Vec<u8>, &str, Option<u8>)> = vec![
            (
                "alice web 443/tcp: include entry",
                from(ALICE, eth_v4(WEB, TCP, &tcp443)),
                "[tunnel+1, drop_no_socket+1]",
                Some(ACTION_TUNNEL),
            ),
            (
                "alice web 53/udp: excluded prefix",
                from(ALICE, eth_v4(WEB, UDP, &dns)),
                "[bypass+1]",
                None,
            ),
            (
                "bob web: internet tunnel",
                from(BOB, eth_v4(WEB, UDP, &dns)),
                "[tunnel+1, drop_no_socket+1]",
                Some(ACTION_TUNNEL),
            ),
            (
                "bob corp app: corp's tunnel",
                from(BOB, eth_v4(CORP_APP, TCP, &tcp443)),
                "[drop_no_socket+1, tunnel_private+1]",
                Some(ACTION_TUNNEL + 1),
            ),
            (
                "alice corp app: engineering does not allow corp",
                from(ALICE, eth_v4(CORP_APP, UDP, &dns)),
                "[bypass+1]",
                None,
            ),
            (
                "stranger to a private range: default exclusion",
                from([192, 0, 2, 99], eth_v4([10, 1, 2, 3], TCP, &tcp443)),
                "[bypass+1]",
                None,
            ),
            (
                "alice non-first TCP fragment: ports unknown, errs toward the tunnel",
                from(
                    ALICE,
                    eth(
                        GW_MAC,
                        &[],
                        ETH_P_IPV4,
                        &ipv4_frag(WEB, TCP, 8, false, &[0; 16]),
                    ),
                ),
                "[tunnel+1, drop_no_socket+1, frag_unknown+1]",
                Some(ACTION_TUNNEL),
            ),
            (
                "IPv6 stranger to unique-local: default exclusion",
                eth_v6(v6([0xfd00, 0, 0, 0, 0, 0, 0, 1]), TCP, &tcp443),
                "[bypass+1]",
                None,
            ),
            (
                "IPv6 stranger to the internet",
                eth_v6(TUNNEL_V6, TCP, &tcp443),
                "[tunnel+1, drop_no_socket+1]",
                Some(ACTION_TUNNEL),
            ),
        ];
        for (name, frame, counters, tunnel) in cases {
            let (action, moved, meta) = run_meta(&c, &frame);
            assert_eq!(moved, counters, "{name}");
            assert_eq!(
                action,
                if tunnel.is_some() { XDP_DROP } else { XDP_PASS },
                "{name}: {}",
                xdp_action_name(action)
            );
            assert_eq!(
                meta,
                tunnel.map(|a| (a, generation as u16)),
                "{name}: metadata"
            );
        }
        // The kernel agrees with the user-space lookup on a well-formed flow.
        let v = t.lookup(
            IpAddr::from(BOB),
            IpAddr::from(CORP_APP),
            50000,
            443,
            Proto::TCP,
        );
        assert_eq!(v, Verdict::Tunnel(1));
    }

    /// Two policies that give bob the same verdict by different paths: in
    /// A, bob's profile is index 0, which tunnels the web server; in B his
    /// profile is index 1, which tunnels it, while index 0 sends it direct.
    /// A frame classified with B's source table and A's destination table
    /// (or the reverse) would go direct.
    fn swapped(flip: bool) -> Policy {
        let mut p = lab_policy();
        let mut direct = Profile::with_defaults("direct-web", 1);
        direct.exclude.push("198.51.100.0/24".parse().unwrap());
        let tunnel = Profile::with_defaults("tunnel-web", 1);
        p.profiles = if flip {
            vec![direct, tunnel.clone(), tunnel]
        } else {
            vec![tunnel, direct.clone(), direct]
        };
        p.rules = vec![Rule {
            matches: Match::Group("sales".into()),
            profile: usize::from(flip),
        }];
        p.default_profile = 2;
        p
    }

    #[test]
    fn a_prepared_policy_is_invisible_until_its_commit() {
        let mut c = lab_classifier();
        let web = from(BOB, eth_v4(WEB, UDP, &udp(b"q")));
        let stranger = from([192, 0, 2, 99], eth_v4(WEB, UDP, &udp(b"q")));
        install(&mut c, &swapped(false));
        for round in 0..6 {
            let next = swapped(round % 2 == 0);
            let t = Tables::compile(&next).unwrap();
            let prepared = c.prepare_policy(&t).unwrap();
            // Written but not live: the old policy still decides.
            let (_, moved, _) = run_meta(&c, &stranger);
            let old_default = if round % 2 == 0 {
                "[bypass+1]"
            } else {
                "[tunnel+1, drop_no_socket+1]"
            };
            assert_eq!(moved, old_default, "round {round}: before commit");
            assert_eq!(run_meta(&c, &web).1, "[tunnel+1, drop_no_socket+1]");
            let g = c.commit_policy(prepared, false).unwrap();
            let (_, moved, meta) = run_meta(&c, &web);
            assert_eq!(moved, "[tunnel+1, drop_no_socket+1]", "round {round}");
            assert_eq!(meta, Some((ACTION_TUNNEL, g as u16)));
            let new_default = if round % 2 == 0 {
                "[tunnel+1, drop_no_socket+1]"
            } else {
                "[bypass+1]"
            };
            assert_eq!(
                run_meta(&c, &stranger).1,
                new_default,
                "round {round}: after"
            );
        }
    }

    #[test]
    fn runtime_state_network_direct_fail_open_and_grace() {
        let mut c = lab_classifier();
        install(&mut c, &lab_policy());
        let bob_web = from(BOB, eth_v4(WEB, UDP, &udp(b"q")));
        let bob_corp = from(BOB, eth_v4(CORP_APP, UDP, &udp(b"q")));
        let alice_web = from(ALICE, eth_v4(WEB, TCP, &tcp()));
        let stranger = from([192, 0, 2, 99], eth_v4(WEB, UDP, &udp(b"q")));
        // On a trusted network whose action is direct: internet traffic
        // goes direct, private access keeps its tunnel.
        c.set_internet_direct(true).unwrap();
        assert_eq!(run_meta(&c, &bob_web).1, "[direct_network+1]");
        assert_eq!(
            run_meta(&c, &bob_corp).1,
            "[drop_no_socket+1, tunnel_private+1]"
        );
        c.set_internet_direct(false).unwrap();
        // The internet tunnel is down: bob's profile fails open, alice's
        // fails closed (redirected, the worker drops), the default profile
        // is inside its captive-portal grace.
        let now = sluice_sys::fanotify::monotonic_ns();
        c.set_tunnel_down(0, Some(now)).unwrap();
        assert_eq!(run_meta(&c, &bob_web).1, "[direct_fail_open+1]");
        assert_eq!(run_meta(&c, &alice_web).1, "[tunnel+1, drop_no_socket+1]");
        assert_eq!(run_meta(&c, &stranger).1, "[direct_fail_open+1]");
        // Down for longer than the grace: the default profile drops. On a
        // machine booted less than that long ago, wait until the clock
        // has passed it (never a saturated, meaningless time).
        let past_grace = (GRACE + Duration::from_secs(1)).as_nanos() as u64;
        while sluice_sys::fanotify::monotonic_ns() <= past_grace {
            std::thread::sleep(Duration::from_millis(100));
        }
        let since = sluice_sys::fanotify::monotonic_ns() - past_grace;
        c.set_tunnel_down(0, Some(since)).unwrap();
        assert_eq!(run_meta(&c, &stranger).1, "[tunnel+1, drop_no_socket+1]");
        c.set_tunnel_down(0, None).unwrap();
        assert_eq!(run_meta(&c, &bob_web).1, "[tunnel+1, drop_no_socket+1]");
    }

    #[test]
    fn domain_entries_apply_per_profile_and_slot() {
        let mut c = lab_classifier();
        install(&mut c, &lab_policy());
        let slot = c.policy_state().slot & 1;
        // Bob's profile (index 1) bypasses the answered address.
        let bob = DnsEntry {
            bypass: 1 << 1,
            ..DnsEntry::default()
        };
        c.set_policy_dns(slot, IpAddr::from(WEB), bob).unwrap();
        assert_eq!(
            run_meta(&c, &from(BOB, eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[bypass+1]"
        );
        assert_eq!(
            run_meta(&c, &from([192, 0, 2, 99], eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[tunnel+1, drop_no_socket+1]"
        );
        // The idle slot's entry is not looked at: everyone bypassing there
        // changes nothing...
        let all = DnsEntry {
            bypass: u64::MAX,
            ..DnsEntry::default()
        };
        c.set_policy_dns(1 - slot, IpAddr::from(WEB), all).unwrap();
        assert_eq!(
            run_meta(&c, &from([192, 0, 2, 99], eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[tunnel+1, drop_no_socket+1]"
        );
        assert_eq!(
            run_meta(&c, &from(BOB, eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[bypass+1]"
        );
        // ...and a live entry without Bob's bit bypasses nothing, whatever
        // the idle slot holds.
        c.set_policy_dns(slot, IpAddr::from(WEB), DnsEntry::default())
            .unwrap();
        assert_eq!(
            run_meta(&c, &from(BOB, eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[tunnel+1, drop_no_socket+1]"
        );
        // A swap makes the other slot live, and its entry with it.
        install(&mut c, &lab_policy());
        assert_eq!(c.policy_state().slot & 1, 1 - slot);
        assert_eq!(
            run_meta(&c, &from([192, 0, 2, 99], eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[bypass+1]"
        );
        // Removal takes both slots' entries.
        c.remove_policy_dns(IpAddr::from(WEB)).unwrap();
        assert_eq!(
            run_meta(&c, &from(BOB, eth_v4(WEB, UDP, &udp(b"q")))).1,
            "[tunnel+1, drop_no_socket+1]"
        );
        let _ = Counter::Tunnel;
    }
}

// ---------------------------------------------------------------------------
// Fragments follow their first fragment (with a policy installed: the
// verdicts that depend on ports).

mod fragments {
    use std::time::Duration;

    use sluice_common::{ACTION_TUNNEL, Counter};
    use sluice_core::policy::{Policy, compile::Tables};

    use super::*;

    /// A LAN host of the default profile.
    const STRANGER: [u8; 4] = [192, 0, 2, 99];
    /// Tunnelled by default, UDP 9000 direct (a port rule).
    const WEB: [u8; 4] = [198, 51, 100, 7];
    /// Direct by default, UDP 9001 tunnelled (a port rule).
    const MIRROR: [u8; 4] = [203, 0, 113, 9];
    const WEB_V6: [u8; 16] = v6([0x2001, 0xdb8, 2, 0, 0, 0, 0, 7]);
    const MIRROR_V6: [u8; 16] = v6([0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 9]);

    fn policy() -> Policy {
        let mut p = super::policy_fixture::lab_policy();
        let default = &mut p.profiles[2];
        for e in [
            "198.51.100.7/32:9000:udp",
            "[2001:db8:2::7/128]:9000:udp",
            "203.0.113.0/24",
            "2001:db8:b::/48",
        ] {
            default.exclude.push(e.parse().unwrap());
        }
        for e in ["203.0.113.9/32:9001:udp", "[2001:db8:b::9/128]:9001:udp"] {
            default.include.push(e.parse().unwrap());
        }
        p
    }

    fn classifier() -> (Programs, u32) {
        let mut c = lab_classifier();
        let t = Tables::compile(&policy()).unwrap();
        let prepared = c.prepare_policy(&t).unwrap();
        let g = c.commit_policy(prepared, false).unwrap();
        (c, g)
    }

    fn udp_to(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0xc3, 0x50];
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    /// An IPv4 fragment from the stranger with identification `id`.
    fn v4(dst: [u8; 4], id: u16, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
        let ip = ipv4_frag(dst, UDP, offset, more, payload);
        let f = eth(GW_MAC, &[], ETH_P_IPV4, &ip);
        let f = patched(f, L3 + 12, &STRANGER);
        patched(f, L3 + 4, &id.to_be_bytes())
    }

    /// An IPv6 fragment (fragment header, identification `id`).
    fn v6_frag(dst: [u8; 16], id: u32, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
        let f = eth_v6_chain(dst, &[Ext::Fragment(offset, more)], UDP, payload);
        // The fragment header's identification: after the fixed header
        // and its first four bytes.
        patched(f, L3 + 40 + 4, &id.to_be_bytes())
    }

    /// Runs `frame`; the action, the counters that moved and the tunnel
    /// verdict in the metadata.
    fn run(c: &Programs, frame: &[u8]) -> (&'static str, String, Option<(u8, u16)>) {
        let before = c.counters().unwrap();
        let (action, meta) = c.test_run_meta(frame).unwrap();
        let after = c.counters().unwrap();
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let meta = meta.map(|m| {
            let m = sluice_common::XdpMeta::decode(m).expect("metadata magic");
            (m.action, m.generation())
        });
        (xdp_action_name(action), describe(&delta), meta)
    }

    #[test]
    fn later_fragments_follow_their_first_fragment() {
        if !sluice_lab::require_root("later_fragments_follow_their_first_fragment") {
            return;
        }
        let (c, g) = classifier();
        let g = g as u16;
        let tunnelled = Some((ACTION_TUNNEL, g));
        let body = [0xab; 64];
        // (name, first fragment, a later fragment, the first's verdict).
        let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
            (
                "v4 to a port sent direct by a port rule",
                v4(WEB, 0x1001, 0, true, &udp_to(9000, &body)),
                v4(WEB, 0x1001, 9, false, &body),
                "[bypass+1]",
            ),
            (
                "v4 to a tunnelled port of the same destination",
                v4(WEB, 0x1002, 0, true, &udp_to(53, &body)),
                v4(WEB, 0x1002, 9, false, &body),
                "[tunnel+1, drop_no_socket+1]",
            ),
            (
                "v4 to a port tunnelled by a port rule on a direct destination",
                v4(MIRROR, 0x1003, 0, true, &udp_to(9001, &body)),
                v4(MIRROR, 0x1003, 9, false, &body),
                "[tunnel+1, drop_no_socket+1]",
            ),
            (
                "v6 to a port sent direct by a port rule",
                v6_frag(WEB_V6, 0x2001, 0, true, &udp_to(9000, &body)),
                v6_frag(WEB_V6, 0x2001, 9, false, &body),
                "[bypass+1]",
            ),
            (
                "v6 to a tunnelled port",
                v6_frag(WEB_V6, 0x2002, 0, true, &udp_to(53, &body)),
                v6_frag(WEB_V6, 0x2002, 9, true, &body),
                "[tunnel+1, drop_no_socket+1]",
            ),
            (
                "v6 to a port tunnelled by a port rule on a direct destination",
                v6_frag(MIRROR_V6, 0x2003, 0, true, &udp_to(9001, &body)),
                v6_frag(MIRROR_V6, 0x2003, 9, false, &body),
                "[tunnel+1, drop_no_socket+1]",
            ),
        ];
        let mut failures = Vec::new();
        for (name, first, later, verdict) in cases {
            let (_, moved, meta) = run(&c, &first);
            let want_meta = verdict.contains("tunnel").then_some(tunnelled).flatten();
            if moved != verdict || meta != want_meta {
                failures.push(format!(
                    "{name}: first fragment {moved} {meta:?}, want {verdict}"
                ));
                continue;
            }
            // Every later fragment (two of them, and the last) takes the
            // first's verdict, metadata included.
            for _ in 0..2 {
                let (_, moved, meta) = run(&c, &later);
                let want = verdict.replace(']', ", frag_followed+1]");
                let want = sorted(&want);
                if sorted(&moved) != want || meta != want_meta {
                    failures.push(format!(
                        "{name}: later fragment {moved} {meta:?}, want {want} {want_meta:?}"
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(c.fragments_tracked().unwrap() >= 6);
    }

    /// `[a+1, b+1]` with its items in name order.
    fn sorted(s: &str) -> String {
        let mut v: Vec<&str> = s
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .filter(|x| !x.is_empty())
            .collect();
        v.sort_unstable();
        format!("[{}]", v.join(", "))
    }

    #[test]
    fn a_later_fragment_without_its_first_errs_toward_the_tunnel() {
        if !sluice_lab::require_root("a_later_fragment_without_its_first_errs_toward_the_tunnel") {
            return;
        }
        let (c, _) = classifier();
        let body = [0xcd; 32];
        // No first fragment seen: classified without ports. Tunnelled by
        // default with a direct port rule: tunnel. Direct by default with
        // a tunnelling UDP port rule: tunnel. A destination whose every
        // verdict for the protocol is direct: direct.
        for (name, frame, want) in [
            (
                "v4 web",
                v4(WEB, 0x3001, 9, false, &body),
                "[frag_unknown+1, tunnel+1, drop_no_socket+1]",
            ),
            (
                "v4 mirror (UDP port rule tunnels)",
                v4(MIRROR, 0x3002, 9, false, &body),
                "[frag_unknown+1, tunnel+1, drop_no_socket+1]",
            ),
            (
                "v6 web",
                v6_frag(WEB_V6, 0x3003, 9, false, &body),
                "[frag_unknown+1, tunnel+1, drop_no_socket+1]",
            ),
            (
                "v4 to the rest of the excluded /24",
                v4([203, 0, 113, 10], 0x3004, 9, false, &body),
                "[bypass+1, frag_unknown+1]",
            ),
        ] {
            let (_, moved, _) = run(&c, &frame);
            assert_eq!(sorted(&moved), sorted(want), "{name}");
        }
        // A later fragment of another datagram (another identification,
        // source or protocol) does not take a first fragment's verdict.
        let first = v4(WEB, 0x3005, 0, true, &udp_to(9000, &body));
        assert_eq!(run(&c, &first).1, "[bypass+1]");
        let other_id = v4(WEB, 0x3006, 9, false, &body);
        assert!(run(&c, &other_id).1.contains("frag_unknown+1"));
        let other_src = patched(v4(WEB, 0x3005, 9, false, &body), L3 + 12, &[192, 0, 2, 98]);
        assert!(run(&c, &other_src).1.contains("frag_unknown+1"));
    }

    /// Review finding (issue 14, fragments): an IPv6 later fragment's own
    /// fragment header names a "next header" that the receiver ignores
    /// (RFC 8200 4.5: only the first fragment's counts), so it says
    /// nothing about the datagram's protocol. Without its first fragment
    /// it must be classified as if it could be any protocol on any port:
    /// a later fragment of a UDP 9001 datagram (tunnelled by a port rule
    /// on a destination that is otherwise direct) that names ICMPv6,
    /// destination options, AH or TCP in its fragment header must not
    /// leave directly.
    #[test]
    fn a_v6_later_fragment_is_not_trusted_for_its_protocol() {
        if !sluice_lab::require_root("a_v6_later_fragment_is_not_trusted_for_its_protocol") {
            return;
        }
        let (c, _) = classifier();
        let body = [0x5a; 32];
        let tunnelled = sorted("[frag_unknown+1, tunnel+1, drop_no_socket+1]");
        let mut failures = Vec::new();
        for (name, next) in [
            ("udp (the datagram's own)", UDP),
            ("icmpv6", ICMPV6),
            ("destination options", 60),
            ("authentication header", 51),
            ("tcp", TCP),
            ("no next header", NO_NEXT_HEADER),
        ] {
            let f = eth_v6_chain(MIRROR_V6, &[Ext::Fragment(9, false)], next, &body);
            let f = patched(f, L3 + 40 + 4, &0x5001u32.to_be_bytes());
            let (_, moved, _) = run(&c, &f);
            if sorted(&moved) != tunnelled {
                failures.push(format!(
                    "later fragment naming {name} ({next}): {moved}, want {tunnelled}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // IPv4 keys its datagrams by protocol (RFC 791): a later fragment
        // of another protocol belongs to another datagram, and one
        // without ports on a destination direct for it goes direct.
        let icmp = patched(v4(MIRROR, 0x5002, 9, false, &body), L3 + 9, &[1]);
        assert_eq!(
            sorted(&run(&c, &icmp).1),
            sorted("[bypass+1, frag_unknown+1]")
        );
    }

    #[test]
    fn a_first_fragment_is_followed_only_within_the_timeout() {
        if !sluice_lab::require_root("a_first_fragment_is_followed_only_within_the_timeout") {
            return;
        }
        let (mut c, _) = classifier();
        c.set_fragment_timeout(Duration::from_millis(300)).unwrap();
        let body = [0xef; 32];
        let first = v4(WEB, 0x4001, 0, true, &udp_to(9000, &body));
        let later = v4(WEB, 0x4001, 9, false, &body);
        assert_eq!(run(&c, &first).1, "[bypass+1]");
        assert_eq!(sorted(&run(&c, &later).1), "[bypass+1, frag_followed+1]");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(
            sorted(&run(&c, &later).1),
            sorted("[frag_unknown+1, tunnel+1, drop_no_socket+1]"),
            "older than the timeout: the rule for an unknown first fragment"
        );
        // A new first fragment under the same identification starts over.
        assert_eq!(run(&c, &first).1, "[bypass+1]");
        assert!(run(&c, &later).1.contains("frag_followed+1"));
        let _ = Counter::FragFollowed;
    }
}

// ---------------------------------------------------------------------------
// The policy state is one word, stored atomically and read once.

mod state_word {
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        time::{Duration, Instant},
    };

    use sluice_common::Counter;
    use sluice_core::policy::{Profile, compile::Tables};
    use sluice_gateway::ebpf::Prepared;

    use super::*;

    /// Runs the program `repeat` times on `frame` through
    /// `BPF_PROG_TEST_RUN`, from a file descriptor of its own (opened by
    /// id: the test needs no lock on the `Programs` the writer holds).
    fn test_run_repeat(prog_fd: i32, frame: &[u8], repeat: u32) {
        #[repr(C)]
        #[derive(Default)]
        struct TestAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            ctx_size_in: u32,
            ctx_size_out: u32,
            ctx_in: u64,
            ctx_out: u64,
            flags: u32,
            cpu: u32,
            batch_size: u32,
            pad: u32,
        }
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        let mut attr = TestAttr {
            prog_fd: prog_fd as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..TestAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix for the command, its
        // pointers valid for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestAttr>(),
            )
        };
        assert_eq!(
            rc,
            0,
            "BPF_PROG_TEST_RUN: {}",
            std::io::Error::last_os_error()
        );
    }

    fn prog_fd_by_id(id: u32) -> i32 {
        #[repr(C)]
        struct GetFd {
            id: u32,
            next_id: u32,
            open_flags: u32,
        }
        const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
        let mut attr = GetFd {
            id,
            next_id: 0,
            open_flags: 0,
        };
        // SAFETY: as above.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_FD_BY_ID,
                &raw mut attr,
                size_of::<GetFd>(),
            )
        };
        assert!(
            fd >= 0,
            "BPF_PROG_GET_FD_BY_ID: {}",
            std::io::Error::last_os_error()
        );
        fd as i32
    }

    /// Slot A tunnels the web server, slot B sends it direct. State A is
    /// (slot A, internet by the policy), state B (slot B, internet
    /// direct). Every frame must see one of them: the web frame is then
    /// tunnelled (A) or bypassed (B, by the policy, before the network
    /// action). A frame that saw slot A with B's internet-direct flag is
    /// passed as `direct_network`: a state that was never written.
    #[test]
    fn a_swap_is_never_seen_half_done() {
        if !sluice_lab::require_root("a_swap_is_never_seen_half_done") {
            return;
        }
        let mut c = lab_classifier();
        let mut a = super::policy_fixture::lab_policy();
        a.rules.clear();
        let mut b = a.clone();
        let mut direct = Profile::with_defaults("default", 1);
        direct.exclude.push("198.51.100.0/24".parse().unwrap());
        b.profiles[2] = direct;
        for p in [&a, &b] {
            let t = Tables::compile(p).unwrap();
            let prepared = c.prepare_policy(&t).unwrap();
            c.commit_policy(prepared, false).unwrap();
        }
        let (slot_a, slot_b) = (0, 1);
        let web = patched(
            eth_v4([198, 51, 100, 7], UDP, &udp(b"q")),
            L3 + 12,
            &[192, 0, 2, 99],
        );
        let fd = prog_fd_by_id(c.program_id().expect("program id"));
        let before = c.counters().unwrap();
        let stop = AtomicBool::new(false);
        let flips = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut runs = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    test_run_repeat(fd, &web, 20_000);
                    runs += 20_000;
                }
                runs
            });
            let started = Instant::now();
            let mut flips = 0u64;
            while started.elapsed() < Duration::from_secs(3) {
                for _ in 0..1000 {
                    let p = |slot| Prepared {
                        slot,
                        sources: 0,
                        destinations: 0,
                        took: Duration::ZERO,
                    };
                    c.commit_policy(p(slot_a), false).unwrap();
                    c.commit_policy(p(slot_b), true).unwrap();
                    flips += 2;
                }
            }
            stop.store(true, Ordering::Relaxed);
            let runs = reader.join().unwrap();
            (flips, runs)
        });
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
        let after = c.counters().unwrap();
        let moved = |x: Counter| after[x.index() as usize] - before[x.index() as usize];
        // A repeated test run does not reset the frame: after a tunnel
        // verdict's metadata, the next runs in the same call find no room
        // for more and count `drop_no_meta`; both are state A.
        let (tunnel, bypass, torn) = (
            moved(Counter::Tunnel) + moved(Counter::DropNoMeta),
            moved(Counter::Bypass),
            moved(Counter::DirectNetwork),
        );
        eprintln!(
            "{} state writes, {} frames: {tunnel} tunnelled (A), {bypass} bypassed (B), {torn} half-swapped",
            flips.0, flips.1
        );
        assert!(tunnel > 0 && bypass > 0, "both states seen");
        assert_eq!(
            torn, 0,
            "frames classified by a state that was never written"
        );
    }

    #[test]
    fn the_kernel_reads_what_was_stored() {
        if !sluice_lab::require_root("the_kernel_reads_what_was_stored") {
            return;
        }
        let mut c = lab_classifier();
        assert_eq!(c.live_policy_state().installed, 0);
        let t = Tables::compile(&super::policy_fixture::lab_policy()).unwrap();
        let prepared = c.prepare_policy(&t).unwrap();
        let g = c.commit_policy(prepared, true).unwrap();
        let s = c.live_policy_state();
        assert_eq!((s.installed, s.internet_direct, s.generation), (1, 1, g));
        assert_eq!(s, c.policy_state());
        c.set_tunnel_down(3, Some(1234)).unwrap();
        assert_eq!(c.tunnel_down_since(3), Some(1234));
        assert_eq!(c.live_policy_state().down, 1 << 3);
        c.set_tunnel_down(3, None).unwrap();
        assert_eq!(c.tunnel_down_since(3), None);
        assert_eq!(c.live_policy_state().down, 0);
    }
}

// ---------------------------------------------------------------------------
// VLAN tags of frames passed to the kernel: kept (kernel mode) or removed
// (untag mode).

mod vlan {
    use sluice_gateway::ebpf::VlanMode;

    use super::*;

    fn tagged(vid: u16, ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = eth(GW_MAC, &[ETH_P_8021Q], ether_type, payload);
        f[14..16].copy_from_slice(&vid.to_be_bytes());
        f
    }

    fn untagged(ether_type: u16, payload: &[u8]) -> Vec<u8> {
        eth(GW_MAC, &[], ether_type, payload)
    }

    #[test]
    fn untag_mode_removes_the_tag_of_passed_frames_only() {
        if !sluice_lab::require_root("untag_mode_removes_the_tag_of_passed_frames_only") {
            return;
        }
        let mut c = lab_classifier();
        let bypass = ipv4(BYPASS_V4, UDP, &udp(b"x"));
        let arp = arp_request();
        let tunnel = ipv4(TUNNEL_V4, TCP, &tcp());
        // Kernel mode (the default): the frame reaches the kernel as it came.
        let f = tagged(10, ETH_P_IPV4, &bypass);
        let (action, _, out) = c.test_run_out(&f).unwrap();
        assert_eq!((action, out.as_slice()), (XDP_PASS, f.as_slice()));
        c.set_vlan_mode(VlanMode::Untag).unwrap();
        for (name, frame, plain, counters) in [
            (
                "bypassed IPv4",
                tagged(10, ETH_P_IPV4, &bypass),
                untagged(ETH_P_IPV4, &bypass),
                "[bypass+1, pass_untagged+1]",
            ),
            (
                "ARP",
                tagged(10, ETH_P_ARP, &arp),
                untagged(ETH_P_ARP, &arp),
                "[pass_arp+1, pass_untagged+1]",
            ),
            (
                "to the gateway, IPv6",
                tagged(4094, ETH_P_IPV6, &ipv6(GW_V6, TCP, &tcp())),
                untagged(ETH_P_IPV6, &ipv6(GW_V6, TCP, &tcp())),
                "[pass_local+1, pass_untagged+1]",
            ),
        ] {
            let before = c.counters().unwrap();
            let (action, _, out) = c.test_run_out(&frame).unwrap();
            let after = c.counters().unwrap();
            let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            assert_eq!(action, XDP_PASS, "{name}");
            assert_eq!(out, plain, "{name}: the tag is gone, nothing else changed");
            assert_eq!(describe(&delta), counters, "{name}");
        }
        // The host's VLAN was noted; an untagged ARP from it (the host
        // moved off its VLAN) forgets it.
        assert_eq!(
            c.vlan_hosts().unwrap(),
            [(HOST_MAC, 4094)],
            "the last VLAN seen"
        );
        let (action, _, _) = c.test_run_out(&untagged(ETH_P_ARP, &arp)).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(c.vlan_hosts().unwrap(), []);
        // Tunnelled frames keep their tag (the worker learns it); two tags
        // are left for the kernel's VLAN devices.
        let f = tagged(10, ETH_P_IPV4, &tunnel);
        let (action, _, out) = c.test_run_out(&f).unwrap();
        assert_eq!((action, out.as_slice()), (XDP_DROP, f.as_slice()));
        let qinq = eth(GW_MAC, &[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IPV4, &bypass);
        let (action, _, out) = c.test_run_out(&qinq).unwrap();
        assert_eq!((action, out.as_slice()), (XDP_PASS, qinq.as_slice()));
    }
}

// ---------------------------------------------------------------------------
// The classifier's header walk agrees with its user-space statement
// (`sluice_core::wire::summary`): the fixtures, and mutations of them. The
// fuzz target `classifier_diff` does the same with coverage guidance.

#[test]
fn parse_probe_agrees_with_the_user_space_views() {
    if !sluice_lab::require_root("parse_probe_agrees_with_the_user_space_views") {
        return;
    }
    let probe = sluice_gateway::ebpf::ParseProbe::load()
        .unwrap_or_else(|e| panic!("loading the parse probe: {}", chain(&e)));
    let mut rng = sluice_core::testutil::XorShift::new(0x5eed_f00d);
    let mut frames: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.frame).collect();
    let base = frames.clone();
    for _ in 0..3000 {
        let mut f = base[(rng.next_u64() % base.len() as u64) as usize].clone();
        for _ in 0..=rng.next_u64() % 3 {
            match rng.next_u64() % 3 {
                0 => {
                    let i = (rng.next_u64() % f.len() as u64) as usize;
                    f[i] = rng.next_u64() as u8;
                }
                1 => {
                    let len = 14 + (rng.next_u64() % (f.len() as u64 - 13)) as usize;
                    f.truncate(len);
                }
                _ => f.extend((0..rng.next_u64() % 16).map(|_| rng.next_u64() as u8)),
            }
        }
        frames.push(f);
    }
    let mut differ = Vec::new();
    for f in &frames {
        let got = probe.run(f).unwrap();
        let mut want = sluice_core::wire::summary::summary(f);
        want.runs = got.runs;
        if got != want {
            differ.push(format!("{f:02x?}\n  kernel: {got:?}\n  user:   {want:?}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} frames parsed differently, e.g.:\n{}",
        differ.len(),
        frames.len(),
        differ
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
