//! The gateway's admin API: the client side ([`call`], over the Unix
//! socket) of the contract in `sluice_core::admin` (requests, their HTTP
//! form, answers), whose types are re-exported here: the gateway's server
//! (`gateway/admin.rs`) and the CLI (`sluice policy ...`, `sluice flows`)
//! share them.
//!
//! The API is served on a Unix socket (default [`DEFAULT_SOCKET`], mode
//! 0600, root's; with `gateway.admin_group` 0660 and that group), where
//! the kernel's record of the peer (`SO_PEERCRED`) decides, and, when
//! configured, on TCP with a bearer token. Never on the metrics listener.
use std::{
    io::{Read as _, Write as _},
    path::Path,
    time::Duration,
};

pub use sluice_core::admin::{Explain, Request, Response, RouteError, parse_response};

/// Where the admin socket is when the configuration names none.
pub const DEFAULT_SOCKET: &str = sluice_config::DEFAULT_ADMIN_SOCKET;

pub use sluice_runtime::pki::read_token_hash;

/// Why [`call`] got no answer, or a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (missing, no permission, nobody
    /// listening).
    #[error(
        "connecting to the admin socket {path}: {source} (the running gateway serves its admin API there to root and gateway.admin_group)"
    )]
    Connect {
        /// The socket.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed (or timed out).
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("admin socket {0}: malformed answer")]
    Malformed(std::path::PathBuf),
    /// The request cannot be sent.
    #[error(transparent)]
    Request(#[from] RouteError),
}

/// The most an answer may hold (the flow table of a busy host).
const MAX_ANSWER: u64 = 64 << 20;

/// Sends `req` to the gateway's admin socket at `socket`, waiting at most
/// `timeout` for each read and write; the answer, whatever its status.
///
/// # Errors
/// See [`ClientError`].
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let target = req.target()?;
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut s =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        s,
        "{} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        req.method()
    )
    .map_err(io)?;
    let mut buf = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut buf).map_err(io)?;
    parse_response(&buf).ok_or_else(|| ClientError::Malformed(socket.to_path_buf()))
}
