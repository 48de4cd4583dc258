//! The portal over HTTPS, as a browser speaks to it (cookies by hand, no
//! redirects followed): sign-in with password and TOTP (a code good once,
//! one step either side), the session cookie's attributes, the pages'
//! security headers, CSRF on every POST, sign-out, an expired session,
//! rate limits per account, maintenance from the portal (full admins
//! only) with the banner and disabled controls.
mod common;

use common::Ctl;
use reqwest::{StatusCode, header};
use sluice_controller::{
    admins::{self, Role},
    store::Origin,
};

struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    text: String,
}

impl Browser {
    fn new(c: &Ctl) -> Browser {
        use rustls_pki_types::{CertificateDer, pem::PemObject as _};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(c.running.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Browser {
            http: reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: c.base.clone(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn take(&mut self, r: reqwest::Response) -> Page {
        for v in r.headers().get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.take(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(form).unwrap();
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.take(r).await
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The sign-in form's hidden token (as a browser would send it).
    async fn signin(&mut self, name: &str, password: &str, code: &str) -> Page {
        let form = self.get("/portal/signin").await;
        assert_eq!(form.status, StatusCode::OK);
        let pre = hidden(&form.text, "pre");
        self.post(
            "/portal/signin",
            &[
                ("name", name),
                ("password", password),
                ("code", code),
                ("pre", &pre),
            ],
        )
        .await
    }
}

fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

const PASSWORD: &str = "correct horse battery";

async fn admin(c: &Ctl, name: &str, role: Role) -> [u8; 20] {
    admins::create(
        &c.store,
        &c.running.app.sealer,
        &Origin::local(),
        name,
        role,
        PASSWORD,
    )
    .await
    .unwrap()
    .secret
}

fn code(secret: &[u8], offset: i64) -> String {
    admins::code_at(
        secret,
        sluice_controller::now().div_euclid(admins::STEP_SECS) + offset,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_a_password_and_a_code_good_once() {
    let c = Ctl::start("").await;
    let secret = admin(&c, "alice", Role::Full).await;
    let mut b = Browser::new(&c);
    // Not signed in: every page sends the browser to sign in.
    let p = b.get("/portal/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.headers[header::LOCATION], "/portal/signin");
    // Wrong password, wrong code, unknown name: the same answer.
    for (n, pw, cd) in [
        ("alice", "wrong password!!", code(&secret, 0)),
        ("alice", PASSWORD, "000000".to_string()),
        ("bob", PASSWORD, code(&secret, 0)),
    ] {
        let p = b.signin(n, pw, &cd).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{n}");
        assert!(p.text.contains("The name, password or code is wrong."));
        assert!(b.cookie("__Host-sluice_session").is_none());
    }
    // An account's refusals are audited; an unknown name leaves nothing
    // (anyone can send names before signing in).
    let refused: Vec<String> = sqlx::query_scalar(
        "SELECT object_name FROM audit WHERE kind = 'admin_session' AND action = 'signin_refused' ORDER BY seq",
    )
    .fetch_all(&c.store.db.pool)
    .await
    .unwrap();
    assert_eq!(refused, ["alice", "alice"]);
    // Right: a session cookie with every attribute, and the dashboard.
    let now = code(&secret, 0);
    let p = b.signin("alice", PASSWORD, &now).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    let set = p
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("__Host-sluice_session="))
        .unwrap();
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=3600",
    ] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let p = b.get("/portal/").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.text.contains("<h1>Dashboard</h1>"));
    assert!(p.text.contains("alice (full)"));
    let csp = p.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(p.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(p.headers[header::CACHE_CONTROL], "no-store");
    // The same code again, in another browser: refused (good once); the
    // next step's code works (one step of skew), and then the earlier one
    // no longer does.
    let mut b2 = Browser::new(&c);
    let p = b2.signin("alice", PASSWORD, &now).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "a replayed code");
    let next = code(&secret, 1);
    let p = b2.signin("alice", PASSWORD, &next).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    let mut b3 = Browser::new(&c);
    assert_eq!(
        b3.signin("alice", PASSWORD, &now).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A sign-in form posted without its cookie (from another site): no.
    let mut b4 = Browser::new(&c);
    let p = b4
        .post(
            "/portal/signin",
            &[
                ("name", "alice"),
                ("password", PASSWORD),
                ("code", &code(&secret, 1)),
                ("pre", "x"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Sign-out without the session's CSRF token: refused, still signed in.
    let p = b.post("/portal/signout", &[("csrf", "forged")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.text.contains("CSRF"));
    let p = b.post("/portal/signout", &[]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(b.get("/portal/").await.status, StatusCode::OK);
    // With it: gone, and the old cookie no longer works.
    let page = b.get("/portal/").await;
    let csrf = hidden(&page.text, "csrf");
    let token = b.cookie("__Host-sluice_session").unwrap().to_string();
    let p = b.post("/portal/signout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    b.cookies
        .push(("__Host-sluice_session".into(), token.clone()));
    assert_eq!(b.get("/portal/").await.status, StatusCode::SEE_OTHER);

    // An expired session (an hour after sign-in) returns to sign-in.
    let p = b2.get("/portal/").await;
    assert_eq!(p.status, StatusCode::OK);
    sqlx::query("UPDATE admin_sessions SET expires_at = $1")
        .bind(sluice_controller::now() - 1)
        .execute(&c.store.db.pool)
        .await
        .unwrap();
    let p = b2.get("/portal/").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.headers[header::LOCATION], "/portal/signin");

    // The audit log names the administrator made, never a secret.
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT action, COALESCE(after_json, '') FROM audit WHERE kind = 'admin'")
            .fetch_all(&c.store.db.pool)
            .await
            .unwrap();
    assert_eq!(audit.len(), 1);
    assert!(audit[0].1.contains("alice") && !audit[0].1.contains("password_hash"));
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_rate_limited_per_account() {
    let c = Ctl::start("").await;
    let secret = admin(&c, "carol", Role::Full).await;
    let mut b = Browser::new(&c);
    let mut limited = false;
    for _ in 0..12 {
        let p = b.signin("carol", "not the password", "123456").await;
        if p.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(p.headers.contains_key(header::RETRY_AFTER));
            limited = true;
            break;
        }
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "eleven attempts a minute are not limited");
    // Even the right password and code wait now.
    let p = b.signin("carol", PASSWORD, &code(&secret, 0)).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_from_the_portal_is_for_full_admins_and_disables_edits() {
    let c = Ctl::start("").await;
    let full = admin(&c, "dana", Role::Full).await;
    let read = admin(&c, "eve", Role::Read).await;
    let token = c.token_with("api", &["admin"]).await;
    let mut reader = Browser::new(&c);
    assert_eq!(
        reader.signin("eve", PASSWORD, &code(&read, 0)).await.status,
        StatusCode::SEE_OTHER
    );
    let p = reader.get("/portal/administration").await;
    assert!(
        p.text.contains("id=\"maintenance-on\" disabled"),
        "{}",
        p.text
    );
    let csrf = hidden(&p.text, "csrf");
    let p = reader
        .post(
            "/portal/administration/maintenance",
            &[("csrf", &csrf), ("on", "true"), ("reason", "")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let mut admin_b = Browser::new(&c);
    assert_eq!(
        admin_b
            .signin("dana", PASSWORD, &code(&full, 0))
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let p = admin_b.get("/portal/administration").await;
    assert!(!p.text.contains("id=\"maintenance-on\" disabled"));
    let csrf = hidden(&p.text, "csrf");
    let p = admin_b
        .post(
            "/portal/administration/maintenance",
            &[
                ("csrf", &csrf),
                ("on", "true"),
                ("reason", "<b>upgrade</b>"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    // Every page has the banner (escaped), and the API refuses writes.
    for path in ["/portal/", "/portal/administration"] {
        let p = reader.get(path).await;
        assert!(p.text.contains("id=\"maintenance-banner\""), "{path}");
        assert!(
            p.text.contains("upgrade") && !p.text.contains("<b>upgrade"),
            "{path}: not escaped"
        );
    }
    let r = c
        .call(
            reqwest::Method::POST,
            "/api/v1/groups",
            &token,
            Some(serde_json::json!({"name": "g"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Off again; the audit log says who, from the portal.
    let p = admin_b.get("/portal/administration").await;
    let csrf = hidden(&p.text, "csrf");
    let p = admin_b
        .post(
            "/portal/administration/maintenance",
            &[("csrf", &csrf), ("on", "false")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let actors: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM audit WHERE kind = 'maintenance' ORDER BY seq")
            .fetch_all(&c.store.db.pool)
            .await
            .unwrap();
    assert_eq!(actors, ["admin:dana", "admin:dana"]);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_profiles_are_created_searched_edited_copied_and_reordered() {
    let c = Ctl::start("").await;
    let secret = admin(&c, "frank", Role::Full).await;
    let mut b = Browser::new(&c);
    assert_eq!(
        b.signin("frank", PASSWORD, &code(&secret, 0)).await.status,
        StatusCode::SEE_OTHER
    );
    let page = b.get("/portal/app-profiles").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = hidden(&page.text, "csrf");
    // Create two; each lands on its edit page.
    let mut ids = Vec::new();
    for name in ["staff", "guests"] {
        let p = b
            .post("/portal/app-profiles", &[("csrf", &csrf), ("name", name)])
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
        let to = p.headers[header::LOCATION].to_str().unwrap().to_string();
        ids.push(to.rsplit('/').next().unwrap().to_string());
    }
    // A bad name is refused with the reason.
    let p = b
        .post(
            "/portal/app-profiles",
            &[("csrf", &csrf), ("name", "no spaces")],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Edit staff: a rule for a group and a bypass.
    let edit = b.get(&format!("/portal/app-profiles/{}", ids[0])).await;
    let version = hidden(&edit.text, "version");
    let form = |v: &str| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("version".to_string(), v.to_string()),
            ("description".to_string(), "everyone on staff".to_string()),
            ("groups".to_string(), "engineering\nsales".to_string()),
            ("subnets".to_string(), String::new()),
            ("devices".to_string(), String::new()),
            ("exclude".to_string(), "203.0.113.20/32".to_string()),
            ("domains".to_string(), "*.bypass.example".to_string()),
        ]
    };
    // The groups do not exist yet: the store refuses, saying why.
    let f = form(&version);
    let fr: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = b
        .post(&format!("/portal/app-profiles/{}", ids[0]), &fr)
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.text);
    assert!(p.text.contains("engineering"), "{}", p.text);
    let token = c.token_with("api", &["admin"]).await;
    for g in ["engineering", "sales"] {
        let r = c
            .call(
                reqwest::Method::POST,
                "/api/v1/groups",
                &token,
                Some(serde_json::json!({"name": g})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let p = b
        .post(&format!("/portal/app-profiles/{}", ids[0]), &fr)
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    // The same form again (its version is now old): refused, not
    // overwritten.
    let p = b
        .post(&format!("/portal/app-profiles/{}", ids[0]), &fr)
        .await;
    assert_eq!(p.status, StatusCode::PRECONDITION_FAILED);
    let r = c
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/app-profiles/{}", ids[0]),
            &token,
            None,
        )
        .await;
    assert_eq!(
        r.body["groups"],
        serde_json::json!(["engineering", "sales"])
    );
    assert_eq!(r.body["exclude"], serde_json::json!(["203.0.113.20/32"]));
    // Search: the rows alone, filtered.
    let rows = b.get("/portal/app-profiles/rows?q=gue").await;
    assert!(
        rows.text.contains("data-name=\"guests\"") && !rows.text.contains("data-name=\"staff\"")
    );
    assert!(!rows.text.contains("<html"), "a partial");
    // Copy staff, then move the copy up to first place.
    let p = b
        .post(
            &format!("/portal/app-profiles/{}/copy", ids[0]),
            &[("csrf", &csrf), ("name", "staff-test")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    let copy_id = p.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let order = |text: &str| -> Vec<String> {
        text.split("data-name=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect()
    };
    let list = b.get("/portal/app-profiles").await;
    assert_eq!(order(&list.text), ["staff", "guests", "staff-test"]);
    for _ in 0..2 {
        let p = b
            .post(
                &format!("/portal/app-profiles/{copy_id}/move"),
                &[("csrf", &csrf), ("to", "up")],
            )
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    }
    let list = b.get("/portal/app-profiles").await;
    assert_eq!(order(&list.text), ["staff-test", "staff", "guests"]);
    let r = c
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/app-profiles/{copy_id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        r.body["groups"],
        serde_json::json!(["engineering", "sales"])
    );
    // Without the CSRF token: nothing moves.
    let p = b
        .post(
            &format!("/portal/app-profiles/{}/move", ids[1]),
            &[("csrf", "x"), ("to", "up")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // A group gone from the directory is flagged where profiles name it.
    let g = c
        .call(
            reqwest::Method::GET,
            "/api/v1/groups?name=sales",
            &token,
            None,
        )
        .await;
    let gid = g.body["items"][0]["id"].as_str().unwrap().to_string();
    let r = c
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/groups/{gid}"),
            &token,
            Some(serde_json::json!({"missing": true, "source": "directory"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let list = b.get("/portal/app-profiles").await;
    assert!(list.text.contains("group sales missing"), "{}", list.text);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_objects_api_clients_and_the_audit_log() {
    let c = Ctl::start("").await;
    let secret = admin(&c, "gina", Role::Full).await;
    let token = c.token_with("api", &["admin"]).await;
    for (coll, body) in [
        (
            "edges",
            serde_json::json!({"name": "edge-1", "address": "198.51.100.5:4443"}),
        ),
        (
            "tenants",
            serde_json::json!({"name": "internet", "kind": "internet", "edges": ["edge-1"], "server_name": "edge.sluice.test"}),
        ),
        (
            "tenants",
            serde_json::json!({"name": "corp", "kind": "private", "edges": ["edge-1"], "server_name": "corp.sluice.test", "segments": ["198.18.10.0/24"]}),
        ),
        (
            "tenants",
            serde_json::json!({"name": "partner", "kind": "private", "edges": ["edge-1"], "server_name": "partner.sluice.test", "segments": ["198.18.20.0/24"]}),
        ),
        (
            "bypass-lists",
            serde_json::json!({"name": "saas", "prefixes": ["203.0.113.0/28"]}),
        ),
    ] {
        let r = c
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/{coll}"),
                &token,
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let mut b = Browser::new(&c);
    assert_eq!(
        b.signin("gina", PASSWORD, &code(&secret, 0)).await.status,
        StatusCode::SEE_OTHER
    );
    // Tenants: switch corp on, then partner (corp goes off), then none.
    let page = b.get("/portal/tenants").await;
    let csrf = hidden(&page.text, "csrf");
    assert!(page.text.contains("<strong>none</strong>"));
    let id_of = |text: &str, name: &str| -> String {
        let at = text.find(&format!("data-name=\"{name}\"")).unwrap();
        let rest = &text[at..];
        let a = rest.find("/portal/objects/tenants/").unwrap() + "/portal/objects/tenants/".len();
        rest[a..a + rest[a..].find('"').unwrap()].to_string()
    };
    for name in ["corp", "partner"] {
        let id = id_of(&page.text, name);
        let p = b
            .post(&format!("/portal/tenants/{id}/switch"), &[("csrf", &csrf)])
            .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
        let now = b.get("/portal/tenants").await;
        assert!(
            now.text.contains(&format!("<strong>{name}</strong>")),
            "{}",
            now.text
        );
    }
    let p = b
        .post("/portal/tenants/off/switch", &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(
        b.get("/portal/tenants")
            .await
            .text
            .contains("<strong>none</strong>")
    );

    // A bypass list edited as JSON: checked, and against its version.
    let lists = b.get("/portal/objects/bypass-lists").await;
    let at = lists.text.find("/portal/objects/bypass-lists/bl_").unwrap();
    let path = &lists.text[at..at + lists.text[at..].find('"').unwrap()];
    let page = b.get(path).await;
    let version = hidden(&page.text, "version");
    let good = r#"{"name": "saas", "prefixes": ["203.0.113.0/28", "203.0.113.64/28"]}"#;
    for (json, want) in [
        (
            r#"{"name": "saas", "prefixes": ["not a prefix"]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"name": "saas", "unknown": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (good, StatusCode::SEE_OTHER),
        (good, StatusCode::PRECONDITION_FAILED),
    ] {
        let p = b
            .post(
                path,
                &[("csrf", &csrf), ("version", &version), ("json", json)],
            )
            .await;
        assert_eq!(p.status, want, "{json}: {}", p.text);
    }

    // An API client made here: its secret shown once, and it works;
    // deactivated, its token stops at once.
    let p = b
        .post(
            "/portal/api-clients",
            &[
                ("csrf", &csrf),
                ("name", "workflow"),
                ("description", "the identity platform"),
                ("scope", "read"),
                ("lifetime", "30"),
                ("days", "30"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.headers[header::CACHE_CONTROL], "no-store");
    let grab = |id: &str| {
        let at = p.text.find(&format!("id=\"{id}\">")).unwrap() + id.len() + 6;
        p.text[at..at + p.text[at..].find('<').unwrap()].to_string()
    };
    let (cid, csecret) = (grab("client-id"), grab("client-secret"));
    assert!(csecret.starts_with("sls_"));
    let t = c.token(&cid, &csecret).await;
    assert_eq!(
        c.call(reqwest::Method::GET, "/api/v1/tenants", &t, None)
            .await
            .status,
        StatusCode::OK
    );
    let list = b.get("/portal/api-clients").await;
    assert!(!list.text.contains(&csecret), "the secret is shown once");
    let p = b
        .post(
            &format!("/portal/api-clients/{cid}/status"),
            &[("csrf", &csrf), ("status", "inactive")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(
        c.call(reqwest::Method::GET, "/api/v1/tenants", &t, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // The audit log shows what gina did, filtered.
    let a = b.get("/portal/audit?actor=admin%3Agina&kind=tenant").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.text.contains("<td>partner</td>") && !a.text.contains("<td>api_client</td>"),
        "{}",
        a.text
    );
    let a = b
        .get("/portal/audit?actor=admin%3Agina&kind=api_client")
        .await;
    assert!(a.text.contains("workflow"));
    assert_eq!(
        b.get("/portal/audit?nonsense=1").await.status,
        StatusCode::BAD_REQUEST
    );
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failures_in_a_row_lock_an_account_on_every_controller() {
    let c = Ctl::start("").await;
    let secret = admin(&c, "hank", Role::Full).await;
    let app = &c.running.app;
    let store = &c.store;
    let verify = |pw: &'static str, code: String| async move {
        admins::verify(store, &app.portal_hasher, &app.sealer, "hank", pw, &code).await
    };
    // A right password with a wrong code is told apart (in the logs and
    // the audit log; the browser hears the same as for any failure).
    assert_eq!(
        verify(PASSWORD, "000000".into()).await.unwrap_err(),
        admins::SigninError::WrongCode
    );
    for _ in 0..9 {
        assert_eq!(
            verify("wrong password!!", code(&secret, 0))
                .await
                .unwrap_err(),
            admins::SigninError::Refused
        );
    }
    assert_eq!(
        admins::verify(
            store,
            &app.portal_hasher,
            &app.sealer,
            "nobody",
            PASSWORD,
            &code(&secret, 0)
        )
        .await
        .unwrap_err(),
        admins::SigninError::Unknown
    );
    // Locked now (the count is in the store, shared by every controller):
    // even the right password and code wait.
    assert_eq!(
        verify(PASSWORD, code(&secret, 0)).await.unwrap_err(),
        admins::SigninError::Locked
    );
    sqlx::query("UPDATE admins SET locked_until = 0")
        .execute(&c.store.db.pool)
        .await
        .unwrap();
    assert!(verify(PASSWORD, code(&secret, 0)).await.is_ok());
    let failures: i64 = sqlx::query_scalar("SELECT failures FROM admins WHERE name = 'hank'")
        .fetch_one(&c.store.db.pool)
        .await
        .unwrap();
    assert_eq!(failures, 0, "a sign-in resets the count");
    c.running.stop().await;
}
