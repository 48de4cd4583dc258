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
//! The AEAD comes from aws-lc-rs or from ring ([`AeadProvider`]), as the
//! caller says: the tunnel bench shows either ahead by up to 2x depending
//! on the CPU's AES and carry-less multiply extensions (on the AVX2 + VAES
//! AMD EPYC of `bench/RESULTS.md`, ring), so the dataplane measures the
//! two once per process at start-up (its driver does, like the kernel
//! picks its RAID6 and checksum routines) and passes the faster in
//! [`super::SessionConfig::aead`]. Nothing here reads a clock or the
//! environment.

use rustls::ConnectionTrafficSecrets;

/// Record header length: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Most content bytes in one record (2^14).
pub const MAX_CONTENT: usize = 16 * 1024;
/// Most bytes after the header of a received record (RFC 8446 §5.2:
/// 2^14 + 256).
pub(crate) const MAX_CIPHERTEXT: usize = MAX_CONTENT + 256;
/// AEAD tag length of every TLS 1.3 suite.
pub const TAG_LEN: usize = 16;
/// Outer content type of every protected record.
pub const APPLICATION_DATA: u8 = 23;
/// Inner content types.
pub(crate) const HANDSHAKE: u8 = 22;
/// Inner content type of alerts.
pub(crate) const ALERT: u8 = 21;

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
    /// The sequence number would wrap (RFC 8446 §5.3: rekey or close
    /// first); the record is refused and the nonce never reused.
    #[error("TLS record sequence number exhausted")]
    SequenceExhausted,
}

impl RecordError {
    /// The TLS alert description a receiver sends for this error (RFC 8446
    /// §6.2): `bad_record_mac` for a record that does not authenticate,
    /// `record_overflow` for one too long, `unexpected_message` for a
    /// record no peer should send, `internal_error` otherwise.
    pub fn alert(self) -> u8 {
        match self {
            RecordError::BadRecord => alert::BAD_RECORD_MAC,
            RecordError::BadLength(_) => alert::RECORD_OVERFLOW,
            RecordError::UnexpectedType(_) | RecordError::NoContentType => {
                alert::UNEXPECTED_MESSAGE
            }
            RecordError::UnsupportedSuite | RecordError::SequenceExhausted => alert::INTERNAL_ERROR,
        }
    }
}

/// TLS alert descriptions (RFC 8446 §6) the record layer sends.
pub mod alert {
    /// `close_notify` (sent at warning level).
    pub(crate) const CLOSE_NOTIFY: u8 = 0;
    /// `unexpected_message`.
    pub(crate) const UNEXPECTED_MESSAGE: u8 = 10;
    /// `bad_record_mac`.
    pub(crate) const BAD_RECORD_MAC: u8 = 20;
    /// `record_overflow`.
    pub(crate) const RECORD_OVERFLOW: u8 = 22;
    /// `decode_error`.
    pub(crate) const DECODE_ERROR: u8 = 50;
    /// `internal_error`.
    pub(crate) const INTERNAL_ERROR: u8 = 80;
    /// Alert level of every alert but `close_notify`.
    pub(crate) const FATAL: u8 = 2;
    /// Alert level of `close_notify`.
    pub const WARNING: u8 = 1;
}

/// Which library seals and opens records. Both make the same records
/// (checked in the tests); they differ in speed, by CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AeadProvider {
    /// `aws-lc-rs` (AWS-LC, `BoringSSL`'s assembly): the default where
    /// the caller has not measured.
    #[default]
    AwsLcRs,
    /// ring (BoringSSL-derived assembly, with AVX2 + VAES AES-GCM).
    Ring,
}

impl AeadProvider {
    /// The library name, as logs and `SLUICE_AEAD` spell it.
    pub fn name(self) -> &'static str {
        match self {
            AeadProvider::AwsLcRs => "aws-lc-rs",
            AeadProvider::Ring => "ring",
        }
    }
}

/// A key of either library. Both have the same API (aws-lc-rs mirrors
/// ring's); one `match` per record.
enum Key {
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    /// Boxed: ring keeps its key schedule inline (about 0.5 KiB).
    Ring(Box<ring::aead::LessSafeKey>),
}

impl Key {
    /// A key for `suite` (an index into both libraries' algorithm lists:
    /// AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) from `provider`.
    fn new(provider: AeadProvider, suite: usize, key: &[u8]) -> Result<Self, RecordError> {
        use aws_lc_rs::aead as a;
        use ring::aead as r;
        Ok(match provider {
            AeadProvider::Ring => {
                let alg = [&r::AES_128_GCM, &r::AES_256_GCM, &r::CHACHA20_POLY1305][suite];
                let key =
                    r::UnboundKey::new(alg, key).map_err(|_| RecordError::UnsupportedSuite)?;
                Key::Ring(Box::new(r::LessSafeKey::new(key)))
            }
            AeadProvider::AwsLcRs => {
                let alg = [&a::AES_128_GCM, &a::AES_256_GCM, &a::CHACHA20_POLY1305][suite];
                let key =
                    a::UnboundKey::new(alg, key).map_err(|_| RecordError::UnsupportedSuite)?;
                Key::AwsLc(a::LessSafeKey::new(key))
            }
        })
    }

    fn provider(&self) -> AeadProvider {
        match self {
            Key::AwsLc(_) => AeadProvider::AwsLcRs,
            Key::Ring(_) => AeadProvider::Ring,
        }
    }

    /// Seals `data` in place; returns the tag.
    fn seal(&self, nonce: [u8; 12], aad: [u8; HEADER_LEN], data: &mut [u8]) -> [u8; TAG_LEN] {
        let mut out = [0; TAG_LEN];
        match self {
            Key::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                        aws_lc_rs::aead::Aad::from(aad),
                        data,
                    )
                    .expect("TLS record content is below the AEAD's limit");
                out.copy_from_slice(tag.as_ref());
            }
            Key::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(aad),
                        data,
                    )
                    .expect("TLS record content is below the AEAD's limit");
                out.copy_from_slice(tag.as_ref());
            }
        }
        out
    }

    /// Opens `data` (ciphertext and tag) in place; returns the plaintext.
    fn open<'a>(
        &self,
        nonce: [u8; 12],
        aad: [u8; HEADER_LEN],
        data: &'a mut [u8],
    ) -> Result<&'a mut [u8], RecordError> {
        let plain = match self {
            Key::AwsLc(k) => k
                .open_in_place(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(aad),
                    data,
                )
                .ok(),
            Key::Ring(k) => k
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    data,
                )
                .ok(),
        };
        plain.ok_or(RecordError::BadRecord)
    }
}

/// One direction's traffic key, static IV and sequence number.
pub struct Keys {
    key: Key,
    iv: [u8; 12],
    seq: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keys")
            .field("provider", &self.key.provider())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys from rustls's extracted secrets, starting at `seq`, from
    /// `provider`'s library.
    ///
    /// # Errors
    /// [`RecordError::UnsupportedSuite`] for secrets of an unknown AEAD.
    pub fn with_provider(
        provider: AeadProvider,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Result<Self, RecordError> {
        let (suite, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (0, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (1, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (2, key, iv),
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Self {
            key: Key::new(provider, suite, key.as_ref())?,
            iv,
            seq,
        })
    }

    /// The library these keys use.
    pub fn provider(&self) -> AeadProvider {
        self.key.provider()
    }

    /// Records protected (or opened) with this key so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The nonce for the next record; advances the sequence number. The
    /// last value, `u64::MAX`, is never used: the number never wraps, so a
    /// nonce is never used twice under one key.
    fn next_nonce(&mut self) -> Result<[u8; 12], RecordError> {
        let next = self
            .seq
            .checked_add(1)
            .ok_or(RecordError::SequenceExhausted)?;
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = next;
        Ok(n)
    }

    /// Protects the record whose header slot starts at `start`: `buf[start
    /// ..start + HEADER_LEN]` is reserved, the content follows to the end of
    /// `buf` (at most [`MAX_CONTENT`] bytes). Appends the inner content
    /// type and the tag, writes the header, encrypts in place.
    ///
    /// # Errors
    /// [`RecordError::SequenceExhausted`] once the sequence number is used
    /// up (`buf` is then unchanged): rekey or close.
    ///
    /// # Panics
    /// Never for a record's worth of content: the AEAD refuses only inputs
    /// of gigabytes.
    pub fn seal(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
        content_type: u8,
    ) -> Result<(), RecordError> {
        debug_assert!(buf.len() - start - HEADER_LEN <= MAX_CONTENT);
        let nonce = self.next_nonce()?;
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
        let tag = self.key.seal(nonce, header, &mut buf[start + HEADER_LEN..]);
        buf.extend_from_slice(&tag);
        Ok(())
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
        let nonce = self.next_nonce()?;
        let plain = self.key.open(nonce, header, &mut rec[HEADER_LEN..])?;
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
pub(crate) fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
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
        Keys::with_provider(AeadProvider::AwsLcRs, seq, &secrets).unwrap()
    }

    /// The two libraries make the same records, and each opens the
    /// other's (AES-256-GCM and ChaCha20-Poly1305: rustls builds 128-bit
    /// keys only inside a handshake).
    #[test]
    fn providers_interoperate() {
        let suites = [
            ConnectionTrafficSecrets::Aes256Gcm {
                key: [3u8; 32].into(),
                iv: [4u8; 12].into(),
            },
            ConnectionTrafficSecrets::Chacha20Poly1305 {
                key: [5u8; 32].into(),
                iv: [6u8; 12].into(),
            },
        ];
        let (a, r) = (AeadProvider::AwsLcRs, AeadProvider::Ring);
        for secrets in &suites {
            for (from, to) in [(a, r), (r, a), (a, a), (r, r)] {
                let mut tx = Keys::with_provider(from, 7, secrets).unwrap();
                let mut rx = Keys::with_provider(to, 7, secrets).unwrap();
                assert_eq!((tx.provider(), rx.provider()), (from, to));
                let mut buf = vec![0; HEADER_LEN];
                buf.extend_from_slice(b"same bytes on the wire");
                tx.seal(&mut buf, 0, APPLICATION_DATA).unwrap();
                let mut other = Keys::with_provider(to, 7, secrets).unwrap();
                let mut copy = vec![0; HEADER_LEN];
                copy.extend_from_slice(b"same bytes on the wire");
                other.seal(&mut copy, 0, APPLICATION_DATA).unwrap();
                assert_eq!(buf, copy, "{from:?} and {to:?} sealed differently");
                let (ty, range) = rx.open(&mut buf).unwrap();
                assert_eq!(
                    (ty, &buf[range]),
                    (APPLICATION_DATA, &b"same bytes on the wire"[..])
                );
            }
        }
    }

    #[test]
    fn seal_then_open_round_trips_and_checks_order() {
        let (mut tx, mut rx) = (keys(5), keys(5));
        let mut buf = vec![0xee; 3]; // bytes before the record stay
        buf.extend_from_slice(&[0; HEADER_LEN]);
        buf.extend_from_slice(b"hello");
        tx.seal(&mut buf, 3, APPLICATION_DATA).unwrap();
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
        tx.seal(&mut buf, 0, APPLICATION_DATA).unwrap();
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

    /// The sequence number never wraps: the last record under a key is
    /// sealed (and opened) at `u64::MAX - 1`, the next is refused on both
    /// sides without touching the buffer (a wrapped number would reuse a
    /// nonce).
    #[test]
    fn sequence_number_never_wraps() {
        let (mut tx, mut rx) = (keys(u64::MAX - 1), keys(u64::MAX - 1));
        let mut buf = vec![0; HEADER_LEN];
        buf.extend_from_slice(b"last");
        tx.seal(&mut buf, 0, APPLICATION_DATA).unwrap();
        let (ty, r) = rx.open(&mut buf).unwrap();
        assert_eq!((ty, &buf[r]), (APPLICATION_DATA, &b"last"[..]));
        assert_eq!((tx.seq(), rx.seq()), (u64::MAX, u64::MAX));
        let mut next = vec![0; HEADER_LEN];
        next.extend_from_slice(b"one more");
        let before = next.clone();
        assert_eq!(
            tx.seal(&mut next, 0, APPLICATION_DATA),
            Err(RecordError::SequenceExhausted)
        );
        assert_eq!(next, before, "a refused record leaves the buffer alone");
        let mut rec = buf.clone();
        assert_eq!(rx.open(&mut rec), Err(RecordError::SequenceExhausted));
        assert_eq!(tx.seq(), u64::MAX, "still exhausted");
    }

    #[test]
    fn errors_map_to_alerts() {
        assert_eq!(RecordError::BadRecord.alert(), 20);
        assert_eq!(RecordError::BadLength(20_000).alert(), 22);
        assert_eq!(RecordError::UnexpectedType(20).alert(), 10);
        assert_eq!(RecordError::NoContentType.alert(), 10);
        assert_eq!(RecordError::SequenceExhausted.alert(), 80);
    }
}
