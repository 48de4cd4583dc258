//! Enrolment and the agent API: one-time tokens, certificates from the
//! node's own signing request, the mutually authenticated long poll for
//! the policy, reports and the dashboard, revocation at once; and the
//! schema's migrations, each over a store made by the one before.
mod common;

use std::sync::Arc;

use common::Ctl;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A node's key and signing request (its key stays here).
fn csr(name: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![format!("{name}-asks-for-this")]).unwrap();
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.pem().unwrap())
}

/// An HTTPS client presenting `cert`/`key`, trusting `ca`.
fn agent_client(ca: &str, cert: &str, key: &rcgen::KeyPair) -> reqwest::Client {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

async fn enrol(c: &Ctl, token: &str, csr: &str) -> common::Resp {
    Ctl::resp(
        c.http
            .post(format!("{}/enrol", c.base))
            .json(&json!({"token": token, "csr": csr}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_enrols_with_a_one_time_token_polls_its_policy_and_is_revoked_at_once() {
    let c = Ctl::start("rate_limit_per_second = 10000\ntoken_rate_limit_per_minute = 1000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    let policy = c.token_with("policy", &["policy"]).await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/edges",
            &admin,
            Some(json!({"name": "edge-1", "address": "198.51.100.5:4443"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = c
        .call(
            Method::POST,
            "/api/v1/gateways",
            &admin,
            Some(json!({"name": "branch-1", "prefixes": ["192.0.2.0/24"]})),
        )
        .await;
    let gw = r.body["id"].as_str().unwrap().to_string();
    let r = c
        .call(
            Method::POST,
            "/api/v1/app-profiles",
            &policy,
            Some(json!({"name": "staff", "exclude": ["203.0.113.0/24"]})),
        )
        .await;
    let profile = r.body["id"].as_str().unwrap().to_string();

    // Only an admin makes enrolment tokens; the token is shown once.
    let path = format!("/api/v1/gateways/{gw}/enrolment");
    assert_eq!(
        c.call(Method::POST, &path, &policy, None).await.status,
        StatusCode::FORBIDDEN
    );
    let r = c
        .call(
            Method::POST,
            &path,
            &admin,
            Some(json!({"expires_in_minutes": 10})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let token = r.body["token"].as_str().unwrap().to_string();
    assert!(r.body["enrol_url"].as_str().unwrap().ends_with("/enrol"));

    // A forged request (its signature broken) and a wrong token change nothing.
    let (key, good) = csr("branch-1");
    let forged = {
        let b64: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine as _;
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let n = der.len();
        der[n - 5] ^= 0xff;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let r = enrol(&c, &token, &forged).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let r = enrol(&c, "sle_guess", &good).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    // The real one: a certificate for the object's name (not what the
    // request asked for), the CA, the agent's URL.
    let r = enrol(&c, &token, &good).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let cert = r.body["certificate"].as_str().unwrap().to_string();
    let ca = r.body["ca"].as_str().unwrap().to_string();
    assert_eq!(r.body["name"], "branch-1");
    assert_eq!(ca, c.running.ca_pem);
    let agent = r.body["agent_url"].as_str().unwrap().to_string();
    assert_eq!(agent, format!("https://{}", c.running.agent_addr));
    // The token was for one use.
    let (_, other) = csr("branch-1");
    assert_eq!(
        enrol(&c, &token, &other).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The agent listener wants a certificate from this CA.
    let a = agent_client(&ca, &cert, &key);
    let anon = common::client_for(&ca);
    assert!(
        anon.get(format!("{agent}/agent/v1/policy"))
            .send()
            .await
            .is_err(),
        "no client certificate, no handshake"
    );
    let stranger_key = rcgen::KeyPair::generate().unwrap();
    let stranger = rcgen::CertificateParams::new(vec!["branch-1".into()])
        .unwrap()
        .self_signed(&stranger_key)
        .unwrap();
    let s = agent_client(&ca, &stranger.pem(), &stranger_key);
    assert!(
        s.get(format!("{agent}/agent/v1/policy"))
            .send()
            .await
            .is_err(),
        "a certificate from another CA is refused"
    );

    // The policy now, as TOML the gateway's parser loads.
    let r = Ctl::resp(
        a.get(format!("{agent}/agent/v1/policy"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let rev = r.body["revision"].as_i64().unwrap();
    assert_eq!(r.body["name"], "branch-1");
    let text = r.body["policy"].as_str().unwrap();
    assert!(text.contains("203.0.113.0/24"), "{text}");
    // A long poll: nothing new within its wait (204 with the revision) ...
    let r = Ctl::resp(
        a.get(format!("{agent}/agent/v1/policy?after={rev}&wait=1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["x-sluice-revision"].to_str().unwrap(),
        rev.to_string()
    );
    // ... and a change answers it at once.
    let poll = tokio::spawn({
        let a = a.clone();
        let url = format!("{agent}/agent/v1/policy?after={rev}&wait=30");
        async move {
            let t = std::time::Instant::now();
            let r = Ctl::resp(a.get(url).send().await.unwrap()).await;
            (r, t.elapsed())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = c
        .call(
            Method::PATCH,
            &format!("/api/v1/app-profiles/{profile}"),
            &policy,
            Some(json!({"domains": ["*.cdn.example"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (r, took) = poll.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body["revision"].as_i64().unwrap() > rev);
    assert!(r.body["policy"].as_str().unwrap().contains("*.cdn.example"));
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let rev2 = r.body["revision"].as_i64().unwrap();

    // Reports reach the dashboard; a gateway behind is flagged.
    let report = json!({"applied_revision": rev, "version": "0.1.0", "health": "ok", "tunnels": [{"tenant": "internet", "edge": "edge-1", "state": "up"}], "counters": {"to_tunnel": 12}});
    let r = Ctl::resp(
        a.post(format!("{agent}/agent/v1/report"))
            .json(&report)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let d = c.call(Method::GET, "/api/v1/nodes", &policy, None).await;
    let node = d.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "branch-1")
        .unwrap()
        .clone();
    assert_eq!(node["applied_revision"], rev);
    assert_eq!(node["alerts"], json!(["behind"]), "{node}");
    assert_eq!(node["report"]["tunnels"][0]["edge"], "edge-1");
    let mut ok = report.clone();
    ok["applied_revision"] = json!(rev2);
    a.post(format!("{agent}/agent/v1/report"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    let d = c.call(Method::GET, "/api/v1/nodes", &policy, None).await;
    let node = d.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "branch-1")
        .unwrap()
        .clone();
    assert_eq!(node["alerts"], json!([]), "{node}");
    // Bad reports: refused, nothing stored.
    for bad in [
        json!({"applied_revision": "x"}),
        json!({"applied_revision": 1, "version": "v", "health": "ok", "extra": 1}),
    ] {
        let r = Ctl::resp(
            a.post(format!("{agent}/agent/v1/report"))
                .json(&bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Revoked: refused at the next request, and gone from the edges' list.
    let r = c
        .call(
            Method::POST,
            &format!("/api/v1/gateways/{gw}/revoke"),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = Ctl::resp(
        a.get(format!("{agent}/agent/v1/policy"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    let d = c.call(Method::GET, "/api/v1/nodes", &policy, None).await;
    let node = d.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "branch-1")
        .unwrap()
        .clone();
    assert_eq!(node["enrolled"], false);
    // Every step is in the audit log, by who did it.
    let r = c
        .call(
            Method::GET,
            &format!("/api/v1/audit?object_id={gw}"),
            &admin,
            None,
        )
        .await;
    let actions: Vec<(String, String)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(actions[0].0, "revoke");
    assert_eq!(
        actions[1],
        ("enrol".to_string(), "gateway:branch-1".to_string())
    );
    assert_eq!(actions[2].0, "enrolment_token");
    assert!(
        !r.body.to_string().contains(&token),
        "no token in the audit log"
    );
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_learns_the_enrolled_gateways_and_their_prefixes() {
    let c = Ctl::start("rate_limit_per_second = 10000\ntoken_rate_limit_per_minute = 1000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    let mut ids = Vec::new();
    for (name, prefix) in [
        ("branch-1", "192.0.2.0/24"),
        ("branch-2", "198.18.2.0/24"),
        ("branch-3", "198.18.3.0/24"),
    ] {
        let r = c
            .call(
                Method::POST,
                "/api/v1/gateways",
                &admin,
                Some(json!({"name": name, "prefixes": [prefix]})),
            )
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let r = c
        .call(
            Method::POST,
            "/api/v1/edges",
            &admin,
            Some(json!({"name": "edge-1", "address": "198.51.100.5:4443"})),
        )
        .await;
    let edge = r.body["id"].as_str().unwrap().to_string();
    let enrolled = |kind: &'static str, id: String| {
        let c = &c;
        let admin = admin.clone();
        async move {
            let r = c
                .call(
                    Method::POST,
                    &format!("/api/v1/{kind}/{id}/enrolment"),
                    &admin,
                    None,
                )
                .await;
            let (key, req) = csr("x");
            let r = enrol(c, r.body["token"].as_str().unwrap(), &req).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            (key, r.body["certificate"].as_str().unwrap().to_string())
        }
    };
    let (ekey, ecert) = enrolled("edges", edge).await;
    enrolled("gateways", ids[0].clone()).await;
    enrolled("gateways", ids[1].clone()).await;
    let a = agent_client(&c.running.ca_pem, &ecert, &ekey);
    let url = format!("https://{}/agent/v1/policy", c.running.agent_addr);
    let r = Ctl::resp(a.get(&url).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["name"], "edge-1");
    // Every gateway with its live certificates: branch-3 never enrolled
    // (the edge refuses it until it does).
    let summary = |v: &serde_json::Value| -> Vec<(String, Vec<String>, usize)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let certs = g["certificates"].as_array().unwrap();
                assert!(certs.iter().all(|c| c.as_str().unwrap().len() == 64));
                (
                    g["name"].as_str().unwrap().to_string(),
                    serde_json::from_value(g["prefixes"].clone()).unwrap(),
                    certs.len(),
                )
            })
            .collect()
    };
    let p = |s: &str| vec![s.to_string()];
    assert_eq!(
        summary(&r.body["gateways"]),
        vec![
            ("branch-1".into(), p("192.0.2.0/24"), 1),
            ("branch-2".into(), p("198.18.2.0/24"), 1),
            ("branch-3".into(), p("198.18.3.0/24"), 0),
        ]
    );
    // A deleted gateway is revoked with it.
    let rev: i64 = r.body["revision"].as_i64().unwrap();
    assert_eq!(
        c.call(
            Method::DELETE,
            &format!("/api/v1/gateways/{}", ids[1]),
            &admin,
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let r = Ctl::resp(
        a.get(format!("{url}?after={rev}&wait=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        summary(&r.body["gateways"]),
        vec![
            ("branch-1".into(), p("192.0.2.0/24"), 1),
            ("branch-3".into(), p("198.18.3.0/24"), 0),
        ]
    );
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM certificates WHERE object_id = $1 AND revoked_at IS NOT NULL",
    )
    .bind(&ids[1])
    .fetch_one(&c.store.db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_enrolment_token_is_refused() {
    let c = Ctl::start("").await;
    let admin = c.token_with("admin", &["admin"]).await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/gateways",
            &admin,
            Some(json!({"name": "late"})),
        )
        .await;
    let gw = r.body["id"].as_str().unwrap().to_string();
    let r = c
        .call(
            Method::POST,
            &format!("/api/v1/gateways/{gw}/enrolment"),
            &admin,
            Some(json!({"expires_in_minutes": 1})),
        )
        .await;
    let token = r.body["token"].as_str().unwrap().to_string();
    sqlx::query("UPDATE enrolments SET expires_at = 1")
        .execute(&c.store.db.pool)
        .await
        .unwrap();
    let (_, req) = csr("late");
    assert_eq!(
        enrol(&c, &token, &req).await.status,
        StatusCode::UNAUTHORIZED
    );
    for bad in [
        json!({"expires_in_minutes": 0}),
        json!({"expires_in_minutes": 10081}),
        json!({"forever": true}),
    ] {
        let r = c
            .call(
                Method::POST,
                &format!("/api/v1/gateways/{gw}/enrolment"),
                &admin,
                Some(bad.clone()),
            )
            .await;
        assert!(r.status.is_client_error(), "{bad}: {r:?}");
    }
    let r = c
        .call(
            Method::POST,
            &format!("/api/v1/groups/{gw}/enrolment"),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_migration_applies_over_a_store_made_by_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let db = sluice_controller::db::Db::connect(&url).await.unwrap();
    let latest = sluice_controller::db::latest_version();
    for v in 1..=latest {
        assert_eq!(db.migrate(Some(v)).await.unwrap(), vec![v]);
        // Data written as version v's schema stands (plain SQL: the code
        // of today writes today's schema) survives every later migration.
        sqlx::query(
            "INSERT INTO objects (kind, id, name, version, body, created_at, updated_at, revision) VALUES ('group', $1, $2, 1, $3, 0, 0, 0)",
        )
        .bind(format!("gr_v{v}"))
        .bind(format!("made-at-v{v}"))
        .bind(json!({"name": format!("made-at-v{v}")}).to_string())
        .execute(&db.pool)
        .await
        .unwrap();
        let (on, _) = sluice_controller::db::maintenance(&db.pool).await.unwrap();
        assert!(!on, "maintenance is off again after migrating to v{v}");
    }
    // Today's code reads all of it and writes over it.
    let store = sluice_controller::store::Store::new(db.clone())
        .await
        .unwrap();
    let page = store
        .list(sluice_controller::model::Kind::Group, &Default::default())
        .await
        .unwrap();
    assert_eq!(page.items.len() as i64, latest);
    store
        .write(
            &sluice_controller::store::Origin::local(),
            "update",
            sluice_controller::store::Op::Replace {
                kind: sluice_controller::model::Kind::Group,
                id: "gr_v1".into(),
                body: json!({"name": "made-at-v1", "description": "changed"}),
                if_match: Some(1),
            },
            vec![],
        )
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM objects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, latest);
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(audit, 1, "the one write of today's code");
    // A store newer than this controller is refused.
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let e = db.migrate(None).await.unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
    let _: Value = json!(null);
}
