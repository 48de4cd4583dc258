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
//! Queries go into the tunnel at once (a copy is observed); answers wait
//! for the bypass thread, a few microseconds. A full queue drops the
//! answer and counts it (`sluice_gateway_drop_dns_queue_full_total`; the
//! client asks again) rather than let it reach the client before its
//! addresses are installed. Buffers travel back with the answers (and the
//! queries' copies) and are reused: no allocation per DNS message once a
//! worker's pool is warm.
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

/// Messages on their way to the bypass thread, from all workers.
const JOBS: usize = 1024;
/// Messages on their way back to one worker.
const RETURNS: usize = JOBS;
/// Buffers a worker keeps for reuse.
const POOL: usize = 64;
/// A buffer's starting capacity (an MTU-sized segment fits).
const BUF: usize = 2048;
/// Longest sleep of the bypass thread (stop, heartbeat, expiry).
const IDLE: Duration = Duration::from_millis(100);
/// How often the bypass thread drops expired addresses.
const EXPIRE_EVERY: Duration = Duration::from_millis(100);

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
        Arc::new(Self {
            jobs: ArrayQueue::new(JOBS),
            backs: (0..workers)
                .map(|_| Back {
                    queue: ArrayQueue::new(RETURNS),
                    waker: OnceLock::new(),
                })
                .collect(),
            thread: OnceLock::new(),
            watching,
        })
    }

    /// Worker `index`'s end, waking its poller with `waker`. `None` if
    /// the index is out of range or already taken.
    pub(super) fn port(self: &Arc<Self>, index: usize, waker: mio::Waker) -> Option<DnsPort> {
        self.backs.get(index)?.waker.set(waker).ok()?;
        Some(DnsPort {
            relay: self.clone(),
            index,
            pool: Vec::with_capacity(POOL),
            pushed: false,
        })
    }
}

/// What a worker's divert step did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Divert {
    /// Not DNS (or nothing watched): the worker carries on with it.
    No,
    /// Queued for the bypass thread; it comes back.
    Queued,
    /// The queue was full: the answer is dropped (counted by the caller).
    Full,
}

/// A worker's end of the relay.
#[derive(Debug)]
pub(super) struct DnsPort {
    relay: Arc<DnsRelay>,
    index: usize,
    pool: Vec<Vec<u8>>,
    /// Jobs were queued since the last [`DnsPort::wake`].
    pushed: bool,
}

impl DnsPort {
    fn watching(&self) -> bool {
        self.relay.watching.load(Relaxed)
    }

    fn push(&mut self, kind: Kind, pkt: &ip::Packet<'_>) -> Result<(), ()> {
        let mut packet = self.pool.pop().unwrap_or_else(|| Vec::with_capacity(BUF));
        packet.clear();
        packet.extend_from_slice(pkt.as_bytes());
        let job = Job {
            worker: self.index,
            kind,
            packet,
        };
        match self.relay.jobs.push(job) {
            Ok(()) => {
                self.pushed = true;
                Ok(())
            }
            Err(job) => {
                self.recycle(job.packet);
                Err(())
            }
        }
    }

    /// A LAN packet on its way into the tunnel: if it is a DNS query, a
    /// copy goes to the bypass thread (the packet itself goes on at once).
    /// `false` if the copy was lost to a full queue (the answer then
    /// installs nothing: its addresses stay tunnelled).
    pub(super) fn query(&mut self, pkt: &ip::Packet<'_>) -> bool {
        if !self.watching() || !super::domains::is_dns(pkt, true) {
            return true;
        }
        self.push(Kind::Query, pkt).is_ok()
    }

    /// A packet from tenant `tenant`'s tunnel on its way to the LAN: a DNS
    /// answer goes to the bypass thread and comes back later.
    pub(super) fn answer(&mut self, pkt: &ip::Packet<'_>, tenant: usize) -> Divert {
        if !self.watching() || !super::domains::is_dns(pkt, false) {
            return Divert::No;
        }
        match self.push(Kind::Answer { tenant }, pkt) {
            Ok(()) => Divert::Queued,
            Err(()) => Divert::Full,
        }
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

    /// Keeps `buf` for the next message.
    pub(super) fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL {
            self.pool.push(buf);
        }
    }
}

/// The bypass thread's body: observes every job, installs answers'
/// addresses (through `domains`), hands the jobs back to their workers,
/// drops expired addresses; until `stop`. Bumps `beat` at least every
/// [`IDLE`].
pub(crate) fn serve(relay: &DnsRelay, domains: &DomainBypass, stop: &AtomicBool, beat: &Heartbeat) {
    let _ = relay.thread.set(std::thread::current());
    let mut woken = vec![false; relay.backs.len()];
    let mut next_expiry = Instant::now();
    let mut lost_returns: u64 = 0;
    while !stop.load(Relaxed) {
        beat.beat();
        let mut handled = 0usize;
        while let Some(job) = relay.jobs.pop() {
            handle(domains, &job);
            let w = job.worker;
            if let Some(back) = relay.backs.get(w) {
                if back.queue.push(job).is_err() {
                    // The worker is not draining (its watchdog will say
                    // so): the answer is dropped.
                    lost_returns += 1;
                }
                woken[w] = true;
            }
            handled += 1;
            if handled.is_multiple_of(256) {
                beat.beat();
                wake(relay, &mut woken);
            }
            if stop.load(Relaxed) {
                break;
            }
        }
        wake(relay, &mut woken);
        if lost_returns != 0 {
            domains.count_lost_returns(std::mem::take(&mut lost_returns));
        }
        let now = Instant::now();
        if now >= next_expiry {
            domains.expire(now);
            next_expiry = now + EXPIRE_EVERY;
        }
        if handled == 0 && relay.jobs.is_empty() {
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
        assert!(port.query(&ip::Packet::new_checked(&query).unwrap()));
        assert_eq!(relay.jobs.pop().unwrap().kind, Kind::Query);
        assert!(port.query(&a));
        assert!(relay.jobs.is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_answer_and_a_port_is_taken_once() {
        let relay = DnsRelay::new(1, Arc::new(AtomicBool::new(true)));
        let (_p, w) = waker();
        let mut port = relay.port(0, w).unwrap();
        let (_p2, w2) = waker();
        assert!(relay.port(0, w2).is_none(), "one worker per index");
        let answer = udp(53, 40000);
        let a = ip::Packet::new_checked(&answer).unwrap();
        for _ in 0..JOBS {
            assert_eq!(port.answer(&a, 0), Divert::Queued);
        }
        assert_eq!(port.answer(&a, 0), Divert::Full);
        assert_eq!(relay.jobs.len(), JOBS);
    }
}
