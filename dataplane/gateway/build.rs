//! Builds the XDP classifier (`ebpf/programs`) for `bpfel-unknown-none` with
//! aya-build, so that `src/ebpf/mod.rs` can embed it. Needs the nightly toolchain
//! with `rust-src` and `bpf-linker`: `cargo xtask setup` installs both.
use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../../ebpf/programs");
    let root = root.to_str().context("non-UTF-8 path")?;
    if env::var_os("AYA_BUILD_SKIP").is_none()
        && Command::new("bpf-linker")
            .arg("--version")
            .output()
            .is_err()
    {
        bail!(
            "bpf-linker is not installed: run `cargo xtask setup` (or `cargo xtask test`), \
             which installs it and the nightly rust-src component"
        );
    }
    // aya-build relays the nested cargo's progress lines as build warnings;
    // keep only real diagnostics.
    // SAFETY: build scripts are single-threaded at this point; nothing else
    // reads the environment concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sluice-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP (docs, clippy without the eBPF toolchain) leave an
    // empty object so that the crate still compiles; loading it fails loudly.
    let out = PathBuf::from(env::var("OUT_DIR")?).join("sluice-classifier");
    if !out.exists() {
        std::fs::write(&out, [])?;
    }
    Ok(())
}
