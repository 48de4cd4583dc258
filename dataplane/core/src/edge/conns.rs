//! The edge's protocol core, sans I/O: connections from accept to close,
//! their sessions, who they are, where their packets may go.
//!
//! The driver (`sluice-edge`'s `Edge`) owns the sockets, the TUN device
//! and the poller; the core owns everything else and is fed bytes, packets
//! and the time:
//! 1. [`Core::accept`] for each accepted connection: a slot, or a refusal
//!    (caps on connections still in their handshake: [`super::admission`]).
//! 2. [`Core::read`] when a connection is readable, with a closure that
//!    reads its socket into its session (the tunnel driver's read rule and
//!    byte budget): the handshake, then the identity check (the
//!    certificate must name a configured gateway, within its tunnel caps),
//!    then every packet through [`Router::inbound`] to `deliver`. Returns
//!    whether bytes may be left (edge-triggered sockets: call again).
//! 3. [`Core::tun_packet`] for each packet read from the TUN device: into
//!    the tunnel its destination's route names.
//! 4. [`Core::poll_dirty`] / [`Core::write`]: connections with frames or
//!    bytes to send, and sending them (a closure: the driver's flush
//!    policy, `sluice_runtime::driver::flush`).
//! 5. [`Core::handle_timeout`] at [`Core::poll_timeout`]: session timers
//!    (keepalives, dead peers, the absolute handshake deadline, peers that
//!    stopped reading), connections done closing, the route sweep, and,
//!    when the controller's allow-list of certificates changed
//!    ([`Shared::set_allowed_certificates`]), the tunnels it no longer
//!    allows closed.
//! 6. [`Core::poll_closed`] after each of the above: slots whose socket
//!    the driver closes now.
//!
//! Bounded: at most `max_handshakes` connections before authentication
//! (a few KiB each: sessions allocate their buffers once authenticated),
//! `max_tunnels` after; every connection is in a slot of a table that
//! only grows to their sum.
//!
//! With several workers, each has its own core ([`Core::for_worker`])
//! over one [`Shared`]: the caps and the reply-route books are the edge's.
//! Two more outputs and inputs then: [`Core::poll_eviction`] names a
//! handshake of another worker that made room for one accepted here (hand
//! it to that worker's [`Core::evict`]), and [`Core::tun_packet`] may say
//! that another worker holds the route to a reply's destination
//! ([`Sent::HandOff`]: hand the packet to that worker's
//! [`Core::handed_packet`]).
use std::{
    fmt::Display,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use super::{
    EdgeLimits, Settings,
    directory::WorkerId,
    identity::Identities,
    ratelog::{RateLog, suppressed_note},
    router::{GatewayId, Learnt, Refused, Router, RouterError, TunnelRef},
    shared::{Admitted, Pending, Shared, TunnelCap},
    stats::EdgeStats,
};
use crate::{
    datagram::{DatagramConfig, DatagramSession, DropReason, ReceiverTable},
    lpm::Advise,
    tunnel::{
        AeadProvider, CloseReason, DatagramControl, Event, SendError, Session, SessionConfig,
        printable,
    },
    wire::{
        ip,
        tunnel::{CloseCode, DatagramSetup, FrameType},
    },
};

/// Where the edge's datagrams go: the driver's send batch (slots it seals
/// into, each sent to its address). The core seals; the driver sends.
pub trait DatagramSink {
    /// Room for one datagram, or `None` (the packet then takes the TLS
    /// stream). A sink that is full sends what it holds first.
    fn slot(&mut self) -> Option<&mut [u8]>;
    /// The slot just given holds a datagram of `len` bytes for `to`.
    fn commit(&mut self, len: usize, to: SocketAddr);
}

/// A sink that takes nothing: every packet takes the TLS stream.
#[derive(Debug, Default)]
pub struct NoDatagrams;

impl DatagramSink for NoDatagrams {
    fn slot(&mut self) -> Option<&mut [u8]> {
        None
    }

    fn commit(&mut self, _: usize, _: SocketAddr) {}
}

/// A tunnel's datagram transport, edge side.
#[derive(Debug)]
struct Datagrams {
    session: DatagramSession,
    /// Where the gateway's datagrams come from: the source of the newest
    /// authenticated one (NAT rebinding, as `WireGuard`'s rule).
    peer: Option<SocketAddr>,
    /// The gateway asked for its packets by datagram (`DATAGRAM_USE`).
    use_udp: bool,
    /// Queued in `Core::dgram_dirty` (the session has records to send).
    dirty: bool,
}

/// CLOSE code the edge sends a peer it refuses after its handshake
/// (unknown gateway, too many tunnels).
pub const CLOSE_REFUSED: CloseCode = CloseCode::Other(0x10);
/// How often timers are looked at.
const TICK: Duration = Duration::from_millis(100);
/// How long a closed connection may take to write its last bytes (CLOSE,
/// alerts) before its socket is closed anyway.
const LINGER: Duration = Duration::from_secs(2);
/// Route-table slots swept per tick while routes of gone tunnels remain.
const SWEEP_SLOTS: usize = 16 * 1024;
/// How long a tunnel may outlive the controller's revocation of its
/// certificate at most: the timer that notices it is never further away
/// than this, even on an idle edge.
const REVOCATION_DELAY: Duration = Duration::from_secs(1);
const _: () = assert!(
    TICK.as_nanos() <= REVOCATION_DELAY.as_nanos(),
    "the tick bounds how late a revocation closes a tunnel"
);

/// A connection's slot (the driver's token for its socket).
pub type ConnId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before authentication: counted by the admission caps.
    Handshake,
    /// An authenticated gateway's tunnel.
    Tunnel(GatewayId),
    /// Closed or refused: writing its last bytes.
    Closing,
}

#[derive(Debug)]
struct Conn {
    sess: Session,
    peer: SocketAddr,
    generation: u32,
    phase: Phase,
    /// Since when it is [`Phase::Closing`].
    closing_since: Option<Instant>,
    /// Queued in `dirty`.
    dirty: bool,
    /// The datagram transport, once the gateway offered it and the edge
    /// accepted.
    dgram: Option<Box<Datagrams>>,
    /// SHA-256 of its end-entity certificate's DER, once it is a tunnel
    /// (the controller's allow-list names certificates by it).
    cert_sha256: Option<[u8; 32]>,
}

/// Rate-limited log kinds.
#[derive(Debug)]
struct Logs {
    refused: RateLog,
    handshake: RateLog,
    tunnel: RateLog,
}

/// The edge's state. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct Core {
    tls: Arc<rustls::ServerConfig>,
    session: SessionConfig,
    shared: Arc<Shared>,
    worker: WorkerId,
    ids: Identities,
    /// This worker's tunnels.
    tunnels: u32,
    router: Router,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    closed: Vec<ConnId>,
    dirty: Vec<ConnId>,
    /// Handshakes of other workers evicted by this one's accepts.
    evictions: Vec<Pending>,
    next_tick: Instant,
    stats: Arc<EdgeStats>,
    logs: Logs,
    /// The datagram transport's port, if it is on.
    datagram_port: Option<u16>,
    /// This worker's datagram sessions by receiver id: (slot, generation).
    receivers: ReceiverTable<(ConnId, u32)>,
    /// Workers of the edge: this one's receiver ids are `worker` modulo
    /// it (the kernel steers datagrams to the worker by it).
    workers: u32,
    /// Receiver ids are drawn from this (xorshift; seeded per worker).
    id_state: u64,
    /// Connections whose datagram session has records to send.
    dgram_dirty: Vec<ConnId>,
    dgram_cfg: DatagramConfig,
    /// Datagram counters not yet published ([`Core::flush_datagram_counts`]).
    dg_tally: DgTally,
    /// The allow-list's epoch ([`Shared::certificates_epoch`]) this
    /// worker's tunnels were last checked against.
    certificates_epoch: u32,
}

/// Datagram counters of the current loop turn, in plain integers.
#[derive(Debug, Default)]
struct DgTally {
    rx: u64,
    tx: u64,
    /// By [`DropReason::ALL`]'s order.
    drops: [u64; 8],
    /// Packets delivered, bytes, over-quota sources, and refusals by
    /// reason, of the last gateway seen.
    inbound: Option<Inbound>,
}

/// A gateway's delivered packets, bytes and over-quota sources, and its
/// refusals by reason ([`Core::count_inbound`]'s arguments).
type Inbound = (GatewayId, (u64, u64, u64), [u64; 4]);

/// Whether the edge may send datagrams to `a` (a gateway's reply
/// address): a unicast address and a port.
fn sendable(a: SocketAddr) -> bool {
    a.port() != 0
        && !a.ip().is_unspecified()
        && !a.ip().is_multicast()
        && match a.ip() {
            std::net::IpAddr::V4(v4) => !v4.is_broadcast(),
            std::net::IpAddr::V6(_) => true,
        }
}

/// Where [`Core::tun_packet`] sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Into this worker's tunnel (it is queued for writing).
    Queued,
    /// Nowhere yet: this worker holds no live route to its destination
    /// but worker `0` does. Hand it over ([`Core::handed_packet`]).
    HandOff(WorkerId),
    /// Sealed into a datagram of the sink.
    Datagram,
}

/// The outcome of [`Core::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A slot for the connection: register its socket under it.
    Conn(ConnId),
    /// Refused (counted): close its socket at once.
    Refused,
}

impl Core {
    /// A core for `cfg` with `limits` (the configuration's, possibly
    /// lowered to fit the descriptor limit), accepting TLS with `tls`,
    /// protecting records with `aead`, the routing table's memory advised
    /// with `advise`.
    ///
    /// # Errors
    /// [`RouterError`]: overlapping gateway prefixes, or the prefix table's
    /// capacity limits.
    pub fn new(
        cfg: &Settings,
        limits: EdgeLimits,
        tls: Arc<rustls::ServerConfig>,
        aead: AeadProvider,
        advise: &impl Advise,
        now: Instant,
    ) -> Result<Self, RouterError> {
        let shared = Arc::new(Shared::new(cfg, limits, advise, 1)?);
        Ok(Self::for_worker(cfg, tls, aead, &shared, 0, now))
    }

    /// Worker `worker`'s core (its own connections, counters and reply
    /// routes) over the edge's `shared` state (the limits are its).
    pub fn for_worker(
        cfg: &Settings,
        tls: Arc<rustls::ServerConfig>,
        aead: AeadProvider,
        shared: &Arc<Shared>,
        worker: WorkerId,
        now: Instant,
    ) -> Self {
        let stats = EdgeStats::new(cfg.gateways.iter().map(|g| g.name.clone()));
        let window = Duration::from_secs(10);
        let limits = *shared.limits();
        // The seed only spreads receiver ids (they are sent in the clear;
        // the AEAD, not the id, authenticates a datagram): the standard
        // library's per-process hash keys, no clock and no secret.
        let seed = {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u16(worker);
            h.finish() | 1
        };
        Self {
            tls,
            session: SessionConfig {
                name: cfg.name.clone(),
                keepalive: cfg.keepalive,
                idle_timeout: cfg.idle_timeout,
                handshake_timeout: limits.handshake_timeout,
                write_timeout: cfg.idle_timeout,
                aead,
                ..SessionConfig::default()
            },
            shared: shared.clone(),
            worker,
            ids: Identities::new(&cfg.gateways),
            tunnels: 0,
            router: shared.router(worker),
            conns: Vec::new(),
            free: Vec::new(),
            closed: Vec::new(),
            dirty: Vec::new(),
            evictions: Vec::new(),
            next_tick: now + TICK,
            stats: Arc::new(stats),
            logs: Logs {
                refused: RateLog::new(10, window),
                handshake: RateLog::new(10, window),
                tunnel: RateLog::new(50, window),
            },
            datagram_port: cfg.datagram_port,
            receivers: ReceiverTable::new(limits.max_tunnels as usize),
            workers: u32::try_from(shared.workers()).unwrap_or(1).max(1),
            id_state: seed,
            dgram_dirty: Vec::new(),
            dgram_cfg: DatagramConfig {
                aead,
                ..DatagramConfig::default()
            },
            dg_tally: DgTally::default(),
            certificates_epoch: 0,
        }
    }

    /// The counters (for the metrics endpoint).
    pub fn stats(&self) -> Arc<EdgeStats> {
        self.stats.clone()
    }

    /// The limits in force.
    pub fn limits(&self) -> &EdgeLimits {
        self.shared.limits()
    }

    /// The state shared with the other workers.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Connections in their handshake, on every worker (the caps count
    /// them together).
    pub fn handshakes(&self) -> u32 {
        self.shared.handshakes()
    }

    /// This worker's authenticated tunnels.
    pub fn tunnels(&self) -> u32 {
        self.tunnels
    }

    /// Slots in the connection table (live or free).
    pub fn slots(&self) -> usize {
        self.conns.len()
    }

    /// Buffer bytes the sessions hold (for tests and the fuzz targets).
    pub fn buffered_capacity(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.sess.buffered_capacity())
            .sum()
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id as usize).and_then(Option::as_ref)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Whether `id` is before authentication (the driver bounds the
    /// handshake work of each loop turn with it).
    pub fn is_handshaking(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| c.phase == Phase::Handshake)
    }

    /// The gateway connection `id` is a tunnel of, once authenticated
    /// (the driver shares each gateway's read budget among its tunnels).
    pub fn gateway_of(&self, id: ConnId) -> Option<GatewayId> {
        match self.conn(id)?.phase {
            Phase::Tunnel(g) => Some(g),
            _ => None,
        }
    }

    /// A TCP connection from `peer` was accepted.
    pub fn accept(&mut self, peer: SocketAddr, now: Instant) -> Accepted {
        self.stats.conns_accepted.fetch_add(1, Relaxed);
        let generation = self.shared.next_generation();
        // The slot it will take (a finished one goes to `closed`, not
        // `free`, so evicting below does not change it).
        let slot = self
            .free
            .last()
            .copied()
            .unwrap_or(self.conns.len() as ConnId);
        match self.shared.admit(peer.ip(), self.worker, slot, generation) {
            Admitted::Yes => {}
            Admitted::Evicting(p) => {
                self.stats.handshakes_evicted.fetch_add(1, Relaxed);
                if p.worker == self.worker {
                    self.evict(p.slot, p.generation, now);
                } else {
                    self.evictions.push(p);
                }
            }
            refusal @ (Admitted::PrefixCap | Admitted::GlobalCap) => {
                let prefix = refusal == Admitted::PrefixCap;
                if prefix {
                    self.stats.refused_prefix_cap.fetch_add(1, Relaxed);
                } else {
                    self.stats.refused_global_cap.fetch_add(1, Relaxed);
                }
                if let Some(n) = self.logs.refused.allow(now) {
                    log::warn!(
                        "connection from {peer} refused: {} handshakes under way{}",
                        if prefix {
                            "too many of its source prefix's"
                        } else {
                            "too many"
                        },
                        suppressed_note(n)
                    );
                } else {
                    self.stats.logs_suppressed.fetch_add(1, Relaxed);
                }
                self.stats.conns_closed.fetch_add(1, Relaxed);
                return Accepted::Refused;
            }
        }
        // The exporter is captured only when datagrams can be offered.
        let tls = if self.datagram_port.is_some() {
            crate::datagram::keys::server(&self.tls).map(|(h, e)| (h, Some(e)))
        } else {
            rustls::server::UnbufferedServerConnection::new(self.tls.clone())
                .map(|c| (c.into(), None))
        };
        let tls = match tls {
            Ok(t) => t,
            Err(e) => {
                log::warn!("connection from {peer}: {e}");
                self.shared.end_handshake(generation);
                self.stats.conns_closed.fetch_add(1, Relaxed);
                return Accepted::Refused;
            }
        };
        let id = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            (self.conns.len() - 1) as ConnId
        });
        debug_assert_eq!(id, slot);
        let sess = match tls {
            (h, Some(exporter)) => Session::with_exporter(h, exporter, self.session.clone(), now),
            (h, None) => Session::new(h, self.session.clone(), now),
        };
        self.conns[id as usize] = Some(Conn {
            sess,
            peer,
            generation,
            phase: Phase::Handshake,
            closing_since: None,
            dirty: false,
            dgram: None,
            cert_sha256: None,
        });
        self.stats.conns_active.fetch_add(1, Relaxed);
        self.stats
            .handshakes_active
            .store(u64::from(self.shared.handshakes()), Relaxed);
        Accepted::Conn(id)
    }

    /// Reads connection `id`: `receive` hands what its socket has into its
    /// session (at most a budget of bytes) and says whether more may be
    /// waiting, or fails (logged; the session closes); packets that may
    /// enter the kernel go to `deliver`. Returns true if more may be
    /// waiting (read again next turn).
    pub fn read<E: Display>(
        &mut self,
        id: ConnId,
        now: Instant,
        receive: impl FnOnce(&mut Session) -> Result<bool, E>,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        if c.phase == Phase::Closing {
            return false;
        }
        let res = receive(&mut c.sess);
        let more = match &res {
            Ok(more) => *more,
            Err(_) => false,
        };
        // The TLS handshake completes while receiving; the session's close
        // is read from it (`after_io`), its HELLO from `poll_packet`.
        let mut authenticated = false;
        let mut controls = [None; crate::tunnel::CONTROL_EVENTS];
        let mut n_controls = 0;
        while let Some(ev) = c.sess.poll_event() {
            match ev {
                Event::Authenticated { .. } => authenticated = true,
                Event::Datagram(ctl) => {
                    if let Some(slot) = controls.get_mut(n_controls) {
                        *slot = Some(ctl);
                        n_controls += 1;
                    }
                }
                _ => {}
            }
        }
        if authenticated && c.phase == Phase::Handshake && !c.sess.is_closed() {
            self.authenticate(id, now);
        }
        for ctl in controls.into_iter().flatten() {
            self.datagram_control(id, ctl, now);
        }
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return false;
        };
        if let Phase::Tunnel(gw) = c.phase {
            let t = TunnelRef {
                slot: id,
                generation: c.generation,
                gateway: gw,
            };
            let (mut ok, mut bytes) = (0u64, 0u64);
            let mut refused = [0u64; 4];
            let mut quota = 0u64;
            while let Some(pkt) = c.sess.poll_packet() {
                match self.router.inbound(t, pkt) {
                    Ok(learnt) => {
                        if learnt == Learnt::OverQuota {
                            quota += 1;
                        }
                        ok += 1;
                        bytes += pkt.len() as u64;
                        deliver(pkt);
                    }
                    Err(r) => refused[r as usize] += 1,
                }
            }
            self.count_inbound(gw, (ok, bytes, quota), &refused);
            // The packets' count goes up once written: the driver adds it
            // (a write may fail).
        } else {
            // No packets before authentication (the session holds them
            // back until HELLO, which comes after): nothing to drain but
            // control frames.
            while c.sess.poll_packet().is_some() {}
        }
        // Control frames are parsed as the packets are drained: the
        // datagram transport's OFFER and USE that came with this read are
        // answered now, not at the gateway's next read.
        let mut controls = [None; crate::tunnel::CONTROL_EVENTS];
        let mut n_controls = 0;
        if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) {
            while let Some(ev) = c.sess.poll_event() {
                if let Event::Datagram(ctl) = ev
                    && let Some(slot) = controls.get_mut(n_controls)
                {
                    *slot = Some(ctl);
                    n_controls += 1;
                }
            }
        }
        for ctl in controls.into_iter().flatten() {
            self.datagram_control(id, ctl, now);
        }
        if let Err(e) = &res
            && let Some(c) = self.conn(id)
            && !c.sess.is_closed()
        {
            log::debug!("connection from {}: {e}", c.peer);
        }
        self.after_io(id, now);
        more
    }

    /// Counts what a batch of a tunnel's packets did (`ok`, `bytes`,
    /// `quota`) and why others were refused.
    fn count_inbound(
        &self,
        gw: GatewayId,
        (ok, bytes, quota): (u64, u64, u64),
        refused: &[u64; 4],
    ) {
        let s = &self.stats;
        s.to_kernel_bytes.fetch_add(bytes, Relaxed);
        s.drop_malformed
            .fetch_add(refused[Refused::Malformed as usize], Relaxed);
        s.drop_spoofed
            .fetch_add(refused[Refused::Spoofed as usize], Relaxed);
        s.drop_to_gateway
            .fetch_add(refused[Refused::ToGateway as usize], Relaxed);
        s.drop_reserved
            .fetch_add(refused[Refused::Reserved as usize], Relaxed);
        s.route_quota.fetch_add(quota, Relaxed);
        s.routes.store(self.router.routes() as u64, Relaxed);
        if let Some(g) = s.gateways.get(usize::from(gw)) {
            g.spoofed
                .fetch_add(refused[Refused::Spoofed as usize], Relaxed);
            g.packets.fetch_add(ok, Relaxed);
            g.routes
                .store(u64::from(self.router.gateway_routes(gw)), Relaxed);
        }
    }

    /// A datagram-transport control frame from tunnel `id`'s gateway: an
    /// offer is answered (accepted with a receiver id and the port, or
    /// refused with port 0); `DATAGRAM_USE` picks how its packets go.
    fn datagram_control(&mut self, id: ConnId, ctl: DatagramControl, now: Instant) {
        match ctl {
            DatagramControl::Offer(offer) => self.datagram_offer(id, offer, now),
            DatagramControl::Use(on) => {
                if let Some(d) = self.conn_mut(id).and_then(|c| c.dgram.as_mut()) {
                    d.use_udp = on;
                }
            }
            // The edge offers nothing: an ACCEPT from a gateway is ignored.
            DatagramControl::Accept(_) => {}
        }
    }

    fn datagram_offer(&mut self, id: ConnId, offer: DatagramSetup, now: Instant) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if !matches!(c.phase, Phase::Tunnel(_)) || c.dgram.is_some() {
            return;
        }
        let generation = c.generation;
        // Records as large as one datagram carries to this gateway: its
        // datagrams come from the family its tunnel does (an IPv4
        // gateway's inner MTU is 1438, which 1452 bytes of record would
        // not carry: full-size replies went by TLS).
        let max_datagram = if c.peer.ip().to_canonical().is_ipv4() {
            crate::datagram::MAX_DATAGRAM_V4
        } else {
            crate::datagram::MAX_DATAGRAM_V6
        };
        let mut answer = DatagramSetup {
            receiver_id: 0,
            port: 0,
        };
        let keys = match (self.datagram_port, offer.receiver_id) {
            (Some(_), 1..) => c.sess.take_datagram_keys().and_then(Result::ok),
            _ => None,
        };
        if let (Some(keys), Some(port)) = (keys, self.datagram_port) {
            let rid = self.new_receiver_id();
            let session = rid.and_then(|rid| {
                let cfg = DatagramConfig {
                    max_datagram,
                    ..self.dgram_cfg.clone()
                };
                DatagramSession::new(keys, rid, offer.receiver_id, cfg, now).ok()
            });
            if let (Some(rid), Some(session)) = (rid, session)
                && self.receivers.insert(rid, (id, generation)).is_ok()
            {
                answer = DatagramSetup {
                    receiver_id: rid,
                    port,
                };
                if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) {
                    c.dgram = Some(Box::new(Datagrams {
                        session,
                        peer: None,
                        use_udp: false,
                        dirty: false,
                    }));
                }
                self.stats.datagram_sessions.fetch_add(1, Relaxed);
            }
        }
        if answer.port == 0 {
            self.stats.datagram_refused.fetch_add(1, Relaxed);
        }
        if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) {
            let _ = c
                .sess
                .send_datagram_control(&answer.frame(FrameType::DatagramAccept));
        }
        self.after_io(id, now);
    }

    /// A receiver id not in use, that the kernel steers to this worker
    /// (`id % workers == worker`); `None` after a few tries (a table that
    /// full refuses the offer).
    fn new_receiver_id(&mut self) -> Option<u32> {
        for _ in 0..16 {
            let mut x = self.id_state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.id_state = x;
            // Ids are `k * workers + worker`, with `k` below
            // `u32::MAX / workers`: no overflow for any worker count.
            let k = u32::try_from(x >> 32).unwrap_or(1) % (u32::MAX / self.workers);
            let w = u32::from(self.worker) % self.workers;
            let id = k * self.workers + w;
            if id != 0 && self.receivers.get(id).is_none() {
                return Some(id);
            }
        }
        None
    }

    /// A datagram received from `from` on the datagram transport's
    /// socket: routed by its receiver id to its tunnel, opened in place,
    /// each packet through the same checks as the tunnel's
    /// ([`Router::inbound`]) to `deliver`. If it is the newest the session
    /// has authenticated, `from` becomes the gateway's datagram address
    /// (NAT rebinding). Echo requests are answered
    /// ([`Core::poll_datagram_transmit`]).
    ///
    /// # Errors
    /// Why it was dropped (counted here, by reason).
    pub fn datagram(
        &mut self,
        from: SocketAddr,
        d: &mut [u8],
        now: Instant,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DropReason> {
        self.dg_tally.rx += 1;
        let r = self.datagram_in(from, d, now, deliver);
        if let Err(reason) = r
            && let Some(c) = self.dg_tally.drops.get_mut(
                DropReason::ALL
                    .iter()
                    .position(|x| *x == reason)
                    .unwrap_or(0),
            )
        {
            *c += 1;
        }
        r
    }

    /// Publishes the datagram counters gathered since the last call (the
    /// per-datagram paths count in plain integers; the driver calls this
    /// once per loop turn, so no atomic operation is paid per datagram).
    pub fn flush_datagram_counts(&mut self) {
        let t = std::mem::take(&mut self.dg_tally);
        let s = &self.stats;
        let add = |a: &std::sync::atomic::AtomicU64, v: u64| {
            if v != 0 {
                a.fetch_add(v, Relaxed);
            }
        };
        add(&s.datagrams_rx, t.rx);
        add(&s.datagrams_tx, t.tx);
        for (a, v) in s.datagram_drops.iter().zip(t.drops) {
            add(a, v);
        }
        if let Some((gw, counts, refused)) = t.inbound {
            self.count_inbound(gw, counts, &refused);
        }
    }

    fn datagram_in(
        &mut self,
        from: SocketAddr,
        d: &mut [u8],
        now: Instant,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DropReason> {
        let (_, &mut (id, generation)) = self.receivers.route(d)?;
        let Some(c) = self
            .conns
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation)
        else {
            return Err(DropReason::UnknownReceiver);
        };
        let Phase::Tunnel(gw) = c.phase else {
            return Err(DropReason::Closed);
        };
        let Some(dg) = c.dgram.as_mut() else {
            return Err(DropReason::UnknownReceiver);
        };
        let opened = dg.session.open(d, now)?;
        // Never a reply address the edge cannot send to (port 0, an
        // unspecified, multicast or broadcast address): one refused
        // destination must not be adopted, even from an authenticated
        // datagram.
        if opened.newest && dg.peer != Some(from) && sendable(from) {
            if dg.peer.is_some() {
                self.stats.datagram_rebinds.fetch_add(1, Relaxed);
            }
            dg.peer = Some(from);
        }
        if dg.session.wants_transmit() && !dg.dirty {
            dg.dirty = true;
            self.dgram_dirty.push(id);
        }
        let t = TunnelRef {
            slot: id,
            generation,
            gateway: gw,
        };
        let (mut ok, mut bytes, mut quota) = (0u64, 0u64, 0u64);
        let mut refused = [0u64; 4];
        for pkt in opened.packets(d) {
            match self.router.inbound(t, pkt) {
                Ok(learnt) => {
                    if learnt == Learnt::OverQuota {
                        quota += 1;
                    }
                    ok += 1;
                    bytes += pkt.len() as u64;
                    deliver(pkt);
                }
                Err(r) => refused[r as usize] += 1,
            }
        }
        // Added up per gateway until the turn's flush
        // (`Core::flush_datagram_counts`).
        if self.dg_tally.inbound.is_some_and(|(g, ..)| g != gw)
            && let Some((g, counts, r)) = self.dg_tally.inbound.take()
        {
            self.count_inbound(g, counts, &r);
        }
        let (_, sums, by_reason) = self.dg_tally.inbound.get_or_insert((gw, (0, 0, 0), [0; 4]));
        sums.0 += ok;
        sums.1 += bytes;
        sums.2 += quota;
        for (sum, n) in by_reason.iter_mut().zip(refused) {
            *sum += n;
        }
        Ok(())
    }

    /// Sends what datagram sessions want sent (echo replies, the empty
    /// record that acknowledges a new key) into `sink`.
    pub fn poll_datagram_transmit(&mut self, now: Instant, sink: &mut dyn DatagramSink) {
        while let Some(id) = self.dgram_dirty.pop() {
            let Some(dg) = self
                .conns
                .get_mut(id as usize)
                .and_then(Option::as_mut)
                .and_then(|c| c.dgram.as_mut())
            else {
                continue;
            };
            dg.dirty = false;
            let Some(to) = dg.peer else { continue };
            while dg.session.wants_transmit() {
                let Some(slot) = sink.slot() else { break };
                match dg.session.poll_transmit(now, slot) {
                    Ok(Some(n)) => {
                        sink.commit(n, to);
                        self.dg_tally.tx += 1;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    /// The TLS handshake of `id` is done: bind it to a gateway, within
    /// the tunnel caps, or refuse it.
    fn authenticate(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.phase != Phase::Handshake {
            return;
        }
        self.shared.end_handshake(c.generation);
        let verdict = match self.ids.identify(c.sess.peer_certificates()) {
            Err(e) => Err(("unknown_gateway", e.to_string())),
            Ok(g) => match certificate_sha256(c.sess.peer_certificates()) {
                Some(digest) if self.shared.certificate_allowed(g, &digest) => {
                    match self.shared.take_tunnel(g) {
                        Ok(()) => Ok((g, digest)),
                        Err(TunnelCap::Edge) => Err((
                            "tunnel_cap",
                            format!(
                                "gateway `{}`: the edge holds edge.max_tunnels tunnels",
                                self.ids.name(g)
                            ),
                        )),
                        Err(TunnelCap::Gateway(max)) => Err((
                            "tunnel_cap",
                            format!(
                                "gateway `{}` holds its max_tunnels ({max})",
                                self.ids.name(g)
                            ),
                        )),
                    }
                }
                _ => Err((
                    "revoked",
                    format!(
                        "gateway `{}`: certificate revoked or not issued by the controller",
                        self.ids.name(g)
                    ),
                )),
            },
        };
        match verdict {
            Ok((g, digest)) => {
                c.phase = Phase::Tunnel(g);
                c.cert_sha256 = Some(digest);
                self.tunnels += 1;
                self.stats.tunnels.store(u64::from(self.tunnels), Relaxed);
                if let Some(s) = self.stats.gateways.get(usize::from(g)) {
                    s.tunnels.fetch_add(1, Relaxed);
                }
                if let Some(n) = self.logs.tunnel.allow(now) {
                    log::info!(
                        "tunnel from {}: gateway `{}` authenticated{}",
                        c.peer,
                        self.ids.name(g),
                        suppressed_note(n)
                    );
                } else {
                    self.stats.logs_suppressed.fetch_add(1, Relaxed);
                }
            }
            Err((kind, why)) => {
                match kind {
                    "unknown_gateway" => &self.stats.refused_unknown_gateway,
                    "revoked" => &self.stats.refused_revoked,
                    _ => &self.stats.refused_tunnel_cap,
                }
                .fetch_add(1, Relaxed);
                c.sess.close(CLOSE_REFUSED, "refused by the edge");
                c.phase = Phase::Closing;
                c.closing_since = Some(now);
                if let Some(n) = self.logs.refused.allow(now) {
                    log::warn!(
                        "tunnel from {} refused: {why}{}",
                        c.peer,
                        suppressed_note(n)
                    );
                } else {
                    self.stats.logs_suppressed.fetch_add(1, Relaxed);
                }
            }
        }
        self.stats
            .handshakes_active
            .store(u64::from(self.shared.handshakes()), Relaxed);
    }

    /// After reading, writing or a timer: queue the connection for writing
    /// if it has bytes, finish it if it is closed and done.
    fn after_io(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.sess.is_closed() && c.phase != Phase::Closing {
            self.closing(id, now);
        }
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.phase == Phase::Closing && !c.sess.wants_write() {
            self.finish(id, now);
            return;
        }
        if c.sess.wants_write() && !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Connection `id`'s session has closed: stop counting it as a
    /// handshake or a tunnel; it writes its last bytes, then goes.
    fn closing(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let phase = std::mem::replace(&mut c.phase, Phase::Closing);
        c.closing_since = Some(now);
        let reason = c.sess.close_reason().cloned();
        match phase {
            Phase::Handshake => {
                self.shared.end_handshake(c.generation);
                if reason == Some(CloseReason::HandshakeTimeout) {
                    self.stats.handshakes_timed_out.fetch_add(1, Relaxed);
                } else {
                    self.stats.handshakes_failed.fetch_add(1, Relaxed);
                }
                if let Some(n) = self.logs.handshake.allow(now) {
                    log::info!(
                        "connection from {}: handshake ended: {}{}",
                        c.peer,
                        reason.map_or_else(|| "closed".into(), |r| describe(&r)),
                        suppressed_note(n)
                    );
                } else {
                    self.stats.logs_suppressed.fetch_add(1, Relaxed);
                }
                self.stats
                    .handshakes_active
                    .store(u64::from(self.shared.handshakes()), Relaxed);
            }
            Phase::Tunnel(g) => {
                self.tunnels -= 1;
                self.shared.release_tunnel(g);
                self.stats.tunnels.store(u64::from(self.tunnels), Relaxed);
                if let Some(s) = self.stats.gateways.get(usize::from(g)) {
                    s.tunnels.fetch_sub(1, Relaxed);
                }
                self.router.tunnel_closed();
                if reason == Some(CloseReason::Stalled) {
                    self.stats.conns_stalled.fetch_add(1, Relaxed);
                }
                if let Some(n) = self.logs.tunnel.allow(now) {
                    log::info!(
                        "tunnel from {} (gateway `{}`, says `{}`) closed: {}{}",
                        c.peer,
                        self.ids.name(g),
                        c.sess.peer_name(),
                        reason.map_or_else(|| "closed".into(), |r| describe(&r)),
                        suppressed_note(n)
                    );
                } else {
                    self.stats.logs_suppressed.fetch_add(1, Relaxed);
                }
            }
            Phase::Closing => {}
        }
    }

    /// Connection `id` is gone: its slot goes to [`Core::poll_closed`].
    fn finish(&mut self, id: ConnId, now: Instant) {
        if self.conn(id).is_some_and(|c| c.phase != Phase::Closing) {
            self.closing(id, now);
        }
        if let Some(slot) = self.conns.get_mut(id as usize)
            && let Some(c) = slot.take()
        {
            if let Some(d) = c.dgram {
                self.receivers.remove(d.session.local_id());
                self.stats.datagram_sessions.fetch_sub(1, Relaxed);
            }
            self.closed.push(id);
            self.stats.conns_active.fetch_sub(1, Relaxed);
            self.stats.conns_closed.fetch_add(1, Relaxed);
        }
    }

    /// A packet read from the TUN device: into the tunnel of its
    /// destination's route, or, if another worker holds the route and
    /// this one none (the kernel put the reply on this worker's queue),
    /// [`Sent::HandOff`] to that worker.
    ///
    /// # Errors
    /// Why it was dropped (counted by the caller).
    #[inline]
    pub fn tun_packet(&mut self, pkt: &[u8]) -> Result<Sent, TunDrop> {
        self.tun_packet_to(pkt, true, &mut NoDatagrams, None)
    }

    /// [`Core::tun_packet`], with the datagram transport: a packet for a
    /// tunnel whose gateway asked for datagrams (and whose address is
    /// known) is sealed into `sink` ([`Sent::Datagram`]); one too large
    /// for a datagram, or with the sink giving no room, takes the TLS
    /// stream.
    ///
    /// # Errors
    /// Why it was dropped (counted by the caller).
    #[inline]
    pub fn tun_packet_via(
        &mut self,
        pkt: &[u8],
        now: Instant,
        sink: &mut dyn DatagramSink,
    ) -> Result<Sent, TunDrop> {
        self.tun_packet_to(pkt, true, sink, Some(now))
    }

    /// [`Core::handed_packet`] with the datagram transport (see
    /// [`Core::tun_packet_via`]).
    ///
    /// # Errors
    /// Why it was dropped (counted by the caller).
    pub fn handed_packet_via(
        &mut self,
        pkt: &[u8],
        now: Instant,
        sink: &mut dyn DatagramSink,
    ) -> Result<(), TunDrop> {
        match self.tun_packet_to(pkt, false, sink, Some(now))? {
            Sent::Queued | Sent::Datagram => Ok(()),
            Sent::HandOff(_) => Err(TunDrop::NoRoute),
        }
    }

    /// A packet another worker handed over ([`Sent::HandOff`]): into this
    /// worker's tunnel, or dropped (never handed on again: the route moved
    /// meanwhile, or its tunnel went).
    ///
    /// # Errors
    /// Why it was dropped (counted by the caller).
    pub fn handed_packet(&mut self, pkt: &[u8]) -> Result<(), TunDrop> {
        match self.tun_packet_to(pkt, false, &mut NoDatagrams, None)? {
            Sent::Queued | Sent::Datagram => Ok(()),
            Sent::HandOff(_) => Err(TunDrop::NoRoute),
        }
    }

    #[inline]
    fn tun_packet_to(
        &mut self,
        pkt: &[u8],
        hand_off: bool,
        sink: &mut dyn DatagramSink,
        now: Option<Instant>,
    ) -> Result<Sent, TunDrop> {
        let p = ip::Packet::new_checked(pkt).map_err(|_| TunDrop::Malformed)?;
        let dst = p.dst();
        let here = self.router.outbound(dst).and_then(|t| {
            self.conns
                .get_mut(t.slot as usize)
                .and_then(Option::as_mut)
                .filter(|c| c.generation == t.generation && c.phase == Phase::Tunnel(t.gateway))
                .map(|c| (t, c))
        });
        let Some((t, c)) = here else {
            return match self.router.elsewhere(dst) {
                Some(w) if hand_off => Ok(Sent::HandOff(w)),
                _ => Err(TunDrop::NoRoute),
            };
        };
        if let (Some(dg), Some(now)) = (c.dgram.as_mut(), now)
            && dg.use_udp
            && let Some(to) = dg.peer
            && let Some(slot) = sink.slot()
        {
            // Too large for a datagram, or the key is spent: the TLS
            // stream carries it.
            if let Ok(sealed) = dg.session.seal(&[p.as_bytes()], now, slot) {
                sink.commit(sealed.len, to);
                self.dg_tally.tx += 1;
                return Ok(Sent::Datagram);
            }
        }
        match c.sess.send_packet(p.as_bytes()) {
            Ok(()) => {
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(t.slot);
                }
                Ok(Sent::Queued)
            }
            Err(SendError::Backpressure | SendError::NotEstablished | SendError::TooLarge) => {
                Err(TunDrop::Backpressure)
            }
        }
    }

    /// A handshake of another worker that stopped being counted to make
    /// room for one accepted here: hand it to that worker's
    /// [`Core::evict`].
    pub fn poll_eviction(&mut self) -> Option<Pending> {
        self.evictions.pop()
    }

    /// The admission books evicted this worker's handshake in slot `id`
    /// with `generation` (to make room for a connection accepted here or
    /// on another worker): it is closed, unless it has authenticated or
    /// gone meanwhile.
    pub fn evict(&mut self, id: ConnId, generation: u32, now: Instant) {
        if self
            .conn(id)
            .is_some_and(|c| c.generation == generation && c.phase == Phase::Handshake)
        {
            self.finish(id, now);
        }
    }

    /// The next connection with frames or bytes to send: [`Core::write`]
    /// it.
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.conn_mut(id) {
                c.dirty = false;
                return Some(id);
            }
        }
        None
    }

    /// End of a batch for connection `id`, or its socket became writable:
    /// `flush` is the driver's flush policy over its session (the open
    /// record sealed, then written until done or the socket is full); a
    /// failure finishes the connection.
    pub fn write<T, E: Display>(
        &mut self,
        id: ConnId,
        now: Instant,
        flush: impl FnOnce(&mut Session) -> Result<T, E>,
    ) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        if let Err(e) = flush(&mut c.sess) {
            log::debug!("connection from {}: write: {e}", c.peer);
            self.finish(id, now);
            return;
        }
        // Not `after_io`: the socket is full; a writable event calls again.
        if c.phase == Phase::Closing && !c.sess.wants_write() {
            self.finish(id, now);
        }
    }

    /// When [`Core::handle_timeout`] is next due: a tick away at most,
    /// idle or not (so a revocation of the controller's closes its
    /// tunnels within a second, see [`Shared::set_allowed_certificates`]).
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Session timers, connections done lingering, the route sweep, the
    /// tunnels the controller's allow-list no longer allows.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let epoch = self.shared.certificates_epoch();
        if epoch != self.certificates_epoch {
            self.certificates_epoch = epoch;
            self.close_revoked(now);
        }
        for id in 0..self.conns.len() as ConnId {
            let Some(c) = self.conn_mut(id) else {
                continue;
            };
            if c.phase == Phase::Closing {
                if c.closing_since.is_some_and(|t| now >= t + LINGER) {
                    self.finish(id, now);
                }
                continue;
            }
            if c.sess.poll_timeout().is_some_and(|t| t <= now) {
                c.sess.handle_timeout(now);
                self.after_io(id, now);
            }
        }
        if self.router.sweep_due() {
            let conns = &self.conns;
            let removed = self.router.sweep(SWEEP_SLOTS, |t| {
                conns
                    .get(t.slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| {
                        c.generation == t.generation && c.phase == Phase::Tunnel(t.gateway)
                    })
            });
            if removed > 0 {
                self.stats
                    .routes
                    .store(self.router.routes() as u64, Relaxed);
                for (i, s) in self.stats.gateways.iter().enumerate() {
                    let g = GatewayId::try_from(i).unwrap_or(GatewayId::MAX);
                    s.routes
                        .store(u64::from(self.router.gateway_routes(g)), Relaxed);
                }
            }
        }
    }

    /// The controller's allow-list changed: closes this worker's tunnels
    /// whose certificate it no longer allows (CLOSE sent, counts, routes
    /// and the datagram session released as for any close). O(slots), on
    /// an epoch change only.
    fn close_revoked(&mut self, now: Instant) {
        for id in 0..self.conns.len() as ConnId {
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Phase::Tunnel(g) = c.phase else {
                continue;
            };
            let allowed = match &c.cert_sha256 {
                Some(digest) => self.shared.certificate_allowed(g, digest),
                // Not expected (every tunnel has its digest): allowed only
                // while no list is set.
                None => !self.shared.has_allowed_certificates(),
            };
            if allowed {
                continue;
            }
            c.sess.close(CLOSE_REFUSED, "certificate revoked");
            self.stats.tunnels_revoked.fetch_add(1, Relaxed);
            if let Some(n) = self.logs.refused.allow(now) {
                log::warn!(
                    "tunnel from {} (gateway `{}`) closed: certificate revoked or not issued by the controller{}",
                    c.peer,
                    self.ids.name(g),
                    suppressed_note(n)
                );
            } else {
                self.stats.logs_suppressed.fetch_add(1, Relaxed);
            }
            // The session is closed: `closing` stops counting the tunnel
            // and its routes; it goes once its CLOSE is written.
            self.after_io(id, now);
        }
    }

    /// A slot whose connection is gone: close its socket now.
    pub fn poll_closed(&mut self) -> Option<ConnId> {
        let id = self.closed.pop()?;
        self.free.push(id);
        Some(id)
    }

    /// Closes every connection (stop): CLOSE frames queued; what the
    /// sockets take is written by the driver, then all go.
    pub fn close_all(&mut self, now: Instant) {
        for id in 0..self.conns.len() as ConnId {
            if let Some(c) = self.conn_mut(id) {
                c.sess.close(CloseCode::Normal, "edge stopping");
                self.after_io(id, now);
            }
        }
    }
}

/// Why a packet from the TUN device was not sent into a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunDrop {
    /// Not an IP packet.
    Malformed,
    /// No live tunnel carried traffic from its destination.
    NoRoute,
    /// The tunnel's send buffer is full (or it cannot take it).
    Backpressure,
}

/// SHA-256 of the DER of a peer's end-entity certificate (the first of
/// its chain): what the controller's allow-list names it by.
fn certificate_sha256(chain: &[rustls::pki_types::CertificateDer<'_>]) -> Option<[u8; 32]> {
    let der = chain.first()?;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    hash.as_ref().try_into().ok()
}

/// A close reason for logs (escaped: the peer's words are in it).
fn describe(r: &CloseReason) -> String {
    printable(&format!("{r:?}"), 64)
}

#[cfg(test)]
#[path = "review_h24.rs"]
mod review_h24;

#[cfg(test)]
#[path = "allowlist_tests.rs"]
mod allowlist_tests;
