//! The controller's certificate authority: it signs the controller's own
//! HTTPS certificate and, at enrolment, the certificates of gateways and
//! edges (from their signing requests: their keys never leave them).
//!
//! The CA's key is a file in the state directory (0600). Controllers that
//! share a `PostgreSQL` store share the CA: copy `ca.pem` and `ca.key` to
//! each one's state directory.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Validity of the CA (days).
const CA_DAYS: i32 = 3650;
/// Validity of the controller's server certificate (days; remade at every
/// start).
const SERVER_DAYS: i32 = 397;
/// Validity of an enrolled node's certificate (days).
const NODE_DAYS: i32 = 397;

/// A certificate issued at enrolment.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM.
    pub pem: String,
    /// DER.
    pub der: Vec<u8>,
    /// Hex serial.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// The CA: its certificate and the issuer made from its key.
pub struct Ca {
    /// PEM of the CA certificate.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Paths in a state directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// CA certificate.
    pub ca: PathBuf,
    /// CA key (0600).
    pub ca_key: PathBuf,
    /// The controller's HTTPS certificate.
    pub server: PathBuf,
    /// Its key (0600).
    pub server_key: PathBuf,
    /// The token-signing key (0600).
    pub jwt_key: PathBuf,
}

impl Paths {
    /// The files of state directory `dir`.
    pub fn of(dir: &Path) -> Paths {
        Paths {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            jwt_key: dir.join("jwt-ed25519.pk8"),
        }
    }
}

impl Ca {
    /// Loads the CA of `paths`, or makes one if neither file exists.
    pub fn load_or_create(paths: &Paths) -> anyhow::Result<Ca> {
        match (paths.ca.exists(), paths.ca_key.exists()) {
            (true, true) => {
                let cert_pem = std::fs::read_to_string(&paths.ca)
                    .with_context(|| format!("read {}", paths.ca.display()))?;
                let key_pem = std::fs::read_to_string(&paths.ca_key)
                    .with_context(|| format!("read {}", paths.ca_key.display()))?;
                let key = KeyPair::from_pem(&key_pem)
                    .with_context(|| format!("{}: not a key", paths.ca_key.display()))?;
                let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                    .with_context(|| format!("{}: not a CA certificate", paths.ca.display()))?;
                Ok(Ca { cert_pem, issuer })
            }
            (false, false) => {
                let now = time::OffsetDateTime::now_utc();
                let day = time::Duration::days(1);
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.not_before = now - day;
                p.not_after = now + day * CA_DAYS;
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.distinguished_name
                    .push(DnType::CommonName, "sluice controller CA");
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                let key = KeyPair::generate()?;
                crate::write_private(&paths.ca_key, key.serialize_pem().as_bytes())?;
                let ca = CertifiedIssuer::self_signed(p, key)?;
                let cert_pem = ca.pem();
                std::fs::write(&paths.ca, &cert_pem)
                    .with_context(|| format!("write {}", paths.ca.display()))?;
                Self::load_or_create(paths)
            }
            _ => anyhow::bail!(
                "{} and {} go together: one is missing (a controller joining a shared store needs both, copied from the first)",
                paths.ca.display(),
                paths.ca_key.display()
            ),
        }
    }

    /// The box that seals administrators' TOTP secrets, keyed from this
    /// CA's private key ([`crate::admins::SecretBox`]).
    pub fn secret_box(&self) -> crate::admins::SecretBox {
        crate::admins::SecretBox::from_ca_key(&self.issuer.key().serialize_der())
    }

    /// The SHA-256 of the CA certificate's DER, in hex: the pin an
    /// enrolment token carries, so that a box that has nothing else to
    /// trust yet can tell this controller from an impostor.
    pub fn fingerprint(&self) -> String {
        use rustls_pki_types::{CertificateDer, pem::PemObject as _};
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("the CA's own PEM parses");
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Signs a node's certificate from its signing request: the request's
    /// signature is checked (it proves the key), its public key is kept,
    /// and everything else comes from here: the name (`name`, as DNS name
    /// and common name), client authentication (and server authentication
    /// for an edge), a fresh random serial, [`NODE_DAYS`] of validity.
    pub fn sign_node(&self, csr_pem: &str, names: &[String], edge: bool) -> anyhow::Result<Issued> {
        let name = names.first().map_or("", String::as_str);
        if csr_pem.len() > crate::nodes::MAX_CSR {
            anyhow::bail!("longer than {} bytes", crate::nodes::MAX_CSR);
        }
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("not a valid PKCS#10 request: {e}"))?;
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let mut p = CertificateParams::new(names.to_vec())?;
        p.not_before = now - day;
        p.not_after = now + day * NODE_DAYS;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = if edge {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        csr.params = p;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(Issued {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after: (now + day * NODE_DAYS).unix_timestamp(),
        })
    }

    /// Issues the controller's HTTPS certificate for `names` (DNS names or
    /// IP addresses): (certificate PEM, key PEM).
    pub fn server_cert(&self, names: &[String]) -> anyhow::Result<(String, String)> {
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let mut p = CertificateParams::new(names.to_vec())?;
        p.not_before = now - day;
        p.not_after = now + day * SERVER_DAYS;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("sluice-controller", String::as_str),
        );
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
