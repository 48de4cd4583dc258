//! Turns: lab tests that measure (throughput under a flood, loss during
//! policy swaps, start time with 120,000 prefixes) run alone, the others
//! side by side.
//!
//! The test harness runs `--test-threads` tests at once in one process.
//! A test that asserts a figure against a baseline measured in the same
//! test would otherwise share the two CPUs with whatever test runs beside
//! it, and fail for that. Every [`crate::Lab`] holds a shared turn; a
//! measuring test builds its lab with [`crate::Lab::new_exclusive`], which
//! waits until no other lab exists in this process and keeps new ones
//! from being built until it is dropped. Waiting writers go first (a
//! shared turn waits behind them), except that a thread that already
//! holds a shared turn gets another at once (a test with two labs never
//! deadlocks).
use std::{
    cell::Cell,
    sync::{Condvar, Mutex, PoisonError},
};

#[derive(Debug, Default)]
struct State {
    shared: usize,
    exclusive: bool,
    waiting: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    exclusive: false,
    waiting: 0,
});
static CHANGED: Condvar = Condvar::new();

thread_local! {
    /// Shared turns this thread holds.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A turn held by a lab; released on drop.
#[derive(Debug)]
pub(crate) struct Turn {
    exclusive: bool,
}

impl Turn {
    /// A shared turn: waits while a measuring test runs or waits.
    pub(crate) fn shared() -> Turn {
        let mut s = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        let reentrant = HELD.with(Cell::get) > 0;
        while s.exclusive || (s.waiting > 0 && !reentrant) {
            s = CHANGED.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.shared += 1;
        HELD.with(|h| h.set(h.get() + 1));
        Turn { exclusive: false }
    }

    /// The only turn: waits until no other lab exists.
    pub(crate) fn exclusive() -> Turn {
        let mut s = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        s.waiting += 1;
        while s.exclusive || s.shared > 0 {
            s = CHANGED.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.waiting -= 1;
        s.exclusive = true;
        Turn { exclusive: true }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut s = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        if self.exclusive {
            s.exclusive = false;
        } else {
            s.shared = s.shared.saturating_sub(1);
            HELD.with(|h| h.set(h.get().saturating_sub(1)));
        }
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering::SeqCst},
        },
        time::Duration,
    };

    use super::Turn;

    #[test]
    fn an_exclusive_turn_runs_alone_and_shared_ones_nest() {
        let inside = Arc::new(AtomicUsize::new(0));
        let alone = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for i in 0..6 {
            let (inside, alone) = (inside.clone(), alone.clone());
            threads.push(std::thread::spawn(move || {
                if i % 3 == 0 {
                    let _t = Turn::exclusive();
                    if inside.fetch_add(1, SeqCst) == 0 {
                        alone.fetch_add(1, SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, SeqCst);
                } else {
                    let _a = Turn::shared();
                    let _b = Turn::shared();
                    inside.fetch_add(1, SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, SeqCst);
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(alone.load(SeqCst), 2, "each exclusive turn ran alone");
    }
}
