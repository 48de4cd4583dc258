//! The texts trusted-network detection reads, parsed: `resolv.conf`,
//! `ip -o route show` and DHCP lease files (dhclient's and
//! systemd-networkd's text, dhcpcd's raw DHCP message). Pure functions over
//! untrusted bytes: no I/O, no panic, time linear in the input (fuzzed by
//! the `trusted_facts` target); [`super::trusted`] gathers the texts and
//! judges the facts.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use crate::net::Prefix;

/// One dhclient lease block being read: interface, server, address.
type Block<'a> = (Option<&'a str>, Option<IpAddr>, Option<IpAddr>);

/// Parses resolv.conf(5): `nameserver` lines (an IPv6 zone `%eth0` is
/// dropped) and the search list (`search` or `domain`, the last one wins).
/// Lines starting with `#` or `;` are comments.
pub fn parse_resolv_conf(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let (mut servers, mut search) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => servers.extend(
                w.next()
                    .and_then(|a| a.split('%').next()?.parse::<IpAddr>().ok()),
            ),
            Some("search" | "domain") => search = w.map(String::from).collect(),
            _ => {}
        }
    }
    (servers, search)
}

/// The destination of a default route: the whole space, or one of the two
/// halves (`0.0.0.0/1` and `128.0.0.0/1`, `::/1` and `8000::/1`) that
/// full-tunnel VPNs install to override it without replacing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    /// `default`, `0.0.0.0/0`, `::/0`.
    Default,
    /// `0.0.0.0/1`, `::/1`.
    LowHalf,
    /// `128.0.0.0/1`, `8000::/1`.
    HighHalf,
}

/// One next hop of a default route, from `ip -o route show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What the route covers.
    pub dst: Dst,
    /// The gateway; `None` for a device route.
    pub via: Option<IpAddr>,
    /// The device.
    pub dev: String,
    /// Its metric (0 without one).
    pub metric: u32,
    /// The routing table; `None` is the main table.
    pub table: Option<String>,
}

/// Parses `ip -o route show [table all]` output into default and
/// half-default routes, one per next hop (multipath routes give several);
/// every other route, and routes that are not unicast (`unreachable
/// default`, ...), are skipped.
pub fn parse_default_routes(ip_o_output: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for line in ip_o_output.lines() {
        // `-o` joins a multipath route's lines with `\`.
        let mut w = line
            .split_whitespace()
            .map(|t| t.trim_end_matches('\\'))
            .filter(|t| !t.is_empty());
        let dst = match w.next() {
            Some("default") => Dst::Default,
            Some(p) => match p.parse::<Prefix>() {
                Ok(p) if p.len() == 0 => Dst::Default,
                Ok(p) if p.len() == 1 && p.addr().is_unspecified() => Dst::LowHalf,
                Ok(p) if p.len() == 1 => Dst::HighHalf,
                _ => continue,
            },
            None => continue,
        };
        let (mut metric, mut table) = (0, None);
        // A multipath route lists `nexthop via .. dev ..` groups.
        let mut hops: Vec<(Option<IpAddr>, Option<String>)> = vec![(None, None)];
        while let Some(t) = w.next() {
            let Some(hop) = hops.last_mut() else {
                break;
            };
            match t {
                "nexthop" => hops.push((None, None)),
                "via" => {
                    let mut v = w.next();
                    if matches!(v, Some("inet" | "inet6")) {
                        v = w.next();
                    }
                    hop.0 = v.and_then(|v| v.parse().ok());
                }
                "dev" => hop.1 = w.next().map(String::from),
                "metric" => metric = w.next().and_then(|m| m.parse().ok()).unwrap_or(0),
                "table" => table = w.next().filter(|t| *t != "main").map(String::from),
                _ => {}
            }
        }
        out.extend(hops.into_iter().filter_map(|(via, dev)| {
            Some(Route {
                dst,
                via,
                dev: dev?,
                metric,
                table: table.clone(),
            })
        }));
    }
    out
}

/// A DHCP lease: the server that granted it and, if the file says, the
/// address it granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The DHCP server.
    pub server: IpAddr,
    /// The address it granted, if the file says.
    pub address: Option<IpAddr>,
}

/// Parses a text lease file: ISC dhclient's (also `NetworkManager`'s
/// `dhclient-*.lease`), where the last `lease { }` block per interface is
/// the current one (`option dhcp-server-identifier`, `fixed-address`), or
/// systemd-networkd's and `NetworkManager`'s internal client's `KEY=VALUE`
/// (`SERVER_ADDRESS`, `ADDRESS`).
pub fn parse_lease(text: &str) -> Vec<Lease> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(key)?
                .strip_prefix('=')?
                .trim()
                .parse::<IpAddr>()
                .ok()
        })
    };
    if let Some(server) = value("SERVER_ADDRESS") {
        return vec![Lease {
            server,
            address: value("ADDRESS"),
        }];
    }
    // (interface, server, address) of each dhclient lease block; a later
    // block of the same interface replaces the earlier one (its slot is
    // emptied: linear, however many blocks the file has).
    let mut blocks: Vec<Option<Block<'_>>> = Vec::new();
    let mut last: HashMap<Option<&str>, usize> = HashMap::new();
    let mut current: Option<Block<'_>> = None;
    for line in text.lines().map(str::trim) {
        if line == "lease {" {
            current = Some((None, None, None));
            continue;
        }
        if line == "}" {
            if let Some(b) = current.take() {
                if let Some(i) = last.insert(b.0, blocks.len()) {
                    blocks[i] = None;
                }
                blocks.push(Some(b));
            }
            continue;
        }
        let Some(b) = current.as_mut() else {
            continue;
        };
        let line = line.trim_end_matches(';');
        let arg = |key: &str| line.strip_prefix(key).map(|v| v.trim().trim_matches('"'));
        if let Some(i) = arg("interface ") {
            b.0 = Some(i);
        } else if let Some(a) = arg("fixed-address ") {
            b.2 = a.parse().ok();
        } else if let Some(a) = arg("option dhcp-server-identifier ") {
            b.1 = a.parse().ok();
        }
    }
    blocks
        .into_iter()
        .flatten()
        .filter_map(|(_, server, address)| {
            Some(Lease {
                server: server?,
                address,
            })
        })
        .collect()
}

/// Parses a lease stored as the raw DHCP message (dhcpcd's
/// `/var/lib/dhcpcd/*.lease`): `yiaddr` and option 54, the server
/// identifier. `None` if the bytes are not a BOOTP message with the DHCP
/// magic cookie or carry no server identifier.
pub fn parse_bootp(b: &[u8]) -> Option<Lease> {
    const YIADDR: usize = 16;
    const COOKIE: usize = 236;
    const OPTIONS: usize = 240;
    const SERVER_ID: u8 = 54;
    let addr = |at: usize| -> Option<IpAddr> {
        let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(o)))
    };
    if b.get(COOKIE..OPTIONS)? != [99, 130, 83, 99] {
        return None;
    }
    let mut at = OPTIONS;
    while let Some(&code) = b.get(at) {
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                let len = usize::from(*b.get(at + 1)?);
                if code == SERVER_ID && len == 4 {
                    return Some(Lease {
                        server: addr(at + 2)?,
                        address: addr(YIADDR).filter(|a| !a.is_unspecified()),
                    });
                }
                at += 2 + len;
            }
        }
    }
    None
}
