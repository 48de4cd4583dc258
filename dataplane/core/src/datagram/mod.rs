//! The datagram transport, sans I/O: IP packets sealed into UDP-sized
//! records ([`crate::wire::datagram`] has the format) with keys exported
//! from the TLS 1.3 tunnel session that authenticated the peer. The TLS
//! tunnel stays the control channel and the fallback; this is the fast
//! path beside it.
//!
//! A [`DatagramSession`] seals and opens records in caller-owned buffers
//! (no allocation per packet), checks them against an anti-replay window
//! ([`replay`], RFC 6479), rekeys ([`keys`]) and answers echo probes. It
//! never touches a socket, a clock or the environment: times are
//! arguments, bytes go in and out through slices. [`ReceiverTable`] finds
//! the session a datagram belongs to by the receiver id in its header.
//!
//! # Call order
//! 1. After the TLS session's [`crate::tunnel::Event::Authenticated`]:
//!    [`crate::tunnel::Session::take_datagram_keys`] (once: the keys are
//!    consumed), then [`DatagramSession::new`] with our receiver id and
//!    the peer's (exchanged over the TLS channel: not in this module).
//! 2. To send: [`DatagramSession::seal`] with a batch of packets and an
//!    output buffer; it packs as many as fit into one record of at most
//!    [`DatagramConfig::max_datagram`] bytes and says how many it took;
//!    call again for the rest. [`DatagramSession::send_echo`] seals a
//!    probe.
//! 3. On a received datagram: [`DatagramSession::open`] in place; on
//!    success iterate [`Opened::packets`] (data records), and if
//!    [`Opened::newest`], the caller may move the peer's address to the
//!    datagram's source (see below). On failure the [`DropReason`] is
//!    counted ([`DatagramSession::drops`]); nothing else changes.
//! 4. After receiving: [`DatagramSession::poll_event`] until `None` (echo
//!    replies, with their round-trip time), and while
//!    [`DatagramSession::poll_transmit`] gives a record, send it (echo
//!    replies, and the empty record that tells the peer we moved to its
//!    new key).
//!
//! # Replay
//! Every record carries a 64-bit counter, the AEAD nonce, that the
//! sender never reuses (it counts up across rekeys, as QUIC's packet
//! numbers do). The receiver checks it against its window before
//! decrypting (a replay costs no AEAD work), and records it only after
//! the record authenticated: a forged record never moves the window.
//! Counters up to [`replay::WINDOW`] (4032) below the highest seen are
//! accepted once each, in any order; older ones are dropped as too old.
//!
//! # NAT rebinding
//! The rule, as `WireGuard`'s: **the peer's address is updated only after a
//! datagram from the new address authenticated, and only if its counter
//! is the highest seen** ([`Opened::newest`]). The caller (which knows
//! addresses; this module does not) applies it. A forged datagram cannot
//! move the peer (it does not authenticate), nor can a replayed one (the
//! window refuses it), nor a delayed one from an old address (not the
//! newest). An on-path attacker who relays a genuine datagram from
//! elsewhere before the original arrives can still move it, as with
//! `WireGuard`: the next genuine datagram moves it back.
//!
//! # Rekeying and its limits
//! Each direction's keys form a chain ([`keys`]): epoch `n + 1`'s secret
//! is derived from epoch `n`'s, which is then dropped. The sender moves
//! to the next epoch after [`DatagramConfig::rekey_after_records`]
//! records (default 2^20) or [`DatagramConfig::rekey_after_time`]
//! (default 120 s, `WireGuard`'s `REKEY_AFTER_TIME`), whichever comes
//! first, but never more than one epoch ahead of the epoch the peer says
//! (in every record's header) it opens with: the receiver always holds
//! the next key ready, so it never has to guess or derive on demand (a
//! forged record costs it no key derivation). The receiver keeps the
//! previous epoch's key for [`DatagramConfig::previous_key_grace`]
//! (default 5 s) so records still in flight open.
//!
//! Why these numbers: RFC 9001 §6.6 (QUIC, the same analysis as DTLS 1.3)
//! puts AES-GCM's confidentiality limit at 2^23 records per key and its
//! integrity limit at 2^52 forged records (ChaCha20-Poly1305: no
//! practical confidentiality limit, integrity 2^36). Rekeying at 2^20
//! stays 8 times below the confidentiality limit, costs a few key
//! derivations about once a second at a million records a second, and
//! matches the TLS tunnel's own `rekey_after_records`. If the peer never
//! lets us rekey (it sends nothing back), sealing stops at
//! [`keys::MAX_RECORDS_PER_KEY`] (2^23) with [`SealError::KeyExhausted`]
//! and the caller falls back to TLS. Records that fail authentication
//! are counted over the session's life; at the suite's integrity limit
//! the session refuses everything ([`DropReason::Closed`]).
//!
//! # Echo probes
//! Control records carry `ECHO_REQUEST`/`ECHO_REPLY` (a sequence number
//! and the requester's timestamp in microseconds since the session
//! began). A request is answered by [`DatagramSession::poll_transmit`];
//! a reply comes out of [`DatagramSession::poll_event`] with its
//! round-trip time.

pub mod keys;
pub mod path;
pub mod replay;
pub mod table;

use std::{
    ops::Range,
    time::{Duration, Instant},
};

pub use keys::{DatagramKeys, EXPORTER_LABEL, Exporter, KeyError, MAX_RECORDS_PER_KEY};
pub use table::{ReceiverTable, TableError};

use crate::tunnel::AeadProvider;
use crate::wire::datagram::{
    self as wire, ControlKind, ECHO_LEN, Echo, HEADER_LEN, ITEM_HEADER_LEN, Items, MIN_LEN, Packet,
    RecordType, TAG_LEN,
};
use keys::{Chain, EpochKey};
use replay::{Refused, Window};

/// Tunables of a datagram session.
#[derive(Debug, Clone)]
pub struct DatagramConfig {
    /// Largest record sealed (the UDP payload): 1452 by default, what a
    /// 1500-byte path leaves over IPv6 and UDP headers.
    pub max_datagram: usize,
    /// Move to a new key after this many records under one key.
    pub rekey_after_records: u64,
    /// Move to a new key after this long under one key.
    pub rekey_after_time: Duration,
    /// How long the previous receive key still opens records.
    pub previous_key_grace: Duration,
    /// The library that seals and opens records (as the TLS record
    /// layer's, [`crate::tunnel::SessionConfig::aead`]).
    pub aead: AeadProvider,
}

/// Where [`DatagramSession::seal_in_place`] expects the packet: after
/// the record's header and the item's length.
pub const IN_PLACE_OFFSET: usize = HEADER_LEN + wire::ITEM_HEADER_LEN;

/// The largest UDP payload over a 1500-byte IPv4 path (IPv4 20, UDP 8).
pub const MAX_DATAGRAM_V4: usize = 1472;
/// The largest UDP payload over a 1500-byte IPv6 path (IPv6 40, UDP 8):
/// [`DatagramConfig::max_datagram`]'s default.
pub const MAX_DATAGRAM_V6: usize = 1452;

impl Default for DatagramConfig {
    fn default() -> Self {
        Self {
            max_datagram: MAX_DATAGRAM_V6,
            rekey_after_records: 1 << 20,
            rekey_after_time: Duration::from_mins(2),
            previous_key_grace: Duration::from_secs(5),
            aead: AeadProvider::AwsLcRs,
        }
    }
}

/// Why a received datagram was dropped. Cheap and `Copy`: per-packet
/// path; each is counted ([`DatagramSession::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Too short, an unknown type, a non-zero reserved byte; or an
    /// authenticated record whose item list does not parse.
    #[error("malformed datagram")]
    Malformed,
    /// The receiver id is not this session's (or no session's).
    #[error("unknown receiver id")]
    UnknownReceiver,
    /// The AEAD refused it: forged, corrupted, or sealed with a key we
    /// do not hold.
    #[error("datagram failed authentication")]
    AuthFailed,
    /// Its counter was already accepted.
    #[error("replayed datagram")]
    Replayed,
    /// Its counter is below the replay window.
    #[error("datagram too old for the replay window")]
    TooOld,
    /// Sealed with a key we no longer hold (the previous epoch after its
    /// grace, or older).
    #[error("datagram from a stale key epoch")]
    StaleEpoch,
    /// Sealed with a key more than one epoch ahead (a peer never does).
    #[error("datagram from a future key epoch")]
    FutureEpoch,
    /// The session refuses everything: the integrity limit was reached.
    #[error("datagram session closed")]
    Closed,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 8] = [
        DropReason::Malformed,
        DropReason::UnknownReceiver,
        DropReason::AuthFailed,
        DropReason::Replayed,
        DropReason::TooOld,
        DropReason::StaleEpoch,
        DropReason::FutureEpoch,
        DropReason::Closed,
    ];

    /// A short name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownReceiver => "unknown_receiver",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::TooOld => "too_old",
            DropReason::StaleEpoch => "stale_epoch",
            DropReason::FutureEpoch => "future_epoch",
            DropReason::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Dropped datagrams, by [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::ALL.len()]);

impl Drops {
    /// Datagrams dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Why nothing was sealed. Cheap and `Copy`: per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The first packet does not fit in one record of the maximum size
    /// (or the output buffer): send it over TLS.
    #[error("packet too large for a datagram")]
    TooLarge,
    /// An empty packet (an item of length 0 would end the list).
    #[error("empty packet")]
    EmptyPacket,
    /// The key sealed [`MAX_RECORDS_PER_KEY`] records and the peer has
    /// not shown it can open the next one: fall back to TLS.
    #[error("datagram key used up; the peer never moved to the next key")]
    KeyExhausted,
    /// The session is closed (integrity limit, counter used up).
    #[error("datagram session closed")]
    Closed,
}

/// What [`DatagramSession::seal`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes of the record, at the start of the output buffer.
    pub len: usize,
    /// Packets it took from the front of the batch.
    pub packets: usize,
}

/// A record [`DatagramSession::open`] authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Data (packets for the caller) or control (handled already).
    pub kind: RecordType,
    /// Where the plaintext item list lies in the datagram's buffer.
    pub plaintext: Range<usize>,
    /// Items in the list (packets, for a data record).
    pub items: usize,
    /// The record's counter.
    pub counter: u64,
    /// True if the counter is the highest authenticated so far: only
    /// then may the caller move the peer's address to this datagram's
    /// source (the NAT rebinding rule, see the module docs).
    pub newest: bool,
}

impl Opened {
    /// The packets of a data record (none for a control record), from the
    /// buffer [`DatagramSession::open`] opened in place.
    pub fn packets<'a>(&self, datagram: &'a [u8]) -> Items<'a> {
        match (self.kind, datagram.get(self.plaintext.clone())) {
            (RecordType::Data, Some(plain)) => Items::new(plain),
            _ => Items::new(&[]),
        }
    }
}

/// What happened ([`DatagramSession::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramEvent {
    /// The peer answered one of our echo requests.
    EchoReply {
        /// The request's sequence number.
        seq: u64,
        /// When we sent it, in microseconds since the session began.
        sent_at_us: u64,
        /// From then to the reply's arrival.
        rtt: Duration,
    },
}

/// Counters of one datagram session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramStats {
    /// Records sealed (data and control).
    pub tx_records: u64,
    /// Packets sealed.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Records opened (authenticated, not replayed).
    pub rx_records: u64,
    /// Packets opened.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Our moves to a new send key.
    pub rekeys_tx: u64,
    /// The peer's moves to a new key, as we followed them.
    pub rekeys_rx: u64,
    /// Echo requests sent.
    pub echo_requests_tx: u64,
    /// Echo requests received.
    pub echo_requests_rx: u64,
    /// Echo replies received.
    pub echo_replies_rx: u64,
    /// Echo requests not answered, or replies not reported, because their
    /// queue was full (a peer sending more than a few per receive batch).
    pub echo_overflow: u64,
    /// Control items skipped: unknown kinds, short echo bodies.
    pub control_skipped: u64,
}

/// A fixed-capacity queue of `Copy` values: no allocation, bounded.
#[derive(Debug, Clone)]
struct Fifo<T: Copy + Default, const N: usize> {
    buf: [T; N],
    head: usize,
    len: usize,
}

impl<T: Copy + Default, const N: usize> Fifo<T, N> {
    fn new() -> Self {
        Self {
            buf: [T::default(); N],
            head: 0,
            len: 0,
        }
    }

    /// False (and nothing stored) when full.
    fn push(&mut self, v: T) -> bool {
        if self.len == N {
            return false;
        }
        self.buf[(self.head + self.len) % N] = v;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let v = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(v)
    }

    /// The `i`th value from the front (`i < len`).
    fn get(&self, i: usize) -> T {
        self.buf[(self.head + i) % N]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Pending echo replies and reported replies each hold this many.
const ECHO_QUEUE: usize = 8;

/// Which receive key a record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Previous,
    Current,
    Next,
}

/// One datagram session: the two directions' keys, the replay window, the
/// echo queues, the counters. See the [module docs](self) for the call
/// order.
pub struct DatagramSession {
    cfg: DatagramConfig,
    local_id: u32,
    peer_id: u32,
    /// The origin of echo timestamps.
    base: Instant,
    integrity_limit: u64,
    // Send side.
    tx_chain: Chain,
    tx_key: EpochKey,
    tx_epoch_start: Instant,
    tx_in_epoch: u64,
    next_counter: u64,
    /// The epoch the peer says it opens our records with (at most ours).
    peer_rx_epoch: u64,
    // Receive side: the chain holds the secret of `rx_next`'s epoch.
    rx_chain: Chain,
    rx_prev: Option<(EpochKey, Instant)>,
    rx_cur: EpochKey,
    rx_next: EpochKey,
    window: Window,
    /// We moved to the peer's next key and have not said so yet.
    ack_due: bool,
    auth_failures: u64,
    closed: bool,
    replies: Fifo<Echo, ECHO_QUEUE>,
    events: Fifo<(Echo, Duration), ECHO_QUEUE>,
    stats: DatagramStats,
    drops: Drops,
}

impl std::fmt::Debug for DatagramSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys print their epoch only.
        f.debug_struct("DatagramSession")
            .field("local_id", &self.local_id)
            .field("peer_id", &self.peer_id)
            .field("tx_epoch", &self.tx_key.epoch)
            .field("rx_epoch", &self.rx_cur.epoch)
            .field("window", &self.window)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl DatagramSession {
    /// A session from the TLS session's `keys`, receiving records
    /// addressed to `local_id` and addressing its own to `peer_id`.
    ///
    /// # Errors
    /// The AEAD library refused a key (never for the suites `keys`
    /// accepts).
    pub fn new(
        keys: DatagramKeys,
        local_id: u32,
        peer_id: u32,
        cfg: DatagramConfig,
        now: Instant,
    ) -> Result<Self, KeyError> {
        let integrity_limit = keys::integrity_limit(keys.suite());
        let (tx_chain, mut rx_chain) = keys.into_chains();
        let tx_key = tx_chain.key(cfg.aead)?;
        let rx_cur = rx_chain.key(cfg.aead)?;
        rx_chain.advance();
        let rx_next = rx_chain.key(cfg.aead)?;
        Ok(Self {
            cfg,
            local_id,
            peer_id,
            base: now,
            integrity_limit,
            tx_chain,
            tx_key,
            tx_epoch_start: now,
            tx_in_epoch: 0,
            next_counter: 0,
            peer_rx_epoch: 0,
            rx_chain,
            rx_prev: None,
            rx_cur,
            rx_next,
            window: Window::new(),
            ack_due: false,
            auth_failures: 0,
            closed: false,
            replies: Fifo::new(),
            events: Fifo::new(),
            stats: DatagramStats::default(),
            drops: Drops::default(),
        })
    }

    /// Our receiver id (in the records the peer sends us).
    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    /// The peer's receiver id (in the records we send).
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// The epoch of our send key.
    pub fn tx_epoch(&self) -> u64 {
        self.tx_key.epoch
    }

    /// The epoch of the peer's key we currently open with.
    pub fn rx_epoch(&self) -> u64 {
        self.rx_cur.epoch
    }

    /// The highest counter authenticated so far.
    pub fn highest_received(&self) -> Option<u64> {
        self.window.highest()
    }

    /// True once the session refuses everything (integrity limit, or a
    /// counter used up).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Counters.
    pub fn stats(&self) -> DatagramStats {
        self.stats
    }

    /// Dropped datagrams by reason.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Seals as many packets from the front of `packets` as fit into one
    /// record of at most [`DatagramConfig::max_datagram`] bytes (and
    /// `out`'s length), written at the start of `out`. An empty batch
    /// makes an empty record (a keepalive).
    ///
    /// # Errors
    /// See [`SealError`]; nothing is sealed and no counter is used.
    pub fn seal(
        &mut self,
        packets: &[&[u8]],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Sealed, SealError> {
        let cap = out.len().min(self.cfg.max_datagram);
        let room = cap.checked_sub(MIN_LEN).ok_or(SealError::TooLarge)?;
        let counter = self.prepare_send(now)?;
        let body = &mut out[HEADER_LEN..HEADER_LEN + room];
        let (mut used, mut taken, mut bytes) = (0, 0, 0u64);
        for p in packets {
            if p.is_empty() {
                if taken == 0 {
                    return Err(SealError::EmptyPacket);
                }
                break;
            }
            let Some(n) = wire::emit_item(&mut body[used..], p) else {
                break;
            };
            used += n;
            taken += 1;
            bytes += p.len() as u64;
        }
        if taken == 0 && !packets.is_empty() {
            return Err(SealError::TooLarge);
        }
        let len = self.finish(RecordType::Data, counter, out, used);
        self.stats.tx_packets += taken as u64;
        self.stats.tx_bytes += bytes;
        Ok(Sealed {
            len,
            packets: taken,
        })
    }

    /// Seals one packet where it lies: `buf` holds the packet at
    /// [`IN_PLACE_OFFSET`] (`packet_len` bytes), with room before it for
    /// the record's header and item length and after it for the tag. The
    /// record then starts at `buf[0]`; returns its length. Zero copy: the
    /// gateway seals a frame in its receive buffer and sends it from there.
    ///
    /// # Errors
    /// As [`DatagramSession::seal`]; on an error `buf` is unchanged.
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        packet_len: usize,
        now: Instant,
    ) -> Result<usize, SealError> {
        if packet_len == 0 {
            return Err(SealError::EmptyPacket);
        }
        let plain = wire::ITEM_HEADER_LEN + packet_len;
        let total = MIN_LEN + plain;
        let len = u16::try_from(packet_len).map_err(|_| SealError::TooLarge)?;
        if total > buf.len().min(self.cfg.max_datagram) {
            return Err(SealError::TooLarge);
        }
        let counter = self.prepare_send(now)?;
        buf[HEADER_LEN..IN_PLACE_OFFSET].copy_from_slice(&len.to_be_bytes());
        let n = self.finish(RecordType::Data, counter, buf, plain);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += packet_len as u64;
        Ok(n)
    }

    /// Seals an echo request with sequence number `seq`, stamped `now`,
    /// at the start of `out`; returns its length.
    ///
    /// # Errors
    /// As [`DatagramSession::seal`].
    pub fn send_echo(
        &mut self,
        seq: u64,
        now: Instant,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let echo = Echo {
            seq,
            sent_at_us: self.micros(now),
        };
        let n = self.seal_control(ControlKind::EchoRequest, &[echo], now, out)?;
        self.stats.echo_requests_tx += 1;
        Ok(n)
    }

    /// True while [`DatagramSession::poll_transmit`] has a record to give.
    pub fn wants_transmit(&self) -> bool {
        !self.closed && (self.ack_due || !self.replies.is_empty())
    }

    /// A record the session needs sent, sealed at the start of `out`:
    /// answers to echo requests, or an empty record that tells the peer
    /// we moved to its next key. `Ok(None)` when nothing is due.
    ///
    /// # Errors
    /// As [`DatagramSession::seal`] (the answers stay queued).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<usize>, SealError> {
        if !self.replies.is_empty() {
            let fit = (out.len().min(self.cfg.max_datagram)).saturating_sub(MIN_LEN)
                / (ITEM_HEADER_LEN + 1 + ECHO_LEN);
            let n = fit.min(self.replies.len);
            if n == 0 {
                return Err(SealError::TooLarge);
            }
            let mut batch = [Echo::default(); ECHO_QUEUE];
            for (i, slot) in batch[..n].iter_mut().enumerate() {
                *slot = self.replies.get(i);
            }
            let len = self.seal_control(ControlKind::EchoReply, &batch[..n], now, out)?;
            for _ in 0..n {
                self.replies.pop();
            }
            return Ok(Some(len));
        }
        if self.ack_due && !self.closed {
            return self.seal(&[], now, out).map(|s| Some(s.len));
        }
        Ok(None)
    }

    /// The next event: echo replies, oldest first.
    pub fn poll_event(&mut self) -> Option<DatagramEvent> {
        self.events.pop().map(|(e, rtt)| DatagramEvent::EchoReply {
            seq: e.seq,
            sent_at_us: e.sent_at_us,
            rtt,
        })
    }

    /// Opens a received datagram in place: checks the header, the receiver
    /// id and the replay window, decrypts with the key its epoch names,
    /// then records the counter and follows the peer's rekeying. Control
    /// records are handled here (echo requests queued for
    /// [`DatagramSession::poll_transmit`], replies for
    /// [`DatagramSession::poll_event`]).
    ///
    /// # Errors
    /// The [`DropReason`], counted. Whatever the bytes, the session's
    /// state (window, keys) changes only for a record that authenticated
    /// (one whose item list then does not parse is dropped as
    /// [`DropReason::Malformed`], its counter spent).
    pub fn open(&mut self, datagram: &mut [u8], now: Instant) -> Result<Opened, DropReason> {
        match self.try_open(datagram, now) {
            Ok(o) => Ok(o),
            Err(r) => {
                self.drops.0[r.index()] += 1;
                Err(r)
            }
        }
    }

    fn try_open(&mut self, datagram: &mut [u8], now: Instant) -> Result<Opened, DropReason> {
        if self.closed {
            return Err(DropReason::Closed);
        }
        let (ty, header, counter, send_epoch, recv_epoch) = {
            let p = Packet::new_checked(&*datagram).map_err(|_| DropReason::Malformed)?;
            if p.receiver() != self.local_id {
                return Err(DropReason::UnknownReceiver);
            }
            (
                p.record_type(),
                p.header(),
                p.counter(),
                p.send_epoch(),
                p.recv_epoch(),
            )
        };
        self.window.check(counter).map_err(|r| match r {
            Refused::Replayed => DropReason::Replayed,
            Refused::TooOld => DropReason::TooOld,
        })?;
        let which = self.select_key(send_epoch, now)?;
        let key = match which {
            Which::Current => &self.rx_cur,
            Which::Next => &self.rx_next,
            Which::Previous => match &self.rx_prev {
                Some((k, _)) => k,
                None => return Err(DropReason::StaleEpoch),
            },
        };
        let Some(plain_len) = key.open(counter, &header, &mut datagram[HEADER_LEN..]) else {
            self.auth_failures += 1;
            if self.auth_failures >= self.integrity_limit {
                self.closed = true;
            }
            return Err(DropReason::AuthFailed);
        };
        // Authenticated: only now does anything change.
        let newest = self.window.update(counter);
        if which == Which::Next {
            self.follow_rekey(now)?;
        }
        if self.tx_key.epoch as u8 == recv_epoch {
            self.peer_rx_epoch = self.peer_rx_epoch.max(self.tx_key.epoch);
        }
        let plaintext = HEADER_LEN..HEADER_LEN + plain_len;
        let plain = &datagram[plaintext.clone()];
        let items = wire::check_items(plain).map_err(|_| DropReason::Malformed)?;
        self.stats.rx_records += 1;
        match ty {
            RecordType::Data => {
                self.stats.rx_packets += items as u64;
                self.stats.rx_bytes += (plain_len - items * ITEM_HEADER_LEN) as u64;
            }
            RecordType::Control => self.handle_control(plain, now),
        }
        Ok(Opened {
            kind: ty,
            plaintext,
            items,
            counter,
            newest,
        })
    }

    /// The receive key a record's epoch byte names.
    fn select_key(&mut self, epoch: u8, now: Instant) -> Result<Which, DropReason> {
        if self
            .rx_prev
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.rx_prev = None;
        }
        let cur = self.rx_cur.epoch;
        if epoch == cur as u8 {
            return Ok(Which::Current);
        }
        if epoch == cur.wrapping_add(1) as u8 {
            return Ok(Which::Next);
        }
        if cur > 0 && epoch == cur.wrapping_sub(1) as u8 {
            return if self.rx_prev.is_some() {
                Ok(Which::Previous)
            } else {
                Err(DropReason::StaleEpoch)
            };
        }
        // Older or further ahead, by the signed distance of the low bits.
        if epoch.wrapping_sub(cur as u8).cast_signed() < 0 {
            Err(DropReason::StaleEpoch)
        } else {
            Err(DropReason::FutureEpoch)
        }
    }

    /// The peer moved to its next key (a record under it authenticated):
    /// the current key becomes the previous one (for the grace period),
    /// the next one current, and the one after is derived.
    fn follow_rekey(&mut self, now: Instant) -> Result<(), DropReason> {
        self.rx_chain.advance();
        let Ok(after) = self.rx_chain.key(self.cfg.aead) else {
            self.closed = true;
            return Err(DropReason::Closed);
        };
        let next = std::mem::replace(&mut self.rx_next, after);
        let cur = std::mem::replace(&mut self.rx_cur, next);
        self.rx_prev = Some((cur, now + self.cfg.previous_key_grace));
        self.ack_due = true;
        self.stats.rekeys_rx += 1;
        Ok(())
    }

    fn handle_control(&mut self, plain: &[u8], now: Instant) {
        for item in Items::new(plain) {
            let (kind, body) = (ControlKind::from_u8(item[0]), &item[1..]);
            let echo = match kind {
                ControlKind::EchoRequest | ControlKind::EchoReply => Echo::parse(body).ok(),
                ControlKind::Unknown(_) => None,
            };
            let Some(echo) = echo else {
                self.stats.control_skipped += 1;
                continue;
            };
            let queued = if kind == ControlKind::EchoRequest {
                self.stats.echo_requests_rx += 1;
                self.replies.push(echo)
            } else {
                self.stats.echo_replies_rx += 1;
                // The peer writes the timestamp: never trusted to fit.
                let rtt = self
                    .base
                    .checked_add(Duration::from_micros(echo.sent_at_us))
                    .map_or(Duration::ZERO, |sent| now.saturating_duration_since(sent));
                self.events.push((echo, rtt))
            };
            if !queued {
                self.stats.echo_overflow += 1;
            }
        }
    }

    /// Microseconds from the session's start to `now`.
    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    /// Rekeys if due and allowed; returns the counter the next record
    /// gets.
    fn prepare_send(&mut self, now: Instant) -> Result<u64, SealError> {
        if self.closed {
            return Err(SealError::Closed);
        }
        let due = self.tx_in_epoch >= self.cfg.rekey_after_records
            || (self.tx_in_epoch > 0
                && now.saturating_duration_since(self.tx_epoch_start) >= self.cfg.rekey_after_time);
        // Never more than one epoch ahead of what the peer opens with.
        if due && self.peer_rx_epoch >= self.tx_key.epoch {
            self.tx_chain.advance();
            let Ok(key) = self.tx_chain.key(self.cfg.aead) else {
                self.closed = true;
                return Err(SealError::Closed);
            };
            self.tx_key = key;
            self.tx_in_epoch = 0;
            self.tx_epoch_start = now;
            self.stats.rekeys_tx += 1;
        }
        if self.tx_in_epoch >= MAX_RECORDS_PER_KEY {
            return Err(SealError::KeyExhausted);
        }
        if self.next_counter == u64::MAX {
            // Never reached (2^64 records), but never wrapped either.
            self.closed = true;
            return Err(SealError::Closed);
        }
        Ok(self.next_counter)
    }

    /// Seals a control record of `kind` items with these bodies.
    fn seal_control(
        &mut self,
        kind: ControlKind,
        echoes: &[Echo],
        now: Instant,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let item = ITEM_HEADER_LEN + 1 + ECHO_LEN;
        let cap = out.len().min(self.cfg.max_datagram);
        if cap < MIN_LEN + item * echoes.len() {
            return Err(SealError::TooLarge);
        }
        let counter = self.prepare_send(now)?;
        let mut at = HEADER_LEN;
        for e in echoes {
            out[at..at + 2].copy_from_slice(&((1 + ECHO_LEN) as u16).to_be_bytes());
            out[at + 2] = kind.to_u8();
            out[at + 3..at + item].copy_from_slice(&e.to_bytes());
            at += item;
        }
        Ok(self.finish(RecordType::Control, counter, out, at - HEADER_LEN))
    }

    /// Writes the header in front of the `plain_len` plaintext bytes at
    /// `out[HEADER_LEN..]`, seals them in place, appends the tag; uses
    /// `counter` up. Returns the record's length.
    fn finish(&mut self, ty: RecordType, counter: u64, out: &mut [u8], plain_len: usize) -> usize {
        let total = HEADER_LEN + plain_len + TAG_LEN;
        let rec = &mut out[..total];
        {
            let mut p = Packet::new_unchecked(&mut *rec);
            p.set_record_type(ty);
            p.set_send_epoch(self.tx_key.epoch as u8);
            p.set_recv_epoch(self.rx_cur.epoch as u8);
            p.clear_reserved();
            p.set_receiver(self.peer_id);
            p.set_counter(counter);
        }
        let (header, rest) = rec.split_at_mut(HEADER_LEN);
        let (plain, tag) = rest.split_at_mut(plain_len);
        tag.copy_from_slice(&self.tx_key.seal(counter, header, plain));
        self.next_counter = counter + 1;
        self.tx_in_epoch += 1;
        self.ack_due = false;
        self.stats.tx_records += 1;
        total
    }
}

#[cfg(test)]
mod tests;
