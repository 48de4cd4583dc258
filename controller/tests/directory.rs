//! Directory group sync against a real OpenLDAP `slapd` (a private
//! instance on loopback, seeded with slapadd: 10,000 users, 1,000 groups,
//! a group of groups, and a group whose name sluice cannot hold), whose
//! sync account is held to 500 entries unless it pages: LDAPS and
//! StartTLS; nested groups; a group removed between two syncs (deleted,
//! or kept and flagged when an app profile names it, its users out of
//! it); a failed sync keeps the last good groups and says so.
mod common;

use std::time::{Duration, Instant};

use common::{
    Ctl,
    slapd::{self, Slapd},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const USERS: usize = 10_000;
const GROUPS: usize = 1_000;

/// Asks for a sync, a second after the last one ended at the earliest:
/// the status's times have one-second resolution, and a sync can end
/// within the second the last one did (it did, in release builds).
async fn request_sync(c: &Ctl, token: &str) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .call(Method::POST, "/api/v1/directory/sync", token, None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
}

async fn wait_sync(c: &Ctl, token: &str, after: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = c.call(Method::GET, "/api/v1/directory", token, None).await;
        assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
        let done = s.body["last_finished"].as_str();
        if done.is_some() && done != after && !s.body["requested"].as_bool().unwrap_or(true) {
            return s.body;
        }
        assert!(
            Instant::now() < deadline,
            "no sync within 120 s: {}",
            s.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn object(c: &Ctl, token: &str, coll: &str, name: &str) -> Option<Value> {
    let r = c
        .call(
            Method::GET,
            &format!("/api/v1/{coll}?name={name}"),
            token,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    r.body["items"].as_array().and_then(|a| a.first().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_users_sync_from_ldaps_with_paging_and_follow_removals() {
    let d = Slapd::start(USERS, GROUPS);
    // The directory enforces its limit: a search that does not page gets
    // 500 entries and "size limit exceeded" (ldapsearch's exit status 4).
    let plain = std::process::Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H"])
        .arg(format!("ldap://127.0.0.1:{}", d.ldap_port))
        .args(["-D", slapd::SYNC_DN, "-w", slapd::SYNC_PASSWORD, "-b"])
        .arg(format!("ou=people,{}", slapd::BASE))
        .args(["(uid=*)", "uid"])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(4), "{plain:?}");
    let dir = tempfile::tempdir().unwrap();
    let c = Ctl::start(&d.section(true, dir.path())).await;
    let token = c.token_with("admin", &["admin"]).await;
    let started = Instant::now();
    let s = wait_sync(&c, &token, None).await;
    let took = started.elapsed();
    assert_eq!(s["last_ok"], true, "{s}");
    assert_eq!(s["groups"], GROUPS + 1, "{s}");
    assert_eq!(s["users"], USERS, "{s}");
    assert!(
        s["last_result"]
            .as_str()
            .unwrap()
            .contains("1 entries skipped"),
        "the group named `Domain Users`: {s}"
    );
    assert!(s["next_sync"].is_string());
    eprintln!(
        "first sync of {USERS} users and {} groups: {took:?}",
        GROUPS + 1
    );
    // user00000 is in group0000 and group0003 directly, and in all-staff
    // through group0000.
    let u = object(&c, &token, "users", &slapd::user(0)).await.unwrap();
    assert_eq!(u["source"], "directory");
    let mut groups: Vec<String> = serde_json::from_value(u["groups"].clone()).unwrap();
    groups.sort();
    assert_eq!(groups, ["all-staff", "group0000", "group0003"]);
    let rev_after_first = c
        .call(Method::GET, "/api/v1/status", &token, None)
        .await
        .body["revision"]
        .as_i64()
        .unwrap();

    // An app profile's rule names group0005; then group0005 and group0006
    // leave the directory.
    let r = c
        .call(
            Method::POST,
            "/api/v1/app-profiles",
            &token,
            Some(json!({"name": "engineering", "groups": ["group0005"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    d.modify(&format!(
        "dn: cn=group0005,ou=groups,{b}\nchangetype: delete\n\ndn: cn=group0006,ou=groups,{b}\nchangetype: delete\n",
        b = slapd::BASE
    ));
    let before = s["last_finished"].as_str().map(str::to_string);
    request_sync(&c, &token).await;
    let s = wait_sync(&c, &token, before.as_deref()).await;
    assert_eq!(s["last_ok"], true, "{s}");
    assert!(
        s["last_result"]
            .as_str()
            .unwrap()
            .contains("flagged: group group0005"),
        "{s}"
    );
    // Kept and flagged (the profile names it), with no members; the other
    // one gone.
    let g5 = object(&c, &token, "groups", "group0005").await.unwrap();
    assert_eq!(g5["missing"], true);
    assert!(object(&c, &token, "groups", "group0006").await.is_none());
    let member = (0..USERS)
        .find(|i| slapd::groups_of(*i, GROUPS).contains(&5))
        .unwrap();
    let u = object(&c, &token, "users", &slapd::user(member))
        .await
        .unwrap();
    let groups: Vec<String> = serde_json::from_value(u["groups"].clone()).unwrap();
    assert!(!groups.contains(&"group0005".to_string()), "{groups:?}");
    // One revision for the sync, which gateways take.
    let rev = c
        .call(Method::GET, "/api/v1/status", &token, None)
        .await
        .body["revision"]
        .as_i64()
        .unwrap();
    assert_eq!(rev, rev_after_first + 2, "the profile, then the sync");
    // Audited as the directory.
    let a = c
        .call(
            Method::GET,
            "/api/v1/audit?actor=directory&action=sync&limit=5",
            &token,
            None,
        )
        .await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 5);

    // A filter that suddenly matches nobody (a typo, a lost permission):
    // the sync that would remove every user is refused, until forced.
    let file = c.dir.path().join("controller.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "page_size = 400",
            "page_size = 400\nusers_filter = \"(uid=nobody)\"",
        ),
    )
    .unwrap();
    let before = s["last_finished"].as_str().map(str::to_string);
    request_sync(&c, &token).await;
    let s = wait_sync(&c, &token, before.as_deref()).await;
    assert_eq!(s["last_ok"], false, "{s}");
    assert!(
        s["last_result"]
            .as_str()
            .unwrap()
            .contains("refused: it would remove"),
        "{s}"
    );
    assert!(object(&c, &token, "users", &slapd::user(1)).await.is_some());
    std::fs::write(&file, &text).unwrap();

    // A failed sync (the directory refuses the password): the last good
    // groups stay, and the status says why.
    std::fs::write(dir.path().join("directory.password"), "wrong\n").unwrap();
    let before = s["last_finished"].as_str().map(str::to_string);
    request_sync(&c, &token).await;
    let s = wait_sync(&c, &token, before.as_deref()).await;
    assert_eq!(s["last_ok"], false, "{s}");
    let why = s["last_result"].as_str().unwrap();
    assert!(
        why.contains("the last good groups stay") && why.contains("binding"),
        "{why}"
    );
    assert_eq!(s["groups"], GROUPS, "{s}");
    assert!(object(&c, &token, "groups", "group0007").await.is_some());
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_syncs_and_a_wrong_ca_is_refused() {
    let d = Slapd::start(1200, 30);
    let dir = tempfile::tempdir().unwrap();
    let c = Ctl::start(&d.section(false, dir.path())).await;
    let token = c.token_with("admin", &["admin"]).await;
    let s = wait_sync(&c, &token, None).await;
    assert_eq!(s["last_ok"], true, "{s}");
    assert_eq!(s["users"], 1200, "past the 500-entry limit: paged");
    c.running.stop().await;
    // A directory whose certificate is not from the configured CA: no
    // sync (and no password sent in the clear: TLS comes first).
    let other = tempfile::tempdir().unwrap();
    let bad_ca = other.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&bad_ca, p.self_signed(&key).unwrap().pem()).unwrap();
    let section = d.section(true, other.path()).replace(
        &d.ca_pem.display().to_string(),
        &bad_ca.display().to_string(),
    );
    let c = Ctl::start(&section).await;
    let token = c.token_with("admin", &["admin"]).await;
    let s = wait_sync(&c, &token, None).await;
    assert_eq!(s["last_ok"], false, "{s}");
    assert_eq!(s["groups"], 0);
    c.running.stop().await;
}

/// The directory is read in a child process: one that dies (as the LDAP
/// library's panics end it) fails a sync, not the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_dies_fails_the_sync_not_the_controller() {
    let f = sluice_controller::directory::Fetcher {
        argv: vec!["sh".into(), "-c".into(), "kill -ABRT $$".into()],
        config: "/nonexistent".into(),
    };
    let e = sluice_controller::directory::fetch_isolated(&f, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.contains("ended on a signal"), "{e}");
    let f = sluice_controller::directory::Fetcher {
        argv: vec!["sh".into(), "-c".into(), "sleep 30".into()],
        config: "/nonexistent".into(),
    };
    let e = sluice_controller::directory::fetch_isolated(&f, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(e.contains("longer than"), "{e}");
    let f = sluice_controller::directory::Fetcher {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo 'sluice: error: binding as x: invalid credentials' >&2; exit 1".into(),
        ],
        config: "/nonexistent".into(),
    };
    let e = sluice_controller::directory::fetch_isolated(&f, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(e, "binding as x: invalid credentials");
}
