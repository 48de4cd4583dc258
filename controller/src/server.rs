//! Accepting HTTPS connections with deadlines and caps: at most
//! `max_connections` at once (the rest wait in the kernel's backlog), 10 s
//! for the TLS handshake, 10 s for a request's head, 30 s for a handler,
//! bodies of at most [`crate::api::MAX_BODY`] bytes, idle connections
//! closed after 60 s. Every request learns its peer's address (for the
//! audit log and the per-address limits).
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

/// Serves `router` on `listener` with `tls` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(max_connections));
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
            serve_connection(TokioIo::new(tls), peer, cert, router).await;
        });
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    cert: Option<crate::nodes::PeerCert>,
    router: Router,
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
    // Idle connections go: the whole connection is bounded by the idle
    // limit plus the handler deadline per request it serves.
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::debug!("admin API: {peer}: {e}");
                }
                return;
            }
            () = tokio::time::sleep(IDLE + HANDLER) => {
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
