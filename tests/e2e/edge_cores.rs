//! The edge on every core (issue 16, item 6): with `edge.workers = 2`, two
//! gateways' tunnels land on the two workers, traffic goes through both
//! workers both ways, and a reply the kernel puts on the wrong worker's
//! TUN queue still reaches its tunnel, and only its tunnel.
//!
//! The kernel's tun driver steers a reply to the queue its flow's last
//! packet was written from; its flow entries expire about 3 s after that
//! write. So replies that come back 7 s after their request find no entry
//! and go to a queue chosen by their hash alone: about half of them to the
//! other worker, which must hand them to the worker holding the tunnel.
//! The gateways here are our own (in-test TLS sessions with the lab's
//! certificates, in the `gw` and `gw2` namespaces): they see every packet
//! their tunnel carries, and so whether a reply reached the wrong one.
//! Both send from the same ports at the same time: the two workers'
//! source NAT must not make one branch's new connection clash with the
//! other's (the edge masquerades to random ports with several workers).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        mpsc,
    },
    time::{Duration, Instant},
};

use sluice_core::tunnel::{Session, SessionConfig};
use sluice_lab::{
    Host, Lab, addr,
    deploy::{EDGE_ADDR, Sluice},
    edge_lab::in_netns,
    require_root,
};
use sluice_runtime::{driver, pki};

use super::bin;

/// The delayed-echo server's port in `inet`.
const ECHO_PORT: u16 = 9011;
/// Datagrams per gateway answered at once (their flows' entries fresh).
const PROMPT: u16 = 20;
/// Datagrams per gateway answered after [`LATE`].
const DELAYED: u16 = 32;
/// Well beyond the tun driver's flow-entry expiry (3 s, swept by a timer
/// rounded up to whole seconds).
const LATE: Duration = Duration::from_secs(7);

/// A gateway of our own making: one tunnel, packets in and out.
struct TestGateway {
    sock: TcpStream,
    sess: Session,
}

impl TestGateway {
    fn connect(conf: &Path, cert: &str) -> Self {
        let tls = pki::client_config(
            &conf.join("ca.pem"),
            &conf.join(format!("{cert}.pem")),
            &conf.join(format!("{cert}.key")),
        )
        .expect("client TLS config");
        let server = pki::server_name("edge.sluice.test").expect("server name");
        let client = rustls::client::UnbufferedClientConnection::new(tls, server).expect("client");
        let addr: SocketAddr = EDGE_ADDR.parse().unwrap();
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        sock.set_nonblocking(true).unwrap();
        let sess = Session::new(
            client.into(),
            SessionConfig {
                name: cert.into(),
                // The lab's edge drops a tunnel silent for 6 s: the late
                // phase waits longer than that for its replies.
                keepalive: Duration::from_secs(1),
                ..SessionConfig::default()
            },
            Instant::now(),
        );
        let mut g = Self { sock, sess };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !g.sess.is_established() {
            assert!(
                Instant::now() < deadline && !g.sess.is_closed(),
                "{cert}: no tunnel: {:?}",
                g.sess.close_reason()
            );
            g.pump(&mut |_| {});
            std::thread::sleep(Duration::from_millis(5));
        }
        g
    }

    fn pump(&mut self, seen: &mut dyn FnMut(&[u8])) {
        let now = Instant::now();
        let _ = driver::flush(&mut self.sess, &mut self.sock, now);
        loop {
            let r = driver::receive(&mut self.sess, &mut self.sock, now, driver::READ_BUDGET);
            while let Some(p) = self.sess.poll_packet() {
                seen(p);
            }
            match r {
                Ok(o) if o.more => {}
                _ => break,
            }
        }
        if self.sess.poll_timeout().is_some_and(|t| t <= now) {
            self.sess.handle_timeout(now);
        }
        let _ = driver::transmit(&mut self.sess, &mut self.sock, now);
    }

    /// Sends `n` datagrams from `src` (ports `sport..sport + n`) to the
    /// delayed-echo server, each asking for its answer after `delay`
    /// seconds; pumps for `d`; returns every packet received.
    fn ask(&mut self, src: Ipv4Addr, sport: u16, n: u16, delay: u8, d: Duration) -> Vec<Vec<u8>> {
        for p in sport..sport + n {
            let mut out = Vec::new();
            etherparse::PacketBuilder::ipv4(src.octets(), addr::TUNNELLED_V4.octets(), 64)
                .udp(p, ECHO_PORT)
                .write(&mut out, &[delay, 0x5a, 0x5a, 0x5a])
                .expect("building a datagram");
            self.sess.send_packet(&out).expect("queueing a datagram");
        }
        let mut got = Vec::new();
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.pump(&mut |p| got.push(p.to_vec()));
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }
}

/// The edge's log and its non-zero metrics, for failure messages (no
/// gateway runs here).
fn edge_logs(lab: &Lab, s: &Sluice<'_>) -> String {
    let metrics: Vec<String> = s
        .edge_metrics()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect();
    format!(
        "--- edge log ---\n{}\n--- edge metrics (non-zero) ---\n{}",
        lab.log("edge"),
        metrics.join("\n")
    )
}

/// The edge namespace's conntrack statistics (`/proc/net/stat/nf_conntrack`,
/// added up over the CPUs), by column name.
fn conntrack_stats(lab: &Lab) -> Vec<(String, u64)> {
    let out = lab.run(Host::Edge, &["cat", "/proc/net/stat/nf_conntrack"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let names: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut sums = vec![0u64; names.len()];
    for l in lines {
        for (i, v) in l.split_whitespace().enumerate() {
            if let (Some(s), Ok(v)) = (sums.get_mut(i), u64::from_str_radix(v, 16)) {
                *s += v;
            }
        }
    }
    names
        .into_iter()
        .zip(sums)
        .filter(|(n, _)| n != "entries")
        .collect()
}

/// The destination address and port of each UDP packet in `pkts` (other
/// packets: `None`).
fn udp_dsts(pkts: &[Vec<u8>]) -> Vec<Option<(IpAddr, u16)>> {
    pkts.iter()
        .map(|p| {
            let s = etherparse::SlicedPacket::from_ip(p).ok()?;
            let dst = match s.net? {
                etherparse::NetSlice::Ipv4(h) => IpAddr::V4(h.header().destination_addr()),
                etherparse::NetSlice::Ipv6(h) => IpAddr::V6(h.header().destination_addr()),
                etherparse::NetSlice::Arp(_) => return None,
            };
            match s.transport? {
                etherparse::TransportSlice::Udp(u) => Some((dst, u.destination_port())),
                _ => None,
            }
        })
        .collect()
}

/// Answers each datagram to [`ECHO_PORT`] on the tunnelled server's
/// address after as many seconds as its first byte says; until `until`
/// or `stop` (and at most 1,000 datagrams).
fn delayed_echo(until: Instant, stop: &AtomicBool) {
    let sock = UdpSocket::bind((addr::TUNNELLED_V4, ECHO_PORT)).expect("binding the echo server");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut pending: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut seen = 0;
    while Instant::now() < until && !stop.load(Relaxed) {
        if seen < 1000
            && let Ok((n, from)) = sock.recv_from(&mut buf)
        {
            seen += 1;
            let delay = Duration::from_secs(u64::from(buf.first().copied().unwrap_or(0)));
            pending.push((Instant::now() + delay, from, buf[..n].to_vec()));
        }
        let now = Instant::now();
        pending.retain(|(at, to, msg)| {
            if *at > now {
                return true;
            }
            let _ = sock.send_to(msg, to);
            false
        });
    }
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one lab, two phases; every violation listed at the end"
)]
fn two_workers_forward_both_ways_and_hand_off_late_replies() {
    if !require_root("two_workers_forward_both_ways_and_hand_off_late_replies") {
        return;
    }
    let lab = Lab::new();
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    s.edit_edge(|c| c.replace("[edge]\n", "[edge]\nworkers = 2\n"));
    s.start_edge();
    assert_eq!(
        s.edge_metric("sluice_edge_workers", ""),
        2,
        "the edge did not start two workers\n{}",
        edge_logs(&lab, &s)
    );
    let conf = s.conf_dir().to_path_buf();
    let server_until = Instant::now() + Duration::from_secs(60);
    let stop = AtomicBool::new(false);
    // Phases: each gateway says when it is done with one (`done`) and
    // waits for the test to say go; a gateway that dies ends the test
    // (timeouts), never hangs it.
    let wait = Duration::from_secs(30);
    let (done_tx, done) = mpsc::channel::<()>();
    let gateway = |h: Host, cert: &'static str, me: Ipv4Addr, go: mpsc::Receiver<()>| {
        let (conf, done) = (&conf, done_tx.clone());
        let lab = &lab;
        move || {
            in_netns(lab, h, move || {
                let mut g = TestGateway::connect(conf, cert);
                done.send(()).unwrap();
                go.recv_timeout(wait).expect("go for the prompt phase");
                let prompt = g.ask(me, 41_000, PROMPT, 0, Duration::from_secs(2));
                done.send(()).unwrap();
                go.recv_timeout(wait).expect("go for the late phase");
                let late = g.ask(me, 42_000, DELAYED, 7, LATE + Duration::from_secs(3));
                (prompt, late)
            })
        }
    };
    let (go1_tx, go1) = mpsc::channel();
    let (go2_tx, go2) = mpsc::channel();
    let (mut broken, (p1, l1), (p2, l2), handoffs_prompt) = std::thread::scope(|sc| {
        sc.spawn(|| in_netns(&lab, Host::Inet, || delayed_echo(server_until, &stop)));
        let g1 = sc.spawn(gateway(Host::Gw, "branch-1", addr::CLIENT_V4, go1));
        done.recv_timeout(wait).expect("branch-1's tunnel");
        // The second tunnel after the first: placed on the other worker.
        let g2 = sc.spawn(gateway(Host::Gw2, "branch-2", addr::CLIENT2_V4, go2));
        done.recv_timeout(wait).expect("branch-2's tunnel");
        let go = || {
            go1_tx.send(()).unwrap();
            go2_tx.send(()).unwrap();
        };
        let mut broken: Vec<String> = Vec::new();
        let per_worker = |name: &str| {
            (0..2)
                .map(|w| s.edge_metric(name, &format!("worker=\"{w}\"")))
                .collect::<Vec<_>>()
        };
        let tunnels = per_worker("sluice_edge_worker_tunnels");
        if tunnels != [1, 1] {
            broken.push(format!("tunnels per worker {tunnels:?}, not one each"));
        }
        go();
        for _ in 0..2 {
            done.recv_timeout(wait).expect("the prompt phase");
        }
        let handoffs = s.edge_metric("sluice_edge_reply_handoffs_total", "");
        go();
        let r1 = g1.join().expect("gateway 1");
        let r2 = g2.join().expect("gateway 2");
        stop.store(true, Relaxed);
        (broken, r1, r2, handoffs)
    });
    let handoffs = s.edge_metric("sluice_edge_reply_handoffs_total", "");
    let handoff_drops = s.edge_metric("sluice_edge_reply_handoff_drops_total", "");
    let per_worker = |name: &str| {
        (0..2)
            .map(|w| s.edge_metric(name, &format!("worker=\"{w}\"")))
            .collect::<Vec<_>>()
    };
    let to_kernel = per_worker("sluice_edge_worker_to_kernel_packets_total");
    let to_tunnel = per_worker("sluice_edge_worker_to_tunnel_packets_total");
    let handed_in = per_worker("sluice_edge_worker_replies_handed_in_total");
    let ct: Vec<(String, u64)> = conntrack_stats(&lab)
        .into_iter()
        .filter(|(n, v)| {
            *v > 0 && ["clashres", "insert_failed", "drop", "invalid"].contains(&n.as_str())
        })
        .collect();
    eprintln!(
        "edge on two workers: replies handed over {handoffs} ({handoffs_prompt} in the prompt phase), dropped {handoff_drops}; \
         per worker: to the kernel {to_kernel:?}, into tunnels {to_tunnel:?}, handed in {handed_in:?}; conntrack {ct:?}"
    );
    // Every reply reached the gateway that asked, and no other.
    for (who, me, prompt, late, other) in [
        ("branch-1", addr::CLIENT_V4, &p1, &l1, addr::CLIENT2_V4),
        ("branch-2", addr::CLIENT2_V4, &p2, &l2, addr::CLIENT_V4),
    ] {
        for (what, got, n, base) in [
            ("prompt", prompt, PROMPT, 41_000u16),
            ("late", late, DELAYED, 42_000),
        ] {
            let dsts = udp_dsts(got);
            let foreign = dsts
                .iter()
                .filter(|d| d.is_some_and(|(a, _)| a == IpAddr::V4(other)))
                .count();
            if foreign > 0 {
                broken.push(format!(
                    "{who}'s tunnel carried {foreign} replies for the other branch ({what})"
                ));
            }
            let mut ports: Vec<u16> = dsts
                .iter()
                .filter_map(|d| d.filter(|(a, _)| *a == IpAddr::V4(me)).map(|(_, p)| p))
                .filter(|p| (base..base + n).contains(p))
                .collect();
            ports.sort_unstable();
            ports.dedup();
            if ports.len() != usize::from(n) {
                broken.push(format!(
                    "{who}: {} of {n} {what} replies arrived",
                    ports.len()
                ));
            }
        }
    }
    if to_kernel.contains(&0) || to_tunnel.contains(&0) {
        broken.push(format!(
            "traffic did not go through both workers both ways: to the kernel {to_kernel:?}, into tunnels {to_tunnel:?}"
        ));
    }
    // Prompt replies find their flow's entry: the kernel steers them to
    // the worker that wrote the request.
    if handoffs_prompt != 0 {
        broken.push(format!(
            "{handoffs_prompt} prompt replies were put on the wrong worker's queue (the tun driver's flow steering)"
        ));
    }
    // Late ones (64 flows, each on a queue by its hash alone) cannot all
    // land right: some are handed over (the odds of none are 2^-64).
    if handoffs == 0 || handed_in.iter().sum::<u64>() != handoffs {
        broken.push(format!(
            "late replies handed over: {handoffs}, received by the owners {handed_in:?}"
        ));
    }
    // Two workers translate new connections at the same moment on two
    // CPUs: with the clients' ports kept, two branches' hosts using the
    // same port towards one server clash, and conntrack drops one
    // (`insert_failed`). Both branches here use the same ports.
    if ct.iter().any(|(n, _)| n == "insert_failed") {
        broken.push(format!("conntrack dropped new connections: {ct:?}"));
    }
    if handoff_drops > 0 {
        broken.push(format!(
            "{handoff_drops} replies dropped instead of handed over"
        ));
    }
    assert!(
        broken.is_empty(),
        "the edge on two workers:\n- {}\n{}",
        broken.join("\n- "),
        edge_logs(&lab, &s)
    );
}
