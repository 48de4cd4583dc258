//! Counters of the gateway's workers. Each worker owns one `WorkerStats`
//! and adds to it once per batch (relaxed atomics on a cache line nobody
//! else writes), the metrics thread reads them.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::sample;

macro_rules! worker_stats {
    ($( $(#[$doc:meta])* $field:ident : $kind:literal, $metric:literal, $help:literal ;)*) => {
        /// Counters of one worker (one RX queue).
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerStats {
            $( $(#[$doc])* pub $field: AtomicU64, )*
        }

        impl WorkerStats {
            /// Every counter summed over `workers`, by field name (what
            /// the controller's report carries).
            pub fn totals(workers: &[std::sync::Arc<WorkerStats>]) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($field), workers.iter().map(|w| w.$field.load(Relaxed)).sum()), )*]
            }

            /// Renders the counters of all workers, one metric family at a
            /// time (Prometheus wants families contiguous), labelled with
            /// the queue index.
            pub fn render_all(out: &mut String, workers: &[std::sync::Arc<WorkerStats>]) {
                $(
                    for (q, w) in workers.iter().enumerate() {
                        let q = q.to_string();
                        sample(out, $metric, $kind, (q == "0").then_some($help), &[("queue", &q)], w.$field.load(Relaxed));
                    }
                )*
            }
        }
    };
}

worker_stats! {
    /// Frames received on the `AF_XDP` socket.
    rx_frames: "counter", "sluice_gateway_rx_frames_total", "Frames received from the classifier on the AF_XDP socket.";
    /// Packets sent into the tunnel.
    tunnel_tx_packets: "counter", "sluice_gateway_tunnel_tx_packets_total", "Packets sent into the tunnel.";
    /// Their bytes (IP).
    tunnel_tx_bytes: "counter", "sluice_gateway_tunnel_tx_bytes_total", "IP bytes sent into the tunnel.";
    /// Packets received from the tunnel and sent to the LAN.
    tunnel_rx_packets: "counter", "sluice_gateway_tunnel_rx_packets_total", "Packets from the tunnel transmitted to the LAN.";
    /// Their bytes (IP).
    tunnel_rx_bytes: "counter", "sluice_gateway_tunnel_rx_bytes_total", "IP bytes from the tunnel transmitted to the LAN.";
    /// Dropped because the tunnel is down (fail-closed).
    drop_tunnel_down: "counter", "sluice_gateway_drop_tunnel_down_total", "Packets to tunnel dropped because the tunnel was down (fail-closed).";
    /// Dropped because the tunnel's send buffer was full.
    drop_backpressure: "counter", "sluice_gateway_drop_backpressure_total", "Packets to tunnel dropped because the tunnel send buffer was full.";
    /// Dropped: not a valid Ethernet/IP frame.
    drop_malformed: "counter", "sluice_gateway_drop_malformed_total", "Frames or tunnel packets dropped as malformed.";
    /// Dropped: packet too large for the tunnel.
    drop_too_large: "counter", "sluice_gateway_drop_too_large_total", "Packets dropped as too large for the tunnel.";
    /// Dropped: no MAC known for the LAN destination of a reply.
    drop_no_neighbor: "counter", "sluice_gateway_drop_no_neighbor_total", "Replies dropped because the LAN host's MAC was unknown.";
    /// Requests to the kernel to resolve a LAN address a reply had no
    /// neighbour for.
    neighbor_resolutions: "counter", "sluice_gateway_neighbor_resolutions_total", "Requests to the kernel to resolve a LAN host's address that a reply found no neighbour entry for (at most one a second per address).";
    /// Dropped: no free TX frame.
    drop_tx_full: "counter", "sluice_gateway_drop_tx_full_total", "Replies dropped because the AF_XDP TX ring was full.";
    /// Tunnel connections established.
    tunnel_connects: "counter", "sluice_gateway_tunnel_connects_total", "Tunnel sessions established.";
    /// Tunnel connection attempts that failed or sessions that ended.
    tunnel_failures: "counter", "sluice_gateway_tunnel_failures_total", "Tunnel connection attempts that failed or sessions that ended.";
    /// 1 while the tunnel is established.
    tunnel_up: "gauge", "sluice_gateway_tunnel_up", "1 while this worker's internet tunnel is established.";
    /// Dropped: no valid verdict in front of the frame, or a tunnel this
    /// worker does not have.
    drop_no_verdict: "counter", "sluice_gateway_drop_no_verdict_total", "Frames dropped because the classifier's verdict was missing or named an unknown tunnel.";
    /// Dropped: a DNS message for the domain bypass found this worker's
    /// credits for its kind spent (or was longer than a buffer).
    drop_dns_queue_full: "counter", "sluice_gateway_drop_dns_queue_full_total", "DNS queries and answers dropped because this worker's share of the domain bypass queue was spent (the client asks again).";
    /// Dropped: larger than the tunnel's inner MTU and not to be
    /// fragmented (IPv4 with DF, IPv6); its sender is told (ICMP).
    drop_too_big: "counter", "sluice_gateway_drop_too_big_total", "Packets dropped because they exceed the tunnel's inner MTU and may not be fragmented (IPv4 DF, IPv6).";
    /// IPv4 packets without DF sent into the tunnel as fragments.
    fragmented: "counter", "sluice_gateway_fragmented_total", "IPv4 packets without DF larger than the tunnel's inner MTU, sent as fragments.";
    /// TCP SYNs whose MSS option was lowered to fit the inner MTU.
    mss_clamped: "counter", "sluice_gateway_mss_clamped_total", "TCP SYNs entering the tunnel whose MSS was lowered to fit its inner MTU.";
    /// ICMP "too big" errors sent to LAN hosts.
    icmp_too_big: "counter", "sluice_gateway_icmp_too_big_total", "ICMP fragmentation-needed / ICMPv6 packet-too-big errors sent to LAN hosts.";
    /// ICMP "too big" errors not sent (rate limit or queue full).
    icmp_suppressed: "counter", "sluice_gateway_icmp_suppressed_total", "ICMP too-big errors not sent because of the rate limit (100/s, burst 20 per worker) or a full queue.";
    /// Datagrams sent by the datagram transport.
    udp_tx_datagrams: "counter", "sluice_gateway_udp_tx_datagrams_total", "Datagrams the datagram transport sent (packets, probes, acknowledgements).";
    /// Datagrams the socket refused (send buffer full, an error).
    udp_tx_dropped: "counter", "sluice_gateway_udp_tx_dropped_total", "Datagrams the UDP socket did not take (send buffer full or an error): their packets are lost.";
    /// Datagrams received.
    udp_rx_datagrams: "counter", "sluice_gateway_udp_rx_datagrams_total", "Datagrams received by the datagram transport.";
    /// Datagrams refused: forged, replayed, too old, malformed.
    udp_rx_refused: "counter", "sluice_gateway_udp_rx_refused_total", "Datagrams dropped unopened: failed authentication, replayed, too old, malformed or for another receiver.";
    /// The kernel's count of frames the `AF_XDP` socket dropped (read
    /// every second).
    xsk_rx_dropped: "counter", "sluice_gateway_xsk_rx_dropped_total", "Frames the kernel dropped at this worker's AF_XDP socket (XDP_STATISTICS rx_dropped), read every second.";
    /// Frames dropped because the RX ring was full (the worker fell behind).
    xsk_rx_ring_full: "counter", "sluice_gateway_xsk_rx_ring_full_total", "Frames the kernel dropped because this worker's AF_XDP RX ring was full (rx_ring_full), read every second.";
    /// Times the kernel found the fill ring empty.
    xsk_fill_ring_empty: "counter", "sluice_gateway_xsk_fill_ring_empty_total", "Times the kernel found this worker's AF_XDP fill ring empty (rx_fill_ring_empty_descs), read every second.";
}

/// One worker's per-tunnel counters, indexed by tenant
/// ([`crate::policy::TenantId`]: 0 the internet tenant).
#[derive(Debug, Default)]
pub(crate) struct TenantStats {
    /// Packets sent into each tunnel.
    pub(crate) tx_packets: [AtomicU64; TENANTS],
    /// Packets received from each tunnel.
    pub(crate) rx_packets: [AtomicU64; TENANTS],
    /// 1 while each tunnel is established (the metrics' gauge: 0 once
    /// the worker stops, or after a fault).
    pub(crate) up: [AtomicU64; TENANTS],
    /// What the classifier's tunnel-down state follows ([`LINK_UNKNOWN`],
    /// [`LINK_UP`], [`LINK_LOST`]): up once each tunnel was established,
    /// lost once it was lost or an attempt failed, unknown until the
    /// first attempt ends (a restarted gateway does not call its tunnel
    /// down while it connects). Unlike `up`, a worker that stops (a stop,
    /// a fault) leaves it as it was, so that no stop path tells the pinned
    /// classifier a tunnel went down (which would start a fail-open
    /// profile's direct path, or a grace, while no gateway runs).
    pub(crate) link: [AtomicU64; TENANTS],
    /// Each tenant's edge selection on this worker, as last published
    /// (about once a second, at once on a change; see
    /// [`super::edges`]): for the metrics and the admin API, never read
    /// on the packet path.
    pub(crate) edges: [std::sync::Mutex<Option<super::edges::EdgeReport>>; TENANTS],
}

/// [`TenantStats::link`]: no attempt has ended yet.
pub(crate) const LINK_UNKNOWN: u64 = 0;
/// [`TenantStats::link`]: established.
pub(crate) const LINK_UP: u64 = 1;
/// [`TenantStats::link`]: lost, or an attempt failed.
pub(crate) const LINK_LOST: u64 = 2;

/// Tunnels a worker can hold.
pub(crate) const TENANTS: usize = sluice_common::POLICY_MAX_TENANTS as usize;

impl TenantStats {
    /// Renders every worker's per-tunnel counters, labelled with the
    /// queue and the tenant's name (`names[t]`).
    pub(crate) fn render_all(
        out: &mut String,
        workers: &[std::sync::Arc<TenantStats>],
        names: &[String],
    ) {
        type Field = fn(&TenantStats) -> &[AtomicU64; TENANTS];
        let families: [(&str, &str, &str, Field); 3] = [
            (
                "sluice_tenant_tx_packets_total",
                "counter",
                "Packets sent into each tenant's tunnel.",
                |s| &s.tx_packets,
            ),
            (
                "sluice_tenant_rx_packets_total",
                "counter",
                "Packets received from each tenant's tunnel.",
                |s| &s.rx_packets,
            ),
            (
                "sluice_tenant_tunnel_up",
                "gauge",
                "1 while this worker's tunnel to the tenant is established.",
                |s| &s.up,
            ),
        ];
        for (metric, kind, help, field) in families {
            let mut first = true;
            for (q, w) in workers.iter().enumerate() {
                let q = q.to_string();
                for (t, name) in names.iter().enumerate().take(TENANTS) {
                    sample(
                        out,
                        metric,
                        kind,
                        first.then_some(help),
                        &[("queue", &q), ("tenant", name)],
                        field(w)[t].load(Relaxed),
                    );
                    first = false;
                }
            }
        }
    }
}

/// A per-edge metric's value from a tenant's status and the edge's index.
type EdgeField = fn(&super::edges::EdgeReport, usize) -> u64;
/// A per-tenant metric's value from its status.
type TenantField = fn(&sluice_core::select::Status) -> u64;

/// Renders every worker's edge selection (as last published): per edge
/// `sluice_gateway_edge_{up,active,rtt_seconds,probe_misses}` and
/// `sluice_gateway_edge_failures` (consecutive),
/// `sluice_gateway_edge_datagrams` (1 while its packets go by the datagram
/// transport; `sluice status` names the path's state); per tenant
/// `sluice_gateway_edge_switches_total` and
/// `sluice_gateway_edge_none_active`.
/// Labels: queue, tenant, edge (its configured name).
#[allow(
    clippy::too_many_lines,
    reason = "a table of metric families, each a few lines"
)]
pub(crate) fn render_edges(
    out: &mut String,
    workers: &[std::sync::Arc<TenantStats>],
    names: &[String],
) {
    use sluice_core::select::{Phase, Status};
    use std::fmt::Write as _;
    let published: Vec<Vec<Option<super::edges::EdgeReport>>> = workers
        .iter()
        .map(|w| {
            w.edges
                .iter()
                .map(|m| {
                    m.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                })
                .collect()
        })
        .collect();
    let each_report = |f: &mut dyn FnMut(&str, &str, &super::edges::EdgeReport)| {
        for (q, w) in published.iter().enumerate() {
            let q = q.to_string();
            for (t, name) in names.iter().enumerate().take(TENANTS) {
                if let Some(Some(r)) = w.get(t) {
                    f(&q, name, r);
                }
            }
        }
    };
    let each = |f: &mut dyn FnMut(&str, &str, &Status)| {
        each_report(&mut |q, name, r| f(q, name, &r.0));
    };
    let families: [(&str, &str, &str, EdgeField); 5] = [
        (
            "sluice_gateway_edge_up",
            "gauge",
            "1 while this worker's tunnel to the edge is established (active or standby).",
            |(s, _), e| u64::from(matches!(s.edges[e].phase, Phase::Active | Phase::Standby)),
        ),
        (
            "sluice_gateway_edge_active",
            "gauge",
            "1 for the edge carrying the tenant's traffic on this worker.",
            |(s, _), e| u64::from(s.active.is_some_and(|a| a.index() == e)),
        ),
        (
            "sluice_gateway_edge_failures",
            "gauge",
            "Consecutive failures of the edge (0 once it is up again).",
            |(s, _), e| u64::from(s.edges[e].failures),
        ),
        (
            "sluice_gateway_edge_probe_misses",
            "gauge",
            "Consecutive echo probes the edge has not answered in time.",
            |(s, _), e| u64::from(s.edges[e].misses),
        ),
        (
            "sluice_gateway_edge_datagrams",
            "gauge",
            "1 while the edge's packets go by the datagram transport (0: the TLS stream).",
            |(_, transports), e| u64::from(transports.get(e).copied() == Some("datagrams")),
        ),
    ];
    for (metric, kind, help, field) in families {
        let mut first = true;
        each_report(&mut |q, tenant, r| {
            let s = &r.0;
            for (e, es) in s.edges.iter().enumerate() {
                sample(
                    out,
                    metric,
                    kind,
                    first.then_some(help),
                    &[("queue", q), ("tenant", tenant), ("edge", &es.name)],
                    field(r, e),
                );
                first = false;
            }
        });
    }
    let mut first = true;
    each(&mut |q, tenant, s| {
        if first {
            out.push_str(
                "# HELP sluice_gateway_edge_rtt_seconds Round-trip time of the echo probes through the edge's tunnel (moving average).\n# TYPE sluice_gateway_edge_rtt_seconds gauge\n",
            );
            first = false;
        }
        for es in &s.edges {
            if let Some(rtt) = es.rtt {
                let _ = writeln!(
                    out,
                    "sluice_gateway_edge_rtt_seconds{{queue=\"{q}\",tenant=\"{}\",edge=\"{}\"}} {:.6}",
                    escape(tenant),
                    escape(&es.name),
                    rtt.as_secs_f64()
                );
            }
        }
    });
    let per_tenant: [(&str, &str, &str, TenantField); 2] = [
        (
            "sluice_gateway_edge_switches_total",
            "counter",
            "Changes of the edge carrying the tenant's traffic on this worker.",
            |s| s.switches,
        ),
        (
            "sluice_gateway_edge_none_active",
            "gauge",
            "1 while no edge carries the tenant's traffic on this worker (must-tunnel traffic is dropped, never sent direct).",
            |s| u64::from(s.active.is_none()),
        ),
    ];
    for (metric, kind, help, field) in per_tenant {
        let mut first = true;
        each(&mut |q, tenant, s| {
            sample(
                out,
                metric,
                kind,
                first.then_some(help),
                &[("queue", q), ("tenant", tenant)],
                field(s),
            );
            first = false;
        });
    }
}

/// A label value, escaped as the text format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The admin API's `GET /edges`: each worker's selection per tenant, in
/// words: the active edge and why, then every edge's phase, RTT, misses
/// and failures.
pub(crate) fn edges_report(workers: &[std::sync::Arc<TenantStats>], names: &[String]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ms = |d: Option<std::time::Duration>| {
        d.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
        )
    };
    for (q, w) in workers.iter().enumerate() {
        for (t, name) in names.iter().enumerate().take(TENANTS) {
            let r = w.edges[t]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let Some((s, transports)) = r else { continue };
            let active = s
                .active
                .and_then(|a| s.edges.get(a.index()))
                .map_or("none (must-tunnel traffic dropped)", |e| e.name.as_str());
            let _ = writeln!(
                out,
                "queue {q} tenant {name}: active {active}; {} (switches {})",
                s.why, s.switches
            );
            for (i, e) in s.edges.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {} {} priority {} {}: transport {}, rtt {} (last {}, {} samples), misses {}, failures {}{}",
                    e.name,
                    e.connected_to
                        .map_or_else(|| e.address.clone(), |a| a.to_string()),
                    e.priority,
                    e.phase,
                    transports.get(i).copied().unwrap_or("tls"),
                    ms(e.rtt),
                    ms(e.last_rtt),
                    e.samples,
                    e.misses,
                    e.failures,
                    e.last_failure
                        .map_or_else(String::new, |f| format!(" (last: {f})")),
                );
            }
        }
    }
    if out.is_empty() {
        out.push_str("no edge status published yet\n");
    }
    out
}
