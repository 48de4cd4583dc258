//! Which of the edge's workers hold a reply route to an address, shared by
//! all of them: the books of the per-gateway route quotas, and where a
//! reply goes when it reaches a worker that holds no route to its
//! destination.
//!
//! Each worker keeps its own reply routes ([`super::router::Router`]) into
//! its own tunnels; the directory maps each address that any worker learnt
//! to the set of workers holding a route to it (a bitmask, so at most
//! [`MAX_WORKERS`] workers) and to the gateway that owns it. An address
//! counts once against its gateway's `max_routes`, however many workers
//! hold it: the quota is the edge's, not a worker's.
//!
//! Writes (an address learnt by a worker for the first time, a worker's
//! routes swept after its tunnel went) are control events: they take a
//! mutex. Reads ([`Directory::holders`]) are lock-free, for the packet
//! path: the table is a fixed array of atomics (open addressing, linear
//! probing, backward-shift removal, keyed hash as in
//! [`crate::addr_map`]) under a sequence counter. A writer makes the
//! counter odd, changes slots, makes it even again; a reader that saw it
//! odd, or changed, reads again (after a few tries it takes the mutex, so a
//! busy writer cannot starve it). Every field is an atomic, so a torn read
//! is only ever a retry, never undefined behaviour. Nothing allocates
//! after [`Directory::new`].
use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence},
    },
};

use super::router::GatewayId;
use crate::addr_map;

/// A worker's index (its bit in a holder mask).
pub type WorkerId = u16;

/// Most workers the directory's holder masks name.
pub const MAX_WORKERS: usize = 64;

/// A slot's `meta`: the family tag in the low byte (0: empty), the
/// gateway above it.
const EMPTY: u64 = 0;
/// Lock-free read attempts before a reader takes the mutex.
const TRIES: usize = 4;

#[derive(Debug, Default)]
struct Slot {
    hi: AtomicU64,
    lo: AtomicU64,
    meta: AtomicU64,
    holders: AtomicU64,
}

/// What [`Directory::claim`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The address is new to the edge: charged to its gateway's quota.
    New,
    /// Another worker (or this one) held it already: this worker joins.
    Joined,
    /// Not claimed: the gateway holds its `max_routes` addresses (or the
    /// address is booked to another gateway, which the ownership check
    /// before every claim rules out).
    OverQuota,
}

/// The shared route books. See the [module docs](self).
#[derive(Debug)]
pub struct Directory {
    seq: AtomicU64,
    slots: Box<[Slot]>,
    hasher: RandomState,
    mask: usize,
    shift: u32,
    capacity: usize,
    len: AtomicUsize,
    /// Addresses booked per gateway (written under `writer`).
    used: Box<[AtomicU32]>,
    max: Box<[u32]>,
    writer: Mutex<()>,
}

/// The directory held for writing (see [`Directory::lock`]).
#[derive(Debug)]
pub struct Writer<'a> {
    dir: &'a Directory,
    _guard: MutexGuard<'a, ()>,
}

fn meta(family: u8, gateway: GatewayId) -> u64 {
    u64::from(family) | (u64::from(gateway) << 16)
}

fn family_of(meta: u64) -> u64 {
    meta & 0xff
}

fn gateway_of(meta: u64) -> GatewayId {
    (meta >> 16) as GatewayId
}

/// Worker `w`'s bit in a holder mask (none beyond [`MAX_WORKERS`]).
pub(super) fn bit(w: WorkerId) -> u64 {
    1u64.checked_shl(u32::from(w)).unwrap_or(0)
}

impl Directory {
    /// Books for gateways with these `max_routes` quotas (index =
    /// [`GatewayId`]); the table holds their sum.
    pub fn new(quotas: &[u32]) -> Self {
        let capacity = quotas.iter().map(|&q| q as usize).sum::<usize>().max(8);
        let n = (capacity * 2).next_power_of_two();
        Self {
            seq: AtomicU64::new(0),
            slots: (0..n).map(|_| Slot::default()).collect(),
            hasher: RandomState::new(),
            mask: n - 1,
            shift: 64 - n.trailing_zeros(),
            capacity,
            len: AtomicUsize::new(0),
            used: quotas.iter().map(|_| AtomicU32::new(0)).collect(),
            max: quotas.into(),
            writer: Mutex::new(()),
        }
    }

    /// Addresses booked (held by at least one worker).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True if no address is booked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most addresses the books hold (the sum of the quotas).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Addresses booked to gateway `g`.
    pub fn gateway_routes(&self, g: GatewayId) -> u32 {
        self.used
            .get(usize::from(g))
            .map_or(0, |u| u.load(Ordering::Relaxed))
    }

    /// Whether gateway `g` holds its quota (lock-free; the answer may be a
    /// moment old: [`Directory::claim`] decides).
    pub fn full(&self, g: GatewayId) -> bool {
        let i = usize::from(g);
        match (self.used.get(i), self.max.get(i)) {
            (Some(u), Some(&m)) => u.load(Ordering::Relaxed) >= m,
            _ => true,
        }
    }

    #[inline]
    fn home(&self, k: u128, family: u8) -> usize {
        (self.hasher.hash_one((k, family)) >> self.shift) as usize
    }

    /// The slot holding `(k, family)` or the empty slot that ends its run
    /// (`Err`), reading the slots as they are (consistent under the
    /// writer's mutex; a reader checks the sequence counter around it).
    #[inline]
    fn find(&self, key: u128, family: u8) -> Result<usize, usize> {
        let (hi, lo) = ((key >> 64) as u64, key as u64);
        let mut at = self.home(key, family);
        // Bounded: a reader racing a writer may see a run without its
        // empty end for a moment; it retries anyway.
        for _ in 0..self.slots.len() {
            let slot = &self.slots[at];
            let tag = family_of(slot.meta.load(Ordering::Relaxed));
            if tag == EMPTY {
                return Err(at);
            }
            if tag == u64::from(family)
                && slot.lo.load(Ordering::Relaxed) == lo
                && slot.hi.load(Ordering::Relaxed) == hi
            {
                return Ok(at);
            }
            at = (at + 1) & self.mask;
        }
        Err(usize::MAX)
    }

    /// The workers holding a route to `ip` (bit `w` for worker `w`), 0 if
    /// none. Lock-free unless writers keep changing the table during
    /// [`TRIES`] attempts.
    pub fn holders(&self, ip: IpAddr) -> u64 {
        let (k, family) = addr_map::key(ip);
        for _ in 0..TRIES {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let h = match self.find(k, family) {
                Ok(i) => self.slots[i].holders.load(Ordering::Relaxed),
                Err(_) => 0,
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return h;
            }
        }
        let _g = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        match self.find(k, family) {
            Ok(i) => self.slots[i].holders.load(Ordering::Relaxed),
            Err(_) => 0,
        }
    }

    /// Takes the writer's mutex (for several changes in a row).
    pub fn lock(&self) -> Writer<'_> {
        Writer {
            dir: self,
            _guard: self.writer.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Books worker `w` as holding `ip`, owned by gateway `g`.
    pub fn claim(&self, ip: IpAddr, g: GatewayId, w: WorkerId) -> Claim {
        self.lock().claim(ip, g, w)
    }

    /// Worker `w` no longer holds `ip`; the last holder gives the address
    /// back to its gateway's quota.
    pub fn release(&self, ip: IpAddr, w: WorkerId) {
        self.lock().release(ip, w);
    }

    /// Makes the sequence counter odd: readers retry until
    /// [`Directory::end_write`]. Under the writer's mutex only.
    fn begin_write(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
    }

    fn end_write(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Release);
    }

    fn copy_slot(&self, from: usize, to: usize) {
        let (a, b) = (&self.slots[from], &self.slots[to]);
        b.hi.store(a.hi.load(Ordering::Relaxed), Ordering::Relaxed);
        b.lo.store(a.lo.load(Ordering::Relaxed), Ordering::Relaxed);
        b.holders
            .store(a.holders.load(Ordering::Relaxed), Ordering::Relaxed);
        b.meta
            .store(a.meta.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Empties slot `hole` (between [`Directory::begin_write`] and
    /// [`Directory::end_write`]), shifting the rest of its run back as
    /// [`crate::addr_map::AddrMap`] does (no tombstones).
    fn remove_at(&self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = &self.slots[j];
            let m = s.meta.load(Ordering::Relaxed);
            if family_of(m) == EMPTY {
                break;
            }
            let k = (u128::from(s.hi.load(Ordering::Relaxed)) << 64)
                | u128::from(s.lo.load(Ordering::Relaxed));
            let from_home = j.wrapping_sub(self.home(k, family_of(m) as u8)) & self.mask;
            if from_home >= (j.wrapping_sub(hole) & self.mask) {
                self.copy_slot(j, hole);
                hole = j;
            }
        }
        let s = &self.slots[hole];
        s.meta.store(EMPTY, Ordering::Relaxed);
        s.holders.store(0, Ordering::Relaxed);
        s.hi.store(0, Ordering::Relaxed);
        s.lo.store(0, Ordering::Relaxed);
    }
}

impl Writer<'_> {
    /// [`Directory::claim`] under this lock.
    pub fn claim(&mut self, ip: IpAddr, gateway: GatewayId, worker: WorkerId) -> Claim {
        let dir = self.dir;
        let (key, family) = addr_map::key(ip);
        match dir.find(key, family) {
            Ok(at) => {
                let slot = &dir.slots[at];
                if gateway_of(slot.meta.load(Ordering::Relaxed)) != gateway {
                    // Unreachable while every address has one owner and
                    // claims follow the ownership check: never book an
                    // address to two gateways.
                    return Claim::OverQuota;
                }
                let holders = slot.holders.load(Ordering::Relaxed);
                if holders & bit(worker) == 0 {
                    dir.begin_write();
                    slot.holders.store(holders | bit(worker), Ordering::Relaxed);
                    dir.end_write();
                }
                Claim::Joined
            }
            Err(at) => {
                let index = usize::from(gateway);
                let (Some(used), Some(&max)) = (dir.used.get(index), dir.max.get(index)) else {
                    return Claim::OverQuota;
                };
                if at == usize::MAX
                    || used.load(Ordering::Relaxed) >= max
                    || dir.len() >= dir.capacity
                {
                    return Claim::OverQuota;
                }
                let slot = &dir.slots[at];
                dir.begin_write();
                slot.hi.store((key >> 64) as u64, Ordering::Relaxed);
                slot.lo.store(key as u64, Ordering::Relaxed);
                slot.holders.store(bit(worker), Ordering::Relaxed);
                slot.meta.store(meta(family, gateway), Ordering::Relaxed);
                dir.end_write();
                used.fetch_add(1, Ordering::Relaxed);
                dir.len.fetch_add(1, Ordering::Relaxed);
                Claim::New
            }
        }
    }

    /// [`Directory::release`] under this lock.
    pub fn release(&mut self, ip: IpAddr, worker: WorkerId) {
        let dir = self.dir;
        let (key, family) = addr_map::key(ip);
        let Ok(at) = dir.find(key, family) else {
            return;
        };
        let slot = &dir.slots[at];
        let holders = slot.holders.load(Ordering::Relaxed);
        if holders & bit(worker) == 0 {
            return;
        }
        let last = holders == bit(worker);
        let gateway = gateway_of(slot.meta.load(Ordering::Relaxed));
        dir.begin_write();
        if last {
            dir.remove_at(at);
        } else {
            slot.holders
                .store(holders & !bit(worker), Ordering::Relaxed);
        }
        dir.end_write();
        if last {
            if let Some(used) = dir.used.get(usize::from(gateway)) {
                used.fetch_sub(1, Ordering::Relaxed);
            }
            dir.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::AtomicBool};

    use super::*;

    fn v4(i: u32) -> IpAddr {
        IpAddr::from((0xc000_0200u32 + i).to_be_bytes())
    }

    #[test]
    fn claims_join_and_release_per_worker() {
        let d = Directory::new(&[4, 2]);
        let a = v4(1);
        assert_eq!(d.holders(a), 0);
        assert_eq!(d.claim(a, 0, 0), Claim::New);
        assert_eq!(d.claim(a, 0, 3), Claim::Joined);
        assert_eq!(d.claim(a, 0, 3), Claim::Joined);
        assert_eq!(d.holders(a), 0b1001);
        assert_eq!((d.len(), d.gateway_routes(0)), (1, 1), "one address, once");
        // Booked to gateway 0: gateway 1 cannot take it.
        assert_eq!(d.claim(a, 1, 1), Claim::OverQuota);
        d.release(a, 0);
        assert_eq!(d.holders(a), 0b1000);
        d.release(a, 0);
        assert_eq!(d.holders(a), 0b1000, "a worker releases only its own");
        d.release(a, 3);
        assert_eq!((d.holders(a), d.len(), d.gateway_routes(0)), (0, 0, 0));
    }

    /// The quota is the edge's: two workers of a gateway share it.
    #[test]
    fn quotas_are_global() {
        let d = Directory::new(&[4, 2]);
        assert_eq!(d.claim(v4(1), 1, 0), Claim::New);
        assert_eq!(d.claim(v4(2), 1, 1), Claim::New);
        assert!(d.full(1));
        assert_eq!(d.claim(v4(3), 1, 0), Claim::OverQuota);
        assert_eq!(d.claim(v4(3), 1, 1), Claim::OverQuota);
        assert_eq!(d.claim(v4(1), 1, 1), Claim::Joined, "joining costs nothing");
        for i in 10..14 {
            assert_eq!(d.claim(v4(i), 0, 1), Claim::New, "gateway 0 keeps its own");
        }
        assert_eq!(d.claim(v4(20), 0, 0), Claim::OverQuota);
        d.release(v4(2), 1);
        assert_eq!(d.claim(v4(3), 1, 0), Claim::New, "given back");
    }

    /// Removal shifts runs back: every remaining address stays found, in
    /// both families, after many claims and releases.
    #[test]
    fn churn_keeps_every_address_reachable() {
        let d = Directory::new(&[256]);
        let v6 = |i: u16| IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, i]);
        for round in 0..20u32 {
            for i in 0..100 {
                let _ = d.claim(v4(i + round), 0, (i % 3) as WorkerId);
                let _ = d.claim(v6(i as u16), 0, 1);
            }
            for i in (0..100).step_by(2) {
                d.release(v4(i + round), (i % 3) as WorkerId);
            }
            for i in (1..100).step_by(2) {
                assert_eq!(
                    d.holders(v4(i + round)),
                    bit((i % 3) as WorkerId),
                    "{round} {i}"
                );
            }
            for i in 0..100 {
                d.release(v4(i + round), (i % 3) as WorkerId);
            }
        }
        assert_eq!(d.len(), 100, "the v6 addresses remain");
        for i in 0..100 {
            assert_eq!(d.holders(v6(i)), bit(1));
        }
    }

    /// Readers on other threads never see an address that stays booked
    /// go missing while writers churn others around it.
    #[test]
    fn lock_free_reads_see_stable_entries_during_writes() {
        let d = Arc::new(Directory::new(&[512]));
        let stable: Vec<IpAddr> = (0..64).map(|i| v4(1000 + i)).collect();
        for a in &stable {
            assert_eq!(d.claim(*a, 0, 5), Claim::New);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (d, stop, stable) = (d.clone(), stop.clone(), stable.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) || reads < 1000 {
                        for a in &stable {
                            assert_eq!(d.holders(*a), bit(5), "{a} went missing");
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        for round in 0..2000u32 {
            let a = v4(round % 300);
            let _ = d.claim(a, 0, 1);
            d.release(v4((round + 150) % 300), 1);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() >= 1000);
        }
    }
}
