//! Certificates for the tunnel: a small lab CA generator (`sluice pki init`)
//! and the loaders that turn PEM files into rustls configurations.
//!
//! Tunnels are TLS 1.3 only, mutually authenticated: the gateway checks the
//! edge's certificate against the CA and the edge name; the edge requires a
//! client certificate issued by the same CA. The crypto provider is
//! aws-lc-rs.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
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
    /// Certificate generation failed.
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
    /// The client-certificate verifier could not be built from the CA.
    #[error("client verifier from {path}: {what}")]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        what: String,
    },
    /// The edge name is neither a DNS name nor an IP address.
    #[error("`{0}` is not a valid DNS name or IP address for the edge")]
    ServerName(String),
}

/// Paths of the files written by [`generate`].
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Edge certificate and key.
    pub edge: (PathBuf, PathBuf),
    /// One certificate and key per gateway, in the order given.
    pub gateways: Vec<(String, PathBuf, PathBuf)>,
}

/// Generates a lab CA, an edge certificate valid for `edge_names` (DNS names
/// or IP addresses) and a client certificate per gateway name, as PEM files in
/// `dir` (`ca.pem`, `ca.key`, `edge.pem`, `edge.key`, `<gw>.pem`,
/// `<gw>.key`). Keys are written with mode 0600.
///
/// This is for labs, tests and first deployments; a production site would use
/// its own CA.
pub fn generate(
    dir: &Path,
    edge_names: &[String],
    gateways: &[String],
) -> Result<PkiFiles, PkiError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let generr = |what: &str| {
        let what = what.to_string();
        move |source| PkiError::Generate { what, source }
    };
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generr("CA"))?;
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
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(generr(cn))?;
        let cert = p.signed_by(&key, &ca).map_err(generr(cn))?;
        Ok::<_, PkiError>((cert.pem(), key.serialize_pem()))
    };

    let ca_path = dir.join("ca.pem");
    write_file(&ca_path, ca.pem().as_bytes(), 0o644)?;
    write_file(&dir.join("ca.key"), ca_key_pem.as_bytes(), 0o600)?;

    let cn = edge_names.first().map_or("edge", String::as_str);
    let (cert, key) = leaf(edge_names.to_vec(), cn, ExtendedKeyUsagePurpose::ServerAuth)?;
    let edge = (dir.join("edge.pem"), dir.join("edge.key"));
    write_file(&edge.0, cert.as_bytes(), 0o644)?;
    write_file(&edge.1, key.as_bytes(), 0o600)?;

    let mut gws = Vec::new();
    for gw in gateways {
        let (cert, key) = leaf(vec![gw.clone()], gw, ExtendedKeyUsagePurpose::ClientAuth)?;
        let c = dir.join(format!("{gw}.pem"));
        let k = dir.join(format!("{gw}.key"));
        write_file(&c, cert.as_bytes(), 0o644)?;
        write_file(&k, key.as_bytes(), 0o600)?;
        gws.push((gw.clone(), c, k));
    }
    Ok(PkiFiles {
        ca: ca_path,
        edge,
        gateways: gws,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let werr = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(werr)?;
    f.write_all(data).map_err(werr)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| PkiError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE in file".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| PkiError::Pem {
        path: path.to_path_buf(),
        what: e.to_string(),
    })
}

fn load_roots(ca: &Path) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|source| PkiError::Tls {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The gateway's TLS configuration: TLS 1.3, server verified against `ca`,
/// client certificate `cert` with key `key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, PkiError> {
    let roots = load_roots(ca)?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls {
            path: cert.to_path_buf(),
            source,
        })?
        .with_root_certificates(roots)
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
    let roots = load_roots(ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| PkiError::Verifier {
            path: ca.to_path_buf(),
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

/// The common name of the first certificate a peer presented, for logs.
pub fn peer_common_name(chain: &[rustls_pki_types::CertificateDer<'_>]) -> Option<String> {
    let der = chain.first()?;
    common_name(der.as_ref())
}

/// Extracts the first `CommonName` (OID 2.5.4.3) UTF8String/PrintableString
/// from a DER certificate without a full X.509 parser: a bounded scan for
/// the OID followed by a short string. Only used for log labels; never for
/// authorization (rustls has verified the chain).
fn common_name(der: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    // The issuer's CN comes first in the TBS certificate, the subject's
    // last: take the last match.
    let mut found = None;
    let mut i = 0;
    while let Some(pos) = der
        .get(i..)?
        .windows(CN_OID.len())
        .position(|w| w == CN_OID)
    {
        let at = i + pos + CN_OID.len();
        if let (Some(&tag), Some(&len)) = (der.get(at), der.get(at + 1))
            && matches!(tag, 0x0c | 0x13)
            && len < 0x80
            && let Some(s) = der.get(at + 2..at + 2 + usize::from(len))
        {
            found = std::str::from_utf8(s).ok().map(str::to_string);
        }
        i = at;
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Generates a PKI into a fresh temp dir; returns the dir and files.
    pub(crate) fn lab_pki() -> (PathBuf, PkiFiles) {
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

    #[test]
    fn generated_material_loads() {
        let (dir, f) = lab_pki();
        let (_, c, k) = &f.gateways[0];
        client_config(&f.ca, c, k).unwrap();
        server_config(&f.ca, &f.edge.0, &f.edge.1).unwrap();
        let der = load_certs(c).unwrap();
        assert_eq!(common_name(der[0].as_ref()).as_deref(), Some("gw1"));
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
}
