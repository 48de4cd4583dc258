//! The lab's address plan and interface names (documentation ranges only).
//!
//! ```text
//!  client                 gw                          inet                         edge
//!  eth0 ───────────── lan0    wan0 ───────────── gw0      edge0 ───────────── wan0
//!  192.0.2.10/24      192.0.2.1  198.51.100.1/30  198.51.100.2  198.51.100.6/30  198.51.100.5
//!  2001:db8:1::10/64  2001:db8:1::1  2001:db8:2::1/64  2001:db8:2::2  2001:db8:3::6/64  2001:db8:3::5
//!                                                  srv0:  203.0.113.10/32  (tunnelled)
//!                                                                203.0.113.20/32  (bypassed)
//!                                                                203.0.113.30/32  (bypassed by DNS)
//!                                                                203.0.113.53/32  (DNS server)
//!                                                                203.0.113.54/32  (forging DNS)
//!                                                                2001:db8:100::10/128, ::20/128
//! ```
//!
//! - `client` routes everything via the gateway ([`GW_LAN_V4`], [`GW_LAN_V6`]).
//! - `gw` and `edge` route everything via `inet` and forward (v4 and v6);
//!   `gw` masquerades LAN traffic leaving `wan0` (nftables table
//!   `inet sluice_lab_nat`), so bypassed traffic reaches the servers from
//!   [`GW_WAN_V4`] / [`GW_WAN_V6`].
//! - `inet` forwards between `gw` and `edge` and has NO route to the LAN
//!   ([`LAN_V4_NET`], [`LAN_V6_NET`]) nor any default route: traffic that was
//!   not translated (NAT) gets no answer. A closed world.
//! - A second branch, `client2` (198.18.2.10, `2001:db8:12::10`) behind
//!   `gw2` (LAN .1, WAN 198.51.100.9/30 and `2001:db8:22::1` towards `inet`
//!   `gw20`), is wired the same way, for tests with several gateways.
//! - Labs built with [`Lab::with_edges`](crate::Lab::with_edges) have up to
//!   two more edges, each in a namespace of its own (an edge routes the
//!   branches' prefixes into its TUN and masquerades to its own address, so
//!   two edges cannot share one), wired to `inet` like the first:
//!
//! ```text
//!                          inet                          edge2
//!                          edge20 ───────────── wan0
//!                          198.51.100.14/30    198.51.100.13
//!                          2001:db8:32::14/64  2001:db8:32::13
//!                                                        edge3
//!                          edge30 ───────────── wan0
//!                          198.51.100.18/30    198.51.100.17
//!                          2001:db8:33::18/64  2001:db8:33::17
//! ```
//!
//!   `inet`'s address towards each edge ([`INET_EDGE_SIDE_V4`],
//!   [`INET_EDGE2_SIDE_V4`], [`INET_EDGE3_SIDE_V4`]) is where the failover
//!   tests' delay relays ([`crate::relay`]) listen for that edge: the
//!   gateway reaches edge N through its relay, with the relay's delay.
//! - Nothing is connected to the host's own network.
use std::net::{Ipv4Addr, Ipv6Addr};

/// The LAN, IPv4: `192.0.2.0/24` (with [`LAN_V4_PREFIX_LEN`]).
pub const LAN_V4_NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
/// Prefix length of [`LAN_V4_NET`].
pub const LAN_V4_PREFIX_LEN: u8 = 24;
/// The LAN, IPv6: `2001:db8:1::/64` (with [`LAN_V6_PREFIX_LEN`]).
pub const LAN_V6_NET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0);
/// Prefix length of [`LAN_V6_NET`].
pub const LAN_V6_PREFIX_LEN: u8 = 64;

/// `client` `eth0`: `192.0.2.10/24`.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// `client` `eth0`: `2001:db8:1::10/64`.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);

/// `gw` `lan0`: `192.0.2.1/24`, the client's default gateway.
pub const GW_LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// `gw` `lan0`: `2001:db8:1::1/64`, the client's default gateway.
pub const GW_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// `gw` `wan0`: `198.51.100.1/30`; bypassed LAN traffic is masqueraded to it.
pub const GW_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// `gw` `wan0`: `2001:db8:2::1/64`; bypassed LAN traffic is masqueraded to it.
pub const GW_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

/// `inet` `gw0`: `198.51.100.2/30`, the gateway's default route.
pub const INET_GW_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// `inet` `gw0`: `2001:db8:2::2/64`, the gateway's default route.
pub const INET_GW_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// `inet` `edge0`: `198.51.100.6/30`, the edge's default route.
pub const INET_EDGE_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 6);
/// `inet` `edge0`: `2001:db8:3::6/64`, the edge's default route.
pub const INET_EDGE_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 6);

/// `edge` `wan0`: `198.51.100.5/30`, where the gateway reaches the edge.
pub const EDGE_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 5);
/// `edge` `wan0`: `2001:db8:3::5/64`, where the gateway reaches the edge.
pub const EDGE_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 5);

/// `edge2` `wan0`: `198.51.100.13/30` (labs with a second edge).
pub const EDGE2_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
/// `edge2` `wan0`: `2001:db8:32::13/64`.
pub const EDGE2_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x32, 0, 0, 0, 0, 0x13);
/// `inet` `edge20`: `198.51.100.14/30`, `edge2`'s default route.
pub const INET_EDGE2_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 14);
/// `inet` `edge20`: `2001:db8:32::14/64`, `edge2`'s default route.
pub const INET_EDGE2_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x32, 0, 0, 0, 0, 0x14);
/// `edge3` `wan0`: `198.51.100.17/30` (labs with a third edge).
pub const EDGE3_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 17);
/// `edge3` `wan0`: `2001:db8:33::17/64`.
pub const EDGE3_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x33, 0, 0, 0, 0, 0x17);
/// `inet` `edge30`: `198.51.100.18/30`, `edge3`'s default route.
pub const INET_EDGE3_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 18);
/// `inet` `edge30`: `2001:db8:33::18/64`, `edge3`'s default route.
pub const INET_EDGE3_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x33, 0, 0, 0, 0, 0x18);

/// Server address on `inet` `srv0` whose traffic is meant to be TUNNELLED
/// (reaches the server from the edge): `203.0.113.10/32`.
pub const TUNNELLED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Server address on `inet` `srv0` whose traffic is meant to be BYPASSED
/// (reaches the server from the gateway's WAN address): `203.0.113.20/32`.
pub const BYPASSED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// Server address on `inet` `srv0` that is tunnelled until a DNS answer for
/// a bypassed domain names it (`app.bypass.example` in the lab's DNS
/// server, [`DNS_V4`]): `203.0.113.30/32`.
pub const BY_DOMAIN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
/// A real DNS server (dnsmasq, when a test or the demo starts it) on
/// `inet` `srv0`, reached through the tunnel: `203.0.113.53/32`.
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// A hostile DNS server (`peer.py dns-forger`) on `inet` `srv0`:
/// `203.0.113.54/32`.
pub const DNS_FORGER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 54);
/// IPv6 counterpart of [`TUNNELLED_V4`]: `2001:db8:100::10/128`.
pub const TUNNELLED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
/// IPv6 counterpart of [`BYPASSED_V4`]: `2001:db8:100::20/128`.
pub const BYPASSED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x20);

/// The second branch's LAN (`client2` behind `gw2`), IPv4: `198.18.2.0/24`
/// (from the benchmarking range that the lab rules reserve for tunnel inner
/// addresses, which is what a branch LAN is to the edge).
pub const LAN2_V4_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 0);
/// The second branch's LAN, IPv6: `2001:db8:12::/64`.
pub const LAN2_V6_NET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x12, 0, 0, 0, 0, 0);
/// `client2` on the second LAN: `198.18.2.10/24`.
pub const CLIENT2_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
/// `client2`, IPv6: `2001:db8:12::10/64`.
pub const CLIENT2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x12, 0, 0, 0, 0, 0x10);
/// `gw2` on the second LAN: `198.18.2.1/24`.
pub const GW2_LAN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// `gw2` on the second LAN, IPv6: `2001:db8:12::1/64`.
pub const GW2_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x12, 0, 0, 0, 0, 1);
/// `gw2`'s WAN address: `198.51.100.9/30`.
pub const GW2_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// `gw2`'s WAN address, IPv6: `2001:db8:22::1/64`.
pub const GW2_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x22, 0, 0, 0, 0, 1);
/// `inet`'s address towards `gw2`: `198.51.100.10/30`.
pub const INET_GW2_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// `inet`'s address towards `gw2`, IPv6: `2001:db8:22::2/64`.
pub const INET_GW2_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x22, 0, 0, 0, 0, 2);

/// Interface names (fixed; unique per namespace, not per lab).
pub mod ifname {
    /// `client`'s only interface (peer of `gw` [`GW_LAN`]).
    pub const CLIENT_ETH: &str = "eth0";
    /// `gw`'s LAN interface (peer of `client` [`CLIENT_ETH`]).
    pub const GW_LAN: &str = "lan0";
    /// `gw`'s WAN interface (peer of `inet` [`INET_GW_SIDE`]).
    pub const GW_WAN: &str = "wan0";
    /// `edge`'s WAN interface (peer of `inet` [`INET_EDGE_SIDE`]); also
    /// that of `edge2` and `edge3` (peers of [`INET_EDGE2_SIDE`],
    /// [`INET_EDGE3_SIDE`]).
    pub const EDGE_WAN: &str = "wan0";
    /// `inet`'s interface towards `gw`.
    pub const INET_GW_SIDE: &str = "gw0";
    /// `inet`'s interface towards `gw2`.
    pub const INET_GW2_SIDE: &str = "gw20";
    /// `inet`'s interface towards `edge`.
    pub const INET_EDGE_SIDE: &str = "edge0";
    /// `inet`'s interface towards `edge2` (labs with a second edge).
    pub const INET_EDGE2_SIDE: &str = "edge20";
    /// `inet`'s interface towards `edge3` (labs with a third edge).
    pub const INET_EDGE3_SIDE: &str = "edge30";
    /// `inet`'s interface carrying the server addresses: a `dummy`, or on
    /// kernels without `CONFIG_DUMMY` one end of a veth pair whose other end
    /// ([`INET_SERVERS_PEER`]) is unused.
    pub const INET_SERVERS: &str = "srv0";
    /// The unused peer of [`INET_SERVERS`] when that is a veth.
    pub const INET_SERVERS_PEER: &str = "srv0p";
}

#[cfg(test)]
mod tests {
    /// The numbers in the first `n` arguments of every `<call>(...)` in
    /// `src` (decimal or `0x` hex).
    fn calls(src: &str, call: &str, n: usize) -> Vec<Vec<u32>> {
        src.match_indices(call)
            .map(|(at, _)| {
                let args = &src[at + call.len()..];
                let args = &args[..args.find(')').expect("a closing parenthesis")];
                args.split(',')
                    .take(n)
                    .map(|a| {
                        let a = a.trim();
                        a.strip_prefix("0x").map_or_else(
                            || a.parse().expect("a decimal number"),
                            |h| u32::from_str_radix(h, 16).expect("a hex number"),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// Every address of the plan is in a documentation range (RFC 5737,
    /// RFC 3849) or, for the second branch's LAN, 198.18.0.0/15: never a
    /// private, shared or public one.
    #[test]
    fn the_plan_uses_documentation_ranges_only() {
        let src = include_str!("addr.rs");
        let src = &src[..src.find("#[cfg(test)]").expect("this module")];
        let v4 = calls(src, "Ipv4Addr::new(", 4);
        let v6 = calls(src, "Ipv6Addr::new(", 2);
        assert!(v4.len() >= 20 && v6.len() >= 15, "{v4:?} {v6:?}");
        for a in &v4 {
            let ok = matches!(
                a[..3],
                [192, 0, 2] | [198, 51, 100] | [203, 0, 113] | [198, 18 | 19, _]
            );
            assert!(ok, "{a:?} is outside the lab's ranges");
        }
        for a in &v6 {
            assert_eq!(a[..2], [0x2001, 0xdb8], "{a:x?} is outside 2001:db8::/32");
        }
    }
}
