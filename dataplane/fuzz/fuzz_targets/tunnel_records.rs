//! The session's receive path after the handshake: TLS records from an
//! authenticated but hostile peer (any inner content type and content:
//! alerts, handshake messages such as key updates and tickets, frames
//! split anywhere) mixed with unauthenticated bytes on the wire. No input
//! may panic or loop; the session either keeps going or closes with a
//! reason.
//!
//! Input: `op(u8) len(u16 LE) bytes[len]`, repeated. `op` 0xff appends the
//! bytes to the wire as they are; any other `op` is the inner content type
//! of one record sealed by the peer.
#![no_main]
use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use libfuzzer_sys::fuzz_target;
use sluice_core::tunnel::{Session, SessionConfig, lab_pki};

struct Configs {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

fn configs() -> &'static Configs {
    static C: OnceLock<Configs> = OnceLock::new();
    C.get_or_init(|| {
        let pki = lab_pki::LabPki::new(&["gw1"]);
        Configs {
            client: pki.client_config(0),
            server: pki.server_config(),
        }
    })
}

/// Everything `from` has to send, appended to `wire`.
fn transmit(from: &mut Session, wire: &mut Vec<u8>, now: Instant) {
    while let Some(bytes) = from.poll_transmit(now) {
        wire.extend_from_slice(bytes);
        let n = bytes.len();
        from.transmitted(n, now);
    }
}

/// Everything `from` has to send, into `to`; then drains `to`.
fn pump(from: &mut Session, to: &mut Session, now: Instant) {
    let mut wire = Vec::new();
    transmit(from, &mut wire, now);
    deliver(to, &wire, now);
}

/// `wire` into `to` as received bytes, draining its packets and events
/// whenever its buffer is full.
fn deliver(to: &mut Session, wire: &[u8], now: Instant) {
    let mut rest = wire;
    for _ in 0..1000 {
        let res = to.handle_received(rest, now);
        while to.poll_packet().is_some() {}
        while to.poll_event().is_some() {}
        match res {
            Ok(n) if n > 0 => rest = &rest[n..],
            _ => break,
        }
        if rest.is_empty() {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let c = configs();
    let now = Instant::now();
    let name = lab_pki::server_name();
    let cfg = |n: &str| SessionConfig {
        name: n.into(),
        ..SessionConfig::default()
    };
    let mut client = Session::new(
        rustls::client::UnbufferedClientConnection::new(c.client.clone(), name)
            .expect("client")
            .into(),
        cfg("gw1"),
        now,
    );
    let mut server = Session::new(
        rustls::server::UnbufferedServerConnection::new(c.server.clone())
            .expect("server")
            .into(),
        cfg("edge"),
        now,
    );
    for _ in 0..10 {
        pump(&mut client, &mut server, now);
        pump(&mut server, &mut client, now);
    }
    assert!(client.is_established() && server.is_established());

    let mut wire = Vec::new();
    let mut rest = data;
    while let [op, a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        if *op == 0xff {
            transmit(&mut server, &mut wire, now);
            wire.extend_from_slice(bytes);
        } else {
            server.fuzz_queue_record(*op, bytes);
        }
        rest = tail;
    }
    transmit(&mut server, &mut wire, now);
    deliver(&mut client, &wire, now);
    if client.is_closed() {
        assert!(client.close_reason().is_some());
    }
});
