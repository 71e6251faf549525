//! The XDP object, built once per xtask run and handed to every later cargo
//! invocation through `JAILER_EBPF_OBJECT`: jailer's build script then
//! embeds it instead of building it again (aya-build builds it anew in each
//! build script's own target directory: debug, test, clippy and release
//! would each rebuild `core` for bpfel).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::setup::{self, sh};

/// The variable jailer's build.rs reads.
pub const ENV: &str = "JAILER_EBPF_OBJECT";
/// The bench-only object (the reference program and cost probes), read by
/// `tests/benches/datapath.rs` at run time.
pub const BENCH_ENV: &str = "JAILER_BENCH_OBJECT";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds `jailer-ebpf` and the bench-only `jailer-bench-ebpf` (release,
/// BTF; one cargo call, one `core` build) with the nightly toolchain and
/// bpf-linker on `path`; returns the XDP object's and the bench object's
/// paths.
pub fn build(path: &OsString) -> Result<(PathBuf, PathBuf)> {
    let target_dir = workspace().join("target/bpf");
    eprintln!(
        "ebpf: building the XDP program and the bench's reference (nightly, bpfel-unknown-none, once for this run)"
    );
    let arch = std::env::consts::ARCH;
    // The flags aya-build passes: BTF for bpftool and BTF maps.
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f");
    sh(Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--quiet", "--locked"])
        .args([
            "--package",
            "jailer-ebpf",
            "--package",
            "jailer-bench-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace())
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env("PATH", path))
    .context("building the XDP program")?;
    let found = |name: &str| {
        let object = target_dir.join("bpfel-unknown-none/release").join(name);
        object
            .canonicalize()
            .with_context(|| format!("no XDP object at {}", object.display()))
    };
    let (object, bench) = (found("jailer")?, found("jailer-bench")?);
    eprintln!("ebpf: {}", object.display());
    Ok((object, bench))
}

/// Setup, then the XDP object: the environment every cargo call of this
/// run gets (PATH with bpf-linker, the object for jailer's build.rs).
pub fn prepare() -> Result<Vec<(&'static str, OsString)>> {
    let path = setup::ensure()?;
    let (object, bench) = build(&path)?;
    Ok(vec![
        ("PATH", path),
        (ENV, object.into_os_string()),
        (BENCH_ENV, bench.into_os_string()),
    ])
}
