//! Trusted-network detection (interim: the types; detection lands next).
use std::{fmt, net::IpAddr};

/// How the criteria combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Combine {
    /// Every configured criterion.
    #[default]
    All,
    /// At least one.
    Any,
}

/// The trusted network's criteria.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Criteria {
    /// How they combine.
    pub combine: Combine,
    /// DNS servers.
    pub dns_servers: Vec<IpAddr>,
    /// DNS search domains.
    pub dns_search_domains: Vec<String>,
    /// A hostname and the address it must resolve to.
    pub resolve: Option<(String, IpAddr)>,
    /// Network ranges.
    pub networks: Vec<crate::net::Prefix>,
    /// Default gateways.
    pub default_gateways: Vec<IpAddr>,
    /// DHCP servers.
    pub dhcp_servers: Vec<IpAddr>,
    /// Egress addresses.
    pub egress_addresses: Vec<IpAddr>,
}

/// The network state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkState {
    /// On the trusted network.
    OnTrusted,
    /// Off it.
    OffTrusted,
    /// A full-tunnel VPN holds the default route.
    VpnTrusted,
}

impl fmt::Display for NetworkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkState::OnTrusted => "on-trusted",
            NetworkState::OffTrusted => "off-trusted",
            NetworkState::VpnTrusted => "vpn-trusted",
        })
    }
}
