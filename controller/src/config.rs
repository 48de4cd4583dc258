//! The controller's own file (`/etc/sluice/controller.toml`).
//!
//! ```toml
//! [controller]
//! listen = "127.0.0.1:8443"                 # the admin API and token endpoint (HTTPS)
//! agent_listen = "127.0.0.1:8444"           # enrolled gateways and edges (mutual TLS; default listen's port + 1)
//! url = "https://controller.example:8443"   # how clients reach it (the tokens' issuer)
//! server_names = ["controller.example"]     # on its HTTPS certificate
//! state_dir = "/var/lib/sluice/controller"  # CA, keys (0600), the SQLite store
//! database = "sqlite://controller.db"       # relative to state_dir; or postgres://...
//! rate_limit_per_second = 20                # per API client (429 beyond)
//! rate_limit_burst = 40
//! ```
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// The configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Where the admin API listens (HTTPS).
    pub listen: SocketAddr,
    /// Where enrolled gateways and edges connect (HTTPS, client
    /// certificates required).
    pub agent_listen: SocketAddr,
    /// The agent listener's URL, as nodes are told at enrolment.
    pub agent_url: String,
    /// The controller's URL (issuer of its tokens).
    pub url: String,
    /// Names on its HTTPS certificate.
    pub server_names: Vec<String>,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// The database URL.
    pub database: String,
    /// Requests per second per API client.
    pub rate_per_second: u32,
    /// Burst per API client.
    pub rate_burst: u32,
    /// Token requests per minute per address.
    pub token_rate_per_minute: u32,
    /// Most connections at once (each listener).
    pub max_connections: usize,
    /// Most connections at once from one address (IPv6: one /64) on the
    /// admin listener.
    pub max_connections_per_address: usize,
    /// The directory groups and users are synced from, if any.
    pub directory: Option<crate::directory::DirectoryConfig>,
    /// The program a sync reads the directory with (not in the file:
    /// default this program's `controller` command; tests set it).
    pub directory_fetcher: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    controller: Raw,
    directory: Option<crate::directory::RawDirectory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: SocketAddr,
    agent_listen: Option<SocketAddr>,
    agent_url: Option<String>,
    url: Option<String>,
    server_names: Option<Vec<String>>,
    state_dir: PathBuf,
    database: Option<String>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
    token_rate_limit_per_minute: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
}

impl ControllerConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<ControllerConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses `text` (relative paths are relative to `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<ControllerConfig> {
        let f: File =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let r = f.controller;
        let base = path.parent().unwrap_or(Path::new("."));
        let state_dir = if r.state_dir.is_relative() {
            base.join(&r.state_dir)
        } else {
            r.state_dir
        };
        let database = match r.database {
            None => format!("sqlite://{}", state_dir.join("controller.db").display()),
            Some(d) => match d.strip_prefix("sqlite://") {
                Some(p) if !p.starts_with('/') => {
                    format!("sqlite://{}", state_dir.join(p).display())
                }
                _ => d,
            },
        };
        let server_names = r
            .server_names
            .unwrap_or_else(|| vec![r.listen.ip().to_string()]);
        let url = r.url.unwrap_or_else(|| format!("https://{}", r.listen));
        let rate_per_second = r.rate_limit_per_second.unwrap_or(20);
        if rate_per_second == 0 {
            anyhow::bail!(
                "{}: controller.rate_limit_per_second: at least 1",
                path.display()
            );
        }
        let agent_listen = r.agent_listen.unwrap_or_else(|| {
            let mut a = r.listen;
            if a.port() != 0 {
                a.set_port(a.port().wrapping_add(1));
            }
            a
        });
        let agent_url = r
            .agent_url
            .unwrap_or_else(|| format!("https://{agent_listen}"));
        let directory = f
            .directory
            .map(|d| d.check(base))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{}: directory: {e}", path.display()))?;
        Ok(ControllerConfig {
            path: path.to_path_buf(),
            directory,
            directory_fetcher: None,
            listen: r.listen,
            agent_listen,
            agent_url,
            url,
            server_names,
            state_dir,
            database,
            rate_per_second,
            rate_burst: r.rate_limit_burst.unwrap_or(rate_per_second * 2).max(1),
            token_rate_per_minute: r.token_rate_limit_per_minute.unwrap_or(60).max(1),
            max_connections: r.max_connections.unwrap_or(1024).max(1),
            max_connections_per_address: r.max_connections_per_address.unwrap_or(32).max(1),
        })
    }
}
