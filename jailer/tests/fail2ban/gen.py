#!/usr/bin/python3
"""Reference outputs of fail2ban's own Python reader, for jailer/tests/fail2ban_reference.rs.

Run with the Python that has fail2ban installed (Debian: /usr/bin/python3):

    /usr/bin/python3 jailer/tests/fail2ban/gen.py [/etc/fail2ban]

Writes, next to this script, filters.json (every filter in filter.d: default
options with `auto` and `systemd` backends, each mode, a few extra parameters),
jails.json (a temporary copy of the directory plus this folder's jail.local and
fail2ban.local, read like fail2ban-client does) and crafted.json (the same for
the hand-made crafted/ tree). Paths under the temporary copy are written as
@BASEDIR@."""

import glob
import json
import os
import re
import shutil
import sys
import tempfile

from fail2ban.client.fail2banreader import Fail2banReader
from fail2ban.client.filterreader import FilterReader
from fail2ban.client.jailsreader import JailsReader
from fail2ban.server.mytime import MyTime
from fail2ban.helpers import splitwords
from fail2ban.version import version

HERE = os.path.dirname(os.path.abspath(__file__))
BASEDIR = sys.argv[1] if len(sys.argv) > 1 else "/etc/fail2ban"

# Parameters other than `mode` worth covering.
EXTRA_CASES = [
    ("sshd", {"publickey": "invalid"}),
    ("sshd", {"publickey": "any", "mode": "aggressive"}),
    ("sshd", {"__pam_auth": "pam_ldap"}),
    ("dovecot", {"mode": "aggressive", "logtype": "short"}),
    ("postfix", {"mode": "aggressive", "_daemon": "postfix-out/smtpd"}),
]


def stream_filter(stream):
    """What the server ends up with after the filter commands of a stream."""
    out = {
        "failregex": [],
        "ignoreregex": [],
        "journalmatch": [],
        "prefregex": None,
        "datepattern": None,
        "maxlines": None,
        "usedns": None,
    }
    for cmd in stream:
        if cmd[0] == "multi-set" and cmd[2] in ("addfailregex", "addignoreregex"):
            out[cmd[2][3:]].extend(cmd[3])
        elif cmd[0] != "set":
            continue
        elif cmd[2] in ("addfailregex", "addignoreregex"):
            out[cmd[2][3:]].append(cmd[3])
        elif cmd[2] == "addjournalmatch":
            out["journalmatch"].append(cmd[3:])
        elif cmd[2] in ("prefregex", "datepattern", "maxlines", "usedns"):
            out[cmd[2]] = cmd[3]
    return out


def plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def modes(basedir, name):
    reader = FilterReader(name, "ref", {}, share_config={}, basedir=basedir)
    reader.read()
    names = reader._cfg.get_sections().get("Definition", {})
    found = set()
    for key in names:
        m = re.match(r"^md(re|pr)-([^-]+)$", key)
        if m:
            found.add(m.group(2))
    return sorted(found)


def filter_case(basedir, name, opts, backend, spec=None):
    case = {
        "spec": spec or (name + ("[%s]" % ", ".join("%s=%s" % kv for kv in opts.items()) if opts else "")),
        "backend": backend,
    }
    try:
        reader = FilterReader(name, "fail2ban-regex-jail", dict(opts), share_config={}, basedir=basedir)
        if not reader.read():
            case["error"] = "not found"
            return case
        reader.applyAutoOptions(backend)
        reader.getOptions(None)
        combined = reader.getCombined()
        stream = reader.convert()
    except Exception as e:  # recorded: the Rust reader must fail too
        case["error"] = "%s: %s" % (type(e).__name__, e)
        return case
    case["combined"] = {k: plain(v) for k, v in combined.items()}
    case.update(stream_filter(stream))
    case["journalmatch_lines"] = [
        m for m in (combined.get("journalmatch") or "").split("\n") if m != ""
    ]
    return case


def gen_filters(basedir, extra_cases=EXTRA_CASES, path_case=True):
    cases = []
    for path in sorted(glob.glob(os.path.join(basedir, "filter.d", "*.conf"))):
        name = os.path.splitext(os.path.basename(path))[0]
        cases.append(filter_case(basedir, name, {}, "auto"))
        cases.append(filter_case(basedir, name, {}, "systemd"))
        for mode in modes(basedir, name):
            cases.append(filter_case(basedir, name, {"mode": mode}, "auto"))
    for name, opts in extra_cases:
        cases.append(filter_case(basedir, name, opts, "auto"))
    # A filter named by its path (fail2ban-regex loads it like its name).
    if path_case:
        cases.append(
            filter_case(
                basedir,
                "dovecot",
                {"mode": "aggressive"},
                "auto",
                spec="@BASEDIR@/filter.d/dovecot.conf[mode=aggressive]",
            )
        )
    return {"fail2ban_version": version, "basedir": basedir, "cases": cases}


def gen_jails(source, add_locals=True):
    tmp = tempfile.mkdtemp(prefix="f2b-ref-")
    try:
        basedir = os.path.join(tmp, "etc")
        shutil.copytree(source, basedir, symlinks=True)
        if add_locals:
            shutil.copy(os.path.join(HERE, "jail.local"), os.path.join(basedir, "jail.local"))
            shutil.copy(os.path.join(HERE, "fail2ban.local"), os.path.join(basedir, "fail2ban.local"))
        share = {}
        server = Fail2banReader(share_config=share)
        server.setBaseDir(basedir)
        server.read()
        early = server.getEarlyOptions()
        server.getOptions()
        server_opts = dict(server._Fail2banReader__opts)
        server_opts["socket"] = early["socket"]
        server_opts["pidfile"] = early["pidfile"]
        server_opts["dbpurgeage_seconds"] = MyTime.str2seconds(server_opts["dbpurgeage"])

        jails = JailsReader(share_config=share)
        jails.setBaseDir(basedir)
        jails.read()
        jails.getOptions()
        out = []
        for jail in jails.jails:
            name = jail.getName()
            opts = jail.options
            entry = {"name": name}
            if opts.get("config-error"):
                entry["error"] = opts["config-error"]
                out.append(entry)
                continue
            entry["options"] = {k: plain(v) for k, v in opts.items()}
            entry["extras"] = {}
            for key in ("port", "protocol", "banaction", "mta"):
                try:
                    entry["extras"][key] = jail._cfg.get(name, key)
                except Exception:
                    entry["extras"][key] = None
            entry["seconds"] = {}
            for key in ("findtime", "bantime", "bantime.maxtime", "bantime.rndtime"):
                value = opts.get(key)
                if value not in (None, ""):
                    entry["seconds"][key] = MyTime.str2seconds(value)
            # Values the server derives from options (JailReader.convert).
            entry["ignoreip"] = splitwords(opts["ignoreip"]) if "ignoreip" in opts else []
            entry["logpath"] = []
            if "logpath" in opts and not opts.get("backend", "").startswith("systemd"):
                for path in opts["logpath"].split("\n"):
                    if path:
                        parts = path.rsplit(" ", 1)
                        entry["logpath"].append(parts if len(parts) > 1 else [parts[0], "head"])
            entry["filter"] = stream_filter(jail.convert(allow_no_files=True))
            entry["actions"] = [
                a.getFile() for a in jail._JailReader__actions if not isinstance(a, list)
            ]
            out.append(entry)
        data = {"fail2ban_version": version, "server": server_opts, "jails": out}
        return json.loads(json.dumps(data).replace(basedir, "@BASEDIR@"))
    finally:
        shutil.rmtree(tmp)


CRAFTED_CASES = [
    ("mail", {"mode": "aggressive", "extra": "given <HOST>"}),
    ("mail", {"Mode": "aggressive"}),
    ("mail", {"logtype": "short", "maxlines": "x"}),
    ("defaults", {"who": "given"}),
]


def gen_crafted():
    crafted = os.path.join(HERE, "crafted")
    filters = gen_filters(crafted, CRAFTED_CASES, path_case=False)
    filters = json.loads(json.dumps(filters).replace(crafted, "@BASEDIR@"))
    jails = gen_jails(crafted, add_locals=False)
    return {"filters": filters, "jails": jails}


def main():
    filters = gen_filters(BASEDIR)
    filters = json.loads(json.dumps(filters).replace(BASEDIR.rstrip("/"), "@BASEDIR@"))
    with open(os.path.join(HERE, "filters.json"), "w") as f:
        json.dump(filters, f, indent=1, sort_keys=True)
    jails = gen_jails(BASEDIR)
    with open(os.path.join(HERE, "jails.json"), "w") as f:
        json.dump(jails, f, indent=1, sort_keys=True)
    crafted = gen_crafted()
    with open(os.path.join(HERE, "crafted.json"), "w") as f:
        json.dump(crafted, f, indent=1, sort_keys=True)
    print("crafted.json: %d filter cases, %d jails" % (len(crafted["filters"]["cases"]), len(crafted["jails"]["jails"])))
    n = len(filters["cases"])
    errors = sum(1 for c in filters["cases"] if "error" in c)
    print("filters.json: %d cases (%d errors); jails.json: %d jails" % (n, errors, len(jails["jails"])))


if __name__ == "__main__":
    main()
