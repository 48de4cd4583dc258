//! What the edge's workers share, sans I/O: the limits that hold for the
//! edge as a whole however many workers serve it.
//!
//! Each worker has its own [`super::Core`] (its connections, sessions and
//! reply routes); [`Shared`] holds, once for all of them:
//! - the admission books of connections before authentication (the caps
//!   in all and per source prefix, and which handshake makes room when
//!   they are reached, whichever worker holds it: [`super::admission`]);
//! - the tunnel caps (`edge.max_tunnels`, each gateway's `max_tunnels`);
//! - the ownership table and the reply-route books
//!   ([`super::directory`]: each gateway's `max_routes` counts an address
//!   once, and a reply that reaches a worker without a route to its
//!   destination learns which worker has one);
//! - connection generations, unique across workers;
//! - the controller's allow-list of gateway certificates (revocation), if
//!   one is set ([`Shared::set_allowed_certificates`]), and its epoch:
//!   each worker compares the epoch with the one it last saw at its timer
//!   and then closes the tunnels whose certificate is no longer allowed.
//!
//! All of it changes on control events only (a connection accepted, a
//! handshake over, a tunnel up or down, an address new to a worker): the
//! admission books under a mutex, the caps with atomic compare-and-swap,
//! the allow-list under a read-write lock (read per handshake and per
//! epoch change, never per packet). The packet path reads only the
//! directory's lock-free holder masks, and only for a reply that reached
//! the wrong worker.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU32, Ordering},
    },
};

use super::{
    EdgeLimits, Settings,
    admission::{Admission, Admit, PrefixKey},
    directory::{Directory, MAX_WORKERS, WorkerId},
    router::{self, GatewayId, RouterError, Table},
};
use crate::lpm::Advise;

/// A handshake under way, as the admission books know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The worker holding the connection.
    pub worker: WorkerId,
    /// Its slot in that worker's connection table.
    pub slot: u32,
    /// Its generation (unique across workers).
    pub generation: u32,
}

/// The admission decision for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admitted {
    /// Taken.
    Yes,
    /// Taken in place of this handshake (no longer counted: its worker
    /// closes it).
    Evicting(Pending),
    /// Its source prefix has `max_handshakes_per_prefix` under way.
    PrefixCap,
    /// `max_handshakes` are under way, none from a busier prefix.
    GlobalCap,
}

/// Which tunnel cap refused a gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TunnelCap {
    /// `edge.max_tunnels`, in all.
    Edge,
    /// The gateway's own `max_tunnels` (the value).
    Gateway(u32),
}

/// Per gateway (by [`GatewayId`]), the SHA-256 digests of the DER of
/// the end-entity certificates allowed, sorted and deduplicated.
type AllowList = Box<[Box<[[u8; 32]]>]>;

#[derive(Debug)]
struct Book {
    admission: Admission,
    /// Handshakes counted, by generation.
    live: HashMap<u32, (Pending, PrefixKey)>,
}

/// The edge-wide state the workers share. See the [module docs](self).
#[derive(Debug)]
pub struct Shared {
    workers: usize,
    limits: EdgeLimits,
    table: Table,
    directory: Arc<Directory>,
    max_tunnels_per_gateway: Box<[u32]>,
    tunnels: AtomicU32,
    tunnels_per_gateway: Box<[AtomicU32]>,
    book: Mutex<Book>,
    /// Handshakes counted (a copy of the books' count, for lock-free
    /// reads).
    handshakes: AtomicU32,
    generation: AtomicU32,
    /// The controller's allow-list: per gateway, the SHA-256 digests of
    /// the end-entity certificates (DER) it may authenticate with, sorted
    /// and deduplicated; `None`: no controller, every certificate the
    /// configuration accepts.
    allowed: RwLock<Option<AllowList>>,
    /// Bumped on each [`Shared::set_allowed_certificates`].
    allowed_epoch: AtomicU32,
}

impl Shared {
    /// The shared state of an edge with `workers` workers (at least 1, at
    /// most [`MAX_WORKERS`]), for `cfg` with `limits`, the ownership
    /// table's memory advised with `advise`.
    ///
    /// # Errors
    /// [`RouterError`]: overlapping gateway prefixes, or the prefix table's
    /// capacity limits.
    pub fn new(
        cfg: &Settings,
        limits: EdgeLimits,
        advise: &impl Advise,
        workers: usize,
    ) -> Result<Self, RouterError> {
        let quotas: Vec<u32> = cfg.gateways.iter().map(|g| g.max_routes).collect();
        Ok(Self {
            workers: workers.clamp(1, MAX_WORKERS),
            limits,
            table: router::build_table(&cfg.gateways, &cfg.reserved, advise)?,
            directory: Arc::new(Directory::new(&quotas)),
            max_tunnels_per_gateway: cfg.gateways.iter().map(|g| g.max_tunnels).collect(),
            tunnels: AtomicU32::new(0),
            tunnels_per_gateway: cfg.gateways.iter().map(|_| AtomicU32::new(0)).collect(),
            book: Mutex::new(Book {
                admission: Admission::new(&limits),
                live: HashMap::new(),
            }),
            handshakes: AtomicU32::new(0),
            generation: AtomicU32::new(1),
            allowed: RwLock::new(None),
            allowed_epoch: AtomicU32::new(0),
        })
    }

    /// Workers sharing this state.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The limits in force.
    pub fn limits(&self) -> &EdgeLimits {
        &self.limits
    }

    /// Connections in their handshake, on every worker.
    pub fn handshakes(&self) -> u32 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Authenticated tunnels, on every worker.
    pub fn tunnels(&self) -> u32 {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Gateway `g`'s tunnels, on every worker.
    pub fn gateway_tunnels(&self, g: GatewayId) -> u32 {
        self.tunnels_per_gateway
            .get(usize::from(g))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The reply-route books.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Worker `worker`'s router: the shared table and books, its own
    /// routes.
    pub(super) fn router(&self, worker: WorkerId) -> router::Router {
        router::Router::from_parts(self.table.clone(), self.directory.clone(), worker)
    }

    /// A connection generation no other live connection of any worker has
    /// (never 0).
    pub(super) fn next_generation(&self) -> u32 {
        loop {
            let g = self.generation.fetch_add(1, Ordering::Relaxed);
            if g != 0 {
                return g;
            }
        }
    }

    /// Sets which certificates each gateway may authenticate with (the
    /// controller's word: certificates it issued and has not revoked), or
    /// lifts the list (`None`: every certificate the configuration
    /// accepts, as with no controller).
    ///
    /// `allowed[g]` holds the SHA-256 digests of the DER of the
    /// end-entity certificates allowed for gateway `g` (its
    /// [`GatewayId`], the configuration's order). An empty set refuses
    /// the gateway entirely, and so does a missing one (a list shorter
    /// than the configuration's gateways): fail closed. Entries beyond
    /// the configured gateways are ignored.
    ///
    /// New handshakes are checked against it at once; each worker closes
    /// its tunnels that it no longer allows at its next timer
    /// ([`super::Core::handle_timeout`], due at most a tick away: well
    /// within a second).
    pub fn set_allowed_certificates(&self, allowed: Option<Vec<Vec<[u8; 32]>>>) {
        let list = allowed.map(|gateways| {
            gateways
                .into_iter()
                .take(self.max_tunnels_per_gateway.len())
                .map(|mut certs| {
                    certs.sort_unstable();
                    certs.dedup();
                    certs.into_boxed_slice()
                })
                .collect::<AllowList>()
        });
        // Built outside the lock and moved in whole: a reader sees the
        // old list or the new one, never a part. The epoch goes up under
        // the lock, so a worker that sees it reads the new list.
        let mut guard = self.allowed.write().unwrap_or_else(PoisonError::into_inner);
        *guard = list;
        self.allowed_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times the allow-list was set (a worker that saw another
    /// value checks its tunnels again).
    pub fn certificates_epoch(&self) -> u32 {
        self.allowed_epoch.load(Ordering::Acquire)
    }

    /// Whether an allow-list is set (a controller has its word).
    pub fn has_allowed_certificates(&self) -> bool {
        self.read_allowed().is_some()
    }

    /// Whether gateway `g` may authenticate with the certificate whose DER
    /// hashes to `digest`: always with no allow-list; otherwise only if
    /// the list has it for `g`.
    pub(super) fn certificate_allowed(&self, g: GatewayId, digest: &[u8; 32]) -> bool {
        match &*self.read_allowed() {
            None => true,
            Some(list) => list
                .get(usize::from(g))
                .is_some_and(|certs| certs.binary_search(digest).is_ok()),
        }
    }

    /// The allow-list, read. A poisoned lock is recovered, not refused:
    /// the list is only ever replaced whole by a value built outside the
    /// lock (no writer can leave half of one), and the dataplane's
    /// release builds abort on panic anyway.
    fn read_allowed(&self) -> std::sync::RwLockReadGuard<'_, Option<AllowList>> {
        self.allowed.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection from `ip`, to be worker `worker`'s slot `slot` with
    /// `generation`: counted as a handshake, or refused. When the caps are
    /// reached and a busier prefix has handshakes under way, the oldest
    /// of those stops being counted and is returned: its worker must
    /// close it.
    pub(super) fn admit(
        &self,
        ip: IpAddr,
        worker: WorkerId,
        slot: u32,
        generation: u32,
    ) -> Admitted {
        let mut guard = self.lock();
        let book = &mut *guard;
        let key = book.admission.key(ip);
        let live = &book.live;
        let verdict = match book.admission.admit(key, |_, g| live.contains_key(&g)) {
            Admit::Yes => Admitted::Yes,
            Admit::Evicting(_, g) => match book.live.remove(&g) {
                Some((p, k)) => {
                    book.admission.end(k);
                    Admitted::Evicting(p)
                }
                // `admit` only names live handshakes.
                None => Admitted::GlobalCap,
            },
            Admit::PrefixCap => return Admitted::PrefixCap,
            Admit::GlobalCap => return Admitted::GlobalCap,
        };
        if verdict == Admitted::GlobalCap {
            return verdict;
        }
        let live = &book.live;
        book.admission
            .begin(generation, generation, key, |_, g| live.contains_key(&g));
        book.live.insert(
            generation,
            (
                Pending {
                    worker,
                    slot,
                    generation,
                },
                key,
            ),
        );
        self.handshakes
            .store(book.admission.count(), Ordering::Relaxed);
        verdict
    }

    /// The handshake of `generation` is over (authenticated, failed, timed
    /// out, closed). Nothing if it was evicted already.
    pub(super) fn end_handshake(&self, generation: u32) {
        let mut book = self.lock();
        if let Some((_, key)) = book.live.remove(&generation) {
            book.admission.end(key);
        }
        self.handshakes
            .store(book.admission.count(), Ordering::Relaxed);
    }

    /// Counts a tunnel of gateway `g`, within the caps.
    pub(super) fn take_tunnel(&self, g: GatewayId) -> Result<(), TunnelCap> {
        let gi = usize::from(g);
        let (Some(count), Some(&max)) = (
            self.tunnels_per_gateway.get(gi),
            self.max_tunnels_per_gateway.get(gi),
        ) else {
            return Err(TunnelCap::Gateway(0));
        };
        let under = |max: u32| move |n: u32| (n < max).then_some(n + 1);
        self.tunnels
            .fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                under(self.limits.max_tunnels),
            )
            .map_err(|_| TunnelCap::Edge)?;
        if count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, under(max))
            .is_err()
        {
            self.tunnels.fetch_sub(1, Ordering::AcqRel);
            return Err(TunnelCap::Gateway(max));
        }
        Ok(())
    }

    /// A tunnel of gateway `g` is gone.
    pub(super) fn release_tunnel(&self, g: GatewayId) {
        if let Some(n) = self.tunnels_per_gateway.get(usize::from(g)) {
            n.fetch_sub(1, Ordering::AcqRel);
        }
        self.tunnels.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::edge::EdgeGateway;

    fn shared(limits: EdgeLimits, workers: usize) -> Shared {
        let gw = |name: &str, p: &str, max_tunnels| EdgeGateway {
            name: name.into(),
            spki_sha256: None,
            prefixes: vec![p.parse().unwrap()],
            max_tunnels,
            max_routes: 16,
        };
        let cfg = Settings {
            name: "edge".into(),
            keepalive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            gateways: vec![gw("a", "192.0.2.0/24", 3), gw("b", "198.18.2.0/24", 8)],
            reserved: Vec::new(),
            datagram_port: None,
        };
        Shared::new(&cfg, limits, &crate::lpm::NoAdvice, workers).unwrap()
    }

    /// The tunnel caps hold across workers: the edge's in all, each
    /// gateway's own; a refusal takes nothing.
    #[test]
    fn tunnel_caps_are_the_edges() {
        let s = shared(
            EdgeLimits {
                max_tunnels: 5,
                ..EdgeLimits::default()
            },
            4,
        );
        for _ in 0..3 {
            s.take_tunnel(0).unwrap();
        }
        assert_eq!(s.take_tunnel(0), Err(TunnelCap::Gateway(3)));
        s.take_tunnel(1).unwrap();
        s.take_tunnel(1).unwrap();
        assert_eq!(s.take_tunnel(1), Err(TunnelCap::Edge));
        assert_eq!(
            (s.tunnels(), s.gateway_tunnels(0), s.gateway_tunnels(1)),
            (5, 3, 2)
        );
        s.release_tunnel(0);
        s.take_tunnel(1).unwrap();
        assert_eq!(s.take_tunnel(0), Err(TunnelCap::Edge));
        assert_eq!(s.tunnels(), 5);
    }

    /// Tunnel caps taken from many threads at once never overshoot.
    #[test]
    fn tunnel_caps_hold_under_races() {
        let s = Arc::new(shared(
            EdgeLimits {
                max_tunnels: 6,
                ..EdgeLimits::default()
            },
            4,
        ));
        let taken: u32 = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || (0..100).filter(|_| s.take_tunnel(1).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap() as u32)
            .sum();
        assert_eq!((taken, s.tunnels()), (6, 6));
    }

    /// The handshake caps count every worker's handshakes together, and a
    /// newcomer from a quiet prefix takes the place of the busiest
    /// prefix's oldest handshake on whichever worker it is.
    #[test]
    fn admission_is_the_edges_and_evicts_across_workers() {
        let s = shared(
            EdgeLimits {
                max_handshakes: 4,
                max_handshakes_per_prefix: 3,
                ..EdgeLimits::default()
            },
            2,
        );
        let ip = |x: &str| -> IpAddr { x.parse().unwrap() };
        // Worker 1 takes two from one /24, worker 0 one more: the prefix
        // cap counts them together.
        assert_eq!(s.admit(ip("203.0.113.1"), 1, 7, 100), Admitted::Yes);
        assert_eq!(s.admit(ip("203.0.113.2"), 1, 8, 101), Admitted::Yes);
        assert_eq!(s.admit(ip("203.0.113.3"), 0, 7, 102), Admitted::Yes);
        assert_eq!(s.admit(ip("203.0.113.4"), 0, 9, 103), Admitted::PrefixCap);
        assert_eq!(s.admit(ip("198.51.100.1"), 0, 9, 104), Admitted::Yes);
        assert_eq!(s.handshakes(), 4);
        // Full: a newcomer from another prefix evicts the /24's oldest,
        // which is worker 1's.
        assert_eq!(
            s.admit(ip("2001:db8:66::1"), 0, 10, 105),
            Admitted::Evicting(Pending {
                worker: 1,
                slot: 7,
                generation: 100
            })
        );
        assert_eq!(s.handshakes(), 4);
        // Its worker closes it later: counted once only.
        s.end_handshake(100);
        assert_eq!(s.handshakes(), 4);
        s.end_handshake(101);
        assert_eq!(s.handshakes(), 3);
        assert_eq!(s.admit(ip("192.0.2.1"), 1, 8, 106), Admitted::Yes);
        assert_eq!(s.admit(ip("192.0.2.2"), 1, 11, 107), Admitted::GlobalCap);
        for g in [102, 104, 105, 106] {
            s.end_handshake(g);
        }
        assert_eq!(s.handshakes(), 0);
    }

    /// The allow-list: none allows all; a set is per gateway (in any order,
    /// duplicates and all); a missing or empty set refuses its gateway;
    /// entries beyond the configured gateways are dropped; each set moves
    /// the epoch.
    #[test]
    fn allowed_certificates_are_per_gateway_and_fail_closed() {
        let s = shared(EdgeLimits::default(), 1);
        let (x, y, z) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert_eq!(s.certificates_epoch(), 0);
        assert!(s.certificate_allowed(0, &x) && s.certificate_allowed(7, &x));
        s.set_allowed_certificates(Some(vec![vec![z, x, z, y], vec![]]));
        assert_eq!(s.certificates_epoch(), 1);
        assert!(s.has_allowed_certificates());
        assert!([x, y, z].iter().all(|d| s.certificate_allowed(0, d)));
        assert!(!s.certificate_allowed(0, &[4u8; 32]));
        assert!(!s.certificate_allowed(1, &x), "empty set: refused");
        assert!(!s.certificate_allowed(2, &x), "no such gateway");
        s.set_allowed_certificates(Some(vec![vec![x]]));
        assert!(!s.certificate_allowed(1, &x), "missing set: refused");
        s.set_allowed_certificates(Some(vec![vec![], vec![], vec![x]]));
        assert_eq!(
            s.read_allowed().as_ref().map(|l| l.len()),
            Some(2),
            "entries beyond the gateways dropped"
        );
        s.set_allowed_certificates(None);
        assert_eq!(s.certificates_epoch(), 4);
        assert!(!s.has_allowed_certificates());
        assert!(s.certificate_allowed(1, &x));
    }

    /// A writer that panicked holding the lock poisons it: the list is
    /// still read (the last one set whole, never half of one) and set
    /// again, nothing panics.
    #[test]
    fn allowed_certificates_survive_a_poisoned_lock() {
        let s = Arc::new(shared(EdgeLimits::default(), 1));
        let (x, y) = ([1u8; 32], [2u8; 32]);
        s.set_allowed_certificates(Some(vec![vec![x], vec![y]]));
        let s2 = s.clone();
        let died = std::thread::spawn(move || {
            let _guard = s2.allowed.write().unwrap();
            panic!("a writer dies holding the allow-list's lock (expected by this test)");
        })
        .join();
        assert!(died.is_err());
        assert!(s.allowed.is_poisoned());
        assert!(s.certificate_allowed(0, &x) && !s.certificate_allowed(0, &y));
        assert!(s.certificate_allowed(1, &y) && !s.certificate_allowed(1, &x));
        s.set_allowed_certificates(Some(vec![vec![y], vec![]]));
        assert!(s.certificate_allowed(0, &y) && !s.certificate_allowed(1, &y));
        assert_eq!(s.certificates_epoch(), 2);
        s.set_allowed_certificates(None);
        assert!(s.certificate_allowed(1, &x));
    }

    #[test]
    fn generations_are_unique_and_never_zero() {
        let s = shared(EdgeLimits::default(), 2);
        s.generation.store(u32::MAX, Ordering::Relaxed);
        assert_eq!(s.next_generation(), u32::MAX);
        assert_eq!(s.next_generation(), 1, "0 is skipped");
    }
}
