//! VLANs on the LAN side: what the classifier does with the tag of a
//! frame it passes to the kernel ([`VlanMode`]), untag mode's egress
//! program, and the lab's VLAN host programs.
use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{
        SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink},
    },
};
use sluice_common::{
    LAB_VLAN_POP_PROGRAM, LAB_VLAN_PUSH_PROGRAM, VLAN_EGRESS_PROGRAM, VLAN_MODE_KERNEL,
    VLAN_MODE_UNTAG, map_names, setting,
};

use super::{CLASSIFIER_OBJECT, EbpfError, Programs, VlanMode, error_chain, layout};

/// Untag mode's attached egress program: a `bpf_link` (TCX) pinned in
/// bpffs beside the classifier's, so that a crash leaves both attached
/// (the classifier keeps untagging, the egress program keeps tagging the
/// kernel's frames: no host's frames reach another VLAN). Without a pin
/// (no path given, or a kernel before TCX) it lives as long as the
/// classifier.
#[derive(Debug)]
pub(super) struct Egress {
    /// The link while held by this process, and its pin.
    pub(super) link: Option<(FdLink, Option<PathBuf>)>,
}

impl Egress {
    /// Unpins and drops the link: the program detaches.
    pub(super) fn detach(&mut self) -> Result<(), EbpfError> {
        if let Some((fd, Some(path))) = self.link.take() {
            let res = std::fs::remove_file(&path).map_err(|e| EbpfError::Pin {
                path: path.clone(),
                what: format!("unpinning: {e}"),
            });
            drop(fd);
            return res;
        }
        Ok(())
    }
}

impl Programs {
    /// Sets the VLAN mode (see [`VlanMode`]). For [`VlanMode::Untag`] on
    /// a live LAN, attach the egress program first
    /// ([`Programs::attach_vlan_egress`]): no frame may be untagged
    /// without its way back.
    pub fn set_vlan_mode(&mut self, mode: VlanMode) -> Result<(), EbpfError> {
        let value = match mode {
            VlanMode::Kernel => VLAN_MODE_KERNEL,
            VlanMode::Untag => VLAN_MODE_UNTAG,
        };
        self.set_setting(setting::VLAN_MODE, value)
    }

    /// Attaches untag mode's egress program to `interface` (the LAN):
    /// the kernel's frames to hosts on a VLAN leave tagged. With `pin`, the
    /// link is pinned there (adopted if an earlier run left it: the
    /// program is replaced in place, never detached), so that it outlives
    /// a crash like the classifier's own link; [`Programs::detach`]
    /// unpins it.
    pub(crate) fn attach_vlan_egress(
        &mut self,
        interface: &str,
        pin: Option<&Path>,
    ) -> Result<(), EbpfError> {
        if self.vlan_egress.is_some() {
            return Ok(());
        }
        let err = |what: String| EbpfError::VlanEgress {
            interface: interface.to_owned(),
            what,
        };
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(VLAN_EGRESS_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or(EbpfError::MissingProgram {
                name: VLAN_EGRESS_PROGRAM,
            })?;
        p.load()
            .map_err(|e| err(format!("loading: {e}: {}", error_chain(&e))))?;
        let adopted = match pin.filter(|p| p.exists()) {
            Some(path) => match PinnedLink::from_pin(path) {
                Ok(old) => {
                    let link = SchedClassifierLink::try_from(FdLink::from(old))
                        .map_err(|e| err(format!("the pinned link is not a TCX link: {e}")))?;
                    let id = p
                        .attach_to_link(link)
                        .map_err(|e| err(format!("replacing the pinned link's program: {e}")))?;
                    log::info!(
                        "untag mode: adopted the VLAN egress link pinned at {} by an earlier run",
                        path.display()
                    );
                    Some(id)
                }
                Err(e) => {
                    log::warn!("untag mode: stale pin {}: {e}; removing it", path.display());
                    std::fs::remove_file(path)
                        .map_err(|e| err(format!("removing stale pin {}: {e}", path.display())))?;
                    None
                }
            },
            None => None,
        };
        let id = if let Some(id) = adopted {
            id
        } else {
            // With TCX (Linux 6.6+) no qdisc is needed; before, the
            // program hangs off clsact, which may already be there.
            let _ = tc::qdisc_add_clsact(interface);
            p.attach(interface, TcAttachType::Egress)
                .map_err(|e| err(format!("attaching: {e}: {}", error_chain(&e))))?
        };
        let link = p
            .take_link(id)
            .map_err(|e| err(format!("taking the link: {e}")))?;
        let held = match (FdLink::try_from(link), pin) {
            (Ok(fd), Some(path)) if path.exists() => Some((fd, Some(path.to_path_buf()))),
            (Ok(fd), Some(path)) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
                }
                let pinned = fd
                    .pin(path)
                    .map_err(|e| err(format!("pinning at {}: {e}", path.display())))?;
                Some((pinned.into(), Some(path.to_path_buf())))
            }
            (Ok(fd), None) => Some((fd, None)),
            (Err(e), _) => {
                // A netlink attachment (kernel before TCX): it stays until
                // detached by name or the interface goes; not pinnable.
                log::warn!(
                    "untag mode: the VLAN egress program on {interface} is not a bpf_link ({e}); it is not pinned"
                );
                None
            }
        };
        log::info!("untag mode: VLAN egress program attached to {interface}");
        self.vlan_egress = Some(Egress { link: held });
        Ok(())
    }

    /// Untag mode: the LAN hosts' VLAN ids the classifier has noted, by
    /// MAC address.
    pub fn vlan_hosts(&self) -> Result<Vec<([u8; 6], u16)>, EbpfError> {
        let name = map_names::VLAN_HOSTS;
        let m = aya::maps::HashMap::<_, sluice_common::MacKey, u32>::try_from(
            self.ebpf.map(name).ok_or(EbpfError::MissingMap { name })?,
        )
        .map_err(layout(name))?;
        Ok(m.iter()
            .filter_map(Result::ok)
            .map(|(k, tci)| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&k[..6]);
                (mac, (tci & 0x0fff) as u16)
            })
            .collect())
    }

    /// The XDP classifier program's kernel id (for tools and tests that
    /// open it by id).
    pub fn program_id(&self) -> Option<u32> {
        let p: &aya::programs::Xdp = self.ebpf.program(self.classifier_name())?.try_into().ok()?;
        p.info().ok().map(|i| i.id())
    }
}

/// Where [`pin_lab_vlan_host`] pinned the lab VLAN host's programs.
#[derive(Debug, Clone)]
pub struct LabVlanPins {
    /// The egress program (tags every frame).
    pub push: PathBuf,
    /// The ingress program (untags the VLAN's frames, drops the rest).
    pub pop: PathBuf,
}

/// Lab only: loads the VLAN host programs for VLAN `vid` and pins them in
/// `dir` (a bpffs directory), for `tc filter ... bpf da object-pinned` in
/// a lab host's namespace. The pins (and the programs, once tc holds
/// them) outlive this process; remove the pins when attached.
pub fn pin_lab_vlan_host(vid: u16, dir: &Path) -> Result<LabVlanPins, EbpfError> {
    if CLASSIFIER_OBJECT.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    let mut ebpf = Ebpf::load(CLASSIFIER_OBJECT).map_err(|source| EbpfError::Object {
        source: source.into(),
    })?;
    let name = map_names::LAB_VLAN;
    let mut a =
        Array::<_, u32>::try_from(ebpf.map_mut(name).ok_or(EbpfError::MissingMap { name })?)
            .map_err(layout(name))?;
    a.set(0, u32::from(vid), 0)
        .map_err(|source| EbpfError::MapUpdate {
            name,
            action: "insert",
            item: format!("VLAN {vid}"),
            source: source.into(),
        })?;
    let mut pin = |prog: &'static str| -> Result<PathBuf, EbpfError> {
        let err = |what: String| EbpfError::SockHook { name: prog, what };
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .and_then(|p| p.try_into().ok())
            .ok_or(EbpfError::MissingProgram { name: prog })?;
        p.load()
            .map_err(|e| err(format!("loading: {e}: {}", error_chain(&e))))?;
        let path = dir.join(prog);
        let _ = std::fs::remove_file(&path);
        p.pin(&path)
            .map_err(|e| err(format!("pinning at {}: {e}", path.display())))?;
        // The fd is only needed until pinned.
        let _ = p.fd().map(|fd| fd.as_fd().try_clone_to_owned());
        Ok(path)
    };
    Ok(LabVlanPins {
        push: pin(LAB_VLAN_PUSH_PROGRAM)?,
        pop: pin(LAB_VLAN_POP_PROGRAM)?,
    })
}
