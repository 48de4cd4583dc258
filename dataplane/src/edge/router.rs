//! The edge's per-packet decisions, sans I/O: whether a packet from a
//! tunnel may enter the kernel, and which tunnel a reply goes back into.
//!
//! One longest-prefix table maps every address to its owner: the gateway
//! whose `[[edge.gateway]]` prefixes hold it, or "reserved" (link-local,
//! metadata, `edge.management`). A packet from a gateway's tunnel passes
//! only if its source belongs to that gateway (else `spoofed`) and its
//! destination to nobody (a gateway's LAN: `to_gateway`; reserved:
//! `reserved`). Its source is then learnt as a reply route to that tunnel.
//!
//! Reply routes are a keyed hash map ([`AddrMap`]) from inner address to
//! tunnel; a route is only ever learnt from a packet that passed the
//! source check, so it always points into a tunnel of the gateway that
//! owns the address (never to another gateway's, whoever sends from it).
//! Each gateway may hold `max_routes` of them (its quota: one gateway
//! cannot fill the table for the others; the table is sized to the sum).
//! A route names its tunnel by slot and generation: when the tunnel goes,
//! lookups see the generation differ at once, and a sweep in bounded
//! slices ([`Router::sweep`]) gives the entries and the quota back. Every
//! operation is a table lookup or two: no allocation, no scan per packet.
use std::net::IpAddr;

use crate::{
    addr_map::AddrMap,
    config::EdgeGateway,
    lpm::{Lpm, LpmError},
    net::Prefix,
    wire::ip,
};

/// A gateway's index in the configuration.
pub type GatewayId = u16;

/// A tunnel, as routes name it: its connection slot, the generation of
/// the connection in that slot (slots are reused), and its gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelRef {
    /// The connection slot.
    pub slot: u32,
    /// The connection's generation (unique per accepted connection).
    pub generation: u32,
    /// The gateway it authenticated as.
    pub gateway: GatewayId,
}

/// Who an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Gateway(GatewayId),
    Reserved,
}

/// Why a packet from a tunnel does not enter the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not an IP packet.
    Malformed,
    /// Its source is not one of the sending gateway's addresses.
    Spoofed,
    /// Its destination is a gateway's LAN (another branch, or a hairpin
    /// back to its own): branches never reach each other through the edge.
    ToGateway,
    /// Its destination is reserved (link-local, metadata, management).
    Reserved,
}

/// What learning a packet's source did to the reply routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learnt {
    /// The route was there already.
    Known,
    /// A new route.
    New,
    /// The address's route now points into this tunnel (another tunnel of
    /// the same gateway carried it before, or one that is gone).
    Moved,
    /// Not learnt: the gateway holds its `max_routes` already.
    OverQuota,
}

#[derive(Clone, Copy, Debug)]
struct Quota {
    max: u32,
    used: u32,
}

/// The table and the reply routes.
#[derive(Debug)]
pub struct Router {
    table: Lpm<Owner>,
    quotas: Vec<Quota>,
    routes: AddrMap<TunnelRef>,
    cursor: usize,
    /// Slots still to visit before every route of a gone tunnel is found.
    sweep_left: usize,
}

impl Router {
    /// A router for `gateways` (index = [`GatewayId`]) and the `reserved`
    /// destinations. The configuration checks that no two of them overlap.
    ///
    /// # Errors
    /// The table's capacity limits.
    pub fn new(gateways: &[EdgeGateway], reserved: &[Prefix]) -> Result<Self, LpmError> {
        let mut entries: Vec<(Prefix, Owner)> =
            reserved.iter().map(|p| (*p, Owner::Reserved)).collect();
        for (i, g) in gateways.iter().enumerate() {
            let id = GatewayId::try_from(i).map_err(|_| LpmError::TooManyValues {
                max: crate::lpm::MAX_VALUES,
            })?;
            entries.extend(g.prefixes.iter().map(|p| (*p, Owner::Gateway(id))));
        }
        let capacity: usize = gateways.iter().map(|g| g.max_routes as usize).sum();
        Ok(Self {
            table: Lpm::build(&entries)?,
            quotas: gateways
                .iter()
                .map(|g| Quota {
                    max: g.max_routes,
                    used: 0,
                })
                .collect(),
            routes: AddrMap::new(capacity),
            cursor: 0,
            sweep_left: 0,
        })
    }

    /// The gateway that owns `ip`, if any.
    pub fn owner(&self, ip: IpAddr) -> Option<GatewayId> {
        match self.table.lookup(ip) {
            Some(Owner::Gateway(g)) => Some(g),
            _ => None,
        }
    }

    /// Checks a packet that arrived through tunnel `t` and, if it may enter
    /// the kernel, learns its source as a reply route to `t`.
    ///
    /// # Errors
    /// Why it may not ([`Refused`]); nothing is learnt then.
    pub fn inbound(&mut self, t: TunnelRef, pkt: &[u8]) -> Result<Learnt, Refused> {
        let p = ip::Packet::new_checked(pkt).map_err(|_| Refused::Malformed)?;
        self.inbound_addrs(t, p.src(), p.dst())
    }

    /// [`Router::inbound`] for a packet already parsed.
    ///
    /// # Errors
    /// Why it may not enter ([`Refused`]).
    #[inline]
    pub fn inbound_addrs(
        &mut self,
        t: TunnelRef,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Learnt, Refused> {
        if self.table.lookup(src) != Some(Owner::Gateway(t.gateway)) {
            return Err(Refused::Spoofed);
        }
        match self.table.lookup(dst) {
            Some(Owner::Gateway(_)) => return Err(Refused::ToGateway),
            Some(Owner::Reserved) => return Err(Refused::Reserved),
            None => {}
        }
        Ok(self.learn(t, src))
    }

    /// Points `src`'s reply route at `t` (`src` belongs to `t`'s gateway).
    #[inline]
    fn learn(&mut self, t: TunnelRef, src: IpAddr) -> Learnt {
        if let Some(r) = self.routes.get_mut(src) {
            if *r == t {
                return Learnt::Known;
            }
            let old = std::mem::replace(r, t);
            if old.gateway != t.gateway {
                // Not reachable while ownership is fixed; keep the books
                // straight anyway.
                self.release(old.gateway);
                self.charge(t.gateway);
            }
            return Learnt::Moved;
        }
        let Some(q) = self.quotas.get_mut(usize::from(t.gateway)) else {
            return Learnt::OverQuota;
        };
        if q.used >= q.max {
            return Learnt::OverQuota;
        }
        // The table holds the sum of the quotas: room is guaranteed.
        match self.routes.insert(src, t) {
            Ok(_) => {
                q.used += 1;
                Learnt::New
            }
            Err(_) => Learnt::OverQuota,
        }
    }

    fn charge(&mut self, g: GatewayId) {
        if let Some(q) = self.quotas.get_mut(usize::from(g)) {
            q.used += 1;
        }
    }

    fn release(&mut self, g: GatewayId) {
        if let Some(q) = self.quotas.get_mut(usize::from(g)) {
            q.used = q.used.saturating_sub(1);
        }
    }

    /// The tunnel replies to `dst` go into, if one was learnt. The caller
    /// checks that the tunnel is still the one in that slot
    /// ([`TunnelRef::generation`]).
    #[inline]
    pub fn outbound(&self, dst: IpAddr) -> Option<TunnelRef> {
        self.routes.get(dst)
    }

    /// A tunnel that had routes is gone: a sweep will give them back.
    pub fn tunnel_closed(&mut self) {
        self.sweep_left = self.routes.slots();
    }

    /// Whether a sweep is under way.
    pub fn sweep_due(&self) -> bool {
        self.sweep_left > 0
    }

    /// Visits up to `budget` slots of the route table, removing routes
    /// into tunnels `alive` says are gone; returns how many it removed.
    pub fn sweep(&mut self, budget: usize, alive: impl Fn(TunnelRef) -> bool) -> usize {
        if self.sweep_left == 0 {
            return 0;
        }
        let quotas = &mut self.quotas;
        let s = self.routes.sweep(self.cursor, budget, |r| {
            let keep = alive(*r);
            if !keep && let Some(q) = quotas.get_mut(usize::from(r.gateway)) {
                q.used = q.used.saturating_sub(1);
            }
            keep
        });
        self.cursor = s.cursor;
        self.sweep_left = self.sweep_left.saturating_sub(s.passed);
        s.removed
    }

    /// Reply routes held.
    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// Reply routes held by gateway `g` (live or not yet swept).
    pub fn gateway_routes(&self, g: GatewayId) -> u32 {
        self.quotas.get(usize::from(g)).map_or(0, |q| q.used)
    }

    /// Forgets every route (for the fuzz targets: the table is costly to
    /// build, the routes are not).
    pub fn clear_routes(&mut self) {
        let quotas = &mut self.quotas;
        let slots = self.routes.slots();
        let _ = self.routes.sweep(0, 2 * slots, |_| false);
        for q in quotas.iter_mut() {
            q.used = 0;
        }
        self.cursor = 0;
        self.sweep_left = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(name: &str, prefixes: &[&str], max_routes: u32) -> EdgeGateway {
        EdgeGateway {
            name: name.into(),
            spki_sha256: None,
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            max_tunnels: 8,
            max_routes,
        }
    }

    fn router() -> Router {
        let reserved: Vec<Prefix> = crate::config::RESERVED_DESTINATIONS
            .iter()
            .chain(&["198.51.100.0/24"])
            .map(|p| p.parse().unwrap())
            .collect();
        Router::new(
            &[
                gw("branch-1", &["192.0.2.0/24", "2001:db8:1::/64"], 64),
                gw("branch-2", &["198.18.2.0/24", "2001:db8:12::/64"], 16),
            ],
            &reserved,
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const T1: TunnelRef = TunnelRef {
        slot: 3,
        generation: 10,
        gateway: 0,
    };
    const T1B: TunnelRef = TunnelRef {
        slot: 4,
        generation: 11,
        gateway: 0,
    };
    const T2: TunnelRef = TunnelRef {
        slot: 5,
        generation: 12,
        gateway: 1,
    };

    /// The measured symptom of issue 14: the second gateway sending from
    /// the first one's LAN took its replies. Now it is refused and the
    /// first gateway's route stays.
    #[test]
    fn a_gateway_cannot_send_from_or_take_anothers_addresses() {
        let mut r = router();
        let server = ip("203.0.113.10");
        let client = ip("192.0.2.10");
        assert_eq!(r.inbound_addrs(T1, client, server), Ok(Learnt::New));
        assert_eq!(r.inbound_addrs(T1, client, server), Ok(Learnt::Known));
        assert_eq!(r.inbound_addrs(T2, client, server), Err(Refused::Spoofed));
        assert_eq!(
            r.outbound(client),
            Some(T1),
            "the reply stays with branch 1"
        );
        let client6 = ip("2001:db8:1::10");
        assert_eq!(
            r.inbound_addrs(T2, client6, ip("2001:db8:100::10")),
            Err(Refused::Spoofed)
        );
        assert_eq!(r.outbound(client6), None);
        // Outside every gateway: spoofed too.
        assert_eq!(
            r.inbound_addrs(T1, ip("203.0.113.7"), server),
            Err(Refused::Spoofed)
        );
        // Another tunnel of the same gateway may take the route over.
        assert_eq!(r.inbound_addrs(T1B, client, server), Ok(Learnt::Moved));
        assert_eq!(r.outbound(client), Some(T1B));
    }

    #[test]
    fn tunnels_reach_neither_branches_nor_reserved_destinations() {
        let mut r = router();
        let me = ip("198.18.2.10");
        for (dst, why) in [
            ("192.0.2.10", Refused::ToGateway),
            ("198.18.2.11", Refused::ToGateway),
            ("2001:db8:1::10", Refused::ToGateway),
            ("169.254.169.254", Refused::Reserved),
            ("198.51.100.5", Refused::Reserved),
            ("fe80::1", Refused::Reserved),
            ("fd00:ec2::254", Refused::Reserved),
        ] {
            let src = if dst.contains(':') {
                ip("2001:db8:12::10")
            } else {
                me
            };
            assert_eq!(r.inbound_addrs(T2, src, ip(dst)), Err(why), "{dst}");
        }
        assert_eq!(r.routes(), 0, "nothing learnt from refused packets");
        assert_eq!(r.inbound_addrs(T2, me, ip("203.0.113.10")), Ok(Learnt::New));
        assert_eq!(r.inbound(T2, &[0x45, 0, 0]), Err(Refused::Malformed));
    }

    /// One gateway's addresses fill its own quota, never the others'.
    #[test]
    fn route_quota_is_per_gateway() {
        let mut r = router();
        let dst = ip("203.0.113.10");
        let mut over = 0;
        for i in 0..=255u8 {
            match r.inbound_addrs(T2, IpAddr::from([198, 18, 2, i]), dst) {
                Ok(Learnt::New) => {}
                Ok(Learnt::OverQuota) => over += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((r.gateway_routes(1), over), (16, 240));
        for i in 0..64u8 {
            assert_eq!(
                r.inbound_addrs(T1, IpAddr::from([192, 0, 2, i]), dst),
                Ok(Learnt::New),
                "branch 1 keeps all of its quota"
            );
        }
        assert_eq!(r.gateway_routes(0), 64);
    }

    /// A gone tunnel's routes stop at once (generation) and are swept
    /// away in slices, giving the quota back.
    #[test]
    fn gone_tunnels_are_swept() {
        let mut r = router();
        let dst = ip("203.0.113.10");
        for i in 0..16u8 {
            r.inbound_addrs(T2, IpAddr::from([198, 18, 2, i]), dst)
                .unwrap();
        }
        r.inbound_addrs(T1, ip("192.0.2.10"), dst).unwrap();
        assert_eq!(r.gateway_routes(1), 16);
        r.tunnel_closed();
        let alive = |t: TunnelRef| t != T2;
        let mut removed = 0;
        while r.sweep_due() {
            removed += r.sweep(7, alive);
        }
        assert_eq!(removed, 16);
        assert_eq!((r.gateway_routes(1), r.routes()), (0, 1));
        assert_eq!(r.outbound(ip("192.0.2.10")), Some(T1));
        let t2b = TunnelRef {
            generation: 99,
            ..T2
        };
        assert_eq!(
            r.inbound_addrs(t2b, ip("198.18.2.3"), dst),
            Ok(Learnt::New),
            "quota given back"
        );
        r.clear_routes();
        assert_eq!((r.routes(), r.gateway_routes(0)), (0, 0));
    }
}
