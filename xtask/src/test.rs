use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context as _, Result, bail};

use crate::{lint, setup};

#[derive(clap::Parser)]
pub struct Options {
    /// Skip fmt and clippy.
    #[arg(long)]
    no_lint: bool,
}

/// Test counts across cargo test runs.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// Lint, then unit and unprivileged integration tests, then the root-only
/// kernel tests on one thread (they share bpffs, namespaces and links).
/// Ends with one `summary: N passed, N failed, N skipped` line.
pub fn run(opts: Options) -> Result<()> {
    let path = setup::ensure()?;
    if !opts.no_lint {
        lint::lint(&path)?;
    }
    let mut tally = Tally::default();
    eprintln!("test: unit and unprivileged tests");
    let unit = cargo_test(&["test", "--locked"], &path, &mut tally);
    if !setup::is_root() {
        eprintln!(
            "test: not root: the kernel tests below print SKIP; run `sudo -E cargo xtask test` to run them"
        );
    }
    eprintln!("test: kernel tests (XDP verdicts, netns, maps), one thread");
    let kernel = cargo_test(
        &[
            "test",
            "--locked",
            "-p",
            "jailer-tests",
            "--",
            "--test-threads=1",
            "--nocapture",
        ],
        &path,
        &mut tally,
    );
    // Tests that skipped themselves still report "ok": count them apart.
    tally.passed = tally.passed.saturating_sub(tally.skipped);
    println!(
        "summary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    unit?;
    kernel?;
    if tally.failed > 0 {
        bail!("{} test(s) failed", tally.failed);
    }
    Ok(())
}

/// Runs cargo, echoing its output while counting libtest's result lines and
/// our tests' `SKIP` lines.
fn cargo_test(args: &[&str], path: &std::ffi::OsStr, tally: &mut Tally) -> Result<()> {
    let mut child = Command::new("cargo")
        .args(args)
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning cargo test")?;
    let echo = |stream: Box<dyn Read + Send>, to_stdout: bool| {
        thread::spawn(move || {
            let mut counts = (0u64, 0u64, 0u64);
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if to_stdout {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
                if let Some(rest) = line.strip_prefix("test result: ") {
                    let num = |word: &str| {
                        rest.split(';')
                            .find_map(|part| part.trim().strip_suffix(word).map(str::trim))
                            .and_then(|n| n.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()))
                            .unwrap_or(0)
                    };
                    counts.0 += num("passed");
                    counts.1 += num("failed");
                }
                if line.starts_with("SKIP ") {
                    counts.2 += 1;
                }
            }
            counts
        })
    };
    let out = echo(Box::new(child.stdout.take().expect("piped")), true);
    let err = echo(Box::new(child.stderr.take().expect("piped")), false);
    let status = child.wait()?;
    for (p, f, s) in [
        out.join().expect("echo thread"),
        err.join().expect("echo thread"),
    ] {
        tally.passed += p;
        tally.failed += f;
        tally.skipped += s;
    }
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
