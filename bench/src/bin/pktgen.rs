//! The lab benchmark's packet generator, and the `XDP_DROP` program that
//! measures what the receiving veth takes at all.
//!
//! `pktgen send`: sends pre-built 64-byte UDP/IPv4 frames
//! ([`sluice_bench::pktgen`]) through an `AF_XDP` socket bound to queue 0
//! of `--iface` (copy mode: veth has no zero-copy), in batches: writing a
//! batch into the TX ring is a copy of 60 bytes per frame and one store,
//! and the kernel is woken with one `sendto` per 32 frames (copy mode's
//! limit per call). No allocation, lock or syscall per packet. The source
//! port cycles over `--flows` ports from `--sport`, so the frames make as
//! many flows. It stops after `--seconds` or `--max-packets`, whichever
//! comes first (both are required to be finite: the lab rules forbid
//! unbounded load), and prints one JSON line: frames sent (taken by the
//! kernel), the time, its own rate, what the interface dropped.
//!
//! `pktgen xdp-drop`: attaches a two-instruction `XDP_DROP` program to
//! `--iface` for at most `--seconds` (SIGTERM, or the end of the process,
//! detaches it).
//!
//! Both refuse to run outside a named network namespace (`ip netns`, as
//! the lab makes them), and `send` refuses addresses outside the lab's
//! ranges.
use std::{
    io::Write as _,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use sluice_bench::pktgen::{self, FRAME_LEN};
use sluice_sys::{
    xdp_verdict::{Action, FixedVerdict, Mode},
    xsk::{BindMode, XskConfig, XskSocket},
};

/// The longest run either subcommand accepts.
const MAX_SECONDS: u64 = 600;

const USAGE: &str = "usage: pktgen send --iface IF --dst-mac MAC --src A --dst A --seconds N --max-packets N [--dport P] [--sport P] [--flows N] [--batch N]\n       pktgen xdp-drop --iface IF --seconds N [--mode native|generic]";

struct Send {
    iface: String,
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flows: u16,
    batch: usize,
    seconds: f64,
    max_packets: u64,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().context(USAGE)?;
    let mut kv = std::collections::HashMap::new();
    while let Some(k) = args.next() {
        let v = args
            .next()
            .with_context(|| format!("{k} needs a value\n{USAGE}"))?;
        kv.insert(k, v);
    }
    let mut take = |k: &str| kv.remove(k);
    outside_host_namespace()?;
    match cmd.as_str() {
        "send" => {
            let req =
                |v: Option<String>, k: &str| v.with_context(|| format!("{k} is required\n{USAGE}"));
            let s = Send {
                iface: req(take("--iface"), "--iface")?,
                dst_mac: pktgen::parse_mac(&req(take("--dst-mac"), "--dst-mac")?)
                    .context("--dst-mac: aa:bb:cc:dd:ee:ff")?,
                src: req(take("--src"), "--src")?.parse()?,
                dst: req(take("--dst"), "--dst")?.parse()?,
                sport: take("--sport").map_or(Ok(40_000), |v| v.parse())?,
                dport: take("--dport").map_or(Ok(9), |v| v.parse())?,
                flows: take("--flows").map_or(Ok(16), |v| v.parse())?,
                batch: take("--batch").map_or(Ok(64), |v| v.parse())?,
                seconds: req(take("--seconds"), "--seconds")?.parse()?,
                max_packets: req(take("--max-packets"), "--max-packets")?.parse()?,
            };
            ensure!(kv.is_empty(), "unknown arguments {:?}\n{USAGE}", kv.keys());
            send(&s)
        }
        "xdp-drop" => {
            let iface = take("--iface").context("--iface is required")?;
            let seconds: u64 = take("--seconds")
                .context("--seconds is required")?
                .parse()?;
            let mode = match take("--mode").as_deref() {
                None | Some("native") => Mode::Native,
                Some("generic") => Mode::Generic,
                Some(m) => bail!("--mode {m}: native or generic"),
            };
            ensure!(kv.is_empty(), "unknown arguments {:?}\n{USAGE}", kv.keys());
            ensure!(seconds <= MAX_SECONDS, "--seconds: at most {MAX_SECONDS}");
            let _prog = FixedVerdict::attach(&iface, Action::Drop, mode)
                .with_context(|| format!("attaching XDP_DROP to {iface} ({mode:?})"))?;
            println!("pktgen: XDP_DROP attached to {iface} ({mode:?})");
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(seconds));
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// Refuses to run outside a named network namespace (one `ip netns add`
/// made, as the lab does: a file under `/run/netns`): the generator is
/// for lab namespaces only, never the host's.
fn outside_host_namespace() -> Result<()> {
    let ours = std::fs::metadata("/proc/self/ns/net")?;
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| m.ino() == ours.ino() && m.dev() == ours.dev());
    ensure!(
        named,
        "pktgen runs only inside a lab network namespace (ip netns exec ...), never in the host's"
    );
    Ok(())
}

/// `/sys/class/net/<iface>/statistics/<name>` (0 if unreadable).
fn iface_stat(iface: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[allow(
    clippy::cast_precision_loss,
    reason = "packet counts far below 2^52, for a rate"
)]
fn send(s: &Send) -> Result<()> {
    ensure!(
        pktgen::is_lab_address(s.src) && pktgen::is_lab_address(s.dst),
        "--src and --dst must be in the lab's ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/15)"
    );
    ensure!(
        s.seconds > 0.0 && s.seconds <= MAX_SECONDS as f64,
        "--seconds: more than 0, at most {MAX_SECONDS}"
    );
    ensure!(s.max_packets > 0, "--max-packets: at least 1");
    ensure!(
        s.flows > 0 && s.sport.checked_add(s.flows - 1).is_some(),
        "--flows: at least 1, ports within 65535"
    );
    ensure!((1..=1024).contains(&s.batch), "--batch: 1 to 1024");
    let src_mac = pktgen::parse_mac(
        &std::fs::read_to_string(format!("/sys/class/net/{}/address", s.iface))
            .with_context(|| format!("{}: no such interface here", s.iface))?,
    )
    .context("interface address")?;
    let frames: Vec<[u8; FRAME_LEN]> = (0..s.flows)
        .map(|i| pktgen::udp_frame(s.dst_mac, src_mac, s.src, s.dst, s.sport + i, s.dport))
        .collect();
    // Almost every frame for TX: a few posted to the fill ring (nothing is
    // received: no XDP program redirects to this socket).
    let config = XskConfig {
        frame_size: 2048,
        frame_count: 4096,
        fill_size: 64,
        rx_size: 64,
        tx_size: 2048,
        completion_size: 4096,
        ..XskConfig::default()
    };
    let mut sock = XskSocket::new(s.iface.as_str(), 0, &config, BindMode::Copy)
        .with_context(|| format!("AF_XDP socket on {} queue 0", s.iface))?;
    let dropped0 = iface_stat(&s.iface, "tx_dropped");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(s.seconds);
    let mut submitted = 0u64;
    let mut next = 0usize;
    while submitted < s.max_packets && Instant::now() < deadline {
        let want = usize::try_from(s.max_packets - submitted)
            .unwrap_or(usize::MAX)
            .min(s.batch);
        let mut batch = sock.tx(want);
        while let Some(mut f) = batch.next_frame() {
            f.buf()[..FRAME_LEN].copy_from_slice(&frames[next]);
            f.send(FRAME_LEN);
            next = if next + 1 == frames.len() {
                0
            } else {
                next + 1
            };
        }
        let n = batch.commit().context("AF_XDP TX wakeup")?;
        submitted += n as u64;
        if n == 0 {
            // Every frame is in the ring or in the kernel: let the kernel
            // (softirq, the receiving side on this CPU) catch up.
            sock.kick_tx().context("AF_XDP TX wakeup")?;
            std::thread::yield_now();
        }
    }
    // What is still in the TX ring goes now, for at most a second.
    let drain = Instant::now() + Duration::from_secs(1);
    while sock.tx_in_flight() > 0 && Instant::now() < drain {
        sock.kick_tx().context("AF_XDP TX wakeup")?;
        sock.complete();
        std::thread::yield_now();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = submitted - sock.tx_in_flight() as u64;
    let stats = sock.statistics().context("XDP_STATISTICS")?;
    let counters = sock.counters();
    println!(
        "{}",
        serde_json::json!({
            "sent": sent,
            "seconds": elapsed,
            "mpps": sent as f64 / elapsed / 1e6,
            "frame_bytes": FRAME_LEN,
            "wire_bytes": pktgen::WIRE_LEN,
            "flows": s.flows,
            "tx_wakeups": counters.tx_wakeups,
            "tx_invalid_descs": stats.tx_invalid_descs,
            "iface_tx_dropped": iface_stat(&s.iface, "tx_dropped").saturating_sub(dropped0),
        })
    );
    Ok(())
}
