//! The bad-configuration matrix: every malformed config and filter file in
//! `corpus/` is refused by `jailer check` with one line naming the file, the
//! line and the problem, and exit code 2.

use std::{fs, path::Path};

use clap::Parser as _;
use jailer::cli::Cli;

/// (text, line, expected) cases of a corpus file.
fn cases(corpus: &str) -> Vec<(String, usize, String)> {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus")
            .join(corpus),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut body = String::new();
    for line in text.lines() {
        if line.starts_with('#') && body.is_empty() {
            continue;
        }
        if line == "---" {
            body.clear();
            continue;
        }
        if let Some(rest) = line.strip_prefix("=> ") {
            let (n, want) = rest
                .split_once(": ")
                .unwrap_or((rest.trim_end_matches(':'), ""));
            out.push((body.clone(), n.parse().unwrap(), want.to_owned()));
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    out
}

fn check(config: &Path) -> (u8, String) {
    let cli =
        Cli::try_parse_from(["jailer", "check", "--config", config.to_str().unwrap()]).unwrap();
    match jailer::cli::run(cli) {
        Ok(()) => (0, String::new()),
        Err(e) => (e.exit_code(), jailer::error::Chain(&e).to_string()),
    }
}

#[test]
fn every_bad_config_is_refused_with_file_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jailer.toml");
    let all = cases("bad-configs.txt");
    assert!(all.len() >= 20, "corpus read: {} cases", all.len());
    for (text, line, want) in all {
        fs::write(&path, &text).unwrap();
        let (code, msg) = check(&path);
        assert_eq!(code, 2, "exit code for:\n{text}\n{msg}");
        assert!(!msg.contains('\n'), "one line, got:\n{msg}");
        let prefix = format!("{}:{line}:", path.display());
        assert!(
            msg.starts_with(&prefix),
            "should start with {prefix}: {msg}"
        );
        assert!(msg.contains(&want), "should contain {want:?}: {msg}");
    }
}

#[test]
fn every_bad_filter_is_refused_with_file_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jailer.toml");
    fs::write(
        &config,
        "[jails.a]\nfilter = \"bad.conf\"\nlogpath = \"/x\"\n",
    )
    .unwrap();
    let filter = dir.path().join("bad.conf");
    let all = cases("bad-filters.txt");
    assert!(all.len() >= 8, "corpus read: {} cases", all.len());
    for (text, line, want) in all {
        fs::write(&filter, &text).unwrap();
        let (code, msg) = check(&config);
        assert_eq!(code, 2, "exit code for:\n{text}\n{msg}");
        assert!(!msg.contains('\n'), "one line, got:\n{msg}");
        // The config file and line of `filter = ...`, then the filter file
        // and its line (when the problem has one).
        let prefix = if line == 0 {
            format!(
                "{}:2: jails.a.filter: filter `bad.conf`: ",
                config.display()
            )
        } else {
            format!(
                "{}:2: jails.a.filter: filter `bad.conf`: {}:{line}:",
                config.display(),
                filter.display()
            )
        };
        assert!(
            msg.starts_with(&prefix),
            "should start with {prefix}: {msg}"
        );
        assert!(msg.contains(&want), "should contain {want:?}: {msg}");
    }
}
