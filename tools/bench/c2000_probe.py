#!/usr/bin/env python3
"""Where the slow requests at 2,000 connections come from: compare.py's c2000 test with the
kernel's view of every listener sampled while it runs.

    tools/bench/c2000_probe.py                                   # ringway, nginx, pipe, 5 runs
    tools/bench/c2000_probe.py --variant 'pool4096||proxy.pool_max_idle=4096'
    tools/bench/c2000_probe.py --variant 'batch|/path/to/ringway|' --targets ringway,batch,nginx

The same two zero-delay mocks, ringway (1 shard, sticky off, round-robin: compare.py's
config), nginx and the pipe as compare.py sets them up, plus any --variant: a ringway with
its own binary and/or config keys (NAME|BINARY|section.key=value;section.key=value, empty
parts meaning compare.py's). Each run is `wrk -t2 -c2000 --timeout 2s` on one target, the
targets rotating. During the run a thread samples every listening socket on the machine
through NETLINK_SOCK_DIAG (sockdiag.py) every 2 ms (the half-open count every 100 ms), and
the run reports, besides wrk's figures and CPU per request:

  accept q       the target's own listener: the peak of its accept queue (connections the
                 kernel has completed, that the proxy has not accepted yet), and when it
                 first emptied after the burst of connects, in ms from wrk's start; "wait"
                 is the integral of the queue over time, in connection-seconds spent waiting
                 to be accepted
  mock q         the same peak for the two mocks' listeners (the proxy's upstream connects)
  syn-q          peak half-open entries on the target's / the mocks' ports
  kernel         ListenOverflows, TCPReqQFullDrop, TCPSynRetrans growth (system-wide)
  upstream       connections the two mocks accepted during the run (GET /mock/stats)

Prints one line per run on stderr and a markdown summary (medians, per-run lists) on stdout.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
from compare import (NGINX, PROCS, fd_limit, raise_fd_limit, run_wrk,  # noqa: E402
                     start_configured, start_listening, start_mock, start_pipe, table)
from sockdiag import SockDiag  # noqa: E402

RINGWAY = {"server": {"listen": '"127.0.0.1:0"', "shards": "1"}, "log": {"level": '"info"'},
           "sticky": {"enabled": "false"}, "proxy": {"balancer": '"round-robin"'}}


def ringway_config(a, b, sets):
    sections = {k: dict(v) for k, v in RINGWAY.items()}
    for item in filter(None, sets.split(";")):
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        sections.setdefault(section, {})[name] = value.strip()
    out = [f'endpoints = [{{ name = "mock-a", url = "http://127.0.0.1:{a}", type = "ollama" }},',
           f'             {{ name = "mock-b", url = "http://127.0.0.1:{b}", type = "ollama" }}]']
    for section, keys in sections.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {v}" for k, v in keys.items())
    return "\n".join(out) + "\n"


def start_ringway(tmp, name, binary, sets, a, b):
    slug = re.sub(r"\W+", "-", name)
    with open(f"{tmp}/{slug}.toml", "w") as f:
        f.write(ringway_config(a, b, sets))
    path = f"{tmp}/{slug}.bin"
    shutil.copy2(binary, path)
    return start_listening(tmp, name, [path, "--config", f"{tmp}/{slug}.toml"])


class Sampler(threading.Thread):
    """Samples the listeners until stopped: [(seconds since start, {port: [q, limit, half]})]."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stop, self.diag = [], threading.Event(), SockDiag()

    def run(self):
        start, last_half = time.perf_counter(), 0.0
        while not self.stop.is_set():
            now = time.perf_counter() - start
            half = now - last_half >= 0.1
            if half:
                last_half = now
            self.samples.append((now, self.diag.sample(half_open=half)))
            time.sleep(0.002)
        self.diag.close()


def queue_stats(samples, port):
    """Peak accept queue, when it first emptied after its peak (ms), the queue integral
    (connection-seconds), peak half-open."""
    peak, peak_at, drained, area, half, prev = 0, 0.0, None, 0.0, 0, None
    for t, s in samples:
        q, _, h = s.get(port, (0, 0, 0))
        half = max(half, h)
        if prev is not None:
            area += prev[1] * (t - prev[0])
        prev = (t, q)
        if q > peak:
            peak, peak_at, drained = q, t, None
        elif drained is None and peak and q == 0:
            drained = t
    return peak, drained * 1e3 if drained is not None else None, area, half


def mock_accepted(mocks):
    total = 0
    for m in mocks:
        with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/mock/stats", timeout=5) as r:
            total += json.load(r)["connections_accepted"]
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--targets", default="ringway,nginx,pipe",
                    help="of direct, ringway, nginx, haproxy, pipe and the variants' names")
    ap.add_argument("--variant", action="append", default=[],
                    metavar="NAME|BINARY|section.key=value;...")
    ap.add_argument("--pipe", action="append", default=[], metavar="NAME|BINARY",
                    help="another ringway-pipe build, as a target of its own")
    ap.add_argument("--pause", type=float, default=3, help="seconds between runs")
    ap.add_argument("--mock-args", default="", help="extra ringway-mock arguments")
    ap.add_argument("--series", metavar="DIR",
                    help="write each run's samples there (t_ms, own q, mock q a, mock q b)")
    args = ap.parse_args()
    raise_fd_limit()
    tmp = tempfile.mkdtemp(prefix="ringway-probe-")
    for name in ("ringway", "ringway-mock", "ringway-pipe"):
        shutil.copy2(f"{compare.BIN}/{name}", f"{tmp}/{name}")
    compare.BIN = tmp
    try:
        probe(args, tmp)
    finally:
        for proc in reversed(PROCS):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=5)
                    break
                except (ProcessLookupError, compare.subprocess.TimeoutExpired):
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


def probe(args, tmp):
    extra = args.mock_args.split()
    a, b = (start_listening(tmp, "direct", [f"{tmp}/ringway-mock", "--listen", "127.0.0.1:0",
                                            "--name", n, *extra]) for n in "ab")
    mock_ports = {a.port, b.port}
    wanted = args.targets.split(",")
    targets = {"direct": a}
    if "ringway" in wanted:
        targets["ringway"] = start_ringway(tmp, "ringway", f"{tmp}/ringway", "", a.port, b.port)
    for v in args.variant:
        name, binary, sets = (v.split("|") + ["", ""])[:3]
        targets[name] = start_ringway(tmp, name, binary or f"{tmp}/ringway", sets, a.port,
                                      b.port)
    if "nginx" in wanted:
        argv = ["nginx", "-p", "{tmp}/", "-c", "{conf}", "-e", "stderr", "-g", "daemon off;"]
        targets["nginx"] = start_configured(tmp, "nginx", NGINX, argv, a.port, b.port, 1,
                                            extra="")
        targets["nginx"].find_children(expect=1)
    if "haproxy" in wanted:
        targets["haproxy"] = start_configured(tmp, "haproxy", compare.HAPROXY,
                                              ["haproxy", "-f", "{conf}", "-db"], a.port,
                                              b.port, 1, extra="")
    if "pipe" in wanted:
        targets["pipe"] = start_pipe(tmp, 1, a.port, b.port)
    for v in args.pipe:
        name, binary = v.split("|")
        shutil.copy2(binary, f"{tmp}/{name}.bin")
        targets[name] = start_listening(tmp, name, [
            f"{tmp}/{name}.bin", "--threads", "1", "--upstream", f"127.0.0.1:{a.port}",
            "--upstream", f"127.0.0.1:{b.port}"])
    order = [targets[n] for n in wanted + [v.split("|")[0] for v in args.variant + args.pipe]
             if n in targets]
    order = list(dict.fromkeys(order))
    print("open-file limits: " + ", ".join(f"{t.name} {fd_limit(t.proc.pid)}" for t in order),
          file=sys.stderr)
    for t in order:
        run_wrk(t, "openai-chat", 32, 2, 1)
    rows = {t.name: [] for t in order}
    for rnd in range(args.runs):
        k = rnd % len(order)
        for t in order[k:] + order[:k]:
            accepted = mock_accepted([a, b])
            sampler = Sampler()
            sampler.start()
            r = run_wrk(t, "openai-chat", 2000, 2, args.duration, wrk_args=["--timeout", "2s"],
                        counters=True)
            sampler.stop.set()
            sampler.join()
            r["upstream"] = mock_accepted([a, b]) - accepted
            r["own"] = queue_stats(sampler.samples, t.port)
            mocks = [queue_stats(sampler.samples, p) for p in mock_ports]
            r["mock_peak"] = max(m[0] for m in mocks)
            r["mock_half"] = max(m[3] for m in mocks)
            r["mock_wait"] = sum(m[2] for m in mocks)
            rows[t.name].append(r)
            if args.series:
                os.makedirs(args.series, exist_ok=True)
                with open(f"{args.series}/{t.name}-{rnd + 1}.csv", "w") as f:
                    for ts, smp in sampler.samples:
                        f.write(f"{ts * 1e3:.0f}," + ",".join(
                            str(smp.get(p, (0,))[0]) for p in [t.port, a.port, b.port]) + "\n")
            own = r["own"]
            print(f"run {rnd + 1} {t.name:10} {r['rps']:7,.0f} req/s p99 {r['p99'] / 1e3:6.0f} ms "
                  f"over2s {r['timeouts']:4} CPU {r['cpu_us']:5.1f} | accept q peak {own[0]:4} "
                  f"empty at {own[1] or -1:6.0f} ms wait {own[2]:6.1f} c·s half {own[3]:4} | "
                  f"mock q peak {r['mock_peak']:4} wait {r['mock_wait']:5.1f} half "
                  f"{r['mock_half']:4} | upstream {r['upstream']:6} | "
                  + " ".join(f"{k} {v}" for k, v in r["tcp"].items() if v), file=sys.stderr)
            time.sleep(args.pause)
    med = lambda rs, f: statistics.median(f(r) for r in rs)
    table(["target", "CPU/request", "requests/s", "p99", "over 2 s, each run",
           "accept q peak", "accept q empty at", "accept wait (conn·s)", "mock q peak",
           "upstream connects", "ListenOverflows", "TCPSynRetrans"],
          [[name, f"{med(rs, lambda r: r['cpu_us']):.1f} µs", f"{med(rs, lambda r: r['rps']):,.0f}",
            f"{med(rs, lambda r: r['p99']) / 1e3:,.0f} ms",
            ", ".join(str(r["timeouts"]) for r in rs),
            f"{med(rs, lambda r: r['own'][0]):,.0f}",
            ", ".join(f"{r['own'][1]:.0f}" if r["own"][1] else "-" for r in rs),
            f"{med(rs, lambda r: r['own'][2]):.1f}", f"{med(rs, lambda r: r['mock_peak']):,.0f}",
            f"{med(rs, lambda r: r['upstream']):,.0f}",
            ", ".join(str(r["tcp"].get("ListenOverflows", 0)) for r in rs),
            ", ".join(str(r["tcp"].get("TCPSynRetrans", 0)) for r in rs)]
           for name, rs in rows.items()])


if __name__ == "__main__":
    main()
