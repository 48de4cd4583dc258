//! Benchmarks for sluice (see `benches/`).
//!
//! This library holds the setup the benches share: an established
//! client/server [`SessionPair`] over in-memory byte pipes, and a
//! [`Feed`] reader that says `WouldBlock` (not EOF) when it runs dry, the way
//! a non-blocking socket does. Nothing here is measured. [`pktgen`] builds
//! the packet generator's frames.

use std::{
    io,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub mod pktgen;

use sluice_core::tunnel::{AeadProvider, Session, SessionConfig};
use sluice_runtime::{driver, pki};

/// Long enough that no session timer comes due during a bench.
#[allow(
    clippy::duration_suboptimal_units,
    reason = "`Duration::from_hours` needs Rust 1.91; the workspace MSRV is 1.87"
)]
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads from a byte slice and reports `WouldBlock` once it is empty, like
/// a non-blocking socket with nothing more to read. (`&[u8]` as a reader
/// would report EOF instead, which ends a [`Session`].)
#[derive(Debug)]
pub struct Feed<'a>(pub &'a [u8]);

impl io::Read for Feed<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = io::Read::read(&mut self.0, out)?;
        Ok(n)
    }
}

/// Lab PKI (CA, edge and one gateway certificate) in a temporary directory,
/// turned into rustls configurations. Build it once per bench binary: key
/// generation is slow. The directory is removed on drop.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    /// Generates the material with [`pki::generate`] and loads it.
    ///
    /// # Panics
    /// If generation or loading fails (a bench cannot run without it).
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-bench-pki-{}", std::process::id()));
        let files = pki::generate(&dir, &["edge.sluice.test".into()], &["gw1".into()])
            .expect("generate lab PKI");
        let (_, cert, key) = &files.gateways[0];
        let client = pki::client_config(&files.ca, cert, key).expect("client config");
        let server =
            pki::server_config(&files.ca, &files.edge.0, &files.edge.1).expect("server config");
        Self {
            dir,
            client,
            server,
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway (client) and edge (server) [`Session`] with the TLS handshake
/// and the HELLO exchange done and nothing left in flight in either
/// direction. Keepalive and idle timers are set to a day so that no timer
/// traffic can interleave with measured batches (the benches never call
/// `handle_timeout` anyway).
#[derive(Debug)]
pub struct SessionPair {
    /// The gateway side (TLS client).
    pub client: Session,
    /// The edge side (TLS server).
    pub server: Session,
}

impl SessionPair {
    /// Builds a fresh pair from `pki` and drives it to established, with
    /// the AEAD library the dataplane would pick here ([`driver::aead`]).
    ///
    /// # Panics
    /// If the pair does not establish (a broken build, not a bench result).
    pub fn established(pki: &Pki) -> Self {
        Self::established_with(pki, driver::aead())
    }

    /// [`SessionPair::established`], both ends protecting records with
    /// `aead`'s library.
    ///
    /// # Panics
    /// If the pair does not establish.
    pub fn established_with(pki: &Pki, aead: AeadProvider) -> Self {
        let cfg = |name: &str| SessionConfig {
            name: name.into(),
            keepalive: DAY,
            idle_timeout: DAY,
            aead,
            ..SessionConfig::default()
        };
        let now = Instant::now();
        let name = pki::server_name("edge.sluice.test").expect("server name");
        let c = rustls::client::UnbufferedClientConnection::new(pki.client.clone(), name)
            .expect("client conn");
        let s = rustls::server::UnbufferedServerConnection::new(pki.server.clone())
            .expect("server conn");
        let mut pair = Self {
            client: Session::new(c.into(), cfg("gw1"), now),
            server: Session::new(s.into(), cfg("edge"), now),
        };
        for _ in 0..64 {
            let a = pump(&mut pair.client, &mut pair.server, now);
            let b = pump(&mut pair.server, &mut pair.client, now);
            if a + b == 0 && pair.client.is_established() && pair.server.is_established() {
                return pair;
            }
        }
        panic!(
            "session pair did not establish: client {:?}, server {:?}",
            pair.client.close_reason(),
            pair.server.close_reason()
        );
    }
}

/// Moves everything `from` has to write into `to`, and drains `to`'s
/// packets. Returns the TLS bytes moved.
fn pump(from: &mut Session, to: &mut Session, now: Instant) -> usize {
    let mut wire = Vec::new();
    driver::transmit(from, &mut wire, now).expect("write to Vec");
    if !wire.is_empty() {
        driver::receive(to, &mut Feed(&wire), now, driver::READ_BUDGET).expect("handshake read");
        while to.poll_packet().is_some() {}
    }
    wire.len()
}

/// Raises the open-file limit to its hard maximum (capped at 2^20):
/// 10,000 sockets need more than the usual 1024.
pub fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const r);
        }
    }
}

/// Busy ticks of all CPUs since boot (`/proc/stat`'s first line: user,
/// nice, system, irq, softirq, steal; idle and iowait left out): read
/// before and after a run, their difference is the machine's CPU time.
///
/// # Errors
/// `/proc/stat` unreadable or empty.
pub fn machine_busy_ticks() -> std::io::Result<u64> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let line = s
        .lines()
        .next()
        .ok_or_else(|| std::io::Error::other("empty /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Ok(v.iter().take(8).sum::<u64>()
        - v.get(3).copied().unwrap_or(0)
        - v.get(4).copied().unwrap_or(0))
}
