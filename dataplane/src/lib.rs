//! sluice's userspace dataplane: the gateway (XDP classifier + `AF_XDP`
//! tunneler) and the edge that terminates its TLS tunnels.
//!
//! Layers, from the wire up:
//! - [`wire`]: zero-copy views over Ethernet/IP headers and the tunnel's
//!   framing (versioned wire format). Pure, no I/O.
//! - [`tunnel`]: the sans-IO tunnel session (framing, hello, keepalives) on
//!   top of a rustls connection. Takes bytes and time, returns bytes to send
//!   and packets to deliver.
//! - [`sys`]: the only module with `unsafe`: `AF_XDP` sockets (UMEM and rings)
//!   and the TUN device.
//! - [`ebpf`]: loads the embedded XDP classifier with aya, fills its maps,
//!   reads its counters.
//! - [`gro`]: merges a flow's packets into GSO packets for the edge's TUN
//!   device (sans-IO).
//! - [`driver`]: the tunnel session's I/O: one socket and one session, the
//!   read rule, the flush policy, a gateway tunnel's reconnection; the
//!   AEAD choice made once per process.
//! - [`gateway`] and [`edge`]: the event loops that drive the above with mio.
//! - [`dns`]: domain bypass (DNS answers observed, answered addresses
//!   installed for their TTL), sans-IO; [`pac`]: the PAC file for LAN
//!   clients, from the same lists; [`process`]: the process patterns of
//!   process-based bypass.
//! - [`endpoint`]: endpoint mode (the host's own traffic, process-based
//!   bypass through socket hooks and exec events, the flow table).
//! - [`config`], [`pki`], [`metrics`], [`admin`] (the admin API's
//!   requests, shared by the gateway and the CLI), [`http`] (the one HTTP
//!   server behind metrics, admin and PAC): operator-facing pieces.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub use sluice_core::{addr_map, dns, gro, lpm, net, testutil, tunnel, wire};

pub mod admin;
pub mod config;
pub mod driver;
pub mod ebpf;
pub mod edge;
pub mod endpoint;
pub mod gateway;
pub mod host;
pub mod http;
pub mod metrics;
pub mod pac;
pub mod pki;
pub mod policy;
pub mod process;
pub mod sys;
