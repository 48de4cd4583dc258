//! `sluice gateway`: the XDP classifier on the LAN interface and one
//! tunneler worker per RX queue.
//!
//! Start-up order matters for fail-closed behaviour: the `AF_XDP` sockets are
//! created and registered in the classifier's XSK map before the program is
//! attached, so from the first frame every packet the classifier marks for
//! the tunnel reaches a worker (which drops it while its tunnel is down)
//! and never the kernel's routing. The attachment is a `bpf_link` pinned in
//! bpffs: when the process ends, for whatever reason, the classifier stays
//! attached, its XSK map entries disappear with the sockets, and tunnelled
//! frames are dropped (counted as `drop_no_socket`); a restarted gateway
//! fills its own maps (policy, local addresses, sockets) and then adopts the
//! pinned link, swapping its program in atomically. A stop never detaches:
//! only the operator's `sluice gateway detach` ([`detach`]) removes the pin
//! and the program, and with them what kept must-tunnel traffic off the
//! kernel's plain routing.
//!
//! Every thread is supervised ([`supervise`]): one that stops or stops
//! making progress stops the gateway with [`EXIT_FAULT`], failing closed.
mod admin;
pub mod agent;
mod control;
mod dns_relay;
mod domains;
mod edges;
pub(crate) mod fault;
mod neighbor;
pub use self::control::PolicyError;
mod stats;
pub(crate) mod supervise;
pub mod trusted;
mod worker;

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sluice_common::Counter;

use self::{
    control::PolicyControl,
    dns_relay::DnsRelay,
    domains::DomainBypass,
    stats::TenantStats,
    supervise::{Heartbeat, Registry, Watchdog},
    worker::{Port, Route, TunnelParams, Worker},
};
pub use self::{
    neighbor::Neighbors,
    stats::WorkerStats,
    supervise::{EXIT_FAULT, Fault},
};
use crate::{
    config::GatewayConfig,
    ebpf::{EbpfError, Programs},
    host, metrics, pki,
    sys::{
        lock::Lock,
        rtnl::RouteMonitor,
        xsk::{BindMode, XskConfig, XskError, XskSocket},
    },
    tunnel::SessionConfig,
};

/// How long the main loop may go without a turn (a policy reload runs in
/// it and may take seconds with very large prefix lists).
const MAIN_STUCK_AFTER: Duration = Duration::from_secs(30);
/// The exec watcher's thread: a stop waits for it last.
const EXEC_WATCHER: &str = "sluice-exec";
/// How long trusted-network detection may go without a turn (one
/// evaluation waits at most for one name to resolve).
const DETECTOR_STUCK_AFTER: Duration = Duration::from_secs(10);
/// How long the domain bypass thread may make no progress (a policy swap
/// holds its lock while it rewrites every answered address's entry).
const DNS_STUCK_AFTER: Duration = Duration::from_secs(30);

/// Errors that stop the gateway from starting, or that it stopped on.
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
    Policy(PolicyError),
    /// A worker, poller or the metrics listener could not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another gateway holds this instance's lock.
    #[error(
        "another sluice gateway runs here (it holds {}): stop it first",
        lock.display()
    )]
    Running {
        /// The lock file.
        lock: PathBuf,
    },
    /// The gateway stopped on a fault (a thread died or hung): the
    /// classifier stays attached and pinned, failing closed. The process
    /// exits with [`EXIT_FAULT`].
    #[error("stopped on a fault: {0}")]
    Fault(Fault),
    /// The controller (a file with `[controller]`) gave no policy.
    #[error("controller: {0}")]
    Controller(String),
    /// `sluice gateway detach` could not remove a pin.
    #[error("detach: removing the pin {}: {source}", pin.display())]
    DetachPin {
        /// The pin.
        pin: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `sluice gateway detach` found an XDP program still attached.
    #[error(
        "detach: an XDP program is still attached to {lan} (one sluice did not pin, or another process holds its link): see `ip link show dev {lan}`"
    )]
    StillAttached {
        /// The LAN interface.
        lan: String,
    },
    /// `sluice gateway detach` could not remove endpoint mode's pins.
    #[error("detach: {0}")]
    DetachEndpoint(crate::endpoint::EndpointError),
}

/// A running gateway.
pub struct Gateway {
    /// Held to the end: its maps, and the pinned link's descriptor (the
    /// pin outlives it).
    _classifier: Arc<Mutex<Programs>>,
    /// Where the classifier's link is pinned (it stays when the gateway
    /// stops).
    pin: Option<PathBuf>,
    registry: Arc<Registry>,
    watchdog: Watchdog,
    main_beat: Heartbeat,
    /// Set once the main loop has ended (after `stop`).
    main_done: Arc<AtomicBool>,
    control: Arc<PolicyControl>,
    tenant_stats: Vec<Arc<TenantStats>>,
    detector: Option<Arc<trusted::Detector>>,
    reload: Arc<AtomicBool>,
    endpoint: Option<crate::endpoint::Endpoint>,
    stop: Arc<AtomicBool>,
    /// Held for the life of the process.
    _lock: (Lock, Option<Lock>),
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("threads", &self.registry)
            .finish_non_exhaustive()
    }
}

/// What a start that fails after threads were spawned must undo: stop
/// them (the classifier stays pinned, endpoint routing failing closed).
struct Undo {
    stop: Arc<AtomicBool>,
    registry: Arc<Registry>,
    endpoint: Option<crate::endpoint::Endpoint>,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.stop.store(true, Relaxed);
        let deadline = Instant::now() + supervise::JOIN_DEADLINE;
        self.registry.wait_finished(deadline, &[EXEC_WATCHER]);
        if let Some(e) = self.endpoint.take() {
            e.stop();
        }
        let left = self.registry.wait_finished(deadline, &[]);
        if !left.is_empty() {
            log::error!("start failed: threads still running: {}", left.join(", "));
        }
    }
}

/// The instance locks of `cfg`: its LAN interface's (`lan-<name>`), or
/// `endpoint` without a LAN; with a LAN and endpoint mode, `endpoint` too
/// (one network namespace has one endpoint mode: its routing, TUN device
/// and pinned hooks). Review finding: a gateway of another LAN, or a
/// `detach` of an endpoint-only configuration, took another lock and tore
/// down a running gateway's endpoint routing and hooks.
fn instance_lock(cfg: &GatewayConfig) -> Result<(Lock, Option<Lock>), GatewayError> {
    let lan = cfg.lan.as_deref().map(|l| format!("lan-{l}"));
    let main = take_lock(lan.as_deref().unwrap_or("endpoint"))?;
    let endpoint = match (&lan, &cfg.endpoint) {
        (Some(_), Some(_)) => Some(take_lock("endpoint")?),
        _ => None,
    };
    Ok((main, endpoint))
}

/// Takes the instance lock `name`, without waiting.
fn take_lock(name: &str) -> Result<Lock, GatewayError> {
    let path = host::instance_lock(name)?;
    match Lock::try_acquire(&path) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(GatewayError::Running { lock: path }),
        Err(source) => Err(GatewayError::Io {
            what: format!("taking the lock {}", path.display()),
            source,
        }),
    }
}

/// Spawns thread `name` running `f` and registers it with `beat`.
fn spawn_supervised(
    registry: &Registry,
    name: &str,
    beat: Option<Heartbeat>,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), GatewayError> {
    let h = std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| GatewayError::Io {
            what: format!("spawning {name}"),
            source,
        })?;
    registry.thread(name, h, beat);
    Ok(())
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
        fault::warn_if_compiled_in();
        let tunnels = tunnel_params(cfg)?;
        if let Some((field, iface)) = crate::check::missing_interfaces(cfg).into_iter().next() {
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
        let lock = instance_lock(cfg)?;
        let reload = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            .map_err(io("installing the SIGHUP handler"))?;

        let mut classifier = Programs::load()?;
        // Subscribed before the first read: no change in between is missed.
        let addr_monitor = RouteMonitor::new().map_err(io("watching address changes"))?;
        let local = host::local_addrs()?;
        classifier.set_local_addrs(&local)?;
        let classifier = Arc::new(Mutex::new(classifier));
        // The policy goes in before anything is attached: the first frame
        // is classified by it.
        let control =
            PolicyControl::start(cfg, classifier.clone()).map_err(GatewayError::Policy)?;
        if let Some(lan) = &cfg.lan {
            control.keep_outages_in(
                lock.0.path().with_extension("outages"),
                host::classifier_pin(&cfg.bpffs, lan)?,
            );
        }
        let detector = start_detector(cfg, &control, &stop)?.map(Arc::new);
        if let Some(d) = &detector {
            control.set_detector(d.clone());
        }
        let domains = control.domains();
        let registry = Arc::new(Registry::default());
        if let Some(d) = &detector {
            let (a, b) = (d.clone(), d.clone());
            registry.watch(
                "sluice-netstate",
                move || a.is_finished(),
                Some((move || b.turns(), DETECTOR_STUCK_AFTER)),
            );
        }

        // No LAN (a host with endpoint mode only): no sockets, nothing
        // attached; the classifier's tries still serve the socket hooks.
        let (sockets, lan_mac, pin) = match &cfg.lan {
            Some(lan) => {
                let mut c = classifier
                    .lock()
                    .map_err(|_| GatewayError::Policy(PolicyError::Poisoned))?;
                let (s, m, p) = attach_lan(cfg, lan, &mut c)?;
                (s, m, Some(p))
            }
            None => (Vec::new(), [0; 6], None),
        };
        let queues = u32::try_from(sockets.len()).unwrap_or(u32::MAX);
        // From here on a failed start stops what it started; the
        // classifier stays pinned.
        let mut undo = Undo {
            stop: stop.clone(),
            registry: registry.clone(),
            endpoint: None,
            armed: true,
        };
        {
            let beat = Heartbeat::new();
            let (c, stop, b) = (classifier.clone(), stop.clone(), beat.clone());
            spawn_supervised(&registry, "sluice-addrs", Some(beat), move || {
                watch_local_addrs(&c, addr_monitor, local, &stop, &b);
            })?;
        }
        // The domain bypass's thread: the workers hand it DNS messages
        // (worker `q` is slot `q`, the endpoint worker slot `queues`).
        let relay = DnsRelay::new(queues as usize + 1, domains.watching());
        {
            let beat = Heartbeat::new();
            let (r, d, stop, b) = (relay.clone(), domains.clone(), stop.clone(), beat.clone());
            let h = std::thread::Builder::new()
                .name("sluice-dns".into())
                .spawn(move || dns_relay::serve(&r, &d, &stop, &b))
                .map_err(io("spawning sluice-dns"))?;
            // Its own limit: a policy swap rewrites every answered
            // address's entry under the lock this thread takes.
            registry.watch(
                "sluice-dns",
                move || h.is_finished(),
                Some((move || beat.turns(), DNS_STUCK_AFTER)),
            );
        }

        // One core per worker: its socket, session and cache stay warm.
        let cpus = match &cfg.cpus {
            Some(list) => list.clone(),
            None => crate::sys::cpu::allowed_cpus().map_err(io("reading the CPU affinity"))?,
        };
        let mut stats = Vec::new();
        let mut tenant_stats = Vec::new();
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
                Some((&relay, q as usize)),
            )
            .map_err(io(&format!("worker for queue {q}")))?;
            let stop = stop.clone();
            let cpu = (!cpus.is_empty()).then(|| cpus[q as usize % cpus.len()]);
            let beat = Heartbeat::new();
            let b = beat.clone();
            spawn_supervised(&registry, &format!("sluice-q{q}"), Some(beat), move || {
                if let Some(cpu) = cpu {
                    match crate::sys::cpu::pin_current_thread(cpu) {
                        Ok(()) => log::info!("queue {q}: worker pinned to CPU {cpu}"),
                        Err(e) => log::warn!("queue {q}: pinning to CPU {cpu}: {e}"),
                    }
                }
                w.run(&stop, &b);
            })?;
        }
        if let Some(ep) = &cfg.endpoint {
            let (mut e, w) = start_endpoint(
                cfg,
                ep,
                &classifier,
                &tunnels,
                &control,
                &stop,
                (queues, &relay),
                &registry,
            )?;
            stats.push(w.0);
            tenant_stats.push(w.1);
            control.set_routing(e.routing());
            if let Some((h, beat)) = e.take_watcher() {
                registry.thread(EXEC_WATCHER, h, Some(beat));
            }
            undo.endpoint = Some(e);
        }
        let procs = undo
            .endpoint
            .as_ref()
            .map(crate::endpoint::Endpoint::processes);
        let names: Vec<String> = control::tunnels(cfg).into_iter().map(|(n, _)| n).collect();
        let gauges = (stats.clone(), tenant_stats.clone());
        if let Some(section) = &cfg.controller {
            let a = agent::Agent {
                path: cfg.path.clone(),
                section: section.clone(),
                control: control.clone(),
                workers: stats.clone(),
                tenants: tenant_stats.clone(),
                names: names.clone(),
            };
            let s = stop.clone();
            let h = std::thread::Builder::new()
                .name("sluice-agent".into())
                .spawn(move || a.run(&s))
                .map_err(io("spawning sluice-agent"))?;
            // Supervised while it runs; not waited for at a stop (a long
            // poll of the controller may be in flight: the process ends
            // it).
            let s = stop.clone();
            registry.watch(
                "sluice-agent",
                move || h.is_finished() || s.load(Relaxed),
                None::<(fn() -> u64, Duration)>,
            );
        }
        // The metrics listener and the admin API, on one supervised thread.
        if let Some(h) = admin::start(
            cfg,
            &stop,
            &classifier,
            (stats, tenant_stats.clone(), names),
            control.clone(),
            procs,
        )? {
            registry.thread("sluice-http", h, None);
        }
        if let Some(h) = start_pac(cfg, &stop)? {
            registry.thread("sluice-pac", h, None);
        }
        let main_beat = Heartbeat::new();
        let main_done = Arc::new(AtomicBool::new(false));
        {
            let (b, done) = (main_beat.clone(), main_done.clone());
            registry.watch(
                "main",
                move || done.load(std::sync::atomic::Ordering::SeqCst),
                Some((move || b.turns(), MAIN_STUCK_AFTER)),
            );
        }
        // Last: a fault from now on stops the gateway.
        let watchdog = Watchdog::start(registry.clone(), stop.clone(), move || {
            // No live worker holds a tunnel the metrics could show as up.
            for s in &gauges.0 {
                s.tunnel_up.store(0, Relaxed);
            }
            for t in &gauges.1 {
                for up in &t.up {
                    up.store(0, Relaxed);
                }
            }
        })
        .map_err(io("starting the watchdog"))?;
        undo.armed = false;
        Ok(Self {
            _classifier: classifier,
            pin,
            registry,
            watchdog,
            main_beat,
            main_done,
            control,
            tenant_stats,
            detector,
            reload,
            endpoint: undo.endpoint.take(),
            stop,
            _lock: lock,
        })
    }

    /// Runs the periodic work until the stop flag is set (by a signal, or
    /// by the watchdog on a fault), then stops every thread. The classifier
    /// stays attached and pinned (tunnelled frames dropped until a gateway
    /// runs again) and endpoint routing stays failing closed: only
    /// [`detach`] removes them. `Ok` for a stop on a signal whose threads
    /// all returned; [`GatewayError::Fault`] otherwise.
    pub fn wait(mut self) -> Result<(), GatewayError> {
        let mut watchdog_seen = (u64::MAX, Instant::now());
        while !self.stop.load(Relaxed) {
            self.main_beat.beat();
            std::thread::sleep(Duration::from_millis(100));
            // A stop (or a fault) raised while asleep: nothing more goes
            // into the classifier's state.
            if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let now = Instant::now();
            if let Some(f) = self.watchdog.check(&mut watchdog_seen, now) {
                self.watchdog.fault(&f);
                break;
            }
            self.control.tunnels_up(&tunnels_up(&self.tenant_stats));
            if self.reload.swap(false, Relaxed) {
                log::info!("SIGHUP: reloading the policy");
                let _ = self.control.reload();
                if let Some(d) = &self.detector {
                    d.recheck();
                }
            }
        }
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.main_done
            .store(true, std::sync::atomic::Ordering::SeqCst);
        log::info!("stopping: waiting for the threads to return");
        // The exec watcher last: until sluice's own last command has run
        // (`ip`, to fail closed), execs need its answers.
        let deadline = Instant::now() + supervise::JOIN_DEADLINE;
        self.registry.wait_finished(deadline, &[EXEC_WATCHER]);
        // Routing fails closed whether or not every thread returned; but
        // with the exec watcher stuck, every exec on the host (those of
        // `ip` included) waits for it until this process ends: end it now,
        // leaving what a crash leaves (the rules refusing, the hooks
        // pinned).
        if self.registry.is_stuck(EXEC_WATCHER) {
            log::error!(
                "the exec watcher is stuck: exiting without running commands (execs wait for it); endpoint routing stays as a crash leaves it, failing closed"
            );
            self.watchdog.stopped();
            let f = self
                .watchdog
                .recorded()
                .unwrap_or_else(|| Fault::NotReturned(vec![EXEC_WATCHER.into()]));
            std::mem::forget(self);
            return Err(GatewayError::Fault(f));
        }
        if let Some(e) = self.endpoint.take() {
            e.stop();
        }
        let left = self.registry.wait_finished(deadline, &[]);
        if !left.is_empty() {
            log::error!("stopping: threads still running: {}", left.join(", "));
        }
        if let Some(pin) = &self.pin {
            log::info!(
                "the classifier stays attached, pinned at {}: tunnelled traffic is dropped until a gateway runs again (`sluice gateway detach` removes it)",
                pin.display()
            );
        }
        let fault = self.watchdog.recorded();
        self.watchdog.stopped();
        let stuck = (!left.is_empty()).then_some(Fault::NotReturned(left));
        match fault.or(stuck) {
            None => {
                log::info!("gateway stopped");
                Ok(())
            }
            Some(f) => {
                log::error!("gateway stopped on a fault: {f}");
                // A thread that does not return would hold the drops that
                // join it (the detector's): the process ends now anyway.
                std::mem::forget(self);
                Err(GatewayError::Fault(f))
            }
        }
    }
}

/// Keeps the classifier's table of the gateway's own addresses (frames to
/// them pass to the kernel) equal to the addresses configured in this
/// network namespace: re-read on every rtnetlink address or link change
/// (and every 10 s, in case a notification was lost). An address that
/// goes stops passing at once: traffic to it is classified like any other
/// destination. Returns (a fault: the supervisor stops the gateway) when
/// the notifications fail or the table cannot be updated for 5 s.
fn watch_local_addrs(
    classifier: &Mutex<Programs>,
    mut monitor: RouteMonitor,
    mut current: Vec<IpAddr>,
    stop: &AtomicBool,
    beat: &Heartbeat,
) {
    const RESYNC_EVERY: Duration = Duration::from_secs(10);
    const GIVE_UP_AFTER: Duration = Duration::from_secs(5);
    let mut fault = fault::Fault::for_thread(std::thread::current().name().unwrap_or_default());
    let mut dirty = false;
    let mut next_resync = Instant::now() + RESYNC_EVERY;
    let mut failing_since: Option<Instant> = None;
    while !stop.load(Relaxed) {
        beat.beat();
        if fault::inject(&mut fault) {
            return;
        }
        match monitor.wait(Duration::from_millis(100)) {
            Ok(changed) => dirty |= changed,
            Err(e) => {
                log::error!("local addresses: change notifications: {e}");
                return;
            }
        }
        let now = Instant::now();
        if !dirty && now < next_resync {
            continue;
        }
        next_resync = now + RESYNC_EVERY;
        let res = host::local_addrs()
            .map_err(GatewayError::from)
            .and_then(|a| {
                if a == current {
                    return Ok(());
                }
                let mut c = classifier
                    .lock()
                    .map_err(|_| GatewayError::Policy(PolicyError::Poisoned))?;
                c.set_local_addrs(&a)?;
                drop(c);
                let added: Vec<String> = a
                    .iter()
                    .filter(|x| !current.contains(x))
                    .map(ToString::to_string)
                    .collect();
                let removed: Vec<String> = current
                    .iter()
                    .filter(|x| !a.contains(x))
                    .map(ToString::to_string)
                    .collect();
                log::info!(
                    "local addresses changed: added [{}], removed [{}]; {} in the classifier",
                    added.join(", "),
                    removed.join(", "),
                    a.len()
                );
                current = a;
                Ok(())
            });
        match res {
            Ok(()) => {
                dirty = false;
                failing_since = None;
            }
            Err(e) => {
                let since = *failing_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= GIVE_UP_AFTER {
                    log::error!("local addresses: cannot update the classifier: {e}");
                    return;
                }
                log::warn!("local addresses: {e}; retrying");
            }
        }
    }
}

/// `sluice gateway detach`: removes what a stopped gateway of `cfg` left
/// on purpose (the classifier's pinned link, and with it the XDP program;
/// endpoint mode's failing-closed routing and pinned socket hooks), so
/// that the kernel routes everything plainly again. Refused while a
/// gateway of `cfg` runs. Returns what was removed, one line each.
pub fn detach(cfg: &GatewayConfig) -> Result<Vec<String>, GatewayError> {
    let _lock = instance_lock(cfg)?;
    let mut done = Vec::new();
    if let Some(lan) = &cfg.lan {
        let pin = host::classifier_pin(&cfg.bpffs, lan)?;
        if pin.exists() {
            std::fs::remove_file(&pin).map_err(|source| GatewayError::DetachPin {
                pin: pin.clone(),
                source,
            })?;
            done.push(format!("removed the classifier's pin {}", pin.display()));
        }
        // Untag mode's egress program (review finding: it kept tagging
        // the LAN's frames after a detach).
        let egress = vlan_egress_pin(&pin);
        if egress.exists() {
            std::fs::remove_file(&egress).map_err(|source| GatewayError::DetachPin {
                pin: egress.clone(),
                source,
            })?;
            done.push(format!("removed the VLAN egress pin {}", egress.display()));
        }
        // The link had no other holder (no gateway runs): it goes, and the
        // program with it, once the kernel's deferred release has run
        // (a workqueue item after the last reference: milliseconds).
        let deadline = Instant::now() + Duration::from_secs(3);
        while host::xdp_attached(lan)? && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if host::xdp_attached(lan)? {
            return Err(GatewayError::StillAttached { lan: lan.clone() });
        }
        done.push(format!("no XDP program on {lan}"));
    }
    if let Some(ep) = &cfg.endpoint {
        done.extend(crate::endpoint::detach(cfg, ep).map_err(GatewayError::DetachEndpoint)?);
    }
    Ok(done)
}

/// Where untag mode's egress link is pinned, beside the classifier's.
fn vlan_egress_pin(pin: &std::path::Path) -> PathBuf {
    let mut egress = pin.to_path_buf().into_os_string();
    egress.push("-vlan-egress");
    PathBuf::from(egress)
}

/// The workers' counters, per-tunnel counters and the tunnels' names.
type AllStats = (Vec<Arc<WorkerStats>>, Vec<Arc<TenantStats>>, Vec<String>);

/// Which tunnels are up on at least one worker (`Some(true)`), lost on
/// all that tried (`Some(false)`), or not known yet (`None`: no attempt
/// has ended since the start).
fn tunnels_up(stats: &[Arc<TenantStats>]) -> Vec<Option<bool>> {
    (0..stats::TENANTS)
        .map(|t| {
            let best = stats.iter().map(|s| s.link[t].load(Relaxed)).fold(
                stats::LINK_UNKNOWN,
                |best, l| match (best, l) {
                    (stats::LINK_UP, _) | (_, stats::LINK_UP) => stats::LINK_UP,
                    (stats::LINK_LOST, _) | (_, stats::LINK_LOST) => stats::LINK_LOST,
                    _ => stats::LINK_UNKNOWN,
                },
            );
            match best {
                stats::LINK_UP => Some(true),
                stats::LINK_LOST => Some(false),
                _ => None,
            }
        })
        .collect()
}

/// One TLS client configuration per tunnel (internet first, then each
/// private-access tenant).
fn tunnel_params(cfg: &GatewayConfig) -> Result<Vec<TunnelParams>, GatewayError> {
    control::tunnels(cfg)
        .into_iter()
        .map(|(_, t)| {
            Ok(TunnelParams {
                link: crate::driver::LinkParams {
                    edge: t.edge,
                    server_name: pki::server_name(&t.server_name)?,
                    tls: pki::client_config_with_crl(&t.ca, &t.cert, &t.key, t.crl.as_deref())?,
                    session: SessionConfig {
                        name: cfg.name.clone(),
                        keepalive: t.keepalive,
                        idle_timeout: t.idle_timeout,
                        coalesce_delay: t.coalesce_delay,
                        aead: crate::driver::aead(),
                        ..SessionConfig::default()
                    },
                },
                edges: t.edges.clone(),
                mtu: t.mtu,
                transport: t.transport,
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
) -> Result<Option<trusted::Detector>, GatewayError> {
    let f = &cfg.policy.forwarding;
    if f.criteria.is_empty() {
        return Ok(None);
    }
    let mut sources = trusted::Sources::default();
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
    trusted::Detector::start(
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

/// The endpoint worker's counters (its thread is in the registry).
type EndpointWorker = (Arc<WorkerStats>, Arc<TenantStats>);

/// Starts endpoint mode: routing, socket hooks, exec watcher, and one
/// worker on sluice's side of the veth pair (its "queue" number follows
/// the LAN's, for metrics).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument a distinct part of the gateway"
)]
fn start_endpoint(
    cfg: &GatewayConfig,
    ep: &crate::config::EndpointConfig,
    classifier: &Arc<Mutex<Programs>>,
    tunnels: &[TunnelParams],
    control: &Arc<PolicyControl>,
    stop: &Arc<AtomicBool>,
    (queue, relay): (u32, &Arc<DnsRelay>),
    registry: &Registry,
) -> Result<(crate::endpoint::Endpoint, EndpointWorker), GatewayError> {
    let io = |what: String| move |source: std::io::Error| GatewayError::Io { what, source };
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(io("installing the SIGHUP handler".into()))?;
    let mut endpoint =
        crate::endpoint::Endpoint::start(cfg, ep, classifier, reload).map_err(|e| {
            GatewayError::Io {
                what: "starting endpoint mode".into(),
                source: std::io::Error::other(e),
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
            // The classifier's frames only: without one, nothing is
            // redirected to the socket.
            let config = XskConfig {
                meta_in_head: endpoint.classifier().is_some_and(|c| c.meta_in_head()),
                ..XskConfig::default()
            };
            let xsk = XskSocket::new(ifindex, 0, &config, BindMode::Auto)?;
            if let Some(c) = endpoint.classifier() {
                c.register_socket(0, std::os::fd::AsFd::as_fd(&xsk))?;
            }
            endpoint.attach().map_err(|e| GatewayError::Io {
                what: "endpoint mode".into(),
                source: std::io::Error::other(e),
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
            Some((relay, queue as usize)),
        )
        .map_err(io(format!("endpoint worker on {peer}")))?;
        let stop = stop.clone();
        let beat = Heartbeat::new();
        let b = beat.clone();
        spawn_supervised(registry, "sluice-endpoint", Some(beat), move || {
            w.run(&stop, &b);
        })?;
        Ok::<_, GatewayError>((st, ts))
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
            endpoint.stop();
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
/// sending, rings to match; the frames' metadata where `classifier` puts
/// it.
fn lan_xsk_config(cfg: &GatewayConfig, classifier: &Programs) -> XskConfig {
    let d = XskConfig::default();
    XskConfig {
        frame_count: cfg.rx_frames * 2,
        fill_size: cfg.rx_frames,
        rx_size: cfg.rx_frames,
        meta_in_head: classifier.meta_in_head(),
        ..d
    }
}

/// Opens one `AF_XDP` socket per RX queue of the LAN interface, registers
/// them, then attaches the classifier there (pinned, so that a stop or a
/// crash leaves it attached and failing closed rather than handing
/// tunnelled traffic to kernel routing). Returns the sockets, the
/// interface's MAC and the pin.
fn attach_lan(
    cfg: &GatewayConfig,
    lan: &str,
    classifier: &mut Programs,
) -> Result<(Vec<XskSocket>, crate::wire::ethernet::Mac, PathBuf), GatewayError> {
    let ifindex = host::ifindex(lan)?;
    let lan_mac = host::mac(lan)?;
    let queues = cfg.queues.unwrap_or(host::rx_queues(lan)?);
    let mut sockets = Vec::new();
    for q in 0..queues {
        let xsk = XskSocket::new(ifindex, q, &lan_xsk_config(cfg, classifier), BindMode::Auto)?;
        classifier.register_socket(q, std::os::fd::AsFd::as_fd(&xsk))?;
        sockets.push(xsk);
    }
    // Before the classifier is attached: no frame is untagged without its
    // way back.
    host::ensure_bpffs(&cfg.bpffs)?;
    let pin = host::classifier_pin(&cfg.bpffs, lan)?;
    let egress = vlan_egress_pin(&pin);
    if cfg.lan_vlans == crate::ebpf::VlanMode::Untag {
        classifier.attach_vlan_egress(lan, Some(&egress))?;
    } else if egress.exists() {
        // An earlier run in untag mode: its egress program would go on
        // tagging the kernel's frames.
        std::fs::remove_file(&egress).map_err(|e| GatewayError::Io {
            what: format!("removing the untag mode's egress pin {}", egress.display()),
            source: e,
        })?;
        log::info!("removed the untag mode's egress pin {}", egress.display());
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
    Ok((sockets, lan_mac, pin))
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

fn render(out: &mut String, classifier: &Mutex<Programs>, stats: &[Arc<WorkerStats>]) {
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
