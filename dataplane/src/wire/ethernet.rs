//! Ethernet II frame view (no VLAN handling: the XDP classifier has already
//! dealt with tags; `AF_XDP` frames reaching the tunneler are plain or tagged,
//! see [`Frame::payload_offset`]).

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
        let b = self.buf.as_ref();
        let mut ethertype = self.ethertype();
        let mut off = field::HEADER_LEN;
        for _ in 0..2 {
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
            ethertype = u16::from_be_bytes([b[off + 2], b[off + 3]]);
            off = need;
        }
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            return Err(WireError::Malformed("more than two VLAN tags"));
        }
        Ok((ethertype, off))
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
    fn emits_header() {
        let mut buf = [0u8; 14];
        Frame::new_checked(&mut buf[..])
            .unwrap()
            .emit_header([1; 6], [2; 6], ETHERTYPE_IPV6);
        assert_eq!(&buf[12..], &[0x86, 0xdd]);
        assert_eq!(&buf[..6], &[1; 6]);
    }
}
