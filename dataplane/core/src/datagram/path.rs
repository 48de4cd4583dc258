//! Which transport one tunnel's packets take, sans I/O: the datagram
//! transport (UDP) while datagrams get through, the TLS stream otherwise.
//!
//! The TLS tunnel is always there (it authenticated the peer, it carries
//! the keys' derivation and the control frames); datagrams are the fast
//! path beside it. A [`Path`] is told what happened (the edge accepted or
//! refused the offer, a datagram authenticated, a UDP probe was answered)
//! and the time, and says which transport carries the packets now
//! ([`Path::uses_datagrams`]), when to send the next UDP echo probe
//! ([`Path::poll_probe`]) and what changed ([`Path::poll_event`]: the
//! caller tells the edge with a `DATAGRAM_USE` frame, logs, counts).
//!
//! # States
//! - `Tls`: the tenant's primary transport is TLS, or the edge refused
//!   datagrams (or never answered the offer within
//!   [`PathConfig::setup_timeout`]: an edge of an earlier release).
//! - `Offered`: waiting for the edge's answer; packets go by TLS.
//! - `Trying`: the edge accepted; UDP probes go every
//!   [`PathConfig::probe_interval`]; packets go by TLS until the first
//!   probe is answered (UDP blocked from the start never black-holes a
//!   packet).
//! - `Datagrams`: packets go by UDP. If no probe has been answered for
//!   [`PathConfig::fallback_after`] (probes go every interval), the path
//!   falls back. Only answered probes count: datagrams arriving from the
//!   edge prove the edge-to-gateway direction alone, and a path that
//!   loses everything the gateway sends must not stay on UDP because the
//!   edge keeps streaming.
//! - `Fallback`: packets go by TLS again; probes continue, and after
//!   [`PathConfig::recover_after`] probes answered in a row the path goes
//!   back to `Datagrams`.
//!
//! With [`PathConfig::fallback`] off (a tenant that must use UDP), the
//! states that would carry packets by TLS report [`PathEvent::Failed`]
//! instead: the caller takes the edge for dead (its selection moves the
//! traffic to another edge), and packets are dropped meanwhile, never
//! sent by the TLS stream the operator ruled out.
use std::time::{Duration, Instant};

/// A transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The datagram transport (UDP).
    Udp,
    /// The TLS stream.
    Tls,
}

impl Transport {
    /// For logs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tls => "tls",
        }
    }
}

/// A tenant's transport knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathConfig {
    /// The transport packets should take.
    pub primary: Transport,
    /// Whether TLS may carry them when datagrams do not get through.
    pub fallback: bool,
    /// UDP echo probes' interval.
    pub probe_interval: Duration,
    /// Silence on UDP (no datagram authenticated) after which packets
    /// move to TLS.
    pub fallback_after: Duration,
    /// Probes answered in a row before packets move back to UDP.
    pub recover_after: u32,
    /// How long to wait for the edge's answer to the offer.
    pub setup_timeout: Duration,
}

/// [`PathConfig::probe_interval`]'s default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// [`PathConfig::fallback_after`]'s default: with the probe interval,
/// packets are on TLS within about 1.2 s of UDP's loss.
pub const DEFAULT_FALLBACK_AFTER: Duration = Duration::from_secs(1);
/// [`PathConfig::recover_after`]'s default.
pub const DEFAULT_RECOVER_AFTER: u32 = 3;
/// [`PathConfig::setup_timeout`]'s default.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            primary: Transport::Udp,
            fallback: true,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            fallback_after: DEFAULT_FALLBACK_AFTER,
            recover_after: DEFAULT_RECOVER_AFTER,
            setup_timeout: DEFAULT_SETUP_TIMEOUT,
        }
    }
}

/// Where a [`Path`] is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// TLS only.
    Tls,
    /// Offer sent, no answer yet.
    Offered,
    /// Accepted; no probe answered yet.
    Trying,
    /// Packets go by UDP.
    Datagrams,
    /// UDP went silent; packets go by TLS, probes continue.
    Fallback,
    /// UDP failed and fallback is off: the edge is unusable.
    Failed,
}

impl PathState {
    /// For status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Offered => "offered",
            Self::Trying => "trying",
            Self::Datagrams => "datagrams",
            Self::Fallback => "fallback",
            Self::Failed => "failed",
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEvent {
    /// Packets now take this transport (tell the edge: `DATAGRAM_USE`).
    Switched(Transport),
    /// UDP does not work and fallback is off: take the edge for dead.
    Failed,
}

/// One tunnel's transport choice.
#[derive(Debug, Clone)]
pub struct Path {
    cfg: PathConfig,
    state: PathState,
    /// When the state was entered.
    since: Instant,
    /// The last authenticated datagram.
    last_rx: Option<Instant>,
    /// The last answered probe (both directions work).
    last_answer: Option<Instant>,
    /// When the next probe is due (states that probe).
    next_probe: Option<Instant>,
    /// Probes answered in a row.
    streak: u32,
    /// Whether the last probe sent has been answered.
    answered: bool,
    events: std::collections::VecDeque<PathEvent>,
}

impl Path {
    /// A path for a tunnel whose TLS session is established at `now`:
    /// with UDP primary the caller sends `DATAGRAM_OFFER` now
    /// ([`Path::state`] is `Offered`); with TLS primary nothing is
    /// offered.
    pub fn new(cfg: PathConfig, now: Instant) -> Self {
        let state = match cfg.primary {
            Transport::Udp => PathState::Offered,
            Transport::Tls => PathState::Tls,
        };
        Self {
            cfg,
            state,
            since: now,
            last_rx: None,
            last_answer: None,
            next_probe: None,
            streak: 0,
            answered: true,
            events: std::collections::VecDeque::new(),
        }
    }

    /// Where it is.
    pub fn state(&self) -> PathState {
        self.state
    }

    /// Since when.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Whether packets go by UDP now.
    pub fn uses_datagrams(&self) -> bool {
        self.state == PathState::Datagrams
    }

    /// Whether packets may go by TLS now (`false` with fallback off and
    /// UDP primary, except on the path to a plain TLS edge: none).
    pub fn tls_allowed(&self) -> bool {
        match self.state {
            PathState::Tls => true,
            PathState::Datagrams | PathState::Failed => false,
            PathState::Offered | PathState::Trying | PathState::Fallback => self.cfg.fallback,
        }
    }

    /// The edge accepted the offer: probes start.
    pub fn handle_accepted(&mut self, now: Instant) {
        if self.state == PathState::Offered {
            self.enter(PathState::Trying, now);
            self.next_probe = Some(now);
        }
    }

    /// The edge refused datagrams (or cannot have them).
    pub fn handle_refused(&mut self, now: Instant) {
        if matches!(self.state, PathState::Offered | PathState::Trying) {
            self.give_up(now);
        }
    }

    /// A datagram authenticated (data or an echo reply): the edge to
    /// gateway direction works (for status; the fallback waits for
    /// answered probes, which prove both directions).
    pub fn handle_received(&mut self, now: Instant) {
        self.last_rx = Some(now);
    }

    /// The last authenticated datagram, if any.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_rx
    }

    /// A UDP echo probe was answered.
    pub fn handle_probe_reply(&mut self, now: Instant) {
        self.last_rx = Some(now);
        self.last_answer = Some(now);
        if !self.answered {
            self.answered = true;
            self.streak = self.streak.saturating_add(1);
        }
        match self.state {
            PathState::Trying => self.switch(PathState::Datagrams, now),
            PathState::Fallback if self.streak >= self.cfg.recover_after => {
                self.switch(PathState::Datagrams, now);
            }
            _ => {}
        }
    }

    /// Whether a UDP probe is due now; if so it counts as sent (send it).
    pub fn poll_probe(&mut self, now: Instant) -> bool {
        match self.next_probe {
            Some(t) if now >= t => {
                if !self.answered {
                    self.streak = 0;
                }
                self.answered = false;
                // No drift: the next one an interval after this one was
                // due, unless the caller is late by more than that.
                let next = t + self.cfg.probe_interval;
                self.next_probe = Some(if next > now {
                    next
                } else {
                    now + self.cfg.probe_interval
                });
                true
            }
            _ => false,
        }
    }

    /// The time's come: offers time out, silent UDP falls back.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            PathState::Offered if now >= self.since + self.cfg.setup_timeout => self.give_up(now),
            PathState::Datagrams => {
                let last = self.last_answer.unwrap_or(self.since).max(self.since);
                if now >= last + self.cfg.fallback_after {
                    self.streak = 0;
                    if self.cfg.fallback {
                        self.switch(PathState::Fallback, now);
                    } else {
                        self.fail(now);
                    }
                }
            }
            PathState::Trying
                if !self.cfg.fallback && now >= self.since + self.cfg.setup_timeout =>
            {
                self.fail(now);
            }
            _ => {}
        }
    }

    /// When [`Path::handle_timeout`] or [`Path::poll_probe`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            PathState::Offered => Some(self.since + self.cfg.setup_timeout),
            PathState::Datagrams => Some(
                self.last_answer.unwrap_or(self.since).max(self.since) + self.cfg.fallback_after,
            ),
            PathState::Trying if !self.cfg.fallback => Some(self.since + self.cfg.setup_timeout),
            _ => None,
        };
        match (state, self.next_probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What changed, once each.
    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }

    fn enter(&mut self, state: PathState, now: Instant) {
        self.state = state;
        self.since = now;
    }

    fn switch(&mut self, state: PathState, now: Instant) {
        let before = self.uses_datagrams();
        self.enter(state, now);
        if before != self.uses_datagrams() {
            self.events
                .push_back(PathEvent::Switched(if self.uses_datagrams() {
                    Transport::Udp
                } else {
                    Transport::Tls
                }));
        }
    }

    /// No datagrams from this edge: TLS if allowed, else failed.
    fn give_up(&mut self, now: Instant) {
        self.next_probe = None;
        if self.cfg.fallback {
            self.switch(PathState::Tls, now);
        } else {
            self.fail(now);
        }
    }

    fn fail(&mut self, now: Instant) {
        self.next_probe = None;
        let was = self.uses_datagrams();
        self.enter(PathState::Failed, now);
        if was {
            self.events.push_back(PathEvent::Switched(Transport::Tls));
        }
        self.events.push_back(PathEvent::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn events(p: &mut Path) -> Vec<PathEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    /// Runs `p` from `from` to `to` in 10 ms steps, answering every probe
    /// when `up` says the path works at that time; returns the events
    /// with their times.
    fn run(
        p: &mut Path,
        from: Instant,
        to: Instant,
        up: impl Fn(Instant) -> bool,
    ) -> Vec<(Duration, PathEvent)> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= to {
            p.handle_timeout(now);
            if p.poll_probe(now) && up(now) {
                // Answered one millisecond later (the next step).
                p.handle_probe_reply(now + MS);
            }
            for e in events(p) {
                out.push((now - from, e));
            }
            now += 10 * MS;
        }
        out
    }

    #[test]
    fn tls_primary_never_offers_or_probes() {
        let t0 = Instant::now();
        let mut p = Path::new(
            PathConfig {
                primary: Transport::Tls,
                ..PathConfig::default()
            },
            t0,
        );
        assert_eq!(p.state(), PathState::Tls);
        assert!(p.tls_allowed());
        assert!(!p.poll_probe(t0 + Duration::from_secs(10)));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn an_edge_that_never_answers_the_offer_leaves_tls() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        assert_eq!(p.state(), PathState::Offered);
        assert!(p.tls_allowed(), "packets go by TLS while the offer waits");
        p.handle_timeout(t0 + Duration::from_millis(1999));
        assert_eq!(p.state(), PathState::Offered);
        p.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(p.state(), PathState::Tls);
        assert!(events(&mut p).is_empty(), "never left TLS: nothing to tell");
    }

    #[test]
    fn accepted_then_first_answer_moves_packets_to_udp() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        p.handle_accepted(t0);
        assert_eq!(p.state(), PathState::Trying);
        assert!(!p.uses_datagrams(), "not before UDP is shown to work");
        assert!(p.poll_probe(t0));
        assert!(!p.poll_probe(t0 + MS), "one per interval");
        p.handle_probe_reply(t0 + 2 * MS);
        assert!(p.uses_datagrams());
        assert_eq!(events(&mut p), [PathEvent::Switched(Transport::Udp)]);
    }

    #[test]
    fn udp_blocked_from_the_start_stays_on_tls() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        p.handle_accepted(t0);
        let ev = run(&mut p, t0, t0 + Duration::from_secs(5), |_| false);
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(p.state(), PathState::Trying);
        assert!(p.tls_allowed());
    }

    #[test]
    fn udp_lost_falls_back_within_the_bound_and_returns() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        p.handle_accepted(t0);
        // UDP works, then is blocked from 3 s to 6 s.
        let blocked = |t: Instant| {
            let s = (t - t0).as_secs_f64();
            !(3.0..6.0).contains(&s)
        };
        let ev = run(&mut p, t0, t0 + Duration::from_secs(9), blocked);
        let kinds: Vec<_> = ev.iter().map(|e| e.1).collect();
        assert_eq!(
            kinds,
            [
                PathEvent::Switched(Transport::Udp),
                PathEvent::Switched(Transport::Tls),
                PathEvent::Switched(Transport::Udp),
            ]
        );
        // Fallback within about 1.2 s of the block (the last answer was
        // at most one interval before it); return after 3 answers.
        let to_tls = ev[1].0.as_secs_f64();
        assert!((3.0..=4.3).contains(&to_tls), "fell back at {to_tls}");
        let back = ev[2].0.as_secs_f64();
        assert!((6.0..=7.0).contains(&back), "returned at {back}");
    }

    #[test]
    fn data_keeps_the_path_alive_and_one_lost_probe_is_no_fallback() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        p.handle_accepted(t0);
        // Only every third probe is answered: silence never reaches 1 s.
        let mut now = t0;
        let mut n = 0;
        while now < t0 + Duration::from_secs(5) {
            p.handle_timeout(now);
            if p.poll_probe(now) {
                n += 1;
                if n % 3 == 1 {
                    p.handle_probe_reply(now + MS);
                }
            }
            now += 10 * MS;
        }
        assert!(p.uses_datagrams());
    }

    #[test]
    fn without_fallback_udp_loss_fails_the_edge_and_tls_is_never_allowed() {
        let t0 = Instant::now();
        let cfg = PathConfig {
            fallback: false,
            ..PathConfig::default()
        };
        let mut p = Path::new(cfg, t0);
        assert!(!p.tls_allowed());
        p.handle_accepted(t0);
        let ev = run(&mut p, t0, t0 + Duration::from_secs(3), |t| {
            t < t0 + Duration::from_secs(1)
        });
        let kinds: Vec<_> = ev.iter().map(|e| e.1).collect();
        assert_eq!(
            kinds,
            [
                PathEvent::Switched(Transport::Udp),
                PathEvent::Switched(Transport::Tls),
                PathEvent::Failed
            ]
        );
        assert_eq!(p.state(), PathState::Failed);
        assert!(!p.tls_allowed() && !p.uses_datagrams());
        // Refused outright: failed too.
        let mut q = Path::new(cfg, t0);
        q.handle_refused(t0);
        assert_eq!(events(&mut q), [PathEvent::Failed]);
    }

    #[test]
    fn refusal_keeps_tls() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        p.handle_refused(t0);
        assert_eq!(p.state(), PathState::Tls);
        assert!(p.tls_allowed());
        assert!(events(&mut p).is_empty());
    }
}

/// Review h24 (issue 16): findings shown as failing tests.
#[cfg(test)]
mod review_h24 {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Any authenticated datagram from the edge keeps the path on UDP
    /// (`handle_received` moves `last_rx`), but it proves only the edge
    /// to gateway direction. If gateway-to-edge datagrams are lost (an
    /// egress UDP filter on the branch, or one whose inbound conntrack
    /// entry outlives the block) while the edge keeps sending a
    /// downstream flow (a stream, a call, retransmissions), no probe is
    /// answered for as long as the flow lasts and the path never falls
    /// back: every upstream packet of the tenant is black-holed.
    #[test]
    fn review_h24_gateway_to_edge_loss_is_hidden_by_downstream_data() {
        let t0 = Instant::now();
        let mut p = Path::new(PathConfig::default(), t0);
        p.handle_accepted(t0);
        let mut now = t0;
        while now < t0 + Duration::from_secs(10) {
            p.handle_timeout(now);
            // Both ways for 2 s, then only edge -> gateway.
            let upstream_ok = now < t0 + Duration::from_secs(2);
            if p.poll_probe(now) && upstream_ok {
                p.handle_probe_reply(now + MS);
            }
            // A downstream packet every 20 ms authenticates.
            p.handle_received(now);
            now += 20 * MS;
        }
        assert!(
            !p.uses_datagrams(),
            "8 s without an answered probe and packets still go by UDP ({:?})",
            p.state()
        );
    }
}
