//! TLS 1.3 record protection (RFC 8446 §5) for the tunnel's data phase.
//!
//! rustls runs the handshake; once it is done the session takes the traffic
//! keys (`dangerous_into_kernel_connection`, the API rustls offers for kTLS)
//! and protects records itself, so that packets are framed straight into
//! the buffer that is sealed in place and written to the socket, and
//! received records are opened in place where they were read. rustls keeps
//! the key schedule: key updates go through its `KernelConnection`.
//!
//! On the wire nothing changes: these are TLS 1.3 records (outer type
//! `application_data`, version 0x0303, inner content type, AEAD with the
//! per-record nonce `iv XOR seq` and the record header as additional data),
//! checked against rustls itself in the session tests.
//!
//! The AEAD is aws-lc-rs's; the benches compare it with ring (see
//! `bench/RESULTS.md`).
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// Record header length: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Most content bytes in one record (2^14).
pub const MAX_CONTENT: usize = 16 * 1024;
/// Most bytes after the header of a received record (RFC 8446 §5.2:
/// 2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_CONTENT + 256;
/// AEAD tag length of every TLS 1.3 suite.
pub const TAG_LEN: usize = 16;
/// Outer content type of every protected record.
pub const APPLICATION_DATA: u8 = 23;
/// Inner content types.
pub const HANDSHAKE: u8 = 22;
/// Inner content type of alerts.
pub const ALERT: u8 = 21;

/// Why a received record was refused. Every one ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Outer content type other than `application_data`.
    #[error("unexpected TLS record type {0}")]
    UnexpectedType(u8),
    /// Length beyond 2^14 + 256, or too short to hold a tag.
    #[error("TLS record of bad length {0}")]
    BadLength(usize),
    /// Authentication failed (forged, corrupted or out-of-order record).
    #[error("TLS record failed authentication")]
    BadRecord,
    /// All-zero inner plaintext: no content type.
    #[error("TLS record without content type")]
    NoContentType,
    /// The negotiated suite's secrets are of an unknown kind.
    #[error("unsupported TLS cipher suite for record protection")]
    UnsupportedSuite,
}

/// One direction's traffic key, static IV and sequence number.
pub struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keys")
            .field("alg", self.key.algorithm())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys from rustls's extracted secrets, starting at `seq`.
    ///
    /// # Errors
    /// [`RecordError::UnsupportedSuite`] for secrets of an unknown AEAD.
    pub fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Self, RecordError> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// Records protected (or opened) with this key so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The nonce for the next record; advances the sequence number.
    fn next_nonce(&mut self) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }

    /// Protects the record whose header slot starts at `start`: `buf[start
    /// ..start + HEADER_LEN]` is reserved, the content follows to the end of
    /// `buf` (at most [`MAX_CONTENT`] bytes). Appends the inner content
    /// type and the tag, writes the header, encrypts in place.
    ///
    /// # Panics
    /// Never for a record's worth of content: the AEAD refuses only inputs
    /// of gigabytes.
    pub fn seal(&mut self, buf: &mut Vec<u8>, start: usize, content_type: u8) {
        debug_assert!(buf.len() - start - HEADER_LEN <= MAX_CONTENT);
        buf.push(content_type);
        let len = buf.len() - start - HEADER_LEN + TAG_LEN;
        let header = [
            APPLICATION_DATA,
            3,
            3,
            u8::try_from(len >> 8).unwrap_or(u8::MAX),
            len as u8,
        ];
        buf[start..start + HEADER_LEN].copy_from_slice(&header);
        let nonce = self.next_nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut buf[start + HEADER_LEN..])
            .expect("TLS record content is below the AEAD's limit");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Opens one whole record (`rec` = header and body, as returned by
    /// [`record_len`]) in place. Returns the inner content type and the
    /// content's range within `rec`.
    ///
    /// # Errors
    /// See [`RecordError`]; the record is then garbage.
    pub fn open(&mut self, rec: &mut [u8]) -> Result<(u8, std::ops::Range<usize>), RecordError> {
        let header: [u8; HEADER_LEN] = rec[..HEADER_LEN]
            .try_into()
            .map_err(|_| RecordError::BadLength(rec.len()))?;
        let nonce = self.next_nonce();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(header), &mut rec[HEADER_LEN..])
            .map_err(|_| RecordError::BadRecord)?;
        // Strip the zero padding; the last non-zero byte is the type.
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(RecordError::NoContentType)?;
        if end > MAX_CONTENT {
            return Err(RecordError::BadLength(end));
        }
        Ok((plain[end], HEADER_LEN..HEADER_LEN + end))
    }
}

/// The total length (header included) of the record at the start of
/// `buf`, once its header is there; `Ok(None)` until then.
///
/// # Errors
/// A header that no TLS 1.3 peer sends once traffic keys are in use.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    // `change_cipher_spec` is only tolerated during the handshake, which
    // rustls handles: here it is as unexpected as any other type.
    if h[0] != APPLICATION_DATA {
        return Err(RecordError::UnexpectedType(h[0]));
    }
    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
    if !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len) {
        return Err(RecordError::BadLength(len));
    }
    Ok(Some(HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seq: u64) -> Keys {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: [7u8; 32].into(),
            iv: [9u8; 12].into(),
        };
        Keys::new(seq, &secrets).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_and_checks_order() {
        let (mut tx, mut rx) = (keys(5), keys(5));
        let mut buf = vec![0xee; 3]; // bytes before the record stay
        buf.extend_from_slice(&[0; HEADER_LEN]);
        buf.extend_from_slice(b"hello");
        tx.seal(&mut buf, 3, APPLICATION_DATA);
        assert_eq!(&buf[..3], &[0xee; 3]);
        let len = record_len(&buf[3..]).unwrap().unwrap();
        assert_eq!(len, buf.len() - 3);
        let mut rec = buf[3..].to_vec();
        let (ty, r) = rx.open(&mut rec).unwrap();
        assert_eq!((ty, &rec[r]), (APPLICATION_DATA, &b"hello"[..]));
        // Replaying the same record fails (sequence moved on).
        let mut again = buf[3..].to_vec();
        assert_eq!(rx.open(&mut again), Err(RecordError::BadRecord));
    }

    #[test]
    fn tampering_and_bad_headers_are_refused() {
        let mut tx = keys(0);
        let mut buf = vec![0; HEADER_LEN];
        buf.extend_from_slice(&[1, 2, 3]);
        tx.seal(&mut buf, 0, APPLICATION_DATA);
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x01;
            let ok = record_len(&b).ok().flatten() == Some(b.len()) && keys(0).open(&mut b).is_ok();
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
        assert_eq!(record_len(&[23, 3, 3]), Ok(None));
        assert_eq!(
            record_len(&[20, 3, 3, 0, 1]),
            Err(RecordError::UnexpectedType(20))
        );
        assert_eq!(
            record_len(&[23, 3, 3, 0x41, 1]),
            Err(RecordError::BadLength(0x4101))
        );
        assert_eq!(
            record_len(&[23, 3, 3, 0, 3]),
            Err(RecordError::BadLength(3))
        );
    }
}
