//! Policy entries are operator input and the compiled tables are what the
//! classifier runs: any text parses to an entry that prints back to
//! itself, or to an error; and for any profile built from the input
//! (inclusions, exclusions, ports, protocols, source ports, VPN gateways,
//! IPv4 and IPv6, dense overlaps), the compiled tables either refuse it
//! with an error or give every flow the reference evaluator's verdict.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use sluice_core::policy::{
    Entry, Policy, Profile, Proto,
    compile::Tables,
    eval::{self, Flow},
};

/// Reads the input a byte at a time; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }
}

/// Few bases and few low bits, so that entries and flows overlap densely.
fn addr(b: &mut Bytes<'_>, v6: bool) -> IpAddr {
    let low = b.u8();
    if v6 {
        let base = b.pick(&[0x2001_0db8_u32, 0x2001_0db9, 0x2001_0dba]);
        let mid = u16::from(b.u8() & 3);
        IpAddr::V6(Ipv6Addr::new(
            (base >> 16) as u16,
            base as u16,
            mid,
            0,
            0,
            0,
            0,
            u16::from(low),
        ))
    } else {
        let [a, b2, c] = b.pick(&[[203, 0, 113], [198, 51, 100], [198, 18, 0], [192, 0, 2]]);
        IpAddr::V4(Ipv4Addr::new(a, b2, c, low))
    }
}

const PORTS: [u16; 5] = [22, 53, 80, 443, 8443];
const PROTOS: [&str; 4] = ["tcp", "udp", "icmp", "sctp"];

/// An entry as an operator writes it, so that it goes through the parser's
/// validation.
fn entry(b: &mut Bytes<'_>) -> Option<Entry> {
    let v6 = b.u8() & 1 == 1;
    let a = addr(b, v6);
    let len = if v6 { b.u8() % 129 } else { b.u8() % 33 };
    let prefix = sluice_core::net::Prefix::new(a, len);
    let text = match (b.u8() % 3, v6) {
        (0, _) => prefix.to_string(),
        (1, false) => format!("{prefix}:{}", b.pick(&PORTS)),
        (1, true) => format!("[{prefix}]:{}", b.pick(&PORTS)),
        (_, false) => format!("{prefix}:{}:{}", b.pick(&PORTS), b.pick(&PROTOS)),
        (_, true) => format!("[{prefix}]:{}:{}", b.pick(&PORTS), b.pick(&PROTOS)),
    };
    text.parse().ok()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().take(16) {
            if let Ok(e) = line.parse::<Entry>() {
                assert_eq!(e.to_string().parse::<Entry>().as_ref(), Ok(&e), "{line}");
            }
        }
    }
    let mut b = Bytes(data);
    let mut profile = Profile::with_defaults("fuzz", 0);
    profile.tunnel = b.u8() & 1 == 0;
    if b.u8() & 1 == 0 {
        profile.include.clear();
    }
    for _ in 0..b.u8() % 24 {
        let Some(e) = entry(&mut b) else { continue };
        if b.u8() & 1 == 0 {
            profile.include.push(e);
        } else {
            profile.exclude.push(e);
        }
    }
    for _ in 0..b.u8() % 3 {
        profile.source_ports.push(b.pick(&PORTS));
    }
    if b.u8() % 4 == 0 {
        let v6 = b.u8() & 1 == 1;
        let a = addr(&mut b, v6);
        let len = if v6 { 120 } else { 30 };
        profile.vpn_gateways.push(sluice_core::net::Prefix::new(a, len));
    }
    let policy = Policy::new(vec![profile], Vec::new());
    // A profile the kernel tables cannot hold is refused, not mangled.
    let Ok(tables) = Tables::compile(&policy) else {
        return;
    };
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    for _ in 0..64 {
        let v6 = b.u8() & 1 == 1;
        let dst = addr(&mut b, v6);
        let proto = b.pick(&[Proto::TCP, Proto::UDP, Proto(1), Proto(132)]);
        let (sport, dport) = if proto == Proto(1) {
            (0, 0)
        } else {
            (b.pick(&PORTS), b.pick(&PORTS))
        };
        let src = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10))
        } else {
            src
        };
        let flow = Flow::new(src, dst, sport, dport, proto);
        assert_eq!(
            tables.lookup(src, dst, sport, dport, proto),
            eval::decide(&policy, 0, &flow).verdict,
            "{flow:?} under {:?}",
            policy.profiles[0]
        );
        if b.0.is_empty() {
            break;
        }
    }
});
