//! `cargo xtask <command>`: the project's tasks (all need root).
//!
//! - `setup`: installs what building and testing need on Debian 12
//!   (idempotent; quiet when all is there). See [`setup`].
//! - `test [-- <test args>]`: setup, removal of namespaces left by crashed
//!   runs, then `cargo test --release --no-fail-fast --workspace --exclude
//!   sluice-ebpf -- --test-threads=2 <test args>` and the fuzz smoke run;
//!   every group runs even after a failure, and the failures are listed
//!   together at the end; then `cargo deny` ([`deny`]), then the edge
//!   built and tested with the stable toolchain alone
//!   ([`edge_on_stable_alone`]).
//! - `deny`: `cargo deny` alone: advisories (against the `RustSec` database
//!   vendored in `deny/advisory-db`, no network), licences, bans, sources.
//! - `demo`: setup, `cargo build --release -p sluice`, then the lab demo
//!   (`SLUICE_DEMO_HOLD=1` keeps the lab up until Ctrl-C).

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};

mod image;
mod setup;

const USAGE: &str = "\
usage: cargo xtask <command>

commands (run as root):
  setup                 install the toolchain pieces and tools (idempotent)
  test [-- ARGS...]     setup, clean stale lab namespaces, run every test in
                        release mode (ARGS go to the test binaries)
  labbench [-- ARGS]    setup, build, run the lab benchmark (bench/out/results.{md,json,svg})
  fuzz [SECONDS]         run each fuzz target for SECONDS (default 60)
  deny                  cargo deny: advisories (vendored database, offline),
                        licences, bans, sources
  edge-stable           build and test the edge with the stable toolchain
                        alone (no nightly, no bpf-linker, fresh target)
  image [ARGS]          build the appliance's disk image and update bundles
                        (--version V, --bundle V[:broken]..., --seed DIR,
                        --out DIR; default target/firmware)
  boot [IMAGE]          boot the image (default target/firmware/sluice-0.1.0.img,
                        on a copy) under qemu (TCG) on this terminal; its two
                        NICs reach nothing (Ctrl-A X quits)
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
        "deny" => as_root(cmd).and_then(|()| setup::run()).and_then(|()| {
            let failed = deny();
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("cargo deny: {}", failed.join("; "))
            }
        }),
        "image" => as_root(cmd).and_then(|()| image::run(&args[1..])),
        "boot" => as_root(cmd).and_then(|()| image::boot(&args[1..])),
        "labbench" => as_root(cmd).and_then(|()| labbench(&args[1..])),
        "edge-stable" => {
            edge_on_stable_alone().map_or(Ok(()), |e| bail!("edge on stable alone: {e}"))
        }
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
    // Every group runs, whatever the one before it did; the failures are
    // listed together at the end.
    let mut report = Report::default();
    // The appliance's images, for its qemu test (tests/e2e/appliance.rs).
    let firmware = target_dir()?.join("firmware");
    report.image = image::run(&[
        "--version".into(),
        "0.1.0".into(),
        "--bundle".into(),
        "0.2.0".into(),
        "--bundle".into(),
        "0.3.0:broken".into(),
        "--out".into(),
        firmware.display().to_string(),
    ])
    .err()
    .map(|e| format!("{e:#}"));
    let firmware = report.image.is_none().then_some(firmware);
    cargo_tests(extra, firmware.as_deref(), &mut report)?;
    report.deny = deny();
    report.edge_stable = edge_on_stable_alone();
    report.fuzz = fuzz_all(FUZZ_SMOKE_SECONDS);
    report.print();
    if report.failed() {
        bail!("some tests failed (listed above)");
    }
    Ok(())
}

/// What a `test` run found, group by group.
#[derive(Default)]
struct Report {
    passed: u64,
    failed: u64,
    /// Tests that failed (`test NAME ... FAILED`).
    failed_tests: Vec<String>,
    /// Why each failed test failed: the first lines of its panic message
    /// (CI keeps only the tail of a run's output, where the summary is).
    why: Why,
    /// Test targets that failed as a whole (cargo's `-p X --test Y` lines:
    /// a failed test, a crash or a build failure).
    failed_targets: Vec<String>,
    /// Fuzz targets that failed, with why.
    fuzz: Vec<String>,
    /// `cargo deny` checks that failed, with why.
    deny: Vec<String>,
    /// The edge's stable-only build and tests, if they failed: why.
    edge_stable: Option<String>,
    /// `cargo test` did not succeed.
    cargo_failed: Option<String>,
    /// The appliance image did not build: why.
    image: Option<String>,
}

impl Report {
    fn failed(&self) -> bool {
        self.failed > 0
            || self.cargo_failed.is_some()
            || !self.failed_targets.is_empty()
            || !self.fuzz.is_empty()
            || !self.deny.is_empty()
            || self.edge_stable.is_some()
            || self.image.is_some()
    }

    fn print(&self) {
        println!("\n==== test summary ====");
        println!("tests: {} passed, {} failed", self.passed, self.failed);
        for t in &self.failed_tests {
            println!("FAILED test: {t}");
            for line in self.why.of(t) {
                println!("    | {line}");
            }
        }
        for t in &self.failed_targets {
            println!("FAILED target: {t}");
        }
        if let Some(s) = &self.cargo_failed {
            println!("FAILED cargo test: {s}");
        }
        for f in &self.fuzz {
            println!("FAILED fuzz: {f}");
        }
        for d in &self.deny {
            println!("FAILED deny: {d}");
        }
        if let Some(e) = &self.edge_stable {
            println!("FAILED edge on stable alone: {e}");
        }
        if let Some(e) = &self.image {
            println!("FAILED appliance image: {e}");
        }
        if !self.failed() {
            println!("all groups passed");
        }
    }
}

/// `cargo test` over the workspace with `--no-fail-fast` (every test
/// binary runs even after one fails), streaming its output while noting
/// the results and failures in `report`.
fn cargo_tests(extra: &[String], firmware: Option<&Path>, report: &mut Report) -> Result<()> {
    use std::io::BufRead as _;
    let mut cmd = cargo();
    if let Some(f) = firmware {
        cmd.env("SLUICE_FIRMWARE", f);
    }
    cmd.args([
        "test",
        "--release",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "sluice-ebpf",
        "--",
        "--test-threads=2",
    ])
    .args(extra);
    println!(
        "test: cargo test --release --no-fail-fast --workspace --exclude sluice-ebpf -- --test-threads=2 {}",
        extra.join(" ")
    );
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    // cargo names the failed targets on stderr; keep them, pass it all on.
    let stderr = child.stderr.take().context("cargo's stderr")?;
    let errs = std::thread::spawn(move || {
        let mut targets = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            // Each is named twice (at its failure, and in the list at
            // the end): keep the first.
            if let Some(t) = failed_target(&line)
                && !targets.contains(&t)
            {
                targets.push(t);
            }
        }
        targets
    });
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            report.why.feed(&line);
            if let Some((p, f)) = tally(&line) {
                report.passed += p;
                report.failed += f;
            }
            if let Some(name) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                report.failed_tests.push(name.to_string());
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    report.failed_targets = errs.join().unwrap_or_default();
    if !status.success() {
        report.cargo_failed = Some(status.to_string());
    }
    Ok(())
}

/// The edge builds and passes its tests with the stable toolchain alone:
/// `PATH` holds stable's own `cargo` and `rustc` (not the rustup proxy, so
/// no nightly can be reached) and the system's tools, not `~/.cargo/bin`
/// (no `bpf-linker`), and the target directory is fresh
/// (`target/edge-stable`, emptied first), so every build script of the
/// edge's graph runs again. Returns why it failed, if it did.
fn edge_on_stable_alone() -> Option<String> {
    let run = || -> Result<()> {
        let which = setup::stdout_of(Command::new("rustup").args([
            "which",
            "--toolchain",
            "stable",
            "cargo",
        ]))?;
        let bin = Path::new(which.trim())
            .parent()
            .context("stable's cargo has no directory")?
            .to_path_buf();
        let target = root().join("target/edge-stable");
        if target.exists() {
            std::fs::remove_dir_all(&target).context("emptying target/edge-stable")?;
        }
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.display()
        );
        println!("edge-stable: PATH={path} cargo test -p sluice-edge (fresh target/edge-stable)");
        for args in [&["--version"][..], &["test", "-p", "sluice-edge"][..]] {
            let status = Command::new(bin.join("cargo"))
                .args(args)
                .current_dir(root())
                .env("PATH", &path)
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC")
                .env_remove("RUSTC_WRAPPER")
                .status()
                .context("cannot run stable's cargo")?;
            if !status.success() {
                bail!("cargo {} ({status})", args.join(" "));
            }
        }
        // The build is not needed again; its 1 GB is.
        let _ = std::fs::remove_dir_all(&target);
        Ok(())
    };
    run().err().map(|e| format!("{e:#}"))
}

/// The panic messages of failed tests, read from libtest's `failures:`
/// section (`---- NAME stdout ----`, captured output, then `thread 'NAME'
/// panicked at FILE:LINE:` and the message).
#[derive(Default)]
struct Why {
    /// The test whose captured output is being read, and the lines kept
    /// so far (`None` before its panic line).
    current: Option<(String, Option<Vec<String>>)>,
    done: Vec<(String, Vec<String>)>,
}

impl Why {
    /// Lines kept per failed test, and characters per line.
    const LINES: usize = 8;
    const WIDTH: usize = 240;

    fn feed(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            self.finish();
            self.current = Some((name.to_string(), None));
            return;
        }
        if line == "failures:" || line.starts_with("test result: ") {
            self.finish();
            return;
        }
        let Some((_, kept)) = &mut self.current else {
            return;
        };
        match kept {
            None if line.starts_with("thread '") && line.contains("panicked at") => {
                *kept = Some(vec![line.to_string()]);
            }
            Some(lines)
                if lines.len() < Self::LINES
                    && !line.is_empty()
                    && !line.starts_with("note: run with") =>
            {
                lines.push(line.chars().take(Self::WIDTH).collect());
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Some((name, Some(lines))) = self.current.take() {
            self.done.push((name, lines));
        }
    }

    fn of(&self, test: &str) -> impl Iterator<Item = &String> {
        self.done
            .iter()
            .filter(move |(n, _)| n == test)
            .flat_map(|(_, l)| l)
    }
}

/// The target of one of cargo's failure lines: `error: test failed, to
/// rerun pass `-p sluice --test lab`` or, after `--no-fail-fast`, the
/// indented `` `-p sluice --test lab` `` list.
fn failed_target(line: &str) -> Option<String> {
    let t = line.trim();
    let quoted = t
        .strip_prefix("error: test failed, to rerun pass `")
        .or_else(|| t.strip_prefix('`'))?;
    let name = quoted.strip_suffix('`')?;
    name.starts_with("-p ").then(|| name.to_string())
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
const FUZZ_TARGETS: [&str; 17] = [
    "tunnel_frames",
    "tunnel_records",
    "datagram",
    "packet_views",
    "config",
    "gro",
    "dns",
    "elf",
    "policy",
    "edge_handshake",
    "edge_routing",
    // Needs root: BPF_PROG_TEST_RUN (xtask runs as root); built with the
    // fuzz crate's `kernel` feature ([`FUZZ_KERNEL_TARGET`]).
    "classifier_diff",
    "http_request",
    "trusted_facts",
    "pmtu",
    "selection",
    // The appliance's update bundles (firmware/update).
    "update_bundle",
];
/// The one fuzz target that needs more than core and config: it runs the
/// real classifier, so it needs the gateway's loader, behind the fuzz
/// crate's `kernel` feature (`dataplane/fuzz/Cargo.toml`).
const FUZZ_KERNEL_TARGET: &str = "classifier_diff";
/// How long `test` runs each fuzz target: enough to catch a target that
/// no longer builds or crashes at once, not a fuzzing campaign.
const FUZZ_SMOKE_SECONDS: u32 = 20;

/// Runs every fuzz target for `seconds`; fails if any failed.
fn fuzz(seconds: u32) -> Result<()> {
    let failed = fuzz_all(seconds);
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join("; "));
    }
    println!("fuzz: {} targets ran clean", FUZZ_TARGETS.len());
    Ok(())
}

/// Runs every fuzz target for `seconds`, starting from the seed corpus in
/// `dataplane/fuzz/corpus/<target>` (new inputs go to a scratch directory,
/// so the committed corpus only changes on purpose). Every target runs
/// even after one fails; returns the failures.
fn fuzz_all(seconds: u32) -> Vec<String> {
    let dir = root().join("dataplane/fuzz");
    let mut failed = Vec::new();
    for t in FUZZ_TARGETS {
        let scratch = std::env::temp_dir().join(format!("sluice-fuzz-{t}-{}", std::process::id()));
        let seeds = dir.join("corpus").join(t);
        if let Err(e) =
            std::fs::create_dir_all(&scratch).and_then(|()| std::fs::create_dir_all(&seeds))
        {
            failed.push(format!("{t}: corpus directories: {e}"));
            continue;
        }
        println!("fuzz: {t} for {seconds} s");
        let status = Command::new("cargo")
            .current_dir(&dir)
            // `--fuzz-dir`: the fuzz crate is not in a `fuzz/` folder beside
            // a package manifest (cargo-fuzz's default), so name it.
            .args(["+nightly", "fuzz", "run", "--release"])
            .args(if t == FUZZ_KERNEL_TARGET {
                &["--features", "kernel"][..]
            } else {
                &[]
            })
            .arg("--fuzz-dir")
            .arg(&dir)
            .arg(t)
            .arg(&scratch)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
            ])
            .status();
        let _ = std::fs::remove_dir_all(&scratch);
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => failed.push(format!(
                "{t} ({s}); crash inputs are in dataplane/fuzz/artifacts/{t}"
            )),
            Err(e) => failed.push(format!("{t}: cannot run cargo fuzz: {e}")),
        }
    }
    if failed.is_empty() {
        println!("fuzz: {} targets ran clean", FUZZ_TARGETS.len());
    }
    failed
}

/// Where cargo-deny looks for the database of `db-urls` under `db-path`
/// (`target/advisory-dbs` in `deny.toml`): `<last path segment>-<xxh64 of
/// the URL>`, as cargo-deny names it for the default `RustSec` URL.
const ADVISORY_DB_DIR: &str = "advisory-db-3157b0e258782691";

/// `cargo deny check` with no network: advisories against the `RustSec`
/// database vendored in `deny/advisory-db` (GitHub, where it lives, is
/// not reachable from these machines; the snapshot's date is printed, and
/// a warning when it is more than 90 days old), licences, bans and sources
/// by `deny.toml`. Returns the failures.
fn deny() -> Vec<String> {
    let mut failed = Vec::new();
    match advisory_db() {
        Ok(note) => println!("deny: {note}"),
        Err(e) => failed.push(format!("preparing the vendored advisory database: {e:#}")),
    }
    // `--offline` also keeps cargo-deny's `cargo metadata` from the
    // registry, and metadata wants every platform's crates (windows-sys
    // and the like, which no build here downloads): on a fresh machine
    // they are not in the cache. Fetch them first (the registry is
    // reachable; only the advisory database's GitHub is not).
    match cargo().args(["fetch", "--quiet"]).status() {
        Ok(s) if s.success() => {}
        Ok(s) => failed.push(format!("cargo fetch before cargo deny ({s})")),
        Err(e) => failed.push(format!("cannot run cargo fetch: {e}")),
    }
    println!("deny: cargo deny --offline check advisories licenses bans sources");
    let status = cargo()
        .args([
            "deny",
            "--offline",
            "check",
            "--show-stats",
            "advisories",
            "licenses",
            "bans",
            "sources",
        ])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => failed.push(format!("cargo deny check ({s}): see its diagnostics above")),
        Err(e) => failed.push(format!("cannot run cargo deny: {e}")),
    }
    failed
}

/// Lays the vendored database out where cargo-deny opens it offline
/// (`target/advisory-dbs/<dir>/crates`, with the `.git/FETCH_HEAD` whose
/// time cargo-deny reads as the last update: the snapshot's date). Returns
/// a line about the snapshot.
fn advisory_db() -> Result<String> {
    let src = root().join("deny/advisory-db");
    let snapshot =
        std::fs::read_to_string(src.join("SNAPSHOT")).context("deny/advisory-db/SNAPSHOT")?;
    let field = |k: &str| {
        snapshot
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .map(str::trim)
            .with_context(|| format!("deny/advisory-db/SNAPSHOT has no `{k}` line"))
    };
    let (commit, date) = (field("commit")?, field("date")?);
    let unix: u64 = field("unix")?.parse().context("SNAPSHOT unix")?;
    let dst = target_dir()?.join("advisory-dbs").join(ADVISORY_DB_DIR);
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&src.join("crates"), &dst.join("crates"))?;
    std::fs::create_dir_all(dst.join(".git"))?;
    let fetch_head = std::fs::File::create(dst.join(".git/FETCH_HEAD"))?;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    fetch_head.set_modified(when)?;
    let age = std::time::SystemTime::now()
        .duration_since(when)
        .map_or(0, |d| d.as_secs() / 86_400);
    let mut note = format!(
        "advisories against the vendored RustSec database, commit {} of {date} ({age} days old)",
        commit.get(..12).unwrap_or(commit)
    );
    if age > 90 {
        note.push_str(
            "
deny: WARNING: the advisory database is more than 90 days old: refresh deny/advisory-db (README, \"Dependencies\")",
        );
    }
    Ok(note)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let e = e?;
        let (s, d) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_dir(&s, &d)?;
        } else {
            std::fs::copy(&s, &d).with_context(|| s.display().to_string())?;
        }
    }
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

    #[test]
    fn finds_cargos_failed_targets() {
        assert_eq!(
            super::failed_target("error: test failed, to rerun pass `-p sluice --test lab`"),
            Some("-p sluice --test lab".into())
        );
        assert_eq!(
            super::failed_target("    `-p sluice --lib`"),
            Some("-p sluice --lib".into())
        );
        assert_eq!(super::failed_target("`not a target`"), None);
        assert_eq!(super::failed_target("   Compiling sluice"), None);
    }

    #[test]
    fn keeps_the_panic_message_of_each_failed_test() {
        let out = "\
failures:

---- edge::floods stdout ----
some captured line
thread 'edge::floods' panicked at tests/e2e/edge.rs:10:5:
throughput during the flood 100 Mbit/s < half
second line
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- edge::other stdout ----
nothing panicked here

failures:
    edge::floods
    edge::other

test result: FAILED. 3 passed; 2 failed; 0 ignored";
        let mut why = super::Why::default();
        for line in out.lines() {
            why.feed(line);
        }
        let floods: Vec<_> = why.of("edge::floods").collect();
        assert_eq!(floods.len(), 3, "{floods:?}");
        assert!(floods[0].contains("panicked at tests/e2e/edge.rs:10:5"));
        assert_eq!(floods[1], "throughput during the flood 100 Mbit/s < half");
        assert_eq!(floods[2], "second line");
        assert_eq!(why.of("edge::other").count(), 0);
    }
}
