//! The EFI system partition as the updater sees it: each slot's kernel and
//! initrd under `/sluice/<slot>/`, and its systemd-boot entry
//! `/loader/entries/sluice-<slot>[+LEFT[-DONE]].conf`.
//!
//! Boot counting is systemd-boot's (the Boot Loader Specification's): an
//! entry with a counter is on trial; systemd-boot lowers LEFT (and raises
//! DONE) at each boot of it, `systemd-bless-boot` drops the counter once
//! `boot-complete.target` is reached, and an entry with LEFT = 0 is sorted
//! last, so the other slot boots. Among the rest, entries with the same
//! `sort-key` are ordered by `version`, newest first: a freshly installed
//! slot boots next, a good old slot is the fallback.

use std::{
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use crate::{
    layout::{self, Slot},
    version::Version,
};

/// One slot's boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub slot: Slot,
    /// The file's name.
    pub file: String,
    /// The entry's `version` line, if any.
    pub version: Option<String>,
    /// `(left, done)` for an entry on trial.
    pub counter: Option<(u32, u32)>,
}

impl Entry {
    /// `good`, `on trial (N boots left)` or `bad (no boots left)`.
    pub fn state(&self) -> String {
        match self.counter {
            None => "good".into(),
            Some((0, done)) => format!("bad (failed {done} boots)"),
            Some((left, _)) => format!("on trial ({left} boots left)"),
        }
    }
}

/// A mounted ESP.
#[derive(Debug, Clone)]
pub struct Esp {
    pub root: PathBuf,
}

impl Esp {
    fn entries_dir(&self) -> PathBuf {
        self.root.join("loader/entries")
    }

    fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.root.join("sluice").join(slot.name())
    }

    /// The slots' entries (files of other names are ignored).
    ///
    /// # Errors
    /// If the entries' directory cannot be read.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.entries_dir())? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((slot, counter)) = parse_name(&name) else {
                continue;
            };
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let version = text.lines().find_map(|l| {
                l.strip_prefix("version")
                    .filter(|r| r.starts_with([' ', '\t']))
                    .map(|r| r.trim().to_string())
            });
            out.push(Entry {
                slot,
                file: name,
                version,
                counter,
            });
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(out)
    }

    /// Removes every entry of `slot` (it no longer boots).
    ///
    /// # Errors
    /// If one cannot be removed.
    pub fn remove(&self, slot: Slot) -> io::Result<()> {
        for e in self.entries()? {
            if e.slot == slot {
                fs::remove_file(self.entries_dir().join(&e.file))?;
            }
        }
        sync_dir(&self.entries_dir())
    }

    /// Removes `slot`'s kernel, initrd and leftovers (its entry must be
    /// gone first).
    ///
    /// # Errors
    /// Of the filesystem.
    pub fn clear_files(&self, slot: Slot) -> io::Result<()> {
        let dir = self.slot_dir(slot);
        if dir.exists() {
            for e in fs::read_dir(&dir)? {
                let p = e?.path();
                if p.is_file() {
                    fs::remove_file(p)?;
                }
            }
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Where [`Esp::write_new`] writes `name`.
    pub fn new_path(&self, slot: Slot, name: &str) -> PathBuf {
        self.slot_dir(slot).join(format!("{name}.new"))
    }

    /// Writes `r` as `/sluice/<slot>/<name>.new`; [`Esp::commit_files`]
    /// puts it in place once checked.
    ///
    /// # Errors
    /// Of the filesystem or of `r`.
    pub fn write_new(&self, slot: Slot, name: &str, r: &mut dyn Read) -> io::Result<()> {
        let dir = self.slot_dir(slot);
        fs::create_dir_all(&dir)?;
        let path = self.new_path(slot, name);
        let result = (|| {
            let mut f = fs::File::create(&path)?;
            io::copy(r, &mut f)?;
            f.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        result
    }

    /// Renames `slot`'s `*.new` files to their names.
    ///
    /// # Errors
    /// Of the filesystem.
    pub fn commit_files(&self, slot: Slot) -> io::Result<()> {
        let dir = self.slot_dir(slot);
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            if let Some(name) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".new"))
            {
                fs::rename(&p, dir.join(name))?;
            }
        }
        sync_dir(&dir)
    }

    /// Adds `slot`'s entry for `version`, on trial with `tries` boots
    /// (`None`: good at once, as in a new image).
    ///
    /// # Errors
    /// Of the filesystem.
    pub fn add_entry(&self, slot: Slot, version: &Version, tries: Option<u32>) -> io::Result<()> {
        let name = match tries {
            Some(n) => format!("sluice-{}+{n}.conf", slot.name()),
            None => format!("sluice-{}.conf", slot.name()),
        };
        let text = entry_text(slot, version);
        fs::create_dir_all(self.entries_dir())?;
        write_atomic(&self.entries_dir(), &name, |f| f.write_all(text.as_bytes()))
    }
}

/// A slot's entry file.
pub fn entry_text(slot: Slot, version: &Version) -> String {
    let s = slot.name();
    format!(
        "title sluice {version} (slot {s})\nsort-key sluice\nversion {version}\nlinux /sluice/{s}/vmlinuz\ninitrd /sluice/{s}/initrd.img\noptions {}\n",
        layout::cmdline(slot)
    )
}

/// `sluice-a.conf`, `sluice-b+3.conf`, `sluice-b+0-3.conf`.
fn parse_name(name: &str) -> Option<(Slot, Option<(u32, u32)>)> {
    let stem = name.strip_prefix("sluice-")?.strip_suffix(".conf")?;
    let (slot, counter) = match stem.split_once('+') {
        Some((s, c)) => (s, Some(c)),
        None => (stem, None),
    };
    let slot = match slot {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    let counter = match counter {
        None => None,
        Some(c) => {
            let (left, done) = c.split_once('-').unwrap_or((c, "0"));
            Some((left.parse().ok()?, done.parse().ok()?))
        }
    };
    Some((slot, counter))
}

fn write_atomic(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    fill(&mut f)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("sluice-a.conf"), Some((Slot::A, None)));
        assert_eq!(parse_name("sluice-b+3.conf"), Some((Slot::B, Some((3, 0)))));
        assert_eq!(
            parse_name("sluice-b+0-3.conf"),
            Some((Slot::B, Some((0, 3))))
        );
        assert_eq!(parse_name("sluice-c.conf"), None);
        assert_eq!(parse_name("other.conf"), None);
        assert_eq!(parse_name("sluice-a+x.conf"), None);
    }

    #[test]
    fn entries_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let esp = Esp {
            root: d.path().to_path_buf(),
        };
        let v1 = Version::parse("0.1.0").unwrap();
        let v2 = Version::parse("0.2.0").unwrap();
        esp.add_entry(Slot::A, &v1, None).unwrap();
        esp.add_entry(Slot::B, &v2, Some(3)).unwrap();
        let e = esp.entries().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].state(), "good");
        assert_eq!(e[1].version.as_deref(), Some("0.2.0"));
        assert_eq!(e[1].state(), "on trial (3 boots left)");
        let text = fs::read_to_string(d.path().join("loader/entries/sluice-b+3.conf")).unwrap();
        assert!(text.contains("root=PARTUUID=5c0e0002-0000-4000-8000-00000000000b"));
        assert!(text.contains("sluice.slot=b"));
        esp.remove(Slot::B).unwrap();
        assert_eq!(esp.entries().unwrap().len(), 1);
    }
}
