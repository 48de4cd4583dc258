//! The policy the classifier applies, compiled by user space into maps:
//! two slots (one live, one being written), source tries giving a profile
//! ([`ProfileEntry`]), destination tries per profile giving a verdict
//! ([`DestEntry`]), addresses answered for policy domains ([`DnsEntry`]),
//! and the one state word that says which slot is live ([`PolicyState`]).
//! Also the bypass tries ([`BypassEntry`]) that decide before any policy
//! is installed and that the socket hooks consult.

/// Capacity of each policy destination trie (both slots, all profiles).
pub const POLICY_DST_MAX_ENTRIES: u32 = 262_144;
/// Capacity of each policy source trie (both slots).
pub const POLICY_SRC_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`crate::map_names::POLICY_DNS`]: both slots' entries (allocated
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

/// Indices into [`crate::map_names::POLICY_STATE`].
pub mod state_index {
    /// The state word ([`crate::PolicyState::to_word`]).
    pub const WORD: u32 = 0;
    /// Tunnel `t` has been down since `CLOCK_MONOTONIC` ns at index
    /// `DOWN_SINCE + t` (meaningful only while its down bit is set).
    pub const DOWN_SINCE: u32 = 1;
}

// The classifier masks a tunnel index with `POLICY_MAX_TENANTS - 1`, and
// the state word holds one down bit per tunnel in 8 bits.
const _: () = assert!(POLICY_MAX_TENANTS.is_power_of_two() && POLICY_MAX_TENANTS <= 8);
// A profile's bit in a `DnsEntry` mask is `1 << index`, in a `u64`.
const _: () = assert!(POLICY_MAX_PROFILES <= u64::BITS);

/// Entries of [`crate::map_names::POLICY_STATE`].
pub const POLICY_STATE_ENTRIES: u32 = 1 + POLICY_MAX_TENANTS;

/// The live slot and runtime state, as one 64-bit word
/// ([`crate::map_names::POLICY_STATE`] index [`state_index::WORD`]). The
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

const _: () = assert!(core::mem::size_of::<ProfileEntry>() == 32);
const _: () = assert!(core::mem::align_of::<ProfileEntry>() == 8);
plain!(ProfileEntry {
    profile,
    flags,
    grace_ns,
    source_ports
});

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

const _: () = assert!(core::mem::size_of::<PortRule>() == 4);
const _: () = assert!(core::mem::align_of::<PortRule>() == 2);
plain!(PortRule {
    port,
    proto,
    action
});

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

const _: () = assert!(core::mem::size_of::<DestEntry>() == 36);
const _: () = assert!(core::mem::align_of::<DestEntry>() == 2);
plain!(DestEntry {
    action,
    priority,
    nports,
    reserved,
    ports
});

/// An address answered for a policy domain, under one slot
/// ([`crate::map_names::POLICY_DNS`], keyed by [`DnsKey`]): which profiles of
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

const _: () = assert!(core::mem::size_of::<DnsEntry>() == 24);
const _: () = assert!(core::mem::align_of::<DnsEntry>() == 8);
plain!(DnsEntry {
    bypass,
    private,
    private_action,
    reserved
});

/// Key of [`crate::map_names::POLICY_DNS`]: the slot (big-endian `u32`), then
/// the address (IPv4 in the first four bytes, the rest zero).
pub type DnsKey = [u8; 20];

/// The [`DnsKey`] of `addr` (16 bytes, IPv4 in the first four) under
/// `slot`.
// Always inlined: the classifier calls it on every frame, and an eBPF
// program pays a BPF-to-BPF call for anything left out of line.
#[allow(clippy::inline_always)]
#[inline(always)]
#[must_use]
pub fn dns_key(slot: u32, addr: &[u8; 16]) -> DnsKey {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&slot.to_be_bytes());
    k[4..].copy_from_slice(addr);
    k
}

// ---------------------------------------------------------------------------
// The bypass tries.
// ---------------------------------------------------------------------------

/// Capacity of each bypass LPM trie (IPv4 and IPv6 separately).
pub const BYPASS_MAX_ENTRIES: u32 = 131_072;
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

const _: () = assert!(core::mem::size_of::<BypassEntry>() == 8);
const _: () = assert!(core::mem::align_of::<BypassEntry>() == 4);
plain!(BypassEntry { source, reserved });

impl BypassEntry {
    /// A prefix listed in the configuration file.
    pub const SOURCE_CONFIG: u32 = 1;
    /// An address learnt from a DNS answer for a bypassed domain.
    pub const SOURCE_DNS: u32 = 2;
    /// The address of another VPN gateway.
    pub const SOURCE_VPN_GATEWAY: u32 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bypass_entry_has_no_padding() {
        assert_eq!(core::mem::size_of::<BypassEntry>(), 8);
    }
}
