//! Accepting HTTPS connections with deadlines and caps ([`Limits`]): at
//! most `max_connections` at once (the rest wait in the kernel's backlog)
//! and, on the admin listener, at most a few per address; 10 s for the TLS
//! handshake, 10 s for a request's head, 30 s for a handler, bodies of at
//! most [`crate::api::MAX_BODY`] bytes, and a bounded life for every
//! connection (asked to close, then closed whatever it does). Every
//! request learns its peer's address (for the audit log and the
//! per-address limits) and, on the agent listener, its certificate.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::Request, response::IntoResponse as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api::{MAX_BODY, Peer, Problem};

/// TLS handshake deadline.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// Request head deadline.
pub const HEADER: Duration = Duration::from_secs(10);
/// Handler deadline.
pub const HANDLER: Duration = Duration::from_secs(30);
/// A connection with no request in flight for this long is closed.
pub const IDLE: Duration = Duration::from_mins(1);

/// Adds the body limit and the handler deadline to `router`.
pub fn harden(router: Router) -> Router {
    router
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(
            |req: Request, next: axum::middleware::Next| async move {
                if req
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .is_some_and(|n| n > MAX_BODY)
                {
                    return Problem::new(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "Body too large",
                        format!("at most {MAX_BODY} bytes"),
                    )
                    .into_response();
                }
                match tokio::time::timeout(HANDLER, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => Problem::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "timeout",
                        "Timed out",
                        "the request took too long",
                    )
                    .into_response(),
                }
            },
        ))
}

/// A listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once (the rest wait in the kernel's backlog).
    pub max_connections: usize,
    /// Connections at once from one address (an IPv6 address counts by
    /// its /64); `None`: no such cap (the agent listener, where every
    /// connection must present an enrolled certificate).
    pub per_address: Option<usize>,
    /// A connection's whole life: then it is asked to close after its
    /// request in flight, and closed [`GRACE`] later whatever it is doing
    /// (a client that never reads its response cannot hold a slot).
    pub lifetime: Duration,
}

/// How long a connection asked to close may take to finish its request.
pub const GRACE: Duration = Duration::from_secs(10);

/// The key an address counts under: itself, or its /64 for IPv6.
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        std::net::IpAddr::V6(v6) => std::net::IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

/// Counts connections per address; a slot is given back on drop.
#[derive(Debug, Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct Slot(Arc<PerAddress>, std::net::IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().expect("not poisoned");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<Slot> {
        let key = address_key(ip);
        let mut m = self.0.lock().expect("not poisoned");
        let n = m.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), key))
    }
}

/// Serves `router` on `listener` with `tls` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let router = harden(router);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            p = permits.clone().acquire_owned() => p.expect("never closed"),
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    log::warn!("admin API: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match limits.per_address {
            Some(cap) => match per_address.take(peer.ip(), cap) {
                Some(s) => Some(s),
                None => {
                    log::debug!("admin API: {peer}: over {cap} connections from one address");
                    continue;
                }
            },
            None => None,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    log::debug!("admin API: {peer}: TLS handshake: {e}");
                    return;
                }
                Err(_) => {
                    log::debug!("admin API: {peer}: TLS handshake timed out");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::nodes::PeerCert(Arc::new(c.to_vec())));
            serve_connection(TokioIo::new(tls), peer, cert, router, limits.lifetime).await;
        });
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    cert: Option<crate::nodes::PeerCert>,
    router: Router,
    lifetime: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER)
        .max_buf_size(64 * 1024);
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    // The connection's life is bounded: asked to close at `lifetime`,
    // dropped (its socket closed) `GRACE` later, whatever it is doing.
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = tokio::time::sleep(lifetime) => None,
    };
    let r = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => {
                    log::debug!("admin API: {peer}: closed at the end of its life");
                    return;
                }
            }
        }
    };
    if let Err(e) = r {
        log::debug!("admin API: {peer}: {e}");
    }
}
