//! `sluice gateway`: the XDP classifier on the LAN interface and one
//! tunneler worker per RX queue.
//!
//! Start-up order matters for fail-closed behaviour: the `AF_XDP` sockets are
//! created and registered in the classifier's XSK map before the program is
//! attached, so from the first frame every packet the classifier marks for
//! the tunnel reaches a worker (which drops it while its tunnel is down)
//! and never the kernel's routing. The attachment is a `bpf_link` pinned in
//! bpffs: if the process dies, the classifier stays attached, its XSK map
//! entries disappear with the sockets, and tunnelled frames are dropped
//! (counted as `drop_no_socket`); a restarted gateway adopts the pinned
//! link and swaps its program in atomically. On a clean exit the program
//! is unpinned and detached.
mod admin;
mod domains;
mod neighbor;
mod policy;
mod stats;
mod worker;

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use sluice_common::Counter;

use self::{
    domains::DomainBypass,
    policy::PolicyControl,
    stats::TenantStats,
    worker::{Port, Route, TunnelParams, Worker},
};
pub use self::{neighbor::Neighbors, stats::WorkerStats};
use crate::{
    config::GatewayConfig,
    ebpf::{Classifier, EbpfError},
    host, metrics, pki,
    sys::xsk::{BindMode, XskConfig, XskError, XskSocket},
    tunnel::SessionConfig,
};

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// A host lookup failed (interface missing, ...).
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// An interface the configuration names does not exist.
    #[error("{}: {field}: interface `{iface}` does not exist", path.display())]
    NoInterface {
        /// The configuration file.
        path: std::path::PathBuf,
        /// The field (`gateway.lan`, `gateway.wan`).
        field: &'static str,
        /// The interface.
        iface: String,
    },
    /// Loading, filling or attaching the classifier failed.
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    /// An `AF_XDP` socket could not be created.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// The policy could not be installed.
    #[error("installing the policy: {0}")]
    Policy(String),
    /// A worker, poller or the metrics listener could not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Gateway {
    classifier: Arc<Mutex<Classifier>>,
    workers: Vec<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    pac: Option<JoinHandle<()>>,
    domains: Arc<DomainBypass>,
    control: Arc<PolicyControl>,
    tenant_stats: Vec<Arc<TenantStats>>,
    detector: Option<Arc<crate::policy::trusted::Detector>>,
    reload: Arc<AtomicBool>,
    endpoint: Option<crate::endpoint::Endpoint>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates the environment, loads the classifier, opens one `AF_XDP`
    /// socket per queue, attaches, and starts the workers and the metrics
    /// endpoint. Nothing is attached unless every step before succeeded.
    #[allow(
        clippy::too_many_lines,
        reason = "the start-up order, read top to bottom, is the fail-closed argument"
    )]
    pub fn start(cfg: &GatewayConfig, stop: Arc<AtomicBool>) -> Result<Self, GatewayError> {
        let tunnels = tunnel_params(cfg)?;
        if let Some((field, iface)) = crate::config::check::missing_interfaces(cfg)
            .into_iter()
            .next()
        {
            return Err(GatewayError::NoInterface {
                path: cfg.path.clone(),
                field,
                iface,
            });
        }
        let io = |what: &str| {
            let what = what.to_string();
            move |source| GatewayError::Io { what, source }
        };
        let reload = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            .map_err(io("installing the SIGHUP handler"))?;

        let mut classifier = Classifier::load()?;
        classifier.set_local_addrs(&host::local_addrs()?)?;
        let classifier = Arc::new(Mutex::new(classifier));
        // The policy goes in before anything is attached: the first frame
        // is classified by it.
        let control =
            PolicyControl::start(cfg, classifier.clone()).map_err(GatewayError::Policy)?;
        let detector = start_detector(cfg, &control, &stop)?.map(Arc::new);
        if let Some(d) = &detector {
            control.set_detector(d.clone());
        }
        let domains = control.domains();

        // No LAN (a host with endpoint mode only): no sockets, nothing
        // attached; the classifier's tries still serve the socket hooks.
        let (sockets, lan_mac) = match &cfg.lan {
            Some(lan) => {
                let mut c = classifier
                    .lock()
                    .map_err(|_| GatewayError::Policy("classifier lock poisoned".into()))?;
                attach_lan(cfg, lan, &mut c)?
            }
            None => (Vec::new(), [0; 6]),
        };
        let queues = u32::try_from(sockets.len()).unwrap_or(u32::MAX);

        // One core per worker: its socket, session and cache stay warm.
        let cpus = match &cfg.cpus {
            Some(list) => list.clone(),
            None => crate::sys::cpu::allowed_cpus().map_err(io("reading the CPU affinity"))?,
        };
        let mut stats = Vec::new();
        let mut tenant_stats = Vec::new();
        let mut workers = Vec::new();
        for (q, xsk) in (0..queues).zip(sockets) {
            let st = Arc::new(WorkerStats::default());
            let ts = Arc::new(TenantStats::default());
            stats.push(st.clone());
            tenant_stats.push(ts.clone());
            let w = Worker::new(
                q,
                Port::lan(xsk, lan_mac, cfg.lan_vlans),
                tunnels.clone(),
                Route::Meta,
                (st, ts),
                Some(domains.clone()),
            )
            .map_err(io(&format!("worker for queue {q}")))?;
            let stop = stop.clone();
            let cpu = (!cpus.is_empty()).then(|| cpus[q as usize % cpus.len()]);
            let h = std::thread::Builder::new()
                .name(format!("sluice-q{q}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        match crate::sys::cpu::pin_current_thread(cpu) {
                            Ok(()) => log::info!("queue {q}: worker pinned to CPU {cpu}"),
                            Err(e) => log::warn!("queue {q}: pinning to CPU {cpu}: {e}"),
                        }
                    }
                    w.run(&stop);
                })
                .map_err(io("spawning worker"))?;
            workers.push(h);
        }
        let endpoint = match &cfg.endpoint {
            Some(ep) => {
                let (e, w) =
                    start_endpoint(cfg, ep, &classifier, &tunnels, &control, &stop, queues)?;
                stats.push(w.1);
                tenant_stats.push(w.2);
                workers.push(w.0);
                control.set_routing(e.routing());
                Some(e)
            }
            None => None,
        };
        let procs = endpoint.as_ref().map(crate::endpoint::Endpoint::processes);
        let names: Vec<String> = policy::tunnels(cfg).into_iter().map(|(n, _)| n).collect();
        let served = start_metrics(
            cfg,
            &stop,
            &classifier,
            (stats, tenant_stats.clone(), names),
            control.clone(),
            procs,
        )
        .and_then(|m| Ok((m, start_pac(cfg, &stop)?)));
        let (metrics, pac) = match served {
            Ok(v) => v,
            Err(e) => {
                // Started but cannot serve: stop everything, the host's
                // routing failing closed.
                stop.store(true, Relaxed);
                for w in workers {
                    let _ = w.join();
                }
                if let Some(ep) = endpoint {
                    ep.stop(false);
                }
                return Err(e);
            }
        };
        Ok(Self {
            classifier,
            workers,
            metrics,
            pac,
            domains,
            control,
            tenant_stats,
            detector,
            reload,
            endpoint,
            stop,
        })
    }

    /// Waits until the stop flag is set (by a signal), then stops the
    /// workers and detaches the classifier.
    pub fn wait(mut self) -> Result<(), GatewayError> {
        let mut failed = false;
        while !self.stop.load(Relaxed) {
            if self.workers.iter().any(JoinHandle::is_finished) {
                log::error!("a worker stopped; stopping");
                failed = true;
                break;
            }
            if let Some(e) = &self.endpoint
                && !e.healthy()
            {
                log::error!("endpoint mode: the exec watcher stopped; stopping");
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            self.domains.expire(std::time::Instant::now());
            self.control.tunnels_up(&tunnels_up(&self.tenant_stats));
            if self.reload.swap(false, Relaxed) {
                log::info!("SIGHUP: reloading the policy");
                let _ = self.control.reload();
                if let Some(d) = &self.detector {
                    d.recheck();
                }
            }
        }
        drop(self.detector.take());
        self.stop.store(true, Relaxed);
        // Detach first: from now on the kernel sees no XDP program. Frames
        // are no longer redirected to (dying) workers.
        if let Ok(mut c) = self.classifier.lock() {
            c.detach()?;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Routing last: until it goes, the host's tunnelled packets reach
        // a socket nobody serves and are dropped, never sent direct.
        if let Some(e) = self.endpoint.take() {
            e.stop(!failed);
        }
        if let Some(m) = self.metrics.take() {
            let _ = m.join();
        }
        if let Some(p) = self.pac.take() {
            let _ = p.join();
        }
        log::info!("gateway stopped");
        Ok(())
    }
}

/// The workers' counters, per-tunnel counters and the tunnels' names.
type AllStats = (Vec<Arc<WorkerStats>>, Vec<Arc<TenantStats>>, Vec<String>);

/// Which tunnels are up on at least one worker.
fn tunnels_up(stats: &[Arc<TenantStats>]) -> Vec<bool> {
    (0..stats::TENANTS)
        .map(|t| stats.iter().any(|s| s.up[t].load(Relaxed) == 1))
        .collect()
}

/// One TLS client configuration per tunnel (internet first, then each
/// private-access tenant).
fn tunnel_params(cfg: &GatewayConfig) -> Result<Vec<TunnelParams>, GatewayError> {
    policy::tunnels(cfg)
        .into_iter()
        .map(|(_, t)| {
            Ok(TunnelParams {
                edge: t.edge,
                server_name: pki::server_name(&t.server_name)?,
                tls: pki::client_config_with_crl(&t.ca, &t.cert, &t.key, t.crl.as_deref())?,
                session: SessionConfig {
                    name: cfg.name.clone(),
                    keepalive: t.keepalive,
                    idle_timeout: t.idle_timeout,
                    coalesce_delay: t.coalesce_delay,
                    ..SessionConfig::default()
                },
            })
        })
        .collect()
}

/// Trusted-network detection, if the forwarding profile has criteria: the
/// first evaluation sets the network state before anything is attached.
fn start_detector(
    cfg: &GatewayConfig,
    control: &Arc<PolicyControl>,
    stop: &Arc<AtomicBool>,
) -> Result<Option<crate::policy::trusted::Detector>, GatewayError> {
    let f = &cfg.policy.forwarding;
    if f.criteria.is_empty() {
        return Ok(None);
    }
    let mut sources = crate::policy::trusted::Sources::default();
    let d = &cfg.detection;
    if let Some(r) = &d.resolv_conf {
        sources.resolv_conf.clone_from(r);
    }
    if let Some(l) = &d.dhcp_leases {
        sources.dhcp_leases.clone_from(l);
    }
    if let Some(v) = &d.vpn_interfaces {
        sources.vpn_interfaces.clone_from(v);
    }
    if let Some(ep) = &cfg.endpoint {
        sources.ignore_interfaces.push(ep.interface.clone());
        sources.ignore_interfaces.push(format!("{}x", ep.interface));
    }
    sources.egress_probe = Some(cfg.tunnel.edge);
    let c = control.clone();
    crate::policy::trusted::Detector::start(
        f.criteria.clone(),
        sources,
        f.interval,
        stop.clone(),
        move |state| c.set_network(state),
    )
    .map(Some)
    .map_err(|source| GatewayError::Io {
        what: "starting trusted-network detection".into(),
        source,
    })
}

/// Serves the metrics (`GET /metrics` only) and the admin API (policy
/// status, reload, tenant switch, explain, flows, the domain table) on
/// the admin socket, if configured ([`admin`]).
fn start_metrics(
    cfg: &GatewayConfig,
    stop: &Arc<AtomicBool>,
    classifier: &Arc<Mutex<Classifier>>,
    stats: AllStats,
    control: Arc<PolicyControl>,
    procs: Option<Arc<crate::endpoint::ProcessBypass>>,
) -> Result<Option<JoinHandle<()>>, GatewayError> {
    admin::start(cfg, stop, classifier, stats, control, procs)
}

/// The endpoint worker's thread and counters.
type EndpointWorker = (JoinHandle<()>, Arc<WorkerStats>, Arc<TenantStats>);

/// Starts endpoint mode: routing, socket hooks, exec watcher, and one
/// worker on sluice's side of the veth pair (its "queue" number follows
/// the LAN's, for metrics).
fn start_endpoint(
    cfg: &GatewayConfig,
    ep: &crate::config::EndpointConfig,
    classifier: &Arc<Mutex<Classifier>>,
    tunnels: &[TunnelParams],
    control: &Arc<PolicyControl>,
    stop: &Arc<AtomicBool>,
    queue: u32,
) -> Result<(crate::endpoint::Endpoint, EndpointWorker), GatewayError> {
    let io = |what: String| move |source: std::io::Error| GatewayError::Io { what, source };
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(io("installing the SIGHUP handler".into()))?;
    let mut endpoint =
        crate::endpoint::Endpoint::start(cfg, ep, classifier, reload).map_err(|e| {
            GatewayError::Io {
                what: "starting endpoint mode".into(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    let peer = match ep.path {
        crate::config::EndpointPath::Tun => ep.interface.clone(),
        crate::config::EndpointPath::Veth => endpoint.peer(),
    };
    let started = (|| {
        let port = if let Some(tun) = endpoint.take_tun() {
            Port::tun(tun)
        } else {
            let ifindex = host::ifindex(&peer)?;
            let mac = host::mac(&peer)?;
            let xsk = XskSocket::new(ifindex, 0, &XskConfig::default(), BindMode::Auto)?;
            if let Some(c) = endpoint.classifier() {
                c.register_socket(0, std::os::fd::AsFd::as_fd(&xsk))?;
            }
            endpoint.attach().map_err(|e| GatewayError::Io {
                what: "endpoint mode".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            Port::xsk(xsk, mac)
        };
        let st = Arc::new(WorkerStats::default());
        let ts = Arc::new(TenantStats::default());
        // This host's packets: the tunnel comes from this host's profile
        // (the veth path's classifier has no policy of its own).
        let route = Route::Lookup(control.published());
        let w = Worker::new(
            queue,
            port,
            tunnels.to_vec(),
            route,
            (st.clone(), ts.clone()),
            Some(control.domains()),
        )
        .map_err(io(format!("endpoint worker on {peer}")))?;
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name("sluice-endpoint".into())
            .spawn(move || w.run(&stop))
            .map_err(io("spawning the endpoint worker".into()))?;
        Ok::<_, GatewayError>((h, st, ts))
    })();
    match started {
        Ok(w) => {
            log::info!(
                "endpoint mode: this host's traffic enters the tunnel through {} ({:?} path, worker on {peer}), inner address {}",
                ep.interface,
                ep.path,
                ep.address
            );
            Ok((endpoint, w))
        }
        Err(e) => {
            endpoint.stop(false);
            Err(e)
        }
    }
}

/// Serves the PAC file, if configured: the configured domains, bypass
/// prefixes and VPN gateways go `DIRECT`.
fn start_pac(
    cfg: &GatewayConfig,
    stop: &Arc<AtomicBool>,
) -> Result<Option<JoinHandle<()>>, GatewayError> {
    let Some(p) = &cfg.pac else {
        return Ok(None);
    };
    let direct: Vec<_> = cfg
        .bypass
        .iter()
        .chain(&cfg.vpn_gateways)
        .copied()
        .collect();
    let text = crate::pac::render(&cfg.domains.patterns, &direct, &p.proxy);
    log::info!(
        "serving the PAC file on http://{}/proxy.pac (proxy {})",
        p.listen,
        p.proxy
    );
    crate::pac::serve(p.listen, stop.clone(), text, &p.hosts)
        .map(Some)
        .map_err(|source| GatewayError::Io {
            what: format!("serving the PAC file on {}", p.listen),
            source,
        })
}

/// A LAN queue's socket: `rx_frames` posted for receiving, as many for
/// sending, rings to match.
fn lan_xsk_config(cfg: &GatewayConfig) -> XskConfig {
    let d = XskConfig::default();
    XskConfig {
        frame_count: cfg.rx_frames * 2,
        fill_size: cfg.rx_frames,
        rx_size: cfg.rx_frames,
        ..d
    }
}

/// Opens one `AF_XDP` socket per RX queue of the LAN interface, registers
/// them, then attaches the classifier there (pinned, so that a crash leaves
/// it attached and failing closed rather than handing tunnelled traffic to
/// kernel routing). Returns the sockets and the interface's MAC.
fn attach_lan(
    cfg: &GatewayConfig,
    lan: &str,
    classifier: &mut Classifier,
) -> Result<(Vec<XskSocket>, crate::wire::ethernet::Mac), GatewayError> {
    let ifindex = host::ifindex(lan)?;
    let lan_mac = host::mac(lan)?;
    let queues = cfg.queues.unwrap_or(host::rx_queues(lan)?);
    let mut sockets = Vec::new();
    for q in 0..queues {
        let xsk = XskSocket::new(ifindex, q, &lan_xsk_config(cfg), BindMode::Auto)?;
        classifier.register_socket(q, std::os::fd::AsFd::as_fd(&xsk))?;
        sockets.push(xsk);
    }
    // Before the classifier is attached: no frame is untagged without its
    // way back.
    host::ensure_bpffs(&cfg.bpffs)?;
    let pin = host::classifier_pin(&cfg.bpffs, lan)?;
    if cfg.lan_vlans == crate::ebpf::VlanMode::Untag {
        let mut egress = pin.clone().into_os_string();
        egress.push("-vlan-egress");
        classifier.attach_vlan_egress(lan, Some(std::path::Path::new(&egress)))?;
    }
    classifier.set_vlan_mode(cfg.lan_vlans)?;
    let mode = classifier.attach_pinned(lan, attach_mode(cfg, lan), &pin)?;
    log::info!(
        "gateway `{}`: classifier attached to {lan} ({mode:?}), {queues} queue(s), {} bypass prefixes, {} VPN gateways, {} bypass domains, edge {}",
        cfg.name,
        cfg.bypass.len(),
        cfg.vpn_gateways.len(),
        cfg.domains.patterns.len(),
        cfg.tunnel.edge
    );
    Ok((sockets, lan_mac))
}

/// The configured attach mode, with `auto` resolved for the LAN
/// interface's driver ([`crate::ebpf::AttachMode::for_driver`]).
fn attach_mode(cfg: &GatewayConfig, lan: &str) -> crate::ebpf::AttachMode {
    let driver = crate::sys::ethtool::driver(lan)
        .map_err(|e| log::warn!("{lan}: driver unknown ({e}); auto means native"))
        .ok();
    let mode = cfg.xdp_mode.for_driver(driver.as_deref());
    log::info!(
        "{} (driver {}): XDP mode {:?} configured, {mode:?} used",
        lan,
        driver.as_deref().unwrap_or("unknown"),
        cfg.xdp_mode
    );
    mode
}

fn render(out: &mut String, classifier: &Mutex<Classifier>, stats: &[Arc<WorkerStats>]) {
    if let Ok(c) = classifier.lock()
        && let Ok(counts) = c.counters()
    {
        let _ = writeln!(
            out,
            "# HELP sluice_xdp_packets_total Frames seen by the XDP classifier, by verdict or drop reason.\n\
                 # TYPE sluice_xdp_packets_total counter"
        );
        for ctr in Counter::ALL {
            metrics::sample(
                out,
                "sluice_xdp_packets_total",
                "counter",
                None,
                &[("verdict", ctr.name())],
                counts[ctr.index() as usize],
            );
        }
    }
    WorkerStats::render_all(out, stats);
}
