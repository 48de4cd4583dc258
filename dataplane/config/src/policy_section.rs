//! The policy sections of a gateway's file: `[policy]`, `[[identity]]`,
//! `[[rule]]`, `[[profile]]`, `[[tenant]]` and `[forwarding]`, validated
//! into a [`Policy`] and compiled once (so that a policy the classifier
//! cannot hold is refused here, with its place in the file).
//!
//! Without any `[[profile]]`, the policy is one profile, `default`, made
//! of the `[bypass]` lists on top of the defaults (include everything,
//! exclude private, link-local, multicast and broadcast ranges). With
//! profiles, `[bypass]` keeps only its DNS settings: the lists belong in
//! the profiles.
//!
//! Example:
//! ```toml
//! [policy]
//! default_profile = "default"
//! private_tenant = "corp"          # switched on at start
//! local_groups = ["ops"]           # this host's own flows
//!
//! [[identity]]
//! source = "192.0.2.10"
//! user = "alice"
//! groups = ["engineering"]
//!
//! [[rule]]
//! group = "engineering"            # or subnet = "...", or device = "..."
//! profile = "engineering"
//!
//! [[profile]]
//! name = "engineering"
//! exclude = ["203.0.113.0/24"]
//! include = ["203.0.113.0/24:443:tcp"]
//! source_ports = [5060]
//! fail = "open"
//!
//! [[profile]]
//! name = "default"
//!
//! [[tenant]]
//! name = "corp"
//! edge = "198.51.100.7:4443"
//! server_name = "corp-edge.test"
//! ca = "ca.pem"
//! cert = "gw.pem"
//! key = "gw.key"
//! segments = ["198.51.100.128/25"]
//! domains = ["*.corp.example"]
//!
//! [forwarding]
//! match = "any"
//! networks = ["192.0.2.0/24"]
//! on_trusted = "direct"
//! ```
use std::{collections::HashSet, net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Doc, RawBypass, TunnelConfig};
use crate::{
    net::Prefix,
    policy::{
        self, Entry, FailMode, Forwarding, Identity, Match, NetAction, Policy, Profile, Rule,
        Tenant, compile::Tables, trusted,
    },
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    default_profile: Option<Spanned<String>>,
    private_tenant: Option<Spanned<String>>,
    local_user: Option<Spanned<String>>,
    #[serde(default)]
    local_groups: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    source: Spanned<String>,
    user: Spanned<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    device: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    group: Option<Spanned<String>>,
    subnet: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
    profile: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    name: Spanned<String>,
    tunnel: Option<bool>,
    include: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    default_exclusions: Option<bool>,
    #[serde(default)]
    source_ports: Vec<Spanned<i64>>,
    #[serde(default)]
    processes: Vec<Spanned<String>>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    vpn_gateways: Vec<Spanned<String>>,
    private_tenants: Option<Vec<Spanned<String>>>,
    fail: Option<Spanned<String>>,
    captive_portal_grace_secs: Option<Spanned<u64>>,
}

/// Looks a name up in a section: its index, or a precise error.
type IndexOf<'a> = &'a dyn Fn(&Spanned<String>, &str) -> Result<usize, ConfigError>;

impl RawProfile {
    pub(super) fn processes_is_empty(&self) -> bool {
        self.processes.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    name: Spanned<String>,
    edge: Option<Spanned<String>>,
    edges: Option<Spanned<Vec<Spanned<super::edges::RawEdgeEntry>>>>,
    selection: Option<Spanned<super::edges::RawSelection>>,
    server_name: Spanned<String>,
    ca: Spanned<PathBuf>,
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
    crl: Option<Spanned<PathBuf>>,
    /// `tls` or `udp`; default: `tunnel.transport`'s.
    transport: Option<Spanned<String>>,
    /// Default: `tunnel.transport_fallback`'s.
    transport_fallback: Option<bool>,
    #[serde(default)]
    segments: Vec<Spanned<String>>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwarding {
    #[serde(rename = "match")]
    combine: Option<Spanned<String>>,
    #[serde(default)]
    dns_servers: Vec<Spanned<String>>,
    #[serde(default)]
    dns_search_domains: Vec<Spanned<String>>,
    resolve_hostname: Option<Spanned<String>>,
    resolve_address: Option<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    default_gateways: Vec<Spanned<String>>,
    #[serde(default)]
    dhcp_servers: Vec<Spanned<String>>,
    #[serde(default)]
    egress_addresses: Vec<Spanned<String>>,
    on_trusted: Option<Spanned<String>>,
    off_trusted: Option<Spanned<String>>,
    vpn_trusted: Option<Spanned<String>>,
    interval_secs: Option<Spanned<u64>>,
    resolv_conf: Option<Spanned<PathBuf>>,
    dhcp_leases: Option<Vec<Spanned<PathBuf>>>,
    vpn_interfaces: Option<Vec<Spanned<String>>>,
}

/// The raw policy sections of one file.
pub(super) struct Sections {
    pub policy: Option<Spanned<RawPolicy>>,
    pub identity: Vec<Spanned<RawIdentity>>,
    pub rule: Vec<Spanned<RawRule>>,
    pub profile: Vec<Spanned<RawProfile>>,
    pub tenant: Vec<Spanned<RawTenant>>,
    pub forwarding: Option<Spanned<RawForwarding>>,
}

/// Where trusted-network detection looks (`[forwarding]`); `None`: the
/// detector's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetectionSources {
    /// `resolv.conf` to read.
    pub resolv_conf: Option<PathBuf>,
    /// DHCP lease files or directories.
    pub dhcp_leases: Option<Vec<PathBuf>>,
    /// Interface name patterns of full-tunnel VPNs.
    pub vpn_interfaces: Option<Vec<String>>,
}

/// A list field's element name: `profile[2].exclude[1]`.
fn at(section: &str, i: usize, field: &str) -> String {
    format!("{section}[{i}].{field}")
}

impl Doc<'_> {
    /// A name: 1 to 64 characters, letters, digits, `.`, `_`, `-`.
    fn name(&self, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let s = v.get_ref();
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        {
            return Err(self.err(
                v.span(),
                field,
                format!("`{s}`: 1 to 64 letters, digits, '.', '_', '-' or '@'"),
            ));
        }
        Ok(s.clone())
    }

    fn entries(&self, v: &[Spanned<String>], field: &str) -> Result<Vec<Entry>, ConfigError> {
        let mut out: Vec<Entry> = Vec::with_capacity(v.len());
        let mut seen = HashSet::with_capacity(v.len());
        for (i, e) in v.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let parsed = e
                .get_ref()
                .parse::<Entry>()
                .map_err(|m| self.err(e.span(), &f, m.to_string()))?;
            if !seen.insert(parsed) {
                return Err(self.err(e.span(), &f, format!("{parsed} is listed twice")));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    fn addr_list(&self, v: &[Spanned<String>], field: &str) -> Result<Vec<IpAddr>, ConfigError> {
        v.iter()
            .enumerate()
            .map(|(i, a)| {
                a.get_ref().trim().parse().map_err(|_| {
                    self.err(
                        a.span(),
                        &format!("{field}[{i}]"),
                        format!("{:?} is not an IPv4 or IPv6 address", a.get_ref()),
                    )
                })
            })
            .collect()
    }

    fn domain_list(
        &self,
        v: &[Spanned<String>],
        field: &str,
    ) -> Result<Vec<crate::dns::Pattern>, ConfigError> {
        let mut out = Vec::with_capacity(v.len());
        let mut seen = HashSet::with_capacity(v.len());
        for (i, p) in v.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let parsed = crate::dns::Pattern::parse(p.get_ref())
                .map_err(|e| self.err(p.span(), &f, e.to_string()))?;
            if !seen.insert(parsed.clone()) {
                return Err(self.err(p.span(), &f, format!("{parsed} is listed twice")));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    fn action(&self, v: Option<&Spanned<String>>, field: &str) -> Result<NetAction, ConfigError> {
        match v.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "tunnel")) => Ok(NetAction::Tunnel),
            Some((_, "direct")) => Ok(NetAction::Direct),
            Some((v, other)) => Err(self.err(
                v.span(),
                field,
                format!("`{other}`: expected \"tunnel\" or \"direct\""),
            )),
        }
    }

    /// The policy sections, validated and compiled. `bypass` is the
    /// `[bypass]` section; `tunnel` the internet tenant's settings (the
    /// tenants' timers follow it) and whether `tunnel.mtu` was set;
    /// `endpoint` this host's inner address.
    pub(super) fn policy(
        &self,
        s: &Sections,
        bypass: &RawBypass,
        (tunnel, mtu_set): (&TunnelConfig, bool),
        endpoint: Option<std::net::Ipv4Addr>,
    ) -> Result<(Policy, DetectionSources), ConfigError> {
        let tenants = self.tenants(&s.tenant, tunnel, mtu_set)?;
        let tenant_index = |v: &Spanned<String>, field: &str| {
            tenants
                .iter()
                .position(|t| &t.name == v.get_ref())
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        field,
                        format!(
                            "no [[tenant]] named `{}` (tenants: {})",
                            v.get_ref(),
                            names(tenants.iter().map(|t| t.name.as_str()))
                        ),
                    )
                })
        };
        let profiles = if s.profile.is_empty() {
            vec![self.legacy_profile(bypass, tenants.len())?]
        } else {
            self.no_legacy_lists(bypass)?;
            let mut out: Vec<Profile> = Vec::with_capacity(s.profile.len());
            for (i, p) in s.profile.iter().enumerate() {
                let prof = self.profile(p.get_ref(), i, &tenant_index, tenants.len())?;
                if out.iter().any(|o| o.name == prof.name) {
                    return Err(self.err(
                        p.get_ref().name.span(),
                        &at("profile", i, "name"),
                        format!("a profile named `{}` is defined twice", prof.name),
                    ));
                }
                out.push(prof);
            }
            out
        };
        let profile_index = |v: &Spanned<String>, field: &str| {
            profiles
                .iter()
                .position(|p| &p.name == v.get_ref())
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        field,
                        format!(
                            "no [[profile]] named `{}` (profiles: {})",
                            v.get_ref(),
                            names(profiles.iter().map(|p| p.name.as_str()))
                        ),
                    )
                })
        };
        let raw_policy = s.policy.as_ref().map(Spanned::get_ref);
        let default_profile = match raw_policy.and_then(|p| p.default_profile.as_ref()) {
            Some(v) => profile_index(v, "policy.default_profile")?,
            None => match profiles.iter().position(|p| p.name == "default") {
                Some(i) => i,
                None if profiles.len() == 1 => 0,
                None => {
                    let span = s.policy.as_ref().map_or(0..0, Spanned::span);
                    return Err(self.err(
                        span,
                        "policy.default_profile",
                        "several profiles and none named `default`: name the profile that applies when no rule matches",
                    ));
                }
            },
        };
        let identities = self.identities(&s.identity)?;
        let mut rules = Vec::with_capacity(s.rule.len());
        for (i, r) in s.rule.iter().enumerate() {
            rules.push(self.rule(r, i, &profile_index)?);
        }
        let active_tenant = match raw_policy.and_then(|p| p.private_tenant.as_ref()) {
            Some(v) => Some(tenant_index(v, "policy.private_tenant")?),
            None => (!tenants.is_empty()).then_some(0),
        };
        let local = Identity {
            source: Prefix::new(
                IpAddr::V4(endpoint.unwrap_or(std::net::Ipv4Addr::LOCALHOST)),
                32,
            ),
            user: raw_policy.and_then(|p| p.local_user.as_ref()).map_or_else(
                || Ok("local".to_string()),
                |u| self.name(u, "policy.local_user"),
            )?,
            groups: raw_policy
                .map(|p| {
                    p.local_groups
                        .iter()
                        .enumerate()
                        .map(|(i, g)| self.name(g, &format!("policy.local_groups[{i}]")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default(),
            device: None,
        };
        let (forwarding, sources) = match &s.forwarding {
            Some(f) => self.forwarding(f.get_ref())?,
            None => (Forwarding::default(), DetectionSources::default()),
        };
        let policy = Policy {
            identities,
            local,
            profiles,
            rules,
            default_profile,
            tenants,
            active_tenant,
            forwarding,
        };
        self.compiles(&policy, s)?;
        Ok((policy, sources))
    }

    /// Every private tenant the policy could switch on must compile.
    fn compiles(&self, policy: &Policy, s: &Sections) -> Result<(), ConfigError> {
        let choices: Vec<Option<usize>> = if policy.tenants.is_empty() {
            vec![None]
        } else {
            (0..policy.tenants.len()).map(Some).collect()
        };
        for t in choices {
            let mut p = policy.clone();
            p.active_tenant = t;
            if let Err(e) = Tables::compile(&p) {
                let (span, field) = match &e {
                    policy::compile::CompileError::TooManyPortRules { profile, .. } => s
                        .profile
                        .iter()
                        .enumerate()
                        .find(|(_, r)| r.get_ref().name.get_ref() == profile)
                        .map_or((0..0, "profile".to_string()), |(i, r)| {
                            (r.span(), format!("profile[{i}]"))
                        }),
                    policy::compile::CompileError::TooManyProfiles(_) => (
                        s.profile
                            .get(policy::MAX_PROFILES)
                            .map_or(0..0, Spanned::span),
                        "profile".to_string(),
                    ),
                    policy::compile::CompileError::TooLarge { what, .. } => (
                        0..0,
                        if *what == "source" {
                            "identity"
                        } else {
                            "profile"
                        }
                        .to_string(),
                    ),
                };
                return Err(self.err(span, &field, e.to_string()));
            }
        }
        Ok(())
    }

    fn tenants(
        &self,
        raw: &[Spanned<RawTenant>],
        tunnel: &TunnelConfig,
        mtu_set: bool,
    ) -> Result<Vec<Tenant>, ConfigError> {
        if let Some(t) = raw.get(policy::MAX_PRIVATE_TENANTS) {
            return Err(self.err(
                t.span(),
                "tenant",
                format!(
                    "at most {} private-access tenants",
                    policy::MAX_PRIVATE_TENANTS
                ),
            ));
        }
        let mut out: Vec<Tenant> = Vec::with_capacity(raw.len());
        for (i, t) in raw.iter().enumerate() {
            let (span, t) = (t.span(), t.get_ref());
            let name = self.name(&t.name, &at("tenant", i, "name"))?;
            if name == "internet" || out.iter().any(|o| o.name == name) {
                return Err(self.err(
                    t.name.span(),
                    &at("tenant", i, "name"),
                    format!("`{name}` is taken (by another tenant or the internet tenant)"),
                ));
            }
            let section = format!("tenant[{i}]");
            let (edge, edges) = self.edge_set(
                &super::edges::RawEdges {
                    section: &section,
                    span,
                    edge: t.edge.as_ref(),
                    edges: t.edges.as_ref(),
                    selection: t.selection.as_ref(),
                },
                &tunnel.edges.settings,
            )?;
            crate::pki::server_name(t.server_name.get_ref()).map_err(|e| {
                self.err(
                    t.server_name.span(),
                    &at("tenant", i, "server_name"),
                    e.to_string(),
                )
            })?;
            let segments = self.prefixes(&t.segments, &at("tenant", i, "segments"))?;
            let domains = self.domain_list(&t.domains, &at("tenant", i, "domains"))?;
            if segments.is_empty() && domains.is_empty() {
                return Err(self.err(
                    t.name.span(),
                    &at("tenant", i, "segments"),
                    "a private-access tenant needs segments or domains (its applications)",
                ));
            }
            if let Some((j, p)) = t
                .segments
                .iter()
                .zip(&segments)
                .enumerate()
                .find(|(_, (_, p))| p.is_default())
            {
                return Err(self.err(
                    p.0.span(),
                    &format!("tenant[{i}].segments[{j}]"),
                    format!(
                        "{} would send everything to the tenant: list its applications' prefixes",
                        p.1
                    ),
                ));
            }
            let transport = if t.transport.is_some() || t.transport_fallback.is_some() {
                let mut x = self.transport(
                    t.transport.as_ref(),
                    t.transport_fallback,
                    &at("tenant", i, "transport"),
                )?;
                if t.transport.is_none() {
                    x.primary = tunnel.transport.primary;
                }
                x
            } else {
                tunnel.transport
            };
            let mtu = self.tenant_mtu(i, t, tunnel, mtu_set, transport, &edges)?;
            out.push(Tenant {
                name,
                tunnel: TunnelConfig {
                    edge,
                    edges,
                    mtu,
                    server_name: t.server_name.get_ref().clone(),
                    ca: self.file(&t.ca, &at("tenant", i, "ca"))?,
                    cert: self.file(&t.cert, &at("tenant", i, "cert"))?,
                    key: self.file(&t.key, &at("tenant", i, "key"))?,
                    crl: t
                        .crl
                        .as_ref()
                        .map(|c| self.file(c, &at("tenant", i, "crl")))
                        .transpose()?,
                    transport,
                    ..tunnel.clone()
                },
                segments,
                domains,
            });
        }
        Ok(out)
    }

    /// A tenant's inner MTU: `tunnel.mtu` if it was set, else, with the
    /// datagram transport, what one datagram carries to the tenant's own
    /// edges (as the internet tenant's default). With UDP and no fallback
    /// an inherited `tunnel.mtu` above that is refused: larger packets
    /// would have no way through.
    fn tenant_mtu(
        &self,
        i: usize,
        t: &RawTenant,
        tunnel: &TunnelConfig,
        mtu_set: bool,
        transport: sluice_core::datagram::path::PathConfig,
        edges: &sluice_core::select::EdgeSet,
    ) -> Result<u16, ConfigError> {
        use sluice_core::datagram::path::Transport;
        if transport.primary != Transport::Udp {
            return Ok(tunnel.mtu);
        }
        let datagram_mtu = policy::datagram_mtu(edges);
        if !mtu_set {
            return Ok(datagram_mtu);
        }
        if !transport.fallback && tunnel.mtu > datagram_mtu {
            return Err(self.err(
                t.name.span(),
                &at("tenant", i, "transport_fallback"),
                format!(
                    "with transport = \"udp\" and transport_fallback = false, the inherited tunnel.mtu = {} is more than the {datagram_mtu} one datagram carries to this tenant's edges: larger packets would have no way through (lower tunnel.mtu or allow the fallback)",
                    tunnel.mtu
                ),
            ));
        }
        Ok(tunnel.mtu)
    }

    fn identities(&self, raw: &[Spanned<RawIdentity>]) -> Result<Vec<Identity>, ConfigError> {
        let mut out: Vec<Identity> = Vec::with_capacity(raw.len());
        for (i, id) in raw.iter().enumerate() {
            let r = id.get_ref();
            let f = |x| at("identity", i, x);
            let source: Prefix = r
                .source
                .get_ref()
                .parse()
                .map_err(|e| self.err(r.source.span(), &f("source"), format!("{e}")))?;
            if out.iter().any(|o| o.source == source) {
                return Err(self.err(
                    r.source.span(),
                    &f("source"),
                    format!("{source} already has an identity"),
                ));
            }
            let groups = r
                .groups
                .iter()
                .enumerate()
                .map(|(j, g)| self.name(g, &format!("identity[{i}].groups[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Identity {
                source,
                user: self.name(&r.user, &f("user"))?,
                groups,
                device: r
                    .device
                    .as_ref()
                    .map(|d| self.name(d, &f("device")))
                    .transpose()?,
            });
        }
        Ok(out)
    }

    fn rule(
        &self,
        r: &Spanned<RawRule>,
        i: usize,
        profile_index: IndexOf<'_>,
    ) -> Result<Rule, ConfigError> {
        let raw = r.get_ref();
        let matches = match (&raw.group, &raw.subnet, &raw.device) {
            (Some(g), None, None) => Match::Group(self.name(g, &at("rule", i, "group"))?),
            (None, Some(s), None) => Match::Subnet(
                s.get_ref()
                    .parse()
                    .map_err(|e| self.err(s.span(), &at("rule", i, "subnet"), format!("{e}")))?,
            ),
            (None, None, Some(d)) => Match::Device(self.name(d, &at("rule", i, "device"))?),
            _ => {
                return Err(self.err(
                    r.span(),
                    &format!("rule[{i}]"),
                    "a rule matches on exactly one of `group`, `subnet` or `device`",
                ));
            }
        };
        Ok(Rule {
            matches,
            profile: profile_index(&raw.profile, &at("rule", i, "profile"))?,
        })
    }

    /// The profile of a file without `[[profile]]`: the `[bypass]` lists.
    fn legacy_profile(&self, b: &RawBypass, tenants: usize) -> Result<Profile, ConfigError> {
        let mut p = Profile::with_defaults("default", tenants);
        let bypass = self.prefixes(&b.prefixes, "bypass.prefixes")?;
        p.exclude.extend(bypass.iter().map(|prefix| Entry {
            prefix: *prefix,
            port: None,
            proto: None,
        }));
        p.exclude.dedup();
        p.vpn_gateways = self.vpn_gateways(b, &bypass)?;
        p.domains = self.domain_list(&b.domains, "bypass.domains")?;
        p.processes = self.processes(b)?;
        Ok(p)
    }

    /// With profiles, `[bypass]` holds no lists.
    fn no_legacy_lists(&self, b: &RawBypass) -> Result<(), ConfigError> {
        for (list, field) in [
            (&b.prefixes, "bypass.prefixes"),
            (&b.domains, "bypass.domains"),
            (&b.vpn_gateways, "bypass.vpn_gateways"),
            (&b.processes, "bypass.processes"),
        ] {
            if let Some(v) = list.first() {
                return Err(self.err(
                    v.span(),
                    field,
                    "with [[profile]] sections the bypass lists belong in the profiles (exclude, domains, vpn_gateways, processes)",
                ));
            }
        }
        Ok(())
    }

    #[allow(
        clippy::too_many_lines,
        clippy::many_single_char_names,
        reason = "one flat list of field checks"
    )]
    fn profile(
        &self,
        r: &RawProfile,
        i: usize,
        tenant_index: IndexOf<'_>,
        tenants: usize,
    ) -> Result<Profile, ConfigError> {
        let f = |x| at("profile", i, x);
        let mut p = Profile::with_defaults(&self.name(&r.name, &f("name"))?, tenants);
        p.tunnel = r.tunnel.unwrap_or(true);
        if let Some(inc) = &r.include {
            p.include = self.entries(inc, &f("include"))?;
        }
        let exclude = self.entries(&r.exclude, &f("exclude"))?;
        let included: HashSet<&Entry> = p.include.iter().collect();
        for (j, e) in exclude.iter().enumerate() {
            if included.contains(e) {
                return Err(self.err(
                    r.exclude[j].span(),
                    &format!("profile[{i}].exclude[{j}]"),
                    format!("{e} is also included: an entry is either included or excluded"),
                ));
            }
        }
        p.exclude = if r.default_exclusions.unwrap_or(true) {
            let mut all = policy::default_exclusions();
            let excluded: HashSet<&Entry> = exclude.iter().collect();
            all.retain(|d| !excluded.contains(d) && !included.contains(d));
            all.extend(exclude);
            all
        } else {
            exclude
        };
        if r.source_ports.len() > policy::MAX_SOURCE_PORTS {
            return Err(self.err(
                r.source_ports[policy::MAX_SOURCE_PORTS].span(),
                &f("source_ports"),
                format!(
                    "at most {} source ports per profile",
                    policy::MAX_SOURCE_PORTS
                ),
            ));
        }
        for (j, v) in r.source_ports.iter().enumerate() {
            let port = u16::try_from(*v.get_ref())
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        &format!("profile[{i}].source_ports[{j}]"),
                        format!("{} is not a port (1 to 65535)", v.get_ref()),
                    )
                })?;
            if p.source_ports.contains(&port) {
                return Err(self.err(
                    v.span(),
                    &format!("profile[{i}].source_ports[{j}]"),
                    format!("port {port} is listed twice"),
                ));
            }
            p.source_ports.push(port);
        }
        p.processes = r
            .processes
            .iter()
            .enumerate()
            .map(|(j, v)| {
                crate::process::ProcessPattern::parse(v.get_ref()).map_err(|e| {
                    self.err(
                        v.span(),
                        &format!("profile[{i}].processes[{j}]"),
                        e.to_string(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        p.domains = self.domain_list(&r.domains, &f("domains"))?;
        p.vpn_gateways = self.prefixes(&r.vpn_gateways, &f("vpn_gateways"))?;
        if let Some(list) = &r.private_tenants {
            p.private_tenants = Vec::with_capacity(list.len());
            for (j, t) in list.iter().enumerate() {
                let idx = tenant_index(t, &format!("profile[{i}].private_tenants[{j}]"))?;
                if !p.private_tenants.contains(&idx) {
                    p.private_tenants.push(idx);
                }
            }
        }
        p.fail = match r.fail.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "closed")) => FailMode::Closed,
            Some((_, "open")) => FailMode::Open,
            Some((v, other)) => {
                return Err(self.err(
                    v.span(),
                    &f("fail"),
                    format!("`{other}`: expected \"closed\" or \"open\""),
                ));
            }
        };
        p.captive_portal_grace = match &r.captive_portal_grace_secs {
            Some(v) if *v.get_ref() > 3600 => {
                return Err(self.err(
                    v.span(),
                    &f("captive_portal_grace_secs"),
                    "must be 0 to 3600 (seconds)",
                ));
            }
            Some(v) if p.fail == FailMode::Open && *v.get_ref() > 0 => {
                return Err(self.err(
                    v.span(),
                    &f("captive_portal_grace_secs"),
                    "a fail-open profile already goes direct while its tunnel is down: the grace applies to fail = \"closed\"",
                ));
            }
            Some(v) => Duration::from_secs(*v.get_ref()),
            None => Duration::ZERO,
        };
        Ok(p)
    }

    fn forwarding(&self, r: &RawForwarding) -> Result<(Forwarding, DetectionSources), ConfigError> {
        let combine = match r.combine.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "all")) => trusted::Combine::All,
            Some((_, "any")) => trusted::Combine::Any,
            Some((v, other)) => {
                return Err(self.err(
                    v.span(),
                    "forwarding.match",
                    format!("`{other}`: expected \"all\" or \"any\""),
                ));
            }
        };
        let resolve = match (&r.resolve_hostname, &r.resolve_address) {
            (None, None) => None,
            (Some(h), Some(a)) => {
                let host = crate::dns::Pattern::parse(h.get_ref())
                    .ok()
                    .filter(|p| matches!(p, crate::dns::Pattern::Exact(_)))
                    .ok_or_else(|| {
                        self.err(
                            h.span(),
                            "forwarding.resolve_hostname",
                            format!("`{}` is not a host name", h.get_ref()),
                        )
                    })?;
                let addr = self.addr_list(std::slice::from_ref(a), "forwarding.resolve_address")?;
                Some((host.to_string(), addr[0]))
            }
            (Some(v), None) | (None, Some(v)) => {
                return Err(self.err(
                    v.span(),
                    "forwarding.resolve_hostname",
                    "resolve_hostname and resolve_address go together",
                ));
            }
        };
        let criteria = trusted::Criteria {
            combine,
            dns_servers: self.addr_list(&r.dns_servers, "forwarding.dns_servers")?,
            dns_search_domains: self
                .domain_list(&r.dns_search_domains, "forwarding.dns_search_domains")?
                .iter()
                .map(ToString::to_string)
                .collect(),
            resolve,
            networks: self.prefixes(&r.networks, "forwarding.networks")?,
            default_gateways: self.addr_list(&r.default_gateways, "forwarding.default_gateways")?,
            dhcp_servers: self.addr_list(&r.dhcp_servers, "forwarding.dhcp_servers")?,
            egress_addresses: self.addr_list(&r.egress_addresses, "forwarding.egress_addresses")?,
        };
        let on_trusted = self.action(r.on_trusted.as_ref(), "forwarding.on_trusted")?;
        if on_trusted == NetAction::Direct && criteria.is_empty() {
            let span = r.on_trusted.as_ref().map_or(0..0, Spanned::span);
            return Err(self.err(
                span,
                "forwarding.on_trusted",
                "on_trusted = \"direct\" with no trusted-network criteria: list at least one (dns_servers, networks, ...)",
            ));
        }
        let interval = match &r.interval_secs {
            Some(v) if !(5..=86_400).contains(v.get_ref()) => {
                return Err(self.err(
                    v.span(),
                    "forwarding.interval_secs",
                    "must be 5 to 86400 (seconds)",
                ));
            }
            Some(v) => Duration::from_secs(*v.get_ref()),
            None => Duration::from_secs(60),
        };
        let sources = DetectionSources {
            resolv_conf: r
                .resolv_conf
                .as_ref()
                .map(|p| self.file(p, "forwarding.resolv_conf"))
                .transpose()?,
            dhcp_leases: r.dhcp_leases.as_ref().map(|l| {
                l.iter()
                    .map(|p| Spanned::get_ref(p).clone())
                    .collect::<Vec<_>>()
            }),
            vpn_interfaces: r
                .vpn_interfaces
                .as_ref()
                .map(|l| l.iter().map(|s| s.get_ref().clone()).collect()),
        };
        Ok((
            Forwarding {
                criteria,
                on_trusted,
                off_trusted: self.action(r.off_trusted.as_ref(), "forwarding.off_trusted")?,
                vpn_trusted: self.action(r.vpn_trusted.as_ref(), "forwarding.vpn_trusted")?,
                interval,
            },
            sources,
        ))
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
