//! Trusted-network evaluation for forwarding profiles: is this host on a
//! trusted network, off it, or behind a full-tunnel VPN? Each state has
//! its action (tunnel or direct) in the forwarding profile.
//!
//! Pure: [`evaluate`] checks [`Criteria`] against [`Facts`] and says which
//! [`NetworkState`] holds and why, one line per criterion; [`vpn_device`]
//! finds the VPN holding the default route among parsed routes. The
//! gateway gathers the facts from the host (resolver files, `ip route`,
//! DHCP leases, resolution) and runs this in its detector thread.
use std::{
    fmt::{self, Display, Write as _},
    net::IpAddr,
};

use super::facts::{Dst, Route};
use crate::net::Prefix;

/// Interface names counted as VPNs by default (a trailing `*` matches any
/// rest).
pub const DEFAULT_VPN_INTERFACES: [&str; 6] = ["tun*", "wg*", "ppp*", "tap*", "utun*", "ipsec*"];

/// How the configured criteria combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Combine {
    /// Every configured criterion must be met.
    #[default]
    All,
    /// At least one configured criterion must be met.
    Any,
}

/// What makes a network trusted. Empty lists (and `resolve: None`) are
/// criteria not configured; with none configured the host is never
/// on-trusted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Criteria {
    /// How the configured criteria combine.
    pub combine: Combine,
    /// Met when one of these is among the host's resolvers.
    pub dns_servers: Vec<IpAddr>,
    /// Met when one of these is among the host's search domains
    /// (case-insensitive, trailing dot ignored).
    pub dns_search_domains: Vec<String>,
    /// Met when the hostname resolves to (among others) this address.
    pub resolve: Option<(String, IpAddr)>,
    /// Met when one of the host's addresses is inside one of these.
    pub networks: Vec<Prefix>,
    /// Met when the next hop of the preferred default route is one of these.
    pub default_gateways: Vec<IpAddr>,
    /// Met when a current DHCP lease came from one of these servers.
    pub dhcp_servers: Vec<IpAddr>,
    /// Met when the source address the host uses toward the probe address
    /// ([`Sources::egress_probe`]) is one of these.
    pub egress_addresses: Vec<IpAddr>,
}

impl Criteria {
    /// True if no criterion is configured (such criteria are never met).
    pub fn is_empty(&self) -> bool {
        self.dns_servers.is_empty()
            && self.dns_search_domains.is_empty()
            && self.resolve.is_none()
            && self.networks.is_empty()
            && self.default_gateways.is_empty()
            && self.dhcp_servers.is_empty()
            && self.egress_addresses.is_empty()
    }
}

/// Where the host is, as far as forwarding profiles are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkState {
    /// The trusted-network criteria are met.
    OnTrusted,
    /// They are not (or none are configured).
    OffTrusted,
    /// A full-tunnel VPN holds the default route.
    VpnTrusted,
}

impl NetworkState {
    /// Every state, in the order metrics list them.
    pub const ALL: [Self; 3] = [Self::OnTrusted, Self::OffTrusted, Self::VpnTrusted];

    /// The state's name: `on-trusted`, `off-trusted` or `vpn-trusted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTrusted => "on-trusted",
            Self::OffTrusted => "off-trusted",
            Self::VpnTrusted => "vpn-trusted",
        }
    }
}

impl Display for NetworkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`gather`] found out about the host.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The resolvers (`nameserver` lines; behind the systemd-resolved stub,
    /// its upstream servers too).
    pub dns_servers: Vec<IpAddr>,
    /// The search domains, as written.
    pub search_domains: Vec<String>,
    /// The addresses the criteria's hostname resolved to; `None` if not
    /// asked or resolution failed.
    pub resolved: Option<Vec<IpAddr>>,
    /// Every address on the host's interfaces.
    pub local_addrs: Vec<IpAddr>,
    /// Next hops of the preferred (lowest-metric) default route of the main
    /// table, per family.
    pub default_gateways: Vec<IpAddr>,
    /// Devices of those routes (each once).
    pub default_devices: Vec<String>,
    /// The VPN device holding the default route, if one does.
    pub vpn_device: Option<String>,
    /// Servers of the current DHCP leases (leases whose address the host
    /// still has).
    pub dhcp_servers: Vec<IpAddr>,
    /// The source address toward the probe address, if asked and routable.
    pub egress: Option<IpAddr>,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The state.
    pub state: NetworkState,
    /// Why: the VPN if one holds the default route, then one line per
    /// configured criterion (met or not, and why), then the verdict.
    pub reasons: Vec<String>,
}

/// Checks the criteria against the facts. A VPN holding the default route
/// wins over the criteria, which are still reported.
pub fn evaluate(c: &Criteria, f: &Facts) -> Evaluation {
    let mut reasons = Vec::new();
    if let Some(dev) = &f.vpn_device {
        reasons.push(format!("default route via {dev}, a VPN interface"));
    }
    let results = check(c, f);
    let (met, total) = (results.iter().filter(|r| r.0).count(), results.len());
    let trusted = match c.combine {
        _ if total == 0 => false,
        Combine::All => met == total,
        Combine::Any => met > 0,
    };
    reasons.extend(results.into_iter().map(|r| r.1));
    reasons.push(match c.combine {
        _ if total == 0 => "no trusted-network criteria configured".into(),
        Combine::All => format!("{met} of {total} criteria met (all required)"),
        Combine::Any => format!("{met} of {total} criteria met (any suffices)"),
    });
    let state = match (&f.vpn_device, trusted) {
        (Some(_), _) => NetworkState::VpnTrusted,
        (None, true) => NetworkState::OnTrusted,
        (None, false) => NetworkState::OffTrusted,
    };
    Evaluation { state, reasons }
}

/// Each configured criterion: met or not, and the reason line.
fn check(c: &Criteria, f: &Facts) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    if !c.dns_servers.is_empty() {
        out.push(among(
            "dns_servers",
            &c.dns_servers,
            &f.dns_servers,
            "this host's resolvers",
        ));
    }
    if !c.dns_search_domains.is_empty() {
        let norm = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        out.push(among(
            "dns_search_domains",
            &norm(&c.dns_search_domains),
            &norm(&f.search_domains),
            "this host's search domains",
        ));
    }
    if let Some((name, want)) = &c.resolve {
        out.push(match &f.resolved {
            Some(got) => among(
                "resolve",
                std::slice::from_ref(want),
                got,
                &format!("the addresses of {name}"),
            ),
            None => (false, format!("resolve: {name} did not resolve (not met)")),
        });
    }
    if !c.networks.is_empty() {
        let hit = f
            .local_addrs
            .iter()
            .find_map(|&a| Some((a, c.networks.iter().find(|p| p.contains(a))?)));
        out.push(match hit {
            Some((a, p)) => (true, format!("networks: {a} is in {p} (met)")),
            None => (
                false,
                format!(
                    "networks: no address of this host in {} (not met)",
                    list(&c.networks)
                ),
            ),
        });
    }
    if !c.default_gateways.is_empty() {
        out.push(among(
            "default_gateways",
            &c.default_gateways,
            &f.default_gateways,
            "this host's default gateways",
        ));
    }
    if !c.dhcp_servers.is_empty() {
        out.push(among(
            "dhcp_servers",
            &c.dhcp_servers,
            &f.dhcp_servers,
            "the servers of this host's DHCP leases",
        ));
    }
    if !c.egress_addresses.is_empty() {
        out.push(among(
            "egress_addresses",
            &c.egress_addresses,
            f.egress.as_slice(),
            "the addresses this host sends from toward the edge",
        ));
    }
    out
}

/// Met if one of `want` is in `have`.
fn among<T: PartialEq + Display>(name: &str, want: &[T], have: &[T], what: &str) -> (bool, String) {
    if let Some(hit) = want.iter().find(|w| have.contains(w)) {
        return (true, format!("{name}: {hit} is among {what} (met)"));
    }
    let found = if have.is_empty() {
        "none found".into()
    } else {
        list(have)
    };
    let want = list(want);
    (
        false,
        format!("{name}: {want} not among {what} ({found}) (not met)"),
    )
}

fn list<T: Display>(items: &[T]) -> String {
    let mut s = String::new();
    for (i, x) in items.iter().enumerate() {
        let _ = write!(s, "{}{x}", if i > 0 { ", " } else { "" });
    }
    s
}

/// The routes of `table` to `dst` with the lowest metric (the ones the
/// kernel uses; several for multipath).
pub fn preferred<'a>(
    routes: &'a [Route],
    table: Option<&'a str>,
    dst: Dst,
) -> impl Iterator<Item = &'a Route> {
    let of = move |r: &&Route| r.dst == dst && r.table.as_deref() == table;
    let best = routes.iter().filter(of).map(|r| r.metric).min();
    routes
        .iter()
        .filter(move |r| of(r) && Some(r.metric) == best)
}

/// The VPN device that holds the default route, if any: in any table (a
/// full tunnel may route through a policy table, as `wg-quick` does), the
/// device of the preferred default route, or the device holding both
/// half-default routes, that matches `patterns` or is a tunnel
/// (`is_tunnel`) and is not in `ignore`.
pub fn vpn_device(
    routes: &[Route],
    patterns: &[String],
    ignore: &[String],
    is_tunnel: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut tables: Vec<Option<&str>> = routes.iter().map(|r| r.table.as_deref()).collect();
    tables.sort_unstable();
    tables.dedup();
    let is_vpn = |d: &str| {
        !ignore.iter().any(|i| i == d)
            && (patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => d.starts_with(prefix),
                None => d == p,
            }) || is_tunnel(d))
    };
    tables
        .into_iter()
        .flat_map(|t| {
            let halves = preferred(routes, t, Dst::LowHalf)
                .filter(move |l| preferred(routes, t, Dst::HighHalf).any(|h| h.dev == l.dev));
            preferred(routes, t, Dst::Default).chain(halves)
        })
        .map(|r| r.dev.as_str())
        .find(|d| is_vpn(d))
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::facts::{
        Lease, parse_bootp, parse_default_routes, parse_lease, parse_resolv_conf,
    };

    use crate::testutil::leases::{DHCLIENT_LEASES, DHCLIENT6_LEASE, NETWORKD_LEASE, dhcp_ack};
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    /// Facts of a host on 192.0.2.0/24 (and `2001:db8:1::/64`) behind
    /// 192.0.2.1, with the corporate resolver and search domain.
    fn office() -> Facts {
        Facts {
            dns_servers: ips(&["192.0.2.53", "2001:db8:1::53"]),
            search_domains: vec!["Corp.Example.".into(), "example.net".into()],
            resolved: Some(ips(&["192.0.2.80"])),
            local_addrs: ips(&["127.0.0.1", "192.0.2.7", "2001:db8:1::7"]),
            default_gateways: ips(&["192.0.2.1", "fe80::1"]),
            default_devices: vec!["eth0".into()],
            vpn_device: None,
            dhcp_servers: ips(&["192.0.2.2"]),
            egress: Some(ip("192.0.2.7")),
        }
    }

    /// One criterion of each kind, each met by [`office`].
    fn each_criterion() -> Vec<(&'static str, Criteria)> {
        let one = |f: &dyn Fn(&mut Criteria)| {
            let mut c = Criteria::default();
            f(&mut c);
            c
        };
        vec![
            (
                "dns_servers",
                one(&|c| c.dns_servers = ips(&["192.0.2.53"])),
            ),
            (
                "dns_search_domains",
                one(&|c| c.dns_search_domains = vec!["corp.example".into()]),
            ),
            (
                "resolve",
                one(&|c| c.resolve = Some(("intranet.corp.example".into(), ip("192.0.2.80")))),
            ),
            (
                "networks",
                one(&|c| c.networks = vec!["192.0.2.0/24".parse().unwrap()]),
            ),
            (
                "default_gateways",
                one(&|c| c.default_gateways = ips(&["192.0.2.1"])),
            ),
            (
                "dhcp_servers",
                one(&|c| c.dhcp_servers = ips(&["192.0.2.2"])),
            ),
            (
                "egress_addresses",
                one(&|c| c.egress_addresses = ips(&["192.0.2.7"])),
            ),
        ]
    }

    #[test]
    fn each_criterion_met_and_not_met() {
        let away = Facts {
            dns_servers: ips(&["198.51.100.53"]),
            search_domains: vec!["home.arpa".into()],
            resolved: Some(ips(&["203.0.113.80"])),
            local_addrs: ips(&["198.51.100.7"]),
            default_gateways: ips(&["198.51.100.1"]),
            dhcp_servers: ips(&["198.51.100.1"]),
            egress: Some(ip("198.51.100.7")),
            ..Facts::default()
        };
        for (name, c) in each_criterion() {
            assert!(!c.is_empty(), "{name}");
            let expect = |facts: &Facts, state, verdict: &str| {
                let e = evaluate(&c, facts);
                assert_eq!(e.state, state, "{name}: {:?}", e.reasons);
                let line = &e.reasons[0];
                assert!(line.starts_with(&format!("{name}: ")), "{line}");
                assert!(line.ends_with(verdict), "{line}");
            };
            expect(&office(), NetworkState::OnTrusted, " (met)");
            expect(&away, NetworkState::OffTrusted, " (not met)");
            expect(&Facts::default(), NetworkState::OffTrusted, " (not met)");
        }
    }

    #[test]
    fn reasons_say_why() {
        let reasons = |c: &Criteria, f: &Facts| evaluate(c, f).reasons.remove(0);
        let mut c = Criteria {
            dns_servers: ips(&["192.0.2.53"]),
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &office()),
            "dns_servers: 192.0.2.53 is among this host's resolvers (met)"
        );
        c.dns_servers = ips(&["203.0.113.53", "203.0.113.54"]);
        assert_eq!(
            reasons(&c, &office()),
            "dns_servers: 203.0.113.53, 203.0.113.54 not among this host's resolvers \
             (192.0.2.53, 2001:db8:1::53) (not met)"
        );
        let c = Criteria {
            networks: vec!["198.51.100.0/24".parse().unwrap()],
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &office()),
            "networks: no address of this host in 198.51.100.0/24 (not met)"
        );
        let c = Criteria {
            default_gateways: ips(&["192.0.2.1"]),
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &Facts::default()),
            "default_gateways: 192.0.2.1 not among this host's default gateways \
             (none found) (not met)"
        );
        let c = Criteria {
            resolve: Some(("intranet.corp.example".into(), ip("192.0.2.80"))),
            ..Criteria::default()
        };
        assert_eq!(
            reasons(&c, &Facts::default()),
            "resolve: intranet.corp.example did not resolve (not met)"
        );
    }

    #[test]
    fn all_needs_every_criterion_any_needs_one() {
        let mut c = Criteria {
            dns_servers: ips(&["192.0.2.53"]),
            networks: vec!["198.51.100.0/24".parse().unwrap()],
            ..Criteria::default()
        };
        let e = evaluate(&c, &office());
        assert_eq!(e.state, NetworkState::OffTrusted);
        assert_eq!(e.reasons.len(), 3);
        assert_eq!(e.reasons[2], "1 of 2 criteria met (all required)");
        c.combine = Combine::Any;
        let e = evaluate(&c, &office());
        assert_eq!(e.state, NetworkState::OnTrusted);
        assert_eq!(e.reasons[2], "1 of 2 criteria met (any suffices)");
        // Every criterion at once, all met.
        let mut all = Criteria::default();
        for (_, c) in each_criterion() {
            all.dns_servers.extend(c.dns_servers);
            all.dns_search_domains.extend(c.dns_search_domains);
            all.resolve = all.resolve.or(c.resolve);
            all.networks.extend(c.networks);
            all.default_gateways.extend(c.default_gateways);
            all.dhcp_servers.extend(c.dhcp_servers);
            all.egress_addresses.extend(c.egress_addresses);
        }
        let e = evaluate(&all, &office());
        assert_eq!(e.state, NetworkState::OnTrusted, "{:?}", e.reasons);
        assert_eq!(
            e.reasons.last().unwrap(),
            "7 of 7 criteria met (all required)"
        );
        let e = evaluate(&all, &Facts::default());
        assert_eq!(e.state, NetworkState::OffTrusted);
        assert_eq!(
            e.reasons.last().unwrap(),
            "0 of 7 criteria met (all required)"
        );
    }

    #[test]
    fn empty_criteria_are_never_trusted() {
        assert!(Criteria::default().is_empty());
        assert_eq!(Criteria::default().combine, Combine::All);
        let e = evaluate(&Criteria::default(), &office());
        assert_eq!(e.state, NetworkState::OffTrusted);
        assert_eq!(e.reasons, ["no trusted-network criteria configured"]);
        let e = evaluate(
            &Criteria {
                combine: Combine::Any,
                ..Criteria::default()
            },
            &office(),
        );
        assert_eq!(e.state, NetworkState::OffTrusted);
    }

    #[test]
    fn vpn_wins() {
        let facts = Facts {
            vpn_device: Some("wg0".into()),
            ..office()
        };
        for c in [Criteria::default(), each_criterion().remove(0).1] {
            let e = evaluate(&c, &facts);
            assert_eq!(e.state, NetworkState::VpnTrusted);
            assert_eq!(e.reasons[0], "default route via wg0, a VPN interface");
            // The criteria are still reported.
            assert_eq!(e.reasons[1..], evaluate(&c, &office()).reasons);
        }
    }

    #[test]
    fn ipv6_criteria_and_domain_normalisation() {
        let c = Criteria {
            dns_servers: ips(&["2001:db8:1::53"]),
            networks: vec!["2001:db8:1::/64".parse().unwrap()],
            default_gateways: ips(&["fe80::1"]),
            dns_search_domains: vec!["CORP.example.".into()],
            ..Criteria::default()
        };
        let e = evaluate(&c, &office());
        assert_eq!(e.state, NetworkState::OnTrusted, "{:?}", e.reasons);
        assert!(
            e.reasons
                .contains(&"networks: 2001:db8:1::7 is in 2001:db8:1::/64 (met)".into())
        );
        // An IPv4 prefix never contains an IPv6 address, nor the reverse.
        let c = Criteria {
            networks: vec!["2001:db8:2::/48".parse().unwrap()],
            ..Criteria::default()
        };
        assert_eq!(evaluate(&c, &office()).state, NetworkState::OffTrusted);
    }

    #[test]
    fn state_names() {
        let names: Vec<String> = NetworkState::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["on-trusted", "off-trusted", "vpn-trusted"]);
    }

    const RESOLV_CONF: &str = "\
# Generated by NetworkManager
; another comment style
domain old.example
nameserver 192.0.2.53
nameserver fe80::53%eth0
nameserver not-an-address
nameserver
options edns0 trust-ad
search Corp.Example. example.net
";

    #[test]
    fn parses_resolv_conf() {
        let (servers, search) = parse_resolv_conf(RESOLV_CONF);
        assert_eq!(servers, ips(&["192.0.2.53", "fe80::53"]));
        assert_eq!(search, ["Corp.Example.", "example.net"]);
        // `domain` after `search` wins too.
        let (_, search) = parse_resolv_conf("search a.example\ndomain b.example\n");
        assert_eq!(search, ["b.example"]);
        assert_eq!(parse_resolv_conf(""), (Vec::new(), Vec::<String>::new()));
    }

    /// `ip -o -4 route show table all`, as iproute2 prints it (multipath
    /// next hops joined by `\` and a tab).
    const ROUTES_V4: &str = "\
default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.7 metric 600 \n\
default via 198.51.100.1 dev wlan0 proto dhcp src 198.51.100.7 metric 100 \n\
0.0.0.0/1 via 198.18.8.1 dev tun0 \n\
198.18.8.0/24 dev tun0 proto kernel scope link src 198.18.8.2 \n\
128.0.0.0/1 via 198.18.8.1 dev tun0 metric 5 \n\
default table 100 metric 50 \\\tnexthop via 192.0.2.1 dev eth0 weight 1 \\\tnexthop via inet6 fe80::1 dev eth1 weight 2 \n\
unreachable default table 200 \n\
default dev wg0 table 51820 scope link \n\
local 192.0.2.7 dev eth0 table local proto kernel scope host src 192.0.2.7 \n\
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.7 \n";

    const ROUTES_V6: &str = "\
2001:db8:1::/64 dev eth0 proto kernel metric 256 pref medium
default via fe80::1 dev eth0 proto ra metric 1024 expires 1790sec hoplimit 64 pref medium
::/1 dev wg0 metric 1024 pref medium
8000::/1 dev wg0 metric 1024 pref medium
local ::1 dev lo table local proto kernel metric 0 pref medium
multicast ff00::/8 dev eth0 table local proto kernel metric 256 pref medium
";

    fn route(dst: Dst, via: Option<&str>, dev: &str, metric: u32, table: Option<&str>) -> Route {
        Route {
            dst,
            via: via.map(ip),
            dev: dev.into(),
            metric,
            table: table.map(String::from),
        }
    }

    #[test]
    fn parses_default_routes() {
        use Dst::{Default, HighHalf, LowHalf};
        assert_eq!(
            parse_default_routes(ROUTES_V4),
            [
                route(Default, Some("192.0.2.1"), "eth0", 600, None),
                route(Default, Some("198.51.100.1"), "wlan0", 100, None),
                route(LowHalf, Some("198.18.8.1"), "tun0", 0, None),
                route(HighHalf, Some("198.18.8.1"), "tun0", 5, None),
                route(Default, Some("192.0.2.1"), "eth0", 50, Some("100")),
                route(Default, Some("fe80::1"), "eth1", 50, Some("100")),
                route(Default, None, "wg0", 0, Some("51820")),
            ]
        );
        assert_eq!(
            parse_default_routes(ROUTES_V6),
            [
                route(Default, Some("fe80::1"), "eth0", 1024, None),
                route(LowHalf, None, "wg0", 1024, None),
                route(HighHalf, None, "wg0", 1024, None),
            ]
        );
        assert!(parse_default_routes("").is_empty());
        assert!(parse_default_routes("default via 192.0.2.1\ngarbage\n").is_empty());
    }

    #[test]
    fn preferred_default_route_has_the_lowest_metric() {
        let routes = parse_default_routes(ROUTES_V4);
        let devs = |t| -> Vec<&str> {
            preferred(&routes, t, Dst::Default)
                .map(|r| r.dev.as_str())
                .collect()
        };
        assert_eq!(devs(None), ["wlan0"]);
        assert_eq!(devs(Some("100")), ["eth0", "eth1"]);
        assert!(devs(Some("7")).is_empty());
    }

    #[test]
    fn finds_the_vpn_holding_the_default_route() {
        use Dst::{Default, HighHalf, LowHalf};
        let patterns = DEFAULT_VPN_INTERFACES.map(String::from).to_vec();
        let no_tunnels = |_: &str| false;
        let vpn = |routes: &[Route], ignore: &[&str], tunnel: &dyn Fn(&str) -> bool| {
            let ignore: Vec<String> = ignore.iter().map(|s| (*s).to_string()).collect();
            vpn_device(routes, &patterns, &ignore, tunnel)
        };
        let main = |dst, dev: &str, metric| route(dst, None, dev, metric, None);

        // The default route through a device named like a VPN.
        assert_eq!(
            vpn(&[main(Default, "tun0", 0)], &[], &no_tunnels).as_deref(),
            Some("tun0")
        );
        // A VPN's default route with a higher metric does not hold it.
        let backup = [main(Default, "eth0", 100), main(Default, "ppp0", 200)];
        assert_eq!(vpn(&backup, &[], &no_tunnels), None);
        // The two halves override the default route.
        let halves = [
            main(Default, "eth0", 100),
            main(LowHalf, "tun0", 0),
            main(HighHalf, "tun0", 0),
        ];
        assert_eq!(vpn(&halves, &[], &no_tunnels).as_deref(), Some("tun0"));
        // One half is not a full tunnel, nor halves on different devices.
        assert_eq!(vpn(&halves[..2], &[], &no_tunnels), None);
        let split = [main(LowHalf, "tun0", 0), main(HighHalf, "tun1", 0)];
        assert_eq!(vpn(&split, &[], &no_tunnels), None);
        // A policy table's default route (wg-quick) counts.
        let wg = [
            main(Default, "eth0", 100),
            route(Default, None, "wg0", 0, Some("51820")),
        ];
        assert_eq!(vpn(&wg, &[], &no_tunnels).as_deref(), Some("wg0"));
        // sluice's own device is never a VPN, even if it is a tunnel.
        let own = [route(Default, None, "sluice0", 0, Some("100"))];
        assert_eq!(vpn(&own, &["sluice0"], &|_| true), None);
        // A tunnel by its kind, whatever its name; a plain device is not.
        let corp = [main(Default, "corp", 0)];
        assert_eq!(vpn(&corp, &[], &|d| d == "corp").as_deref(), Some("corp"));
        assert_eq!(vpn(&corp, &[], &no_tunnels), None);
        // Patterns without `*` are exact names.
        let exact = vpn_device(&corp, &["corp".into()], &[], no_tunnels);
        assert_eq!(exact.as_deref(), Some("corp"));
        assert_eq!(vpn_device(&corp, &["cor".into()], &[], no_tunnels), None);
        // The fixtures: tun0's halves (IPv4), wg0's (IPv6).
        let v4 = parse_default_routes(ROUTES_V4);
        assert_eq!(vpn(&v4, &[], &no_tunnels).as_deref(), Some("tun0"));
        let v6 = parse_default_routes(ROUTES_V6);
        assert_eq!(vpn(&v6, &[], &no_tunnels).as_deref(), Some("wg0"));
        assert_eq!(vpn(&v6, &["wg0"], &no_tunnels), None);
    }

    fn lease(server: &str, address: Option<&str>) -> Lease {
        Lease {
            server: ip(server),
            address: address.map(ip),
        }
    }

    #[test]
    fn parses_text_leases() {
        assert_eq!(
            parse_lease(DHCLIENT_LEASES),
            [
                lease("198.51.100.1", Some("198.51.100.7")),
                lease("192.0.2.3", Some("192.0.2.11")),
            ]
        );
        assert_eq!(
            parse_lease(NETWORKD_LEASE),
            [lease("192.0.2.2", Some("192.0.2.10"))]
        );
        assert!(parse_lease(DHCLIENT6_LEASE).is_empty());
        assert!(parse_lease("").is_empty());
        // A block cut short is not a lease.
        assert!(parse_lease("lease {\n  option dhcp-server-identifier 192.0.2.2;\n").is_empty());
    }

    #[test]
    fn parses_raw_dhcp_leases() {
        let ack = dhcp_ack();
        assert_eq!(
            parse_bootp(&ack),
            Some(lease("192.0.2.2", Some("192.0.2.10")))
        );
        // Truncated inside the server identifier, no server identifier, no
        // cookie: not a lease.
        assert_eq!(parse_bootp(&ack[..ack.len() - 3]), None);
        assert_eq!(parse_bootp(&ack[..243]), None);
        let mut no_cookie = ack.clone();
        no_cookie[236] = 0;
        assert_eq!(parse_bootp(&no_cookie), None);
        assert_eq!(parse_bootp(NETWORKD_LEASE.as_bytes()), None);
        assert_eq!(parse_bootp(&[]), None);
    }
}
