//! The frames the packet generator (`src/bin/pktgen.rs`) sends: minimal
//! UDP/IPv4 datagrams in Ethernet, built once before the run and copied
//! into the `AF_XDP` TX ring as they are, and the checks that keep the
//! generator inside the lab.
//!
//! A frame is 60 bytes: Ethernet (14), IPv4 (20, DF, TTL 64), UDP (8) and
//! [`PAYLOAD_LEN`] bytes of payload: 64 bytes on a wire with its 4-byte
//! FCS, the smallest Ethernet frame (veth carries no FCS). Nothing here
//! does I/O.
use std::net::Ipv4Addr;

use sluice_core::wire::{checksum, ethernet, ipv4, udp};

/// UDP payload bytes per frame.
pub const PAYLOAD_LEN: usize = 18;
/// Frame bytes handed to the interface (without FCS).
pub const FRAME_LEN: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + PAYLOAD_LEN;
/// Bytes on an Ethernet wire: the frame and its FCS.
pub const WIRE_LEN: usize = FRAME_LEN + 4;

/// `ETH_P_IP`.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// The payload: recognisable in a capture.
const PAYLOAD: &[u8; PAYLOAD_LEN] = b"sluice-pktgen-64B\n";

/// One UDP/IPv4 frame from `src:sport` to `dst:dport`, checksums filled.
#[must_use]
pub fn udp_frame(
    dst_mac: ethernet::Mac,
    src_mac: ethernet::Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> [u8; FRAME_LEN] {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::HEADER_LEN;
    const UDP_LEN: usize = udp::HEADER_LEN + PAYLOAD_LEN;
    let mut f = [0u8; FRAME_LEN];
    if let Ok(mut eth) = ethernet::Frame::new_checked(&mut f[..]) {
        eth.emit_header(dst_mac, src_mac, ETHERTYPE_IPV4);
    }
    // 20 + 26 bytes into a buffer that holds them: cannot fail.
    let _ = ipv4::emit_header(&mut f[L3..], src, dst, 17, 64, UDP_LEN);
    let d = &mut f[L4..];
    d[0..2].copy_from_slice(&sport.to_be_bytes());
    d[2..4].copy_from_slice(&dport.to_be_bytes());
    d[udp::HEADER_LEN..].copy_from_slice(PAYLOAD);
    let mut u = udp::Packet::new_unchecked(d);
    u.set_length(UDP_LEN as u16);
    u.fill_checksum(checksum::pseudo_header(
        &src.octets(),
        &dst.octets(),
        17,
        UDP_LEN as u32,
    ));
    f
}

/// Whether `a` is in one of the ranges the lab rules allow:
/// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24` (documentation) and
/// `198.18.0.0/15` (benchmarking).
#[must_use]
pub fn is_lab_address(a: Ipv4Addr) -> bool {
    let o = a.octets();
    matches!(o, [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _])
        || matches!(o, [198, 18 | 19, _, _])
}

/// `aa:bb:cc:dd:ee:ff` (what `/sys/class/net/*/address` holds).
#[must_use]
pub fn parse_mac(s: &str) -> Option<ethernet::Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_a_valid_64_byte_udp_datagram() {
        let src = Ipv4Addr::new(192, 0, 2, 10);
        let dst = Ipv4Addr::new(203, 0, 113, 10);
        let f = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, 40_001, 9);
        assert_eq!(WIRE_LEN, 64);
        let p = etherparse::SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4: {p:?}")
        };
        assert_eq!(ip.header().source_addr(), src);
        assert_eq!(ip.header().destination_addr(), dst);
        assert_eq!(ip.header().total_len(), 46);
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else {
            panic!("not UDP: {p:?}")
        };
        assert_eq!((u.source_port(), u.destination_port()), (40_001, 9));
        assert_eq!(u.payload(), PAYLOAD);
        let want = u
            .to_header()
            .calc_checksum_ipv4(&h, u.payload())
            .expect("checksum");
        assert_eq!(u.checksum(), want);
    }

    #[test]
    fn only_lab_ranges() {
        for a in ["192.0.2.10", "198.51.100.1", "203.0.113.20", "198.19.255.1"] {
            assert!(is_lab_address(a.parse().unwrap()), "{a}");
        }
        for a in [
            "240.0.0.1",
            "192.0.0.8",
            "8.8.8.8",
            "198.20.0.1",
            "203.0.114.1",
        ] {
            assert!(!is_lab_address(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:0a:ff:00:10:9b\n"),
            Some([2, 0x0a, 0xff, 0, 0x10, 0x9b])
        );
        assert_eq!(parse_mac("02:0a:ff:00:10"), None);
        assert_eq!(parse_mac("02:0a:ff:00:10:9b:00"), None);
        assert_eq!(parse_mac("zz:0a:ff:00:10:9b"), None);
    }
}
