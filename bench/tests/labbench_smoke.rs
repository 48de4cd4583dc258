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
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
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
