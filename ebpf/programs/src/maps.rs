//! The classifier's maps, shared with user space, and the small helpers
//! that read and update them.
//!
//! The statics' names are the map names user space looks up: they must
//! stay equal to the constants in [`sluice_common::map_names`] (the `#[map]`
//! macro takes the static's identifier as the ELF symbol name). The loader
//! looks every one of them up when it loads the object, so a mismatch fails
//! at load time, not silently.
//!
//! Grouped by concern: the classifier's own maps, the bypass tries, the
//! policy, endpoint mode, untag mode, the probe and lab programs. Nothing
//! here parses packets or decides verdicts.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, XskMap, lpm_trie::Key},
    programs::XdpContext,
};
use sluice_common::{
    BYPASS_MAX_ENTRIES, BypassEntry, Counter, DestEntry, DnsEntry, DnsKey, ExecFileOffsets,
    ExecGrant, FLOWS_MAX_ENTRIES, FRAG_TIMEOUT_NS, FRAGS_MAX_ENTRIES, FlowEntry, FragEntry,
    FragKey, Ipv4Key, Ipv6Key, LOCAL_MAX_ENTRIES, MAX_QUEUES, MacKey, PENDING_MAX_ENTRIES,
    POLICY_DNS_MAX_ENTRIES, POLICY_DST_MAX_ENTRIES, POLICY_MAX_TENANTS, POLICY_SRC_MAX_ENTRIES,
    POLICY_STATE_ENTRIES, PROCESSES_MAX_ENTRIES, ParseSummary, PolicyKeyV4, PolicyKeyV6,
    PolicyState, ProcessEntry, ProfileEntry, SockConfig, SockCounter, VLAN_MAX_ENTRIES, setting,
    state_index,
};

// ---------------------------------------------------------------------------
// The classifier's own maps: its counters, settings, the gateway's
// addresses, the sockets it redirects to, the fragments it follows.
// ---------------------------------------------------------------------------

/// Per-CPU counters indexed by [`Counter`] ([`sluice_common::map_names::STATS`]).
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// The classifier's settings ([`sluice_common::map_names::SETTINGS`]).
#[map]
static SETTINGS: Array<u64> = Array::with_max_entries(setting::COUNT, 0);

/// The gateway's own IPv4 addresses ([`sluice_common::map_names::LOCAL_V4`]).
#[map]
static LOCAL_V4: HashMap<Ipv4Key, u32> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);

/// The gateway's own IPv6 addresses ([`sluice_common::map_names::LOCAL_V6`]).
#[map]
static LOCAL_V6: HashMap<Ipv6Key, u32> = HashMap::with_max_entries(LOCAL_MAX_ENTRIES, 0);

/// `AF_XDP` sockets by RX queue ([`sluice_common::map_names::XSKS`]).
#[map]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

/// Fragmented datagrams in flight ([`sluice_common::map_names::FRAGS`]).
#[map]
static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(FRAGS_MAX_ENTRIES, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it is valid, aligned and only this CPU writes to it
        // while this program runs (XDP does not nest on one CPU).
        unsafe { *slot += 1 };
    }
}

/// A setting ([`sluice_common::setting`]), 0 if unset.
#[inline(always)]
pub(crate) fn setting(index: u32) -> u64 {
    SETTINGS.get(index).copied().unwrap_or(0)
}

/// Whether `dst` is one of the gateway's IPv4 addresses.
#[inline(always)]
pub(crate) fn is_local_v4(dst: &Ipv4Key) -> bool {
    LOCAL_V4.get_ptr(dst).is_some()
}

/// Whether `dst` is one of the gateway's IPv6 addresses.
#[inline(always)]
pub(crate) fn is_local_v6(dst: &Ipv6Key) -> bool {
    LOCAL_V6.get_ptr(dst).is_some()
}

/// Redirects the frame to the `AF_XDP` socket serving its RX queue.
///
/// `bpf_redirect_map` is called with `XDP_DROP` as its fallback action: if
/// no socket is registered for the queue the frame is dropped and
/// [`Counter::DropNoSocket`] is counted, so tunnelled traffic never reaches
/// the kernel's routing by accident.
#[inline(always)]
pub(crate) fn redirect_to_socket(ctx: &XdpContext) -> u32 {
    // aya compares the helper's return value to XDP_REDIRECT: `Ok` only if
    // the redirect was set up, `Err(fallback)` otherwise.
    match XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_DROP)) {
        Ok(action) => action,
        Err(_) => {
            count(Counter::DropNoSocket);
            xdp_action::XDP_DROP
        }
    }
}

/// How long a first fragment's verdict is followed.
#[inline(always)]
pub(crate) fn frag_timeout_ns() -> u64 {
    match setting(setting::FRAG_TIMEOUT_NS) {
        0 => FRAG_TIMEOUT_NS,
        t => t,
    }
}

/// The first fragment's verdict for `key`, if recorded.
#[inline(always)]
pub(crate) fn frag_entry(key: &FragKey) -> Option<FragEntry> {
    // SAFETY: a hash-map lookup; the value is copied out at once.
    unsafe { FRAGS.get(key).copied() }
}

/// Records a first fragment's verdict (replacing any older datagram's
/// under the same key).
#[inline(always)]
pub(crate) fn set_frag_entry(key: &FragKey, entry: &FragEntry) {
    // A full LRU map evicts its oldest entry; an error leaves the later
    // fragments to the rule for an unknown first fragment.
    let _ = FRAGS.insert(key, entry, 0);
}

// ---------------------------------------------------------------------------
// The bypass tries: the classifier's verdict before any policy is
// installed, and the socket hooks' destination bypass.
// ---------------------------------------------------------------------------

/// IPv4 bypass prefixes ([`sluice_common::map_names::BYPASS_V4`]).
/// `LpmTrie::with_max_entries` adds `BPF_F_NO_PREALLOC` itself (the kernel
/// requires it for LPM tries).
#[map]
static BYPASS_V4: LpmTrie<Ipv4Key, BypassEntry> = LpmTrie::with_max_entries(BYPASS_MAX_ENTRIES, 0);

/// IPv6 bypass prefixes ([`sluice_common::map_names::BYPASS_V6`]).
#[map]
static BYPASS_V6: LpmTrie<Ipv6Key, BypassEntry> = LpmTrie::with_max_entries(BYPASS_MAX_ENTRIES, 0);

/// Whether `dst` falls in an IPv4 bypass prefix (longest-prefix lookup of
/// the host address).
#[inline(always)]
pub(crate) fn is_bypass_v4(dst: &Ipv4Key) -> bool {
    BYPASS_V4.get(Key::new(32, *dst)).is_some()
}

/// Whether `dst` falls in an IPv6 bypass prefix.
#[inline(always)]
pub(crate) fn is_bypass_v6(dst: &Ipv6Key) -> bool {
    BYPASS_V6.get(Key::new(128, *dst)).is_some()
}

/// The bypass entry of an IPv4 destination, if any.
#[inline(always)]
pub(crate) fn bypass_v4(dst: &Ipv4Key) -> Option<&BypassEntry> {
    BYPASS_V4.get(Key::new(32, *dst))
}

/// The bypass entry of an IPv6 destination, if any.
#[inline(always)]
pub(crate) fn bypass_v6(dst: &Ipv6Key) -> Option<&BypassEntry> {
    BYPASS_V6.get(Key::new(128, *dst))
}

// ---------------------------------------------------------------------------
// The policy: the state word, the source and destination tries of
// both slots, the addresses answered for policy domains.
// ---------------------------------------------------------------------------

/// The live policy slot and runtime state
/// ([`sluice_common::map_names::POLICY_STATE`]): the state word, then one
/// down time per tunnel. Memory-mapped by user space, which stores each
/// word with one atomic store.
#[map]
static POLICY_STATE: Array<u64> = Array::with_max_entries(POLICY_STATE_ENTRIES, BPF_F_MMAPABLE);

/// Source prefix → profile ([`sluice_common::map_names::POLICY_SRC_V4`]).
#[map]
static POLICY_SRC_V4: LpmTrie<PolicyKeyV4, ProfileEntry> =
    LpmTrie::with_max_entries(POLICY_SRC_MAX_ENTRIES, 0);

/// Source prefix → profile, IPv6.
#[map]
static POLICY_SRC_V6: LpmTrie<PolicyKeyV6, ProfileEntry> =
    LpmTrie::with_max_entries(POLICY_SRC_MAX_ENTRIES, 0);

/// (profile, destination prefix) → resolved entry
/// ([`sluice_common::map_names::POLICY_DST_V4`]).
#[map]
static POLICY_DST_V4: LpmTrie<PolicyKeyV4, DestEntry> =
    LpmTrie::with_max_entries(POLICY_DST_MAX_ENTRIES, 0);

/// (profile, destination prefix) → resolved entry, IPv6.
#[map]
static POLICY_DST_V6: LpmTrie<PolicyKeyV6, DestEntry> =
    LpmTrie::with_max_entries(POLICY_DST_MAX_ENTRIES, 0);

/// Addresses answered for policy domains, per slot
/// ([`sluice_common::map_names::POLICY_DNS`]). Not preallocated: both
/// slots' capacity is reserved, a fraction is used.
#[map]
static POLICY_DNS: HashMap<DnsKey, DnsEntry> =
    HashMap::with_max_entries(POLICY_DNS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// The policy state: its word loaded once, with one 8-byte load (user
/// space stores it atomically, so the slot, flags and generation seen
/// belong together).
#[inline(always)]
pub(crate) fn policy_state() -> PolicyState {
    let w = match POLICY_STATE.get_ptr(state_index::WORD) {
        // SAFETY: a valid, aligned pointer into the array map's value; a
        // volatile read is one load of the whole word, never re-read.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    };
    PolicyState::from_word(w)
}

/// Since when tunnel `t` has been down (0 if unknown: the caller reads it
/// only when the state word says the tunnel is down).
#[inline(always)]
pub(crate) fn down_since(t: usize) -> u64 {
    let i = state_index::DOWN_SINCE + (t as u32 & (POLICY_MAX_TENANTS - 1));
    match POLICY_STATE.get_ptr(i) {
        // SAFETY: as in `policy_state`.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

/// The profile of an IPv4 source under `slot`.
#[inline(always)]
pub(crate) fn profile_v4(slot: u32, src: &Ipv4Key) -> Option<ProfileEntry> {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&slot.to_be_bytes());
    k[4..].copy_from_slice(src);
    POLICY_SRC_V4.get(Key::new(64, k)).copied()
}

/// The profile of an IPv6 source under `slot`.
#[inline(always)]
pub(crate) fn profile_v6(slot: u32, src: &Ipv6Key) -> Option<ProfileEntry> {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&slot.to_be_bytes());
    k[4..].copy_from_slice(src);
    POLICY_SRC_V6.get(Key::new(160, k)).copied()
}

/// The destination entry of an IPv4 address for profile id `profile`.
#[inline(always)]
pub(crate) fn dest_v4(profile: u32, dst: &Ipv4Key) -> Option<&'static DestEntry> {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&profile.to_be_bytes());
    k[4..].copy_from_slice(dst);
    POLICY_DST_V4.get(Key::new(64, k))
}

/// The destination entry of an IPv6 address for profile id `profile`.
#[inline(always)]
pub(crate) fn dest_v6(profile: u32, dst: &Ipv6Key) -> Option<&'static DestEntry> {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&profile.to_be_bytes());
    k[4..].copy_from_slice(dst);
    POLICY_DST_V6.get(Key::new(160, k))
}

/// The policy-domain entry of an address (IPv4 in the first four bytes)
/// under `slot`.
#[inline(always)]
pub(crate) fn dns_entry(slot: u32, addr: &[u8; 16]) -> Option<DnsEntry> {
    let k = sluice_common::dns_key(slot, addr);
    // SAFETY: a hash-map lookup; the value is copied out at once.
    unsafe { POLICY_DNS.get(&k).copied() }
}

// ---------------------------------------------------------------------------
// Endpoint mode: the socket hooks' and process tracepoints' maps.
// ---------------------------------------------------------------------------

/// The socket hooks' settings ([`sluice_common::map_names::SOCK_CONFIG`]).
#[map]
pub(crate) static SOCK_CONFIG: Array<SockConfig> = Array::with_max_entries(1, 0);

/// Bypassed processes by thread group id
/// ([`sluice_common::map_names::PROCESSES`]). A plain hash map, not LRU: an
/// entry must never vanish while its process runs.
#[map]
pub(crate) static PROCESSES: HashMap<u32, ProcessEntry> =
    HashMap::with_max_entries(PROCESSES_MAX_ENTRIES, 0);

/// Exec verdicts in flight ([`sluice_common::map_names::PENDING`]).
#[map]
pub(crate) static PENDING: HashMap<u32, ExecGrant> =
    HashMap::with_max_entries(PENDING_MAX_ENTRIES, 0);

/// Where the executed file's identity is in this kernel
/// ([`sluice_common::map_names::EXEC_FILE`], written by user space from
/// the kernel's BTF before the hooks are enabled).
#[map]
pub(crate) static EXEC_FILE: Array<ExecFileOffsets> = Array::with_max_entries(1, 0);

/// Connections by socket cookie ([`sluice_common::map_names::FLOWS`]).
#[map]
pub(crate) static FLOWS: LruHashMap<u64, FlowEntry> =
    LruHashMap::with_max_entries(FLOWS_MAX_ENTRIES, 0);

/// Counters of the socket hooks ([`sluice_common::map_names::SOCK_STATS`]).
#[map]
static SOCK_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SockCounter::COUNT, 0);

/// Adds one to the socket-hook `counter` on this CPU.
#[inline(always)]
pub(crate) fn count_sock(counter: SockCounter) {
    if let Some(slot) = SOCK_STATS.get_ptr_mut(counter as u32) {
        // SAFETY: as in `count`; socket hooks run with preemption (and
        // migration) disabled for the program's duration, so no other
        // program on this CPU writes the slot meanwhile.
        unsafe { *slot += 1 };
    }
}

// ---------------------------------------------------------------------------
// Untag mode: the hosts on a VLAN.
// ---------------------------------------------------------------------------

/// Untag mode: hosts' VLAN by MAC ([`sluice_common::map_names::VLAN_HOSTS`]).
#[map]
pub(crate) static VLAN_HOSTS: LruHashMap<MacKey, u32> =
    LruHashMap::with_max_entries(VLAN_MAX_ENTRIES, 0);

/// Untag mode: hosts' VLAN by address
/// ([`sluice_common::map_names::VLAN_ADDRS`]).
#[map]
pub(crate) static VLAN_ADDRS: LruHashMap<[u8; 16], u32> =
    LruHashMap::with_max_entries(VLAN_MAX_ENTRIES, 0);

// ---------------------------------------------------------------------------
// The parse probe and the lab programs.
// ---------------------------------------------------------------------------

/// The parse probe's output ([`sluice_common::map_names::PARSE_PROBE`]).
#[map]
pub(crate) static PARSE_PROBE: Array<ParseSummary> = Array::with_max_entries(1, 0);

/// The lab VLAN host's VLAN ([`sluice_common::map_names::LAB_VLAN`]).
#[map]
pub(crate) static LAB_VLAN: Array<u32> = Array::with_max_entries(1, 0);
