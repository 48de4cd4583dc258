//! The portal's administrators: accounts with a role (`read` or `full`),
//! an argon2id password and a TOTP second factor (RFC 6238: HMAC-SHA1, six
//! digits, 30 s steps, one step either side accepted, and a code good
//! once: the last step accepted is kept and only a later one is taken),
//! and their sessions (a random 256-bit cookie token stored as its
//! SHA-256, a form token for CSRF, an absolute expiry an hour after
//! sign-in, gone at sign-out).
//!
//! TOTP secrets have to be usable, so they cannot be hashed: they are
//! sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the CA's
//! private key, which is 0600 in the state directory and shared by the
//! controllers of one store. A database dump alone does not give them.
//!
//! Every change to an administrator is audited in its transaction (never
//! a password, a secret or a code).
use aws_lc_rs::{aead, hkdf, rand::SecureRandom as _};
use base64::Engine as _;
use sqlx::Row as _;

use crate::{
    db::{Ctx as _, DbError},
    store::{Origin, Store, StoreError},
};

/// How long a session lasts from sign-in.
pub const SESSION_SECS: i64 = 3600;
/// TOTP step.
pub const STEP_SECS: i64 = 30;
/// Failed sign-ins in a row that lock an account.
pub const MAX_FAILURES: i64 = 10;
/// How long it stays locked.
pub const LOCK_SECS: i64 = 900;
/// Shortest password.
pub const MIN_PASSWORD: usize = 12;
/// Longest password (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD: usize = 256;

/// What an administrator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Look.
    Read,
    /// Change everything.
    Full,
}

impl Role {
    /// From its name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "full" => Some(Role::Full),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Full => "full",
        }
    }
}

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Seals TOTP secrets (see the module docs).
pub struct SecretBox {
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox").finish_non_exhaustive()
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl SecretBox {
    /// The box keyed from `ca_key_der` (the CA's private key).
    pub fn from_ca_key(ca_key_der: &[u8]) -> SecretBox {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sluice controller admin secrets v1");
        let prk = salt.extract(ca_key_der);
        let mut key = [0u8; 32];
        prk.expand(&[b"totp"], Len32)
            .and_then(|okm| okm.fill(&mut key))
            .expect("32 bytes from HKDF-SHA256");
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &key).expect("a 256-bit key");
        SecretBox {
            key: aead::LessSafeKey::new(unbound),
        }
    }

    /// `nonce || ciphertext || tag`, base64; `aad` binds it to its owner.
    pub fn seal(&self, plain: &[u8], aad: &str) -> String {
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .expect("sealing cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// The plaintext, if `sealed` was sealed here for `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let mut buf = ct.to_vec();
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(aad.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The six-digit code of `secret` at time step `step` (RFC 6238 with
/// HMAC-SHA1, as authenticator apps do).
pub fn code_at(secret: &[u8], step: i64) -> Option<String> {
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(STEP_SECS as u64)
        .with_secret(secret.to_vec())
        .build_noncompliant();
    u64::try_from(step * STEP_SECS)
        .ok()
        .map(|t| totp.generate(t).to_string())
}

/// The step among `now`'s and its neighbours whose code is `code`.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now.div_euclid(STEP_SECS);
    let mut found = None;
    // Every candidate is computed and compared in constant time.
    for s in [step - 1, step, step + 1] {
        if let Some(c) = code_at(secret, s)
            && constant_time_eq(c.as_bytes(), code.as_bytes())
        {
            found = Some(s);
        }
    }
    found
}

/// Equal, comparing every byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new administrator's TOTP enrolment, shown once.
pub struct Created {
    /// Its id.
    pub id: String,
    /// The TOTP secret.
    pub secret: [u8; 20],
    /// The TOTP secret, base32 (for an authenticator app).
    pub secret_base32: String,
    /// The `otpauth://` URI of it.
    pub uri: String,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why an administrator could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A field is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("an administrator named `{0}` exists")]
    NameTaken(String),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Checks a password against the policy.
pub fn check_password(p: &str) -> Result<(), AdminError> {
    let n = p.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(AdminError::Invalid(format!(
            "a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Makes an administrator (the first one from the command line), audited
/// as `origin`.
///
/// # Errors
/// A bad name, role or password; a taken name; the store.
pub async fn create(
    store: &Store,
    sealer: &SecretBox,
    origin: &Origin,
    name: &str,
    role: Role,
    password: &str,
) -> Result<Created, AdminError> {
    crate::model::check_name("name", name).map_err(|e| AdminError::Invalid(e.to_string()))?;
    check_password(password)?;
    let id = crate::store::new_id("adm");
    let hash = {
        let p = password.to_string();
        tokio::task::spawn_blocking(move || crate::auth::hash_secret(&p))
            .await
            .map_err(|e| AdminError::Invalid(e.to_string()))?
    };
    let secret: [u8; 20] = rand::random();
    let sealed = sealer.seal(&secret, &id);
    let mut tx = store.db.begin_write().await?;
    let seq = crate::store::bump_counter(&mut tx, "audit_seq").await?;
    let taken: Option<String> = sqlx::query_scalar("SELECT id FROM admins WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .ctx("look an administrator up")?;
    if taken.is_some() {
        return Err(AdminError::NameTaken(name.into()));
    }
    sqlx::query(
        "INSERT INTO admins (id, name, role, password_hash, totp_sealed, totp_last_step, disabled, created_at) VALUES ($1, $2, $3, $4, $5, 0, 0, $6)",
    )
    .bind(&id)
    .bind(name)
    .bind(role.as_str())
    .bind(&hash)
    .bind(&sealed)
    .bind(crate::now())
    .execute(&mut *tx)
    .await
    .ctx("add an administrator")?;
    let revision = crate::store::counter(&mut tx, "revision").await?;
    crate::store::audit_entry(
        &mut tx,
        seq,
        origin,
        "create",
        ("admin", &id, name),
        (
            None,
            Some(&serde_json::json!({"name": name, "role": role.as_str()})),
        ),
        revision,
        Some("password and TOTP secret set (not logged)"),
    )
    .await?;
    tx.commit().await.ctx("commit an administrator")?;
    let secret_base32 = base32(&secret);
    let uri = format!(
        "otpauth://totp/sluice:{name}?secret={secret_base32}&issuer=sluice&algorithm=SHA1&digits=6&period={STEP_SECS}"
    );
    Ok(Created {
        id,
        secret,
        secret_base32,
        uri,
    })
}

/// Why a sign-in failed (the answer to the browser is the same for all of
/// them but `Busy` and `Limited`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigninError {
    /// No administrator of that name (nothing is recorded: anyone can
    /// send names before signing in).
    Unknown,
    /// Wrong password, disabled.
    Refused,
    /// The right password with a wrong or used code (said as `Refused`
    /// to the browser; logged and audited apart: a stolen password).
    WrongCode,
    /// Locked after too many failures in a row.
    Locked,
    /// Too many password checks are waiting.
    Busy,
}

/// Checks a sign-in: the password (always hashed, also for an unknown
/// name), then the code, whose step must be later than the last one
/// accepted (taken atomically: a code replayed, even at the same time on
/// another controller, is refused).
///
/// # Errors
/// [`SigninError`].
pub async fn verify(
    store: &Store,
    hasher: &crate::auth::Hasher,
    sealer: &SecretBox,
    name: &str,
    password: &str,
    code: &str,
) -> Result<Admin, SigninError> {
    let row = sqlx::query(
        "SELECT id, role, password_hash, totp_sealed, disabled, locked_until FROM admins WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&store.db.pool)
    .await
    .map_err(|_| SigninError::Busy)?;
    let hashes = row
        .as_ref()
        .map(|r| vec![r.get::<String, _>(2)])
        .unwrap_or_default();
    let ok = hasher
        .verify(password.chars().take(MAX_PASSWORD).collect(), hashes)
        .await
        .map_err(|_| SigninError::Busy)?;
    let Some(row) = row else {
        return Err(SigninError::Unknown);
    };
    let id: String = row.get(0);
    let now = crate::now();
    if row.get::<i64, _>(5) > now {
        return Err(SigninError::Locked);
    }
    // Every candidate code is computed, whatever the password gave, so
    // that a wrong code takes as long as a wrong password.
    let secret = sealer.open(&row.get::<String, _>(3), &id);
    let step = secret.as_deref().and_then(|s| matching_step(s, code, now));
    if !ok || row.get::<i64, _>(4) != 0 || step.is_none() {
        // Failures in a row, in the store: after MAX_FAILURES the account
        // is locked for LOCK_SECS, on every controller of the store.
        let _ = sqlx::query(
            "UPDATE admins SET failures = failures + 1, locked_until = CASE WHEN failures + 1 >= $1 THEN $2 ELSE locked_until END WHERE id = $3",
        )
        .bind(MAX_FAILURES)
        .bind(now + LOCK_SECS)
        .bind(&id)
        .execute(&store.db.pool)
        .await;
        return Err(if ok && step.is_none() {
            SigninError::WrongCode
        } else {
            SigninError::Refused
        });
    }
    let step = step.ok_or(SigninError::Refused)?;
    let taken =
        sqlx::query("UPDATE admins SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1")
            .bind(step)
            .bind(&id)
            .execute(&store.db.pool)
            .await
            .map_err(|_| SigninError::Busy)?;
    if taken.rows_affected() != 1 {
        return Err(SigninError::WrongCode);
    }
    let _ = sqlx::query("UPDATE admins SET failures = 0, locked_until = 0 WHERE id = $1")
        .bind(&id)
        .execute(&store.db.pool)
        .await;
    let role = Role::parse(&row.get::<String, _>(1)).ok_or(SigninError::Refused)?;
    Ok(Admin {
        id,
        name: name.to_string(),
        role,
    })
}

fn sha256_hex(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A random 256-bit token, URL-safe base64.
pub fn random_token() -> String {
    let raw: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A session (what a request's cookie names).
#[derive(Clone)]
pub struct Session {
    /// Who.
    pub admin: Admin,
    /// The form token.
    pub csrf: String,
    /// When it ends (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the form token.
        f.debug_struct("Session")
            .field("admin", &self.admin)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Starts a session for `admin`: (cookie token, session).
///
/// # Errors
/// The store.
pub async fn open_session(
    store: &Store,
    admin: Admin,
    address: &str,
) -> Result<(String, Session), DbError> {
    let token = random_token();
    let csrf = random_token();
    let now = crate::now();
    sqlx::query(
        "INSERT INTO admin_sessions (token_hash, admin_id, csrf, created_at, expires_at, address) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(&admin.id)
    .bind(&csrf)
    .bind(now)
    .bind(now + SESSION_SECS)
    .bind(address)
    .execute(&store.db.pool)
    .await
    .ctx("open a session")?;
    // Expired sessions go when new ones come.
    let _ = sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&store.db.pool)
        .await;
    Ok((
        token,
        Session {
            admin,
            csrf,
            expires_at: now + SESSION_SECS,
        },
    ))
}

/// The live session of cookie token `token`, if any (an expired one, or
/// one whose administrator was disabled or removed, is none).
///
/// # Errors
/// The store.
pub async fn session(store: &Store, token: &str) -> Result<Option<Session>, DbError> {
    if token.len() > 64 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT a.id, a.name, a.role, s.csrf, s.expires_at FROM admin_sessions s JOIN admins a ON a.id = s.admin_id WHERE s.token_hash = $1 AND s.expires_at > $2 AND a.disabled = 0",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(crate::now())
    .fetch_optional(&store.db.pool)
    .await
    .ctx("look a session up")?;
    Ok(row.and_then(|r| {
        Some(Session {
            admin: Admin {
                id: r.get(0),
                name: r.get(1),
                role: Role::parse(&r.get::<String, _>(2))?,
            },
            csrf: r.get(3),
            expires_at: r.get(4),
        })
    }))
}

/// Ends the session of cookie token `token`.
///
/// # Errors
/// The store.
pub async fn close_session(store: &Store, token: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
        .bind(sha256_hex(token.as_bytes()))
        .execute(&store.db.pool)
        .await
        .ctx("close a session")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vectors_and_the_window() {
        // RFC 6238 appendix B, SHA1, secret "12345678901234567890": the
        // eight-digit codes' last six digits.
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                code_at(secret, t / STEP_SECS).as_deref(),
                Some(code),
                "t={t}"
            );
            assert_eq!(matching_step(secret, code, t), Some(t / STEP_SECS));
            // One step either side, not two.
            assert_eq!(
                matching_step(secret, code, t + STEP_SECS),
                Some(t / STEP_SECS)
            );
            assert_eq!(matching_step(secret, code, t + 2 * STEP_SECS + 1), None);
        }
        assert_eq!(matching_step(secret, "28708", 59), None);
        assert_eq!(matching_step(secret, "28708x", 59), None);
    }

    #[test]
    fn sealed_secrets_open_only_for_their_owner_and_key() {
        let a = SecretBox::from_ca_key(b"key one");
        let b = SecretBox::from_ca_key(b"key two");
        let s = a.seal(b"secret", "adm_1");
        assert_eq!(a.open(&s, "adm_1").as_deref(), Some(&b"secret"[..]));
        assert_eq!(a.open(&s, "adm_2"), None);
        assert_eq!(b.open(&s, "adm_1"), None);
        assert_eq!(a.open("not base64!", "adm_1"), None);
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }
}

/// An audit entry for a sign-in, a refusal or a sign-out (`detail` says
/// which; never a password or a code).
pub async fn audit_session(store: &Store, origin: &Origin, action: &str, name: &str, detail: &str) {
    let r = async {
        let mut tx = store.db.begin_write().await?;
        let seq = crate::store::bump_counter(&mut tx, "audit_seq").await?;
        let revision = crate::store::counter(&mut tx, "revision").await?;
        crate::store::audit_entry(
            &mut tx,
            seq,
            origin,
            action,
            ("admin_session", name, name),
            (None, None),
            revision,
            Some(detail),
        )
        .await?;
        tx.commit().await.ctx("commit an audit entry")?;
        Ok::<(), DbError>(())
    }
    .await;
    if let Err(e) = r {
        log::warn!("audit: {e}");
    }
}
