//! A tenant's edges: `edges = [...]` and `[<section>.selection]` in
//! `[tunnel]` (the internet tenant) and in each `[[tenant]]`, validated
//! into a [`sluice_core::select::EdgeSet`].
//!
//! ```toml
//! [tunnel]
//! edges = [
//!   { name = "fra", address = "198.51.100.5:4443" },
//!   { name = "ams", address = "edge-ams.example.net:4443" },
//!   { name = "backup", address = "[2001:db8::5]:4443", priority = 1 },
//! ]
//! server_name = "edge.sluice.test"
//! # ...
//!
//! [tunnel.selection]            # every knob optional (defaults shown)
//! probe_interval_ms = 100       # echo probes per up edge
//! miss_count = 3                # down after 3 intervals without a reply
//! sample_size = 10              # RTT moving average; samples a better edge must last
//! threshold = 0.667             # a better edge's RTT is below this fraction of the current's
//! min_improvement_ms = 10       # ... and more than this below it
//! standby = 1                   # warm standby tunnels besides the active one
//! stagger_ms = 100              # between connection attempts at start
//! failback = "after_stable"     # immediate | after_stable | never
//! failback_stable_secs = 10     # with after_stable
//! ```
//!
//! The single `edge = "ip:port"` of earlier files is a one-edge list
//! (named `edge`); it cannot be combined with `edges`. Priority 0 is the
//! most preferred (the default); edges of equal priority compete on
//! latency. A `[[tenant]]`'s knobs default to `[tunnel.selection]`'s.
use std::{collections::HashSet, net::SocketAddr, ops::Range, time::Duration};

use serde::Deserialize;
use sluice_core::select::{self, Address, EdgeSet, EdgeSpec, Failback, MAX_EDGES, Settings};
use toml::Spanned;

use super::{ConfigError, Doc};

/// One element of `edges` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEdgeEntry {
    name: Spanned<String>,
    address: Spanned<String>,
    priority: Option<Spanned<i64>>,
}

/// `[<section>.selection]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelection {
    probe_interval_ms: Option<Spanned<u64>>,
    miss_count: Option<Spanned<u32>>,
    sample_size: Option<Spanned<u32>>,
    threshold: Option<Spanned<f64>>,
    min_improvement_ms: Option<Spanned<u64>>,
    standby: Option<Spanned<u32>>,
    stagger_ms: Option<Spanned<u64>>,
    failback: Option<Spanned<String>>,
    failback_stable_secs: Option<Spanned<u64>>,
}

/// The edge fields of one section (`[tunnel]` or a `[[tenant]]`).
pub(super) struct RawEdges<'a> {
    /// `tunnel` or `tenant[2]`.
    pub(super) section: &'a str,
    /// The section's span (for "missing" errors).
    pub(super) span: Range<usize>,
    /// The single-edge form.
    pub(super) edge: Option<&'a Spanned<String>>,
    /// The list.
    pub(super) edges: Option<&'a Spanned<Vec<Spanned<RawEdgeEntry>>>>,
    /// The knobs.
    pub(super) selection: Option<&'a Spanned<RawSelection>>,
}

impl Doc<'_> {
    /// `[tunnel]`'s edges and knobs (see [`Doc::edge_set`]).
    pub(super) fn tunnel_edges(
        &self,
        t: &Spanned<super::RawTunnel>,
    ) -> Result<(SocketAddr, EdgeSet), ConfigError> {
        let raw = RawEdges {
            section: "tunnel",
            span: t.span(),
            edge: t.get_ref().edge.as_ref(),
            edges: t.get_ref().edges.as_ref(),
            selection: t.get_ref().selection.as_ref(),
        };
        self.edge_set(&raw, &Settings::default())
    }

    /// A section's edges and knobs (knobs not given are `base`'s), and
    /// the address of its first edge (by priority, then order) that is an
    /// IP address: what the single-edge tunnel driver connects to.
    pub(super) fn edge_set(
        &self,
        raw: &RawEdges<'_>,
        base: &Settings,
    ) -> Result<(SocketAddr, EdgeSet), ConfigError> {
        let section = raw.section;
        let settings = self.selection(raw.selection, base, section)?;
        let edges = match (raw.edge, raw.edges) {
            (Some(_), Some(list)) => {
                return Err(self.err(
                    list.span(),
                    &format!("{section}.edges"),
                    "give either `edge` (one edge) or `edges` (a list), not both",
                ));
            }
            (Some(e), None) => {
                let addr = self.sockaddr(e, &format!("{section}.edge"))?;
                vec![EdgeSpec {
                    name: "edge".into(),
                    address: Address::Ip(addr),
                    priority: 0,
                }]
            }
            (None, Some(list)) => self.edge_list(list, section)?,
            (None, None) => {
                return Err(self.err(
                    raw.span.clone(),
                    &format!("{section}.edges"),
                    "missing field `edges`: list the edges (edges = [{ name = \"fra\", address = \"198.51.100.5:4443\" }]) or give one `edge`",
                ));
            }
        };
        // The tunnel driver connects to one IP address until it drives a
        // selector (which resolves names): the best edge that has one.
        let first_ip = edges
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.address {
                Address::Ip(a) => Some((e.priority, i, a)),
                Address::Name { .. } => None,
            })
            .min()
            .map(|(_, _, a)| a);
        let Some(first_ip) = first_ip else {
            let span = raw.edges.map_or(raw.span.clone(), Spanned::span);
            return Err(self.err(
                span,
                &format!("{section}.edges"),
                "at least one edge needs an IP address (the tunnel's driver does not resolve names yet)",
            ));
        };
        Ok((first_ip, EdgeSet { edges, settings }))
    }

    fn edge_list(
        &self,
        list: &Spanned<Vec<Spanned<RawEdgeEntry>>>,
        section: &str,
    ) -> Result<Vec<EdgeSpec>, ConfigError> {
        let field = |i: usize, f: &str| format!("{section}.edges[{i}].{f}");
        if list.get_ref().is_empty() {
            return Err(self.err(
                list.span(),
                &format!("{section}.edges"),
                "at least one edge",
            ));
        }
        if let Some(e) = list.get_ref().get(MAX_EDGES) {
            return Err(self.err(
                e.span(),
                &format!("{section}.edges"),
                format!("at most {MAX_EDGES} edges"),
            ));
        }
        let mut out: Vec<EdgeSpec> = Vec::with_capacity(list.get_ref().len());
        let mut addresses = HashSet::with_capacity(out.capacity());
        for (i, e) in list.get_ref().iter().enumerate() {
            let e = e.get_ref();
            let name = e.name.get_ref();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(self.err(
                    e.name.span(),
                    &field(i, "name"),
                    format!("`{name}`: 1 to 64 letters, digits, '.', '_' or '-'"),
                ));
            }
            if let Some(j) = out.iter().position(|o| &o.name == name) {
                return Err(self.err(
                    e.name.span(),
                    &field(i, "name"),
                    format!("`{name}` is also {section}.edges[{j}]"),
                ));
            }
            let address: Address = e.address.get_ref().parse().map_err(|err| {
                self.err(e.address.span(), &field(i, "address"), format!("{err}"))
            })?;
            if !addresses.insert(address.clone()) {
                return Err(self.err(
                    e.address.span(),
                    &field(i, "address"),
                    format!("{address} is listed twice"),
                ));
            }
            let priority = match &e.priority {
                Some(p) => u8::try_from(*p.get_ref()).map_err(|_| {
                    self.err(
                        p.span(),
                        &field(i, "priority"),
                        "must be 0 (most preferred, the default) to 255",
                    )
                })?,
                None => 0,
            };
            out.push(EdgeSpec {
                name: name.clone(),
                address,
                priority,
            });
        }
        Ok(out)
    }

    /// `[<section>.selection]` over `base`.
    fn selection(
        &self,
        raw: Option<&Spanned<RawSelection>>,
        base: &Settings,
        section: &str,
    ) -> Result<Settings, ConfigError> {
        let mut s = base.clone();
        let Some(raw) = raw else {
            return Ok(s);
        };
        let r = raw.get_ref();
        let field = |f: &str| format!("{section}.selection.{f}");
        let ms = |v: &Option<Spanned<u64>>,
                  name: &str,
                  range: &std::ops::RangeInclusive<u64>|
         -> Result<Option<Duration>, ConfigError> {
            match v {
                Some(v) if !range.contains(v.get_ref()) => Err(self.err(
                    v.span(),
                    &field(name),
                    format!(
                        "must be {} to {} (milliseconds)",
                        range.start(),
                        range.end()
                    ),
                )),
                Some(v) => Ok(Some(Duration::from_millis(*v.get_ref()))),
                None => Ok(None),
            }
        };
        let count = |v: &Option<Spanned<u32>>,
                     name: &str,
                     range: &std::ops::RangeInclusive<u32>|
         -> Result<Option<u32>, ConfigError> {
            match v {
                Some(v) if !range.contains(v.get_ref()) => Err(self.err(
                    v.span(),
                    &field(name),
                    format!("must be {} to {}", range.start(), range.end()),
                )),
                Some(v) => Ok(Some(*v.get_ref())),
                None => Ok(None),
            }
        };
        if let Some(d) = ms(
            &r.probe_interval_ms,
            "probe_interval_ms",
            &select::PROBE_INTERVAL_MS,
        )? {
            s.probe_interval = d;
        }
        if let Some(n) = count(&r.miss_count, "miss_count", &select::MISS_COUNT)? {
            s.miss_count = n;
        }
        if let Some(n) = count(&r.sample_size, "sample_size", &select::SAMPLE_SIZE)? {
            s.sample_size = n;
        }
        if let Some(t) = &r.threshold {
            let v = *t.get_ref();
            if !(v > 0.0 && v <= 1.0) {
                return Err(self.err(
                    t.span(),
                    &field("threshold"),
                    "must be above 0 and at most 1: the fraction of the current edge's RTT a better edge must be below (e.g. 0.667)",
                ));
            }
            s.threshold = v;
        }
        if let Some(d) = ms(
            &r.min_improvement_ms,
            "min_improvement_ms",
            &select::MIN_IMPROVEMENT_MS,
        )? {
            s.min_improvement = d;
        }
        let max_standby = (MAX_EDGES - 1) as u32;
        if let Some(n) = count(&r.standby, "standby", &(0..=max_standby))? {
            s.standby = n as usize;
        }
        if let Some(d) = ms(&r.stagger_ms, "stagger_ms", &select::STAGGER_MS)? {
            s.stagger = d;
        }
        s.failback = self.failback(r, base.failback, section)?;
        // The core's own check, for what the fields above cannot see.
        s.validate()
            .map_err(|e| self.err(raw.span(), &format!("{section}.selection"), e.to_string()))?;
        Ok(s)
    }

    /// `failback` and `failback_stable_secs` over `base`.
    fn failback(
        &self,
        r: &RawSelection,
        base: Failback,
        section: &str,
    ) -> Result<Failback, ConfigError> {
        let field = |f: &str| format!("{section}.selection.{f}");
        let stable = match &r.failback_stable_secs {
            Some(v) if !(1..=*select::FAILBACK_STABLE_SECS.end()).contains(v.get_ref()) => {
                return Err(self.err(
                    v.span(),
                    &field("failback_stable_secs"),
                    format!(
                        "must be 1 to {} (seconds)",
                        select::FAILBACK_STABLE_SECS.end()
                    ),
                ));
            }
            Some(v) => Some((v.span(), Duration::from_secs(*v.get_ref()))),
            None => None,
        };
        let policy = r
            .failback
            .as_ref()
            .map(|f| (f.span(), f.get_ref().as_str()));
        let after_stable = |d: Option<Duration>| {
            Failback::AfterStable(d.unwrap_or(match base {
                Failback::AfterStable(d) => d,
                _ => select::DEFAULT_FAILBACK_STABLE,
            }))
        };
        let out = match policy {
            Some((_, "immediate")) => Failback::Immediate,
            Some((_, "never")) => Failback::Never,
            Some((_, "after_stable")) => after_stable(stable.as_ref().map(|s| s.1)),
            Some((span, other)) => {
                return Err(self.err(
                    span,
                    &field("failback"),
                    format!("`{other}`: expected \"immediate\", \"after_stable\" or \"never\""),
                ));
            }
            None if matches!(base, Failback::AfterStable(_)) => {
                after_stable(stable.as_ref().map(|s| s.1))
            }
            None => base,
        };
        if let (Some((span, _)), Failback::Immediate | Failback::Never) = (stable, out) {
            return Err(self.err(
                span,
                &field("failback_stable_secs"),
                "only with failback = \"after_stable\"",
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
