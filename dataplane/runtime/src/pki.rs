//! Certificates for the tunnel: a small CA (`sluice pki init`,
//! `sluice pki revoke`), the loaders that turn PEM files into rustls
//! configurations, and the checks `sluice check` runs on them.
//!
//! Tunnels are TLS 1.3 only, mutually authenticated: the gateway checks the
//! edge's certificate against the CA and the edge name; the edge requires a
//! client certificate issued by the same CA. Either side may load a
//! certificate revocation list (CRL) from that CA: a listed certificate is
//! refused at the handshake, so a stolen gateway (or edge) key is cut off
//! without replacing the CA. The crypto provider is aws-lc-rs.
//!
//! Files `pki init` writes: in `--dir`, what gets deployed (`ca.pem`,
//! `crl.pem`, `edge.pem`/`edge.key`, `<gateway>.pem`/`<gateway>.key`); the
//! CA's key in a directory of its own (`--dir/ca/` or `--ca-dir`, mode
//! 0700), never beside the keys that are copied to machines. Every file is
//! created new (`O_EXCL`: an existing file is never replaced), without
//! following symlinks (`O_NOFOLLOW`), with an explicit mode (keys 0600).
//! Directories that others can write, or that are symlinks, are refused;
//! names cannot leave `--dir`.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::WebPkiServerVerifier,
    pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName,
        pem::PemObject as _,
    },
    server::WebPkiClientVerifier,
};

/// Errors of certificate generation and loading. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// A file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A directory or file is not safe to write keys into or through.
    #[error("{path}: {why}")]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A gateway or edge name that cannot be used.
    #[error("{what} `{name}`: {why}")]
    Name {
        /// `--gateway` or `--edge-name`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// Certificate or CRL generation failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate.
        what: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the material (for example a key that does not match
    /// its certificate).
    #[error("TLS configuration from {path}: {source}")]
    Tls {
        /// The certificate file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The certificate verifier could not be built from the CA and CRL.
    #[error("certificate verifier from {path}: {what}")]
    Verifier {
        /// The CA (or CRL) file.
        path: PathBuf,
        /// Why.
        what: String,
    },
    /// The edge name is neither a DNS name nor an IP address.
    #[error("`{0}` is not a valid DNS name or IP address for the edge")]
    ServerName(String),
}

/// What is wrong with one piece of DER material (no file named: the
/// caller knows which it read).
#[derive(Debug, thiserror::Error)]
pub enum DerError {
    /// A private key rustls cannot use.
    #[error("not a key rustls can use: {0}")]
    Key(rustls::Error),
    /// Not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    Certificate(x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// Not a certificate revocation list.
    #[error("not a revocation list: {0}")]
    Crl(x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// Why the admin token's hash file cannot be used: the file and the
/// problem.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TokenError {
    /// The file (`gateway.admin_token`).
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: TokenProblem,
}

/// What is wrong with the admin token's hash file.
#[derive(Debug, thiserror::Error)]
pub enum TokenProblem {
    /// It cannot be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// Group or others have access (the mode's permission bits).
    #[error("mode {0:o}: group and others must have no access (chmod 600)")]
    Mode(u32),
    /// It does not hold 64 hex digits.
    #[error("expected the token's SHA-256 as 64 hex digits (sluice pki admin-token writes it)")]
    Format,
}

fn unsafe_path(path: &Path, why: impl Into<String>) -> PkiError {
    PkiError::Unsafe {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// How long the CA `pki init` makes is valid, in days.
pub(crate) const CA_DAYS: i32 = 3650;
/// How long the edge's and gateways' certificates are valid, in days.
pub(crate) const LEAF_DAYS: i32 = 1825;

/// Paths of the files written by [`generate`].
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// CA certificate (deployed to every gateway and edge).
    pub ca: PathBuf,
    /// The CA's key: kept apart, never deployed.
    pub ca_key: PathBuf,
    /// An empty revocation list signed by the CA (`sluice pki revoke`
    /// extends it).
    pub crl: PathBuf,
    /// Edge certificate and key.
    pub edge: (PathBuf, PathBuf),
    /// One certificate and key per gateway, in the order given.
    pub gateways: Vec<(String, PathBuf, PathBuf)>,
}

/// Generates a CA, an edge certificate valid for `edge_names` (DNS names
/// or IP addresses) and a client certificate per gateway name, as PEM files
/// in `dir`, with the CA's key in `dir/ca/` ([`generate_in`]).
///
/// This is for labs, tests and first deployments; a production site may
/// use its own CA.
pub fn generate(
    dir: &Path,
    edge_names: &[String],
    gateways: &[String],
) -> Result<PkiFiles, PkiError> {
    generate_in(dir, &dir.join("ca"), edge_names, gateways)
}

/// [`generate`] with the CA's key and a copy of its certificate in
/// `ca_dir` (created 0700; it may be elsewhere, e.g. removable media).
/// Nothing is written unless the names are valid, the directories are
/// safe (not symlinks, owned by this user or root, not writable by group
/// or others, no world-writable ancestor without the sticky bit) and no
/// target file exists.
#[allow(
    clippy::too_many_lines,
    reason = "checks, then generation, then writes, in the order that keeps a failure harmless"
)]
pub fn generate_in(
    dir: &Path,
    ca_dir: &Path,
    edge_names: &[String],
    gateways: &[String],
) -> Result<PkiFiles, PkiError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    for n in edge_names {
        edge_name(n)?;
    }
    let mut seen = std::collections::HashSet::new();
    for g in gateways {
        file_name(g, "--gateway")?;
        if !seen.insert(g) {
            return Err(PkiError::Name {
                what: "--gateway",
                name: g.clone(),
                why: "given twice",
            });
        }
    }
    safe_dir(dir, 0o755)?;
    safe_dir(ca_dir, 0o700)?;
    let ca_path = dir.join("ca.pem");
    let crl_path = dir.join("crl.pem");
    let ca_key_path = ca_dir.join("ca.key");
    let ca_copy = ca_dir.join("ca.pem");
    let edge = (dir.join("edge.pem"), dir.join("edge.key"));
    let gw_paths: Vec<(String, PathBuf, PathBuf)> = gateways
        .iter()
        .map(|g| {
            (
                g.clone(),
                dir.join(format!("{g}.pem")),
                dir.join(format!("{g}.key")),
            )
        })
        .collect();
    let mut targets = vec![
        &ca_path,
        &crl_path,
        &ca_key_path,
        &ca_copy,
        &edge.0,
        &edge.1,
    ];
    targets.extend(gw_paths.iter().flat_map(|(_, c, k)| [c, k]));
    for t in &targets {
        match fs::symlink_metadata(t) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path(t, "is a symlink: refusing to write through it"));
            }
            Ok(_) => return Err(unsafe_path(t, "exists: refusing to replace it")),
            Err(e) => return Err(unsafe_path(t, e.to_string())),
        }
    }

    let generr = |what: &str| {
        let what = what.to_string();
        move |source| PkiError::Generate { what, source }
    };
    // From yesterday (clocks a little behind) for ten years (the CA) and
    // five (the rest): `sluice check` warns 30 days before the end.
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generr("CA"))?;
    ca_params.not_before = now - day;
    ca_params.not_after = now + day * CA_DAYS;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice lab CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(generr("CA key"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generr("CA"))?;

    let leaf = |names: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(names).map_err(generr(cn))?;
        p.not_before = now - day;
        p.not_after = now + day * LEAF_DAYS;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(generr(cn))?;
        let cert = p.signed_by(&key, &ca).map_err(generr(cn))?;
        Ok::<_, PkiError>((cert.pem(), key.serialize_pem()))
    };
    let crl = sign_crl(&ca, 1, Vec::new())?;

    // The CA's key first: if anything after fails, nothing deployable
    // exists without it.
    write_new(&ca_key_path, ca_key_pem.as_bytes(), 0o600)?;
    write_new(&ca_copy, ca.pem().as_bytes(), 0o644)?;
    write_new(&ca_path, ca.pem().as_bytes(), 0o644)?;
    write_new(&crl_path, crl.as_bytes(), 0o644)?;

    let cn = edge_names.first().map_or("edge", String::as_str);
    let (cert, key) = leaf(edge_names.to_vec(), cn, ExtendedKeyUsagePurpose::ServerAuth)?;
    write_new(&edge.0, cert.as_bytes(), 0o644)?;
    write_new(&edge.1, key.as_bytes(), 0o600)?;

    for (gw, c, k) in &gw_paths {
        let (cert, key) = leaf(vec![gw.clone()], gw, ExtendedKeyUsagePurpose::ClientAuth)?;
        write_new(c, cert.as_bytes(), 0o644)?;
        write_new(k, key.as_bytes(), 0o600)?;
    }
    Ok(PkiFiles {
        ca: ca_path,
        ca_key: ca_key_path,
        crl: crl_path,
        edge,
        gateways: gw_paths,
    })
}

/// A CRL signed by `issuer`: number `number`, listing `revoked`, valid
/// for ten years (sluice does not enforce `nextUpdate`: an old list keeps
/// refusing what it lists rather than refusing every peer).
fn sign_crl(
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
    number: u64,
    revoked: Vec<rcgen::RevokedCertParams>,
) -> Result<String, PkiError> {
    let now = time::OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(3650),
        crl_number: rcgen::SerialNumber::from(number.to_be_bytes().to_vec()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let generr = |source| PkiError::Generate {
        what: "the revocation list".into(),
        source,
    };
    params
        .signed_by(issuer)
        .map_err(generr)?
        .pem()
        .map_err(generr)
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The CRL's number now.
    pub number: u64,
    /// Serial numbers (hex) it lists now.
    pub serials: Vec<String>,
    /// Of those, the ones this call added.
    pub added: Vec<String>,
}

/// Adds `certs` to the revocation list at `crl` (created if missing),
/// signed with the CA in `ca_dir` (`ca.pem`, `ca.key`); the list's number
/// goes up by one. The new list replaces the old one atomically (written
/// beside it, then renamed), mode 0644. Certificates not issued by that CA
/// are refused.
pub fn revoke(ca_dir: &Path, crl: &Path, certs: &[PathBuf]) -> Result<Revoked, PkiError> {
    let ca_pem_path = ca_dir.join("ca.pem");
    let ca_key_path = ca_dir.join("ca.key");
    let ca_text = read_file(&ca_pem_path)?;
    let ca_cert = load_certs_from(&ca_pem_path, &ca_text)?.remove(0);
    let (_, ca_x509) =
        x509_parser::parse_x509_certificate(ca_cert.as_ref()).map_err(|e| PkiError::Pem {
            path: ca_pem_path.clone(),
            what: format!("not an X.509 certificate: {e}"),
        })?;
    let key_pem = String::from_utf8(read_file(&ca_key_path)?).map_err(|_| PkiError::Pem {
        path: ca_key_path.clone(),
        what: "not PEM".into(),
    })?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Pem {
        path: ca_key_path.clone(),
        what: format!("not a key rcgen can sign with: {e}"),
    })?;
    let issuer =
        rcgen::Issuer::from_ca_cert_der(&ca_cert, key).map_err(|source| PkiError::Generate {
            what: format!("an issuer from {}", ca_pem_path.display()),
            source,
        })?;
    let now = time::OffsetDateTime::now_utc();
    let mut revoked: Vec<rcgen::RevokedCertParams> = Vec::new();
    let mut number = 0u64;
    if fs::symlink_metadata(crl).is_ok() {
        let text = read_file(crl)?;
        let list = load_crls_from(crl, &text)?;
        for der in list {
            let (_, parsed) =
                x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| PkiError::Pem {
                    path: crl.to_path_buf(),
                    what: format!("not a revocation list: {e}"),
                })?;
            if parsed.issuer().as_raw() != ca_x509.subject().as_raw()
                || parsed.verify_signature(ca_x509.public_key()).is_err()
            {
                return Err(PkiError::Pem {
                    path: crl.to_path_buf(),
                    what: format!("issued by another CA than {}", ca_pem_path.display()),
                });
            }
            number = number.max(
                parsed
                    .crl_number()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            );
            for r in parsed.iter_revoked_certificates() {
                revoked.push(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(r.raw_serial().to_vec()),
                    revocation_time: r.revocation_date.to_datetime(),
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
    }
    let mut added = Vec::new();
    for c in certs {
        let text = read_file(c)?;
        for der in load_certs_from(c, &text)? {
            let (_, x) =
                x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| PkiError::Pem {
                    path: c.clone(),
                    what: format!("not an X.509 certificate: {e}"),
                })?;
            if !issued_by(&der, &ca_cert) {
                return Err(PkiError::Pem {
                    path: c.clone(),
                    what: format!("not issued by the CA in {}", ca_pem_path.display()),
                });
            }
            let serial = x.raw_serial();
            if !revoked.iter().any(|r| r.serial_number.as_ref() == serial) {
                revoked.push(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(serial.to_vec()),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                });
                added.push(hex(serial));
            }
        }
    }
    let number = number + 1;
    let serials = revoked
        .iter()
        .map(|r| hex(r.serial_number.as_ref()))
        .collect();
    let pem = sign_crl(&issuer, number, revoked)?;
    replace_file(crl, pem.as_bytes(), 0o644)?;
    Ok(Revoked {
        number,
        serials,
        added,
    })
}

/// Writes a fresh random bearer token for the admin API's TCP listener to
/// `out` (0600, created new) and its SHA-256 in hex to `out.sha256` (0600:
/// what `gateway.admin_token` names). Returns both paths.
pub fn admin_token(out: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| unsafe_path(out, "no random numbers from the system"))?;
    let token = hex(&raw);
    let hash = hex(&crate::http::sha256(token.as_bytes()));
    let hash_path = PathBuf::from(format!("{}.sha256", out.display()));
    for p in [out, hash_path.as_path()] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(unsafe_path(p, "exists: refusing to replace it"));
        }
    }
    write_new(out, format!("{token}\n").as_bytes(), 0o600)?;
    write_new(&hash_path, format!("{hash}\n").as_bytes(), 0o600)?;
    Ok((out.to_path_buf(), hash_path))
}

/// Lowercase hex of `b`.
fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// A `--gateway` name: it becomes `<name>.pem` and `<name>.key` in
/// `--dir`, so a letter or digit, then letters, digits, `.`, `_`, `-`;
/// at most 64; not `ca`, `edge` or `crl` (their files).
fn file_name(name: &str, what: &'static str) -> Result<(), PkiError> {
    let bad = |why| {
        Err(PkiError::Name {
            what,
            name: name.to_string(),
            why,
        })
    };
    let Some(first) = name.bytes().next() else {
        return bad("empty");
    };
    if name.len() > 64
        || !first.is_ascii_alphanumeric()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || name.contains("..")
    {
        return bad("a letter or digit, then letters, digits, '.', '_' or '-' (at most 64)");
    }
    if matches!(name, "ca" | "edge" | "crl") {
        return bad("the name of one of the CA's or the edge's files");
    }
    Ok(())
}

/// An `--edge-name`: a DNS name or an IP address (the certificate's
/// subject alternative names; no file is named after it).
fn edge_name(name: &str) -> Result<(), PkiError> {
    let ok = name.parse::<std::net::IpAddr>().is_ok()
        || (!name.contains(['/', '\\', '\0'])
            && rustls::pki_types::DnsName::try_from(name).is_ok()
            && !name.starts_with('.'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::Name {
            what: "--edge-name",
            name: name.to_string(),
            why: "neither a DNS name nor an IP address",
        })
    }
}

/// This process's effective user id, from `/proc/self/status`.
pub(crate) fn euid() -> Option<u32> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `dir` exists (created with `mode` if not, parents 0755) as a real
/// directory that only this user and root can change ([`untrusted_dir`]).
fn safe_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_dir_checked(dir, mode)?,
        Err(e) => return Err(unsafe_path(dir, e.to_string())),
        Ok(_) => {}
    }
    let m = fs::symlink_metadata(dir).map_err(|e| unsafe_path(dir, e.to_string()))?;
    if m.file_type().is_symlink() {
        return Err(unsafe_path(dir, "is a symlink: give the real directory"));
    }
    match untrusted_dir(dir) {
        Some((path, why)) => Err(PkiError::Unsafe { path, why }),
        None => Ok(()),
    }
}

/// Creates what is missing of `dir` (`mode` for `dir`, whatever the
/// umask; 0755 above it), one directory at a time, each one only inside
/// a directory checked just before ([`untrusted_path`], not strict: a
/// sticky directory such as `/tmp` is enough to create in): nothing is
/// ever created below a directory someone else could change, not even
/// if one appears between the first check and the last `mkdir`. A
/// directory someone else made in between is left as it is, for the
/// caller's check of `dir` (or the next parent's) to judge.
///
/// # Errors
/// [`PkiError::Unsafe`] naming the directory that is not safe to create
/// in; [`PkiError::Write`] if a `mkdir` fails.
pub(crate) fn create_dir_checked(dir: &Path, mode: u32) -> Result<(), PkiError> {
    let here = |p: &Path| {
        if p.as_os_str().is_empty() {
            Path::new(".").to_path_buf()
        } else {
            p.to_path_buf()
        }
    };
    // The missing ones, from `dir` up (a dangling symlink is not missing:
    // `mkdir` refuses it).
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| {
            matches!(fs::symlink_metadata(a), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        })
        .collect();
    for a in missing.into_iter().rev() {
        let parent = here(a.parent().unwrap_or(Path::new("")));
        if let Some((path, why)) = untrusted_path(&parent, false) {
            return Err(PkiError::Unsafe { path, why });
        }
        let m = if a == dir { mode } else { 0o755 };
        match fs::DirBuilder::new().mode(m).create(a) {
            Ok(()) if a == dir => {
                // Exactly `mode`, whatever the umask.
                fs::set_permissions(a, fs::Permissions::from_mode(mode)).map_err(|source| {
                    PkiError::Write {
                        path: a.to_path_buf(),
                        source,
                    }
                })?;
            }
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(PkiError::Write {
                    path: a.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Why `dir` is not a directory that only this user and root can change
/// (`None` when it is): the first thing on its way that someone else
/// could use to swap what a path under it leads to, and why. Checked:
/// every symlink on the path as given is owned by root or this user (its
/// owner could point it elsewhere); the directory it resolves to is owned
/// by root or this user and not writable by group or others; each of its
/// ancestors is owned by root or this user, and is not writable by group
/// or others unless it has the sticky bit (`/tmp`: others cannot rename
/// what they do not own).
///
/// Keys (`pki init`) and the admin socket (which root chmods and chowns
/// by path after bind) are only put in such directories: `O_NOFOLLOW`
/// protects a path's last component only.
pub(crate) fn untrusted_dir(dir: &Path) -> Option<(PathBuf, String)> {
    untrusted_path(dir, true)
}

/// [`untrusted_dir`]; with `strict` false, `dir` itself is held to its
/// ancestors' rule (sticky is enough): where a directory is about to be
/// created.
fn untrusted_path(dir: &Path, strict: bool) -> Option<(PathBuf, String)> {
    let me = euid();
    let trusted = |uid: u32| uid == 0 || Some(uid) == me;
    let not_trusted = |path: &Path, uid: u32, what: &str| {
        Some((
            path.to_path_buf(),
            format!(
                "{what} uid {uid}, neither root nor this user: they could swap what is below it (use a directory root owns)"
            ),
        ))
    };
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    for a in abs.ancestors() {
        if let Ok(m) = fs::symlink_metadata(a)
            && m.file_type().is_symlink()
            && !trusted(m.uid())
        {
            return not_trusted(a, m.uid(), "a symlink owned by");
        }
    }
    let full = match fs::canonicalize(dir) {
        Ok(f) => f,
        Err(e) => return Some((dir.to_path_buf(), e.to_string())),
    };
    let m = match fs::metadata(&full) {
        Ok(m) => m,
        Err(e) => return Some((full, e.to_string())),
    };
    if !m.is_dir() {
        return Some((full, "is not a directory".into()));
    }
    if !trusted(m.uid()) {
        return not_trusted(&full, m.uid(), "owned by");
    }
    if m.mode() & 0o022 != 0 && (strict || m.mode() & 0o1000 == 0) {
        return Some((
            full,
            format!(
                "mode {:o}: writable by group or others, who could replace what is in it (chmod go-w)",
                m.mode() & 0o7777
            ),
        ));
    }
    for a in full.ancestors().skip(1) {
        let Ok(am) = fs::metadata(a) else { continue };
        if !trusted(am.uid()) {
            return not_trusted(a, am.uid(), "an ancestor owned by");
        }
        if am.mode() & 0o022 != 0 && am.mode() & 0o1000 == 0 {
            return Some((
                a.to_path_buf(),
                format!(
                    "mode {:o}: writable by group or others without the sticky bit, who could swap what is below it",
                    am.mode() & 0o7777
                ),
            ));
        }
    }
    None
}

/// Creates `path` (never an existing file, never through a symlink) with
/// exactly `mode`, and writes `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let werr = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(werr)?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(werr)?;
    f.write_all(data).map_err(werr)?;
    f.sync_all().map_err(werr)
}

/// Replaces `path` atomically: a new file beside it, then a rename.
fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = PathBuf::from(format!("{}.new-{}", path.display(), std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, data, mode)?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        PkiError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of a PEM file, with errors that say what is wrong with it
/// (a directory, unreadable, ...).
fn read_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    let err = |what: String| PkiError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let m = fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if m.is_dir() {
        return Err(err("is a directory, not a PEM file".into()));
    }
    if !m.is_file() {
        return Err(err("is not a regular file".into()));
    }
    // Certificates, keys and lists are small; a huge file is a mistake.
    if m.len() > 16 << 20 {
        return Err(err(format!("{} bytes: too large for a PEM file", m.len())));
    }
    fs::read(path).map_err(|e| err(format!("cannot read: {e}")))
}

fn load_certs_from(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            path: path.to_path_buf(),
            what: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE in the file (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

fn load_crls_from(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            path: path.to_path_buf(),
            what: format!("not PEM: {e}"),
        })?;
    if crls.is_empty() {
        return Err(PkiError::Pem {
            path: path.to_path_buf(),
            what: "no X509 CRL in the file (expected PEM: -----BEGIN X509 CRL-----)".into(),
        });
    }
    Ok(crls)
}

/// The certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    load_certs_from(path, &read_file(path)?)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| PkiError::Pem {
        path: path.to_path_buf(),
        what: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in the file (expected PEM: PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)".into()
            }
            e => format!("not a PEM private key: {e}"),
        },
    })
}

/// The revocation lists in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    load_crls_from(path, &read_file(path)?)
}

fn load_roots(ca: &Path, certs: &[CertificateDer<'static>]) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c.clone()).map_err(|source| PkiError::Tls {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The revocation lists in `crl`, each one issued by a certificate of the
/// CA file `ca` (`cas`, its certificates): issuer name and signature by
/// its key. rustls builds its verifier from any well-formed list, and
/// only finds at the handshake that the list is not the CA's (every
/// `pki init` CA has the same name): then every peer's status is
/// unknown, and every peer is refused.
fn load_crls_of(
    crl: &Path,
    ca: &Path,
    cas: &[CertificateDer<'_>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let lists = load_crls(crl)?;
    for l in &lists {
        let why = |what: String| PkiError::Verifier {
            path: crl.to_path_buf(),
            what,
        };
        let signed = cas
            .iter()
            .map(|a| crl_issued_by(l, a))
            .collect::<Result<Vec<bool>, DerError>>()
            .map_err(|e| why(e.to_string()))?;
        if !signed.contains(&true) {
            return Err(why(format!(
                "revocation list not signed by the CA in {} (another CA's list, even one of the same name, would get every peer refused at the handshake)",
                ca.display()
            )));
        }
    }
    Ok(lists)
}

/// Whether `key` is the private key of `certs`' first certificate.
///
/// # Errors
/// A key rustls cannot use.
pub fn key_matches(
    certs: &[CertificateDer<'static>],
    key: PrivateKeyDer<'static>,
) -> Result<bool, DerError> {
    match rustls::sign::CertifiedKey::from_der(certs.to_vec(), key, &provider()) {
        Ok(_) => Ok(true),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Ok(false),
        Err(e) => Err(DerError::Key(e)),
    }
}

/// A certificate's validity and subject, for `sluice check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// Subject, as text.
    pub subject: String,
}

/// Parses a certificate's validity and subject.
///
/// # Errors
/// If it is not an X.509 certificate.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, DerError> {
    let (_, x) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(DerError::Certificate)?;
    Ok(CertInfo {
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        subject: x.subject().to_string(),
    })
}

/// Whether `ca` issued `cert`: names and signature (two CAs may share a
/// name, as every `pki init` CA does).
pub fn issued_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> bool {
    let (Ok((_, c)), Ok((_, a))) = (
        x509_parser::parse_x509_certificate(cert.as_ref()),
        x509_parser::parse_x509_certificate(ca.as_ref()),
    ) else {
        return false;
    };
    c.issuer().as_raw() == a.subject().as_raw() && c.verify_signature(Some(a.public_key())).is_ok()
}

/// Whether `ca` issued (signed) the revocation list `crl`.
///
/// # Errors
/// If `crl` is not a revocation list.
pub fn crl_issued_by(
    crl: &CertificateRevocationListDer<'_>,
    ca: &CertificateDer<'_>,
) -> Result<bool, DerError> {
    let (_, l) = x509_parser::parse_x509_crl(crl.as_ref()).map_err(DerError::Crl)?;
    let Ok((_, a)) = x509_parser::parse_x509_certificate(ca.as_ref()) else {
        return Ok(false);
    };
    Ok(l.issuer().as_raw() == a.subject().as_raw() && l.verify_signature(a.public_key()).is_ok())
}

/// `YYYY-MM-DD` of Unix seconds (UTC).
pub fn date(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs).map_or_else(
        |_| secs.to_string(),
        |t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
    )
}

/// The gateway's TLS configuration: TLS 1.3, server verified against `ca`,
/// client certificate `cert` with key `key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, PkiError> {
    client_config_with_crl(ca, cert, key, None)
}

/// [`client_config`], refusing edge certificates that `crl` lists. A
/// list `ca` did not sign fails the load ([`load_crls_of`]).
pub fn client_config_with_crl(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let cas = load_certs(ca)?;
    let roots = Arc::new(load_roots(ca, &cas)?);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls {
            path: cert.to_path_buf(),
            source,
        })?;
    let builder = match crl {
        Some(crl) => {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .with_crls(load_crls_of(crl, ca, &cas)?)
                .only_check_end_entity_revocation()
                .build()
                .map_err(|e| PkiError::Verifier {
                    path: crl.to_path_buf(),
                    what: e.to_string(),
                })?;
            builder.with_webpki_verifier(verifier)
        }
        None => builder.with_root_certificates(roots),
    };
    let mut cfg = builder
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|source| PkiError::Tls {
            path: cert.to_path_buf(),
            source,
        })?;
    // The session protects records itself once the handshake is done.
    cfg.enable_secret_extraction = true;
    Ok(Arc::new(cfg))
}

/// The edge's TLS configuration: TLS 1.3, client certificates required and
/// verified against `ca`, server certificate `cert` with key `key`.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, PkiError> {
    server_config_with_crl(ca, cert, key, None)
}

/// [`server_config`], refusing gateway certificates that `crl` lists.
/// A list `ca` did not sign fails the load ([`load_crls_of`]): it would
/// make every gateway's status unknown, and every gateway refused.
pub fn server_config_with_crl(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let cas = load_certs(ca)?;
    let roots = load_roots(ca, &cas)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if let Some(crl) = crl {
        builder = builder
            .with_crls(load_crls_of(crl, ca, &cas)?)
            .only_check_end_entity_revocation();
    }
    let verifier = builder.build().map_err(|e| PkiError::Verifier {
        path: crl.unwrap_or(ca).to_path_buf(),
        what: e.to_string(),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls {
            path: cert.to_path_buf(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|source| PkiError::Tls {
            path: cert.to_path_buf(),
            source,
        })?;
    cfg.enable_secret_extraction = true;
    // No resumption: a gateway reconnects with a full handshake.
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Parses the edge name from the config into a rustls server name.
pub fn server_name(name: &str) -> Result<ServerName<'static>, PkiError> {
    ServerName::try_from(name.to_string()).map_err(|_| PkiError::ServerName(name.to_string()))
}

/// The admin token's SHA-256 from `path` (`gateway.admin_token`): 64 hex
/// digits, in a file nobody but its owner can read or write.
///
/// # Errors
/// Unreadable, readable or writable by group or others, not 64 hex digits.
pub fn read_token_hash(path: &Path) -> Result<[u8; 32], TokenError> {
    use std::os::unix::fs::PermissionsExt as _;
    let fail = |problem| TokenError {
        path: path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(TokenProblem::Read(e)))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(fail(TokenProblem::Mode(meta.permissions().mode() & 0o777)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(TokenProblem::Read(e)))?;
    parse_hash(text.trim()).ok_or_else(|| fail(TokenProblem::Format))
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A throw-away PKI for tests (this crate's, the gateway's `check`
/// tests): never used by the binaries.
#[doc(hidden)]
pub mod testing {
    use std::path::PathBuf;

    use super::{PkiFiles, generate};

    /// Generates a PKI into a fresh temp dir; returns the dir and files.
    #[must_use]
    pub fn lab_pki() -> (PathBuf, PkiFiles) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let files = generate(
            &dir,
            &["edge.sluice.test".into(), "198.51.100.5".into()],
            &["gw1".into()],
        )
        .unwrap();
        (dir, files)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use super::testing::lab_pki;

    #[test]
    fn generated_material_loads() {
        let (dir, f) = lab_pki();
        let (_, c, k) = &f.gateways[0];
        client_config(&f.ca, c, k).unwrap();
        server_config(&f.ca, &f.edge.0, &f.edge.1).unwrap();
        assert_eq!(load_certs(c).unwrap().len(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let (dir, f) = lab_pki();
        let bogus = dir.join("bogus.pem");
        fs::write(&bogus, "not a pem").unwrap();
        let err = client_config(&bogus, &f.edge.0, &f.edge.1).unwrap_err();
        assert!(err.to_string().contains("bogus.pem"), "{err}");
        // A key that does not match the certificate.
        let (_, c, _) = &f.gateways[0];
        assert!(client_config(&f.ca, c, &f.edge.1).is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    /// A path for a directory that does not exist yet.
    fn fresh(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "sluice-pki-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    fn init(dir: &Path, gw: &str) -> Result<PkiFiles, PkiError> {
        generate(dir, &["edge.sluice.test".into()], &[gw.into()])
    }

    #[test]
    fn refuses_a_directory_others_can_write() {
        for m in [0o777, 0o770, 0o1777] {
            let dir = fresh("writable");
            fs::create_dir(&dir).unwrap();
            chmod(&dir, m);
            let err = init(&dir, "gw1").expect_err(&format!("a {m:o} directory was used"));
            assert!(err.to_string().contains("writable"), "{err}");
            assert_eq!(
                fs::read_dir(&dir).unwrap().count(),
                0,
                "{m:o}: files written"
            );
            fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn refuses_a_symlinked_directory() {
        let real = fresh("real");
        fs::create_dir(&real).unwrap();
        chmod(&real, 0o700);
        let link = fresh("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = init(&link, "gw1").expect_err("a symlinked --dir was used");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
        fs::remove_file(link).unwrap();
        fs::remove_dir_all(real).unwrap();
    }

    /// A key path planted as a symlink (to a file the attacker wants
    /// overwritten) is refused, and its target is untouched.
    #[test]
    fn refuses_a_symlinked_key_path() {
        let dir = fresh("keylink");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        let target = fresh("keylink-target");
        fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("gw1.key")).unwrap();
        assert!(init(&dir, "gw1").is_err(), "wrote through a symlink");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
        fs::remove_dir_all(dir).unwrap();
        fs::remove_file(target).unwrap();
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let parent = fresh("escape");
        fs::create_dir(&parent).unwrap();
        chmod(&parent, 0o700);
        let dir = parent.join("pki");
        for bad in ["../evil", "a/b", "..", ".", "", "/abs", "x\0y", "-rf"] {
            let r = init(&dir, bad);
            assert!(r.is_err(), "gateway name {bad:?} accepted");
        }
        assert!(
            generate(&dir, &["../evil".into()], &["gw1".into()]).is_err(),
            "edge name ../evil accepted"
        );
        assert!(!parent.join("evil.key").exists() && !parent.join("evil.pem").exists());
        fs::remove_dir_all(parent).unwrap();
    }

    /// Review finding: only `--dir` itself was checked for its owner;
    /// below a directory another user owns (or a symlink they own, or a
    /// group-writable ancestor), that user can rename `--dir` between the
    /// checks and the writes and have root's keys and CA written where
    /// they choose (`O_NOFOLLOW` protects the last component only).
    #[test]
    fn refuses_a_directory_another_user_could_swap() {
        if !sluice_lab::require_root("refuses_a_directory_another_user_could_swap") {
            return;
        }
        let parent = fresh("foreign");
        fs::create_dir(&parent).unwrap();
        chmod(&parent, 0o755);
        std::os::unix::fs::chown(&parent, Some(65_534), Some(65_534)).unwrap();
        let err = init(&parent.join("pki"), "gw1")
            .expect_err("a --dir below a directory uid 65534 owns was used");
        assert!(err.to_string().contains("uid 65534"), "{err}");
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0, "created");
        fs::remove_dir_all(parent).unwrap();

        let base = fresh("viaforeignlink");
        fs::create_dir(&base).unwrap();
        chmod(&base, 0o755);
        let real = base.join("real");
        fs::create_dir(&real).unwrap();
        chmod(&real, 0o755);
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65_534), Some(65_534)).unwrap();
        let err = init(&link.join("pki"), "gw1")
            .expect_err("a --dir through a symlink uid 65534 owns was used");
        assert!(err.to_string().contains("uid 65534"), "{err}");
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0, "created");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn refuses_a_directory_below_a_group_writable_one() {
        let parent = fresh("groupw");
        fs::create_dir(&parent).unwrap();
        chmod(&parent, 0o775);
        let err = init(&parent.join("pki"), "gw1")
            .expect_err("a --dir below a group-writable directory was used");
        assert!(err.to_string().contains("writable"), "{err}");
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0, "created");
        fs::remove_dir_all(parent).unwrap();
    }

    /// Keys are 0600 and never replace an existing file; the CA's key is
    /// in a 0700 directory of its own, not beside the keys that get
    /// deployed.
    #[test]
    fn keys_are_private_exclusive_and_the_ca_key_apart() {
        let dir = fresh("modes");
        let f = init(&dir, "gw1").unwrap();
        let (_, _, gw_key) = &f.gateways[0];
        for k in [gw_key, &f.edge.1, &dir.join("ca/ca.key")] {
            assert_eq!(mode(k), 0o600, "{}", k.display());
        }
        assert_eq!(mode(&dir.join("ca")), 0o700);
        assert!(
            !dir.join("ca.key").exists(),
            "the CA key beside the deployed keys"
        );
        let before = fs::read(gw_key).unwrap();
        assert!(init(&dir, "gw1").is_err(), "existing keys were replaced");
        assert_eq!(fs::read(gw_key).unwrap(), before);
        fs::remove_dir_all(dir).unwrap();
    }

    /// A handshake between `c` and `s` in memory: the first error either
    /// side sees.
    fn handshake(c: Arc<ClientConfig>, s: Arc<ServerConfig>) -> Result<(), rustls::Error> {
        let mut client =
            rustls::ClientConnection::new(c, server_name("edge.sluice.test").unwrap()).unwrap();
        let mut server = rustls::ServerConnection::new(s).unwrap();
        for _ in 0..16 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                server.read_tls(&mut &buf[..]).unwrap();
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                client.read_tls(&mut &buf[..]).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn revoked(e: &rustls::Error) -> bool {
        matches!(
            e,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        )
    }

    /// A stolen gateway is cut off without a new CA: once its certificate
    /// is on the edge's revocation list, the edge refuses it at the
    /// handshake; the other gateway still connects.
    #[test]
    fn a_revoked_gateway_is_refused_and_the_others_connect() {
        let dir = fresh("crl");
        let f = generate(
            &dir,
            &["edge.sluice.test".into()],
            &["gw1".into(), "gw2".into()],
        )
        .unwrap();
        let client = |gw: &str| {
            client_config(
                &f.ca,
                &dir.join(format!("{gw}.pem")),
                &dir.join(format!("{gw}.key")),
            )
            .unwrap()
        };
        let edge = || server_config_with_crl(&f.ca, &f.edge.0, &f.edge.1, Some(&f.crl)).unwrap();
        // The empty list from `pki init`: both connect.
        handshake(client("gw1"), edge()).unwrap();
        handshake(client("gw2"), edge()).unwrap();
        let r = revoke(&dir.join("ca"), &f.crl, &[dir.join("gw1.pem")]).unwrap();
        assert_eq!((r.number, r.added.len(), r.serials.len()), (2, 1, 1));
        let e = handshake(client("gw1"), edge()).unwrap_err();
        assert!(revoked(&e), "{e:?}");
        handshake(client("gw2"), edge()).unwrap();
        // Without the list the edge would have let it in.
        handshake(
            client("gw1"),
            server_config(&f.ca, &f.edge.0, &f.edge.1).unwrap(),
        )
        .unwrap();
        // Extending the list keeps what it had; listing again adds nothing.
        let r = revoke(
            &dir.join("ca"),
            &f.crl,
            &[dir.join("gw1.pem"), dir.join("gw2.pem")],
        )
        .unwrap();
        assert_eq!((r.number, r.added.len(), r.serials.len()), (3, 1, 2));
        assert!(revoked(&handshake(client("gw2"), edge()).unwrap_err()));
        // The gateway's side: an edge certificate on its list is refused.
        let gw = client_config_with_crl(
            &f.ca,
            &dir.join("gw1.pem"),
            &dir.join("gw1.key"),
            Some(&f.crl),
        )
        .unwrap();
        let edge_plain = server_config(&f.ca, &f.edge.0, &f.edge.1).unwrap();
        handshake(gw.clone(), edge_plain.clone()).unwrap();
        revoke(&dir.join("ca"), &f.crl, std::slice::from_ref(&f.edge.0)).unwrap();
        let gw = client_config_with_crl(
            &f.ca,
            &dir.join("gw1.pem"),
            &dir.join("gw1.key"),
            Some(&f.crl),
        )
        .unwrap();
        assert!(revoked(&handshake(gw, edge_plain).unwrap_err()));
        fs::remove_dir_all(dir).unwrap();
    }

    /// Review finding: a revocation list the configured CA did not sign
    /// (another `pki init`'s: every such CA has the same name) was
    /// accepted at start; every peer was then refused at the handshake
    /// (an outage of every branch, visible only as handshake failures).
    /// The load fails instead, naming the list.
    #[test]
    fn a_revocation_list_the_ca_did_not_sign_fails_the_load() {
        let (dir1, f1) = lab_pki();
        let (dir2, f2) = lab_pki();
        let (_, c, k) = &f1.gateways[0];
        // What it did before: loaded, and refused every gateway.
        if let Ok(edge) = server_config_with_crl(&f1.ca, &f1.edge.0, &f1.edge.1, Some(&f2.crl)) {
            let e = handshake(client_config(&f1.ca, c, k).unwrap(), edge)
                .expect_err("a gateway passed a list of another CA");
            panic!(
                "the edge loaded another CA's revocation list, and refused every gateway: {e:?}"
            );
        }
        let e = server_config_with_crl(&f1.ca, &f1.edge.0, &f1.edge.1, Some(&f2.crl))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&f2.crl.display().to_string()) && e.contains("not signed by"),
            "{e}"
        );
        let e = client_config_with_crl(&f1.ca, c, k, Some(&f2.crl))
            .expect_err("the gateway loaded another CA's revocation list")
            .to_string();
        assert!(e.contains("not signed by"), "{e}");
        // Its own CA's list loads.
        server_config_with_crl(&f1.ca, &f1.edge.0, &f1.edge.1, Some(&f1.crl)).unwrap();
        client_config_with_crl(&f1.ca, c, k, Some(&f1.crl)).unwrap();
        fs::remove_dir_all(dir1).unwrap();
        fs::remove_dir_all(dir2).unwrap();
    }

    #[test]
    fn revoke_refuses_another_cas_certificate_and_list() {
        let (dir1, f1) = lab_pki();
        let (dir2, f2) = lab_pki();
        let (_, other, _) = &f2.gateways[0];
        let err = revoke(&dir1.join("ca"), &f1.crl, std::slice::from_ref(other)).unwrap_err();
        assert!(err.to_string().contains("not issued by"), "{err}");
        let err = revoke(&dir1.join("ca"), &f2.crl, std::slice::from_ref(&f1.edge.0)).unwrap_err();
        assert!(err.to_string().contains("another CA"), "{err}");
        fs::remove_dir_all(dir1).unwrap();
        fs::remove_dir_all(dir2).unwrap();
    }

    #[test]
    fn admin_tokens_are_private_and_hashed() {
        let dir = fresh("token");
        fs::create_dir(&dir).unwrap();
        let (t, h) = admin_token(&dir.join("admin.token")).unwrap();
        assert_eq!((mode(&t), mode(&h)), (0o600, 0o600));
        let token = fs::read_to_string(&t).unwrap();
        assert_eq!(
            read_token_hash(&h).unwrap(),
            crate::http::sha256(token.trim().as_bytes())
        );
        assert!(admin_token(&dir.join("admin.token")).is_err(), "replaced");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn token_hashes() {
        use std::{fmt::Write as _, os::unix::fs::PermissionsExt as _};
        let h = crate::http::sha256(b"t");
        let hex: String = h.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        assert_eq!(parse_hash(&hex), Some(h));
        assert_eq!(parse_hash(&hex[1..]), None);
        assert_eq!(parse_hash(&"zz".repeat(32)), None);
        let dir = std::env::temp_dir().join(format!("sluice-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.sha256");
        std::fs::write(&f, format!("{hex}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_token_hash(&f)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_hash(&f).unwrap(), h);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
