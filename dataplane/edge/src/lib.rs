//! `sluice edge`: terminates gateways' tunnels and forwards their packets.
//!
//! One mio event loop (this module, the driver) owns the TCP listener, the
//! TUN device and every connection's socket, reads and writes them with
//! the tunnel driver (`sluice_runtime::driver`), and renders the counters
//! ([`render_stats`]); everything else is in the sans-IO [`Core`]
//! (`sluice_core::edge`): admission of connections before authentication,
//! their sessions, which configured gateway a certificate is, and the
//! per-packet decisions (`sluice_core::edge::router`).
//!
//! Gateways are isolated: each `[[edge.gateway]]` owns its prefixes. A
//! packet from a tunnel enters the kernel only if its source is one of that
//! gateway's addresses (else it is dropped and counted `spoofed`) and its
//! destination is neither a gateway's LAN nor reserved (link-local,
//! metadata, `edge.management`); its source then becomes a reply route into
//! that tunnel, so a reply never goes to a tunnel whose gateway does not
//! own the address. The kernel forwards with source NAT to the edge's own
//! address; the edge's nftables table filters the TUN device both ways
//! ([`netfilter`]).
//!
//! Hostile peers are bounded: connections in their handshake are capped
//! (globally and per source prefix) and have an absolute deadline;
//! sessions allocate their buffers once authenticated; each gateway has a
//! tunnel cap and a reply-route quota; each loop turn reads at most a
//! budget from each connection and does at most a few connections'
//! handshake work, so no peer starves the others; peers that stop reading
//! are dropped. The descriptor limit is raised at start (and the caps
//! lowered to fit it if it cannot be); `accept` running out of descriptors
//! backs off without spinning and sheds the queued connection, so the
//! listener never stays stuck. Logs about peers are rate-limited.
//!
//! With `tun_offload` (the default) the TUN device takes virtio-net
//! headers and the packets of each batch read from a tunnel go through
//! [`crate::gro`]: a flow's consecutive TCP segments (and UDP datagrams)
//! become one GSO packet, so the kernel forwards and translates one packet
//! where there were dozens. Replies are read one packet at a time.
//!
//! With `manage_network` (the default) the edge configures the kernel
//! itself ([`netfilter`]); the table is removed on exit.
//!
//! A fatal error stops [`Edge::run`] with an error (the process exits
//! non-zero): the poller failing, or the TUN device failing to read (it
//! was deleted): an edge that can no longer forward must not keep its
//! tunnels up.
//!
//! What this crate must not do: depend on eBPF or the gateway (it builds
//! and tests with the stable toolchain alone), or use `unsafe` (its TUN
//! device and memory advice are `sluice-sys`'s safe wrappers).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub(crate) mod netfilter;
mod stats;

use std::{
    collections::VecDeque,
    fs::File,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
    unix::SourceFd,
};

pub use self::stats::render as render_stats;
use sluice_config as config;
use sluice_core::edge::{
    Accepted, ConnId, Core, TunDrop, ratelog,
    router::{GatewayId, RouterError},
    stats::EdgeStats,
};
use sluice_core::{gro, net};
use sluice_runtime::{driver, host, metrics, pki};
use sluice_sys as sys;

use crate::{
    config::{EdgeConfig, EdgeLimits},
    gro::{Coalescer, VNET_HDR_LEN, VnetHdr},
    sys::{rlimit, tun::Tun},
};

const LISTENER: Token = Token(0);
const TUN: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Packets read from the TUN device per loop turn before other work.
const TUN_BUDGET: usize = 256;
/// Bytes read per loop turn from one gateway's tunnels together (shared
/// by those ready, each at least [`MIN_READ`]), or from one connection
/// before authentication: a busy gateway gets this much, then every other
/// gets its turn, however many tunnels it opens.
const READ_BUDGET: usize = 128 * 1024;
/// The least a ready tunnel is read per turn (a gateway with many ready
/// tunnels gets at most `max_tunnels` times this).
const MIN_READ: usize = 4 * 1024;
/// Connections whose handshake is served per loop turn (a `ClientHello`
/// costs a key exchange and a signature): handshakes cannot starve data.
const HANDSHAKES_PER_TURN: usize = 8;
/// Connections accepted per loop turn.
const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses when the process is out of descriptors or
/// memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors kept for everything but connections (listener, TUN,
/// poller, metrics, logs, host commands).
const FD_RESERVE: u64 = 128;

/// Errors that stop the edge from starting.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// A host command (ip, nft) failed.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// The gateways' prefixes do not fit the edge's table.
    #[error("edge.gateway prefixes: {0}")]
    Prefixes(#[source] RouterError),
    /// A socket, the TUN device or the poller failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn ioerr(what: impl Into<String>) -> impl FnOnce(io::Error) -> EdgeError {
    let what = what.into();
    move |source| EdgeError::Io { what, source }
}

/// The caps in `limits` lowered so that connections never need more
/// descriptors than `nofile` leaves after [`FD_RESERVE`]: a quarter for
/// handshakes at most, the rest for tunnels.
pub(crate) fn fit_limits(limits: EdgeLimits, nofile: u64) -> EdgeLimits {
    let usable = nofile.saturating_sub(FD_RESERVE).max(8);
    let usable = u32::try_from(usable).unwrap_or(u32::MAX);
    let max_handshakes = limits.max_handshakes.min((usable / 4).max(4));
    EdgeLimits {
        max_handshakes,
        max_handshakes_per_prefix: limits.max_handshakes_per_prefix.min(max_handshakes),
        max_tunnels: limits
            .max_tunnels
            .min(usable.saturating_sub(max_handshakes).max(4)),
        ..limits
    }
}

/// A connection's socket, and whether it waits in the ready queue.
#[derive(Debug)]
struct Sock {
    stream: TcpStream,
    queued: bool,
}

/// The running edge.
pub struct Edge {
    cfg: EdgeConfig,
    poll: Poll,
    listener: TcpListener,
    tun: Tun,
    /// Present when the TUN device takes virtio-net headers.
    gro: Option<Box<Coalescer>>,
    core: Core,
    socks: Vec<Option<Sock>>,
    /// Connections with bytes to read (edge-triggered: they stay until a
    /// read stops short of its budget).
    ready: VecDeque<ConnId>,
    /// Per gateway, its tunnels in `ready` this turn (zero between turns).
    ready_tunnels: Vec<u32>,
    /// The gateways counted in `ready_tunnels` this turn.
    ready_gateways: Vec<GatewayId>,
    /// A descriptor kept in reserve: released to accept (and shed) one
    /// connection when `accept` says the process has none left.
    spare: Option<File>,
    _table: Option<netfilter::TableGuard>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("listen", &self.cfg.listen)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// Raises the descriptor limit, loads TLS material, opens the TUN
    /// device, configures the kernel (if `manage_network`) and binds the
    /// listener.
    pub fn new(cfg: EdgeConfig) -> Result<Self, EdgeError> {
        let l = cfg.limits;
        let want = u64::from(l.max_handshakes) + u64::from(l.max_tunnels) + FD_RESERVE;
        let nofile = rlimit::raise_nofile(want).map_err(ioerr("reading RLIMIT_NOFILE"))?;
        let limits = fit_limits(l, nofile);
        if limits != l {
            log::warn!(
                "descriptor limit {nofile} (wanted {want}): at most {} handshakes and {} tunnels",
                limits.max_handshakes,
                limits.max_tunnels
            );
        }
        let tls = pki::server_config_with_crl(&cfg.ca, &cfg.cert, &cfg.key, cfg.crl.as_deref())?;
        let core = Core::new(
            &cfg.core_settings(),
            limits,
            tls,
            driver::aead(),
            &sys::mem::HugePages,
            Instant::now(),
        )
        .map_err(EdgeError::Prefixes)?;
        let tun = match Tun::open_with(&cfg.tun, cfg.tun_offload) {
            Err(e) if cfg.tun_offload => {
                log::warn!(
                    "TUN device {} with virtio-net headers: {e}; writing one packet at a time",
                    cfg.tun
                );
                Tun::open(&cfg.tun)
            }
            r => r,
        }
        .map_err(ioerr(format!("opening TUN device {}", cfg.tun)))?;
        // UDP GSO packets from user space need Linux 6.2; TCP ones work on
        // every kernel with IFF_VNET_HDR.
        let gro = tun
            .has_vnet_hdr()
            .then(|| Box::new(Coalescer::new(host::kernel_at_least(6, 2))));
        let table = if cfg.manage_network {
            Some(netfilter::setup(&cfg, tun.name())?)
        } else {
            log::warn!(
                "manage_network = false: routes, NAT and the TUN filter (see netfilter in the README) are yours to set up"
            );
            None
        };
        let poll = Poll::new().map_err(ioerr("creating poller"))?;
        let mut listener =
            TcpListener::bind(cfg.listen).map_err(ioerr(format!("listening on {}", cfg.listen)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ioerr("registering listener"))?;
        poll.registry()
            .register(
                &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&tun)),
                TUN,
                Interest::READABLE,
            )
            .map_err(ioerr("registering TUN"))?;
        let spare = File::open("/dev/null").ok();
        log::info!(
            "edge {} listening on {}, TUN {} (mtu {}), gateways {}; descriptors {nofile}, handshakes at most {} ({} per prefix), tunnels at most {}",
            cfg.name,
            cfg.listen,
            tun.name(),
            cfg.tun_mtu,
            cfg.gateways
                .iter()
                .map(|g| format!(
                    "{} [{}]",
                    g.name,
                    g.prefixes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .collect::<Vec<_>>()
                .join(", "),
            limits.max_handshakes,
            limits.max_handshakes_per_prefix,
            limits.max_tunnels,
        );
        let gateways = cfg.gateways.len();
        Ok(Self {
            cfg,
            poll,
            listener,
            tun,
            gro,
            core,
            socks: Vec::new(),
            ready: VecDeque::new(),
            ready_tunnels: vec![0; gateways],
            ready_gateways: Vec::new(),
            spare,
            _table: table,
        })
    }

    /// The counters (for the metrics endpoint).
    pub fn stats(&self) -> Arc<EdgeStats> {
        self.core.stats()
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), EdgeError> {
        let mut events = Events::with_capacity(1024);
        let mut tun_ready = false;
        let mut listener_ready = false;
        let mut accept_paused_until: Option<Instant> = None;
        let mut buf = vec![0u8; 65536];
        let mut accept_log = ratelog::RateLog::new(5, Duration::from_secs(10));
        while !stop.load(Relaxed) {
            let now = Instant::now();
            let accept_now = listener_ready && accept_paused_until.is_none_or(|t| now >= t);
            let timeout = if tun_ready || accept_now || !self.ready.is_empty() {
                Duration::ZERO
            } else {
                let mut at = self.core.poll_timeout();
                if listener_ready && let Some(t) = accept_paused_until {
                    at = at.min(t);
                }
                at.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(EdgeError::Io {
                        what: "poll".into(),
                        source: e,
                    });
                }
            }
            let now = Instant::now();
            for ev in &events {
                match ev.token() {
                    LISTENER => listener_ready = true,
                    TUN => tun_ready = true,
                    Token(t) => {
                        let id = (t - FIRST_CONN) as ConnId;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.enqueue(id);
                        }
                        if ev.is_writable()
                            && let Some(Some(s)) = self.socks.get_mut(id as usize)
                        {
                            self.core
                                .write(id, now, |sess| driver::flush(sess, &mut s.stream, now));
                        }
                    }
                }
            }
            if listener_ready && accept_paused_until.is_none_or(|t| now >= t) {
                accept_paused_until = None;
                match self.accept(now, &mut accept_log) {
                    AcceptTurn::Drained => listener_ready = false,
                    AcceptTurn::Budget => {}
                    AcceptTurn::Pause => accept_paused_until = Some(now + ACCEPT_BACKOFF),
                }
            }
            self.read_ready(now);
            if tun_ready {
                tun_ready = self.read_tun(&mut buf)?;
            }
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
            self.flush(now);
            self.close_finished();
        }
        // Stopping: say so to every peer, as far as the sockets take it.
        let now = Instant::now();
        self.core.close_all(now);
        self.flush(now);
        self.close_finished();
        Ok(())
    }

    fn enqueue(&mut self, id: ConnId) {
        if let Some(Some(s)) = self.socks.get_mut(id as usize)
            && !s.queued
        {
            s.queued = true;
            self.ready.push_back(id);
        }
    }

    /// Accepts up to [`ACCEPTS_PER_TURN`] connections.
    fn accept(&mut self, now: Instant, log_budget: &mut ratelog::RateLog) -> AcceptTurn {
        let stats = self.core.stats();
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut sock, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return AcceptTurn::Drained,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    let pause = match errno {
                        // Aborted by the peer, or a network error on a
                        // connection still in the queue: the next one may
                        // be fine.
                        libc::ECONNABORTED
                        | libc::EINTR
                        | libc::EPROTO
                        | libc::EPERM
                        | libc::ENETDOWN
                        | libc::ENOPROTOOPT
                        | libc::EHOSTDOWN
                        | libc::ENONET
                        | libc::EHOSTUNREACH
                        | libc::EOPNOTSUPP
                        | libc::ENETUNREACH => false,
                        libc::EMFILE | libc::ENFILE => {
                            stats.accept_no_fd.fetch_add(1, Relaxed);
                            self.shed_one();
                            true
                        }
                        _ => true,
                    };
                    if !matches!(errno, libc::EMFILE | libc::ENFILE) {
                        stats.accept_errors.fetch_add(1, Relaxed);
                    }
                    if let Some(n) = log_budget.allow(now) {
                        log::warn!(
                            "accept: {e}{}{}",
                            if pause { "; pausing 100 ms" } else { "" },
                            ratelog::suppressed_note(n)
                        );
                    } else {
                        stats.logs_suppressed.fetch_add(1, Relaxed);
                    }
                    if pause {
                        return AcceptTurn::Pause;
                    }
                    continue;
                }
            };
            let id = match self.core.accept(peer, now) {
                Accepted::Refused => continue, // dropping `sock` closes it
                Accepted::Conn(id) => id,
            };
            // Evictions free slots: close their sockets before reusing.
            self.close_finished();
            let _ = sock.set_nodelay(true);
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Token(id as usize + FIRST_CONN),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("connection from {peer}: register: {e}");
                continue;
            }
            let i = id as usize;
            if self.socks.len() <= i {
                self.socks.resize_with(i + 1, || None);
            }
            self.socks[i] = Some(Sock {
                stream: sock,
                queued: false,
            });
            // Its ClientHello may already be there (edge-triggered).
            self.enqueue(id);
        }
        AcceptTurn::Budget
    }

    /// Out of descriptors: gives the spare back, accepts and closes one
    /// queued connection (so the queue moves and its client learns at
    /// once), takes the spare again.
    fn shed_one(&mut self) {
        self.spare = None;
        if let Ok((sock, _)) = self.listener.accept() {
            drop(sock);
        }
        self.spare = File::open("/dev/null").ok();
    }

    /// Reads the connections that are ready, each gateway's tunnels
    /// together up to [`READ_BUDGET`], and at most
    /// [`HANDSHAKES_PER_TURN`] handshakes; the rest wait for the next turn.
    fn read_ready(&mut self, now: Instant) {
        let mut handshakes = HANDSHAKES_PER_TURN;
        let stats = self.core.stats();
        for &id in &self.ready {
            if let Some(g) = self.core.gateway_of(id)
                && let Some(n) = self.ready_tunnels.get_mut(usize::from(g))
            {
                if *n == 0 {
                    self.ready_gateways.push(g);
                }
                *n += 1;
            }
        }
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(Some(sock)) = self.socks.get_mut(id as usize) else {
                continue;
            };
            if self.core.is_handshaking(id) {
                if handshakes == 0 {
                    self.ready.push_back(id);
                    continue;
                }
                handshakes -= 1;
            }
            let budget = match self
                .core
                .gateway_of(id)
                .and_then(|g| self.ready_tunnels.get(usize::from(g)))
            {
                Some(&n) if n > 1 => (READ_BUDGET / n as usize).max(MIN_READ),
                _ => READ_BUDGET,
            };
            let mut writer = TunWriter {
                tun: &self.tun,
                writes: 0,
                merged: 0,
                dropped: 0,
                gso_refused: false,
            };
            let mut delivered = 0u64;
            let gro = &mut self.gro;
            let more = self.core.read(
                id,
                now,
                |sess| driver::receive(sess, &mut sock.stream, now, budget).map(|r| r.more),
                &mut |pkt| {
                    delivered += 1;
                    match gro.as_deref_mut() {
                        Some(g) => g.push(pkt, &mut |h, b| writer.write(h, b)),
                        None => writer.write_plain(pkt),
                    }
                },
            );
            // End of this connection's batch: nothing is held back.
            if let Some(g) = self.gro.as_deref_mut() {
                g.flush(&mut |h, b| writer.write(h, b));
                if writer.gso_refused {
                    log::warn!(
                        "TUN {}: the kernel refuses GSO packets; merging switched off",
                        self.tun.name()
                    );
                    g.disable();
                }
            }
            stats
                .to_kernel_packets
                .fetch_add(delivered.saturating_sub(writer.dropped), Relaxed);
            stats.drop_tun_write.fetch_add(writer.dropped, Relaxed);
            stats.tun_writes.fetch_add(writer.writes, Relaxed);
            stats.gro_merged.fetch_add(writer.merged, Relaxed);
            if let Some(Some(s)) = self.socks.get_mut(id as usize) {
                s.queued = more;
                if more {
                    self.ready.push_back(id);
                }
            }
        }
        for g in self.ready_gateways.drain(..) {
            self.ready_tunnels[usize::from(g)] = 0;
        }
    }

    /// Drains up to a budget of packets from the TUN device into tunnels.
    /// Returns true if more may be waiting.
    ///
    /// # Errors
    /// A read error other than "no packet now" or an interruption: the
    /// device is gone (deleted: `EBADFD`) or broken, and no reply can
    /// reach a tunnel any more. Running on would keep every tunnel up
    /// while nothing is forwarded; the edge stops (non-zero) instead, so
    /// its service manager restarts it and gateways see it go.
    fn read_tun(&mut self, buf: &mut [u8]) -> Result<bool, EdgeError> {
        let (mut ok, mut bytes, mut no_route, mut malformed, mut full, mut offload) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut more = true;
        let vnet = self.tun.has_vnet_hdr();
        for _ in 0..TUN_BUDGET {
            let n = match self.tun.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.count_tun_reads(ok, bytes, no_route, malformed, full, offload);
                    return Err(EdgeError::Io {
                        what: format!("reading TUN device {}", self.tun.name()),
                        source: e,
                    });
                }
            };
            let pkt = if vnet {
                // No receive offloads were enabled, so the kernel completes
                // checksums and segments before handing packets over; a
                // GSO packet here would be a kernel surprise: count it.
                match buf[..n].split_first_chunk::<VNET_HDR_LEN>() {
                    Some((h, rest)) if !VnetHdr::from_bytes(h).is_gso() => rest,
                    Some(_) => {
                        offload += 1;
                        continue;
                    }
                    None => {
                        malformed += 1;
                        continue;
                    }
                }
            } else {
                &buf[..n]
            };
            match self.core.tun_packet(pkt) {
                Ok(()) => {
                    ok += 1;
                    bytes += pkt.len() as u64;
                }
                Err(TunDrop::Malformed) => malformed += 1,
                Err(TunDrop::NoRoute) => no_route += 1,
                Err(TunDrop::Backpressure) => full += 1,
            }
        }
        self.count_tun_reads(ok, bytes, no_route, malformed, full, offload);
        Ok(more)
    }

    /// Adds one [`Edge::read_tun`] batch's tallies to the counters.
    fn count_tun_reads(
        &self,
        ok: u64,
        bytes: u64,
        no_route: u64,
        malformed: u64,
        full: u64,
        offload: u64,
    ) {
        let s = self.core.stats();
        s.to_tunnel_packets.fetch_add(ok, Relaxed);
        s.to_tunnel_bytes.fetch_add(bytes, Relaxed);
        s.drop_no_route.fetch_add(no_route, Relaxed);
        s.drop_malformed.fetch_add(malformed, Relaxed);
        s.drop_backpressure.fetch_add(full, Relaxed);
        s.drop_tun_offload.fetch_add(offload, Relaxed);
    }

    /// Writes every connection with bytes to send.
    fn flush(&mut self, now: Instant) {
        while let Some(id) = self.core.poll_dirty() {
            if let Some(Some(s)) = self.socks.get_mut(id as usize) {
                self.core
                    .write(id, now, |sess| driver::flush(sess, &mut s.stream, now));
            }
        }
    }

    /// Closes the sockets of connections the core is done with.
    fn close_finished(&mut self) {
        while let Some(id) = self.core.poll_closed() {
            if let Some(mut s) = self.socks.get_mut(id as usize).and_then(Option::take) {
                let _ = self.poll.registry().deregister(&mut s.stream);
            }
        }
    }
}

/// How a turn of accepting ended.
enum AcceptTurn {
    /// The queue is empty.
    Drained,
    /// The turn's budget is spent: more next turn.
    Budget,
    /// Out of descriptors or memory: wait a little.
    Pause,
}

/// Writes to the TUN device and tallies what happened.
struct TunWriter<'a> {
    tun: &'a Tun,
    writes: u64,
    /// Packets written inside GSO packets.
    merged: u64,
    /// Packets lost to failed writes.
    dropped: u64,
    /// The kernel refused a GSO packet as invalid.
    gso_refused: bool,
}

impl TunWriter<'_> {
    /// One packet or GSO packet, behind its virtio-net header.
    fn write(&mut self, hdr: &VnetHdr, pkt: &[u8]) {
        let segments = if hdr.is_gso() {
            let payload = pkt.len().saturating_sub(usize::from(hdr.hdr_len));
            payload.div_ceil(usize::from(hdr.gso_size).max(1)) as u64
        } else {
            1
        };
        self.writes += 1;
        if hdr.is_gso() {
            self.merged += segments;
        }
        if let Err(e) = self.tun.send_vnet(&hdr.to_bytes(), pkt) {
            log::debug!("TUN write: {e}");
            self.dropped += segments;
            if hdr.is_gso() && e.raw_os_error() == Some(libc::EINVAL) {
                self.gso_refused = true;
            }
        }
    }

    /// One packet, on a device without virtio-net headers.
    fn write_plain(&mut self, pkt: &[u8]) {
        self.writes += 1;
        if self.tun.send(pkt).is_err() {
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests;
