//! # sluice-lab: the namespace lab of sluice's tests, demo and benchmarks
//!
//! A [`Lab`] is a closed world of network namespaces joined by veth
//! pairs: a LAN `client`, the sluice gateway `gw`, the sluice `edge`, and
//! `inet` (servers "on the internet", and the router between `gw` and
//! `edge`), plus a second branch (`client2` behind `gw2`). The address plan
//! is in [`addr`]; counters of what reaches the servers are in [`counter`].
//!
//! For several edges per tenant, [`Lab::with_edges`] adds up to two more
//! edges (`edge2`, `edge3`), each in its own namespace behind `inet`
//! (labs that do not ask for them do not pay for them).
//! [`relay::Relay`] puts distance between the gateway and an edge (a
//! bounded userspace relay in `inet` that delays TCP and UDP by a fixed
//! time each way, since the kernel has no netem) and can blackhole or cut
//! it; [`failover`] deploys sluice with its edges behind relays and
//! measures, with a numbered UDP stream, which edge carried each reply and
//! how long the traffic took to come back after an edge died.
//!
//! What it must not do (`/work/shared/notes/lab-network.md`): touch the host's
//! own interfaces, routes or sysctls; use anything but documentation address
//! ranges; connect to the host's uplink; leave namespaces, links or processes
//! behind. Every name is unique per lab (`sl<pid>x<n>-<host>`), so labs run in
//! parallel, and [`cleanup_stale`] removes what a crashed run left.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_lab::{Host, Lab, addr, counter, require_root};
//!
//! if !require_root("bypassed_traffic_is_masqueraded") {
//!     return;
//! }
//! let lab = Lab::new();
//! lab.spawn_peer(Host::Inet, "peer", 8080, 8080);
//! let who = lab.run_ok(Host::Client, &["curl", "-sS", "--max-time", "5",
//!     "http://203.0.113.20:8080/whoami"]);
//! assert_eq!(who.trim(), addr::GW_WAN_V4.to_string());
//! assert!(lab.nft_counter(counter::GW_TO_BYPASSED_V4) > 0);
//! assert_eq!(lab.nft_counter(counter::LAN_LEAK_V4), 0);
//! // Dropping `lab` (also on panic) kills `peer` and deletes the namespaces.
//! ```
//!
//! Processes run in a namespace through `ip netns exec`; they inherit the
//! caller's environment and working directory.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod addr;
pub mod appliance;
pub mod demo;
pub mod deploy;
pub mod edge_lab;
pub mod failover;
pub mod l2;
mod lab;
mod netns;
mod nft;
mod peer;
mod proc;
pub mod relay;
pub mod reload;
#[cfg(test)]
mod selftest;
mod sys;
pub mod turn;

pub use lab::{DEFAULT_TIMEOUT, Host, LAB_BPFFS, Lab, ProcId, cleanup_stale, teardown_on_signal};
pub use nft::counter;
pub use peer::{DNS_RECORDS, UdpProbe, peer_script, python};

use std::io::Write as _;

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    sys::is_root()
}

/// Guard for privileged tests: true when running as root. Otherwise, under
/// `CI=true` it panics (a green CI must mean the kernel path was exercised);
/// elsewhere it prints a loud SKIPPED line and returns false, and the test
/// should return at once.
///
/// # Panics
/// When not root and the environment has `CI=true`.
pub fn require_root(test: &str) -> bool {
    require(
        test,
        sys::is_root(),
        "root (namespaces, XDP, AF_XDP or BPF_PROG_TEST_RUN); run as root, e.g. `sudo -E cargo xtask test`",
    )
}

/// Guard for a test that needs something the machine may lack (`need`
/// says what, and how to get it): `available` passes; otherwise it panics
/// under `CI=true` and elsewhere prints a loud SKIPPED line and returns
/// false.
///
/// # Panics
/// When `available` is false and the environment has `CI=true`.
pub fn require(test: &str, available: bool, need: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs {need}; under CI=true a test that cannot run fails"
    );
    // Straight to the stderr handle, not `eprintln!`: the test harness
    // captures the macros' output of passing tests, and this must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n********************************************************************\n\
         SKIPPED {test}: needs {need}.\n\
         ********************************************************************\n"
    );
    false
}

/// SHA-256 of a file, as lowercase hex (`sha256sum`): what the lab's HTTP
/// peer reports for an upload, to check it arrived unchanged.
///
/// # Panics
/// If `sha256sum` cannot run or fails.
pub fn sha256_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
