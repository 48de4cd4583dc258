//! sluice gateway: everything that runs on the branch appliance beside the
//! kernel's XDP hook.
//!
//! - [`ebpf`]: loads the embedded XDP classifier and socket hooks with aya,
//!   fills their maps, reads their counters (the eBPF object is built by
//!   this crate's `build.rs`, which needs nightly and `bpf-linker`).
//! - [`gateway`]: the `AF_XDP` workers, their supervision, and the control
//!   side: policy reload, trusted-network fact gathering, domain bypass,
//!   the admin API server.
//! - [`endpoint`]: endpoint mode (the host's own traffic, process-based
//!   bypass through socket hooks and exec events, the flow table).
//! - [`admin`]: the admin API's client (`call`) and, re-exported from
//!   `sluice_core::admin`, its requests and responses, shared by the
//!   server here and the `sluice` CLI's client.
//! - [`pac`]: serving the PAC file; [`check`]: `sluice check`'s host
//!   checks.
//!
//! What it must not do: `unsafe` (denied; kernel interfaces come from
//! `sluice-sys`), pure protocol or policy logic (that is `sluice-core`'s,
//! where the edge and the fuzz targets share it), or parsing the
//! configuration file (`sluice-config`).
#![deny(unsafe_code)]
#![deny(missing_docs)]

use sluice_config as config;
use sluice_core::{addr_map, dns, net, policy, process, tunnel, wire};
use sluice_runtime::{driver, host, http, metrics, pki};
use sluice_sys as sys;

pub mod admin;
pub mod check;
pub mod ebpf;
pub mod endpoint;
pub mod gateway;
pub mod pac;

// The configuration bounds CPU lists by the same limit the affinity calls
// use.
const _: () = assert!(sluice_config::MAX_CPUS == sluice_sys::cpu::MAX_CPUS);
