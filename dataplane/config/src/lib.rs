//! The configuration file: one TOML file for a gateway (`[gateway]`,
//! `[tunnel]`, `[bypass]`) or an edge (`[edge]`).
//!
//! Loading is all-or-nothing: the file is parsed and every field validated
//! before anything is attached or opened, and the first error names the
//! file, the line and the field (`sluice.toml:12: bypass.prefixes[1]: host
//! bits are set after /24: did you mean 203.0.113.0/24?`). Unknown fields are
//! errors, so a typo never silently falls back to a default. Relative paths
//! are relative to the config file's directory.
//!
//! Example (gateway):
//! ```toml
//! [gateway]
//! name = "branch-1"
//! lan = "lan0"
//! wan = "wan0"
//! xdp_mode = "auto"            # auto | native | generic
//! lan_vlans = "kernel"         # kernel | untag: tags of frames passed to the kernel
//! metrics = "127.0.0.1:9477"   # Prometheus text on GET /metrics
//!
//! [tunnel]
//! edge = "198.51.100.5:4443"    # or several: edges = [{ name, address, priority }]
//! server_name = "edge.sluice.test"
//! ca = "ca.pem"
//! cert = "gw1.pem"
//! key = "gw1.key"
//!
//! [bypass]
//! prefixes = ["203.0.113.20/32", "2001:db8:100::20/128"]
//! ```
use std::{
    collections::HashSet,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use sluice_core::{dns, net, policy, process};

use crate::net::Prefix;

pub mod modes;
pub use modes::{AttachMode, ProxySpec, VlanMode};

/// The admin API's Unix socket when the configuration names none.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/sluice/admin.sock";
/// Where bpffs is mounted when the configuration names no other place.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// CPU numbers in `cpus` lists are below this (`CPU_SETSIZE`; the gateway
/// checks at compile time that it matches `sluice_sys::cpu::MAX_CPUS`).
pub const MAX_CPUS: usize = 1024;

/// The edge name as rustls takes it.
mod pki {
    /// The edge name is neither a DNS name nor an IP address.
    #[derive(Debug, thiserror::Error)]
    #[error("`{0}` is not a valid DNS name or IP address for the edge")]
    pub(crate) struct ServerNameError(String);

    pub(crate) fn server_name(
        name: &str,
    ) -> Result<rustls_pki_types::ServerName<'static>, ServerNameError> {
        rustls_pki_types::ServerName::try_from(name.to_string())
            .map_err(|_| ServerNameError(name.to_string()))
    }
}

mod edge;
mod edges;
pub mod managed;
mod policy_section;
pub use edge::{EdgeGateway, EdgeLimits, RESERVED_DESTINATIONS};
pub use policy_section::DetectionSources;

/// `gateway.rx_frames` when the file has none.
pub const DEFAULT_RX_FRAMES: u32 = 2048;
/// The least `gateway.rx_frames`.
pub(crate) const MIN_RX_FRAMES: u32 = 512;
/// The most `gateway.rx_frames` (a 128 MiB socket).
pub(crate) const MAX_RX_FRAMES: u32 = 16384;

/// A configuration error. `Invalid` names the file, line, column and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid: syntax, type or value.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted field name, e.g. `bypass.prefixes[2]`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The same error, naming `shown` (the effective file its line and
    /// column point into) if there is one.
    #[must_use]
    pub fn shown_as(self, shown: Option<&Path>) -> Self {
        match (self, shown) {
            (
                ConfigError::Invalid {
                    line,
                    column,
                    field,
                    message,
                    ..
                },
                Some(p),
            ) => ConfigError::Invalid {
                path: p.to_path_buf(),
                line,
                column,
                field,
                message,
            },
            (e, _) => e,
        }
    }

    /// The field an `Invalid` error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Read { .. } => None,
        }
    }

    /// The line an `Invalid` error is about.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }
}

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Name sent to the edge (defaults to the host name).
    pub name: String,
    /// LAN interface: the classifier attaches here. `None`: a host with
    /// endpoint mode only (its own traffic, no LAN).
    pub lan: Option<String>,
    /// WAN interface: bypassed traffic leaves here (by kernel routing).
    pub wan: String,
    /// Classifier attach mode.
    pub xdp_mode: AttachMode,
    /// What the classifier does with the VLAN tag of a LAN frame it passes
    /// to the kernel ([`crate::VlanMode`]).
    pub lan_vlans: crate::VlanMode,
    /// Serve only this many RX queues (default: all of the LAN interface).
    pub queues: Option<u32>,
    /// Frames each LAN queue's `AF_XDP` socket keeps posted for receiving
    /// (a power of two, 512 to 16384; default 2048): how long a worker may
    /// be kept off its CPU before the kernel drops frames for want of one.
    /// The socket's memory is twice this many 4 KiB frames.
    pub rx_frames: u32,
    /// CPUs for the workers: queue `q` runs on `cpus[q % len]`. `None`:
    /// the CPUs the process may use, in order; empty: no pinning.
    pub cpus: Option<Vec<usize>>,
    /// Where to serve Prometheus metrics (`GET /metrics` only), if
    /// anywhere.
    pub metrics: Option<SocketAddr>,
    /// The admin API's listeners and who may use them.
    pub admin: AdminConfig,
    /// The bpffs mount where the classifier's link is pinned (so that it
    /// outlives a crash). Under `ip netns exec`, which remounts `/sys`,
    /// point this at a bpffs mounted outside `/sys`.
    pub bpffs: PathBuf,
    /// The tunnel to the edge.
    pub tunnel: TunnelConfig,
    /// Destinations that bypass the tunnel.
    pub bypass: Vec<Prefix>,
    /// Other VPN gateways (a branch's own VPN clients keep reaching them
    /// directly, whatever else the policy says).
    pub vpn_gateways: Vec<Prefix>,
    /// Domains whose answered addresses bypass the tunnel, and the bounds
    /// of that table.
    pub domains: DomainBypassConfig,
    /// The PAC file for LAN clients, if served.
    pub pac: Option<PacConfig>,
    /// Processes whose sockets bypass the tunnel (endpoint mode).
    pub processes: Vec<crate::process::ProcessPattern>,
    /// Endpoint mode: tunnel this host's own traffic too.
    pub endpoint: Option<EndpointConfig>,
    /// The policy: identities, rules, app profiles, tenants, forwarding
    /// profile (without `[[profile]]` sections, one profile made of the
    /// `[bypass]` lists above).
    pub policy: crate::policy::Policy,
    /// Where trusted-network detection looks.
    pub detection: DetectionSources,
    /// The controller that manages this gateway, if one does.
    pub controller: Option<managed::ControllerSection>,
}

/// The admin API (`[gateway]` `admin_*` fields; see the gateway's admin module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The Unix socket (`admin_socket`, default
    /// [`crate::DEFAULT_ADMIN_SOCKET`]; `""`: none).
    pub socket: Option<PathBuf>,
    /// A group whose members may use the socket besides root
    /// (`admin_group`; the socket is then 0660 and that group's).
    pub group: Option<String>,
    /// A TCP listener for the admin API (`admin_listen`), with a bearer
    /// token.
    pub listen: Option<SocketAddr>,
    /// The file holding the token's SHA-256 in hex (`admin_token`, mode
    /// 0600).
    pub token: Option<PathBuf>,
    /// Names the TCP listeners (metrics, admin) answer to besides IP
    /// literals, `localhost` and the host name (`http_hosts`): the `Host`
    /// allow-list against DNS rebinding.
    pub http_hosts: Vec<String>,
}

/// `[endpoint]`: this host's own traffic goes through the tunnel too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The host side of the veth pair the host's tunnelled traffic is
    /// routed into; sluice's side is this name plus `x`.
    pub interface: String,
    /// The host's inner IPv4 address (its source address in the tunnel;
    /// must be inside the prefixes the edge gives this gateway).
    pub address: std::net::Ipv4Addr,
    /// The inner IPv6 address; without one, IPv6 traffic that is not
    /// bypassed is refused (unreachable), never sent direct.
    pub address6: Option<std::net::Ipv6Addr>,
    /// The firewall mark of sockets that bypass the tunnel.
    pub mark: u32,
    /// The routing table of tunnelled traffic.
    pub table: u32,
    /// Priority of the first of the three policy rules.
    pub rule_priority: u32,
    /// The cgroup (v2) whose processes the socket hooks see; `None`: the
    /// root of the cgroup2 mount.
    pub cgroup: Option<PathBuf>,
    /// MTU of the endpoint's device.
    pub mtu: u16,
    /// How the host's packets reach sluice.
    pub path: EndpointPath,
}

/// How endpoint mode takes the host's tunnelled packets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointPath {
    /// A TUN device, one `read`/`write` per packet (the default: the
    /// lab benchmark measured it cheaper per packet than the veth path).
    Tun,
    /// A veth pair with the XDP classifier and an `AF_XDP` socket on
    /// sluice's side (the LAN's path).
    Veth,
}

/// `[bypass]`'s domain settings.
#[derive(Debug, Clone)]
pub struct DomainBypassConfig {
    /// Exact names and `*.suffix` wildcards.
    pub patterns: Vec<crate::dns::Pattern>,
    /// TTL floor and cap, pending-query bounds.
    pub limits: crate::dns::Limits,
    /// Most addresses installed at once (the closest to expiry is evicted
    /// beyond it, counted and logged).
    pub max_entries: usize,
    /// Only answers from these DNS servers install anything (empty: any).
    pub servers: Vec<std::net::IpAddr>,
}

/// `[pac]`: where to serve the PAC file and the proxy it names.
#[derive(Debug, Clone)]
pub struct PacConfig {
    /// Listening address (LAN side), `GET /proxy.pac` and `/wpad.dat`.
    pub listen: SocketAddr,
    /// Names the server answers to besides IP literals and `wpad`
    /// (`Host` allow-list).
    pub hosts: Vec<String>,
    /// The proxy for everything not bypassed.
    pub proxy: crate::ProxySpec,
}

/// The gateway's tunnel settings (defined with the policy, whose tenants
/// hold them: the policy does not depend on the configuration).
pub use crate::policy::{DEFAULT_TUNNEL_MTU, TunnelConfig};
/// The smallest `tunnel.mtu`: every IPv6 link carries 1280 bytes.
pub const MIN_TUNNEL_MTU: u16 = sluice_core::pmtu::MIN_MTU_V6;

/// Most edge workers (`edge.workers`).
pub const MAX_EDGE_WORKERS: usize = sluice_core::edge::MAX_WORKERS;

/// The edge's configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Name sent to gateways.
    pub name: String,
    /// Address to accept tunnels on.
    pub listen: SocketAddr,
    /// TUN device name.
    pub tun: String,
    /// TUN MTU (largest inner packet).
    pub tun_mtu: u16,
    /// The gateways it serves, each with the source prefixes only its
    /// tunnels may send from (routed back into the TUN); packets from
    /// elsewhere are dropped (anti-spoofing).
    pub gateways: Vec<EdgeGateway>,
    /// Prefixes of the operator's own networks (management, other
    /// services) that packets from tunnels never reach, beside
    /// [`RESERVED_DESTINATIONS`].
    pub management: Vec<Prefix>,
    /// Every destination packets from tunnels never reach:
    /// [`EdgeConfig::management`] and [`RESERVED_DESTINATIONS`].
    pub reserved: Vec<Prefix>,
    /// Caps against floods and greedy gateways.
    pub limits: EdgeLimits,
    /// Let the edge set up forwarding, routes and source NAT itself.
    pub manage_network: bool,
    /// Write a flow's consecutive packets to the TUN device as one GSO
    /// packet (virtio-net headers; see [`crate::gro`]).
    pub tun_offload: bool,
    /// `edge.workers`: worker threads (each with its own listener, TUN
    /// queue and tunnels), 1 to [`MAX_EDGE_WORKERS`]. `None`: one per CPU
    /// the process may run on, counted at start.
    pub workers: Option<usize>,
    /// CA that signs gateway certificates.
    pub ca: PathBuf,
    /// Edge certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Gateway certificates revoked by the CA (`crl`, PEM): they are
    /// refused at the handshake. Read at start.
    pub crl: Option<PathBuf>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Dead-peer timeout.
    pub idle_timeout: Duration,
    /// Where the datagram transport listens (UDP, `edge.datagram_listen`;
    /// default: `listen`'s address and port), or `None` with
    /// `edge.datagrams = false`: gateways' offers are refused and their
    /// tunnels stay on TLS.
    pub datagram_listen: Option<SocketAddr>,
    /// The controller that manages this edge, if one does.
    pub controller: Option<managed::ControllerSection>,
}

impl EdgeConfig {
    /// What the edge's sans-IO core acts on (its limits aside).
    #[must_use]
    pub fn core_settings(&self) -> sluice_core::edge::Settings {
        sluice_core::edge::Settings {
            name: self.name.clone(),
            keepalive: self.keepalive,
            idle_timeout: self.idle_timeout,
            gateways: self.gateways.clone(),
            reserved: self.reserved.clone(),
            datagram_port: self.datagram_listen.map(|a| a.port()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    gateway: Option<Spanned<RawGateway>>,
    tunnel: Option<Spanned<RawTunnel>>,
    bypass: Option<RawBypass>,
    pac: Option<Spanned<RawPac>>,
    endpoint: Option<Spanned<RawEndpoint>>,
    edge: Option<Spanned<RawEdge>>,
    policy: Option<Spanned<policy_section::RawPolicy>>,
    #[serde(default)]
    identity: Vec<Spanned<policy_section::RawIdentity>>,
    #[serde(default)]
    rule: Vec<Spanned<policy_section::RawRule>>,
    #[serde(default)]
    profile: Vec<Spanned<policy_section::RawProfile>>,
    #[serde(default)]
    tenant: Vec<Spanned<policy_section::RawTenant>>,
    forwarding: Option<Spanned<policy_section::RawForwarding>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    interface: Option<Spanned<String>>,
    address: Spanned<String>,
    address6: Option<Spanned<String>>,
    mark: Option<Spanned<u32>>,
    table: Option<Spanned<u32>>,
    rule_priority: Option<Spanned<u32>>,
    cgroup: Option<Spanned<PathBuf>>,
    mtu: Option<Spanned<u16>>,
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    name: Option<Spanned<String>>,
    lan: Option<Spanned<String>>,
    wan: Spanned<String>,
    #[serde(default)]
    xdp_mode: AttachMode,
    #[serde(default)]
    lan_vlans: crate::VlanMode,
    queues: Option<Spanned<u32>>,
    rx_frames: Option<Spanned<u32>>,
    cpus: Option<Spanned<Vec<usize>>>,
    metrics: Option<Spanned<String>>,
    bpffs: Option<Spanned<PathBuf>>,
    admin_socket: Option<Spanned<String>>,
    admin_group: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    admin_token: Option<Spanned<PathBuf>>,
    #[serde(default)]
    http_hosts: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    edge: Option<Spanned<String>>,
    edges: Option<Spanned<Vec<Spanned<edges::RawEdgeEntry>>>>,
    selection: Option<Spanned<edges::RawSelection>>,
    server_name: Spanned<String>,
    ca: Spanned<PathBuf>,
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
    crl: Option<Spanned<PathBuf>>,
    keepalive_secs: Option<Spanned<u64>>,
    idle_timeout_secs: Option<Spanned<u64>>,
    coalesce_delay_us: Option<Spanned<u64>>,
    mtu: Option<Spanned<u64>>,
    transport: Option<Spanned<String>>,
    transport_fallback: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBypass {
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    vpn_gateways: Vec<Spanned<String>>,
    #[serde(default)]
    dns_servers: Vec<Spanned<String>>,
    #[serde(default)]
    processes: Vec<Spanned<String>>,
    dns_ttl_floor_secs: Option<Spanned<u64>>,
    dns_ttl_cap_secs: Option<Spanned<u64>>,
    dns_max_entries: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPac {
    listen: Spanned<String>,
    proxy: Spanned<String>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    name: Option<Spanned<String>>,
    listen: Spanned<String>,
    tun: Option<Spanned<String>>,
    tun_mtu: Option<Spanned<u16>>,
    /// Refused with a migration hint (see `config::edge`).
    client_prefixes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    gateway: Vec<Spanned<edge::RawEdgeGateway>>,
    management: Option<Spanned<Vec<Spanned<String>>>>,
    handshake_timeout_secs: Option<Spanned<u64>>,
    max_handshakes: Option<Spanned<u32>>,
    max_handshakes_per_prefix: Option<Spanned<u32>>,
    handshake_prefix_len_v4: Option<Spanned<u8>>,
    handshake_prefix_len_v6: Option<Spanned<u8>>,
    max_tunnels: Option<Spanned<u32>>,
    manage_network: Option<bool>,
    tun_offload: Option<bool>,
    workers: Option<Spanned<usize>>,
    ca: Spanned<PathBuf>,
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
    crl: Option<Spanned<PathBuf>>,
    metrics: Option<Spanned<String>>,
    keepalive_secs: Option<Spanned<u64>>,
    idle_timeout_secs: Option<Spanned<u64>>,
    datagram_listen: Option<Spanned<String>>,
    datagrams: Option<bool>,
}

/// Source text plus path: turns byte spans into `Invalid` errors.
struct Doc<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Doc<'_> {
    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.src, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let field = field_at(self.src, span.start, e.message());
            self.err(span, &field, e.message().trim())
        })
    }

    fn file(&self, v: &Spanned<PathBuf>, field: &str) -> Result<PathBuf, ConfigError> {
        let full = self.relative(v.get_ref());
        std::fs::metadata(&full)
            .map_err(|e| self.err(v.span(), field, format!("{}: {e}", full.display())))?;
        Ok(full)
    }

    fn iface(&self, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let s = v.get_ref();
        if s.is_empty()
            || s.len() > 15
            || s.contains(['/', '\0'])
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
            || s == "."
            || s == ".."
        {
            return Err(self.err(
                v.span(),
                field,
                format!(
                    "`{s}` is not a valid interface name (1 to 15 characters, no `/` or spaces)"
                ),
            ));
        }
        Ok(s.clone())
    }

    fn sockaddr(&self, v: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse().map_err(|_| {
            self.err(
                v.span(),
                field,
                format!(
                    "`{}` is not an address:port such as 198.51.100.5:4443 or [2001:db8::5]:4443",
                    v.get_ref()
                ),
            )
        })
    }

    fn prefixes(&self, v: &[Spanned<String>], field: &str) -> Result<Vec<Prefix>, ConfigError> {
        let mut out = Vec::with_capacity(v.len());
        // Duplicates by hash set: linear (`Vec::contains` made a list of
        // 120,000 prefixes take seconds to load).
        let mut seen = HashSet::with_capacity(v.len());
        for (i, p) in v.iter().enumerate() {
            let parsed: Prefix = p
                .get_ref()
                .parse()
                .map_err(|e| self.err(p.span(), &format!("{field}[{i}]"), format!("{e}")))?;
            if !seen.insert(parsed) {
                return Err(self.err(
                    p.span(),
                    &format!("{field}[{i}]"),
                    format!("{parsed} is listed twice"),
                ));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    /// `bypass.vpn_gateways`, none of them also in `bypass.prefixes`.
    fn vpn_gateways(&self, raw: &RawBypass, bypass: &[Prefix]) -> Result<Vec<Prefix>, ConfigError> {
        let list = self.prefixes(&raw.vpn_gateways, "bypass.vpn_gateways")?;
        let bypass: HashSet<&Prefix> = bypass.iter().collect();
        for (i, (p, r)) in list.iter().zip(&raw.vpn_gateways).enumerate() {
            if bypass.contains(p) {
                return Err(self.err(
                    r.span(),
                    &format!("bypass.vpn_gateways[{i}]"),
                    format!("{p} is in bypass.prefixes too: list it once"),
                ));
            }
        }
        Ok(list)
    }

    /// `gateway.admin_*` and `gateway.http_hosts`.
    fn admin(&self, gw: &RawGateway) -> Result<AdminConfig, ConfigError> {
        let socket = match &gw.admin_socket {
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) => {
                let p = self.relative(Path::new(s.get_ref()));
                // sockaddr_un's path: 108 bytes with the NUL.
                if p.as_os_str().len() > 107 || s.get_ref().contains('\0') {
                    return Err(self.err(
                        s.span(),
                        "gateway.admin_socket",
                        format!(
                            "{}: longer than a Unix socket path can be (107 bytes)",
                            p.display()
                        ),
                    ));
                }
                Some(p)
            }
            None => Some(PathBuf::from(crate::DEFAULT_ADMIN_SOCKET)),
        };
        let group = match &gw.admin_group {
            Some(g) => {
                let n = g.get_ref();
                if n.is_empty()
                    || n.len() > 32
                    || n.starts_with('-')
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(self.err(
                        g.span(),
                        "gateway.admin_group",
                        format!("`{n}` is not a group name"),
                    ));
                }
                Some(n.clone())
            }
            None => None,
        };
        let listen = gw
            .admin_listen
            .as_ref()
            .map(|l| self.sockaddr(l, "gateway.admin_listen"))
            .transpose()?;
        let token = gw
            .admin_token
            .as_ref()
            .map(|t| self.file(t, "gateway.admin_token"))
            .transpose()?;
        match (&gw.admin_listen, &gw.admin_token) {
            (Some(l), None) => {
                return Err(self.err(
                    l.span(),
                    "gateway.admin_token",
                    "admin_listen needs admin_token: the file with the token's SHA-256 (sluice pki admin-token)",
                ));
            }
            (None, Some(t)) => {
                return Err(self.err(
                    t.span(),
                    "gateway.admin_listen",
                    "admin_token is only used with admin_listen",
                ));
            }
            _ => {}
        }
        Ok(AdminConfig {
            socket,
            group,
            listen,
            token,
            http_hosts: self.host_names(&gw.http_hosts, "gateway.http_hosts")?,
        })
    }

    /// DNS names for a `Host` allow-list.
    fn host_names(&self, v: &[Spanned<String>], field: &str) -> Result<Vec<String>, ConfigError> {
        v.iter()
            .enumerate()
            .map(|(i, h)| {
                let s = h.get_ref().trim_end_matches('.');
                if s.is_empty()
                    || s.len() > 253
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(self.err(
                        h.span(),
                        &format!("{field}[{i}]"),
                        format!("`{}` is not a DNS name", h.get_ref()),
                    ));
                }
                Ok(s.to_ascii_lowercase())
            })
            .collect()
    }

    /// `p` relative to the configuration file's directory.
    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// `gateway.bpffs`: absolute, default [`crate::DEFAULT_BPFFS`].
    fn bpffs(&self, v: Option<Spanned<PathBuf>>) -> Result<PathBuf, ConfigError> {
        match v {
            Some(p) if !p.get_ref().is_absolute() => {
                Err(self.err(p.span(), "gateway.bpffs", "must be an absolute path"))
            }
            Some(p) => Ok(p.into_inner()),
            None => Ok(PathBuf::from(crate::DEFAULT_BPFFS)),
        }
    }

    /// `gateway.queues`, `gateway.rx_frames` and `gateway.cpus`.
    fn worker_limits(&self, gw: &RawGateway) -> Result<(), ConfigError> {
        if let Some(f) = gw.rx_frames.as_ref().filter(|f| {
            let f = *f.get_ref();
            !(f.is_power_of_two() && (MIN_RX_FRAMES..=MAX_RX_FRAMES).contains(&f))
        }) {
            return Err(self.err(
                f.span(),
                "gateway.rx_frames",
                format!("must be a power of two from {MIN_RX_FRAMES} to {MAX_RX_FRAMES}"),
            ));
        }
        if let Some(q) = gw
            .queues
            .as_ref()
            .filter(|q| !(1..=sluice_common::MAX_QUEUES).contains(q.get_ref()))
        {
            return Err(self.err(
                q.span(),
                "gateway.queues",
                format!("must be 1 to {}", sluice_common::MAX_QUEUES),
            ));
        }
        if let Some(c) = gw
            .cpus
            .as_ref()
            .filter(|c| c.get_ref().iter().any(|&c| c >= crate::MAX_CPUS))
        {
            return Err(self.err(
                c.span(),
                "gateway.cpus",
                format!("CPU numbers must be below {}", crate::MAX_CPUS),
            ));
        }
        Ok(())
    }

    /// `[endpoint]` and `bypass.processes` (which needs `[endpoint]`); a
    /// gateway needs a LAN or `[endpoint]` (`gateway` is its span).
    fn endpoint_and_processes(
        &self,
        endpoint: Option<&Spanned<RawEndpoint>>,
        bypass: &RawBypass,
        lan: Option<&str>,
        wan: &str,
        gateway: Range<usize>,
    ) -> Result<(Vec<crate::process::ProcessPattern>, Option<EndpointConfig>), ConfigError> {
        let processes = self.processes(bypass)?;
        let endpoint = endpoint
            .map(|e| self.endpoint(e.get_ref(), lan, wan))
            .transpose()?;
        if endpoint.is_none()
            && let Some(p) = bypass.processes.first()
        {
            return Err(self.err(
                p.span(),
                "bypass.processes",
                "process bypass applies to this host's own sockets: it needs an [endpoint] section",
            ));
        }
        if lan.is_none() && endpoint.is_none() {
            return Err(self.err(
                gateway,
                "gateway.lan",
                "missing field `lan`: name the LAN interface, or add an [endpoint] section for a host without a LAN",
            ));
        }
        Ok((processes, endpoint))
    }

    /// `bypass.processes`.
    fn processes(
        &self,
        raw: &RawBypass,
    ) -> Result<Vec<crate::process::ProcessPattern>, ConfigError> {
        raw.processes
            .iter()
            .enumerate()
            .map(|(i, v)| {
                crate::process::ProcessPattern::parse(v.get_ref()).map_err(|e| {
                    self.err(v.span(), &format!("bypass.processes[{i}]"), e.to_string())
                })
            })
            .collect()
    }

    #[allow(clippy::too_many_lines, reason = "one flat list of field checks")]
    fn endpoint(
        &self,
        e: &RawEndpoint,
        lan: Option<&str>,
        wan: &str,
    ) -> Result<EndpointConfig, ConfigError> {
        let interface = match &e.interface {
            Some(i) => {
                let name = self.iface(i, "endpoint.interface")?;
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(self.err(
                        i.span(),
                        "endpoint.interface",
                        "letters, digits, '.', '_' and '-' only (sluice creates it)",
                    ));
                }
                if name.len() > 14 {
                    return Err(self.err(
                        i.span(),
                        "endpoint.interface",
                        "at most 14 characters (sluice's side of the pair adds an `x`)",
                    ));
                }
                if Some(name.as_str()) == lan || name == wan {
                    return Err(self.err(
                        i.span(),
                        "endpoint.interface",
                        "must differ from gateway.lan and gateway.wan (sluice creates it)",
                    ));
                }
                name
            }
            None => "sluice-ep".to_string(),
        };
        let address: std::net::Ipv4Addr = e.address.get_ref().parse().map_err(|_| {
            self.err(
                e.address.span(),
                "endpoint.address",
                "expected an IPv4 address",
            )
        })?;
        if address.is_unspecified()
            || address.is_multicast()
            || address.is_broadcast()
            || address.is_loopback()
        {
            return Err(self.err(
                e.address.span(),
                "endpoint.address",
                "must be a unicast address",
            ));
        }
        let address6 = e
            .address6
            .as_ref()
            .map(|a| {
                a.get_ref()
                    .parse::<std::net::Ipv6Addr>()
                    .ok()
                    .filter(|v| !v.is_unspecified() && !v.is_multicast() && !v.is_loopback())
                    .ok_or_else(|| {
                        self.err(
                            a.span(),
                            "endpoint.address6",
                            "expected a unicast IPv6 address",
                        )
                    })
            })
            .transpose()?;
        let mark = match &e.mark {
            Some(m) if *m.get_ref() == 0 => {
                return Err(self.err(m.span(), "endpoint.mark", "must not be 0"));
            }
            Some(m) => *m.get_ref(),
            None => 0x5c1,
        };
        let table = match &e.table {
            Some(t) if matches!(*t.get_ref(), 0 | 253..=255) => {
                return Err(self.err(
                    t.span(),
                    "endpoint.table",
                    "0, 253 (default), 254 (main) and 255 (local) are the kernel's",
                ));
            }
            Some(t) => *t.get_ref(),
            None => 0x5c1,
        };
        let rule_priority = match &e.rule_priority {
            Some(p) if !(1..=32000).contains(p.get_ref()) => {
                return Err(self.err(
                    p.span(),
                    "endpoint.rule_priority",
                    "must be 1 to 32000 (ahead of the main table's rule, 32766)",
                ));
            }
            Some(p) => *p.get_ref(),
            None => 1000,
        };
        let mtu = match &e.mtu {
            Some(m) if !(1280..=9000).contains(m.get_ref()) => {
                return Err(self.err(m.span(), "endpoint.mtu", "must be 1280 to 9000"));
            }
            Some(m) => *m.get_ref(),
            None => 1500,
        };
        let cgroup = match &e.cgroup {
            Some(c) if !c.get_ref().is_absolute() => {
                return Err(self.err(c.span(), "endpoint.cgroup", "must be an absolute path"));
            }
            Some(c) => Some(c.get_ref().clone()),
            None => None,
        };
        let path = match e.path.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "tun")) => EndpointPath::Tun,
            Some((_, "veth")) => EndpointPath::Veth,
            Some((p, _)) => {
                return Err(self.err(p.span(), "endpoint.path", "expected \"tun\" or \"veth\""));
            }
        };
        Ok(EndpointConfig {
            interface,
            address,
            address6,
            mark,
            table,
            rule_priority,
            cgroup,
            mtu,
            path,
        })
    }

    fn pac(&self, p: &RawPac) -> Result<PacConfig, ConfigError> {
        Ok(PacConfig {
            listen: self.sockaddr(&p.listen, "pac.listen")?,
            hosts: self.host_names(&p.hosts, "pac.hosts")?,
            proxy: p
                .proxy
                .get_ref()
                .parse()
                .map_err(|e| self.err(p.proxy.span(), "pac.proxy", format!("{e}")))?,
        })
    }

    fn domains(&self, raw: &RawBypass) -> Result<DomainBypassConfig, ConfigError> {
        let mut patterns = Vec::with_capacity(raw.domains.len());
        let mut seen = HashSet::with_capacity(raw.domains.len());
        for (i, p) in raw.domains.iter().enumerate() {
            let field = format!("bypass.domains[{i}]");
            let parsed = crate::dns::Pattern::parse(p.get_ref())
                .map_err(|e| self.err(p.span(), &field, format!("{e}")))?;
            if !seen.insert(parsed.clone()) {
                return Err(self.err(p.span(), &field, format!("{parsed} is listed twice")));
            }
            patterns.push(parsed);
        }
        let secs = |v: Option<&Spanned<u64>>, default: u64, field: &str| match v {
            Some(v) if !(1..=86_400).contains(v.get_ref()) => {
                Err(self.err(v.span(), field, "must be 1 to 86400 (seconds)"))
            }
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        };
        let floor = secs(
            raw.dns_ttl_floor_secs.as_ref(),
            30,
            "bypass.dns_ttl_floor_secs",
        )?;
        let cap = secs(
            raw.dns_ttl_cap_secs.as_ref(),
            3600,
            "bypass.dns_ttl_cap_secs",
        )?;
        if let Some(v) = raw.dns_ttl_cap_secs.as_ref().filter(|_| cap < floor) {
            return Err(self.err(
                v.span(),
                "bypass.dns_ttl_cap_secs",
                format!("must not be below dns_ttl_floor_secs ({floor})"),
            ));
        }
        let max_entries = match &raw.dns_max_entries {
            Some(v) if !(1..=1_000_000).contains(v.get_ref()) => {
                return Err(self.err(v.span(), "bypass.dns_max_entries", "must be 1 to 1000000"));
            }
            Some(v) => *v.get_ref() as usize,
            None => 65_536,
        };
        let mut servers = Vec::with_capacity(raw.dns_servers.len());
        for (i, v) in raw.dns_servers.iter().enumerate() {
            let ip: std::net::IpAddr = v.get_ref().trim().parse().map_err(|_| {
                self.err(
                    v.span(),
                    &format!("bypass.dns_servers[{i}]"),
                    format!("{:?} is not an IPv4 or IPv6 address", v.get_ref()),
                )
            })?;
            servers.push(ip);
        }
        Ok(DomainBypassConfig {
            servers,
            patterns,
            limits: crate::dns::Limits {
                ttl_floor: Duration::from_secs(floor),
                ttl_cap: Duration::from_secs(cap),
                ..crate::dns::Limits::default()
            },
            max_entries,
        })
    }

    /// `tunnel.transport` (`tls`, the default, or `udp`: the datagram
    /// transport) and `tunnel.transport_fallback` (default true: TLS
    /// carries the packets while datagrams do not get through).
    pub(crate) fn transport(
        &self,
        transport: Option<&Spanned<String>>,
        fallback: Option<bool>,
        field: &str,
    ) -> Result<sluice_core::datagram::path::PathConfig, ConfigError> {
        use sluice_core::datagram::path::{PathConfig, Transport};
        let primary = match transport.map(|t| (t.span(), t.get_ref().as_str())) {
            None | Some((_, "tls")) => Transport::Tls,
            Some((_, "udp")) => Transport::Udp,
            Some((span, _)) => {
                return Err(self.err(span, field, "must be \"tls\" or \"udp\""));
            }
        };
        Ok(PathConfig {
            primary,
            fallback: fallback.unwrap_or(true),
            ..PathConfig::default()
        })
    }

    /// `tunnel.mtu`: 1280 (IPv6's minimum) to 9000, default
    /// [`DEFAULT_TUNNEL_MTU`] ([`sluice_core::policy::DEFAULT_DATAGRAM_MTU`]
    /// with the datagram transport).
    fn tunnel_mtu(
        &self,
        mtu: Option<&Spanned<u64>>,
        transport: sluice_core::datagram::path::Transport,
        datagram_mtu: u16,
    ) -> Result<u16, ConfigError> {
        if mtu.is_none() && transport == sluice_core::datagram::path::Transport::Udp {
            return Ok(datagram_mtu);
        }
        match mtu {
            Some(v) if !(u64::from(MIN_TUNNEL_MTU)..=9000).contains(v.get_ref()) => Err(self.err(
                v.span(),
                "tunnel.mtu",
                format!("must be {MIN_TUNNEL_MTU} to 9000 (bytes; IPv6 needs 1280)"),
            )),
            Some(v) => Ok(u16::try_from(*v.get_ref()).unwrap_or(DEFAULT_TUNNEL_MTU)),
            None => Ok(DEFAULT_TUNNEL_MTU),
        }
    }

    fn timers(
        &self,
        keepalive: Option<&Spanned<u64>>,
        idle: Option<&Spanned<u64>>,
        section: &str,
    ) -> Result<(Duration, Duration), ConfigError> {
        let k = keepalive.map_or(10, |v| *v.get_ref());
        let t = idle.map_or(30, |v| *v.get_ref());
        if let Some(v) = keepalive.filter(|_| !(1..=3600).contains(&k)) {
            return Err(self.err(
                v.span(),
                &format!("{section}.keepalive_secs"),
                "must be 1 to 3600",
            ));
        }
        if t <= k {
            let span = idle.or(keepalive).map_or(0..0, Spanned::span);
            return Err(self.err(
                span,
                &format!("{section}.idle_timeout_secs"),
                format!("must be greater than keepalive_secs ({k})"),
            ));
        }
        Ok((Duration::from_secs(k), Duration::from_secs(t)))
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sluice".into())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl GatewayConfig {
    /// Reads and validates a gateway configuration file.
    /// A file with `[controller]` is merged with the controller's policy
    /// from its state directory first ([`managed`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = read(path)?;
        let (src, shown, controller) = managed::effective(path, src, false)?;
        let mut cfg = Self::parse(path, &src).map_err(|e| e.shown_as(shown.as_deref()))?;
        cfg.controller = controller;
        Ok(cfg)
    }

    /// Validates `src` as if read from `path` (used by `load` and tests).
    pub fn parse(path: &Path, src: &str) -> Result<Self, ConfigError> {
        let d = Doc { path, src };
        let raw: RawFile = d.parse()?;
        let Some(gw) = raw.gateway else {
            return Err(d.err(0..0, "gateway", "missing section [gateway]"));
        };
        let Some(tun) = raw.tunnel else {
            return Err(d.err(0..0, "tunnel", "missing section [tunnel]"));
        };
        let (gw_span, gw) = (gw.span(), gw.into_inner());
        let lan = gw
            .lan
            .as_ref()
            .map(|l| d.iface(l, "gateway.lan"))
            .transpose()?;
        let wan = d.iface(&gw.wan, "gateway.wan")?;
        if lan.as_deref() == Some(wan.as_str()) {
            return Err(d.err(gw.wan.span(), "gateway.wan", "must differ from gateway.lan"));
        }
        d.worker_limits(&gw)?;
        let metrics = gw
            .metrics
            .as_ref()
            .map(|m| d.sockaddr(m, "gateway.metrics"))
            .transpose()?;
        let admin = d.admin(&gw)?;
        let name = gw.name.map_or_else(default_name, Spanned::into_inner);

        let (edge, edges) = d.tunnel_edges(&tun)?;
        let tun = tun.into_inner();
        crate::pki::server_name(tun.server_name.get_ref())
            .map_err(|e| d.err(tun.server_name.span(), "tunnel.server_name", e.to_string()))?;
        let (keepalive, idle_timeout) = d.timers(
            tun.keepalive_secs.as_ref(),
            tun.idle_timeout_secs.as_ref(),
            "tunnel",
        )?;
        let coalesce_delay = match &tun.coalesce_delay_us {
            Some(v) if *v.get_ref() > 10_000 => {
                return Err(d.err(
                    v.span(),
                    "tunnel.coalesce_delay_us",
                    "must be 0 to 10000 (microseconds)",
                ));
            }
            Some(v) => Duration::from_micros(*v.get_ref()),
            None => Duration::ZERO,
        };
        let transport = d.transport(
            tun.transport.as_ref(),
            tun.transport_fallback,
            "tunnel.transport",
        )?;
        let datagram_mtu = sluice_core::policy::datagram_mtu(&edges);
        let mtu = d.tunnel_mtu(tun.mtu.as_ref(), transport.primary, datagram_mtu)?;
        let mtu_set = tun.mtu.is_some();
        if let Some(m) = &tun.mtu
            && transport.primary == sluice_core::datagram::path::Transport::Udp
            && !transport.fallback
            && mtu > datagram_mtu
        {
            return Err(d.err(
                m.span(),
                "tunnel.mtu",
                format!(
                    "with transport = \"udp\" and transport_fallback = false, at most {datagram_mtu} (what one datagram carries to these edges): larger packets would have no way through"
                ),
            ));
        }
        let tunnel = TunnelConfig {
            edge,
            edges,
            server_name: tun.server_name.get_ref().clone(),
            ca: d.file(&tun.ca, "tunnel.ca")?,
            cert: d.file(&tun.cert, "tunnel.cert")?,
            key: d.file(&tun.key, "tunnel.key")?,
            crl: tun
                .crl
                .as_ref()
                .map(|c| d.file(c, "tunnel.crl"))
                .transpose()?,
            keepalive,
            idle_timeout,
            coalesce_delay,
            mtu,
            transport,
        };
        let raw_bypass = raw.bypass.unwrap_or_default();
        let bypass = d.prefixes(&raw_bypass.prefixes, "bypass.prefixes")?;
        let vpn_gateways = d.vpn_gateways(&raw_bypass, &bypass)?;
        let domains = d.domains(&raw_bypass)?;
        let pac = raw.pac.map(|p| d.pac(p.get_ref())).transpose()?;
        let (processes, endpoint) = d.endpoint_and_processes(
            raw.endpoint.as_ref(),
            &raw_bypass,
            lan.as_deref(),
            &wan,
            gw_span,
        )?;
        let sections = policy_section::Sections {
            policy: raw.policy,
            identity: raw.identity,
            rule: raw.rule,
            profile: raw.profile,
            tenant: raw.tenant,
            forwarding: raw.forwarding,
        };
        let (policy, detection) = d.policy(
            &sections,
            &raw_bypass,
            (&tunnel, mtu_set),
            endpoint.as_ref().map(|e| e.address),
        )?;
        if endpoint.is_none()
            && let Some((i, p)) = sections
                .profile
                .iter()
                .enumerate()
                .find(|(_, p)| !p.get_ref().processes_is_empty())
        {
            return Err(d.err(
                p.span(),
                &format!("profile[{i}].processes"),
                "process bypass applies to this host's own sockets: it needs an [endpoint] section",
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            name,
            lan,
            wan,
            xdp_mode: gw.xdp_mode,
            lan_vlans: gw.lan_vlans,
            queues: gw.queues.map(Spanned::into_inner),
            rx_frames: gw.rx_frames.map_or(DEFAULT_RX_FRAMES, Spanned::into_inner),
            cpus: gw.cpus.map(Spanned::into_inner),
            metrics,
            admin,
            bpffs: d.bpffs(gw.bpffs)?,
            tunnel,
            bypass,
            vpn_gateways,
            domains,
            pac,
            processes,
            endpoint,
            policy,
            detection,
            controller: None,
        })
    }
}

impl GatewayConfig {
    /// The processes of this host's own profile (endpoint mode).
    pub fn local_processes(&self) -> Vec<crate::process::ProcessPattern> {
        let p = &self.policy;
        p.profiles[p.local_profile()].processes.clone()
    }

    /// This host's routes for tunnelled traffic
    /// ([`crate::policy::compile::Tables::local_routes`]).
    pub fn local_routes(&self) -> Vec<(Prefix, bool)> {
        crate::policy::compile::Tables::compile(&self.policy)
            .map(|t| t.local_routes)
            .unwrap_or_default()
    }
}

impl EdgeConfig {
    /// Reads and validates an edge configuration file. A file with
    /// `[controller]` is merged with the gateways the controller listed
    /// ([`managed`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = read(path)?;
        let (src, shown, controller) = managed::effective(path, src, true)?;
        let mut cfg = Self::parse(path, &src).map_err(|e| e.shown_as(shown.as_deref()))?;
        cfg.controller = controller;
        Ok(cfg)
    }

    /// Validates `src` as if read from `path`.
    pub fn parse(path: &Path, src: &str) -> Result<Self, ConfigError> {
        let d = Doc { path, src };
        let raw: RawFile = d.parse()?;
        let Some(e) = raw.edge else {
            return Err(d.err(0..0, "edge", "missing section [edge]"));
        };
        let e = e.into_inner();
        let listen = d.sockaddr(&e.listen, "edge.listen")?;
        let tun = match &e.tun {
            // The nftables table and rules name the device: only what an
            // nftables identifier and string take, or the edge would fail
            // at start with nft's syntax error instead of this one.
            Some(t)
                if !t
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
            {
                return Err(d.err(
                    t.span(),
                    "edge.tun",
                    "use letters, digits, '_', '-' and '.' (the edge's nftables rules name the device)",
                ));
            }
            Some(t) => d.iface(t, "edge.tun")?,
            None => "sluice0".into(),
        };
        let tun_mtu = match &e.tun_mtu {
            Some(m) if !(1280..=9000).contains(m.get_ref()) => {
                return Err(d.err(m.span(), "edge.tun_mtu", "must be 1280 to 9000"));
            }
            Some(m) => *m.get_ref(),
            None => 1500,
        };
        if let Some(c) = &e.client_prefixes {
            return Err(d.client_prefixes_removed(c));
        }
        let workers = match &e.workers {
            Some(w) if !(1..=MAX_EDGE_WORKERS).contains(w.get_ref()) => {
                return Err(d.err(
                    w.span(),
                    "edge.workers",
                    format!("must be 1 to {MAX_EDGE_WORKERS} (leave it out for one per CPU)"),
                ));
            }
            w => w.as_ref().map(|w| *w.get_ref()),
        };
        let (management, reserved) = d.edge_reserved(e.management.as_ref())?;
        let gateways = d.edge_gateways(&e.gateway, &reserved)?;
        let limits = d.edge_limits(&edge::RawLimits {
            handshake_timeout_secs: e.handshake_timeout_secs.clone(),
            max_handshakes: e.max_handshakes.clone(),
            max_handshakes_per_prefix: e.max_handshakes_per_prefix.clone(),
            handshake_prefix_len_v4: e.handshake_prefix_len_v4.clone(),
            handshake_prefix_len_v6: e.handshake_prefix_len_v6.clone(),
            max_tunnels: e.max_tunnels.clone(),
        })?;
        let (keepalive, idle_timeout) = d.timers(
            e.keepalive_secs.as_ref(),
            e.idle_timeout_secs.as_ref(),
            "edge",
        )?;
        let datagram_listen = match (e.datagrams, &e.datagram_listen) {
            (Some(false), _) => None,
            (_, Some(a)) => Some(d.sockaddr(a, "edge.datagram_listen")?),
            (_, None) => Some(listen),
        };
        Ok(Self {
            path: path.to_path_buf(),
            name: e.name.map_or_else(default_name, Spanned::into_inner),
            listen,
            tun,
            tun_mtu,
            gateways,
            management,
            reserved: reserved.into_iter().map(|(p, _)| p).collect(),
            limits,
            manage_network: e.manage_network.unwrap_or(true),
            tun_offload: e.tun_offload.unwrap_or(true),
            workers,
            ca: d.file(&e.ca, "edge.ca")?,
            cert: d.file(&e.cert, "edge.cert")?,
            key: d.file(&e.key, "edge.key")?,
            crl: e.crl.as_ref().map(|c| d.file(c, "edge.crl")).transpose()?,
            metrics: e
                .metrics
                .as_ref()
                .map(|m| d.sockaddr(m, "edge.metrics"))
                .transpose()?,
            keepalive,
            idle_timeout,
            datagram_listen,
            controller: None,
        })
    }
}

/// 1-based line and column of byte `offset`.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// The dotted name of the field at `offset`: the nearest `[section]` above
/// and the key on that line (or the field a "missing field" message names).
fn field_at(src: &str, offset: usize, message: &str) -> String {
    let offset = offset.min(src.len());
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[line_start..line_end];
    let named = |pat: &str| {
        message
            .split_once(pat)
            .and_then(|(_, rest)| rest.split('`').next())
            .map(str::to_string)
    };
    let header = |l: &str| {
        let t = l.trim();
        t.strip_prefix('[').map(|t| {
            t.trim_end_matches(']')
                .trim_matches(['[', ']'])
                .trim()
                .to_string()
        })
    };
    if let Some(h) = header(line) {
        // The error is about a table: a field missing from it, or the table
        // itself being unknown (or its header being malformed).
        return match named("missing field `") {
            Some(k) => format!("{h}.{k}"),
            None => h,
        };
    }
    let section = src[..line_start].lines().rev().find_map(header);
    let key = named("unknown field `").or_else(|| {
        line.split_once('=')
            .map(|(k, _)| k.trim().to_string())
            .or_else(|| named("missing field `"))
    });
    match (section, key) {
        (Some(s), Some(k)) => format!("{s}.{k}"),
        (Some(s), None) => s,
        (None, Some(k)) => k,
        (None, None) => "(file)".into(),
    }
}

#[cfg(test)]
mod tests;
