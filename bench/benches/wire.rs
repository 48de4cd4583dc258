//! Frame parse: what the tunneler does with each received frame, against
//! `etherparse` on the same frames.
//!
//! - `frame_parse/sluice/<sizes>`: for each frame of a batch,
//!   `ethernet::Frame::new_checked`, `payload_offset` (skips VLAN tags),
//!   `ip::Packet::new_checked` on the rest, then the source and destination
//!   addresses.
//! - `frame_parse/etherparse/<sizes>`: `SlicedPacket::from_ethernet` on the
//!   same frames, then the same two addresses. This is a full L2-L4 slice
//!   (it also checks the IPv4 header length and slices UDP/TCP), so it does
//!   more than our two-field view: the ratio is what the view saves.
//!
//! A batch is [`BATCH`] frames cycling through four kinds (IPv4/UDP,
//! IPv4/TCP, IPv6/UDP, 802.1Q-tagged IPv4/UDP); `<sizes>` is one frame size
//! for all, or `mixed` (64 to 1514 bytes). Throughput is in frames.
//!
//! - `ip_packet/sluice/<sizes>`: the per-packet questions the gateway asks
//!   of an IP packet beyond its addresses, on the same frames' IP packets:
//!   `ip::Packet::new_checked`, `flow()` (protocol and ports: the TUN
//!   path's policy lookup), `udp()` (domain bypass looks for DNS in every
//!   packet) and `tcp()`. These read through the IPv4, IPv6, TCP and UDP
//!   views.
//! - `ip_packet/etherparse/<sizes>`: `SlicedPacket::from_ip` on the same
//!   packets, then the protocol, ports and payload length.
//!
//! - `checksum/sluice/<len>`: `checksum::add` then `fold` over `len`
//!   bytes (what verifying a TCP segment costs beyond its pseudo-header).
//! - `checksum/be_words/<len>`: the same sum read as big-endian 32-bit
//!   words, the loop `checksum::add` used before it read host-order words
//!   (the baseline in the same run).
use std::{hint::black_box, net::IpAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId};
use sluice_core::wire::{checksum, ethernet, ip};

/// Frames per batch (one `AF_XDP` RX batch).
const BATCH: usize = 64;

/// One frame of `kind` (0..4), `len` bytes long (or the kind's header
/// length if that is more).
fn frame(kind: usize, len: usize) -> Vec<u8> {
    const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const V4_SRC: [u8; 4] = [192, 0, 2, 10];
    const V4_DST: [u8; 4] = [203, 0, 113, 10];
    let v6_src: [u8; 16] = "2001:db8:1::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let v6_dst: [u8; 16] = "2001:db8:100::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let mut out = Vec::with_capacity(len);
    let payload = |hdr: usize| vec![0xab; len.saturating_sub(hdr)];
    match kind {
        0 => {
            let b = eth.ipv4(V4_SRC, V4_DST, 64).udp(40_000, 4789);
            let p = payload(b.size(0));
            b.write(&mut out, &p).unwrap();
        }
        1 => {
            let b = eth.ipv4(V4_SRC, V4_DST, 64).tcp(40_000, 443, 1, 65_535);
            let p = payload(b.size(0));
            b.write(&mut out, &p).unwrap();
        }
        2 => {
            let b = eth.ipv6(v6_src, v6_dst, 64).udp(40_000, 4789);
            let p = payload(b.size(0));
            b.write(&mut out, &p).unwrap();
        }
        _ => {
            let b = eth
                .single_vlan(VlanId::try_new(10).unwrap())
                .ipv4(V4_SRC, V4_DST, 64)
                .udp(40_000, 4789);
            let p = payload(b.size(0));
            b.write(&mut out, &p).unwrap();
        }
    }
    out
}

/// Our hot-path parse: returns the two addresses (or `None`).
#[inline]
fn parse_sluice(f: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let frame = ethernet::Frame::new_checked(f).ok()?;
    let (_ethertype, off) = frame.payload_offset().ok()?;
    let packet = ip::Packet::new_checked(&f[off..]).ok()?;
    Some((packet.src(), packet.dst()))
}

/// The etherparse equivalent.
#[inline]
fn parse_etherparse(f: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let sliced = SlicedPacket::from_ethernet(f).ok()?;
    match sliced.net? {
        NetSlice::Ipv4(s) => Some((
            s.header().source_addr().into(),
            s.header().destination_addr().into(),
        )),
        NetSlice::Ipv6(s) => Some((
            s.header().source_addr().into(),
            s.header().destination_addr().into(),
        )),
        NetSlice::Arp(_) => None,
    }
}

fn frame_parse(c: &mut Criterion) {
    const MIXED: [usize; 7] = [64, 128, 256, 512, 1024, 1280, 1514];
    let mut g = c.benchmark_group("frame_parse");
    g.throughput(Throughput::Elements(BATCH as u64));
    let batches: [(String, Vec<Vec<u8>>); 5] = [
        ("64".into(), (0..BATCH).map(|i| frame(i % 4, 64)).collect()),
        (
            "512".into(),
            (0..BATCH).map(|i| frame(i % 4, 512)).collect(),
        ),
        (
            "1514".into(),
            (0..BATCH).map(|i| frame(i % 4, 1514)).collect(),
        ),
        (
            "9014".into(),
            (0..BATCH).map(|i| frame(i % 4, 9014)).collect(),
        ),
        (
            "mixed".into(),
            (0..BATCH)
                .map(|i| frame(i % 4, MIXED[i % MIXED.len()]))
                .collect(),
        ),
    ];
    for (name, frames) in &batches {
        // Both parsers must agree on every frame, or the comparison is moot.
        for f in frames {
            let ours = parse_sluice(f);
            assert!(ours.is_some(), "sluice parses a {}-byte frame", f.len());
            assert_eq!(ours, parse_etherparse(f));
        }
        g.bench_function(format!("sluice/{name}"), |b| {
            b.iter(|| {
                for f in black_box(frames) {
                    black_box(parse_sluice(f));
                }
            });
        });
        g.bench_function(format!("etherparse/{name}"), |b| {
            b.iter(|| {
                for f in black_box(frames) {
                    black_box(parse_etherparse(f));
                }
            });
        });
    }
    g.finish();
}

/// What the gateway asks of an IP packet: protocol, ports, and the UDP
/// or TCP payload's length.
#[inline]
fn ask_sluice(p: &[u8]) -> Option<(u8, u16, u16, usize)> {
    let packet = ip::Packet::new_checked(p).ok()?;
    let (proto, sport, dport) = packet.flow();
    let len = match packet.udp() {
        Some((_, _, payload)) => payload.len(),
        None => packet.tcp().map_or(0, |s| s.payload.len()),
    };
    Some((proto, sport, dport, len))
}

/// The etherparse equivalent.
#[inline]
fn ask_etherparse(p: &[u8]) -> Option<(u8, u16, u16, usize)> {
    let sliced = SlicedPacket::from_ip(p).ok()?;
    let proto = match sliced.net? {
        NetSlice::Ipv4(s) => s.header().protocol().0,
        NetSlice::Ipv6(s) => s.header().next_header().0,
        NetSlice::Arp(_) => return None,
    };
    Some(match sliced.transport? {
        TransportSlice::Udp(u) => (
            proto,
            u.source_port(),
            u.destination_port(),
            u.payload().len(),
        ),
        TransportSlice::Tcp(t) => (
            proto,
            t.source_port(),
            t.destination_port(),
            t.payload().len(),
        ),
        _ => return None,
    })
}

fn ip_packet(c: &mut Criterion) {
    const MIXED: [usize; 7] = [64, 128, 256, 512, 1024, 1280, 1514];
    let mut g = c.benchmark_group("ip_packet");
    g.throughput(Throughput::Elements(BATCH as u64));
    // The IP packets of the frames (Ethernet and tags stripped).
    let ip_of = |f: Vec<u8>| {
        let frame = ethernet::Frame::new_checked(&f[..]).unwrap();
        let (_, off) = frame.payload_offset().unwrap();
        f[off..].to_vec()
    };
    let batches: [(&str, Vec<Vec<u8>>); 3] = [
        ("64", (0..BATCH).map(|i| ip_of(frame(i % 4, 64))).collect()),
        (
            "1514",
            (0..BATCH).map(|i| ip_of(frame(i % 4, 1514))).collect(),
        ),
        (
            "mixed",
            (0..BATCH)
                .map(|i| ip_of(frame(i % 4, MIXED[i % MIXED.len()])))
                .collect(),
        ),
    ];
    for (name, pkts) in &batches {
        for p in pkts {
            let ours = ask_sluice(p);
            assert!(ours.is_some(), "sluice reads a {}-byte packet", p.len());
            assert_eq!(ours, ask_etherparse(p));
        }
        g.bench_function(format!("sluice/{name}"), |b| {
            b.iter(|| {
                for p in black_box(pkts) {
                    black_box(ask_sluice(p));
                }
            });
        });
        g.bench_function(format!("etherparse/{name}"), |b| {
            b.iter(|| {
                for p in black_box(pkts) {
                    black_box(ask_etherparse(p));
                }
            });
        });
    }
    g.finish();
}

/// The one's-complement sum as `checksum::add` computed it before it read
/// host-order words: one byte swap per 32-bit word.
fn be_words(sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    let mut acc = sum;
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    match *chunks.remainder() {
        [a, b, c] => acc + u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc + u64::from(u16::from_be_bytes([a, b])),
        [a] => acc + (u64::from(a) << 8),
        _ => acc,
    }
}

fn checksum_sum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [40usize, 576, 1400, 9000] {
        let data: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
        assert_eq!(
            checksum::fold(checksum::add(0, &data)),
            checksum::fold(be_words(0, &data))
        );
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("sluice/{len}"), |b| {
            b.iter(|| checksum::fold(checksum::add(0, black_box(&data))))
        });
        g.bench_function(format!("be_words/{len}"), |b| {
            b.iter(|| checksum::fold(be_words(0, black_box(&data))))
        });
    }
    g.finish();
}

criterion_group!(wire, frame_parse, ip_packet, checksum_sum);
criterion_main!(wire);
