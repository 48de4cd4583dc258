//! The [`Selector`]: one tenant's edges, which is active, what to do next.
use std::{
    cmp::Ordering,
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{
    Action, Address, EdgeId, EdgeSet, EdgeSpec, EdgeStatus, Event, Failback, Failure, MAX_EDGES,
    Phase, Reason, SelectError, Settings, Status,
    edge::{Dns, Edge, Reply, State},
};

/// Why the active edge is the one it is (or why there is none).
#[derive(Clone, Debug)]
struct Choice {
    reason: Reason,
    since: Instant,
    why: String,
}

/// One tenant's edge selection (see the module's documentation for what
/// it does and its call order).
#[derive(Debug)]
pub struct Selector {
    settings: Settings,
    edges: Vec<Edge>,
    /// The edge carrying the traffic.
    active: Option<usize>,
    choice: Option<Choice>,
    /// An edge has been active once: the start (and its grace) is over.
    started: bool,
    /// At start, when the first edge up stops waiting for better ones.
    grace_until: Option<Instant>,
    /// When the last connection attempt started.
    last_attempt: Option<Instant>,
    /// When an attempt held back by the stagger may start.
    next_attempt: Option<Instant>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    switches: u64,
    ignored: u64,
    /// State of the backoff jitter's generator; 0: no jitter (see
    /// [`Selector::jitter_backoff`]).
    jitter: u64,
}

/// A set of edge indices (at most [`MAX_EDGES`]).
#[derive(Clone, Copy, Default)]
struct Set(u32);

impl Set {
    fn insert(&mut self, i: usize) {
        self.0 |= 1 << i;
    }

    fn contains(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

const _: () = assert!(MAX_EDGES <= 32, "Set is a u32 bit set");

/// `backoff` plus up to a quarter, drawn from `state` (xorshift64*):
/// gateways that lost an edge together do not retry it in step, from the
/// first retry on. `state` 0 leaves it unchanged.
fn jittered(state: &mut u64, backoff: Duration) -> Duration {
    if *state == 0 {
        return backoff;
    }
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    // r / 2^53 in [0, 1): add that share of a quarter.
    let extra = ((backoff / 4).as_nanos() * u128::from(r)) >> 53;
    backoff.saturating_add(Duration::from_nanos(
        u64::try_from(extra).unwrap_or(u64::MAX),
    ))
}

impl Selector {
    /// Draws each retry's backoff between its nominal value and a quarter
    /// more, from a generator seeded with `seed` (the caller's
    /// randomness: the core has none; 0 switches jitter off, the default,
    /// which tests rely on).
    pub fn jitter_backoff(&mut self, seed: u64) {
        self.jitter = seed;
    }

    /// A selector for `set`, starting at `now`: it asks at once for the
    /// names to be resolved and for the first connection attempt.
    pub fn new(set: &EdgeSet, now: Instant) -> Result<Self, SelectError> {
        set.settings.validate()?;
        match set.edges.len() {
            0 => return Err(SelectError::NoEdges),
            n if n > MAX_EDGES => return Err(SelectError::TooManyEdges(n)),
            _ => {}
        }
        for (i, e) in set.edges.iter().enumerate() {
            if set.edges[..i].iter().any(|o| o.name == e.name) {
                return Err(SelectError::DuplicateName(e.name.clone()));
            }
        }
        let mut s = Self {
            edges: set
                .edges
                .iter()
                .map(|spec| Edge::new(spec.clone(), set.settings.miss_count, now))
                .collect(),
            settings: set.settings.clone(),
            active: None,
            choice: None,
            started: false,
            grace_until: None,
            last_attempt: None,
            next_attempt: None,
            actions: VecDeque::with_capacity(4 * set.edges.len()),
            events: VecDeque::with_capacity(4),
            switches: 0,
            ignored: 0,
            jitter: 0,
        };
        for i in 0..s.edges.len() {
            if s.edges[i].needs_resolution() {
                s.resolve(i, now);
            }
        }
        s.step(now);
        Ok(s)
    }

    /// Whether an attempt is under way (an edge connecting or its name
    /// resolving): with no edge active, the tenant is only lost (the
    /// classifier's fail-open and grace begin) once nothing is still
    /// trying.
    pub fn attempting(&self) -> bool {
        self.edges
            .iter()
            .any(|e| e.is_connecting() || e.resolving())
    }

    /// The edge that carries the tenant's traffic now; `None`: no edge is
    /// up, and must-tunnel traffic is held (bounded) or dropped and
    /// counted by the caller, never sent direct.
    pub fn active(&self) -> Option<EdgeId> {
        self.active.map(EdgeId::of)
    }

    /// The edge named `name`.
    pub fn id(&self, name: &str) -> Option<EdgeId> {
        self.edges
            .iter()
            .position(|e| e.spec.name == name)
            .map(EdgeId::of)
    }

    /// The edges, in configuration order.
    pub fn edges(&self) -> impl Iterator<Item = (EdgeId, &EdgeSpec)> {
        self.edges
            .iter()
            .enumerate()
            .map(|(i, e)| (EdgeId::of(i), &e.spec))
    }

    /// The knobs it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The address `edge` is connected (or connecting) to.
    pub fn connected_to(&self, edge: EdgeId) -> Option<SocketAddr> {
        self.edges.get(edge.index()).and_then(|e| e.connected_to)
    }

    /// The answer to [`Action::Resolve`]: the name's addresses (the first
    /// few are kept; none is a failure).
    pub fn handle_resolved(&mut self, edge: EdgeId, addrs: &[SocketAddr], now: Instant) {
        let i = edge.index();
        match self.edges.get_mut(i) {
            Some(e) if matches!(e.spec.address, Address::Name { .. }) => {
                if addrs.is_empty() {
                    self.resolve_failed(i, now);
                } else {
                    e.set_addrs(addrs);
                }
            }
            _ => self.ignored += 1,
        }
        self.step(now);
    }

    /// `edge`'s tunnel session is established (after [`Action::Connect`]).
    pub fn handle_connected(&mut self, edge: EdgeId, now: Instant) {
        let i = edge.index();
        match self.edges.get_mut(i).map(|e| e.state) {
            Some(State::Connecting { since }) => {
                self.edges[i].up(now, now.saturating_duration_since(since));
                self.events.push_back(Event::Up(edge));
            }
            Some(State::Up { .. }) | None => self.ignored += 1,
            Some(State::Idle | State::Down { .. }) => {
                // A connection it no longer wants (a late report of a
                // cancelled attempt): close it.
                self.ignored += 1;
                self.actions.push_back(Action::Disconnect(edge));
            }
        }
        self.step(now);
    }

    /// An attempt, an established tunnel, or a name resolution failed.
    pub fn handle_failed(&mut self, edge: EdgeId, failure: Failure, now: Instant) {
        let i = edge.index();
        match (self.edges.get(i).map(|e| e.state), failure) {
            (Some(_), Failure::Resolve) => self.resolve_failed(i, now),
            (Some(State::Connecting { .. } | State::Up { .. }), _) => self.down(i, failure, now),
            (None | Some(State::Idle | State::Down { .. }), _) => self.ignored += 1,
        }
        self.step(now);
    }

    /// Probe `seq` on `edge` left at `now` (optional: without it, the RTT
    /// counts from when [`Action::SendProbe`] was queued).
    pub fn handle_probe_sent(&mut self, edge: EdgeId, seq: u64, now: Instant) {
        if let Some(e) = self.edges.get_mut(edge.index()).filter(|e| e.is_up()) {
            e.probe_sent(seq, now);
        }
        self.step(now);
    }

    /// The reply to probe `seq` came back through `edge`'s tunnel at
    /// `now`: an RTT sample, and proof that the edge is alive. A reply to
    /// no probe in flight on this edge's connection is ignored.
    pub fn handle_probe_reply(&mut self, edge: EdgeId, seq: u64, now: Instant) {
        let i = edge.index();
        let window = self.settings.sample_size;
        let reply = match self.edges.get_mut(i).filter(|e| e.is_up()) {
            Some(e) => e.probe_reply(seq, now, window),
            None => Reply::Unknown,
        };
        match reply {
            Reply::Sample(_) => self.consider_latency(i, now),
            Reply::Unknown => self.ignored += 1,
        }
        self.step(now);
    }

    /// Something authenticated came from `edge` at `now` other than a
    /// probe reply (tunnelled packets, or the reply to a probe that queued
    /// behind the caller's own data, whose RTT measures that queue and
    /// not the path): proof that the edge is alive, but no RTT sample.
    /// Without it, an edge behind a slow uplink that a bulk transfer
    /// fills would miss probes whose replies are merely late, and be
    /// declared dead while it answers.
    pub fn handle_alive(&mut self, edge: EdgeId, now: Instant) {
        if let Some(e) = self.edges.get_mut(edge.index()).filter(|e| e.is_up()) {
            e.last_alive = e.last_alive.max(now);
        }
        self.step(now);
    }

    /// The time of [`Selector::poll_timeout`] has come (or any time: it
    /// is idempotent).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.step(now);
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing that happened, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Selector::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = &self.settings;
        let detect = self.detection_time();
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if !self.started
            && let Some(g) = self.grace_until
        {
            at(g);
        }
        if let Some(n) = self.next_attempt {
            at(n);
        }
        let failback = self.failback_candidate();
        for (i, e) in self.edges.iter().enumerate() {
            if let Dns::Pending { since } = e.dns {
                at(since + s.connect_timeout);
            }
            match e.state {
                State::Idle => {}
                State::Down { until } => at(until),
                State::Connecting { since } => at(since + s.connect_timeout),
                State::Up { .. } => {
                    at(e.next_probe);
                    at(e.last_alive + detect);
                    if let (Some(c), Failback::AfterStable(d)) = (failback, s.failback)
                        && c == i
                    {
                        at(e.stable_since + d);
                    }
                }
            }
        }
        t
    }

    /// Every edge's state, RTT and misses, and why the active one was
    /// chosen.
    pub fn status(&self, now: Instant) -> Status {
        let interval = self.settings.probe_interval;
        let edges = self
            .edges
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (phase, phase_time) = match e.state {
                    State::Idle if e.resolving() || e.needs_resolution() => {
                        (Phase::Resolving, None)
                    }
                    State::Idle => (Phase::Idle, None),
                    State::Connecting { since } => (
                        Phase::Connecting,
                        Some(now.saturating_duration_since(since)),
                    ),
                    State::Up { since } => (
                        if self.active == Some(i) {
                            Phase::Active
                        } else {
                            Phase::Standby
                        },
                        Some(now.saturating_duration_since(since)),
                    ),
                    State::Down { until } => {
                        (Phase::Down, Some(until.saturating_duration_since(now)))
                    }
                };
                EdgeStatus {
                    name: e.spec.name.clone(),
                    address: e.spec.address.to_string(),
                    connected_to: e.connected_to,
                    priority: e.spec.priority,
                    phase,
                    phase_time,
                    rtt: e.rtt(),
                    last_rtt: e.last_rtt,
                    samples: e.samples,
                    misses: if e.is_up() {
                        e.misses(now, interval)
                    } else {
                        0
                    },
                    failures: e.failures,
                    last_failure: e.last_failure,
                    connect_time: e.connect_time,
                }
            })
            .collect();
        let why = match (&self.choice, self.active) {
            (Some(c), _) => c.why.clone(),
            (None, None) => "starting: no edge up yet".to_string(),
            (None, Some(_)) => String::new(),
        };
        Status {
            active: self.active(),
            reason: self.choice.as_ref().map(|c| c.reason),
            why,
            active_for: self
                .active
                .and(self.choice.as_ref())
                .map(|c| now.saturating_duration_since(c.since)),
            switches: self.switches,
            ignored: self.ignored,
            edges,
        }
    }

    // ---- the decisions ----

    /// Brings everything up to `now`: timers, the start, failback, the
    /// wanted connections, probes.
    fn step(&mut self, now: Instant) {
        self.expire(now);
        self.elect(now);
        self.failback(now);
        self.maintain(now);
        self.probe(now);
    }

    fn detection_time(&self) -> Duration {
        self.settings.probe_interval * self.settings.miss_count
    }

    /// Backoffs over, attempts and resolutions timed out, dead edges.
    fn expire(&mut self, now: Instant) {
        let timeout = self.settings.connect_timeout;
        let detect = self.detection_time();
        let interval = self.settings.probe_interval;
        for i in 0..self.edges.len() {
            if let Dns::Pending { since } = self.edges[i].dns
                && now >= since + timeout
            {
                self.resolve_failed(i, now);
            }
            let e = &mut self.edges[i];
            match e.state {
                State::Down { until } if now >= until => {
                    e.state = State::Idle;
                    if e.needs_resolution() {
                        self.resolve(i, now);
                    }
                }
                State::Connecting { since } if now >= since + timeout => {
                    self.down(i, Failure::Timeout, now);
                }
                State::Up { .. } if now >= e.last_alive + detect => {
                    self.down(i, Failure::ProbeLoss, now);
                }
                State::Up { .. } if e.misses(now, interval) > 0 => e.stable_since = now,
                _ => {}
            }
        }
    }

    /// Chooses an active edge when there is none.
    fn elect(&mut self, now: Instant) {
        if self.active.is_some() {
            return;
        }
        if self.started {
            if let Some(b) = self.best_up(None) {
                let why = format!(
                    "{} came up while no edge was up (priority {})",
                    self.edges[b].spec.name, self.edges[b].spec.priority
                );
                self.activate(b, Reason::Recovered, now, why);
            }
            return;
        }
        // The start: the first up of the best priority up, unless a
        // better priority is still trying (then wait up to the grace).
        let Some((p, _, best)) = self
            .edges
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.state {
                State::Up { since } => Some((e.spec.priority, since, i)),
                _ => None,
            })
            .min()
        else {
            // The edge that started the grace failed: the next one up
            // starts it over.
            self.grace_until = None;
            return;
        };
        let better_trying = self
            .edges
            .iter()
            .any(|e| e.spec.priority < p && !e.is_up() && !e.is_down());
        let grace = *self.grace_until.get_or_insert(now + self.settings.grace);
        if better_trying && now < grace {
            return;
        }
        let e = &self.edges[best];
        let why = if better_trying {
            format!(
                "{}: best priority up ({p}) when the {:?} start grace ended",
                e.spec.name, self.settings.grace
            )
        } else {
            format!(
                "{}: first up at start of the best priority available ({p}), connected in {:?}",
                e.spec.name,
                e.connect_time.unwrap_or_default()
            )
        };
        self.activate(best, Reason::Start, now, why);
    }

    /// The Up edge of better priority than the active one that failback
    /// would move to.
    fn failback_candidate(&self) -> Option<usize> {
        let a = self.active?;
        if self.settings.failback == Failback::Never {
            return None;
        }
        let pa = self.edges[a].spec.priority;
        (0..self.edges.len())
            .filter(|&i| self.edges[i].is_up() && self.edges[i].spec.priority < pa)
            .min_by(|&x, &y| self.rank(x, y))
    }

    fn failback(&mut self, now: Instant) {
        let Some(c) = self.failback_candidate() else {
            return;
        };
        let e = &self.edges[c];
        let ready = match self.settings.failback {
            Failback::Immediate => true,
            Failback::AfterStable(d) => now >= e.stable_since + d,
            Failback::Never => false,
        };
        if ready {
            let why = format!(
                "{}: preferred edge (priority {}) back{}",
                e.spec.name,
                e.spec.priority,
                match self.settings.failback {
                    Failback::AfterStable(d) => format!(", every probe answered for {d:?}"),
                    _ => String::new(),
                }
            );
            self.activate(c, Reason::Failback, now, why);
        }
    }

    /// A probe reply on edge `i`: is it now clearly and steadily better
    /// than the active edge?
    fn consider_latency(&mut self, i: usize, now: Instant) {
        let Some(a) = self.active.filter(|&a| a != i) else {
            return;
        };
        let (cur, cand) = (self.edges[a].rtt(), self.edges[i].rtt());
        let better = self.edges[i].spec.priority == self.edges[a].spec.priority
            && matches!((cur, cand), (Some(cur), Some(cand)) if self.clearly_better(cand, cur));
        let e = &mut self.edges[i];
        e.streak = if better { e.streak + 1 } else { 0 };
        if e.streak < self.settings.sample_size {
            return;
        }
        // The best of those that qualify.
        let Some(b) = (0..self.edges.len())
            .filter(|&j| {
                j != a && self.edges[j].is_up() && self.edges[j].streak >= self.settings.sample_size
            })
            .min_by(|&x, &y| self.rank(x, y))
        else {
            return;
        };
        let why = format!(
            "{}: RTT {:?} against {:?} on {} over {} samples (threshold {:.2}, at least {:?} better)",
            self.edges[b].spec.name,
            self.edges[b].rtt().unwrap_or_default(),
            cur.unwrap_or_default(),
            self.edges[a].spec.name,
            self.settings.sample_size,
            self.settings.threshold,
            self.settings.min_improvement
        );
        self.activate(b, Reason::Latency, now, why);
    }

    /// `cand` is below the threshold fraction of `cur` and more than the
    /// minimum improvement below it.
    fn clearly_better(&self, cand: Duration, cur: Duration) -> bool {
        cand.as_secs_f64() < cur.as_secs_f64() * self.settings.threshold
            && cur > cand + self.settings.min_improvement
    }

    /// Which connections are wanted; cancels the others, starts attempts
    /// (staggered).
    fn maintain(&mut self, now: Instant) {
        let n = self.edges.len();
        let mut order: [usize; MAX_EDGES] = [0; MAX_EDGES];
        for (i, o) in order.iter_mut().enumerate().take(n) {
            *o = i;
        }
        let order = &mut order[..n];
        let mut wanted = Set::default();
        if let Some(a) = self.active {
            // The active edge, the best standbys, and (unless failback is
            // off) every edge of better priority, to see it return.
            wanted.insert(a);
            order.sort_by(|&x, &y| self.rank(x, y));
            let pa = self.edges[a].spec.priority;
            let failback = self.settings.failback != Failback::Never;
            let mut standbys = 0;
            for &i in order.iter() {
                let e = &self.edges[i];
                if i == a || e.is_down() {
                    continue;
                }
                if standbys < self.settings.standby {
                    standbys += 1;
                    wanted.insert(i);
                } else if failback && e.spec.priority < pa {
                    wanted.insert(i);
                }
            }
            // An Up standby that lost its place stays until the edge that
            // took it is up: the standbys never fall below the count.
            let up = |i: usize| i != a && wanted.contains(i) && self.edges[i].is_up();
            let mut spare = self
                .settings
                .standby
                .saturating_sub((0..n).filter(|&i| up(i)).count());
            for &i in order.iter() {
                let e = &self.edges[i];
                if wanted.contains(i) || !(e.is_up() || e.is_connecting()) {
                    continue;
                }
                if e.is_up() && spare > 0 {
                    spare -= 1;
                } else {
                    self.drop_edge(i, now);
                }
            }
        } else {
            // No active edge: race every edge until enough are up.
            let up = self.edges.iter().filter(|e| e.is_up()).count();
            if up <= self.settings.standby {
                for i in 0..n {
                    wanted.insert(i);
                }
            }
        }
        // Attempts in priority, then list, order.
        order.sort_by_key(|&i| (self.edges[i].spec.priority, i));
        self.next_attempt = None;
        for &i in order.iter() {
            if !wanted.contains(i) || !self.edges[i].ready() {
                continue;
            }
            let in_flight = self.edges.iter().any(Edge::is_connecting);
            let allowed = match self.last_attempt {
                Some(last) if in_flight => now >= last + self.settings.stagger,
                _ => true,
            };
            if !allowed {
                self.next_attempt = self.last_attempt.map(|l| l + self.settings.stagger);
                break;
            }
            self.connect(i, now);
        }
    }

    /// Sends the probes that are due.
    fn probe(&mut self, now: Instant) {
        let interval = self.settings.probe_interval;
        for (i, e) in self.edges.iter_mut().enumerate() {
            if e.is_up() && now >= e.next_probe {
                let seq = e.send_probe(now);
                self.actions.push_back(Action::SendProbe {
                    edge: EdgeId::of(i),
                    seq,
                });
                let next = e.next_probe + interval;
                e.next_probe = if next > now { next } else { now + interval };
            }
        }
    }

    // ---- transitions ----

    /// Orders edges for standby and failover: priority, then RTT (unknown
    /// last), then list order.
    fn rank(&self, x: usize, y: usize) -> Ordering {
        let key = |i: usize| {
            let e = &self.edges[i];
            (e.spec.priority, e.rtt().unwrap_or(Duration::MAX), i)
        };
        key(x).cmp(&key(y))
    }

    /// The best Up edge other than `except`.
    fn best_up(&self, except: Option<usize>) -> Option<usize> {
        (0..self.edges.len())
            .filter(|&i| Some(i) != except && self.edges[i].is_up())
            .min_by(|&x, &y| self.rank(x, y))
    }

    fn activate(&mut self, i: usize, reason: Reason, now: Instant, why: String) {
        let from = self.active.replace(i);
        self.started = true;
        self.grace_until = None;
        for e in &mut self.edges {
            e.streak = 0;
        }
        self.switches += 1;
        self.choice = Some(Choice {
            reason,
            since: now,
            why,
        });
        self.events.push_back(Event::Switched {
            from: from.map(EdgeId::of),
            to: Some(EdgeId::of(i)),
            reason,
        });
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let e = &mut self.edges[i];
        let Some(addr) = e.target() else {
            return;
        };
        e.state = State::Connecting { since: now };
        e.connected_to = Some(addr);
        self.last_attempt = Some(now);
        self.actions.push_back(Action::Connect {
            edge: EdgeId::of(i),
            addr,
        });
    }

    /// Closes a connection (or attempt) that is not wanted; the edge is
    /// fine and may be used again.
    fn drop_edge(&mut self, i: usize, now: Instant) {
        let e = &mut self.edges[i];
        e.state = State::Idle;
        e.clear_probes(now);
        self.actions.push_back(Action::Disconnect(EdgeId::of(i)));
    }

    fn resolve(&mut self, i: usize, now: Instant) {
        self.edges[i].dns = Dns::Pending { since: now };
        self.actions.push_back(Action::Resolve(EdgeId::of(i)));
    }

    /// The name of edge `i` did not resolve: older addresses stay in use;
    /// without any, the edge is Down (resolved again after its backoff).
    fn resolve_failed(&mut self, i: usize, now: Instant) {
        let e = &mut self.edges[i];
        if !matches!(e.spec.address, Address::Name { .. }) {
            self.ignored += 1;
            return;
        }
        e.dns = Dns::Failed;
        if e.state == State::Idle && e.target().is_none() {
            self.down(i, Failure::Resolve, now);
        }
    }

    /// Edge `i` failed: Down until its backoff is over, its name resolved
    /// again, and if it was active, the traffic moves to the best standby
    /// at once.
    fn down(&mut self, i: usize, failure: Failure, now: Instant) {
        let s = &self.settings;
        let e = &mut self.edges[i];
        let was = e.state;
        if let State::Up { since } = was
            && now.saturating_duration_since(since) >= s.backoff_max
        {
            e.failures = 0;
        }
        let backoff = s
            .backoff_min
            .saturating_mul(1 << e.failures.min(20))
            .min(s.backoff_max);
        let backoff = jittered(&mut self.jitter, backoff);
        e.failures = e.failures.saturating_add(1);
        e.state = State::Down {
            until: now + backoff,
        };
        e.last_failure = Some(failure);
        e.clear_probes(now);
        if matches!(was, State::Connecting { .. } | State::Up { .. }) {
            self.actions.push_back(Action::Disconnect(EdgeId::of(i)));
        }
        if failure != Failure::Resolve {
            e.rotate();
            if matches!(e.spec.address, Address::Name { .. }) && !e.resolving() {
                self.resolve(i, now);
            }
        }
        self.events.push_back(Event::Down {
            edge: EdgeId::of(i),
            failure,
        });
        if self.active != Some(i) {
            return;
        }
        let reason = if failure == Failure::ProbeLoss {
            Reason::ProbeLoss
        } else {
            Reason::TransportError
        };
        let gone = &self.edges[i].spec.name;
        if let Some(b) = self.best_up(Some(i)) {
            let e = &self.edges[b];
            let why = format!(
                "{}: best standby (priority {}, RTT {:?}) when {gone} failed ({failure})",
                e.spec.name,
                e.spec.priority,
                e.rtt().unwrap_or_default()
            );
            self.activate(b, reason, now, why);
        } else {
            let why = format!(
                "no edge up since {gone} failed ({failure}): must-tunnel traffic is held or dropped, never sent direct"
            );
            self.active = None;
            self.switches += 1;
            self.choice = Some(Choice {
                reason,
                since: now,
                why,
            });
            self.events.push_back(Event::Switched {
                from: Some(EdgeId::of(i)),
                to: None,
                reason,
            });
        }
    }
}
