//! Trusted-network detection for forwarding profiles: is this host on a
//! trusted network, off it, or behind a full-tunnel VPN? Each state has
//! its action (tunnel or direct) in the forwarding profile.
//!
//! Three layers:
//! - [`evaluate`] is pure: it checks [`Criteria`] against [`Facts`] and says
//!   which [`NetworkState`] holds and why, one line per criterion.
//! - [`gather`] collects the facts from the host: `/etc/resolv.conf`,
//!   `ip -o route show table all`, `ip -o addr show`, DHCP lease files,
//!   hostname resolution and the source address toward the edge. It never
//!   fails: a fact it cannot get is empty, logged at debug. The parsers of
//!   those texts are pure and tested with fixtures.
//! - [`Detector`] runs both in a thread: at start, on link, address and
//!   route changes ([`crate::sys::rtnl::RouteMonitor`]), on an interval and
//!   on request, and reports state changes.
//!
//! Only reads the host's configuration: nothing here changes it.
use std::{
    fmt::{self, Display, Write as _},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use super::facts::{Dst, Route, parse_bootp, parse_default_routes, parse_lease, parse_resolv_conf};
use crate::{host, metrics, net::Prefix, sys::rtnl::RouteMonitor};

/// How the configured criteria combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Combine {
    /// Every configured criterion must be met.
    #[default]
    All,
    /// At least one configured criterion must be met.
    Any,
}

/// What makes a network trusted. Empty lists (and `resolve: None`) are
/// criteria not configured; with none configured the host is never
/// on-trusted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Criteria {
    /// How the configured criteria combine.
    pub combine: Combine,
    /// Met when one of these is among the host's resolvers.
    pub dns_servers: Vec<IpAddr>,
    /// Met when one of these is among the host's search domains
    /// (case-insensitive, trailing dot ignored).
    pub dns_search_domains: Vec<String>,
    /// Met when the hostname resolves to (among others) this address.
    pub resolve: Option<(String, IpAddr)>,
    /// Met when one of the host's addresses is inside one of these.
    pub networks: Vec<Prefix>,
    /// Met when the next hop of the preferred default route is one of these.
    pub default_gateways: Vec<IpAddr>,
    /// Met when a current DHCP lease came from one of these servers.
    pub dhcp_servers: Vec<IpAddr>,
    /// Met when the source address the host uses toward the probe address
    /// ([`Sources::egress_probe`]) is one of these.
    pub egress_addresses: Vec<IpAddr>,
}

impl Criteria {
    /// True if no criterion is configured (such criteria are never met).
    pub fn is_empty(&self) -> bool {
        self.dns_servers.is_empty()
            && self.dns_search_domains.is_empty()
            && self.resolve.is_none()
            && self.networks.is_empty()
            && self.default_gateways.is_empty()
            && self.dhcp_servers.is_empty()
            && self.egress_addresses.is_empty()
    }
}

/// Where the host is, as far as forwarding profiles are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkState {
    /// The trusted-network criteria are met.
    OnTrusted,
    /// They are not (or none are configured).
    OffTrusted,
    /// A full-tunnel VPN holds the default route.
    VpnTrusted,
}

impl NetworkState {
    /// Every state, in the order metrics list them.
    pub const ALL: [Self; 3] = [Self::OnTrusted, Self::OffTrusted, Self::VpnTrusted];

    /// The state's name: `on-trusted`, `off-trusted` or `vpn-trusted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTrusted => "on-trusted",
            Self::OffTrusted => "off-trusted",
            Self::VpnTrusted => "vpn-trusted",
        }
    }
}

impl Display for NetworkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`gather`] found out about the host.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The resolvers (`nameserver` lines; behind the systemd-resolved stub,
    /// its upstream servers too).
    pub dns_servers: Vec<IpAddr>,
    /// The search domains, as written.
    pub search_domains: Vec<String>,
    /// The addresses the criteria's hostname resolved to; `None` if not
    /// asked or resolution failed.
    pub resolved: Option<Vec<IpAddr>>,
    /// Every address on the host's interfaces.
    pub local_addrs: Vec<IpAddr>,
    /// Next hops of the preferred (lowest-metric) default route of the main
    /// table, per family.
    pub default_gateways: Vec<IpAddr>,
    /// Devices of those routes (each once).
    pub default_devices: Vec<String>,
    /// The VPN device holding the default route, if one does.
    pub vpn_device: Option<String>,
    /// Servers of the current DHCP leases (leases whose address the host
    /// still has).
    pub dhcp_servers: Vec<IpAddr>,
    /// The source address toward the probe address, if asked and routable.
    pub egress: Option<IpAddr>,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The state.
    pub state: NetworkState,
    /// Why: the VPN if one holds the default route, then one line per
    /// configured criterion (met or not, and why), then the verdict.
    pub reasons: Vec<String>,
}

/// Checks the criteria against the facts. A VPN holding the default route
/// wins over the criteria, which are still reported.
pub fn evaluate(c: &Criteria, f: &Facts) -> Evaluation {
    let mut reasons = Vec::new();
    if let Some(dev) = &f.vpn_device {
        reasons.push(format!("default route via {dev}, a VPN interface"));
    }
    let results = check(c, f);
    let (met, total) = (results.iter().filter(|r| r.0).count(), results.len());
    let trusted = match c.combine {
        _ if total == 0 => false,
        Combine::All => met == total,
        Combine::Any => met > 0,
    };
    reasons.extend(results.into_iter().map(|r| r.1));
    reasons.push(match c.combine {
        _ if total == 0 => "no trusted-network criteria configured".into(),
        Combine::All => format!("{met} of {total} criteria met (all required)"),
        Combine::Any => format!("{met} of {total} criteria met (any suffices)"),
    });
    let state = match (&f.vpn_device, trusted) {
        (Some(_), _) => NetworkState::VpnTrusted,
        (None, true) => NetworkState::OnTrusted,
        (None, false) => NetworkState::OffTrusted,
    };
    Evaluation { state, reasons }
}

/// Each configured criterion: met or not, and the reason line.
fn check(c: &Criteria, f: &Facts) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    if !c.dns_servers.is_empty() {
        out.push(among(
            "dns_servers",
            &c.dns_servers,
            &f.dns_servers,
            "this host's resolvers",
        ));
    }
    if !c.dns_search_domains.is_empty() {
        let norm = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        out.push(among(
            "dns_search_domains",
            &norm(&c.dns_search_domains),
            &norm(&f.search_domains),
            "this host's search domains",
        ));
    }
    if let Some((name, want)) = &c.resolve {
        out.push(match &f.resolved {
            Some(got) => among(
                "resolve",
                std::slice::from_ref(want),
                got,
                &format!("the addresses of {name}"),
            ),
            None => (false, format!("resolve: {name} did not resolve (not met)")),
        });
    }
    if !c.networks.is_empty() {
        let hit = f
            .local_addrs
            .iter()
            .find_map(|&a| Some((a, c.networks.iter().find(|p| p.contains(a))?)));
        out.push(match hit {
            Some((a, p)) => (true, format!("networks: {a} is in {p} (met)")),
            None => (
                false,
                format!(
                    "networks: no address of this host in {} (not met)",
                    list(&c.networks)
                ),
            ),
        });
    }
    if !c.default_gateways.is_empty() {
        out.push(among(
            "default_gateways",
            &c.default_gateways,
            &f.default_gateways,
            "this host's default gateways",
        ));
    }
    if !c.dhcp_servers.is_empty() {
        out.push(among(
            "dhcp_servers",
            &c.dhcp_servers,
            &f.dhcp_servers,
            "the servers of this host's DHCP leases",
        ));
    }
    if !c.egress_addresses.is_empty() {
        out.push(among(
            "egress_addresses",
            &c.egress_addresses,
            f.egress.as_slice(),
            "the addresses this host sends from toward the edge",
        ));
    }
    out
}

/// Met if one of `want` is in `have`.
fn among<T: PartialEq + Display>(name: &str, want: &[T], have: &[T], what: &str) -> (bool, String) {
    if let Some(hit) = want.iter().find(|w| have.contains(w)) {
        return (true, format!("{name}: {hit} is among {what} (met)"));
    }
    let found = if have.is_empty() {
        "none found".into()
    } else {
        list(have)
    };
    let want = list(want);
    (
        false,
        format!("{name}: {want} not among {what} ({found}) (not met)"),
    )
}

fn list<T: Display>(items: &[T]) -> String {
    let mut s = String::new();
    for (i, x) in items.iter().enumerate() {
        let _ = write!(s, "{}{x}", if i > 0 { ", " } else { "" });
    }
    s
}

/// Where [`gather`] looks.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The resolver configuration (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// systemd-resolved's list of upstream servers
    /// (`/run/systemd/resolve/resolv.conf`), read when `resolv_conf` names
    /// only its local stub (127.0.0.53 or 127.0.0.54).
    pub resolved_conf: PathBuf,
    /// DHCP lease files, or directories of them (files named `*.lease`,
    /// `*.leases` or by an interface index).
    pub dhcp_leases: Vec<PathBuf>,
    /// Interface names that are VPNs; a trailing `*` matches any rest.
    pub vpn_interfaces: Vec<String>,
    /// Interfaces never counted as a VPN (sluice's own), exact names.
    pub ignore_interfaces: Vec<String>,
    /// The edge's address: the egress address is the local address the
    /// kernel picks toward it (no packet is sent).
    pub egress_probe: Option<SocketAddr>,
    /// How long a hostname resolution may take.
    pub resolve_timeout: Duration,
}

impl Default for Sources {
    fn default() -> Self {
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect();
        Self {
            resolv_conf: "/etc/resolv.conf".into(),
            resolved_conf: "/run/systemd/resolve/resolv.conf".into(),
            dhcp_leases: paths(&[
                "/var/lib/dhcp",
                "/var/lib/dhclient",
                "/run/systemd/netif/leases",
                "/var/lib/NetworkManager",
                "/var/lib/dhcpcd",
            ]),
            vpn_interfaces: ["tun*", "wg*", "ppp*", "tap*", "utun*", "ipsec*"]
                .map(String::from)
                .to_vec(),
            ignore_interfaces: Vec::new(),
            egress_probe: None,
            resolve_timeout: Duration::from_secs(2),
        }
    }
}

/// Collects the facts the criteria and VPN detection need. Resolution and
/// the egress probe happen only when a criterion needs them, DHCP leases
/// are read only for the `dhcp_servers` criterion. Never fails: what
/// cannot be read is left empty and logged at debug.
pub fn gather(c: &Criteria, s: &Sources) -> Facts {
    let mut f = Facts::default();
    (f.dns_servers, f.search_domains) = resolvers(s);
    f.local_addrs = ok("local addresses", host::local_addrs()).unwrap_or_default();
    for family in ["-4", "-6"] {
        let Some(text) = ok(
            "routes",
            host::run(&["ip", "-o", family, "route", "show", "table", "all"], None),
        ) else {
            continue;
        };
        let routes = parse_default_routes(&text);
        for r in preferred(&routes, None, Dst::Default) {
            f.default_gateways.extend(r.via);
            if !f.default_devices.contains(&r.dev) {
                f.default_devices.push(r.dev.clone());
            }
        }
        if f.vpn_device.is_none() {
            f.vpn_device = vpn_device(&routes, &s.vpn_interfaces, &s.ignore_interfaces, is_tunnel);
        }
    }
    if !c.dhcp_servers.is_empty() {
        f.dhcp_servers = dhcp_servers(&s.dhcp_leases, &f.local_addrs);
    }
    if let Some((name, _)) = &c.resolve {
        f.resolved = resolve(name, s.resolve_timeout);
    }
    if !c.egress_addresses.is_empty() {
        f.egress = s.egress_probe.and_then(egress);
    }
    f
}

/// `Ok` as `Some`; an error is logged at debug as a missing fact.
fn ok<T, E: Display>(what: &str, r: Result<T, E>) -> Option<T> {
    r.map_err(|e| log::debug!("trusted network: {what}: {e}"))
        .ok()
}

fn resolvers(s: &Sources) -> (Vec<IpAddr>, Vec<String>) {
    let read = |p: &Path| {
        ok(&p.display().to_string(), fs::read_to_string(p)).map(|t| parse_resolv_conf(&t))
    };
    let Some((mut servers, mut search)) = read(&s.resolv_conf) else {
        return Default::default();
    };
    let stub = |a: &IpAddr| {
        *a == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53))
            || *a == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 54))
    };
    let behind_stub = !servers.is_empty() && servers.iter().all(stub);
    if let Some((up, up_search)) = behind_stub.then(|| read(&s.resolved_conf)).flatten() {
        servers.extend(up);
        if search.is_empty() {
            search = up_search;
        }
    }
    (servers, search)
}

/// The routes of `table` to `dst` with the lowest metric (the ones the
/// kernel uses; several for multipath).
fn preferred<'a>(
    routes: &'a [Route],
    table: Option<&'a str>,
    dst: Dst,
) -> impl Iterator<Item = &'a Route> {
    let of = move |r: &&Route| r.dst == dst && r.table.as_deref() == table;
    let best = routes.iter().filter(of).map(|r| r.metric).min();
    routes
        .iter()
        .filter(move |r| of(r) && Some(r.metric) == best)
}

/// The VPN device that holds the default route, if any: in any table (a
/// full tunnel may route through a policy table, as `wg-quick` does), the
/// device of the preferred default route, or the device holding both
/// half-default routes, that matches `patterns` or is a tunnel
/// (`is_tunnel`) and is not in `ignore`.
pub(crate) fn vpn_device(
    routes: &[Route],
    patterns: &[String],
    ignore: &[String],
    is_tunnel: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut tables: Vec<Option<&str>> = routes.iter().map(|r| r.table.as_deref()).collect();
    tables.sort_unstable();
    tables.dedup();
    let is_vpn = |d: &str| {
        !ignore.iter().any(|i| i == d)
            && (patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => d.starts_with(prefix),
                None => d == p,
            }) || is_tunnel(d))
    };
    tables
        .into_iter()
        .flat_map(|t| {
            let halves = preferred(routes, t, Dst::LowHalf)
                .filter(move |l| preferred(routes, t, Dst::HighHalf).any(|h| h.dev == l.dev));
            preferred(routes, t, Dst::Default).chain(halves)
        })
        .map(|r| r.dev.as_str())
        .find(|d| is_vpn(d))
        .map(String::from)
}

/// A TUN/TAP or `WireGuard` device, by sysfs.
fn is_tunnel(dev: &str) -> bool {
    let dir = Path::new("/sys/class/net").join(dev);
    dir.join("tun_flags").exists()
        || fs::read_to_string(dir.join("uevent"))
            .is_ok_and(|u| u.lines().any(|l| l == "DEVTYPE=wireguard"))
}

/// Servers of the leases in `paths` (files, or directories of lease files)
/// whose address is still one of `local` (old lease files of other
/// networks stay on disk).
fn dhcp_servers(paths: &[PathBuf], local: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for p in paths {
        let files: Vec<PathBuf> = match fs::read_dir(p) {
            Ok(dir) => dir
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    let name = f.file_name().unwrap_or_default().to_string_lossy();
                    name.ends_with(".lease")
                        || name.ends_with(".leases")
                        || name.bytes().all(|b| b.is_ascii_digit())
                })
                .collect(),
            Err(_) => vec![p.clone()],
        };
        for file in files {
            let Some(bytes) = ok(&file.display().to_string(), fs::read(&file)) else {
                continue;
            };
            let leases = parse_bootp(&bytes).map_or_else(
                || parse_lease(&String::from_utf8_lossy(&bytes)),
                |l| vec![l],
            );
            for l in leases {
                if l.address.is_none_or(|a| local.contains(&a)) && !out.contains(&l.server) {
                    out.push(l.server);
                }
            }
        }
    }
    out
}

/// Resolver threads still running: a hung resolver leaves its thread
/// behind until it returns, and no new one starts while four are.
static RESOLVING: AtomicUsize = AtomicUsize::new(0);

/// Resolves `name` in a helper thread, waiting at most `timeout`.
fn resolve(name: &str, timeout: Duration) -> Option<Vec<IpAddr>> {
    let what = format!("resolving {name}");
    if RESOLVING.fetch_add(1, Relaxed) >= 4 {
        RESOLVING.fetch_sub(1, Relaxed);
        return ok(&what, Err("earlier resolutions still hang"));
    }
    let (tx, rx) = mpsc::channel();
    let owned = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("sluice-resolve".into())
        .spawn(move || {
            let r = (owned.as_str(), 0).to_socket_addrs();
            let _ = tx.send(r.map(|a| a.map(|s| s.ip()).collect::<Vec<_>>()));
            RESOLVING.fetch_sub(1, Relaxed);
        });
    if spawned.is_err() {
        RESOLVING.fetch_sub(1, Relaxed);
    }
    ok(&what, spawned)?;
    let answer = rx
        .recv_timeout(timeout)
        .map_err(|_| format!("no answer in {timeout:?}"));
    ok(&what, answer).and_then(|r| ok(&what, r))
}

/// The local address the kernel picks toward `probe` (a connected UDP
/// socket: no packet is sent).
fn egress(probe: SocketAddr) -> Option<IpAddr> {
    let any = match probe {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let r = UdpSocket::bind((any, 0)).and_then(|s| {
        s.connect(probe)?;
        s.local_addr()
    });
    ok(&format!("egress toward {probe}"), r).map(|a| a.ip())
}

/// How often the detector's thread looks at its stop flags.
const TICK: Duration = Duration::from_millis(100);
/// A burst of changes is over after this much quiet...
const QUIET: Duration = Duration::from_millis(200);
/// ...or this long after its first change.
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// The detector's latest evaluation.
#[derive(Debug, Clone)]
pub struct Status {
    /// The current state.
    pub state: NetworkState,
    /// Why (see [`Evaluation::reasons`]).
    pub reasons: Vec<String>,
    /// When it was last evaluated.
    pub evaluated_at: SystemTime,
    /// Evaluations so far, the first included.
    pub evaluations: u64,
    /// State changes since the first evaluation.
    pub changes: u64,
}

#[derive(Debug)]
struct Shared {
    status: Mutex<Status>,
    recheck: AtomicBool,
    stop: AtomicBool,
    /// Turns of the thread's loop (the gateway's watchdog checks it moves).
    turns: AtomicU64,
}

impl Shared {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an evaluation; calls `on_change` if the state changed.
    fn record(&self, e: Evaluation, on_change: &dyn Fn(NetworkState)) {
        let mut s = self.status();
        let old = s.state;
        s.evaluations += 1;
        s.evaluated_at = SystemTime::now();
        if e.state == old {
            if s.reasons != e.reasons {
                log::debug!("network: {old}: {}", e.reasons.join("; "));
            }
            s.reasons = e.reasons;
            return;
        }
        log::info!("network: {old} -> {}: {}", e.state, e.reasons.join("; "));
        s.changes += 1;
        s.state = e.state;
        s.reasons = e.reasons;
        drop(s);
        on_change(e.state);
    }
}

/// Evaluates the trusted-network state in a thread and reports changes.
#[derive(Debug)]
pub struct Detector {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Detector {
    /// Evaluates once synchronously (so the caller has a state before
    /// anything starts), calls `on_change` with that state, then
    /// re-evaluates in a thread on link, address and route changes
    /// (debounced: after 200 ms of quiet, at most 1 s after the first
    /// change), every `interval` (`Duration::MAX`: never), and when [`recheck`](Self::recheck) is
    /// called; calls `on_change` only when the state changes. The thread
    /// stops when `stop` is set or the detector is dropped (noticed within
    /// 100 ms, or once a running evaluation ends).
    ///
    /// Fails if the rtnetlink socket cannot be opened (changes would go
    /// unnoticed until the next interval) or the thread cannot start.
    pub fn start(
        criteria: Criteria,
        sources: Sources,
        interval: Duration,
        stop: Arc<AtomicBool>,
        on_change: impl Fn(NetworkState) + Send + 'static,
    ) -> io::Result<Self> {
        // Subscribed before the first evaluation, so that no change
        // between the two goes unnoticed.
        let mut monitor = RouteMonitor::new()?;
        let first = evaluate(&criteria, &gather(&criteria, &sources));
        log::info!("network: {}: {}", first.state, first.reasons.join("; "));
        on_change(first.state);
        let shared = Arc::new(Shared {
            status: Mutex::new(Status {
                state: first.state,
                reasons: first.reasons,
                evaluated_at: SystemTime::now(),
                evaluations: 1,
                changes: 0,
            }),
            recheck: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            turns: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-netstate".into())
            .spawn(move || {
                let mut due = Instant::now().checked_add(interval);
                // First and latest change of a burst not yet evaluated.
                let mut burst: Option<(Instant, Instant)> = None;
                let mut failing = false;
                while !stop.load(Relaxed) && !s.stop.load(Relaxed) {
                    s.turns.fetch_add(1, Relaxed);
                    match monitor.wait(TICK) {
                        Ok(changed) => {
                            failing = false;
                            if changed {
                                let now = Instant::now();
                                burst = Some((burst.map_or(now, |b| b.0), now));
                            }
                        }
                        Err(e) => {
                            if !failing {
                                log::warn!("network: change notifications: {e}");
                            }
                            failing = true;
                            std::thread::sleep(TICK);
                        }
                    }
                    let now = Instant::now();
                    let settled = burst.is_some_and(|(first, last)| {
                        now - last >= QUIET || now - first >= SETTLE_MAX
                    });
                    if s.recheck.swap(false, Relaxed) || settled || due.is_some_and(|d| now >= d) {
                        burst = None;
                        s.record(
                            evaluate(&criteria, &gather(&criteria, &sources)),
                            &on_change,
                        );
                        due = Instant::now().checked_add(interval);
                    }
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The latest evaluation.
    pub fn status(&self) -> Status {
        self.shared.status().clone()
    }

    /// Whether the detector's thread has ended (by a stop, or on its own).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Turns of the thread's loop so far: at least ten a second while it
    /// waits, one per evaluation (which waits at most for one name to
    /// resolve, 2 s by default).
    pub fn turns(&self) -> u64 {
        self.shared.turns.load(Relaxed)
    }

    /// Asks for an evaluation now (within 100 ms).
    pub fn recheck(&self) {
        self.shared.recheck.store(true, Relaxed);
    }

    /// Appends the Prometheus metrics: the state (1 for the current one, 0
    /// for the others), evaluations and state changes.
    pub fn render(&self, out: &mut String) {
        let s = self.status();
        for (i, state) in NetworkState::ALL.into_iter().enumerate() {
            metrics::sample(
                out,
                "sluice_network_state",
                "gauge",
                (i == 0).then_some("Trusted-network state: 1 for the current one."),
                &[("state", state.as_str())],
                u64::from(state == s.state),
            );
        }
        metrics::sample(
            out,
            "sluice_network_evaluations_total",
            "counter",
            Some("Trusted-network evaluations."),
            &[],
            s.evaluations,
        );
        metrics::sample(
            out,
            "sluice_network_state_changes_total",
            "counter",
            Some("Trusted-network state changes."),
            &[],
            s.changes,
        );
    }

    /// Appends the state, when and how often it was evaluated, and why,
    /// for people: `network: on-trusted (evaluated <UTC time>, 3
    /// evaluations)` and one `  - reason` line each.
    pub fn describe(&self, out: &mut String) {
        let s = self.status();
        let _ = writeln!(
            out,
            "network: {} (evaluated {}, {} evaluations)",
            s.state,
            utc(s.evaluated_at),
            s.evaluations
        );
        for r in &s.reasons {
            let _ = writeln!(out, "  - {r}");
        }
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `t` as an RFC 3339 UTC time to the second (days to civil date after
/// Howard Hinnant's `civil_from_days`).
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::facts::Lease;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    /// Facts of a host on 192.0.2.0/24 (and `2001:db8:1::/64`) behind
    /// 192.0.2.1, with the corporate resolver and search domain.
    fn office() -> Facts {
        Facts {
            dns_servers: ips(&["192.0.2.53", "2001:db8:1::53"]),
            search_domains: vec!["Corp.Example.".into(), "example.net".into()],
            resolved: Some(ips(&["192.0.2.80"])),
            local_addrs: ips(&["127.0.0.1", "192.0.2.7", "2001:db8:1::7"]),
            default_gateways: ips(&["192.0.2.1", "fe80::1"]),
            default_devices: vec!["eth0".into()],
            vpn_device: None,
            dhcp_servers: ips(&["192.0.2.2"]),
            egress: Some(ip("192.0.2.7")),
        }
    }

    /// One criterion of each kind, each met by [`office`].
    fn each_criterion() -> Vec<(&'static str, Criteria)> {
        let one = |f: &dyn Fn(&mut Criteria)| {
            let mut c = Criteria::default();
            f(&mut c);
            c
        };
        vec![
            (
                "dns_servers",
                one(&|c| c.dns_servers = ips(&["192.0.2.53"])),
            ),
            (
                "dns_search_domains",
                one(&|c| c.dns_search_domains = vec!["corp.example".into()]),
            ),
            (
                "resolve",
                one(&|c| c.resolve = Some(("intranet.corp.example".into(), ip("192.0.2.80")))),
            ),
            (
                "networks",
                one(&|c| c.networks = vec!["192.0.2.0/24".parse().unwrap()]),
            ),
            (
                "default_gateways",
                one(&|c| c.default_gateways = ips(&["192.0.2.1"])),
            ),
            (
                "dhcp_servers",
                one(&|c| c.dhcp_servers = ips(&["192.0.2.2"])),
            ),
            (
                "egress_addresses",
                one(&|c| c.egress_addresses = ips(&["192.0.2.7"])),
            ),
        ]
    }

    #[test]
    fn each_criterion_met_and_not_met() {
        let away = Facts {
            dns_servers: ips(&["198.51.100.53"]),
            search_domains: vec!["home.arpa".into()],
            resolved: Some(ips(&["203.0.113.80"])),
            local_addrs: ips(&["198.51.100.7"]),
            default_gateways: ips(&["198.51.100.1"]),
            dhcp_servers: ips(&["198.51.100.1"]),
            egress: Some(ip("198.51.100.7")),
            ..Facts::default()
        };
        for (name, c) in each_criterion() {
            assert!(!c.is_empty(), "{name}");
            let expect = |facts: &Facts, state, verdict: &str| {
                let e = evaluate(&c, facts);
                assert_eq!(e.state, state, "{name}: {:?}", e.reasons);
                let line = &e.reasons[0];
                assert!(line.starts_with(&format!("{name}: ")), "{line}");
                assert!(line.ends_with(verdict), "{line}");
            };
            expect(&office(), NetworkState::OnTrusted, " (met)");
            expect(&away, NetworkState::OffTrusted, " (not met)");
            expect(&Facts::default(), NetworkState::OffTrusted, " (not met)");
        }
    }

    #[test]
    fn reasons_say_why() {
        let reasons = |c: &Criteria, f: &Facts| evaluate(c, f).reasons.remove(0);
        let mut c = Criteria {
            dns_servers: ips(&["192.0.2.53"]),
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &office()),
            "dns_servers: 192.0.2.53 is among this host's resolvers (met)"
        );
        c.dns_servers = ips(&["203.0.113.53", "203.0.113.54"]);
        assert_eq!(
            reasons(&c, &office()),
            "dns_servers: 203.0.113.53, 203.0.113.54 not among this host's resolvers \
             (192.0.2.53, 2001:db8:1::53) (not met)"
        );
        let c = Criteria {
            networks: vec!["198.51.100.0/24".parse().unwrap()],
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &office()),
            "networks: no address of this host in 198.51.100.0/24 (not met)"
        );
        let c = Criteria {
            default_gateways: ips(&["192.0.2.1"]),
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &Facts::default()),
            "default_gateways: 192.0.2.1 not among this host's default gateways \
             (none found) (not met)"
        );
        let c = Criteria {
            resolve: Some(("intranet.corp.example".into(), ip("192.0.2.80"))),
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &Facts::default()),
            "resolve: intranet.corp.example did not resolve (not met)"
        );
    }

    #[test]
    fn all_needs_every_criterion_any_needs_one() {
        let mut c = Criteria {
            dns_servers: ips(&["192.0.2.53"]),
            networks: vec!["198.51.100.0/24".parse().unwrap()],
            ..Criteria::default()
        };
        let e = evaluate(&c, &office());
        assert_eq!(e.state, NetworkState::OffTrusted);
        assert_eq!(e.reasons.len(), 3);
        assert_eq!(e.reasons[2], "1 of 2 criteria met (all required)");
        c.combine = Combine::Any;
        let e = evaluate(&c, &office());
        assert_eq!(e.state, NetworkState::OnTrusted);
        assert_eq!(e.reasons[2], "1 of 2 criteria met (any suffices)");
        // Every criterion at once, all met.
        let mut all = Criteria::default();
        for (_, c) in each_criterion() {
            all.dns_servers.extend(c.dns_servers);
            all.dns_search_domains.extend(c.dns_search_domains);
            all.resolve = all.resolve.or(c.resolve);
            all.networks.extend(c.networks);
            all.default_gateways.extend(c.default_gateways);
            all.dhcp_servers.extend(c.dhcp_servers);
            all.egress_addresses.extend(c.egress_addresses);
        }
        let e = evaluate(&all, &office());
        assert_eq!(e.state, NetworkState::OnTrusted, "{:?}", e.reasons);
        assert_eq!(
            e.reasons.last().unwrap(),
            "7 of 7 criteria met (all required)"
        );
        let e = evaluate(&all, &Facts::default());
        assert_eq!(e.state, NetworkState::OffTrusted);
        assert_eq!(
            e.reasons.last().unwrap(),
            "0 of 7 criteria met (all required)"
        );
    }

    #[test]
    fn empty_criteria_are_never_trusted() {
        assert!(Criteria::default().is_empty());
        assert_eq!(Criteria::default().combine, Combine::All);
        let e = evaluate(&Criteria::default(), &office());
        assert_eq!(e.state, NetworkState::OffTrusted);
        assert_eq!(e.reasons, ["no trusted-network criteria configured"]);
        let e = evaluate(
            &Criteria {
                combine: Combine::Any,
                ..Criteria::default()
            },
            &office(),
        );
        assert_eq!(e.state, NetworkState::OffTrusted);
    }

    #[test]
    fn vpn_wins() {
        let facts = Facts {
            vpn_device: Some("wg0".into()),
            ..office()
        };
        for c in [Criteria::default(), each_criterion().remove(0).1] {
            let e = evaluate(&c, &facts);
            assert_eq!(e.state, NetworkState::VpnTrusted);
            assert_eq!(e.reasons[0], "default route via wg0, a VPN interface");
            // The criteria are still reported.
            assert_eq!(e.reasons[1..], evaluate(&c, &office()).reasons);
        }
    }

    #[test]
    fn ipv6_criteria_and_domain_normalisation() {
        let c = Criteria {
            dns_servers: ips(&["2001:db8:1::53"]),
            networks: vec!["2001:db8:1::/64".parse().unwrap()],
            default_gateways: ips(&["fe80::1"]),
            dns_search_domains: vec!["CORP.example.".into()],
            ..Criteria::default()
        };
        let e = evaluate(&c, &office());
        assert_eq!(e.state, NetworkState::OnTrusted, "{:?}", e.reasons);
        assert!(
            e.reasons
                .contains(&"networks: 2001:db8:1::7 is in 2001:db8:1::/64 (met)".into())
        );
        // An IPv4 prefix never contains an IPv6 address, nor the reverse.
        let c = Criteria {
            networks: vec!["2001:db8:2::/48".parse().unwrap()],
            ..Criteria::default()
        };
        assert_eq!(evaluate(&c, &office()).state, NetworkState::OffTrusted);
    }

    #[test]
    fn state_names() {
        let names: Vec<String> = NetworkState::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["on-trusted", "off-trusted", "vpn-trusted"]);
    }

    const RESOLV_CONF: &str = "\
# Generated by NetworkManager
; another comment style
domain old.example
nameserver 192.0.2.53
nameserver fe80::53%eth0
nameserver not-an-address
nameserver
options edns0 trust-ad
search Corp.Example. example.net
";

    #[test]
    fn parses_resolv_conf() {
        let (servers, search) = parse_resolv_conf(RESOLV_CONF);
        assert_eq!(servers, ips(&["192.0.2.53", "fe80::53"]));
        assert_eq!(search, ["Corp.Example.", "example.net"]);
        // `domain` after `search` wins too.
        let (_, search) = parse_resolv_conf("search a.example\ndomain b.example\n");
        assert_eq!(search, ["b.example"]);
        assert_eq!(parse_resolv_conf(""), (Vec::new(), Vec::<String>::new()));
    }

    #[test]
    fn systemd_resolved_stub_adds_upstream_servers() {
        let dir = std::env::temp_dir().join(format!("sluice-resolv-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (stub, upstream) = (dir.join("stub.conf"), dir.join("upstream.conf"));
        fs::write(&stub, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
        fs::write(&upstream, "nameserver 192.0.2.53\nsearch corp.example\n").unwrap();
        let s = Sources {
            resolv_conf: stub.clone(),
            resolved_conf: upstream.clone(),
            ..Sources::default()
        };
        assert_eq!(
            resolvers(&s),
            (
                ips(&["127.0.0.53", "192.0.2.53"]),
                vec!["corp.example".into()]
            )
        );
        // A real resolver list is taken as it is.
        fs::write(&stub, "nameserver 198.51.100.53\n").unwrap();
        assert_eq!(resolvers(&s).0, ips(&["198.51.100.53"]));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(resolvers(&s), (Vec::new(), Vec::new()));
    }

    /// `ip -o -4 route show table all`, as iproute2 prints it (multipath
    /// next hops joined by `\` and a tab).
    const ROUTES_V4: &str = "\
default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.7 metric 600 \n\
default via 198.51.100.1 dev wlan0 proto dhcp src 198.51.100.7 metric 100 \n\
0.0.0.0/1 via 198.18.8.1 dev tun0 \n\
198.18.8.0/24 dev tun0 proto kernel scope link src 198.18.8.2 \n\
128.0.0.0/1 via 198.18.8.1 dev tun0 metric 5 \n\
default table 100 metric 50 \\\tnexthop via 192.0.2.1 dev eth0 weight 1 \\\tnexthop via inet6 fe80::1 dev eth1 weight 2 \n\
unreachable default table 200 \n\
default dev wg0 table 51820 scope link \n\
local 192.0.2.7 dev eth0 table local proto kernel scope host src 192.0.2.7 \n\
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.7 \n";

    const ROUTES_V6: &str = "\
2001:db8:1::/64 dev eth0 proto kernel metric 256 pref medium
default via fe80::1 dev eth0 proto ra metric 1024 expires 1790sec hoplimit 64 pref medium
::/1 dev wg0 metric 1024 pref medium
8000::/1 dev wg0 metric 1024 pref medium
local ::1 dev lo table local proto kernel metric 0 pref medium
multicast ff00::/8 dev eth0 table local proto kernel metric 256 pref medium
";

    fn route(dst: Dst, via: Option<&str>, dev: &str, metric: u32, table: Option<&str>) -> Route {
        Route {
            dst,
            via: via.map(ip),
            dev: dev.into(),
            metric,
            table: table.map(String::from),
        }
    }

    #[test]
    fn parses_default_routes() {
        use Dst::{Default, HighHalf, LowHalf};
        assert_eq!(
            parse_default_routes(ROUTES_V4),
            [
                route(Default, Some("192.0.2.1"), "eth0", 600, None),
                route(Default, Some("198.51.100.1"), "wlan0", 100, None),
                route(LowHalf, Some("198.18.8.1"), "tun0", 0, None),
                route(HighHalf, Some("198.18.8.1"), "tun0", 5, None),
                route(Default, Some("192.0.2.1"), "eth0", 50, Some("100")),
                route(Default, Some("fe80::1"), "eth1", 50, Some("100")),
                route(Default, None, "wg0", 0, Some("51820")),
            ]
        );
        assert_eq!(
            parse_default_routes(ROUTES_V6),
            [
                route(Default, Some("fe80::1"), "eth0", 1024, None),
                route(LowHalf, None, "wg0", 1024, None),
                route(HighHalf, None, "wg0", 1024, None),
            ]
        );
        assert!(parse_default_routes("").is_empty());
        assert!(parse_default_routes("default via 192.0.2.1\ngarbage\n").is_empty());
    }

    #[test]
    fn preferred_default_route_has_the_lowest_metric() {
        let routes = parse_default_routes(ROUTES_V4);
        let devs = |t| -> Vec<&str> {
            preferred(&routes, t, Dst::Default)
                .map(|r| r.dev.as_str())
                .collect()
        };
        assert_eq!(devs(None), ["wlan0"]);
        assert_eq!(devs(Some("100")), ["eth0", "eth1"]);
        assert!(devs(Some("7")).is_empty());
    }

    #[test]
    fn finds_the_vpn_holding_the_default_route() {
        use Dst::{Default, HighHalf, LowHalf};
        let patterns = Sources::default().vpn_interfaces;
        let no_tunnels = |_: &str| false;
        let vpn = |routes: &[Route], ignore: &[&str], tunnel: &dyn Fn(&str) -> bool| {
            let ignore: Vec<String> = ignore.iter().map(|s| (*s).to_string()).collect();
            vpn_device(routes, &patterns, &ignore, tunnel)
        };
        let main = |dst, dev: &str, metric| route(dst, None, dev, metric, None);

        // The default route through a device named like a VPN.
        assert_eq!(
            vpn(&[main(Default, "tun0", 0)], &[], &no_tunnels).as_deref(),
            Some("tun0")
        );
        // A VPN's default route with a higher metric does not hold it.
        let backup = [main(Default, "eth0", 100), main(Default, "ppp0", 200)];
        assert_eq!(vpn(&backup, &[], &no_tunnels), None);
        // The two halves override the default route.
        let halves = [
            main(Default, "eth0", 100),
            main(LowHalf, "tun0", 0),
            main(HighHalf, "tun0", 0),
        ];
        assert_eq!(vpn(&halves, &[], &no_tunnels).as_deref(), Some("tun0"));
        // One half is not a full tunnel, nor halves on different devices.
        assert_eq!(vpn(&halves[..2], &[], &no_tunnels), None);
        let split = [main(LowHalf, "tun0", 0), main(HighHalf, "tun1", 0)];
        assert_eq!(vpn(&split, &[], &no_tunnels), None);
        // A policy table's default route (wg-quick) counts.
        let wg = [
            main(Default, "eth0", 100),
            route(Default, None, "wg0", 0, Some("51820")),
        ];
        assert_eq!(vpn(&wg, &[], &no_tunnels).as_deref(), Some("wg0"));
        // sluice's own device is never a VPN, even if it is a tunnel.
        let own = [route(Default, None, "sluice0", 0, Some("100"))];
        assert_eq!(vpn(&own, &["sluice0"], &|_| true), None);
        // A tunnel by its kind, whatever its name; a plain device is not.
        let corp = [main(Default, "corp", 0)];
        assert_eq!(vpn(&corp, &[], &|d| d == "corp").as_deref(), Some("corp"));
        assert_eq!(vpn(&corp, &[], &no_tunnels), None);
        // Patterns without `*` are exact names.
        let exact = vpn_device(&corp, &["corp".into()], &[], no_tunnels);
        assert_eq!(exact.as_deref(), Some("corp"));
        assert_eq!(vpn_device(&corp, &["cor".into()], &[], no_tunnels), None);
        // The fixtures: tun0's halves (IPv4), wg0's (IPv6).
        let v4 = parse_default_routes(ROUTES_V4);
        assert_eq!(vpn(&v4, &[], &no_tunnels).as_deref(), Some("tun0"));
        let v6 = parse_default_routes(ROUTES_V6);
        assert_eq!(vpn(&v6, &[], &no_tunnels).as_deref(), Some("wg0"));
        assert_eq!(vpn(&v6, &["wg0"], &no_tunnels), None);
    }

    const DHCLIENT_LEASES: &str = r#"default-duid "\000\001\000\001\044\217\013\222RT\000\022\064V";
lease {
  interface "eth0";
  fixed-address 192.0.2.10;
  option subnet-mask 255.255.255.0;
  option routers 192.0.2.1;
  option dhcp-lease-time 86400;
  option dhcp-message-type 5;
  option domain-name-servers 192.0.2.53;
  option dhcp-server-identifier 192.0.2.2;
  option domain-name "corp.example";
  renew 4 2026/01/01 10:00:00;
  rebind 4 2026/01/01 20:00:00;
  expire 5 2026/01/02 00:00:00;
}
lease {
  interface "wlan0";
  fixed-address 198.51.100.7;
  option dhcp-server-identifier 198.51.100.1;
  expire epoch 1767312000; # Fri Jan 02 00:00:00 2026
}
lease {
  interface "eth0";
  fixed-address 192.0.2.11;
  option dhcp-server-identifier 192.0.2.3;
  expire 6 2026/01/03 00:00:00;
}
"#;

    /// systemd-networkd's `/run/systemd/netif/leases/<ifindex>`; the
    /// `NetworkManager` internal client's `internal-<uuid>-<iface>.lease` has
    /// the same form.
    const NETWORKD_LEASE: &str = "\
# This is private data. Do not parse.
ADDRESS=192.0.2.10
NETMASK=255.255.255.0
ROUTER=192.0.2.1
SERVER_ADDRESS=192.0.2.2
NEXT_SERVER=0.0.0.0
T1=43200
T2=75600
LIFETIME=86400
DNS=192.0.2.53
DOMAINNAME=corp.example
CLIENTID=ff4e5d1a9b00020000ab11b7b1e2b3c4d5e6f7
";

    const DHCLIENT6_LEASE: &str = r#"lease6 {
  interface "eth0";
  ia-na 1a:2b:3c:4d {
    starts 1767225600;
    iaaddr 2001:db8:1::7 {
      starts 1767225600;
      preferred-life 7200;
    }
  }
  option dhcp6.server-id 0:1:0:1:2a:3b:4c:5d:0:11:22:33:44:55;
}
"#;

    fn lease(server: &str, address: Option<&str>) -> Lease {
        Lease {
            server: ip(server),
            address: address.map(ip),
        }
    }

    #[test]
    fn parses_text_leases() {
        assert_eq!(
            parse_lease(DHCLIENT_LEASES),
            [
                lease("198.51.100.1", Some("198.51.100.7")),
                lease("192.0.2.3", Some("192.0.2.11")),
            ]
        );
        assert_eq!(
            parse_lease(NETWORKD_LEASE),
            [lease("192.0.2.2", Some("192.0.2.10"))]
        );
        assert!(parse_lease(DHCLIENT6_LEASE).is_empty());
        assert!(parse_lease("").is_empty());
        // A block cut short is not a lease.
        assert!(parse_lease("lease {\n  option dhcp-server-identifier 192.0.2.2;\n").is_empty());
    }

    /// A DHCPACK as dhcpcd stores it: BOOTP header, cookie, options
    /// (message type, a pad, server identifier, end).
    fn dhcp_ack() -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 2; // BOOTREPLY
        b[16..20].copy_from_slice(&[192, 0, 2, 10]); // yiaddr
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 5, 0, 54, 4, 192, 0, 2, 2, 255]);
        b
    }

    #[test]
    fn parses_raw_dhcp_leases() {
        let ack = dhcp_ack();
        assert_eq!(
            parse_bootp(&ack),
            Some(lease("192.0.2.2", Some("192.0.2.10")))
        );
        // Truncated inside the server identifier, no server identifier, no
        // cookie: not a lease.
        assert_eq!(parse_bootp(&ack[..ack.len() - 3]), None);
        assert_eq!(parse_bootp(&ack[..243]), None);
        let mut no_cookie = ack.clone();
        no_cookie[236] = 0;
        assert_eq!(parse_bootp(&no_cookie), None);
        assert_eq!(parse_bootp(NETWORKD_LEASE.as_bytes()), None);
        assert_eq!(parse_bootp(&[]), None);
    }

    #[test]
    fn dhcp_servers_of_current_leases_only() {
        let dir = std::env::temp_dir().join(format!("sluice-leases-{}", std::process::id()));
        let nm = dir.join("nm");
        fs::create_dir_all(&nm).unwrap();
        fs::write(dir.join("dhclient.leases"), DHCLIENT_LEASES).unwrap();
        fs::write(nm.join("internal-1234-eth0.lease"), NETWORKD_LEASE).unwrap();
        fs::write(nm.join("eth1.lease"), dhcp_ack()).unwrap();
        // Not a lease file by name: skipped.
        fs::write(
            nm.join("NetworkManager.state"),
            NETWORKD_LEASE.replace("SERVER_ADDRESS=192.0.2.2", "SERVER_ADDRESS=192.0.2.9"),
        )
        .unwrap();
        let paths = [dir.join("dhclient.leases"), nm.clone(), dir.join("missing")];
        let mut got = dhcp_servers(&paths, &ips(&["192.0.2.10", "192.0.2.11"]));
        got.sort();
        // 198.51.100.1's lease is for an address the host no longer has.
        assert_eq!(got, ips(&["192.0.2.2", "192.0.2.3"]));
        assert!(dhcp_servers(&paths, &[]).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gathers_only_what_the_criteria_need() {
        let s = Sources {
            resolv_conf: "/nonexistent/resolv.conf".into(),
            dhcp_leases: vec!["/nonexistent".into()],
            egress_probe: Some("127.0.0.1:9".parse().unwrap()),
            ..Sources::default()
        };
        let f = gather(&Criteria::default(), &s);
        assert!(f.dns_servers.is_empty() && f.resolved.is_none() && f.egress.is_none());
        let c = Criteria {
            resolve: Some(("localhost".into(), ip("127.0.0.1"))),
            egress_addresses: ips(&["127.0.0.1"]),
            ..Criteria::default()
        };
        let f = gather(&c, &s);
        assert_eq!(f.egress, Some(ip("127.0.0.1")));
        assert!(f.resolved.is_some_and(|r| !r.is_empty()));
    }

    #[test]
    fn formats_utc_times() {
        let at = |s| utc(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(at(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(at(1_767_225_600), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn detector_reports_and_rechecks() {
        let sources = Sources {
            resolv_conf: "/nonexistent/resolv.conf".into(),
            dhcp_leases: Vec::new(),
            ..Sources::default()
        };
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let d = Detector::start(
            Criteria::default(),
            sources,
            Duration::MAX,
            Arc::clone(&stop),
            move |s| tx.send(s).unwrap(),
        )
        .unwrap();
        // The first state is reported before start returns.
        let first = rx.try_recv().expect("initial state");
        let s = d.status();
        assert_eq!((s.state, s.evaluations, s.changes), (first, 1, 0));
        // Empty criteria: never on-trusted (a VPN on the test host may
        // still make it VPN-trusted).
        assert_ne!(first, NetworkState::OnTrusted);
        assert!(
            s.reasons
                .contains(&"no trusted-network criteria configured".into())
        );

        d.recheck();
        let t0 = Instant::now();
        while d.status().evaluations < 2 {
            assert!(t0.elapsed() < Duration::from_secs(10), "recheck never ran");
            std::thread::sleep(Duration::from_millis(20));
        }

        let mut m = String::new();
        d.render(&mut m);
        assert!(
            m.contains(&format!("sluice_network_state{{state=\"{first}\"}} 1\n")),
            "{m}"
        );
        assert_eq!(m.matches("sluice_network_state{").count(), 3, "{m}");
        assert_eq!(m.matches("} 1\n").count(), 1, "{m}");
        assert_eq!(m.matches("# TYPE").count(), 3, "{m}");
        assert!(m.contains("sluice_network_evaluations_total "), "{m}");
        assert!(m.contains("sluice_network_state_changes_total 0\n"), "{m}");

        let mut text = String::new();
        d.describe(&mut text);
        assert!(
            text.starts_with(&format!("network: {first} (evaluated 20")),
            "{text}"
        );
        assert!(
            text.contains("  - no trusted-network criteria configured\n"),
            "{text}"
        );

        // Dropping stops the thread promptly.
        let t0 = Instant::now();
        drop(d);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!stop.load(Relaxed));
    }
}
