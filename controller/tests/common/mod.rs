//! A controller on loopback with its own `SQLite` store in a temporary
//! directory, and an HTTPS client that trusts its CA.
#![allow(dead_code, unreachable_pub)]

pub mod slapd;

use std::sync::Arc;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use sluice_controller::{
    cli::{Running, create_client_local, start},
    config::ControllerConfig,
    db::Db,
    model::ApiClient,
    store::Store,
};

pub struct Ctl {
    pub running: Running,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub store: Store,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Resp {
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

pub fn client_for(ca_pem: &str) -> reqwest::Client {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

impl Ctl {
    /// A controller with `extra` lines in its `[controller]` section.
    pub async fn start(extra: &str) -> Ctl {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.toml");
        let text = format!(
            "[controller]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nserver_names = [\"127.0.0.1\"]\n{extra}\n",
            dir.path().join("state").display()
        );
        std::fs::write(&path, &text).unwrap();
        let mut cfg = ControllerConfig::parse(&path, &text).unwrap();
        cfg.directory_fetcher = Some(vec![env!("CARGO_BIN_EXE_sluice-controller").into()]);
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        let db = Db::connect(&cfg.database).await.unwrap();
        db.migrate(None).await.unwrap();
        let store = Store::new(db).await.unwrap();
        let running = start(&cfg, store.clone()).await.unwrap();
        let base = format!("https://127.0.0.1:{}", running.addr.port());
        let http = client_for(&running.ca_pem);
        Ctl {
            running,
            base,
            http,
            dir,
            store,
        }
    }

    /// Makes an API client on the host (the bootstrap path): (id, secret).
    pub async fn bootstrap(&self, name: &str, scopes: &[&str], lifetime: u32) -> (String, String) {
        let spec = ApiClient {
            name: name.into(),
            description: String::new(),
            status: "active".into(),
            token_lifetime_minutes: lifetime,
            scopes: scopes
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        };
        create_client_local(&self.store, &spec, 30).await.unwrap()
    }

    /// [`Ctl::bootstrap`], expected to fail: the error.
    pub async fn bootstrap_err(&self, name: &str) -> String {
        let spec = ApiClient {
            name: name.into(),
            description: String::new(),
            status: "active".into(),
            token_lifetime_minutes: 60,
            scopes: vec!["read".into()],
        };
        create_client_local(&self.store, &spec, 30)
            .await
            .unwrap_err()
            .to_string()
    }

    /// The token endpoint with `client_secret_post`.
    pub async fn token_raw(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Resp {
        let mut rb = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some((u, p)) = basic {
            rb = rb.basic_auth(u, Some(p));
        }
        Self::resp(rb.send().await.unwrap()).await
    }

    pub async fn token(&self, id: &str, secret: &str) -> String {
        let r = self
            .token_raw(
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", id),
                    ("client_secret", secret),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["access_token"].as_str().unwrap().to_string()
    }

    /// A token for a new client with `scopes`.
    pub async fn token_with(&self, name: &str, scopes: &[&str]) -> String {
        let (id, secret) = self.bootstrap(name, scopes, 60).await;
        self.token(&id, &secret).await
    }

    pub async fn resp(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A request with a JSON body (or none).
    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Resp {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).unwrap());
        }
        Self::resp(rb.send().await.unwrap()).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        ct: &str,
        body: Vec<u8>,
    ) -> Resp {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", ct)
            .body(body);
        Self::resp(rb.send().await.unwrap()).await
    }

    /// (revision, number of audit entries) straight from the store.
    pub async fn counters(&self) -> (i64, i64) {
        let rev = self.store.revision().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.store.db.pool)
            .await
            .unwrap();
        (rev, n)
    }
}

pub mod pg;
