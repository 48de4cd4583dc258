//! Test certificates, in memory (rcgen): a CA, an edge and gateways, and
//! rustls configurations built the way the dataplane builds its own (TLS
//! 1.3 only, aws-lc-rs, client certificates required, secret extraction
//! on, no resumption). For the session's tests, the fuzz targets and the
//! benches (feature `lab-pki`); never part of the dataplane.
#![allow(
    clippy::missing_panics_doc,
    reason = "test material: a failure to generate it is a broken build"
)]
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    server::WebPkiClientVerifier,
};

/// The name on the edge's certificate (and the gateways' server name).
pub(crate) const EDGE_NAME: &str = "edge.sluice.test";

/// A certificate and its key.
#[derive(Debug)]
pub struct Identity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its key (PKCS#8 DER).
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A CA with an edge certificate ([`EDGE_NAME`], `198.51.100.5`) and one
/// gateway certificate per name given.
#[derive(Debug)]
pub struct LabPki {
    /// The CA's certificate.
    pub ca: CertificateDer<'static>,
    /// The edge's (server authentication).
    pub edge: Identity,
    /// The gateways' (client authentication, common name = the name), in
    /// the order given.
    pub gateways: Vec<Identity>,
}

impl LabPki {
    /// A fresh CA and its certificates (a few milliseconds).
    pub fn new(gateways: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sluice lab CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf = |names: Vec<String>, cn: &str, eku| {
            let mut p = CertificateParams::new(names).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &ca).expect("leaf");
            Identity {
                cert: cert.der().clone(),
                key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            }
        };
        let edge = leaf(
            vec![EDGE_NAME.into(), "198.51.100.5".into()],
            EDGE_NAME,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let gateways = gateways
            .iter()
            .map(|g| leaf(vec![(*g).into()], g, ExtendedKeyUsagePurpose::ClientAuth))
            .collect();
        Self {
            ca: ca.der().clone(),
            edge,
            gateways,
        }
    }

    /// Gateway `i`'s configuration: trusts this CA, presents its
    /// certificate.
    pub fn client_config(&self, i: usize) -> Arc<ClientConfig> {
        client_config(&self.ca, &self.gateways[i])
    }

    /// The edge's configuration: requires a client certificate of this CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        server_config(&self.ca, &self.edge)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A gateway's configuration: trusts `ca`, presents `id`.
pub fn client_config(ca: &CertificateDer<'static>, id: &Identity) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA certificate");
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())
        .expect("client certificate");
    cfg.enable_secret_extraction = true;
    Arc::new(cfg)
}

/// An edge's configuration: requires a client certificate issued by
/// `ca`, presents `id`.
pub fn server_config(ca: &CertificateDer<'static>, id: &Identity) -> Arc<ServerConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA certificate");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("client verifier");
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert.clone()], id.key.clone_key())
        .expect("server certificate");
    cfg.enable_secret_extraction = true;
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

/// [`EDGE_NAME`] as a rustls server name.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(EDGE_NAME).expect("a DNS name")
}
