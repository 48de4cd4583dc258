//! Which process an `execve` makes, and whether it is listed.
//!
//! The kernel reports, per `execve`, every file it opens to execute: the
//! program, then its ELF loader (`PT_INTERP`), or a script, then its
//! interpreter (and that one's loader). The process is what
//! `/proc/<pid>/exe` will name: the program for ELF files, the interpreter
//! for scripts. [`ExecTracker`] turns the sequence of files into one
//! verdict per `execve`: a listed program, or a listed script or
//! interpreter, makes the process bypass; the loader never counts.
//!
//! [`FileFacts`] are what is read from the file (path, kind, loader, and
//! whether it matches), cached by file identity so that a busy host pays
//! the reading (and hashing, for digest patterns) once per executable.
//!
//! A verdict names the file the process will run ([`FileKey`]: the device
//! as the kernel numbers it, and the inode): the program for an ELF file
//! (not its loader), the interpreter for a script. The kernel applies it
//! only to a process that then runs that very file.
use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::{FileExt, MetadataExt as _},
    time::{Duration, Instant},
};

use sluice_core::process::elf::{self, elf_interp, read_full_at};

use crate::process::ProcessSet;

/// How long a program's loader (or a script's interpreter) may follow it
/// (microseconds in practice; as long as the kernel's grant window).
const FOLLOW_WINDOW: Duration = Duration::from_millis(100);
/// Bound of the per-process and per-file state.
const MAX_ENTRIES: usize = 4096;

/// What kind of executable a file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `#!`: its interpreter follows.
    Script,
    /// A program (ELF or anything else the kernel runs); `interp` is its
    /// ELF loader's resolved path, if it has one.
    Program {
        /// `PT_INTERP`, as the program names it.
        interp: Option<String>,
    },
}

/// What sluice knows about an executable file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// Absolute path, as the kernel resolved it.
    pub path: String,
    /// Script or program.
    pub kind: Kind,
    /// The pattern it matches, if any.
    pub matched: Option<String>,
}

/// A file as the exec tracepoint sees it: its superblock's device
/// (`MKDEV`: `major << 20 | minor`) and its inode number.
pub type FileKey = (u32, u64);

#[derive(Debug)]
struct Pending {
    /// The loader the last program of this process named.
    expect: Option<String>,
    /// Whether the script(s) just executed matched.
    script_match: Option<bool>,
    /// The verdict of the program that named `expect`.
    verdict: bool,
    /// The file that program is (what the process will run).
    exe: FileKey,
    at: Instant,
}

/// Per-process state across the files of one `execve`.
#[derive(Debug, Default)]
pub struct ExecTracker {
    pending: HashMap<u32, Pending>,
}

impl ExecTracker {
    /// Process `pid` is executing the file described by `facts`, `key`.
    /// Returns the process's new verdict (true: bypass) and the file it
    /// is for. For the loader of the program just decided it is that
    /// program's verdict and file again (so that the grant is rewritten
    /// with a fresh time, still naming the program: the process runs the
    /// program, not its loader).
    pub fn on_exec(
        &mut self,
        pid: u32,
        facts: &FileFacts,
        key: FileKey,
        now: Instant,
    ) -> (bool, FileKey) {
        let prev = self
            .pending
            .remove(&pid)
            .filter(|p| now.saturating_duration_since(p.at) < FOLLOW_WINDOW);
        // The loader is recognised by its file name: `PT_INTERP` names it
        // through symlinks (`/lib64/ld-linux-x86-64.so.2`) and the kernel
        // reports the resolved path. Resolving it here would mean following
        // a path any program names, on any filesystem, while every exec
        // on the host waits.
        if let Some(p) = &prev
            && let Some(e) = &p.expect
            && file_name(e) == file_name(&facts.path)
        {
            return (p.verdict, p.exe);
        }
        let inherited = prev.and_then(|p| p.script_match).unwrap_or(false);
        let verdict = facts.matched.is_some() || inherited;
        let next = match &facts.kind {
            Kind::Script => Some(Pending {
                expect: None,
                script_match: Some(verdict),
                verdict,
                exe: key,
                at: now,
            }),
            Kind::Program { interp: Some(i) } => Some(Pending {
                expect: Some(i.clone()),
                script_match: None,
                verdict,
                exe: key,
                at: now,
            }),
            Kind::Program { interp: None } => None,
        };
        if let Some(n) = next {
            if self.pending.len() >= MAX_ENTRIES {
                self.pending
                    .retain(|_, p| now.saturating_duration_since(p.at) < FOLLOW_WINDOW);
                if self.pending.len() >= MAX_ENTRIES {
                    self.pending.clear();
                }
            }
            self.pending.insert(pid, n);
        }
        (verdict, key)
    }
}

/// Mount id to device (as the kernel numbers it), from
/// `/proc/self/mountinfo`, re-read when an unknown mount shows up (at most
/// once a second).
#[derive(Debug, Default)]
pub struct MountDevs {
    devs: HashMap<u32, u32>,
    read_at: Option<Instant>,
}

impl MountDevs {
    /// The [`FileKey`] of `file`: its inode number, and its superblock's
    /// device from the mount table through the mount it was opened on
    /// (one `statx`; the table is re-read only for a mount not seen
    /// before). `stat`'s device is not always the superblock's (btrfs
    /// subvolumes, overlayfs report others); it is the fallback when the
    /// mount is not in this process's table (another mount namespace's),
    /// and then a mismatch means no bypass.
    pub fn file_key(&mut self, file: &File) -> std::io::Result<FileKey> {
        let id = crate::sys::file_id::file_id(file)?;
        let dev = id
            .mnt_id
            .and_then(|m| u32::try_from(m).ok())
            .and_then(|m| self.dev_of(m))
            .unwrap_or_else(|| mkdev(id.dev.0, id.dev.1));
        Ok((dev, id.ino))
    }

    fn dev_of(&mut self, mnt_id: u32) -> Option<u32> {
        if let Some(&d) = self.devs.get(&mnt_id) {
            return Some(d);
        }
        let now = Instant::now();
        if self
            .read_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.read_at = Some(now);
        self.devs = parse_mount_devs(&std::fs::read_to_string("/proc/self/mountinfo").ok()?);
        self.devs.get(&mnt_id).copied()
    }
}

/// Mount id to `MKDEV(major, minor)` from mountinfo lines (`36 35 98:0
/// /mnt1 /mnt2 ...`: id, parent, major:minor).
fn parse_mount_devs(text: &str) -> HashMap<u32, u32> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let id = w.next()?.parse().ok()?;
            let (ma, mi) = w.nth(1)?.split_once(':')?;
            Some((id, mkdev(ma.parse().ok()?, mi.parse().ok()?)))
        })
        .collect()
}

/// The kernel's internal device number (`MKDEV`: 12-bit major above a
/// 20-bit minor).
fn mkdev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// File identity for the cache: a file rewritten in place gets new facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
}

/// [`FileFacts`] by file identity, for one [`ProcessSet`].
#[derive(Debug, Default)]
pub struct FactsCache {
    map: HashMap<FileId, FileFacts>,
}

impl FactsCache {
    /// Forgets everything (the process list changed).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// The facts of `file`, found at `path`, against `set`.
    pub fn facts(
        &mut self,
        file: &File,
        path: &str,
        set: &ProcessSet,
    ) -> std::io::Result<FileFacts> {
        let m = file.metadata()?;
        let id = FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec(),
        };
        if let Some(f) = self.map.get(&id)
            && f.path == path
        {
            return Ok(f.clone());
        }
        let facts = read_facts(file, path, set)?;
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(id, facts.clone());
        Ok(facts)
    }
}

/// Reads what [`FileFacts`] holds from `file`.
fn read_facts(file: &File, path: &str, set: &ProcessSet) -> std::io::Result<FileFacts> {
    let mut head = [0u8; 64];
    let n = read_full_at(&At(file), &mut head, 0)?;
    let head = &head[..n];
    let kind = if head.starts_with(b"#!") {
        Kind::Script
    } else {
        Kind::Program {
            interp: elf_interp(&At(file), head),
        }
    };
    let digest = if set.needs_digest() {
        Some(crate::process::sha256_read(file)?)
    } else {
        None
    };
    let matched = set.matching(path, digest.as_ref()).map(ToString::to_string);
    Ok(FileFacts {
        path: path.to_string(),
        kind,
        matched,
    })
}

/// A file as [`elf::ReadAt`] (the trait and `File` are both foreign here).
struct At<'a>(&'a File);

impl elf::ReadAt for At<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        FileExt::read_at(self.0, buf, off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessPattern;

    fn facts(path: &str, kind: Kind, matched: bool) -> FileFacts {
        FileFacts {
            path: path.into(),
            kind,
            matched: matched.then(|| "x".into()),
        }
    }

    const LD: &str = "/usr/lib/ld.so";
    const K: FileKey = (1, 2);

    #[test]
    fn the_loaders_verdict_names_the_program_and_a_scripts_the_interpreter() {
        let mut t = ExecTracker::default();
        let now = Instant::now();
        let prog = facts(
            "/usr/bin/fetch",
            Kind::Program {
                interp: Some(LD.into()),
            },
            true,
        );
        let ld = facts(LD, Kind::Program { interp: None }, false);
        assert_eq!(t.on_exec(7, &prog, (8, 100), now), (true, (8, 100)));
        // The loader's own file is not what the process runs.
        assert_eq!(t.on_exec(7, &ld, (8, 5), now), (true, (8, 100)));
        let script = facts("/opt/run.sh", Kind::Script, true);
        let sh = facts(
            "/usr/bin/dash",
            Kind::Program {
                interp: Some(LD.into()),
            },
            false,
        );
        assert_eq!(t.on_exec(9, &script, (8, 200), now), (true, (8, 200)));
        assert_eq!(t.on_exec(9, &sh, (8, 300), now), (true, (8, 300)));
        assert_eq!(t.on_exec(9, &ld, (8, 5), now), (true, (8, 300)));
    }

    #[test]
    fn device_numbers_as_the_kernel_counts_them() {
        let devs = parse_mount_devs(
            "22 1 0:21 / /sys rw - sysfs sysfs rw\n29 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\nbad\n",
        );
        assert_eq!(devs.get(&29), Some(&((259 << 20) | 2)));
        assert_eq!(devs.get(&22), Some(&21));
        // This process's own executable: found through its mount.
        let f = File::open("/proc/self/exe").unwrap();
        let (dev, ino) = MountDevs::default().file_key(&f).unwrap();
        assert_eq!(ino, f.metadata().unwrap().ino());
        assert_ne!(dev, 0);
    }

    #[test]
    fn the_loader_is_known_by_its_file_name() {
        let mut t = ExecTracker::default();
        let now = Instant::now();
        let prog = facts(
            "/bin/a",
            Kind::Program {
                interp: Some("/lib64/ld-linux-x86-64.so.2".into()),
            },
            true,
        );
        let ld = facts(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            Kind::Program { interp: None },
            false,
        );
        assert!(t.on_exec(5, &prog, K, now).0);
        assert!(t.on_exec(5, &ld, K, now).0);
    }

    #[test]
    fn a_program_decides_and_its_loader_does_not() {
        let mut t = ExecTracker::default();
        let now = Instant::now();
        let prog = facts(
            "/usr/bin/fetch",
            Kind::Program {
                interp: Some(LD.into()),
            },
            true,
        );
        let ld = facts(LD, Kind::Program { interp: None }, false);
        assert!(t.on_exec(7, &prog, K, now).0);
        assert!(t.on_exec(7, &ld, K, now).0);
        // The next execve of that process is decided afresh.
        let other = facts(
            "/usr/bin/other",
            Kind::Program {
                interp: Some(LD.into()),
            },
            false,
        );
        assert!(!t.on_exec(7, &other, K, now).0);
        assert!(!t.on_exec(7, &ld, K, now).0);
        // A static program has no loader.
        let st = facts("/bin/static", Kind::Program { interp: None }, true);
        assert!(t.on_exec(7, &st, K, now).0);
    }

    #[test]
    fn a_listed_script_or_interpreter_makes_the_process_bypass() {
        let mut t = ExecTracker::default();
        let now = Instant::now();
        let script = facts("/opt/run.sh", Kind::Script, true);
        let sh = facts(
            "/usr/bin/dash",
            Kind::Program {
                interp: Some(LD.into()),
            },
            false,
        );
        let ld = facts(LD, Kind::Program { interp: None }, false);
        assert!(t.on_exec(9, &script, K, now).0);
        assert!(t.on_exec(9, &sh, K, now).0);
        assert!(t.on_exec(9, &ld, K, now).0);
        // Unlisted script, listed interpreter.
        let script = facts("/opt/other.sh", Kind::Script, false);
        let sh = facts(
            "/usr/bin/dash",
            Kind::Program {
                interp: Some(LD.into()),
            },
            true,
        );
        assert!(!t.on_exec(9, &script, K, now).0);
        assert!(t.on_exec(9, &sh, K, now).0);
    }

    #[test]
    fn stale_expectations_expire() {
        let mut t = ExecTracker::default();
        let now = Instant::now();
        let prog = facts(
            "/usr/bin/a",
            Kind::Program {
                interp: Some(LD.into()),
            },
            true,
        );
        assert!(t.on_exec(3, &prog, K, now).0);
        // The loader executed directly much later is a program of its own.
        let ld = facts(LD, Kind::Program { interp: None }, false);
        assert!(!t.on_exec(3, &ld, K, now + Duration::from_secs(1)).0);
    }

    #[test]
    fn reads_a_real_elf_loader_and_matches_by_name() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let path = exe.to_string_lossy().into_owned();
        let name = path.rsplit('/').next().unwrap().to_string();
        let set = ProcessSet::new(vec![ProcessPattern::parse(&name).unwrap()]);
        let f = File::open(&exe).unwrap();
        let mut cache = FactsCache::default();
        let facts = cache.facts(&f, &path, &set).unwrap();
        assert_eq!(facts.matched.as_deref(), Some(name.as_str()));
        // Test binaries are dynamically linked on Debian.
        let Kind::Program { interp: Some(ld) } = &facts.kind else {
            panic!("no loader found in {path}: {facts:?}");
        };
        assert!(ld.starts_with('/'), "{ld}");
        let sh = File::open("/bin/sh").unwrap();
        let s = cache.facts(&sh, "/bin/sh", &set).unwrap();
        assert_eq!(s.matched, None);
    }

    #[test]
    fn malformed_elf_headers_name_no_loader() {
        let dir = std::env::temp_dir().join(format!("sluice-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad");
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"\x7fELF");
        head[4] = 2;
        head[5] = 1;
        // phoff far beyond the file, phentsize 56, phnum 0xffff.
        head[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        head[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        head[0x38..0x3a].copy_from_slice(&0xffffu16.to_le_bytes());
        std::fs::write(&p, &head).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(elf_interp(&At(&f), &head), None);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        let f = File::open(&p).unwrap();
        let facts = FactsCache::default()
            .facts(&f, p.to_str().unwrap(), &ProcessSet::default())
            .unwrap();
        assert_eq!(facts.kind, Kind::Script);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
