//! The policy compiled into the classifier's lookup tables.
//!
//! Two longest-prefix tables per address family:
//! - sources: prefix → app profile. The nodes are the identities'
//!   prefixes, the rules' subnets and the default route; each node holds
//!   the profile of the first rule that matches any address whose longest
//!   node it is (the identity is the longest identity prefix containing
//!   the node, and the subnets containing an address are exactly the
//!   subnet nodes containing its longest node).
//! - destinations, per profile: prefix → [`DestEntry`]. The nodes are every
//!   prefix the profile names; each holds the verdict already resolved for
//!   addresses whose longest node it is: a VPN gateway or private segment
//!   covering it (a "priority" verdict, ahead of everything), else the
//!   best plain entry covering it, preceded by the port-specific entries
//!   that outrank that plain entry, best first. The packet path takes the
//!   first port entry that matches, else the plain verdict: one LPM lookup
//!   and at most [`MAX_PORT_RULES`] comparisons.
//!
//! [`Tables::lookup`] runs the same algorithm the classifier runs, in user
//! space: the endpoint worker uses it, and the tests check it against the
//! reference evaluator ([`super::eval`]).
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use sluice_common::{DestEntry, PortRule};

use super::{
    Entry, FailMode, INTERNET, MAX_PORT_RULES, MAX_PROFILES, Policy, Proto, Verdict, eval,
};
use crate::net::Prefix;

/// Why a policy does not compile (the configuration reports these with
/// the profile's place in the file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// More profiles than the classifier holds.
    #[error("{0} profiles: at most {MAX_PROFILES}")]
    TooManyProfiles(usize),
    /// More entries than one slot of the classifier's maps holds (each
    /// map holds two policies: the live one and the next).
    #[error(
        "the policy needs {count} {what} entries in the classifier; one policy may use at most {max}"
    )]
    TooLarge {
        /// Source or destination.
        what: &'static str,
        /// Entries needed (per address family, the larger).
        count: usize,
        /// Half the map.
        max: usize,
    },
    /// More port-specific entries cover one prefix than the classifier's
    /// per-prefix list holds.
    #[error(
        "profile `{profile}`: {count} port-specific entries apply to addresses in {prefix} (at most {MAX_PORT_RULES}): merge some, or give them longer prefixes"
    )]
    TooManyPortRules {
        /// The profile.
        profile: String,
        /// The prefix.
        prefix: Prefix,
        /// How many.
        count: usize,
    },
}

/// A longest-prefix index over a list of prefixes (the value: the
/// position in the list), so that a userspace lookup is a trie walk, not a
/// scan of the list. Derived from the list: it compares equal to any other
/// index.
#[derive(Clone, Default)]
pub struct PrefixIndex {
    v4: prefix_trie::PrefixMap<(u32, u8), u32>,
    v6: prefix_trie::PrefixMap<(u128, u8), u32>,
}

impl PrefixIndex {
    /// Indexes `prefixes` (for a prefix listed twice, the last).
    pub fn build<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> Self {
        let mut ix = Self::default();
        for (i, p) in prefixes.enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match p.addr() {
                IpAddr::V4(a) => {
                    ix.v4.insert((u32::from(a), p.len()), i);
                }
                IpAddr::V6(a) => {
                    ix.v6.insert((u128::from(a), p.len()), i);
                }
            }
        }
        ix
    }

    /// The position of the longest prefix containing `ip`.
    pub fn longest(&self, ip: IpAddr) -> Option<usize> {
        let i = match ip {
            IpAddr::V4(a) => self.v4.get_lpm(&(u32::from(a), 32)).map(|(_, i)| *i),
            IpAddr::V6(a) => self.v6.get_lpm(&(u128::from(a), 128)).map(|(_, i)| *i),
        }?;
        usize::try_from(i).ok()
    }
}

impl std::fmt::Debug for PrefixIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrefixIndex { .. }")
    }
}

impl PartialEq for PrefixIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One profile's compiled tables.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileTables {
    /// Destination nodes and their resolved entries.
    pub nodes: Vec<(Prefix, DestEntry)>,
    /// `nodes` indexed by prefix.
    pub index: PrefixIndex,
    /// Source-port bypasses.
    pub source_ports: Vec<u16>,
    /// Fails open.
    pub fail_open: bool,
    /// Captive-portal grace.
    pub grace: Duration,
}

/// The compiled policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Tables {
    /// Source nodes and their profile.
    pub sources: Vec<(Prefix, u16)>,
    /// `sources` indexed by prefix.
    pub source_index: PrefixIndex,
    /// Per profile.
    pub profiles: Vec<ProfileTables>,
    /// The profile of this host's own flows.
    pub local_profile: usize,
    /// The local profile's destinations that go direct whatever the port
    /// (the socket hooks' bypass trie; a prefix with any tunnelled port
    /// is left out, so the hooks err toward the tunnel).
    pub local_direct: Vec<Prefix>,
    /// Every destination node of the local profile but the default
    /// routes, and whether it goes direct (as in `local_direct`): this
    /// host's routing table for tunnelled traffic throws the direct ones
    /// back to the main table and routes the others into the tunnel (a
    /// tunnelled prefix inside a direct one needs its own route).
    pub local_routes: Vec<(Prefix, bool)>,
}

/// A ranked entry during compilation.
#[derive(Clone, Copy)]
struct Ranked {
    entry: Entry,
    rank: (u8, u8, bool),
    action: u8,
}

impl Tables {
    /// Compiles `policy`.
    pub fn compile(policy: &Policy) -> Result<Self, CompileError> {
        if policy.profiles.len() > MAX_PROFILES {
            return Err(CompileError::TooManyProfiles(policy.profiles.len()));
        }
        let profiles = (0..policy.profiles.len())
            .map(|i| compile_profile(policy, i))
            .collect::<Result<Vec<_>, _>>()?;
        let local_profile = policy.local_profile();
        let local_routes: Vec<(Prefix, bool)> = profiles[local_profile]
            .nodes
            .iter()
            .filter(|(p, _)| !p.is_default())
            .map(|(p, e)| {
                let direct = e.action == sluice_common::ACTION_DIRECT
                    && e.ports[..usize::from(e.nports)]
                        .iter()
                        .all(|r| r.action == sluice_common::ACTION_DIRECT);
                (*p, direct)
            })
            .collect();
        // The socket hooks look up the longest direct prefix only: a
        // tunnelled node inside a direct one must be cut out of it, or the
        // hooks would find the enclosing direct prefix and mark the socket.
        let holes: Vec<Prefix> = local_routes
            .iter()
            .filter(|(_, d)| !*d)
            .map(|(p, _)| *p)
            .collect();
        let local_direct = local_routes
            .iter()
            .filter(|(_, d)| *d)
            .flat_map(|(p, _)| subtract(*p, &holes))
            .collect();
        let sources = compile_sources(policy);
        let per_family = |prefixes: &mut dyn Iterator<Item = &Prefix>| {
            let (mut v4, mut v6) = (0, 0);
            for p in prefixes {
                if p.addr().is_ipv4() {
                    v4 += 1;
                } else {
                    v6 += 1;
                }
            }
            usize::max(v4, v6)
        };
        for (what, count, max) in [
            (
                "source",
                per_family(&mut sources.iter().map(|(p, _)| p)),
                sluice_common::POLICY_SRC_MAX_ENTRIES,
            ),
            (
                "destination",
                per_family(&mut profiles.iter().flat_map(|t| t.nodes.iter().map(|(p, _)| p))),
                sluice_common::POLICY_DST_MAX_ENTRIES,
            ),
        ] {
            let max = max as usize / 2;
            if count > max {
                return Err(CompileError::TooLarge { what, count, max });
            }
        }
        Ok(Self {
            source_index: PrefixIndex::build(sources.iter().map(|(p, _)| p)),
            sources,
            profiles,
            local_profile,
            local_direct,
            local_routes,
        })
    }

    /// The profile of source `src` (the source table's longest match).
    pub(crate) fn profile_of(&self, src: IpAddr) -> usize {
        self.source_index
            .longest(src)
            .map_or(0, |i| usize::from(self.sources[i].1))
    }

    /// The verdict for a flow, as the classifier computes it (without
    /// domain and process bypass, which other tables carry).
    pub fn lookup(
        &self,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        proto: Proto,
    ) -> Verdict {
        self.lookup_profile(self.profile_of(src), dst, sport, dport, proto)
    }

    /// [`Tables::lookup`] for a known profile.
    pub fn lookup_profile(
        &self,
        profile: usize,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        proto: Proto,
    ) -> Verdict {
        let p = &self.profiles[profile];
        let Some(i) = p.index.longest(dst) else {
            return Verdict::Direct;
        };
        let e = &p.nodes[i].1;
        Verdict::from_action(resolve(e, &p.source_ports, sport, dport, proto.0))
    }

    /// Total destination nodes (all profiles).
    pub fn dest_nodes(&self) -> usize {
        self.profiles.iter().map(|p| p.nodes.len()).sum()
    }
}

/// The classifier's algorithm for one destination entry (domains aside):
/// a priority verdict; else a source-port bypass; else the first matching
/// port rule; else the plain verdict. Unknown ports (`dport` 0 for a
/// protocol with ports: a non-first fragment) take the first port rule of
/// the protocol that tunnels: the lookup errs toward the tunnel.
pub fn resolve(e: &DestEntry, source_ports: &[u16], sport: u16, dport: u16, proto: u8) -> u8 {
    if e.priority != 0 {
        return e.action;
    }
    if sport != 0 && source_ports.contains(&sport) {
        return sluice_common::ACTION_DIRECT;
    }
    let unknown = dport == 0 && matches!(proto, 6 | 17 | 132);
    e.ports[..usize::from(e.nports)]
        .iter()
        .find(|r| {
            (r.proto == 0 || r.proto == proto)
                && if unknown {
                    r.action != sluice_common::ACTION_DIRECT
                } else {
                    r.port == dport
                }
        })
        .map_or(e.action, |r| r.action)
}

/// `p` without the addresses of `holes`, as the fewest prefixes that
/// halve `p` down to each hole.
fn subtract(p: Prefix, holes: &[Prefix]) -> Vec<Prefix> {
    let inside: Vec<Prefix> = holes
        .iter()
        .filter(|h| h.len() >= p.len() && p.contains(h.addr()))
        .copied()
        .collect();
    if inside.is_empty() {
        return vec![p];
    }
    if inside.iter().any(|h| h.len() == p.len()) {
        return Vec::new();
    }
    let len = p.len() + 1;
    let low = Prefix::new(p.addr(), len);
    let high = Prefix::new(with_bit(p.addr(), p.len()), len);
    let mut out = subtract(low, &inside);
    out.extend(subtract(high, &inside));
    out
}

/// `a` with bit `i` (from the most significant) set.
fn with_bit(a: IpAddr, i: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v) | (1 << (31 - u32::from(i))))),
        IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(u128::from(v) | (1 << (127 - u32::from(i))))),
    }
}

fn defaults() -> [Prefix; 2] {
    [
        Prefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        Prefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    ]
}

/// The prefixes containing `p` (itself included), shortest first.
fn ancestors(p: Prefix) -> impl Iterator<Item = Prefix> {
    (0..=p.len()).map(move |l| Prefix::new(p.addr(), l))
}

fn compile_sources(policy: &Policy) -> Vec<(Prefix, u16)> {
    let identities: HashMap<Prefix, usize> = policy
        .identities
        .iter()
        .enumerate()
        .map(|(i, id)| (id.source, i))
        .collect();
    let mut nodes: Vec<Prefix> = defaults().to_vec();
    nodes.extend(policy.identities.iter().map(|i| i.source));
    nodes.extend(policy.rules.iter().filter_map(|r| match r.matches {
        super::Match::Subnet(p) => Some(p),
        _ => None,
    }));
    let mut seen = HashSet::new();
    nodes.retain(|p| seen.insert(*p));
    nodes
        .into_iter()
        .map(|node| {
            let identity = ancestors(node)
                .filter_map(|a| identities.get(&a))
                .last()
                .map(|&i| &policy.identities[i]);
            let rule = policy.rules.iter().position(|r| match &r.matches {
                super::Match::Subnet(s) => s.len() <= node.len() && s.contains(node.addr()),
                m => eval::rule_matches(m, identity, node.addr()),
            });
            let profile = rule.map_or(policy.default_profile, |r| policy.rules[r].profile);
            (node, u16::try_from(profile).unwrap_or(u16::MAX))
        })
        .collect()
}

fn compile_profile(policy: &Policy, index: usize) -> Result<ProfileTables, CompileError> {
    let p = &policy.profiles[index];
    let include_action = if p.tunnel {
        Verdict::Tunnel(INTERNET)
    } else {
        Verdict::Direct
    }
    .action();
    let ranked = |e: &Entry, include: bool, action: u8| Ranked {
        entry: *e,
        rank: (e.prefix.len(), e.fields(), include),
        action,
    };
    let mut plain: HashMap<Prefix, Ranked> = HashMap::new();
    let mut ported: HashMap<Prefix, Vec<Ranked>> = HashMap::new();
    let entries = p
        .include
        .iter()
        .map(|e| ranked(e, true, include_action))
        .chain(
            p.exclude
                .iter()
                .map(|e| ranked(e, false, sluice_common::ACTION_DIRECT)),
        );
    for r in entries {
        if r.entry.port.is_none() {
            let slot = plain.entry(r.entry.prefix).or_insert(r);
            if r.rank > slot.rank {
                *slot = r;
            }
        } else {
            ported.entry(r.entry.prefix).or_default().push(r);
        }
    }
    // Priority prefixes: VPN gateways (direct), then the active tenant's
    // segments (its tunnel).
    let mut priority: HashMap<Prefix, u8> = HashMap::new();
    if let Some(t) = policy
        .active_tenant
        .filter(|t| p.private_tenants.contains(t))
    {
        let action = Verdict::Tunnel(u8::try_from(t + 1).unwrap_or(u8::MAX)).action();
        for s in &policy.tenants[t].segments {
            priority.insert(*s, action);
        }
    }
    let vpn: HashSet<Prefix> = p.vpn_gateways.iter().copied().collect();

    let mut nodes: Vec<Prefix> = defaults().to_vec();
    nodes.extend(plain.keys().chain(ported.keys()).chain(priority.keys()));
    nodes.extend(vpn.iter());
    let mut seen = HashSet::new();
    nodes.retain(|n| seen.insert(*n));
    nodes.sort();

    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut e = DestEntry::default();
        if ancestors(node).any(|a| vpn.contains(&a)) {
            e.priority = 1;
            e.action = sluice_common::ACTION_DIRECT;
        } else if let Some(a) = ancestors(node).filter_map(|a| priority.get(&a)).last() {
            e.priority = 1;
            e.action = *a;
        } else {
            let best = ancestors(node).filter_map(|a| plain.get(&a)).last();
            e.action = best.map_or(sluice_common::ACTION_DIRECT, |b| b.action);
            let floor = best.map(|b| b.rank);
            let mut rules: Vec<Ranked> = ancestors(node)
                .filter_map(|a| ported.get(&a))
                .flatten()
                .filter(|r| floor.is_none_or(|f| r.rank > f))
                .copied()
                .collect();
            rules.sort_by_key(|r| std::cmp::Reverse(r.rank));
            let mut keys = HashSet::new();
            rules.retain(|r| keys.insert((r.entry.port, r.entry.proto)));
            if rules.len() > MAX_PORT_RULES {
                return Err(CompileError::TooManyPortRules {
                    profile: p.name.clone(),
                    prefix: node,
                    count: rules.len(),
                });
            }
            for (slot, r) in e.ports.iter_mut().zip(&rules) {
                *slot = PortRule {
                    port: r.entry.port.unwrap_or(0),
                    proto: r.entry.proto.map_or(0, |x| x.0),
                    action: r.action,
                };
            }
            e.nports = u8::try_from(rules.len()).unwrap_or(u8::MAX);
        }
        out.push((node, e));
    }
    Ok(ProfileTables {
        index: PrefixIndex::build(out.iter().map(|(p, _)| p)),
        nodes: out,
        source_ports: p.source_ports.clone(),
        fail_open: p.fail == FailMode::Open,
        grace: p.captive_portal_grace,
    })
}

/// Which profiles bypass a domain, and which reach it through the
/// switched-on private-access tenant: the values of the classifier's
/// domain entries for one policy slot.
#[derive(Clone, Debug)]
pub struct DomainMatcher {
    profiles: Vec<crate::dns::DomainSet>,
    private: Option<(crate::dns::DomainSet, u64, u8)>,
    local: usize,
}

impl DomainMatcher {
    /// The matcher of `policy`.
    pub fn new(policy: &Policy) -> Self {
        let profiles = policy
            .profiles
            .iter()
            .map(|p| crate::dns::DomainSet::new(p.domains.iter().cloned()))
            .collect();
        let private = policy.active_tenant.map(|t| {
            let allowed = policy
                .profiles
                .iter()
                .enumerate()
                .filter(|(_, p)| p.private_tenants.contains(&t))
                .fold(0u64, |m, (i, _)| m | (1 << (i & 63)));
            (
                crate::dns::DomainSet::new(policy.tenants[t].domains.iter().cloned()),
                allowed,
                Verdict::Tunnel(u8::try_from(t + 1).unwrap_or(u8::MAX)).action(),
            )
        });
        Self {
            profiles,
            private,
            local: policy.local_profile(),
        }
    }

    /// For a normalized name: the profiles that bypass it, the profiles
    /// that reach it through the private tenant, and that tenant's verdict.
    pub fn masks(&self, name: &str) -> (u64, u64, u8) {
        let bypass = self
            .profiles
            .iter()
            .enumerate()
            .filter(|(_, d)| d.matches(name))
            .fold(0u64, |m, (i, _)| m | (1 << (i & 63)));
        match &self.private {
            Some((d, allowed, action)) if d.matches(name) => (bypass, *allowed, *action),
            _ => (bypass, 0, 0),
        }
    }

    /// Whether this host's own flows bypass `name` (and it is not a
    /// private application of theirs).
    pub fn local_bypass(&self, name: &str) -> bool {
        let (bypass, private, _) = self.masks(name);
        bypass & (1 << (self.local & 63)) != 0 && private & (1 << (self.local & 63)) == 0
    }
}

/// Every domain pattern of `policy` (profiles and tenants): what the DNS
/// observer watches.
pub fn domain_patterns(policy: &Policy) -> Vec<crate::dns::Pattern> {
    let mut out: Vec<crate::dns::Pattern> = Vec::new();
    let mut seen = HashSet::new();
    for p in policy
        .profiles
        .iter()
        .flat_map(|p| &p.domains)
        .chain(policy.tenants.iter().flat_map(|t| &t.domains))
    {
        if seen.insert(p) {
            out.push(p.clone());
        }
    }
    out
}
