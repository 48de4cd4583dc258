//! Endpoint mode's routing: the device the host's tunnelled traffic is
//! routed into (a TUN device sluice holds open, or a veth pair whose far
//! side carries the XDP classifier and an `AF_XDP` socket, exactly like a
//! LAN interface), and the policy rules:
//!
//! 1. `fwmark <mark> lookup main`: sockets the hooks marked (listed
//!    processes, bypassed destinations, sluice's own tunnel) go direct;
//! 2. `lookup main suppress_prefixlength 0`: whatever the main table
//!    routes more specifically than its default route (the host's own
//!    subnets, and any static or other-VPN route there) stays outside;
//! 3. `iif lo lookup <table>`: the rest of this host's own traffic goes
//!    into the device, i.e. the tunnel (forwarded LAN traffic never does:
//!    the XDP classifier already decided it). Configured bypass prefixes,
//!    VPN gateways and the edge are `throw` routes in that table (back to
//!    the main table), so they bypass for every kind of socket, connected
//!    or not. Below the device's default route an `unreachable` default
//!    refuses everything once the device is gone (sluice died). Without an
//!    inner IPv6 address IPv6 is `unreachable` there outright.
//! 4. (veth path) `iif <sluice's side> blackhole`: frames that reach
//!    sluice's side without its XDP program are dropped, never forwarded.
//!
//! Built with `ip -batch` (iproute2) and removed the same way; leftovers
//! of a run that did not stop cleanly are removed first.
use std::{io, net::IpAddr};

use crate::{
    config::{EndpointConfig, EndpointPath},
    host::HostError,
    net::Prefix,
};

/// Why the endpoint's device or routing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `ip` command (or reading the host's state) failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The device name is taken by a device sluice must not delete.
    #[error("{name} exists (driver {driver}): name a device sluice may create and delete")]
    Occupied {
        /// The device.
        name: String,
        /// Its driver.
        driver: String,
    },
    /// The device name is taken, and by what is unknown.
    #[error("{name} exists and its driver is unknown: {source}")]
    UnknownDriver {
        /// The device.
        name: String,
        /// Why the driver could not be read.
        source: io::Error,
    },
    /// `ip rule show` does not list these rules after adding them.
    #[error("rules not added: {}", .0.join("; "))]
    RulesNotAdded(Vec<String>),
    /// The veth device's transmit checksum offload could not be turned off.
    #[error("turning off transmit checksum offload on {iface}: {source}")]
    TxChecksum {
        /// The device.
        iface: String,
        /// ethtool's error.
        source: io::Error,
    },
}

/// The IPv4 next hop of the tunnel route: link-local, never on the wire
/// (its neighbour entry is static: sluice's side of the pair).
const NEXT_HOP_V4: &str = "169.254.83.1";
/// The IPv6 next hop, likewise.
const NEXT_HOP_V6: &str = "fe80::83:1";

/// sluice's side of the pair for `cfg`.
pub fn peer_name(cfg: &EndpointConfig) -> String {
    format!("{}x", cfg.interface)
}

/// Runs `cmds` with `ip -batch`, each line in the family its `-4 ` or
/// `-6 ` prefix names (batch lines cannot carry options themselves): all
/// unprefixed lines first, then IPv4, then IPv6.
fn ip_batch(cmds: &[String], ignore_errors: bool) -> Result<(), NetError> {
    for fam in ["", "-4", "-6"] {
        let lines: Vec<&str> = cmds
            .iter()
            .filter_map(|c| match fam {
                "" => (!c.starts_with("-4 ") && !c.starts_with("-6 ")).then_some(c.as_str()),
                f => c.strip_prefix(f).map(str::trim_start),
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        let script = lines.join("\n") + "\n";
        let mut argv = vec!["ip"];
        if !fam.is_empty() {
            argv.push(fam);
        }
        if ignore_errors {
            argv.push("-force");
        }
        argv.extend(["-batch", "-"]);
        match crate::host::run(&argv, Some(&script)) {
            Ok(_) => {}
            Err(_) if ignore_errors => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The policy rules (what follows `rule add` / `rule del`: deleting with
/// every selector removes only sluice's own rules), both families.
fn rules(cfg: &EndpointConfig) -> Vec<String> {
    let (p, t, mark) = (cfg.rule_priority, cfg.table, cfg.mark);
    let mut v = vec![
        format!("pref {p} fwmark {mark:#x} lookup main"),
        format!("pref {} lookup main suppress_prefixlength 0", p + 1),
        // `iif lo`: only this host's own packets; forwarded LAN traffic
        // the XDP classifier passed (bypassed) keeps the main table.
        format!("pref {} iif lo lookup {t}", p + 2),
    ];
    if cfg.path == EndpointPath::Veth {
        // Packets reaching sluice's side without its XDP program (sluice
        // gone) are dropped, never forwarded.
        v.push(format!("pref {} iif {} blackhole", p + 3, peer_name(cfg)));
    }
    ["-4", "-6"]
        .iter()
        .flat_map(|fam| v.iter().map(move |r| format!("{fam} {r}")))
        .collect()
}

/// `rule <verb>` for each of [`rules`].
fn rule_cmds(cfg: &EndpointConfig, verb: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    rules(cfg)
        .into_iter()
        .filter(|r| keep(r))
        .map(|r| {
            let (fam, rest) = r.split_at(3);
            format!("{fam}rule {verb} {rest}")
        })
        .collect()
}

/// The commands that remove what [`setup`] made (errors ignored).
fn teardown_cmds(cfg: &EndpointConfig) -> Vec<String> {
    let mut v = rule_cmds(cfg, "del", |_| true);
    for fam in ["-4", "-6"] {
        v.push(format!("{fam} route flush table {}", cfg.table));
    }
    v.push(format!("link del {}", cfg.interface));
    v
}

/// Removes the endpoint's routing and its device: a deliberate stop.
pub fn teardown(cfg: &EndpointConfig) {
    // `ip -force` keeps going past missing entries; there is nothing to
    // report if something was already gone.
    let _ = ip_batch(&teardown_cmds(cfg), true);
}

/// Before a start: makes sure the host fails closed (what an earlier run
/// left keeps refusing, or refusing starts now), then removes that run's
/// device and routes but for the table's `unreachable` defaults, so that
/// at no moment of a restart does the host's tunnelled traffic go direct
/// (the TUN device is opened after this, so it does not attach to a
/// leftover; the device is one [`check_interface`] approved).
pub(crate) fn clean_leftovers(cfg: &EndpointConfig) {
    fail_closed(cfg);
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        let table = cfg.table.to_string();
        let Ok(out) = crate::host::run(&["ip", fam, "route", "show", "table", &table], None) else {
            continue;
        };
        v.extend(stale_route_cmds(fam, &out, cfg.table));
    }
    v.push(format!("link del {}", cfg.interface));
    let _ = ip_batch(&v, true);
}

/// `route del` commands for the routes in the output of
/// `ip <fam> route show table <table>`, but the `unreachable default` ones.
fn stale_route_cmds(fam: &str, out: &str, table: u32) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("unreachable default"))
        .map(|l| format!("{fam} route del {l} table {table}"))
        .collect()
}

/// Leaves the host failing closed: its own traffic (but for the main
/// table's more specific routes and the table's `throw` routes of
/// configured bypass prefixes) is refused, never sent direct. For every
/// stop, a start that failed, and before a start. The refusing rules and
/// routes go in first (existing ones stay: no moment without them), then
/// the mark rule goes (a socket marked by hooks that may outlive this
/// run must not go direct).
pub(crate) fn fail_closed(cfg: &EndpointConfig) {
    let t = cfg.table;
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        v.push(format!(
            "{fam} route replace unreachable default metric 4294967295 table {t}"
        ));
    }
    // `ip -force`: the rules already there (EEXIST) are what is wanted.
    v.extend(rule_cmds(cfg, "add", |r| !r.contains("fwmark")));
    let _ = ip_batch(&v, true);
    let _ = ip_batch(&rule_cmds(cfg, "del", |r| r.contains("fwmark")), true);
    match missing_rules(cfg, |r| !r.contains("fwmark")) {
        Ok(m) if m.is_empty() => {}
        Ok(m) => log::error!("endpoint: failing closed: rules missing: {}", m.join("; ")),
        Err(e) => log::error!("endpoint: failing closed: {e}"),
    }
    log::warn!(
        "endpoint: failing closed: this host's tunnelled traffic is refused until sluice runs again (`sluice gateway detach` removes the rules at priority {} to {})",
        cfg.rule_priority,
        cfg.rule_priority + 3
    );
}

/// The rules of [`rules`] (those `keep` selects) that `ip rule show` does
/// not list, by their priority.
fn missing_rules(
    cfg: &EndpointConfig,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, NetError> {
    let mut missing = Vec::new();
    for fam in ["-4", "-6"] {
        let out = crate::host::run(&["ip", fam, "rule", "show"], None)?;
        for r in rules(cfg).iter().filter(|r| r.starts_with(fam) && keep(r)) {
            let pref = r.split_whitespace().nth(2).unwrap_or_default();
            if !out.lines().any(|l| l.starts_with(&format!("{pref}:"))) {
                missing.push(r.clone());
            }
        }
    }
    Ok(missing)
}

/// The endpoint's device name must be free, or a TUN or veth device (a
/// crashed run's): sluice deletes and recreates it.
///
/// # Errors
/// The name is another kind of device's, or its driver cannot be read.
pub(crate) fn check_interface(cfg: &EndpointConfig) -> Result<(), NetError> {
    let name = &cfg.interface;
    if !std::path::Path::new(&format!("/sys/class/net/{name}")).exists() {
        return Ok(());
    }
    match crate::sys::ethtool::driver(name) {
        Ok(d) if d == "tun" || d == "veth" => Ok(()),
        Ok(driver) => Err(NetError::Occupied {
            name: name.clone(),
            driver,
        }),
        Err(source) => Err(NetError::UnknownDriver {
            name: name.clone(),
            source,
        }),
    }
}

/// Builds the routes and the rules, and for the veth path the pair (the
/// TUN device is already open: its descriptor is sluice's). `direct` are
/// the prefixes that bypass whatever the socket (configured prefixes, VPN
/// gateways, the edge).
///
/// # Errors
/// An `ip` command failed, or a rule is not listed after adding it.
pub fn setup(cfg: &EndpointConfig, routes: &[(Prefix, bool)]) -> Result<(), NetError> {
    let host = &cfg.interface;
    let peer = peer_name(cfg);
    let t = cfg.table;
    let veth = cfg.path == EndpointPath::Veth;
    let mut v = Vec::new();
    if veth {
        v.push(format!(
            "link add {host} mtu {} type veth peer name {peer} mtu {}",
            cfg.mtu, cfg.mtu
        ));
        v.push(format!("link set {peer} up"));
    } else {
        v.push(format!("link set {host} mtu {}", cfg.mtu));
    }
    v.push(format!("link set {host} up"));
    v.push(format!("-4 addr add {}/32 dev {host}", cfg.address));
    // `replace` throughout: the refusing routes of an earlier run (or of
    // [`clean_leftovers`]) are there already.
    v.push(if veth {
        format!("-4 route replace default via {NEXT_HOP_V4} dev {host} onlink table {t}")
    } else {
        format!("-4 route replace default dev {host} table {t}")
    });
    // If the device goes (sluice died), the table still refuses: the
    // host's tunnelled traffic never falls through to the main table.
    v.push(format!(
        "-4 route replace unreachable default metric 4294967295 table {t}"
    ));
    match cfg.address6 {
        Some(a) => {
            v.push(format!("-6 addr add {a}/128 dev {host} nodad"));
            v.push(if veth {
                format!("-6 route replace default via {NEXT_HOP_V6} dev {host} table {t}")
            } else {
                format!("-6 route replace default dev {host} table {t}")
            });
            v.push(format!(
                "-6 route replace unreachable default metric 4294967295 table {t}"
            ));
        }
        None => v.push(format!("-6 route replace unreachable default table {t}")),
    }
    v.extend(route_cmds(cfg, "replace", routes));
    // On failure the caller fails closed (it knows whether a leftover's
    // rules were holding the host's traffic).
    ip_batch(&v, false)?;
    // The rules an earlier run left stay (deleting and re-adding them
    // would open a moment without them): `ip -force` adds the missing
    // ones, then every one must be listed.
    let _ = ip_batch(&rule_cmds(cfg, "add", |_| true), true);
    let missing = missing_rules(cfg, |_| true)?;
    if !missing.is_empty() {
        return Err(NetError::RulesNotAdded(missing));
    }
    if veth {
        veth_extras(cfg)?;
    }
    // Replies arrive on the host side from arbitrary sources: loose
    // reverse-path filtering there. IPv6 router advertisements and
    // autoconfiguration have no business on it.
    let sysctl = |path: String, v: &str| {
        if let Err(e) = std::fs::write(&path, v) {
            log::warn!("endpoint: {path}: {e}");
        }
    };
    sysctl(format!("/proc/sys/net/ipv4/conf/{host}/rp_filter"), "2");
    let mut ifs = vec![host.clone()];
    if veth {
        ifs.push(peer);
    }
    for i in ifs {
        sysctl(format!("/proc/sys/net/ipv6/conf/{i}/accept_ra"), "0");
        sysctl(format!("/proc/sys/net/ipv6/conf/{i}/autoconf"), "0");
    }
    Ok(())
}

/// `ip` commands for `routes` in the tunnel table: direct ones `throw`
/// (back to the main table), the others into the device.
fn route_cmds(cfg: &EndpointConfig, verb: &str, routes: &[(Prefix, bool)]) -> Vec<String> {
    let (host, t) = (&cfg.interface, cfg.table);
    let veth = cfg.path == EndpointPath::Veth;
    routes
        .iter()
        .filter(|(p, direct)| *direct || p.addr().is_ipv4() || cfg.address6.is_some())
        .map(|(p, direct)| {
            let v4 = p.addr().is_ipv4();
            let fam = if v4 { "-4" } else { "-6" };
            if *direct {
                format!("{fam} route {verb} throw {p} table {t}")
            } else if !veth {
                format!("{fam} route {verb} {p} dev {host} table {t}")
            } else if v4 {
                format!("{fam} route {verb} {p} via {NEXT_HOP_V4} dev {host} onlink table {t}")
            } else {
                format!("{fam} route {verb} {p} via {NEXT_HOP_V6} dev {host} table {t}")
            }
        })
        .collect()
}

/// Moves the tunnel table from `old` to `new` routes: every new route is
/// put in place first (`replace`: a prefix changing sides flips in one
/// step), then the routes no longer wanted go.
///
/// # Errors
/// An `ip` command putting the new routes in place failed.
pub(crate) fn update_routes(
    cfg: &EndpointConfig,
    old: &[(Prefix, bool)],
    new: &[(Prefix, bool)],
) -> Result<(), NetError> {
    let mut v = route_cmds(cfg, "replace", new);
    let stale: Vec<(Prefix, bool)> = old
        .iter()
        .filter(|(p, _)| !new.iter().any(|(q, _)| q == p))
        .copied()
        .collect();
    ip_batch(&v, false)?;
    v = stale
        .iter()
        .map(|(p, _)| {
            let fam = if p.addr().is_ipv4() { "-4" } else { "-6" };
            format!("{fam} route del {p} table {}", cfg.table)
        })
        .collect();
    ip_batch(&v, true)
}

/// The veth path's static neighbours and checksum setting.
fn veth_extras(cfg: &EndpointConfig) -> Result<(), NetError> {
    let host = &cfg.interface;
    let peer = peer_name(cfg);
    // The static neighbour entries need sluice's side's MAC.
    let mac = crate::wire::ethernet::mac_to_string(&crate::host::mac(&peer)?);
    let mut n = vec![format!(
        "-4 neigh replace {NEXT_HOP_V4} lladdr {mac} dev {host} nud permanent"
    )];
    if cfg.address6.is_some() {
        n.push(format!(
            "-6 neigh replace {NEXT_HOP_V6} lladdr {mac} dev {host} nud permanent"
        ));
    }
    ip_batch(&n, false)?;
    // The host's packets must leave with complete checksums: a partial
    // (offloaded) one stays partial through generic XDP and AF_XDP.
    crate::sys::ethtool::set_tx_checksum(host, false).map_err(|source| NetError::TxChecksum {
        iface: host.clone(),
        source,
    })
}

/// The host prefix of `a`.
pub(crate) fn host_prefix(a: IpAddr) -> Prefix {
    let len = if a.is_ipv4() { 32 } else { 128 };
    Prefix::new(a, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_words() {
        let occupied = NetError::Occupied {
            name: "ep0".into(),
            driver: "bridge".into(),
        };
        assert_eq!(
            occupied.to_string(),
            "ep0 exists (driver bridge): name a device sluice may create and delete"
        );
        let missing =
            NetError::RulesNotAdded(vec!["-4 pref 1000 a".into(), "-6 pref 1000 a".into()]);
        assert_eq!(
            missing.to_string(),
            "rules not added: -4 pref 1000 a; -6 pref 1000 a"
        );
        let csum = NetError::TxChecksum {
            iface: "ep0".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(
            csum.to_string()
                .starts_with("turning off transmit checksum offload on ep0: "),
            "{csum}"
        );
    }

    #[test]
    fn teardown_covers_every_rule_and_both_tables() {
        let cfg = EndpointConfig {
            interface: "ep0".into(),
            address: "198.18.3.1".parse().unwrap(),
            address6: None,
            mark: 0x5c1,
            table: 1473,
            rule_priority: 1000,
            cgroup: None,
            mtu: 1400,
            path: EndpointPath::Tun,
        };
        let cmds = teardown_cmds(&cfg);
        for fam in ["-4", "-6"] {
            assert!(cmds.contains(&format!(
                "{fam} rule del pref 1000 fwmark 0x5c1 lookup main"
            )));
            assert!(cmds.contains(&format!(
                "{fam} rule del pref 1001 lookup main suppress_prefixlength 0"
            )));
            assert!(cmds.contains(&format!("{fam} rule del pref 1002 iif lo lookup 1473")));
        }
        let veth = EndpointConfig {
            path: EndpointPath::Veth,
            ..cfg.clone()
        };
        assert!(
            teardown_cmds(&veth).contains(&"-4 rule del pref 1003 iif ep0x blackhole".to_string())
        );
        assert!(cmds.contains(&"-6 route flush table 1473".to_string()));
        assert_eq!(cmds.last().unwrap(), "link del ep0");
        assert_eq!(peer_name(&cfg), "ep0x");
    }

    #[test]
    fn a_restart_keeps_the_refusing_routes_and_drops_the_rest() {
        let out = "default dev sluice-ep scope link \n\
                   unreachable default metric 4294967295 \n\
                   throw 203.0.113.20 \n";
        assert_eq!(
            stale_route_cmds("-4", out, 1473),
            [
                "-4 route del default dev sluice-ep scope link table 1473",
                "-4 route del throw 203.0.113.20 table 1473",
            ]
        );
    }
}
