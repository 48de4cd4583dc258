//! `sluice-update install`: a verified bundle into the slot that is not
//! running, on trial.
//!
//! Order of the writes, so that no moment leaves a slot bootable with
//! half its content:
//! 1. the whole bundle is read and checked (signature, manifest,
//!    architecture, version, every payload's hash): on any error nothing
//!    was written;
//! 2. the inactive slot's boot entry is removed (from here on it does not
//!    boot);
//! 3. the bundle is read again, every check made again, and the payloads
//!    written: the root filesystem to the slot's partition, kernel and
//!    initrd to the ESP;
//! 4. only then the slot's entry is written, with a boot counter.
//!
//! An error in 3 (the file changed under us, a write failed, power lost)
//! leaves the slot without an entry: the running slot stays the one that
//! boots.

use std::{
    fs,
    io::{self, Seek, Write as _},
    path::{Path, PathBuf},
};

use crate::{
    bundle::{self, BundleError, Expect},
    esp::Esp,
    layout::Slot,
    version::Version,
};

/// The machine an install runs on.
#[expect(missing_debug_implementations, reason = "holds a key and a closure")]
pub struct Machine {
    pub esp: Esp,
    /// The block device (or, in tests, file) of each slot's root.
    pub device: Box<dyn Fn(Slot) -> PathBuf>,
    /// The slot this boot runs from.
    pub booted: Slot,
    /// The version this boot runs.
    pub running: Version,
    /// This boot is itself on trial (not yet marked good).
    pub on_trial: bool,
    pub key: minisign_verify::PublicKey,
    pub arch: String,
    /// The update history on the data partition (see [`History`]).
    pub history: History,
    /// Held while an install runs: one at a time.
    pub lock: PathBuf,
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("refused, nothing written: {0}")]
    Refused(#[from] BundleError),
    #[error(
        "refused, nothing written: version {0} already failed its trial on this box (install it by hand with --force to try again)"
    )]
    FailedBefore(String),
    #[error(
        "refused, nothing written: version {bundle} is older than {good}, which has been good on this box (--force installs it anyway)"
    )]
    BelowFloor { bundle: String, good: String },
    #[error("nothing to do: version {0} is installed in slot {1} and boots next")]
    Waiting(String, &'static str),
    #[error(
        "refused, nothing written: this boot (slot {0}) is still on trial; the other slot is the way back. Install again once this boot is marked good"
    )]
    OnTrial(&'static str),
    #[error("refused, nothing written: another install is running ({0})")]
    Busy(String),
    #[error("writing slot {slot} failed; it will not boot (slot {running} still does): {why}")]
    Write {
        slot: &'static str,
        running: &'static str,
        why: String,
    },
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    pub slot: Slot,
    pub version: Version,
    pub tries: u32,
}

/// The updates' history, kept on the data partition (updates never touch
/// it): one line per event, `<unix time> <version> <slot> <event>`, with
/// events `installed`, `good` (its health check passed) and `failed` (it
/// used up its boots). It outlives the boot entries, which an install
/// replaces: a version that failed stays refused, and the newest good
/// version is the floor below which nothing is installed (an old signed
/// bundle with known flaws cannot be replayed).
#[derive(Debug, Clone)]
pub struct History {
    pub path: PathBuf,
}

impl History {
    /// `(version, slot, event)` of every well-formed line.
    pub fn events(&self) -> Vec<(Version, String, String)> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_ascii_whitespace().skip(1);
                let v = Version::parse(w.next()?).ok()?;
                Some((v, w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }

    /// Whether `v` failed its trial here.
    pub fn failed(&self, v: &Version) -> bool {
        self.events()
            .iter()
            .any(|(e, _, what)| e == v && what == "failed")
    }

    /// The newest version that was good here.
    pub fn floor(&self) -> Option<Version> {
        self.events()
            .into_iter()
            .filter(|(_, _, what)| what == "good")
            .map(|(v, _, _)| v)
            .max()
    }

    /// Appends an event (once: the same version, slot and event are not
    /// written twice).
    ///
    /// # Errors
    /// Of the file.
    pub fn record(&self, v: &Version, slot: Slot, event: &str) -> io::Result<()> {
        if self
            .events()
            .iter()
            .any(|(e, s, what)| e == v && s == slot.name() && what == event)
            && event != "installed"
        {
            return Ok(());
        }
        if let Some(d) = self.path.parent() {
            fs::create_dir_all(d)?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{now} {v} {} {event}", slot.name())?;
        f.sync_all()
    }

    /// Records as failed every entry that used up its boots.
    ///
    /// # Errors
    /// Of the ESP or the file.
    pub fn record_failures(&self, esp: &Esp) -> io::Result<()> {
        for e in esp.entries()? {
            if let (Some((0, _)), Some(v)) = (e.counter, e.version.as_deref())
                && let Ok(v) = Version::parse(v)
            {
                self.record(&v, e.slot, "failed")?;
            }
        }
        Ok(())
    }
}

/// Opens a bundle: a regular file, not through a symbolic link (a stick
/// could hold a FIFO or a link to a device).
fn open_bundle(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow() | libc_o_nonblock())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

// Linux's values (x86_64 and aarch64 share them).
const fn libc_o_nofollow() -> i32 {
    0o400_000
}
const fn libc_o_nonblock() -> i32 {
    0o4000
}

/// What refuses a verified bundle of `version` for `slot`.
fn refusals(m: &Machine, version: &Version, slot: Slot, force: bool) -> Result<(), InstallError> {
    let entries = m.esp.entries().unwrap_or_default();
    let same = |e: &crate::esp::Entry| e.version.as_deref() == Some(version.as_str());
    if entries
        .iter()
        .any(|e| e.slot == slot && same(e) && matches!(e.counter, Some((l, 0)) if l > 0))
    {
        return Err(InstallError::Waiting(version.to_string(), slot.name()));
    }
    if force {
        return Ok(());
    }
    let failed_entry = entries
        .iter()
        .any(|e| same(e) && matches!(e.counter, Some((0, _))));
    if failed_entry || m.history.failed(version) {
        return Err(InstallError::FailedBefore(version.to_string()));
    }
    if let Some(good) = m.history.floor()
        && *version < good
    {
        return Err(InstallError::BelowFloor {
            bundle: version.to_string(),
            good: good.to_string(),
        });
    }
    Ok(())
}

/// Installs `bundle` into the slot not running, with `tries` boots to
/// prove itself. Refused unless `force`: a version whose trial failed on
/// this box, and a version older than the newest that was good here.
///
/// # Errors
/// See [`InstallError`].
pub fn install(
    m: &Machine,
    bundle: &Path,
    tries: u32,
    force: bool,
) -> Result<Installed, InstallError> {
    if m.on_trial {
        return Err(InstallError::OnTrial(m.booted.name()));
    }
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&m.lock)
        .map_err(BundleError::Io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(InstallError::Busy(m.lock.display().to_string()));
        }
        Err(fs::TryLockError::Error(e)) => return Err(BundleError::Io(e).into()),
    }
    let expect = Expect {
        arch: &m.arch,
        running: &m.running,
        key: &m.key,
    };
    let mut f = open_bundle(bundle).map_err(BundleError::Io)?;
    // 1. Read and check it all; write nothing.
    let first = bundle::check(&mut f, &expect, |_, r| {
        io::copy(r, &mut io::sink()).map(|_| ())
    })?;
    let slot = m.booted.other();
    refusals(m, &first.version, slot, force)?;
    let fail = |why: String| InstallError::Write {
        slot: slot.name(),
        running: m.booted.name(),
        why,
    };
    // 2. The slot no longer boots; its old kernel and initrd go.
    m.esp
        .remove(slot)
        .map_err(|e| fail(format!("removing its boot entry: {e}")))?;
    m.esp
        .clear_files(slot)
        .map_err(|e| fail(format!("removing its old kernel and initrd: {e}")))?;
    // 3. Again, writing (kernel and initrd under temporary names).
    f.seek(io::SeekFrom::Start(0))
        .map_err(|e| fail(e.to_string()))?;
    let device = (m.device)(slot);
    let second = bundle::check(&mut f, &expect, |file, r| match file.name.as_str() {
        "rootfs.squashfs" => {
            let mut dev = fs::OpenOptions::new().write(true).open(&device)?;
            io::copy(r, &mut dev)?;
            dev.sync_all()
        }
        name => m.esp.write_new(slot, name, r),
    })
    .map_err(|e| fail(e.to_string()))?;
    if second.manifest != first.manifest {
        return Err(fail("the bundle changed while it was read".into()));
    }
    // What landed is what was verified: read it back.
    for file in &second.manifest.files {
        let got = match file.name.as_str() {
            "rootfs.squashfs" => {
                fs::File::open(&device).and_then(|d| bundle::sha256(io::Read::take(d, file.size)))
            }
            name => fs::File::open(m.esp.new_path(slot, name)).and_then(bundle::sha256),
        }
        .map_err(|e| fail(format!("reading {} back: {e}", file.name)))?;
        if got != (file.sha256.clone(), file.size) {
            return Err(fail(format!("{} reads back wrong", file.name)));
        }
    }
    m.esp
        .commit_files(slot)
        .map_err(|e| fail(format!("putting the kernel and initrd in place: {e}")))?;
    // 4. The slot boots next, on trial.
    m.esp
        .add_entry(slot, &second.version, Some(tries))
        .map_err(|e| fail(format!("writing its boot entry: {e}")))?;
    let _ = m.history.record(&second.version, slot, "installed");
    Ok(Installed {
        slot,
        version: second.version,
        tries,
    })
}
