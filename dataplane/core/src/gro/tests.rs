//! The coalescer against a model of the kernel's segmentation: whatever
//! goes in must come out of [`segment`] unchanged, in order per flow.
use etherparse::{
    IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader, TcpOptionElement, UdpHeader,
};

use super::*;
use crate::testutil::XorShift;

/// A TCP or UDP packet's parameters.
#[derive(Debug, Clone)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "header flags of a test packet"
)]
struct P {
    v6: bool,
    udp: bool,
    src_host: u8,
    sport: u16,
    seq: u32,
    ack: u32,
    window: u16,
    id: u16,
    ttl: u8,
    tos: u8,
    df: bool,
    psh: bool,
    fin: bool,
    ts: Option<(u32, u32)>,
    payload: Vec<u8>,
}

impl P {
    fn tcp(sport: u16, seq: u32, id: u16, len: usize) -> Self {
        Self {
            v6: false,
            udp: false,
            src_host: 10,
            sport,
            seq,
            ack: 7777,
            window: 502,
            id,
            ttl: 64,
            tos: 0,
            df: true,
            psh: false,
            fin: false,
            ts: Some((1000, 2000)),
            payload: (0..len)
                .map(|i| (i as u32 ^ seq ^ u32::from(sport)) as u8)
                .collect(),
        }
    }

    fn udp(sport: u16, id: u16, len: usize, fill: u8) -> Self {
        Self {
            udp: true,
            ts: None,
            payload: vec![fill; len],
            ..Self::tcp(sport, 0, id, 0)
        }
    }

    fn v6(mut self) -> Self {
        self.v6 = true;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let src4 = [192, 0, 2, self.src_host];
        let dst4 = [203, 0, 113, 10];
        let mut src6 = [0u8; 16];
        src6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src6[15] = self.src_host;
        let mut dst6 = src6;
        dst6[5] = 0x64;
        dst6[15] = 10;
        let mut l4 = Vec::new();
        let proto = if self.udp {
            IpNumber::UDP
        } else {
            IpNumber::TCP
        };
        let l4_len = if self.udp {
            8 + self.payload.len()
        } else {
            20 + if self.ts.is_some() { 12 } else { 0 } + self.payload.len()
        };
        let mut v4 = Ipv4Header::new(l4_len as u16, self.ttl, proto, src4, dst4).unwrap();
        v4.identification = self.id;
        v4.dont_fragment = self.df;
        v4.dscp = etherparse::IpDscp::try_new(self.tos >> 2).unwrap();
        v4.header_checksum = v4.calc_header_checksum();
        let v6h = Ipv6Header {
            traffic_class: self.tos,
            flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
            payload_length: l4_len as u16,
            next_header: proto,
            hop_limit: self.ttl,
            source: src6,
            destination: dst6,
        };
        if self.udp {
            let h = if self.v6 {
                UdpHeader::with_ipv6_checksum(self.sport, 9000, &v6h, &self.payload).unwrap()
            } else {
                UdpHeader::with_ipv4_checksum(self.sport, 9000, &v4, &self.payload).unwrap()
            };
            h.write(&mut l4).unwrap();
        } else {
            let mut h = TcpHeader::new(self.sport, 443, self.seq, self.window);
            h.ack = true;
            h.acknowledgment_number = self.ack;
            h.psh = self.psh;
            h.fin = self.fin;
            if let Some((a, b)) = self.ts {
                h.set_options(&[
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::Timestamp(a, b),
                ])
                .unwrap();
            }
            h.checksum = if self.v6 {
                h.calc_checksum_ipv6(&v6h, &self.payload).unwrap()
            } else {
                h.calc_checksum_ipv4(&v4, &self.payload).unwrap()
            };
            h.write(&mut l4).unwrap();
        }
        l4.extend_from_slice(&self.payload);
        let mut out = Vec::new();
        if self.v6 {
            v6h.write(&mut out).unwrap();
        } else {
            v4.write(&mut out).unwrap();
        }
        out.extend_from_slice(&l4);
        out
    }
}

/// Runs `pkts` through a coalescer (flushing at the end); returns what it
/// handed out.
fn run(c: &mut Coalescer, pkts: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut emit = |h: &VnetHdr, b: &[u8]| out.push((*h, b.to_vec()));
    for p in pkts {
        c.push(p, &mut emit);
    }
    c.flush(&mut emit);
    out
}

/// The flow a packet belongs to (for per-flow order), or the whole packet.
fn flow_of(p: &[u8]) -> Vec<u8> {
    match parse(p) {
        Parsed::Flow(k) | Parsed::Mergeable(Info { key: k, .. }) => {
            let mut v = vec![u8::from(k.v6), k.proto];
            v.extend_from_slice(&k.addrs);
            v.extend_from_slice(&k.ports);
            v
        }
        Parsed::Other => b"other".to_vec(),
    }
}

/// Every input packet comes back out of the model segmentation, in order
/// within its flow; returns the output for further checks.
fn assert_lossless(c: &mut Coalescer, pkts: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let out = run(c, pkts);
    let mut back = Vec::new();
    for (h, b) in &out {
        if h.is_gso() {
            assert!(b.len() <= MAX_IP_LEN);
            assert!(b.len() - usize::from(h.hdr_len) > usize::from(h.gso_size));
            assert_eq!(h.flags, F_NEEDS_CSUM);
        } else {
            assert_eq!(*h, VnetHdr::PLAIN);
        }
        back.extend(segment(h, b));
    }
    assert_eq!(back.len(), pkts.len(), "packet count");
    let mut flows: Vec<Vec<u8>> = pkts.iter().map(|p| flow_of(p)).collect();
    flows.sort();
    flows.dedup();
    for f in flows {
        let a: Vec<&Vec<u8>> = pkts.iter().filter(|p| flow_of(p) == f).collect();
        let b: Vec<&Vec<u8>> = back.iter().filter(|p| flow_of(p) == f).collect();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "packet {i} of a flow differs");
        }
    }
    out
}

fn tcp_run(sport: u16, n: usize, len: usize) -> Vec<P> {
    (0..n)
        .map(|i| P::tcp(sport, 1_000_000 + (i * len) as u32, 100 + i as u16, len))
        .collect()
}

fn bytes(ps: &[P]) -> Vec<Vec<u8>> {
    ps.iter().map(P::bytes).collect()
}

#[test]
fn tcp_run_merges_into_one_gso_packet() {
    let mut ps = tcp_run(40000, 10, 1388);
    ps[9].payload.truncate(500);
    ps[9].psh = true;
    let pkts = bytes(&ps);
    let mut c = Coalescer::new(true);
    let out = assert_lossless(&mut c, &pkts);
    assert_eq!(out.len(), 1);
    let (h, b) = &out[0];
    assert_eq!(h.gso_type, GSO_TCPV4);
    assert_eq!(h.gso_size, 1388);
    assert_eq!(h.hdr_len, 20 + 32);
    assert_eq!((h.csum_start, h.csum_offset), (20, 16));
    assert_eq!(b.len(), 52 + 9 * 1388 + 500);
    assert_eq!(
        c.stats(),
        GroStats {
            packets_in: 10,
            packets_out: 1,
            merged_segments: 10,
            bad_checksum: 0
        }
    );
}

#[test]
fn ipv6_tcp_and_udp_merge() {
    let ps: Vec<P> = tcp_run(40000, 5, 1200).into_iter().map(P::v6).collect();
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.gso_type, GSO_TCPV6);
    let us: Vec<P> = (0..6).map(|i| P::udp(5000, 0, 1400, i).v6()).collect();
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&us));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.gso_type, out[0].0.csum_offset), (GSO_UDP_L4, 6));
}

#[test]
fn udp_v4_merges_only_when_enabled() {
    let us: Vec<P> = (0..6).map(|i| P::udp(5000, 300 + i, 64, i as u8)).collect();
    let pkts = bytes(&us);
    assert_eq!(assert_lossless(&mut Coalescer::new(true), &pkts).len(), 1);
    let out = assert_lossless(&mut Coalescer::new(false), &pkts);
    assert_eq!(out.len(), 6);
    assert!(out.iter().all(|(h, _)| *h == VnetHdr::PLAIN));
}

#[test]
fn a_shorter_udp_datagram_ends_the_run() {
    let mut us: Vec<P> = (0..6).map(|i| P::udp(5000, 300 + i, 100, 1)).collect();
    us[2].payload.truncate(50);
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&us));
    // [0, 1, 2 (short)] then [3, 4, 5].
    assert_eq!(out.len(), 2);
}

#[test]
fn interleaved_flows_merge_separately() {
    let a = tcp_run(40000, 8, 1000);
    let b = tcp_run(40001, 8, 1000);
    let mut ps = Vec::new();
    for (x, y) in a.into_iter().zip(b) {
        ps.push(x);
        ps.push(y);
    }
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
    assert_eq!(out.len(), 2);
}

#[test]
fn what_cannot_merge_passes_in_flow_order() {
    let mut ps = tcp_run(40000, 6, 1000);
    // A FIN in the middle: what came before is handed out before it.
    ps[3].fin = true;
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
    assert_eq!(out.len(), 3);
    assert!(out[0].0.is_gso() && !out[1].0.is_gso() && out[2].0.is_gso());
}

#[test]
fn header_differences_break_the_run() {
    type Edit = fn(&mut P);
    let edits: [(&str, Edit); 9] = [
        ("sequence gap", |p| p.seq += 1),
        ("IP ID gap", |p| p.id += 2),
        ("other ack", |p| p.ack += 1),
        ("other window", |p| p.window += 1),
        ("other timestamp", |p| p.ts = Some((1001, 2000))),
        ("no options", |p| p.ts = None),
        ("other TTL", |p| p.ttl = 63),
        ("other TOS", |p| p.tos = 4),
        ("DF clear", |p| p.df = false),
    ];
    for (what, edit) in edits {
        let mut ps = tcp_run(40000, 6, 1000);
        for p in &mut ps[3..] {
            // A gap (sequence, ID) at 3 only: consecutive after it.
            edit(p);
        }
        let out = assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
        assert_eq!(out.len(), 2, "{what}");
    }
}

#[test]
fn a_larger_segment_or_psh_ends_the_run() {
    let mut ps = tcp_run(40000, 6, 1000);
    ps[2].psh = true;
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
    assert_eq!(out.len(), 2);
    // A segment larger than the first cannot join it.
    let mut ps = tcp_run(40000, 3, 1000);
    ps[1].payload.push(0);
    ps[2].seq += 1;
    let out = assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
    assert_eq!(out.len(), 2);
}

#[test]
fn bad_checksums_pass_unchanged_and_are_counted() {
    let ps = tcp_run(40000, 6, 1000);
    let mut pkts = bytes(&ps);
    let last = pkts[3].len() - 1;
    pkts[3][last] ^= 0x55;
    let mut c = Coalescer::new(true);
    let out = assert_lossless(&mut c, &pkts);
    // [0..3] merged, 3 as it was, [4, 5] merged.
    assert_eq!(out.len(), 3);
    assert_eq!(out[1], (VnetHdr::PLAIN, pkts[3].clone()));
    assert_eq!(c.stats().bad_checksum, 1);
    // A bad IPv4 header checksum too.
    let mut pkts = bytes(&tcp_run(40000, 2, 1000));
    let mut ip = ipv4::Packet::new_unchecked(&mut pkts[1][..]);
    ip.set_checksum(ip.checksum() ^ 0x0100);
    assert_eq!(assert_lossless(&mut Coalescer::new(true), &pkts).len(), 2);
}

#[test]
fn limits_split_long_runs() {
    // 64 KiB: 60 segments of 1400 bytes do not fit in one packet.
    let pkts = bytes(&tcp_run(40000, 60, 1400));
    let out = assert_lossless(&mut Coalescer::new(true), &pkts);
    assert_eq!(out.len(), 2);
    // At most MAX_SEGMENTS segments.
    let pkts = bytes(&tcp_run(40000, 150, 100));
    let out = assert_lossless(&mut Coalescer::new(true), &pkts);
    assert_eq!(out.len(), 3);
}

#[test]
fn more_flows_than_slots_evict_the_oldest() {
    let mut ps = Vec::new();
    let runs: Vec<Vec<P>> = (0..20).map(|f| tcp_run(40000 + f, 4, 500)).collect();
    for i in 0..4 {
        for r in &runs {
            ps.push(r[i].clone());
        }
    }
    assert_lossless(&mut Coalescer::new(true), &bytes(&ps));
}

#[test]
fn non_tcp_udp_and_garbage_pass_through() {
    let mut icmp = P::udp(1, 1, 50, 0).bytes();
    ipv4::Packet::new_unchecked(&mut icmp[..]).set_protocol(1);
    let pkts = vec![
        icmp,
        vec![0x45],
        vec![],
        vec![0x60; 39],
        vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ],
    ];
    let mut out = Vec::new();
    let mut c = Coalescer::new(true);
    for p in &pkts {
        c.push(p, &mut |h, b| out.push((*h, b.to_vec())));
    }
    c.flush(&mut |h, b| out.push((*h, b.to_vec())));
    assert_eq!(out.len(), pkts.len());
    for ((h, b), p) in out.iter().zip(&pkts) {
        assert_eq!((*h, b), (VnetHdr::PLAIN, p));
    }
}

#[test]
fn disabled_passes_everything_as_it_comes() {
    let pkts = bytes(&tcp_run(40000, 6, 1000));
    let mut c = Coalescer::new(true);
    c.disable();
    let out = assert_lossless(&mut c, &pkts);
    assert_eq!(out.len(), 6);
    assert!(out.iter().all(|(h, _)| *h == VnetHdr::PLAIN));
}

#[test]
fn vnet_header_round_trips() {
    let h = VnetHdr {
        flags: 1,
        gso_type: 4,
        hdr_len: 72,
        gso_size: 1388,
        csum_start: 40,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::from_bytes(&h.to_bytes()), h);
    // Little-endian fields in order: flags, GSO type, header length, GSO
    // size (1388 = 0x056c), checksum start and offset.
    assert_eq!(h.to_bytes(), [1, 4, 72, 0, 0x6c, 0x05, 40, 0, 16, 0]);
}

/// Random mixes of flows, sizes and header changes: always lossless.
#[test]
fn random_streams_are_lossless() {
    let mut rng = XorShift::new(0x6a0);
    for round in 0..300 {
        let flows = 1 + rng.below_usize(12);
        let mut state: Vec<(u32, u16)> = (0..flows)
            .map(|f| (f as u32 * 77_777, f as u16 * 10))
            .collect();
        let mut pkts = Vec::new();
        for _ in 0..rng.range(1, 120) {
            let f = rng.below_usize(flows);
            let len = [1400, 1400, 1400, 700, 64, 1][rng.below_usize(6)];
            let (seq, id) = state[f];
            let mut p = if f % 3 == 2 {
                P::udp(6000 + f as u16, id, len, round as u8)
            } else {
                P::tcp(40000 + f as u16, seq, id, len)
            };
            p.v6 = f % 2 == 1;
            match rng.below(20) {
                0 => p.psh = true,
                1 => p.fin = true,
                2 => p.seq = p.seq.wrapping_add(1),
                3 => p.id = p.id.wrapping_add(5),
                4 => p.ts = Some((round, 0)),
                _ => {}
            }
            state[f] = (p.seq.wrapping_add(len as u32), p.id.wrapping_add(1));
            let mut b = p.bytes();
            if rng.below(50) == 0 {
                let at = rng.below_usize(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            pkts.push(b);
        }
        assert_lossless(&mut Coalescer::new(rng.below(4) != 0), &pkts);
    }
}
