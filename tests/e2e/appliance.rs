//! The appliance image under qemu (TCG) in the lab: it boots, enrols with
//! the controller (in inet) from a token on its data partition and
//! forwards on the policy it gets (tunnelled and
//! bypassed traffic checked as in the namespace lab); an update stick
//! with a truncated bundle and a good one updates it to the other slot,
//! which proves itself and is kept; a stick with a deliberately broken
//! version updates it again, the broken slot fails its health check, and
//! the box comes back on the good slot by itself and does not install the
//! broken version again. All along, the client pings the tunnelled servers
//! and `inet` counts what leaves the box directly: nothing may.
//!
//! The images come from `cargo xtask image --version 0.1.0 --bundle 0.2.0
//! --bundle 0.3.0:broken`, in the directory `SLUICE_FIRMWARE` names
//! (`cargo xtask test` builds them and sets it).

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use sluice_lab::{
    Host, Lab, addr,
    addr::ifname,
    appliance::{Appliance, lab_seed_edge, lab_seed_enrol, stick},
    deploy::Sluice,
    require, require_root,
};

use super::{
    HTTP, UDP, bin,
    controller::{A, CTL_HOST, Fleet},
    url,
};

const BOOT: Duration = Duration::from_secs(300);

/// The directory with the images, if the environment names one.
fn firmware(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_FIRMWARE").map(PathBuf::from);
    let ok = dir
        .as_ref()
        .is_some_and(|d| d.join("sluice-0.1.0.img").exists());
    require(
        test,
        ok,
        "SLUICE_FIRMWARE naming the output of `cargo xtask image --version 0.1.0 --bundle 0.2.0 --bundle 0.3.0:broken` (cargo xtask test does it)",
    )
    .then(|| dir.unwrap_or_default())
}

/// The images and a lab of its own with the peer servers in `inet`, if
/// `test` can run here (root, the images built).
fn lab_with_images(test: &str) -> Option<(PathBuf, Lab)> {
    if !require_root(test) {
        return None;
    }
    let fw = firmware(test)?;
    let lab = Lab::new_exclusive();
    lab.spawn_peer(Host::Inet, "peer", HTTP, UDP);
    Some((fw, lab))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Who the peer saw: `curl /whoami` from the client, if it answered.
fn whoami(lab: &Lab, dst: IpAddr) -> Option<String> {
    let out = lab.run(
        Host::Client,
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
            &url(dst, "/whoami"),
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until tunnelled traffic arrives from the edge and bypassed
/// traffic from the box's WAN address (v4 and v6).
fn wait_forwarding(lab: &Lab, vm: &Appliance<'_>, timeout: Duration) -> Duration {
    let t = Instant::now();
    let want: [(IpAddr, String); 4] = [
        (addr::TUNNELLED_V4.into(), addr::EDGE_WAN_V4.to_string()),
        (addr::BYPASSED_V4.into(), addr::GW_WAN_V4.to_string()),
        (addr::TUNNELLED_V6.into(), addr::EDGE_WAN_V6.to_string()),
        (addr::BYPASSED_V6.into(), addr::GW_WAN_V6.to_string()),
    ];
    loop {
        let got: Vec<(IpAddr, Option<String>, &String)> = want
            .iter()
            .map(|(dst, from)| (*dst, whoami(lab, *dst), from))
            .collect();
        if got.iter().all(|(_, g, w)| g.as_deref() == Some(w.as_str())) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < timeout,
            "the appliance does not forward after {timeout:?} (destination, seen source, wanted source): {got:?}\n{}",
            vm.serial()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn appliance_boots_forwards_updates_and_rolls_back() {
    let Some((fw, lab)) = lab_with_images("appliance_boots_forwards_updates_and_rolls_back") else {
        return;
    };
    // The controller in inet, with the organisation, a bypass for the
    // bypassed servers and an enrolled edge; the box gets a token on its
    // data partition and nothing else (the gateway's file is the
    // image's default).
    let mut f = Fleet::new(&lab, None);
    f.edge_timers = "";
    f.start_controller(0, A);
    f.sign_in(0);
    f.organise();
    f.set_bypass(
        0,
        &[
            &format!("{}/32", addr::BYPASSED_V4),
            &format!("{}/128", addr::BYPASSED_V6),
        ],
    );
    f.start_edge();
    let seed = lab.dir().join("seed");
    lab_seed_enrol(
        &seed,
        &format!("https://{CTL_HOST}:{}", A.api),
        &f.token("gateways", "branch-1"),
    )
    .unwrap();
    // Seed files as an operator's own user copies them (owner kept): the
    // box makes them root's before its services, which have no
    // capability to override file modes, read them.
    for p in [
        "enrol.toml",
        "network",
        "network/10-lan.network",
        "network/20-wan.network",
    ] {
        std::os::unix::fs::chown(seed.join(p), Some(1000), Some(1000)).unwrap();
    }
    let mut vm = Appliance::new(&lab, &fw.join("sluice-0.1.0.img"), &seed).unwrap();
    // The leak watch: pings to the tunnelled servers through every boot,
    // reboot and rollback (bounded: 5 per second for at most 30 minutes).
    for dst in [
        addr::TUNNELLED_V4.to_string(),
        addr::TUNNELLED_V6.to_string(),
    ] {
        lab.spawn(
            Host::Client,
            &format!("ping-{}", if dst.contains(':') { 6 } else { 4 }),
            &["ping", "-q", "-i", "0.2", "-w", "1800", &dst],
        );
    }
    fn step(what: &str, r: Result<usize, String>) -> usize {
        r.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    // 1. First boot: 0.1.0 from slot A, configured from the data partition.
    let t = Instant::now();
    vm.power_on(None);
    step(
        "first boot",
        vm.wait_console("version 0.1.0, slot a", 0, BOOT),
    );
    step(
        "enrolment",
        vm.wait_console(
            "sluice-enrol: gateway.toml is now managed by the controller",
            0,
            BOOT,
        )
        .map_err(|e| format!("{e}\n{}", f.logs())),
    );
    let at = step(
        "classifier",
        vm.wait_console("sluice-forward: classifier attached", 0, BOOT),
    );
    let mode = vm.serial()[at..]
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    wait_forwarding(&lab, &vm, BOOT);
    let boot_to_forwarding = t.elapsed();
    // The gateway's log lines reach the console (what the edge box's test
    // looks for to show that no gateway ran there).
    assert!(
        vm.serial().contains("sluice_gateway::"),
        "no gateway log line on the console"
    );
    eprintln!(
        "appliance: power-on to forwarding (tunnelled and bypassed, v4 and v6) under TCG: {:.1} s; classifier{mode}",
        boot_to_forwarding.as_secs_f64()
    );
    vm.power_off();

    // 2. A stick with a truncated bundle and 0.2.0.
    let good = fw.join(format!("sluice-0.2.0-{}.bundle", std::env::consts::ARCH));
    let truncated = lab.dir().join("0-truncated.bundle");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    drop(bytes);
    let stick1 = lab.dir().join("stick1.img");
    stick(&stick1, &[&truncated, &good]).unwrap();
    let t = Instant::now();
    vm.power_on(Some(&stick1));
    let mut at = 0;
    for (what, needle) in [
        ("boot from A", "version 0.1.0, slot a"),
        (
            "truncated bundle refused",
            "0-truncated.bundle: refused, nothing written: the bundle is truncated",
        ),
        ("0.2.0 installed", "installed 0.2.0 into slot b"),
        ("boot from B", "version 0.2.0, slot b"),
        ("B proves itself", "this boot is good"),
        // The stick's service runs after systemd-bless-boot: B is no
        // longer on trial, its 0.2.0 is simply not newer.
        ("B marked good", "is not newer than the running 0.2.0"),
    ] {
        at = step(what, vm.wait_console(needle, at, BOOT));
    }
    // The ESP is unmounted 10 s after its last use: the power-off below
    // is a power cut, but not one in the middle of writing it.
    std::thread::sleep(Duration::from_secs(12));
    wait_forwarding(&lab, &vm, BOOT);
    let update = t.elapsed();
    eprintln!(
        "appliance: update 0.1.0 -> 0.2.0 (power-on with the stick to forwarding on 0.2.0): {:.1} s",
        update.as_secs_f64()
    );
    vm.power_off();

    // 3. A stick with a broken 0.3.0: installed, fails, rolled back.
    let broken = fw.join(format!(
        "sluice-0.3.0-broken-{}.bundle",
        std::env::consts::ARCH
    ));
    let stick2 = lab.dir().join("stick2.img");
    stick(&stick2, &[&broken]).unwrap();
    let t = Instant::now();
    vm.power_on(Some(&stick2));
    let mut at = 0;
    for (what, needle) in [
        ("boot from B", "version 0.2.0, slot b"),
        ("0.3.0 installed", "installed 0.3.0 into slot a"),
        ("boot from A", "version 0.3.0, slot a"),
        ("A fails its health check", "this boot is not good"),
        ("back on B", "version 0.2.0, slot b"),
        (
            "0.3.0 not installed again",
            "0.3.0 already failed its trial",
        ),
    ] {
        at = step(what, vm.wait_console(needle, at, BOOT));
    }
    wait_forwarding(&lab, &vm, BOOT);
    let rollback = t.elapsed();
    eprintln!(
        "appliance: broken 0.3.0 installed, failed and rolled back to 0.2.0, forwarding again: {:.1} s",
        rollback.as_secs_f64()
    );
    vm.power_off();
    let leaks = lab.leaks();
    eprintln!("appliance: leak watch over all boots: {leaks:?}");
    assert!(
        leaks.is_empty(),
        "traffic for the tunnelled servers left the appliance directly: {leaks:?}"
    );
}

/// The image in the edge's place, with the edge and controller roles (its
/// data partition has `edge.toml`, the edge's certificate and
/// `controller.toml`, no `gateway.toml`): the lab's gateway tunnels
/// through it, and its controller answers on the edge's address.
#[test]
fn appliance_serves_as_an_edge_and_a_controller() {
    let Some((fw, lab)) = lab_with_images("appliance_serves_as_an_edge_and_a_controller") else {
        return;
    };
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    let seed = lab.dir().join("seed");
    lab_seed_edge(s.conf_dir(), &seed).unwrap();
    let mut vm = Appliance::new_at(
        &lab,
        Host::Edge,
        &fw.join("sluice-0.1.0.img"),
        &seed,
        None,
        ifname::EDGE_WAN,
    )
    .unwrap();
    let t = Instant::now();
    vm.power_on(None);
    let mut at = 0;
    for (what, needle) in [
        ("roles", "sluice-firstboot: roles: edge controller"),
        ("first boot", "version 0.1.0, slot a"),
        ("the edge listens", "listening on"),
    ] {
        at = vm
            .wait_console(needle, at, BOOT)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // The lab's gateway (in gw, its own file) tunnels through the box.
    s.start_gateway();
    let want: [(IpAddr, String); 3] = [
        (addr::TUNNELLED_V4.into(), addr::EDGE_WAN_V4.to_string()),
        (addr::TUNNELLED_V6.into(), addr::EDGE_WAN_V6.to_string()),
        (addr::BYPASSED_V4.into(), addr::GW_WAN_V4.to_string()),
    ];
    let through = Instant::now();
    while !want
        .iter()
        .all(|(dst, from)| whoami(&lab, *dst).as_deref() == Some(from.as_str()))
    {
        assert!(
            through.elapsed() < Duration::from_secs(60),
            "no traffic through the box; the console's tail:\n{}",
            tail(&vm.serial(), 80)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let edge = t.elapsed();
    // Its controller answers on the edge's address (its CA is the box's
    // own: only that it serves is checked here).
    let api = format!("https://{}:8443/openapi.json", addr::EDGE_WAN_V4);
    let answers = || {
        lab.run(
            Host::Inet,
            &[
                "curl",
                "-sSk",
                "--fail",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                &api,
            ],
        )
        .status
        .success()
    };
    while !answers() {
        assert!(
            t.elapsed() < BOOT,
            "the box's controller does not answer on {api}; the console's tail:\n{}",
            tail(&vm.serial(), 80)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "appliance: edge and controller roles: power-on to tunnelled traffic through the box {:.1} s, controller answering {:.1} s",
        edge.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let serial = vm.serial();
    vm.power_off();
    // No gateway on an edge box (its unit's condition: no gateway.toml):
    // none of its log lines (the console's unit status lines carry colour
    // codes inside the unit's name, so they are not what is matched).
    assert!(
        !serial.contains("sluice_gateway::")
            && !serial.contains("sluice-forward: classifier attached"),
        "a gateway ran on the edge box:\n{serial}"
    );
}
