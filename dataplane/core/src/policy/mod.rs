//! The policy model: who a flow belongs to, which app profile applies,
//! and what that profile says about the flow's destination.
//!
//! - [`Policy`]: the validated model, as the configuration file describes
//!   it: identities, ordered rules choosing app profiles, the profiles
//!   themselves, private-access tenants and the forwarding profile.
//! - [`eval`]: the reference evaluator. It applies the rules as written
//!   (scan everything, keep the best match) and explains its answer;
//!   `sluice policy explain` prints that explanation.
//! - [`compile`]: the same policy compiled into the immutable lookup tables
//!   the classifier and the workers read (prefix nodes with their resolved
//!   verdicts). Tests check the compiled tables against [`eval`].
//! - [`trusted`]: trusted-network detection for the forwarding profile.
//!
//! The order a flow is decided in (first step that applies wins):
//! 1. the destination is a VPN gateway of the profile: direct;
//! 2. it is in a segment of the switched-on private-access tenant, and the
//!    profile allows that tenant: that tenant's tunnel;
//! 3. its source port is a source-port bypass of the profile: direct;
//! 4. it was answered for a bypassed domain, or comes from a bypassed
//!    process (this host's own flows): direct;
//! 5. the destination inclusions and exclusions: the entry with the longest
//!    prefix wins; on a tie, the one with more fields (`prefix:port:proto`
//!    over `prefix:port` over `prefix`); on a further tie, the inclusion.
//!    Included: the internet tunnel (direct if the profile's tunnel is
//!    off); excluded or not included: direct.
//!
//! Then the runtime state: a tunnelled flow goes direct instead when the
//! forwarding profile's action for the current network state is direct
//! (internet tunnel only; private access keeps its tunnel), or when its
//! tunnel is down and the profile fails open or is inside its
//! captive-portal grace period. Otherwise a tunnel that is down drops it.
//!
//! No I/O here except in [`trusted`].
pub mod compile;
pub mod eval;
pub mod facts;
pub mod trusted;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use crate::{
    dns::Pattern,
    net::{Prefix, PrefixError},
    process::ProcessPattern,
};

/// Most port-specific entries that can cover one destination prefix in a
/// profile (the classifier's per-prefix list is this long).
pub(crate) const MAX_PORT_RULES: usize = sluice_common::POLICY_PORT_RULES;
/// Most source-port bypasses per profile.
pub const MAX_SOURCE_PORTS: usize = sluice_common::POLICY_SOURCE_PORTS;
/// Most app profiles.
pub const MAX_PROFILES: usize = sluice_common::POLICY_MAX_PROFILES as usize;
/// Most private-access tenants (the internet tenant is one more).
pub const MAX_PRIVATE_TENANTS: usize = sluice_common::POLICY_MAX_TENANTS as usize - 1;

/// The destination ranges excluded by default, as operators expect:
/// private (RFC 1918, unique local), link-local, multicast and broadcast.
/// A product default for real deployments: no test sends to these ranges
/// (the lab uses documentation ranges only; `sluice-lab`'s
/// `addr::tests::the_plan_uses_documentation_ranges_only` checks its
/// address plan).
pub const DEFAULT_EXCLUSIONS: [&str; 9] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// A transport protocol number with the names operators write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proto(pub u8);

impl Proto {
    /// TCP.
    pub const TCP: Proto = Proto(6);
    /// UDP.
    pub const UDP: Proto = Proto(17);
    const NAMES: [(&'static str, u8); 5] = [
        ("tcp", 6),
        ("udp", 17),
        ("icmp", 1),
        ("icmpv6", 58),
        ("sctp", 132),
    ];
}

/// A protocol that did not parse (the text as written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a protocol (tcp, udp, icmp, icmpv6, sctp or a number 1 to 255)")]
pub struct ProtoError(pub String);

impl FromStr for Proto {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        if let Some((_, n)) = Self::NAMES.iter().find(|(name, _)| *name == l) {
            return Ok(Proto(*n));
        }
        match l.parse::<u8>() {
            Ok(n) if n != 0 => Ok(Proto(n)),
            _ => Err(ProtoError(s.to_string())),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// One destination inclusion or exclusion: `prefix`, `prefix:port` or
/// `prefix:port:protocol`. IPv6 prefixes with a port are bracketed:
/// `[2001:db8::/32]:443:tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The destination prefix.
    pub prefix: Prefix,
    /// The destination port, if the entry names one.
    pub port: Option<u16>,
    /// The protocol, if the entry names one (only with a port).
    pub proto: Option<Proto>,
}

impl Entry {
    /// How many fields the entry has (1 to 3): more fields win a tie on
    /// prefix length.
    pub fn fields(&self) -> u8 {
        1 + u8::from(self.port.is_some()) + u8::from(self.proto.is_some())
    }

    /// Whether a flow to `dst:port` over `proto` matches.
    pub fn matches(&self, dst: IpAddr, port: u16, proto: Proto) -> bool {
        self.prefix.contains(dst)
            && self.port.is_none_or(|p| p == port)
            && self.proto.is_none_or(|p| p == proto)
    }
}

/// Why a destination entry did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// `[` without its `]` (the entry as written).
    #[error("`{0}`: missing `]` after the bracketed prefix")]
    Bracket(String),
    /// Something other than `:port` after `]` (the entry as written).
    #[error("`{0}`: expected `:port` after `]`")]
    AfterBracket(String),
    /// The prefix did not parse.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// Not a port from 1 to 65535 (the port as written).
    #[error("`{0}` is not a port (1 to 65535)")]
    Port(String),
    /// The protocol did not parse.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

impl FromStr for Entry {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (prefix, rest) = if let Some(inner) = s.strip_prefix('[') {
            let (p, rest) = inner
                .split_once(']')
                .ok_or_else(|| EntryError::Bracket(s.to_string()))?;
            let rest = match rest {
                "" => None,
                r => Some(
                    r.strip_prefix(':')
                        .ok_or_else(|| EntryError::AfterBracket(s.to_string()))?,
                ),
            };
            (p, rest)
        } else {
            match s.split_once(':') {
                // An IPv4 prefix, then the port.
                Some((p, rest)) if p.contains('.') => (p, Some(rest)),
                // An IPv6 prefix without brackets: no port.
                _ => (s, None),
            }
        };
        let prefix: Prefix = prefix.parse()?;
        let (port, proto) = match rest {
            None => (None, None),
            Some(r) => {
                let (port, proto) = match r.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (r, None),
                };
                let port = match port.trim().parse::<u16>() {
                    Ok(p) if p != 0 => p,
                    _ => return Err(EntryError::Port(port.to_string())),
                };
                (Some(port), proto.map(str::parse::<Proto>).transpose()?)
            }
        };
        Ok(Self {
            prefix,
            port,
            proto,
        })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.prefix.addr()) {
            (None, _) => write!(f, "{}", self.prefix)?,
            (Some(p), IpAddr::V6(_)) => write!(f, "[{}]:{p}", self.prefix)?,
            (Some(p), IpAddr::V4(_)) => write!(f, "{}:{p}", self.prefix)?,
        }
        if let Some(proto) = self.proto {
            write!(f, ":{proto}")?;
        }
        Ok(())
    }
}

/// A user and their groups, by source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The source addresses (a host address or a prefix).
    pub source: Prefix,
    /// The user name.
    pub user: String,
    /// Directory groups.
    pub groups: Vec<String>,
    /// The device name, if known.
    pub device: Option<String>,
}

/// Where identities come from. Static (the config file) today; a
/// directory sync will be another source.
pub trait IdentitySource {
    /// The current identities.
    fn identities(&self) -> Vec<Identity>;
}

/// The static identity table of the configuration file.
impl IdentitySource for [Identity] {
    fn identities(&self) -> Vec<Identity> {
        self.to_vec()
    }
}

/// What a rule matches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// A member of this directory group.
    Group(String),
    /// A source address in this LAN subnet.
    Subnet(Prefix),
    /// This device.
    Device(String),
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Group(g) => write!(f, "group `{g}`"),
            Match::Subnet(p) => write!(f, "subnet {p}"),
            Match::Device(d) => write!(f, "device `{d}`"),
        }
    }
}

/// One rule: what it matches and the profile it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What it matches.
    pub matches: Match,
    /// Index into [`Policy::profiles`].
    pub profile: usize,
}

/// What happens to tunnelled traffic when no edge of its tenant answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// It is dropped (after any captive-portal grace).
    Closed,
    /// It goes direct.
    Open,
}

/// An app profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// Tunnel on (included destinations go through the internet tunnel)
    /// or off (they go direct; private access still tunnels).
    pub tunnel: bool,
    /// Destination inclusions (default: everything).
    pub include: Vec<Entry>,
    /// Destination exclusions (default: [`DEFAULT_EXCLUSIONS`]).
    pub exclude: Vec<Entry>,
    /// Source ports whose flows go direct.
    pub source_ports: Vec<u16>,
    /// Processes whose flows go direct (this host's own flows).
    pub processes: Vec<ProcessPattern>,
    /// Domains whose answered addresses go direct.
    pub domains: Vec<Pattern>,
    /// VPN gateways: direct, ahead of everything else.
    pub vpn_gateways: Vec<Prefix>,
    /// Indices into [`Policy::tenants`] of the private-access tenants that
    /// may serve this profile's private apps.
    pub private_tenants: Vec<usize>,
    /// When no edge answers.
    pub fail: FailMode,
    /// How long after its tunnel goes down tunnelled traffic still goes
    /// direct (to log in to a captive portal), fail-closed profiles only.
    pub captive_portal_grace: Duration,
}

impl Profile {
    /// A profile with the defaults: tunnel on, include everything, the
    /// default exclusions, fail closed, all `tenants` allowed.
    ///
    /// # Panics
    /// Never: the default entries are constants that parse.
    pub fn with_defaults(name: &str, tenants: usize) -> Self {
        Self {
            name: name.to_string(),
            tunnel: true,
            include: vec![
                "0.0.0.0/0".parse().expect("valid"),
                "::/0".parse().expect("valid"),
            ],
            exclude: default_exclusions(),
            source_ports: Vec::new(),
            processes: Vec::new(),
            domains: Vec::new(),
            vpn_gateways: Vec::new(),
            private_tenants: (0..tenants).collect(),
            fail: FailMode::Closed,
            captive_portal_grace: Duration::ZERO,
        }
    }
}

/// [`DEFAULT_EXCLUSIONS`] as entries.
///
/// # Panics
/// Never: the default exclusions are constants that parse.
pub fn default_exclusions() -> Vec<Entry> {
    DEFAULT_EXCLUSIONS
        .iter()
        .map(|s| s.parse().expect("valid default exclusion"))
        .collect()
}

/// A private-access tenant: its tunnel and its application segments.
#[derive(Clone, Debug)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// Its edge and credentials.
    pub tunnel: TunnelConfig,
    /// Prefixes of its private applications.
    pub segments: Vec<Prefix>,
    /// Domains of its private applications (answered addresses join the
    /// segments while their answer is valid).
    pub domains: Vec<Pattern>,
}

/// What the forwarding profile does with internet traffic in a network
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetAction {
    /// The app profile decides (the internet tunnel for included traffic).
    Tunnel,
    /// Internet traffic goes direct.
    Direct,
}

/// The forwarding profile: trusted-network criteria and an action per
/// network state.
#[derive(Clone, Debug, PartialEq)]
pub struct Forwarding {
    /// The criteria of the trusted network.
    pub criteria: trusted::Criteria,
    /// Action on the trusted network.
    pub on_trusted: NetAction,
    /// Action off the trusted network.
    pub off_trusted: NetAction,
    /// Action while a full-tunnel VPN holds the default route.
    pub vpn_trusted: NetAction,
    /// How often the network is evaluated besides on changes.
    pub interval: Duration,
}

impl Default for Forwarding {
    fn default() -> Self {
        Self {
            criteria: trusted::Criteria::default(),
            on_trusted: NetAction::Tunnel,
            off_trusted: NetAction::Tunnel,
            vpn_trusted: NetAction::Tunnel,
            interval: Duration::from_secs(60),
        }
    }
}

impl Forwarding {
    /// The action for `state`.
    pub fn action(&self, state: trusted::NetworkState) -> NetAction {
        match state {
            trusted::NetworkState::OnTrusted => self.on_trusted,
            trusted::NetworkState::OffTrusted => self.off_trusted,
            trusted::NetworkState::VpnTrusted => self.vpn_trusted,
        }
    }
}

/// The validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The static identity table.
    pub identities: Vec<Identity>,
    /// The identity of this host's own flows.
    pub local: Identity,
    /// The app profiles.
    pub profiles: Vec<Profile>,
    /// The ordered rules (first match wins).
    pub rules: Vec<Rule>,
    /// The profile when no rule matches.
    pub default_profile: usize,
    /// The private-access tenants.
    pub tenants: Vec<Tenant>,
    /// The switched-on private-access tenant, if any.
    pub active_tenant: Option<usize>,
    /// The forwarding profile.
    pub forwarding: Forwarding,
}

/// Which tunnel: 0 is the internet tenant's, `1 + i` private tenant `i`'s.
pub type TenantId = u8;

/// The internet tenant's [`TenantId`].
pub(crate) const INTERNET: TenantId = 0;

/// What the policy decides for a flow (before the runtime state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Out of the WAN, not tunnelled.
    Direct,
    /// Through this tenant's tunnel.
    Tunnel(TenantId),
}

impl Verdict {
    /// The classifier's encoding ([`sluice_common::PolicyAction`]).
    pub fn action(self) -> u8 {
        match self {
            Verdict::Direct => sluice_common::ACTION_DIRECT,
            Verdict::Tunnel(t) => sluice_common::ACTION_TUNNEL + t,
        }
    }

    /// Decodes [`Verdict::action`].
    pub(crate) fn from_action(a: u8) -> Self {
        if a >= sluice_common::ACTION_TUNNEL {
            Verdict::Tunnel(a - sluice_common::ACTION_TUNNEL)
        } else {
            Verdict::Direct
        }
    }
}

impl Policy {
    /// A policy of `profiles` and `rules` alone (benches, fuzzing): no
    /// identities and no tenants, the first profile the default, the
    /// default forwarding profile, and the local identity a config without
    /// `[policy]` gets (`local` at 127.0.0.1, no groups).
    pub fn new(profiles: Vec<Profile>, rules: Vec<Rule>) -> Self {
        Self {
            identities: Vec::new(),
            local: Identity {
                source: Prefix::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 32),
                user: "local".into(),
                groups: Vec::new(),
                device: None,
            },
            profiles,
            rules,
            default_profile: 0,
            tenants: Vec::new(),
            active_tenant: None,
            forwarding: Forwarding::default(),
        }
    }

    /// The name of tunnel `t`.
    pub fn tenant_name(&self, t: TenantId) -> &str {
        match t {
            INTERNET => "internet",
            t => self
                .tenants
                .get(usize::from(t) - 1)
                .map_or("?", |x| x.name.as_str()),
        }
    }

    /// The profile of this host's own flows.
    pub fn local_profile(&self) -> usize {
        eval::select(self, Some(&self.local), self.local.source.addr()).profile
    }

    /// Switches private-access tenant `name` on (and the others off).
    ///
    /// # Errors
    /// No tenant of that name.
    pub fn switch_tenant(&mut self, name: &str) -> Result<(), UnknownTenant> {
        let i = self
            .tenants
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| UnknownTenant {
                name: name.to_string(),
                configured: self.tenants.iter().map(|t| t.name.clone()).collect(),
            })?;
        self.active_tenant = Some(i);
        Ok(())
    }
}

/// [`Policy::switch_tenant`] was given a name no private-access tenant
/// has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no private-access tenant `{name}` (configured: {})", names_or_none(.configured))]
pub struct UnknownTenant {
    /// The name asked for.
    pub name: String,
    /// The tenants the policy has.
    pub configured: Vec<String>,
}

fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;

/// A tunnel's settings: the edge, its name and the credentials (what
/// `[tunnel]` and each `[[tenant]]` say; `config` parses them).
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The edge's address and port: with several edges, the first of
    /// [`TunnelConfig::edges`] (by priority, then order) that is an IP
    /// address.
    pub edge: SocketAddr,
    /// The tenant's edges and the knobs of choosing among them
    /// ([`crate::select`]); one edge, `edge`, in a single-edge
    /// configuration.
    pub edges: crate::select::EdgeSet,
    /// The name the edge's certificate must carry.
    pub server_name: String,
    /// CA that signed the edge's certificate.
    pub ca: PathBuf,
    /// Our client certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Certificates revoked by the CA (`crl`, PEM): an edge certificate
    /// listed there is refused.
    pub crl: Option<PathBuf>,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Dead-peer timeout.
    pub idle_timeout: Duration,
    /// How long a partly filled TLS record may wait for more packets.
    pub coalesce_delay: Duration,
    /// The inner MTU: the largest packet the tunnel carries whole
    /// ([`crate::pmtu`]); larger ones are fragmented (IPv4 without DF) or
    /// refused with ICMP "too big", and TCP SYNs have their MSS clamped.
    pub mtu: u16,
    /// Which transport carries the packets (the datagram transport or
    /// the TLS stream) and whether TLS may stand in when datagrams do not
    /// get through ([`crate::datagram::path`]).
    pub transport: crate::datagram::path::PathConfig,
}

/// The default inner MTU with the datagram transport: a 1500-byte path
/// less IPv6 (40), UDP (8), the record's header (16), one item's length
/// (2) and the tag (16): 1418, so that a full-size packet travels as one
/// datagram over IPv4 or IPv6 (`WireGuard`'s 1420 has 2 bytes less
/// framing).
pub const DEFAULT_DATAGRAM_MTU: u16 = 1418;

/// The default inner MTU with the datagram transport when every edge of
/// the tenant is an IPv4 address: a 1500-byte path less IPv4 (20), UDP
/// (8) and the record's 34 bytes.
pub const DEFAULT_DATAGRAM_MTU_V4: u16 = 1438;

/// The largest inner MTU one datagram carries over a 1500-byte path to
/// `edges`: [`DEFAULT_DATAGRAM_MTU_V4`] if every edge is an IPv4 address,
/// else [`DEFAULT_DATAGRAM_MTU`] (IPv6, or a name of either family).
pub fn datagram_mtu(edges: &crate::select::EdgeSet) -> u16 {
    let all_v4 = edges
        .edges
        .iter()
        .all(|e| matches!(e.address, crate::select::Address::Ip(a) if a.is_ipv4()));
    if all_v4 && !edges.edges.is_empty() {
        DEFAULT_DATAGRAM_MTU_V4
    } else {
        DEFAULT_DATAGRAM_MTU
    }
}

/// The default inner MTU: a LAN's full 1500 bytes. The TLS transport
/// carries any packet whole (it rides a TCP stream), so it costs nothing
/// and LAN hosts never meet a smaller MTU. The datagram transport needs
/// its path MTU less 82: [`DEFAULT_DATAGRAM_MTU`], its default.
pub const DEFAULT_TUNNEL_MTU: u16 = 1500;
