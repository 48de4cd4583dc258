//! The appliance under qemu, in the lab: the `gw` namespace stops being a
//! gateway and becomes the VM's host side. Its `lan0` and `wan0` (the
//! veths to `client` and `inet`) are bridged to two tap devices, one per
//! virtio-net NIC of the VM (`eth0` LAN, `eth1` WAN in the guest), and
//! lose their addresses and NAT: the guest takes the gateway's addresses
//! ([`crate::addr`]) and the rest of the lab is unchanged.
//!
//! qemu runs under software emulation (TCG: this machine's KVM may not
//! boot a stock kernel) with OVMF's UEFI firmware; its serial console is
//! a file the test reads. An update stick is a FAT image labelled
//! `SLUICE-UPD` holding bundles, attached as a second virtio disk.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{Host, Lab, ProcId, addr, addr::ifname};

/// The UEFI firmware (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The firmware's variables as shipped (each VM boots a copy).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// qemu's arguments for the appliance's machine, shared by the tests and
/// `cargo xtask boot`: q35 under TCG (2 vCPUs, 1 GiB), OVMF with the
/// variables in `vars` (a copy of [`OVMF_VARS`]), `disk` as a virtio
/// disk. The caller adds the console and the NICs.
#[must_use]
pub fn machine_args(vars: &Path, disk: &Path) -> Vec<String> {
    [
        "-machine",
        "q35",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "1024",
        "-drive",
        &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive",
        &format!("if=pflash,format=raw,file={}", vars.display()),
        "-drive",
        &format!("file={},format=raw,if=virtio", disk.display()),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The VM and its files.
#[derive(Debug)]
pub struct Appliance<'a> {
    lab: &'a Lab,
    /// The namespace in whose place the VM is.
    host: Host,
    dir: PathBuf,
    disk: PathBuf,
    vars: PathBuf,
    qemu: Option<ProcId>,
    /// Power-ons so far (each has its own serial log).
    runs: usize,
    /// The stick of the current power-on.
    stick: Option<PathBuf>,
    /// Reboots of the current power-on (qemu runs with `-no-reboot`: a
    /// guest reboot ends qemu, and [`Appliance::wait_console`] starts it
    /// again, as a power cycle).
    reboots: usize,
}

fn sh(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{argv:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{argv:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl<'a> Appliance<'a> {
    /// Wires the lab for the VM and makes its disk: a sparse copy of
    /// `image` whose data partition holds `seed`'s files.
    ///
    /// # Errors
    /// If a command fails.
    pub fn new(lab: &'a Lab, image: &Path, seed: &Path) -> Result<Self, String> {
        let vm = Self::new_at(
            lab,
            Host::Gw,
            image,
            seed,
            Some(ifname::GW_LAN),
            ifname::GW_WAN,
        )?;
        let _ = lab.run(
            Host::Gw,
            &["nft", "delete", "table", "inet", "sluice_lab_nat"],
        );
        Ok(vm)
    }

    /// As [`Appliance::new`], with the VM in `host`'s place: its veth
    /// `lan` (if any) bridged to the VM's `eth0`, `wan` to its `eth1`.
    ///
    /// # Errors
    /// If a command fails.
    pub fn new_at(
        lab: &'a Lab,
        host: Host,
        image: &Path,
        seed: &Path,
        lan: Option<&str>,
        wan: &str,
    ) -> Result<Self, String> {
        let dir = lab.dir().join("appliance");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let disk = dir.join("disk.img");
        sh(&[
            "cp",
            "--sparse=always",
            &image.to_string_lossy(),
            &disk.to_string_lossy(),
        ])?;
        let out = sluice_update::layout::mkfs_data(
            seed,
            &disk,
            Some(sluice_update::layout::offset(sluice_update::layout::DATA)),
            0,
        )
        .output()
        .map_err(|e| format!("mkfs.ext4: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.ext4 of the data partition: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let vars = dir.join("vars.fd");
        std::fs::copy(OVMF_VARS, &vars).map_err(|e| format!("{OVMF_VARS}: {e}"))?;
        // The namespace becomes the VM's host side.
        for (veth, tap, br) in [(lan, "tap-lan", "br-lan"), (Some(wan), "tap-wan", "br-wan")] {
            lab.run_ok(host, &["ip", "tuntap", "add", tap, "mode", "tap"]);
            lab.run_ok(host, &["ip", "link", "add", br, "type", "bridge"]);
            if let Some(veth) = veth {
                lab.run_ok(host, &["ip", "addr", "flush", "dev", veth]);
                lab.run_ok(host, &["ip", "link", "set", veth, "master", br]);
            }
            lab.run_ok(host, &["ip", "link", "set", tap, "master", br]);
            for dev in [tap, br] {
                lab.run_ok(host, &["ip", "link", "set", dev, "up"]);
            }
        }
        Ok(Appliance {
            lab,
            host,
            dir,
            disk,
            vars,
            qemu: None,
            runs: 0,
            stick: None,
            reboots: 0,
        })
    }

    /// The serial log of the current (or last) power-on.
    pub fn serial_path(&self) -> PathBuf {
        self.dir.join(format!("serial-{}.log", self.runs))
    }

    /// What the console printed in the current power-on.
    pub fn serial(&self) -> String {
        std::fs::read(self.serial_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Powers the VM on, with `stick` (an image made by [`stick`]) as a
    /// second disk if given.
    ///
    /// # Panics
    /// If it is already on.
    pub fn power_on(&mut self, stick: Option<&Path>) {
        assert!(self.qemu.is_none(), "the appliance is already on");
        self.runs += 1;
        self.reboots = 0;
        self.stick = stick.map(Path::to_path_buf);
        self.start_qemu();
    }

    /// Starts qemu for the current power-on (its console appended to the
    /// power-on's log).
    fn start_qemu(&mut self) {
        let stick = self.stick.clone();
        let stick = stick.as_deref();
        let serial = format!(
            "file,id=console,path={},append=on",
            self.serial_path().display()
        );
        // Native XDP on virtio-net needs the host's receive offloads off.
        let nic = "guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off";
        let lan = format!("virtio-net-pci,netdev=lan,mac=52:54:00:5c:00:01,{nic}");
        let wan = format!("virtio-net-pci,netdev=wan,mac=52:54:00:5c:00:02,{nic}");
        let machine = machine_args(&self.vars, &self.disk);
        let mut argv = vec!["qemu-system-x86_64"];
        argv.extend(machine.iter().map(String::as_str));
        argv.extend([
            "-display",
            "none",
            "-monitor",
            "none",
            "-chardev",
            &serial,
            "-serial",
            "chardev:console",
            // A guest reboot ends qemu; wait_console starts it again (a
            // power cycle: OVMF's warm reset under TCG hung once here).
            "-no-reboot",
            "-netdev",
            "tap,id=lan,ifname=tap-lan,script=no,downscript=no",
            "-device",
            &lan,
            "-netdev",
            "tap,id=wan,ifname=tap-wan,script=no,downscript=no",
            "-device",
            &wan,
            // A watchdog, as an appliance has: a hung boot is a failed boot.
            "-device",
            "i6300esb",
        ]);
        let stick_arg;
        if let Some(s) = stick {
            stick_arg = format!("file={},format=raw,if=virtio,readonly=on", s.display());
            argv.extend(["-drive", &stick_arg]);
        }
        let name = format!("qemu-{}-{}", self.runs, self.reboots);
        self.qemu = Some(self.lab.spawn(self.host, &name, &argv));
    }

    /// Powers the VM off (qemu ends; the disk and firmware variables stay).
    pub fn power_off(&mut self) {
        if let Some(id) = self.qemu.take() {
            self.lab.stop(id);
        }
    }

    /// Whether qemu still runs.
    pub fn is_on(&self) -> bool {
        self.qemu.is_some_and(|id| self.lab.is_running(id))
    }

    /// Waits until the console (from byte `from` on) shows `needle`;
    /// returns where it ends.
    ///
    /// # Errors
    /// After `timeout`, or if qemu ended, with the console's tail.
    pub fn wait_console(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<usize, String> {
        let t = Instant::now();
        loop {
            let text = self.serial();
            if let Some(i) = text.get(from..).and_then(|s| s.find(needle)) {
                return Ok(from + i + needle.len());
            }
            if !self.is_on() && self.qemu.is_some() && self.reboots < 10 {
                // The guest rebooted (qemu runs with -no-reboot).
                if let Some(id) = self.qemu.take() {
                    self.lab.stop(id);
                }
                self.reboots += 1;
                self.start_qemu();
                continue;
            }
            if !self.is_on() || t.elapsed() > timeout {
                let tail: String = text
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(format!(
                    "{needle:?} not on the console after {:?} (qemu {}):\n{tail}\n--- qemu ---\n{}",
                    t.elapsed(),
                    if self.is_on() { "running" } else { "ended" },
                    self.lab
                        .log(&format!("qemu-{}-{}", self.runs, self.reboots))
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Appliance<'_> {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// An update stick: a FAT image labelled `SLUICE-UPD` with `files`.
///
/// # Errors
/// If `mkfs.vfat` or `mcopy` fails.
pub fn stick(out: &Path, files: &[&Path]) -> Result<(), String> {
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let kib = (bytes / 1024) * 11 / 10 + 16 * 1024;
    let _ = std::fs::remove_file(out);
    let o = out.to_string_lossy();
    sh(&[
        "mkfs.vfat",
        "-C",
        "-F",
        "32",
        "-n",
        "SLUICE-UPD",
        &o,
        &kib.to_string(),
    ])?;
    for f in files {
        let out = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &o])
            .arg(f)
            .arg("::/")
            .output()
            .map_err(|e| format!("mcopy: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mcopy {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Writes `text` to `rel` under `out`, making its directory.
fn write(out: &Path, rel: &str, text: &str) -> Result<(), String> {
    let path = out.join(rel);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A data partition's seed for a box that enrols at first boot: the lab's
/// networks and `enrol.toml` with `controller` (its API URL) and
/// `token`; the gateway's file is the image's default.
///
/// # Errors
/// If a file cannot be written.
pub fn lab_seed_enrol(out: &Path, controller: &str, token: &str) -> Result<(), String> {
    write(
        out,
        "enrol.toml",
        &format!("controller = \"{controller}\"\ntoken = \"{token}\"\n"),
    )?;
    lab_networks(out)
}

/// The box's networks with the lab's gateway addresses (LAN `eth0`, WAN
/// `eth1`).
fn lab_networks(out: &Path) -> Result<(), String> {
    write(
        out,
        "network/10-lan.network",
        &format!(
            "[Match]\nName=eth0\n\n[Network]\nAddress={}/24\nAddress={}/64\nConfigureWithoutCarrier=yes\nIPv6AcceptRA=no\n",
            addr::GW_LAN_V4,
            addr::GW_LAN_V6
        ),
    )?;
    wan_network(
        out,
        (addr::GW_WAN_V4, addr::INET_GW_SIDE_V4),
        (addr::GW_WAN_V6, addr::INET_GW_SIDE_V6),
    )
}

/// `eth1`'s network file: static addresses (a /30 and a /64) and their
/// routers.
fn wan_network(
    out: &Path,
    v4: (std::net::Ipv4Addr, std::net::Ipv4Addr),
    v6: (std::net::Ipv6Addr, std::net::Ipv6Addr),
) -> Result<(), String> {
    write(
        out,
        "network/20-wan.network",
        &format!(
            "[Match]\nName=eth1\n\n[Network]\nAddress={}/30\nGateway={}\nAddress={}/64\nGateway={}\nIPv6AcceptRA=no\n",
            v4.0, v4.1, v6.0, v6.1
        ),
    )
}

/// A data partition's seed for a box in the edge's place with the edge
/// and controller roles: the lab's edge file with its certificate from
/// `conf` (a [`crate::deploy::Sluice`] configuration directory), a
/// controller listening on the edge's address (ports 8443 and 8444), and
/// the edge's WAN network on `eth1`.
///
/// # Errors
/// If a file cannot be read or written.
pub fn lab_seed_edge(conf: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    for f in ["edge.toml", "ca.pem", "edge.pem", "edge.key"] {
        std::fs::copy(conf.join(f), out.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    write(
        out,
        "controller.toml",
        &format!(
            "[controller]\nlisten = \"{e}:8443\"\nagent_listen = \"{e}:8444\"\nserver_names = [\"{e}\"]\nstate_dir = \"/var/lib/sluice/controller\"\n",
            e = addr::EDGE_WAN_V4
        ),
    )?;
    wan_network(
        out,
        (addr::EDGE_WAN_V4, addr::INET_EDGE_SIDE_V4),
        (addr::EDGE_WAN_V6, addr::INET_EDGE_SIDE_V6),
    )
}
