//! The lab's nftables rulesets: masquerade on `gw`, named counters on `inet`.

use std::fmt::Write as _;

use crate::addr::{
    BYPASSED_V4, BYPASSED_V6, EDGE_WAN_V4, EDGE_WAN_V6, EDGE2_WAN_V4, EDGE2_WAN_V6, EDGE3_WAN_V4,
    EDGE3_WAN_V6, GW_WAN_V4, GW_WAN_V6, LAN_V4_NET, LAN_V4_PREFIX_LEN, LAN_V6_NET,
    LAN_V6_PREFIX_LEN, LAN2_V4_NET, LAN2_V6_NET, TUNNELLED_V4, TUNNELLED_V6, ifname,
};

/// Table (family `inet`) holding the counters in the `inet` namespace.
pub(crate) const COUNTER_TABLE: &str = "sluice_lab";
/// Table (family `inet`) holding the masquerade rules in the `gw` namespace.
pub(crate) const NAT_TABLE: &str = "sluice_lab_nat";

/// Names of the nftables counters in the `inet` namespace, read with
/// [`Lab::nft_counter`](crate::Lab::nft_counter).
///
/// They count packets ARRIVING at `inet` (hook `prerouting`, priority `raw`,
/// before any routing decision, so dropped and unroutable packets count too),
/// matched on (source, destination) address.
pub mod counter {
    /// From the gateway's WAN address `198.51.100.1` to the tunnelled server
    /// `203.0.113.10`: must stay 0 when tunnelling works.
    pub const GW_TO_TUNNELLED_V4: &str = "gw_to_tunnelled_v4";
    /// From `198.51.100.1` to the bypassed server `203.0.113.20`.
    pub const GW_TO_BYPASSED_V4: &str = "gw_to_bypassed_v4";
    /// From the edge's address `198.51.100.5` to `203.0.113.10`.
    pub const EDGE_TO_TUNNELLED_V4: &str = "edge_to_tunnelled_v4";
    /// From `198.51.100.5` to `203.0.113.20`: must stay 0 for bypassed traffic.
    pub const EDGE_TO_BYPASSED_V4: &str = "edge_to_bypassed_v4";
    /// From the gateway's WAN address `2001:db8:2::1` to `2001:db8:100::10`.
    pub const GW_TO_TUNNELLED_V6: &str = "gw_to_tunnelled_v6";
    /// From `2001:db8:2::1` to `2001:db8:100::20`.
    pub const GW_TO_BYPASSED_V6: &str = "gw_to_bypassed_v6";
    /// From the edge's address `2001:db8:3::5` to `2001:db8:100::10`.
    pub const EDGE_TO_TUNNELLED_V6: &str = "edge_to_tunnelled_v6";
    /// From `2001:db8:3::5` to `2001:db8:100::20`.
    pub const EDGE_TO_BYPASSED_V6: &str = "edge_to_bypassed_v6";
    /// Anything arriving with a LAN source `192.0.2.0/24`, i.e. leaked
    /// without NAT: must stay 0.
    pub const LAN_LEAK_V4: &str = "lan_leak_v4";
    /// Anything arriving with a LAN source `2001:db8:1::/64`: must stay 0.
    pub const LAN_LEAK_V6: &str = "lan_leak_v6";
    /// TCP SYNs (without ACK) from `198.51.100.1` to `203.0.113.10`: a
    /// connection's first packet leaving the gateway directly.
    pub const GW_SYN_TO_TUNNELLED_V4: &str = "gw_syn_to_tunnelled_v4";
    /// TCP SYNs from the edge `198.51.100.5` to `203.0.113.10`.
    pub const EDGE_SYN_TO_TUNNELLED_V4: &str = "edge_syn_to_tunnelled_v4";
    /// From the second edge's address `198.51.100.13` to `203.0.113.10`
    /// (labs with several edges: which edge carries the tunnelled traffic).
    pub const EDGE2_TO_TUNNELLED_V4: &str = "edge2_to_tunnelled_v4";
    /// From the third edge's address `198.51.100.17` to `203.0.113.10`.
    pub const EDGE3_TO_TUNNELLED_V4: &str = "edge3_to_tunnelled_v4";
    /// From `2001:db8:32::13` (the second edge) to `2001:db8:100::10`.
    pub const EDGE2_TO_TUNNELLED_V6: &str = "edge2_to_tunnelled_v6";
    /// From `2001:db8:33::17` (the third edge) to `2001:db8:100::10`.
    pub const EDGE3_TO_TUNNELLED_V6: &str = "edge3_to_tunnelled_v6";
    /// The counters that must stay 0 whatever happens to sluice: packets
    /// for the tunnelled servers leaving the gateway's WAN directly, and
    /// LAN sources reaching `inet` untranslated
    /// ([`Lab::leaks`](crate::Lab::leaks)).
    pub const LEAKS: [&str; 4] = [
        GW_TO_TUNNELLED_V4,
        GW_TO_TUNNELLED_V6,
        LAN_LEAK_V4,
        LAN_LEAK_V6,
    ];
    /// Every counter above.
    pub const ALL: [&str; 16] = [
        GW_TO_TUNNELLED_V4,
        GW_TO_BYPASSED_V4,
        EDGE_TO_TUNNELLED_V4,
        EDGE_TO_BYPASSED_V4,
        GW_TO_TUNNELLED_V6,
        GW_TO_BYPASSED_V6,
        EDGE_TO_TUNNELLED_V6,
        EDGE_TO_BYPASSED_V6,
        LAN_LEAK_V4,
        LAN_LEAK_V6,
        GW_SYN_TO_TUNNELLED_V4,
        EDGE_SYN_TO_TUNNELLED_V4,
        EDGE2_TO_TUNNELLED_V4,
        EDGE3_TO_TUNNELLED_V4,
        EDGE2_TO_TUNNELLED_V6,
        EDGE3_TO_TUNNELLED_V6,
    ];
}

/// The `inet` namespace's counters (see [`counter`]).
pub(crate) fn inet_ruleset() -> String {
    use counter::{
        ALL, EDGE_SYN_TO_TUNNELLED_V4, EDGE_TO_BYPASSED_V4, EDGE_TO_BYPASSED_V6,
        EDGE_TO_TUNNELLED_V4, EDGE_TO_TUNNELLED_V6, EDGE2_TO_TUNNELLED_V4, EDGE2_TO_TUNNELLED_V6,
        EDGE3_TO_TUNNELLED_V4, EDGE3_TO_TUNNELLED_V6, GW_SYN_TO_TUNNELLED_V4, GW_TO_BYPASSED_V4,
        GW_TO_BYPASSED_V6, GW_TO_TUNNELLED_V4, GW_TO_TUNNELLED_V6, LAN_LEAK_V4, LAN_LEAK_V6,
    };
    let rules = [
        (
            GW_TO_TUNNELLED_V4,
            format!("ip saddr {GW_WAN_V4} ip daddr {TUNNELLED_V4}"),
        ),
        (
            GW_TO_BYPASSED_V4,
            format!("ip saddr {GW_WAN_V4} ip daddr {BYPASSED_V4}"),
        ),
        (
            EDGE_TO_TUNNELLED_V4,
            format!("ip saddr {EDGE_WAN_V4} ip daddr {TUNNELLED_V4}"),
        ),
        (
            EDGE_TO_BYPASSED_V4,
            format!("ip saddr {EDGE_WAN_V4} ip daddr {BYPASSED_V4}"),
        ),
        (
            GW_TO_TUNNELLED_V6,
            format!("ip6 saddr {GW_WAN_V6} ip6 daddr {TUNNELLED_V6}"),
        ),
        (
            GW_TO_BYPASSED_V6,
            format!("ip6 saddr {GW_WAN_V6} ip6 daddr {BYPASSED_V6}"),
        ),
        (
            EDGE_TO_TUNNELLED_V6,
            format!("ip6 saddr {EDGE_WAN_V6} ip6 daddr {TUNNELLED_V6}"),
        ),
        (
            EDGE_TO_BYPASSED_V6,
            format!("ip6 saddr {EDGE_WAN_V6} ip6 daddr {BYPASSED_V6}"),
        ),
        (
            LAN_LEAK_V4,
            format!("ip saddr {{ {LAN_V4_NET}/{LAN_V4_PREFIX_LEN}, {LAN2_V4_NET}/24 }}"),
        ),
        (
            LAN_LEAK_V6,
            format!("ip6 saddr {{ {LAN_V6_NET}/{LAN_V6_PREFIX_LEN}, {LAN2_V6_NET}/64 }}"),
        ),
        (
            GW_SYN_TO_TUNNELLED_V4,
            format!("ip saddr {GW_WAN_V4} ip daddr {TUNNELLED_V4} tcp flags & (syn | ack) == syn"),
        ),
        (
            EDGE_SYN_TO_TUNNELLED_V4,
            format!(
                "ip saddr {EDGE_WAN_V4} ip daddr {TUNNELLED_V4} tcp flags & (syn | ack) == syn"
            ),
        ),
        (
            EDGE2_TO_TUNNELLED_V4,
            format!("ip saddr {EDGE2_WAN_V4} ip daddr {TUNNELLED_V4}"),
        ),
        (
            EDGE3_TO_TUNNELLED_V4,
            format!("ip saddr {EDGE3_WAN_V4} ip daddr {TUNNELLED_V4}"),
        ),
        (
            EDGE2_TO_TUNNELLED_V6,
            format!("ip6 saddr {EDGE2_WAN_V6} ip6 daddr {TUNNELLED_V6}"),
        ),
        (
            EDGE3_TO_TUNNELLED_V6,
            format!("ip6 saddr {EDGE3_WAN_V6} ip6 daddr {TUNNELLED_V6}"),
        ),
    ];
    debug_assert_eq!(rules.len(), ALL.len());
    let mut s = format!("table inet {COUNTER_TABLE} {{\n");
    for (name, _) in &rules {
        let _ = writeln!(s, "\tcounter {name} {{ }}");
    }
    s.push_str("\tchain count {\n\t\ttype filter hook prerouting priority raw; policy accept;\n");
    for (name, expr) in &rules {
        let _ = writeln!(s, "\t\t{expr} counter name \"{name}\"");
    }
    s.push_str("\t}\n}\n");
    s
}

/// The `gw` namespace's masquerade of LAN traffic leaving `wan0`.
pub(crate) fn gw_ruleset() -> String {
    let wan = ifname::GW_WAN;
    format!(
        "table inet {NAT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{wan}\" ip saddr {LAN_V4_NET}/{LAN_V4_PREFIX_LEN} masquerade\n\
         \t\toifname \"{wan}\" ip6 saddr {LAN_V6_NET}/{LAN_V6_PREFIX_LEN} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Parses `nft list counter` output: `(packets, bytes)`.
pub(crate) fn parse_counter(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let mut packets = None;
    let mut bytes = None;
    while let Some(w) = words.next() {
        match w {
            "packets" => packets = words.next().and_then(|n| n.parse().ok()),
            "bytes" => bytes = words.next().and_then(|n| n.parse().ok()),
            _ => {}
        }
    }
    Some((packets?, bytes?))
}

/// The `gw2` namespace's masquerade of its LAN's traffic leaving `wan0`.
pub(crate) fn gw2_ruleset() -> String {
    let wan = ifname::GW_WAN;
    format!(
        "table inet {NAT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{wan}\" ip saddr {LAN2_V4_NET}/24 masquerade\n\
         \t\toifname \"{wan}\" ip6 saddr {LAN2_V6_NET}/64 masquerade\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counter_listing() {
        let text = "table inet sluice_lab {\n\tcounter gw_to_bypassed_v4 {\n\t\tpackets 3 bytes 252\n\t}\n}\n";
        assert_eq!(parse_counter(text), Some((3, 252)));
        assert_eq!(parse_counter("nothing here"), None);
    }

    #[test]
    fn ruleset_names_every_counter() {
        let rules = inet_ruleset();
        for name in counter::ALL {
            assert!(rules.contains(&format!("counter {name} {{")), "{name}");
            assert!(
                rules.contains(&format!("counter name \"{name}\"")),
                "{name}"
            );
        }
    }
}
