//! The edge's protocol core, sans I/O: connections from accept to close,
//! their sessions, which gateway each is, where their packets may go.
//!
//! - [`Core`] (its call order is documented there): admission before
//!   authentication (caps per source prefix and in all), the sessions,
//!   the identity check (which configured gateway a certificate is), the
//!   per-packet decisions ([`router`]), the counters ([`stats`]) and
//!   rate-limited logs ([`ratelog`]).
//! - [`Shared`]: what an edge's workers share (one [`Core`] each): the
//!   caps, the ownership table and the reply-route books
//!   ([`directory`]), so that every limit and the isolation of gateways
//!   hold for the edge as a whole.
//! - [`EdgeGateway`], [`EdgeLimits`], [`Settings`]: what it is given, from
//!   the configuration (`sluice-config` produces them); the AEAD
//!   implementation is a parameter of [`Core::new`] (the core reads no
//!   environment and measures nothing).
//!
//! The edge binary (`sluice-edge`) owns the sockets, the TUN device and the
//! poller and hands bytes, packets and the time in; reading and writing a
//! connection's socket is its driver's, passed to [`Core::read`] and
//! [`Core::write`] as closures over the connection's session.
use std::time::Duration;

use crate::net::Prefix;

mod admission;
mod conns;
pub mod directory;
mod identity;
pub mod ratelog;
pub mod router;
pub mod shared;
pub mod stats;

pub use self::{
    conns::{Accepted, CLOSE_REFUSED, ConnId, Core, DatagramSink, NoDatagrams, Sent, TunDrop},
    directory::{MAX_WORKERS, WorkerId},
    shared::{Pending, Shared},
};

/// Destinations that packets from a tunnel never reach, whatever the
/// configuration: link-local ranges (the cloud metadata services live at
/// `169.254.169.254` and `fd00:ec2::254`) and other metadata addresses.
/// `edge.management` adds the operator's own.
pub const RESERVED_DESTINATIONS: [&str; 5] = [
    "169.254.0.0/16",
    "168.63.129.16/32",
    "100.100.100.200/32",
    "fe80::/10",
    "fd00:ec2::254/128",
];

/// One gateway the edge serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeGateway {
    /// Its name: a DNS name its client certificate must be valid for.
    pub name: String,
    /// SHA-256 of its certificate's `SubjectPublicKeyInfo`, if pinned
    /// (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
    /// sha256sum`): a certificate with another key, even from the same CA
    /// and name, is refused.
    pub spki_sha256: Option<[u8; 32]>,
    /// The source prefixes its LAN sends from (and replies go back to).
    pub prefixes: Vec<Prefix>,
    /// Tunnels it may hold at once (a gateway opens one per worker and
    /// tenant).
    pub max_tunnels: u32,
    /// Inner addresses of its LAN the edge routes replies to at most.
    pub max_routes: u32,
}

/// The edge's limits against unauthenticated floods and greedy gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// The TLS handshake and HELLO must be over this long after accept.
    pub handshake_timeout: Duration,
    /// Connections still in their handshake, in all.
    pub max_handshakes: u32,
    /// Connections in their handshake from one source prefix.
    pub max_handshakes_per_prefix: u32,
    /// The source prefix length `max_handshakes_per_prefix` counts by, IPv4.
    pub handshake_prefix_v4: u8,
    /// The same for IPv6.
    pub handshake_prefix_v6: u8,
    /// Authenticated tunnels, in all.
    pub max_tunnels: u32,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_prefix: 32,
            handshake_prefix_v4: 24,
            handshake_prefix_v6: 64,
            max_tunnels: 4096,
        }
    }
}

/// What the edge's core is given from the configuration's `[edge]`
/// besides its limits (`sluice_config::EdgeConfig::core_settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The name sent to gateways.
    pub name: String,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Dead-peer timeout.
    pub idle_timeout: Duration,
    /// The gateways served (index = [`router::GatewayId`]).
    pub gateways: Vec<EdgeGateway>,
    /// Every destination packets from tunnels never reach.
    pub reserved: Vec<Prefix>,
    /// The UDP port of the datagram transport (on the edge's address the
    /// gateway connected to), or `None`: offers are refused and every
    /// tunnel stays on TLS.
    pub datagram_port: Option<u16>,
}
