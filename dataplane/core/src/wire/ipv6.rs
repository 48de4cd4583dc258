//! A view over an IPv6 packet (RFC 8200): its fixed header's fields and
//! what follows it, in place. Extension headers are not walked: the
//! payload starts with whatever [`Packet::next_header`] names.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------+---------------+---------------------------------------+
//! |Version| Traffic Class |              Flow Label               |
//! +-------+---------------+-------+---------------+---------------+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-------------------------------+---------------+---------------+
//! |                 Source Address (16 bytes)                     |
//! +---------------------------------------------------------------+
//! |               Destination Address (16 bytes)                  |
//! +---------------------------------------------------------------+
//! ```

use std::net::Ipv6Addr;

use super::{WireError, be};

mod field {
    use core::ops::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub(super) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Range<usize> = 8..24;
    pub(super) const DST_ADDR: Range<usize> = 24..40;
    pub(super) const FLOW_MASK: u32 = 0x000f_ffff;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// A view over an IPv6 packet.
///
/// After [`Packet::new_checked`] (or [`Packet::check_len`]) succeeds, no
/// accessor panics: the buffer holds the fixed header and the payload
/// length it declares (the buffer may hold more: link-layer padding, see
/// [`Packet::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without a look: accessors panic if it is not a
    /// packet [`Packet::check_len`] accepts.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that no accessor can panic: the 40-byte header, version 6,
    /// and the declared payload within the buffer.
    ///
    /// [`Packet::set_payload_len`] can break what this checked.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        if self.version() != 6 {
            return Err(WireError::Malformed("IPv6 version is not 6"));
        }
        let total = self.total_len();
        if have < total {
            return Err(WireError::Truncated { need: total, have });
        }
        Ok(())
    }

    /// The buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer (padding included).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version field (6).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be::u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// The flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) & field::FLOW_MASK
    }

    /// The payload length field: what follows the fixed header, extension
    /// headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// The packet's length: the fixed header and the payload length.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The next header field: the first extension header's type, or the
    /// transport protocol (6 TCP, 17 UDP, ...) when there is none.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_octets())
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_octets())
    }

    /// The source address's bytes.
    #[inline]
    pub fn src_octets(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        a
    }

    /// The destination address's bytes.
    #[inline]
    pub fn dst_octets(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        a
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: what follows the fixed header, up to the payload
    /// length (link-layer padding after it is not included).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        b.get(HEADER_LEN..self.total_len()).unwrap_or_default()
    }

    /// The packet: up to the end of the payload (link-layer padding after
    /// it is not included).
    #[inline]
    pub fn packet(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        b.get(..self.total_len()).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the payload length field (what [`Packet::check_len`] checked
    /// holds again only if the payload is within the buffer).
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// The payload, writable (up to the payload length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or_default()
    }
}

/// Writes a 40-byte header (traffic class and flow label 0) for a packet
/// of `payload_len` bytes into the start of `buf`. Returns the header
/// length, or `None` if `buf` is shorter than the header or the payload
/// exceeds 65,535 bytes.
pub fn emit_header(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: usize,
) -> Option<usize> {
    let len = u16::try_from(payload_len).ok()?;
    let h = buf.get_mut(..HEADER_LEN)?;
    h.fill(0);
    h[0] = 0x60;
    be::set_u16(h, field::LENGTH, len);
    h[field::NXT_HDR] = next_header;
    h[field::HOP_LIMIT] = hop_limit;
    h[field::SRC_ADDR].copy_from_slice(&src.octets());
    h[field::DST_ADDR].copy_from_slice(&dst.octets());
    Some(HEADER_LEN)
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query for example.org, `2001:db8:1::10` port 5353 ->
    /// `2001:db8:100::10` port 53, as a capture shows it: traffic class 0x28,
    /// flow label 0x12345, hop limit 64; UDP checksum 0x0fb2.
    const PACKET_BYTES: [u8; 77] = [
        0x62, 0x81, 0x23, 0x45, 0x00, 0x25, 0x11, 0x40, // version .. hop limit
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, // source
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, // destination
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x25, 0x0f, 0xb2, // UDP
        0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78,
        0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x6f, 0x72, 0x67, 0x00, 0x00, 0x01, 0x00,
        0x01, // DNS
    ];

    #[test]
    fn reads_every_field() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x28);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 37);
        assert_eq!(p.total_len(), 77);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        let src: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:100::10".parse().unwrap();
        assert_eq!((p.src_addr(), p.dst_addr()), (src, dst));
        assert_eq!(
            (p.src_octets(), p.dst_octets()),
            (src.octets(), dst.octets())
        );
        assert_eq!(p.payload(), &PACKET_BYTES[40..]);
        assert_eq!(p.packet(), &PACKET_BYTES[..]);
        assert_eq!(p.as_bytes(), &PACKET_BYTES[..]);
        assert_eq!(p.into_inner(), &PACKET_BYTES[..]);
    }

    /// The same reading as etherparse's, an independent parser.
    #[test]
    fn agrees_with_etherparse() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        let (h, _) = etherparse::Ipv6Header::from_slice(&PACKET_BYTES).unwrap();
        assert_eq!(h.traffic_class, p.traffic_class());
        assert_eq!(h.flow_label.value(), p.flow_label());
        assert_eq!(h.payload_length, p.payload_len());
        assert_eq!(h.next_header.0, p.next_header());
        assert_eq!(h.hop_limit, p.hop_limit());
        assert_eq!((h.source, h.destination), (p.src_octets(), p.dst_octets()));
    }

    #[test]
    fn setters_round_trip() {
        let mut b = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_payload_len(8);
        assert_eq!((p.payload_len(), p.total_len()), (8, 48));
        assert_eq!(p.payload_mut().len(), 8);
        p.payload_mut()[0] = 0xee;
        assert_eq!((&b[4..6], b[40]), (&[0u8, 8][..], 0xee));
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_payload_len(37);
        p.payload_mut()[0] = 0x14;
        assert_eq!(b, PACKET_BYTES);
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..PACKET_BYTES.len() {
            let e = Packet::new_checked(&PACKET_BYTES[..len]).unwrap_err();
            assert!(
                matches!(e, WireError::Truncated { have, .. } if have == len),
                "{len}"
            );
        }
        let mut padded = [0u8; 80];
        padded[..77].copy_from_slice(&PACKET_BYTES);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!((p.payload().len(), p.packet().len()), (37, 77));
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = PACKET_BYTES;
        b[0] = 0x42;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::Malformed(_))
        ));
        let mut b = PACKET_BYTES;
        b[5] = 38;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated { need: 78, have: 77 }
        );
    }
}
