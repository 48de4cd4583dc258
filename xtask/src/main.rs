//! `cargo xtask <command>`: the project's tasks (all need root).
//!
//! - `setup`: installs what building and testing need on Debian 12
//!   (idempotent; quiet when all is there). See [`setup`].
//! - `test [-- <test args>]`: setup, removal of namespaces left by crashed
//!   runs, then `cargo test --release --workspace --exclude sluice-ebpf
//!   -- --test-threads=2 <test args>`.
//! - `demo`: setup, `cargo build --release -p sluice`, then the lab demo
//!   (`SLUICE_DEMO_HOLD=1` keeps the lab up until Ctrl-C).

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};

mod setup;

const USAGE: &str = "\
usage: cargo xtask <command>

commands (run as root):
  setup                 install the toolchain pieces and tools (idempotent)
  test [-- ARGS...]     setup, clean stale lab namespaces, run every test in
                        release mode (ARGS go to the test binaries)
  labbench [-- ARGS]    setup, build, run the lab benchmark (bench/out/results.{md,json,svg})
  fuzz [SECONDS]         run each fuzz target for SECONDS (default 60)
  demo                  setup, build sluice, run the lab demo
                        (SLUICE_DEMO_HOLD=1 keeps the lab up until Ctrl-C)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "setup" => as_root(cmd).and_then(|()| setup::run()),
        "test" => as_root(cmd).and_then(|()| test(&args[1..])),
        "demo" => as_root(cmd).and_then(|()| demo()),
        "labbench" => as_root(cmd).and_then(|()| labbench(&args[1..])),
        "fuzz" => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
            as_root(cmd)
                .and_then(|()| setup::run())
                .and_then(|()| fuzz(secs))
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn as_root(cmd: &str) -> Result<()> {
    if !sluice_lab::is_root() {
        bail!(
            "must run as root (it installs packages, mounts bpffs, creates network \
             namespaces and loads XDP programs); try `sudo -E env \"PATH=$PATH\" cargo xtask {cmd}`"
        );
    }
    Ok(())
}

/// The workspace root (this crate's parent directory).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}

/// `cargo`, through the rustup proxy on PATH, in the workspace root.
fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root());
    cmd
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    let removed = sluice_lab::cleanup_stale();
    if !removed.is_empty() {
        println!("test: removed stale lab namespaces: {}", removed.join(" "));
    }
    let extra = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "sluice-ebpf",
        "--",
        "--test-threads=2",
    ])
    .args(extra);
    println!(
        "test: cargo test --release --workspace --exclude sluice-ebpf -- --test-threads=2 {}",
        extra.join(" ")
    );
    // Stream the output while tallying the `test result:` lines, so that
    // the run ends with one plain `N passed, N failed` line for all crates.
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            if let Some((p, f)) = tally(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    let fuzzed = if status.success() {
        fuzz(FUZZ_SMOKE_SECONDS)
    } else {
        Ok(())
    };
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("tests failed ({status})");
    }
    fuzzed
}

/// `(passed, failed)` from a libtest summary line
/// (`test result: ok. 62 passed; 0 failed; 0 ignored; ...`).
fn tally(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            part.trim()
                .strip_suffix(word)?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
    };
    Some((count(" passed")?, count(" failed")?))
}

/// The fuzz targets in `dataplane/fuzz` (cargo-fuzz).
const FUZZ_TARGETS: [&str; 8] = [
    "tunnel_frames",
    "tunnel_records",
    "packet_views",
    "config",
    "gro",
    "dns",
    "elf",
    "policy",
];
/// How long `test` runs each fuzz target: enough to catch a target that
/// no longer builds or crashes at once, not a fuzzing campaign.
const FUZZ_SMOKE_SECONDS: u32 = 20;

/// Runs every fuzz target for `seconds`, starting from the seed corpus in
/// `dataplane/fuzz/corpus/<target>` (new inputs go to a scratch directory,
/// so the committed corpus only changes on purpose).
fn fuzz(seconds: u32) -> Result<()> {
    let dir = root().join("dataplane/fuzz");
    for t in FUZZ_TARGETS {
        let scratch = std::env::temp_dir().join(format!("sluice-fuzz-{t}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let seeds = dir.join("corpus").join(t);
        std::fs::create_dir_all(&seeds)?;
        println!("fuzz: {t} for {seconds} s");
        let status = Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", "--release", t])
            .arg(&scratch)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
            ])
            .status()
            .context("cannot run cargo fuzz")?;
        let _ = std::fs::remove_dir_all(&scratch);
        if !status.success() {
            bail!(
                "fuzz target {t} failed ({status}); crash inputs are in dataplane/fuzz/artifacts/{t}"
            );
        }
    }
    println!("fuzz: {} targets ran clean", FUZZ_TARGETS.len());
    Ok(())
}

/// The lab benchmark: sluice, kernel forwarding baselines, in one run.
fn labbench(args: &[String]) -> Result<()> {
    setup::run()?;
    let extra = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    println!("labbench: cargo build --release -p sluice -p sluice-bench");
    let status = cargo()
        .args(["build", "--release", "-p", "sluice", "-p", "sluice-bench"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("build failed ({status})");
    }
    let target = target_dir()?.join("release");
    let status = Command::new(target.join("labbench"))
        .current_dir(root())
        .arg("--sluice")
        .arg(target.join("sluice"))
        .args(extra)
        .status()
        .context("cannot run labbench")?;
    if !status.success() {
        bail!("labbench failed ({status})");
    }
    Ok(())
}

fn demo() -> Result<()> {
    setup::run()?;
    println!("demo: cargo build --release -p sluice");
    let status = cargo()
        .args(["build", "--release", "-p", "sluice"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building sluice failed ({status})");
    }
    let bin = target_dir()?.join("release/sluice");
    sluice_lab::demo::run(&bin)
}

/// The workspace's target directory, as cargo sees it (honours
/// `CARGO_TARGET_DIR` and config).
fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata: bad JSON")?;
    let dir = meta
        .get("target_directory")
        .and_then(serde_json::Value::as_str)
        .context("cargo metadata: no target_directory")?;
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tallies_libtest_summaries() {
        assert_eq!(
            super::tally(
                "test result: ok. 62 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.22s"
            ),
            Some((62, 0))
        );
        assert_eq!(
            super::tally("test result: FAILED. 5 passed; 1 failed; 0 ignored"),
            Some((5, 1))
        );
        assert_eq!(super::tally("running 3 tests"), None);
    }
}
