//! Which configured gateway an authenticated peer is.
//!
//! rustls has verified the peer's chain against the edge's CA; this binds
//! it to one `[[edge.gateway]]`: the end-entity certificate must be valid
//! (webpki's subject-name check) for exactly one configured gateway name,
//! and when that gateway pins a key (`spki_sha256`), its
//! `SubjectPublicKeyInfo` must hash to it. The certificate's DNS names only
//! pick the candidates (a hash-map lookup per name); the verdict is
//! webpki's. A certificate valid for two configured names is refused.
use std::collections::HashMap;

use rustls::pki_types::{CertificateDer, ServerName};

use super::EdgeGateway;
use super::router::GatewayId;

/// Why an authenticated peer is not one of the gateways.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum IdentityError {
    /// No certificate (rustls requires one: not expected).
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("unreadable client certificate: {0}")]
    BadCertificate(String),
    /// Its names match no configured gateway.
    #[error("certificate names no configured gateway (names: {0})")]
    Unknown(String),
    /// Its names match more than one configured gateway.
    #[error("certificate is valid for several gateways: {0}")]
    Ambiguous(String),
    /// The gateway pins another key.
    #[error("gateway `{0}`: certificate key does not match spki_sha256")]
    KeyMismatch(String),
}

/// The configured gateways' names and pinned keys.
#[derive(Debug)]
pub(super) struct Identities {
    by_name: HashMap<String, GatewayId>,
    names: Vec<String>,
    pins: Vec<Option<[u8; 32]>>,
}

impl Identities {
    /// From the configuration (names are lowercase, validated there).
    pub(super) fn new(gateways: &[EdgeGateway]) -> Self {
        Self {
            by_name: gateways
                .iter()
                .enumerate()
                .filter_map(|(i, g)| Some((g.name.clone(), GatewayId::try_from(i).ok()?)))
                .collect(),
            names: gateways.iter().map(|g| g.name.clone()).collect(),
            pins: gateways.iter().map(|g| g.spki_sha256).collect(),
        }
    }

    /// The name of gateway `g`.
    pub(super) fn name(&self, g: GatewayId) -> &str {
        self.names.get(usize::from(g)).map_or("?", String::as_str)
    }

    /// The gateway the peer's chain (end-entity certificate first) binds
    /// to.
    ///
    /// # Errors
    /// See [`IdentityError`].
    pub(super) fn identify(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<GatewayId, IdentityError> {
        let der = chain.first().ok_or(IdentityError::NoCertificate)?;
        let cert = webpki::EndEntityCert::try_from(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let mut found: Vec<(GatewayId, &str)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for n in cert.valid_dns_names() {
            let lower = n.to_ascii_lowercase();
            if seen.len() < 8 {
                seen.push(crate::tunnel::printable(&lower, 64));
            }
            let Some(&g) = self.by_name.get(&lower) else {
                continue;
            };
            if found.iter().any(|(f, _)| *f == g) {
                continue;
            }
            // The names only pick candidates: webpki decides.
            let Ok(name) = ServerName::try_from(self.name(g)) else {
                continue;
            };
            if cert.verify_is_valid_for_subject_name(&name).is_ok() {
                found.push((g, self.name(g)));
            }
        }
        let g = match found.as_slice() {
            [] => return Err(IdentityError::Unknown(seen.join(", "))),
            [(g, _)] => *g,
            many => {
                return Err(IdentityError::Ambiguous(
                    many.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "),
                ));
            }
        };
        if let Some(pin) = self.pins.get(usize::from(g)).copied().flatten() {
            let spki = cert.subject_public_key_info();
            let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
            if hash.as_ref() != pin {
                return Err(IdentityError::KeyMismatch(self.name(g).to_string()));
            }
        }
        Ok(g)
    }
}

/// SHA-256 of the `SubjectPublicKeyInfo` of a certificate (what
/// `spki_sha256` pins), as lowercase hex.
///
/// # Errors
/// When the certificate cannot be parsed.
#[cfg(test)]
fn spki_sha256(der: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let cert = webpki::EndEntityCert::try_from(der)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let spki = cert.subject_public_key_info();
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    Ok(hash.as_ref().iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::lab_pki::LabPki;

    fn gw(name: &str, pin: Option<[u8; 32]>) -> EdgeGateway {
        EdgeGateway {
            name: name.into(),
            spki_sha256: pin,
            prefixes: vec!["192.0.2.0/24".parse().unwrap()],
            max_tunnels: 8,
            max_routes: 64,
        }
    }

    #[test]
    fn certificates_bind_to_their_gateway_only() {
        let pki = LabPki::new(&["gw1", "gw2", "other"]);
        let cert = |name: &str| match name {
            "gw1" => pki.gateways[0].cert.clone(),
            "gw2" => pki.gateways[1].cert.clone(),
            _ => pki.gateways[2].cert.clone(),
        };
        let ids = Identities::new(&[gw("gw1", None), gw("gw2", None)]);
        assert_eq!(ids.identify(&[cert("gw1")]), Ok(0));
        assert_eq!(ids.identify(&[cert("gw2")]), Ok(1));
        assert!(matches!(
            ids.identify(&[cert("other")]),
            Err(IdentityError::Unknown(n)) if n == "other"
        ));
        assert_eq!(ids.identify(&[]), Err(IdentityError::NoCertificate));
        // A pinned key: the same name with another key is refused.
        let hex = spki_sha256(&cert("gw2")).unwrap();
        let mut pin = [0u8; 32];
        for (i, b) in pin.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        let pinned = Identities::new(&[gw("gw1", Some(pin)), gw("gw2", Some(pin))]);
        assert_eq!(pinned.identify(&[cert("gw2")]), Ok(1));
        assert_eq!(
            pinned.identify(&[cert("gw1")]),
            Err(IdentityError::KeyMismatch("gw1".into()))
        );
    }
}
