//! A view over a UDP datagram (RFC 768): its header's fields and payload,
//! in place.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+-------------------------------+
//! |          Source Port          |       Destination Port        |
//! +-------------------------------+-------------------------------+
//! |            Length             |           Checksum            |
//! +-------------------------------+-------------------------------+
//! ```

use super::{WireError, be, checksum};

mod field {
    use core::ops::Range;
    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;
/// Where the checksum field starts (what a virtio-net header's
/// `csum_offset` names).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// A view over a UDP datagram.
///
/// After [`Packet::new_checked`] (or [`Packet::check_len`]) succeeds, no
/// accessor panics: the buffer holds the header and the length field lies
/// between the header's length and the buffer's (the buffer may hold
/// more, see [`Packet::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without a look: accessors panic if it is not a
    /// datagram [`Packet::check_len`] accepts.
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

    /// Checks that no accessor can panic: the 8-byte header, and a length
    /// field between 8 and the buffer's length.
    ///
    /// [`Packet::set_length`] can break what this checked.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        let length = usize::from(self.length());
        if length < HEADER_LEN {
            return Err(WireError::Malformed("UDP length below 8"));
        }
        if have < length {
            return Err(WireError::Truncated { need: length, have });
        }
        Ok(())
    }

    /// The buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer.
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

    /// The length field: header and payload.
    #[inline]
    pub fn length(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// The checksum field (0: none was computed, allowed over IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// True if the checksum verifies: the datagram (up to its length
    /// field) summed after `pseudo_header` ([`checksum::pseudo_header`]
    /// with the length) folds to `0xffff`. A checksum field of 0 (none)
    /// is the caller's to treat.
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        let d = self
            .buffer
            .as_ref()
            .get(..usize::from(self.length()))
            .unwrap_or_default();
        checksum::fold(checksum::add(pseudo_header, d)) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: after the header, up to the length field.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer.as_ref();
        b.get(HEADER_LEN..usize::from(self.length()))
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the length field (what [`Packet::check_len`] checked holds
    /// again only if it is between 8 and the buffer's length).
    #[inline]
    pub fn set_length(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes the checksum over `pseudo_header` and the datagram (up to
    /// its length field) and stores it; a computed 0 is sent as `0xffff`
    /// (RFC 768: 0 means none).
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let d = self
            .buffer
            .as_ref()
            .get(..usize::from(self.length()))
            .unwrap_or_default();
        let c = match !checksum::fold(checksum::add(pseudo_header, d)) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    /// The payload, writable (up to the length field).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or_default()
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

    /// `2001:db8:1::10` and `2001:db8:100::10`, the addresses of
    /// [`DATAGRAM_BYTES`]'s IPv6 packet.
    const SRC: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    const DST: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// A DNS query for example.org, port 5353 -> 53, as a capture shows
    /// it: length 37, checksum 0x0fb2.
    const DATAGRAM_BYTES: [u8; 37] = [
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x25, 0x0f, 0xb2, // header
        0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78,
        0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x6f, 0x72, 0x67, 0x00, 0x00, 0x01, 0x00,
        0x01, // DNS
    ];

    fn pseudo(len: u16) -> u64 {
        checksum::pseudo_header(&SRC, &DST, 17, u32::from(len))
    }

    #[test]
    fn reads_every_field() {
        let d = Packet::new_checked(&DATAGRAM_BYTES[..]).unwrap();
        assert_eq!((d.src_port(), d.dst_port()), (5353, 53));
        assert_eq!(d.length(), 37);
        assert_eq!(d.checksum(), 0x0fb2);
        assert!(d.verify_checksum(pseudo(37)));
        assert_eq!(d.payload(), &DATAGRAM_BYTES[8..]);
        assert_eq!(d.as_bytes(), &DATAGRAM_BYTES[..]);
        assert_eq!(d.into_inner(), &DATAGRAM_BYTES[..]);
    }

    /// The same reading as etherparse's, an independent parser.
    #[test]
    fn agrees_with_etherparse() {
        let d = Packet::new_checked(&DATAGRAM_BYTES[..]).unwrap();
        let (h, payload) = etherparse::UdpHeader::from_slice(&DATAGRAM_BYTES).unwrap();
        assert_eq!((h.source_port, h.destination_port), (5353, 53));
        assert_eq!((h.length, h.checksum), (d.length(), d.checksum()));
        assert_eq!(payload, d.payload());
    }

    #[test]
    fn setters_round_trip() {
        let mut b = DATAGRAM_BYTES;
        let mut d = Packet::new_checked(&mut b[..]).unwrap();
        d.set_length(12);
        d.set_checksum(0);
        assert_eq!((d.length(), d.checksum()), (12, 0));
        assert_eq!(d.payload_mut().len(), 4);
        d.fill_checksum(pseudo(12));
        assert!(d.verify_checksum(pseudo(12)));
        assert_eq!(&b[4..6], &[0, 12]);
        let mut d = Packet::new_checked(&mut b[..]).unwrap();
        d.set_length(37);
        d.fill_checksum(pseudo(37));
        assert_eq!(b, DATAGRAM_BYTES);
        // A sum that complements to 0 is sent as 0xffff.
        let mut z = [0u8; 8];
        let mut d = Packet::new_unchecked(&mut z[..]);
        d.set_length(8);
        d.fill_checksum(0xffff - 8);
        assert_eq!(d.checksum(), 0xffff);
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..DATAGRAM_BYTES.len() {
            let e = Packet::new_checked(&DATAGRAM_BYTES[..len]).unwrap_err();
            assert!(
                matches!(e, WireError::Truncated { have, .. } if have == len),
                "{len}"
            );
        }
        // Bytes after the length field are not payload.
        let mut long = [0u8; 40];
        long[..37].copy_from_slice(&DATAGRAM_BYTES);
        assert_eq!(Packet::new_checked(&long[..]).unwrap().payload().len(), 29);
    }

    #[test]
    fn rejects_bad_length() {
        for l in 0..8u8 {
            let mut b = DATAGRAM_BYTES;
            b[5] = l;
            assert!(matches!(
                Packet::new_checked(&b[..]),
                Err(WireError::Malformed(_))
            ));
        }
    }
}
