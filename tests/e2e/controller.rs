//! The management plane in the lab: `sluice controller` runs in `inet`
//! (its API and agent listeners on inet's address), an edge and two
//! gateways (`gw`, `gw2`) enrol from one-time tokens and take everything
//! else from it: the edge its gateways and their certificates, the
//! gateways their policy and their edges.
//!
//! - a bypass added through the API changes both gateways' traffic;
//! - the controller killed: both keep forwarding on their last policy, and
//!   take a change made after it is back;
//! - a revoked gateway's tunnels are refused by the edge within seconds,
//!   and its must-tunnel traffic does not leave directly meanwhile (a
//!   counter on the wire in `inet`);
//! - two controllers on one PostgreSQL (a private instance, reached over
//!   its Unix socket from the lab namespace): one killed, a change made
//!   through the other reaches both gateways.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sluice_lab::{
    Host, Lab, ProcId, addr,
    deploy::{metrics_text, sum, tunnels_are},
    edge_lab::{watch, watched},
    require_root,
};

use super::{HTTP, UDP, bin};

#[path = "../../controller/tests/common/pg.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the controller's tests"
)]
mod pg;

/// inet's address on the gateways' side: every lab host routes to it.
pub(super) const CTL_HOST: &str = "198.51.100.2";
const SIGKILL: i32 = 9;

/// A controller's ports.
#[derive(Clone, Copy)]
pub(super) struct Ports {
    pub(super) api: u16,
    agent: u16,
}

pub(super) const A: Ports = Ports {
    api: 8443,
    agent: 8444,
};
const B: Ports = Ports {
    api: 9443,
    agent: 9444,
};

/// The controllers, the boxes and what they need.
pub(super) struct Fleet<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    database: String,
    /// More of the controller's file (a `[directory]`).
    extra: String,
    auth: String,
    controllers: Vec<(Ports, Option<ProcId>)>,
    gateways: Vec<(Host, &'static str, ProcId)>,
    edge: Option<ProcId>,
    ids: std::collections::BTreeMap<String, String>,
    /// The edge's `keepalive_secs` and `idle_timeout_secs` lines (short
    /// by default: the lab's gateways set theirs to match).
    pub(super) edge_timers: &'static str,
}

impl<'a> Fleet<'a> {
    pub(super) fn new(lab: &'a Lab, database: Option<String>) -> Self {
        let dir = lab.dir().join("fleet");
        std::fs::create_dir_all(&dir).unwrap();
        let database = database.unwrap_or_else(|| "sqlite://controller.db".into());
        Fleet {
            lab,
            dir,
            database,
            extra: String::new(),
            auth: String::new(),
            controllers: Vec::new(),
            gateways: Vec::new(),
            edge: None,
            ids: std::collections::BTreeMap::new(),
            edge_timers: "keepalive_secs = 2\nidle_timeout_secs = 6\n",
        }
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn s(p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }

    /// Writes controller `n`'s file (state `ctl<n>`); the second and later
    /// share the first's CA (copied, as the README says).
    fn controller_file(&self, n: usize, p: Ports) -> PathBuf {
        let state = self.state(&format!("ctl{n}"));
        std::fs::create_dir_all(&state).unwrap();
        if n > 0 {
            for f in ["ca.pem", "ca.key"] {
                std::fs::copy(self.state("ctl0").join(f), state.join(f)).unwrap();
            }
        }
        let file = self.dir.join(format!("controller{n}.toml"));
        std::fs::write(
            &file,
            format!(
                "[controller]\nlisten = \"{CTL_HOST}:{}\"\nagent_listen = \"{CTL_HOST}:{}\"\nstate_dir = \"{}\"\nserver_names = [\"{CTL_HOST}\"]\ndatabase = \"{}\"\nrate_limit_per_second = 1000\nrate_limit_burst = 1000\n{}",
                p.api,
                p.agent,
                Self::s(&state),
                self.database,
                self.extra
            ),
        )
        .unwrap();
        file
    }

    /// Starts controller `n` in `inet` and waits for its API.
    pub(super) fn start_controller(&mut self, n: usize, p: Ports) {
        let file = self.controller_file(n, p);
        let bin = bin().to_string_lossy().into_owned();
        let id = self.lab.spawn_env(
            Host::Inet,
            &format!("controller{n}"),
            &[&bin, "controller", "--config", &Self::s(&file), "run"],
            &[("RUST_LOG", "info")],
        );
        let ca = self.ca();
        self.lab
            .wait_for("the controller's API", Duration::from_secs(30), || {
                assert!(
                    self.lab.is_running(id),
                    "controller{n} exited:\n{}",
                    self.lab.log(&format!("controller{n}"))
                );
                ca.exists()
                    && self
                        .lab
                        .run(
                            Host::Inet,
                            &[
                                "curl",
                                "-sS",
                                "--max-time",
                                "2",
                                "--cacert",
                                &Self::s(&ca),
                                &format!("https://{CTL_HOST}:{}/openapi.json", p.api),
                                "-o",
                                "/dev/null",
                            ],
                        )
                        .status
                        .success()
            });
        match self.controllers.get_mut(n) {
            Some(c) => *c = (p, Some(id)),
            None => self.controllers.push((p, Some(id))),
        }
    }

    fn kill_controller(&mut self, n: usize) {
        let id = self.controllers[n].1.take().expect("running");
        self.lab.signal(id, SIGKILL);
        self.lab.wait_exit(id, Duration::from_secs(10));
    }

    fn ca(&self) -> PathBuf {
        self.state("ctl0").join("ca.pem")
    }

    /// An admin client made from the command line, its token from the
    /// token endpoint of controller `n`.
    pub(super) fn sign_in(&mut self, n: usize) {
        let file = self.dir.join(format!("controller{n}.toml"));
        let bin = bin().to_string_lossy().into_owned();
        let name = format!("lab-admin-{n}");
        let printed = self.lab.run_ok(
            Host::Inet,
            &[
                &bin,
                "controller",
                "--config",
                &Self::s(&file),
                "create-client",
                "--name",
                &name,
                "--scope",
                "admin",
            ],
        );
        let get = |k: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {printed}"))
                .to_string()
        };
        let (id, secret) = (get("client_id="), get("client_secret="));
        let api = self.controllers[n].0.api;
        let tok = self.curl_json(&[
            "-u",
            &format!("{id}:{secret}"),
            "-d",
            "grant_type=client_credentials",
            &format!("https://{CTL_HOST}:{api}/oauth/token"),
        ]);
        self.auth = format!(
            "Authorization: Bearer {}",
            tok["access_token"].as_str().expect("a token")
        );
    }

    fn curl_json(&self, args: &[&str]) -> serde_json::Value {
        let ca = Self::s(&self.ca());
        let mut argv = vec!["curl", "-sS", "--max-time", "20", "--cacert", &ca];
        argv.extend_from_slice(args);
        let out = self.lab.run_ok(Host::Inet, &argv);
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{argv:?}: not JSON: {out}"))
    }

    /// `method path body` against controller `n`'s API, as the admin.
    fn api(&self, n: usize, method: &str, path: &str, body: &str) -> serde_json::Value {
        let api = self.controllers[n].0.api;
        let url = format!("https://{CTL_HOST}:{api}{path}");
        let mut args = vec!["-X", method, "-H", &self.auth, &url];
        if !body.is_empty() {
            let ct = if method == "PATCH" {
                "Content-Type: application/merge-patch+json"
            } else {
                "Content-Type: application/json"
            };
            args.extend_from_slice(&["-H", ct, "-d", body]);
        }
        let v = self.curl_json(&args);
        assert!(
            v.get("status").is_none() || v["status"].as_u64().is_none_or(|s| s < 400),
            "{method} {path}: {v}"
        );
        v
    }

    /// Creates an object and remembers its id by name.
    fn create(&mut self, n: usize, collection: &str, body: &str) {
        let v = self.api(n, "POST", &format!("/api/v1/{collection}"), body);
        let id = v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{collection}: {v}"));
        let name = v["name"].as_str().unwrap_or_default().to_string();
        self.ids.insert(name, id.to_string());
    }

    fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }

    /// The organisation: one edge, the internet tenant on it, an app
    /// profile with no bypass, two gateways with their LANs.
    pub(super) fn organise(&mut self) {
        self.create(
            0,
            "edges",
            r#"{"name":"edge-1","address":"198.51.100.5:4443"}"#,
        );
        self.create(
            0,
            "tenants",
            r#"{"name":"internet","kind":"internet","edges":["edge-1"],"server_name":"edge.sluice.test"}"#,
        );
        self.create(0, "app-profiles", r#"{"name":"branches"}"#);
        self.create(
            0,
            "gateways",
            r#"{"name":"branch-1","prefixes":["192.0.2.0/24","2001:db8:1::/64"]}"#,
        );
        self.create(
            0,
            "gateways",
            r#"{"name":"branch-2","prefixes":["198.18.2.0/24","2001:db8:12::/64"]}"#,
        );
    }

    /// A one-time enrolment token for `name` of `collection`.
    pub(super) fn token(&self, collection: &str, name: &str) -> String {
        let v = self.api(
            0,
            "POST",
            &format!("/api/v1/{collection}/{}/enrolment", self.id(name)),
            "",
        );
        v["token"].as_str().expect("a token").to_string()
    }

    fn agent_urls(&self) -> String {
        self.controllers
            .iter()
            .map(|(p, _)| format!("\"https://{CTL_HOST}:{}\"", p.agent))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Enrols `kind` `name` in `h` (state `dir`).
    fn enrol(&self, h: Host, kind: &str, collection: &str, name: &str, dir: &str) {
        let token = self.token(collection, name);
        let bin = bin().to_string_lossy().into_owned();
        let url = format!("https://{CTL_HOST}:{}", self.controllers[0].0.api);
        let out = self.lab.run_ok(
            h,
            &[
                &bin,
                kind,
                "--enrol",
                &url,
                "--token",
                &token,
                "--state-dir",
                &Self::s(&self.state(dir)),
            ],
        );
        assert!(out.contains("enrolled as"), "{out}");
    }

    pub(super) fn start_edge(&mut self) {
        self.enrol(Host::Edge, "edge", "edges", "edge-1", "edge-state");
        let file = self.dir.join("edge.toml");
        std::fs::write(
            &file,
            format!(
                "[edge]\nlisten = \"[::]:4443\"\ntun = \"sluice0\"\nmetrics = \"127.0.0.1:9478\"\n{}\n[controller]\nstate_dir = \"edge-state\"\nagent_urls = [{}]\n",
                self.edge_timers,
                self.agent_urls()
            ),
        )
        .unwrap();
        let bin = bin().to_string_lossy().into_owned();
        let id = self.lab.spawn_env(
            Host::Edge,
            "edge",
            &[&bin, "edge", "--config", &Self::s(&file)],
            &[("RUST_LOG", "info")],
        );
        self.lab
            .wait_for("the edge's listener", Duration::from_secs(30), || {
                assert!(self.lab.is_running(id), "the edge exited:\n{}", self.logs());
                self.lab.log("edge").contains("listening on")
            });
        self.edge = Some(id);
    }

    fn start_gateway(&mut self, h: Host, name: &'static str) {
        let n = self.gateways.len() + 1;
        let dir = format!("gw{n}-state");
        self.enrol(h, "gateway", "gateways", name, &dir);
        let file = self.dir.join(format!("gateway{n}.toml"));
        std::fs::write(
            &file,
            format!(
                "[gateway]\nlan = \"lan0\"\nwan = \"wan0\"\nxdp_mode = \"auto\"\nmetrics = \"127.0.0.1:9477\"\nadmin_socket = \"admin{n}.sock\"\nbpffs = \"{}\"\n\n[tunnel]\nkeepalive_secs = 2\nidle_timeout_secs = 6\n\n[controller]\nstate_dir = \"{dir}\"\nagent_urls = [{}]\n",
                sluice_lab::LAB_BPFFS,
                self.agent_urls()
            ),
        )
        .unwrap();
        let bin = bin().to_string_lossy().into_owned();
        let log = format!("gateway{n}");
        let id = self.lab.spawn_env(
            h,
            &log,
            &[&bin, "gateway", "--config", &Self::s(&file)],
            &[("RUST_LOG", "info")],
        );
        self.gateways.push((h, name, id));
        self.wait_up(h, &log, id);
    }

    fn wait_up(&self, h: Host, log: &str, id: ProcId) {
        self.lab
            .wait_for(&format!("{log}'s tunnel"), Duration::from_secs(30), || {
                assert!(self.lab.is_running(id), "{log} exited:\n{}", self.logs());
                tunnels_are(self.lab, h, true)
            });
    }

    pub(super) fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["controller0", "controller1", "edge", "gateway1", "gateway2"] {
            if let Ok(t) = std::fs::read_to_string(self.lab.log_path(name)) {
                let tail: Vec<&str> = t.lines().rev().take(60).collect();
                out.push_str(&format!("--- {name} (last lines) ---\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The source address the server saw for a request from `from` to `dst`.
    fn whoami(&self, from: Host, dst: std::net::Ipv4Addr) -> Result<String, String> {
        let out = self.lab.run(
            from,
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "5",
                &format!("http://{dst}:{HTTP}/whoami"),
            ],
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Waits until requests from both branches to `dst` leave through the
    /// edge (`tunnelled`) or through their own WAN.
    fn wait_path(&self, dst: std::net::Ipv4Addr, tunnelled: bool, within: Duration) {
        let branches = [
            (Host::Client, addr::GW_WAN_V4),
            (Host::Client2, addr::GW2_WAN_V4),
        ];
        for (from, wan) in branches {
            let want = if tunnelled {
                addr::EDGE_WAN_V4.to_string()
            } else {
                wan.to_string()
            };
            let mut last = Err(String::new());
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                last = self.whoami(from, dst);
                if last.as_deref() == Ok(want.as_str()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            assert_eq!(
                last.as_deref(),
                Ok(want.as_str()),
                "{from} to {dst}: expected the server to see {want} within {within:?}\n{}",
                self.logs()
            );
        }
    }

    pub(super) fn set_bypass(&self, n: usize, prefixes: &[&str]) {
        let list: Vec<String> = prefixes.iter().map(|p| format!("\"{p}\"")).collect();
        self.api(
            n,
            "PATCH",
            &format!("/api/v1/app-profiles/{}", self.id("branches")),
            &format!("{{\"exclude\":[{}]}}", list.join(",")),
        );
    }

    fn revision(&self, n: usize) -> i64 {
        self.api(n, "GET", "/api/v1/nodes", "")["revision"]
            .as_i64()
            .unwrap_or(-1)
    }
}

/// Counters in `inet` of packets from each gateway's WAN address to the
/// must-tunnel server (direct, not through the edge).
fn watch_direct(lab: &Lab) {
    let t = addr::TUNNELLED_V4;
    watch(
        lab,
        Host::Inet,
        &[
            (
                "gw1_direct",
                &format!("ip saddr {} ip daddr {t}", addr::GW_WAN_V4),
            ),
            (
                "gw2_direct",
                &format!("ip saddr {} ip daddr {t}", addr::GW2_WAN_V4),
            ),
            (
                "lan2_direct",
                &format!("ip saddr {}/24 ip daddr {t}", addr::LAN2_V4_NET),
            ),
        ],
    );
}

#[test]
fn gateways_and_an_edge_enrol_and_follow_the_controller() {
    if !require_root("gateways_and_an_edge_enrol_and_follow_the_controller") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut f = Fleet::new(&lab, None);
    f.start_controller(0, A);
    f.sign_in(0);
    f.organise();
    f.start_edge();
    f.start_gateway(Host::Gw, "branch-1");
    f.start_gateway(Host::Gw2, "branch-2");
    watch_direct(&lab);

    // No bypass yet: both branches reach the server through the edge.
    f.wait_path(addr::BYPASSED_V4, true, Duration::from_secs(5));
    // A bypass added through the API: both gateways send it direct.
    f.set_bypass(0, &["203.0.113.20/32"]);
    f.wait_path(addr::BYPASSED_V4, false, Duration::from_secs(10));
    let rev = f.revision(0);
    lab.wait_for(
        "both gateways to report the revision",
        Duration::from_secs(30),
        || {
            let nodes = f.api(0, "GET", "/api/v1/nodes", "");
            nodes["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .filter(|i| i["kind"] == "gateway")
                    .all(|i| i["applied_revision"].as_i64() == Some(rev))
            })
        },
    );

    // The controller killed: both keep forwarding on their last policy.
    f.kill_controller(0);
    std::thread::sleep(Duration::from_secs(2));
    f.wait_path(addr::BYPASSED_V4, false, Duration::from_secs(5));
    f.wait_path(addr::TUNNELLED_V4, true, Duration::from_secs(5));
    // Back: a change made now reaches both.
    // (The admin's token outlives the restart: the keys are in the
    // database.)
    f.start_controller(0, A);
    f.set_bypass(0, &[]);
    f.wait_path(addr::BYPASSED_V4, true, Duration::from_secs(30));

    // branch-2 revoked: the edge refuses its tunnel within seconds, and
    // nothing of its must-tunnel traffic leaves directly meanwhile.
    let before = watched(&lab, Host::Inet, "gw2_direct") + watched(&lab, Host::Inet, "lan2_direct");
    let revoke = Instant::now();
    f.api(
        0,
        "POST",
        &format!("/api/v1/gateways/{}/revoke", f.id("branch-2")),
        "",
    );
    lab.wait_for(
        "branch-2's tunnel to be refused",
        Duration::from_secs(10),
        || tunnels_are(&lab, Host::Gw2, false),
    );
    let took = revoke.elapsed();
    for _ in 0..3 {
        assert!(
            f.whoami(Host::Client2, addr::TUNNELLED_V4).is_err(),
            "a revoked branch still reaches the must-tunnel server\n{}",
            f.logs()
        );
    }
    // branch-1 is untouched.
    assert_eq!(
        f.whoami(Host::Client, addr::TUNNELLED_V4).as_deref(),
        Ok(addr::EDGE_WAN_V4.to_string().as_str())
    );
    let edge = metrics_text(&lab, Host::Edge, "http://127.0.0.1:9478/metrics");
    assert!(
        sum(&edge, "sluice_edge_tunnels_revoked_total", "") > 0
            || sum(
                &edge,
                "sluice_edge_tunnels_refused_total",
                "reason=\"revoked\""
            ) > 0,
        "the edge counted no revocation:\n{edge}\n{}",
        f.logs()
    );
    // It keeps being refused (the gateway retries).
    std::thread::sleep(Duration::from_secs(3));
    let edge = metrics_text(&lab, Host::Edge, "http://127.0.0.1:9478/metrics");
    assert!(
        sum(
            &edge,
            "sluice_edge_tunnels_refused_total",
            "reason=\"revoked\""
        ) > 0,
        "{edge}"
    );
    let after = watched(&lab, Host::Inet, "gw2_direct") + watched(&lab, Host::Inet, "lan2_direct");
    assert_eq!(
        after, before,
        "a revoked branch's must-tunnel traffic left directly"
    );
    assert_eq!(watched(&lab, Host::Inet, "gw1_direct"), 0);
    eprintln!("revocation: branch-2's tunnel down {took:?} after the API call");
}

#[test]
fn two_controllers_on_one_postgresql_either_serves_the_gateways() {
    if !require_root("two_controllers_on_one_postgresql_either_serves_the_gateways") {
        return;
    }
    let pg = pg::Pg::start();
    pg.database("sluice_lab");
    // The lab namespace reaches the instance over its Unix socket.
    let url = format!(
        "postgres://postgres@localhost/sluice_lab?host={}&port={}",
        pg.socket_dir().display(),
        pg.port
    );
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut f = Fleet::new(&lab, Some(url));
    f.start_controller(0, A);
    f.start_controller(1, B);
    f.sign_in(0);
    f.organise();
    f.start_edge();
    f.start_gateway(Host::Gw, "branch-1");
    f.start_gateway(Host::Gw2, "branch-2");
    watch_direct(&lab);
    f.wait_path(addr::BYPASSED_V4, true, Duration::from_secs(5));

    // The first controller killed; the change goes through the second.
    f.kill_controller(0);
    f.sign_in(1);
    f.set_bypass(1, &["203.0.113.20/32"]);
    f.wait_path(addr::BYPASSED_V4, false, Duration::from_secs(60));
    f.wait_path(addr::TUNNELLED_V4, true, Duration::from_secs(5));
    assert_eq!(watched(&lab, Host::Inet, "gw1_direct"), 0);
    assert_eq!(watched(&lab, Host::Inet, "gw2_direct"), 0);
    drop(f);
    drop(lab);
    drop(pg);
}

#[path = "../../controller/tests/common/slapd.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the controller's tests"
)]
mod slapd;

/// RFC 4648 base32 (the TOTP secret as `create-admin` prints it).
fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => continue,
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// The current TOTP code of `secret` (RFC 6238, SHA-1, six digits), one
/// step ahead by `offset`.
fn totp(secret: &[u8], offset: u64) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let step = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
        + offset;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = aws_lc_rs::hmac::sign(&key, &step.to_be_bytes());
    let h = tag.as_ref();
    let o = usize::from(h[19] & 0xf);
    let n = (u32::from(h[o] & 0x7f) << 24)
        | (u32::from(h[o + 1]) << 16)
        | (u32::from(h[o + 2]) << 8)
        | u32::from(h[o + 3]);
    format!("{:06}", n % 1_000_000)
}

/// The portal in a browser changes a gateway's traffic: groups synced from
/// a real slapd (in `inet`, on its loopback), an identity maps the LAN
/// client to a directory user, and in headless Chromium (its driver in
/// `inet` too) an administrator signs in with password and TOTP, creates
/// an app profile with a rule for the user's synced group and a bypass:
/// the client's traffic to that destination leaves directly from then on,
/// while must-tunnel traffic stays in the tunnel.
#[test]
fn a_profile_made_in_the_portal_for_a_synced_group_changes_a_gateways_traffic() {
    if !require_root("a_profile_made_in_the_portal_for_a_synced_group_changes_a_gateways_traffic") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let inet = lab.ns(Host::Inet).to_string();
    let d = slapd::Slapd::start_in(50, 5, &["ip", "netns", "exec", &inet]);
    let mut f = Fleet::new(&lab, None);
    f.extra = d.section(true, &f.dir);
    f.start_controller(0, A);
    f.sign_in(0);
    // The first sync (at start): user00010 is in group0000 and group0003.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = f.api(0, "GET", "/api/v1/directory", "");
        if s["last_ok"] == true {
            assert_eq!(s["users"], 50, "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no directory sync: {s}\n{}",
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    f.organise();
    f.create(
        0,
        "identities",
        &format!(
            r#"{{"name":"client","source":"{}/32","user":"user00010"}}"#,
            addr::CLIENT_V4
        ),
    );
    f.start_edge();
    f.start_gateway(Host::Gw, "branch-1");
    let to_bypass = addr::BYPASSED_V4;
    let tunnelled = || f.whoami(Host::Client, to_bypass);
    assert_eq!(
        tunnelled().as_deref(),
        Ok(addr::EDGE_WAN_V4.to_string().as_str())
    );

    // The first administrator, from the command line.
    let bin = bin().to_string_lossy().into_owned();
    let file = f.dir.join("controller0.toml");
    let printed = lab.run_ok(
        Host::Inet,
        &[
            "sh",
            "-c",
            &format!(
                "echo 'a long lab password' | '{bin}' controller --config '{}' create-admin --name alice --role full",
                file.display()
            ),
        ],
    );
    let secret = base32_decode(
        printed
            .lines()
            .find_map(|l| l.strip_prefix("totp_secret="))
            .unwrap_or_else(|| panic!("{printed}")),
    );

    // Chromium in inet, trusting the controller's key alone.
    let spki = lab.run_ok(
        Host::Inet,
        &[
            "sh",
            "-c",
            &format!(
                "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
                f.state("ctl0").join("server.pem").display()
            ),
        ],
    );
    let port = 9515u16;
    let driver = lab.spawn(
        Host::Inet,
        "chromedriver",
        &["chromedriver", &format!("--port={port}")],
    );
    let profile_dir = lab.dir().join("chromium");
    let base = format!("https://{CTL_HOST}:{}", A.api);
    let code = totp(&secret, 0);
    sluice_lab::edge_lab::in_netns(&lab, Host::Inet, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use fantoccini::{ClientBuilder, Locator};
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "chromedriver did not start");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                serde_json::json!({
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                        format!("--user-data-dir={}", profile_dir.display()),
                        format!("--ignore-certificate-errors-spki-list={}", spki.trim()),
                    ]
                }),
            );
            let b = ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .expect("a WebDriver session with Chromium");
            let wait_for = |needle: &'static str| {
                let b = b.clone();
                async move {
                    let deadline = Instant::now() + Duration::from_secs(15);
                    loop {
                        let t = b.source().await.unwrap();
                        if t.contains(needle) {
                            return;
                        }
                        assert!(Instant::now() < deadline, "no `{needle}` in {t}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let fill = |css: &'static str, text: String| {
                let b = b.clone();
                async move {
                    let e = b.find(Locator::Css(css)).await.unwrap();
                    e.clear().await.unwrap();
                    e.send_keys(&text).await.unwrap();
                }
            };
            let click = |css: &'static str| {
                let b = b.clone();
                async move {
                    b.find(Locator::Css(css))
                        .await
                        .unwrap()
                        .click()
                        .await
                        .unwrap()
                }
            };
            b.goto(&format!("{base}/portal/")).await.unwrap();
            wait_for("id=\"signin\"").await;
            fill("#name", "alice".into()).await;
            fill("#password", "a long lab password".into()).await;
            fill("#code", code).await;
            click("#signin").await;
            wait_for("<h1>Dashboard</h1>").await;
            // The gateway is on the dashboard.
            wait_for("branch-1").await;
            b.goto(&format!("{base}/portal/app-profiles"))
                .await
                .unwrap();
            fill("#new-name", "engineering".into()).await;
            click("#create-profile").await;
            wait_for("profile-form").await;
            fill("#groups", "group0003".into()).await;
            fill("#exclude", format!("{to_bypass}/32")).await;
            click("#save-profile").await;
            wait_for("version 2").await;
            b.close().await.unwrap();
        });
    });
    lab.stop(driver);
    // The gateway takes the new revision: user00010 (group0003) is on the
    // engineering profile, whose bypass sends that destination direct;
    // must-tunnel traffic stays in the tunnel.
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = addr::GW_WAN_V4.to_string();
    loop {
        let seen = tunnelled();
        if seen.as_deref() == Ok(want.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client still reaches {to_bypass} as {seen:?}\n{}",
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        f.whoami(Host::Client, addr::TUNNELLED_V4).as_deref(),
        Ok(addr::EDGE_WAN_V4.to_string().as_str())
    );
    drop(f);
    drop(d);
}
