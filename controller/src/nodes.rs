//! Gateways and edges: enrolment, the agent API they hold open, and what
//! they report (the dashboard's data).
//!
//! - An admin makes a one-time enrolment token for a gateway or an edge
//!   (`POST /api/v1/gateways/{id}/enrolment`): 256 random bits shown once,
//!   stored as their SHA-256, with an expiry.
//! - The box posts the token and a certificate signing request to
//!   `POST /enrol` (before authentication: rate-limited per address, the
//!   request bounded). The CA signs a certificate for the object's name
//!   from the request's public key (the private key never leaves the box),
//!   the token is used up in the same transaction, and the box gets its
//!   certificate and the CA.
//! - From then on the box speaks to the agent listener, which requires a
//!   client certificate from the CA and, for every request, looks its
//!   fingerprint up: a revoked certificate (`POST .../revoke`, or the object
//!   deleted) is refused at once. `GET /agent/v1/policy?after=N` answers
//!   with the compiled policy once the revision passes N (a long poll of at
//!   most 60 s on one kept-alive connection); `POST /agent/v1/report` takes
//!   the applied revision, health, tunnels and counters.
use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row as _;
use utoipa::ToSchema;

use crate::{
    api::{App, Caller, Peer, Problem, json_body, limited, query},
    auth::Scope,
    compile::Org,
    db::Ctx as _,
    model::Kind,
    store::{Extra, Op, Origin},
};

/// Longest a long poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Largest report a node may send.
pub const MAX_REPORT: usize = 64 * 1024;
/// Largest certificate signing request.
pub const MAX_CSR: usize = 16 * 1024;
/// A node that has not reported for this long is offline.
pub const OFFLINE_AFTER_SECS: i64 = 90;

/// The peer's certificate (DER), inserted by the agent listener.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Arc<Vec<u8>>);

fn sha256_hex(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    d.as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

/// Parameters of a new enrolment token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentParams {
    /// Minutes until it expires: 1 to 10,080 (default 1,440).
    pub expires_in_minutes: Option<u32>,
}

/// A new enrolment token (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolmentToken {
    /// The token: `sluice gateway --enrol URL --token TOKEN`. After the
    /// dot: the SHA-256 of the controller's CA, which the box checks the
    /// controller's certificate against before it sends anything.
    pub token: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// Where to enrol.
    pub enrol_url: String,
}

/// `POST /api/v1/{gateways,edges}/{id}/enrolment`.
pub async fn make_enrolment(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((path, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Scope::Admin)?;
    let kind = kind_of_path(&path)?;
    let p: EnrolmentParams = if body.is_empty() {
        EnrolmentParams::default()
    } else {
        json_body(&headers, &body, &["application/json"])?
    };
    let minutes = p.expires_in_minutes.unwrap_or(1440);
    if !(1..=10_080).contains(&minutes) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            "expires_in_minutes: 1 to 10080 (a week)",
        )
        .with_field("expires_in_minutes"));
    }
    let raw: [u8; 32] = rand::random();
    // The secret part, then the CA's pin: `sle_<secret>.<sha256 of the
    // CA>` (the whole string is what is hashed and checked).
    let token = format!("sle_{}.{}", B64.encode(raw), app.ca.fingerprint());
    let expires_at = crate::now() + i64::from(minutes) * 60;
    app.store
        .write(
            &caller.origin,
            "enrolment_token",
            Op::Action { kind, id },
            vec![Extra::AddEnrolment {
                token_hash: sha256_hex(token.as_bytes()),
                expires_at,
            }],
        )
        .await?;
    let mut r = (
        StatusCode::CREATED,
        axum::Json(EnrolmentToken {
            token,
            expires_at: crate::rfc3339(expires_at),
            enrol_url: format!("{}/enrol", app.url),
        }),
    )
        .into_response();
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `POST /api/v1/{gateways,edges}/{id}/revoke`: its certificates revoked,
/// its unused tokens withdrawn; it must enrol again.
pub async fn revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((path, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller.require(Scope::Admin)?;
    let kind = kind_of_path(&path)?;
    let w = app
        .store
        .write(
            &caller.origin,
            "revoke",
            Op::Action { kind, id },
            vec![Extra::RevokeCertificates],
        )
        .await?;
    Ok(axum::Json(serde_json::json!({"revoked": true, "revision": w.revision})).into_response())
}

fn kind_of_path(path: &str) -> Result<Kind, Problem> {
    match path {
        "gateways" => Ok(Kind::Gateway),
        "edges" => Ok(Kind::Edge),
        _ => Err(Problem::not_found(format!("no such collection: {path}"))),
    }
}

/// An enrolment request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The one-time token.
    pub token: String,
    /// A PKCS#10 certificate signing request (PEM).
    pub csr: String,
}

/// What an enrolled node gets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    /// `gateway` or `edge`.
    pub kind: String,
    /// Its object's id.
    pub id: String,
    /// Its name (on the certificate).
    pub name: String,
    /// Its certificate (PEM).
    pub certificate: String,
    /// The CA (PEM): what the agent listener's and the edges' certificates
    /// chain to.
    pub ca: String,
    /// The agent listener's URL.
    pub agent_url: String,
}

/// `POST /enrol`.
pub async fn enrol(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let address = peer.map_or_else(|| "unknown".into(), |p| p.0.0.ip().to_string());
    if let Some(wait) = limited(&app.token_limiter, &format!("enrol:{address}")) {
        return Err(Problem::too_many(wait));
    }
    if body.len() > MAX_CSR + 1024 {
        return Err(Problem::bad_request("the enrolment request is too large"));
    }
    let req: EnrolRequest = json_body(&headers, &body, &["application/json"])?;
    let refused = || {
        log::info!("enrol: {address}: refused an enrolment token");
        Problem::unauthorized(
            "the enrolment token is unknown, used or expired",
            "Bearer realm=\"sluice-enrol\"",
        )
    };
    if req.token.len() > 128 {
        return Err(refused());
    }
    let hash = sha256_hex(req.token.as_bytes());
    let row = sqlx::query(
        "SELECT kind, object_id FROM enrolments WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(&hash)
    .bind(crate::now())
    .fetch_optional(&app.store.db.pool)
    .await
    .ctx("read an enrolment")?;
    let Some(row) = row else {
        return Err(refused());
    };
    let kind = Kind::parse(&row.get::<String, _>(0)).ok_or_else(refused)?;
    let id: String = row.get(1);
    let obj = app.store.get(kind, &id).await?;
    let name = obj.body["name"].as_str().unwrap_or("").to_string();
    // An edge's certificate also carries the server names of the tenants
    // that list it (what gateways check it against).
    // Never an address, a wildcard, or a name of this controller's own
    // (an edge's certificate must not pass for the controller: review h31
    // S1; the boxes trust this CA for both).
    let mut names = vec![name.clone()];
    if kind == Kind::Edge {
        let own: Vec<String> = [&app.url, &app.agent_url]
            .iter()
            .filter_map(|u| url_host(u))
            .collect();
        let (_, org) = app.snapshot().await?;
        for t in org.tenants.iter().filter(|t| t.edges.contains(&name)) {
            let n = t.server_name.to_ascii_lowercase();
            if n.parse::<std::net::IpAddr>().is_ok()
                || n.contains('*')
                || own.contains(&n)
                || names.contains(&n)
            {
                log::warn!(
                    "enrol: edge `{name}`: tenant `{}`'s server_name `{}` left off its certificate (an address, a wildcard or this controller's own name)",
                    t.name,
                    t.server_name
                );
                continue;
            }
            names.push(n);
        }
    }
    let issued = app
        .ca
        .sign_node(&req.csr, &names, kind == Kind::Edge)
        .map_err(|e| Problem::bad_request(format!("the certificate signing request: {e}")))?;
    let origin = Origin {
        actor: format!("{}:{name}", kind.as_str()),
        address: address.clone(),
    };
    app.store
        .write(
            &origin,
            "enrol",
            Op::Action {
                kind,
                id: id.clone(),
            },
            vec![
                Extra::UseEnrolment { token_hash: hash },
                Extra::AddCertificate {
                    fingerprint: sha256_hex(&issued.der),
                    serial: issued.serial.clone(),
                    name: name.clone(),
                    not_after: issued.not_after,
                },
            ],
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Enrolment => refused(),
            e => e.into(),
        })?;
    log::info!(
        "enrol: {} `{name}` enrolled from {}",
        kind.as_str(),
        origin.address
    );
    Ok(axum::Json(Enrolled {
        kind: kind.as_str().into(),
        id,
        name,
        certificate: issued.pem,
        ca: app.ca.cert_pem.clone(),
        agent_url: app.agent_url.clone(),
    })
    .into_response())
}

/// The host of an `https://host[:port][/...]` URL, lowercase.
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let hostport = rest.split('/').next()?;
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

/// An enrolled node, authenticated by its certificate on the agent
/// listener (looked up per request: revocation takes effect at once).
#[derive(Debug, Clone)]
pub struct Node {
    /// Gateway or edge.
    pub kind: Kind,
    /// Its object's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

impl FromRequestParts<Arc<App>> for Node {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Problem> {
        let refused = |why: &str| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "not-enrolled",
                "Not enrolled",
                format!("this certificate {why}: enrol again"),
            )
        };
        let cert = parts
            .extensions
            .get::<PeerCert>()
            .ok_or_else(|| refused("is missing"))?;
        let fp = sha256_hex(&cert.0);
        // The object's name now, not the one on the certificate (a renamed
        // gateway's old certificate names another: review h31 S2).
        let row = sqlx::query(
            "SELECT c.kind, c.object_id, o.name, c.revoked_at, c.not_after FROM certificates c JOIN objects o ON o.kind = c.kind AND o.id = c.object_id WHERE c.fingerprint = $1",
        )
        .bind(&fp)
        .fetch_optional(&app.store.db.pool)
        .await
        .ctx("look a certificate up")?
        .ok_or_else(|| refused("was not issued here"))?;
        if row.get::<Option<i64>, _>(3).is_some() {
            return Err(refused("is revoked"));
        }
        if row.get::<i64, _>(4) <= crate::now() {
            return Err(refused("has expired"));
        }
        let kind = Kind::parse(&row.get::<String, _>(0)).ok_or_else(|| refused("is odd"))?;
        Ok(Node {
            kind,
            id: row.get(1),
            name: row.get(2),
        })
    }
}

/// Long-poll parameters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    /// Answer once the revision is above this (default: at once).
    pub after: Option<i64>,
    /// Seconds to wait for that (at most 60; default 30).
    pub wait: Option<u64>,
}

/// A gateway's policy at a revision.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GatewayPolicy {
    /// The revision.
    pub revision: i64,
    /// The gateway's name.
    pub name: String,
    /// The policy sections of its configuration file (TOML): `[policy]`,
    /// `[[identity]]`, `[[rule]]`, `[[profile]]`, `[[tenant]]`,
    /// `[forwarding]`, and `[tunnel_edges]`.
    pub policy: String,
}

/// A gateway an edge serves.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct EdgeGateway {
    /// Its name (as on its certificate).
    pub name: String,
    /// Its LAN prefixes.
    pub prefixes: Vec<String>,
    /// The SHA-256 (hex) of each of its certificates that is neither
    /// revoked nor expired: the edge refuses any other.
    pub certificates: Vec<String>,
}

/// An edge's configuration at a revision.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EdgePolicy {
    /// The revision.
    pub revision: i64,
    /// The edge's name.
    pub name: String,
    /// The gateways it serves, each with its live certificates (none:
    /// not enrolled, or revoked).
    pub gateways: Vec<EdgeGateway>,
}

/// `GET /agent/v1/policy`.
pub async fn poll_policy(
    State(app): State<Arc<App>>,
    node: Node,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    let p: PollParams = query(uri.query())?;
    let mut rx = app.store.watch_revision();
    // A box ahead of the store (restored from an older backup) gets what
    // the store has at once, not a wait for a revision it may never reach.
    if let Some(after) = p.after
        && after <= *rx.borrow()
    {
        let wait = Duration::from_secs(p.wait.unwrap_or(30)).min(MAX_WAIT);
        let moved = matches!(
            tokio::time::timeout(wait, rx.wait_for(|r| *r > after)).await,
            Ok(Ok(_))
        );
        if !moved {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut()
                .insert("x-sluice-revision", HeaderValue::from(*rx.borrow()));
            return Ok(r);
        }
    }
    let (revision, org) = app.snapshot().await?;
    match node.kind {
        Kind::Gateway => {
            let g = org
                .gateways
                .iter()
                .find(|g| g.name == node.name)
                .ok_or_else(|| Problem::not_found("this gateway's object is gone"))?;
            let policy =
                toml::to_string(&org.gateway_policy(g)).map_err(|e| Problem::internal(&e))?;
            Ok(axum::Json(GatewayPolicy {
                revision,
                name: node.name,
                policy,
            })
            .into_response())
        }
        _ => {
            // By the object's current name (review h31 S2): a renamed
            // gateway's certificates, which carry its old name, are listed
            // under its new one, where no edge will match them.
            let rows = sqlx::query(
                "SELECT o.name, c.fingerprint FROM certificates c JOIN objects o ON o.kind = c.kind AND o.id = c.object_id WHERE c.kind = 'gateway' AND c.revoked_at IS NULL AND c.not_after > $1 ORDER BY o.name, c.fingerprint",
            )
            .bind(crate::now())
            .fetch_all(&app.store.db.pool)
            .await
            .ctx("list enrolled gateways")?;
            let mut certs: std::collections::BTreeMap<String, Vec<String>> =
                std::collections::BTreeMap::new();
            for r in rows {
                certs.entry(r.get(0)).or_default().push(r.get(1));
            }
            let gateways = org
                .edge_gateways()
                .into_iter()
                .map(|(name, prefixes)| {
                    // Not enrolled yet (or revoked): no certificate, the
                    // edge refuses it until one is issued.
                    let certificates = certs.remove(&name).unwrap_or_default();
                    EdgeGateway {
                        name,
                        prefixes,
                        certificates,
                    }
                })
                .collect();
            Ok(axum::Json(EdgePolicy {
                revision,
                name: node.name,
                gateways,
            })
            .into_response())
        }
    }
}

/// What a node reports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The revision it runs.
    pub applied_revision: i64,
    /// Its version.
    pub version: String,
    /// `ok`, `degraded`, ...
    pub health: String,
    /// Why the last revision could not be applied, if it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// Its tunnels (free form: tenant, edge, state, RTT).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub tunnels: Vec<Value>,
    /// Counters by name.
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// `POST /agent/v1/report`.
pub async fn report(
    State(app): State<Arc<App>>,
    node: Node,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    if body.len() > MAX_REPORT {
        return Err(Problem::bad_request(format!(
            "a report is at most {MAX_REPORT} bytes"
        )));
    }
    let r: Report = json_body(&headers, &body, &["application/json"])?;
    if r.version.len() > 64
        || r.health.len() > 64
        || r.tunnels.len() > 256
        || r.counters.len() > 256
    {
        return Err(Problem::bad_request("a report field is over its bound"));
    }
    sqlx::query(
        "INSERT INTO node_status (kind, object_id, last_contact, applied_revision, version, report, controller) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kind, object_id) DO UPDATE SET last_contact = $3, applied_revision = $4, version = $5, report = $6, controller = $7",
    )
    .bind(node.kind.as_str())
    .bind(&node.id)
    .bind(crate::now())
    .bind(r.applied_revision)
    .bind(&r.version)
    .bind(serde_json::to_string(&r).expect("serialises"))
    .bind(&app.url)
    .execute(&app.store.db.pool)
    .await
    .ctx("store a report")?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A node on the dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeStatus {
    /// `gateway` or `edge`.
    pub kind: String,
    /// Its object's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it holds a valid certificate.
    pub enrolled: bool,
    /// Its last report (RFC 3339), if any.
    pub last_contact: Option<String>,
    /// The revision it runs.
    pub applied_revision: Option<i64>,
    /// Its version.
    pub version: Option<String>,
    /// Its last report.
    #[schema(value_type = Option<Object>)]
    pub report: Option<Value>,
    /// `offline`, `behind`, `failing`, `never-reported`.
    pub alerts: Vec<String>,
}

/// `GET /api/v1/nodes`: every gateway and edge with its last report and
/// alerts.
pub async fn dashboard(State(app): State<Arc<App>>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Scope::Read)?;
    let (revision, items) = nodes_status(&app).await?;
    Ok(axum::Json(serde_json::json!({"revision": revision, "items": items})).into_response())
}

/// The current revision, and every gateway and edge with its status and
/// alerts (the API's and the portal's dashboard).
pub(crate) async fn nodes_status(app: &App) -> Result<(i64, Vec<NodeStatus>), Problem> {
    let revision = app.store.revision().await?;
    let now = crate::now();
    let rows = sqlx::query(
        "SELECT o.kind, o.id, o.name, s.last_contact, s.applied_revision, s.version, s.report, (SELECT COUNT(*) FROM certificates c WHERE c.kind = o.kind AND c.object_id = o.id AND c.revoked_at IS NULL AND c.not_after > $1) FROM objects o LEFT JOIN node_status s ON s.kind = o.kind AND s.object_id = o.id WHERE o.kind IN ('gateway', 'edge') ORDER BY o.kind, o.name",
    )
    .bind(now)
    .fetch_all(&app.store.db.pool)
    .await
    .ctx("read the nodes")?;
    let items: Vec<NodeStatus> = rows
        .iter()
        .map(|r| {
            let last: Option<i64> = r.get(3);
            let applied: Option<i64> = r.get(4);
            let report: Option<Value> = r
                .get::<Option<String>, _>(6)
                .and_then(|s| serde_json::from_str(&s).ok());
            let enrolled = r.get::<i64, _>(7) > 0;
            let mut alerts = Vec::new();
            match last {
                None if enrolled => alerts.push("never-reported".to_string()),
                Some(t) if now - t > OFFLINE_AFTER_SECS => alerts.push("offline".into()),
                _ => {}
            }
            if applied.is_some_and(|a| a < revision) {
                alerts.push("behind".into());
            }
            if report
                .as_ref()
                .and_then(|r| r.get("error"))
                .is_some_and(|e| !e.is_null())
            {
                alerts.push("failing".into());
            }
            NodeStatus {
                kind: r.get(0),
                id: r.get(1),
                name: r.get(2),
                enrolled,
                last_contact: last.map(crate::rfc3339),
                applied_revision: applied,
                version: r.get(5),
                report,
                alerts,
            }
        })
        .collect();
    Ok((revision, items))
}

/// The org at the current revision, compiled once per revision.
pub(crate) async fn load_snapshot(app: &App) -> Result<(i64, Arc<Org>), Problem> {
    let (revision, objects) = app.store.snapshot().await?;
    let org = Org::from_objects(&objects).map_err(|e| Problem::internal(&e))?;
    Ok((revision, Arc::new(org)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_hosts_are_what_an_edge_certificate_must_not_carry() {
        use super::url_host;
        assert_eq!(
            url_host("https://Ctl.Example:8443/x").as_deref(),
            Some("ctl.example")
        );
        assert_eq!(
            url_host("https://[2001:db8::1]:8444").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(url_host("https://192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(url_host("http://x"), None);
    }
}
