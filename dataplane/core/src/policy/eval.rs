//! The reference evaluator: the policy's rules applied as written, with
//! the reason for every answer. `sluice policy explain` prints it; the
//! compiled tables ([`super::compile`]) are tested against it.
//!
//! Slow on purpose (every entry is scanned): it is the specification in
//! code, not the packet path.
use std::{fmt, net::IpAddr, time::Duration};

use super::{
    Entry, FailMode, INTERNET, Identity, Match, NetAction, Policy, Proto, TenantId, Verdict,
    trusted::NetworkState,
};
use crate::dns::{DomainSet, normalize};

/// A flow to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for protocols without ports).
    pub sport: u16,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
    /// Transport protocol.
    pub proto: Proto,
    /// The executable behind the flow (this host's own flows).
    pub process: Option<String>,
    /// The name the destination was answered for.
    pub domain: Option<String>,
    /// Originated by this host (the local identity), not a LAN client.
    pub local: bool,
}

impl Flow {
    /// A LAN client's flow, known by its addresses, ports and protocol
    /// only (no process, no domain).
    pub fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: Proto) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            proto,
            process: None,
            domain: None,
            local: false,
        }
    }
}

/// Who the flow belongs to and which profile applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Index into [`Policy::identities`] (`None`: unidentified, or local).
    pub identity: Option<usize>,
    /// Index into [`Policy::rules`] of the rule that matched (`None`:
    /// the default profile).
    pub rule: Option<usize>,
    /// Index into [`Policy::profiles`].
    pub profile: usize,
}

/// The step of the decision order that decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A VPN gateway of the profile.
    VpnGateway(crate::net::Prefix),
    /// A segment (prefix) of the switched-on private-access tenant.
    PrivateSegment(crate::net::Prefix),
    /// A domain of the switched-on private-access tenant.
    PrivateDomain(String),
    /// A source-port bypass.
    SourcePort(u16),
    /// A domain bypass.
    Domain(String),
    /// A process bypass.
    Process(String),
    /// An inclusion (`true`) or exclusion, index in its list.
    Entry {
        /// The entry.
        entry: Entry,
        /// An inclusion.
        include: bool,
        /// Its index in the profile's list.
        index: usize,
    },
    /// No inclusion covers the destination.
    NotIncluded,
}

/// The policy's verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// What decided.
    pub step: Step,
}

/// Runtime state the final outcome depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// The network state.
    pub network: NetworkState,
    /// Tunnels that are down, and for how long.
    pub down: Vec<(TenantId, Duration)>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            network: NetworkState::OffTrusted,
            down: Vec::new(),
        }
    }
}

/// What finally happens to the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Out of the WAN.
    Direct,
    /// Through this tunnel.
    Tunnel(TenantId),
    /// Dropped: its tunnel is down and the profile fails closed.
    Drop,
}

/// The longest identity prefix that contains `src`.
pub(crate) fn identify(policy: &Policy, src: IpAddr) -> Option<usize> {
    policy
        .identities
        .iter()
        .enumerate()
        .filter(|(_, i)| i.source.contains(src))
        .max_by_key(|(_, i)| i.source.len())
        .map(|(n, _)| n)
}

/// Whether `rule` matches a flow from `src` of `identity`.
pub(crate) fn rule_matches(m: &Match, identity: Option<&Identity>, src: IpAddr) -> bool {
    match m {
        Match::Group(g) => identity.is_some_and(|i| i.groups.iter().any(|x| x == g)),
        Match::Subnet(p) => p.contains(src),
        Match::Device(d) => identity.is_some_and(|i| i.device.as_deref() == Some(d)),
    }
}

/// The first rule matching (`identity`, `src`), or the default profile.
pub(crate) fn select(policy: &Policy, identity: Option<&Identity>, src: IpAddr) -> Selection {
    let rule = policy
        .rules
        .iter()
        .position(|r| rule_matches(&r.matches, identity, src));
    Selection {
        identity: None,
        rule,
        profile: rule.map_or(policy.default_profile, |r| policy.rules[r].profile),
    }
}

/// Identity and profile of `flow`.
pub fn selection(policy: &Policy, flow: &Flow) -> Selection {
    if flow.local {
        return select(policy, Some(&policy.local), flow.src);
    }
    let identity = identify(policy, flow.src);
    Selection {
        identity,
        ..select(policy, identity.map(|i| &policy.identities[i]), flow.src)
    }
}

/// The best inclusion or exclusion for a destination: longest prefix, then
/// more fields, then the inclusion.
pub(crate) fn best_entry(
    include: &[Entry],
    exclude: &[Entry],
    dst: IpAddr,
    port: u16,
    proto: Proto,
) -> Option<(Entry, bool, usize)> {
    let inc = include.iter().enumerate().map(|(i, e)| (*e, true, i));
    let exc = exclude.iter().enumerate().map(|(i, e)| (*e, false, i));
    inc.chain(exc)
        .filter(|(e, _, _)| e.matches(dst, port, proto))
        .max_by_key(|(e, include, _)| (e.prefix.len(), e.fields(), *include))
}

/// The policy's verdict for `flow` under profile `profile`.
pub fn decide(policy: &Policy, profile: usize, flow: &Flow) -> Decision {
    let p = &policy.profiles[profile];
    let done = |verdict, step| Decision { verdict, step };
    if let Some(v) = p.vpn_gateways.iter().find(|v| v.contains(flow.dst)) {
        return done(Verdict::Direct, Step::VpnGateway(*v));
    }
    if let Some(t) = policy
        .active_tenant
        .filter(|t| p.private_tenants.contains(t))
    {
        let tenant = &policy.tenants[t];
        let id = u8::try_from(t + 1).unwrap_or(u8::MAX);
        if let Some(s) = tenant.segments.iter().find(|s| s.contains(flow.dst)) {
            return done(Verdict::Tunnel(id), Step::PrivateSegment(*s));
        }
        if let Some(d) = flow
            .domain
            .as_deref()
            .filter(|d| DomainSet::new(tenant.domains.iter().cloned()).matches(&normalize(d)))
        {
            return done(Verdict::Tunnel(id), Step::PrivateDomain(d.to_string()));
        }
    }
    if flow.sport != 0 && p.source_ports.contains(&flow.sport) {
        return done(Verdict::Direct, Step::SourcePort(flow.sport));
    }
    if let Some(d) = flow
        .domain
        .as_deref()
        .filter(|d| DomainSet::new(p.domains.iter().cloned()).matches(&normalize(d)))
    {
        return done(Verdict::Direct, Step::Domain(d.to_string()));
    }
    if let Some(exe) = flow
        .process
        .as_deref()
        .filter(|exe| flow.local && p.processes.iter().any(|pat| pat.matches(exe, None)))
    {
        return done(Verdict::Direct, Step::Process(exe.to_string()));
    }
    match best_entry(&p.include, &p.exclude, flow.dst, flow.dport, flow.proto) {
        Some((entry, true, index)) => done(
            if p.tunnel {
                Verdict::Tunnel(INTERNET)
            } else {
                Verdict::Direct
            },
            Step::Entry {
                entry,
                include: true,
                index,
            },
        ),
        Some((entry, false, index)) => done(
            Verdict::Direct,
            Step::Entry {
                entry,
                include: false,
                index,
            },
        ),
        None => done(Verdict::Direct, Step::NotIncluded),
    }
}

/// The outcome of `verdict` for `profile` in `rt`, and why if the runtime
/// state changed it.
pub fn outcome(
    policy: &Policy,
    profile: usize,
    verdict: Verdict,
    rt: &Runtime,
) -> (Outcome, Option<String>) {
    let Verdict::Tunnel(t) = verdict else {
        return (Outcome::Direct, None);
    };
    if t == INTERNET && policy.forwarding.action(rt.network) == NetAction::Direct {
        return (
            Outcome::Direct,
            Some(format!(
                "the network is {}: the forwarding profile sends internet traffic direct",
                rt.network
            )),
        );
    }
    let Some((_, down_for)) = rt.down.iter().find(|(d, _)| *d == t) else {
        return (Outcome::Tunnel(t), None);
    };
    let p = &policy.profiles[profile];
    let tunnel = policy.tenant_name(t);
    if p.fail == FailMode::Open {
        (
            Outcome::Direct,
            Some(format!(
                "the {tunnel} tunnel is down and profile `{}` fails open",
                p.name
            )),
        )
    } else if *down_for < p.captive_portal_grace {
        (
            Outcome::Direct,
            Some(format!(
                "the {tunnel} tunnel is down for {:?}, inside the captive-portal grace of {:?}",
                down_for, p.captive_portal_grace
            )),
        )
    } else {
        (
            Outcome::Drop,
            Some(format!(
                "the {tunnel} tunnel is down and profile `{}` fails closed",
                p.name
            )),
        )
    }
}

/// Everything `sluice policy explain` prints.
#[derive(Clone, Debug)]
pub struct Explanation<'a> {
    policy: &'a Policy,
    flow: Flow,
    /// Identity and profile.
    pub selection: Selection,
    /// The policy's verdict.
    pub decision: Decision,
    /// The final outcome.
    pub outcome: Outcome,
    runtime_note: Option<String>,
    runtime: Runtime,
}

/// Explains `flow` under `rt`.
pub fn explain<'a>(policy: &'a Policy, flow: &Flow, rt: &Runtime) -> Explanation<'a> {
    let selection = selection(policy, flow);
    let decision = decide(policy, selection.profile, flow);
    let (outcome, runtime_note) = outcome(policy, selection.profile, decision.verdict, rt);
    Explanation {
        policy,
        flow: flow.clone(),
        selection,
        decision,
        outcome,
        runtime_note,
        runtime: rt.clone(),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Direct => f.write_str("direct"),
            Outcome::Tunnel(t) => write!(f, "tunnel {t}"),
            Outcome::Drop => f.write_str("drop"),
        }
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.policy;
        let fl = &self.flow;
        let port = |a: IpAddr, port: u16| match a {
            IpAddr::V4(_) => format!("{a}:{port}"),
            IpAddr::V6(_) => format!("[{a}]:{port}"),
        };
        writeln!(
            f,
            "flow:     {} -> {} {}{}{}",
            port(fl.src, fl.sport),
            port(fl.dst, fl.dport),
            fl.proto,
            fl.process
                .as_ref()
                .map_or(String::new(), |x| format!(", process {x}")),
            fl.domain
                .as_ref()
                .map_or(String::new(), |x| format!(", domain {x}"))
        )?;
        let who = if fl.local {
            format!(
                "local user `{}` (groups: {})",
                p.local.user,
                groups(&p.local)
            )
        } else {
            match self.selection.identity {
                Some(i) => {
                    let id = &p.identities[i];
                    format!(
                        "user `{}` (groups: {}{}), identity {}",
                        id.user,
                        groups(id),
                        id.device
                            .as_ref()
                            .map_or(String::new(), |d| format!("; device `{d}`")),
                        id.source
                    )
                }
                None => format!("unidentified source {}", fl.src),
            }
        };
        writeln!(f, "identity: {who}")?;
        let profile = &p.profiles[self.selection.profile];
        match self.selection.rule {
            Some(r) => writeln!(
                f,
                "rule:     rule[{r}] ({} -> profile `{}`), the first that matches",
                p.rules[r].matches, profile.name
            )?,
            None => writeln!(f, "rule:     none matches: default profile")?,
        }
        writeln!(f, "profile:  `{}`", profile.name)?;
        let verdict = match self.decision.verdict {
            Verdict::Direct => "direct".to_string(),
            Verdict::Tunnel(t) => format!("tunnel ({})", p.tenant_name(t)),
        };
        let why = match &self.decision.step {
            Step::VpnGateway(v) => format!("{v} is a VPN gateway (ahead of everything else)"),
            Step::PrivateSegment(s) => format!(
                "{s} is a segment of private-access tenant `{}`, which is switched on",
                p.tenant_name(tenant(self.decision.verdict))
            ),
            Step::PrivateDomain(d) => format!(
                "{d} is a domain of private-access tenant `{}`, which is switched on",
                p.tenant_name(tenant(self.decision.verdict))
            ),
            Step::SourcePort(s) => format!("source port {s} is a source-port bypass"),
            Step::Domain(d) => format!("{d} is a bypassed domain"),
            Step::Process(x) => format!("process {x} is bypassed"),
            Step::Entry {
                entry,
                include,
                index,
            } => format!(
                "{}[{index}] {entry} is the best match (longest prefix /{}, {} field(s){})",
                if *include { "include" } else { "exclude" },
                entry.prefix.len(),
                entry.fields(),
                if *include && !profile.tunnel {
                    "; the profile's tunnel is off"
                } else {
                    ""
                }
            ),
            Step::NotIncluded => "no inclusion covers the destination".to_string(),
        };
        writeln!(f, "verdict:  {verdict}: {why}")?;
        let outcome = match self.outcome {
            Outcome::Direct => "direct".to_string(),
            Outcome::Tunnel(t) => format!("tunnel ({})", p.tenant_name(t)),
            Outcome::Drop => "drop".to_string(),
        };
        write!(f, "outcome:  {outcome} (network {}", self.runtime.network)?;
        match &self.runtime_note {
            Some(n) => writeln!(f, "; {n})"),
            None => writeln!(f, ")"),
        }
    }
}

fn tenant(v: Verdict) -> TenantId {
    match v {
        Verdict::Tunnel(t) => t,
        Verdict::Direct => INTERNET,
    }
}

fn groups(i: &Identity) -> String {
    if i.groups.is_empty() {
        "none".into()
    } else {
        i.groups.join(", ")
    }
}
