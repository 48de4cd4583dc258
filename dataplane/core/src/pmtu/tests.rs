use std::time::Duration;

use etherparse::{Icmpv4Type, Icmpv6Type, IpNumber, PacketBuilder, SlicedPacket, TcpOptionElement};

use super::*;

const LAN_V4: [u8; 4] = [192, 0, 2, 10];
const FAR_V4: [u8; 4] = [203, 0, 113, 10];
const GW_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LAN_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const FAR_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const GW_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

fn udp_v4(len: usize, df: bool) -> Vec<u8> {
    let mut h = etherparse::Ipv4Header::new(0, 64, IpNumber::UDP, LAN_V4, FAR_V4).unwrap();
    h.dont_fragment = df;
    h.identification = 0x1234;
    let b = PacketBuilder::ip(etherparse::IpHeaders::Ipv4(
        h,
        etherparse::Ipv4Extensions::default(),
    ))
    .udp(40000, 443);
    let payload: Vec<u8> = (0..len - 28).map(|i| i as u8).collect();
    let mut out = Vec::new();
    b.write(&mut out, &payload).unwrap();
    out
}

fn udp_v6(len: usize) -> Vec<u8> {
    let b = PacketBuilder::ipv6(LAN_V6, FAR_V6, 64).udp(40000, 443);
    let payload: Vec<u8> = (0..len - 48).map(|i| i as u8).collect();
    let mut out = Vec::new();
    b.write(&mut out, &payload).unwrap();
    out
}

fn syn(v6: bool, mss: Option<u16>, nop_first: bool, ack: bool) -> Vec<u8> {
    let mut opts = Vec::new();
    if nop_first {
        opts.push(TcpOptionElement::Noop);
    }
    if let Some(m) = mss {
        opts.push(TcpOptionElement::MaximumSegmentSize(m));
    }
    opts.push(TcpOptionElement::WindowScale(7));
    let b = if v6 {
        PacketBuilder::ipv6(LAN_V6, FAR_V6, 64)
    } else {
        PacketBuilder::ipv4(LAN_V4, FAR_V4, 64)
    };
    let mut b = b.tcp(40000, 443, 7, 64240).syn().options(&opts).unwrap();
    if ack {
        b = b.ack(99);
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn mss_of(pkt: &[u8]) -> Option<u16> {
    let s = SlicedPacket::from_ip(pkt).unwrap();
    let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
        panic!("not tcp")
    };
    t.options_iterator().find_map(|o| match o.unwrap() {
        TcpOptionElement::MaximumSegmentSize(m) => Some(m),
        _ => None,
    })
}

fn tcp_checksum_ok(pkt: &[u8]) -> bool {
    let s = SlicedPacket::from_ip(pkt).unwrap();
    let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
        panic!("not tcp")
    };
    let expected = match s.net.unwrap() {
        etherparse::NetSlice::Ipv4(ip) => t
            .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
            .unwrap(),
        etherparse::NetSlice::Ipv6(ip) => t
            .calc_checksum_ipv6(ip.header().source(), ip.header().destination())
            .unwrap(),
        etherparse::NetSlice::Arp(_) => unreachable!(),
    };
    t.checksum() == expected
}

#[test]
fn fit_sorts_by_family_and_df() {
    assert_eq!(fit(&udp_v4(1400, true), 1400), Fit::Fits);
    assert_eq!(fit(&udp_v4(1401, true), 1400), Fit::TooBig);
    assert_eq!(fit(&udp_v4(1401, false), 1400), Fit::Fragment);
    assert_eq!(fit(&udp_v6(1400), 1400), Fit::Fits);
    assert_eq!(fit(&udp_v6(1401), 1400), Fit::TooBig);
}

#[test]
fn syn_mss_is_clamped_with_a_valid_checksum() {
    for (v6, nop) in [(false, false), (false, true), (true, false), (true, true)] {
        for ack in [false, true] {
            let mut p = syn(v6, Some(1460), nop, ack);
            assert!(clamp_mss(&mut p, 1400), "v6 {v6} nop {nop}");
            assert_eq!(mss_of(&p), Some(if v6 { 1340 } else { 1360 }));
            assert!(tcp_checksum_ok(&p), "v6 {v6} nop {nop} ack {ack}");
        }
    }
}

#[test]
fn what_needs_no_clamp_is_left_alone() {
    // Already small enough.
    let mut p = syn(false, Some(1200), false, false);
    let before = p.clone();
    assert!(!clamp_mss(&mut p, 1400));
    assert_eq!(p, before);
    // No MSS option.
    let mut p = syn(false, None, false, false);
    assert!(!clamp_mss(&mut p, 1400));
    // Not a SYN.
    let b = PacketBuilder::ipv4(LAN_V4, FAR_V4, 64)
        .tcp(40000, 443, 7, 64240)
        .ack(1)
        .options(&[TcpOptionElement::MaximumSegmentSize(1460)])
        .unwrap();
    let mut p = Vec::new();
    b.write(&mut p, &[1, 2, 3]).unwrap();
    let before = p.clone();
    assert!(!clamp_mss(&mut p, 1400));
    assert_eq!(p, before);
    // UDP, and garbage.
    let mut p = udp_v4(100, true);
    assert!(!clamp_mss(&mut p, 1400));
    let mut junk = vec![0x45; 30];
    assert!(!clamp_mss(&mut junk, 1400));
}

#[test]
fn malformed_tcp_options_do_not_panic_or_change_the_packet() {
    let base = syn(false, Some(1460), false, false);
    // Corrupt the option bytes every which way (the options start at 40).
    for at in 40..base.len() {
        for v in [0u8, 1, 2, 3, 4, 0xff] {
            let mut p = base.clone();
            p[at] = v;
            let _ = clamp_mss(&mut p, 1400);
        }
    }
}

#[test]
fn icmpv4_fragmentation_needed_quotes_the_packet() {
    let pkt = udp_v4(1500, true);
    let mut out = [0u8; 1600];
    let n = too_big_reply(&pkt, 1400, IpAddr::V4(GW_V4), &mut out).unwrap();
    assert_eq!(n, 576, "an IPv4 error is at most 576 bytes");
    let s = SlicedPacket::from_ip(&out[..n]).unwrap();
    let etherparse::NetSlice::Ipv4(ip) = s.net.clone().unwrap() else {
        panic!()
    };
    assert_eq!(ip.header().source(), GW_V4.octets());
    assert_eq!(ip.header().destination(), LAN_V4);
    let etherparse::TransportSlice::Icmpv4(icmp) = s.transport.unwrap() else {
        panic!()
    };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }
        )
    );
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    assert!(ip.header().is_checksum_valid_if_present_unwrap());
    assert_eq!(icmp.payload(), &pkt[..576 - 28]);
}

trait ChecksumOk {
    fn is_checksum_valid_if_present_unwrap(&self) -> bool;
}

impl ChecksumOk for etherparse::Ipv4HeaderSlice<'_> {
    fn is_checksum_valid_if_present_unwrap(&self) -> bool {
        self.to_header().calc_header_checksum() == self.header_checksum()
    }
}

#[test]
fn icmpv6_packet_too_big_quotes_up_to_1280_bytes() {
    let pkt = udp_v6(1500);
    let mut out = [0u8; 1600];
    let n = too_big_reply(&pkt, 1400, IpAddr::V6(GW_V6), &mut out).unwrap();
    assert_eq!(n, 1280);
    let s = SlicedPacket::from_ip(&out[..n]).unwrap();
    let etherparse::NetSlice::Ipv6(ip) = s.net.clone().unwrap() else {
        panic!()
    };
    assert_eq!(ip.header().destination(), LAN_V6);
    let etherparse::TransportSlice::Icmpv6(icmp) = s.transport.unwrap() else {
        panic!()
    };
    assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
    let expected = icmp
        .header()
        .icmp_type
        .calc_checksum(GW_V6.octets(), LAN_V6, icmp.payload())
        .unwrap();
    assert_eq!(icmp.checksum(), expected);
    assert_eq!(icmp.payload(), &pkt[..1280 - 48]);
}

#[test]
fn no_error_about_errors_fragments_or_odd_sources() {
    let mut out = [0u8; 1600];
    let gw = IpAddr::V4(GW_V4);
    // An ICMP error itself.
    let b = PacketBuilder::ipv4(LAN_V4, FAR_V4, 64).icmpv4(Icmpv4Type::TimeExceeded(
        etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
    ));
    let mut err = Vec::new();
    b.write(&mut err, &[0u8; 1500]).unwrap();
    assert_eq!(too_big_reply(&err, 1400, gw, &mut out), None);
    // An echo request is answered.
    let b = PacketBuilder::ipv4(LAN_V4, FAR_V4, 64).icmpv4_echo_request(1, 1);
    let mut echo = Vec::new();
    b.write(&mut echo, &[0u8; 1500]).unwrap();
    assert!(too_big_reply(&echo, 1400, gw, &mut out).is_some());
    // A non-first fragment.
    let mut frag = udp_v4(1500, false);
    ipv4::Packet::new_unchecked(&mut frag[..]).set_frag(0, 1480);
    ipv4::Packet::new_unchecked(&mut frag[..]).fill_checksum();
    assert_eq!(too_big_reply(&frag, 1400, gw, &mut out), None);
    // Broadcast or unspecified source, multicast destination.
    for (src, dst) in [
        ([0, 0, 0, 0], FAR_V4),
        ([255, 255, 255, 255], FAR_V4),
        (LAN_V4, [224, 0, 0, 1]),
    ] {
        let b = PacketBuilder::ipv4(src, dst, 64).udp(1, 2);
        let mut p = Vec::new();
        b.write(&mut p, &[0u8; 1500]).unwrap();
        assert_eq!(
            too_big_reply(&p, 1400, gw, &mut out),
            None,
            "{src:?} -> {dst:?}"
        );
    }
    // The wrong family for `from`, and a buffer too short.
    assert_eq!(
        too_big_reply(&udp_v4(1500, true), 1400, IpAddr::V6(GW_V6), &mut out),
        None
    );
    assert_eq!(
        too_big_reply(&udp_v4(1500, true), 1400, gw, &mut [0u8; 100]),
        None
    );
    // IPv6: an ICMPv6 error, and a multicast source.
    let b = PacketBuilder::ipv6(LAN_V6, FAR_V6, 64).icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 });
    let mut e6 = Vec::new();
    b.write(&mut e6, &[0u8; 1500]).unwrap();
    assert_eq!(too_big_reply(&e6, 1400, IpAddr::V6(GW_V6), &mut out), None);
    let mut mc = LAN_V6;
    mc[0] = 0xff;
    let b = PacketBuilder::ipv6(mc, FAR_V6, 64).udp(1, 2);
    let mut m6 = Vec::new();
    b.write(&mut m6, &[0u8; 1500]).unwrap();
    assert_eq!(too_big_reply(&m6, 1400, IpAddr::V6(GW_V6), &mut out), None);
}

/// Reassembles fragments the way a receiver does (by offset) and checks
/// each one's header.
fn reassemble(frags: &[Vec<u8>], mtu: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for (k, f) in frags.iter().enumerate() {
        assert!(f.len() <= mtu, "fragment {k}: {} > {mtu}", f.len());
        let p = ipv4::Packet::new_checked(&f[..]).unwrap();
        assert!(p.verify_checksum(), "fragment {k}");
        assert_eq!(usize::from(p.frag_offset()), payload.len(), "fragment {k}");
        assert_eq!(p.more_frags(), k + 1 < frags.len(), "fragment {k}");
        assert!(!p.dont_frag());
        assert_eq!(p.ident(), 0x1234);
        if k + 1 < frags.len() {
            assert_eq!(p.payload().len() % 8, 0);
        }
        payload.extend_from_slice(p.payload());
    }
    payload
}

#[test]
fn fragments_reassemble_to_the_packet() {
    let mut scratch = [0u8; 2000];
    for (len, mtu) in [
        (1500, 1400),
        (1500, 576),
        (4000, 1280),
        (1401, 1400),
        (9000, 1500),
    ] {
        let pkt = udp_v4(len, false);
        let mut frags = Vec::new();
        let n = fragment_v4(&pkt, mtu, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
        assert_eq!(n, frags.len());
        assert_eq!(
            reassemble(&frags, usize::from(mtu)),
            pkt[20..],
            "{len}/{mtu}"
        );
    }
}

#[test]
fn later_fragments_keep_only_copied_options() {
    // IHL 8: a copied option (0x83, loose source route, 7 bytes), a
    // not-copied one (0x07, record route, 3 bytes), then end of options.
    let base = udp_v4(1500, false);
    let mut pkt = Vec::new();
    pkt.extend_from_slice(&base[..20]);
    pkt.extend_from_slice(&[0x83, 7, 4, 192, 0, 2, 9, 0x07, 3, 4, 0, 0]);
    pkt.extend_from_slice(&base[20..]);
    pkt[0] = 0x48;
    let total = pkt.len() as u16;
    let mut h = ipv4::Packet::new_unchecked(&mut pkt[..]);
    h.set_total_len(total);
    h.fill_checksum();
    let mut scratch = [0u8; 2000];
    let mut frags = Vec::new();
    fragment_v4(&pkt, 1000, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
    assert_eq!(frags[0][0], 0x48, "the first keeps every option");
    for f in &frags[1..] {
        assert_eq!(
            f[0], 0x47,
            "later ones: 7 bytes of copied option, padded to 8"
        );
        assert_eq!(&f[20..27], &[0x83, 7, 4, 192, 0, 2, 9]);
    }
    assert_eq!(reassemble(&frags, 1000), pkt[32..]);
}

#[test]
fn fragmenting_refuses_df_junk_and_tiny_mtus() {
    let mut scratch = [0u8; 2000];
    let mut none = |_: &[u8]| panic!("no fragment expected");
    assert_eq!(
        fragment_v4(&udp_v4(1500, true), 1400, &mut scratch, &mut none),
        Err(FragError::DontFragment)
    );
    assert_eq!(
        fragment_v4(&[0x45; 10], 1400, &mut scratch, &mut none),
        Err(FragError::Malformed)
    );
    assert_eq!(
        fragment_v4(&udp_v4(1500, false), 24, &mut scratch, &mut none),
        Err(FragError::MtuTooSmall)
    );
    assert_eq!(
        fragment_v4(&udp_v4(1500, false), 1400, &mut [0u8; 100], &mut none),
        Err(FragError::Scratch)
    );
}

#[test]
fn the_limiter_allows_a_burst_then_its_rate() {
    let t0 = Instant::now();
    let mut l = IcmpLimiter::new(100, 10);
    assert!((0..10).all(|_| l.allow(t0)));
    assert!(!l.allow(t0));
    assert_eq!(l.refused(), 1);
    // 10 ms later: one more token.
    let t1 = t0 + Duration::from_millis(10);
    assert!(l.allow(t1));
    assert!(!l.allow(t1));
    // A long quiet time refills to the burst, not beyond.
    let t2 = t1 + Duration::from_mins(1);
    assert_eq!((0..20).filter(|_| l.allow(t2)).count(), 10);
}
