//! One edge's state inside a [`super::Selector`]: its connection phase,
//! addresses, probes in flight and RTT estimate. Nothing here decides
//! which edge is active; the selector does.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{Address, EdgeSpec, Failure};

/// Most addresses kept from one name's resolution.
pub(super) const MAX_ADDRS: usize = 8;

/// Where an edge's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Not connected and not trying (never tried, dropped as surplus, or
    /// its backoff over).
    Idle,
    /// A connection attempt, started at `since`.
    Connecting { since: Instant },
    /// Connected (the tunnel session is established) since `since`.
    Up { since: Instant },
    /// Failed; no attempt before `until`.
    Down { until: Instant },
}

/// Where an edge's name resolution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dns {
    /// The address is an IP literal: nothing to resolve.
    Literal,
    /// A `Resolve` was asked for at `since`; no answer yet.
    Pending { since: Instant },
    /// The last resolution gave addresses.
    Resolved,
    /// The last resolution failed (older addresses, if any, are kept).
    Failed,
}

/// One probe sent on an Up edge.
#[derive(Clone, Copy, Debug)]
struct Probe {
    seq: u64,
    sent: Instant,
    answered: bool,
}

/// A probe reply's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// A reply to a probe in flight: its RTT.
    Sample(Duration),
    /// Not a probe this edge has in flight (unknown, answered twice, from
    /// an earlier connection, or older than the window): ignored.
    Unknown,
}

/// One configured edge and everything the selector knows of it.
#[derive(Debug)]
pub(super) struct Edge {
    pub(super) spec: EdgeSpec,
    pub(super) state: State,
    pub(super) dns: Dns,
    /// The literal address, or the last resolution's (at most
    /// [`MAX_ADDRS`]).
    addrs: Vec<SocketAddr>,
    /// Which of `addrs` the next attempt uses (moves on after a failure).
    next_addr: usize,
    /// The address of the current (or last) attempt.
    pub(super) connected_to: Option<SocketAddr>,
    /// Consecutive failures (backoff doubles with each; reset after a
    /// connection stays up for the longest backoff).
    pub(super) failures: u32,
    pub(super) last_failure: Option<Failure>,
    /// How long the last successful attempt took.
    pub(super) connect_time: Option<Duration>,
    /// Probes in flight and recently answered, a ring indexed by
    /// `seq % len` (length `miss_count + 2`: an edge is Down before more
    /// are in flight).
    probes: Vec<Option<Probe>>,
    /// The next probe's sequence number (never reused on this edge, so a
    /// late reply from an earlier connection matches nothing).
    next_seq: u64,
    /// When the next probe is due (Up only).
    pub(super) next_probe: Instant,
    /// The send time of the newest answered probe, or when the edge came
    /// up: liveness counts from here.
    pub(super) last_alive: Instant,
    /// Since when the edge has had no missed probe (failback's
    /// stability).
    pub(super) stable_since: Instant,
    /// RTT moving average in nanoseconds.
    ewma_ns: Option<u64>,
    pub(super) last_rtt: Option<Duration>,
    pub(super) samples: u64,
    /// Consecutive samples in which this (standby) edge was clearly
    /// better than the active one.
    pub(super) streak: u32,
}

impl Edge {
    pub(super) fn new(spec: EdgeSpec, miss_count: u32, now: Instant) -> Self {
        let (dns, addrs) = match &spec.address {
            Address::Ip(a) => (Dns::Literal, vec![*a]),
            Address::Name { .. } => (Dns::Failed, Vec::with_capacity(MAX_ADDRS)),
        };
        Self {
            spec,
            state: State::Idle,
            dns,
            addrs,
            next_addr: 0,
            connected_to: None,
            failures: 0,
            last_failure: None,
            connect_time: None,
            probes: vec![None; miss_count as usize + 2],
            next_seq: 0,
            next_probe: now,
            last_alive: now,
            stable_since: now,
            ewma_ns: None,
            last_rtt: None,
            samples: 0,
            streak: 0,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    pub(super) fn is_down(&self) -> bool {
        matches!(self.state, State::Down { .. })
    }

    pub(super) fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }

    /// Whether a name resolution is in flight.
    pub(super) fn resolving(&self) -> bool {
        matches!(self.dns, Dns::Pending { .. })
    }

    /// A name whose addresses are unknown (none yet, or the last
    /// resolution failed and there were none before).
    pub(super) fn needs_resolution(&self) -> bool {
        matches!(self.spec.address, Address::Name { .. })
            && self.addrs.is_empty()
            && !self.resolving()
    }

    /// Idle with an address to try. A re-resolution in flight does not
    /// hold the attempt back: the last addresses are tried meanwhile (a
    /// resolver that hangs would otherwise delay every retry by the
    /// connect timeout), and a failed one leaves them in use.
    pub(super) fn ready(&self) -> bool {
        self.state == State::Idle && !self.addrs.is_empty()
    }

    /// The address the next attempt uses.
    pub(super) fn target(&self) -> Option<SocketAddr> {
        (!self.addrs.is_empty()).then(|| self.addrs[self.next_addr % self.addrs.len()])
    }

    /// A resolution's answer (the first [`MAX_ADDRS`] addresses).
    pub(super) fn set_addrs(&mut self, addrs: &[SocketAddr]) {
        self.addrs.clear();
        self.addrs.extend(addrs.iter().take(MAX_ADDRS).copied());
        self.next_addr %= self.addrs.len().max(1);
        self.dns = if self.addrs.is_empty() {
            Dns::Failed
        } else {
            Dns::Resolved
        };
    }

    /// The next attempt uses the next address.
    pub(super) fn rotate(&mut self) {
        self.next_addr = self.next_addr.wrapping_add(1);
    }

    /// RTT moving average.
    pub(super) fn rtt(&self) -> Option<Duration> {
        self.ewma_ns.map(Duration::from_nanos)
    }

    /// The edge came up: probing starts now.
    pub(super) fn up(&mut self, now: Instant, since_attempt: Duration) {
        self.state = State::Up { since: now };
        self.connect_time = Some(since_attempt);
        self.clear_probes(now);
    }

    /// Forgets probes, RTT and streak (a new connection, or none).
    pub(super) fn clear_probes(&mut self, now: Instant) {
        self.probes.fill(None);
        self.next_probe = now;
        self.last_alive = now;
        self.stable_since = now;
        self.ewma_ns = None;
        self.samples = 0;
        self.streak = 0;
    }

    /// Records a probe sent now; returns its sequence number.
    pub(super) fn send_probe(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = self.probes.len() as u64;
        self.probes[(seq % len) as usize] = Some(Probe {
            seq,
            sent: now,
            answered: false,
        });
        seq
    }

    /// The probe `seq` actually left at `now` (later than it was asked
    /// for): the RTT counts from here.
    pub(super) fn probe_sent(&mut self, seq: u64, now: Instant) {
        let len = self.probes.len() as u64;
        if let Some(p) = &mut self.probes[(seq % len) as usize]
            && p.seq == seq
            && !p.answered
            && now >= p.sent
        {
            p.sent = now;
        }
    }

    /// A reply to probe `seq` at `now`. `window` is the sample size of
    /// the moving average.
    pub(super) fn probe_reply(&mut self, seq: u64, now: Instant, window: u32) -> Reply {
        let len = self.probes.len() as u64;
        let Some(p) = &mut self.probes[(seq % len) as usize] else {
            return Reply::Unknown;
        };
        if p.seq != seq || p.answered || now < p.sent {
            return Reply::Unknown;
        }
        p.answered = true;
        let rtt = now - p.sent;
        self.last_alive = self.last_alive.max(p.sent);
        let sample = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        // An EWMA whose weight matches a `window`-sample moving average:
        // alpha = 2 / (window + 1).
        self.ewma_ns = Some(match self.ewma_ns {
            None => sample,
            Some(old) => {
                let delta = (i128::from(sample) - i128::from(old)) * 2 / (i128::from(window) + 1);
                u64::try_from(i128::from(old) + delta).unwrap_or(old)
            }
        });
        self.last_rtt = Some(rtt);
        self.samples += 1;
        Reply::Sample(rtt)
    }

    /// Consecutive probes, newest first, not answered within `interval`
    /// of being sent (probes younger than that are in flight, not
    /// missed).
    pub(super) fn misses(&self, now: Instant, interval: Duration) -> u32 {
        let len = self.probes.len() as u64;
        let mut n = 0;
        for k in 1..=len.min(self.next_seq) {
            let seq = self.next_seq - k;
            match self.probes[(seq % len) as usize] {
                Some(p) if p.seq == seq && !p.answered => {
                    if now.saturating_duration_since(p.sent) >= interval {
                        n += 1;
                    }
                }
                // Answered, or before this connection's first probe.
                _ => break,
            }
        }
        n
    }
}
