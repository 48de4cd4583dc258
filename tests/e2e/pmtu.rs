//! Path MTU (issue 16, item 5): the LAN has 1,500-byte links, the WAN
//! between the gateway and the internet carries only 1,360 bytes, and the
//! tunnel's inner MTU is 1,280 (the WAN's less the datagram transport's 80
//! bytes). Nothing is black-holed and nothing leaves directly:
//!
//! - a DF ping too big for the tunnel gets ICMP "fragmentation needed"
//!   (IPv4) or "packet too big" (IPv6) with 1,280, the client's kernel
//!   learns it (`ip route get` shows the cached MTU), and a ping of exactly
//!   1,280 bytes then goes through;
//! - a ping without DF too big for the tunnel is fragmented by the gateway
//!   and answered;
//! - TCP downloads and uploads of 2 MB work both ways, v4 and v6: the
//!   SYNs' MSS is clamped (in both directions), so no segment needs an
//!   ICMP error;
//! - the `inet` counters see no packet to the tunnelled server leave the
//!   gateway directly.
use sluice_lab::{Host, Lab, addr, addr::ifname, counter, deploy::Sluice, require_root};

use super::{HTTP, UDP, bin, curl, logs, url};

const WAN_MTU: &str = "1360";
const INNER_MTU: u16 = 1280;

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
fn packets_larger_than_the_tunnel_are_never_black_holed_nor_leaked() {
    if !require_root("packets_larger_than_the_tunnel_are_never_black_holed_nor_leaked") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    for (h, i) in [
        (Host::Gw, ifname::GW_WAN),
        (Host::Inet, ifname::INET_GW_SIDE),
    ] {
        lab.run_ok(h, &["ip", "link", "set", i, "mtu", WAN_MTU]);
    }
    let mut s = Sluice::prepare(&lab, bin(), |t| {
        assert!(
            t.contains("[tunnel]\n"),
            "the lab's config has a [tunnel] section"
        );
        t.replace("[tunnel]\n", &format!("[tunnel]\nmtu = {INNER_MTU}\n"))
    });
    s.start_edge();
    s.start_gateway();
    lab.reset_counters();
    let mut failures = Vec::new();

    // In this order: TCP and the unfragmentable pings would teach the
    // client the tunnel's MTU (its route cache), after which it sends
    // small SYNs and fragments by itself.
    // TCP both ways, v4 and v6: the MSS clamp keeps every segment within
    // the tunnel (the client's link still says 1,500).
    let icmp_before = s.gateway_metric("sluice_gateway_icmp_too_big_total", "");
    for dst in [
        std::net::IpAddr::from(addr::TUNNELLED_V4),
        std::net::IpAddr::from(addr::TUNNELLED_V6),
    ] {
        let got = curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                &url(dst, "/bytes/2000000"),
            ],
        );
        if got.trim() != "2000000" {
            failures.push(format!("download from {dst}: {got} bytes"));
        }
        let body = lab.dir().join("upload.bin");
        std::fs::write(&body, vec![0x5a; 2_000_000]).expect("upload body");
        let sent = curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{size_upload}",
                "--data-binary",
                &format!("@{}", body.display()),
                &url(dst, "/sink"),
            ],
        );
        if sent.trim() != "2000000" {
            failures.push(format!("upload to {dst}: {sent} bytes"));
        }
    }
    let icmp_for_tcp = s.gateway_metric("sluice_gateway_icmp_too_big_total", "") - icmp_before;
    if icmp_for_tcp != 0 {
        failures.push(format!(
            "{icmp_for_tcp} ICMP errors during TCP: a segment was larger than the clamped MSS allows"
        ));
    }
    // IPv4 without DF: fragmented by the gateway, reassembled by the server.
    let out = lab.run(
        Host::Client,
        &[
            "ping",
            "-n",
            "-4",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "2",
            "-M",
            "dont",
            "-s",
            "1400",
            &addr::TUNNELLED_V4.to_string(),
        ],
    );
    if !out.status.success() {
        failures.push(format!(
            "v4 without DF: a 1,428-byte ping was not answered: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }

    // IPv4 and IPv6, DF (IPv6 never fragments in the path): too big, then
    // exactly the inner MTU.
    let cases = [
        (
            "v4",
            addr::TUNNELLED_V4.to_string(),
            28,
            vec!["-4", "-M", "do"],
        ),
        ("v6", addr::TUNNELLED_V6.to_string(), 48, vec!["-6"]),
    ];
    for (what, dst, headers, flags) in &cases {
        let ping = |size: usize| {
            let size = size.to_string();
            let mut argv = vec!["ping", "-n", "-c", "2", "-i", "0.3", "-W", "2", "-s", &size];
            argv.extend(flags.iter().copied());
            argv.push(dst);
            let out = lab.run(Host::Client, &argv);
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        // The first echo gets the error; the kernel then fragments the
        // second itself (IPv6) or refuses to send it (IPv4 with DF).
        let (_, text) = ping(1400);
        let told = text.contains(&format!("mtu = {INNER_MTU}"))
            || text.contains(&format!("mtu={INNER_MTU}"));
        if !told {
            failures.push(format!(
                "{what}: a 1,428-byte DF ping should fail with an ICMP error naming {INNER_MTU}: {text}"
            ));
        }
        let route = lab.run_ok(Host::Client, &["ip", "route", "get", dst]);
        if !route.contains(&format!("mtu {INNER_MTU}")) {
            failures.push(format!("{what}: the client did not learn the MTU: {route}"));
        }
        let (ok, text) = ping(usize::from(INNER_MTU) - headers);
        if !ok {
            failures.push(format!(
                "{what}: a ping of exactly {INNER_MTU} bytes failed: {text}"
            ));
        }
    }

    let metric = |n: &str| s.gateway_metric(n, "");
    let (clamped, fragmented, icmp, too_big) = (
        metric("sluice_gateway_mss_clamped_total"),
        metric("sluice_gateway_fragmented_total"),
        metric("sluice_gateway_icmp_too_big_total"),
        metric("sluice_gateway_drop_too_big_total"),
    );
    // Two connections per family: a SYN and a SYN-ACK clamped in each.
    if clamped < 8 {
        failures.push(format!("MSS clamped {clamped} times, want at least 8"));
    }
    if fragmented < 2 {
        failures.push(format!("{fragmented} packets fragmented, want at least 2"));
    }
    if icmp < 2 || too_big < 2 {
        failures.push(format!(
            "{icmp} ICMP errors for {too_big} packets too big, want at least 2"
        ));
    }
    // Never direct.
    for c in [counter::GW_TO_TUNNELLED_V4, counter::GW_TO_TUNNELLED_V6] {
        let n = lab.nft_counter(c);
        if n != 0 {
            failures.push(format!(
                "{n} packets to the tunnelled server left directly ({c})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        logs(&lab)
    );
}
