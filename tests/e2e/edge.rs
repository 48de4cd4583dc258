//! The edge under hostile peers (issue 14, items 4 to 6): two branches on
//! one edge that must stay apart, an unauthenticated flood while a gateway
//! streams, and one gateway flooding while the other pings.
//!
//! Every "never" is watched on the wire: nftables counters in the far
//! namespace ([`watch`]), and what the peers get back.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use sluice_core::tunnel::{Session, SessionConfig};
use sluice_lab::{
    Host, Lab, addr,
    deploy::{EDGE_ADDR, Sluice},
    edge_lab::{
        Flood, Pings, add_addr, add_flood_sources, in_netns, iperf_tcp, iperf_udp, nft_counter_in,
        open_fds, ping, rss_mib, spawn_iperf_server, watch, watched,
    },
    require_root,
};
use sluice_runtime::{driver, pki};

use super::{HTTP, UDP, bin, curl_in, logs};

/// The edge's nftables table in the lab (TUN `sluice0`).
const EDGE_TABLE: &str = "sluice_edge_sluice0";
const IPERF_PORT: u16 = 5201;
/// A UDP port nothing listens on: datagrams to it are counted in `inet`.
const PROBE_PORT: u16 = 9009;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn v6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

/// A gateway of our own making with `branch-2`'s certificate: a
/// compromised branch that sends whatever packets it likes into its tunnel.
/// Runs on a thread inside a lab namespace ([`in_netns`]).
struct HostileGateway {
    sock: TcpStream,
    sess: Session,
}

impl HostileGateway {
    /// Connects to the edge and completes the handshake (10 s at most).
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
                name: "hostile".into(),
                ..SessionConfig::default()
            },
            Instant::now(),
        );
        let mut g = Self { sock, sess };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !g.sess.is_established() {
            assert!(
                Instant::now() < deadline && !g.sess.is_closed(),
                "hostile gateway: no tunnel: {:?}",
                g.sess.close_reason()
            );
            g.pump(&mut |_| {});
            std::thread::sleep(Duration::from_millis(5));
        }
        g
    }

    /// Writes what is queued, reads what arrived; `seen` gets each packet.
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

    fn send(&mut self, pkt: &[u8]) {
        self.sess.send_packet(pkt).expect("queueing a packet");
    }

    /// Sends `pkt` as fast as the tunnel takes it, for `d`; returns the
    /// packets sent.
    fn blast(&mut self, pkt: &[u8], d: Duration) -> u64 {
        let end = Instant::now() + d;
        let mut sent = 0;
        while Instant::now() < end && !self.sess.is_closed() {
            for _ in 0..256 {
                if self.sess.send_packet(pkt).is_err() {
                    break;
                }
                sent += 1;
            }
            self.pump(&mut |_| {});
            if self.sess.wants_write() {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        sent
    }

    /// Pumps for `d`, collecting every packet received.
    fn listen(&mut self, d: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.pump(&mut |p| got.push(p.to_vec()));
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }
}

fn echo(src: IpAddr, dst: IpAddr, seq: u16) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    let payload = [0x5au8; 32];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .icmpv4_echo_request(0x5171, seq)
            .write(&mut out, &payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .icmpv6_echo_request(0x5171, seq)
            .write(&mut out, &payload),
        _ => panic!("mixed families"),
    }
    .expect("building an echo request");
    out
}

/// A UDP datagram with `len` bytes of payload.
fn udp(src: IpAddr, dst: IpAddr, dport: u16, len: usize) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    let payload = &vec![0x42u8; len][..];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .udp(40_000, dport)
            .write(&mut out, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .udp(40_000, dport)
            .write(&mut out, payload),
        _ => panic!("mixed families"),
    }
    .expect("building a datagram");
    out
}

/// Source addresses of the packets in `pkts`.
fn sources(pkts: &[Vec<u8>]) -> Vec<IpAddr> {
    pkts.iter()
        .filter_map(|p| match etherparse::SlicedPacket::from_ip(p).ok()?.net? {
            etherparse::NetSlice::Ipv4(h) => Some(IpAddr::V4(h.header().source_addr())),
            etherparse::NetSlice::Ipv6(h) => Some(IpAddr::V6(h.header().source_addr())),
            etherparse::NetSlice::Arp(_) => None,
        })
        .collect()
}

/// The edge's own nftables counter `name`, if it has one.
fn edge_counter(lab: &Lab, name: &str) -> Option<u64> {
    let out = lab.run(
        Host::Edge,
        &["nft", "list", "counter", "inet", EDGE_TABLE, name],
    );
    out.status
        .success()
        .then(|| nft_counter_in(lab, Host::Edge, EDGE_TABLE, name))
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one lab, four scenarios in order; every violation listed at the end"
)]
fn gateways_are_isolated_at_the_edge() {
    if !require_root("gateways_are_isolated_at_the_edge") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::start(&lab, bin());
    s.start_second_gateway();
    let tunnelled = v4(addr::TUNNELLED_V4);
    // Counters on the wire: what reaches each branch from the other, what
    // reaches the server from a spoofed source, what reaches the
    // metadata addresses or a LAN host unasked.
    watch(
        &lab,
        Host::Client,
        &[
            ("from_branch2", "ip saddr 198.18.2.0/24"),
            ("from_branch2_v6", "ip6 saddr 2001:db8:12::/64"),
            ("unsolicited", "ip saddr 198.51.100.0/24"),
        ],
    );
    watch(
        &lab,
        Host::Client2,
        &[
            ("from_branch1", "ip saddr 192.0.2.0/24"),
            ("from_branch1_v6", "ip6 saddr 2001:db8:1::/64"),
            ("diverted", "ip daddr 192.0.2.0/24"),
            ("diverted_v6", "ip6 daddr 2001:db8:1::/64"),
        ],
    );
    watch(
        &lab,
        Host::Inet,
        &[
            ("probe", &format!("udp dport {PROBE_PORT}")),
            ("metadata", "ip daddr 169.254.0.0/16"),
            ("metadata_v6", "ip6 daddr fd00:ec2::254"),
        ],
    );

    // 1. One branch never reaches the other's LAN through the edge (TUN
    // back into TUN), in either direction, v4 and v6. Each side has sent
    // through its tunnel first, so the edge knows where both LANs are.
    curl_in(&lab, Host::Client, &[&super::url(tunnelled, "/whoami")]);
    curl_in(&lab, Host::Client2, &[&super::url(tunnelled, "/whoami")]);
    curl_in(
        &lab,
        Host::Client,
        &[&super::url(v6(addr::TUNNELLED_V6), "/whoami")],
    );
    curl_in(
        &lab,
        Host::Client2,
        &[&super::url(v6(addr::TUNNELLED_V6), "/whoami")],
    );
    let tick = Duration::from_millis(50);
    let across = [
        ping(&lab, Host::Client2, v4(addr::CLIENT_V4), None, 5, tick),
        ping(&lab, Host::Client2, v6(addr::CLIENT_V6), None, 5, tick),
        ping(&lab, Host::Client, v4(addr::CLIENT2_V4), None, 5, tick),
        ping(&lab, Host::Client, v6(addr::CLIENT2_V6), None, 5, tick),
    ];
    // Every violation is listed (the test fails at the end with all).
    let mut broken: Vec<String> = Vec::new();
    let reached = [
        watched(&lab, Host::Client, "from_branch2"),
        watched(&lab, Host::Client, "from_branch2_v6"),
        watched(&lab, Host::Client2, "from_branch1"),
        watched(&lab, Host::Client2, "from_branch1_v6"),
    ];
    if reached != [0; 4] {
        broken.push(format!(
            "packets from one branch reached the other's LAN through the edge: {reached:?} (2->1 v4, v6, 1->2 v4, v6; pings answered {:?})",
            across.iter().map(|p| p.received).collect::<Vec<_>>(),
        ));
    }

    // 2. The second branch sends from the first branch's client address:
    // dropped at the edge, and not one of the first client's replies goes
    // down the second tunnel while both ping the server.
    add_addr(&lab, Host::Client2, "eth0", "192.0.2.10/32");
    add_addr(&lab, Host::Client2, "eth0", "2001:db8:1::10/128");
    let spoof = format!(
        "import socket,time\n\
         for fam, src, dst in ((socket.AF_INET, '192.0.2.10', '{t4}'), (socket.AF_INET6, '2001:db8:1::10', '{t6}')):\n\
         \ts = socket.socket(fam, socket.SOCK_DGRAM); s.bind((src, 0))\n\
         \tfor _ in range(50):\n\
         \t\ts.sendto(b'spoofed', (dst, {PROBE_PORT})); time.sleep(0.01)\n",
        t4 = addr::TUNNELLED_V4,
        t6 = addr::TUNNELLED_V6
    );
    let spoofed0 = s.edge_metric("sluice_edge_drops_total", "reason=\"spoofed\"");
    let (mine, theirs) = std::thread::scope(|sc| {
        let mine = sc.spawn(|| ping(&lab, Host::Client, tunnelled, None, 100, tick));
        let theirs = sc.spawn(|| {
            ping(
                &lab,
                Host::Client2,
                tunnelled,
                Some(v4(addr::CLIENT_V4)),
                100,
                tick,
            )
        });
        lab.run_ok(Host::Client2, &[sluice_lab::python(), "-c", &spoof]);
        (mine.join().unwrap(), theirs.join().unwrap())
    });
    let spoofed_at_server = watched(&lab, Host::Inet, "probe");
    let diverted =
        watched(&lab, Host::Client2, "diverted") + watched(&lab, Host::Client2, "diverted_v6");
    let spoofed = s.edge_metric("sluice_edge_drops_total", "reason=\"spoofed\"") - spoofed0;
    eprintln!(
        "spoofing: first client's pings {}; spoofed pings {}; spoofed datagrams at the server {spoofed_at_server}; replies diverted to the second branch {diverted}; counted spoofed at the edge {spoofed}",
        mine.summary(),
        theirs.summary()
    );
    if spoofed_at_server > 0 {
        broken.push(format!(
            "{spoofed_at_server} datagrams with the first branch's source, sent by the second, reached the server"
        ));
    }
    if diverted > 0 {
        broken.push(format!(
            "{diverted} replies for the first branch's client went down the second branch's tunnel"
        ));
    }
    if mine.received < 95 {
        broken.push(format!(
            "the first client lost replies while the second branch spoofed it: {}",
            mine.summary()
        ));
    }
    if spoofed < 150 {
        broken.push(format!(
            "{spoofed} spoofed packets counted at the edge (200 sent)"
        ));
    }

    // 3. A compromised branch aims at the edge host, the cloud metadata
    // service and the first branch's LAN directly.
    let conf = s.conf_dir().to_path_buf();
    let probe0 = watched(&lab, Host::Inet, "probe");
    let lan0 = watched(&lab, Host::Client, "from_branch2");
    let answers = in_netns(&lab, Host::Gw2, || {
        let mut g = HostileGateway::connect(&conf, "branch-2");
        let me4 = v4(Ipv4Addr::new(198, 18, 2, 77));
        let me6 = v6(Ipv6Addr::new(0x2001, 0xdb8, 0x12, 0, 0, 0, 0, 0x77));
        let metadata4 = v4(Ipv4Addr::new(169, 254, 169, 254));
        let metadata6 = v6("fd00:ec2::254".parse().unwrap());
        for seq in 0..5 {
            g.send(&udp(me4, tunnelled, PROBE_PORT, 17));
            g.send(&echo(me4, metadata4, seq));
            g.send(&udp(me4, metadata4, 80, 17));
            g.send(&echo(me6, metadata6, seq));
            g.send(&echo(me4, v4(addr::EDGE_WAN_V4), seq));
            g.send(&echo(me6, v6(addr::EDGE_WAN_V6), seq));
            g.send(&echo(me4, v4(addr::CLIENT_V4), seq));
            g.pump(&mut |_| {});
        }
        sources(&g.listen(Duration::from_secs(2)))
    });
    let reached_server = watched(&lab, Host::Inet, "probe") - probe0;
    assert!(
        reached_server >= 5,
        "the hostile gateway's own traffic did not get through ({reached_server}): the test is broken\n{}",
        logs(&lab)
    );
    let metadata = watched(&lab, Host::Inet, "metadata") + watched(&lab, Host::Inet, "metadata_v6");
    if metadata > 0 {
        broken.push(format!(
            "{metadata} packets from a tunnel to the metadata addresses left the edge"
        ));
    }
    let from_edge = answers
        .iter()
        .filter(|a| **a == v4(addr::EDGE_WAN_V4) || **a == v6(addr::EDGE_WAN_V6))
        .count();
    if from_edge > 0 {
        broken.push(format!(
            "the edge host answered {from_edge} packets from a tunnel"
        ));
    }
    let lan = watched(&lab, Host::Client, "from_branch2") - lan0;
    if lan > 0 {
        broken.push(format!(
            "{lan} packets from a compromised branch reached the first branch's LAN"
        ));
    }

    // 4. Nothing enters a tunnel unasked: a host on the edge's WAN that
    // routes the first branch's LAN via the edge gets nothing through.
    lab.run_ok(
        Host::Inet,
        &["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.5"],
    );
    let unasked = ping(&lab, Host::Inet, v4(addr::CLIENT_V4), None, 5, tick);
    let unsolicited = watched(&lab, Host::Client, "unsolicited");
    if unsolicited > 0 {
        broken.push(format!(
            "{unsolicited} packets of connections from outside were forwarded into a tunnel ({} pings answered)",
            unasked.received
        ));
    }

    // The edge counted each refusal: in user space the packets to another
    // branch and to reserved destinations (they never reach the kernel;
    // the nftables rules `tun_to_tun` and `tun_to_reserved` are the
    // backstop), in its nftables table those to the edge host and into a
    // tunnel unasked.
    let counters: Vec<(&str, Option<u64>)> = [
        (
            "drops to_gateway",
            Some(s.edge_metric("sluice_edge_drops_total", "reason=\"to_gateway\"")),
        ),
        (
            "drops reserved",
            Some(s.edge_metric("sluice_edge_drops_total", "reason=\"reserved\"")),
        ),
        ("nft tun_to_host", edge_counter(&lab, "tun_to_host")),
        ("nft into_tun_new", edge_counter(&lab, "into_tun_new")),
    ]
    .into_iter()
    .collect();
    eprintln!(
        "edge counters: {counters:?}; nft backstops tun_to_tun {:?} tun_to_reserved {:?}",
        edge_counter(&lab, "tun_to_tun"),
        edge_counter(&lab, "tun_to_reserved")
    );
    for (name, n) in &counters {
        if !n.is_some_and(|n| n > 0) {
            broken.push(format!("edge counter {name}: {n:?}"));
        }
    }
    assert!(
        broken.is_empty(),
        "gateways are not isolated at the edge:\n- {}\n{}",
        broken.join("\n- "),
        logs(&lab)
    );
}

/// Starts the edge under `prlimit --nofile=<n>:<n>` (the descriptor limit a
/// service gets by default is 1,024), without `CAP_SYS_RESOURCE` (so the
/// edge cannot raise it past the hard limit: it must fit its caps in it).
fn start_edge_with_nofile(lab: &Lab, s: &mut Sluice<'_>, n: u32) {
    let cfg = s
        .conf_dir()
        .join("edge.toml")
        .to_string_lossy()
        .into_owned();
    let b = bin().to_string_lossy().into_owned();
    let lim = format!("--nofile={n}:{n}");
    let id = lab.spawn_env(
        Host::Edge,
        "edge",
        &[
            "setpriv",
            "--bounding-set=-sys_resource",
            "prlimit",
            &lim,
            &b,
            "edge",
            "--config",
            &cfg,
        ],
        &[("RUST_LOG", "info")],
    );
    let addr: SocketAddr = EDGE_ADDR.parse().unwrap();
    lab.wait_tcp(Host::Edge, addr, Duration::from_secs(10));
    s.edge = Some(id);
}

/// A `ClientHello` as a gateway sends it (with `branch-1`'s configuration).
fn client_hello(conf: &Path) -> Vec<u8> {
    let tls = pki::client_config(
        &conf.join("ca.pem"),
        &conf.join("branch-1.pem"),
        &conf.join("branch-1.key"),
    )
    .expect("client TLS config");
    let mut c = rustls::ClientConnection::new(tls, pki::server_name("edge.sluice.test").unwrap())
        .expect("client");
    let mut out = Vec::new();
    c.write_tls(&mut out).expect("ClientHello");
    out
}

/// Cuts the gateway's tunnel in `inet` (its packets to the edge's port are
/// answered with a TCP reset) until the gateway says it is down, then lets
/// it through again; returns how long the gateway took to come back up.
fn cut_and_reconnect(lab: &Lab, s: &Sluice<'_>, within: Duration) -> Result<Duration, String> {
    let rules = "table inet sluice_cut {\n\tchain forward {\n\t\ttype filter hook forward priority -10; policy accept;\n\t\tip saddr 198.51.100.1 ip daddr 198.51.100.5 tcp dport 4443 reject with tcp reset\n\t}\n}\n";
    let path = lab.dir().join("cut.nft");
    std::fs::write(&path, rules).unwrap();
    lab.run_ok(Host::Inet, &["nft", "-f", &path.to_string_lossy()]);
    let up = || {
        let m = s.gateway_metrics();
        let ups = sluice_lab::deploy::samples(&m, "sluice_gateway_tunnel_up");
        !ups.is_empty() && ups.iter().all(|&(_, v)| v == 1)
    };
    let t = Instant::now();
    while up() {
        if t.elapsed() > Duration::from_secs(15) {
            lab.run_ok(
                Host::Inet,
                &["nft", "delete", "table", "inet", "sluice_cut"],
            );
            return Err("the gateway never noticed the cut".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.run_ok(
        Host::Inet,
        &["nft", "delete", "table", "inet", "sluice_cut"],
    );
    let t = Instant::now();
    while !up() {
        if t.elapsed() > within {
            return Err(format!("the gateway did not reconnect within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(t.elapsed())
}

#[test]
fn edge_survives_unauthenticated_floods() {
    if !require_root("edge_survives_unauthenticated_floods") {
        return;
    }
    let lab = Lab::new_exclusive();
    let sources = add_flood_sources(&lab, 16);
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    spawn_iperf_server(&lab, v4(addr::TUNNELLED_V4), IPERF_PORT);
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    start_edge_with_nofile(&lab, &mut s, 1024);
    s.start_gateway();
    let pid = lab.pid(s.edge.expect("edge"));
    let tunnelled = v4(addr::TUNNELLED_V4);
    let rss0 = rss_mib(pid);
    let base = iperf_tcp(&lab, Host::Client, tunnelled, IPERF_PORT, 5)
        .unwrap_or_else(|e| panic!("unloaded stream: {e}\n{}", logs(&lab)));
    let flood = Flood {
        target_v4: EDGE_ADDR.parse().unwrap(),
        target_v6: SocketAddr::new(v6(addr::EDGE_WAN_V6), 4443),
        sources,
        slow: 2000,
        trickle: Duration::from_secs(2),
        hello_threads: 2,
        client_hello: client_hello(s.conf_dir()),
        duration: Duration::from_secs(45),
    };
    // Beside it, a few slow connections from a quiet prefix of their own:
    // never the busiest, they are not evicted, so the handshake deadline
    // is what ends them (one byte every 2 s would reset an idle timer).
    add_addr(&lab, Host::Inet, "srv0", "2001:db8:77::1/128");
    let slowpoke = Flood {
        sources: vec![v6("2001:db8:77::1".parse().unwrap())],
        slow: 8,
        hello_threads: 0,
        duration: Duration::from_secs(30),
        ..flood.clone()
    };
    let (report, slow, loaded, reconnect, metrics_ok, rss_peak, fds_peak) =
        std::thread::scope(|sc| {
            let f = sc.spawn(|| flood.run(&lab));
            let quiet = sc.spawn(|| slowpoke.run(&lab));
            std::thread::sleep(Duration::from_secs(8));
            let mut rss_peak = rss_mib(pid);
            let mut fds_peak = open_fds(pid);
            let loaded = iperf_tcp(&lab, Host::Client, tunnelled, IPERF_PORT, 5);
            rss_peak = rss_peak.max(rss_mib(pid));
            fds_peak = fds_peak.max(open_fds(pid));
            let metrics_ok = !s.edge_metrics().is_empty();
            let reconnect = cut_and_reconnect(&lab, &s, Duration::from_secs(20));
            rss_peak = rss_peak.max(rss_mib(pid));
            fds_peak = fds_peak.max(open_fds(pid));
            while !f.is_finished() {
                std::thread::sleep(Duration::from_millis(500));
                rss_peak = rss_peak.max(rss_mib(pid));
                fds_peak = fds_peak.max(open_fds(pid));
            }
            (
                f.join().unwrap(),
                quiet.join().unwrap(),
                loaded,
                reconnect,
                metrics_ok,
                rss_peak,
                fds_peak,
            )
        });
    let rss_after = rss_mib(pid);
    eprintln!(
        "flood: {report:?}\nslow connections of a quiet prefix: {slow:?}\nthroughput: unloaded {base:.0} Mbit/s, during the flood {loaded:?} Mbit/s\n\
         reconnect during the flood: {reconnect:?}\nedge RSS: before {rss0:.1} MiB, peak {rss_peak:.1} MiB, after {rss_after:.1} MiB; open descriptors peak {fds_peak}\n\
         metrics answered during the flood: {metrics_ok}"
    );
    assert!(
        lab.is_running(s.edge.unwrap()),
        "the edge died under the flood\n{}",
        lab.log("edge")
    );
    // Every check is made and the broken ones reported together (CI keeps
    // only the first lines of a failure).
    let mut broken = Vec::new();
    match &loaded {
        // The flood's generator shares the two cores with the edge, the
        // gateway and iperf3: a quarter of the unloaded rate is the floor
        // (locally 0.62-0.70 of it); a starved edge gives next to nothing.
        Ok(l) if *l >= base / 4.0 => {}
        Ok(l) => broken.push(format!(
            "throughput during the flood {l:.0} Mbit/s < a quarter of unloaded {base:.0} Mbit/s"
        )),
        Err(e) => broken.push(format!("no stream during the flood: {e}")),
    }
    if !metrics_ok {
        broken.push("the edge's metrics did not answer during the flood".into());
    }
    if !(slow.slow_closed >= 8 && slow.longest_held_secs < 20.0) {
        broken.push(format!(
            "slow handshakes not ended by their deadline (10 s): {slow:?}"
        ));
    }
    if let Err(e) = &reconnect {
        broken.push(format!("gateway could not reconnect during the flood: {e}"));
    }
    if report.longest_held_secs >= 30.0 {
        broken.push(format!(
            "a connection that never completed its handshake was held {:.0} s",
            report.longest_held_secs
        ));
    }
    if rss_peak - rss0 >= 64.0 {
        broken.push(format!(
            "edge memory grew by {:.0} MiB under the flood",
            rss_peak - rss0
        ));
    }
    if fds_peak >= 1024 {
        broken.push(format!("{fds_peak} descriptors open"));
    }
    let log = lab.log("edge");
    if !log.contains("descriptor limit 1024") {
        broken.push("the edge did not fit its caps to its descriptor limit".into());
    }
    assert!(
        broken.is_empty(),
        "under the flood:\n- {}\n{}",
        broken.join("\n- "),
        logs(&lab)
    );
    // After the flood: the gateway is (still or again) up and streams.
    s.wait_tunnel(true, Duration::from_secs(30));
    curl_in(&lab, Host::Client, &[&super::url(tunnelled, "/whoami")]);
    let refused = s.edge_metric("sluice_edge_handshakes_refused_total", "");
    let timed_out = s.edge_metric("sluice_edge_handshakes_timed_out_total", "");
    eprintln!("edge: handshakes refused {refused}, timed out {timed_out}");
    assert!(
        refused > 0 && timed_out >= 8,
        "refused {refused}, timed out {timed_out}\n{}",
        s.edge_metrics()
    );
}

#[test]
fn one_gateway_cannot_starve_another() {
    if !require_root("one_gateway_cannot_starve_another") {
        return;
    }
    let lab = Lab::new_exclusive();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    spawn_iperf_server(&lab, v4(addr::TUNNELLED_V4), IPERF_PORT);
    let mut s = Sluice::start(&lab, bin());
    s.start_second_gateway();
    let tunnelled = v4(addr::TUNNELLED_V4);
    let tick = Duration::from_millis(20);
    let base: Pings = ping(&lab, Host::Client2, tunnelled, None, 200, tick);
    // 1. The first branch's client sends UDP as fast as iperf3 can.
    let (report, iperf_loaded) = std::thread::scope(|sc| {
        let f = sc.spawn(|| iperf_udp(&lab, Host::Client, tunnelled, IPERF_PORT, "0", 10));
        std::thread::sleep(Duration::from_secs(2));
        let loaded = ping(&lab, Host::Client2, tunnelled, None, 300, tick);
        (f.join().unwrap(), loaded)
    });
    let offered_gbps = serde_json::from_str::<serde_json::Value>(&report)
        .ok()
        .and_then(|v| v.pointer("/end/sum/bits_per_second")?.as_f64())
        .unwrap_or(0.0)
        / 1e9;
    // 2. A compromised first branch writes records into its tunnel as fast
    // as its socket takes them (faster than any edge forwards).
    let conf = s.conf_dir().to_path_buf();
    let (blasted, blast_loaded) = std::thread::scope(|sc| {
        let f = sc.spawn(|| {
            in_netns(&lab, Host::Gw, || {
                let mut g = HostileGateway::connect(&conf, "branch-1");
                let pkt = udp(
                    v4(Ipv4Addr::new(192, 0, 2, 77)),
                    tunnelled,
                    PROBE_PORT,
                    1200,
                );
                g.blast(&pkt, Duration::from_secs(10))
            })
        });
        std::thread::sleep(Duration::from_secs(2));
        let loaded = ping(&lab, Host::Client2, tunnelled, None, 300, tick);
        (f.join().unwrap(), loaded)
    });
    eprintln!(
        "second branch's pings: unloaded {}\n  while the first branch's client floods with iperf3 ({offered_gbps:.2} Gbit/s offered): {}\n  while a compromised first branch blasts its tunnel ({blasted} packets in 10 s): {}",
        base.summary(),
        iperf_loaded.summary(),
        blast_loaded.summary()
    );
    assert!(
        base.loss_pct() <= 5.0,
        "pings lost without load: {}",
        base.summary()
    );
    for (what, p) in [("iperf3", &iperf_loaded), ("blast", &blast_loaded)] {
        assert!(
            p.loss_pct() <= 20.0 && p.rtt(99) <= 500.0_f64.max(base.rtt(99) * 20.0),
            "the flooding branch ({what}) starved the other: {}\n{}",
            p.summary(),
            logs(&lab)
        );
    }
}

/// An ICMP or `ICMPv6` error from `src` to `dst` quoting `quoted`.
fn icmp_error(src: IpAddr, dst: IpAddr, quoted: &[u8]) -> Vec<u8> {
    use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::Port,
            ))
            .write(&mut out, quoted),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut out, quoted),
        _ => panic!("mixed families"),
    }
    .expect("building an ICMP error");
    out
}

/// A TCP reset from `src` to `dst` of no connection.
fn tcp_reset(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .tcp(41_000, 9, 12345, 0)
            .rst()
            .write(&mut out, &[]),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .tcp(41_000, 9, 12345, 0)
            .rst()
            .write(&mut out, &[]),
        _ => panic!("mixed families"),
    }
    .expect("building a reset");
    out
}

/// What a compromised branch (or any host on its LAN: the gateway
/// tunnels what its LAN sends) may still try once sources are checked:
/// ICMP errors about another branch's connections (conntrack relates an
/// error to the connection it quotes, whoever sends it), packets conntrack
/// calls invalid (the kernel forwards them without source NAT, with the
/// branch's own LAN address), and IPv6 destinations that carry a reserved
/// IPv4 address for a NAT64 translator on the edge's network. Watched on
/// the server side of the edge.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one lab, three kinds of hostile packets; every violation listed at the end"
)]
fn hostile_branch_packets_stop_at_the_edge() {
    if !require_root("hostile_branch_packets_stop_at_the_edge") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::start(&lab, bin());
    s.start_second_gateway();
    let (t4, t6) = (v4(addr::TUNNELLED_V4), v6(addr::TUNNELLED_V6));
    let edge4 = addr::EDGE_WAN_V4;
    let edge6 = addr::EDGE_WAN_V6;
    watch(
        &lab,
        Host::Inet,
        &[
            (
                "errors",
                &format!("ip saddr {edge4} icmp type destination-unreachable"),
            ),
            (
                "errors_v6",
                &format!("ip6 saddr {edge6} icmpv6 type packet-too-big"),
            ),
            ("lan_sources", "ip saddr { 192.0.2.0/24, 198.18.2.0/24 }"),
            (
                "lan_sources_v6",
                "ip6 saddr { 2001:db8:1::/64, 2001:db8:12::/64 }",
            ),
            ("nat64_metadata", "ip6 daddr 64:ff9b::a9fe:a9fe"),
            ("nat64_server", "ip6 daddr 64:ff9b::cb00:710a"),
        ],
    );
    // The second branch's client has a UDP flow to the server (v4, v6)
    // from a port the attacker knows.
    let flows = format!(
        "import socket\n\
         for fam, dst in ((socket.AF_INET, '{t4}'), (socket.AF_INET6, '{t6}')):\n\
         \ts = socket.socket(fam, socket.SOCK_DGRAM); s.bind(('', 40000)); s.settimeout(2)\n\
         \ts.sendto(b'hello', (dst, {UDP})); s.recvfrom(100)\n"
    );
    lab.run_ok(Host::Client2, &[sluice_lab::python(), "-c", &flows]);
    let before = |name| watched(&lab, Host::Inet, name);
    let (errors0, errors6_0) = (before("errors"), before("errors_v6"));
    let spoofed0 = s.edge_metric("sluice_edge_drops_total", "reason=\"spoofed\"");
    let conf = s.conf_dir().to_path_buf();
    in_netns(&lab, Host::Gw, || {
        let mut g = HostileGateway::connect(&conf, "branch-1");
        let me4 = v4(Ipv4Addr::new(192, 0, 2, 77));
        let me6 = v6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x77));
        let client2 = (v4(addr::CLIENT2_V4), v6(addr::CLIENT2_V6));
        // The server's datagrams as the second branch's client got them.
        let (q4, q6) = (
            udp_ports(t4, client2.0, UDP, 40000),
            udp_ports(t6, client2.1, UDP, 40000),
        );
        for _ in 0..5 {
            // Port unreachable and packet too big for the other branch's
            // flows.
            g.send(&icmp_error(me4, t4, &q4));
            g.send(&icmp_error(me6, t6, &q6));
            // Invalid to conntrack: an error about no connection, resets
            // of no connection.
            g.send(&icmp_error(me4, t4, &udp_ports(t4, me4, UDP, 40001)));
            g.send(&tcp_reset(me4, t4));
            g.send(&tcp_reset(me6, t6));
            // Through NAT64: the metadata service, and the server.
            g.send(&udp(me6, v6("64:ff9b::a9fe:a9fe".parse().unwrap()), 80, 17));
            g.send(&udp(me6, v6("64:ff9b::cb00:710a".parse().unwrap()), 80, 17));
            g.pump(&mut |_| {});
        }
        let _ = g.listen(Duration::from_secs(2));
    });
    let mut broken = Vec::new();
    let errors = before("errors") - errors0 + before("errors_v6") - errors6_0;
    if errors > 0 {
        broken.push(format!(
            "{errors} ICMP errors about the second branch's flows, sent by the first, reached the server"
        ));
    }
    let leaked = before("lan_sources") + before("lan_sources_v6");
    if leaked > 0 {
        broken.push(format!(
            "{leaked} packets left the edge with a branch's LAN source (no source NAT)"
        ));
    }
    let nat64 = before("nat64_metadata");
    if nat64 > 0 {
        broken.push(format!(
            "{nat64} packets to 64:ff9b::169.254.169.254 (metadata through NAT64) left the edge"
        ));
    }
    eprintln!(
        "watched at the server: {:?}; edge drops: {}",
        [
            "errors",
            "errors_v6",
            "lan_sources",
            "lan_sources_v6",
            "nat64_metadata",
            "nat64_server"
        ]
        .map(|n| (n, before(n))),
        s.edge_metrics()
            .lines()
            .filter(|l| l.starts_with("sluice_edge_drops_total")
                || l.starts_with("sluice_edge_to_kernel"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(
        before("nat64_server") > 0,
        "the control packets to 64:ff9b::203.0.113.10 did not leave the edge: the test is broken\n{}",
        logs(&lab)
    );
    let spoofed = s.edge_metric("sluice_edge_drops_total", "reason=\"spoofed\"") - spoofed0;
    eprintln!(
        "errors about another branch's flows at the server {errors}, LAN sources at the server {leaked}, NAT64 metadata {nat64}; edge: spoofed {spoofed}, nft tun_invalid {:?}",
        edge_counter(&lab, "tun_invalid")
    );
    if spoofed < 10 {
        broken.push(format!(
            "{spoofed} errors about another branch's flows counted as spoofed at the edge (10 sent)"
        ));
    }
    assert!(
        broken.is_empty(),
        "hostile packets got through the edge:\n- {}\n{}",
        broken.join("\n- "),
        logs(&lab)
    );
}

/// A UDP datagram `src:sport -> dst:dport` with a few bytes.
fn udp_ports(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .udp(sport, dport)
            .write(&mut out, b"hello"),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .udp(sport, dport)
            .write(&mut out, b"hello"),
        _ => panic!("mixed families"),
    }
    .expect("building a datagram");
    out
}

/// A configuration `sluice check` accepts starts: a gateway's prefixes
/// may nest and `edge.management` may repeat a built-in reserved range
/// (the metadata address inside link-local) or nest in itself; the
/// nftables sets take them merged. The edge then forwards as usual.
#[test]
fn edge_starts_with_nested_prefixes_and_management() {
    if !require_root("edge_starts_with_nested_prefixes_and_management") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    s.edit_edge(|t| {
        t.replacen(
            "metrics = \"127.0.0.1:9478\"",
            "metrics = \"127.0.0.1:9478\"\nmanagement = [\"169.254.169.254/32\", \"198.51.100.128/25\", \"198.51.100.192/26\"]",
            1,
        )
        .replacen(
            "prefixes = [\"192.0.2.0/24\",",
            "prefixes = [\"192.0.2.0/24\", \"192.0.2.0/25\",",
            1,
        )
    });
    let conf = s.conf_dir().join("edge.toml");
    let check = lab.run(
        Host::Edge,
        &[
            &bin().to_string_lossy(),
            "check",
            "--role",
            "edge",
            "--config",
            &conf.to_string_lossy(),
        ],
    );
    assert!(
        check.status.success(),
        "sluice check refused the file: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    s.start_edge();
    s.start_gateway();
    let body = curl_in(
        &lab,
        Host::Client,
        &[&super::url(v4(addr::TUNNELLED_V4), "/whoami")],
    );
    assert!(!body.is_empty(), "no answer through the tunnel");
    let sets = lab.run(
        Host::Edge,
        &["nft", "list", "set", "inet", EDGE_TABLE, "reserved4"],
    );
    let sets = String::from_utf8_lossy(&sets.stdout);
    assert!(
        sets.contains("169.254.0.0/16") && sets.contains("198.51.100.128/25"),
        "{sets}"
    );
}

/// How long the gateway takes to report its tunnel up again, at most
/// `within`.
fn time_to_reconnect(s: &Sluice<'_>, within: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        let ups = sluice_lab::deploy::samples(&s.gateway_metrics(), "sluice_gateway_tunnel_up");
        if !ups.is_empty() && ups.iter().all(|&(_, v)| v == 1) {
            return Ok(t.elapsed());
        }
        if t.elapsed() > within {
            return Err(format!("the gateway did not reconnect within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The operator's view of an edge that dies or restarts: killed, it
/// leaves its nftables table (the filter stays) and the next start
/// replaces it in one transaction; stopped, it says goodbye and exits 0;
/// either way the gateway is back promptly and traffic flows. An edge
/// whose TUN device is deleted under it cannot forward anything: it must
/// exit non-zero (so its service manager restarts it), not run on with
/// its tunnels up and every reply lost.
#[test]
fn edge_restarts_cleanly_and_exits_nonzero_on_a_lost_tun() {
    if !require_root("edge_restarts_cleanly_and_exits_nonzero_on_a_lost_tun") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::start(&lab, bin());
    let url = super::url(v4(addr::TUNNELLED_V4), "/whoami");
    let mut broken = Vec::new();
    let table_present = || {
        lab.run(Host::Edge, &["nft", "list", "table", "inet", EDGE_TABLE])
            .status
            .success()
    };
    // 1. Killed (SIGKILL): the table stays; a new edge replaces it.
    let id = s.edge.take().expect("edge");
    lab.signal(id, libc::SIGKILL);
    let _ = lab.wait_exit(id, Duration::from_secs(5));
    if !table_present() {
        broken.push("the nftables table went with a killed edge".to_string());
    }
    s.start_edge();
    let killed = time_to_reconnect(&s, Duration::from_secs(30));
    let handles = lab.run_ok(
        Host::Edge,
        &["nft", "-a", "list", "chain", "inet", EDGE_TABLE, "forward"],
    );
    if handles.matches("drop").count() < 4 {
        broken.push(format!(
            "the restarted edge's forward chain is not whole:\n{handles}"
        ));
    }
    curl_in(&lab, Host::Client, &[&url]);
    // 2. Stopped (SIGTERM): exit 0, the table goes (the TUN device went
    // with the process: nothing can be forwarded), the gateway is back
    // as soon as the edge is.
    let id = s.edge.take().expect("edge");
    let status = lab.stop(id);
    if !status.success() {
        broken.push(format!("a stopped edge exited with {status}"));
    }
    s.start_edge();
    let stopped = time_to_reconnect(&s, Duration::from_secs(30));
    curl_in(&lab, Host::Client, &[&url]);
    eprintln!(
        "gateway back after the edge was killed: {killed:?}; after it was stopped: {stopped:?}"
    );
    for (what, r) in [("killed", &killed), ("stopped", &stopped)] {
        match r {
            Ok(d) if *d <= Duration::from_secs(15) => {}
            other => broken.push(format!("after the edge was {what}: {other:?}")),
        }
    }
    // 3. The TUN device is deleted under the running edge.
    let id = s.edge.expect("edge");
    lab.run_ok(Host::Edge, &["ip", "link", "del", "sluice0"]);
    let t = Instant::now();
    while lab.is_running(id) && t.elapsed() < Duration::from_secs(10) {
        // Traffic makes the loss show (a reply would need the TUN).
        let _ = lab.run_timeout(
            Host::Client,
            &["curl", "-s", "-m", "1", &url],
            Duration::from_secs(3),
        );
    }
    if lab.is_running(id) {
        broken.push(format!(
            "the edge ran on for {:?} after its TUN device was deleted",
            t.elapsed()
        ));
        lab.stop(id);
    } else {
        let status = lab.wait_exit(id, Duration::from_secs(1));
        eprintln!(
            "edge without its TUN device: exited after {:?} with {status}",
            t.elapsed()
        );
        if status.success() {
            broken.push("the edge exited 0 after losing its TUN device".to_string());
        }
    }
    assert!(
        broken.is_empty(),
        "the edge did not die or restart cleanly:\n- {}\n{}",
        broken.join("\n- "),
        logs(&lab)
    );
}

/// A gateway's share of the edge does not grow with its tunnel count: a
/// compromised branch that opens 16 tunnels (its `max_tunnels` allows 64)
/// and writes into all of them as fast as they take it leaves another
/// branch's TCP stream a part of its unloaded throughput. With a read
/// budget per connection each tunnel was served as much as a whole other
/// gateway: 14 of 1,076 Mbit/s were left (one hostile tunnel left 522 of
/// 1,610); with the budget shared by a gateway's tunnels, 220 to 416 of
/// 1,651 to 1,812. The bound (a twentieth) is generous for a shared
/// machine and still four times what was left before.
#[test]
fn many_tunnels_of_one_gateway_do_not_starve_another() {
    const TUNNELS: usize = 16;
    if !require_root("many_tunnels_of_one_gateway_do_not_starve_another") {
        return;
    }
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    spawn_iperf_server(&lab, v4(addr::TUNNELLED_V4), IPERF_PORT);
    let mut s = Sluice::start(&lab, bin());
    s.start_second_gateway();
    let tunnelled = v4(addr::TUNNELLED_V4);
    let base = iperf_tcp(&lab, Host::Client2, tunnelled, IPERF_PORT, 5)
        .unwrap_or_else(|e| panic!("unloaded stream: {e}\n{}", logs(&lab)));
    let conf = s.conf_dir().to_path_buf();
    let (blasted, loaded) = std::thread::scope(|sc| {
        let f = sc.spawn(|| {
            in_netns(&lab, Host::Gw, || {
                let mut gs: Vec<HostileGateway> = (0..TUNNELS)
                    .map(|_| HostileGateway::connect(&conf, "branch-1"))
                    .collect();
                let pkt = udp(
                    v4(Ipv4Addr::new(192, 0, 2, 77)),
                    tunnelled,
                    PROBE_PORT,
                    1200,
                );
                let end = Instant::now() + Duration::from_secs(14);
                let mut sent = 0u64;
                while Instant::now() < end {
                    for g in &mut gs {
                        for _ in 0..64 {
                            if g.sess.send_packet(&pkt).is_err() {
                                break;
                            }
                            sent += 1;
                        }
                        g.pump(&mut |_| {});
                    }
                }
                sent
            })
        });
        std::thread::sleep(Duration::from_secs(3));
        let loaded = iperf_tcp(&lab, Host::Client2, tunnelled, IPERF_PORT, 5);
        (f.join().unwrap(), loaded)
    });
    let loaded = loaded.unwrap_or_else(|e| panic!("no stream under load: {e}\n{}", logs(&lab)));
    let forwarded = s.edge_metric("sluice_edge_gateway_packets_total", "gateway=\"branch-1\"");
    eprintln!(
        "second branch's TCP stream: unloaded {base:.0} Mbit/s, while the first branch blasts {TUNNELS} tunnels ({blasted} packets written, {forwarded} forwarded) {loaded:.0} Mbit/s"
    );
    assert!(
        loaded >= base / 20.0,
        "{TUNNELS} tunnels of one gateway starved another: {loaded:.0} Mbit/s of {base:.0} unloaded\n{}",
        logs(&lab)
    );
}
