//! [`Lab`]: its namespaces, their links, addresses, routes and rulesets;
//! the processes run in them; and teardown.

use std::{
    fmt,
    fs::{self, OpenOptions},
    net::{IpAddr, SocketAddr},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Output, Stdio},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    addr::{self, ifname},
    nft,
    proc::{self, describe},
    sys,
};

/// Prefix of every lab namespace name: `sl<pid>x<n>-<host>`.
const PREFIX: &str = "sl";
/// Time limit of [`Lab::run`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of each command that builds or tears down the lab.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Lab::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long drop waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One of the lab's network namespaces (see [`crate::addr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A LAN host behind the gateway.
    Client,
    /// The sluice gateway: LAN on `lan0`, WAN on `wan0`.
    Gw,
    /// The sluice edge, reached by the gateway across `inet`.
    Edge,
    /// The servers "on the internet", and the router between `gw` and `edge`.
    Inet,
    /// A LAN host of a second branch (behind `gw2`).
    Client2,
    /// A second branch's gateway: LAN on `lan0`, WAN on `wan0` (to `inet`).
    Gw2,
    /// A second sluice edge, only in labs built with
    /// [`Lab::with_edges`]`(2)` or more.
    Edge2,
    /// A third sluice edge, only in labs built with [`Lab::with_edges`]`(3)`.
    Edge3,
}

impl Host {
    /// The hosts every lab has, in a fixed order ([`Lab::hosts`] lists
    /// those of one lab, with its extra edges).
    pub const ALL: [Host; 6] = [
        Host::Client,
        Host::Gw,
        Host::Edge,
        Host::Inet,
        Host::Client2,
        Host::Gw2,
    ];

    /// The edges a lab can have, in order: [`Lab::with_edges`]`(n)` has the
    /// first `n`.
    pub const EDGES: [Host; 3] = [Host::Edge, Host::Edge2, Host::Edge3];

    /// Every host any lab can have: [`Host::ALL`], then the extra edges.
    fn every() -> impl Iterator<Item = Host> {
        Host::ALL
            .into_iter()
            .chain(Host::EDGES[1..].iter().copied())
    }

    /// Short name, also the suffix of the namespace name.
    pub fn name(self) -> &'static str {
        match self {
            Host::Client => "client",
            Host::Gw => "gw",
            Host::Edge => "edge",
            Host::Inet => "inet",
            Host::Client2 => "client2",
            Host::Gw2 => "gw2",
            Host::Edge2 => "edge2",
            Host::Edge3 => "edge3",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A process started by [`Lab::spawn`]; valid for the lab that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcId(usize);

#[derive(Debug)]
struct Proc {
    name: String,
    host: Host,
    child: Child,
    /// Set once reaped; from then on its process group is never signalled.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Reaps it if it has exited; true if it is still running.
    fn poll(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        if sys::has_exited(self.child.id()) {
            // Kill what it left in its group while the zombie still holds
            // the group id, then reap.
            sys::signal_group(self.child.id(), sys::SIGKILL);
            self.status = Some(proc::reap(&mut self.child));
            return false;
        }
        true
    }

    fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        sys::signal_group(self.child.id(), sys::SIGKILL);
        let status = proc::reap(&mut self.child);
        self.status = Some(status);
        status
    }
}

/// A closed network of namespaces (`client`, `gw`, `edge`, `inet`, the
/// second branch's `client2` and `gw2`, and with [`Lab::with_edges`] up to
/// two more edges) joined by veth pairs; see [`crate::addr`] for the plan.
///
/// Dropping it (also while unwinding from a panic) kills every process it
/// spawned (SIGTERM to each process group, SIGKILL to those still there
/// after 5 s, then SIGKILL to anything else left in its namespaces), deletes
/// its namespaces (which deletes their links) and removes [`Lab::dir`]
/// unless `SLUICE_LAB_KEEP=1`. Drop never panics; problems are printed to stderr.
///
/// A `Lab` is `Sync`: several threads may run commands in it at once.
#[derive(Debug)]
pub struct Lab {
    names: [String; 8],
    created: [bool; 8],
    /// How many edges (1 to 3): [`Host::EDGES`]' first ones.
    edges: usize,
    dir: PathBuf,
    keep: bool,
    procs: Mutex<Vec<Proc>>,
    /// Released after the lab is torn down (fields drop after `drop`).
    _turn: crate::turn::Turn,
}

impl Lab {
    /// Builds a new lab with fresh, unique names (`sl<pid>x<n>-<host>`).
    ///
    /// # Panics
    /// If not root, or if a command fails: the message names the command
    /// and has its stderr. What was made is removed before the panic.
    pub fn new() -> Lab {
        Self::with_turn(crate::turn::Turn::shared(), 1)
    }

    /// [`Lab::new`] with `n` edges (1 to 3): besides `edge`, [`Host::Edge2`]
    /// and [`Host::Edge3`], each in a namespace of its own behind `inet`
    /// (addresses in [`crate::addr`]). Only labs that ask for them pay for
    /// building them.
    ///
    /// # Panics
    /// As [`Lab::new`], or if `n` is not 1 to 3.
    pub fn with_edges(n: usize) -> Lab {
        assert!(
            (1..=Host::EDGES.len()).contains(&n),
            "sluice_lab::Lab::with_edges: {n} edges (1 to 3)"
        );
        Self::with_turn(crate::turn::Turn::shared(), n)
    }

    /// [`Lab::new`] for a test that measures: it waits until no other lab
    /// exists in this process, and no lab is built beside it until it is
    /// dropped (see [`crate::turn`]), so that the figures it compares
    /// are not taken while another test loads the CPUs.
    ///
    /// # Panics
    /// As [`Lab::new`].
    pub fn new_exclusive() -> Lab {
        Self::with_turn(crate::turn::Turn::exclusive(), 1)
    }

    fn with_turn(turn: crate::turn::Turn, edges: usize) -> Lab {
        assert!(
            sys::is_root(),
            "sluice_lab::Lab::new: needs root (guard the test with `sluice_lab::require_root`)"
        );
        let pid = std::process::id();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("{PREFIX}{pid}x{n}");
        let dir = std::env::temp_dir().join(format!("sluice-lab-{pid}-{n}"));
        let mut lab = Lab {
            names: std::array::from_fn(|i| {
                let h = Host::every().nth(i).expect("eight hosts");
                format!("{id}-{}", h.name())
            }),
            created: [false; 8],
            edges,
            dir,
            keep: std::env::var("SLUICE_LAB_KEEP").is_ok_and(|v| v == "1"),
            procs: Mutex::new(Vec::new()),
            _turn: turn,
        };
        if let Err(e) = lab.build() {
            drop(lab);
            panic!("sluice_lab::Lab::new: {e}");
        }
        lab
    }

    fn build(&mut self) -> Result<(), String> {
        ensure_lab_bpffs()?;
        let _ = fs::remove_dir_all(&self.dir);
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;

        for h in self.hosts() {
            park_if_tearing_down();
            setup(&["ip", "netns", "add", self.ns(h)])?;
            self.created[h.index()] = true;
        }
        for h in self.hosts() {
            let mut argv = vec![
                "ip",
                "netns",
                "exec",
                self.ns(h),
                "sysctl",
                "-q",
                "-w",
                // Addresses (link-local included) usable at once.
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                // Same behaviour whatever the host's defaults.
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ];
            if h != Host::Client && h != Host::Client2 {
                argv.extend(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
            }
            setup(&argv)?;
            setup(&["ip", "-n", self.ns(h), "link", "set", "lo", "up"])?;
        }

        self.links()?;
        self.addresses()?;
        self.routes()?;
        for &h in self.extra_edges() {
            self.extra_edge(h)?;
        }
        self.load_nft(Host::Gw, "gw-nat.nft", &nft::gw_ruleset())?;
        self.load_nft(Host::Gw2, "gw2-nat.nft", &nft::gw2_ruleset())?;
        self.load_nft(Host::Inet, "inet-counters.nft", &nft::inet_ruleset())?;
        Ok(())
    }

    fn links(&self) -> Result<(), String> {
        use Host::{Client, Client2, Edge, Gw, Gw2, Inet};
        // Links are made inside their namespaces (`ip -n A link add ... peer
        // ... netns B`): nothing ever exists in the host namespace.
        let veths = [
            (Gw, ifname::GW_LAN, Client, ifname::CLIENT_ETH),
            (Gw, ifname::GW_WAN, Inet, ifname::INET_GW_SIDE),
            (Gw2, ifname::GW_LAN, Client2, ifname::CLIENT_ETH),
            (Gw2, ifname::GW_WAN, Inet, ifname::INET_GW2_SIDE),
            (Edge, ifname::EDGE_WAN, Inet, ifname::INET_EDGE_SIDE),
        ];
        for (a, a_if, b, b_if) in veths {
            setup(&[
                "ip",
                "-n",
                self.ns(a),
                "link",
                "add",
                a_if,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                self.ns(b),
            ])?;
        }
        // The servers' interface: a dummy where the kernel has them
        // (CONFIG_DUMMY), else one end of a veth pair whose other end
        // (`srv0p`) stays unused in `inet`. Either way a local, always-up
        // interface of `inet` only.
        let inet = self.ns(Inet);
        let srv = ifname::INET_SERVERS;
        if setup(&["ip", "-n", inet, "link", "add", srv, "type", "dummy"]).is_err() {
            let peer = ifname::INET_SERVERS_PEER;
            setup(&[
                "ip", "-n", inet, "link", "add", srv, "type", "veth", "peer", "name", peer,
            ])?;
            setup(&["ip", "-n", inet, "link", "set", peer, "up"])?;
        }
        for (h, dev) in [
            (Client, ifname::CLIENT_ETH),
            (Gw, ifname::GW_LAN),
            (Gw, ifname::GW_WAN),
            (Edge, ifname::EDGE_WAN),
            (Inet, ifname::INET_GW_SIDE),
            (Inet, ifname::INET_EDGE_SIDE),
            (Inet, ifname::INET_SERVERS),
            (Client2, ifname::CLIENT_ETH),
            (Gw2, ifname::GW_LAN),
            (Gw2, ifname::GW_WAN),
            (Inet, ifname::INET_GW2_SIDE),
        ] {
            setup(&["ip", "-n", self.ns(h), "link", "set", dev, "up"])?;
        }
        // A LAN host's NIC puts complete checksums on the wire. A veth
        // instead hands its peer CHECKSUM_PARTIAL packets (checksum left to
        // "hardware" that does not exist), which XDP/AF_XDP then carry as
        // is: the edge's kernel would rightly reject them. Make the lab's
        // LAN host behave like a real one.
        setup(&[
            "ip",
            "netns",
            "exec",
            self.ns(Client),
            "ethtool",
            "-K",
            ifname::CLIENT_ETH,
            "tx",
            "off",
        ])?;
        setup(&[
            "ip",
            "netns",
            "exec",
            self.ns(Client2),
            "ethtool",
            "-K",
            ifname::CLIENT_ETH,
            "tx",
            "off",
        ])?;
        Ok(())
    }

    fn addresses(&self) -> Result<(), String> {
        use Host::{Client, Client2, Edge, Gw, Gw2, Inet};
        let addrs: [(Host, &str, String); 20] = [
            (
                Client2,
                ifname::CLIENT_ETH,
                format!("{}/24", addr::CLIENT2_V4),
            ),
            (
                Client2,
                ifname::CLIENT_ETH,
                format!("{}/64", addr::CLIENT2_V6),
            ),
            (Gw2, ifname::GW_LAN, format!("{}/24", addr::GW2_LAN_V4)),
            (Gw2, ifname::GW_LAN, format!("{}/64", addr::GW2_LAN_V6)),
            (Gw2, ifname::GW_WAN, format!("{}/30", addr::GW2_WAN_V4)),
            (Gw2, ifname::GW_WAN, format!("{}/64", addr::GW2_WAN_V6)),
            (
                Inet,
                ifname::INET_GW2_SIDE,
                format!("{}/30", addr::INET_GW2_SIDE_V4),
            ),
            (
                Inet,
                ifname::INET_GW2_SIDE,
                format!("{}/64", addr::INET_GW2_SIDE_V6),
            ),
            (
                Client,
                ifname::CLIENT_ETH,
                format!("{}/24", addr::CLIENT_V4),
            ),
            (
                Client,
                ifname::CLIENT_ETH,
                format!("{}/64", addr::CLIENT_V6),
            ),
            (Gw, ifname::GW_LAN, format!("{}/24", addr::GW_LAN_V4)),
            (Gw, ifname::GW_LAN, format!("{}/64", addr::GW_LAN_V6)),
            (Gw, ifname::GW_WAN, format!("{}/30", addr::GW_WAN_V4)),
            (Gw, ifname::GW_WAN, format!("{}/64", addr::GW_WAN_V6)),
            (Edge, ifname::EDGE_WAN, format!("{}/30", addr::EDGE_WAN_V4)),
            (Edge, ifname::EDGE_WAN, format!("{}/64", addr::EDGE_WAN_V6)),
            (
                Inet,
                ifname::INET_GW_SIDE,
                format!("{}/30", addr::INET_GW_SIDE_V4),
            ),
            (
                Inet,
                ifname::INET_GW_SIDE,
                format!("{}/64", addr::INET_GW_SIDE_V6),
            ),
            (
                Inet,
                ifname::INET_EDGE_SIDE,
                format!("{}/30", addr::INET_EDGE_SIDE_V4),
            ),
            (
                Inet,
                ifname::INET_EDGE_SIDE,
                format!("{}/64", addr::INET_EDGE_SIDE_V6),
            ),
        ];
        // The servers' addresses, all on `srv0` in `inet`.
        let servers = [
            format!("{}/32", addr::TUNNELLED_V4),
            format!("{}/32", addr::BYPASSED_V4),
            format!("{}/32", addr::BY_DOMAIN_V4),
            format!("{}/32", addr::DNS_V4),
            format!("{}/32", addr::DNS_FORGER_V4),
            format!("{}/128", addr::TUNNELLED_V6),
            format!("{}/128", addr::BYPASSED_V6),
        ];
        let all_addrs = addrs
            .iter()
            .map(|(h, dev, a)| (*h, *dev, a.as_str()))
            .chain(
                servers
                    .iter()
                    .map(|a| (Inet, ifname::INET_SERVERS, a.as_str())),
            );
        for (h, dev, a) in all_addrs {
            let mut argv = vec!["ip", "-n", self.ns(h), "addr", "add", a, "dev", dev];
            if a.contains(':') {
                argv.push("nodad");
            }
            setup(&argv)?;
        }
        Ok(())
    }

    /// Default routes (`inet` has none: a closed world).
    fn routes(&self) -> Result<(), String> {
        use Host::{Client, Client2, Edge, Gw, Gw2};
        let routes = [
            (Client2, addr::GW2_LAN_V4.to_string()),
            (Client2, addr::GW2_LAN_V6.to_string()),
            (Gw2, addr::INET_GW2_SIDE_V4.to_string()),
            (Gw2, addr::INET_GW2_SIDE_V6.to_string()),
            (Client, addr::GW_LAN_V4.to_string()),
            (Client, addr::GW_LAN_V6.to_string()),
            (Gw, addr::INET_GW_SIDE_V4.to_string()),
            (Gw, addr::INET_GW_SIDE_V6.to_string()),
            (Edge, addr::INET_EDGE_SIDE_V4.to_string()),
            (Edge, addr::INET_EDGE_SIDE_V6.to_string()),
        ];
        for (h, via) in &routes {
            let family = if via.contains(':') { "-6" } else { "-4" };
            setup(&[
                "ip",
                "-n",
                self.ns(*h),
                family,
                "route",
                "add",
                "default",
                "via",
                via,
            ])?;
        }
        Ok(())
    }

    fn load_nft(&self, h: Host, file: &str, ruleset: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        fs::write(&path, ruleset).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let path = path.to_string_lossy();
        setup(&["ip", "netns", "exec", self.ns(h), "nft", "-f", &path])
    }

    /// An extra edge `h` ([`Host::Edge2`], [`Host::Edge3`]): its link to
    /// `inet`, addresses and default route, as `edge`'s.
    fn extra_edge(&self, h: Host) -> Result<(), String> {
        let (inet_if, wan4, wan6, inet4, inet6) = match h {
            Host::Edge2 => (
                ifname::INET_EDGE2_SIDE,
                addr::EDGE2_WAN_V4,
                addr::EDGE2_WAN_V6,
                addr::INET_EDGE2_SIDE_V4,
                addr::INET_EDGE2_SIDE_V6,
            ),
            Host::Edge3 => (
                ifname::INET_EDGE3_SIDE,
                addr::EDGE3_WAN_V4,
                addr::EDGE3_WAN_V6,
                addr::INET_EDGE3_SIDE_V4,
                addr::INET_EDGE3_SIDE_V6,
            ),
            _ => return Err(format!("{h} is not an extra edge")),
        };
        let (edge, inet, wan) = (self.ns(h), self.ns(Host::Inet), ifname::EDGE_WAN);
        setup(&[
            "ip", "-n", edge, "link", "add", wan, "type", "veth", "peer", "name", inet_if, "netns",
            inet,
        ])?;
        let (w4, w6) = (format!("{wan4}/30"), format!("{wan6}/64"));
        let (i4, i6) = (format!("{inet4}/30"), format!("{inet6}/64"));
        for (ns, dev, a, dad) in [
            (edge, wan, w4.as_str(), None),
            (edge, wan, w6.as_str(), Some("nodad")),
            (inet, inet_if, i4.as_str(), None),
            (inet, inet_if, i6.as_str(), Some("nodad")),
        ] {
            let mut argv = vec!["ip", "-n", ns, "addr", "add", a, "dev", dev];
            argv.extend(dad);
            setup(&argv)?;
        }
        setup(&["ip", "-n", edge, "link", "set", wan, "up"])?;
        setup(&["ip", "-n", inet, "link", "set", inet_if, "up"])?;
        let (via4, via6) = (inet4.to_string(), inet6.to_string());
        setup(&[
            "ip", "-n", edge, "-4", "route", "add", "default", "via", &via4,
        ])?;
        setup(&[
            "ip", "-n", edge, "-6", "route", "add", "default", "via", &via6,
        ])
    }

    /// The hosts of this lab: [`Host::ALL`], then its extra edges.
    pub fn hosts(&self) -> impl Iterator<Item = Host> + use<> {
        Host::ALL
            .into_iter()
            .chain(Host::EDGES[1..self.edges].iter().copied())
    }

    /// This lab's edges, `edge` first ([`Lab::with_edges`]).
    pub fn edges(&self) -> &'static [Host] {
        &Host::EDGES[..self.edges]
    }

    fn extra_edges(&self) -> &'static [Host] {
        &Host::EDGES[1..self.edges]
    }

    /// The name of `h`'s network namespace (for `ip netns exec`, `ip -n`).
    ///
    /// # Panics
    /// If `h` is an extra edge this lab was not built with.
    pub fn ns(&self, h: Host) -> &str {
        assert!(
            Host::ALL.contains(&h) || self.extra_edges().contains(&h),
            "sluice-lab: this lab has no {h} (build it with Lab::with_edges)"
        );
        &self.names[h.index()]
    }

    /// A directory of this lab's own (configs, certificates, logs):
    /// `$TMPDIR/sluice-lab-<pid>-<n>`, removed on drop unless
    /// `SLUICE_LAB_KEEP=1`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `argv` in `h`'s namespace to completion, with a limit of
    /// [`DEFAULT_TIMEOUT`]; see [`Lab::run_timeout`].
    pub fn run(&self, h: Host, argv: &[&str]) -> Output {
        self.run_timeout(h, argv, DEFAULT_TIMEOUT)
    }

    /// Runs `argv` in `h`'s namespace to completion (stdin from /dev/null,
    /// stdout and stderr captured) and returns what it did; a failing exit
    /// status is NOT a panic (see [`Lab::run_ok`]).
    ///
    /// At `timeout` the command's process group is killed; the returned
    /// status is then "killed by SIGKILL" and stderr ends with a line saying
    /// so (also printed to stderr). Whatever the command leaves running in its
    /// process group when it exits is killed: use [`Lab::spawn`] for daemons.
    ///
    /// # Panics
    /// If the command cannot be started at all (e.g. not installed).
    pub fn run_timeout(&self, h: Host, argv: &[&str], timeout: Duration) -> Output {
        self.run_env_timeout(h, argv, &[], timeout)
    }

    /// [`Lab::run_timeout`] with extra environment variables.
    ///
    /// # Panics
    /// If the command cannot be started at all (e.g. not installed).
    pub fn run_env_timeout(
        &self,
        h: Host,
        argv: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Output {
        assert!(!argv.is_empty(), "sluice_lab: empty argv");
        let full = self.in_ns(h, argv);
        let mut cmd = proc::command(&full);
        cmd.envs(env.iter().copied());
        let captured = proc::capture(cmd, timeout).unwrap_or_else(|e| {
            panic!(
                "sluice-lab: cannot run `{}` in {h} ({}): {e}{}",
                describe(argv),
                self.ns(h),
                install_hint(&e)
            )
        });
        let mut output = captured.output;
        if captured.timed_out {
            let note = format!(
                "[sluice-lab] `{}` in {h} ({}) timed out after {timeout:?} and was killed\n",
                describe(argv),
                self.ns(h)
            );
            eprint!("{note}");
            output.stderr.extend_from_slice(note.as_bytes());
        }
        output
    }

    /// Runs `argv` in `h`'s namespace like [`Lab::run`] and returns its
    /// stdout (lossy UTF-8).
    ///
    /// # Panics
    /// If it cannot start, exits unsuccessfully or times out; the message
    /// has the command, its status, stdout and stderr.
    pub fn run_ok(&self, h: Host, argv: &[&str]) -> String {
        let out = self.run(h, argv);
        assert!(
            out.status.success(),
            "sluice-lab: `{}` in {h} ({}) failed: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            describe(argv),
            self.ns(h),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ping -c 1 -W 2` from `h` to `dst`: whether an answer came back.
    pub fn ping(&self, h: Host, dst: impl Into<IpAddr>) -> bool {
        let dst = dst.into().to_string();
        self.run(h, &["ping", "-n", "-q", "-c", "1", "-W", "2", &dst])
            .status
            .success()
    }

    /// Starts a long-running `argv` in `h`'s namespace, its stdout and stderr
    /// appended to `dir()/<name>.log` (so a restarted process under the same
    /// name keeps one log). It is killed when the lab is dropped, if not
    /// [`Lab::stop`]ped before.
    ///
    /// # Panics
    /// If `name` is not a plain file name or the process cannot start.
    pub fn spawn(&self, h: Host, name: &str, argv: &[&str]) -> ProcId {
        self.spawn_env(h, name, argv, &[])
    }

    /// [`Lab::spawn`] with extra environment variables (e.g. `RUST_LOG`).
    ///
    /// # Panics
    /// If `name` is not a plain file name or the process cannot start.
    pub fn spawn_env(&self, h: Host, name: &str, argv: &[&str], env: &[(&str, &str)]) -> ProcId {
        park_if_tearing_down();
        assert!(!argv.is_empty(), "sluice_lab: empty argv");
        assert!(
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "sluice_lab: process name {name:?} must be a plain file name"
        );
        let path = self.log_path(name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("sluice-lab: cannot open {}: {e}", path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("sluice-lab: cannot dup {}: {e}", path.display()));
        let mut cmd = proc::command(&self.in_ns(h, argv));
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = proc::start(cmd).unwrap_or_else(|e| {
            panic!(
                "sluice-lab: cannot start {name} `{}` in {h} ({}): {e}{}",
                describe(argv),
                self.ns(h),
                install_hint(&e)
            )
        });
        eprintln!(
            "sluice-lab: {name} (pid {}) in {h}: {}  [log {}]",
            child.id(),
            describe(argv),
            path.display()
        );
        let mut procs = self.procs();
        procs.push(Proc {
            name: name.to_owned(),
            host: h,
            child,
            status: None,
        });
        ProcId(procs.len() - 1)
    }

    /// Stops a spawned process: SIGTERM to its process group, then SIGKILL
    /// after 5 s; returns its exit status (at once if it already exited).
    pub fn stop(&self, id: ProcId) -> ExitStatus {
        {
            let mut procs = self.procs();
            let p = proc_mut(&mut procs, id);
            if !p.poll() {
                return p.status.unwrap_or_else(|| ExitStatus::from_raw(0));
            }
            sys::signal_group(p.child.id(), sys::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            {
                let mut procs = self.procs();
                let p = proc_mut(&mut procs, id);
                if !p.poll() {
                    return p.status.unwrap_or_else(|| ExitStatus::from_raw(0));
                }
                if Instant::now() >= deadline {
                    eprintln!(
                        "sluice-lab: {} did not stop within {STOP_GRACE:?} of SIGTERM: killed",
                        p.name
                    );
                    return p.kill();
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends signal `sig` (e.g. `libc::SIGHUP`) to a spawned process (its
    /// main process only); does nothing if it has exited.
    pub fn signal(&self, id: ProcId, sig: i32) {
        let mut procs = self.procs();
        let p = proc_mut(&mut procs, id);
        if p.poll() {
            sys::signal_pid(p.child.id(), sig);
        }
    }

    /// Whether a spawned process is still running.
    pub fn is_running(&self, id: ProcId) -> bool {
        proc_mut(&mut self.procs(), id).poll()
    }

    /// Waits for a spawned process to exit by itself and returns its status.
    ///
    /// # Panics
    /// If it is still running after `timeout` (it is killed first); the
    /// message has its log.
    pub fn wait_exit(&self, id: ProcId, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut procs = self.procs();
                let p = proc_mut(&mut procs, id);
                if !p.poll() {
                    return p.status.unwrap_or_else(|| ExitStatus::from_raw(0));
                }
                if Instant::now() >= deadline {
                    let name = p.name.clone();
                    p.kill();
                    drop(procs);
                    panic!(
                        "sluice-lab: {name} still running after {timeout:?}; log:\n{}",
                        self.log(&name)
                    );
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of a spawned process (the program itself: `ip netns exec`
    /// execs it).
    pub fn pid(&self, id: ProcId) -> u32 {
        proc_mut(&mut self.procs(), id).child.id()
    }

    /// The contents of `dir()/<name>.log` (lossy UTF-8).
    ///
    /// # Panics
    /// If there is no such log (nothing was spawned under that name).
    pub fn log(&self, name: &str) -> String {
        let path = self.log_path(name);
        match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                let known: Vec<String> = self.procs().iter().map(|p| p.name.clone()).collect();
                panic!(
                    "sluice-lab: no log {} ({e}); spawned: {known:?}",
                    path.display()
                )
            }
        }
    }

    /// The path of `name`'s log (`dir()/<name>.log`).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Polls `f` (every 50 ms) until it returns true.
    ///
    /// # Panics
    /// With `what` if `f` has not returned true within `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if f() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sluice-lab: timed out after {timeout:?} waiting for {what}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a TCP socket in `h`'s namespace listens on `addr` (its
    /// port, and its address or a wildcard), checked with `ss -ltn`.
    ///
    /// # Panics
    /// If none does within `timeout`.
    pub fn wait_tcp(&self, h: Host, addr: SocketAddr, timeout: Duration) {
        let what = format!("a TCP listener on {addr} in {h} ({})", self.ns(h));
        self.wait_for(&what, timeout, || self.listening(h, "-Hltn", addr));
    }

    /// Waits until a UDP socket in `h`'s namespace is bound to `addr` (its
    /// port, and its address or a wildcard), checked with `ss -lun`.
    ///
    /// # Panics
    /// If none is within `timeout`.
    pub fn wait_udp(&self, h: Host, addr: SocketAddr, timeout: Duration) {
        let what = format!("a UDP socket on {addr} in {h} ({})", self.ns(h));
        self.wait_for(&what, timeout, || self.listening(h, "-Hlun", addr));
    }

    fn listening(&self, h: Host, flags: &str, want: SocketAddr) -> bool {
        let out = self.run_timeout(h, &["ss", flags], SETUP_TIMEOUT);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3))
            .filter_map(parse_ss_local)
            .any(|(ip, port)| port == want.port() && (ip.is_none() || ip == Some(want.ip())))
    }

    /// Packets counted so far by the nftables counter `name` in `inet`
    /// (names in [`crate::counter`]).
    ///
    /// # Panics
    /// If there is no such counter.
    pub fn nft_counter(&self, name: &str) -> u64 {
        self.nft_counter_full(name).0
    }

    /// Bytes counted so far by the nftables counter `name` in `inet`.
    ///
    /// # Panics
    /// If there is no such counter.
    pub fn nft_counter_bytes(&self, name: &str) -> u64 {
        self.nft_counter_full(name).1
    }

    fn nft_counter_full(&self, name: &str) -> (u64, u64) {
        let text = self.run_ok(
            Host::Inet,
            &["nft", "list", "counter", "inet", nft::COUNTER_TABLE, name],
        );
        nft::parse_counter(&text)
            .unwrap_or_else(|| panic!("sluice-lab: cannot parse counter {name}: {text}"))
    }

    /// The [`counter::LEAKS`](crate::counter::LEAKS) that are not 0, with
    /// their counts: empty while nothing leaked.
    pub fn leaks(&self) -> Vec<(&'static str, u64)> {
        nft::counter::LEAKS
            .iter()
            .map(|&c| (c, self.nft_counter(c)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Sets every counter in `inet` back to zero.
    pub fn reset_counters(&self) {
        self.run_ok(
            Host::Inet,
            &[
                "nft",
                "reset",
                "counters",
                "table",
                "inet",
                nft::COUNTER_TABLE,
            ],
        );
    }

    fn in_ns<'a>(&'a self, h: Host, argv: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ip", "netns", "exec", self.ns(h)];
        full.extend_from_slice(argv);
        full
    }

    fn procs(&self) -> MutexGuard<'_, Vec<Proc>> {
        self.procs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Kills all spawned processes: SIGTERM, a grace period, SIGKILL.
    fn kill_all(&self) {
        let mut procs = self.procs();
        let mut any = false;
        for p in procs.iter_mut() {
            if p.poll() {
                sys::signal_group(p.child.id(), sys::SIGTERM);
                any = true;
            }
        }
        if !any {
            return;
        }
        let deadline = Instant::now() + DROP_GRACE;
        while Instant::now() < deadline {
            // Poll every one (reaping the exited), not just up to the first
            // still running.
            let mut running = false;
            for p in procs.iter_mut() {
                running |= p.poll();
            }
            if !running {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for p in procs.iter_mut().filter(|p| p.status.is_none()) {
            eprintln!(
                "sluice-lab: {} (in {}) ignored SIGTERM for {DROP_GRACE:?}: killed",
                p.name, p.host
            );
            p.kill();
        }
    }
}

impl Default for Lab {
    fn default() -> Lab {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A signal's teardown is under way: it removes this lab and exits
        // the process; tearing down beside it would race it.
        // Bounded: should the handler die, this lab is still removed.
        let deadline = Instant::now() + Duration::from_secs(60);
        while TEARING_DOWN.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        self.kill_all();
        for h in Host::every() {
            if self.created[h.index()] {
                kill_in_ns(self.ns(h));
                remove_pins(self.ns(h));
                delete_ns(self.ns(h));
            }
        }
        if self.keep {
            eprintln!(
                "sluice-lab: kept {} (SLUICE_LAB_KEEP=1)",
                self.dir.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "sluice-lab: warning: cannot remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

fn proc_mut(procs: &mut [Proc], id: ProcId) -> &mut Proc {
    let n = procs.len();
    procs
        .get_mut(id.0)
        .unwrap_or_else(|| panic!("sluice_lab: {id:?} is not from this lab ({n} processes)"))
}

/// Runs a host-side lab command (`ip netns add`, `ip -n ...`); the error
/// names the command and has its stderr.
fn setup(argv: &[&str]) -> Result<(), String> {
    let captured = proc::capture(proc::command(argv), SETUP_TIMEOUT)
        .map_err(|e| format!("cannot run `{}`: {e}{}", describe(argv), install_hint(&e)))?;
    let out = &captured.output;
    if captured.timed_out {
        return Err(format!(
            "`{}` timed out after {SETUP_TIMEOUT:?}",
            describe(argv)
        ));
    }
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}{}",
            describe(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end()
        ));
    }
    Ok(())
}

fn install_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (not installed? `cargo xtask setup` installs the lab's tools)"
    } else {
        ""
    }
}

/// Kills every process left in namespace `name`, then deletes it. Never
/// panics; problems are printed.
fn delete_ns(name: &str) {
    kill_in_ns(name);
    if let Err(e) = setup(&["ip", "netns", "del", name]) {
        say(format_args!("sluice-lab: warning: {e}"));
    }
}

/// Kills every process in namespace `name` (SIGKILL, until none is left
/// or [`DROP_GRACE`] has passed). First in every teardown: a live gateway
/// could otherwise pin its classifier again after its pins were removed.
fn kill_in_ns(name: &str) {
    let pids = |name: &str| -> Vec<u32> {
        proc::capture(proc::command(&["ip", "netns", "pids", name]), SETUP_TIMEOUT)
            .map(|c| {
                String::from_utf8_lossy(&c.output.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + DROP_GRACE;
    loop {
        let left = pids(name);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            say(format_args!(
                "sluice-lab: warning: processes {left:?} still in {name}"
            ));
            break;
        }
        for pid in left {
            sys::signal_pid(pid, sys::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `ss`'s local address column: `0.0.0.0:80`, `*:80`, `[::]:80`,
/// `[2001:db8::1]:80`, `192.0.2.1%lan0:80`. `None` for the address means a
/// wildcard.
fn parse_ss_local(col: &str) -> Option<(Option<IpAddr>, u16)> {
    let (host, port) = col.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split_once('%').map_or(host, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "*" {
        return Some((None, port));
    }
    let ip: IpAddr = host.parse().ok()?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    Some((if ip.is_unspecified() { None } else { Some(ip) }, port))
}

/// Deletes lab namespaces left by earlier runs whose process is gone (names
/// `sl<pid>x<n>-<host>` with no live `<pid>`), killing whatever still runs
/// in them first. Labs of live processes (parallel test binaries) are left
/// alone. Returns the names deleted. Never panics.
pub fn cleanup_stale() -> Vec<String> {
    let listing = match proc::capture(proc::command(&["ip", "netns", "list"]), SETUP_TIMEOUT) {
        Ok(c) => String::from_utf8_lossy(&c.output.stdout).into_owned(),
        Err(e) => {
            eprintln!("sluice-lab: warning: cannot list namespaces: {e}");
            return Vec::new();
        }
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = owner_pid(name)
            && pid != me
            && !sys::pid_alive(pid)
        {
            kill_in_ns(name);
            remove_pins(name);
            delete_ns(name);
            removed.push(name.to_owned());
        }
    }
    removed
}

/// For a program that builds labs outside the test harness (the
/// benchmarks): on Ctrl-C or SIGTERM, tears down every lab this process
/// made (the processes in its namespaces killed, their pins and lock
/// files removed, the namespaces deleted, its lab directories removed),
/// then exits 130. `Drop` does not run when a signal ends a process: a
/// killed benchmark used to leave its namespaces, pins and outage files
/// until the next run's [`cleanup_stale`]. Installs the handler once; an
/// error if another handler is installed already (the demo has its own).
///
/// # Errors
/// The handler cannot be installed.
pub fn teardown_on_signal() -> Result<(), String> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // The main thread may meet the lab's processes dying and
            // panic; in a release build (panic = "abort") that would end
            // the process before the teardown is done: a thread that
            // panics while the handler tears down parks instead.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if TEARING_DOWN.load(std::sync::atomic::Ordering::SeqCst) {
                    loop {
                        thread::park();
                    }
                }
                hook(info);
            }));
            ctrlc::set_handler(|| {
                // `Lab::drop` waits for this too (see there).
                TEARING_DOWN.store(true, std::sync::atomic::Ordering::SeqCst);
                say(format_args!(
                    "sluice-lab: interrupted: tearing down this process's labs"
                ));
                let removed = remove_own();
                say(format_args!("sluice-lab: removed {}", removed.join(" ")));
                std::process::exit(130);
            })
            .map_err(|e| e.to_string())
        })
        .clone()
}

/// While [`teardown_on_signal`]'s handler tears down, the main thread makes
/// no namespace and starts no process behind its back: it parks (the
/// handler exits the process).
fn park_if_tearing_down() {
    if TEARING_DOWN.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            thread::park();
        }
    }
}

/// Writes to stderr without panicking (a broken pipe or a hung-up terminal
/// must not abort a teardown half way).
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_fmt(args);
    let _ = std::io::stderr().write_all(b"\n");
}

/// Set by [`teardown_on_signal`]'s handler while it tears the labs down
/// (it then exits the process).
static TEARING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Deletes the lab namespaces of this process (as [`cleanup_stale`] does
/// those of dead ones) and its lab directories; returns the namespaces
/// deleted.
fn remove_own() -> Vec<String> {
    let me = std::process::id();
    let listing = proc::capture(proc::command(&["ip", "netns", "list"]), SETUP_TIMEOUT)
        .map(|c| String::from_utf8_lossy(&c.output.stdout).into_owned())
        .unwrap_or_default();
    let mut removed = Vec::new();
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner_pid(name) == Some(me) {
            kill_in_ns(name);
            remove_pins(name);
            delete_ns(name);
            removed.push(name.to_owned());
        }
    }
    let mine = format!("sluice-lab-{me}-");
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&mine) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

/// The bpffs the lab's gateways pin their classifier link in
/// (`gateway.bpffs`). Not `/sys/fs/bpf`: `ip netns exec` remounts `/sys`, so
/// a pin there would live in a private bpffs that dies with the process.
/// A mount outside `/sys` is shared with the processes of every lab.
pub const LAB_BPFFS: &str = "/run/sluice-lab/bpffs";
/// Where the sluice gateway pins its classifier link:
/// `<bpffs>/sluice/<netns inode>-<iface>`.
const PIN_DIR: &str = "/run/sluice-lab/bpffs/sluice";

/// Mounts the lab's bpffs at [`LAB_BPFFS`] unless it is there already.
fn ensure_lab_bpffs() -> Result<(), String> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(LAB_BPFFS))
    {
        return Ok(());
    }
    fs::create_dir_all(LAB_BPFFS).map_err(|e| format!("creating {LAB_BPFFS}: {e}"))?;
    setup(&["mount", "-t", "bpf", "bpf", LAB_BPFFS])
}

/// Where sluice keeps its instance locks (`/run/sluice/<netns inode>-<name>.lock`).
const LOCK_DIR: &str = "/run/sluice";

/// Removes the bpffs pins and instance locks that sluice in namespace `ns`
/// left: a gateway keeps its classifier pinned on purpose after a stop or
/// a crash (endpoint mode also its socket hooks, in a directory), until
/// `sluice gateway detach`. The pins go before the namespace: a pinned
/// cgroup hook would otherwise outlive the lab.
fn remove_pins(ns: &str) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = fs::metadata(format!("/run/netns/{ns}")) else {
        return;
    };
    let prefix = format!("{}-", meta.ino());
    for dir in [PIN_DIR, LOCK_DIR] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let p = e.path();
            let res = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(err) = res {
                say(format_args!(
                    "sluice-lab: warning: cannot remove {}: {err}",
                    p.display()
                ));
            }
        }
    }
}

/// The pid in a lab namespace name `sl<pid>x<n>-<host>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, host) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) || !Host::every().any(|h| h.name() == host) {
        return None;
    }
    pid.parse().ok()
}

// `Lab` is shared by reference across test threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Lab>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_columns() {
        let v4 = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(parse_ss_local("0.0.0.0:8080"), Some((None, 8080)));
        assert_eq!(parse_ss_local("*:53"), Some((None, 53)));
        assert_eq!(parse_ss_local("[::]:443"), Some((None, 443)));
        assert_eq!(
            parse_ss_local("192.0.2.1%lan0:80"),
            Some((v4("192.0.2.1"), 80))
        );
        assert_eq!(
            parse_ss_local("[2001:db8:1::1]:80"),
            Some((v4("2001:db8:1::1"), 80))
        );
        assert_eq!(
            parse_ss_local("[::ffff:192.0.2.1]:80"),
            Some((v4("192.0.2.1"), 80))
        );
        assert_eq!(parse_ss_local("garbage"), None);
    }

    #[test]
    fn hosts_are_in_index_order() {
        assert!(Host::every().enumerate().all(|(i, h)| h.index() == i));
        assert_eq!(Host::every().count(), 8);
    }

    #[test]
    fn recognises_lab_names() {
        assert_eq!(owner_pid("sl123x0-gw"), Some(123));
        assert_eq!(owner_pid("sl123x45-client"), Some(123));
        assert_eq!(owner_pid("sl123x0-edge3"), Some(123));
        assert_eq!(owner_pid("sl123x0-other"), None);
        assert_eq!(owner_pid("slx0-gw"), None);
        assert_eq!(owner_pid("foo"), None);
    }
}
