//! Property tests over attacker-shaped input (proptest; cargo-fuzz needs a
//! nightly sanitizer runtime CI does not carry). Each property runs a few
//! thousand generated cases on every `cargo xtask test`.
//!
//! - No parser panics, whatever the bytes.
//! - The vpopmail filter takes the address only from where vchkpw writes it:
//!   whatever the attacker puts in the name or password, a line yields the
//!   real source, or nothing, never another address.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{Arc, LazyLock},
    time::SystemTime,
};

use jailer::{
    config::Config,
    filter::{
        Filter, FilterContext, Verdict, Vpopmail,
        fail2ban::{
            config::Ini,
            runtime::{CompiledFilter, FilterDef},
        },
        timestamp::parse_timestamp,
    },
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
