//! The appliance's gateway unit grants the gateway a bounding set of
//! capabilities (`CapabilityBoundingSet=` in
//! `firmware/rootfs/etc/systemd/system/sluice-gateway.service`; the
//! memlock limit is systemd's default, 8 MiB, as there). Here the lab's gateway runs
//! as root under exactly that set (`setpriv --bounding-set`, which is what
//! systemd does to a root service) and its tunnel comes up; and with any
//! one of them taken away it does not: each one is needed.
use std::time::Duration;

use sluice_lab::{Host, Lab, deploy::Sluice, require_root};

use super::{HTTP, UDP, bin};

const UNIT: &str = include_str!("../../firmware/rootfs/etc/systemd/system/sluice-gateway.service");

/// The unit's bounding set, as `setpriv` names them (`net_admin`...).
fn unit_caps() -> Vec<String> {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the gateway's unit has a CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .expect("CAP_ names")
                .to_ascii_lowercase()
        })
        .collect()
}

fn wrapper(caps: &[String]) -> Vec<String> {
    let set: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    vec![
        // systemd's default memlock limit (8 MiB), whatever the runner's
        // is: with a larger one CAP_IPC_LOCK would look unneeded.
        "prlimit".into(),
        "--memlock=8388608:8388608".into(),
        "setpriv".into(),
        "--bounding-set".into(),
        format!("-all,{}", set.join(",")),
        "--inh-caps".into(),
        "-all".into(),
        "--".into(),
    ]
}

#[test]
fn the_gateway_needs_exactly_the_appliance_units_capabilities() {
    if !require_root("the_gateway_needs_exactly_the_appliance_units_capabilities") {
        return;
    }
    let caps = unit_caps();
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    s.start_edge();
    // The unit's set: it comes up.
    s.gateway_wrapper = wrapper(&caps);
    let r = s.try_start_gateway("gateway-unit-set", Duration::from_secs(20));
    assert!(
        r.is_ok(),
        "the gateway does not come up with the unit's capabilities {caps:?}: {}",
        r.unwrap_err()
    );
    // Stopped, it leaves its classifier pinned; started again under the
    // same set, it takes that over.
    if let Some(id) = s.gateway.take() {
        lab.stop(id);
    }
    let r = s.try_start_gateway("gateway-unit-set-again", Duration::from_secs(20));
    assert!(
        r.is_ok(),
        "the gateway does not come up again over its pinned classifier with the unit's capabilities {caps:?}: {}",
        r.unwrap_err()
    );
    s.stop_gateway_and_detach();
    // One fewer: it does not.
    let mut unneeded = Vec::new();
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        s.gateway_wrapper = wrapper(&fewer);
        let r = s.try_start_gateway(&format!("gateway-without-{drop}"), Duration::from_secs(12));
        eprintln!(
            "capabilities: without {drop}: {}",
            match &r {
                Ok(()) => "the tunnel comes up".to_string(),
                Err(e) => e.lines().last().unwrap_or_default().to_string(),
            }
        );
        if r.is_ok() {
            eprintln!("{}", lab.log(&format!("gateway-without-{drop}")));
            unneeded.push(drop.clone());
        }
        s.stop_gateway_and_detach();
    }
    assert!(
        unneeded.is_empty(),
        "the gateway's unit grants capabilities it comes up without: {unneeded:?}"
    );
    // And the failures above were the missing capability's: with the
    // whole set again, in the same lab, it comes up.
    s.gateway_wrapper = wrapper(&caps);
    let r = s.try_start_gateway("gateway-unit-set-last", Duration::from_secs(20));
    assert!(
        r.is_ok(),
        "the gateway does not come up again with the unit's capabilities after the runs without one: {}",
        r.unwrap_err()
    );
}
