#!/usr/bin/env python3
"""HTTPS endpoints: what TLS to the backend costs ringway, next to a plain endpoint, in one
run.

    tools/bench/https.py                      # 10 s runs, 3 repeats, medians (~3 min)
    tools/bench/https.py --repeat 1 --duration 3 --ttft-requests 50   # a quick look (~20 s)
    tools/bench/https.py --no-build           # the binaries already in target/release

Two zero-delay `ringway-mock` backends: "plain" and "tls", the same mock serving TLS itself
(`--tls-cert`/`--tls-key`, built with `--features tls`). The mock terminates TLS in its own
connection loop rather than behind a terminator (nginx, stunnel) so that both rows have the
same hops: client -> ringway -> mock. A terminator in front of a plain mock would add a
process, a loopback hop and its own CPU to the https row only, and the ratio would measure
the terminator as much as TLS. The certificate is an ECDSA P-256 one for 127.0.0.1, signed
by a CA made with openssl for this run; ringway checks it against that CA
(`tls_ca_file`), as in production, not with `tls_insecure_skip_verify`.

In front of each, its own ringway (release build, one shard; sticky sessions off,
round-robin, so the two differ only in the endpoint's URL: http:// or https://). Health
checks, model-list reads and engine polls are set to once an hour (or off), so that no
checker handshake falls inside a run: what is measured is pooled requests. The TLS mock
counts its handshakes, and the report shows how many the runs caused.

Per repeat (the order of the two targets flips each repeat):
  c32   wrk -t2 -c32 -d{--duration}s tools/wrk/openai-chat.lua (compare.run_wrk):
        requests/s, p50, p99, errors, and CPU per request: ringway's utime+stime
        (/proc/PID/stat, all its threads) over the run divided by the requests wrk
        completed; the mock's the same way.
  ttft  compare.measure_streams: --ttft-requests streamed chats of 3 tokens per target on
        one keep-alive connection, targets alternating, the first token 5 ms after the
        head; time to first token = from sending the request to the first body bytes.
One connection at a time (wrk -c1) is left out: on this 2-vCPU VM its CPU per request
and latency swing 3-5x from run to run with where the scheduler puts the processes (10-48
µs of ringway CPU per request in six runs of 3 s), which would drown a TLS difference.
Each figure is the median over the repeats (TTFT: the median of every stream of every
repeat, and its p90); the ratio column is https / plain. The verdict on the target uses
the median of the repeats' own https / plain ratios (each repeat runs the two rows back
to back, so a change in the machine's other load between repeats cancels out). ringway's
CPU is also shown split into user and kernel time: the system calls are the same in both
rows (one read and one write per side and request), so TLS's work shows in user time.

Target (issue 15): a pooled TLS request costs ringway at most 1.3x the CPU of a plain one.

Reuses compare.py's process handling, wrk runner and stream client. Installs wrk with
apt-get if missing. Builds `ringway` (`cargo build --release -p ringway`) and the TLS mock
(`cargo build --release -p ringway-mock --features tls`) in two invocations, so ringway's
binary is the one users run (one build with both would give the mock's TLS to the ringway
binary too, through its `ringway demo` dependency), and runs private copies of them.
Progress on stderr, the markdown report on stdout.
"""

import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
from common import ROOT, machine, make_pki  # noqa: E402
from compare import measure_streams, run_wrk, start_listening, stop_all, table  # noqa: E402

RINGWAY = """endpoints = [{{ name = "{name}", url = "{url}", type = "ollama"{tls} }}]
server = {{ listen = "127.0.0.1:0", shards = 1 }}
log = {{ level = "warn" }}
sticky = {{ enabled = false }}
proxy = {{ balancer = "round-robin" }}
health = {{ check_interval_ms = 3600000 }}
models = {{ refresh_interval_ms = 3600000, loaded_refresh_interval_ms = 0 }}
"""
TARGET = 1.3  # ringway CPU per request, https / plain


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def tls_stats(port, ca):
    """The TLS mock's /mock/stats, over TLS."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=ssl.create_default_context(cafile=ca))
    conn.request("GET", "/mock/stats")
    stats = json.loads(conn.getresponse().read())
    conn.close()
    return stats


def settled(port):
    """Whether ringway has checked its endpoint and read its model list."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/internal/status/endpoints")
    eps = json.loads(conn.getresponse().read())["endpoints"]
    conn.close()
    return all(e["last_check_status"] == 200 and e.get("model_count") for e in eps)


def start(tmp, bins, ca, cert, key):
    """The two mocks and a ringway in front of each; {row: (ringway, mock)}."""
    fleet = {}
    for row in ("plain", "https"):
        tls = ["--tls-cert", cert, "--tls-key", key] if row == "https" else []
        mock = start_listening(tmp, f"mock-{row}", [bins["ringway-mock"], "--listen",
                                                    "127.0.0.1:0", "--name", row, *tls])
        scheme = "https" if row == "https" else "http"
        extra = f', tls_ca_file = "{ca}"' if row == "https" else ""
        path = f"{tmp}/{row}.toml"
        with open(path, "w") as f:
            f.write(RINGWAY.format(name=row, url=f"{scheme}://127.0.0.1:{mock.port}",
                                   tls=extra))
        proxy = start_listening(tmp, row, [bins["ringway"], "--config", path,
                                           "--log-level", "info"])  # info: "listening on"
        deadline = time.time() + 10
        while not settled(proxy.port):
            if time.time() > deadline:
                raise RuntimeError(f"{row}: the endpoint was not checked within 10 s")
            time.sleep(0.05)
        fleet[row] = (proxy, mock)
    return fleet


def user_system(server):
    """A process's user and kernel CPU seconds so far (/proc/PID/stat utime, stime)."""
    f = compare.stat_fields(server.proc.pid)
    return int(f[11]) / compare.TICK, int(f[12]) / compare.TICK


def wrk_with_mock(proxy, mock, script, conns, threads, duration):
    """compare.run_wrk, plus ringway's CPU split into user and kernel time, and the
    mock's own CPU, per request over the same run."""
    before, mock_before = user_system(proxy), mock.cpu_seconds()
    r = run_wrk(proxy, script, conns, threads, duration)
    per = lambda seconds: seconds * 1e6 / max(r["requests"], 1)
    r["user_us"], r["sys_us"] = (per(b - a) for a, b in zip(before, user_system(proxy)))
    r["mock_cpu_us"] = per(mock.cpu_seconds() - mock_before)
    return r


def bench(args, fleet, ca):
    rows = ("plain", "https")
    results = {("c32", row): [] for row in rows}
    firsts = {row: [] for row in rows}
    fails = {row: 0 for row in rows}
    handshakes = tls_stats(fleet["https"][1].port, ca)["tls_handshakes"]
    for rep in range(args.repeat):
        order = rows if rep % 2 == 0 else rows[::-1]
        for row in order:
            log(f"repeat {rep + 1}/{args.repeat}: {row}, 32 connections")
            results["c32", row].append(wrk_with_mock(*fleet[row], "openai-chat", 32, 2,
                                                     args.duration))
        log(f"repeat {rep + 1}/{args.repeat}: time to first token")
        targets = [fleet[row][0] for row in order]
        streams = measure_streams(targets, [5], args.ttft_requests, tokens=3)
        for row in rows:
            f, _, failed = streams[row, 5]
            firsts[row].extend(f)
            fails[row] += failed[0]
    handshakes = tls_stats(fleet["https"][1].port, ca)["tls_handshakes"] - handshakes
    return results, firsts, fails, handshakes


def report(args, results, firsts, fails, handshakes, commit):
    med = lambda test, row, field: statistics.median(r[field] for r in results[test, row])
    total = lambda test, row, field: sum(r[field] for r in results[test, row])
    print(f"## ringway to an HTTPS endpoint vs a plain one ({time.strftime('%Y-%m-%d')})\n")
    print(f"- {machine()}")
    print(f"- {commit}; one ringway shard per row, one zero-delay mock each; wrk "
          f"openai-chat.lua, {args.duration:g} s at 32 connections (-t2); "
          f"{args.ttft_requests} 3-token streams per row per repeat; medians of "
          f"{args.repeat} repeat(s), rows alternating")
    print(f"- TLS: rustls on both sides (ringway's client, the mock's server), TLS 1.3 as "
          f"negotiated by default, ECDSA P-256 certificate checked against a private CA; "
          f"TLS handshakes during the runs: {handshakes}\n")
    lines = []

    def line(what, fmt, plain, https, note=""):
        ratio = f"{https / plain:.2f}x" if isinstance(plain, (int, float)) and plain else ""
        lines.append([what, fmt(plain), fmt(https), ratio + note])

    us = lambda v: f"{v:,.1f} µs"
    line("**ringway CPU per request**, 32 connections", us, med("c32", "plain", "cpu_us"),
         med("c32", "https", "cpu_us"))
    line("ringway CPU per request: user / kernel", lambda v: f"{v[0]:,.1f} / {v[1]:,.1f} µs",
         (med("c32", "plain", "user_us"), med("c32", "plain", "sys_us")),
         (med("c32", "https", "user_us"), med("c32", "https", "sys_us")))
    lines[-1][3] = " / ".join(f"{h / p:.2f}x" for p, h in zip(*(
        (med("c32", row, "user_us"), med("c32", row, "sys_us")) for row in ("plain", "https"))))
    line("mock CPU per request, 32 connections", us, med("c32", "plain", "mock_cpu_us"),
         med("c32", "https", "mock_cpu_us"))
    line("requests/s, 32 connections", lambda v: f"{v:,.0f}", med("c32", "plain", "rps"),
         med("c32", "https", "rps"))
    for p in ("p50", "p99"):
        line(f"{p}, 32 connections", lambda v: f"{v:,.0f} µs", med("c32", "plain", p),
             med("c32", "https", p))
    ttft = {row: sorted(firsts[row]) for row in firsts}
    ms = lambda v: f"{v * 1e3:,.3f} ms"
    line("time to first token, median", ms, statistics.median(ttft["plain"]),
         statistics.median(ttft["https"]))
    p90 = lambda f: f[int(0.9 * (len(f) - 1))]
    line("time to first token, p90", ms, p90(ttft["plain"]), p90(ttft["https"]))
    gap = (statistics.median(ttft["https"]) - statistics.median(ttft["plain"])) * 1e6
    lines[-2][3] += f" ({gap:+,.0f} µs)"
    table(["measure", "plain (http://)", "https://", "https / plain"], lines)
    errors = {row: total("c32", row, "errors") for row in firsts}
    print(f"\nerrors (wrk, all runs): plain {errors['plain']}, https {errors['https']}; "
          f"failed streams: plain {fails['plain']}, https {fails['https']}; requests at 32 "
          f"connections, all repeats: plain {total('c32', 'plain', 'requests'):,}, https "
          f"{total('c32', 'https', 'requests'):,}")
    per_run = lambda row: ", ".join(f"{r['cpu_us']:.1f}" for r in results["c32", row])
    print(f"\nringway CPU per request at 32 connections, each repeat (µs): plain "
          f"{per_run('plain')}; https {per_run('https')}")
    # Each repeat ran the two rows back to back: their ratio is less exposed to the load
    # of other work drifting over the whole run than the ratio of the medians.
    paired = [h["cpu_us"] / p["cpu_us"]
              for p, h in zip(results["c32", "plain"], results["c32", "https"])]
    print(f"\nhttps / plain within each repeat: {', '.join(f'{x:.2f}x' for x in paired)}")
    ratio = statistics.median(paired)
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"\nTarget: a pooled TLS request costs ringway <= {TARGET}x the CPU of a plain one "
          f"(32 connections; the median of the repeats' ratios): **{ratio:.2f}x, {verdict}**.")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="repeats; figures are medians")
    ap.add_argument("--duration", type=int, default=10, help="seconds per 32-connection run")
    ap.add_argument("--ttft-requests", type=int, default=200,
                    help="streams per row and repeat for time to first token")
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)
    target = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")
    if not args.no_build:
        for argv in (["-p", "ringway"], ["-p", "ringway-mock", "--features", "tls"]):
            log(f"cargo build --release {' '.join(argv)}")
            subprocess.run(["cargo", "build", "--release", "-q", *argv], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="ringway-https-")
    bins = {}
    for name in ("ringway", "ringway-mock"):  # private copies: a rebuild mid-run changes nothing
        shutil.copy2(f"{target}/release/{name}", f"{tmp}/{name}")
        bins[name] = f"{tmp}/{name}"
    commit = "commit " + compare.version(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    try:
        ca, cert, key = make_pki(tmp)
        fleet = start(tmp, bins, ca, cert, key)
        report(args, *bench(args, fleet, ca), commit)
    finally:
        stop_all()
        if args.keep:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
