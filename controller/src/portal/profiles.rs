//! The portal's app profiles: a list in their order with a search (htmx
//! replaces the rows as one types), each profile's rules (the directory
//! groups, subnets and devices that get it, a group gone from the
//! directory flagged), revision and version; create, copy, edit (its
//! version checked: an edit made meanwhile by someone else is refused, not
//! overwritten) and reorder. Every write goes through the store's one
//! write path as the portal's administrator.
use std::sync::Arc;

use askama::Template;
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{Frame, Signed, edit_form, error_page, frame, redirect, render, replace};
use crate::{
    api::App,
    model::{AppProfile, Kind, Spec as _},
    store::{ListQuery, Op, Record, StoreError},
};

/// One profile in the list.
#[derive(Debug)]
pub(super) struct Row {
    /// Its id.
    pub(super) id: String,
    /// Name.
    pub(super) name: String,
    /// Description.
    pub(super) description: String,
    /// Order.
    pub(super) order: i64,
    /// Rules: "group X", "subnet Y", "device Z".
    pub(super) rules: Vec<String>,
    /// Groups it names that are gone from the directory.
    pub(super) missing: Vec<String>,
    /// Exclusions (prefixes) and domains.
    pub(super) bypasses: usize,
    /// The revision of its last change.
    pub(super) revision: i64,
    /// Its version.
    pub(super) version: i64,
}

async fn missing_groups(app: &App) -> Vec<String> {
    let q = ListQuery {
        limit: Some(5000),
        ..ListQuery::default()
    };
    let mut out = Vec::new();
    let mut q = q;
    // Every group (pages of 5,000).
    loop {
        let Ok(page) = app.store.list(Kind::Group, &q).await else {
            break;
        };
        for r in &page.items {
            if r.body["missing"].as_bool() == Some(true)
                && let Some(n) = r.body["name"].as_str()
            {
                out.push(n.to_string());
            }
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    out
}

async fn rows(app: &App, search: &str) -> Result<Vec<Row>, StoreError> {
    let mut q = ListQuery {
        limit: Some(5000),
        name_contains: (!search.is_empty()).then(|| search.to_string()),
        ..ListQuery::default()
    };
    // Every page (a page also ends at 4 MiB of bodies).
    let mut items = Vec::new();
    loop {
        let page = app.store.list(Kind::AppProfile, &q).await?;
        items.extend(page.items);
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    let missing = missing_groups(app).await;
    let mut rows: Vec<Row> = items
        .into_iter()
        .filter_map(|r| {
            let p: AppProfile = serde_json::from_value(r.body.clone()).ok()?;
            let rules = p
                .groups
                .iter()
                .map(|g| format!("group {g}"))
                .chain(p.subnets.iter().map(|s| format!("subnet {s}")))
                .chain(p.devices.iter().map(|d| format!("device {d}")))
                .collect();
            Some(Row {
                missing: p
                    .groups
                    .iter()
                    .filter(|g| missing.contains(g))
                    .cloned()
                    .collect(),
                id: r.id,
                bypasses: p.exclude.len() + p.domains.len(),
                name: p.name,
                description: p.description,
                order: p.order,
                rules,
                revision: r.revision,
                version: r.version,
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    Ok(rows)
}

#[derive(Template)]
#[template(path = "profiles.html")]
struct ListPage {
    frame: Frame,
    rows: Vec<Row>,
    search: String,
}

#[derive(Template)]
#[template(path = "profile_rows.html")]
struct RowsPartial {
    frame: Frame,
    rows: Vec<Row>,
}

/// `?q=` of the list.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Search {
    #[serde(default)]
    q: String,
}

fn search_of(uri: &axum::http::Uri) -> String {
    let q: Search = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    q.q.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

pub(super) async fn list(State(app): State<Arc<App>>, s: Signed, uri: axum::http::Uri) -> Response {
    let frame = frame(&app, &s, "app-profiles").await;
    let search = search_of(&uri);
    match rows(&app, &search).await {
        Ok(rows) => render(&ListPage {
            frame,
            rows,
            search,
        }),
        Err(e) => store_error(&e),
    }
}

/// The rows alone (htmx's search).
pub(super) async fn rows_partial(
    State(app): State<Arc<App>>,
    s: Signed,
    uri: axum::http::Uri,
) -> Response {
    let frame = frame(&app, &s, "app-profiles").await;
    let search = search_of(&uri);
    match rows(&app, &search).await {
        Ok(rows) => render(&RowsPartial { frame, rows }),
        Err(e) => store_error(&e),
    }
}

pub(super) fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Maintenance(why) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The controller is in read-only maintenance: {why}"),
        ),
        StoreError::VersionMismatch { .. } => error_page(
            StatusCode::PRECONDITION_FAILED,
            "Someone changed this profile since you opened it: reload it and make your change again.",
        ),
        StoreError::NameTaken { name, .. } => error_page(
            StatusCode::CONFLICT,
            &format!("A profile named `{name}` exists."),
        ),
        StoreError::NotFound { .. } => error_page(StatusCode::NOT_FOUND, "No such profile."),
        StoreError::Policy(why) => error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("The gateways could not load this: {why}"),
        ),
        StoreError::Invalid(e) => error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        other => {
            log::error!("portal: {other}");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store does not answer.",
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameForm {
    csrf: String,
    name: String,
}

async fn next_order(app: &App) -> i64 {
    rows(app, "")
        .await
        .ok()
        .and_then(|r| r.iter().map(|r| r.order).max())
        .map_or(0, |m| m + 1)
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    s: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: NameForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let spec = AppProfile {
        order: next_order(&app).await,
        ..serde_json::from_value(serde_json::json!({"name": f.name.trim()}))
            .unwrap_or_else(|_| empty_profile())
    };
    write_new(&app, &s, spec).await
}

fn empty_profile() -> AppProfile {
    serde_json::from_value(serde_json::json!({"name": "x"})).expect("a minimal profile")
}

async fn write_new(app: &App, s: &Signed, spec: AppProfile) -> Response {
    if let Err(e) = spec.validate() {
        return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    }
    let body = serde_json::to_value(&spec).expect("serialises");
    match app
        .store
        .write(
            &s.origin(),
            "create",
            Op::Create {
                kind: Kind::AppProfile,
                body,
            },
            vec![],
        )
        .await
    {
        Ok(w) => redirect(&format!(
            "/portal/app-profiles/{}",
            w.record.map(|r| r.id).unwrap_or_default()
        )),
        Err(e) => store_error(&e),
    }
}

async fn load(app: &App, id: &str) -> Result<(Record, AppProfile), Response> {
    if id.len() > 64 {
        return Err(error_page(StatusCode::NOT_FOUND, "No such profile."));
    }
    let r = app
        .store
        .get(Kind::AppProfile, id)
        .await
        .map_err(|e| store_error(&e))?;
    let p = serde_json::from_value(r.body.clone()).map_err(|_| {
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "A stored profile does not parse.",
        )
    })?;
    Ok((r, p))
}

pub(super) async fn copy(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: NameForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (_, mut p) = match load(&app, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    p.name = f.name.trim().to_string();
    p.order = next_order(&app).await;
    write_new(&app, &s, p).await
}

#[derive(Template)]
#[template(path = "profile.html")]
struct EditPage {
    frame: Frame,
    id: String,
    version: i64,
    revision: i64,
    p: AppProfile,
    groups: String,
    subnets: String,
    devices: String,
    exclude: String,
    domains: String,
    missing: Vec<String>,
}

pub(super) async fn edit(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    let frame = frame(&app, &s, "app-profiles").await;
    let (r, p) = match load(&app, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let missing_all = missing_groups(&app).await;
    let lines = |v: &[String]| v.join("\n");
    render(&EditPage {
        frame,
        id: r.id,
        version: r.version,
        revision: r.revision,
        groups: lines(&p.groups),
        subnets: lines(&p.subnets),
        devices: lines(&p.devices),
        exclude: lines(&p.exclude),
        domains: lines(&p.domains),
        missing: p
            .groups
            .iter()
            .filter(|g| missing_all.contains(g))
            .cloned()
            .collect(),
        p,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditForm {
    csrf: String,
    version: i64,
    description: String,
    groups: String,
    subnets: String,
    devices: String,
    exclude: String,
    domains: String,
}

fn list_of(text: &str) -> Vec<String> {
    text.split(['\n', ',', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) async fn save(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: EditForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (_, mut p) = match load(&app, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    p.description = f.description.trim().to_string();
    p.groups = list_of(&f.groups);
    p.subnets = list_of(&f.subnets);
    p.devices = list_of(&f.devices);
    p.exclude = list_of(&f.exclude);
    p.domains = list_of(&f.domains);
    if let Err(e) = p.validate() {
        return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
    }
    let body = serde_json::to_value(&p).expect("serialises");
    match replace(&app, &s, "update", (Kind::AppProfile, &id), body, f.version).await {
        Ok(()) => redirect(&format!("/portal/app-profiles/{id}")),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveForm {
    csrf: String,
    to: String,
}

/// Moves a profile up or down one place (its `order` swapped with its
/// neighbour's; profiles sharing an order are spread out first).
pub(super) async fn move_profile(
    State(app): State<Arc<App>>,
    s: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: MoveForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let list = match rows(&app, "").await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let Some(at) = list.iter().position(|r| r.id == id) else {
        return error_page(StatusCode::NOT_FOUND, "No such profile.");
    };
    let other = match f.to.as_str() {
        "up" if at > 0 => at - 1,
        "down" if at + 1 < list.len() => at + 1,
        "up" | "down" => return redirect("/portal/app-profiles"),
        _ => return error_page(StatusCode::BAD_REQUEST, "Move up or down."),
    };
    // Two profiles of different orders swap them (two writes); ties
    // (orders set alike through the API) are spread out first: positions
    // 0..n, written only where they change.
    let mut ids: Vec<&Row> = list.iter().collect();
    let targets: Vec<(usize, i64)> = if list[at].order == list[other].order {
        ids.swap(at, other);
        (0..ids.len())
            .map(|i| (i, i64::try_from(i).unwrap_or(i64::MAX)))
            .collect()
    } else {
        let (a, b) = (list[at].order, list[other].order);
        ids.swap(at, other);
        vec![(at, a), (other, b)]
    };
    for (i, want) in targets {
        let r = ids[i];
        if r.order == want {
            continue;
        }
        let (rec, mut p) = match load(&app, &r.id).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        p.order = want;
        let body = serde_json::to_value(&p).expect("serialises");
        if let Err(resp) = replace(
            &app,
            &s,
            "reorder",
            (Kind::AppProfile, &rec.id),
            body,
            rec.version,
        )
        .await
        {
            return resp;
        }
    }
    redirect("/portal/app-profiles")
}

super::posted!(NameForm, EditForm, MoveForm);
