//! The edge's counters, shared with the metrics thread (Prometheus text).
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::sample;

/// Counters of one gateway (by its name in `[[edge.gateway]]`).
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// The gateway's name.
    pub name: String,
    /// Its authenticated tunnels (a gauge).
    pub tunnels: AtomicU64,
    /// Its LAN addresses replies are routed to (a gauge).
    pub routes: AtomicU64,
    /// Packets from its tunnels with a source outside its prefixes.
    pub spoofed: AtomicU64,
    /// Packets from its tunnels delivered to the kernel.
    pub packets: AtomicU64,
}

/// The edge's counters.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Connections accepted (TCP).
    pub conns_accepted: AtomicU64,
    /// Connections currently open (handshakes and tunnels).
    pub conns_active: AtomicU64,
    /// Connections closed, for any reason.
    pub conns_closed: AtomicU64,
    /// Connections still in their handshake (a gauge).
    pub handshakes_active: AtomicU64,
    /// Connections refused at accept: their source prefix already had
    /// `max_handshakes_per_prefix` in their handshake.
    pub refused_prefix_cap: AtomicU64,
    /// Connections refused at accept: `max_handshakes` in all, none from a
    /// busier prefix to make room.
    pub refused_global_cap: AtomicU64,
    /// Handshakes closed to make room for a connection from a less busy
    /// source prefix.
    pub handshakes_evicted: AtomicU64,
    /// Handshakes not over by `handshake_timeout`.
    pub handshakes_timed_out: AtomicU64,
    /// Handshakes that failed (TLS error, peer gone).
    pub handshakes_failed: AtomicU64,
    /// Authenticated peers refused: the certificate names no gateway of
    /// the configuration (or not its pinned key).
    pub refused_unknown_gateway: AtomicU64,
    /// Authenticated peers refused: the gateway already holds
    /// `max_tunnels` tunnels, or the edge `edge.max_tunnels` in all.
    pub refused_tunnel_cap: AtomicU64,
    /// Tunnels closed because the peer stopped reading.
    pub conns_stalled: AtomicU64,
    /// `accept` failed for want of descriptors (EMFILE, ENFILE).
    pub accept_no_fd: AtomicU64,
    /// `accept` failed otherwise.
    pub accept_errors: AtomicU64,
    /// Log lines suppressed by rate limiting.
    pub logs_suppressed: AtomicU64,
    /// Authenticated tunnels open (a gauge).
    pub tunnels: AtomicU64,
    /// Packets from tunnels written to the TUN device.
    pub to_kernel_packets: AtomicU64,
    /// Their bytes.
    pub to_kernel_bytes: AtomicU64,
    /// Packets from the TUN device sent into tunnels.
    pub to_tunnel_packets: AtomicU64,
    /// Their bytes.
    pub to_tunnel_bytes: AtomicU64,
    /// Dropped: source address outside the sending gateway's prefixes.
    pub drop_spoofed: AtomicU64,
    /// Dropped: from a tunnel to a gateway's LAN (its own or another's).
    pub drop_to_gateway: AtomicU64,
    /// Dropped: from a tunnel to a reserved destination (link-local,
    /// metadata, `edge.management`).
    pub drop_reserved: AtomicU64,
    /// Dropped: not a valid IP packet.
    pub drop_malformed: AtomicU64,
    /// Dropped: no tunnel has carried traffic from the destination.
    pub drop_no_route: AtomicU64,
    /// Dropped: the tunnel's send buffer was full.
    pub drop_backpressure: AtomicU64,
    /// Dropped: writing to the TUN device failed.
    pub drop_tun_write: AtomicU64,
    /// Writes to the TUN device (one per packet, or per GSO packet).
    pub tun_writes: AtomicU64,
    /// Packets that went to the kernel inside GSO packets.
    pub gro_merged: AtomicU64,
    /// Dropped: a packet read from the TUN device came with offloads
    /// that were not asked for (a GSO packet).
    pub drop_tun_offload: AtomicU64,
    /// Inner addresses replies are routed to (a gauge).
    pub routes: AtomicU64,
    /// Packets whose source address could not be learnt: the gateway's
    /// `max_routes` was reached (they are still forwarded; replies to them
    /// are not).
    pub route_quota: AtomicU64,
    /// Per gateway, in configuration order.
    pub gateways: Vec<GatewayStats>,
}

impl EdgeStats {
    /// Counters for the gateways named `names`, all zero.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            gateways: names
                .into_iter()
                .map(|name| GatewayStats {
                    name,
                    ..GatewayStats::default()
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Renders the counters in Prometheus text format.
    #[allow(clippy::too_many_lines, reason = "the list of metrics, one row each")]
    pub fn render(&self, out: &mut String) {
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
                &self.conns_accepted,
            ),
            (
                "sluice_edge_conns_active",
                G,
                "Connections open (handshakes and tunnels).",
                &self.conns_active,
            ),
            (
                "sluice_edge_conns_closed_total",
                C,
                "Connections closed.",
                &self.conns_closed,
            ),
            (
                "sluice_edge_tunnels",
                G,
                "Authenticated tunnels open.",
                &self.tunnels,
            ),
            (
                "sluice_edge_handshakes_active",
                G,
                "Connections in their handshake.",
                &self.handshakes_active,
            ),
            (
                "sluice_edge_handshakes_timed_out_total",
                C,
                "Handshakes not over by edge.handshake_timeout_secs.",
                &self.handshakes_timed_out,
            ),
            (
                "sluice_edge_handshakes_failed_total",
                C,
                "Handshakes that failed.",
                &self.handshakes_failed,
            ),
            (
                "sluice_edge_conns_stalled_total",
                C,
                "Tunnels closed because the peer stopped reading.",
                &self.conns_stalled,
            ),
            (
                "sluice_edge_logs_suppressed_total",
                C,
                "Log lines suppressed by rate limiting.",
                &self.logs_suppressed,
            ),
            (
                "sluice_edge_to_kernel_packets_total",
                C,
                "Packets decapsulated to the kernel.",
                &self.to_kernel_packets,
            ),
            (
                "sluice_edge_to_kernel_bytes_total",
                C,
                "Bytes decapsulated to the kernel.",
                &self.to_kernel_bytes,
            ),
            (
                "sluice_edge_to_tunnel_packets_total",
                C,
                "Packets sent into tunnels.",
                &self.to_tunnel_packets,
            ),
            (
                "sluice_edge_to_tunnel_bytes_total",
                C,
                "Bytes sent into tunnels.",
                &self.to_tunnel_bytes,
            ),
            (
                "sluice_edge_tun_writes_total",
                C,
                "Writes to the TUN device (a GSO packet is one write).",
                &self.tun_writes,
            ),
            (
                "sluice_edge_gro_merged_packets_total",
                C,
                "Packets written to the TUN device inside GSO packets.",
                &self.gro_merged,
            ),
            (
                "sluice_edge_routes",
                G,
                "Inner addresses replies are routed to.",
                &self.routes,
            ),
            (
                "sluice_edge_route_quota_total",
                C,
                "Packets whose source address was not learnt: the gateway's max_routes reached.",
                &self.route_quota,
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
                    ("prefix_cap", &self.refused_prefix_cap),
                    ("global_cap", &self.refused_global_cap),
                    ("evicted", &self.handshakes_evicted),
                ],
            ),
            (
                "sluice_edge_tunnels_refused_total",
                "Authenticated peers refused, by reason.",
                "reason",
                &[
                    ("unknown_gateway", &self.refused_unknown_gateway),
                    ("tunnel_cap", &self.refused_tunnel_cap),
                ],
            ),
            (
                "sluice_edge_accept_errors_total",
                "Failed accepts, by kind.",
                "kind",
                &[
                    ("no_descriptor", &self.accept_no_fd),
                    ("other", &self.accept_errors),
                ],
            ),
            (
                "sluice_edge_drops_total",
                "Packets dropped by the edge, by reason.",
                "reason",
                &[
                    ("spoofed", &self.drop_spoofed),
                    ("to_gateway", &self.drop_to_gateway),
                    ("reserved", &self.drop_reserved),
                    ("malformed", &self.drop_malformed),
                    ("no_route", &self.drop_no_route),
                    ("backpressure", &self.drop_backpressure),
                    ("tun_write", &self.drop_tun_write),
                    ("tun_offload", &self.drop_tun_offload),
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
            for (i, s) in self.gateways.iter().enumerate() {
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
        s.render(&mut out);
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
