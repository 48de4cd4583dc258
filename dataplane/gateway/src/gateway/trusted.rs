//! Trusted-network fact gathering and the detector thread: reads the
//! host's resolver configuration, routes (`ip -o route`), addresses, DHCP
//! leases, resolves a name and probes the egress address, then hands the
//! [`Facts`] to the pure [`evaluate`] of `sluice_core::policy::trusted`.
//! [`Detector`] runs that in a thread: at start, on link, address and
//! route changes ([`crate::sys::rtnl::RouteMonitor`]), on an interval and on
//! request, and reports state changes.
//!
//! Only reads the host's configuration: nothing here changes it.
use std::{
    fmt::{Display, Write as _},
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

use sluice_core::policy::{
    facts::{Dst, parse_bootp, parse_default_routes, parse_lease, parse_resolv_conf},
    trusted::{
        Criteria, DEFAULT_VPN_INTERFACES, Evaluation, Facts, NetworkState, evaluate, preferred,
        vpn_device,
    },
};

use crate::{host, metrics, sys::rtnl::RouteMonitor};

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
            vpn_interfaces: DEFAULT_VPN_INTERFACES.map(String::from).to_vec(),
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
pub(crate) struct Detector {
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
    pub(crate) fn start(
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
    pub(crate) fn status(&self) -> Status {
        self.shared.status().clone()
    }

    /// Whether the detector's thread has ended (by a stop, or on its own).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Turns of the thread's loop so far: at least ten a second while it
    /// waits, one per evaluation (which waits at most for one name to
    /// resolve, 2 s by default).
    pub(crate) fn turns(&self) -> u64 {
        self.shared.turns.load(Relaxed)
    }

    /// Asks for an evaluation now (within 100 ms).
    pub(crate) fn recheck(&self) {
        self.shared.recheck.store(true, Relaxed);
    }

    /// Appends the Prometheus metrics: the state (1 for the current one, 0
    /// for the others), evaluations and state changes.
    pub(crate) fn render(&self, out: &mut String) {
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
    pub(crate) fn describe(&self, out: &mut String) {
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
    use sluice_core::testutil::leases::{DHCLIENT_LEASES, NETWORKD_LEASE, dhcp_ack};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    /// Facts of a host on 192.0.2.0/24 (and `2001:db8:1::/64`) behind
    /// 192.0.2.1, with the corporate resolver and search domain.
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
