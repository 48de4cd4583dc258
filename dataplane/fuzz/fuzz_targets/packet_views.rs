//! A frame from the LAN as the AF_XDP worker sees it, and a packet from the
//! edge as the gateway's return path sees it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::wire::{ethernet, ip};

fuzz_target!(|data: &[u8]| {
    if let Ok(eth) = ethernet::Frame::new_checked(data) {
        let _ = (eth.src(), eth.dst(), eth.ethertype());
        if let Ok((_, off)) = eth.payload_offset() {
            assert!(off <= data.len());
            if let Ok(p) = ip::Packet::new_checked(&data[off..]) {
                let _ = (p.src(), p.dst(), p.is_ipv6());
                assert!(p.as_bytes().len() <= data.len() - off);
            }
        }
    }
    if let Ok(p) = ip::Packet::new_checked(data) {
        let _ = (p.src(), p.dst());
    }
});
