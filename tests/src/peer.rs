//! Helpers around `tests/peer/peer.py`, the real peer programs (a dual-stack
//! HTTP server with UDP echo, and a UDP probe); see the script's docstring.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Host, Lab, ProcId};

/// Path of `peer.py` in the source tree.
pub fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/peer.py")
}

/// The Python interpreter for `peer.py`: Debian's `/usr/bin/python3` when
/// present (not whatever `python3` a developer's PATH finds first).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// What `peer.py udp-probe` reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpProbe {
    /// Datagrams sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Source addresses the server saw (first line of each reply), in order
    /// of first appearance, e.g. `["198.51.100.1"]`.
    pub seen_as: Vec<String>,
}

/// The names the lab's DNS server answers ([`Lab::spawn_dns`]), each with
/// its address: `www.bypass.example` the tunnelled server, so a test can
/// watch it switch; `app.bypass.example` [`crate::addr::BY_DOMAIN_V4`]; and
/// the apex `bypass.example` the same, which `*.bypass.example` must not
/// match.
pub const DNS_RECORDS: [(&str, std::net::Ipv4Addr); 3] = [
    ("www.bypass.example", crate::addr::TUNNELLED_V4),
    ("app.bypass.example", crate::addr::BY_DOMAIN_V4),
    ("bypass.example", crate::addr::BY_DOMAIN_V4),
];

impl Lab {
    /// Starts dnsmasq in `inet` on [`crate::addr::DNS_V4`] (UDP and TCP
    /// port 53; log `dir()/<name>.log`) answering [`DNS_RECORDS`] with a
    /// TTL of `ttl_secs`, and waits until it listens.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn spawn_dns(&self, name: &str, ttl_secs: u32) -> ProcId {
        let pid_file = format!(
            "--pid-file={}",
            self.dir().join(format!("{name}.pid")).display()
        );
        let listen = format!("--listen-address={}", crate::addr::DNS_V4);
        let ttl = format!("--local-ttl={ttl_secs}");
        let records: Vec<String> = DNS_RECORDS
            .iter()
            .map(|(n, a)| format!("--host-record={n},{a}"))
            .collect();
        let mut argv = vec![
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--log-queries",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            &listen,
            &pid_file,
            &ttl,
        ];
        argv.extend(records.iter().map(String::as_str));
        let id = self.spawn(Host::Inet, name, &argv);
        self.wait_tcp(
            Host::Inet,
            SocketAddr::new(crate::addr::DNS_V4.into(), 53),
            Duration::from_secs(10),
        );
        id
    }

    /// `dig` from `h`: the A records of `name` at the DNS server `server`
    /// (one try, 3 s; over TCP if `tcp`), one per line.
    pub fn dig(&self, h: Host, server: std::net::IpAddr, name: &str, tcp: bool) -> String {
        let at = format!("@{server}");
        let transport = if tcp { "+tcp" } else { "+notcp" };
        let out = self.run(
            h,
            &[
                "dig", "+short", "+tries=1", "+time=3", transport, &at, name, "A",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `peer.py serve --http <http_port> --udp <udp_port>` in `h`
    /// (log `dir()/<name>.log`) and waits until both sockets are bound.
    ///
    /// # Panics
    /// If it does not come up within 10 s (the message has its log).
    pub fn spawn_peer(&self, h: Host, name: &str, http_port: u16, udp_port: u16) -> ProcId {
        let script = peer_script();
        let (http, udp) = (http_port.to_string(), udp_port.to_string());
        let id = self.spawn(
            h,
            name,
            &[
                python(),
                "-u",
                &script.to_string_lossy(),
                "serve",
                "--http",
                &http,
                "--udp",
                &udp,
            ],
        );
        let what = format!("peer {name} in {h} to listen on tcp/{http} and udp/{udp}");
        self.wait_for(&what, Duration::from_secs(10), || {
            let log = self.log(name);
            assert!(
                self.is_running(id) || log.contains("listening http="),
                "sluice-lab: peer {name} exited; log:\n{log}"
            );
            log.lines()
                .any(|l| l == format!("listening http={http} udp={udp}"))
        });
        id
    }

    /// Runs `peer.py udp-probe` from `h` to `dst`: `count` datagrams of `size`
    /// bytes, waiting up to `timeout` after the last one for replies. Use
    /// `size >= 40` so that any address fits in a reply.
    ///
    /// # Panics
    /// If the probe fails to run or prints something unexpected.
    pub fn udp_probe(
        &self,
        h: Host,
        dst: SocketAddr,
        size: usize,
        count: usize,
        timeout: Duration,
    ) -> UdpProbe {
        let script = peer_script();
        let (ip, port) = (dst.ip().to_string(), dst.port().to_string());
        let (size, count) = (size.to_string(), count.to_string());
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let out = self.run_ok(
            h,
            &[
                python(),
                &script.to_string_lossy(),
                "udp-probe",
                &ip,
                &port,
                "--size",
                &size,
                "--count",
                &count,
                "--timeout",
                &secs,
            ],
        );
        parse_probe(&out).unwrap_or_else(|| panic!("sluice-lab: bad udp-probe output: {out:?}"))
    }
}

fn parse_probe(out: &str) -> Option<UdpProbe> {
    let v: serde_json::Value = serde_json::from_str(out.lines().last()?).ok()?;
    Some(UdpProbe {
        sent: v.get("sent")?.as_u64()?,
        received: v.get("received")?.as_u64()?,
        seen_as: v
            .get("seen_as")?
            .as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_output() {
        let p = parse_probe("{\"sent\": 3, \"received\": 2, \"seen_as\": [\"198.51.100.1\"]}\n");
        assert_eq!(
            p,
            Some(UdpProbe {
                sent: 3,
                received: 2,
                seen_as: vec!["198.51.100.1".into()]
            })
        );
        assert_eq!(parse_probe("nope"), None);
    }
}
