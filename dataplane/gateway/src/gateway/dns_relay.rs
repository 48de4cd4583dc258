//! The workers' way to the domain bypass, off their packet path: a worker
//! copies each DNS message it carries (UDP or TCP with port 53 on the
//! server's side) into a [`Job`] on one bounded lock-free queue and goes
//! on; the domain bypass thread ([`serve`]) observes it, installs an
//! answer's addresses in the kernel's tables, and hands the answer back
//! to the worker that carried it (its own bounded queue, and a
//! [`mio::Waker`]), which only then transmits it to the LAN. So the
//! client's first packet to an answered address is bypassed, as before,
//! while no worker takes a lock another worker takes or updates a map.
//!
//! Every DNS message waits for the bypass thread's verdict in the same
//! way: a query goes into the tunnel only once its copy is queued (else it
//! is dropped and counted, and the client asks again: an answer to an
//! unobserved query would install nothing, and a private-access domain's
//! addresses would then go direct), an answer reaches the client only
//! after it was observed. One FIFO queue keeps each worker's query before
//! its answer.
//!
//! Memory is bounded and preallocated: each worker owns [`QUERY_CREDITS`]
//! and [`ANSWER_CREDITS`] buffers of [`BUF`] bytes; a message takes one and
//! it comes back with the job. A worker with no credit left drops the
//! message and counts it (`sluice_gateway_drop_dns_queue_full_total`), so
//! a flood through one worker never takes another worker's share, queries
//! never take the answers' share, and no worker allocates per message. The
//! queues hold every credit, so no push fails.
//!
//! Nothing is diverted while the policy names no domain.
use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::Thread,
    time::{Duration, Instant},
};

use crossbeam_queue::ArrayQueue;

use super::{domains::DomainBypass, supervise::Heartbeat};
use crate::wire::ip;

/// Query copies one worker may have in flight.
const QUERY_CREDITS: usize = 128;
/// Answers one worker may have in flight.
const ANSWER_CREDITS: usize = 128;
/// A buffer's size: the longest DNS packet observed (a jumbo frame's IP
/// packet); a longer one is dropped and counted.
const BUF: usize = 9216;
/// Longest sleep of the bypass thread (stop, heartbeat, expiry).
const IDLE: Duration = Duration::from_millis(100);
/// How often the bypass thread drops expired addresses (also while a
/// flood keeps its queue busy).
const EXPIRE_EVERY: Duration = Duration::from_millis(100);
/// Jobs between the bypass thread's heartbeats and expiry checks.
const TURN: usize = 256;

/// What a job carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A copy of a query on its way into the tunnel (it was sent): only
    /// observed; the buffer comes back for reuse.
    Query,
    /// An answer from tenant `tenant`'s tunnel, held until observed; it
    /// comes back to be transmitted.
    Answer { tenant: usize },
}

/// One DNS packet (IP, from its header on) and where it came from.
#[derive(Debug)]
pub(super) struct Job {
    worker: usize,
    pub(super) kind: Kind,
    pub(super) packet: Vec<u8>,
}

/// A worker's return queue.
#[derive(Debug)]
struct Back {
    queue: ArrayQueue<Job>,
    /// Set by the worker when it registers (before it runs).
    waker: OnceLock<mio::Waker>,
}

/// Shared by the workers and the bypass thread.
#[derive(Debug)]
pub(crate) struct DnsRelay {
    /// Holds every credit of every worker: a push never fails.
    jobs: ArrayQueue<Job>,
    backs: Vec<Back>,
    /// The bypass thread, to unpark (set when it starts; jobs queued
    /// before wait for it).
    thread: OnceLock<Thread>,
    /// Whether the policy names any domain (else nothing is diverted):
    /// [`DomainBypass::watching`].
    watching: Arc<AtomicBool>,
}

impl DnsRelay {
    /// A relay for `workers` workers (indices `0..workers`) that diverts
    /// while `watching` is set.
    pub(crate) fn new(workers: usize, watching: Arc<AtomicBool>) -> Arc<Self> {
        let credits = QUERY_CREDITS + ANSWER_CREDITS;
        Arc::new(Self {
            jobs: ArrayQueue::new((workers * credits).max(1)),
            backs: (0..workers)
                .map(|_| Back {
                    queue: ArrayQueue::new(credits),
                    waker: OnceLock::new(),
                })
                .collect(),
            thread: OnceLock::new(),
            watching,
        })
    }

    /// Worker `index`'s end, waking its poller with `waker`, with its
    /// credits allocated. `None` if the index is out of range or already
    /// taken.
    pub(super) fn port(self: &Arc<Self>, index: usize, waker: mio::Waker) -> Option<DnsPort> {
        self.backs.get(index)?.waker.set(waker).ok()?;
        let pool = |n| (0..n).map(|_| Vec::with_capacity(BUF)).collect();
        Some(DnsPort {
            relay: self.clone(),
            index,
            queries: pool(QUERY_CREDITS),
            answers: pool(ANSWER_CREDITS),
            pushed: false,
        })
    }
}

/// What a worker's divert step did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Divert {
    /// Not DNS to observe (or nothing watched): the worker carries on.
    No,
    /// Queued for the bypass thread (a query's copy: the query goes on;
    /// an answer: it comes back).
    Queued,
    /// No credit left, or too long: the packet is dropped (counted by
    /// the caller).
    Full,
}

/// A worker's end of the relay: its credits.
#[derive(Debug)]
pub(super) struct DnsPort {
    relay: Arc<DnsRelay>,
    index: usize,
    /// Free buffers: the query copies' credits, the answers'.
    queries: Vec<Vec<u8>>,
    answers: Vec<Vec<u8>>,
    /// Jobs were queued since the last [`DnsPort::wake`].
    pushed: bool,
}

impl DnsPort {
    fn watching(&self) -> bool {
        self.relay.watching.load(Relaxed)
    }

    fn push(&mut self, kind: Kind, pkt: &ip::Packet<'_>) -> Divert {
        let bytes = pkt.as_bytes();
        let pool = match kind {
            Kind::Query => &mut self.queries,
            Kind::Answer { .. } => &mut self.answers,
        };
        if bytes.len() > BUF {
            return Divert::Full;
        }
        let Some(mut packet) = pool.pop() else {
            return Divert::Full;
        };
        packet.clear();
        packet.extend_from_slice(bytes);
        let job = Job {
            worker: self.index,
            kind,
            packet,
        };
        match self.relay.jobs.push(job) {
            Ok(()) => {
                self.pushed = true;
                Divert::Queued
            }
            // Cannot happen (the queue holds every credit); the credit
            // stays.
            Err(job) => {
                self.recycle(job.kind, job.packet);
                Divert::Full
            }
        }
    }

    /// A LAN packet on its way into the tunnel: a DNS query's copy goes
    /// to the bypass thread; [`Divert::Full`]: the query must be dropped
    /// (its answer would install nothing).
    pub(super) fn query(&mut self, pkt: &ip::Packet<'_>) -> Divert {
        if !self.watching() || !super::domains::is_dns(pkt, true) {
            return Divert::No;
        }
        self.push(Kind::Query, pkt)
    }

    /// A packet from tenant `tenant`'s tunnel on its way to the LAN: a DNS
    /// answer goes to the bypass thread and comes back later.
    pub(super) fn answer(&mut self, pkt: &ip::Packet<'_>, tenant: usize) -> Divert {
        if !self.watching() || !super::domains::is_dns(pkt, false) {
            return Divert::No;
        }
        self.push(Kind::Answer { tenant }, pkt)
    }

    /// Wakes the bypass thread if this worker queued anything since the
    /// last call (once per loop turn).
    pub(super) fn wake(&mut self) {
        if std::mem::take(&mut self.pushed)
            && let Some(t) = self.relay.thread.get()
        {
            t.unpark();
        }
    }

    /// The next job the bypass thread is done with.
    pub(super) fn returned(&mut self) -> Option<Job> {
        self.relay.backs[self.index].queue.pop()
    }

    /// Whether anything came back.
    pub(super) fn has_returns(&self) -> bool {
        !self.relay.backs[self.index].queue.is_empty()
    }

    /// Gives a job's buffer back to its credit pool.
    pub(super) fn recycle(&mut self, kind: Kind, buf: Vec<u8>) {
        match kind {
            Kind::Query => self.queries.push(buf),
            Kind::Answer { .. } => self.answers.push(buf),
        }
    }
}

/// The bypass thread's body: observes every job, installs answers'
/// addresses (through `domains`), hands the jobs back to their workers,
/// drops expired addresses (every [`EXPIRE_EVERY`], even under a flood);
/// until `stop`. Bumps `beat` at least every [`IDLE`] and every [`TURN`]
/// jobs.
pub(crate) fn serve(relay: &DnsRelay, domains: &DomainBypass, stop: &AtomicBool, beat: &Heartbeat) {
    let _ = relay.thread.set(std::thread::current());
    let mut fault = super::fault::Fault::for_thread("sluice-dns");
    let mut woken = vec![false; relay.backs.len()];
    let mut next_expiry = Instant::now();
    while !stop.load(Relaxed) {
        beat.beat();
        if super::fault::inject(&mut fault) {
            return;
        }
        domains.note_queue_depth(relay.jobs.len());
        let mut handled = 0;
        while handled < TURN
            && let Some(job) = relay.jobs.pop()
        {
            handle(domains, &job);
            let (w, kind) = (job.worker, job.kind);
            if let Some(back) = relay.backs.get(w) {
                // Cannot fail (a worker's return queue holds all its
                // credits); counted if it did.
                if back.queue.push(job).is_err() && matches!(kind, Kind::Answer { .. }) {
                    domains.count_lost_returns(1);
                }
                woken[w] = true;
            }
            handled += 1;
        }
        wake(relay, &mut woken);
        let now = Instant::now();
        if now >= next_expiry {
            domains.expire(now);
            next_expiry = now + EXPIRE_EVERY;
        }
        if handled < TURN && relay.jobs.is_empty() {
            std::thread::park_timeout(IDLE);
        }
    }
}

/// Wakes the workers that got something back.
fn wake(relay: &DnsRelay, woken: &mut [bool]) {
    for (w, flag) in woken.iter_mut().enumerate() {
        if std::mem::take(flag)
            && let Some(waker) = relay.backs[w].waker.get()
            && let Err(e) = waker.wake()
        {
            log::warn!("domain bypass: waking worker {w}: {e}");
        }
    }
}

fn handle(domains: &DomainBypass, job: &Job) {
    // Checked by the worker; a packet that no longer parses is only not
    // observed.
    let Ok(pkt) = ip::Packet::new_checked(&job.packet) else {
        return;
    };
    match job.kind {
        Kind::Query => domains.on_lan_packet(&pkt),
        Kind::Answer { .. } => domains.on_tunnel_packet(&pkt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let payload = [0u8; 12];
        let b = etherparse::PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 53], 64)
            .udp(sport, dport);
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    fn waker() -> (mio::Poll, mio::Waker) {
        let poll = mio::Poll::new().unwrap();
        let w = mio::Waker::new(poll.registry(), mio::Token(9)).unwrap();
        (poll, w)
    }

    #[test]
    fn nothing_is_diverted_until_a_domain_is_watched_then_only_dns() {
        let watching = Arc::new(AtomicBool::new(false));
        let relay = DnsRelay::new(1, watching.clone());
        let (_p, w) = waker();
        let mut port = relay.port(0, w).unwrap();
        let answer = udp(53, 40000);
        let data = udp(443, 40000);
        let a = ip::Packet::new_checked(&answer).unwrap();
        let d = ip::Packet::new_checked(&data).unwrap();
        assert_eq!(port.answer(&a, 0), Divert::No);
        watching.store(true, Relaxed);
        assert_eq!(port.answer(&d, 0), Divert::No);
        assert_eq!(port.answer(&a, 2), Divert::Queued);
        let job = relay.jobs.pop().unwrap();
        assert_eq!(job.kind, Kind::Answer { tenant: 2 });
        assert_eq!(job.packet, answer);
        // A query from the LAN (to port 53) is copied, an answer-shaped
        // packet going out is not.
        let query = udp(40000, 53);
        assert_eq!(
            port.query(&ip::Packet::new_checked(&query).unwrap()),
            Divert::Queued
        );
        assert_eq!(relay.jobs.pop().unwrap().kind, Kind::Query);
        assert_eq!(port.query(&a), Divert::No);
        assert!(relay.jobs.is_empty());
    }

    #[test]
    fn credits_bound_each_worker_and_each_kind_and_come_back() {
        let relay = DnsRelay::new(2, Arc::new(AtomicBool::new(true)));
        let (_p, w) = waker();
        let mut port = relay.port(0, w).unwrap();
        let (_p1, w1) = waker();
        let mut other = relay.port(1, w1).unwrap();
        let (_p2, w2) = waker();
        assert!(relay.port(0, w2).is_none(), "one worker per index");
        let answer = udp(53, 40000);
        let query = udp(40000, 53);
        let a = ip::Packet::new_checked(&answer).unwrap();
        let q = ip::Packet::new_checked(&query).unwrap();
        // A query flood takes the queries' credits only.
        for _ in 0..QUERY_CREDITS {
            assert_eq!(port.query(&q), Divert::Queued);
        }
        assert_eq!(port.query(&q), Divert::Full);
        assert_eq!(port.answer(&a, 0), Divert::Queued);
        // Another worker has its own.
        assert_eq!(other.query(&q), Divert::Queued);
        // Jobs handed back return their credits.
        while let Some(job) = relay.jobs.pop() {
            relay.backs[job.worker].queue.push(job).unwrap();
        }
        while let Some(job) = port.returned() {
            port.recycle(job.kind, job.packet);
        }
        assert_eq!(port.queries.len(), QUERY_CREDITS);
        assert_eq!(port.answers.len(), ANSWER_CREDITS);
        assert_eq!(port.query(&q), Divert::Queued);
    }

    #[test]
    fn a_bare_ack_from_port_53_is_not_held_but_tcp_data_is() {
        let relay = DnsRelay::new(1, Arc::new(AtomicBool::new(true)));
        let (_p, w) = waker();
        let mut port = relay.port(0, w).unwrap();
        let tcp = |payload: &[u8], syn: bool| {
            let mut b = etherparse::PacketBuilder::ipv4([198, 51, 100, 53], [192, 0, 2, 10], 64)
                .tcp(53, 40000, 7, 1000)
                .ack(1);
            if syn {
                b = b.syn();
            }
            let mut out = Vec::new();
            b.write(&mut out, payload).unwrap();
            out
        };
        let ack = tcp(&[], false);
        let syn_ack = tcp(&[], true);
        let data = tcp(&[0, 12, 1, 2], false);
        assert_eq!(
            port.answer(&ip::Packet::new_checked(&ack).unwrap(), 0),
            Divert::No
        );
        assert_eq!(
            port.answer(&ip::Packet::new_checked(&syn_ack).unwrap(), 0),
            Divert::Queued
        );
        assert_eq!(
            port.answer(&ip::Packet::new_checked(&data).unwrap(), 0),
            Divert::Queued
        );
    }
}
