//! Types shared by the kernel side (`sluice-ebpf`) and the user side
//! (`sluice`) of the dataplane.
//!
//! Everything that crosses the kernel/user boundary is defined here exactly
//! once: map names, map sizes, map key and value layouts, and the counter
//! indices of the classifier's statistics map. All map types are `#[repr(C)]`
//! and padding-free (flags are `u32`, never `bool`), so the byte layout seen by
//! the verifier and by `bpf(2)` from user space is the same.
//!
//! This crate must stay `no_std`, allocation-free and dependency-free on the
//! kernel side. The `user` feature adds `unsafe impl aya::Pod` for the types
//! that user space reads and writes through aya.
#![no_std]
#![deny(missing_docs)]

/// Names of the maps declared by the classifier (the ELF section symbol names
/// that user space looks up with `Ebpf::map_mut`).
pub mod map_names {
    /// IPv4 bypass prefixes: `LpmTrie<Ipv4Addr, BypassEntry>`.
    pub const BYPASS_V4: &str = "BYPASS_V4";
    /// IPv6 bypass prefixes: `LpmTrie<Ipv6Addr, BypassEntry>`.
    pub const BYPASS_V6: &str = "BYPASS_V6";
    /// The gateway's own IPv4 addresses: `HashMap<Ipv4Addr, u32>`.
    pub const LOCAL_V4: &str = "LOCAL_V4";
    /// The gateway's own IPv6 addresses: `HashMap<Ipv6Addr, u32>`.
    pub const LOCAL_V6: &str = "LOCAL_V6";
    /// `AF_XDP` sockets by RX queue index: `XskMap`.
    pub const XSKS: &str = "XSKS";
    /// Per-CPU `u64` counters indexed by [`crate::Counter`].
    pub const STATS: &str = "STATS";
}

/// Name of the XDP program in the classifier object.
pub const CLASSIFIER_PROGRAM: &str = "classify";
/// Name of the pass-everything XDP program in the same object (a
/// benchmark baseline: the cost of having any XDP program attached).
pub const NOOP_PROGRAM: &str = "noop";

/// Capacity of each bypass LPM trie (IPv4 and IPv6 separately).
pub const BYPASS_MAX_ENTRIES: u32 = 131_072;
/// Capacity of each local-address hash map.
pub const LOCAL_MAX_ENTRIES: u32 = 256;
/// Capacity of the XSK map: the highest RX queue index plus one that sluice
/// serves.
pub const MAX_QUEUES: u32 = 64;
/// How many 802.1Q / 802.1ad tags the classifier walks before giving up.
pub const MAX_VLAN_TAGS: usize = 2;
/// How many IPv6 extension headers the classifier walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Key data of the IPv4 LPM trie: the address in network byte order. The
/// kernel's `bpf_lpm_trie_key` prefix length precedes it (aya's
/// `lpm_trie::Key` adds it on both sides).
pub type Ipv4Key = [u8; 4];
/// Key data of the IPv6 LPM trie: the address in network byte order.
pub type Ipv6Key = [u8; 16];

/// Value of a bypass LPM entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BypassEntry {
    /// Where the entry came from, one of the `SOURCE_*` constants. The
    /// classifier does not look at it; it is for operators and for the
    /// control plane to know which entries it owns.
    pub source: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

impl BypassEntry {
    /// A prefix listed in the configuration file.
    pub const SOURCE_CONFIG: u32 = 1;
    /// An address learnt from a DNS answer for a bypassed domain.
    pub const SOURCE_DNS: u32 = 2;
    /// The address of another VPN gateway.
    pub const SOURCE_VPN_GATEWAY: u32 = 3;

    /// An entry from the configuration file.
    pub const fn from_config() -> Self {
        Self {
            source: Self::SOURCE_CONFIG,
            reserved: 0,
        }
    }
}

/// Indices into the classifier's per-CPU statistics array.
///
/// Every packet the classifier sees increments exactly one verdict counter
/// (`Pass*`, `Bypass`, `Tunnel` or `Drop*`), so the counters add up to the
/// number of frames seen. `DropNoSocket` is the exception: it is counted in
/// addition to `Tunnel` when no `AF_XDP` socket serves the RX queue (the frame
/// is then dropped, never passed to the kernel: fail-closed).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not IPv4/IPv6 (after VLAN tags): handed to the kernel.
    PassNonIp = 0,
    /// ARP: handed to the kernel.
    PassArp = 1,
    /// `ICMPv6` neighbour/router discovery: handed to the kernel.
    PassNeighbor = 2,
    /// Addressed to one of the gateway's own addresses.
    PassLocal = 3,
    /// Broadcast, multicast or link-local destination.
    PassMulticast = 4,
    /// Destination in a bypass prefix: kernel routing sends it direct.
    Bypass = 5,
    /// Redirected to the tunneler's `AF_XDP` socket.
    Tunnel = 6,
    /// Frame shorter than the headers it announces.
    DropTruncated = 7,
    /// IPv4 header invalid (version, IHL or total length).
    DropBadIpv4 = 8,
    /// IPv6 header invalid (version or payload length).
    DropBadIpv6 = 9,
    /// IPv6 extension header chain malformed or too long.
    DropExtHeaders = 10,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    DropVlanDepth = 11,
    /// To be tunnelled but no `AF_XDP` socket serves the RX queue (counted in
    /// addition to `Tunnel`).
    DropNoSocket = 12,
}

impl Counter {
    /// Number of counters (the statistics array's length).
    pub const COUNT: u32 = 13;

    /// All counters, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::PassNonIp,
        Counter::PassArp,
        Counter::PassNeighbor,
        Counter::PassLocal,
        Counter::PassMulticast,
        Counter::Bypass,
        Counter::Tunnel,
        Counter::DropTruncated,
        Counter::DropBadIpv4,
        Counter::DropBadIpv6,
        Counter::DropExtHeaders,
        Counter::DropVlanDepth,
        Counter::DropNoSocket,
    ];

    /// Stable metric name (`snake_case`), used in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassNonIp => "pass_non_ip",
            Counter::PassArp => "pass_arp",
            Counter::PassNeighbor => "pass_neighbor",
            Counter::PassLocal => "pass_local",
            Counter::PassMulticast => "pass_multicast",
            Counter::Bypass => "bypass",
            Counter::Tunnel => "tunnel",
            Counter::DropTruncated => "drop_truncated",
            Counter::DropBadIpv4 => "drop_bad_ipv4",
            Counter::DropBadIpv6 => "drop_bad_ipv6",
            Counter::DropExtHeaders => "drop_ext_headers",
            Counter::DropVlanDepth => "drop_vlan_depth",
            Counter::DropNoSocket => "drop_no_socket",
        }
    }

    /// The index in the statistics array.
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `BypassEntry` is `#[repr(C)]`, made of two `u32`s, has no
    // padding and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::BypassEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            for d in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), d.name());
            }
        }
    }

    #[test]
    fn bypass_entry_has_no_padding() {
        assert_eq!(core::mem::size_of::<BypassEntry>(), 8);
    }
}
