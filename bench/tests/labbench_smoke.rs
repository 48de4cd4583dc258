//! The lab benchmark in smoke mode (one second per case), so that it never
//! rots: it must build its lab, run every case, write its three outputs and
//! leave nothing behind. Its figures mean nothing and are not checked.
use std::path::PathBuf;

#[test]
fn lab_benchmark_smoke_run() {
    if !sluice_lab::require_root("lab_benchmark_smoke_run") {
        return;
    }
    // The sluice binary sits next to this test's directory (target/<profile>).
    let exe = std::env::current_exe().expect("test executable path");
    let sluice: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("sluice"))
        .expect("target directory");
    assert!(
        sluice.exists(),
        "{} is missing: build it first (`cargo xtask test` builds the whole workspace)",
        sluice.display()
    );
    let out = std::env::temp_dir().join(format!("sluice-labbench-smoke-{}", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_labbench"))
        .args(["--smoke", "--sluice"])
        .arg(&sluice)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("running labbench");
    assert!(status.success(), "labbench --smoke failed: {status}");
    for f in ["results.md", "results.json", "results.svg"] {
        let text = std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            text.contains("sluice tunnel (native)"),
            "{f} lacks the sluice tunnel case"
        );
        assert!(
            text.contains("sluice datagram (native)"),
            "{f} lacks the datagram transport's case"
        );
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    // The packet generator's traffic and its ceiling: rows for the kernel
    // baseline, the sluice paths and the XDP_DROP ceiling, with the ratio
    // to the ceiling, and packets delivered (a functional check: the
    // generator sent and the counters counted; no rate is judged).
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    let generator = |case: &str| {
        results
            .as_array()
            .expect("an array of rows")
            .iter()
            .find(|r| r["case"] == case && r["traffic"] == "UDP 64 B (generator)")
            .unwrap_or_else(|| panic!("no generator row for {case}:\n{md}"))
            .clone()
    };
    for case in [
        "XDP_DROP ceiling",
        "kernel, no XDP",
        "sluice bypass (native)",
        "sluice tunnel (native)",
    ] {
        let r = generator(case);
        assert!(
            r["mpps"].as_f64().is_some_and(|m| m > 0.0),
            "nothing delivered for {case}: {r}"
        );
        assert!(
            r["offered_mpps"].as_f64().is_some_and(|m| m > 0.0),
            "the generator sent nothing for {case}: {r}"
        );
        if case != "XDP_DROP ceiling" {
            assert!(
                r["ratios"]["XDP_DROP ceiling"].is_number(),
                "no ratio to the ceiling for {case}: {r}"
            );
        }
    }
    assert!(
        md.contains("| XDP_DROP ceiling | UDP 64 B (generator) |"),
        "no ceiling row in results.md:\n{md}"
    );
    assert!(
        md.contains("## Endpoint mode"),
        "no endpoint section:\n{md}"
    );
    assert!(
        md.contains("## Policy swaps under load"),
        "no policy section:\n{md}"
    );
    let policy = std::fs::read_to_string(out.join("policy.json")).expect("policy.json");
    assert_eq!(
        policy.lines().count(),
        6,
        "two rates, three loads:\n{policy}"
    );
    let endpoint = std::fs::read_to_string(out.join("endpoint.json")).expect("endpoint.json");
    assert_eq!(
        endpoint
            .lines()
            .filter(|l| l.contains("\"sockets\""))
            .count(),
        2,
        "attribution at 1,000 and 10,000 sockets:\n{endpoint}"
    );
    assert_eq!(
        endpoint.lines().filter(|l| l.contains("\"case\"")).count(),
        4,
        "ingress, two paths, two sizes:\n{endpoint}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A benchmark stopped by SIGTERM mid-run (Ctrl-C, a CI timeout) tears
/// its lab down: no namespace, pin, lock or outage file, process or lab
/// directory of it is left (it left all of them: `Drop` does not run when
/// a signal ends a process).
#[test]
fn a_benchmark_stopped_by_sigterm_leaves_nothing_behind() {
    if !sluice_lab::require_root("a_benchmark_stopped_by_sigterm_leaves_nothing_behind") {
        return;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let sluice: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("sluice"))
        .expect("target directory");
    let out = std::env::temp_dir().join(format!("sluice-labbench-term-{}", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_labbench"))
        .args([
            "--seconds",
            "30",
            "--only",
            "sluice tunnel (native)",
            "--traffic",
            "tcp1",
            "--sluice",
        ])
        .arg(&sluice)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running labbench");
    let pid = child.id();
    let prefix = format!("sl{pid}x");
    let namespaces = || {
        let o = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count()
    };
    let running = |name: &str| {
        std::process::Command::new("pgrep")
            .args(["-f", name])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    };
    // Mid-run: its namespaces made and its gateway started.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    let config = format!("sluice-lab-{pid}-0/sluice/gateway.toml");
    while !(namespaces() > 0 && running(&config)) {
        assert!(
            std::time::Instant::now() < deadline,
            "labbench never started its gateway"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "labbench ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The namespaces' inodes name their pins, locks and outage files.
    let inodes: Vec<String> = std::fs::read_dir("/run/netns")
        .expect("/run/netns")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(e.path())
                .ok()
                .map(|m| format!("{}-", m.ino()))
        })
        .collect();
    // SAFETY: a signal to the child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait for labbench");
    assert_eq!(status.code(), Some(130), "labbench after SIGTERM: {status}");
    assert_eq!(namespaces(), 0, "namespaces of labbench {pid} left behind");
    assert!(!running(&config), "a process of the lab still runs");
    let leftovers: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("sluice-lab-{pid}-")))
        .collect();
    assert!(leftovers.is_empty(), "lab directories left: {leftovers:?}");
    for dir in ["/run/sluice", "/run/sluice-lab/bpffs/sluice"] {
        let left: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| inodes.iter().any(|i| n.starts_with(i.as_str())))
            .collect();
        assert!(left.is_empty(), "{dir}: {left:?} left behind");
    }
    let _ = std::fs::remove_dir_all(&out);
}
