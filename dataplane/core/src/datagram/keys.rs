//! The datagram transport's keys: exported from the TLS 1.3 session that
//! authenticated the peer (RFC 8446 §7.5), then one chain per direction
//! that rekeying walks forward.
//!
//! # From the TLS session
//! rustls's unbuffered connections (which the tunnel session drives) offer
//! no `export_keying_material` in rustls 0.23: only the buffered
//! connections do. What rustls does offer every connection is its key
//! log, which it hands the exporter master secret (`EXPORTER_SECRET`) as
//! soon as the key schedule derives it, before the handshake ends. So a
//! connection made by [`client`] or [`server`] gets its own copy of the
//! caller's configuration whose key log is an [`Exporter`]: it keeps that
//! one secret (and passes everything to the configuration's own key log,
//! if it had one), nothing else. The session takes it when the handshake
//! completes ([`crate::tunnel::Session::with_exporter`]), and
//! [`crate::tunnel::Session::take_datagram_keys`] then computes the RFC
//! 8446 exporter itself, with the negotiated suite's hash and HKDF from
//! rustls's provider: the same bytes rustls's own `export_keying_material`
//! gives (a test compares them).
//!
//! # The key schedule
//! With `HKDF-Expand-Label` of RFC 8446 §7.1 and the suite's hash:
//!
//! ```text
//! master      = TLS-Exporter("EXPORTER-sluice-datagram-v1", "", Hash.length)
//! secret_0    = HKDF-Expand-Label(master, "dg c2s" | "dg s2c", "", Hash.length)
//! key_n       = HKDF-Expand-Label(secret_n, "dg key", "", key length)
//! iv_n        = HKDF-Expand-Label(secret_n, "dg iv", "", 12)
//! secret_n+1  = HKDF-Expand-Label(secret_n, "dg upd", "", Hash.length)
//! ```
//!
//! `n` is the epoch. Each side drops a secret as soon as it has derived
//! the next one (they are zeroed on drop), so a key taken from memory
//! opens nothing sealed before the epoch it belongs to. The AEAD is the
//! TLS suite's (AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305), run by
//! the library the caller chose ([`AeadProvider`]), as the record layer's.
//!
//! Secrets live in rustls's `OkmBlock`, which zeroes itself on drop; no
//! type here prints one.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::{
    CipherSuite, KeyLog, Side, SupportedCipherSuite, Tls13CipherSuite,
    client::UnbufferedClientConnection,
    crypto::tls13::{HkdfExpander, OkmBlock},
    pki_types::ServerName,
    server::UnbufferedServerConnection,
};

use crate::tunnel::{AeadProvider, Handshake};
use crate::wire::datagram::TAG_LEN;

/// The exporter label of the datagram keys (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-sluice-datagram-v1";
/// The key log label under which rustls reports the exporter secret.
const EXPORTER_SECRET: &str = "EXPORTER_SECRET";
/// Length of the per-epoch IV.
const IV_LEN: usize = 12;

/// Why datagram keys could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The negotiated suite is not a TLS 1.3 AEAD suite this code knows.
    #[error("unsupported cipher suite for datagram keys")]
    UnsupportedSuite,
    /// The library refused a key (never for the lengths used here).
    #[error("AEAD key setup failed")]
    Aead,
}

/// Captures one connection's TLS exporter secret through rustls's key
/// log (see the module docs). Made by [`client`] and [`server`]; handed
/// to [`crate::tunnel::Session::with_exporter`].
pub struct Exporter(Arc<Capture>);

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("captured", &self.0.secret.lock().is_ok_and(|s| s.is_some()))
            .finish()
    }
}

impl Exporter {
    /// The exporter secret, once rustls has derived it (taken: asked
    /// again, `None`).
    pub(crate) fn take(&self) -> Option<OkmBlock> {
        self.0
            .secret
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The key log installed in the connection's own configuration.
struct Capture {
    secret: Mutex<Option<OkmBlock>>,
    /// The caller's key log, which still sees what it asked for.
    inner: Arc<dyn KeyLog>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl KeyLog for Capture {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET && secret.len() <= OkmBlock::MAX_LEN {
            *self.secret.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(OkmBlock::new(secret));
        }
        if self.inner.will_log(label) {
            self.inner.log(label, client_random, secret);
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET || self.inner.will_log(label)
    }
}

fn capture(inner: &Arc<dyn KeyLog>) -> Arc<Capture> {
    Arc::new(Capture {
        secret: Mutex::new(None),
        inner: inner.clone(),
    })
}

/// A client connection (the gateway's side) whose exporter secret is
/// captured: `config` is copied (a few reference counts and small
/// vectors) with an [`Exporter`] as its key log.
///
/// # Errors
/// As `UnbufferedClientConnection::new`.
pub fn client(
    config: &Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<(Handshake, Exporter), rustls::Error> {
    let cap = capture(&config.key_log);
    let mut cfg = (**config).clone();
    cfg.key_log = cap.clone();
    let conn = UnbufferedClientConnection::new(Arc::new(cfg), name)?;
    Ok((conn.into(), Exporter(cap)))
}

/// A server connection (the edge's side) whose exporter secret is
/// captured, as [`client`].
///
/// # Errors
/// As `UnbufferedServerConnection::new`.
pub fn server(config: &Arc<rustls::ServerConfig>) -> Result<(Handshake, Exporter), rustls::Error> {
    let cap = capture(&config.key_log);
    let mut cfg = (**config).clone();
    cfg.key_log = cap.clone();
    let conn = UnbufferedServerConnection::new(Arc::new(cfg))?;
    Ok((conn.into(), Exporter(cap)))
}

/// `HKDF-Expand-Label(secret, label, context, out.len())` (RFC 8446
/// §7.1) into `out`.
fn expand_label(exp: &dyn HkdfExpander, label: &[u8], context: &[u8], out: &mut [u8]) {
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).unwrap_or(u8::MAX)];
    let context_len = [u8::try_from(context.len()).unwrap_or(u8::MAX)];
    let info: [&[u8]; 6] = [&len, &label_len, b"tls13 ", label, &context_len, context];
    // Lengths here are at most a hash's: far below HKDF's 255 blocks.
    let _ = exp.expand_slice(&info, out);
}

/// `HKDF-Expand-Label(secret, label, context, Hash.length)`.
fn expand_label_block(
    suite: &Tls13CipherSuite,
    secret: &OkmBlock,
    label: &[u8],
    context: &[u8],
) -> OkmBlock {
    let exp = suite.hkdf_provider.expander_for_okm(secret);
    let mut out = [0u8; OkmBlock::MAX_LEN];
    let n = exp.hash_len();
    expand_label(exp.as_ref(), label, context, &mut out[..n]);
    let block = OkmBlock::new(&out[..n]);
    out.fill(0);
    block
}

/// The TLS 1.3 exporter (RFC 8446 §7.5) over the exporter master secret:
/// `HKDF-Expand-Label(Derive-Secret(secret, label, ""), "exporter",
/// Hash(context), out.len())`.
pub(crate) fn tls_exporter(
    suite: &Tls13CipherSuite,
    exporter_secret: &OkmBlock,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) {
    let hash = suite.common.hash_provider;
    let derived = expand_label_block(suite, exporter_secret, label, hash.hash(&[]).as_ref());
    let exp = suite.hkdf_provider.expander_for_okm(&derived);
    expand_label(exp.as_ref(), b"exporter", hash.hash(context).as_ref(), out);
}

/// The AEAD of a TLS 1.3 suite: an index into both libraries' lists
/// (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) and its key length.
fn aead_of(suite: &Tls13CipherSuite) -> Result<(usize, usize), KeyError> {
    match suite.common.suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => Ok((0, 16)),
        CipherSuite::TLS13_AES_256_GCM_SHA384 => Ok((1, 32)),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Ok((2, 32)),
        _ => Err(KeyError::UnsupportedSuite),
    }
}

/// Most records one key may seal: the confidentiality limit of AES-GCM
/// in RFC 9001 §6.6 (2^23 packets; ChaCha20-Poly1305's is beyond any
/// count, the same bound is used for simplicity). Rekeying happens long
/// before ([`super::DatagramConfig::rekey_after_records`]); this is the
/// hard stop when the peer never lets us rekey.
pub const MAX_RECORDS_PER_KEY: u64 = 1 << 23;

/// The integrity limit (RFC 9001 §6.6): records that failed
/// authentication, over the session's life and across its keys, after
/// which the session refuses everything. 2^52 for AES-GCM, 2^36 for
/// ChaCha20-Poly1305.
pub(crate) fn integrity_limit(suite: &Tls13CipherSuite) -> u64 {
    if suite.common.suite == CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 {
        1 << 36
    } else {
        1 << 52
    }
}

/// The keys a datagram session starts from: the exported master secret,
/// the suite and which side we are. Made once per TLS session
/// ([`crate::tunnel::Session::take_datagram_keys`]); not `Clone`, and a
/// [`super::DatagramSession`] consumes it, so one exported secret never
/// seeds two sessions (which would reuse nonces).
pub struct DatagramKeys {
    suite: &'static Tls13CipherSuite,
    side: Side,
    master: OkmBlock,
}

impl std::fmt::Debug for DatagramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("DatagramKeys")
            .field("suite", &self.suite.common.suite)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl DatagramKeys {
    /// Keys from the TLS exporter secret of a session that negotiated
    /// `suite`, on `side`.
    ///
    /// # Errors
    /// [`KeyError::UnsupportedSuite`] for a TLS 1.2 suite or an AEAD this
    /// code does not know.
    pub(crate) fn from_exporter_secret(
        suite: SupportedCipherSuite,
        side: Side,
        exporter_secret: &OkmBlock,
    ) -> Result<Self, KeyError> {
        let SupportedCipherSuite::Tls13(suite) = suite else {
            return Err(KeyError::UnsupportedSuite);
        };
        aead_of(suite)?;
        let mut master = [0u8; OkmBlock::MAX_LEN];
        let n = suite.common.hash_provider.output_len();
        tls_exporter(
            suite,
            exporter_secret,
            EXPORTER_LABEL,
            &[],
            &mut master[..n],
        );
        let keys = Self {
            suite,
            side,
            master: OkmBlock::new(&master[..n]),
        };
        master.fill(0);
        Ok(keys)
    }

    /// Keys straight from a master secret, for tests, fuzzing and
    /// benches: never for traffic (two sessions from one master would
    /// reuse nonces).
    ///
    /// # Errors
    /// As [`DatagramKeys::from_exporter_secret`].
    #[cfg(any(test, feature = "fuzzing", feature = "lab-pki"))]
    #[doc(hidden)]
    pub fn from_master_for_tests(
        suite: SupportedCipherSuite,
        side: Side,
        master: &[u8],
    ) -> Result<Self, KeyError> {
        let SupportedCipherSuite::Tls13(suite) = suite else {
            return Err(KeyError::UnsupportedSuite);
        };
        aead_of(suite)?;
        Ok(Self {
            suite,
            side,
            master: OkmBlock::new(&master[..master.len().min(OkmBlock::MAX_LEN)]),
        })
    }

    /// The TLS suite the keys follow.
    pub fn suite(&self) -> &'static Tls13CipherSuite {
        self.suite
    }

    /// Which side of the TLS session we are.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The two chains: what we send with, what we receive with.
    pub(crate) fn into_chains(self) -> (Chain, Chain) {
        let c2s = Chain::start(self.suite, &self.master, b"dg c2s");
        let s2c = Chain::start(self.suite, &self.master, b"dg s2c");
        match self.side {
            Side::Client => (c2s, s2c),
            Side::Server => (s2c, c2s),
        }
    }
}

/// One direction's chain of secrets: the secret of epoch `epoch`; its
/// predecessors are gone.
pub(crate) struct Chain {
    suite: &'static Tls13CipherSuite,
    secret: OkmBlock,
    epoch: u64,
}

impl Chain {
    fn start(suite: &'static Tls13CipherSuite, master: &OkmBlock, label: &[u8]) -> Self {
        Self {
            suite,
            secret: expand_label_block(suite, master, label, &[]),
            epoch: 0,
        }
    }

    /// The epoch whose secret the chain holds.
    #[cfg(test)]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The AEAD key and IV of the chain's epoch.
    pub(crate) fn key(&self, provider: AeadProvider) -> Result<EpochKey, KeyError> {
        let (alg, key_len) = aead_of(self.suite)?;
        let exp = self.suite.hkdf_provider.expander_for_okm(&self.secret);
        let mut key = [0u8; 32];
        let mut iv = [0u8; IV_LEN];
        expand_label(exp.as_ref(), b"dg key", &[], &mut key[..key_len]);
        expand_label(exp.as_ref(), b"dg iv", &[], &mut iv);
        let aead = Aead::new(provider, alg, &key[..key_len]);
        key.fill(0);
        Ok(EpochKey {
            aead: aead?,
            iv,
            epoch: self.epoch,
        })
    }

    /// Moves to the next epoch; the current secret is dropped (zeroed).
    pub(crate) fn advance(&mut self) {
        self.secret = expand_label_block(self.suite, &self.secret, b"dg upd", &[]);
        self.epoch += 1;
    }
}

/// One epoch's AEAD key and IV.
pub(crate) struct EpochKey {
    aead: Aead,
    iv: [u8; IV_LEN],
    pub(crate) epoch: u64,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for EpochKey {
    fn drop(&mut self) {
        self.iv.fill(0);
    }
}

impl EpochKey {
    fn nonce(&self, counter: u64) -> [u8; IV_LEN] {
        let mut n = self.iv;
        for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
            *b ^= c;
        }
        n
    }

    /// Seals `data` in place with `counter`'s nonce and `aad`; returns
    /// the tag.
    #[inline]
    pub(crate) fn seal(&self, counter: u64, aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        self.aead.seal(self.nonce(counter), aad, data)
    }

    /// Opens `data` (ciphertext then tag) in place; returns the
    /// plaintext's length, or `None` if it does not authenticate.
    #[inline]
    pub(crate) fn open(&self, counter: u64, aad: &[u8], data: &mut [u8]) -> Option<usize> {
        self.aead.open(self.nonce(counter), aad, data)
    }
}

/// A key of either library (their APIs are the same: aws-lc-rs mirrors
/// ring's), as the record layer holds them.
enum Aead {
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    /// Boxed: ring keeps its key schedule inline.
    Ring(Box<ring::aead::LessSafeKey>),
}

impl Aead {
    fn new(provider: AeadProvider, alg: usize, key: &[u8]) -> Result<Self, KeyError> {
        use aws_lc_rs::aead as a;
        use ring::aead as r;
        Ok(match provider {
            AeadProvider::Ring => {
                let alg = [&r::AES_128_GCM, &r::AES_256_GCM, &r::CHACHA20_POLY1305][alg];
                let key = r::UnboundKey::new(alg, key).map_err(|_| KeyError::Aead)?;
                Aead::Ring(Box::new(r::LessSafeKey::new(key)))
            }
            AeadProvider::AwsLcRs => {
                let alg = [&a::AES_128_GCM, &a::AES_256_GCM, &a::CHACHA20_POLY1305][alg];
                let key = a::UnboundKey::new(alg, key).map_err(|_| KeyError::Aead)?;
                Aead::AwsLc(a::LessSafeKey::new(key))
            }
        })
    }

    #[inline]
    fn seal(&self, nonce: [u8; IV_LEN], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        let mut out = [0; TAG_LEN];
        // Both refuse only inputs of gigabytes; a datagram is at most 64 KiB.
        match self {
            Aead::AwsLc(k) => {
                if let Ok(tag) = k.seal_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(aad),
                    data,
                ) {
                    out.copy_from_slice(tag.as_ref());
                }
            }
            Aead::Ring(k) => {
                if let Ok(tag) = k.seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    data,
                ) {
                    out.copy_from_slice(tag.as_ref());
                }
            }
        }
        out
    }

    #[inline]
    fn open(&self, nonce: [u8; IV_LEN], aad: &[u8], data: &mut [u8]) -> Option<usize> {
        match self {
            Aead::AwsLc(k) => k
                .open_in_place(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(aad),
                    data,
                )
                .ok()
                .map(|p| p.len()),
            Aead::Ring(k) => k
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    data,
                )
                .ok()
                .map(|p| p.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;

    /// The chains of the two sides mirror each other, directions and
    /// epochs differ, and with every suite and either library the keys
    /// open what the other side sealed. (The exporter itself is checked
    /// against rustls's own in the session tests.)
    #[test]
    fn chains_mirror_each_other_and_epochs_differ() {
        for suite in [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            for (pa, pb) in [
                (AeadProvider::AwsLcRs, AeadProvider::Ring),
                (AeadProvider::Ring, AeadProvider::AwsLcRs),
            ] {
                let c = DatagramKeys::from_master_for_tests(suite, Side::Client, &[7; 32]).unwrap();
                let s = DatagramKeys::from_master_for_tests(suite, Side::Server, &[7; 32]).unwrap();
                let (mut c_tx, c_rx) = c.into_chains();
                let (s_tx, mut s_rx) = s.into_chains();
                let seal_open = |tx: &Chain, rx: &Chain| {
                    let (k1, k2) = (tx.key(pa).unwrap(), rx.key(pb).unwrap());
                    let mut data = *b"sixteen bytes!!!\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
                    let tag = k1.seal(9, b"aad", &mut data[..16]);
                    data[16..].copy_from_slice(&tag);
                    k2.open(9, b"aad", &mut data).map(|n| data[..n].to_vec())
                };
                assert_eq!(
                    seal_open(&c_tx, &s_rx).as_deref(),
                    Some(&b"sixteen bytes!!!"[..])
                );
                assert_eq!(
                    seal_open(&s_tx, &c_rx).as_deref(),
                    Some(&b"sixteen bytes!!!"[..])
                );
                // The directions differ.
                assert_eq!(seal_open(&c_tx, &c_rx), None, "{suite:?}");
                // Epoch 1 opens only with epoch 1.
                c_tx.advance();
                assert_eq!(seal_open(&c_tx, &s_rx), None);
                s_rx.advance();
                assert_eq!((c_tx.epoch(), s_rx.epoch()), (1, 1));
                assert!(seal_open(&c_tx, &s_rx).is_some());
            }
        }
    }

    #[test]
    fn tls12_and_debug_output_have_no_secret() {
        let k = DatagramKeys::from_master_for_tests(
            cs::TLS13_AES_256_GCM_SHA384,
            Side::Client,
            &[0x5a; 48],
        )
        .unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("TLS13_AES_256_GCM_SHA384"), "{dbg}");
        assert!(!dbg.contains("90") && !dbg.contains("5a"), "{dbg}");
        assert_eq!(
            DatagramKeys::from_master_for_tests(
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                Side::Client,
                &[1; 32]
            )
            .unwrap_err(),
            KeyError::UnsupportedSuite
        );
    }
}
