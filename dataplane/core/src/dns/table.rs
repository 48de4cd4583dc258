//! Addresses installed by DNS answers, with their expiry and a size bound.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Instant,
};

use super::Answer;

/// What [`BypassTable::insert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A new address: install it in the kernel and userspace tables.
    New,
    /// Already installed; its expiry moved (never earlier).
    Refreshed,
    /// A new address, and the table was full: `0` was evicted (the entry
    /// closest to its expiry) and must be removed from the tables.
    Evicted(IpAddr),
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    domain: Arc<str>,
}

/// The DNS-installed bypass addresses. Lookups are by exact address (the
/// data path sees them as /32 and /128 prefixes).
#[derive(Debug)]
pub struct BypassTable {
    max: usize,
    entries: HashMap<IpAddr, Entry>,
    /// (expiry, address), stale items skipped lazily.
    pub(super) heap: BinaryHeap<Reverse<(Instant, IpAddr)>>,
    evictions: u64,
    expirations: u64,
}

impl BypassTable {
    /// A table of at most `max` addresses (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            entries: HashMap::new(),
            heap: BinaryHeap::new(),
            evictions: 0,
            expirations: 0,
        }
    }

    /// Installed addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is installed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted by the size bound so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Entries expired so far.
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    /// Is `a` installed (and not yet expired at the last [`Self::expire`])?
    pub fn contains(&self, a: IpAddr) -> bool {
        self.entries.contains_key(&a)
    }

    /// The domain and expiry of `a`, if installed.
    pub fn get(&self, a: IpAddr) -> Option<(&str, Instant)> {
        self.entries.get(&a).map(|e| (&*e.domain, e.expires))
    }

    /// Installs an answer at `now`.
    pub fn insert(&mut self, now: Instant, a: &Answer) -> Insert {
        let expires = now + a.ttl;
        if let Some(e) = self.entries.get_mut(&a.addr) {
            if expires > e.expires {
                e.expires = expires;
                self.heap.push(Reverse((expires, a.addr)));
            }
            if *e.domain != *a.domain {
                e.domain = a.domain.as_str().into();
            }
            self.compact();
            return Insert::Refreshed;
        }
        let mut out = Insert::New;
        if self.entries.len() >= self.max
            && let Some(victim) = self.pop_soonest()
        {
            self.entries.remove(&victim);
            self.evictions += 1;
            out = Insert::Evicted(victim);
        }
        self.entries.insert(
            a.addr,
            Entry {
                expires,
                domain: a.domain.as_str().into(),
            },
        );
        self.heap.push(Reverse((expires, a.addr)));
        self.compact();
        out
    }

    /// Removes every entry expired at `now`, appending its address to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<IpAddr>) {
        while let Some(&Reverse((t, a))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.entries.get(&a).is_some_and(|e| e.expires == t) {
                self.entries.remove(&a);
                self.expirations += 1;
                out.push(a);
            }
        }
    }

    /// Every entry: address, domain, expiry (for listings).
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &str, Instant)> {
        self.entries
            .iter()
            .map(|(a, e)| (*a, &*e.domain, e.expires))
    }

    /// The live entry closest to expiry, taken off the heap.
    fn pop_soonest(&mut self) -> Option<IpAddr> {
        while let Some(Reverse((t, a))) = self.heap.pop() {
            if self.entries.get(&a).is_some_and(|e| e.expires == t) {
                return Some(a);
            }
        }
        None
    }

    /// Refreshes leave stale heap items; rebuild when they dominate.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.entries.len() + 64 {
            self.heap = self
                .entries
                .iter()
                .map(|(a, e)| Reverse((e.expires, *a)))
                .collect();
        }
    }
}
