//! The datagram transport's record (one UDP payload), version 1: a view
//! over its header in place, and the list of items its plaintext holds.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+---------------+---------------+
//! |     type      |  send epoch   | receive epoch |  reserved (0) |
//! +---------------+---------------+---------------+---------------+
//! |                  receiver id (BE, 32 bits)                    |
//! +---------------------------------------------------------------+
//! |                                                               |
//! +                    counter (BE, 64 bits)                      +
//! |                                                               |
//! +---------------------------------------------------------------+
//! |  AEAD ciphertext of the items:                                |
//! |    length (BE, 16 bits) | item (length bytes) | length | ...  |
//! |    [0x00 0x00 and padding, optional]                          |
//! +---------------------------------------------------------------+
//! |                     tag (16 bytes)                            |
//! +---------------------------------------------------------------+
//! ```
//!
//! - **type**: [`RecordType::Data`] (`0x01`, each item is one IPv4 or IPv6
//!   packet) or [`RecordType::Control`] (`0x02`, each item is a control
//!   message: a kind byte and its body, [`ControlKind`]). Other values
//!   are refused: a later version takes a new type.
//! - **send epoch**: the low 8 bits of the sender's key epoch (which key
//!   sealed the record; keys are replaced by rekeying, see
//!   `crate::datagram`).
//! - **receive epoch**: the low 8 bits of the epoch the sender currently
//!   opens the receiver's records with: the receiver's permission to move
//!   to its next key (it never runs more than one epoch ahead of what its
//!   peer has shown it can open).
//! - **reserved**: zero on send; a record with another value is refused.
//! - **receiver id**: chosen by the receiving side for this session (it
//!   tells it which session's keys to use); sent in the clear.
//! - **counter**: the sender's record number, the AEAD nonce (`iv XOR
//!   counter`, as TLS 1.3 builds its nonces): it starts at 0, grows by
//!   one per record across epochs and is never reused. The receiver's
//!   anti-replay window runs on it.
//!
//! The 16-byte header is the AEAD's additional data: every bit of it is
//! authenticated. The plaintext is a list of items, each behind a 2-byte
//! length, so several small packets share one record; a zero length (or
//! a lone zero byte at the end) ends the list and what follows is padding.
//! An empty list is a valid record (a keepalive that carries the receive
//! epoch).
//!
//! Control messages ([`ControlKind`]): `ECHO_REQUEST` (`0x01`) and
//! `ECHO_REPLY` (`0x02`), each with a 16-byte body: a sequence number and
//! the requester's timestamp in microseconds (both `u64` BE; the reply
//! carries the request's body back unchanged); longer bodies are allowed
//! (the extra bytes are ignored), shorter ones refused. Unknown kinds are
//! skipped.

use super::{WireError, be};

mod field {
    use core::ops::Range;
    pub(super) const TYPE: usize = 0;
    pub(super) const SEND_EPOCH: usize = 1;
    pub(super) const RECV_EPOCH: usize = 2;
    pub(super) const RESERVED: usize = 3;
    pub(super) const RECEIVER: Range<usize> = 4..8;
    pub(super) const COUNTER: Range<usize> = 8..16;
    pub(super) const PAYLOAD: usize = 16;
}

/// Length of the header (the AEAD's additional data).
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of the AEAD tag that ends every record.
pub const TAG_LEN: usize = 16;
/// The shortest record: a header and a tag around an empty list.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// Length of the prefix in front of each item.
pub const ITEM_HEADER_LEN: usize = 2;
/// Length of an echo message's body: sequence number and timestamp.
pub const ECHO_LEN: usize = 16;

/// What a record's items are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// IP packets.
    Data,
    /// Control messages ([`ControlKind`]).
    Control,
}

impl RecordType {
    /// The type byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            RecordType::Data => 0x01,
            RecordType::Control => 0x02,
        }
    }

    /// From the type byte; `None` for a type this version does not know.
    pub const fn from_u8(t: u8) -> Option<Self> {
        match t {
            0x01 => Some(RecordType::Data),
            0x02 => Some(RecordType::Control),
            _ => None,
        }
    }
}

/// Control messages (the first byte of a control item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// Answer with [`ControlKind::EchoReply`] carrying the same body.
    EchoRequest,
    /// The answer to an echo request.
    EchoReply,
    /// A kind this version does not know (skipped).
    Unknown(u8),
}

impl ControlKind {
    /// The kind byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            ControlKind::EchoRequest => 0x01,
            ControlKind::EchoReply => 0x02,
            ControlKind::Unknown(k) => k,
        }
    }

    /// From the kind byte.
    pub const fn from_u8(k: u8) -> Self {
        match k {
            0x01 => ControlKind::EchoRequest,
            0x02 => ControlKind::EchoReply,
            k => ControlKind::Unknown(k),
        }
    }
}

/// The body of an echo request or reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Echo {
    /// The requester's sequence number.
    pub seq: u64,
    /// The requester's timestamp, in microseconds from an origin only it
    /// knows.
    pub sent_at_us: u64,
}

impl Echo {
    /// Parses a body: at least [`ECHO_LEN`] bytes (more are ignored).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let Some(b) = body.get(..ECHO_LEN) else {
            return Err(WireError::Truncated {
                need: ECHO_LEN,
                have: body.len(),
            });
        };
        let (seq, at) = b.split_at(8);
        Ok(Self {
            seq: u64::from_be_bytes(seq.try_into().unwrap_or_default()),
            sent_at_us: u64::from_be_bytes(at.try_into().unwrap_or_default()),
        })
    }

    /// The body's bytes.
    pub fn to_bytes(self) -> [u8; ECHO_LEN] {
        let mut out = [0; ECHO_LEN];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.sent_at_us.to_be_bytes());
        out
    }
}

/// A view over one datagram record.
///
/// After [`Packet::new_checked`] (or [`Packet::check_len`]) succeeds, no
/// accessor panics: the buffer holds a header and a tag, the type is
/// known and the reserved byte is zero. Nothing here decrypts: the
/// payload is ciphertext until the session opens it in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without a look: accessors panic if it is shorter
    /// than [`MIN_LEN`].
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

    /// Checks that no accessor can panic and that the header is one this
    /// version sends: at least [`MIN_LEN`] bytes, a known type, a zero
    /// reserved byte.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_LEN {
            return Err(WireError::Truncated {
                need: MIN_LEN,
                have: b.len(),
            });
        }
        if RecordType::from_u8(b[field::TYPE]).is_none() {
            return Err(WireError::Malformed("datagram record type"));
        }
        if b[field::RESERVED] != 0 {
            return Err(WireError::Malformed("datagram reserved byte"));
        }
        Ok(())
    }

    /// The buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The record type (`Data` for an unknown byte on an unchecked view).
    #[inline]
    pub fn record_type(&self) -> RecordType {
        RecordType::from_u8(self.buffer.as_ref()[field::TYPE]).unwrap_or(RecordType::Data)
    }

    /// The low 8 bits of the sender's key epoch.
    #[inline]
    pub fn send_epoch(&self) -> u8 {
        self.buffer.as_ref()[field::SEND_EPOCH]
    }

    /// The low 8 bits of the epoch the sender opens our records with.
    #[inline]
    pub fn recv_epoch(&self) -> u8 {
        self.buffer.as_ref()[field::RECV_EPOCH]
    }

    /// The receiver id.
    #[inline]
    pub fn receiver(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::RECEIVER)
    }

    /// The record counter (the nonce).
    #[inline]
    pub fn counter(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::COUNTER];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The header: the AEAD's additional data.
    #[inline]
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0; HEADER_LEN];
        h.copy_from_slice(&self.buffer.as_ref()[..HEADER_LEN]);
        h
    }

    /// The ciphertext between the header and the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::PAYLOAD..b.len() - TAG_LEN]
    }

    /// The tag.
    #[inline]
    pub fn tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - TAG_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the record type.
    #[inline]
    pub fn set_record_type(&mut self, t: RecordType) {
        self.buffer.as_mut()[field::TYPE] = t.to_u8();
    }

    /// Sets the send epoch byte.
    #[inline]
    pub fn set_send_epoch(&mut self, e: u8) {
        self.buffer.as_mut()[field::SEND_EPOCH] = e;
    }

    /// Sets the receive epoch byte.
    #[inline]
    pub fn set_recv_epoch(&mut self, e: u8) {
        self.buffer.as_mut()[field::RECV_EPOCH] = e;
    }

    /// Zeroes the reserved byte.
    #[inline]
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED] = 0;
    }

    /// Sets the receiver id.
    #[inline]
    pub fn set_receiver(&mut self, id: u32) {
        be::set_u32(self.buffer.as_mut(), field::RECEIVER, id);
    }

    /// Sets the counter.
    #[inline]
    pub fn set_counter(&mut self, c: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&c.to_be_bytes());
    }

    /// The payload (ciphertext, or plaintext before sealing) and the tag,
    /// mutable, as the AEAD wants them in place.
    #[inline]
    pub fn payload_and_tag_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }

    /// The payload between the header and the tag, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let end = b.len() - TAG_LEN;
        &mut b[field::PAYLOAD..end]
    }

    /// The tag, mutable.
    #[inline]
    pub fn tag_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let start = b.len() - TAG_LEN;
        &mut b[start..]
    }
}

/// Checks a plaintext item list and counts its items: every length fits
/// in what is left; a zero length (or a lone trailing zero byte) ends it.
///
/// # Errors
/// [`WireError::Truncated`] for an item that runs past the end,
/// [`WireError::Malformed`] for a lone non-zero trailing byte.
pub fn check_items(plain: &[u8]) -> Result<usize, WireError> {
    let mut rest = plain;
    let mut n = 0;
    loop {
        match rest {
            [] | [0] | [0, 0, ..] => return Ok(n),
            [_] => return Err(WireError::Malformed("datagram item length")),
            [a, b, tail @ ..] => {
                let len = usize::from(u16::from_be_bytes([*a, *b]));
                if tail.len() < len {
                    return Err(WireError::Truncated {
                        need: len,
                        have: tail.len(),
                    });
                }
                rest = &tail[len..];
                n += 1;
            }
        }
    }
}

/// The items of a plaintext list, in order. It stops at the end of the
/// list (or at the first item that runs past the end: run
/// [`check_items`] first to tell that apart).
#[derive(Debug, Clone)]
pub struct Items<'a> {
    rest: &'a [u8],
}

impl<'a> Items<'a> {
    /// Iterates over the items of `plain`.
    pub fn new(plain: &'a [u8]) -> Self {
        Self { rest: plain }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let [a, b, tail @ ..] = self.rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if len == 0 || tail.len() < len {
            self.rest = &[];
            return None;
        }
        let (item, rest) = tail.split_at(len);
        self.rest = rest;
        Some(item)
    }
}

/// Writes one item (its length, then `item`) at the start of `out`;
/// returns the bytes written.
///
/// # Errors
/// `None` when `out` has no room, or `item` is empty or longer than
/// `u16::MAX` (an empty item would end the list).
pub fn emit_item(out: &mut [u8], item: &[u8]) -> Option<usize> {
    let len = u16::try_from(item.len()).ok().filter(|&l| l > 0)?;
    let total = ITEM_HEADER_LEN + item.len();
    let slot = out.get_mut(..total)?;
    slot[..ITEM_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    slot[ITEM_HEADER_LEN..].copy_from_slice(item);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data record for receiver 0x0a0b0c0d, send epoch 2, receive epoch
    /// 1, counter 0x0102030405060708, holding (as if in the clear) the
    /// items [45 00] and [60], then padding; a tag of 0xee.
    const RECORD_BYTES: [u8; 41] = [
        0x01, 0x02, 0x01, 0x00, // type DATA, send epoch 2, receive epoch 1, reserved
        0x0a, 0x0b, 0x0c, 0x0d, // receiver id
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // counter
        0x00, 0x02, 0x45, 0x00, // item: 2 bytes
        0x00, 0x01, 0x60, // item: 1 byte
        0x00, 0x00, // end of list, then padding
        0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, // tag
        0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
    ];

    #[test]
    fn fields_of_a_record() {
        let p = Packet::new_checked(&RECORD_BYTES[..]).unwrap();
        assert_eq!(p.record_type(), RecordType::Data);
        assert_eq!((p.send_epoch(), p.recv_epoch()), (2, 1));
        assert_eq!(p.receiver(), 0x0a0b_0c0d);
        assert_eq!(p.counter(), 0x0102_0304_0506_0708);
        assert_eq!(p.header(), RECORD_BYTES[..16]);
        assert_eq!(p.payload(), &RECORD_BYTES[16..25]);
        assert_eq!(p.tag(), &[0xee; 16]);
        assert_eq!(check_items(p.payload()), Ok(2));
        let items: Vec<&[u8]> = Items::new(p.payload()).collect();
        assert_eq!(items, [&[0x45, 0x00][..], &[0x60][..]]);
    }

    #[test]
    fn setters_rebuild_the_record() {
        let mut buf = [0u8; 41];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_record_type(RecordType::Data);
        p.set_send_epoch(2);
        p.set_recv_epoch(1);
        p.clear_reserved();
        p.set_receiver(0x0a0b_0c0d);
        p.set_counter(0x0102_0304_0506_0708);
        let pl = p.payload_mut();
        let n = emit_item(pl, &[0x45, 0x00]).unwrap();
        let m = emit_item(&mut pl[n..], &[0x60]).unwrap();
        assert_eq!((n, m), (4, 3));
        p.tag_mut().fill(0xee);
        assert_eq!(p.payload_and_tag_mut().len(), 25);
        assert_eq!(buf, RECORD_BYTES);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(
            Packet::new_checked(&RECORD_BYTES[..31]).unwrap_err(),
            WireError::Truncated { need: 32, have: 31 }
        );
        assert!(Packet::new_checked(&RECORD_BYTES[..32]).is_ok());
        let mut bad = RECORD_BYTES;
        bad[0] = 0x03;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed("datagram record type")
        );
        let mut bad = RECORD_BYTES;
        bad[3] = 1;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed("datagram reserved byte")
        );
    }

    #[test]
    fn item_lists() {
        assert_eq!(check_items(&[]), Ok(0));
        assert_eq!(check_items(&[0]), Ok(0));
        assert_eq!(
            check_items(&[0, 0, 9, 9, 9]),
            Ok(0),
            "padding after the end"
        );
        assert_eq!(check_items(&[0, 1, 7]), Ok(1));
        assert_eq!(check_items(&[0, 1, 7, 0]), Ok(1), "a lone zero is padding");
        assert_eq!(
            check_items(&[0, 1, 7, 5]),
            Err(WireError::Malformed("datagram item length"))
        );
        assert_eq!(
            check_items(&[0, 3, 7, 7]),
            Err(WireError::Truncated { need: 3, have: 2 })
        );
        assert_eq!(Items::new(&[0, 3, 7, 7]).count(), 0);
        assert_eq!(emit_item(&mut [0; 4], &[1, 2, 3]), None, "no room");
        assert_eq!(emit_item(&mut [0; 4], &[]), None, "empty ends a list");
    }

    #[test]
    fn echo_bodies() {
        let e = Echo {
            seq: 7,
            sent_at_us: 0x0102_0304,
        };
        let b = e.to_bytes();
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(Echo::parse(&b), Ok(e));
        let mut longer = b.to_vec();
        longer.push(9);
        assert_eq!(Echo::parse(&longer), Ok(e));
        assert!(Echo::parse(&b[..15]).is_err());
        assert_eq!(ControlKind::from_u8(0x33), ControlKind::Unknown(0x33));
        assert_eq!(ControlKind::Unknown(0x33).to_u8(), 0x33);
        assert_eq!(ControlKind::from_u8(2), ControlKind::EchoReply);
    }
}
