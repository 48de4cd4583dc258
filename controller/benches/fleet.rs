//! The fleet benchmark: one controller (`sluice controller run`, its own
//! process, so that its CPU and memory are its own) and N simulated
//! gateways (lightweight agents in this process: each enrols with its own
//! key and certificate and holds its own mutually authenticated long poll,
//! as a gateway does). Measured:
//! - a policy change made through the API until every agent has it and has
//!   reported it applied: p50, p99, max over the agents, per round;
//! - the controller's CPU time and resident memory with the fleet attached;
//! - the admin API's latency (p50, p99) at a fixed 100 requests/s (reads
//!   and conditional writes mixed) while the fleet is attached.
//!
//! `cargo bench -p sluice-controller --bench fleet -- [--agents N]
//! [--rounds R] [--postgres] [--sluice PATH]`. Loopback only.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

struct Args {
    agents: usize,
    rounds: usize,
    postgres: bool,
    sluice: PathBuf,
    api_seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        agents: 1000,
        rounds: 10,
        postgres: false,
        sluice: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/release/sluice"
        )),
        api_seconds: 20,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        match v[i].as_str() {
            "--agents" => {
                a.agents = v[i + 1].parse().unwrap();
                i += 1;
            }
            "--rounds" => {
                a.rounds = v[i + 1].parse().unwrap();
                i += 1;
            }
            "--api-seconds" => {
                a.api_seconds = v[i + 1].parse().unwrap();
                i += 1;
            }
            "--sluice" => {
                a.sluice = PathBuf::from(&v[i + 1]);
                i += 1;
            }
            "--postgres" => a.postgres = true,
            _ => {}
        }
        i += 1;
    }
    a
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i]
}

/// utime+stime (seconds) and RSS (MiB) of `pid`.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let cpu = (f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0))
        / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    (cpu, rss)
}

fn tls(ca: &str, cert: Option<(&str, &rcgen::KeyPair)>) -> reqwest::Client {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match cert {
        Some((pem, key)) => {
            let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
                .map(Result::unwrap)
                .collect();
            let k = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
            b.with_client_auth_cert(chain, k).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

// The tests' private PostgreSQL (initdb as postgres, loopback, removed on
// drop): one copy of that code.
#[path = "../tests/common/pg.rs"]
#[allow(dead_code, unreachable_pub)]
mod pg;

struct Controller {
    child: Child,
    dir: tempfile::TempDir,
    api: String,
    ca: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_controller(a: &Args, database: Option<String>) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let (api, agent) = (free_port(), free_port());
    let mut text = format!(
        "[controller]\nlisten = \"127.0.0.1:{api}\"\nagent_listen = \"127.0.0.1:{agent}\"\nstate_dir = \"{}\"\nserver_names = [\"127.0.0.1\"]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\ntoken_rate_limit_per_minute = 100000\nmax_connections = 4096\n",
        dir.path().join("state").display()
    );
    if let Some(d) = database {
        text.push_str(&format!("database = \"{d}\"\n"));
    }
    let cfg = dir.path().join("controller.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(&a.sluice)
        .args(["controller", "--config"])
        .arg(&cfg)
        .args([
            "create-client",
            "--name",
            "bench",
            "--scope",
            "admin",
            "--token-lifetime-minutes",
            "1440",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.path().join("client"), &printed).unwrap();
    let child = Command::new(&a.sluice)
        .args(["controller", "--config"])
        .arg(&cfg)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ca_path = dir.path().join("state/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ca_path.exists() || std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "the controller did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Controller {
        child,
        api: format!("https://127.0.0.1:{api}"),
        ca: std::fs::read_to_string(ca_path).unwrap(),
        dir,
    }
}

async fn run(a: &Args, label: &str, database: Option<String>) -> Value {
    let ctl = start_controller(a, database).await;
    let creds = std::fs::read_to_string(ctl.dir.path().join("client")).unwrap();
    let get = |k: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let (id, secret) = (get("client_id="), get("client_secret="));
    let http = tls(&ctl.ca, None);
    let tok: Value = http
        .post(format!("{}/oauth/token", ctl.api))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = tok["access_token"].as_str().unwrap().to_string();
    let call = |m: reqwest::Method, p: String, body: Option<Value>| {
        let http = http.clone();
        let tok = tok.clone();
        let api = ctl.api.clone();
        async move {
            let mut rb = http.request(m, format!("{api}{p}")).bearer_auth(tok);
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            let r = rb.send().await.unwrap();
            let s = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (s, v)
        }
    };
    let (_, p) = call(
        reqwest::Method::POST,
        "/api/v1/app-profiles".into(),
        Some(json!({"name": "staff"})),
    )
    .await;
    let profile = p["id"].as_str().unwrap().to_string();

    // Enrol the fleet.
    let t0 = Instant::now();
    let mut agents = Vec::with_capacity(a.agents);
    for i in 0..a.agents {
        let (s, g) = call(
            reqwest::Method::POST,
            "/api/v1/gateways".into(),
            Some(json!({"name": format!("gw-{i:05}"), "prefixes": []})),
        )
        .await;
        assert!(s.is_success(), "{g}");
        let gid = g["id"].as_str().unwrap();
        let (_, t) = call(
            reqwest::Method::POST,
            format!("/api/v1/gateways/{gid}/enrolment"),
            None,
        )
        .await;
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let e: Value = http
            .post(format!("{}/enrol", ctl.api))
            .json(&json!({"token": t["token"], "csr": csr}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let agent_url = e["agent_url"].as_str().unwrap().to_string();
        agents.push((
            tls(&ctl.ca, Some((e["certificate"].as_str().unwrap(), &key))),
            agent_url,
        ));
    }
    let enrol_secs = t0.elapsed().as_secs_f64();
    eprintln!("{label}: {} agents enrolled in {enrol_secs:.1} s", a.agents);

    // Every agent: poll, report applied, poll again; send (revision,
    // instant applied) to the collector.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let mut tasks = Vec::new();
    for (client, url) in agents {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut after = -1i64;
            loop {
                let q = if after < 0 {
                    format!("{url}/agent/v1/policy")
                } else {
                    format!("{url}/agent/v1/policy?after={after}&wait=55")
                };
                let Ok(r) = client.get(q).send().await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if r.status() == reqwest::StatusCode::NO_CONTENT {
                    continue;
                }
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                let rev = v["revision"].as_i64().unwrap_or(after);
                // "Apply" (parsing the policy stands in for the swap) and report.
                let _: toml::Table =
                    toml::from_str(v["policy"].as_str().unwrap_or("")).unwrap_or_default();
                let _ = client
                    .post(format!("{url}/agent/v1/report"))
                    .json(&json!({"applied_revision": rev, "version": "bench", "health": "ok"}))
                    .send()
                    .await;
                let _ = tx.send((rev, Instant::now()));
                after = rev;
            }
        }));
    }
    drop(tx);
    // Wait for the fleet's first policy.
    let mut seen = 0;
    while seen < a.agents {
        rx.recv().await.unwrap();
        seen += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = ctl.child.id();
    let (cpu0, _) = usage(pid);
    let mut rounds = Vec::new();
    let mut all = Vec::new();
    for round in 0..a.rounds {
        let t = Instant::now();
        let (s, v) = call(
            reqwest::Method::PATCH,
            format!("/api/v1/app-profiles/{profile}"),
            Some(json!({"description": format!("round {round}")})),
        )
        .await;
        assert!(s.is_success(), "{v}");
        let rev = v["revision"].as_i64().unwrap();
        let mut lat = Vec::with_capacity(a.agents);
        while lat.len() < a.agents {
            let (r, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("the fleet takes the change within 60 s")
                .unwrap();
            if r >= rev {
                lat.push(at.duration_since(t).as_secs_f64() * 1000.0);
            }
        }
        all.extend(lat.iter().copied());
        let (p50, p99, max) = (
            pct(&mut lat, 50.0),
            pct(&mut lat, 99.0),
            pct(&mut lat, 100.0),
        );
        eprintln!(
            "{label}: round {round}: change applied by all {}: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
            a.agents
        );
        rounds.push(json!({"p50_ms": p50, "p99_ms": p99, "max_ms": max}));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu1, rss) = usage(pid);

    // The API at 100 requests/s, open loop (each request sent at its time,
    // whatever the others take): reads only while the fleet holds its
    // polls, then reads and conditional writes (1 in 10; each write wakes
    // the whole fleet, so with it attached that would measure the fleet)
    // once the fleet has gone.
    let api = |writes: bool| {
        let http = http.clone();
        let tok = tok.clone();
        let base = ctl.api.clone();
        let profile = profile.clone();
        let n = (a.api_seconds * 100) as usize;
        async move {
            let start = Instant::now();
            let (c0, _) = usage(pid);
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let due = start + Duration::from_millis(10 * i as u64);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(w).await;
                }
                let http = http.clone();
                let tok = tok.clone();
                let base = base.clone();
                let profile = profile.clone();
                handles.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let r = if writes && i % 10 == 9 {
                        http.patch(format!("{base}/api/v1/app-profiles/{profile}"))
                            .bearer_auth(&tok)
                            .json(&json!({"description": format!("api {i}")}))
                            .send()
                            .await
                    } else {
                        let path = match i % 3 {
                            0 => "/api/v1/gateways?limit=50".to_string(),
                            1 => format!("/api/v1/app-profiles/{profile}"),
                            _ => "/api/v1/audit?limit=20".to_string(),
                        };
                        http.get(format!("{base}{path}"))
                            .bearer_auth(&tok)
                            .send()
                            .await
                    };
                    let r = r.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    let _ = r.bytes().await;
                    t.elapsed().as_secs_f64() * 1000.0
                }));
            }
            let mut lat = Vec::with_capacity(n);
            for h in handles {
                lat.push(h.await.unwrap());
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            let (c1, rss) = usage(pid);
            let (p50, p99) = (pct(&mut lat, 50.0), pct(&mut lat, 99.0));
            (rate, p50, p99, c1 - c0, rss)
        }
    };
    let (r1, a50, a99, acpu, arss) = api(false).await;
    eprintln!(
        "{label}: API reads at {r1:.0} req/s with {} agents attached: p50 {a50:.1} ms, p99 {a99:.1} ms",
        a.agents
    );
    for t in tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (r2, b50, b99, bcpu, brss) = api(true).await;
    eprintln!("{label}: API reads and writes at {r2:.0} req/s: p50 {b50:.1} ms, p99 {b99:.1} ms");
    let (p50, p99, max) = (
        pct(&mut all, 50.0),
        pct(&mut all, 99.0),
        pct(&mut all, 100.0),
    );
    json!({
        "store": label,
        "agents": a.agents,
        "rounds": rounds,
        "applied_all_p50_ms": p50,
        "applied_all_p99_ms": p99,
        "applied_all_max_ms": max,
        "enrol_seconds": enrol_secs,
        "controller_cpu_seconds_during_rounds": cpu1 - cpu0,
        "controller_rss_mib": rss,
        "api_reads_with_fleet": {"requests_per_second": r1, "p50_ms": a50, "p99_ms": a99, "controller_cpu_seconds": acpu, "controller_rss_mib": arss},
        "api_mixed_without_fleet": {"requests_per_second": r2, "p50_ms": b50, "p99_ms": b99, "controller_cpu_seconds": bcpu, "controller_rss_mib": brss},
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let mut out = vec![run(&a, "sqlite", None).await];
    if a.postgres {
        let pg = pg::Pg::start();
        let url = pg.database("fleet");
        out.push(run(&a, "postgres", Some(url)).await);
        drop(pg);
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
