//! Enrolment on first boot against a stand-in `sluice` (a script that
//! fails as often as told, then writes what enrolment writes): the token
//! file or the command line, retries, the managed file, power cuts.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use sluice_update::enrol::{self, Outcome, Paths};

const TOKEN: &str =
    "sle_S3cr3tT0ken.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DEFAULTS: &str = include_str!("../../rootfs/usr/share/sluice/defaults/gateway.toml");

struct Box {
    dir: tempfile::TempDir,
    paths: Paths,
}

impl Box {
    /// A data partition with the image's default gateway file; the
    /// stand-in fails `failures` times first.
    fn new(failures: u32, cmdline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("gateway.toml"), DEFAULTS).unwrap();
        let sluice = dir.path().join("sluice");
        // It checks what it is given: the token in its environment, never
        // in its arguments.
        std::fs::write(
            &sluice,
            format!(
                r#"#!/bin/sh
set -eu
echo "$@" >> "{calls}"
case "$*" in *sle_*) echo "the token is in the arguments" >&2; exit 9;; esac
case "$1 $2 $4" in "gateway --enrol --state-dir"|"edge --enrol --state-dir") ;; *) exit 8;; esac
[ "$SLUICE_ENROL_TOKEN" = "{TOKEN}" ] || {{ echo "wrong token" >&2; exit 7; }}
if [ -e "{refuse}" ]; then echo "sluice: error: the controller refused the enrolment (401): token unknown, used or expired" >&2; exit 3; fi
n=$(wc -l < "{calls}")
if [ "$n" -le {failures} ]; then echo "Error: the controller at $3: connection refused" >&2; exit 1; fi
mkdir -p "$5"
echo '{{"kind":"'$1'","id":"x_1","name":"branch-1","agent_url":"https://198.51.100.2:8444"}}' > "$5/enrolment.json"
echo "enrolled as $1 \`branch-1\` (id x_1)"
"#,
                calls = dir.path().join("calls").display(),
                refuse = dir.path().join("refuse").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&sluice, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("cmdline"), format!("{cmdline}\n")).unwrap();
        let paths = Paths {
            data,
            sluice,
            cmdline: dir.path().join("cmdline"),
        };
        Box { dir, paths }
    }

    fn data(&self, f: &str) -> PathBuf {
        self.paths.data.join(f)
    }

    fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls")).map_or(0, |t| t.lines().count())
    }

    fn run(&self) -> (Result<Outcome, enrol::Error>, String) {
        let mut said = String::new();
        let r = enrol::run(&self.paths, Duration::from_secs(1), |l| {
            said.push_str(l);
            said.push('\n');
        });
        (r, said)
    }

    fn token_file(&self) {
        std::fs::write(
            self.data("enrol.toml"),
            format!("controller = \"https://198.51.100.2:8443\"\ntoken = \"{TOKEN}\"\n"),
        )
        .unwrap();
    }

    fn managed(&self) -> bool {
        let text = std::fs::read_to_string(self.data("gateway.toml")).unwrap();
        text.contains("[controller]") && !text.contains("gateway.key")
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn without_a_token_the_gateway_keeps_its_own_file() {
    let b = Box::new(0, "console=ttyS0 sluice.slot=a");
    let (r, _) = b.run();
    assert_eq!(r.unwrap(), Outcome::Nothing);
    assert_eq!(b.calls(), 0);
    assert_eq!(
        std::fs::read_to_string(b.data("gateway.toml")).unwrap(),
        DEFAULTS
    );
}

#[test]
fn a_token_on_the_data_partition_enrols_once_through_failures() {
    let b = Box::new(2, "console=ttyS0");
    b.token_file();
    std::fs::set_permissions(b.data("enrol.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (r, said) = b.run();
    assert_eq!(r.unwrap(), Outcome::Enrolled, "{said}");
    assert_eq!(b.calls(), 3, "two failures, then enrolled: {said}");
    assert!(said.contains("connection refused"), "{said}");
    assert!(said.contains("enrolled as gateway `branch-1`"), "{said}");
    assert!(!said.contains("sle_"), "the token was shown: {said}");
    assert!(b.managed());
    assert_eq!(mode(&b.data("gateway.toml")), 0o600);
    assert_eq!(
        std::fs::read_to_string(b.data("gateway.toml.pre-enrol")).unwrap(),
        DEFAULTS
    );
    assert!(!b.data("enrol.toml").exists(), "the used token is removed");
    // The managed file names the state directory and loads as a managed
    // gateway's (the controller's part comes from the agent).
    let text = std::fs::read_to_string(b.data("gateway.toml")).unwrap();
    let s = sluice_config::managed::section(&b.data("gateway.toml"), &text)
        .unwrap()
        .unwrap();
    assert_eq!(s.state_dir, b.data("enrolment"));
    // Enrolled: another token, or a boot, does nothing.
    b.token_file();
    let (r, _) = b.run();
    assert_eq!(r.unwrap(), Outcome::Already);
    assert_eq!(b.calls(), 3);
    assert!(!b.data("enrol.toml").exists());
}

#[test]
fn a_power_cut_after_enrolment_is_finished_at_the_next_boot() {
    let b = Box::new(0, "console=ttyS0");
    b.token_file();
    // Enrolment wrote its files; the power went before the gateway's file
    // was made managed.
    std::fs::create_dir_all(b.data("enrolment")).unwrap();
    std::fs::write(b.data("enrolment/enrolment.json"), "{}").unwrap();
    let (r, said) = b.run();
    assert_eq!(r.unwrap(), Outcome::Already);
    assert!(said.contains("made managed again"), "{said}");
    assert_eq!(b.calls(), 0, "not enrolled twice");
    assert!(b.managed());
    assert!(!b.data("enrol.toml").exists());
}

#[test]
fn a_token_on_the_kernel_command_line_enrols() {
    let b = Box::new(
        0,
        &format!(
            "console=ttyS0 sluice.enrol=https://198.51.100.2:8443 sluice.token={TOKEN} sluice.slot=a"
        ),
    );
    let (r, said) = b.run();
    assert_eq!(r.unwrap(), Outcome::Enrolled, "{said}");
    assert!(said.contains("the kernel command line"), "{said}");
    assert!(b.managed());
    // The token stays on the command line: the next boot does nothing.
    let (r, _) = b.run();
    assert_eq!(r.unwrap(), Outcome::Already);
    assert_eq!(b.calls(), 1);
}

#[test]
fn a_malformed_token_is_an_error_and_nothing_is_tried() {
    let b = Box::new(0, "console=ttyS0");
    std::fs::write(
        b.data("enrol.toml"),
        "controller = \"http://198.51.100.2:8443\"\ntoken = \"sle_x\"\n",
    )
    .unwrap();
    let (r, _) = b.run();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("https://"), "{e}");
    assert_eq!(b.calls(), 0);
    assert_eq!(mode(&b.data("enrol.toml")), 0o600, "made private");
    assert!(!b.managed());
}

#[test]
fn a_box_with_the_edges_file_enrols_as_an_edge() {
    let b = Box::new(0, "console=ttyS0");
    std::fs::remove_file(b.data("gateway.toml")).unwrap();
    let own = include_str!("../../../tests/configs/edge.toml");
    std::fs::write(b.data("edge.toml"), own).unwrap();
    b.token_file();
    let (r, said) = b.run();
    assert_eq!(r.unwrap(), Outcome::Enrolled, "{said}");
    assert!(said.contains("enrolled as edge"), "{said}");
    let calls = std::fs::read_to_string(b.dir.path().join("calls")).unwrap();
    assert!(calls.starts_with("edge --enrol "), "{calls}");
    let text = std::fs::read_to_string(b.data("edge.toml")).unwrap();
    assert!(
        text.contains("[controller]") && !text.contains("edge.key"),
        "{text}"
    );
    assert!(
        !text.contains("[[edge.gateway]]"),
        "the controller lists them: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(b.data("edge.toml.pre-enrol")).unwrap(),
        own
    );
    assert!(!b.data("gateway.toml").exists());
}

#[test]
fn a_refused_token_ends_enrolment_with_a_clear_error() {
    let b = Box::new(0, "console=ttyS0");
    b.token_file();
    std::fs::write(b.dir.path().join("refuse"), "").unwrap();
    let (r, said) = b.run();
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("refused the enrolment (401)") && e.contains("new token"),
        "{e}"
    );
    assert_eq!(b.calls(), 1, "not tried again: {said}");
    assert!(!e.contains("sle_") && !said.contains("sle_"));
    assert!(!b.managed());
    assert!(
        b.data("enrol.toml").exists(),
        "kept for the operator to replace"
    );
}

#[test]
fn odd_boxes_and_files_are_refused_before_anything_is_sent() {
    // A controller alone has nothing to enrol.
    let b = Box::new(0, "console=ttyS0");
    std::fs::remove_file(b.data("gateway.toml")).unwrap();
    std::fs::write(b.data("controller.toml"), "[controller]\n").unwrap();
    b.token_file();
    let e = b.run().0.unwrap_err().to_string();
    assert!(e.contains("nothing to enrol"), "{e}");
    assert_eq!(b.calls(), 0);
    // A token file that is a link, or too big: refused.
    let b = Box::new(0, "console=ttyS0");
    std::os::unix::fs::symlink("/etc/hostname", b.data("enrol.toml")).unwrap();
    assert!(b.run().0.is_err());
    std::fs::remove_file(b.data("enrol.toml")).unwrap();
    std::fs::write(b.data("enrol.toml"), "x".repeat(5000)).unwrap();
    let e = b.run().0.unwrap_err().to_string();
    assert!(e.contains("at most 4096 bytes"), "{e}");
    assert_eq!(b.calls(), 0);
    // Enrolled as a gateway, now with an edge's file only: refused.
    let b = Box::new(0, "console=ttyS0");
    b.token_file();
    assert_eq!(b.run().0.unwrap(), Outcome::Enrolled);
    std::fs::remove_file(b.data("gateway.toml")).unwrap();
    std::fs::write(b.data("edge.toml"), "[edge]\n").unwrap();
    let e = b.run().0.unwrap_err().to_string();
    assert!(e.contains("enrolled as gateway"), "{e}");
}
