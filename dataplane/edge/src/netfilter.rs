//! The edge's kernel setup (`manage_network`): the TUN device up with its
//! MTU, routes for every gateway's prefixes into it, forwarding on, and
//! one nftables table (`inet sluice_edge_<tun>`, removed on exit) that
//! - masquerades the gateways' sources leaving by another interface
//!   (with several workers, to random ports: see [`ruleset`]);
//! - filters what comes out of the TUN device: nothing conntrack calls
//!   invalid (an ICMP error about no connection, a reset of none: the
//!   kernel would forward them without source NAT, with the branch's LAN
//!   address), nothing forwarded back into it (one branch never reaches
//!   another through the edge), nothing to a reserved destination
//!   (link-local, cloud metadata, `edge.management`, and the IPv6 forms
//!   that carry those IPv4 addresses: see
//!   [`sluice_core::edge::router::v4_embeddings`]), and nothing to the edge host itself
//!   but replies (`ct state established,related`);
//! - lets into the TUN device only what belongs to a connection a tunnel
//!   began (`ct state established,related`): nobody reaches a branch's LAN
//!   by routing it via the edge.
//!
//! Each refusal has a named counter (`nft list counter inet
//! sluice_edge_<tun> <name>`): `tun_to_tun`, `tun_to_host`,
//! `tun_to_reserved`, `tun_invalid`, `into_tun_new`. The edge checks
//! `tun_to_tun` and `tun_to_reserved` in user space as well (they cost a
//! table lookup or two), so they hold even without `manage_network`;
//! `tun_to_host` and `tun_invalid` only the kernel knows.
//!
//! The sets merge overlapping prefixes (`auto-merge`): a gateway's own
//! prefixes may nest, and `edge.management` may repeat a built-in one.
use std::fmt::Write as _;

use super::{EdgeError, ioerr};
use crate::{config::EdgeConfig, host, net::Prefix};

/// The nftables counters of the edge's table.
pub(crate) const COUNTERS: [&str; 5] = [
    "tun_to_tun",
    "tun_to_host",
    "tun_to_reserved",
    "tun_invalid",
    "into_tun_new",
];

/// Removes the nftables table on drop.
#[derive(Debug)]
pub(crate) struct TableGuard {
    table: String,
}

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = host::run(&["nft", "delete", "table", "inet", &self.table], None);
    }
}

/// The table's name for TUN device `tun`.
pub(crate) fn table_name(tun: &str) -> String {
    format!("sluice_edge_{tun}")
}

/// The elements of an nftables set of `prefixes` of one family, or `None`.
fn elements(prefixes: &[Prefix], v4: bool) -> Option<String> {
    let list: Vec<String> = prefixes
        .iter()
        .filter(|p| p.addr().is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

/// The nftables script that (re)creates the edge's table: see the
/// [module docs](self).
///
/// With `random_ports` (several workers) the masquerade picks a random
/// source port for each new connection instead of keeping the client's.
/// Workers write to the TUN device at the same time, and the kernel
/// translates each packet on the writer's CPU: two new connections to the
/// same server from two branches' hosts using the same source port,
/// translated at the same moment on two CPUs, would both keep that port,
/// and the second would be dropped when conntrack confirms it (counted
/// `insert_failed`; measured in the two-worker lab test with identical
/// ports from both branches). Random ports make that a one-in-tens-of-
/// thousands coincidence, as on any multi-core NAT router.
pub(crate) fn ruleset(
    tun: &str,
    clients: &[Prefix],
    reserved: &[Prefix],
    random_ports: bool,
) -> String {
    let table = table_name(tun);
    let mut s =
        format!("table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n");
    for c in COUNTERS {
        let _ = writeln!(s, "  counter {c} {{ }}");
    }
    let reserved: Vec<Prefix> = reserved
        .iter()
        .flat_map(|p| std::iter::once(*p).chain(sluice_core::edge::router::v4_embeddings(*p)))
        .collect();
    for (name, ty, list, v4) in [
        ("clients4", "ipv4_addr", clients, true),
        ("clients6", "ipv6_addr", clients, false),
        ("reserved4", "ipv4_addr", &reserved[..], true),
        ("reserved6", "ipv6_addr", &reserved[..], false),
    ] {
        let _ = write!(s, "  set {name} {{ type {ty}; flags interval; auto-merge; ");
        if let Some(e) = elements(list, v4) {
            let _ = write!(s, "elements = {{ {e} }}; ");
        }
        s.push_str("}\n");
    }
    let _ = write!(
        s,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{tun}\" ct state established,related accept\n\
         \x20   iifname \"{tun}\" counter name \"tun_to_host\" drop\n  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{tun}\" ct state invalid counter name \"tun_invalid\" drop\n\
         \x20   iifname \"{tun}\" oifname \"{tun}\" counter name \"tun_to_tun\" drop\n\
         \x20   iifname \"{tun}\" ip daddr @reserved4 counter name \"tun_to_reserved\" drop\n\
         \x20   iifname \"{tun}\" ip6 daddr @reserved6 counter name \"tun_to_reserved\" drop\n\
         \x20   oifname \"{tun}\" ct state established,related accept\n\
         \x20   oifname \"{tun}\" counter name \"into_tun_new\" drop\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr @clients4 oifname != \"{tun}\" masquerade{random}\n\
         \x20   ip6 saddr @clients6 oifname != \"{tun}\" masquerade{random}\n  }}\n}}\n",
        random = if random_ports { " fully-random" } else { "" },
    );
    s
}

/// Configures the kernel for the edge; returns the guard that removes the
/// table again. The filter is in place before the TUN device comes up.
pub(crate) fn setup(cfg: &EdgeConfig, tun: &str, workers: usize) -> Result<TableGuard, EdgeError> {
    let clients: Vec<Prefix> = cfg
        .gateways
        .iter()
        .flat_map(|g| g.prefixes.iter().copied())
        .collect();
    host::run(
        &["nft", "-f", "-"],
        Some(&ruleset(tun, &clients, &cfg.reserved, workers > 1)),
    )?;
    let guard = TableGuard {
        table: table_name(tun),
    };
    let mtu = cfg.tun_mtu.to_string();
    host::run(&["ip", "link", "set", "dev", tun, "mtu", &mtu, "up"], None)?;
    for p in &clients {
        let fam = if p.addr().is_ipv4() { "-4" } else { "-6" };
        host::run(
            &["ip", fam, "route", "replace", &p.to_string(), "dev", tun],
            None,
        )?;
    }
    for (path, what) in [
        ("/proc/sys/net/ipv4/ip_forward", "IPv4 forwarding"),
        ("/proc/sys/net/ipv6/conf/all/forwarding", "IPv6 forwarding"),
    ] {
        std::fs::write(path, "1").map_err(ioerr(format!("enabling {what} ({path})")))?;
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_filters_the_tun_both_ways_with_counters() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let r = ruleset(
            "sluice0",
            &[p("192.0.2.0/24"), p("2001:db8:1::/64")],
            &[p("169.254.0.0/16"), p("fd00:ec2::254/128")],
            false,
        );
        for line in [
            "table inet sluice_edge_sluice0 {",
            "set clients4 { type ipv4_addr; flags interval; auto-merge; elements = { 192.0.2.0/24 }; }",
            "iifname \"sluice0\" ct state invalid counter name \"tun_invalid\" drop",
            "iifname \"sluice0\" oifname \"sluice0\" counter name \"tun_to_tun\" drop",
            "iifname \"sluice0\" ct state established,related accept",
            "iifname \"sluice0\" counter name \"tun_to_host\" drop",
            "iifname \"sluice0\" ip daddr @reserved4 counter name \"tun_to_reserved\" drop",
            "oifname \"sluice0\" ct state established,related accept",
            "oifname \"sluice0\" counter name \"into_tun_new\" drop",
            "ip saddr @clients4 oifname != \"sluice0\" masquerade",
        ] {
            assert!(r.contains(line), "missing `{line}` in:\n{r}");
        }
        for c in COUNTERS {
            assert!(r.contains(&format!("counter {c} {{ }}")), "{c}");
        }
        // Reserved IPv4 prefixes in their IPv6 forms too (compatible,
        // mapped, NAT64, 6to4).
        assert!(
            r.contains(
                "set reserved6 { type ipv6_addr; flags interval; auto-merge; elements = { ::a9fe:0/112, ::ffff:169.254.0.0/112, 64:ff9b::a9fe:0/112, 2002:a9fe::/32, fd00:ec2::254/128 }; }"
            ),
            "{r}"
        );
        // A family without prefixes gets an empty set, not a syntax error.
        let r = ruleset("t0", &[p("192.0.2.0/24")], &[], false);
        assert!(
            r.contains("set clients6 { type ipv6_addr; flags interval; auto-merge; }"),
            "{r}"
        );
        // Several workers: random source ports.
        let r = ruleset("t0", &[p("192.0.2.0/24")], &[], true);
        assert!(
            r.contains("ip saddr @clients4 oifname != \"t0\" masquerade fully-random"),
            "{r}"
        );
    }
}
