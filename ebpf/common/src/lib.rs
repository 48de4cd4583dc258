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
    /// Processes whose sockets bypass the tunnel (endpoint mode):
    /// `HashMap<u32 tgid, ProcessEntry>`.
    pub const PROCESSES: &str = "PROCESSES";
    /// The socket hooks' settings, one entry: `Array<SockConfig>`.
    pub const SOCK_CONFIG: &str = "SOCK_CONFIG";
    /// Connections seen by the connect hooks, by socket cookie:
    /// `LruHashMap<u64, FlowEntry>`.
    pub const FLOWS: &str = "FLOWS";
    /// Per-CPU `u64` counters of the socket hooks, indexed by
    /// [`crate::SockCounter`].
    pub const SOCK_STATS: &str = "SOCK_STATS";
    /// Verdicts for `execve`s in flight, by thread group id, applied by
    /// the exec tracepoint only if the exec succeeds:
    /// `HashMap<u32, ExecGrant>`.
    pub const PENDING: &str = "PENDING";
    /// The live policy slot and the runtime state the verdicts depend on:
    /// `Array<u64>`, memory-mapped by user space (`BPF_F_MMAPABLE`), one
    /// state word ([`crate::PolicyState`]) then one word per tunnel
    /// ([`crate::state_index`]).
    pub const POLICY_STATE: &str = "POLICY_STATE";
    /// The classifier's settings: `Array<u64>` indexed by
    /// [`crate::setting`].
    pub const SETTINGS: &str = "SETTINGS";
    /// Fragmented datagrams in flight and their first fragment's verdict:
    /// `LruHashMap<FragKey, FragEntry>`.
    pub const FRAGS: &str = "FRAGS";
    /// Untag mode: LAN hosts' VLAN by MAC address, learnt from the frames
    /// the classifier untags: `LruHashMap<MacKey, u32>` (the TCI).
    pub const VLAN_HOSTS: &str = "VLAN_HOSTS";
    /// Untag mode: LAN hosts' VLAN by IP address (IPv4 mapped):
    /// `LruHashMap<[u8; 16], u32>` (the TCI).
    pub const VLAN_ADDRS: &str = "VLAN_ADDRS";
    /// The parse probe's last summary (differential fuzzing):
    /// `Array<ParseSummary>`, one entry.
    pub const PARSE_PROBE: &str = "PARSE_PROBE";
    /// The lab VLAN host's VLAN id (lab programs only): `Array<u32>`.
    pub const LAB_VLAN: &str = "LAB_VLAN";
    /// Source prefix → app profile, both slots:
    /// `LpmTrie<PolicyKeyV4, ProfileEntry>` (key: slot, then address).
    pub const POLICY_SRC_V4: &str = "POLICY_SRC_V4";
    /// The same for IPv6: `LpmTrie<PolicyKeyV6, ProfileEntry>`.
    pub const POLICY_SRC_V6: &str = "POLICY_SRC_V6";
    /// Destination prefix → resolved entry, per profile of both slots:
    /// `LpmTrie<PolicyKeyV4, DestEntry>` (key: profile id, then address).
    pub const POLICY_DST_V4: &str = "POLICY_DST_V4";
    /// The same for IPv6: `LpmTrie<PolicyKeyV6, DestEntry>`.
    pub const POLICY_DST_V6: &str = "POLICY_DST_V6";
    /// Addresses answered for policy domains, per slot:
    /// `HashMap<DnsKey, DnsEntry>`.
    pub const POLICY_DNS: &str = "POLICY_DNS";
}

/// Names of the endpoint-mode programs in the classifier object.
pub mod sock_programs {
    /// `cgroup/sock_create`: marks the sockets of bypassed processes.
    pub const SOCK_CREATE: &str = "sock_create";
    /// `cgroup/sock_release`: forgets a socket's flow entry.
    pub const SOCK_RELEASE: &str = "sock_release";
    /// `cgroup/connect4`: destination bypass and the flow table, IPv4.
    pub const CONNECT4: &str = "connect4";
    /// `cgroup/connect6`: the same for IPv6.
    pub const CONNECT6: &str = "connect6";
    /// `cgroup/sendmsg4`: refuses unconnected sends of a marked socket
    /// to a destination that must be tunnelled.
    pub const SENDMSG4: &str = "sendmsg4";
    /// `cgroup/sendmsg6`: the same for IPv6.
    pub const SENDMSG6: &str = "sendmsg6";
    /// Tracepoint `sched/sched_process_exec`: a successful `execve`
    /// applies its pending verdict (none: the process is tunnelled).
    pub const PROCESS_EXEC: &str = "process_exec";
    /// Tracepoint `sched/sched_process_fork`: a child inherits its
    /// parent's entry in [`super::map_names::PROCESSES`].
    pub const PROCESS_FORK: &str = "process_fork";
    /// Tracepoint `sched/sched_process_exit`: a task's entry goes.
    pub const PROCESS_EXIT: &str = "process_exit";
}

/// Name of the XDP program in the classifier object.
pub const CLASSIFIER_PROGRAM: &str = "classify";
/// Name of the tc egress program that tags the kernel's frames to LAN
/// hosts on a VLAN again (untag mode, [`VLAN_MODE_UNTAG`]).
pub const VLAN_EGRESS_PROGRAM: &str = "vlan_egress";
/// Name of the XDP program that runs the classifier's header walk only
/// and stores its summary in [`map_names::PARSE_PROBE`] (the differential
/// fuzz target; never attached).
pub const PARSE_PROBE_PROGRAM: &str = "parse_probe";
/// Lab only: a tc egress program that tags every frame with the VLAN in
/// [`map_names::LAB_VLAN`] (a LAN host that lives on a VLAN, on a kernel
/// without 802.1Q devices).
pub const LAB_VLAN_PUSH_PROGRAM: &str = "lab_vlan_push";
/// Lab only: the matching tc ingress program: frames tagged with that
/// VLAN are untagged and accepted, every other frame is dropped.
pub const LAB_VLAN_POP_PROGRAM: &str = "lab_vlan_pop";
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

/// Capacity of [`map_names::FRAGS`]: fragmented datagrams tracked at
/// once (least recently used first out).
pub const FRAGS_MAX_ENTRIES: u32 = 16_384;
/// How long a first fragment's verdict is followed by default (Linux's
/// own IPv4 reassembly timeout, `ipfrag_time`).
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;
/// Capacity of [`map_names::VLAN_HOSTS`] and [`map_names::VLAN_ADDRS`].
pub const VLAN_MAX_ENTRIES: u32 = 16_384;

/// Capacity of [`map_names::PROCESSES`].
pub const PROCESSES_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`map_names::FLOWS`] (least recently used entries go first).
pub const FLOWS_MAX_ENTRIES: u32 = 16_384;
/// Offsets of `child_pid` in `sched_process_fork`'s record that the fork
/// hook can read (the verifier wants a constant offset into the context):
/// 20 since the comm fields became `__data_loc` strings, 44 before.
pub const FORK_CHILD_PID_OFFSETS: [u32; 2] = [20, 44];
/// Offset of `old_pid` in `sched_process_exec`'s record (after the
/// `__data_loc` file name and `pid`), checked against the format at start.
pub const EXEC_OLD_PID_OFFSET: u32 = 16;
/// How long a pending exec verdict stays valid: the exec it was written
/// for completes within microseconds of sluice's answer; an older one
/// belongs to an exec that failed.
pub const GRANT_WINDOW_NS: u64 = 100_000_000;
/// Capacity of [`map_names::PENDING`].
pub const PENDING_MAX_ENTRIES: u32 = 8_192;

/// Capacity of each policy destination trie (both slots, all profiles).
pub const POLICY_DST_MAX_ENTRIES: u32 = 262_144;
/// Capacity of each policy source trie (both slots).
pub const POLICY_SRC_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`map_names::POLICY_DNS`]: both slots' entries (allocated
/// as used).
pub const POLICY_DNS_MAX_ENTRIES: u32 = 262_144;
/// Port-specific entries one destination entry holds.
pub const POLICY_PORT_RULES: usize = 8;
/// Source-port bypasses one profile holds.
pub const POLICY_SOURCE_PORTS: usize = 8;
/// App profiles per slot (the domain masks are `u64`).
pub const POLICY_MAX_PROFILES: u32 = 64;
/// Tunnels: the internet tenant and up to seven private-access tenants.
pub const POLICY_MAX_TENANTS: u32 = 8;
/// A verdict: direct (kernel routing, out of the WAN).
pub const ACTION_DIRECT: u8 = 0;
/// A verdict: tunnel `t` is `ACTION_TUNNEL + t` (0: the internet tenant).
pub const ACTION_TUNNEL: u8 = 1;
/// [`ProfileEntry::flags`]: the profile fails open.
pub const PROFILE_FAIL_OPEN: u32 = 1;
/// First byte of the 4-byte metadata the classifier puts in front of a
/// frame it redirects: `[META_MAGIC, action, generation (u16, LE)]`.
pub const META_MAGIC: u8 = 0xa5;
/// Length of that metadata.
pub const META_LEN: usize = 4;

/// The metadata the classifier puts in front of a frame it redirects to
/// an `AF_XDP` socket, and the worker reads back: one definition of the
/// contract for both sides ([`XdpMeta::encode`] in the classifier,
/// [`XdpMeta::decode`] in the worker and the tests).
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

const _: () = assert!(core::mem::size_of::<XdpMeta>() == META_LEN);
const _: () = assert!(core::mem::align_of::<XdpMeta>() == 1);

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

/// Key data of the policy tries, IPv4: a 32-bit big-endian tag (the slot
/// for sources, the profile id for destinations) then the address; the
/// prefix length counts the tag's 32 bits.
pub type PolicyKeyV4 = [u8; 8];
/// The same for IPv6.
pub type PolicyKeyV6 = [u8; 20];

/// The id of profile `index` in policy slot `slot` (the destination
/// tries' tag).
pub const fn profile_id(slot: u32, index: u32) -> u32 {
    (slot << 16) | index
}

/// Indices into [`map_names::POLICY_STATE`].
pub mod state_index {
    /// The state word ([`crate::PolicyState::to_word`]).
    pub const WORD: u32 = 0;
    /// Tunnel `t` has been down since `CLOCK_MONOTONIC` ns at index
    /// `DOWN_SINCE + t` (meaningful only while its down bit is set).
    pub const DOWN_SINCE: u32 = 1;
}

/// Entries of [`map_names::POLICY_STATE`].
pub const POLICY_STATE_ENTRIES: u32 = 1 + POLICY_MAX_TENANTS;

/// The live slot and runtime state, as one 64-bit word
/// ([`map_names::POLICY_STATE`] index [`state_index::WORD`]). The
/// classifier loads the word once per frame (one 8-byte load) and then
/// uses only that slot's entries; user space stores it with one atomic
/// store through a shared mapping: a frame never sees half of a change
/// (the slot of one policy with the flags of another).
///
/// Layout: bit 0 the slot, bit 1 installed, bit 2 internet direct, bits
/// 8..16 the tunnels that are down (bit `8 + t`), bits 32..64 the
/// generation. A tunnel's down time lives in its own word: user space
/// writes it before setting the down bit, and a reader that sees the bit
/// with an older (or zero) time sees a longer outage, so a torn read only
/// ever shortens the captive-portal grace (fails closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PolicyState {
    /// 0 or 1: the slot whose entries are live.
    pub slot: u32,
    /// The policy generation (reported, and stamped in the metadata).
    pub generation: u32,
    /// 1: the forwarding profile sends internet traffic direct in the
    /// current network state.
    pub internet_direct: u32,
    /// 1 once a policy is installed; until then everything is tunnelled.
    pub installed: u32,
    /// Bit `t`: tunnel `t` is down.
    pub down: u32,
}

impl PolicyState {
    const SLOT: u64 = 1;
    const INSTALLED: u64 = 1 << 1;
    const INTERNET_DIRECT: u64 = 1 << 2;
    const DOWN_SHIFT: u32 = 8;
    const GENERATION_SHIFT: u32 = 32;

    /// The state a word holds.
    #[inline]
    #[must_use]
    pub const fn from_word(w: u64) -> Self {
        Self {
            slot: (w & Self::SLOT) as u32,
            generation: (w >> Self::GENERATION_SHIFT) as u32,
            internet_direct: ((w & Self::INTERNET_DIRECT) != 0) as u32,
            installed: ((w & Self::INSTALLED) != 0) as u32,
            down: ((w >> Self::DOWN_SHIFT) & 0xff) as u32,
        }
    }

    /// The word of this state.
    #[inline]
    #[must_use]
    pub const fn to_word(&self) -> u64 {
        (self.slot as u64 & Self::SLOT)
            | if self.installed != 0 {
                Self::INSTALLED
            } else {
                0
            }
            | if self.internet_direct != 0 {
                Self::INTERNET_DIRECT
            } else {
                0
            }
            | ((self.down as u64 & 0xff) << Self::DOWN_SHIFT)
            | ((self.generation as u64) << Self::GENERATION_SHIFT)
    }

    /// Whether tunnel `t` is down.
    #[inline]
    #[must_use]
    pub const fn is_down(&self, t: usize) -> bool {
        t < 8 && self.down & (1 << t) != 0
    }
}

/// Indices into [`map_names::SETTINGS`].
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

/// VLAN mode (default): tagged frames the classifier passes reach the
/// kernel with their tag, which routes them only through a VLAN device
/// (802.1Q) for that VLAN on the LAN interface.
pub const VLAN_MODE_KERNEL: u64 = 0;
/// VLAN mode for kernels without VLAN devices: the classifier removes the
/// single 802.1Q tag of every frame it passes to the kernel and records the
/// host's VLAN ([`map_names::VLAN_HOSTS`], [`map_names::VLAN_ADDRS`]); the
/// egress program ([`VLAN_EGRESS_PROGRAM`]) tags the kernel's frames to
/// those hosts again.
pub const VLAN_MODE_UNTAG: u64 = 1;

/// Key of [`map_names::FRAGS`]: a fragmented datagram (RFC 791 / RFC
/// 8200: source, destination, identification, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragKey {
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// Identification (IPv4: 16 bits; IPv6: the fragment header's 32).
    pub id: u32,
    /// The upper-layer protocol.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Reserved, zero.
    pub reserved: [u8; 2],
}

/// [`FragEntry::kind`]: the first fragment was passed to the kernel.
pub const FRAG_PASS: u8 = 1;
/// [`FragEntry::kind`]: the first fragment was redirected to a tunnel.
pub const FRAG_TUNNEL: u8 = 2;

/// Value of [`map_names::FRAGS`]: the first fragment's verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragEntry {
    /// When the first fragment was classified (`CLOCK_MONOTONIC` ns).
    pub seen_ns: u64,
    /// The policy generation stamped in the metadata (tunnel).
    pub generation: u32,
    /// [`FRAG_PASS`] or [`FRAG_TUNNEL`].
    pub kind: u8,
    /// The verdict ([`ACTION_TUNNEL`] + tunnel) when tunnelled.
    pub action: u8,
    /// The verdict counter ([`Counter::index`]) the first fragment moved.
    pub counter: u8,
    /// Reserved, zero.
    pub reserved: u8,
}

/// Key of [`map_names::VLAN_HOSTS`]: a MAC address, then two zero bytes.
pub type MacKey = [u8; 8];

/// [`ParseSummary::frag`]: not a fragment (or an atomic fragment).
pub const FRAG_NONE: u8 = 0;
/// [`ParseSummary::frag`]: the first fragment (offset 0, more to come).
pub const FRAG_FIRST: u8 = 1;
/// [`ParseSummary::frag`]: a fragment after the first.
pub const FRAG_LATER: u8 = 2;

/// What the classifier's header walk made of a frame, as the parse probe
/// ([`PARSE_PROBE_PROGRAM`]) stores it: the differential fuzz target
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
    /// [`FRAG_NONE`], [`FRAG_FIRST`] or [`FRAG_LATER`].
    pub frag: u8,
    /// VLAN tags walked (0 to [`MAX_VLAN_TAGS`]).
    pub vlan_tags: u8,
    /// The outer tag's TCI (0 without tags).
    pub vlan_tci: u16,
    /// The fragment identification (0 unless a fragment).
    pub frag_id: u32,
}

/// A source node's value: the profile and its runtime settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProfileEntry {
    /// [`profile_id`] of the profile.
    pub profile: u32,
    /// [`PROFILE_FAIL_OPEN`].
    pub flags: u32,
    /// Captive-portal grace in ns (fail-closed profiles).
    pub grace_ns: u64,
    /// Source-port bypasses, host order, 0 for unused slots.
    pub source_ports: [u16; POLICY_SOURCE_PORTS],
}

/// A port-specific entry of a [`DestEntry`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortRule {
    /// Destination port, host order (never 0 in a used slot).
    pub port: u16,
    /// Protocol, 0 for any.
    pub proto: u8,
    /// The verdict.
    pub action: u8,
}

/// A destination node's value: its verdict, resolved at compile time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DestEntry {
    /// The verdict when no port rule matches.
    pub action: u8,
    /// 1: a VPN gateway or private segment; `action` applies whatever the
    /// ports.
    pub priority: u8,
    /// Used slots of `ports`, best first.
    pub nports: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// Port-specific entries, best first.
    pub ports: [PortRule; POLICY_PORT_RULES],
}

/// An address answered for a policy domain, under one slot
/// ([`map_names::POLICY_DNS`], keyed by [`DnsKey`]): which profiles of
/// that slot bypass it, which may reach it through the private-access
/// tenant, and that tenant's verdict.
///
/// One entry per slot, not one holding both: a swap writes the idle
/// slot's entries as keys of their own, so it never replaces an element
/// that a packet under the live slot may be reading (a hash map recycles a
/// replaced element at once, and a reader holding it would see another
/// address's bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsEntry {
    /// Bit `i`: profile `i` of the slot bypasses the address.
    pub bypass: u64,
    /// Bit `i`: profile `i` of the slot tunnels it to `private_action`.
    pub private: u64,
    /// The private tenant's verdict.
    pub private_action: u8,
    /// Reserved, zero.
    pub reserved: [u8; 7],
}

/// Key of [`map_names::POLICY_DNS`]: the slot (big-endian `u32`), then
/// the address (IPv4 in the first four bytes, the rest zero).
pub type DnsKey = [u8; 20];

/// The [`DnsKey`] of `addr` (16 bytes, IPv4 in the first four) under
/// `slot`.
#[inline(always)]
#[must_use]
pub fn dns_key(slot: u32, addr: &[u8; 16]) -> DnsKey {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&slot.to_be_bytes());
    k[4..].copy_from_slice(addr);
    k
}

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

/// Settings of the socket hooks (endpoint mode), the single entry of
/// [`map_names::SOCK_CONFIG`]. While `enabled` is 0 every hook does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockConfig {
    /// Only sockets of this network namespace are looked at (the cookie of
    /// the namespace sluice runs in: its host's own traffic).
    pub netns_cookie: u64,
    /// The firewall mark that routes a socket's packets outside the
    /// tunnel (the endpoint's policy rules look it up in the main table).
    pub mark: u32,
    /// 1 when the hooks act, 0 otherwise.
    pub enabled: u32,
    /// Where `child_pid` is in `sched_process_fork`'s record, one of
    /// [`FORK_CHILD_PID_OFFSETS`] (read from the tracepoint's format).
    pub fork_child_pid_offset: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Value of a [`map_names::PROCESSES`] entry: why the process bypasses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProcessEntry {
    /// [`FlowVerdict::BypassProcess`] or [`FlowVerdict::BypassSelf`], as
    /// `u32`.
    pub reason: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// A verdict for an `execve` in flight ([`map_names::PENDING`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExecGrant {
    /// 1: the new program bypasses; 0: it is tunnelled.
    pub bypass: u32,
    /// The device of the file the verdict is for, as the kernel numbers
    /// it (`MKDEV(major, minor)` of its superblock's `s_dev`: `major << 20
    /// | minor`). The exec tracepoint applies the verdict only to a process
    /// whose executable is that file ([`ExecFileOffsets`]).
    pub dev: u32,
    /// `CLOCK_MONOTONIC` when written, nanoseconds (`bpf_ktime_get_ns`'s
    /// clock).
    pub written_ns: u64,
    /// The inode number of that file.
    pub ino: u64,
}

/// What the connect hook decided for a connection, stored in
/// [`FlowEntry::verdict`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowVerdict {
    /// Through the tunnel.
    Tunnel = 0,
    /// Direct: the process is listed.
    BypassProcess = 1,
    /// Direct: sluice's own socket (its tunnel to the edge).
    BypassSelf = 2,
    /// Direct: the destination is in a configured bypass prefix.
    BypassPrefix = 3,
    /// Direct: the destination was answered for a bypassed domain.
    BypassDomain = 4,
    /// Direct: the destination is another VPN gateway.
    BypassVpnGateway = 5,
}

impl FlowVerdict {
    /// The verdict stored as `v`, if it is one.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Tunnel,
            1 => Self::BypassProcess,
            2 => Self::BypassSelf,
            3 => Self::BypassPrefix,
            4 => Self::BypassDomain,
            5 => Self::BypassVpnGateway,
            _ => return None,
        })
    }

    /// The verdict for a destination found in the bypass trie with entry
    /// source `source` (`BypassEntry::SOURCE_*`).
    pub const fn for_source(source: u32) -> Self {
        match source {
            BypassEntry::SOURCE_DNS => Self::BypassDomain,
            BypassEntry::SOURCE_VPN_GATEWAY => Self::BypassVpnGateway,
            _ => Self::BypassPrefix,
        }
    }

    /// Short name for tables and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tunnel => "tunnel",
            Self::BypassProcess => "bypass:process",
            Self::BypassSelf => "bypass:sluice",
            Self::BypassPrefix => "bypass:prefix",
            Self::BypassDomain => "bypass:domain",
            Self::BypassVpnGateway => "bypass:vpn-gateway",
        }
    }
}

/// One connection in [`map_names::FLOWS`], written by the connect hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    /// Destination address, network byte order (IPv4 in the first four
    /// bytes).
    pub dst: [u8; 16],
    /// The connecting process (thread group id).
    pub tgid: u32,
    /// Its user id.
    pub uid: u32,
    /// A [`FlowVerdict`] as `u32`.
    pub verdict: u32,
    /// Destination port, host byte order.
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// The task's command name at connect time (NUL-padded).
    pub comm: [u8; 16],
}

/// Indices into [`map_names::SOCK_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockCounter {
    /// A socket of a listed process was created (and marked).
    SocketMarked = 0,
    /// A connect went direct because of its process.
    ConnectBypassProcess = 1,
    /// A connect went direct because of its destination.
    ConnectBypassDestination = 2,
    /// A connect went through the tunnel.
    ConnectTunnel = 3,
    /// A child inherited its parent's bypass.
    ForkInherited = 4,
    /// A child could not inherit (the process map is full): its sockets
    /// are tunnelled, the safe direction.
    ForkMapFull = 5,
    /// Setting a socket's mark failed: the connect was refused.
    MarkFailed = 6,
    /// A successful exec applied a bypass verdict.
    ExecBypass = 7,
    /// A successful exec left its process tunnelled (no verdict, a stale
    /// one, or "tunnel").
    ExecTunnel = 8,
    /// An unconnected send of a marked socket to a destination that must
    /// be tunnelled was refused.
    SendRefused = 9,
}

impl SockCounter {
    /// Number of counters.
    pub const COUNT: u32 = 10;
    /// All of them, in index order.
    pub const ALL: [SockCounter; Self::COUNT as usize] = [
        SockCounter::SocketMarked,
        SockCounter::ConnectBypassProcess,
        SockCounter::ConnectBypassDestination,
        SockCounter::ConnectTunnel,
        SockCounter::ForkInherited,
        SockCounter::ForkMapFull,
        SockCounter::MarkFailed,
        SockCounter::ExecBypass,
        SockCounter::ExecTunnel,
        SockCounter::SendRefused,
    ];

    /// Stable metric label.
    pub const fn name(self) -> &'static str {
        match self {
            SockCounter::SocketMarked => "socket_marked",
            SockCounter::ConnectBypassProcess => "connect_bypass_process",
            SockCounter::ConnectBypassDestination => "connect_bypass_destination",
            SockCounter::ConnectTunnel => "connect_tunnel",
            SockCounter::ForkInherited => "fork_inherited",
            SockCounter::ForkMapFull => "fork_map_full",
            SockCounter::MarkFailed => "mark_failed",
            SockCounter::ExecBypass => "exec_bypass",
            SockCounter::ExecTunnel => "exec_tunnel",
            SockCounter::SendRefused => "send_refused",
        }
    }
}

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

// The kernel/user layouts, checked when this crate compiles (for the BPF
// target and the host alike), not only by its tests: a field added on one
// side breaks the build.
const _: () = assert!(core::mem::size_of::<SockConfig>() == 24);
const _: () = assert!(core::mem::size_of::<ProcessEntry>() == 8);
const _: () = assert!(core::mem::size_of::<ExecGrant>() == 24);
const _: () = assert!(core::mem::size_of::<ExecFileOffsets>() == 32);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 48);
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::size_of::<FragEntry>() == 16);
const _: () = assert!(core::mem::size_of::<ParseSummary>() == 56);
const _: () = assert!(core::mem::size_of::<ProfileEntry>() == 32);
const _: () = assert!(core::mem::size_of::<DestEntry>() == 36);
const _: () = assert!(core::mem::size_of::<DnsEntry>() == 24);
const _: () = assert!(core::mem::size_of::<BypassEntry>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `BypassEntry` is `#[repr(C)]`, made of two `u32`s, has no
    // padding and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::BypassEntry {}
    // SAFETY: `#[repr(C)]`, `u64` then four `u32`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::SockConfig {}
    // SAFETY: `#[repr(C)]`, two `u32`s.
    unsafe impl aya::Pod for super::ProcessEntry {}
    // SAFETY: `#[repr(C)]`, two `u32`s then two `u64`s: 24 bytes, no
    // padding.
    unsafe impl aya::Pod for super::ExecGrant {}
    // SAFETY: `#[repr(C)]`, 16 + 4 + 4 + 4 + 2 + 1 + 1 + 16 = 48 bytes,
    // every field aligned at its natural offset, no padding; any bits valid.
    unsafe impl aya::Pod for super::FlowEntry {}
    // SAFETY: `#[repr(C)]`, 16 + 16 + 4 + 1 + 1 + 2 = 40 bytes, no
    // padding; any bits valid.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: `#[repr(C)]`, a `u64`, a `u32`, four `u8`s: 16 bytes.
    unsafe impl aya::Pod for super::FragEntry {}
    // SAFETY: `#[repr(C)]`, 4 + 4 + 16 + 16 + 4 + 2 + 2 + 1 + 1 + 2 + 4
    // = 56 bytes, every field at its natural alignment, no padding.
    unsafe impl aya::Pod for super::ParseSummary {}
    // SAFETY: `#[repr(C)]`, two `u32`s, a `u64`, eight `u16`s: 32 bytes.
    unsafe impl aya::Pod for super::ProfileEntry {}
    // SAFETY: `#[repr(C)]`, four `u8`s then eight 4-byte rules of `u16`,
    // `u8`, `u8`: 36 bytes, alignment 2, no padding.
    unsafe impl aya::Pod for super::DestEntry {}
    // SAFETY: `#[repr(C)]`, two `u64`s then eight `u8`s: 24 bytes.
    unsafe impl aya::Pod for super::DnsEntry {}
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
    fn shared_structs_have_no_padding() {
        assert_eq!(core::mem::size_of::<SockConfig>(), 24);
        assert_eq!(core::mem::size_of::<ProcessEntry>(), 8);
        assert_eq!(core::mem::size_of::<ExecGrant>(), 24);
        assert_eq!(core::mem::size_of::<ExecFileOffsets>(), 32);
        assert_eq!(core::mem::size_of::<FlowEntry>(), 48);
        assert_eq!(core::mem::size_of::<FragKey>(), 40);
        assert_eq!(core::mem::size_of::<FragEntry>(), 16);
        assert_eq!(core::mem::size_of::<ParseSummary>(), 56);
        assert_eq!(core::mem::size_of::<ProfileEntry>(), 32);
        assert_eq!(core::mem::size_of::<DestEntry>(), 36);
        assert_eq!(core::mem::size_of::<DnsEntry>(), 24);
    }

    #[test]
    fn state_words_round_trip() {
        let s = PolicyState {
            slot: 1,
            generation: 0xdead_beef,
            internet_direct: 1,
            installed: 1,
            down: 0b1000_0001,
        };
        assert_eq!(PolicyState::from_word(s.to_word()), s);
        assert!(s.is_down(0) && s.is_down(7) && !s.is_down(1) && !s.is_down(8));
        assert_eq!(PolicyState::default().to_word(), 0);
        let other = PolicyState {
            generation: 7,
            ..PolicyState::default()
        };
        assert_eq!(PolicyState::from_word(other.to_word()), other);
    }

    #[test]
    fn only_verdict_counters_are_verdicts() {
        let extra = Counter::ALL.iter().filter(|c| !c.is_verdict()).count();
        assert_eq!(extra, 5);
        assert!(Counter::Tunnel.is_verdict() && Counter::DropUntag.is_verdict());
    }

    #[test]
    fn flow_verdicts_round_trip() {
        for v in 0..8 {
            if let Some(f) = FlowVerdict::from_u32(v) {
                assert_eq!(f as u32, v);
            }
        }
        assert_eq!(
            FlowVerdict::for_source(BypassEntry::SOURCE_DNS),
            FlowVerdict::BypassDomain
        );
    }

    #[test]
    fn bypass_entry_has_no_padding() {
        assert_eq!(core::mem::size_of::<BypassEntry>(), 8);
    }
}

// ---------------------------------------------------------------------------
// Endpoint mode: the identity of an executed file (issue 14).
// ---------------------------------------------------------------------------

/// Where the exec tracepoint finds the identity of the file a process now
/// runs, in the running kernel's layout (byte offsets read from its BTF by
/// user space; the programs are built without CO-RE relocations): it
/// follows `current->mm->exe_file->f_inode` to `i_ino` and
/// `i_sb->s_dev`. An exec verdict ([`ExecGrant`]) is applied only if they
/// are the verdict's `ino` and `dev`: a verdict for a file whose exec
/// failed cannot reach another file the same process then executes.
/// All zero (never written): no verdict applies, every exec is tunnelled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExecFileOffsets {
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// 1 once written.
    pub enabled: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// The map of [`ExecFileOffsets`], one entry: `Array<ExecFileOffsets>`.
pub const EXEC_FILE_MAP: &str = "EXEC_FILE";

// SAFETY: `#[repr(C)]`, eight `u32`s: 32 bytes, no padding, any bits valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExecFileOffsets {}
