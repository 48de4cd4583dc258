//! Serves the PAC file ([`sluice_core::pac::render`]) to LAN clients over
//! the HTTP server of `sluice-runtime` (deadlines, connection caps).

pub use sluice_core::pac::{PATHS, ProxyError, ProxySpec, render};

/// A PAC server on `addr`, bound but not started: `pac` (the text of
/// [`render`]) at [`PATHS`], 404 elsewhere, through [`crate::http`]
/// (deadlines, connection caps: the LAN cannot stall it). `Host` must be
/// an IP literal, `wpad` (the name WPAD clients ask for) or one of
/// `hosts`.
///
/// # Errors
/// If `addr` cannot be bound.
pub fn server(
    addr: std::net::SocketAddr,
    pac: String,
    hosts: &[String],
) -> std::io::Result<crate::http::Server> {
    use crate::http::{Access, Hosts, Limits, Reply, Server};
    let mut s = Server::new("sluice-pac", Limits::default(), move |req, body| {
        if !PATHS.contains(&req.path.as_bytes()) {
            body.push_str("not found\n");
            return Reply::text(404);
        }
        if req.method != "GET" {
            body.push_str("only GET\n");
            return Reply::text(405);
        }
        body.push_str(&pac);
        Reply {
            status: 200,
            content_type: "application/x-ns-proxy-autoconfig",
        }
    })?;
    let names = std::iter::once("wpad").chain(hosts.iter().map(String::as_str));
    s.listen_tcp(addr, Access::Open, Hosts::new(names))?;
    Ok(s)
}

/// Serves `pac` at [`PATHS`] on `addr` until `stop` is set, in its own
/// thread ([`server`]).
///
/// # Errors
/// If `addr` cannot be bound or the thread cannot start.
pub fn serve(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pac: String,
    hosts: &[String],
) -> std::io::Result<std::thread::JoinHandle<()>> {
    server(addr, pac, hosts)?.spawn(stop)
}
