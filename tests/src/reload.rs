//! A bounded UDP stream through the tunnel while the gateway's policy is
//! swapped back and forth, shared by the lab test (which asserts zero loss
//! and zero misclassified packets) and the lab benchmark (which measures
//! the same with and without swaps, in one run).
//!
//! The two policies ([`mix_pair`]) tunnel the client's stream by different
//! profiles: a frame classified by a mix of old and new tables would leave
//! the gateway directly, and the nftables counter on `inet` would see it.
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::{
    Host, Lab, addr, counter,
    deploy::{Sluice, gateway_metric},
};

/// The gateway's default file with its `[bypass]` lists replaced by
/// `policy` (with profiles, the lists belong in them).
///
/// # Panics
/// If `gateway_toml` has no `[bypass]` section.
pub fn with_policy(gateway_toml: &str, policy: &str) -> String {
    let head = gateway_toml
        .split("[bypass]")
        .next()
        .expect("the default file has a [bypass] section");
    format!("{head}{policy}")
}

/// Two policies that tunnel the client's (alice's) stream by different
/// paths: her profile is index 0 in one, index 1 in the other, and the
/// other index sends the stream's destination direct.
pub fn mix_pair(flip: bool) -> String {
    let tunnel = "[[profile]]\nname = \"tunnel\"\n";
    let direct = "[[profile]]\nname = \"direct\"\nexclude = [\"203.0.113.10/32\"]\n";
    let (first, second) = if flip {
        (direct, tunnel)
    } else {
        (tunnel, direct)
    };
    format!(
        "[policy]\ndefault_profile = \"direct\"\n\n[[identity]]\nsource = \"192.0.2.10\"\nuser = \"alice\"\ngroups = [\"g\"]\n\n[[rule]]\ngroup = \"g\"\nprofile = \"tunnel\"\n\n{first}\n{second}"
    )
}

/// The gateway's file for [`Sluice::prepare`]: the first of the pair.
pub fn initial(gateway_toml: &str) -> String {
    with_policy(gateway_toml, &mix_pair(false))
}

/// One stream.
#[derive(Clone, Debug)]
pub struct Stream {
    /// iperf3 `-b` (`"200M"`; `"0"`: as fast as the client can send).
    pub rate: String,
    /// Datagrams sent (iperf3 `-k`).
    pub datagrams: u64,
    /// Payload bytes per datagram.
    pub len: usize,
    /// What runs beside it.
    pub load: Load,
    /// Distinguishes the logs of several streams in one lab.
    pub tag: String,
}

/// What runs beside the stream, in the gateway's namespace, for as long
/// as it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Nothing.
    Idle,
    /// The swap loop's work without the swap: copy a file and ask the
    /// gateway for its policy state (`GET /policy` on the admin socket),
    /// back to back. The
    /// control for [`Load::Swap`] on a machine where the loop's processes
    /// compete with the gateway for the CPU.
    Poll,
    /// Copy the other policy over the file and `POST /policy/reload` on
    /// the admin socket, back to back.
    Swap,
}

impl Load {
    /// For reports.
    pub fn name(self) -> &'static str {
        match self {
            Load::Idle => "none",
            Load::Poll => "same loop, no swap",
            Load::Swap => "swaps",
        }
    }
}

/// Counters the stream must leave at zero (name, label).
pub const DROPS: [(&str, &str); 12] = [
    ("sluice_gateway_xsk_rx_dropped_total", ""),
    ("sluice_gateway_xsk_rx_ring_full_total", ""),
    ("sluice_gateway_drop_tunnel_down_total", ""),
    ("sluice_gateway_drop_backpressure_total", ""),
    ("sluice_gateway_drop_no_verdict_total", ""),
    ("sluice_gateway_drop_malformed_total", ""),
    ("sluice_xdp_packets_total", "verdict=\"drop_no_meta\""),
    ("sluice_xdp_packets_total", "verdict=\"drop_no_socket\""),
    ("sluice_xdp_packets_total", "verdict=\"bypass\""),
    ("sluice_xdp_packets_total", "verdict=\"direct_network\""),
    ("sluice_xdp_packets_total", "verdict=\"direct_fail_open\""),
    ("sluice_policy_refused_total", ""),
];

/// What a stream measured (counter deltas over the stream).
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Completed swaps.
    pub swaps: u64,
    /// Each swap's time from the request to the flip (compile, write the
    /// idle slot, flip), sorted.
    pub swap_times: Vec<Duration>,
    /// Gateway policy generations gone by.
    pub generations: u64,
    /// Datagrams the iperf3 server counted (received + lost).
    pub datagrams: u64,
    /// Datagrams iperf3 counts as lost.
    pub lost: u64,
    /// Datagrams the server's socket had no room for (a share of `lost`).
    pub rcvbuf_errors: u64,
    /// Seconds the server measured, and its payload rate.
    pub seconds: f64,
    /// Payload Gbit/s received.
    pub gbps: f64,
    /// Frames the classifier steered to the tunnel.
    pub tunnelled: u64,
    /// Packets the workers sent into the tunnel.
    pub into_tunnel: u64,
    /// Packets the edge delivered to its kernel.
    pub out_of_edge: u64,
    /// Packets that reached the tunnelled server directly from the
    /// gateway: misclassified.
    pub direct: u64,
    /// [`DROPS`], in order.
    pub drops: Vec<u64>,
}

impl Outcome {
    /// Frames the classifier tunnelled that the edge did not deliver.
    pub fn lost_in_sluice(&self) -> u64 {
        self.tunnelled.saturating_sub(self.out_of_edge)
    }

    /// The `p`th percentile of the swap times.
    pub fn swap_percentile(&self, p: usize) -> Option<Duration> {
        let n = self.swap_times.len();
        (n > 0).then(|| self.swap_times[(n - 1) * p.min(100) / 100])
    }
}

/// UDP datagrams dropped for want of receive-buffer room in `inet`.
fn udp_rcvbuf_errors(lab: &Lab) -> Result<u64> {
    let snmp = lab.run_ok(Host::Inet, &["cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no RcvbufErrors in:\n{names}\n{values}"))
}

/// Parses a `Duration`'s `Debug` text (`850µs`, `1.2ms`, `3s`).
pub fn debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => v / 1e9,
        "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Runs `stream` from the client to the tunnelled server through the
/// gateway and edge of `s` (started with [`initial`]), with
/// `stream.load` beside it ([`Load::Swap`]: the two policies of
/// [`mix_pair`] swapped through `POST /policy/reload` on the admin
/// socket while it runs). The
/// gateway is left on the first policy.
///
/// # Errors
/// When iperf3 or the loop beside it fails, or a report cannot be read.
pub fn run(lab: &Lab, s: &Sluice<'_>, stream: &Stream) -> Result<Outcome> {
    let tag = &stream.tag;
    let server_addr = addr::TUNNELLED_V4.to_string();
    let server = lab.spawn(
        Host::Inet,
        &format!("iperf3-server-{tag}"),
        // Bound to the server address: replies to the UDP stream must come
        // from the address the stream went to (the edge's NAT matches on it).
        &["iperf3", "-s", "-1", "-p", "5201", "-B", &server_addr, "-J"],
    );
    lab.wait_tcp(
        Host::Inet,
        (addr::TUNNELLED_V4, 5201).into(),
        Duration::from_secs(10),
    );
    let metric = |name: &str, label: &str| gateway_metric(lab, name, label);
    let tunnelled0 = metric("sluice_xdp_packets_total", "verdict=\"tunnel\"");
    let into0 = metric("sluice_gateway_tunnel_tx_packets_total", "");
    let generation0 = metric("sluice_policy_generation", "");
    let drops0: Vec<u64> = DROPS.iter().map(|(n, l)| metric(n, l)).collect();
    let edge0 = s.edge_metric("sluice_edge_to_kernel_packets_total", "");
    let rcvbuf0 = udp_rcvbuf_errors(lab)?;
    let direct0 = lab.nft_counter(counter::GW_TO_TUNNELLED_V4);
    let (datagrams, len) = (stream.datagrams.to_string(), stream.len.to_string());
    let client = lab.spawn(
        Host::Client,
        &format!("iperf3-client-{tag}"),
        &[
            "iperf3",
            "-c",
            &server_addr,
            "-p",
            "5201",
            "-u",
            "-b",
            &stream.rate,
            "-l",
            &len,
            "-k",
            &datagrams,
            // 4 MiB socket buffers (both ends): the receiver, sharing two
            // CPUs with everything else, overflows less.
            "-w",
            "4M",
            "-J",
        ],
    );
    let conf = s.conf_dir().to_path_buf();
    let log_name = format!("swaps-{tag}.log");
    let mut swap_times = Vec::new();
    if stream.load != Load::Idle {
        // Loop for as long as the stream runs (until the client is a
        // zombie): a shell loop in the gateway's namespace, one `curl` per
        // round, ending on the first policy.
        // The running file's own head ([gateway], [tunnel]: a reload
        // refuses tunnel changes), each policy of the pair after it.
        let running = std::fs::read_to_string(conf.join("gateway.toml"))?;
        let head = running
            .split("[policy]")
            .next()
            .context("the gateway's file")?;
        std::fs::write(conf.join("a.toml"), format!("{head}{}", mix_pair(false)))?;
        std::fs::write(conf.join("b.toml"), format!("{head}{}", mix_pair(true)))?;
        // Straight to the admin socket (what `sluice policy reload` sends,
        // without the CLI's own validation of the file each round).
        let (copy, request) = if stream.load == Load::Swap {
            (
                "gateway.toml",
                "--unix-socket admin.sock -X POST http://localhost/policy/reload",
            )
        } else {
            (
                "poll.toml",
                "--unix-socket admin.sock http://localhost/policy",
            )
        };
        let script = format!(
            "cd {dir} && while grep -qv ') Z' /proc/{pid}/stat 2>/dev/null; do \
               for p in b a; do cp $p.toml {copy} && \
                 curl -sS --fail --max-time 5 {request} >> {log_name} || exit 1; \
               done; done",
            dir = conf.display(),
            pid = lab.pid(client)
        );
        let out = lab.run_timeout(Host::Gw, &["sh", "-c", &script], Duration::from_secs(120));
        let log = std::fs::read_to_string(conf.join(&log_name)).unwrap_or_default();
        ensure!(
            out.status.success(),
            "{} loop: {}\n{log}",
            stream.load.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        if stream.load == Load::Swap {
            // Each answer: "... (<total as Debug>) ...".
            swap_times = log
                .lines()
                .filter_map(|l| {
                    l.split_once('(')?
                        .1
                        .split_once(')')
                        .and_then(|(d, _)| debug_duration(d))
                })
                .collect();
            swap_times.sort();
        }
    }
    let status = lab.wait_exit(client, Duration::from_secs(120));
    let client_log = lab.log(&format!("iperf3-client-{tag}"));
    ensure!(status.success(), "iperf3 client: {client_log}");
    // The server writes its report when the test ends (one test, `-1`).
    lab.wait_exit(server, Duration::from_secs(10));
    let server_log = lab.log(&format!("iperf3-server-{tag}"));
    let report: serde_json::Value = serde_json::from_str(&server_log)
        .with_context(|| format!("iperf3 server JSON:\n{server_log}"))?;
    let end = &report["end"];
    let total = if end["sum"]["packets"].is_u64() {
        &end["sum"]
    } else {
        &end["sum_received"]
    };
    ensure!(
        total["packets"].is_u64(),
        "iperf3 server JSON without packet counts: {end}\n--- server ---\n{server_log}\n--- client ---\n{client_log}"
    );
    // Workers read their AF_XDP sockets' kernel counters every second.
    std::thread::sleep(Duration::from_millis(1200));
    let drops = DROPS
        .iter()
        .zip(&drops0)
        .map(|((n, l), b)| metric(n, l).saturating_sub(*b))
        .collect();
    Ok(Outcome {
        swaps: swap_times.len() as u64,
        swap_times,
        generations: metric("sluice_policy_generation", "").saturating_sub(generation0),
        datagrams: total["packets"].as_u64().unwrap_or(0),
        lost: total["lost_packets"].as_u64().unwrap_or(u64::MAX),
        rcvbuf_errors: udp_rcvbuf_errors(lab)?.saturating_sub(rcvbuf0),
        seconds: total["seconds"].as_f64().unwrap_or(f64::NAN),
        // The server's `sum` has no byte count for UDP (iperf3 3.12); its
        // `sum_received` has.
        gbps: end["sum_received"]["bits_per_second"]
            .as_f64()
            .or_else(|| total["bits_per_second"].as_f64())
            .unwrap_or(f64::NAN)
            / 1e9,
        tunnelled: metric("sluice_xdp_packets_total", "verdict=\"tunnel\"")
            .saturating_sub(tunnelled0),
        into_tunnel: metric("sluice_gateway_tunnel_tx_packets_total", "").saturating_sub(into0),
        out_of_edge: s
            .edge_metric("sluice_edge_to_kernel_packets_total", "")
            .saturating_sub(edge0),
        direct: lab
            .nft_counter(counter::GW_TO_TUNNELLED_V4)
            .saturating_sub(direct0),
        drops,
    })
}
