//! Bootstrap a fresh machine: everything the build and tests need, installed
//! only when missing, each step printed.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Debian packages the build, the tests and the agent's users need:
/// bpftool (map dumps), iproute2 (namespaces, veth), libsystemd-dev and
/// pkg-config (the journal reader links libsystemd), libsqlite3-dev
/// (`import-fail2ban --bans` reads fail2ban's database), fail2ban (its filters
/// and annotated sample logs, fail2ban-regex for the speed comparison),
/// dovecot-pop3d (a real POP3 server in the tests), systemd and
/// systemd-journal-remote (real journal files for the journal tests),
/// nats-server and openssl (the fleet tests, TLS included).
const DEB_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "iputils-ping",
    "netcat-openbsd",
    "pkg-config",
    "libsystemd-dev",
    "libsqlite3-dev",
    "systemd",
    "systemd-journal-remote",
    "fail2ban",
    "dovecot-pop3d",
    "nats-server",
    "openssl",
];
/// bpf-linker version built against the nightly's own libLLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(clap::Parser)]
pub struct Options {}

pub fn run(_: Options) -> Result<()> {
    ensure().map(drop)
}

/// Installs what is missing and returns the PATH to run cargo with (the
/// bpf-linker tools directory first).
pub fn ensure() -> Result<OsString> {
    debian_packages()?;
    rust_src()?;
    let tools = tools_dir();
    bpf_linker(&tools)?;
    let mut paths = vec![tools.join("bin")];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(env::join_paths(paths)?)
}

/// Where bpf-linker lives: outside the checkout so fresh clones reuse it.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = env::var_os("JAILER_TOOLS_DIR") {
        return dir.into();
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("jailer").join("tools")
}

fn step(msg: &str) {
    eprintln!("setup: {msg}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    (unsafe { libc::geteuid() }) == 0
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEB_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        step(&format!(
            "Debian packages present: {}",
            DEB_PACKAGES.join(" ")
        ));
        return Ok(());
    }
    if !is_root() {
        step(&format!(
            "missing Debian packages (not root, not installing): {}; run: sudo apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        ));
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    sh(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the XDP program (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(out.trim()))
}

fn rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot
        .join("lib/rustlib/src/rust/library/Cargo.lock")
        .exists()
    {
        step("nightly rust-src present");
        return Ok(());
    }
    step("installing nightly rust-src");
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Builds bpf-linker against the nightly's own libLLVM (no system LLVM 22 on
/// Debian 12, no prebuilt binaries reachable): the LLVM that wrote the
/// bitcode is the one that links it. Rebuilt when the nightly changes, since
/// the libLLVM symlink would dangle.
fn bpf_linker(tools: &Path) -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let field = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_owned)
    };
    let commit = field("commit-hash:").unwrap_or_default();
    let llvm_major = field("LLVM version:")
        .and_then(|v| v.split('.').next().map(str::to_owned))
        .context("rustc +nightly -vV printed no LLVM version")?;
    let stamp = format!("bpf-linker {BPF_LINKER_VERSION} nightly {commit} llvm {llvm_major}\n");
    let stamp_file = tools.join("bpf-linker.stamp");
    let binary = tools.join("bin/bpf-linker");
    if binary.exists() && fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        step(&format!("bpf-linker present ({})", stamp.trim()));
        return Ok(());
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against nightly libLLVM {llvm_major} (about a minute)"
    ));

    let lib_dir = sysroot.join("lib");
    let lib = fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libLLVM.so."))
        .min()
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let prefix = tools.join("llvm-from-rustc");
    fs::create_dir_all(prefix.join("bin"))?;
    fs::create_dir_all(prefix.join("lib"))?;
    for (link, target) in [
        (lib.as_str(), lib_dir.join(&lib)),
        ("libLLVM.so", PathBuf::from(&lib)),
    ] {
        let link = prefix.join("lib").join(link);
        let _ = fs::remove_file(&link);
        symlink(&target, &link).with_context(|| format!("symlink {}", link.display()))?;
    }
    // bpf-linker's build script only checks that llvm-config exists.
    let llvm_config = prefix.join("bin/llvm-config");
    fs::write(&llvm_config, "#!/bin/sh\n")?;
    sh(Command::new("chmod").arg("+x").arg(&llvm_config))?;

    sh(Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .arg("--root")
        .arg(tools)
        .env("LLVM_PREFIX", &prefix))?;
    fs::write(&stamp_file, stamp)?;
    Ok(())
}

/// Runs a command, inheriting stdio; fails on a non-zero exit.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
