//! `sluice-update health`: is this boot good? Run before
//! `boot-complete.target` by `sluice-health.service`; on a boot that is on
//! trial, success lets `systemd-bless-boot` mark the slot good, failure
//! reboots (the unit's `FailureAction=reboot`), and once the slot has no
//! boots left systemd-boot starts the other one.
//!
//! Good means the gateway forwards: its metrics endpoint answers and at
//! least one tunnel to an edge is up (`sluice_gateway_tunnel_up 1`),
//! within the timeout. A gateway whose unit has failed for good fails the
//! check at once.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

/// systemd-boot's vendor GUID for its EFI variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// The boot is on trial: systemd-boot booted an entry with a counter (it
/// then sets `LoaderBootCountPath`, the entry's path on the ESP) and
/// `systemd-bless-boot` has not yet renamed that entry (the variable
/// stays until the next boot).
pub fn on_trial(efivars: &Path, esp: &Path) -> bool {
    let Ok(raw) = std::fs::read(efivars.join(format!("LoaderBootCountPath-{LOADER_GUID}"))) else {
        return false;
    };
    // 4 bytes of attributes, then UTF-16LE up to a NUL.
    let units: Vec<u16> = raw
        .get(4..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let path = String::from_utf16_lossy(&units).replace('\\', "/");
    let rel = path.trim_start_matches('/');
    // An entry path we cannot follow: assume on trial (the safe side).
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return true;
    }
    esp.join(rel).exists()
}

/// One look at the gateway's metrics: `Ok(true)` if a tunnel is up.
///
/// # Errors
/// If the endpoint does not answer.
pub fn tunnel_up(metrics: SocketAddr) -> Result<bool, String> {
    let t = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&metrics, t).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.take(4 << 20)
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(tunnels_up(&body))
}

/// A Prometheus text has `sluice_gateway_tunnel_up{...} 1`.
pub fn tunnels_up(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("sluice_gateway_tunnel_up")
            .is_some_and(|r| r.starts_with(['{', ' ']))
            && l.split_ascii_whitespace().last() == Some("1")
    })
}

/// Waits until a tunnel is up, `gateway_failed` says the gateway gave up,
/// or `timeout` passes; returns how long it took.
///
/// # Errors
/// Why the boot is not good.
pub fn wait_forwarding(
    metrics: SocketAddr,
    timeout: Duration,
    gateway_failed: impl Fn() -> bool,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut last;
    loop {
        match tunnel_up(metrics) {
            Ok(true) => return Ok(t.elapsed()),
            Ok(false) => last = "the gateway runs but no tunnel is up".into(),
            Err(e) => last = format!("the gateway's metrics ({metrics}) do not answer: {e}"),
        }
        if gateway_failed() {
            return Err(format!("the gateway's service has failed ({last})"));
        }
        if t.elapsed() >= timeout {
            return Err(format!("not forwarding after {timeout:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A service's state as `systemctl show -p ActiveState -p NRestarts`
/// prints it: (`ActiveState`, `NRestarts`).
#[must_use]
pub fn parse_show(text: &str) -> (String, u64) {
    let mut state = String::new();
    let mut restarts = 0;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("ActiveState=") {
            state = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("NRestarts=") {
            restarts = v.trim().parse().unwrap_or(0);
        }
    }
    (state, restarts)
}

/// Waits until a role's service (the edge's, the controller's) has run
/// for `settle` without a restart: it read its file, bound its ports and
/// stayed up. `show` gives its state ([`parse_show`]). Fails at once if
/// it failed, or after `timeout`.
///
/// # Errors
/// The service failed, or did not settle in time (why, in words).
pub fn wait_settled(
    unit: &str,
    timeout: Duration,
    settle: Duration,
    show: impl Fn() -> Result<(String, u64), String>,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut since: Option<(Instant, u64)> = None;
    loop {
        let last = match show() {
            Ok((state, restarts)) if state == "active" => {
                // Up since the first sight of it with this restart count.
                match since {
                    Some((at, n)) if n == restarts && at.elapsed() >= settle => {
                        return Ok(t.elapsed());
                    }
                    Some((_, n)) if n == restarts => {}
                    _ => since = Some((Instant::now(), restarts)),
                }
                format!("{unit} is active")
            }
            Ok((state, _)) if state == "failed" => {
                return Err(format!("{unit} has failed"));
            }
            Ok((state, _)) => {
                since = None;
                format!("{unit} is {state}")
            }
            Err(e) => format!("{unit}: {e}"),
        };
        if t.elapsed() >= timeout {
            return Err(format!("{unit} not settled after {timeout:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_tunnel_up() {
        assert!(super::tunnels_up(
            "# x\nsluice_gateway_tunnel_up{tenant=\"internet\",worker=\"0\"} 1\n"
        ));
        assert!(!super::tunnels_up(
            "sluice_gateway_tunnel_up{tenant=\"internet\"} 0\nsluice_gateway_tunnel_up_other 1\n"
        ));
        assert!(!super::tunnels_up(
            "sluice_gateway_tunnel_up{tenant=\"internet\"} 0\n"
        ));
        assert!(!super::tunnels_up(""));
    }

    #[test]
    fn a_role_settles_once_it_stays_up_without_restarts() {
        use super::{parse_show, wait_settled};
        use std::{cell::Cell, time::Duration};
        assert_eq!(
            parse_show("ActiveState=active\nNRestarts=2\n"),
            ("active".to_string(), 2)
        );
        let quick = Duration::from_millis(600);
        // Restarting all along: never settles.
        let n = Cell::new(0);
        let e = wait_settled("sluice-edge.service", Duration::from_secs(3), quick, || {
            n.set(n.get() + 1);
            Ok(("active".into(), n.get()))
        })
        .unwrap_err();
        assert!(e.contains("not settled"), "{e}");
        // Failed: at once.
        let e = wait_settled("x", Duration::from_secs(30), quick, || {
            Ok(("failed".into(), 0))
        })
        .unwrap_err();
        assert!(e.contains("has failed"), "{e}");
        // Starting, then up for good.
        let n = Cell::new(0);
        wait_settled("x", Duration::from_secs(10), quick, || {
            n.set(n.get() + 1);
            Ok((if n.get() < 3 { "activating" } else { "active" }.into(), 1))
        })
        .unwrap();
    }
}
