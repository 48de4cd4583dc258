//! The failover benchmark (issue 16 item 8): a gateway with two edges in
//! the lab (each behind a 5 ms delay relay; priority 0 and 1, failback
//! `immediate`, one warm standby), a UDP echo stream through the tunnel
//! every 10 ms, and the preferred edge killed `--kills` times mid-stream
//! (SIGKILL), then as many silent deaths (its relay blackholed: nothing
//! forwarded, nothing closed). Each time: the time from the death to the
//! first reply through the other edge, the datagrams sent after the death
//! that were lost, and the WAN-side leak counters (must stay 0). Between
//! deaths the edge is restarted and the traffic fails back to it.
//!
//! `failover --sluice target/release/sluice [--kills 20] [--out DIR]`
//! writes `failover.md` (p50, p99, max) and prints it.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sluice_lab::{
    Host, Lab, addr,
    deploy::EdgeSite,
    failover::{EdgePath, Failover, UdpStream},
};

const UDP: u16 = 9000;
const HTTP: u16 = 8080;
const TICK: Duration = Duration::from_millis(10);

struct Death {
    silent: bool,
    recovery: Duration,
    lost: usize,
    leaks: u64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() -> Result<()> {
    let mut sluice = None;
    let mut kills = 20usize;
    let mut out = PathBuf::from("bench/out");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sluice" => sluice = Some(PathBuf::from(it.next().context("--sluice PATH")?)),
            "--kills" => kills = it.next().context("--kills N")?.parse()?,
            "--out" => out = it.next().context("--out DIR")?.into(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let bin = sluice.context("--sluice PATH (the sluice binary) is required")?;
    let bin = std::fs::canonicalize(&bin).with_context(|| format!("{}", bin.display()))?;
    // Ctrl-C or SIGTERM tears the lab down (Drop does not run then).
    if let Err(e) = sluice_lab::teardown_on_signal() {
        eprintln!("warning: no teardown on Ctrl-C/SIGTERM: {e}");
    }
    let lab = Lab::with_edges(2);
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let paths = [
        EdgePath::new(Host::Edge, 5, 0),
        EdgePath::new(Host::Edge2, 5, 1),
    ];
    let mut f = Failover::prepare(
        &lab,
        &bin,
        &paths,
        "standby = 1\nfailback = \"immediate\"",
        str::to_string,
    )
    .start_all();
    let preferred = EdgeSite::of(Host::Edge);
    let dead_ip = IpAddr::V4(preferred.wan_v4);
    let echo: SocketAddr = (addr::TUNNELLED_V4, UDP).into();
    let settle = Duration::from_secs(30);
    f.wait_gauge(
        "sluice_gateway_edge_active",
        preferred.name,
        |v| v > 0.5,
        settle,
    );
    let mut deaths = Vec::new();
    for round in 0..2 * kills {
        let silent = round >= kills;
        // Both edges up (the standby warm) and the preferred one active.
        f.wait_gauge(
            "sluice_gateway_edge_up",
            EdgeSite::of(Host::Edge2).name,
            |v| v > 0.5,
            settle,
        );
        f.wait_gauge(
            "sluice_gateway_edge_active",
            preferred.name,
            |v| v > 0.5,
            settle,
        );
        std::thread::sleep(Duration::from_millis(300));
        lab.reset_counters();
        let stream = UdpStream::start(&lab, Host::Client, echo, TICK, 300);
        std::thread::sleep(Duration::from_secs(1));
        let death = if silent {
            let at = Instant::now();
            f.relay(Host::Edge).blackhole(true);
            at
        } else {
            f.sluice.kill_edge_at(Host::Edge)
        };
        let report = stream.finish();
        let leaks: u64 = lab.leaks().iter().map(|(_, n)| n).sum();
        let Some(rec) = report.recovery(death, dead_ip) else {
            bail!(
                "death {}: no reply through the other edge: {}\n{}",
                round + 1,
                report.summary(),
                f.logs()
            );
        };
        eprintln!(
            "failover: {} {}: first reply through the standby {:?} after; {} lost; leaks {leaks}",
            if silent { "silent death" } else { "kill" },
            round % kills + 1,
            rec.reply,
            rec.lost_after
        );
        deaths.push(Death {
            silent,
            recovery: rec.reply,
            lost: rec.lost_after,
            leaks,
        });
        // Back: the edge returns (restarted, or its path restored and the
        // held connections reset) and the traffic fails back to it.
        if silent {
            f.relay(Host::Edge).blackhole(false);
            f.relay(Host::Edge).cut();
        } else {
            f.sluice.start_edge_at(Host::Edge);
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Failover: 2 edges 5 ms away (priority 0 and 1, one warm standby, failback immediate, probes 100 ms x 3), a UDP echo every 10 ms through the tunnel; the preferred edge killed (SIGKILL) {kills} times, then {kills} silent deaths (relay blackholed). Recovery: from the death to the first reply through the standby. Lost: datagrams sent after the death never answered. Leaks: packets to the tunnelled servers seen leaving the gateway's WAN directly.\n"
    );
    let _ = writeln!(
        md,
        "| death | n | recovery p50 | p99 | max | lost p50 | p99 | max | leaks |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for silent in [false, true] {
        let d: Vec<&Death> = deaths.iter().filter(|d| d.silent == silent).collect();
        let mut rec: Vec<f64> = d.iter().map(|d| d.recovery.as_secs_f64() * 1e3).collect();
        let mut lost: Vec<f64> = d.iter().map(|d| d.lost as f64).collect();
        let leaks: u64 = d.iter().map(|d| d.leaks).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} | {:.0} | {:.0} | {leaks} |",
            if silent {
                "silent (probe loss)"
            } else {
                "SIGKILL"
            },
            d.len(),
            percentile(&mut rec, 50.0),
            percentile(&mut rec, 99.0),
            percentile(&mut rec, 100.0),
            percentile(&mut lost, 50.0),
            percentile(&mut lost, 99.0),
            percentile(&mut lost, 100.0),
        );
    }
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("failover.md"), &md)?;
    print!("{md}");
    if deaths.iter().any(|d| d.leaks > 0) {
        bail!("must-tunnel traffic left directly during a failover");
    }
    Ok(())
}
