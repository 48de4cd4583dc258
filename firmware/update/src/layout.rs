//! The appliance disk's partition table: one definition for the image
//! build (`cargo xtask image`), the updater and the tests.
//!
//! ```text
//!  1 MiB  GPT
//!  sluice-esp     256 MiB  FAT32, systemd-boot, each slot's kernel and initrd
//!  sluice-root-a  512 MiB  slot A: read-only root (squashfs)
//!  sluice-root-b  512 MiB  slot B: read-only root (squashfs)
//!  sluice-data    256 MiB  ext4: configuration, certificates, state
//!                          (mounted at /var/lib/sluice; kept across updates)
//! ```
//!
//! The identifiers are fixed, so that one build gives the same image (and
//! a slot's kernel command line can name its root by `PARTUUID`).

/// One partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// GPT partition name (`PARTLABEL`).
    pub label: &'static str,
    /// GPT unique partition GUID (`PARTUUID`), lower case.
    pub uuid: &'static str,
    /// GPT partition type GUID.
    pub type_guid: &'static str,
    /// Size in MiB.
    pub mib: u64,
}

/// The disk's own GUID.
pub const DISK_GUID: &str = "5c0e0000-0000-4000-8000-000000000000";

/// The EFI system partition.
pub const ESP: Part = Part {
    label: "sluice-esp",
    uuid: "5c0e0001-0000-4000-8000-000000000001",
    type_guid: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    mib: 256,
};

/// Root slot A (the one a new image boots).
pub const ROOT_A: Part = Part {
    label: "sluice-root-a",
    uuid: "5c0e0002-0000-4000-8000-00000000000a",
    // "Root partition (x86-64)" of the discoverable partitions spec.
    type_guid: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    mib: 512,
};

/// Root slot B (empty in a new image).
pub const ROOT_B: Part = Part {
    label: "sluice-root-b",
    uuid: "5c0e0002-0000-4000-8000-00000000000b",
    type_guid: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    mib: 512,
};

/// The data partition.
pub const DATA: Part = Part {
    label: "sluice-data",
    uuid: "5c0e0003-0000-4000-8000-000000000003",
    // "Linux filesystem data".
    type_guid: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    mib: 256,
};

/// The partitions in disk order.
pub const PARTS: [Part; 4] = [ESP, ROOT_A, ROOT_B, DATA];

/// Where the first partition starts, and the space left at the end for the
/// backup GPT, in MiB.
pub const START_MIB: u64 = 1;
/// See [`START_MIB`].
pub const END_MIB: u64 = 1;

/// The filesystem UUID of the data partition's ext4.
pub const DATA_FS_UUID: &str = "5c0e0004-0000-4000-8000-000000000004";

/// Offset of a partition from the start of the disk, in bytes.
pub fn offset(part: Part) -> u64 {
    let mut mib = START_MIB;
    for p in PARTS {
        if p == part {
            break;
        }
        mib += p.mib;
    }
    mib << 20
}

/// The disk's size in bytes.
pub fn disk_bytes() -> u64 {
    (START_MIB + PARTS.iter().map(|p| p.mib).sum::<u64>() + END_MIB) << 20
}

/// A root slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// `a` or `b`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    #[must_use]
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot's root partition.
    pub fn part(self) -> Part {
        match self {
            Slot::A => ROOT_A,
            Slot::B => ROOT_B,
        }
    }

    /// The slot named on a kernel command line (`sluice.slot=a`).
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("sluice.slot="))
            .and_then(|s| match s {
                "a" => Some(Slot::A),
                "b" => Some(Slot::B),
                _ => None,
            })
    }
}

/// The kernel command line of a slot's boot entry.
pub fn cmdline(slot: Slot) -> String {
    format!(
        "root=PARTUUID={} rootfstype=squashfs ro console=ttyS0,115200 net.ifnames=0 panic=10 sluice.slot={}",
        slot.part().uuid,
        slot.name()
    )
}

/// The `mkfs.ext4` that makes the data partition from the files in
/// `seed` (their owners and modes kept): into `target` as a whole, or at
/// `offset` bytes into it (a disk image), `DATA.mib` large. With
/// `SOURCE_DATE_EPOCH` the result is the same each time.
pub fn mkfs_data(
    seed: &std::path::Path,
    target: &std::path::Path,
    offset: Option<u64>,
    epoch: u64,
) -> std::process::Command {
    let mut ext = format!("root_owner=0:0,hash_seed={DATA_FS_UUID}");
    if let Some(o) = offset {
        ext = format!("{ext},offset={o}");
    }
    let mut c = std::process::Command::new("mkfs.ext4");
    c.args([
        "-q",
        "-F",
        "-L",
        DATA.label,
        "-U",
        DATA_FS_UUID,
        "-E",
        &ext,
        "-d",
    ])
    .arg(seed)
    .arg(target)
    .arg(format!("{}M", DATA.mib))
    .env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_table() {
        assert_eq!(offset(ESP), 1 << 20);
        assert_eq!(offset(ROOT_A), 257 << 20);
        assert_eq!(offset(ROOT_B), (257 + 512) << 20);
        assert_eq!(offset(DATA), (257 + 1024) << 20);
        assert_eq!(disk_bytes(), (1 + 256 + 1024 + 256 + 1) << 20);
    }

    #[test]
    fn slot_from_cmdline() {
        assert_eq!(Slot::from_cmdline(&cmdline(Slot::B)), Some(Slot::B));
        assert_eq!(Slot::from_cmdline("root=/dev/vda2 ro"), None);
        assert_eq!(Slot::from_cmdline("sluice.slot=c"), None);
    }
}
