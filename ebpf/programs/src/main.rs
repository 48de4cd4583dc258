//! sluice's eBPF programs (kernel side), one object built for
//! `bpfel-unknown-none` by the dataplane's `build.rs`.
//!
//! The XDP classifier runs on the gateway's LAN interface and decides, per
//! frame, whether the kernel handles it (`XDP_PASS`: non-IP, ARP,
//! neighbour discovery, multicast, traffic to the gateway itself, bypassed
//! destinations) or whether it goes down the tunnel (redirected into the
//! `AF_XDP` socket of its RX queue, with its verdict in front of it as an
//! [`sluice_common::XdpMeta`]). Malformed frames are counted and dropped,
//! never passed on half-parsed; tunnelled traffic with no socket to take it
//! is dropped too (fail-closed: it must never leak to the kernel's
//! routing). The socket hooks (endpoint mode) steer the host's own sockets
//! in the kernel instead.
//!
//! Layout, one concern per module:
//! - [`xdp`]: the XDP entry points (`classify`: parse, decide, count, put
//!   the metadata, redirect; `classify_head`, the same with the metadata
//!   in front of the frame, for kernels that refuse `bpf_xdp_adjust_meta`
//!   to XDP) and the pass-everything baseline;
//! - [`parse`]: bounds-checked header walk (Ethernet, VLAN, IPv4, IPv6 and
//!   its extension headers) into a small [`parse::Frame`] summary;
//! - [`verdict`]: the ordered policy that turns a summary into a verdict,
//!   with the map lookups it needs;
//! - [`vlan`]: untag mode (tags removed before the kernel, put back on
//!   its frames by the tc egress program `vlan_egress`);
//! - [`sock`]: endpoint mode's cgroup socket hooks (create, release,
//!   connect, sendmsg);
//! - [`process`]: endpoint mode's process tracepoints (exec, fork, exit);
//! - [`maps`]: every map shared with user space and the helpers that read
//!   and count through them (no program logic);
//! - [`probe`]: the header walk alone, for the differential fuzz target;
//! - [`lab`]: programs for the namespace lab only (a host on a VLAN).
//!
//! Every layout, name and counter index shared with user space comes from
//! `sluice-common`; nothing here defines one of its own.
//!
//! These programs must not allocate, loop without a constant bound, or
//! keep state beyond their maps. Every packet the classifier sees
//! increments exactly one verdict counter (plus those counted in addition,
//! see [`sluice_common::Counter`]).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod lab;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod probe;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod verdict;
#[cfg(target_arch = "bpf")]
mod vlan;
#[cfg(target_arch = "bpf")]
mod xdp;

/// Host builds of this crate (e.g. `cargo check --workspace`) get an empty
/// binary: the program only means something for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// The kernel only lets GPL-compatible programs call GPL-only helpers;
/// the object declares the workspace's dual licence.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path
    // that could get here, and the code has no panicking operations.
    loop {}
}
