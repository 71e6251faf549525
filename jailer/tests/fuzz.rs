//! Property tests over attacker-shaped input (proptest; cargo-fuzz needs a
//! nightly sanitizer runtime CI does not carry). Each property runs a few
//! thousand generated cases on every `cargo xtask test`.
//!
//! - No parser panics, whatever the bytes.
//! - The vpopmail filter takes the address only from where vchkpw writes it:
//!   whatever the attacker puts in the name or password, a line yields the
//!   real source, or nothing, never another address.
//! - A damaged ban journal restores exactly what its readable records say:
//!   no ban wider or longer than a record that parsed, every intact record
//!   restored; a damaged snapshot loads as empty and cannot crash the agent.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{Arc, LazyLock},
    time::SystemTime,
};

use jailer::{
    ban::{Expiry, PortSet, Target},
    config::Config,
    filter::{
        Filter, FilterContext, Verdict, Vpopmail,
        fail2ban::{
            config::Ini,
            runtime::{CompiledFilter, FilterDef},
        },
        timestamp::parse_timestamp,
    },
    jail::Engine,
    kernel::MemBanTable,
    source::SourceId,
    state::{JOURNAL, Journal, Record, SNAPSHOT, Snapshot},
    time::{MAX_DURATION, from_unix_secs},
};
use proptest::prelude::*;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text an attacker can put in a user name or password: address-looking
/// pieces, separators, syslog escapes, control bytes.
fn attacker_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(":".to_owned()),
        Just("@".to_owned()),
        Just(" ".to_owned()),
        Just("'".to_owned()),
        Just(")".to_owned()),
        Just("#012".to_owned()),
        Just("\u{1b}[31m".to_owned()),
        Just("\u{0}".to_owned()),
        Just("_".to_owned()),
        Just("vchkpw-pop3: password fail ".to_owned()),
        Just("Sep 28 13:01:03 www vpopmail[1]: ".to_owned()),
        "[0-9]{1,3}(\\.[0-9]{1,3}){3}",
        "[0-9a-f]{1,4}(:[0-9a-f]{0,4}){1,7}",
        "[0-9a-f]{1,4}(_[0-9a-f]{0,4}){1,7}",
        "[a-zA-Z0-9.-]{1,12}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// Text vpopmail lets through `is_username_valid`/`is_domain_valid`.
fn validated_name() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{0,12}(@[a-z0-9.-]{0,12})?"
}

fn real_addr() -> impl Strategy<Value = (IpAddr, String)> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| {
            let ip = Ipv4Addr::from(o);
            (IpAddr::V4(ip), ip.to_string())
        }),
        any::<[u8; 4]>().prop_map(|o| {
            let ip = Ipv4Addr::from(o);
            (IpAddr::V4(ip), format!("::ffff:{ip}"))
        }),
        any::<[u16; 8]>().prop_map(|g| {
            let ip = Ipv6Addr::from(g);
            let ip = IpAddr::V6(ip);
            let canonical = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            (canonical, ip.to_string().replace(':', "_"))
        }),
    ]
}

const HDR: &str = "Sep 28 13:01:03 www vpopmail[20410]: vchkpw-pop3: ";

static VPOPMAIL: LazyLock<Vpopmail> = LazyLock::new(Vpopmail::default);
static REGEX: LazyLock<Arc<CompiledFilter>> = LazyLock::new(|| {
    let def = FilterDef {
        failregex: vec![r"vchkpw-\w+: .*:<HOST>$".into(), r"^<IP4> <IP6>".into()],
        ignoreregex: vec!["ok".into()],
        ..FilterDef::default()
    };
    Arc::new(CompiledFilter::new(&def).unwrap())
});

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn vpopmail_never_yields_an_address_the_attacker_chose(
        kind in prop::sample::select(vec![
            "vpopmail user not found ", "password fail ", "null password given ",
            "invalid user/domain characters ", "system user not found ",
        ]),
        name in attacker_text(),
        (real, text) in real_addr(),
    ) {
        // IPv4 and mangled IPv6 carry no `:`: whatever NAME is, the last
        // `:` separates.
        let line = format!("{HDR}{kind}{name}:{text}");
        match VPOPMAIL.check(&line) {
            Verdict::Failure(ip) => prop_assert_eq!(ip, real, "line {:?}", line),
            Verdict::Ignored | Verdict::Miss => {}
        }
    }

    #[test]
    fn passwords_never_supply_the_address(
        pass in attacker_text(),
        name in validated_name(),
        ip in any::<[u16; 8]>(),
    ) {
        // Raw IPv6 after a validated name, behind an attacker's password.
        let real = IpAddr::V6(Ipv6Addr::from(ip));
        let real = match real { IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(real, IpAddr::V4), v4 => v4 };
        let line = format!("{HDR}password fail (pass: '{pass}') {name}:{}", Ipv6Addr::from(ip));
        match VPOPMAIL.check(&line) {
            Verdict::Failure(got) => prop_assert_eq!(got, real, "line {:?}", line),
            Verdict::Ignored | Verdict::Miss => {}
        }
    }

    #[test]
    fn real_failures_are_found(name in validated_name(), (real, text) in real_addr()) {
        let line = format!("{HDR}vpopmail user not found {name}:{text}");
        prop_assert_eq!(
            VPOPMAIL.check(&line),
            Verdict::Failure(real),
            "line {:?}", line
        );
    }

    #[test]
    fn matchers_and_timestamps_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let line = String::from_utf8_lossy(&bytes);
        let _ = VPOPMAIL.check(&line);
        let _ = REGEX.matcher().process_line(&line, SystemTime::now());
        let _ = parse_timestamp(&line, SystemTime::now());
        let _ = VPOPMAIL.check(&format!("{HDR}password fail {line}"));
    }

    #[test]
    fn config_parser_never_panics(text in "(\\[jails\\.[a-z]{1,4}\\]\\n|[a-z_]{1,12} = (\"[^\"\\n]{0,12}\"|[0-9-]{1,5}|\\[\\]|true)\\n|\\n){0,12}") {
        let _ = Config::parse(Path::new("/etc/jailer/jailer.toml"), &text);
    }

    #[test]
    fn filter_names_never_panic(spec in "[ \t./aé\\[\\]=,]{0,8}(dovecot|vpopmail|sub/f\\.conf)?[ \t./aé\\[\\]=,]{0,8}") {
        // A `filter = ...` value or `jailer regex` argument: a name, a path,
        // options; anything else is an error.
        let ctx = FilterContext {
            base: Path::new("/nonexistent"),
            fail2ban_dir: Path::new("/etc/fail2ban"),
            ports: None,
            journal: false,
        };
        let _ = Filter::load(&spec, &ctx);
    }

    #[test]
    fn filter_file_parser_never_panics(text in "(\\[[A-Za-z]{0,10}\\]\\n|[a-z_]{1,10} ?[=:] ?[^\\n]{0,20}\\n|[ \\t]+[^\\n]{0,20}\\n|#[^\\n]{0,10}\\n){0,8}") {
        let _ = Ini::parse(Path::new("f.conf"), &text);
    }
}

/// The seed corpus (`corpus/vpopmail-lines.txt`): hand-made injection and
/// edge cases with the verdict each must get.
#[test]
fn seed_corpus_verdicts() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/vpopmail-lines.txt"),
    )
    .unwrap();
    let mut n = 0;
    for (i, row) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
    {
        let (want, line) = row
            .split_once('\t')
            .unwrap_or_else(|| panic!("line {}: no tab", i + 1));
        let line = line.replace("\\x1b", "\u{1b}").replace("\\x00", "\u{0}");
        let got = match VPOPMAIL.check(&line) {
            Verdict::Failure(ip) => ip.to_string(),
            Verdict::Ignored => "ignored".into(),
            Verdict::Miss => "none".into(),
        };
        assert_eq!(got, want, "corpus line {}: {line:?}", i + 1);
        n += 1;
    }
    assert!(n >= 25, "{n} corpus cases");
}

// ---------------------------------------------------------------------------
// The ban journal and the snapshot, damaged.

/// The replay's clock: fixed, so expiry is decided the same way every run.
const NOW: u64 = 1_800_000_000;
/// The clock skew the journal tolerates on a record's own times
/// (`state/journal/parser.rs`): `at` up to a day ahead, `until` up to ten years and
/// a day after `at`.
const SKEW: u64 = 86_400;

const TARGETS: [&str; 6] = [
    "203.0.113.7",
    "203.0.113.8",
    "198.51.100.0/24",
    "2001:db8::25",
    "2001:db8:1::/48",
    "10.0.0.1",
];

fn port_sets() -> [PortSet; 4] {
    [
        PortSet::only(&[110]),
        PortSet::only(&[110, 995]),
        PortSet::only(&[25, 110, 143, 465, 587, 993, 995, 4190]),
        PortSet::All,
    ]
}

/// A record as the agent or the CLI writes it: bans set within the last
/// two weeks, some expired by `NOW`, some permanent; unbans; rarely an
/// unban of everything.
fn record() -> impl Strategy<Value = Record> {
    let ban = (
        0..TARGETS.len(),
        prop::sample::select(vec!["vpopmail", "manual", "imap"]),
        0..4usize,
        0..14 * 86_400u64,
        prop_oneof![
            1 => Just(None),
            3 => (1..=3600u64).prop_map(Some),
            3 => (1..=MAX_DURATION.as_secs()).prop_map(Some),
        ],
        any::<bool>(),
    )
        .prop_map(|(t, jail, p, ago, len, monitor)| {
            let at = NOW - ago;
            Record::Ban {
                addr: TARGETS[t].parse().unwrap(),
                jail: jail.into(),
                ports: port_sets()[p],
                until: len.map(|l| at + l),
                at,
                monitor,
                origin: None,
            }
        });
    let unban = (0..TARGETS.len(), 0..14 * 86_400u64).prop_map(|(t, ago)| Record::Unban {
        addr: TARGETS[t].parse().unwrap(),
        at: NOW - ago,
        origin: None,
    });
    prop_oneof![
        12 => ban,
        3 => unban,
        1 => (0..86_400u64).prop_map(|ago| Record::UnbanAll { at: NOW - ago }),
    ]
}

/// How a line is damaged: truncated, a byte flipped, a field dropped or
/// doubled, an absurd number, odd ports or addresses, an unknown field or
/// op, garbage in its place. `seed` picks positions and values.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    FlipByte,
    DropField,
    DuplicateField,
    HugeNumber,
    OddPorts,
    OddAddress,
    UnknownField,
    OtherOp,
    Garbage,
}

fn damage() -> impl Strategy<Value = Option<(Damage, u64)>> {
    let kind = prop::sample::select(vec![
        Damage::Truncate,
        Damage::FlipByte,
        Damage::DropField,
        Damage::DuplicateField,
        Damage::HugeNumber,
        Damage::OddPorts,
        Damage::OddAddress,
        Damage::UnknownField,
        Damage::OtherOp,
        Damage::Garbage,
    ]);
    prop_oneof![
        3 => Just(None),
        2 => (kind, any::<u64>()).prop_map(Some),
    ]
}

/// The line with one field's value replaced by raw JSON text (keys then
/// come in serde_json's order, so the journal's own fast reader declines
/// the line and serde judges it).
fn with_field(line: &str, key: &str, raw: Option<&str>) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
    match raw {
        None => {
            map.remove(key);
            serde_json::to_string(&map).unwrap()
        }
        Some(raw) => {
            map.insert(key.into(), "\u{1}RAW\u{1}".into());
            serde_json::to_string(&map)
                .unwrap()
                .replace("\"\\u0001RAW\\u0001\"", raw)
        }
    }
}

fn damaged(line: &str, (how, seed): (Damage, u64)) -> Vec<u8> {
    let pick = |options: &[&'static str]| options[(seed % options.len() as u64) as usize];
    let keys: Vec<String> = serde_json::from_str::<serde_json::Map<_, _>>(line)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let key = keys[(seed % keys.len() as u64) as usize].clone();
    let mut out = match how {
        Damage::Truncate => line.as_bytes()[..(seed % line.len() as u64) as usize].to_vec(),
        Damage::FlipByte => {
            let mut b = line.as_bytes().to_vec();
            let i = (seed % b.len() as u64) as usize;
            b[i] ^= ((seed >> 32) as u8).max(1);
            b
        }
        Damage::DropField => with_field(line, &key, None).into_bytes(),
        Damage::DuplicateField => {
            let value = serde_json::from_str::<serde_json::Value>(line).unwrap()[&key].to_string();
            format!("{},\"{key}\":{value}}}", &line[..line.len() - 1]).into_bytes()
        }
        Damage::HugeNumber => {
            let key = pick(&["at", "until", "at", "until", "at"]);
            let raw = pick(&[
                "18446744073709551615",
                "18446744073709551616",
                "1e30",
                "-1",
                "1.5",
                "99999999999",
                "0",
                "\"1000\"",
            ]);
            with_field(line, key, Some(raw)).into_bytes()
        }
        Damage::OddPorts => {
            let raw = pick(&[
                "\"1l0\"",
                "\"0\"",
                "\"65536\"",
                "\"110;995\"",
                "\"\"",
                "\"all,110\"",
                "\" 110\"",
                "\"110,\"",
                "\"1,2,3,4,5,6,7,8,9\"",
                "\"-1\"",
                "null",
                "110",
                "[\"110\"]",
                "\"pop3\"",
            ]);
            with_field(line, "ports", Some(raw)).into_bytes()
        }
        Damage::OddAddress => {
            let raw = pick(&[
                "\"203.0.113.7/33\"",
                "\"nope\"",
                "\"\"",
                "\"203.0.113.256\"",
                "\"::ffff:203.0.113.9\"",
                "\"203.0.113.7/24\"",
                "\"0.0.0.0/0\"",
                "\"2001:db8::/129\"",
                "\"203.0.113.07\"",
                "7",
                "null",
            ]);
            with_field(line, "addr", Some(raw)).into_bytes()
        }
        Damage::UnknownField => format!("{},\"x\":1}}", &line[..line.len() - 1]).into_bytes(),
        Damage::OtherOp => {
            let raw = pick(&["\"ban_all\"", "\"Ban\"", "\"unban\"", "\"ban\"", "1"]);
            with_field(line, "op", Some(raw)).into_bytes()
        }
        Damage::Garbage => seed.to_le_bytes().repeat((seed % 7) as usize + 1),
    };
    // One damaged line stays one line.
    for b in &mut out {
        if *b == b'\n' {
            *b = b'?';
        }
    }
    out
}

/// What a journal line means, judged independently of the journal's own
/// reader: serde's strict record, then the times a record must have.
/// `None` for a line that must be skipped.
fn believed(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let record: Record = serde_json::from_slice(line).ok()?;
    let at = match &record {
        Record::Ban { at, .. } | Record::Unban { at, .. } | Record::UnbanAll { at } => *at,
    };
    if at > NOW + SKEW {
        return None;
    }
    if let Record::Ban {
        until: Some(until),
        at,
        ..
    } = &record
        && (*until <= *at || *until > at + MAX_DURATION.as_secs() + SKEW)
    {
        return None;
    }
    Some(record)
}

/// (ports, until, monitor) of each ban in force at `NOW` after `records`,
/// in order: the last ban of a target wins, unbans lift.
type Restored = BTreeMap<Target, (PortSet, Option<u64>, bool)>;

fn model(records: &[Record]) -> Restored {
    let mut bans = Restored::new();
    for r in records {
        match r {
            Record::Ban {
                addr,
                ports,
                until,
                monitor,
                ..
            } => {
                bans.insert(*addr, (*ports, *until, *monitor));
            }
            Record::Unban { addr, .. } => {
                bans.remove(addr);
            }
            Record::UnbanAll { .. } => bans.clear(),
        }
    }
    bans.retain(|_, (_, until, _)| until.is_none_or(|u| u > NOW));
    bans
}

/// What the journal restores at `NOW`, checking each ban's expiry is its
/// record's `until`.
fn restored(journal: &Journal) -> (Restored, usize) {
    let replay = journal.replay(from_unix_secs(NOW)).unwrap();
    let mut out = Restored::new();
    for (target, entry) in replay.active(from_unix_secs(NOW)) {
        let ban = replay.ban(entry);
        let expiry = entry
            .until
            .map_or(Expiry::Never, |u| Expiry::At(from_unix_secs(u)));
        assert_eq!(ban.expiry, expiry, "{target}: expiry is the record's");
        out.insert(target, (ban.ports, entry.until, ban.monitor));
    }
    (out, replay.skipped)
}

/// A snapshot as the agent saves it, with any numbers in it.
fn snapshot() -> impl Strategy<Value = Snapshot> {
    let position = (any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(dev, ino, offset)| jailer::state::Position { dev, ino, offset });
    let times = prop::collection::vec(
        prop_oneof![
            any::<u64>(),
            Just(u64::MAX),
            (NOW - 600..NOW + 600).prop_map(|s| s * 1000)
        ],
        0..4,
    );
    (
        prop::collection::btree_map("/var/log/[a-z]{1,8}\\.log", position, 0..3),
        prop::collection::vec((any::<[u8; 4]>().prop_map(IpAddr::from), times), 0..6),
    )
        .prop_map(|(positions, window)| {
            let mut s = Snapshot {
                positions: positions.into_iter().map(|(p, v)| (p.into(), v)).collect(),
                ..Snapshot::default()
            };
            s.windows.insert("vpopmail".into(), window);
            s
        })
}

static JAIL: LazyLock<Config> = LazyLock::new(|| {
    Config::parse(
        Path::new("/etc/jailer/jailer.toml"),
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"/var/log/mail.log\"\nmaxretry = 3\n",
    )
    .unwrap()
});

proptest! {
    #![proptest_config(cases(400))]

    /// The Done-when of issue 11, finding 1: records generated as jailer
    /// writes them, some lines damaged, the journal replayed (and compacted,
    /// and replayed again). What is restored is exactly what the readable
    /// records say, in order: no ban wider (ports) or longer (expiry) than a
    /// record that parsed, every intact record's ban restored unless a later
    /// record lifts or replaces it.
    #[test]
    fn damaged_journals_restore_exactly_what_parsed(
        lines in prop::collection::vec((record(), damage()), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        let mut kept = Vec::new();
        let mut unreadable = 0;
        for (record, how) in &lines {
            let line = serde_json::to_string(record).unwrap();
            let bytes = how.map_or_else(|| line.clone().into_bytes(), |how| damaged(&line, how));
            match believed(&bytes) {
                Some(r) => kept.push(r),
                None if how.is_none() => prop_assert!(false, "an intact line refused: {}", line),
                None if bytes.iter().all(u8::is_ascii_whitespace) => {}
                None => unreadable += 1,
            }
            text.extend_from_slice(&bytes);
            text.push(b'\n');
        }
        std::fs::write(dir.path().join(JOURNAL), &text).unwrap();
        let journal = Journal::new(dir.path());
        let want = model(&kept);

        let (got, skipped) = restored(&journal);
        // No ban but one a believed record set, with its ports and expiry.
        for (target, ban) in &got {
            let set_by = kept.iter().any(|r| matches!(r,
                Record::Ban { addr, ports, until, monitor, .. }
                    if addr == target && (*ports, *until, *monitor) == *ban));
            prop_assert!(set_by, "{} restored as {:?}, which no readable record says", target, ban);
        }
        prop_assert_eq!(&got, &want, "journal:\n{}", String::from_utf8_lossy(&text));
        prop_assert_eq!(skipped, unreadable, "each unreadable line skipped, and only those");

        // Compaction writes only what parsed: the same bans, nothing skipped.
        journal.compact(from_unix_secs(NOW)).unwrap();
        let (again, skipped) = restored(&journal);
        prop_assert_eq!(&again, &want);
        prop_assert_eq!(skipped, 0);
    }

    /// A snapshot damaged any way loads as the empty snapshot (or, if the
    /// damage left valid JSON, as what it says), never an error, never a
    /// panic; and windows holding any numbers are imported and counted on
    /// without a panic (a crash here would be a crash loop at every start).
    #[test]
    fn damaged_snapshots_load_empty_and_cannot_crash_the_agent(
        s in snapshot(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..3),
        garbage in prop::collection::vec(any::<u8>(), 0..200),
        mode in 0..3u8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::to_vec(&s).unwrap();
        let bytes = match mode {
            0 => good[..cut.index(good.len())].to_vec(),
            1 => {
                let mut b = good.clone();
                for (at, x) in &flips {
                    let i = at.index(b.len());
                    b[i] ^= x;
                }
                b
            }
            _ => garbage,
        };
        std::fs::write(dir.path().join(SNAPSHOT), &bytes).unwrap();
        let loaded = Snapshot::load(dir.path()).expect("a damaged snapshot is never an error");
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(parsed) => prop_assert_eq!(&loaded, &parsed),
            Err(_) => prop_assert_eq!(&loaded, &Snapshot::default()),
        }
        if mode == 0 && bytes.len() < good.len() {
            prop_assert_eq!(&loaded, &Snapshot::default(), "a torn snapshot is not half believed");
        }

        // What the agent does with a snapshot at start, then a failure from
        // every address it holds a window for, and a save.
        for windows in [loaded.windows, s.windows] {
            let addrs: Vec<IpAddr> = windows.values().flatten().map(|(ip, _)| *ip).collect();
            let mut engine = Engine::new(JAIL.jails.clone(), MemBanTable::default());
            let now = from_unix_secs(NOW);
            engine.import_windows(windows, now);
            let source = SourceId::File("/var/log/mail.log".into());
            for ip in addrs {
                // No date: counted at `now`, so the window is touched.
                let line = format!("vpopmail[1]: vchkpw-pop3: password fail bob@example.com:{ip}");
                engine.handle_line(&source, &[0], &line, None, now);
            }
            let _ = engine.export_windows();
        }
    }
}
