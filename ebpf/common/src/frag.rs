//! Fragments follow their first fragment: the classifier records a first
//! fragment's verdict under its datagram ([`FragKey`] → [`FragEntry`], an
//! LRU map) and a later fragment found there within the timeout takes it
//! (ports are in the first fragment only).

/// Capacity of [`crate::map_names::FRAGS`]: fragmented datagrams tracked at
/// once (least recently used first out).
pub const FRAGS_MAX_ENTRIES: u32 = 16_384;
/// How long a first fragment's verdict is followed by default (Linux's
/// own IPv4 reassembly timeout, `ipfrag_time`).
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;

/// Key of [`crate::map_names::FRAGS`]: a fragmented datagram (RFC 791 / RFC
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

const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::align_of::<FragKey>() == 4);
plain!(FragKey {
    src,
    dst,
    id,
    proto,
    family,
    reserved
});

/// [`FragEntry::kind`]: the first fragment was passed to the kernel.
pub const FRAG_PASS: u8 = 1;
/// [`FragEntry::kind`]: the first fragment was redirected to a tunnel.
pub const FRAG_TUNNEL: u8 = 2;

/// Value of [`crate::map_names::FRAGS`]: the first fragment's verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragEntry {
    /// When the first fragment was classified (`CLOCK_MONOTONIC` ns).
    pub seen_ns: u64,
    /// The policy generation stamped in the metadata (tunnel).
    pub generation: u32,
    /// [`FRAG_PASS`] or [`FRAG_TUNNEL`].
    pub kind: u8,
    /// The verdict ([`crate::ACTION_TUNNEL`] + tunnel) when tunnelled.
    pub action: u8,
    /// The verdict counter ([`crate::Counter::index`]) the first fragment moved.
    pub counter: u8,
    /// Reserved, zero.
    pub reserved: u8,
}

const _: () = assert!(core::mem::size_of::<FragEntry>() == 16);
const _: () = assert!(core::mem::align_of::<FragEntry>() == 8);
plain!(FragEntry {
    seen_ns,
    generation,
    kind,
    action,
    counter,
    reserved
});

/// [`crate::ParseSummary::frag`]: not a fragment (or an atomic fragment).
pub const FRAG_NONE: u8 = 0;
/// [`crate::ParseSummary::frag`]: the first fragment (offset 0, more to come).
pub const FRAG_FIRST: u8 = 1;
/// [`crate::ParseSummary::frag`]: a fragment after the first.
pub const FRAG_LATER: u8 = 2;
