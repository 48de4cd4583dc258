//! The gateway's domain bypass: the DNS messages its workers carry (queries
//! on their way into the tunnel, answers on their way back to the LAN) go
//! through one [`Observer`]; an accepted answer's addresses enter the
//! kernel bypass table *before* the worker forwards the answer, so the
//! client's first packet to them is already bypassed. Expired addresses
//! leave the table (the gateway's main loop calls [`DomainBypass::expire`]).
//!
//! Only DNS packets (UDP port 53, a few byte loads to tell) take the lock
//! here; data packets never do.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_common::BypassEntry;

use crate::{
    config::DomainBypass as Config,
    dns::{
        Answer, BypassTable, DomainSet, Endpoints, Insert, Observer, Stats, Transport,
        tcp::{Segment, StreamKey, TcpStreams},
    },
    ebpf::Classifier,
    metrics::sample,
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

/// Shared by the workers and the main loop.
#[derive(Debug)]
pub(crate) struct DomainBypass {
    state: Mutex<State>,
    classifier: Arc<Mutex<Classifier>>,
}

#[derive(Debug)]
struct State {
    observer: Observer,
    /// DNS over TCP, both directions of each connection.
    tcp: TcpStreams,
    table: BypassTable,
    answers: Vec<Answer>,
    gone: Vec<IpAddr>,
    /// Addresses this table put into the kernel map (others were already
    /// there, from the configuration).
    installed: u64,
    install_errors: u64,
    last_overflow_log: Option<Instant>,
    overflow_since_log: u64,
}

impl DomainBypass {
    /// `None` when no domain is configured.
    pub(crate) fn new(cfg: &Config, classifier: Arc<Mutex<Classifier>>) -> Option<Arc<Self>> {
        if cfg.patterns.is_empty() {
            return None;
        }
        let observer = Observer::new(DomainSet::new(cfg.patterns.iter().cloned()), cfg.limits)
            .with_trusted_servers(cfg.servers.clone());
        Some(Arc::new(Self {
            state: Mutex::new(State {
                observer,
                tcp: TcpStreams::new(MAX_TCP_STREAMS),
                table: BypassTable::new(cfg.max_entries),
                answers: Vec::new(),
                gone: Vec::new(),
                installed: 0,
                install_errors: 0,
                last_overflow_log: None,
                overflow_since_log: 0,
            }),
            classifier,
        }))
    }

    /// A packet from the LAN on its way into the tunnel: a DNS query (UDP,
    /// or a segment of a TCP connection to port 53)?
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
        for a in &s.answers {
            match s.table.insert(now, a) {
                Insert::Refreshed => continue,
                Insert::New => {}
                Insert::Evicted(victim) => {
                    let _ = c.remove_host_bypass(BypassEntry::SOURCE_DNS, victim);
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
            match c.add_host_bypass(BypassEntry::SOURCE_DNS, a.addr) {
                Ok(true) => {
                    s.installed += 1;
                    log::info!(
                        "domain bypass: {} ({}) for {} s",
                        a.addr,
                        a.domain,
                        a.ttl.as_secs()
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    s.install_errors += 1;
                    log::warn!("domain bypass: cannot install {}: {e}", a.addr);
                }
            }
        }
    }

    /// Removes expired addresses from the tables.
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
        for a in &s.gone {
            match c.remove_host_bypass(BypassEntry::SOURCE_DNS, *a) {
                Ok(true) => log::info!("domain bypass: {a} expired"),
                Ok(false) => {}
                Err(e) => log::warn!("domain bypass: cannot remove {a}: {e}"),
            }
        }
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
            "sluice_dns_tcp_streams_evicted_total",
            "DNS-over-TCP streams no longer followed because too many were open",
            s.tcp.evicted(),
        );
        gauge(
            out,
            "sluice_dns_bypass_entries",
            "addresses bypassed because of DNS answers",
            s.table.len() as u64,
        );
    }
}
