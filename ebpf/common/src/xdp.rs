//! The XDP classifier's frame path: what the classifier hands to the
//! workers in front of a redirected frame ([`XdpMeta`]), its per-CPU
//! verdict counters ([`Counter`]), its settings ([`setting`]), the limits
//! of its header walk and queue map, and the parse probe's summary
//! ([`ParseSummary`]).
use crate::policy::ACTION_TUNNEL;

/// Capacity of each local-address hash map.
pub const LOCAL_MAX_ENTRIES: u32 = 256;
/// Capacity of the XSK map: the highest RX queue index plus one that sluice
/// serves.
pub const MAX_QUEUES: u32 = 64;
/// How many 802.1Q / 802.1ad tags the classifier walks before giving up.
pub const MAX_VLAN_TAGS: usize = 2;
/// How many IPv6 extension headers the classifier walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// First byte of the 4-byte metadata the classifier puts in front of a
/// frame it redirects: `[META_MAGIC, action, generation (u16, LE)]`.
pub(crate) const META_MAGIC: u8 = 0xa5;
/// Length of that metadata.
pub const META_LEN: usize = 4;

/// The metadata the classifier puts in front of a frame it redirects to
/// an `AF_XDP` socket, and the worker reads back: one definition of the
/// contract for both sides (the classifier writes this struct in front of
/// the frame; [`XdpMeta::decode`] reads it back in the worker and the
/// tests). Its fields lie at the offsets of [`XdpMeta::encode`]'s bytes
/// (checked at compile time below), so the struct written and the bytes
/// read are the same contract.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpMeta {
    /// [`META_MAGIC`]: the metadata is ours (a driver may leave other
    /// bytes there).
    pub magic: u8,
    /// The verdict: [`ACTION_TUNNEL`] + the tunnel.
    pub action: u8,
    /// The low 16 bits of the policy generation that decided it,
    /// little-endian.
    pub generation: [u8; 2],
}

// Alignment 1: the classifier writes it wherever `data_meta` (or, in
// front of the frame, `data`) lies.
const _: () = assert!(core::mem::size_of::<XdpMeta>() == META_LEN);
const _: () = assert!(core::mem::align_of::<XdpMeta>() == 1);
plain!(XdpMeta {
    magic,
    action,
    generation
});

impl XdpMeta {
    /// The metadata of verdict `action` decided by policy `generation`.
    #[inline]
    pub const fn new(action: u8, generation: u32) -> Self {
        let g = (generation as u16).to_le_bytes();
        Self {
            magic: META_MAGIC,
            action,
            generation: g,
        }
    }

    /// Its bytes, in the order they lie in front of the frame.
    #[inline]
    pub const fn encode(self) -> [u8; META_LEN] {
        [
            self.magic,
            self.action,
            self.generation[0],
            self.generation[1],
        ]
    }

    /// Reads it back from the bytes in front of a frame: `None` unless
    /// they carry [`META_MAGIC`].
    #[inline]
    pub const fn decode(b: [u8; META_LEN]) -> Option<Self> {
        if b[0] != META_MAGIC {
            return None;
        }
        Some(Self {
            magic: b[0],
            action: b[1],
            generation: [b[2], b[3]],
        })
    }

    /// The tunnel of the verdict (0: the internet tenant), `None` for a
    /// verdict that is no tunnel.
    #[inline]
    pub const fn tunnel(self) -> Option<u8> {
        self.action.checked_sub(ACTION_TUNNEL)
    }

    /// The generation's low 16 bits.
    #[inline]
    pub const fn generation(self) -> u16 {
        u16::from_le_bytes(self.generation)
    }
}

/// Indices into [`crate::map_names::SETTINGS`].
pub mod setting {
    /// How long a first fragment's verdict is followed, ns (0: the
    /// default, [`crate::FRAG_TIMEOUT_NS`]).
    pub const FRAG_TIMEOUT_NS: u32 = 0;
    /// What the classifier does with the VLAN tag of a frame it passes to
    /// the kernel: [`crate::VLAN_MODE_KERNEL`] or [`crate::VLAN_MODE_UNTAG`].
    pub const VLAN_MODE: u32 = 1;
    /// Number of settings.
    pub const COUNT: u32 = 2;
}

/// What the classifier's header walk made of a frame, as the parse probe
/// ([`crate::PARSE_PROBE_PROGRAM`]) stores it: the differential fuzz target
/// compares it with the user-space views.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ParseSummary {
    /// Incremented by every run (so that a stale entry is told apart).
    pub runs: u32,
    /// 0: parsed; otherwise the drop counter's index plus one.
    pub error: u32,
    /// Source address (IPv4 in the first four bytes; ARP: the sender).
    pub src: [u8; 16],
    /// Destination address (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// 1 ARP, 2 other non-IP, 4 IPv4, 6 IPv6.
    pub kind: u8,
    /// The destination MAC is a group address.
    pub l2_multicast: u8,
    /// `ICMPv6` router or neighbour discovery.
    pub neighbor_discovery: u8,
    /// Transport protocol (0 if none).
    pub proto: u8,
    /// Source port, host order (0: none or unknown).
    pub sport: u16,
    /// Destination port, host order (0: none or unknown).
    pub dport: u16,
    /// [`crate::FRAG_NONE`], [`crate::FRAG_FIRST`] or [`crate::FRAG_LATER`].
    pub frag: u8,
    /// VLAN tags walked (0 to [`MAX_VLAN_TAGS`]).
    pub vlan_tags: u8,
    /// The outer tag's TCI (0 without tags).
    pub vlan_tci: u16,
    /// The fragment identification (0 unless a fragment).
    pub frag_id: u32,
}

const _: () = assert!(core::mem::size_of::<ParseSummary>() == 56);
const _: () = assert!(core::mem::align_of::<ParseSummary>() == 4);
plain!(ParseSummary {
    runs,
    error,
    src,
    dst,
    kind,
    l2_multicast,
    neighbor_discovery,
    proto,
    sport,
    dport,
    frag,
    vlan_tags,
    vlan_tci,
    frag_id,
});

/// Indices into the classifier's per-CPU statistics array.
///
/// Every packet the classifier sees increments exactly one verdict counter
/// (`Pass*`, `Bypass`, `Tunnel` or `Drop*`), so the counters add up to the
/// number of frames seen. The exceptions ([`Counter::is_verdict`] false)
/// are counted in addition: `DropNoSocket` with `Tunnel` when no `AF_XDP`
/// socket serves the RX queue (the frame is then dropped, never passed to
/// the kernel: fail-closed), `FragFollowed` / `FragUnknown` with a later
/// fragment's verdict, `PassUntagged` with a pass whose tag was removed;
/// `EgressTagged` is the egress program's, not the classifier's.
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
    /// Redirected to the `AF_XDP` socket for a private-access tenant's
    /// tunnel.
    TunnelPrivate = 13,
    /// Internet traffic sent direct: the forwarding profile's action for
    /// the current network state.
    DirectNetwork = 14,
    /// Tunnelled traffic sent direct: its tunnel is down and the profile
    /// fails open or is inside its captive-portal grace.
    DirectFailOpen = 15,
    /// To be tunnelled, but the verdict could not be put in front of the
    /// frame (no room for metadata): dropped.
    DropNoMeta = 16,
    /// A fragment after the first took its first fragment's verdict
    /// (counted in addition to that verdict).
    FragFollowed = 17,
    /// A fragment after the first whose first fragment is unknown (not
    /// seen, or longer ago than the timeout): classified without ports,
    /// erring toward the tunnel (counted in addition to the verdict).
    FragUnknown = 18,
    /// Untag mode: the frame's VLAN tag was removed before it was passed
    /// to the kernel (counted in addition to the verdict).
    PassUntagged = 19,
    /// Untag mode: the tag of a frame to pass could not be removed:
    /// dropped.
    DropUntag = 20,
    /// Untag mode: the egress program tagged a frame of the kernel's for
    /// a LAN host on a VLAN (not an XDP verdict).
    EgressTagged = 21,
}

impl Counter {
    /// Number of counters (the statistics array's length).
    pub const COUNT: u32 = 22;

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
        Counter::TunnelPrivate,
        Counter::DirectNetwork,
        Counter::DirectFailOpen,
        Counter::DropNoMeta,
        Counter::FragFollowed,
        Counter::FragUnknown,
        Counter::PassUntagged,
        Counter::DropUntag,
        Counter::EgressTagged,
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
            Counter::TunnelPrivate => "tunnel_private",
            Counter::DirectNetwork => "direct_network",
            Counter::DirectFailOpen => "direct_fail_open",
            Counter::DropNoMeta => "drop_no_meta",
            Counter::FragFollowed => "frag_followed",
            Counter::FragUnknown => "frag_unknown",
            Counter::PassUntagged => "pass_untagged",
            Counter::DropUntag => "drop_untag",
            Counter::EgressTagged => "egress_tagged",
        }
    }

    /// The index in the statistics array.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Whether this counter is one frame's verdict (exactly one per frame
    /// the classifier sees), not one counted in addition to it.
    pub const fn is_verdict(self) -> bool {
        !matches!(
            self,
            Counter::DropNoSocket
                | Counter::FragFollowed
                | Counter::FragUnknown
                | Counter::PassUntagged
                | Counter::EgressTagged
        )
    }
}

// The statistics array is indexed by these values: `ALL` lists every
// counter once, at its own index.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};

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
    fn only_verdict_counters_are_verdicts() {
        let extra = Counter::ALL.iter().filter(|c| !c.is_verdict()).count();
        assert_eq!(extra, 5);
        assert!(Counter::Tunnel.is_verdict() && Counter::DropUntag.is_verdict());
    }

    #[test]
    fn metadata_round_trips() {
        let m = XdpMeta::new(ACTION_TUNNEL + 3, 0x0001_0203);
        assert_eq!(m.encode(), [META_MAGIC, ACTION_TUNNEL + 3, 0x03, 0x02]);
        assert_eq!(XdpMeta::decode(m.encode()), Some(m));
        assert_eq!(m.tunnel(), Some(3));
        assert_eq!(m.generation(), 0x0203);
        assert_eq!(XdpMeta::new(0, 7).tunnel(), None);
        assert_eq!(XdpMeta::decode([0, ACTION_TUNNEL, 0, 0]), None);
    }
}
