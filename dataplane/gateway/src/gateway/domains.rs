//! The gateway's domain bypass: the DNS messages its workers carry (queries
//! on their way into the tunnel, answers on their way back to the LAN) go
//! through one [`Observer`]; an accepted answer's addresses enter the
//! kernel bypass table *before* the worker forwards the answer, so the
//! client's first packet to them is already bypassed. Expired addresses
//! leave the table (the bypass thread, [`super::dns_relay::serve`], calls
//! [`DomainBypass::expire`]).
//!
//! Each address gets one classifier domain entry holding, per policy
//! slot, which app profiles bypass it and which reach it through the
//! switched-on private-access tenant ([`DomainMatcher`]); this host's own
//! flows (the socket hooks) get a bypass-trie entry when its profile
//! bypasses the name. A policy swap rewrites the idle slot's half of every
//! entry before the slot goes live ([`DomainBypass::swap`]).
//!
//! The workers never call in here: they hand DNS messages to the bypass
//! thread through [`super::dns_relay`], and only that thread and the
//! control side (swap, admin, metrics) take this lock.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use sluice_common::{BypassEntry, DnsEntry};

use crate::{
    config::DomainBypassConfig as Config,
    dns::{
        Answer, BypassTable, DomainSet, Endpoints, Insert, Observer, Stats, Transport,
        tcp::{Segment, StreamKey, TcpStreams},
    },
    ebpf::{EbpfError, Prepared, Programs},
    metrics::sample,
    policy::compile::DomainMatcher,
    wire::ip,
};

/// The DNS port.
const DNS_PORT: u16 = 53;
/// DNS-over-TCP streams followed at once (each direction counts).
const MAX_TCP_STREAMS: usize = 1024;

/// A DNS packet's content: one UDP message, or a segment of a TCP stream.
enum Dns<'a> {
    Udp(&'a [u8]),
    Tcp(Segment<'a>),
}

/// `pkt` as DNS traffic, if it is (UDP or TCP with the server's port 53 on
/// the right side): its endpoints as the query saw them (`to_server`: the
/// packet goes from client to server) and its content. A few byte loads
/// for any other packet.
fn dns_packet<'a>(pkt: &ip::Packet<'a>, to_server: bool) -> Option<(Endpoints, Dns<'a>)> {
    // The ports first: addresses are read only for DNS packets.
    let ends = |sport: u16, dport: u16, transport| {
        if (if to_server { dport } else { sport }) != DNS_PORT {
            return None;
        }
        let (src, dst) = (
            SocketAddr::new(pkt.src(), sport),
            SocketAddr::new(pkt.dst(), dport),
        );
        let (client, server) = if to_server { (src, dst) } else { (dst, src) };
        Some(Endpoints {
            client,
            server,
            transport,
        })
    };
    if let Some((sport, dport, msg)) = pkt.udp() {
        return Some((ends(sport, dport, Transport::Udp)?, Dns::Udp(msg)));
    }
    let t = pkt.tcp()?;
    let seg = Segment {
        seq: t.seq,
        syn: t.flags & 0x02 != 0,
        end: t.flags & 0x05 != 0,
        payload: t.payload,
    };
    Some((ends(t.src_port, t.dst_port, Transport::Tcp)?, Dns::Tcp(seg)))
}

/// Whether `pkt` is DNS traffic the bypass must observe, seen from its
/// direction (`to_server`: a query's way): port 53 on the server's side,
/// UDP, or a TCP segment with payload or SYN/FIN/RST (a bare ACK carries
/// nothing to observe and passes). A few byte loads.
pub(super) fn is_dns(pkt: &ip::Packet<'_>, to_server: bool) -> bool {
    match dns_packet(pkt, to_server) {
        Some((_, Dns::Udp(_))) => true,
        Some((_, Dns::Tcp(seg))) => !seg.payload.is_empty() || seg.syn || seg.end,
        None => false,
    }
}

/// Held by the bypass thread and the control side (swap, admin, metrics).
#[derive(Debug)]
pub(crate) struct DomainBypass {
    state: Mutex<State>,
    classifier: Arc<Mutex<Programs>>,
    /// Set while the policy names a domain: the workers divert DNS
    /// messages to the bypass thread only then.
    watching: Arc<AtomicBool>,
    /// Answers the bypass thread could not hand back (a worker's return
    /// queue was full).
    lost_returns: AtomicU64,
    /// DNS messages waiting for the bypass thread when it last started a
    /// turn, and the most it has seen waiting.
    queue_depth: AtomicU64,
    queue_peak: AtomicU64,
}

#[derive(Debug)]
struct State {
    observer: Observer,
    /// DNS over TCP, both directions of each connection.
    tcp: TcpStreams,
    table: BypassTable,
    answers: Vec<Answer>,
    gone: Vec<IpAddr>,
    /// Per policy slot: the matcher its entries were computed with.
    matchers: [Option<Arc<DomainMatcher>>; 2],
    /// The live slot.
    live: usize,
    /// Addresses in this host's bypass trie (its profile bypasses them).
    local: std::collections::HashSet<IpAddr>,
    /// Answers installed into the classifier's domain entries.
    installed: u64,
    install_errors: u64,
    last_overflow_log: Option<Instant>,
    overflow_since_log: u64,
}

impl DomainBypass {
    /// `None` when no domain is configured.
    /// The domain table with `cfg`'s limits; it watches nothing until the
    /// first [`DomainBypass::swap`] gives it the policy's domains.
    pub(crate) fn new(cfg: &Config, classifier: Arc<Mutex<Programs>>) -> Arc<Self> {
        let observer = Observer::new(DomainSet::default(), cfg.limits)
            .with_trusted_servers(cfg.servers.clone());
        Arc::new(Self {
            state: Mutex::new(State {
                observer,
                tcp: TcpStreams::new(MAX_TCP_STREAMS),
                table: BypassTable::new(cfg.max_entries),
                answers: Vec::new(),
                gone: Vec::new(),
                matchers: [None, None],
                live: 0,
                local: std::collections::HashSet::new(),
                installed: 0,
                install_errors: 0,
                last_overflow_log: None,
                overflow_since_log: 0,
            }),
            classifier,
            watching: Arc::new(AtomicBool::new(false)),
            lost_returns: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            queue_peak: AtomicU64::new(0),
        })
    }

    /// The flag the workers' relay reads: set while the policy names a
    /// domain.
    pub(crate) fn watching(&self) -> Arc<AtomicBool> {
        self.watching.clone()
    }

    /// Answers the bypass thread dropped because their worker's return
    /// queue was full.
    pub(super) fn count_lost_returns(&self, n: u64) {
        self.lost_returns.fetch_add(n, Relaxed);
    }

    /// The bypass thread found `depth` messages waiting as it started a
    /// turn.
    pub(super) fn note_queue_depth(&self, depth: usize) {
        let depth = depth as u64;
        self.queue_depth.store(depth, Relaxed);
        self.queue_peak.fetch_max(depth, Relaxed);
    }

    /// A policy swap. `prepare` writes the policy into the idle slot with
    /// the classifier lock alone (after the previous slot's quiet time,
    /// waited with no lock held), so DNS packets meanwhile are observed
    /// without waiting for it. Then, with the domain lock and then the
    /// classifier lock held (the order [`DomainBypass::install`] takes
    /// them in), every address in the table gets its entry under the idle
    /// slot from `matcher` (keys of their own: no live entry is replaced),
    /// `commit` makes the slot live, this host's bypass-trie entries
    /// follow the new matcher and the observer watches `patterns`.
    /// Swaps are serialised by the caller, and nothing else writes the
    /// idle slot, so the two steps need not hold the locks between them.
    pub(crate) fn swap<T>(
        &self,
        matcher: Arc<DomainMatcher>,
        patterns: &[crate::dns::Pattern],
        prepare: impl FnOnce(&mut Programs) -> Result<Prepared, EbpfError>,
        commit: impl FnOnce(&mut Programs, Prepared) -> Result<T, EbpfError>,
    ) -> Result<T, EbpfError> {
        let classifier = || {
            self.classifier.lock().map_err(|_| EbpfError::MissingMap {
                name: "classifier (poisoned lock)",
            })
        };
        let quiet = classifier()?.slot_quiet_left();
        if !quiet.is_zero() {
            std::thread::sleep(quiet);
        }
        let prepared = prepare(&mut *classifier()?)?;
        let Ok(mut guard) = self.state.lock() else {
            return Err(EbpfError::MissingMap {
                name: "domain bypass state (poisoned lock)",
            });
        };
        let s = &mut *guard;
        let mut c = classifier()?;
        let slot = (prepared.slot & 1) as usize;
        s.matchers[slot] = Some(matcher.clone());
        let rows: Vec<(IpAddr, String)> =
            s.table.iter().map(|(a, d, _)| (a, d.to_string())).collect();
        for (addr, name) in &rows {
            c.set_policy_dns(prepared.slot, *addr, entry(Some(&matcher), name))?;
        }
        let out = commit(&mut c, prepared)?;
        s.live = slot;
        for (addr, name) in &rows {
            sync_local(s, &mut c, *addr, matcher.local_bypass(name));
        }
        s.observer
            .set_domains(DomainSet::new(patterns.iter().cloned()));
        self.watching.store(!patterns.is_empty(), Relaxed);
        Ok(out)
    }

    pub(crate) fn on_lan_packet(&self, pkt: &ip::Packet<'_>) {
        let Some((ends, dns)) = dns_packet(pkt, true) else {
            return;
        };
        let now = Instant::now();
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let State { tcp, observer, .. } = &mut *guard;
        match dns {
            Dns::Udp(msg) => {
                let _ = observer.handle_query(now, ends, msg);
            }
            Dns::Tcp(seg) => {
                let key = StreamKey {
                    from: ends.client,
                    to: ends.server,
                };
                tcp.push(key, seg, |m| {
                    let _ = observer.handle_query(now, ends, m);
                });
            }
        }
    }

    /// A packet from the tunnel on its way to the LAN: a DNS answer (UDP,
    /// or a segment of a TCP connection from port 53)? The addresses it
    /// completes are in the kernel table when this returns.
    pub(crate) fn on_tunnel_packet(&self, pkt: &ip::Packet<'_>) {
        let Some((ends, dns)) = dns_packet(pkt, false) else {
            return;
        };
        let now = Instant::now();
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let s = &mut *guard;
        s.answers.clear();
        let State {
            tcp,
            observer,
            answers,
            ..
        } = s;
        let mut answer = |m: &[u8]| {
            if let Err(why) = observer.handle_response(now, ends, m, answers) {
                log::debug!("DNS answer {} -> {}: {why}", ends.server, ends.client);
            }
        };
        match dns {
            Dns::Udp(msg) => answer(msg),
            Dns::Tcp(seg) => {
                let key = StreamKey {
                    from: ends.server,
                    to: ends.client,
                };
                tcp.push(key, seg, answer);
            }
        }
        if !s.answers.is_empty() {
            self.install(s, now);
        }
    }

    /// Puts `s.answers` into the table and the kernel map.
    fn install(&self, s: &mut State, now: Instant) {
        let Ok(mut c) = self.classifier.lock() else {
            return;
        };
        let answers = std::mem::take(&mut s.answers);
        for a in &answers {
            match s.table.insert(now, a) {
                Insert::Refreshed => continue,
                Insert::New => {}
                Insert::Evicted(victim) => {
                    let _ = c.remove_policy_dns(victim);
                    sync_local(s, &mut c, victim, false);
                    s.overflow_since_log += 1;
                    if s.last_overflow_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                    {
                        log::warn!(
                            "domain bypass: table full ({} addresses): evicted {} address(es) closest to expiry, latest {victim}, for {}",
                            s.table.len(),
                            s.overflow_since_log,
                            a.addr
                        );
                        s.last_overflow_log = Some(now);
                        s.overflow_since_log = 0;
                    }
                }
            }
            // The live slot's entry only: the idle slot gets every
            // address's entry at the next swap's prepare.
            let e = entry(s.matchers[s.live].as_deref(), &a.domain);
            match c.set_policy_dns(s.live as u32, a.addr, e) {
                Ok(()) => {
                    s.installed += 1;
                    log::info!(
                        "domain bypass: {} ({}) for {} s (profiles bypassing {:#x}, reaching it privately {:#x})",
                        a.addr,
                        a.domain,
                        a.ttl.as_secs(),
                        e.bypass,
                        e.private
                    );
                }
                Err(e) => {
                    s.install_errors += 1;
                    log::warn!("domain bypass: cannot install {}: {e}", a.addr);
                }
            }
            let local = s.matchers[s.live]
                .as_ref()
                .is_some_and(|m| m.local_bypass(&a.domain));
            sync_local(s, &mut c, a.addr, local);
        }
        s.answers = answers;
    }

    pub(crate) fn expire(&self, now: Instant) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let s = &mut *guard;
        s.observer.expire(now);
        s.gone.clear();
        s.table.expire(now, &mut s.gone);
        if s.gone.is_empty() {
            return;
        }
        let Ok(mut c) = self.classifier.lock() else {
            return;
        };
        let gone = std::mem::take(&mut s.gone);
        for a in &gone {
            match c.remove_policy_dns(*a) {
                Ok(()) => log::info!("domain bypass: {a} expired"),
                Err(e) => log::warn!("domain bypass: cannot remove {a}: {e}"),
            }
            sync_local(s, &mut c, *a, false);
        }
        s.gone = gone;
    }

    /// The installed addresses, one per line: address, domain, seconds
    /// left; soonest to expire first.
    pub(crate) fn list(&self, out: &mut String) {
        let Ok(s) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        let mut rows: Vec<_> = s.table.iter().collect();
        rows.sort_by_key(|&(addr, _, expires)| (expires, addr));
        for (addr, domain, expires) in rows {
            let left = expires.saturating_duration_since(now).as_secs();
            let _ = writeln!(out, "{addr} {domain} {left}s");
        }
    }

    /// Prometheus samples.
    pub(crate) fn render(&self, out: &mut String) {
        let Ok(s) = self.state.lock() else {
            return;
        };
        let st: Stats = s.observer.stats();
        let name = "sluice_dns_messages_total";
        let help = Some("DNS messages seen for the domain bypass, by outcome");
        for (i, (outcome, v)) in [
            ("query", st.queries),
            ("answer", st.answers),
            ("malformed", st.malformed),
            ("unsolicited", st.unsolicited),
            ("question_mismatch", st.question_mismatch),
            ("error_code", st.error_code),
            ("truncated", st.truncated),
            ("query_timeout", st.timeouts),
            ("pending_overflow", st.pending_overflow),
            ("untrusted_server", st.untrusted_server),
        ]
        .into_iter()
        .enumerate()
        {
            sample(
                out,
                name,
                "counter",
                help.filter(|_| i == 0),
                &[("outcome", outcome)],
                v,
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            sample(out, name, "gauge", Some(help), &[], v);
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            sample(out, name, "counter", Some(help), &[], v);
        };
        counter(
            out,
            "sluice_dns_answered_addresses_total",
            "addresses accepted from answers",
            st.addresses,
        );
        counter(
            out,
            "sluice_dns_bad_addresses_total",
            "answered addresses refused (not unicast)",
            st.bad_address,
        );
        counter(
            out,
            "sluice_dns_bypass_installed_total",
            "addresses put into the kernel bypass table",
            s.installed,
        );
        counter(
            out,
            "sluice_dns_bypass_install_errors_total",
            "failed kernel table updates",
            s.install_errors,
        );
        counter(
            out,
            "sluice_dns_bypass_evictions_total",
            "addresses evicted because the table was full",
            s.table.evictions(),
        );
        counter(
            out,
            "sluice_dns_bypass_expired_total",
            "addresses removed at the end of their TTL",
            s.table.expirations(),
        );
        counter(
            out,
            "sluice_dns_answers_lost_total",
            "answers dropped because a worker's return queue was full",
            self.lost_returns.load(Relaxed),
        );
        counter(
            out,
            "sluice_dns_tcp_streams_evicted_total",
            "DNS-over-TCP streams no longer followed because too many were open",
            s.tcp.evicted(),
        );
        gauge(
            out,
            "sluice_dns_queue_depth",
            "DNS messages waiting for the domain bypass thread at its last turn",
            self.queue_depth.load(Relaxed),
        );
        gauge(
            out,
            "sluice_dns_queue_depth_peak",
            "most DNS messages seen waiting for the domain bypass thread",
            self.queue_peak.load(Relaxed),
        );
        gauge(
            out,
            "sluice_dns_bypass_entries",
            "addresses bypassed because of DNS answers",
            s.table.len() as u64,
        );
    }
}

/// The domain entry of a name under one slot's matcher (none: no bits).
fn entry(matcher: Option<&DomainMatcher>, name: &str) -> DnsEntry {
    let mut e = DnsEntry::default();
    if let Some(m) = matcher {
        let (bypass, private, action) = m.masks(name);
        e.bypass = bypass;
        e.private = private;
        e.private_action = action;
    }
    e
}

/// Puts `addr` in this host's bypass trie or takes it out.
fn sync_local(s: &mut State, c: &mut Programs, addr: IpAddr, bypass: bool) {
    if bypass && s.local.insert(addr) {
        if let Err(e) = c.add_host_bypass(BypassEntry::SOURCE_DNS, addr) {
            s.install_errors += 1;
            log::warn!("domain bypass (this host): cannot install {addr}: {e}");
        }
    } else if !bypass && s.local.remove(&addr) {
        let _ = c.remove_host_bypass(BypassEntry::SOURCE_DNS, addr);
    }
}
