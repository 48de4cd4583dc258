//! Deterministic simulation of two tunnel endpoints: real rustls on both
//! sides, an in-memory byte pipe that splits reads and writes at seeded
//! random points (and sometimes refuses with `WouldBlock`), and mocked time.
//! The sessions are driven through their sans-IO API by [`SocketPump`],
//! which moves bytes between a session and a reader or writer the way the
//! dataplane's driver moves them between a session and its socket.
use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    tunnel::lab_pki::{self, LabPki},
    wire::tunnel::{self, CloseCode, FrameType},
};

use crate::testutil::XorShift as Rng;

/// A socket's pump over the sans-IO API (steps 2 and 5 of the call order).
trait SocketPump {
    /// Reads `rd` into the session until it would block, ends, or the
    /// receive buffer is full (then `Ok(true)`: drain packets, call
    /// again). Reads alternate between the zero-copy path
    /// ([`Session::receive_buffer`]) and the copying one
    /// ([`Session::handle_received`]), so both are exercised everywhere.
    fn handle_read(&mut self, rd: &mut dyn io::Read, now: Instant) -> Result<bool, SessionError>;
    /// Writes what [`Session::poll_transmit`] has to `wr` until done or
    /// `WouldBlock`; returns the bytes written.
    fn handle_write(&mut self, wr: &mut dyn io::Write, now: Instant) -> io::Result<usize>;
}

impl SocketPump for Session {
    fn handle_read(&mut self, rd: &mut dyn io::Read, now: Instant) -> Result<bool, SessionError> {
        let mut scratch = [0u8; 3000];
        let mut copy = false;
        loop {
            copy = !copy;
            let buf = self.receive_buffer()?;
            if buf.is_empty() {
                return Ok(true);
            }
            let res = if copy {
                let room = buf.len().min(scratch.len());
                rd.read(&mut scratch[..room])
            } else {
                rd.read(buf)
            };
            match res {
                Ok(0) => {
                    self.handle_eof();
                    return match self.close_reason() {
                        Some(r) if self.is_closed() => Err(SessionError::Closed(r.clone())),
                        _ => Ok(false),
                    };
                }
                Ok(n) if copy => {
                    let taken = self.handle_received(&scratch[..n], now)?;
                    assert_eq!(taken, n, "the buffer had room for all of them");
                }
                Ok(n) => self.handle_received_in_place(n, now)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("test reader failed: {e}"),
            }
        }
    }

    fn handle_write(&mut self, wr: &mut dyn io::Write, now: Instant) -> io::Result<usize> {
        let mut total = 0;
        while let Some(bytes) = self.poll_transmit(now) {
            match wr.write(bytes) {
                Ok(0) => break,
                Ok(n) => {
                    self.transmitted(n, now);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// One direction of a TCP stream, with seeded short reads/writes.
struct Pipe<'a> {
    buf: &'a mut Vec<u8>,
    rng: &'a mut Rng,
    /// Refuse every write (a peer that never reads).
    stuck: bool,
}

impl io::Read for Pipe<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() || self.rng.below_usize(8) == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = (1 + self.rng.below_usize(3000))
            .min(self.buf.len())
            .min(out.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }
}

impl io::Write for Pipe<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.stuck || self.rng.below_usize(8) == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = (1 + self.rng.below_usize(5000)).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Pair {
    client: Session,
    server: Session,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    rng: Rng,
    now: Instant,
    /// Packets delivered to each side.
    at_client: Vec<Vec<u8>>,
    at_server: Vec<Vec<u8>>,
    wire_bytes: usize,
    pki: LabPki,
}

/// A fresh CA with an edge and a gateway `gw1`, and their configurations.
fn configs() -> (LabPki, Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let pki = LabPki::new(&["gw1"]);
    let cc = pki.client_config(0);
    let sc = pki.server_config();
    (pki, cc, sc)
}

fn cfg(name: &str) -> SessionConfig {
    SessionConfig {
        name: name.into(),
        ..SessionConfig::default()
    }
}

impl Pair {
    fn new(seed: u64) -> Self {
        Self::with(seed, cfg("gw1"), cfg("edge"))
    }

    fn with(seed: u64, client_cfg: SessionConfig, server_cfg: SessionConfig) -> Self {
        let (pki, cc, sc) = configs();
        let now = Instant::now();
        let name = lab_pki::server_name();
        let c = rustls::client::UnbufferedClientConnection::new(cc, name).unwrap();
        let s = rustls::server::UnbufferedServerConnection::new(sc).unwrap();
        Self {
            client: Session::new(c.into(), client_cfg, now),
            server: Session::new(s.into(), server_cfg, now),
            c2s: Vec::new(),
            s2c: Vec::new(),
            rng: Rng::new(seed | 1),
            now,
            at_client: Vec::new(),
            at_server: Vec::new(),
            wire_bytes: 0,
            pki,
        }
    }

    /// Runs both sides until nothing moves (bounded).
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for side in [true, false] {
                let (sess, out, inp, got) = if side {
                    (
                        &mut self.client,
                        &mut self.c2s,
                        &mut self.s2c,
                        &mut self.at_client,
                    )
                } else {
                    (
                        &mut self.server,
                        &mut self.s2c,
                        &mut self.c2s,
                        &mut self.at_server,
                    )
                };
                let before = out.len();
                if sess.wants_write() {
                    let mut p = Pipe {
                        buf: out,
                        rng: &mut self.rng,
                        stuck: false,
                    };
                    let _ = sess.handle_write(&mut p, self.now);
                }
                self.wire_bytes += out.len() - before;
                moved |= out.len() != before;
                if sess.is_closed() {
                    // A closed endpoint reads nothing more (its socket is gone).
                    inp.clear();
                } else if !inp.is_empty() {
                    let before = inp.len();
                    let mut p = Pipe {
                        buf: inp,
                        rng: &mut self.rng,
                        stuck: false,
                    };
                    let _ = sess.handle_read(&mut p, self.now);
                    moved |= inp.len() != before;
                }
                while let Some(pkt) = sess.poll_packet() {
                    got.push(pkt.to_vec());
                    moved = true;
                }
            }
            if !moved
                && self.c2s.is_empty()
                && self.s2c.is_empty()
                && !self.client.wants_write()
                && !self.server.wants_write()
            {
                return;
            }
        }
        panic!("simulation did not settle");
    }
}

fn packet(rng: &mut Rng, i: usize) -> Vec<u8> {
    let len = 20 + rng.below_usize(1481);
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn handshake_and_hello() {
    let mut p = Pair::new(1);
    p.drive();
    assert!(p.client.is_established() && p.server.is_established());
    assert_eq!(p.client.peer_name(), "edge");
    assert_eq!(p.server.peer_name(), "gw1");
    assert_eq!(
        p.server.peer_certificates(),
        [p.pki.gateways[0].cert.clone()],
        "the edge sees the gateway's certificate"
    );
    assert_eq!(
        p.client.cipher_suite().map(|s| s.version().version),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn packets_survive_random_chunking_both_ways() {
    for seed in [2, 3, 4, 5] {
        let mut p = Pair::new(seed);
        p.drive();
        let mut rng = Rng::new(seed * 7 + 1);
        let mut sent_c = Vec::new();
        let mut sent_s = Vec::new();
        for batch in 0..20 {
            for i in 0..=rng.below_usize(40) {
                let a = packet(&mut rng, batch * 100 + i);
                p.client.send_packet(&a).unwrap();
                sent_c.push(a);
                let b = packet(&mut rng, batch * 100 + i + 50);
                p.server.send_packet(&b).unwrap();
                sent_s.push(b);
            }
            p.client.flush();
            p.server.flush();
            p.drive();
        }
        assert_eq!(p.at_server, sent_c, "seed {seed}: client->server");
        assert_eq!(p.at_client, sent_s, "seed {seed}: server->client");
    }
}

#[test]
fn small_packets_are_coalesced_into_few_records() {
    let mut p = Pair::new(9);
    p.drive();
    let start = p.wire_bytes;
    let batches_before = p.client.stats().tx_records;
    for i in 0..200u8 {
        p.client.send_packet(&[i; 64]).unwrap();
    }
    p.client.flush();
    p.drive();
    assert_eq!(p.at_server.len(), 200);
    let batches = p.client.stats().tx_records - batches_before;
    // 200 x (4 + 64) = 13.6 KB fits one coalesced batch (one TLS record).
    assert_eq!(batches, 1, "one batch for one flush");
    // One record costs 22 bytes of TLS 1.3 overhead; one record per packet
    // would cost 200 x 22 = 4.4 KB more than this.
    let wire = p.wire_bytes - start;
    assert!(
        wire < 200 * 68 + 200,
        "wire bytes {wire}: packets not coalesced"
    );
}

#[test]
fn keepalive_and_idle_timeout() {
    let mut p = Pair::new(11);
    p.drive();
    // Past the keepalive interval both sides send a KEEPALIVE...
    p.now += Duration::from_secs(11);
    p.client.handle_timeout(p.now);
    p.server.handle_timeout(p.now);
    p.drive();
    assert_eq!(p.client.stats().keepalives_sent, 1);
    assert!(p.at_server.is_empty(), "keepalives are not packets");
    assert!(p.client.is_established() && p.server.is_established());
    // ...which kept the peers alive: a silent server now times out on the
    // client side only after idle_timeout without anything received.
    let deadline = p.client.poll_timeout().unwrap();
    assert!(deadline > p.now);
    p.now += Duration::from_secs(31);
    p.client.handle_timeout(p.now);
    assert!(p.client.is_closed());
    assert_eq!(p.client.close_reason(), Some(&CloseReason::Timeout));
    p.drive();
    assert!(p.server.is_closed(), "the peer learns of the close");
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::Peer(CloseCode::Timeout, _))
    ));
}

#[test]
fn send_before_established_is_refused() {
    let p = Pair::new(12);
    let mut c = p;
    assert_eq!(
        c.client.send_packet(&[0x45; 20]),
        Err(SendError::NotEstablished)
    );
    c.drive();
    assert_eq!(c.client.send_packet(&[0x45; 20]), Ok(()));
}

#[test]
fn oversized_packet_is_refused() {
    let mut p = Pair::new(13);
    p.drive();
    assert_eq!(
        p.client.send_packet(&vec![0; tunnel::MAX_PAYLOAD + 1]),
        Err(SendError::TooLarge)
    );
}

#[test]
fn backpressure_bounds_memory() {
    let mut p = Pair::new(14);
    p.drive();
    let mut refused = 0;
    for i in 0..10_000 {
        match p.client.send_packet(&[i as u8; 1400]) {
            Ok(()) => {}
            Err(SendError::Backpressure) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        // The socket never drains.
        let mut sink = Vec::new();
        let mut pipe = Pipe {
            buf: &mut sink,
            rng: &mut p.rng,
            stuck: true,
        };
        let _ = p.client.handle_write(&mut pipe, p.now);
    }
    assert!(
        refused > 5_000,
        "only {refused} refused: send buffer unbounded?"
    );
    // Bounded by the cap plus one record's worth.
    assert!(p.client.tx_buf.len() < 4 * 1024 * 1024 + 2 * 17 * 1024);
}

#[test]
fn frames_larger_than_a_record_span_records() {
    let mut p = Pair::new(15);
    p.drive();
    let big: Vec<Vec<u8>> = [9000usize, 16 * 1024, 40_000, tunnel::MAX_PAYLOAD]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
        .collect();
    for b in &big {
        p.client.send_packet(b).unwrap();
        p.client.send_packet(&[0x45; 60]).unwrap();
    }
    p.client.flush();
    p.drive();
    let want: Vec<Vec<u8>> = big
        .iter()
        .flat_map(|b| [b.clone(), vec![0x45; 60]])
        .collect();
    assert_eq!(p.at_server, want);
}

/// Key updates both ways, with a different AEAD library at each end.
#[test]
fn key_updates_both_ways_keep_the_stream_intact() {
    let rekey = |name: &str, aead| SessionConfig {
        rekey_after_records: 3,
        aead,
        ..cfg(name)
    };
    let mut p = Pair::with(
        16,
        rekey("gw1", AeadProvider::AwsLcRs),
        rekey("edge", AeadProvider::Ring),
    );
    p.drive();
    assert_eq!(p.client.aead_provider(), Some(AeadProvider::AwsLcRs));
    assert_eq!(p.server.aead_provider(), Some(AeadProvider::Ring));
    let mut rng = Rng::new(99);
    let (mut sent_c, mut sent_s) = (Vec::new(), Vec::new());
    for batch in 0..30 {
        for i in 0..=rng.below_usize(20) {
            let a = packet(&mut rng, batch * 100 + i);
            p.client.send_packet(&a).unwrap();
            sent_c.push(a);
            let b = packet(&mut rng, batch * 100 + i + 50);
            p.server.send_packet(&b).unwrap();
            sent_s.push(b);
        }
        p.client.flush();
        p.server.flush();
        p.drive();
    }
    assert_eq!(p.at_server, sent_c);
    assert_eq!(p.at_client, sent_s);
    let (c, s) = (p.client.stats(), p.server.stats());
    assert!(c.key_updates_tx >= 5, "{c:?}");
    assert_eq!(c.key_updates_tx, s.key_updates_rx);
    assert_eq!(s.key_updates_tx, c.key_updates_rx);
    // The rekeyed keys stay with each side's library.
    assert_eq!(p.client.aead_provider(), Some(AeadProvider::AwsLcRs));
    assert_eq!(p.server.aead_provider(), Some(AeadProvider::Ring));
}

#[test]
fn coalescing_waits_for_the_delay_then_seals() {
    let delayed = SessionConfig {
        coalesce_delay: Duration::from_micros(500),
        ..cfg("gw1")
    };
    let mut p = Pair::with(17, delayed, cfg("edge"));
    p.drive();
    let records = p.client.stats().tx_records;
    p.client.send_packet(&[0x45; 100]).unwrap();
    p.client.flush_due(p.now);
    p.client.send_packet(&[0x45; 100]).unwrap();
    p.client.flush_due(p.now + Duration::from_micros(100));
    assert!(!p.client.wants_write(), "held for more frames");
    assert_eq!(
        p.client.poll_timeout(),
        Some(p.now + Duration::from_micros(500)),
        "the deadline wakes the driver"
    );
    p.client.handle_timeout(p.now + Duration::from_micros(500));
    assert!(p.client.wants_write());
    assert_eq!(
        p.client.stats().tx_records,
        records + 1,
        "both in one record"
    );
    p.drive();
    assert_eq!(p.at_server.len(), 2);
}

#[test]
fn corrupted_record_closes_the_session() {
    let mut p = Pair::new(18);
    p.drive();
    p.client.send_packet(&[0x45; 100]).unwrap();
    p.client.flush();
    let mut wire = Vec::new();
    p.client.handle_write(&mut wire, p.now).unwrap();
    wire[30] ^= 0x80;
    let _ = p.server.handle_read(&mut &wire[..], p.now);
    assert!(p.server.poll_packet().is_none());
    assert!(p.server.is_closed());
    assert!(
        matches!(p.server.close_reason(), Some(CloseReason::Tls(r)) if r.contains("authentication")),
        "{:?}",
        p.server.close_reason()
    );
}

/// A raw server: TLS without the session, to inject arbitrary frames.
fn raw_server_pair(seed: u64) -> (Session, rustls::ServerConnection, Rng, LabPki) {
    raw_server_pair_with(seed, cfg("gw1"))
}

fn raw_server_pair_with(
    seed: u64,
    client_cfg: SessionConfig,
) -> (Session, rustls::ServerConnection, Rng, LabPki) {
    let (pki, cc, sc) = configs();
    let name = lab_pki::server_name();
    let c = rustls::client::UnbufferedClientConnection::new(cc, name).unwrap();
    let client = Session::new(c.into(), client_cfg, Instant::now());
    (
        client,
        rustls::ServerConnection::new(sc).unwrap(),
        Rng::new(seed),
        pki,
    )
}

/// Shuttles bytes between a session and a raw rustls server until quiet.
fn shuttle(client: &mut Session, raw: &mut rustls::ServerConnection, rng: &mut Rng) -> Vec<u8> {
    use io::Read as _;
    let mut c2s = Vec::new();
    let mut s2c = Vec::new();
    let mut plain = Vec::new();
    let now = Instant::now();
    for _ in 0..1000 {
        let _ = client.handle_write(
            &mut Pipe {
                buf: &mut c2s,
                rng,
                stuck: false,
            },
            now,
        );
        while !c2s.is_empty() {
            let _ = raw.read_tls(&mut &c2s[..]).map(|n| c2s.drain(..n));
            if raw.process_new_packets().is_err() {
                break;
            }
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = raw.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&buf[..n]);
        }
        while raw.wants_write() {
            raw.write_tls(&mut s2c).unwrap();
        }
        while !s2c.is_empty() && !client.is_closed() {
            let _ = client.handle_read(
                &mut Pipe {
                    buf: &mut s2c,
                    rng,
                    stuck: false,
                },
                now,
            );
            while client.poll_packet().is_some() {}
        }
        while client.poll_packet().is_some() {}
        if !client.wants_write() && !raw.wants_write() && c2s.is_empty() {
            break;
        }
    }
    plain
}

fn raw_hello(version: u8) -> Vec<u8> {
    let mut v = Vec::new();
    tunnel::Hello {
        version,
        max_payload: u16::MAX,
        name: "raw",
    }
    .emit_frame(&mut v);
    v
}

#[test]
fn version_mismatch_closes_with_reason() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(21);
    raw.writer().write_all(&raw_hello(2)).unwrap();
    let seen = shuttle(&mut client, &mut raw, &mut rng);
    assert!(client.is_closed());
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::Local(CloseCode::Version, _))
    ));
    // The raw server saw our HELLO, then a CLOSE(version).
    let hello = tunnel::Frame::new_checked(&seen[..]).unwrap();
    assert_eq!(hello.frame_type(), FrameType::Hello);
    let close = tunnel::Frame::new_checked(&seen[hello.total_len()..]).unwrap();
    assert_eq!(close.frame_type(), FrameType::Close);
    assert_eq!(
        tunnel::parse_close(close.payload()).unwrap().0,
        CloseCode::Version
    );
}

#[test]
fn unknown_frames_ignorable_or_fatal() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(22);
    let mut frames = raw_hello(1);
    // Ignorable unknown type 0x70 with a 3-byte payload: skipped.
    frames.extend_from_slice(&[0x70, tunnel::FLAG_IGNORABLE, 0, 3, 1, 2, 3]);
    // A packet after it still arrives.
    frames.extend_from_slice(&[0x02, 0, 0, 2, 0xaa, 0xbb]);
    raw.writer().write_all(&frames).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(client.is_established());
    assert_eq!(client.stats().skipped_frames, 1);
    assert_eq!(client.stats().rx_packets, 1);
    // A non-ignorable unknown type is a protocol error.
    raw.writer().write_all(&[0x71, 0, 0, 0]).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::Protocol(_))
    ));
}

#[test]
fn packet_before_hello_is_a_protocol_error() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(23);
    raw.writer().write_all(&[0x02, 0, 0, 1, 0x45]).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::Protocol(_))
    ));
}

/// Our record layer, with each AEAD library, against rustls's own: data
/// and key updates both ways (rustls checks our records, nonces and
/// `KeyUpdate` messages; we check its).
#[test]
fn records_and_key_updates_interoperate_with_rustls() {
    for aead in [AeadProvider::AwsLcRs, AeadProvider::Ring] {
        records_and_key_updates_with(aead);
    }
}

fn records_and_key_updates_with(aead: AeadProvider) {
    use io::Write as _;
    let rekey = SessionConfig {
        rekey_after_records: 2,
        aead,
        ..cfg("gw1")
    };
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair_with(24, rekey);
    raw.writer().write_all(&raw_hello(1)).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(client.is_established());
    assert_eq!(client.aead_provider(), Some(aead));
    let mut want = Vec::new();
    for round in 0..6u8 {
        // rustls asks us to update (and updates its own sending key).
        raw.refresh_traffic_keys().unwrap();
        raw.writer()
            .write_all(&[0x02, 0, 0, 3, round, round, round])
            .unwrap();
        for i in 0..3u8 {
            let pkt = [0x45, round, i];
            client.send_packet(&pkt).unwrap();
            client.flush();
            want.extend_from_slice(&[0x02, 0, 0, 3]);
            want.extend_from_slice(&pkt);
        }
        let seen = shuttle(&mut client, &mut raw, &mut rng);
        assert!(!client.is_closed(), "{:?}", client.close_reason());
        assert_eq!(seen, want, "round {round}");
        want.clear();
    }
    let s = client.stats();
    assert!(s.key_updates_rx >= 6, "{s:?}");
    assert!(s.key_updates_tx >= 6, "{s:?}");
    assert_eq!(s.rx_packets, 6);
}

#[test]
fn client_from_another_ca_is_refused() {
    let (pki, _, sc) = configs();
    let (pki2, other_cc, _) = configs(); // a second, unrelated CA
    // other_cc trusts CA #2 and presents a CA #2 client cert; the server
    // trusts CA #1 only. Make the client trust CA #1's edge by building a
    // config with CA #1 roots and CA #2's client certificate.
    let cc = lab_pki::client_config(&pki.ca, &pki2.gateways[0]);
    drop(other_cc);
    let now = Instant::now();
    let name = lab_pki::server_name();
    let mut client = Session::new(
        rustls::client::UnbufferedClientConnection::new(cc, name)
            .unwrap()
            .into(),
        cfg("gw"),
        now,
    );
    let mut server = Session::new(
        rustls::server::UnbufferedServerConnection::new(sc)
            .unwrap()
            .into(),
        cfg("edge"),
        now,
    );
    let mut rng = Rng::new(5);
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let _ = client.handle_write(
            &mut Pipe {
                buf: &mut c2s,
                rng: &mut rng,
                stuck: false,
            },
            now,
        );
        if !c2s.is_empty() {
            let _ = server.handle_read(
                &mut Pipe {
                    buf: &mut c2s,
                    rng: &mut rng,
                    stuck: false,
                },
                now,
            );
        }
        let _ = server.handle_write(
            &mut Pipe {
                buf: &mut s2c,
                rng: &mut rng,
                stuck: false,
            },
            now,
        );
        if !s2c.is_empty() && !client.is_closed() {
            let _ = client.handle_read(
                &mut Pipe {
                    buf: &mut s2c,
                    rng: &mut rng,
                    stuck: false,
                },
                now,
            );
        }
        while server.poll_packet().is_some() {}
    }
    assert!(!server.is_established());
    assert!(
        matches!(server.close_reason(), Some(CloseReason::Tls(_))),
        "{:?}",
        server.close_reason()
    );
}

/// A reader that says `WouldBlock` once empty, like a non-blocking socket
/// (a plain slice says end of stream).
struct Feed<'a>(&'a [u8]);

impl io::Read for Feed<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        io::Read::read(&mut self.0, out)
    }
}

/// A server session (the edge's side) before any client speaks.
fn lone_server(cfg: SessionConfig) -> (Session, LabPki) {
    let (pki, _, sc) = configs();
    let s = rustls::server::UnbufferedServerConnection::new(sc).unwrap();
    (Session::new(s.into(), cfg, Instant::now()), pki)
}

/// The first bytes of a real `ClientHello`, as a slow client sends them.
fn client_hello_bytes() -> Vec<u8> {
    let (_pki, cc, _) = configs();
    let mut c = rustls::ClientConnection::new(cc, lab_pki::server_name()).unwrap();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    out
}

/// The handshake deadline is absolute: a client that sends one byte of its
/// `ClientHello` every second (each byte would reset an idle timer) is cut
/// off at `handshake_timeout`, and the session says why.
#[test]
fn handshake_deadline_is_not_reset_by_each_byte() {
    let (mut server, _pki) = lone_server(SessionConfig {
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        ..cfg("edge")
    });
    let hello = client_hello_bytes();
    let start = Instant::now();
    let mut closed_at = None;
    for (i, b) in hello.iter().take(60).enumerate() {
        let now = start + Duration::from_secs(i as u64);
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        if server.is_closed() {
            closed_at = Some(i);
            break;
        }
        let _ = server.handle_read(&mut Feed(&[*b]), now);
        assert!(
            server.poll_timeout().unwrap() <= start + Duration::from_secs(10),
            "byte {i} pushed the deadline"
        );
    }
    assert_eq!(closed_at, Some(10), "closed at the deadline");
    assert_eq!(server.close_reason(), Some(&CloseReason::HandshakeTimeout));
}

/// Nothing of the traffic buffers (256 KiB to receive, 64 KiB to send) is
/// allocated before the peer is authenticated: a connection that sent part
/// of a `ClientHello`, or garbage, holds a few KiB. Once established the
/// buffers are there.
#[test]
fn buffers_are_allocated_after_authentication() {
    let (mut server, _pki) = lone_server(cfg("edge"));
    assert_eq!(
        server.buffered_capacity(),
        0,
        "nothing before a byte arrives"
    );
    let hello = client_hello_bytes();
    let _ = server.handle_read(&mut Feed(&hello[..hello.len() / 2]), Instant::now());
    assert!(!server.is_closed());
    assert!(
        server.buffered_capacity() <= 8 * 1024,
        "{} bytes held for half a ClientHello",
        server.buffered_capacity()
    );
    // Records of one endless handshake message (longer than rustls takes):
    // refused, and never more than the pre-authentication cap held.
    let (mut server2, _pki2) = lone_server(cfg("edge"));
    let mut msg = vec![22, 3, 3, 0x40, 0x00, 1, 0xff, 0xff, 0xff];
    msg.resize(5 + 0x4000, 0);
    let mut fed = 0;
    for _ in 0..16 {
        let _ = server2.handle_read(&mut Feed(&msg), Instant::now());
        fed += msg.len();
        if server2.is_closed() {
            break;
        }
    }
    assert!(
        server2.is_closed(),
        "{fed} bytes of one handshake message held"
    );
    assert!(server2.buffered_capacity() <= HS_RX_MAX + 64 * 1024);
    let mut p = Pair::new(40);
    p.drive();
    assert!(p.server.buffered_capacity() >= RX_BUF_INITIAL);
}

/// A record that fails authentication gets the peer a fatal
/// `bad_record_mac` alert before the session closes (RFC 8446 §5.2).
#[test]
fn bad_record_sends_the_fatal_alert() {
    let mut p = Pair::new(41);
    p.drive();
    p.client.send_packet(&[0x45; 100]).unwrap();
    p.client.flush();
    let mut wire = Vec::new();
    p.client.handle_write(&mut wire, p.now).unwrap();
    wire[30] ^= 0x80;
    let _ = p.server.handle_read(&mut &wire[..], p.now);
    assert!(p.server.poll_packet().is_none());
    assert!(p.server.is_closed());
    assert!(p.server.wants_write(), "an alert is queued");
    let mut back = Vec::new();
    p.server.handle_write(&mut back, p.now).unwrap();
    let _ = p.client.handle_read(&mut &back[..], p.now);
    while p.client.poll_packet().is_some() {}
    assert_eq!(
        p.client.close_reason(),
        Some(&CloseReason::Tls("peer sent TLS alert 20".into()))
    );
}

/// A peer that stops reading is let go after the write timeout: what was
/// queued for it is dropped, so the driver can close the socket at once.
#[test]
fn peer_that_stops_reading_is_reaped() {
    let mut p = Pair::with(
        42,
        cfg("gw1"),
        SessionConfig {
            write_timeout: Duration::from_secs(5),
            ..cfg("edge")
        },
    );
    p.drive();
    for i in 0..50u8 {
        p.server.send_packet(&[i; 1400]).unwrap();
    }
    p.server.flush();
    let mut sink = Vec::new();
    let mut stuck = Pipe {
        buf: &mut sink,
        rng: &mut p.rng,
        stuck: true,
    };
    let _ = p.server.handle_write(&mut stuck, p.now);
    assert!(p.server.wants_write());
    let deadline = p.server.poll_timeout().unwrap();
    assert!(deadline <= p.now + Duration::from_secs(5));
    // Receiving keeps the idle timer fresh but not the write timeout.
    p.now += Duration::from_secs(3);
    p.server.handle_timeout(p.now);
    assert!(!p.server.is_closed());
    p.now += Duration::from_secs(3);
    p.server.handle_timeout(p.now);
    assert_eq!(p.server.close_reason(), Some(&CloseReason::Stalled));
    assert!(!p.server.wants_write(), "nothing left to write");
}

/// Control characters in a peer's HELLO name cannot forge log lines or
/// drive a terminal: they are escaped, and the name is cut to 64
/// characters.
#[test]
fn hello_name_is_escaped_for_logs() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(43);
    let mut v = Vec::new();
    tunnel::Hello {
        version: tunnel::VERSION,
        max_payload: u16::MAX,
        name: "edge\n[INFO] forged line\u{1b}[31m\u{202e}",
    }
    .emit_frame(&mut v);
    raw.writer().write_all(&v).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(client.is_established());
    assert_eq!(
        client.peer_name(),
        "edge\\u{a}[INFO] forged line\\u{1b}[31m\\u{202e}"
    );
    assert!(!client.peer_name().chars().any(char::is_control));
    assert_eq!(printable(&"x".repeat(100), 64).chars().count(), 65);
    assert_eq!(printable("branch-1", 64), "branch-1");
}

/// Records of `n` key update requests from a raw rustls peer.
fn key_update_requests(raw: &mut rustls::ServerConnection, n: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for _ in 0..n {
        raw.refresh_traffic_keys().unwrap();
    }
    while raw.wants_write() {
        raw.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Gives `s` all of `wire` (as a socket would, in reads), opening what it
/// can.
fn feed(s: &mut Session, wire: &[u8], now: Instant) {
    let mut f = Feed(wire);
    while !s.is_closed() {
        let more = s.handle_read(&mut f, now).is_ok_and(|more| more);
        while s.poll_packet().is_some() {}
        if !more && f.0.is_empty() {
            break;
        }
    }
}

/// A peer that asks for key updates again and again while we send
/// nothing gets one answer (RFC 8446 §4.6.3: "an implementation which
/// receives multiple `KeyUpdate`s while it is silent [responds] with a
/// single update"), not one per request: a peer that never reads would
/// otherwise make each 27-byte request queue a 27-byte answer, without
/// bound. Once we have sent data, the next request gets its answer.
#[test]
fn key_update_requests_get_one_answer_while_silent() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(44);
    raw.writer().write_all(&raw_hello(1)).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(client.is_established());
    let now = Instant::now();
    let wire = key_update_requests(&mut raw, 20);
    feed(&mut client, &wire, now);
    assert!(!client.is_closed(), "{:?}", client.close_reason());
    let mut out = Vec::new();
    client.handle_write(&mut out, now).unwrap();
    let s = client.stats();
    assert_eq!(
        (s.key_updates_rx, s.key_updates_tx),
        (20, 1),
        "{} bytes queued for the peer",
        out.len()
    );
    // Data, then a request: answered again.
    client.send_packet(&[0x45, 1, 2]).unwrap();
    client.flush();
    let wire = key_update_requests(&mut raw, 1);
    feed(&mut client, &wire, now);
    assert_eq!(client.stats().key_updates_tx, 2);
}

/// More than 32 key updates without application data between them close
/// the session with `unexpected_message` (rustls's and `BoringSSL`'s limit):
/// each costs key derivations, and a peer has no need for more.
#[test]
fn key_update_flood_closes_the_session() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(45);
    raw.writer().write_all(&raw_hello(1)).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(client.is_established());
    let now = Instant::now();
    // 32, a data record, 32 more: fine.
    let mut wire = key_update_requests(&mut raw, 32);
    raw.writer().write_all(&[0x03, 0, 0, 0]).unwrap(); // a KEEPALIVE frame
    while raw.wants_write() {
        raw.write_tls(&mut wire).unwrap();
    }
    wire.extend(key_update_requests(&mut raw, 32));
    feed(&mut client, &wire, now);
    assert!(!client.is_closed(), "{:?}", client.close_reason());
    // One more without data: closed, and the peer is told why.
    let wire = key_update_requests(&mut raw, 1);
    feed(&mut client, &wire, now);
    assert_eq!(
        client.close_reason(),
        Some(&CloseReason::Tls(
            "more than 32 TLS key updates without application data".into()
        ))
    );
    assert_eq!(client.stats().key_updates_rx, 64);
}

/// Events come once each, in order, and say who the peer is: the
/// certificate it authenticated with, then the name its HELLO gave; then
/// why the session closed, on both sides.
#[test]
fn events_say_who_the_peer_is_and_why_it_closed() {
    let mut p = Pair::new(50);
    p.drive();
    let edge_cert = p.pki.edge.cert.clone();
    let gw_cert = p.pki.gateways[0].cert.clone();
    assert_eq!(
        p.client.poll_event(),
        Some(Event::Authenticated {
            certificates: vec![edge_cert.clone()]
        })
    );
    assert_eq!(
        p.client.poll_event(),
        Some(Event::Established {
            peer: Peer {
                name: "edge".into(),
                certificates: vec![edge_cert],
            }
        })
    );
    assert_eq!(p.client.poll_event(), None, "each event once");
    assert_eq!(
        p.server.poll_event(),
        Some(Event::Authenticated {
            certificates: vec![gw_cert.clone()]
        })
    );
    assert_eq!(
        p.server.poll_event(),
        Some(Event::Established {
            peer: Peer {
                name: "gw1".into(),
                certificates: vec![gw_cert],
            }
        })
    );
    assert_eq!(p.server.poll_event(), None);
    p.client.close(CloseCode::Normal, "bye");
    assert_eq!(
        p.client.poll_event(),
        Some(Event::Closed {
            reason: CloseReason::Local(CloseCode::Normal, "bye".into())
        })
    );
    assert_eq!(p.client.poll_event(), None);
    p.drive();
    assert_eq!(
        p.server.poll_event(),
        Some(Event::Closed {
            reason: CloseReason::Peer(CloseCode::Normal, "bye".into())
        })
    );
    assert_eq!(p.server.poll_event(), None, "closed once");
}

/// A peer that fails its handshake gets a `Closed` event only.
#[test]
fn failed_handshake_is_one_closed_event() {
    let (mut server, _pki) = lone_server(cfg("edge"));
    let garbage = [0x16, 3, 1, 0, 4, 0xff, 0xff, 0xff, 0xff];
    let _ = server.handle_received(&garbage, Instant::now());
    assert!(server.is_closed());
    assert!(matches!(
        server.poll_event(),
        Some(Event::Closed {
            reason: CloseReason::Tls(_)
        })
    ));
    assert_eq!(server.poll_event(), None);
}

/// [`Session::handle_received`] takes what fits and says how much: a burst
/// larger than the receive buffer goes in parts, with the packets drained
/// between them; nothing is lost or reordered.
#[test]
fn handle_received_takes_what_fits() {
    let mut p = Pair::new(51);
    p.drive();
    let mut sent = Vec::new();
    for i in 0..1000u32 {
        let pkt = vec![i as u8; 1400];
        p.client.send_packet(&pkt).unwrap();
        sent.push(pkt);
    }
    p.client.flush();
    let mut wire = Vec::new();
    p.client.handle_write(&mut wire, p.now).unwrap();
    assert!(wire.len() > RX_BUF_MAX);
    let mut got = Vec::new();
    let mut rest = &wire[..];
    let mut calls = 0;
    while !rest.is_empty() {
        let n = p.server.handle_received(rest, p.now).unwrap();
        calls += 1;
        assert!(calls < 1000, "no progress");
        rest = &rest[n..];
        while let Some(pkt) = p.server.poll_packet() {
            got.push(pkt.to_vec());
        }
    }
    assert!(calls > 1, "taken in parts");
    assert_eq!(got, sent);
}

/// Drains `s`'s events, keeping the echo replies.
fn echo_replies(s: &mut Session) -> Vec<(u64, u64, Duration)> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            Event::EchoReply {
                seq,
                sent_at_us,
                rtt,
            } => Some((seq, sent_at_us, rtt)),
            _ => None,
        })
        .collect()
}

/// Echo probes both ways between two sessions: each side answers at once,
/// and the prober sees the reply with its round-trip time (mocked time:
/// exact).
#[test]
fn echo_round_trip_between_client_and_server() {
    let mut p = Pair::new(60);
    p.drive();
    let _ = echo_replies(&mut p.client);
    let _ = echo_replies(&mut p.server);
    p.client.send_echo(0, p.now).unwrap();
    let start = p.now;
    p.now += Duration::from_millis(100);
    p.client.send_echo(1, p.now).unwrap();
    p.server.send_echo(9, p.now).unwrap();
    p.now += Duration::from_millis(10);
    p.drive();
    let ms = |m: u64| Duration::from_millis(m);
    assert_eq!(
        echo_replies(&mut p.client),
        [(0, 0, ms(110)), (1, 100_000, ms(10))]
    );
    assert_eq!(echo_replies(&mut p.server), [(9, 100_000, ms(10))]);
    assert_eq!(p.now - start, ms(110));
    let (c, s) = (p.client.stats(), p.server.stats());
    assert_eq!(
        (c.echo_requests_tx, c.echo_replies_rx, c.echo_replies_tx),
        (2, 2, 1)
    );
    assert_eq!(
        (s.echo_requests_rx, s.echo_replies_tx, s.echo_replies_rx),
        (2, 2, 1)
    );
    assert_eq!(c.skipped_frames + s.skipped_frames, 0);
    // Data still flows around the probes.
    p.client.send_packet(&[0x45, 1, 2]).unwrap();
    p.client.flush();
    p.drive();
    assert_eq!(p.at_server, [vec![0x45, 1, 2]]);
}

/// The answers to a burst of probes go out in one record, sealed once the
/// received records are drained.
#[test]
fn echo_replies_to_a_burst_share_a_record() {
    let mut p = Pair::new(61);
    p.drive();
    for seq in 0..5 {
        p.client.send_echo(seq, p.now).unwrap();
    }
    let mut wire = Vec::new();
    p.client.handle_write(&mut wire, p.now).unwrap();
    let before = p.server.stats().tx_records;
    feed(&mut p.server, &wire, p.now);
    assert_eq!(p.server.stats().tx_records - before, 1);
    p.drive();
    assert_eq!(echo_replies(&mut p.client).len(), 5);
}

/// What an echo looks like on the wire (ignorable, so a peer of an
/// earlier release skips it), the answer to a raw peer's probe, and a
/// short probe is a protocol error.
#[test]
fn echo_frames_on_the_wire() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(62);
    raw.writer().write_all(&raw_hello(1)).unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    client.send_echo(3, client.started).unwrap();
    let echo = Echo {
        seq: 44,
        sent_at_us: 55,
    };
    raw.writer()
        .write_all(&tunnel::echo_frame(FrameType::EchoRequest, echo))
        .unwrap();
    let seen = shuttle(&mut client, &mut raw, &mut rng);
    let mut want = tunnel::echo_frame(
        FrameType::EchoRequest,
        Echo {
            seq: 3,
            sent_at_us: 0,
        },
    )
    .to_vec();
    want.extend_from_slice(&tunnel::echo_frame(FrameType::EchoReply, echo));
    assert_eq!(&seen[seen.len() - want.len()..], want);
    assert_eq!(want[1], tunnel::FLAG_IGNORABLE);
    raw.writer()
        .write_all(&[0x05, tunnel::FLAG_IGNORABLE, 0, 2, 0, 1])
        .unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert_eq!(
        client.close_reason(),
        Some(&CloseReason::Protocol("malformed ECHO".into()))
    );
}

/// Replies the caller does not poll are bounded: the newest
/// [`ECHO_EVENTS`] are kept, the rest counted.
#[test]
fn unpolled_echo_replies_are_bounded() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(63);
    raw.writer().write_all(&raw_hello(1)).unwrap();
    for seq in 0..20 {
        let e = Echo { seq, sent_at_us: 0 };
        raw.writer()
            .write_all(&tunnel::echo_frame(FrameType::EchoReply, e))
            .unwrap();
    }
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    let seqs: Vec<u64> = echo_replies(&mut client).iter().map(|r| r.0).collect();
    assert_eq!(seqs, (12..20).collect::<Vec<_>>());
    assert_eq!(client.stats().echo_replies_lost, 12);
}

/// Two sessions whose connections capture the TLS exporter secret.
fn exporting_pair(seed: u64) -> Pair {
    let (pki, cc, sc) = configs();
    let now = Instant::now();
    let (c, ce) = crate::datagram::keys::client(&cc, lab_pki::server_name()).unwrap();
    let (s, se) = crate::datagram::keys::server(&sc).unwrap();
    Pair {
        client: Session::with_exporter(c, ce, cfg("gw1"), now),
        server: Session::with_exporter(s, se, cfg("edge"), now),
        c2s: Vec::new(),
        s2c: Vec::new(),
        rng: Rng::new(seed),
        now,
        at_client: Vec::new(),
        at_server: Vec::new(),
        wire_bytes: 0,
        pki,
    }
}

/// The exporter computed from the captured secret is rustls's own
/// `export_keying_material` (a buffered rustls server on the other end):
/// the RFC 8446 §7.5 exporter, for any label and context.
#[test]
fn exporter_matches_rustls() {
    let (_pki, cc, sc) = configs();
    let (c, ce) = crate::datagram::keys::client(&cc, lab_pki::server_name()).unwrap();
    let mut client = Session::with_exporter(c, ce, cfg("gw1"), Instant::now());
    let mut raw = rustls::ServerConnection::new(sc).unwrap();
    let mut rng = Rng::new(64);
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert!(!client.is_handshaking());
    for (label, context, len) in [
        (&b"EXPORTER-sluice-datagram-v1"[..], &b""[..], 32),
        (b"EXPORTER-test", b"some context", 48),
        (b"x", b"", 100),
    ] {
        let ours = {
            let mut out = vec![0u8; len];
            assert!(client.export_for_test(label, context, &mut out));
            out
        };
        let theirs = raw
            .export_keying_material(vec![0u8; len], label, Some(context))
            .unwrap();
        assert_eq!(ours, theirs, "label {label:?}");
    }
}

/// Both ends of one TLS session get datagram keys that work together, once;
/// a session made without the exporter has none.
#[test]
fn datagram_keys_come_from_the_session_once() {
    use crate::datagram::{DatagramConfig, DatagramSession};
    let mut p = exporting_pair(65);
    assert!(
        p.client.take_datagram_keys().is_none(),
        "before the handshake"
    );
    p.drive();
    let ck = p.client.take_datagram_keys().unwrap().unwrap();
    let sk = p.server.take_datagram_keys().unwrap().unwrap();
    assert!(p.client.take_datagram_keys().is_none(), "once");
    assert_eq!(
        (ck.side(), sk.side()),
        (rustls::Side::Client, rustls::Side::Server)
    );
    let cfg = DatagramConfig::default;
    let mut gw = DatagramSession::new(ck, 1, 2, cfg(), p.now).unwrap();
    let mut edge = DatagramSession::new(sk, 2, 1, cfg(), p.now).unwrap();
    let mut buf = [0u8; 256];
    let n = gw.seal(&[b"\x45hello"], p.now, &mut buf).unwrap().len;
    let o = edge.open(&mut buf[..n], p.now).unwrap();
    assert_eq!(o.packets(&buf[..n]).next(), Some(&b"\x45hello"[..]));
    let n = edge.seal(&[b"\x60back"], p.now, &mut buf).unwrap().len;
    assert!(gw.open(&mut buf[..n], p.now).is_ok());
    // Without the exporter: no keys.
    let mut plain = Pair::new(66);
    plain.drive();
    assert!(plain.client.take_datagram_keys().is_none());
    assert!(plain.server.take_datagram_keys().is_none());
}

/// A reply's timestamp is the peer's to write: one far beyond any
/// `Instant` gives a zero round-trip time, not a panic.
#[test]
fn echo_reply_with_any_timestamp_is_safe() {
    use io::Write as _;
    let (mut client, mut raw, mut rng, _pki) = raw_server_pair(67);
    raw.writer().write_all(&raw_hello(1)).unwrap();
    let e = Echo {
        seq: 1,
        sent_at_us: u64::MAX,
    };
    raw.writer()
        .write_all(&tunnel::echo_frame(FrameType::EchoReply, e))
        .unwrap();
    let _ = shuttle(&mut client, &mut raw, &mut rng);
    assert_eq!(echo_replies(&mut client), [(1, u64::MAX, Duration::ZERO)]);
}

/// Drains `s`'s events, keeping the datagram control frames.
fn controls(s: &mut Session) -> Vec<crate::tunnel::DatagramControl> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            Event::Datagram(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// The datagram transport's set-up travels as control frames: offer,
/// accept, use; each arrives once as an event; before the HELLOs none
/// can be sent; unpolled ones are bounded and a malformed one is skipped
/// and counted, never a protocol error (they are ignorable).
#[test]
fn datagram_control_frames_between_client_and_server() {
    use crate::tunnel::DatagramControl;
    use tunnel::{DatagramSetup, datagram_use_frame};
    let mut p = Pair::new(64);
    let offer = DatagramSetup {
        receiver_id: 7,
        port: 0,
    };
    assert_eq!(
        p.client
            .send_datagram_control(&offer.frame(FrameType::DatagramOffer)),
        Err(SendError::NotEstablished)
    );
    p.drive();
    let _ = controls(&mut p.client);
    let _ = controls(&mut p.server);
    p.client
        .send_datagram_control(&offer.frame(FrameType::DatagramOffer))
        .unwrap();
    p.drive();
    assert_eq!(controls(&mut p.server), [DatagramControl::Offer(offer)]);
    let accept = DatagramSetup {
        receiver_id: 0x8000_0001,
        port: 4443,
    };
    p.server
        .send_datagram_control(&accept.frame(FrameType::DatagramAccept))
        .unwrap();
    p.drive();
    assert_eq!(controls(&mut p.client), [DatagramControl::Accept(accept)]);
    for on in [true, false] {
        p.client
            .send_datagram_control(&datagram_use_frame(on))
            .unwrap();
    }
    // A short OFFER: skipped and counted, the session carries on.
    p.client
        .send_datagram_control(&[0x07, tunnel::FLAG_IGNORABLE, 0, 2, 0, 1])
        .unwrap();
    for _ in 0..20 {
        p.client
            .send_datagram_control(&datagram_use_frame(true))
            .unwrap();
    }
    p.drive();
    let got = controls(&mut p.server);
    assert_eq!(got.len(), crate::tunnel::CONTROL_EVENTS);
    assert!(got.iter().all(|c| *c == DatagramControl::Use(true)));
    assert_eq!(p.server.stats().control_lost, 1 + (22 - 8));
    assert!(!p.server.is_closed());
    p.client.send_packet(&[0x45, 1, 2]).unwrap();
    p.client.flush();
    p.drive();
    assert_eq!(p.at_server, [vec![0x45, 1, 2]]);
}
