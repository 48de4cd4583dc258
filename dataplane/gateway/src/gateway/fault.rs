//! Test-only faults: a supervised thread that leaves its loop as on an
//! error, hangs (alive, no progress, deaf to `stop`) or panics, on cue.
//! The lab's supervision tests (`tests/e2e/faults.rs`) use them to check
//! that the gateway notices and fails closed.
//!
//! Compiled in only with the `fault-injection` cargo feature (the lab
//! tests' build turns it on; a deployed `cargo build --release -p sluice`
//! has none of it: every call below is then a no-op the compiler removes).
//! Even when compiled in, nothing happens unless the process's environment
//! says so:
//!
//! - `SLUICE_FAULT=<action>:<thread>`: `exit`, `hang` or `panic`, in the
//!   thread of that name (`sluice-q0`, `sluice-endpoint`, `sluice-exec`,
//!   `sluice-addrs`, `sluice-dns`);
//! - `SLUICE_FAULT_TRIGGER=<path>`: the fault fires once that file exists
//!   (looked for at most every 100 ms); without it, at the first loop turn.
//!
//! An environment variable rather than an API request: only whoever starts
//! the process can set it, and whoever can do that can already run
//! anything as the gateway's user; there is nothing new to attack.

/// What a faulty thread does.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Leaves its loop, as on an I/O error.
    Exit,
    /// Blocks forever (no more heartbeats, `stop` ignored).
    Hang,
    /// Panics.
    Panic,
}

/// A fault armed for one thread.
#[cfg(feature = "fault-injection")]
#[derive(Debug)]
pub(crate) struct Fault {
    thread: String,
    action: Action,
    trigger: Option<std::path::PathBuf>,
    next_check: std::time::Instant,
}

/// A fault armed for one thread (none in this build).
#[cfg(not(feature = "fault-injection"))]
#[derive(Debug)]
pub(crate) struct Fault;

#[cfg(feature = "fault-injection")]
impl Fault {
    /// The fault `SLUICE_FAULT` arms for thread `thread`, if any.
    pub(crate) fn for_thread(thread: &str) -> Option<Self> {
        let spec = std::env::var("SLUICE_FAULT").ok()?;
        let (action, name) = spec.split_once(':')?;
        if name != thread {
            return None;
        }
        let action = match action {
            "exit" => Action::Exit,
            "hang" => Action::Hang,
            "panic" => Action::Panic,
            _ => {
                log::error!("SLUICE_FAULT={spec}: unknown action (exit, hang, panic)");
                return None;
            }
        };
        log::warn!("fault injection: thread {thread} will {action:?} on cue");
        Some(Self {
            thread: thread.to_string(),
            action,
            trigger: std::env::var_os("SLUICE_FAULT_TRIGGER").map(Into::into),
            next_check: std::time::Instant::now(),
        })
    }

    fn due(&mut self) -> Option<Action> {
        let now = std::time::Instant::now();
        if now < self.next_check {
            return None;
        }
        self.next_check = now + std::time::Duration::from_millis(100);
        match &self.trigger {
            Some(p) if !p.exists() => None,
            _ => Some(self.action),
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
impl Fault {
    /// None in this build.
    #[inline(always)]
    pub(crate) fn for_thread(_thread: &str) -> Option<Self> {
        None
    }
}

/// Called once per loop turn of a supervised thread: performs the armed
/// fault when it is due. True if the loop must end now (as on an error).
#[cfg(feature = "fault-injection")]
pub(crate) fn inject(fault: &mut Option<Fault>) -> bool {
    let Some(f) = fault.as_mut() else {
        return false;
    };
    match f.due() {
        None => false,
        Some(Action::Exit) => {
            log::error!(
                "fault injection: {} leaves its loop as on an error",
                f.thread
            );
            true
        }
        Some(Action::Hang) => {
            log::error!("fault injection: {} hangs", f.thread);
            loop {
                std::thread::sleep(std::time::Duration::MAX);
            }
        }
        Some(Action::Panic) => panic!("fault injection: {} panics", f.thread),
    }
}

/// Nothing to inject in this build.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn inject(_fault: &mut Option<Fault>) -> bool {
    false
}

/// Warns at start that this binary carries the test-only fault hooks.
pub(crate) fn warn_if_compiled_in() {
    if cfg!(feature = "fault-injection") {
        log::warn!(
            "this sluice binary was built with the test-only `fault-injection` feature (a test build): do not deploy it"
        );
    }
}
