//! The datagram transport end to end: a gateway with `transport = "udp"`,
//! the edge's datagram socket, packets both ways by UDP; UDP blocked on
//! the path by nftables (traffic moves to the TLS tunnel and back); NAT
//! rebinding (the gateway's source port changes on the path); forged,
//! replayed and stray datagrams sent to the edge (dropped and counted);
//! the classifier's verdict in front of the frame (`SLUICE_XDP_META=head`,
//! what kernels that refuse `bpf_xdp_adjust_meta` to XDP get) with
//! datagrams sealed in place. Every test watches the gateway's WAN for
//! tunnelled traffic leaving directly.
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sluice_lab::{Host, Lab, addr, counter, deploy::Sluice, edge_lab::in_netns, require_root};

use super::{HTTP, UDP, bin, curl, logs, url};

/// The edge's datagram port (the lab edge's `listen` port: the default).
const EDGE_UDP: u16 = 4443;

/// A lab whose gateway offers the datagram transport.
fn udp_lab(lab: &Lab) -> Sluice<'_> {
    udp_lab_env(lab, &[])
}

/// [`udp_lab`], with `env` added to the gateway's environment.
fn udp_lab_env<'l>(lab: &'l Lab, env: &[(&str, &str)]) -> Sluice<'l> {
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(lab, bin(), |g| {
        g.replace("[tunnel]\n", "[tunnel]\ntransport = \"udp\"\n")
    });
    s.start_edge();
    s.start_gateway_env(env);
    // Which classifier program the kernel got, said once (`by adjust_meta`
    // or `in front of the frame (this kernel refuses ...)`).
    let said = lab
        .log("gateway")
        .matches("classifier: frame metadata ")
        .count();
    assert_eq!(said, 1, "{}", logs(lab));
    s
}

/// Waits until the gateway's log has said `what` at least `n` times.
fn wait_log(lab: &Lab, what: &str, n: usize, timeout: Duration) {
    lab.wait_for(&format!("gateway log: {what} x{n}"), timeout, || {
        lab.log("gateway").matches(what).count() >= n
    });
}

const ON_UDP: &str = "packets now go by udp";
const ON_TLS: &str = "packets now go by tls";

/// Replies to a short UDP probe through the tunnel (5 datagrams).
fn probe(lab: &Lab) -> u64 {
    lab.udp_probe(
        Host::Client,
        (addr::TUNNELLED_V4, UDP).into(),
        200,
        5,
        Duration::from_millis(300),
    )
    .received
}

fn no_leak(lab: &Lab) {
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V4),
        0,
        "{}",
        logs(lab)
    );
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V6),
        0,
        "{}",
        logs(lab)
    );
}

#[test]
fn datagram_transport_carries_traffic_and_falls_back_to_tls_while_udp_is_blocked() {
    if !require_root(
        "datagram_transport_carries_traffic_and_falls_back_to_tls_while_udp_is_blocked",
    ) {
        return;
    }
    let lab = Lab::new();
    let s = udp_lab(&lab);
    wait_log(&lab, ON_UDP, 1, Duration::from_secs(10));
    // Both families, both directions, by datagram.
    for (dst, edge) in [
        (std::net::IpAddr::from(addr::TUNNELLED_V4), "198.51.100.5"),
        (addr::TUNNELLED_V6.into(), "2001:db8:3::5"),
    ] {
        assert_eq!(curl(&lab, &[&url(dst, "/whoami")]).trim(), edge);
    }
    let p = lab.udp_probe(
        Host::Client,
        (addr::TUNNELLED_V4, UDP).into(),
        1300,
        50,
        Duration::from_secs(2),
    );
    assert!(p.received >= 48, "{p:?}\n{}", logs(&lab));
    let gw_tx = s.gateway_metric("sluice_gateway_udp_tx_datagrams_total", "");
    let gw_rx = s.gateway_metric("sluice_gateway_udp_rx_datagrams_total", "");
    let edge_rx = s.edge_metric("sluice_edge_datagrams_rx_total", "");
    let edge_tx = s.edge_metric("sluice_edge_datagrams_tx_total", "");
    assert!(
        gw_tx >= 50 && gw_rx >= 50 && edge_rx >= 50 && edge_tx >= 50,
        "datagrams gw tx {gw_tx} rx {gw_rx}, edge rx {edge_rx} tx {edge_tx}\n{}",
        logs(&lab)
    );
    assert_eq!(
        s.gateway_metric("sluice_gateway_udp_rx_refused_total", ""),
        0
    );
    // `sluice status` names the transport of each edge.
    let out = s.command(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && status.contains("transport datagrams"),
        "sluice status: {status}\n{}",
        logs(&lab)
    );
    // And the metrics say so per edge.
    lab.wait_for(
        "sluice_gateway_edge_datagrams 1",
        Duration::from_secs(3),
        || s.gateway_metric("sluice_gateway_edge_datagrams", "") >= 1,
    );

    // UDP to and from the edge's port blocked on the path.
    lab.run_ok(
        Host::Inet,
        &[
            "nft",
            &format!(
                "add table inet sluice_block; add chain inet sluice_block blk {{ type filter hook forward priority -10; }}; add rule inet sluice_block blk udp dport {EDGE_UDP} drop; add rule inet sluice_block blk udp sport {EDGE_UDP} drop"
            ),
        ],
    );
    let blocked = Instant::now();
    let mut resumed = None;
    while blocked.elapsed() < Duration::from_secs(10) {
        if probe(&lab) >= 4 {
            resumed = Some(blocked.elapsed());
            break;
        }
    }
    let resumed =
        resumed.unwrap_or_else(|| panic!("no traffic 10 s after UDP was blocked\n{}", logs(&lab)));
    println!("UDP blocked: traffic resumed over TLS after {resumed:?}");
    assert!(
        resumed < Duration::from_secs(5),
        "fallback took {resumed:?}"
    );
    wait_log(&lab, ON_TLS, 1, Duration::from_secs(1));
    lab.wait_for(
        "sluice_gateway_edge_datagrams 0",
        Duration::from_secs(3),
        || s.gateway_metric("sluice_gateway_edge_datagrams", "") == 0,
    );
    let tls_before = s.gateway_metric("sluice_gateway_tunnel_tx_packets_total", "");
    let p = lab.udp_probe(
        Host::Client,
        (addr::TUNNELLED_V4, UDP).into(),
        1300,
        20,
        Duration::from_secs(2),
    );
    assert!(p.received >= 19, "over TLS: {p:?}\n{}", logs(&lab));
    assert!(s.gateway_metric("sluice_gateway_tunnel_tx_packets_total", "") >= tls_before + 20);
    no_leak(&lab);

    // Unblocked: back to datagrams.
    lab.run_ok(Host::Inet, &["nft", "delete table inet sluice_block"]);
    wait_log(&lab, ON_UDP, 2, Duration::from_secs(10));
    let before = s.edge_metric("sluice_edge_datagrams_rx_total", "");
    assert!(probe(&lab) >= 4, "{}", logs(&lab));
    assert!(
        s.edge_metric("sluice_edge_datagrams_rx_total", "") >= before + 5,
        "back on UDP\n{}",
        logs(&lab)
    );
    no_leak(&lab);
}

/// The gateway's datagram socket's port (in `gw`).
/// The classifier program that puts its verdict in front of the frame,
/// forced on any kernel (on one that refuses `bpf_xdp_adjust_meta` to XDP
/// the gateway picks it by itself): the workers read the verdict from the
/// first bytes of each frame, the packet after them, and seal datagrams
/// where the frame lies (full-size ones included).
#[test]
fn datagram_transport_with_the_verdict_in_front_of_the_frame() {
    if !require_root("datagram_transport_with_the_verdict_in_front_of_the_frame") {
        return;
    }
    let lab = Lab::new();
    let s = udp_lab_env(&lab, &[("SLUICE_XDP_META", "head")]);
    wait_log(&lab, ON_UDP, 1, Duration::from_secs(10));
    let log = lab.log("gateway");
    assert!(
        log.contains("classifier: frame metadata in front of the frame (SLUICE_XDP_META=head)"),
        "{}",
        logs(&lab)
    );
    for (dst, edge) in [
        (std::net::IpAddr::from(addr::TUNNELLED_V4), "198.51.100.5"),
        (addr::TUNNELLED_V6.into(), "2001:db8:3::5"),
    ] {
        assert_eq!(curl(&lab, &[&url(dst, "/whoami")]).trim(), edge);
    }
    let tx_before = s.gateway_metric("sluice_gateway_udp_tx_datagrams_total", "");
    for size in [64, 1300, 1400] {
        let p = lab.udp_probe(
            Host::Client,
            (addr::TUNNELLED_V4, UDP).into(),
            size,
            20,
            Duration::from_secs(2),
        );
        assert!(p.received >= 19, "{size} bytes: {p:?}\n{}", logs(&lab));
    }
    let tx = s.gateway_metric("sluice_gateway_udp_tx_datagrams_total", "") - tx_before;
    assert!(tx >= 57, "by datagram: {tx}\n{}", logs(&lab));
    for (metric, what) in [
        (
            "sluice_gateway_drop_no_verdict_total",
            "frames without a verdict",
        ),
        (
            "sluice_gateway_drop_malformed_total",
            "frames read as malformed",
        ),
    ] {
        assert_eq!(s.gateway_metric(metric, ""), 0, "{what}\n{}", logs(&lab));
    }
    no_leak(&lab);
}

fn gateway_udp_port(lab: &Lab) -> u16 {
    let out = lab.run_ok(
        Host::Gw,
        &["ss", "-Hun", "dst", &format!("198.51.100.5:{EDGE_UDP}")],
    );
    out.split_whitespace()
        .filter_map(|w| w.strip_prefix("198.51.100.1:"))
        .find_map(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no gateway datagram socket in {out:?}"))
}

/// The UDP payloads of the IPv4 packets in a pcap file (Ethernet).
fn pcap_udp_payloads(file: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(h) = file.get(at..at + 16) {
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let Some(frame) = file.get(at + 16..at + 16 + len) else {
            break;
        };
        at += 16 + len;
        if frame.len() > 14 + 20 + 8 && frame[12..14] == [0x08, 0x00] {
            let ip = &frame[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[9] == 17 && ip.len() > ihl + 8 {
                out.push(ip[ihl + 8..].to_vec());
            }
        }
    }
    out
}

#[test]
fn datagram_rebinding_follows_the_gateway_and_forged_or_replayed_datagrams_are_counted() {
    if !require_root(
        "datagram_rebinding_follows_the_gateway_and_forged_or_replayed_datagrams_are_counted",
    ) {
        return;
    }
    let lab = Lab::new();
    let s = udp_lab(&lab);
    wait_log(&lab, ON_UDP, 1, Duration::from_secs(10));
    assert!(probe(&lab) >= 4, "{}", logs(&lab));

    // A genuine datagram from the gateway, captured on the path.
    let cap = lab.dir().join("dgram.pcap");
    let cap_s = cap.to_string_lossy().into_owned();
    let dump = lab.spawn(
        Host::Inet,
        "tcpdump",
        &[
            "tcpdump", "-i", "edge0", "-U", "-n", "-c", "5", "-w", &cap_s, "udp", "and", "dst",
            "port", "4443", "and", "greater", "200",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        if !lab.is_running(dump) {
            break;
        }
        let _ = probe(&lab);
    }
    lab.wait_exit(dump, Duration::from_secs(5));
    let captured = pcap_udp_payloads(&std::fs::read(&cap).expect("reading the capture"));
    let genuine = captured
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no datagram captured\n{}", logs(&lab)));
    assert!(genuine.len() > 32);

    // Replayed (from another address), forged, for an unknown receiver,
    // and too short: each dropped and counted at the edge, none moves the
    // gateway's address.
    let drops = |r: &str| {
        s.edge_metric(
            "sluice_edge_datagram_drops_total",
            &format!("reason=\"{r}\""),
        )
    };
    let before: Vec<u64> = [
        "replayed",
        "too_old",
        "auth_failed",
        "unknown_receiver",
        "malformed",
    ]
    .iter()
    .map(|r| drops(r))
    .collect();
    // A new counter (the window would refuse a replayed one before any
    // decryption), a corrupted tag.
    let mut forged = genuine.clone();
    let counter = u64::from_be_bytes(forged[8..16].try_into().unwrap());
    forged[8..16].copy_from_slice(&(counter + 100_000).to_be_bytes());
    let last = forged.len() - 1;
    forged[last] ^= 0x55;
    let mut stray = genuine.clone();
    stray[4..8].copy_from_slice(&0x0bad_f00d_u32.to_be_bytes());
    in_netns(&lab, Host::Inet, || {
        let sock = UdpSocket::bind(SocketAddr::from((addr::TUNNELLED_V4, 0))).unwrap();
        let edge: SocketAddr = (Ipv4Addr::new(198, 51, 100, 5), EDGE_UDP).into();
        for d in [
            &genuine[..],
            &genuine[..],
            &forged[..],
            &stray[..],
            &[1, 0, 0][..],
        ] {
            sock.send_to(d, edge).unwrap();
        }
    });
    lab.wait_for(
        "the edge to count the bad datagrams",
        Duration::from_secs(5),
        || drops("auth_failed") > before[2] && drops("malformed") > before[4],
    );
    assert!(
        drops("replayed") + drops("too_old") >= before[0] + before[1] + 2,
        "replays\n{}",
        logs(&lab)
    );
    assert!(drops("auth_failed") > before[2]);
    assert!(drops("unknown_receiver") > before[3]);
    assert!(drops("malformed") > before[4]);
    assert_eq!(
        s.edge_metric("sluice_edge_datagram_rebinds_total", ""),
        0,
        "a replay from elsewhere moved the gateway's address\n{}",
        logs(&lab)
    );
    assert!(probe(&lab) >= 4, "still working\n{}", logs(&lab));

    // NAT rebinding: the path rewrites the gateway's source port (both
    // ways, stateless); the edge follows once a datagram from the new
    // port authenticates, and the traffic stays on UDP.
    let port = gateway_udp_port(&lab);
    lab.run_ok(
        Host::Inet,
        &[
            "nft",
            &format!(
                "add table ip sluice_rebind; add chain ip sluice_rebind pre {{ type filter hook prerouting priority -300; }}; add rule ip sluice_rebind pre ip saddr 198.51.100.1 udp sport {port} udp dport {EDGE_UDP} notrack udp sport set 40000; add rule ip sluice_rebind pre ip daddr 198.51.100.1 udp sport {EDGE_UDP} udp dport 40000 notrack udp dport set {port}"
            ),
        ],
    );
    let p = lab.udp_probe(
        Host::Client,
        (addr::TUNNELLED_V4, UDP).into(),
        1300,
        50,
        Duration::from_secs(2),
    );
    assert!(
        p.received >= 45,
        "after the rebinding: {p:?}\n{}",
        logs(&lab)
    );
    assert!(
        s.edge_metric("sluice_edge_datagram_rebinds_total", "") >= 1,
        "the edge did not follow the new port\n{}",
        logs(&lab)
    );
    assert_eq!(
        lab.log("gateway").matches(ON_TLS).count(),
        0,
        "the rebinding made the gateway fall back\n{}",
        logs(&lab)
    );
    no_leak(&lab);
}
