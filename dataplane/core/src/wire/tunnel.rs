//! The sluice tunnel wire format, version 1.
//!
//! A tunnel is a TLS 1.3 stream (mutually authenticated) carrying a sequence
//! of frames. TLS provides confidentiality, integrity, ordering and replay
//! protection; the framing only delimits packets and carries control
//! messages. Many frames are packed into one TLS record: the sender
//! coalesces a batch of packets before handing it to TLS.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+-------------------------------+
//! |     type      |     flags     |     payload length (BE)       |
//! +---------------+---------------+-------------------------------+
//! |                payload (length bytes) ...                     |
//! ```
//!
//! Frame types:
//! - `0x01` **HELLO**: the first frame each side sends. Payload: magic
//!   `"SLCE"`, version (`u8`, = [`VERSION`]), reserved `u8` (0), maximum
//!   frame payload the sender accepts (`u16` BE), then the sender's name
//!   (`u8` length + UTF-8 bytes, may be empty). A peer whose version differs
//!   answers with CLOSE([`CloseCode::Version`]).
//! - `0x02` **PACKET**: payload is one IPv4 or IPv6 packet, starting at its
//!   IP header.
//! - `0x03` **KEEPALIVE**: empty payload; sent when a side has sent nothing
//!   for the keepalive interval.
//! - `0x04` **CLOSE**: code (`u16` BE, [`CloseCode`]) then a UTF-8 reason; the
//!   sender then closes the TLS stream.
//! - `0x05` **`ECHO_REQUEST`**: a liveness and round-trip probe (BFD-like).
//!   Payload: sequence number (`u64` BE), then the sender's timestamp in
//!   microseconds (`u64` BE, from an origin only the sender knows); longer
//!   payloads are allowed (the rest is ignored), shorter ones are a
//!   protocol error. The receiver answers at once with `ECHO_REPLY`.
//! - `0x06` **`ECHO_REPLY`**: the request's 16 bytes, unchanged.
//!
//! - `0x07` **`DATAGRAM_OFFER`** (gateway to edge): the gateway wants the
//!   datagram transport beside this tunnel ([`crate::datagram`]). Payload
//!   ([`DatagramSetup`]): the gateway's receiver id (`u32` BE, non-zero:
//!   what the edge's datagrams carry) and a port (`u16` BE, 0: the edge
//!   learns the gateway's address from its first authenticated datagram).
//! - `0x08` **`DATAGRAM_ACCEPT`** (edge to gateway): the answer. Payload
//!   ([`DatagramSetup`]): the edge's receiver id and the UDP port to send
//!   datagrams to (on the tunnel's own edge address); port 0 (any id) is
//!   a refusal: the tunnel stays on TLS.
//! - `0x09` **`DATAGRAM_USE`** (gateway to edge): which transport the edge
//!   sends this tunnel's packets by: payload one byte, 1 datagrams, 0 this
//!   TLS stream (the gateway's fallback when datagrams stop getting
//!   through, and its return).
//!
//! Echo and datagram frames are sent with [`FLAG_IGNORABLE`]: a peer of an
//! earlier release, which does not know them, skips them (and never
//! answers: an edge that never accepts keeps the tunnel on TLS).
//!
//! Flags: bit 7 ([`FLAG_IGNORABLE`]) marks a frame that a receiver which
//! does not know its type must skip; an unknown type without it is a
//! protocol error. Other bits are reserved and must be zero on send,
//! ignored on receipt. This is how later versions add frame types without a
//! version bump.

use super::WireError;
pub use super::datagram::{ECHO_LEN, Echo};

/// The wire format version this code speaks.
pub const VERSION: u8 = 1;
/// HELLO magic.
pub const MAGIC: [u8; 4] = *b"SLCE";
/// Frame header length.
pub const HEADER_LEN: usize = 4;
/// Largest payload a frame can carry (the length field is 16 bits).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// Flag: skip this frame if its type is unknown.
pub const FLAG_IGNORABLE: u8 = 0x80;

mod field {
    pub(super) const TYPE: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const LENGTH: core::ops::Range<usize> = 2..4;
    pub(super) const PAYLOAD: usize = 4;
}

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// Session start, carries the version.
    Hello,
    /// One IP packet.
    Packet,
    /// Liveness when idle.
    Keepalive,
    /// Orderly close with a reason.
    Close,
    /// A probe to answer with [`FrameType::EchoReply`].
    EchoRequest,
    /// The answer to a probe.
    EchoReply,
    /// The gateway offers the datagram transport.
    DatagramOffer,
    /// The edge's answer to an offer.
    DatagramAccept,
    /// Which transport the edge sends by.
    DatagramUse,
    /// A type this version does not know.
    Unknown(u8),
}

impl FrameType {
    /// The type byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            FrameType::Hello => 1,
            FrameType::Packet => 2,
            FrameType::Keepalive => 3,
            FrameType::Close => 4,
            FrameType::EchoRequest => 5,
            FrameType::EchoReply => 6,
            FrameType::DatagramOffer => 7,
            FrameType::DatagramAccept => 8,
            FrameType::DatagramUse => 9,
            FrameType::Unknown(t) => t,
        }
    }

    /// From the type byte.
    pub const fn from_u8(t: u8) -> Self {
        match t {
            1 => FrameType::Hello,
            2 => FrameType::Packet,
            3 => FrameType::Keepalive,
            4 => FrameType::Close,
            5 => FrameType::EchoRequest,
            6 => FrameType::EchoReply,
            7 => FrameType::DatagramOffer,
            8 => FrameType::DatagramAccept,
            9 => FrameType::DatagramUse,
            t => FrameType::Unknown(t),
        }
    }
}

/// Reasons carried by CLOSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// Normal shutdown.
    Normal,
    /// Version not supported.
    Version,
    /// The peer broke the protocol.
    Protocol,
    /// The peer was silent for too long.
    Timeout,
    /// Any other code.
    Other(u16),
}

impl CloseCode {
    /// Wire value.
    pub const fn to_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::Version => 1,
            CloseCode::Protocol => 2,
            CloseCode::Timeout => 3,
            CloseCode::Other(c) => c,
        }
    }

    /// From the wire value.
    pub const fn from_u16(c: u16) -> Self {
        match c {
            0 => CloseCode::Normal,
            1 => CloseCode::Version,
            2 => CloseCode::Protocol,
            3 => CloseCode::Timeout,
            c => CloseCode::Other(c),
        }
    }
}

/// A view over one frame at the start of a buffer.
///
/// After [`Frame::new_checked`] succeeds, no accessor panics: the buffer
/// holds the header and the whole payload.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buf`, which must start with a complete frame (it may hold
    /// more bytes after it: see [`Frame::total_len`]).
    ///
    /// Returns [`WireError::Truncated`] when more bytes are needed; that is
    /// the normal case for a frame split across reads.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                have: b.len(),
            });
        }
        let need = HEADER_LEN + usize::from(u16::from_be_bytes([b[2], b[3]]));
        if b.len() < need {
            return Err(WireError::Truncated {
                need,
                have: b.len(),
            });
        }
        Ok(Self { buf })
    }

    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        FrameType::from_u8(self.buf.as_ref()[field::TYPE])
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }

    /// Payload length.
    pub fn payload_len(&self) -> usize {
        let b = &self.buf.as_ref()[field::LENGTH];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Header plus payload length: where the next frame starts.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[field::PAYLOAD..self.total_len()]
    }
}

/// Writes a frame header into `out[..HEADER_LEN]`.
///
/// # Panics
/// If `out` is shorter than [`HEADER_LEN`] or `payload_len` exceeds
/// [`MAX_PAYLOAD`] (callers check both: they are programming errors).
pub fn emit_header(out: &mut [u8], ty: FrameType, flags: u8, payload_len: usize) {
    assert!(payload_len <= MAX_PAYLOAD, "frame payload too large");
    out[field::TYPE] = ty.to_u8();
    out[field::FLAGS] = flags;
    out[field::LENGTH].copy_from_slice(&(payload_len as u16).to_be_bytes());
}

/// The HELLO payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Protocol version.
    pub version: u8,
    /// Largest frame payload the sender accepts.
    pub max_payload: u16,
    /// The sender's name (for logs), at most 255 bytes.
    pub name: &'a str,
}

impl<'a> Hello<'a> {
    /// Fixed part: magic, version, reserved, max payload, name length.
    const FIXED_LEN: usize = 4 + 1 + 1 + 2 + 1;

    /// Parses a HELLO payload.
    pub fn parse(p: &'a [u8]) -> Result<Self, WireError> {
        if p.len() < Self::FIXED_LEN {
            return Err(WireError::Truncated {
                need: Self::FIXED_LEN,
                have: p.len(),
            });
        }
        if p[..4] != MAGIC {
            return Err(WireError::Malformed("HELLO magic"));
        }
        let name_len = usize::from(p[8]);
        let Some(name) = p.get(Self::FIXED_LEN..Self::FIXED_LEN + name_len) else {
            return Err(WireError::Truncated {
                need: Self::FIXED_LEN + name_len,
                have: p.len(),
            });
        };
        let name = core::str::from_utf8(name).map_err(|_| WireError::Malformed("HELLO name"))?;
        Ok(Self {
            version: p[4],
            max_payload: u16::from_be_bytes([p[6], p[7]]),
            name,
        })
    }

    /// Appends the complete HELLO frame (header and payload) to `out`.
    pub fn emit_frame(&self, out: &mut Vec<u8>) {
        let name = truncate_utf8(self.name, 255);
        let len = Self::FIXED_LEN + name.len();
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        emit_header(&mut out[start..], FrameType::Hello, 0, len);
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(0);
        out.extend_from_slice(&self.max_payload.to_be_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
}

/// Appends a complete CLOSE frame to `out`; the reason is cut to fit.
pub fn emit_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let reason = truncate_utf8(reason, 1024);
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    emit_header(&mut out[start..], FrameType::Close, 0, 2 + reason.len());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// The length of a complete echo frame.
pub const ECHO_FRAME_LEN: usize = HEADER_LEN + ECHO_LEN;

/// A complete `ECHO_REQUEST` or `ECHO_REPLY` frame (`ty` says which), with
/// [`FLAG_IGNORABLE`] set.
pub fn echo_frame(ty: FrameType, echo: Echo) -> [u8; ECHO_FRAME_LEN] {
    let mut out = [0; ECHO_FRAME_LEN];
    emit_header(&mut out, ty, FLAG_IGNORABLE, ECHO_LEN);
    out[HEADER_LEN..].copy_from_slice(&echo.to_bytes());
    out
}

/// The payload of `DATAGRAM_OFFER` and `DATAGRAM_ACCEPT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramSetup {
    /// The sender's receiver id: what the other side's datagrams carry.
    pub receiver_id: u32,
    /// OFFER: 0. ACCEPT: the edge's UDP port; 0 refuses.
    pub port: u16,
}

/// Length of [`DatagramSetup`] on the wire.
pub const DATAGRAM_SETUP_LEN: usize = 6;
/// Length of a whole `DATAGRAM_OFFER` or `DATAGRAM_ACCEPT` frame.
pub const DATAGRAM_SETUP_FRAME_LEN: usize = HEADER_LEN + DATAGRAM_SETUP_LEN;
/// Length of a whole `DATAGRAM_USE` frame.
pub const DATAGRAM_USE_FRAME_LEN: usize = HEADER_LEN + 1;

impl DatagramSetup {
    /// Parses a payload (longer ones are allowed: the rest is ignored).
    ///
    /// # Errors
    /// Shorter than [`DATAGRAM_SETUP_LEN`].
    pub fn parse(p: &[u8]) -> Result<Self, WireError> {
        let Some(b) = p.first_chunk::<DATAGRAM_SETUP_LEN>() else {
            return Err(WireError::Truncated {
                need: DATAGRAM_SETUP_LEN,
                have: p.len(),
            });
        };
        Ok(Self {
            receiver_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            port: u16::from_be_bytes([b[4], b[5]]),
        })
    }

    /// The whole frame of type `ty` (OFFER or ACCEPT), ignorable.
    pub fn frame(self, ty: FrameType) -> [u8; DATAGRAM_SETUP_FRAME_LEN] {
        let mut out = [0; DATAGRAM_SETUP_FRAME_LEN];
        emit_header(&mut out, ty, FLAG_IGNORABLE, DATAGRAM_SETUP_LEN);
        out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&self.receiver_id.to_be_bytes());
        out[HEADER_LEN + 4..].copy_from_slice(&self.port.to_be_bytes());
        out
    }
}

/// A `DATAGRAM_USE` frame: datagrams (`true`) or TLS.
pub fn datagram_use_frame(datagrams: bool) -> [u8; DATAGRAM_USE_FRAME_LEN] {
    let mut out = [0; DATAGRAM_USE_FRAME_LEN];
    emit_header(&mut out, FrameType::DatagramUse, FLAG_IGNORABLE, 1);
    out[HEADER_LEN] = u8::from(datagrams);
    out
}

/// Parses a CLOSE payload: code and reason (invalid UTF-8 is replaced).
pub fn parse_close(p: &[u8]) -> Result<(CloseCode, String), WireError> {
    if p.len() < 2 {
        return Err(WireError::Truncated {
            need: 2,
            have: p.len(),
        });
    }
    Ok((
        CloseCode::from_u16(u16::from_be_bytes([p[0], p[1]])),
        String::from_utf8_lossy(&p[2..]).into_owned(),
    ))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HELLO from "gw1": version 1, max payload 65535.
    const HELLO_BYTES: [u8; 16] = [
        0x01, 0x00, 0x00, 0x0c, // type HELLO, flags 0, length 12
        b'S', b'L', b'C', b'E', 0x01, 0x00, 0xff, 0xff, 0x03, b'g', b'w', b'1',
    ];
    /// A PACKET frame holding a 4-byte (bogus) payload, then the first byte
    /// of the next frame.
    const PACKET_BYTES: [u8; 9] = [0x02, 0x00, 0x00, 0x04, 0x45, 0x00, 0x00, 0x04, 0x03];
    /// CLOSE(version, "v2").
    const CLOSE_BYTES: [u8; 8] = [0x04, 0x00, 0x00, 0x04, 0x00, 0x01, b'v', b'2'];
    /// `ECHO_REQUEST`, ignorable, sequence 3, sent at 1000 µs.
    const ECHO_REQUEST_BYTES: [u8; 20] = [
        0x05, 0x80, 0x00, 0x10, // type ECHO_REQUEST, FLAG_IGNORABLE, length 16
        0, 0, 0, 0, 0, 0, 0, 3, // sequence
        0, 0, 0, 0, 0, 0, 0x03, 0xe8, // timestamp (µs)
    ];

    #[test]
    fn echo_frames() {
        let echo = Echo {
            seq: 3,
            sent_at_us: 1000,
        };
        assert_eq!(echo_frame(FrameType::EchoRequest, echo), ECHO_REQUEST_BYTES);
        let f = Frame::new_checked(&ECHO_REQUEST_BYTES[..]).unwrap();
        assert_eq!(
            (f.frame_type(), f.flags(), f.total_len()),
            (FrameType::EchoRequest, FLAG_IGNORABLE, ECHO_FRAME_LEN)
        );
        assert_eq!(Echo::parse(f.payload()), Ok(echo));
        let reply = echo_frame(FrameType::EchoReply, echo);
        assert_eq!(reply[0], 0x06);
        assert_eq!(reply[1..], ECHO_REQUEST_BYTES[1..]);
        assert_eq!(FrameType::from_u8(6), FrameType::EchoReply);
        assert_eq!(FrameType::from_u8(7), FrameType::DatagramOffer);
        assert_eq!(FrameType::from_u8(10), FrameType::Unknown(10));
    }

    #[test]
    fn hello_round_trip() {
        let f = Frame::new_checked(&HELLO_BYTES[..]).unwrap();
        assert_eq!(f.frame_type(), FrameType::Hello);
        let h = Hello::parse(f.payload()).unwrap();
        assert_eq!(
            h,
            Hello {
                version: 1,
                max_payload: 65535,
                name: "gw1"
            }
        );
        let mut out = Vec::new();
        h.emit_frame(&mut out);
        assert_eq!(out, HELLO_BYTES);
    }

    #[test]
    fn packet_frame_and_trailing_bytes() {
        let f = Frame::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(f.frame_type(), FrameType::Packet);
        assert_eq!(f.payload(), &[0x45, 0, 0, 4]);
        assert_eq!(f.total_len(), 8);
        assert_eq!(
            Frame::new_checked(&PACKET_BYTES[..7]).unwrap_err(),
            WireError::Truncated { need: 8, have: 7 }
        );
        assert!(Frame::new_checked(&PACKET_BYTES[..3]).is_err());
    }

    #[test]
    fn close_round_trip() {
        let mut out = Vec::new();
        emit_close(&mut out, CloseCode::Version, "v2");
        assert_eq!(out, CLOSE_BYTES);
        let f = Frame::new_checked(&out[..]).unwrap();
        assert_eq!(
            parse_close(f.payload()).unwrap(),
            (CloseCode::Version, "v2".to_string())
        );
    }

    #[test]
    fn bad_hello() {
        assert!(Hello::parse(&HELLO_BYTES[4..12]).is_err());
        let mut bad = HELLO_BYTES;
        bad[4] = b'X';
        assert!(Hello::parse(&bad[4..]).is_err());
        let mut long_name = HELLO_BYTES;
        long_name[12] = 9;
        assert!(Hello::parse(&long_name[4..]).is_err());
        let mut not_utf8 = HELLO_BYTES;
        not_utf8[13] = 0xff;
        assert!(Hello::parse(&not_utf8[4..]).is_err());
    }

    #[test]
    fn unknown_types_keep_their_byte() {
        assert_eq!(FrameType::from_u8(0x42), FrameType::Unknown(0x42));
        assert_eq!(FrameType::Unknown(0x42).to_u8(), 0x42);
        assert_eq!(CloseCode::from_u16(99).to_u16(), 99);
    }

    #[test]
    fn datagram_setup_frames() {
        let s = DatagramSetup {
            receiver_id: 0x0102_0304,
            port: 4443,
        };
        let f = s.frame(FrameType::DatagramAccept);
        assert_eq!(f, [0x08, 0x80, 0, 6, 1, 2, 3, 4, 0x11, 0x5b]);
        let parsed = Frame::new_checked(&f[..]).unwrap();
        assert_eq!(parsed.frame_type(), FrameType::DatagramAccept);
        assert_eq!(DatagramSetup::parse(parsed.payload()), Ok(s));
        assert!(DatagramSetup::parse(&f[4..9]).is_err());
        assert_eq!(datagram_use_frame(true), [0x09, 0x80, 0, 1, 1]);
        assert_eq!(datagram_use_frame(false), [0x09, 0x80, 0, 1, 0]);
    }
}
