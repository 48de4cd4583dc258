//! The tunnel driver: a TCP socket and a tunnel session, run the one way
//! both the gateway's workers and the edge run them.
//!
//! [`crate::tunnel`] is sans-IO: it takes received bytes and the time and
//! gives bytes to send, packets, events and deadlines, in the call order
//! its module docs give. This module is its I/O side: it turns socket
//! readiness into those calls, with one read rule and one flush policy
//! ([`receive`], [`flush`]).
//!
//! # Reading
//! On a readable event, [`receive`] reads the socket straight into the
//! session's receive buffer (no copy) until the socket would block, the
//! stream ends, the buffer is full or the caller's byte budget is spent;
//! `more` says whether bytes may be left (mio is edge-triggered: the
//! caller reads again next turn without waiting for an event). The caller
//! then drains the session's packets and events.
//!
//! # The flush policy
//! - Packets are staged with `send_packet` during a batch (a loop turn).
//!   At the end of every batch, and on every writable event, [`flush`]
//!   seals the open record (or keeps it for the session's coalescing
//!   delay, whose deadline then wakes the loop) and writes the sealed
//!   records, as one contiguous buffer, until done or the socket would
//!   block.
//! - When the socket would block, the bytes stay in the session (bounded:
//!   beyond its cap `send_packet` refuses and the caller drops and
//!   counts). Sockets are registered once for `READABLE | WRITABLE`,
//!   edge-triggered, so the writable edge after a full socket brings the
//!   next [`flush`]; interest is never re-registered per write (no system
//!   call per batch for it).
//! - A write error closes the session: nothing more reaches the peer.
//!   A peer that takes nothing for the write timeout is closed by the
//!   session's own timer.
//!
//! # The AEAD
//! [`aead`] measures the two AEAD libraries once per process (or takes
//! `SLUICE_AEAD`), for every session's `SessionConfig::aead`: the
//! session itself reads neither a clock nor the environment.
use std::{io, sync::OnceLock, time::Instant};

use rustls::ConnectionTrafficSecrets;

use crate::{
    tunnel::{
        AeadProvider, Session, SessionError,
        record::{self, Keys},
    },
    wire::tunnel::CloseCode,
};

/// Bytes a gateway's tunnel reads per readable turn before its loop does
/// other work (a gateway worker has few tunnels; the edge sets its own).
pub const READ_BUDGET: usize = 1 << 20;

/// What [`receive`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes read from the socket.
    pub bytes: usize,
    /// The read stopped at its budget or a full receive buffer: bytes may
    /// be left; read again next turn (after draining the packets).
    pub more: bool,
}

/// Why [`receive`] stopped with the session closed or closing.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The socket failed; the session treats it as the end of the stream.
    #[error("tunnel socket: {0}")]
    Io(#[source] io::Error),
    /// The session is closed (the handshake failed, the peer ended the
    /// stream during it, ...).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How [`flush`] left the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything sealed is written.
    Done,
    /// The socket is full: the rest waits for its writable event.
    Blocked,
}

/// Reads `rd` (a non-blocking socket) into `session` until it would
/// block, the stream ends, the receive buffer is full or about `budget`
/// bytes are read (at least one read). Zero copy: the socket is read
/// straight into the session's buffer. Drain the session's packets and
/// events afterwards.
///
/// # Errors
/// The socket failed (the session takes it as the end of the stream and
/// closes once its buffered frames are read), or the session is closed.
pub fn receive<R: io::Read + ?Sized>(
    session: &mut Session,
    rd: &mut R,
    now: Instant,
    budget: usize,
) -> Result<Received, ReceiveError> {
    let mut total = 0;
    loop {
        let buf = session.receive_buffer()?;
        if buf.is_empty() {
            // Full of records not opened yet: the packets first.
            return Ok(Received {
                bytes: total,
                more: true,
            });
        }
        // No read goes much past the budget (at least one byte).
        let room = buf.len().min(budget.saturating_sub(total).max(1));
        match rd.read(&mut buf[..room]) {
            Ok(0) => {
                // Frames already buffered are still delivered; then (or,
                // during the handshake, now) the session closes.
                session.handle_eof();
                if let Some(r) = session.close_reason().filter(|_| session.is_closed()) {
                    return Err(SessionError::Closed(r.clone()).into());
                }
                return Ok(Received {
                    bytes: total,
                    more: false,
                });
            }
            Ok(n) => {
                session.handle_received_in_place(n, now)?;
                total += n;
                if total >= budget {
                    return Ok(Received {
                        bytes: total,
                        more: true,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Received {
                    bytes: total,
                    more: false,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                session.handle_eof();
                return Err(ReceiveError::Io(e));
            }
        }
    }
}

/// The flush policy (see the module docs): the open record is sealed (or
/// kept for the coalescing delay), then [`transmit`]. A write error
/// closes the session.
///
/// # Errors
/// The socket failed (the session is closed: nothing more reaches the
/// peer).
pub fn flush<W: io::Write + ?Sized>(
    session: &mut Session,
    wr: &mut W,
    now: Instant,
) -> io::Result<Flushed> {
    session.flush_due(now);
    transmit(session, wr, now).inspect_err(|_| {
        session.close(CloseCode::Normal, "write failed");
    })
}

/// Writes what the session has sealed to `wr` until done or the socket
/// would block. Returns how the socket was left.
///
/// # Errors
/// The socket failed.
pub fn transmit<W: io::Write + ?Sized>(
    session: &mut Session,
    wr: &mut W,
    now: Instant,
) -> io::Result<Flushed> {
    while let Some(bytes) = session.poll_transmit(now) {
        match wr.write(bytes) {
            // A socket that takes nothing without saying `WouldBlock`:
            // wait as for a full one (the write timeout bounds it).
            Ok(0) => return Ok(Flushed::Blocked),
            Ok(n) => session.transmitted(n, now),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Flushed::Done)
}

/// The AEAD library every session of this process uses, chosen once at
/// first use (call it at start-up, before the first handshake):
/// `SLUICE_AEAD=ring` or `=aws-lc-rs` if set, otherwise the library that
/// seals 16 KiB AES-256-GCM records faster here (best of a few rounds,
/// about a millisecond), logged with both rates.
pub fn aead() -> AeadProvider {
    static CHOICE: OnceLock<AeadProvider> = OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("SLUICE_AEAD").as_deref() {
        Ok("ring") => AeadProvider::Ring,
        Ok("aws-lc-rs") => AeadProvider::AwsLcRs,
        other => {
            if let Ok(v) = other {
                log::warn!("SLUICE_AEAD={v:?}: not `ring` or `aws-lc-rs`; measuring");
            }
            let aws = seal_rate(AeadProvider::AwsLcRs);
            let ring = seal_rate(AeadProvider::Ring);
            let pick = if ring > aws {
                AeadProvider::Ring
            } else {
                AeadProvider::AwsLcRs
            };
            log::info!(
                "tunnel AEAD: {} (AES-256-GCM, 16 KiB records: aws-lc-rs {:.2} GB/s, ring {:.2} GB/s)",
                pick.name(),
                aws / 1e9,
                ring / 1e9
            );
            pick
        }
    })
}

/// Bytes per second `provider` seals 16 KiB records at (best of 5 rounds
/// of 8 records after a warm-up); 0 if the key cannot be built.
fn seal_rate(provider: AeadProvider) -> f64 {
    let secrets = ConnectionTrafficSecrets::Aes256Gcm {
        key: [0x5a; 32].into(),
        iv: [0xa5; 12].into(),
    };
    let Ok(mut keys) = Keys::with_provider(provider, 0, &secrets) else {
        return 0.0;
    };
    let mut buf = vec![0u8; record::HEADER_LEN + record::MAX_CONTENT + 1 + record::TAG_LEN];
    let mut best = f64::MAX;
    for round in 0..6 {
        let start = Instant::now();
        for _ in 0..8 {
            buf.truncate(record::HEADER_LEN + record::MAX_CONTENT - 1);
            if keys.seal(&mut buf, 0, record::APPLICATION_DATA).is_err() {
                return 0.0;
            }
        }
        if round > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    f64::from(8 * record::MAX_CONTENT as u32) / best.max(1e-9)
}
