//! The portal in a real browser: Debian's headless Chromium driven
//! through chromedriver (WebDriver). The browser trusts the controller's
//! certificate by its key alone (`--ignore-certificate-errors-spki-list`,
//! no blanket exception). Sign-in with password and TOTP (a wrong code
//! shown as such); an app profile created, given a rule for a group, and
//! found by the search; maintenance shows its banner and disables the
//! edit controls; a form posted without its CSRF token is refused; an
//! expired session returns to sign-in. Screenshots of the dashboard and
//! the app-profile page are written to the test's temporary directory,
//! and into `controller/docs/screenshots/` with
//! `SLUICE_SCREENSHOTS=update` (what the README shows).
mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::Ctl;
use fantoccini::{Client, ClientBuilder, Locator};
use sluice_controller::{
    admins::{self, Role},
    store::Origin,
};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the controller's certificate.
fn spki_hash(cert_pem: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert_pem.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn browser(c: &Ctl, profile_dir: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver: run `cargo xtask setup`)");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spki = spki_hash(&c.dir.path().join("state/server.pem"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,860",
                format!("--user-data-dir={}", profile_dir.display()),
                format!("--ignore-certificate-errors-spki-list={spki}"),
            ]
        }),
    );
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with Chromium");
    (driver, client)
}

const PASSWORD: &str = "correct horse battery";

fn code(secret: &[u8], offset: i64) -> String {
    admins::code_at(
        secret,
        sluice_controller::now().div_euclid(admins::STEP_SECS) + offset,
    )
    .unwrap()
}

async fn fill(b: &Client, css: &str, text: &str) {
    let e = b.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn enabled(b: &Client, css: &str) -> bool {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .is_enabled()
        .await
        .unwrap()
}

async fn text(b: &Client) -> String {
    b.source().await.unwrap()
}

/// Waits (up to 10 s) until the page holds `needle` (a click's page load
/// is not waited for by WebDriver).
async fn wait_text(b: &Client, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = text(b).await;
        if t.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{needle}` in {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn save_shot(name: &str, png: &[u8], tmp: &std::path::Path) {
    std::fs::write(tmp.join(name), png).unwrap();
    if std::env::var("SLUICE_SCREENSHOTS").as_deref() == Ok("update") {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

async fn sign_in(b: &Client, base: &str, name: &str, password: &str, code: &str) {
    b.goto(&format!("{base}/portal/")).await.unwrap();
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/portal/signin"),
        "not signed in: sent to sign in"
    );
    fill(b, "#name", name).await;
    fill(b, "#password", password).await;
    fill(b, "#code", code).await;
    click(&b, "#signin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_chromium() {
    let c = Ctl::start("").await;
    let secret = admins::create(
        &c.store,
        &c.running.app.sealer,
        &Origin::local(),
        "alice",
        Role::Full,
        PASSWORD,
    )
    .await
    .unwrap()
    .secret;
    // A group the profile's rule names (as directory sync makes them).
    let token = c.token_with("api", &["admin"]).await;
    for g in ["engineering", "sales"] {
        let r = c
            .call(
                reqwest::Method::POST,
                "/api/v1/groups",
                &token,
                Some(serde_json::json!({"name": g, "source": "directory"})),
            )
            .await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED);
    }
    // Gateways and an edge with reports, for the dashboard: one up to
    // date, one behind, one never heard from.
    for (coll, body) in [
        (
            "edges",
            serde_json::json!({"name": "edge-1", "address": "198.51.100.5:4443"}),
        ),
        (
            "gateways",
            serde_json::json!({"name": "branch-1", "prefixes": ["192.0.2.0/24"]}),
        ),
        (
            "gateways",
            serde_json::json!({"name": "branch-2", "prefixes": ["198.18.2.0/24"]}),
        ),
        (
            "gateways",
            serde_json::json!({"name": "branch-3", "prefixes": ["198.18.3.0/24"]}),
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
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{:?}", r.body);
    }
    let rev = c.store.revision().await.unwrap();
    for (name, applied, tunnels) in [
        (
            "branch-1",
            rev,
            serde_json::json!([{"tenant": "internet", "state": "up"}, {"tenant": "corp", "state": "up"}]),
        ),
        (
            "branch-2",
            rev - 1,
            serde_json::json!([{"tenant": "internet", "state": "down"}]),
        ),
        ("edge-1", rev, serde_json::json!([])),
    ] {
        let kind = if name.starts_with("edge") {
            "edge"
        } else {
            "gateway"
        };
        let id: String = sqlx::query_scalar("SELECT id FROM objects WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .fetch_one(&c.store.db.pool)
            .await
            .unwrap();
        let report = serde_json::json!({"applied_revision": applied, "version": "0.1.0", "health": "ok", "tunnels": tunnels, "counters": {}});
        sqlx::query("INSERT INTO node_status (kind, object_id, last_contact, applied_revision, version, report, controller) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(kind)
            .bind(&id)
            .bind(sluice_controller::now())
            .bind(applied)
            .bind("0.1.0")
            .bind(report.to_string())
            .bind("https://127.0.0.1")
            .execute(&c.store.db.pool)
            .await
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_driver, b) = browser(&c, &tmp.path().join("chromium")).await;
    let base = &c.base;

    // A wrong code: the sign-in page says so.
    sign_in(&b, base, "alice", PASSWORD, "000000").await;
    wait_text(&b, "The name, password or code is wrong.").await;
    // Password and TOTP: the dashboard.
    sign_in(&b, base, "alice", PASSWORD, &code(&secret, 0)).await;
    wait_text(&b, "<h1>Dashboard</h1>").await;
    let url = b.current_url().await.unwrap();
    assert_eq!(url.path(), "/portal/", "{}", text(&b).await);
    let dash = text(&b).await;
    assert!(dash.contains("<h1>Dashboard</h1>"));
    assert!(
        dash.contains("internet: up") && dash.contains(">behind<"),
        "{dash}"
    );
    save_shot("dashboard.png", &b.screenshot().await.unwrap(), tmp.path());

    // An app profile, created and given a rule for a group, in the list.
    b.goto(&format!("{base}/portal/app-profiles"))
        .await
        .unwrap();
    for name in ["engineering", "guests"] {
        fill(&b, "#new-name", name).await;
        click(&b, "#create-profile").await;
        wait_text(&b, "profile-form").await;
        assert!(
            b.current_url()
                .await
                .unwrap()
                .path()
                .starts_with("/portal/app-profiles/ap_")
        );
        if name == "engineering" {
            fill(&b, "#groups", "engineering").await;
            fill(&b, "#exclude", "203.0.113.20/32").await;
            fill(&b, "#description", "The engineering group's profile").await;
            click(&b, "#save-profile").await;
            wait_text(&b, "version 2").await;
        }
        b.goto(&format!("{base}/portal/app-profiles"))
            .await
            .unwrap();
    }
    let page = text(&b).await;
    assert!(page.contains("group engineering"), "{page}");
    // The search (htmx replaces the rows as one types).
    fill(&b, "#search", "gue").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = b
            .find(Locator::Css("#profile-rows"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap();
        if rows.contains("data-name=\"guests\"") && !rows.contains("data-name=\"engineering\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the search did not filter: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.goto(&format!("{base}/portal/app-profiles"))
        .await
        .unwrap();
    save_shot(
        "app-profiles.png",
        &b.screenshot().await.unwrap(),
        tmp.path(),
    );

    // A form posted without the session's CSRF token (as another page
    // would): refused, nothing changes.
    let status = b
        .execute_async(
            "const done = arguments[0]; fetch('/portal/administration/maintenance', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'csrf=forged&on=true&reason=x'}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (on, _) = c.store.maintenance().await.unwrap();
    assert!(!on);

    // Maintenance: the banner on every page, every edit control disabled.
    b.goto(&format!("{base}/portal/administration"))
        .await
        .unwrap();
    fill(&b, "#reason", "upgrading the store").await;
    click(&b, "#maintenance-on").await;
    wait_text(&b, "maintenance-banner").await;
    for path in ["/portal/", "/portal/app-profiles", "/portal/administration"] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        let banner = b
            .find(Locator::Css("#maintenance-banner"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(banner.contains("upgrading the store"), "{path}: {banner}");
    }
    b.goto(&format!("{base}/portal/app-profiles"))
        .await
        .unwrap();
    assert!(!enabled(&b, "#create-profile").await);
    assert!(!enabled(&b, ".move-up").await);
    click(&b, ".profile-link").await;
    wait_text(&b, "profile-form").await;
    assert!(!enabled(&b, "#save-profile").await);
    assert!(!enabled(&b, "#groups").await);
    b.goto(&format!("{base}/portal/administration"))
        .await
        .unwrap();
    click(&b, "#maintenance-off").await;
    wait_text(&b, "Off: the portal").await;
    b.goto(&format!("{base}/portal/app-profiles"))
        .await
        .unwrap();
    assert!(enabled(&b, "#create-profile").await);

    // The session expires (an hour after sign-in): back to sign-in.
    sqlx::query("UPDATE admin_sessions SET expires_at = $1")
        .bind(sluice_controller::now() - 1)
        .execute(&c.store.db.pool)
        .await
        .unwrap();
    b.goto(&format!("{base}/portal/app-profiles"))
        .await
        .unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/portal/signin");
    b.close().await.unwrap();
    c.running.stop().await;
}
