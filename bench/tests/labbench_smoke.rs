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
