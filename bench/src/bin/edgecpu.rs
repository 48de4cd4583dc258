//! The edge's own CPU time per GB forwarded, one worker against one
//! worker per core, in one run (issue 16, item 6, third target).
//!
//! Both branches of the lab (`client` behind `gw`, `client2` behind `gw2`)
//! send TCP through their tunnels to the tunnelled server in `inet` at
//! once (iperf3, two streams each, bounded in time), upload and then
//! download; the edge runs with `edge.workers = 1` (the single-threaded
//! edge of old) and with one worker per core, alternating within each
//! round (the order flips every round, so a slow minute of a shared
//! machine does not hit one configuration only). The gateways stay up;
//! only the edge restarts between configurations (the gateways
//! reconnect).
//!
//! Measured per run: the edge process's CPU time (utime + stime of
//! `/proc/<pid>/stat`: every thread of the edge, nothing else) and the
//! bytes it forwarded both ways (its own counters,
//! `sluice_edge_to_kernel_bytes_total` + `sluice_edge_to_tunnel_bytes_total`,
//! inner IP bytes). The figure is CPU seconds per GB; reported per
//! configuration and direction as min and median over the rounds, with
//! the ratio of one per core to one worker.
//!
//! `cargo build --release -p sluice -p sluice-bench`, then, as root:
//! `target/release/edgecpu --sluice target/release/sluice [--rounds 5]
//! [--seconds 10] [--workers N] [--out bench/out]`. No builds while it
//! runs.
#![allow(clippy::cast_precision_loss)]

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sluice_lab::{Host, Lab, addr, deploy::Sluice};

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`).
const TICKS: f64 = 100.0;

struct Args {
    sluice: PathBuf,
    rounds: usize,
    seconds: u64,
    workers: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        sluice: PathBuf::from("target/release/sluice"),
        rounds: 5,
        seconds: 10,
        workers: std::thread::available_parallelism()
            .map_or(2, std::num::NonZero::get)
            .max(2),
        out: PathBuf::from("bench/out"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sluice" => a.sluice = val()?.into(),
            "--rounds" => a.rounds = val()?.parse()?,
            "--seconds" => a.seconds = val()?.parse()?,
            "--workers" => a.workers = val()?.parse()?,
            "--out" => a.out = val()?.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.rounds == 0 || a.seconds == 0 || a.seconds > 60 || a.workers < 2 {
        bail!("--rounds > 0, --seconds 1 to 60, --workers >= 2");
    }
    Ok(a)
}

/// utime + stime of process `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields follow the last ')'.
    let rest = s.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Inner bytes the edge forwarded, both ways.
fn edge_bytes(s: &Sluice<'_>) -> u64 {
    let m = s.edge_metrics();
    sluice_lab::deploy::sum(&m, "sluice_edge_to_kernel_bytes_total", "")
        + sluice_lab::deploy::sum(&m, "sluice_edge_to_tunnel_bytes_total", "")
}

/// Waits until the edge holds `want` tunnels (at least 2 the first time,
/// then as many as before: the gateways reconnect after a restart) and the
/// count has stayed so for a second.
fn wait_tunnels(s: &Sluice<'_>, want: Option<u64>) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        let n = s.edge_metric("sluice_edge_tunnels", "");
        let ok = want.map_or(n >= 2, |w| n == w);
        if n != last.0 {
            last = (n, Instant::now());
        } else if ok && last.1.elapsed() >= Duration::from_secs(1) {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the gateways' tunnels did not come up (edge holds {})",
        last.0
    )
}

/// One direction's traffic from both clients at once; returns the
/// goodput (Gbit/s) the servers saw.
fn traffic(lab: &Lab, secs: u64, download: bool) -> Result<f64> {
    let dst = addr::TUNNELLED_V4.to_string();
    let secs_s = secs.to_string();
    let servers: Vec<_> = [("5211", "iperf3-a"), ("5212", "iperf3-b")]
        .iter()
        .map(|(port, name)| {
            let id = lab.spawn(
                Host::Inet,
                name,
                &["iperf3", "-s", "-1", "-B", &dst, "-p", port],
            );
            lab.wait_tcp(
                Host::Inet,
                format!("{dst}:{port}").parse().expect("address"),
                Duration::from_secs(5),
            );
            id
        })
        .collect();
    let run = |h: Host, port: &str| {
        let mut argv = vec![
            "iperf3", "-c", &dst, "-p", port, "-t", &secs_s, "-P", "2", "-J",
        ];
        if download {
            argv.push("-R");
        }
        lab.run_timeout(h, &argv, Duration::from_secs(secs + 20))
    };
    let outs = std::thread::scope(|sc| {
        let a = sc.spawn(|| run(Host::Client, "5211"));
        let b = sc.spawn(|| run(Host::Client2, "5212"));
        [a.join(), b.join()]
    });
    for id in servers {
        lab.stop(id);
    }
    let mut gbps = 0.0;
    for o in outs {
        let o = o.map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .with_context(|| format!("iperf3: {}", String::from_utf8_lossy(&o.stderr)))?;
        if let Some(e) = v.get("error") {
            bail!("iperf3: {e}");
        }
        gbps += v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9;
    }
    Ok(gbps)
}

/// One measurement.
#[derive(Clone, Debug)]
struct Run {
    round: usize,
    workers: usize,
    download: bool,
    cpu_s: f64,
    gb: f64,
    gbps: f64,
}

impl Run {
    fn cpu_per_gb(&self) -> f64 {
        if self.gb > 0.0 {
            self.cpu_s / self.gb
        } else {
            f64::NAN
        }
    }
}

fn set_workers(s: &Sluice<'_>, n: usize) {
    s.edit_edge(|c| {
        let mut kept = String::new();
        for l in c.lines().filter(|l| !l.starts_with("workers = ")) {
            kept.push_str(l);
            kept.push('\n');
        }
        kept.replacen("[edge]\n", &format!("[edge]\nworkers = {n}\n"), 1)
    });
}

fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let min = v.first().copied().unwrap_or(f64::NAN);
    let n = v.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    };
    (min, median)
}

fn report(runs: &[Run], a: &Args) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Edge CPU per GB forwarded, `edge.workers` 1 against {} (one per core), {} rounds alternated, {} s of TCP per direction and run (both branches at once, iperf3 -P 2 each).\n",
        a.workers, a.rounds, a.seconds
    );
    let _ = writeln!(
        s,
        "| direction | workers | CPU-s/GB min | CPU-s/GB median | Gbit/s median | ratio (median, min) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for download in [false, true] {
        let pick = |w: usize| -> (f64, f64, f64) {
            let sel: Vec<&Run> = runs
                .iter()
                .filter(|r| r.workers == w && r.download == download)
                .collect();
            let (min, med) = stats(&mut sel.iter().map(|r| r.cpu_per_gb()).collect::<Vec<_>>());
            let (_, gbps) = stats(&mut sel.iter().map(|r| r.gbps).collect::<Vec<_>>());
            (min, med, gbps)
        };
        let one = pick(1);
        let many = pick(a.workers);
        let dir = if download { "download" } else { "upload" };
        let _ = writeln!(
            s,
            "| {dir} | 1 | {:.3} | {:.3} | {:.2} | |",
            one.0, one.1, one.2
        );
        let _ = writeln!(
            s,
            "| {dir} | {} | {:.3} | {:.3} | {:.2} | {:.2}, {:.2} |",
            a.workers,
            many.0,
            many.1,
            many.2,
            many.1 / one.1,
            many.0 / one.0
        );
    }
    let _ = writeln!(
        s,
        "\nEvery run (round, workers, direction: edge CPU s, GB, CPU-s/GB, Gbit/s):\n"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "- round {} workers {} {}: {:.2} s, {:.3} GB, {:.3} CPU-s/GB, {:.2} Gbit/s",
            r.round,
            r.workers,
            if r.download { "download" } else { "upload" },
            r.cpu_s,
            r.gb,
            r.cpu_per_gb(),
            r.gbps
        );
    }
    s
}

fn main() -> Result<()> {
    let a = parse_args()?;
    if !sluice_lab::require_root("edgecpu") {
        bail!("edgecpu needs root");
    }
    let lab = Lab::new();
    let mut s = Sluice::prepare(&lab, &a.sluice, str::to_string);
    set_workers(&s, 1);
    s.start_edge();
    s.start_gateway();
    let gw2 = s.start_second_gateway();
    let tunnels = wait_tunnels(&s, None)?;
    eprintln!("edgecpu: {tunnels} tunnels");
    let mut runs = Vec::new();
    let mut first = true;
    for round in 1..=a.rounds {
        let order = if round % 2 == 1 {
            [1, a.workers]
        } else {
            [a.workers, 1]
        };
        for w in order {
            if !first || w != 1 {
                s.stop_edge();
                set_workers(&s, w);
                s.start_edge();
                wait_tunnels(&s, Some(tunnels))?;
            }
            first = false;
            let pid = lab.pid(s.edge.context("no edge")?);
            for download in [false, true] {
                // Settle: the last run's queues drain.
                std::thread::sleep(Duration::from_secs(1));
                let (c0, b0) = (cpu_ticks(pid)?, edge_bytes(&s));
                let gbps = traffic(&lab, a.seconds, download)?;
                let (c1, b1) = (cpu_ticks(pid)?, edge_bytes(&s));
                let r = Run {
                    round,
                    workers: w,
                    download,
                    cpu_s: (c1 - c0) as f64 / TICKS,
                    gb: (b1 - b0) as f64 / 1e9,
                    gbps,
                };
                eprintln!(
                    "edgecpu: round {round} workers {w} {}: {:.2} CPU-s, {:.3} GB, {:.3} CPU-s/GB, {:.2} Gbit/s",
                    if download { "download" } else { "upload" },
                    r.cpu_s,
                    r.gb,
                    r.cpu_per_gb(),
                    r.gbps
                );
                runs.push(r);
            }
        }
    }
    lab.stop(gw2);
    s.stop_gateway_and_detach();
    s.stop_edge();
    drop(lab);
    let text = report(&runs, &a);
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("edgecpu.md"), &text)?;
    println!("{text}");
    Ok(())
}
