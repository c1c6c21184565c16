#!/usr/bin/env python3
"""Turns the logs of Olla's scripts into checks, and prints the table.

    parse.py MANIFEST.tsv PARSERS.tsv SUMMARY.md SUMMARY.json

MANIFEST.tsv (written by run.sh): id, script path, log file (or "skipped"), exit status,
checks file (pyrun.py's JSON), note. PARSERS.tsv: id, parser name.

Each parser follows its script's own convention for what a check is and how it says
pass or fail; the comments name the convention. A check is {name, passed, detail}.
Lines are read with their ANSI colour codes removed.
"""

import json
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean(text):
    return [ANSI.sub("", line).rstrip() for line in text.replace("\r", "\n").split("\n")]


def check(name, passed, detail=""):
    return {"name": name, "passed": bool(passed), "detail": detail.strip()}


# ── parsers ─────────────────────────────────────────────────────────────────────────

def p_testresult(lines, checks_json):
    """sticky, integration, passthrough: their TestResult objects, collected by pyrun.py."""
    try:
        with open(checks_json, encoding="utf-8") as f:
            return [check(c["name"], c["passed"], c["detail"]) for c in json.load(f)]
    except (OSError, ValueError):
        return []


def p_detection(lines, _):
    """test-streaming-detection.py: its "Detailed Results:" lines, `name: MODE (expected:
    mode) ...`, `name: FAILED - error`, `name: SKIPPED - reason` (not a check)."""
    out, on = [], False
    for line in lines:
        if line.strip() == "Detailed Results:":
            on = True
            continue
        if not on:
            continue
        m = re.match(r"^  (\w+): (\w+) \(expected: (\w+)\)(.*)$", line)
        if m:
            out.append(check(m[1], m[2].lower() == m[3].lower(),
                             f"{m[2].lower()}, expected {m[3]}{m[4]}"))
            continue
        m = re.match(r"^  (\w+): FAILED - (.*)$", line)
        if m:
            out.append(check(m[1], False, m[2]))
            continue
        if line and not line.startswith("  "):
            on = False
    return out


def p_latency(lines, _):
    """test-streaming-latency.py: `Test i/N:` then the question, then [OK] or [FAIL]
    (with an `Error:` line)."""
    out, label, pending = [], None, None
    for line in lines:
        m = re.match(r"^Test (\d+/\d+):", line)
        if m:
            label = m[1]
            continue
        m = re.match(r"^\s+Question: (.*)$", line)
        if m and label:
            label = f"{label.split(' ')[0]} {m[1]}"
            continue
        if label and "[OK]" in line:
            out.append(check(label, True))
            label = None
        elif label and "[FAIL]" in line:
            pending = check(label, False)
            out.append(pending)
            label = None
        elif pending is not None and line.strip().startswith("Error:"):
            pending["detail"] = line.strip()
            pending = None
    return out


def p_responses(lines, _):
    """test-streaming-responses.py: `Testing model: M`, then `Testing P streaming: ...
    [OK]|[FAIL]` per provider, a failure followed by `→ Error: ...` or `→ No streaming`."""
    out, model, pending = [], "?", None
    for line in lines:
        m = re.match(r"^Testing model: (.*)$", line)
        if m:
            model = m[1]
            continue
        m = re.match(r"^\s+Testing (\w+) streaming:.*\[(OK|FAIL)\]", line)
        if m:
            pending = check(f"{model} via {m[1]}", m[2] == "OK")
            out.append(pending)
            continue
        if pending is not None and not pending["passed"] and "→" in line:
            pending["detail"] = (pending["detail"] + " " + line.split("→", 1)[1]).strip()
    return out


def p_routing_provider(lines, _):
    """test-model-routing-provider.py: from "Testing Models Discovery Endpoints:" on,
    `description: [OK] Success (...)` or `description: [FAIL] Failed (HTTP n)`, under
    `Testing P provider models:` and `Model: M` headings."""
    out, on, provider, model = [], False, "", ""
    for line in lines:
        if line.startswith("Testing Models Discovery Endpoints:"):
            on = True
            continue
        if not on:
            continue
        m = re.match(r"^Testing (\w+) provider models:", line)
        if m:
            provider, model = m[1].lower(), ""
            continue
        m = re.match(r"^Model: (.*)$", line)
        if m:
            model = m[1]
            continue
        m = re.match(r"^(.*?): \[(OK|FAIL)\] (.*)$", line)
        if m:
            where = f"{provider} {model}: " if model else ""
            out.append(check(f"{where}{m[1].strip()}", m[2] == "OK", m[3]))
    return out


def p_model_routing(lines, _):
    """test-model-routing.sh: `Testing: MODEL - TEST`, then `✓ Success (HTTP n)` or
    `✗ Failed (HTTP n)` followed by `Error:`/`Message:`/`Response:` lines."""
    out, label, pending = [], None, None
    for line in lines:
        m = re.match(r"^Testing: (.*)$", line)
        if m:
            label, pending = m[1], None
            continue
        s = line.strip()
        if label and s.startswith("✓ Success"):
            out.append(check(label, True, s))
            label = None
        elif label and s.startswith("✗ Failed"):
            pending = check(label, False, s)
            out.append(pending)
            label = None
        elif pending is not None and re.match(r"^(Error|Message|Response|Info):", s):
            pending["detail"] += " | " + s
    return out


def p_blocks(lines, _):
    """test-provider-routing.sh, test-provider-models.sh: a check per `Testing: X`
    block, which fails when any of its lines is a ✗ (the scripts count it failed then)."""
    out, cur = [], None
    for line in lines:
        m = re.match(r"^Testing: (.*)$", line)
        if m or line.startswith("━"):
            cur = None
        if m:
            cur = {"name": m[1], "good": [], "bad": []}
            out.append(cur)
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith("✗"):
            cur["bad"].append(s)
        elif cur["bad"] and re.match(r"^(→ Error:|Error:|Response:)", s):
            cur["bad"].append(s[:200])
        elif s.startswith("✓") or s.startswith("→"):
            cur["good"].append(s)
    return [check(c["name"], not c["bad"], " | ".join(c["bad"] or c["good"])) for c in out]


def p_marks(lines, _):
    """test-model-routing-strategy.sh: every ✓ / ✗ line is a check (only Test 4 sets the
    exit status), under `=== Test N: ... ===` headings."""
    out, heading = [], ""
    for line in lines:
        m = re.match(r"^=== (Test \d+): (.*) ===$", line)
        if m:
            heading = f"{m[1]}: {m[2]}"
            continue
        s = line.strip()
        if s.startswith("✓") or s.startswith("✗"):
            out.append(check(heading or "?", s.startswith("✓"), s[1:].strip()))
    return out


def p_security(lines, _):
    """security/: `Testing: NAME`, then the first ✅ PASS / ⚠️ PARTIAL (the script counts
    it passed) / ❌ line; the failure's detail is its HTTP status or status sequence."""
    out, label, context = [], None, []
    for line in lines:
        m = re.match(r"^Testing: (.*)$", line)
        if m:
            label, context = m[1], []
            continue
        if label is None:
            continue
        s = line.strip()
        if s.startswith(("HTTP Status:", "Status sequence:", "Successful requests:",
                         "Rate limited requests:", "Headers present:", "IP1", "IP2",
                         "X-RateLimit-Limit:", "X-RateLimit-Remaining:",
                         "Health endpoint limit:", "Total rate limited:")):
            context.append(s)
        if s.startswith("✅"):
            out.append(check(label, True, s))
            label = None
        elif s.startswith("⚠️"):
            out.append(check(label, True, s + " | " + "; ".join(context)))
            label = None
        elif s.startswith("❌"):
            out.append(check(label, False, s + " | " + "; ".join(context)))
            label = None
    return out


def p_auth(lines, _):
    """auth/ (lib.sh): `PASS: name` / `FAIL: name (reason)` per check; the last such
    line, after `Results: n/m passed`, is the script's own verdict, not a check."""
    out = []
    for line in lines:
        if line.startswith("Results:"):
            break
        m = re.match(r"^(PASS|FAIL): (.*?)(?: \(([^()]*)\))?$", line)
        if m:
            out.append(check(m[2], m[1] == "PASS", m[3] or ""))
    return out


def p_load(lines, _):
    """test-load-limits.sh: one check, that every request of the run succeeded (its
    final summary counts them and lists up to ten `Recent Errors`). The number of
    requests depends on the machine's speed, so it is the detail, not a count of checks."""
    text = "\n".join(lines)
    final = text[text.rfind("FINAL SUMMARY"):] if "FINAL SUMMARY" in text else ""

    def num(label):
        m = re.search(label + r":\s+(\d+)", final)
        return int(m[1]) if m else 0

    total, bad = num("Total Requests"), num("Failed")
    errors = re.findall(r"•\s+(Worker .*)$", final, re.M)
    detail = f"{total} requests, {bad} failed" + ("; " + "; ".join(errors) if errors else "")
    return [check("every request succeeded", total > 0 and bad == 0, detail)]


def p_chaos(lines, _):
    """test-load-chaos.sh prints no verdict: the check is that ringway still answers
    /internal/health after it (run.sh appends that line)."""
    for line in lines:
        m = re.match(r"^\[run\.sh\] ringway /internal/health after the chaos run: HTTP (\d+)", line)
        if m:
            return [check("ringway healthy after the chaos run", m[1] == "200", f"HTTP {m[1]}")]
    return [check("ringway healthy after the chaos run", False, "no health line")]


def p_exit(lines, _):
    """run-all-tests.sh: stops at the first failing script; its exit status is the check."""
    return []


PARSERS = {
    "testresult": p_testresult, "detection": p_detection, "latency": p_latency,
    "responses": p_responses, "routing-provider": p_routing_provider,
    "model-routing": p_model_routing, "blocks": p_blocks, "marks": p_marks,
    "security": p_security, "auth": p_auth, "load": p_load, "chaos": p_chaos,
    "exit": p_exit,
}

# What the scripts themselves report, to cross-check the parse: (passed, failed).
OWN_TOTALS = [
    re.compile(r"Total: (\d+)\s+\|\s+Passed: (\d+)\s+\|\s+Failed: (\d+)"),
]


def own_totals(lines):
    text = "\n".join(lines)
    for rx in OWN_TOTALS:
        found = rx.findall(text)
        if found:
            _, p, f = found[-1]
            return int(p), int(f)
    m_p = re.findall(r"^\s*Passed:\s+(\d+)\s*$", text, re.M)
    m_f = re.findall(r"^\s*Failed:\s+(\d+)\s*$", text, re.M)
    if m_p and m_f:
        return int(m_p[-1]), int(m_f[-1])
    m = re.findall(r"^Results: (\d+)/(\d+) passed", text, re.M)
    if m:
        p, t = map(int, m[-1])
        return p, t - p
    return None


def main():
    manifest, parsers_tsv, md_path, json_path = sys.argv[1:5]
    parsers = dict(l.rstrip("\n").split("\t") for l in open(parsers_tsv) if l.strip())
    rows = []
    for raw in open(manifest, encoding="utf-8"):
        if not raw.strip():
            continue
        sid, path, logf, rc, checks_json, note = (raw.rstrip("\n").split("\t") + [""] * 6)[:6]
        row = {"id": sid, "script": path, "exit": None, "note": note, "checks": []}
        if logf == "skipped":
            row["skipped"] = True
            rows.append(row)
            continue
        row["exit"] = int(rc) if rc.lstrip("-").isdigit() else rc
        with open(logf, encoding="utf-8", errors="replace") as f:
            lines = clean(f.read())
        name = parsers.get(sid, "exit")
        checks = PARSERS[name](lines, checks_json)
        if name == "exit" or (not checks and row["exit"] != 0):
            checks.append(check("exit status 0", row["exit"] == 0, f"exit {row['exit']}"))
        row["checks"] = checks
        own = own_totals(lines)
        parsed = (sum(c["passed"] for c in checks), sum(not c["passed"] for c in checks))
        if own and own != parsed and name not in ("load", "exit", "chaos"):
            row["note"] = (row["note"] + f"; the script itself reports {own[0]} passed, "
                           f"{own[1]} failed").strip("; ")
        row["log"] = logf
        rows.append(row)

    total_p = total_f = 0
    out = ["| script | passed | failed | exit | failing checks |",
           "|---|---:|---:|---:|---|"]
    for r in rows:
        if r.get("skipped"):
            out.append(f"| {r['script']} | – | – | – | not run: {r['note']} |")
            continue
        p = sum(c["passed"] for c in r["checks"])
        f = len(r["checks"]) - p
        total_p, total_f = total_p + p, total_f + f
        fails = [f"**{c['name']}**" + (f": {c['detail']}" if c["detail"] else "")
                 for c in r["checks"] if not c["passed"]]
        if r["note"]:
            fails.append(f"_({r['note']})_")
        cell = "<br>".join(x.replace("|", "\\|") for x in fails)
        out.append(f"| {r['script']} | {p} | {f} | {r['exit']} | {cell} |")
    out.append(f"| **total** | **{total_p}** | **{total_f}** | | |")
    md = "\n".join(out) + "\n"
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(md)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)

    # The terminal table: one line per script, then its failing checks indented.
    print()
    print(f"{'script':<44} {'passed':>6} {'failed':>6} {'exit':>5}")
    print("-" * 64)
    for r in rows:
        if r.get("skipped"):
            print(f"{r['script']:<44} {'-':>6} {'-':>6} {'-':>5}  not run")
            print(f"    ({r['note']})"[:220])
            continue
        p = sum(c["passed"] for c in r["checks"])
        print(f"{r['script']:<44} {p:>6} {len(r['checks']) - p:>6} {str(r['exit']):>5}")
        for c in r["checks"]:
            if not c["passed"]:
                detail = f": {c['detail']}" if c["detail"] else ""
                print(f"    ✗ {c['name']}{detail}"[:220])
        if r["note"]:
            print(f"    ({r['note']})"[:220])
    print("-" * 64)
    print(f"{'total':<44} {total_p:>6} {total_f:>6}")
    print(f"{total_p} passed, {total_f} failed")


if __name__ == "__main__":
    main()
