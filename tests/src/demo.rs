//! `cargo xtask demo`: builds a lab, shows it, exercises it, tears it down.
//!
//! It starts sluice's edge and gateway with the embedded default
//! configuration ([`crate::deploy`]), sends real traffic (HTTP, ping, a
//! bounded iperf3 run) and prints live counters. Ctrl-C (SIGINT), SIGTERM and SIGHUP set a flag that the demo
//! polls between steps; the lab is then dropped normally, so the teardown is
//! the same as on success. With `SLUICE_DEMO_HOLD=1` the demo keeps the lab
//! up after its checks until one of those signals, for exploring it by hand.

use std::{
    net::IpAddr,
    path::Path,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::bail;

use crate::{
    Host, Lab, addr,
    deploy::{Sluice, sum},
};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the signal handler once per process.
fn install_handler() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst)).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C/SIGTERM handler: {e}"))
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Runs the demo with the `sluice` binary at `sluice_bin`.
///
/// # Errors
/// When an interruption or a check fails; the lab is torn down either way.
pub fn run(sluice_bin: &Path) -> anyhow::Result<()> {
    install_handler()?;
    STOP.store(false, Ordering::SeqCst);
    if !sluice_bin.exists() {
        bail!("sluice binary {} is missing", sluice_bin.display());
    }
    println!("demo: building the lab (Ctrl-C tears it down at any point)");
    let lab = Lab::new();
    print_plan(&lab);
    let result = exercise(&lab, sluice_bin);
    let hold = std::env::var("SLUICE_DEMO_HOLD").is_ok_and(|v| v == "1");
    if hold && !stopped() {
        println!(
            "demo: holding the lab up; try `ip netns exec {} curl http://{}:8080/whoami`. Ctrl-C to tear down.",
            lab.ns(Host::Client),
            addr::TUNNELLED_V4
        );
        while !stopped() {
            thread::sleep(Duration::from_millis(100));
        }
    }
    println!("demo: tearing down");
    drop(lab);
    println!("demo: lab torn down (namespaces, links, processes)");
    result
}

/// The demo proper: sluice up, real traffic, counters. One linear script,
/// read top to bottom.
#[allow(clippy::too_many_lines, reason = "a linear demo script")]
fn exercise(lab: &Lab, bin: &Path) -> anyhow::Result<()> {
    lab.spawn_peer(Host::Inet, "peer", 8080, 9000);
    lab.spawn(Host::Inet, "iperf3", &["iperf3", "-s", "-p", "5201"]);
    lab.wait_tcp(
        Host::Inet,
        "203.0.113.10:5201".parse()?,
        Duration::from_secs(5),
    );
    println!(
        "\ndemo: starting sluice edge (ns edge) and gateway (ns gw) with the embedded default config"
    );
    // The embedded default configuration, plus endpoint mode on the
    // gateway host with one process listed (shown further down).
    let apps = lab.dir().join("apps");
    let listed = vec!["fetch-byname".to_string()];
    let mut s = Sluice::prepare(lab, bin, |t| crate::deploy::with_endpoint(t, &listed));
    s.edit_edge(crate::deploy::edge_with_endpoint);
    s.start_edge();
    s.start_gateway();
    for line in lab.log("gateway").lines().chain(lab.log("edge").lines()) {
        println!("  | {line}");
    }
    let mut failed = 0;

    println!("\ndemo: HTTP from the client (curl), and what the server saw as the source");
    let cases: [(IpAddr, &str, String); 4] = [
        (
            addr::TUNNELLED_V4.into(),
            "tunnelled",
            addr::EDGE_WAN_V4.to_string(),
        ),
        (
            addr::BYPASSED_V4.into(),
            "bypassed ",
            addr::GW_WAN_V4.to_string(),
        ),
        (
            addr::TUNNELLED_V6.into(),
            "tunnelled",
            addr::EDGE_WAN_V6.to_string(),
        ),
        (
            addr::BYPASSED_V6.into(),
            "bypassed ",
            addr::GW_WAN_V6.to_string(),
        ),
    ];
    for (dst, what, expect) in &cases {
        check_stop()?;
        let url = match dst {
            IpAddr::V4(a) => format!("http://{a}:8080/whoami"),
            IpAddr::V6(a) => format!("http://[{a}]:8080/whoami"),
        };
        let out = lab.run(Host::Client, &["curl", "-sS", "--max-time", "5", &url]);
        let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = out.status.success() && seen == *expect;
        failed += usize::from(!ok);
        let via = if what.starts_with('t') {
            "the edge"
        } else {
            "the gateway's WAN"
        };
        println!(
            "  GET {url:<40} {what}: server saw {seen:<16} ({via}) {}",
            if ok { "ok" } else { "UNEXPECTED" }
        );
    }

    println!(
        "\ndemo: why (sluice policy explain --live: the running gateway's policy, for a flow from the client)"
    );
    let conf = s.conf_dir().join("gateway.toml");
    let conf = conf.to_string_lossy();
    let bin_s = bin.to_string_lossy();
    let client = addr::CLIENT_V4.to_string();
    for (dst, expect) in [
        (addr::TUNNELLED_V4, "outcome:  tunnel (internet)"),
        (addr::BYPASSED_V4, "outcome:  direct"),
    ] {
        check_stop()?;
        let dst = dst.to_string();
        let argv = [
            &*bin_s, "policy", "explain", "--config", &conf, "--live", "--src", &client, "--dst",
            &dst, "--dport", "8080",
        ];
        let out = lab.run(Host::Gw, &argv);
        let text = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && text.lines().any(|l| l.starts_with(expect));
        failed += usize::from(!ok);
        println!(
            "  $ sluice policy explain --live --src {client} --dst {dst} --dport 8080{}",
            if ok { "" } else { "   UNEXPECTED" }
        );
        for line in text
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            println!("  | {line}");
        }
    }

    println!(
        "\ndemo: process bypass (endpoint mode on the gateway host; config: processes = [\"fetch-byname\"])"
    );
    let curl_bin = std::fs::canonicalize("/usr/bin/curl")?;
    for name in ["fetch-byname", "fetch-plain"] {
        check_stop()?;
        let exe = apps.join("bin").join(name);
        std::fs::create_dir_all(exe.parent().expect("has a parent"))?;
        std::fs::copy(&curl_bin, &exe)?;
        let url = format!("http://{}:8080/whoami", addr::BY_DOMAIN_V4);
        let out = lab.run(
            Host::Gw,
            &[&exe.to_string_lossy(), "-sS", "--max-time", "5", &url],
        );
        let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (expect, what) = if name == "fetch-byname" {
            (addr::GW_WAN_V4.to_string(), "listed:   direct")
        } else {
            (addr::EDGE_WAN_V4.to_string(), "unlisted: tunnelled")
        };
        let ok = seen == expect;
        failed += usize::from(!ok);
        println!(
            "  {name} (a copy of curl) on the gateway host, GET {url}: {what}, server saw {seen:<16} {}",
            if ok { "ok" } else { "UNEXPECTED" }
        );
    }
    for line in lab
        .log("gateway")
        .lines()
        .filter(|l| l.contains("bypasses the tunnel") || l.contains("endpoint mode:"))
    {
        println!("  | {line}");
    }

    println!("\ndemo: domain bypass (config: domains = [\"*.bypass.example\"]; dnsmasq in inet)");
    lab.spawn_dns("dnsmasq", 30);
    let by_domain = format!("http://{}:8080/whoami", addr::BY_DOMAIN_V4);
    let whoami = || {
        let out = lab.run(
            Host::Client,
            &["curl", "-sS", "--max-time", "5", &by_domain],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let steps: [(&str, Option<&str>, String); 2] = [
        ("before any DNS answer", None, addr::EDGE_WAN_V4.to_string()),
        (
            "after `dig app.bypass.example`",
            Some("app.bypass.example"),
            addr::GW_WAN_V4.to_string(),
        ),
    ];
    for (when, name, expect) in &steps {
        check_stop()?;
        if let Some(n) = name {
            let answer = lab.dig(Host::Client, addr::DNS_V4.into(), n, false);
            println!("  dig @{} {n}: {}", addr::DNS_V4, answer.trim());
        }
        let seen = whoami();
        let ok = seen == *expect;
        failed += usize::from(!ok);
        println!(
            "  GET {by_domain:<40} {when}: server saw {seen:<16} {}",
            if ok { "ok" } else { "UNEXPECTED" }
        );
    }
    for line in lab
        .log("gateway")
        .lines()
        .filter(|l| l.contains("domain bypass"))
    {
        println!("  | {line}");
    }

    println!("\ndemo: ping from the client");
    for (dst, what, _) in &cases {
        check_stop()?;
        let ok = lab.ping(Host::Client, *dst);
        failed += usize::from(!ok);
        println!(
            "  ping {dst:<20} {what}: {}",
            if ok { "answered" } else { "NO ANSWER" }
        );
    }

    for (dst, what) in [
        (addr::TUNNELLED_V4, "tunnelled"),
        (addr::BYPASSED_V4, "bypassed"),
    ] {
        check_stop()?;
        println!("\ndemo: iperf3 TCP, 3 s, client -> {dst} ({what}); live counters every second:");
        let stop_live = AtomicBool::new(false);
        let result = thread::scope(|sc| {
            sc.spawn(|| {
                while !stop_live.load(Ordering::SeqCst) && !stopped() {
                    thread::sleep(Duration::from_secs(1));
                    let m = s.gateway_metrics();
                    println!(
                        "  [live] xdp tunnel={} bypass={} pass={} drop={} | tunnel tx={} rx={} pkts",
                        sum(&m, "sluice_xdp_packets_total", "verdict=\"tunnel\""),
                        sum(&m, "sluice_xdp_packets_total", "verdict=\"bypass\""),
                        sum(&m, "sluice_xdp_packets_total", "verdict=\"pass_"),
                        sum(&m, "sluice_xdp_packets_total", "verdict=\"drop_"),
                        sum(&m, "sluice_gateway_tunnel_tx_packets_total", ""),
                        sum(&m, "sluice_gateway_tunnel_rx_packets_total", ""),
                    );
                }
            });
            let dst = dst.to_string();
            let out = lab.run_timeout(
                Host::Client,
                &["iperf3", "-c", &dst, "-p", "5201", "-t", "3", "-J"],
                Duration::from_secs(15),
            );
            stop_live.store(true, Ordering::SeqCst);
            out
        });
        let gbps = serde_json::from_slice::<serde_json::Value>(&result.stdout)
            .ok()
            .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64())
            .map(|b| b / 1e9);
        if let Some(g) = gbps {
            println!("  iperf3 {what}: {g:.2} Gbit/s received");
        } else {
            failed += 1;
            println!(
                "  iperf3 {what}: FAILED: {}",
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
    }

    println!("\ndemo: what the server in inet saw (requests by source address)");
    let mut by_src: Vec<(String, usize)> = Vec::new();
    for l in lab.log("peer").lines().filter(|l| l.starts_with("http ")) {
        let src = l.split_whitespace().nth(1).unwrap_or("?").to_string();
        match by_src.iter_mut().find(|(s, _)| *s == src) {
            Some((_, n)) => *n += 1,
            None => by_src.push((src, 1)),
        }
    }
    for (src, n) in &by_src {
        println!("  {src:<16} {n} request(s)");
    }

    println!("\ndemo: final counters");
    let g = s.gateway_metrics();
    for ctr in [
        "tunnel",
        "bypass",
        "pass_arp",
        "pass_neighbor",
        "pass_local",
        "pass_multicast",
        "drop_no_socket",
    ] {
        println!(
            "  xdp {ctr:<16} {}",
            sum(
                &g,
                "sluice_xdp_packets_total",
                &format!("verdict=\"{ctr}\"")
            )
        );
    }
    for (name, label) in [
        (
            "sluice_gateway_tunnel_tx_packets_total",
            "gateway -> tunnel packets",
        ),
        (
            "sluice_gateway_tunnel_rx_packets_total",
            "tunnel -> LAN packets",
        ),
        (
            "sluice_gateway_drop_tunnel_down_total",
            "dropped, tunnel down",
        ),
    ] {
        println!("  {label:<28} {}", sum(&g, name, ""));
    }
    let e = s.edge_metrics();
    println!(
        "  edge: to kernel {} pkts, to tunnel {} pkts, spoofed drops {}",
        sum(&e, "sluice_edge_to_kernel_packets_total", ""),
        sum(&e, "sluice_edge_to_tunnel_packets_total", ""),
        sum(&e, "sluice_edge_drops_total", "reason=\"spoofed\"")
    );
    let leaks = lab.nft_counter(crate::counter::GW_TO_TUNNELLED_V4)
        + lab.nft_counter(crate::counter::GW_TO_TUNNELLED_V6);
    println!("  packets for the tunnelled server that left the gateway directly: {leaks}");
    failed += usize::from(leaks != 0);
    if failed > 0 {
        bail!(
            "{failed} demo check(s) gave an unexpected result; logs in {}",
            lab.dir().display()
        );
    }
    println!("\ndemo: all checks ok");
    Ok(())
}

fn check_stop() -> anyhow::Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

fn print_plan(lab: &Lab) {
    println!("demo: namespaces");
    for h in Host::ALL {
        println!("  {h:<6} {}", lab.ns(h));
    }
    println!("demo: address plan");
    println!(
        "  client eth0  {}/24 {}/64  default via {} / {}",
        addr::CLIENT_V4,
        addr::CLIENT_V6,
        addr::GW_LAN_V4,
        addr::GW_LAN_V6
    );
    println!(
        "  gw     lan0  {}/24 {}/64",
        addr::GW_LAN_V4,
        addr::GW_LAN_V6
    );
    println!(
        "  gw     wan0  {}/30 {}/64  default via {} / {}; masquerades the LAN",
        addr::GW_WAN_V4,
        addr::GW_WAN_V6,
        addr::INET_GW_SIDE_V4,
        addr::INET_GW_SIDE_V6
    );
    println!(
        "  edge   wan0  {}/30 {}/64  default via {} / {}",
        addr::EDGE_WAN_V4,
        addr::EDGE_WAN_V6,
        addr::INET_EDGE_SIDE_V4,
        addr::INET_EDGE_SIDE_V6
    );
    println!(
        "  inet   gw0   {}/30 {}/64",
        addr::INET_GW_SIDE_V4,
        addr::INET_GW_SIDE_V6
    );
    println!(
        "  inet   edge0 {}/30 {}/64",
        addr::INET_EDGE_SIDE_V4,
        addr::INET_EDGE_SIDE_V6
    );
    println!(
        "  inet   srv0  tunnelled {} {}, bypassed {} {}; no route to the LAN",
        addr::TUNNELLED_V4,
        addr::TUNNELLED_V6,
        addr::BYPASSED_V4,
        addr::BYPASSED_V6
    );
    println!("  logs and configs in {}", lab.dir().display());
}
