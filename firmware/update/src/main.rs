//! `sluice-update`: install a signed bundle into the inactive slot, show
//! the slots, and decide whether this boot is good. See the crate docs.

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
    esp::Esp,
    health,
    install::{self, Machine},
    layout::{self, Slot},
    version::Version,
};

const ESP: &str = "/efi";
const KEY: &str = "/usr/share/sluice/update.pub";
const VERSION: &str = "/usr/lib/sluice/version";
const EFIVARS: &str = "/sys/firmware/efi/efivars";

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
    },
    /// Check a bundle (signature, manifest, payloads) and write nothing.
    Verify { bundle: PathBuf },
    /// The slots: which runs, their versions and states.
    Status,
    /// Decide whether this boot is good (run by sluice-health.service).
    Health {
        /// The gateway's metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9477")]
        metrics: SocketAddr,
        /// How long the gateway has to forward.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
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
    let booted = Slot::from_cmdline(&cmdline)
        .context("this boot names no slot (no sluice.slot= on the kernel command line): not an appliance boot")?;
    let running = std::fs::read_to_string(VERSION).with_context(|| format!("reading {VERSION}"))?;
    let running = Version::parse(running.trim()).map_err(anyhow::Error::msg)?;
    Ok(Machine {
        esp: Esp { root: ESP.into() },
        device: Box::new(|s: Slot| {
            PathBuf::from(format!("/dev/disk/by-partuuid/{}", s.part().uuid))
        }),
        booted,
        running,
        on_trial: health::on_trial(Path::new(EFIVARS)),
        key: key()?,
        arch: std::env::consts::ARCH.into(),
    })
}

fn key() -> Result<minisign_verify::PublicKey> {
    let text = std::fs::read_to_string(KEY).with_context(|| format!("reading {KEY}"))?;
    minisign_verify::PublicKey::decode(&text).map_err(|e| anyhow::anyhow!("{KEY}: {e}"))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Install {
            bundle,
            tries,
            reboot,
        } => {
            let m = machine()?;
            let done = install::install(&m, &bundle, tries)?;
            println!(
                "installed {} into slot {}: it boots next, with {} tries to reach a good state (slot {} is the way back)",
                done.version,
                done.slot.name(),
                done.tries,
                m.booted.name()
            );
            if reboot {
                let st = Command::new("systemctl").arg("reboot").status()?;
                if !st.success() {
                    bail!("systemctl reboot: {st}");
                }
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
        Cmd::Status => {
            let m = machine()?;
            println!(
                "running: slot {} version {}{}",
                m.booted.name(),
                m.running,
                if m.on_trial { " (on trial)" } else { "" }
            );
            for e in m.esp.entries()? {
                println!(
                    "slot {}: version {} {} ({})",
                    e.slot.name(),
                    e.version.as_deref().unwrap_or("?"),
                    e.state(),
                    e.file
                );
            }
            println!(
                "root partitions: a={} b={}",
                layout::ROOT_A.uuid,
                layout::ROOT_B.uuid
            );
            Ok(())
        }
        Cmd::Health {
            metrics,
            timeout_secs,
        } => {
            if !health::on_trial(Path::new(EFIVARS)) {
                println!("sluice-health: this boot is not on trial: nothing to decide");
                return Ok(());
            }
            let failed = || {
                Command::new("systemctl")
                    .args(["is-failed", "--quiet", "sluice-gateway.service"])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            match health::wait_forwarding(metrics, Duration::from_secs(timeout_secs), failed) {
                Ok(t) => {
                    println!(
                        "sluice-health: forwarding after {:.1} s: this boot is good",
                        t.as_secs_f64()
                    );
                    Ok(())
                }
                Err(e) => bail!("this boot is not good: {e}"),
            }
        }
    }
}
