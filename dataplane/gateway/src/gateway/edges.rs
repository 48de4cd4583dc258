//! One tenant's edges on one worker: the edge selection
//! ([`sluice_core::select::Selector`], sans-IO) driven with real
//! tunnels.
//!
//! The selector decides (which edges to connect, which one carries the
//! traffic, when to probe, when one is dead); this module does what it
//! asks and tells it what happened:
//! - [`Action::Connect`] opens a [`Link::once`] to the address (one TCP
//!   connection and session, no reconnection of its own: the selector's
//!   backoff decides the next attempt), [`Action::Disconnect`] closes it;
//! - [`Action::SendProbe`] sends an echo frame inside the edge's tunnel
//!   ([`crate::tunnel::Session::send_echo`]); its reply
//!   ([`LinkEvent::EchoReply`]) is the liveness proof and RTT sample;
//! - [`Action::Resolve`] resolves a DNS name on a short-lived thread
//!   (the answer is polled every turn: no worker ever blocks on DNS);
//! - a link's session coming up, failing or ending is reported back.
//!
//! Traffic goes only into the active edge's session
//! ([`Edges::active_session_mut`]); with none active there is nowhere to
//! send it and the worker drops and counts it: must-tunnel traffic never
//! leaves directly. Packets arriving from any of the tenant's tunnels
//! (standbys too: replies still in flight after a switch) are delivered.
//!
//! Each worker selects on its own (a flow stays on its worker, so on one
//! edge); every worker's status is published for the metrics and the
//! admin API about once a second, and at once when something changed.
use std::{
    io,
    net::{SocketAddr, ToSocketAddrs as _},
    ops::Range,
    sync::mpsc,
    time::{Duration, Instant},
};

use mio::{Interest, Registry, Token};
use sluice_core::{
    datagram::{
        DatagramConfig, DatagramEvent, DatagramSession, SealError,
        path::{Path, PathConfig, PathEvent, Transport},
    },
    select::{
        Action, Address, EdgeId, EdgeSet, Event, Failure, MAX_EDGES, SelectError, Selector, Status,
    },
    tunnel::DatagramControl,
    wire::{
        datagram::{Items, RecordType},
        tunnel::{DatagramSetup, FrameType, datagram_use_frame},
    },
};

use crate::{
    driver::{Link, LinkEvent, LinkParams},
    tunnel::Session,
};

/// Datagrams sent per batch.
pub(super) const UDP_BATCH: usize = crate::sys::udp::MAX_BATCH;
/// Room for one datagram sent (a record is at most
/// [`DatagramConfig::max_datagram`]).
const UDP_SLOT: usize = 1500;
/// Messages per receive; with GRO each holds up to 64 KiB of coalesced
/// datagrams.
const RX_MESSAGES: usize = 8;
/// Datagrams one receive can give (GRO splits a message into at most 64).
const RX_DATAGRAMS: usize = RX_MESSAGES * crate::sys::udp::MAX_GSO_SEGMENTS;
/// Socket buffers: a burst of a few milliseconds at line rate.
const UDP_BUFFER: usize = 4 << 20;

/// The datagram transport beside one edge's TLS tunnel: a UDP socket
/// connected to the edge's datagram port (`sendmmsg` with UDP GSO for
/// runs of equal records, `recvmmsg` with UDP GRO), the session that
/// seals and opens its records, and preallocated batches both ways (no
/// allocation per packet).
pub(super) struct Udp {
    sock: crate::sys::udp::UdpSocket,
    session: DatagramSession,
    tx: crate::sys::udp::SendBatch,
    rx: crate::sys::udp::RecvBatch,
    /// Per datagram of the last receive: what opened.
    rx_open: Vec<Option<(RecordType, Range<usize>)>>,
    rx_n: usize,
}

/// What one flush or receive of the datagram transport did, for the
/// worker's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct UdpTally {
    /// Datagrams the socket took.
    pub(super) sent: u64,
    /// Datagrams the socket refused (its buffer full, or an error):
    /// their packets are lost, as on a congested link.
    pub(super) send_dropped: u64,
    /// Datagrams received.
    pub(super) received: u64,
    /// Datagrams that did not open (forged, replayed, too old, unknown
    /// receiver, malformed): counted by reason in the session.
    pub(super) refused: u64,
}

impl Udp {
    fn new(edge: SocketAddr, session: DatagramSession) -> io::Result<Self> {
        let cfg = crate::sys::udp::UdpConfig {
            gro: true,
            recv_buffer: Some(UDP_BUFFER),
            send_buffer: Some(UDP_BUFFER),
            ..crate::sys::udp::UdpConfig::default()
        };
        let sock = crate::sys::udp::UdpSocket::connect(edge, &cfg)?;
        let slot = if sock.gro() {
            crate::sys::udp::GRO_SLOT_LEN
        } else {
            UDP_SLOT
        };
        Ok(Self {
            sock,
            session,
            tx: crate::sys::udp::SendBatch::new(UDP_BATCH, UDP_SLOT),
            rx: crate::sys::udp::RecvBatch::new(RX_MESSAGES, slot),
            rx_open: (0..RX_DATAGRAMS).map(|_| None).collect(),
            rx_n: 0,
        })
    }

    /// Seals `pkt` into the next slot of the send batch (sent when the
    /// batch is full or at the end of the loop turn).
    ///
    /// # Errors
    /// As [`DatagramSession::seal`]: [`SealError::TooLarge`] for a packet
    /// a datagram cannot carry (the caller sends it by TLS if allowed).
    pub(super) fn queue(
        &mut self,
        pkt: &[u8],
        now: Instant,
        tally: &mut UdpTally,
    ) -> Result<(), SealError> {
        if self.tx.is_full() {
            self.flush(tally);
        }
        let Some(slot) = self.tx.slot() else {
            tally.send_dropped += 1;
            return Ok(());
        };
        let sealed = self.session.seal(&[pkt], now, slot)?;
        self.tx.commit(sealed.len, None);
        Ok(())
    }

    /// Seals one packet where it lies ([`DatagramSession::seal_in_place`]:
    /// `buf` holds it at [`sluice_core::datagram::IN_PLACE_OFFSET`]);
    /// returns the record's length, at the start of `buf`.
    ///
    /// # Errors
    /// As [`DatagramSession::seal_in_place`] (`buf` unchanged).
    pub(super) fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Result<usize, SealError> {
        self.session.seal_in_place(buf, len, now)
    }

    /// Sends records sealed elsewhere ([`Udp::seal_in_place`]), after
    /// what the send batch holds (so that order holds): what the socket
    /// does not take now is dropped and counted, as by [`Udp::flush`].
    pub(super) fn send_sealed(&mut self, records: &[&[u8]], tally: &mut UdpTally) {
        self.flush(tally);
        let mut rest = records;
        while !rest.is_empty() {
            match self.sock.send_many(rest, None) {
                Ok(n) if n > 0 => {
                    tally.sent += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The oldest refused (too long, no route, a firewall):
                // that one is lost, the others still go.
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    tally.send_dropped += 1;
                    rest = &rest[1..];
                }
                // Nothing taken (the buffer is full): the rest is lost.
                _ => {
                    tally.send_dropped += rest.len() as u64;
                    rest = &[];
                }
            }
        }
    }

    /// Sends the batch: what the socket does not take now (its buffer is
    /// full) is dropped and counted, as a congested link would.
    pub(super) fn flush(&mut self, tally: &mut UdpTally) {
        while !self.tx.is_empty() {
            match self.sock.send_batch(&mut self.tx) {
                Ok(n) if n > 0 => tally.sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // One datagram refused (send_batch dropped it): the
                // others still go.
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => tally.send_dropped += 1,
                // Nothing taken (the buffer is full): the rest is lost.
                _ => {
                    tally.send_dropped += self.tx.len() as u64;
                    self.tx.clear();
                }
            }
        }
    }

    /// Sends what the session wants sent (echo replies, the empty record
    /// that acknowledges a new key) and a probe, at once.
    fn transmit(&mut self, probe: Option<u64>, now: Instant, tally: &mut UdpTally) {
        let mut buf = [0u8; 1500];
        if let Some(seq) = probe
            && let Ok(n) = self.session.send_echo(seq, now, &mut buf)
        {
            match self.sock.send(&buf[..n]) {
                Ok(_) => tally.sent += 1,
                Err(_) => tally.send_dropped += 1,
            }
        }
        while self.session.wants_transmit() {
            match self.session.poll_transmit(now, &mut buf) {
                Ok(Some(n)) => match self.sock.send(&buf[..n]) {
                    Ok(_) => tally.sent += 1,
                    Err(_) => tally.send_dropped += 1,
                },
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Reads a batch of datagrams and opens them in place. Returns
    /// whether more may be waiting.
    fn receive(&mut self, now: Instant, tally: &mut UdpTally) -> bool {
        self.rx_n = 0;
        match self.sock.recv_batch(&mut self.rx) {
            Ok(_) => {}
            // WouldBlock, or the error a connected socket reports once
            // (the edge's port refused): nothing more now.
            Err(_) => return false,
        }
        for (_, d) in self.rx.records_mut() {
            let Some(slot) = self.rx_open.get_mut(self.rx_n) else {
                break;
            };
            tally.received += 1;
            let opened = self.session.open(d, now);
            if opened.is_err() {
                tally.refused += 1;
            }
            *slot = opened.ok().map(|o| (o.kind, o.plaintext));
            self.rx_n += 1;
        }
        self.rx.messages() == self.rx.slots()
    }

    /// The packets of the last receive, in order.
    pub(super) fn packets(&self) -> UdpPackets<'_> {
        UdpPackets {
            records: self.rx.records(),
            opened: self.rx_open[..self.rx_n].iter(),
            items: None,
        }
    }
}

/// The packets of a [`Udp`]'s last receive batch.
pub(super) struct UdpPackets<'a> {
    records: crate::sys::udp::Records<'a>,
    opened: std::slice::Iter<'a, Option<(RecordType, Range<usize>)>>,
    items: Option<Items<'a>>,
}

impl<'a> Iterator for UdpPackets<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if let Some(p) = self.items.as_mut().and_then(Iterator::next) {
                return Some(p);
            }
            let (_, d) = self.records.next()?;
            let opened = self.opened.next()?;
            self.items = match opened {
                Some((RecordType::Data, range)) => d.get(range.clone()).map(Items::new),
                _ => None,
            };
        }
    }
}

/// The datagram side of one edge: its transport choice and, once the
/// edge accepted, its socket and session.
#[derive(Default)]
struct EdgeDatagrams {
    path: Option<Path>,
    /// Our receiver id for this connection.
    local_id: u32,
    udp: Option<Udp>,
    /// UDP probes sent (their sequence numbers).
    probes: u64,
    /// Its TLS session is up but the selector is not told yet: the
    /// tenant allows no TLS fallback, so the edge counts as connected
    /// only once its datagram path carries packets.
    awaiting_udp: bool,
}

/// A tenant's selection status and, per edge, its transport's state
/// (`tls`, or the datagram path's: offered, trying, datagrams, fallback,
/// failed), as published for the metrics and `sluice status`.
pub(crate) type EdgeReport = (Status, Vec<&'static str>);

/// Where a packet for the tenant goes now.
pub(super) enum Sender<'a> {
    /// The TLS stream of the active edge.
    Tls(&'a mut Session),
    /// The datagram transport of the active edge; its TLS stream too if
    /// the tenant allows it to carry what a datagram cannot.
    Udp(&'a mut Udp, Option<&'a mut Session>),
}

/// A probe sent while more than this waits in its tunnel's send buffer
/// queues behind the worker's own data: its reply proves the edge alive
/// but its RTT measures that queue, so it is no RTT sample (see
/// [`Selector::handle_alive`]).
const QUEUED_PROBE: usize = 64 * 1024;
/// Queued probes remembered per edge (the newest).
const QUEUED_PROBES: usize = 8;

/// How often a worker publishes its selection status (RTTs change with
/// every probe; phases are published at once).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What changed in one [`Edges::drive`], for the worker's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct News {
    /// Tunnels that came up.
    pub(super) connects: u64,
    /// Attempts or tunnels that failed.
    pub(super) failures: u64,
    /// Whether the active edge (or its absence) changed, or an edge
    /// failed: publish the status now.
    pub(super) changed: bool,
}

/// A tenant's edges on one worker.
pub(super) struct Edges {
    queue: u32,
    tenant: usize,
    selector: Selector,
    /// Index: [`EdgeId::index`].
    links: Vec<Option<Link>>,
    /// Whether each edge's current link came up (a failure after that is
    /// the transport's, before it the attempt's).
    up: Vec<bool>,
    /// Per edge: the sequence numbers of the newest probes that queued
    /// behind data ([`QUEUED_PROBE`]).
    queued_probes: Vec<[Option<u64>; QUEUED_PROBES]>,
    /// Name resolutions in flight, by edge.
    resolving: Vec<Option<mpsc::Receiver<io::Result<Vec<SocketAddr>>>>>,
    /// Where and how to connect (its `edge` is set per attempt).
    base: LinkParams,
    /// Edge `e`'s socket is `Token(first_token + e)`.
    first_token: usize,
    /// Whether an edge has failed since the start (the classifier's
    /// tunnel state: unknown until then).
    failed_once: bool,
    /// When the status is published next.
    next_status: Instant,
    /// The tenant's transport knobs.
    transport: PathConfig,
    /// The datagram side of each edge.
    datagrams: Vec<EdgeDatagrams>,
    /// Edge `e`'s UDP socket is `Token(first_udp_token + e)`.
    first_udp_token: usize,
    /// Receiver ids handed out so far (ours are unique per worker: each
    /// connected socket knows its session anyway).
    ids: u32,
    /// The datagram transport's counters since the worker last took them.
    pub(super) udp_tally: UdpTally,
}

impl std::fmt::Debug for Edges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edges")
            .field("tenant", &self.tenant)
            .field("active", &self.selector.active())
            .finish_non_exhaustive()
    }
}

impl Edges {
    /// The tenant's edges `set`, connected with `base` (TLS, session
    /// settings), their sockets registered under `first_token..`; the
    /// first attempts are due at `now` ([`Edges::drive`] makes them).
    ///
    /// # Errors
    /// The set's settings are out of range, or it has no edge or too many.
    #[allow(clippy::too_many_arguments, reason = "one call site")]
    pub(super) fn new(
        queue: u32,
        tenant: usize,
        set: &EdgeSet,
        base: LinkParams,
        (first_token, first_udp_token): (usize, usize),
        transport: PathConfig,
        now: Instant,
    ) -> Result<Self, SelectError> {
        let mut selector = Selector::new(set, now)?;
        // Retries jittered, so that branches which lost an edge together
        // (it restarted) do not come back in step: a seed from the
        // process's random hash keys (std's `RandomState`).
        selector.jitter_backoff({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_u32(queue);
            h.write_usize(tenant);
            h.finish() | 1
        });
        let n = set.edges.len().min(MAX_EDGES);
        Ok(Self {
            queue,
            tenant,
            selector,
            links: (0..n).map(|_| None).collect(),
            up: vec![false; n],
            queued_probes: vec![[None; QUEUED_PROBES]; n],
            resolving: (0..n).map(|_| None).collect(),
            base,
            first_token,
            failed_once: false,
            next_status: now,
            transport,
            datagrams: (0..n).map(|_| EdgeDatagrams::default()).collect(),
            first_udp_token,
            ids: 0,
            udp_tally: UdpTally::default(),
        })
    }

    /// The edge carrying the traffic.
    pub(super) fn active(&self) -> Option<EdgeId> {
        self.selector.active()
    }

    /// Whether the classifier should take the tenant's tunnel for lost
    /// (no edge active after one failed), up, or not known yet.
    pub(super) fn link_state(&self) -> u64 {
        if self.active().is_some() {
            super::stats::LINK_UP
        } else if self.failed_once && !self.selector.attempting() {
            // Lost only once no edge is still trying: one edge refusing
            // while another is in its handshake is no outage (a fail-open
            // profile would go direct, a grace would start).
            super::stats::LINK_LOST
        } else {
            super::stats::LINK_UNKNOWN
        }
    }

    /// Whether an edge counts as connected only once its datagrams flow
    /// (UDP primary, no TLS fallback).
    fn strict_udp(&self) -> bool {
        self.transport.primary == Transport::Udp && !self.transport.fallback
    }

    /// Where the tenant's packets go now: the active edge's datagram
    /// transport while its path says so, else its TLS stream if the
    /// tenant allows TLS now; `None` (drop and count) otherwise.
    pub(super) fn sender(&mut self) -> Option<Sender<'_>> {
        let e = self.selector.active()?.index();
        let d = self.datagrams.get_mut(e)?;
        let session = self.links.get_mut(e)?.as_mut()?.session_mut();
        match &d.path {
            Some(p) if p.uses_datagrams() => {
                let tls = if self.transport.fallback {
                    session
                } else {
                    None
                };
                d.udp.as_mut().map(|u| Sender::Udp(u, tls))
            }
            Some(p) if !p.tls_allowed() => None,
            _ => session.map(Sender::Tls),
        }
    }

    /// Packets came from edge `e` (its tunnel or its datagrams): proof
    /// that it is alive, whatever its probes' replies are waiting behind.
    pub(super) fn alive(&mut self, e: usize, now: Instant) {
        if e < self.links.len() {
            let id = self.id(e);
            self.selector.handle_alive(id, now);
        }
    }

    /// Edge `e`'s datagram transport, if it has one.
    pub(super) fn udp_mut(&mut self, e: usize) -> Option<&mut Udp> {
        self.datagrams.get_mut(e)?.udp.as_mut()
    }

    /// Reads edge `e`'s datagrams (a batch), hands the probe answers to
    /// its path, sends what its session wants sent. Returns whether more
    /// may be waiting; the packets are then in [`Udp::packets`].
    pub(super) fn receive_udp(&mut self, e: usize, now: Instant) -> bool {
        let Some(d) = self.datagrams.get_mut(e) else {
            return false;
        };
        let Some(udp) = d.udp.as_mut() else {
            return false;
        };
        let before = self.udp_tally.received - self.udp_tally.refused;
        let more = udp.receive(now, &mut self.udp_tally);
        if let Some(path) = d.path.as_mut() {
            if self.udp_tally.received - self.udp_tally.refused > before {
                path.handle_received(now);
            }
            while let Some(DatagramEvent::EchoReply { .. }) = udp.session.poll_event() {
                path.handle_probe_reply(now);
            }
        }
        udp.transmit(None, now, &mut self.udp_tally);
        more
    }

    /// Edge `e`'s link, if it has one.
    pub(super) fn link_mut(&mut self, e: usize) -> Option<&mut Link> {
        self.links.get_mut(e)?.as_mut()
    }

    /// When [`Edges::drive`] is next due.
    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let links = self.links.iter().flatten().filter_map(Link::poll_timeout);
        let resolving = self
            .resolving
            .iter()
            .any(Option::is_some)
            .then(|| now + Duration::from_millis(20));
        let paths = self
            .datagrams
            .iter()
            .filter_map(|d| d.path.as_ref().and_then(Path::poll_timeout));
        links
            .chain(paths)
            .chain(self.selector.poll_timeout())
            .chain(resolving)
            .chain(Some(self.next_status))
            .min()
    }

    /// Timers (the selector's, each link's), resolutions that finished,
    /// what happened to the links; then everything the selector asks.
    pub(super) fn drive(&mut self, registry: &Registry, now: Instant) -> News {
        if self.selector.poll_timeout().is_some_and(|t| t <= now) {
            self.selector.handle_timeout(now);
        }
        for link in self.links.iter_mut().flatten() {
            link.handle_timeout(registry, now);
        }
        self.resolutions(now);
        for d in &mut self.datagrams {
            if let Some(p) = d.path.as_mut() {
                p.handle_timeout(now);
                let probe = p.poll_probe(now).then(|| {
                    d.probes += 1;
                    d.probes
                });
                if let Some(u) = d.udp.as_mut() {
                    u.transmit(probe, now, &mut self.udp_tally);
                }
            }
        }
        self.events(registry, now)
    }

    /// Edge `e`'s link events, then the selector's actions and events,
    /// until nothing is left (a connect may fail at once, which the
    /// selector answers).
    pub(super) fn events(&mut self, registry: &Registry, now: Instant) -> News {
        let mut news = News::default();
        // Each round either consumes events or stops; the bound is a
        // guard against a selector that would keep asking.
        for _ in 0..4 * MAX_EDGES {
            let mut any = false;
            for e in 0..self.links.len() {
                while let Some(ev) = self.links[e]
                    .as_mut()
                    .and_then(|l| l.poll_event(registry, now))
                {
                    any = true;
                    self.link_event(e, ev, (registry, now), &mut news);
                }
            }
            for e in 0..self.datagrams.len() {
                while let Some(ev) = self.datagrams[e].path.as_mut().and_then(Path::poll_event) {
                    any = true;
                    self.path_event(e, ev, now, &mut news);
                }
            }
            while let Some(a) = self.selector.poll_action() {
                any = true;
                self.act(&a, registry, now);
            }
            while let Some(ev) = self.selector.poll_event() {
                news.changed = true;
                self.log(&ev);
                if matches!(ev, Event::Down { .. }) {
                    self.failed_once = true;
                }
            }
            if !any {
                break;
            }
        }
        news
    }

    /// Edge `e`'s transport changed: the edge is told which one to send
    /// by (`DATAGRAM_USE`); a path that failed without fallback is an edge
    /// failure.
    fn path_event(&mut self, e: usize, ev: PathEvent, now: Instant, news: &mut News) {
        let edge = self.describe(e);
        match ev {
            PathEvent::Switched(t) => {
                log::info!(
                    "queue {}: tenant {} edge {edge}: packets now go by {}",
                    self.queue,
                    self.tenant,
                    t.as_str()
                );
                news.changed = true;
                if let Some(s) = self.links[e].as_mut().and_then(Link::session_mut) {
                    let _ = s.send_datagram_control(&datagram_use_frame(t == Transport::Udp));
                }
                if t == Transport::Udp && std::mem::take(&mut self.datagrams[e].awaiting_udp) {
                    let id = self.id(e);
                    self.selector.handle_connected(id, now);
                }
            }
            PathEvent::Failed => {
                log::warn!(
                    "queue {}: tenant {} edge {edge}: datagrams do not get through and TLS may not stand in: edge down",
                    self.queue,
                    self.tenant
                );
                news.failures += 1;
                let id = self.id(e);
                // Never connected as far as the selector knows: a failed
                // attempt (its backoff grows), not a transport error.
                let failure = if std::mem::take(&mut self.datagrams[e].awaiting_udp) {
                    Failure::Connect
                } else {
                    Failure::Transport
                };
                self.selector.handle_failed(id, failure, now);
            }
        }
    }

    /// Edge `e`'s datagram side is gone (its tunnel closed or replaced).
    fn drop_datagrams(&mut self, e: usize, registry: &Registry) {
        let d = &mut self.datagrams[e];
        d.path = None;
        d.awaiting_udp = false;
        if let Some(mut u) = d.udp.take() {
            let _ = registry.deregister(&mut u.sock);
        }
    }

    /// Edge `e`'s tunnel is up: offer it datagrams if the tenant wants
    /// them.
    fn offer_datagrams(&mut self, e: usize, now: Instant) {
        if self.transport.primary != Transport::Udp {
            return;
        }
        self.ids = self.ids.wrapping_add(1);
        let local_id = (self.queue << 24) ^ self.ids.max(1);
        let local_id = if local_id == 0 { 1 } else { local_id };
        let d = &mut self.datagrams[e];
        d.local_id = local_id;
        d.path = Some(Path::new(self.transport, now));
        let offer = DatagramSetup {
            receiver_id: local_id,
            port: 0,
        };
        if let Some(s) = self.links[e].as_mut().and_then(Link::session_mut) {
            let _ = s.send_datagram_control(&offer.frame(FrameType::DatagramOffer));
        }
    }

    /// The edge answered our offer.
    fn accepted(&mut self, e: usize, setup: DatagramSetup, registry: &Registry, now: Instant) {
        let edge = self.describe(e);
        let Some(link) = self.links[e].as_mut() else {
            return;
        };
        let addr = SocketAddr::new(link.params().edge.ip(), setup.port);
        let d = &mut self.datagrams[e];
        let Some(path) = d.path.as_mut() else {
            return;
        };
        if d.udp.is_some() {
            return;
        }
        if setup.port == 0 || setup.receiver_id == 0 {
            log::info!(
                "queue {}: tenant {} edge {edge} refused datagrams: TLS only",
                self.queue,
                self.tenant
            );
            path.handle_refused(now);
            return;
        }
        let Some(Ok(keys)) = link.session_mut().and_then(Session::take_datagram_keys) else {
            path.handle_refused(now);
            return;
        };
        let cfg = DatagramConfig {
            max_datagram: if addr.ip().to_canonical().is_ipv4() {
                sluice_core::datagram::MAX_DATAGRAM_V4
            } else {
                sluice_core::datagram::MAX_DATAGRAM_V6
            },
            aead: crate::driver::aead(),
            ..DatagramConfig::default()
        };
        let udp = DatagramSession::new(keys, d.local_id, setup.receiver_id, cfg, now)
            .map_err(io::Error::other)
            .and_then(|session| Udp::new(addr, session));
        let mut udp = match udp {
            Ok(u) => u,
            Err(err) => {
                log::warn!(
                    "queue {}: tenant {} edge {edge}: datagram socket: {err}",
                    self.queue,
                    self.tenant
                );
                path.handle_refused(now);
                return;
            }
        };
        if let Err(err) = registry.register(
            &mut udp.sock,
            Token(self.first_udp_token + e),
            Interest::READABLE,
        ) {
            log::warn!("queue {}: registering a datagram socket: {err}", self.queue);
            path.handle_refused(now);
            return;
        }
        log::info!(
            "queue {}: tenant {} edge {edge} accepted datagrams on {addr}",
            self.queue,
            self.tenant
        );
        path.handle_accepted(now);
        d.udp = Some(udp);
    }

    fn link_event(
        &mut self,
        e: usize,
        ev: LinkEvent,
        (registry, now): (&Registry, Instant),
        news: &mut News,
    ) {
        let id = self.id(e);
        let edge = self.describe(e);
        match ev {
            LinkEvent::Up { peer } => {
                log::info!(
                    "queue {}: tenant {} edge {edge} up (edge `{}`)",
                    self.queue,
                    self.tenant,
                    peer.name
                );
                news.connects += 1;
                self.up[e] = true;
                if self.strict_udp() {
                    self.datagrams[e].awaiting_udp = true;
                } else {
                    self.selector.handle_connected(id, now);
                }
                self.offer_datagrams(e, now);
            }
            LinkEvent::ConnectFailed { step, error } => {
                log::warn!(
                    "queue {}: tenant {} edge {edge}: {step}: {error}",
                    self.queue,
                    self.tenant
                );
                news.failures += 1;
                self.drop_datagrams(e, registry);
                self.selector.handle_failed(id, Failure::Connect, now);
            }
            LinkEvent::Down { reason } => {
                let was_up = std::mem::take(&mut self.up[e]);
                log::warn!(
                    "queue {}: tenant {} edge {edge} down: {reason:?}",
                    self.queue,
                    self.tenant
                );
                news.failures += 1;
                let failure = if was_up {
                    Failure::Transport
                } else {
                    Failure::Connect
                };
                self.drop_datagrams(e, registry);
                self.selector.handle_failed(id, failure, now);
            }
            LinkEvent::EchoReply { seq, .. } => {
                let slot =
                    &mut self.queued_probes[e][usize::try_from(seq).unwrap_or(0) % QUEUED_PROBES];
                if *slot == Some(seq) {
                    *slot = None;
                    self.selector.handle_alive(id, now);
                } else {
                    self.selector.handle_probe_reply(id, seq, now);
                }
            }
            LinkEvent::Datagram(DatagramControl::Accept(setup)) => {
                self.accepted(e, setup, registry, now);
            }
            // An edge offers nothing and tells no transport: ignored.
            LinkEvent::Datagram(DatagramControl::Offer(_) | DatagramControl::Use(_)) => {}
        }
    }

    fn act(&mut self, a: &Action, registry: &Registry, now: Instant) {
        match *a {
            Action::Connect { edge, addr } => {
                let e = edge.index();
                self.drop_datagrams(e, registry);
                if let Some(mut old) = self.links[e].take() {
                    old.shutdown(registry, "reconnecting", now);
                }
                let params = LinkParams {
                    edge: addr,
                    ..self.base.clone()
                };
                self.up[e] = false;
                let mut link = Link::once(params, Token(self.first_token + e), now);
                // Connects now (the attempt was due at `now`); a failure
                // is its first event.
                link.handle_timeout(registry, now);
                self.links[e] = Some(link);
            }
            Action::Disconnect(edge) => {
                self.drop_datagrams(edge.index(), registry);
                if let Some(mut old) = self.links[edge.index()].take() {
                    old.shutdown(registry, "edge not needed", now);
                }
            }
            Action::SendProbe { edge, seq } => {
                // A probe that cannot be sent (not established, send
                // buffer over its cap) goes unanswered: a miss.
                let e = edge.index();
                // Behind data in the session or in the kernel (up to
                // `TCP_NOTSENT_LOWAT` more): no RTT sample.
                let unsent = self.links[e].as_ref().map_or(0, Link::unsent);
                if let Some(s) = self.links[e].as_mut().and_then(Link::session_mut) {
                    if unsent > QUEUED_PROBE {
                        let q = &mut self.queued_probes[e];
                        q[usize::try_from(seq).unwrap_or(0) % QUEUED_PROBES] = Some(seq);
                    }
                    let _ = s.send_echo(seq, now);
                }
            }
            Action::Resolve(edge) => self.resolve(edge, now),
        }
    }

    /// Resolves edge `edge`'s name on a thread of its own; the answer is
    /// taken by [`Edges::resolutions`]. The selector times it out
    /// (`connect_timeout`) if the thread never answers.
    fn resolve(&mut self, edge: EdgeId, now: Instant) {
        let e = edge.index();
        let Some((_, spec)) = self.selector.edges().nth(e) else {
            return;
        };
        let Address::Name { host, port } = spec.address.clone() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sluice-resolve".into())
            .spawn(move || {
                let r = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>);
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => self.resolving[e] = Some(rx),
            Err(err) => {
                log::warn!("queue {}: resolving edge {e}: {err}", self.queue);
                self.selector.handle_failed(edge, Failure::Resolve, now);
            }
        }
    }

    /// Hands the selector the resolutions that finished.
    fn resolutions(&mut self, now: Instant) {
        for e in 0..self.resolving.len() {
            let Some(rx) = &self.resolving[e] else {
                continue;
            };
            let r = match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => continue,
                Err(mpsc::TryRecvError::Disconnected) => Err(io::Error::other("resolver ended")),
            };
            self.resolving[e] = None;
            let id = self.id(e);
            match r {
                Ok(addrs) if !addrs.is_empty() => self.selector.handle_resolved(id, &addrs, now),
                Ok(_) => {
                    log::warn!(
                        "queue {}: edge {}: no address",
                        self.queue,
                        self.describe(e)
                    );
                    self.selector.handle_failed(id, Failure::Resolve, now);
                }
                Err(err) => {
                    log::warn!(
                        "queue {}: edge {}: resolving: {err}",
                        self.queue,
                        self.describe(e)
                    );
                    self.selector.handle_failed(id, Failure::Resolve, now);
                }
            }
        }
    }

    fn log(&self, ev: &Event) {
        match ev {
            Event::Switched { from, to, reason } => {
                let name = |x: &Option<EdgeId>| {
                    x.map_or_else(|| "none".to_owned(), |x| self.describe(x.index()))
                };
                if to.is_none() {
                    log::warn!(
                        "queue {}: tenant {}: no edge up (was {}): {reason}; traffic that must be tunnelled is dropped",
                        self.queue,
                        self.tenant,
                        name(from)
                    );
                } else {
                    log::info!(
                        "queue {}: tenant {}: traffic moves from {} to {}: {reason}",
                        self.queue,
                        self.tenant,
                        name(from),
                        name(to)
                    );
                }
            }
            Event::Down { edge, failure } => log::warn!(
                "queue {}: tenant {} edge {} down: {failure}",
                self.queue,
                self.tenant,
                self.describe(edge.index())
            ),
            Event::Up(_) => {}
        }
    }

    fn id(&self, e: usize) -> EdgeId {
        self.selector
            .edges()
            .nth(e)
            .map(|(id, _)| id)
            .expect("edge index within the set")
    }

    /// `name (address)` for logs.
    fn describe(&self, e: usize) -> String {
        self.selector
            .edges()
            .nth(e)
            .map_or_else(String::new, |(_, s)| {
                format!("`{}` ({})", s.name, s.address)
            })
    }

    /// Ends of the batch: the flush policy on every link.
    pub(super) fn flush(&mut self, now: Instant) {
        for u in self.datagrams.iter_mut().filter_map(|d| d.udp.as_mut()) {
            u.flush(&mut self.udp_tally);
        }
        for link in self.links.iter_mut().flatten() {
            if let Err(e) = link.flush(now) {
                log::debug!("queue {}: tunnel write: {e}", self.queue);
            }
        }
    }

    /// Stopping: every tunnel closed cleanly.
    pub(super) fn close_all(&mut self, reason: &str, now: Instant) {
        for link in self.links.iter_mut().flatten() {
            link.close(crate::wire::tunnel::CloseCode::Normal, reason, now);
        }
    }

    /// The selection's status, if it is due for publishing (`force`: at
    /// once), else `None`.
    pub(super) fn status_due(&mut self, now: Instant, force: bool) -> Option<EdgeReport> {
        if !force && now < self.next_status {
            return None;
        }
        self.next_status = now + STATUS_EVERY;
        let transports = self
            .datagrams
            .iter()
            .map(|d| d.path.as_ref().map_or("tls", |p| p.state().as_str()))
            .collect();
        Some((self.selector.status(now), transports))
    }
}
