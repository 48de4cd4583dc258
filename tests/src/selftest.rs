//! The lab's own tests, on real namespaces (privileged: skipped loudly when
//! not root, a failure under `CI=true`).

use std::{
    net::{IpAddr, SocketAddr},
    panic::{AssertUnwindSafe, catch_unwind},
    process::Command,
    time::{Duration, Instant},
};

use crate::{Host, Lab, addr, cleanup_stale, counter, sys};

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let list = namespaces();
    for name in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} still exists:\n{list}"
        );
    }
}

fn names(lab: &Lab) -> Vec<String> {
    Host::ALL.iter().map(|h| lab.ns(*h).to_owned()).collect()
}

#[test]
fn lab_routes_and_isolates() {
    if !crate::require_root("lab_routes_and_isolates") {
        return;
    }
    let lab = Lab::new();
    let made = names(&lab);
    let list = namespaces();
    for name in &made {
        assert!(list.contains(name.as_str()), "{name} missing:\n{list}");
    }

    assert!(lab.ping(Host::Client, addr::GW_LAN_V4), "client -> gw v4");
    assert!(lab.ping(Host::Client, addr::GW_LAN_V6), "client -> gw v6");
    assert!(lab.ping(Host::Gw, addr::BYPASSED_V4), "gw -> 203.0.113.20");
    assert!(
        lab.ping(Host::Gw, addr::BYPASSED_V6),
        "gw -> 2001:db8:100::20"
    );
    assert!(
        lab.ping(Host::Edge, addr::TUNNELLED_V4),
        "edge -> 203.0.113.10"
    );
    assert!(
        lab.ping(Host::Edge, addr::TUNNELLED_V6),
        "edge -> 2001:db8:100::10"
    );
    assert!(
        lab.ping(Host::Gw, addr::EDGE_WAN_V4),
        "gw -> edge across inet"
    );
    assert!(
        !lab.ping(Host::Inet, addr::CLIENT_V4),
        "inet must not reach the LAN"
    );
    assert!(
        !lab.ping(Host::Inet, addr::CLIENT_V6),
        "inet must not reach the LAN (v6)"
    );

    // Counters: the gw's own pings above were counted, nothing else was.
    assert!(lab.nft_counter(counter::GW_TO_BYPASSED_V4) >= 1);
    assert!(lab.nft_counter(counter::GW_TO_BYPASSED_V6) >= 1);
    assert!(lab.nft_counter(counter::EDGE_TO_TUNNELLED_V4) >= 1);
    assert!(lab.nft_counter(counter::EDGE_TO_TUNNELLED_V6) >= 1);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    assert_eq!(lab.nft_counter(counter::EDGE_TO_BYPASSED_V4), 0);
    lab.reset_counters();
    for name in counter::ALL {
        assert_eq!(lab.nft_counter(name), 0, "{name} after reset");
    }
    for _ in 0..3 {
        assert!(lab.ping(Host::Gw, addr::BYPASSED_V4));
    }
    assert_eq!(lab.nft_counter(counter::GW_TO_BYPASSED_V4), 3);
    assert_eq!(lab.nft_counter_bytes(counter::GW_TO_BYPASSED_V4), 3 * 84);

    // The client's traffic to a server is masqueraded by gw: it arrives from
    // the gw WAN address, never from the LAN.
    assert!(
        lab.ping(Host::Client, addr::BYPASSED_V4),
        "client -> server v4 via NAT"
    );
    assert!(
        lab.ping(Host::Client, addr::BYPASSED_V6),
        "client -> server v6 via NAT"
    );
    assert_eq!(lab.nft_counter(counter::GW_TO_BYPASSED_V4), 4);
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V6), 0);

    // Only documentation ranges, and no way out of the lab.
    for h in Host::ALL {
        let routes = lab.run_ok(h, &["ip", "-4", "route", "show", "table", "all"]);
        for line in routes.lines() {
            for bad in ["10.", "172.", "192.168."] {
                assert!(!line.contains(&format!(" {bad}")), "{h}: {line}");
            }
        }
    }
    let inet_routes = lab.run_ok(Host::Inet, &["ip", "route"]);
    assert!(!inet_routes.contains("default"), "inet: {inet_routes}");

    drop(lab);
    assert_gone(&made);
}

#[test]
fn peer_serves_http_and_udp_through_nat() {
    if !crate::require_root("peer_serves_http_and_udp_through_nat") {
        return;
    }
    let lab = Lab::new();
    let peer = lab.spawn_peer(Host::Inet, "peer", 8080, 8081);
    lab.wait_tcp(
        Host::Inet,
        SocketAddr::new(addr::BYPASSED_V4.into(), 8080),
        Duration::from_secs(5),
    );
    lab.wait_udp(
        Host::Inet,
        SocketAddr::new(addr::BYPASSED_V6.into(), 8081),
        Duration::from_secs(5),
    );

    check_http(&lab);
    check_udp(&lab);

    let log = lab.log("peer");
    assert!(
        log.contains(&format!("http {} GET /whoami", addr::GW_WAN_V4)),
        "{log}"
    );
    assert!(
        log.contains(&format!("http {} GET /whoami", addr::GW_WAN_V6)),
        "{log}"
    );
    assert!(
        log.contains(&format!("http {} POST /sink 123456", addr::GW_WAN_V4)),
        "{log}"
    );
    assert!(
        log.contains(&format!("udp {} 100", addr::GW_WAN_V4)),
        "{log}"
    );
    assert!(!log.contains("::ffff:"), "{log}");

    assert!(lab.is_running(peer));
    let status = lab.stop(peer);
    assert!(!lab.is_running(peer));
    assert!(
        status.success(),
        "peer.py should exit 0 on SIGTERM: {status:?}"
    );
}

/// curl through the gateway's NAT and from the edge.
fn check_http(lab: &Lab) {
    let curl = |url: &str, extra: &[&str]| {
        let mut argv = vec!["curl", "-sS", "--max-time", "10"];
        argv.extend_from_slice(extra);
        argv.push(url);
        lab.run_ok(Host::Client, &argv)
    };
    let who4 = curl("http://203.0.113.20:8080/whoami", &[]);
    assert_eq!(who4, format!("{}\n", addr::GW_WAN_V4));
    let who6 = curl("http://[2001:db8:100::20]:8080/whoami", &[]);
    assert_eq!(who6, format!("{}\n", addr::GW_WAN_V6));
    let direct = lab.run_ok(
        Host::Edge,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://203.0.113.10:8080/whoami",
        ],
    );
    assert_eq!(direct, format!("{}\n", addr::EDGE_WAN_V4));

    let size = lab.run_ok(
        Host::Client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "http://203.0.113.20:8080/bytes/3000000",
        ],
    );
    assert_eq!(size, "3000000");
    let sink_file = lab.dir().join("sink.bin");
    std::fs::write(&sink_file, vec![7u8; 123_456]).unwrap();
    let sha = crate::sha256_file(&sink_file);
    let sink = curl(
        "http://203.0.113.20:8080/sink",
        &["--data-binary", &format!("@{}", sink_file.display())],
    );
    assert_eq!(sink, format!("{} 123456 {sha}\n", addr::GW_WAN_V4));
    let chunked = curl(
        "http://[2001:db8:100::20]:8080/sink",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", sink_file.display()),
        ],
    );
    assert_eq!(chunked, format!("{} 123456 {sha}\n", addr::GW_WAN_V6));
}

/// udp-probe through the NAT, and into the void.
fn check_udp(lab: &Lab) {
    let probe = lab.udp_probe(
        Host::Client,
        SocketAddr::new(addr::BYPASSED_V4.into(), 8081),
        100,
        5,
        Duration::from_secs(2),
    );
    assert_eq!((probe.sent, probe.received), (5, 5), "{probe:?}");
    assert_eq!(probe.seen_as, vec![addr::GW_WAN_V4.to_string()]);
    let probe6 = lab.udp_probe(
        Host::Client,
        SocketAddr::new(addr::BYPASSED_V6.into(), 8081),
        1400,
        3,
        Duration::from_secs(2),
    );
    assert_eq!(probe6.received, 3, "{probe6:?}");
    assert_eq!(probe6.seen_as, vec![addr::GW_WAN_V6.to_string()]);

    // inet has no route back to the LAN: nothing comes back.
    let lost = lab.udp_probe(
        Host::Inet,
        SocketAddr::new(addr::CLIENT_V4.into(), 9),
        64,
        2,
        Duration::from_millis(300),
    );
    assert_eq!(lost.received, 0);
}

#[test]
fn run_times_out_and_reports() {
    if !crate::require_root("run_times_out_and_reports") {
        return;
    }
    let lab = Lab::new();
    let started = Instant::now();
    let out = lab.run_timeout(Host::Client, &["sleep", "20"], Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));

    // A failing command is reported, not a panic.
    let out = lab.run(
        Host::Client,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let err = catch_unwind(AssertUnwindSafe(|| {
        lab.run_ok(Host::Client, &["sh", "-c", "echo visible; exit 1"])
    }))
    .expect_err("run_ok must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("visible"), "{msg}");

    // wait_exit and the log of a short-lived process.
    let id = lab.spawn(Host::Edge, "short", &["sh", "-c", "echo hello; exit 4"]);
    assert_eq!(lab.wait_exit(id, Duration::from_secs(5)).code(), Some(4));
    assert_eq!(lab.log("short"), "hello\n");
}

#[test]
fn teardown_on_panic_kills_processes() {
    if !crate::require_root("teardown_on_panic_kills_processes") {
        return;
    }
    let mut made = Vec::new();
    let mut pids = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new();
        made = names(&lab);
        // One that ignores SIGTERM (must be SIGKILLed) and has a child in
        // its process group; one that stops on SIGTERM.
        let stubborn = lab.spawn(
            Host::Gw,
            "stubborn",
            &["sh", "-c", "trap '' TERM; sleep 60 & echo $!; wait"],
        );
        let plain = lab.spawn(Host::Inet, "plain", &["sleep", "60"]);
        lab.wait_for("the stubborn shell's child", Duration::from_secs(5), || {
            !lab.log("stubborn").is_empty()
        });
        let grandchild: u32 = lab.log("stubborn").trim().parse().unwrap();
        pids = vec![lab.pid(stubborn), lab.pid(plain), grandchild];
        assert!(lab.is_running(stubborn) && lab.is_running(plain));
        panic!("deliberate panic with a lab alive");
    }));
    assert!(result.is_err());
    assert_gone(&made);
    for pid in pids {
        assert!(!sys::pid_alive(pid), "pid {pid} survived the lab");
    }
}

#[test]
fn cleanup_stale_removes_orphans_only() {
    if !crate::require_root("cleanup_stale_removes_orphans_only") {
        return;
    }
    let live = Lab::new();
    // A pid that is certainly gone: a child we started and reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(!sys::pid_alive(dead));
    let stale = format!("sl{dead}x9999-gw");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());

    let removed = cleanup_stale();
    assert!(removed.contains(&stale), "{removed:?}");
    assert_gone(std::slice::from_ref(&stale));
    // Our own live lab is untouched.
    let list = namespaces();
    for name in names(&live) {
        assert!(list.contains(&name), "{name} was removed:\n{list}");
    }
    assert!(live.ping(Host::Client, IpAddr::from(addr::GW_LAN_V4)));
}

/// A lab with three edges: each extra edge has its namespace, link,
/// addresses and route; the edges reach the servers (each counted under
/// its own address); the gateway reaches each edge through that edge's
/// delay relay in `inet`, with the delay; and all of it goes on drop.
#[test]
fn three_edges_each_behind_a_delay_relay() {
    use std::io::{Read as _, Write as _};

    use crate::{
        deploy::EDGE_SITES,
        edge_lab::in_netns,
        relay::{Relay, RelayConfig},
    };

    if !crate::require_root("three_edges_each_behind_a_delay_relay") {
        return;
    }
    let lab = Lab::with_edges(3);
    let made: Vec<String> = lab.hosts().map(|h| lab.ns(h).to_owned()).collect();
    assert_eq!(made.len(), 8);
    assert_eq!(lab.edges(), &Host::EDGES);
    let list = namespaces();
    for name in &made {
        assert!(list.contains(name.as_str()), "{name} missing:\n{list}");
    }
    for site in &EDGE_SITES {
        assert!(
            lab.ping(site.host, addr::TUNNELLED_V4),
            "{} -> server",
            site.name
        );
        assert!(lab.ping(Host::Gw, site.wan_v4), "gw -> {}", site.name);
        assert!(
            !lab.ping(site.host, addr::CLIENT_V4),
            "{} must not reach the LAN",
            site.name
        );
        assert!(lab.nft_counter(site.to_tunnelled_v4) >= 1, "{}", site.name);
    }
    assert!(
        lab.ping(Host::Edge3, addr::TUNNELLED_V6),
        "edge3 -> server v6"
    );

    // A relay per edge, 5/20/40 ms each way; an echo server on each edge.
    let delays = [5u64, 20, 40];
    let relays: Vec<Relay<'_>> = EDGE_SITES
        .iter()
        .zip(delays)
        .map(|(site, ms)| {
            let cfg = RelayConfig::new(site.relay_addr(), site.addr(), Duration::from_millis(ms));
            Relay::start(&lab, Host::Inet, cfg)
        })
        .collect();
    std::thread::scope(|s| {
        for site in &EDGE_SITES {
            let ns = lab.ns(site.host).to_owned();
            s.spawn(move || {
                crate::netns::enter(&ns).unwrap();
                let l = std::net::TcpListener::bind(site.addr()).unwrap();
                let (mut c, _) = l.accept().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut b = [0u8; 64];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 || c.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        for ((site, relay), ms) in EDGE_SITES.iter().zip(&relays).zip(delays) {
            lab.wait_tcp(site.host, site.addr(), Duration::from_secs(5));
            let rtt = in_netns(&lab, Host::Gw, || {
                let mut c = std::net::TcpStream::connect_timeout(
                    &relay.local_addr(),
                    Duration::from_secs(5),
                )
                .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let t0 = Instant::now();
                c.write_all(b"hello").unwrap();
                let mut b = [0u8; 5];
                c.read_exact(&mut b).unwrap();
                assert_eq!(&b, b"hello");
                t0.elapsed()
            });
            eprintln!(
                "selftest: gw -> {} through its {ms} ms relay: {rtt:?}",
                site.name
            );
            assert!(
                rtt >= Duration::from_millis(2 * ms),
                "{}: {rtt:?}",
                site.name
            );
            assert_eq!(relay.stats().accepted, 1);
        }
    });
    drop(relays);
    drop(lab);
    assert_gone(&made);
}
