//! VLANs. The classifier walks up to [`crate::MAX_VLAN_TAGS`] tags; in
//! untag mode ([`VLAN_MODE_UNTAG`], for kernels without VLAN devices) it
//! removes the single 802.1Q tag of a frame it passes to the kernel and
//! learns the host's VLAN, which a tc egress program puts back on the
//! kernel's frames to that host.

/// Capacity of [`crate::map_names::VLAN_HOSTS`] and
/// [`crate::map_names::VLAN_ADDRS`].
pub const VLAN_MAX_ENTRIES: u32 = 16_384;

/// VLAN mode (default): tagged frames the classifier passes reach the
/// kernel with their tag, which routes them only through a VLAN device
/// (802.1Q) for that VLAN on the LAN interface.
pub const VLAN_MODE_KERNEL: u64 = 0;
/// VLAN mode for kernels without VLAN devices: the classifier removes the
/// single 802.1Q tag of every frame it passes to the kernel and records the
/// host's VLAN ([`crate::map_names::VLAN_HOSTS`],
/// [`crate::map_names::VLAN_ADDRS`]); the egress program
/// ([`crate::VLAN_EGRESS_PROGRAM`]) tags the kernel's frames to those hosts
/// again.
pub const VLAN_MODE_UNTAG: u64 = 1;

/// Key of [`crate::map_names::VLAN_HOSTS`]: a MAC address, then two zero
/// bytes.
pub type MacKey = [u8; 8];
