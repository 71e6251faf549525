//! `jailer regex`: fail2ban-regex for jailer filters.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::Path,
    time::Instant,
};

use serde::Serialize;

use super::RegexArgs;
use crate::{
    error::Error,
    filter::{Filter, Verdict},
};

/// Counts of one run.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub matched: u64,
    pub ignored: u64,
    pub missed: u64,
    pub seconds: f64,
    pub lines_per_sec: f64,
}

/// Runs `filter` over every line of `input`, calling `on_match(line_no, addr)`.
pub fn scan<R: BufRead>(
    filter: &Filter,
    mut input: R,
    mut on_match: impl FnMut(u64, std::net::IpAddr) -> io::Result<()>,
) -> io::Result<Summary> {
    let start = Instant::now();
    let mut s = Summary::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        s.lines += 1;
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = String::from_utf8_lossy(raw);
        match filter.check(&line) {
            Verdict::Failure(ip) => {
                s.matched += 1;
                on_match(s.lines, ip)?;
            }
            Verdict::Ignored => s.ignored += 1,
            Verdict::Miss => s.missed += 1,
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

pub(super) fn run(args: &RegexArgs) -> Result<(), Error> {
    let filter = Filter::load(&args.filter, Path::new(".")).map_err(Box::new)?;
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
    let on_match = |out: &mut BufWriter<_>, n: u64, ip: std::net::IpAddr| {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"line": n, "addr": ip.to_string()})
            )
        } else {
            writeln!(out, "line {n}: {ip}")
        }
    };
    let write_err = |source| Error::Io {
        path: "stdout".into(),
        source,
    };
    let summary = if path.is_file() {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        scan(&filter, BufReader::with_capacity(1 << 20, file), |n, ip| {
            on_match(&mut out, n, ip)
        })
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?
    } else {
        scan(&filter, args.log.as_bytes(), |n, ip| {
            on_match(&mut out, n, ip)
        })
        .map_err(write_err)?
    };
    if json {
        writeln!(out, "{}", serde_json::json!({ "summary": summary })).map_err(write_err)?;
    } else {
        writeln!(
            out,
            "\nFilter: {}\nLines: {} lines, {} ignored, {} matched, {} missed\n[processed in {:.2} sec, {:.0} lines/s]",
            filter.name(),
            summary.lines,
            summary.ignored,
            summary.matched,
            summary.missed,
            summary.seconds,
            summary.lines_per_sec
        )
        .map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_line_numbers() {
        let f = Filter::load("vpopmail", Path::new(".")).unwrap();
        let log = "a\nvpopmail[1]: vchkpw-pop3: password fail x@y:203.0.113.7\nb\nvpopmail[1]: vchkpw-imap: null password given x:2001_db8__1\n";
        let mut hits = Vec::new();
        let s = scan(&f, log.as_bytes(), |n, ip| {
            hits.push((n, ip.to_string()));
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
