//! A view over a TCP segment (RFC 9293): its header's fields, options and
//! payload, in place.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+-------------------------------+
//! |          Source Port          |       Destination Port        |
//! +-------------------------------+-------------------------------+
//! |                        Sequence Number                        |
//! +---------------------------------------------------------------+
//! |                    Acknowledgment Number                      |
//! +-------+-------+---------------+-------------------------------+
//! |  Data |  Rsv  |     Flags     |            Window             |
//! | Offset|       |               |                               |
//! +-------+-------+---------------+-------------------------------+
//! |           Checksum            |         Urgent Pointer        |
//! +-------------------------------+-------------------------------+
//! |               Options (data offset > 5) ...                   |
//! ```
//!
//! The segment's length is the buffer's: the IP layer says where it ends
//! (see [`super::ipv4::Packet::payload`], [`super::ipv6::Packet::payload`]).

use super::{WireError, be, checksum};

mod field {
    use core::ops::Range;
    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const SEQ_NUM: Range<usize> = 4..8;
    pub(super) const ACK_NUM: Range<usize> = 8..12;
    /// Data offset (4 bits, in 32-bit words) and reserved bits (4).
    pub(super) const DATA_OFF: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WIN_SIZE: Range<usize> = 14..16;
    pub(super) const CHECKSUM: Range<usize> = 16..18;
    pub(super) const URGENT: Range<usize> = 18..20;
}

/// Length of a header without options (data offset 5).
pub const HEADER_LEN: usize = field::URGENT.end;
/// Where the checksum field starts (what a virtio-net header's
/// `csum_offset` names).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// [`Packet::flags`]: FIN.
pub const FLAG_FIN: u8 = 0x01;
/// [`Packet::flags`]: SYN.
pub const FLAG_SYN: u8 = 0x02;
/// [`Packet::flags`]: RST.
pub const FLAG_RST: u8 = 0x04;
/// [`Packet::flags`]: PSH.
pub const FLAG_PSH: u8 = 0x08;
/// [`Packet::flags`]: ACK.
pub const FLAG_ACK: u8 = 0x10;
/// [`Packet::flags`]: URG.
pub const FLAG_URG: u8 = 0x20;
/// [`Packet::flags`]: ECE.
pub const FLAG_ECE: u8 = 0x40;
/// [`Packet::flags`]: CWR.
pub const FLAG_CWR: u8 = 0x80;

/// A view over a TCP segment.
///
/// After [`Packet::new_checked`] (or [`Packet::check_len`]) succeeds, no
/// accessor panics: the buffer holds the whole header, options included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without a look: accessors panic if it is not a
    /// segment [`Packet::check_len`] accepts.
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

    /// Checks that no accessor can panic: 20 bytes, and a header length
    /// (data offset) of at least 20 bytes within the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        let header = self.header_len();
        if header < HEADER_LEN {
            return Err(WireError::Malformed("TCP data offset below 5"));
        }
        if have < header {
            return Err(WireError::Truncated { need: header, have });
        }
        Ok(())
    }

    /// The buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole segment.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// The acknowledgement number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The four reserved bits after the data offset (the lowest was the
    /// historic NS flag), which a sender sets to zero.
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFF] & 0x0f
    }

    /// The flags byte: `FLAG_*`.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::URGENT)
    }

    /// The options (empty for data offset 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// True if the checksum verifies: the segment summed after
    /// `pseudo_header` ([`checksum::pseudo_header`] with this segment's
    /// length) folds to `0xffff`.
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::fold(checksum::add(pseudo_header, self.buffer.as_ref())) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        b.get(self.header_len()..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        be::set_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes the checksum over `pseudo_header` and the segment, and
    /// stores it.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::add(pseudo_header, self.buffer.as_ref()));
        self.set_checksum(c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        self.buffer.as_mut().get_mut(at..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.0.2.10 and 203.0.113.10, the addresses of [`SEGMENT_BYTES`]'s
    /// IPv4 packet.
    const SRC: [u8; 4] = [192, 0, 2, 10];
    const DST: [u8; 4] = [203, 0, 113, 10];

    /// A segment 40000 -> 443 as a capture shows it: sequence 0x3a5c1f00,
    /// acknowledgement 0x9d2e4b11, ACK|PSH, window 502, checksum 0xb9b3,
    /// options NOP NOP timestamps (1000, 2000), 16 bytes of payload.
    const SEGMENT_BYTES: [u8; 48] = [
        0x9c, 0x40, 0x01, 0xbb, 0x3a, 0x5c, 0x1f, 0x00, 0x9d, 0x2e, 0x4b, 0x11, 0x80, 0x18, 0x01,
        0xf6, 0xb9, 0xb3, 0x00, 0x00, // fixed header
        0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, // options
        0x47, 0x45, 0x54, 0x20, 0x2f, 0x20, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x0d,
        0x0a, // "GET / HTTP/1.1\r\n"
    ];

    fn pseudo(len: usize) -> u64 {
        checksum::pseudo_header(&SRC, &DST, 6, len as u32)
    }

    #[test]
    fn reads_every_field() {
        let s = Packet::new_checked(&SEGMENT_BYTES[..]).unwrap();
        assert_eq!((s.src_port(), s.dst_port()), (40000, 443));
        assert_eq!(s.seq_number(), 0x3a5c_1f00);
        assert_eq!(s.ack_number(), 0x9d2e_4b11);
        assert_eq!(s.header_len(), 32);
        assert_eq!(s.reserved(), 0);
        assert_eq!(s.flags(), FLAG_ACK | FLAG_PSH);
        assert_eq!(s.window_len(), 502);
        assert_eq!(s.checksum(), 0xb9b3);
        assert_eq!(s.urgent_at(), 0);
        assert_eq!(s.options(), &SEGMENT_BYTES[20..32]);
        assert_eq!(s.payload(), b"GET / HTTP/1.1\r\n");
        assert!(s.verify_checksum(pseudo(48)));
        assert!(!s.verify_checksum(pseudo(47)));
        assert_eq!(s.as_bytes(), &SEGMENT_BYTES[..]);
        assert_eq!(s.into_inner(), &SEGMENT_BYTES[..]);
    }

    /// The same reading as etherparse's, an independent parser.
    #[test]
    fn agrees_with_etherparse() {
        let s = Packet::new_checked(&SEGMENT_BYTES[..]).unwrap();
        let (h, payload) = etherparse::TcpHeader::from_slice(&SEGMENT_BYTES).unwrap();
        assert_eq!((h.source_port, h.destination_port), (40000, 443));
        assert_eq!(h.sequence_number, s.seq_number());
        assert_eq!(h.acknowledgment_number, s.ack_number());
        assert_eq!(usize::from(h.data_offset()) * 4, s.header_len());
        assert!(h.ack && h.psh && !h.syn && !h.fin && !h.rst && !h.urg);
        assert_eq!(h.window_size, s.window_len());
        assert_eq!(h.checksum, s.checksum());
        assert_eq!(h.options.as_slice(), s.options());
        assert_eq!(payload, s.payload());
    }

    #[test]
    fn setters_round_trip() {
        let mut b = SEGMENT_BYTES;
        let mut s = Packet::new_checked(&mut b[..]).unwrap();
        s.set_seq_number(0xffff_fff0);
        s.set_flags(FLAG_ACK);
        assert_eq!((s.seq_number(), s.flags()), (0xffff_fff0, FLAG_ACK));
        assert!(!s.verify_checksum(pseudo(48)));
        s.fill_checksum(pseudo(48));
        assert!(s.verify_checksum(pseudo(48)));
        s.set_checksum(0x1234);
        assert_eq!(s.checksum(), 0x1234);
        s.payload_mut()[0] = b'P';
        assert_eq!(&b[4..8], &[0xff, 0xff, 0xff, 0xf0]);
        assert_eq!((b[13], &b[16..18], b[32]), (0x10, &[0x12, 0x34][..], b'P'));
        let mut s = Packet::new_checked(&mut b[..]).unwrap();
        s.set_seq_number(0x3a5c_1f00);
        s.set_flags(FLAG_ACK | FLAG_PSH);
        s.payload_mut()[0] = b'G';
        s.fill_checksum(pseudo(48));
        assert_eq!(b, SEGMENT_BYTES);
    }

    /// Every cut inside the header is refused; a cut in the payload is a
    /// shorter segment (only the IP layer knows where a segment ends).
    #[test]
    fn rejects_every_truncated_header() {
        for len in 0..32 {
            let e = Packet::new_checked(&SEGMENT_BYTES[..len]).unwrap_err();
            assert!(
                matches!(e, WireError::Truncated { have, .. } if have == len),
                "{len}"
            );
        }
        for len in 32..=48 {
            let s = Packet::new_checked(&SEGMENT_BYTES[..len]).unwrap();
            assert_eq!(s.payload(), &SEGMENT_BYTES[32..len]);
        }
    }

    #[test]
    fn rejects_bad_data_offset() {
        for off in 0..5u8 {
            let mut b = SEGMENT_BYTES;
            b[12] = off << 4;
            assert!(matches!(
                Packet::new_checked(&b[..]),
                Err(WireError::Malformed(_))
            ));
        }
        let mut b = SEGMENT_BYTES;
        b[12] = 0xf0;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated { need: 60, have: 48 }
        );
        // Reserved bits are read, not refused.
        b[12] = 0x51;
        assert_eq!(Packet::new_checked(&b[..]).unwrap().reserved(), 1);
    }
}
