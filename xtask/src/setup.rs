//! `cargo xtask setup`: makes a Debian 12 machine (as root) ready to build
//! and test sluice. Idempotent: each step checks first and prints
//! `setup: ok <thing>`, or `setup: installing <thing>` and then installs it.
//!
//! Steps (see `/work/shared/notes/toolchain.md` for why each is needed):
//! 1. apt packages (`apt-get update` only if one is missing);
//! 2. the nightly toolchain with `rust-src` (for `-Z build-std=core`);
//! 3. `bpf-linker`, built against the nightly toolchain's own libLLVM
//!    (Debian's LLVM is too old);
//! 4. `cargo-fuzz` and `cargo-deny` (crates.io);
//! 5. Python tools for the controller's tests (a virtual environment);
//! 6. bpffs mounted at `/sys/fs/bpf`.

use std::{
    env, fs,
    io::Read as _,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// What the lab, the tests and the benchmarks run.
const PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "iputils-ping",
    "curl",
    "python3",
    "iperf3",
    "ethtool",
    "tcpdump",
    "bpftool",
    "procps",
    // Lab benchmark baselines.
    "openvpn",
    "wireguard-tools",
    // Userspace WireGuard in Go (this kernel has no WireGuard module).
    "wireguard-go",
    // A real PAC engine (the PAC file test evaluates sluice's PAC with it).
    "libpacparser1",
    // A real DNS server and client for the domain bypass tests (the -base
    // package is the binary alone: no system service is started).
    "dnsmasq-base",
    "bind9-dnsutils",
    // The controller's shared store (its tests start their own instance
    // with initdb; no system cluster is used).
    "postgresql",
    // Certificate checks in the enrolment test.
    "openssl",
    // The interoperability tools' virtual environment (PYTHON_TOOLS).
    "python3-venv",
    // A real directory for the group sync tests (each starts its own
    // slapd on loopback; the system service is not started: see
    // `packages`), and its command-line tools.
    "slapd",
    "ldap-utils",
    // The portal's browser tests: headless Chromium through chromedriver.
    "chromium",
    "chromium-driver",
    // The appliance image (`cargo xtask image`): a Debian root from the
    // package registry, its filesystems, the GPT disk, and qemu with UEFI
    // firmware for its boot tests.
    "mmdebstrap",
    "squashfs-tools",
    "dosfstools",
    "mtools",
    "fdisk",
    "e2fsprogs",
    "qemu-system-x86",
    "ovmf",
];

/// Where the Python tools the controller's tests run are installed.
pub(crate) const PYTHON_VENV: &str = "/opt/sluice-ci/venv";

/// From PyPI, pinned: an OAuth 2.0 client library of another ecosystem
/// (authlib over requests) for the token endpoint's interoperability test,
/// and an independent validator of the admin API's OpenAPI description.
const PYTHON_TOOLS: &[&str] = &[
    "authlib==1.9.10",
    "requests==2.34.2",
    "openapi-spec-validator==0.9.0",
];

const BPFFS: &str = "/sys/fs/bpf";

/// Runs every step.
pub(crate) fn run() -> Result<()> {
    packages()?;
    nightly()?;
    bpf_linker()?;
    cargo_fuzz()?;
    cargo_deny()?;
    boringtun()?;
    python_tools()?;
    bpffs()?;
    Ok(())
}

/// [`PYTHON_TOOLS`] in a virtual environment at [`PYTHON_VENV`].
fn python_tools() -> Result<()> {
    let python = Path::new(PYTHON_VENV).join("bin/python");
    let wanted: Vec<String> = PYTHON_TOOLS
        .iter()
        .map(|p| p.to_lowercase().replace('_', "-"))
        .collect();
    let have = Command::new(&python)
        .args(["-m", "pip", "freeze", "--disable-pip-version-check"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .to_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_default();
    if wanted.iter().all(|w| have.lines().any(|l| l.trim() == w)) {
        println!("setup: ok python tools ({})", PYTHON_TOOLS.join(" "));
        return Ok(());
    }
    println!(
        "setup: installing python tools ({})",
        PYTHON_TOOLS.join(" ")
    );
    if !python.exists() {
        fs::create_dir_all(Path::new(PYTHON_VENV).parent().expect("a parent"))?;
        checked(Command::new("python3").args(["-m", "venv", PYTHON_VENV]))?;
    }
    checked(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_TOOLS),
    )?;
    Ok(())
}

/// `boringtun-cli` (crates.io, userspace WireGuard): a lab benchmark
/// baseline.
fn boringtun() -> Result<()> {
    let works = Command::new("boringtun-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        println!("setup: ok boringtun-cli");
        return Ok(());
    }
    println!("setup: installing boringtun-cli (about a minute)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "boringtun-cli"])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install boringtun-cli failed ({status})");
    }
    println!("setup: ok boringtun-cli");
    Ok(())
}

/// `cargo-fuzz` (crates.io), for the parsers' fuzz targets.
fn cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        println!("setup: ok cargo-fuzz");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz (about a minute)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    println!("setup: ok cargo-fuzz");
    Ok(())
}

/// The cargo-deny release `cargo xtask deny` runs (pinned: its checks and
/// advisory format change between releases).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// `cargo-deny` (crates.io), for the advisories, licences, bans and
/// sources checks.
fn cargo_deny() -> Result<()> {
    let version = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if version
        .as_deref()
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(CARGO_DENY_VERSION))
    {
        println!("setup: ok cargo-deny {CARGO_DENY_VERSION}");
        return Ok(());
    }
    println!("setup: installing cargo-deny {CARGO_DENY_VERSION} (a few minutes)");
    let status = Command::new("cargo")
        .args([
            "install",
            "--locked",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
        ])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-deny failed ({status})");
    }
    println!("setup: ok cargo-deny {CARGO_DENY_VERSION}");
    Ok(())
}

/// Runs `cmd` capturing its output; fails with the command and its output
/// when it cannot start or exits unsuccessfully.
fn checked(cmd: &mut Command) -> Result<Output> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

pub(crate) fn stdout_of(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&checked(cmd)?.stdout).into_owned())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"install ok installed")
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("setup: ok packages ({})", PACKAGES.join(" "));
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    // Packages install, they do not start system services (slapd's,
    // PostgreSQL's): the tests start their own instances. Debian asks
    // policy-rc.d; one is put in place for the install if the machine has
    // none, and removed after.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(
            policy,
            "#!/bin/sh\n# sluice setup: no service starts during its install\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let r = install(&missing);
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    r
}

fn install(missing: &[&str]) -> Result<()> {
    checked(
        Command::new("apt-get")
            .args(["-qq", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    checked(
        Command::new("apt-get")
            .args(["-qq", "install", "-y", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("apt-get install did not install {}", still.join(" "));
    }
    Ok(())
}

fn nightly() -> Result<()> {
    let toolchains = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    let has_nightly = toolchains
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| t == "nightly" || t.starts_with("nightly-"));
    if !has_nightly {
        println!("setup: installing nightly toolchain with rust-src");
        checked(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        return Ok(());
    }
    let components = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: ok nightly toolchain with rust-src");
        return Ok(());
    }
    println!("setup: installing rust-src for the nightly toolchain");
    checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    Ok(())
}

/// `bpf-linker --version` works as a standalone program (not only under
/// rustup's `LD_LIBRARY_PATH`).
fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        println!("setup: ok bpf-linker");
        return Ok(());
    }
    println!("setup: installing bpf-linker (built against nightly's libLLVM, about a minute)");
    let sysroot = stdout_of(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());
    let version = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = llvm_major(&version).context("`rustc +nightly -vV` reports no LLVM version")?;
    let libllvm = nightly_libllvm(&sysroot.join("lib"))?;

    // The prefix: lib/libLLVM.so for the build (toolchain.md), plus a link
    // under the library's own name, which the linker records as the needed
    // soname and finds through the RUNPATH (<prefix>/lib) at run time.
    let home = env::var_os("HOME").context("HOME is not set")?;
    let prefix = Path::new(&home).join(".cache/sluice/llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for entry in fs::read_dir(&lib)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM"))
        {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        symlink(&libllvm, &link).with_context(|| format!("cannot link {}", link.display()))?;
    }

    let status = Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    if !bpf_linker_works() {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` still fails \
             (is ~/.cargo/bin on PATH?)"
        );
    }
    println!("setup: ok bpf-linker");
    Ok(())
}

/// The major version in `rustc -vV`'s `LLVM version: 22.1.4` line.
fn llvm_major(version: &str) -> Option<u32> {
    version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))?
        .trim()
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The one libLLVM shared object in the nightly sysroot's `lib` (skipping the
/// small linker script that shares the name pattern).
fn nightly_libllvm(dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(name.starts_with("libLLVM") && name.contains(".so")) {
            continue;
        }
        let mut magic = [0u8; 4];
        let is_elf = fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if is_elf {
            let real = fs::canonicalize(&path).unwrap_or(path);
            if !found.contains(&real) {
                found.push(real);
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no libLLVM shared object in {}", dir.display()),
        many => bail!(
            "several libLLVM shared objects in {}: {many:?}",
            dir.display()
        ),
    }
}

fn bpffs() -> Result<()> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_src, dir, kind) = (f.next(), f.next(), f.next());
        dir == Some(BPFFS) && kind == Some("bpf")
    });
    if mounted {
        println!("setup: ok bpffs at {BPFFS}");
        return Ok(());
    }
    println!("setup: installing bpffs at {BPFFS} (mount)");
    fs::create_dir_all(BPFFS).with_context(|| format!("cannot create {BPFFS}"))?;
    checked(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major() {
        let v =
            "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(v), Some(22));
        assert_eq!(llvm_major("rustc 1.0"), None);
    }
}
