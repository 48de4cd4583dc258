//! The edge before authentication, server side: connections from anywhere
//! sending anything (garbage, pieces of a real ClientHello, in any
//! chunking), while time passes. Nothing may panic; handshakes stay within
//! their caps; what the sessions hold stays bounded (a few KiB each, never
//! more than the pre-authentication cap); every connection goes by its
//! deadline; no packet is ever delivered before authentication.
//!
//! Input: ops, each `op(u8)` then its arguments:
//! - `0 a(u8)`: accept a connection from source address number `a`
//!   (sixteen IPv4 /24s and sixteen IPv6 /64s, several hosts each);
//! - `1 c(u8) len(u16 LE) bytes[len]`: connection `c` (mod live ones)
//!   sends these bytes;
//! - `2 c(u8) n(u16 LE)`: connection `c` sends the first `n` bytes of a
//!   real ClientHello (then the fuzzer's bytes go after it);
//! - `3 t(u8)`: `t * 100 ms` pass, timers run;
//! - anything else: the edge writes what it has, closes what is done.
#![no_main]
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use libfuzzer_sys::fuzz_target;
use sluice_config::EdgeConfig;
use sluice_core::{
    edge::{Accepted, Core},
    lpm::NoAdvice,
    tunnel::{AeadProvider, Session, SessionError, lab_pki},
};

struct Setup {
    cfg: EdgeConfig,
    tls: Arc<rustls::ServerConfig>,
    hello: Vec<u8>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        // In memory: the edge's certificate for `edge.sluice.test`, a
        // gateway's for `branch-1`, one CA (as `sluice pki init` makes).
        let pki = lab_pki::LabPki::new(&["branch-1"]);
        // The configuration only checks that its PEM paths exist (the TLS
        // material comes from the lab PKI above): `/dev/null` does.
        let toml = "[edge]\nlisten = \"[::]:4443\"\nca = \"/dev/null\"\ncert = \"/dev/null\"\nkey = \"/dev/null\"\n\
                    manage_network = false\nmax_handshakes = 24\nmax_handshakes_per_prefix = 4\n\
                    handshake_timeout_secs = 3\n\n[[edge.gateway]]\nname = \"branch-1\"\nprefixes = [\"192.0.2.0/24\"]\nmax_routes = 16\n";
        let cfg = EdgeConfig::parse(std::path::Path::new("edge.toml"), toml).expect("config");
        let tls = pki.server_config();
        let mut c = rustls::ClientConnection::new(pki.client_config(0), lab_pki::server_name())
            .expect("client");
        let mut hello = Vec::new();
        c.write_tls(&mut hello).expect("ClientHello");
        Setup { cfg, tls, hello }
    })
}

/// Bytes a connection sent, read into its session as the tunnel driver
/// reads a non-blocking socket (`sluice_runtime::driver::receive`: straight
/// into the session's receive buffer, at most about `budget` bytes, until
/// the bytes run out, "would block"). Whether more may be left.
fn feed(
    s: &mut Session,
    mut bytes: &[u8],
    now: Instant,
    budget: usize,
) -> Result<bool, SessionError> {
    let mut total = 0;
    loop {
        let buf = s.receive_buffer()?;
        if buf.is_empty() {
            return Ok(true);
        }
        let room = buf.len().min(budget.saturating_sub(total).max(1));
        let n = room.min(bytes.len());
        if n == 0 {
            return Ok(false);
        }
        buf[..n].copy_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        s.handle_received_in_place(n, now)?;
        total += n;
        if total >= budget {
            return Ok(true);
        }
    }
}

fn source(a: u8) -> SocketAddr {
    let net = u16::from(a & 0x0f);
    let host = u16::from(a >> 4) + 1;
    let ip = if a & 0x80 == 0 {
        IpAddr::V4(Ipv4Addr::new(203, 0, (net + 100) as u8, host as u8))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x66, net, 0, 0, 0, host))
    };
    SocketAddr::new(ip, 40_000 + u16::from(a))
}

/// Per handshake at most: the receive cap (96 KiB), the server's flight
/// and rustls's own state.
const PER_CONN: usize = 96 * 1024 + 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let start = Instant::now();
    let mut now = start;
    let mut core = Core::new(
        &s.cfg.core_settings(),
        s.cfg.limits,
        s.tls.clone(),
        AeadProvider::default(),
        &NoAdvice,
        start,
    )
    .expect("core");
    // Connections not closed yet, with when they came.
    let mut live: Vec<(u32, Instant)> = Vec::new();
    let mut sink = Vec::new();
    let mut rest = data;
    let deliver = &mut |_: &[u8]| panic!("a packet before authentication");
    while let [op, tail @ ..] = rest {
        rest = tail;
        match op {
            0 => {
                let [a, tail @ ..] = rest else { break };
                rest = tail;
                if let Accepted::Conn(id) = core.accept(source(*a), now) {
                    live.push((id, now));
                }
            }
            1 | 2 if !live.is_empty() => {
                let [c, lo, hi, tail @ ..] = rest else { break };
                let n = usize::from(u16::from_le_bytes([*lo, *hi]));
                let id = live[usize::from(*c) % live.len()].0;
                let bytes = if *op == 1 {
                    let n = n.min(tail.len());
                    let (b, t) = tail.split_at(n);
                    rest = t;
                    b
                } else {
                    rest = tail;
                    &s.hello[..n.min(s.hello.len())]
                };
                for chunk in bytes.chunks(usize::from(*c % 7) * 97 + 1) {
                    let _ = core.read(id, now, |sess| feed(sess, chunk, now, 1 << 16), deliver);
                }
            }
            3 => {
                let [t, tail @ ..] = rest else { break };
                rest = tail;
                now += Duration::from_millis(100 * u64::from(*t));
                let t1 = now;
                core.handle_timeout(now);
                // Long enough after for the closed to have lingered out.
                now += Duration::from_millis(2100);
                core.handle_timeout(now);
                while let Some(id) = core.poll_closed() {
                    live.retain(|(l, _)| *l != id);
                }
                let timeout = core.limits().handshake_timeout;
                assert!(
                    live.iter().all(|(_, born)| *born + timeout > t1),
                    "a connection outlived its handshake deadline"
                );
            }
            _ => {
                while let Some(id) = core.poll_dirty() {
                    sink.clear();
                    core.write(id, now, |sess| -> Result<(), SessionError> {
                        // The tunnel driver's flush policy
                        // (`sluice_runtime::driver::flush`) into a peer's
                        // socket that takes everything.
                        sess.flush_due(now);
                        while let Some(bytes) = sess.poll_transmit(now) {
                            sink.extend_from_slice(bytes);
                            let n = bytes.len();
                            sess.transmitted(n, now);
                        }
                        Ok(())
                    });
                }
            }
        }
        while let Some(id) = core.poll_closed() {
            live.retain(|(l, _)| *l != id);
        }
        let limits = core.limits();
        assert!(core.handshakes() <= limits.max_handshakes);
        assert_eq!(core.tunnels(), 0, "nobody authenticates without a key");
        assert!(core.buffered_capacity() <= live.len() * PER_CONN);
        assert!(core.slots() <= limits.max_handshakes as usize + 1);
    }
});
