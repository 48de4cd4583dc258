//! A bounded hash map keyed by IP address, for lookups on every packet.
//!
//! Open addressing with linear probing over a power-of-two array of slots,
//! allocated once: inserting, looking up and removing never allocate. The
//! home slot is a keyed hash (SipHash-1-3, the standard library's
//! `RandomState`, with a key drawn at random per table) of the address as a
//! `u128` (IPv4 mapped) and its family: the addresses come from the
//! network, and with an unkeyed hash anyone who chooses source addresses
//! (a gateway owns a whole /64) could make them all collide and turn every
//! lookup into a scan of the table. The family is kept beside the key, so
//! `192.0.2.1` and `::ffff:192.0.2.1` are distinct keys (as they are in a
//! `HashMap<IpAddr, _>`), and `::` is a key like any other.
//!
//! Unlike the neighbor cache, entries are never evicted: the table holds up
//! to [`AddrMap::capacity`] addresses (at most half its slots, to keep the
//! probes short) and [`AddrMap::insert`] of a new address beyond that fails
//! with [`Full`], leaving every existing entry in place. The caller decides
//! what a refused address means (the edge counts it). Removal shifts later
//! entries of the probe run back (no tombstones), so a table that churns
//! does not degrade.
use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
};

/// [`AddrMap::insert`] of a new address into a table holding
/// [`AddrMap::capacity`] addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address table full ({capacity} addresses)")]
pub struct Full {
    /// The table's capacity.
    pub capacity: usize,
}

/// What one [`AddrMap::sweep`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sweep {
    /// Where the next call goes on from.
    pub cursor: usize,
    /// Slots moved past.
    pub passed: usize,
    /// Entries removed.
    pub removed: usize,
}

/// What a slot holds: nothing, or an address of one family.
const EMPTY: u8 = 0;
const V4: u8 = 4;
const V6: u8 = 6;

#[derive(Clone, Copy, Debug, Default)]
struct Slot<V> {
    /// The address as a 128-bit value (IPv4 mapped).
    key: u128,
    /// [`EMPTY`], [`V4`] or [`V6`].
    family: u8,
    val: V,
}

/// The 128-bit key and family tag of `ip`.
#[inline]
pub fn key(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), V4),
        IpAddr::V6(a) => (u128::from(a), V6),
    }
}

/// The address of a key and family tag from [`key`].
#[inline]
pub fn addr(k: u128, family: u8) -> IpAddr {
    let a = std::net::Ipv6Addr::from(k);
    match (family, a.to_ipv4_mapped()) {
        (V4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(a),
    }
}

/// Fibonacci hashing of the folded key: the top bits are the mixed ones.
/// Unkeyed (and easy to collide on purpose): for tables whose keys an
/// attacker does not choose; [`AddrMap`] uses a keyed hash. Only the
/// tests use it now (they show what collided on it).
#[doc(hidden)]
pub fn hash(k: u128) -> u64 {
    let folded = (k as u64) ^ ((k >> 64) as u64);
    folded.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A map from IP addresses to `V` with a fixed capacity.
#[derive(Debug)]
pub struct AddrMap<V> {
    slots: Box<[Slot<V>]>,
    /// The hash's random key.
    hasher: RandomState,
    mask: usize,
    /// `64 - log2(slots.len())`: the hash's top bits index the slots.
    shift: u32,
    len: usize,
    capacity: usize,
}

impl<V: Copy + Default> AddrMap<V> {
    /// A table for up to `capacity` addresses (at least 8), with twice as
    /// many slots rounded up to a power of two, allocated now.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(8);
        let n = (capacity * 2).next_power_of_two();
        Self {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            hasher: RandomState::new(),
            mask: n - 1,
            shift: 64 - n.trailing_zeros(),
            len: 0,
            capacity,
        }
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no address is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most addresses the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The home slot of a key (the family is part of it: `192.0.2.1`
    /// and `::ffff:192.0.2.1` need not collide).
    #[inline]
    fn home(&self, k: u128, family: u8) -> usize {
        (self.hasher.hash_one((k, family)) >> self.shift) as usize
    }

    /// The slot holding `(k, family)`, or `Err` with the empty slot that
    /// ends its probe run.
    #[inline]
    fn find(&self, k: u128, family: u8) -> Result<usize, usize> {
        let mut i = self.home(k, family);
        loop {
            let s = &self.slots[i];
            if s.family == EMPTY {
                return Err(i);
            }
            if s.key == k && s.family == family {
                return Ok(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `ip`, if held.
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<V> {
        let (k, family) = key(ip);
        self.find(k, family).ok().map(|i| self.slots[i].val)
    }

    /// The value of `ip`, to change in place, if held.
    #[inline]
    pub fn get_mut(&mut self, ip: IpAddr) -> Option<&mut V> {
        let (k, family) = key(ip);
        let i = self.find(k, family).ok()?;
        Some(&mut self.slots[i].val)
    }

    /// Maps `ip` to `val`, returning the value it replaced. Replacing never
    /// fails; adding an address to a table already holding
    /// [`Self::capacity`] addresses fails with [`Full`] and changes nothing.
    #[inline]
    pub fn insert(&mut self, ip: IpAddr, val: V) -> Result<Option<V>, Full> {
        let (k, family) = key(ip);
        match self.find(k, family) {
            Ok(i) => Ok(Some(std::mem::replace(&mut self.slots[i].val, val))),
            Err(_) if self.len >= self.capacity => Err(Full {
                capacity: self.capacity,
            }),
            Err(i) => {
                self.slots[i] = Slot {
                    key: k,
                    family,
                    val,
                };
                self.len += 1;
                Ok(None)
            }
        }
    }

    /// Removes `ip`, returning its value if it was held.
    pub fn remove(&mut self, ip: IpAddr) -> Option<V> {
        let (k, family) = key(ip);
        let hole = self.find(k, family).ok()?;
        Some(self.remove_at(hole))
    }

    /// Looks at up to `budget` slots from `cursor` (a slot index,
    /// wrapping), removing the entries `keep` refuses. Returns the cursor to
    /// go on from, how many slots it moved past (a removal can pull a later
    /// entry into the slot, which is then looked at again: [`Self::slots`]
    /// of them is a whole round) and how many entries it removed. Sweeping
    /// in slices bounds the work of each call.
    pub fn sweep(
        &mut self,
        cursor: usize,
        budget: usize,
        mut keep: impl FnMut(&V) -> bool,
    ) -> Sweep {
        self.sweep_with_key(cursor, budget, |_, v| keep(v))
    }

    /// [`AddrMap::sweep`] whose `keep` also sees each entry's address.
    pub fn sweep_with_key(
        &mut self,
        cursor: usize,
        budget: usize,
        mut keep: impl FnMut(IpAddr, &V) -> bool,
    ) -> Sweep {
        let mut i = cursor & self.mask;
        let (mut passed, mut removed) = (0, 0);
        for _ in 0..budget {
            let s = &self.slots[i];
            if s.family != EMPTY && !keep(addr(s.key, s.family), &s.val) {
                // A later entry may move into `i`: look at it again.
                self.remove_at(i);
                removed += 1;
                continue;
            }
            i = (i + 1) & self.mask;
            passed += 1;
        }
        Sweep {
            cursor: i,
            passed,
            removed,
        }
    }

    /// Slots in the table (twice the capacity, rounded to a power of two).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Removes the entry in slot `hole`, returning its value.
    fn remove_at(&mut self, mut hole: usize) -> V {
        let val = self.slots[hole].val;
        // Backward-shift deletion: move each later entry of the run whose
        // home is not inside (hole, j] into the hole, so that every entry
        // stays reachable from its home without tombstones.
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s.family == EMPTY {
                break;
            }
            let from_home = j.wrapping_sub(self.home(s.key, s.family)) & self.mask;
            if from_home >= (j.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        val
    }

    /// The longest distance of an entry from its home slot (how many
    /// slots the slowest lookup reads, minus one).
    #[cfg(test)]
    fn longest_probe(&self) -> usize {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.family != EMPTY)
            .map(|(j, s)| j.wrapping_sub(self.home(s.key, s.family)) & self.mask)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32) -> IpAddr {
        IpAddr::from((0xc000_0200u32 + i).to_be_bytes())
    }

    #[test]
    fn insert_get_overwrite_remove() {
        let mut m = AddrMap::<usize>::new(64);
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "2001:db8:1::10".parse().unwrap();
        assert_eq!(m.get(a), None);
        assert_eq!(m.insert(a, 1), Ok(None));
        assert_eq!(m.insert(b, 2), Ok(None));
        assert_eq!((m.get(a), m.get(b), m.len()), (Some(1), Some(2), 2));
        assert_eq!(m.insert(a, 3), Ok(Some(1)), "latest wins");
        assert_eq!((m.get(a), m.len()), (Some(3), 2));
        assert_eq!(m.get("192.0.2.11".parse().unwrap()), None);
        assert_eq!(m.remove(a), Some(3));
        assert_eq!(m.remove(a), None);
        assert_eq!((m.get(a), m.get(b), m.len()), (None, Some(2), 1));
        assert_eq!(m.remove(b), Some(2));
        assert!(m.is_empty());
    }

    #[test]
    fn families_are_distinct_and_unspecified_is_a_key() {
        let mut m = AddrMap::<u8>::new(8);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let plain: IpAddr = "192.0.2.1".parse().unwrap();
        let zero4: IpAddr = "0.0.0.0".parse().unwrap();
        let zero6: IpAddr = "::".parse().unwrap();
        assert_eq!(m.get(zero6), None, "an empty slot is not `::`");
        m.insert(mapped, 6).unwrap();
        assert_eq!(m.get(plain), None);
        m.insert(plain, 4).unwrap();
        m.insert(zero6, 0).unwrap();
        assert_eq!(m.get(zero4), None);
        m.insert(zero4, 1).unwrap();
        assert_eq!(
            [m.get(mapped), m.get(plain), m.get(zero6), m.get(zero4)],
            [Some(6), Some(4), Some(0), Some(1)]
        );
        assert_eq!(m.remove(zero6), Some(0));
        assert_eq!(m.get(zero6), None);
        assert_eq!(m.get(mapped), Some(6));
    }

    #[test]
    fn full_refuses_new_addresses_but_keeps_and_updates_old_ones() {
        let mut m = AddrMap::<u32>::new(16);
        assert_eq!(m.capacity(), 16);
        for i in 0..16 {
            assert_eq!(m.insert(v4(i), i), Ok(None));
        }
        assert_eq!(m.insert(v4(16), 16), Err(Full { capacity: 16 }));
        assert_eq!(m.get(v4(16)), None);
        assert_eq!(m.len(), 16);
        for i in 0..16 {
            assert_eq!(m.get(v4(i)), Some(i), "{i} kept");
        }
        assert_eq!(m.insert(v4(3), 30), Ok(Some(3)), "overwriting when full");
        assert_eq!(m.remove(v4(0)), Some(0));
        assert_eq!(m.insert(v4(16), 16), Ok(None), "room again");
        assert_eq!(m.get(v4(16)), Some(16));
    }

    /// Removing from long probe runs (many keys, small table, with churn)
    /// keeps every remaining key reachable: checked against a `HashMap`.
    #[test]
    fn churn_matches_a_hashmap() {
        use std::collections::HashMap;
        let mut m = AddrMap::<u32>::new(256);
        let mut reference = HashMap::new();
        // A small LCG: deterministic, no dependency.
        let mut x = 0x1234_5678_u64;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 33) as u32
        };
        let mut fulls = 0;
        for step in 0..20_000u32 {
            let r = next();
            let ip = if r & 1 == 0 {
                v4(r % 400)
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(
                    (0x2001_0db8_u128 << 96) | u128::from(r % 400),
                ))
            };
            if r & 6 == 0 {
                assert_eq!(m.remove(ip), reference.remove(&ip), "step {step}");
            } else if let Ok(prev) = m.insert(ip, step) {
                assert_eq!(prev, reference.insert(ip, step), "step {step}");
            } else {
                assert_eq!(reference.len(), 256, "full only at capacity");
                assert!(!reference.contains_key(&ip), "step {step}");
                fulls += 1;
            }
            assert_eq!(m.len(), reference.len());
        }
        assert!(fulls > 0, "the table filled up at times");
        for (ip, v) in &reference {
            assert_eq!(m.get(*ip), Some(*v));
        }
        for i in 0..400 {
            assert_eq!(m.get(v4(i)), reference.get(&v4(i)).copied());
        }
    }

    /// Addresses chosen to collide under an unkeyed hash (the same folded
    /// 64 bits, so the same Fibonacci hash: what a gateway owning a /64 can
    /// send from) spread over the table: lookups stay short. With the
    /// unkeyed hash every one of them lands in one probe run of 4,000.
    #[test]
    fn chosen_addresses_do_not_collide() {
        let mut m = AddrMap::<u32>::new(8192);
        let base: u128 = 0x2001_0db8_0000_0001 << 64;
        for i in 0..4000u128 {
            // hi ^ lo stays the same: lo = i, hi = base_hi ^ i.
            let ip = IpAddr::from(std::net::Ipv6Addr::from(base ^ (i << 64) | i));
            assert_eq!(
                hash(key(ip).0),
                hash(key(IpAddr::from(std::net::Ipv6Addr::from(base))).0)
            );
            m.insert(ip, i as u32).unwrap();
        }
        assert!(
            m.longest_probe() < 64,
            "longest probe {} slots",
            m.longest_probe()
        );
    }

    /// Sweeping in slices removes exactly the refused entries, however the
    /// removals shift the probe runs.
    #[test]
    fn sweep_removes_refused_entries() {
        let mut m = AddrMap::<u32>::new(512);
        for i in 0..512 {
            m.insert(v4(i), i).unwrap();
        }
        let (mut cursor, mut passed, mut removed) = (0, 0, 0);
        // One round of the table, in slices of 37 slots.
        while passed < m.slots() {
            let s = m.sweep(cursor, 37, |v| v % 3 != 0);
            cursor = s.cursor;
            passed += s.passed;
            removed += s.removed;
        }
        assert_eq!(removed, (0..512).filter(|i| i % 3 == 0).count());
        for i in 0..512 {
            assert_eq!(m.get(v4(i)), (i % 3 != 0).then_some(i), "{i}");
        }
        assert_eq!(m.len(), 512 - removed);
        *m.get_mut(v4(1)).unwrap() = 77;
        assert_eq!(m.get(v4(1)), Some(77));
    }
}
