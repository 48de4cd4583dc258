//! A view over an IPv4 packet (RFC 791): its header's fields, options and
//! payload, in place.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------+-------+---------------+-------------------------------+
//! |Version|  IHL  |   DSCP/ECN    |          Total Length         |
//! +-------+-------+---------------+-----+-------------------------+
//! |         Identification        |Flags|     Fragment Offset     |
//! +---------------+---------------+-----+-------------------------+
//! |  Time to Live |    Protocol   |        Header Checksum        |
//! +---------------+---------------+-------------------------------+
//! |                        Source Address                         |
//! +---------------------------------------------------------------+
//! |                      Destination Address                      |
//! +---------------------------------------------------------------+
//! |                    Options (IHL > 5) ...                      |
//! ```

use std::net::Ipv4Addr;

use super::{WireError, be, checksum};

mod field {
    use core::ops::Range;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const FLG_OFF: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SRC_ADDR: Range<usize> = 12..16;
    pub(super) const DST_ADDR: Range<usize> = 16..20;
    /// Flags (3 bits) above the fragment offset (13 bits, 8-byte units).
    pub(super) const FLAGS_SHIFT: u32 = 13;
    pub(super) const OFFSET_MASK: u16 = 0x1fff;
}

/// Length of a header without options (IHL 5).
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// [`Packet::flags`]: the reserved bit.
pub const FLAG_RESERVED: u8 = 0b100;
/// [`Packet::flags`]: don't fragment.
pub const FLAG_DF: u8 = 0b010;
/// [`Packet::flags`]: more fragments.
pub const FLAG_MF: u8 = 0b001;

/// A view over an IPv4 packet.
///
/// After [`Packet::new_checked`] (or [`Packet::check_len`]) succeeds, no
/// accessor panics: the buffer holds the whole header, options included,
/// and the total length lies between the header length and the buffer's
/// length (the buffer may hold more: link-layer padding, see
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

    /// Checks that no accessor can panic: 20 bytes, version 4, a header
    /// length (IHL) of at least 20 bytes within the buffer, and a total
    /// length between the header length and the buffer's length.
    ///
    /// [`Packet::set_total_len`] can break what this checked.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        if self.version() != 4 {
            return Err(WireError::Malformed("IPv4 version is not 4"));
        }
        let header = self.header_len();
        if header < HEADER_LEN {
            return Err(WireError::Malformed("IPv4 header length below 20"));
        }
        if have < header {
            return Err(WireError::Truncated { need: header, have });
        }
        let total = usize::from(self.total_len());
        if total < header {
            return Err(WireError::Malformed(
                "IPv4 total length below header length",
            ));
        }
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

    /// The version field (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (the former type of service).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length field: header and payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::IDENT)
    }

    /// The three flag bits: [`FLAG_RESERVED`], [`FLAG_DF`], [`FLAG_MF`].
    #[inline]
    pub fn flags(&self) -> u8 {
        (be::u16_at(self.buffer.as_ref(), field::FLG_OFF) >> field::FLAGS_SHIFT) as u8
    }

    /// The don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags() & FLAG_DF != 0
    }

    /// The more-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags() & FLAG_MF != 0
    }

    /// The fragment offset, in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be::u16_at(self.buffer.as_ref(), field::FLG_OFF) & field::OFFSET_MASK) << 3
    }

    /// True for a fragment: more fragments follow, or the offset is not
    /// zero.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        let raw = be::u16_at(self.buffer.as_ref(), field::FLG_OFF);
        raw & ((u16::from(FLAG_MF) << field::FLAGS_SHIFT) | field::OFFSET_MASK) != 0
    }

    /// The time-to-live field.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol field (6 TCP, 17 UDP, ...).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::u32_at(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::u32_at(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(..self.header_len())
            .unwrap_or_default()
    }

    /// The options (empty for IHL 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// True if the header checksum verifies (the header, options
    /// included, sums to `0xffff`).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::add(0, self.header())) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header to the total length
    /// (link-layer padding after it is not included).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        b.get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or_default()
    }

    /// The packet: up to the total length (link-layer padding after it is
    /// not included).
    #[inline]
    pub fn packet(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        b.get(..usize::from(self.total_len())).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the total length field (what [`Packet::check_len`] checked
    /// holds again only if it is within the buffer).
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Sets the flag bits ([`FLAG_DF`], [`FLAG_MF`]; the reserved bit is
    /// kept as given) and the fragment offset in bytes (a multiple of 8;
    /// the low three bits are dropped).
    #[inline]
    pub fn set_frag(&mut self, flags: u8, offset: u16) {
        let raw =
            (u16::from(flags & 0b111) << field::FLAGS_SHIFT) | ((offset >> 3) & field::OFFSET_MASK);
        be::set_u16(self.buffer.as_mut(), field::FLG_OFF, raw);
    }

    /// Sets the time-to-live field.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol field.
    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes the header checksum (options included) and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = checksum::ipv4_header(self.header());
        self.set_checksum(c);
    }

    /// The payload, writable (up to the total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.as_mut().get_mut(range).unwrap_or_default()
    }
}

/// Writes a 20-byte header (no options, DF set, ID 0, TOS 0) for a packet
/// of `payload_len` bytes into the start of `buf`, checksum filled.
/// Returns the header length, or `None` if `buf` is shorter than the
/// header or the packet would exceed 65,535 bytes.
pub fn emit_header(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    payload_len: usize,
) -> Option<usize> {
    let total = u16::try_from(HEADER_LEN + payload_len).ok()?;
    let h = buf.get_mut(..HEADER_LEN)?;
    h.fill(0);
    h[field::VER_IHL] = 0x45;
    be::set_u16(h, field::LENGTH, total);
    h[field::TTL] = ttl;
    h[field::PROTOCOL] = protocol;
    h[field::SRC_ADDR].copy_from_slice(&src.octets());
    h[field::DST_ADDR].copy_from_slice(&dst.octets());
    let mut p = Packet::new_unchecked(h);
    p.set_frag(FLAG_DF, 0);
    p.fill_checksum();
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

    /// A TCP segment 192.0.2.10:40000 -> 203.0.113.10:443 as a capture
    /// shows it: ID 0x1c46, DF, TTL 64, header checksum 0x2059; TCP with
    /// timestamps, ACK|PSH, 16 bytes of payload.
    const PACKET_BYTES: [u8; 68] = [
        0x45, 0x00, 0x00, 0x44, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x20, 0x59, 0xc0, 0x00, 0x02,
        0x0a, 0xcb, 0x00, 0x71, 0x0a, // IPv4
        0x9c, 0x40, 0x01, 0xbb, 0x3a, 0x5c, 0x1f, 0x00, 0x9d, 0x2e, 0x4b, 0x11, 0x80, 0x18, 0x01,
        0xf6, 0xb9, 0xb3, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00,
        0x07, 0xd0, // TCP
        0x47, 0x45, 0x54, 0x20, 0x2f, 0x20, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x0d,
        0x0a, // "GET / HTTP/1.1\r\n"
    ];

    /// A UDP datagram 192.0.2.10:50000 -> 203.0.113.10:9000 with a router
    /// alert option (IHL 6), TOS 0xb8, ID 0xbeef, no flags, TTL 1.
    const OPTIONS_BYTES: [u8; 36] = [
        0x46, 0xb8, 0x00, 0x24, 0xbe, 0xef, 0x00, 0x00, 0x01, 0x11, 0x67, 0x08, 0xc0, 0x00, 0x02,
        0x0a, 0xcb, 0x00, 0x71, 0x0a, 0x94, 0x04, 0x00, 0x00, // IPv4, router alert
        0xc3, 0x50, 0x23, 0x28, 0x00, 0x0c, 0x3c, 0x77, 0x70, 0x69, 0x6e, 0x67, // UDP "ping"
    ];

    #[test]
    fn reads_every_field() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.total_len(), 68);
        assert_eq!(p.ident(), 0x1c46);
        assert_eq!(p.flags(), FLAG_DF);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.checksum(), 0x2059);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(p.header(), &PACKET_BYTES[..20]);
        assert_eq!(p.options(), &[] as &[u8]);
        assert_eq!(p.payload(), &PACKET_BYTES[20..]);
        assert_eq!(p.packet(), &PACKET_BYTES[..]);
        assert_eq!(p.as_bytes(), &PACKET_BYTES[..]);
        assert_eq!(p.into_inner(), &PACKET_BYTES[..]);

        let q = Packet::new_checked(&OPTIONS_BYTES[..]).unwrap();
        assert_eq!((q.header_len(), q.tos(), q.ident()), (24, 0xb8, 0xbeef));
        assert_eq!((q.flags(), q.ttl(), q.protocol()), (0, 1, 17));
        assert_eq!(q.options(), &[0x94, 0x04, 0, 0]);
        assert_eq!(q.payload(), &OPTIONS_BYTES[24..]);
        assert!(q.verify_checksum());
    }

    /// The same reading as etherparse's, an independent parser.
    #[test]
    fn agrees_with_etherparse() {
        for bytes in [&PACKET_BYTES[..], &OPTIONS_BYTES[..]] {
            let p = Packet::new_checked(bytes).unwrap();
            let (h, _) = etherparse::Ipv4Header::from_slice(bytes).unwrap();
            assert_eq!(usize::from(h.ihl()) * 4, p.header_len());
            assert_eq!(h.total_len, p.total_len());
            assert_eq!(h.identification, p.ident());
            assert_eq!(h.dont_fragment, p.dont_frag());
            assert_eq!(h.time_to_live, p.ttl());
            assert_eq!(h.protocol.0, p.protocol());
            assert_eq!(h.header_checksum, p.checksum());
            assert_eq!(h.calc_header_checksum(), p.checksum());
            assert_eq!(h.source, p.src_addr().octets());
            assert_eq!(h.options.as_slice(), p.options());
        }
    }

    #[test]
    fn fragments() {
        let mut b = PACKET_BYTES;
        b[6] = 0x20; // MF, offset 0: the first fragment
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        b[6..8].copy_from_slice(&[0x00, 0x10]); // offset 16 × 8, last
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 128);
        b[6] = 0x80; // the reserved bit alone: not a fragment
        b[7] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.flags(), p.is_fragment()), (FLAG_RESERVED, false));
    }

    #[test]
    fn setters_round_trip() {
        let mut b = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(60);
        p.set_ident(0xfffe);
        p.set_protocol(17);
        p.set_checksum(0);
        assert_eq!((p.total_len(), p.ident(), p.protocol()), (60, 0xfffe, 17));
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.payload_mut().len(), 40);
        p.payload_mut()[0] = 0xaa;
        // Only the fields set changed.
        assert_eq!(&b[2..6], &[0, 60, 0xff, 0xfe]);
        assert_eq!((b[9], b[20]), (17, 0xaa));
        assert_eq!(&b[12..20], &PACKET_BYTES[12..20]);
        // Back to the original values: the original bytes.
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(68);
        p.set_ident(0x1c46);
        p.set_protocol(6);
        p.fill_checksum();
        p.payload_mut()[0] = 0x9c;
        assert_eq!(b, PACKET_BYTES);
    }

    /// A total length set past the buffer: the variable parts come back
    /// empty, the fixed fields still read, nothing panics.
    #[test]
    fn a_broken_length_gives_empty_parts() {
        let mut b = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(69);
        assert!(p.check_len().is_err());
        assert!(p.payload_mut().is_empty());
        let p = Packet::new_unchecked(&b[..]);
        assert_eq!((p.payload(), p.packet()), (&[][..], &[][..]));
        assert_eq!(p.ident(), 0x1c46);
        let short = Packet::new_unchecked(&PACKET_BYTES[..22]);
        assert_eq!(short.options(), &PACKET_BYTES[20..20]);
        let mut b = PACKET_BYTES;
        b[0] = 0x4f; // 60-byte header in a 22-byte buffer
        assert!(Packet::new_unchecked(&b[..22]).header().is_empty());
    }

    #[test]
    fn rejects_every_truncation() {
        for bytes in [&PACKET_BYTES[..], &OPTIONS_BYTES[..]] {
            for len in 0..bytes.len() {
                let e = Packet::new_checked(&bytes[..len]).unwrap_err();
                assert!(
                    matches!(e, WireError::Truncated { have, .. } if have == len),
                    "{len}"
                );
            }
        }
        // Padding after the total length is allowed, and not payload.
        let mut padded = [0u8; 70];
        padded[..68].copy_from_slice(&PACKET_BYTES);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!((p.payload().len(), p.packet().len()), (48, 68));
    }

    #[test]
    fn rejects_bad_fields() {
        let bad = |edit: fn(&mut [u8; 68])| {
            let mut b = PACKET_BYTES;
            edit(&mut b);
            Packet::new_checked(&b[..]).unwrap_err()
        };
        // Version 6, IHL 4, total length below the header or past the end.
        assert!(matches!(bad(|b| b[0] = 0x65), WireError::Malformed(_)));
        assert!(matches!(bad(|b| b[0] = 0x44), WireError::Malformed(_)));
        assert!(matches!(bad(|b| b[0] = 0x40), WireError::Malformed(_)));
        assert!(matches!(bad(|b| b[3] = 19), WireError::Malformed(_)));
        assert_eq!(
            bad(|b| b[3] = 69),
            WireError::Truncated { need: 69, have: 68 }
        );
        // IHL 15 (60 bytes) within the buffer, total length below it.
        assert!(matches!(
            bad(|b| {
                b[0] = 0x4f;
                b[3] = 59;
            }),
            WireError::Malformed(_)
        ));
        // IHL 15 past a 40-byte buffer.
        let mut short = [0u8; 40];
        short.copy_from_slice(&PACKET_BYTES[..40]);
        short[0] = 0x4f;
        assert_eq!(
            Packet::new_checked(&short[..]).unwrap_err(),
            WireError::Truncated { need: 60, have: 40 }
        );
    }
}
