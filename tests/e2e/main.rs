//! End-to-end tests: sluice's gateway and edge in a four-namespace lab, real
//! packets through the real kernel (XDP, `AF_XDP`, TUN, NAT), real peers
//! (curl, ping, a Python HTTP/UDP server).
//!
//! Each test builds its own lab (unique names, torn down on drop, also on
//! panic). Under `CI=true` a test that cannot run as root fails.
use std::{net::SocketAddr, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

mod admin;
mod appliance;
mod capabilities;
mod controller;
mod datagram;
mod edge;
mod edge_cores;
mod endpoint;
mod failover;
mod faults;
mod fragments;
mod neighbors;
mod pmtu;
mod policy;
mod vlan;

use sluice_lab::{
    Host, Lab, addr, counter,
    deploy::{Sluice, metrics_text, sum},
    require_root,
};

const HTTP: u16 = 8080;
const UDP: u16 = 9000;
const SIGKILL: i32 = 9;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A lab with sluice running and the peer server up in `inet`.
fn setup(lab: &Lab) -> Sluice<'_> {
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    Sluice::start(lab, bin())
}

fn url(ip: impl Into<std::net::IpAddr>, path: &str) -> String {
    match ip.into() {
        std::net::IpAddr::V4(a) => format!("http://{a}:{HTTP}{path}"),
        std::net::IpAddr::V6(a) => format!("http://[{a}]:{HTTP}{path}"),
    }
}

fn curl(lab: &Lab, args: &[&str]) -> String {
    curl_in(lab, Host::Client, args)
}

/// `curl --fail` from `h`; panics with both sluice logs if it fails.
fn curl_in(lab: &Lab, h: Host, args: &[&str]) -> String {
    let mut cmd = vec!["curl", "-sS", "--fail", "--max-time", "10"];
    cmd.extend_from_slice(args);
    let out = lab.run(h, &cmd);
    assert!(
        out.status.success(),
        "{cmd:?} from {h} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs(lab)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Logs and metrics of both sluice processes, for failure messages.
fn logs(lab: &Lab) -> String {
    let metrics = |h: Host, url: &str| {
        metrics_text(lab, h, url)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "--- gateway log ---\n{}\n--- gateway metrics (non-zero) ---\n{}\n--- edge log ---\n{}\n--- edge metrics (non-zero) ---\n{}",
        lab.log("gateway"),
        metrics(Host::Gw, sluice_lab::deploy::GATEWAY_METRICS),
        lab.log("edge"),
        metrics(Host::Edge, sluice_lab::deploy::EDGE_METRICS),
    )
}

#[test]
fn http_is_tunnelled_or_bypassed_by_destination_v4_and_v6() {
    if !require_root("http_is_tunnelled_or_bypassed_by_destination_v4_and_v6") {
        return;
    }
    let lab = Lab::new();
    let s = setup(&lab);
    let cases: [(std::net::IpAddr, String, &str); 4] = [
        (
            addr::TUNNELLED_V4.into(),
            addr::EDGE_WAN_V4.to_string(),
            "tunnelled v4",
        ),
        (
            addr::BYPASSED_V4.into(),
            addr::GW_WAN_V4.to_string(),
            "bypassed v4",
        ),
        (
            addr::TUNNELLED_V6.into(),
            addr::EDGE_WAN_V6.to_string(),
            "tunnelled v6",
        ),
        (
            addr::BYPASSED_V6.into(),
            addr::GW_WAN_V6.to_string(),
            "bypassed v6",
        ),
    ];
    for (dst, expect, what) in cases {
        let seen = curl(&lab, &[&url(dst, "/whoami")]);
        assert_eq!(
            seen.trim(),
            expect,
            "{what}: the server saw {seen:?}\n{}",
            logs(&lab)
        );
    }
    // The classifier and the workers agree with what the server saw.
    assert!(s.gateway_metric("sluice_xdp_packets_total", "verdict=\"tunnel\"") > 0);
    assert!(s.gateway_metric("sluice_xdp_packets_total", "verdict=\"bypass\"") > 0);
    assert!(s.gateway_metric("sluice_gateway_tunnel_tx_packets_total", "") > 0);
    assert!(s.gateway_metric("sluice_gateway_tunnel_rx_packets_total", "") > 0);
    assert!(s.edge_metric("sluice_edge_to_kernel_packets_total", "") > 0);
    // Nothing for the tunnelled server ever left the gateway directly, and
    // nothing reached the internet with a LAN source address.
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V6), 0);
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V6), 0);
    assert!(lab.nft_counter(counter::EDGE_TO_TUNNELLED_V4) > 0);
    assert!(lab.nft_counter(counter::GW_TO_BYPASSED_V4) > 0);
}

/// Uploads 4 MB of varied bytes to the peer at `dst` through the tunnel
/// and checks that they arrive unchanged (SHA-256 at the server), from the
/// edge's address, and merged by the edge's GRO on the way.
fn upload_checked(lab: &Lab, s: &Sluice<'_>, dst: std::net::IpAddr) {
    // Upload: 4 MB from the client; the server reports what it got.
    // Varied bytes, so that a segment merged out of order, twice or
    // with a wrong offset by the edge's GRO would change the digest.
    let body = lab.dir().join("upload.bin");
    let mut rng = sluice_core::testutil::XorShift::new(0x5eed);
    let bytes: Vec<u8> = (0..4_000_000).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&body, bytes).unwrap();
    let data = format!("@{}", body.display());
    let merged_before = s.edge_metric("sluice_edge_gro_merged_packets_total", "");
    let got = curl(lab, &["--data-binary", &data, &url(dst, "/sink")]);
    let mut words = got.split_whitespace();
    assert_eq!(
        words.next(),
        Some(if dst.is_ipv4() {
            "198.51.100.5"
        } else {
            "2001:db8:3::5"
        })
    );
    assert_eq!(
        words.next(),
        Some("4000000"),
        "upload to {dst}: {got:?}\n{}",
        logs(lab)
    );
    assert_eq!(
        words.next(),
        Some(sluice_lab::sha256_file(&body).as_str()),
        "upload to {dst} arrived changed"
    );
    // The edge merged the upload's segments into GSO packets.
    let merged = s.edge_metric("sluice_edge_gro_merged_packets_total", "") - merged_before;
    assert!(
        merged > 1000,
        "edge GRO merged only {merged} packets of a 4 MB upload to {dst}"
    );
}

#[test]
fn full_mtu_tcp_both_directions_through_the_tunnel() {
    if !require_root("full_mtu_tcp_both_directions_through_the_tunnel") {
        return;
    }
    let lab = Lab::new();
    let s = setup(&lab);
    for dst in [
        std::net::IpAddr::from(addr::TUNNELLED_V4),
        addr::TUNNELLED_V6.into(),
    ] {
        // Download: 4 MB of full-size segments from the server to the client.
        let size = curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                &url(dst, "/bytes/4000000"),
            ],
        );
        assert_eq!(
            size.trim(),
            "4000000",
            "download from {dst}\n{}",
            logs(&lab)
        );
        upload_checked(&lab, &s, dst);
    }
    // Full-size ICMP with DF: 1500-byte IP packets end to end.
    let big_v4 = lab.run(
        Host::Client,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            "3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1472",
            "203.0.113.10",
        ],
    );
    assert!(
        big_v4.status.success(),
        "1500-byte ping v4: {big_v4:?}\n{}",
        logs(&lab)
    );
    let big_v6 = lab.run(
        Host::Client,
        &[
            "ping",
            "-6",
            "-n",
            "-q",
            "-c",
            "3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1452",
            "2001:db8:100::10",
        ],
    );
    assert!(
        big_v6.status.success(),
        "1500-byte ping v6: {big_v6:?}\n{}",
        logs(&lab)
    );
    assert!(
        s.gateway_metric("sluice_gateway_tunnel_rx_bytes_total", "") > 8_000_000,
        "the downloads came back through the tunnel"
    );
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V6), 0);
}

#[test]
fn udp_and_icmp_echo_v4_and_v6() {
    if !require_root("udp_and_icmp_echo_v4_and_v6") {
        return;
    }
    let lab = Lab::new();
    let s = setup(&lab);
    let cases: [(SocketAddr, String); 4] = [
        (
            (addr::TUNNELLED_V4, UDP).into(),
            addr::EDGE_WAN_V4.to_string(),
        ),
        ((addr::BYPASSED_V4, UDP).into(), addr::GW_WAN_V4.to_string()),
        (
            (addr::TUNNELLED_V6, UDP).into(),
            addr::EDGE_WAN_V6.to_string(),
        ),
        ((addr::BYPASSED_V6, UDP).into(), addr::GW_WAN_V6.to_string()),
    ];
    for (dst, expect) in cases {
        // Full-size datagrams: 1472 (v4) / 1452 (v6) bytes fill a 1500 MTU.
        let size = if dst.is_ipv4() { 1472 } else { 1452 };
        let p = lab.udp_probe(Host::Client, dst, size, 50, Duration::from_secs(2));
        assert_eq!(
            p.seen_as,
            vec![expect.clone()],
            "UDP to {dst}: {p:?}\n{}",
            logs(&lab)
        );
        assert!(
            p.received >= 48,
            "UDP to {dst}: only {}/50 replies\n{}",
            p.received,
            logs(&lab)
        );
    }
    let before = s.gateway_metric("sluice_xdp_packets_total", "verdict=\"tunnel\"");
    for dst in [
        std::net::IpAddr::from(addr::TUNNELLED_V4),
        addr::TUNNELLED_V6.into(),
        addr::BYPASSED_V4.into(),
        addr::BYPASSED_V6.into(),
    ] {
        assert!(lab.ping(Host::Client, dst), "ping {dst}\n{}", logs(&lab));
    }
    assert!(s.gateway_metric("sluice_xdp_packets_total", "verdict=\"tunnel\"") >= before + 2);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V6), 0);
}

#[test]
fn edge_down_fails_closed_then_recovers() {
    if !require_root("edge_down_fails_closed_then_recovers") {
        return;
    }
    let lab = Lab::new();
    let mut s = setup(&lab);
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        "198.51.100.5"
    );

    s.stop_edge();
    s.wait_tunnel(false, Duration::from_secs(10));
    let dropped_before = s.gateway_metric("sluice_gateway_drop_tunnel_down_total", "");
    // Tunnelled traffic now has nowhere to go: it must not leak out of the
    // gateway's WAN (the server would answer it: gw -> inet is routed).
    for dst in [
        std::net::IpAddr::from(addr::TUNNELLED_V4),
        addr::TUNNELLED_V6.into(),
    ] {
        let out = lab.run(
            Host::Client,
            &["curl", "-sS", "--max-time", "3", &url(dst, "/whoami")],
        );
        assert!(
            !out.status.success(),
            "curl to {dst} succeeded with the edge down: {out:?}"
        );
        assert!(
            !lab.ping(Host::Client, dst),
            "ping {dst} answered with the edge down"
        );
    }
    let p = lab.udp_probe(
        Host::Client,
        (addr::TUNNELLED_V4, UDP).into(),
        200,
        20,
        Duration::from_secs(1),
    );
    assert_eq!(p.received, 0, "UDP answered with the edge down: {p:?}");
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V4),
        0,
        "tunnelled traffic leaked directly"
    );
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V6),
        0,
        "tunnelled traffic leaked directly"
    );
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
    let dropped = s.gateway_metric("sluice_gateway_drop_tunnel_down_total", "") - dropped_before;
    assert!(
        dropped >= 20,
        "drops while down were not counted: {dropped}\n{}",
        logs(&lab)
    );
    // Bypassed traffic is unaffected.
    assert_eq!(
        curl(&lab, &[&url(addr::BYPASSED_V4, "/whoami")]).trim(),
        "198.51.100.1"
    );

    // The edge comes back: the gateway reconnects by itself.
    s.start_edge();
    s.wait_tunnel(true, Duration::from_secs(15));
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        "198.51.100.5"
    );
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
}

#[test]
fn gateway_refuses_an_invalid_config_and_attaches_nothing() {
    if !require_root("gateway_refuses_an_invalid_config_and_attaches_nothing") {
        return;
    }
    let lab = Lab::new();
    let s = Sluice::prepare(&lab, bin(), |c| {
        c.replace("203.0.113.20/32", "203.0.113.20/24")
    });
    let cfg = s.conf_dir().join("gateway.toml");
    let out = lab.run(
        Host::Gw,
        &[
            &bin().to_string_lossy(),
            "gateway",
            "--config",
            &cfg.to_string_lossy(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The line of the edited prefix, wherever the default file puts it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains("203.0.113.20/24"))
        .expect("the edited prefix is in the file");
    assert!(
        err.contains(&format!("gateway.toml:{line}:"))
            && err.contains("bypass.prefixes[0]")
            && err.contains("203.0.113.0/24"),
        "{err}"
    );
    let link = lab.run_ok(Host::Gw, &["ip", "link", "show", "lan0"]);
    assert!(
        !link.contains("xdp"),
        "an XDP program is attached after a refused config: {link}"
    );
}

#[test]
fn gateway_crash_keeps_failing_closed() {
    if !require_root("gateway_crash_keeps_failing_closed") {
        return;
    }
    let lab = Lab::new();
    let mut s = setup(&lab);
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        "198.51.100.5"
    );
    let ino = std::fs::metadata(format!("/run/netns/{}", lab.ns(Host::Gw)))
        .unwrap()
        .ino();
    let pin = format!("{}/sluice/{ino}-lan0", sluice_lab::LAB_BPFFS);
    assert!(
        Path::new(&pin).exists(),
        "the classifier's link is not pinned at {pin}"
    );

    // The gateway dies without any chance to clean up.
    let id = s.gateway.take().unwrap();
    lab.signal(id, SIGKILL);
    lab.wait_exit(id, Duration::from_secs(5));
    let link = lab.run_ok(Host::Gw, &["ip", "link", "show", "lan0"]);
    assert!(
        link.contains("xdp"),
        "the classifier went away with the process: {link}"
    );
    for dst in [
        std::net::IpAddr::from(addr::TUNNELLED_V4),
        addr::TUNNELLED_V6.into(),
    ] {
        let out = lab.run(
            Host::Client,
            &["curl", "-sS", "--max-time", "3", &url(dst, "/whoami")],
        );
        assert!(
            !out.status.success(),
            "{dst} reachable with the gateway dead: {out:?}"
        );
    }
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V4),
        0,
        "tunnelled traffic leaked after a crash"
    );
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V6),
        0,
        "tunnelled traffic leaked after a crash"
    );
    // Bypass keeps working: the kernel still routes what the classifier passes.
    assert_eq!(
        curl(&lab, &[&url(addr::BYPASSED_V4, "/whoami")]).trim(),
        "198.51.100.1"
    );

    // A new gateway adopts the pinned link and traffic flows again.
    s.start_gateway();
    assert!(
        lab.log("gateway").contains("adopted the link pinned"),
        "{}",
        logs(&lab)
    );
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        "198.51.100.5"
    );
    // A clean stop keeps the pin: the classifier still fails closed.
    let id = s.gateway.take().unwrap();
    let status = lab.stop(id);
    assert!(status.success(), "stop: {status}\n{}", logs(&lab));
    assert!(
        Path::new(&pin).exists(),
        "pin {pin} removed by a stop: must-tunnel traffic would go direct"
    );
    let link = lab.run_ok(Host::Gw, &["ip", "link", "show", "lan0"]);
    assert!(
        link.contains("xdp"),
        "classifier detached by a stop: {link}"
    );
    // Only the operator's command removes it.
    let out = s.gateway_command(&["detach"]);
    assert!(out.status.success(), "detach: {out:?}");
    assert!(!Path::new(&pin).exists(), "pin {pin} left by detach");
    let link = lab.run_ok(Host::Gw, &["ip", "link", "show", "lan0"]);
    assert!(
        !link.contains("xdp"),
        "classifier still attached after detach: {link}"
    );
}

#[test]
fn one_edge_serves_several_gateways_at_once() {
    if !require_root("one_edge_serves_several_gateways_at_once") {
        return;
    }
    let lab = Lab::new();
    let mut s = setup(&lab);
    s.start_second_gateway();
    let edge = s.edge_metrics();
    assert_eq!(sum(&edge, "sluice_edge_conns_active", ""), 2, "{edge}");
    // Both branches at the same time: each reply must find its own tunnel.
    let big = url(addr::TUNNELLED_V4, "/bytes/2000000");
    let fetch = |h: Host| {
        curl_in(
            &lab,
            h,
            &["-o", "/dev/null", "-w", "%{size_download}", &big],
        )
    };
    let (first, second) = std::thread::scope(|sc| {
        let first = sc.spawn(|| fetch(Host::Client));
        let second = sc.spawn(|| fetch(Host::Client2));
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_eq!((first.as_str(), second.as_str()), ("2000000", "2000000"));
    for h in [Host::Client, Host::Client2] {
        let seen = curl_in(&lab, h, &[&url(addr::TUNNELLED_V4, "/whoami")]);
        assert_eq!(seen.trim(), "198.51.100.5", "{h} v4 via the edge");
        let seen = curl_in(&lab, h, &[&url(addr::TUNNELLED_V6, "/whoami")]);
        assert_eq!(seen.trim(), "2001:db8:3::5", "{h} v6 via the edge");
    }
    // Each gateway carried its own branch's traffic.
    for (h, log) in [(Host::Gw, "gateway"), (Host::Gw2, "gateway2")] {
        let m = metrics_text(&lab, h, sluice_lab::deploy::GATEWAY_METRICS);
        let rx = sum(&m, "sluice_gateway_tunnel_rx_bytes_total", "");
        assert!(
            rx > 2_000_000,
            "{log} returned only {rx} bytes\n{}",
            lab.log(log)
        );
    }
    assert!(
        lab.log("edge").contains("gateway `branch-2`"),
        "{}",
        lab.log("edge")
    );
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
}

/// Starts dnsmasq (TTL 10 s) and the forger in `inet`; returns the forger.
fn start_dns_servers(lab: &Lab) -> sluice_lab::ProcId {
    lab.spawn_dns("dnsmasq", 10);
    let script = sluice_lab::peer_script();
    let forger = lab.spawn(
        Host::Inet,
        "forger",
        &[
            sluice_lab::python(),
            "-u",
            &script.to_string_lossy(),
            "dns-forger",
            &addr::DNS_FORGER_V4.to_string(),
            "--answer",
            &addr::TUNNELLED_V4.to_string(),
        ],
    );
    lab.wait_for("the DNS forger", Duration::from_secs(10), || {
        lab.log("forger").contains("listening dns")
    });
    forger
}

/// Asks the forger (which answers with a wrong ID, a malformed message,
/// another question and NXDOMAIN, all naming the tunnelled server) and
/// checks that each was counted and nothing installed: the tunnelled
/// server still sees the edge.
fn forgeries_install_nothing(lab: &Lab, s: &Sluice<'_>) {
    let _ = lab.dig(
        Host::Client,
        addr::DNS_FORGER_V4.into(),
        "www.bypass.example",
        false,
    );
    lab.wait_for("the forgeries", Duration::from_secs(15), || {
        lab.log("forger").contains("forged www.bypass.example")
    });
    let seen = curl(lab, &[&url(addr::TUNNELLED_V4, "/whoami")]);
    assert_eq!(
        seen.trim(),
        addr::EDGE_WAN_V4.to_string(),
        "after forged answers\n{}",
        logs(lab)
    );
    let m = s.gateway_metrics();
    for outcome in [
        "unsolicited",
        "malformed",
        "question_mismatch",
        "error_code",
    ] {
        let label = format!("outcome=\"{outcome}\"");
        assert!(
            sum(&m, "sluice_dns_messages_total", &label) >= 1,
            "no {outcome} counted\n{m}"
        );
    }
    assert_eq!(sum(&m, "sluice_dns_bypass_installed_total", ""), 0, "{m}");
}

#[test]
fn domain_bypass_follows_dns_answers_for_their_ttl_and_ignores_forgeries() {
    if !require_root("domain_bypass_follows_dns_answers_for_their_ttl_and_ignores_forgeries") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let forger = start_dns_servers(&lab);
    let mut s = Sluice::prepare(&lab, bin(), |c| {
        c.replace(
            "[bypass]\n",
            "[bypass]\ndns_ttl_floor_secs = 1\ndns_ttl_cap_secs = 60\n",
        )
    });
    s.start_edge();
    s.start_gateway();
    let whoami = || {
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")])
            .trim()
            .to_string()
    };
    let edge = addr::EDGE_WAN_V4.to_string();
    let direct = addr::GW_WAN_V4.to_string();
    assert_eq!(
        whoami(),
        edge,
        "before any answer: tunnelled\n{}",
        logs(&lab)
    );

    // Forged and failed answers install nothing.
    forgeries_install_nothing(&lab, &s);
    lab.stop(forger);

    // The real answer: the address goes direct from the next connection,
    // for the answer's TTL (10 s), then through the tunnel again; over UDP,
    // then over TCP.
    let answer_goes_direct = |tcp: bool| {
        let answer = lab.dig(Host::Client, addr::DNS_V4.into(), "www.bypass.example", tcp);
        assert_eq!(
            answer.trim(),
            addr::TUNNELLED_V4.to_string(),
            "dig (TCP: {tcp}): {answer:?}"
        );
        assert_eq!(
            whoami(),
            direct,
            "after the answer (TCP: {tcp}): direct\n{}",
            logs(&lab)
        );
    };
    answer_goes_direct(false);
    assert_eq!(s.gateway_metric("sluice_dns_bypass_entries", ""), 1);
    let conf = s.conf_dir().join("gateway.toml");
    let listing = lab.run_ok(
        Host::Gw,
        &[
            &bin().to_string_lossy(),
            "policy",
            "domains",
            "--config",
            &conf.to_string_lossy(),
        ],
    );
    assert!(
        listing.starts_with(&format!("{} www.bypass.example ", addr::TUNNELLED_V4)),
        "sluice policy domains: {listing:?}"
    );
    assert!(lab.log("gateway").contains(&format!(
        "domain bypass: {} (www.bypass.example) for 10 s",
        addr::TUNNELLED_V4
    )));
    lab.wait_for(
        "the answer's TTL to run out",
        Duration::from_secs(25),
        || s.gateway_metric("sluice_dns_bypass_expired_total", "") == 1,
    );
    assert_eq!(
        whoami(),
        edge,
        "after the TTL: tunnelled again\n{}",
        logs(&lab)
    );
    answer_goes_direct(true);
    assert_eq!(s.gateway_metric("sluice_dns_bypass_installed_total", ""), 2);
    // A name outside the list (the apex is not below `*.bypass.example`)
    // is not even tracked, and its answer (with an address) installs
    // nothing.
    let queries = s.gateway_metric("sluice_dns_messages_total", "outcome=\"query\"");
    let apex = lab.dig(Host::Client, addr::DNS_V4.into(), "bypass.example", false);
    assert_eq!(apex.trim(), addr::BY_DOMAIN_V4.to_string(), "dig: {apex:?}");
    assert_eq!(
        s.gateway_metric("sluice_dns_messages_total", "outcome=\"query\""),
        queries
    );
    assert_eq!(s.gateway_metric("sluice_dns_bypass_installed_total", ""), 2);
}

#[test]
fn vpn_gateway_addresses_bypass() {
    if !require_root("vpn_gateway_addresses_bypass") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    // The "tunnelled" server plays a branch VPN client's gateway (say
    // IPsec over UDP): listed, it is reached directly.
    let mut s = Sluice::prepare(&lab, bin(), |c| {
        c.replace(
            "[bypass]\n",
            &format!("[bypass]\nvpn_gateways = [\"{}\"]\n", addr::TUNNELLED_V4),
        )
    });
    s.start_edge();
    s.start_gateway();
    let dst = SocketAddr::new(addr::TUNNELLED_V4.into(), UDP);
    let p = lab.udp_probe(Host::Client, dst, 64, 20, Duration::from_secs(2));
    assert!(p.received > 0, "{p:?}\n{}", logs(&lab));
    assert_eq!(p.seen_as, [addr::GW_WAN_V4.to_string()], "{}", logs(&lab));
    // Its IPv6 neighbour, not listed, still goes through the tunnel.
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V6, "/whoami")]).trim(),
        addr::EDGE_WAN_V6.to_string()
    );
    assert!(lab.log("gateway").contains("1 VPN gateways"));
}
