//! The edge's counters, shared with the metrics thread (which renders
//! them: `sluice-edge`).
use std::sync::atomic::AtomicU64;

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
    /// Authenticated peers refused: the controller's allow-list does not
    /// have their certificate for their gateway (revoked, or not issued
    /// by it).
    pub refused_revoked: AtomicU64,
    /// Tunnels closed because the controller's allow-list no longer has
    /// their certificate (revoked while they were up).
    pub tunnels_revoked: AtomicU64,
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
    /// Datagrams received on the datagram transport's socket.
    pub datagrams_rx: AtomicU64,
    /// Datagrams sent on it.
    pub datagrams_tx: AtomicU64,
    /// Datagrams dropped unopened or refused, by
    /// [`crate::datagram::DropReason::ALL`]'s order.
    pub datagram_drops: [AtomicU64; 8],
    /// Times a gateway's datagram address moved (NAT rebinding) after a
    /// datagram from the new address authenticated.
    pub datagram_rebinds: AtomicU64,
    /// Offers of the datagram transport refused (disabled, table full).
    pub datagram_refused: AtomicU64,
    /// Tunnels with the datagram transport set up (a gauge).
    pub datagram_sessions: AtomicU64,
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
}
