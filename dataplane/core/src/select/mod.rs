//! Edge selection for one tenant, sans I/O: which of several edges carries
//! the tenant's traffic now, which are kept warm as standbys, when to
//! probe, when to give up on one and move the traffic to another.
//!
//! A [`Selector`] is given the tenant's ordered edge list ([`EdgeSet`]:
//! each edge a name, an IP address or DNS name with a port, a priority)
//! and its knobs ([`Settings`]). It owns no socket, resolver or clock: the
//! caller (the gateway's tunnel driver) hands it what happened and the
//! time, and takes from it what to do, in the manner of `quinn-proto`
//! (`handle_*` inputs, `poll_*` outputs). The same inputs at the same
//! times give the same outputs, which the tests rely on (simulated time,
//! no wall clock).
//!
//! # What it does
//! - **Start** (in the manner of RFC 8305): connection attempts in
//!   priority order (then list order), one every [`Settings::stagger`]
//!   while none has completed, not all at once. The first edge to come up
//!   becomes active, unless an edge of better priority is still trying:
//!   then the best one up when it succeeds, fails, or
//!   [`Settings::grace`] has passed. Traffic waits (no active edge) only
//!   during that grace.
//! - **Warm standbys**: besides the active edge, the [`Settings::standby`]
//!   best others are kept connected and probed; attempts beyond them are
//!   cancelled, surplus connections closed.
//! - **Liveness**, BFD-like: each Up edge is probed every
//!   [`Settings::probe_interval`] (echo frames inside its tunnel, sent by
//!   the caller); an edge is Down when no probe sent in the last
//!   `miss_count × probe_interval` has been answered (BFD's detection
//!   time, counted from the newest answered probe's send time, so a dead
//!   edge is found within that time of its death), or at once when the
//!   caller reports a transport error. The active role then moves, in the
//!   same call, to the best Up standby ([`Event::Switched`] with
//!   [`Reason::ProbeLoss`] or [`Reason::TransportError`]). Edges whose
//!   RTT exceeds `(miss_count - 1) × probe_interval` would be declared
//!   dead by these settings: raise the interval for far edges.
//! - **Latency with hysteresis**: each probe reply is an RTT sample; the
//!   RTT estimate is an EWMA weighted as a [`Settings::sample_size`]
//!   moving average. The traffic moves to a standby of the *same*
//!   priority only when its RTT is below [`Settings::threshold`] of the
//!   active edge's and more than [`Settings::min_improvement`] below it,
//!   at each of `sample_size` consecutive samples ([`Reason::Latency`]).
//!   A standby of worse priority never displaces the active edge on
//!   latency. Only connected edges are measured: to compare all of N
//!   edges of equal priority, keep `standby = N - 1`.
//! - **Failback** to an edge of better priority that comes back, per
//!   [`Failback`]: at once, once it has answered every probe for a
//!   while, or never.
//! - **Down edges** are retried after an exponential backoff
//!   ([`Settings::backoff_min`] doubling to [`Settings::backoff_max`];
//!   the count starts over once a connection stays up for
//!   `backoff_max`). DNS names are resolved at start and again after
//!   every failure of the edge ([`Action::Resolve`]); each attempt after
//!   a failure takes the next of the name's addresses.
//!
//! # Call order
//! 1. [`Selector::new`] with the edge set and the time; then drain
//!    [`Selector::poll_action`] and [`Selector::poll_event`] (step 3).
//! 2. Hand in what happened, each with the current time:
//!    [`Selector::handle_resolved`] (the answer to an
//!    [`Action::Resolve`]; a failed resolution is
//!    [`Selector::handle_failed`] with [`Failure::Resolve`]),
//!    [`Selector::handle_connected`] (the edge's tunnel session is
//!    established), [`Selector::handle_failed`] (an attempt or an
//!    established tunnel failed; the caller may already have closed it),
//!    [`Selector::handle_probe_sent`] (optional: the probe actually left
//!    later than asked), [`Selector::handle_probe_reply`] (an echo reply
//!    came back through that edge's tunnel), and
//!    [`Selector::handle_timeout`] when the time of
//!    [`Selector::poll_timeout`] has come.
//! 3. After each input: drain [`Selector::poll_action`] until `None` and
//!    do each ([`Action::Connect`], [`Action::Disconnect`],
//!    [`Action::SendProbe`], [`Action::Resolve`]), drain
//!    [`Selector::poll_event`] (log the switches), re-read
//!    [`Selector::active`] and re-arm the timer with
//!    [`Selector::poll_timeout`]. The queues grow until drained.
//! 4. [`Selector::status`] at any time: each edge's phase, RTT, misses,
//!    failures, and why the active edge was chosen (for `sluice status`,
//!    the admin API and the metrics).
//!
//! # No edge up: fail closed
//! When no edge is up (at start, during the start grace, after every edge
//! failed) [`Selector::active`] is `None`. Traffic that policy says must
//! be tunnelled then has nowhere to go, and the caller must **never**
//! send it direct: it holds it in a bounded queue (flushed to the next
//! active edge, dropped and counted when full or too old) or drops and
//! counts it. Whether a profile fails open instead is the policy's
//! decision (`fail = "open"`), taken elsewhere; this module only says
//! that no edge is up.
//!
//! # What switching costs
//! Each edge NATs the tenant's flows with its own address: connections
//! made through one edge break when the traffic moves to another (new
//! ones work at once). That is why latency switches need a clear and
//! sustained gain, and why failback can wait for stability.
//!
//! This module reads no clock, resolves no name and opens no socket.
use std::{fmt, net::SocketAddr, ops::RangeInclusive, str::FromStr, time::Duration};

mod edge;
mod selector;
#[cfg(test)]
mod tests;

pub use selector::Selector;

/// Most edges per tenant.
pub const MAX_EDGES: usize = 16;
/// [`Settings::probe_interval`] bounds, in milliseconds.
pub const PROBE_INTERVAL_MS: RangeInclusive<u64> = 10..=60_000;
/// [`Settings::miss_count`] bounds.
pub const MISS_COUNT: RangeInclusive<u32> = 1..=100;
/// [`Settings::sample_size`] bounds.
pub const SAMPLE_SIZE: RangeInclusive<u32> = 1..=1000;
/// [`Settings::min_improvement`] bounds, in milliseconds.
pub const MIN_IMPROVEMENT_MS: RangeInclusive<u64> = 0..=60_000;
/// [`Settings::stagger`] and [`Settings::grace`] bounds, in milliseconds.
pub const STAGGER_MS: RangeInclusive<u64> = 0..=10_000;
/// [`Settings::connect_timeout`] bounds, in milliseconds.
pub const CONNECT_TIMEOUT_MS: RangeInclusive<u64> = 100..=120_000;
/// [`Failback::AfterStable`] bounds, in seconds.
pub const FAILBACK_STABLE_SECS: RangeInclusive<u64> = 0..=86_400;
/// [`Settings::backoff_min`] and [`Settings::backoff_max`] bounds, in
/// milliseconds.
pub const BACKOFF_MS: RangeInclusive<u64> = 10..=3_600_000;

/// An edge of a [`Selector`]: its index in the [`EdgeSet`]'s list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(u8);

impl EdgeId {
    /// Its index in the edge list it was configured in.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    fn of(index: usize) -> Self {
        debug_assert!(index < MAX_EDGES);
        Self(index as u8)
    }
}

/// Where an edge is: an IP address, or a DNS name the caller resolves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A DNS name and port.
    Name {
        /// The name, lowercase, without a trailing dot.
        host: String,
        /// The port.
        port: u16,
    },
}

/// An edge address that is neither `ip:port` nor `dns-name:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an address:port such as 198.51.100.5:4443, [2001:db8::5]:4443 or edge.example.net:4443"
)]
pub struct AddressError(pub String);

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddressError(s.to_string());
        if let Ok(a) = s.parse::<SocketAddr>() {
            return if a.port() == 0 {
                Err(err())
            } else {
                Ok(Self::Ip(a))
            };
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(err)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        // A bare IP address without a port's brackets, or a number, is no
        // name: the last label of a DNS name is not all digits.
        let last_numeric = host
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
        if host.len() > 253 || !host.split('.').all(label_ok) || last_numeric {
            return Err(err());
        }
        Ok(Self::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One configured edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Its name (for status, logs and metrics).
    pub name: String,
    /// Where it is.
    pub address: Address,
    /// Its rank: 0 is the most preferred (as DNS SRV priorities). Edges
    /// of equal priority compete on latency; an edge of worse priority
    /// carries traffic only while no better one is up (and, after a
    /// better one returns, per [`Failback`]).
    pub priority: u8,
}

/// When the traffic moves back to an edge of better priority that has
/// come back up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failback {
    /// As soon as it is up.
    Immediate,
    /// Once it has been up, with every probe answered in time, for this
    /// long.
    AfterStable(Duration),
    /// Never on its own: the edge is used again only when the active one
    /// fails.
    Never,
}

/// A tenant's edges and the knobs of their selection.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeSet {
    /// The edges, in the operator's order (ties of priority are broken by
    /// it).
    pub edges: Vec<EdgeSpec>,
    /// The knobs.
    pub settings: Settings,
}

impl EdgeSet {
    /// One edge at `addr` named `edge` with the default settings: what a
    /// configuration with a single `edge` means.
    pub fn single(addr: SocketAddr) -> Self {
        Self {
            edges: vec![EdgeSpec {
                name: "edge".into(),
                address: Address::Ip(addr),
                priority: 0,
            }],
            settings: Settings::default(),
        }
    }
}

/// The knobs of edge selection (every one bounded: see the constants of
/// this module).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Delay between connection attempts while none has completed (RFC
    /// 8305's "connection attempt delay"; default 100 ms).
    pub stagger: Duration,
    /// At start, how long the first edge up waits for a better-priority
    /// one still trying (default 200 ms).
    pub grace: Duration,
    /// An attempt (or a name resolution) that has not completed after
    /// this long has failed (default 5 s).
    pub connect_timeout: Duration,
    /// Warm standby tunnels besides the active one (default 1).
    pub standby: usize,
    /// Probe interval per Up edge (default 100 ms).
    pub probe_interval: Duration,
    /// An edge is Down when no probe sent in the last `miss_count ×
    /// probe_interval` was answered (default 3).
    pub miss_count: u32,
    /// Samples of the RTT moving average, and how many consecutive
    /// samples a better edge must stay better (default 10).
    pub sample_size: u32,
    /// A standby's RTT must be below this fraction of the active edge's to
    /// take over (default 2/3).
    pub threshold: f64,
    /// ... and below it by more than this (default 10 ms).
    pub min_improvement: Duration,
    /// Failback policy (default: after 10 s of stability).
    pub failback: Failback,
    /// First retry delay after a failure (default 100 ms).
    pub backoff_min: Duration,
    /// Longest retry delay (default 5 s).
    pub backoff_max: Duration,
}

/// [`Settings::stagger`]'s default.
pub const DEFAULT_STAGGER: Duration = Duration::from_millis(100);
/// [`Settings::grace`]'s default.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(200);
/// [`Settings::connect_timeout`]'s default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// [`Settings::probe_interval`]'s default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// [`Settings::miss_count`]'s default.
pub const DEFAULT_MISS_COUNT: u32 = 3;
/// [`Settings::sample_size`]'s default.
pub const DEFAULT_SAMPLE_SIZE: u32 = 10;
/// [`Settings::threshold`]'s default.
pub const DEFAULT_THRESHOLD: f64 = 2.0 / 3.0;
/// [`Settings::min_improvement`]'s default.
pub const DEFAULT_MIN_IMPROVEMENT: Duration = Duration::from_millis(10);
/// [`Settings::standby`]'s default.
pub const DEFAULT_STANDBY: usize = 1;
/// [`Failback::AfterStable`]'s default period.
pub const DEFAULT_FAILBACK_STABLE: Duration = Duration::from_secs(10);
/// [`Settings::failback`]'s default.
pub const DEFAULT_FAILBACK: Failback = Failback::AfterStable(DEFAULT_FAILBACK_STABLE);
/// [`Settings::backoff_min`]'s default.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// [`Settings::backoff_max`]'s default.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for Settings {
    fn default() -> Self {
        Self {
            stagger: DEFAULT_STAGGER,
            grace: DEFAULT_GRACE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            standby: DEFAULT_STANDBY,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            miss_count: DEFAULT_MISS_COUNT,
            sample_size: DEFAULT_SAMPLE_SIZE,
            threshold: DEFAULT_THRESHOLD,
            min_improvement: DEFAULT_MIN_IMPROVEMENT,
            failback: DEFAULT_FAILBACK,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl Settings {
    /// Checks every knob against its bounds.
    pub fn validate(&self) -> Result<(), SelectError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let bad =
            |field: &'static str, expected: String| Err(SelectError::Setting { field, expected });
        let range =
            |r: &RangeInclusive<u64>, unit: &str| format!("{} to {} {unit}", r.start(), r.end());
        if !PROBE_INTERVAL_MS.contains(&ms(self.probe_interval)) {
            return bad("probe_interval", range(&PROBE_INTERVAL_MS, "ms"));
        }
        if !MISS_COUNT.contains(&self.miss_count) {
            return bad(
                "miss_count",
                format!("{} to {}", MISS_COUNT.start(), MISS_COUNT.end()),
            );
        }
        if !SAMPLE_SIZE.contains(&self.sample_size) {
            return bad(
                "sample_size",
                format!("{} to {}", SAMPLE_SIZE.start(), SAMPLE_SIZE.end()),
            );
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad("threshold", "above 0 and at most 1".into());
        }
        if !MIN_IMPROVEMENT_MS.contains(&ms(self.min_improvement)) {
            return bad("min_improvement", range(&MIN_IMPROVEMENT_MS, "ms"));
        }
        if self.standby >= MAX_EDGES {
            return bad("standby", format!("0 to {}", MAX_EDGES - 1));
        }
        if !STAGGER_MS.contains(&ms(self.stagger)) {
            return bad("stagger", range(&STAGGER_MS, "ms"));
        }
        if !STAGGER_MS.contains(&ms(self.grace)) {
            return bad("grace", range(&STAGGER_MS, "ms"));
        }
        if !CONNECT_TIMEOUT_MS.contains(&ms(self.connect_timeout)) {
            return bad("connect_timeout", range(&CONNECT_TIMEOUT_MS, "ms"));
        }
        if let Failback::AfterStable(d) = self.failback
            && !FAILBACK_STABLE_SECS.contains(&d.as_secs())
        {
            return bad("failback", range(&FAILBACK_STABLE_SECS, "s of stability"));
        }
        if !BACKOFF_MS.contains(&ms(self.backoff_min))
            || !BACKOFF_MS.contains(&ms(self.backoff_max))
            || self.backoff_max < self.backoff_min
        {
            return bad(
                "backoff",
                format!("{}, backoff_min <= backoff_max", range(&BACKOFF_MS, "ms")),
            );
        }
        Ok(())
    }
}

/// An edge set a [`Selector`] cannot take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// No edge.
    #[error("no edge: a tenant needs at least one")]
    NoEdges,
    /// More than [`MAX_EDGES`].
    #[error("{0} edges: at most {MAX_EDGES}")]
    TooManyEdges(usize),
    /// Two edges with one name.
    #[error("two edges are named `{0}`")]
    DuplicateName(String),
    /// A knob out of its bounds.
    #[error("{field}: must be {expected}")]
    Setting {
        /// The knob.
        field: &'static str,
        /// What it may be.
        expected: String,
    },
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Resolve this edge's name ([`Address::Name`]); answer with
    /// [`Selector::handle_resolved`], or [`Selector::handle_failed`] with
    /// [`Failure::Resolve`].
    Resolve(EdgeId),
    /// Open a tunnel to this edge at `addr`; report
    /// [`Selector::handle_connected`] once its session is established,
    /// or [`Selector::handle_failed`].
    Connect {
        /// The edge.
        edge: EdgeId,
        /// The address to connect to.
        addr: SocketAddr,
    },
    /// Close this edge's tunnel, or the attempt in progress, if any is
    /// left (it failed, or is not wanted). Report nothing more about it.
    Disconnect(EdgeId),
    /// Send echo probe `seq` through this edge's tunnel; hand its reply to
    /// [`Selector::handle_probe_reply`].
    SendProbe {
        /// The edge.
        edge: EdgeId,
        /// The probe's sequence number (unique on this edge).
        seq: u64,
    },
}

/// Why the active edge changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The first choice at start.
    Start,
    /// The active edge stopped answering probes.
    ProbeLoss,
    /// The active edge's transport failed.
    TransportError,
    /// An edge came up while none was active.
    Recovered,
    /// A standby of the same priority had a clearly and steadily lower
    /// RTT.
    Latency,
    /// An edge of better priority came back (per [`Failback`]).
    Failback,
}

impl Reason {
    /// For logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::ProbeLoss => "probe loss",
            Self::TransportError => "transport error",
            Self::Recovered => "recovered",
            Self::Latency => "latency",
            Self::Failback => "failback",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an edge failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A connection attempt failed (refused, unreachable, TLS or HELLO
    /// refused). The caller reports it.
    Connect,
    /// An established tunnel failed (reset, end of stream, alert, dead
    /// peer). The caller reports it.
    Transport,
    /// The name did not resolve, or to no address. The caller reports
    /// it.
    Resolve,
    /// No probe answered within `miss_count × probe_interval`.
    ProbeLoss,
    /// An attempt (or a resolution) did not complete within
    /// [`Settings::connect_timeout`].
    Timeout,
}

impl Failure {
    /// For logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect failed",
            Self::Transport => "transport error",
            Self::Resolve => "resolution failed",
            Self::ProbeLoss => "probe loss",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The edge carrying the traffic changed. `to: None`: no edge is up
    /// (must-tunnel traffic is held or dropped, never sent direct).
    Switched {
        /// The previous active edge.
        from: Option<EdgeId>,
        /// The new one.
        to: Option<EdgeId>,
        /// Why.
        reason: Reason,
    },
    /// An edge's tunnel came up.
    Up(EdgeId),
    /// An edge failed; it is retried after its backoff.
    Down {
        /// The edge.
        edge: EdgeId,
        /// Why.
        failure: Failure,
    },
}

/// An edge's phase, for status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for its name's addresses.
    Resolving,
    /// Not connected, not trying (not needed now).
    Idle,
    /// A connection attempt is in progress.
    Connecting,
    /// Up, carrying the tenant's traffic.
    Active,
    /// Up and probed, ready to take over.
    Standby,
    /// Failed; retried after its backoff.
    Down,
}

impl Phase {
    /// For status and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolving => "resolving",
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Active => "active",
            Self::Standby => "standby",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One edge's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeStatus {
    /// Its name.
    pub name: String,
    /// Its configured address.
    pub address: String,
    /// The address of its current (or last) connection.
    pub connected_to: Option<SocketAddr>,
    /// Its priority (0 best).
    pub priority: u8,
    /// Its phase.
    pub phase: Phase,
    /// How long it has been up (Active, Standby), trying (Connecting), or
    /// until its next attempt (Down).
    pub phase_time: Option<Duration>,
    /// RTT moving average over the sample window.
    pub rtt: Option<Duration>,
    /// The last RTT sample.
    pub last_rtt: Option<Duration>,
    /// RTT samples on this connection.
    pub samples: u64,
    /// Consecutive probes, newest first, not answered within one probe
    /// interval.
    pub misses: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// The last failure.
    pub last_failure: Option<Failure>,
    /// How long its last successful connection took.
    pub connect_time: Option<Duration>,
}

/// A tenant's selection status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The edge carrying the traffic, if any.
    pub active: Option<EdgeId>,
    /// Why it was chosen (or why there is none).
    pub reason: Option<Reason>,
    /// The same in words, with the figures that decided.
    pub why: String,
    /// Since when (time before the `now` of [`Selector::status`]).
    pub active_for: Option<Duration>,
    /// Changes of the active edge so far.
    pub switches: u64,
    /// Inputs that did not fit the edge's state (late or duplicate
    /// reports, unknown probe replies), ignored.
    pub ignored: u64,
    /// Every edge, in configuration order.
    pub edges: Vec<EdgeStatus>,
}
