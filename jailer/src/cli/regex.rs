//! `jailer regex`: fail2ban-regex for jailer's filters and fail2ban's own
//! (`dovecot`, `dovecot[mode=aggressive]`, a path, `vpopmail`).

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::Path,
    sync::Arc,
    time::{Instant, SystemTime},
};

use serde::Serialize;

use super::RegexArgs;
use crate::{
    error::Error,
    filter::{Filter, FilterContext, Found, Host, Outcome},
};

/// Counts of one run.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub lines: u64,
    /// Lines that completed at least one failure.
    pub matched: u64,
    /// Failures found (a line may complete several).
    pub failures: u64,
    /// Failures that named a host name (never resolved).
    pub unresolved: u64,
    pub ignored: u64,
    pub missed: u64,
    pub seconds: f64,
    pub lines_per_sec: f64,
}

/// Runs `filter` over every line of `input`, as one log stream, calling
/// `on_failure(line_no, failure)` for each failure found.
pub fn scan<R: BufRead>(
    filter: &Arc<Filter>,
    mut input: R,
    mut on_failure: impl FnMut(u64, &Found) -> io::Result<()>,
) -> io::Result<Summary> {
    let start = Instant::now();
    let now = SystemTime::now();
    let mut matcher = filter.matcher();
    let mut s = Summary::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        s.lines += 1;
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // Validated the fast way first: nearly every log line is UTF-8.
        let line = match std::str::from_utf8(raw) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(raw),
        };
        match matcher.process(&line, None, now) {
            Outcome::Failures(found) => {
                s.matched += 1;
                for f in &found {
                    s.failures += 1;
                    s.unresolved += u64::from(matches!(f.host, Host::Name(_)));
                    on_failure(s.lines, f)?;
                }
            }
            Outcome::Ignored => s.ignored += 1,
            Outcome::Miss => s.missed += 1,
        }
    }
    s.seconds = start.elapsed().as_secs_f64();
    s.lines_per_sec = if s.seconds > 0.0 {
        s.lines as f64 / s.seconds
    } else {
        0.0
    };
    Ok(s)
}

/// One failure of `--json` output.
#[derive(Serialize)]
struct JsonFailure<'a> {
    line: u64,
    /// An address or a network.
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    /// A host name (never resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    /// The line's own time, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<u64>,
}

pub(super) fn run(args: &RegexArgs) -> Result<(), Error> {
    let ctx = FilterContext {
        base: Path::new("."),
        fail2ban_dir: &args.fail2ban_dir,
        ports: None,
        journal: false,
    };
    let filter = Arc::new(Filter::load(&args.filter, &ctx).map_err(Box::new)?);
    let path = Path::new(&args.log);
    // A log line has spaces; a word that is no file is a mistyped path.
    if !path.is_file() && !args.log.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "{}: no such log file (to test a single line, give the whole line, spaces and all)",
            args.log
        )));
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let json = args.json;
    let on_failure = |out: &mut BufWriter<_>, n: u64, f: &Found| {
        let (addr, host) = match &f.host {
            Host::Name(name) => (None, Some(name.as_str())),
            other => (Some(other.to_string()), None),
        };
        if json {
            let record = JsonFailure {
                line: n,
                addr,
                host,
                time: f.time.map(crate::time::unix_secs),
            };
            // An I/O error stays one (a reader that left is not a failure).
            serde_json::to_writer(&mut *out, &record).map_err(io::Error::from)?;
            writeln!(out)
        } else {
            match host {
                Some(name) => writeln!(
                    out,
                    "line {n}: {name} (a host name: not resolved, never banned)"
                ),
                None => writeln!(out, "line {n}: {}", addr.unwrap_or_default()),
            }
        }
    };
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let summary = if path.is_file() {
        let file = File::open(path).map_err(io_err(path))?;
        scan(&filter, BufReader::with_capacity(1 << 20, file), |n, f| {
            on_failure(&mut out, n, f)
        })
        .map_err(io_err(path))?
    } else {
        scan(&filter, args.log.as_bytes(), |n, f| {
            on_failure(&mut out, n, f)
        })
        .map_err(io_err(Path::new("stdout")))?
    };
    let stdout_err = io_err(Path::new("stdout"));
    if json {
        writeln!(out, "{}", serde_json::json!({ "summary": summary })).map_err(stdout_err)?;
    } else {
        writeln!(
            out,
            "\nFilter: {}\nLines: {} lines, {} ignored, {} matched, {} missed; {} failures ({} host names)\n[processed in {:.2} sec, {:.0} lines/s]",
            filter.name(),
            summary.lines,
            summary.ignored,
            summary.matched,
            summary.missed,
            summary.failures,
            summary.unresolved,
            summary.seconds,
            summary.lines_per_sec
        )
        .map_err(stdout_err)?;
    }
    out.flush().map_err(io_err(Path::new("stdout")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vpopmail() -> Arc<Filter> {
        let ctx = FilterContext {
            base: Path::new("."),
            fail2ban_dir: Path::new("/etc/fail2ban"),
            ports: None,
            journal: false,
        };
        Arc::new(Filter::load("vpopmail", &ctx).unwrap())
    }

    #[test]
    fn counts_and_line_numbers() {
        let f = vpopmail();
        let log = "a\nvpopmail[1]: vchkpw-pop3: password fail x@y:203.0.113.7\nb\nvpopmail[1]: vchkpw-imap: null password given x:2001_db8__1\n";
        let mut hits = Vec::new();
        let s = scan(&f, log.as_bytes(), |n, f| {
            hits.push((n, f.host.to_string()));
            Ok(())
        })
        .unwrap();
        assert_eq!((s.lines, s.matched, s.missed, s.ignored), (4, 2, 2, 0));
        assert_eq!(
            hits,
            [(2, "203.0.113.7".to_owned()), (4, "2001:db8::1".to_owned())]
        );
    }
}
