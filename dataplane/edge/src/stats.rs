//! The edge's counters (`sluice_core::edge::stats`) in Prometheus text.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::sample;
use sluice_core::edge::stats::{EdgeStats, GatewayStats};

/// Renders the counters in Prometheus text format.
#[allow(clippy::too_many_lines, reason = "the list of metrics, one row each")]
pub fn render(stats: &EdgeStats, out: &mut String) {
    /// Name, help, label name, rows (label value, counter).
    type Labelled<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a AtomicU64)]);
    type Field = fn(&GatewayStats) -> &AtomicU64;
    const C: &str = "counter";
    const G: &str = "gauge";
    let plain: [(&str, &str, &str, &AtomicU64); 17] = [
        (
            "sluice_edge_conns_accepted_total",
            C,
            "Connections accepted.",
            &stats.conns_accepted,
        ),
        (
            "sluice_edge_conns_active",
            G,
            "Connections open (handshakes and tunnels).",
            &stats.conns_active,
        ),
        (
            "sluice_edge_conns_closed_total",
            C,
            "Connections closed.",
            &stats.conns_closed,
        ),
        (
            "sluice_edge_tunnels",
            G,
            "Authenticated tunnels open.",
            &stats.tunnels,
        ),
        (
            "sluice_edge_handshakes_active",
            G,
            "Connections in their handshake.",
            &stats.handshakes_active,
        ),
        (
            "sluice_edge_handshakes_timed_out_total",
            C,
            "Handshakes not over by edge.handshake_timeout_secs.",
            &stats.handshakes_timed_out,
        ),
        (
            "sluice_edge_handshakes_failed_total",
            C,
            "Handshakes that failed.",
            &stats.handshakes_failed,
        ),
        (
            "sluice_edge_conns_stalled_total",
            C,
            "Tunnels closed because the peer stopped reading.",
            &stats.conns_stalled,
        ),
        (
            "sluice_edge_logs_suppressed_total",
            C,
            "Log lines suppressed by rate limiting.",
            &stats.logs_suppressed,
        ),
        (
            "sluice_edge_to_kernel_packets_total",
            C,
            "Packets decapsulated to the kernel.",
            &stats.to_kernel_packets,
        ),
        (
            "sluice_edge_to_kernel_bytes_total",
            C,
            "Bytes decapsulated to the kernel.",
            &stats.to_kernel_bytes,
        ),
        (
            "sluice_edge_to_tunnel_packets_total",
            C,
            "Packets sent into tunnels.",
            &stats.to_tunnel_packets,
        ),
        (
            "sluice_edge_to_tunnel_bytes_total",
            C,
            "Bytes sent into tunnels.",
            &stats.to_tunnel_bytes,
        ),
        (
            "sluice_edge_tun_writes_total",
            C,
            "Writes to the TUN device (a GSO packet is one write).",
            &stats.tun_writes,
        ),
        (
            "sluice_edge_gro_merged_packets_total",
            C,
            "Packets written to the TUN device inside GSO packets.",
            &stats.gro_merged,
        ),
        (
            "sluice_edge_routes",
            G,
            "Inner addresses replies are routed to.",
            &stats.routes,
        ),
        (
            "sluice_edge_route_quota_total",
            C,
            "Packets whose source address was not learnt: the gateway's max_routes reached.",
            &stats.route_quota,
        ),
    ];
    for (name, kind, help, v) in plain {
        sample(out, name, kind, Some(help), &[], v.load(Relaxed));
    }
    let labelled: [Labelled<'_>; 4] = [
        (
            "sluice_edge_handshakes_refused_total",
            "Connections refused or closed before their handshake, by cap.",
            "reason",
            &[
                ("prefix_cap", &stats.refused_prefix_cap),
                ("global_cap", &stats.refused_global_cap),
                ("evicted", &stats.handshakes_evicted),
            ],
        ),
        (
            "sluice_edge_tunnels_refused_total",
            "Authenticated peers refused, by reason.",
            "reason",
            &[
                ("unknown_gateway", &stats.refused_unknown_gateway),
                ("tunnel_cap", &stats.refused_tunnel_cap),
            ],
        ),
        (
            "sluice_edge_accept_errors_total",
            "Failed accepts, by kind.",
            "kind",
            &[
                ("no_descriptor", &stats.accept_no_fd),
                ("other", &stats.accept_errors),
            ],
        ),
        (
            "sluice_edge_drops_total",
            "Packets dropped by the edge, by reason.",
            "reason",
            &[
                ("spoofed", &stats.drop_spoofed),
                ("to_gateway", &stats.drop_to_gateway),
                ("reserved", &stats.drop_reserved),
                ("malformed", &stats.drop_malformed),
                ("no_route", &stats.drop_no_route),
                ("backpressure", &stats.drop_backpressure),
                ("tun_write", &stats.drop_tun_write),
                ("tun_offload", &stats.drop_tun_offload),
            ],
        ),
    ];
    for (name, help, label, rows) in labelled {
        for (i, (l, v)) in rows.iter().enumerate() {
            let help = (i == 0).then_some(help);
            sample(out, name, C, help, &[(label, l)], v.load(Relaxed));
        }
    }
    let per: [(&str, &str, &str, Field); 4] = [
        (
            "sluice_edge_gateway_tunnels",
            G,
            "Authenticated tunnels, by gateway.",
            |s| &s.tunnels,
        ),
        (
            "sluice_edge_gateway_routes",
            G,
            "Reply routes, by gateway.",
            |s| &s.routes,
        ),
        (
            "sluice_edge_gateway_spoofed_total",
            C,
            "Packets dropped as spoofed, by gateway.",
            |s| &s.spoofed,
        ),
        (
            "sluice_edge_gateway_packets_total",
            C,
            "Packets from tunnels delivered, by gateway.",
            |s| &s.packets,
        ),
    ];
    for (name, kind, help, field) in per {
        for (i, s) in stats.gateways.iter().enumerate() {
            let help = (i == 0).then_some(help);
            sample(
                out,
                name,
                kind,
                help,
                &[("gateway", &s.name)],
                field(s).load(Relaxed),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_and_gateway() {
        let s = EdgeStats::new(["branch-1".to_string(), "branch-2".to_string()]);
        s.drop_spoofed.store(7, Relaxed);
        s.gateways[1].spoofed.store(7, Relaxed);
        let mut out = String::new();
        render(&s, &mut out);
        for line in [
            "sluice_edge_drops_total{reason=\"spoofed\"} 7",
            "sluice_edge_gateway_spoofed_total{gateway=\"branch-2\"} 7",
            "sluice_edge_gateway_tunnels{gateway=\"branch-1\"} 0",
            "sluice_edge_handshakes_refused_total{reason=\"evicted\"} 0",
            "# TYPE sluice_edge_tunnels gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
        }
    }
}
