//! One edge worker: a mio event loop over its TCP listener (one of the
//! edge's `SO_REUSEPORT` group), its queue of the TUN device, its
//! connections' sockets and its inbox from the other workers
//! ([`crate::mesh`]); its connections' sessions and reply routes are in
//! its own [`Core`].
//!
//! Each loop turn: accept (a connection goes to the worker with the
//! fewest if that is not this one), read the ready connections (each
//! gateway's tunnels together up to a budget, a few handshakes), read the
//! TUN queue (a reply whose route another worker holds is handed to it),
//! send the replies other workers handed over, run the timers, write, and
//! wake the workers something was queued for.
use std::{
    collections::VecDeque,
    fs::File,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
};

use sluice_core::edge::{
    Accepted, ConnId, Core, DatagramSink, Sent, TunDrop, ratelog, router::GatewayId,
};
use sluice_runtime::driver;

use crate::{
    EdgeError,
    gro::{Coalescer, VNET_HDR_LEN, VnetHdr},
    mesh::{Control, Mesh, Port},
    sys::{
        tun::Tun,
        udp::{RecvBatch, SendBatch, UdpSocket},
    },
};

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const TUN: Token = Token(1);
pub(crate) const WAKE: Token = Token(2);
/// The datagram transport's socket (one of the edge's `SO_REUSEPORT`
/// group, steered by receiver id).
pub(crate) const UDP: Token = Token(3);
const FIRST_CONN: usize = 4;
/// Datagrams sealed per send batch.
const UDP_SEND_BATCH: usize = sluice_sys::udp::MAX_BATCH;
/// Room for one sealed datagram.
const UDP_SLOT: usize = 1500;
/// Messages per receive (each up to 64 KiB with GRO).
const UDP_RECV_MESSAGES: usize = 8;
/// Receives per loop turn before other work.
const UDP_RECV_TURNS: usize = 8;
/// Packets read from the TUN device per loop turn before other work (and
/// replies handed over by other workers sent per turn).
const TUN_BUDGET: usize = 256;
/// Bytes read per loop turn from one gateway's tunnels together (shared
/// by those ready, each at least [`MIN_READ`]), or from one connection
/// before authentication: a busy gateway gets this much, then every other
/// gets its turn, however many tunnels it opens.
const READ_BUDGET: usize = 128 * 1024;
/// The least a ready tunnel is read per turn (a gateway with many ready
/// tunnels gets at most `max_tunnels` times this).
const MIN_READ: usize = 4 * 1024;
/// Connections whose handshake is served per loop turn (a `ClientHello`
/// costs a key exchange and a signature): handshakes cannot starve data.
const HANDSHAKES_PER_TURN: usize = 8;
/// Connections accepted per loop turn.
pub(crate) const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses when the process is out of descriptors or
/// memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A connection's socket, and whether it waits in the ready queue.
#[derive(Debug)]
struct Sock {
    stream: TcpStream,
    queued: bool,
}

/// One worker. See the [module docs](self).
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) tun: Tun,
    /// Present when the TUN device takes virtio-net headers.
    pub(crate) gro: Option<Box<Coalescer>>,
    pub(crate) core: Core,
    pub(crate) mesh: Arc<Mesh>,
    pub(crate) port: Port,
    socks: Vec<Option<Sock>>,
    /// Connections with bytes to read (edge-triggered: they stay until a
    /// read stops short of its budget).
    ready: VecDeque<ConnId>,
    /// Per gateway, its tunnels in `ready` this turn (zero between turns).
    ready_tunnels: Vec<u32>,
    /// The gateways counted in `ready_tunnels` this turn.
    ready_gateways: Vec<GatewayId>,
    /// A descriptor kept in reserve: released to accept (and shed) one
    /// connection when `accept` says the process has none left.
    spare: Option<File>,
    /// The datagram transport: its socket and batches, if it is on.
    udp: Option<UdpPath>,
}

/// A worker's datagram socket and its preallocated batches.
pub(crate) struct UdpPath {
    sock: UdpSocket,
    tx: SendBatch,
    rx: RecvBatch,
    /// Datagrams the socket did not take (dropped, as on a congested
    /// link), not yet added to the counters.
    dropped: u64,
}

impl UdpPath {
    /// Worker's datagram socket `sock`, registered by the caller.
    pub(crate) fn new(sock: UdpSocket) -> Self {
        let slot = if sock.gro() {
            sluice_sys::udp::GRO_SLOT_LEN
        } else {
            2048
        };
        Self {
            sock,
            tx: SendBatch::new(UDP_SEND_BATCH, UDP_SLOT),
            rx: RecvBatch::new(UDP_RECV_MESSAGES, slot),
            dropped: 0,
        }
    }

    /// Sends the batch; what the socket does not take now is dropped.
    fn flush(&mut self) {
        flush_batch(&self.sock, &mut self.tx, &mut self.dropped);
    }
}

/// Sends `tx` until it is empty. The socket's buffer full: the rest is
/// dropped (counted), as on a congested link. Any other error is one
/// datagram's (a destination the kernel refuses): `send_batch` has
/// dropped that one (counted here) and the others still go.
fn flush_batch(sock: &UdpSocket, tx: &mut SendBatch, dropped: &mut u64) {
    while !tx.is_empty() {
        match sock.send_batch(tx) {
            Ok(n) if n > 0 => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => *dropped += 1,
            _ => {
                *dropped += tx.len() as u64;
                tx.clear();
            }
        }
    }
}

/// The core's datagrams go into the worker's send batch (sent when full
/// and at the end of the turn).
struct Sink<'a> {
    udp: Option<&'a mut UdpPath>,
}

impl DatagramSink for Sink<'_> {
    fn slot(&mut self) -> Option<&mut [u8]> {
        let u = self.udp.as_deref_mut()?;
        if u.tx.is_full() {
            flush_batch(&u.sock, &mut u.tx, &mut u.dropped);
        }
        u.tx.slot()
    }

    fn commit(&mut self, len: usize, to: std::net::SocketAddr) {
        if let Some(u) = self.udp.as_deref_mut() {
            u.tx.commit(len, Some(to));
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// How a turn of accepting ended.
enum AcceptTurn {
    /// The queue is empty.
    Drained,
    /// The turn's budget is spent: more next turn.
    Budget,
    /// Out of descriptors or memory: wait a little.
    Pause,
}

impl Worker {
    /// Worker `index` over its registered poller, listener and TUN queue.
    #[allow(clippy::too_many_arguments, reason = "one call, in Edge::new")]
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        listener: TcpListener,
        tun: Tun,
        gro: Option<Box<Coalescer>>,
        core: Core,
        mesh: Arc<Mesh>,
        port: Port,
        (gateways, udp): (usize, Option<UdpPath>),
    ) -> Self {
        Self {
            index,
            poll,
            listener,
            tun,
            gro,
            core,
            mesh,
            port,
            socks: Vec::new(),
            ready: VecDeque::new(),
            ready_tunnels: vec![0; gateways],
            ready_gateways: Vec::new(),
            spare: File::open("/dev/null").ok(),
            udp,
        }
    }

    /// Runs until `stop` is set or another worker failed; then closes
    /// every session of this worker.
    ///
    /// # Errors
    /// The poller failing, or the TUN queue failing to read (see
    /// [`Worker::read_tun`]).
    pub(crate) fn run(&mut self, stop: &AtomicBool) -> Result<(), EdgeError> {
        let mut events = Events::with_capacity(1024);
        let mut tun_ready = false;
        let mut udp_ready = false;
        let mut listener_ready = false;
        let mut handed_more = false;
        let mut accept_paused_until: Option<Instant> = None;
        let mut buf = vec![0u8; 65536];
        let mut accept_log = ratelog::RateLog::new(5, Duration::from_secs(10));
        let res = loop {
            if stop.load(Relaxed) || self.mesh.failed() {
                break Ok(());
            }
            let now = Instant::now();
            let accept_now = listener_ready && accept_paused_until.is_none_or(|t| now >= t);
            let timeout = if tun_ready
                || udp_ready
                || accept_now
                || handed_more
                || !self.ready.is_empty()
                || self.port.has_mail(&self.mesh)
            {
                Duration::ZERO
            } else {
                let mut at = self.core.poll_timeout();
                if listener_ready && let Some(t) = accept_paused_until {
                    at = at.min(t);
                }
                at.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    break Err(EdgeError::Io {
                        what: format!("worker {}: poll", self.index),
                        source: e,
                    });
                }
            }
            let now = Instant::now();
            for ev in &events {
                match ev.token() {
                    LISTENER => listener_ready = true,
                    TUN => tun_ready = true,
                    UDP => udp_ready = true,
                    WAKE => {}
                    Token(t) => {
                        let id = (t - FIRST_CONN) as ConnId;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.enqueue(id);
                        }
                        if ev.is_writable()
                            && let Some(Some(s)) = self.socks.get_mut(id as usize)
                        {
                            self.core
                                .write(id, now, |sess| driver::flush(sess, &mut s.stream, now));
                        }
                    }
                }
            }
            self.control(now);
            if listener_ready && accept_paused_until.is_none_or(|t| now >= t) {
                accept_paused_until = None;
                match self.accept(now, &mut accept_log) {
                    AcceptTurn::Drained => listener_ready = false,
                    AcceptTurn::Budget => {}
                    AcceptTurn::Pause => accept_paused_until = Some(now + ACCEPT_BACKOFF),
                }
            }
            self.read_ready(now);
            if udp_ready {
                udp_ready = self.read_udp(now);
            }
            if tun_ready {
                match self.read_tun(&mut buf, now) {
                    Ok(more) => tun_ready = more,
                    Err(e) => break Err(e),
                }
            }
            handed_more = self.send_handed(now);
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
            self.flush(now);
            self.close_finished();
            self.port.wake(&self.mesh);
        };
        // Stopping (or failed): say so to every peer, as far as the
        // sockets take it.
        let now = Instant::now();
        self.core.close_all(now);
        self.flush(now);
        self.close_finished();
        res
    }

    fn enqueue(&mut self, id: ConnId) {
        if let Some(Some(s)) = self.socks.get_mut(id as usize)
            && !s.queued
        {
            s.queued = true;
            self.ready.push_back(id);
        }
    }

    /// Messages from the other workers: connections to adopt, handshakes
    /// to evict.
    fn control(&mut self, now: Instant) {
        while let Some(msg) = self.port.control(&self.mesh) {
            match msg {
                Control::Evict { slot, generation } => {
                    self.core.evict(slot, generation, now);
                    self.close_finished();
                }
                Control::Adopt { stream, peer } => self.register(stream, peer, now, true),
            }
        }
    }

    /// Accepts up to [`ACCEPTS_PER_TURN`] connections.
    fn accept(&mut self, now: Instant, log_budget: &mut ratelog::RateLog) -> AcceptTurn {
        let stats = self.core.stats();
        for _ in 0..ACCEPTS_PER_TURN {
            let (sock, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return AcceptTurn::Drained,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    let pause = match errno {
                        // Aborted by the peer, or a network error on a
                        // connection still in the queue: the next one may
                        // be fine.
                        libc::ECONNABORTED
                        | libc::EINTR
                        | libc::EPROTO
                        | libc::EPERM
                        | libc::ENETDOWN
                        | libc::ENOPROTOOPT
                        | libc::EHOSTDOWN
                        | libc::ENONET
                        | libc::EHOSTUNREACH
                        | libc::EOPNOTSUPP
                        | libc::ENETUNREACH => false,
                        libc::EMFILE | libc::ENFILE => {
                            stats.accept_no_fd.fetch_add(1, Relaxed);
                            self.shed_one();
                            true
                        }
                        _ => true,
                    };
                    if !matches!(errno, libc::EMFILE | libc::ENFILE) {
                        stats.accept_errors.fetch_add(1, Relaxed);
                    }
                    if let Some(n) = log_budget.allow(now) {
                        log::warn!(
                            "accept: {e}{}{}",
                            if pause { "; pausing 100 ms" } else { "" },
                            ratelog::suppressed_note(n)
                        );
                    } else {
                        stats.logs_suppressed.fetch_add(1, Relaxed);
                    }
                    if pause {
                        return AcceptTurn::Pause;
                    }
                    continue;
                }
            };
            // A worker with fewer connections takes it: the kernel's hash
            // alone can put a gateway's tunnels on one worker.
            let Some(to) = self.port.place(&self.mesh) else {
                self.register(sock, peer, now, false);
                continue;
            };
            match self
                .port
                .send(&self.mesh, to, Control::Adopt { stream: sock, peer })
            {
                Ok(()) => self.port.passed(&self.mesh),
                // Its queue is full: this worker keeps it.
                Err(Control::Adopt { stream, peer }) => {
                    self.mesh.unplace(to);
                    self.register(stream, peer, now, false);
                }
                // Not what was sent (`send` gives back what it was given).
                Err(Control::Evict { .. }) => {}
            }
        }
        AcceptTurn::Budget
    }

    /// Takes connection `sock` from `peer` (`counted`: already in this
    /// worker's load, as one handed over is): a slot in the core, or a
    /// refusal (the socket closes).
    fn register(
        &mut self,
        mut sock: TcpStream,
        peer: std::net::SocketAddr,
        now: Instant,
        counted: bool,
    ) {
        let id = match self.core.accept(peer, now) {
            Accepted::Refused => {
                if counted {
                    self.port.count(&self.mesh, false);
                }
                return; // dropping `sock` closes it
            }
            Accepted::Conn(id) => id,
        };
        if !counted {
            self.port.count(&self.mesh, true);
        }
        // Handshakes of other workers evicted to make room: theirs to
        // close.
        while let Some(p) = self.core.poll_eviction() {
            let msg = Control::Evict {
                slot: p.slot,
                generation: p.generation,
            };
            if self
                .port
                .send(&self.mesh, usize::from(p.worker), msg)
                .is_err()
            {
                // Cannot happen (the queues hold every handshake there can
                // be); the handshake ends at its deadline anyway.
                log::warn!(
                    "worker {}: an eviction for worker {} was lost",
                    self.index,
                    p.worker
                );
            }
        }
        // Evictions free slots: close their sockets before reusing.
        self.close_finished();
        let _ = sock.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(id as usize + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("connection from {peer}: register: {e}");
            // The core's slot ends with its handshake deadline; no socket
            // is left to count.
            self.port.count(&self.mesh, false);
            return;
        }
        let i = id as usize;
        if self.socks.len() <= i {
            self.socks.resize_with(i + 1, || None);
        }
        self.socks[i] = Some(Sock {
            stream: sock,
            queued: false,
        });
        // Its ClientHello may already be there (edge-triggered).
        self.enqueue(id);
    }

    /// Out of descriptors: gives the spare back, accepts and closes one
    /// queued connection (so the queue moves and its client learns at
    /// once), takes the spare again.
    fn shed_one(&mut self) {
        self.spare = None;
        if let Ok((sock, _)) = self.listener.accept() {
            drop(sock);
        }
        self.spare = File::open("/dev/null").ok();
    }

    /// Reads the connections that are ready, each gateway's tunnels
    /// together up to [`READ_BUDGET`], and at most
    /// [`HANDSHAKES_PER_TURN`] handshakes; the rest wait for the next turn.
    fn read_ready(&mut self, now: Instant) {
        let mut handshakes = HANDSHAKES_PER_TURN;
        let stats = self.core.stats();
        for &id in &self.ready {
            if let Some(g) = self.core.gateway_of(id)
                && let Some(n) = self.ready_tunnels.get_mut(usize::from(g))
            {
                if *n == 0 {
                    self.ready_gateways.push(g);
                }
                *n += 1;
            }
        }
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(Some(sock)) = self.socks.get_mut(id as usize) else {
                continue;
            };
            if self.core.is_handshaking(id) {
                if handshakes == 0 {
                    self.ready.push_back(id);
                    continue;
                }
                handshakes -= 1;
            }
            let budget = match self
                .core
                .gateway_of(id)
                .and_then(|g| self.ready_tunnels.get(usize::from(g)))
            {
                Some(&n) if n > 1 => (READ_BUDGET / n as usize).max(MIN_READ),
                _ => READ_BUDGET,
            };
            let mut writer = TunWriter {
                tun: &self.tun,
                writes: 0,
                merged: 0,
                dropped: 0,
                gso_refused: false,
            };
            let mut delivered = 0u64;
            let gro = &mut self.gro;
            let more = self.core.read(
                id,
                now,
                |sess| driver::receive(sess, &mut sock.stream, now, budget).map(|r| r.more),
                &mut |pkt| {
                    delivered += 1;
                    match gro.as_deref_mut() {
                        Some(g) => g.push(pkt, &mut |h, b| writer.write(h, b)),
                        None => writer.write_plain(pkt),
                    }
                },
            );
            // End of this connection's batch: nothing is held back.
            if let Some(g) = self.gro.as_deref_mut() {
                g.flush(&mut |h, b| writer.write(h, b));
                if writer.gso_refused {
                    log::warn!(
                        "TUN {}: the kernel refuses GSO packets; merging switched off",
                        self.tun.name()
                    );
                    g.disable();
                }
            }
            stats
                .to_kernel_packets
                .fetch_add(delivered.saturating_sub(writer.dropped), Relaxed);
            stats.drop_tun_write.fetch_add(writer.dropped, Relaxed);
            stats.tun_writes.fetch_add(writer.writes, Relaxed);
            stats.gro_merged.fetch_add(writer.merged, Relaxed);
            if let Some(Some(s)) = self.socks.get_mut(id as usize) {
                s.queued = more;
                if more {
                    self.ready.push_back(id);
                }
            }
        }
        for g in self.ready_gateways.drain(..) {
            self.ready_tunnels[usize::from(g)] = 0;
        }
    }

    /// Drains up to a budget of packets from this worker's TUN queue into
    /// tunnels (its own, or another worker's through the mesh). Returns
    /// true if more may be waiting.
    ///
    /// # Errors
    /// A read error other than "no packet now" or an interruption: the
    /// device is gone (deleted: `EBADFD`) or broken, and no reply can
    /// reach a tunnel any more. Running on would keep every tunnel up
    /// while nothing is forwarded; the edge stops (non-zero) instead, so
    /// its service manager restarts it and gateways see it go.
    fn read_tun(&mut self, buf: &mut [u8], now: Instant) -> Result<bool, EdgeError> {
        let mut t = Tally::default();
        let mut more = true;
        let vnet = self.tun.has_vnet_hdr();
        for _ in 0..TUN_BUDGET {
            let n = match self.tun.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    t.count(&self.core);
                    return Err(EdgeError::Io {
                        what: format!(
                            "reading TUN device {} (worker {})",
                            self.tun.name(),
                            self.index
                        ),
                        source: e,
                    });
                }
            };
            let pkt = if vnet {
                // No receive offloads were enabled, so the kernel completes
                // checksums and segments before handing packets over; a
                // GSO packet here would be a kernel surprise: count it.
                match buf[..n].split_first_chunk::<VNET_HDR_LEN>() {
                    Some((h, rest)) if !VnetHdr::from_bytes(h).is_gso() => rest,
                    Some(_) => {
                        t.offload += 1;
                        continue;
                    }
                    None => {
                        t.malformed += 1;
                        continue;
                    }
                }
            } else {
                &buf[..n]
            };
            let mut sink = Sink {
                udp: self.udp.as_mut(),
            };
            match self.core.tun_packet_via(pkt, now, &mut sink) {
                Ok(Sent::Queued | Sent::Datagram) => {
                    t.ok += 1;
                    t.bytes += pkt.len() as u64;
                }
                Ok(Sent::HandOff(w)) => {
                    // Counted by the mesh (handed over, or dropped).
                    self.port.hand_off(&self.mesh, w, pkt);
                }
                Err(d) => t.drop(d),
            }
        }
        t.count(&self.core);
        Ok(more)
    }

    /// Sends the replies other workers handed over (up to a budget);
    /// true if more wait.
    fn send_handed(&mut self, now: Instant) -> bool {
        let mut t = Tally::default();
        let core = &mut self.core;
        let mut sink = Sink {
            udp: self.udp.as_mut(),
        };
        let more = self.port.handed(&self.mesh, TUN_BUDGET, |pkt| {
            match core.handed_packet_via(pkt, now, &mut sink) {
                Ok(()) => {
                    t.ok += 1;
                    t.bytes += pkt.len() as u64;
                }
                Err(d) => t.drop(d),
            }
        });
        t.count(&self.core);
        more
    }

    /// Reads datagrams (a few batches) into the core, their packets to
    /// the TUN device as the tunnels' are. Returns true if more may be
    /// waiting.
    fn read_udp(&mut self, now: Instant) -> bool {
        let Some(u) = self.udp.as_mut() else {
            return false;
        };
        let stats = self.core.stats();
        let mut writer = TunWriter {
            tun: &self.tun,
            writes: 0,
            merged: 0,
            dropped: 0,
            gso_refused: false,
        };
        let mut delivered = 0u64;
        let mut more = false;
        for _ in 0..UDP_RECV_TURNS {
            // WouldBlock, or an error reported for an earlier send:
            // nothing more now.
            if u.sock.recv_batch(&mut u.rx).is_err() {
                more = false;
                break;
            }
            let gro = &mut self.gro;
            for (from, d) in u.rx.records_mut() {
                let _ = self.core.datagram(from, d, now, &mut |pkt| {
                    delivered += 1;
                    match gro.as_deref_mut() {
                        Some(g) => g.push(pkt, &mut |h, b| writer.write(h, b)),
                        None => writer.write_plain(pkt),
                    }
                });
            }
            more = u.rx.messages() == u.rx.slots();
            if !more {
                break;
            }
        }
        if let Some(g) = self.gro.as_deref_mut() {
            g.flush(&mut |h, b| writer.write(h, b));
            if writer.gso_refused {
                g.disable();
            }
        }
        stats
            .to_kernel_packets
            .fetch_add(delivered.saturating_sub(writer.dropped), Relaxed);
        stats.drop_tun_write.fetch_add(writer.dropped, Relaxed);
        stats.tun_writes.fetch_add(writer.writes, Relaxed);
        stats.gro_merged.fetch_add(writer.merged, Relaxed);
        // Echo replies and key acknowledgements.
        let mut sink = Sink { udp: Some(u) };
        self.core.poll_datagram_transmit(now, &mut sink);
        more
    }

    /// Writes every connection with bytes to send.
    fn flush(&mut self, now: Instant) {
        self.core.flush_datagram_counts();
        if let Some(u) = self.udp.as_mut() {
            u.flush();
            if u.dropped > 0 {
                self.core
                    .stats()
                    .drop_backpressure
                    .fetch_add(std::mem::take(&mut u.dropped), Relaxed);
            }
        }
        while let Some(id) = self.core.poll_dirty() {
            if let Some(Some(s)) = self.socks.get_mut(id as usize) {
                self.core
                    .write(id, now, |sess| driver::flush(sess, &mut s.stream, now));
            }
        }
    }

    /// Closes the sockets of connections the core is done with.
    fn close_finished(&mut self) {
        while let Some(id) = self.core.poll_closed() {
            if let Some(mut s) = self.socks.get_mut(id as usize).and_then(Option::take) {
                let _ = self.poll.registry().deregister(&mut s.stream);
                self.port.count(&self.mesh, false);
            }
        }
    }
}

/// One batch's tallies of packets towards tunnels.
#[derive(Default)]
struct Tally {
    ok: u64,
    bytes: u64,
    no_route: u64,
    malformed: u64,
    full: u64,
    offload: u64,
}

impl Tally {
    fn drop(&mut self, d: TunDrop) {
        match d {
            TunDrop::Malformed => self.malformed += 1,
            TunDrop::NoRoute => self.no_route += 1,
            TunDrop::Backpressure => self.full += 1,
        }
    }

    /// Adds the tallies to `core`'s counters.
    fn count(&self, core: &Core) {
        let s = core.stats();
        s.to_tunnel_packets.fetch_add(self.ok, Relaxed);
        s.to_tunnel_bytes.fetch_add(self.bytes, Relaxed);
        s.drop_no_route.fetch_add(self.no_route, Relaxed);
        s.drop_malformed.fetch_add(self.malformed, Relaxed);
        s.drop_backpressure.fetch_add(self.full, Relaxed);
        s.drop_tun_offload.fetch_add(self.offload, Relaxed);
    }
}

/// Writes to the TUN device and tallies what happened.
struct TunWriter<'a> {
    tun: &'a Tun,
    writes: u64,
    /// Packets written inside GSO packets.
    merged: u64,
    /// Packets lost to failed writes.
    dropped: u64,
    /// The kernel refused a GSO packet as invalid.
    gso_refused: bool,
}

impl TunWriter<'_> {
    /// One packet or GSO packet, behind its virtio-net header.
    fn write(&mut self, hdr: &VnetHdr, pkt: &[u8]) {
        let segments = if hdr.is_gso() {
            let payload = pkt.len().saturating_sub(usize::from(hdr.hdr_len));
            payload.div_ceil(usize::from(hdr.gso_size).max(1)) as u64
        } else {
            1
        };
        self.writes += 1;
        if hdr.is_gso() {
            self.merged += segments;
        }
        if let Err(e) = self.tun.send_vnet(&hdr.to_bytes(), pkt) {
            log::debug!("TUN write: {e}");
            self.dropped += segments;
            if hdr.is_gso() && e.raw_os_error() == Some(libc::EINVAL) {
                self.gso_refused = true;
            }
        }
    }

    /// One packet, on a device without virtio-net headers.
    fn write_plain(&mut self, pkt: &[u8]) {
        self.writes += 1;
        if self.tun.send(pkt).is_err() {
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
#[path = "review_h24.rs"]
mod review_h24;
