//! `cargo xtask demo`: builds a lab, shows it, exercises it, tears it down.
//!
//! STUB: the sluice gateway and edge are not started yet (the lab part is
//! complete). Ctrl-C (SIGINT), SIGTERM and SIGHUP set a flag that the demo
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

use crate::{Host, Lab, addr};

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
pub fn run(sluice_bin: &Path) -> anyhow::Result<()> {
    install_handler()?;
    STOP.store(false, Ordering::SeqCst);
    println!(
        "demo: sluice binary {} ({})",
        sluice_bin.display(),
        if sluice_bin.exists() {
            "present"
        } else {
            "MISSING"
        }
    );
    println!("demo: building the lab (Ctrl-C tears it down)");
    let lab = Lab::new();
    print_plan(&lab);

    let checks: [(Host, IpAddr, bool, &str); 8] = [
        (
            Host::Client,
            addr::GW_LAN_V4.into(),
            true,
            "client -> gateway LAN",
        ),
        (
            Host::Client,
            addr::GW_LAN_V6.into(),
            true,
            "client -> gateway LAN",
        ),
        (
            Host::Client,
            addr::BYPASSED_V4.into(),
            true,
            "client -> server, masqueraded by gw",
        ),
        (
            Host::Client,
            addr::BYPASSED_V6.into(),
            true,
            "client -> server, masqueraded by gw",
        ),
        (
            Host::Gw,
            addr::EDGE_WAN_V4.into(),
            true,
            "gateway -> edge across inet",
        ),
        (
            Host::Edge,
            addr::TUNNELLED_V4.into(),
            true,
            "edge -> tunnelled server",
        ),
        (
            Host::Edge,
            addr::TUNNELLED_V6.into(),
            true,
            "edge -> tunnelled server",
        ),
        (
            Host::Inet,
            addr::CLIENT_V4.into(),
            false,
            "inet -> client (closed world)",
        ),
    ];
    let mut failed = 0;
    for (from, to, expect, what) in checks {
        if stopped() {
            break;
        }
        let ok = lab.ping(from, to);
        let verdict = if ok == expect { "ok" } else { "UNEXPECTED" };
        if ok != expect {
            failed += 1;
        }
        let got = if ok { "answered" } else { "no answer" };
        println!("demo: ping {from:>6} -> {to:<18} {got:<9} {verdict:<10} ({what})");
    }

    let hold = std::env::var("SLUICE_DEMO_HOLD").is_ok_and(|v| v == "1");
    if hold && !stopped() {
        println!(
            "demo: holding the lab up; try `ip netns exec {} ping {}`. Ctrl-C to tear down.",
            lab.ns(Host::Client),
            addr::BYPASSED_V4
        );
        while !stopped() {
            thread::sleep(Duration::from_millis(100));
        }
    }
    let interrupted = stopped() && !hold;
    println!("demo: tearing down");
    drop(lab);
    println!("demo: lab torn down");
    if interrupted {
        bail!("interrupted");
    }
    if failed > 0 {
        bail!("{failed} lab check(s) gave an unexpected result");
    }
    println!("demo: done (stub: sluice itself is not started yet)");
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
