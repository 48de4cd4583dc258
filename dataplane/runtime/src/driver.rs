//! The tunnel driver: a TCP socket and a tunnel session, run the one way
//! both the gateway's workers and the edge run them.
//!
//! [`crate::tunnel`] is sans-IO: it takes received bytes and the time and
//! gives bytes to send, packets, events and deadlines, in the call order
//! its module docs give. This module is its I/O side: it turns socket
//! readiness into those calls, with one read rule, one flush policy and,
//! for a gateway's tunnel to its edge, reconnection with backoff
//! ([`Link`]). The edge, which serves many sessions from one loop, keeps
//! its sessions in its own core and moves their bytes with [`receive`]
//! and [`flush`].
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
//! `SLUICE_AEAD`), for every session's [`SessionConfig::aead`]: the
//! session itself reads neither a clock nor the environment.
use std::{
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use mio::{Interest, Registry, Token, net::TcpStream};
use rustls::{ConnectionTrafficSecrets, pki_types::ServerName};

use crate::{
    tunnel::{
        AeadProvider, CloseReason, Event, Peer, Session, SessionConfig, SessionError,
        record::{self, Keys},
    },
    wire::tunnel::CloseCode,
};

/// Bytes a [`Link`] reads per readable turn before its loop does other
/// work (a gateway worker has few tunnels; the edge sets its own).
pub const READ_BUDGET: usize = 1 << 20;
/// Unsent bytes a gateway's tunnel socket holds in the kernel
/// (`TCP_NOTSENT_LOWAT`).
pub const NOTSENT_LOWAT: u32 = 256 * 1024;
/// First wait before reconnecting; doubles per failure up to
/// [`BACKOFF_MAX`], back to this once a session is established.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// Where a [`Link`] connects, and with what.
#[derive(Debug, Clone)]
pub struct LinkParams {
    /// The edge's address.
    pub edge: SocketAddr,
    /// The name on the edge's certificate.
    pub server_name: ServerName<'static>,
    /// TLS configuration (CA, client certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// Session tunables (name, keepalive, timeouts, AEAD).
    pub session: SessionConfig,
}

/// What happened to a [`Link`] ([`Link::poll_event`]).
#[derive(Debug)]
pub enum LinkEvent {
    /// The session is established (both HELLOs exchanged): the tunnel is
    /// up. The backoff is back at its minimum.
    Up {
        /// The edge: its certificate chain and the name its HELLO gave.
        peer: Peer,
    },
    /// A connection could not even be attempted; the next attempt is due
    /// after the backoff.
    ConnectFailed {
        /// What failed: `"TLS"`, `"connect"` or `"register"`.
        step: &'static str,
        /// Why.
        error: String,
    },
    /// The session ended: what it had for the edge was written as far as
    /// the socket took it, the socket is closed, the next attempt is due
    /// after the backoff (a [`Link::once`] makes none).
    Down {
        /// Why the session ended.
        reason: CloseReason,
    },
    /// The edge sent a datagram-transport control frame.
    Datagram(crate::tunnel::DatagramControl),
    /// The edge answered an echo probe ([`Session::send_echo`]).
    EchoReply {
        /// The probe's sequence number.
        seq: u64,
        /// Its round-trip time as the session measured it.
        rtt: Duration,
    },
}

enum LinkState {
    /// Not connected; try again at this time.
    Down { retry_at: Instant },
    /// TCP connecting or connected; the session does TLS and HELLO.
    Up {
        sock: TcpStream,
        session: Box<Session>,
    },
    /// A [`Link::once`] that ended: it makes no more attempts.
    Closed,
}

/// A gateway's tunnel to its edge: one socket and one session at a time,
/// reconnecting with exponential backoff ([`BACKOFF_MIN`] to
/// [`BACKOFF_MAX`]) while the edge cannot be reached.
///
/// Call order, per loop turn: [`Link::handle_timeout`] when
/// [`Link::poll_timeout`] is due (connects when a retry is due, runs the
/// session's timers); [`Link::receive`] when its socket was readable (or
/// said `more`), then drain [`Link::session`]'s packets;
/// `send_packet` on the session; [`Link::flush`] at the end of the turn
/// (and on writable events); after each of these, [`Link::poll_event`]
/// until `None`.
pub struct Link {
    params: LinkParams,
    token: Token,
    state: LinkState,
    backoff: Duration,
    /// Reconnects on its own ([`Link::new`]) or not ([`Link::once`]).
    retry: bool,
    /// A connection attempt that failed, for [`Link::poll_event`].
    failed: Option<LinkEvent>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("edge", &self.params.edge)
            .field("up", &self.session().is_some())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `params.edge`, not connected yet (the first attempt is
    /// due at `now`); its socket will be registered under `token`.
    pub fn new(params: LinkParams, token: Token, now: Instant) -> Self {
        Self {
            params,
            token,
            state: LinkState::Down { retry_at: now },
            backoff: BACKOFF_MIN,
            retry: true,
            failed: None,
        }
    }

    /// One attempt to `params.edge`, due at `now`, and no other: once it
    /// fails or its session ends the link stays closed (whoever made it
    /// decides about the next attempt: the gateway's edge selection).
    pub fn once(params: LinkParams, token: Token, now: Instant) -> Self {
        Self {
            retry: false,
            ..Self::new(params, token, now)
        }
    }

    /// Whether a [`Link::once`] has ended (no socket, no more attempts).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, LinkState::Closed)
    }

    /// Where it connects.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// The session, while connected (from the TCP connect on, before the
    /// handshake too).
    pub fn session(&self) -> Option<&Session> {
        match &self.state {
            LinkState::Up { session, .. } => Some(session),
            LinkState::Down { .. } | LinkState::Closed => None,
        }
    }

    /// [`Link::session`], mutable: for `send_packet` and `poll_packet`.
    pub fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.state {
            LinkState::Up { session, .. } => Some(session),
            LinkState::Down { .. } | LinkState::Closed => None,
        }
    }

    /// Bytes a packet or probe written now waits behind: what the session
    /// holds plus what the kernel has not sent yet (0 when not connected).
    pub fn unsent(&self) -> usize {
        match &self.state {
            LinkState::Up { sock, session } => session
                .pending_send()
                .saturating_add(sluice_sys::tcp::unsent_bytes(sock).unwrap_or(0)),
            LinkState::Down { .. } | LinkState::Closed => 0,
        }
    }

    /// When [`Link::handle_timeout`] is next due: the next attempt, or
    /// the session's next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            LinkState::Down { retry_at } => Some(*retry_at),
            LinkState::Up { session, .. } => session.poll_timeout(),
            LinkState::Closed => None,
        }
    }

    /// Connects when an attempt is due; runs the session's timers when
    /// their deadline has come.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant) {
        match &mut self.state {
            LinkState::Down { retry_at } if now >= *retry_at => self.connect(registry, now),
            LinkState::Down { .. } | LinkState::Closed => {}
            LinkState::Up { session, .. } => {
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    session.handle_timeout(now);
                }
            }
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let p = &self.params;
        // The exporter is captured for the datagram transport's keys
        // (taken only if the edge accepts datagrams).
        let (tls, exporter) =
            match sluice_core::datagram::keys::client(&p.tls, p.server_name.clone()) {
                Ok(x) => x,
                Err(e) => return self.connect_failed("TLS", e.to_string(), now),
            };
        let mut sock = match TcpStream::connect(p.edge) {
            Ok(s) => s,
            Err(e) => return self.connect_failed("connect", e.to_string(), now),
        };
        let _ = sock.set_nodelay(true);
        // The kernel keeps at most this much unsent: the rest waits in the
        // session, where a probe sees it (see `sluice_sys::tcp`).
        let _ = sluice_sys::tcp::set_notsent_lowat(&sock, NOTSENT_LOWAT);
        if let Err(e) = registry.register(
            &mut sock,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.connect_failed("register", e.to_string(), now);
        }
        let session = Session::with_exporter(tls, exporter, p.session.clone(), now);
        self.state = LinkState::Up {
            sock,
            session: Box::new(session),
        };
    }

    fn connect_failed(&mut self, step: &'static str, error: String, now: Instant) {
        self.failed = Some(LinkEvent::ConnectFailed { step, error });
        self.retry_later(now);
    }

    /// Down; the next attempt after the backoff, which doubles (closed
    /// for good if it is a [`Link::once`]).
    fn retry_later(&mut self, now: Instant) {
        if !self.retry {
            self.state = LinkState::Closed;
            return;
        }
        self.state = LinkState::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The socket was readable (or the last receive said `more`): reads up
    /// to [`READ_BUDGET`] into the session. Returns whether bytes may be
    /// left. Drain [`Link::session`]'s packets, then poll events.
    pub fn receive(&mut self, now: Instant) -> bool {
        let LinkState::Up { sock, session } = &mut self.state else {
            return false;
        };
        match receive(session, sock, now, READ_BUDGET) {
            Ok(r) => r.more,
            // The session is closed or closes once its frames are read:
            // its Closed event follows.
            Err(_) => false,
        }
    }

    /// End of a batch, or the socket became writable: the flush policy
    /// (see the module docs).
    ///
    /// # Errors
    /// The socket failed; the session is closed (its event follows).
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        let LinkState::Up { sock, session } = &mut self.state else {
            return Ok(());
        };
        flush(session, sock, now).map(|_| ())
    }

    /// The next thing that happened: the tunnel came up, an attempt
    /// failed, the session ended (then the socket is written out as far
    /// as it takes, deregistered and closed, and a new attempt scheduled).
    pub fn poll_event(&mut self, registry: &Registry, now: Instant) -> Option<LinkEvent> {
        if let Some(ev) = self.failed.take() {
            return Some(ev);
        }
        let LinkState::Up { sock, session } = &mut self.state else {
            return None;
        };
        loop {
            match session.poll_event()? {
                Event::Authenticated { .. } => {}
                Event::EchoReply { seq, rtt, .. } => {
                    return Some(LinkEvent::EchoReply { seq, rtt });
                }
                Event::Datagram(c) => return Some(LinkEvent::Datagram(c)),
                Event::Established { peer } => {
                    self.backoff = BACKOFF_MIN;
                    return Some(LinkEvent::Up { peer });
                }
                Event::Closed { reason } => {
                    // A CLOSE frame or an alert, as far as the socket
                    // takes it; then the socket goes.
                    let _ = transmit(session, sock, now);
                    let _ = registry.deregister(sock);
                    self.retry_later(now);
                    return Some(LinkEvent::Down { reason });
                }
            }
        }
    }

    /// Stopping: closes the session (CLOSE with `code` and `reason`) and
    /// writes it as far as the socket takes it.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if let LinkState::Up { sock, session } = &mut self.state {
            session.close(code, reason);
            let _ = transmit(session, sock, now);
        }
    }

    /// Ends it for good, whatever its state: [`Link::close`], then the
    /// socket is deregistered and closed, and no attempt follows. No
    /// event is reported for it.
    pub fn shutdown(&mut self, registry: &Registry, reason: &str, now: Instant) {
        self.close(CloseCode::Normal, reason, now);
        if let LinkState::Up { sock, .. } = &mut self.state {
            let _ = registry.deregister(sock);
        }
        self.state = LinkState::Closed;
        self.failed = None;
    }
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

#[cfg(test)]
mod tests {
    //! A [`Link`] against a closed port, then against an edge session on
    //! a loopback socket: real sockets and mio, the link's time mocked.
    use std::net::{TcpListener, TcpStream as StdStream};

    use mio::{Events, Poll};

    use super::*;
    use crate::{pki, tunnel::CloseReason};

    /// Drives `link` (and, if given, the edge's side) until the link has
    /// an event; at most two seconds of real time.
    fn next_event(
        link: &mut Link,
        poll: &mut Poll,
        now: Instant,
        mut edge: Option<&mut (StdStream, Session)>,
    ) -> LinkEvent {
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(ev) = link.poll_event(poll.registry(), now) {
                return ev;
            }
            poll.poll(&mut events, Some(Duration::from_millis(5)))
                .unwrap();
            link.receive(now);
            if let Some(s) = link.session_mut() {
                while s.poll_packet().is_some() {}
            }
            let _ = link.flush(now);
            if let Some((sock, sess)) = edge.as_deref_mut() {
                let _ = receive(sess, sock, now, READ_BUDGET);
                while sess.poll_packet().is_some() {}
                let _ = flush(sess, sock, now);
            }
        }
        panic!("no link event in 2 s");
    }

    /// The lab PKI, a gateway link's parameters towards a loopback port
    /// with nobody listening (std sets `SO_REUSEADDR`, so a test can
    /// listen on it later) and the edge's TLS configuration.
    fn setup() -> (std::path::PathBuf, LinkParams, Arc<rustls::ServerConfig>) {
        let (dir, f) = pki::testing::lab_pki();
        let (_, cert, key) = &f.gateways[0];
        let tls = pki::client_config(&f.ca, cert, key).unwrap();
        let edge_tls = pki::server_config(&f.ca, &f.edge.0, &f.edge.1).unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let params = LinkParams {
            edge: addr,
            server_name: pki::server_name("edge.sluice.test").unwrap(),
            tls,
            session: SessionConfig {
                name: "gw1".into(),
                ..SessionConfig::default()
            },
        };
        (dir, params, edge_tls)
    }

    #[test]
    fn link_backs_off_comes_up_and_reconnects() {
        let (dir, params, edge_tls) = setup();
        let addr = params.edge;
        let mut poll = Poll::new().unwrap();
        let mut now = Instant::now();
        let mut link = Link::new(params, Token(1), now);
        assert_eq!(link.poll_timeout(), Some(now), "the first attempt at once");
        // Refused: the waits double from 100 ms up to 5 s.
        let mut waits = Vec::new();
        for _ in 0..8 {
            link.handle_timeout(poll.registry(), now);
            match next_event(&mut link, &mut poll, now, None) {
                LinkEvent::ConnectFailed { .. } | LinkEvent::Down { .. } => {}
                other => panic!("{other:?} without an edge"),
            }
            assert!(link.session().is_none());
            let next = link.poll_timeout().unwrap();
            waits.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);

        // An edge appears: the next attempt comes up.
        let listener = TcpListener::bind(addr).unwrap();
        link.handle_timeout(poll.registry(), now);
        let (sock, _) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let edge = rustls::server::UnbufferedServerConnection::new(edge_tls).unwrap();
        let cfg = SessionConfig {
            name: "edge".into(),
            ..SessionConfig::default()
        };
        let mut edge = (sock, Session::new(edge.into(), cfg, now));
        match next_event(&mut link, &mut poll, now, Some(&mut edge)) {
            LinkEvent::Up { peer } => assert_eq!(peer.name, "edge"),
            other => panic!("{other:?}"),
        }
        // Packets flow, written by the flush policy.
        link.session_mut()
            .unwrap()
            .send_packet(&[0x45; 40])
            .unwrap();
        link.flush(now).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            let _ = receive(&mut edge.1, &mut edge.0, now, READ_BUDGET);
            while let Some(p) = edge.1.poll_packet() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, [vec![0x45; 40]]);
        // The edge closes: down, and the backoff starts over from 100 ms.
        edge.1.close(CloseCode::Normal, "edge stopping");
        transmit(&mut edge.1, &mut edge.0, now).unwrap();
        match next_event(&mut link, &mut poll, now, None) {
            LinkEvent::Down { reason } => assert_eq!(
                reason,
                CloseReason::Peer(CloseCode::Normal, "edge stopping".into())
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            link.poll_timeout(),
            Some(now + BACKOFF_MIN),
            "backoff reset"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn once_link_never_retries_and_carries_echo_probes() {
        let (dir, params, edge_tls) = setup();
        let addr = params.edge;
        let mut poll = Poll::new().unwrap();
        let now = Instant::now();
        // Refused: closed for good, no retry scheduled.
        let mut link = Link::once(params.clone(), Token(1), now);
        link.handle_timeout(poll.registry(), now);
        match next_event(&mut link, &mut poll, now, None) {
            LinkEvent::ConnectFailed { .. } | LinkEvent::Down { .. } => {}
            other => panic!("{other:?} without an edge"),
        }
        assert!(link.is_closed());
        assert_eq!(link.poll_timeout(), None, "a once link makes no retry");
        link.handle_timeout(poll.registry(), now + BACKOFF_MAX);
        assert!(link.session().is_none());

        // Up: an echo probe is answered by the edge's session and comes
        // back as an event with its sequence number.
        let listener = TcpListener::bind(addr).unwrap();
        let mut link = Link::once(params, Token(2), now);
        link.handle_timeout(poll.registry(), now);
        let (sock, _) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let edge = rustls::server::UnbufferedServerConnection::new(edge_tls).unwrap();
        let cfg = SessionConfig {
            name: "edge".into(),
            ..SessionConfig::default()
        };
        let mut edge = (sock, Session::new(edge.into(), cfg, now));
        match next_event(&mut link, &mut poll, now, Some(&mut edge)) {
            LinkEvent::Up { .. } => {}
            other => panic!("{other:?}"),
        }
        link.session_mut().unwrap().send_echo(7, now).unwrap();
        link.flush(now).unwrap();
        match next_event(&mut link, &mut poll, now, Some(&mut edge)) {
            LinkEvent::EchoReply { seq, .. } => assert_eq!(seq, 7),
            other => panic!("{other:?}"),
        }
        // Shut down: closed, deregistered, no event, no retry.
        link.shutdown(poll.registry(), "test", now);
        assert!(link.is_closed());
        assert!(link.poll_event(poll.registry(), now).is_none());
        assert_eq!(link.poll_timeout(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
