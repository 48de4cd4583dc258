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
//! Each gateway may hold `max_routes` addresses (its quota: one gateway
//! cannot fill the table for the others; the table is sized to the sum).
//! A route names its tunnel by slot and generation: when the tunnel goes,
//! lookups see the generation differ at once, and a sweep in bounded
//! slices ([`Router::sweep`]) gives the entries and the quota back. Every
//! operation is a table lookup or two: no allocation, no scan per packet.
//!
//! With several workers ([`Router::sibling`]) each worker's router holds
//! the routes into its own tunnels; the ownership table is shared
//! (read-only) and so are the books of which worker holds which address
//! ([`super::directory`]): the quota counts each address once for the
//! whole edge, and a reply that reaches a worker without a route learns
//! which worker has one ([`Router::elsewhere`]). Only an address new to a
//! worker takes the books' lock; packets of known sources and replies to
//! them read this worker's own map.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use super::{
    EdgeGateway,
    directory::{Claim, Directory, WorkerId},
};
use crate::{
    addr_map::AddrMap,
    lpm::{Advise, Lpm, LpmError},
    net::Prefix,
    wire::{ip, ipv4, ipv6},
};

/// ICMP's protocol number.
const PROTO_ICMP: u8 = 1;
/// `ICMPv6`'s next-header number.
const PROTO_ICMPV6: u8 = 58;

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
pub(super) enum Owner {
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

/// The ownership table, shared by the workers' routers.
pub(super) type Table = Arc<Lpm<Owner>>;

/// The table and the reply routes.
#[derive(Debug)]
pub struct Router {
    table: Table,
    /// Which worker holds which address, and the quotas.
    directory: Arc<Directory>,
    worker: WorkerId,
    /// This worker's routes.
    routes: AddrMap<TunnelRef>,
    cursor: usize,
    /// Slots still to visit before every route of a gone tunnel is found.
    sweep_left: usize,
}

/// Why a [`Router`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// Two owners (two gateways, or a gateway and a reserved destination)
    /// claim overlapping prefixes: an address would belong to both.
    #[error("{prefix} overlaps {other}: each address belongs to one gateway")]
    Overlap {
        /// A prefix of a gateway.
        prefix: Prefix,
        /// The prefix it overlaps (another gateway's or reserved).
        other: Prefix,
    },
    /// The table's capacity limits.
    #[error(transparent)]
    Table(#[from] LpmError),
}

impl Router {
    /// A router for `gateways` (index = [`GatewayId`]) and the `reserved`
    /// destinations, its table's memory advised with `advise`.
    ///
    /// # Errors
    /// [`RouterError::Overlap`] if two of them overlap (the configuration
    /// refuses that with file and line first; this is the router's own
    /// guard for every other producer), or the table's capacity limits.
    pub fn new(
        gateways: &[EdgeGateway],
        reserved: &[Prefix],
        advise: &impl Advise,
    ) -> Result<Self, RouterError> {
        let table = build_table(gateways, reserved, advise)?;
        let quotas: Vec<u32> = gateways.iter().map(|g| g.max_routes).collect();
        Ok(Self::from_parts(
            table,
            Arc::new(Directory::new(&quotas)),
            0,
        ))
    }

    /// Worker `worker`'s router over a shared ownership table and
    /// directory, with no routes yet.
    pub(super) fn from_parts(table: Table, directory: Arc<Directory>, worker: WorkerId) -> Self {
        Self {
            routes: AddrMap::new(directory.capacity()),
            table,
            directory,
            worker,
            cursor: 0,
            sweep_left: 0,
        }
    }

    /// A router for worker `worker` sharing this one's ownership table and
    /// route books (its own routes start empty).
    #[must_use]
    pub fn sibling(&self, worker: WorkerId) -> Self {
        Self::from_parts(self.table.clone(), self.directory.clone(), worker)
    }

    /// The shared route books.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }
}

/// The ownership table of `gateways` and `reserved` (see [`Router::new`]).
pub(super) fn build_table(
    gateways: &[EdgeGateway],
    reserved: &[Prefix],
    advise: &impl Advise,
) -> Result<Table, RouterError> {
    let mut entries: Vec<(Prefix, Owner)> =
        reserved.iter().map(|p| (*p, Owner::Reserved)).collect();
    for (i, g) in gateways.iter().enumerate() {
        let id = GatewayId::try_from(i).map_err(|_| LpmError::TooManyValues {
            max: crate::lpm::MAX_VALUES,
        })?;
        entries.extend(g.prefixes.iter().map(|p| (*p, Owner::Gateway(id))));
    }
    // Quadratic, once at start: gateways hold a handful of prefixes.
    for (k, (a, owner_a)) in entries.iter().enumerate() {
        for (b, owner_b) in &entries[k + 1..] {
            let overlap = a.contains(b.addr()) || b.contains(a.addr());
            if overlap && owner_a != owner_b {
                let (prefix, other) = if matches!(owner_a, Owner::Reserved) {
                    (*b, *a)
                } else {
                    (*a, *b)
                };
                return Err(RouterError::Overlap { prefix, other });
            }
        }
    }
    Ok(Arc::new(Lpm::build_with(&entries, advise)?))
}

impl Router {
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
        let src = p.src();
        self.check_addrs(t, src, p.dst())?;
        // conntrack makes an ICMP error `related` to the connection of
        // the packet it quotes, whoever sends it: only errors about
        // packets that went to this gateway's own addresses pass.
        match icmp_error_quote(&p) {
            Ok(None) => {}
            Ok(Some(quoted)) if self.table.lookup(quoted) == Some(Owner::Gateway(t.gateway)) => {}
            Ok(Some(_)) => return Err(Refused::Spoofed),
            Err(Unreadable) => return Err(Refused::Malformed),
        }
        Ok(self.learn(t, src))
    }

    /// [`Router::inbound`] with the addresses alone (for tests: the ICMP
    /// check needs the packet).
    #[cfg(test)]
    fn inbound_addrs(&mut self, t: TunnelRef, src: IpAddr, dst: IpAddr) -> Result<Learnt, Refused> {
        self.check_addrs(t, src, dst)?;
        Ok(self.learn(t, src))
    }

    /// The source must be `t`'s gateway's, the destination nobody's (nor,
    /// for an IPv6 address that carries an IPv4 one, that IPv4 address).
    #[inline]
    fn check_addrs(&self, t: TunnelRef, src: IpAddr, dst: IpAddr) -> Result<(), Refused> {
        if self.table.lookup(src) != Some(Owner::Gateway(t.gateway)) {
            return Err(Refused::Spoofed);
        }
        let embedded = match dst {
            IpAddr::V6(a) => embedded_v4(a).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for d in std::iter::once(dst).chain(embedded) {
            match self.table.lookup(d) {
                Some(Owner::Gateway(_)) => return Err(Refused::ToGateway),
                Some(Owner::Reserved) => return Err(Refused::Reserved),
                None => {}
            }
        }
        Ok(())
    }

    /// Points `src`'s reply route at `t` (`src` belongs to `t`'s gateway).
    #[inline]
    fn learn(&mut self, t: TunnelRef, src: IpAddr) -> Learnt {
        if let Some(r) = self.routes.get_mut(src) {
            if *r == t {
                return Learnt::Known;
            }
            // Another tunnel of this worker carried it (of the same
            // gateway: ownership is fixed, and so are the books).
            *r = t;
            return Learnt::Moved;
        }
        self.learn_new(t, src)
    }

    /// An address this worker holds no route to: booked in the shared
    /// directory first (its quota is the edge's), then learnt here.
    #[cold]
    fn learn_new(&mut self, t: TunnelRef, src: IpAddr) -> Learnt {
        let d = &self.directory;
        // A gateway at its quota sending from one new address after
        // another must not take the books' lock for each packet: unless
        // another worker holds the address already (joining it is free),
        // refuse at once.
        if d.full(t.gateway) && d.holders(src) == 0 {
            return Learnt::OverQuota;
        }
        match d.claim(src, t.gateway, self.worker) {
            Claim::OverQuota => Learnt::OverQuota,
            // The local table holds the sum of the quotas, and each of its
            // addresses is booked: room is guaranteed.
            Claim::New | Claim::Joined => {
                if self.routes.insert(src, t).is_ok() {
                    Learnt::New
                } else {
                    d.release(src, self.worker);
                    Learnt::OverQuota
                }
            }
        }
    }

    /// The tunnel replies to `dst` go into, if one was learnt. The caller
    /// checks that the tunnel is still the one in that slot
    /// ([`TunnelRef::generation`]).
    #[inline]
    pub fn outbound(&self, dst: IpAddr) -> Option<TunnelRef> {
        self.routes.get(dst)
    }

    /// Another worker holding a route to `dst`, if any (the lowest
    /// numbered: a flow's replies keep going to the same one). Lock-free.
    #[inline]
    pub fn elsewhere(&self, dst: IpAddr) -> Option<WorkerId> {
        let others = self.directory.holders(dst) & !super::directory::bit(self.worker);
        (others != 0).then(|| others.trailing_zeros() as WorkerId)
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
        let mut books = self.directory.lock();
        let w = self.worker;
        let s = self.routes.sweep_with_key(self.cursor, budget, |ip, r| {
            let keep = alive(*r);
            if !keep {
                books.release(ip, w);
            }
            keep
        });
        self.cursor = s.cursor;
        self.sweep_left = self.sweep_left.saturating_sub(s.passed);
        s.removed
    }

    /// Addresses replies are routed to, by any worker (each once).
    pub fn routes(&self) -> usize {
        self.directory.len()
    }

    /// Routes this worker holds.
    pub fn local_routes(&self) -> usize {
        self.routes.len()
    }

    /// Addresses of gateway `g` replies are routed to (live or not yet
    /// swept), by any worker: what counts against its `max_routes`.
    pub fn gateway_routes(&self, g: GatewayId) -> u32 {
        self.directory.gateway_routes(g)
    }

    /// Forgets every route of this worker (for the fuzz targets: the table
    /// is costly to build, the routes are not).
    pub fn clear_routes(&mut self) {
        let slots = self.routes.slots();
        let mut books = self.directory.lock();
        let w = self.worker;
        let _ = self.routes.sweep_with_key(0, 2 * slots, |ip, _| {
            books.release(ip, w);
            false
        });
        self.cursor = 0;
        self.sweep_left = 0;
    }
}

/// The IPv4 address an IPv6 destination reaches through a translator or
/// relay of the edge's network, if it is of a form that carries one:
/// IPv4-mapped (`::ffff:0:0/96`) and -compatible (`::/96`), NAT64's
/// well-known prefix (`64:ff9b::/96`, RFC 6052), 6to4 (`2002::/16`) and
/// Teredo (`2001::/32`, the client's address inverted in the last 32
/// bits). Network-specific NAT64 prefixes are the operator's to list in
/// `edge.management` (see [`v4_embeddings`]).
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(a);
    // Truncations are the point: each form keeps the IPv4 address in
    // fixed bits.
    #[allow(clippy::cast_possible_truncation)]
    let low = Ipv4Addr::from(bits as u32);
    match a.segments() {
        [0, 0, 0, 0, 0, 0 | 0xffff, ..] | [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        [0x2002, ..] =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Some(Ipv4Addr::from((bits >> 80) as u32))
        }
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!(bits as u32))),
        _ => None,
    }
}

/// The IPv6 prefixes whose addresses [`embedded_v4`] maps into the IPv4
/// prefix `p` (none for an IPv6 prefix; Teredo's inverted form is no
/// prefix): the nftables filter refuses these beside `p` itself.
pub fn v4_embeddings(p: Prefix) -> Vec<Prefix> {
    let IpAddr::V4(a) = p.addr() else {
        return Vec::new();
    };
    let v4 = u128::from(u32::from(a));
    [
        (0u128, 96u8),
        (0xffff << 32, 96),
        (0x0064_ff9b << 96, 96),
        (v4 << 80 | 0x2002 << 112, 16),
    ]
    .into_iter()
    .map(|(base, at)| {
        let addr = if at == 16 { base } else { base | v4 };
        Prefix::new(IpAddr::V6(Ipv6Addr::from(addr)), at + p.len())
    })
    .collect()
}

/// An ICMP or `ICMPv6` error that cannot be judged: its quote is cut short,
/// or it is fragmented (another fragment could complete the quote).
struct Unreadable;

/// The destination of the packet an ICMP or `ICMPv6` error quotes; `None`
/// for any other packet, including non-first fragments (the kernel
/// completes those only with their first fragment, which is judged). IPv6
/// extension headers are skipped as the kernel's conntrack skips them.
fn icmp_error_quote(p: &ip::Packet<'_>) -> Result<Option<IpAddr>, Unreadable> {
    let (v6, body) = if let Some(v6) = p.ipv6() {
        (true, icmpv6_error(&v6)?)
    } else if let Some(v4) = p.ipv4() {
        (false, icmpv4_error(&v4)?)
    } else {
        return Ok(None);
    };
    let Some(body) = body else {
        return Ok(None);
    };
    // The quote follows the ICMP header's 8 bytes. It is cut short by
    // design (its header and 8 bytes of its payload): only its fixed
    // header is read, after checking that the buffer holds it.
    let quote = body.get(8..).ok_or(Unreadable)?;
    match (v6, ip::version(quote)) {
        (false, Some(4)) if quote.len() >= ipv4::HEADER_LEN => Ok(Some(IpAddr::V4(
            ipv4::Packet::new_unchecked(quote).dst_addr(),
        ))),
        (true, Some(6)) if quote.len() >= ipv6::HEADER_LEN => Ok(Some(IpAddr::V6(
            ipv6::Packet::new_unchecked(quote).dst_addr(),
        ))),
        _ => Err(Unreadable),
    }
}

/// The ICMP message of an IPv4 packet if it is an error (destination
/// unreachable, source quench, redirect, time exceeded, parameter
/// problem); unreadable if it is a first fragment (another fragment could
/// complete the quote).
fn icmpv4_error<'a>(p: &ipv4::Packet<&'a [u8]>) -> Result<Option<&'a [u8]>, Unreadable> {
    if p.protocol() != PROTO_ICMP || p.frag_offset() != 0 {
        return Ok(None);
    }
    let icmp = p.payload();
    let ty = *icmp.first().ok_or(Unreadable)?;
    if !matches!(ty, 3 | 4 | 5 | 11 | 12) {
        return Ok(None);
    }
    if p.more_frags() {
        return Err(Unreadable);
    }
    Ok(Some(icmp))
}

/// The `ICMPv6` message of an IPv6 packet, after its extension headers, if
/// it is an error (types 0 to 127); unreadable if an extension header is
/// cut short or the packet is a first fragment.
fn icmpv6_error<'a>(p: &ipv6::Packet<&'a [u8]>) -> Result<Option<&'a [u8]>, Unreadable> {
    let payload = p.payload();
    let (mut next, mut off, mut fragmented) = (p.next_header(), 0usize, false);
    loop {
        let h = payload.get(off..off + 8);
        match next {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let h = h.ok_or(Unreadable)?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            // Fragment: only the first holds the upper-layer header.
            44 => {
                let h = h.ok_or(Unreadable)?;
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    return Ok(None);
                }
                (next, fragmented) = (h[0], true);
                off += 8;
            }
            // Authentication header: length in 4-byte units.
            51 => {
                let h = h.ok_or(Unreadable)?;
                next = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            PROTO_ICMPV6 => break,
            _ => return Ok(None),
        }
    }
    let icmp = payload.get(off..).unwrap_or_default();
    let ty = *icmp.first().ok_or(Unreadable)?;
    if ty >= 128 {
        return Ok(None);
    }
    if fragmented {
        return Err(Unreadable);
    }
    Ok(Some(icmp))
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

    /// The router refuses overlapping owners itself, whoever built its
    /// settings: two gateways, or a gateway and a reserved destination,
    /// in either order and either containment; a gateway's own nested
    /// prefixes are fine.
    #[test]
    fn overlapping_owners_are_refused() {
        let p = |s: &str| -> Prefix { s.parse().unwrap() };
        let reserved = [p("198.51.100.0/24")];
        let new = |gws: &[EdgeGateway]| Router::new(gws, &reserved, &crate::lpm::NoAdvice);
        let err = new(&[
            gw("a", &["192.0.2.0/24"], 4),
            gw("b", &["192.0.2.128/25"], 4),
        ])
        .err()
        .unwrap();
        assert_eq!(
            err,
            RouterError::Overlap {
                prefix: p("192.0.2.0/24"),
                other: p("192.0.2.128/25"),
            }
        );
        let err = new(&[
            gw("a", &["2001:db8::/48"], 4),
            gw("b", &["2001:db8::/32"], 4),
        ])
        .err()
        .unwrap();
        assert!(matches!(err, RouterError::Overlap { .. }), "{err}");
        let err = new(&[gw("a", &["198.51.100.64/26"], 4)]).err().unwrap();
        assert_eq!(
            err,
            RouterError::Overlap {
                prefix: p("198.51.100.64/26"),
                other: p("198.51.100.0/24"),
            }
        );
        assert!(new(&[gw("a", &["192.0.2.0/24", "192.0.2.0/26"], 4)]).is_ok());
        assert!(
            new(&[
                gw("a", &["192.0.2.0/25"], 4),
                gw("b", &["192.0.2.128/25"], 4)
            ])
            .is_ok()
        );
    }

    fn router() -> Router {
        let reserved: Vec<Prefix> = super::super::RESERVED_DESTINATIONS
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
            &crate::lpm::NoAdvice,
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

    /// An IPv4 packet `src -> dst` of protocol `proto` around `payload`,
    /// with the fragment field `frag` (flags and offset).
    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16, payload: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + payload.len()).unwrap();
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    /// An IPv6 packet `src -> dst` whose first header is `next`.
    fn v6(next: u8, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
            (src.parse().unwrap(), dst.parse().unwrap());
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(payload);
        p
    }

    /// An ICMP (or `ICMPv6`) message of type `ty` quoting `inner`.
    fn icmp(ty: u8, inner: &[u8]) -> Vec<u8> {
        let mut m = vec![ty, 3, 0, 0, 0, 0, 0x05, 0xdc];
        m.extend_from_slice(inner);
        m
    }

    /// ICMP errors quote the packet they are about, and conntrack makes an
    /// error `related` to the connection of the quoted packet, whoever
    /// sends it: from a tunnel, only errors about packets that went to
    /// that gateway's own addresses pass. Otherwise one branch (any LAN
    /// host behind it) could send port-unreachable or packet-too-big
    /// errors into another branch's connections through the edge.
    #[test]
    fn icmp_errors_quote_only_the_gateways_own_packets() {
        let mut r = router();
        let (me, server) = ([192, 0, 2, 10], [203, 0, 113, 10]);
        let udp = |src, dst| v4(17, src, dst, 0, &[0, 53, 0x13, 0x88, 0, 8, 0, 0]);
        // About a packet to branch 2's client: refused, nothing learnt.
        let theirs = v4(1, me, server, 0, &icmp(3, &udp(server, [198, 18, 2, 10])));
        assert_eq!(r.inbound(T1, &theirs), Err(Refused::Spoofed));
        assert_eq!(r.routes(), 0);
        // About a packet to its own client: fine (and so is an echo).
        let mine = v4(1, me, server, 0, &icmp(3, &udp(server, me)));
        assert_eq!(r.inbound(T1, &mine), Ok(Learnt::New));
        let echo = v4(1, me, server, 0, &[8, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(r.inbound(T1, &echo), Ok(Learnt::Known));
        for ty in [4, 5, 11, 12] {
            let e = v4(1, me, server, 0, &icmp(ty, &udp(server, [198, 18, 2, 10])));
            assert_eq!(r.inbound(T1, &e), Err(Refused::Spoofed), "type {ty}");
        }
        // An error too short to say what it is about, or fragmented (its
        // quote could be completed by another fragment): refused.
        let cut = v4(1, me, server, 0, &icmp(3, &udp(server, me)[..12]));
        assert_eq!(r.inbound(T1, &cut), Err(Refused::Malformed));
        let frag = v4(1, me, server, 0x2000, &icmp(3, &udp(server, me)));
        assert_eq!(r.inbound(T1, &frag), Err(Refused::Malformed));
        // IPv6: packet too big (2) about branch 2's client, directly and
        // behind a destination-options header; and one about its own.
        let (me6, server6) = ("2001:db8:1::10", "2001:db8:100::10");
        let udp6 = |dst: &str| v6(17, server6, dst, &[0, 53, 0x13, 0x88, 0, 8, 0, 0]);
        let theirs6 = v6(58, me6, server6, &icmp(2, &udp6("2001:db8:12::10")));
        assert_eq!(r.inbound(T1, &theirs6), Err(Refused::Spoofed));
        let mut opts = vec![58, 0, 1, 4, 0, 0, 0, 0];
        opts.extend_from_slice(&icmp(1, &udp6("2001:db8:12::10")));
        assert_eq!(
            r.inbound(T1, &v6(60, me6, server6, &opts)),
            Err(Refused::Spoofed)
        );
        let mine6 = v6(58, me6, server6, &icmp(2, &udp6(me6)));
        assert_eq!(r.inbound(T1, &mine6), Ok(Learnt::New));
        let mut frag6 = vec![58, 0, 0, 1, 0, 0, 0, 7];
        frag6.extend_from_slice(&icmp(2, &udp6(me6)));
        assert_eq!(
            r.inbound(T1, &v6(44, me6, server6, &frag6)),
            Err(Refused::Malformed)
        );
        let echo6 = v6(58, me6, server6, &[128, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(r.inbound(T1, &echo6), Ok(Learnt::Known));
    }

    /// IPv6 destinations that carry an IPv4 address (NAT64's well-known
    /// prefix, 6to4, Teredo, IPv4-mapped and -compatible) reach that IPv4
    /// address through a translator or relay of the edge's network: they
    /// are refused as that address would be.
    #[test]
    fn v6_destinations_that_embed_v4_are_judged_by_it() {
        let mut r = router();
        let me = ip("2001:db8:12::10");
        for (dst, why) in [
            ("64:ff9b::a9fe:a9fe", Refused::Reserved),
            ("64:ff9b::169.254.169.254", Refused::Reserved),
            ("::ffff:169.254.169.254", Refused::Reserved),
            ("::169.254.169.254", Refused::Reserved),
            ("2002:a9fe:a9fe::1", Refused::Reserved),
            ("2002:c633:6405:1::1", Refused::Reserved), // 198.51.100.5, management
            // Teredo: the client's address is the last 32 bits, inverted.
            ("2001:0:cb00:7101:0:fbbd:5601:5601", Refused::Reserved),
            ("64:ff9b::192.0.2.10", Refused::ToGateway),
            ("2002:c000:20a::1", Refused::ToGateway),
        ] {
            assert_eq!(r.inbound_addrs(T2, me, ip(dst)), Err(why), "{dst}");
        }
        assert_eq!(r.routes(), 0);
        for dst in [
            "64:ff9b::203.0.113.10",
            "2002:cb00:710a::1",
            "2001:db8:100::10",
        ] {
            assert_eq!(
                r.inbound_addrs(T2, me, ip(dst)).map(|_| ()),
                Ok(()),
                "{dst}"
            );
        }
    }

    /// Two workers' routers over one table and one set of books: a
    /// gateway's spoofing is refused whichever worker its tunnel is on,
    /// each worker routes replies only into its own tunnels, a reply on
    /// the wrong worker learns which worker holds the route (never one of
    /// another gateway's), and the quota counts each address once.
    #[test]
    fn workers_share_ownership_and_books() {
        let mut w0 = router();
        let mut w1 = w0.sibling(1);
        let server = ip("203.0.113.10");
        let client = ip("192.0.2.10");
        let client2 = ip("198.18.2.10");
        // Branch 1's tunnel on worker 0, branch 2's on worker 1.
        assert_eq!(w0.inbound_addrs(T1, client, server), Ok(Learnt::New));
        assert_eq!(w1.inbound_addrs(T2, client2, server), Ok(Learnt::New));
        assert_eq!(w1.inbound_addrs(T2, client, server), Err(Refused::Spoofed));
        assert_eq!((w0.outbound(client), w1.outbound(client)), (Some(T1), None));
        assert_eq!(w1.elsewhere(client), Some(0), "worker 0 holds it");
        assert_eq!(w0.elsewhere(client), None, "not elsewhere: here");
        assert_eq!(w0.elsewhere(client2), Some(1));
        assert_eq!(w0.elsewhere(ip("192.0.2.99")), None);
        // A second tunnel of branch 1 on worker 1 carries the same host:
        // both workers hold it, one address in the books.
        let t1w1 = TunnelRef {
            slot: 3,
            generation: 20,
            gateway: 0,
        };
        assert_eq!(w1.inbound_addrs(t1w1, client, server), Ok(Learnt::New));
        assert_eq!((w0.gateway_routes(0), w1.routes()), (1, 2));
        assert_eq!(w1.outbound(client), Some(t1w1));
        // Branch 2's quota (16) is the edge's: worker 0 cannot add more
        // once worker 1 has filled it.
        let t2w0 = TunnelRef {
            slot: 9,
            generation: 21,
            gateway: 1,
        };
        for i in 11..26u8 {
            assert_eq!(
                w1.inbound_addrs(T2, IpAddr::from([198, 18, 2, i]), server),
                Ok(Learnt::New)
            );
        }
        assert_eq!(w1.gateway_routes(1), 16);
        assert_eq!(
            w0.inbound_addrs(t2w0, ip("198.18.2.200"), server),
            Ok(Learnt::OverQuota)
        );
        assert_eq!(
            w0.inbound_addrs(t2w0, client2, server),
            Ok(Learnt::New),
            "joining an address already booked costs no quota"
        );
        // Worker 1's branch-2 tunnel goes: its routes are swept, the
        // addresses only it held leave the books, the one worker 0 holds
        // stays (now only there).
        w1.tunnel_closed();
        while w1.sweep_due() {
            w1.sweep(64, |t| t != T2);
        }
        assert_eq!(w1.gateway_routes(1), 1);
        assert_eq!(w1.elsewhere(client2), Some(0));
        assert_eq!(w1.elsewhere(client), Some(0), "branch 1 untouched");
        assert_eq!(w1.outbound(client), Some(t1w1));
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
