//! The edge's gateway table (`[[edge.gateway]]`) and its limits against
//! hostile peers (the caps of `[edge]`).
//!
//! Each gateway is named as on its client certificate (a DNS name in its
//! subject alternative names), optionally pinned to its key's SHA-256
//! (`spki_sha256`), and owns the prefixes its LAN sends from: the edge
//! accepts from its tunnels only those sources, and sends replies for them
//! only into its tunnels. Two gateways never own overlapping prefixes.
//!
//! The old `edge.client_prefixes`, one list every gateway could send from,
//! is refused with a migration hint: with it any gateway could spoof
//! another's LAN and take its replies, and no per-gateway limit could
//! hold.
use std::{collections::HashMap, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Doc};
use crate::net::Prefix;
pub use sluice_core::edge::{EdgeGateway, EdgeLimits, RESERVED_DESTINATIONS};

/// `[[edge.gateway]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEdgeGateway {
    name: Spanned<String>,
    prefixes: Spanned<Vec<Spanned<String>>>,
    spki_sha256: Option<Spanned<String>>,
    max_tunnels: Option<Spanned<u32>>,
    max_routes: Option<Spanned<u32>>,
}

/// The limit fields of `[edge]` as written.
#[derive(Default)]
pub(super) struct RawLimits {
    pub(super) handshake_timeout_secs: Option<Spanned<u64>>,
    pub(super) max_handshakes: Option<Spanned<u32>>,
    pub(super) max_handshakes_per_prefix: Option<Spanned<u32>>,
    pub(super) handshake_prefix_len_v4: Option<Spanned<u8>>,
    pub(super) handshake_prefix_len_v6: Option<Spanned<u8>>,
    pub(super) max_tunnels: Option<Spanned<u32>>,
}

/// A prefix and where it is written (`0..0` for the built-in ones).
pub(super) type SpannedPrefix = (Prefix, std::ops::Range<usize>);

/// Most gateways one edge serves (the prefix table's value limit).
pub(super) const MAX_GATEWAYS: usize = 30_000;
/// Most reply routes of all gateways together (64 bytes of table each).
pub(super) const MAX_ROUTES_TOTAL: u64 = 1 << 22;

impl Doc<'_> {
    /// `edge.client_prefixes` is refused: the message shows the
    /// `[[edge.gateway]]` tables that replace it.
    pub(super) fn client_prefixes_removed(&self, v: &Spanned<Vec<Spanned<String>>>) -> ConfigError {
        let list = v
            .get_ref()
            .iter()
            .map(|p| format!("{:?}", p.get_ref()))
            .collect::<Vec<_>>()
            .join(", ");
        self.err(
            v.span(),
            "edge.client_prefixes",
            format!(
                "no longer accepted: one list for every gateway let any gateway send from, and take the replies of, another's LAN. \
                 Give each gateway its own prefixes instead, named as a DNS name in its certificate's subject alternative names \
                 (`openssl x509 -in <gateway>.pem -noout -ext subjectAltName`), one table per gateway:\n\
                 [[edge.gateway]]\nname = \"branch-1\"\nprefixes = [{list}]"
            ),
        )
    }

    /// The `[[edge.gateway]]` tables, checked: at least one, names valid
    /// and unique, prefixes not overlapping between gateways nor with
    /// `reserved` (the destinations tunnels never reach).
    pub(super) fn edge_gateways(
        &self,
        raw: &[Spanned<RawEdgeGateway>],
        reserved: &[SpannedPrefix],
    ) -> Result<Vec<EdgeGateway>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                0..0,
                "edge.gateway",
                "no [[edge.gateway]]: list each gateway with the prefixes its LAN sends from",
            ));
        }
        if raw.len() > MAX_GATEWAYS {
            return Err(self.err(
                raw[MAX_GATEWAYS].span(),
                "edge.gateway",
                format!("more than {MAX_GATEWAYS} gateways"),
            ));
        }
        let mut out: Vec<EdgeGateway> = Vec::with_capacity(raw.len());
        let mut names: HashMap<String, usize> = HashMap::with_capacity(raw.len());
        let mut owned: Vec<(Prefix, usize, std::ops::Range<usize>)> = Vec::new();
        let mut total_routes = 0u64;
        for (i, g) in raw.iter().enumerate() {
            let g = g.get_ref();
            let field = |f: &str| format!("edge.gateway[{i}].{f}");
            let Some(name) = gateway_name(g.name.get_ref()) else {
                return Err(self.err(
                    g.name.span(),
                    &field("name"),
                    format!(
                        "`{}` is not a DNS name (the name on the gateway's certificate, e.g. branch-1)",
                        g.name.get_ref()
                    ),
                ));
            };
            if let Some(j) = names.insert(name.clone(), i) {
                return Err(self.err(
                    g.name.span(),
                    &field("name"),
                    format!("`{name}` is also edge.gateway[{j}]"),
                ));
            }
            let prefixes = self.prefixes(g.prefixes.get_ref(), &field("prefixes"))?;
            if prefixes.is_empty() {
                return Err(self.err(
                    g.prefixes.span(),
                    &field("prefixes"),
                    "list at least one prefix that this gateway's LAN hosts use",
                ));
            }
            for (p, raw_p) in prefixes.iter().zip(g.prefixes.get_ref()) {
                if p.is_default() {
                    return Err(self.err(
                        raw_p.span(),
                        &field("prefixes"),
                        format!("{p} would accept any source address: list the LAN prefixes"),
                    ));
                }
                owned.push((*p, i, raw_p.span()));
            }
            let spki_sha256 = g
                .spki_sha256
                .as_ref()
                .map(|v| {
                    hex32(v.get_ref()).ok_or_else(|| {
                        self.err(
                            v.span(),
                            &field("spki_sha256"),
                            "must be 64 hexadecimal digits (SHA-256 of the certificate's public key, DER)",
                        )
                    })
                })
                .transpose()?;
            let max_tunnels =
                self.bounded(g.max_tunnels.as_ref(), 64, 1, 4096, &field("max_tunnels"))?;
            let max_routes = self.bounded(
                g.max_routes.as_ref(),
                4096,
                16,
                1 << 20,
                &field("max_routes"),
            )?;
            total_routes += u64::from(max_routes);
            out.push(EdgeGateway {
                name,
                spki_sha256,
                prefixes,
                max_tunnels,
                max_routes,
            });
        }
        if total_routes > MAX_ROUTES_TOTAL {
            return Err(self.err(
                raw[0].span(),
                "edge.gateway",
                format!(
                    "max_routes of all gateways add up to {total_routes}, more than {MAX_ROUTES_TOTAL}: lower them"
                ),
            ));
        }
        self.no_overlap(&out, &owned, reserved)?;
        Ok(out)
    }

    /// Refuses a prefix of one gateway that overlaps another gateway's or
    /// a reserved destination (sorted sweep: linear after the sort).
    fn no_overlap(
        &self,
        gateways: &[EdgeGateway],
        owned: &[(Prefix, usize, std::ops::Range<usize>)],
        reserved: &[SpannedPrefix],
    ) -> Result<(), ConfigError> {
        /// Who holds a prefix: a gateway's index or the reserved list.
        const RESERVED: usize = usize::MAX;
        let mut all: Vec<(Prefix, usize, std::ops::Range<usize>)> = owned.to_vec();
        all.extend(
            reserved
                .iter()
                .map(|(p, span)| (*p, RESERVED, span.clone())),
        );
        // Containers before what they contain: by family, network, length.
        all.sort_by_key(|(p, _, _)| (p.addr().is_ipv6(), p.addr(), p.len()));
        let mut open: Vec<&(Prefix, usize, std::ops::Range<usize>)> = Vec::new();
        for item in &all {
            while open.last().is_some_and(|o| !o.0.contains(item.0.addr())) {
                open.pop();
            }
            if let Some(outer) = open.iter().rev().find(|o| o.1 != item.1) {
                let who = |i: usize| {
                    if i == RESERVED {
                        "a destination tunnels never reach (link-local, metadata or edge.management)"
                            .to_string()
                    } else {
                        format!("gateway `{}`", gateways[i].name)
                    }
                };
                let (mine, theirs) = if item.1 == RESERVED {
                    (*outer, item)
                } else {
                    (item, *outer)
                };
                let field = if mine.1 == RESERVED {
                    "edge.management".to_string()
                } else {
                    format!("edge.gateway[{}].prefixes", mine.1)
                };
                return Err(self.err(
                    mine.2.clone(),
                    &field,
                    format!(
                        "{} overlaps {} of {}: each address belongs to one gateway",
                        mine.0,
                        theirs.0,
                        who(theirs.1)
                    ),
                ));
            }
            open.push(item);
        }
        Ok(())
    }

    /// `edge.management` (may be absent) and [`RESERVED_DESTINATIONS`]:
    /// what packets from tunnels never reach, with each entry's span (the
    /// built-in ones have none).
    pub(super) fn edge_reserved(
        &self,
        management: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Result<(Vec<Prefix>, Vec<SpannedPrefix>), ConfigError> {
        let mgmt = match management {
            Some(m) => self.prefixes(m.get_ref(), "edge.management")?,
            None => Vec::new(),
        };
        let mut all: Vec<SpannedPrefix> = mgmt
            .iter()
            .zip(
                management
                    .map(|m| m.get_ref().as_slice())
                    .unwrap_or_default(),
            )
            .map(|(p, raw)| (*p, raw.span()))
            .collect();
        if let Some((p, span)) = all.iter().find(|(p, _)| p.is_default()) {
            return Err(self.err(
                span.clone(),
                "edge.management",
                format!("{p} would cut tunnels off from everything"),
            ));
        }
        for r in RESERVED_DESTINATIONS {
            let p: Prefix = r.parse().expect("built-in prefix");
            if !mgmt.contains(&p) {
                all.push((p, 0..0));
            }
        }
        Ok((mgmt, all))
    }

    /// The `[edge]` limits, checked.
    pub(super) fn edge_limits(&self, raw: &RawLimits) -> Result<EdgeLimits, ConfigError> {
        let d = EdgeLimits::default();
        let secs = self.bounded(
            raw.handshake_timeout_secs.as_ref(),
            d.handshake_timeout.as_secs(),
            1,
            120,
            "edge.handshake_timeout_secs",
        )?;
        let max_handshakes = self.bounded(
            raw.max_handshakes.as_ref(),
            d.max_handshakes,
            1,
            65_536,
            "edge.max_handshakes",
        )?;
        let per_prefix = self.bounded(
            raw.max_handshakes_per_prefix.as_ref(),
            d.max_handshakes_per_prefix.min(max_handshakes),
            1,
            max_handshakes,
            "edge.max_handshakes_per_prefix",
        )?;
        Ok(EdgeLimits {
            handshake_timeout: Duration::from_secs(secs),
            max_handshakes,
            max_handshakes_per_prefix: per_prefix,
            handshake_prefix_v4: self.bounded(
                raw.handshake_prefix_len_v4.as_ref(),
                d.handshake_prefix_v4,
                8,
                32,
                "edge.handshake_prefix_len_v4",
            )?,
            handshake_prefix_v6: self.bounded(
                raw.handshake_prefix_len_v6.as_ref(),
                d.handshake_prefix_v6,
                16,
                128,
                "edge.handshake_prefix_len_v6",
            )?,
            max_tunnels: self.bounded(
                raw.max_tunnels.as_ref(),
                d.max_tunnels,
                1,
                65_536,
                "edge.max_tunnels",
            )?,
        })
    }

    /// `v` (or `default`) within `min..=max`.
    fn bounded<T>(
        &self,
        v: Option<&Spanned<T>>,
        default: T,
        min: T,
        max: T,
        field: &str,
    ) -> Result<T, ConfigError>
    where
        T: Copy + PartialOrd + std::fmt::Display,
    {
        match v {
            None => Ok(default),
            Some(s) if (min..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err(s.span(), field, format!("must be {min} to {max}"))),
        }
    }
}

/// A gateway's name as webpki compares it with a certificate's:
/// lowercase, and `branch-1.` (fully qualified) is the `branch-1`
/// certificates carry; `None` if it is no DNS name (or a wildcard).
fn gateway_name(raw: &str) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    (rustls_pki_types::DnsName::try_from(name).is_ok() && !name.ends_with('.'))
        .then(|| name.to_string())
}

/// 32 bytes from 64 hex digits (`:` separators allowed).
fn hex32(s: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}
