//! The organisation's objects: one type per kind, the JSON an API client
//! sends and the body the store keeps.
//!
//! The fields mirror the gateway's configuration file (`[[profile]]`,
//! `[[tenant]]`, `[[identity]]`, `[forwarding]`), so that a policy compiles
//! to that file ([`crate::compile`]) and today's files import into objects
//! ([`crate::import`]) without a translation table. Unknown fields are
//! refused; every string and list is bounded here, before anything else
//! looks at it. Whether the objects make a valid policy together is
//! checked by compiling them (the store does that in every write).
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest name of any object.
pub const MAX_NAME: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest string in a list (a prefix, a domain pattern, a path).
pub const MAX_ITEM: usize = 256;
/// Most entries in any one list.
pub const MAX_LIST: usize = 4096;

/// A kind of object: its path in the API and its table key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// [`Tenant`].
    Tenant,
    /// [`Edge`].
    Edge,
    /// [`Gateway`].
    Gateway,
    /// [`AppProfile`].
    AppProfile,
    /// [`ForwardingProfile`].
    ForwardingProfile,
    /// [`BypassList`].
    BypassList,
    /// [`Group`].
    Group,
    /// [`User`].
    User,
    /// [`Identity`].
    Identity,
    /// [`ApiClient`].
    ApiClient,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 10] = [
        Kind::Tenant,
        Kind::Edge,
        Kind::Gateway,
        Kind::AppProfile,
        Kind::ForwardingProfile,
        Kind::BypassList,
        Kind::Group,
        Kind::User,
        Kind::Identity,
        Kind::ApiClient,
    ];

    /// The table key and the audit log's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Edge => "edge",
            Kind::Gateway => "gateway",
            Kind::AppProfile => "app_profile",
            Kind::ForwardingProfile => "forwarding_profile",
            Kind::BypassList => "bypass_list",
            Kind::Group => "group",
            Kind::User => "user",
            Kind::Identity => "identity",
            Kind::ApiClient => "api_client",
        }
    }

    /// The kind a table key names.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The collection's path under `/api/v1/`.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Tenant => "tenants",
            Kind::Edge => "edges",
            Kind::Gateway => "gateways",
            Kind::AppProfile => "app-profiles",
            Kind::ForwardingProfile => "forwarding-profiles",
            Kind::BypassList => "bypass-lists",
            Kind::Group => "groups",
            Kind::User => "users",
            Kind::Identity => "identities",
            Kind::ApiClient => "api-clients",
        }
    }

    /// Identifier prefix (`ap_3f…`), so an id says what it is.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::Tenant => "tn",
            Kind::Edge => "ed",
            Kind::Gateway => "gw",
            Kind::AppProfile => "ap",
            Kind::ForwardingProfile => "fp",
            Kind::BypassList => "bl",
            Kind::Group => "gr",
            Kind::User => "us",
            Kind::Identity => "id",
            Kind::ApiClient => "cl",
        }
    }

    /// Whether a change to it is a change of policy (a new revision that
    /// gateways and edges take). API clients are not.
    pub fn is_policy(self) -> bool {
        self != Kind::ApiClient
    }

    /// The scope that may change it.
    pub fn write_scope(self) -> crate::auth::Scope {
        match self {
            Kind::ApiClient | Kind::Gateway | Kind::Edge => crate::auth::Scope::Admin,
            _ => crate::auth::Scope::Policy,
        }
    }
}

/// A validation failure of one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field (`include[3]`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What every kind's type offers the store.
pub trait Spec: Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + 'static {
    /// Its kind.
    const KIND: Kind;
    /// Its unique name within the kind.
    fn name(&self) -> &str;
    /// Field checks that need no other object.
    fn validate(&self) -> Result<(), FieldError>;
}

/// A name: 1 to 64 of `A-Za-z0-9._-`, starting with a letter or digit.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "a name is 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit"
            ),
        ))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.len() > max {
        return Err(FieldError::new(field, format!("longer than {max} bytes")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(FieldError::new(field, "control characters are not allowed"));
    }
    Ok(())
}

fn check_list(field: &str, list: &[String]) -> Result<(), FieldError> {
    if list.len() > MAX_LIST {
        return Err(FieldError::new(
            field,
            format!("more than {MAX_LIST} entries"),
        ));
    }
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            return Err(FieldError::new(format!("{field}[{i}]"), "empty"));
        }
        check_text(&format!("{field}[{i}]"), s, MAX_ITEM)?;
        if s.chars().any(char::is_whitespace) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                "whitespace is not allowed",
            ));
        }
    }
    Ok(())
}

fn check_names(field: &str, list: &[String]) -> Result<(), FieldError> {
    check_list(field, list)?;
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), s)?;
        if !seen.insert(s) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("`{s}` is named twice"),
            ));
        }
    }
    Ok(())
}

fn check_one_of(field: &str, v: Option<&str>, allowed: &[&str]) -> Result<(), FieldError> {
    match v {
        Some(s) if !allowed.contains(&s) => Err(FieldError::new(
            field,
            format!("must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// An internet or private-access tenant: its edges and what goes to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `internet` (the gateways' `[tunnel]`; at most one) or `private` (a
    /// private-access tenant, `[[tenant]]`).
    #[serde(default = "default_private")]
    pub kind: String,
    /// Whether this private-access tenant is the one switched on (at most
    /// one is).
    #[serde(default)]
    pub active: bool,
    /// Its edges, by name, in order of preference.
    #[serde(default)]
    pub edges: Vec<String>,
    /// The name on its edges' certificates.
    pub server_name: String,
    /// Primary transport: `tls` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Whether traffic may fall back to TLS when datagrams stop getting
    /// through (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_fallback: Option<bool>,
    /// Its private applications' prefixes (private tenants).
    #[serde(default)]
    pub segments: Vec<String>,
    /// Its private applications' domains (private tenants).
    #[serde(default)]
    pub domains: Vec<String>,
}

fn default_private() -> String {
    "private".into()
}

impl Spec for Tenant {
    const KIND: Kind = Kind::Tenant;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_one_of("kind", Some(&self.kind), &["internet", "private"])?;
        if self.kind == "internet" && self.active {
            return Err(FieldError::new(
                "active",
                "only a private-access tenant is switched on or off",
            ));
        }
        check_names("edges", &self.edges)?;
        if self.edges.len() > 8 {
            return Err(FieldError::new("edges", "at most 8 edges"));
        }
        check_text("server_name", &self.server_name, MAX_ITEM)?;
        check_one_of("transport", self.transport.as_deref(), &["tls", "udp"])?;
        check_list("segments", &self.segments)?;
        check_list("domains", &self.domains)?;
        if self.kind == "internet" && !(self.segments.is_empty() && self.domains.is_empty()) {
            return Err(FieldError::new(
                "segments",
                "the internet tenant has no segments or domains (app profiles say what it carries)",
            ));
        }
        Ok(())
    }
}

/// A service edge: where gateways' tunnels go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `host:port` or `[v6]:port` the gateways connect to (a DNS name is
    /// resolved by each gateway).
    pub address: String,
    /// Lower is preferred (default: its order in a tenant's list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

impl Spec for Edge {
    const KIND: Kind = Kind::Edge;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_text("address", &self.address, MAX_ITEM)?;
        let port_ok = self
            .address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok || self.address.chars().any(char::is_whitespace) {
            return Err(FieldError::new("address", "expected host:port"));
        }
        Ok(())
    }
}

/// A gateway (a branch appliance): where it is, which LAN prefixes it owns,
/// which profiles apply there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Unique name (also its certificate's name).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The site it serves (free text).
    #[serde(default)]
    pub site: String,
    /// Its LAN's prefixes: its edges take from its tunnels only these
    /// sources.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The app profile when no rule matches (default: the first profile in
    /// order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// Its forwarding profile (trusted-network criteria), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding_profile: Option<String>,
}

impl Spec for Gateway {
    const KIND: Kind = Kind::Gateway;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_text("site", &self.site, MAX_ITEM)?;
        check_list("prefixes", &self.prefixes)?;
        if let Some(p) = &self.default_profile {
            check_name("default_profile", p)?;
        }
        if let Some(p) = &self.forwarding_profile {
            check_name("forwarding_profile", p)?;
        }
        Ok(())
    }
}

/// An app profile: who gets it (groups, subnets, devices, in the profiles'
/// order) and what it tunnels, bypasses or drops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppProfile {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Order among profiles: the first profile (lowest order, then name)
    /// with a matching rule wins.
    #[serde(default)]
    pub order: i64,
    /// Rules: members of these groups get the profile.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Rules: sources in these prefixes get it.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Rules: these devices get it.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Internet tunnel on (default) or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<bool>,
    /// What goes to the internet tunnel (default everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// What goes direct.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whether the private ranges are excluded by default (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_exclusions: Option<bool>,
    /// LAN source ports that go direct.
    #[serde(default)]
    pub source_ports: Vec<u16>,
    /// Processes that go direct (endpoint mode).
    #[serde(default)]
    pub processes: Vec<String>,
    /// Domains whose answered addresses go direct.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Other VPN gateways, always direct.
    #[serde(default)]
    pub vpn_gateways: Vec<String>,
    /// Private-access tenants it may use (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_tenants: Option<Vec<String>>,
    /// `closed` (default) or `open` while its tunnel is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<String>,
    /// Direct for this long after the edge goes away (captive portals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captive_portal_grace_secs: Option<u32>,
    /// Bypass lists whose entries it adds to `exclude`, `domains`,
    /// `processes` and `source_ports`.
    #[serde(default)]
    pub bypass_lists: Vec<String>,
}

impl Spec for AppProfile {
    const KIND: Kind = Kind::AppProfile;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_names("groups", &self.groups)?;
        check_list("subnets", &self.subnets)?;
        check_names("devices", &self.devices)?;
        if let Some(i) = &self.include {
            check_list("include", i)?;
        }
        check_list("exclude", &self.exclude)?;
        if self.source_ports.len() > MAX_LIST {
            return Err(FieldError::new("source_ports", "too many"));
        }
        check_list("processes", &self.processes)?;
        check_list("domains", &self.domains)?;
        check_list("vpn_gateways", &self.vpn_gateways)?;
        if let Some(t) = &self.private_tenants {
            check_names("private_tenants", t)?;
        }
        check_one_of("fail", self.fail.as_deref(), &["open", "closed"])?;
        check_names("bypass_lists", &self.bypass_lists)?;
        Ok(())
    }
}

/// Trusted-network detection and what each network state does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardingProfile {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `all` (default) or `any` of the criteria.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub combine: Option<String>,
    /// Criteria: the host's DNS servers.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// Criteria: DNS search domains.
    #[serde(default)]
    pub dns_search_domains: Vec<String>,
    /// Criteria: this name resolves ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_hostname: Option<String>,
    /// ... to this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_address: Option<String>,
    /// Criteria: an address of the host is in one of these.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Criteria: default gateways.
    #[serde(default)]
    pub default_gateways: Vec<String>,
    /// Criteria: DHCP servers.
    #[serde(default)]
    pub dhcp_servers: Vec<String>,
    /// Criteria: egress addresses.
    #[serde(default)]
    pub egress_addresses: Vec<String>,
    /// `tunnel` or `direct` on a trusted network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_trusted: Option<String>,
    /// ... off it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_trusted: Option<String>,
    /// ... while a full-tunnel VPN holds the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_trusted: Option<String>,
}

impl Spec for ForwardingProfile {
    const KIND: Kind = Kind::ForwardingProfile;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_one_of("match", self.combine.as_deref(), &["all", "any"])?;
        for (f, l) in [
            ("dns_servers", &self.dns_servers),
            ("dns_search_domains", &self.dns_search_domains),
            ("networks", &self.networks),
            ("default_gateways", &self.default_gateways),
            ("dhcp_servers", &self.dhcp_servers),
            ("egress_addresses", &self.egress_addresses),
        ] {
            check_list(f, l)?;
        }
        for (f, v) in [
            ("resolve_hostname", &self.resolve_hostname),
            ("resolve_address", &self.resolve_address),
        ] {
            if let Some(v) = v {
                check_text(f, v, MAX_ITEM)?;
            }
        }
        for (f, v) in [
            ("on_trusted", &self.on_trusted),
            ("off_trusted", &self.off_trusted),
            ("vpn_trusted", &self.vpn_trusted),
        ] {
            check_one_of(f, v.as_deref(), &["tunnel", "direct"])?;
        }
        Ok(())
    }
}

/// A bypass list that app profiles share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BypassList {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Prefixes (`prefix`, `prefix:port`, `prefix:port:protocol`).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Domain patterns.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Process patterns.
    #[serde(default)]
    pub processes: Vec<String>,
    /// LAN source ports.
    #[serde(default)]
    pub source_ports: Vec<u16>,
}

impl Spec for BypassList {
    const KIND: Kind = Kind::BypassList;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_list("prefixes", &self.prefixes)?;
        check_list("domains", &self.domains)?;
        check_list("processes", &self.processes)?;
        if self.source_ports.len() > MAX_LIST {
            return Err(FieldError::new("source_ports", "too many"));
        }
        Ok(())
    }
}

/// A group of users (local, or synced from a directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `directory`: kept by directory sync (which adds, changes and
    /// removes such groups); absent: made by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Gone from the directory while an app profile still names it: it
    /// has no members, and the profiles that name it show it flagged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

impl Spec for Group {
    const KIND: Kind = Kind::Group;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)
    }
}

/// A user and the groups it is in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Its groups, by name.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `directory`: kept by directory sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Gone from the directory while an identity still names it (it is in
    /// no group).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

impl Spec for User {
    const KIND: Kind = Kind::User;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_names("groups", &self.groups)
    }
}

/// Who a LAN source is: a user (with the user's groups) and a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The source address or prefix.
    pub source: String,
    /// The user, by name.
    pub user: String,
    /// The device (rules can match it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Spec for Identity {
    const KIND: Kind = Kind::Identity;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_list("source", std::slice::from_ref(&self.source))?;
        check_name("user", &self.user)?;
        if let Some(d) = &self.device {
            check_name("device", d)?;
        }
        Ok(())
    }
}

/// An API client: automation that signs in with its ID and a secret
/// (OAuth 2.0 client credentials) and gets these scopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiClient {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `active` or `inactive` (an inactive client gets no tokens, and its
    /// live tokens stop working at once).
    #[serde(default = "default_active")]
    pub status: String,
    /// Access-token lifetime, 1 to 1440 minutes.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_minutes: u32,
    /// Scopes: `read`, `policy` (read and change policy objects), `admin`
    /// (everything).
    pub scopes: Vec<String>,
}

fn default_active() -> String {
    "active".into()
}

fn default_lifetime() -> u32 {
    60
}

impl Spec for ApiClient {
    const KIND: Kind = Kind::ApiClient;
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), FieldError> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, MAX_DESCRIPTION)?;
        check_one_of("status", Some(&self.status), &["active", "inactive"])?;
        if !(1..=1440).contains(&self.token_lifetime_minutes) {
            return Err(FieldError::new(
                "token_lifetime_minutes",
                "1 to 1440 (1 minute to 24 hours)",
            ));
        }
        if self.scopes.is_empty() {
            return Err(FieldError::new("scopes", "at least one scope"));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            if crate::auth::Scope::parse(s).is_none() {
                return Err(FieldError::new(
                    format!("scopes[{i}]"),
                    "one of read, policy, admin",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(check_name("n", "branch-1").is_ok());
        assert!(check_name("n", "").is_err());
        assert!(check_name("n", "-x").is_err());
        assert!(check_name("n", "a b").is_err());
        assert!(check_name("n", "<script>").is_err());
        assert!(check_name("n", &"a".repeat(65)).is_err());
        assert!(check_name("n", "ünï").is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let e = serde_json::from_str::<Group>(r#"{"name":"g","colour":"red"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let c: ApiClient =
            serde_json::from_str(r#"{"name":"c","scopes":["read"],"token_lifetime_minutes":1441}"#)
                .unwrap();
        assert_eq!(c.validate().unwrap_err().field, "token_lifetime_minutes");
        let p: AppProfile =
            serde_json::from_str(r#"{"name":"p","exclude":["203.0.113.0/24\u0000"]}"#).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "exclude[0]");
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
