//! The admin portal, served by the controller itself under `/portal/`:
//! server-rendered HTML (askama templates, escaped by default) with htmx
//! (from the npm registry, embedded) for the few partial updates.
//!
//! Sign-in takes a name, a password and a TOTP code ([`crate::admins`]),
//! rate-limited per account and per address before any hashing. A session
//! is a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict, Path=/) that
//! ends an hour after sign-in or at sign-out. Every form carries the
//! session's CSRF token and every POST is refused without it (the sign-in
//! form, before a session exists, carries a double-submit token). Pages
//! are sent with a strict Content-Security-Policy (scripts and styles from
//! the portal alone), no framing, no referrer, no caching. During
//! maintenance every page shows a banner, edit controls are disabled, and
//! edits are refused by the store as the API's are.
use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    body::Bytes,
    extract::{FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

mod pages;
mod profiles;

use crate::{
    admins::{self, Role, Session, SigninError},
    api::{App, Peer, limited},
    store::Origin,
};

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-sluice_session";
/// The sign-in form's double-submit cookie.
pub const PRE_COOKIE: &str = "__Host-sluice_pre";

const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
const CSS: &[u8] = include_bytes!("../../assets/portal.css");

/// A page, rendered.
struct Page(String);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = (StatusCode::OK, self.0).into_response();
        secure_headers(r.headers_mut(), "text/html; charset=utf-8");
        r
    }
}

fn secure_headers(h: &mut HeaderMap, content_type: &'static str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(s) => Page(s).into_response(),
        Err(e) => {
            log::error!("portal: rendering a page: {e}");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be shown.",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

/// A redirect after a POST (303), with the portal's headers.
fn redirect(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let body = ErrorPage { message }
        .render()
        .unwrap_or_else(|_| "error".into());
    let mut r = (status, body).into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .expect("cookie values are URL-safe base64")
}

fn peer(parts: &Parts) -> String {
    parts
        .extensions
        .get::<Peer>()
        .map_or_else(|| "unknown".into(), |p| p.0.ip().to_string())
}

/// A signed-in administrator (the request's session cookie); without one
/// the browser is sent to the sign-in page.
pub struct Signed {
    /// The session.
    pub session: Session,
    /// The session's cookie token (to end it).
    token: String,
    /// Where from.
    pub address: String,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("Signed")
            .field("admin", &self.session.admin.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Signed {
    fn origin(&self) -> Origin {
        Origin {
            actor: format!("admin:{}", self.session.admin.name),
            address: self.address.clone(),
        }
    }

    fn can_edit(&self) -> bool {
        self.session.admin.role == Role::Full
    }
}

/// Not signed in: to the sign-in page.
#[derive(Debug)]
pub struct ToSignin;

impl IntoResponse for ToSignin {
    fn into_response(self) -> Response {
        let mut r = Redirect::to("/portal/signin").into_response();
        secure_headers(r.headers_mut(), "text/html; charset=utf-8");
        r
    }
}

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(ToSignin.into_response());
        };
        match admins::session(&app.store, token).await {
            Ok(Some(session)) => Ok(Signed {
                session,
                token: token.to_string(),
                address: peer(parts),
            }),
            Ok(None) => Err(ToSignin.into_response()),
            Err(e) => {
                log::error!("portal: {e}");
                Err(error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The store does not answer; try again.",
                ))
            }
        }
    }
}

/// Parses a form body strictly (unknown fields refused).
fn form<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !ok {
        return Err(error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Forms are sent as application/x-www-form-urlencoded.",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|e| error_page(StatusCode::BAD_REQUEST, &format!("The form: {e}")))
}

/// A form that carries the session's CSRF token.
trait Posted: for<'de> Deserialize<'de> {
    fn csrf(&self) -> &str;
}

/// Implements [`Posted`] for forms with a `csrf` field.
macro_rules! posted {
    ($($t:ty),*) => {$(
        impl crate::portal::Posted for $t {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    )*};
}
use posted;

/// A POSTed form of a signed-in administrator: parsed strictly, its CSRF
/// token checked.
fn posted_form<T: Posted>(s: &Signed, headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    let f: T = form(headers, body)?;
    check_csrf(s, f.csrf())?;
    Ok(f)
}

/// [`posted_form`] of a change: full administrators only.
fn edit_form<T: Posted>(s: &Signed, headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    let f = posted_form(s, headers, body)?;
    if s.can_edit() {
        Ok(f)
    } else {
        Err(error_page(
            StatusCode::FORBIDDEN,
            "Changes are for full administrators.",
        ))
    }
}

/// Replaces object `id` of `kind` with `body`, if it is still at
/// `version`, as the signed-in administrator.
async fn replace(
    app: &App,
    s: &Signed,
    action: &str,
    (kind, id): (crate::model::Kind, &str),
    body: serde_json::Value,
    version: i64,
) -> Result<(), Response> {
    app.store
        .write(
            &s.origin(),
            action,
            crate::store::Op::Replace {
                kind,
                id: id.to_string(),
                body,
                if_match: Some(version),
            },
            vec![],
        )
        .await
        .map(|_| ())
        .map_err(|e| profiles::store_error(&e))
}

/// Refuses a POST whose `csrf` field is not the session's.
fn check_csrf(s: &Signed, sent: &str) -> Result<(), Response> {
    if admins::constant_time_eq(sent.as_bytes(), s.session.csrf.as_bytes()) {
        Ok(())
    } else {
        log::warn!(
            "portal: {} from {}: a form without this session's CSRF token refused",
            s.session.admin.name,
            s.address
        );
        Err(error_page(
            StatusCode::FORBIDDEN,
            "This form is not from this session (its CSRF token is missing or wrong). Reload the page and try again.",
        ))
    }
}

/// What every page's frame shows.
#[derive(Debug)]
pub struct Frame {
    /// Who is signed in.
    pub admin: String,
    /// Their role.
    pub role: &'static str,
    /// The form token.
    pub csrf: String,
    /// Maintenance: its reason, if on.
    pub maintenance: Option<String>,
    /// Whether edit controls are enabled (a full admin, no maintenance).
    pub editable: bool,
    /// Which page.
    pub page: &'static str,
}

async fn frame(app: &App, s: &Signed, page: &'static str) -> Frame {
    let (on, why) = app.store.maintenance().await.unwrap_or((true, None));
    let maintenance = on.then(|| why.unwrap_or_else(|| "no reason given".into()));
    Frame {
        admin: s.session.admin.name.clone(),
        role: s.session.admin.role.as_str(),
        csrf: s.session.csrf.clone(),
        editable: s.can_edit() && maintenance.is_none(),
        maintenance,
        page,
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    pre: &'a str,
    message: Option<&'a str>,
}

fn signin_page(message: Option<&str>, status: StatusCode) -> Response {
    let pre = admins::random_token();
    let mut r = render(&SigninPage { pre: &pre, message });
    *r.status_mut() = status;
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(PRE_COOKIE, &pre, 900));
    r
}

async fn signin_get() -> Response {
    signin_page(None, StatusCode::OK)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigninForm {
    name: String,
    password: String,
    code: String,
    pre: String,
}

async fn signin_post(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let address = peer.map(|p| p.0.0.ip());
    let f: SigninForm = match form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    // The double-submit token: a cross-site form cannot send the cookie.
    let pre_ok = cookie(&headers, PRE_COOKIE)
        .is_some_and(|c| admins::constant_time_eq(c.as_bytes(), f.pre.as_bytes()));
    if !pre_ok {
        return signin_page(
            Some("The sign-in form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let addr_key = address.map_or_else(
        || "unknown".into(),
        |a| crate::server::address_key(a).to_string(),
    );
    let name: String = f.name.trim().chars().take(64).collect();
    if let Some(wait) = limited(&app.signin_address, &addr_key)
        .or_else(|| limited(&app.signin_account, &name.to_ascii_lowercase()))
    {
        log::warn!("portal: sign-in for {name:?} from {addr_key}: rate-limited");
        let mut r = signin_page(
            Some(&format!(
                "Too many sign-in attempts; try again in {wait} s."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let origin = Origin {
        actor: format!("admin:{name}"),
        address: addr_key.clone(),
    };
    match admins::verify(
        &app.store,
        &app.portal_hasher,
        &app.sealer,
        &name,
        &f.password,
        f.code.trim(),
    )
    .await
    {
        Ok(admin) => {
            let who = admin.name.clone();
            match admins::open_session(&app.store, admin, &addr_key).await {
                Ok((token, _)) => {
                    log::info!("portal: `{who}` signed in from {addr_key}");
                    admins::audit_session(&app.store, &origin, "signin", &who, "signed in").await;
                    let mut r = Redirect::to("/portal/").into_response();
                    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
                    let h = r.headers_mut();
                    h.append(
                        header::SET_COOKIE,
                        set_cookie(SESSION_COOKIE, &token, admins::SESSION_SECS),
                    );
                    h.append(header::SET_COOKIE, set_cookie(PRE_COOKIE, "", 0));
                    r
                }
                Err(e) => {
                    log::error!("portal: {e}");
                    error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The store does not answer.",
                    )
                }
            }
        }
        Err(SigninError::Busy) => signin_page(
            Some("The controller is busy; try again in a moment."),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        Err(e) => {
            // The browser hears the same for all of them; the log and the
            // audit log say which (a right password with a wrong code
            // means the password is known to someone).
            let why = match e {
                SigninError::WrongCode => "the right password with a wrong or used code",
                SigninError::Locked => "the account is locked after too many failures",
                _ => "an unknown name or a wrong password",
            };
            log::warn!("portal: sign-in for {name:?} from {addr_key} refused: {why}");
            // Only an account's refusals are audited: unknown names, which
            // anyone can send before signing in, would grow the log
            // without bound.
            if e != SigninError::Unknown {
                admins::audit_session(&app.store, &origin, "signin_refused", &name, why).await;
            }
            signin_page(
                Some("The name, password or code is wrong."),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsrfOnly {
    csrf: String,
}

async fn signout(
    State(app): State<Arc<App>>,
    s: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = posted_form::<CsrfOnly>(&s, &headers, &body) {
        return r;
    }
    if let Err(e) = admins::close_session(&app.store, &s.token).await {
        log::error!("portal: {e}");
    }
    log::info!("portal: `{}` signed out", s.session.admin.name);
    admins::audit_session(
        &app.store,
        &s.origin(),
        "signout",
        &s.session.admin.name,
        "signed out",
    )
    .await;
    let mut r = Redirect::to("/portal/signin").into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    r
}

/// A node on the dashboard, for the template.
#[derive(Debug)]
pub struct NodeRow {
    /// gateway or edge.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Enrolled.
    pub enrolled: bool,
    /// Last contact (RFC 3339) or "never".
    pub last_contact: String,
    /// Applied revision or "-".
    pub applied: String,
    /// Version or "-".
    pub version: String,
    /// Its tunnels, as "tenant: state".
    pub tunnels: Vec<String>,
    /// Alerts.
    pub alerts: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    frame: Frame,
    revision: i64,
    nodes: Vec<NodeRow>,
    alerts: usize,
}

async fn dashboard(State(app): State<Arc<App>>, s: Signed) -> Response {
    let frame = frame(&app, &s, "dashboard").await;
    let (revision, items) = match crate::nodes::nodes_status(&app).await {
        Ok(x) => x,
        Err(_) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store does not answer.",
            );
        }
    };
    let nodes: Vec<NodeRow> = items
        .into_iter()
        .map(|n| NodeRow {
            tunnels: n
                .report
                .as_ref()
                .and_then(|r| r.get("tunnels"))
                .and_then(|t| t.as_array())
                .map(|a| {
                    a.iter()
                        .take(16)
                        .map(|t| {
                            format!(
                                "{}: {}",
                                t["tenant"].as_str().unwrap_or("?"),
                                t["state"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            kind: n.kind,
            name: n.name,
            enrolled: n.enrolled,
            last_contact: n.last_contact.unwrap_or_else(|| "never".into()),
            applied: n
                .applied_revision
                .map_or_else(|| "-".into(), |r| r.to_string()),
            version: n.version.unwrap_or_else(|| "-".into()),
            alerts: n.alerts,
        })
        .collect();
    let alerts = nodes.iter().map(|n| n.alerts.len()).sum();
    render(&DashboardPage {
        frame,
        revision,
        nodes,
        alerts,
    })
}

#[derive(Template)]
#[template(path = "administration.html")]
struct AdministrationPage {
    frame: Frame,
    sync: crate::directory::SyncStatus,
}

async fn administration(State(app): State<Arc<App>>, s: Signed) -> Response {
    let frame = frame(&app, &s, "administration").await;
    let sync = crate::directory::status(&app.store, app.directory.is_some())
        .await
        .unwrap_or_default();
    render(&AdministrationPage { frame, sync })
}

async fn sync_now(
    State(app): State<Arc<App>>,
    s: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = edit_form::<CsrfOnly>(&s, &headers, &body) {
        return r;
    }
    if app.directory.is_none() {
        return error_page(StatusCode::CONFLICT, "No directory is configured.");
    }
    if let Err(e) = crate::directory::request(&app.store, false).await {
        log::error!("portal: {e}");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The store does not answer.",
        );
    }
    log::info!(
        "portal: `{}` asked for a directory sync",
        s.session.admin.name
    );
    let mut r = Redirect::to("/portal/administration").into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceForm {
    csrf: String,
    on: String,
    #[serde(default)]
    reason: String,
}

posted!(CsrfOnly, MaintenanceForm);

async fn maintenance(
    State(app): State<Arc<App>>,
    s: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f: MaintenanceForm = match edit_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let reason = f.reason.trim();
    if reason.len() > 512 || reason.chars().any(char::is_control) {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The reason: at most 512 bytes, no control characters.",
        );
    }
    let on = f.on == "true";
    let reason = (!reason.is_empty()).then_some(reason);
    if let Err(e) = app.store.set_maintenance(&s.origin(), on, reason).await {
        log::error!("portal: {e}");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The store does not answer.",
        );
    }
    let mut r = Redirect::to("/portal/administration").into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r
}

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    secure_headers(r.headers_mut(), content_type);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// The portal's routes (merged into the admin API's router).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/portal/signin", get(signin_get).post(signin_post))
        .route("/portal/signout", post(signout))
        .route("/portal/", get(dashboard))
        .route(
            "/portal",
            get(|| async { Redirect::permanent("/portal/").into_response() }),
        )
        .route("/portal/administration", get(administration))
        .route("/portal/administration/maintenance", post(maintenance))
        .route("/portal/administration/sync", post(sync_now))
        .route(
            "/portal/app-profiles",
            get(profiles::list).post(profiles::create),
        )
        .route("/portal/app-profiles/rows", get(profiles::rows_partial))
        .route(
            "/portal/app-profiles/{id}",
            get(profiles::edit).post(profiles::save),
        )
        .route("/portal/app-profiles/{id}/copy", post(profiles::copy))
        .route(
            "/portal/app-profiles/{id}/move",
            post(profiles::move_profile),
        )
        .route("/portal/tenants", get(pages::tenants))
        .route("/portal/tenants/{id}/switch", post(pages::switch_tenant))
        .route("/portal/objects/{collection}", get(pages::objects))
        .route(
            "/portal/objects/{collection}/{id}",
            get(pages::object).post(pages::save_object),
        )
        .route(
            "/portal/api-clients",
            get(pages::clients).post(pages::create_client),
        )
        .route(
            "/portal/api-clients/{id}/status",
            post(pages::client_status),
        )
        .route("/portal/audit", get(pages::audit))
        .route(
            "/portal/static/htmx.min.js",
            get(|| async { asset(HTMX, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/portal/static/portal.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
}
