#!/usr/bin/python3
"""Record what fail2ban itself reports on its sample logs, line by line.

Walks fail2ban/tests/files/logs the way samplestestcase.py does (same filter
options, checkAllRegex, raw hosts, TZ and "now" of fail2ban's tests) and
writes, for every line evaluated under every option set, the failures
fail2ban's Filter.processLine returned (pending and nofail ones left out, as
samplestestcase.py leaves them out). tests/tests/fail2ban_samples.rs
compares jailer's results with these. Stock filters only (fail2ban's own
zzz-* test filters are not installed under /etc/fail2ban).

Usage: /usr/bin/python3 dump_results.py [OUT_FILE]   (default: sample_results.json here)
"""

import json
import os
import re
import sys
import time

os.environ["TZ"] = "CET-01CEST-02,M3.5.0,M10.5.0"
time.tzset()
sys.path.insert(0, "/usr/lib/python3/dist-packages")

from fail2ban.server.mytime import MyTime  # noqa: E402
from fail2ban.server.filter import Filter  # noqa: E402
from fail2ban.client.filterreader import FilterReader  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = "/etc/fail2ban"
LOGS_DIR = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs"

TEST_NOW = 1124013600
TEST_NOW_STR = "2005-08-14T10:00:00"
OPTS_RE = re.compile(r"^#+ ?(failJSON|(?:file|filter)Options|addFILE):(.+)$")


def option_key(opts):
    """An option set as `k=v,...`, sorted; fail2ban_samples.rs builds the same."""
    return ",".join("%s=%s" % (k, opts[k]) for k in sorted(opts))


def read_filter(name, basedir, opts):
    flt = Filter(None)
    flt.returnRawHost = True
    flt.checkAllRegex = True
    flt.checkFindTime = False
    flt.active = True
    reader = FilterReader(name, "jail", dict(opts), basedir=basedir)
    reader.read()
    reader.getOptions({})
    for op in reader.convert():
        for v in op[3] if op[0] == "multi-set" else [op[3]]:
            if op[2] == "prefregex":
                flt.prefRegex = v
            elif op[2] == "addfailregex":
                flt.addFailRegex(v)
            elif op[2] == "addignoreregex":
                flt.addIgnoreRegex(v)
            elif op[2] == "maxlines":
                flt.setMaxLines(v)
            elif op[2] == "datepattern":
                flt.setDatePattern(v)
    return flt


def walk(name, basedir, out):
    filters = {}
    files, common, tests, i = [name], {}, None, 0
    while i < len(files):
        fn = files[i]
        i += 1
        with open(os.path.join(LOGS_DIR, fn), "rb") as fh:
            raw = fh.read().decode("utf-8", "replace").split("\n")
        if raw and raw[-1] == "":
            raw.pop()
        lines = [l.rstrip("\r\n") for l in raw]
        ignore, n = False, 0
        while n < len(lines):
            line, lnnum = lines[n], n + 1
            n += 1
            m = OPTS_RE.match(line)
            fd = {}
            if m:
                data = json.loads(m.group(2))
                if m.group(1) == "fileOptions":
                    common = data
                    continue
                if m.group(1) == "filterOptions":
                    tests, ignore = [], False
                    for o in data if isinstance(data, list) else [data]:
                        opts = dict(common, **o)
                        if opts.get("test.condition"):
                            ignore = not eval(opts["test.condition"])
                        if not ignore:
                            tests.append(opts)
                    continue
                if m.group(1) == "addFILE":
                    files.append(data)
                    continue
                fd = data
                if n >= len(lines):
                    break
                line, lnnum = lines[n], n + 1
                n += 1
            elif ignore or line.startswith("#") or not line.strip():
                continue
            if ignore:
                continue
            if not tests:
                tests = [{}]
            for opts in tests:
                if fd.get("constraint") and not eval(fd["constraint"]):
                    continue
                fopts = {k: v for k, v in opts.items() if not k.startswith("test.")}
                key = option_key(fopts)
                if key not in filters:
                    filters[key] = read_filter(name, basedir, fopts)
                flt = filters[key]
                if opts.get("logtype") != "journal":
                    ret = flt.processLine(line)
                else:
                    if opts.get("test.prefix-line"):
                        line = opts.get("test.prefix-line") + line
                    ret = flt.processLine(("", TEST_NOW_STR, line), TEST_NOW)
                found = []
                for idx, fid, t, fail in ret or []:
                    if fid is None or fail.get("nofail"):
                        continue
                    found.append({
                        "regex": idx,
                        "id": str(fid),
                        "time": t,
                        "user": fail.get("user"),
                        "attempts": len(fail.get("matches", [])),
                    })
                out.append({"filter": name, "options": key, "file": fn, "line": lnnum, "found": found})


def main():
    out_file = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "sample_results.json")
    MyTime.setAlternateNow(TEST_NOW)
    MyTime.setTime(TEST_NOW)
    out = []
    names = []
    for f in os.listdir(os.path.join(CONFIG_DIR, "filter.d")):
        if f.endswith(".conf") and not f.endswith("common.conf") \
                and os.path.isfile(os.path.join(LOGS_DIR, f[:-5])):
            names.append((f[:-5], CONFIG_DIR))
    # samplestestcase's test methods run in name order (testSampleRegexsNAME)
    for name, basedir in sorted(names, key=lambda x: x[0].upper()):
        walk(name, basedir, out)
    with open(out_file, "w", encoding="utf-8") as fh:
        fh.write("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in out) + "\n]\n")
    print("wrote %d evaluations to %s" % (len(out), out_file))


if __name__ == "__main__":
    main()
