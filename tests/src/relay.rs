//! A delay relay: the lab's stand-in for distance, since this kernel has
//! no netem. A [`Relay`] listens on an address inside a lab namespace
//! (the failover tests put one in `inet` per edge, on `inet`'s address
//! towards that edge) and forwards TCP connections, and UDP datagrams if
//! asked, to one upstream address (the edge's), holding every chunk for a
//! fixed one-way delay in each direction: a relay of delay `d` adds `2d`
//! to the round trip.
//!
//! It can also fail on command, the way a network does:
//! - [`Relay::blackhole`]: a silent death. Nothing is forwarded any more
//!   (bytes in flight included) and nothing is closed: the gateway's TCP
//!   connection stays open and its probes go unanswered, and closes from
//!   either side are not passed on either. A connection blackholed once
//!   stays so (its stream lost bytes), until it is cut; connections
//!   accepted while the blackhole is on are held, never connected.
//! - [`Relay::cut`]: every current connection is reset (RST both ways),
//!   and every UDP flow forgotten.
//!
//! Closes are passed on: an end of stream from one side, after the delay,
//! half-closes the other side; a reset resets it.
//!
//! # Bounds
//! At most [`RelayConfig::max_conns`] connections (and as many UDP flows)
//! at once, more are reset at once; at most
//! [`RelayConfig::max_buffered`] bytes held per direction of each
//! connection (the relay then stops reading: TCP's own back-pressure) and
//! per direction of the UDP relay (more datagrams are dropped, counted);
//! and a lifetime ([`RelayConfig::lifetime`]) after which everything is
//! reset and the threads end by themselves. Dropping the [`Relay`] (also
//! while unwinding from a panic) stops it and joins every thread; a
//! [`Relay`] borrows its [`Lab`], so it cannot outlive the namespace its
//! sockets live in. Every socket is made by a thread that entered the
//! lab namespace first.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_lab::{Host, Lab, addr, relay::{Relay, RelayConfig}};
//!
//! let lab = Lab::with_edges(2);
//! // The gateway then reaches `edge2` at 198.51.100.14:4443, 20 ms away
//! // each way.
//! let relay = Relay::start(&lab, Host::Inet, RelayConfig::new(
//!     (addr::INET_EDGE2_SIDE_V4, 4443).into(),
//!     (addr::EDGE2_WAN_V4, 4443).into(),
//!     Duration::from_millis(20),
//! ));
//! relay.blackhole(true); // edge2 dies silently
//! ```
use std::{
    collections::{HashMap, VecDeque},
    io::{self, Read as _, Write as _},
    marker::PhantomData,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::{Host, Lab, netns};

/// How long any blocking call of the relay waits before it looks at the
/// stop, cut and blackhole switches again.
const TICK: Duration = Duration::from_millis(20);
/// The most bytes read from a socket at once.
const CHUNK: usize = 16 * 1024;

/// What a [`Relay`] does; [`RelayConfig::new`] fills in the bounds.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where it listens (TCP, and UDP on the same port with
    /// [`RelayConfig::udp`]).
    pub listen: SocketAddr,
    /// Where it forwards to.
    pub upstream: SocketAddr,
    /// The one-way delay added in each direction.
    pub delay: Duration,
    /// Relay UDP datagrams too (one upstream socket per client address).
    pub udp: bool,
    /// TCP connections, and UDP flows, at once (default 16).
    pub max_conns: usize,
    /// Bytes held per direction of a connection, and per direction of
    /// the UDP relay (default 1 MiB).
    pub max_buffered: usize,
    /// How long the relay runs at most (default 300 s).
    pub lifetime: Duration,
    /// How long it tries to connect upstream (default 2 s); a failure
    /// resets the accepted connection, as a refused connection would.
    pub connect_timeout: Duration,
}

impl RelayConfig {
    /// TCP from `listen` to `upstream` with `delay` each way, and the
    /// default bounds.
    pub fn new(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> Self {
        Self {
            listen,
            upstream,
            delay,
            udp: false,
            max_conns: 16,
            max_buffered: 1 << 20,
            lifetime: Duration::from_mins(5),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// The same, relaying UDP too.
    #[must_use]
    pub fn with_udp(mut self) -> Self {
        self.udp = true;
        self
    }
}

/// What a [`Relay`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// TCP connections accepted and relayed (or held, if blackholed).
    pub accepted: u64,
    /// TCP connections reset at once: [`RelayConfig::max_conns`] reached.
    pub refused: u64,
    /// TCP connections reset because the upstream could not be reached.
    pub upstream_failed: u64,
    /// TCP connections open now.
    pub open: u64,
    /// Bytes forwarded towards the upstream (TCP and UDP payloads).
    pub bytes_up: u64,
    /// Bytes forwarded back from the upstream.
    pub bytes_down: u64,
    /// Bytes thrown away by the blackhole.
    pub discarded: u64,
    /// UDP datagrams dropped: a direction's buffer full, or no room for
    /// another flow.
    pub datagrams_dropped: u64,
    /// The most bytes ever held at once in one direction of one
    /// connection (or of the UDP relay): never above
    /// [`RelayConfig::max_buffered`].
    pub peak_buffered: u64,
}

/// A running delay relay; see the [module](self) documentation.
#[derive(Debug)]
pub struct Relay<'lab> {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
    local: SocketAddr,
    /// Its sockets live in a namespace of this lab.
    _lab: PhantomData<&'lab Lab>,
}

impl<'lab> Relay<'lab> {
    /// Starts a relay whose sockets live in `h`'s namespace of `lab`.
    ///
    /// # Panics
    /// If the namespace cannot be entered or the address cannot be bound.
    pub fn start(lab: &'lab Lab, h: Host, cfg: RelayConfig) -> Relay<'lab> {
        let listen = cfg.listen;
        Self::spawn(Some(lab.ns(h).to_owned()), cfg)
            .unwrap_or_else(|e| panic!("sluice-lab: relay on {listen} in {h}: {e}"))
    }

    /// Where it listens (with the port the kernel chose, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Turns the silent death on (or the relay's forwarding of new
    /// connections back on; connections blackholed once stay so).
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Relaxed);
    }

    /// Resets every current connection and forgets every UDP flow (new
    /// ones are relayed as before).
    pub fn cut(&self) {
        self.shared.cut.fetch_add(1, Relaxed);
    }

    /// Changes the one-way delay of what is read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.set_delay(delay);
    }

    /// The one-way delay it adds now.
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// What it has done so far.
    pub fn stats(&self) -> RelayStats {
        let s = &self.shared.stats;
        RelayStats {
            accepted: s.accepted.load(Relaxed),
            refused: s.refused.load(Relaxed),
            upstream_failed: s.upstream_failed.load(Relaxed),
            open: self.shared.open.load(Relaxed) as u64,
            bytes_up: s.bytes_up.load(Relaxed),
            bytes_down: s.bytes_down.load(Relaxed),
            discarded: s.discarded.load(Relaxed),
            datagrams_dropped: s.datagrams_dropped.load(Relaxed),
            peak_buffered: s.peak_buffered.load(Relaxed),
        }
    }

    /// Starts the relay's thread, which enters `netns` (if any) before it
    /// makes a socket, and waits until it listens.
    fn spawn(netns: Option<String>, cfg: RelayConfig) -> io::Result<Relay<'lab>> {
        let shared = Arc::new(Shared::new(cfg, netns));
        let (tx, rx) = mpsc::sync_channel(1);
        let sh = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("sluice-relay".into())
            .spawn(move || {
                let bound = sh.enter().and_then(|()| bind(&sh.cfg));
                match bound {
                    Ok((listener, udp)) => {
                        let _ = tx.send(listener.local_addr());
                        run(&sh, &listener, udp);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let relay = |local| Relay {
            shared: Arc::clone(&shared),
            thread: Some(thread),
            local,
            _lab: PhantomData,
        };
        match rx.recv() {
            Ok(Ok(local)) => Ok(relay(local)),
            Ok(Err(e)) => {
                drop(relay(shared.cfg.listen));
                Err(e)
            }
            Err(_) => {
                drop(relay(shared.cfg.listen));
                Err(io::Error::other(
                    "the relay's thread ended before it listened",
                ))
            }
        }
    }
}

impl Drop for Relay<'_> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!(
                "sluice-lab: a thread of the relay on {} panicked",
                self.local
            );
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_failed: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    discarded: AtomicU64,
    datagrams_dropped: AtomicU64,
    peak_buffered: AtomicU64,
}

/// What the relay's threads share.
#[derive(Debug)]
struct Shared {
    cfg: RelayConfig,
    netns: Option<String>,
    deadline: Instant,
    delay_ns: AtomicU64,
    stop: AtomicBool,
    blackhole: AtomicBool,
    /// Bumped by [`Relay::cut`]: connections of an older generation end.
    cut: AtomicU64,
    open: AtomicUsize,
    stats: Counters,
}

impl Shared {
    fn new(cfg: RelayConfig, netns: Option<String>) -> Self {
        let s = Self {
            deadline: Instant::now() + cfg.lifetime,
            cfg,
            netns,
            delay_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            blackhole: AtomicBool::new(false),
            cut: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            stats: Counters::default(),
        };
        s.set_delay(s.cfg.delay);
        s
    }

    /// Enters the lab namespace (if any): before every socket is made.
    fn enter(&self) -> io::Result<()> {
        self.netns.as_deref().map_or(Ok(()), netns::enter)
    }

    fn set_delay(&self, d: Duration) {
        self.delay_ns
            .store(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Relaxed))
    }

    /// Stopped, or past its lifetime.
    fn over(&self) -> bool {
        self.stop.load(Relaxed) || Instant::now() >= self.deadline
    }

    fn blackholed(&self) -> bool {
        self.blackhole.load(Relaxed)
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }
}

fn bind(cfg: &RelayConfig) -> io::Result<(TcpListener, Option<UdpSocket>)> {
    let listener = TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let udp = if cfg.udp {
        let s = UdpSocket::bind(listener.local_addr()?)?;
        s.set_read_timeout(Some(TICK))?;
        Some(s)
    } else {
        None
    };
    Ok((listener, udp))
}

/// The relay's main thread: accepts connections (each on a thread of its
/// own) and runs the UDP relay, until stopped or out of time; every
/// thread it started has ended when it returns.
fn run(sh: &Shared, listener: &TcpListener, udp: Option<UdpSocket>) {
    thread::scope(|s| {
        if let Some(u) = udp {
            s.spawn(move || udp_relay(sh, &u));
        }
        while !sh.over() {
            let Ok((down, _)) = listener.accept() else {
                thread::sleep(TICK / 4);
                continue;
            };
            if sh.open.load(Relaxed) >= sh.cfg.max_conns {
                sh.stats.refused.fetch_add(1, Relaxed);
                let _ = netns::reset_on_close(&down);
                continue;
            }
            sh.open.fetch_add(1, Relaxed);
            sh.stats.accepted.fetch_add(1, Relaxed);
            s.spawn(move || {
                tcp_conn(sh, &down);
                sh.open.fetch_sub(1, Relaxed);
            });
        }
    });
}

/// One chunk of a TCP stream in a [`DelayLine`].
#[derive(Debug)]
enum Chunk {
    Data(Vec<u8>),
    /// The sending side's end: `true` for a reset, `false` for a FIN.
    End(bool),
}

/// One relayed TCP connection's state.
#[derive(Debug)]
struct Conn<'a> {
    sh: &'a Shared,
    /// Its [`Shared::cut`] generation.
    generation: u64,
    /// A side reset it (or could not be written): tear both down.
    reset: AtomicBool,
    /// The blackhole has had it: it forwards nothing any more.
    poisoned: AtomicBool,
}

impl Conn<'_> {
    fn alive(&self) -> bool {
        !self.sh.over() && self.sh.cut.load(Relaxed) == self.generation && !self.reset.load(Relaxed)
    }

    /// Whether it must forward nothing (blackholed now or once).
    fn silent(&self) -> bool {
        if self.sh.blackholed() {
            self.poisoned.store(true, Relaxed);
        }
        self.poisoned.load(Relaxed)
    }
}

fn tcp_conn(sh: &Shared, down: &TcpStream) {
    let conn = Conn {
        sh,
        generation: sh.cut.load(Relaxed),
        reset: AtomicBool::new(false),
        poisoned: AtomicBool::new(false),
    };
    let _ = down.set_nonblocking(false);
    let _ = down.set_read_timeout(Some(TICK));
    if conn.silent() {
        // Accepted while dead: swallow what comes until cut or stopped.
        let mut buf = vec![0; CHUNK];
        while conn.alive() {
            match (&*down).read(&mut buf) {
                Ok(0) => thread::sleep(TICK),
                Ok(n) => Shared::add(&sh.stats.discarded, n),
                Err(e) if transient(&e) => {}
                Err(_) => thread::sleep(TICK),
            }
        }
        let _ = netns::reset_on_close(down);
        return;
    }
    let connected = sh
        .enter()
        .and_then(|()| TcpStream::connect_timeout(&sh.cfg.upstream, sh.cfg.connect_timeout));
    let Ok(up) = connected else {
        sh.stats.upstream_failed.fetch_add(1, Relaxed);
        let _ = netns::reset_on_close(down);
        return;
    };
    let _ = up.set_read_timeout(Some(TICK));
    for s in [down, &up] {
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(TICK));
    }
    let to_up = DelayLine::new(sh.cfg.max_buffered, &sh.stats.peak_buffered);
    let to_down = DelayLine::new(sh.cfg.max_buffered, &sh.stats.peak_buffered);
    thread::scope(|s| {
        s.spawn(|| pump_in(&conn, down, &to_up, &sh.stats.bytes_up));
        s.spawn(|| pump_out(&conn, &up, &to_up));
        s.spawn(|| pump_in(&conn, &up, &to_down, &sh.stats.bytes_down));
        pump_out(&conn, down, &to_down);
    });
    let ended_by_itself = conn.alive();
    if !ended_by_itself || conn.reset.load(Relaxed) {
        let _ = netns::reset_on_close(down);
        let _ = netns::reset_on_close(&up);
    }
}

/// Reads `from` into `line` (each chunk due a delay later) until its end,
/// passed on as a [`Chunk::End`] unless the connection is silent.
fn pump_in(conn: &Conn<'_>, from: &TcpStream, line: &DelayLine<'_, Chunk>, forwarded: &AtomicU64) {
    let mut buf = vec![0; CHUNK];
    while conn.alive() {
        let Some(room) = line.wait_room(|| conn.alive()) else {
            return;
        };
        let end = match (&*from).read(&mut buf[..room.min(CHUNK)]) {
            Ok(0) => false,
            Ok(n) => {
                if conn.silent() {
                    Shared::add(&conn.sh.stats.discarded, n);
                } else {
                    line.push(Chunk::Data(buf[..n].to_vec()), n, conn.sh.delay());
                    Shared::add(forwarded, n);
                }
                continue;
            }
            Err(e) if transient(&e) => continue,
            Err(_) => true,
        };
        if !conn.silent() {
            line.push(Chunk::End(end), 0, conn.sh.delay());
        }
        return;
    }
}

/// Writes what `line` hands out, when due, to `to`; passes an end on.
fn pump_out(conn: &Conn<'_>, to: &TcpStream, line: &DelayLine<'_, Chunk>) {
    while let Some(chunk) = line.pop_due(|| conn.alive()) {
        if conn.silent() {
            if let Chunk::Data(b) = chunk {
                Shared::add(&conn.sh.stats.discarded, b.len());
            }
            continue;
        }
        match chunk {
            Chunk::Data(b) => {
                if write_all(to, &b, || conn.alive()).is_err() {
                    conn.reset.store(true, Relaxed);
                    return;
                }
            }
            Chunk::End(false) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Chunk::End(true) => {
                conn.reset.store(true, Relaxed);
                return;
            }
        }
    }
}

/// `write_all` that gives up when `alive` turns false (the socket has a
/// write timeout of [`TICK`]).
fn write_all(mut to: &TcpStream, mut b: &[u8], alive: impl Fn() -> bool) -> io::Result<()> {
    while !b.is_empty() {
        if !alive() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match to.write(b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A timeout or an interruption: try again.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The UDP flows: each client address's own upstream socket.
type Flows = Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>;
/// Datagrams on their way, each with its client's address.
type Datagrams<'a> = DelayLine<'a, (SocketAddr, Vec<u8>)>;

/// The UDP relay: datagrams from each client address go out of an
/// upstream socket of that client's own (a flow), the replies come back
/// to the client from the listening socket; both ways a delay later.
fn udp_relay(sh: &Shared, sock: &UdpSocket) {
    let flows: Flows = Mutex::new(HashMap::new());
    let to_up: Datagrams<'_> = DelayLine::new(sh.cfg.max_buffered, &sh.stats.peak_buffered);
    let to_down: Datagrams<'_> = DelayLine::new(sh.cfg.max_buffered, &sh.stats.peak_buffered);
    let alive = || !sh.over();
    let flows_of = || flows.lock().unwrap_or_else(PoisonError::into_inner);
    thread::scope(|s| {
        s.spawn(|| {
            while let Some((client, b)) = to_up.pop_due(alive) {
                let flow = flows_of().get(&client).map(Arc::clone);
                if let Some(f) = flow.filter(|_| !sh.blackholed())
                    && f.send(&b).is_ok()
                {
                    Shared::add(&sh.stats.bytes_up, b.len());
                }
            }
        });
        s.spawn(|| {
            while let Some((client, b)) = to_down.pop_due(alive) {
                if !sh.blackholed() && sock.send_to(&b, client).is_ok() {
                    Shared::add(&sh.stats.bytes_down, b.len());
                }
            }
        });
        let mut buf = vec![0; 65536];
        let mut generation = sh.cut.load(Relaxed);
        while alive() {
            if sh.cut.load(Relaxed) != generation {
                generation = sh.cut.load(Relaxed);
                flows_of().clear();
            }
            let Ok((n, client)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if sh.blackholed() {
                Shared::add(&sh.stats.discarded, n);
                continue;
            }
            let known = flows_of().contains_key(&client);
            if !known {
                let flow = new_flow(sh, &flows_of());
                let Some(up) = flow else {
                    sh.stats.datagrams_dropped.fetch_add(1, Relaxed);
                    continue;
                };
                flows_of().insert(client, Arc::clone(&up));
                let (flows, to_down) = (&flows, &to_down);
                s.spawn(move || udp_flow_back(sh, flows, client, &up, to_down));
            }
            if !to_up.try_push((client, buf[..n].to_vec()), n, sh.delay()) {
                sh.stats.datagrams_dropped.fetch_add(1, Relaxed);
            }
        }
    });
}

/// Reads `client`'s flow socket `up` into `to_down` until the flow is
/// forgotten (a cut) or the relay ends.
fn udp_flow_back(
    sh: &Shared,
    flows: &Flows,
    client: SocketAddr,
    up: &Arc<UdpSocket>,
    to_down: &Datagrams<'_>,
) {
    let mine = || {
        !sh.over()
            && flows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&client)
                .is_some_and(|f| Arc::ptr_eq(f, up))
    };
    let mut buf = vec![0; 65536];
    while mine() {
        let Ok(n) = up.recv(&mut buf) else { continue };
        if sh.blackholed() {
            Shared::add(&sh.stats.discarded, n);
        } else if !to_down.try_push((client, buf[..n].to_vec()), n, sh.delay()) {
            sh.stats.datagrams_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// A connected upstream socket for a new UDP flow, if there is room for
/// one (the caller holds the flows' lock).
fn new_flow<V>(
    sh: &Shared,
    flows: &MutexGuard<'_, HashMap<SocketAddr, V>>,
) -> Option<Arc<UdpSocket>> {
    if flows.len() >= sh.cfg.max_conns {
        return None;
    }
    let any: SocketAddr = if sh.cfg.upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let up = sh.enter().and_then(|()| UdpSocket::bind(any)).ok()?;
    up.connect(sh.cfg.upstream).ok()?;
    up.set_read_timeout(Some(TICK)).ok()?;
    Some(Arc::new(up))
}

/// A bounded FIFO whose items come out a delay after they went in.
#[derive(Debug)]
struct DelayLine<'a, T> {
    state: Mutex<LineState<T>>,
    changed: Condvar,
    cap: usize,
    /// The most bytes any line of the relay held (raised by this one).
    peak: &'a AtomicU64,
}

#[derive(Debug)]
struct LineState<T> {
    items: VecDeque<(Instant, T, usize)>,
    bytes: usize,
}

impl<'a, T> DelayLine<'a, T> {
    fn new(cap: usize, peak: &'a AtomicU64) -> Self {
        Self {
            state: Mutex::new(LineState {
                items: VecDeque::new(),
                bytes: 0,
            }),
            changed: Condvar::new(),
            cap: cap.max(1),
            peak,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LineState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until there is room; how many bytes fit (`None` once `alive`
    /// turns false).
    fn wait_room(&self, alive: impl Fn() -> bool) -> Option<usize> {
        let mut st = self.lock();
        loop {
            if !alive() {
                return None;
            }
            if st.bytes < self.cap {
                return Some(self.cap - st.bytes);
            }
            st = self
                .changed
                .wait_timeout(st, TICK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Adds `item` of `len` bytes, due `delay` from now (the caller made
    /// room with [`DelayLine::wait_room`]).
    fn push(&self, item: T, len: usize, delay: Duration) {
        let mut st = self.lock();
        st.bytes += len;
        self.peak.fetch_max(st.bytes as u64, Relaxed);
        st.items.push_back((Instant::now() + delay, item, len));
        self.changed.notify_all();
    }

    /// Adds `item` if its `len` bytes fit; false if they do not.
    fn try_push(&self, item: T, len: usize, delay: Duration) -> bool {
        if self.lock().bytes + len > self.cap {
            return false;
        }
        self.push(item, len, delay);
        true
    }

    /// The oldest item, once it is due (`None` once `alive` turns false).
    fn pop_due(&self, alive: impl Fn() -> bool) -> Option<T> {
        let mut st = self.lock();
        loop {
            if !alive() {
                return None;
            }
            let now = Instant::now();
            let wait = match st.items.front() {
                Some((due, _, _)) if *due <= now => {
                    let (_, item, len) = st.items.pop_front()?;
                    st.bytes -= len;
                    self.changed.notify_all();
                    return Some(item);
                }
                Some((due, _, _)) => (*due - now).min(TICK),
                None => TICK,
            };
            st = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests;
