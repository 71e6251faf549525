use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Embeds the XDP program (`include_bytes_aligned!` in kernel/mod.rs).
///
/// `cargo xtask` builds it once per run and names it in
/// `JAILER_EBPF_OBJECT`; a plain `cargo build` builds it here with aya-build
/// (nightly toolchain and bpf-linker, both set up by `cargo xtask setup`).
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=JAILER_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=JAILER_TOOLS_DIR");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    if let Some(object) = env::var_os("JAILER_EBPF_OBJECT") {
        let object = PathBuf::from(object);
        println!("cargo:rerun-if-changed={}", object.display());
        fs::copy(&object, out_dir.join("jailer"))
            .with_context(|| format!("copying the XDP object {}", object.display()))?;
        return Ok(());
    }

    // `cargo xtask setup` keeps bpf-linker in a tools directory; put it on PATH
    // so a plain `cargo build` works after setup, not only through xtask.
    let tools = env::var_os("JAILER_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("jailer/tools"))
        });
    if let Some(bin) = tools
        .map(|t| t.join("bin"))
        .filter(|b| b.join("bpf-linker").exists())
    {
        let mut paths = vec![bin];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    }

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../jailer-ebpf");
    let root = root
        .canonicalize()
        .map_err(|e| anyhow!("{}: {e}", root.display()))?
        .display()
        .to_string();
    let ebpf = Package {
        name: "jailer-ebpf",
        root_dir: &root,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .context("building the XDP program failed; run `cargo xtask setup` first")
}
