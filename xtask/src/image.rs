//! `cargo xtask image`: the appliance's disk image and update bundles.
//!
//! 1. A Debian 12 root with `mmdebstrap` (minbase, the Debian kernel,
//!    systemd, systemd-boot, iproute2, nftables), from the host's own apt
//!    sources; downloaded packages are kept in `target/firmware/cache`.
//!    Its initramfs holds the storage and filesystem modules listed in
//!    [`INITRAMFS_MODULES`] (`MODULES=list`, zstd).
//! 2. `firmware/rootfs/` laid over it, sluice and sluice-update built in
//!    release mode and installed, the update key's public half, the
//!    version; documentation, locales and kernel modules an appliance does
//!    not use (sound, graphics, media, wireless...) removed; the units
//!    enabled.
//! 3. For each version asked: the root as squashfs (zstd), and a signed
//!    bundle of it with its kernel and initrd.
//! 4. For the first version: the disk (see `sluice_update::layout`): the
//!    ESP (systemd-boot as the removable-media loader, slot A's entry,
//!    kernel and initrd), slot A, an empty slot B, the data partition
//!    (empty, or with `--seed DIR`'s files).
//!
//! Times inside the image are `SOURCE_DATE_EPOCH` (the last commit's time
//! unless set), identifiers are fixed: two builds from the same packages
//! give the same filesystems.
//!
//! The update key: `SLUICE_UPDATE_KEY` names a minisign secret key file
//! (unencrypted; its public key beside it as `<file>.pub`); without it a
//! development key is made once in `target/firmware/keys/` (0600).

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use sluice_update::{
    bundle,
    esp::entry_text,
    layout::{self, Slot},
    version::Version,
};

/// What the image's root is made of (and what they pull in).
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "systemd-boot",
    "systemd-boot-efi",
    "iproute2",
    "nftables",
    "kmod",
    "ethtool",
];

/// The initramfs's modules: the root's filesystem and the storage a box
/// may boot from.
const INITRAMFS_MODULES: &[&str] = &[
    "squashfs",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "nvme",
    "mmc_block",
    "sdhci_pci",
    "usb_storage",
    "uas",
    "xhci_pci",
    "ehci_pci",
];

/// Kernel modules an appliance does not need (relative to
/// `lib/modules/<version>/kernel`).
const STRIP_MODULES: &[&str] = &[
    "sound",
    "drivers/gpu",
    "drivers/media",
    "drivers/infiniband",
    "drivers/staging",
    "drivers/net/wireless",
    "drivers/bluetooth",
    "drivers/iio",
    "drivers/isdn",
    "drivers/input/touchscreen",
    "drivers/input/joystick",
    "net/bluetooth",
    "net/wireless",
    "net/mac80211",
];

/// One bundle to build.
struct Variant {
    version: Version,
    /// Deliberately broken (the gateway's binary fails at once): for the
    /// rollback test.
    broken: bool,
}

/// `cargo xtask image [--version V] [--bundle V[:broken]]... [--seed DIR] [--out DIR]`
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut version = None;
    let mut extra = Vec::new();
    let mut seed = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--version" => version = Some(Version::parse(value()?).map_err(anyhow::Error::msg)?),
            "--bundle" => {
                let v = value()?;
                let (v, broken) = match v.strip_suffix(":broken") {
                    Some(v) => (v, true),
                    None => (v.as_str(), false),
                };
                extra.push(Variant {
                    version: Version::parse(v).map_err(anyhow::Error::msg)?,
                    broken,
                });
            }
            "--seed" => seed = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            other => bail!("image: unknown argument {other:?}"),
        }
    }
    let version = match version {
        Some(v) => v,
        None => Version::parse(env!("CARGO_PKG_VERSION")).map_err(anyhow::Error::msg)?,
    };
    let out = match out {
        Some(o) => o,
        None => crate::target_dir()?.join("firmware"),
    };
    let mut variants = vec![Variant {
        version,
        broken: false,
    }];
    variants.extend(extra);
    build(&out, &variants, seed.as_deref())
}

fn build(out: &Path, variants: &[Variant], seed: Option<&Path>) -> Result<()> {
    let t0 = Instant::now();
    crate::setup::run()?;
    let epoch = source_date_epoch()?;
    println!("image: SOURCE_DATE_EPOCH={epoch}");
    let status = crate::cargo()
        .args(["build", "--release", "-p", "sluice", "-p", "sluice-update"])
        .status()
        .context("cargo build")?;
    ensure!(status.success(), "cargo build: {status}");
    let bin = crate::target_dir()?.join("release");
    let work = out.join("work");
    fs::create_dir_all(&work)?;
    // One build at a time in an output directory: a second one would
    // remove the first's root under it.
    let lock = fs::File::create(out.join(".lock"))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another image build is using {} (its .lock is held)",
            out.display()
        )
    })?;
    let key = update_key(out)?;
    let rootfs = work.join("rootfs");
    bootstrap(out, &rootfs, epoch)?;
    customize(&rootfs, &bin, &key.public, epoch)?;
    println!(
        "image: root ready after {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let kver = kernel_version(&rootfs)?;
    let kernel = rootfs.join(format!("boot/vmlinuz-{kver}"));
    let initrd = rootfs.join(format!("boot/initrd.img-{kver}"));
    let sluice = rootfs.join("usr/bin/sluice");
    let real_sluice = work.join("sluice.real");
    fs::copy(&sluice, &real_sluice)?;
    let mut first_root = None;
    for v in variants {
        stamp(&rootfs, &v.version)?;
        if v.broken {
            fs::write(
                &sluice,
                "#!/bin/sh\necho 'sluice: deliberately broken build (rollback test)' >&2\nexit 1\n",
            )?;
        } else {
            fs::copy(&real_sluice, &sluice)?;
        }
        let sqfs = work.join(format!("root-{}.squashfs", v.version));
        squashfs(&rootfs, &sqfs, epoch)?;
        let name = format!(
            "sluice-{}{}-{}.bundle",
            v.version,
            if v.broken { "-broken" } else { "" },
            std::env::consts::ARCH
        );
        write_bundle(
            &out.join(&name),
            &v.version,
            [&sqfs, &kernel, &initrd],
            &key,
        )?;
        println!(
            "image: {} ({} MiB)",
            out.join(&name).display(),
            fs::metadata(out.join(&name))?.len() >> 20
        );
        if first_root.is_none() {
            first_root = Some(sqfs);
        }
    }
    fs::copy(&real_sluice, &sluice)?;
    let disk = out.join(format!("sluice-{}.img", variants[0].version));
    assemble(
        &work,
        &disk,
        &variants[0].version,
        first_root.as_deref().context("no root")?,
        &kernel,
        &initrd,
        &rootfs,
        seed,
        epoch,
    )?;
    println!(
        "image: {} ({} MiB, {} MiB allocated) in {:.0} s",
        disk.display(),
        layout::disk_bytes() >> 20,
        allocated_mib(&disk),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn source_date_epoch() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v.parse().context("SOURCE_DATE_EPOCH");
    }
    let s = crate::setup::stdout_of(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(crate::root()),
    )?;
    s.trim().parse().context("git log's commit time")
}

struct Key {
    secret: minisign::SecretKey,
    public: String,
}

fn update_key(out: &Path) -> Result<Key> {
    #[expect(clippy::single_match_else, reason = "two ways to a key, side by side")]
    let (sk_path, pk_path) = match std::env::var_os("SLUICE_UPDATE_KEY") {
        Some(p) => {
            let p = PathBuf::from(p);
            let mut pk = p.clone().into_os_string();
            pk.push(".pub");
            (p, PathBuf::from(pk))
        }
        None => {
            let dir = out.join("keys");
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            let sk = dir.join("update.key");
            let pk = dir.join("update.pub");
            if !sk.exists() {
                let kp = minisign::KeyPair::generate_unencrypted_keypair()
                    .map_err(|e| anyhow::anyhow!("minisign keygen: {e}"))?;
                let text = kp
                    .sk
                    .to_box(Some("sluice update key (development)"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .to_string();
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_0600()
                    .open(&sk)?;
                f.write_all(text.as_bytes())?;
                fs::write(
                    &pk,
                    kp.pk
                        .to_box()
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .to_string(),
                )?;
                println!("image: made a development update key in {}", dir.display());
            }
            println!(
                "image: WARNING: signing with the development key in {} (SLUICE_UPDATE_KEY names a real one): fine for a lab, not for boxes in the field",
                dir.display()
            );
            (sk, pk)
        }
    };
    let text = fs::read_to_string(&sk_path).with_context(|| format!("{}", sk_path.display()))?;
    let secret = minisign::SecretKeyBox::from_string(&text)
        .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", sk_path.display()))?;
    let public = fs::read_to_string(&pk_path).with_context(|| format!("{}", pk_path.display()))?;
    minisign_verify::PublicKey::decode(&public)
        .map_err(|e| anyhow::anyhow!("{}: {e}", pk_path.display()))?;
    Ok(Key { secret, public })
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(0o600)
    }
}

/// The apt sources the host itself uses (deb822 or one-line file).
fn host_sources() -> Result<PathBuf> {
    for p in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        let p = Path::new(p);
        if fs::read_to_string(p).is_ok_and(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        }) {
            return Ok(p.to_path_buf());
        }
    }
    bail!(
        "no apt sources on this host (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
    )
}

fn bootstrap(out: &Path, rootfs: &Path, epoch: u64) -> Result<()> {
    let cache = out.join("cache");
    fs::create_dir_all(&cache)?;
    if rootfs.exists() {
        // Never through a mount (a build killed in the middle may leave
        // one): removing would reach into it.
        let root = fs::canonicalize(rootfs)?;
        let mounts =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        if let Some(m) = mounts
            .lines()
            .filter_map(sluice_core::mountinfo::mount_point)
            .find(|m| Path::new(m).starts_with(&root))
        {
            bail!(
                "{m} is mounted inside the last root {}: unmount it first",
                root.display()
            );
        }
        fs::remove_dir_all(rootfs).context("removing the last root")?;
    }
    let modules = INITRAMFS_MODULES.join("\n");
    let cache_s = cache.display().to_string();
    let status = Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--mode=root",
            "--quiet",
            &format!("--include={}", PACKAGES.join(",")),
            "--aptopt=APT::Install-Recommends \"false\"",
            &format!(
                "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && find '{cache_s}' -name '*.deb' -exec cp {{}} \"$1\"/var/cache/apt/archives/ \\;"
            ),
            &format!(
                "--essential-hook=mkdir -p \"$1\"/etc/initramfs-tools/conf.d && printf 'MODULES=list\\nCOMPRESS=zstd\\n' > \"$1\"/etc/initramfs-tools/conf.d/sluice.conf && printf '{modules}\\n' > \"$1\"/etc/initramfs-tools/modules"
            ),
            &format!("--customize-hook=sync-out /var/cache/apt/archives {cache_s}"),
            "--skip=download/empty",
            "bookworm",
        ])
        .arg(rootfs)
        .arg(host_sources()?)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .status()
        .context("cannot run mmdebstrap")?;
    ensure!(status.success(), "mmdebstrap: {status}");
    Ok(())
}

fn sh(script: &str) -> Result<()> {
    let status = Command::new("sh")
        .args(["-euc", script])
        .status()
        .context("sh")?;
    ensure!(status.success(), "{script}: {status}");
    Ok(())
}

fn customize(rootfs: &Path, bin: &Path, public_key: &str, epoch: u64) -> Result<()> {
    let r = rootfs.display().to_string();
    let overlay = crate::root().join("firmware/rootfs").display().to_string();
    sh(&format!("cp -a '{overlay}'/. '{r}'/"))?;
    for b in ["sluice", "sluice-update"] {
        let to = rootfs.join("usr/bin").join(b);
        fs::copy(bin.join(b), &to)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
        // The release profile keeps debug information (for profiling):
        // not on the box. Symbols stay, for backtraces.
        sh(&format!("strip --strip-debug '{}'", to.display()))?;
    }
    fs::create_dir_all(rootfs.join("usr/share/sluice"))?;
    fs::write(rootfs.join("usr/share/sluice/update.pub"), public_key)?;
    fs::create_dir_all(rootfs.join("usr/share/doc/sluice"))?;
    let kver = kernel_version(rootfs)?;
    let mut strip = String::new();
    for m in STRIP_MODULES {
        let _ = write!(strip, " '{r}/lib/modules/{kver}/kernel/{m}'");
    }
    sh(&format!(
        "rm -rf{strip}
         chroot '{r}' depmod -a '{kver}'
         rm -rf '{r}'/usr/share/man/* '{r}'/usr/share/info/* '{r}'/usr/share/locale/*
         find '{r}'/usr/share/doc -mindepth 1 -maxdepth 1 ! -name sluice -exec rm -rf {{}} +
         rm -rf '{r}'/var/cache/apt/* '{r}'/var/lib/apt/lists/* '{r}'/var/log/* '{r}'/var/cache/ldconfig/aux-cache
         rm -rf '{r}'/etc/systemd/network && mkdir '{r}'/etc/systemd/network
         mkdir -p '{r}'/efi '{r}'/var/lib/sluice
         : > '{r}'/etc/machine-id
         SOURCE_DATE_EPOCH={epoch} chroot '{r}' useradd --system --uid 900 --user-group --no-create-home --home-dir /var/lib/sluice/controller --shell /usr/sbin/nologin sluice-controller
         chroot '{r}' systemctl enable sluice-firstboot.service sluice-enrol.service sluice-nft.service sluice-gateway.service sluice-edge.service sluice-controller.service sluice-forward.service sluice-failclosed.service sluice-health.service systemd-networkd.service
         chroot '{r}' systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service systemd-boot-update.service
         cp '{readme}' '{r}'/usr/share/doc/sluice/README.md",
        readme = crate::root().join("firmware/README.md").display()
    ))?;
    // The os-release the image started with (stamped per version).
    let osr = rootfs.join("usr/lib/os-release");
    let orig = rootfs.join("usr/lib/os-release.debian");
    if !orig.exists() {
        fs::copy(&osr, &orig)?;
    }
    Ok(())
}

/// Writes the version into the root (`/usr/lib/sluice/version`,
/// `IMAGE_VERSION` in os-release).
fn stamp(rootfs: &Path, v: &Version) -> Result<()> {
    fs::write(rootfs.join("usr/lib/sluice/version"), format!("{v}\n"))?;
    let orig = fs::read_to_string(rootfs.join("usr/lib/os-release.debian"))?;
    fs::write(
        rootfs.join("usr/lib/os-release"),
        format!("{orig}IMAGE_ID=sluice\nIMAGE_VERSION={v}\n"),
    )?;
    Ok(())
}

fn kernel_version(rootfs: &Path) -> Result<String> {
    let mut v: Vec<String> = fs::read_dir(rootfs.join("lib/modules"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    v.sort();
    ensure!(v.len() == 1, "expected one kernel in the root, found {v:?}");
    Ok(v.remove(0))
}

fn squashfs(rootfs: &Path, out: &Path, epoch: u64) -> Result<()> {
    let _ = fs::remove_file(out);
    let e = epoch.to_string();
    let status = Command::new("mksquashfs")
        .arg(rootfs)
        .arg(out)
        .args([
            "-comp",
            "zstd",
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-time",
            &e,
            "-mkfs-time",
            &e,
            "-e",
            "boot",
        ])
        .status()
        .context("cannot run mksquashfs")?;
    ensure!(status.success(), "mksquashfs: {status}");
    let size = fs::metadata(out)?.len();
    ensure!(
        size <= layout::ROOT_A.mib << 20,
        "the root is {} MiB, a slot {} MiB",
        size >> 20,
        layout::ROOT_A.mib
    );
    Ok(())
}

#[expect(clippy::many_single_char_names, reason = "the three payloads")]
fn write_bundle(out: &Path, v: &Version, files: [&Path; 3], key: &Key) -> Result<()> {
    let mut payloads = Vec::new();
    for f in files {
        let (sha, size) = bundle::sha256(fs::File::open(f)?)?;
        payloads.push((fs::File::open(f)?, size, sha));
    }
    let [mut a, mut b, mut c]: [(fs::File, u64, String); 3] = payloads
        .try_into()
        .map_err(|_| anyhow::anyhow!("three payloads"))?;
    let tmp = out.with_extension("tmp");
    let f = std::io::BufWriter::new(fs::File::create(&tmp)?);
    let trusted = format!("sluice {v}");
    let f = bundle::write(
        f,
        std::env::consts::ARCH,
        v,
        [
            (&mut a.0, a.1, a.2),
            (&mut b.0, b.1, b.2),
            (&mut c.0, c.1, c.2),
        ],
        |m| {
            minisign::sign(None, &key.secret, m, Some(&trusted), None)
                .map(|s| s.to_string())
                .map_err(std::io::Error::other)
        },
    )?;
    f.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    fs::rename(&tmp, out)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    work: &Path,
    disk: &Path,
    v: &Version,
    root: &Path,
    kernel: &Path,
    initrd: &Path,
    rootfs: &Path,
    seed: Option<&Path>,
    epoch: u64,
) -> Result<()> {
    // The ESP.
    let esp_dir = work.join("esp");
    if esp_dir.exists() {
        fs::remove_dir_all(&esp_dir)?;
    }
    for d in ["EFI/BOOT", "loader/entries", "sluice/a", "sluice/b"] {
        fs::create_dir_all(esp_dir.join(d))?;
    }
    fs::copy(
        rootfs.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        esp_dir.join("EFI/BOOT/BOOTX64.EFI"),
    )?;
    fs::write(
        esp_dir.join("loader/loader.conf"),
        "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n",
    )?;
    fs::write(
        esp_dir.join("loader/entries/sluice-a.conf"),
        entry_text(Slot::A, v),
    )?;
    fs::copy(kernel, esp_dir.join("sluice/a/vmlinuz"))?;
    fs::copy(initrd, esp_dir.join("sluice/a/initrd.img"))?;
    let esp_img = work.join("esp.img");
    let _ = fs::remove_file(&esp_img);
    let e = esp_dir.display().to_string();
    sh(&format!(
        "find '{e}' -exec touch -h -d @{epoch} {{}} +
         mkfs.vfat -C --invariant -F 32 -n SLUICE-ESP -i 5C0E0001 '{img}' {kib} >/dev/null
         cd '{e}' && MTOOLS_SKIP_CHECK=1 mcopy -s -m -i '{img}' EFI loader sluice ::/",
        img = esp_img.display(),
        kib = layout::ESP.mib * 1024
    ))?;
    // The data partition.
    let data_dir = work.join("data");
    if data_dir.exists() {
        fs::remove_dir_all(&data_dir)?;
    }
    fs::create_dir_all(&data_dir)?;
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
    if let Some(s) = seed {
        sh(&format!(
            "cp -a '{}'/. '{}'/",
            s.display(),
            data_dir.display()
        ))?;
    }
    let data_img = work.join("data.img");
    let _ = fs::remove_file(&data_img);
    let status = layout::mkfs_data(&data_dir, &data_img, None, epoch).status()?;
    ensure!(status.success(), "mkfs.ext4: {status}");
    // The disk.
    let tmp = disk.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    fs::File::create(&tmp)?.set_len(layout::disk_bytes())?;
    let mut script = format!(
        "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: 2048\nsector-size: 512\n\n",
        layout::DISK_GUID
    );
    for p in layout::PARTS {
        let _ = writeln!(
            script,
            "start={}, size={}, type={}, uuid={}, name=\"{}\"",
            layout::offset(p) / 512,
            (p.mib << 20) / 512,
            p.type_guid,
            p.uuid,
            p.label
        );
    }
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&tmp)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run sfdisk")?;
    child
        .stdin
        .take()
        .context("sfdisk's stdin")?
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    ensure!(status.success(), "sfdisk: {status}");
    for (img, part) in [
        (&esp_img, layout::ESP),
        (&root.to_path_buf(), layout::ROOT_A),
        (&data_img, layout::DATA),
    ] {
        let status = Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", tmp.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", layout::offset(part) >> 20))
            .status()?;
        ensure!(status.success(), "dd {}: {status}", img.display());
    }
    fs::rename(&tmp, disk)?;
    Ok(())
}

fn allocated_mib(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(p).map_or(0, |m| (m.blocks() * 512) >> 20)
}

/// `cargo xtask boot [IMAGE]`: the image on this terminal under qemu
/// (TCG), booted from a copy (`IMAGE.boot`, with its own UEFI variables),
/// its two NICs on qemu's user network with `restrict=on`: they reach
/// nothing, not even this host.
pub(crate) fn boot(args: &[String]) -> Result<()> {
    let image = match args.first() {
        Some(p) => PathBuf::from(p),
        None => crate::target_dir()?.join("firmware/sluice-0.1.0.img"),
    };
    ensure!(
        image.exists(),
        "{} does not exist: build it with `cargo xtask image`",
        image.display()
    );
    let copy = image.with_extension("boot.img");
    let vars = image.with_extension("boot.vars");
    sh(&format!(
        "cp --sparse=always '{}' '{}' && cp {} '{}'",
        image.display(),
        copy.display(),
        sluice_lab::appliance::OVMF_VARS,
        vars.display()
    ))?;
    println!(
        "boot: {} (a copy of {}); Ctrl-A X quits",
        copy.display(),
        image.display()
    );
    let status = Command::new("qemu-system-x86_64")
        .args(sluice_lab::appliance::machine_args(&vars, &copy))
        .args(["-nographic", "-serial", "mon:stdio"])
        .args([
            "-netdev",
            "user,id=lan,restrict=on",
            "-device",
            "virtio-net-pci,netdev=lan",
        ])
        .args([
            "-netdev",
            "user,id=wan,restrict=on",
            "-device",
            "virtio-net-pci,netdev=wan",
        ])
        .status()
        .context("cannot run qemu-system-x86_64")?;
    ensure!(status.success(), "qemu: {status}");
    Ok(())
}
