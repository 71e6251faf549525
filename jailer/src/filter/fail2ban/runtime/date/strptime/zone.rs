//! Time zones as fail2ban reads them: its own table of abbreviations and
//! `[+-]hh[:mm]` offsets, not the system's zone database.

/// `TZ_ABBR_RE`.
const TZ_ABBR: &str = "[A-Z](?:[A-Z]{2,4})?";

/// `TZ_STR` of server/strptime.py: zone abbreviations and their offsets in
/// minutes east of UTC.
const TZ_ABBRS: &[(i32, &[&str])] = &[
    (-12 * 60, &["Y"]),
    (-11 * 60, &["X", "NUT", "SST"]),
    (-10 * 60, &["W", "CKT", "HAST", "HST", "TAHT", "TKT"]),
    (-9 * 60, &["V", "AKST", "GAMT", "GIT", "HADT", "HNY"]),
    (-8 * 60, &["U", "AKDT", "CIST", "HAY", "HNP", "PST", "PT"]),
    (-7 * 60, &["T", "HAP", "HNR", "MST", "PDT"]),
    (-6 * 60, &["S", "CST", "EAST", "GALT", "HAR", "HNC", "MDT"]),
    (
        -5 * 60,
        &[
            "R", "CDT", "COT", "EASST", "ECT", "EST", "ET", "HAC", "HNE", "PET",
        ],
    ),
    (
        -4 * 60,
        &[
            "Q", "AST", "BOT", "CLT", "COST", "EDT", "FKT", "GYT", "HAE", "HNA", "PYT",
        ],
    ),
    (
        -3 * 60,
        &[
            "P", "ADT", "ART", "BRT", "CLST", "FKST", "GFT", "HAA", "PMST", "PYST", "SRT", "UYT",
            "WGT",
        ],
    ),
    (-2 * 60, &["O", "BRST", "FNT", "PMDT", "UYST", "WGST"]),
    (-60, &["N", "AZOT", "CVT", "EGT"]),
    (0, &["Z", "EGST", "GMT", "UTC", "WET", "WT"]),
    (60, &["A", "CET", "DFT", "WAT", "WEDT", "WEST"]),
    (2 * 60, &["B", "CAT", "CEDT", "CEST", "EET", "SAST", "WAST"]),
    (3 * 60, &["C", "EAT", "EEDT", "EEST", "IDT", "MSK"]),
    (
        4 * 60,
        &[
            "D", "AMT", "AZT", "GET", "GST", "KUYT", "MSD", "MUT", "RET", "SAMT", "SCT",
        ],
    ),
    (
        5 * 60,
        &[
            "E", "AMST", "AQTT", "AZST", "HMT", "MAWT", "MVT", "PKT", "TFT", "TJT", "TMT", "UZT",
            "YEKT",
        ],
    ),
    (
        6 * 60,
        &[
            "F", "ALMT", "BIOT", "BTT", "IOT", "KGT", "NOVT", "OMST", "YEKST",
        ],
    ),
    (
        7 * 60,
        &[
            "G", "CXT", "DAVT", "HOVT", "ICT", "KRAT", "NOVST", "OMSST", "THA", "WIB",
        ],
    ),
    (
        8 * 60,
        &[
            "H", "ACT", "AWST", "BDT", "BNT", "CAST", "HKT", "IRKT", "KRAST", "MYT", "PHT", "SGT",
            "ULAT", "WITA", "WST",
        ],
    ),
    (
        9 * 60,
        &[
            "I", "AWDT", "IRKST", "JST", "KST", "PWT", "TLT", "WDT", "WIT", "YAKT",
        ],
    ),
    (
        10 * 60,
        &["K", "AEST", "ChST", "PGT", "VLAT", "YAKST", "YAPT"],
    ),
    (
        11 * 60,
        &[
            "L", "AEDT", "LHDT", "MAGT", "NCT", "PONT", "SBT", "VLAST", "VUT",
        ],
    ),
    (
        12 * 60,
        &[
            "M", "ANAST", "ANAT", "FJT", "GILT", "MAGST", "MHT", "NZST", "PETST", "PETT", "TVT",
            "WFT",
        ],
    ),
    (13 * 60, &["FJST", "NZDT"]),
    (11 * 60 + 30, &["NFT"]),
    (10 * 60 + 30, &["ACDT", "LHST"]),
    (9 * 60 + 30, &["ACST"]),
    (6 * 60 + 30, &["CCT", "MMT"]),
    (5 * 60 + 45, &["NPT"]),
    (5 * 60 + 30, &["SLT"]),
    (4 * 60 + 30, &["AFT", "IRDT"]),
    (3 * 60 + 30, &["IRST"]),
    (-(2 * 60 + 30), &["HAT", "NDT"]),
    (-(3 * 60 + 30), &["HNT", "NST", "NT"]),
    (-(4 * 60 + 30), &["HLV", "VET"]),
    (-(9 * 60 + 30), &["MART", "MIT"]),
];

fn abbr_offset(abbr: &str) -> Option<i32> {
    if abbr.is_empty() {
        return Some(0);
    }
    TZ_ABBRS
        .iter()
        .find(|(_, names)| names.contains(&abbr))
        .map(|(off, _)| *off)
}

/// `validateTimeZone`/`zone2offset`: `ABBR`, `[+-]hh[[:]mm]` or both, as
/// minutes east of UTC. `None` for what fail2ban rejects (it raises).
pub(crate) fn zone_offset(tz: &str) -> Option<i32> {
    // FIXED_OFFSET_TZ_RE: (TZ_ABBR)?([+-][01]\d(?::?\d{2})?)?$
    let b = tz.as_bytes();
    let mut i = 0;
    if b.first().is_some_and(u8::is_ascii_uppercase) {
        let n = b[1..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_uppercase())
            .count();
        // `[A-Z](?:[A-Z]{2,4})?`: one letter, or three to five.
        i = if n >= 2 { 1 + n } else { 1 };
    }
    let _ = TZ_ABBR;
    let abbr = &tz[..i];
    let rest = &tz[i..];
    let base = abbr_offset(abbr)?;
    if rest.is_empty() {
        return Some(base);
    }
    let rb = rest.as_bytes();
    let sign = match rb[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let hh = rb
        .get(1..3)
        .filter(|d| digits(d) && (d[0] == b'0' || d[0] == b'1'))?;
    let hours = i32::from(hh[0] - b'0') * 10 + i32::from(hh[1] - b'0');
    let minutes = match &rb[3..] {
        [] => return Some(base + sign * hours * 60),
        [b':', m1, m2] | [m1, m2] if m1.is_ascii_digit() && m2.is_ascii_digit() => {
            i32::from(m1 - b'0') * 10 + i32::from(m2 - b'0')
        }
        _ => return None,
    };
    Some(base + sign * (hours * 60 + minutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        assert_eq!(zone_offset("CEST"), Some(120));
        assert_eq!(zone_offset("+0130"), Some(90));
        assert_eq!(zone_offset("-01:30"), Some(-90));
        assert_eq!(zone_offset("UTC+02"), Some(120));
        assert_eq!(zone_offset("ABC"), None);
        assert_eq!(zone_offset("err"), None);
    }
}
