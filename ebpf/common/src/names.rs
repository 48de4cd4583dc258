//! The names user space looks up in the classifier object: its maps and
//! its programs. The classifier's map statics carry exactly these names
//! (the `#[map]` macro takes the static's identifier as the ELF symbol
//! name) and its program functions these names; the loader looks every one
//! up when it loads the object, so a mismatch fails at load time.

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
    /// Where the exec tracepoint finds the executed file's identity in
    /// the running kernel: `Array<ExecFileOffsets>`, one entry
    /// ([`crate::ExecFileOffsets`]).
    pub const EXEC_FILE: &str = "EXEC_FILE";
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

/// Name of the XDP classifier in the classifier object: it puts its
/// [`crate::XdpMeta`] in the frame's metadata area
/// (`bpf_xdp_adjust_meta`), in front of the data the `AF_XDP` socket's
/// descriptor points at.
pub const CLASSIFIER_PROGRAM: &str = "classify";
/// Name of the same classifier for kernels that refuse
/// `bpf_xdp_adjust_meta` to XDP programs: it puts the
/// [`crate::XdpMeta`] in front of the frame itself
/// (`bpf_xdp_adjust_head`), so the socket receives
/// `[meta: META_LEN bytes][Ethernet frame]` and the worker skips the
/// first [`crate::META_LEN`] bytes of each descriptor.
pub const CLASSIFIER_HEAD_PROGRAM: &str = "classify_head";
/// Name of the tc egress program that tags the kernel's frames to LAN
/// hosts on a VLAN again (untag mode, [`crate::VLAN_MODE_UNTAG`]).
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
/// The map of [`crate::ExecFileOffsets`] ([`map_names::EXEC_FILE`]).
pub const EXEC_FILE_MAP: &str = map_names::EXEC_FILE;
