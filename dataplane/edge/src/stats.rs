//! The edge's counters in Prometheus text: each worker's
//! (`sluice_core::edge::stats`) added up, the shared books' gauges, and a
//! few per worker.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use crate::{mesh::Mesh, metrics::sample};
use sluice_core::edge::{
    Shared,
    router::GatewayId,
    stats::{EdgeStats, GatewayStats},
};

/// Every worker's counters and the shared books: what the metrics
/// endpoint renders ([`render`]).
#[derive(Debug)]
pub struct EdgeMetrics {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cores: Vec<Arc<EdgeStats>>,
    pub(crate) mesh: Arc<Mesh>,
}

/// A counter of the edge's core.
type Field = fn(&EdgeStats) -> &AtomicU64;
/// A counter of a gateway.
type GwField = fn(&GatewayStats) -> &AtomicU64;

impl EdgeMetrics {
    /// `field` added up over the workers.
    fn sum(&self, field: Field) -> u64 {
        self.cores.iter().map(|c| field(c).load(Relaxed)).sum()
    }

    /// Gateway `g`'s `field` added up over the workers.
    fn gw_sum(&self, g: usize, field: GwField) -> u64 {
        self.cores
            .iter()
            .filter_map(|c| c.gateways.get(g))
            .map(|s| field(s).load(Relaxed))
            .sum()
    }
}

/// Renders the counters in Prometheus text format.
#[allow(clippy::too_many_lines, reason = "the list of metrics, one row each")]
pub fn render(m: &EdgeMetrics, out: &mut String) {
    /// Name, help, label name, rows (label value, counter).
    type Labelled<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, Field)]);
    const C: &str = "counter";
    const G: &str = "gauge";
    let plain: [(&str, &str, &str, Field); 20] = [
        (
            "sluice_edge_datagrams_rx_total",
            C,
            "Datagrams received on the datagram transport's socket.",
            |s| &s.datagrams_rx,
        ),
        (
            "sluice_edge_datagrams_tx_total",
            C,
            "Datagrams sealed for gateways (packets, echo replies, key acknowledgements).",
            |s| &s.datagrams_tx,
        ),
        (
            "sluice_edge_datagram_rebinds_total",
            C,
            "Times a gateway's datagram address moved (NAT rebinding) after an authenticated datagram from the new one.",
            |s| &s.datagram_rebinds,
        ),
        (
            "sluice_edge_datagram_offers_refused_total",
            C,
            "Gateways' datagram offers refused (datagrams off, no receiver id free).",
            |s| &s.datagram_refused,
        ),
        (
            "sluice_edge_datagram_sessions",
            G,
            "Tunnels with the datagram transport set up.",
            |s| &s.datagram_sessions,
        ),
        (
            "sluice_edge_conns_accepted_total",
            C,
            "Connections accepted.",
            |s| &s.conns_accepted,
        ),
        (
            "sluice_edge_conns_active",
            G,
            "Connections open (handshakes and tunnels).",
            |s| &s.conns_active,
        ),
        (
            "sluice_edge_conns_closed_total",
            C,
            "Connections closed.",
            |s| &s.conns_closed,
        ),
        (
            "sluice_edge_tunnels",
            G,
            "Authenticated tunnels open.",
            |s| &s.tunnels,
        ),
        (
            "sluice_edge_handshakes_timed_out_total",
            C,
            "Handshakes not over by edge.handshake_timeout_secs.",
            |s| &s.handshakes_timed_out,
        ),
        (
            "sluice_edge_handshakes_failed_total",
            C,
            "Handshakes that failed.",
            |s| &s.handshakes_failed,
        ),
        (
            "sluice_edge_conns_stalled_total",
            C,
            "Tunnels closed because the peer stopped reading.",
            |s| &s.conns_stalled,
        ),
        (
            "sluice_edge_logs_suppressed_total",
            C,
            "Log lines suppressed by rate limiting.",
            |s| &s.logs_suppressed,
        ),
        (
            "sluice_edge_to_kernel_packets_total",
            C,
            "Packets decapsulated to the kernel.",
            |s| &s.to_kernel_packets,
        ),
        (
            "sluice_edge_to_kernel_bytes_total",
            C,
            "Bytes decapsulated to the kernel.",
            |s| &s.to_kernel_bytes,
        ),
        (
            "sluice_edge_to_tunnel_packets_total",
            C,
            "Packets sent into tunnels.",
            |s| &s.to_tunnel_packets,
        ),
        (
            "sluice_edge_to_tunnel_bytes_total",
            C,
            "Bytes sent into tunnels.",
            |s| &s.to_tunnel_bytes,
        ),
        (
            "sluice_edge_tun_writes_total",
            C,
            "Writes to the TUN device (a GSO packet is one write).",
            |s| &s.tun_writes,
        ),
        (
            "sluice_edge_gro_merged_packets_total",
            C,
            "Packets written to the TUN device inside GSO packets.",
            |s| &s.gro_merged,
        ),
        (
            "sluice_edge_route_quota_total",
            C,
            "Packets whose source address was not learnt: the gateway's max_routes reached.",
            |s| &s.route_quota,
        ),
    ];
    for (name, kind, help, f) in plain {
        sample(out, name, kind, Some(help), &[], m.sum(f));
    }
    sample(
        out,
        "sluice_edge_handshakes_active",
        G,
        Some("Connections in their handshake."),
        &[],
        u64::from(m.shared.handshakes()),
    );
    sample(
        out,
        "sluice_edge_routes",
        G,
        Some("Inner addresses replies are routed to."),
        &[],
        m.shared.directory().len() as u64,
    );
    let labelled: [Labelled<'_>; 5] = [
        (
            "sluice_edge_handshakes_refused_total",
            "Connections refused or closed before their handshake, by cap.",
            "reason",
            &[
                ("prefix_cap", |s| &s.refused_prefix_cap),
                ("global_cap", |s| &s.refused_global_cap),
                ("evicted", |s| &s.handshakes_evicted),
            ],
        ),
        (
            "sluice_edge_tunnels_refused_total",
            "Authenticated peers refused, by reason.",
            "reason",
            &[
                ("unknown_gateway", |s| &s.refused_unknown_gateway),
                ("tunnel_cap", |s| &s.refused_tunnel_cap),
                ("revoked", |s| &s.refused_revoked),
            ],
        ),
        (
            "sluice_edge_tunnels_revoked_total",
            "Live tunnels closed because the controller no longer lists their certificate.",
            "reason",
            &[("revoked", |s| &s.tunnels_revoked)],
        ),
        (
            "sluice_edge_accept_errors_total",
            "Failed accepts, by kind.",
            "kind",
            &[
                ("no_descriptor", |s| &s.accept_no_fd),
                ("other", |s| &s.accept_errors),
            ],
        ),
        (
            "sluice_edge_drops_total",
            "Packets dropped by the edge, by reason.",
            "reason",
            &[
                ("spoofed", |s| &s.drop_spoofed),
                ("to_gateway", |s| &s.drop_to_gateway),
                ("reserved", |s| &s.drop_reserved),
                ("malformed", |s| &s.drop_malformed),
                ("no_route", |s| &s.drop_no_route),
                ("backpressure", |s| &s.drop_backpressure),
                ("tun_write", |s| &s.drop_tun_write),
                ("tun_offload", |s| &s.drop_tun_offload),
            ],
        ),
    ];
    for (name, help, label, rows) in labelled {
        for (i, (l, f)) in rows.iter().enumerate() {
            let help = (i == 0).then_some(help);
            sample(out, name, C, help, &[(label, l)], m.sum(*f));
        }
    }
    for (i, reason) in sluice_core::datagram::DropReason::ALL.iter().enumerate() {
        let v: u64 = m
            .cores
            .iter()
            .filter_map(|c| c.datagram_drops.get(i))
            .map(|a| a.load(Relaxed))
            .sum();
        sample(
            out,
            "sluice_edge_datagram_drops_total",
            C,
            (i == 0).then_some(
                "Datagrams dropped: unopened (malformed, unknown receiver, failed authentication, replayed, too old, stale or future key) or refused.",
            ),
            &[("reason", reason.name())],
            v,
        );
    }
    let per: [(&str, &str, &str, GwField); 3] = [
        (
            "sluice_edge_gateway_tunnels",
            G,
            "Authenticated tunnels, by gateway.",
            |s| &s.tunnels,
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
    let names: Vec<&str> = m
        .cores
        .first()
        .map(|c| c.gateways.iter().map(|g| g.name.as_str()).collect())
        .unwrap_or_default();
    for (name, kind, help, field) in per {
        for (i, gw) in names.iter().enumerate() {
            let help = (i == 0).then_some(help);
            sample(
                out,
                name,
                kind,
                help,
                &[("gateway", gw)],
                m.gw_sum(i, field),
            );
        }
    }
    for (i, gw) in names.iter().enumerate() {
        let g = GatewayId::try_from(i).unwrap_or(GatewayId::MAX);
        sample(
            out,
            "sluice_edge_gateway_routes",
            G,
            (i == 0).then_some("Reply routes, by gateway."),
            &[("gateway", gw)],
            u64::from(m.shared.directory().gateway_routes(g)),
        );
    }
    render_workers(m, out);
}

/// The workers: how many, what the mesh carried, and per worker its
/// tunnels, connections and packets both ways.
#[allow(clippy::too_many_lines, reason = "the list of metrics, one row each")]
fn render_workers(m: &EdgeMetrics, out: &mut String) {
    /// Name, kind, help, the value for a worker.
    type PerWorker = (
        &'static str,
        &'static str,
        &'static str,
        fn(&EdgeMetrics, usize) -> u64,
    );
    const C: &str = "counter";
    const G: &str = "gauge";
    let n = m.mesh.workers();
    sample(
        out,
        "sluice_edge_workers",
        G,
        Some("Worker threads (edge.workers)."),
        &[],
        n as u64,
    );
    let mesh_sum = |f: fn(&crate::mesh::WorkerStats) -> &AtomicU64| -> u64 {
        (0..n)
            .filter_map(|w| m.mesh.stats(w))
            .map(|s| f(s).load(Relaxed))
            .sum()
    };
    sample(
        out,
        "sluice_edge_reply_handoffs_total",
        C,
        Some(
            "Replies the kernel put on one worker's TUN queue, handed to the worker holding their tunnel.",
        ),
        &[],
        mesh_sum(|s| &s.handoffs),
    );
    sample(
        out,
        "sluice_edge_reply_handoff_drops_total",
        C,
        Some(
            "Replies dropped instead of handed over: the owning worker's queue was full (or the packet longer than its buffers).",
        ),
        &[],
        mesh_sum(|s| &s.handoff_drops),
    );
    sample(
        out,
        "sluice_edge_conns_passed_total",
        C,
        Some("Connections accepted by one worker and passed to one with fewer."),
        &[],
        mesh_sum(|s| &s.passed),
    );
    let per: [PerWorker; 6] = [
        (
            "sluice_edge_worker_tunnels",
            G,
            "Authenticated tunnels, by worker.",
            |m, w| m.cores.get(w).map_or(0, |c| c.tunnels.load(Relaxed)),
        ),
        (
            "sluice_edge_worker_conns",
            G,
            "Connections (handshakes and tunnels), by worker.",
            |m, w| u64::from(m.mesh.load(w)),
        ),
        (
            "sluice_edge_worker_to_kernel_packets_total",
            C,
            "Packets from tunnels written to the TUN device, by worker.",
            |m, w| {
                m.cores
                    .get(w)
                    .map_or(0, |c| c.to_kernel_packets.load(Relaxed))
            },
        ),
        (
            "sluice_edge_worker_to_tunnel_packets_total",
            C,
            "Packets sent into tunnels, by worker (replies handed over count where they were sent).",
            |m, w| {
                m.cores
                    .get(w)
                    .map_or(0, |c| c.to_tunnel_packets.load(Relaxed))
            },
        ),
        (
            "sluice_edge_worker_reply_handoffs_total",
            C,
            "Replies handed to another worker, by the worker that read them.",
            |m, w| m.mesh.stats(w).map_or(0, |s| s.handoffs.load(Relaxed)),
        ),
        (
            "sluice_edge_worker_replies_handed_in_total",
            C,
            "Replies handed over by other workers, by the worker that received them.",
            |m, w| m.mesh.stats(w).map_or(0, |s| s.handed_in.load(Relaxed)),
        ),
    ];
    for (name, kind, help, f) in per {
        for w in 0..n {
            let label = w.to_string();
            sample(
                out,
                name,
                kind,
                (w == 0).then_some(help),
                &[("worker", &label)],
                f(m, w),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use sluice_core::edge::{EdgeGateway, EdgeLimits, Settings};

    /// Counters are added up over the workers, gauges of the shared books
    /// counted once, and each worker has its own rows.
    #[test]
    fn renders_every_counter_and_gateway_summed_over_workers() {
        let gw = |name: &str, p: &str| EdgeGateway {
            name: name.into(),
            spki_sha256: None,
            prefixes: vec![p.parse().unwrap()],
            max_tunnels: 8,
            max_routes: 16,
        };
        let settings = Settings {
            name: "edge".into(),
            keepalive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            gateways: vec![
                gw("branch-1", "192.0.2.0/24"),
                gw("branch-2", "198.18.2.0/24"),
            ],
            reserved: Vec::new(),
            datagram_port: None,
        };
        let shared = Arc::new(
            Shared::new(
                &settings,
                EdgeLimits::default(),
                &sluice_core::lpm::NoAdvice,
                2,
            )
            .unwrap(),
        );
        let cores: Vec<Arc<EdgeStats>> = (0..2)
            .map(|_| {
                Arc::new(EdgeStats::new([
                    "branch-1".to_string(),
                    "branch-2".to_string(),
                ]))
            })
            .collect();
        for c in &cores {
            c.drop_spoofed.fetch_add(7, Relaxed);
            c.gateways[1].spoofed.fetch_add(7, Relaxed);
            c.tunnels.store(1, Relaxed);
        }
        let m = EdgeMetrics {
            shared,
            cores,
            mesh: Arc::new(Mesh::new(2, 1500, 8)),
        };
        let mut out = String::new();
        render(&m, &mut out);
        for line in [
            "sluice_edge_drops_total{reason=\"spoofed\"} 14",
            "sluice_edge_gateway_spoofed_total{gateway=\"branch-2\"} 14",
            "sluice_edge_gateway_tunnels{gateway=\"branch-1\"} 0",
            "sluice_edge_gateway_routes{gateway=\"branch-2\"} 0",
            "sluice_edge_handshakes_refused_total{reason=\"evicted\"} 0",
            "sluice_edge_tunnels 2",
            "sluice_edge_workers 2",
            "sluice_edge_worker_tunnels{worker=\"1\"} 1",
            "sluice_edge_reply_handoffs_total 0",
            "# TYPE sluice_edge_tunnels gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
        }
    }
}
