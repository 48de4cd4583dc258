//! The policy compiler and the compiled tables' lookup.
//!
//! - `policy_compile/{1k,10k}`: `Tables::compile` of a policy with 4
//!   profiles and 8 rules, 1,000 or 10,000 destination entries in all
//!   (random IPv4 and IPv6 prefixes, one in ten with a port, half of those
//!   with a protocol; inclusions and exclusions), the userspace part of a
//!   swap (writing the kernel's idle slot comes on top: the lab benchmark
//!   measures the whole swap).
//! - `policy_lookup/{compiled,reference}/{1k,10k}`: 4096 flows per
//!   iteration (`Throughput::Elements`), the compiled tables' `lookup`
//!   (what endpoint mode's userspace path runs per packet, and what the
//!   classifier's maps encode) against the reference evaluator
//!   (`eval::selection` + `eval::decide`: a linear scan of the rules and
//!   entries, what `sluice policy explain` runs). Flows: three in four to a
//!   destination inside a random entry, from sources spread over the
//!   rules' subnets.
use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_core::net::Prefix;
use sluice_core::policy::{
    Entry, Match, Policy, Profile, Proto, Rule,
    compile::Tables,
    eval::{self, Flow},
};
use sluice_core::testutil::XorShift as Rng;

const FLOWS: usize = 4096;
const PORTS: [u16; 6] = [22, 53, 80, 443, 5060, 8443];

fn random_entry(r: &mut Rng) -> Entry {
    let v6 = r.next_u64().is_multiple_of(4);
    let prefix = if v6 {
        let a = (0x2001_0db8_u128 << 96) | (u128::from(r.next_u64()) << 32);
        Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), r.range(32, 64) as u8)
    } else {
        let a = 0xc000_0000 | (r.next_u64() as u32 & 0x3fff_ffff);
        Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), r.range(12, 32) as u8)
    };
    let port = (r.next_u64().is_multiple_of(10)).then(|| PORTS[(r.next_u64() % 6) as usize]);
    let proto = port.and_then(|_| {
        r.next_u64()
            .is_multiple_of(2)
            .then(|| [Proto::TCP, Proto::UDP][(r.next_u64() % 2) as usize])
    });
    Entry {
        prefix,
        port,
        proto,
    }
}

fn policy(entries: usize) -> Policy {
    let mut r = Rng::new(0x0090_11c7);
    let mut profiles: Vec<Profile> = (0..4)
        .map(|i| Profile::with_defaults(&format!("p{i}"), 0))
        .collect();
    for n in 0..entries {
        let p = &mut profiles[n % 4];
        let e = random_entry(&mut r);
        if r.next_u64().is_multiple_of(3) {
            p.include.push(e);
        } else {
            p.exclude.push(e);
        }
    }
    let rules = (0..8u8)
        .map(|i| Rule {
            matches: Match::Subnet(Prefix::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, i * 32)),
                27,
            )),
            profile: usize::from(i % 4),
        })
        .collect();
    Policy::new(profiles, rules)
}

fn flows(p: &Policy) -> Vec<Flow> {
    let mut r = Rng::new(0xf10e);
    let entries: Vec<&Entry> = p
        .profiles
        .iter()
        .flat_map(|x| x.include.iter().chain(&x.exclude))
        .collect();
    (0..FLOWS)
        .map(|_| {
            let e = entries[(r.next_u64() as usize) % entries.len()];
            let host = r.next_u64();
            let dst = match (e.prefix.addr(), r.next_u64() % 4) {
                (_, 0) => IpAddr::V4(Ipv4Addr::from(r.next_u64() as u32)),
                (IpAddr::V4(a), _) => {
                    let keep = u32::MAX
                        .checked_shl(32 - u32::from(e.prefix.len()))
                        .unwrap_or(0);
                    IpAddr::V4(Ipv4Addr::from(
                        (u32::from(a) & keep) | (host as u32 & !keep),
                    ))
                }
                (IpAddr::V6(a), _) => {
                    let keep = u128::MAX
                        .checked_shl(128 - u32::from(e.prefix.len()))
                        .unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(
                        (u128::from(a) & keep) | (u128::from(host) & !keep),
                    ))
                }
            };
            let src = if dst.is_ipv4() {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, r.next_u64() as u8))
            } else {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10))
            };
            let dport = PORTS[(r.next_u64() % 6) as usize];
            let proto = [Proto::TCP, Proto::UDP][(r.next_u64() % 2) as usize];
            Flow::new(src, dst, 40_000, dport, proto)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (n, name) in [(1_000, "1k"), (10_000, "10k")] {
        let p = policy(n);
        let tables = Tables::compile(&p).expect("the bench policy compiles");
        eprintln!(
            "policy {name}: {} destination trie nodes in the compiled tables",
            tables.dest_nodes()
        );
        c.benchmark_group("policy_compile")
            .sample_size(20)
            .bench_function(name, |b| {
                b.iter(|| Tables::compile(black_box(&p)).map(|t| t.dest_nodes()));
            });
        let fl = flows(&p);
        let mut g = c.benchmark_group("policy_lookup");
        g.throughput(Throughput::Elements(FLOWS as u64));
        g.bench_function(format!("compiled/{name}"), |b| {
            b.iter(|| {
                for f in &fl {
                    black_box(tables.lookup(f.src, f.dst, f.sport, f.dport, f.proto));
                }
            });
        });
        g.sample_size(10)
            .bench_function(format!("reference/{name}"), |b| {
                b.iter(|| {
                    for f in &fl {
                        let sel = eval::selection(&p, f);
                        black_box(eval::decide(&p, sel.profile, f).verdict);
                    }
                });
            });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
