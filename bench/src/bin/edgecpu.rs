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
//! With `--baseline PATH`, a third configuration: the edge of another
//! `sluice` binary (an earlier build, e.g. of the commit before the
//! workers existed), with the same configuration but no `workers` line:
//! the single-threaded edge as it was, in the same run.
//!
//! `cargo build --release -p sluice -p sluice-bench`, then, as root:
//! `target/release/edgecpu --sluice target/release/sluice [--rounds 5]
//! [--seconds 10] [--workers N] [--baseline OLD_SLUICE] [--out bench/out]`.
//! No builds while it runs.
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
    /// Also sample the edge with `perf record -g` during each run, into
    /// this directory (for where its kernel time goes; perf's own cost
    /// lands in the figures of such a run).
    perf: Option<PathBuf>,
    baseline: Option<PathBuf>,
    rounds: usize,
    seconds: u64,
    workers: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        sluice: PathBuf::from("target/release/sluice"),
        baseline: None,
        perf: None,
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
            "--baseline" => a.baseline = Some(val()?.into()),
            "--perf" => a.perf = Some(val()?.into()),
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

/// utime and stime of process `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields follow the last ')'.
    let rest = s.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime, stime))
}

/// Busy ticks of all CPUs (user, nice, system, irq, softirq, steal).
fn machine_busy() -> Result<u64> {
    Ok(sluice_bench::machine_busy_ticks()?)
}

/// The edge's counters of one run: bytes both ways, packets to the
/// kernel, TUN writes.
#[derive(Clone, Copy, Default)]
struct Counters {
    bytes: u64,
    to_kernel: u64,
    writes: u64,
}

fn counters(s: &Sluice<'_>) -> Counters {
    let m = s.edge_metrics();
    let get = |n: &str| sluice_lab::deploy::sum(&m, n, "");
    Counters {
        bytes: get("sluice_edge_to_kernel_bytes_total") + get("sluice_edge_to_tunnel_bytes_total"),
        to_kernel: get("sluice_edge_to_kernel_packets_total"),
        writes: get("sluice_edge_tun_writes_total"),
    }
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

/// An edge configuration measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    /// This build with `edge.workers = n`.
    Workers(usize),
    /// The `--baseline` binary (no `workers` line).
    Baseline,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Config::Workers(n) => write!(f, "workers {n}"),
            Config::Baseline => f.write_str("baseline"),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
struct Run {
    round: usize,
    config: Config,
    download: bool,
    cpu_s: f64,
    /// Of which in the kernel (stime).
    sys_s: f64,
    gb: f64,
    /// Busy CPU of the whole machine, seconds.
    machine_s: f64,
    /// Packets to the kernel per TUN write.
    per_write: f64,
    gbps: f64,
}

impl Run {
    /// One line: CPU, bytes, the figure, and what explains it.
    fn line(&self) -> String {
        format!(
            "{}: {:.2} CPU-s ({:.2} in the kernel), {:.3} GB, {:.3} CPU-s/GB, machine {:.2} CPU-s/GB, {:.1} packets per TUN write, {:.2} Gbit/s",
            if self.download { "download" } else { "upload" },
            self.cpu_s,
            self.sys_s,
            self.gb,
            self.cpu_per_gb(),
            self.machine_s / self.gb,
            self.per_write,
            self.gbps
        )
    }

    fn cpu_per_gb(&self) -> f64 {
        if self.gb > 0.0 {
            self.cpu_s / self.gb
        } else {
            f64::NAN
        }
    }
}

/// Sets `edge.workers` to `n`, or removes it (`None`).
fn set_workers(s: &Sluice<'_>, n: Option<usize>) {
    s.edit_edge(|c| {
        let mut kept = String::new();
        for l in c.lines().filter(|l| !l.starts_with("workers = ")) {
            kept.push_str(l);
            kept.push('\n');
        }
        match n {
            Some(n) => kept.replacen("[edge]\n", &format!("[edge]\nworkers = {n}\n"), 1),
            None => kept,
        }
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

fn report(runs: &[Run], a: &Args, configs: &[Config]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Edge CPU per GB forwarded, `edge.workers` 1 against {} (one per core){}, {} rounds (order rotated each round), {} s of TCP per direction and run (both branches at once, iperf3 -P 2 each).\n",
        a.workers,
        if a.baseline.is_some() {
            " and the baseline binary's single-threaded edge"
        } else {
            ""
        },
        a.rounds,
        a.seconds
    );
    let _ = writeln!(
        s,
        "| direction | edge | CPU-s/GB min | CPU-s/GB median | vs workers 1 (median, min) | user CPU-s/GB | kernel CPU-s/GB | machine CPU-s/GB | packets per TUN write | Gbit/s |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for download in [false, true] {
        // min and median CPU-s/GB; medians of its user and kernel parts,
        // the machine's CPU-s/GB, packets per write, Gbit/s.
        let pick = |c: Config| -> [f64; 7] {
            let sel: Vec<&Run> = runs
                .iter()
                .filter(|r| r.config == c && r.download == download)
                .collect();
            let med = |f: &dyn Fn(&Run) -> f64| {
                stats(&mut sel.iter().map(|r| f(r)).collect::<Vec<_>>()).1
            };
            let (min, median) = stats(&mut sel.iter().map(|r| r.cpu_per_gb()).collect::<Vec<_>>());
            [
                min,
                median,
                med(&|r| (r.cpu_s - r.sys_s) / r.gb),
                med(&|r| r.sys_s / r.gb),
                med(&|r| r.machine_s / r.gb),
                med(&|r| r.per_write),
                med(&|r| r.gbps),
            ]
        };
        let one = pick(Config::Workers(1));
        let dir = if download { "download" } else { "upload" };
        for &c in configs {
            let x = pick(c);
            let ratio = if c == Config::Workers(1) {
                String::new()
            } else {
                format!("{:.2}, {:.2}", x[1] / one[1], x[0] / one[0])
            };
            let _ = writeln!(
                s,
                "| {dir} | {c} | {:.3} | {:.3} | {ratio} | {:.3} | {:.3} | {:.2} | {:.1} | {:.2} |",
                x[0], x[1], x[2], x[3], x[4], x[5], x[6]
            );
        }
    }
    let _ = writeln!(s, "\nEvery run:\n");
    for r in runs {
        let _ = writeln!(s, "- round {} {} {}", r.round, r.config, r.line());
    }
    s
}

#[allow(
    clippy::too_many_lines,
    reason = "the measurement loop, read top to bottom"
)]
fn main() -> Result<()> {
    let a = parse_args()?;
    if !sluice_lab::require_root("edgecpu") {
        bail!("edgecpu needs root");
    }
    if let Some(d) = &a.perf {
        std::fs::create_dir_all(d)?;
    }
    // Ctrl-C or SIGTERM tears the lab down (Drop does not run then).
    if let Err(e) = sluice_lab::teardown_on_signal() {
        eprintln!("warning: no teardown on Ctrl-C/SIGTERM: {e}");
    }
    let lab = Lab::new();
    let mut s = Sluice::prepare(&lab, &a.sluice, str::to_string);
    let mut base = a
        .baseline
        .as_ref()
        .map(|b| Sluice::prepare(&lab, b, str::to_string));
    let mut configs = vec![Config::Workers(1), Config::Workers(a.workers)];
    if base.is_some() {
        configs.push(Config::Baseline);
    }
    set_workers(&s, Some(1));
    s.start_edge();
    s.start_gateway();
    let gw2 = s.start_second_gateway();
    let tunnels = wait_tunnels(&s, None)?;
    eprintln!("edgecpu: {tunnels} tunnels");
    let mut runs = Vec::new();
    let mut running = Config::Workers(1);
    for round in 1..=a.rounds {
        let mut order = configs.clone();
        order.rotate_left((round - 1) % configs.len());
        for c in order {
            if c != running {
                match running {
                    Config::Baseline => base.as_mut().context("no baseline")?.stop_edge(),
                    Config::Workers(_) => s.stop_edge(),
                }
                match c {
                    Config::Baseline => {
                        set_workers(&s, None);
                        base.as_mut().context("no baseline")?.start_edge();
                    }
                    Config::Workers(n) => {
                        set_workers(&s, Some(n));
                        s.start_edge();
                    }
                }
                running = c;
                wait_tunnels(&s, Some(tunnels))?;
            }
            let edge = match c {
                Config::Baseline => base.as_ref().context("no baseline")?.edge,
                Config::Workers(_) => s.edge,
            };
            let pid = lab.pid(edge.context("no edge")?);
            for download in [false, true] {
                // Settle: the last run's queues drain.
                std::thread::sleep(Duration::from_secs(1));
                let (c0, k0, m0) = (cpu_ticks(pid)?, counters(&s), machine_busy()?);
                let perf = a.perf.as_ref().map(|dir| {
                    let out = dir.join(format!(
                        "round{round}-{}-{}.data",
                        c.to_string().replace(' ', ""),
                        if download { "download" } else { "upload" }
                    ));
                    std::process::Command::new("perf")
                        .args([
                            "record",
                            "-q",
                            "-F",
                            "499",
                            "-g",
                            "-p",
                            &pid.to_string(),
                            "-o",
                        ])
                        .arg(out)
                        .args(["--", "sleep", &a.seconds.to_string()])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                });
                let gbps = traffic(&lab, a.seconds, download)?;
                if let Some(Ok(mut p)) = perf {
                    let _ = p.wait();
                }
                let (c1, k1, m1) = (cpu_ticks(pid)?, counters(&s), machine_busy()?);
                let writes = k1.writes.saturating_sub(k0.writes);
                let r = Run {
                    round,
                    config: c,
                    download,
                    cpu_s: ((c1.0 + c1.1) - (c0.0 + c0.1)) as f64 / TICKS,
                    sys_s: (c1.1 - c0.1) as f64 / TICKS,
                    gb: k1.bytes.saturating_sub(k0.bytes) as f64 / 1e9,
                    machine_s: m1.saturating_sub(m0) as f64 / TICKS,
                    per_write: if writes > 0 {
                        k1.to_kernel.saturating_sub(k0.to_kernel) as f64 / writes as f64
                    } else {
                        f64::NAN
                    },
                    gbps,
                };
                eprintln!("edgecpu: round {round} {c} {}", r.line());
                runs.push(r);
            }
        }
    }
    lab.stop(gw2);
    s.stop_gateway_and_detach();
    s.stop_edge();
    if let Some(b) = base.as_mut() {
        b.stop_edge();
    }
    drop(lab);
    let text = report(&runs, &a, &configs);
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("edgecpu.md"), &text)?;
    println!("{text}");
    Ok(())
}
