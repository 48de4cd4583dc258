//! The token endpoint: OAuth 2.0 client credentials (RFC 6749 §4.4) with
//! `client_secret_basic` or `client_secret_post` (§2.3.1), answering with
//! an RFC 9068 JWT access token, or an error per §5.2.
//!
//! It is reachable before authentication, so it is bounded: the server caps
//! the body, each address and each client id gets a few attempts a minute
//! (429 beyond), secret checks run a few at a time, and an unknown client
//! costs as much as a wrong secret.
use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{App, Peer, limited};
use crate::{auth::Scope, model::Kind};

/// A successful answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scopes granted.
    pub scope: String,
}

/// An error answer (RFC 6749 §5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`.
    pub error: &'static str,
    /// For a person.
    pub error_description: String,
}

fn error(status: StatusCode, error: &'static str, description: impl Into<String>) -> Response {
    let mut r = (
        status,
        axum::Json(TokenError {
            error,
            error_description: description.into(),
        }),
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn invalid_client(basic: bool) -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sluice\""),
        );
    }
    r
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_decode(s: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={s}")).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

/// `POST /oauth/token`.
#[allow(
    clippy::too_many_lines,
    reason = "the grant's checks in the order RFC 6749 lists them"
)]
pub async fn token(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let address = peer.map_or_else(|| "unknown".into(), |p| p.0.0.ip().to_string());
    // Limits count an address (an IPv6 /64 as one), and a client id per
    // address: failing for a client from one place does not lock its
    // owner out from another.
    let key = peer.map_or_else(
        || "unknown".into(),
        |p| crate::server::address_key(p.0.0.ip()).to_string(),
    );
    if let Some(wait) = limited(&app.token_limiter, &format!("addr:{key}")) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request",
            format!("too many token requests from this address: retry after {wait} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send application/x-www-form-urlencoded",
        );
    }
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed form body",
        );
    };
    // §3.2: no parameter more than once; an empty one counts as absent.
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &params {
        if !seen.insert(k.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("parameter `{k}` is given more than once"),
            );
        }
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    match get("grant_type").as_deref() {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (id, secret, by_basic) = match (basic, get("client_id"), get("client_secret")) {
        (Some(h), _, post_secret) => {
            if post_secret.is_some() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method, not two",
                );
            }
            let creds = h
                .split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
                .and_then(|(_, b)| STANDARD.decode(b.trim()).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    let (i, p) = s.split_once(':')?;
                    Some((form_decode(i)?, form_decode(p)?))
                });
            match creds {
                Some((i, p)) => (i, p, true),
                None => return invalid_client(true),
            }
        }
        (None, Some(i), Some(p)) => (i, p, false),
        _ => return invalid_client(false),
    };
    if id.len() > 64 || secret.len() > 256 {
        return invalid_client(by_basic);
    }
    if let Some(wait) = limited(&app.token_limiter, &format!("client:{id}@{key}")) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request",
            format!("too many token requests for this client: retry after {wait} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let client = match app.store.get(Kind::ApiClient, &id).await {
        Ok(r) => Some(r.body),
        Err(crate::store::StoreError::NotFound { .. }) => None,
        Err(e) => return super::Problem::from(e).into_response(),
    };
    let now = crate::now();
    let hashes = match &client {
        Some(_) => match app.store.secrets(&id).await {
            Ok(s) => s
                .into_iter()
                .filter(|(_, _, exp)| *exp > now)
                .map(|(_, h, _)| h)
                .collect(),
            Err(e) => return super::Problem::from(e).into_response(),
        },
        None => Vec::new(),
    };
    match app.hasher.verify(secret, hashes).await {
        Ok(true) => {}
        Ok(false) => {
            log::info!("token endpoint: {address}: client {id:?} failed to authenticate");
            return invalid_client(by_basic);
        }
        Err(crate::auth::Busy) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many token requests at once: retry in a second",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
            return r;
        }
    }
    let client = client.expect("a verified secret has a client");
    if client.get("status").and_then(Value::as_str) != Some("active") {
        return error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client is inactive",
        );
    }
    let allowed: Vec<Scope> = client
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().and_then(Scope::parse))
                .collect()
        })
        .unwrap_or_default();
    let Some(max) = allowed.iter().copied().max() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "this client has no scopes",
        );
    };
    let scope = match get("scope") {
        None => allowed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        Some(asked) => {
            let mut out = Vec::new();
            for s in asked.split(' ').filter(|s| !s.is_empty()) {
                match Scope::parse(s) {
                    Some(x) if x <= max => {
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_scope",
                            format!("scope `{s}` is unknown or beyond this client's"),
                        );
                    }
                }
            }
            if out.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "no scope asked for",
                );
            }
            out.join(" ")
        }
    };
    let lifetime = client
        .get("token_lifetime_minutes")
        .and_then(Value::as_i64)
        .unwrap_or(60)
        .clamp(1, 1440)
        * 60;
    let generation = client
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let (token, _) = app.keys.issue(&id, &scope, lifetime, generation);
    log::info!(
        "token endpoint: {address}: issued a token to client {id:?} ({scope}, {lifetime} s)"
    );
    let mut r = axum::Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: lifetime,
        scope,
    })
    .into_response();
    no_store(r.headers_mut());
    r
}
