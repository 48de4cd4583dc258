//! The gateway's controller agent (a file with `[controller]`): takes each
//! new revision of its policy, applies it with the policy swap a reload
//! uses, keeps it on disk as the last good one, and reports what runs.
//!
//! A revision is checked before anything is written: merged with the
//! operator's file it must parse. It is then written to `policy.toml` and
//! applied as a reload is. A revision the swap refuses is reported and
//! the previous file put back, so the policy that runs and the one a
//! restart would load stay the same. A revision that changes what only a
//! start can change (the tunnels: edges, tenants) is kept for the next
//! start and reported as such; the running policy stays. When no
//! controller answers, nothing changes: the gateway forwards on what it
//! has, and the agent tries the controllers in turn until one does.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use sluice_config::{
    GatewayConfig,
    managed::{self, ControllerSection, Stored},
};
use sluice_runtime::agent::{self, Answer, Client, Outcome};

use super::{
    GatewayError,
    control::{PolicyControl, PolicyError},
    stats::{TenantStats, WorkerStats},
};

/// How long a first start waits for a controller when there is no policy
/// on disk yet.
pub const FIRST_FETCH: Duration = Duration::from_secs(60);

fn io(what: String) -> impl FnOnce(std::io::Error) -> GatewayError {
    move |source| GatewayError::Io { what, source }
}

/// A gateway managed by a controller without a policy on disk yet (its
/// first start after enrolment) fetches one before it loads its file,
/// waiting up to [`FIRST_FETCH`] for a controller. Nothing to do for a
/// file without `[controller]` or with a policy already kept.
///
/// # Errors
/// No controller answered in time, or its policy does not load here.
pub fn first_fetch(path: &Path) -> Result<(), GatewayError> {
    let src = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
    let Some(section) = managed::section(path, &src).map_err(policy_err)? else {
        return Ok(());
    };
    let file = section.file(managed::POLICY_FILE);
    if file.exists() {
        return Ok(());
    }
    let mut client = Client::new(&section.state_dir, &section.agent_urls).map_err(agent_err)?;
    let until = Instant::now() + FIRST_FETCH;
    let answer = loop {
        match client.poll(None) {
            Ok(Some(a)) => break a,
            Ok(None) => std::thread::sleep(Duration::from_secs(1)),
            Err(e) if Instant::now() < until => {
                log::warn!("no policy yet: {e}; trying again");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(agent_err(e)),
        }
    };
    let stored = stored(&answer).map_err(|e| GatewayError::Controller(e))?;
    let merged = managed::merge_gateway(path, &src, &section, &stored).map_err(policy_err)?;
    GatewayConfig::parse(path, &merged).map_err(policy_err)?;
    stored
        .write(&file)
        .map_err(io(format!("writing {}", file.display())))?;
    log::info!(
        "policy revision {} from {} kept in {}",
        stored.revision,
        client.url(),
        file.display()
    );
    Ok(())
}

fn policy_err(e: sluice_config::ConfigError) -> GatewayError {
    GatewayError::Policy(PolicyError::Config(e))
}

fn agent_err(e: agent::AgentError) -> GatewayError {
    GatewayError::Controller(e.to_string())
}

/// The policy text of an answer.
fn stored(a: &Answer) -> Result<Stored, String> {
    let text = a.body["policy"]
        .as_str()
        .ok_or("the controller's answer has no policy")?;
    Ok(Stored {
        revision: a.revision,
        text: text.to_string(),
    })
}

/// What the agent thread needs.
pub(super) struct Agent {
    pub(super) path: PathBuf,
    pub(super) section: ControllerSection,
    pub(super) control: Arc<PolicyControl>,
    pub(super) workers: Vec<Arc<WorkerStats>>,
    pub(super) tenants: Vec<Arc<TenantStats>>,
    pub(super) names: Vec<String>,
}

impl Agent {
    /// Runs until `stop` (on the thread `sluice-agent`).
    pub(super) fn run(self, stop: &AtomicBool) {
        let mut client = match Client::new(&self.section.state_dir, &self.section.agent_urls) {
            Ok(c) => c,
            Err(e) => {
                // Checked at start (the policy file exists): only a state
                // directory changed under a running gateway gets here.
                log::error!("controller agent: {e}; forwarding goes on, no new policy");
                while !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
                return;
            }
        };
        let file = self.section.file(managed::POLICY_FILE);
        let running = Stored::read(&file).ok().flatten().map(|s| s.revision);
        log::info!(
            "controller agent: gateway `{}` at revision {}, polling {}",
            client.enrolled.name,
            running.map_or("none".into(), |r| r.to_string()),
            client.url()
        );
        agent::run(
            &mut client,
            running,
            stop,
            |a| self.apply(a, &file),
            |o| self.report(o),
        );
    }

    fn apply(&self, a: &Answer, file: &Path) -> Outcome {
        let failed = |why: String| {
            log::error!(
                "controller revision {} refused, the policy in force stays: {why}",
                a.revision
            );
            Outcome {
                applied: None,
                error: Some(why),
            }
        };
        let new = match stored(a) {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let src = match std::fs::read_to_string(&self.path) {
            Ok(s) => s,
            Err(e) => return failed(format!("{}: {e}", self.path.display())),
        };
        if let Err(e) = managed::merge_gateway(&self.path, &src, &self.section, &new)
            .and_then(|m| GatewayConfig::parse(&self.path, &m))
        {
            return failed(e.to_string());
        }
        let old = Stored::read(file).ok().flatten();
        if let Err(e) = new.write(file) {
            return failed(format!("{}: {e}", file.display()));
        }
        match self.control.reload() {
            Ok(r) => {
                log::info!(
                    "controller revision {} in force (policy generation {})",
                    a.revision,
                    r.generation
                );
                Outcome {
                    applied: Some(a.revision),
                    // In force, but not everywhere (review h31 O3).
                    error: r.degraded,
                }
            }
            Err(e @ (PolicyError::TunnelsChanged { .. } | PolicyError::NeedsRestart { .. })) => {
                failed(format!(
                    "kept for the next start (a restart applies it): {e}"
                ))
            }
            Err(e) => {
                // Put the last good one back: what runs is what a restart
                // loads.
                if let Some(old) = old
                    && let Err(w) = old.write(file)
                {
                    log::error!(
                        "{}: putting revision {} back: {w}",
                        file.display(),
                        old.revision
                    );
                }
                failed(e.to_string())
            }
        }
    }

    fn report(&self, o: &Outcome) -> serde_json::Value {
        let up = super::tunnels_up(&self.tenants);
        let tunnels: Vec<serde_json::Value> = self
            .names
            .iter()
            .zip(up)
            .map(|(n, u)| {
                serde_json::json!({
                    "tenant": n,
                    "state": match u { Some(true) => "up", Some(false) => "down", None => "connecting" },
                })
            })
            .collect();
        let counters: serde_json::Map<String, serde_json::Value> =
            WorkerStats::totals(&self.workers)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
        let applied = o.applied.unwrap_or(0);
        serde_json::json!({
            "applied_revision": applied,
            "version": env!("CARGO_PKG_VERSION"),
            "health": if o.error.is_some() { "degraded" } else { "ok" },
            "error": o.error,
            "tunnels": tunnels,
            "counters": counters,
        })
    }
}
