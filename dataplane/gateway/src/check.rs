//! `sluice check`: what `sluice gateway` or `sluice edge` would load and
//! look up at start, without changing anything: certificates, keys and
//! revocation lists parsed (with the file, the field and why), keys matched
//! to their certificates, validity dates, interfaces, the admin API's
//! group and token. [`crate::config::GatewayConfig::load`] has already checked the
//! file itself.
//!
//! Findings are errors (start would fail, or the tunnel would not come up:
//! an expired certificate, a key of another certificate) or warnings
//! (something to look at: a certificate that expires within 30 days, one
//! not issued by the configured CA, an interface missing when checking
//! `--offline` a file meant for another machine).
use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::config::{EdgeConfig, GatewayConfig, TunnelConfig};
use crate::pki;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Start would fail, or the tunnel would not come up.
    Error,
    /// Worth a look; start would go on.
    Warning,
}

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub level: Level,
    /// The configuration field (`tunnel.key`, `gateway.lan`, ...).
    pub field: String,
    /// The file it is about, if any.
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        if let Some(p) = &self.file {
            write!(f, "{}: ", p.display())?;
        }
        f.write_str(&self.message)
    }
}

/// Certificates expiring sooner than this are a warning.
const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, level: Level, field: &str, file: Option<&Path>, message: impl Into<String>) {
        self.0.push(Finding {
            level,
            field: field.to_string(),
            file: file.map(Path::to_path_buf),
            message: message.into(),
        });
    }

    fn error(&mut self, field: &str, file: Option<&Path>, message: impl Into<String>) {
        self.push(Level::Error, field, file, message);
    }

    /// A PKI error: its message without the path (the finding has it).
    fn pki(&mut self, field: &str, file: &Path, e: &pki::PkiError) {
        let text = e.to_string();
        let prefix = format!("{}: ", file.display());
        let msg = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
        self.error(field, Some(file), msg);
    }
}

/// Unix seconds now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Validity of `der` (from `file`, field `field`) at `now`.
fn validity(out: &mut Findings, field: &str, file: &Path, info: &pki::CertInfo, now: i64) {
    let span = format!(
        "valid {} to {}",
        pki::date(info.not_before),
        pki::date(info.not_after)
    );
    if info.not_after < now {
        out.error(
            field,
            Some(file),
            format!(
                "{} expired on {} ({span})",
                info.subject,
                pki::date(info.not_after)
            ),
        );
    } else if info.not_before > now {
        out.error(
            field,
            Some(file),
            format!("{} is not valid yet ({span})", info.subject),
        );
    } else if info.not_after - now < EXPIRY_WARNING_SECS {
        out.push(
            Level::Warning,
            field,
            Some(file),
            format!(
                "{} expires on {} ({span})",
                info.subject,
                pki::date(info.not_after)
            ),
        );
    }
}

/// The TLS files of one side: `section.ca`, `.cert`, `.key`, `.crl`.
fn tls(
    out: &mut Findings,
    section: &str,
    (ca, cert, key, crl): (&Path, &Path, &Path, Option<&Path>),
    now: i64,
) {
    let f = |x: &str| format!("{section}.{x}");
    let cas = match pki::load_certs(ca) {
        Ok(certs) => {
            for c in &certs {
                match pki::cert_info(c) {
                    Ok(i) => validity(out, &f("ca"), ca, &i, now),
                    Err(e) => out.error(&f("ca"), Some(ca), e.to_string()),
                }
            }
            certs
        }
        Err(e) => {
            out.pki(&f("ca"), ca, &e);
            Vec::new()
        }
    };
    let certs = match pki::load_certs(cert) {
        Ok(c) => {
            match pki::cert_info(&c[0]) {
                Ok(i) => {
                    validity(out, &f("cert"), cert, &i, now);
                    if !cas.is_empty() && !cas.iter().any(|a| pki::issued_by(&c[0], a)) {
                        out.push(
                            Level::Warning,
                            &f("cert"),
                            Some(cert),
                            format!(
                                "not issued by {} ({}): the peer must trust its issuer",
                                ca.display(),
                                f("ca")
                            ),
                        );
                    }
                }
                Err(e) => out.error(&f("cert"), Some(cert), e.to_string()),
            }
            Some(c)
        }
        Err(e) => {
            out.pki(&f("cert"), cert, &e);
            None
        }
    };
    match pki::load_key(key) {
        Ok(k) => match certs.as_ref().map(|c| pki::key_matches(c, k)) {
            Some(Ok(false)) => out.error(
                &f("key"),
                Some(key),
                format!(
                    "does not match the certificate {} ({}): it is another certificate's key",
                    cert.display(),
                    f("cert")
                ),
            ),
            Some(Err(e)) => out.error(&f("key"), Some(key), e.to_string()),
            Some(Ok(true)) | None => {}
        },
        Err(e) => out.pki(&f("key"), key, &e),
    }
    if let Some(crl) = crl {
        match pki::load_crls(crl) {
            Ok(list) => {
                for l in &list {
                    let by_ca = cas
                        .iter()
                        .map(|a| pki::crl_issued_by(l, a))
                        .collect::<Result<Vec<bool>, pki::DerError>>();
                    match by_ca {
                        Ok(v) if cas.is_empty() || v.contains(&true) => {}
                        Ok(_) => out.error(
                            &f("crl"),
                            Some(crl),
                            format!(
                                "not issued by {} ({}): every peer would be refused",
                                ca.display(),
                                f("ca")
                            ),
                        ),
                        Err(e) => out.error(&f("crl"), Some(crl), e.to_string()),
                    }
                }
            }
            Err(e) => out.pki(&f("crl"), crl, &e),
        }
    }
}

fn tunnel(out: &mut Findings, section: &str, t: &TunnelConfig, now: i64) {
    tls(
        out,
        section,
        (&t.ca, &t.cert, &t.key, t.crl.as_deref()),
        now,
    );
}

/// The interfaces `cfg` names that do not exist on this host: `(field,
/// interface)`. The endpoint's interface is left out: sluice creates it.
pub(crate) fn missing_interfaces(cfg: &GatewayConfig) -> Vec<(&'static str, String)> {
    cfg.lan
        .iter()
        .map(|l| ("gateway.lan", l))
        .chain([("gateway.wan", &cfg.wan)])
        .filter(|(_, i)| crate::host::ifindex(i).is_err())
        .map(|(f, i)| (f, i.clone()))
        .collect()
}

/// Everything `sluice gateway` would load or look up at start. With
/// `offline`, what depends on this host (interfaces, groups) is a warning.
pub fn gateway(cfg: &GatewayConfig, offline: bool) -> Vec<Finding> {
    let mut out = Findings::default();
    let now = now();
    let host = if offline {
        Level::Warning
    } else {
        Level::Error
    };
    for (field, iface) in missing_interfaces(cfg) {
        out.push(
            host,
            field,
            None,
            format!("interface `{iface}`: no such interface on this host"),
        );
    }
    tunnel(&mut out, "tunnel", &cfg.tunnel, now);
    for (i, t) in cfg.policy.tenants.iter().enumerate() {
        tunnel(&mut out, &format!("tenant[{i}]"), &t.tunnel, now);
    }
    let a = &cfg.admin;
    if let Some(g) = &a.group {
        match crate::sys::peer::group_id(g) {
            Ok(Some(_)) => {}
            Ok(None) => out.push(host, "gateway.admin_group", None, format!("no group `{g}`")),
            Err(e) => out.push(
                host,
                "gateway.admin_group",
                None,
                format!("looking up `{g}`: {e}"),
            ),
        }
    }
    if let Some(t) = &a.token
        && let Err(e) = crate::admin::read_token_hash(t)
    {
        out.error("gateway.admin_token", Some(t), e.problem.to_string());
    }
    out.0
}

/// Everything `sluice edge` would load at start.
pub fn edge(cfg: &EdgeConfig) -> Vec<Finding> {
    let mut out = Findings::default();
    tls(
        &mut out,
        "edge",
        (&cfg.ca, &cfg.cert, &cfg.key, cfg.crl.as_deref()),
        now(),
    );
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(v: &[Finding], field: &str) -> Option<Level> {
        v.iter().find(|f| f.field == field).map(|f| f.level)
    }

    #[test]
    fn a_lab_pki_passes_and_a_swapped_key_does_not() {
        let (dir, f) = crate::pki::testing::lab_pki();
        let (_, c, k) = &f.gateways[0];
        let mut out = Findings::default();
        tls(&mut out, "tunnel", (&f.ca, c, k, Some(&f.crl)), now());
        assert!(out.0.is_empty(), "{:?}", out.0);
        let mut out = Findings::default();
        tls(&mut out, "tunnel", (&f.ca, c, &f.edge.1, None), now());
        assert_eq!(
            level(&out.0, "tunnel.key"),
            Some(Level::Error),
            "{:?}",
            out.0
        );
        assert!(
            out.0[0].to_string().contains("does not match"),
            "{}",
            out.0[0]
        );
        // Ten years on, everything has expired.
        let mut out = Findings::default();
        tls(
            &mut out,
            "tunnel",
            (&f.ca, c, k, None),
            now() + 40 * 365 * 86_400,
        );
        assert_eq!(
            level(&out.0, "tunnel.cert"),
            Some(Level::Error),
            "{:?}",
            out.0
        );
        assert_eq!(
            level(&out.0, "tunnel.ca"),
            Some(Level::Error),
            "{:?}",
            out.0
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_crl_of_another_ca_is_an_error() {
        let (dir1, f1) = crate::pki::testing::lab_pki();
        let (dir2, f2) = crate::pki::testing::lab_pki();
        let (_, c, k) = &f1.gateways[0];
        let mut out = Findings::default();
        tls(&mut out, "edge", (&f1.ca, c, k, Some(&f2.crl)), now());
        assert_eq!(level(&out.0, "edge.crl"), Some(Level::Error), "{:?}", out.0);
        std::fs::remove_dir_all(dir1).unwrap();
        std::fs::remove_dir_all(dir2).unwrap();
    }
}
