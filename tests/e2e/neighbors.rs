//! One spoofed LAN frame does not redirect another host's tunnel
//! replies: a frame with the client's source address and an attacker's
//! MAC, sent from a raw socket on the LAN while the client talks through
//! the tunnel, teaches the gateway nothing. The gateway takes LAN hosts'
//! MACs from its kernel's neighbour table (ARP/ND), not from frames. A
//! capture on the LAN sees no frame for the attacker's MAC, and every one
//! of the client's replies reaches it.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sluice_lab::{
    Host, Lab, addr,
    deploy::Sluice,
    l2::{Capture, RawUdp},
    require_root,
};

use super::{UDP, bin, logs};

const ATTACKER_MAC: &str = "02:00:00:00:66:66";

#[test]
fn a_spoofed_lan_frame_does_not_redirect_replies() {
    if !require_root("a_spoofed_lan_frame_does_not_redirect_replies") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", super::HTTP, UDP);
    let s = Sluice::start(&lab, bin());
    let gw_mac = lab.mac_of(Host::Gw, "lan0");
    let edge = [addr::EDGE_WAN_V4.to_string(), addr::EDGE_WAN_V6.to_string()];
    let cases: [(IpAddr, IpAddr, &str); 2] = [
        (addr::CLIENT_V4.into(), addr::TUNNELLED_V4.into(), &edge[0]),
        (addr::CLIENT_V6.into(), addr::TUNNELLED_V6.into(), &edge[1]),
    ];
    // The client is known (it has been talking through the tunnel).
    for (_, dst, seen) in cases {
        let p = lab.udp_probe(
            Host::Client,
            SocketAddr::new(dst, UDP),
            64,
            5,
            Duration::from_secs(3),
        );
        assert_eq!(
            (p.received, p.seen_as.as_slice()),
            (5, [seen.to_string()].as_slice()),
            "{}",
            logs(&lab)
        );
    }
    let capture = Capture::start(
        &lab,
        Host::Client,
        "to-attacker",
        "eth0",
        &format!("ether dst {ATTACKER_MAC}"),
    );
    for (src, dst, seen) in cases {
        // The attacker spoofs the client's address, every 10 ms, while
        // the client keeps talking; the server echoes the spoofed
        // datagrams too, to the client's address.
        let spoof = RawUdp {
            iface: "eth0",
            src_mac: ATTACKER_MAC,
            dst_mac: &gw_mac,
            src,
            dst,
            sport: 40_000,
            dport: UDP,
            count: 150,
            gap_ms: 10,
        };
        let p = std::thread::scope(|sc| {
            let attacker = sc.spawn(|| lab.send_raw_udp(Host::Client, &spoof));
            std::thread::sleep(Duration::from_millis(100));
            let p = lab.udp_probe(
                Host::Client,
                SocketAddr::new(dst, UDP),
                64,
                30,
                Duration::from_secs(3),
            );
            attacker.join().expect("attacker");
            p
        });
        assert_eq!(
            (p.received, p.seen_as.as_slice()),
            (30, [seen.to_string()].as_slice()),
            "the client's replies while {src} was spoofed\n{}",
            logs(&lab)
        );
    }
    // The server echoed the spoofed datagrams: they came back through the
    // tunnel addressed to the client, and went to the client's MAC.
    let stolen = capture.stop(&lab);
    assert!(
        stolen.is_empty(),
        "{} frames went to the attacker's MAC, e.g.:\n{}\n{}",
        stolen.len(),
        stolen
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        logs(&lab)
    );
    let echoed = lab
        .log("peer")
        .lines()
        .filter(|l| l.starts_with("udp "))
        .count();
    assert!(echoed >= 2 * 150, "the server echoed {echoed} datagrams");
    assert!(s.gateway_metric("sluice_gateway_tunnel_rx_packets_total", "") >= 300);
}

/// A host the gateway's kernel forgot is resolved again: its next frame
/// makes the worker ask the kernel (so that its reply normally finds the
/// entry back; a reply that does not is dropped and counted, and asked
/// about again), and the replies flow.
#[test]
fn a_forgotten_neighbour_is_resolved_again() {
    if !require_root("a_forgotten_neighbour_is_resolved_again") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", super::HTTP, UDP);
    let s = Sluice::start(&lab, bin());
    let dst = SocketAddr::new(addr::TUNNELLED_V4.into(), UDP);
    let probe = |n| lab.udp_probe(Host::Client, dst, 64, n, Duration::from_secs(2));
    assert_eq!(probe(3).received, 3, "{}", logs(&lab));
    // The gateway's kernel forgets every LAN host.
    lab.run_ok(Host::Gw, &["ip", "neigh", "flush", "dev", "lan0"]);
    lab.run_ok(Host::Gw, &["ip", "-6", "neigh", "flush", "dev", "lan0"]);
    let asked = || s.gateway_metric("sluice_gateway_neighbor_resolutions_total", "");
    let first = probe(1);
    lab.wait_for("a resolution request", Duration::from_secs(10), || {
        asked() >= 1
    });
    lab.wait_for(
        "the client back in the gateway's neighbour table",
        Duration::from_secs(10),
        || {
            lab.run_ok(Host::Gw, &["ip", "neigh", "show", "dev", "lan0"])
                .contains(&addr::CLIENT_V4.to_string())
        },
    );
    let p = probe(5);
    eprintln!(
        "first datagram after the flush: {} of 1 echoed; replies without a neighbour: {}",
        first.received,
        s.gateway_metric("sluice_gateway_drop_no_neighbor_total", "")
    );
    assert_eq!(p.received, 5, "after the resolution\n{}", logs(&lab));
}

/// A LAN host behind a router on the LAN: its replies go to the router's
/// MAC, the next hop the kernel's routes give (the client namespace plays
/// the router for a routed range, 198.18.4.0/24, that the edge counts as
/// this branch's, with a route on the gateway through it).
#[test]
fn a_host_behind_a_lan_router_gets_its_replies() {
    if !require_root("a_host_behind_a_lan_router_gets_its_replies") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", super::HTTP, UDP);
    let routed = "198.18.4.77";
    lab.run_ok(
        Host::Client,
        &["ip", "addr", "add", &format!("{routed}/32"), "dev", "eth0"],
    );
    lab.run_ok(
        Host::Gw,
        &[
            "ip",
            "route",
            "add",
            "198.18.4.0/24",
            "via",
            &addr::CLIENT_V4.to_string(),
        ],
    );
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    s.edit_edge(|e| e.replacen("prefixes = [", "prefixes = [\"198.18.4.0/24\", ", 1));
    s.start_edge();
    s.start_gateway();
    // The client resolves the gateway with its own address (so that the
    // gateway's kernel has no entry for the routed one).
    let url = super::url(addr::TUNNELLED_V4, "/whoami");
    let _ = super::curl(&lab, &[&url]);
    let _ = lab.run(Host::Gw, &["ip", "neigh", "del", routed, "dev", "lan0"]);
    let seen = super::curl(&lab, &["--interface", routed, &url]);
    assert_eq!(seen.trim(), addr::EDGE_WAN_V4.to_string(), "{}", logs(&lab));
    // Every reply found its next hop: nothing dropped for want of one.
    assert_eq!(
        s.gateway_metric("sluice_gateway_drop_no_neighbor_total", ""),
        0,
        "{}",
        logs(&lab)
    );
    // The kernel has no neighbour entry for the routed host itself.
    let table = lab.run_ok(Host::Gw, &["ip", "neigh", "show", "dev", "lan0"]);
    assert!(!table.contains(routed), "{table}");
}
