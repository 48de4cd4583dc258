//! From the organisation's objects to what a gateway and an edge load.
//!
//! A gateway's policy is the policy part of today's configuration file
//! (`[policy]`, `[[identity]]`, `[[rule]]`, `[[profile]]`, `[[tenant]]`,
//! `[forwarding]`), which the gateway merges into its own file and applies
//! with its atomic swap. Every write checks that the objects still compile,
//! and that the gateway's own parser accepts the result, so a change that
//! would leave a gateway unable to load its policy is refused at the API.
use std::collections::BTreeSet;

use serde_json::Value;
use toml::{Table, Value as T};

use crate::model::{
    AppProfile, BypassList, Edge, ForwardingProfile, Gateway, Group, Identity, Kind, Tenant, User,
};

/// Most entries one app profile may have once its bypass lists are added
/// (checked before anything is expanded).
pub const MAX_EXPANDED: usize = 200_000;

/// The organisation's policy objects, typed.
#[derive(Debug, Default, Clone)]
pub struct Org {
    /// Tenants.
    pub tenants: Vec<Tenant>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// Gateways.
    pub gateways: Vec<Gateway>,
    /// App profiles, in their order.
    pub profiles: Vec<AppProfile>,
    /// Forwarding profiles.
    pub forwarding: Vec<ForwardingProfile>,
    /// Bypass lists.
    pub bypass_lists: Vec<BypassList>,
    /// Groups.
    pub groups: Vec<Group>,
    /// Users.
    pub users: Vec<User>,
    /// Identities.
    pub identities: Vec<Identity>,
}

impl Org {
    /// Types the stored bodies (a body that no longer parses is an error:
    /// the store only keeps bodies that did).
    pub fn from_objects(objects: &[(Kind, Value)]) -> Result<Org, String> {
        fn de<S: serde::de::DeserializeOwned>(v: &Value) -> Result<S, String> {
            serde_json::from_value(v.clone()).map_err(|e| format!("a stored object: {e}"))
        }
        let mut o = Org::default();
        for (k, v) in objects {
            match k {
                Kind::Tenant => o.tenants.push(de(v)?),
                Kind::Edge => o.edges.push(de(v)?),
                Kind::Gateway => o.gateways.push(de(v)?),
                Kind::AppProfile => o.profiles.push(de(v)?),
                Kind::ForwardingProfile => o.forwarding.push(de(v)?),
                Kind::BypassList => o.bypass_lists.push(de(v)?),
                Kind::Group => o.groups.push(de(v)?),
                Kind::User => o.users.push(de(v)?),
                Kind::Identity => o.identities.push(de(v)?),
                Kind::ApiClient => {}
            }
        }
        o.profiles
            .sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        Ok(o)
    }

    /// Checks that every reference names an object.
    pub fn check_references(&self) -> Result<(), String> {
        let names = |it: &mut dyn Iterator<Item = &String>| it.cloned().collect::<BTreeSet<_>>();
        let groups = names(&mut self.groups.iter().map(|g| &g.name));
        let users = names(&mut self.users.iter().map(|g| &g.name));
        let edges = names(&mut self.edges.iter().map(|g| &g.name));
        let profiles = names(&mut self.profiles.iter().map(|g| &g.name));
        let fps = names(&mut self.forwarding.iter().map(|g| &g.name));
        let lists = names(&mut self.bypass_lists.iter().map(|g| &g.name));
        let private = names(
            &mut self
                .tenants
                .iter()
                .filter(|t| t.kind == "private")
                .map(|g| &g.name),
        );
        let missing = |what: &str, name: &str, by: String| {
            Err(format!("{by} names {what} `{name}`, which does not exist"))
        };
        for u in &self.users {
            for g in &u.groups {
                if !groups.contains(g) {
                    return missing("group", g, format!("user `{}`", u.name));
                }
            }
        }
        for i in &self.identities {
            if !users.contains(&i.user) {
                return missing("user", &i.user, format!("identity `{}`", i.name));
            }
        }
        for t in &self.tenants {
            for e in &t.edges {
                if !edges.contains(e) {
                    return missing("edge", e, format!("tenant `{}`", t.name));
                }
            }
        }
        for p in &self.profiles {
            for g in &p.groups {
                if !groups.contains(g) {
                    return missing("group", g, format!("app profile `{}`", p.name));
                }
            }
            for l in &p.bypass_lists {
                if !lists.contains(l) {
                    return missing("bypass list", l, format!("app profile `{}`", p.name));
                }
            }
            for t in p.private_tenants.iter().flatten() {
                if !private.contains(t) {
                    return missing(
                        "private-access tenant",
                        t,
                        format!("app profile `{}`", p.name),
                    );
                }
            }
        }
        for g in &self.gateways {
            if let Some(p) = &g.default_profile
                && !profiles.contains(p)
            {
                return missing("app profile", p, format!("gateway `{}`", g.name));
            }
            if let Some(p) = &g.forwarding_profile
                && !fps.contains(p)
            {
                return missing("forwarding profile", p, format!("gateway `{}`", g.name));
            }
        }
        for p in &self.profiles {
            let expanded: usize = p.exclude.len()
                + p.domains.len()
                + p.processes.len()
                + p.source_ports.len()
                + p.bypass_lists
                    .iter()
                    .filter_map(|l| self.bypass_lists.iter().find(|b| &b.name == l))
                    .map(|b| {
                        b.prefixes.len()
                            + b.domains.len()
                            + b.processes.len()
                            + b.source_ports.len()
                    })
                    .sum::<usize>();
            if expanded > MAX_EXPANDED {
                return Err(format!(
                    "app profile `{}` would have {expanded} entries with its bypass lists (at most {MAX_EXPANDED})",
                    p.name
                ));
            }
        }
        if self.tenants.iter().filter(|t| t.kind == "internet").count() > 1 {
            return Err("at most one tenant is the internet tenant".into());
        }
        if self.tenants.iter().filter(|t| t.active).count() > 1 {
            return Err("at most one private-access tenant is switched on".into());
        }
        for t in &self.tenants {
            if t.edges.is_empty() {
                return Err(format!("tenant `{}` has no edges", t.name));
            }
        }
        Ok(())
    }

    /// The edge's name list for a tenant, as `edges = [...]` entries.
    fn tenant_edges(&self, t: &Tenant) -> Vec<T> {
        t.edges
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.edges.iter().find(|e| &e.name == n).map(|e| (i, e)))
            .map(|(i, e)| {
                let mut m = Table::new();
                m.insert("name".into(), T::String(e.name.clone()));
                m.insert("address".into(), T::String(e.address.clone()));
                m.insert(
                    "priority".into(),
                    T::Integer(i64::from(e.priority.unwrap_or(i as u32))),
                );
                T::Table(m)
            })
            .collect()
    }

    /// The policy part of `gateway`'s configuration, as TOML tables:
    /// `policy`, `identity`, `rule`, `profile`, `tenant`, `forwarding`, and
    /// `tunnel_edges` (the internet tenant's edges and transport, which the
    /// gateway applies at its next start). Certificate paths are the
    /// gateway's to fill in (`ca`, `cert`, `key` are left out).
    #[allow(
        clippy::too_many_lines,
        reason = "one section of the file after the other"
    )]
    pub fn gateway_policy(&self, gateway: &Gateway) -> Table {
        let mut out = Table::new();
        let strs = |v: &[String]| T::Array(v.iter().cloned().map(T::String).collect());
        if !self.profiles.is_empty() {
            let mut policy = Table::new();
            let default = gateway
                .default_profile
                .clone()
                .unwrap_or_else(|| self.profiles[0].name.clone());
            policy.insert("default_profile".into(), T::String(default));
            if let Some(t) = self.tenants.iter().find(|t| t.active) {
                policy.insert("private_tenant".into(), T::String(t.name.clone()));
            }
            out.insert("policy".into(), T::Table(policy));
        } else if let Some(t) = self.tenants.iter().find(|t| t.active) {
            let mut policy = Table::new();
            policy.insert("private_tenant".into(), T::String(t.name.clone()));
            out.insert("policy".into(), T::Table(policy));
        }
        let identities: Vec<T> = self
            .identities
            .iter()
            .map(|i| {
                let mut m = Table::new();
                m.insert("source".into(), T::String(i.source.clone()));
                m.insert("user".into(), T::String(i.user.clone()));
                let groups = self
                    .users
                    .iter()
                    .find(|u| u.name == i.user)
                    .map(|u| u.groups.clone())
                    .unwrap_or_default();
                m.insert("groups".into(), strs(&groups));
                if let Some(d) = &i.device {
                    m.insert("device".into(), T::String(d.clone()));
                }
                T::Table(m)
            })
            .collect();
        if !identities.is_empty() {
            out.insert("identity".into(), T::Array(identities));
        }
        let mut rules = Vec::new();
        let mut profiles = Vec::new();
        for p in &self.profiles {
            for (field, list) in [
                ("group", &p.groups),
                ("subnet", &p.subnets),
                ("device", &p.devices),
            ] {
                for v in list {
                    let mut r = Table::new();
                    r.insert(field.into(), T::String(v.clone()));
                    r.insert("profile".into(), T::String(p.name.clone()));
                    rules.push(T::Table(r));
                }
            }
            profiles.push(T::Table(self.profile_table(p)));
        }
        if !rules.is_empty() {
            out.insert("rule".into(), T::Array(rules));
        }
        if !profiles.is_empty() {
            out.insert("profile".into(), T::Array(profiles));
        }
        let tenants: Vec<T> = self
            .tenants
            .iter()
            .filter(|t| t.kind == "private")
            .map(|t| {
                let mut m = Table::new();
                m.insert("name".into(), T::String(t.name.clone()));
                m.insert("edges".into(), T::Array(self.tenant_edges(t)));
                m.insert("server_name".into(), T::String(t.server_name.clone()));
                if let Some(x) = &t.transport {
                    m.insert("transport".into(), T::String(x.clone()));
                }
                if let Some(x) = t.transport_fallback {
                    m.insert("transport_fallback".into(), T::Boolean(x));
                }
                m.insert("segments".into(), strs(&t.segments));
                m.insert("domains".into(), strs(&t.domains));
                T::Table(m)
            })
            .collect();
        if !tenants.is_empty() {
            out.insert("tenant".into(), T::Array(tenants));
        }
        if let Some(fp) = gateway
            .forwarding_profile
            .as_ref()
            .and_then(|n| self.forwarding.iter().find(|f| &f.name == n))
        {
            let mut v = serde_json_to_toml(&serde_json::to_value(fp).expect("serialises"));
            if let T::Table(t) = &mut v {
                t.remove("name");
                t.remove("description");
                out.insert("forwarding".into(), T::Table(t.clone()));
            }
        }
        if let Some(t) = self.tenants.iter().find(|t| t.kind == "internet") {
            let mut m = Table::new();
            m.insert("edges".into(), T::Array(self.tenant_edges(t)));
            m.insert("server_name".into(), T::String(t.server_name.clone()));
            if let Some(x) = &t.transport {
                m.insert("transport".into(), T::String(x.clone()));
            }
            if let Some(x) = t.transport_fallback {
                m.insert("transport_fallback".into(), T::Boolean(x));
            }
            out.insert("tunnel_edges".into(), T::Table(m));
        }
        out
    }

    fn profile_table(&self, p: &AppProfile) -> Table {
        let mut p = p.clone();
        for l in &p.bypass_lists.clone() {
            if let Some(b) = self.bypass_lists.iter().find(|b| &b.name == l) {
                p.exclude.extend(b.prefixes.iter().cloned());
                p.domains.extend(b.domains.iter().cloned());
                p.processes.extend(b.processes.iter().cloned());
                p.source_ports.extend(b.source_ports.iter().copied());
            }
        }
        let v = serde_json_to_toml(&serde_json::to_value(&p).expect("serialises"));
        let T::Table(mut t) = v else {
            unreachable!("a struct serialises to a table")
        };
        for k in [
            "description",
            "order",
            "groups",
            "subnets",
            "devices",
            "bypass_lists",
        ] {
            t.remove(k);
        }
        t
    }

    /// An edge's `[[edge.gateway]]` entries: every gateway and its prefixes.
    pub fn edge_gateways(&self) -> Vec<(String, Vec<String>)> {
        self.gateways
            .iter()
            .map(|g| (g.name.clone(), g.prefixes.clone()))
            .collect()
    }
}

fn serde_json_to_toml(v: &Value) -> T {
    match v {
        Value::Null => T::String(String::new()),
        Value::Bool(b) => T::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| T::Float(n.as_f64().unwrap_or(0.0)), T::Integer),
        Value::String(s) => T::String(s.clone()),
        Value::Array(a) => T::Array(a.iter().map(serde_json_to_toml).collect()),
        Value::Object(o) => T::Table(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), serde_json_to_toml(v)))
                .collect(),
        ),
    }
}

/// A whole gateway file around a compiled policy, as a gateway would load
/// it, its certificate files at `certs` (CA, certificate, key). The
/// policy checks use `/dev/null` for all three: the parser checks that they
/// exist, and their contents are the gateway's business.
pub fn gateway_file(name: &str, policy: &Table, certs: [&str; 3]) -> String {
    let mut doc = policy.clone();
    let tunnel_edges = doc.remove("tunnel_edges");
    let mut gw = Table::new();
    gw.insert("name".into(), T::String(name.into()));
    gw.insert("lan".into(), T::String("lan0".into()));
    gw.insert("wan".into(), T::String("wan0".into()));
    doc.insert("gateway".into(), T::Table(gw));
    let mut tunnel = if let Some(T::Table(t)) = tunnel_edges {
        t
    } else {
        let mut t = Table::new();
        t.insert("edge".into(), T::String("192.0.2.1:4443".into()));
        t.insert("server_name".into(), T::String("edge.invalid".into()));
        t
    };
    for (k, v) in ["ca", "cert", "key"].into_iter().zip(certs) {
        tunnel.insert(k.into(), T::String(v.into()));
    }
    doc.insert("tunnel".into(), T::Table(tunnel));
    if let Some(T::Array(ts)) = doc.get_mut("tenant") {
        for t in ts {
            if let T::Table(t) = t {
                for (k, v) in ["ca", "cert", "key"].into_iter().zip(certs) {
                    t.insert(k.into(), T::String(v.into()));
                }
            }
        }
    }
    toml::to_string(&doc).expect("a TOML table serialises")
}

/// Certificate paths for checking a compiled file.
pub const NO_CERTS: [&str; 3] = ["/dev/null", "/dev/null", "/dev/null"];

/// Checks that the objects compile for every gateway (and for a gateway
/// with no settings of its own, the one enrolled next) into a file the
/// gateway's parser accepts.
pub fn check_org(objects: &[(Kind, Value)]) -> Result<(), String> {
    let org = Org::from_objects(objects)?;
    org.check_references()?;
    let mut seen = BTreeSet::new();
    let blank = Gateway {
        name: "new-gateway".into(),
        description: String::new(),
        site: String::new(),
        prefixes: Vec::new(),
        default_profile: None,
        forwarding_profile: None,
    };
    for g in std::iter::once(&blank).chain(&org.gateways) {
        let key = (g.default_profile.clone(), g.forwarding_profile.clone());
        if !seen.insert(key) {
            continue;
        }
        let text = gateway_file(&g.name, &org.gateway_policy(g), NO_CERTS);
        sluice_config::GatewayConfig::parse(std::path::Path::new("policy.toml"), &text).map_err(
            |e| {
                let line = e.line().unwrap_or(0);
                let snippet = text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .unwrap_or("")
                    .trim();
                format!(
                    "{e} (for gateway `{}`; the compiled line: {snippet})",
                    g.name
                )
            },
        )?;
    }
    for g in &org.gateways {
        for (i, p) in g.prefixes.iter().enumerate() {
            if p.parse::<sluice_core::net::Prefix>().is_err() {
                return Err(format!(
                    "gateway `{}`: prefixes[{i}]: `{p}` is not a prefix",
                    g.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<S: serde::Serialize>(k: Kind, s: &S) -> (Kind, Value) {
        (k, serde_json::to_value(s).unwrap())
    }

    fn profile(name: &str) -> AppProfile {
        serde_json::from_value(serde_json::json!({"name": name})).unwrap()
    }

    #[test]
    fn an_empty_org_compiles() {
        check_org(&[]).unwrap();
    }

    #[test]
    fn a_profile_with_rules_and_lists_compiles_and_the_parser_sees_it() {
        let mut p = profile("staff");
        p.groups = vec!["eng".into()];
        p.bypass_lists = vec!["saas".into()];
        let list: BypassList = serde_json::from_value(serde_json::json!({
            "name": "saas", "prefixes": ["203.0.113.0/24"], "domains": ["*.saas.example"]
        }))
        .unwrap();
        let objects = vec![
            obj(
                Kind::Group,
                &Group {
                    name: "eng".into(),
                    description: String::new(),
                    source: None,
                    missing: false,
                },
            ),
            obj(Kind::AppProfile, &p),
            obj(Kind::BypassList, &list),
        ];
        check_org(&objects).unwrap();
        let org = Org::from_objects(&objects).unwrap();
        let text = gateway_file(
            "gw",
            &org.gateway_policy(&Gateway {
                name: "gw".into(),
                description: String::new(),
                site: String::new(),
                prefixes: vec![],
                default_profile: None,
                forwarding_profile: None,
            }),
            NO_CERTS,
        );
        let cfg =
            sluice_config::GatewayConfig::parse(std::path::Path::new("p.toml"), &text).unwrap();
        assert!(text.contains("203.0.113.0/24"), "{text}");
        assert!(format!("{:?}", cfg.policy).contains("staff"));
    }

    #[test]
    fn a_bad_prefix_and_a_dangling_reference_are_refused_with_reasons() {
        let mut p = profile("staff");
        p.exclude = vec!["203.0.113.1/24".into()];
        let e = check_org(&[obj(Kind::AppProfile, &p)]).unwrap_err();
        assert!(e.contains("host bits"), "{e}");
        let mut p = profile("staff");
        p.groups = vec!["nobody".into()];
        let e = check_org(&[obj(Kind::AppProfile, &p)]).unwrap_err();
        assert!(e.contains("group `nobody`"), "{e}");
    }
}
