use std::{
    io,
    time::{Duration, Instant},
};

use crate::wire::{
    WireError,
    tunnel::{self, CloseCode, Frame, FrameType, Hello},
};

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name, sent in HELLO (for the peer's logs).
    pub name: String,
    /// Send a KEEPALIVE after this long without sending anything.
    pub keepalive: Duration,
    /// Declare the peer dead after this long without receiving anything
    /// (including the TLS handshake).
    pub idle_timeout: Duration,
    /// Coalesce frames up to this many plaintext bytes before handing them
    /// to TLS as one record (a TLS record holds at most 16 KiB).
    pub coalesce_bytes: usize,
    /// Cap on TLS bytes queued for the socket; beyond it sends are refused.
    pub max_pending_tls: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            keepalive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            coalesce_bytes: 16 * 1024 - 256,
            max_pending_tls: 4 * 1024 * 1024,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it ([`Session::close`]).
    Local(CloseCode, String),
    /// The peer sent CLOSE.
    Peer(CloseCode, String),
    /// The peer closed the stream (TLS `close_notify` or TCP EOF).
    Eof,
    /// Nothing received for the idle timeout.
    Timeout,
    /// TLS failed (bad certificate, bad record, ...).
    Tls(String),
    /// The peer broke the framing protocol.
    Protocol(String),
}

/// Errors surfaced by [`Session::handle_read`]. The session is closed
/// afterwards; any alert or CLOSE frame it queued should still be written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The socket failed.
    #[error("tunnel socket: {0}")]
    Io(#[from] io::Error),
    /// The session is closed, with this reason.
    #[error("tunnel closed: {0:?}")]
    Closed(CloseReason),
}

/// Why a packet was not queued. Cheap, `Copy`: per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The HELLO exchange has not completed yet, or the session is closed.
    #[error("tunnel not established")]
    NotEstablished,
    /// Too many bytes are already queued for the socket.
    #[error("tunnel send buffer full")]
    Backpressure,
    /// The packet is larger than a frame (or the peer) allows.
    #[error("packet too large for the tunnel")]
    TooLarge,
}

/// What [`Session::handle_read`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The read stopped at its budget: call again (edge-triggered sockets).
    pub more: bool,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// PACKET frames queued for sending.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Plaintext batches handed to TLS (each is one or a few records).
    pub tx_batches: u64,
    /// PACKET frames received.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// KEEPALIVE frames sent.
    pub keepalives_sent: u64,
    /// Frames of unknown but ignorable type that were skipped.
    pub skipped_frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's HELLO (the TLS handshake may still run).
    Hello,
    /// Packets flow.
    Established,
    /// Closed; only flushing remains.
    Closed,
}

/// Initial size of the plaintext receive buffer.
const RX_BUF_INITIAL: usize = 64 * 1024;
/// Free space below which the receive buffer is compacted or grown before
/// reading more plaintext (one TLS record's worth).
const RX_MIN_FREE: usize = 16 * 1024 + 256;

/// Budget of one [`Session::handle_read`] call, in TLS bytes.
const READ_BUDGET: usize = 1 << 20;

/// One tunnel session over one TLS connection. See the [module
/// docs](super) for the call order.
#[derive(Debug)]
pub struct Session {
    tls: rustls::Connection,
    cfg: SessionConfig,
    state: State,
    close_reason: Option<CloseReason>,
    peer_name: String,
    peer_max_payload: usize,
    /// Coalesced plaintext frames not yet handed to TLS.
    tx_plain: Vec<u8>,
    /// Received plaintext in `rx_plain[rx_start..rx_end]`; frames are parsed
    /// in place. The buffer is always fully initialised (zeroed once when it
    /// grows, never per read).
    rx_plain: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// The peer ended the stream; close once the buffered frames are read.
    peer_eof: bool,
    last_rx: Instant,
    last_tx: Instant,
    stats: SessionStats,
}

impl Session {
    /// Starts a session over `tls` (client or server side). Queues HELLO.
    pub fn new(tls: rustls::Connection, cfg: SessionConfig, now: Instant) -> Self {
        let mut tls = tls;
        tls.set_buffer_limit(Some(cfg.max_pending_tls));
        let mut s = Self {
            tls,
            tx_plain: Vec::with_capacity(
                cfg.coalesce_bytes + tunnel::HEADER_LEN + tunnel::MAX_PAYLOAD,
            ),
            rx_plain: vec![0; RX_BUF_INITIAL],
            cfg,
            state: State::Hello,
            close_reason: None,
            peer_name: String::new(),
            peer_max_payload: tunnel::MAX_PAYLOAD,
            rx_start: 0,
            rx_end: 0,
            peer_eof: false,
            last_rx: now,
            last_tx: now,
            stats: SessionStats::default(),
        };
        Hello {
            version: tunnel::VERSION,
            max_payload: u16::MAX,
            name: &s.cfg.name,
        }
        .emit_frame(&mut s.tx_plain);
        s.flush();
        s
    }

    /// True once both HELLOs are exchanged and until the session closes.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True once the session has ended (see [`Session::close_reason`]).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The name the peer gave in its HELLO.
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    /// The TLS connection (for peer certificates and negotiated suite).
    pub fn tls(&self) -> &rustls::Connection {
        &self.tls
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Reads TLS bytes from `rd` until it would block, hits EOF or the read
    /// budget, decrypts them and buffers the plaintext for
    /// [`Session::poll_packet`].
    ///
    /// On `Err`, the session is closed; write out what
    /// [`Session::wants_write`] still has (a TLS alert) and drop it.
    pub fn handle_read(
        &mut self,
        rd: &mut dyn io::Read,
        now: Instant,
    ) -> Result<ReadOutcome, SessionError> {
        if self.state == State::Closed || self.peer_eof {
            return Err(SessionError::Closed(self.reason_or(CloseReason::Eof)));
        }
        let mut total = 0;
        loop {
            let n = match self.tls.read_tls(rd) {
                Ok(0) => {
                    // TCP EOF: frames already buffered are still delivered
                    // by poll_packet, which then closes the session.
                    self.pull_plaintext()?;
                    self.peer_eof = true;
                    return Ok(ReadOutcome { more: false });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome { more: false });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.set_closed(CloseReason::Eof);
                    return Err(SessionError::Io(e));
                }
            };
            self.last_rx = now;
            total += n;
            if let Err(e) = self.tls.process_new_packets() {
                let r = CloseReason::Tls(e.to_string());
                self.set_closed(r.clone());
                return Err(SessionError::Closed(r));
            }
            self.pull_plaintext()?;
            if total >= READ_BUDGET {
                return Ok(ReadOutcome { more: true });
            }
        }
    }

    /// Moves decrypted plaintext from rustls into `rx_plain`.
    fn pull_plaintext(&mut self) -> Result<(), SessionError> {
        use io::Read as _;
        loop {
            if self.rx_plain.len() - self.rx_end < RX_MIN_FREE {
                // Compact first (the unparsed tail is at most a partial
                // frame plus what this call has added), grow only if that
                // does not free enough; only the new part is zeroed.
                if self.rx_start > 0 {
                    self.rx_plain.copy_within(self.rx_start..self.rx_end, 0);
                    self.rx_end -= self.rx_start;
                    self.rx_start = 0;
                }
                if self.rx_plain.len() - self.rx_end < RX_MIN_FREE {
                    let grown = self.rx_plain.len() * 2;
                    self.rx_plain.resize(grown, 0);
                }
            }
            match self.tls.reader().read(&mut self.rx_plain[self.rx_end..]) {
                Ok(0) => {
                    // close_notify: the peer ended the stream.
                    self.peer_eof = true;
                    return Ok(());
                }
                Ok(n) => self.rx_end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    self.set_closed(CloseReason::Eof);
                    return Err(SessionError::Io(e));
                }
            }
        }
    }

    /// The next received IP packet, borrowed from the session's buffer.
    /// Control frames are handled on the way; returns `None` when no complete
    /// PACKET frame is buffered (or the session closed: check
    /// [`Session::is_closed`]).
    pub fn poll_packet(&mut self) -> Option<&[u8]> {
        loop {
            let avail = &self.rx_plain[self.rx_start..self.rx_end];
            let frame = match Frame::new_checked(avail) {
                Ok(f) => f,
                Err(WireError::Truncated { .. }) => {
                    if self.peer_eof {
                        self.set_closed(CloseReason::Eof);
                    }
                    return None;
                }
                Err(WireError::Malformed(m)) => {
                    self.protocol_error(m);
                    return None;
                }
            };
            let start = self.rx_start + tunnel::HEADER_LEN;
            let end = self.rx_start + frame.total_len();
            let ty = frame.frame_type();
            let flags = frame.flags();
            self.rx_start = end;
            match (ty, self.state) {
                (_, State::Closed) => return None,
                (FrameType::Packet, State::Established) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += (end - start) as u64;
                    return Some(&self.rx_plain[start..end]);
                }
                (FrameType::Hello, State::Hello) => self.handle_hello(start, end),
                (FrameType::Keepalive, State::Established) => {}
                (FrameType::Close, _) => {
                    let (code, reason) = tunnel::parse_close(&self.rx_plain[start..end])
                        .unwrap_or((CloseCode::Protocol, "malformed CLOSE".into()));
                    self.set_closed(CloseReason::Peer(code, reason));
                    self.tls.send_close_notify();
                    return None;
                }
                (FrameType::Unknown(_), State::Established)
                    if flags & tunnel::FLAG_IGNORABLE != 0 =>
                {
                    self.stats.skipped_frames += 1;
                }
                (FrameType::Unknown(t), _) => {
                    self.protocol_error_owned(format!("unknown frame type {t:#04x}"));
                    return None;
                }
                (ty, _) => {
                    self.protocol_error_owned(format!(
                        "unexpected {ty:?} frame in state {:?}",
                        self.state
                    ));
                    return None;
                }
            }
        }
    }

    fn handle_hello(&mut self, start: usize, end: usize) {
        let (version, max, name) = match Hello::parse(&self.rx_plain[start..end]) {
            Ok(h) => (h.version, h.max_payload, h.name.to_string()),
            Err(_) => return self.protocol_error("malformed HELLO"),
        };
        if version != tunnel::VERSION {
            let reason = format!(
                "peer speaks version {version}, we speak {}",
                tunnel::VERSION
            );
            return self.close(CloseCode::Version, &reason);
        }
        self.peer_name = name;
        self.peer_max_payload = usize::from(max);
        self.state = State::Established;
    }

    fn protocol_error(&mut self, what: &str) {
        self.protocol_error_owned(what.to_string());
    }

    fn protocol_error_owned(&mut self, what: String) {
        tunnel::emit_close(&mut self.tx_plain, CloseCode::Protocol, &what);
        self.flush();
        self.tls.send_close_notify();
        self.set_closed(CloseReason::Protocol(what));
    }

    /// Queues one IP packet. Frames are coalesced into the staging buffer
    /// and handed to TLS when it reaches the coalescing size or at
    /// [`Session::flush`].
    pub fn send_packet(&mut self, packet: &[u8]) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        if packet.len() > self.peer_max_payload {
            return Err(SendError::TooLarge);
        }
        // Hand the staged frames to TLS before this one would push the
        // batch past one record's worth: records stay full-sized instead of
        // a full one followed by a small tail.
        let framed = tunnel::HEADER_LEN + packet.len();
        if !self.tx_plain.is_empty() && self.tx_plain.len() + framed > self.cfg.coalesce_bytes {
            self.flush();
            if !self.tx_plain.is_empty() {
                return Err(SendError::Backpressure);
            }
        }
        let start = self.tx_plain.len();
        self.tx_plain.resize(start + tunnel::HEADER_LEN, 0);
        tunnel::emit_header(
            &mut self.tx_plain[start..],
            FrameType::Packet,
            0,
            packet.len(),
        );
        self.tx_plain.extend_from_slice(packet);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += packet.len() as u64;
        Ok(())
    }

    /// Hands the staged frames to TLS (one record per up to 16 KiB).
    /// Whatever TLS's buffer limit refuses stays staged.
    pub fn flush(&mut self) {
        use io::Write as _;
        if self.tx_plain.is_empty() {
            return;
        }
        // Counted only when TLS took something: a refused write (buffer
        // limit) is not a batch.
        match self.tls.writer().write(&self.tx_plain) {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                self.tx_plain.drain(..n);
                self.stats.tx_batches += 1;
            }
        }
    }

    /// True while there are TLS bytes to write to the socket.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes queued TLS records to `wr` until done or `WouldBlock`.
    /// Returns the bytes written.
    pub fn handle_write(&mut self, wr: &mut dyn io::Write, now: Instant) -> io::Result<usize> {
        let mut total = 0;
        while self.tls.wants_write() {
            match self.tls.write_tls(wr) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    self.last_tx = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            // Staged frames refused earlier by the buffer limit go now.
            if !self.tx_plain.is_empty() {
                self.flush();
            }
        }
        Ok(total)
    }

    /// When [`Session::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Hello => Some(self.last_rx + self.cfg.idle_timeout),
            State::Established => {
                Some((self.last_tx + self.cfg.keepalive).min(self.last_rx + self.cfg.idle_timeout))
            }
        }
    }

    /// Sends a keepalive when idle; closes the session when the peer has
    /// been silent for the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if now >= self.last_rx + self.cfg.idle_timeout {
            self.close(CloseCode::Timeout, "peer silent");
            self.close_reason = Some(CloseReason::Timeout);
            return;
        }
        if self.state == State::Established && now >= self.last_tx + self.cfg.keepalive {
            let start = self.tx_plain.len();
            self.tx_plain.resize(start + tunnel::HEADER_LEN, 0);
            tunnel::emit_header(&mut self.tx_plain[start..], FrameType::Keepalive, 0, 0);
            self.flush();
            self.stats.keepalives_sent += 1;
            // Count it as sent now even before the socket takes it, so a
            // blocked socket does not make us queue one per timer tick.
            self.last_tx = now;
        }
    }

    /// Closes the session: queues CLOSE and TLS `close_notify`. Write them out
    /// with [`Session::handle_write`], then drop the session.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        tunnel::emit_close(&mut self.tx_plain, code, reason);
        self.flush();
        self.tls.send_close_notify();
        self.set_closed(CloseReason::Local(code, reason.to_string()));
    }

    fn set_closed(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.close_reason.get_or_insert(reason);
    }

    fn reason_or(&self, r: CloseReason) -> CloseReason {
        self.close_reason.clone().unwrap_or(r)
    }
}

#[cfg(test)]
mod tests;
