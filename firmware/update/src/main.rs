//! `sluice-update`: install a signed bundle into the inactive slot, show
//! the slots, decide whether this boot is good, and turn routing on once
//! the gateway's classifier is attached. See the crate docs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use sluice_update::{
    bundle::{self, Expect},
    enrol,
    esp::Esp,
    health,
    install::{self, History, Machine},
    layout::Slot,
    version::Version,
};

const ESP: &str = "/efi";
const KEY: &str = "/usr/share/sluice/update.pub";
const VERSION: &str = "/usr/lib/sluice/version";
const EFIVARS: &str = "/sys/firmware/efi/efivars";
const HISTORY: &str = "/var/lib/sluice/update/history";
const LOCK: &str = "/run/sluice-update.lock";
const GATEWAY: &str = "/var/lib/sluice/gateway.toml";

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a bundle and write it into the slot that is not running; it
    /// boots next, on trial.
    Install {
        bundle: PathBuf,
        /// Boots the new slot gets to reach a good state.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
        tries: u32,
        /// Reboot into it once written.
        #[arg(long)]
        reboot: bool,
        /// Install a version that failed its trial here before, or one
        /// older than the newest good one.
        #[arg(long)]
        force: bool,
    },
    /// Install from removable media (a vfat stick labelled SLUICE-UPD, by
    /// sluice-update-stick@.service): mount DEVICE read-only, try its
    /// `*.bundle` files in name order, install the first that checks out
    /// and reboot into it.
    InstallFrom {
        device: PathBuf,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
        tries: u32,
        /// Do not reboot after an install.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Check a bundle (signature, manifest, payloads) and write nothing.
    Verify { bundle: PathBuf },
    /// The slots: which runs, their versions and states, and the history.
    Status,
    /// Decide whether this boot is good (sluice-health.service).
    Health {
        /// How long the gateway has to forward.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Turn routing on once the classifier is attached to the LAN
    /// (sluice-forward.service); until then it is off.
    Forward,
    /// Enrol with a controller (sluice-enrol.service, first boot): with
    /// the token in enrol.toml on the data partition or on the kernel
    /// command line (sluice.enrol=URL sluice.token=TOKEN); retried until
    /// it succeeds. Nothing to do without a token or once enrolled.
    Enrol {
        /// The data partition.
        #[arg(long, default_value = "/var/lib/sluice")]
        data: PathBuf,
        /// The sluice binary.
        #[arg(long, default_value = "/usr/bin/sluice")]
        sluice: PathBuf,
        /// The kernel command line.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// The first wait before trying again (doubled up to a minute).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
        retry_secs: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-update: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn machine() -> Result<Machine> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("/proc/cmdline")?;
    let booted = Slot::from_cmdline(&cmdline).context(
        "this boot names no slot (no sluice.slot= on the kernel command line): not an appliance boot",
    )?;
    let running = std::fs::read_to_string(VERSION).with_context(|| format!("reading {VERSION}"))?;
    let running = Version::parse(running.trim()).map_err(anyhow::Error::msg)?;
    Ok(Machine {
        esp: Esp { root: ESP.into() },
        device: Box::new(slot_device),
        booted,
        running,
        on_trial: health::on_trial(Path::new(EFIVARS), Path::new(ESP)),
        key: key()?.0,
        arch: std::env::consts::ARCH.into(),
        history: History {
            path: HISTORY.into(),
        },
        lock: LOCK.into(),
    })
}

/// A slot's partition on the disk systemd-boot started from (named by
/// `LoaderDevicePartUUID`, the ESP's partition UUID), by its GPT name:
/// another disk with the same identifiers (a stick made from an image)
/// is never written. Without that variable (not booted by systemd-boot),
/// the partition UUID.
fn slot_device(s: Slot) -> PathBuf {
    let fallback = || PathBuf::from(format!("/dev/disk/by-partuuid/{}", s.part().uuid));
    let Some(esp) = efivar_string(&format!("LoaderDevicePartUUID-{}", health::LOADER_GUID)) else {
        return fallback();
    };
    let find = || -> Option<PathBuf> {
        let dev =
            std::fs::canonicalize(format!("/dev/disk/by-partuuid/{}", esp.to_lowercase())).ok()?;
        let part = dev.file_name()?.to_str()?.to_string();
        let disk = std::fs::canonicalize(format!("/sys/class/block/{part}/..")).ok()?;
        for e in std::fs::read_dir(&disk).ok()? {
            let e = e.ok()?;
            let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
            if uevent
                .lines()
                .any(|l| l == format!("PARTNAME={}", s.part().label))
            {
                return Some(PathBuf::from("/dev").join(e.file_name()));
            }
        }
        None
    };
    find().unwrap_or_else(|| {
        PathBuf::from(format!(
            "/nonexistent/{}-not-on-the-boot-disk",
            s.part().label
        ))
    })
}

/// An EFI variable holding a UTF-16 string.
fn efivar_string(name: &str) -> Option<String> {
    let raw = std::fs::read(Path::new(EFIVARS).join(name)).ok()?;
    let units: Vec<u16> = raw
        .get(4..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Some(String::from_utf16_lossy(&units))
}

/// The update key, and a short fingerprint of it (the SHA-256 of its
/// key line).
fn key() -> Result<(minisign_verify::PublicKey, String)> {
    let text = std::fs::read_to_string(KEY).with_context(|| format!("reading {KEY}"))?;
    let k = minisign_verify::PublicKey::decode(&text).map_err(|e| anyhow::anyhow!("{KEY}: {e}"))?;
    let line = text.lines().nth(1).unwrap_or_default().trim();
    let (sha, _) = bundle::sha256(line.as_bytes())?;
    Ok((k, sha[..16].to_string()))
}

/// The parts of the gateway's configuration this tool needs.
struct GatewaySection {
    lan: String,
    wan: String,
    metrics: String,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            lan: lan(),
            wan: wan(),
            metrics: metrics(),
        }
    }
}

fn lan() -> String {
    "eth0".into()
}
fn wan() -> String {
    "eth1".into()
}
fn metrics() -> String {
    "127.0.0.1:9477".into()
}

fn gateway_config() -> Result<GatewaySection> {
    let text = std::fs::read_to_string(GATEWAY).with_context(|| format!("reading {GATEWAY}"))?;
    // Only these fields: the rest is the gateway's to check.
    let v: toml::Value = toml::from_str(&text).with_context(|| format!("parsing {GATEWAY}"))?;
    let g = v
        .get("gateway")
        .cloned()
        .unwrap_or(toml::Value::Table(toml::map::Map::default()));
    let s = GatewaySection {
        lan: g
            .get("lan")
            .and_then(|x| x.as_str())
            .map_or_else(lan, str::to_string),
        wan: g
            .get("wan")
            .and_then(|x| x.as_str())
            .map_or_else(wan, str::to_string),
        metrics: g
            .get("metrics")
            .and_then(|x| x.as_str())
            .map_or_else(metrics, str::to_string),
    };
    for n in [&s.lan, &s.wan] {
        if n.is_empty()
            || n.len() > 15
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!("{GATEWAY}: interface name {n:?} is not one");
        }
    }
    Ok(s)
}

fn reboot_now() -> Result<()> {
    let st = Command::new("systemctl").arg("reboot").status()?;
    if !st.success() {
        bail!("systemctl reboot: {st}");
    }
    Ok(())
}

fn install_from(device: &Path, tries: u32, then_reboot: bool) -> Result<()> {
    let m = machine()?;
    let name = device
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dir = PathBuf::from(format!("/run/sluice-update/media-{name}"));
    std::fs::create_dir_all(&dir)?;
    let st = Command::new("mount")
        .args(["-t", "vfat", "-o", "ro,nosuid,nodev,noexec"])
        .arg(device)
        .arg(&dir)
        .status()
        .context("cannot run mount")?;
    if !st.success() {
        bail!("mount {}: {st}", device.display());
    }
    let result = (|| -> Result<bool> {
        let mut bundles: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("bundle"))
            })
            .collect();
        bundles.sort();
        if bundles.is_empty() {
            println!("sluice-update: no *.bundle on {}", device.display());
        }
        for b in bundles {
            let name = b
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match install::install(&m, &b, tries, false) {
                Ok(done) => {
                    println!(
                        "sluice-update: {name}: installed {} into slot {}: it boots next, with {} tries (slot {} is the way back)",
                        done.version,
                        done.slot.name(),
                        done.tries,
                        m.booted.name()
                    );
                    return Ok(true);
                }
                Err(e) => println!("sluice-update: {name}: {e}"),
            }
        }
        Ok(false)
    })();
    let _ = Command::new("umount").arg(&dir).status();
    if result? && then_reboot {
        println!("sluice-update: rebooting into the new slot");
        reboot_now()?;
    }
    Ok(())
}

/// Waits (without end) for the classifier on the LAN, then lets LAN to
/// WAN traffic (and what answers it) through the `inet sluice_filter`
/// table, whose forward chain drops everything from boot on, and turns
/// routing on.
fn forward() -> Result<()> {
    let g = gateway_config()?;
    let mut waited = 0u64;
    let mode = loop {
        let out = Command::new("ip")
            .args(["-j", "link", "show", "dev", &g.lan])
            .output()
            .context("cannot run ip")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(mode) = v
            .get(0)
            .and_then(|l| l.get("xdp"))
            .and_then(|x| x.get("mode"))
        {
            // iproute2's numbers: the kernel's XDP_ATTACHED_*.
            break match mode.as_u64() {
                Some(1) => "native".to_string(),
                Some(2) => "generic (skb)".to_string(),
                Some(3) => "offloaded".to_string(),
                Some(4) => "several".to_string(),
                _ => mode.to_string(),
            };
        }
        if waited.is_multiple_of(60) {
            println!(
                "sluice-forward: no classifier on {} yet: routing stays off",
                g.lan
            );
        }
        std::thread::sleep(Duration::from_secs(1));
        waited += 1;
    };
    let rules = format!(
        "table inet sluice_filter\ndelete table inet sluice_filter\ntable inet sluice_filter {{\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tct state established,related accept\n\t\tiifname \"{}\" oifname \"{}\" accept\n\t}}\n}}\n",
        g.lan, g.wan
    );
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("nft's stdin")?,
        rules.as_bytes(),
    )?;
    let st = child.wait()?;
    if !st.success() {
        bail!("nft: {st}");
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    println!(
        "sluice-forward: classifier attached to {} (XDP mode {mode}): routing on, {} to {} only",
        g.lan, g.lan, g.wan
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Enrol {
            data,
            sluice,
            cmdline,
            retry_secs,
        } => {
            let paths = enrol::Paths {
                data,
                sluice,
                cmdline,
            };
            let say = |l: &str| println!("sluice-enrol: {l}");
            match enrol::run(&paths, Duration::from_secs(retry_secs), say)? {
                enrol::Outcome::Nothing => {
                    say(
                        "no token (enrol.toml or sluice.enrol= and sluice.token=): the gateway runs on its own gateway.toml",
                    );
                }
                enrol::Outcome::Already => say("enrolled already"),
                enrol::Outcome::Enrolled => {}
            }
            Ok(())
        }
        Cmd::InstallFrom {
            device,
            tries,
            no_reboot,
        } => install_from(&device, tries, !no_reboot),
        Cmd::Install {
            bundle,
            tries,
            reboot,
            force,
        } => {
            let m = machine()?;
            let done = install::install(&m, &bundle, tries, force)?;
            println!(
                "installed {} into slot {}: it boots next, with {} tries to reach a good state (slot {} is the way back)",
                done.version,
                done.slot.name(),
                done.tries,
                m.booted.name()
            );
            if reboot {
                reboot_now()?;
            }
            Ok(())
        }
        Cmd::Verify { bundle } => {
            let m = machine()?;
            let expect = Expect {
                arch: &m.arch,
                running: &m.running,
                key: &m.key,
            };
            let f = std::fs::File::open(&bundle)
                .with_context(|| format!("opening {}", bundle.display()))?;
            let v = bundle::check(f, &expect, |_, r| {
                std::io::copy(r, &mut std::io::sink()).map(|_| ())
            })?;
            println!("{}: good, version {}", bundle.display(), v.version);
            Ok(())
        }
        Cmd::Status => status(),
        Cmd::Health { timeout_secs } => health_check(timeout_secs),
        Cmd::Forward => forward(),
    }
}

fn status() -> Result<()> {
    let m = machine()?;
    let (_, fp) = key()?;
    println!(
        "running: slot {} version {}{}; update key {fp}",
        m.booted.name(),
        m.running,
        if m.on_trial { " (on trial)" } else { "" }
    );
    for s in [Slot::A, Slot::B] {
        let entries: Vec<_> = m
            .esp
            .entries()?
            .into_iter()
            .filter(|e| e.slot == s)
            .collect();
        if entries.is_empty() {
            println!(
                "slot {}: no boot entry (empty, or an install did not finish): does not boot",
                s.name()
            );
        }
        for e in entries {
            println!(
                "slot {}: version {} {} ({})",
                e.slot.name(),
                e.version.as_deref().unwrap_or("?"),
                e.state(),
                e.file
            );
        }
    }
    let text = std::fs::read_to_string(HISTORY).unwrap_or_default();
    println!("history ({HISTORY}: unix time, version, slot, event):");
    for l in text.lines().rev().take(20) {
        println!("  {l}");
    }
    Ok(())
}

fn health_check(timeout_secs: u64) -> Result<()> {
    let m = machine()?;
    // Whatever this boot is: remember the slots that used up
    // their boots (the entries are replaced by the next install).
    if let Err(e) = m.history.record_failures(&m.esp) {
        eprintln!("sluice-health: cannot write {HISTORY}: {e}");
    }
    if !m.on_trial {
        println!("sluice-health: this boot is not on trial: nothing to decide");
        return Ok(());
    }
    // Each role the box has (its files on the data partition) must work.
    let timeout = Duration::from_secs(timeout_secs);
    let data = Path::new(GATEWAY).parent().unwrap_or(Path::new("/"));
    let mut checked = Vec::new();
    if Path::new(GATEWAY).exists() {
        let g = gateway_config().unwrap_or_default();
        let metrics: SocketAddr = g
            .metrics
            .parse()
            .with_context(|| format!("the gateway's metrics address {:?}", g.metrics))?;
        let failed = || {
            Command::new("systemctl")
                .args(["is-failed", "--quiet", "sluice-gateway.service"])
                .status()
                .is_ok_and(|s| s.success())
        };
        let t = health::wait_forwarding(metrics, timeout, failed)
            .map_err(|e| anyhow::anyhow!("this boot is not good: {e}"))?;
        checked.push(format!("forwarding after {:.1} s", t.as_secs_f64()));
    }
    for role in ["edge", "controller"] {
        if !data.join(format!("{role}.toml")).exists() {
            continue;
        }
        let unit = format!("sluice-{role}.service");
        let show = || {
            let out = Command::new("systemctl")
                .args(["show", "-p", "ActiveState", "-p", "NRestarts", &unit])
                .output()
                .map_err(|e| format!("systemctl: {e}"))?;
            Ok(health::parse_show(&String::from_utf8_lossy(&out.stdout)))
        };
        let t = health::wait_settled(&unit, timeout, Duration::from_secs(10), show)
            .map_err(|e| anyhow::anyhow!("this boot is not good: {e}"))?;
        checked.push(format!("the {role} up after {:.1} s", t.as_secs_f64()));
    }
    if checked.is_empty() {
        bail!(
            "this boot is not good: the box has no role (no gateway.toml, edge.toml or controller.toml)"
        );
    }
    let _ = m.history.record(&m.running, m.booted, "good");
    println!("sluice-health: {}: this boot is good", checked.join(", "));
    Ok(())
}
