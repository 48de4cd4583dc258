//! The box's side of the controller's agent API: one mutually
//! authenticated HTTPS client (the certificate and key enrolment stored,
//! the controller's CA alone trusted), a long poll for the policy, and
//! reports.
//!
//! Several controllers (sharing one database) can serve the box: their
//! agent URLs are tried in turn, moving to the next one when one does not
//! answer. Nothing here holds a lock or blocks the dataplane: the agent
//! runs on a thread of its own, and whatever it cannot reach, the box
//! keeps forwarding on what it has.
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::enrol::Enrolled;

/// How long the controller may hold a poll (it answers earlier on a
/// change).
pub const POLL_WAIT: Duration = Duration::from_secs(20);
/// Most bytes of a policy answer.
pub const MAX_ANSWER: u64 = 16 << 20;
/// Least time between two polls.
pub const MIN_POLL_GAP: Duration = Duration::from_secs(1);
/// A revision the box refused is offered again after this long.
pub const RETRY_REFUSED: Duration = Duration::from_secs(300);
/// Longest pause between attempts when no controller answers.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A report at least this often while polls keep returning (the
/// controller calls a box that was silent for 90 s offline).
pub const REPORT_EVERY: Duration = Duration::from_secs(20);

/// Why the agent could not talk to a controller.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory lacks what enrolment writes.
    #[error("{path}: {why} (enrol first: sluice gateway --enrol URL --token T --state-dir DIR)")]
    State {
        /// Which file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// No controller could be reached.
    #[error("controller {url}: {why}")]
    Unreachable {
        /// The last URL tried.
        url: String,
        /// What happened.
        why: String,
    },
    /// A controller answered with an error.
    #[error("controller {url} answered {status}: {detail}")]
    Refused {
        /// Which.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its problem's detail.
        detail: String,
    },
}

/// A change of policy from the controller.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its revision.
    pub revision: i64,
    /// The JSON the controller sent.
    pub body: serde_json::Value,
}

/// The client.
pub struct Client {
    agent: ureq::Agent,
    urls: Vec<String>,
    current: usize,
    state_dir: std::path::PathBuf,
    configured: Vec<String>,
    /// Who enrolled.
    pub enrolled: Enrolled,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("urls", &self.urls)
            .field("name", &self.enrolled.name)
            .finish_non_exhaustive()
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, AgentError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| AgentError::State {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

impl Client {
    /// From the state directory enrolment wrote; `urls` (if any) replace
    /// the agent URL enrolment gave.
    ///
    /// # Errors
    /// Missing or unreadable enrolment files.
    pub fn new(state_dir: &Path, urls: &[String]) -> Result<Self, AgentError> {
        let bad = |name: &str, why: String| AgentError::State {
            path: state_dir.join(name).display().to_string(),
            why,
        };
        let enrolled: Enrolled = serde_json::from_slice(&read(state_dir, "enrolment.json")?)
            .map_err(|e| bad("enrolment.json", e.to_string()))?;
        let ca = ureq::tls::Certificate::from_pem(&read(state_dir, "ca.pem")?)
            .map_err(|e| bad("ca.pem", e.to_string()))?;
        let cert = ureq::tls::Certificate::from_pem(&read(state_dir, "cert.pem")?)
            .map_err(|e| bad("cert.pem", e.to_string()))?;
        let key = ureq::tls::PrivateKey::from_pem(&read(state_dir, "key.pem")?)
            .map_err(|e| bad("key.pem", e.to_string()))?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
            .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[cert], key)))
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .tls_config(tls)
                .timeout_global(Some(POLL_WAIT + Duration::from_secs(15)))
                .timeout_connect(Some(Duration::from_secs(5)))
                .max_redirects(0)
                .proxy(None)
                .http_status_as_error(false)
                .build(),
        );
        let urls_used = if urls.is_empty() {
            vec![enrolled.agent_url.trim_end_matches('/').to_string()]
        } else {
            urls.to_vec()
        };
        Ok(Self {
            agent,
            urls: urls_used,
            current: 0,
            state_dir: state_dir.to_path_buf(),
            configured: urls.to_vec(),
            enrolled,
        })
    }

    /// The URL in use.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.urls[self.current]
    }

    /// Sends one request to the current controller; on a transport error,
    /// the next controller is current for the next call.
    fn call(
        &mut self,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, String, Option<i64>), AgentError> {
        let url = format!("{}{path}", self.url());
        let r = match body {
            None => self.agent.get(&url).call(),
            Some(b) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b),
        };
        let mut resp = match r {
            Ok(r) => r,
            Err(e) => {
                let err = AgentError::Unreachable {
                    url: self.url().to_string(),
                    why: e.to_string(),
                };
                self.current = (self.current + 1) % self.urls.len();
                return Err(err);
            }
        };
        let status = resp.status().as_u16();
        let revision = resp
            .headers()
            .get("x-sluice-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| AgentError::Unreachable {
                url: self.url().to_string(),
                why: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            let detail = v["detail"]
                .as_str()
                .unwrap_or(&text)
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            // A controller that cannot serve (maintenance, its database
            // gone) may be alone in that: try the next.
            // Nor one that does not know this box (another store, a stale
            // one): the next may.
            if status >= 500 || status == 403 || status == 404 {
                self.current = (self.current + 1) % self.urls.len();
            }
            return Err(AgentError::Refused {
                url: url.clone(),
                status,
                detail,
            });
        }
        Ok((status, text, revision))
    }

    /// Waits (up to [`POLL_WAIT`]) for a revision above `after` (`None`:
    /// the current one at once). `Ok(None)`: no change.
    ///
    /// # Errors
    /// No answer, or an error answer.
    pub fn poll(&mut self, after: Option<i64>) -> Result<Option<Answer>, AgentError> {
        let path = match after {
            Some(a) => format!("/agent/v1/policy?after={a}&wait={}", POLL_WAIT.as_secs()),
            None => "/agent/v1/policy".into(),
        };
        let (status, text, current) = self.call(&path, None)?;
        if status == 204 {
            // The controller's revision went back (its store restored from
            // an older backup): what it has now is the policy, not a wait
            // for a revision it may never reach again.
            if let (Some(a), Some(c)) = (after, current)
                && c < a
            {
                log::warn!(
                    "controller {} is at revision {c}, behind the {a} applied here (its store restored?): taking its policy",
                    self.url()
                );
                return self.poll(None);
            }
            return Ok(None);
        }
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| AgentError::Refused {
                url: self.url().to_string(),
                status,
                detail: format!("its answer is not JSON: {e}"),
            })?;
        let revision = body["revision"]
            .as_i64()
            .ok_or_else(|| AgentError::Refused {
                url: self.url().to_string(),
                status,
                detail: "its answer has no revision".into(),
            })?;
        Ok(Some(Answer { revision, body }))
    }

    /// Reports to the controller.
    ///
    /// # Errors
    /// No answer, or an error answer.
    pub fn report(&mut self, report: &serde_json::Value) -> Result<(), AgentError> {
        let body = serde_json::to_vec(report).unwrap_or_default();
        self.call("/agent/v1/report", Some(&body)).map(|_| ())
    }
}

/// What the box made of a revision.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The revision it runs now.
    pub applied: Option<i64>,
    /// Why the revision offered was not applied, if it was not.
    pub error: Option<String>,
}

/// Sleeps `d` in short steps, returning early once `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// The agent's loop, until `stop`: polls for revisions after `applied`,
/// hands each to `apply` (which returns what runs now), and reports
/// (`report` builds it from the outcome) after each change and at least
/// every [`REPORT_EVERY`]. When no controller answers it backs off (up
/// to [`MAX_BACKOFF`]) and tries again, for ever: the box keeps what it
/// has.
pub fn run(
    client: &mut Client,
    mut applied: Option<i64>,
    stop: &AtomicBool,
    mut apply: impl FnMut(&Answer) -> Outcome,
    mut report: impl FnMut(&Outcome) -> serde_json::Value,
) {
    let mut outcome = Outcome {
        applied,
        error: None,
    };
    // The last revision offered (applied or not): not offered again until
    // RETRY_REFUSED has passed (a refusal may be the box's: a full disk,
    // a file mid-edit).
    let mut seen = applied;
    let mut refused_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(500);
    let mut last_report: Option<Instant> = None;
    let mut failing: Option<Instant> = None;
    let mut last_poll: Option<Instant> = None;
    while !stop.load(Relaxed) {
        // At most one poll a second, whatever the controller (or a proxy
        // in front of it) answers.
        if let Some(t) = last_poll {
            nap(MIN_POLL_GAP.saturating_sub(t.elapsed()), stop);
        }
        last_poll = Some(Instant::now());
        if refused_at.is_some_and(|t| t.elapsed() >= RETRY_REFUSED) {
            refused_at = None;
            seen = applied;
        }
        let polled = client.poll(seen.map(|s| s.max(0)));
        match polled {
            Ok(Some(answer)) => {
                if failing.take().is_some() {
                    log::info!("controller {} answers again", client.url());
                }
                backoff = Duration::from_millis(500);
                if Some(answer.revision) != applied {
                    if stop.load(Relaxed) {
                        break;
                    }
                    outcome = apply(&answer);
                    if outcome.applied.is_some() {
                        applied = outcome.applied;
                    } else {
                        outcome.applied = applied;
                    }
                    refused_at = outcome.error.is_some().then(Instant::now);
                    last_report = None;
                }
                seen = Some(answer.revision);
            }
            Ok(None) => {
                backoff = Duration::from_millis(500);
                if failing.take().is_some() {
                    log::info!("controller {} answers again", client.url());
                }
            }
            Err(e) => {
                // Said again every few minutes while it lasts.
                if failing.is_none_or(|t| t.elapsed() >= Duration::from_secs(300)) {
                    log::warn!("{e}; forwarding goes on with revision {applied:?}, trying again");
                    failing = Some(Instant::now());
                } else {
                    log::debug!("{e}");
                }
                // Refused for its certificate: enrolment may have
                // written a new one since this client was made.
                if matches!(e, AgentError::Refused { status: 403, .. })
                    && let Ok(fresh) = Client::new(&client.state_dir, &client.configured)
                {
                    let current = client.current;
                    *client = fresh;
                    client.current = current % client.urls.len();
                }
                nap(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            match client.report(&report(&outcome)) {
                Ok(()) => last_report = Some(Instant::now()),
                Err(e) => log::debug!("report: {e}"),
            }
        }
    }
}
