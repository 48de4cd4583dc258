//! What sluice's gateway and edge share at run time, above the system
//! interfaces of `sluice-sys` and the pure logic of `sluice-core`:
//!
//! - [`driver`]: the tunnel session's I/O (the session itself is
//!   `sluice_core::tunnel`, sans-IO): one socket and one session, the read
//!   rule, the one flush policy, a gateway tunnel's reconnection with
//!   backoff, the AEAD measurement; the gateway's workers and the edge both
//!   use it;
//! - [`pki`]: the small CA (`sluice pki`), and the loaders that turn PEM
//!   files into rustls configurations;
//! - [`http`]: the one HTTP/1.1 server behind metrics, the admin API and
//!   the PAC file (deadlines, caps, authorisation; the request heads and
//!   the `Host` allow-list are `sluice_core::http`'s, re-exported);
//! - [`metrics`]: Prometheus text rendering and its listener;
//! - [`host`]: facts about the host's interfaces and the few commands sluice
//!   runs to configure the kernel (`ip`, `nft`).
//!
//! What it must not do: `unsafe` (denied; the kernel interfaces it needs
//! are `sluice-sys`'s safe wrappers), eBPF (the edge builds on it with the
//! stable toolchain alone), or policy decisions (those are in core).
#![deny(unsafe_code)]
#![deny(missing_docs)]

use sluice_core::{tunnel, wire};
use sluice_sys as sys;

pub mod agent;
pub mod driver;
pub mod enrol;
pub mod host;
pub mod http;
pub mod metrics;
pub mod pki;
