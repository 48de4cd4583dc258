//! Supervision of the gateway's threads: a thread that stops, or stays
//! alive without making progress, stops the gateway on a fault.
//!
//! Every long-lived thread is registered in a [`Registry`]: how to tell
//! that it has finished (its `JoinHandle`), and, for the threads whose
//! loops sluice owns, a [`Heartbeat`] the loop bumps once per turn. The
//! loops wake at least every 100 ms when idle, so an idle thread beats ten
//! times a second; one whose count has not moved for [`STUCK_AFTER`] is
//! stuck (blocked in a call that does not return, or spinning outside
//! its loop) and counts as dead. A thread that finishes while the gateway
//! is not stopping is dead too.
//!
//! The [`Watchdog`] thread checks the registry every 100 ms. On a fault it
//! records it, runs the fault hook (the tunnel gauges go to 0: the metrics
//! must not say a tunnel is up that no live worker holds) and raises the
//! gateway's stop flag: [`super::Gateway::wait`] then stops everything
//! the way a signal does (the classifier stays attached and pinned,
//! endpoint routing stays failing closed) and the process exits with
//! [`EXIT_FAULT`]. Whatever started the stop, if it is not over within
//! [`STOP_DEADLINE`] (a thread that does not return holds it), the
//! watchdog ends the process itself with [`EXIT_FAULT`]: what a crash
//! leaves is fail-closed, a process that never exits is not restarted.
//!
//! The supervisor watches the main loop's heartbeat, and the main loop
//! the watchdog's.
use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{
            AtomicBool, AtomicU64,
            Ordering::{Relaxed, SeqCst},
        },
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long a thread's heartbeat may stand still before the thread counts
/// as stuck (its loop wakes at least every 100 ms).
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(2);
/// How long a stop may take before the watchdog ends the process.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// How long the stop waits for the threads to return.
pub(crate) const JOIN_DEADLINE: Duration = Duration::from_secs(3);
/// The exit status of a gateway that stopped on a fault (a thread died or
/// hung): `EX_SOFTWARE` of `sysexits.h`.
pub const EXIT_FAULT: u8 = 70;
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);

/// A count a supervised loop bumps once per turn. Only its thread writes
/// it: a plain store of a relaxed load, no read-modify-write.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    /// A new count at 0.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One turn of the loop (or one step of a long piece of work).
    #[inline]
    pub(crate) fn beat(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    pub(crate) fn turns(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

type Finished = Box<dyn Fn() -> bool + Send + Sync>;
type Progress = Box<dyn Fn() -> u64 + Send + Sync>;

struct Watched {
    name: String,
    /// Found stuck: a stop does not wait for it.
    stuck: bool,
    finished: Finished,
    /// The progress count, how long it may stand still, its last value and
    /// when it last changed.
    progress: Option<(Progress, Duration, u64, Instant)>,
}

/// The threads under supervision.
#[derive(Default)]
pub(crate) struct Registry {
    list: Mutex<Vec<Watched>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("threads", &self.names())
            .finish()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Supervises the thread `handle` (named `name`), stuck if `beat`
    /// stands still for [`STUCK_AFTER`]. The handle is never joined: a
    /// stop waits until it has finished (at most [`JOIN_DEADLINE`]).
    pub(crate) fn thread(&self, name: &str, handle: JoinHandle<()>, beat: Option<Heartbeat>) {
        self.watch(
            name,
            move || handle.is_finished(),
            beat.map(|b| (move || b.turns(), STUCK_AFTER)),
        );
    }

    /// Supervises something that can tell whether it has `finished`, and
    /// optionally a `progress` count that may stand still for at most
    /// the given time.
    pub(crate) fn watch<F, P>(&self, name: &str, finished: F, progress: Option<(P, Duration)>)
    where
        F: Fn() -> bool + Send + Sync + 'static,
        P: Fn() -> u64 + Send + Sync + 'static,
    {
        let progress = progress.map(|(p, limit)| {
            let v = p();
            (Box::new(p) as Progress, limit, v, Instant::now())
        });
        self.lock().push(Watched {
            name: name.to_string(),
            stuck: false,
            finished: Box::new(finished),
            progress,
        });
    }

    /// The first thread found dead or stuck at `now`, described.
    pub(crate) fn check(&self, now: Instant) -> Option<Fault> {
        let mut list = self.lock();
        for w in list.iter_mut() {
            if (w.finished)() {
                return Some(Fault::Stopped {
                    thread: w.name.clone(),
                });
            }
            if let Some((p, limit, last, since)) = &mut w.progress {
                let v = p();
                if v != *last {
                    *last = v;
                    *since = now;
                } else if now.saturating_duration_since(*since) >= *limit {
                    w.stuck = true;
                    return Some(Fault::Stuck {
                        thread: w.name.clone(),
                        idle: now.saturating_duration_since(*since),
                    });
                }
            }
        }
        None
    }

    /// The names of the threads that have not finished (those found
    /// stuck included).
    pub(crate) fn running(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|w| !(w.finished)())
            .map(|w| w.name.clone())
            .collect()
    }

    /// Whether the thread `name` was found stuck.
    pub(crate) fn is_stuck(&self, name: &str) -> bool {
        self.lock().iter().any(|w| w.stuck && w.name == name)
    }

    /// Whether every thread has finished, but those found stuck (no use
    /// waiting for them) and those named in `skip`.
    fn all_returned(&self, skip: &[&str]) -> bool {
        self.lock()
            .iter()
            .all(|w| w.stuck || skip.contains(&w.name.as_str()) || (w.finished)())
    }

    fn names(&self) -> Vec<String> {
        self.lock().iter().map(|w| w.name.clone()).collect()
    }

    /// Waits until every thread has finished (but those found stuck and
    /// those named in `skip`) or `deadline` passes; the names of those
    /// still running.
    pub(crate) fn wait_finished(&self, deadline: Instant, skip: &[&str]) -> Vec<String> {
        while !self.all_returned(skip) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.running()
    }
}

struct Shared {
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    fault: Mutex<Option<Fault>>,
    /// Set by [`Watchdog::stopped`] once the stop is over.
    done: AtomicBool,
    beat: Heartbeat,
    on_fault: Box<dyn Fn() + Send + Sync>,
}

impl Shared {
    fn record(&self, fault: &Fault) {
        let mut f = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        let first = f.is_none();
        if first {
            *f = Some(fault.clone());
        }
        drop(f);
        // The stop before the log line: a log that blocks (a wedged
        // journal) must not keep the gateway from stopping.
        (self.on_fault)();
        self.stop.store(true, SeqCst);
        if first {
            log::error!(
                "{fault}: stopping on a fault (the classifier stays attached and pinned: tunnelled traffic is dropped until a gateway runs again)"
            );
        }
    }
}

/// Why the gateway stopped on a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A supervised thread returned while the gateway ran.
    #[error("thread {thread} stopped")]
    Stopped {
        /// Its name.
        thread: String,
    },
    /// A supervised thread's heartbeat stood still.
    #[error("thread {thread} made no progress for {idle:?} (stuck)")]
    Stuck {
        /// Its name.
        thread: String,
        /// For how long.
        idle: Duration,
    },
    /// Threads had not returned when the stop's deadline passed.
    #[error("threads still running after the stop: {}", .0.join(", "))]
    NotReturned(Vec<String>),
}

/// The thread that checks the [`Registry`] and bounds the stop.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    handle: JoinHandle<()>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog").finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Starts watching `registry`; on a fault, runs `on_fault` and raises
    /// `stop`.
    pub(crate) fn start(
        registry: Arc<Registry>,
        stop: Arc<AtomicBool>,
        on_fault: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            registry,
            stop,
            fault: Mutex::new(None),
            done: AtomicBool::new(false),
            beat: Heartbeat::new(),
            on_fault: Box::new(on_fault),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-watchdog".into())
            .spawn(move || {
                let mut stopping: Option<Instant> = None;
                while !s.done.load(Relaxed) {
                    s.beat.beat();
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    if !s.stop.load(SeqCst) {
                        // A thread that returned because a stop began
                        // meanwhile is no fault: look at `stop` again.
                        if let Some(f) = s.registry.check(now)
                            && !s.stop.load(SeqCst)
                        {
                            s.record(&f);
                        }
                        continue;
                    }
                    let since = *stopping.get_or_insert(now);
                    if now.saturating_duration_since(since) >= STOP_DEADLINE
                        && !s.done.load(Relaxed)
                    {
                        log::error!(
                            "the gateway did not stop within {STOP_DEADLINE:?} (still running: {}): exiting with status {EXIT_FAULT}; the classifier stays pinned",
                            s.registry.running().join(", ")
                        );
                        std::process::exit(i32::from(EXIT_FAULT));
                    }
                }
            })?;
        Ok(Self { shared, handle })
    }

    /// Records a fault the main loop found (the watchdog itself gone).
    pub(crate) fn fault(&self, what: &Fault) {
        self.shared.record(what);
    }

    /// Whether the watchdog is alive and looking: checked by the main loop
    /// (`last`: the watchdog's count and when it last changed).
    pub(crate) fn check(&self, last: &mut (u64, Instant), now: Instant) -> Option<Fault> {
        const NAME: &str = "sluice-watchdog";
        if self.handle.is_finished() {
            return Some(Fault::Stopped {
                thread: NAME.into(),
            });
        }
        let v = self.shared.beat.turns();
        if v != last.0 {
            *last = (v, now);
            None
        } else if now.saturating_duration_since(last.1) >= STUCK_AFTER {
            Some(Fault::Stuck {
                thread: NAME.into(),
                idle: now.saturating_duration_since(last.1),
            })
        } else {
            None
        }
    }

    /// The fault that stopped the gateway, if one did.
    pub(crate) fn recorded(&self) -> Option<Fault> {
        self.shared
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The stop is over: the watchdog returns.
    pub(crate) fn stopped(&self) {
        self.shared.done.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_thread_is_dead() {
        let r = Registry::default();
        let h = std::thread::spawn(|| {});
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        r.thread("t", h, None);
        let f = r.check(Instant::now()).expect("a fault");
        assert_eq!(f, Fault::Stopped { thread: "t".into() });
        assert!(r.running().is_empty());
    }

    #[test]
    fn a_silent_heartbeat_is_stuck_and_a_beating_one_is_not() {
        let r = Registry::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (alive, silent) = (Heartbeat::new(), Heartbeat::new());
        let spawn = |beat: Heartbeat, beats: bool| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    if beats {
                        beat.beat();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        r.thread("alive", spawn(alive.clone(), true), Some(alive));
        r.thread("silent", spawn(silent.clone(), false), Some(silent));
        let t0 = Instant::now();
        assert_eq!(r.check(t0), None);
        // Times are passed in: no waiting for the real limit.
        std::thread::sleep(Duration::from_millis(20));
        let later = Instant::now() + STUCK_AFTER;
        let f = r.check(later).expect("the silent thread is stuck");
        assert!(
            matches!(&f, Fault::Stuck { thread, .. } if thread == "silent"),
            "{f}"
        );
        stop.store(true, Relaxed);
        // The stuck one is not waited for; both return here anyway.
        let left = r.wait_finished(Instant::now() + Duration::from_secs(5), &[]);
        assert!(left.iter().all(|n| n == "silent"), "{left:?}");
        let t0 = Instant::now();
        while !r.running().is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_watchdog_raises_stop_and_runs_the_hook_on_a_fault() {
        let r = Arc::new(Registry::default());
        let stop = Arc::new(AtomicBool::new(false));
        let hooked = Arc::new(AtomicBool::new(false));
        let h = hooked.clone();
        let wd = Watchdog::start(r.clone(), stop.clone(), move || h.store(true, Relaxed))
            .expect("watchdog");
        let mut last = (u64::MAX, Instant::now());
        assert_eq!(wd.check(&mut last, Instant::now()), None);
        r.thread("worker", std::thread::spawn(|| {}), None);
        let t0 = Instant::now();
        while !stop.load(Relaxed) {
            assert!(t0.elapsed() < Duration::from_secs(10), "no stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(hooked.load(Relaxed));
        assert_eq!(
            wd.recorded(),
            Some(Fault::Stopped {
                thread: "worker".into()
            })
        );
        wd.stopped();
    }
}
