//! The admin API: JSON over HTTPS under `/api/v1/`, the token endpoint
//! (`/oauth/token`) and the API's description (`/openapi.json`).
//!
//! Handlers are thin: they authenticate ([`Caller`]), check the scope,
//! parse (strictly: unknown fields and parameters are errors) and call the
//! store. Every error is a problem document ([`Problem`]). Objects carry an
//! `ETag` (their version); `If-Match` makes a write conditional (412 when
//! the object changed); `PATCH` (JSON merge patch) is conditional on the
//! version it read even without one.
use std::{net::SocketAddr, num::NonZeroU32, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use governor::{Quota, RateLimiter, clock::Clock as _};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    auth::{Hasher, Keys, Scope},
    model::{
        ApiClient, AppProfile, BypassList, Edge, ForwardingProfile, Gateway, Group, Identity, Kind,
        Spec, Tenant, User,
    },
    store::{AuditQuery, Extra, ListQuery, Op, Origin, Record, Store},
};

pub mod oauth;
pub mod problem;

pub use problem::Problem;

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// Most secrets one API client holds at once.
pub const MAX_SECRETS: usize = 5;

type Limiter = governor::DefaultKeyedRateLimiter<String>;

/// What the handlers share.
pub struct App {
    /// The store.
    pub store: Store,
    /// The CA (enrolment signs with it).
    pub ca: Arc<crate::pki::Ca>,
    /// This controller's URL (the tokens' issuer).
    pub url: String,
    /// Its agent listener's URL (what enrolled nodes are told).
    pub agent_url: String,
    snapshot: tokio::sync::Mutex<Option<(i64, Arc<crate::compile::Org>)>>,
    /// Token keys.
    pub keys: Keys,
    /// Secret verification.
    pub hasher: Hasher,
    /// Per API client.
    pub limiter: Limiter,
    /// The token endpoint, per address and per client id.
    pub token_limiter: Limiter,
    /// `/openapi.json`, made once.
    pub openapi: Bytes,
    /// Seals administrators' TOTP secrets.
    pub sealer: crate::admins::SecretBox,
    /// Portal sign-ins, per account name.
    pub signin_account: Limiter,
    /// The portal's password checks (apart from the token endpoint's, so
    /// that a flood of either does not starve the other).
    pub portal_hasher: Hasher,
    /// Portal sign-ins, per address (an IPv6 /64 as one).
    pub signin_address: Limiter,
    /// The directory groups are synced from, if any.
    pub directory: Option<crate::directory::DirectoryConfig>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// The shared state, with `per_second`/`burst` per API client and
    /// `token_per_minute` token requests per address or client id.
    pub fn new(
        store: Store,
        keys: Keys,
        ca: Arc<crate::pki::Ca>,
        urls: (String, String),
        limits: (u32, u32, u32),
    ) -> App {
        let (per_second, burst, token_per_minute) = limits;
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
        App {
            store,
            url: urls.0,
            agent_url: urls.1,
            snapshot: tokio::sync::Mutex::new(None),
            keys,
            hasher: Hasher::new(2),
            limiter: RateLimiter::keyed(Quota::per_second(nz(per_second)).allow_burst(nz(burst))),
            token_limiter: RateLimiter::keyed(
                Quota::per_minute(nz(token_per_minute)).allow_burst(nz(token_per_minute)),
            ),
            openapi: Bytes::from(
                serde_json::to_vec_pretty(&crate::openapi::document()).expect("serialises"),
            ),
            sealer: ca.secret_box(),
            signin_account: RateLimiter::keyed(Quota::per_minute(nz(10)).allow_burst(nz(10))),
            signin_address: RateLimiter::keyed(Quota::per_minute(nz(30)).allow_burst(nz(30))),
            directory: None,
            portal_hasher: Hasher::new(1),
            ca,
        }
    }

    /// The organisation at the current revision, read and typed once per
    /// revision however many nodes ask.
    pub async fn snapshot(&self) -> Result<(i64, Arc<crate::compile::Org>), Problem> {
        let current = *self.store.watch_revision().borrow();
        let mut cache = self.snapshot.lock().await;
        if let Some((r, org)) = cache.as_ref()
            && *r >= current
        {
            return Ok((*r, org.clone()));
        }
        let fresh = crate::nodes::load_snapshot(self).await?;
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets rate-limit state of keys idle long enough to be full again
    /// (bounds the limiters' memory; called every minute).
    pub fn trim_limiters(&self) {
        self.limiter.retain_recent();
        self.token_limiter.retain_recent();
        self.signin_account.retain_recent();
        self.signin_address.retain_recent();
        self.signin_account.shrink_to_fit();
        self.signin_address.shrink_to_fit();
        self.limiter.shrink_to_fit();
        self.token_limiter.shrink_to_fit();
    }
}

/// Seconds until `limiter` lets `key` through, if it does not now.
pub(crate) fn limited(limiter: &Limiter, key: &str) -> Option<u64> {
    match limiter.check_key(&key.to_string()) {
        Ok(()) => None,
        Err(not_until) => {
            let clock = governor::clock::DefaultClock::default();
            Some(not_until.wait_time_from(clock.now()).as_secs().max(1))
        }
    }
}

/// The peer of a connection (the server inserts it into every request).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

fn peer_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<Peer>()
        .map_or_else(|| "unknown".into(), |p| p.0.ip().to_string())
}

/// An authenticated caller: an API client and the scope of its token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's id.
    pub client_id: String,
    /// Its name.
    pub name: String,
    /// The strongest scope the token grants.
    pub scope: Scope,
    /// For the audit log.
    pub origin: Origin,
}

impl Caller {
    /// 403 unless the token grants `need`.
    pub fn require(&self, need: Scope) -> Result<(), Problem> {
        if self.scope >= need {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs scope `{}`; the token grants `{}`",
                need.as_str(),
                self.scope.as_str()
            )))
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Problem> {
        let address = peer_of(parts);
        let challenge = "Bearer realm=\"sluice\"";
        let Some(h) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthorized(
                "no access token: send `Authorization: Bearer <token>` (POST /oauth/token gives one)",
                challenge,
            ));
        };
        let token = h
            .to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                Problem::unauthorized(
                    "the Authorization header is not `Bearer <token>`",
                    challenge,
                )
            })?;
        let (claims, name) = app.keys.verify(token, &app.store).await.map_err(|e| {
            if let crate::auth::TokenError::Db(e) = &e {
                return Problem::internal(e);
            }
            log::info!("admin API: {address}: refused a token: {e}");
            Problem::unauthorized(
                "the access token is invalid, expired or revoked",
                "Bearer realm=\"sluice\", error=\"invalid_token\"",
            )
        })?;
        if let Some(wait) = limited(&app.limiter, &claims.client_id) {
            return Err(Problem::too_many(wait));
        }
        let scope = crate::auth::strongest(&claims.scope)
            .ok_or_else(|| Problem::forbidden("the token grants no scope"))?;
        Ok(Caller {
            origin: Origin {
                actor: format!("client:{}", claims.client_id),
                address,
            },
            client_id: claims.client_id,
            name,
            scope,
        })
    }
}

/// Parses a JSON body strictly: `application/json` (or `accept`), at most
/// [`MAX_BODY`] bytes (the server enforces it), the type's own checks.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    accept: &[&str],
) -> Result<T, Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !accept.contains(&mime.as_str()) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("send {}", accept.join(" or ")),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            "Malformed body",
            format!("the body is not a valid object of this kind: {e}"),
        )
    })
}

/// Parses the query string strictly (unknown parameters are errors).
pub(crate) fn query<T: DeserializeOwned + Default>(parts: Option<&str>) -> Result<T, Problem> {
    match parts {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| Problem::bad_request(format!("query parameters: {e}"))),
    }
}

/// `If-Match`: `"3"`, `W/"3"` or `*` (None: unconditional).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| Problem::bad_request("If-Match is not text"))?
        .trim();
    if s == "*" {
        return Ok(None);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| Problem::bad_request("If-Match: expected an ETag such as \"3\""))
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a header value")
}

fn record_response(status: StatusCode, r: &Record, location: Option<String>) -> Response {
    let mut resp = (status, axum::Json(r)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(r.version));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

/// A list's query parameters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size: 1 to 5,000 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Exactly this name.
    pub name: Option<String>,
    /// Names containing this (case-insensitive).
    pub name_contains: Option<String>,
}

/// Server-managed fields of a stored body, dropped before a merge patch
/// and kept across a replacement.
fn server_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::ApiClient => &["generation"],
        _ => &[],
    }
}

/// The body to store for `spec` (the store sets the server-managed
/// fields, an API client's `generation`, in its transaction).
fn stored_body(_kind: Kind, spec: Value, _old: Option<&Value>) -> Value {
    spec
}

async fn list<S: Spec>(
    State(app): State<Arc<App>>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let p: ListParams = query(uri.query())?;
    let page = app
        .store
        .list(
            S::KIND,
            &ListQuery {
                limit: p.limit,
                after: p.after,
                name: p.name,
                name_contains: p.name_contains,
            },
        )
        .await?;
    Ok(axum::Json(page).into_response())
}

async fn read<S: Spec>(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let r = app.store.get(S::KIND, &id).await?;
    Ok(record_response(StatusCode::OK, &r, None))
}

fn checked<S: Spec>(headers: &HeaderMap, body: &Bytes, accept: &[&str]) -> Result<Value, Problem> {
    let spec: S = json_body(headers, body, accept)?;
    spec.validate().map_err(crate::store::StoreError::from)?;
    Ok(serde_json::to_value(&spec).expect("specs serialise"))
}

async fn create<S: Spec>(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(S::KIND.write_scope())?;
    let v = checked::<S>(&headers, &body, &["application/json"])?;
    let w = app
        .store
        .write(
            &caller.origin,
            "create",
            Op::Create {
                kind: S::KIND,
                body: stored_body(S::KIND, v, None),
            },
            Vec::new(),
        )
        .await?;
    let r = w.record.expect("a creation returns the object");
    let loc = format!("/api/v1/{}/{}", S::KIND.path(), r.id);
    Ok(record_response(StatusCode::CREATED, &r, Some(loc)))
}

async fn replace<S: Spec>(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(S::KIND.write_scope())?;
    let v = checked::<S>(&headers, &body, &["application/json"])?;
    let expected = if_match(&headers)?;
    let old = app.store.get(S::KIND, &id).await?;
    let w = app
        .store
        .write(
            &caller.origin,
            "update",
            Op::Replace {
                kind: S::KIND,
                id,
                body: stored_body(S::KIND, v, Some(&old.body)),
                // Unconditional replacements still must not lose the
                // server-managed fields read above.
                if_match: Some(expected.unwrap_or(old.version)),
            },
            Vec::new(),
        )
        .await?;
    Ok(record_response(
        StatusCode::OK,
        &w.record.expect("updated"),
        None,
    ))
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            let t = target.as_object_mut().expect("an object now");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

async fn patch<S: Spec>(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(S::KIND.write_scope())?;
    let p: Value = json_body(
        &headers,
        &body,
        &["application/merge-patch+json", "application/json"],
    )?;
    if !p.is_object() {
        return Err(Problem::bad_request("a merge patch is a JSON object"));
    }
    let expected = if_match(&headers)?;
    let old = app.store.get(S::KIND, &id).await?;
    let mut merged = old.body.clone();
    if let Value::Object(m) = &mut merged {
        for f in server_fields(S::KIND) {
            m.remove(*f);
        }
    }
    merge_patch(&mut merged, &p);
    let spec: S = serde_json::from_value(merged).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            "Malformed body",
            format!("the patched object is not valid: {e}"),
        )
    })?;
    spec.validate().map_err(crate::store::StoreError::from)?;
    let v = serde_json::to_value(&spec).expect("specs serialise");
    let w = app
        .store
        .write(
            &caller.origin,
            "update",
            Op::Replace {
                kind: S::KIND,
                id,
                body: stored_body(S::KIND, v, Some(&old.body)),
                if_match: Some(expected.unwrap_or(old.version)),
            },
            Vec::new(),
        )
        .await?;
    Ok(record_response(
        StatusCode::OK,
        &w.record.expect("updated"),
        None,
    ))
}

async fn delete<S: Spec>(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.require(S::KIND.write_scope())?;
    let expected = if_match(&headers)?;
    app.store
        .write(
            &caller.origin,
            "delete",
            Op::Delete {
                kind: S::KIND,
                id,
                if_match: expected,
            },
            Vec::new(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewSecret {
    /// The secret's id (to remove it later).
    pub id: String,
    /// The secret: shown now and never again (stored hashed).
    pub secret: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// An API client just made, with its first secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    /// The client.
    #[serde(flatten)]
    #[schema(inline)]
    pub client: Record,
    /// Its first secret.
    pub client_secret: NewSecret,
}

/// A secret's metadata (the secret itself is never shown again).
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretInfo {
    /// Id.
    pub id: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// Whether it has.
    pub expired: bool,
}

/// Parameters of a new secret.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretParams {
    /// Days until it expires: 1 to 730 (default 90).
    pub expires_in_days: Option<u32>,
}

fn secret_expiry(p: &SecretParams) -> Result<i64, Problem> {
    let days = p.expires_in_days.unwrap_or(90);
    if !(1..=730).contains(&days) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            "expires_in_days: 1 to 730",
        )
        .with_field("expires_in_days"));
    }
    Ok(crate::now() + i64::from(days) * 86400)
}

async fn create_client(
    State(app): State<Arc<App>>,
    caller: Caller,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Scope::Admin)?;
    let params: SecretParams = query(uri.query())?;
    let expires_at = secret_expiry(&params)?;
    let v = checked::<ApiClient>(&headers, &body, &["application/json"])?;
    let (secret, hash) = tokio::task::spawn_blocking(crate::auth::new_secret)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let sid = crate::store::new_id("cs");
    let w = app
        .store
        .write(
            &caller.origin,
            "create",
            Op::Create {
                kind: Kind::ApiClient,
                body: stored_body(Kind::ApiClient, v, None),
            },
            vec![Extra::AddSecret {
                id: sid.clone(),
                hash,
                expires_at,
            }],
        )
        .await?;
    let r = w.record.expect("created");
    let loc = format!("/api/v1/api-clients/{}", r.id);
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(CreatedClient {
            client: r.clone(),
            client_secret: NewSecret {
                id: sid,
                secret,
                expires_at: crate::rfc3339(expires_at),
            },
        }),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag(r.version));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(l) = HeaderValue::from_str(&loc) {
        h.insert(header::LOCATION, l);
    }
    Ok(resp)
}

async fn list_secrets(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    app.store.get(Kind::ApiClient, &id).await?;
    let now = crate::now();
    let items: Vec<SecretInfo> = app
        .store
        .secrets(&id)
        .await?
        .into_iter()
        .map(|(sid, _, exp)| SecretInfo {
            id: sid,
            expires_at: crate::rfc3339(exp),
            expired: exp <= now,
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })).into_response())
}

async fn add_secret(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Scope::Admin)?;
    let params: SecretParams = if body.is_empty() {
        SecretParams::default()
    } else {
        json_body(&headers, &body, &["application/json"])?
    };
    let expires_at = secret_expiry(&params)?;
    let old = app.store.get(Kind::ApiClient, &id).await?;
    if app.store.secrets(&id).await?.len() >= MAX_SECRETS {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "too-many-secrets",
            "Too many secrets",
            format!("a client holds at most {MAX_SECRETS} secrets: remove one first"),
        ));
    }
    let (secret, hash) = tokio::task::spawn_blocking(crate::auth::new_secret)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let sid = crate::store::new_id("cs");
    let mut spec = old.body.clone();
    if let Value::Object(m) = &mut spec {
        m.remove("generation");
    }
    app.store
        .write(
            &caller.origin,
            "add_secret",
            Op::Replace {
                kind: Kind::ApiClient,
                id: id.clone(),
                body: stored_body(Kind::ApiClient, spec, Some(&old.body)),
                if_match: Some(old.version),
            },
            vec![Extra::AddSecret {
                id: sid.clone(),
                hash,
                expires_at,
            }],
        )
        .await?;
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(NewSecret {
            id: sid,
            secret,
            expires_at: crate::rfc3339(expires_at),
        }),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn remove_secret(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, sid)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller.require(Scope::Admin)?;
    let old = app.store.get(Kind::ApiClient, &id).await?;
    let mut spec = old.body.clone();
    if let Value::Object(m) = &mut spec {
        m.remove("generation");
    }
    app.store
        .write(
            &caller.origin,
            "remove_secret",
            Op::Replace {
                kind: Kind::ApiClient,
                id,
                body: stored_body(Kind::ApiClient, spec, Some(&old.body)),
                if_match: Some(old.version),
            },
            vec![Extra::RemoveSecret { id: sid }],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Read-only maintenance mode.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Whether writes are refused.
    pub on: bool,
    /// Why (shown to everyone whose write is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

async fn get_maintenance(State(app): State<Arc<App>>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let (on, reason) = app.store.maintenance().await?;
    Ok(axum::Json(Maintenance { on, reason }).into_response())
}

async fn put_maintenance(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Scope::Admin)?;
    let m: Maintenance = json_body(&headers, &body, &["application/json"])?;
    if let Some(r) = &m.reason
        && (r.len() > 512 || r.chars().any(char::is_control))
    {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            "reason: at most 512 bytes, no control characters",
        )
        .with_field("reason"));
    }
    app.store
        .set_maintenance(&caller.origin, m.on, m.reason.as_deref())
        .await?;
    Ok(axum::Json(m).into_response())
}

/// `GET /api/v1/directory`: directory group sync's status (the last
/// result, the next sync time).
async fn directory_status(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let s = crate::directory::status(&app.store, app.directory.is_some()).await?;
    Ok(axum::Json(s).into_response())
}

/// `POST /api/v1/directory/sync` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncParams {
    /// Take the sync even if it removes more than half of the directory's
    /// groups and users.
    force: Option<bool>,
}

/// `POST /api/v1/directory/sync`: sync now (202; the status shows when it
/// ran and what it did).
async fn directory_sync(
    State(app): State<Arc<App>>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    caller.require(Scope::Policy)?;
    let p: SyncParams = query(uri.query())?;
    if app.directory.is_none() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-directory",
            "No directory",
            "no [directory] is configured on this controller",
        ));
    }
    crate::directory::request(&app.store, p.force.unwrap_or(false)).await?;
    log::info!("directory sync asked for by {}", caller.origin.actor);
    let s = crate::directory::status(&app.store, true).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(s)).into_response())
}

/// The audit log's query parameters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Page size: 1 to 5,000 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next`: entries before this sequence number.
    pub before: Option<i64>,
    /// Who (`client:<id>`, `local:<user>`, ...).
    pub actor: Option<String>,
    /// The object's kind (`app_profile`, ...).
    pub kind: Option<String>,
    /// The object's id.
    pub object_id: Option<String>,
    /// `create`, `update`, `delete`, ...
    pub action: Option<String>,
    /// At or after (RFC 3339).
    pub since: Option<String>,
    /// Before (RFC 3339).
    pub until: Option<String>,
}

async fn audit(
    State(app): State<Arc<App>>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let p: AuditParams = query(uri.query())?;
    let time = |f: &str, v: &Option<String>| -> Result<Option<i64>, Problem> {
        v.as_deref()
            .map(|s| {
                crate::parse_rfc3339(s).ok_or_else(|| {
                    Problem::bad_request(format!(
                        "{f}: expected RFC 3339, e.g. 2026-12-07T10:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let page = app
        .store
        .audit(&AuditQuery {
            limit: p.limit,
            before: p.before,
            actor: p.actor,
            kind: p.kind,
            object_id: p.object_id,
            action: p.action,
            since: time("since", &p.since)?,
            until: time("until", &p.until)?,
        })
        .await?;
    Ok(axum::Json(page).into_response())
}

/// The controller's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// The policy revision.
    pub revision: i64,
    /// Read-only maintenance.
    pub maintenance: Maintenance,
    /// The store's schema version.
    pub schema_version: i64,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// This controller's version.
    pub version: String,
}

async fn status(State(app): State<Arc<App>>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let (on, reason) = app.store.maintenance().await?;
    Ok(axum::Json(Status {
        revision: app.store.revision().await?,
        maintenance: Maintenance { on, reason },
        schema_version: app.store.db.schema_version().await?,
        database: match app.store.db.backend {
            crate::db::Backend::Sqlite => "sqlite".into(),
            crate::db::Backend::Postgres => "postgres".into(),
        },
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .into_response())
}

async fn openapi(State(app): State<Arc<App>>) -> Response {
    let mut r = app.openapi.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn objects<S: Spec>(r: Router<Arc<App>>) -> Router<Arc<App>> {
    let base = format!("/api/v1/{}", S::KIND.path());
    let r = if S::KIND == Kind::ApiClient {
        r.route(&base, get(list::<S>).post(create_client))
    } else {
        r.route(&base, get(list::<S>).post(create::<S>))
    };
    r.route(
        &format!("{base}/{{id}}"),
        get(read::<S>)
            .put(replace::<S>)
            .patch(patch::<S>)
            .delete(delete::<S>),
    )
}

/// The agent listener's router (client certificates required).
pub fn agent_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/agent/v1/policy", get(crate::nodes::poll_policy))
        .route("/agent/v1/report", post(crate::nodes::report))
        .fallback(|uri: axum::http::Uri| async move {
            Problem::not_found(format!("no such resource: {}", uri.path()))
        })
        .with_state(app)
}

/// The router of the whole API.
pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new();
    r = objects::<Tenant>(r);
    r = objects::<Edge>(r);
    r = objects::<Gateway>(r);
    r = objects::<AppProfile>(r);
    r = objects::<ForwardingProfile>(r);
    r = objects::<BypassList>(r);
    r = objects::<Group>(r);
    r = objects::<User>(r);
    r = objects::<Identity>(r);
    r = objects::<ApiClient>(r);
    r.route(
        "/api/v1/api-clients/{id}/secrets",
        get(list_secrets).post(add_secret),
    )
    .route(
        "/api/v1/api-clients/{id}/secrets/{secret_id}",
        axum::routing::delete(remove_secret),
    )
    .route(
        "/api/v1/maintenance",
        get(get_maintenance).put(put_maintenance),
    )
    .route("/api/v1/audit", get(audit))
    .route("/api/v1/directory", get(directory_status))
    .route("/api/v1/directory/sync", post(directory_sync))
    .route("/api/v1/status", get(status))
    .route("/api/v1/nodes", get(crate::nodes::dashboard))
    .route(
        "/api/v1/{collection}/{id}/enrolment",
        post(crate::nodes::make_enrolment),
    )
    .route(
        "/api/v1/{collection}/{id}/revoke",
        post(crate::nodes::revoke),
    )
    .route("/enrol", post(crate::nodes::enrol))
    .route("/oauth/token", post(oauth::token))
    .route("/openapi.json", get(openapi))
    .merge(crate::portal::routes())
    .fallback(|m: Method, uri: axum::http::Uri| async move {
        Problem::not_found(format!("no such resource: {m} {}", uri.path()))
    })
    .method_not_allowed_fallback(|m: Method| async move {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{m} is not allowed here"),
        )
    })
    .with_state(app)
}
