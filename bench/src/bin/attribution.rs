//! Part of the lab benchmark: what attributing a new connection to its
//! process costs, sluice's way against the usual way, with 1,000 and
//! 10,000 sockets open. Run as root, in a lab namespace (loopback only).
//!
//! - The usual way (what `/proc`-walking tools do per connection): a
//!   netlink `SOCK_DIAG_BY_FAMILY` lookup of the connection's socket
//!   inode, then a walk of every process's `/proc/<pid>/fd` for it.
//!   Measured per new connection.
//! - sluice's way: the socket hooks decide in the kernel while the
//!   application creates and connects the socket (`sock_create`,
//!   `connect4`, `sock_release`: process-map lookup, bypass-trie lookup,
//!   `SO_MARK`, flow record). Its cost is the difference between a
//!   loopback connect + accept + close with the hooks attached and
//!   without, measured in alternating blocks of the same run.
//!
//! Prints one JSON object per socket count on stdout.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "report arithmetic on small counts and percentile indices"
)]

use std::{
    net::{TcpListener, TcpStream},
    time::Instant,
};

use anyhow::{Context as _, Result};
use sluice_gateway::ebpf::Programs;
use sluice_gateway::endpoint::hook_settings;
use sluice_sys::sock_diag::{Proto, process_of_inode, socket_inode};

/// Connections per timed block, blocks per variant.
const BLOCK: usize = 500;
const BLOCKS: usize = 20;
/// New connections attributed the usual way, per socket count.
const WALKS: usize = 20;

/// Microseconds per connect + accept + close, over one block.
fn connect_block(listener: &TcpListener) -> Result<f64> {
    let addr = listener.local_addr()?;
    let t = Instant::now();
    for _ in 0..BLOCK {
        let c = TcpStream::connect(addr)?;
        let (a, _) = listener.accept()?;
        drop(c);
        drop(a);
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / BLOCK as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    sluice_bench::raise_nofile();
    let listener = TcpListener::bind("127.0.0.1:0").context("binding on loopback")?;
    let server = listener.local_addr()?;
    let (cgroup, cfg) = hook_settings(0x5c1, None).context("hook settings")?;
    let mut open: Vec<(TcpStream, TcpStream)> = Vec::new();
    let mut seen = 0;
    for n in [1_000usize, 10_000] {
        while open.len() * 2 < n {
            let c = TcpStream::connect(server).context("connect (ulimit -n?)")?;
            let (a, _) = listener.accept()?;
            open.push((c, a));
        }
        // The usual way, per new connection (kept open while looked up).
        let mut walk = Vec::new();
        let mut diag = Vec::new();
        for _ in 0..WALKS {
            let c = TcpStream::connect(server)?;
            let (_a, _) = listener.accept()?;
            let local = c.local_addr()?;
            let t = Instant::now();
            let inode = socket_inode(Proto::Tcp, local, server)?.context("socket not found")?;
            diag.push(t.elapsed().as_secs_f64() * 1e6);
            let found = process_of_inode(inode).context("process not found")?;
            walk.push(t.elapsed().as_secs_f64() * 1e6);
            anyhow::ensure!(found.0 == std::process::id(), "attributed to {found:?}");
        }
        // sluice's way: alternate blocks without any hook attached and
        // with the hooks (a fresh load each time, outside the timing).
        let mut plain = Vec::new();
        let mut hooked = Vec::new();
        for _ in 0..BLOCKS {
            plain.push(connect_block(&listener)?);
            let mut classifier = Programs::load().context("loading the classifier")?;
            let hooks = classifier.attach_sock_hooks(&cgroup, cfg, None)?;
            hooked.push(connect_block(&listener)?);
            seen += hooks.counters()[sluice_common::SockCounter::ConnectTunnel as usize];
            drop(hooks);
            drop(classifier);
        }
        // Each hooked block against the plain block just before it: the
        // median difference, and the 10th and 90th percentiles as spread.
        let mut diffs: Vec<f64> = hooked.iter().zip(&plain).map(|(h, p)| h - p).collect();
        diffs.sort_by(f64::total_cmp);
        let pct = |q: f64| diffs[((diffs.len() - 1) as f64 * q).round() as usize];
        let (p, h) = (median(plain), median(hooked));
        println!(
            "{{\"sockets\":{n},\"sock_diag_us\":{:.2},\"sock_diag_proc_walk_us\":{:.1},\"connect_plain_us\":{p:.2},\"connect_hooked_us\":{h:.2},\"hook_cost_us\":{:.2},\"hook_cost_p10_us\":{:.2},\"hook_cost_p90_us\":{:.2},\"hook_connects_seen\":{}}}",
            median(diag),
            median(walk),
            pct(0.5),
            pct(0.1),
            pct(0.9),
            seen
        );
    }
    Ok(())
}
