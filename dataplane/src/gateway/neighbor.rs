//! Which MAC address a LAN host has, learned from the frames it sends.
//!
//! Replies that come back through the tunnel need an Ethernet header for
//! the LAN host they are for. Each worker learns `IP -> MAC` from the
//! source of every frame it tunnels: a host that gets a reply has sent
//! through this worker first (the edge returns replies over the tunnel that
//! carried the request). A fixed-size direct-mapped table: no allocation
//! after start, one hash and one compare per lookup; a collision evicts the
//! older entry (it is re-learnt from that host's next frame).

use std::net::IpAddr;

use crate::wire::ethernet::Mac;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// The IP as a 128-bit value (IPv4 mapped), 0 when empty.
    key: u128,
    mac: Mac,
}

/// The `IP -> MAC` cache of one worker.
#[derive(Debug)]
pub struct Neighbors {
    slots: Box<[Entry]>,
    mask: usize,
}

fn key(ip: IpAddr) -> u128 {
    crate::addr_map::key(ip).0
}

fn slot(k: u128, mask: usize) -> usize {
    (crate::addr_map::hash(k) >> 32) as usize & mask
}

impl Neighbors {
    /// A cache with `capacity` slots, rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.next_power_of_two().max(16);
        Self {
            slots: vec![Entry::default(); n].into_boxed_slice(),
            mask: n - 1,
        }
    }

    /// Records that `ip` is at `mac`.
    #[inline]
    pub fn learn(&mut self, ip: IpAddr, mac: Mac) {
        let k = key(ip);
        let e = &mut self.slots[slot(k, self.mask)];
        if e.key != k || e.mac != mac {
            *e = Entry { key: k, mac };
        }
    }

    /// The MAC of `ip`, if learnt.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<Mac> {
        let k = key(ip);
        let e = &self.slots[slot(k, self.mask)];
        (e.key == k && k != 0).then_some(e.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_and_looks_up_both_families() {
        let mut n = Neighbors::new(64);
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "2001:db8:1::10".parse().unwrap();
        assert_eq!(n.lookup(a), None);
        n.learn(a, [2, 0, 0, 0, 0, 10]);
        n.learn(b, [2, 0, 0, 0, 0, 11]);
        assert_eq!(n.lookup(a), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(n.lookup(b), Some([2, 0, 0, 0, 0, 11]));
        n.learn(a, [2, 0, 0, 0, 0, 12]);
        assert_eq!(n.lookup(a), Some([2, 0, 0, 0, 0, 12]), "a host that moved");
        assert_eq!(n.lookup("192.0.2.11".parse().unwrap()), None);
        // `::` is never a valid key.
        assert_eq!(n.lookup("::".parse().unwrap()), None);
    }

    #[test]
    fn a_full_cache_still_answers_for_recent_hosts() {
        let mut n = Neighbors::new(16);
        for i in 0..=255u8 {
            n.learn(IpAddr::from([192, 0, 2, i]), [2, 0, 0, 0, 0, i]);
            assert_eq!(
                n.lookup(IpAddr::from([192, 0, 2, i])),
                Some([2, 0, 0, 0, 0, i])
            );
        }
    }
}
