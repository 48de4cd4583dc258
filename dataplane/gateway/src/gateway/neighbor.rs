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
//! The VLAN ([`VlanMode`], the gateway's `lan_vlans`): an entry on a VLAN
//! device of the LAN interface carries that device's VLAN id. An entry on
//! the LAN interface itself is untagged in kernel mode (the kernel takes a
//! VLAN's frames only through a VLAN device, so the host's ARP or ND came
//! untagged): frames teach no VLAN there, and one claiming a host's MAC
//! and address from another VLAN cannot move its replies. In untag mode
//! the classifier strips the tags of the frames the kernel learns from,
//! so the tags are the ones the host's frames came with
//! ([`Neighbors::observe`]), kept with the kernel's entry and learnt only
//! from frames whose source MAC is the one the kernel has for their source
//! address; a reply to a host whose tags are not known yet is dropped
//! (counted as without a neighbour), never sent untagged to the native
//! VLAN.
//!
//! Resolution requests and route queries are capped per second, with one
//! budget for the LAN's frames and one for the tunnel's replies: frames
//! from made-up addresses cannot use up what the replies need.
//!
//! The endpoint's veth ([`Source::Frames`]) carries this host's own
//! packets only: there the MAC is learnt from the frames (the old way).
//!
//! No allocation and no syscall per packet: fixed-size tables, filled
//! from netlink events between batches; the direct-mapped caches index
//! by a keyed hash (their keys are addresses the LAN chooses).
use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    time::Instant,
};

use crate::{
    addr_map::AddrMap,
    ebpf::VlanMode,
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
    /// Untag mode: the tags of the frames from `mac` (`None`: none seen
    /// since the kernel has had this entry).
    tags: Option<Tags>,
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

/// Who wants a resolution or a route: a frame from the LAN, or a reply
/// from the tunnel. Each has its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Frame,
    Reply,
}

/// One second's budget: `(second started, resolution requests, route
/// queries)`.
type Budget = (Option<Instant>, u32, u32);

/// Addresses waiting for a resolution request, per batch.
const MAX_PENDING: usize = 16;
/// Resolution requests and route queries each, per second and per
/// [`Need`], at most (a flood of frames from made-up addresses cannot
/// turn into a flood of ARP requests or system calls, nor starve the
/// replies).
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
    framed: Box<[Framed]>,
    mask: usize,
    /// The direct-mapped caches' slot hash (keyed: the LAN picks the
    /// addresses, and could otherwise aim at another host's slot).
    hasher: RandomState,
    /// When each address was last asked about (direct-mapped).
    asked: Box<[(u128, Option<Instant>)]>,
    pending: [Option<IpAddr>; MAX_PENDING],
    /// Next hops towards addresses the kernel has no entry for.
    hops: Box<[Hop]>,
    /// This second's budgets: the LAN's frames', the replies'.
    budget: [Budget; 2],
}

fn key(ip: IpAddr) -> u128 {
    crate::addr_map::key(ip).0
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
            framed: vec![Framed::default(); f].into_boxed_slice(),
            mask: n - 1,
            hasher: RandomState::new(),
            asked: vec![(0, None); k].into_boxed_slice(),
            pending: [None; MAX_PENDING],
            hops: vec![Hop::default(); k].into_boxed_slice(),
            budget: [(None, 0, 0); 2],
        }
    }

    /// Where this cache takes MACs from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The direct-mapped slot of `k`.
    fn slot(&self, k: u128) -> usize {
        (self.hasher.hash_one(k) >> 32) as usize & self.mask
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
                        // The same host (MAC and link) keeps the tags its
                        // frames taught; another starts without.
                        let tags = self
                            .kernel
                            .get(addr)
                            .filter(|k| k.mac == mac && k.vlan == vlan)
                            .and_then(|k| k.tags);
                        // A full table: the entry is not cached.
                        let _ = self.kernel.insert(addr, Kernel { mac, vlan, tags });
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
    pub(crate) fn clear_kernel(&mut self) {
        if let Source::Kernel(lan) = self.source {
            self.kernel = AddrMap::new(self.kernel.capacity());
            self.links.clear();
            self.links.push((lan, 0));
            self.hops.fill(Hop::default());
        }
    }

    /// A frame from the LAN came from `ip` at `mac` with `tags`. In untag
    /// mode ([`VlanMode::Untag`]) learn the tags if the kernel has this
    /// MAC for this address or for its next hop (in kernel mode frames
    /// teach no VLAN; on the endpoint's veth: learn the MAC itself); if
    /// the kernel has no entry for it yet, ask it to resolve one, so that
    /// the reply finds it. `route` answers next-hop questions (a system
    /// call: only for addresses not seen before).
    #[inline]
    pub fn observe(
        &mut self,
        ip: IpAddr,
        mac: Mac,
        tags: Tags,
        vlans: VlanMode,
        now: Instant,
        route: &mut impl FnMut(IpAddr) -> Option<NextHop>,
    ) {
        if self.source == Source::Frames {
            let k = key(ip);
            let i = self.slot(k);
            let e = &mut self.framed[i];
            if e.key != k || e.mac != mac || e.tags != tags {
                *e = Framed { key: k, mac, tags };
            }
            return;
        }
        // The kernel entry these frames come through: the host's own, or
        // its router's.
        let through = if self.kernel.get(ip).is_some() {
            Some(ip)
        } else {
            match self.next_hop(ip, now, route, Need::Frame) {
                Some(Hop {
                    lan: true,
                    via: None,
                    ..
                }) => {
                    self.ask(ip, now, Need::Frame);
                    None
                }
                Some(Hop {
                    lan: true,
                    via: Some(g),
                    ..
                }) => {
                    if self.kernel.get(g).is_none() {
                        self.ask(g, now, Need::Frame);
                    }
                    Some(g)
                }
                _ => None,
            }
        };
        if vlans != VlanMode::Untag {
            return;
        }
        if let Some(k) = through.and_then(|a| self.kernel.get_mut(a))
            && k.mac == mac
            && k.vlan == 0
            && k.tags != Some(tags)
        {
            k.tags = Some(tags);
        }
    }

    /// The MAC and VLAN tags a reply to `ip` goes to, if known: the
    /// kernel's entry for `ip`, or for the router the kernel reaches it
    /// through, with its VLAN (see [`Neighbors::observe`]; untag mode:
    /// `None` until the host's tags are known). A miss on the LAN queues
    /// a resolution request (see [`Neighbors::take_resolutions`]).
    #[inline]
    pub fn lookup(
        &mut self,
        ip: IpAddr,
        vlans: VlanMode,
        now: Instant,
        route: &mut impl FnMut(IpAddr) -> Option<NextHop>,
    ) -> Option<(Mac, Tags)> {
        if self.source == Source::Frames {
            let k = key(ip);
            let e = &self.framed[self.slot(k)];
            return (e.key == k && k != 0).then_some((e.mac, e.tags));
        }
        if let Some(k) = self.kernel.get(ip) {
            return Self::with_tags(k, vlans);
        }
        match self.next_hop(ip, now, route, Need::Reply)? {
            Hop {
                lan: true,
                via: None,
                ..
            } => {
                self.ask(ip, now, Need::Reply);
                None
            }
            Hop {
                lan: true,
                via: Some(g),
                ..
            } => {
                if let Some(k) = self.kernel.get(g) {
                    Self::with_tags(k, vlans)
                } else {
                    self.ask(g, now, Need::Reply);
                    None
                }
            }
            Hop { lan: false, .. } => None,
        }
    }

    /// A kernel entry's MAC with its VLAN tags: the VLAN device's; on
    /// the LAN interface itself none in kernel mode, the ones learnt from
    /// the host's frames in untag mode (`None` if not learnt yet: never
    /// untagged by default, which would be the native VLAN).
    fn with_tags(k: Kernel, vlans: VlanMode) -> Option<(Mac, Tags)> {
        if k.vlan != 0 {
            return Some((k.mac, Tags::dot1q(k.vlan)));
        }
        match vlans {
            VlanMode::Kernel => Some((k.mac, Tags::NONE)),
            VlanMode::Untag => k.tags.map(|t| (k.mac, t)),
        }
    }

    /// The next hop towards `ip`: cached, or asked of `route` (within
    /// `need`'s budget) and cached.
    fn next_hop(
        &mut self,
        ip: IpAddr,
        now: Instant,
        route: &mut impl FnMut(IpAddr) -> Option<NextHop>,
        need: Need,
    ) -> Option<Hop> {
        let (k, family) = crate::addr_map::key(ip);
        let i = self.slot(k);
        let h = self.hops[i];
        if h.family == family && h.key == k {
            return Some(h);
        }
        if !self.spend(now, false, need) {
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

    /// Takes one resolution request (`ask`) or route query from this
    /// second's budget of `need`.
    fn spend(&mut self, now: Instant, ask: bool, need: Need) -> bool {
        let (start, asks, routes) = &mut self.budget[need as usize];
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
    fn ask(&mut self, ip: IpAddr, now: Instant, need: Need) {
        let k = key(ip);
        let i = self.slot(k);
        let (asked, at) = self.asked[i];
        if asked == k && at.is_some_and(|t| now.saturating_duration_since(t) < ASK_EVERY) {
            return;
        }
        if self.pending.iter().all(Option::is_some) {
            return;
        }
        if !self.spend(now, true, need) {
            return;
        }
        self.asked[i] = (k, Some(now));
        if let Some(free) = self.pending.iter_mut().find(|p| p.is_none()) {
            *free = Some(ip);
        }
    }

    /// The addresses to ask the kernel to resolve (on the LAN interface),
    /// emptying the queue.
    pub(crate) fn take_resolutions(&mut self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pending.iter_mut().filter_map(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAN: u32 = 3;
    const A: [u8; 6] = [2, 0, 0, 0, 0, 10];
    const ROUTER: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
    const EVIL: [u8; 6] = [2, 0, 0, 0, 0, 0x66];
    const U: VlanMode = VlanMode::Untag;
    const K: VlanMode = VlanMode::Kernel;

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
        n.observe(a, EVIL, Tags::NONE, U, now, &mut route);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [a]);
        assert_eq!(n.lookup(a, U, now, &mut route), None);
        assert_eq!(n.take_resolutions().count(), 0, "asked a moment ago");
        // The kernel's answer is what counts; more spoofed frames change
        // nothing. Untag mode: no tags known yet, no reply (never
        // untagged to the native VLAN); kernel mode: untagged.
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.observe(a, EVIL, Tags::dot1q(20), U, now, &mut route);
        assert_eq!(n.lookup(a, U, now, &mut route), None);
        assert_eq!(n.lookup(a, K, now, &mut route), Some((A, Tags::NONE)));
        // The real host's frames teach its VLAN (untag mode).
        n.observe(a, A, Tags::dot1q(10), U, now, &mut route);
        assert_eq!(n.lookup(a, U, now, &mut route), Some((A, Tags::dot1q(10))));
        // A refreshed kernel entry (same MAC) keeps them.
        n.apply(neigh("192.0.2.10", Some(A), 0x08, false));
        assert_eq!(n.lookup(a, U, now, &mut route), Some((A, Tags::dot1q(10))));
        // Stale is still usable; failed or gone is not.
        n.apply(neigh("192.0.2.10", Some(A), 0x04, false));
        assert!(n.lookup(a, U, now, &mut route).is_some());
        n.apply(neigh("192.0.2.10", None, 0x20, false));
        assert_eq!(n.lookup(a, U, now, &mut route), None);
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.apply(neigh("192.0.2.10", Some(A), 0x02, true));
        assert_eq!(n.lookup(a, U, now + ASK_EVERY, &mut route), None);
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
        n.observe(host, ROUTER, Tags::dot1q(30), U, now, &mut counted);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [router]);
        n.apply(neigh("192.0.2.254", Some(ROUTER), 0x02, false));
        n.observe(host, ROUTER, Tags::dot1q(30), U, now, &mut counted);
        assert_eq!(
            n.lookup(host, U, now, &mut counted),
            Some((ROUTER, Tags::dot1q(30)))
        );
        assert_eq!(queries.get(), 1, "one route query, then the cache");
        // A route change empties the cache.
        n.apply(NeighEvent::Route);
        assert!(n.lookup(host, U, now, &mut counted).is_some());
        assert_eq!(queries.get(), 2);
        // Routed elsewhere than the LAN: nothing, and nothing asked.
        assert_eq!(
            n.lookup("203.0.113.5".parse().unwrap(), U, now, &mut route),
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
            n.observe(ip, EVIL, Tags::NONE, U, now, &mut route);
            asked += n.take_resolutions().count();
        }
        assert_eq!(asked, PER_SECOND as usize, "at most the budget per second");
        let later = now + ASK_EVERY;
        n.observe(
            "192.0.2.77".parse().unwrap(),
            EVIL,
            Tags::NONE,
            U,
            later,
            &mut route,
        );
        assert_eq!(n.take_resolutions().count(), 1, "a new second");
    }

    /// Review finding (issue 14): the tags learnt from frames lived in a
    /// direct-mapped table indexed by an unkeyed hash of the MAC, and a
    /// host without an entry there got its replies untagged. A LAN host
    /// that picks a MAC colliding with a VLAN host's (and has the kernel
    /// learn it, by resolving the gateway) evicted the VLAN host's tags:
    /// that host's tunnel replies then left untagged, for the native
    /// VLAN. Each kernel entry keeps its own tags now.
    #[test]
    fn a_colliding_mac_does_not_take_a_vlan_hosts_tags() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        // The slot the old table gave a MAC (64 slots here).
        let old_slot = |m: Mac| {
            let mut k = [0u8; 16];
            k[..6].copy_from_slice(&m);
            (crate::addr_map::hash(u128::from_be_bytes(k)) >> 32) as usize & 63
        };
        let evil = (0..=u16::MAX)
            .map(|i| [2, 0, 0, 0x66, (i >> 8) as u8, i as u8])
            .find(|&m| m != A && old_slot(m) == old_slot(A))
            .expect("a colliding MAC");
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.66".parse().unwrap();
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        n.apply(neigh("192.0.2.66", Some(evil), 0x02, false));
        n.observe(a, A, Tags::dot1q(10), U, now, &mut route);
        n.observe(b, evil, Tags::NONE, U, now, &mut route);
        assert_eq!(
            n.lookup(a, U, now, &mut route),
            Some((A, Tags::dot1q(10))),
            "the VLAN host's replies keep their tag"
        );
        assert_eq!(n.lookup(b, U, now, &mut route), Some((evil, Tags::NONE)));
    }

    /// Review finding (issue 14): resolution requests and route queries
    /// shared one budget a second between the LAN's frames and the
    /// tunnel's replies. Frames from made-up source addresses (a few
    /// hundred a second) used it up at the start of every second, so a
    /// reply to a host behind a LAN router (a route query) or to a host
    /// the kernel forgot (a resolution) never got one: dropped for as
    /// long as the flood went on. Replies have a budget of their own.
    #[test]
    fn made_up_sources_do_not_use_up_the_replies_budget() {
        let now = Instant::now();
        let mut n = Neighbors::new(1 << 12, Source::Kernel(LAN));
        for i in 0..2000u32 {
            let ip = IpAddr::from([192, 0, (i >> 8) as u8 | 0x80, i as u8]);
            n.observe(ip, EVIL, Tags::NONE, U, now, &mut route);
            let _ = n.take_resolutions().count();
        }
        // A reply to a host behind the LAN router: its route is asked,
        // and the router (not known yet) is resolved.
        let queries = std::cell::Cell::new(0);
        let mut counted = |ip| {
            queries.set(queries.get() + 1);
            route(ip)
        };
        let host: IpAddr = "198.18.50.7".parse().unwrap();
        assert_eq!(n.lookup(host, U, now, &mut counted), None);
        assert_eq!(queries.get(), 1, "the reply's route was asked");
        let router: IpAddr = "192.0.2.254".parse().unwrap();
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [router]);
        // A reply to an on-link host the kernel forgot: resolved.
        let gone: IpAddr = "192.0.2.200".parse().unwrap();
        assert_eq!(n.lookup(gone, U, now, &mut route), None);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [gone]);
    }

    /// Kernel mode: the LAN interface's entries are untagged, whatever
    /// tags the frames that match them come with (another VLAN's host
    /// claiming a host's MAC and address cannot move its replies).
    #[test]
    fn kernel_mode_frames_teach_no_vlan() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        for tags in [Tags::dot1q(20), Tags::dot1q(0), Tags::NONE] {
            n.observe(a, A, tags, K, now, &mut route);
            assert_eq!(n.lookup(a, K, now, &mut route), Some((A, Tags::NONE)));
        }
        // Nor does kernel mode's learning leak into untag mode's.
        assert_eq!(n.lookup(a, U, now, &mut route), None);
    }

    /// Untag mode: the tags are the kernel entry's, learnt from its MAC's
    /// frames only; a refresh of the same MAC keeps them, another MAC for
    /// the address (a new host, or a spoofed ARP the kernel believed)
    /// starts without, and its replies wait for its own frames.
    #[test]
    fn untag_mode_tags_belong_to_the_kernels_entry() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Kernel(LAN));
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        // No entry yet: a frame teaches nothing (it asks for one).
        n.observe(a, A, Tags::dot1q(10), U, now, &mut route);
        assert_eq!(n.take_resolutions().collect::<Vec<_>>(), [a]);
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        assert_eq!(n.lookup(a, U, now, &mut route), None, "tags unknown");
        // Another MAC's frames teach nothing; the entry's MAC's do.
        n.observe(a, EVIL, Tags::dot1q(20), U, now, &mut route);
        assert_eq!(n.lookup(a, U, now, &mut route), None);
        n.observe(a, A, Tags::dot1q(10), U, now, &mut route);
        assert_eq!(n.lookup(a, U, now, &mut route), Some((A, Tags::dot1q(10))));
        // Refreshed (reachable, stale, delay): kept.
        for state in [0x02, 0x04, 0x08] {
            n.apply(neigh("192.0.2.10", Some(A), state, false));
            assert_eq!(n.lookup(a, U, now, &mut route), Some((A, Tags::dot1q(10))));
        }
        // The kernel now has another MAC for the address: the old tags
        // are not its, nothing is sent until its own frames come.
        n.apply(neigh("192.0.2.10", Some(EVIL), 0x02, false));
        assert_eq!(n.lookup(a, U, now, &mut route), None);
        n.observe(a, EVIL, Tags::dot1q(20), U, now, &mut route);
        assert_eq!(
            n.lookup(a, U, now, &mut route),
            Some((EVIL, Tags::dot1q(20)))
        );
        // Back to the first MAC: its tags are learnt again, not remembered.
        n.apply(neigh("192.0.2.10", Some(A), 0x02, false));
        assert_eq!(n.lookup(a, U, now, &mut route), None);
        // The same MAC moving to a VLAN device takes the device's VLAN.
        n.observe(a, A, Tags::dot1q(10), U, now, &mut route);
        n.apply(NeighEvent::Link {
            ifindex: 9,
            parent: LAN,
            vlan: Some(30),
            gone: false,
        });
        n.apply(NeighEvent::Neigh {
            ifindex: 9,
            addr: a,
            mac: Some(A),
            state: 0x02,
            gone: false,
        });
        assert_eq!(n.lookup(a, U, now, &mut route), Some((A, Tags::dot1q(30))));
        assert_eq!(n.lookup(a, K, now, &mut route), Some((A, Tags::dot1q(30))));
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
            n.lookup("198.18.10.5".parse().unwrap(), U, now, &mut on_vlan),
            Some((A, Tags::dot1q(10)))
        );
        assert_eq!(
            n.lookup("198.18.30.5".parse().unwrap(), U, now, &mut on_vlan),
            None
        );
    }

    #[test]
    fn the_endpoint_veth_learns_from_frames() {
        let now = Instant::now();
        let mut n = Neighbors::new(64, Source::Frames);
        let a: IpAddr = "198.18.3.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1::10".parse().unwrap();
        n.observe(a, A, Tags::NONE, U, now, &mut route);
        n.observe(b, [2, 0, 0, 0, 0, 11], Tags::NONE, U, now, &mut route);
        assert_eq!(n.lookup(a, U, now, &mut route), Some((A, Tags::NONE)));
        assert_eq!(
            n.lookup(b, U, now, &mut route),
            Some(([2, 0, 0, 0, 0, 11], Tags::NONE))
        );
        assert_eq!(n.lookup("::".parse().unwrap(), U, now, &mut route), None);
        assert_eq!(n.take_resolutions().count(), 0);
    }
}
