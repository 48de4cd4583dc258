//! The tunnel protocol core, sans I/O.
//!
//! A [`Session`] owns one TLS 1.3 connection (rustls, itself sans-IO) and
//! the framing of [`crate::wire::tunnel`] on top of it. It never touches a
//! socket, a clock or the environment: the driver (the dataplane's
//! `driver` module, for the gateway's workers and the edge alike) hands it
//! the bytes it received and the current time, and takes from it the bytes
//! to send, the packets to deliver, what happened and when to wake it, in
//! the manner of `quinn-proto`: `handle_*` methods are inputs, `poll_*`
//! methods outputs. The AEAD library is the caller's choice
//! ([`SessionConfig::aead`]).
//!
//! # Call order
//! This is the one place the order is written down; the driver follows it.
//! 1. [`Session::new`] with a fresh rustls unbuffered connection
//!    ([`Handshake`]) and the time (or [`Session::with_exporter`] with one
//!    made by [`crate::datagram::keys::client`] or
//!    [`crate::datagram::keys::server`]); a client queues its `ClientHello` at
//!    once, so go to step 4.
//! 2. When the socket is readable: read it into
//!    [`Session::receive_buffer`] and report the count with
//!    [`Session::handle_received_in_place`] (no copy), or hand in bytes
//!    read elsewhere with [`Session::handle_received`] (one copy; it
//!    returns how many it took). Repeat while the socket has bytes and the
//!    buffer has room; an empty buffer means "drain packets first". On
//!    end of stream (or a socket error): [`Session::handle_eof`].
//! 3. After receiving: drain [`Session::poll_packet`] until `None` (each is
//!    an IP packet to deliver, borrowed until the next call), then
//!    [`Session::poll_event`] until `None`: [`Event::Authenticated`] (the
//!    TLS handshake is done, with the peer's verified certificates),
//!    [`Event::Established`] (both HELLOs exchanged: packets flow; with
//!    the peer's identity) and [`Event::Closed`] (with the reason), each
//!    at most once, and [`Event::EchoReply`] for each answer to
//!    [`Session::send_echo`] (liveness probes, with the round-trip time;
//!    the session answers the peer's probes itself). Receiving more before
//!    the packets are drained is refused: the buffer is full.
//!
//!    A session made with [`Session::with_exporter`] also exports the
//!    datagram transport's keys from its TLS session, once, from
//!    [`Event::Authenticated`] on ([`Session::take_datagram_keys`], see
//!    [`crate::datagram`]).
//! 4. To send: [`Session::send_packet`] for each packet of a batch, then,
//!    once per batch, [`Session::flush_due`] (seals the open record, or
//!    keeps it for [`SessionConfig::coalesce_delay`]) or
//!    [`Session::flush`] (seals now): frames of one batch are coalesced
//!    into as few TLS records as possible.
//! 5. While [`Session::poll_transmit`] has bytes: write them to the socket
//!    and report what it took with [`Session::transmitted`]; stop when the
//!    socket takes nothing (wait for it to be writable). The records are
//!    sealed into one contiguous buffer: one `write` carries many.
//! 6. Arm a timer for [`Session::poll_timeout`]; when it fires, call
//!    [`Session::handle_timeout`] (keepalives, the coalescing delay, dead
//!    peers, the handshake deadline, peers that stopped reading), then
//!    poll events (step 3) and transmit (step 5).
//! 7. After [`Event::Closed`] (or [`Session::close`]), transmit what is
//!    left (a CLOSE frame and TLS `close_notify`, or an alert) as far as
//!    the socket takes it, and drop the session.
//!
//! Bounded memory: the plaintext staging buffer and the outgoing buffer
//! are capped; when full, [`Session::send_packet`] returns
//! [`SendError::Backpressure`] and the caller drops (and counts) the
//! packet. Before the peer is authenticated the receive buffer holds a
//! few KiB, at most one handshake message.

#[cfg(any(test, feature = "lab-pki"))]
#[doc(hidden)]
pub mod lab_pki;
pub mod record;
mod session;

pub use record::AeadProvider;
pub use session::{
    CONTROL_EVENTS, CloseReason, DatagramControl, ECHO_EVENTS, Event, Handshake, Peer, SendError,
    Session, SessionConfig, SessionError, SessionStats, printable,
};
