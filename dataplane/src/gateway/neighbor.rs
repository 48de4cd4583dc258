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

use crate::{
    addr_map::AddrMap,
    sys::neigh::{NUD_USABLE, NeighEvent, NextHop},
    wire::ethernet,
};
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

/// The next hop towards an address, as cached (direct-mapped).
#[derive(Clone, Copy, Debug, Default)]
struct Hop {
    /// The address as a 128-bit value (IPv4 mapped); `family` 0: empty.
    key: u128,
    family: u8,
    /// Reached through the LAN (or one of its VLAN devices).
    lan: bool,
    /// Through this router (`None`: on-link).
    via: Option<IpAddr>,
}

/// Addresses waiting for a resolution request, per batch.
const MAX_PENDING: usize = 16;
/// Resolution requests and route queries each, per second, at most (a
/// flood of frames from made-up addresses cannot turn into a flood of
/// ARP requests or system calls).
const PER_SECOND: u32 = 256;
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
    /// Next hops towards addresses the kernel has no entry for.
    hops: Box<[Hop]>,
    /// `(second started, resolution requests, route queries)`.
    budget: (Option<Instant>, u32, u32),
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
            hops: vec![Hop::default(); k].into_boxed_slice(),
            budget: (None, 0, 0),
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
            NeighEvent::Route => self.hops.fill(Hop::default()),
            NeighEvent::Done | NeighEvent::Overrun => {}
        }
    }

    /// Forgets every kernel entry (before a fresh dump after an overrun).
    pub fn clear_kernel(&mut self) {
        if let Source::Kernel(lan) = self.source {
            self.kernel = AddrMap::new(self.kernel.capacity());
            self.links.clear();
            self.links.push((lan, 0));
            self.hops.fill(Hop::default());
        }
    }

    /// A frame from the LAN came from `ip` at `mac` with `tags`: learn the
    /// tags if the kernel has this MAC for this address or for its next
    /// hop (on the endpoint's veth: learn the MAC itself); if the kernel
    /// has no entry for it yet, ask it to resolve one, so that the reply
    /// finds it. `route` answers next-hop questions (a system call: only
    /// for addresses not seen before).
    #[inline]
    pub fn observe(
        &mut self,
        ip: IpAddr,
        mac: Mac,
        tags: Tags,
        now: Instant,
        route: &mut impl FnMut(IpAddr) -> Option<NextHop>,
    ) {
        if self.source == Source::Frames {
            let k = key(ip);
            let e = &mut self.framed[slot(k, self.mask)];
            if e.key != k || e.mac != mac || e.tags != tags {
                *e = Framed { key: k, mac, tags };
            }
            return;
        }
        let known = match self.kernel.get(ip) {
            Some(k) => Some(k),
            None => match self.next_hop(ip, now, route) {
                Some(Hop {
                    lan: true,
                    via: None,
                    ..
                }) => {
                    self.ask(ip, now);
                    None
                }
                Some(Hop {
                    lan: true,
                    via: Some(g),
                    ..
                }) => {
                    let k = self.kernel.get(g);
                    if k.is_none() {
                        self.ask(g, now);
                    }
                    k
                }
                _ => None,
            },
        };
        if let Some(k) = known
            && k.mac == mac
            && k.vlan == 0
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

    /// The MAC and VLAN tags a reply to `ip` goes to, if known: the
    /// kernel's entry for `ip`, or for the router the kernel reaches it
    /// through. A miss on the LAN queues a resolution request (see
    /// [`Neighbors::take_resolutions`]).
    #[inline]
    pub fn lookup(
        &mut self,
        ip: IpAddr,
        now: Instant,
        route: &mut impl FnMut(IpAddr) -> Option<NextHop>,
    ) -> Option<(Mac, Tags)> {
        if self.source == Source::Frames {
            let k = key(ip);
            let e = &self.framed[slot(k, self.mask)];
            return (e.key == k && k != 0).then_some((e.mac, e.tags));
        }
        if let Some(k) = self.kernel.get(ip) {
            return Some(self.with_tags(k));
        }
        match self.next_hop(ip, now, route)? {
            Hop {
                lan: true,
                via: None,
                ..
            } => {
                self.ask(ip, now);
                None
            }
            Hop {
                lan: true,
                via: Some(g),
                ..
            } => {
                if let Some(k) = self.kernel.get(g) {
                    Some(self.with_tags(k))
                } else {
                    self.ask(g, now);
                    None
                }
            }
            Hop { lan: false, .. } => None,
        }
    }

    /// A kernel entry's MAC with its VLAN tags: the VLAN device's, or the
    /// ones learnt from the host's frames.
    fn with_tags(&self, k: Kernel) -> (Mac, Tags) {
        if k.vlan != 0 {
            return (k.mac, Tags::dot1q(k.vlan));
        }
        let e = &self.learnt[mac_slot(k.mac, self.mask)];
        let tags = if e.used && e.mac == k.mac {
            e.tags
        } else {
            Tags::NONE
        };
        (k.mac, tags)
    }

    /// The next hop towards `ip`: cached, or asked of `route` (within
    /// the budget) and cached.
    fn next_hop(
        &mut self,
        ip: IpAddr,
        now: Instant,
        route: &mut impl FnMut(IpAddr) -> Option<NextHop>,
    ) -> Option<Hop> {
        let (k, family) = crate::addr_map::key(ip);
        let i = slot(k, self.mask);
        let h = self.hops[i];
        if h.family == family && h.key == k {
            return Some(h);
        }
        if !self.spend(now, false) {
            return None;
        }
        let hop = route(ip)?;
        let h = Hop {
            key: k,
            family,
            lan: self.link_vlan(hop.oif).is_some(),
            via: hop.gateway,
        };
        self.hops[i] = h;
        Some(h)
    }

    /// Takes one resolution request (`false`) or route query (`true`)
    /// from this second's budget.
    fn spend(&mut self, now: Instant, ask: bool) -> bool {
        let (start, asks, routes) = &mut self.budget;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= ASK_EVERY) {
            *start = Some(now);
            *asks = 0;
            *routes = 0;
        }
        let used = if ask { asks } else { routes };
        if *used >= PER_SECOND {
            return false;
        }
        *used += 1;
        true
    }

    /// Queues a resolution request for `ip` unless it was asked about in
    /// the last second or the queue is full.
    fn ask(&mut self, ip: IpAddr, now: Instant) {
        let k = key(ip);
        let i = slot(k, self.mask);
        let (asked, at) = self.asked[i];
        if asked == k && at.is_some_and(|t| now.saturating_duration_since(t) < ASK_EVERY) {
            return;
        }
        if self.pending.iter().all(Option::is_some) {
            return;
        }
        self.asked[i] = (k, Some(now));
        if !self.spend(now, true) {
            return;
        }
        if let Some(free) = self.pending.iter_mut().find(|p| p.is_none()) {
            *free = Some(ip);
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
    const ROUTER: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
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

    /// Routes: 198.18.50.0/24 via 192.0.2.254 on the LAN; 203.0.113.0/24
    /// elsewhere (interface 1); the rest on-link on the LAN.
    #[allow(
        clippy::unnecessary_wraps,
        reason = "the route callback's signature (no route is `None`)"
    )]
    fn route(ip: IpAddr) -> Option<NextHop> {
        let s = ip.to_string();
        Some(if s.starts_with("198.18.50.") {
            NextHop {
                oif: LAN,
                gateway: Some("192.0.2.254".parse().unwrap()),
            }
        } else if s.starts_with("203.0.113.") {
            NextHop {
                oif: 1,
                gateway: None,
            }
        } else {
            NextHop {
                oif: LAN,
                gateway: None,
            }
        })
    }

    #[test]
    fn frames_never_teach_a_mac_on_the_lan() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        // A spoofed frame claims the address: nothing learnt; the kernel
        // is asked to resolve it (once a second), and so is a miss.
        n.observe(a, EVIL, Tags::NONE, now, &mut route);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [a]);
        assert_eq!(n.lookup(a, now, &mut route), None);
        assert_eq!(n.take_resolutions().count(), 0, "asked a moment ago");
        // The kernel's answer is what counts; more spoofed frames change
        // nothing.
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.observe(a, EVIL, Tags::dot1q(20), now, &mut route);
        assert_eq!(n.lookup(a, now, &mut route), Some((A, Tags::NONE)));
        // The real host's frames teach its VLAN.
        n.observe(a, A, Tags::dot1q(10), now, &mut route);
        assert_eq!(n.lookup(a, now, &mut route), Some((A, Tags::dot1q(10))));
        // Stale is still usable; failed or gone is not.
        n.apply(neigh("192.0.2.10", Some(A), 0x04, false));
        assert!(n.lookup(a, now, &mut route).is_some());
        n.apply(neigh("192.0.2.10", None, 0x20, false));
        assert_eq!(n.lookup(a, now, &mut route), None);
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.apply(neigh("192.0.2.10", Some(A), 0x02, true));
        assert_eq!(n.lookup(a, now + ASK_EVERY, &mut route), None);
        assert_eq!(n.take_resolutions().count(), 1);
    }

    #[test]
    fn hosts_behind_a_router_get_the_routers_mac() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        let host: IpAddr = "198.18.50.7".parse().unwrap();
        let router: IpAddr = "192.0.2.254".parse().unwrap();
        let queries = std::cell::Cell::new(0);
        let mut counted = |ip| {
            queries.set(queries.get() + 1);
            route(ip)
        };
        // The router is not known yet: it is what gets resolved.
        n.observe(host, ROUTER, Tags::dot1q(30), now, &mut counted);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [router]);
        n.apply(neigh("192.0.2.254", Some(ROUTER), 0x02, false));
        n.observe(host, ROUTER, Tags::dot1q(30), now, &mut counted);
        assert_eq!(
            n.lookup(host, now, &mut counted),
            Some((ROUTER, Tags::dot1q(30)))
        );
        assert_eq!(queries.get(), 1, "one route query, then the cache");
        // A route change empties the cache.
        n.apply(NeighEvent::Route);
        assert!(n.lookup(host, now, &mut counted).is_some());
        assert_eq!(queries.get(), 2);
        // Routed elsewhere than the LAN: nothing, and nothing asked.
        assert_eq!(
            n.lookup("203.0.113.5".parse().unwrap(), now, &mut route),
            None
        );
        assert_eq!(n.take_resolutions().count(), 0);
    }

    #[test]
    fn made_up_addresses_are_asked_about_within_a_budget() {
        let now = Instant::now();
        let mut n = Neighbors::new(1 << 12, Source::Kernel(LAN));
        let mut asked = 0;
        for i in 0..2000u32 {
            let ip = IpAddr::from([192, 0, (i >> 8) as u8 | 0x80, i as u8]);
            n.observe(ip, EVIL, Tags::NONE, now, &mut route);
            asked += n.take_resolutions().count();
        }
        assert_eq!(asked, PER_SECOND as usize, "at most the budget per second");
        let later = now + ASK_EVERY;
        n.observe(
            "192.0.2.77".parse().unwrap(),
            EVIL,
            Tags::NONE,
            later,
            &mut route,
        );
        assert_eq!(n.take_resolutions().count(), 1, "a new second");
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
        let mut on_vlan = |_| {
            Some(NextHop {
                oif: 11,
                gateway: None,
            })
        };
        assert_eq!(
            n.lookup("198.18.10.5".parse().unwrap(), now, &mut on_vlan),
            Some((A, Tags::dot1q(10)))
        );
        assert_eq!(
            n.lookup("198.18.30.5".parse().unwrap(), now, &mut on_vlan),
            None
        );
    }

    #[test]
    fn the_endpoint_veth_learns_from_frames() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Frames);
        let a: IpAddr = "198.18.3.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1::10".parse().unwrap();
        n.observe(a, A, Tags::NONE, now, &mut route);
        n.observe(b, [2, 0, 0, 0, 0, 11], Tags::NONE, now, &mut route);
        assert_eq!(n.lookup(a, now, &mut route), Some((A, Tags::NONE)));
        assert_eq!(
            n.lookup(b, now, &mut route),
            Some(([2, 0, 0, 0, 0, 11], Tags::NONE))
        );
        assert_eq!(n.lookup("::".parse().unwrap(), now, &mut route), None);
        assert_eq!(n.take_resolutions().count(), 0);
    }
}
