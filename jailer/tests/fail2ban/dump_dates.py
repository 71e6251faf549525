#!/usr/bin/python3
"""Dump the date templates fail2ban builds, for fail2ban_dates.rs to compare.

For the default detector and for every `datepattern` of filters.json (fail2ban's
reader on every stock filter, mode and backend; see gen.py), plus a few extra
patterns, write the templates a DateDetector would hold, in order: name, regex
(before compilation), flags, weight. jailer/tests/fail2ban_dates.rs compares.

fail2ban builds `%ExY` (years up to "now" + 3) from the real clock: set
REFERENCE_YEAR in fail2ban_dates.rs to the year this runs in.

Usage: /usr/bin/python3 dump_dates.py [OUT_FILE]   (default: date_templates.json here)
"""

import json
import os
import re
import sys

sys.path.insert(0, "/usr/lib/python3/dist-packages")

from fail2ban.server.datedetector import DateDetector  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXTRA = [
    "EPOCH", "LEPOCH", "^EPOCH", "{^LN-BEG}LEPOCH", "TAI64N", "{NONE}", "{DEFAULT}",
    "^\\[{LEPOCH}\\]", "%%Y-%%m-%%d %%H:%%M:%%S",
    "%Y-%m-%d %H:%M:%S", "%d/%b/%Y:%H:%M:%S %z", "{^LN-BEG}%b %d %H:%M:%S",
    "{UNB}%Y%m%d", "%a %b %d %H:%M:%S %Y", "%I:%M:%S %p", "%j %Y %H:%M",
    "**%Y-%m-%d**", "(?i)%H:%M:%S", "%ExY-%Exm-%Exd %ExH:%ExM:%ExS %Exz",
    "^<\\d+>\\d+\\s+{DATE}",
    # guacamole[logging=webapp], an option set its sample log uses
    "^%H:%M:%S.%f",
    # fail2ban's own test filter zzz-generic-example
    "{^LN-BEG}%ExY(?P<_sep>[-/.])%m(?P=_sep)%d[T ]%H:%M:%S(?:[.,]%f)?(?:\\s*%z)?\n"
    "{^LN-BEG}(?:%a )?%b %d %H:%M:%S(?:\\.%f)?(?: %ExY)?\n"
    "{^LN-BEG}%Y(?P<_sep>[-/.])%m(?P=_sep)%d[T ]%H:%M:%S(?:[.,]%f)?(?:\\s*%z)?",
]


def split(pattern):
    # Filter.setDatePattern: one template per non-empty line
    return [p for p in map(str.strip, re.split("\n+", pattern)) if p]


def templates(lines):
    dd = DateDetector()
    if lines is None:
        dd.addDefaultTemplate()
    else:
        for p in lines:
            dd.appendTemplate(p)
    return [
        {"name": t.name, "regex": t.regex, "flags": t.flags, "weight": t.weight}
        for t in (ddt.template for ddt in dd.templates)
    ]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "date_templates.json")
    patterns = set(EXTRA)
    with open(os.path.join(HERE, "filters.json"), encoding="utf-8") as fh:
        for case in json.load(fh)["cases"]:
            if case.get("datepattern") is not None:
                patterns.add(case["datepattern"])
    cases = [{"datepattern": None, "templates": templates(None)}]
    for p in sorted(patterns):
        cases.append({"datepattern": p, "templates": templates(split(p))})
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(cases, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print("wrote %d date pattern cases to %s" % (len(cases), out))


if __name__ == "__main__":
    main()
