//! The tunnel protocol core, sans I/O.
//!
//! A [`Session`] owns one TLS 1.3 connection (rustls, itself sans-IO) and
//! the framing of [`crate::wire::tunnel`] on top of it. It never touches a
//! socket or a clock: the driver (the gateway worker or the edge loop) feeds
//! it bytes and the current time, and it says what to do.
//!
//! # Call order
//! 1. [`Session::new`] with a fresh `rustls::Connection`; the session queues
//!    its HELLO at once.
//! 2. When the socket is readable: [`Session::handle_read`] with the socket
//!    as the reader (repeat while it reports `more`), then drain
//!    [`Session::poll_packet`] until `None`: each is an IP packet to deliver.
//! 3. To send: [`Session::send_packet`] for each packet of a batch, then
//!    [`Session::flush`] once per batch: frames of one batch are coalesced
//!    into as few TLS records as possible.
//! 4. While [`Session::wants_write`]: [`Session::handle_write`] with the
//!    socket as the writer (it stops at `WouldBlock`; the record layer
//!    seals records into one contiguous buffer, written with plain `write`
//!    calls).
//! 5. Arm a timer for [`Session::poll_timeout`]; when it fires, call
//!    [`Session::handle_timeout`] (keepalives, dead-peer detection) and go to
//!    step 4.
//! 6. Once [`Session::is_closed`], flush what is left (a CLOSE frame and
//!    TLS `close_notify`) and drop it.
//!
//! Bounded memory: the plaintext staging buffer and rustls's outgoing
//! buffer are capped; when full, [`Session::send_packet`] returns
//! [`SendError::Backpressure`] and the caller drops (and counts) the packet.

pub mod record;
mod session;

pub use record::AeadProvider;
pub use session::{
    CloseReason, Handshake, ReadOutcome, SendError, Session, SessionConfig, SessionError,
    SessionStats, printable,
};
