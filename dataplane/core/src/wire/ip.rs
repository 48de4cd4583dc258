//! The two facts the tunneler needs from an IP packet: its version and its
//! source/destination addresses. A view, not a parser: the classifier and the
//! receiving kernel validate the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::WireError;

mod field {
    pub(super) const V4_TOTAL_LEN: core::ops::Range<usize> = 2..4;
    pub(super) const V4_SRC: core::ops::Range<usize> = 12..16;
    pub(super) const V4_DST: core::ops::Range<usize> = 16..20;
    pub(super) const V4_MIN_LEN: usize = 20;
    pub(super) const V6_PAYLOAD_LEN: core::ops::Range<usize> = 4..6;
    pub(super) const V6_SRC: core::ops::Range<usize> = 8..24;
    pub(super) const V6_DST: core::ops::Range<usize> = 24..40;
    pub(super) const V6_HEADER_LEN: usize = 40;
    pub(super) const V4_FRAG: core::ops::Range<usize> = 6..8;
    /// More-fragments flag and fragment offset: either set means a fragment.
    pub(super) const V4_MF_AND_OFFSET: u16 = 0x3fff;
    pub(super) const V4_PROTO: usize = 9;
    pub(super) const V6_NEXT_HEADER: usize = 6;
    pub(super) const UDP_HEADER_LEN: usize = 8;
}

/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

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
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Checks the version nibble, the minimum header length and the declared
    /// total length, and trims trailing padding.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let Some(first) = buf.first() else {
            return Err(WireError::Truncated { need: 1, have: 0 });
        };
        let (min, total) = match first >> 4 {
            4 => {
                if buf.len() < field::V4_MIN_LEN {
                    return Err(WireError::Truncated {
                        need: field::V4_MIN_LEN,
                        have: buf.len(),
                    });
                }
                let t = &buf[field::V4_TOTAL_LEN];
                let ihl = usize::from(first & 0x0f) * 4;
                (
                    ihl.max(field::V4_MIN_LEN),
                    usize::from(u16::from_be_bytes([t[0], t[1]])),
                )
            }
            6 => {
                if buf.len() < field::V6_HEADER_LEN {
                    return Err(WireError::Truncated {
                        need: field::V6_HEADER_LEN,
                        have: buf.len(),
                    });
                }
                let p = &buf[field::V6_PAYLOAD_LEN];
                (
                    field::V6_HEADER_LEN,
                    field::V6_HEADER_LEN + usize::from(u16::from_be_bytes([p[0], p[1]])),
                )
            }
            _ => return Err(WireError::Malformed("IP version is neither 4 nor 6")),
        };
        if total < min {
            return Err(WireError::Malformed("IP length below header length"));
        }
        if total > buf.len() {
            return Err(WireError::Truncated {
                need: total,
                have: buf.len(),
            });
        }
        Ok(Self { buf: &buf[..total] })
    }

    /// True for IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.buf[0] >> 4 == 6
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(arr16(&self.buf[field::V6_SRC])))
        } else {
            IpAddr::V4(Ipv4Addr::from(arr4(&self.buf[field::V4_SRC])))
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(arr16(&self.buf[field::V6_DST])))
        } else {
            IpAddr::V4(Ipv4Addr::from(arr4(&self.buf[field::V4_DST])))
        }
    }

    /// The packet's bytes, padding trimmed.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The segment, if this is TCP directly after the IP header (no IPv6
    /// extension headers), not a fragment, with a data offset within the
    /// packet.
    pub fn tcp(&self) -> Option<TcpSegment<'a>> {
        let off = self.transport_offset(PROTO_TCP)?;
        let t = self.buf.get(off..)?;
        let h = t.get(..20)?;
        let data = usize::from(h[12] >> 4) * 4;
        if data < 20 {
            return None;
        }
        Some(TcpSegment {
            src_port: u16::from_be_bytes([h[0], h[1]]),
            dst_port: u16::from_be_bytes([h[2], h[3]]),
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            flags: h[13],
            payload: t.get(data..)?,
        })
    }

    /// The transport protocol (IPv4's protocol field, IPv6's next header)
    /// and, for TCP, UDP and SCTP directly after the IP header and not in
    /// a non-first fragment, the source and destination ports (else 0).
    pub fn flow(&self) -> (u8, u16, u16) {
        let proto = if self.is_ipv6() {
            self.buf[field::V6_NEXT_HEADER]
        } else {
            self.buf[field::V4_PROTO]
        };
        let ports = match proto {
            PROTO_TCP | PROTO_UDP | 132 => self
                .transport_offset(proto)
                .and_then(|off| self.buf.get(off..off + 4))
                .map(|h| {
                    (
                        u16::from_be_bytes([h[0], h[1]]),
                        u16::from_be_bytes([h[2], h[3]]),
                    )
                }),
            _ => None,
        };
        let (sport, dport) = ports.unwrap_or((0, 0));
        (proto, sport, dport)
    }

    /// Where the transport header starts, if it is `proto` directly after
    /// the IP header and the packet is not a fragment.
    fn transport_offset(&self, proto: u8) -> Option<usize> {
        if self.is_ipv6() {
            (self.buf[field::V6_NEXT_HEADER] == proto).then_some(field::V6_HEADER_LEN)
        } else {
            let f = &self.buf[field::V4_FRAG];
            let fragment = u16::from_be_bytes([f[0], f[1]]) & field::V4_MF_AND_OFFSET != 0;
            (self.buf[field::V4_PROTO] == proto && !fragment)
                .then(|| usize::from(self.buf[0] & 0x0f) * 4)
        }
    }

    /// Source port, destination port and payload, if this is a whole UDP
    /// datagram: UDP directly after the IP header (no IPv6 extension
    /// headers), not a fragment, its length field within the packet.
    /// A few byte loads: cheap enough to ask of every packet.
    pub fn udp(&self) -> Option<(u16, u16, &'a [u8])> {
        let off = self.transport_offset(PROTO_UDP)?;
        let udp = self.buf.get(off..)?;
        let h = udp.get(..field::UDP_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let payload = udp.get(field::UDP_HEADER_LEN..len)?;
        Some((
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
            payload,
        ))
    }
}

fn arr4(b: &[u8]) -> [u8; 4] {
    b.try_into().unwrap_or_default()
}

fn arr16(b: &[u8]) -> [u8; 16] {
    b.try_into().unwrap_or_default()
}

#[cfg(test)]
mod tests {
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
