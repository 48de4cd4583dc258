//! Domain-based bypass: DNS answers for listed domains put the answered
//! addresses into the bypass tables for the answer's TTL.
//!
//! Sans-IO, like the tunnel core: [`Observer`] takes DNS messages seen on
//! the wire (with their endpoints and the current time) and returns the
//! addresses to install; [`BypassTable`] holds them with their expiry and
//! a size bound. Whoever sees the packets (the gateway's workers, the
//! endpoint mode's TUN reader) feeds the observer and applies what it
//! returns to the kernel and userspace tables.
//!
//! Trust: an answer installs something only if it answers a query the
//! observer saw for a listed name, from the server the query went to, to
//! the same client port, with the same transaction ID and question, and a
//! successful response code; each query is answered at most once. Every
//! other message is dropped and counted by reason ([`Drop`]). Addresses
//! that cannot be unicast destinations (unspecified, loopback, multicast,
//! broadcast) never install. Messages are parsed with `hickory-proto`.
//!
//! What it must not do: block or allocate without bound. Pending queries
//! and installed addresses are both capped; the oldest pending query is
//! forgotten when the cap is reached, and a full table evicts the address
//! closest to its expiry (both counted).

mod domains;
mod table;
pub mod tcp;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};

pub use domains::{DomainSet, Pattern, PatternError, normalize};
pub use table::{BypassTable, Insert};

/// The transport a DNS message came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP, one message per datagram.
    Udp,
    /// TCP, messages with a two-byte length prefix (already removed).
    Tcp,
}

/// Who asked whom: the client's and the server's socket addresses as seen
/// in the query (the answer's are the same, swapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// The querying client (source of the query).
    pub client: SocketAddr,
    /// The DNS server (destination of the query).
    pub server: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
}

/// Limits and TTL bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Shortest time an answered address stays (a TTL of 0 or 5 s would
    /// otherwise expire before the client's connection starts).
    pub ttl_floor: Duration,
    /// Longest time an answered address stays.
    pub ttl_cap: Duration,
    /// Most queries awaiting their answer.
    pub max_pending: usize,
    /// How long a query waits for its answer.
    pub query_timeout: Duration,
}

impl Default for Limits {
    #[allow(
        clippy::duration_suboptimal_units,
        reason = "Duration::from_hours is newer than the workspace's MSRV (1.87)"
    )]
    fn default() -> Self {
        Self {
            ttl_floor: Duration::from_secs(30),
            ttl_cap: Duration::from_secs(3600),
            max_pending: 4096,
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a DNS message installed nothing. Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Drop {
    /// Not a parseable DNS message.
    #[error("malformed DNS message")]
    Malformed,
    /// A query (or something posing as one) for an unlisted name, or not a
    /// standard query: nothing to track.
    #[error("not a query for a listed domain")]
    NotListed,
    /// A query for a listed name to a server not in the trusted list.
    #[error("query to a DNS server that is not trusted")]
    UntrustedServer,
    /// A response no tracked query waits for: wrong ID, wrong endpoints,
    /// already answered, or never asked.
    #[error("unsolicited answer (no matching query)")]
    Unsolicited,
    /// The ID and endpoints match, the question does not.
    #[error("answer's question differs from the query's")]
    QuestionMismatch,
    /// An error response code (NXDOMAIN, SERVFAIL, ...).
    #[error("error response code")]
    ErrorCode,
    /// Truncated (the client will ask again over TCP).
    #[error("truncated answer")]
    Truncated,
}

/// Counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Queries for listed names being tracked.
    pub queries: u64,
    /// Answers accepted.
    pub answers: u64,
    /// Addresses handed out to install.
    pub addresses: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// Answers matching no query.
    pub unsolicited: u64,
    /// Answers whose question differs from the query's.
    pub question_mismatch: u64,
    /// Answers with an error code.
    pub error_code: u64,
    /// Truncated answers.
    pub truncated: u64,
    /// Answered addresses refused (not unicast).
    pub bad_address: u64,
    /// CNAME chains cut at the hop limit.
    pub long_chain: u64,
    /// Pending queries forgotten because the pending table was full.
    pub pending_overflow: u64,
    /// Pending queries that timed out.
    pub timeouts: u64,
    /// Queries for listed names to servers outside the trusted list.
    pub untrusted_server: u64,
}

/// An address to install: `addr` bypasses for `ttl` because of `domain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The answered address.
    pub addr: IpAddr,
    /// How long, already clamped to the floor and the cap.
    pub ttl: Duration,
    /// The queried name (normalized), for listings and logs.
    pub domain: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    ends: Endpoints,
    id: u16,
}

#[derive(Debug)]
struct Pending {
    name: Name,
    qtype: RecordType,
    deadline: Instant,
}

/// Most CNAME hops followed from the question's name.
pub(crate) const MAX_CHAIN: usize = 16;

/// Watches queries and answers; see the module documentation.
#[derive(Debug)]
pub struct Observer {
    domains: DomainSet,
    /// Only answers from these servers count (all servers when empty).
    trusted: Vec<IpAddr>,
    limits: Limits,
    pending: HashMap<Key, Pending>,
    /// Insertion order with deadlines, for timeouts and the cap.
    order: VecDeque<(Instant, Key)>,
    stats: Stats,
}

impl Observer {
    /// An observer for `domains`.
    pub fn new(domains: DomainSet, limits: Limits) -> Self {
        Self {
            domains,
            trusted: Vec::new(),
            limits,
            pending: HashMap::new(),
            order: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Trusts answers only from these DNS servers (an empty list: from
    /// any server the queries go to). Without a list, anyone who can make
    /// a LAN client resolve a listed name through a server they control
    /// (a wildcard like `*.example.com` makes that easy) chooses which
    /// addresses bypass; with one, only the operator's resolvers do.
    #[must_use]
    pub fn with_trusted_servers(mut self, servers: Vec<IpAddr>) -> Self {
        self.trusted = servers;
        self
    }

    /// Watches `domains` from now on (a policy reload); queries in flight
    /// for names no longer listed are still matched against their answer.
    pub fn set_domains(&mut self, domains: DomainSet) {
        self.domains = domains;
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Queries awaiting an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A query went from `ends.client` to `ends.server`. Returns whether it
    /// is tracked (a standard query for a listed name).
    pub fn handle_query(&mut self, now: Instant, ends: Endpoints, msg: &[u8]) -> Result<(), Drop> {
        self.expire(now);
        let Ok(m) = Message::from_vec(msg) else {
            self.stats.malformed += 1;
            return Err(Drop::Malformed);
        };
        if m.message_type() != MessageType::Query || m.op_code() != OpCode::Query {
            return Err(Drop::NotListed);
        }
        let [q] = m.queries() else {
            return Err(Drop::NotListed);
        };
        if q.query_class() != DNSClass::IN
            || !matches!(
                q.query_type(),
                RecordType::A | RecordType::AAAA | RecordType::ANY
            )
            || !self.domains.matches(&normalize(&q.name().to_ascii()))
        {
            return Err(Drop::NotListed);
        }
        if !self.trusted.is_empty() && !self.trusted.contains(&ends.server.ip()) {
            self.stats.untrusted_server += 1;
            return Err(Drop::UntrustedServer);
        }
        let key = Key { ends, id: m.id() };
        if self.pending.len() >= self.limits.max_pending && !self.pending.contains_key(&key) {
            while let Some((_, old)) = self.order.pop_front() {
                if self.pending.remove(&old).is_some() {
                    self.stats.pending_overflow += 1;
                    break;
                }
            }
        }
        let deadline = now + self.limits.query_timeout;
        self.pending.insert(
            key,
            Pending {
                name: q.name().clone(),
                qtype: q.query_type(),
                deadline,
            },
        );
        self.order.push_back((deadline, key));
        self.stats.queries += 1;
        Ok(())
    }

    /// A response came back from `ends.server` to `ends.client` (the
    /// query's endpoints, not swapped). Appends the addresses to install
    /// to `out`.
    pub fn handle_response(
        &mut self,
        now: Instant,
        ends: Endpoints,
        msg: &[u8],
        out: &mut Vec<Answer>,
    ) -> Result<(), Drop> {
        self.expire(now);
        let Ok(m) = Message::from_vec(msg) else {
            self.stats.malformed += 1;
            return Err(Drop::Malformed);
        };
        let key = Key { ends, id: m.id() };
        if m.message_type() != MessageType::Response || !self.pending.contains_key(&key) {
            self.stats.unsolicited += 1;
            return Err(Drop::Unsolicited);
        }
        let p = &self.pending[&key];
        let same_question = matches!(m.queries(), [q] if q.name() == &p.name
            && q.query_type() == p.qtype
            && q.query_class() == DNSClass::IN);
        if !same_question || m.op_code() != OpCode::Query {
            // Not consumed: the real answer may still come.
            self.stats.question_mismatch += 1;
            return Err(Drop::QuestionMismatch);
        }
        let Some(p) = self.pending.remove(&key) else {
            return Err(Drop::Unsolicited);
        };
        if m.truncated() {
            self.stats.truncated += 1;
            return Err(Drop::Truncated);
        }
        if m.response_code() != ResponseCode::NoError {
            self.stats.error_code += 1;
            return Err(Drop::ErrorCode);
        }
        self.stats.answers += 1;
        let domain = normalize(&p.name.to_ascii());
        // Follow the CNAME chain from the question's name; each link's
        // TTL bounds what is reachable through it.
        let mut chain: Vec<(&Name, u32)> = vec![(&p.name, u32::MAX)];
        loop {
            let (cur, ttl) = chain[chain.len() - 1];
            let next = m.answers().iter().find_map(|r| match r.data() {
                RData::CNAME(c) if r.dns_class() == DNSClass::IN && r.name() == cur => {
                    Some((&c.0, ttl.min(r.ttl())))
                }
                _ => None,
            });
            match next {
                Some(n) if !chain.iter().any(|(x, _)| *x == n.0) => {
                    if chain.len() > MAX_CHAIN {
                        // MAX_CHAIN hops followed and the chain goes on.
                        self.stats.long_chain += 1;
                        break;
                    }
                    chain.push(n);
                }
                _ => break,
            }
        }
        for r in m.answers() {
            if r.dns_class() != DNSClass::IN {
                continue;
            }
            let addr = match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            let Some((_, link_ttl)) = chain.iter().find(|(n, _)| *n == r.name()) else {
                continue;
            };
            if !is_unicast(addr) {
                self.stats.bad_address += 1;
                continue;
            }
            let secs = r.ttl().min(*link_ttl);
            let ttl = Duration::from_secs(u64::from(secs)).clamp(
                self.limits.ttl_floor,
                self.limits.ttl_cap.max(self.limits.ttl_floor),
            );
            out.push(Answer {
                addr,
                ttl,
                domain: domain.clone(),
            });
            self.stats.addresses += 1;
        }
        Ok(())
    }

    /// Forgets queries whose answer is overdue.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, key)) = self.order.front() {
            if deadline > now {
                break;
            }
            self.order.pop_front();
            if self
                .pending
                .get(&key)
                .is_some_and(|p| p.deadline == deadline)
            {
                self.pending.remove(&key);
                self.stats.timeouts += 1;
            }
        }
        // Entries answered (removed) leave stale order entries behind;
        // keep the queue bounded by the table's size.
        if self.order.len() > 2 * self.limits.max_pending.max(16) {
            let pending = &self.pending;
            self.order
                .retain(|(d, k)| pending.get(k).is_some_and(|p| p.deadline == *d));
        }
    }
}

/// Could `a` be a unicast destination on the internet or a LAN?
fn is_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_unspecified() || v.is_loopback() || v.is_multicast() || v.is_broadcast())
        }
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_loopback() || v.is_multicast()),
    }
}
