//! sluice's core: the parts of the dataplane that are pure computation over
//! bytes, addresses and times handed in by the caller.
//!
//! - [`wire`]: zero-copy views over Ethernet and IP headers and the
//!   tunnel's framing (versioned wire format), checksums.
//! - [`tunnel`]: the tunnel session, sans I/O: TLS 1.3 (rustls) and the
//!   record layer, HELLO, keepalives, coalescing; bytes and times in,
//!   bytes, packets, events and deadlines out (its call order is
//!   documented there).
//! - [`datagram`]: the datagram (UDP) transport beside the tunnel: keys
//!   exported from its TLS session, records sealed and opened in place,
//!   the anti-replay window, rekeying, echo probes.
//! - [`net`]: IP prefixes with strict parsing.
//! - [`http`]: request heads and the `Host` allow-list of sluice's
//!   listeners; [`admin`]: the admin API's requests and answers, shared by
//!   the gateway's server and the CLI's client.
//! - [`addr_map`]: fixed-capacity address-keyed maps for the packet path.
//! - [`gro`]: merges a flow's packets into GSO packets for the edge's TUN
//!   device.
//! - [`lpm`]: longest-prefix-match tables (DIR-24-8, Poptrie) and their
//!   lock-free swap; [`mountinfo`]: mount points from mountinfo's text.
//! - [`edge`]: the edge's protocol core: admission, sessions, gateway
//!   identity, the per-packet routing decisions.
//! - [`dns`]: domain bypass's DNS observation (answers parsed, answered
//!   addresses kept for their TTL); [`pac`]: the PAC file from the same
//!   lists.
//! - [`select`]: which of a tenant's edges carries its traffic: staggered
//!   start, warm standbys, probes and failover, latency selection with
//!   hysteresis, failback.
//! - [`policy`]: the policy model, its evaluator and compiler, and
//!   trusted-network evaluation; [`process`]: process patterns.
//!
//! What this crate must not do, by construction: `unsafe` (forbidden
//! below), system calls, files, sockets, threads, or reading a clock
//! (every time is a parameter). It depends on no `libc`, `mio` or eBPF
//! crate, so it builds with the stable toolchain alone and its users (the
//! gateway, the edge, the fuzz targets) share one tested implementation.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addr_map;
pub mod admin;
pub mod datagram;
pub mod dns;
pub mod edge;
pub mod gro;
pub mod http;
pub mod lpm;
pub mod mountinfo;
pub mod net;
pub mod pac;
pub mod pmtu;
pub mod policy;
pub mod process;
pub mod select;
#[doc(hidden)]
pub mod testutil;
pub mod tunnel;
pub mod wire;
