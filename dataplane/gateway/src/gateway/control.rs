//! The running gateway's policy: compiled, written into the classifier's
//! idle slot and swapped in ([`PolicyControl::apply`]); reloaded from the
//! file (SIGHUP, `sluice policy reload`), switched to another private-access
//! tenant (`sluice policy tenant`); told the network state (trusted-network
//! detection) and which tunnels are down; explained (`sluice policy
//! explain --live`).
//!
//! A swap never blocks the packet path: the classifier keeps using the
//! live slot while the new policy is written into the other, then one map
//! update flips the slot. The userspace copy the endpoint worker looks
//! tunnels up in ([`Published`]) is replaced right after, and the worker
//! picks it up at its next batch (one atomic load per batch).
//!
//! A reload that would change a tunnel (the internet tenant's or a private
//! tenant's edge or credentials, or the list of tenants) is refused: the
//! workers' connections are made at start, so that takes a restart.
use std::{
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use super::domains::DomainBypass;
use crate::{
    config::{ConfigError, GatewayConfig, TunnelConfig},
    ebpf::{EbpfError, Programs},
    metrics::sample,
    policy::{
        Policy, Proto, ProtoError, UnknownTenant,
        compile::{CompileError, DomainMatcher, Tables, domain_patterns},
        eval::{self, Flow, Runtime},
        trusted::NetworkState,
    },
};

/// Why a policy was not put in force (the previous one keeps running).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// It does not compile into the classifier's tables.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The configuration file did not load (reload).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The classifier refused the new tables (told by its error's causes).
    #[error("{}", crate::ebpf::error_chain(.0))]
    Programs(EbpfError),
    /// A reload would change a tunnel: that takes a restart.
    #[error(
        "{}: the tunnels changed (tenants: {}): a tunnel's edge or credentials take a restart",
        path.display(),
        tenants.join(", ")
    )]
    TunnelsChanged {
        /// The configuration file.
        path: PathBuf,
        /// The tenants of the file as it is now.
        tenants: Vec<String>,
    },
    /// A reload changes settings that only a restart applies.
    #[error("{}: {why}", path.display())]
    NeedsRestart {
        /// The configuration file.
        path: PathBuf,
        /// Which settings.
        why: &'static str,
    },
    /// A tenant switch named no configured tenant.
    #[error(transparent)]
    Tenant(#[from] UnknownTenant),
    /// A thread panicked holding the classifier.
    #[error("classifier lock poisoned")]
    Poisoned,
}

/// Why an explain query was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FlowQueryError {
    /// A value of the wrong kind (`what`: "an address", "a port").
    #[error("{key}={value}: not {what}")]
    Value {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
        /// What it must be.
        what: &'static str,
    },
    /// `proto=` is not a protocol.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A parameter the query does not have.
    #[error("unknown parameter `{0}`")]
    Unknown(String),
    /// `src` or `dst` is missing.
    #[error("src and dst are required")]
    Missing,
}

/// How long a tunnel must stay up before a new outage gets a new
/// captive-portal grace. A tunnel that drops again sooner (a flapping
/// tunnel, or one a hostile network lets up now and then) keeps counting
/// the grace from the first drop of the series: the grace cannot be
/// restarted forever.
pub(crate) const GRACE_REARM_AFTER_UP: Duration = Duration::from_secs(300);

/// A tunnel's outages, for the captive-portal grace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outages {
    /// What the grace counts from (`CLOCK_MONOTONIC` ns): the start of
    /// the current outage series.
    pub grace_from: Option<u64>,
    /// When the tunnel last came up (`None` while down, or never up).
    pub up_since: Option<u64>,
}

impl Outages {
    /// The tunnel went down at `now`: returns what the grace counts from.
    /// A new series (a new grace) starts only if the tunnel had been up
    /// for at least [`GRACE_REARM_AFTER_UP`] (or never went down before).
    pub(crate) fn down(&mut self, now: u64) -> u64 {
        let rearm = u64::try_from(GRACE_REARM_AFTER_UP.as_nanos()).unwrap_or(u64::MAX);
        let from = match (self.grace_from, self.up_since) {
            (Some(from), Some(up)) if now.saturating_sub(up) < rearm => from,
            (Some(from), None) => from,
            _ => now,
        };
        self.grace_from = Some(from);
        self.up_since = None;
        from
    }

    /// The tunnel came up at `now`.
    pub(crate) fn up(&mut self, now: u64) {
        self.up_since = Some(now);
    }
}

/// The policy in force, as the workers see it.
#[derive(Debug)]
pub(crate) struct Active {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Its compiled tables.
    pub tables: Tables,
    /// The classifier's generation it was installed as.
    pub generation: u32,
}

/// The latest [`Active`], for workers: a generation number read once per
/// batch, the lock taken only when it changed.
#[derive(Debug)]
pub(crate) struct Published {
    generation: AtomicU64,
    current: Mutex<Arc<Active>>,
}

impl Published {
    /// The current policy, from `cache` unless a newer one was published.
    pub(crate) fn refresh(&self, cache: &mut Option<(u64, Arc<Active>)>) -> Arc<Active> {
        let g = self.generation.load(Ordering::Acquire);
        if let Some((cg, a)) = cache
            && *cg == g
        {
            return a.clone();
        }
        let a = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        *cache = Some((g, a.clone()));
        a
    }

    fn publish(&self, a: Arc<Active>) {
        match self.current.lock() {
            Ok(mut c) => *c = a,
            Err(p) => *p.into_inner() = a,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn get(&self) -> Arc<Active> {
        self.refresh(&mut None)
    }
}

/// What one swap did and how long it took.
#[derive(Clone, Debug)]
pub(crate) struct SwapReport {
    /// The new generation.
    pub generation: u32,
    /// Why (start, reload, tenant switch).
    pub why: String,
    /// Compile, prepare and commit.
    pub total: Duration,
    /// Writing the idle slot.
    pub prepare: Duration,
    /// The flip itself (one map update).
    pub commit: Duration,
    /// Source and destination entries written.
    pub entries: usize,
    /// In force, but something beside the classifier's tables failed.
    pub degraded: Option<String>,
}

#[derive(Debug)]
struct Inner {
    swaps: u64,
    failures: u64,
    last: Option<SwapReport>,
    last_error: Option<String>,
    network: Option<(NetworkState, SystemTime)>,
    /// Per tunnel: since when it has been down (`None`: up).
    down: Vec<Option<Instant>>,
    /// Per tunnel: its outages, for the grace.
    outages: Vec<Outages>,
    /// A tenant was switched at run time (kept across reloads).
    switched: bool,
}

/// The gateway's policy control.
#[derive(Debug)]
pub(crate) struct PolicyControl {
    classifier: Arc<Mutex<Programs>>,
    domains: Arc<DomainBypass>,
    published: Arc<Published>,
    inner: Mutex<Inner>,
    path: PathBuf,
    tunnels: Vec<TunnelConfig>,
    /// Endpoint mode's routing, kept in step with every swap.
    routing: Mutex<Option<Arc<crate::endpoint::Routing>>>,
    /// Trusted-network detection, for the status and metrics.
    detector: Mutex<Option<Arc<super::trusted::Detector>>>,
    /// The configuration the gateway started with: where detection
    /// looks, the domain bypass's settings and `[gateway]` are read once,
    /// so a reload that changes them is refused.
    start: GatewayConfig,
    /// Serialises swaps and network-state changes, so that the
    /// internet-direct flag always follows the policy in force and the
    /// latest network state.
    serial: Mutex<()>,
    /// Where the tunnels' outage series are kept across restarts (beside
    /// the instance lock in `/run`), and the classifier's pin they belong
    /// to, if anywhere.
    outages_file: Mutex<Option<(PathBuf, PathBuf)>>,
}

/// The outage series of every tunnel as a restart finds them: the boot
/// they belong to (`CLOCK_MONOTONIC` is per boot), then one line per
/// tunnel, `grace_from up_since` in nanoseconds (`-`: none).
fn outages_text(boot: &str, outages: &[Outages]) -> String {
    let mut s = format!("{boot}\n");
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for o in outages {
        let _ = writeln!(s, "{} {}", n(o.grace_from), n(o.up_since));
    }
    s
}

/// [`outages_text`] read back: `None` unless it is of boot `boot`; lines
/// that do not parse are tunnels without a series.
fn parse_outages(text: &str, boot: &str, n: usize) -> Option<Vec<Outages>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != boot || boot.is_empty() {
        return None;
    }
    let v = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
    Some(
        (0..n)
            .map(|_| {
                let mut f = lines.next().unwrap_or("").split_whitespace();
                Outages {
                    grace_from: v(f.next()),
                    up_since: v(f.next()),
                }
            })
            .collect(),
    )
}

/// What an outages file belongs to: this boot (its id) and the
/// classifier's pin as it is now (its bpffs inode: a new pin, after a
/// detach or in a namespace whose inode was reused, is another); empty
/// if either is unknown (nothing is then taken up).
fn outages_owner(pin: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match std::fs::symlink_metadata(pin) {
        Ok(m) if !boot.is_empty() => format!("{boot}/{}", m.ino()),
        _ => String::new(),
    }
}

/// The tunnels of a configuration: the internet tenant's, then each
/// private tenant's (their order is the tunnels' numbering).
pub(crate) fn tunnels(cfg: &GatewayConfig) -> Vec<(String, TunnelConfig)> {
    std::iter::once(("internet".to_string(), cfg.tunnel.clone()))
        .chain(
            cfg.policy
                .tenants
                .iter()
                .map(|t| (t.name.clone(), t.tunnel.clone())),
        )
        .collect()
}

/// What a reload cannot change, `new` against `old` (the configuration
/// the gateway started with): `None`,
/// or what changed and why it takes a restart.
fn needs_restart(old: &GatewayConfig, new: &GatewayConfig) -> Option<&'static str> {
    let gateway = old.name != new.name
        || old.lan != new.lan
        || old.wan != new.wan
        || old.xdp_mode != new.xdp_mode
        || old.lan_vlans != new.lan_vlans
        || old.queues != new.queues
        || old.rx_frames != new.rx_frames
        || old.cpus != new.cpus
        || old.metrics != new.metrics
        || old.admin != new.admin
        || old.bpffs != new.bpffs;
    let (a, b) = (&old.policy.forwarding, &new.policy.forwarding);
    let detection =
        a.criteria != b.criteria || a.interval != b.interval || old.detection != new.detection;
    let (a, b) = (&old.domains, &new.domains);
    let dns = a.limits != b.limits || a.max_entries != b.max_entries || a.servers != b.servers;
    if gateway {
        Some(
            "[gateway] changed (name, interfaces, xdp_mode, lan_vlans, queues, rx_frames, cpus, metrics, admin_* or bpffs): it takes a restart",
        )
    } else if detection {
        Some(
            "the trusted-network criteria or where they are read changed: detection takes a restart (the actions on_trusted, off_trusted and vpn_trusted reload)",
        )
    } else if dns {
        Some(
            "[bypass]'s DNS settings (dns_servers, TTL bounds, table size) changed: they take a restart",
        )
    } else {
        None
    }
}

/// Whether a reload leaves tunnel `a` as `b` (anything that the
/// workers' connections were made with: a change takes a restart).
fn same_tunnel(a: &TunnelConfig, b: &TunnelConfig) -> bool {
    a.edge == b.edge
        && a.edges == b.edges
        && a.mtu == b.mtu
        && a.transport == b.transport
        && a.keepalive == b.keepalive
        && a.idle_timeout == b.idle_timeout
        && a.coalesce_delay == b.coalesce_delay
        && a.server_name == b.server_name
        && a.ca == b.ca
        && a.cert == b.cert
        && a.key == b.key
        && a.crl == b.crl
}

impl PolicyControl {
    /// Installs `cfg`'s policy (the classifier's first generation) and
    /// returns the control, its domain table and what workers read.
    pub(crate) fn start(
        cfg: &GatewayConfig,
        classifier: Arc<Mutex<Programs>>,
    ) -> Result<Arc<Self>, PolicyError> {
        let domains = DomainBypass::new(&cfg.domains, classifier.clone());
        let tables = Tables::compile(&cfg.policy)?;
        let published = Arc::new(Published {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Active {
                policy: Arc::new(cfg.policy.clone()),
                tables,
                generation: 0,
            })),
        });
        let n = tunnels(cfg).len();
        let control = Arc::new(Self {
            classifier,
            domains,
            published,
            inner: Mutex::new(Inner {
                swaps: 0,
                failures: 0,
                last: None,
                last_error: None,
                network: None,
                down: vec![None; n],
                outages: vec![Outages::default(); n],
                switched: false,
            }),
            path: cfg.path.clone(),
            tunnels: tunnels(cfg).into_iter().map(|(_, t)| t).collect(),
            routing: Mutex::new(None),
            detector: Mutex::new(None),
            start: cfg.clone(),
            serial: Mutex::new(()),
            outages_file: Mutex::new(None),
        });
        control.apply(cfg.policy.clone(), "start")?;
        Ok(control)
    }

    /// Keeps the tunnels' outage series in `path` from now on, and takes
    /// up the series an earlier gateway left there for the classifier
    /// pinned at `pin` (this boot, the same pin): a restart (a crash
    /// loop, a service restart during a captive-portal outage) continues
    /// its grace instead of starting a new one.
    pub(crate) fn keep_outages_in(&self, path: PathBuf, pin: PathBuf) {
        let boot = outages_owner(&pin);
        let mut inner = self.inner();
        let n = inner.outages.len();
        if let Some(o) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| parse_outages(&t, &boot, n))
        {
            log::info!("tunnel outages taken up from {}", path.display());
            inner.outages = o;
        }
        drop(inner);
        if let Ok(mut f) = self.outages_file.lock() {
            *f = Some((path, pin));
        }
    }

    /// Writes the outage series (a temporary file renamed over the last).
    fn save_outages(&self, outages: &[Outages]) {
        let Ok(f) = self.outages_file.lock() else {
            return;
        };
        let Some((path, pin)) = f.as_ref() else {
            return;
        };
        let tmp = path.with_extension("outages.tmp");
        let text = outages_text(&outages_owner(pin), outages);
        let r = {
            use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .and_then(|mut file| file.write_all(text.as_bytes()))
                .and_then(|()| std::fs::rename(&tmp, path))
        };
        if let Err(e) = r {
            log::warn!("keeping the tunnels' outages in {}: {e}", path.display());
        }
    }

    /// From now on, every swap moves endpoint mode's routes too.
    pub(crate) fn set_routing(&self, r: Arc<crate::endpoint::Routing>) {
        if let Ok(mut g) = self.routing.lock() {
            *g = Some(r);
        }
    }

    /// Trusted-network detection's status goes into `status` and `render`.
    pub(crate) fn set_detector(&self, d: Arc<super::trusted::Detector>) {
        if let Ok(mut g) = self.detector.lock() {
            *g = Some(d);
        }
    }

    fn detector(&self) -> Option<Arc<super::trusted::Detector>> {
        self.detector.lock().ok().and_then(|g| g.clone())
    }

    /// The domain table (fed by the workers).
    pub(crate) fn domains(&self) -> Arc<DomainBypass> {
        self.domains.clone()
    }

    /// What the endpoint worker reads.
    pub(crate) fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.published.get().policy.clone()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Compiles `policy`, writes it into the idle slot, swaps it in and
    /// publishes it. On error nothing changed: the old policy runs on.
    pub(crate) fn apply(&self, policy: Policy, why: &str) -> Result<SwapReport, PolicyError> {
        let _serial = self
            .serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let result = self.swap(policy, why, started);
        let mut inner = self.inner();
        match &result {
            Ok(r) => {
                inner.swaps += 1;
                inner.last = Some(r.clone());
                inner.last_error.clone_from(&r.degraded);
                if let Some(e) = &r.degraded {
                    log::error!("{e}");
                }
                log::info!(
                    "policy generation {} ({why}): {} entries prepared in {:?}, swapped in {:?}, {:?} in all",
                    r.generation,
                    r.entries,
                    r.prepare,
                    r.commit,
                    r.total
                );
            }
            Err(e) => {
                inner.failures += 1;
                inner.last_error = Some(e.to_string());
                log::error!("policy ({why}) refused, the previous one keeps running: {e}");
            }
        }
        result
    }

    fn swap(&self, policy: Policy, why: &str, started: Instant) -> Result<SwapReport, PolicyError> {
        let tables = Tables::compile(&policy)?;
        // The forwarding profile's action for the current network state
        // (off-trusted until detection says otherwise, and always without
        // criteria), under the new policy: it flips with the tables.
        let state = self
            .inner()
            .network
            .map_or(NetworkState::OffTrusted, |(s, _)| s);
        let internet_direct = policy.forwarding.action(state) == crate::policy::NetAction::Direct;
        let matcher = Arc::new(DomainMatcher::new(&policy));
        let patterns = domain_patterns(&policy);
        let ((entries, prepare), generation, commit) = self
            .domains
            .swap(
                matcher,
                &patterns,
                |c| c.prepare_policy(&tables),
                |c, p| {
                    let info = (p.sources + p.destinations, p.took);
                    let t = Instant::now();
                    let g = c.commit_policy(p, internet_direct)?;
                    Ok((info, g, t.elapsed()))
                },
            )
            .map_err(PolicyError::Programs)?;
        // This host's own flows: the socket hooks' bypass trie.
        let local = &policy.profiles[tables.local_profile];
        let direct: Vec<_> = tables
            .local_direct
            .iter()
            .filter(|p| !local.vpn_gateways.contains(p))
            .copied()
            .collect();
        // The classifier runs the new policy from here on: whatever fails
        // below, it is published (explain, status, the endpoint worker and
        // the next switch must see what the kernel runs), and the failure
        // is reported as a degraded state.
        let hooks = self
            .classifier
            .lock()
            .map_err(|_| "the classifier's lock is poisoned".to_string())
            .and_then(|mut c| {
                c.set_bypass(&direct)
                    .and_then(|()| {
                        c.replace_bypass(
                            sluice_common::BypassEntry::SOURCE_VPN_GATEWAY,
                            &local.vpn_gateways,
                        )
                    })
                    .map_err(|e| crate::ebpf::error_chain(&e))
            });
        let degraded = hooks.err().map(|e| {
            format!(
                "policy generation {generation} is in force, but this host's socket-hook table was not updated: {e}"
            )
        });
        if let Some(r) = self.routing.lock().ok().and_then(|g| g.clone()) {
            r.update(&tables.local_routes);
        }
        self.published.publish(Arc::new(Active {
            policy: Arc::new(policy),
            tables,
            generation,
        }));
        Ok(SwapReport {
            generation,
            why: why.to_string(),
            total: started.elapsed(),
            prepare,
            commit,
            entries,
            degraded,
        })
    }

    /// Reads the file again and swaps its policy in, unless it is invalid
    /// or changes a tunnel. A tenant switched at run time stays on if the
    /// new policy still has it.
    pub(crate) fn reload(&self) -> Result<SwapReport, PolicyError> {
        let result = self.reloaded_policy();
        match result {
            Ok(p) => self.apply(p, "reload"),
            Err(e) => {
                let mut inner = self.inner();
                inner.failures += 1;
                inner.last_error = Some(e.to_string());
                log::error!("policy reload refused, the previous policy keeps running: {e}");
                Err(e)
            }
        }
    }

    fn reloaded_policy(&self) -> Result<Policy, PolicyError> {
        let cfg = GatewayConfig::load(&self.path)?;
        let new = tunnels(&cfg);
        let same = new.len() == self.tunnels.len()
            && new
                .iter()
                .zip(&self.tunnels)
                .all(|((_, a), b)| same_tunnel(a, b));
        if !same {
            return Err(PolicyError::TunnelsChanged {
                path: self.path.clone(),
                tenants: new.into_iter().map(|(n, _)| n).collect(),
            });
        }
        let running = self.policy();
        if let Some(why) = needs_restart(&self.start, &cfg) {
            return Err(PolicyError::NeedsRestart {
                path: self.path.clone(),
                why,
            });
        }
        let mut policy = cfg.policy;
        if self.inner().switched
            && let Some(name) = running
                .active_tenant
                .map(|t| running.tenants[t].name.clone())
        {
            let _ = policy.switch_tenant(&name);
        }
        Ok(policy)
    }

    /// Switches private-access tenant `name` on (the others off).
    pub(crate) fn switch_tenant(&self, name: &str) -> Result<SwapReport, PolicyError> {
        let mut policy = (*self.policy()).clone();
        policy.switch_tenant(name)?;
        let r = self.apply(policy, &format!("tenant {name} switched on"))?;
        self.inner().switched = true;
        Ok(r)
    }

    /// The network state changed: internet traffic goes direct or not.
    pub(crate) fn set_network(&self, state: NetworkState) {
        let _serial = self
            .serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let direct = self.policy().forwarding.action(state) == crate::policy::NetAction::Direct;
        if let Ok(mut c) = self.classifier.lock()
            && let Err(e) = c.set_internet_direct(direct)
        {
            log::error!("network {state}: {}", crate::ebpf::error_chain(&e));
        }
        log::info!(
            "network {state}: internet traffic goes {}",
            if direct { "direct" } else { "by the policy" }
        );
        self.inner().network = Some((state, SystemTime::now()));
    }

    /// Which tunnels are up on at least one worker (index: tenant);
    /// tunnels that went down or came back are told to the classifier.
    /// A tunnel that goes down gets its captive-portal grace counted from
    /// the start of its outage series ([`Outages::down`]): a new grace
    /// only after [`GRACE_REARM_AFTER_UP`] up.
    pub(crate) fn tunnels_up(&self, up: &[Option<bool>]) {
        let mut inner = self.inner();
        let mut changed = false;
        for (t, is_up) in up.iter().enumerate().take(inner.down.len()) {
            // Not known yet (connecting since the start): as it was.
            let Some(is_up) = *is_up else {
                continue;
            };
            let was_down = inner.down[t].is_some();
            if was_down != is_up {
                continue;
            }
            let Ok(tenant) = u8::try_from(t) else {
                continue;
            };
            let now = crate::sys::fanotify::monotonic_ns();
            let mut outages = inner.outages[t];
            let since = if is_up {
                outages.up(now);
                None
            } else {
                Some(outages.down(now))
            };
            if let Ok(mut c) = self.classifier.lock()
                && let Err(e) = c.set_tunnel_down(tenant, since)
            {
                log::error!("tunnel {t}: {}", crate::ebpf::error_chain(&e));
                continue;
            }
            if let Some(from) = since
                && from != now
            {
                log::warn!(
                    "tunnel {t} down again {:?} after its outage began: its captive-portal grace is not restarted (it was up less than {GRACE_REARM_AFTER_UP:?})",
                    Duration::from_nanos(now.saturating_sub(from))
                );
            }
            inner.outages[t] = outages;
            inner.down[t] = (!is_up).then(Instant::now);
            changed = true;
        }
        if changed {
            let o = inner.outages.clone();
            drop(inner);
            self.save_outages(&o);
        }
    }

    /// The runtime state `explain` uses: how long each tunnel that is
    /// down has been so for the grace (since its outage series began).
    fn runtime(&self) -> Runtime {
        let inner = self.inner();
        let now = crate::sys::fanotify::monotonic_ns();
        Runtime {
            network: inner.network.map_or(NetworkState::OffTrusted, |(s, _)| s),
            down: inner
                .down
                .iter()
                .zip(&inner.outages)
                .enumerate()
                .filter_map(|(t, (d, o))| {
                    d.as_ref()?;
                    let from = o.grace_from?;
                    Some((
                        u8::try_from(t).ok()?,
                        Duration::from_nanos(now.saturating_sub(from)),
                    ))
                })
                .collect(),
        }
    }

    /// `GET /policy/explain?src=..&dst=..&dport=..[&sport=..][&proto=..]
    /// [&process=..][&domain=..][&local=1]`.
    pub(crate) fn explain(&self, query: &str) -> Result<String, FlowQueryError> {
        let flow = parse_flow(query)?;
        let policy = self.policy();
        Ok(eval::explain(&policy, &flow, &self.runtime()).to_string())
    }

    /// `GET /policy`: generation, tenant, network, tunnels, last swap.
    pub(crate) fn status(&self, out: &mut String) {
        let active = self.published.get();
        let p = &active.policy;
        let inner = self.inner();
        let _ = writeln!(
            out,
            "generation: {}\nprofiles: {}\nprivate-access tenant on: {}",
            active.generation,
            p.profiles
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            p.active_tenant
                .map_or("none", |t| p.tenants[t].name.as_str())
        );
        match (self.detector(), inner.network) {
            (Some(d), Some((state, _))) => {
                d.describe(out);
                let _ = writeln!(
                    out,
                    "internet traffic: {}",
                    match p.forwarding.action(state) {
                        crate::policy::NetAction::Direct => "direct (forwarding profile)",
                        crate::policy::NetAction::Tunnel => "by the app profiles",
                    }
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "network: not evaluated (no trusted-network criteria: off-trusted)\ninternet traffic: {}",
                    match p.forwarding.off_trusted {
                        crate::policy::NetAction::Direct => "direct (forwarding profile)",
                        crate::policy::NetAction::Tunnel => "by the app profiles",
                    }
                );
            }
        }
        let now = crate::sys::fanotify::monotonic_ns();
        for (t, (d, o)) in inner.down.iter().zip(&inner.outages).enumerate() {
            let name = u8::try_from(t).map_or("?", |t| p.tenant_name(t));
            let _ = match (d, o.grace_from) {
                (Some(since), Some(from)) => writeln!(
                    out,
                    "tunnel {name}: down for {:?} (captive-portal grace counted from {:?} ago)",
                    since.elapsed(),
                    Duration::from_nanos(now.saturating_sub(from))
                ),
                (Some(since), None) => {
                    writeln!(out, "tunnel {name}: down for {:?}", since.elapsed())
                }
                (None, _) => writeln!(out, "tunnel {name}: up"),
            };
        }
        if let Some(r) = &inner.last {
            let _ = writeln!(
                out,
                "last swap: generation {} ({}), {} entries, prepared in {:?}, flipped in {:?}, {:?} in all",
                r.generation, r.why, r.entries, r.prepare, r.commit, r.total
            );
        }
        if let Some(e) = &inner.last_error {
            let _ = writeln!(out, "last refused change: {e}");
        }
    }

    /// Prometheus text.
    pub(crate) fn render(&self, out: &mut String) {
        let active = self.published.get();
        let inner = self.inner();
        let p = &active.policy;
        sample(
            out,
            "sluice_policy_generation",
            "gauge",
            Some("The classifier's policy generation in force."),
            &[],
            u64::from(active.generation),
        );
        sample(
            out,
            "sluice_policy_swaps_total",
            "counter",
            Some("Policies swapped in (start, reloads, tenant switches)."),
            &[],
            inner.swaps,
        );
        sample(
            out,
            "sluice_policy_refused_total",
            "counter",
            Some("Reloads and switches refused (the previous policy kept running)."),
            &[],
            inner.failures,
        );
        if let Some(r) = &inner.last {
            sample(
                out,
                "sluice_policy_last_swap_microseconds",
                "gauge",
                Some("The last swap: compile, write the idle slot, flip."),
                &[],
                u64::try_from(r.total.as_micros()).unwrap_or(u64::MAX),
            );
        }
        if let Some(d) = self.detector() {
            d.render(out);
        }
        for (i, t) in p.tenants.iter().enumerate() {
            sample(
                out,
                "sluice_private_tenant_on",
                "gauge",
                (i == 0).then_some("1 for the private-access tenant switched on."),
                &[("tenant", &t.name)],
                u64::from(p.active_tenant == Some(i)),
            );
        }
    }
}

/// A flow from `src=..&dst=..&...` (percent-decoding not needed: addresses,
/// numbers, names and paths without spaces).
fn parse_flow(query: &str) -> Result<Flow, FlowQueryError> {
    let unset = IpAddr::from([0u8, 0, 0, 0]);
    let mut f = Flow::new(unset, unset, 0, 0, Proto::TCP);
    let (mut src, mut dst) = (false, false);
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let bad = |what| FlowQueryError::Value {
            key: k.to_string(),
            value: v.to_string(),
            what,
        };
        match k {
            "src" => {
                f.src = v.parse().map_err(|_| bad("an address"))?;
                src = true;
            }
            "dst" => {
                f.dst = v.parse().map_err(|_| bad("an address"))?;
                dst = true;
            }
            "sport" => f.sport = v.parse().map_err(|_| bad("a port"))?,
            "dport" => f.dport = v.parse().map_err(|_| bad("a port"))?,
            "proto" => f.proto = v.parse()?,
            "process" => f.process = Some(v.to_string()),
            "domain" => f.domain = Some(v.to_string()),
            "local" => f.local = v == "1" || v == "true",
            _ => return Err(FlowQueryError::Unknown(k.to_string())),
        }
    }
    if !(src && dst) {
        return Err(FlowQueryError::Missing);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_queries_are_refused_with_the_same_words() {
        let refused = |q: &str| parse_flow(q).unwrap_err().to_string();
        assert_eq!(refused("src=x&dst=192.0.2.1"), "src=x: not an address");
        assert_eq!(
            refused("src=192.0.2.1&dst=192.0.2.2&dport=http"),
            "dport=http: not a port"
        );
        assert_eq!(
            refused("src=192.0.2.1&dst=192.0.2.2&proto=gre-ish"),
            "`gre-ish` is not a protocol (tcp, udp, icmp, icmpv6, sctp or a number 1 to 255)"
        );
        assert_eq!(
            refused("src=192.0.2.1&dst=192.0.2.2&via=x"),
            "unknown parameter `via`"
        );
        assert_eq!(refused("src=192.0.2.1"), "src and dst are required");
        assert!(parse_flow("src=192.0.2.1&dst=192.0.2.2&proto=udp").is_ok());
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_flapping_tunnel_does_not_restart_its_grace() {
        let rearm = GRACE_REARM_AFTER_UP.as_secs() * S;
        let mut o = Outages::default();
        // First outage at 100 s: the grace counts from there.
        assert_eq!(o.down(100 * S), 100 * S);
        // Up at 130 s, down again at 160 s, 250 s, ...: every drop within
        // the re-arm time of coming up keeps the first drop's time.
        let mut t = 130 * S;
        for _ in 0..20 {
            o.up(t);
            t += 30 * S;
            assert_eq!(o.down(t), 100 * S, "drop at {} s", t / S);
            t += 60 * S;
        }
        // A repeated "down" while down changes nothing.
        assert_eq!(o.down(t), 100 * S);
        // Up for the whole re-arm time: the next outage is a new one.
        o.up(t);
        let later = t + rearm;
        assert_eq!(o.down(later), later);
        // One nanosecond short of it is not enough.
        o.up(later + S);
        assert_eq!(o.down(later + S + rearm - 1), later);
    }

    #[test]
    fn the_first_outage_starts_a_grace() {
        let mut o = Outages::default();
        assert_eq!(o.down(5), 5);
        let mut never_down = Outages::default();
        never_down.up(7);
        assert_eq!(never_down.down(9), 9);
    }

    /// Review finding: a restarted gateway started every tunnel's outages
    /// afresh, so each restart of a crash loop (or a service restart
    /// during a captive-portal outage) granted a new grace. The series is
    /// kept beside the instance lock and taken up by the next gateway of
    /// the same boot.
    #[test]
    fn a_restart_continues_the_outage_series() {
        let mut o = vec![Outages::default(); 3];
        assert_eq!(o[0].down(100 * S), 100 * S);
        o[1].up(50 * S);
        let text = outages_text("boot-a", &o);
        let mut back = parse_outages(&text, "boot-a", 3).expect("same boot");
        assert_eq!(back, o);
        // The next gateway's tunnel is down at first: still the old series.
        assert_eq!(back[0].down(400 * S), 100 * S);
        // Another boot's (or no boot id): nothing taken up.
        assert!(parse_outages(&text, "boot-b", 3).is_none());
        assert!(parse_outages(&outages_text("", &o), "", 3).is_none());
        // More tunnels now than then: the new ones have no series; garbage
        // is no series either, never a panic.
        let more = parse_outages(&text, "boot-a", 5).unwrap();
        assert_eq!(more[4], Outages::default());
        let junk = parse_outages("boot-a\nx y z\n\u{0}", "boot-a", 2).unwrap();
        assert_eq!(junk, vec![Outages::default(); 2]);
    }
}
