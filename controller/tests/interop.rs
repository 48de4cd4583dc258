//! Interoperability with independent implementations: an OAuth 2.0 client
//! library of another ecosystem (Python's authlib) against the token
//! endpoint and the API, and an independent validator of the OpenAPI 3.1
//! description. Both come from PyPI into the virtual environment `cargo
//! xtask setup` makes (`/opt/sluice-ci/venv`, or `SLUICE_PYTHON`); without
//! it these tests fail, saying so.
mod common;

use std::process::Command;

use common::Ctl;
use serde_json::Value;

fn python() -> String {
    let p =
        std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "/opt/sluice-ci/venv/bin/python".into());
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} is missing: run `cargo xtask setup` (it installs authlib and openapi-spec-validator from PyPI)"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_gets_a_token_both_ways_and_uses_it() {
    let py = python();
    let c = Ctl::start("").await;
    let (id, secret) = c.bootstrap("automation", &["policy"], 30).await;
    let ca = c.dir.path().join("ca-for-python.pem");
    std::fs::write(&ca, &c.running.ca_pem).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/authlib_client.py"
    );
    let base = c.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args([script, &base, ca.to_str().unwrap(), &id, &secret])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "authlib client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for m in ["client_secret_basic", "client_secret_post"] {
        assert_eq!(v[m]["token_type"], "Bearer", "{v}");
        assert_eq!(v[m]["expires_in"], 1800, "{v}");
        assert_eq!(v[m]["scope"], "policy", "{v}");
        assert_eq!(v[m]["status"], 200, "{v}");
    }
    assert_eq!(v["create"]["status"], 201, "{v}");
    assert_eq!(v["create"]["etag"], "\"1\"", "{v}");
    assert_eq!(v["wrong_secret"], "invalid_client", "{v}");
    c.running.stop().await;
}

#[test]
fn the_openapi_description_passes_an_independent_validator() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    let doc = sluice_controller::openapi::document();
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(py)
        .args(["-m", "openapi_spec_validator", "--schema", "3.1.0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the description: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It describes every route the router serves.
    for kind in sluice_controller::model::Kind::ALL {
        for p in [
            format!("/api/v1/{}", kind.path()),
            format!("/api/v1/{}/{{id}}", kind.path()),
        ] {
            assert!(doc["paths"][&p].is_object(), "{p}");
        }
    }
}
