//! Bundles against a machine made of files: a good one is installed into
//! the inactive slot on trial; every bad one is refused with nothing
//! written (the ESP tree and the slot's device are compared byte for byte).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use sluice_update::{
    bundle::{self, BundleError},
    esp::Esp,
    install::{self, History, InstallError, Machine},
    layout::Slot,
    version::Version,
};

struct Keys {
    pk: minisign::PublicKey,
    sk: minisign::SecretKey,
}

fn keys() -> Keys {
    let minisign::KeyPair { pk, sk } = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    Keys { pk, sk }
}

fn verify_key(k: &Keys) -> minisign_verify::PublicKey {
    minisign_verify::PublicKey::decode(&k.pk.to_box().unwrap().to_string()).unwrap()
}

/// A bundle of `version` for `arch` with small pseudo-random payloads,
/// signed by `k`; its payloads.
fn make_bundle(k: &Keys, arch: &str, version: &str) -> (Vec<u8>, [Vec<u8>; 3]) {
    let payloads: [Vec<u8>; 3] = std::array::from_fn(|i| {
        (0..(300_000 + i * 1000))
            .map(|n| ((n * 31 + i * 7) % 251) as u8)
            .collect()
    });
    let hashes: Vec<String> = payloads
        .iter()
        .map(|p| bundle::sha256(&p[..]).unwrap().0)
        .collect();
    let [a, b, c] = &payloads;
    let (mut ra, mut rb, mut rc) = (&a[..], &b[..], &c[..]);
    let out = bundle::write(
        Vec::new(),
        arch,
        &Version::parse(version).unwrap(),
        [
            (&mut ra, a.len() as u64, hashes[0].clone()),
            (&mut rb, b.len() as u64, hashes[1].clone()),
            (&mut rc, c.len() as u64, hashes[2].clone()),
        ],
        |m| {
            minisign::sign(Some(&k.pk), &k.sk, m, Some("test"), None)
                .map(|s| s.to_string())
                .map_err(std::io::Error::other)
        },
    )
    .unwrap();
    (out, payloads)
}

struct Box_ {
    dir: tempfile::TempDir,
}

impl Box_ {
    /// A machine running 0.1.0 from slot A, with an empty slot B.
    fn new() -> Box_ {
        let dir = tempfile::tempdir().unwrap();
        let b = Box_ { dir };
        let esp = b.esp();
        esp.add_entry(Slot::A, &Version::parse("0.1.0").unwrap(), None)
            .unwrap();
        for s in ["a", "b"] {
            fs::write(b.dir.path().join(format!("root-{s}")), vec![0u8; 1 << 20]).unwrap();
        }
        b
    }

    fn esp(&self) -> Esp {
        let root = self.dir.path().join("esp");
        fs::create_dir_all(&root).unwrap();
        Esp { root }
    }

    fn machine(&self, key: minisign_verify::PublicKey, on_trial: bool) -> Machine {
        let d = self.dir.path().to_path_buf();
        Machine {
            esp: self.esp(),
            device: Box::new(move |s: Slot| d.join(format!("root-{}", s.name()))),
            booted: Slot::A,
            running: Version::parse("0.1.0").unwrap(),
            on_trial,
            key,
            arch: "x86_64".into(),
            history: History {
                path: self.dir.path().join("data/update/history"),
            },
            lock: self.dir.path().with_extension("lock"),
        }
    }

    /// Every file under the box, with its content.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.insert(e.path(), fs::read(e.path()).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    fn bundle_file(&self, bytes: &[u8]) -> PathBuf {
        // Beside the box, not in it (the snapshot is of the box).
        let p = self.dir.path().with_extension("bundle");
        fs::write(&p, bytes).unwrap();
        p
    }
}

#[test]
fn a_good_bundle_goes_to_the_inactive_slot_on_trial() {
    let k = keys();
    let (b, payloads) = make_bundle(&k, "x86_64", "0.2.0");
    let bx = Box_::new();
    let m = bx.machine(verify_key(&k), false);
    let done = install::install(&m, &bx.bundle_file(&b), 2, false).unwrap();
    assert_eq!(done.slot, Slot::B);
    assert_eq!(done.version.as_str(), "0.2.0");
    let root_b = fs::read(bx.dir.path().join("root-b")).unwrap();
    assert_eq!(&root_b[..payloads[0].len()], &payloads[0][..]);
    let esp = bx.dir.path().join("esp");
    assert_eq!(fs::read(esp.join("sluice/b/vmlinuz")).unwrap(), payloads[1]);
    assert_eq!(
        fs::read(esp.join("sluice/b/initrd.img")).unwrap(),
        payloads[2]
    );
    let entries = m.esp.entries().unwrap();
    let states: Vec<_> = entries
        .iter()
        .map(|e| (e.file.as_str(), e.version.as_deref(), e.state()))
        .collect();
    assert_eq!(
        states,
        [
            ("sluice-a.conf", Some("0.1.0"), "good".to_string()),
            (
                "sluice-b+2.conf",
                Some("0.2.0"),
                "on trial (2 boots left)".to_string()
            ),
        ]
    );
    // Slot A untouched.
    assert!(
        fs::read(bx.dir.path().join("root-a"))
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
}

/// Installs `bytes` and expects a refusal with nothing written.
fn refused(bytes: &[u8], key_of: &Keys, on_trial: bool) -> InstallError {
    let bx = Box_::new();
    let before = bx.snapshot();
    let m = bx.machine(verify_key(key_of), on_trial);
    let e = install::install(&m, &bx.bundle_file(bytes), 3, false).unwrap_err();
    assert!(e.to_string().contains("nothing written"), "{e}");
    assert_eq!(before, bx.snapshot(), "something was written: {e}");
    e
}

#[test]
fn a_bundle_signed_by_another_key_is_refused() {
    let (b, _) = make_bundle(&keys(), "x86_64", "0.2.0");
    let e = refused(&b, &keys(), false);
    assert!(
        matches!(e, InstallError::Refused(BundleError::Signature(_))),
        "{e}"
    );
}

#[test]
fn a_manifest_changed_after_signing_is_refused() {
    let k = keys();
    let (mut b, _) = make_bundle(&k, "x86_64", "0.2.0");
    // The manifest is the first entry's data (after the 512-byte header).
    let at = 512
        + String::from_utf8_lossy(&b[512..1024])
            .find("0.2.0")
            .unwrap();
    b[at..at + 5].copy_from_slice(b"9.2.0");
    let e = refused(&b, &k, false);
    assert!(
        matches!(e, InstallError::Refused(BundleError::Signature(_))),
        "{e}"
    );
}

#[test]
fn truncated_bundles_are_refused() {
    let k = keys();
    let (b, _) = make_bundle(&k, "x86_64", "0.2.0");
    for cut in [
        0,
        100,
        700,
        2000,
        b.len() / 2,
        b.len() - 2048,
        b.len() - 1100,
    ] {
        let e = refused(&b[..cut], &k, false);
        assert!(
            matches!(
                e,
                InstallError::Refused(BundleError::Truncated(_) | BundleError::Format(_))
            ),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn a_corrupt_payload_is_refused() {
    let k = keys();
    let (mut b, _) = make_bundle(&k, "x86_64", "0.2.0");
    let n = b.len();
    b[n - 200_000] ^= 0x40;
    let e = refused(&b, &k, false);
    assert!(
        matches!(e, InstallError::Refused(BundleError::Payload { .. })),
        "{e}"
    );
}

#[test]
fn a_bundle_for_another_architecture_is_refused() {
    let k = keys();
    let (b, _) = make_bundle(&k, "aarch64", "0.2.0");
    let e = refused(&b, &k, false);
    assert!(
        matches!(e, InstallError::Refused(BundleError::Arch { .. })),
        "{e}"
    );
}

#[test]
fn an_older_or_equal_version_is_refused() {
    let k = keys();
    for v in ["0.1.0", "0.0.9"] {
        let (b, _) = make_bundle(&k, "x86_64", v);
        let e = refused(&b, &k, false);
        assert!(
            matches!(e, InstallError::Refused(BundleError::NotNewer { .. })),
            "{e}"
        );
    }
}

#[test]
fn anything_after_the_payloads_is_refused() {
    let k = keys();
    let (b, _) = make_bundle(&k, "x86_64", "0.2.0");
    // Re-pack with one more entry before the end-of-archive blocks.
    let mut inner = tar::Archive::new(&b[..]);
    let mut out = tar::Builder::new(Vec::new());
    #[expect(
        clippy::unnecessary_to_owned,
        reason = "the path borrows the entry, which is read next"
    )]
    for e in inner.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        out.append_data(&mut h, e.path().unwrap().into_owned(), &mut e)
            .unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_entry_type(tar::EntryType::Regular);
    out.append_data(&mut h, "extra", &b"xyz"[..]).unwrap();
    let e = refused(&out.into_inner().unwrap(), &k, false);
    assert!(
        matches!(e, InstallError::Refused(BundleError::Format(_))),
        "{e}"
    );
}

#[test]
fn nothing_is_installed_while_this_boot_is_on_trial() {
    let k = keys();
    let (b, _) = make_bundle(&k, "x86_64", "0.2.0");
    let e = refused(&b, &k, true);
    assert!(matches!(e, InstallError::OnTrial("a")), "{e}");
}

#[test]
fn a_version_that_failed_its_trial_is_not_installed_again_unless_forced() {
    let k = keys();
    let (b, _) = make_bundle(&k, "x86_64", "0.2.0");
    let bx = Box_::new();
    let machine = bx.machine(verify_key(&k), false);
    let path = bx.bundle_file(&b);
    install::install(&machine, &path, 1, false).unwrap();
    // systemd-boot tried it once and it failed: no boots left.
    let entries = bx.dir.path().join("esp/loader/entries");
    fs::rename(
        entries.join("sluice-b+1.conf"),
        entries.join("sluice-b+0-1.conf"),
    )
    .unwrap();
    let before = bx.snapshot();
    let e = install::install(&machine, &path, 1, false).unwrap_err();
    assert!(
        matches!(e, InstallError::FailedBefore(ref v) if v == "0.2.0"),
        "{e}"
    );
    assert_eq!(before, bx.snapshot());
    let done = install::install(&machine, &path, 1, true).unwrap();
    assert_eq!(done.slot, Slot::B);
    let names: Vec<_> = machine
        .esp
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.file)
        .collect();
    assert_eq!(names, ["sluice-a.conf", "sluice-b+1.conf"]);
}

#[test]
fn the_history_refuses_failed_versions_and_old_ones_and_a_waiting_one_is_not_rewritten() {
    let k = keys();
    let bx = Box_::new();
    let machine = bx.machine(verify_key(&k), false);
    let (b2, _) = make_bundle(&k, "x86_64", "0.2.0");
    let p2 = bx.bundle_file(&b2);
    install::install(&machine, &p2, 3, false).unwrap();
    // Installed and untried: installing it again does nothing.
    let e = install::install(&machine, &p2, 3, false).unwrap_err();
    assert!(
        matches!(e, InstallError::Waiting(ref v, "b") if v == "0.2.0"),
        "{e}"
    );
    // A version recorded as failed is refused even after its entry is gone.
    let v3 = Version::parse("0.3.0").unwrap();
    machine.history.record(&v3, Slot::B, "failed").unwrap();
    let (b3, _) = make_bundle(&k, "x86_64", "0.3.0");
    let e = install::install(&machine, &bx.bundle_file(&b3), 3, false).unwrap_err();
    assert!(
        matches!(e, InstallError::FailedBefore(ref v) if v == "0.3.0"),
        "{e}"
    );
    // Below the newest good version: refused (a replay of an old bundle).
    machine
        .history
        .record(&Version::parse("0.5.0").unwrap(), Slot::A, "good")
        .unwrap();
    let (b4, _) = make_bundle(&k, "x86_64", "0.4.0");
    let e = install::install(&machine, &bx.bundle_file(&b4), 3, false).unwrap_err();
    assert!(matches!(e, InstallError::BelowFloor { .. }), "{e}");
    let events: Vec<_> = machine
        .history
        .events()
        .into_iter()
        .map(|(v, s, e)| format!("{v} {s} {e}"))
        .collect();
    assert_eq!(
        events,
        ["0.2.0 b installed", "0.3.0 b failed", "0.5.0 a good"]
    );
}

#[test]
fn a_fifo_or_a_link_is_not_read_as_a_bundle() {
    let k = keys();
    let bx = Box_::new();
    let machine = bx.machine(verify_key(&k), false);
    let (b, _) = make_bundle(&k, "x86_64", "0.2.0");
    let real = bx.bundle_file(&b);
    let link = bx.dir.path().with_extension("link.bundle");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = install::install(&machine, &link, 3, false).unwrap_err();
    assert!(e.to_string().contains("nothing written"), "{e}");
    let fifo = bx.dir.path().with_extension("fifo.bundle");
    let _ = fs::remove_file(&fifo);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let e = install::install(&machine, &fifo, 3, false).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}
