//! `sluice controller ...`: run the controller, and the operations an
//! operator does on its host (import a gateway file, back the store up,
//! make the first API client, print the API description).
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Subcommand;

use crate::{
    api::App,
    auth::Keys,
    config::ControllerConfig,
    db::Db,
    model::{ApiClient, Kind, Spec as _},
    pki::{Ca, Paths},
    store::{Extra, Op, Origin, Store},
};

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/sluice/controller.toml";

/// `sluice controller` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: the admin API and token endpoint over HTTPS.
    /// Migrates the store first (read-only meanwhile).
    Run,
    /// Apply the store's pending schema migrations and exit.
    Migrate,
    /// Import a gateway configuration file (today's format) as objects.
    Import {
        /// The gateway file.
        file: PathBuf,
    },
    /// Write a consistent copy of the `SQLite` store to DEST.
    Backup {
        /// Where (must not exist).
        dest: PathBuf,
    },
    /// Make an API client on this host (the first one, before any token
    /// exists), and print its id and secret once.
    CreateClient {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its scopes: read, policy, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Its tokens' lifetime in minutes (1 to 1440).
        #[arg(long, default_value_t = 60)]
        token_lifetime_minutes: u32,
        /// Days until its secret expires (1 to 730).
        #[arg(long, default_value_t = 90)]
        secret_days: u32,
    },
    /// Make a portal administrator on this host (the first one; later
    /// ones too). The password is read from standard input (its first
    /// line); the TOTP secret for the authenticator app is printed once.
    CreateAdmin {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its role: read or full.
        #[arg(long, default_value = "full")]
        role: String,
    },
    /// Print the admin API's `OpenAPI` description.
    Openapi,
    /// Read the configured directory and print what it holds (JSON). The
    /// controller runs this in a child process for each sync, so that a
    /// directory sending what its LDAP library cannot parse ends that
    /// process, not the controller.
    #[command(hide = true)]
    DirectoryFetch,
}

/// Runs `cmd` with the configuration at `config` (blocking; the
/// controller's own runtime).
pub fn main(config: &std::path::Path, cmd: Command) -> anyhow::Result<()> {
    if let Command::Openapi = cmd {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::openapi::document())?
        );
        return Ok(());
    }
    let cfg = ControllerConfig::load(config)?;
    if let Command::DirectoryFetch = cmd {
        let d = cfg
            .directory
            .clone()
            .context("no [directory] in the controller's file")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the runtime")?;
        let dir = rt
            .block_on(crate::directory::fetch(&d))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        serde_json::to_writer(std::io::stdout().lock(), &dir)?;
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sluice-ctl")
        .build()
        .context("start the runtime")?;
    rt.block_on(async move {
        std::fs::create_dir_all(&cfg.state_dir)
            .with_context(|| format!("create {}", cfg.state_dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| {
                    format!("make {} the controller's alone", cfg.state_dir.display())
                })?;
        }
        let db = Db::connect(&cfg.database).await?;
        // A backup is of the store as it is (taken before an upgrade, it
        // must not be migrated first).
        if let Command::Backup { dest } = &cmd {
            db.backup(dest).await?;
            println!("backed up to {}", dest.display());
            return Ok(());
        }
        let applied = db.migrate(None).await?;
        if !applied.is_empty() {
            log::info!(
                "database: migrated to version {}",
                crate::db::latest_version()
            );
        }
        let store = Store::new(db).await?;
        match cmd {
            Command::Run => run(cfg, store).await,
            Command::Migrate => Ok(()),
            Command::Import { file } => {
                let done = crate::import::import(&store, &file).await?;
                for (k, n) in &done {
                    println!("{} {n}", k.as_str());
                }
                println!(
                    "imported {} objects; revision {}",
                    done.len(),
                    store.revision().await?
                );
                Ok(())
            }
            Command::Backup { dest } => {
                store.db.backup(&dest).await?;
                println!("backed up to {}", dest.display());
                Ok(())
            }
            Command::CreateClient {
                name,
                scopes,
                token_lifetime_minutes,
                secret_days,
            } => {
                let spec = ApiClient {
                    name,
                    description: "made on the controller's host".into(),
                    status: "active".into(),
                    token_lifetime_minutes,
                    scopes,
                };
                let (id, secret) = create_client_local(&store, &spec, secret_days).await?;
                println!("client_id={id}");
                println!("client_secret={secret}");
                Ok(())
            }
            Command::CreateAdmin { name, role } => {
                let role = crate::admins::Role::parse(&role)
                    .ok_or_else(|| anyhow::anyhow!("role: read or full"))?;
                let mut password = String::new();
                std::io::stdin()
                    .read_line(&mut password)
                    .context("read the password from standard input")?;
                let password = password.trim_end_matches(['\r', '\n']);
                // The CA must exist (its key seals the secret): made by
                // the first `run`, or copied from a controller sharing the
                // store; never made here (review h32).
                let paths = crate::pki::Paths::of(&cfg.state_dir);
                anyhow::ensure!(
                    paths.ca.exists() && paths.ca_key.exists(),
                    "{} has no CA yet: start the controller once (`run`), or copy ca.pem and ca.key from the controller whose store this is",
                    cfg.state_dir.display()
                );
                let ca = crate::pki::Ca::load_or_create(&paths)?;
                let made = crate::admins::create(
                    &store,
                    &ca.secret_box(),
                    &Origin::local(),
                    &name,
                    role,
                    password,
                )
                .await?;
                println!("admin_id={}", made.id);
                println!("totp_secret={}", made.secret_base32);
                println!("totp_uri={}", made.uri);
                Ok(())
            }
            Command::Openapi | Command::DirectoryFetch => unreachable!("handled above"),
        }
    })
}

/// A running controller (its admin API served by a task).
#[derive(Debug)]
pub struct Running {
    /// Where the admin API listens.
    pub addr: std::net::SocketAddr,
    /// Where enrolled nodes connect.
    pub agent_addr: std::net::SocketAddr,
    /// The CA that signed its HTTPS certificate (PEM).
    pub ca_pem: String,
    /// The shared state.
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts serving: the CA and the HTTPS certificate, the signing key, the
/// listener, the revision poller.
pub async fn start(cfg: &ControllerConfig, store: Store) -> anyhow::Result<Running> {
    let paths = Paths::of(&cfg.state_dir);
    let ca = Ca::load_or_create(&paths)?;
    let (cert, key) = ca.server_cert(&cfg.server_names)?;
    std::fs::write(&paths.server, format!("{cert}{}", ca.cert_pem))?;
    crate::write_private(&paths.server_key, key.as_bytes())?;
    let keys = Keys::load_or_create(&paths.jwt_key, &cfg.url, &store).await?;
    let tls = server_tls(&cert, &ca.cert_pem, &key)?;
    let agent_tls = agent_tls(&cert, &ca.cert_pem, &key)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let agent_listener = tokio::net::TcpListener::bind(cfg.agent_listen)
        .await
        .with_context(|| format!("listen on {}", cfg.agent_listen))?;
    let agent_addr = agent_listener.local_addr()?;
    // Port 0 (tests): tell nodes the port the kernel chose.
    let agent_url = if cfg.agent_listen.port() == 0 {
        format!("https://{agent_addr}")
    } else {
        cfg.agent_url.clone()
    };
    let ca_pem = ca.cert_pem.clone();
    let mut app = App::new(
        store.clone(),
        keys,
        Arc::new(ca),
        (cfg.url.clone(), agent_url),
        (
            cfg.rate_per_second,
            cfg.rate_burst,
            cfg.token_rate_per_minute,
        ),
    );
    app.directory.clone_from(&cfg.directory);
    let app = Arc::new(app);
    log::info!(
        "controller: admin API on https://{addr} (issuer {}), store {:?}, revision {}",
        cfg.url,
        store.db.backend,
        store.revision().await?
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = crate::api::router(app.clone());
    let agent_router = crate::api::agent_router(app.clone());
    let max = cfg.max_connections;
    let per_address = cfg.max_connections_per_address;
    let task_app = app.clone();
    let config_path = cfg.path.clone();
    let directory_fetcher = cfg.directory_fetcher.clone();
    let task = tokio::spawn(async move {
        // Other controllers' changes (a shared store): noticed within
        // 250 ms; idle rate-limit state trimmed every minute.
        let poller = {
            let app = task_app.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                let mut n = 0u32;
                loop {
                    tick.tick().await;
                    if let Err(e) = app.store.poll_revision().await {
                        log::warn!("controller: cannot read the revision: {e}");
                    }
                    n = n.wrapping_add(1);
                    if n.is_multiple_of(240) {
                        app.trim_limiters();
                    }
                }
            })
        };
        // Directory group sync, when a directory is configured (one
        // controller of a shared store at a time: a lease in the store).
        let fetcher = directory_fetcher.unwrap_or_else(|| {
            let exe = std::env::current_exe()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "sluice".into());
            vec![exe, "controller".into()]
        });
        let config_path = config_path.clone();
        let syncer = task_app.directory.clone().map(|d| {
            let store = task_app.store.clone();
            tokio::spawn(crate::directory::scheduler(
                store,
                d,
                crate::directory::Fetcher {
                    argv: fetcher,
                    config: config_path,
                },
            ))
        });
        let (agent_stop_tx, agent_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agents = tokio::spawn(crate::server::serve(
            agent_listener,
            agent_tls,
            agent_router,
            crate::server::Limits {
                max_connections: max,
                per_address: None,
                lifetime: std::time::Duration::from_secs(600),
            },
            async {
                let _ = agent_stop_rx.await;
            },
        ));
        let admin_limits = crate::server::Limits {
            max_connections: max,
            per_address: Some(per_address),
            lifetime: std::time::Duration::from_secs(90),
        };
        crate::server::serve(listener, tls, router, admin_limits, async {
            let _ = stop_rx.await;
        })
        .await;
        let _ = agent_stop_tx.send(());
        let _ = agents.await;
        poller.abort();
        if let Some(s) = syncer {
            s.abort();
        }
    });
    Ok(Running {
        addr,
        agent_addr,
        ca_pem,
        app,
        stop: Some(stop_tx),
        task,
    })
}

/// Serves until SIGTERM or SIGINT.
async fn run(cfg: ControllerConfig, store: Store) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install a SIGTERM handler")?;
    let running = start(&cfg, store).await?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    log::info!("controller: stopping");
    running.stop().await;
    Ok(())
}

/// Makes an API client directly in the store (the host's operator, before
/// any token exists): returns (id, secret).
pub async fn create_client_local(
    store: &Store,
    spec: &ApiClient,
    secret_days: u32,
) -> anyhow::Result<(String, String)> {
    spec.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !(1..=730).contains(&secret_days) {
        anyhow::bail!("secret expiry: 1 to 730 days");
    }
    let (secret, hash) = tokio::task::spawn_blocking(crate::auth::new_secret).await?;
    let mut body = serde_json::to_value(spec)?;
    body["generation"] = 0.into();
    let w = store
        .write(
            &Origin::local(),
            "create",
            Op::Create {
                kind: Kind::ApiClient,
                body,
            },
            vec![Extra::AddSecret {
                id: crate::store::new_id("cs"),
                hash,
                expires_at: crate::now() + i64::from(secret_days) * 86400,
            }],
        )
        .await?;
    Ok((w.record.expect("created").id, secret))
}

/// The agent listener: the same certificate, and a client certificate
/// from this CA required (which one, and whether it is revoked, is checked
/// per request: [`crate::nodes::Node`]).
fn agent_tls(cert: &str, ca: &str, key: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.context("the CA PEM")?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for pem in [cert, ca] {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            chain.push(c.context("a certificate PEM")?);
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the server key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn server_tls(cert: &str, ca: &str, key: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for pem in [cert, ca] {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            chain.push(c.context("a certificate PEM")?);
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the server key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
