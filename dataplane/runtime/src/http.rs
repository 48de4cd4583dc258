//! The minimal HTTP/1.1 server behind every sluice listener: the metrics
//! endpoint, the gateway's admin API and the LAN-facing PAC file.
//!
//! Every connection is untrusted until its request is authorised, so the
//! server is built so that no client can hold it:
//! - one thread, one `mio` poll, every socket non-blocking: a client that
//!   sends one byte a second holds one connection slot, never the thread;
//! - absolute deadlines per connection: one for the request head
//!   ([`Limits::head_deadline`]: what a client that is not yet authorised
//!   can hold a slot for), one for the whole exchange (request head in,
//!   answer out: [`Limits::deadline`]); past them the connection is
//!   closed, whatever it was doing;
//! - caps on concurrent connections, per listener (clients of one cannot
//!   take another's slots: the admin API's TCP listener cannot lock root
//!   out of its Unix socket) and per source ([`Limits::max_conns`],
//!   [`Limits::max_per_source`]; an IPv6 source is its /64, which one
//!   host can fill with addresses); a full listener makes room for a new
//!   source by closing the oldest connection of the source that holds the
//!   most, and otherwise accepts and closes at once, so the kernel's
//!   accept queue never fills;
//! - a request head of at most [`Limits::head_bytes`] and no request
//!   bodies (the routes say everything in their path and query);
//! - accept errors back off (`EMFILE`) instead of stopping the listener.
//!
//! Authorisation happens per listener ([`Access`]): open (metrics, PAC),
//! a bearer token compared by its SHA-256 in constant time, or the Unix
//! socket peer's kernel-recorded credentials (uid 0 or a configured
//! group). TCP listeners also check the `Host` header against an
//! allow-list ([`Hosts`]): a web page that rebinds its own DNS name to
//! the listener's address still sends its own name, and is refused.
//! Handlers run on the server's thread: they must be quick or, like the
//! admin API's reload, run on a server of their own.
//!
//! [`parse`] and [`Hosts`] are pure (`sluice_core::http`, re-exported
//! here): bytes in, a request or an error out; the `http_request` fuzz
//! target drives them.
use std::{
    collections::HashMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token};

/// Bounds that keep one client (or many) from holding a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on one listener.
    pub max_conns: usize,
    /// Connections open at once on one listener from one source (TCP: an
    /// IPv4 address, an IPv6 /64).
    pub max_per_source: usize,
    /// The largest request head (request line and headers).
    pub head_bytes: usize,
    /// From accept to the end of the request head (at most
    /// [`Limits::deadline`]): what a client holds a slot for before it is
    /// authorised.
    pub head_deadline: Duration,
    /// From accept to the last byte of the answer.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_conns: 256,
            max_per_source: 32,
            head_bytes: 8192,
            head_deadline: Duration::from_secs(5),
            deadline: Duration::from_secs(5),
        }
    }
}

/// The source a TCP connection is counted under: its IPv4 address (also
/// when it arrives v4-mapped on a dual-stack listener) or its IPv6
/// address's /64 (one host holds a whole /64: counted address by address,
/// it could take every slot).
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !u128::from(u64::MAX),
        )),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Who may use a listener.
#[derive(Clone, PartialEq, Eq)]
pub enum Access {
    /// Whoever can connect (read-only listeners: metrics, the PAC file).
    Open,
    /// Requests carrying `Authorization: Bearer <token>` whose token's
    /// SHA-256 is this.
    Token([u8; 32]),
    /// Unix socket peers whose kernel-recorded credentials are root's, or
    /// who are in this group (primary or supplementary).
    Peer {
        /// The group allowed besides root.
        gid: Option<u32>,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("Open"),
            // Never the hash itself in logs.
            Access::Token(_) => f.write_str("Token(..)"),
            Access::Peer { gid } => f.debug_struct("Peer").field("gid", gid).finish(),
        }
    }
}

pub use sluice_core::http::{Hosts, ParseError, Request, parse};

/// [`Hosts::local`] with this machine's host name
/// (`/proc/sys/kernel/hostname`): `localhost`, it and `extra`.
pub fn local_hosts<I: IntoIterator<Item = S>, S: AsRef<str>>(extra: I) -> Hosts {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    Hosts::local(extra, name.as_deref())
}

/// What a handler answers: status and content type; the body is what it
/// wrote into the buffer it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
}

impl Reply {
    /// A `text/plain` answer.
    pub const fn text(status: u16) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
        }
    }
}

/// The reason phrase of the statuses sluice sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// Equal, in time that does not depend on where they differ.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A request handler: reads the request, writes the body, returns the
/// status and type.
pub(crate) type Handler = Box<dyn FnMut(&Request<'_>, &mut String) -> Reply + Send>;

enum Listener {
    Tcp(mio::net::TcpListener),
    /// The socket, its path, and the file's (device, inode) at bind.
    Unix(mio::net::UnixListener, PathBuf, (u64, u64)),
}

struct Bound {
    listener: Listener,
    access: Access,
    hosts: Hosts,
}

enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

struct Conn {
    stream: Stream,
    listener: usize,
    /// Its [`source_key`] (TCP).
    source: Option<IpAddr>,
    /// The Unix peer passed [`Access::Peer`] (checked at accept).
    peer_ok: bool,
    buf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    accepted: Instant,
    /// The head's deadline until the head is in, then the answer's.
    deadline: Instant,
}

/// Counters of a server, for tests and logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections closed at accept for the caps.
    pub refused_cap: std::sync::atomic::AtomicU64,
    /// Connections closed to make room for a new source.
    pub evicted: std::sync::atomic::AtomicU64,
    /// Connections closed at their deadline.
    pub timed_out: std::sync::atomic::AtomicU64,
    /// Requests answered (any status).
    pub answered: std::sync::atomic::AtomicU64,
}

/// An HTTP server: listeners, one handler, [`Limits`]. Bind with
/// [`Server::listen_tcp`] / [`Server::listen_unix`] (errors surface there,
/// before any thread starts), then [`Server::spawn`].
pub struct Server {
    name: String,
    poll: Poll,
    listeners: Vec<Bound>,
    limits: Limits,
    handler: Handler,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("listeners", &self.listeners.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Where a listener's token ends and connections' begin.
const MAX_LISTENERS: usize = 16;

impl Server {
    /// A server named `name` (its thread's name and its log prefix).
    ///
    /// # Errors
    /// If the poll cannot be created.
    pub fn new(
        name: &str,
        limits: Limits,
        handler: impl FnMut(&Request<'_>, &mut String) -> Reply + Send + 'static,
    ) -> io::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            poll: Poll::new()?,
            listeners: Vec::new(),
            limits,
            handler: Box::new(handler),
            stats: Arc::new(Stats::default()),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses its TCP listeners are bound to, in the order added.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|b| match &b.listener {
                Listener::Tcp(l) => l.local_addr().ok(),
                Listener::Unix(..) => None,
            })
            .collect()
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn add(&mut self, mut listener: Listener, access: Access, hosts: Hosts) -> io::Result<()> {
        if self.listeners.len() >= MAX_LISTENERS {
            return Err(io::Error::other("too many listeners"));
        }
        let token = Token(self.listeners.len());
        let source: &mut dyn mio::event::Source = match &mut listener {
            Listener::Tcp(l) => l,
            Listener::Unix(l, ..) => l,
        };
        self.poll
            .registry()
            .register(source, token, Interest::READABLE)?;
        self.listeners.push(Bound {
            listener,
            access,
            hosts,
        });
        Ok(())
    }

    /// Listens on TCP `addr`; returns the bound address (port 0 picks
    /// one).
    ///
    /// # Errors
    /// Bind or registration errors.
    pub fn listen_tcp(
        &mut self,
        addr: SocketAddr,
        access: Access,
        hosts: Hosts,
    ) -> io::Result<SocketAddr> {
        let l = mio::net::TcpListener::bind(addr)?;
        let local = l.local_addr()?;
        self.add(Listener::Tcp(l), access, hosts)?;
        Ok(local)
    }

    /// Listens on the Unix socket `path`, mode `mode`, group `gid` (owner
    /// root). The socket's directory (created 0755 if missing, each missing
    /// directory only inside one checked first) must be one
    /// only root (or this user) can change ([`crate::pki::untrusted_dir`]):
    /// the file is chmod'ed and chown'ed by path after bind, and the CLI
    /// trusts whoever serves that path. A stale socket file there (nothing
    /// listening) is replaced; a live one, or anything that is not a
    /// socket, is an error. The file is removed when the server stops.
    ///
    /// # Errors
    /// Bind, chmod, chown errors; `PermissionDenied` for a directory others
    /// could change; `AddrInUse` if another process serves the path.
    pub fn listen_unix(
        &mut self,
        path: &Path,
        mode: u32,
        gid: Option<u32>,
        access: Access,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileTypeExt as _;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let refused = |p: &Path, why: &str| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: not a place for the admin socket: {}: {why}",
                    path.display(),
                    p.display()
                ),
            )
        };
        // Each missing directory only inside one checked first.
        match crate::pki::create_dir_checked(dir, 0o755) {
            Ok(()) => {}
            Err(crate::pki::PkiError::Unsafe { path: p, why }) => return Err(refused(&p, &why)),
            Err(crate::pki::PkiError::Write { source, .. }) => return Err(source),
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
        if let Some((p, why)) = crate::pki::untrusted_dir(dir) {
            return Err(refused(&p, &why));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{}: another process serves it", path.display()),
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists and is not a socket", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let l = mio::net::UnixListener::bind(path)?;
        // Whoever connects between bind and chmod is still checked by its
        // credentials ([`Access::Peer`]); nobody else can swap the path
        // in between (the directory is checked above).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(path, None, Some(g))?;
        }
        let m = std::fs::symlink_metadata(path)?;
        self.add(
            Listener::Unix(l, path.to_path_buf(), (m.dev(), m.ino())),
            access,
            Hosts::default(),
        )
    }

    /// Runs the server on a thread of its own until `stop` is set.
    ///
    /// # Errors
    /// If the thread cannot start.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run(&|| stop.load(Ordering::Relaxed)))
    }

    /// Serves until `stop()` says so (checked at least every 100 ms).
    pub fn run(mut self, stop: &dyn Fn() -> bool) {
        let mut events = Events::with_capacity(64);
        let mut t = Table {
            conns: Vec::new(),
            per_source: HashMap::new(),
            open: vec![0; self.listeners.len()],
        };
        let mut body = String::new();
        // Accepting is retried from here after an error (EMFILE, ...).
        let mut accept_again: Option<Instant> = None;
        let mut logged_at: Option<Instant> = None;
        while !stop() {
            let now = Instant::now();
            let next = t
                .conns
                .iter()
                .flatten()
                .map(|c| c.deadline)
                .chain(accept_again)
                .min()
                .map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(now)
                        .min(Duration::from_millis(100))
                });
            if let Err(e) = self.poll.poll(&mut events, Some(next)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warn!("{}: poll: {e}", self.name);
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            let mut ready = Vec::new();
            let mut accept = accept_again.is_some_and(|t| Instant::now() >= t);
            for ev in &events {
                if ev.token().0 < MAX_LISTENERS {
                    accept = true;
                } else {
                    ready.push(ev.token().0 - MAX_LISTENERS);
                }
            }
            if accept {
                accept_again = None;
                for li in 0..self.listeners.len() {
                    if let Err(e) = self.accept(li, &mut t) {
                        // Out of descriptors or memory: keep serving the
                        // open connections, try again shortly.
                        accept_again = Some(Instant::now() + Duration::from_millis(100));
                        if logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            log::warn!("{}: accept: {e} (retrying)", self.name);
                            logged_at = Some(Instant::now());
                        }
                    }
                }
            }
            for i in ready {
                let done = match t.conns.get_mut(i).and_then(Option::as_mut) {
                    Some(c) => self.progress(c, &mut body),
                    None => false,
                };
                if done {
                    t.close(i, &self.poll);
                }
            }
            let now = Instant::now();
            for i in 0..t.conns.len() {
                if t.conns[i].as_ref().is_some_and(|c| c.deadline <= now) {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    t.close(i, &self.poll);
                }
            }
        }
        // Our socket files only: a gateway started meanwhile may have
        // replaced one with its own.
        for b in &self.listeners {
            if let Listener::Unix(_, p, id) = &b.listener
                && std::fs::symlink_metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == *id)
            {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Accepts what listener `li` has waiting.
    fn accept(&mut self, li: usize, t: &mut Table) -> io::Result<()> {
        loop {
            let accepted = match &self.listeners[li].listener {
                Listener::Tcp(l) => l
                    .accept()
                    .map(|(s, a)| (Stream::Tcp(s), Some(source_key(a.ip())))),
                Listener::Unix(l, ..) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
            };
            let (mut stream, source) = match accepted {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // The client gave up before we took it: next.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let from_source =
                source.map_or(0, |ip| t.per_source.get(&(li, ip)).copied().unwrap_or(0));
            if from_source >= self.limits.max_per_source {
                // Dropped: closed at once.
                self.stats.refused_cap.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if t.open[li] >= self.limits.max_conns {
                // Full: a source with fewer connections than the one that
                // holds the most takes that one's oldest; otherwise closed
                // at once.
                if let Some(i) = source.and_then(|_| t.victim(li, from_source)) {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    t.close(i, &self.poll);
                } else {
                    self.stats.refused_cap.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let peer_ok = match (&self.listeners[li].access, &stream) {
                (Access::Peer { gid }, Stream::Unix(s)) => crate::sys::peer::peer_cred(s)
                    .is_ok_and(|c| {
                        c.uid == 0 || gid.is_some_and(|g| c.gid == g || c.groups.contains(&g))
                    }),
                // A peer check on anything but a Unix socket: nobody passes.
                (Access::Peer { .. }, Stream::Tcp(_)) => false,
                _ => true,
            };
            let slot = if let Some(i) = t.conns.iter().position(Option::is_none) {
                i
            } else {
                t.conns.push(None);
                t.conns.len() - 1
            };
            self.poll.registry().register(
                stream.source(),
                Token(slot + MAX_LISTENERS),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            if let Some(ip) = source {
                *t.per_source.entry((li, ip)).or_default() += 1;
            }
            t.open[li] += 1;
            let now = Instant::now();
            t.conns[slot] = Some(Conn {
                stream,
                listener: li,
                source,
                peer_ok,
                buf: Vec::new(),
                out: Vec::new(),
                written: 0,
                accepted: now,
                deadline: now + self.limits.head_deadline.min(self.limits.deadline),
            });
        }
    }

    /// Reads, answers, writes what the connection allows now; `true` when
    /// it is finished (answered, failed or closed by the peer).
    fn progress(&mut self, c: &mut Conn, body: &mut String) -> bool {
        if c.out.is_empty() {
            let mut chunk = [0u8; 2048];
            // The peer may send its request and close its side at once
            // (`printf ... | nc`): answer what came before the end.
            let mut eof = false;
            loop {
                let room = self.limits.head_bytes.saturating_sub(c.buf.len());
                if room == 0 {
                    break;
                }
                let want = room.min(chunk.len());
                match c.stream.read(&mut chunk[..want]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return true,
                }
            }
            let bound = &self.listeners[c.listener];
            body.clear();
            let reply = match parse(&c.buf, self.limits.head_bytes) {
                Ok(None) => return eof,
                Ok(Some(req)) => authorise(bound, c.peer_ok, &req, body)
                    .unwrap_or_else(|| (self.handler)(&req, body)),
                Err(ParseError::TooLarge) => {
                    body.push_str("request head too large\n");
                    Reply::text(431)
                }
                Err(e) => {
                    body.push_str(&e.to_string());
                    body.push('\n');
                    Reply::text(400)
                }
            };
            self.stats.answered.fetch_add(1, Ordering::Relaxed);
            // The head is in: the rest of the exchange has the answer's
            // deadline.
            c.deadline = c.accepted + self.limits.deadline;
            let mut out = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
                reply.status,
                reason(reply.status),
                reply.content_type,
                body.len()
            );
            if reply.status == 401 {
                out.push_str("WWW-Authenticate: Bearer\r\n");
            }
            out.push_str("\r\n");
            out.push_str(body);
            c.out = out.into_bytes();
        }
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => return true,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }
}

/// The listener's checks, in order: peer credentials, `Host`, token, web
/// pages changing state. `Some` is the refusal.
fn authorise(b: &Bound, peer_ok: bool, req: &Request<'_>, body: &mut String) -> Option<Reply> {
    if !peer_ok {
        body.push_str("refused: the admin socket serves root and the configured group only\n");
        return Some(Reply::text(403));
    }
    if matches!(b.listener, Listener::Tcp(_)) && !b.hosts.allows(req.host) {
        body.push_str("refused: this Host is not among the listener's names\n");
        return Some(Reply::text(421));
    }
    if let Access::Token(want) = &b.access {
        let given = req
            .authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|t| ct_eq(&sha256(t.as_bytes()), want)) {
            body.push_str("refused: a valid bearer token is required\n");
            return Some(Reply::text(401));
        }
    }
    // A browser adds `Origin` to every cross-site request that changes
    // state (also `no-cors`); the CLI and curl send none.
    if req.method != "GET" && req.origin {
        body.push_str("requests from web pages (with an Origin header) are refused\n");
        return Some(Reply::text(403));
    }
    if req.has_body {
        body.push_str("request bodies are not accepted\n");
        return Some(Reply::text(413));
    }
    None
}

/// A server's open connections and their counts.
struct Table {
    conns: Vec<Option<Conn>>,
    /// Open connections per listener and source.
    per_source: HashMap<(usize, IpAddr), usize>,
    /// Open connections per listener.
    open: Vec<usize>,
}

impl Table {
    fn close(&mut self, i: usize, poll: &Poll) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = poll.registry().deregister(c.stream.source());
            if let Some(ip) = c.source
                && let Some(n) = self.per_source.get_mut(&(c.listener, ip))
            {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&(c.listener, ip));
                }
            }
            self.open[c.listener] -= 1;
        }
    }

    /// On listener `li`, the oldest connection of the source that holds
    /// the most, if it holds at least two more than `has` (a newcomer's
    /// count): taking it moves towards an even share and never back.
    fn victim(&self, li: usize, has: usize) -> Option<usize> {
        let (&(_, ip), _) = self
            .per_source
            .iter()
            .filter(|((l, _), n)| *l == li && **n > has + 1)
            .max_by_key(|(_, n)| **n)?;
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?)))
            .filter(|(_, c)| c.listener == li && c.source == Some(ip))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests;
