//! The admin API end to end over HTTPS: OAuth 2.0 client credentials,
//! scopes on every endpoint, paging and filters, optimistic concurrency,
//! rate limits, token expiry and revocation, maintenance mode, the audit
//! log, and bad input that changes nothing.
#![allow(
    clippy::too_many_lines,
    reason = "each test walks one whole behaviour end to end"
)]
mod common;

use common::Ctl;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_controller::model::Kind;

/// A valid body for each kind (references only to objects made before it
/// in [`Kind::ALL`] order or none).
fn sample(kind: Kind, n: &str) -> Value {
    match kind {
        Kind::Tenant => {
            json!({"name": format!("t{n}"), "kind": "private", "edges": ["e-base"], "server_name": "edge.example.net", "segments": ["198.51.100.128/25"]})
        }
        Kind::Edge => json!({"name": format!("e{n}"), "address": "198.51.100.7:4443"}),
        Kind::Gateway => json!({"name": format!("g{n}"), "prefixes": ["192.0.2.0/24"]}),
        Kind::AppProfile => {
            json!({"name": format!("p{n}"), "exclude": ["203.0.113.0/24"], "domains": ["*.cdn.example"]})
        }
        Kind::ForwardingProfile => {
            json!({"name": format!("f{n}"), "networks": ["192.0.2.0/24"], "on_trusted": "direct"})
        }
        Kind::BypassList => json!({"name": format!("b{n}"), "prefixes": ["203.0.113.20/32"]}),
        Kind::Group => json!({"name": format!("gr{n}")}),
        Kind::User => json!({"name": format!("u{n}")}),
        Kind::Identity => {
            json!({"name": format!("i{n}"), "source": "192.0.2.10", "user": "u-base"})
        }
        Kind::ApiClient => json!({"name": format!("c{n}"), "scopes": ["read"]}),
    }
}

async fn base_objects(c: &Ctl, admin: &str) {
    for (kind, body) in [
        (
            Kind::Edge,
            json!({"name": "e-base", "address": "198.51.100.7:4443"}),
        ),
        (Kind::User, json!({"name": "u-base"})),
    ] {
        let r = c
            .call(
                Method::POST,
                &format!("/api/v1/{}", kind.path()),
                admin,
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_speaks_client_credentials_and_rfc_6749_errors() {
    let c = Ctl::start("").await;
    let (id, secret) = c.bootstrap("automation", &["policy"], 15).await;

    // client_secret_post.
    let r = c
        .token_raw(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    assert_eq!(r.body["scope"], "policy");
    assert_eq!(r.headers["cache-control"], "no-store");
    // An RFC 9068 access token.
    let tok = r.body["access_token"].as_str().unwrap();
    let parts: Vec<&str> = tok.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());
    for k in [
        "iss",
        "aud",
        "sub",
        "client_id",
        "scope",
        "iat",
        "exp",
        "jti",
    ] {
        assert!(!claims[k].is_null(), "claim {k} missing: {claims}");
    }
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    // client_secret_basic, a narrower scope.
    let r = c
        .token_raw(
            &[("grant_type", "client_credentials"), ("scope", "read")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["scope"], "read");

    // Errors, per RFC 6749 §5.2.
    let bad = |f: Vec<(&'static str, String)>| f;
    let cases: Vec<(Vec<(&str, String)>, Option<(&str, &str)>, StatusCode, &str)> = vec![
        (
            bad(vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", id.clone()),
                ("client_secret", "sls_wrong".into()),
            ]),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            bad(vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", "cl_nobody".into()),
                ("client_secret", secret.clone()),
            ]),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            bad(vec![("grant_type", "client_credentials".into())]),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            bad(vec![
                ("grant_type", "password".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
            ]),
            None,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            bad(vec![
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
            ]),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            bad(vec![
                ("grant_type", "client_credentials".into()),
                ("grant_type", "client_credentials".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
            ]),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            bad(vec![
                ("grant_type", "client_credentials".into()),
                ("scope", "admin".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
            ]),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            bad(vec![
                ("grant_type", "client_credentials".into()),
                ("scope", "root".into()),
                ("client_id", id.clone()),
                ("client_secret", secret.clone()),
            ]),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            bad(vec![
                ("grant_type", "client_credentials".into()),
                ("client_secret", secret.clone()),
            ]),
            Some((&id, &secret)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            bad(vec![("grant_type", "client_credentials".into())]),
            Some((&id, "sls_wrong")),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
    ];
    for (form, basic, status, error) in cases {
        let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.token_raw(&f, basic).await;
        assert_eq!(
            (r.status, r.body["error"].as_str().unwrap_or("")),
            (status, error),
            "{form:?}: {r:?}"
        );
        if status == StatusCode::UNAUTHORIZED && basic.is_some() {
            assert!(r.headers.get("www-authenticate").is_some(), "{r:?}");
        }
    }
    // Not a form.
    let r = Ctl::resp(
        c.http
            .post(format!("{}/oauth/token", c.base))
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_request");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_under_every_scope() {
    let c = Ctl::start("rate_limit_per_second = 10000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    let policy = c.token_with("policy", &["policy"]).await;
    let read = c.token_with("reader", &["read"]).await;
    base_objects(&c, &admin).await;
    let mut n = 0;
    for kind in Kind::ALL {
        let coll = format!("/api/v1/{}", kind.path());
        let writer_ok = |t: &str| {
            t == admin
                || (t == policy && kind.write_scope() == sluice_controller::auth::Scope::Policy)
        };
        for (who, tok) in [("admin", &admin), ("policy", &policy), ("read", &read)] {
            n += 1;
            // List and create.
            let r = c.call(Method::GET, &coll, tok, None).await;
            assert_eq!(r.status, StatusCode::OK, "{who} GET {coll}: {r:?}");
            let r = c
                .call(Method::POST, &coll, tok, Some(sample(kind, &n.to_string())))
                .await;
            let want = if writer_ok(tok) {
                StatusCode::CREATED
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(r.status, want, "{who} POST {coll}: {r:?}");
            if r.status == StatusCode::FORBIDDEN {
                assert_eq!(r.headers["content-type"], "application/problem+json");
                continue;
            }
            let id = r.body["id"].as_str().unwrap().to_string();
            let item = format!("{coll}/{id}");
            // Everyone reads it; only writers change it.
            for (w2, t2) in [("admin", &admin), ("policy", &policy), ("read", &read)] {
                let r = c.call(Method::GET, &item, t2, None).await;
                assert_eq!(r.status, StatusCode::OK, "{w2} GET {item}: {r:?}");
                let mut body = sample(kind, &n.to_string());
                body["description"] = json!(format!("by {w2}"));
                let r = c.call(Method::PUT, &item, t2, Some(body)).await;
                let want = if writer_ok(t2) {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(r.status, want, "{w2} PUT {item}: {r:?}");
                let r = c
                    .call(
                        Method::PATCH,
                        &item,
                        t2,
                        Some(json!({"description": "patched"})),
                    )
                    .await;
                assert_eq!(r.status, want, "{w2} PATCH {item}: {r:?}");
            }
            if kind == Kind::ApiClient {
                let sec = format!("{item}/secrets");
                assert_eq!(
                    c.call(Method::GET, &sec, &read, None).await.status,
                    StatusCode::OK
                );
                assert_eq!(
                    c.call(Method::POST, &sec, &policy, None).await.status,
                    StatusCode::FORBIDDEN
                );
                let r = c
                    .call(
                        Method::POST,
                        &sec,
                        &admin,
                        Some(json!({"expires_in_days": 7})),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
                let sid = r.body["id"].as_str().unwrap();
                let one = format!("{sec}/{sid}");
                assert_eq!(
                    c.call(Method::DELETE, &one, &read, None).await.status,
                    StatusCode::FORBIDDEN
                );
                assert_eq!(
                    c.call(Method::DELETE, &one, &admin, None).await.status,
                    StatusCode::NO_CONTENT
                );
            }
            for (w2, t2) in [("read", &read), ("policy", &policy), ("admin", &admin)] {
                let r = c.call(Method::DELETE, &item, t2, None).await;
                if writer_ok(t2) {
                    assert_eq!(
                        r.status,
                        StatusCode::NO_CONTENT,
                        "{w2} DELETE {item}: {r:?}"
                    );
                    break;
                }
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{w2} DELETE {item}: {r:?}");
            }
        }
    }
    // The rest of the API.
    for (path, method, min) in [
        ("/api/v1/audit", Method::GET, "read"),
        ("/api/v1/status", Method::GET, "read"),
        ("/api/v1/maintenance", Method::GET, "read"),
    ] {
        for tok in [&admin, &policy, &read] {
            assert_eq!(
                c.call(method.clone(), path, tok, None).await.status,
                StatusCode::OK,
                "{path} ({min})"
            );
        }
    }
    for tok in [&policy, &read] {
        let r = c
            .call(
                Method::PUT,
                "/api/v1/maintenance",
                tok,
                Some(json!({"on": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    }
    // No token, a malformed one, one signed by someone else.
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic Zm9vOmJhcg=="),
        Some("Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0."),
    ] {
        let mut rb = c.http.get(format!("{}/api/v1/tenants", c.base));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let r = Ctl::resp(rb.send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}: {r:?}");
        assert!(r.headers.get("www-authenticate").is_some());
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    // The description is public and lists every collection.
    let r = Ctl::resp(
        c.http
            .get(format!("{}/openapi.json", c.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    for kind in Kind::ALL {
        assert!(
            r.body["paths"][format!("/api/v1/{}", kind.path())].is_object(),
            "{kind:?}"
        );
    }
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_and_filter() {
    let c = Ctl::start("rate_limit_per_second = 10000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    for i in 0..120 {
        let name = if i % 10 == 0 {
            format!("Sales-{i:03}")
        } else {
            format!("eng-{i:03}")
        };
        let r = c
            .call(
                Method::POST,
                "/api/v1/groups",
                &admin,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    // Default page 50, then the rest, in name order, no repeats.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &after {
            Some(a) => format!("/api/v1/groups?after={a}"),
            None => "/api/v1/groups".into(),
        };
        let r = c.call(Method::GET, &q, &admin, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let items = r.body["items"].as_array().unwrap();
        assert!(items.len() <= 50);
        seen.extend(
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match r.body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 120));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    // limit, exact name, substring (case-insensitive), wildcards literal.
    let r = c
        .call(Method::GET, "/api/v1/groups?limit=5000", &admin, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 120);
    assert!(r.body["next"].is_null());
    let r = c
        .call(Method::GET, "/api/v1/groups?limit=7", &admin, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 7);
    let r = c
        .call(Method::GET, "/api/v1/groups?name=eng-005", &admin, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = c
        .call(
            Method::GET,
            "/api/v1/groups?name_contains=sales",
            &admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 12);
    let r = c
        .call(
            Method::GET,
            "/api/v1/groups?name_contains=%25",
            &admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0, "% is literal");
    let r = c
        .call(Method::GET, "/api/v1/groups?name_contains=_", &admin, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0, "_ is literal");
    for bad in ["limit=0", "limit=5001", "limit=x", "colour=red", "limit=-1"] {
        let r = c
            .call(Method::GET, &format!("/api/v1/groups?{bad}"), &admin, None)
            .await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {r:?}"
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    // The audit log pages and filters too.
    let r = c
        .call(
            Method::GET,
            "/api/v1/audit?kind=group&action=create&limit=100",
            &admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 100);
    let next = r.body["next"].as_str().unwrap().to_string();
    let r = c
        .call(
            Method::GET,
            &format!("/api/v1/audit?kind=group&action=create&before={next}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 20);
    let r = c
        .call(
            Method::GET,
            "/api/v1/audit?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
            &admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
    let r = c
        .call(Method::GET, "/api/v1/audit?since=yesterday", &admin, None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_get_412_and_a_taken_name_409() {
    let c = Ctl::start("rate_limit_per_second = 10000").await;
    let tok = c.token_with("admin", &["admin"]).await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/app-profiles",
            &tok,
            Some(json!({"name": "staff"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.etag(), "\"1\"");
    let item = format!("/api/v1/app-profiles/{}", r.body["id"].as_str().unwrap());
    // Two editors read version 1; the first write wins, the second gets 412.
    let a = c
        .call_with(
            Method::PATCH,
            &item,
            &tok,
            Some(json!({"exclude": ["203.0.113.0/24"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.etag(), "\"2\"");
    let b = c
        .call_with(
            Method::PATCH,
            &item,
            &tok,
            Some(json!({"exclude": ["198.51.100.0/24"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(b.status, StatusCode::PRECONDITION_FAILED, "{b:?}");
    let b = c
        .call_with(
            Method::PUT,
            &item,
            &tok,
            Some(json!({"name": "staff"})),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(b.status, StatusCode::PRECONDITION_FAILED, "{b:?}");
    let b = c
        .call_with(Method::DELETE, &item, &tok, None, &[("if-match", "\"1\"")])
        .await;
    assert_eq!(b.status, StatusCode::PRECONDITION_FAILED, "{b:?}");
    let r = c.call(Method::GET, &item, &tok, None).await;
    assert_eq!(
        r.body["exclude"],
        json!(["203.0.113.0/24"]),
        "the loser changed nothing"
    );
    // Many at once on the same version: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let http = c.http.clone();
        let url = format!("{}{item}", c.base);
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            http.patch(url)
                .bearer_auth(tok)
                .header("if-match", "\"2\"")
                .header("content-type", "application/merge-patch+json")
                .body(json!({"description": format!("editor {i}")}).to_string())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    let mut conflict = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PRECONDITION_FAILED => conflict += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, conflict), (1, 7));
    // The same name twice, at once: one 201, the other 409.
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let http = c.http.clone();
        let url = format!("{}/api/v1/groups", c.base);
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(tok)
                .json(&json!({"name": "twins"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut got: Vec<_> = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort();
    assert_eq!(got, vec![StatusCode::CREATED, StatusCode::CONFLICT]);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let c = Ctl::start(
        "rate_limit_per_second = 5\nrate_limit_burst = 10\ntoken_rate_limit_per_minute = 6",
    )
    .await;
    let (id, secret) = c.bootstrap("busy", &["read"], 60).await;
    let tok = c.token(&id, &secret).await;
    let other = c.token_with("quiet", &["read"]).await;
    let mut limited = None;
    for _ in 0..40 {
        let r = c.call(Method::GET, "/api/v1/groups", &tok, None).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = limited.expect("40 requests at once exceed 5/s with a burst of 10");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(r.body["status"], 429);
    // Another client is not held back.
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &other, None)
            .await
            .status,
        StatusCode::OK
    );
    // The token endpoint: a handful a minute per client id (and address).
    let mut got429 = false;
    for _ in 0..10 {
        let r = c
            .token_raw(
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    ("client_secret", "sls_guess"),
                ],
                None,
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.get("retry-after").is_some());
            got429 = true;
            break;
        }
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert!(got429, "guessing secrets is rate limited");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_are_revoked_at_once() {
    let c = Ctl::start("rate_limit_per_second = 10000\ntoken_rate_limit_per_minute = 1000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    let ok = |r: &common::Resp| r.status == StatusCode::OK;

    // Expired: a token whose exp has passed (issued by the controller's own
    // key, 1 s in the past).
    let (id, secret) = c.bootstrap("short", &["read"], 1).await;
    let (old, _) = c.running.app.keys.issue(&id, "read", -1, 0);
    let r = c.call(Method::GET, "/api/v1/groups", &old, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let t = c.token(&id, &secret).await;
    assert!(ok(&c.call(Method::GET, "/api/v1/groups", &t, None).await));

    let client = |id: &str| format!("/api/v1/api-clients/{id}");
    // Deactivated: its live token stops at once, and it gets no new one.
    let (id, secret) = c.bootstrap("deactivated", &["read"], 60).await;
    let t = c.token(&id, &secret).await;
    assert!(ok(&c.call(Method::GET, "/api/v1/groups", &t, None).await));
    let r = c
        .call(
            Method::PATCH,
            &client(&id),
            &admin,
            Some(json!({"status": "inactive"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &t, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .token_raw(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.body["error"], "unauthorized_client", "{r:?}");
    // Reactivated: old tokens stay dead, new ones work.
    c.call(
        Method::PATCH,
        &client(&id),
        &admin,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &t, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let t = c.token(&id, &secret).await;
    assert!(ok(&c.call(Method::GET, "/api/v1/groups", &t, None).await));

    // Secrets rotated: a new secret, then the old one removed.
    let (id, secret) = c.bootstrap("rotated", &["read"], 60).await;
    let t = c.token(&id, &secret).await;
    let r = c
        .call(
            Method::POST,
            &format!("{}/secrets", client(&id)),
            &admin,
            Some(json!({"expires_in_days": 30})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let new_secret = r.body["secret"].as_str().unwrap().to_string();
    let new_id = r.body["id"].as_str().unwrap().to_string();
    let audit = c
        .call(
            Method::GET,
            &format!("/api/v1/audit?object_id={id}&action=add_secret"),
            &admin,
            None,
        )
        .await;
    assert!(
        audit.body["items"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&new_id),
        "the audit entry names the secret"
    );
    assert!(
        !audit.body.to_string().contains(&new_secret),
        "never the secret itself"
    );
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &t, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let t = c.token(&id, &secret).await;
    let secrets = c
        .call(
            Method::GET,
            &format!("{}/secrets", client(&id)),
            &admin,
            None,
        )
        .await;
    assert!(
        !secrets.body.to_string().contains("sls_"),
        "secrets are never shown again"
    );
    let old_id = secrets.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|s| s != r.body["id"].as_str().unwrap())
        .unwrap();
    let r = c
        .call(
            Method::DELETE,
            &format!("{}/secrets/{old_id}", client(&id)),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &t, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .token_raw(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the removed secret is refused"
    );
    let t = c.token(&id, &new_secret).await;
    assert!(ok(&c.call(Method::GET, "/api/v1/groups", &t, None).await));

    // Deleted.
    c.call(Method::DELETE, &client(&id), &admin, None).await;
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &t, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // An expired secret is refused (made expired in the store: the API
    // gives at least a day).
    let (id, secret) = c.bootstrap("expired-secret", &["read"], 60).await;
    sqlx::query("UPDATE client_secrets SET expires_at = 1 WHERE client_id = $1")
        .bind(&id)
        .execute(&c.store.db.pool)
        .await
        .unwrap();
    let r = c
        .token_raw(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_refuses_every_write_and_serves_reads() {
    let c = Ctl::start("rate_limit_per_second = 10000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    let (rid, rsecret) = c.bootstrap("reader", &["read"], 60).await;
    base_objects(&c, &admin).await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/groups",
            &admin,
            Some(json!({"name": "before"})),
        )
        .await;
    let item = format!("/api/v1/groups/{}", r.body["id"].as_str().unwrap());
    let r = c
        .call(
            Method::PUT,
            "/api/v1/maintenance",
            &admin,
            Some(json!({"on": true, "reason": "upgrading the store"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let before = c.counters().await;
    for kind in Kind::ALL {
        let r = c
            .call(
                Method::POST,
                &format!("/api/v1/{}", kind.path()),
                &admin,
                Some(sample(kind, "m")),
            )
            .await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{kind:?}: {r:?}");
        assert!(r.headers.get("retry-after").is_some());
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("upgrading the store"),
            "{r:?}"
        );
    }
    for (m, body) in [
        (Method::PUT, Some(json!({"name": "before"}))),
        (Method::PATCH, Some(json!({"description": "x"}))),
        (Method::DELETE, None),
    ] {
        let r = c.call(m.clone(), &item, &admin, body).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{m}: {r:?}");
    }
    assert_eq!(c.counters().await, before, "nothing written");
    // Reads and tokens still work.
    assert_eq!(
        c.call(Method::GET, &item, &admin, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.call(Method::GET, "/api/v1/groups", &admin, None)
            .await
            .status,
        StatusCode::OK
    );
    let r = c
        .call(Method::GET, "/api/v1/maintenance", &admin, None)
        .await;
    assert_eq!(r.body, json!({"on": true, "reason": "upgrading the store"}));
    let reader = c.token(&rid, &rsecret).await;
    assert_eq!(
        c.call(Method::GET, "/api/v1/audit", &reader, None)
            .await
            .status,
        StatusCode::OK
    );
    // The host's operator cannot write either.
    let local = c.bootstrap_err("during").await;
    assert!(local.contains("maintenance"), "{local}");
    // A full admin turns it off.
    let r = c
        .call(
            Method::PUT,
            "/api/v1/maintenance",
            &admin,
            Some(json!({"on": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .call(
            Method::POST,
            "/api/v1/groups",
            &admin,
            Some(json!({"name": "after"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_has_its_audit_entry_and_the_log_is_read_only() {
    let c = Ctl::start("rate_limit_per_second = 10000").await;
    let (id, secret) = c.bootstrap("auditor", &["admin"], 60).await;
    let admin = c.token(&id, &secret).await;
    let (_, n0) = c.counters().await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/bypass-lists",
            &admin,
            Some(json!({"name": "saas", "prefixes": ["203.0.113.0/24"]})),
        )
        .await;
    let item = format!("/api/v1/bypass-lists/{}", r.body["id"].as_str().unwrap());
    c.call(
        Method::PATCH,
        &item,
        &admin,
        Some(json!({"domains": ["*.saas.example"]})),
    )
    .await;
    c.call(Method::DELETE, &item, &admin, None).await;
    c.call(
        Method::PUT,
        "/api/v1/maintenance",
        &admin,
        Some(json!({"on": true, "reason": "r"})),
    )
    .await;
    c.call(
        Method::PUT,
        "/api/v1/maintenance",
        &admin,
        Some(json!({"on": false})),
    )
    .await;
    let (_, n1) = c.counters().await;
    assert_eq!(n1 - n0, 5, "one entry per write");
    let r = c
        .call(Method::GET, "/api/v1/audit?limit=5", &admin, None)
        .await;
    let items = r.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "maintenance_off",
            "maintenance_on",
            "delete",
            "update",
            "create"
        ]
    );
    for i in items {
        assert_eq!(i["actor"], format!("client:{id}"));
        assert_eq!(i["address"], "127.0.0.1");
        assert!(i["at"].as_str().unwrap().ends_with('Z'));
    }
    let update = &items[3];
    assert_eq!(update["before"]["domains"], json!([]));
    assert_eq!(update["after"]["domains"], json!(["*.saas.example"]));
    assert!(items[2]["after"].is_null() && items[4]["before"].is_null());
    // The bootstrap client's own creation names the host's operator.
    let r = c
        .call(
            Method::GET,
            &format!("/api/v1/audit?object_id={id}"),
            &admin,
            None,
        )
        .await;
    assert!(
        r.body["items"][0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("local:")
    );
    assert!(
        !r.body.to_string().contains(&secret),
        "no secret in the audit log"
    );
    // Nothing writes the log through the API.
    for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let r = c
            .call(m.clone(), "/api/v1/audit", &admin, Some(json!({})))
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
    assert_eq!(c.counters().await.1, n1);
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_every_endpoint_gets_a_clear_4xx_and_changes_nothing() {
    let c = Ctl::start("rate_limit_per_second = 10000").await;
    let admin = c.token_with("admin", &["admin"]).await;
    base_objects(&c, &admin).await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/app-profiles",
            &admin,
            Some(json!({"name": "staff"})),
        )
        .await;
    let profile = format!("/api/v1/app-profiles/{}", r.body["id"].as_str().unwrap());
    let before = c.counters().await;
    let hostile = [
        json!("'; DROP TABLE objects; --"),
        json!("<script>alert(1)</script>"),
        json!("a\u{0000}b"),
        json!("\u{202e}evil"),
        json!("x".repeat(100_000)),
        json!(["nested"]),
        json!(12),
        json!(null),
    ];
    for kind in Kind::ALL {
        let coll = format!("/api/v1/{}", kind.path());
        // Wrong types, unknown fields, hostile names.
        let mut bodies = vec![
            json!([]),
            json!("text"),
            json!({}),
            {
                let mut b = sample(kind, "x");
                b["colour"] = json!("red");
                b
            },
            {
                let mut b = sample(kind, "x");
                b["name"] = json!(42);
                b
            },
        ];
        for h in &hostile {
            let mut b = sample(kind, "x");
            b["name"] = h.clone();
            bodies.push(b);
        }
        for b in bodies {
            let r = c.call(Method::POST, &coll, &admin, Some(b.clone())).await;
            assert!(r.status.is_client_error(), "{kind:?} {b}: {r:?}");
            assert_eq!(r.headers["content-type"], "application/problem+json");
            assert!(!r.body["detail"].as_str().unwrap().is_empty());
        }
        // Wrong content type, malformed JSON, too large.
        let r = c
            .raw(Method::POST, &coll, &admin, "text/plain", b"{}".to_vec())
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
        let r = c
            .raw(
                Method::POST,
                &coll,
                &admin,
                "application/json",
                b"{\"name\": ".to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        let big = format!("{{\"name\": \"{}\"}}", "a".repeat(2 << 20));
        // Refused from its Content-Length, unread: the client sees the 413
        // or, if it is still writing when the server closes, a broken pipe.
        let sent = c
            .http
            .post(format!("{}{coll}", c.base))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(big.into_bytes())
            .send()
            .await;
        match sent {
            Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
            Err(e) => assert!(e.is_request(), "{e}"),
        }
        // Ids that do not exist or are hostile.
        for id in ["nope", "..%2F..%2Fetc", "%27%20OR%201%3D1"] {
            let r = c
                .call(Method::GET, &format!("{coll}/{id}"), &admin, None)
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {r:?}");
            let r = c
                .call(Method::DELETE, &format!("{coll}/{id}"), &admin, None)
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {r:?}");
        }
        let r = c
            .call(
                Method::GET,
                &format!("{coll}?name_contains=%27%20OR%201%3D1%20--"),
                &admin,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
    }
    // Values the policy refuses: a prefix with host bits, an unknown group,
    // a bad If-Match, a patch that is not an object.
    for (patch, want) in [
        (
            json!({"exclude": ["203.0.113.1/24"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"groups": ["nobody"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"fail": "sometimes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"source_ports": [70000]}), StatusCode::BAD_REQUEST),
        (json!({"include": "0.0.0.0/0"}), StatusCode::BAD_REQUEST),
        (json!([1, 2]), StatusCode::BAD_REQUEST),
    ] {
        let r = c
            .call(Method::PATCH, &profile, &admin, Some(patch.clone()))
            .await;
        assert_eq!(r.status, want, "{patch}: {r:?}");
    }
    let r = c
        .call(
            Method::PATCH,
            &profile,
            &admin,
            Some(json!({"exclude": ["203.0.113.1/24"]})),
        )
        .await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("host bits"),
        "{r:?}"
    );
    let r = c
        .call_with(
            Method::PATCH,
            &profile,
            &admin,
            Some(json!({})),
            &[("if-match", "soon")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Deleting what others use is refused with the reason.
    let r = c
        .call(
            Method::POST,
            "/api/v1/tenants",
            &admin,
            Some(sample(Kind::Tenant, "keep")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let before = (before.0 + 1, before.1 + 1);
    let edges = c
        .call(Method::GET, "/api/v1/edges?name=e-base", &admin, None)
        .await;
    let e = format!(
        "/api/v1/edges/{}",
        edges.body["items"][0]["id"].as_str().unwrap()
    );
    let r = c.call(Method::DELETE, &e, &admin, None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert!(
        r.body["detail"].as_str().unwrap().contains("e-base"),
        "{r:?}"
    );
    // Unknown paths and methods.
    let r = c.call(Method::GET, "/api/v1/nothing", &admin, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(
        c.counters().await,
        before,
        "no bad request changed anything"
    );
    c.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_gateway_files_import_and_compile_back() {
    let c = Ctl::start("").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lab = root.join("tests/configs/gateway.toml");
    let done = sluice_controller::import::import(&c.store, &lab)
        .await
        .unwrap();
    let kinds: Vec<&str> = done.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kinds.contains(&"tenant") && kinds.contains(&"app_profile") && kinds.contains(&"gateway"),
        "{kinds:?}"
    );
    // Importing again replaces, it does not duplicate.
    let again = sluice_controller::import::import(&c.store, &lab)
        .await
        .unwrap();
    assert_eq!(done.len(), again.len());
    let objects = c.store.policy_objects().await.unwrap();
    let org = sluice_controller::compile::Org::from_objects(&objects).unwrap();
    assert_eq!(org.gateways.len(), 1);
    let text = sluice_controller::compile::gateway_file(
        "branch-1",
        &org.gateway_policy(&org.gateways[0]),
        sluice_controller::compile::NO_CERTS,
    );
    let cfg = sluice_config::GatewayConfig::parse(std::path::Path::new("x.toml"), &text).unwrap();
    assert!(text.contains("203.0.113.20/32"), "{text}");
    assert!(format!("{:?}", cfg.policy).contains("default"));
    // A file with profiles, rules, identities and tenants (the README's).
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("[policy]\ndefault_profile = \"staff\"")
        .unwrap();
    let end = start + readme[start..].find("```").unwrap();
    let policy = &readme[start..end];
    let dir = c.dir.path();
    for f in ["ca.pem", "branch-1.pem", "branch-1.key"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let file = dir.join("profiles.toml");
    std::fs::write(
        &file,
        format!("[gateway]\nname = \"branch-9\"\nlan = \"lan0\"\nwan = \"wan0\"\n[tunnel]\nedge = \"198.51.100.5:4443\"\nserver_name = \"edge.example.net\"\nca = \"ca.pem\"\ncert = \"branch-1.pem\"\nkey = \"branch-1.key\"\n{policy}"),
    )
    .unwrap();
    let done = sluice_controller::import::import(&c.store, &file)
        .await
        .unwrap();
    assert!(
        done.iter().any(|(k, n)| *k == Kind::Tenant && n == "corp"),
        "{done:?}"
    );
    assert!(
        done.iter()
            .any(|(k, n)| *k == Kind::Identity && n.starts_with("192.0.2.10")),
        "{done:?}"
    );
    let objects = c.store.policy_objects().await.unwrap();
    let org = sluice_controller::compile::Org::from_objects(&objects).unwrap();
    let g = org.gateways.iter().find(|g| g.name == "branch-9").unwrap();
    let text = sluice_controller::compile::gateway_file(
        "branch-9",
        &org.gateway_policy(g),
        sluice_controller::compile::NO_CERTS,
    );
    let cfg = sluice_config::GatewayConfig::parse(std::path::Path::new("x.toml"), &text).unwrap();
    let p = format!("{:?}", cfg.policy);
    assert!(
        p.contains("engineering") && p.contains("kiosk") && p.contains("corp"),
        "{text}"
    );
    c.running.stop().await;
}

/// Review h29: bounds before authentication and on what a page holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_hold_against_one_address_one_client_and_large_pages() {
    let c = Ctl::start("rate_limit_per_second = 10000\nmax_connections_per_address = 4\ntoken_rate_limit_per_minute = 5").await;
    // A fifth connection from one address is closed at once (before TLS).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(c.running.addr)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut fifth = tokio::net::TcpStream::connect(c.running.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut fifth, &mut buf),
    )
    .await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the fifth connection is closed: {r:?}"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Guessing a client's secret from one address does not lock its owner
    // out from another (failures count per client and address).
    let (id, secret) = c.bootstrap("victim", &["admin"], 60).await;
    for _ in 0..6 {
        let r = c
            .token_raw(
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    ("client_secret", "sls_guess"),
                ],
                None,
            )
            .await;
        assert!(
            r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::TOO_MANY_REQUESTS,
            "{r:?}"
        );
    }
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .tls_backend_preconfigured({
            use rustls_pki_types::{CertificateDer, pem::PemObject as _};
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(c.running.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
        })
        .build()
        .unwrap();
    let r = other
        .post(format!("{}/oauth/token", c.base))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the owner, from its own address, still gets a token"
    );
    let admin: Value = r.json().await.unwrap();
    let admin = admin["access_token"].as_str().unwrap().to_string();
    // A list named twice is refused before anything is expanded.
    c.call(
        Method::POST,
        "/api/v1/bypass-lists",
        &admin,
        Some(json!({"name": "l", "prefixes": ["203.0.113.0/24"]})),
    )
    .await;
    let r = c
        .call(
            Method::POST,
            "/api/v1/app-profiles",
            &admin,
            Some(json!({"name": "p", "bypass_lists": ["l", "l"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    // Pages end by size too: eight objects of ~0.8 MB each come in pages
    // of a little over 4 MB.
    for i in 0..8 {
        let prefixes: Vec<String> = (0..4000)
            .map(|j| format!("2001:db8:{i:x}:{j:x}::/64"))
            .collect();
        let domains: Vec<String> = (0..4000)
            .map(|j| format!("host-{j}.{}.example", "x".repeat(150)))
            .collect();
        let r = c
            .call(
                Method::POST,
                "/api/v1/bypass-lists",
                &admin,
                Some(json!({"name": format!("big-{i}"), "prefixes": prefixes, "domains": domains})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.status);
    }
    let r = c
        .call(
            Method::GET,
            "/api/v1/bypass-lists?name_contains=big&limit=5000",
            &admin,
            None,
        )
        .await;
    let n = r.body["items"].as_array().unwrap().len();
    assert!((1..8).contains(&n), "a page of {n}");
    let next = r.body["next"].as_str().expect("a next page").to_string();
    let r = c
        .call(
            Method::GET,
            &format!("/api/v1/bypass-lists?name_contains=big&limit=5000&after={next}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(n + r.body["items"].as_array().unwrap().len(), 8);
    c.running.stop().await;
}
