//! A box managed by a controller (`[controller]`).
//!
//! The operator's file keeps what is the box's own: interfaces, listeners,
//! limits, and (for a gateway) the tunnel's knobs such as `mtu` or
//! `keepalive_secs`. The controller owns the rest, and the box keeps its
//! latest word in the state directory written at enrolment
//! (`sluice gateway --enrol`):
//!
//! - a gateway: `policy.toml`, the policy sections (`[policy]`,
//!   `[[identity]]`, `[[rule]]`, `[[profile]]`, `[[tenant]]`,
//!   `[forwarding]`) and the internet tenant's edges (`[tunnel_edges]`);
//! - an edge: `gateways.toml`, the `[[gateway]]` tables it serves.
//!
//! Both also take their certificate, key and CA from the state directory
//! (`cert.pem`, `key.pem`, `ca.pem`). Loading merges the two into one
//! document, writes it to `effective.toml` in the state directory (0600:
//! what runs, for the operator to read; errors point into it) and parses
//! that as any other file. A file that sets what the controller owns is
//! refused, so an operator's edit never silently loses to the controller's.
//!
//! ```toml
//! [gateway]
//! name = "branch-1"     # default: the name it enrolled with
//! lan = "lan0"
//! wan = "wan0"
//!
//! [controller]
//! state_dir = "/var/lib/sluice"
//! # agent_urls = ["https://ctl-a.example:8444", "https://ctl-b.example:8444"]
//! ```
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::ConfigError;

/// The gateway's policy from the controller, in the state directory.
pub const POLICY_FILE: &str = "policy.toml";
/// The edge's gateways from the controller, in the state directory.
pub const GATEWAYS_FILE: &str = "gateways.toml";
/// The merged document that runs, in the state directory.
pub const EFFECTIVE_FILE: &str = "effective.toml";
/// What enrolment wrote, in the state directory.
pub const ENROLMENT_FILE: &str = "enrolment.json";

/// Sections a gateway's controller owns.
const GATEWAY_OWNED: [&str; 6] = [
    "policy",
    "identity",
    "rule",
    "profile",
    "tenant",
    "forwarding",
];
/// `[tunnel]` fields a gateway's controller owns.
const TUNNEL_OWNED: [&str; 8] = [
    "edge",
    "edges",
    "server_name",
    "transport",
    "transport_fallback",
    "ca",
    "cert",
    "key",
];
/// `[edge]` fields an edge's controller owns.
const EDGE_OWNED: [&str; 4] = ["gateway", "ca", "cert", "key"];

/// `[controller]`: where the box keeps what the controller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSection {
    /// The state directory (enrolment files, the last policy).
    pub state_dir: PathBuf,
    /// The controllers' agent URLs, tried in turn (default: the one
    /// enrolment gave).
    pub agent_urls: Vec<String>,
}

impl ControllerSection {
    /// A file in the state directory.
    #[must_use]
    pub fn file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }
}

fn invalid(path: &Path, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line: 1,
        column: 1,
        field: field.into(),
        message: message.into(),
    }
}

/// Parses `src` as a table (syntax errors point into `path`).
fn table(path: &Path, src: &str) -> Result<Table, ConfigError> {
    src.parse::<Table>().map_err(|e| {
        let (line, column) = crate::line_col(src, e.span().map_or(0, |s| s.start));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            field: String::new(),
            message: e.message().trim().to_string(),
        }
    })
}

/// The `[controller]` section of the operator's file `path`, if it has
/// one (relative `state_dir` is relative to the file's directory).
///
/// # Errors
/// A malformed section.
pub fn section(path: &Path, src: &str) -> Result<Option<ControllerSection>, ConfigError> {
    let doc = table(path, src)?;
    section_of(path, &doc)
}

fn section_of(path: &Path, doc: &Table) -> Result<Option<ControllerSection>, ConfigError> {
    let Some(c) = doc.get("controller") else {
        return Ok(None);
    };
    let Value::Table(c) = c else {
        return Err(invalid(path, "controller", "expected a table"));
    };
    for k in c.keys() {
        if !["state_dir", "agent_urls"].contains(&k.as_str()) {
            return Err(invalid(
                path,
                &format!("controller.{k}"),
                "unknown field, expected `state_dir` or `agent_urls`",
            ));
        }
    }
    let Some(Value::String(dir)) = c.get("state_dir") else {
        return Err(invalid(
            path,
            "controller.state_dir",
            "expected the state directory enrolment wrote (a string)",
        ));
    };
    let dir = PathBuf::from(dir);
    let state_dir = if dir.is_absolute() {
        dir
    } else {
        path.parent().unwrap_or(Path::new(".")).join(dir)
    };
    let mut agent_urls = Vec::new();
    match c.get("agent_urls") {
        None => {}
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 16 => {
            for (i, u) in a.iter().enumerate() {
                match u {
                    Value::String(s) if s.starts_with("https://") && s.len() <= 512 => {
                        agent_urls.push(s.trim_end_matches('/').to_string());
                    }
                    _ => {
                        return Err(invalid(
                            path,
                            &format!("controller.agent_urls[{i}]"),
                            "expected https://HOST[:PORT]",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                path,
                "controller.agent_urls",
                "expected 1 to 16 URLs",
            ));
        }
    }
    Ok(Some(ControllerSection {
        state_dir,
        agent_urls,
    }))
}

/// A file the controller wrote, with the revision on its first line
/// (`# revision N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its revision.
    pub revision: i64,
    /// Its TOML.
    pub text: String,
}

impl Stored {
    /// The file's contents.
    #[must_use]
    pub fn render(&self) -> String {
        format!("# revision {}\n{}", self.revision, self.text)
    }

    /// Reads a stored file: `None` if there is none yet.
    ///
    /// # Errors
    /// It cannot be read or has no revision line.
    pub fn read(path: &Path) -> Result<Option<Stored>, ConfigError> {
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let (first, rest) = src.split_once('\n').unwrap_or((&src, ""));
        let revision = first
            .strip_prefix("# revision ")
            .and_then(|r| r.trim().parse().ok())
            .ok_or_else(|| invalid(path, "", "expected `# revision N` on the first line"))?;
        Ok(Some(Stored {
            revision,
            text: rest.to_string(),
        }))
    }

    /// Writes it atomically, 0600.
    ///
    /// # Errors
    /// The write failed (nothing changed then).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_private(path, self.render().as_bytes())
    }
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it),
/// 0600, synced.
///
/// # Errors
/// The write failed (`path` is unchanged then).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn refuse_owned(path: &Path, doc: &Table, owned: &[&str], within: &str) -> Result<(), ConfigError> {
    let t = if within.is_empty() {
        Some(doc)
    } else {
        doc.get(within).and_then(Value::as_table)
    };
    if let Some(t) = t {
        for k in owned {
            if t.contains_key(*k) {
                let field = if within.is_empty() {
                    (*k).to_string()
                } else {
                    format!("{within}.{k}")
                };
                return Err(invalid(
                    path,
                    &field,
                    "set by the controller for a box with [controller]: remove it here and change it at the controller",
                ));
            }
        }
    }
    Ok(())
}

fn certs(c: &ControllerSection) -> [(&'static str, Value); 3] {
    let s = |n: &str| Value::String(c.file(n).to_string_lossy().into_owned());
    [
        ("ca", s("ca.pem")),
        ("cert", s("cert.pem")),
        ("key", s("key.pem")),
    ]
}

/// The enrolled name (from `enrolment.json`), if enrolment wrote one.
fn enrolled_name(c: &ControllerSection) -> Option<String> {
    let text = std::fs::read_to_string(c.file(ENROLMENT_FILE)).ok()?;
    let at = text.find("\"name\"")?;
    let rest = &text[at + 6..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

/// An operator's file `src` (a gateway's, or an edge's if `edge`), one
/// that ran on its own (its own edges or gateways, CA and key), made into
/// one a controller manages, as an appliance's enrolment on first boot
/// does: what the controller owns is removed, and the name (the enrolled
/// one, on the certificate, is used), and `[controller]` names
/// `state_dir` (the agent URL is the one enrolment gave). What is left
/// (interfaces, listeners, metrics, timers, bypass) stays the operator's.
/// Comments are not kept.
///
/// # Errors
/// `src` is not a TOML table, or has a malformed `[controller]`.
pub fn for_controller(
    path: &Path,
    src: &str,
    state_dir: &Path,
    edge: bool,
) -> Result<String, ConfigError> {
    let mut doc = table(path, src)?;
    section_of(path, &doc)?;
    let (owned, within, fields): (&[&str], _, &[&str]) = if edge {
        (&[], "edge", &EDGE_OWNED)
    } else {
        (&GATEWAY_OWNED, "tunnel", &TUNNEL_OWNED)
    };
    for k in owned {
        doc.remove(*k);
    }
    if let Some(Value::Table(t)) = doc.get_mut(within) {
        for k in fields {
            t.remove(*k);
        }
        if t.is_empty() {
            doc.remove(within);
        }
    }
    let named = if edge { "edge" } else { "gateway" };
    if let Some(Value::Table(g)) = doc.get_mut(named) {
        g.remove("name");
    }
    let mut c = Table::new();
    c.insert(
        "state_dir".into(),
        Value::String(state_dir.to_string_lossy().into_owned()),
    );
    doc.insert("controller".into(), Value::Table(c));
    toml::to_string(&doc).map_err(|e| invalid(path, "", format!("cannot write it back: {e}")))
}

/// A gateway's operator file `src` with `policy` (the controller's
/// sections) merged in, as TOML. `None` policy: the file as it is, with
/// no tunnel (the caller fetches one first).
///
/// # Errors
/// The file sets what the controller owns, or either part is malformed.
pub fn merge_gateway(
    path: &Path,
    src: &str,
    section: &ControllerSection,
    policy: &Stored,
) -> Result<String, ConfigError> {
    let mut doc = table(path, src)?;
    refuse_owned(path, &doc, &GATEWAY_OWNED, "")?;
    refuse_owned(path, &doc, &TUNNEL_OWNED, "tunnel")?;
    doc.remove("controller");
    let policy_path = section.file(POLICY_FILE);
    let mut policy = table(&policy_path, &policy.text)?;
    let edges = policy.remove("tunnel_edges");
    // Paths on the box are the box's own (review h31 S4): a policy that
    // names one is refused.
    for (section, fields) in [
        ("tenant", &["crl"][..]),
        ("forwarding", &["resolv_conf", "dhcp_leases"][..]),
    ] {
        let tables: Vec<&Table> = match policy.get(section) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_table).collect(),
            Some(Value::Table(t)) => vec![t],
            _ => Vec::new(),
        };
        for t in tables {
            for f in fields {
                if t.contains_key(*f) {
                    return Err(invalid(
                        &policy_path,
                        &format!("{section}.{f}"),
                        "a path on the box: not the controller's to set",
                    ));
                }
            }
        }
    }
    for (k, v) in policy {
        if !GATEWAY_OWNED.contains(&k.as_str()) {
            return Err(invalid(
                &policy_path,
                &k,
                "not a section the controller may set",
            ));
        }
        doc.insert(k, v);
    }
    let certs = certs(section);
    let mut tunnel = match doc.remove("tunnel") {
        Some(Value::Table(t)) => t,
        None => Table::new(),
        Some(_) => return Err(invalid(path, "tunnel", "expected a table")),
    };
    let Some(Value::Table(edges)) = edges else {
        return Err(invalid(
            &policy_path,
            "tunnel_edges",
            "the controller names no internet tenant with edges for this gateway: add one at the controller",
        ));
    };
    for (k, v) in edges {
        if !["edges", "server_name", "transport", "transport_fallback"].contains(&k.as_str()) {
            return Err(invalid(
                &policy_path,
                &format!("tunnel_edges.{k}"),
                "not a field the controller may set",
            ));
        }
        tunnel.insert(k, v);
    }
    for (k, v) in certs.clone() {
        tunnel.insert(k.into(), v);
    }
    doc.insert("tunnel".into(), Value::Table(tunnel));
    if let Some(Value::Array(ts)) = doc.get_mut("tenant") {
        for t in ts {
            if let Value::Table(t) = t {
                for (k, v) in certs.clone() {
                    t.insert(k.into(), v);
                }
            }
        }
    }
    if let Some(Value::Table(gw)) = doc.get_mut("gateway")
        && !gw.contains_key("name")
        && let Some(name) = enrolled_name(section)
    {
        gw.insert("name".into(), Value::String(name));
    }
    Ok(toml::to_string(&doc).unwrap_or_default())
}

/// An edge's operator file `src` with the controller's `gateways` (a
/// `[[gateway]]` array) merged in as `[[edge.gateway]]`.
///
/// # Errors
/// The file sets what the controller owns, or either part is malformed.
pub fn merge_edge(
    path: &Path,
    src: &str,
    section: &ControllerSection,
    gateways: &Stored,
) -> Result<String, ConfigError> {
    let mut doc = table(path, src)?;
    refuse_owned(path, &doc, &EDGE_OWNED, "edge")?;
    doc.remove("controller");
    let gw_path = section.file(GATEWAYS_FILE);
    let gws = table(&gw_path, &gateways.text)?;
    // Each gateway's certificate fingerprints are the edge's own business
    // (its allow-list), not the file's.
    let list = match gws.get("gateway") {
        Some(Value::Array(a)) => a
            .iter()
            .cloned()
            .map(|mut g| {
                if let Value::Table(t) = &mut g {
                    t.remove("certificates");
                }
                g
            })
            .collect::<Vec<_>>(),
        None => Vec::new(),
        Some(_) => return Err(invalid(&gw_path, "gateway", "expected [[gateway]] tables")),
    };
    if list.is_empty() {
        return Err(invalid(
            &gw_path,
            "gateway",
            "the controller lists no gateways for this edge yet: create and enrol one, then start the edge",
        ));
    }
    let Some(Value::Table(edge)) = doc.get_mut("edge") else {
        return Err(invalid(path, "edge", "missing section [edge]"));
    };
    edge.insert("gateway".into(), Value::Array(list));
    for (k, v) in certs(section) {
        edge.insert(k.into(), v);
    }
    if !edge.contains_key("name")
        && let Some(name) = enrolled_name(section)
    {
        edge.insert("name".into(), Value::String(name));
    }
    Ok(toml::to_string(&doc).unwrap_or_default())
}

/// What a load reads: the operator's file, merged with the controller's
/// part when it has `[controller]`. Returns the text to parse and the
/// path errors should name (the effective file, which is written).
pub(crate) fn effective(
    path: &Path,
    src: String,
    edge: bool,
) -> Result<(String, Option<PathBuf>, Option<ControllerSection>), ConfigError> {
    let Some(section) = section(path, &src)? else {
        return Ok((src, None, None));
    };
    let file = section.file(if edge { GATEWAYS_FILE } else { POLICY_FILE });
    let stored = Stored::read(&file)?.ok_or_else(|| {
        invalid(
            &file,
            "",
            "nothing from the controller yet: enrol, and start with a controller reachable once",
        )
    })?;
    let merged = if edge {
        merge_edge(path, &src, &section, &stored)?
    } else {
        merge_gateway(path, &src, &section, &stored)?
    };
    let eff = section.file(EFFECTIVE_FILE);
    let text = format!(
        "# What runs: {} with revision {} of the controller's {} (written at each load; edit those, not this)\n{merged}",
        path.display(),
        stored.revision,
        file.display()
    );
    // Best effort: the file is for the operator to read.
    if let Err(e) = write_private(&eff, text.as_bytes()) {
        log::warn!("{}: {e}", eff.display());
    }
    Ok((text, Some(eff), Some(section)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EdgeConfig, GatewayConfig};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-managed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("state")).unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(d.join("state").join(f), "x").unwrap();
        }
        std::fs::write(
            d.join("state").join(ENROLMENT_FILE),
            r#"{"kind":"gateway","id":"gw_1","name":"branch-9","agent_url":"https://192.0.2.1:8444"}"#,
        )
        .unwrap();
        d
    }

    const GATEWAY: &str = "[gateway]\nlan = \"lan0\"\nwan = \"wan0\"\n\n[tunnel]\nmtu = 1400\n\n[controller]\nstate_dir = \"state\"\n";
    const POLICY: &str = "[[profile]]\nname = \"all\"\nexclude = [\"203.0.113.20/32\"]\n\n[tunnel_edges]\nserver_name = \"edge.sluice.test\"\nedges = [{ name = \"e1\", address = \"198.51.100.5:4443\", priority = 0 }]\n";

    #[test]
    fn a_managed_gateway_loads_the_controllers_policy_with_its_own_file() {
        let d = dir("gw");
        let path = d.join("gateway.toml");
        std::fs::write(&path, GATEWAY).unwrap();
        // Nothing from the controller yet: a clear error naming the file.
        let e = GatewayConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("policy.toml") && e.contains("nothing from the controller"),
            "{e}"
        );
        Stored {
            revision: 7,
            text: POLICY.into(),
        }
        .write(&d.join("state").join(POLICY_FILE))
        .unwrap();
        let section = section(&path, GATEWAY).unwrap().unwrap();
        assert_eq!(section.state_dir, d.join("state"));
        let merged = merge_gateway(
            &path,
            GATEWAY,
            &section,
            &Stored::read(&section.file(POLICY_FILE)).unwrap().unwrap(),
        )
        .unwrap();
        let cfg = GatewayConfig::parse(&path, &merged).unwrap();
        assert_eq!(cfg.name, "branch-9", "the enrolled name");
        assert_eq!(cfg.tunnel.server_name, "edge.sluice.test");
        assert_eq!(cfg.tunnel.mtu, 1400, "the operator's knob stays");
        assert_eq!(cfg.tunnel.ca, d.join("state/ca.pem"));
        assert_eq!(cfg.policy.profiles.len(), 1);
        // The policy file is private.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(section.file(POLICY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_appliances_own_file_becomes_a_managed_one_at_enrolment() {
        let d = dir("enrol");
        let path = d.join("gateway.toml");
        // The appliance's default file: its own edge, CA and key, a name.
        let own = include_str!("../../../firmware/rootfs/usr/share/sluice/defaults/gateway.toml");
        let own = format!("{own}keepalive_secs = 2\n\n[policy]\ndefault_profile = \"x\"\n");
        let managed = for_controller(&path, &own, &d.join("state"), false).unwrap();
        let section = section(&path, &managed).unwrap().unwrap();
        assert_eq!(section.state_dir, d.join("state"));
        let stored = Stored {
            revision: 1,
            text: POLICY.into(),
        };
        // Nothing the controller owns is left: the merge accepts it.
        let merged = merge_gateway(&path, &managed, &section, &stored).unwrap();
        let cfg = GatewayConfig::parse(&path, &merged).unwrap();
        assert_eq!(cfg.name, "branch-9", "the enrolled name, not the file's");
        assert_eq!(
            cfg.lan.as_deref(),
            Some("eth0"),
            "the operator's interfaces stay"
        );
        assert_eq!(
            cfg.tunnel.keepalive,
            std::time::Duration::from_secs(2),
            "and the operator's timers"
        );
        assert_eq!(cfg.tunnel.ca, d.join("state/ca.pem"));
        assert_eq!(cfg.tunnel.server_name, "edge.sluice.test");
        // Not a table, or a malformed [controller]: an error.
        assert!(for_controller(&path, "[gateway", &d, false).is_err());
        assert!(for_controller(&path, "controller = 1\n", &d, false).is_err());
        // An edge's own file (the lab's: its gateways, CA and key).
        let path = d.join("edge.toml");
        let own = include_str!("../../../tests/configs/edge.toml");
        let managed = for_controller(&path, own, &d.join("state"), true).unwrap();
        let edge_section = super::section(&path, &managed).unwrap().unwrap();
        let list = Stored {
            revision: 1,
            text: "[[gateway]]\nname = \"branch-1\"\nprefixes = [\"192.0.2.0/24\"]\n".into(),
        };
        let cfg = EdgeConfig::parse(
            &path,
            &merge_edge(&path, &managed, &edge_section, &list).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg.name, "branch-9", "the enrolled name");
        assert_eq!(cfg.gateways.len(), 1, "the controller's gateways only");
        assert_eq!(cfg.cert, d.join("state/cert.pem"));
        assert_eq!(cfg.keepalive, std::time::Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn what_the_controller_owns_cannot_be_set_in_the_file() {
        let d = dir("owned");
        let path = d.join("gateway.toml");
        let stored = Stored {
            revision: 1,
            text: POLICY.into(),
        };
        let section = section(&path, GATEWAY).unwrap().unwrap();
        for (extra, field) in [
            ("[[rule]]\ngroup = \"x\"\nprofile = \"all\"\n", "rule"),
            ("[policy]\ndefault_profile = \"all\"\n", "policy"),
        ] {
            let src = format!("{GATEWAY}{extra}");
            let e = merge_gateway(&path, &src, &section, &stored).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
        let src = GATEWAY.replace("mtu = 1400", "server_name = \"x\"");
        let e = merge_gateway(&path, &src, &section, &stored).unwrap_err();
        assert_eq!(e.field(), Some("tunnel.server_name"), "{e}");
        // A policy that smuggles another section in is refused.
        let bad = Stored {
            revision: 2,
            text: format!("{POLICY}\n[gateway]\nwan = \"eth9\"\n"),
        };
        assert!(merge_gateway(&path, GATEWAY, &section, &bad).is_err());
        // Paths on the box are not the controller's (review h31 S4).
        for smuggled in [
            "[forwarding]\nresolv_conf = \"/dev/zero\"\n",
            "[[tenant]]\nname = \"t\"\ncrl = \"/dev/zero\"\n",
        ] {
            let bad = Stored {
                revision: 3,
                text: format!("{smuggled}{POLICY}"),
            };
            let e = merge_gateway(&path, GATEWAY, &section, &bad).unwrap_err();
            assert!(e.to_string().contains("a path on the box"), "{e}");
        }
        // Unknown [controller] fields and non-https URLs are refused.
        for bad in [
            "[controller]\nstate_dir = \"s\"\nurl = \"x\"\n",
            "[controller]\nstate_dir = \"s\"\nagent_urls = [\"http://192.0.2.1\"]\n",
            "[controller]\nagent_urls = [\"https://192.0.2.1\"]\n",
        ] {
            assert!(
                section_of(&path, &table(&path, bad).unwrap()).is_err(),
                "{bad}"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_managed_edge_serves_the_listed_gateways_without_their_fingerprints() {
        let d = dir("edge");
        let path = d.join("edge.toml");
        let src = "[edge]\nlisten = \"[::1]:4443\"\n\n[controller]\nstate_dir = \"state\"\n";
        let section = section(&path, src).unwrap().unwrap();
        let list = Stored {
            revision: 4,
            text: format!(
                "[[gateway]]\nname = \"branch-1\"\nprefixes = [\"192.0.2.0/24\"]\ncertificates = [\"{}\"]\n",
                "ab".repeat(32)
            ),
        };
        let merged = merge_edge(&path, src, &section, &list).unwrap();
        let cfg = EdgeConfig::parse(&path, &merged).unwrap();
        assert_eq!(cfg.gateways.len(), 1);
        assert_eq!(cfg.gateways[0].name, "branch-1");
        assert_eq!(cfg.cert, d.join("state/cert.pem"));
        let none = Stored {
            revision: 5,
            text: String::new(),
        };
        let e = merge_edge(&path, src, &section, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lists no gateways"), "{e}");
        let owned = format!("{src}\n").replace("[edge]\n", "[edge]\ncert = \"c.pem\"\n");
        assert_eq!(
            merge_edge(&path, &owned, &section, &list)
                .unwrap_err()
                .field(),
            Some("edge.cert")
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
