//! `sluice controller`: the management plane.
//!
//! The controller owns the organisation's objects (tenants, edges,
//! gateways, app and forwarding profiles, bypass lists, groups, users,
//! identities, API clients) in one store ([`db`]: `SQLite` by default,
//! `PostgreSQL` shared by several controllers), changes them only through
//! one write path with an audit entry in the same transaction ([`store`]),
//! compiles them into the policy gateways load ([`compile`]), and serves
//! the admin API over HTTPS with OAuth 2.0 client-credentials tokens
//! ([`api`], [`auth`]).
//!
//! Layers: [`model`] (types, field checks) and [`store`] (the domain
//! layer) know nothing of HTTP; [`api`] parses and authorises, then calls
//! them; [`server`] accepts connections with deadlines and caps. The
//! dataplane does not depend on any of it: gateways never touch the
//! database.
#![deny(missing_docs)]
#![deny(unsafe_code)]
// Handlers return `Result<Response, Problem>`: the problem document is the
// response, built once per failed request; boxing it buys nothing.
#![allow(clippy::result_large_err)]
// The panics documented here are `expect`s on invariants (a record just
// written exists, a JSON value serialises), not conditions a caller meets.
#![allow(clippy::missing_panics_doc)]

pub mod admins;
pub mod api;
pub mod auth;
pub mod cli;
pub mod compile;
pub mod config;
pub mod db;
pub mod directory;
pub mod import;
pub mod model;
pub mod nodes;
pub mod openapi;
pub mod pki;
pub mod portal;
pub mod server;
pub mod store;

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// RFC 3339 to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// Writes a secret file: created 0600 (never readable by others, not even
/// for a moment), replaced atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
