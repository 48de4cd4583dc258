//! VLANs end to end: a LAN host that lives on VLAN 10 only (its frames
//! leave tagged, and it hears only frames tagged with VLAN 10: tc
//! programs in its namespace, as this kernel has no 802.1Q devices)
//! reaches tunnelled and bypassed destinations, IPv4 and IPv6, through a
//! gateway in untag mode (`lan_vlans = "untag"`): its tunnel replies
//! leave the worker tagged, and the kernel's frames (ARP and ND answers,
//! bypassed replies) are tagged by the egress program. A capture on the
//! host's link sees every frame from the gateway to the host tagged.
use sluice_lab::{Host, Lab, addr, deploy::Sluice, l2::Capture, require_root};

use super::{HTTP, SIGKILL, UDP, bin, curl, logs, url};

const VID: u16 = 10;

/// The gateway's file with untag mode on.
fn untag(gateway_toml: &str) -> String {
    gateway_toml.replacen("[gateway]\n", "[gateway]\nlan_vlans = \"untag\"\n", 1)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: tagged paths, a crash, a restart"
)]
fn a_host_on_a_vlan_gets_tagged_replies_tunnelled_and_bypassed() {
    if !require_root("a_host_on_a_vlan_gets_tagged_replies_tunnelled_and_bypassed") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let dir = lab.bpffs_dir();
    let pins = sluice_gateway::ebpf::pin_lab_vlan_host(VID, &dir).unwrap_or_else(|e| {
        panic!(
            "lab VLAN programs: {e}: {}",
            sluice_gateway::ebpf::error_chain(&e)
        )
    });
    lab.vlan_host(Host::Client, "eth0", &pins.push, &pins.pop);
    let _ = std::fs::remove_dir(&dir);
    let mut s = Sluice::prepare(&lab, bin(), untag);
    s.start_edge();
    s.start_gateway();
    let gw_mac = lab.mac_of(Host::Gw, "lan0");
    let client_mac = lab.mac_of(Host::Client, "eth0");
    let capture = Capture::start(&lab, Host::Client, "client-link", "eth0", "");
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
    let frames = capture.stop(&lab);
    let to_client: Vec<&String> = frames
        .iter()
        .filter(|l| l.contains(&format!("{gw_mac} > {client_mac},")))
        .collect();
    let tagged = to_client
        .iter()
        .filter(|l| l.contains("802.1Q") && l.contains(&format!("vlan {VID},")))
        .count();
    let untagged: Vec<&&String> = to_client.iter().filter(|l| !l.contains("802.1Q")).collect();
    eprintln!(
        "frames from the gateway to the host: {} ({tagged} tagged {VID})",
        to_client.len()
    );
    assert!(
        untagged.is_empty(),
        "{} untagged frames from the gateway to the host on VLAN {VID}, e.g.:\n{}",
        untagged.len(),
        untagged
            .iter()
            .take(5)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        tagged,
        to_client.len(),
        "every frame tagged with VLAN {VID}"
    );
    // Both ways back were used: the worker's (tunnel replies) and the
    // kernel's (bypassed replies, ARP and ND answers, tagged on egress).
    let metric =
        |v: &str| s.gateway_metric("sluice_xdp_packets_total", &format!("verdict=\"{v}\""));
    assert!(
        metric("pass_untagged") > 0 && metric("egress_tagged") > 0,
        "{}",
        logs(&lab)
    );
    assert!(s.gateway_metric("sluice_gateway_tunnel_rx_packets_total", "") > 0);

    // A crash leaves both links pinned: the classifier keeps untagging and
    // the egress program keeps tagging, so bypassed replies still reach
    // the host tagged (and none leaves untagged for the native VLAN).
    let gw = s.gateway.take().expect("gateway");
    lab.signal(gw, SIGKILL);
    lab.wait_exit(gw, std::time::Duration::from_secs(10));
    let capture = Capture::start(&lab, Host::Client, "after-crash", "eth0", "");
    let seen = curl(&lab, &[&url(addr::BYPASSED_V4, "/whoami")]);
    assert_eq!(
        seen.trim(),
        addr::GW_WAN_V4.to_string(),
        "bypassed after a crash"
    );
    let frames = capture.stop(&lab);
    let untagged = frames
        .iter()
        .filter(|l| l.contains(&format!("{gw_mac} > {client_mac},")) && !l.contains("802.1Q"))
        .count();
    assert_eq!(
        untagged,
        0,
        "untagged frames to the host after the crash:\n{}",
        frames.join("\n")
    );
    // A restart adopts the pinned egress link and serves the tunnel again.
    s.start_gateway();
    assert!(
        lab.log("gateway").contains("adopted the VLAN egress link"),
        "{}",
        logs(&lab)
    );
    let seen = curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]);
    assert_eq!(
        seen.trim(),
        addr::EDGE_WAN_V4.to_string(),
        "tunnelled after the restart"
    );
}

/// Review finding (issue 14): with `lan_vlans = "kernel"` (the default)
/// the kernel only takes a VLAN's frames through a VLAN device, so a host
/// whose neighbour entry is on the LAN interface itself is untagged; yet
/// the worker took the tags of any frame whose source MAC and address
/// matched that entry, and tagged the host's tunnel replies with them.
/// Frames tagged with VLAN 20 that claim the client's MAC and address
/// (here sent from the client's own link, as a host on VLAN 20 that
/// copied them would) moved the client's replies to VLAN 20: the client
/// lost them, and a listener on VLAN 20 would have had them. In kernel
/// mode frames teach no VLAN now: the entry's device does.
#[test]
fn frames_from_another_vlan_do_not_move_a_hosts_replies() {
    if !require_root("frames_from_another_vlan_do_not_move_a_hosts_replies") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let s = Sluice::start(&lab, bin());
    let gw_mac = lab.mac_of(Host::Gw, "lan0");
    let client_mac = lab.mac_of(Host::Client, "eth0");
    let dst = std::net::SocketAddr::new(addr::TUNNELLED_V4.into(), UDP);
    let probe = |n| lab.udp_probe(Host::Client, dst, 64, n, std::time::Duration::from_secs(3));
    assert_eq!(probe(5).received, 5, "{}", logs(&lab));
    let capture = Capture::start(&lab, Host::Client, "client-tags", "eth0", "");
    let spoof = sluice_lab::l2::RawUdp {
        iface: "eth0",
        src_mac: &client_mac,
        dst_mac: &gw_mac,
        src: addr::CLIENT_V4.into(),
        dst: addr::TUNNELLED_V4.into(),
        sport: 40_000,
        dport: UDP,
        count: 150,
        gap_ms: 10,
    };
    let p = std::thread::scope(|sc| {
        let other_vlan = sc.spawn(|| lab.send_raw_udp_tagged(Host::Client, &spoof, 20));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let p = probe(30);
        other_vlan.join().expect("tagged sender");
        p
    });
    let frames = capture.stop(&lab);
    let tagged: Vec<&String> = frames
        .iter()
        .filter(|l| l.contains(&format!("{gw_mac} > {client_mac},")) && l.contains("802.1Q"))
        .collect();
    assert!(
        p.received == 30 && tagged.is_empty(),
        "{} of 30 replies reached the client while frames of VLAN 20 claimed its MAC and \
         address; {} frames to it left tagged, e.g.:\n{}\n{}",
        p.received,
        tagged.len(),
        tagged
            .iter()
            .take(5)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        logs(&lab)
    );
    assert!(s.gateway_metric("sluice_gateway_tunnel_rx_packets_total", "") >= 30);
}
