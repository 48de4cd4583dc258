//! `sluice check` checks what `sluice gateway` / `sluice edge` would load,
//! and says which file, which field and why: keys that are directories,
//! garbage or unreadable, certificates that are not PEM, expired or do not
//! match their key, interfaces that do not exist (a warning with
//! `--offline`). The gateway itself refuses a missing LAN interface naming
//! the field.
//!
//! The binary runs as a child process; the configurations use `lo` (in
//! every namespace) and a temporary directory of their own.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A fresh directory (0755, so that another user can read what the test
/// allows) with a lab PKI (`pki/`) and a gateway configuration.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-check-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new(bin())
            .args(["pki", "init", "--dir"])
            .arg(dir.join("pki"))
            .args(["--edge-name", "edge.sluice.test", "--gateway", "gw1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pki init: {}", text(&out));
        std::fs::set_permissions(dir.join("pki"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = Self { dir };
        f.gateway("", "gw1.pem", "gw1.key");
        f
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// `gateway.toml`: endpoint mode on `lo` (no LAN) plus `lan` if
    /// given, with `cert` and `key` (relative to `pki/`).
    fn gateway(&self, lan: &str, cert: &str, key: &str) -> PathBuf {
        let lan = if lan.is_empty() {
            String::new()
        } else {
            format!("lan = \"{lan}\"\n")
        };
        let text = format!(
            "[gateway]\nname = \"gw1\"\n{lan}wan = \"lo\"\n\n[tunnel]\nedge = \"198.51.100.5:4443\"\n\
             server_name = \"edge.sluice.test\"\nca = \"pki/ca.pem\"\ncert = \"pki/{cert}\"\nkey = \"pki/{key}\"\n\n\
             [endpoint]\naddress = \"198.18.3.1\"\n"
        );
        let p = self.path("gateway.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    fn check(&self, extra: &[&str]) -> Output {
        Command::new(bin())
            .args(["check", "--config"])
            .arg(self.path("gateway.toml"))
            .args(extra)
            .output()
            .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `check` failed and its error says `field`, `file` and each of `why`.
fn refused(o: &Output, field: &str, file: &Path, why: &[&str]) {
    let t = text(o);
    assert!(!o.status.success(), "check accepted it:\n{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(field), "no field {field:?} in:\n{t}");
    assert!(
        err.contains(&file.display().to_string()),
        "no file {} in:\n{t}",
        file.display()
    );
    for w in why {
        assert!(err.contains(w), "no {w:?} in:\n{t}");
    }
}

#[test]
fn a_good_configuration_passes() {
    let f = Fixture::new("ok");
    let o = f.check(&[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_key_that_is_a_directory() {
    let f = Fixture::new("keydir");
    std::fs::create_dir(f.path("pki/dir.key")).unwrap();
    f.gateway("", "gw1.pem", "dir.key");
    refused(
        &f.check(&[]),
        "tunnel.key",
        &f.path("pki/dir.key"),
        &["directory"],
    );
}

#[test]
fn a_key_full_of_garbage() {
    let f = Fixture::new("garbage");
    std::fs::write(
        f.path("pki/garbage.key"),
        [0xde_u8, 0xad, 0xbe, 0xef, b'\n'].repeat(50),
    )
    .unwrap();
    f.gateway("", "gw1.pem", "garbage.key");
    refused(
        &f.check(&[]),
        "tunnel.key",
        &f.path("pki/garbage.key"),
        &["no private key"],
    );
}

#[test]
fn a_certificate_that_is_not_pem() {
    let f = Fixture::new("notpem");
    std::fs::write(f.path("pki/bad.pem"), "hello\n").unwrap();
    f.gateway("", "bad.pem", "gw1.key");
    refused(
        &f.check(&[]),
        "tunnel.cert",
        &f.path("pki/bad.pem"),
        &["no CERTIFICATE"],
    );
}

#[test]
fn a_key_that_does_not_match_its_certificate() {
    let f = Fixture::new("mismatch");
    // The edge's key with the gateway's certificate.
    f.gateway("", "gw1.pem", "edge.key");
    refused(
        &f.check(&[]),
        "tunnel.key",
        &f.path("pki/edge.key"),
        &["does not match"],
    );
}

#[test]
fn an_expired_certificate() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, date_time_ymd,
    };
    let f = Fixture::new("expired");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["gw1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.not_before = date_time_ymd(2020, 1, 1);
    leaf.not_after = date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(f.path("pki/old.pem"), cert.pem()).unwrap();
    std::fs::write(f.path("pki/old.key"), key.serialize_pem()).unwrap();
    f.gateway("", "old.pem", "old.key");
    refused(
        &f.check(&[]),
        "tunnel.cert",
        &f.path("pki/old.pem"),
        &["expired", "2021-01-01"],
    );
}

/// Readable by root, not by the user who runs the check: `check` as that
/// user names the file it cannot read (it used to only look whether the
/// file existed).
#[test]
fn a_key_the_checking_user_cannot_read() {
    if !sluice_lab::require_root("a_key_the_checking_user_cannot_read") {
        return;
    }
    let f = Fixture::new("unreadable");
    // The CA and certificate readable by all, the key root's alone (as
    // `pki init` writes it).
    for p in ["pki/ca.pem", "pki/gw1.pem"] {
        std::fs::set_permissions(f.path(p), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let key = f.path("pki/gw1.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin())
        .args(["check", "--config"])
        .arg(f.path("gateway.toml"))
        .output()
        .unwrap();
    refused(&o, "tunnel.key", &key, &["ermission denied"]);
}

#[test]
fn a_lan_interface_that_does_not_exist() {
    let f = Fixture::new("nolan");
    f.gateway("nosuch0", "gw1.pem", "gw1.key");
    let o = f.check(&[]);
    let t = text(&o);
    assert!(!o.status.success(), "check accepted a missing LAN:\n{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gateway.lan") && err.contains("nosuch0") && err.contains("no such interface"),
        "{t}"
    );
    // Offline (checking a file for another machine): a warning.
    let o = f.check(&["--offline"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("warning") && t.contains("gateway.lan") && t.contains("nosuch0"),
        "{t}"
    );
}

/// The gateway refuses to start on a missing LAN interface, naming the
/// field, before it touches anything (in a network namespace of its own,
/// which has only `lo`).
#[test]
fn the_gateway_names_a_missing_lan_interface() {
    if !sluice_lab::require_root("the_gateway_names_a_missing_lan_interface") {
        return;
    }
    let f = Fixture::new("gwnolan");
    let cfg = f.gateway("nosuch0", "gw1.pem", "gw1.key");
    let o = Command::new("timeout")
        .args(["30", "unshare", "-n"])
        .arg(bin())
        .args(["gateway", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gateway.lan") && err.contains("nosuch0"),
        "the error names no field:\n{t}"
    );
}

#[test]
fn an_edge_key_that_is_a_directory() {
    let f = Fixture::new("edgekey");
    std::fs::create_dir(f.path("pki/dir.key")).unwrap();
    let cfg = f.path("edge.toml");
    std::fs::write(
        &cfg,
        "[edge]\nlisten = \"[::]:4443\"\n\
         ca = \"pki/ca.pem\"\ncert = \"pki/edge.pem\"\nkey = \"pki/dir.key\"\n\
         [[edge.gateway]]\nname = \"branch-1\"\nprefixes = [\"192.0.2.0/24\"]\n",
    )
    .unwrap();
    let o = Command::new(bin())
        .args(["check", "--role", "edge", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    refused(&o, "edge.key", &f.path("pki/dir.key"), &["directory"]);
}
