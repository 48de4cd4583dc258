//! The portal's other pages: tenants (which private-access tenant is on,
//! switched from here), forwarding profiles and bypass lists (each
//! object's JSON, edited against the version it was read at, checked as
//! the API checks it), API clients (create with the secret shown once,
//! activate and deactivate, a new secret), and the audit log with its
//! filters.
use std::sync::Arc;

use askama::Template;
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    Frame, Signed, edit_form, error_page, frame, profiles::store_error, redirect, render, replace,
};
use crate::{
    api::App,
    model::{ApiClient, BypassList, ForwardingProfile, Kind, Spec, Tenant},
    store::{AuditQuery, Extra, ListQuery, Op, Record},
};

/// Every object of `kind` (all pages).
async fn all(app: &App, kind: Kind) -> Result<Vec<Record>, Response> {
    let mut q = ListQuery {
        limit: Some(5000),
        ..ListQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = app
            .store
            .list(kind, &q)
            .await
            .map_err(|e| store_error(&e))?;
        out.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(n),
            None => return Ok(out),
        }
    }
}

// ---- tenants --------------------------------------------------------

/// A tenant row.
#[derive(Debug)]
pub(super) struct TenantRow {
    id: String,
    name: String,
    kind: String,
    active: bool,
    edges: String,
    server_name: String,
    segments: usize,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    frame: Frame,
    rows: Vec<TenantRow>,
    on: Option<String>,
}

pub(super) async fn tenants(State(app): State<Arc<App>>, s: Signed) -> Response {
    let frame = frame(&app, &s, "tenants").await;
    let list = match all(&app, Kind::Tenant).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let rows: Vec<TenantRow> = list
        .into_iter()
        .filter_map(|r| {
            let t: Tenant = serde_json::from_value(r.body).ok()?;
            Some(TenantRow {
                id: r.id,
                active: t.active,
                edges: t.edges.join(", "),
                segments: t.segments.len() + t.domains.len(),
                name: t.name,
                kind: t.kind,
                server_name: t.server_name,
            })
        })
        .collect();
    let on = rows.iter().find(|r| r.active).map(|r| r.name.clone());
    render(&TenantsPage { frame, rows, on })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsrfForm {
    csrf: String,
}

/// Switches private-access tenant `id` on (`off`: every one off): the one
/// on is switched off first, so at most one is on at every step.
pub(super) async fn switch_tenant(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = edit_form::<CsrfForm>(&s, &headers, &body) {
        return r;
    }
    let list = match all(&app, Kind::Tenant).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    if id != "off"
        && !list
            .iter()
            .any(|r| r.id == id && r.body["kind"] == "private")
    {
        return error_page(StatusCode::NOT_FOUND, "No such private-access tenant.");
    }
    // Off first, then on.
    let mut order: Vec<&Record> = list.iter().filter(|r| r.body["active"] == true).collect();
    order.extend(list.iter().filter(|r| r.id == id));
    for r in order {
        let mut b = r.body.clone();
        b["active"] = Value::Bool(r.id == id);
        if b == r.body {
            continue;
        }
        if let Err(resp) = replace(&app, &s, "update", (Kind::Tenant, &r.id), b, r.version).await {
            return resp;
        }
    }
    redirect("/portal/tenants")
}

// ---- objects edited as JSON ------------------------------------------

fn kind_of(collection: &str) -> Option<Kind> {
    match collection {
        "forwarding-profiles" => Some(Kind::ForwardingProfile),
        "bypass-lists" => Some(Kind::BypassList),
        "tenants" => Some(Kind::Tenant),
        _ => None,
    }
}

fn title_of(kind: Kind) -> &'static str {
    match kind {
        Kind::ForwardingProfile => "Forwarding profiles",
        Kind::BypassList => "Bypass lists",
        _ => "Tenants",
    }
}

fn typed<S: Spec + DeserializeOwned + Serialize>(text: &str) -> Result<Value, String> {
    let s: S = serde_json::from_str(text).map_err(|e| e.to_string())?;
    s.validate().map_err(|e| e.to_string())?;
    serde_json::to_value(&s).map_err(|e| e.to_string())
}

fn checked(kind: Kind, text: &str) -> Result<Value, String> {
    if text.len() > 256 * 1024 {
        return Err("at most 256 KiB".into());
    }
    match kind {
        Kind::ForwardingProfile => typed::<ForwardingProfile>(text),
        Kind::BypassList => typed::<BypassList>(text),
        Kind::Tenant => typed::<Tenant>(text),
        _ => Err("not editable here".into()),
    }
}

/// An object in a list.
#[derive(Debug)]
pub(super) struct ObjectRow {
    id: String,
    name: String,
    description: String,
    revision: i64,
    version: i64,
}

#[derive(Template)]
#[template(path = "objects.html")]
struct ObjectsPage {
    frame: Frame,
    title: &'static str,
    collection: String,
    rows: Vec<ObjectRow>,
}

pub(super) async fn objects(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(collection): Path<String>,
) -> Response {
    let Some(kind) = kind_of(&collection) else {
        return error_page(StatusCode::NOT_FOUND, "No such page.");
    };
    let frame = frame(
        &app,
        &s,
        if kind == Kind::ForwardingProfile {
            "forwarding"
        } else {
            "bypass"
        },
    )
    .await;
    let list = match all(&app, kind).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let rows = list
        .into_iter()
        .map(|r| ObjectRow {
            name: r.body["name"].as_str().unwrap_or("").to_string(),
            description: r.body["description"].as_str().unwrap_or("").to_string(),
            id: r.id,
            revision: r.revision,
            version: r.version,
        })
        .collect();
    render(&ObjectsPage {
        frame,
        title: title_of(kind),
        collection,
        rows,
    })
}

#[derive(Template)]
#[template(path = "object.html")]
struct ObjectPage {
    frame: Frame,
    title: &'static str,
    collection: String,
    id: String,
    name: String,
    version: i64,
    revision: i64,
    json: String,
}

pub(super) async fn object(
    State(app): State<Arc<App>>,
    s: Signed,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    let Some(kind) = kind_of(&collection) else {
        return error_page(StatusCode::NOT_FOUND, "No such page.");
    };
    let frame = frame(
        &app,
        &s,
        if kind == Kind::ForwardingProfile {
            "forwarding"
        } else {
            "bypass"
        },
    )
    .await;
    if id.len() > 64 {
        return error_page(StatusCode::NOT_FOUND, "No such object.");
    }
    let r = match app.store.get(kind, &id).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    render(&ObjectPage {
        frame,
        title: title_of(kind),
        name: r.body["name"].as_str().unwrap_or("").to_string(),
        json: serde_json::to_string_pretty(&r.body).unwrap_or_default(),
        collection,
        id: r.id,
        version: r.version,
        revision: r.revision,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectForm {
    csrf: String,
    version: i64,
    json: String,
}

pub(super) async fn save_object(
    State(app): State<Arc<App>>,
    s: Signed,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(kind) = kind_of(&collection) else {
        return error_page(StatusCode::NOT_FOUND, "No such page.");
    };
    let f: ObjectForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let value = match checked(kind, &f.json) {
        Ok(v) => v,
        Err(e) => {
            return error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("The object: {e}"),
            );
        }
    };
    match replace(&app, &s, "update", (kind, &id), value, f.version).await {
        Ok(()) => redirect(&format!("/portal/objects/{collection}/{id}")),
        Err(r) => r,
    }
}

// ---- API clients ------------------------------------------------------

/// A client row.
#[derive(Debug)]
pub(super) struct ClientRow {
    id: String,
    name: String,
    description: String,
    status: String,
    scopes: String,
    lifetime: u32,
    secrets: Vec<String>,
}

#[derive(Template)]
#[template(path = "clients.html")]
struct ClientsPage {
    frame: Frame,
    rows: Vec<ClientRow>,
}

pub(super) async fn clients(State(app): State<Arc<App>>, s: Signed) -> Response {
    let frame = frame(&app, &s, "clients").await;
    let list = match all(&app, Kind::ApiClient).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut rows = Vec::new();
    for r in list {
        let Ok(c) = serde_json::from_value::<ApiClient>(strip_generation(&r.body)) else {
            continue;
        };
        let secrets = app
            .store
            .secrets(&r.id)
            .await
            .map(|v| {
                v.into_iter()
                    .map(|(id, _, exp)| format!("{id} (expires {})", crate::rfc3339(exp)))
                    .collect()
            })
            .unwrap_or_default();
        rows.push(ClientRow {
            id: r.id,
            name: c.name,
            description: c.description,
            status: c.status,
            scopes: c.scopes.join(", "),
            lifetime: c.token_lifetime_minutes,
            secrets,
        });
    }
    render(&ClientsPage { frame, rows })
}

fn strip_generation(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.remove("generation");
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClientForm {
    csrf: String,
    name: String,
    #[serde(default)]
    description: String,
    scope: String,
    lifetime: u32,
    days: u32,
}

#[derive(Template)]
#[template(path = "client_secret.html")]
struct SecretPage {
    frame: Frame,
    name: String,
    id: String,
    secret: String,
    expires: String,
}

async fn new_secret(days: u32) -> Result<(String, String, String, i64), Response> {
    if !(1..=730).contains(&days) {
        return Err(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "A secret expires in 1 to 730 days.",
        ));
    }
    let (secret, hash) = tokio::task::spawn_blocking(crate::auth::new_secret)
        .await
        .map_err(|_| error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again."))?;
    Ok((
        crate::store::new_id("cs"),
        secret,
        hash,
        crate::now() + i64::from(days) * 86_400,
    ))
}

pub(super) async fn create_client(
    State(app): State<Arc<App>>,
    s: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: NewClientForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let spec = ApiClient {
        name: f.name.trim().to_string(),
        description: f.description.trim().to_string(),
        status: "active".into(),
        token_lifetime_minutes: f.lifetime,
        scopes: vec![f.scope.clone()],
    };
    if let Err(e) = spec.validate() {
        return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    }
    let (sid, secret, hash, expires_at) = match new_secret(f.days).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let w = match app
        .store
        .write(
            &s.origin(),
            "create",
            Op::Create {
                kind: Kind::ApiClient,
                body: serde_json::to_value(&spec).expect("serialises"),
            },
            vec![Extra::AddSecret {
                id: sid,
                hash,
                expires_at,
            }],
        )
        .await
    {
        Ok(w) => w,
        Err(e) => return store_error(&e),
    };
    let frame = frame(&app, &s, "clients").await;
    // Shown once: this page is not cached, and the secret is nowhere else.
    render(&SecretPage {
        frame,
        name: spec.name,
        id: w.record.map(|r| r.id).unwrap_or_default(),
        secret,
        expires: crate::rfc3339(expires_at),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusForm {
    csrf: String,
    status: String,
}

/// Activates or deactivates a client (its live tokens stop at once).
pub(super) async fn client_status(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: StatusForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if f.status != "active" && f.status != "inactive" {
        return error_page(StatusCode::BAD_REQUEST, "active or inactive");
    }
    let r = match app.store.get(Kind::ApiClient, &id).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let mut b = strip_generation(&r.body);
    b["status"] = Value::String(f.status);
    match replace(&app, &s, "update", (Kind::ApiClient, &id), b, r.version).await {
        Ok(()) => redirect("/portal/api-clients"),
        Err(r) => r,
    }
}

// ---- the audit log -----------------------------------------------------

/// An entry, for the template.
#[derive(Debug)]
pub(super) struct AuditRow {
    seq: i64,
    at: String,
    actor: String,
    address: String,
    action: String,
    kind: String,
    name: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    rows: Vec<AuditRow>,
    actor: String,
    kind: String,
    action: String,
    older: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFilters {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    action: String,
    before: Option<i64>,
}

pub(super) async fn audit(
    State(app): State<Arc<App>>,
    s: Signed,
    uri: axum::http::Uri,
) -> Response {
    let frame = frame(&app, &s, "audit").await;
    let f: AuditFilters = match uri.query().map(serde_urlencoded::from_str).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &format!("The filters: {e}")),
    };
    let some = |s: &str| {
        let t: String = s.trim().chars().take(128).collect();
        (!t.is_empty()).then_some(t)
    };
    let q = AuditQuery {
        limit: Some(100),
        before: f.before,
        actor: some(&f.actor),
        kind: some(&f.kind),
        action: some(&f.action),
        ..AuditQuery::default()
    };
    let page = match app.store.audit(&q).await {
        Ok(p) => p,
        Err(e) => return store_error(&e),
    };
    let older = page.next.map(|n| {
        serde_urlencoded::to_string([
            ("actor", f.actor.as_str()),
            ("kind", f.kind.as_str()),
            ("action", f.action.as_str()),
            ("before", n.as_str()),
        ])
        .unwrap_or_default()
    });
    let rows = page
        .items
        .into_iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: crate::rfc3339(e.at.0),
            actor: e.actor,
            address: e.address,
            action: e.action,
            kind: e.kind,
            name: e.object_name,
            detail: e.detail.unwrap_or_default(),
        })
        .collect();
    render(&AuditPage {
        frame,
        rows,
        actor: f.actor,
        kind: f.kind,
        action: f.action,
        older,
    })
}

super::posted!(CsrfForm, ObjectForm, NewClientForm, StatusForm);
