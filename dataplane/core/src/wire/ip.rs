//! The facts the tunneler needs from an IP packet of either version: its
//! version, its source/destination addresses, its transport protocol and
//! ports. A view, not a parser: the classifier and the receiving kernel
//! validate the rest. Built on [`super::ipv4`], [`super::ipv6`],
//! [`super::tcp`] and [`super::udp`].

use std::net::IpAddr;

use super::{WireError, be, ipv4, ipv6, tcp, udp};

mod field {
    use core::ops::Range;
    /// The ports every transport with ports (TCP, UDP, SCTP) starts with.
    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
}

/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// The version nibble of the IP packet in `buf` (any value; `None` for
/// an empty buffer): which of [`ipv4::Packet`] and [`ipv6::Packet`] to
/// try.
#[inline]
pub fn version(buf: &[u8]) -> Option<u8> {
    buf.first().map(|b| b >> 4)
}

/// The parts of a TCP segment [`Packet::tcp`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// The flags byte (FIN 0x01, SYN 0x02, RST 0x04, ...).
    pub flags: u8,
    /// Payload.
    pub payload: &'a [u8],
}

/// A view over an IPv4 or IPv6 packet.
///
/// After [`Packet::new_checked`] succeeds, no accessor panics, and the
/// buffer is exactly the packet: [`Packet::new_checked`] trims link-layer
/// padding after the length the IP header declares.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The packet, padding trimmed, accepted by [`ipv4::Packet::check_len`]
    /// or [`ipv6::Packet::check_len`] (as `v6` says).
    buf: &'a [u8],
    v6: bool,
    /// IPv4's protocol, IPv6's next header.
    protocol: u8,
    /// Where that protocol's header starts (the IP header's length, at
    /// most 60), or 0 for an IPv4 fragment (no whole transport header to
    /// read). Read once here: [`Packet::flow`], [`Packet::udp`] and
    /// [`Packet::tcp`] are asked of the same packet one after the other.
    transport: u8,
}

impl<'a> Packet<'a> {
    /// Checks the version nibble, then the version's header
    /// ([`ipv4::Packet::check_len`]: IHL at least 5 and within the
    /// buffer, total length between the header and the buffer's end;
    /// [`ipv6::Packet::check_len`]: payload within the buffer), and trims
    /// trailing padding.
    #[inline]
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let Some(version) = version(buf) else {
            return Err(WireError::Truncated { need: 1, have: 0 });
        };
        match version {
            4 => {
                let p = ipv4::Packet::new_checked(buf)?;
                Ok(Self {
                    buf: p.packet(),
                    v6: false,
                    protocol: p.protocol(),
                    transport: if p.is_fragment() {
                        0
                    } else {
                        p.header_len() as u8
                    },
                })
            }
            6 => {
                let p = ipv6::Packet::new_checked(buf)?;
                Ok(Self {
                    buf: p.packet(),
                    v6: true,
                    protocol: p.next_header(),
                    transport: ipv6::HEADER_LEN as u8,
                })
            }
            _ => Err(WireError::Malformed("IP version is neither 4 nor 6")),
        }
    }

    /// True for IPv6.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    /// The IPv4 view, for an IPv4 packet.
    #[inline]
    pub fn ipv4(&self) -> Option<ipv4::Packet<&'a [u8]>> {
        (!self.v6).then_some(ipv4::Packet::new_unchecked(self.buf))
    }

    /// The IPv6 view, for an IPv6 packet.
    #[inline]
    pub fn ipv6(&self) -> Option<ipv6::Packet<&'a [u8]>> {
        self.v6.then_some(ipv6::Packet::new_unchecked(self.buf))
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(ipv6::Packet::new_unchecked(self.buf).src_addr())
        } else {
            IpAddr::V4(ipv4::Packet::new_unchecked(self.buf).src_addr())
        }
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(ipv6::Packet::new_unchecked(self.buf).dst_addr())
        } else {
            IpAddr::V4(ipv4::Packet::new_unchecked(self.buf).dst_addr())
        }
    }

    /// The packet's bytes, padding trimmed.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The segment, if this is TCP directly after the IP header (no IPv6
    /// extension headers), not a fragment, with a data offset within the
    /// packet.
    #[inline]
    pub fn tcp(&self) -> Option<TcpSegment<'a>> {
        let t = tcp::Packet::new_checked(self.transport(PROTO_TCP)?).ok()?;
        Some(TcpSegment {
            src_port: t.src_port(),
            dst_port: t.dst_port(),
            seq: t.seq_number(),
            flags: t.flags(),
            payload: t.payload(),
        })
    }

    /// The transport protocol (IPv4's protocol field, IPv6's next header)
    /// and, for TCP, UDP and SCTP directly after the IP header and not in
    /// a fragment, the source and destination ports (else 0).
    #[inline]
    pub fn flow(&self) -> (u8, u16, u16) {
        let proto = self.protocol;
        let ports = match proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => self
                .transport(proto)
                .filter(|h| h.len() >= field::DST_PORT.end)
                .map(|h| {
                    (
                        be::u16_at(h, field::SRC_PORT),
                        be::u16_at(h, field::DST_PORT),
                    )
                }),
            _ => None,
        };
        let (sport, dport) = ports.unwrap_or((0, 0));
        (proto, sport, dport)
    }

    /// The IP payload, if it is `proto` directly after the IP header and
    /// the packet is not a fragment.
    #[inline]
    fn transport(&self, proto: u8) -> Option<&'a [u8]> {
        if self.protocol != proto || self.transport == 0 {
            return None;
        }
        self.buf.get(usize::from(self.transport)..)
    }

    /// Source port, destination port and payload, if this is a whole UDP
    /// datagram: UDP directly after the IP header (no IPv6 extension
    /// headers), not a fragment, its length field within the packet.
    /// A few byte loads: cheap enough to ask of every packet.
    #[inline]
    pub fn udp(&self) -> Option<(u16, u16, &'a [u8])> {
        let u = udp::Packet::new_checked(self.transport(PROTO_UDP)?).ok()?;
        Some((u.src_port(), u.dst_port(), u.payload()))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// An IPv4 UDP packet 192.0.2.10 -> 203.0.113.10, 28 bytes, plus two
    /// bytes of Ethernet padding.
    const V4_BYTES: [u8; 30] = [
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 203, 0, 113, 10, //
        0x30, 0x39, 0x00, 0x07, 0, 8, 0, 0, //
        0xee, 0xee,
    ];

    #[test]
    fn v4_view_trims_padding() {
        let p = Packet::new_checked(&V4_BYTES).unwrap();
        assert_eq!(p.as_bytes().len(), 28);
        assert_eq!(p.src(), "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst(), "203.0.113.10".parse::<IpAddr>().unwrap());
        assert!(!p.is_ipv6());
    }

    #[test]
    fn v6_view() {
        let mut b = [0u8; 48];
        b[0] = 0x60;
        b[5] = 8;
        b[8..24].copy_from_slice(&"2001:db8:1::10".parse::<Ipv6Addr>().unwrap().octets());
        b[24..40].copy_from_slice(&"2001:db8:100::10".parse::<Ipv6Addr>().unwrap().octets());
        let p = Packet::new_checked(&b).unwrap();
        assert!(p.is_ipv6());
        assert_eq!(p.dst(), "2001:db8:100::10".parse::<IpAddr>().unwrap());
        assert!(Packet::new_checked(&b[..47]).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Packet::new_checked(&[]).is_err());
        assert!(Packet::new_checked(&[0x50; 40]).is_err());
        assert!(Packet::new_checked(&V4_BYTES[..19]).is_err());
        let mut short_len = V4_BYTES;
        short_len[3] = 10;
        assert!(Packet::new_checked(&short_len).is_err());
        let mut long_len = V4_BYTES;
        long_len[3] = 200;
        assert!(Packet::new_checked(&long_len).is_err());
        // IHL below 5 (RFC 791's minimum; the classifier drops these on
        // the LAN side, Linux's ip_rcv everywhere): refused, where the
        // view before the ipv4 module took IHL 0 to 4 for 5.
        for ihl in 0..5 {
            let mut b = V4_BYTES;
            b[0] = 0x40 | ihl;
            assert!(Packet::new_checked(&b).is_err(), "IHL {ihl}");
        }
    }

    #[test]
    fn version_views() {
        let p = Packet::new_checked(&V4_BYTES).unwrap();
        assert!(p.ipv6().is_none());
        let v4 = p.ipv4().unwrap();
        assert_eq!((v4.total_len(), v4.protocol()), (28, PROTO_UDP));
        assert_eq!(p.flow(), (PROTO_UDP, 12345, 7));
    }

    #[test]
    fn udp_view() {
        let p = Packet::new_checked(&V4_BYTES).unwrap();
        assert_eq!(p.udp(), Some((12345, 7, &[][..])));
        // A fragment (MF set, then an offset) is not a whole datagram.
        let mut frag = V4_BYTES;
        frag[6] = 0x20;
        assert_eq!(Packet::new_checked(&frag).unwrap().udp(), None);
        frag[6] = 0;
        frag[7] = 1;
        assert_eq!(Packet::new_checked(&frag).unwrap().udp(), None);
        // TCP, and a UDP length past the packet.
        let mut tcp = V4_BYTES;
        tcp[9] = 6;
        assert_eq!(Packet::new_checked(&tcp).unwrap().udp(), None);
        let mut long = V4_BYTES;
        long[25] = 9;
        assert_eq!(Packet::new_checked(&long).unwrap().udp(), None);
        // IPv6 with a 4-byte payload.
        let mut b = [0u8; 52];
        b[0] = 0x60;
        b[5] = 12;
        b[6] = PROTO_UDP;
        b[40..48].copy_from_slice(&[0, 53, 0x9c, 0x40, 0, 12, 0, 0]);
        b[48..].copy_from_slice(b"abcd");
        assert_eq!(
            Packet::new_checked(&b).unwrap().udp(),
            Some((53, 40000, &b"abcd"[..]))
        );
        b[6] = 0; // hop-by-hop options first: not looked into
        assert_eq!(Packet::new_checked(&b).unwrap().udp(), None);
    }

    #[test]
    fn tcp_view() {
        // IPv4 + TCP (data offset 5) + 3 bytes, SYN|ACK.
        let mut b = [0u8; 43];
        b[0] = 0x45;
        b[3] = 43;
        b[9] = PROTO_TCP;
        b[20..40].copy_from_slice(&[
            0, 53, 0x9c, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0x50, 0x12, 0, 0, 0, 0, 0, 0,
        ]);
        b[40..].copy_from_slice(b"abc");
        let s = Packet::new_checked(&b).unwrap().tcp().unwrap();
        assert_eq!(
            s,
            TcpSegment {
                src_port: 53,
                dst_port: 40000,
                seq: 256,
                flags: 0x12,
                payload: b"abc"
            }
        );
        assert_eq!(Packet::new_checked(&b).unwrap().udp(), None);
        b[32] = 0x40; // data offset 4: invalid
        assert_eq!(Packet::new_checked(&b).unwrap().tcp(), None);
        b[32] = 0xf0; // 60 bytes: past the packet
        assert_eq!(Packet::new_checked(&b).unwrap().tcp(), None);
    }
}
