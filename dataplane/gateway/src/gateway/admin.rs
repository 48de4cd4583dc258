//! The gateway's HTTP listeners: the read-only metrics endpoint
//! (`gateway.metrics`, `GET /metrics` only) and the admin API
//! ([`crate::admin`]: policy status, reload, tenant switch, explain, flows,
//! domain table) on a Unix socket (`gateway.admin_socket`, root and
//! `gateway.admin_group` only, by the peer's kernel-recorded credentials)
//! and, if configured, on TCP with a bearer token (`gateway.admin_listen`,
//! `gateway.admin_token`).
//!
//! Each runs on a [`crate::http::Server`] of its own (a reload takes as
//! long as it takes without holding a metrics scrape), under one
//! supervising thread: if either server stops, the other is stopped and
//! the thread ends, which the gateway sees as a failure.
use std::{
    fmt::Write as _,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{AllStats, GatewayError, TenantStats, control::PolicyControl, render};
use crate::{
    admin::{Request, RouteError},
    config::GatewayConfig,
    ebpf::Programs,
    http::{Access, Limits, Reply, Server, local_hosts},
};

/// Binds the metrics listener and the admin API's listeners (errors name
/// the configuration field) and serves them on one supervised thread;
/// `None` if nothing is configured.
pub(super) fn start(
    cfg: &GatewayConfig,
    stop: &Arc<AtomicBool>,
    classifier: &Arc<Mutex<Programs>>,
    stats: AllStats,
    control: Arc<PolicyControl>,
    procs: Option<Arc<crate::endpoint::ProcessBypass>>,
) -> Result<Option<JoinHandle<()>>, GatewayError> {
    let err = |what: String| move |source: io::Error| GatewayError::Io { what, source };
    let edge_view = (stats.1.clone(), stats.2.clone());
    let mut servers = Vec::new();
    if let Some(addr) = cfg.metrics {
        let c = classifier.clone();
        let domains = control.domains();
        let (stats, tenant_stats, names) = stats;
        let (control, procs) = (control.clone(), procs.clone());
        let s = crate::metrics::server(addr, &cfg.admin.http_hosts, move |out| {
            render(out, &c, &stats);
            TenantStats::render_all(out, &tenant_stats, &names);
            super::stats::render_edges(out, &tenant_stats, &names);
            control.render(out);
            domains.render(out);
            if let Some(p) = &procs {
                p.render(out);
            }
        })
        .map_err(err(format!("gateway.metrics: serving metrics on {addr}")))?;
        servers.push(s);
    }
    if let Some(s) = admin_server(cfg, control, procs, edge_view)? {
        servers.push(s);
    }
    if servers.is_empty() {
        return Ok(None);
    }
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("sluice-http".into())
        .spawn(move || supervise(servers, &stop))
        .map(Some)
        .map_err(err("starting the HTTP listeners' thread".into()))
}

/// Runs each server on a scoped thread until `stop`, or until one of
/// them ends (then all end, and a panic is passed on).
fn supervise(servers: Vec<Server>, stop: &AtomicBool) {
    let ended = AtomicBool::new(false);
    let stopping = || stop.load(Relaxed) || ended.load(Relaxed);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for s in servers {
            let name = s.name().to_string();
            match std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, || s.run(&stopping))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    log::error!("{name}: cannot start its thread: {e}");
                    ended.store(true, Relaxed);
                }
            }
        }
        while !ended.load(Relaxed)
            && !handles
                .iter()
                .any(std::thread::ScopedJoinHandle::is_finished)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !stop.load(Relaxed) {
            log::error!("an HTTP listener stopped: stopping the others");
        }
        ended.store(true, Relaxed);
    });
}

/// The admin API's server: its Unix socket and, if configured, its TCP
/// listener.
fn admin_server(
    cfg: &GatewayConfig,
    control: Arc<PolicyControl>,
    procs: Option<Arc<crate::endpoint::ProcessBypass>>,
    edges: (Vec<Arc<TenantStats>>, Vec<String>),
) -> Result<Option<Server>, GatewayError> {
    let a = &cfg.admin;
    if a.socket.is_none() && a.listen.is_none() {
        return Ok(None);
    }
    let field = |f: &str, e: String| GatewayError::Io {
        what: format!("gateway.{f}"),
        source: io::Error::other(e),
    };
    let gid = match &a.group {
        Some(g) => Some(
            crate::sys::peer::group_id(g)
                .map_err(|e| field("admin_group", format!("looking up group `{g}`: {e}")))?
                .ok_or_else(|| field("admin_group", format!("no group `{g}`")))?,
        ),
        None => None,
    };
    let domains = control.domains();
    let mut server = Server::new(
        "sluice-admin",
        Limits {
            // Admin callers are few (caps per listener: TCP clients cannot
            // take the socket's slots); a reload may take a while, but a
            // request head still comes within the default 5 s, before
            // anything is authorised.
            max_conns: 64,
            max_per_source: 16,
            deadline: Duration::from_mins(1),
            ..Limits::default()
        },
        move |req, out| {
            handle(
                Request::from_http(req.method, req.path, req.query),
                out,
                &control,
                &domains,
                procs.as_deref(),
                &edges,
            )
        },
    )
    .map_err(|e| field("admin_socket", e.to_string()))?;
    if let Some(path) = &a.socket {
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        server
            .listen_unix(path, mode, gid, Access::Peer { gid })
            .map_err(|e| field("admin_socket", format!("{}: {e}", path.display())))?;
        log::info!(
            "admin API on {} (root{})",
            path.display(),
            a.group
                .as_ref()
                .map(|g| format!(" and group {g}"))
                .unwrap_or_default()
        );
    }
    if let Some(addr) = a.listen {
        let token = a
            .token
            .as_deref()
            .ok_or_else(|| field("admin_token", "needed with admin_listen".into()))?;
        let hash = crate::admin::read_token_hash(token).map_err(|e| GatewayError::Io {
            what: "gateway.admin_token".into(),
            source: io::Error::other(e),
        })?;
        server
            .listen_tcp(addr, Access::Token(hash), local_hosts(&a.http_hosts))
            .map_err(|e| field("admin_listen", format!("{addr}: {e}")))?;
        log::info!("admin API on http://{addr} (bearer token)");
    }
    Ok(Some(server))
}

/// One admin request: parse, run, write the text.
fn handle(
    req: Result<Request, RouteError>,
    out: &mut String,
    control: &PolicyControl,
    domains: &super::DomainBypass,
    procs: Option<&crate::endpoint::ProcessBypass>,
    edges: &(Vec<Arc<TenantStats>>, Vec<String>),
) -> Reply {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            out.push_str(&e.to_string());
            out.push('\n');
            return Reply::text(e.status());
        }
    };
    match req {
        Request::Status => {
            control.status(out);
            Reply::text(200)
        }
        Request::Reload => text(
            control
                .reload()
                .map(|r| format!("generation {} in force ({:?})\n", r.generation, r.total)),
            409,
            out,
        ),
        Request::Tenant { name } => text(
            control.switch_tenant(&name).map(|r| {
                format!(
                    "tenant {name} switched on: generation {} ({:?})\n",
                    r.generation, r.total
                )
            }),
            409,
            out,
        ),
        Request::Explain(e) => match e.query() {
            Ok(q) => text(control.explain(&q), 400, out),
            Err(e) => text(Err::<String, _>(e), 400, out),
        },
        Request::Flows => {
            match procs {
                Some(p) => p.flows(out),
                None => out.push_str("endpoint mode is off: no flows of this host\n"),
            }
            Reply::text(200)
        }
        Request::Domains => {
            domains.list(out);
            Reply::text(200)
        }
        Request::Edges => {
            out.push_str(&super::stats::edges_report(&edges.0, &edges.1));
            Reply::text(200)
        }
    }
}

/// `r`'s text with 200, or its error's line with `status`.
fn text(r: Result<String, impl std::fmt::Display>, status: u16, out: &mut String) -> Reply {
    match r {
        Ok(t) => {
            out.push_str(&t);
            Reply::text(200)
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
            Reply::text(status)
        }
    }
}
