//! The edge's controller agent (a file with `[controller]`): learns the
//! gateways it serves and, for each, the certificates that are neither
//! revoked nor expired. A certificate the controller no longer lists is
//! refused at the next handshake and its live tunnels are closed within
//! about a second ([`Shared::set_allowed_certificates`]); a gateway the
//! controller no longer lists at all is refused entirely.
//!
//! The prefix table is built at start: a gateway added, or a gateway
//! whose prefixes changed, takes effect at the edge's next start (kept in
//! `gateways.toml` meanwhile, and reported). When no controller answers,
//! the edge keeps serving with the list it has.
use std::{
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use sluice_config::{
    EdgeConfig,
    managed::{self, ControllerSection, Stored},
};
use sluice_core::edge::Shared;
use sluice_runtime::agent::{self, Answer, Client, Outcome};

/// How long a first start waits for a controller when there is no list
/// on disk yet.
pub const FIRST_FETCH: Duration = Duration::from_secs(60);

/// One gateway as the controller lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct Listed {
    name: String,
    prefixes: Vec<String>,
    #[serde(default)]
    certificates: Vec<String>,
}

fn parse_answer(a: &Answer) -> Result<Vec<Listed>, String> {
    let list = a
        .body
        .get("gateways")
        .ok_or("the answer lists no gateways")?;
    let list: Vec<Listed> =
        serde_json::from_value(list.clone()).map_err(|e| format!("its gateway list: {e}"))?;
    if list.len() > 30_000 {
        return Err("more gateways than an edge serves".into());
    }
    Ok(list)
}

/// The `gateways.toml` text of a list (gateways without prefixes are left
/// out: the edge could route nothing to them).
fn render(list: &[Listed]) -> String {
    use std::fmt::Write as _;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let arr = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| q(s)).collect();
        format!("[{}]", items.join(", "))
    };
    let mut out = String::new();
    for g in list.iter().filter(|g| !g.prefixes.is_empty()) {
        let _ = write!(
            out,
            "[[gateway]]\nname = {}\nprefixes = {}\ncertificates = {}\n\n",
            q(&g.name),
            arr(&g.prefixes),
            arr(&g.certificates)
        );
    }
    out
}

/// Prefixes as the edge writes them, sorted (those that do not parse
/// kept as written): what the controller sent and what runs compare
/// equal when they mean the same (review h31 O2).
fn canonical(prefixes: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = prefixes
        .map(|p| {
            p.parse::<sluice_core::net::Prefix>()
                .map_or(p, |x| x.to_string())
        })
        .collect();
    v.sort();
    v
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The allow-list for the running gateway table `names` (index: gateway
/// id): each name's listed certificates; a name not listed gets none.
fn allowed(names: &[String], list: &[Listed]) -> Vec<Vec<[u8; 32]>> {
    names
        .iter()
        .map(|n| {
            list.iter()
                .find(|g| &g.name == n)
                .map(|g| g.certificates.iter().filter_map(|c| hex32(c)).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// The stored list, typed.
fn stored_list(s: &Stored) -> Result<Vec<Listed>, String> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        gateway: Vec<Listed>,
    }
    toml::from_str::<File>(&s.text)
        .map(|f| f.gateway)
        .map_err(|e| e.to_string())
}

/// An edge managed by a controller without a gateway list on disk yet
/// fetches one before it loads its file, waiting up to [`FIRST_FETCH`].
///
/// # Errors
/// No controller answered in time, or its list does not load here.
pub fn first_fetch(path: &Path) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(section) = managed::section(path, &src).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let file = section.file(managed::GATEWAYS_FILE);
    if file.exists() {
        return Ok(());
    }
    let mut client =
        Client::new(&section.state_dir, &section.agent_urls).map_err(|e| e.to_string())?;
    let until = Instant::now() + FIRST_FETCH;
    let answer = loop {
        match client.poll(None) {
            Ok(Some(a)) => break a,
            Ok(None) => std::thread::sleep(Duration::from_secs(1)),
            Err(e) if Instant::now() < until => {
                log::warn!("no gateway list yet: {e}; trying again");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let list = parse_answer(&answer)?;
    let stored = Stored {
        revision: answer.revision,
        text: render(&list),
    };
    let merged = managed::merge_edge(path, &src, &section, &stored).map_err(|e| e.to_string())?;
    EdgeConfig::parse(path, &merged).map_err(|e| e.to_string())?;
    stored
        .write(&file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    log::info!(
        "gateway list revision {} from {} kept in {}",
        stored.revision,
        client.url(),
        file.display()
    );
    Ok(())
}

/// Installs the stored list's certificates as the allow-list before the
/// edge serves: the certificates the controller listed last. (A
/// certificate revoked while the edge was down is taken until the
/// controller's first answer: the stored list's revision and age are
/// logged.)
///
/// # Errors
/// The stored list cannot be read.
pub fn install_stored(cfg: &EdgeConfig, shared: &Shared) -> Result<(), String> {
    let Some(section) = &cfg.controller else {
        return Ok(());
    };
    let file = section.file(managed::GATEWAYS_FILE);
    let stored = Stored::read(&file)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: missing", file.display()))?;
    let list = stored_list(&stored).map_err(|e| format!("{}: {e}", file.display()))?;
    let age = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or_else(|| "?".into(), |d| format!("{} s", d.as_secs()));
    log::info!(
        "gateway certificates of controller revision {} (kept {age} ago) in force until the controller answers",
        stored.revision
    );
    let names: Vec<String> = cfg.gateways.iter().map(|g| g.name.clone()).collect();
    shared.set_allowed_certificates(Some(allowed(&names, &list)));
    Ok(())
}

/// The agent: what it needs.
#[derive(Debug)]
pub struct Agent {
    path: std::path::PathBuf,
    section: ControllerSection,
    names: Vec<String>,
    running: Vec<Listed>,
    shared: Arc<Shared>,
    started_at: Option<i64>,
}

impl Agent {
    /// For the edge started with `cfg`, its workers sharing `shared`.
    /// `None` without `[controller]`.
    #[must_use]
    pub fn new(cfg: &EdgeConfig, shared: Arc<Shared>) -> Option<Self> {
        let section = cfg.controller.clone()?;
        let stored = Stored::read(&section.file(managed::GATEWAYS_FILE))
            .ok()
            .flatten();
        Some(Self {
            path: cfg.path.clone(),
            names: cfg.gateways.iter().map(|g| g.name.clone()).collect(),
            running: cfg
                .gateways
                .iter()
                .map(|g| Listed {
                    name: g.name.clone(),
                    prefixes: canonical(g.prefixes.iter().map(ToString::to_string)),
                    certificates: Vec::new(),
                })
                .collect(),
            started_at: stored.map(|s| s.revision),
            section,
            shared,
        })
    }

    /// Runs until `stop` (on a thread of its own).
    pub fn run(self, stop: &AtomicBool) {
        let mut client = match Client::new(&self.section.state_dir, &self.section.agent_urls) {
            Ok(c) => c,
            Err(e) => {
                log::error!("controller agent: {e}; the edge serves its last gateway list");
                return;
            }
        };
        log::info!(
            "controller agent: edge `{}` at revision {:?}, polling {}",
            client.enrolled.name,
            self.started_at,
            client.url()
        );
        let file = self.section.file(managed::GATEWAYS_FILE);
        agent::run(
            &mut client,
            self.started_at,
            stop,
            |a| self.apply(a, &file),
            |o| {
                serde_json::json!({
                    "applied_revision": o.applied.unwrap_or(0),
                    "version": env!("CARGO_PKG_VERSION"),
                    "health": if o.error.is_some() { "degraded" } else { "ok" },
                    "error": o.error,
                })
            },
        );
    }

    fn apply(&self, a: &Answer, file: &Path) -> Outcome {
        let list = match parse_answer(a) {
            Ok(l) => l,
            Err(e) => {
                log::error!("controller revision {}: {e}", a.revision);
                return Outcome {
                    applied: None,
                    error: Some(e),
                };
            }
        };
        // Revocations first, whatever else the revision says.
        let allowed = allowed(&self.names, &list);
        let refused: Vec<&str> = self
            .names
            .iter()
            .zip(&allowed)
            .filter(|(_, a)| a.is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
        self.shared.set_allowed_certificates(Some(allowed));
        if !refused.is_empty() {
            log::warn!(
                "controller revision {}: gateways refused (revoked or removed): {}",
                a.revision,
                refused.join(", ")
            );
        }
        let stored = Stored {
            revision: a.revision,
            text: render(&list),
        };
        // Kept for the next start only if the edge could start with it
        // (review h31 O1): overlapping prefixes, reserved ones or an empty
        // list would leave it unable to.
        let loads = std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|src| {
                managed::merge_edge(&self.path, &src, &self.section, &stored)
                    .and_then(|m| EdgeConfig::parse(&self.path, &m))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = &loads {
            log::error!(
                "controller revision {}: its gateway list would not load here ({e}); revocations are in force, {} keeps the last list that loads",
                a.revision,
                file.display()
            );
            return Outcome {
                applied: None,
                error: Some(format!("the gateway list does not load here: {e}")),
            };
        }
        if let Err(e) = stored.write(file) {
            log::error!("{}: {e}", file.display());
        }
        let same_table = list.iter().filter(|g| !g.prefixes.is_empty()).all(|g| {
            let want = canonical(g.prefixes.iter().cloned());
            self.running
                .iter()
                .any(|r| r.name == g.name && r.prefixes == want)
        });
        if same_table {
            log::info!("controller revision {} in force", a.revision);
            Outcome {
                applied: Some(a.revision),
                error: None,
            }
        } else {
            let why = "gateways were added or their prefixes changed: the edge takes them at its next start (revocations are in force)".to_string();
            log::warn!("controller revision {}: {why}", a.revision);
            Outcome {
                applied: None,
                error: Some(why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_render_and_read_back_and_unlisted_names_get_nothing() {
        let c = "ab".repeat(32);
        let list = vec![
            Listed {
                name: "gw1".into(),
                prefixes: vec!["192.0.2.0/24".into()],
                certificates: vec![c.clone(), "not hex".into()],
            },
            Listed {
                name: "empty".into(),
                prefixes: vec![],
                certificates: vec![],
            },
        ];
        let text = render(&list);
        let back = stored_list(&Stored { revision: 3, text }).unwrap();
        assert_eq!(back, list[..1].to_vec());
        let a = allowed(&["gw1".into(), "gw2".into()], &back);
        assert_eq!(a, vec![vec![[0xab; 32]], vec![]]);
        // A name with a quote cannot break out of its string.
        let odd = render(&[Listed {
            name: "a\"\n[x]".into(),
            prefixes: vec!["p".into()],
            certificates: vec![],
        }]);
        assert_eq!(
            stored_list(&Stored {
                revision: 1,
                text: odd
            })
            .unwrap()[0]
                .name,
            "a\"\n[x]"
        );
    }
}
