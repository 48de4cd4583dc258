//! `sluice edge`: terminates gateways' tunnels and forwards their packets.
//!
//! The edge runs `edge.workers` workers (default: one per CPU the process
//! may run on), each a mio event loop on a thread of its own
//! ([`worker`]): its own TCP listener (one `SO_REUSEPORT` group on
//! `edge.listen`: the kernel spreads new connections, and a worker passes
//! a connection to one with fewer), its own queue of the multi-queue TUN
//! device, its own connections' sockets, read and written with the
//! tunnel driver (`sluice_runtime::driver`). Everything else is in the
//! sans-IO [`Core`] each worker has (`sluice_core::edge`): admission of
//! connections before authentication, their sessions, which configured
//! gateway a certificate is, and the per-packet decisions
//! (`sluice_core::edge::router`). What must hold for the edge as a whole
//! is in one [`Shared`]: the handshake and tunnel caps, each gateway's
//! reply-route quota, which worker holds a route to which address.
//!
//! A reply reaches the worker that owns its tunnel: the kernel's tun
//! driver puts each packet of a flow on the queue the flow's last packet
//! was written from (its flow table); a reply on another worker's queue
//! (an expired flow entry, a fragment, an ICMP error, more flows than the
//! table holds) is handed to the owner through a bounded queue
//! ([`mesh`]), counted. No lock or system call per packet: the packet
//! path reads the worker's own routes, and the shared books only for a
//! reply on the wrong worker (lock-free). One worker is the single loop of
//! old, on the calling thread, with a single-queue TUN device and a plain
//! listener.
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
//! A fatal error of any worker stops [`Edge::run`] with an error (the
//! process exits non-zero; the other workers stop and close their
//! sessions): the poller failing, or the TUN device failing to read (it
//! was deleted): an edge that can no longer forward must not keep its
//! tunnels up. A panic aborts the process. The metrics
//! ([`render_stats`]) add up the workers' counters, with a few per
//! worker.
//!
//! What this crate must not do: depend on eBPF or the gateway (it builds
//! and tests with the stable toolchain alone), or use `unsafe` (its TUN
//! device and memory advice are `sluice-sys`'s safe wrappers).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
mod mesh;
pub(crate) mod netfilter;
mod stats;
mod worker;

use std::{
    io,
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use mio::{Interest, Poll, Waker, net::TcpListener, unix::SourceFd};

pub use self::stats::{EdgeMetrics, render as render_stats};
use sluice_config as config;
use sluice_core::edge::{Core, MAX_WORKERS, Shared, WorkerId, router::RouterError};
use sluice_core::{gro, net};
use sluice_runtime::{driver, host, metrics, pki};
use sluice_sys as sys;

use crate::{
    config::{EdgeConfig, EdgeLimits},
    gro::Coalescer,
    mesh::Mesh,
    sys::{rlimit, tun::Tun},
    worker::{ACCEPTS_PER_TURN, LISTENER, TUN, WAKE, Worker},
};

/// Descriptors kept for everything but connections (listeners, TUN
/// queues, pollers, metrics, logs, host commands): this many, and
/// [`FD_PER_WORKER`] more per worker.
const FD_RESERVE: u64 = 128;
/// Descriptors of each worker besides connections: its listener, TUN
/// queue, datagram socket, poller, waker and spare.
const FD_PER_WORKER: u64 = 7;

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
    /// The controller's gateway list (an edge with `[controller]`).
    #[error("controller: {0}")]
    Controller(String),
}

fn ioerr(what: impl Into<String>) -> impl FnOnce(io::Error) -> EdgeError {
    let what = what.into();
    move |source| EdgeError::Io { what, source }
}

/// Descriptors kept for everything but connections with `workers`
/// workers.
fn fd_reserve(workers: usize) -> u64 {
    FD_RESERVE + FD_PER_WORKER * workers as u64
}

/// The caps in `limits` lowered so that connections never need more
/// descriptors than `nofile` leaves after [`fd_reserve`]: a quarter for
/// handshakes at most, the rest for tunnels.
pub(crate) fn fit_limits(limits: EdgeLimits, nofile: u64, workers: usize) -> EdgeLimits {
    let usable = nofile.saturating_sub(fd_reserve(workers)).max(8);
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

/// The workers `cfg` asks for: `edge.workers`, or one per CPU this
/// process may run on (its affinity and CPU quota), at most
/// [`MAX_WORKERS`].
pub fn workers_for(cfg: &EdgeConfig) -> usize {
    cfg.workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .clamp(1, MAX_WORKERS)
}

/// The running edge: its workers, the state they share, the kernel
/// configuration it made.
pub struct Edge {
    cfg: EdgeConfig,
    workers: Vec<Worker>,
    mesh: Arc<Mesh>,
    metrics: Arc<EdgeMetrics>,
    _table: Option<netfilter::TableGuard>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("listen", &self.cfg.listen)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// The start-up line: where the edge listens, its TUN device, workers,
/// gateways and caps.
fn log_start(cfg: &EdgeConfig, tun: &str, workers: usize, nofile: u64, limits: &EdgeLimits) {
    let gateways = cfg
        .gateways
        .iter()
        .map(|g| {
            let prefixes: Vec<String> = g.prefixes.iter().map(ToString::to_string).collect();
            format!("{} [{}]", g.name, prefixes.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    log::info!(
        "edge {} listening on {}, TUN {tun} (mtu {}), {workers} worker{}, gateways {gateways}; descriptors {nofile}, handshakes at most {} ({} per prefix), tunnels at most {}",
        cfg.name,
        cfg.listen,
        cfg.tun_mtu,
        if workers == 1 { "" } else { "s" },
        limits.max_handshakes,
        limits.max_handshakes_per_prefix,
        limits.max_tunnels,
    );
}

/// Opens the TUN device `cfg.tun` with `queues` queues, with virtio-net
/// headers if `tun_offload` (falling back to none if the kernel refuses).
fn open_tun(cfg: &EdgeConfig, queues: usize) -> Result<Vec<Tun>, EdgeError> {
    match Tun::open_queues(&cfg.tun, cfg.tun_offload, queues) {
        Err(e) if cfg.tun_offload && e.kind() != io::ErrorKind::AlreadyExists => {
            log::warn!(
                "TUN device {} with virtio-net headers: {e}; writing one packet at a time",
                cfg.tun
            );
            Tun::open_queues(&cfg.tun, false, queues)
        }
        r => r,
    }
    .map_err(ioerr(format!("opening TUN device {}", cfg.tun)))
}

/// The listeners of `workers` workers on `listen`: one socket as before
/// for one worker, else a `SO_REUSEPORT` group.
fn listeners(listen: std::net::SocketAddr, workers: usize) -> Result<Vec<TcpListener>, EdgeError> {
    let what = || format!("listening on {listen}");
    if workers == 1 {
        return Ok(vec![TcpListener::bind(listen).map_err(ioerr(what()))?]);
    }
    Ok(sys::reuseport::tcp_listeners(listen, workers)
        .map_err(ioerr(what()))?
        .into_iter()
        .map(TcpListener::from_std)
        .collect())
}

/// The datagram transport's sockets, one per worker on `addr` (a
/// `SO_REUSEPORT` group whose datagrams the kernel steers to the worker
/// that owns their receiver id), or none if it is off.
fn datagram_sockets(
    addr: Option<std::net::SocketAddr>,
    workers: usize,
) -> Result<Vec<Option<sys::udp::UdpSocket>>, EdgeError> {
    let Some(addr) = addr else {
        return Ok((0..workers).map(|_| None).collect());
    };
    let what = || format!("datagram transport on udp {addr}");
    let cfg = sys::udp::UdpConfig {
        reuseport: workers > 1,
        gro: true,
        recv_buffer: Some(8 << 20),
        send_buffer: Some(8 << 20),
        ..sys::udp::UdpConfig::default()
    };
    let socks = (0..workers)
        .map(|_| sys::udp::UdpSocket::bind(addr, &cfg))
        .collect::<io::Result<Vec<_>>>()
        .map_err(ioerr(what()))?;
    if workers > 1 {
        let n = u32::try_from(workers).unwrap_or(u32::MAX);
        let steer = sys::udp::ReuseportSteering::receiver_id(n).map_err(ioerr(what()))?;
        socks[0]
            .attach_reuseport_cbpf(&steer)
            .map_err(ioerr(what()))?;
    }
    Ok(socks.into_iter().map(Some).collect())
}

impl Edge {
    /// Raises the descriptor limit, loads TLS material, opens the TUN
    /// device (a queue per worker), configures the kernel (if
    /// `manage_network`) and binds the listeners (one per worker).
    pub fn new(cfg: EdgeConfig) -> Result<Self, EdgeError> {
        let n = workers_for(&cfg);
        let l = cfg.limits;
        let want = u64::from(l.max_handshakes) + u64::from(l.max_tunnels) + fd_reserve(n);
        let nofile = rlimit::raise_nofile(want).map_err(ioerr("reading RLIMIT_NOFILE"))?;
        let limits = fit_limits(l, nofile, n);
        if limits != l {
            log::warn!(
                "descriptor limit {nofile} (wanted {want}): at most {} handshakes and {} tunnels",
                limits.max_handshakes,
                limits.max_tunnels
            );
        }
        let tls = pki::server_config_with_crl(&cfg.ca, &cfg.cert, &cfg.key, cfg.crl.as_deref())?;
        let settings = cfg.core_settings();
        let shared = Arc::new(
            Shared::new(&settings, limits, &sys::mem::HugePages, n).map_err(EdgeError::Prefixes)?,
        );
        let tuns = open_tun(&cfg, n)?;
        // UDP GSO packets from user space need Linux 6.2; TCP ones work on
        // every kernel with IFF_VNET_HDR.
        let udp_gso = host::kernel_at_least(6, 2);
        let tun_name = tuns[0].name().to_owned();
        let table = if cfg.manage_network {
            Some(netfilter::setup(&cfg, &tun_name, n)?)
        } else {
            log::warn!(
                "manage_network = false: routes, NAT and the TUN filter (see netfilter in the README) are yours to set up"
            );
            None
        };
        let listeners = listeners(cfg.listen, n)?;
        let udps = datagram_sockets(cfg.datagram_listen, n)?;
        // Room for every handshake there can be (evictions), and a few
        // turns of connections passed between workers.
        let control = limits.max_handshakes as usize + 2 * ACCEPTS_PER_TURN * n;
        let mesh = Arc::new(Mesh::new(n, usize::from(cfg.tun_mtu).max(1500), control));
        let now = Instant::now();
        let mut workers = Vec::with_capacity(n);
        for (i, ((mut listener, tun), udp)) in listeners.into_iter().zip(tuns).zip(udps).enumerate()
        {
            let poll = Poll::new().map_err(ioerr("creating poller"))?;
            let reg = poll.registry();
            let udp = match udp {
                Some(mut sock) => {
                    reg.register(&mut sock, worker::UDP, Interest::READABLE)
                        .map_err(ioerr("registering the datagram socket"))?;
                    Some(worker::UdpPath::new(sock))
                }
                None => None,
            };
            reg.register(&mut listener, LISTENER, Interest::READABLE)
                .map_err(ioerr("registering listener"))?;
            reg.register(
                &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&tun)),
                TUN,
                Interest::READABLE,
            )
            .map_err(ioerr("registering TUN"))?;
            let waker = Waker::new(reg, WAKE).map_err(ioerr("creating waker"))?;
            let port = mesh.port(i, waker).ok_or_else(|| EdgeError::Io {
                what: format!("worker {i}"),
                source: io::ErrorKind::InvalidInput.into(),
            })?;
            let gro = tun
                .has_vnet_hdr()
                .then(|| Box::new(Coalescer::new(udp_gso)));
            let core = Core::for_worker(
                &settings,
                tls.clone(),
                driver::aead(),
                &shared,
                WorkerId::try_from(i).unwrap_or(WorkerId::MAX),
                now,
            );
            workers.push(Worker::new(
                i,
                poll,
                listener,
                tun,
                gro,
                core,
                mesh.clone(),
                port,
                (cfg.gateways.len(), udp),
            ));
        }
        log_start(&cfg, &tun_name, n, nofile, &limits);
        let metrics = Arc::new(EdgeMetrics {
            shared,
            cores: workers.iter().map(|w| w.core.stats()).collect(),
            mesh: mesh.clone(),
        });
        Ok(Self {
            cfg,
            workers,
            mesh,
            metrics,
            _table: table,
        })
    }

    /// The counters of every worker (for the metrics endpoint).
    pub fn stats(&self) -> Arc<EdgeMetrics> {
        self.metrics.clone()
    }

    /// The controller agent of an edge with `[controller]` (its stored
    /// allow-list installed now, before anything is served), to run on a
    /// thread of its own; `None` without.
    ///
    /// # Errors
    /// The stored gateway list cannot be read.
    pub fn agent(&self) -> Result<Option<agent::Agent>, EdgeError> {
        agent::install_stored(&self.cfg, &self.metrics.shared).map_err(EdgeError::Controller)?;
        Ok(agent::Agent::new(&self.cfg, self.metrics.shared.clone()))
    }

    /// Workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs every worker until `stop` is set (one worker on this thread,
    /// several on threads of their own), then closes every session.
    ///
    /// # Errors
    /// A worker's fatal error (its poller failing, its TUN queue failing
    /// to read: the device was deleted): every other worker stops too,
    /// closing its sessions, and the first error is returned (the process
    /// exits non-zero). An edge that can no longer forward must not keep
    /// its tunnels up.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), EdgeError> {
        if let [w] = &mut self.workers[..] {
            return w.run(stop);
        }
        supervise(&mut self.workers, &self.mesh, |w| w.run(stop))
    }
}

/// Runs `run` on every worker, each on a thread of its own (named
/// `sluice-edge-<index>`), until all have returned. The first to fail sets
/// [`Mesh::fail`], which stops (and wakes) the others; its error is
/// returned. A thread that cannot be started fails the same way. A panic
/// is resumed here (the `sluice` binary aborts on any panic first).
fn supervise<W: Send>(
    workers: &mut [W],
    mesh: &Mesh,
    run: impl Fn(&mut W) -> Result<(), EdgeError> + Sync,
) -> Result<(), EdgeError> {
    let run = &run;
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(workers.len());
        let mut first: Result<(), EdgeError> = Ok(());
        for (i, w) in workers.iter_mut().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-edge-{i}"))
                .spawn_scoped(s, move || {
                    let r = run(w);
                    if let Err(e) = &r {
                        log::error!("edge worker {i}: {e}; stopping the edge");
                        mesh.fail();
                    }
                    r
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    mesh.fail();
                    first = Err(EdgeError::Io {
                        what: format!("starting edge worker {i}"),
                        source: e,
                    });
                    break;
                }
            }
        }
        for h in handles {
            match h.join() {
                Ok(Err(e)) if first.is_ok() => first = Err(e),
                Ok(_) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first
    })
}

#[cfg(test)]
mod tests;
