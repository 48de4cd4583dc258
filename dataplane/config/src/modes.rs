//! Configuration values the gateway acts on: how the classifier attaches
//! ([`AttachMode`]), what it does with VLAN tags ([`VlanMode`]), and the
//! PAC file's proxy ([`ProxySpec`], defined with the PAC renderer in core).

pub use sluice_core::pac::ProxySpec;

/// Drivers on which `auto` means generic (skb) mode, from the lab
/// benchmark (`bench/RESULTS.md`): on veth, native XDP gains nothing for
/// the tunnel (`AF_XDP` is copy mode either way) and costs the bypass path
/// (each frame goes skb → `xdp_buff` → skb, and NAPI per batch), most for
/// small packets. Every other driver gets native mode, falling back to
/// generic if the driver refuses it.
const GENERIC_BY_DEFAULT: &[&str] = &["veth"];

impl AttachMode {
    /// What `auto` means for an interface driven by `driver` (see
    /// [`GENERIC_BY_DEFAULT`]); explicit modes are kept.
    #[must_use]
    pub fn for_driver(self, driver: Option<&str>) -> AttachMode {
        match (self, driver) {
            (AttachMode::Auto, Some(d)) if GENERIC_BY_DEFAULT.contains(&d) => AttachMode::Generic,
            (mode, _) => mode,
        }
    }
}

/// How to attach the classifier to an interface (configuration value:
/// `"auto"`, `"native"` or `"generic"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode if the driver supports it, generic otherwise;
    /// generic on drivers where the lab benchmark found it as fast or
    /// faster ([`AttachMode::for_driver`]).
    #[default]
    Auto,
    /// Native (driver, `XDP_FLAGS_DRV_MODE`) mode only.
    Native,
    /// Generic (skb, `XDP_FLAGS_SKB_MODE`) mode only: works on any
    /// interface, but after the kernel has allocated an skb.
    Generic,
}

/// What the classifier does with the 802.1Q tag of a frame it passes to
/// the kernel (configuration value `"kernel"` or `"untag"`). Frames it
/// tunnels keep their tags in every mode. The worker tags the replies
/// with the host's VLAN: in kernel mode the VLAN of the device the
/// kernel's neighbour entry is on (frames teach none); in untag mode the
/// tags of the host's frames, learnt only from the MAC the kernel has for
/// its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VlanMode {
    /// Passed as it came: the kernel routes a tagged frame only through a
    /// VLAN device (802.1Q) for its VLAN on the LAN interface, and
    /// discards it otherwise (nothing leaks; bypass then does not work
    /// for that VLAN).
    #[default]
    Kernel,
    /// For kernels without VLAN devices: a single 802.1Q tag is removed
    /// before the kernel sees the frame, the host's VLAN is noted, and a
    /// tc egress program on the LAN interface tags the kernel's frames to
    /// that host again. The VLANs then share the LAN interface's
    /// addresses (one segment as far as the kernel knows).
    Untag,
}
