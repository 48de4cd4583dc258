//! Starting processes and running them to completion with a time limit.
//!
//! Every child is forked from one long-lived "spawner" thread, in a process
//! group of its own, with a parent-death signal: a group can be signalled as
//! a whole (timeouts, `Lab::stop`, drop), Ctrl-C at a terminal does not
//! race the lab's orderly teardown, and if the process that owns the lab
//! dies, its children die with it. (`PR_SET_PDEATHSIG` fires when the
//! forking *thread* ends, hence the dedicated thread rather than the
//! caller's, which may be a short-lived test or helper thread.)

use std::{
    io,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::sys;

type Job = (Command, mpsc::SyncSender<io::Result<Child>>);

static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

/// Starts `cmd` in a new process group, with the parent-death signal set.
pub(crate) fn start(mut cmd: Command) -> io::Result<Child> {
    cmd.process_group(0);
    sys::die_with_parent(&mut cmd);
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("sluice-lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(tx) = spawner else {
        // No spawner thread could be made: fork from this thread instead
        // (the child then dies with this thread rather than the process).
        return cmd.spawn();
    };
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    tx.send((cmd, reply_tx))
        .map_err(|_| io::Error::other("sluice-lab spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("sluice-lab spawner thread is gone"))?
}

/// `argv` as a shell-like string, for messages.
pub(crate) fn describe<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.as_ref();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%[]".contains(c))
            {
                a.to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `Command` for `argv` (which must not be empty).
pub(crate) fn command<S: AsRef<str>>(argv: &[S]) -> Command {
    let mut cmd = Command::new(argv[0].as_ref());
    cmd.args(argv[1..].iter().map(AsRef::as_ref));
    cmd
}

/// What [`capture`] saw.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) output: Output,
    /// The command, or something it left holding its stdout/stderr, was
    /// still running at the deadline and was killed.
    pub(crate) timed_out: bool,
}

/// A thread draining one pipe into a shared buffer, so that a partial
/// output survives a timeout.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
}

impl Drain {
    fn new(pipe: Option<impl io::Read + Send + 'static>) -> Drain {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(pipe.is_none()));
        if let Some(mut pipe) = pipe {
            let (buf, done) = (Arc::clone(&buf), Arc::clone(&done));
            let spawned = thread::Builder::new()
                .name("sluice-lab-drain".into())
                .spawn({
                    let done = Arc::clone(&done);
                    move || {
                        let mut chunk = [0u8; 16 * 1024];
                        loop {
                            match pipe.read(&mut chunk) {
                                Ok(0) => break,
                                Ok(n) => buf
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .extend_from_slice(&chunk[..n]),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                        done.store(true, Ordering::Release);
                    }
                });
            if spawned.is_err() {
                done.store(true, Ordering::Release);
            }
        }
        Drain { buf, done }
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Runs `cmd` to completion with stdin from /dev/null and stdout/stderr
/// captured. At `timeout`, its whole process group is killed. Whatever the
/// command leaves in its process group when it exits is killed too (a
/// command run to completion must not leave daemons behind: use
/// `Lab::spawn` for those). Never panics.
pub(crate) fn capture(mut cmd: Command, timeout: Duration) -> io::Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = start(cmd)?;
    let pid = child.id();
    let out = Drain::new(child.stdout.take());
    let err = Drain::new(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    let mut pause = Duration::from_millis(1);
    loop {
        if status.is_none() && sys::has_exited(pid) {
            // Leftovers in the group go first, while the zombie still
            // reserves the group id.
            sys::signal_group(pid, sys::SIGKILL);
            status = Some(reap(&mut child));
        }
        if status.is_some() && out.done() && err.done() {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            if status.is_none() {
                sys::signal_group(pid, sys::SIGKILL);
                status = Some(reap(&mut child));
            }
            // Give the drains a moment to see the end of the pipes.
            let grace = Instant::now() + Duration::from_millis(200);
            while !(out.done() && err.done()) && Instant::now() < grace {
                thread::sleep(Duration::from_millis(5));
            }
            break;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    Ok(Captured {
        output: Output {
            status: status.unwrap_or_else(|| ExitStatus::from_raw(sys::SIGKILL)),
            stdout: out.take(),
            stderr: err.take(),
        },
        timed_out,
    })
}

/// Waits for a child known to have exited or been sent SIGKILL.
pub(crate) fn reap(child: &mut Child) -> ExitStatus {
    child
        .wait()
        .unwrap_or_else(|_| ExitStatus::from_raw(sys::SIGKILL))
}
