//! The edge under hostile peers, in a [`Lab`]: two branches on one edge
//! (`client`/`gw` and `client2`/`gw2`), counters that watch the wire in
//! any namespace, an unauthenticated flood from `inet`, ping and iperf3
//! figures, and the edge's memory.
//!
//! Everything stays inside the lab: threads that open sockets in a lab
//! namespace ([`in_netns`]) end before the lab is dropped, every load is
//! bounded in count and time, and the extra addresses the flood comes from
//! are documentation ranges ([`FLOOD_V4`], [`FLOOD_V6_BASE`]).
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use crate::{Host, Lab, addr::ifname, netns, nft};

/// Table (family `inet`) of the counters [`watch`] loads into a namespace.
pub const WATCH_TABLE: &str = "sluice_watch";

/// The IPv4 addresses the flood comes from: `203.0.113.200..=203.0.113.203`
/// on `inet`'s server interface (one /24, so the edge's per-prefix cap
/// applies to all of them together).
pub const FLOOD_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(203, 0, 113, 200),
    Ipv4Addr::new(203, 0, 113, 201),
    Ipv4Addr::new(203, 0, 113, 202),
    Ipv4Addr::new(203, 0, 113, 203),
];
/// The flood's IPv6 sources are `2001:db8:66:<n>::1`, one per /64 (so the
/// edge's global cap is reached before any per-prefix cap).
pub const FLOOD_V6_BASE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x66, 0, 0, 0, 0, 1);

/// Runs `f` on a thread that has entered `h`'s network namespace: every
/// socket it opens lives there. The thread ends with `f`.
///
/// # Panics
/// If the namespace cannot be entered, or `f` panics.
pub fn in_netns<T: Send>(lab: &Lab, h: Host, f: impl FnOnce() -> T + Send) -> T {
    let ns = lab.ns(h).to_owned();
    std::thread::scope(|s| {
        s.spawn(move || {
            netns::enter(&ns).unwrap_or_else(|e| panic!("sluice-lab: entering {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Loads counters into `h`'s namespace: table `inet` [`WATCH_TABLE`], one
/// named counter per `(name, match)`, counting packets that ARRIVE
/// (prerouting, priority raw: before routing, so dropped packets count
/// too). Replaces an earlier watch table in that namespace.
///
/// # Panics
/// If nft refuses the ruleset.
pub fn watch(lab: &Lab, h: Host, rules: &[(&str, &str)]) {
    use std::fmt::Write as _;
    let mut s = format!("table inet {WATCH_TABLE} {{}}\ndelete table inet {WATCH_TABLE}\n");
    let _ = writeln!(s, "table inet {WATCH_TABLE} {{");
    for (name, _) in rules {
        let _ = writeln!(s, "\tcounter {name} {{ }}");
    }
    s.push_str("\tchain watch {\n\t\ttype filter hook prerouting priority raw; policy accept;\n");
    for (name, expr) in rules {
        let _ = writeln!(s, "\t\t{expr} counter name \"{name}\"");
    }
    s.push_str("\t}\n}\n");
    let path = lab.dir().join(format!("watch-{}.nft", h.name()));
    std::fs::write(&path, s).expect("writing a watch ruleset");
    lab.run_ok(h, &["nft", "-f", &path.to_string_lossy()]);
}

/// Packets counted so far by the [`watch`] counter `name` in `h`.
///
/// # Panics
/// If there is no such counter.
pub fn watched(lab: &Lab, h: Host, name: &str) -> u64 {
    nft_counter_in(lab, h, WATCH_TABLE, name)
}

/// Packets counted by the named nftables counter `name` of table `inet
/// table` in `h`.
///
/// # Panics
/// If there is no such counter (the message has nft's listing).
pub fn nft_counter_in(lab: &Lab, h: Host, table: &str, name: &str) -> u64 {
    let out = lab.run(h, &["nft", "list", "counter", "inet", table, name]);
    let text = String::from_utf8_lossy(&out.stdout);
    nft::parse_counter(&text).map_or_else(
        || {
            panic!(
                "sluice-lab: no counter {name} in table inet {table} in {h}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        },
        |c| c.0,
    )
}

/// Adds `cidr` to `dev` in `h` (IPv6 without duplicate detection).
///
/// # Panics
/// If `ip` refuses.
pub fn add_addr(lab: &Lab, h: Host, dev: &str, cidr: &str) {
    let mut argv = vec!["ip", "addr", "add", cidr, "dev", dev];
    if cidr.contains(':') {
        argv.push("nodad");
    }
    lab.run_ok(h, &argv);
}

/// Puts the flood's source addresses ([`FLOOD_V4`], `v6_prefixes` /64s
/// from [`FLOOD_V6_BASE`]) on `inet`'s server interface; returns them.
pub fn add_flood_sources(lab: &Lab, v6_prefixes: u16) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in FLOOD_V4 {
        add_addr(lab, Host::Inet, ifname::INET_SERVERS, &format!("{a}/32"));
        out.push(IpAddr::V4(a));
    }
    for n in 0..v6_prefixes {
        let mut seg = FLOOD_V6_BASE.segments();
        seg[3] = n;
        let a = Ipv6Addr::from(seg);
        add_addr(lab, Host::Inet, ifname::INET_SERVERS, &format!("{a}/128"));
        out.push(IpAddr::V6(a));
    }
    out
}

/// What one ping run saw.
#[derive(Clone, Debug, Default)]
pub struct Pings {
    /// Echo requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Round-trip times of the replies, in ms, sorted.
    pub rtts: Vec<f64>,
}

impl Pings {
    /// Percent of requests without a reply.
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        #[allow(clippy::cast_precision_loss, reason = "counts of pings")]
        let (lost, sent) = (
            self.sent.saturating_sub(self.received) as f64,
            self.sent as f64,
        );
        100.0 * lost / sent
    }

    /// The `p`th percentile RTT in ms (`NaN` without replies).
    pub fn rtt(&self, p: usize) -> f64 {
        let n = self.rtts.len();
        if n == 0 {
            return f64::NAN;
        }
        self.rtts[(n - 1) * p.min(100) / 100]
    }

    /// `loss 0.0%, rtt p50 0.41 ms p99 1.20 ms (200/200)`.
    pub fn summary(&self) -> String {
        format!(
            "loss {:.1}%, rtt p50 {:.2} ms p99 {:.2} ms ({}/{})",
            self.loss_pct(),
            self.rtt(50),
            self.rtt(99),
            self.received,
            self.sent
        )
    }
}

/// `ping -n -c count -i interval -W 1` from `h` to `dst` (from `src` if
/// given, `-I`); bounded by `count * interval + 5 s`.
pub fn ping(
    lab: &Lab,
    h: Host,
    dst: IpAddr,
    src: Option<IpAddr>,
    count: u32,
    interval: Duration,
) -> Pings {
    let (c, i, d) = (
        count.to_string(),
        format!("{:.3}", interval.as_secs_f64()),
        dst.to_string(),
    );
    let src_s = src.map(|s| s.to_string());
    let mut argv = vec!["ping", "-n", "-c", &c, "-i", &i, "-W", "1"];
    if let Some(s) = &src_s {
        argv.extend(["-I", s]);
    }
    argv.push(&d);
    let limit = interval * count + Duration::from_secs(5);
    let out = lab.run_timeout(h, &argv, limit);
    parse_ping(&String::from_utf8_lossy(&out.stdout), u64::from(count))
}

/// Parses ping's output: the `time=` of each reply; `sent` is what was
/// asked for (a ping cut short still sent no more).
pub fn parse_ping(text: &str, sent: u64) -> Pings {
    let mut rtts: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    Pings {
        sent,
        received: rtts.len() as u64,
        rtts,
    }
}

/// Starts an iperf3 server in `inet` bound to `addr` port `port` (it
/// serves test after test until the lab ends).
pub fn spawn_iperf_server(lab: &Lab, addr: IpAddr, port: u16) -> crate::ProcId {
    let (a, p) = (addr.to_string(), port.to_string());
    let id = lab.spawn(
        Host::Inet,
        &format!("iperf3-server-{port}"),
        &["iperf3", "-s", "-B", &a, "-p", &p],
    );
    lab.wait_tcp(
        Host::Inet,
        SocketAddr::new(addr, port),
        Duration::from_secs(10),
    );
    id
}

/// An iperf3 TCP stream from `h` to `dst:port` for `secs` seconds: the
/// receiver's Mbit/s, or `None` (with iperf3's output) if it failed.
///
/// # Errors
/// iperf3's output when it reports no figure.
pub fn iperf_tcp(lab: &Lab, from: Host, dst: IpAddr, port: u16, secs: u32) -> Result<f64, String> {
    let h = from;
    let (d, p, t) = (dst.to_string(), port.to_string(), secs.to_string());
    let out = lab.run_timeout(
        h,
        &[
            "iperf3",
            "-c",
            &d,
            "-p",
            &p,
            "-t",
            &t,
            "-J",
            "--connect-timeout",
            "3000",
        ],
        Duration::from_secs(u64::from(secs) + 20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|b| b / 1e6)
        .ok_or_else(|| format!("iperf3 failed: {text}"))
}

/// An iperf3 UDP stream at `rate` (`"0"`: unlimited) from `h` to
/// `dst:port` for `secs` seconds; returns iperf3's JSON report.
pub fn iperf_udp(lab: &Lab, h: Host, dst: IpAddr, port: u16, rate: &str, secs: u32) -> String {
    let (d, p, t) = (dst.to_string(), port.to_string(), secs.to_string());
    let out = lab.run_timeout(
        h,
        &[
            "iperf3", "-c", &d, "-p", &p, "-u", "-b", rate, "-l", "1200", "-t", &t, "-J",
        ],
        Duration::from_secs(u64::from(secs) + 20),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Resident memory of process `pid` in MiB (`VmRSS` of
/// `/proc/<pid>/status`), 0 if it cannot be read.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Open descriptors of process `pid` (0 if it cannot be read).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// An unauthenticated flood against the edge, from `inet`.
#[derive(Clone, Debug)]
pub struct Flood {
    /// The edge's tunnel endpoint for IPv4 sources.
    pub target_v4: SocketAddr,
    /// The edge's tunnel endpoint for IPv6 sources.
    pub target_v6: SocketAddr,
    /// Source addresses, taken in turn ([`add_flood_sources`]).
    pub sources: Vec<IpAddr>,
    /// Slow connections held open at once: each sends one more byte of a
    /// `ClientHello` every [`Flood::trickle`], never completing it.
    pub slow: usize,
    /// How often each slow connection sends its next byte.
    pub trickle: Duration,
    /// Threads sending complete `ClientHello`s on fresh connections, back to
    /// back (each waits up to 20 ms for the edge's answer, then closes).
    pub hello_threads: usize,
    /// A `ClientHello` record as a TLS client sends it.
    pub client_hello: Vec<u8>,
    /// How long the flood lasts.
    pub duration: Duration,
}

/// What a [`Flood`] saw.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Slow connections that connected.
    pub slow_opened: u64,
    /// Slow connections the edge closed (or reset).
    pub slow_closed: u64,
    /// Slow connections still open when the flood ended.
    pub slow_held_at_end: u64,
    /// The longest any slow connection was held open by the edge, in s.
    pub longest_held_secs: f64,
    /// Connection attempts that failed or timed out (200 ms).
    pub connect_failures: u64,
    /// Complete `ClientHello`s sent.
    pub hellos: u64,
    /// `ClientHello`s the edge answered (any bytes back within 20 ms).
    pub hellos_answered: u64,
}

impl Flood {
    /// Runs the flood from `inet` until [`Flood::duration`] has passed; all
    /// its sockets are closed when this returns.
    ///
    /// # Panics
    /// If a thread cannot enter `inet`.
    pub fn run(&self, lab: &Lab) -> FloodReport {
        let deadline = Instant::now() + self.duration;
        let failures = AtomicU64::new(0);
        let hellos = AtomicU64::new(0);
        let answered = AtomicU64::new(0);
        let mut report = std::thread::scope(|s| {
            for t in 0..self.hello_threads {
                let (hellos, answered, failures) = (&hellos, &answered, &failures);
                let ns = lab.ns(Host::Inet).to_owned();
                s.spawn(move || {
                    netns::enter(&ns).expect("entering inet");
                    let mut n = t;
                    while Instant::now() < deadline {
                        let src = self.sources[n % self.sources.len()];
                        n += self.hello_threads;
                        match self.connect(src) {
                            Ok(mut c) => {
                                if c.write_all(&self.client_hello).is_ok() {
                                    hellos.fetch_add(1, Relaxed);
                                    let _ = c.set_nonblocking(false);
                                    let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
                                    let mut b = [0u8; 512];
                                    if matches!(c.read(&mut b), Ok(n) if n > 0) {
                                        answered.fetch_add(1, Relaxed);
                                    }
                                }
                            }
                            Err(_) => {
                                failures.fetch_add(1, Relaxed);
                            }
                        }
                    }
                });
            }
            let ns = lab.ns(Host::Inet).to_owned();
            let failures = &failures;
            s.spawn(move || {
                netns::enter(&ns).expect("entering inet");
                netns::raise_nofile();
                self.slow_loop(deadline, failures)
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        report.connect_failures = failures.load(Relaxed);
        report.hellos = hellos.load(Relaxed);
        report.hellos_answered = answered.load(Relaxed);
        report
    }

    fn connect(&self, src: IpAddr) -> std::io::Result<TcpStream> {
        let dst = if src.is_ipv4() {
            self.target_v4
        } else {
            self.target_v6
        };
        netns::connect_from(src, dst, Duration::from_millis(200))
    }

    /// Keeps [`Flood::slow`] connections open (reopening those the edge
    /// closes, at most one round per [`Flood::trickle`]), each sending its
    /// next byte every round.
    fn slow_loop(&self, deadline: Instant, failures: &AtomicU64) -> FloodReport {
        struct Slow {
            sock: TcpStream,
            sent: usize,
            since: Instant,
        }
        let mut report = FloodReport::default();
        let mut conns: Vec<Option<Slow>> = (0..self.slow).map(|_| None).collect();
        // Never the whole hello: the handshake must not complete.
        let limit = self.client_hello.len().saturating_sub(1).max(1);
        while Instant::now() < deadline {
            let round = Instant::now();
            for (i, slot) in conns.iter_mut().enumerate() {
                if Instant::now() >= deadline {
                    break;
                }
                if slot.is_none() {
                    // Opening takes at most a third of a round.
                    if round.elapsed() > self.trickle / 3 {
                        continue;
                    }
                    let Ok(sock) = self.connect(self.sources[i % self.sources.len()]) else {
                        failures.fetch_add(1, Relaxed);
                        continue;
                    };
                    report.slow_opened += 1;
                    *slot = Some(Slow {
                        sock,
                        sent: 0,
                        since: Instant::now(),
                    });
                }
                let Some(c) = slot.as_mut() else { continue };
                let mut b = [0u8; 256];
                let closed = match c.sock.read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                let byte = self.client_hello[c.sent.min(limit - 1)];
                let closed = closed || (c.sent < limit && c.sock.write(&[byte]).is_err());
                if closed {
                    report.slow_closed += 1;
                    report.longest_held_secs = report
                        .longest_held_secs
                        .max(c.since.elapsed().as_secs_f64());
                    *slot = None;
                } else if c.sent < limit {
                    c.sent += 1;
                }
            }
            let rest = self.trickle.saturating_sub(round.elapsed());
            let rest = rest.min(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(rest);
        }
        for c in conns.into_iter().flatten() {
            report.slow_held_at_end += 1;
            report.longest_held_secs = report
                .longest_held_secs
                .max(c.since.elapsed().as_secs_f64());
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_output() {
        let text = "PING 203.0.113.10 (203.0.113.10) 56(84) bytes of data.\n\
            64 bytes from 203.0.113.10: icmp_seq=1 ttl=62 time=0.512 ms\n\
            64 bytes from 203.0.113.10: icmp_seq=3 ttl=62 time=2.10 ms\n\
            64 bytes from 203.0.113.10: icmp_seq=4 ttl=62 time=0.250 ms\n\n\
            --- 203.0.113.10 ping statistics ---\n\
            4 packets transmitted, 3 received, 25% packet loss, time 3004ms\n";
        let p = parse_ping(text, 4);
        assert_eq!((p.sent, p.received), (4, 3));
        assert!((p.loss_pct() - 25.0).abs() < 1e-9);
        assert!((p.rtt(50) - 0.512).abs() < 1e-9);
        assert!((p.rtt(99) - 0.512).abs() < 1e-9, "{:?}", p.rtts);
        assert!((p.rtt(100) - 2.10).abs() < 1e-9);
    }
}
