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
    io::{self, Seek},
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
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("refused, nothing written: {0}")]
    Refused(#[from] BundleError),
    #[error(
        "refused, nothing written: this boot (slot {0}) is still on trial; the other slot is the way back. Install again once this boot is marked good"
    )]
    OnTrial(&'static str),
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

/// Installs `bundle` into the slot not running, with `tries` boots to
/// prove itself.
///
/// # Errors
/// See [`InstallError`].
pub fn install(m: &Machine, bundle: &Path, tries: u32) -> Result<Installed, InstallError> {
    if m.on_trial {
        return Err(InstallError::OnTrial(m.booted.name()));
    }
    let expect = Expect {
        arch: &m.arch,
        running: &m.running,
        key: &m.key,
    };
    let mut f = fs::File::open(bundle).map_err(BundleError::Io)?;
    // 1. Read and check it all; write nothing.
    let first = bundle::check(&mut f, &expect, |_, r| {
        io::copy(r, &mut io::sink()).map(|_| ())
    })?;
    let slot = m.booted.other();
    let fail = |why: String| InstallError::Write {
        slot: slot.name(),
        running: m.booted.name(),
        why,
    };
    // 2. The slot no longer boots.
    m.esp
        .remove(slot)
        .map_err(|e| fail(format!("removing its boot entry: {e}")))?;
    // 3. Again, writing.
    f.seek(io::SeekFrom::Start(0))
        .map_err(|e| fail(e.to_string()))?;
    let device = (m.device)(slot);
    let second = bundle::check(&mut f, &expect, |file, r| match file.name.as_str() {
        "rootfs.squashfs" => {
            let mut dev = fs::OpenOptions::new().write(true).open(&device)?;
            io::copy(r, &mut dev)?;
            dev.sync_all()
        }
        name => m.esp.write_file(slot, name, r),
    })
    .map_err(|e| fail(e.to_string()))?;
    if second.manifest != first.manifest {
        return Err(fail("the bundle changed while it was read".into()));
    }
    // 4. The slot boots next, on trial.
    m.esp
        .add_entry(slot, &second.version, Some(tries))
        .map_err(|e| fail(format!("writing its boot entry: {e}")))?;
    Ok(Installed {
        slot,
        version: second.version,
        tries,
    })
}
