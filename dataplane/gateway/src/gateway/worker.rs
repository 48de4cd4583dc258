//! One gateway worker: one LAN RX queue, its `AF_XDP` socket and its own TLS
//! tunnel to the edge, driven by one mio loop on one thread. Workers share
//! nothing on the packet path. The endpoint-mode worker is the same loop
//! over a TUN device instead of an `AF_XDP` socket ([`Port`]).
//!
//! A worker holds one TLS tunnel per tenant: the internet tenant's and one
//! per private-access tenant. The classifier puts its verdict (which
//! tunnel) in front of every frame it redirects ([`sluice_common::META_LEN`]
//! bytes of XDP metadata), so the worker never looks a policy up for LAN
//! traffic and never disagrees with the classifier; the endpoint worker,
//! whose packets come from a TUN device, looks the tunnel up in the
//! published compiled policy ([`super::control::Published`]), refreshed
//! once per batch when its generation changes.
//!
//! Per iteration: drain a batch from the port, frame every packet into
//! its tunnel's session (coalesced into few TLS records), flush; read what
//! the edges sent and deliver each packet to the LAN ([`deliver`]: on an
//! `AF_XDP` port with an Ethernet header for its LAN host, the MAC from
//! the kernel's neighbour table and the VLAN tags the host's frames came
//! with, [`super::neighbor`], submitted to the TX ring as one batch; on a
//! TUN port one `write` each). The loop, the tunnel side and the LAN
//! side's checks and counters are written once; only reading a batch and
//! emitting a packet differ by port. While a tunnel is down every frame
//! for it is dropped and counted: traffic that must be tunnelled never
//! leaves directly.
//!
//! DNS messages (the domain bypass) are handed to the bypass thread
//! through [`super::dns_relay`]: a query's copy on its way in, an answer
//! held until its addresses are installed, then delivered like any other
//! packet. No lock, no map update on this thread.
use std::{
    io,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token, unix::SourceFd};

use super::{
    control::{Active, Published},
    dns_relay::{Divert, DnsPort, DnsRelay, Job, Kind},
    edges::{Edges, News, Sender, UdpPackets, UdpTally},
    neighbor::{Neighbors, Source},
    stats::{TENANTS, TenantStats, WorkerStats},
};
use crate::{
    driver::LinkParams,
    ebpf::VlanMode,
    sys::{
        neigh::{NeighEvent, NeighSocket, NextHop, RouteQuery},
        tun::Tun,
        xsk::XskSocket,
    },
    tunnel::{SendError, Session},
    wire::{
        ethernet::{self, Mac},
        ip, tcp,
    },
};
use sluice_core::{
    datagram::{SealError, path::PathConfig},
    pmtu::{self, Fit, IcmpLimiter},
    select::{EdgeSet, MAX_EDGES},
};

/// The port (the `AF_XDP` socket or the TUN device).
const PORT: Token = Token(0);
/// Tenant `t`'s tunnel to its edge `e` is
/// `Token(FIRST_TUNNEL + t * MAX_EDGES + e)`.
const FIRST_TUNNEL: usize = 1;
/// Tunnel sockets a worker may have: one per tenant and edge.
const TUNNEL_SLOTS: usize = TENANTS * MAX_EDGES;
/// Tenant `t`'s datagram socket to its edge `e` is
/// `Token(FIRST_UDP + t * MAX_EDGES + e)`.
const FIRST_UDP: usize = FIRST_TUNNEL + TUNNEL_SLOTS;
/// The neighbour-table socket (after the tunnels' tokens).
const NEIGH: Token = Token(FIRST_UDP + TUNNEL_SLOTS);
/// The domain bypass thread handed DNS answers back.
const DNS_BACK: Token = Token(FIRST_UDP + TUNNEL_SLOTS + 1);
/// One bit per tunnel slot ([`TUNNEL_SLOTS`]).
type SlotBits = u128;
const _: () = assert!(TUNNEL_SLOTS <= SlotBits::BITS as usize);
/// How long the start-up dump of the kernel's tables may take.
const NEIGH_DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// Netlink reads per batch (each holds many messages).
const NEIGH_READS: usize = 16;
/// Frames taken from the RX ring per batch.
const RX_BATCH: usize = 64;
/// Frames reserved on the TX ring per batch.
const TX_BATCH: usize = 64;
/// Longest wait in poll, so that `stop` is noticed.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often a worker reads its `AF_XDP` socket's kernel counters (one
/// `getsockopt`).
const XSK_STATS_EVERY: Duration = Duration::from_secs(1);

/// What a worker needs to reach a tenant's edges (one per tenant): how to
/// connect (`link`: TLS and session settings; its address is set per
/// edge), which edges and how to choose among them (`edges`, see
/// [`super::edges`]), and the tunnel's inner MTU ([`pmtu`]).
#[derive(Clone)]
pub(super) struct TunnelParams {
    pub(super) link: LinkParams,
    pub(super) edges: EdgeSet,
    pub(super) mtu: u16,
    pub(super) transport: PathConfig,
}

/// ICMP "too big" errors a worker sends per second at most, and at once.
const ICMP_PER_SECOND: u32 = 100;
const ICMP_BURST: u32 = 20;
/// ICMP errors waiting to be delivered to the LAN at the end of a batch.
const ICMP_QUEUE: usize = 16;
/// Room for one ICMP error (IPv6's limit).
const ICMP_MAX: usize = 1280;

/// Where a worker's packets come from and go to.
#[allow(
    clippy::large_enum_variant,
    reason = "one per worker, made once, never moved on the packet path"
)]
pub(super) enum Port {
    /// An `AF_XDP` socket on an Ethernet interface (the LAN): frames in
    /// batches from the RX ring; replies get the LAN host's MAC from the
    /// kernel's neighbour table and its VLAN tags (on the endpoint's veth:
    /// the MAC learnt from the frames).
    Xsk {
        /// The socket.
        xsk: XskSocket,
        /// The interface's MAC (source of replies).
        mac: Mac,
        /// LAN hosts' MACs.
        neighbors: Neighbors,
        /// Where the VLAN of a LAN host on the interface itself comes
        /// from (the gateway's `lan_vlans`, see [`super::neighbor`]).
        vlans: VlanMode,
    },
    /// A TUN device (endpoint mode): IP packets, one `read`/`write` each.
    Tun {
        /// The device.
        tun: Tun,
        /// Read buffer.
        buf: Box<[u8]>,
    },
}

impl Port {
    /// An `AF_XDP` port (the endpoint's veth: MACs from the frames).
    /// [`Worker::new`] makes a LAN port's neighbour cache follow the
    /// kernel's table.
    pub(super) fn xsk(xsk: XskSocket, mac: Mac) -> Self {
        Self::lan(xsk, mac, VlanMode::Kernel)
    }

    /// The LAN's `AF_XDP` port, with the gateway's `lan_vlans`: in kernel
    /// mode frames teach no VLAN (a host on the LAN interface itself is
    /// untagged), in untag mode they teach their host's tags.
    pub(super) fn lan(xsk: XskSocket, mac: Mac, vlans: VlanMode) -> Self {
        Self::Xsk {
            xsk,
            mac,
            neighbors: Neighbors::new(NEIGHBORS, Source::Frames),
            vlans,
        }
    }

    /// A TUN port.
    pub(super) fn tun(tun: Tun) -> Self {
        Self::Tun {
            tun,
            buf: vec![0; 65_536].into_boxed_slice(),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Self::Xsk { xsk, .. } => xsk.as_raw_fd(),
            Self::Tun { tun, .. } => tun.as_raw_fd(),
        }
    }
}

/// LAN hosts a worker's neighbour cache holds.
const NEIGHBORS: usize = 16_384;

/// How a worker learns which tunnel a packet takes.
pub(super) enum Route {
    /// From the classifier's metadata in front of the frame (`AF_XDP`).
    Meta,
    /// From the published policy: this host's own packets (TUN).
    Lookup(Arc<Published>),
}

/// A worker's state; [`Worker::run`] is its thread's body.
pub(super) struct Worker {
    queue: u32,
    port: Port,
    /// Index: the tenant ([`crate::policy::TenantId`]).
    tunnels: Vec<Edges>,
    route: Route,
    /// The policy the TUN path last looked up in, and its generation.
    cached: Option<(u64, Arc<Active>)>,
    stats: Arc<WorkerStats>,
    tenant_stats: Arc<TenantStats>,
    /// The way to the domain bypass thread for the DNS messages this
    /// worker carries.
    dns: Option<DnsPort>,
    poll: Poll,
    /// Local tallies, published to `stats` once per iteration.
    tally: Tally,
    /// When the `AF_XDP` socket's kernel counters are read next.
    next_xsk_stats: Instant,
    /// The kernel's neighbour table (LAN ports), and whether it has news.
    neigh: Option<NeighSocket>,
    neigh_ready: bool,
    /// Next-hop questions for LAN hosts behind a router (LAN ports).
    routes: Option<RouteQuery>,
    /// The tunnels' inner MTUs, enforced on the way in.
    pmtu: MtuGuard,
}

/// What a worker needs to enforce its tunnels' inner MTUs ([`pmtu`]):
/// preallocated, nothing allocates per packet.
struct MtuGuard {
    /// Index: the tenant.
    mtus: Vec<u16>,
    /// A clamped SYN or one fragment at a time.
    scratch: Box<[u8]>,
    /// ICMP errors for the LAN, delivered after the batch: each buffer,
    /// the error's length and the tenant it counts for.
    icmp: Vec<(Vec<u8>, usize, usize)>,
    queued: usize,
    limiter: IcmpLimiter,
}

impl MtuGuard {
    fn new(mtus: Vec<u16>) -> Self {
        Self {
            mtus,
            scratch: vec![0; 65_536].into_boxed_slice(),
            icmp: (0..ICMP_QUEUE).map(|_| (vec![0; ICMP_MAX], 0, 0)).collect(),
            queued: 0,
            limiter: IcmpLimiter::new(ICMP_PER_SECOND, ICMP_BURST),
        }
    }
}

/// The ICMP errors a batch queued ([`MtuGuard::icmp`]), for [`deliver`].
struct FromGuard<'g> {
    icmp: &'g [(Vec<u8>, usize, usize)],
    queued: &'g mut usize,
    next: usize,
}

impl ToLan for FromGuard<'_> {
    fn came_through_tunnel(&self) -> bool {
        false
    }

    fn next_packet(&mut self) -> Option<(&[u8], usize)> {
        if self.next >= *self.queued {
            *self.queued = 0;
            return None;
        }
        let (buf, len, tenant) = &self.icmp[self.next];
        self.next += 1;
        Some((&buf[..*len], *tenant))
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("tunnels", &self.tunnels.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Tally {
    rx_frames: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    drop_down: u64,
    drop_backpressure: u64,
    drop_malformed: u64,
    drop_too_large: u64,
    drop_no_neighbor: u64,
    drop_tx_full: u64,
    drop_no_verdict: u64,
    drop_dns_queue_full: u64,
    drop_too_big: u64,
    fragmented: u64,
    mss_clamped: u64,
    icmp_too_big: u64,
    icmp_suppressed: u64,
    neighbor_resolutions: u64,
    udp_tx_datagrams: u64,
    udp_tx_dropped: u64,
    udp_rx_datagrams: u64,
    udp_rx_refused: u64,
    tenant_tx: [u64; TENANTS],
    tenant_rx: [u64; TENANTS],
}

impl Tally {
    fn publish(&mut self, s: &WorkerStats, ts: &TenantStats) {
        let add = |a: &std::sync::atomic::AtomicU64, v: &mut u64| {
            if *v != 0 {
                a.fetch_add(*v, Relaxed);
                *v = 0;
            }
        };
        add(&s.rx_frames, &mut self.rx_frames);
        add(&s.tunnel_tx_packets, &mut self.tx_packets);
        add(&s.tunnel_tx_bytes, &mut self.tx_bytes);
        add(&s.tunnel_rx_packets, &mut self.rx_packets);
        add(&s.tunnel_rx_bytes, &mut self.rx_bytes);
        add(&s.drop_tunnel_down, &mut self.drop_down);
        add(&s.drop_backpressure, &mut self.drop_backpressure);
        add(&s.drop_malformed, &mut self.drop_malformed);
        add(&s.drop_too_large, &mut self.drop_too_large);
        add(&s.drop_no_neighbor, &mut self.drop_no_neighbor);
        add(&s.drop_tx_full, &mut self.drop_tx_full);
        add(&s.drop_no_verdict, &mut self.drop_no_verdict);
        add(&s.drop_dns_queue_full, &mut self.drop_dns_queue_full);
        add(&s.drop_too_big, &mut self.drop_too_big);
        add(&s.fragmented, &mut self.fragmented);
        add(&s.mss_clamped, &mut self.mss_clamped);
        add(&s.icmp_too_big, &mut self.icmp_too_big);
        add(&s.icmp_suppressed, &mut self.icmp_suppressed);
        add(&s.neighbor_resolutions, &mut self.neighbor_resolutions);
        add(&s.udp_tx_datagrams, &mut self.udp_tx_datagrams);
        add(&s.udp_tx_dropped, &mut self.udp_tx_dropped);
        add(&s.udp_rx_datagrams, &mut self.udp_rx_datagrams);
        add(&s.udp_rx_refused, &mut self.udp_rx_refused);
        for t in 0..TENANTS {
            add(&ts.tx_packets[t], &mut self.tenant_tx[t]);
            add(&ts.rx_packets[t], &mut self.tenant_rx[t]);
        }
    }
}

impl Worker {
    /// A worker for `queue` over `port`, with one tunnel per entry of
    /// `tunnels` (index: tenant), handing DNS messages to the domain
    /// bypass through `dns` (the relay and this worker's index in it).
    /// Registers the port with a new poller; does not connect yet.
    pub(super) fn new(
        queue: u32,
        port: Port,
        tunnels: Vec<TunnelParams>,
        route: Route,
        stats: (Arc<WorkerStats>, Arc<TenantStats>),
        dns: Option<(&Arc<DnsRelay>, usize)>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&port.raw_fd()), PORT, Interest::READABLE)?;
        let dns = match dns {
            Some((relay, index)) => Some(
                relay
                    .port(index, mio::Waker::new(poll.registry(), DNS_BACK)?)
                    .ok_or_else(|| io::Error::other(format!("DNS relay slot {index} taken")))?,
            ),
            None => None,
        };
        let mut port = port;
        let routes = match (&port, &route) {
            (Port::Xsk { .. }, Route::Meta) => Some(RouteQuery::new()?),
            _ => None,
        };
        let neigh = match (&mut port, &route) {
            (Port::Xsk { xsk, neighbors, .. }, Route::Meta) => {
                let mut n = Neighbors::new(NEIGHBORS, Source::Kernel(xsk.ifindex()));
                let mut sock = NeighSocket::new()?;
                sock.dump(NEIGH_DUMP_TIMEOUT, &mut |e| n.apply(e))?;
                poll.registry().register(
                    &mut SourceFd(&sock.as_raw_fd()),
                    NEIGH,
                    Interest::READABLE,
                )?;
                *neighbors = n;
                Some(sock)
            }
            _ => None,
        };
        let now = Instant::now();
        let tunnels: Vec<TunnelParams> = tunnels.into_iter().take(TENANTS).collect();
        let pmtu = MtuGuard::new(tunnels.iter().map(|p| p.mtu).collect());
        let tunnels = tunnels
            .into_iter()
            .enumerate()
            .map(|(t, p)| {
                let slot = t * MAX_EDGES;
                Edges::new(
                    queue,
                    t,
                    &p.edges,
                    p.link,
                    (FIRST_TUNNEL + slot, FIRST_UDP + slot),
                    p.transport,
                    now,
                )
                .map_err(|e| io::Error::other(format!("tenant {t}'s edges: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            queue,
            port,
            tunnels,
            route,
            cached: None,
            stats: stats.0,
            tenant_stats: stats.1,
            dns,
            poll,
            tally: Tally::default(),
            next_xsk_stats: Instant::now(),
            neigh,
            neigh_ready: true,
            routes,
            pmtu,
        })
    }

    /// The next hop towards `ip`, from the kernel (a route query).
    fn next_hop(routes: &mut Option<RouteQuery>, ip: std::net::IpAddr) -> Option<NextHop> {
        let r = routes.as_mut()?;
        match r.next_hop(ip) {
            Ok(hop) => hop,
            Err(e) => {
                log::debug!("route query for {ip}: {e}");
                None
            }
        }
    }

    /// Applies the kernel's neighbour changes that arrived (LAN ports),
    /// between batches; after an overrun, dumps the tables again.
    fn sync_neighbors(&mut self) {
        let (Some(sock), Port::Xsk { neighbors, .. }) = (&mut self.neigh, &mut self.port) else {
            return;
        };
        if !self.neigh_ready {
            return;
        }
        let mut overrun = false;
        match sock.recv(NEIGH_READS, &mut |e| {
            if e == NeighEvent::Overrun {
                overrun = true;
            }
            neighbors.apply(e);
        }) {
            // Read until empty: wait for the next readiness event.
            Ok(false) => self.neigh_ready = false,
            Ok(true) => {}
            Err(e) => {
                log::warn!("queue {}: neighbour table: {e}", self.queue);
                self.neigh_ready = false;
            }
        }
        if overrun {
            log::warn!(
                "queue {}: neighbour table changes were lost; reading the table again",
                self.queue
            );
            neighbors.clear_kernel();
            if let Err(e) = sock.dump(NEIGH_DUMP_TIMEOUT, &mut |e| neighbors.apply(e)) {
                log::warn!("queue {}: neighbour table dump: {e}", self.queue);
            }
            self.neigh_ready = true;
        }
    }

    /// Asks the kernel to resolve the LAN addresses replies found no
    /// neighbour for (at most once a second each).
    fn send_resolutions(&mut self) {
        let (Some(sock), Port::Xsk { neighbors, .. }) = (&mut self.neigh, &mut self.port) else {
            return;
        };
        let Source::Kernel(lan) = neighbors.source() else {
            return;
        };
        for ip in neighbors.take_resolutions() {
            self.tally.neighbor_resolutions += 1;
            if let Err(e) = sock.resolve(lan, ip) {
                log::debug!("queue {}: resolving {ip}: {e}", self.queue);
            }
        }
    }

    /// Runs until `stop` is set; closes the tunnels cleanly on the way out.
    /// Bumps `beat` once per loop turn (at least every [`MAX_WAIT`] when
    /// idle): the watchdog takes a silent worker for a stuck one. Returns
    /// early on an error it cannot carry on from (the supervisor then
    /// stops the gateway, failing closed).
    pub(super) fn run(mut self, stop: &AtomicBool, beat: &super::supervise::Heartbeat) {
        let mut fault =
            super::fault::Fault::for_thread(std::thread::current().name().unwrap_or_default());
        let mut events = Events::with_capacity(64);
        // mio is edge-triggered: after a full batch, more may be waiting
        // without a new event, so poll without blocking.
        let mut rx_more = true;
        // Bit `t * MAX_EDGES + e`: tenant `t`'s tunnel to edge `e` may
        // have more to read.
        let mut tunnel_more: SlotBits = 0;
        // The same for the datagram sockets.
        let mut udp_more: SlotBits = 0;
        while !stop.load(Relaxed) {
            beat.beat();
            if super::fault::inject(&mut fault) {
                break;
            }
            let now = Instant::now();
            let returns = self.dns.as_ref().is_some_and(DnsPort::has_returns);
            let timeout = poll_timeout(rx_more, tunnel_more | udp_more, returns, || {
                self.next_wakeup(now)
            });
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("queue {}: poll: {e}", self.queue);
                break;
            }
            for ev in &events {
                match ev.token() {
                    PORT => rx_more = true,
                    NEIGH => self.neigh_ready = true,
                    Token(n)
                        if n >= FIRST_TUNNEL
                            && n - FIRST_TUNNEL < TUNNEL_SLOTS
                            && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) =>
                    {
                        tunnel_more |= 1 << (n - FIRST_TUNNEL);
                    }
                    Token(n) if (FIRST_UDP..FIRST_UDP + TUNNEL_SLOTS).contains(&n) => {
                        udp_more |= 1 << (n - FIRST_UDP);
                    }
                    // DNS_BACK too: its queue is checked every turn.
                    _ => {}
                }
            }
            let now = Instant::now();
            for t in 0..self.tunnels.len() {
                self.maintain_link(t, now);
            }
            if rx_more {
                rx_more = self.lan_to_tunnel();
            }
            let mut pending = tunnel_more;
            while pending != 0 {
                let slot = pending.trailing_zeros() as usize;
                pending &= pending - 1;
                let (t, e) = (slot / MAX_EDGES, slot % MAX_EDGES);
                if !self.tunnel_to_lan(t, e, now) {
                    tunnel_more &= !(1 << slot);
                }
            }
            let mut pending = udp_more;
            while pending != 0 {
                let slot = pending.trailing_zeros() as usize;
                pending &= pending - 1;
                let (t, e) = (slot / MAX_EDGES, slot % MAX_EDGES);
                if !self.udp_to_lan(t, e, now) {
                    udp_more &= !(1 << slot);
                }
            }
            self.dns_returns(now);
            for t in 0..self.tunnels.len() {
                self.flush_tunnel(t, now);
            }
            if let Some(d) = &mut self.dns {
                d.wake();
            }
            self.tally.publish(&self.stats, &self.tenant_stats);
            if now >= self.next_xsk_stats {
                self.next_xsk_stats = now + XSK_STATS_EVERY;
                self.read_xsk_stats();
            }
        }
        for edges in &mut self.tunnels {
            edges.close_all("gateway stopping", Instant::now());
        }
        // The gauges only: `link`, which the classifier's tunnel state
        // follows, stays as it was (a stop is no tunnel outage).
        self.stats.tunnel_up.store(0, Relaxed);
        for up in &self.tenant_stats.up {
            up.store(0, Relaxed);
        }
    }

    /// Copies the kernel's counters of the `AF_XDP` socket (frames it
    /// dropped before this worker saw them: RX ring full, fill ring empty)
    /// into the worker's metrics.
    fn read_xsk_stats(&self) {
        let Port::Xsk { xsk, .. } = &self.port else {
            return;
        };
        match xsk.statistics() {
            Ok(k) => {
                self.stats.xsk_rx_dropped.store(k.rx_dropped, Relaxed);
                self.stats.xsk_rx_ring_full.store(k.rx_ring_full, Relaxed);
                self.stats
                    .xsk_fill_ring_empty
                    .store(k.rx_fill_ring_empty_descs, Relaxed);
            }
            Err(e) => log::debug!("queue {}: XDP_STATISTICS: {e}", self.queue),
        }
    }

    fn next_wakeup(&self, now: Instant) -> Duration {
        self.tunnels
            .iter()
            .filter_map(|e| e.poll_timeout(now))
            .min()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(now).min(MAX_WAIT))
    }

    /// Tenant `t`'s edges: timers, connections, probes, resolutions,
    /// and what happened to them.
    fn maintain_link(&mut self, t: usize, now: Instant) {
        let news = self.tunnels[t].drive(self.poll.registry(), now);
        self.edge_news(t, news, now);
    }

    /// What happened to tenant `t`'s edges since the last call, after a
    /// read or a flush.
    fn link_events(&mut self, t: usize, now: Instant) {
        let news = self.tunnels[t].events(self.poll.registry(), now);
        self.edge_news(t, news, now);
    }

    /// Counts `news` and publishes tenant `t`'s state: the gauges, the
    /// state the classifier follows (up while an edge is active, lost once
    /// none is after a failure), and the selection's status.
    fn edge_news(&mut self, t: usize, news: News, now: Instant) {
        if news.connects > 0 {
            self.stats.tunnel_connects.fetch_add(news.connects, Relaxed);
        }
        if news.failures > 0 {
            self.stats.tunnel_failures.fetch_add(news.failures, Relaxed);
        }
        let edges = &mut self.tunnels[t];
        let up = u64::from(edges.active().is_some());
        if t == 0 {
            self.stats.tunnel_up.store(up, Relaxed);
        }
        self.tenant_stats.up[t].store(up, Relaxed);
        let link = edges.link_state();
        if link != super::stats::LINK_UNKNOWN {
            self.tenant_stats.link[t].store(link, Relaxed);
        }
        if let Some(status) = edges.status_due(now, news.changed) {
            *self.tenant_stats.edges[t]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
        }
    }

    /// The tunnel of this host's own packet `pkt` (TUN path): the policy's
    /// verdict for this host's profile; the internet tunnel if the policy
    /// says direct (the kernel routed the packet here: it is not sent
    /// direct from here).
    fn lookup_tunnel(active: &Active, pkt: &ip::Packet<'_>) -> usize {
        let (proto, sport, dport) = pkt.flow();
        let t = &active.tables;
        match t.lookup_profile(
            t.local_profile,
            pkt.dst(),
            sport,
            dport,
            crate::policy::Proto(proto),
        ) {
            crate::policy::Verdict::Tunnel(x) => usize::from(x),
            crate::policy::Verdict::Direct => 0,
        }
    }

    /// Moves one batch from the port into the tunnels. Returns true if the
    /// batch was full (more may be waiting).
    fn lan_to_tunnel(&mut self) -> bool {
        self.sync_neighbors();
        let more = self.lan_batch();
        if self.pmtu.queued > 0 {
            let MtuGuard {
                mtus, icmp, queued, ..
            } = &mut self.pmtu;
            let mut from = FromGuard {
                icmp,
                queued,
                next: 0,
            };
            deliver(
                &mut self.port,
                &mut self.routes,
                &mut self.tally,
                None,
                (&mut from, mtus),
                Instant::now(),
                self.queue,
            );
        }
        // Hosts the kernel did not know yet are resolved now, before their
        // replies come back.
        self.send_resolutions();
        more
    }

    /// [`Worker::lan_to_tunnel`]'s batch.
    #[allow(
        clippy::too_many_lines,
        reason = "one batch read top to bottom: its frames' checks, the tunnel's choice, the in-place seal"
    )]
    fn lan_batch(&mut self) -> bool {
        let now = Instant::now();
        let routes = &mut self.routes;
        let t = &mut self.tally;
        let tunnel_count = self.tunnels.len();
        let tunnels = &mut self.tunnels;
        let mut dns = self.dns.as_mut();
        let guard = &mut self.pmtu;
        match &mut self.port {
            Port::Xsk {
                xsk,
                neighbors,
                vlans,
                ..
            } => {
                let vlans = *vlans;
                let active = match &self.route {
                    Route::Meta => None,
                    Route::Lookup(p) => Some(p.refresh(&mut self.cached)),
                };
                let mut batch = xsk.rx(RX_BATCH);
                let n = batch.len();
                let mut last_seen = None;
                t.rx_frames += n as u64;
                // Datagrams sealed where their frames lie, sent before
                // the batch gives its frames back.
                let mut sealed = InPlace::default();
                for f in batch.frames_mut() {
                    let meta = if active.is_some() {
                        Some(usize::MAX)
                    } else {
                        f.meta
                            .and_then(sluice_common::XdpMeta::decode)
                            .and_then(sluice_common::XdpMeta::tunnel)
                            .map(usize::from)
                            .filter(|&x| x < tunnel_count)
                    };
                    let Some(meta) = meta else {
                        t.drop_no_verdict += 1;
                        continue;
                    };
                    let crate::sys::xsk::RxFrameMut { frame, data, .. } = f;
                    let (tunnel, at, len, sent) = {
                        let Some(view) = frame.get(data.clone()) else {
                            t.drop_malformed += 1;
                            continue;
                        };
                        let Ok(eth) = ethernet::Frame::new_checked(view) else {
                            t.drop_malformed += 1;
                            continue;
                        };
                        let Ok((tags, _, off)) = eth.tags() else {
                            t.drop_malformed += 1;
                            continue;
                        };
                        let Some(Ok(pkt)) = view.get(off..).map(ip::Packet::new_checked) else {
                            t.drop_malformed += 1;
                            continue;
                        };
                        // Only the VLAN, and only from the MAC the kernel
                        // has for this address (LAN); the MAC itself on
                        // the endpoint's veth. Once per sender and batch:
                        // a bulk flow's frames all carry the same source,
                        // and a repeat with the same `now` changes nothing
                        // (it cost a keyed hash a frame).
                        let seen = (pkt.src(), eth.src(), tags);
                        if last_seen != Some(seen) {
                            neighbors.observe(seen.0, seen.1, tags, vlans, now, &mut |ip| {
                                Self::next_hop(routes, ip)
                            });
                            last_seen = Some(seen);
                        }
                        let tunnel = match &active {
                            Some(a) => Self::lookup_tunnel(a, &pkt),
                            None => meta,
                        };
                        let sent = to_tunnel(
                            tunnels,
                            dns.as_deref_mut(),
                            guard,
                            tunnel,
                            &pkt,
                            t,
                            now,
                            true,
                        );
                        (tunnel, data.start + off, pkt.as_bytes().len(), sent)
                    };
                    if sent == Sent::InPlace {
                        seal_in_place(tunnels, &mut sealed, tunnel, frame, at, len, t, now);
                    }
                }
                sealed.send(tunnels, t);
                drop(batch);
                n == RX_BATCH
            }
            Port::Tun { tun, buf } => {
                let Route::Lookup(published) = &self.route else {
                    return false;
                };
                let active = published.refresh(&mut self.cached);
                let mut n = 0;
                while n < RX_BATCH {
                    let Some(len) = Self::tun_read(tun, buf) else {
                        break;
                    };
                    n += 1;
                    t.rx_frames += 1;
                    match ip::Packet::new_checked(&buf[..len]) {
                        Ok(pkt) => {
                            let i = Self::lookup_tunnel(&active, &pkt);
                            to_tunnel(tunnels, dns.as_deref_mut(), guard, i, &pkt, t, now, false);
                        }
                        Err(_) => t.drop_malformed += 1,
                    }
                }
                n == RX_BATCH
            }
        }
    }

    /// One packet from the TUN device into `buf`; `None` when none waits.
    fn tun_read(tun: &Tun, buf: &mut [u8]) -> Option<usize> {
        loop {
            match tun.recv(buf) {
                Ok(len) => return Some(len),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads from tenant `i`'s tunnel to edge `e` (active or standby:
    /// replies still in flight after a switch are delivered too) and
    /// delivers its packets to the LAN. Returns true if the read stopped
    /// at its budget.
    fn tunnel_to_lan(&mut self, i: usize, e: usize, now: Instant) -> bool {
        self.sync_neighbors();
        let Some(link) = self.tunnels.get_mut(i).and_then(|x| x.link_mut(e)) else {
            return false;
        };
        let more = link.receive(now);
        let mut got = 0;
        if let Some(sess) = link.session_mut() {
            let mut from = FromTunnel {
                sess,
                tenant: i,
                count: 0,
            };
            deliver(
                &mut self.port,
                &mut self.routes,
                &mut self.tally,
                self.dns.as_mut(),
                (&mut from, &self.pmtu.mtus),
                now,
                self.queue,
            );
            got = from.count;
            self.send_resolutions();
        }
        if got > 0 {
            self.tunnels[i].alive(e, now);
        }
        // The edge's HELLO (the tunnel is up) or CLOSE came with the read.
        self.link_events(i, now);
        more
    }

    /// Reads a batch of tenant `i`'s datagrams from edge `e` and delivers
    /// their packets to the LAN. Returns true if more may be waiting.
    fn udp_to_lan(&mut self, i: usize, e: usize, now: Instant) -> bool {
        self.sync_neighbors();
        let Some(edges) = self.tunnels.get_mut(i) else {
            return false;
        };
        let more = edges.receive_udp(e, now);
        let mut got = 0;
        if let Some(udp) = edges.udp_mut(e) {
            let mut from = FromDatagrams {
                packets: udp.packets(),
                tenant: i,
                count: 0,
            };
            deliver(
                &mut self.port,
                &mut self.routes,
                &mut self.tally,
                self.dns.as_mut(),
                (&mut from, &self.pmtu.mtus),
                now,
                self.queue,
            );
            got = from.count;
            self.send_resolutions();
        }
        if got > 0 {
            self.tunnels[i].alive(e, now);
        }
        self.link_events(i, now);
        more
    }

    /// Delivers the DNS answers the bypass thread handed back (their
    /// addresses are installed by now) and reuses the buffers.
    fn dns_returns(&mut self, now: Instant) {
        if !self.dns.as_ref().is_some_and(DnsPort::has_returns) {
            return;
        }
        self.sync_neighbors();
        let Some(dns) = self.dns.as_mut() else { return };
        let mut from = FromRelay { dns, current: None };
        deliver(
            &mut self.port,
            &mut self.routes,
            &mut self.tally,
            None,
            (&mut from, &self.pmtu.mtus),
            now,
            self.queue,
        );
        drop(from);
        self.send_resolutions();
    }

    /// End of a batch for tunnel `i`: the driver's flush policy (seal the
    /// batch's record, or keep it for the coalescing delay, which then
    /// wakes the loop; write what the socket takes).
    fn flush_tunnel(&mut self, i: usize, now: Instant) {
        self.tunnels[i].flush(now);
        let u = std::mem::take(&mut self.tunnels[i].udp_tally);
        self.tally.udp_tx_datagrams += u.sent;
        self.tally.udp_tx_dropped += u.send_dropped;
        self.tally.udp_rx_datagrams += u.received;
        self.tally.udp_rx_refused += u.refused;
        self.link_events(i, now);
    }
}

/// How long the worker's poll may block: not at all while a source may
/// have more than its last batch took (the LAN queue, a tunnel or a
/// datagram socket: mio is edge-triggered, so no new event comes for what
/// is already waiting) or the DNS port has returns; else until the next
/// timer.
fn poll_timeout(
    rx_more: bool,
    sockets_more: SlotBits,
    returns: bool,
    next_wakeup: impl FnOnce() -> Duration,
) -> Duration {
    if rx_more || sockets_more != 0 || returns {
        Duration::ZERO
    } else {
        next_wakeup()
    }
}

/// Sends `pkt` into tunnel `i` (a DNS query only once its copy is on its
/// way to the domain bypass, else dropped and counted: its answer would
/// install nothing); dropped and counted while the tunnel is down. The
/// tunnel's inner MTU is enforced on the way ([`pmtu`]): a SYN's MSS is
/// clamped, an IPv4 packet without DF that does not fit goes as
/// fragments, and one that may not be fragmented is dropped and its
/// sender told (ICMP, rate-limited, queued for the end of the batch).
#[allow(
    clippy::too_many_arguments,
    reason = "the batch's state, two call sites"
)]
fn to_tunnel(
    tunnels: &mut [Edges],
    dns: Option<&mut DnsPort>,
    guard: &mut MtuGuard,
    i: usize,
    pkt: &ip::Packet<'_>,
    t: &mut Tally,
    now: Instant,
    in_place: bool,
) -> Sent {
    let Some(mut out) = tunnels.get_mut(i).and_then(Edges::sender) else {
        t.drop_down += 1;
        return Sent::Done;
    };
    if let Some(d) = dns
        && d.query(pkt) == Divert::Full
    {
        t.drop_dns_queue_full += 1;
        return Sent::Done;
    }
    let mtu = guard
        .mtus
        .get(i)
        .copied()
        .unwrap_or(crate::config::DEFAULT_TUNNEL_MTU);
    let bytes = pkt.as_bytes();
    match pmtu::fit(bytes, mtu) {
        Fit::Fits => {
            let syn = pkt.tcp().is_some_and(|s| s.flags & tcp::FLAG_SYN != 0);
            if syn && let Some(copy) = guard.scratch.get_mut(..bytes.len()) {
                copy.copy_from_slice(bytes);
                if pmtu::clamp_mss(copy, mtu) {
                    t.mss_clamped += 1;
                    send_one(&mut out, copy, i, t, now);
                    return Sent::Done;
                }
            }
            if in_place && matches!(out, Sender::Udp(..)) {
                return Sent::InPlace;
            }
            send_one(&mut out, bytes, i, t, now);
        }
        Fit::Fragment => {
            let r = pmtu::fragment_v4(bytes, mtu, &mut guard.scratch, &mut |f| {
                send_one(&mut out, f, i, t, now);
            });
            match r {
                Ok(_) => t.fragmented += 1,
                Err(_) => t.drop_malformed += 1,
            }
        }
        Fit::TooBig => {
            t.drop_too_big += 1;
            if guard.queued >= guard.icmp.len() || !guard.limiter.allow(now) {
                t.icmp_suppressed += 1;
                return Sent::Done;
            }
            // From the destination the packet was for: the gateway is
            // not a hop the LAN host addresses (see the README).
            let slot = &mut guard.icmp[guard.queued];
            if let Some(n) = pmtu::too_big_reply(bytes, mtu, pkt.dst(), &mut slot.0) {
                slot.1 = n;
                slot.2 = i;
                guard.queued += 1;
                t.icmp_too_big += 1;
            }
        }
    }
    Sent::Done
}

/// What [`to_tunnel`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Sent, queued or dropped (and counted).
    Done,
    /// For the datagram transport, whole: the caller seals it where its
    /// frame lies ([`seal_in_place`]).
    InPlace,
}

/// Datagrams sealed where their LAN frames lie, with their tenants, sent
/// at the end of the batch ([`InPlace::send`]) before its frames go back
/// to the fill ring: no copy between the frame and the socket.
struct InPlace<'b> {
    records: [&'b [u8]; RX_BATCH],
    tenants: [usize; RX_BATCH],
    len: usize,
}

impl Default for InPlace<'_> {
    fn default() -> Self {
        Self {
            records: [&[]; RX_BATCH],
            tenants: [0; RX_BATCH],
            len: 0,
        }
    }
}

impl InPlace<'_> {
    /// Sends each tenant's records in order, after what its transport
    /// queued by copy in this batch (so that order holds).
    fn send(&self, tunnels: &mut [Edges], t: &mut Tally) {
        let mut done: SlotBits = 0;
        for k in 0..self.len {
            let i = self.tenants[k];
            if done & (1 << i) != 0 {
                continue;
            }
            done |= 1 << i;
            let mut mine: [&[u8]; RX_BATCH] = [&[]; RX_BATCH];
            let mut n = 0;
            for (r, &ti) in self.records[k..self.len]
                .iter()
                .zip(&self.tenants[k..self.len])
            {
                if ti == i {
                    mine[n] = r;
                    n += 1;
                }
            }
            let mut tally = UdpTally::default();
            match tunnels.get_mut(i).and_then(Edges::sender) {
                Some(Sender::Udp(udp, _)) => udp.send_sealed(&mine[..n], &mut tally),
                // Its transport changed since they were sealed (cannot
                // happen within a batch): lost, as on a congested link.
                _ => tally.send_dropped += n as u64,
            }
            t.udp_tx_datagrams += tally.sent;
            t.udp_tx_dropped += tally.send_dropped;
        }
    }
}

/// Seals the packet at `frame[at..at + len]` for tenant `i`'s datagram
/// transport where it lies and queues the record in `sealed`; if it does
/// not seal (no room in the frame, the key spent), it takes the copying
/// path ([`send_one`]: TLS if allowed).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, the batch's state"
)]
fn seal_in_place<'b>(
    tunnels: &mut [Edges],
    sealed: &mut InPlace<'b>,
    i: usize,
    frame: &'b mut [u8],
    at: usize,
    len: usize,
    t: &mut Tally,
    now: Instant,
) {
    let Some(mut out) = tunnels.get_mut(i).and_then(Edges::sender) else {
        t.drop_down += 1;
        return;
    };
    let Some(start) = at.checked_sub(sluice_core::datagram::IN_PLACE_OFFSET) else {
        if let Some(p) = frame.get(at..at + len) {
            send_one(&mut out, p, i, t, now);
        }
        return;
    };
    let result = match &mut out {
        Sender::Udp(udp, _) if sealed.len < RX_BATCH => frame
            .get_mut(start..)
            .map(|buf| udp.seal_in_place(buf, len, now)),
        _ => None,
    };
    match result {
        Some(Ok(n)) => {
            let frame: &'b [u8] = frame;
            if let Some(rec) = frame.get(start..start + n) {
                sealed.records[sealed.len] = rec;
                sealed.tenants[sealed.len] = i;
                sealed.len += 1;
                t.tx_packets += 1;
                t.tx_bytes += len as u64;
                t.tenant_tx[i] += 1;
            }
        }
        // Unchanged on an error: the copying path decides (TLS if
        // allowed, else dropped and counted).
        _ => {
            if let Some(p) = frame.get(at..at + len) {
                send_one(&mut out, p, i, t, now);
            }
        }
    }
}

/// One packet into the tenant's transport, counted: a datagram, or (too
/// large for one, and if the tenant allows) its TLS stream.
fn send_one(out: &mut Sender<'_>, bytes: &[u8], i: usize, t: &mut Tally, now: Instant) {
    let sess = match out {
        Sender::Tls(s) => s,
        Sender::Udp(udp, tls) => {
            let mut flushed = UdpTally::default();
            let sealed = udp.queue(bytes, now, &mut flushed);
            t.udp_tx_datagrams += flushed.sent;
            t.udp_tx_dropped += flushed.send_dropped;
            match (sealed, tls) {
                (Ok(()), _) => {
                    t.tx_packets += 1;
                    t.tx_bytes += bytes.len() as u64;
                    t.tenant_tx[i] += 1;
                    return;
                }
                // Too large for a datagram, the datagram key spent or its
                // session closed: the TLS stream carries it if allowed.
                (
                    Err(SealError::TooLarge | SealError::KeyExhausted | SealError::Closed),
                    Some(s),
                ) => s,
                (Err(SealError::TooLarge), None) => {
                    t.drop_too_large += 1;
                    return;
                }
                (Err(SealError::KeyExhausted | SealError::Closed), None) => {
                    t.drop_down += 1;
                    return;
                }
                (Err(SealError::EmptyPacket), _) => {
                    t.drop_malformed += 1;
                    return;
                }
            }
        }
    };
    match sess.send_packet(bytes) {
        Ok(()) => {
            t.tx_packets += 1;
            t.tx_bytes += bytes.len() as u64;
            t.tenant_tx[i] += 1;
        }
        Err(SendError::NotEstablished) => t.drop_down += 1,
        Err(SendError::Backpressure) => t.drop_backpressure += 1,
        Err(SendError::TooLarge) => t.drop_too_large += 1,
    }
}

/// Packets for the LAN, one at a time, with the tenant whose tunnel each
/// came through.
trait ToLan {
    fn next_packet(&mut self) -> Option<(&[u8], usize)>;

    /// Whether what it yields came out of a tunnel (counted as received
    /// from it); the gateway's own ICMP errors did not.
    fn came_through_tunnel(&self) -> bool {
        true
    }
}

/// What one batch of datagrams carried.
struct FromDatagrams<'u> {
    packets: UdpPackets<'u>,
    tenant: usize,
    /// Packets yielded.
    count: usize,
}

impl ToLan for FromDatagrams<'_> {
    fn next_packet(&mut self) -> Option<(&[u8], usize)> {
        let tenant = self.tenant;
        let p = self.packets.next()?;
        self.count += 1;
        Some((p, tenant))
    }
}

/// What one tunnel's session decrypted.
struct FromTunnel<'s> {
    sess: &'s mut Session,
    tenant: usize,
    /// Packets yielded.
    count: usize,
}

impl ToLan for FromTunnel<'_> {
    fn next_packet(&mut self) -> Option<(&[u8], usize)> {
        let tenant = self.tenant;
        let p = self.sess.poll_packet()?;
        self.count += 1;
        Some((p, tenant))
    }
}

/// The answers the domain bypass thread handed back (queries' copies only
/// return their buffers).
struct FromRelay<'d> {
    dns: &'d mut DnsPort,
    current: Option<Job>,
}

impl ToLan for FromRelay<'_> {
    fn next_packet(&mut self) -> Option<(&[u8], usize)> {
        if let Some(done) = self.current.take() {
            self.dns.recycle(done.kind, done.packet);
        }
        loop {
            let job = self.dns.returned()?;
            match job.kind {
                Kind::Query => self.dns.recycle(job.kind, job.packet),
                Kind::Answer { tenant } => {
                    let job = self.current.insert(job);
                    return Some((&job.packet, tenant));
                }
            }
        }
    }
}

impl Drop for FromRelay<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.current.take() {
            self.dns.recycle(done.kind, done.packet);
        }
    }
}

/// A packet for the LAN, checked: `None` (counted) if it does not parse,
/// or if it is a DNS answer that `dns` takes to the bypass thread (it
/// comes back through [`FromRelay`]).
fn for_lan<'p>(
    p: &'p [u8],
    tenant: usize,
    dns: &mut Option<&mut DnsPort>,
    t: &mut Tally,
) -> Option<ip::Packet<'p>> {
    let Ok(pkt) = ip::Packet::new_checked(p) else {
        t.drop_malformed += 1;
        return None;
    };
    if let Some(d) = dns.as_deref_mut() {
        match d.answer(&pkt, tenant) {
            Divert::No => {}
            Divert::Queued => return None,
            Divert::Full => {
                t.drop_dns_queue_full += 1;
                return None;
            }
        }
    }
    Some(pkt)
}

/// Counts a packet delivered to the LAN.
fn delivered(t: &mut Tally, tenant: usize, len: usize) {
    t.rx_packets += 1;
    t.rx_bytes += len as u64;
    if let Some(n) = t.tenant_rx.get_mut(tenant) {
        *n += 1;
    }
}

/// Delivers what `from` yields to the LAN through `port`: checked and DNS
/// answers diverted ([`for_lan`]); on an `AF_XDP` port framed for the LAN
/// host (its MAC and VLAN tags from `neighbors`) and submitted as batches
/// of [`TX_BATCH`]; on a TUN port written one by one. A TCP SYN(-ACK) has
/// its MSS clamped to its tunnel's inner MTU (`mtus`, by tenant), so that
/// the LAN host never sends segments the tunnel cannot carry.
fn deliver(
    port: &mut Port,
    routes: &mut Option<RouteQuery>,
    t: &mut Tally,
    mut dns: Option<&mut DnsPort>,
    (from, mtus): (&mut impl ToLan, &[u16]),
    now: Instant,
    queue: u32,
) {
    let mtu_of = |tenant: usize| {
        mtus.get(tenant)
            .copied()
            .unwrap_or(crate::config::DEFAULT_TUNNEL_MTU)
    };
    let is_syn = |pkt: &ip::Packet<'_>| pkt.tcp().is_some_and(|s| s.flags & tcp::FLAG_SYN != 0);
    let counted = from.came_through_tunnel();
    match port {
        Port::Xsk {
            xsk,
            mac,
            neighbors,
            vlans,
        } => {
            let vlans = *vlans;
            // `tx` reaps the completion ring before reserving frames.
            let mut tx = xsk.tx(TX_BATCH);
            while let Some((p, tenant)) = from.next_packet() {
                let Some(pkt) = for_lan(p, tenant, &mut dns, t) else {
                    continue;
                };
                let hop = &mut |ip| Worker::next_hop(routes, ip);
                let Some((dst_mac, tags)) = neighbors.lookup(pkt.dst(), vlans, now, hop) else {
                    t.drop_no_neighbor += 1;
                    continue;
                };
                let bytes = pkt.as_bytes();
                let header = tags.header_len();
                let len = header + bytes.len();
                if tx.is_full() {
                    if let Err(e) = tx.commit() {
                        log::debug!("queue {queue}: TX wakeup: {e}");
                    }
                    tx = xsk.tx(TX_BATCH);
                }
                let Some(mut frame) = tx.next_frame() else {
                    t.drop_tx_full += 1;
                    continue;
                };
                let buf = frame.buf();
                if buf.len() < len {
                    t.drop_too_large += 1;
                    continue;
                }
                let ethertype = if pkt.is_ipv6() {
                    ethernet::ETHERTYPE_IPV6
                } else {
                    ethernet::ETHERTYPE_IPV4
                };
                if let Ok(mut eth) = ethernet::Frame::new_checked(&mut buf[..len]) {
                    let _ = eth.emit_tagged_header(dst_mac, *mac, tags, ethertype);
                }
                buf[header..len].copy_from_slice(bytes);
                if is_syn(&pkt) && pmtu::clamp_mss(&mut buf[header..len], mtu_of(tenant)) {
                    t.mss_clamped += 1;
                }
                frame.send(len);
                if counted {
                    delivered(t, tenant, bytes.len());
                }
            }
            if let Err(e) = tx.commit() {
                log::debug!("queue {queue}: TX wakeup: {e}");
            }
        }
        Port::Tun { tun, .. } => {
            while let Some((p, tenant)) = from.next_packet() {
                let Some(pkt) = for_lan(p, tenant, &mut dns, t) else {
                    continue;
                };
                // A SYN is small: clamped in a copy on the stack (one with
                // a larger payload, rare, goes as it is and relies on the
                // ICMP errors).
                let mut small = [0u8; 256];
                let mut bytes = pkt.as_bytes();
                if is_syn(&pkt)
                    && let Some(copy) = small.get_mut(..bytes.len())
                {
                    copy.copy_from_slice(bytes);
                    if pmtu::clamp_mss(copy, mtu_of(tenant)) {
                        t.mss_clamped += 1;
                        bytes = copy;
                    }
                }
                match tun.send(bytes) {
                    Ok(_) if counted => delivered(t, tenant, bytes.len()),
                    Ok(_) => {}
                    // The kernel's queue is full: dropped, counted.
                    Err(_) => t.drop_tx_full += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review h25 M2: a datagram socket whose last receive was full (more
    /// may wait, with no new event to come) must not let the worker sleep
    /// until its next timer (it did: only the LAN queue and the TLS
    /// tunnels were looked at, so the rest of a burst waited up to 100 ms).
    #[test]
    fn review_h25_datagrams_left_after_a_full_receive_keep_the_worker_awake() {
        let later = || Duration::from_millis(100);
        assert_eq!(poll_timeout(false, 0, false, later), later());
        let udp_slot: SlotBits = 1 << (MAX_EDGES + 1);
        assert_eq!(poll_timeout(false, udp_slot, false, later), Duration::ZERO);
        assert_eq!(poll_timeout(true, 0, false, later), Duration::ZERO);
        assert_eq!(poll_timeout(false, 0, true, later), Duration::ZERO);
    }
}
