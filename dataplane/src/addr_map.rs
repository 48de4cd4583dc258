//! A bounded hash map keyed by IP address, for lookups on every packet.
//!
//! Open addressing with linear probing over a power-of-two array of slots,
//! allocated once: inserting, looking up and removing never allocate. The
//! home slot is a multiplicative (Fibonacci) hash of the address as a
//! `u128` (IPv4 mapped, the scheme of the gateway's neighbor cache), so a
//! lookup is one multiply and usually one slot compare. The family is kept
//! beside the key, so `192.0.2.1` and `::ffff:192.0.2.1` are distinct keys
//! (as they are in a `HashMap<IpAddr, _>`), and `::` is a key like any other.
//!
//! Unlike the neighbor cache, entries are never evicted: the table holds up
//! to [`AddrMap::capacity`] addresses (at most half its slots, to keep the
//! probes short) and [`AddrMap::insert`] of a new address beyond that fails
//! with [`Full`], leaving every existing entry in place. The caller decides
//! what a refused address means (the edge counts it). Removal shifts later
//! entries of the probe run back (no tombstones), so a table that churns
//! does not degrade.
use std::net::IpAddr;

/// [`AddrMap::insert`] of a new address into a table holding
/// [`AddrMap::capacity`] addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address table full ({capacity} addresses)")]
pub struct Full {
    /// The table's capacity.
    pub capacity: usize,
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
pub(crate) fn key(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), V4),
        IpAddr::V6(a) => (u128::from(a), V6),
    }
}

/// Fibonacci hashing of the folded key: the top bits are the mixed ones.
#[inline]
pub(crate) fn hash(k: u128) -> u64 {
    let folded = (k as u64) ^ ((k >> 64) as u64);
    folded.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A map from IP addresses to `V` with a fixed capacity.
#[derive(Debug)]
pub struct AddrMap<V> {
    slots: Box<[Slot<V>]>,
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

    /// The home slot of a key.
    #[inline]
    fn home(&self, k: u128) -> usize {
        (hash(k) >> self.shift) as usize
    }

    /// The slot holding `(k, family)`, or `Err` with the empty slot that
    /// ends its probe run.
    #[inline]
    fn find(&self, k: u128, family: u8) -> Result<usize, usize> {
        let mut i = self.home(k);
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
        let mut hole = self.find(k, family).ok()?;
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
            let from_home = j.wrapping_sub(self.home(s.key)) & self.mask;
            if from_home >= (j.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        Some(val)
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
}
