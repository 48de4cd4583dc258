//! The edge's receive coalescing ([`sluice_core::gro::Coalescer`]): a batch of
//! one flow's TCP segments merged into GSO packets, against the floor of
//! the same work (copying the payloads into one buffer).
//!
//! - `gro/merge/<size>`: [`BATCH`] TCP segments of `size` bytes (IPv4,
//!   timestamps, consecutive sequence numbers and IP IDs, valid checksums)
//!   through `push`, then `flush`; the callback only takes the length (the
//!   TUN write is what merging saves, and it is not measured here).
//! - `gro/copy/<size>`: the same payload bytes copied into one buffer.
//! - `gro/merge_v6/<size>`: as `merge`, over IPv6.
//! - `gro/merge_udp/<size>`: [`BATCH`] datagrams of one IPv4 UDP flow
//!   (valid checksums), merged eight at a time (`MAX_UDP_SEGMENTS`).
//!
//! `Throughput::Elements` is packets, so the ratio of the two is the
//! per-packet cost of the checks (checksums verified, headers compared)
//! over a plain copy.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, TcpOptionElement,
};
use sluice_core::gro::Coalescer;

/// Segments per batch (about what one read of the tunnel delivers).
const BATCH: usize = 64;
/// IP packet sizes.
const SIZES: [usize; 3] = [128, 576, 1452];

/// What a batch carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    TcpV4,
    TcpV6,
    UdpV4,
}

/// `BATCH` consecutive segments (or datagrams) of one flow, `size` bytes
/// each.
fn segments(kind: Kind, size: usize) -> Vec<Vec<u8>> {
    let headers = match kind {
        Kind::TcpV4 => 20 + 32,
        Kind::TcpV6 => 40 + 32,
        Kind::UdpV4 => 20 + 8,
    };
    let payload_len = size - headers;
    (0..BATCH)
        .map(|i| {
            let proto = if kind == Kind::UdpV4 {
                IpNumber::UDP
            } else {
                IpNumber::TCP
            };
            let ip = if kind == Kind::TcpV6 {
                let mut dst = [0u8; 16];
                dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                let mut src = dst;
                (src[15], dst[5], dst[15]) = (10, 0x64, 10);
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::try_new(0x12345).expect("label"),
                    payload_length: 0,
                    next_header: proto,
                    hop_limit: 64,
                    source: src,
                    destination: dst,
                };
                IpHeaders::Ipv6(h, Ipv6Extensions::default())
            } else {
                let mut h = Ipv4Header::new(0, 64, proto, [192, 0, 2, 10], [203, 0, 113, 10])
                    .expect("header");
                h.identification = 100 + i as u16;
                h.dont_fragment = true;
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            };
            let payload: Vec<u8> = (0..payload_len).map(|b| (b + i) as u8).collect();
            let mut out = Vec::with_capacity(size);
            if kind == Kind::UdpV4 {
                let builder = PacketBuilder::ip(ip).udp(40000, 4789);
                builder.write(&mut out, &payload).expect("write");
            } else {
                let builder = PacketBuilder::ip(ip)
                    .tcp(40000, 443, 1_000 + (i * payload_len) as u32, 502)
                    .ack(7777)
                    .options(&[
                        TcpOptionElement::Noop,
                        TcpOptionElement::Noop,
                        TcpOptionElement::Timestamp(1000, 2000),
                    ])
                    .expect("options");
                builder.write(&mut out, &payload).expect("write");
            }
            assert_eq!(out.len(), size);
            out
        })
        .collect()
}

/// `gro/<name>/<size>`: `pkts` through `push`, then `flush`; at most
/// `max_out` packets come out (every packet merges).
fn merge(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    size: usize,
    pkts: &[Vec<u8>],
    max_out: usize,
) {
    let mut co = Coalescer::new(true);
    let mut n = 0;
    for p in pkts {
        co.push(p, &mut |_, _| n += 1);
    }
    co.flush(&mut |_, _| n += 1);
    assert!(n <= max_out, "{name}/{size}: {n} packets out of {BATCH}");
    group.bench_function(format!("{name}/{size}"), |b| {
        b.iter(|| {
            let mut bytes = 0;
            for p in black_box(pkts) {
                co.push(p, &mut |_, b| bytes += b.len());
            }
            co.flush(&mut |_, b| bytes += b.len());
            bytes
        });
    });
}

fn gro(c: &mut Criterion) {
    let mut group = c.benchmark_group("gro");
    group.throughput(Throughput::Elements(BATCH as u64));
    for size in SIZES {
        let pkts = segments(Kind::TcpV4, size);
        // Every segment merges: one or two GSO packets per batch.
        merge(&mut group, "merge", size, &pkts, 2);
        let mut buf = vec![0u8; 65_536 * 2];
        group.bench_function(format!("copy/{size}"), |b| {
            b.iter(|| {
                let mut at = 52;
                for p in black_box(&pkts) {
                    let payload = &p[52..];
                    buf[at..at + payload.len()].copy_from_slice(payload);
                    at += payload.len();
                }
                black_box(&buf);
                at
            });
        });
        merge(
            &mut group,
            "merge_v6",
            size,
            &segments(Kind::TcpV6, size),
            2,
        );
        merge(
            &mut group,
            "merge_udp",
            size,
            &segments(Kind::UdpV4, size),
            8,
        );
    }
    group.finish();
}

criterion_group!(benches, gro);
criterion_main!(benches);
