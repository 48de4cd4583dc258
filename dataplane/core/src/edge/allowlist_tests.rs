//! The controller's allow-list of gateway certificates (revocation),
//! driven without sockets: real TLS on both sides, in-memory bytes,
//! mocked time.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    datagram::{DatagramConfig, DatagramSession},
    edge::{EdgeGateway, EdgeLimits, Settings},
    tunnel::{
        AeadProvider, CloseReason, Event as SessEvent, Session, SessionConfig,
        lab_pki::{self, LabPki},
    },
    wire::tunnel::{DatagramSetup, FrameType},
};

/// Gateways `gw1` (id 0, 192.0.2.0/24) and `gw2` (id 1, 198.18.2.0/24).
fn settings() -> Settings {
    let gw = |name: &str, prefix: &str| EdgeGateway {
        name: name.into(),
        spki_sha256: None,
        prefixes: vec![prefix.parse().unwrap()],
        max_tunnels: 8,
        max_routes: 64,
    };
    Settings {
        name: "edge".into(),
        keepalive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(15),
        gateways: vec![gw("gw1", "192.0.2.0/24"), gw("gw2", "198.18.2.0/24")],
        reserved: Vec::new(),
        datagram_port: Some(4443),
    }
}

fn shared(workers: usize) -> Arc<Shared> {
    Arc::new(
        Shared::new(
            &settings(),
            EdgeLimits::default(),
            &crate::lpm::NoAdvice,
            workers,
        )
        .unwrap(),
    )
}

/// SHA-256 of lab certificate `i`'s DER, computed apart from the core's
/// own function (ring, not aws-lc-rs).
fn digest(pki: &LabPki, i: usize) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, pki.gateways[i].cert.as_ref());
    d.as_ref().try_into().unwrap()
}

// One direction's bytes, and feeding and draining a session: the review
// tests' own.
use super::review_h24::{Bytes, drain, feed};

/// A gateway's connection to the edge.
struct Link {
    id: ConnId,
    gw: Session,
    to_edge: Bytes,
    to_gw: Bytes,
    accepts: Vec<DatagramSetup>,
}

/// One worker's core and the gateways connected to it.
struct Edge {
    core: Core,
    links: Vec<Link>,
    now: Instant,
}

impl Edge {
    fn new(pki: &LabPki, shared: &Arc<Shared>, worker: WorkerId, now: Instant) -> Self {
        let core = Core::for_worker(
            &settings(),
            pki.server_config(),
            AeadProvider::AwsLcRs,
            shared,
            worker,
            now,
        );
        Self {
            core,
            links: Vec::new(),
            now,
        }
    }

    /// Lab certificate `cert` connects and completes its handshake
    /// (authenticated or refused); returns its link.
    fn connect(&mut self, pki: &LabPki, cert: usize) -> usize {
        let l = self.start(pki, cert);
        for _ in 0..20 {
            self.pump(l);
        }
        l
    }

    /// Lab certificate `cert` connects (accepted, nothing sent yet);
    /// returns its link.
    fn start(&mut self, pki: &LabPki, cert: usize) -> usize {
        let peer: SocketAddr = format!("198.51.100.{}:40000", 10 + self.links.len())
            .parse()
            .unwrap();
        let Accepted::Conn(id) = self.core.accept(peer, self.now) else {
            panic!("refused at accept");
        };
        let (h, e) =
            crate::datagram::keys::client(&pki.client_config(cert), lab_pki::server_name())
                .unwrap();
        let gw = Session::with_exporter(
            h,
            e,
            SessionConfig {
                name: format!("gateway-{cert}"),
                ..SessionConfig::default()
            },
            self.now,
        );
        self.links.push(Link {
            id,
            gw,
            to_edge: Bytes::default(),
            to_gw: Bytes::default(),
            accepts: Vec::new(),
        });
        self.links.len() - 1
    }

    /// One round of bytes both ways on link `l`.
    fn pump(&mut self, l: usize) {
        let now = self.now;
        let link = &mut self.links[l];
        drain(&mut link.gw, &mut link.to_edge, now);
        let to_edge = &mut link.to_edge;
        self.core
            .read(link.id, now, |s| feed(s, to_edge, now), &mut |_| {});
        let to_gw = &mut link.to_gw;
        self.core.write(link.id, now, |s| {
            drain(s, to_gw, now);
            Ok::<_, std::io::Error>(())
        });
        let _ = feed(&mut link.gw, &mut link.to_gw, now);
        while let Some(ev) = link.gw.poll_event() {
            if let SessEvent::Datagram(crate::tunnel::DatagramControl::Accept(s)) = ev {
                link.accepts.push(s);
            }
        }
        while link.gw.poll_packet().is_some() {}
    }

    fn pump_all(&mut self) {
        for _ in 0..4 {
            for l in 0..self.links.len() {
                self.pump(l);
            }
        }
    }

    /// The gateway of link `l`, as the edge has it.
    fn gateway(&self, l: usize) -> Option<GatewayId> {
        self.core.gateway_of(self.links[l].id)
    }

    /// The edge's close of link `l`, as its gateway read it.
    fn closed_by_edge(&self, l: usize) -> Option<&str> {
        match self.links[l].gw.close_reason() {
            Some(CloseReason::Peer(code, why)) if *code == CLOSE_REFUSED => Some(why),
            _ => None,
        }
    }

    /// Moves the clock by `d` and runs the timers.
    fn tick(&mut self, d: Duration) {
        self.now += d;
        self.core.handle_timeout(self.now);
    }

    /// Link `l` offers the datagram transport; returns the gateway's
    /// datagram session.
    fn datagrams(&mut self, l: usize) -> DatagramSession {
        let offer = DatagramSetup {
            receiver_id: 0x4747,
            port: 0,
        };
        self.links[l]
            .gw
            .send_datagram_control(&offer.frame(FrameType::DatagramOffer))
            .unwrap();
        for _ in 0..4 {
            self.pump(l);
        }
        let a = *self.links[l]
            .accepts
            .last()
            .expect("an answer to the offer");
        assert_eq!(a.port, 4443, "accepted");
        let keys = self.links[l].gw.take_datagram_keys().unwrap().unwrap();
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

/// (a) No controller (the default) and a list lifted again: every
/// certificate the configuration accepts authenticates and stays, as
/// before there were allow-lists.
#[test]
fn allowlist_none_authenticates_as_before() {
    let pki = LabPki::new(&["gw1", "gw2"]);
    let sh = shared(1);
    assert!(!sh.has_allowed_certificates());
    assert_eq!(sh.certificates_epoch(), 0);
    let mut edge = Edge::new(&pki, &sh, 0, Instant::now());
    let a = edge.connect(&pki, 0);
    let b = edge.connect(&pki, 1);
    assert_eq!((edge.gateway(a), edge.gateway(b)), (Some(0), Some(1)));
    for _ in 0..5 {
        edge.tick(TICK);
    }
    // A list set, then lifted: the epoch moves, nothing is closed.
    sh.set_allowed_certificates(Some(vec![vec![digest(&pki, 0)], vec![digest(&pki, 1)]]));
    sh.set_allowed_certificates(None);
    assert_eq!(sh.certificates_epoch(), 2);
    assert!(!sh.has_allowed_certificates());
    edge.tick(TICK);
    edge.pump_all();
    assert_eq!((edge.gateway(a), edge.gateway(b)), (Some(0), Some(1)));
    let c = edge.connect(&pki, 0);
    assert_eq!(edge.gateway(c), Some(0));
    let st = edge.core.stats();
    assert_eq!(st.refused_revoked.load(Relaxed), 0);
    assert_eq!(st.tunnels_revoked.load(Relaxed), 0);
    assert_eq!((sh.tunnels(), edge.core.tunnels()), (3, 3));
}

/// (b) With a list, a certificate it does not have for its gateway is
/// refused after the handshake (`CLOSE_REFUSED`, counted): listed under
/// another gateway, a gateway with an empty set, a gateway the list is
/// too short to name. Nothing stays counted.
#[test]
fn allowlist_refuses_certificates_it_does_not_have() {
    let pki = LabPki::new(&["gw1", "gw2"]);
    let sh = shared(1);
    let mut edge = Edge::new(&pki, &sh, 0, Instant::now());
    let (d1, d2) = (digest(&pki, 0), digest(&pki, 1));
    let refused = |edge: &Edge| edge.core.stats().refused_revoked.load(Relaxed);

    // gw1'sh certificate listed only under gw2: gw1 refused, gw2 taken.
    sh.set_allowed_certificates(Some(vec![vec![d2], vec![d1, d2]]));
    let a = edge.connect(&pki, 0);
    assert_eq!(edge.gateway(a), None);
    assert_eq!(edge.closed_by_edge(a), Some("refused by the edge"));
    assert_eq!(refused(&edge), 1);
    let b = edge.connect(&pki, 1);
    assert_eq!(edge.gateway(b), Some(1));

    // An empty set refuses its gateway entirely.
    sh.set_allowed_certificates(Some(vec![vec![], vec![d2]]));
    let a = edge.connect(&pki, 0);
    assert_eq!(edge.gateway(a), None);
    assert_eq!(refused(&edge), 2);

    // A list too short to name gw2: gw2 refused (fail closed).
    sh.set_allowed_certificates(Some(vec![vec![d1]]));
    let c = edge.connect(&pki, 1);
    assert_eq!(edge.gateway(c), None);
    assert_eq!(refused(&edge), 3);
    let a = edge.connect(&pki, 0);
    assert_eq!(
        edge.gateway(a),
        Some(0),
        "its own certificate, under its own id"
    );

    let st = edge.core.stats();
    assert_eq!(st.refused_unknown_gateway.load(Relaxed), 0);
    assert_eq!(st.refused_tunnel_cap.load(Relaxed), 0);
    assert_eq!(sh.handshakes(), 0);
    // The gw2 tunnel taken before the last list is closed at the tick
    // (the other test'sh subject); gw1'sh stays.
    edge.tick(TICK);
    assert_eq!(
        (sh.tunnels(), sh.gateway_tunnels(0), sh.gateway_tunnels(1)),
        (1, 1, 0)
    );
}

/// (c) A live tunnel whose certificate the controller removes is closed at
/// the worker'sh next tick (within a second on an idle edge): CLOSE sent,
/// counts, routes and its datagram session released. Another certificate
/// of the same gateway and another gateway'sh tunnel stay.
#[test]
fn allowlist_revocation_closes_live_tunnels_at_the_next_tick() {
    // Two certificates for gw1 (the same CA), one for gw2.
    let pki = LabPki::new(&["gw1", "gw1", "gw2"]);
    let sh = shared(1);
    let start = Instant::now();
    let mut edge = Edge::new(&pki, &sh, 0, start);
    let (da, db, dc) = (digest(&pki, 0), digest(&pki, 1), digest(&pki, 2));
    sh.set_allowed_certificates(Some(vec![vec![da, db], vec![dc]]));
    let a = edge.connect(&pki, 0);
    let b = edge.connect(&pki, 1);
    let c = edge.connect(&pki, 2);
    assert_eq!(
        (edge.gateway(a), edge.gateway(b), edge.gateway(c)),
        (Some(0), Some(0), Some(1))
    );
    // Tunnel `a` has a route (a packet from its LAN) and datagrams.
    let mut dg = edge.datagrams(a);
    assert_eq!(edge.core.receivers.len(), 1);
    let from_lan = udp4([192, 0, 2, 10], 5000, [203, 0, 113, 5], 53);
    edge.links[a].gw.send_packet(&from_lan).unwrap();
    edge.pump(a);
    let reply = udp4([203, 0, 113, 5], 53, [192, 0, 2, 10], 5000);
    assert_eq!(edge.core.tun_packet(&reply), Ok(Sent::Queued));
    edge.pump_all();

    // The controller revokes `a`'sh certificate. The epoch check runs at
    // the worker'sh timer, which an idle edge is never further than a
    // second from.
    sh.set_allowed_certificates(Some(vec![vec![db], vec![dc]]));
    assert!(edge.core.poll_timeout() <= edge.now + REVOCATION_DELAY);
    let due = edge.core.poll_timeout();
    edge.now = due;
    edge.core.handle_timeout(due);
    assert_eq!(edge.gateway(a), None, "revoked: closed");
    assert_eq!(
        (edge.gateway(b), edge.gateway(c)),
        (Some(0), Some(1)),
        "others stay"
    );
    let st = edge.core.stats();
    assert_eq!(st.tunnels_revoked.load(Relaxed), 1);
    assert_eq!(st.refused_revoked.load(Relaxed), 0);
    assert_eq!(
        (sh.tunnels(), sh.gateway_tunnels(0), sh.gateway_tunnels(1)),
        (2, 1, 1)
    );
    assert_eq!(edge.core.tunnels(), 2);
    assert_eq!(st.tunnels.load(Relaxed), 2);
    assert_eq!(st.gateways[0].tunnels.load(Relaxed), 1);
    // No packet reaches it any more, by TLS or datagram.
    assert_eq!(edge.core.tun_packet(&reply), Err(TunDrop::NoRoute));
    let mut sealed = vec![0u8; 1500];
    let len = dg.seal(&[&from_lan], edge.now, &mut sealed).unwrap().len;
    let res = edge.core.datagram(
        "198.51.100.10:40001".parse().unwrap(),
        &mut sealed[..len],
        edge.now,
        &mut |_| panic!("delivered after revocation"),
    );
    assert!(res.is_err(), "{res:?}");
    // Its gateway reads why; the others are not closed.
    edge.pump_all();
    assert_eq!(edge.closed_by_edge(a), Some("certificate revoked"));
    assert!(!edge.links[b].gw.is_closed() && !edge.links[c].gw.is_closed());
    // Once its last bytes are out (or it lingered), the slot and the
    // receiver id go.
    edge.tick(LINGER);
    let mut gone = Vec::new();
    while let Some(id) = edge.core.poll_closed() {
        gone.push(id);
    }
    assert_eq!(gone, [edge.links[a].id]);
    assert_eq!(edge.core.receivers.len(), 0);
    assert_eq!(st.datagram_sessions.load(Relaxed), 0);
    // Later ticks, no new epoch: nothing else is looked at or closed.
    for _ in 0..3 {
        edge.tick(TICK);
    }
    assert_eq!(st.tunnels_revoked.load(Relaxed), 1);
    assert_eq!((edge.gateway(b), edge.gateway(c)), (Some(0), Some(1)));
}

/// (c, several workers) One set of the shared list: every worker closes
/// its own revoked tunnels at its own tick; a worker that has not ticked
/// yet still holds its tunnel (nothing is done on the setter'sh thread).
#[test]
fn allowlist_revocation_reaches_every_worker() {
    let pki = LabPki::new(&["gw1", "gw2"]);
    let sh = shared(2);
    let now = Instant::now();
    let mut w0 = Edge::new(&pki, &sh, 0, now);
    let mut w1 = Edge::new(&pki, &sh, 1, now);
    let (d1, d2) = (digest(&pki, 0), digest(&pki, 1));
    let a0 = w0.connect(&pki, 0);
    let a1 = w1.connect(&pki, 0);
    let b1 = w1.connect(&pki, 1);
    assert_eq!(sh.tunnels(), 3);
    // gw1 revoked entirely (an empty set); gw2 kept.
    sh.set_allowed_certificates(Some(vec![vec![], vec![d2]]));
    w0.tick(TICK);
    assert_eq!(w0.gateway(a0), None);
    assert_eq!(w1.gateway(a1), Some(0), "worker 1 has not ticked");
    w1.tick(TICK);
    assert_eq!((w1.gateway(a1), w1.gateway(b1)), (None, Some(1)));
    assert_eq!((sh.tunnels(), sh.gateway_tunnels(0)), (1, 0));
    let revoked = |w: &Edge| w.core.stats().tunnels_revoked.load(Relaxed);
    assert_eq!((revoked(&w0), revoked(&w1)), (1, 1));
    // Allowed again: new handshakes pass; closed tunnels stay closed.
    sh.set_allowed_certificates(Some(vec![vec![d1], vec![d2]]));
    let again = w0.connect(&pki, 0);
    assert_eq!(w0.gateway(again), Some(0));
    w0.tick(TICK);
    assert_eq!((w0.gateway(again), w0.gateway(a0)), (Some(0), None));
}

/// A handshake under way while the list changes is judged by the list in
/// force when it authenticates; a tunnel taken after the change is not
/// closed by the next tick'sh check of that change.
#[test]
fn allowlist_handshakes_use_the_list_in_force() {
    let pki = LabPki::new(&["gw1", "gw2"]);
    let sh = shared(1);
    let mut edge = Edge::new(&pki, &sh, 0, Instant::now());
    let (d1, d2) = (digest(&pki, 0), digest(&pki, 1));
    sh.set_allowed_certificates(Some(vec![vec![], vec![d2]]));
    // Its TLS under way while gw1 is refused...
    let a = edge.start(&pki, 0);
    edge.pump(a);
    assert!(edge.core.is_handshaking(edge.links[a].id));
    // ...but allowed by the time it ends.
    sh.set_allowed_certificates(Some(vec![vec![d1], vec![d2]]));
    for _ in 0..20 {
        edge.pump(a);
    }
    assert_eq!(edge.gateway(a), Some(0));
    // And the other way round: refused once the list drops it.
    let b = edge.start(&pki, 0);
    edge.pump(b);
    assert!(edge.core.is_handshaking(edge.links[b].id));
    sh.set_allowed_certificates(Some(vec![vec![], vec![d2]]));
    for _ in 0..20 {
        edge.pump(b);
    }
    assert_eq!(edge.gateway(b), None);
    assert_eq!(edge.core.stats().refused_revoked.load(Relaxed), 1);
    // The tick closes `a` (revoked meanwhile); re-allowed, a new
    // handshake passes and is not closed by the next tick.
    edge.tick(TICK);
    assert_eq!(edge.gateway(a), None);
    sh.set_allowed_certificates(Some(vec![vec![d1], vec![d2]]));
    let a = edge.connect(&pki, 0);
    assert_eq!(edge.gateway(a), Some(0));
    edge.tick(TICK);
    assert_eq!(edge.gateway(a), Some(0));
    assert_eq!(edge.core.stats().tunnels_revoked.load(Relaxed), 1);
}

/// An idle worker'sh timer is never more than the revocation delay away,
/// whether or not a list is set.
#[test]
fn allowlist_idle_timer_is_within_the_revocation_delay() {
    let pki = LabPki::new(&["gw1"]);
    let sh = shared(1);
    let mut edge = Edge::new(&pki, &sh, 0, Instant::now());
    assert!(edge.core.poll_timeout() <= edge.now + REVOCATION_DELAY);
    for set in [false, true] {
        if set {
            sh.set_allowed_certificates(Some(Vec::new()));
        }
        for _ in 0..3 {
            edge.tick(Duration::from_secs(7));
            assert!(edge.core.poll_timeout() <= edge.now + REVOCATION_DELAY);
        }
    }
}
