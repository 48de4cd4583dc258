//! One tenant's edges on one worker: the edge selection
//! ([`sluice_core::select::Selector`], sans-IO) driven with real
//! tunnels.
//!
//! The selector decides (which edges to connect, which one carries the
//! traffic, when to probe, when one is dead); this module does what it
//! asks and tells it what happened:
//! - [`Action::Connect`] opens a [`Link::once`] to the address (one TCP
//!   connection and session, no reconnection of its own: the selector's
//!   backoff decides the next attempt), [`Action::Disconnect`] closes it;
//! - [`Action::SendProbe`] sends an echo frame inside the edge's tunnel
//!   ([`crate::tunnel::Session::send_echo`]); its reply
//!   ([`LinkEvent::EchoReply`]) is the liveness proof and RTT sample;
//! - [`Action::Resolve`] resolves a DNS name on a short-lived thread
//!   (the answer is polled every turn: no worker ever blocks on DNS);
//! - a link's session coming up, failing or ending is reported back.
//!
//! Traffic goes only into the active edge's session
//! ([`Edges::active_session_mut`]); with none active there is nowhere to
//! send it and the worker drops and counts it: must-tunnel traffic never
//! leaves directly. Packets arriving from any of the tenant's tunnels
//! (standbys too: replies still in flight after a switch) are delivered.
//!
//! Each worker selects on its own (a flow stays on its worker, so on one
//! edge); every worker's status is published for the metrics and the
//! admin API about once a second, and at once when something changed.
use std::{
    io,
    net::{SocketAddr, ToSocketAddrs as _},
    sync::mpsc,
    time::{Duration, Instant},
};

use mio::{Registry, Token};
use sluice_core::select::{
    Action, Address, EdgeId, EdgeSet, Event, Failure, MAX_EDGES, SelectError, Selector, Status,
};

use crate::{
    driver::{Link, LinkEvent, LinkParams},
    tunnel::Session,
};

/// How often a worker publishes its selection status (RTTs change with
/// every probe; phases are published at once).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What changed in one [`Edges::drive`], for the worker's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct News {
    /// Tunnels that came up.
    pub(super) connects: u64,
    /// Attempts or tunnels that failed.
    pub(super) failures: u64,
    /// Whether the active edge (or its absence) changed, or an edge
    /// failed: publish the status now.
    pub(super) changed: bool,
}

/// A tenant's edges on one worker.
pub(super) struct Edges {
    queue: u32,
    tenant: usize,
    selector: Selector,
    /// Index: [`EdgeId::index`].
    links: Vec<Option<Link>>,
    /// Whether each edge's current link came up (a failure after that is
    /// the transport's, before it the attempt's).
    up: Vec<bool>,
    /// Name resolutions in flight, by edge.
    resolving: Vec<Option<mpsc::Receiver<io::Result<Vec<SocketAddr>>>>>,
    /// Where and how to connect (its `edge` is set per attempt).
    base: LinkParams,
    /// Edge `e`'s socket is `Token(first_token + e)`.
    first_token: usize,
    /// Whether an edge has failed since the start (the classifier's
    /// tunnel state: unknown until then).
    failed_once: bool,
    /// When the status is published next.
    next_status: Instant,
}

impl std::fmt::Debug for Edges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edges")
            .field("tenant", &self.tenant)
            .field("active", &self.selector.active())
            .finish_non_exhaustive()
    }
}

impl Edges {
    /// The tenant's edges `set`, connected with `base` (TLS, session
    /// settings), their sockets registered under `first_token..`; the
    /// first attempts are due at `now` ([`Edges::drive`] makes them).
    ///
    /// # Errors
    /// The set's settings are out of range, or it has no edge or too many.
    pub(super) fn new(
        queue: u32,
        tenant: usize,
        set: &EdgeSet,
        base: LinkParams,
        first_token: usize,
        now: Instant,
    ) -> Result<Self, SelectError> {
        let selector = Selector::new(set, now)?;
        let n = set.edges.len().min(MAX_EDGES);
        Ok(Self {
            queue,
            tenant,
            selector,
            links: (0..n).map(|_| None).collect(),
            up: vec![false; n],
            resolving: (0..n).map(|_| None).collect(),
            base,
            first_token,
            failed_once: false,
            next_status: now,
        })
    }

    /// The edge carrying the traffic.
    pub(super) fn active(&self) -> Option<EdgeId> {
        self.selector.active()
    }

    /// Whether the classifier should take the tenant's tunnel for lost
    /// (no edge active after one failed), up, or not known yet.
    pub(super) fn link_state(&self) -> u64 {
        if self.active().is_some() {
            super::stats::LINK_UP
        } else if self.failed_once {
            super::stats::LINK_LOST
        } else {
            super::stats::LINK_UNKNOWN
        }
    }

    /// The active edge's session: where the tenant's traffic goes.
    pub(super) fn active_session_mut(&mut self) -> Option<&mut Session> {
        let e = self.selector.active()?.index();
        self.links.get_mut(e)?.as_mut()?.session_mut()
    }

    /// Edge `e`'s link, if it has one.
    pub(super) fn link_mut(&mut self, e: usize) -> Option<&mut Link> {
        self.links.get_mut(e)?.as_mut()
    }

    /// When [`Edges::drive`] is next due.
    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let links = self.links.iter().flatten().filter_map(Link::poll_timeout);
        let resolving = self
            .resolving
            .iter()
            .any(Option::is_some)
            .then(|| now + Duration::from_millis(20));
        links
            .chain(self.selector.poll_timeout())
            .chain(resolving)
            .chain(Some(self.next_status))
            .min()
    }

    /// Timers (the selector's, each link's), resolutions that finished,
    /// what happened to the links; then everything the selector asks.
    pub(super) fn drive(&mut self, registry: &Registry, now: Instant) -> News {
        if self.selector.poll_timeout().is_some_and(|t| t <= now) {
            self.selector.handle_timeout(now);
        }
        for link in self.links.iter_mut().flatten() {
            link.handle_timeout(registry, now);
        }
        self.resolutions(now);
        self.events(registry, now)
    }

    /// Edge `e`'s link events, then the selector's actions and events,
    /// until nothing is left (a connect may fail at once, which the
    /// selector answers).
    pub(super) fn events(&mut self, registry: &Registry, now: Instant) -> News {
        let mut news = News::default();
        // Each round either consumes events or stops; the bound is a
        // guard against a selector that would keep asking.
        for _ in 0..4 * MAX_EDGES {
            let mut any = false;
            for e in 0..self.links.len() {
                while let Some(ev) = self.links[e]
                    .as_mut()
                    .and_then(|l| l.poll_event(registry, now))
                {
                    any = true;
                    self.link_event(e, ev, now, &mut news);
                }
            }
            while let Some(a) = self.selector.poll_action() {
                any = true;
                self.act(&a, registry, now);
            }
            while let Some(ev) = self.selector.poll_event() {
                news.changed = true;
                self.log(&ev);
                if matches!(ev, Event::Down { .. }) {
                    self.failed_once = true;
                }
            }
            if !any {
                break;
            }
        }
        news
    }

    fn link_event(&mut self, e: usize, ev: LinkEvent, now: Instant, news: &mut News) {
        let id = self.id(e);
        let edge = self.describe(e);
        match ev {
            LinkEvent::Up { peer } => {
                log::info!(
                    "queue {}: tenant {} edge {edge} up (edge `{}`)",
                    self.queue,
                    self.tenant,
                    peer.name
                );
                news.connects += 1;
                self.up[e] = true;
                self.selector.handle_connected(id, now);
            }
            LinkEvent::ConnectFailed { step, error } => {
                log::warn!(
                    "queue {}: tenant {} edge {edge}: {step}: {error}",
                    self.queue,
                    self.tenant
                );
                news.failures += 1;
                self.selector.handle_failed(id, Failure::Connect, now);
            }
            LinkEvent::Down { reason } => {
                let was_up = std::mem::take(&mut self.up[e]);
                log::warn!(
                    "queue {}: tenant {} edge {edge} down: {reason:?}",
                    self.queue,
                    self.tenant
                );
                news.failures += 1;
                let failure = if was_up {
                    Failure::Transport
                } else {
                    Failure::Connect
                };
                self.selector.handle_failed(id, failure, now);
            }
            LinkEvent::EchoReply { seq, .. } => self.selector.handle_probe_reply(id, seq, now),
            // Not offered yet by this gateway: nothing to answer.
            LinkEvent::Datagram(_) => {}
        }
    }

    fn act(&mut self, a: &Action, registry: &Registry, now: Instant) {
        match *a {
            Action::Connect { edge, addr } => {
                let e = edge.index();
                if let Some(mut old) = self.links[e].take() {
                    old.shutdown(registry, "reconnecting", now);
                }
                let params = LinkParams {
                    edge: addr,
                    ..self.base.clone()
                };
                self.up[e] = false;
                let mut link = Link::once(params, Token(self.first_token + e), now);
                // Connects now (the attempt was due at `now`); a failure
                // is its first event.
                link.handle_timeout(registry, now);
                self.links[e] = Some(link);
            }
            Action::Disconnect(edge) => {
                if let Some(mut old) = self.links[edge.index()].take() {
                    old.shutdown(registry, "edge not needed", now);
                }
            }
            Action::SendProbe { edge, seq } => {
                // A probe that cannot be sent (not established, send
                // buffer over its cap) goes unanswered: a miss.
                if let Some(s) = self.links[edge.index()]
                    .as_mut()
                    .and_then(Link::session_mut)
                {
                    let _ = s.send_echo(seq, now);
                }
            }
            Action::Resolve(edge) => self.resolve(edge, now),
        }
    }

    /// Resolves edge `edge`'s name on a thread of its own; the answer is
    /// taken by [`Edges::resolutions`]. The selector times it out
    /// (`connect_timeout`) if the thread never answers.
    fn resolve(&mut self, edge: EdgeId, now: Instant) {
        let e = edge.index();
        let Some((_, spec)) = self.selector.edges().nth(e) else {
            return;
        };
        let Address::Name { host, port } = spec.address.clone() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sluice-resolve".into())
            .spawn(move || {
                let r = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>);
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => self.resolving[e] = Some(rx),
            Err(err) => {
                log::warn!("queue {}: resolving edge {e}: {err}", self.queue);
                self.selector.handle_failed(edge, Failure::Resolve, now);
            }
        }
    }

    /// Hands the selector the resolutions that finished.
    fn resolutions(&mut self, now: Instant) {
        for e in 0..self.resolving.len() {
            let Some(rx) = &self.resolving[e] else {
                continue;
            };
            let r = match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => continue,
                Err(mpsc::TryRecvError::Disconnected) => Err(io::Error::other("resolver ended")),
            };
            self.resolving[e] = None;
            let id = self.id(e);
            match r {
                Ok(addrs) if !addrs.is_empty() => self.selector.handle_resolved(id, &addrs, now),
                Ok(_) => {
                    log::warn!(
                        "queue {}: edge {}: no address",
                        self.queue,
                        self.describe(e)
                    );
                    self.selector.handle_failed(id, Failure::Resolve, now);
                }
                Err(err) => {
                    log::warn!(
                        "queue {}: edge {}: resolving: {err}",
                        self.queue,
                        self.describe(e)
                    );
                    self.selector.handle_failed(id, Failure::Resolve, now);
                }
            }
        }
    }

    fn log(&self, ev: &Event) {
        match ev {
            Event::Switched { from, to, reason } => {
                let name = |x: &Option<EdgeId>| {
                    x.map_or_else(|| "none".to_owned(), |x| self.describe(x.index()))
                };
                if to.is_none() {
                    log::warn!(
                        "queue {}: tenant {}: no edge up (was {}): {reason}; traffic that must be tunnelled is dropped",
                        self.queue,
                        self.tenant,
                        name(from)
                    );
                } else {
                    log::info!(
                        "queue {}: tenant {}: traffic moves from {} to {}: {reason}",
                        self.queue,
                        self.tenant,
                        name(from),
                        name(to)
                    );
                }
            }
            Event::Down { edge, failure } => log::warn!(
                "queue {}: tenant {} edge {} down: {failure}",
                self.queue,
                self.tenant,
                self.describe(edge.index())
            ),
            Event::Up(_) => {}
        }
    }

    fn id(&self, e: usize) -> EdgeId {
        self.selector
            .edges()
            .nth(e)
            .map(|(id, _)| id)
            .expect("edge index within the set")
    }

    /// `name (address)` for logs.
    fn describe(&self, e: usize) -> String {
        self.selector
            .edges()
            .nth(e)
            .map_or_else(String::new, |(_, s)| {
                format!("`{}` ({})", s.name, s.address)
            })
    }

    /// Ends of the batch: the flush policy on every link.
    pub(super) fn flush(&mut self, now: Instant) {
        for link in self.links.iter_mut().flatten() {
            if let Err(e) = link.flush(now) {
                log::debug!("queue {}: tunnel write: {e}", self.queue);
            }
        }
    }

    /// Stopping: every tunnel closed cleanly.
    pub(super) fn close_all(&mut self, reason: &str, now: Instant) {
        for link in self.links.iter_mut().flatten() {
            link.close(crate::wire::tunnel::CloseCode::Normal, reason, now);
        }
    }

    /// The selection's status, if it is due for publishing (`force`: at
    /// once), else `None`.
    pub(super) fn status_due(&mut self, now: Instant, force: bool) -> Option<Status> {
        if !force && now < self.next_status {
            return None;
        }
        self.next_status = now + STATUS_EVERY;
        Some(self.selector.status(now))
    }
}
