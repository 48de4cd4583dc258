//! A frame from the LAN as the AF_XDP worker sees it, and a packet from the
//! edge as the gateway's return path sees it: the Ethernet, IP, IPv4, IPv6,
//! TCP and UDP views. Whatever a view's `new_checked` accepts, every
//! accessor reads without a panic, lengths stay within the buffer, the
//! version-independent `ip::Packet` agrees with the version's view, and
//! the setters write back what they were given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::wire::{ethernet, ip, ipv4, ipv6, tcp, udp};

/// Every TCP accessor, on a segment `new_checked` accepted.
fn read_tcp(b: &[u8]) {
    let Ok(t) = tcp::Packet::new_checked(b) else {
        return;
    };
    let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number());
    let _ = (t.flags(), t.reserved(), t.window_len(), t.checksum(), t.urgent_at());
    let _ = t.verify_checksum(0);
    assert!(t.header_len() >= tcp::HEADER_LEN && t.header_len() <= b.len());
    assert_eq!(tcp::HEADER_LEN + t.options().len() + t.payload().len(), b.len());
    let mut w = b.to_vec();
    let mut t = tcp::Packet::new_checked(&mut w[..]).unwrap();
    t.set_seq_number(0x0102_0304);
    t.set_flags(0xa5);
    t.fill_checksum(0x1234);
    assert!(t.verify_checksum(0x1234));
    t.set_checksum(7);
    assert_eq!((t.seq_number(), t.flags(), t.checksum()), (0x0102_0304, 0xa5, 7));
    assert!(t.check_len().is_ok());
    let _ = t.payload_mut();
}

/// Every UDP accessor, on a datagram `new_checked` accepted.
fn read_udp(b: &[u8]) {
    let Ok(u) = udp::Packet::new_checked(b) else {
        return;
    };
    let _ = (u.src_port(), u.dst_port(), u.checksum(), u.verify_checksum(0));
    assert_eq!(udp::HEADER_LEN + u.payload().len(), usize::from(u.length()));
    assert!(usize::from(u.length()) <= b.len());
    let mut w = b.to_vec();
    let mut u = udp::Packet::new_checked(&mut w[..]).unwrap();
    u.fill_checksum(0x4321);
    assert!(u.verify_checksum(0x4321) && u.checksum() != 0);
    u.set_checksum(9);
    assert_eq!(u.checksum(), 9);
    // Any length the buffer holds keeps the view sound.
    let len = (usize::from(u.length()) + 1).min(w.len()) as u16;
    let mut u = udp::Packet::new_checked(&mut w[..]).unwrap();
    u.set_length(len);
    assert_eq!(u.length(), len);
    assert!(u.check_len().is_ok());
    let _ = u.payload_mut();
}

/// Every IPv4 and IPv6 accessor, and the transport views on the payload.
fn read_ip(b: &[u8]) {
    if let Ok(p) = ipv4::Packet::new_checked(b) {
        let _ = (p.version(), p.tos(), p.ident(), p.flags(), p.dont_frag());
        let _ = (p.more_frags(), p.frag_offset(), p.is_fragment(), p.ttl());
        let _ = (p.protocol(), p.checksum(), p.src_addr(), p.dst_addr());
        let _ = (p.verify_checksum(), p.options(), p.header());
        assert_eq!(p.header_len() + p.payload().len(), usize::from(p.total_len()));
        assert!(p.packet().len() <= b.len());
        read_tcp(p.payload());
        read_udp(p.payload());
        let mut w = b.to_vec();
        let mut q = ipv4::Packet::new_checked(&mut w[..]).unwrap();
        let total = q.total_len();
        q.set_ident(0xbeef);
        q.set_protocol(17);
        q.set_total_len(total);
        q.fill_checksum();
        assert!(q.verify_checksum());
        assert_eq!((q.ident(), q.protocol(), q.total_len()), (0xbeef, 17, total));
        assert!(q.check_len().is_ok());
        let _ = q.payload_mut();
    }
    if let Ok(p) = ipv6::Packet::new_checked(b) {
        let _ = (p.version(), p.traffic_class(), p.flow_label(), p.next_header());
        let _ = (p.hop_limit(), p.src_addr(), p.dst_addr());
        assert_eq!(ipv6::HEADER_LEN + p.payload().len(), p.total_len());
        assert!(p.packet().len() <= b.len());
        read_tcp(p.payload());
        read_udp(p.payload());
        let mut w = b.to_vec();
        let mut q = ipv6::Packet::new_checked(&mut w[..]).unwrap();
        let len = q.payload_len();
        q.set_payload_len(len);
        assert!(q.check_len().is_ok());
        let _ = q.payload_mut();
    }
    // The version-independent view accepts what the version's view does,
    // and reads the same.
    let v4 = ipv4::Packet::new_checked(b);
    let v6 = ipv6::Packet::new_checked(b);
    match ip::Packet::new_checked(b) {
        Ok(p) => {
            let _ = (p.src(), p.dst(), p.flow());
            if p.is_ipv6() {
                let v = v6.expect("ip accepted what ipv6 refused");
                assert_eq!(p.as_bytes(), v.packet());
                assert_eq!(p.dst(), std::net::IpAddr::V6(v.dst_addr()));
            } else {
                let v = v4.expect("ip accepted what ipv4 refused");
                assert_eq!(p.as_bytes(), v.packet());
                assert_eq!(p.src(), std::net::IpAddr::V4(v.src_addr()));
            }
            if let Some(s) = p.tcp() {
                assert!(s.payload.len() <= p.as_bytes().len());
            }
            if let Some((_, _, payload)) = p.udp() {
                assert!(payload.len() <= p.as_bytes().len());
            }
        }
        Err(_) => assert!(v4.is_err() && v6.is_err()),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(eth) = ethernet::Frame::new_checked(data) {
        let _ = (eth.src(), eth.dst(), eth.ethertype());
        if let Ok((_, off)) = eth.payload_offset() {
            assert!(off <= data.len());
            if let Ok(p) = ip::Packet::new_checked(&data[off..]) {
                let _ = (p.src(), p.dst(), p.is_ipv6());
                assert!(p.as_bytes().len() <= data.len() - off);
            }
            read_ip(&data[off..]);
        }
    }
    if let Ok(p) = ip::Packet::new_checked(data) {
        let _ = (p.src(), p.dst());
    }
    read_ip(data);
    read_tcp(data);
    read_udp(data);
});
