//! The selector under simulated time: a small network of edges whose
//! connection delays, RTTs and deaths the tests set, driven from the
//! selector's own timer (`poll_timeout`). No wall clock anywhere.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec(name: &str, addr: &str, priority: u8) -> EdgeSpec {
    EdgeSpec {
        name: name.into(),
        address: addr.parse().unwrap(),
        priority,
    }
}

/// Edges `a`, `b`, `c`... at 198.51.100.1, .2, .3... with these priorities.
fn set(priorities: &[u8]) -> EdgeSet {
    EdgeSet {
        edges: priorities
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                spec(
                    &((b'a' + i as u8) as char).to_string(),
                    &format!("198.51.100.{}:4443", i + 1),
                    p,
                )
            })
            .collect(),
        settings: Settings::default(),
    }
}

#[derive(Clone, Debug)]
enum Input {
    Connected(EdgeId),
    Failed(EdgeId, Failure),
    Reply(EdgeId, u64),
    Resolved(EdgeId, Vec<SocketAddr>),
}

impl Input {
    fn edge(&self) -> EdgeId {
        match self {
            Self::Connected(e) | Self::Failed(e, _) | Self::Reply(e, _) | Self::Resolved(e, _) => {
                *e
            }
        }
    }
}

/// The simulated network around one selector.
struct Sim {
    sel: Selector,
    t0: Instant,
    now: Instant,
    /// Per edge: how long an attempt takes (`None`: it hangs).
    connect: Vec<Option<Duration>>,
    /// Per edge: attempts are refused at once.
    refuse: Vec<bool>,
    /// Per edge: the RTT of probes (`None`: the edge is dead, no reply).
    rtt: Vec<Option<Duration>>,
    /// Per edge: what its name resolves to (empty: resolution fails).
    dns: Vec<Vec<SocketAddr>>,
    /// Inputs due, in time order of insertion.
    pending: Vec<(Instant, Input)>,
    /// Everything the selector asked for, with its time since `t0`.
    actions: Vec<(Duration, Action)>,
    events: Vec<(Duration, Event)>,
}

impl Sim {
    fn new(set: &EdgeSet) -> Self {
        let n = set.edges.len();
        let t0 = Instant::now();
        let s = Self {
            sel: Selector::new(set, t0).expect("valid set"),
            t0,
            now: t0,
            connect: vec![Some(ms(30)); n],
            refuse: vec![false; n],
            rtt: vec![Some(ms(20)); n],
            dns: vec![Vec::new(); n],
            pending: Vec::new(),
            actions: Vec::new(),
            events: Vec::new(),
        };
        // The first actions are taken by the first `run_until` (or
        // `drain`), so that a test can set the network up first.
        s.check();
        s
    }

    fn id(&self, name: &str) -> EdgeId {
        self.sel.id(name).unwrap()
    }

    fn at(&self, t: Duration) -> Instant {
        self.t0 + t
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn active(&self) -> Option<&str> {
        self.sel
            .active()
            .map(|e| self.sel.edges().nth(e.index()).unwrap().1.name.as_str())
    }

    /// Takes the selector's actions and events, and answers the actions
    /// the way the simulated network would.
    fn drain(&mut self) {
        let now = self.now;
        let t = self.elapsed();
        while let Some(a) = self.sel.poll_action() {
            match &a {
                Action::Connect { edge, .. } => {
                    let i = edge.index();
                    if self.refuse[i] {
                        self.pending
                            .push((now + MS, Input::Failed(*edge, Failure::Connect)));
                    } else if let Some(d) = self.connect[i] {
                        self.pending.push((now + d, Input::Connected(*edge)));
                    }
                }
                Action::Disconnect(edge) => self
                    .pending
                    .retain(|(_, p)| p.edge() != *edge || matches!(p, Input::Resolved(..))),
                Action::SendProbe { edge, seq } => {
                    if let Some(r) = self.rtt[edge.index()] {
                        self.pending.push((now + r, Input::Reply(*edge, *seq)));
                    }
                }
                Action::Resolve(edge) => {
                    let addrs = self.dns[edge.index()].clone();
                    self.pending.push((
                        now + MS,
                        if addrs.is_empty() {
                            Input::Failed(*edge, Failure::Resolve)
                        } else {
                            Input::Resolved(*edge, addrs)
                        },
                    ));
                }
            }
            self.actions.push((t, a));
        }
        while let Some(e) = self.sel.poll_event() {
            self.events.push((t, e));
        }
        self.check();
    }

    /// What must hold after every step.
    fn check(&self) {
        let st = self.sel.status(self.now);
        if let Some(a) = st.active {
            assert_eq!(
                st.edges[a.index()].phase,
                Phase::Active,
                "the active edge is up: {st:#?}"
            );
        }
        assert!(
            st.edges.iter().filter(|e| e.phase == Phase::Active).count() <= 1,
            "{st:#?}"
        );
        if let Some((_, Event::Switched { to, .. })) = self
            .events
            .iter()
            .rev()
            .find(|(_, e)| matches!(e, Event::Switched { .. }))
        {
            assert_eq!(*to, st.active, "the last switch names the active edge");
        }
        if let Some(t) = self.sel.poll_timeout() {
            assert!(t > self.now, "the timer moves on: {t:?} at {:?}", self.now);
        }
    }

    /// Runs the network and the selector's timer up to `t` after `t0`.
    fn run_until(&mut self, t: Duration) {
        let end = self.at(t);
        self.drain();
        for _ in 0..1_000_000 {
            let next_input = self.pending.iter().map(|(t, _)| *t).min();
            let next = match (next_input, self.sel.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            if next_input == Some(next) {
                let k = self.pending.iter().position(|(t, _)| *t == next).unwrap();
                let (_, input) = self.pending.remove(k);
                match input {
                    Input::Connected(e) => self.sel.handle_connected(e, self.now),
                    Input::Failed(e, f) => self.sel.handle_failed(e, f, self.now),
                    Input::Reply(e, seq) => self.sel.handle_probe_reply(e, seq, self.now),
                    Input::Resolved(e, a) => self.sel.handle_resolved(e, &a, self.now),
                }
            } else {
                self.sel.handle_timeout(self.now);
            }
            self.drain();
        }
        self.now = end.max(self.now);
        self.sel.handle_timeout(self.now);
        self.drain();
    }

    /// Edge `name` dies now: no more replies, none in flight, attempts
    /// refused.
    fn kill(&mut self, name: &str) {
        let e = self.id(name);
        self.rtt[e.index()] = None;
        self.refuse[e.index()] = true;
        self.pending.retain(|(_, p)| p.edge() != e);
    }

    /// Edge `name` is back: attempts succeed, probes are answered.
    fn revive(&mut self, name: &str, rtt: Duration) {
        let i = self.id(name).index();
        self.rtt[i] = Some(rtt);
        self.connect[i] = Some(3 * rtt);
        self.refuse[i] = false;
    }

    fn fail(&mut self, name: &str, f: Failure) {
        let e = self.id(name);
        self.pending.retain(|(_, p)| p.edge() != e);
        self.sel.handle_failed(e, f, self.now);
        self.drain();
    }

    fn connects(&self) -> Vec<(Duration, String)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Connect { edge, .. } => Some((*t, self.name(*edge))),
                _ => None,
            })
            .collect()
    }

    fn disconnects(&self) -> Vec<(Duration, String)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Disconnect(edge) => Some((*t, self.name(*edge))),
                _ => None,
            })
            .collect()
    }

    fn switches(&self) -> Vec<(Duration, Option<String>, Reason)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Switched { to, reason, .. } => Some((*t, to.map(|e| self.name(e)), *reason)),
                _ => None,
            })
            .collect()
    }

    fn name(&self, e: EdgeId) -> String {
        self.sel.edges().nth(e.index()).unwrap().1.name.clone()
    }

    fn phase(&self, name: &str) -> Phase {
        self.sel.status(self.now).edges[self.id(name).index()].phase
    }
}

fn names(v: &[(Duration, String)]) -> Vec<&str> {
    v.iter().map(|(_, n)| n.as_str()).collect()
}

// ---- start ----

/// Attempts go out one per stagger delay, in priority then list order,
/// while none completes; not all at once.
#[test]
fn start_attempts_are_staggered_in_priority_order() {
    let mut set = set(&[1, 0, 0, 2]);
    set.settings.standby = 3;
    let mut sim = Sim::new(&set);
    sim.connect = vec![None; 4]; // all hang
    sim.drain();
    assert_eq!(
        sim.connects(),
        [(ms(0), "b".to_string())],
        "one attempt at start"
    );
    assert_eq!(sim.sel.poll_timeout(), Some(sim.at(ms(100))));
    sim.run_until(ms(450));
    assert_eq!(
        sim.connects(),
        [
            (ms(0), "b".to_string()),
            (ms(100), "c".to_string()),
            (ms(200), "a".to_string()),
            (ms(300), "d".to_string())
        ]
    );
    assert_eq!(sim.sel.active(), None);
    // A configurable delay.
    let mut set2 = set.clone();
    set2.settings.stagger = ms(250);
    let mut sim = Sim::new(&set2);
    sim.connect = vec![None; 4];
    sim.run_until(ms(600));
    assert_eq!(
        sim.connects().iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [ms(0), ms(250), ms(500)]
    );
}

/// The first attempt that completes takes the traffic at once when no
/// better priority is still trying; one standby is kept (the next in
/// rank), the other attempts are cancelled.
#[test]
fn first_up_of_best_priority_is_active_and_one_standby_is_kept() {
    let mut sim = Sim::new(&set(&[0, 0, 0]));
    sim.connect = vec![Some(ms(400)), Some(ms(60)), Some(ms(40))];
    sim.run_until(ms(159));
    assert_eq!(sim.active(), None);
    sim.run_until(ms(160));
    assert_eq!(sim.active(), Some("b"), "b came up first (100 + 60 ms)");
    assert_eq!(sim.switches(), [(ms(160), Some("b".into()), Reason::Start)]);
    sim.run_until(ms(2000));
    // c is not needed: a, the standby, was still trying.
    assert_eq!(names(&sim.connects()), ["a", "b"]);
    assert_eq!(sim.phase("a"), Phase::Standby);
    assert_eq!(sim.phase("c"), Phase::Idle);
    let st = sim.sel.status(sim.now);
    assert_eq!(st.reason, Some(Reason::Start));
    assert!(st.why.contains("first up at start"), "{}", st.why);
}

/// A lower-priority edge that comes up first waits (up to the grace) for a
/// better one still trying; the better one wins if it comes up in time.
#[test]
fn better_priority_within_grace_wins_at_start() {
    let mut sim = Sim::new(&set(&[0, 1]));
    sim.connect = vec![Some(ms(250)), Some(ms(30))];
    sim.run_until(ms(130));
    assert_eq!(sim.phase("b"), Phase::Standby);
    assert_eq!(sim.active(), None, "waiting for a, of better priority");
    sim.run_until(ms(250));
    assert_eq!(sim.active(), Some("a"));
    assert_eq!(sim.switches(), [(ms(250), Some("a".into()), Reason::Start)]);
    assert_eq!(sim.phase("b"), Phase::Standby);
}

/// ... and when the better one does not come up within the grace, the
/// best one up takes the traffic when the grace ends; if it fails, at once.
#[test]
fn grace_ends_with_the_best_edge_up() {
    let mut sim = Sim::new(&set(&[0, 1]));
    sim.connect = vec![None, Some(ms(30))];
    sim.run_until(ms(329));
    assert_eq!(sim.active(), None);
    sim.run_until(ms(330));
    assert_eq!(sim.active(), Some("b"));
    let st = sim.sel.status(sim.now);
    assert!(st.why.contains("grace"), "{}", st.why);

    let mut sim = Sim::new(&set(&[0, 1]));
    sim.connect = vec![None, Some(ms(30))];
    sim.run_until(ms(200));
    assert_eq!(sim.active(), None);
    sim.fail("a", Failure::Connect);
    assert_eq!(sim.active(), Some("b"), "nothing better is trying any more");
}

// ---- liveness ----

/// Two edges up, `a` active; `a` dies (no more probe replies): the
/// traffic moves to `b` within `miss_count × probe_interval` of the death,
/// with reason "probe loss".
#[test]
fn probe_loss_moves_traffic_to_the_standby_within_detection_time() {
    let mut sim = Sim::new(&set(&[0, 0]));
    sim.run_until(ms(2000));
    assert_eq!(sim.active(), Some("a"));
    assert_eq!(sim.phase("b"), Phase::Standby);
    let death = ms(2050);
    sim.run_until(death);
    sim.kill("a");
    // Its last answered probe left at 2030 ms: down at 2330 ms. Just
    // before, its misses show in the status (the probe of 2230 ms is
    // still in flight, not missed).
    sim.run_until(death + ms(279));
    let st = sim.sel.status(sim.now);
    assert_eq!(st.active, Some(sim.id("a")));
    assert_eq!(st.edges[0].misses, 1, "{st:#?}");
    assert_eq!(st.edges[0].last_rtt, Some(ms(20)));
    sim.run_until(death + ms(300));
    let (t, to, reason) = sim.switches().last().cloned().unwrap();
    assert_eq!((to.as_deref(), reason), (Some("b"), Reason::ProbeLoss));
    let s = Settings::default();
    assert!(
        t > death && t <= death + s.probe_interval * s.miss_count,
        "switched {:?} after the death",
        t.saturating_sub(death)
    );
    assert!(
        sim.disconnects().iter().any(|(_, n)| n == "a"),
        "the dead edge's tunnel is closed"
    );
    assert_eq!(sim.phase("a"), Phase::Down);
    // Its reason and its figures are in the status.
    let st = sim.sel.status(sim.now);
    assert_eq!(st.reason, Some(Reason::ProbeLoss));
    assert_eq!(st.edges[0].last_failure, Some(Failure::ProbeLoss));
    assert!(st.edges[1].rtt.is_some(), "{st:#?}");
}

/// An edge whose probe replies queued behind a bulk transfer (the
/// driver hands such replies in as [`Selector::handle_alive`], not as RTT
/// samples: they measure its own queue) and that keeps sending packets is
/// alive: no failover and no latency switch while the data flows; the
/// same edge without that proof is down within the detection time, and
/// so is it once the data stops.
#[test]
fn data_from_the_edge_keeps_it_alive_when_probe_replies_are_late() {
    let mut sim = Sim::new(&set(&[0, 0]));
    sim.run_until(ms(1000));
    assert_eq!(sim.active(), Some("a"));
    // No reply counts as a sample any more; proof of life every 50 ms.
    sim.rtt[0] = None;
    let a = sim.id("a");
    let mut t = ms(1000);
    while t < ms(3000) {
        t += ms(50);
        sim.run_until(t);
        sim.sel.handle_alive(a, sim.now);
        sim.drain();
    }
    assert_eq!(sim.active(), Some("a"), "{:?}", sim.switches());
    // Without the proof: probe loss.
    let mut sim2 = Sim::new(&set(&[0, 0]));
    sim2.run_until(ms(1000));
    sim2.rtt[0] = None;
    sim2.run_until(ms(1400));
    assert_eq!(sim2.active(), Some("b"), "no proof of life: probe loss");
    // And once the data stops: down within the detection time.
    sim.kill("a");
    let last = sim.elapsed();
    sim.run_until(last + ms(300));
    assert_eq!(sim.active(), Some("b"), "{:?}", sim.switches());
    let (switched, _, reason) = sim.switches().last().cloned().unwrap();
    assert_eq!(reason, Reason::ProbeLoss);
    assert!(switched <= last + ms(300));
}

/// The detection time follows the knobs.
#[test]
fn probe_knobs_set_the_detection_time() {
    let mut set = set(&[0, 0]);
    set.settings.probe_interval = ms(50);
    set.settings.miss_count = 5;
    let mut sim = Sim::new(&set);
    sim.run_until(ms(1000));
    let probes = sim
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::SendProbe { edge, .. } if edge.index() == 0))
        .count();
    assert!((18..=20).contains(&probes), "{probes} probes in ~1 s");
    sim.kill("a");
    sim.run_until(ms(1250));
    let (t, to, _) = sim.switches().last().cloned().unwrap();
    assert_eq!(to.as_deref(), Some("b"));
    assert!(t <= ms(1250), "{t:?}");
}

/// A transport error on the active edge moves the traffic in the same
/// call.
#[test]
fn transport_error_switches_at_once() {
    let mut sim = Sim::new(&set(&[0, 0]));
    sim.run_until(ms(1000));
    assert_eq!(sim.active(), Some("a"));
    sim.fail("a", Failure::Transport);
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(
        sim.switches().last().cloned().unwrap(),
        (ms(1000), Some("b".into()), Reason::TransportError)
    );
    // A failure of a standby changes nothing for the traffic.
    sim.run_until(ms(3000));
    let before = sim.switches().len();
    sim.fail("a", Failure::Transport);
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(sim.switches().len(), before);
}

/// No edge up: `active()` is None (the caller holds or drops, never sends
/// direct), the status says so; the first edge back takes the traffic.
#[test]
fn all_down_leaves_no_active_edge_until_one_returns() {
    let mut sim = Sim::new(&set(&[0, 0]));
    sim.run_until(ms(1000));
    sim.kill("a");
    sim.kill("b");
    sim.run_until(ms(1400));
    assert_eq!(sim.active(), None);
    let (_, to, reason) = sim.switches().last().cloned().unwrap();
    assert_eq!((to, reason), (None, Reason::ProbeLoss));
    let st = sim.sel.status(sim.now);
    assert!(st.why.contains("never sent direct"), "{}", st.why);
    assert!(st.edges.iter().all(|e| e.phase == Phase::Down), "{st:#?}");
    // Retried with backoff; nothing up for a while.
    sim.run_until(ms(5000));
    assert_eq!(sim.active(), None);
    let retries = sim.connects().len();
    assert!(retries > 4, "retried: {retries} attempts");
    sim.revive("b", ms(10));
    sim.run_until(ms(12_000));
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(sim.switches().last().unwrap().2, Reason::Recovered);
}

/// Backoff doubles from `backoff_min` to `backoff_max`.
#[test]
fn failed_edges_are_retried_with_exponential_backoff() {
    let mut set = set(&[0]);
    set.settings.standby = 0;
    let mut sim = Sim::new(&set);
    sim.refuse[0] = true;
    sim.run_until(ms(8000));
    let t: Vec<u64> = sim
        .connects()
        .iter()
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    // Refused 1 ms after each attempt; then 100, 200, 400... capped at 5 s.
    assert_eq!(t[..6], [0, 101, 302, 703, 1504, 3105]);
    let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g <= 5001), "{gaps:?}");
    assert_eq!(
        sim.sel.status(sim.now).edges[0].last_failure,
        Some(Failure::Connect)
    );
}

/// With jitter, each retry comes between its nominal backoff and a
/// quarter more, and two gateways seeded differently do not retry in
/// step, from the first retry on (review h25 L1: jitter taken off but
/// floored at `backoff_min` left every first retry at exactly +100 ms).
#[test]
fn jittered_backoff_stays_within_a_quarter_and_differs_by_seed() {
    let mut set = set(&[0]);
    set.settings.standby = 0;
    let run = |seed: u64| {
        let mut sim = Sim::new(&set);
        sim.sel.jitter_backoff(seed);
        sim.refuse[0] = true;
        sim.run_until(ms(20_000));
        sim.connects()
            .iter()
            .map(|(t, _)| t.as_millis() as u64)
            .collect::<Vec<u64>>()
    };
    let (a, b) = (run(0x9e37_79b9_7f4a_7c15), run(0x1234_5678_9abc_def1));
    for t in [&a, &b] {
        // Refused 1 ms after each attempt, then the backoff.
        let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0] - 1).collect();
        let mut nominal = 100;
        for &g in &gaps {
            assert!(
                g + 1 >= nominal && g <= nominal * 5 / 4 + 1,
                "gap {g} ms for nominal {nominal}: {gaps:?}"
            );
            nominal = (nominal * 2).min(5000);
        }
    }
    assert_ne!(a[1], b[1], "two seeds, the same first retry");
    assert_ne!(a, b, "two seeds, the same retry times");
}

// ---- latency ----

/// `a` up at 30 ms and active, `b` up at 60 ms; probes every 100 ms.
fn two_up(rtt_a: u64, rtt_b: u64) -> Sim {
    two_up_with(rtt_a, rtt_b, Settings::default())
}

fn two_up_with(rtt_a: u64, rtt_b: u64, settings: Settings) -> Sim {
    let mut set = set(&[0, 0]);
    set.settings = settings;
    let mut sim = Sim::new(&set);
    sim.rtt = vec![Some(ms(rtt_a)), Some(ms(rtt_b))];
    sim.run_until(ms(60));
    assert_eq!(sim.active(), Some("a"), "a was first up");
    assert_eq!(sim.phase("b"), Phase::Standby);
    sim
}

/// A standby only a little better never takes over.
#[test]
fn slightly_better_edge_does_not_cause_a_switch() {
    for (a, b, what) in [
        (50, 45, "10% better"),
        (50, 34, "above 2/3 of 50 ms"),
        (20, 11, "below 2/3 but only 9 ms better"),
    ] {
        let mut sim = two_up(a, b);
        sim.run_until(ms(20_000));
        assert_eq!(sim.active(), Some("a"), "{what}");
        assert_eq!(sim.switches().len(), 1, "{what}: {:?}", sim.switches());
    }
}

/// A clearly better standby takes over after exactly `sample_size`
/// consecutive better samples.
#[test]
fn clearly_better_edge_takes_over_after_sample_size_samples() {
    // a's first RTT is known before b's first sample (30 + a < 60 + b).
    for (a, b, samples) in [(50, 33, 10), (45, 20, 10), (40, 15, 10), (45, 20, 3)] {
        let settings = Settings {
            sample_size: samples,
            ..Settings::default()
        };
        let mut sim = two_up_with(a, b, settings);
        sim.run_until(ms(3000));
        assert_eq!(sim.active(), Some("b"), "{a} ms vs {b} ms");
        let (t, _, reason) = sim.switches().last().cloned().unwrap();
        assert_eq!(reason, Reason::Latency);
        // b's probes leave at 60 ms and every 100 ms after: the switch is
        // at the reply to the `samples`-th.
        let at = ms(60) + (samples - 1) * ms(100) + ms(b);
        assert_eq!(t, at, "{a} ms vs {b} ms, {samples} samples");
        let st = sim.sel.status(sim.now);
        assert!(
            st.why.contains(&format!("over {samples} samples")),
            "{}",
            st.why
        );
    }
    // When b becomes better later, the switch waits for its moving
    // average to be clearly better, then for 10 samples.
    let mut sim = two_up(50, 48);
    let change = ms(5005);
    sim.run_until(change);
    assert_eq!(sim.active(), Some("a"));
    sim.rtt[1] = Some(ms(10));
    sim.run_until(change + ms(800));
    assert_eq!(sim.active(), Some("a"), "not sustained yet");
    sim.run_until(change + ms(2500));
    assert_eq!(sim.active(), Some("b"));
}

/// A standby whose RTT swings around the active edge's never takes over;
/// and once the traffic has moved on latency, a slightly better old edge
/// does not take it back: no flapping.
#[test]
fn oscillating_or_slightly_better_edges_do_not_flap() {
    let mut sim = two_up(50, 50);
    let mut t = ms(60);
    for round in 0..300 {
        sim.rtt[1] = Some(ms(if round % 2 == 0 { 20 } else { 80 }));
        t += ms(100);
        sim.run_until(t);
    }
    assert_eq!(sim.active(), Some("a"), "{:?}", sim.switches());
    assert_eq!(sim.switches().len(), 1);

    let mut sim = two_up(60, 20);
    sim.run_until(ms(2000));
    assert_eq!(sim.active(), Some("b"));
    // Now a is a little better than b, then b a little better than a...
    for round in 0..20 {
        let (a, b) = if round % 2 == 0 { (15, 20) } else { (20, 15) };
        sim.rtt = vec![Some(ms(a)), Some(ms(b))];
        sim.run_until(ms(2000) + (round + 1) * ms(3000));
    }
    assert_eq!(sim.switches().len(), 2, "{:?}", sim.switches());
    assert_eq!(sim.active(), Some("b"));
}

/// Priority first: a standby of worse priority never takes over on
/// latency, however much faster.
#[test]
fn lower_priority_never_displaces_on_latency() {
    let mut sim = Sim::new(&set(&[0, 1]));
    sim.rtt = vec![Some(ms(150)), Some(ms(2))];
    sim.connect = vec![Some(ms(30)), Some(ms(5))];
    sim.run_until(ms(30_000));
    assert_eq!(sim.active(), Some("a"));
    assert_eq!(sim.switches().len(), 1);
    assert_eq!(sim.phase("b"), Phase::Standby);
}

/// With equal priorities and every edge measured (standby 2), the closest
/// edge ends up carrying the traffic whatever came up first.
#[test]
fn closest_of_equal_priority_edges_is_chosen() {
    let mut set = set(&[0, 0, 0]);
    set.settings.standby = 2;
    let mut sim = Sim::new(&set);
    sim.rtt = vec![Some(ms(80)), Some(ms(45)), Some(ms(12))];
    sim.connect = vec![Some(ms(240)), Some(ms(135)), Some(ms(36))];
    sim.run_until(ms(5000));
    assert_eq!(
        sim.switches()
            .iter()
            .map(|(_, to, r)| (to.clone().unwrap(), *r))
            .collect::<Vec<_>>(),
        [("b".into(), Reason::Start), ("c".into(), Reason::Latency)],
        "b came up first, c is the closest"
    );
    let st = sim.sel.status(sim.now);
    assert_eq!(st.reason, Some(Reason::Latency));
    let rtt: Vec<_> = st.edges.iter().map(|e| e.rtt.unwrap()).collect();
    assert_eq!(rtt, [ms(80), ms(45), ms(12)]);
}

/// A standby that loses its place to a better edge (whose backoff is
/// over) stays connected until that edge is up: no window without a warm
/// standby, no churn while the better one keeps failing.
#[test]
fn a_standby_is_kept_until_its_replacement_is_up() {
    let mut sim = Sim::new(&set(&[0, 0, 1]));
    sim.run_until(ms(1000));
    assert_eq!(sim.active(), Some("a"));
    assert_eq!(sim.phase("b"), Phase::Standby);
    assert_eq!(sim.phase("c"), Phase::Idle);
    sim.kill("b");
    sim.fail("b", Failure::Transport);
    sim.run_until(ms(1500));
    assert_eq!(sim.phase("c"), Phase::Standby, "c replaces b");
    // b keeps failing (each retry after its backoff): c stays.
    sim.run_until(ms(9000));
    assert!(
        sim.connects().iter().filter(|(_, n)| n == "b").count() >= 5,
        "b retried"
    );
    assert_eq!(sim.phase("c"), Phase::Standby);
    assert!(
        !sim.disconnects().iter().any(|(_, n)| n == "c"),
        "{:?}",
        sim.disconnects()
    );
    // b is back: it takes its place again, and c is let go.
    sim.revive("b", ms(20));
    sim.run_until(ms(20_000));
    assert_eq!(sim.phase("b"), Phase::Standby);
    assert_eq!(sim.phase("c"), Phase::Idle);
    assert_eq!(
        sim.disconnects().iter().filter(|(_, n)| n == "c").count(),
        1
    );
}

// ---- failback ----

/// a (priority 0) active, b (priority 1) standby; a fails, b takes over;
/// a returns after its backoff.
fn failback_sim(failback: Failback) -> Sim {
    let mut set = set(&[0, 1]);
    set.settings.failback = failback;
    let mut sim = Sim::new(&set);
    sim.run_until(ms(1000));
    assert_eq!(sim.active(), Some("a"));
    sim.kill("a");
    sim.fail("a", Failure::Transport);
    assert_eq!(sim.active(), Some("b"));
    sim.run_until(ms(2000));
    sim.revive("a", ms(20));
    sim
}

#[test]
fn failback_immediate_moves_back_as_soon_as_the_preferred_edge_is_up() {
    let mut sim = failback_sim(Failback::Immediate);
    sim.run_until(ms(10_000));
    assert_eq!(sim.active(), Some("a"));
    let (t, _, reason) = sim.switches().last().cloned().unwrap();
    assert_eq!(reason, Reason::Failback);
    let up = sim
        .events
        .iter()
        .rev()
        .find(|(_, e)| *e == Event::Up(sim.id("a")))
        .unwrap()
        .0;
    assert_eq!(t, up, "at the moment it came up");
}

#[test]
fn failback_after_stable_waits_for_a_stable_period() {
    let mut sim = failback_sim(Failback::AfterStable(Duration::from_secs(3)));
    sim.run_until(ms(4000));
    let up = sim
        .events
        .iter()
        .rev()
        .find(|(_, e)| *e == Event::Up(sim.id("a")))
        .unwrap()
        .0;
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(sim.phase("a"), Phase::Standby);
    sim.run_until(up + ms(2999));
    assert_eq!(sim.active(), Some("b"));
    sim.run_until(up + ms(3000));
    assert_eq!(sim.active(), Some("a"));
    assert_eq!(
        sim.switches().last().cloned().unwrap(),
        (up + ms(3000), Some("a".into()), Reason::Failback)
    );

    // A preferred edge that misses probes starts its stable period over.
    let mut sim = failback_sim(Failback::AfterStable(Duration::from_secs(3)));
    sim.run_until(ms(4000));
    let up = sim
        .events
        .iter()
        .rev()
        .find(|(_, e)| *e == Event::Up(sim.id("a")))
        .unwrap()
        .0;
    sim.run_until(up + ms(1500));
    sim.rtt[0] = Some(ms(150)); // late replies: misses, not death
    sim.run_until(up + ms(1800));
    sim.rtt[0] = Some(ms(20));
    sim.run_until(up + ms(3500));
    assert_eq!(sim.active(), Some("b"), "not stable for 3 s yet");
    sim.run_until(up + ms(5500));
    assert_eq!(sim.active(), Some("a"));
}

#[test]
fn failback_never_keeps_the_traffic_where_it_is() {
    let mut sim = failback_sim(Failback::Never);
    sim.run_until(ms(60_000));
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(sim.phase("a"), Phase::Standby, "kept warm as the standby");
    // ... until b fails.
    sim.fail("b", Failure::Transport);
    assert_eq!(sim.active(), Some("a"));
    // Without standbys, the preferred edge is not even reconnected.
    let mut set = set(&[0, 1]);
    set.settings.failback = Failback::Never;
    set.settings.standby = 0;
    let mut sim = Sim::new(&set);
    sim.run_until(ms(1000));
    sim.kill("a");
    sim.fail("a", Failure::Transport);
    sim.run_until(ms(2000));
    sim.revive("a", ms(20));
    let n = sim.connects().len();
    sim.run_until(ms(30_000));
    assert_eq!(sim.connects().len(), n);
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(sim.phase("a"), Phase::Idle);
}

// ---- DNS ----

/// A name is resolved at start and again after each failure; the next
/// attempt uses the new answer.
#[test]
fn names_are_resolved_at_start_and_after_a_failure() {
    let mut set = set(&[0]);
    set.settings.standby = 0;
    set.edges[0].address = "Edge.Example.NET.:4443".parse().unwrap();
    assert_eq!(
        set.edges[0].address,
        Address::Name {
            host: "edge.example.net".into(),
            port: 4443
        }
    );
    let t0 = Instant::now();
    let mut sel = Selector::new(&set, t0).unwrap();
    let e = sel.id("a").unwrap();
    assert_eq!(sel.poll_action(), Some(Action::Resolve(e)));
    assert_eq!(sel.poll_action(), None, "no attempt before an address");
    assert_eq!(sel.status(t0).edges[0].phase, Phase::Resolving);
    let first: SocketAddr = "198.51.100.10:4443".parse().unwrap();
    let second: SocketAddr = "198.51.100.20:4443".parse().unwrap();
    sel.handle_resolved(e, &[first], t0 + ms(5));
    assert_eq!(
        sel.poll_action(),
        Some(Action::Connect {
            edge: e,
            addr: first
        })
    );
    sel.handle_connected(e, t0 + ms(50));
    while sel.poll_action().is_some() {}
    sel.handle_failed(e, Failure::Transport, t0 + ms(1000));
    assert_eq!(sel.poll_action(), Some(Action::Disconnect(e)));
    assert_eq!(
        sel.poll_action(),
        Some(Action::Resolve(e)),
        "resolved again"
    );
    sel.handle_resolved(e, &[second], t0 + ms(1010));
    assert_eq!(sel.poll_action(), None, "the backoff first");
    sel.handle_timeout(t0 + ms(1100));
    assert_eq!(
        sel.poll_action(),
        Some(Action::Connect {
            edge: e,
            addr: second
        })
    );
    // A failed re-resolution keeps the older address in use.
    sel.handle_failed(e, Failure::Connect, t0 + ms(1200));
    let acts: Vec<_> = std::iter::from_fn(|| sel.poll_action()).collect();
    assert_eq!(acts, [Action::Disconnect(e), Action::Resolve(e)]);
    sel.handle_failed(e, Failure::Resolve, t0 + ms(1210));
    sel.handle_timeout(t0 + ms(1400));
    assert_eq!(
        sel.poll_action(),
        Some(Action::Connect {
            edge: e,
            addr: second
        })
    );
}

/// A name that never resolves: Down with backoff, resolved again, never
/// an attempt; an unanswered resolution times out.
#[test]
fn unresolvable_names_are_retried_with_backoff() {
    let mut set = set(&[0]);
    set.edges[0].address = "edge.example.net:4443".parse().unwrap();
    let mut sim = Sim::new(&set);
    sim.run_until(ms(3000));
    let resolves = sim
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Resolve(_)))
        .count();
    assert!(resolves >= 4, "{resolves}");
    assert!(sim.connects().is_empty());
    assert_eq!(sim.phase("a"), Phase::Down);
    // Unanswered: the resolution times out after connect_timeout.
    let t0 = Instant::now();
    let mut sel = Selector::new(&set, t0).unwrap();
    while sel.poll_action().is_some() {}
    assert_eq!(sel.poll_timeout(), Some(t0 + DEFAULT_CONNECT_TIMEOUT));
    sel.handle_timeout(t0 + DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(sel.status(t0).edges[0].last_failure, Some(Failure::Resolve));
}

// ---- untrusted and late inputs ----

/// Replies to probes never sent (or from an earlier connection) are no
/// proof of life; late reports of cancelled attempts are closed.
#[test]
fn unknown_replies_and_late_reports_are_ignored() {
    let mut set = set(&[0, 0]);
    set.settings.standby = 0;
    let t0 = Instant::now();
    let mut sel = Selector::new(&set, t0).unwrap();
    let a = sel.id("a").unwrap();
    sel.handle_connected(a, t0 + ms(10));
    assert_eq!(sel.active(), Some(a));
    // Forged and repeated replies keep nothing alive.
    let mut t = t0 + ms(10);
    let mut seqs = Vec::new();
    for _ in 0..50 {
        t += ms(10);
        sel.handle_probe_reply(a, u64::MAX - 7, t);
        sel.handle_probe_reply(a, 3_000, t);
        while let Some(x) = sel.poll_action() {
            if let Action::SendProbe { seq, .. } = x {
                seqs.push(seq);
            }
        }
    }
    assert_eq!(sel.active(), None, "a missed every probe");
    assert!(sel.status(t).ignored >= 100);
    // A reply to one of its probes from the dead connection: ignored too.
    sel.handle_probe_reply(a, seqs[0], t);
    assert_eq!(sel.status(t).edges[0].samples, 0);
}

/// A "connected" for an attempt it cancelled (the report crossed the
/// Disconnect) is answered with another Disconnect, and changes nothing.
#[test]
fn late_reports_of_cancelled_attempts_are_closed() {
    let mut set = set(&[0, 0]);
    set.settings.standby = 0;
    let mut sim = Sim::new(&set);
    sim.connect = vec![Some(ms(150)), Some(ms(500))];
    sim.run_until(ms(150));
    assert_eq!(sim.active(), Some("a"));
    assert_eq!(
        sim.disconnects(),
        [(ms(150), "b".to_string())],
        "b's attempt (started at 100 ms) is cancelled"
    );
    assert_eq!(sim.phase("b"), Phase::Idle);
    let b = sim.id("b");
    sim.sel.handle_connected(b, sim.now + ms(10));
    assert_eq!(sim.sel.poll_action(), Some(Action::Disconnect(b)));
    assert_eq!(sim.phase("b"), Phase::Idle);
    assert_eq!(sim.sel.status(sim.now).ignored, 1);
    assert_eq!(sim.active(), Some("a"));
}

/// A change to the default settings.
type Change = fn(&mut Settings);

#[test]
fn bad_edge_sets_are_refused() {
    let t0 = Instant::now();
    let mut s = set(&[]);
    assert_eq!(Selector::new(&s, t0).unwrap_err(), SelectError::NoEdges);
    s = set(&[0; 17]);
    assert_eq!(
        Selector::new(&s, t0).unwrap_err(),
        SelectError::TooManyEdges(17)
    );
    s = set(&[0, 0]);
    s.edges[1].name = "a".into();
    assert_eq!(
        Selector::new(&s, t0).unwrap_err(),
        SelectError::DuplicateName("a".into())
    );
    let cases: [(&str, Change); 8] = [
        ("probe_interval", |s| s.probe_interval = ms(1)),
        ("miss_count", |s| s.miss_count = 0),
        ("sample_size", |s| s.sample_size = 0),
        ("threshold", |s| s.threshold = 1.5),
        ("threshold", |s| s.threshold = f64::NAN),
        ("standby", |s| s.standby = MAX_EDGES),
        ("connect_timeout", |s| s.connect_timeout = ms(0)),
        ("backoff", |s| s.backoff_max = ms(20)),
    ];
    for (f, change) in cases {
        let mut s = set(&[0]);
        change(&mut s.settings);
        match Selector::new(&s, t0) {
            Err(SelectError::Setting { field, .. }) => assert_eq!(field, f),
            other => panic!("{f}: {other:?}"),
        }
    }
}

#[test]
fn addresses_parse_strictly() {
    for good in [
        "198.51.100.5:4443",
        "[2001:db8::5]:4443",
        "edge-1.example.net:443",
        "localhost:1",
    ] {
        let a: Address = good.parse().unwrap();
        assert_eq!(a.to_string(), good);
    }
    for bad in [
        "198.51.100.5",
        "198.51.100.5:0",
        "2001:db8::5:4443",
        "edge.example.net",
        "edge..example:4443",
        "-edge.example:4443",
        "edge_1.example:4443",
        "1.2.3.4.5:4443",
        "edge.example:65536",
        ":4443",
    ] {
        assert!(bad.parse::<Address>().is_err(), "{bad}");
    }
}

// ---- randomized ----

/// xorshift64*: a deterministic generator for the randomized test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random deaths, returns, RTT changes, refusals and transport errors on
/// random edge sets: the invariants of `Sim::check` hold after every step
/// (the active edge is up, the last switch names it, the timer moves on),
/// and whenever a standby is up and alive, losing the active edge moves
/// the traffic within the detection time.
#[test]
fn randomized_faults_keep_the_invariants() {
    let mut failovers = 0;
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let n = 1 + rng.below(5) as usize;
        let prios: Vec<u8> = (0..n).map(|_| rng.below(3) as u8).collect();
        let mut set = set(&prios);
        set.settings.standby = rng.below(3) as usize;
        set.settings.failback = match rng.below(3) {
            0 => Failback::Immediate,
            1 => Failback::Never,
            _ => Failback::AfterStable(ms(rng.below(3000))),
        };
        set.settings.sample_size = 1 + rng.below(12) as u32;
        let mut sim = Sim::new(&set);
        for i in 0..n {
            sim.rtt[i] = Some(ms(1 + rng.below(120)));
            sim.connect[i] = Some(ms(1 + rng.below(300)));
        }
        let mut t = Duration::ZERO;
        for _ in 0..40 {
            t += ms(rng.below(1500));
            sim.run_until(t);
            let i = rng.below(n as u64) as usize;
            let name = sim.name(EdgeId::of(i));
            match rng.below(6) {
                0 => sim.kill(&name),
                1 => sim.revive(&name, ms(1 + rng.below(120))),
                2 => {
                    if sim.rtt[i].is_some() {
                        sim.rtt[i] = Some(ms(1 + rng.below(120)));
                    }
                }
                3 => {
                    let active = sim.sel.active();
                    let live_standby =
                        sim.sel
                            .status(sim.now)
                            .edges
                            .iter()
                            .enumerate()
                            .any(|(j, e)| {
                                e.phase == Phase::Standby && sim.rtt[j].is_some_and(|r| r < ms(150))
                            });
                    let killed = active.map(|a| sim.name(a));
                    if let Some(k) = killed.filter(|k| *k == name) {
                        sim.kill(&k);
                        let death = sim.elapsed();
                        sim.run_until(
                            death + set.settings.probe_interval * set.settings.miss_count,
                        );
                        if live_standby {
                            assert_ne!(
                                sim.active(),
                                Some(k.as_str()),
                                "seed {seed}: still on the dead edge"
                            );
                            assert!(sim.active().is_some(), "seed {seed}: {:?}", sim.switches());
                            failovers += 1;
                        }
                    }
                }
                4 => sim.refuse[i] = rng.below(2) == 0,
                _ => sim.fail(&name, Failure::Transport),
            }
        }
        // Everything revived: within the backoff cap and a start, an edge
        // carries the traffic again.
        for i in 0..n {
            sim.refuse[i] = false;
            let name = sim.name(EdgeId::of(i));
            sim.revive(&name, ms(10));
        }
        t += ms(12_000);
        sim.run_until(t);
        assert!(
            sim.active().is_some(),
            "seed {seed}: {:#?}",
            sim.sel.status(sim.now)
        );
    }
    assert!(failovers >= 10, "only {failovers} failovers checked");
}

// ---- review h24 (issue 16): findings shown as failing tests ----

/// The gateway (`gateway/src/gateway/edges.rs`, `Edges::link_state`)
/// tells the classifier "tunnel lost" as soon as one edge has failed
/// (`failed_once`, set by any `Event::Down`) while no edge is active. At
/// start, one edge that refuses at once (or a name that does not
/// resolve) while another edge is still in its TLS handshake is no
/// outage, yet the tenant is reported lost: a fail-open profile (or a
/// fail-closed one within its captive-portal grace) sends must-tunnel
/// traffic direct meanwhile, and the grace series starts.
#[test]
fn review_h24_one_edge_failing_at_start_reports_the_tenant_lost_while_another_connects() {
    let mut sim = Sim::new(&set(&[0, 0]));
    sim.refuse[0] = true; // a: its port is closed (refused at once)
    sim.connect[1] = Some(ms(150)); // b: a far edge, TLS takes 150 ms
    let mut lost_for = Duration::ZERO;
    let mut t = Duration::ZERO;
    while t < ms(400) {
        t += MS;
        sim.run_until(t);
        // edges.rs: LINK_LOST = failed_once && no active edge && none
        // still trying.
        let failed_once = sim
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Down { .. }));
        if failed_once && sim.sel.active().is_none() && !sim.sel.attempting() {
            lost_for += MS;
        }
    }
    assert_eq!(sim.active(), Some("b"));
    assert_eq!(
        lost_for,
        Duration::ZERO,
        "the tenant reads as lost for {lost_for:?} while `b` was still connecting"
    );
}

/// After a failure, a DNS-named edge is resolved again and no attempt is
/// made while that resolution is pending (`Edge::ready` wants
/// `!resolving()`), though the edge still has its last addresses. A
/// resolver that hangs (unreachable DNS server) holds every retry of
/// that edge back by `connect_timeout` (5 s) instead of the backoff
/// (100 ms): recovery after an outage is that much slower.
#[test]
fn review_h24_a_hung_reresolution_holds_back_the_retry_with_known_addresses() {
    let mut set = set(&[0]);
    set.settings.standby = 0;
    set.edges[0].address = "edge.example.net:4443".parse().unwrap();
    let t0 = Instant::now();
    let mut sel = Selector::new(&set, t0).unwrap();
    let e = sel.id("a").unwrap();
    while sel.poll_action().is_some() {}
    let addr: SocketAddr = "198.51.100.10:4443".parse().unwrap();
    sel.handle_resolved(e, &[addr], t0 + ms(5));
    while sel.poll_action().is_some() {}
    sel.handle_connected(e, t0 + ms(50));
    while sel.poll_action().is_some() {}
    // The edge restarts; the resolution asked for never answers.
    sel.handle_failed(e, Failure::Transport, t0 + ms(1000));
    let mut first_retry = None;
    let mut t = ms(1000);
    while t < ms(8000) && first_retry.is_none() {
        t += ms(10);
        sel.handle_timeout(t0 + t);
        while let Some(a) = sel.poll_action() {
            if matches!(a, Action::Connect { .. }) {
                first_retry.get_or_insert(t);
            }
        }
    }
    let retry = first_retry.expect("retried at all");
    assert!(
        retry <= ms(1500),
        "first retry {:?} after the failure (backoff_min 100 ms, last address known)",
        retry - ms(1000)
    );
}

/// Finding H2 of the review (fixed in `edges.rs`). Before, the gateway
/// made an edge active as soon as its TLS session was up and only then
/// offered it datagrams; with `transport_fallback = false` an edge whose
/// TLS works but whose UDP is black-holed took the traffic back (failback
/// `immediate`) every time it reconnected, dropped every must-tunnel
/// packet for the path's set-up timeout (2 s), failed, and was failed
/// back to again: 24 s dark and 24 switches in 60 s. Now such a tenant's
/// edge is reported connected only once its datagram path carries
/// packets, and a path that never does is a failed attempt: the
/// selector never makes it active. Driven here as `Edges` drives it.
#[test]
fn review_h24_failback_to_an_edge_whose_udp_is_blocked_black_holes_repeatedly() {
    let mut set = set(&[0, 1]);
    set.settings.failback = Failback::Immediate;
    let mut sim = Sim::new(&set);
    // a: TLS comes up, datagrams never do: no `handle_connected`; the
    // path's set-up timeout (2 s) fails the attempt.
    sim.connect[0] = None;
    let setup = ms(2000);
    let step = ms(10);
    let mut t = Duration::ZERO;
    let mut dark = Duration::ZERO;
    let mut trying_since: Option<Duration> = None;
    while t < ms(60_000) {
        t += step;
        sim.run_until(t);
        if sim.phase("a") == Phase::Connecting {
            let since = *trying_since.get_or_insert(t);
            if t >= since + setup {
                trying_since = None;
                sim.fail("a", Failure::Connect);
            }
        } else {
            trying_since = None;
        }
        if sim.active() != Some("b") {
            dark += step;
        }
    }
    let switches = sim.switches().len();
    assert!(
        dark <= ms(2500) && switches <= 3,
        "in 60 s: {dark:?} with no edge carrying packets, {switches} switches (each breaks NATed connections)"
    );
}
