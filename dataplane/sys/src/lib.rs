//! The one room with `unsafe` in the dataplane: kernel interfaces that need
//! raw syscalls, `mmap` and shared-memory rings.
//!
//! - [`xsk`]: `AF_XDP` sockets: UMEM registration, the fill, completion, RX and
//!   TX rings, batched and `#[must_use]`.
//! - [`tun`]: TUN devices for the edge.
//! - [`udp`]: batched UDP sockets for the datagram transport
//!   (`sendmmsg`/`recvmmsg`, GSO/GRO, reuseport steering by receiver id).
//! - [`cpu`]: CPU affinity of worker threads.
//! - [`mem`]: huge-page advice for large lookup tables.
//! - [`ethtool`]: the driver behind an interface.
//! - [`fanotify`]: exec permission events (endpoint mode's process
//!   verdicts), the network namespace's cookie, tracefs.
//! - [`sock_diag`]: the process behind a connection, the `/proc` way (the
//!   baseline process attribution is measured against).
//! - [`rtnl`]: link, address and route change notifications (rtnetlink),
//!   which trigger trusted-network re-evaluation.
//! - [`rlimit`]: the descriptor limit (the edge raises it at start).
//! - [`reuseport`]: TCP listeners sharing one address, one per edge
//!   worker.
//! - [`neigh`]: the kernel's neighbour (ARP/ND) table over rtnetlink,
//!   which the gateway's workers take LAN hosts' MACs from.
//! - [`bpf_mmap`]: a BPF array map's words mapped into the process (the
//!   classifier's policy state word, stored atomically).
//! - [`peer`]: a Unix socket peer's credentials and a group's id (the
//!   admin socket's authorisation).
//! - [`xdp_verdict`]: a two-instruction XDP program with one fixed
//!   verdict (benchmarks: the `XDP_DROP` ceiling), attached by a BPF link.
//!
//! What it must not do: policy, protocol or configuration logic (those are
//! in `sluice-core` and `sluice-config`); every `unsafe` block here wraps one
//! kernel interface behind a safe API, and every other sluice crate denies
//! (core forbids) `unsafe_code` and uses these wrappers.
#![allow(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
use sluice_core::testutil;
use sluice_core::{lpm, wire};

pub mod bpf_mmap;
pub mod cpu;
pub mod ethtool;
pub mod fanotify;
pub mod file_id;
pub mod lock;
pub mod mem;
pub mod neigh;
pub mod peer;
pub mod reuseport;
pub mod rlimit;
pub mod rtnl;
pub mod sock_diag;
pub mod spawn;
pub mod tcp;
pub mod tun;
pub mod udp;
pub mod xdp_verdict;
pub mod xsk;
