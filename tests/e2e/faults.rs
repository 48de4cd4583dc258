//! The gateway under faults and operator stops, with traffic to the
//! tunnelled servers flowing from the LAN the whole time: a worker that
//! leaves its loop, hangs or panics (the test-only `SLUICE_FAULT` hooks of
//! the `fault-injection` build), a stop and a restart, and the gateway's own
//! addresses changing under it. Not one packet for a tunnelled destination
//! may leave the gateway's WAN directly (the `inet` namespace's nftables
//! counters watch the wire), the gateway must exit non-zero on a fault,
//! and a restart must adopt the pinned classifier and carry traffic again.
//! Only the operator's `sluice gateway detach` hands the LAN back to the
//! kernel's plain routing.
use std::{
    os::unix::process::ExitStatusExt as _,
    process::ExitStatus,
    time::{Duration, Instant},
};

use super::{HTTP, UDP, bin, curl, logs, url};
use sluice_lab::{Host, Lab, ProcId, addr, counter, deploy::Sluice, require_root};

const SIGTERM: i32 = 15;
const SIGABRT: i32 = 6;
/// `EX_SOFTWARE`: the gateway stopped on a fault.
const EXIT_FAULT: i32 = 70;

/// Pings from the client to both tunnelled servers, 20 a second each for
/// `secs` seconds (bounded: `-c` and `-w`).
fn traffic(lab: &Lab, secs: u32) -> [ProcId; 2] {
    let count = (secs * 20).to_string();
    let deadline = (secs + 5).to_string();
    let ping = |name: &str, dst: String| {
        lab.spawn(
            Host::Client,
            name,
            &[
                "ping", "-n", "-q", "-i", "0.05", "-W", "1", "-c", &count, "-w", &deadline, &dst,
            ],
        )
    };
    [
        ping("ping4", addr::TUNNELLED_V4.to_string()),
        ping("ping6", addr::TUNNELLED_V6.to_string()),
    ]
}

/// Waits for the pings to end by themselves.
fn wait_traffic(lab: &Lab, pings: [ProcId; 2], secs: u32) {
    for p in pings {
        lab.wait_exit(p, Duration::from_secs(u64::from(secs) + 15));
    }
}

/// Nothing for the tunnelled servers left the gateway's WAN directly.
fn assert_no_leak(lab: &Lab, when: &str) {
    for c in [counter::GW_TO_TUNNELLED_V4, counter::GW_TO_TUNNELLED_V6] {
        assert_eq!(
            lab.nft_counter(c),
            0,
            "{when}: packets to a tunnelled server left the WAN directly ({c})\n{}",
            logs(lab)
        );
    }
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0, "{when}");
    assert_eq!(lab.nft_counter(counter::LAN_LEAK_V6), 0, "{when}");
}

/// How often `needle` occurs in the gateway's log.
fn log_count(lab: &Lab, needle: &str) -> usize {
    lab.log("gateway").matches(needle).count()
}

/// A restart adopts the pinned link and the tunnelled server answers
/// through the edge again.
fn restart_adopts(lab: &Lab, s: &mut Sluice<'_>) {
    let adopted = log_count(lab, "adopted the link pinned");
    s.start_gateway();
    assert_eq!(
        log_count(lab, "adopted the link pinned"),
        adopted + 1,
        "the restarted gateway did not adopt the pinned link\n{}",
        logs(lab)
    );
    assert_eq!(
        curl(lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::EDGE_WAN_V4.to_string()
    );
    assert_eq!(
        curl(lab, &["-6", &url(addr::TUNNELLED_V6, "/whoami")]).trim(),
        addr::EDGE_WAN_V6.to_string()
    );
}

/// [`fault_in`] in the first worker, `sluice-q0`.
fn fault_scenario(action: &str, sigterm: bool) -> ExitStatus {
    fault_in("sluice-q0", action, sigterm)
}

/// Starts sluice with `SLUICE_FAULT=<action>:<thread>` armed on a trigger
/// file, runs traffic, pulls the trigger, and checks that the gateway
/// exits by itself, leaks nothing, keeps the classifier pinned and that a
/// restart adopts it. With `sigterm`, a SIGTERM follows the fault at once
/// (before the watchdog's 2 s). Returns the gateway's exit status.
fn fault_in(thread: &str, action: &str, sigterm: bool) -> ExitStatus {
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    s.start_edge();
    let trigger = lab.dir().join("fault-now");
    let fault = format!("{action}:{thread}");
    let trigger_s = trigger.to_string_lossy().into_owned();
    s.start_gateway_env(&[
        ("SLUICE_FAULT", &fault),
        ("SLUICE_FAULT_TRIGGER", &trigger_s),
    ]);
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::EDGE_WAN_V4.to_string()
    );
    lab.reset_counters();
    let secs = 10;
    let pings = traffic(&lab, secs);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&trigger, b"now").expect("writing the trigger");
    let id = s.gateway.take().expect("gateway");
    if sigterm {
        // The worker hangs within 100 ms of the trigger.
        std::thread::sleep(Duration::from_millis(300));
        lab.signal(id, SIGTERM);
    }
    let t0 = Instant::now();
    let status = lab.wait_exit(id, Duration::from_secs(15));
    eprintln!(
        "faults: {action}{}: the gateway exited ({status}) {:?} after the trigger",
        if sigterm { " + SIGTERM" } else { "" },
        t0.elapsed()
    );
    // Traffic goes on against the stopped gateway.
    wait_traffic(&lab, pings, secs);
    assert_no_leak(&lab, &format!("after the {action} fault"));
    assert!(
        s.classifier_pin().exists() && s.xdp_on_lan(),
        "the classifier did not stay attached and pinned after the {action} fault\n{}",
        logs(&lab)
    );
    // A restart (without the fault) adopts the pin and carries traffic.
    std::fs::remove_file(&trigger).expect("removing the trigger");
    restart_adopts(&lab, &mut s);
    assert_no_leak(&lab, "after the restart");
    status
}

#[test]
fn a_worker_that_fails_stops_the_gateway_nonzero_failing_closed() {
    if !require_root("a_worker_that_fails_stops_the_gateway_nonzero_failing_closed") {
        return;
    }
    let status = fault_scenario("exit", false);
    assert_eq!(
        status.code(),
        Some(EXIT_FAULT),
        "a worker that left its loop: exit status {status}"
    );
}

#[test]
fn a_domain_bypass_thread_that_fails_stops_the_gateway_nonzero_failing_closed() {
    if !require_root("a_domain_bypass_thread_that_fails_stops_the_gateway_nonzero_failing_closed") {
        return;
    }
    let status = fault_in("sluice-dns", "exit", false);
    assert_eq!(
        status.code(),
        Some(EXIT_FAULT),
        "the domain bypass thread left its loop: exit status {status}"
    );
}

#[test]
fn a_worker_that_hangs_is_noticed_and_stops_the_gateway_nonzero_failing_closed() {
    if !require_root("a_worker_that_hangs_is_noticed_and_stops_the_gateway_nonzero_failing_closed")
    {
        return;
    }
    let status = fault_scenario("hang", false);
    assert_eq!(
        status.code(),
        Some(EXIT_FAULT),
        "a worker that hung: exit status {status}"
    );
}

#[test]
fn sigterm_while_a_worker_hangs_exits_nonzero_without_a_panic() {
    if !require_root("sigterm_while_a_worker_hangs_exits_nonzero_without_a_panic") {
        return;
    }
    let status = fault_scenario("hang", true);
    assert_eq!(
        status.code(),
        Some(EXIT_FAULT),
        "SIGTERM with a hung worker: exit status {status} (101 is a panic)"
    );
}

#[test]
fn a_panicking_worker_aborts_the_process_failing_closed() {
    if !require_root("a_panicking_worker_aborts_the_process_failing_closed") {
        return;
    }
    let status = fault_scenario("panic", false);
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "a worker that panicked: exit status {status} (the process must abort)"
    );
}

#[test]
fn stop_and_restart_with_traffic_never_leak_and_only_detach_restores_plain_routing() {
    if !require_root(
        "stop_and_restart_with_traffic_never_leak_and_only_detach_restores_plain_routing",
    ) {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::start(&lab, bin());
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::EDGE_WAN_V4.to_string()
    );
    lab.reset_counters();
    let secs = 10;
    let pings = traffic(&lab, secs);
    std::thread::sleep(Duration::from_secs(1));
    // A service restart: stop, a second without a gateway, start.
    let status = lab.stop(s.gateway.take().expect("gateway"));
    assert!(status.success(), "a stop on SIGTERM: exit status {status}");
    std::thread::sleep(Duration::from_secs(1));
    let pinned = (s.classifier_pin().exists(), s.xdp_on_lan());
    s.start_gateway();
    wait_traffic(&lab, pings, secs);
    assert_no_leak(&lab, "stop and restart");
    assert_eq!(
        pinned,
        (true, true),
        "(pin, XDP) after a stop\n{}",
        logs(&lab)
    );
    assert!(
        lab.log("gateway").contains("adopted the link pinned"),
        "the restart did not adopt the pin\n{}",
        logs(&lab)
    );
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::EDGE_WAN_V4.to_string()
    );

    // The operator's command is refused while a gateway runs.
    let out = s.gateway_command(&["detach"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("another sluice gateway runs here"),
        "detach while running: {out:?}"
    );
    assert!(s.classifier_pin().exists());

    // Stopped, then detached: the pin and the program go, and only now is
    // the LAN's traffic the kernel's plain routing (must-tunnel included).
    let status = lab.stop(s.gateway.take().expect("gateway"));
    assert!(status.success(), "second stop: exit status {status}");
    assert!(s.classifier_pin().exists() && s.xdp_on_lan());
    lab.reset_counters();
    let out = lab.run(
        Host::Client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &url(addr::TUNNELLED_V4, "/whoami"),
        ],
    );
    assert!(!out.status.success(), "reachable while stopped: {out:?}");
    assert_no_leak(&lab, "stopped, not detached");
    let out = s.gateway_command(&["detach"]);
    assert!(
        out.status.success(),
        "sluice gateway detach: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s.classifier_pin().exists(), "pin left by detach");
    assert!(!s.xdp_on_lan(), "XDP program left by detach");
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::GW_WAN_V4.to_string(),
        "after detach the kernel routes the LAN directly"
    );
    assert!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4) > 0);
}

#[test]
fn the_classifier_follows_the_gateway_addresses() {
    if !require_root("the_classifier_follows_the_gateway_addresses") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    s.start_edge();
    // At start the gateway also holds the tunnelled servers' addresses
    // (a WAN address it is about to lose): frames to them pass to its
    // kernel.
    let v4 = format!("{}/32", addr::TUNNELLED_V4);
    let v6 = format!("{}/128", addr::TUNNELLED_V6);
    lab.run_ok(Host::Gw, &["ip", "addr", "add", &v4, "dev", "wan0"]);
    lab.run_ok(
        Host::Gw,
        &["ip", "addr", "add", &v6, "dev", "wan0", "nodad"],
    );
    s.start_gateway();
    // The addresses go: from now on they are any other destination, and
    // policy tunnels them. A stale entry would pass the frames to the
    // gateway's kernel, which routes them out of the WAN.
    lab.run_ok(Host::Gw, &["ip", "addr", "del", &v4, "dev", "wan0"]);
    lab.run_ok(Host::Gw, &["ip", "addr", "del", &v6, "dev", "wan0"]);
    std::thread::sleep(Duration::from_secs(1));
    lab.reset_counters();
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::EDGE_WAN_V4.to_string(),
        "a removed gateway address is still passed to the gateway's kernel"
    );
    assert_eq!(
        curl(&lab, &["-6", &url(addr::TUNNELLED_V6, "/whoami")]).trim(),
        addr::EDGE_WAN_V6.to_string(),
        "a removed gateway address is still passed to the gateway's kernel"
    );
    assert_no_leak(&lab, "after the gateway's addresses were removed");

    // A new LAN address (a replaced one) passes to the gateway itself:
    // the client's ping is answered by the gateway's kernel, counted as
    // `pass_local`, not tunnelled.
    let new = "192.0.2.77";
    lab.run_ok(
        Host::Gw,
        &["ip", "addr", "add", "192.0.2.77/24", "dev", "lan0"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = s.gateway_metric("sluice_xdp_packets_total", "verdict=\"pass_local\"");
    assert!(
        lab.ping(Host::Client, new.parse::<std::net::IpAddr>().unwrap()),
        "the gateway's new address {new} did not answer\n{}",
        logs(&lab)
    );
    let after = s.gateway_metric("sluice_xdp_packets_total", "verdict=\"pass_local\"");
    assert!(
        after > before,
        "frames to the new address were not passed as local ({before} -> {after})\n{}",
        logs(&lab)
    );
    assert!(
        lab.log("gateway").contains("local addresses changed"),
        "{}",
        logs(&lab)
    );
}

/// The lab's gateway configuration with its `[bypass]` lists moved into a
/// default profile that also has `setting`.
fn default_profile(c: &str, setting: &str) -> String {
    let head = c.split("[bypass]").next().expect("the lab's gateway.toml");
    format!(
        "{head}[[profile]]\nname = \"default\"\n\
         exclude = [\"203.0.113.20/32\", \"2001:db8:100::20/128\"]\n\
         domains = [\"*.bypass.example\"]\n{setting}\n"
    )
}

/// Review finding (issue 14): the stop and fault paths told the pinned
/// classifier that the tunnel went down (a worker that stops zeroes its
/// gauges, and the main loop passed that on), so a profile with
/// `fail = "open"` sent must-tunnel traffic direct for as long as no
/// gateway ran. A stop is no tunnel outage now: with a fail-open default
/// profile, a worker fault and a SIGTERM stop, each with traffic flowing,
/// leak nothing, and each restart adopts the pin.
#[test]
fn a_fail_open_profile_does_not_go_direct_while_no_gateway_runs() {
    if !require_root("a_fail_open_profile_does_not_go_direct_while_no_gateway_runs") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), |c| default_profile(c, "fail = \"open\""));
    s.start_edge();
    let trigger = lab.dir().join("fault-now");
    let trigger_s = trigger.to_string_lossy().into_owned();
    s.start_gateway_env(&[
        ("SLUICE_FAULT", "exit:sluice-q0"),
        ("SLUICE_FAULT_TRIGGER", &trigger_s),
    ]);
    // The main loop tells the classifier within 100 ms of the tunnel.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
        addr::EDGE_WAN_V4.to_string()
    );
    // A worker fault, traffic going on for 5 s after the exit.
    lab.reset_counters();
    let secs = 8;
    let pings = traffic(&lab, secs);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&trigger, b"now").expect("writing the trigger");
    let status = lab.wait_exit(s.gateway.take().expect("gateway"), Duration::from_secs(15));
    assert_eq!(status.code(), Some(EXIT_FAULT), "{}", logs(&lab));
    wait_traffic(&lab, pings, secs);
    assert_no_leak(&lab, "fail-open profile, after a worker fault");
    std::fs::remove_file(&trigger).expect("removing the trigger");
    restart_adopts(&lab, &mut s);
    // A stop, 3 s without a gateway, a restart.
    lab.reset_counters();
    let pings = traffic(&lab, secs);
    std::thread::sleep(Duration::from_secs(1));
    let status = lab.stop(s.gateway.take().expect("gateway"));
    assert!(status.success(), "a stop on SIGTERM: {status}");
    std::thread::sleep(Duration::from_secs(3));
    restart_adopts(&lab, &mut s);
    wait_traffic(&lab, pings, secs);
    assert_no_leak(&lab, "fail-open profile, across a stop and a restart");
}

/// Review finding (issue 14): a restarted gateway started its tunnels'
/// outage series afresh, so every restart during an outage (a crash loop
/// while the edge is unreachable) granted a new captive-portal grace, and
/// must-tunnel traffic went direct again. The series is kept beside the
/// instance lock now: with a 2 s grace, the edge gone, the grace used
/// up, a restart sends nothing direct.
#[test]
fn a_restart_during_an_outage_grants_no_new_grace() {
    if !require_root("a_restart_during_an_outage_grants_no_new_grace") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), |c| {
        default_profile(c, "captive_portal_grace_secs = 2")
    });
    s.start_edge();
    s.start_gateway();
    // The edge goes: the grace sends traffic direct for 2 s (the profile
    // works), then fails closed.
    lab.reset_counters();
    let pings = traffic(&lab, 6);
    std::thread::sleep(Duration::from_millis(500));
    s.stop_edge();
    wait_traffic(&lab, pings, 6);
    assert!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V4) > 0,
        "the grace sent nothing direct: the test's profile does not apply\n{}",
        logs(&lab)
    );
    lab.reset_counters();
    let pings = traffic(&lab, 2);
    wait_traffic(&lab, pings, 2);
    assert_no_leak(&lab, "after the grace");
    // A restart with the edge still gone: no new grace.
    let status = lab.stop(s.gateway.take().expect("gateway"));
    assert!(status.success(), "a stop on SIGTERM: {status}");
    lab.reset_counters();
    let pings = traffic(&lab, 6);
    s.start_gateway_without_edge();
    wait_traffic(&lab, pings, 6);
    assert_no_leak(&lab, "a restart during the outage, after its grace");
    assert!(
        lab.log("gateway").contains("tunnel outages taken up"),
        "{}",
        logs(&lab)
    );
}
