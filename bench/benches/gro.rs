//! The edge's receive coalescing ([`sluice_core::gro::Coalescer`]): a batch of
//! one flow's TCP segments merged into GSO packets, against the floor of
//! the same work (copying the payloads into one buffer).
//!
//! - `gro/merge/<size>`: [`BATCH`] TCP segments of `size` bytes (IPv4,
//!   timestamps, consecutive sequence numbers and IP IDs, valid checksums)
//!   through `push`, then `flush`; the callback only takes the length (the
//!   TUN write is what merging saves, and it is not measured here).
//! - `gro/copy/<size>`: the same payload bytes copied into one buffer.
//!
//! `Throughput::Elements` is packets, so the ratio of the two is the
//! per-packet cost of the checks (checksums verified, headers compared)
//! over a plain copy.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, PacketBuilder, TcpOptionElement,
};
use sluice_core::gro::Coalescer;

/// Segments per batch (about what one read of the tunnel delivers).
const BATCH: usize = 64;
/// IP packet sizes.
const SIZES: [usize; 3] = [128, 576, 1452];

/// `BATCH` consecutive segments of one flow, `size` bytes each.
fn segments(size: usize) -> Vec<Vec<u8>> {
    let payload_len = size - 20 - 32;
    (0..BATCH)
        .map(|i| {
            let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, [192, 0, 2, 10], [203, 0, 113, 10])
                .expect("header");
            ip.identification = 100 + i as u16;
            ip.dont_fragment = true;
            let payload: Vec<u8> = (0..payload_len).map(|b| (b + i) as u8).collect();
            let builder = PacketBuilder::ip(IpHeaders::Ipv4(ip, Ipv4Extensions::default()))
                .tcp(40000, 443, 1_000 + (i * payload_len) as u32, 502)
                .ack(7777)
                .options(&[
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::Timestamp(1000, 2000),
                ])
                .expect("options");
            let mut out = Vec::with_capacity(builder.size(payload.len()));
            builder.write(&mut out, &payload).expect("write");
            assert_eq!(out.len(), size);
            out
        })
        .collect()
}

fn gro(c: &mut Criterion) {
    let mut group = c.benchmark_group("gro");
    group.throughput(Throughput::Elements(BATCH as u64));
    for size in SIZES {
        let pkts = segments(size);
        let mut co = Coalescer::new(true);
        // Every segment merges: one or two GSO packets per batch.
        let mut n = 0;
        for p in &pkts {
            co.push(p, &mut |_, _| n += 1);
        }
        co.flush(&mut |_, _| n += 1);
        assert!(n <= 2, "{size}: {n} packets out of {BATCH}");
        group.bench_function(format!("merge/{size}"), |b| {
            b.iter(|| {
                let mut bytes = 0;
                for p in black_box(&pkts) {
                    co.push(p, &mut |_, b| bytes += b.len());
                }
                co.flush(&mut |_, b| bytes += b.len());
                bytes
            });
        });
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
    }
    group.finish();
}

criterion_group!(benches, gro);
criterion_main!(benches);
