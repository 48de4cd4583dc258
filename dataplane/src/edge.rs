//! `sluice edge`: terminates gateways' tunnels and forwards their packets.
//!
//! One mio event loop owns the TCP listener, the TUN device and every
//! tunnel connection. Packets from a tunnel are checked (IP header, source
//! inside `client_prefixes`) and written to the TUN device; the kernel
//! forwards them with source NAT to the edge's own address. Replies read
//! from the TUN device go back into the tunnel that last carried traffic
//! from their destination address (learned per source address), so several
//! gateways are served at once. Gateways with overlapping LAN prefixes are
//! not supported yet: the most recent sender of an address wins.
//!
//! With `tun_offload` (the default) the TUN device takes virtio-net
//! headers and the packets of each batch read from a tunnel go through
//! [`crate::gro`]: a flow's consecutive TCP segments (and UDP datagrams)
//! become one GSO packet, so the kernel forwards and translates one packet
//! where there were dozens. Replies are read one packet at a time.
//!
//! With `manage_network` (the default) the edge configures the kernel
//! itself: TUN up with its MTU, routes for `client_prefixes` into the TUN,
//! forwarding on, and an nftables table that masquerades those sources;
//! the table is removed on exit.
use std::{
    fmt::Write as _,
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
    unix::SourceFd,
};

use crate::{
    addr_map::{AddrMap, Full},
    config::EdgeConfig,
    gro::{Coalescer, VNET_HDR_LEN, VnetHdr},
    host,
    lpm::{Lpm, LpmError},
    metrics::sample,
    pki,
    sys::tun::Tun,
    tunnel::{SendError, Session, SessionConfig},
    wire::ip,
};

const LISTENER: Token = Token(0);
const TUN: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Packets read from the TUN device per loop iteration before other work.
const TUN_BUDGET: usize = 256;
/// Most inner addresses the edge routes replies to (4 MiB of table). An
/// address learnt from a tunnel stays until that tunnel closes (or another
/// tunnel sends from it); when the table is full, new addresses are not
/// learnt: their packets still go to the kernel, each is counted in
/// `route_table_full`, and replies to them drop as `no_route` until a
/// tunnel closes and frees room. Learnt routes are never evicted.
const MAX_ROUTES: usize = 1 << 16;

/// Errors that stop the edge from starting.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// A host command (ip, nft) failed.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// `client_prefixes` do not fit the anti-spoofing table.
    #[error("edge.client_prefixes: {0}")]
    ClientPrefixes(#[source] LpmError),
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

/// The edge's counters, shared with the metrics thread.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Tunnels accepted (TCP).
    pub conns_accepted: AtomicU64,
    /// Tunnels currently open.
    pub conns_active: AtomicU64,
    /// Tunnels closed, for any reason.
    pub conns_closed: AtomicU64,
    /// Packets from tunnels written to the TUN device.
    pub to_kernel_packets: AtomicU64,
    /// Their bytes.
    pub to_kernel_bytes: AtomicU64,
    /// Packets from the TUN device sent into tunnels.
    pub to_tunnel_packets: AtomicU64,
    /// Their bytes.
    pub to_tunnel_bytes: AtomicU64,
    /// Dropped: source address outside `client_prefixes`.
    pub drop_spoofed: AtomicU64,
    /// Dropped: not a valid IP packet.
    pub drop_malformed: AtomicU64,
    /// Dropped: no tunnel has carried traffic from the destination.
    pub drop_no_route: AtomicU64,
    /// Dropped: the tunnel's send buffer was full.
    pub drop_backpressure: AtomicU64,
    /// Dropped: writing to the TUN device failed.
    pub drop_tun_write: AtomicU64,
    /// Writes to the TUN device (one per packet, or per GSO packet).
    pub tun_writes: AtomicU64,
    /// Packets that went to the kernel inside GSO packets.
    pub gro_merged: AtomicU64,
    /// Dropped: a packet read from the TUN device came with offloads
    /// that were not asked for (a GSO packet).
    pub drop_tun_offload: AtomicU64,
    /// Inner addresses replies are routed to (a gauge).
    pub routes: AtomicU64,
    /// Packets whose source address could not be learnt because the route
    /// table was full (they are still forwarded; replies to them are not).
    pub route_table_full: AtomicU64,
}

impl EdgeStats {
    /// Renders the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let c = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            sample(out, name, "counter", Some(help), &[], v.load(Relaxed));
        };
        c(
            out,
            "sluice_edge_conns_accepted_total",
            "Tunnels accepted.",
            &self.conns_accepted,
        );
        sample(
            out,
            "sluice_edge_conns_active",
            "gauge",
            Some("Tunnels open."),
            &[],
            self.conns_active.load(Relaxed),
        );
        c(
            out,
            "sluice_edge_conns_closed_total",
            "Tunnels closed.",
            &self.conns_closed,
        );
        c(
            out,
            "sluice_edge_to_kernel_packets_total",
            "Packets decapsulated to the kernel.",
            &self.to_kernel_packets,
        );
        c(
            out,
            "sluice_edge_to_kernel_bytes_total",
            "Bytes decapsulated to the kernel.",
            &self.to_kernel_bytes,
        );
        c(
            out,
            "sluice_edge_to_tunnel_packets_total",
            "Packets sent into tunnels.",
            &self.to_tunnel_packets,
        );
        c(
            out,
            "sluice_edge_to_tunnel_bytes_total",
            "Bytes sent into tunnels.",
            &self.to_tunnel_bytes,
        );
        c(
            out,
            "sluice_edge_tun_writes_total",
            "Writes to the TUN device (a GSO packet is one write).",
            &self.tun_writes,
        );
        c(
            out,
            "sluice_edge_gro_merged_packets_total",
            "Packets written to the TUN device inside GSO packets.",
            &self.gro_merged,
        );
        sample(
            out,
            "sluice_edge_routes",
            "gauge",
            Some("Inner addresses replies are routed to."),
            &[],
            self.routes.load(Relaxed),
        );
        c(
            out,
            "sluice_edge_route_table_full_total",
            "Packets whose source address was not learnt: route table full.",
            &self.route_table_full,
        );
        let drops = [
            ("spoofed", &self.drop_spoofed),
            ("malformed", &self.drop_malformed),
            ("no_route", &self.drop_no_route),
            ("backpressure", &self.drop_backpressure),
            ("tun_write", &self.drop_tun_write),
            ("tun_offload", &self.drop_tun_offload),
        ];
        for (i, (reason, v)) in drops.iter().enumerate() {
            let help = (i == 0).then_some("Packets dropped by the edge, by reason.");
            sample(
                out,
                "sluice_edge_drops_total",
                "counter",
                help,
                &[("reason", reason)],
                v.load(Relaxed),
            );
        }
    }
}

struct Conn {
    sock: TcpStream,
    sess: Session,
    peer: SocketAddr,
    /// Inner source addresses learned from this tunnel.
    addrs: Vec<IpAddr>,
}

/// Removes the nftables table on drop.
struct NatGuard {
    table: String,
}

impl Drop for NatGuard {
    fn drop(&mut self) {
        let _ = host::run(&["nft", "delete", "table", "inet", &self.table], None);
    }
}

/// The running edge.
pub struct Edge {
    cfg: EdgeConfig,
    poll: Poll,
    listener: TcpListener,
    tun: Tun,
    /// Present when the TUN device takes virtio-net headers.
    gro: Option<Box<Coalescer>>,
    tls: Arc<rustls::ServerConfig>,
    conns: Vec<Option<Conn>>,
    /// `client_prefixes`, for the anti-spoofing check.
    clients: Lpm<()>,
    /// Inner address -> index in `conns` of the tunnel that last carried
    /// traffic from it (see [`MAX_ROUTES`]).
    routes: AddrMap<usize>,
    stats: Arc<EdgeStats>,
    _nat: Option<NatGuard>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("listen", &self.cfg.listen)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// Loads TLS material, opens the TUN device, configures the kernel (if
    /// `manage_network`) and binds the listener.
    pub fn new(cfg: EdgeConfig) -> Result<Self, EdgeError> {
        let tls = pki::server_config_with_crl(&cfg.ca, &cfg.cert, &cfg.key, cfg.crl.as_deref())?;
        let clients = Lpm::build(
            &cfg.client_prefixes
                .iter()
                .map(|&p| (p, ()))
                .collect::<Vec<_>>(),
        )
        .map_err(EdgeError::ClientPrefixes)?;
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
        let nat = if cfg.manage_network {
            Some(setup_network(&cfg, tun.name())?)
        } else {
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
        log::info!(
            "edge {} listening on {}, TUN {} (mtu {}), clients {:?}",
            cfg.name,
            cfg.listen,
            tun.name(),
            cfg.tun_mtu,
            cfg.client_prefixes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        Ok(Self {
            cfg,
            poll,
            listener,
            tun,
            gro,
            tls,
            conns: Vec::new(),
            clients,
            routes: AddrMap::new(MAX_ROUTES),
            stats: Arc::default(),
            _nat: nat,
        })
    }

    /// The counters (for the metrics endpoint).
    pub fn stats(&self) -> Arc<EdgeStats> {
        self.stats.clone()
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), EdgeError> {
        let mut events = Events::with_capacity(256);
        let mut tun_ready = false;
        let mut readable: Vec<usize> = Vec::with_capacity(64);
        let mut buf = vec![0u8; 65536];
        while !stop.load(Relaxed) {
            let now = Instant::now();
            let mut timeout = Duration::from_millis(200);
            if tun_ready {
                timeout = Duration::ZERO;
            }
            for c in self.conns.iter().flatten() {
                if let Some(t) = c.sess.poll_timeout() {
                    timeout = timeout.min(t.saturating_duration_since(now));
                }
            }
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
            readable.clear();
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept(),
                    TUN => tun_ready = true,
                    Token(t) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            readable.push(t - FIRST_CONN);
                        }
                    }
                }
            }
            let now = Instant::now();
            for &i in &readable {
                self.read_conn(i, now);
            }
            if tun_ready {
                tun_ready = self.read_tun(&mut buf);
            }
            for i in 0..self.conns.len() {
                let Some(c) = self.conns[i].as_mut() else {
                    continue;
                };
                if c.sess.poll_timeout().is_some_and(|t| t <= now) {
                    c.sess.handle_timeout(now);
                }
                c.sess.flush();
                if c.sess.wants_write()
                    && let Err(e) = c.sess.handle_write(&mut c.sock, now)
                {
                    log::info!("tunnel from {}: write: {e}", c.peer);
                    self.drop_conn(i);
                    continue;
                }
                if self.conns[i]
                    .as_ref()
                    .is_some_and(|c| c.sess.is_closed() && !c.sess.wants_write())
                {
                    self.drop_conn(i);
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let tls =
                        match rustls::server::UnbufferedServerConnection::new(self.tls.clone()) {
                            Ok(t) => t,
                            Err(e) => {
                                log::warn!("tunnel from {peer}: {e}");
                                continue;
                            }
                        };
                    let slot = self
                        .conns
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or_else(|| {
                            self.conns.push(None);
                            self.conns.len() - 1
                        });
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        Token(slot + FIRST_CONN),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("tunnel from {peer}: register: {e}");
                        continue;
                    }
                    let sess = Session::new(
                        tls.into(),
                        SessionConfig {
                            name: self.cfg.name.clone(),
                            keepalive: self.cfg.keepalive,
                            idle_timeout: self.cfg.idle_timeout,
                            ..SessionConfig::default()
                        },
                        Instant::now(),
                    );
                    log::info!("tunnel from {peer}: accepted");
                    self.conns[slot] = Some(Conn {
                        sock,
                        sess,
                        peer,
                        addrs: Vec::new(),
                    });
                    self.stats.conns_accepted.fetch_add(1, Relaxed);
                    self.stats.conns_active.fetch_add(1, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads a tunnel until it would block; delivers its packets to the TUN.
    fn read_conn(&mut self, i: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let was_established = c.sess.is_established();
        let (mut ok, mut spoofed, mut malformed, mut bytes, mut route_full) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut writer = TunWriter {
            tun: &self.tun,
            writes: 0,
            merged: 0,
            dropped: 0,
            gso_refused: false,
        };
        loop {
            let res = c.sess.handle_read(&mut c.sock, now);
            while let Some(pkt) = c.sess.poll_packet() {
                let Ok(p) = ip::Packet::new_checked(pkt) else {
                    malformed += 1;
                    continue;
                };
                let src = p.src();
                if self.clients.lookup(src).is_none() {
                    spoofed += 1;
                    continue;
                }
                match self.routes.insert(src, i) {
                    Ok(Some(prev)) if prev == i => {}
                    Ok(_) => {
                        if !c.addrs.contains(&src) {
                            c.addrs.push(src);
                        }
                    }
                    Err(Full { .. }) => route_full += 1,
                }
                ok += 1;
                bytes += p.as_bytes().len() as u64;
                match self.gro.as_deref_mut() {
                    Some(g) => g.push(p.as_bytes(), &mut |h, b| writer.write(h, b)),
                    None => writer.write_plain(p.as_bytes()),
                }
            }
            match res {
                Ok(o) if o.more => {}
                Ok(_) => break,
                Err(e) => {
                    if !c.sess.is_closed() {
                        log::info!("tunnel from {}: {e}", c.peer);
                    }
                    break;
                }
            }
        }
        // End of the batch: nothing is held back across event-loop turns.
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
        let ok = ok - writer.dropped;
        if !was_established && c.sess.is_established() {
            log::info!(
                "tunnel from {}: established with gateway `{}` (certificate {})",
                c.peer,
                c.sess.peer_name(),
                pki::peer_common_name(c.sess.peer_certificates()).unwrap_or_default()
            );
        }
        let s = &self.stats;
        s.to_kernel_packets.fetch_add(ok, Relaxed);
        s.to_kernel_bytes.fetch_add(bytes, Relaxed);
        s.drop_spoofed.fetch_add(spoofed, Relaxed);
        s.drop_malformed.fetch_add(malformed, Relaxed);
        s.drop_tun_write.fetch_add(writer.dropped, Relaxed);
        s.tun_writes.fetch_add(writer.writes, Relaxed);
        s.gro_merged.fetch_add(writer.merged, Relaxed);
        s.route_table_full.fetch_add(route_full, Relaxed);
        s.routes.store(self.routes.len() as u64, Relaxed);
    }

    /// Drains up to a budget of packets from the TUN device into tunnels.
    /// Returns true if more may be waiting.
    fn read_tun(&mut self, buf: &mut [u8]) -> bool {
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
                    log::warn!("TUN read: {e}");
                    more = false;
                    break;
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
            let Ok(p) = ip::Packet::new_checked(pkt) else {
                malformed += 1;
                continue;
            };
            let Some(c) = self
                .routes
                .get(p.dst())
                .and_then(|i| self.conns.get_mut(i))
                .and_then(Option::as_mut)
            else {
                no_route += 1;
                continue;
            };
            match c.sess.send_packet(p.as_bytes()) {
                Ok(()) => {
                    ok += 1;
                    bytes += p.as_bytes().len() as u64;
                }
                Err(SendError::Backpressure | SendError::NotEstablished | SendError::TooLarge) => {
                    full += 1;
                }
            }
        }
        let s = &self.stats;
        s.to_tunnel_packets.fetch_add(ok, Relaxed);
        s.to_tunnel_bytes.fetch_add(bytes, Relaxed);
        s.drop_no_route.fetch_add(no_route, Relaxed);
        s.drop_malformed.fetch_add(malformed, Relaxed);
        s.drop_backpressure.fetch_add(full, Relaxed);
        s.drop_tun_offload.fetch_add(offload, Relaxed);
        more
    }

    fn drop_conn(&mut self, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            log::info!(
                "tunnel from {} (gateway `{}`) closed: {:?}",
                c.peer,
                c.sess.peer_name(),
                c.sess.close_reason()
            );
            let _ = self.poll.registry().deregister(&mut c.sock);
            for &a in &c.addrs {
                if self.routes.get(a) == Some(i) {
                    self.routes.remove(a);
                }
            }
            self.stats.routes.store(self.routes.len() as u64, Relaxed);
            self.stats.conns_active.fetch_sub(1, Relaxed);
            self.stats.conns_closed.fetch_add(1, Relaxed);
        }
    }
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

/// Configures the kernel for the edge; returns the guard that removes the
/// NAT table again.
fn setup_network(cfg: &EdgeConfig, tun: &str) -> Result<NatGuard, EdgeError> {
    let mtu = cfg.tun_mtu.to_string();
    host::run(&["ip", "link", "set", "dev", tun, "mtu", &mtu, "up"], None)?;
    for p in &cfg.client_prefixes {
        let fam = if p.addr().is_ipv4() { "-4" } else { "-6" };
        host::run(
            &["ip", fam, "route", "replace", &p.to_string(), "dev", tun],
            None,
        )?;
    }
    for (path, what) in [
        ("/proc/sys/net/ipv4/ip_forward", "IPv4 forwarding"),
        ("/proc/sys/net/ipv6/conf/all/forwarding", "IPv6 forwarding"),
    ] {
        std::fs::write(path, "1").map_err(ioerr(format!("enabling {what} ({path})")))?;
    }
    let table = format!("sluice_edge_{tun}");
    let set = |v4: bool| {
        cfg.client_prefixes
            .iter()
            .filter(|p| p.addr().is_ipv4() == v4)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rules = String::new();
    for (fam, v4) in [("ip", true), ("ip6", false)] {
        let s = set(v4);
        if !s.is_empty() {
            let _ = writeln!(
                rules,
                "    {fam} saddr {{ {s} }} oifname != \"{tun}\" masquerade"
            );
        }
    }
    let script = format!(
        "table inet {table} {{}}\ndelete table inet {table}\n\
         table inet {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n}}\n"
    );
    host::run(&["nft", "-f", "-"], Some(&script))?;
    Ok(NatGuard { table })
}
