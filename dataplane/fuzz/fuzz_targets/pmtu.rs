//! A packet entering the tunnel, against an inner MTU taken from the first
//! two bytes: the MSS clamp, the "too big" error and IPv4 fragmentation
//! must never panic; a clamped SYN's MSS fits; an error fits its family's
//! limit; fragments fit the MTU and put the payload back together.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use sluice_core::{
    pmtu::{self, Fit},
    wire::{ip, ipv4},
};

fuzz_target!(|data: &[u8]| {
    let [a, b, pkt @ ..] = data else {
        return;
    };
    let mtu = u16::from_be_bytes([*a, *b]).max(pmtu::MIN_MTU);
    let Ok(p) = ip::Packet::new_checked(pkt) else {
        return;
    };
    let pkt = p.as_bytes();
    let mut copy = pkt.to_vec();
    if pmtu::clamp_mss(&mut copy, mtu) {
        assert_eq!(copy.len(), pkt.len());
    }
    let mut out = [0u8; 1400];
    let from = if p.is_ipv6() {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    };
    if let Some(n) = pmtu::too_big_reply(pkt, mtu, from, &mut out) {
        assert!(n <= if p.is_ipv6() { 1280 } else { 576 });
    }
    if pmtu::fit(pkt, mtu) == Fit::Fragment {
        let mut scratch = vec![0u8; usize::from(mtu)];
        let mut payload = Vec::new();
        let mut count = 0;
        let r = pmtu::fragment_v4(pkt, mtu, &mut scratch, &mut |f| {
            assert!(f.len() <= usize::from(mtu));
            let v = ipv4::Packet::new_checked(f).expect("a fragment parses");
            assert!(v.verify_checksum());
            payload.extend_from_slice(v.payload());
            count += 1;
        });
        if let Ok(n) = r {
            assert_eq!(n, count);
            let whole = ipv4::Packet::new_checked(pkt).expect("checked above");
            assert_eq!(payload, whole.payload());
        }
    }
});
