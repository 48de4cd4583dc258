//! `sluice controller import FILE`: today's gateway file into objects.
//!
//! The file is first loaded as the gateway would load it (every field
//! checked); then its policy sections become objects through the one write
//! path, each with its audit entry (action `import`): `[[identity]]` into
//! users, groups and identities, `[[rule]]` into the profiles' match lists
//! (in rule order), `[[profile]]` into app profiles (or, without profiles,
//! the `[bypass]` lists into a bypass list and a `default` profile),
//! `[tunnel]` and `[[tenant]]` into tenants and edges, `[forwarding]` into
//! a forwarding profile, `[gateway]` into the gateway. An object whose name
//! exists is replaced.
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};
use toml::Value as T;

use crate::{
    model::{Kind, Spec},
    store::{Op, Origin, Store},
};

/// What an import wrote: (kind, name) in order.
pub type Imported = Vec<(Kind, String)>;

fn to_json(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn strs(v: Option<&T>) -> Vec<String> {
    v.and_then(T::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A name from free text (`192.0.2.0/24` -> `192.0.2.0-24`).
fn name_of(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(crate::model::MAX_NAME)
        .collect();
    let n = n.trim_start_matches(['-', '.', '_']).to_string();
    if n.is_empty() { "x".into() } else { n }
}

async fn put<S: Spec>(
    store: &Store,
    origin: &Origin,
    body: Value,
    out: &mut Imported,
) -> anyhow::Result<()> {
    let spec: S = serde_json::from_value(body.clone()).with_context(|| {
        format!(
            "{} {}",
            S::KIND.as_str(),
            body.get("name").unwrap_or(&Value::Null)
        )
    })?;
    spec.validate()
        .with_context(|| format!("{} `{}`", S::KIND.as_str(), spec.name()))?;
    let v = serde_json::to_value(&spec)?;
    let op = match store.get_by_name(S::KIND, spec.name()).await? {
        Some(r) => Op::Replace {
            kind: S::KIND,
            id: r.id,
            body: v,
            if_match: Some(r.version),
        },
        None => Op::Create {
            kind: S::KIND,
            body: v,
        },
    };
    store
        .write(origin, "import", op, Vec::new())
        .await
        .with_context(|| format!("{} `{}`", S::KIND.as_str(), spec.name()))?;
    out.push((S::KIND, spec.name().to_string()));
    Ok(())
}

/// Imports the gateway file at `path`.
#[allow(clippy::too_many_lines, reason = "one section after the other")]
pub async fn import(store: &Store, path: &Path) -> anyhow::Result<Imported> {
    use crate::model::{
        AppProfile, BypassList, Edge, ForwardingProfile, Gateway, Group, Identity, Tenant, User,
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // Checked as the gateway would load it, except that its certificate
    // files belong to the box it came from (this host need not have them).
    let mut checked = doc.clone();
    let blank = |t: &mut toml::Table| {
        for k in ["ca", "cert", "key"] {
            if t.contains_key(k) {
                t.insert(k.into(), T::String("/dev/null".into()));
            }
        }
        t.remove("crl");
    };
    if let Some(T::Table(t)) = checked.get_mut("tunnel") {
        blank(t);
    }
    if let Some(T::Array(ts)) = checked.get_mut("tenant") {
        for t in ts.iter_mut().filter_map(T::as_table_mut) {
            blank(t);
        }
    }
    let normal = toml::to_string(&checked)?;
    sluice_config::GatewayConfig::parse(path, &normal).map_err(|e| {
        let line = e.line().unwrap_or(0);
        let snippet = normal
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim();
        anyhow::anyhow!(
            "{}: not a valid gateway file: {e} (at: {snippet})",
            path.display()
        )
    })?;
    let origin = Origin::local();
    let mut out = Vec::new();
    let arr = |k: &str| {
        doc.get(k)
            .and_then(T::as_array)
            .cloned()
            .unwrap_or_default()
    };

    // Groups and users from the identities.
    let mut groups = std::collections::BTreeSet::new();
    let mut users = std::collections::BTreeMap::<String, Vec<String>>::new();
    for i in arr("identity") {
        let user = i.get("user").and_then(T::as_str).unwrap_or("").to_string();
        let g = strs(i.get("groups"));
        groups.extend(g.iter().cloned());
        let e = users.entry(user).or_default();
        for x in g {
            if !e.contains(&x) {
                e.push(x);
            }
        }
    }
    for r in arr("rule") {
        if let Some(g) = r.get("group").and_then(T::as_str) {
            groups.insert(g.to_string());
        }
    }
    for g in &groups {
        put::<Group>(
            store,
            &origin,
            json!({"name": g, "description": "imported"}),
            &mut out,
        )
        .await?;
    }
    for (u, g) in &users {
        put::<User>(store, &origin, json!({"name": u, "groups": g}), &mut out).await?;
    }
    for i in arr("identity") {
        let source = i.get("source").and_then(T::as_str).unwrap_or("");
        let mut b = json!({
            "name": name_of(source),
            "source": source,
            "user": i.get("user").and_then(T::as_str).unwrap_or(""),
        });
        if let Some(d) = i.get("device").and_then(T::as_str) {
            b["device"] = json!(d);
        }
        put::<Identity>(store, &origin, b, &mut out).await?;
    }

    // Edges and tenants.
    let tenant = |t: &toml::Table, name: &str, kind: &str| -> (Value, Vec<Value>) {
        let mut edges = Vec::new();
        let mut names = Vec::new();
        if let Some(list) = t.get("edges").and_then(T::as_array) {
            for e in list {
                let n = e.get("name").and_then(T::as_str).unwrap_or("edge");
                let mut b = json!({"name": n, "address": e.get("address").and_then(T::as_str).unwrap_or("")});
                if let Some(p) = e.get("priority").and_then(T::as_integer) {
                    b["priority"] = json!(p);
                }
                names.push(json!(n));
                edges.push(b);
            }
        } else if let Some(a) = t.get("edge").and_then(T::as_str) {
            let n = format!("{name}-edge");
            names.push(json!(n));
            edges.push(json!({"name": n, "address": a}));
        }
        let mut b = json!({
            "name": name,
            "kind": kind,
            "edges": names,
            "server_name": t.get("server_name").and_then(T::as_str).unwrap_or(""),
        });
        for k in ["transport", "transport_fallback", "segments", "domains"] {
            if let Some(v) = t.get(k) {
                b[k] = to_json(v);
            }
        }
        (b, edges)
    };
    let policy = doc
        .get("policy")
        .and_then(T::as_table)
        .cloned()
        .unwrap_or_default();
    let active = policy
        .get("private_tenant")
        .and_then(T::as_str)
        .map(str::to_string);
    let mut tenants = Vec::new();
    if let Some(t) = doc.get("tunnel").and_then(T::as_table) {
        tenants.push(tenant(t, "internet", "internet"));
    }
    for t in arr("tenant") {
        if let Some(t) = t.as_table() {
            let n = t
                .get("name")
                .and_then(T::as_str)
                .unwrap_or("tenant")
                .to_string();
            let (mut b, e) = tenant(t, &n, "private");
            b["active"] = json!(active.as_deref() == Some(n.as_str()));
            tenants.push((b, e));
        }
    }
    for (_, edges) in &tenants {
        for e in edges {
            put::<Edge>(store, &origin, e.clone(), &mut out).await?;
        }
    }
    for (t, _) in &tenants {
        put::<Tenant>(store, &origin, t.clone(), &mut out).await?;
    }

    // Bypass lists and profiles.
    let profiles = arr("profile");
    let mut imported_profiles: Vec<Value> = Vec::new();
    if profiles.is_empty() {
        if let Some(b) = doc.get("bypass").and_then(T::as_table) {
            let list = json!({
                "name": "imported-bypass",
                "description": "the [bypass] lists of an imported file",
                "prefixes": strs(b.get("prefixes")),
                "domains": strs(b.get("domains")),
                "processes": strs(b.get("processes")),
            });
            put::<BypassList>(store, &origin, list, &mut out).await?;
            imported_profiles.push(json!({"name": "default", "bypass_lists": ["imported-bypass"]}));
        }
    } else {
        for (i, p) in profiles.iter().enumerate() {
            let mut v = to_json(p);
            v["order"] = json!(i64::try_from(i).unwrap_or(0) * 10);
            imported_profiles.push(v);
        }
    }
    for (i, r) in arr("rule").iter().enumerate() {
        let Some(pn) = r.get("profile").and_then(T::as_str) else {
            continue;
        };
        let Some(p) = imported_profiles
            .iter_mut()
            .find(|p| p["name"] == json!(pn))
        else {
            continue;
        };
        for (rk, pk) in [
            ("group", "groups"),
            ("subnet", "subnets"),
            ("device", "devices"),
        ] {
            if let Some(v) = r.get(rk).and_then(T::as_str) {
                if !p[pk].is_array() {
                    p[pk] = json!([]);
                }
                p[pk].as_array_mut().expect("an array").push(json!(v));
            }
        }
        // Rules keep their order: a profile's order is its first rule's.
        if p.get("ordered").is_none() {
            p["order"] = json!(i64::try_from(i).unwrap_or(0) * 10 - 100_000);
            p["ordered"] = json!(true);
        }
    }
    for p in &mut imported_profiles {
        if let Value::Object(m) = p {
            m.remove("ordered");
        }
    }
    let fp = doc.get("forwarding").map(|f| {
        let mut v = to_json(f);
        // Where detection reads its inputs is the box's own business.
        if let Value::Object(m) = &mut v {
            for k in [
                "interval_secs",
                "resolv_conf",
                "dhcp_leases",
                "vpn_interfaces",
            ] {
                m.remove(k);
            }
        }
        v["name"] = json!("imported");
        v
    });
    if let Some(f) = &fp {
        put::<ForwardingProfile>(store, &origin, f.clone(), &mut out).await?;
    }
    for p in imported_profiles {
        put::<AppProfile>(store, &origin, p, &mut out).await?;
    }
    let gw = doc
        .get("gateway")
        .and_then(T::as_table)
        .cloned()
        .unwrap_or_default();
    let name = gw.get("name").and_then(T::as_str).unwrap_or("gateway");
    let mut g = json!({"name": name_of(name), "description": "imported"});
    if let Some(d) = policy.get("default_profile").and_then(T::as_str) {
        g["default_profile"] = json!(d);
    }
    if fp.is_some() {
        g["forwarding_profile"] = json!("imported");
    }
    put::<Gateway>(store, &origin, g, &mut out).await?;
    Ok(out)
}
