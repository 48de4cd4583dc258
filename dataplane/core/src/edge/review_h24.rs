//! Review h24 (issue 16): the edge's datagram transport driven without
//! sockets (real TLS on both sides, in-memory bytes, mocked time).
//! Each test failed before the fix of the review finding it names
//! (kept as regression tests).
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    datagram::{DatagramConfig, DatagramSession},
    edge::{EdgeGateway, EdgeLimits, Settings},
    tunnel::{
        AeadProvider, Event as SessEvent, Session, SessionConfig, SessionError,
        lab_pki::{self, LabPki},
    },
    wire::tunnel::{DatagramSetup, FrameType, datagram_use_frame},
};

fn settings() -> Settings {
    Settings {
        name: "edge".into(),
        keepalive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(15),
        gateways: vec![EdgeGateway {
            name: "gw1".into(),
            spki_sha256: None,
            prefixes: vec!["192.0.2.0/24".parse().unwrap()],
            max_tunnels: 8,
            max_routes: 64,
        }],
        reserved: Vec::new(),
        datagram_port: Some(4443),
    }
}

fn core(pki: &LabPki, workers: usize, worker: WorkerId, now: Instant) -> Core {
    let cfg = settings();
    let shared =
        Arc::new(Shared::new(&cfg, EdgeLimits::default(), &crate::lpm::NoAdvice, workers).unwrap());
    Core::for_worker(
        &cfg,
        pki.server_config(),
        AeadProvider::AwsLcRs,
        &shared,
        worker,
        now,
    )
}

/// Inverse of `x ^= x << k` on 64 bits.
fn unshl(y: u64, k: u32) -> u64 {
    let mut x = y;
    let mut s = k;
    while s < 64 {
        x ^= y << s;
        s += k;
    }
    x
}

/// Inverse of `x ^= x >> k` on 64 bits.
fn unshr(y: u64, k: u32) -> u64 {
    let mut x = y;
    let mut s = k;
    while s < 64 {
        x ^= y >> s;
        s += k;
    }
    x
}

/// `new_receiver_id` picks `base - base % workers + worker`: for a worker
/// count that does not divide 2^32 (3, 5, 6, 7, ...) and a `base` in the
/// top `workers` values, that overflows `u32`. Debug builds panic
/// (reachable from any gateway's `DATAGRAM_OFFER`); release builds wrap
/// to an id the cBPF program steers to another worker, whose table does
/// not know it (the tunnel's datagrams are all dropped as
/// `unknown_receiver`).
#[test]
fn review_h24_receiver_ids_never_overflow_and_stay_on_their_worker() {
    let pki = LabPki::new(&["gw1"]);
    let now = Instant::now();
    let mut c = core(&pki, 3, 2, now);
    // The state whose next xorshift output has its top 32 bits all ones.
    let want: u64 = 0xFFFF_FFFF_0000_0001;
    let state = unshl(unshr(unshl(want, 17), 7), 13);
    let mut x = state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    assert_eq!(x, want, "inverse of the id generator");
    c.id_state = state;
    let id = c.new_receiver_id();
    assert!(
        id.is_some_and(|id| id % 3 == 2),
        "worker 2 of 3 got receiver id {id:?}"
    );
}

/// Bytes of one direction.
#[derive(Default)]
pub(super) struct Bytes(pub(super) Vec<u8>);

pub(super) fn feed(s: &mut Session, b: &mut Bytes, now: Instant) -> Result<bool, SessionError> {
    while !b.0.is_empty() {
        let buf = s.receive_buffer()?;
        if buf.is_empty() {
            return Ok(true);
        }
        let n = buf.len().min(b.0.len());
        buf[..n].copy_from_slice(&b.0[..n]);
        s.handle_received_in_place(n, now)?;
        b.0.drain(..n);
    }
    Ok(false)
}

pub(super) fn drain(s: &mut Session, out: &mut Bytes, now: Instant) {
    s.flush();
    while let Some(b) = s.poll_transmit(now) {
        out.0.extend_from_slice(b);
        let n = b.len();
        s.transmitted(n, now);
    }
}

/// A gateway session and the edge's core, one connection between them.
struct Pair {
    core: Core,
    id: ConnId,
    gw: Session,
    to_edge: Bytes,
    to_gw: Bytes,
    now: Instant,
    accepts: Vec<DatagramSetup>,
    delivered: Vec<Vec<u8>>,
}

impl Pair {
    fn new(pki: &LabPki) -> Self {
        let now = Instant::now();
        let mut core = core(pki, 1, 0, now);
        let Accepted::Conn(id) = core.accept("198.51.100.200:40000".parse().unwrap(), now) else {
            panic!("refused");
        };
        let (h, e) =
            crate::datagram::keys::client(&pki.client_config(0), lab_pki::server_name()).unwrap();
        let gw = Session::with_exporter(
            h,
            e,
            SessionConfig {
                name: "gw1".into(),
                ..SessionConfig::default()
            },
            now,
        );
        let mut p = Self {
            core,
            id,
            gw,
            to_edge: Bytes::default(),
            to_gw: Bytes::default(),
            now,
            accepts: Vec::new(),
            delivered: Vec::new(),
        };
        for _ in 0..20 {
            p.pump();
        }
        assert!(p.gw.is_established(), "handshake");
        assert_eq!(p.core.gateway_of(id), Some(0), "authenticated");
        p
    }

    fn pump(&mut self) {
        let now = self.now;
        drain(&mut self.gw, &mut self.to_edge, now);
        let to_edge = &mut self.to_edge;
        let delivered = &mut self.delivered;
        self.core
            .read(self.id, now, |s| feed(s, to_edge, now), &mut |p| {
                delivered.push(p.to_vec());
            });
        let to_gw = &mut self.to_gw;
        self.core.write(self.id, now, |s| {
            drain(s, to_gw, now);
            Ok::<_, std::io::Error>(())
        });
        let _ = feed(&mut self.gw, &mut self.to_gw, now);
        while let Some(ev) = self.gw.poll_event() {
            if let SessEvent::Datagram(crate::tunnel::DatagramControl::Accept(s)) = ev {
                self.accepts.push(s);
            }
        }
        while self.gw.poll_packet().is_some() {}
    }

    /// Offers datagrams; returns the gateway's datagram session.
    fn datagrams(&mut self) -> DatagramSession {
        let offer = DatagramSetup {
            receiver_id: 0x4747,
            port: 0,
        };
        self.gw
            .send_datagram_control(&offer.frame(FrameType::DatagramOffer))
            .unwrap();
        for _ in 0..4 {
            self.pump();
        }
        let a = *self.accepts.last().expect("an answer to the offer");
        assert_eq!(a.port, 4443, "accepted");
        let keys = self.gw.take_datagram_keys().unwrap().unwrap();
        DatagramSession::new(
            keys,
            0x4747,
            a.receiver_id,
            DatagramConfig::default(),
            self.now,
        )
        .unwrap()
    }
}

fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"hello")
        .unwrap();
    v
}

/// Where the core's datagrams went.
#[derive(Default)]
struct Catch {
    buf: Vec<u8>,
    sent: Vec<SocketAddr>,
}

impl DatagramSink for Catch {
    fn slot(&mut self) -> Option<&mut [u8]> {
        self.buf.resize(1500, 0);
        Some(&mut self.buf)
    }
    fn commit(&mut self, _: usize, to: SocketAddr) {
        self.sent.push(to);
    }
}

/// Finding H1 (fixed: `sendable`). Before, an authenticated datagram's
/// source became the gateway's datagram address whatever it was: a compromised gateway that sends one from
/// UDP source port 0 (a raw socket; Linux delivers it) makes the edge
/// seal its replies to `ip:0`. `sendmmsg` refuses such a message with
/// `EINVAL`, and the edge worker's `flush_batch`
/// (`edge/src/worker.rs`) then clears the whole send batch: every other
/// gateway's datagram queued behind it in that worker's batch is lost.
/// The same holds for any destination the kernel refuses at once
/// (EPERM from an output firewall rule, ENETUNREACH, EACCES).
#[test]
fn review_h24_a_datagram_from_port_0_never_becomes_the_reply_address() {
    let pki = LabPki::new(&["gw1"]);
    let mut p = Pair::new(&pki);
    let mut g = p.datagrams();
    let now = p.now;
    let pkt = udp4([192, 0, 2, 10], 5000, [203, 0, 113, 5], 53);
    let mut d = vec![0u8; 1500];
    let n = g.seal(&[&pkt], now, &mut d).unwrap().len;
    let from: SocketAddr = "198.51.100.200:0".parse().unwrap();
    let mut got = Vec::new();
    p.core
        .datagram(from, &mut d[..n], now, &mut |x| got.push(x.to_vec()))
        .unwrap();
    assert_eq!(got, std::slice::from_ref(&pkt), "delivered");
    p.gw.send_datagram_control(&datagram_use_frame(true))
        .unwrap();
    p.pump();
    // The edge acts on a control frame at its next read (see
    // `review_h24_an_offer_is_answered_in_the_read_that_carried_it`).
    p.gw.send_echo(1, now).unwrap();
    p.pump();
    let reply = udp4([203, 0, 113, 5], 53, [192, 0, 2, 10], 5000);
    let mut sink = Catch::default();
    let sent = p.core.tun_packet_via(&reply, now, &mut sink);
    // No address to send datagrams to: the reply takes the TLS stream.
    assert_eq!(sent, Ok(Sent::Queued));
    assert!(sink.sent.is_empty(), "replies sealed to {:?}", sink.sent);
}

/// Not a finding, the checks that hold: a datagram for a tunnel that has
/// closed is refused, and the receiver id is gone from the table once
/// the connection is finished.
#[test]
fn review_h24_receiver_ids_are_removed_when_the_tunnel_goes() {
    let pki = LabPki::new(&["gw1"]);
    let mut p = Pair::new(&pki);
    let mut g = p.datagrams();
    assert_eq!(p.core.receivers.len(), 1);
    let now = p.now;
    let pkt = udp4([192, 0, 2, 10], 5000, [203, 0, 113, 5], 53);
    let mut d = vec![0u8; 1500];
    let n = g.seal(&[&pkt], now, &mut d).unwrap().len;
    p.gw.close(crate::wire::tunnel::CloseCode::Normal, "bye");
    for _ in 0..4 {
        p.pump();
    }
    // Closing, or finished: either way the datagram opens nothing.
    let res = p.core.datagram(
        "198.51.100.200:1".parse().unwrap(),
        &mut d[..n],
        now,
        &mut |_| panic!("delivered after close"),
    );
    assert!(res.is_err(), "{res:?}");
    p.core.handle_timeout(now + Duration::from_secs(3));
    while p.core.poll_closed().is_some() {}
    assert_eq!(p.core.receivers.len(), 0, "receiver id removed");
}

/// `Core::read` polls the session's events before it drains
/// `poll_packet`, but control frames are parsed during that drain (the
/// session's docs: call `poll_event` after draining packets). A
/// `DATAGRAM_OFFER` or `DATAGRAM_USE` is acted upon only at the next
/// read of that connection, i.e. when the gateway next sends something
/// (a probe: `probe_interval`; an idle tunnel with a long interval:
/// its keepalive, 10 s). With `probe_interval` at or above the path's
/// `setup_timeout` (2 s), an idle standby's offer is answered too late:
/// TLS for the connection's life, or (fallback off) the edge is failed,
/// again at every reconnection.
#[test]
fn review_h24_an_offer_is_answered_in_the_read_that_carried_it() {
    let pki = LabPki::new(&["gw1"]);
    let mut p = Pair::new(&pki);
    let offer = DatagramSetup {
        receiver_id: 0x4747,
        port: 0,
    };
    p.gw.send_datagram_control(&offer.frame(FrameType::DatagramOffer))
        .unwrap();
    // One round trip: the offer reaches the edge, whatever it writes
    // comes back.
    p.pump();
    p.pump();
    let after_offer = p.accepts.len();
    // Anything else from the gateway (here an echo probe).
    p.gw.send_echo(1, p.now).unwrap();
    p.pump();
    p.pump();
    assert_eq!(
        (after_offer, p.accepts.len()),
        (1, 1),
        "answers after the offer's own round trip, then after the next gateway bytes"
    );
}

/// Review h25 M1: an IPv4 gateway's tenant has an inner MTU of 1438 (what
/// a 1472-byte UDP payload carries), but the edge sealed its replies into
/// records of at most 1452 bytes (the IPv6 size) whatever the gateway's
/// family: every reply of 1419 to 1438 bytes failed to seal and went by
/// the TLS stream (`Sent::Queued`), a download's full-size packets on
/// TCP-in-TCP and its small ones on UDP. Expect them sealed into
/// datagrams.
#[test]
fn review_h25_full_size_replies_to_an_ipv4_gateway_fit_a_datagram() {
    let pki = LabPki::new(&["gw1"]);
    let mut p = Pair::new(&pki);
    let mut g = p.datagrams();
    let now = p.now;
    // A datagram from the gateway's address teaches the edge where to send.
    let pkt = udp4([192, 0, 2, 10], 5000, [203, 0, 113, 5], 53);
    let mut d = vec![0u8; 1500];
    let n = g.seal(&[&pkt], now, &mut d).unwrap().len;
    let from: SocketAddr = "198.51.100.200:40001".parse().unwrap();
    p.core
        .datagram(from, &mut d[..n], now, &mut |_| {})
        .unwrap();
    p.gw.send_datagram_control(&datagram_use_frame(true))
        .unwrap();
    p.pump();
    p.gw.send_echo(1, now).unwrap();
    p.pump();
    // 1438 bytes of IPv4 packet: the inner MTU of an IPv4 gateway.
    let mut reply = Vec::new();
    etherparse::PacketBuilder::ipv4([203, 0, 113, 5], [192, 0, 2, 10], 64)
        .udp(53, 5000)
        .write(&mut reply, &[0x5a; 1438 - 28])
        .unwrap();
    assert_eq!(
        reply.len(),
        usize::from(crate::policy::DEFAULT_DATAGRAM_MTU_V4)
    );
    let mut sink = Catch::default();
    let sent = p.core.tun_packet_via(&reply, now, &mut sink);
    assert_eq!(
        sent,
        Ok(Sent::Datagram),
        "a full-size reply took the TLS stream"
    );
    assert_eq!(sink.sent, [from]);
}
