//! Which MAC address (and VLAN) a LAN host has, for the replies that come
//! back through the tunnel.
//!
//! On the LAN ([`Source::Kernel`]) the MAC comes from the kernel's
//! neighbour table (ARP and ND, read over rtnetlink into this cache by the
//! worker: [`Neighbors::apply`]), never from the frames the hosts send: a
//! frame's source address proves nothing, and one spoofed frame must not
//! redirect another host's replies. The kernel learns a host when the host
//! resolves the gateway's address, which it must do before it can send
//! anything through it. A reply for a host the cache does not know is
//! dropped and counted, and the kernel is asked to resolve the address
//! ([`Neighbors::take_resolutions`], at most once a second per address,
//! sent by the worker outside the packet loop): its answer arrives as an
//! event and the next reply goes out.
//!
//! The VLAN: an entry on a VLAN device of the LAN interface (the kernel
//! has 802.1Q devices) carries that device's VLAN id; otherwise the tags
//! are the ones the host's frames came with ([`Neighbors::observe`]),
//! learnt only from frames whose source MAC is the one the kernel has for
//! their source address.
//!
//! The endpoint's veth ([`Source::Frames`]) carries this host's own
//! packets only: there the MAC is learnt from the frames (the old way).
//!
//! No allocation and no syscall per packet: fixed-size tables, filled
//! from netlink events between batches.
use std::{net::IpAddr, time::Instant};

use crate::{addr_map::AddrMap, sys::neigh::NUD_USABLE, sys::neigh::NeighEvent, wire::ethernet};
use ethernet::{Mac, Tags};

/// Where a cache takes MAC addresses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kernel's neighbour table for the LAN interface (index) and its
    /// VLAN devices.
    Kernel(u32),
    /// The frames themselves (the endpoint's veth: this host's packets).
    Frames,
}

/// A kernel neighbour as cached.
#[derive(Clone, Copy, Debug, Default)]
struct Kernel {
    mac: Mac,
    /// The VLAN id of the device the entry is on (0: the LAN itself).
    vlan: u16,
}

/// Tags learnt for a MAC address (direct-mapped, collisions evict).
#[derive(Clone, Copy, Debug, Default)]
struct Learnt {
    mac: Mac,
    used: bool,
    tags: Tags,
}

/// A direct-mapped learnt entry for the [`Source::Frames`] mode.
#[derive(Clone, Copy, Debug, Default)]
struct Framed {
    /// The IP as a 128-bit value (IPv4 mapped), 0 when empty.
    key: u128,
    mac: Mac,
    tags: Tags,
}

/// Addresses waiting for a resolution request, per batch.
const MAX_PENDING: usize = 16;
/// How often one address may be asked about.
const ASK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// VLAN devices on the LAN interface the cache follows.
const MAX_LINKS: usize = 256;

/// The `IP -> MAC` cache of one worker.
#[derive(Debug)]
pub struct Neighbors {
    source: Source,
    kernel: AddrMap<Kernel>,
    /// `(ifindex, vlan id)` of the LAN interface (vlan 0) and its VLAN
    /// devices.
    links: Vec<(u32, u16)>,
    learnt: Box<[Learnt]>,
    framed: Box<[Framed]>,
    mask: usize,
    /// When each address was last asked about (direct-mapped).
    asked: Box<[(u128, Option<Instant>)]>,
    pending: [Option<IpAddr>; MAX_PENDING],
    /// Kernel entries not cached because the table was full.
    full: u64,
}

fn key(ip: IpAddr) -> u128 {
    crate::addr_map::key(ip).0
}

fn slot(k: u128, mask: usize) -> usize {
    (crate::addr_map::hash(k) >> 32) as usize & mask
}

fn mac_slot(m: Mac, mask: usize) -> usize {
    let mut k = [0u8; 16];
    k[..6].copy_from_slice(&m);
    slot(u128::from_be_bytes(k), mask)
}

impl Neighbors {
    /// A cache for about `capacity` hosts taking MACs from `source`.
    pub fn new(capacity: usize, source: Source) -> Self {
        let n = capacity.next_power_of_two().max(16);
        let mut links = Vec::with_capacity(MAX_LINKS);
        let kernel = matches!(source, Source::Kernel(_));
        if let Source::Kernel(lan) = source {
            links.push((lan, 0));
        }
        // Each mode's tables only (the others stay one slot, never used).
        let (k, f) = if kernel { (n, 1) } else { (1, n) };
        Self {
            source,
            kernel: AddrMap::new(if kernel { capacity } else { 8 }),
            links,
            learnt: vec![Learnt::default(); k].into_boxed_slice(),
            framed: vec![Framed::default(); f].into_boxed_slice(),
            mask: n - 1,
            asked: vec![(0, None); k].into_boxed_slice(),
            pending: [None; MAX_PENDING],
            full: 0,
        }
    }

    /// Where this cache takes MACs from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The VLAN id of a followed link, if `ifindex` is the LAN interface
    /// (0) or one of its VLAN devices.
    fn link_vlan(&self, ifindex: u32) -> Option<u16> {
        self.links
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|&(_, v)| v)
    }

    /// Applies a change of the kernel's tables (links first: a dump
    /// lists the links, then the neighbours).
    pub fn apply(&mut self, e: NeighEvent) {
        let Source::Kernel(lan) = self.source else {
            return;
        };
        match e {
            NeighEvent::Link {
                ifindex,
                parent,
                vlan,
                gone,
            } => {
                if ifindex == lan {
                    return;
                }
                self.links.retain(|(i, _)| *i != ifindex);
                if !gone
                    && parent == lan
                    && let Some(v) = vlan
                    && self.links.len() < MAX_LINKS
                {
                    self.links.push((ifindex, v & 0x0fff));
                }
            }
            NeighEvent::Neigh {
                ifindex,
                addr,
                mac,
                state,
                gone,
            } => {
                let Some(vlan) = self.link_vlan(ifindex) else {
                    return;
                };
                match mac {
                    Some(mac) if !gone && state & NUD_USABLE != 0 && mac != [0; 6] => {
                        if self.kernel.insert(addr, Kernel { mac, vlan }).is_err() {
                            self.full += 1;
                        }
                    }
                    _ => {
                        // Gone, failed or being resolved: the kernel has no
                        // address it would use. Only the entry of the same
                        // link goes (another VLAN's entry for the address
                        // is not this one).
                        if self.kernel.get(addr).is_some_and(|k| k.vlan == vlan) {
                            self.kernel.remove(addr);
                        }
                    }
                }
            }
            NeighEvent::Done | NeighEvent::Overrun => {}
        }
    }

    /// Forgets every kernel entry (before a fresh dump after an overrun).
    pub fn clear_kernel(&mut self) {
        if let Source::Kernel(lan) = self.source {
            self.kernel = AddrMap::new(self.kernel.capacity());
            self.links.clear();
            self.links.push((lan, 0));
        }
    }

    /// A frame from the LAN came from `ip` at `mac` with `tags`: learn the
    /// tags if the kernel has this MAC for this address (or, on the
    /// endpoint's veth, the MAC itself).
    #[inline]
    pub fn observe(&mut self, ip: IpAddr, mac: Mac, tags: Tags) {
        match self.source {
            Source::Frames => {
                let k = key(ip);
                let e = &mut self.framed[slot(k, self.mask)];
                if e.key != k || e.mac != mac || e.tags != tags {
                    *e = Framed { key: k, mac, tags };
                }
            }
            Source::Kernel(_) => {
                if self
                    .kernel
                    .get(ip)
                    .is_some_and(|k| k.mac == mac && k.vlan == 0)
                {
                    let e = &mut self.learnt[mac_slot(mac, self.mask)];
                    if !e.used || e.mac != mac || e.tags != tags {
                        *e = Learnt {
                            mac,
                            used: true,
                            tags,
                        };
                    }
                }
            }
        }
    }

    /// The MAC and VLAN tags of `ip`, if known. A miss on the LAN queues a
    /// resolution request (see [`Neighbors::take_resolutions`]).
    #[inline]
    pub fn lookup(&mut self, ip: IpAddr, now: Instant) -> Option<(Mac, Tags)> {
        match self.source {
            Source::Frames => {
                let k = key(ip);
                let e = &self.framed[slot(k, self.mask)];
                (e.key == k && k != 0).then_some((e.mac, e.tags))
            }
            Source::Kernel(_) => match self.kernel.get(ip) {
                Some(k) if k.vlan != 0 => Some((k.mac, Tags::dot1q(k.vlan))),
                Some(k) => {
                    let e = &self.learnt[mac_slot(k.mac, self.mask)];
                    let tags = if e.used && e.mac == k.mac {
                        e.tags
                    } else {
                        Tags::NONE
                    };
                    Some((k.mac, tags))
                }
                None => {
                    self.ask(ip, now);
                    None
                }
            },
        }
    }

    /// Queues a resolution request for `ip` unless it was asked about in
    /// the last second or the queue is full.
    fn ask(&mut self, ip: IpAddr, now: Instant) {
        let k = key(ip);
        let a = &mut self.asked[slot(k, self.mask)];
        if a.0 == k
            && a.1
                .is_some_and(|t| now.saturating_duration_since(t) < ASK_EVERY)
        {
            return;
        }
        if let Some(free) = self.pending.iter_mut().find(|p| p.is_none()) {
            *free = Some(ip);
            *a = (k, Some(now));
        }
    }

    /// The addresses to ask the kernel to resolve (on the LAN interface),
    /// emptying the queue.
    pub fn take_resolutions(&mut self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pending.iter_mut().filter_map(Option::take)
    }

    /// Kernel entries not cached because the table was full (since start).
    pub fn full_count(&self) -> u64 {
        self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAN: u32 = 3;
    const A: [u8; 6] = [2, 0, 0, 0, 0, 10];
    const EVIL: [u8; 6] = [2, 0, 0, 0, 0, 0x66];

    fn neigh(addr: &str, mac: Option<Mac>, state: u16, gone: bool) -> NeighEvent {
        NeighEvent::Neigh {
            ifindex: LAN,
            addr: addr.parse().unwrap(),
            mac,
            state,
            gone,
        }
    }

    #[test]
    fn frames_never_teach_a_mac_on_the_lan() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        // A spoofed frame claims the address: nothing learnt, a miss asks
        // the kernel (once a second).
        n.observe(a, EVIL, Tags::NONE);
        assert_eq!(n.lookup(a, now), None);
        assert_eq!(n.lookup(a, now), None);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [a]);
        assert_eq!(n.take_resolutions().count(), 0);
        // The kernel's answer is what counts; more spoofed frames change
        // nothing.
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.observe(a, EVIL, Tags::dot1q(20));
        assert_eq!(n.lookup(a, now), Some((A, Tags::NONE)));
        // The real host's frames teach its VLAN.
        n.observe(a, A, Tags::dot1q(10));
        assert_eq!(n.lookup(a, now), Some((A, Tags::dot1q(10))));
        // Stale is still usable; failed or gone is not.
        n.apply(neigh("192.0.2.10", Some(A), 0x04, false));
        assert!(n.lookup(a, now).is_some());
        n.apply(neigh("192.0.2.10", None, 0x20, false));
        assert_eq!(n.lookup(a, now), None);
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.apply(neigh("192.0.2.10", Some(A), 0x02, true));
        assert_eq!(n.lookup(a, now + ASK_EVERY), None);
        assert_eq!(n.take_resolutions().count(), 1);
    }

    #[test]
    fn vlan_devices_give_their_vlan() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        n.apply(NeighEvent::Link {
            ifindex: 9,
            parent: LAN,
            vlan: Some(10),
            gone: false,
        });
        // Other interfaces are not the LAN's.
        n.apply(NeighEvent::Link {
            ifindex: 11,
            parent: 1,
            vlan: Some(30),
            gone: false,
        });
        let on = |ifindex: u32, addr: &str| NeighEvent::Neigh {
            ifindex,
            addr: addr.parse().unwrap(),
            mac: Some(A),
            state: 0x02,
            gone: false,
        };
        n.apply(on(9, "198.18.10.5"));
        n.apply(on(11, "198.18.30.5"));
        assert_eq!(
            n.lookup("198.18.10.5".parse().unwrap(), now),
            Some((A, Tags::dot1q(10)))
        );
        assert_eq!(n.lookup("198.18.30.5".parse().unwrap(), now), None);
    }

    #[test]
    fn the_endpoint_veth_learns_from_frames() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Frames);
        let a: IpAddr = "198.18.3.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1::10".parse().unwrap();
        n.observe(a, A, Tags::NONE);
        n.observe(b, [2, 0, 0, 0, 0, 11], Tags::NONE);
        assert_eq!(n.lookup(a, now), Some((A, Tags::NONE)));
        assert_eq!(n.lookup(b, now), Some(([2, 0, 0, 0, 0, 11], Tags::NONE)));
        assert_eq!(n.lookup("::".parse().unwrap(), now), None);
        assert_eq!(n.take_resolutions().count(), 0);
    }
}
