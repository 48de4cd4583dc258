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
    io,
    sync::{Arc, OnceLock},
    time::Instant,
};

use libfuzzer_sys::fuzz_target;
use sluice_runtime::pki;
use sluice_runtime::tunnel::{Session, SessionConfig};

struct Configs {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

fn configs() -> &'static Configs {
    static C: OnceLock<Configs> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-pki-{}", std::process::id()));
        let f = pki::generate(&dir, &["edge.sluice.test".into()], &["gw1".into()])
            .expect("lab PKI");
        let (_, cert, key) = &f.gateways[0];
        let c = Configs {
            client: pki::client_config(&f.ca, cert, key).expect("client config"),
            server: pki::server_config(&f.ca, &f.edge.0, &f.edge.1).expect("server config"),
        };
        let _ = std::fs::remove_dir_all(dir);
        c
    })
}

/// A reader that says `WouldBlock` when empty, like a non-blocking socket.
struct Feed<'a>(&'a [u8]);

impl io::Read for Feed<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        io::Read::read(&mut self.0, out)
    }
}

/// Everything `from` has to send, into `to`; then drains `to`.
fn pump(from: &mut Session, to: &mut Session, now: Instant) {
    let mut wire = Vec::new();
    let _ = from.handle_write(&mut wire, now);
    deliver(to, &wire, now);
}

fn deliver(to: &mut Session, wire: &[u8], now: Instant) {
    let mut feed = Feed(wire);
    for _ in 0..1000 {
        let res = to.handle_read(&mut feed, now);
        while to.poll_packet().is_some() {}
        match res {
            Ok(o) if o.more => {}
            _ => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let c = configs();
    let now = Instant::now();
    let name = pki::server_name("edge.sluice.test").expect("name");
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
            let _ = server.handle_write(&mut wire, now);
            wire.extend_from_slice(bytes);
        } else {
            server.fuzz_queue_record(*op, bytes);
        }
        rest = tail;
    }
    let _ = server.handle_write(&mut wire, now);
    deliver(&mut client, &wire, now);
    if client.is_closed() {
        assert!(client.close_reason().is_some());
    }
});
