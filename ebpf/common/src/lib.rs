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
    /// The live policy slot and the runtime state the verdicts depend on,
    /// one entry: `Array<PolicyState>`.
    pub const POLICY_STATE: &str = "POLICY_STATE";
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

/// The live slot and runtime state ([`map_names::POLICY_STATE`]). The
/// classifier reads it once per frame, then uses only that slot's entries:
/// a frame is never classified by a mix of two policies.
#[repr(C)]
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
    /// Per tunnel: `CLOCK_MONOTONIC` ns since it has been down, 0 while up.
    pub down_since_ns: [u64; POLICY_MAX_TENANTS as usize],
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
}

impl Counter {
    /// Number of counters (the statistics array's length).
    pub const COUNT: u32 = 17;

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
    // SAFETY: `#[repr(C)]`, four `u32`s then eight `u64`s: 80 bytes, no
    // padding.
    unsafe impl aya::Pod for super::PolicyState {}
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
        assert_eq!(core::mem::size_of::<PolicyState>(), 80);
        assert_eq!(core::mem::size_of::<ProfileEntry>(), 32);
        assert_eq!(core::mem::size_of::<DestEntry>(), 36);
        assert_eq!(core::mem::size_of::<DnsEntry>(), 24);
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
