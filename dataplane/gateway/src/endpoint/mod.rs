//! Endpoint mode: the host's own traffic (sluice's host, a gateway
//! included) goes through the tunnel under the same policy as LAN traffic,
//! and listed processes bypass it.
//!
//! How packets get here: policy routing sends the host's tunnelled traffic
//! into a TUN device ([`net`]), read and written by a gateway worker
//! (the default, `path = "tun"`), or into a veth pair whose far side
//! carries its own instance of the XDP classifier and one `AF_XDP` socket
//! (`path = "veth"`, the LAN's path). The lab benchmark measures both
//! (CPU per packet taken in): TUN costs less here, so it is the default.
//! Replies come back through the same worker and reach the sockets that
//! sent them (the device holds the inner address).
//!
//! What bypasses is decided per socket, in the kernel, before its first
//! packet (`ebpf/programs/src/sock.rs`): a socket of a listed process, a
//! connection to a bypassed destination, and sluice's own sockets get a
//! firewall mark that routes them through the main table. Which processes
//! are listed is decided here: at start and on reload by a `/proc` scan,
//! and for every `execve` while the kernel holds it (fanotify permission
//! events), so a listed program has its entry before it runs. Nothing
//! walks `/proc` per connection.
pub(crate) mod btf;
pub mod exec;
pub mod net;

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Instant,
};

use sluice_common::{FlowVerdict, SockConfig, SockCounter};

use self::exec::{ExecTracker, FactsCache, MountDevs};
use crate::{
    config::{EndpointConfig, GatewayConfig},
    ebpf::{EbpfError, Programs, SockHooks},
    gateway::{fault, supervise::Heartbeat},
    net::Prefix,
    process::ProcessSet,
    sys::fanotify::{self, ExecWatch},
};

/// Filesystems no executable comes from.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "bpf",
    "debugfs",
    "tracefs",
    "devpts",
    "mqueue",
    "securityfs",
    "pstore",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "selinuxfs",
    "devtmpfs",
];

/// Where sluice mounts cgroup2 if its mount namespace shows none (as under
/// `ip netns exec`, which remounts `/sys`).
const OWN_CGROUP2: &str = "/run/sluice/cgroup2";

/// Process-based bypass: the list, the kernel's process map, and what the
/// exec watcher has seen.
pub struct ProcessBypass {
    set: RwLock<Arc<ProcessSet>>,
    hooks: Mutex<SockHooks>,
    /// The exec watcher's own map (never waits on `hooks`).
    grants: Mutex<crate::ebpf::ExecGrants>,
    config_path: PathBuf,
    reload: Arc<AtomicBool>,
    self_pid: u32,
    exec_events: AtomicU64,
    exec_bypassed: AtomicU64,
    exec_errors: AtomicU64,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
}

impl std::fmt::Debug for ProcessBypass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBypass").finish_non_exhaustive()
    }
}

/// A running endpoint: routing, hooks, exec watcher and its own classifier
/// instance on sluice's side of the veth pair.
pub struct Endpoint {
    cfg: EndpointConfig,
    main: Arc<Mutex<Programs>>,
    /// The veth path's classifier instance.
    xdp: Option<Programs>,
    /// The TUN path's device, until the worker takes it.
    tun: Option<crate::sys::tun::Tun>,
    procs: Arc<ProcessBypass>,
    routing: Arc<Routing>,
    /// The exec watcher, until the gateway's supervisor takes it.
    watcher: Option<(JoinHandle<()>, Heartbeat)>,
    stop: Arc<AtomicBool>,
    /// Where the socket hooks' links are pinned.
    pins: PathBuf,
}

/// Every edge of every tenant that is given by IP address, as a host
/// prefix: their tunnels leave by the physical path. (An edge given by
/// DNS name is reached by whatever the host routes its resolved addresses
/// with: give endpoint-mode edges by address.)
fn edge_prefixes(gw: &GatewayConfig) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = std::iter::once(&gw.tunnel)
        .chain(gw.policy.tenants.iter().map(|t| &t.tunnel))
        .flat_map(|t| {
            std::iter::once(t.edge).chain(t.edges.edges.iter().filter_map(|e| match e.address {
                sluice_core::select::Address::Ip(a) => Some(a),
                sluice_core::select::Address::Name { .. } => None,
            }))
        })
        .map(|a| net::host_prefix(a.ip()))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The tunnel table's routes, kept in step with the policy.
#[derive(Debug)]
pub struct Routing {
    cfg: EndpointConfig,
    /// Always thrown: every edge given by address (the tunnels must not
    /// enter themselves).
    edges: Vec<Prefix>,
    current: Mutex<Vec<(Prefix, bool)>>,
}

impl Routing {
    /// Moves the table to `local` (the policy's routes for this host) plus
    /// the edge; logs and keeps going on failure.
    pub fn update(&self, local: &[(Prefix, bool)]) {
        let mut new = local.to_vec();
        new.extend(self.edges.iter().map(|&e| (e, true)));
        let Ok(mut cur) = self.current.lock() else {
            return;
        };
        if *cur == new {
            return;
        }
        match net::update_routes(&self.cfg, &cur, &new) {
            Ok(()) => {
                log::info!(
                    "endpoint: {} route(s) in table {}",
                    new.len(),
                    self.cfg.table
                );
                *cur = new;
            }
            Err(e) => log::error!("endpoint: updating routes: {e}"),
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("interface", &self.cfg.interface)
            .finish_non_exhaustive()
    }
}

/// Errors starting (or detaching) endpoint mode.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A step failed: what was being done, and the error.
    #[error("endpoint mode: {what}: {source}")]
    Step {
        /// What was being done (a configuration field, a file, an action).
        what: String,
        /// The error.
        source: StepError,
    },
    /// sluice runs in a PID namespace of its own.
    #[error(
        "endpoint mode: sluice must run in the initial PID namespace (the socket hooks key processes by the kernel's ids)"
    )]
    PidNamespace,
    /// A thread panicked holding the classifier.
    #[error("endpoint mode: classifier lock poisoned")]
    Poisoned,
    /// The socket hooks' exec-verdict map was already taken.
    #[error("endpoint mode: the exec-verdict map was taken")]
    GrantsTaken,
    /// A tracepoint's record is not laid out as the hooks read it.
    #[error("endpoint mode: {}: {why}", format.display())]
    TraceFormat {
        /// The tracepoint's format file.
        format: PathBuf,
        /// What does not match.
        why: String,
    },
}

/// The error of one step of [`EndpointError::Step`].
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A system call or file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A host command or host state.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// The endpoint's device or routing.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// The kernel's BTF.
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    /// The classifier.
    #[error(transparent)]
    Programs(#[from] EbpfError),
    /// The classifier, told with its error's causes.
    #[error("{error}: {}", crate::ebpf::error_chain(.error))]
    ClassifierChain {
        /// The classifier's error.
        error: EbpfError,
    },
}

fn fail(what: &str, e: impl Into<StepError>) -> EndpointError {
    EndpointError::Step {
        what: what.to_string(),
        source: e.into(),
    }
}

impl Endpoint {
    /// Builds the routing and the veth pair, attaches the socket hooks to
    /// `main` (the classifier whose bypass tries they read), lists the
    /// running processes, starts the exec watcher, and loads the
    /// classifier instance for sluice's side of the pair (not attached:
    /// the gateway registers its socket, then calls
    /// [`Endpoint::attach`]). `reload` is raised (SIGHUP) to re-read the
    /// process list from the configuration file.
    pub fn start(
        gw: &GatewayConfig,
        cfg: &EndpointConfig,
        main: &Arc<Mutex<Programs>>,
        reload: Arc<AtomicBool>,
    ) -> Result<Self, EndpointError> {
        // Process ids in the kernel's maps are the initial namespace's.
        if !fanotify::in_initial_pid_namespace().map_err(|e| fail("/proc/self/ns/pid", e))? {
            return Err(EndpointError::PidNamespace);
        }
        net::check_interface(cfg).map_err(|e| fail("endpoint.interface", e))?;
        let edges = edge_prefixes(gw);
        let mut routes = gw.local_routes();
        routes.extend(edges.iter().map(|&e| (e, true)));
        net::clean_leftovers(cfg);
        let started = (|| {
            let tun = match cfg.path {
                crate::config::EndpointPath::Tun => Some(
                    crate::sys::tun::Tun::open(&cfg.interface)
                        .map_err(|e| fail(&format!("opening TUN device {}", cfg.interface), e))?,
                ),
                crate::config::EndpointPath::Veth => None,
            };
            net::setup(cfg, &routes).map_err(|e| fail("routing", e))?;
            let mut ep = Self::start_hooks(gw, cfg, main.clone(), reload)?;
            ep.tun = tun;
            ep.routing = Arc::new(Routing {
                cfg: cfg.clone(),
                edges,
                current: Mutex::new(routes.clone()),
            });
            Ok(ep)
        })();
        if started.is_err() {
            // Whatever ran before (a crashed run's routing) kept the host's
            // traffic from going direct; a failed start keeps it so.
            net::fail_closed(cfg);
        }
        started
    }

    fn start_hooks(
        gw: &GatewayConfig,
        cfg: &EndpointConfig,
        main: Arc<Mutex<Programs>>,
        reload: Arc<AtomicBool>,
    ) -> Result<Self, EndpointError> {
        let (cgroup, sock_cfg) = hook_settings(cfg.mark, cfg.cgroup.as_deref())?;
        // Exec verdicts are tied to the executed file: the tracepoint needs
        // to know where its identity is in this kernel.
        let offsets = btf::exec_file_offsets().map_err(|e| fail("exec verdicts", e))?;
        crate::host::ensure_bpffs(&gw.bpffs).map_err(|e| fail("bpffs", e))?;
        let pins = crate::host::endpoint_pin_dir(&gw.bpffs).map_err(|e| fail("bpffs", e))?;
        let mut hooks = {
            let mut c = main.lock().map_err(|_| EndpointError::Poisoned)?;
            c.set_exec_file(offsets)
                .map_err(|e| fail("exec verdicts", e))?;
            c.attach_sock_hooks(&cgroup, sock_cfg, Some(&pins))
                .map_err(|e| fail("socket hooks", StepError::ClassifierChain { error: e }))?
        };
        let self_pid = std::process::id();
        let grants = hooks.take_grants().ok_or(EndpointError::GrantsTaken)?;
        hooks
            .set_process(self_pid, FlowVerdict::BypassSelf)
            .map_err(|e| fail("marking sluice's own sockets", e))?;
        log::info!(
            "endpoint: socket hooks on cgroup {} (mark {:#x}, table {}), pinned in {}, {} listed process pattern(s)",
            cgroup.display(),
            cfg.mark,
            cfg.table,
            pins.display(),
            gw.local_processes().len()
        );
        let procs = Arc::new(ProcessBypass {
            set: RwLock::new(Arc::new(ProcessSet::new(gw.local_processes()))),
            grants: Mutex::new(grants),
            hooks: Mutex::new(hooks),
            config_path: gw.path.clone(),
            reload,
            self_pid,
            exec_events: AtomicU64::new(0),
            exec_bypassed: AtomicU64::new(0),
            exec_errors: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        });
        // Watch first, then scan: a process that execs during the scan is
        // seen by the watcher.
        let watch = ExecWatch::new().map_err(|e| fail("fanotify", e))?;
        for fs in executable_filesystems() {
            if let Err(e) = watch.watch_filesystem(&fs) {
                log::warn!("endpoint: not watching execs on {}: {e}", fs.display());
            }
        }
        let mut cache = FactsCache::default();
        let beat = Heartbeat::new();
        procs.rescan(&mut cache, &beat);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let procs = procs.clone();
            let stop = stop.clone();
            let b = beat.clone();
            std::thread::Builder::new()
                .name("sluice-exec".into())
                .spawn(move || procs.watch(&watch, cache, &stop, &b))
                .map_err(|e| fail("spawning the exec watcher", e))?
        };
        let xdp = if cfg.path == crate::config::EndpointPath::Veth {
            let mut xdp = Programs::load().map_err(|e| fail("classifier", e))?;
            xdp.set_local_addrs(&crate::host::local_addrs().map_err(|e| fail("addresses", e))?)
                .map_err(|e| fail("classifier", e))?;
            Some(xdp)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            main,
            xdp,
            tun: None,
            procs,
            routing: Arc::new(Routing {
                cfg: cfg.clone(),
                edges: edge_prefixes(gw),
                current: Mutex::new(Vec::new()),
            }),
            watcher: Some((watcher, beat)),
            stop,
            pins,
        })
    }

    /// The routing handle (policy swaps update it).
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.clone()
    }

    /// sluice's side of the veth pair (where the worker's socket binds).
    pub fn peer(&self) -> String {
        net::peer_name(&self.cfg)
    }

    /// The TUN device (TUN path), once: for the worker.
    pub(crate) fn take_tun(&mut self) -> Option<crate::sys::tun::Tun> {
        self.tun.take()
    }

    /// The classifier instance of sluice's side (veth path), to register
    /// the socket.
    pub fn classifier(&mut self) -> Option<&mut Programs> {
        self.xdp.as_mut()
    }

    /// Attaches sluice's side's classifier (veth path): from now on the
    /// host's tunnelled packets reach the worker.
    pub fn attach(&mut self) -> Result<(), EndpointError> {
        let peer = self.peer();
        let Some(xdp) = self.xdp.as_mut() else {
            return Ok(());
        };
        xdp.attach(
            &peer,
            crate::ebpf::AttachMode::Auto.for_driver(Some("veth")),
        )
        .map_err(|e| {
            fail(
                "attaching the classifier",
                StepError::ClassifierChain { error: e },
            )
        })?;
        Ok(())
    }

    /// The exec watcher's thread and heartbeat, once: the gateway
    /// supervises it (if it stops or hangs, process bypass can no longer
    /// be decided, and the gateway stops, failing closed).
    pub(crate) fn take_watcher(&mut self) -> Option<(JoinHandle<()>, Heartbeat)> {
        self.watcher.take()
    }

    /// The process bypass (for metrics and the flow table).
    pub fn processes(&self) -> Arc<ProcessBypass> {
        self.procs.clone()
    }

    /// Stops: the host is left failing closed (its tunnelled traffic is
    /// refused, never sent direct), whatever the reason for the stop. Only
    /// the operator's `sluice gateway detach` ([`detach`]) removes the
    /// routing. The exec watcher is told to return last (the commands
    /// that fail closed are execs it answers); it is not waited for (the
    /// gateway's supervisor does that, with a deadline).
    pub fn stop(mut self) {
        // Refusing first: from here on nothing of the host's goes direct
        // by the mark, whatever the hooks still do.
        net::fail_closed(&self.cfg);
        if let Ok(mut m) = self.main.lock() {
            let _ = m.set_sock_config(SockConfig::default());
        }
        // With the mark rule gone the hooks steer nothing: unpinned, they
        // go with this process.
        if let Err(e) = std::fs::remove_dir_all(&self.pins) {
            log::warn!(
                "endpoint: unpinning the socket hooks ({}): {e}",
                self.pins.display()
            );
        }
        if let Some(x) = self.xdp.as_mut() {
            let _ = x.detach();
        }
        drop(self.tun.take());
        self.stop.store(true, Relaxed);
    }
}

impl ProcessBypass {
    /// The exec watcher's loop: answers every exec after writing the
    /// process's verdict; reloads the list when asked. Bumps `beat` once
    /// per turn (the read waits at most 100 ms) and per process rescanned.
    fn watch(&self, watch: &ExecWatch, mut cache: FactsCache, stop: &AtomicBool, beat: &Heartbeat) {
        let mut fault = fault::Fault::for_thread(std::thread::current().name().unwrap_or_default());
        let mut tracker = ExecTracker::default();
        let mut mounts = MountDevs::default();
        // At most 256 events (24 bytes each) per read: each holds an open
        // descriptor, and a descriptor the kernel cannot create denies
        // that exec.
        let mut buf = vec![0u8; 256 * 24];
        while !stop.load(Relaxed) {
            beat.beat();
            if fault::inject(&mut fault) {
                return;
            }
            if self.reload.swap(false, Relaxed) {
                self.reload_list(&mut cache, beat);
            }
            let events = match watch.read(&mut buf, 100) {
                Ok(e) => e,
                Err(e) => {
                    // Returning closes the group (every held exec goes
                    // on; execs from now on are tunnelled by the kernel,
                    // which sees no verdicts) and stops the gateway.
                    log::error!("endpoint: reading exec events: {e}; the exec watcher stops");
                    return;
                }
            };
            let set = self.set.read().map(|s| s.clone()).unwrap_or_default();
            let now = Instant::now();
            for ev in events {
                self.exec_events.fetch_add(1, Relaxed);
                if ev.pid == self.self_pid {
                    continue;
                }
                let facts = ev
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .and_then(|p| cache.facts(&ev.file, &p, &set));
                let key = facts.and_then(|f| Ok((f, mounts.file_key(&ev.file)?)));
                let (facts, key) = match key {
                    Ok(f) => f,
                    Err(e) => {
                        // Unreadable: tunnelled.
                        self.exec_errors.fetch_add(1, Relaxed);
                        log::debug!("endpoint: exec by {}: {e}", ev.pid);
                        self.apply(ev.pid, false, "?", None, (0, 0));
                        continue;
                    }
                };
                let (bypass, exe) = tracker.on_exec(ev.pid, &facts, key, now);
                self.apply(ev.pid, bypass, &facts.path, facts.matched.as_deref(), exe);
                // `ev` is answered (allowed) here, after the verdict is in
                // the kernel's pending map; the kernel applies it when the
                // exec succeeds.
            }
        }
    }

    /// Writes the verdict for process `pid`'s exec in flight, for the file
    /// `exe` (device as the kernel numbers it, inode) the process will run.
    /// A verdict that cannot be written is no verdict: the kernel tunnels.
    fn apply(&self, pid: u32, bypass: bool, path: &str, pattern: Option<&str>, exe: exec::FileKey) {
        let mut grants = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bypass {
            self.exec_bypassed.fetch_add(1, Relaxed);
        }
        match grants.grant(pid, bypass, exe.0, exe.1) {
            Ok(()) if bypass => log::info!(
                "endpoint: process {pid} ({path}) bypasses the tunnel (matches `{}`)",
                pattern.unwrap_or("its script")
            ),
            Ok(()) => {}
            Err(e) => log::error!("endpoint: process {pid} ({path}): {e}"),
        }
    }

    /// Re-reads `[bypass] processes` from the configuration file; a file
    /// that does not load leaves the running list in place.
    fn reload_list(&self, cache: &mut FactsCache, beat: &Heartbeat) {
        match GatewayConfig::load(&self.config_path) {
            Ok(cfg) => {
                if let Ok(mut s) = self.set.write() {
                    *s = Arc::new(ProcessSet::new(cfg.local_processes()));
                }
                cache.clear();
                let n = self.rescan(cache, beat);
                self.reloads.fetch_add(1, Relaxed);
                log::info!(
                    "endpoint: process list reloaded ({} pattern(s)); {n} running process(es) bypass",
                    cfg.local_processes().len()
                );
            }
            Err(e) => {
                self.reload_errors.fetch_add(1, Relaxed);
                log::error!("endpoint: reload refused, the running list stays: {e}");
            }
        }
    }

    /// Matches every running process against the list and makes the
    /// kernel's map agree. Returns how many bypass.
    fn rescan(&self, cache: &mut FactsCache, beat: &Heartbeat) -> usize {
        let set = self.set.read().map(|s| s.clone()).unwrap_or_default();
        let matches = |pid: u32, cache: &mut FactsCache| -> bool {
            let exe = format!("/proc/{pid}/exe");
            // The start time pins the process: an id reused between the
            // read and the insert is caught below.
            if start_time(pid).is_none() {
                return false;
            }
            let Ok(path) = std::fs::read_link(&exe) else {
                return false;
            };
            let path = path.to_string_lossy();
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
            let Ok(f) = File::open(&exe) else {
                return false;
            };
            cache
                .facts(&f, path, &set)
                .is_ok_and(|f| f.matched.is_some())
        };
        let mut keep = std::collections::HashMap::new();
        if !set.is_empty()
            && let Ok(dir) = std::fs::read_dir("/proc")
        {
            for e in dir.flatten() {
                beat.beat();
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let started = start_time(pid);
                if pid != self.self_pid && matches(pid, cache) {
                    keep.insert(pid, started);
                }
            }
        }
        let Ok(mut hooks) = self.hooks.lock() else {
            return 0;
        };
        for (&pid, &started) in &keep {
            if let Err(e) = hooks.set_process(pid, FlowVerdict::BypassProcess) {
                log::error!("endpoint: process {pid}: {e}");
            }
            // Exited meanwhile (its exit hook ran before the insert) or
            // its id reused: the entry must not outlive it.
            if start_time(pid) != started {
                let _ = hooks.clear_process(pid);
            }
        }
        for (pid, reason) in hooks.processes() {
            if reason == FlowVerdict::BypassSelf as u32 || keep.contains_key(&pid) {
                continue;
            }
            // An entry made since the scan read /proc (a fork) or a
            // thread's: keep it only if it still matches.
            if set.is_empty() || !matches(pid, cache) {
                let _ = hooks.clear_process(pid);
            }
        }
        keep.len()
    }

    /// Prometheus samples.
    pub fn render(&self, out: &mut String) {
        let Ok(hooks) = self.hooks.lock() else {
            return;
        };
        let counts = hooks.counters();
        for c in SockCounter::ALL {
            crate::metrics::sample(
                out,
                "sluice_endpoint_socket_events_total",
                "counter",
                (c as usize == 0).then_some("Socket hook decisions (endpoint mode), by event."),
                &[("event", c.name())],
                counts[c as usize],
            );
        }
        let n = hooks.processes().len() as u64;
        drop(hooks);
        for (name, help, v) in [
            (
                "sluice_endpoint_processes",
                "Processes (and threads) whose sockets bypass, sluice included.",
                n,
            ),
            (
                "sluice_endpoint_exec_events_total",
                "execve file opens seen (fanotify permission events).",
                self.exec_events.load(Relaxed),
            ),
            (
                "sluice_endpoint_exec_bypassed_total",
                "execve decisions that made the process bypass.",
                self.exec_bypassed.load(Relaxed),
            ),
            (
                "sluice_endpoint_exec_errors_total",
                "execve events whose file could not be read (the process is tunnelled).",
                self.exec_errors.load(Relaxed),
            ),
            (
                "sluice_endpoint_reloads_total",
                "Process list reloads applied.",
                self.reloads.load(Relaxed),
            ),
            (
                "sluice_endpoint_reload_errors_total",
                "Process list reloads refused (invalid file).",
                self.reload_errors.load(Relaxed),
            ),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            crate::metrics::sample(out, name, kind, Some(help), &[], v);
        }
    }

    /// The flow table, one connection per line.
    pub fn flows(&self, out: &mut String) {
        let Ok(hooks) = self.hooks.lock() else {
            return;
        };
        let mut flows = hooks.flows();
        drop(hooks);
        flows.sort_by_key(|(_, f)| (f.tgid, f.dport));
        let _ = writeln!(
            out,
            "{:<7} {:<6} {:<5} {:<40} {:<18} {:<16} EXECUTABLE",
            "PID", "UID", "PROTO", "DESTINATION", "VERDICT", "COMMAND"
        );
        for (_, f) in flows {
            let dst = if f.family == 6 {
                std::net::IpAddr::from(f.dst)
            } else {
                let mut a = [0u8; 4];
                a.copy_from_slice(&f.dst[..4]);
                std::net::IpAddr::from(a)
            };
            let dst = std::net::SocketAddr::new(dst, f.dport);
            let proto = match f.protocol {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                p => p.to_string(),
            };
            let verdict = FlowVerdict::from_u32(f.verdict).map_or("?", FlowVerdict::name);
            let end = f.comm.iter().position(|&b| b == 0).unwrap_or(f.comm.len());
            let comm = String::from_utf8_lossy(&f.comm[..end]);
            let exe = std::fs::read_link(format!("/proc/{}/exe", f.tgid))
                .map_or_else(|_| "-".to_string(), |p| p.to_string_lossy().into_owned());
            let _ = writeln!(
                out,
                "{:<7} {:<6} {:<5} {:<40} {:<18} {:<16} {exe}",
                f.tgid,
                f.uid,
                proto,
                dst.to_string(),
                verdict,
                comm
            );
        }
    }
}

/// `sluice gateway detach` for endpoint mode: removes the routing a
/// stopped gateway left failing closed (rules, table, device), so that
/// the host's traffic takes the main table again. The caller holds the
/// instance lock (no gateway runs). Returns what was done, one line each.
pub fn detach(gw: &GatewayConfig, cfg: &EndpointConfig) -> Result<Vec<String>, EndpointError> {
    let mut done = Vec::new();
    let pins = crate::host::endpoint_pin_dir(&gw.bpffs).map_err(|e| fail("bpffs", e))?;
    if pins.exists() {
        std::fs::remove_dir_all(&pins).map_err(|e| fail(&pins.display().to_string(), e))?;
        done.push(format!(
            "removed the socket hooks pinned in {}",
            pins.display()
        ));
    }
    net::teardown(cfg);
    done.push(format!(
        "removed endpoint routing (rules at priority {} to {}, table {}, device {})",
        cfg.rule_priority,
        cfg.rule_priority + 3,
        cfg.table,
        cfg.interface
    ));
    Ok(done)
}

/// What [`Programs::attach_sock_hooks`] needs for this host: the cgroup
/// (`cgroup`, or the root of the cgroup2 hierarchy) and the settings for
/// sockets of the calling thread's network namespace, marked `mark`.
/// Mounts tracefs (and cgroup2) if they are not visible.
pub fn hook_settings(
    mark: u32,
    cgroup: Option<&Path>,
) -> Result<(PathBuf, SockConfig), EndpointError> {
    let tracefs = fanotify::ensure_tracefs().map_err(|e| fail("mounting tracefs", e))?;
    let fork_offset = fork_child_pid_offset(&tracefs)?;
    check_exec_format(&tracefs)?;
    let cgroup = match cgroup {
        Some(c) => c.to_path_buf(),
        None => cgroup2_root()?,
    };
    let cfg = SockConfig {
        netns_cookie: fanotify::netns_cookie().map_err(|e| fail("SO_NETNS_COOKIE", e))?,
        mark,
        enabled: 1,
        fork_child_pid_offset: fork_offset,
        reserved: 0,
    };
    Ok((cgroup, cfg))
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22), if it
/// exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold anything up to the last `)`.
    let end = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(end + 2..)?).ok()?;
    rest.split(' ').nth(19)?.parse().ok()
}

/// Where `child_pid` is in `sched_process_fork`'s record, from its format
/// file; must be one the fork hook knows.
fn fork_child_pid_offset(tracefs: &Path) -> Result<u32, EndpointError> {
    let p = tracefs.join("events/sched/sched_process_fork/format");
    let text = std::fs::read_to_string(&p).map_err(|e| fail(&p.display().to_string(), e))?;
    let off = text
        .lines()
        .find(|l| l.contains(" child_pid;"))
        .and_then(|l| l.split("offset:").nth(1))
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| EndpointError::TraceFormat {
            format: p.clone(),
            why: "no child_pid field".into(),
        })?;
    if !sluice_common::FORK_CHILD_PID_OFFSETS.contains(&off) {
        return Err(EndpointError::TraceFormat {
            format: p,
            why: format!(
                "child_pid at offset {off}, the fork hook knows {:?}",
                sluice_common::FORK_CHILD_PID_OFFSETS
            ),
        });
    }
    Ok(off)
}

/// Checks that `old_pid` is where the exec hook reads it.
fn check_exec_format(tracefs: &Path) -> Result<(), EndpointError> {
    let p = tracefs.join("events/sched/sched_process_exec/format");
    let text = std::fs::read_to_string(&p).map_err(|e| fail(&p.display().to_string(), e))?;
    let want = format!("offset:{};", sluice_common::EXEC_OLD_PID_OFFSET);
    if text
        .lines()
        .any(|l| l.contains(" old_pid;") && l.contains(&want))
    {
        Ok(())
    } else {
        Err(EndpointError::TraceFormat {
            format: p,
            why: format!(
                "old_pid is not at offset {}",
                sluice_common::EXEC_OLD_PID_OFFSET
            ),
        })
    }
}

/// The mountinfo lines as (mount point, filesystem type, device).
fn mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(bytes) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    // Mount points need not be UTF-8: one such line must not hide the rest.
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            let point = sluice_core::mountinfo::unescape(f.get(4)?);
            Some((
                PathBuf::from(point),
                fstype.to_string(),
                (*f.get(2)?).to_string(),
            ))
        })
        .collect()
}

/// One mount point per filesystem executables may come from.
fn executable_filesystems() -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    mounts()
        .into_iter()
        .filter(|(_, t, _)| !PSEUDO_FS.contains(&t.as_str()))
        .filter(|(_, _, dev)| seen.insert(dev.clone()))
        .map(|(p, _, _)| p)
        .collect()
}

/// The root of the cgroup2 hierarchy: a visible mount, or one sluice
/// makes at [`OWN_CGROUP2`].
fn cgroup2_root() -> Result<PathBuf, EndpointError> {
    if let Some((p, _, _)) = mounts().into_iter().find(|(_, t, _)| t == "cgroup2") {
        return Ok(p);
    }
    std::fs::create_dir_all(OWN_CGROUP2).map_err(|e| fail(OWN_CGROUP2, e))?;
    crate::host::run(&["mount", "-t", "cgroup2", "none", OWN_CGROUP2], None)
        .map_err(|e| fail("mounting cgroup2", e))?;
    Ok(PathBuf::from(OWN_CGROUP2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_somewhere_to_run_programs_from() {
        assert!(!executable_filesystems().is_empty());
    }
}
