//! Ethernet II frame view, with up to two VLAN tags (802.1Q, 802.1ad):
//! `AF_XDP` frames reaching the tunneler are plain or tagged (see
//! [`Frame::tags`]), and replies to a host on a VLAN leave tagged
//! ([`Frame::emit_tagged_header`]).

use super::WireError;

mod field {
    use core::ops::Range;
    pub(super) const DST: Range<usize> = 0..6;
    pub(super) const SRC: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: Range<usize> = 12..14;
    pub(super) const HEADER_LEN: usize = 14;
    pub(super) const VLAN_TAG_LEN: usize = 4;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::HEADER_LEN;
/// `EtherType` of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// `EtherType` of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// `EtherType` of an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// `EtherType` of an 802.1ad (`QinQ`) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A MAC address.
pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`, as iproute2 takes it.
pub fn mac_to_string(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The VLAN tags of a frame, outer first (at most two, as the
/// classifier walks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    n: u8,
    tpid: [u16; 2],
    tci: [u16; 2],
}

impl Tags {
    /// No tag.
    pub const NONE: Tags = Tags {
        n: 0,
        tpid: [0; 2],
        tci: [0; 2],
    };

    /// One 802.1Q tag of VLAN `vid` (priority 0).
    pub const fn dot1q(vid: u16) -> Tags {
        Tags {
            n: 1,
            tpid: [ETHERTYPE_VLAN, 0],
            tci: [vid & 0x0fff, 0],
        }
    }

    /// How many tags.
    pub const fn len(&self) -> usize {
        self.n as usize
    }

    /// No tags.
    pub const fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// `(TPID, TCI)` of tag `i` (0 the outer).
    pub fn get(&self, i: usize) -> Option<(u16, u16)> {
        (i < self.len()).then(|| (self.tpid[i], self.tci[i]))
    }

    /// The outer tag's VLAN id.
    pub fn vid(&self) -> Option<u16> {
        self.get(0).map(|(_, tci)| tci & 0x0fff)
    }

    /// The length of an Ethernet header with these tags.
    pub const fn header_len(&self) -> usize {
        field::HEADER_LEN + field::VLAN_TAG_LEN * self.n as usize
    }
}

/// A view over an Ethernet II frame.
///
/// After [`Frame::new_checked`] succeeds, no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buf`, checking that it holds at least the 14-byte header.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let have = buf.as_ref().len();
        if have < field::HEADER_LEN {
            return Err(WireError::Truncated {
                need: field::HEADER_LEN,
                have,
            });
        }
        Ok(Self { buf })
    }

    /// Destination MAC.
    pub fn dst(&self) -> Mac {
        self.buf.as_ref()[field::DST].try_into().unwrap_or_default()
    }

    /// Source MAC.
    pub fn src(&self) -> Mac {
        self.buf.as_ref()[field::SRC].try_into().unwrap_or_default()
    }

    /// The outer `EtherType`.
    pub fn ethertype(&self) -> u16 {
        let b = &self.buf.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Skips up to two VLAN tags and returns `(inner ethertype, offset of
    /// the payload)`.
    pub fn payload_offset(&self) -> Result<(u16, usize), WireError> {
        self.tags().map(|(_, ethertype, off)| (ethertype, off))
    }

    /// The VLAN tags (up to two), the inner ethertype and the payload's
    /// offset.
    pub fn tags(&self) -> Result<(Tags, u16, usize), WireError> {
        let b = self.buf.as_ref();
        let mut ethertype = self.ethertype();
        let mut off = field::HEADER_LEN;
        let mut tags = Tags::NONE;
        for i in 0..2 {
            if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                break;
            }
            let need = off + field::VLAN_TAG_LEN;
            if b.len() < need {
                return Err(WireError::Truncated {
                    need,
                    have: b.len(),
                });
            }
            tags.tpid[i] = ethertype;
            tags.tci[i] = u16::from_be_bytes([b[off], b[off + 1]]);
            tags.n += 1;
            ethertype = u16::from_be_bytes([b[off + 2], b[off + 3]]);
            off = need;
        }
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            return Err(WireError::Malformed("more than two VLAN tags"));
        }
        Ok((tags, ethertype, off))
    }

    /// The whole buffer.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Writes an untagged header.
    pub fn emit_header(&mut self, dst: Mac, src: Mac, ethertype: u16) {
        let b = self.buf.as_mut();
        b[field::DST].copy_from_slice(&dst);
        b[field::SRC].copy_from_slice(&src);
        b[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    /// Writes a header with `tags` (outer first) in front of `ethertype`;
    /// returns its length ([`Tags::header_len`]). The buffer must hold at
    /// least that many bytes.
    pub fn emit_tagged_header(
        &mut self,
        dst: Mac,
        src: Mac,
        tags: Tags,
        ethertype: u16,
    ) -> Result<usize, WireError> {
        let b = self.buf.as_mut();
        let len = tags.header_len();
        if b.len() < len {
            return Err(WireError::Truncated {
                need: len,
                have: b.len(),
            });
        }
        b[field::DST].copy_from_slice(&dst);
        b[field::SRC].copy_from_slice(&src);
        let mut off = 12;
        for i in 0..tags.len() {
            b[off..off + 2].copy_from_slice(&tags.tpid[i].to_be_bytes());
            b[off + 2..off + 4].copy_from_slice(&tags.tci[i].to_be_bytes());
            off += field::VLAN_TAG_LEN;
        }
        b[off..off + 2].copy_from_slice(&ethertype.to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED_BYTES: [u8; 22] = [
        0x02, 0, 0, 0, 0, 1, // dst
        0x02, 0, 0, 0, 0, 2, // src
        0x81, 0x00, 0x00, 0x0a, // 802.1Q, VID 10
        0x08, 0x00, // IPv4
        0x45, 0, 0, 20,
    ];

    #[test]
    fn parses_tagged_frame() {
        let f = Frame::new_checked(&TAGGED_BYTES[..]).unwrap();
        assert_eq!(f.dst(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.payload_offset().unwrap(), (ETHERTYPE_IPV4, 18));
    }

    #[test]
    fn rejects_short_and_deep() {
        assert!(Frame::new_checked(&TAGGED_BYTES[..13]).is_err());
        let f = Frame::new_checked(&TAGGED_BYTES[..16]).unwrap();
        assert!(matches!(
            f.payload_offset(),
            Err(WireError::Truncated { .. })
        ));
        let mut triple = [0u8; 30];
        triple[12..14].copy_from_slice(&[0x88, 0xa8]);
        triple[16..18].copy_from_slice(&[0x81, 0x00]);
        triple[20..22].copy_from_slice(&[0x81, 0x00]);
        let f = Frame::new_checked(&triple[..]).unwrap();
        assert!(matches!(f.payload_offset(), Err(WireError::Malformed(_))));
    }

    #[test]
    fn reads_and_writes_tags() {
        let f = Frame::new_checked(&TAGGED_BYTES[..]).unwrap();
        let (tags, ethertype, off) = f.tags().unwrap();
        assert_eq!(
            (tags, ethertype, off),
            (Tags::dot1q(10), ETHERTYPE_IPV4, 18)
        );
        assert_eq!(tags.vid(), Some(10));
        // Written back: the same bytes.
        let mut buf = [0u8; 18];
        let n = Frame::new_checked(&mut buf[..])
            .unwrap()
            .emit_tagged_header([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], tags, ETHERTYPE_IPV4)
            .unwrap();
        assert_eq!((n, &buf[..]), (18, &TAGGED_BYTES[..18]));
        // Two tags round-trip; untagged is the plain header.
        let mut qinq = [0u8; 30];
        qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
        qinq[14..16].copy_from_slice(&[0x00, 0x64]);
        qinq[16..18].copy_from_slice(&[0x81, 0x00]);
        qinq[18..20].copy_from_slice(&[0x20, 0x0a]);
        qinq[20..22].copy_from_slice(&[0x86, 0xdd]);
        let (t2, e2, o2) = Frame::new_checked(&qinq[..]).unwrap().tags().unwrap();
        assert_eq!(
            (t2.len(), e2, o2, t2.get(1)),
            (2, ETHERTYPE_IPV6, 22, Some((0x8100, 0x200a)))
        );
        let mut out = [0u8; 22];
        Frame::new_checked(&mut out[..])
            .unwrap()
            .emit_tagged_header([0; 6], [0; 6], t2, ETHERTYPE_IPV6)
            .unwrap();
        assert_eq!(&out[12..22], &qinq[12..22]);
        let mut plain = [0u8; 14];
        assert_eq!(
            Frame::new_checked(&mut plain[..])
                .unwrap()
                .emit_tagged_header([1; 6], [2; 6], Tags::NONE, ETHERTYPE_IPV4),
            Ok(14)
        );
        assert_eq!(&plain[12..], &[0x08, 0x00]);
        let mut short = [0u8; 16];
        assert!(
            Frame::new_checked(&mut short[..])
                .unwrap()
                .emit_tagged_header([1; 6], [2; 6], Tags::dot1q(5), ETHERTYPE_IPV4)
                .is_err()
        );
    }

    #[test]
    fn emits_header() {
        let mut buf = [0u8; 14];
        Frame::new_checked(&mut buf[..])
            .unwrap()
            .emit_header([1; 6], [2; 6], ETHERTYPE_IPV6);
        assert_eq!(&buf[12..], &[0x86, 0xdd]);
        assert_eq!(&buf[..6], &[1; 6]);
    }
}
