use std::time::{Duration, Instant};

use rustls::{
    ConnectionTrafficSecrets, Side, SupportedCipherSuite,
    client::{ClientConnectionData, UnbufferedClientConnection},
    crypto::tls13::OkmBlock,
    kernel::KernelConnection,
    pki_types::CertificateDer,
    server::{ServerConnectionData, UnbufferedServerConnection},
    unbuffered::{ConnectionState, EncodeError},
};

use super::record::{self, AeadProvider, Keys};
use crate::datagram::{DatagramKeys, Exporter, KeyError};
use crate::wire::{
    WireError,
    tunnel::{self, CloseCode, Echo, Frame, FrameType, Hello},
};

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name, sent in HELLO (for the peer's logs).
    pub name: String,
    /// Send a KEEPALIVE after this long without sending anything.
    pub keepalive: Duration,
    /// Declare the peer dead after this long without receiving anything
    /// (including the TLS handshake).
    pub idle_timeout: Duration,
    /// The TLS handshake and the HELLO exchange must be over this long
    /// after [`Session::new`], however the peer paces its bytes (an
    /// absolute deadline: receiving does not extend it).
    pub handshake_timeout: Duration,
    /// Close the session when bytes have waited this long for the socket
    /// without any of them being written: a peer that stopped reading
    /// (nothing more, not even a CLOSE, can reach it).
    pub write_timeout: Duration,
    /// Coalesce frames up to this many plaintext bytes into one TLS record
    /// (a record holds at most 16 KiB; a larger frame spans records).
    pub coalesce_bytes: usize,
    /// How long a partly filled record may wait for more frames at
    /// [`Session::flush_due`]. Zero: sealed at the end of every batch.
    pub coalesce_delay: Duration,
    /// Cap on TLS bytes queued for the socket; beyond it sends are refused.
    pub max_pending_tls: usize,
    /// Send a TLS key update after this many records under one key (well
    /// below every suite's confidentiality limit, 2^23 records for
    /// AES-256-GCM in rustls).
    pub rekey_after_records: u64,
    /// The library that protects records, chosen by the caller (the
    /// dataplane measures both once at start-up and passes the faster;
    /// the default is aws-lc-rs).
    pub aead: AeadProvider,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            keepalive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            coalesce_bytes: 16 * 1024 - 256,
            coalesce_delay: Duration::ZERO,
            max_pending_tls: 4 * 1024 * 1024,
            rekey_after_records: 1 << 20,
            aead: AeadProvider::AwsLcRs,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it ([`Session::close`]).
    Local(CloseCode, String),
    /// The peer sent CLOSE.
    Peer(CloseCode, String),
    /// The peer closed the stream (TLS `close_notify` or TCP EOF).
    Eof,
    /// Nothing received for the idle timeout.
    Timeout,
    /// The handshake (TLS and HELLO) was not over by its deadline.
    HandshakeTimeout,
    /// The peer stopped reading: queued bytes made no progress for the
    /// write timeout. What was queued is discarded.
    Stalled,
    /// TLS failed (bad certificate, bad record, ...).
    Tls(String),
    /// The peer broke the framing protocol.
    Protocol(String),
}

/// Errors of the receive path ([`Session::receive_buffer`],
/// [`Session::handle_received`]). The session is closed afterwards; any
/// alert or CLOSE frame it queued should still be transmitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session is closed, with this reason.
    #[error("tunnel closed: {0:?}")]
    Closed(CloseReason),
}

/// Who the peer is. Its certificate chain was verified by rustls against
/// the configured CA; the name is what it said in its HELLO, escaped for
/// logs ([`printable`], at most 64 characters): a label, not an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name from the peer's HELLO, safe to log.
    pub name: String,
    /// The certificate chain the peer presented (its own first).
    pub certificates: Vec<CertificateDer<'static>>,
}

/// What happened to a session ([`Session::poll_event`]). Each kind but
/// `EchoReply` comes at most once, in this order; `Closed` may come
/// without the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The TLS handshake is done: the peer holds the key of this
    /// certificate chain, which rustls verified. Its HELLO is not read yet
    /// (no packet flows before it): the edge admits the peer on this.
    Authenticated {
        /// The chain the peer presented (its own certificate first).
        certificates: Vec<CertificateDer<'static>>,
    },
    /// Both HELLOs are exchanged: packets flow both ways.
    Established {
        /// Who the peer is.
        peer: Peer,
    },
    /// The peer answered one of our echo probes ([`Session::send_echo`]).
    /// Unlike the others, this comes once per reply; the last
    /// [`ECHO_EVENTS`] unpolled replies are kept (older ones are counted
    /// in [`SessionStats::echo_replies_lost`]), and they come before
    /// `Closed`.
    EchoReply {
        /// The probe's sequence number.
        seq: u64,
        /// When the probe was sent, in microseconds since [`Session::new`].
        sent_at_us: u64,
        /// From the probe's sending to the receipt of the bytes that held
        /// the reply (the `now` of that `handle_received*` call).
        rtt: Duration,
    },
    /// The peer sent a datagram-transport control frame
    /// ([`crate::wire::tunnel`]: `DATAGRAM_OFFER`, `_ACCEPT`, `_USE`).
    /// At most [`CONTROL_EVENTS`] wait (older ones are dropped, counted
    /// in [`SessionStats::control_lost`]); they come before `Closed`.
    Datagram(DatagramControl),
    /// The session ended. What [`Session::poll_transmit`] still has (a
    /// CLOSE frame, TLS alerts) is worth writing; nothing more is received.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// A datagram-transport control frame the peer sent ([`Event::Datagram`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramControl {
    /// The gateway offers datagrams (edge side).
    Offer(tunnel::DatagramSetup),
    /// The edge's answer (gateway side); port 0 is a refusal.
    Accept(tunnel::DatagramSetup),
    /// Which transport the edge sends by: datagrams (`true`) or TLS.
    Use(bool),
}

/// Datagram control frames kept for [`Session::poll_event`].
pub const CONTROL_EVENTS: usize = 8;

/// Echo replies kept for [`Session::poll_event`].
pub const ECHO_EVENTS: usize = 8;

/// Pending [`Event`]s, one bit each (at most one of each kind per session:
/// no queue to bound).
const EV_AUTHENTICATED: u8 = 1;
const EV_ESTABLISHED: u8 = 2;
const EV_CLOSED: u8 = 4;

/// Why a packet was not queued. Cheap, `Copy`: per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The HELLO exchange has not completed yet, or the session is closed.
    #[error("tunnel not established")]
    NotEstablished,
    /// Too many bytes are already queued for the socket.
    #[error("tunnel send buffer full")]
    Backpressure,
    /// The packet is larger than a frame (or the peer) allows.
    #[error("packet too large for the tunnel")]
    TooLarge,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// PACKET frames queued for sending.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// TLS records sealed (data, key updates and alerts).
    pub tx_records: u64,
    /// PACKET frames received.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// KEEPALIVE frames sent.
    pub keepalives_sent: u64,
    /// Frames of unknown but ignorable type that were skipped.
    pub skipped_frames: u64,
    /// TLS key updates sent.
    pub key_updates_tx: u64,
    /// TLS key updates received.
    pub key_updates_rx: u64,
    /// `ECHO_REQUEST` frames sent.
    pub echo_requests_tx: u64,
    /// `ECHO_REQUEST` frames received.
    pub echo_requests_rx: u64,
    /// `ECHO_REPLY` frames sent.
    pub echo_replies_tx: u64,
    /// `ECHO_REPLY` frames received.
    pub echo_replies_rx: u64,
    /// Echo requests not answered because the send buffer was over its
    /// cap (a peer that sends probes but does not read).
    pub echo_replies_refused: u64,
    /// Echo replies dropped unpolled (more than [`ECHO_EVENTS`] waiting).
    pub echo_replies_lost: u64,
    /// Datagram control frames dropped unpolled (more than
    /// [`CONTROL_EVENTS`] waiting) or malformed.
    pub control_lost: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// TLS handshake, then waiting for the peer's HELLO.
    Hello,
    /// Packets flow.
    Established,
    /// Closed; only flushing remains.
    Closed,
}

/// A TLS connection in its handshake, driven through rustls's unbuffered
/// API. Build one with `.into()` from either side's connection; its config
/// must have `enable_secret_extraction` set: the session takes the traffic
/// keys from rustls once the handshake is done ([`super::record`]).
pub enum Handshake {
    /// The gateway side.
    Client(UnbufferedClientConnection),
    /// The edge side.
    Server(UnbufferedServerConnection),
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Client(_) => "Handshake::Client",
            Self::Server(_) => "Handshake::Server",
        })
    }
}

impl From<UnbufferedClientConnection> for Handshake {
    fn from(c: UnbufferedClientConnection) -> Self {
        Self::Client(c)
    }
}

impl From<UnbufferedServerConnection> for Handshake {
    fn from(c: UnbufferedServerConnection) -> Self {
        Self::Server(c)
    }
}

/// rustls's key schedule once the handshake is done.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update(&mut self, tx: bool) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match (self, tx) {
            (Self::Client(k), true) => k.update_tx_secret(),
            (Self::Client(k), false) => k.update_rx_secret(),
            (Self::Server(k), true) => k.update_tx_secret(),
            (Self::Server(k), false) => k.update_rx_secret(),
        }
    }
}

/// The TLS side of a session: rustls during the handshake, then our own
/// record protection with rustls keeping the key schedule.
enum Tls {
    Handshake(Box<Handshake>),
    Traffic {
        kernel: Box<Kernel>,
        tx: Keys,
        rx: Keys,
    },
    /// The handshake failed or the record layer broke: nothing more is
    /// sealed or opened.
    Dead,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handshake(_) => f.write_str("Handshake"),
            Self::Traffic { tx, rx, .. } => f
                .debug_struct("Traffic")
                .field("tx", tx)
                .field("rx", rx)
                .finish_non_exhaustive(),
            Self::Dead => f.write_str("Dead"),
        }
    }
}

/// What one step of the handshake asked for.
enum Step {
    /// Call again.
    Continue,
    /// Needs more bytes from the peer.
    Blocked,
    /// Application data may be sent: the handshake may be complete.
    Traffic,
    /// The peer closed the stream.
    Closed,
    /// The handshake failed.
    Failed(rustls::Error),
}

/// Handles one state of rustls's unbuffered handshake: handshake records
/// are appended to `out`; application data that arrived with the last
/// handshake flight goes to `early`.
fn step<D>(
    status: Result<ConnectionState<'_, '_, D>, rustls::Error>,
    out: &mut Vec<u8>,
    early: &mut Vec<u8>,
) -> Step {
    let state = match status {
        Ok(s) => s,
        Err(e) => return Step::Failed(e),
    };
    match state {
        ConnectionState::EncodeTlsData(mut enc) => {
            let start = out.len();
            let mut room = 4096;
            loop {
                out.resize(start + room, 0);
                match enc.encode(&mut out[start..]) {
                    Ok(n) => {
                        out.truncate(start + n);
                        return Step::Continue;
                    }
                    Err(EncodeError::InsufficientSize(s)) => room = s.required_size,
                    Err(EncodeError::AlreadyEncoded) => {
                        out.truncate(start);
                        return Step::Continue;
                    }
                }
            }
        }
        // Queued in `out`, which is written in order: as good as sent.
        ConnectionState::TransmitTlsData(t) => {
            t.done();
            Step::Continue
        }
        ConnectionState::ReadTraffic(mut r) => {
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => early.extend_from_slice(rec.payload),
                    Err(e) => return Step::Failed(e),
                }
            }
            Step::Continue
        }
        ConnectionState::BlockedHandshake => Step::Blocked,
        ConnectionState::WriteTraffic(_) => Step::Traffic,
        ConnectionState::PeerClosed | ConnectionState::Closed => Step::Closed,
        // Early data is not enabled; anything else is new in rustls.
        _ => Step::Failed(rustls::Error::General("unexpected TLS state".into())),
    }
}

/// Size of the receive buffer once the handshake is done; it holds TLS
/// records as read from the socket and is decrypted in place.
const RX_BUF_INITIAL: usize = 256 * 1024;
/// Before the handshake is done (nothing is authenticated yet) the receive
/// buffer starts empty and grows by at least this much when it needs room:
/// a connection that sent a few bytes holds a few KiB, not
/// [`RX_BUF_INITIAL`].
const HS_RX_CHUNK: usize = 4 * 1024;
/// Cap on the receive buffer before the handshake is done: the largest
/// handshake message rustls accepts (64 KiB) with its record headers. A
/// peer that needs more fails the handshake.
const HS_RX_MAX: usize = 96 * 1024;
/// Longest peer name kept from a HELLO (in characters, after escaping).
const PEER_NAME_MAX: usize = 64;
/// Free space below which the receive buffer is compacted (or grown)
/// before reading: one maximal record.
const RX_MIN_FREE: usize = record::HEADER_LEN + record::MAX_CIPHERTEXT;
/// The receive buffer never grows beyond this: a frame (at most 64 KiB)
/// plus records in flight.
const RX_BUF_MAX: usize = 1024 * 1024;

/// Key updates a peer may send without application data between them
/// (rustls's and `BoringSSL`'s limit): each costs key derivations, and a
/// peer has no use for more.
const MAX_KEY_UPDATES_WITHOUT_DATA: u32 = 32;

/// Handshake message types seen after the handshake.
const HS_NEW_SESSION_TICKET: u8 = 4;
const HS_KEY_UPDATE: u8 = 24;

/// The TLS exporter secret and our side, never printed.
struct ExporterSecret(OkmBlock, Side);

impl std::fmt::Debug for ExporterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterSecret")
            .field("side", &self.1)
            .finish_non_exhaustive()
    }
}

/// One tunnel session over one TLS connection. See the [module
/// docs](super) for the call order.
#[derive(Debug)]
pub struct Session {
    tls: Tls,
    cfg: SessionConfig,
    state: State,
    close_reason: Option<CloseReason>,
    peer_name: String,
    peer_max_payload: usize,
    peer_certs: Vec<CertificateDer<'static>>,
    suite: Option<SupportedCipherSuite>,
    /// Outgoing TLS bytes: `tx_buf[tx_sent..tx_sealed]` are sealed records
    /// not yet written; `tx_buf[tx_sealed..]`, if any, is the open record:
    /// a header slot and the frames coalesced so far, sealed in place by
    /// [`Session::flush`].
    tx_buf: Vec<u8>,
    tx_sent: usize,
    tx_sealed: usize,
    /// When the open record got its first frame, for the coalescing delay.
    open_since: Option<Instant>,
    /// The peer asked for a key update: ours goes out before more data.
    key_update_due: bool,
    /// The last record we sealed is a key update answering a request: a
    /// further request before we send anything else needs no other answer
    /// (RFC 8446 §4.6.3), so requests cannot make us queue bytes.
    key_update_answered: bool,
    /// Key updates received since the last application data record.
    key_updates_since_data: u32,
    /// Received bytes. `rx_buf[p_start..p_end]`: decrypted frame bytes not
    /// yet parsed (at most a partial frame carried from the previous
    /// record); `rx_buf[c_start..rx_end]`: TLS records not yet opened.
    /// Records are opened in place and frames parsed where they lie.
    rx_buf: Vec<u8>,
    p_start: usize,
    p_end: usize,
    c_start: usize,
    rx_end: usize,
    /// Application data that arrived with the peer's last handshake flight
    /// (rustls decrypted it before handing over the keys).
    early: Vec<u8>,
    /// The peer ended the stream; close once the buffered frames are read.
    peer_eof: bool,
    /// When the session began: the handshake deadline counts from here.
    started: Instant,
    /// Since when queued bytes have waited for the socket without progress.
    write_stalled_since: Option<Instant>,
    last_rx: Instant,
    last_tx: Instant,
    /// [`Event`]s not yet polled (`EV_*` bits).
    events: u8,
    /// Echo replies not yet polled, oldest first, with their round-trip
    /// times.
    echo_events: std::collections::VecDeque<(Echo, Duration)>,
    /// Datagram control frames not yet polled, oldest first.
    control_events: std::collections::VecDeque<DatagramControl>,
    /// Echo replies queued in the open record since it was last sealed:
    /// it is sealed once the received records are drained.
    echo_replies_unsealed: u32,
    /// Captures the TLS exporter secret during the handshake
    /// ([`Session::with_exporter`]).
    exporter: Option<Exporter>,
    /// The exporter secret once the handshake is done, until
    /// [`Session::take_datagram_keys`] takes it (zeroed on drop).
    exporter_secret: Option<ExporterSecret>,
    stats: SessionStats,
}

impl Session {
    /// Starts a session over `tls` (client or server side). The HELLO goes
    /// out as soon as the handshake completes.
    pub fn new(tls: Handshake, cfg: SessionConfig, now: Instant) -> Self {
        let mut s = Self {
            tls: Tls::Handshake(Box::new(tls)),
            // Nothing is allocated for traffic before the peer is
            // authenticated (see `start_traffic`).
            tx_buf: Vec::new(),
            rx_buf: Vec::new(),
            cfg,
            state: State::Hello,
            close_reason: None,
            peer_name: String::new(),
            peer_max_payload: tunnel::MAX_PAYLOAD,
            peer_certs: Vec::new(),
            suite: None,
            tx_sent: 0,
            tx_sealed: 0,
            open_since: None,
            key_update_due: false,
            key_update_answered: false,
            key_updates_since_data: 0,
            p_start: 0,
            p_end: 0,
            c_start: 0,
            rx_end: 0,
            early: Vec::new(),
            peer_eof: false,
            started: now,
            write_stalled_since: None,
            last_rx: now,
            last_tx: now,
            events: 0,
            echo_events: std::collections::VecDeque::new(),
            control_events: std::collections::VecDeque::new(),
            echo_replies_unsealed: 0,
            exporter: None,
            exporter_secret: None,
            stats: SessionStats::default(),
        };
        // The client speaks first.
        let _ = s.drive_handshake();
        s
    }

    /// Starts a session as [`Session::new`] does, over a connection made
    /// by [`crate::datagram::keys::client`] or
    /// [`crate::datagram::keys::server`], whose TLS exporter secret
    /// `exporter` captures: [`Session::take_datagram_keys`] then gives
    /// the datagram transport's keys.
    pub fn with_exporter(
        tls: Handshake,
        exporter: Exporter,
        cfg: SessionConfig,
        now: Instant,
    ) -> Self {
        let mut s = Self::new(tls, cfg, now);
        s.exporter = Some(exporter);
        s
    }

    /// The datagram transport's keys, exported from this TLS session
    /// (RFC 8446 §7.5, label [`crate::datagram::EXPORTER_LABEL`]): from
    /// [`Event::Authenticated`] on, once (the exporter secret is dropped
    /// when they are taken, so no second set can reuse their nonces).
    /// `None` before, after, or for a session made without
    /// [`Session::with_exporter`].
    ///
    /// # Errors
    /// [`KeyError::UnsupportedSuite`] for a suite the datagram transport
    /// does not know (none that TLS 1.3 negotiates today).
    pub fn take_datagram_keys(&mut self) -> Option<Result<DatagramKeys, KeyError>> {
        let ExporterSecret(secret, side) = self.exporter_secret.take()?;
        let suite = self.suite?;
        Some(DatagramKeys::from_exporter_secret(suite, side, &secret))
    }

    /// Test hook: the RFC 8446 exporter of this session for any label
    /// and context (what rustls's `export_keying_material` computes),
    /// without taking the secret.
    #[cfg(test)]
    pub(crate) fn export_for_test(&self, label: &[u8], context: &[u8], out: &mut [u8]) -> bool {
        let (Some(ExporterSecret(secret, _)), Some(SupportedCipherSuite::Tls13(suite))) =
            (&self.exporter_secret, self.suite)
        else {
            return false;
        };
        crate::datagram::keys::tls_exporter(suite, secret, label, context, out);
        true
    }

    /// True once both HELLOs are exchanged and until the session closes.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Bytes waiting to be written to the peer (sealed and not yet
    /// transmitted, plus the open record): what a probe sent now queues
    /// behind.
    pub fn pending_send(&self) -> usize {
        self.tx_buf.len() - self.tx_sent
    }

    /// True once the session has ended (see [`Session::close_reason`]).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The name the peer gave in its HELLO, safe to log: control and
    /// bidirectional-formatting characters are escaped (`\u{1b}`), and it is
    /// cut to 64 characters.
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    /// True while the TLS handshake runs (the peer is not authenticated
    /// yet); false once traffic keys are in use or the session failed.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.tls, Tls::Handshake(_))
    }

    /// Bytes of buffer the session holds (receive and send buffers'
    /// capacity): a few KiB until the handshake is done.
    pub fn buffered_capacity(&self) -> usize {
        self.rx_buf.capacity() + self.tx_buf.capacity() + self.early.capacity()
    }

    /// The certificate chain the peer presented (verified by rustls), once
    /// the handshake is done.
    pub(crate) fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certs
    }

    /// The negotiated cipher suite, once the handshake is done.
    pub fn cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.suite
    }

    /// The library protecting records, once traffic keys are in use.
    pub fn aead_provider(&self) -> Option<AeadProvider> {
        match &self.tls {
            Tls::Traffic { tx, .. } => Some(tx.provider()),
            _ => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The free part of the receive buffer: read the socket straight into
    /// it (no copy), then say how much with
    /// [`Session::handle_received_in_place`]. During the handshake the
    /// bytes go to rustls; afterwards they stay where they are, and
    /// [`Session::poll_packet`] opens the records in place.
    ///
    /// Empty when the buffer is full of records not opened yet: drain
    /// [`Session::poll_packet`] first, then ask again.
    ///
    /// # Errors
    /// The session is closed or the peer ended the stream (nothing more
    /// is taken); or the peer's handshake message does not fit the
    /// pre-authentication cap (the session is closed now).
    pub fn receive_buffer(&mut self) -> Result<&mut [u8], SessionError> {
        if self.state == State::Closed || self.peer_eof {
            return Err(SessionError::Closed(self.reason_or(CloseReason::Eof)));
        }
        if !self.make_room() {
            if self.is_handshaking() {
                // rustls still wants more of a handshake message than the
                // buffer may hold before authentication.
                return Err(self.fail(CloseReason::Tls("TLS handshake message too large".into())));
            }
            // Full of records not opened yet: poll_packet first.
            return Ok(&mut []);
        }
        let end = self.rx_end;
        Ok(&mut self.rx_buf[end..])
    }

    /// `n` bytes were read into [`Session::receive_buffer`] at `now`
    /// (`n` is capped at its length). During the handshake, rustls runs
    /// over them (and may queue its next flight for
    /// [`Session::poll_transmit`]).
    ///
    /// # Errors
    /// As [`Session::receive_buffer`]; and the handshake failed (an
    /// alert may be queued for the peer: transmit it).
    pub fn handle_received_in_place(&mut self, n: usize, now: Instant) -> Result<(), SessionError> {
        if self.state == State::Closed || self.peer_eof {
            return Err(SessionError::Closed(self.reason_or(CloseReason::Eof)));
        }
        let n = n.min(self.rx_buf.len() - self.rx_end);
        if n == 0 {
            return Ok(());
        }
        self.rx_end += n;
        self.last_rx = now;
        if matches!(self.tls, Tls::Handshake(_)) {
            self.drive_handshake()?;
        }
        Ok(())
    }

    /// Bytes received from the peer at `now`, copied into the receive
    /// buffer ([`Session::receive_buffer`] and
    /// [`Session::handle_received_in_place`] avoid the copy). Returns how
    /// many were taken: fewer than given when the buffer is full of
    /// records not opened yet; drain [`Session::poll_packet`], then hand
    /// in the rest.
    ///
    /// # Errors
    /// As [`Session::handle_received_in_place`].
    pub fn handle_received(&mut self, bytes: &[u8], now: Instant) -> Result<usize, SessionError> {
        let mut taken = 0;
        while taken < bytes.len() {
            let buf = self.receive_buffer()?;
            let n = buf.len().min(bytes.len() - taken);
            if n == 0 {
                break;
            }
            buf[..n].copy_from_slice(&bytes[taken..taken + n]);
            self.handle_received_in_place(n, now)?;
            taken += n;
        }
        Ok(taken)
    }

    /// The peer ended the stream (TCP EOF), or the socket failed: nothing
    /// more will arrive. Frames already received are still delivered by
    /// [`Session::poll_packet`], which then closes the session
    /// ([`CloseReason::Eof`]); during the handshake it closes at once.
    pub fn handle_eof(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.peer_eof = true;
        if matches!(self.tls, Tls::Handshake(_)) {
            self.set_closed(CloseReason::Eof);
        }
    }

    /// The next thing that happened to the session, once each: the peer
    /// authenticated, the session established, the session closed. Call
    /// after every `handle_*` call and after draining
    /// [`Session::poll_packet`] (the peer's HELLO and CLOSE are read
    /// there).
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = if self.events & EV_AUTHENTICATED != 0 {
            self.events &= !EV_AUTHENTICATED;
            Event::Authenticated {
                certificates: self.peer_certs.clone(),
            }
        } else if self.events & EV_ESTABLISHED != 0 {
            self.events &= !EV_ESTABLISHED;
            Event::Established {
                peer: Peer {
                    name: self.peer_name.clone(),
                    certificates: self.peer_certs.clone(),
                },
            }
        } else if let Some((echo, rtt)) = self.echo_events.pop_front() {
            Event::EchoReply {
                seq: echo.seq,
                sent_at_us: echo.sent_at_us,
                rtt,
            }
        } else if let Some(c) = self.control_events.pop_front() {
            Event::Datagram(c)
        } else if self.events & EV_CLOSED != 0 {
            self.events &= !EV_CLOSED;
            Event::Closed {
                reason: self.reason_or(CloseReason::Eof),
            }
        } else {
            return None;
        };
        Some(ev)
    }

    /// Makes room for one maximal record after `rx_end`. Returns false
    /// when the buffer holds records that [`Session::poll_packet`] should
    /// open first: moving them would copy every byte again.
    fn make_room(&mut self) -> bool {
        if self.p_start == self.p_end && self.c_start == self.rx_end {
            // Everything consumed (the usual case between reads): start
            // over at the front, for free.
            self.p_start = 0;
            self.p_end = 0;
            self.c_start = 0;
            self.rx_end = 0;
        }
        let handshaking = self.is_handshaking();
        let (min_free, max) = if handshaking {
            (HS_RX_CHUNK, HS_RX_MAX)
        } else {
            (RX_MIN_FREE, RX_BUF_MAX)
        };
        if self.rx_buf.len() - self.rx_end >= min_free {
            return true;
        }
        if matches!(self.tls, Tls::Traffic { .. })
            && record::record_len(&self.rx_buf[self.c_start..self.rx_end])
                .is_ok_and(|l| l.is_some_and(|l| l <= self.rx_end - self.c_start))
        {
            return false;
        }
        // Live bytes: at most a partial frame and a partial record. The
        // gap between them (spent headers and tags) goes too.
        let plain = self.p_end - self.p_start;
        self.rx_buf.copy_within(self.p_start..self.p_end, 0);
        self.rx_buf.copy_within(self.c_start..self.rx_end, plain);
        self.rx_end = plain + (self.rx_end - self.c_start);
        self.p_start = 0;
        self.p_end = plain;
        self.c_start = plain;
        if self.rx_buf.len() - self.rx_end < min_free && self.rx_buf.len() < max {
            let grown = (self.rx_buf.len() * 2).max(self.rx_end + min_free).min(max);
            self.rx_buf.resize(grown, 0);
        }
        self.rx_buf.len() - self.rx_end >= min_free
    }

    /// Runs the rustls handshake over the bytes received so far; switches
    /// to our own record protection when it completes.
    fn drive_handshake(&mut self) -> Result<(), SessionError> {
        for _ in 0..1000 {
            let Some(step) = self.handshake_step() else {
                return Ok(());
            };
            match step {
                Step::Continue => {}
                Step::Blocked => return Ok(()),
                Step::Traffic => {
                    let handshaking = match &self.tls {
                        Tls::Handshake(hs) => match &**hs {
                            Handshake::Client(c) => c.is_handshaking(),
                            Handshake::Server(c) => c.is_handshaking(),
                        },
                        _ => false,
                    };
                    if handshaking {
                        // A server may send before the client's Finished;
                        // we wait for it.
                        return Ok(());
                    }
                    return self.start_traffic();
                }
                Step::Closed => {
                    self.peer_eof = true;
                    return Err(self.fail(CloseReason::Eof));
                }
                Step::Failed(e) => {
                    // rustls has an alert for the peer: queue it.
                    for _ in 0..4 {
                        if !matches!(self.handshake_step(), Some(Step::Continue)) {
                            break;
                        }
                    }
                    return Err(self.fail(CloseReason::Tls(e.to_string())));
                }
            }
        }
        Err(self.fail(CloseReason::Tls("TLS handshake did not progress".into())))
    }

    /// One call into rustls's unbuffered handshake; `None` once it is over.
    fn handshake_step(&mut self) -> Option<Step> {
        let Tls::Handshake(hs) = &mut self.tls else {
            return None;
        };
        // rustls's deframer remembers positions in the input: always hand
        // it the unconsumed bytes, from where it asked to discard up to.
        let input = &mut self.rx_buf[self.c_start..self.rx_end];
        let (discard, st) = match &mut **hs {
            Handshake::Client(c) => {
                let st = c.process_tls_records(input);
                (
                    st.discard,
                    step(st.state, &mut self.tx_buf, &mut self.early),
                )
            }
            Handshake::Server(c) => {
                let st = c.process_tls_records(input);
                (
                    st.discard,
                    step(st.state, &mut self.tx_buf, &mut self.early),
                )
            }
        };
        self.c_start += discard;
        self.tx_sealed = self.tx_buf.len();
        Some(st)
    }

    /// The handshake is complete: take the traffic keys from rustls, lay
    /// out the receive buffer for in-place opening, send HELLO.
    fn start_traffic(&mut self) -> Result<(), SessionError> {
        let Tls::Handshake(hs) = std::mem::replace(&mut self.tls, Tls::Dead) else {
            return Ok(());
        };
        let (certs, suite, res) = match *hs {
            Handshake::Client(c) => (
                c.peer_certificates().map(<[_]>::to_vec),
                c.negotiated_cipher_suite(),
                c.dangerous_into_kernel_connection()
                    .map(|(s, k)| (s, Kernel::Client(k))),
            ),
            Handshake::Server(c) => (
                c.peer_certificates().map(<[_]>::to_vec),
                c.negotiated_cipher_suite(),
                c.dangerous_into_kernel_connection()
                    .map(|(s, k)| (s, Kernel::Server(k))),
            ),
        };
        let (secrets, kernel) = res.map_err(|e| self.fail(CloseReason::Tls(e.to_string())))?;
        // rustls handed the exporter secret to the key log while it ran
        // the key schedule; keep it for `take_datagram_keys`.
        let side = match kernel {
            Kernel::Client(_) => Side::Client,
            Kernel::Server(_) => Side::Server,
        };
        self.exporter_secret = self
            .exporter
            .take()
            .and_then(|e| e.take())
            .map(|s| ExporterSecret(s, side));
        let aead = self.cfg.aead;
        let keys = Keys::with_provider(aead, secrets.tx.0, &secrets.tx.1)
            .and_then(|tx| Ok((tx, Keys::with_provider(aead, secrets.rx.0, &secrets.rx.1)?)));
        let (tx, rx) = keys.map_err(|e| self.fail(CloseReason::Tls(e.to_string())))?;
        self.tls = Tls::Traffic {
            kernel: Box::new(kernel),
            tx,
            rx,
        };
        self.peer_certs = certs.unwrap_or_default();
        self.suite = suite;
        self.events |= EV_AUTHENTICATED;
        // Application data rustls decrypted goes in front of the records
        // still to open.
        // The peer is authenticated: the traffic buffers are allocated now.
        let early = std::mem::take(&mut self.early);
        let rest = self.rx_end - self.c_start;
        let want = RX_BUF_INITIAL.max(early.len() + rest + RX_MIN_FREE);
        if self.rx_buf.len() < want {
            self.rx_buf.resize(want, 0);
        }
        self.tx_buf.reserve(64 * 1024);
        self.rx_buf
            .copy_within(self.c_start..self.rx_end, early.len());
        self.rx_buf[..early.len()].copy_from_slice(&early);
        self.p_start = 0;
        self.p_end = early.len();
        self.c_start = early.len();
        self.rx_end = early.len() + rest;
        let mut hello = Vec::new();
        Hello {
            version: tunnel::VERSION,
            max_payload: u16::MAX,
            name: &self.cfg.name,
        }
        .emit_frame(&mut hello);
        self.append(&hello);
        self.flush();
        Ok(())
    }

    /// Closes the session with `reason`; returns the error to report.
    fn fail(&mut self, reason: CloseReason) -> SessionError {
        self.set_closed(reason);
        SessionError::Closed(self.reason_or(CloseReason::Eof))
    }

    /// Opens the next whole record in the receive buffer. Returns false
    /// when none is complete. Application data is moved to follow the
    /// unparsed plaintext (only that partial frame moves, not the record);
    /// handshake and alert records are handled here. On error: the alert
    /// to send the peer (none when it sent one) and why.
    fn open_record(&mut self) -> Result<bool, (Option<u8>, CloseReason)> {
        use record::alert::{DECODE_ERROR, INTERNAL_ERROR, UNEXPECTED_MESSAGE};
        let fatal = |alert: u8, what: String| (Some(alert), CloseReason::Tls(what));
        let Tls::Traffic { kernel, rx, .. } = &mut self.tls else {
            return Ok(false);
        };
        let avail = &self.rx_buf[self.c_start..self.rx_end];
        let len = match record::record_len(avail) {
            Ok(Some(len)) if len <= avail.len() => len,
            Ok(_) => return Ok(false),
            Err(e) => return Err(fatal(e.alert(), e.to_string())),
        };
        let rec_start = self.c_start;
        let (ty, range) = rx
            .open(&mut self.rx_buf[rec_start..rec_start + len])
            .map_err(|e| fatal(e.alert(), e.to_string()))?;
        self.c_start += len;
        let content = rec_start + range.start..rec_start + range.end;
        match ty {
            record::APPLICATION_DATA => {
                self.key_updates_since_data = 0;
                let carried = self.p_end - self.p_start;
                let new_start = content.start - carried;
                self.rx_buf.copy_within(self.p_start..self.p_end, new_start);
                self.p_start = new_start;
                self.p_end = content.end;
                Ok(true)
            }
            record::ALERT => match self.rx_buf[content] {
                // close_notify: nothing after it counts.
                [_, 0] => {
                    self.peer_eof = true;
                    self.c_start = self.rx_end;
                    Ok(true)
                }
                // The peer has closed: no alert goes back.
                [_, desc] => Err((
                    None,
                    CloseReason::Tls(format!("peer sent TLS alert {desc}")),
                )),
                _ => Err(fatal(DECODE_ERROR, "malformed TLS alert".into())),
            },
            record::HANDSHAKE => {
                // Whole messages only: rustls never fragments these.
                let mut msgs = &self.rx_buf[content];
                while let [typ, a, b, c, rest @ ..] = msgs {
                    let n = u32::from_be_bytes([0, *a, *b, *c]) as usize;
                    let Some((body, rest)) = rest.split_at_checked(n) else {
                        return Err(fatal(
                            UNEXPECTED_MESSAGE,
                            "fragmented TLS handshake message".into(),
                        ));
                    };
                    match (*typ, body, &mut **kernel) {
                        (HS_KEY_UPDATE, [req @ (0 | 1)], k) => {
                            count_key_update(&mut self.key_updates_since_data)?;
                            let (seq, secrets) = k
                                .update(false)
                                .map_err(|e| fatal(INTERNAL_ERROR, e.to_string()))?;
                            *rx = Keys::with_provider(rx.provider(), seq, &secrets)
                                .map_err(|e| fatal(INTERNAL_ERROR, e.to_string()))?;
                            self.stats.key_updates_rx += 1;
                            self.key_update_due |= *req == 1;
                            // A key update must end its record.
                            if !rest.is_empty() {
                                return Err(fatal(
                                    UNEXPECTED_MESSAGE,
                                    "data after TLS key update".into(),
                                ));
                            }
                        }
                        (HS_NEW_SESSION_TICKET, _, Kernel::Client(k)) => {
                            k.handle_new_session_ticket(body)
                                .map_err(|e| fatal(DECODE_ERROR, e.to_string()))?;
                        }
                        (t, ..) => {
                            return Err(fatal(
                                UNEXPECTED_MESSAGE,
                                format!("unexpected TLS handshake message {t}"),
                            ));
                        }
                    }
                    msgs = rest;
                }
                if !msgs.is_empty() {
                    return Err(fatal(
                        DECODE_ERROR,
                        "truncated TLS handshake message".into(),
                    ));
                }
                if std::mem::take(&mut self.key_update_due) {
                    self.flush();
                    // One answer to any number of requests while we are
                    // silent: a peer that never reads cannot make us
                    // queue a key update per request.
                    if !self.key_update_answered {
                        self.send_key_update(false);
                        self.key_update_answered = true;
                    }
                }
                Ok(true)
            }
            t => Err(fatal(
                UNEXPECTED_MESSAGE,
                format!("unexpected TLS content type {t}"),
            )),
        }
    }

    /// The next received IP packet, borrowed from the session's buffer.
    /// Records are opened and control frames handled on the way; returns
    /// `None` when no complete PACKET frame is buffered (or the session
    /// closed: check [`Session::is_closed`]).
    pub fn poll_packet(&mut self) -> Option<&[u8]> {
        loop {
            if self.state == State::Closed {
                return None;
            }
            let avail = &self.rx_buf[self.p_start..self.p_end];
            let frame = match Frame::new_checked(avail) {
                Ok(f) => f,
                Err(WireError::Truncated { .. }) => match self.open_record() {
                    Ok(true) => continue,
                    Ok(false) => {
                        // The received records are drained: the echo
                        // replies queued meanwhile go out in one record.
                        if std::mem::take(&mut self.echo_replies_unsealed) > 0 {
                            self.flush();
                        }
                        if self.peer_eof {
                            self.set_closed(CloseReason::Eof);
                        }
                        return None;
                    }
                    Err((alert, reason)) => {
                        // The record layer is broken: tell the peer why
                        // (RFC 8446 §5.2, §6.2), then nothing more is
                        // sealed or opened.
                        if let Some(a) = alert {
                            self.send_fatal_alert(a);
                        }
                        self.tls = Tls::Dead;
                        self.set_closed(reason);
                        return None;
                    }
                },
                Err(WireError::Malformed(m)) => {
                    self.protocol_error(m);
                    return None;
                }
            };
            let start = self.p_start + tunnel::HEADER_LEN;
            let end = self.p_start + frame.total_len();
            let ty = frame.frame_type();
            let flags = frame.flags();
            self.p_start = end;
            match (ty, self.state) {
                (_, State::Closed) => return None,
                (FrameType::Packet, State::Established) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += (end - start) as u64;
                    return Some(&self.rx_buf[start..end]);
                }
                (FrameType::Hello, State::Hello) => self.handle_hello(start, end),
                (FrameType::Keepalive, State::Established) => {}
                (FrameType::EchoRequest | FrameType::EchoReply, State::Established) => {
                    let Ok(echo) = Echo::parse(&self.rx_buf[start..end]) else {
                        self.protocol_error("malformed ECHO");
                        return None;
                    };
                    self.handle_echo(ty, echo);
                }
                (
                    FrameType::DatagramOffer | FrameType::DatagramAccept | FrameType::DatagramUse,
                    State::Established,
                ) => self.handle_datagram_control(ty, start, end),
                (FrameType::Close, _) => {
                    let (code, reason) = tunnel::parse_close(&self.rx_buf[start..end])
                        .unwrap_or((CloseCode::Protocol, "malformed CLOSE".into()));
                    self.send_close_notify();
                    self.set_closed(CloseReason::Peer(code, reason));
                    return None;
                }
                (FrameType::Unknown(_), State::Established)
                    if flags & tunnel::FLAG_IGNORABLE != 0 =>
                {
                    self.stats.skipped_frames += 1;
                }
                (FrameType::Unknown(t), _) => {
                    self.protocol_error_owned(format!("unknown frame type {t:#04x}"));
                    return None;
                }
                (ty, _) => {
                    self.protocol_error_owned(format!(
                        "unexpected {ty:?} frame in state {:?}",
                        self.state
                    ));
                    return None;
                }
            }
        }
    }

    /// An echo frame arrived: answer a request (into the open record,
    /// sealed once the received records are drained), or queue a reply
    /// for [`Session::poll_event`].
    fn handle_echo(&mut self, ty: FrameType, echo: Echo) {
        if ty == FrameType::EchoReply {
            self.stats.echo_replies_rx += 1;
            // The peer writes the timestamp: never trusted to fit.
            let rtt = self
                .started
                .checked_add(Duration::from_micros(echo.sent_at_us))
                .map_or(Duration::ZERO, |sent| {
                    self.last_rx.saturating_duration_since(sent)
                });
            if self.echo_events.len() >= ECHO_EVENTS {
                self.echo_events.pop_front();
                self.stats.echo_replies_lost += 1;
            }
            self.echo_events.push_back((echo, rtt));
            return;
        }
        self.stats.echo_requests_rx += 1;
        // A peer that sends probes but does not read cannot make us queue
        // without bound.
        if self.tx_buf.len() - self.tx_sent > self.cfg.max_pending_tls {
            self.stats.echo_replies_refused += 1;
            return;
        }
        self.append(&tunnel::echo_frame(FrameType::EchoReply, echo));
        self.echo_replies_unsealed += 1;
        self.stats.echo_replies_tx += 1;
    }

    /// A datagram control frame arrived: queued for
    /// [`Session::poll_event`] (bounded; a malformed one is skipped and
    /// counted: these frames are ignorable by design).
    fn handle_datagram_control(&mut self, ty: FrameType, start: usize, end: usize) {
        let p = &self.rx_buf[start..end];
        let c = match ty {
            FrameType::DatagramOffer => tunnel::DatagramSetup::parse(p).map(DatagramControl::Offer),
            FrameType::DatagramAccept => {
                tunnel::DatagramSetup::parse(p).map(DatagramControl::Accept)
            }
            _ => p
                .first()
                .map(|&b| DatagramControl::Use(b == 1))
                .ok_or(crate::wire::WireError::Truncated { need: 1, have: 0 }),
        };
        let Ok(c) = c else {
            self.stats.control_lost += 1;
            return;
        };
        if self.control_events.len() >= CONTROL_EVENTS {
            self.control_events.pop_front();
            self.stats.control_lost += 1;
        }
        self.control_events.push_back(c);
    }

    /// Sends a datagram-transport control frame (`frame`: made by
    /// [`tunnel::DatagramSetup::frame`] or [`tunnel::datagram_use_frame`]),
    /// sealed at once.
    ///
    /// # Errors
    /// [`SendError::NotEstablished`] before the HELLOs are exchanged or
    /// after close; [`SendError::Backpressure`] when the send buffer is
    /// over its cap.
    pub fn send_datagram_control(&mut self, frame: &[u8]) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        if self.tx_buf.len() - self.tx_sent > self.cfg.max_pending_tls {
            return Err(SendError::Backpressure);
        }
        self.append(frame);
        self.flush();
        Ok(())
    }

    /// Sends an echo probe with sequence number `seq`, stamped `now`,
    /// sealed at once (probes are not held for coalescing). The peer
    /// answers at once; its reply comes out of [`Session::poll_event`]
    /// as [`Event::EchoReply`] with the round-trip time. A peer of an
    /// earlier release skips the probe and never answers.
    ///
    /// # Errors
    /// [`SendError::NotEstablished`] before the HELLOs are exchanged or
    /// after close; [`SendError::Backpressure`] when the send buffer is
    /// over its cap.
    pub fn send_echo(&mut self, seq: u64, now: Instant) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        if self.tx_buf.len() - self.tx_sent > self.cfg.max_pending_tls {
            return Err(SendError::Backpressure);
        }
        let sent_at_us = u64::try_from(now.saturating_duration_since(self.started).as_micros())
            .unwrap_or(u64::MAX);
        self.append(&tunnel::echo_frame(
            FrameType::EchoRequest,
            Echo { seq, sent_at_us },
        ));
        self.flush();
        self.stats.echo_requests_tx += 1;
        Ok(())
    }

    fn handle_hello(&mut self, start: usize, end: usize) {
        let (version, max, name) = match Hello::parse(&self.rx_buf[start..end]) {
            Ok(h) => (h.version, h.max_payload, printable(h.name, PEER_NAME_MAX)),
            Err(_) => return self.protocol_error("malformed HELLO"),
        };
        if version != tunnel::VERSION {
            let reason = format!(
                "peer speaks version {version}, we speak {}",
                tunnel::VERSION
            );
            return self.close(CloseCode::Version, &reason);
        }
        self.peer_name = name;
        self.peer_max_payload = usize::from(max);
        self.state = State::Established;
        self.events |= EV_ESTABLISHED;
    }

    fn protocol_error(&mut self, what: &str) {
        self.protocol_error_owned(what.to_string());
    }

    fn protocol_error_owned(&mut self, what: String) {
        self.queue_close(CloseCode::Protocol, &what);
        self.set_closed(CloseReason::Protocol(what));
    }

    /// Appends bytes to the open record, sealing full records on the way
    /// (a frame larger than the room left spans records).
    fn append(&mut self, mut bytes: &[u8]) {
        if !matches!(self.tls, Tls::Traffic { .. }) {
            return;
        }
        while !bytes.is_empty() {
            if self.tx_buf.len() == self.tx_sealed {
                self.tx_buf.extend_from_slice(&[0; record::HEADER_LEN]);
            }
            let used = self.tx_buf.len() - self.tx_sealed - record::HEADER_LEN;
            let room = record::MAX_CONTENT - used;
            if room == 0 {
                self.seal(record::APPLICATION_DATA);
                continue;
            }
            let n = room.min(bytes.len());
            self.tx_buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// Content bytes in the open record.
    fn open_len(&self) -> usize {
        (self.tx_buf.len() - self.tx_sealed).saturating_sub(record::HEADER_LEN)
    }

    /// Seals the open record (if it has content) with inner type `ty`.
    fn seal(&mut self, ty: u8) {
        let Tls::Traffic { tx, .. } = &mut self.tls else {
            return;
        };
        if self.tx_buf.len() == self.tx_sealed {
            return;
        }
        if let Err(e) = tx.seal(&mut self.tx_buf, self.tx_sealed, ty) {
            // Only a used-up sequence number, which the key updates keep
            // far away: nothing more can be sent under this key.
            self.tx_buf.truncate(self.tx_sealed);
            self.tls = Tls::Dead;
            self.set_closed(CloseReason::Tls(e.to_string()));
            return;
        }
        self.tx_sealed = self.tx_buf.len();
        self.open_since = None;
        self.key_update_answered = false;
        self.stats.tx_records += 1;
        if tx.seq() >= self.cfg.rekey_after_records {
            self.send_key_update(false);
        }
    }

    /// Sends a TLS 1.3 `KeyUpdate` with the current key, then switches to
    /// the next one (rustls derives it).
    fn send_key_update(&mut self, request: bool) {
        debug_assert_eq!(self.open_len(), 0);
        let Tls::Traffic { kernel, tx, .. } = &mut self.tls else {
            return;
        };
        let start = self.tx_buf.len();
        self.tx_buf.extend_from_slice(&[0; record::HEADER_LEN]);
        self.tx_buf
            .extend_from_slice(&[HS_KEY_UPDATE, 0, 0, 1, u8::from(request)]);
        if let Err(e) = tx.seal(&mut self.tx_buf, start, record::HANDSHAKE) {
            self.tx_buf.truncate(start);
            self.tls = Tls::Dead;
            self.set_closed(CloseReason::Tls(format!("key update: {e}")));
            return;
        }
        self.tx_sealed = self.tx_buf.len();
        let failed = match kernel.update(true) {
            Ok((seq, secret)) => match Keys::with_provider(tx.provider(), seq, &secret) {
                Ok(k) => {
                    *tx = k;
                    self.stats.key_updates_tx += 1;
                    return;
                }
                Err(e) => format!("key update: {e}"),
            },
            Err(e) => format!("key update: {e}"),
        };
        self.tls = Tls::Dead;
        self.set_closed(CloseReason::Tls(failed));
    }

    /// Queues one IP packet. Frames are coalesced into the open record,
    /// which is sealed when the next frame would push it past the
    /// coalescing size, or at [`Session::flush`] / [`Session::flush_due`].
    pub fn send_packet(&mut self, packet: &[u8]) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        if packet.len() > self.peer_max_payload {
            return Err(SendError::TooLarge);
        }
        if self.tx_buf.len() - self.tx_sent > self.cfg.max_pending_tls {
            return Err(SendError::Backpressure);
        }
        let framed = tunnel::HEADER_LEN + packet.len();
        if self.open_len() > 0 && self.open_len() + framed > self.cfg.coalesce_bytes {
            self.seal(record::APPLICATION_DATA);
        }
        let mut header = [0; tunnel::HEADER_LEN];
        tunnel::emit_header(&mut header, FrameType::Packet, 0, packet.len());
        self.append(&header);
        self.append(packet);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += packet.len() as u64;
        Ok(())
    }

    /// Fuzzing hook: queues one record of inner content type `ty` holding
    /// `content` (cut to a record's worth), as a hostile but authenticated
    /// peer could send. Not part of the API.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fuzz_queue_record(&mut self, ty: u8, content: &[u8]) {
        self.flush();
        if !matches!(self.tls, Tls::Traffic { .. }) {
            return;
        }
        self.tx_buf.extend_from_slice(&[0; record::HEADER_LEN]);
        self.tx_buf
            .extend_from_slice(&content[..content.len().min(record::MAX_CONTENT)]);
        self.seal(ty);
    }

    /// Seals the open record now.
    pub fn flush(&mut self) {
        self.seal(record::APPLICATION_DATA);
    }

    /// End of a batch: seals the open record if the coalescing delay
    /// ([`SessionConfig::coalesce_delay`]) has passed since it got its
    /// first frame (at once with no delay); otherwise
    /// [`Session::poll_timeout`] includes the deadline.
    pub fn flush_due(&mut self, now: Instant) {
        if self.open_len() == 0 {
            return;
        }
        let since = *self.open_since.get_or_insert(now);
        if now >= since + self.cfg.coalesce_delay {
            self.flush();
        }
    }

    /// True while there are TLS bytes to write to the socket.
    pub fn wants_write(&self) -> bool {
        self.tx_sealed > self.tx_sent
    }

    /// The sealed records not yet transmitted, as one contiguous slice
    /// (one `write` for many records), or `None` when there are none.
    /// Write what the socket takes, then report it with
    /// [`Session::transmitted`]; what it does not take stays here. From
    /// `now` on, the bytes count as waiting for the socket (the write
    /// timeout, [`SessionConfig::write_timeout`]).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if self.tx_sealed == self.tx_sent {
            return None;
        }
        self.write_stalled_since.get_or_insert(now);
        Some(&self.tx_buf[self.tx_sent..self.tx_sealed])
    }

    /// The first `n` bytes [`Session::poll_transmit`] gave were written at
    /// `now` (`n` is capped at their length; zero: the socket took
    /// nothing).
    pub fn transmitted(&mut self, n: usize, now: Instant) {
        let n = n.min(self.tx_sealed - self.tx_sent);
        if n > 0 {
            self.tx_sent += n;
            self.last_tx = now;
        }
        // The write timeout runs while bytes wait without any progress.
        self.write_stalled_since = if self.tx_sealed == self.tx_sent {
            None
        } else if n > 0 {
            Some(now)
        } else {
            Some(self.write_stalled_since.unwrap_or(now))
        };
        // Reclaim the written front once it outweighs what is left to move
        // (always when everything is written): the copy is paid for by the
        // bytes written, and the buffer stays bounded by the pending cap.
        let rest = self.tx_buf.len() - self.tx_sent;
        if self.tx_sent > 0 && self.tx_sent >= rest {
            self.tx_buf.copy_within(self.tx_sent.., 0);
            self.tx_buf.truncate(rest);
            self.tx_sealed -= self.tx_sent;
            self.tx_sent = 0;
        }
    }

    /// When [`Session::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut timers = match self.state {
            State::Closed => return None,
            State::Hello => (self.last_rx + self.cfg.idle_timeout)
                .min(self.started + self.cfg.handshake_timeout),
            State::Established => {
                (self.last_tx + self.cfg.keepalive).min(self.last_rx + self.cfg.idle_timeout)
            }
        };
        if let Some(t) = self.write_stalled_since {
            timers = timers.min(t + self.cfg.write_timeout);
        }
        let flush = self.open_since.map(|t| t + self.cfg.coalesce_delay);
        Some(flush.map_or(timers, |f| f.min(timers)))
    }

    /// Seals a record whose coalescing delay is up, sends a keepalive when
    /// idle, closes the session when the peer has been silent for the idle
    /// timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self
            .write_stalled_since
            .is_some_and(|t| self.wants_write() && now >= t + self.cfg.write_timeout)
        {
            // Nothing more reaches a peer that does not read, not even a
            // CLOSE: drop what waits, so the driver can let go at once.
            self.tx_buf.clear();
            self.tx_sent = 0;
            self.tx_sealed = 0;
            self.open_since = None;
            self.write_stalled_since = None;
            self.tls = Tls::Dead;
            self.set_closed(CloseReason::Stalled);
            return;
        }
        if self.state == State::Hello && now >= self.started + self.cfg.handshake_timeout {
            self.close(CloseCode::Timeout, "handshake not done in time");
            self.close_reason = Some(CloseReason::HandshakeTimeout);
            return;
        }
        self.flush_due(now);
        if now >= self.last_rx + self.cfg.idle_timeout {
            self.close(CloseCode::Timeout, "peer silent");
            self.close_reason = Some(CloseReason::Timeout);
            return;
        }
        if self.state == State::Established && now >= self.last_tx + self.cfg.keepalive {
            let mut header = [0; tunnel::HEADER_LEN];
            tunnel::emit_header(&mut header, FrameType::Keepalive, 0, 0);
            self.append(&header);
            self.flush();
            self.stats.keepalives_sent += 1;
            // Count it as sent now even before the socket takes it, so a
            // blocked socket does not make us queue one per timer tick.
            self.last_tx = now;
        }
    }

    /// Closes the session: queues CLOSE and TLS `close_notify`. Transmit
    /// them ([`Session::poll_transmit`]), then drop the session.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        self.queue_close(code, reason);
        self.set_closed(CloseReason::Local(code, reason.to_string()));
    }

    /// Queues a CLOSE frame and `close_notify`.
    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        let mut frame = Vec::new();
        tunnel::emit_close(&mut frame, code, reason);
        self.append(&frame);
        self.flush();
        self.send_close_notify();
    }

    /// Queues a fatal TLS alert with description `desc` (the record layer
    /// failed; the caller then marks the TLS side dead).
    fn send_fatal_alert(&mut self, desc: u8) {
        if self.state == State::Closed {
            return;
        }
        self.flush();
        self.append(&[record::alert::FATAL, desc]);
        self.seal(record::ALERT);
    }

    /// Queues a TLS `close_notify` alert.
    fn send_close_notify(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.flush();
        self.append(&[record::alert::WARNING, record::alert::CLOSE_NOTIFY]);
        self.seal(record::ALERT);
    }

    fn set_closed(&mut self, reason: CloseReason) {
        if self.state != State::Closed {
            self.events |= EV_CLOSED;
        }
        self.state = State::Closed;
        self.close_reason.get_or_insert(reason);
    }

    fn reason_or(&self, r: CloseReason) -> CloseReason {
        self.close_reason.clone().unwrap_or(r)
    }
}

/// Counts a key update received since the last application data record;
/// refuses (`unexpected_message`) one more than
/// [`MAX_KEY_UPDATES_WITHOUT_DATA`].
fn count_key_update(since_data: &mut u32) -> Result<(), (Option<u8>, CloseReason)> {
    if *since_data >= MAX_KEY_UPDATES_WITHOUT_DATA {
        return Err((
            Some(record::alert::UNEXPECTED_MESSAGE),
            CloseReason::Tls(format!(
                "more than {MAX_KEY_UPDATES_WITHOUT_DATA} TLS key updates without application data"
            )),
        ));
    }
    *since_data += 1;
    Ok(())
}

/// `s` made safe to log: control characters (which could forge log lines
/// or drive a terminal) and the invisible bidirectional-formatting ones
/// escaped as `\u{..}`, at most `max` characters (then `…`).
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut n = 0;
    for c in s.chars() {
        let escaped = c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        let piece = if escaped {
            c.escape_unicode().to_string()
        } else {
            c.to_string()
        };
        n += piece.chars().count();
        if n > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests;
