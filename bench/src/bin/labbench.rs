//! The lab benchmark: sluice side by side with plain kernel forwarding (no
//! XDP program, and a no-op XDP program in native and in generic mode) in
//! one run, in the namespace lab, with the same traffic and the same CPU
//! pinning for every case.
//!
//! Traffic (iperf3, from `client` to a server in `inet`): TCP with one and
//! with four streams, UDP with 64- and 1400-byte payloads (unlimited rate).
//! And a packet rate whose sender is not the bottleneck: `pktgen` (this
//! crate's generator, `AF_XDP` TX in batches on the client's veth) sends
//! 64-byte frames (18-byte UDP payload, 16 flows) for the same time; an
//! nftables counter where they arrive in `inet` gives the packets per
//! second delivered, and the same generator against an `XDP_DROP` program
//! on the gateway's `lan0` gives the ceiling: what that veth takes at all.
//! CPU pinning, the same for every case: the iperf3 client runs on CPU 0
//! and the server on CPU 1 (a sender sharing a core with its receiver
//! starves it); every tunnel's gateway-side process (sluice gateway,
//! `boringtun`, `wireguard-go`, `OpenVPN` client) on the client's CPU and its edge-side process
//! on the server's (`--pin GW,EDGE`, or `--pin none`); the kernel's own
//! forwarding runs where the packets are. Each load is bounded in time; a
//! measurement that fails (iperf3 errors happen under unlimited UDP floods)
//! is retried twice before the run fails.
//!
//! Output in `--out` (default `bench/out`): `results.md` (the machine, and
//! a table with ratios to each baseline), `results.json`, `results.svg`
//! (bar chart).
//!
//! `--smoke`: one second per case and fewer traffic kinds, for the test
//! suite (the benchmark never rots); its figures mean nothing.
// Report arithmetic: byte and jiffy counts far below 2^52, chart geometry.
#![allow(clippy::cast_precision_loss, clippy::many_single_char_names)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sluice_lab::{Host, Lab, addr, deploy::Sluice};

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Traffic {
    Tcp1,
    Tcp4,
    Udp64,
    Udp1400,
    /// 64-byte frames from `pktgen`, not iperf3.
    UdpGen,
}

impl Traffic {
    const ALL: [Traffic; 5] = [
        Traffic::Tcp1,
        Traffic::Tcp4,
        Traffic::Udp64,
        Traffic::Udp1400,
        Traffic::UdpGen,
    ];

    fn name(self) -> &'static str {
        match self {
            Traffic::Tcp1 => "TCP 1 stream",
            Traffic::Tcp4 => "TCP 4 streams",
            Traffic::Udp64 => "UDP 64 B",
            Traffic::Udp1400 => "UDP 1400 B",
            Traffic::UdpGen => "UDP 64 B (generator)",
        }
    }

    fn iperf_args(self) -> &'static [&'static str] {
        match self {
            // The generator's traffic is not iperf3's (see `measure_gen`).
            Traffic::Tcp1 | Traffic::UdpGen => &[],
            Traffic::Tcp4 => &["-P", "4"],
            Traffic::Udp64 => &["-u", "-b", "0", "-l", "64"],
            Traffic::Udp1400 => &["-u", "-b", "0", "-l", "1400"],
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
struct Row {
    case: &'static str,
    traffic: Traffic,
    /// Goodput received by the server, Gbit/s.
    gbps: f64,
    /// Packets (datagrams or, for TCP, payload bytes / 1448) per second received, millions.
    mpps: f64,
    /// CPU seconds (all cores, user+system+irq+softirq) per GB received.
    cpu_s_per_gb: f64,
    /// Generator traffic: what the generator sent, millions of packets per
    /// second (NaN for iperf3 traffic).
    offered_mpps: f64,
}

struct Args {
    smoke: bool,
    seconds: u64,
    /// Runs per case and traffic; the row with the median Gbit/s is kept.
    repeat: usize,
    out: PathBuf,
    sluice: PathBuf,
    /// CPUs of the gateway-side and the edge-side tunnel processes.
    pin: Option<(usize, usize)>,
    /// Run only the cases whose names contain one of these.
    only: Vec<String>,
    /// Add a native tunnel case with the edge's TUN offload (GRO) off.
    gro_ab: bool,
    /// Only these kinds of traffic.
    traffic: Option<Vec<Traffic>>,
    /// The policy section's gateway: `gateway.rx_frames` (default: the
    /// file's default).
    rx_frames: Option<u32>,
    /// Re-render this `results.json` instead of measuring. The table's
    /// header line (seconds, rounds, pinning) comes from this command line,
    /// not from the file: pass the original run's flags again.
    from_json: Option<PathBuf>,
}

impl Args {
    fn wants(&self, case: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| case.contains(o.as_str()))
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        smoke: false,
        seconds: 5,
        repeat: 3,
        out: PathBuf::from("bench/out"),
        sluice: PathBuf::new(),
        pin: Some((0, 1)),
        only: Vec::new(),
        gro_ab: false,
        traffic: None,
        rx_frames: None,
        from_json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--seconds" => a.seconds = it.next().context("--seconds N")?.parse()?,
            "--repeat" => a.repeat = it.next().context("--repeat N")?.parse::<usize>()?.max(1),
            "--out" => a.out = it.next().context("--out DIR")?.into(),
            "--sluice" => a.sluice = it.next().context("--sluice PATH")?.into(),
            "--pin" => {
                let v = it.next().context("--pin GW,EDGE or --pin none")?;
                a.pin = if v == "none" {
                    None
                } else {
                    let (g, e) = v.split_once(',').context("--pin GW,EDGE")?;
                    Some((g.parse()?, e.parse()?))
                };
            }
            "--only" => {
                a.only = it
                    .next()
                    .context("--only CASE[,CASE...]")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
            }
            "--gro-ab" => a.gro_ab = true,
            "--rx-frames" => a.rx_frames = Some(it.next().context("--rx-frames N")?.parse()?),
            "--from-json" => a.from_json = Some(it.next().context("--from-json PATH")?.into()),
            "--traffic" => {
                let list = it
                    .next()
                    .context("--traffic tcp1,tcp4,udp64,udp1400,udp64gen")?;
                let mut v = Vec::new();
                for t in list.split(',') {
                    v.push(match t {
                        "tcp1" => Traffic::Tcp1,
                        "tcp4" => Traffic::Tcp4,
                        "udp64" => Traffic::Udp64,
                        "udp1400" => Traffic::Udp1400,
                        "udp64gen" => Traffic::UdpGen,
                        other => {
                            bail!(
                                "--traffic: unknown kind {other:?} (tcp1, tcp4, udp64, udp1400, udp64gen)"
                            )
                        }
                    });
                }
                a.traffic = Some(v);
            }
            other => bail!(
                "unknown argument {other:?}; usage: labbench --sluice PATH [--seconds N] [--repeat N] [--pin GW,EDGE|none] [--only CASE,...] [--traffic KIND,...] [--gro-ab] [--rx-frames N] [--from-json PATH] [--out DIR] [--smoke]"
            ),
        }
    }
    if a.sluice.as_os_str().is_empty() && a.from_json.is_none() {
        bail!("--sluice PATH (the sluice binary) is required");
    }
    if a.smoke {
        a.seconds = 1;
        a.repeat = 1;
    }
    Ok(a)
}

/// Busy jiffies of all CPUs (from the first line of /proc/stat).
fn cpu_busy() -> Result<u64> {
    Ok(sluice_bench::machine_busy_ticks()?)
}

/// Waits until the machine is idle again (under 10 % of all CPUs busy over
/// 200 ms; at most 15 s): a flood that outran a tunnel leaves it a queue
/// to drain (TCP-based tunnels hold megabytes), which would otherwise
/// land on the next measurement.
fn settle() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u64;
    while Instant::now() < deadline {
        let b0 = cpu_busy()?;
        std::thread::sleep(Duration::from_millis(200));
        // USER_HZ is 100: 20 jiffies per CPU in 200 ms.
        if cpu_busy()? - b0 <= 2 * cpus {
            return Ok(());
        }
    }
    eprintln!("labbench: the machine did not settle within 15 s; measuring anyway");
    Ok(())
}

/// Runs one measurement from the client to `dst`: iperf3, or the packet
/// generator.
fn measure(lab: &Lab, case: &'static str, dst: &str, t: Traffic, secs: u64) -> Result<Row> {
    if t == Traffic::UdpGen {
        return measure_gen(lab, case, dst, secs);
    }
    measure_from(lab, Host::Client, case, dst, t, secs)
}

/// [`measure`] with the iperf3 client in `from`.
fn measure_from(
    lab: &Lab,
    from: Host,
    case: &'static str,
    dst: &str,
    t: Traffic,
    secs: u64,
) -> Result<Row> {
    let secs_s = secs.to_string();
    let port = "5201";
    // A fresh one-test server for every measurement, bound to the
    // destination (UDP replies must leave from the address the client sent
    // to, or the gateway's NAT cannot match them): an earlier test that
    // died half-way (a UDP flood can kill iperf3's control connection)
    // leaves a long-lived server "busy" for minutes.
    let server = lab.spawn(
        Host::Inet,
        &fresh("iperf3-server"),
        &[
            "taskset", "-c", "1", "iperf3", "-s", "-1", "-B", dst, "-p", port,
        ],
    );
    lab.wait_tcp(
        Host::Inet,
        format!("{dst}:{port}").parse()?,
        Duration::from_secs(5),
    );
    let mut argv = vec![
        "taskset", "-c", "0", "iperf3", "-c", dst, "-p", port, "-t", &secs_s, "-J",
    ];
    argv.extend_from_slice(t.iperf_args());
    // `SLUICE_BENCH_UDP_WINDOW=4M`: iperf3's `-w` for UDP traffic (the
    // server's receive buffer too; capped by the host's
    // `net.core.rmem_max`), to see what the receiving socket's overflow
    // hides. Off by default: every published table uses iperf3's default.
    let window = std::env::var("SLUICE_BENCH_UDP_WINDOW").ok();
    if let (Some(w), Traffic::Udp64 | Traffic::Udp1400) = (window.as_deref(), t) {
        argv.extend_from_slice(&["-w", w]);
    }
    // The server goes whatever happens (a retry starts its own).
    let run = || -> Result<_> {
        settle()?;
        let cpu0 = cpu_busy()?;
        let t0 = Instant::now();
        let out = lab.run_timeout(from, &argv, Duration::from_secs(secs + 20));
        let wall = t0.elapsed().as_secs_f64();
        Ok((out, wall, (cpu_busy()? - cpu0) as f64 / 100.0))
    };
    let res = run();
    lab.stop(server);
    let (out, wall, cpu) = res?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{case} {}: iperf3 output: {}",
            t.name(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v.get("error") {
        bail!("{case} {}: iperf3: {e}", t.name());
    }
    let end = &v["end"];
    let (bytes, packets, dur) = match t {
        Traffic::Tcp1 | Traffic::Tcp4 => {
            let r = &end["sum_received"];
            let bytes = r["bytes"].as_f64().unwrap_or(0.0);
            (
                bytes,
                bytes / 1448.0,
                r["seconds"].as_f64().unwrap_or(secs as f64),
            )
        }
        Traffic::Udp64 | Traffic::Udp1400 | Traffic::UdpGen => {
            let s = &end["sum"];
            let len = if t == Traffic::Udp64 { 64.0 } else { 1400.0 };
            let pk =
                s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
            (pk * len, pk, s["seconds"].as_f64().unwrap_or(secs as f64))
        }
    };
    let dur = if dur > 0.0 { dur } else { wall };
    let gb = bytes / 1e9;
    Ok(Row {
        case,
        traffic: t,
        gbps: bytes * 8.0 / dur / 1e9,
        mpps: packets / dur / 1e6,
        cpu_s_per_gb: if gb > 0.0 { cpu / gb } else { f64::NAN },
        offered_mpps: f64::NAN,
    })
}

/// [`measure`], tried up to three times: iperf3's control connection
/// sometimes dies under an unlimited UDP flood through a slow tunnel.
fn measure_retrying(
    lab: &Lab,
    case: &'static str,
    dst: &str,
    t: Traffic,
    secs: u64,
) -> Result<Row> {
    retrying(case, t, || measure(lab, case, dst, t, secs))
}

/// `f`, tried up to three times.
fn retrying(case: &str, t: Traffic, mut f: impl FnMut() -> Result<Row>) -> Result<Row> {
    let mut last = None;
    for attempt in 1..=3 {
        match f() {
            Ok(r) => return Ok(r),
            Err(e) => {
                eprintln!(
                    "labbench: {case} {} attempt {attempt} failed: {e:#}",
                    t.name()
                );
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt ran")))
}

/// The case name of the generator's ceiling row.
const CEILING: &str = "XDP_DROP ceiling";

/// The nftables table in `inet` that counts (and drops) the generator's
/// frames where they arrive: hook `prerouting`, priority `raw`, before
/// routing, so the same place for every path (from `gw` for kernel
/// forwarding and bypass, from `edge` for the tunnels). Dropped there, so
/// that no server's socket or ICMP port-unreachable work lands on the
/// measurement.
const GEN_SINK: &str = "table inet labbench_pktgen {\n  counter delivered {}\n  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n    ip daddr { 203.0.113.10, 203.0.113.20 } udp dport 9 counter name delivered drop\n  }\n}\n";

/// One generator run, as it reported itself.
struct GenRun {
    sent: u64,
    seconds: f64,
    mpps: f64,
}

/// The `pktgen` binary, next to this one.
fn pktgen_bin() -> Result<String> {
    Ok(std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .join("pktgen")
        .to_string_lossy()
        .into_owned())
}

/// Installs [`GEN_SINK`] in `inet` (once per lab) and returns the MAC
/// address of the gateway's `lan0`, where the generator's frames go.
fn gen_prepare(lab: &Lab) -> Result<String> {
    let have = lab.run(
        Host::Inet,
        &["nft", "list", "table", "inet", "labbench_pktgen"],
    );
    if !have.status.success() {
        let f = lab.dir().join("labbench-pktgen.nft");
        std::fs::write(&f, GEN_SINK)?;
        lab.run_ok(Host::Inet, &["nft", "-f", &f.to_string_lossy()]);
    }
    let link = lab.run_ok(Host::Gw, &["ip", "-j", "link", "show", "dev", "lan0"]);
    let v: serde_json::Value = serde_json::from_str(&link).context("ip -j link")?;
    Ok(v[0]["address"]
        .as_str()
        .context("lan0 has no address")?
        .to_string())
}

/// Packets the [`GEN_SINK`] counter has seen.
fn gen_delivered(lab: &Lab) -> Result<u64> {
    let out = lab.run_ok(
        Host::Inet,
        &[
            "nft",
            "-j",
            "list",
            "counter",
            "inet",
            "labbench_pktgen",
            "delivered",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).context("nft -j")?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|e| e["counter"]["packets"].as_u64()))
        .with_context(|| format!("no counter in {out}"))
}

/// Runs the generator in `client` (on CPU 0, like the iperf3 client) for
/// `secs` to `dst`.
fn run_pktgen(lab: &Lab, mac: &str, dst: &str, secs: u64) -> Result<GenRun> {
    let bin = pktgen_bin()?;
    let secs_s = secs.to_string();
    // Far above what this veth takes (~1 Mpps): the time ends the run.
    let cap = (secs * 20_000_000).to_string();
    let src = addr::CLIENT_V4.to_string();
    let out = lab.run_timeout(
        Host::Client,
        &[
            "taskset",
            "-c",
            "0",
            &bin,
            "send",
            "--iface",
            addr::ifname::CLIENT_ETH,
            "--dst-mac",
            mac,
            "--src",
            &src,
            "--dst",
            dst,
            "--seconds",
            &secs_s,
            "--max-packets",
            &cap,
        ],
        Duration::from_secs(secs + 20),
    );
    if !out.status.success() {
        bail!(
            "pktgen: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("pktgen output: {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(GenRun {
        sent: v["sent"].as_u64().context("sent")?,
        seconds: v["seconds"].as_f64().context("seconds")?,
        mpps: v["mpps"].as_f64().context("mpps")?,
    })
}

/// A generator row: `delivered` packets over the generator's time.
fn gen_row(case: &'static str, delivered: u64, g: &GenRun, cpu: f64) -> Row {
    let payload = delivered as f64 * sluice_bench::pktgen::PAYLOAD_LEN as f64;
    let gb = payload / 1e9;
    eprintln!(
        "labbench: {case}: generator sent {} in {:.2} s ({:.3} Mpps), {delivered} delivered",
        g.sent, g.seconds, g.mpps
    );
    Row {
        case,
        traffic: Traffic::UdpGen,
        gbps: payload * 8.0 / g.seconds / 1e9,
        mpps: delivered as f64 / g.seconds / 1e6,
        cpu_s_per_gb: if gb > 0.0 { cpu / gb } else { f64::NAN },
        offered_mpps: g.mpps,
    }
}

/// The packet generator from the client to `dst` for `secs`: packets
/// per second delivered to `inet` (the [`GEN_SINK`] counter, read before
/// and 300 ms after the run, for what a tunnel still had queued).
fn measure_gen(lab: &Lab, case: &'static str, dst: &str, secs: u64) -> Result<Row> {
    let mac = gen_prepare(lab)?;
    settle()?;
    let before = gen_delivered(lab)?;
    let cpu0 = cpu_busy()?;
    let g = run_pktgen(lab, &mac, dst, secs)?;
    std::thread::sleep(Duration::from_millis(300));
    let cpu = (cpu_busy()? - cpu0) as f64 / 100.0;
    let delivered = gen_delivered(lab)? - before;
    Ok(gen_row(case, delivered, &g, cpu))
}

/// `XDP_DROP` on `gw`'s `lan0` (native, this crate's two-instruction
/// program), the same generator: frames per second the veth takes at all,
/// counted by the veth's own XDP statistics (`ethtool -S`: `xdp_drops`).
fn measure_ceiling(lab: &Lab, secs: u64) -> Result<Row> {
    let mac = gen_prepare(lab)?;
    let bin = pktgen_bin()?;
    let log = fresh("xdp-drop");
    let hold = (secs + 60).to_string();
    let id = lab.spawn(
        Host::Gw,
        &log,
        &[
            &bin,
            "xdp-drop",
            "--iface",
            "lan0",
            "--mode",
            "native",
            "--seconds",
            &hold,
        ],
    );
    let res = ceiling_run(lab, id, &log, &mac, secs);
    lab.stop(id);
    res
}

/// [`measure_ceiling`] once the program holder `id` is started.
fn ceiling_run(lab: &Lab, id: sluice_lab::ProcId, log: &str, mac: &str, secs: u64) -> Result<Row> {
    lab.wait_for("the XDP_DROP program", Duration::from_secs(10), || {
        lab.log(log).contains("attached") || !lab.is_running(id)
    });
    if !lab.is_running(id) {
        bail!("pktgen xdp-drop: {}", lab.log(log));
    }
    settle()?;
    let before = xdp_drops(lab)?;
    let cpu0 = cpu_busy()?;
    let g = run_pktgen(lab, mac, &addr::TUNNELLED_V4.to_string(), secs)?;
    let cpu = (cpu_busy()? - cpu0) as f64 / 100.0;
    let dropped = xdp_drops(lab)? - before;
    Ok(gen_row(CEILING, dropped, &g, cpu))
}

/// The sum of `gw` `lan0`'s per-queue `xdp_drops` (veth's ethtool
/// statistics).
fn xdp_drops(lab: &Lab) -> Result<u64> {
    let out = lab.run_ok(Host::Gw, &["ethtool", "-S", "lan0"]);
    let mut found = false;
    let mut sum = 0;
    for l in out.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if k.trim().ends_with("xdp_drops") {
            found = true;
            sum += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    if !found {
        bail!("no xdp_drops in `ethtool -S lan0`:\n{out}");
    }
    Ok(sum)
}

/// A process (and log) name not used before in this run: logs are
/// appended to, so a wait for a line must not find the previous round's.
fn fresh(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{n}")
}

/// `argv` behind `taskset -c <cpu>` when `cpu` is set.
fn pinned<'a>(cpu: Option<&'a str>, argv: &[&'a str]) -> Vec<&'a str> {
    let mut v = match cpu {
        Some(c) => vec!["taskset", "-c", c],
        None => Vec::new(),
    };
    v.extend_from_slice(argv);
    v
}

/// Measures every kind of traffic for one case once and appends the rows.
fn run_case(
    lab: &Lab,
    a: &Args,
    traffic: &[Traffic],
    rows: &mut Vec<Row>,
    case: &'static str,
    dst: &str,
) -> Result<()> {
    for &t in traffic {
        let r = measure_retrying(lab, case, dst, t, a.seconds)?;
        log_row(&r);
        rows.push(r);
    }
    Ok(())
}

/// One measurement, as a progress line.
fn log_row(r: &Row) {
    eprintln!(
        "labbench: {:<28} {:<14} {:>7.3} Gbit/s {:>7.3} Mpps {:>6.2} CPU-s/GB",
        r.case,
        r.traffic.name(),
        r.gbps,
        r.mpps,
        r.cpu_s_per_gb
    );
}

/// The userspace tunnel baselines.
fn run_tunnels(lab: &Lab, a: &Args, traffic: &[Traffic], rows: &mut Vec<Row>) -> Result<()> {
    let tunnelled = addr::TUNNELLED_V4.to_string();
    // (d), (e) userspace tunnels between gw and edge, same traffic to the
    // tunnelled server. Skipped (with a loud line) where the tool is
    // missing, except under CI=true.
    let pki = lab.dir().join("sluice");
    for (case, tool) in [
        ("boringtun", Tunnel::Boringtun),
        ("wireguard-go", Tunnel::WireguardGo),
        ("OpenVPN UDP", Tunnel::OpenVpnUdp),
        ("OpenVPN TCP", Tunnel::OpenVpnTcp),
    ] {
        if !a.wants(case) {
            continue;
        }
        let need = format!("{} (cargo xtask setup installs it)", tool.program());
        if !sluice_lab::require(&format!("labbench {case}"), tool.available(), &need) {
            continue;
        }
        let up = tool.start(lab, &pki, a.pin)?;
        let res = run_case(lab, a, traffic, rows, case, &tunnelled);
        up.stop(lab);
        res?;
    }
    Ok(())
}

/// Runs every case `--repeat` times, in rounds (all cases once per round,
/// so that a slow minute of a shared machine hits every case alike rather
/// than one case's repeats), and keeps each case and traffic's median.
fn run_cases(lab: &Lab, a: &Args, traffic: &[Traffic]) -> Result<Vec<Row>> {
    let mut all = Vec::new();
    for round in 1..=a.repeat {
        eprintln!("labbench: round {round} of {}", a.repeat);
        run_round(lab, a, traffic, &mut all)?;
    }
    let mut rows: Vec<Row> = Vec::new();
    for r in &all {
        if rows
            .iter()
            .any(|x| x.case == r.case && x.traffic == r.traffic)
        {
            continue;
        }
        let mut runs: Vec<Row> = all
            .iter()
            .filter(|x| x.case == r.case && x.traffic == r.traffic)
            .cloned()
            .collect();
        runs.sort_by(|x, y| x.gbps.total_cmp(&y.gbps));
        rows.push(runs.swap_remove(runs.len() / 2));
    }
    Ok(rows)
}

/// One round: every case once.
fn run_round(lab: &Lab, a: &Args, traffic: &[Traffic], rows: &mut Vec<Row>) -> Result<()> {
    let run = |rows: &mut Vec<Row>, case: &'static str, dst: &str| {
        run_case(lab, a, traffic, rows, case, dst)
    };
    let bypassed = addr::BYPASSED_V4.to_string();
    let tunnelled = addr::TUNNELLED_V4.to_string();
    let bin = a.sluice.to_string_lossy().into_owned();

    // (c) kernel forwarding, no XDP program.
    if a.wants("kernel, no XDP") {
        run(rows, "kernel, no XDP", &bypassed)?;
    }
    // The generator's ceiling: the same frames into an XDP_DROP program on
    // the same veth. Part of the generator traffic, whatever `--only` says.
    if traffic.contains(&Traffic::UdpGen) {
        let r = retrying(CEILING, Traffic::UdpGen, || measure_ceiling(lab, a.seconds))?;
        log_row(&r);
        rows.push(r);
    }
    // (c) kernel forwarding with a no-op XDP program, native and generic.
    for (case, mode) in [
        ("kernel + no-op XDP native", "native"),
        ("kernel + no-op XDP generic", "generic"),
    ] {
        if !a.wants(case) {
            continue;
        }
        let log = fresh("xdp-noop");
        let id = lab.spawn(
            Host::Gw,
            &log,
            &[&bin, "xdp-noop", "--iface", "lan0", "--mode", mode],
        );
        lab.wait_for("the no-op XDP program", Duration::from_secs(10), || {
            lab.log(&log).contains("attached")
        });
        run(rows, case, &bypassed)?;
        lab.stop(id);
    }
    // (a), (b) sluice, in each attach mode (and, with --gro-ab, the
    // native tunnel with the edge's TUN offload off).
    // (mode, bypass case, tunnel case, edge GRO, datagram transport)
    let mut sluice_cases = vec![
        (
            "native",
            "sluice bypass (native)",
            "sluice tunnel (native)",
            true,
            false,
        ),
        ("native", "", "sluice datagram (native)", true, true),
        (
            "generic",
            "sluice bypass (generic)",
            "sluice tunnel (generic)",
            true,
            false,
        ),
    ];
    if a.gro_ab {
        sluice_cases.push((
            "native",
            "",
            "sluice tunnel (native, edge GRO off)",
            false,
            false,
        ));
    }
    // The PKI the OpenVPN baselines use too.
    let _ = Sluice::prepare(lab, &a.sluice, str::to_string);
    for (mode, bypass_case, tunnel_case, gro, udp) in sluice_cases {
        let bypass = !bypass_case.is_empty() && a.wants(bypass_case);
        if !bypass && !a.wants(tunnel_case) {
            continue;
        }
        let mut s = Sluice::prepare(lab, &a.sluice, |c| {
            let c = c.replace("xdp_mode = \"auto\"", &format!("xdp_mode = \"{mode}\""));
            if udp {
                c.replace("[tunnel]\n", "[tunnel]\ntransport = \"udp\"\n")
            } else {
                c
            }
        });
        if !gro {
            s.edit_edge(|c| c.replace("[edge]\n", "[edge]\ntun_offload = false\n"));
        }
        if let Some((g, e)) = a.pin {
            s.pin(g, e);
        }
        s.start_edge();
        s.start_gateway();
        if udp {
            // Measured once the tunnels carry their packets by datagram
            // (every worker's comes up at the same time: a second more).
            lab.wait_for("the datagram transport", Duration::from_secs(15), || {
                lab.log("gateway").contains("packets now go by udp")
            });
            std::thread::sleep(Duration::from_secs(1));
        }
        if bypass {
            run(rows, bypass_case, &bypassed)?;
        }
        if a.wants(tunnel_case) {
            learn_path_mtu(lab, Host::Client);
            run(rows, tunnel_case, &tunnelled)?;
        }
        // A stop keeps the classifier attached (failing closed): the
        // next case and the baselines need the kernel's plain forwarding.
        s.stop_gateway_and_detach();
        s.stop_edge();
        forget_path_mtus(lab);
    }
    run_tunnels(lab, a, traffic, rows)?;
    Ok(())
}

/// A userspace tunnel baseline: gw and edge joined by it, the client's
/// traffic to the tunnelled server routed into it on gw, forwarded and
/// masqueraded by edge.
#[derive(Clone, Copy)]
enum Tunnel {
    Boringtun,
    WireguardGo,
    OpenVpnUdp,
    OpenVpnTcp,
}

/// What `Tunnel::start` brought up.
struct TunnelUp {
    procs: Vec<sluice_lab::ProcId>,
}

const EDGE_NAT: &str = "table inet labbench_nat {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan0\" ip saddr 192.0.2.0/24 masquerade\n  }\n}\n";

impl Tunnel {
    fn program(self) -> &'static str {
        match self {
            Tunnel::Boringtun => "boringtun-cli",
            Tunnel::WireguardGo => "wireguard-go",
            Tunnel::OpenVpnUdp | Tunnel::OpenVpnTcp => "openvpn",
        }
    }

    /// A `WireGuard` implementation, configured with `wg`.
    fn is_wireguard(self) -> bool {
        matches!(self, Tunnel::Boringtun | Tunnel::WireguardGo)
    }

    fn available(self) -> bool {
        let which = |p: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        which(self.program()) && (!self.is_wireguard() || which("wg"))
    }

    #[allow(
        clippy::too_many_lines,
        reason = "two tools' command lines, laid out one argument per line by rustfmt"
    )]
    fn start(self, lab: &Lab, pki: &Path, pin: Option<(usize, usize)>) -> Result<TunnelUp> {
        let (gw_cpu, edge_cpu) = match pin {
            Some((g, e)) => (Some(g.to_string()), Some(e.to_string())),
            None => (None, None),
        };
        let cpu_of = |h: Host| match h {
            Host::Gw => gw_cpu.as_deref(),
            _ => edge_cpu.as_deref(),
        };
        let pid = std::process::id() % 100_000;
        let (gw_if, edge_if) = match self {
            Tunnel::Boringtun => (format!("bt{pid}g"), format!("bt{pid}e")),
            Tunnel::WireguardGo => (format!("wg{pid}g"), format!("wg{pid}e")),
            _ => (format!("ov{pid}g"), format!("ov{pid}e")),
        };
        let mut procs = Vec::new();
        match self {
            Tunnel::Boringtun | Tunnel::WireguardGo => {
                let dir = lab.dir().to_string_lossy().into_owned();
                let keys = lab.run_ok(
                    Host::Client,
                    &["sh", "-c", &format!("cd {dir} && umask 077 && wg genkey > g.key && wg genkey > e.key && wg pubkey < g.key && wg pubkey < e.key")],
                );
                let mut k = keys.lines();
                let (gpub, epub) = (
                    k.next().context("wg pubkey")?.to_string(),
                    k.next().context("wg pubkey")?.to_string(),
                );
                for (h, ifname) in [(Host::Gw, &gw_if), (Host::Edge, &edge_if)] {
                    // A socket left by the previous round's instance.
                    let sock = format!("/var/run/wireguard/{ifname}.sock");
                    let _ = std::fs::remove_file(&sock);
                    // Both create the interface and the UAPI socket `wg`
                    // talks to, in the foreground.
                    let argv: &[&str] = if matches!(self, Tunnel::Boringtun) {
                        &[
                            "boringtun-cli",
                            ifname,
                            "--foreground",
                            "--disable-drop-privileges",
                        ]
                    } else {
                        &["wireguard-go", "-f", ifname]
                    };
                    let id = lab.spawn_env(
                        h,
                        &fresh(ifname),
                        &pinned(cpu_of(h), argv),
                        &[("WG_LOG_LEVEL", "info"), ("LOG_LEVEL", "error")],
                    );
                    lab.wait_for(
                        &format!("{} {ifname}", self.program()),
                        Duration::from_secs(10),
                        || Path::new(&sock).exists(),
                    );
                    procs.push(id);
                }
                let gkey = format!("{dir}/g.key");
                let ekey = format!("{dir}/e.key");
                lab.run_ok(
                    Host::Gw,
                    &[
                        "wg",
                        "set",
                        &gw_if,
                        "private-key",
                        &gkey,
                        "listen-port",
                        "51820",
                        "peer",
                        &epub,
                        "endpoint",
                        "198.51.100.5:51820",
                        "allowed-ips",
                        "203.0.113.10/32",
                    ],
                );
                lab.run_ok(
                    Host::Edge,
                    &[
                        "wg",
                        "set",
                        &edge_if,
                        "private-key",
                        &ekey,
                        "listen-port",
                        "51820",
                        "peer",
                        &gpub,
                        "allowed-ips",
                        "192.0.2.0/24",
                    ],
                );
                for (h, ifname, a) in [
                    (Host::Gw, &gw_if, "198.18.0.1/30"),
                    (Host::Edge, &edge_if, "198.18.0.2/30"),
                ] {
                    lab.run_ok(h, &["ip", "addr", "add", a, "dev", ifname]);
                    lab.run_ok(h, &["ip", "link", "set", ifname, "mtu", "1420", "up"]);
                }
            }
            Tunnel::OpenVpnUdp | Tunnel::OpenVpnTcp => {
                let tcp = matches!(self, Tunnel::OpenVpnTcp);
                let f = |n: &str| pki.join(n).to_string_lossy().into_owned();
                let common = |ifname: &str| -> Vec<String> {
                    [
                        "--dev",
                        ifname,
                        "--dev-type",
                        "tun",
                        "--port",
                        "1194",
                        "--verb",
                        "3",
                        "--route-noexec",
                        "--ping",
                        "5",
                        "--ca",
                        &f("ca.pem"),
                    ]
                    .iter()
                    .map(ToString::to_string)
                    .collect()
                };
                let mut edge_args = common(&edge_if);
                edge_args.extend(
                    [
                        "--tls-server",
                        "--dh",
                        "none",
                        "--cert",
                        &f("edge.pem"),
                        "--key",
                        &f("edge.key"),
                        "--ifconfig",
                        "198.18.1.2",
                        "198.18.1.1",
                        "--proto",
                        if tcp { "tcp-server" } else { "udp" },
                    ]
                    .iter()
                    .map(ToString::to_string),
                );
                let mut gw_args = common(&gw_if);
                gw_args.extend(
                    [
                        "--tls-client",
                        "--cert",
                        &f("branch-1.pem"),
                        "--key",
                        &f("branch-1.key"),
                        "--ifconfig",
                        "198.18.1.1",
                        "198.18.1.2",
                        "--remote",
                        "198.51.100.5",
                        "--nobind",
                        "--proto",
                        if tcp { "tcp-client" } else { "udp" },
                    ]
                    .iter()
                    .map(ToString::to_string),
                );
                let gw_log = fresh(&format!("openvpn-gw-{}", u8::from(tcp)));
                for (h, name, args) in [
                    (
                        Host::Edge,
                        fresh(&format!("openvpn-edge-{}", u8::from(tcp))),
                        edge_args,
                    ),
                    (Host::Gw, gw_log.clone(), gw_args),
                ] {
                    let mut argv = pinned(cpu_of(h), &["openvpn"]);
                    argv.extend(args.iter().map(String::as_str));
                    procs.push(lab.spawn(h, &name, &argv));
                }
                lab.wait_for("OpenVPN to connect", Duration::from_secs(20), || {
                    lab.log(&gw_log)
                        .contains("Initialization Sequence Completed")
                });
            }
        }
        lab.run_ok(
            Host::Gw,
            &["ip", "route", "add", "203.0.113.10/32", "dev", &gw_if],
        );
        lab.run_ok(
            Host::Edge,
            &["ip", "route", "add", "192.0.2.0/24", "dev", &edge_if],
        );
        let nat = lab.dir().join("edge-nat.nft");
        std::fs::write(&nat, EDGE_NAT)?;
        lab.run_ok(Host::Edge, &["nft", "-f", &nat.to_string_lossy()]);
        // boringtun's interface has an MTU of 1420.
        learn_path_mtu(lab, Host::Client);
        Ok(TunnelUp { procs })
    }
}

impl TunnelUp {
    fn stop(self, lab: &Lab) {
        for id in self.procs {
            lab.stop(id);
        }
        let _ = lab.run(
            Host::Edge,
            &["nft", "delete", "table", "inet", "labbench_nat"],
        );
        let _ = lab.run(Host::Gw, &["ip", "route", "del", "203.0.113.10/32"]);
        let _ = lab.run(Host::Edge, &["ip", "route", "del", "192.0.2.0/24"]);
        forget_path_mtus(lab);
    }
}

/// Path MTU discovery from `from` to the tunnelled server before a
/// measurement, as a long-lived flow would have done it: a tunnel whose
/// inner MTU is 1420 (boringtun's interface, sluice's `tunnel.mtu`
/// default) makes the first 1400-byte datagram (1428 bytes with DF) draw
/// "fragmentation needed", on which iperf3 fails with EMSGSIZE; afterwards
/// the sender fragments such datagrams itself (their cost is part of the
/// run).
fn learn_path_mtu(lab: &Lab, from: Host) {
    let _ = lab.run(
        from,
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1400",
            "203.0.113.10",
        ],
    );
}

/// Drops every namespace's learnt path MTUs (route exceptions, kept for
/// ten minutes): a tunnel with a smaller MTU (boringtun's 1420) leaves the
/// client fragmenting 1400-byte datagrams to the tunnelled server, which
/// would handicap every case measured after it to that address (the
/// next rounds' sluice and OpenVPN-over-UDP and -TCP cases: about 0.30 instead of 0.40
/// Gbit/s for sluice, twice the CPU per GB, in the run that found it).
fn forget_path_mtus(lab: &Lab) {
    for h in Host::ALL {
        let _ = lab.run(h, &["ip", "route", "flush", "cache"]);
        let _ = lab.run(h, &["ip", "-6", "route", "flush", "cache"]);
    }
}

fn find<'a>(rows: &'a [Row], case: &str, t: Traffic) -> Option<&'a Row> {
    rows.iter().find(|r| r.case == case && r.traffic == t)
}

/// The userspace tunnel baselines, by case name.
const TUNNELS: [&str; 4] = ["boringtun", "wireguard-go", "OpenVPN UDP", "OpenVPN TCP"];

/// A row's ratios to each baseline of the same run: plain kernel
/// forwarding; kernel forwarding with a no-op XDP program in the row's
/// attach mode (sluice rows); each userspace tunnel and the best of them
/// (sluice tunnel rows).
fn ratios(rows: &[Row], r: &Row) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let mut vs = |name: &'static str, base: Option<f64>| {
        if let Some(b) = base.filter(|b| *b > 0.0) {
            out.push((name, r.gbps / b));
        }
    };
    vs(
        "kernel",
        find(rows, "kernel, no XDP", r.traffic).map(|k| k.gbps),
    );
    if r.case.starts_with("sluice") {
        let noop = if r.case.contains("generic") {
            "kernel + no-op XDP generic"
        } else {
            "kernel + no-op XDP native"
        };
        vs("no-op XDP", find(rows, noop, r.traffic).map(|k| k.gbps));
    }
    if r.case.starts_with("sluice datagram") {
        vs(
            "sluice TLS",
            find(rows, "sluice tunnel (native)", r.traffic).map(|k| k.gbps),
        );
    }
    if r.case.starts_with("sluice tunnel") || r.case.starts_with("sluice datagram") {
        for t in TUNNELS {
            vs(t, find(rows, t, r.traffic).map(|k| k.gbps));
        }
        let best = TUNNELS
            .iter()
            .filter_map(|c| find(rows, c, r.traffic))
            .map(|b| b.gbps)
            .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))));
        vs("best tunnel", best);
    }
    if r.traffic == Traffic::UdpGen && r.case != CEILING {
        vs(CEILING, find(rows, CEILING, r.traffic).map(|c| c.gbps));
    }
    out
}

/// CPU model, CPU count and kernel of this machine, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("{n} x `{cpu}`, Linux {kernel}")
}

fn markdown(rows: &[Row], a: &Args) -> String {
    let mut s = String::new();
    let pin = match a.pin {
        Some((g, e)) => {
            format!("gateway-side tunnel processes on CPU {g}, edge-side ones on CPU {e}")
        }
        None => "tunnel processes not pinned".into(),
    };
    let _ = writeln!(
        s,
        "Lab benchmark on {}: {} s per run, median of {} rounds (every case once per round); iperf3 client on CPU 0, server on CPU 1, {pin}.\n",
        machine(),
        a.seconds,
        a.repeat
    );
    let cols = [
        "kernel",
        "no-op XDP",
        "sluice TLS",
        "boringtun",
        "wireguard-go",
        "OpenVPN UDP",
        "OpenVPN TCP",
        "best tunnel",
        CEILING,
    ];
    let _ = write!(s, "| case | traffic | Gbit/s | Mpps | CPU-s/GB |");
    for c in cols {
        let _ = write!(s, " vs {c} |");
    }
    let _ = writeln!(
        s,
        "\n| --- | --- | ---: | ---: | ---: |{}",
        " ---: |".repeat(cols.len())
    );
    for r in rows {
        let rs = ratios(rows, r);
        let _ = write!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:.2} |",
            r.case,
            r.traffic.name(),
            r.gbps,
            r.mpps,
            r.cpu_s_per_gb
        );
        for c in cols {
            match rs.iter().find(|(n, _)| *n == c) {
                Some((_, v)) => {
                    let _ = write!(s, " {v:.2}x |");
                }
                None => s.push_str("  |"),
            }
        }
        s.push('\n');
    }
    gen_markdown(&mut s, rows);
    s
}

/// The generator rows again, with what the generator offered beside what
/// was delivered.
fn gen_markdown(s: &mut String, rows: &[Row]) {
    let gen_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.traffic == Traffic::UdpGen)
        .collect();
    if gen_rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nPacket rate, `pktgen` (AF_XDP TX in batches on the client's veth, CPU 0): {} B frames ({} B on a wire with FCS; {} B UDP payload), 16 flows (source ports 40000-40015, destination port 9); delivered: counted by nftables where they arrive in `inet` (the ceiling: dropped by an `XDP_DROP` program on `gw`'s `lan0`, counted by the veth's XDP statistics).\n",
        sluice_bench::pktgen::FRAME_LEN,
        sluice_bench::pktgen::WIRE_LEN,
        sluice_bench::pktgen::PAYLOAD_LEN,
    );
    s.push_str(
        "| case | offered Mpps | delivered Mpps | delivered / offered | vs kernel | vs XDP_DROP ceiling |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in gen_rows {
        let rs = ratios(rows, r);
        let ratio = |name: &str| {
            rs.iter()
                .find(|(n, _)| *n == name)
                .map_or(String::new(), |(_, v)| format!("{v:.2}x"))
        };
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.3} | {:.2} | {} | {} |",
            r.case,
            r.offered_mpps,
            r.mpps,
            r.mpps / r.offered_mpps,
            ratio("kernel"),
            ratio(CEILING),
        );
    }
}

fn json(rows: &[Row]) -> String {
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let ratios: serde_json::Map<String, serde_json::Value> = ratios(rows, r)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            serde_json::json!({
                "case": r.case, "traffic": r.traffic.name(), "gbps": r.gbps,
                "mpps": r.mpps, "cpu_s_per_gb": if r.cpu_s_per_gb.is_finite() { Some(r.cpu_s_per_gb) } else { None },
                "offered_mpps": if r.offered_mpps.is_finite() { Some(r.offered_mpps) } else { None },
                "ratios": ratios,
            })
        })
        .collect();
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// A grouped bar chart (Gbit/s per traffic kind, one bar per case), plain SVG.
fn svg(rows: &[Row]) -> String {
    let mut cases: Vec<&str> = Vec::new();
    for r in rows {
        if !cases.contains(&r.case) {
            cases.push(r.case);
        }
    }
    let traffic: Vec<Traffic> = Traffic::ALL
        .into_iter()
        .filter(|t| rows.iter().any(|r| r.traffic == *t))
        .collect();
    let max = rows
        .iter()
        .map(|r| r.gbps)
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let (w, h, left, top, bottom) = (1040.0, 420.0, 60.0, 30.0, 60.0);
    let group_w = (w - left - 250.0) / traffic.len().max(1) as f64;
    let bar_w = group_w * 0.8 / cases.len().max(1) as f64;
    let colors = [
        "#555", "#999", "#bbb", "#1f77b4", "#d62728", "#aec7e8", "#ff9896", "#2ca02c", "#9467bd",
        "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    ];
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-size="13">Throughput received (Gbit/s), same lab, same run</text>"#
    );
    let plot_h = h - top - bottom;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{v:.2}</text>"##,
            w - 250.0,
            left - 5.0,
            y + 4.0
        );
    }
    for (gi, t) in traffic.iter().enumerate() {
        let gx = left + gi as f64 * group_w + group_w * 0.1;
        for (ci, c) in cases.iter().enumerate() {
            if let Some(r) = find(rows, c, *t) {
                let bh = plot_h * r.gbps / max;
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"/>"#,
                    gx + ci as f64 * bar_w,
                    top + plot_h - bh,
                    bar_w * 0.9,
                    colors[ci % colors.len()]
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            h - bottom + 18.0,
            t.name()
        );
    }
    for (ci, c) in cases.iter().enumerate() {
        let y = top + 14.0 * ci as f64;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{y}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{c}</text>"#,
            w - 240.0,
            colors[ci % colors.len()],
            w - 225.0,
            y + 9.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Rows from a `results.json` this tool wrote (for `--from-json`).
fn rows_from_json(path: &Path) -> Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).context("results.json")?;
    v.iter()
        .map(|r| {
            let name = r["traffic"].as_str().context("traffic")?;
            let traffic = Traffic::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .with_context(|| format!("unknown traffic {name:?}"))?;
            let case: &'static str = Box::leak(
                r["case"]
                    .as_str()
                    .context("case")?
                    .to_string()
                    .into_boxed_str(),
            );
            Ok(Row {
                case,
                traffic,
                gbps: r["gbps"].as_f64().context("gbps")?,
                mpps: r["mpps"].as_f64().context("mpps")?,
                cpu_s_per_gb: r["cpu_s_per_gb"].as_f64().unwrap_or(f64::NAN),
                offered_mpps: r["offered_mpps"].as_f64().unwrap_or(f64::NAN),
            })
        })
        .collect()
}

fn report(rows: &[Row], a: &Args) -> Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let md = markdown(rows, a);
    write(&a.out.join("results.md"), &md)?;
    write(&a.out.join("results.json"), &json(rows))?;
    write(&a.out.join("results.svg"), &svg(rows))?;
    println!("{md}");
    println!(
        "labbench: {} measurements; results in {}",
        rows.len(),
        a.out.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    if let Some(path) = &a.from_json {
        // Re-render a finished run (same machine): no lab, no root.
        return report(&rows_from_json(path)?, &a);
    }
    if !sluice_lab::require_root("labbench") {
        bail!("labbench needs root");
    }
    let traffic: Vec<Traffic> = if let Some(t) = &a.traffic {
        t.clone()
    } else if a.smoke {
        vec![Traffic::Tcp1, Traffic::Udp1400, Traffic::UdpGen]
    } else {
        Traffic::ALL.to_vec()
    };
    // Ctrl-C or SIGTERM tears the lab down (Drop does not run then).
    if let Err(e) = sluice_lab::teardown_on_signal() {
        eprintln!("warning: no teardown on Ctrl-C/SIGTERM: {e}");
    }
    let lab = Lab::new();
    let rows = run_cases(&lab, &a, &traffic);
    let endpoint = if a.wants("endpoint") {
        endpoint_measurements(&lab, &a)
    } else {
        Ok(String::new())
    };
    let policy = if a.wants("policy") {
        policy_measurements(&lab, &a)
    } else {
        Ok(String::new())
    };
    drop(lab);
    report(&rows?, &a)?;
    for section in [endpoint?, policy?] {
        if !section.is_empty() {
            let md = a.out.join("results.md");
            let mut text = std::fs::read_to_string(&md)?;
            text.push_str(&section);
            write(&md, &text)?;
            println!("{section}");
        }
    }
    Ok(())
}

/// Policy swaps under load: the same bounded UDP stream through the
/// tunnel with and without the policy swapped back and forth for as long
/// as it runs (`sluice_lab::reload`), at 200 Mbit/s and as fast as the
/// client sends, alternating within each round. One JSON line per stream
/// goes to `policy.json`; the returned markdown is appended to
/// `results.md`.
#[allow(
    clippy::too_many_lines,
    reason = "one table's measurement and rendering, read top to bottom"
)]
fn policy_measurements(lab: &Lab, a: &Args) -> Result<String> {
    use sluice_lab::reload::{self, DROPS, Load, Outcome, Stream};
    let mut s = Sluice::prepare(lab, &a.sluice, |t| {
        let t = reload::initial(t);
        match a.rx_frames {
            Some(n) => sluice_lab::deploy::with_rx_frames(&t, n),
            None => t,
        }
    });
    if let Some((g, e)) = a.pin {
        s.pin(g, e);
    }
    s.start_edge();
    s.start_gateway();
    let rates: [(&str, u64); 2] = if a.smoke {
        [("200M", 20_000), ("0", 20_000)]
    } else {
        [("200M", 100_000), ("0", 300_000)]
    };
    let loads = [Load::Idle, Load::Poll, Load::Swap];
    let mut runs: Vec<(String, Load, Outcome)> = Vec::new();
    let mut json = String::new();
    for round in 0..a.repeat {
        for (rate, datagrams) in rates {
            for load in loads {
                settle()?;
                let stream = Stream {
                    rate: rate.into(),
                    datagrams,
                    len: 1200,
                    load,
                    tag: format!("r{round}-{rate}-{load:?}"),
                };
                let o = reload::run(lab, &s, &stream)?;
                let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
                let _ = writeln!(
                    json,
                    "{}",
                    serde_json::json!({
                        "round": round, "rate": rate, "load": load.name(), "swaps": o.swaps,
                        "rx_frames": a.rx_frames.unwrap_or(sluice_config::DEFAULT_RX_FRAMES),
                        "swap_p50_ms": ms(o.swap_percentile(50)),
                        "swap_p99_ms": ms(o.swap_percentile(99)),
                        "swap_max_ms": ms(o.swap_percentile(100)),
                        "datagrams": o.datagrams, "lost": o.lost,
                        "rcvbuf_errors": o.rcvbuf_errors, "gbps": o.gbps,
                        "tunnelled": o.tunnelled, "into_tunnel": o.into_tunnel,
                        "out_of_edge": o.out_of_edge, "misclassified": o.direct,
                        "drops": DROPS.iter().zip(&o.drops)
                            .map(|((n, l), v)| (format!("{n}{{{l}}}"), *v))
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    })
                );
                println!(
                    "labbench: policy {rate} beside the stream: {}: {} swaps, {:.3} Gbit/s, {} datagrams, {} lost ({} socket overflow), {} lost in sluice, {} misclassified",
                    load.name(),
                    o.swaps,
                    o.gbps,
                    o.datagrams,
                    o.lost,
                    o.rcvbuf_errors,
                    o.lost_in_sluice(),
                    o.direct
                );
                runs.push((rate.to_string(), load, o));
            }
        }
    }
    s.stop_gateway_and_detach();
    s.stop_edge();
    std::fs::create_dir_all(&a.out)?;
    write(&a.out.join("policy.json"), &json)?;
    let mut md = String::from(
        "\n## Policy swaps under load\n\nA bounded UDP stream (1200-byte datagrams) from the LAN \
         client through the tunnel, beside three loads in the gateway's namespace, in turn \
         in each round: none; a shell loop that copies a file and asks the gateway for its \
         policy state (`GET /policy`), back to back (the control: on two CPUs the loop's \
         processes compete with the gateway); the same loop swapping the policy instead \
         (`POST /policy/reload` after copying the other of two policies that tunnel the \
         stream by different profiles: a packet classified by a mix would go direct). \
         Medians over the rounds for rates, sums for counts. Swap time: request to flip \
         (compile, write the idle slot, flip). Lost in sluice: frames the classifier \
         steered to the tunnel that the edge did not deliver; counted drops: sluice's drop \
         counters (the AF_XDP socket's kernel counters, tunnel down, backpressure, no \
         verdict, ...), which should account for all of it. Misclassified: packets that \
         reached the tunnelled server directly from the gateway.\n\n",
    );
    let _ = writeln!(
        md,
        "Gateway: `rx_frames = {}` (frames each AF_XDP socket keeps posted for receiving).\n",
        a.rx_frames.unwrap_or(sluice_config::DEFAULT_RX_FRAMES)
    );
    md.push_str(
        "| rate | beside the stream | swaps per stream | swap p50 ms | swap p99 ms | swap max ms | Gbit/s | datagrams | iperf3 lost | of which socket overflow | lost in sluice | counted drops | misclassified |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (rate, _) in rates {
        for load in loads {
            let sel: Vec<&Outcome> = runs
                .iter()
                .filter(|(r, l, _)| r == rate && *l == load)
                .map(|(_, _, o)| o)
                .collect();
            let med = |f: &dyn Fn(&Outcome) -> f64| {
                let mut v: Vec<f64> = sel.iter().map(|o| f(o)).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            let total = |f: &dyn Fn(&Outcome) -> u64| sel.iter().map(|o| f(o)).sum::<u64>();
            let mut times: Vec<Duration> = sel
                .iter()
                .flat_map(|o| o.swap_times.iter().copied())
                .collect();
            times.sort();
            let all = Outcome {
                swap_times: times,
                ..Outcome::default()
            };
            let ms = |p| {
                all.swap_percentile(p)
                    .map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
                if rate == "0" { "full" } else { "200 Mbit/s" },
                load.name(),
                med(&|o| o.swaps as f64),
                ms(50),
                ms(99),
                ms(100),
                med(&|o| o.gbps),
                total(&|o| o.datagrams),
                total(&|o| o.lost),
                total(&|o| o.rcvbuf_errors),
                total(&Outcome::lost_in_sluice),
                total(&|o| o.drops.iter().sum()),
                total(&|o| o.direct),
            );
        }
    }
    Ok(md)
}

/// Endpoint mode's two measurements, in the same run: process attribution
/// (the `attribution` binary, in the lab's `gw` namespace) and the ingress
/// path (the `ingress` binary, in a namespace of its own). Their JSON lines
/// go to `endpoint.json`; the returned markdown is appended to
/// `results.md`.
fn endpoint_measurements(lab: &Lab, a: &Args) -> Result<String> {
    let dir = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .to_path_buf();
    let attribution = dir.join("attribution").to_string_lossy().into_owned();
    let ingress = dir.join("ingress").to_string_lossy().into_owned();
    println!("labbench: process attribution (1,000 and 10,000 sockets)");
    #[allow(
        clippy::duration_suboptimal_units,
        reason = "`Duration::from_mins` needs Rust 1.91; the workspace MSRV is 1.87"
    )]
    let limit = Duration::from_secs(5 * 60);
    let out = lab.run_timeout(Host::Gw, &[&attribution], limit);
    if !out.status.success() {
        bail!("attribution: {}", String::from_utf8_lossy(&out.stderr));
    }
    let attr = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("labbench: endpoint ingress, TUN against veth + AF_XDP");
    let secs = if a.smoke { "1" } else { "3" };
    let out = std::process::Command::new(&ingress)
        .args(["--seconds", secs])
        .output()?;
    if !out.status.success() {
        bail!("ingress: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ingr = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::create_dir_all(&a.out)?;
    write(&a.out.join("endpoint.json"), &format!("{attr}{ingr}"))?;
    let through = endpoint_throughput(lab, a)?;
    let mut md = String::from(
        "\n## Endpoint mode\n\nAttributing a new connection to its process (µs per connection; sluice: \
         a loopback connect + accept + close with the socket hooks attached minus without, \
         median of paired blocks, 10th-90th percentile in brackets):\n\n\
         | open sockets | sock_diag + /proc walk | sock_diag alone | sluice socket hooks | plain connect |\n\
         | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for l in attr.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {:.2} [{:.2}, {:.2}] | {:.1} |",
            v["sockets"],
            f("sock_diag_proc_walk_us"),
            f("sock_diag_us"),
            f("hook_cost_us"),
            f("hook_cost_p10_us"),
            f("hook_cost_p90_us"),
            f("connect_plain_us"),
        );
    }
    md.push_str(
        "\nTaking the host's packets in (UDP blast from one CPU, reader on the other; \
         CPU µs per packet, sender's kernel path included):\n\n\
         | path | size | received Mpps | sender µs/pkt | reader µs/pkt | total µs/pkt |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for l in ingr.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.2} | {:.2} | {:.2} |",
            v["case"].as_str().unwrap_or("?"),
            v["size"],
            f("received_mpps"),
            f("sender_cpu_us_per_pkt"),
            f("reader_cpu_us_per_pkt"),
            f("total_cpu_us_per_pkt"),
        );
    }
    md.push_str(
        "\nThe gateway host's own traffic through the tunnel (iperf3 from `gw` to the \
         tunnelled server, same pinning as above), both endpoint paths, against the \
         host sending direct:\n\n\
         | path | traffic | Gbit/s | Mpps | CPU-s/GB | vs direct |\n\
         | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in &through {
        let direct = through
            .iter()
            .find(|d| d.case == "host direct (no tunnel)" && d.traffic == r.traffic)
            .map_or(f64::NAN, |d| r.gbps / d.gbps);
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {:.2} | {:.2}x |",
            r.case,
            r.traffic.name(),
            r.gbps,
            r.mpps,
            r.cpu_s_per_gb,
            direct
        );
    }
    Ok(md)
}

/// iperf3 from the gateway host itself: direct (no sluice), then through
/// endpoint mode's TUN path, then its veth path.
fn endpoint_throughput(lab: &Lab, a: &Args) -> Result<Vec<Row>> {
    let dst = addr::TUNNELLED_V4.to_string();
    let traffic = [Traffic::Tcp1, Traffic::Udp1400];
    let secs = a.seconds;
    let mut rows = Vec::new();
    for &t in &traffic {
        rows.push(measure_from(
            lab,
            Host::Gw,
            "host direct (no tunnel)",
            &dst,
            t,
            secs,
        )?);
    }
    for (path, case) in [
        ("tun", "sluice endpoint (tun)"),
        ("veth", "sluice endpoint (veth)"),
    ] {
        let mut s = Sluice::prepare(lab, &a.sluice, |c| {
            sluice_lab::deploy::with_endpoint(c, &[])
                .replace("[endpoint]\n", &format!("[endpoint]\npath = \"{path}\"\n"))
        });
        s.edit_edge(sluice_lab::deploy::edge_with_endpoint);
        if let Some((g, e)) = a.pin {
            s.pin(g, e);
        }
        s.start_edge();
        s.start_gateway();
        learn_path_mtu(lab, Host::Gw);
        for &t in &traffic {
            let r = measure_from(lab, Host::Gw, case, &dst, t, secs);
            match r {
                Ok(r) => {
                    log_row(&r);
                    rows.push(r);
                }
                Err(e) => {
                    s.stop_gateway_and_detach();
                    s.stop_edge();
                    return Err(e);
                }
            }
        }
        // A stop keeps the host's routing failing closed: detach.
        s.stop_gateway_and_detach();
        s.stop_edge();
        forget_path_mtus(lab);
    }
    Ok(rows)
}

fn write(p: &Path, s: &str) -> Result<()> {
    std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))
}
