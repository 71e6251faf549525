use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    thread,
};

use std::ffi::OsString;

use anyhow::{Context as _, Result, bail};

use crate::{ebpf, lint, setup};

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
    ignored: u64,
}

/// Lint, then unit and unprivileged tests, then the integration tests, the
/// root-only ones (`#[ignore = "needs root"]`) included when root, on one
/// thread (they share bpffs, namespaces and links). The XDP object is built
/// once, first. Ends with one `summary:` line.
pub fn run(opts: Options) -> Result<()> {
    let env = ebpf::prepare()?;
    if !opts.no_lint {
        lint::lint(&env)?;
    }
    let mut tally = Tally::default();
    eprintln!("test: unit and unprivileged tests");
    let unit = cargo_test(&["test", "--locked"], &env, &mut tally);
    let root = setup::is_root();
    let mut args = vec![
        "test",
        "--locked",
        "-p",
        "jailer-tests",
        "--",
        "--test-threads=1",
    ];
    if root {
        eprintln!(
            "test: integration tests, the kernel ones (XDP, netns, bpffs) included, one thread"
        );
        args.push("--include-ignored");
    } else {
        eprintln!(
            "test: integration tests; not root: the kernel ones are reported ignored (run `sudo -E cargo xtask test`)"
        );
    }
    let integration = cargo_test(&args, &env, &mut tally);
    println!(
        "summary: {} passed, {} failed, {} ignored{}",
        tally.passed,
        tally.failed,
        tally.ignored,
        if root {
            ""
        } else {
            " (kernel tests need root)"
        }
    );
    unit?;
    integration?;
    if tally.failed > 0 {
        bail!("{} test(s) failed", tally.failed);
    }
    Ok(())
}

/// Runs cargo, echoing its output while counting libtest's result lines.
fn cargo_test(args: &[&str], env: &[(&str, OsString)], tally: &mut Tally) -> Result<()> {
    let mut child = Command::new("cargo")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
                    counts.2 += num("ignored");
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
        tally.ignored += s;
    }
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
