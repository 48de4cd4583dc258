//! Bypass classifier: longest-prefix match of a batch of addresses, ours
//! (`sluice_core::lpm::Lpm`, DIR-24-8 / Poptrie) against `prefix-trie`'s
//! `PrefixMap` on the same prefixes and addresses.
//!
//! - `classify_v4/{sluice,sluice_batch,prefix_trie}/{1k,100k}` and
//!   `classify_v6/{sluice,sluice_batch,prefix_trie}/{1k,100k}`: 4096
//!   lookups per iteration, `Throughput::Elements`. `sluice` calls
//!   `lookup_v4` / `lookup_v6` once per address, as `prefix_trie` does;
//!   `sluice_batch` passes the batch to `lookup_v4_batch` /
//!   `lookup_v6_batch`, which overlap lookups.
//! - Tables are seeded random prefixes with a realistic length mix (v4:
//!   mostly /16–/24, some /8–/15 and /25–/32; v6: in `2000::/3`, mostly
//!   /32–/64 with many /48, some /128). Values come from 64 actions.
//! - Three addresses in four fall inside a random prefix (random host bits),
//!   one in four is uniformly random, so hits and misses both count.
//!
//! Table memory and build time are printed once per case on stderr.
use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prefix_trie::PrefixMap;
use sluice_core::lpm::Lpm;
use sluice_core::net::Prefix;

const BATCH: usize = 4096;
const SIZES: [(usize, &str); 2] = [(1_000, "1k"), (100_000, "100k")];

use sluice_core::testutil::XorShift as Rng;

fn v4_len(rng: &mut Rng) -> u8 {
    let len = match rng.next_u64() % 100 {
        0..50 => 24,
        50..75 => rng.range(16, 23),
        75..88 => rng.range(8, 15),
        _ => rng.range(25, 32),
    };
    len as u8
}

fn v6_len(rng: &mut Rng) -> u8 {
    let len = match rng.next_u64() % 100 {
        0..40 => 48,
        40..80 => rng.range(32, 64),
        80..90 => 128,
        _ => rng.range(20, 31),
    };
    len as u8
}

fn mask(width: u32, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX >> (128 - width)) & !(u128::MAX >> (128 - width + u32::from(len)))
    }
}

/// `n` prefixes as `(network, len)` in `width`-bit space, values 0..64.
fn table(rng: &mut Rng, v6: bool, n: usize) -> Vec<(u128, u8, u32)> {
    (0..n)
        .map(|_| {
            if v6 {
                let len = v6_len(rng);
                let addr = (0x2000u128 << 112) | (rng.u128() >> 3);
                (addr & mask(128, len), len, (rng.next_u64() % 64) as u32)
            } else {
                let len = v4_len(rng);
                let addr = u128::from(rng.next_u64() as u32);
                (addr & mask(32, len), len, (rng.next_u64() % 64) as u32)
            }
        })
        .collect()
}

fn addresses(rng: &mut Rng, width: u32, routes: &[(u128, u8, u32)]) -> Vec<u128> {
    let all = u128::MAX >> (128 - width);
    (0..BATCH)
        .map(|i| {
            if i % 4 == 3 {
                rng.u128() & all
            } else {
                let (net, len, _) = routes[(rng.next_u64() % routes.len() as u64) as usize];
                net | (rng.u128() & all & !mask(width, len))
            }
        })
        .collect()
}

fn classify_v4(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify_v4");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (n, name) in SIZES {
        let mut rng = Rng::new(0x5eed_0004 ^ n as u64);
        let routes = table(&mut rng, false, n);
        let addrs: Vec<u32> = addresses(&mut rng, 32, &routes)
            .into_iter()
            .map(|a| a as u32)
            .collect();
        let entries: Vec<(Prefix, u32)> = routes
            .iter()
            .map(|&(a, len, v)| (Prefix::new(IpAddr::V4(Ipv4Addr::from(a as u32)), len), v))
            .collect();
        let start = Instant::now();
        let ours = Lpm::build_with(&entries, &sluice_sys::mem::HugePages).expect("table fits");
        eprintln!(
            "classify_v4/{name}: build {:?}, {} MiB",
            start.elapsed(),
            ours.memory_bytes() >> 20
        );
        let mut theirs: PrefixMap<(u32, u8), u32> = PrefixMap::new();
        for &(a, len, v) in &routes {
            theirs.insert((a as u32, len), v);
        }
        for &a in &addrs {
            assert_eq!(
                ours.lookup_v4(a),
                theirs.get_lpm(&(a, 32)).map(|(_, &v)| v),
                "{}",
                Ipv4Addr::from(a)
            );
        }
        group.bench_function(format!("sluice/{name}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &a in black_box(&addrs) {
                    acc = acc.wrapping_add(ours.lookup_v4(a).unwrap_or(u32::MAX));
                }
                acc
            });
        });
        let mut out = vec![None; BATCH];
        group.bench_function(format!("sluice_batch/{name}"), |b| {
            b.iter(|| {
                ours.lookup_v4_batch(black_box(&addrs), &mut out);
                out.iter()
                    .fold(0u32, |acc, v| acc.wrapping_add(v.unwrap_or(u32::MAX)))
            });
        });
        group.bench_function(format!("prefix_trie/{name}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &a in black_box(&addrs) {
                    acc = acc.wrapping_add(theirs.get_lpm(&(a, 32)).map_or(u32::MAX, |(_, &v)| v));
                }
                acc
            });
        });
    }
    group.finish();
}

fn classify_v6(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify_v6");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (n, name) in SIZES {
        let mut rng = Rng::new(0x5eed_0006 ^ n as u64);
        let routes = table(&mut rng, true, n);
        let addrs = addresses(&mut rng, 128, &routes);
        let entries: Vec<(Prefix, u32)> = routes
            .iter()
            .map(|&(a, len, v)| (Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), len), v))
            .collect();
        let start = Instant::now();
        let ours = Lpm::build_with(&entries, &sluice_sys::mem::HugePages).expect("table fits");
        eprintln!(
            "classify_v6/{name}: build {:?}, {} KiB",
            start.elapsed(),
            ours.memory_bytes() >> 10
        );
        let mut theirs: PrefixMap<(u128, u8), u32> = PrefixMap::new();
        for &(a, len, v) in &routes {
            theirs.insert((a, len), v);
        }
        for &a in &addrs {
            assert_eq!(
                ours.lookup_v6(a),
                theirs.get_lpm(&(a, 128)).map(|(_, &v)| v),
                "{}",
                Ipv6Addr::from(a)
            );
        }
        group.bench_function(format!("sluice/{name}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &a in black_box(&addrs) {
                    acc = acc.wrapping_add(ours.lookup_v6(a).unwrap_or(u32::MAX));
                }
                acc
            });
        });
        let mut out = vec![None; BATCH];
        ours.lookup_v6_batch(&addrs, &mut out);
        for (&a, &o) in addrs.iter().zip(&out) {
            assert_eq!(o, ours.lookup_v6(a), "{}", Ipv6Addr::from(a));
        }
        group.bench_function(format!("sluice_batch/{name}"), |b| {
            b.iter(|| {
                ours.lookup_v6_batch(black_box(&addrs), &mut out);
                out.iter()
                    .fold(0u32, |acc, v| acc.wrapping_add(v.unwrap_or(u32::MAX)))
            });
        });
        group.bench_function(format!("prefix_trie/{name}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &a in black_box(&addrs) {
                    acc = acc.wrapping_add(theirs.get_lpm(&(a, 128)).map_or(u32::MAX, |(_, &v)| v));
                }
                acc
            });
        });
    }
    group.finish();
}

criterion_group!(classify, classify_v4, classify_v6);
criterion_main!(classify);
