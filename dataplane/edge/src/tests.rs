//! The edge's core driven without sockets: real TLS (rustls on both
//! sides, real certificates), in-memory byte pipes, mocked time.
use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use super::*;
use crate::config::EdgeConfig;
use sluice_core::edge::{Accepted, ConnId, Sent, TunDrop};
use sluice_core::tunnel::{Session, SessionConfig};

/// One direction of a connection: reads drain it (`WouldBlock` when
/// empty), writes append.
#[derive(Default)]
struct Wire(Vec<u8>);

impl io::Read for Wire {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

impl io::Write for Wire {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The core driven by the tunnel driver over in-memory pipes, as
/// [`Edge`] drives it over sockets.
trait Driven {
    fn read_from(
        &mut self,
        id: ConnId,
        rd: &mut dyn io::Read,
        now: Instant,
        budget: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> bool;
    fn write_to(&mut self, id: ConnId, wr: &mut dyn io::Write, now: Instant);
}

impl Driven for Core {
    fn read_from(
        &mut self,
        id: ConnId,
        rd: &mut dyn io::Read,
        now: Instant,
        budget: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> bool {
        self.read(
            id,
            now,
            |s| driver::receive(s, rd, now, budget).map(|r| r.more),
            deliver,
        )
    }

    fn write_to(&mut self, id: ConnId, wr: &mut dyn io::Write, now: Instant) {
        self.write(id, now, |s| driver::flush(s, wr, now));
    }
}

/// A lab PKI (CA, edge, `branch-1`, `branch-2`, `stranger`) and an edge
/// configuration with `extra` appended to `[edge]`.
struct Lab {
    dir: PathBuf,
    cfg: EdgeConfig,
}

impl Lab {
    fn new(tag: &str, extra: &str, gw_extra: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sluice-edge-core-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        pki::generate(
            &dir,
            &["edge.sluice.test".into()],
            &["branch-1".into(), "branch-2".into(), "stranger".into()],
        )
        .unwrap();
        let toml = format!(
            "[edge]\nlisten = \"[::]:4443\"\nca = \"ca.pem\"\ncert = \"edge.pem\"\nkey = \"edge.key\"\nmanage_network = false\n{extra}\n\
             [[edge.gateway]]\nname = \"branch-1\"\nprefixes = [\"192.0.2.0/24\"]\n{gw_extra}\n\
             [[edge.gateway]]\nname = \"branch-2\"\nprefixes = [\"198.18.2.0/24\"]\n"
        );
        let cfg = EdgeConfig::parse(&dir.join("edge.toml"), &toml).unwrap();
        Self { dir, cfg }
    }

    fn core(&self, now: Instant) -> Core {
        let tls = pki::server_config(&self.cfg.ca, &self.cfg.cert, &self.cfg.key).unwrap();
        Core::new(
            &self.cfg.core_settings(),
            self.cfg.limits,
            tls,
            driver::aead(),
            &sluice_core::lpm::NoAdvice,
            now,
        )
        .unwrap()
    }

    /// `n` workers' cores over one shared state.
    fn cores(&self, n: usize, now: Instant) -> Vec<Core> {
        let tls = pki::server_config(&self.cfg.ca, &self.cfg.cert, &self.cfg.key).unwrap();
        let settings = self.cfg.core_settings();
        let shared = Arc::new(
            Shared::new(&settings, self.cfg.limits, &sluice_core::lpm::NoAdvice, n).unwrap(),
        );
        (0..n)
            .map(|w| {
                Core::for_worker(
                    &settings,
                    tls.clone(),
                    driver::aead(),
                    &shared,
                    WorkerId::try_from(w).unwrap(),
                    now,
                )
            })
            .collect()
    }

    /// A gateway's session with certificate `name`.
    fn client(&self, name: &str, now: Instant) -> Session {
        let tls = pki::client_config(
            &self.dir.join("ca.pem"),
            &self.dir.join(format!("{name}.pem")),
            &self.dir.join(format!("{name}.key")),
        )
        .unwrap();
        let conn = rustls::client::UnbufferedClientConnection::new(
            tls,
            pki::server_name("edge.sluice.test").unwrap(),
        )
        .unwrap();
        Session::new(
            conn.into(),
            SessionConfig {
                name: name.into(),
                ..SessionConfig::default()
            },
            now,
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway connected to the core.
struct Peer {
    id: ConnId,
    sess: Session,
    c2s: Wire,
    s2c: Wire,
    got: Vec<Vec<u8>>,
}

/// Moves bytes both ways until nothing moves; packets the core delivers
/// go to `delivered`.
fn pump(core: &mut Core, p: &mut Peer, now: Instant, delivered: &mut Vec<Vec<u8>>) {
    for _ in 0..100 {
        let _ = crate::driver::flush(&mut p.sess, &mut p.c2s, now);
        let sent = p.c2s.0.len();
        while core.read_from(p.id, &mut p.c2s, now, 1 << 20, &mut |pkt| {
            delivered.push(pkt.to_vec());
        }) {}
        while let Some(id) = core.poll_dirty() {
            assert_eq!(id, p.id, "only this peer has bytes");
            core.write_to(id, &mut p.s2c, now);
        }
        let back = p.s2c.0.len();
        if !p.s2c.0.is_empty() {
            let _ = crate::driver::receive(&mut p.sess, &mut p.s2c, now, 1 << 20);
            while let Some(pkt) = p.sess.poll_packet() {
                p.got.push(pkt.to_vec());
            }
        }
        if sent == 0 && back == 0 && !p.sess.wants_write() {
            return;
        }
    }
}

fn connect(core: &mut Core, lab: &Lab, cert: &str, from: &str, now: Instant) -> Peer {
    let peer: SocketAddr = from.parse().unwrap();
    let Accepted::Conn(id) = core.accept(peer, now) else {
        panic!("refused");
    };
    let mut p = Peer {
        id,
        sess: lab.client(cert, now),
        c2s: Wire::default(),
        s2c: Wire::default(),
        got: Vec::new(),
    };
    pump(core, &mut p, now, &mut Vec::new());
    p
}

fn udp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4(src, dst, 64)
        .udp(5000, 53)
        .write(&mut out, b"hello")
        .unwrap();
    out
}

/// The measured symptom, without sockets: the second gateway sends
/// from the first one's client address; it is dropped and counted, and
/// the reply to that address still goes to the first gateway.
#[test]
fn a_gateway_cannot_spoof_another_or_take_its_replies() {
    let lab = Lab::new("spoof", "", "");
    let now = Instant::now();
    let mut core = lab.core(now);
    let mut g1 = connect(&mut core, &lab, "branch-1", "198.51.100.1:40000", now);
    let mut g2 = connect(&mut core, &lab, "branch-2", "198.51.100.9:40000", now);
    assert!(g1.sess.is_established() && g2.sess.is_established());
    assert_eq!(core.tunnels(), 2);
    let server = [203, 0, 113, 10];
    let mut delivered = Vec::new();
    g1.sess.send_packet(&udp([192, 0, 2, 10], server)).unwrap();
    pump(&mut core, &mut g1, now, &mut delivered);
    g2.sess.send_packet(&udp([192, 0, 2, 10], server)).unwrap();
    g2.sess
        .send_packet(&udp([198, 18, 2, 10], [192, 0, 2, 10]))
        .unwrap();
    g2.sess
        .send_packet(&udp([198, 18, 2, 10], [169, 254, 169, 254]))
        .unwrap();
    g2.sess.send_packet(&udp([198, 18, 2, 10], server)).unwrap();
    pump(&mut core, &mut g2, now, &mut delivered);
    assert_eq!(
        delivered.len(),
        2,
        "one packet from each branch's own source"
    );
    let s = core.stats();
    assert_eq!(s.drop_spoofed.load(Relaxed), 1);
    assert_eq!(s.drop_to_gateway.load(Relaxed), 1);
    assert_eq!(s.drop_reserved.load(Relaxed), 1);
    assert_eq!(s.gateways[1].spoofed.load(Relaxed), 1);
    // The reply to 192.0.2.10 goes down branch 1's tunnel.
    let reply = udp(server, [192, 0, 2, 10]);
    core.tun_packet(&reply).unwrap();
    while let Some(id) = core.poll_dirty() {
        let w = if id == g1.id {
            &mut g1.s2c
        } else {
            &mut g2.s2c
        };
        core.write_to(id, w, now);
    }
    assert!(g2.s2c.0.is_empty(), "nothing for branch 2");
    pump(&mut core, &mut g1, now, &mut delivered);
    assert_eq!(g1.got, [reply]);
    assert_eq!(
        core.tun_packet(&udp(server, [192, 0, 2, 99])),
        Err(TunDrop::NoRoute),
        "an address nobody sent from"
    );
}

/// A certificate from the right CA but for no configured gateway is
/// refused after its handshake (CLOSE, counted), and so is one tunnel more
/// than a gateway's `max_tunnels`.
#[test]
fn unknown_gateways_and_extra_tunnels_are_refused() {
    let lab = Lab::new("refuse", "", "max_tunnels = 2");
    let now = Instant::now();
    let mut core = lab.core(now);
    let s = core.stats();
    let stranger = connect(&mut core, &lab, "stranger", "198.51.100.20:1", now);
    assert!(
        stranger.sess.is_closed(),
        "{:?}",
        stranger.sess.close_reason()
    );
    assert!(matches!(
        stranger.sess.close_reason(),
        Some(sluice_core::tunnel::CloseReason::Peer(c, _)) if *c == sluice_core::edge::CLOSE_REFUSED
    ));
    assert_eq!(s.refused_unknown_gateway.load(Relaxed), 1);
    let a = connect(&mut core, &lab, "branch-1", "198.51.100.1:1", now);
    let b = connect(&mut core, &lab, "branch-1", "198.51.100.1:2", now);
    let c = connect(&mut core, &lab, "branch-1", "198.51.100.1:3", now);
    assert!(a.sess.is_established() && b.sess.is_established());
    assert!(c.sess.is_closed(), "a third tunnel of branch-1");
    assert_eq!(s.refused_tunnel_cap.load(Relaxed), 1);
    assert_eq!(s.gateways[0].tunnels.load(Relaxed), 2);
    while core.poll_closed().is_some() {}
    assert_eq!(core.tunnels(), 2);
    assert_eq!(core.handshakes(), 0);
}

/// Slow or silent connections: capped per prefix and in all, each held
/// at most until the absolute handshake deadline, a few KiB each.
#[test]
fn handshakes_are_capped_and_bounded_in_time_and_memory() {
    let lab = Lab::new(
        "caps",
        "max_handshakes = 64\nmax_handshakes_per_prefix = 16\nhandshake_timeout_secs = 5",
        "",
    );
    let start = Instant::now();
    let mut core = lab.core(start);
    let s = core.stats();
    let hello = {
        let mut c = lab.client("branch-1", start);
        let mut w = Wire::default();
        crate::driver::transmit(&mut c, &mut w, start).unwrap();
        w.0
    };
    let mut ids = Vec::new();
    // 100 from one /24: 16 taken, the rest refused at once.
    for i in 0..100 {
        let peer: SocketAddr = format!("203.0.113.{}:{}", 200 + i % 4, 1000 + i)
            .parse()
            .unwrap();
        if let Accepted::Conn(id) = core.accept(peer, start) {
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), 16);
    assert_eq!(s.refused_prefix_cap.load(Relaxed), 84);
    // 100 more from 100 /64s: the cap of 64 in all holds.
    for i in 0..100u16 {
        let peer: SocketAddr = format!("[2001:db8:66:{i:x}::1]:1000").parse().unwrap();
        if let Accepted::Conn(id) = core.accept(peer, start) {
            // As the driver does: the evicted one's socket goes first.
            while let Some(gone) = core.poll_closed() {
                ids.retain(|&i| i != gone);
            }
            ids.push(id);
        }
    }
    assert_eq!(core.handshakes(), 64);
    assert!(
        s.handshakes_evicted.load(Relaxed) > 0,
        "the /24's took the cut"
    );
    assert_eq!(ids.len(), 64);
    // Each sends part of a ClientHello, one byte a second: the deadline
    // does not move.
    for t in 0..8u64 {
        let now = start + Duration::from_secs(t);
        for &id in &ids {
            let mut w = Wire(vec![hello[t as usize]]);
            core.read_from(id, &mut w, now, 1 << 16, &mut |_| panic!("no packets"));
        }
        core.handle_timeout(now);
        if t < 5 {
            assert_eq!(core.handshakes(), 64, "t={t}");
        }
    }
    assert!(
        core.buffered_capacity() <= 64 * 8 * 1024,
        "{} bytes for 64 handshakes",
        core.buffered_capacity()
    );
    core.handle_timeout(start + Duration::from_secs(6));
    let mut closed = 0;
    while core.poll_closed().is_some() {
        closed += 1;
    }
    assert_eq!((core.handshakes(), closed), (0, 64));
    assert_eq!(s.handshakes_timed_out.load(Relaxed), 64);
    assert!(core.slots() <= 64 + 16, "slots are reused");
    // A gateway still gets in.
    let g = connect(
        &mut core,
        &lab,
        "branch-1",
        "198.51.100.1:4",
        start + Duration::from_secs(7),
    );
    assert!(g.sess.is_established());
}

/// Each read of a busy tunnel stops at its budget, and says more is left.
#[test]
fn reads_stop_at_their_budget() {
    let lab = Lab::new("budget", "", "");
    let now = Instant::now();
    let mut core = lab.core(now);
    let mut g = connect(&mut core, &lab, "branch-1", "198.51.100.1:1", now);
    let pkt = udp([192, 0, 2, 10], [203, 0, 113, 10]);
    for _ in 0..2000 {
        g.sess.send_packet(&pkt).unwrap();
    }
    crate::driver::flush(&mut g.sess, &mut g.c2s, now).unwrap();
    let total = g.c2s.0.len();
    let mut n = 0;
    let more = core.read_from(g.id, &mut g.c2s, now, 16 * 1024, &mut |_| n += 1);
    assert!(more, "more is left");
    assert!(g.c2s.0.len() >= total - 32 * 1024, "read about its budget");
    assert!(n > 0 && n < 2000, "{n}");
    while core.read_from(g.id, &mut g.c2s, now, 16 * 1024, &mut |_| n += 1) {}
    assert_eq!(n, 2000);
}

#[test]
fn caps_fit_the_descriptor_limit() {
    let l = crate::config::EdgeLimits::default();
    assert_eq!(fit_limits(l, 1 << 20, 1), l);
    let f = fit_limits(l, 1024, 1);
    assert!(u64::from(f.max_handshakes + f.max_tunnels) <= 1024 - fd_reserve(1));
    let f = fit_limits(l, 1024, 64);
    assert!(u64::from(f.max_handshakes + f.max_tunnels) <= 1024 - fd_reserve(64));
    assert!(f.max_handshakes_per_prefix <= f.max_handshakes);
    assert!(f.max_handshakes >= 4 && f.max_tunnels >= 4);
}

/// Two workers, branch 1's tunnel on worker 0 and branch 2's on worker 1:
/// a reply the kernel puts on worker 1's queue for branch 1's client is
/// handed to worker 0 (through the mesh, as the workers do) and reaches
/// branch 1 only; worker 1 never sends it into branch 2's tunnel, and a
/// handed packet is never handed on again.
#[test]
fn a_reply_on_the_wrong_worker_reaches_its_tunnel_through_the_owner() {
    let lab = Lab::new("handoff", "", "");
    let now = Instant::now();
    let mut cores = lab.cores(2, now);
    let (c0, c1) = cores.split_at_mut(1);
    let (c0, c1) = (&mut c0[0], &mut c1[0]);
    let mut g1 = connect(c0, &lab, "branch-1", "198.51.100.1:40000", now);
    let mut g2 = connect(c1, &lab, "branch-2", "198.51.100.9:40000", now);
    assert!(g1.sess.is_established() && g2.sess.is_established());
    let server = [203, 0, 113, 10];
    let mut delivered = Vec::new();
    g1.sess.send_packet(&udp([192, 0, 2, 10], server)).unwrap();
    pump(c0, &mut g1, now, &mut delivered);
    // Branch 2 sends from its own address and from branch 1's.
    g2.sess.send_packet(&udp([198, 18, 2, 10], server)).unwrap();
    g2.sess.send_packet(&udp([192, 0, 2, 10], server)).unwrap();
    pump(c1, &mut g2, now, &mut delivered);
    assert_eq!(delivered.len(), 2, "the spoofed one is refused on worker 1");
    assert_eq!(c1.stats().drop_spoofed.load(Relaxed), 1);

    let mesh = mesh::Mesh::new(2, 1500, 8);
    let polls = [mio::Poll::new().unwrap(), mio::Poll::new().unwrap()];
    let waker = |i: usize| mio::Waker::new(polls[i].registry(), mio::Token(10)).unwrap();
    let mut p0 = mesh.port(0, waker(0)).unwrap();
    let mut p1 = mesh.port(1, waker(1)).unwrap();
    let reply = udp(server, [192, 0, 2, 10]);
    assert_eq!(c1.tun_packet(&reply), Ok(Sent::HandOff(0)));
    assert!(p1.hand_off(&mesh, 0, &reply));
    assert!(c1.poll_dirty().is_none(), "nothing queued on worker 1");
    let mut handed = Vec::new();
    assert!(!p0.handed(&mesh, 16, |p| handed.push(c0.handed_packet(p))));
    assert_eq!(handed, [Ok(())]);
    pump(c0, &mut g1, now, &mut delivered);
    pump(c1, &mut g2, now, &mut delivered);
    assert_eq!(g1.got, std::slice::from_ref(&reply));
    assert!(g2.got.is_empty(), "nothing for branch 2");
    // On its own worker, a reply goes straight in.
    let reply2 = udp(server, [198, 18, 2, 10]);
    assert_eq!(c1.tun_packet(&reply2), Ok(Sent::Queued));
    // A packet handed to a worker without the route is dropped there,
    // not handed on; nobody holds an address nobody sent from.
    assert_eq!(c0.handed_packet(&reply2), Err(TunDrop::NoRoute));
    assert_eq!(
        c1.tun_packet(&udp(server, [192, 0, 2, 99])),
        Err(TunDrop::NoRoute)
    );
    // Branch 1's tunnel goes: its route goes from the books with it, and
    // a reply on worker 1 is no longer handed anywhere.
    c0.close_all(now);
    while let Some(id) = c0.poll_dirty() {
        c0.write_to(id, &mut g1.s2c, now);
    }
    c0.handle_timeout(now + Duration::from_secs(3));
    for t in 1..40 {
        c0.handle_timeout(now + Duration::from_millis(3000 + 100 * t));
    }
    assert_eq!(c1.tun_packet(&reply), Err(TunDrop::NoRoute));
}

/// The caps are the edge's, not a worker's: a gateway's `max_tunnels`
/// holds with its tunnels on two workers, and so does the handshake cap,
/// a handshake on one worker making room for a connection on another.
#[test]
fn caps_hold_across_workers() {
    let lab = Lab::new(
        "xcaps",
        "max_handshakes = 4\nmax_handshakes_per_prefix = 3",
        "max_tunnels = 2",
    );
    let now = Instant::now();
    let mut cores = lab.cores(2, now);
    let (c0, c1) = cores.split_at_mut(1);
    let (c0, c1) = (&mut c0[0], &mut c1[0]);
    let a = connect(c0, &lab, "branch-1", "198.51.100.1:1", now);
    let b = connect(c1, &lab, "branch-1", "198.51.100.1:2", now);
    let c = connect(c0, &lab, "branch-1", "198.51.100.1:3", now);
    assert!(a.sess.is_established() && b.sess.is_established());
    assert!(
        c.sess.is_closed(),
        "a third tunnel of branch-1, on either worker"
    );
    assert_eq!(c0.stats().refused_tunnel_cap.load(Relaxed), 1);
    assert_eq!(
        (c0.tunnels(), c1.tunnels(), c0.shared().tunnels()),
        (1, 1, 2)
    );
    // Handshakes: three from one /24 on worker 1, one more on worker 0.
    let mut on1 = Vec::new();
    for i in 0..3 {
        let peer: SocketAddr = format!("203.0.113.{}:1000", 200 + i).parse().unwrap();
        let Accepted::Conn(id) = c1.accept(peer, now) else {
            panic!("refused");
        };
        on1.push(id);
    }
    let peer: SocketAddr = "203.0.113.250:1".parse().unwrap();
    assert_eq!(
        c0.accept(peer, now),
        Accepted::Refused,
        "per prefix, both workers"
    );
    assert!(matches!(
        c0.accept("[2001:db8:66::1]:1".parse().unwrap(), now),
        Accepted::Conn(_)
    ));
    assert_eq!(c0.handshakes(), 4);
    // Full: a newcomer on worker 0 takes the /24's oldest place, which is
    // on worker 1: worker 1 closes it when told.
    let Accepted::Conn(_) = c0.accept("[2001:db8:67::1]:1".parse().unwrap(), now) else {
        panic!("refused");
    };
    let ev = c0.poll_eviction().expect("an eviction for worker 1");
    assert_eq!((ev.worker, ev.slot), (1, on1[0]));
    assert_eq!(c0.handshakes(), 4);
    assert!(c1.poll_closed().is_none(), "not before it is told");
    c1.evict(ev.slot, ev.generation, now);
    assert_eq!(c1.poll_closed(), Some(on1[0]));
    assert_eq!(c0.handshakes(), 4, "counted once");
    assert_eq!(c0.stats().handshakes_evicted.load(Relaxed), 1);
}

/// One worker failing stops every other (they see the mesh fail and
/// return) and its error is the edge's; workers that only stop return
/// nothing.
#[test]
fn one_failing_worker_stops_them_all_with_its_error() {
    let mesh = mesh::Mesh::new(3, 1500, 8);
    let polls: Vec<mio::Poll> = (0..3).map(|_| mio::Poll::new().unwrap()).collect();
    let _ports: Vec<_> = (0..3)
        .map(|i| {
            let waker = mio::Waker::new(polls[i].registry(), mio::Token(2)).unwrap();
            mesh.port(i, waker).unwrap()
        })
        .collect();
    let mut workers = [0usize, 1, 2];
    let started = Instant::now();
    let r = supervise(&mut workers, &mesh, |w| {
        if *w == 1 {
            std::thread::sleep(Duration::from_millis(20));
            return Err(EdgeError::Io {
                what: "worker 1: reading TUN device".into(),
                source: io::ErrorKind::BrokenPipe.into(),
            });
        }
        while !mesh.failed() {
            assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("worker 1"), "{e}");
    assert!(mesh.failed());
    // Nobody failing: all stop on their own, no error.
    let mesh = mesh::Mesh::new(2, 1500, 8);
    assert!(supervise(&mut [0, 1], &mesh, |_| Ok(())).is_ok());
    assert!(!mesh.failed());
}
