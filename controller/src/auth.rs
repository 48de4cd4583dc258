//! API clients' credentials and access tokens.
//!
//! - Secrets: 32 random bytes shown once (`sls_` + base64url), stored as
//!   argon2id PHC strings, each with an expiry. Verifying one costs tens
//!   of milliseconds and 19 MiB on purpose, so verifications run on the
//!   blocking pool behind a semaphore ([`Hasher`]), and an unknown client
//!   costs the same as a wrong secret.
//! - Access tokens: JWTs per RFC 9068 (`typ: at+jwt`; `iss`, `aud`, `sub`,
//!   `client_id`, `scope`, `iat`, `exp`, `jti`), signed with the issuing
//!   controller's Ed25519 key. Every controller publishes its public key in
//!   the store, so any controller verifies any other's tokens. A token also
//!   carries its client's `gen`eration: deactivating a client, changing its
//!   secrets or deleting it changes or removes that, and every request
//!   checks it against the store, so live tokens stop working at once.
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, RwLock},
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::{
    db::{Ctx as _, DbError},
    model::Kind,
    store::Store,
};

/// What a caller may do. Each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read everything (objects, the audit log, status).
    Read,
    /// Read, and change policy objects (tenants, profiles, lists, users,
    /// groups, identities).
    Policy,
    /// Everything: gateways, edges, API clients, maintenance mode.
    Admin,
}

impl Scope {
    /// From its name.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "policy" => Some(Scope::Policy),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Policy => "policy",
            Scope::Admin => "admin",
        }
    }
}

/// The strongest scope in a space-separated list (None: none known).
pub fn strongest(scopes: &str) -> Option<Scope> {
    scopes.split(' ').filter_map(Scope::parse).max()
}

/// A new secret: (the secret to show once, its argon2id hash).
pub fn new_secret() -> (String, String) {
    let raw: [u8; 32] = rand::random();
    let secret = format!("sls_{}", B64.encode(raw));
    (secret.clone(), hash_secret(&secret))
}

/// The argon2id PHC string of a secret (or password).
pub fn hash_secret(secret: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes")
        .to_string()
}

/// A hash to verify against when the client is unknown, so that the answer
/// takes as long as for a wrong secret.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_secret("sls_not-a-secret"));

/// Runs argon2 verifications on the blocking pool, a bounded number at a
/// time (each takes 19 MiB and tens of milliseconds).
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    queue: Arc<Semaphore>,
}

/// Verifications waiting at most (beyond them: [`Busy`]).
pub const HASH_QUEUE: usize = 32;

/// Too many verifications are waiting: try again in a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Hasher {
    /// At most `n` verifications at once, [`HASH_QUEUE`] waiting.
    pub fn new(n: usize) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(n.max(1))),
            queue: Arc::new(Semaphore::new(HASH_QUEUE)),
        }
    }

    /// Whether `secret` matches one of `hashes` (none: checked against a
    /// dummy, and false). The permit goes with the work: a caller that
    /// gives up (its request timed out) does not free a slot while its
    /// hash still runs.
    pub async fn verify(&self, secret: String, hashes: Vec<String>) -> Result<bool, Busy> {
        let Ok(_queued) = self.queue.clone().try_acquire_owned() else {
            return Err(Busy);
        };
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Err(Busy);
        };
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let argon = Argon2::default();
            let mut ok = false;
            if hashes.is_empty() {
                let h = PasswordHash::new(&DUMMY_HASH).expect("the dummy hash parses");
                let _ = argon.verify_password(secret.as_bytes(), &h);
            }
            for h in &hashes {
                if let Ok(h) = PasswordHash::new(h)
                    && argon.verify_password(secret.as_bytes(), &h).is_ok()
                {
                    ok = true;
                }
            }
            ok
        })
        .await
        .unwrap_or(false))
    }
}

/// An access token's claims (RFC 9068 §2.2, and `gen`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The issuing controller's URL.
    pub iss: String,
    /// The admin API.
    pub aud: String,
    /// The client (no end user: client credentials).
    pub sub: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// Unique id.
    pub jti: String,
    /// The client's generation when issued.
    pub r#gen: i64,
}

/// The audience of access tokens.
pub const AUDIENCE: &str = "sluice-admin-api";

/// Why a token was not accepted (the detail stays in the log; the caller
/// sees `invalid_token`).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, expired, wrong issuer or audience.
    #[error("token: {0}")]
    Invalid(String),
    /// Its client is gone, inactive, or changed since.
    #[error("token: revoked ({0})")]
    Revoked(&'static str),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// This controller's signing key and every controller's public keys.
pub struct Keys {
    kid: String,
    encoding: EncodingKey,
    issuer: String,
    decoding: RwLock<HashMap<String, (Arc<DecodingKey>, String)>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads this controller's key from `path` (making it, 0600, if
    /// missing) and publishes its public half in the store.
    pub async fn load_or_create(path: &Path, issuer: &str, store: &Store) -> anyhow::Result<Keys> {
        use anyhow::Context as _;
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        let pkcs8 = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                    .map_err(|_| anyhow::anyhow!("cannot generate an Ed25519 key"))?;
                crate::write_private(path, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key", path.display()))?;
        let public = pair.public_key().as_ref().to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
        let kid = B64.encode(&digest.as_ref()[..12]);
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, created_at, issuer) SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE kid = $1)",
        )
        .bind(&kid)
        .bind(B64.encode(&public))
        .bind(crate::now())
        .bind(issuer)
        .execute(&store.db.pool)
        .await
        .context("publish the token-signing key")?;
        // The same key under a new URL: its tokens name the new issuer.
        sqlx::query("UPDATE signing_keys SET issuer = $1 WHERE kid = $2")
            .bind(issuer)
            .bind(&kid)
            .execute(&store.db.pool)
            .await
            .context("record the key's issuer")?;
        let keys = Keys {
            kid: kid.clone(),
            encoding: EncodingKey::from_ed_der(&pkcs8),
            issuer: issuer.to_string(),
            decoding: RwLock::new(HashMap::new()),
        };
        keys.decoding.write().expect("not poisoned").insert(
            kid,
            (
                Arc::new(DecodingKey::from_ed_der(&public)),
                issuer.to_string(),
            ),
        );
        Ok(keys)
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs an access token for `client_id` with `scope` for
    /// `lifetime_secs`.
    pub fn issue(
        &self,
        client_id: &str,
        scope: &str,
        lifetime_secs: i64,
        r#gen: i64,
    ) -> (String, Claims) {
        let now = crate::now();
        let jti: [u8; 16] = rand::random();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: client_id.into(),
            client_id: client_id.into(),
            scope: scope.into(),
            iat: now,
            exp: now + lifetime_secs,
            jti: B64.encode(jti),
            r#gen,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).expect("an Ed25519 key signs");
        (token, claims)
    }

    /// A controller's public key and the issuer its tokens name.
    async fn decoding_key(
        &self,
        kid: &str,
        store: &Store,
    ) -> Result<(Arc<DecodingKey>, String), TokenError> {
        if let Some(k) = self.decoding.read().expect("not poisoned").get(kid) {
            return Ok(k.clone());
        }
        if kid.len() > 64 {
            return Err(TokenError::Invalid("unknown key id".into()));
        }
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT public_key, issuer FROM signing_keys WHERE kid = $1")
                .bind(kid)
                .fetch_optional(&store.db.pool)
                .await
                .ctx("read a signing key")?;
        let (public, issuer) = row
            .and_then(|(p, i)| Some((B64.decode(p).ok()?, i?)))
            .ok_or_else(|| TokenError::Invalid("unknown key id".into()))?;
        let entry = (Arc::new(DecodingKey::from_ed_der(&public)), issuer);
        let mut cache = self.decoding.write().expect("not poisoned");
        if cache.len() < 1024 {
            cache.insert(kid.to_string(), entry.clone());
        }
        Ok(entry)
    }

    /// Checks a bearer token: signature, `typ`, issuer, audience, expiry,
    /// and that its client is active and unchanged. Returns the claims and
    /// the client's name.
    pub async fn verify(&self, token: &str, store: &Store) -> Result<(Claims, String), TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid("too long".into()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some("at+jwt") {
            return Err(TokenError::Invalid("not an EdDSA at+jwt".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no key id".into()))?;
        let (key, issuer) = self.decoding_key(&kid, store).await?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[AUDIENCE]);
        // The issuer of the controller whose key signed it (any controller
        // of this store).
        v.set_issuer(&[&issuer]);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        let client = match store.get(Kind::ApiClient, &c.client_id).await {
            Ok(r) => r.body,
            Err(crate::store::StoreError::NotFound { .. }) => {
                return Err(TokenError::Revoked("client deleted"));
            }
            Err(crate::store::StoreError::Db(e)) => return Err(e.into()),
            Err(e) => return Err(TokenError::Invalid(e.to_string())),
        };
        if client.get("status").and_then(Value::as_str) != Some("active") {
            return Err(TokenError::Revoked("client inactive"));
        }
        if client
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            != c.r#gen
        {
            return Err(TokenError::Revoked("client changed since"));
        }
        let name = client
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok((c, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_order_and_parse() {
        assert!(Scope::Admin > Scope::Policy && Scope::Policy > Scope::Read);
        assert_eq!(strongest("read policy"), Some(Scope::Policy));
        assert_eq!(strongest("x y"), None);
    }

    #[test]
    fn secrets_hash_with_argon2id_and_verify() {
        let (s, h) = new_secret();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(&s));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let hasher = Hasher::new(1);
        assert_eq!(
            rt.block_on(hasher.verify(s.clone(), vec![h.clone()])),
            Ok(true)
        );
        assert_eq!(
            rt.block_on(hasher.verify("sls_wrong".into(), vec![h])),
            Ok(false)
        );
        assert_eq!(rt.block_on(hasher.verify(s, vec![])), Ok(false));
    }
}
