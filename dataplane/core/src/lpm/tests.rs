use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering},
};

use super::*;

use crate::testutil::XorShift as Rng;

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// The reference: a linear scan, longest match, last duplicate wins.
fn naive(entries: &[(Prefix, u32)], addr: IpAddr) -> Option<u32> {
    let mut best: Option<(u8, u32)> = None;
    for &(prefix, value) in entries {
        if prefix.contains(addr) && best.is_none_or(|(len, _)| prefix.len() >= len) {
            best = Some((prefix.len(), value));
        }
    }
    best.map(|(_, v)| v)
}

#[test]
fn edge_cases_v4() {
    let entries = [
        (p("0.0.0.0/0"), 1),
        (p("198.0.0.0/8"), 2),
        (p("198.18.2.0/24"), 3),
        (p("198.18.2.128/25"), 4),
        (p("198.18.2.200/32"), 5),
        (p("198.18.3.0/24"), 6),
        (p("198.18.3.0/24"), 7), // duplicate: the last one wins
        (p("255.255.255.255/32"), 8),
    ];
    let t = Lpm::build(&entries).unwrap();
    let at = |s: &str| t.lookup(s.parse().unwrap());
    assert_eq!(at("1.2.3.4"), Some(1));
    assert_eq!(at("198.200.0.1"), Some(2));
    assert_eq!(at("198.18.2.0"), Some(3));
    assert_eq!(at("198.18.2.127"), Some(3));
    assert_eq!(at("198.18.2.128"), Some(4));
    assert_eq!(at("198.18.2.199"), Some(4));
    assert_eq!(at("198.18.2.200"), Some(5));
    assert_eq!(at("198.18.2.201"), Some(4));
    assert_eq!(at("198.18.2.255"), Some(4));
    assert_eq!(at("198.18.1.255"), Some(2));
    assert_eq!(at("198.18.3.1"), Some(7));
    assert_eq!(at("255.255.255.255"), Some(8));
    assert_eq!(at("255.255.255.254"), Some(1));
    // No IPv6 prefixes: no IPv6 match, and no IPv6 table.
    assert_eq!(at("::1"), None);
    assert_eq!(t.v6.memory_bytes(), 0);
}

#[test]
fn edge_cases_v6() {
    let entries = [
        (p("::/0"), 1),
        (p("2001:db8::/32"), 2),
        (p("2001:db8:1::/48"), 3),
        (p("2001:db8:1::1/128"), 4),
        (p("2001:db8:1:2::/64"), 5),
        (p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 6),
        (p("2001::/16"), 7),
        (p("2001:db8:1::8/125"), 8),
    ];
    let t = Lpm::build(&entries).unwrap();
    let at = |s: &str| t.lookup(s.parse().unwrap());
    assert_eq!(at("::"), Some(1));
    assert_eq!(at("2001:1::1"), Some(7));
    assert_eq!(at("2001:db8::1"), Some(2));
    assert_eq!(at("2001:db8:1::"), Some(3));
    assert_eq!(at("2001:db8:1::1"), Some(4));
    assert_eq!(at("2001:db8:1::2"), Some(3));
    assert_eq!(at("2001:db8:1::8"), Some(8));
    assert_eq!(at("2001:db8:1::f"), Some(8));
    assert_eq!(at("2001:db8:1::10"), Some(3));
    assert_eq!(at("2001:db8:1:2:ffff::"), Some(5));
    assert_eq!(at("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(6));
    assert_eq!(at("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), Some(1));
    assert_eq!(at("1.2.3.4"), None);
}

#[test]
fn empty_and_limits() {
    let t: Lpm<u32> = Lpm::build(&[]).unwrap();
    assert_eq!(t.lookup(IpAddr::V4(Ipv4Addr::BROADCAST)), None);
    assert_eq!(t.lookup(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
    assert!(t.memory_bytes() < 64);

    let many: Vec<_> = (0..=MAX_VALUES as u32)
        .map(|i| (Prefix::new(IpAddr::V4(Ipv4Addr::from(i << 8)), 24), i))
        .collect();
    assert_eq!(
        Lpm::build(&many).unwrap_err(),
        LpmError::TooManyValues { max: MAX_VALUES }
    );
    assert!(Lpm::build(&many[..MAX_VALUES]).is_ok());
}

/// A random length from `lens` (weights), and a network drawn near one of a
/// few `bases` so that prefixes nest and overlap.
fn random_table(rng: &mut Rng, v6: bool, n: usize) -> Vec<(Prefix, u32)> {
    let bases: Vec<u128> = (0..8).map(|_| rng.u128()).collect();
    let width: u32 = if v6 { 128 } else { 32 };
    (0..n)
        .map(|_| {
            let len = rng.below(u64::from(width) + 1) as u8;
            let base = bases[rng.below(bases.len() as u64) as usize];
            // Keep the top 8+ bits of a base, randomize the rest.
            let k = 8 + rng.below(u64::from(width) - 8) as u32;
            let addr = (base >> (128 - width)) ^ (rng.u128() >> (128 - width) >> k);
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::from(addr))
            } else {
                IpAddr::V4(Ipv4Addr::from(addr as u32))
            };
            (Prefix::new(ip, len), rng.below(50) as u32)
        })
        .collect()
}

/// Addresses inside, at the edges of, and just outside the table's
/// prefixes, plus some uniformly random ones.
fn probes(rng: &mut Rng, entries: &[(Prefix, u32)], n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let (prefix, _) = entries[rng.below(entries.len() as u64) as usize];
            let width: u32 = if prefix.addr().is_ipv4() { 32 } else { 128 };
            let host = if u32::from(prefix.len()) == width {
                0
            } else {
                u128::MAX >> (128 - width + u32::from(prefix.len()))
            };
            let net = match prefix.addr() {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let addr = match i % 5 {
                0 => net,
                1 => net | host,
                2 => (net | host).wrapping_add(1),
                3 => net.wrapping_sub(1),
                _ if i % 10 == 4 => rng.u128(),
                _ => net | (rng.u128() & host),
            };
            if width == 32 {
                IpAddr::V4(Ipv4Addr::from(addr as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from(addr))
            }
        })
        .collect()
}

#[test]
fn matches_naive_on_random_tables() {
    for seed in 1..=6u64 {
        let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut entries = random_table(&mut rng, false, 400);
        entries.extend(random_table(&mut rng, true, 400));
        entries.push((p("0.0.0.0/0"), 1000));
        if seed % 2 == 0 {
            entries.push((p("::/0"), 1001));
        }
        let t = Lpm::build(&entries).unwrap();
        for addr in probes(&mut rng, &entries, 20_000) {
            assert_eq!(t.lookup(addr), naive(&entries, addr), "seed {seed}, {addr}");
        }
    }
}

#[test]
fn readers_never_see_a_torn_table() {
    // Table `k` maps every probe to `k`; a reader must see one `k` per
    // snapshot, and `k` never goes back.
    fn table(k: u32) -> Lpm<u32> {
        let entries = [
            (p("0.0.0.0/0"), k),
            (p("198.0.0.0/8"), k),
            (p("198.18.2.3/32"), k),
            (p("::/0"), k),
            (p("2001:db8::/32"), k),
        ];
        Lpm::build(&entries).unwrap()
    }
    let swap = Swap::new(table(0));
    let done = AtomicBool::new(false);
    let probes: Vec<IpAddr> = ["1.1.1.1", "198.9.9.9", "198.18.2.3", "::1", "2001:db8::5"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    std::thread::scope(|s| {
        let mut reader = swap.reader();
        let (done, probes) = (&done, &probes);
        let r = s.spawn(move || {
            let (mut last, mut seen) = (0, 0u32);
            loop {
                // Read after seeing `done`, so the last store is visible.
                let finished = done.load(Ordering::Acquire) && seen >= 1000;
                let t = reader.get();
                let k = t.lookup(probes[0]).unwrap();
                for &a in probes {
                    assert_eq!(t.lookup(a), Some(k));
                }
                assert!(k >= last);
                last = k;
                seen += 1;
                if finished {
                    break;
                }
            }
            last
        });
        for k in 1..=20 {
            swap.store(table(k));
        }
        done.store(true, Ordering::Release);
        assert_eq!(r.join().unwrap(), 20);
    });
    assert_eq!(swap.load().lookup(probes[1]), Some(20));
}

#[test]
fn batches_match_single_lookups() {
    let mut rng = Rng::new(7);
    let entries = random_table(&mut rng, false, 300);
    let t = Lpm::build(&entries).unwrap();
    let addrs = probes(&mut rng, &entries, 1003);
    assert!(!addrs.len().is_multiple_of(BATCH));
    let v4: Vec<u32> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(u32::from(*a)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut out = vec![Some(u32::MAX); addrs.len()];
    t.lookup_v4_batch(&v4, &mut out);
    for (i, &a) in v4.iter().enumerate() {
        assert_eq!(out[i], t.lookup_v4(a));
    }
    // An empty family answers `None` in batches too.
    let only_v6 = Lpm::build(&[(p("2001:db8::/32"), 1)]).unwrap();
    only_v6.lookup_v4_batch(&v4, &mut out);
    assert!(out[..v4.len()].iter().all(Option::is_none));
}

/// `lookup_v6_batch` of `addrs` equals `lookup_v6` of each, for lengths
/// that are and are not multiples of `BATCH_V6`.
fn assert_v6_batch_matches(t: &Lpm<u32>, addrs: &[u128], what: &str) {
    for n in [0, 1, BATCH_V6 - 1, BATCH_V6, BATCH_V6 + 3, addrs.len()] {
        let addrs = &addrs[..n.min(addrs.len())];
        let mut out = vec![Some(u32::MAX); addrs.len() + 2];
        t.lookup_v6_batch(addrs, &mut out);
        for (i, &a) in addrs.iter().enumerate() {
            assert_eq!(out[i], t.lookup_v6(a), "{what}, {}", Ipv6Addr::from(a));
        }
        // Past `addrs.len()`, `out` is untouched.
        assert_eq!(out[addrs.len()..], [Some(u32::MAX); 2]);
    }
}

fn v6_only(addrs: &[IpAddr]) -> Vec<u128> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(_) => None,
            IpAddr::V6(a) => Some(u128::from(*a)),
        })
        .collect()
}

#[test]
fn v6_batches_match_naive_on_random_tables() {
    for seed in 1..=6u64 {
        let mut rng = Rng::new(seed.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let mut entries = random_table(&mut rng, true, 50 + 300 * seed as usize);
        if seed % 2 == 1 {
            entries.push((p("::/0"), 1001));
        }
        let t = Lpm::build(&entries).unwrap();
        let addrs = v6_only(&probes(&mut rng, &entries, 5_003));
        let mut out = vec![None; addrs.len()];
        t.lookup_v6_batch(&addrs, &mut out);
        for (&a, &o) in addrs.iter().zip(&out) {
            let ip = IpAddr::V6(Ipv6Addr::from(a));
            assert_eq!(o, naive(&entries, ip), "seed {seed}, {ip}");
        }
        assert_v6_batch_matches(&t, &addrs, &format!("seed {seed}"));
    }
}

#[test]
fn v6_edge_cases_single_and_batch() {
    // Around the direct table's edge (/20, /21), nested and overlapping
    // prefixes, /0 and /128 at both ends of the space.
    let entries = [
        (p("::/0"), 1),
        (p("2001::/20"), 2),
        (p("2001:800::/21"), 3),
        (p("2001:db8::/32"), 4),
        (p("2001:db8::/127"), 5),
        (p("2001:db8::1/128"), 6),
        (p("2001:db8:0:1::/64"), 7),
        (p("2001:db8::/63"), 8),
        (p("2001:dbf:ffff:ffff:ffff:ffff:ffff:ffff/128"), 9),
        (p("::/128"), 10),
        (p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 11),
        (p("ffff:f000::/20"), 12),
        (p("8000::/1"), 13),
    ];
    let t = Lpm::build(&entries).unwrap();
    let mut addrs: Vec<u128> = [
        "::",
        "::1",
        "2001:db0::",
        "2001:db7:ffff::",
        "2001:db8::",
        "2001:db8::1",
        "2001:db8::2",
        "2001:db8::3",
        "2001:db8:0:1::",
        "2001:db8:0:1:ffff::",
        "2001:db8:0:0:ffff::",
        "2001:db8:0:2::",
        "2001:db8:1::",
        "2001:7ff:ffff::",
        "2001:dbf:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:dbf:ffff:ffff:ffff:ffff:ffff:fffe",
        "2001:dc0::",
        "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "8000::",
        "ffff:f000::",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
    ]
    .iter()
    .map(|s| u128::from(s.parse::<Ipv6Addr>().unwrap()))
    .collect();
    for &a in &addrs {
        let ip = IpAddr::V6(Ipv6Addr::from(a));
        assert_eq!(t.lookup_v6(a), naive(&entries, ip), "{ip}");
    }
    assert_eq!(t.lookup_v6(u128::MAX), Some(11));
    assert_eq!(t.lookup_v6(0), Some(10));
    assert_eq!(t.lookup_v6(1), Some(1));
    addrs.extend(addrs.clone().iter().rev());
    assert_v6_batch_matches(&t, &addrs, "edge cases");

    // Only prefixes that fit the direct table (no trie nodes), and no IPv6
    // prefix at all: batches agree with single lookups.
    let short = [(p("::/0"), 1), (p("2001::/16"), 2), (p("2001::/20"), 3)];
    let t = Lpm::build(&short).unwrap();
    assert_v6_batch_matches(&t, &addrs, "short prefixes only");
    assert_eq!(t.lookup_v6(addrs[4]), Some(3));
    let t = Lpm::build(&[(p("198.51.100.0/24"), 1)]).unwrap();
    let mut out = vec![Some(0); addrs.len()];
    t.lookup_v6_batch(&addrs, &mut out);
    assert!(out.iter().all(Option::is_none));
}
