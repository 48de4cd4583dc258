//! Enrolment with a controller (`sluice gateway --enrol URL --token T`,
//! and the same for an edge): a key made here and kept here, a signing
//! request for it, the certificate the controller's CA signs.
//!
//! The box trusts nothing yet, so the token carries the trust: after its
//! dot, the SHA-256 of the controller's CA certificate. The box first opens
//! a TLS connection that only looks at the certificate chain the controller
//! presents (it sends nothing), finds the CA with that hash in it, and then
//! posts its request over a connection verified against that CA alone. A
//! controller that cannot show the pinned CA gets nothing: not the token,
//! not the request.
//!
//! Files written to the state directory: `key.pem` (0600, made here),
//! `cert.pem`, `ca.pem`, `enrolment.json` (kind, id, name, agent URL).
use std::{
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// Why enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The token is not `sle_<secret>.<64 hex digits>`.
    #[error(
        "the enrolment token is malformed: expected sle_<secret>.<CA SHA-256>, as the controller printed it"
    )]
    Token,
    /// The URL is not `https://host[:port][/...]`.
    #[error("the controller URL `{0}` is not https://HOST[:PORT]")]
    Url(String),
    /// The controller could not be reached or spoke badly.
    #[error("the controller at {url}: {why}")]
    Connect {
        /// Where.
        url: String,
        /// What happened.
        why: String,
    },
    /// The controller did not present the CA the token pins.
    #[error(
        "the controller at {0} does not present the CA this token pins: refusing to send it anything (a wrong URL, or not this controller)"
    )]
    Pin(String),
    /// The controller refused.
    #[error("the controller refused the enrolment ({status}): {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its problem's detail.
        detail: String,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    File {
        /// Which.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The exit status of `sluice gateway --enrol` (and `sluice edge
/// --enrol`) when trying again cannot help ([`EnrolError::is_permanent`]):
/// a new token, or the right URL, is needed.
pub const EXIT_REFUSED: u8 = 3;

impl EnrolError {
    /// Whether trying again with the same URL and token cannot succeed:
    /// a malformed token or URL, or a refusal by the controller the token
    /// pins other than for load (4xx but 408 and 429: the CA was checked
    /// first, so it is the controller's). A controller that cannot be
    /// reached, fails (5xx), or is not the one the token pins (yet: a
    /// captive portal, a middlebox, a DNS name not yet moved; nothing was
    /// sent to it) may be there later.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            EnrolError::Token | EnrolError::Url(_) => true,
            EnrolError::Pin(_) => false,
            EnrolError::Refused { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            EnrolError::Connect { .. } | EnrolError::File { .. } => false,
        }
    }
}

/// What enrolment gave.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Enrolled {
    /// `gateway` or `edge`.
    pub kind: String,
    /// Its object's id at the controller.
    pub id: String,
    /// Its name (on its certificate).
    pub name: String,
    /// Where its agent connects.
    pub agent_url: String,
}

/// A verifier that accepts any chain and remembers it: used only for the
/// first look at the controller, over which nothing is sent.
#[derive(Debug)]
struct Capture {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut c = self.chain.lock().expect("not poisoned");
        c.push(end_entity.to_vec());
        c.extend(intermediates.iter().map(|i| i.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn sha256_hex(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    d.as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

/// `https://host[:port][/path]` to (host, port).
fn host_port(url: &str) -> Result<(String, u16), EnrolError> {
    let bad = || EnrolError::Url(url.to_string());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => 443,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        None => Ok((authority.to_string(), 443)),
    }
}

const TIMEOUT: Duration = Duration::from_secs(15);

/// The chain `host:port` presents (nothing is sent but the handshake).
fn look(host: &str, port: u16, url: &str) -> Result<Vec<Vec<u8>>, EnrolError> {
    let conn_err = |why: String| EnrolError::Connect {
        url: url.to_string(),
        why,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let capture = Arc::new(Capture {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| conn_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| conn_err(e.to_string()))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| conn_err(e.to_string()))?;
    let mut tcp = TcpStream::connect((host, port)).map_err(|e| conn_err(e.to_string()))?;
    tcp.set_read_timeout(Some(TIMEOUT)).ok();
    tcp.set_write_timeout(Some(TIMEOUT)).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| conn_err(format!("TLS handshake: {e}")))?;
    }
    let chain = capture.chain.lock().expect("not poisoned").clone();
    Ok(chain)
}

/// Enrols with the controller at `url` using `token`, writing the key,
/// the certificate, the CA and `enrolment.json` to `state_dir` (made 0700
/// if missing).
pub fn enrol(url: &str, token: &str, state_dir: &Path) -> Result<Enrolled, EnrolError> {
    let (_, pin) = token.rsplit_once('.').ok_or(EnrolError::Token)?;
    if !token.starts_with("sle_") || pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(EnrolError::Token);
    }
    let pin = pin.to_ascii_lowercase();
    let url = url.trim_end_matches('/');
    let (host, port) = host_port(url)?;
    let chain = look(&host, port, url)?;
    let ca = chain
        .iter()
        .find(|c| sha256_hex(c) == pin)
        .ok_or_else(|| EnrolError::Pin(url.to_string()))?
        .clone();
    let conn_err = |why: String| EnrolError::Connect {
        url: url.to_string(),
        why,
    };
    // The key, made here.
    let key = rcgen::KeyPair::generate().map_err(|e| conn_err(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| conn_err(format!("making the signing request: {e}")))?;
    let body = serde_json::json!({ "token": token, "csr": csr }).to_string();
    // Now trusting the pinned CA alone.
    let ca_der = CertificateDer::from(ca);
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![
            ureq::tls::Certificate::from_der(ca_der.as_ref()).to_owned(),
        ])))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .tls_config(tls)
            .timeout_global(Some(TIMEOUT))
            // The pinned controller answers itself: no redirect elsewhere,
            // no proxy from the environment.
            .max_redirects(0)
            .proxy(None)
            .http_status_as_error(false)
            .build(),
    );
    let mut resp = agent
        .post(&format!("{url}/enrol"))
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .map_err(|e| conn_err(e.to_string()))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024)
        .read_to_string()
        .map_err(|e| conn_err(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if status != 200 {
        return Err(EnrolError::Refused {
            status,
            detail: v["detail"]
                .as_str()
                .unwrap_or(&text)
                .chars()
                .take(500)
                .collect(),
        });
    }
    let cert = v["certificate"].as_str().unwrap_or("");
    let ca_pem = v["ca"].as_str().unwrap_or("");
    let enrolled: Enrolled =
        serde_json::from_value(v.clone()).map_err(|e| conn_err(format!("its answer: {e}")))?;
    if cert.is_empty() || ca_pem.is_empty() {
        return Err(conn_err("its answer has no certificate".into()));
    }
    write_state(state_dir, &key.serialize_pem(), cert, ca_pem, &enrolled)?;
    Ok(enrolled)
}

fn write_state(
    dir: &Path,
    key: &str,
    cert: &str,
    ca: &str,
    enrolled: &Enrolled,
) -> Result<(), EnrolError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EnrolError::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(file_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(file_err(dir))?;
    let write = |name: &str, text: &[u8], mode: u32| -> Result<(), EnrolError> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(file_err(&tmp))?;
        f.write_all(text)
            .and_then(|()| f.sync_all())
            .map_err(file_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(file_err(&path))
    };
    write("key.pem", key.as_bytes(), 0o600)?;
    write("cert.pem", cert.as_bytes(), 0o644)?;
    write("ca.pem", ca.as_bytes(), 0o644)?;
    let json = serde_json::to_vec_pretty(enrolled).expect("serialises");
    write("enrolment.json", &json, 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_trying_again_cannot_change_is_permanent() {
        let refused = |status| EnrolError::Refused {
            status,
            detail: String::new(),
        };
        for e in [
            EnrolError::Token,
            EnrolError::Url("x".into()),
            refused(401),
            refused(403),
            refused(400),
        ] {
            assert!(e.is_permanent(), "{e}");
        }
        for e in [
            EnrolError::Connect {
                url: "x".into(),
                why: "refused".into(),
            },
            EnrolError::Pin("x".into()),
            refused(429),
            refused(408),
            refused(500),
            refused(503),
        ] {
            assert!(!e.is_permanent(), "{e}");
        }
    }

    #[test]
    fn urls_and_tokens_are_checked_before_anything_is_sent() {
        assert_eq!(
            host_port("https://ctl.example").unwrap(),
            ("ctl.example".into(), 443)
        );
        assert_eq!(
            host_port("https://192.0.2.1:8443/").unwrap(),
            ("192.0.2.1".into(), 8443)
        );
        assert_eq!(
            host_port("https://[2001:db8::1]:8443").unwrap(),
            ("2001:db8::1".into(), 8443)
        );
        for bad in [
            "http://x",
            "https://",
            "https://u@x",
            "https://x:y",
            "https://[::1",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        let d = tempfile_dir();
        for t in [
            "sle_abc",
            "abc.0000",
            "sle_x.1234",
            &format!("sle_x.{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(enrol("https://192.0.2.1", t, &d), Err(EnrolError::Token)),
                "{t}"
            );
        }
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("sluice-enrol-test-{}", std::process::id()))
    }
}
