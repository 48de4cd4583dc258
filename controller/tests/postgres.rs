//! The controller on PostgreSQL (Debian's server, a private instance per
//! test on a loopback port): the same migrations and write path, and
//! several controllers sharing one store: any serves any client, a change
//! through one is seen by the others, and losing one loses nothing.
mod common;

use common::{Ctl, pg::Pg};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sluice_controller::{
    db::Db,
    model::Kind,
    store::{Op, Origin, Store, StoreError},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_and_the_write_path_work_on_postgresql() {
    let pg = Pg::start();
    let url = pg.database("sluice");
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(
        db.migrate(None).await.unwrap(),
        (1..=sluice_controller::db::latest_version()).collect::<Vec<_>>()
    );
    assert!(
        db.migrate(None).await.unwrap().is_empty(),
        "a second run applies nothing"
    );
    assert_eq!(
        db.schema_version().await.unwrap(),
        sluice_controller::db::latest_version()
    );
    let store = Store::new(db).await.unwrap();
    let o = Origin::local();
    let w = store
        .write(
            &o,
            "create",
            Op::Create {
                kind: Kind::Group,
                body: json!({"name": "eng"}),
            },
            vec![],
        )
        .await
        .unwrap();
    let id = w.record.unwrap().id;
    assert_eq!(w.revision, 1);
    let e = store
        .write(
            &o,
            "create",
            Op::Create {
                kind: Kind::Group,
                body: json!({"name": "eng"}),
            },
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NameTaken { .. }), "{e}");
    let e = store
        .write(
            &o,
            "update",
            Op::Replace {
                kind: Kind::Group,
                id: id.clone(),
                body: json!({"name": "eng2"}),
                if_match: Some(7),
            },
            vec![],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::VersionMismatch { current: 1, .. }),
        "{e}"
    );
    let w = store
        .write(
            &o,
            "update",
            Op::Replace {
                kind: Kind::Group,
                id: id.clone(),
                body: json!({"name": "eng2"}),
                if_match: Some(1),
            },
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(w.record.unwrap().version, 2);
    let page = store
        .list(
            Kind::Group,
            &sluice_controller::store::ListQuery {
                name_contains: Some("ENG".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    store
        .set_maintenance(&o, true, Some("pg test"))
        .await
        .unwrap();
    let e = store
        .write(
            &o,
            "delete",
            Op::Delete {
                kind: Kind::Group,
                id: id.clone(),
                if_match: None,
            },
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Maintenance(_)), "{e}");
    store.set_maintenance(&o, false, None).await.unwrap();
    store
        .write(
            &o,
            "delete",
            Op::Delete {
                kind: Kind::Group,
                id,
                if_match: None,
            },
            vec![],
        )
        .await
        .unwrap();
    let audit = store.audit(&Default::default()).await.unwrap();
    let actions: Vec<_> = audit.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "delete",
            "maintenance_off",
            "maintenance_on",
            "update",
            "create"
        ]
    );
    assert_eq!(store.revision().await.unwrap(), 3);
    // A policy the gateways could not load is refused here too.
    let e = store
        .write(
            &o,
            "create",
            Op::Create {
                kind: Kind::AppProfile,
                body: json!({"name": "p", "exclude": ["203.0.113.1/24"]}),
            },
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Policy(_)), "{e}");
    assert_eq!(
        store.revision().await.unwrap(),
        3,
        "the refused change left no revision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_share_one_store_and_losing_one_loses_nothing() {
    let pg = Pg::start();
    let url = pg.database("shared");
    let extra = format!("database = \"{url}\"\nrate_limit_per_second = 10000");
    // Both start at once: one migrates, the other waits for it.
    // With URLs of their own: each accepts the tokens the other issues.
    let (ea, eb) = (
        format!("{extra}\nurl = \"https://controller-a.example:8443\""),
        format!("{extra}\nurl = \"https://controller-b.example:8443\""),
    );
    let (a, b) = tokio::join!(Ctl::start(&ea), Ctl::start(&eb));
    let (id, secret) = a.bootstrap("automation", &["admin"], 60).await;
    // A token from one controller works on the other (its signing key is
    // in the shared store).
    let tok = a.token(&id, &secret).await;
    let r = b.call(Method::GET, "/api/v1/status", &tok, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["database"], "postgres");
    // A change through one is read through the other, and its revision
    // reaches the other's watchers (polled every 250 ms).
    let mut watch_b = b.store.watch_revision();
    let start = *watch_b.borrow();
    let r = a
        .call(
            Method::POST,
            "/api/v1/groups",
            &tok,
            Some(json!({"name": "via-a"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        watch_b.wait_for(|r| *r > start),
    )
    .await
    .expect("B saw A's revision within 2 s")
    .unwrap();
    let r = b
        .call(Method::GET, "/api/v1/groups?name=via-a", &tok, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // Writers on both serialise: no lost update, no duplicate sequence.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (http, base) = if i % 2 == 0 {
            (a.http.clone(), a.base.clone())
        } else {
            (b.http.clone(), b.base.clone())
        };
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/api/v1/groups"))
                .bearer_auth(tok)
                .json(&json!({"name": format!("g{i}")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit ORDER BY seq")
        .fetch_all(&a.store.db.pool)
        .await
        .unwrap();
    let n = seqs.len() as i64;
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "one audit entry per write, in one sequence"
    );
    // A is lost; B carries on with the same token, and a new controller
    // finds everything.
    a.running.stop().await;
    let r = b
        .call(
            Method::POST,
            "/api/v1/groups",
            &tok,
            Some(json!({"name": "after-a"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let c = Ctl::start(&extra).await;
    let r = c
        .call(Method::GET, "/api/v1/groups?limit=100", &tok, None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 22, "{r:?}");
    b.running.stop().await;
    c.running.stop().await;
}
