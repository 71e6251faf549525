use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the XDP program with the nightly toolchain and bpf-linker (both set
/// up by `cargo xtask setup`); the object is embedded with
/// `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
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
    println!("cargo:rerun-if-env-changed=JAILER_TOOLS_DIR");

    let metadata = cargo_metadata_root()?;
    let ebpf = Package {
        name: "jailer-ebpf",
        root_dir: &metadata,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .context("building the XDP program failed; run `cargo xtask setup` first")
}

fn cargo_metadata_root() -> anyhow::Result<String> {
    let manifest = env::var("CARGO_MANIFEST_DIR")?;
    let root = PathBuf::from(manifest).join("../jailer-ebpf");
    root.canonicalize()
        .map_err(|e| anyhow!("{}: {e}", root.display()))
        .map(|p| p.display().to_string())
}
