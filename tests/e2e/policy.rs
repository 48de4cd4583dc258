//! The policy model in the lab: two LAN clients in different groups get
//! different verdicts for the same destination; switching the
//! private-access tenant moves traffic from one tenant's edge to the
//! other's; trusted-network detection flips the action when its criteria
//! change; a full stream survives hundreds of policy swaps with zero loss
//! and zero misclassified packets; `sluice policy explain`, `reload` and
//! `tenant` from the command line.
use std::{net::IpAddr, time::Duration};

use sluice_lab::{
    Host, Lab, addr, counter,
    deploy::{GATEWAY_METRICS, GATEWAY_TOML, Sluice, metrics_text, sum},
    require_root,
};

use super::{HTTP, UDP, bin, curl_in, logs, url};

/// A second LAN client: another address on the client namespace.
const BOB_V4: &str = "192.0.2.11";

/// The gateway's default file with its `[bypass]` lists replaced by
/// `policy` (with profiles, the lists belong in them).
fn with_policy(gateway_toml: &str, policy: &str) -> String {
    let head = gateway_toml
        .split("[bypass]")
        .next()
        .expect("the default file has a [bypass] section");
    format!("{head}{policy}")
}

/// What the server at `dst` saw as our address, from client address `src`.
fn whoami(lab: &Lab, src: &str, dst: impl Into<IpAddr>) -> String {
    curl_in(
        lab,
        Host::Client,
        &["--interface", src, &url(dst, "/whoami")],
    )
    .trim()
    .to_string()
}

/// `sluice <args>` in `h`; stdout, or a panic with stderr.
fn sluice(lab: &Lab, h: Host, args: &[&str]) -> String {
    let b = bin().to_string_lossy().into_owned();
    let mut argv = vec![b.as_str()];
    argv.extend_from_slice(args);
    let out = lab.run(h, &argv);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gw_metric(lab: &Lab, name: &str, label: &str) -> u64 {
    sum(&metrics_text(lab, Host::Gw, GATEWAY_METRICS), name, label)
}

const GROUPS: &str = r#"
[[identity]]
source = "192.0.2.10"
user = "alice"
groups = ["ALICE_GROUP"]

[[identity]]
source = "192.0.2.11"
user = "bob"
groups = ["BOB_GROUP"]
device = "bob-laptop"

[[rule]]
group = "engineering"
profile = "engineering"

[[rule]]
group = "sales"
profile = "sales"

# engineering: everything through the tunnel (the defaults).
[[profile]]
name = "engineering"

# sales: the lab's "tunnelled" server goes direct.
[[profile]]
name = "sales"
exclude = ["203.0.113.10/32", "2001:db8:100::10/128"]

[[profile]]
name = "default"
"#;

fn groups(alice: &str, bob: &str) -> String {
    GROUPS
        .replace("ALICE_GROUP", alice)
        .replace("BOB_GROUP", bob)
}

#[test]
fn groups_choose_profiles_and_a_reload_swaps_them() {
    if !require_root("groups_choose_profiles_and_a_reload_swaps_them") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    lab.run_ok(
        Host::Client,
        &["ip", "addr", "add", &format!("{BOB_V4}/24"), "dev", "eth0"],
    );
    let mut s = Sluice::prepare(&lab, bin(), |t| {
        with_policy(t, &groups("engineering", "sales"))
    });
    s.start_edge();
    s.start_gateway();
    let edge = addr::EDGE_WAN_V4.to_string();
    let direct = addr::GW_WAN_V4.to_string();
    let alice = addr::CLIENT_V4.to_string();
    // The same destination, two verdicts.
    assert_eq!(
        whoami(&lab, &alice, addr::TUNNELLED_V4),
        edge,
        "alice (engineering)\n{}",
        logs(&lab)
    );
    assert_eq!(
        whoami(&lab, BOB_V4, addr::TUNNELLED_V4),
        direct,
        "bob (sales)\n{}",
        logs(&lab)
    );
    // explain, offline and live, says why.
    let cfg = s.conf_dir().join("gateway.toml");
    let cfg = cfg.to_string_lossy();
    let dst = addr::TUNNELLED_V4.to_string();
    let args = [
        "policy", "explain", "--config", &cfg, "--src", BOB_V4, "--dst", &dst,
    ];
    let offline = sluice(&lab, Host::Gw, &[&args[..], &["--dport", "8080"]].concat());
    let live = sluice(
        &lab,
        Host::Gw,
        &[&args[..], &["--dport", "8080", "--live"]].concat(),
    );
    for text in [&offline, &live] {
        for want in [
            "user `bob` (groups: sales; device `bob-laptop`)",
            "rule[1] (group `sales` -> profile `sales`)",
            "exclude[9] 203.0.113.10/32 is the best match",
            "outcome:  direct",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
    // Reload with the groups swapped: the verdicts follow.
    let gw_toml = s.conf_dir().join("gateway.toml");
    let text = GATEWAY_TOML;
    std::fs::write(&gw_toml, with_policy(text, &groups("sales", "engineering"))).unwrap();
    let out = sluice(&lab, Host::Gw, &["policy", "reload", "--config", &cfg]);
    assert!(out.contains("generation 2 in force"), "{out}");
    assert_eq!(
        whoami(&lab, &alice, addr::TUNNELLED_V4),
        direct,
        "alice now sales"
    );
    assert_eq!(
        whoami(&lab, BOB_V4, addr::TUNNELLED_V4),
        edge,
        "bob now engineering"
    );
    // An invalid file: the CLI refuses it with its line and field, and a
    // SIGHUP makes the gateway refuse it too; the running policy stays.
    std::fs::write(
        &gw_toml,
        with_policy(text, &groups("sales", "engineering")).replace(
            "name = \"sales\"\nexclude",
            "name = \"sales\"\nfail = \"sometimes\"\nexclude",
        ),
    )
    .unwrap();
    let b = bin().to_string_lossy().into_owned();
    let bad = lab.run(Host::Gw, &[&b, "policy", "reload", "--config", &cfg]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "an invalid reload was accepted");
    assert!(
        err.contains("profile[1].fail") && err.contains("\"closed\" or \"open\""),
        "{err}"
    );
    lab.signal(s.gateway.expect("gateway"), libc::SIGHUP);
    lab.wait_for(
        "the gateway to refuse the reload",
        Duration::from_secs(5),
        || gw_metric(&lab, "sluice_policy_refused_total", "") == 1,
    );
    assert_eq!(gw_metric(&lab, "sluice_policy_generation", ""), 2);
    assert_eq!(whoami(&lab, &alice, addr::TUNNELLED_V4), direct, "kept");
    assert!(lab.log("gateway").contains("profile[1].fail"));
    // Nothing reached the internet with a LAN source.
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
}

const TENANTS: &str = r#"
[policy]
private_tenant = "corp"

[[profile]]
name = "default"

# corp's private app is served by the main edge; partner's (the same
# address, another organisation) by the partner's edge in gw2.
[[tenant]]
name = "corp"
edge = "198.51.100.5:4443"
server_name = "edge.sluice.test"
ca = "ca.pem"
cert = "branch-1.pem"
key = "branch-1.key"
segments = ["203.0.113.10/32"]

[[tenant]]
name = "partner"
edge = "198.51.100.9:4443"
server_name = "edge.sluice.test"
ca = "ca.pem"
cert = "branch-1.pem"
key = "branch-1.key"
segments = ["203.0.113.10/32"]
"#;

#[test]
fn switching_the_private_tenant_moves_traffic_to_its_edge() {
    if !require_root("switching_the_private_tenant_moves_traffic_to_its_edge") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), |t| with_policy(t, TENANTS));
    // The partner's edge: another sluice edge, in gw2 (reached across
    // inet), serving this branch's LAN.
    let conf = s.conf_dir().to_path_buf();
    let edge_toml = std::fs::read_to_string(conf.join("edge.toml")).unwrap();
    let partner = edge_toml
        .replace("name = \"edge-1\"", "name = \"edge-partner\"")
        .replace(
            "client_prefixes = [\"192.0.2.0/24\", \"2001:db8:1::/64\", \"198.18.2.0/24\", \"2001:db8:12::/64\"]",
            "client_prefixes = [\"192.0.2.0/24\", \"2001:db8:1::/64\"]",
        );
    std::fs::write(conf.join("edge-partner.toml"), partner).unwrap();
    let b = bin().to_string_lossy().into_owned();
    let pcfg = conf
        .join("edge-partner.toml")
        .to_string_lossy()
        .into_owned();
    lab.spawn_env(
        Host::Gw2,
        "edge-partner",
        &[&b, "edge", "--config", &pcfg],
        &[("RUST_LOG", "info")],
    );
    lab.wait_tcp(
        Host::Gw2,
        "198.51.100.9:4443".parse().unwrap(),
        Duration::from_secs(10),
    );
    s.start_edge();
    s.start_gateway();
    lab.wait_for("every tenant tunnel up", Duration::from_secs(15), || {
        ["corp", "partner"]
            .iter()
            .all(|t| gw_metric(&lab, "sluice_tenant_tunnel_up", &format!("tenant=\"{t}\"")) > 0)
    });
    let cfg = conf.join("gateway.toml").to_string_lossy().into_owned();
    let client = addr::CLIENT_V4.to_string();
    let tx = |t: &str| {
        gw_metric(
            &lab,
            "sluice_tenant_tx_packets_total",
            &format!("tenant=\"{t}\""),
        )
    };
    // corp is on: its segment goes to corp's edge.
    let (corp0, partner0) = (tx("corp"), tx("partner"));
    assert_eq!(
        whoami(&lab, &client, addr::TUNNELLED_V4),
        addr::EDGE_WAN_V4.to_string(),
        "corp on\n{}",
        logs(&lab)
    );
    assert!(tx("corp") > corp0);
    assert_eq!(tx("partner"), partner0);
    // Internet traffic stays on the internet tunnel.
    let internet0 = tx("internet");
    assert_eq!(
        whoami(&lab, &client, addr::BYPASSED_V4),
        addr::EDGE_WAN_V4.to_string()
    );
    assert!(tx("internet") > internet0);
    // Switch partner on: new flows go to the partner's edge at once.
    let out = sluice(
        &lab,
        Host::Gw,
        &["policy", "tenant", "--config", &cfg, "partner"],
    );
    assert!(out.contains("tenant partner switched on"), "{out}");
    assert_eq!(
        gw_metric(&lab, "sluice_private_tenant_on", "tenant=\"partner\""),
        1
    );
    assert_eq!(
        gw_metric(&lab, "sluice_private_tenant_on", "tenant=\"corp\""),
        0
    );
    let (corp1, partner1) = (tx("corp"), tx("partner"));
    assert_eq!(
        whoami(&lab, &client, addr::TUNNELLED_V4),
        addr::GW2_WAN_V4.to_string(),
        "partner on\n{}\n--- partner edge ---\n{}",
        logs(&lab),
        lab.log("edge-partner")
    );
    assert!(tx("partner") > partner1);
    assert_eq!(tx("corp"), corp1, "corp is off: nothing more to it");
    let status = sluice(&lab, Host::Gw, &["policy", "status", "--config", &cfg]);
    assert!(
        status.contains("private-access tenant on: partner"),
        "{status}"
    );
    // An unknown tenant is refused; the switch stands.
    let bad = lab.run(
        Host::Gw,
        &[&b, "policy", "tenant", "--config", &cfg, "nobody"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("corp, partner"));
    // And back.
    sluice(
        &lab,
        Host::Gw,
        &["policy", "tenant", "--config", &cfg, "corp"],
    );
    assert_eq!(
        whoami(&lab, &client, addr::TUNNELLED_V4),
        addr::EDGE_WAN_V4.to_string()
    );
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
}

const TRUSTED: &str = r#"
[[profile]]
name = "default"

# On the trusted network (this host holds an address in 198.51.100.200/29)
# internet traffic goes direct; off it, through the tunnel.
[forwarding]
networks = ["198.51.100.200/29"]
on_trusted = "direct"
interval_secs = 3600
"#;

#[test]
fn trusted_network_detection_flips_the_action() {
    if !require_root("trusted_network_detection_flips_the_action") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), |t| with_policy(t, TRUSTED));
    s.start_edge();
    s.start_gateway();
    let cfg = s.conf_dir().join("gateway.toml");
    let cfg = cfg.to_string_lossy().into_owned();
    let client = addr::CLIENT_V4.to_string();
    let status = || sluice(&lab, Host::Gw, &["policy", "status", "--config", &cfg]);
    assert!(status().contains("network: off-trusted"), "{}", status());
    assert_eq!(
        whoami(&lab, &client, addr::TUNNELLED_V4),
        addr::EDGE_WAN_V4.to_string(),
        "off the trusted network: tunnelled"
    );
    // The criterion becomes true: an address change, noticed through
    // netlink (the interval is an hour).
    lab.run_ok(
        Host::Gw,
        &["ip", "addr", "add", "198.51.100.201/32", "dev", "lo"],
    );
    lab.wait_for("on-trusted", Duration::from_secs(5), || {
        status().contains("network: on-trusted")
    });
    let direct0 = gw_metric(
        &lab,
        "sluice_xdp_packets_total",
        "verdict=\"direct_network\"",
    );
    assert_eq!(
        whoami(&lab, &client, addr::TUNNELLED_V4),
        addr::GW_WAN_V4.to_string(),
        "on the trusted network: direct\n{}",
        logs(&lab)
    );
    assert!(
        gw_metric(
            &lab,
            "sluice_xdp_packets_total",
            "verdict=\"direct_network\""
        ) > direct0
    );
    assert!(
        metrics_text(&lab, Host::Gw, GATEWAY_METRICS)
            .contains("sluice_network_state{state=\"on-trusted\"} 1")
    );
    assert!(lab.log("gateway").contains("network on-trusted"));
    // And back.
    lab.run_ok(
        Host::Gw,
        &["ip", "addr", "del", "198.51.100.201/32", "dev", "lo"],
    );
    lab.wait_for("off-trusted", Duration::from_secs(5), || {
        status().contains("network: off-trusted")
    });
    assert_eq!(
        whoami(&lab, &client, addr::TUNNELLED_V4),
        addr::EDGE_WAN_V4.to_string()
    );
}

/// Two policies that tunnel alice's stream by different paths (her
/// profile is index 0 in A, index 1 in B; the other index sends the
/// stream's destination direct): a frame classified by a mix of the two
/// would leave the gateway directly, and the nftables counter on `inet`
/// would see it.
fn mix_pair(flip: bool) -> String {
    let tunnel = "[[profile]]\nname = \"tunnel\"\n";
    let direct = "[[profile]]\nname = \"direct\"\nexclude = [\"203.0.113.10/32\"]\n";
    let (first, second) = if flip {
        (direct, tunnel)
    } else {
        (tunnel, direct)
    };
    format!(
        "[policy]\ndefault_profile = \"direct\"\n\n[[identity]]\nsource = \"192.0.2.10\"\nuser = \"alice\"\ngroups = [\"g\"]\n\n[[rule]]\ngroup = \"g\"\nprofile = \"tunnel\"\n\n{first}\n{second}"
    )
}

/// UDP datagrams dropped for want of receive-buffer room in `inet`.
fn udp_rcvbuf_errors(lab: &Lab) -> u64 {
    let snmp = lab.run_ok(Host::Inet, &["cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no RcvbufErrors in:\n{names}\n{values}"))
}

/// Parses a `Duration`'s `Debug` text (`850µs`, `1.2ms`, `3s`).
fn debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => v / 1e9,
        "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

#[test]
fn a_stream_survives_hundreds_of_swaps_without_loss_or_mix() {
    if !require_root("a_stream_survives_hundreds_of_swaps_without_loss_or_mix") {
        return;
    }
    let lab = Lab::new();
    let mut s = Sluice::prepare(&lab, bin(), |t| with_policy(t, &mix_pair(false)));
    s.start_edge();
    s.start_gateway();
    let base = GATEWAY_TOML;
    let server = lab.spawn(
        Host::Inet,
        "iperf3",
        // Bound to the server address: replies to the UDP stream must come
        // from the address the stream went to (the edge's NAT matches on it).
        &[
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
            "-B",
            "203.0.113.10",
            "-J",
        ],
    );
    lab.wait_tcp(
        Host::Inet,
        "203.0.113.10:5201".parse().unwrap(),
        Duration::from_secs(10),
    );
    let before = |name: &str, label: &str| gw_metric(&lab, name, label);
    let xdp_tunnel0 = before("sluice_xdp_packets_total", "verdict=\"tunnel\"");
    let edge0 = s.edge_metric("sluice_edge_to_kernel_packets_total", "");
    let rcvbuf0 = udp_rcvbuf_errors(&lab);
    let tx0 = before("sluice_gateway_tunnel_tx_packets_total", "");
    // A bounded stream: 100 000 datagrams of 1200 bytes at 200 Mbit/s
    // (about 5 s), while the policy flips between A and B.
    let client = lab.spawn(
        Host::Client,
        "iperf3-client",
        &[
            "iperf3",
            "-c",
            "203.0.113.10",
            "-p",
            "5201",
            "-u",
            "-b",
            "200M",
            "-l",
            "1200",
            "-k",
            "100000",
            "-J",
        ],
    );
    // Swap A and B for as long as the stream runs (until the client is a
    // zombie): a shell loop in the gateway's namespace, one `curl` per
    // swap.
    let conf = s.conf_dir().to_path_buf();
    std::fs::write(conf.join("a.toml"), with_policy(base, &mix_pair(false))).unwrap();
    std::fs::write(conf.join("b.toml"), with_policy(base, &mix_pair(true))).unwrap();
    let script = format!(
        "cd {dir} && while grep -qv ') Z' /proc/{pid}/stat 2>/dev/null; do \
           for p in b a; do cp $p.toml gateway.toml && \
             curl -sS --fail --max-time 5 -X POST http://127.0.0.1:9477/policy/reload >> swaps.log || exit 1; \
           done; done",
        dir = conf.display(),
        pid = lab.pid(client)
    );
    let out = lab.run_timeout(Host::Gw, &["sh", "-c", &script], Duration::from_secs(60));
    let log = std::fs::read_to_string(conf.join("swaps.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "swap loop: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut totals: Vec<Duration> = log
        .lines()
        .filter_map(|l| {
            l.split_once('(')?
                .1
                .split_once(')')
                .and_then(|(d, _)| debug_duration(d))
        })
        .collect();
    let swaps = u32::try_from(totals.len()).unwrap_or(u32::MAX);
    let status = lab.wait_exit(client, Duration::from_secs(30));
    assert!(
        status.success(),
        "iperf3 client: {}",
        lab.log("iperf3-client")
    );
    // The server writes its report when the test ends (one test, `-1`).
    lab.wait_exit(server, Duration::from_secs(10));
    let report: serde_json::Value = serde_json::from_str(&lab.log("iperf3"))
        .unwrap_or_else(|e| panic!("iperf3 server JSON: {e}\n{}", lab.log("iperf3")));
    let end = &report["end"];
    let sum_ = if end["sum"]["packets"].is_u64() {
        &end["sum"]
    } else {
        &end["sum_received"]
    };
    assert!(
        sum_["packets"].is_u64(),
        "iperf3 server JSON without packet counts: {}\n--- server ---\n{}\n--- client ---\n{}",
        serde_json::to_string(end).unwrap_or_default(),
        lab.log("iperf3"),
        lab.log("iperf3-client")
    );
    let (lost, packets) = (
        sum_["lost_packets"].as_u64().unwrap_or(u64::MAX),
        sum_["packets"].as_u64().unwrap_or(0),
    );
    totals.sort();
    let pct = |p: usize| totals[(totals.len() - 1) * p / 100];
    println!(
        "{swaps} swaps during the stream; swap (compile + write idle slot + flip) p50 {:?}, p99 {:?}, max {:?}; iperf3 server: {packets} datagrams counted, {lost} lost",
        pct(50),
        pct(99),
        totals.last().unwrap()
    );
    let edge_in = s.edge_metric("sluice_edge_to_kernel_packets_total", "") - edge0;
    let rcvbuf = udp_rcvbuf_errors(&lab) - rcvbuf0;
    let xdp_tunnel = before("sluice_xdp_packets_total", "verdict=\"tunnel\"") - xdp_tunnel0;
    let tx = before("sluice_gateway_tunnel_tx_packets_total", "") - tx0;
    println!(
        "frames tunnelled by the classifier {xdp_tunnel}, sent into the tunnel {tx}, delivered by the edge {edge_in}; datagrams the server's socket had no room for {rcvbuf}"
    );
    assert!(swaps >= 100, "only {swaps} swaps during the stream");
    // Misclassified: a mix would have sent the stream direct.
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V4),
        0,
        "mixed verdicts"
    );
    // Lost: every frame the classifier tunnelled went into the tunnel and
    // out of the edge (the stream and its control connection: nothing
    // else is tunnelled meanwhile). What iperf3 counts as lost beyond that
    // is the receiving socket's overflow on this 2-core machine (the swap
    // loop competes for the CPU), not the swaps: it is all accounted for
    // by the kernel's receive-buffer errors.
    assert!(xdp_tunnel >= 100_000, "{xdp_tunnel} frames tunnelled");
    assert_eq!(tx, xdp_tunnel, "frames tunnelled vs sent into the tunnel");
    assert_eq!(
        edge_in, xdp_tunnel,
        "frames tunnelled vs delivered by the edge"
    );
    assert!(
        lost <= rcvbuf,
        "{lost} datagrams lost, {rcvbuf} receive-buffer errors\n{}",
        logs(&lab)
    );
    for drop in [
        "sluice_gateway_drop_tunnel_down_total",
        "sluice_gateway_drop_backpressure_total",
        "sluice_gateway_drop_no_verdict_total",
        "sluice_gateway_drop_malformed_total",
    ] {
        assert_eq!(before(drop, ""), 0, "{drop}");
    }
    for verdict in [
        "drop_no_meta",
        "drop_no_socket",
        "bypass",
        "direct_network",
        "direct_fail_open",
    ] {
        assert_eq!(
            before(
                "sluice_xdp_packets_total",
                &format!("verdict=\"{verdict}\"")
            ),
            0,
            "{verdict}"
        );
    }
    assert_eq!(before("sluice_policy_generation", ""), u64::from(swaps) + 1);
}
