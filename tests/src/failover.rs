//! A branch with several edges, for the failover tests: a lab with up to
//! three edges ([`Lab::with_edges`]), each reached through a delay
//! [`Relay`] in `inet` (distance, and a switch for a silent death), sluice
//! configured with the relays' addresses as the tenant's `edges`; a
//! bounded UDP stream that says, for every reply, which edge carried it
//! and when it came back ([`UdpStream`]); and readers of which edge the
//! gateway says it uses ([`EdgeGauge`]).
//!
//! Which edge carries the traffic is read three ways, from the most to
//! the least independent of the gateway: the address the server saw (each
//! edge masquerades to its own WAN address: [`Failover::carrier`], the
//! stream's [`Reply::via`]), the `inet` counters of each edge's packets to
//! the tunnelled server ([`Failover::tunnelled_by`]), and the gateway's
//! own metrics ([`Failover::gateway_edges`]).
use std::{
    marker::PhantomData,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    Host, Lab,
    deploy::{self, EdgeSite, Sluice},
    edge_lab,
    relay::{Relay, RelayConfig},
};

/// One edge of a [`Failover`] lab: which, how far (the relay's one-way
/// delay, each way), and its priority in the gateway's list.
#[derive(Clone, Copy, Debug)]
pub struct EdgePath {
    /// The edge ([`Host::EDGES`]).
    pub edge: Host,
    /// The one-way delay its relay adds in each direction.
    pub delay: Duration,
    /// Its `priority` in the gateway's `edges` (0 is the most preferred).
    pub priority: u32,
}

impl EdgePath {
    /// Edge `edge`, `delay_ms` away each way, priority `priority`.
    pub fn new(edge: Host, delay_ms: u64, priority: u32) -> Self {
        Self {
            edge,
            delay: Duration::from_millis(delay_ms),
            priority,
        }
    }
}

/// sluice with several edges, each behind its relay.
#[derive(Debug)]
pub struct Failover<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// sluice in it (the edges, the gateway).
    pub sluice: Sluice<'a>,
    relays: Vec<(Host, Relay<'a>)>,
}

impl<'a> Failover<'a> {
    /// Starts a relay in `inet` for each path (TCP and UDP, on `inet`'s
    /// address towards the edge, see [`EdgeSite::relay_addr`]) and writes
    /// sluice's configurations: the gateway's is the lab's default with
    /// the relays as its `edges` (in `paths` order) and `selection` as its
    /// `[tunnel.selection]`, then `edit`ed. Nothing of sluice runs yet
    /// ([`Failover::start_all`]).
    ///
    /// # Panics
    /// If the lab lacks one of the edges or a relay cannot listen.
    pub fn prepare(
        lab: &'a Lab,
        bin: &Path,
        paths: &[EdgePath],
        selection: &str,
        edit: impl FnOnce(&str) -> String,
    ) -> Self {
        let relays = paths
            .iter()
            .map(|p| {
                let site = EdgeSite::of(p.edge);
                let cfg = RelayConfig::new(site.relay_addr(), site.addr(), p.delay).with_udp();
                (p.edge, Relay::start(lab, Host::Inet, cfg))
            })
            .collect();
        let entries: Vec<deploy::EdgeEntry> = paths
            .iter()
            .map(|p| {
                let site = EdgeSite::of(p.edge);
                (site, site.relay_addr(), p.priority)
            })
            .collect();
        // The edges first: `edit` may move `[bypass]` (a profile).
        let sluice = Sluice::prepare(lab, bin, |c| {
            edit(&deploy::with_edges(c, &entries, selection))
        });
        Self {
            lab,
            sluice,
            relays,
        }
    }

    /// Starts every edge that has a relay, then the gateway, and waits
    /// until the gateway's tunnel is up.
    ///
    /// # Panics
    /// If any of them fails to start.
    #[must_use]
    pub fn start_all(mut self) -> Self {
        let edges: Vec<Host> = self.relays.iter().map(|(h, _)| *h).collect();
        for h in edges {
            self.sluice.start_edge_at(h);
        }
        self.sluice.start_gateway();
        self
    }

    /// The relay in front of edge `h`.
    ///
    /// # Panics
    /// If `h` has none.
    pub fn relay(&self, h: Host) -> &Relay<'a> {
        self.relays
            .iter()
            .find(|(e, _)| *e == h)
            .map_or_else(|| panic!("sluice-lab: no relay for {h}"), |(_, r)| r)
    }

    /// The edge the tunnelled server sees a new connection from: `curl
    /// /whoami` from the client to the tunnelled server (HTTP on
    /// `http_port`, 3 s), mapped to the edge by its WAN address. `None`
    /// if nothing answered or another address did.
    pub fn carrier(&self, http_port: u16) -> Option<&'static EdgeSite> {
        let url = format!("http://{}:{http_port}/whoami", crate::addr::TUNNELLED_V4);
        let out = self.lab.run(
            Host::Client,
            &["curl", "-sS", "--fail", "--max-time", "3", &url],
        );
        let seen: IpAddr = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        EdgeSite::by_wan(seen)
    }

    /// Waits until new connections to the tunnelled server go through
    /// edge `h` ([`Failover::carrier`], polled); returns how long that
    /// took.
    ///
    /// # Panics
    /// If they do not within `timeout` (the message has the logs).
    pub fn wait_carrier(&self, h: Host, http_port: u16, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        let want = EdgeSite::of(h);
        let mut last = None;
        while t0.elapsed() < timeout {
            last = self.carrier(http_port);
            if last == Some(want) {
                return t0.elapsed();
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "new connections did not go through {} within {timeout:?} (last: {:?})\n{}",
            want.name,
            last.map(|s| s.name),
            self.logs()
        );
    }

    /// The `inet` counters of each edge's packets to the tunnelled server
    /// (IPv4), in [`Host::EDGES`] order (0 for edges the lab lacks).
    pub fn tunnelled_by(&self) -> [u64; 3] {
        let edges = self.lab.edges();
        deploy::EDGE_SITES.map(|s| {
            if edges.contains(&s.host) {
                self.lab.nft_counter(s.to_tunnelled_v4)
            } else {
                0
            }
        })
    }

    /// The gateway's per-edge gauge `metric` (`sluice_gateway_edge_active`,
    /// `sluice_gateway_edge_up`, `sluice_gateway_edge_rtt_seconds`), one per queue, tenant
    /// and edge.
    pub fn gateway_edges(&self, metric: &str) -> Vec<EdgeGauge> {
        EdgeGauge::parse(&self.sluice.gateway_metrics(), metric)
    }

    /// Waits until the gateway's gauge `metric` for edge `edge` (on any
    /// worker) satisfies `ok`; returns how long that took.
    ///
    /// # Panics
    /// If it does not within `timeout` (the message has the logs).
    pub fn wait_gauge(
        &self,
        metric: &str,
        edge: &str,
        ok: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let gauges = self.gateway_edges(metric);
            if gauges.iter().any(|g| g.edge == edge && ok(g.value)) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "the gateway's {metric} for {edge} did not turn as expected within {timeout:?}: \
                 {gauges:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The edges the gateway says carry the internet tenant's traffic
    /// (`sluice_gateway_edge_active` = 1), one per worker; sorted, deduplicated.
    pub fn active_edges(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .gateway_edges("sluice_gateway_edge_active")
            .into_iter()
            .filter(|g| g.value > 0.5)
            .map(|g| g.edge)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The gateway's log, each edge's, [`Failover::describe`] and the
    /// gateway's non-zero edge metrics: for failure messages.
    pub fn logs(&self) -> String {
        use std::fmt::Write as _;
        let gateway = std::fs::read_to_string(self.lab.log_path("gateway")).unwrap_or_default();
        let mut s = format!("--- gateway log ---\n{gateway}{}", self.sluice.edge_logs());
        let metrics: Vec<String> = self
            .sluice
            .gateway_metrics()
            .lines()
            .filter(|l| l.starts_with("sluice_gateway_edge") && !l.ends_with(" 0"))
            .map(str::to_owned)
            .collect();
        let _ = write!(
            s,
            "--- edges ---\n{}--- gateway edge metrics (non-zero) ---\n{}\n",
            self.describe(),
            metrics.join("\n")
        );
        s
    }

    /// A line per edge for reports: its relay's delay and stats, its
    /// gauges at the gateway.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let text = self.sluice.gateway_metrics();
        for (h, r) in &self.relays {
            let site = EdgeSite::of(*h);
            let gauge = |m: &str| {
                EdgeGauge::parse(&text, m)
                    .into_iter()
                    .filter(|g| g.edge == site.name)
                    .map(|g| format!("{}", g.value))
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let _ = writeln!(
                s,
                "{} ({}): relay {:?} each way, {:?}; gateway: active {} up {} rtt {} s",
                site.name,
                site.wan_v4,
                r.delay(),
                r.stats(),
                gauge("sluice_gateway_edge_active"),
                gauge("sluice_gateway_edge_up"),
                gauge("sluice_gateway_edge_rtt_seconds"),
            );
        }
        s
    }
}

/// One sample of a gateway per-edge gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeGauge {
    /// The worker (`queue` label).
    pub queue: String,
    /// The tenant.
    pub tenant: String,
    /// The edge's name.
    pub edge: String,
    /// The value.
    pub value: f64,
}

impl EdgeGauge {
    /// Every sample of `metric` in the metrics `text` that has an `edge`
    /// label.
    pub fn parse(text: &str, metric: &str) -> Vec<EdgeGauge> {
        deploy::samples_f64(text, metric)
            .into_iter()
            .filter_map(|(labels, value)| {
                let get = |k| deploy::label(&labels, k).unwrap_or_default().to_string();
                Some(EdgeGauge {
                    edge: deploy::label(&labels, "edge")?.to_string(),
                    queue: get("queue"),
                    tenant: get("tenant"),
                    value,
                })
            })
            .collect()
    }
}

/// Bytes of each datagram of a [`UdpStream`]: the echo server overwrites
/// the first ones with the address it saw (at most 40 bytes), the
/// sequence number and a tag follow at [`SEQ_AT`].
const DATAGRAM: usize = 64;
const SEQ_AT: usize = 48;
const TAG: &[u8; 4] = b"slfo";
/// How long a stream waits for replies after its last datagram.
const LINGER: Duration = Duration::from_secs(1);
/// The longest stream.
const MAX_STREAM: Duration = Duration::from_mins(2);

/// A bounded stream of numbered UDP datagrams from a lab host to the lab
/// peer's UDP echo ([`Lab::spawn_peer`]), on a thread of its own: one every
/// `interval`, `count` in all, then replies are awaited for one more
/// second. Each reply says which address the server saw (the edge that
/// carried it) and when it came back. The socket lives in the host's
/// namespace; the stream borrows its lab, and dropping it stops and joins
/// the thread.
#[derive(Debug)]
pub struct UdpStream<'lab> {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<StreamReport>>,
    _lab: PhantomData<&'lab Lab>,
}

impl<'lab> UdpStream<'lab> {
    /// Starts the stream from `h` to `dst`.
    ///
    /// # Panics
    /// If the socket cannot be made in `h`, or the stream would last more
    /// than 120 s.
    pub fn start(lab: &'lab Lab, h: Host, dst: SocketAddr, interval: Duration, count: u32) -> Self {
        assert!(
            interval * count < MAX_STREAM,
            "sluice-lab: a stream of {count} datagrams every {interval:?} is too long"
        );
        let sock = edge_lab::in_netns(lab, h, || {
            let any: SocketAddr = if dst.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(any)?;
            s.connect(dst)?;
            Ok::<_, std::io::Error>(s)
        })
        .unwrap_or_else(|e| panic!("sluice-lab: a UDP socket in {h} towards {dst}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("sluice-lab-stream".into())
            .spawn(move || stream(&sock, interval, count, &flag))
            .expect("starting the stream's thread");
        Self {
            stop,
            thread: Some(thread),
            _lab: PhantomData,
        }
    }

    /// Waits for the stream to end (its last datagram, then a second for
    /// the replies) and returns what it saw.
    ///
    /// # Panics
    /// If its thread panicked.
    pub fn finish(mut self) -> StreamReport {
        self.thread
            .take()
            .map(|t| t.join().expect("the stream's thread panicked"))
            .unwrap_or_default()
    }
}

impl Drop for UdpStream<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stream(sock: &UdpSocket, interval: Duration, count: u32, stop: &AtomicBool) -> StreamReport {
    let mut report = StreamReport::default();
    let mut buf = [0u8; 2048];
    let mut take = |report: &mut StreamReport, until: Instant| {
        while !stop.load(Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let _ = sock.set_read_timeout(Some(left.min(Duration::from_millis(5))));
            if let Ok(n) = sock.recv(&mut buf)
                && let Some(r) = parse_reply(&buf[..n], Instant::now())
            {
                report.replies.push(r);
            }
        }
    };
    let t0 = Instant::now();
    for seq in 0..count {
        take(&mut report, t0 + interval * seq);
        if stop.load(Relaxed) {
            break;
        }
        let mut d = [b'.'; DATAGRAM];
        d[SEQ_AT..SEQ_AT + 4].copy_from_slice(&seq.to_be_bytes());
        d[SEQ_AT + 4..SEQ_AT + 8].copy_from_slice(TAG);
        report.sent.push(Instant::now());
        // A send that fails (an ICMP error of an earlier datagram) is a
        // datagram lost.
        let _ = sock.send(&d);
    }
    take(&mut report, Instant::now() + LINGER);
    report
}

fn parse_reply(b: &[u8], at: Instant) -> Option<Reply> {
    if b.len() != DATAGRAM || &b[SEQ_AT + 4..SEQ_AT + 8] != TAG {
        return None;
    }
    let line = b.split(|&c| c == b'\n').next()?;
    Some(Reply {
        seq: u32::from_be_bytes(b[SEQ_AT..SEQ_AT + 4].try_into().ok()?),
        via: std::str::from_utf8(line).ok()?.parse().ok()?,
        received: at,
    })
}

/// A reply of a [`UdpStream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The datagram's number (from 0).
    pub seq: u32,
    /// The source address the server saw: the edge that carried it.
    pub via: IpAddr,
    /// When it came back.
    pub received: Instant,
}

/// What a [`UdpStream`] saw.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// When each datagram was sent (index: its number).
    pub sent: Vec<Instant>,
    /// The replies, in order of arrival.
    pub replies: Vec<Reply>,
}

/// How the traffic came back after an edge died.
#[derive(Clone, Copy, Debug)]
pub struct Recovery {
    /// From the death to the first reply through another edge.
    pub reply: Duration,
    /// From the death to the sending of that reply's datagram, in ms
    /// (negative if it was sent before the death and held on the way).
    pub sent_ms: f64,
    /// The edge's address it came through.
    pub via: IpAddr,
    /// Datagrams sent after the death whose replies never came.
    pub lost_after: usize,
}

impl StreamReport {
    /// Distinct datagrams answered.
    pub fn answered(&self) -> usize {
        let mut seqs: Vec<u32> = self.replies.iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.len()
    }

    /// Datagrams not answered.
    pub fn lost(&self) -> usize {
        self.sent.len() - self.answered()
    }

    /// Replies per edge address, in order of first appearance.
    pub fn by_via(&self) -> Vec<(IpAddr, usize)> {
        let mut v: Vec<(IpAddr, usize)> = Vec::new();
        for r in &self.replies {
            match v.iter_mut().find(|(ip, _)| *ip == r.via) {
                Some((_, n)) => *n += 1,
                None => v.push((r.via, 1)),
            }
        }
        v
    }

    /// The replies that came back after `t`.
    pub fn after(&self, t: Instant) -> impl Iterator<Item = &Reply> {
        self.replies.iter().filter(move |r| r.received > t)
    }

    /// The first reply after `death` through an edge other than `dead`,
    /// and what was lost meanwhile.
    pub fn recovery(&self, death: Instant, dead: IpAddr) -> Option<Recovery> {
        let r = self.after(death).find(|r| r.via != dead)?;
        let sent = *self.sent.get(r.seq as usize)?;
        let sent_ms = if sent >= death {
            (sent - death).as_secs_f64() * 1e3
        } else {
            -(death - sent).as_secs_f64() * 1e3
        };
        let answered: Vec<u32> = self.replies.iter().map(|r| r.seq).collect();
        let lost_after = self
            .sent
            .iter()
            .enumerate()
            .filter(|(seq, t)| **t >= death && !answered.contains(&(*seq as u32)))
            .count();
        Some(Recovery {
            reply: r.received - death,
            sent_ms,
            via: r.via,
            lost_after,
        })
    }

    /// The longest time without a reply between the first and the last.
    pub fn longest_silence(&self) -> Duration {
        self.replies
            .windows(2)
            .map(|w| w[1].received.saturating_duration_since(w[0].received))
            .max()
            .unwrap_or_default()
    }

    /// The times without a reply longer than `min`: when each began
    /// (after `t0`, the reply before it) and how long it lasted, with the
    /// edge before and after it.
    pub fn silences(&self, t0: Instant, min: Duration) -> Vec<String> {
        self.replies
            .windows(2)
            .filter_map(|w| {
                let gap = w[1].received.saturating_duration_since(w[0].received);
                (gap > min).then(|| {
                    format!(
                        "{:?} from +{:?} (seq {} via {} -> seq {} via {})",
                        gap,
                        w[0].received.saturating_duration_since(t0),
                        w[0].seq,
                        w[0].via,
                        w[1].seq,
                        w[1].via
                    )
                })
            })
            .collect()
    }

    /// `sent 300, answered 290 (via 198.51.100.13: 100, ...), longest silence 120 ms`.
    pub fn summary(&self) -> String {
        let via: Vec<String> = self
            .by_via()
            .iter()
            .map(|(ip, n)| format!("{ip}: {n}"))
            .collect();
        format!(
            "sent {}, answered {} (via {}), longest silence {:?}",
            self.sent.len(),
            self.answered(),
            via.join(", "),
            self.longest_silence()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_and_recovery_measured() {
        let t0 = Instant::now();
        let mut d = [b'.'; DATAGRAM];
        d[SEQ_AT..SEQ_AT + 4].copy_from_slice(&7u32.to_be_bytes());
        d[SEQ_AT + 4..SEQ_AT + 8].copy_from_slice(TAG);
        let seen = b"198.51.100.13\n";
        d[..seen.len()].copy_from_slice(seen);
        let r = parse_reply(&d, t0).unwrap();
        assert_eq!(r.seq, 7);
        assert_eq!(r.via, IpAddr::from([198, 51, 100, 13]));
        assert_eq!(parse_reply(&d[..10], t0), None);

        let ms = |n: u64| t0 + Duration::from_millis(n);
        let (a, b) = (IpAddr::from([198, 51, 100, 5]), r.via);
        let report = StreamReport {
            sent: (0..6).map(|i| ms(10 * i)).collect(),
            replies: vec![
                Reply {
                    seq: 0,
                    via: a,
                    received: ms(2),
                },
                Reply {
                    seq: 1,
                    via: a,
                    received: ms(12),
                },
                Reply {
                    seq: 4,
                    via: b,
                    received: ms(45),
                },
                Reply {
                    seq: 5,
                    via: b,
                    received: ms(52),
                },
            ],
        };
        // Death at 15 ms: 20 and 30 lost, 40 answered at 45 through b.
        let rec = report.recovery(ms(15), a).unwrap();
        assert_eq!(rec.reply, Duration::from_millis(30));
        assert!((rec.sent_ms - 25.0).abs() < 1e-6);
        assert_eq!((rec.via, rec.lost_after), (b, 2));
        assert_eq!(report.lost(), 2);
        assert_eq!(report.by_via(), vec![(a, 2), (b, 2)]);
        assert_eq!(report.longest_silence(), Duration::from_millis(33));
        assert!(report.recovery(ms(60), a).is_none());
    }
}
