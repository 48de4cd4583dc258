//! sluice deployed in a [`Lab`]: certificates, the embedded default
//! configurations, an edge in `edge` and a gateway in `gw`. Shared by the
//! end-to-end tests, the demo and the lab benchmark.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{Host, Lab, ProcId, addr, counter};

/// The gateway's default configuration (paths relative to the file).
pub const GATEWAY_TOML: &str = include_str!("../configs/gateway.toml");
/// The edge's default configuration.
pub const EDGE_TOML: &str = include_str!("../configs/edge.toml");
/// Where the gateway serves metrics, inside `gw`.
pub const GATEWAY_METRICS: &str = "http://127.0.0.1:9477/metrics";
/// Where the edge serves metrics, inside `edge`.
pub const EDGE_METRICS: &str = "http://127.0.0.1:9478/metrics";
/// The edge's tunnel endpoint.
pub const EDGE_ADDR: &str = "198.51.100.5:4443";

/// One of the lab's edges as sluice runs there ([`Lab::with_edges`] has
/// up to three): the first is the `edge` every lab has, configured by
/// [`EDGE_TOML`]; the others run a copy of the first's configuration
/// (with [`Sluice::edit_edge`]'s edits) under their own name and metrics
/// port, in their own namespace, where the shared `listen = "[::]:4443"`
/// is their own WAN address (v4 and v6) and nobody else's. All present
/// the same certificate (the gateway checks one `server_name` for all of a
/// tenant's edges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeSite {
    /// Its namespace.
    pub host: Host,
    /// `edge.name` in its configuration, also its name in the gateway's
    /// `edges` list ([`with_edges`]).
    pub name: &'static str,
    /// Its process's name in the lab (its log is `<log>.log`).
    pub log: &'static str,
    /// Its configuration file in [`Sluice::conf_dir`].
    pub file: &'static str,
    /// Its `edge.metrics` address (inside its namespace).
    pub metrics_addr: &'static str,
    /// Its WAN address, from which the servers see its tunnelled traffic.
    pub wan_v4: Ipv4Addr,
    /// `inet`'s address towards it: where the failover tests' relay for it
    /// listens.
    pub relay_v4: Ipv4Addr,
    /// The `inet` counter of its packets to the tunnelled server
    /// ([`counter`]).
    pub to_tunnelled_v4: &'static str,
}

/// The port every edge listens on.
pub const EDGE_PORT: u16 = 4443;

/// The lab's edges, in [`Host::EDGES`] order.
pub const EDGE_SITES: [EdgeSite; 3] = [
    EdgeSite {
        host: Host::Edge,
        name: "edge-1",
        log: "edge",
        file: "edge.toml",
        metrics_addr: "127.0.0.1:9478",
        wan_v4: addr::EDGE_WAN_V4,
        relay_v4: addr::INET_EDGE_SIDE_V4,
        to_tunnelled_v4: counter::EDGE_TO_TUNNELLED_V4,
    },
    EdgeSite {
        host: Host::Edge2,
        name: "edge-2",
        log: "edge2",
        file: "edge2.toml",
        metrics_addr: "127.0.0.1:9479",
        wan_v4: addr::EDGE2_WAN_V4,
        relay_v4: addr::INET_EDGE2_SIDE_V4,
        to_tunnelled_v4: counter::EDGE2_TO_TUNNELLED_V4,
    },
    EdgeSite {
        host: Host::Edge3,
        name: "edge-3",
        log: "edge3",
        file: "edge3.toml",
        metrics_addr: "127.0.0.1:9480",
        wan_v4: addr::EDGE3_WAN_V4,
        relay_v4: addr::INET_EDGE3_SIDE_V4,
        to_tunnelled_v4: counter::EDGE3_TO_TUNNELLED_V4,
    },
];

impl EdgeSite {
    /// The site of edge `h`.
    ///
    /// # Panics
    /// If `h` is not an edge.
    pub fn of(h: Host) -> &'static EdgeSite {
        EDGE_SITES
            .iter()
            .find(|s| s.host == h)
            .unwrap_or_else(|| panic!("sluice-lab: {h} is not an edge"))
    }

    /// The edge whose WAN address is `ip` (what a server saw).
    pub fn by_wan(ip: std::net::IpAddr) -> Option<&'static EdgeSite> {
        EDGE_SITES
            .iter()
            .find(|s| std::net::IpAddr::V4(s.wan_v4) == ip)
    }

    /// Its tunnel endpoint.
    pub fn addr(&self) -> SocketAddr {
        (self.wan_v4, EDGE_PORT).into()
    }

    /// Where its relay listens (see [`crate::relay`]).
    pub fn relay_addr(&self) -> SocketAddr {
        (self.relay_v4, EDGE_PORT).into()
    }

    /// Its metrics URL (inside its namespace).
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// Its configuration: the first edge's `text` under its own name and
    /// metrics address.
    fn config(&self, text: &str) -> String {
        let first = &EDGE_SITES[0];
        text.replacen(
            &format!("name = \"{}\"", first.name),
            &format!("name = \"{}\"", self.name),
            1,
        )
        .replacen(
            &format!("metrics = \"{}\"", first.metrics_addr),
            &format!("metrics = \"{}\"", self.metrics_addr),
            1,
        )
    }
}

/// One entry of a tenant's `edges` list: the edge, where the gateway
/// reaches it (its own address, or its relay's), its priority.
pub type EdgeEntry = (&'static EdgeSite, SocketAddr, u32);

/// The gateway's file with its single `edge` replaced by a list of
/// `edges` (named as the edges name themselves) and `selection` (lines of
/// `[tunnel.selection]`, e.g. `"standby = 2\nfailback = \"never\""`).
///
/// # Panics
/// If the file has no `edge = "..."` line in `[tunnel]` or no `[bypass]`.
pub fn with_edges(gateway_toml: &str, edges: &[EdgeEntry], selection: &str) -> String {
    let list: Vec<String> = edges
        .iter()
        .map(|(site, addr, prio)| {
            format!(
                "  {{ name = \"{}\", address = \"{addr}\", priority = {prio} }},",
                site.name
            )
        })
        .collect();
    let old = format!("edge = \"{EDGE_ADDR}\"\n");
    assert!(
        gateway_toml.contains(&old) && gateway_toml.contains("\n[bypass]\n"),
        "sluice-lab: with_edges: no `{}` or no [bypass] in\n{gateway_toml}",
        old.trim_end()
    );
    gateway_toml
        .replacen(&old, &format!("edges = [\n{}\n]\n", list.join("\n")), 1)
        .replacen(
            "\n[bypass]\n",
            &format!("\n[tunnel.selection]\n{selection}\n\n[bypass]\n"),
            1,
        )
}

/// The lab's gateway file with its `[bypass]` lists moved into a default
/// profile (`[[profile]]` named `default`) that also has `setting` (e.g.
/// `fail = "open"`, `captive_portal_grace_secs = 2`).
///
/// # Panics
/// If the file has no `[bypass]`.
pub fn with_default_profile(gateway_toml: &str, setting: &str) -> String {
    let (head, _) = gateway_toml
        .split_once("[bypass]")
        .expect("sluice-lab: with_default_profile: no [bypass]");
    format!(
        "{head}[[profile]]\nname = \"default\"\n\
         exclude = [\"203.0.113.20/32\", \"2001:db8:100::20/128\"]\n\
         domains = [\"*.bypass.example\"]\n{setting}\n"
    )
}

/// The gateway host's inner address in endpoint mode (inside `branch-1`'s
/// prefixes at the edge once [`edge_with_endpoint`] is applied).
pub const ENDPOINT_V4: &str = "198.18.3.1";

/// The `processes = [...]` line of `[bypass]`.
pub fn processes_line(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|p| format!("{p:?}")).collect();
    format!("processes = [{}]\n", quoted.join(", "))
}

/// A gateway configuration with endpoint mode on (the gateway host's own
/// traffic is tunnelled) and `processes` listed for process bypass.
pub fn with_endpoint(gateway_toml: &str, processes: &[String]) -> String {
    let text = gateway_toml.replace(
        "[bypass]\n",
        &format!("[bypass]\n{}", processes_line(processes)),
    );
    format!("{text}\n[endpoint]\naddress = \"{ENDPOINT_V4}\"\n")
}

/// The gateway's file with `gateway.rx_frames = n`.
pub fn with_rx_frames(gateway_toml: &str, n: u32) -> String {
    gateway_toml.replacen("[gateway]\n", &format!("[gateway]\nrx_frames = {n}\n"), 1)
}

/// The edge configuration with the endpoint's inner prefix among the
/// prefixes of `branch-1` (the gateway in endpoint mode).
pub fn edge_with_endpoint(edge_toml: &str) -> String {
    edge_toml.replacen("prefixes = [", "prefixes = [\"198.18.3.0/24\", ", 1)
}

/// sluice running in a lab.
#[derive(Debug)]
pub struct Sluice<'a> {
    lab: &'a Lab,
    bin: PathBuf,
    conf: PathBuf,
    /// The edge process (the first edge, `edge`).
    pub edge: Option<ProcId>,
    /// The processes of the second and third edges ([`Lab::with_edges`]).
    others: [Option<ProcId>; 2],
    /// The gateway process.
    pub gateway: Option<ProcId>,
    /// CPUs the gateway and the edge are confined to (`taskset`), if any.
    pin: Option<(usize, usize)>,
    /// A command the gateway runs under (e.g. `setpriv` with a bounding
    /// set), if any.
    pub gateway_wrapper: Vec<String>,
}

impl<'a> Sluice<'a> {
    /// Generates the lab PKI and writes the default configurations into
    /// `lab.dir()/sluice`, with `edit` applied to the gateway's.
    ///
    /// # Panics
    /// If `sluice pki init` fails.
    pub fn prepare(lab: &'a Lab, bin: &Path, edit: impl FnOnce(&str) -> String) -> Self {
        let conf = lab.dir().join("sluice");
        std::fs::create_dir_all(&conf).expect("creating the lab's sluice directory");
        let dir = conf.to_string_lossy().into_owned();
        let bin_s = bin.to_string_lossy().into_owned();
        // Certificate generation touches no network: run it in the lab's
        // client namespace anyway, so nothing runs in the host namespace.
        // A lab prepared again (the benchmark's rounds) keeps its PKI:
        // `pki init` refuses to replace a CA.
        let fresh = !conf.join("ca.pem").exists();
        fresh.then(|| {
            lab.run_ok(
                Host::Client,
                &[
                    &bin_s,
                    "pki",
                    "init",
                    "--dir",
                    &dir,
                    "--edge-name",
                    "edge.sluice.test",
                    "--edge-name",
                    "198.51.100.5",
                    "--gateway",
                    "branch-1",
                    "--gateway",
                    "branch-2",
                ],
            )
        });
        std::fs::write(conf.join("gateway.toml"), edit(GATEWAY_TOML))
            .expect("writing gateway.toml");
        std::fs::write(conf.join("edge.toml"), EDGE_TOML).expect("writing edge.toml");
        Self {
            lab,
            bin: bin.to_path_buf(),
            conf,
            edge: None,
            others: [None, None],
            gateway: None,
            pin: None,
            gateway_wrapper: Vec::new(),
        }
    }

    /// [`Sluice::prepare`] with the default configurations, then
    /// [`Sluice::start_edge`] and [`Sluice::start_gateway`].
    pub fn start(lab: &'a Lab, bin: &Path) -> Self {
        let mut s = Self::prepare(lab, bin, str::to_string);
        s.start_edge();
        s.start_gateway();
        s
    }

    /// Rewrites the edge's configuration with `edit` (before
    /// [`Sluice::start_edge`]).
    ///
    /// # Panics
    /// If the file cannot be read or written.
    pub fn edit_edge(&self, edit: impl FnOnce(&str) -> String) {
        let path = self.conf.join("edge.toml");
        let text = std::fs::read_to_string(&path).expect("reading edge.toml");
        std::fs::write(&path, edit(&text)).expect("writing edge.toml");
    }

    /// Confines the gateways started from now on to CPU `gateway` and the
    /// edge to CPU `edge` (`taskset -c`), as the lab benchmark does with
    /// every tunnel it compares.
    pub fn pin(&mut self, gateway: usize, edge: usize) {
        self.pin = Some((gateway, edge));
    }

    /// `argv` behind `taskset -c <cpu>` if pinned.
    fn pinned(cpu: Option<usize>, argv: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = match cpu {
            Some(c) => vec!["taskset".into(), "-c".into(), c.to_string()],
            None => Vec::new(),
        };
        v.extend(argv.iter().map(ToString::to_string));
        v
    }

    /// The directory holding configs and certificates.
    pub fn conf_dir(&self) -> &Path {
        &self.conf
    }

    /// Starts the edge and waits until it accepts connections.
    ///
    /// # Panics
    /// If it does not listen within 10 s (the message has its log).
    pub fn start_edge(&mut self) {
        self.start_edge_at(Host::Edge);
    }

    /// Starts edge `h` ([`Host::EDGES`]; a second or third edge writes its
    /// configuration first, see [`EdgeSite`]) and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// If `h` is no edge of the lab, or it does not listen within 10 s
    /// (the message has its log).
    pub fn start_edge_at(&mut self, h: Host) {
        let site = EdgeSite::of(h);
        if h != Host::Edge {
            let first = std::fs::read_to_string(self.conf.join("edge.toml")).expect("edge.toml");
            std::fs::write(self.conf.join(site.file), site.config(&first))
                .unwrap_or_else(|e| panic!("writing {}: {e}", site.file));
        }
        let cfg = self.conf.join(site.file).to_string_lossy().into_owned();
        let bin = self.bin.to_string_lossy().into_owned();
        let argv = Self::pinned(self.pin.map(|p| p.1), &[&bin, "edge", "--config", &cfg]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let id = self
            .lab
            .spawn_env(h, site.log, &argv, &[("RUST_LOG", "info")]);
        self.lab.wait_for(
            &format!("{} to listen", site.name),
            Duration::from_secs(10),
            || {
                assert!(
                    self.lab.is_running(id),
                    "sluice edge {} exited:\n{}",
                    site.name,
                    self.lab.log(site.log)
                );
                !self
                    .lab
                    .run(h, &["ss", "-Hltn", &format!("sport = :{EDGE_PORT}")])
                    .stdout
                    .is_empty()
            },
        );
        *self.edge_slot(h) = Some(id);
    }

    /// The process of edge `h`, if it was started and not stopped.
    pub fn edge_at(&self, h: Host) -> Option<ProcId> {
        match h {
            Host::Edge => self.edge,
            Host::Edge2 => self.others[0],
            Host::Edge3 => self.others[1],
            _ => None,
        }
    }

    fn edge_slot(&mut self, h: Host) -> &mut Option<ProcId> {
        match h {
            Host::Edge => &mut self.edge,
            Host::Edge2 => &mut self.others[0],
            Host::Edge3 => &mut self.others[1],
            _ => panic!("sluice-lab: {h} is not an edge"),
        }
    }

    /// Stops the edge (SIGTERM).
    pub fn stop_edge(&mut self) {
        self.stop_edge_at(Host::Edge);
    }

    /// Stops edge `h` (SIGTERM), if it runs.
    pub fn stop_edge_at(&mut self, h: Host) {
        if let Some(id) = self.edge_slot(h).take() {
            self.lab.stop(id);
        }
    }

    /// Kills edge `h` with SIGKILL (a crash: no goodbye to its gateways)
    /// and reaps it; returns when the signal was sent.
    ///
    /// # Panics
    /// If it was not running, or is still there 5 s after the signal.
    pub fn kill_edge_at(&mut self, h: Host) -> Instant {
        let id = self
            .edge_slot(h)
            .take()
            .unwrap_or_else(|| panic!("sluice-lab: {h}'s edge is not running"));
        let at = Instant::now();
        self.lab.signal(id, crate::sys::SIGKILL);
        self.lab.wait_exit(id, Duration::from_secs(5));
        at
    }

    /// Starts the gateway and waits until its tunnel is up.
    ///
    /// # Panics
    /// If the tunnel is not up within 15 s (the message has the logs).
    pub fn start_gateway(&mut self) {
        let id = self.spawn_gateway(Host::Gw, "gateway", "gateway.toml");
        self.gateway = Some(id);
        self.wait_tunnel(true, Duration::from_secs(15));
    }

    /// Starts the gateway (log `log`) and waits up to `timeout` for its
    /// tunnel to be up; an error (its log's tail) if it exits or does not
    /// come up. The process stays [`Sluice::gateway`] either way.
    ///
    /// # Errors
    /// It exited, or its tunnel is not up within `timeout`.
    pub fn try_start_gateway(&mut self, log: &str, timeout: Duration) -> Result<(), String> {
        let id = self.spawn_gateway(Host::Gw, log, "gateway.toml");
        self.gateway = Some(id);
        let t = std::time::Instant::now();
        let tail = |lab: &Lab| {
            let text = lab.log(log);
            let lines: Vec<&str> = text.lines().rev().take(8).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        loop {
            if !self.lab.is_running(id) {
                return Err(format!("it exited:\n{}", tail(self.lab)));
            }
            if tunnels_are(self.lab, Host::Gw, true) {
                return Ok(());
            }
            if t.elapsed() >= timeout {
                return Err(format!(
                    "its tunnel is not up after {timeout:?}:\n{}",
                    tail(self.lab)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the gateway and waits until it reports its tunnel down (its
    /// edge is not running).
    ///
    /// # Panics
    /// If it does not report so within 15 s (the message has the logs).
    pub fn start_gateway_without_edge(&mut self) {
        let id = self.spawn_gateway(Host::Gw, "gateway", "gateway.toml");
        self.gateway = Some(id);
        self.wait_tunnel(false, Duration::from_secs(15));
    }

    /// Starts a second gateway, `branch-2`, in `gw2` (its own certificate,
    /// the second branch's LAN) against the same edge, and waits until its
    /// tunnel is up.
    ///
    /// # Panics
    /// If its tunnel is not up within 15 s (the message has the logs).
    pub fn start_second_gateway(&mut self) -> ProcId {
        let text = std::fs::read_to_string(self.conf.join("gateway.toml")).expect("gateway.toml");
        let text = text
            .replace("name = \"branch-1\"", "name = \"branch-2\"")
            .replace("branch-1.pem", "branch-2.pem")
            .replace("branch-1.key", "branch-2.key")
            .replace(
                "admin_socket = \"admin.sock\"",
                "admin_socket = \"admin2.sock\"",
            );
        std::fs::write(self.conf.join("gateway2.toml"), text).expect("writing gateway2.toml");
        let id = self.spawn_gateway(Host::Gw2, "gateway2", "gateway2.toml");
        self.wait_gateway(
            Host::Gw2,
            Some(id),
            "gateway2",
            true,
            Duration::from_secs(15),
        );
        id
    }

    /// `sluice gateway --config <conf>/<file>` in `h`, logging to `<name>.log`.
    fn spawn_gateway(&self, h: Host, name: &str, file: &str) -> ProcId {
        self.spawn_gateway_env(h, name, file, &[])
    }

    /// [`Sluice::spawn_gateway`] with `env` added to the environment.
    fn spawn_gateway_env(&self, h: Host, name: &str, file: &str, env: &[(&str, &str)]) -> ProcId {
        let cfg = self.conf.join(file).to_string_lossy().into_owned();
        let bin = self.bin.to_string_lossy().into_owned();
        let mut argv = self.gateway_wrapper.clone();
        argv.extend(Self::pinned(
            self.pin.map(|p| p.0),
            &[&bin, "gateway", "--config", &cfg],
        ));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut all = vec![("RUST_LOG", "info")];
        all.extend_from_slice(env);
        self.lab.spawn_env(h, name, &argv, &all)
    }

    /// [`Sluice::start_gateway`] with `env` added to the gateway's
    /// environment (e.g. the test-only `SLUICE_FAULT`).
    ///
    /// # Panics
    /// If the tunnel is not up within 15 s (the message has the logs).
    pub fn start_gateway_env(&mut self, env: &[(&str, &str)]) {
        let id = self.spawn_gateway_env(Host::Gw, "gateway", "gateway.toml", env);
        self.gateway = Some(id);
        self.wait_tunnel(true, Duration::from_secs(15));
    }

    /// Runs `sluice gateway <args> --config <conf>/gateway.toml` in `gw`
    /// to completion (e.g. `detach`), at most 30 s.
    pub fn gateway_command(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["gateway"];
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// Runs `sluice <args> --config <conf>/gateway.toml` in `gw` to
    /// completion (e.g. `status`), at most 30 s.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        let cfg = self
            .conf
            .join("gateway.toml")
            .to_string_lossy()
            .into_owned();
        let bin = self.bin.to_string_lossy().into_owned();
        let mut cmd = vec![bin.as_str()];
        cmd.extend_from_slice(args);
        cmd.extend(["--config", &cfg]);
        self.lab
            .run_timeout(Host::Gw, &cmd, Duration::from_secs(30))
    }

    /// Stops the gateway (SIGTERM), then removes what a stop keeps on
    /// purpose (`sluice gateway detach`: the pinned classifier, endpoint
    /// routing), so that what runs next in the lab sees the kernel's plain
    /// forwarding (the lab benchmark's baselines).
    ///
    /// # Panics
    /// If `detach` fails.
    pub fn stop_gateway_and_detach(&mut self) {
        if let Some(id) = self.gateway.take() {
            self.lab.stop(id);
        }
        let out = self.gateway_command(&["detach"]);
        assert!(
            out.status.success(),
            "sluice gateway detach: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the gateway in `gw` pins its classifier's link on `lan0`
    /// (`<bpffs>/sluice/<netns inode>-lan0`).
    ///
    /// # Panics
    /// If the namespace cannot be read.
    pub fn classifier_pin(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt as _;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.lab.ns(Host::Gw)))
            .expect("the gw namespace")
            .ino();
        PathBuf::from(format!("{}/sluice/{ino}-lan0", crate::LAB_BPFFS))
    }

    /// Whether an XDP program is attached to `lan0` in `gw`.
    pub fn xdp_on_lan(&self) -> bool {
        let link = self.lab.run_ok(Host::Gw, &["ip", "link", "show", "lan0"]);
        link.contains("xdp")
    }

    /// Waits until every gateway worker reports its tunnel up (or down).
    ///
    /// # Panics
    /// On timeout, with both logs.
    pub fn wait_tunnel(&self, up: bool, timeout: Duration) {
        self.wait_gateway(Host::Gw, self.gateway, "gateway", up, timeout);
    }

    /// Waits until every worker of the gateway in `h` (process `id`, log
    /// `log`) reports its tunnel up (or down).
    fn wait_gateway(&self, h: Host, id: Option<ProcId>, log: &str, up: bool, timeout: Duration) {
        let what = format!(
            "the tunnel of {log} to go {}",
            if up { "up" } else { "down" }
        );
        self.lab.wait_for(&what, timeout, || {
            if let Some(id) = id {
                assert!(
                    self.lab.is_running(id),
                    "sluice {log} exited:\n{}\n{}",
                    self.lab.log(log),
                    self.edge_logs()
                );
            }
            tunnels_are(self.lab, h, up)
        });
    }

    /// The logs of the edges that were started, each under a heading.
    pub fn edge_logs(&self) -> String {
        EDGE_SITES
            .iter()
            .filter_map(|site| {
                let text = std::fs::read_to_string(self.lab.log_path(site.log)).ok()?;
                Some(format!("--- {} log ---\n{text}", site.log))
            })
            .collect()
    }

    /// The gateway's metrics text (empty if it does not answer).
    pub fn gateway_metrics(&self) -> String {
        metrics_text(self.lab, Host::Gw, GATEWAY_METRICS)
    }

    /// The edge's metrics text (empty if it does not answer).
    pub fn edge_metrics(&self) -> String {
        metrics_text(self.lab, Host::Edge, EDGE_METRICS)
    }

    /// Edge `h`'s metrics text (empty if it does not answer).
    pub fn edge_metrics_at(&self, h: Host) -> String {
        metrics_text(self.lab, h, &EdgeSite::of(h).metrics_url())
    }

    /// Sum of a gateway metric over all its label sets that contain
    /// `label` (e.g. `verdict="tunnel"`; empty matches all).
    pub fn gateway_metric(&self, name: &str, label: &str) -> u64 {
        sum(&self.gateway_metrics(), name, label)
    }

    /// Sum of an edge metric, as [`Sluice::gateway_metric`].
    pub fn edge_metric(&self, name: &str, label: &str) -> u64 {
        sum(&self.edge_metrics(), name, label)
    }
}

/// Whether every worker of the gateway in `h` reports its tunnel up (or,
/// with `up` false, down); false while its metrics do not answer.
pub fn tunnels_are(lab: &Lab, h: Host, up: bool) -> bool {
    let ups = samples(
        &metrics_text(lab, h, GATEWAY_METRICS),
        "sluice_gateway_tunnel_up",
    );
    !ups.is_empty() && ups.iter().all(|&(_, v)| v == u64::from(up))
}

/// The metrics text served at `url` inside `h` (empty if nothing answers).
pub fn metrics_text(lab: &Lab, h: Host, url: &str) -> String {
    let out = lab.run(h, &["curl", "-sS", "--max-time", "2", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of the gateway's metric `name` over the label sets containing
/// `label`, read from the lab's gateway namespace.
pub fn gateway_metric(lab: &Lab, name: &str, label: &str) -> u64 {
    sum(&metrics_text(lab, Host::Gw, GATEWAY_METRICS), name, label)
}

/// `(labels, value)` of every sample of metric `name` in Prometheus text.
pub fn samples(text: &str, name: &str) -> Vec<(String, u64)> {
    raw_samples(text, name)
        .map(|(labels, value)| (labels.to_string(), value.parse().unwrap_or(0)))
        .collect()
}

/// [`samples`] of a metric whose values are not integers (a gauge in
/// seconds); a value that does not parse is `NaN`.
pub fn samples_f64(text: &str, name: &str) -> Vec<(String, f64)> {
    raw_samples(text, name)
        .map(|(labels, value)| (labels.to_string(), value.parse().unwrap_or(f64::NAN)))
        .collect()
}

/// `(labels, value)` of `name`'s samples, as written.
fn raw_samples<'t>(text: &'t str, name: &'t str) -> impl Iterator<Item = (&'t str, &'t str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, labels) = key
                .split_once('{')
                .map_or((key, ""), |(n, r)| (n, r.trim_end_matches('}')));
            (n == name).then_some((labels, value))
        })
}

/// The value of label `key` in a sample's labels (`a="1",b="2"`).
pub fn label<'l>(labels: &'l str, key: &str) -> Option<&'l str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Sum of the samples of `name` whose labels contain `label`.
pub fn sum(text: &str, name: &str, label: &str) -> u64 {
    samples(text, name)
        .into_iter()
        .filter(|(l, _)| l.contains(label))
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let t =
            "# HELP x y\n# TYPE x counter\nx{verdict=\"tunnel\"} 5\nx{verdict=\"bypass\"} 2\ny 7\n";
        assert_eq!(sum(t, "x", "verdict=\"tunnel\""), 5);
        assert_eq!(sum(t, "x", ""), 7);
        assert_eq!(sum(t, "y", ""), 7);
        assert_eq!(samples(t, "z"), vec![]);
        let g = "r{queue=\"0\",tenant=\"internet\",edge=\"edge-2\"} 0.0125\n";
        let r = samples_f64(g, "r");
        assert_eq!(r.len(), 1);
        assert!((r[0].1 - 0.0125).abs() < 1e-12);
        assert_eq!(label(&r[0].0, "edge"), Some("edge-2"));
        assert_eq!(label(&r[0].0, "queue"), Some("0"));
        assert_eq!(label(&r[0].0, "nope"), None);
    }
}
