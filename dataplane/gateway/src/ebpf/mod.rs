//! The embedded XDP classifier: loading it, filling its maps, attaching it,
//! reading its counters and running it on test frames.
//!
//! The kernel side lives in `ebpf/programs`; the map names, key/value
//! layouts and counter indices both sides agree on are in
//! [`sluice_common`]. This module is the only user-space code that talks to
//! the classifier's maps.
//!
//! Map updates never leave a window with an empty table: replacing a set of
//! entries inserts the new ones first and removes the stale ones after.
//!
//! This module does not open `AF_XDP` sockets (see [`crate::sys`]) and does
//! not decide which prefixes are bypassed (the config and the gateway do).
use std::{
    collections::HashSet,
    hash::Hash,
    net::IpAddr,
    os::fd::AsFd as _,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, XskMap, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, TestRun as _, TestRunOptions,
        TracePoint, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use sluice_common::{
    BypassEntry, CLASSIFIER_HEAD_PROGRAM, CLASSIFIER_PROGRAM, Counter, FlowEntry, Ipv4Key, Ipv6Key,
    MAX_QUEUES, NOOP_PROGRAM, POLICY_STATE_ENTRIES, ProcessEntry, SockConfig, SockCounter,
    map_names, sock_programs,
};

use crate::{net::Prefix, sys::bpf_mmap::MappedWords};

mod policy_maps;
mod probe;
mod vlan;
pub use policy_maps::{Prepared, SLOT_QUIET, dns_key};
pub use probe::ParseProbe;
pub use sluice_config::{AttachMode, VlanMode};
pub use vlan::{LabVlanPins, pin_lab_vlan_host};

/// The classifier's ELF object, built by `build.rs` from `ebpf/programs`.
pub(crate) static CLASSIFIER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-classifier"));

/// `XDP_ABORTED`: the program failed; the frame is dropped and traced.
pub(crate) const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`: the frame is dropped.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`: the frame goes on to the kernel's network stack.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`: the frame is sent back out of the interface it came in on.
pub(crate) const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`: the frame goes where `bpf_redirect*` pointed it (for
/// the classifier: an `AF_XDP` socket).
pub const XDP_REDIRECT: u32 = 4;

/// The name of an XDP action (`"XDP_PASS"`, ...), or `"XDP_UNKNOWN"`.
pub fn xdp_action_name(action: u32) -> &'static str {
    match action {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "XDP_UNKNOWN",
    }
}

/// The mode an attachment actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode.
    Generic,
}

impl AttachedMode {
    /// The mode recorded for an adopted link: what was asked for (the
    /// kernel does not report a link's mode).
    fn from_request(mode: AttachMode) -> Self {
        match mode {
            AttachMode::Generic => AttachedMode::Generic,
            AttachMode::Auto | AttachMode::Native => AttachedMode::Native,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Generic => XdpMode::Skb,
        }
    }
}

/// Errors of the classifier loader.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The embedded object is empty: the crate was built with
    /// `AYA_BUILD_SKIP`, so there is no classifier to load.
    #[error(
        "the embedded classifier object is empty (sluice was built with AYA_BUILD_SKIP); \
         rebuild with the eBPF toolchain (`cargo xtask setup`)"
    )]
    NotBuilt,
    /// aya could not parse the object or create its maps.
    #[error("loading the classifier object")]
    Object {
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The object has no program of that name, or it is not an XDP
    /// program.
    #[error("the classifier object has no XDP program `{name}`")]
    MissingProgram {
        /// The program name looked for.
        name: &'static str,
    },
    /// The kernel refused the program; the source's message carries the
    /// verifier log.
    #[error("the kernel refused to load XDP program `{name}`")]
    Load {
        /// The program name.
        name: &'static str,
        /// aya's error, with the verifier log.
        #[source]
        source: Box<ProgramError>,
    },
    /// The object has no map of that name.
    #[error("the classifier object has no map `{name}`")]
    MissingMap {
        /// The map name looked for.
        name: &'static str,
    },
    /// A map's type or key/value sizes differ from what user space expects
    /// (the kernel and user sides are out of sync).
    #[error("map `{name}` does not have the expected type or layout")]
    MapLayout {
        /// The map name.
        name: &'static str,
        /// aya's error, naming the mismatch.
        #[source]
        source: Box<MapError>,
    },
    /// Inserting or removing a map entry failed (e.g. the map is full).
    #[error("map `{name}`: cannot {action} {item}")]
    MapUpdate {
        /// The map name.
        name: &'static str,
        /// `"insert"` or `"remove"`.
        action: &'static str,
        /// The entry: a prefix, an address or a queue index.
        item: String,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
    /// Reading a map failed.
    #[error("reading map `{name}`")]
    MapRead {
        /// The map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
    /// The RX queue index does not fit the XSK map.
    #[error("RX queue {queue} is out of range: the classifier serves queues 0..{MAX_QUEUES}")]
    QueueOutOfRange {
        /// The queue index asked for.
        queue: u32,
    },
    /// The classifier is already attached (it serves one interface).
    #[error("the classifier is already attached to `{interface}`")]
    AlreadyAttached {
        /// The interface it is attached to.
        interface: String,
    },
    /// Attaching to the interface failed.
    #[error("attaching the classifier to `{interface}` in {mode} mode")]
    Attach {
        /// The interface name.
        interface: String,
        /// The mode last tried: `"native"` or `"generic"`.
        mode: &'static str,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Detaching from the interface failed.
    #[error("detaching the classifier from `{interface}`")]
    Detach {
        /// The interface name.
        interface: String,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN of a {len}-byte frame")]
    TestRun {
        /// The frame length.
        len: usize,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Loading or attaching an endpoint-mode socket hook failed.
    #[error("endpoint socket hook `{name}`: {what}")]
    SockHook {
        /// The program.
        name: &'static str,
        /// What failed, with the kernel's answer.
        what: String,
    },
    /// Mapping the policy state map into the process failed.
    #[error("mapping map `{name}` into memory")]
    Mmap {
        /// The map name.
        name: &'static str,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// Loading or attaching the untag mode's egress program failed.
    #[error("VLAN egress program on `{interface}`: {what}")]
    VlanEgress {
        /// The interface.
        interface: String,
        /// What failed, with the kernel's answer.
        what: String,
    },
    /// Pinning, adopting or unpinning the classifier's `bpf_link` failed.
    #[error("classifier link pin {path}: {what}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What failed.
        what: String,
    },
}

/// Where the classifier is attached.
#[derive(Debug)]
struct Attachment {
    interface: String,
    mode: AttachedMode,
    link: HeldLink,
}

/// How the attachment is held.
#[derive(Debug)]
enum HeldLink {
    /// Owned by the program: detached when the classifier is dropped.
    Owned(XdpLinkId),
    /// A `bpf_link` pinned in bpffs: it outlives this process, so a crash
    /// leaves the classifier attached (fail-closed: its XSK map entries
    /// vanish with the sockets, and tunnelled frames are dropped, not
    /// routed). Only [`Programs::detach`] removes the pin.
    Pinned(FdLink, PathBuf),
}

/// Where the classifier puts its verdict ([`sluice_common::XdpMeta`]) for
/// the workers, which decides which of its two programs is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetaPlacement {
    /// Asks the kernel ([`crate::sys::xdp_verdict::xdp_adjust_meta_supported`]):
    /// [`MetaPlacement::Area`] where XDP may call `bpf_xdp_adjust_meta`,
    /// [`MetaPlacement::Head`] where it may not. The environment variable
    /// `SLUICE_XDP_META` (`meta` or `head`) overrides the answer, for tests
    /// that exercise the other path on any kernel. Decided and logged once
    /// per process.
    #[default]
    Auto,
    /// In the frame's metadata area, in front of the data the socket
    /// receives (`bpf_xdp_adjust_meta`; program
    /// [`sluice_common::CLASSIFIER_PROGRAM`]).
    Area,
    /// In front of the frame itself, as the first
    /// [`sluice_common::META_LEN`] bytes the socket receives
    /// (`bpf_xdp_adjust_head`; program
    /// [`sluice_common::CLASSIFIER_HEAD_PROGRAM`]): the sockets must be
    /// opened with [`crate::sys::xsk::XskConfig::meta_in_head`].
    Head,
}

/// The environment variable that overrides [`MetaPlacement::Auto`]'s probe.
pub const META_PLACEMENT_ENV: &str = "SLUICE_XDP_META";

impl MetaPlacement {
    /// Whether the metadata goes in front of the frame: `Auto` resolved
    /// (once per process, with one INFO line saying which and why).
    fn in_head(self) -> bool {
        static AUTO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        match self {
            MetaPlacement::Area => false,
            MetaPlacement::Head => true,
            MetaPlacement::Auto => *AUTO.get_or_init(|| {
                let forced = std::env::var(META_PLACEMENT_ENV).ok();
                let (head, why) = match forced.as_deref() {
                    Some("head") => (true, format!("{META_PLACEMENT_ENV}=head")),
                    Some("meta") => (false, format!("{META_PLACEMENT_ENV}=meta")),
                    other => {
                        if let Some(v) = other.filter(|v| !v.is_empty() && *v != "auto") {
                            log::warn!(
                                "{META_PLACEMENT_ENV}={v:?} is neither `meta`, `head` nor `auto`; asking the kernel"
                            );
                        }
                        if crate::sys::xdp_verdict::xdp_adjust_meta_supported() {
                            (false, String::new())
                        } else {
                            (
                                true,
                                "this kernel refuses bpf_xdp_adjust_meta to XDP".to_owned(),
                            )
                        }
                    }
                };
                match (head, why.is_empty()) {
                    (false, true) => log::info!("classifier: frame metadata by adjust_meta"),
                    (false, false) => {
                        log::info!("classifier: frame metadata by adjust_meta ({why})");
                    }
                    (true, _) => {
                        log::info!("classifier: frame metadata in front of the frame ({why})");
                    }
                }
                head
            }),
        }
    }
}

/// The loaded eBPF object: the XDP classifier, the socket hooks (endpoint
/// mode, [`Programs::attach_sock_hooks`]) and the maps they share.
///
/// Dropping it detaches the program (aya detaches the links it owns) and
/// frees the maps once no `AF_XDP` socket or link holds them.
#[derive(Debug)]
pub struct Programs {
    ebpf: Ebpf,
    attachment: Option<Attachment>,
    slots: policy_maps::Slots,
    /// [`map_names::POLICY_STATE`], mapped: the state word and the
    /// tunnels' down times, each stored with one atomic store.
    state_words: MappedWords,
    /// Untag mode's egress program, once attached.
    vlan_egress: Option<vlan::Egress>,
    /// The classifier puts its metadata in front of the frame
    /// ([`MetaPlacement::Head`]): [`CLASSIFIER_HEAD_PROGRAM`] is the one
    /// loaded.
    meta_in_head: bool,
}

impl Programs {
    /// Loads [`CLASSIFIER_OBJECT`]: creates its maps and loads (verifies)
    /// the XDP classifier, without attaching it anywhere. Which of its two
    /// programs is the kernel's to answer ([`MetaPlacement::Auto`]);
    /// [`Programs::meta_in_head`] says which it is.
    ///
    /// aya raises `RLIMIT_MEMLOCK` itself on kernels that still charge BPF
    /// memory to it (before 5.11); newer kernels use memcg accounting.
    pub fn load() -> Result<Self, EbpfError> {
        Self::load_with(MetaPlacement::Auto)
    }

    /// [`Programs::load`] with the classifier program chosen by `placement`
    /// (tests load both on any kernel that allows `bpf_xdp_adjust_meta`).
    pub fn load_with(placement: MetaPlacement) -> Result<Self, EbpfError> {
        if CLASSIFIER_OBJECT.is_empty() {
            return Err(EbpfError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(CLASSIFIER_OBJECT).map_err(|source| EbpfError::Object {
            source: source.into(),
        })?;
        // After the object's maps: on kernels that charge BPF memory to
        // `RLIMIT_MEMLOCK`, aya has raised it by now.
        let meta_in_head = placement.in_head();
        let name = classifier_name(meta_in_head);
        program_mut(&mut ebpf, name)?
            .load()
            .map_err(|source| EbpfError::Load {
                name,
                source: source.into(),
            })?;
        let name = map_names::POLICY_STATE;
        let state_words = match ebpf.map(name) {
            Some(Map::Array(data)) => {
                MappedWords::new(data.fd().as_fd(), POLICY_STATE_ENTRIES as usize)
                    .map_err(|source| EbpfError::Mmap { name, source })?
            }
            Some(_) => {
                return Err(layout(name)(MapError::InvalidMapType { map_type: 0 }));
            }
            None => return Err(EbpfError::MissingMap { name }),
        };
        let classifier = Self {
            ebpf,
            attachment: None,
            slots: policy_maps::Slots::default(),
            state_words,
            vlan_egress: None,
            meta_in_head,
        };
        classifier.check_maps()?;
        Ok(classifier)
    }

    /// Checks that every map exists with the layout user space expects, so
    /// that a kernel/user mismatch fails at load time.
    fn check_maps(&self) -> Result<(), EbpfError> {
        LpmTrie::<_, Ipv4Key, BypassEntry>::try_from(self.map(map_names::BYPASS_V4)?)
            .map_err(layout(map_names::BYPASS_V4))?;
        LpmTrie::<_, Ipv6Key, BypassEntry>::try_from(self.map(map_names::BYPASS_V6)?)
            .map_err(layout(map_names::BYPASS_V6))?;
        HashMap::<_, Ipv4Key, u32>::try_from(self.map(map_names::LOCAL_V4)?)
            .map_err(layout(map_names::LOCAL_V4))?;
        HashMap::<_, Ipv6Key, u32>::try_from(self.map(map_names::LOCAL_V6)?)
            .map_err(layout(map_names::LOCAL_V6))?;
        XskMap::try_from(self.map(map_names::XSKS)?).map_err(layout(map_names::XSKS))?;
        let policy_state = Array::<_, u64>::try_from(self.map(map_names::POLICY_STATE)?)
            .map_err(layout(map_names::POLICY_STATE))?;
        if policy_state.len() != POLICY_STATE_ENTRIES {
            return Err(layout(map_names::POLICY_STATE)(MapError::OutOfBounds {
                index: POLICY_STATE_ENTRIES,
                max_entries: policy_state.len(),
            }));
        }
        Array::<_, u64>::try_from(self.map(map_names::SETTINGS)?)
            .map_err(layout(map_names::SETTINGS))?;
        HashMap::<_, sluice_common::FragKey, sluice_common::FragEntry>::try_from(
            self.map(map_names::FRAGS)?,
        )
        .map_err(layout(map_names::FRAGS))?;
        let stats = PerCpuArray::<_, u64>::try_from(self.map(map_names::STATS)?)
            .map_err(layout(map_names::STATS))?;
        if stats.len() != Counter::COUNT {
            return Err(layout(map_names::STATS)(MapError::OutOfBounds {
                index: Counter::COUNT,
                max_entries: stats.len(),
            }));
        }
        Ok(())
    }

    /// Whether the loaded classifier puts its metadata in front of the
    /// frame ([`MetaPlacement::Head`]): the `AF_XDP` sockets it redirects to
    /// must then be opened with
    /// [`crate::sys::xsk::XskConfig::meta_in_head`].
    pub fn meta_in_head(&self) -> bool {
        self.meta_in_head
    }

    /// The name of the loaded classifier program.
    pub(crate) fn classifier_name(&self) -> &'static str {
        classifier_name(self.meta_in_head)
    }

    fn map(&self, name: &'static str) -> Result<&Map, EbpfError> {
        self.ebpf.map(name).ok_or(EbpfError::MissingMap { name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, EbpfError> {
        self.ebpf
            .map_mut(name)
            .ok_or(EbpfError::MissingMap { name })
    }

    /// Replaces the bypass prefixes that came from the configuration
    /// ([`BypassEntry::SOURCE_CONFIG`]) with `prefixes`, both families.
    /// Entries of other sources (DNS, VPN gateways) are left alone.
    pub fn set_bypass(&mut self, prefixes: &[Prefix]) -> Result<(), EbpfError> {
        self.replace_bypass(BypassEntry::SOURCE_CONFIG, prefixes)
    }

    /// Replaces the bypass entries owned by `source` (one of the
    /// `BypassEntry::SOURCE_*` constants) with `prefixes`: inserts them all,
    /// then removes the entries of that source that are no longer wanted,
    /// so that lookups never see a table missing a prefix that stays.
    ///
    /// A prefix that another source had inserted becomes `source`'s.
    pub fn replace_bypass(&mut self, source: u32, prefixes: &[Prefix]) -> Result<(), EbpfError> {
        let (v4, v6) = split_prefixes(prefixes);
        let value = BypassEntry {
            source,
            reserved: 0,
        };
        let name = map_names::BYPASS_V4;
        let mut trie = LpmTrie::<_, Ipv4Key, BypassEntry>::try_from(self.map_mut(name)?)
            .map_err(layout(name))?;
        sync_lpm(&mut trie, name, &v4, value)?;
        let name = map_names::BYPASS_V6;
        let mut trie = LpmTrie::<_, Ipv6Key, BypassEntry>::try_from(self.map_mut(name)?)
            .map_err(layout(name))?;
        sync_lpm(&mut trie, name, &v6, value)
    }

    /// Adds `addr` as a host prefix (/32 or /128) owned by `source`, unless
    /// that exact prefix is already there (of any source: a configured
    /// host entry is never taken over). Returns whether it was added.
    pub(crate) fn add_host_bypass(&mut self, source: u32, addr: IpAddr) -> Result<bool, EbpfError> {
        let value = BypassEntry {
            source,
            reserved: 0,
        };
        let (name, res) = match addr {
            IpAddr::V4(a) => self.with_trie(map_names::BYPASS_V4, |t| {
                host_insert(t, Key::new(32, a.octets()), value)
            })?,
            IpAddr::V6(a) => self.with_trie(map_names::BYPASS_V6, |t| {
                host_insert(t, Key::new(128, a.octets()), value)
            })?,
        };
        res.map_err(|source| EbpfError::MapUpdate {
            name,
            action: "insert",
            item: addr.to_string(),
            source: source.into(),
        })
    }

    /// Removes the host prefix of `addr` if `source` owns it (sources other
    /// than the configuration only ever add host prefixes, so the longest
    /// match for the address being theirs means it is that entry). Returns
    /// whether it was removed.
    pub(crate) fn remove_host_bypass(
        &mut self,
        source: u32,
        addr: IpAddr,
    ) -> Result<bool, EbpfError> {
        let (name, res) = match addr {
            IpAddr::V4(a) => self.with_trie(map_names::BYPASS_V4, |t| {
                host_remove(t, Key::new(32, a.octets()), source)
            })?,
            IpAddr::V6(a) => self.with_trie(map_names::BYPASS_V6, |t| {
                host_remove(t, Key::new(128, a.octets()), source)
            })?,
        };
        res.map_err(|source| EbpfError::MapUpdate {
            name,
            action: "remove",
            item: addr.to_string(),
            source: source.into(),
        })
    }

    /// Runs `f` on the bypass trie `name`; returns the name with the result.
    fn with_trie<K: Pod, T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut LpmTrie<&mut MapData, K, BypassEntry>) -> T,
    ) -> Result<(&'static str, T), EbpfError> {
        let mut trie =
            LpmTrie::<_, K, BypassEntry>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        Ok((name, f(&mut trie)))
    }

    /// All bypass entries, both families, with their values.
    pub fn bypass_entries(&self) -> Result<Vec<(Prefix, BypassEntry)>, EbpfError> {
        let mut out = Vec::new();
        self.read_trie::<Ipv4Key>(map_names::BYPASS_V4, key_to_prefix_v4, &mut out)?;
        self.read_trie::<Ipv6Key>(map_names::BYPASS_V6, key_to_prefix_v6, &mut out)?;
        Ok(out)
    }

    /// Appends every entry of the bypass trie `name` to `out`.
    fn read_trie<K: aya::Pod>(
        &self,
        name: &'static str,
        to_prefix: fn(Key<K>) -> Prefix,
        out: &mut Vec<(Prefix, BypassEntry)>,
    ) -> Result<(), EbpfError> {
        let trie = LpmTrie::<_, K, BypassEntry>::try_from(self.map(name)?).map_err(layout(name))?;
        for item in &trie {
            let (key, value) = item.map_err(|source| EbpfError::MapRead {
                name,
                source: source.into(),
            })?;
            out.push((to_prefix(key), value));
        }
        Ok(())
    }

    /// Replaces the gateway's own addresses (both families): traffic to
    /// them is passed to the kernel. Inserts first, then removes stale
    /// ones.
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), EbpfError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for addr in addrs {
            match addr {
                IpAddr::V4(a) => v4.push(a.octets()),
                IpAddr::V6(a) => v6.push(a.octets()),
            }
        }
        let name = map_names::LOCAL_V4;
        let mut map =
            HashMap::<_, Ipv4Key, u32>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        sync_hash(&mut map, name, &v4)?;
        let name = map_names::LOCAL_V6;
        let mut map =
            HashMap::<_, Ipv6Key, u32>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        sync_hash(&mut map, name, &v6)
    }

    /// Makes the `AF_XDP` socket `fd` the target for frames tunnelled from RX
    /// queue `queue` (`XSKS[queue] = fd`). The socket must be bound to
    /// that queue of the interface the classifier is attached to.
    pub fn register_socket(&mut self, queue: u32, fd: BorrowedFd<'_>) -> Result<(), EbpfError> {
        if queue >= MAX_QUEUES {
            return Err(EbpfError::QueueOutOfRange { queue });
        }
        let name = map_names::XSKS;
        let mut map = XskMap::try_from(self.map_mut(name)?).map_err(layout(name))?;
        map.set(queue, fd, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name,
                action: "insert",
                item: format!("queue {queue}"),
                source: source.into(),
            })
    }

    /// Removes the socket of RX queue `queue`: its tunnelled frames are
    /// dropped (and counted as `DropNoSocket`) from now on. Removing an
    /// empty slot is not an error.
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), EbpfError> {
        if queue >= MAX_QUEUES {
            return Err(EbpfError::QueueOutOfRange { queue });
        }
        let name = map_names::XSKS;
        let mut map = XskMap::try_from(self.map_mut(name)?).map_err(layout(name))?;
        removed(name, || format!("queue {queue}"), map.unset(queue))
    }

    /// Attaches the classifier to `interface` and returns the mode it got.
    /// With [`AttachMode::Auto`], a refused native attachment is retried in
    /// generic mode (and logged); an unknown interface is not retried.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<AttachedMode, EbpfError> {
        if let Some(a) = &self.attachment {
            return Err(EbpfError::AlreadyAttached {
                interface: a.interface.clone(),
            });
        }
        let program = program_mut(&mut self.ebpf, classifier_name(self.meta_in_head))?;
        let attach = |program: &mut Xdp, mode: AttachedMode| {
            program
                .attach(interface, mode.xdp_mode())
                .map_err(|source| EbpfError::Attach {
                    interface: interface.to_owned(),
                    mode: mode.name(),
                    source: source.into(),
                })
        };
        let (mode, link) = match mode {
            AttachMode::Native => (AttachedMode::Native, attach(program, AttachedMode::Native)?),
            AttachMode::Generic => (
                AttachedMode::Generic,
                attach(program, AttachedMode::Generic)?,
            ),
            AttachMode::Auto => match attach(program, AttachedMode::Native) {
                Ok(link) => (AttachedMode::Native, link),
                Err(e) if is_unknown_interface(&e) => return Err(e),
                Err(native) => {
                    log::warn!(
                        "{native}: {}; falling back to generic mode",
                        error_chain(&native)
                    );
                    (
                        AttachedMode::Generic,
                        attach(program, AttachedMode::Generic)?,
                    )
                }
            },
        };
        log::info!("classifier attached to {interface} in {} mode", mode.name());
        self.attachment = Some(Attachment {
            interface: interface.to_owned(),
            mode,
            link: HeldLink::Owned(link),
        });
        Ok(mode)
    }

    /// Like [`Programs::attach`], but holds the attachment through a
    /// `bpf_link` pinned at `pin`, so that it survives this process: if sluice
    /// dies, the classifier stays attached and, its sockets gone, drops
    /// what it would have tunnelled instead of letting the kernel route it.
    ///
    /// If `pin` already holds a link (a previous run that did not stop
    /// cleanly), the link is adopted and its program replaced by this one
    /// atomically (`bpf_link_update`): there is no moment without a
    /// classifier. [`Programs::detach`] unpins and detaches.
    pub(crate) fn attach_pinned(
        &mut self,
        interface: &str,
        mode: AttachMode,
        pin: &Path,
    ) -> Result<AttachedMode, EbpfError> {
        let pin_err = |what: &str, e: &dyn std::fmt::Display| EbpfError::Pin {
            path: pin.to_path_buf(),
            what: format!("{what}: {e}"),
        };
        if self.attachment.is_some() {
            return self.attach(interface, mode);
        }
        let adopted = if pin.exists() {
            match PinnedLink::from_pin(pin) {
                Ok(pinned) => {
                    let fd: FdLink = pinned.into();
                    let link = XdpLink::try_from(fd).map_err(|e| pin_err("not an XDP link", &e))?;
                    let program = program_mut(&mut self.ebpf, classifier_name(self.meta_in_head))?;
                    let id = program
                        .attach_to_link(link)
                        .map_err(|e| pin_err("replacing the program of the pinned link", &e))?;
                    log::info!(
                        "classifier: adopted the link pinned at {} by an earlier run; program replaced in place",
                        pin.display()
                    );
                    Some((id, AttachedMode::from_request(mode)))
                }
                Err(e) => {
                    log::warn!("classifier: stale pin {}: {e}; removing it", pin.display());
                    std::fs::remove_file(pin).map_err(|e| pin_err("removing stale pin", &e))?;
                    None
                }
            }
        } else {
            None
        };
        let (id, mode) = if let Some(a) = adopted {
            a
        } else {
            let mode = self.attach(interface, mode)?;
            let Some(Attachment {
                link: HeldLink::Owned(id),
                ..
            }) = self.attachment.take()
            else {
                unreachable!("attach just stored an owned link");
            };
            (id, mode)
        };
        let program = program_mut(&mut self.ebpf, classifier_name(self.meta_in_head))?;
        let link = program
            .take_link(id)
            .map_err(|e| pin_err("taking the link", &e))?;
        let fd =
            FdLink::try_from(link).map_err(|e| pin_err("not a bpf_link (kernel too old?)", &e))?;
        if let Some(dir) = pin.parent() {
            std::fs::create_dir_all(dir).map_err(|e| pin_err("creating the pin directory", &e))?;
        }
        let fd: FdLink = if pin.exists() {
            fd
        } else {
            fd.pin(pin).map_err(|e| pin_err("pinning", &e))?.into()
        };
        self.attachment = Some(Attachment {
            interface: interface.to_owned(),
            mode,
            link: HeldLink::Pinned(fd, pin.to_path_buf()),
        });
        Ok(mode)
    }

    /// The interface and mode the classifier is attached with, if any.
    pub fn attached(&self) -> Option<(&str, AttachedMode)> {
        self.attachment
            .as_ref()
            .map(|a| (a.interface.as_str(), a.mode))
    }

    /// Detaches the classifier from its interface (no-op if not attached),
    /// and untag mode's egress program (unpinned). Dropping the classifier
    /// does the same, except for pinned links.
    pub fn detach(&mut self) -> Result<(), EbpfError> {
        // The classifier first: once it stops untagging, the egress
        // program has nothing left to tag.
        let xdp = self.detach_xdp();
        let egress = self
            .vlan_egress
            .as_mut()
            .map_or(Ok(()), vlan::Egress::detach);
        xdp.and(egress)
    }

    fn detach_xdp(&mut self) -> Result<(), EbpfError> {
        let Some(attachment) = self.attachment.take() else {
            return Ok(());
        };
        match attachment.link {
            HeldLink::Owned(link) => {
                program_mut(&mut self.ebpf, classifier_name(self.meta_in_head))?
                    .detach(link)
                    .map_err(|source| EbpfError::Detach {
                        interface: attachment.interface,
                        source: source.into(),
                    })
            }
            HeldLink::Pinned(fd, path) => {
                // Unpin, then close our fd: the last reference goes and the
                // kernel detaches the program.
                let res = std::fs::remove_file(&path).map_err(|e| EbpfError::Pin {
                    path: path.clone(),
                    what: format!("unpinning: {e}"),
                });
                drop(fd);
                res
            }
        }
    }

    /// The counters, indexed by [`Counter::index`], summed over CPUs.
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize], EbpfError> {
        let name = map_names::STATS;
        let stats = PerCpuArray::<_, u64>::try_from(self.map(name)?).map_err(layout(name))?;
        let mut out = [0; Counter::COUNT as usize];
        for (counter, slot) in Counter::ALL.iter().zip(out.iter_mut()) {
            let per_cpu = stats
                .get(&counter.index(), 0)
                .map_err(|source| EbpfError::MapRead {
                    name,
                    source: source.into(),
                })?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Runs the classifier once on `frame` with `BPF_PROG_TEST_RUN` and
    /// returns its XDP action (see [`xdp_action_name`]). The frame arrives
    /// on RX queue 0; maps and counters are the live ones.
    ///
    /// The kernel refuses (`EINVAL`) frames shorter than an Ethernet header
    /// (14 bytes), which no driver would deliver either.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, EbpfError> {
        self.test_run_meta(frame).map(|(action, _)| action)
    }

    /// [`Programs::test_run`], also returning the metadata the program
    /// put in front of the frame (`None` if it put none), wherever it put
    /// it ([`Programs::meta_in_head`]): the same answer in both modes.
    pub fn test_run_meta(
        &self,
        frame: &[u8],
    ) -> Result<(u32, Option<[u8; sluice_common::META_LEN]>), EbpfError> {
        self.test_run_out(frame).map(|(a, m, _)| (a, m))
    }

    /// [`Programs::test_run_meta`], also returning the frame as the
    /// program left it (after any tag it removed), without the metadata.
    pub fn test_run_out(&self, frame: &[u8]) -> Result<TestRunOutput, EbpfError> {
        let name = self.classifier_name();
        let program: &Xdp = self
            .ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(EbpfError::MissingProgram { name })?;
        // The kernel copies out from the metadata on (from `data_meta`),
        // or in head mode from the metadata the program put in front of
        // the frame (from `data`).
        let mut out = vec![0; frame.len() + 64];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        let r = program
            .test_run(opts)
            .map_err(|source| EbpfError::TestRun {
                len: frame.len(),
                source: source.into(),
            })?;
        // The kernel copies out from the metadata on: what is not the
        // frame's own length (it shrinks by a removed tag) is metadata. In
        // head mode the metadata is the frame's first bytes, which the
        // same arithmetic finds: the program either puts metadata (the
        // output grows by `META_LEN`) or removes a tag (it shrinks), never
        // both.
        let size = (r.data_size_out as usize).min(out.len());
        let meta_len = size.saturating_sub(frame.len());
        let meta: Option<[u8; sluice_common::META_LEN]> = (meta_len == sluice_common::META_LEN)
            .then(|| out[..sluice_common::META_LEN].try_into().ok())
            .flatten();
        let start = if meta.is_some() { meta_len } else { 0 };
        Ok((r.return_value, meta, out[start..size].to_vec()))
    }

    /// Sets how long a first fragment's verdict is followed by the later
    /// fragments of its datagram (default
    /// [`sluice_common::FRAG_TIMEOUT_NS`]).
    pub fn set_fragment_timeout(&mut self, timeout: std::time::Duration) -> Result<(), EbpfError> {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.set_setting(sluice_common::setting::FRAG_TIMEOUT_NS, ns)
    }

    fn set_setting(&mut self, index: u32, value: u64) -> Result<(), EbpfError> {
        let name = map_names::SETTINGS;
        let mut a = Array::<_, u64>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        a.set(index, value, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name,
                action: "insert",
                item: format!("setting {index}"),
                source: source.into(),
            })
    }

    /// Fragmented datagrams the classifier tracks now (first fragments
    /// seen and not yet evicted).
    pub fn fragments_tracked(&self) -> Result<usize, EbpfError> {
        let name = map_names::FRAGS;
        let m = HashMap::<_, sluice_common::FragKey, sluice_common::FragEntry>::try_from(
            self.map(name)?,
        )
        .map_err(layout(name))?;
        Ok(m.keys().flatten().count())
    }
}

/// What [`Programs::test_run_out`] returns: the XDP action, the
/// metadata in front of the frame (if any) and the frame as the program
/// left it.
pub(crate) type TestRunOutput = (u32, Option<[u8; sluice_common::META_LEN]>, Vec<u8>);

impl Programs {
    /// Loads the endpoint-mode socket hooks of this object, attaches them
    /// to `cgroup` (every process below it) and to the scheduler's fork
    /// and exit tracepoints, and turns them on with `cfg`. Returns the maps
    /// user space keeps writing (bypassed processes) and reading (flows,
    /// counters). The hooks share this classifier's bypass tries; they do
    /// nothing while [`Programs::set_sock_config`] has them disabled.
    ///
    /// With `pins`, every hook's `bpf_link` is pinned in that directory
    /// (one file per program), so that the hooks outlive this process: a
    /// crash leaves them steering (no socket marked for bypass keeps its
    /// mark where policy says tunnel). Pins an earlier run left there are
    /// replaced once every new hook is attached and on (there is no
    /// moment without hooks); removing the directory detaches them.
    /// Without `pins`, the hooks stay attached until [`SockHooks`] is
    /// dropped.
    pub fn attach_sock_hooks(
        &mut self,
        cgroup: &Path,
        cfg: SockConfig,
        pins: Option<&Path>,
    ) -> Result<SockHooks, EbpfError> {
        let hook_err = |name: &'static str| {
            move |e: ProgramError| EbpfError::SockHook {
                name,
                what: format!("{e}: {}", error_chain(&e)),
            }
        };
        let dir = std::fs::File::open(cgroup).map_err(|e| EbpfError::SockHook {
            name: sock_programs::SOCK_CREATE,
            what: format!("opening cgroup {}: {e}", cgroup.display()),
        })?;
        // `Single` means flags 0: on kernels with bpf_link (5.7+) aya
        // attaches through a link, which is always one of many and refuses
        // BPF_F_ALLOW_MULTI (EINVAL).
        // The settings first, disabled until every hook is in place.
        let disabled = SockConfig { enabled: 0, ..cfg };
        self.set_sock_config(disabled)?;
        let mut links: Vec<(&'static str, FdLink)> = Vec::new();
        let link_err = |name: &'static str| {
            move |e: &dyn std::fmt::Display| EbpfError::SockHook {
                name,
                what: format!("taking its link: {e}"),
            }
        };
        // The two cgroup program types share no trait for load/attach.
        macro_rules! cgroup_hook {
            ($ty:ty, $name:expr) => {{
                let name = $name;
                let p: &mut $ty = self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or(EbpfError::MissingProgram { name })?;
                p.load().map_err(hook_err(name))?;
                let id =
                    p.attach(&dir, CgroupAttachMode::Single)
                        .map_err(|e| EbpfError::SockHook {
                            name,
                            what: format!(
                                "attaching to {}: {e}: {}",
                                cgroup.display(),
                                error_chain(&e)
                            ),
                        })?;
                let link = p.take_link(id).map_err(|e| link_err(name)(&e))?;
                links.push((
                    name,
                    FdLink::try_from(link).map_err(|e| link_err(name)(&e))?,
                ));
            }};
        }
        cgroup_hook!(CgroupSock, sock_programs::SOCK_CREATE);
        cgroup_hook!(CgroupSock, sock_programs::SOCK_RELEASE);
        cgroup_hook!(CgroupSockAddr, sock_programs::CONNECT4);
        cgroup_hook!(CgroupSockAddr, sock_programs::CONNECT6);
        cgroup_hook!(CgroupSockAddr, sock_programs::SENDMSG4);
        cgroup_hook!(CgroupSockAddr, sock_programs::SENDMSG6);
        for (name, tp) in [
            (sock_programs::PROCESS_FORK, "sched_process_fork"),
            (sock_programs::PROCESS_EXIT, "sched_process_exit"),
            (sock_programs::PROCESS_EXEC, "sched_process_exec"),
        ] {
            let p: &mut TracePoint = self
                .ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or(EbpfError::MissingProgram { name })?;
            p.load().map_err(hook_err(name))?;
            let id = p.attach("sched", tp).map_err(hook_err(name))?;
            let link = p.take_link(id).map_err(|e| link_err(name)(&e))?;
            links.push((
                name,
                FdLink::try_from(link).map_err(|e| link_err(name)(&e))?,
            ));
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(EbpfError::MissingMap { name })
        };
        let processes = HashMap::try_from(take(&mut self.ebpf, map_names::PROCESSES)?)
            .map_err(layout(map_names::PROCESSES))?;
        let flows = HashMap::try_from(take(&mut self.ebpf, map_names::FLOWS)?)
            .map_err(layout(map_names::FLOWS))?;
        let stats = PerCpuArray::try_from(take(&mut self.ebpf, map_names::SOCK_STATS)?)
            .map_err(layout(map_names::SOCK_STATS))?;
        let pending = HashMap::try_from(take(&mut self.ebpf, map_names::PENDING)?)
            .map_err(layout(map_names::PENDING))?;
        self.set_sock_config(cfg)?;
        let held = match pins {
            Some(dir) => {
                pin_hooks(dir, links)?;
                Vec::new()
            }
            None => links.into_iter().map(|(_, l)| l).collect(),
        };
        Ok(SockHooks {
            processes,
            grants: Some(ExecGrants { pending }),
            flows,
            stats,
            _links: held,
        })
    }

    /// Writes where the exec tracepoint finds the executed file's identity
    /// (from the kernel's BTF): until this is written, no exec verdict
    /// applies.
    pub(crate) fn set_exec_file(
        &mut self,
        o: sluice_common::ExecFileOffsets,
    ) -> Result<(), EbpfError> {
        let name = sluice_common::EXEC_FILE_MAP;
        let mut a = Array::<_, sluice_common::ExecFileOffsets>::try_from(self.map_mut(name)?)
            .map_err(layout(name))?;
        a.set(0, o, 0).map_err(|source| EbpfError::MapUpdate {
            name,
            action: "insert",
            item: "the exec file offsets".into(),
            source: source.into(),
        })
    }

    /// Writes the socket hooks' settings.
    pub(crate) fn set_sock_config(&mut self, cfg: SockConfig) -> Result<(), EbpfError> {
        let name = map_names::SOCK_CONFIG;
        let mut a = Array::<_, SockConfig>::try_from(self.map_mut(name)?).map_err(layout(name))?;
        a.set(0, cfg, 0).map_err(|source| EbpfError::MapUpdate {
            name,
            action: "insert",
            item: "the settings".into(),
            source: source.into(),
        })
    }
}

/// Pins the socket hooks' `links` in `dir` (made if missing), one file per
/// program, replacing an earlier run's pins (whose links then go, and
/// their programs with them); other files there are removed too.
fn pin_hooks(dir: &Path, links: Vec<(&'static str, FdLink)>) -> Result<(), EbpfError> {
    let err = |what: String| EbpfError::Pin {
        path: dir.to_path_buf(),
        what,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("creating the directory: {e}")))?;
    let names: Vec<&str> = links.iter().map(|(n, _)| *n).collect();
    for (name, link) in links {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| err(format!("removing the earlier run's {name}: {e}")))?;
        }
        link.pin(&path)
            .map_err(|e| err(format!("pinning {name}: {e}")))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if !names.iter().any(|n| e.file_name() == *n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// The maps of the endpoint-mode socket hooks that user space keeps using
/// after [`Programs::attach_sock_hooks`].
pub struct SockHooks {
    processes: HashMap<MapData, u32, ProcessEntry>,
    grants: Option<ExecGrants>,
    flows: HashMap<MapData, u64, FlowEntry>,
    stats: PerCpuArray<MapData, u64>,
    /// The hooks' links when they are not pinned (dropping detaches).
    _links: Vec<FdLink>,
}

/// The verdicts for `execve`s in flight (the exec watcher's map).
pub(crate) struct ExecGrants {
    pending: HashMap<MapData, u32, sluice_common::ExecGrant>,
}

impl std::fmt::Debug for ExecGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecGrants").finish_non_exhaustive()
    }
}

impl ExecGrants {
    /// The verdict for the `execve` process `tgid` is in, for the file
    /// `(dev, ino)` (`dev` as the kernel numbers it): applied by the kernel
    /// when (and only if) that exec succeeds, within
    /// [`sluice_common::GRANT_WINDOW_NS`], and the process then runs that
    /// very file.
    pub(crate) fn grant(
        &mut self,
        tgid: u32,
        bypass: bool,
        dev: u32,
        ino: u64,
    ) -> Result<(), EbpfError> {
        let g = sluice_common::ExecGrant {
            bypass: u32::from(bypass),
            dev,
            written_ns: crate::sys::fanotify::monotonic_ns(),
            ino,
        };
        self.pending
            .insert(tgid, g, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name: map_names::PENDING,
                action: "insert",
                item: format!("process {tgid}"),
                source: source.into(),
            })
    }
}

impl std::fmt::Debug for SockHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockHooks").finish_non_exhaustive()
    }
}

impl SockHooks {
    /// Sockets that process `tgid` creates from now on bypass the tunnel
    /// (`reason`: why). Its children inherit the entry.
    pub(crate) fn set_process(
        &mut self,
        tgid: u32,
        reason: sluice_common::FlowVerdict,
    ) -> Result<(), EbpfError> {
        let entry = ProcessEntry {
            reason: reason as u32,
            reserved: 0,
        };
        self.processes
            .insert(tgid, entry, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name: map_names::PROCESSES,
                action: "insert",
                item: format!("process {tgid}"),
                source: source.into(),
            })
    }

    /// The exec-verdict map, once: the exec watcher keeps it apart, so
    /// that it never waits on what reads or rescans the process map.
    pub(crate) fn take_grants(&mut self) -> Option<ExecGrants> {
        self.grants.take()
    }

    /// Sockets that process `tgid` creates from now on are tunnelled.
    /// Returns whether it had an entry.
    pub(crate) fn clear_process(&mut self, tgid: u32) -> Result<bool, EbpfError> {
        match self.processes.remove(&tgid) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(EbpfError::MapUpdate {
                name: map_names::PROCESSES,
                action: "remove",
                item: format!("process {tgid}"),
                source: source.into(),
            }),
        }
    }

    /// The process ids that have an entry, and why.
    pub fn processes(&self) -> Vec<(u32, u32)> {
        self.processes
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.reason))
            .collect()
    }

    /// The flows the connect hooks recorded (still-open sockets, at most
    /// [`sluice_common::FLOWS_MAX_ENTRIES`], least recent dropped first),
    /// by socket cookie.
    pub fn flows(&self) -> Vec<(u64, FlowEntry)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// The hooks' counters, indexed by [`SockCounter`], summed over CPUs.
    pub fn counters(&self) -> [u64; SockCounter::COUNT as usize] {
        let mut out = [0; SockCounter::COUNT as usize];
        for (c, slot) in SockCounter::ALL.iter().zip(out.iter_mut()) {
            if let Ok(v) = self.stats.get(&(*c as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }
}

/// The classifier program that puts its metadata where `meta_in_head`
/// says.
fn classifier_name(meta_in_head: bool) -> &'static str {
    if meta_in_head {
        CLASSIFIER_HEAD_PROGRAM
    } else {
        CLASSIFIER_PROGRAM
    }
}

fn program_mut<'e>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut Xdp, EbpfError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(EbpfError::MissingProgram { name })
}

/// The pass-everything XDP program attached to an interface (a benchmark
/// baseline: what merely having an XDP program costs the kernel path).
/// Detached when dropped.
#[derive(Debug)]
pub struct NoopXdp {
    _ebpf: Ebpf,
}

/// Attaches the no-op program to `interface` in `mode` (`Auto` means
/// native, falling back to generic, as for the classifier).
pub fn attach_noop(interface: &str, mode: AttachMode) -> Result<NoopXdp, EbpfError> {
    if CLASSIFIER_OBJECT.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    let mut ebpf = Ebpf::load(CLASSIFIER_OBJECT).map_err(|source| EbpfError::Object {
        source: source.into(),
    })?;
    let program: &mut Xdp = ebpf
        .program_mut(NOOP_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(EbpfError::MissingProgram { name: NOOP_PROGRAM })?;
    program.load().map_err(|source| EbpfError::Load {
        name: NOOP_PROGRAM,
        source: source.into(),
    })?;
    let modes: &[AttachedMode] = match mode {
        AttachMode::Native => &[AttachedMode::Native],
        AttachMode::Generic => &[AttachedMode::Generic],
        AttachMode::Auto => &[AttachedMode::Native, AttachedMode::Generic],
    };
    let mut last = None;
    for m in modes {
        match program.attach(interface, m.xdp_mode()) {
            Ok(_) => {
                log::info!(
                    "no-op XDP program attached to {interface} in {} mode",
                    m.name()
                );
                return Ok(NoopXdp { _ebpf: ebpf });
            }
            Err(source) => {
                last = Some(EbpfError::Attach {
                    interface: interface.to_owned(),
                    mode: m.name(),
                    source: source.into(),
                });
            }
        }
    }
    Err(last.unwrap_or(EbpfError::MissingProgram { name: NOOP_PROGRAM }))
}

/// `error: cause: cause`, for a log line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = error.source();
    while let Some(e) = source {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn is_unknown_interface(error: &EbpfError) -> bool {
    matches!(error, EbpfError::Attach { source, .. }
        if matches!(**source, ProgramError::UnknownInterface { .. }))
}

/// `BPF_NOEXIST`: an update that fails with `EEXIST` if the key is there.
const BPF_NOEXIST: u64 = 1;

/// Inserts `key` unless that exact key is there; whether it inserted.
fn host_insert<K: Pod>(
    trie: &mut LpmTrie<&mut MapData, K, BypassEntry>,
    key: Key<K>,
    value: BypassEntry,
) -> Result<bool, MapError> {
    match trie.insert(&key, value, BPF_NOEXIST) {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Removes the host `key` if its entry (the longest match for a host key
/// is the key itself when present) belongs to `source`.
fn host_remove<K: Pod>(
    trie: &mut LpmTrie<&mut MapData, K, BypassEntry>,
    key: Key<K>,
    source: u32,
) -> Result<bool, MapError> {
    match trie.get(&key, 0) {
        Ok(e) if e.source == source => match trie.remove(&key) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        },
        Ok(_) => Ok(false),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A removal's result from map `name`: a key that was not there is not an
/// error.
fn removed(
    name: &'static str,
    item: impl FnOnce() -> String,
    result: Result<(), MapError>,
) -> Result<(), EbpfError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(source) => Err(EbpfError::MapUpdate {
            name,
            action: "remove",
            item: item(),
            source: source.into(),
        }),
    }
}

fn is_not_found(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// LPM keys of the IPv4 and IPv6 prefixes, as `(prefix_len, address)`.
type SplitPrefixes = (Vec<(u32, Ipv4Key)>, Vec<(u32, Ipv6Key)>);

fn split_prefixes(prefixes: &[Prefix]) -> SplitPrefixes {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for p in prefixes {
        match p.addr() {
            IpAddr::V4(a) => v4.push((u32::from(p.len()), a.octets())),
            IpAddr::V6(a) => v6.push((u32::from(p.len()), a.octets())),
        }
    }
    (v4, v6)
}

fn key_to_prefix_v4(key: Key<Ipv4Key>) -> Prefix {
    Prefix::new(IpAddr::from(key.data()), key.prefix_len() as u8)
}

fn key_to_prefix_v6(key: Key<Ipv6Key>) -> Prefix {
    Prefix::new(IpAddr::from(key.data()), key.prefix_len() as u8)
}

/// Makes the entries of `trie` whose value has `value.source` exactly
/// `wanted`: inserts every wanted key, then removes the others.
fn sync_lpm<K>(
    trie: &mut LpmTrie<&mut MapData, K, BypassEntry>,
    name: &'static str,
    wanted: &[(u32, K)],
    value: BypassEntry,
) -> Result<(), EbpfError>
where
    K: Pod + Eq + Hash,
    IpAddr: From<K>,
{
    let describe = |len: u32, data: K| format!("{}/{len}", IpAddr::from(data));
    let mut stale = Vec::new();
    for item in trie.iter() {
        let (key, entry) = item.map_err(|source| EbpfError::MapRead {
            name,
            source: source.into(),
        })?;
        if entry.source == value.source {
            stale.push((key.prefix_len(), key.data()));
        }
    }
    for &(len, data) in wanted {
        trie.insert(&Key::new(len, data), value, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name,
                action: "insert",
                item: describe(len, data),
                source: source.into(),
            })?;
    }
    let keep: HashSet<(u32, K)> = wanted.iter().copied().collect();
    for (len, data) in stale.into_iter().filter(|k| !keep.contains(k)) {
        removed(
            name,
            || describe(len, data),
            trie.remove(&Key::new(len, data)),
        )?;
    }
    Ok(())
}

/// Makes the keys of `map` exactly `wanted` (values 1): inserts every
/// wanted key, then removes the others.
/// The error for a map whose type or layout is not what this code expects.
fn layout(name: &'static str) -> impl FnOnce(MapError) -> EbpfError {
    move |source| EbpfError::MapLayout {
        name,
        source: source.into(),
    }
}

fn sync_hash<K>(
    map: &mut HashMap<&mut MapData, K, u32>,
    name: &'static str,
    wanted: &[K],
) -> Result<(), EbpfError>
where
    K: Pod + Eq + Hash,
    IpAddr: From<K>,
{
    let describe = |k: &K| IpAddr::from(*k).to_string();
    let present = map
        .keys()
        .collect::<Result<Vec<K>, _>>()
        .map_err(|source| EbpfError::MapRead {
            name,
            source: source.into(),
        })?;
    for key in wanted {
        map.insert(key, 1, 0)
            .map_err(|source| EbpfError::MapUpdate {
                name,
                action: "insert",
                item: describe(key),
                source: source.into(),
            })?;
    }
    let keep: HashSet<&K> = wanted.iter().collect();
    for key in present.iter().filter(|k| !keep.contains(k)) {
        removed(name, || describe(key), map.remove(key))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names() {
        assert_eq!(xdp_action_name(XDP_PASS), "XDP_PASS");
        assert_eq!(xdp_action_name(XDP_DROP), "XDP_DROP");
        assert_eq!(xdp_action_name(XDP_REDIRECT), "XDP_REDIRECT");
        assert_eq!(xdp_action_name(99), "XDP_UNKNOWN");
    }

    #[test]
    fn auto_mode_per_driver() {
        use AttachMode::{Auto, Generic, Native};
        assert_eq!(Auto.for_driver(Some("veth")), Generic);
        assert_eq!(Auto.for_driver(Some("ixgbe")), Auto);
        assert_eq!(Auto.for_driver(None), Auto);
        assert_eq!(Native.for_driver(Some("veth")), Native);
        assert_eq!(Generic.for_driver(Some("mlx5_core")), Generic);
    }

    #[test]
    fn attach_mode_deserializes_lowercase() {
        #[derive(serde::Deserialize)]
        struct Cfg {
            mode: AttachMode,
        }
        for (text, mode) in [
            ("auto", AttachMode::Auto),
            ("native", AttachMode::Native),
            ("generic", AttachMode::Generic),
        ] {
            let cfg: Cfg = toml::from_str(&format!("mode = \"{text}\"")).unwrap();
            assert_eq!(cfg.mode, mode);
        }
        assert!(toml::from_str::<Cfg>("mode = \"Native\"").is_err());
        assert_eq!(AttachMode::default(), AttachMode::Auto);
    }

    #[test]
    fn prefixes_split_by_family() {
        let prefixes: Vec<Prefix> = ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let (v4, v6) = split_prefixes(&prefixes);
        assert_eq!(v4, [(24, [203, 0, 113, 0]), (32, [198, 51, 100, 7])]);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].0, 32);
        assert_eq!(v6[0].1[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(
            key_to_prefix_v4(Key::new(24, [203, 0, 113, 0])),
            prefixes[0]
        );
    }
}
