//! Packets from a tunnel as the edge's coalescer sees them: a sequence of
//! `[u16 BE length][packet]` records. Whatever goes in must come back out
//! of the kernel-segmentation model, no more and no less, and nothing may
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::{
    gro::{Coalescer, segment},
    wire::ip,
};

fuzz_target!(|data: &[u8]| {
    let mut pkts: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (p, r) = tail.split_at(n);
        if let Ok(p) = ip::Packet::new_checked(p) {
            pkts.push(p.as_bytes());
        }
        rest = r;
    }
    // The last byte's low bit switches UDP merging on.
    let udp = data.last().is_some_and(|b| b & 1 == 1);
    let mut c = Coalescer::new(udp);
    let mut back: Vec<Vec<u8>> = Vec::new();
    let mut emit = |h: &sluice_core::gro::VnetHdr, b: &[u8]| back.extend(segment(h, b));
    for p in &pkts {
        c.push(p, &mut emit);
    }
    c.flush(&mut emit);
    assert!(c.is_empty());
    let mut want: Vec<Vec<u8>> = pkts.iter().map(|p| p.to_vec()).collect();
    want.sort();
    back.sort();
    assert_eq!(want, back, "the coalescer lost, added or changed a packet");
});
