#!/usr/bin/env python3
"""Failover benchmark: steady load through ringway to two mock backends while one of
them is hard-killed (SIGKILL) and restarted, several times.

    tools/bench/failover.py                 # 32 clients, 3 kill/restart cycles (~58 s)
    tools/bench/failover.py --mode 503      # the backend stays up but answers 503
    tools/bench/failover.py --cycles 1 --kill-after 4 --down-for 2   # quick look
    tools/bench/failover.py --plot docs/failover.png   # also the chart (tools/bench/plot.py)

Prints: requests sent, failed requests (any non-2xx answer or transport error seen by a
client), and per cycle
  - reroute: from the kill (or the first 503) until ringway stopped sending the backend
    traffic (its status page no longer lists it as healthy; polled every 5 ms);
  - recovery: from the restart (or the 503s ending) until a client got its first
    answer from that backend again;
with medians over the cycles. --plot PATH also draws requests/s (all, and by backend) and
failed requests per 250 ms over the run, kills and restarts marked, into PATH (a PNG; its
data beside it as .json). Standard library only (the chart: tools/bench/plot.py); builds the
release binaries with cargo. Everything listens on 127.0.0.1 and is stopped on exit.
"""

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, drain, free_port, machine, port_of, wait_for_line  # noqa: E402

BODY = json.dumps({
    "model": "llama3.2:latest",
    "stream": False,
    "messages": [{"role": "user", "content": "Write a haiku about failover."}],
})


class Mock:
    def __init__(self, name, port, delay_ms):
        self.name, self.port, self.delay_ms = name, port, delay_ms
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [f"{ROOT}/target/release/ringway-mock", "--listen", f"127.0.0.1:{self.port}",
             "--name", self.name, "--first-token-delay-ms", str(self.delay_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_line(self.proc, "listening on")
        return time.monotonic()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return time.monotonic()

    def control(self, settings):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("POST", "/mock/control", json.dumps(settings),
                     {"Content-Type": "application/json"})
        conn.getresponse().read()
        conn.close()
        return time.monotonic()


class Load:
    """`clients` threads, each sending requests back to back on a keep-alive connection."""

    def __init__(self, port, clients):
        self.port, self.clients = port, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.total = 0
        self.failures = []          # (time, what)
        self.first_by = {}          # endpoint -> times it answered, only after `watch`
        self.watch_since = None
        self.watch_name = None
        self.started = time.monotonic()
        self.served = defaultdict(int)  # (bin, endpoint) -> answers, BIN_S bins from `started`
        self.failed = defaultdict(int)  # bin -> failures
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", "/v1/chat/completions", BODY,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                now = time.monotonic()
                endpoint = resp.getheader("X-Olla-Endpoint")
                with self.lock:
                    self.total += 1
                    at = int((now - self.started) / BIN_S)
                    if not 200 <= resp.status < 300:
                        self.failures.append((now, f"status {resp.status}"))
                        self.failed[at] += 1
                    else:
                        self.served[at, endpoint] += 1
                    if (self.watch_name == endpoint and self.watch_since is not None
                            and now >= self.watch_since and endpoint not in self.first_by):
                        self.first_by[endpoint] = now
            except Exception as e:  # a transport error is a failure the client saw
                with self.lock:
                    self.total += 1
                    self.failures.append((time.monotonic(), repr(e)))
                    self.failed[int((time.monotonic() - self.started) / BIN_S)] += 1
                conn = None

    def watch_for(self, name, since):
        with self.lock:
            self.first_by.pop(name, None)
            self.watch_name, self.watch_since = name, since

    def first_answer(self, name, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if name in self.first_by:
                    return self.first_by[name]
            time.sleep(0.001)
        return None


def endpoint_status(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/internal/status/endpoints")
    page = json.loads(conn.getresponse().read())
    conn.close()
    return next(e["status"] for e in page["endpoints"] if e["name"] == name)


def wait_not_healthy(port, name, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if endpoint_status(port, name) != "healthy":
            return time.monotonic()
        time.sleep(0.005)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["kill", "503"], default="kill")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--kill-after", type=float, default=12.0, help="seconds of load before each kill")
    ap.add_argument("--down-for", type=float, default=5.0, help="seconds the backend stays down")
    ap.add_argument("--delay-ms", type=int, default=10, help="mock time to answer, ms")
    ap.add_argument("--shards", type=int, default=0)
    ap.add_argument("--plot", metavar="PATH", help="also draw the run into PATH (PNG)")
    ap.add_argument("--jitter", type=float, default=0.5,
                    help="up to this many seconds added at random to each kill and restart, so "
                         "they do not fall in the same phase of ringway's probing every time")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p", "ringway-mock"],
                   cwd=ROOT, check=True)
    a = Mock("a", free_port(), args.delay_ms)
    b = Mock("b", free_port(), args.delay_ms)
    procs = []
    try:
        a.start(); procs.append(a)
        b.start(); procs.append(b)
        config = f"/tmp/ringway-failover-{os.getpid()}.toml"
        with open(config, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:0"
shards = {args.shards}
[log]
level = "warn"
[[endpoints]]
name = "a"
url = "http://127.0.0.1:{a.port}"
type = "ollama"
[[endpoints]]
name = "b"
url = "http://127.0.0.1:{b.port}"
type = "ollama"
""")
        ringway = subprocess.Popen([f"{ROOT}/target/release/ringway", "--config", config, "--log-level", "info"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = wait_for_line(ringway, "listening on")
        port = port_of(line)
        drain(ringway)

        load = Load(port, args.clients)
        started = load.started = time.monotonic()
        kills, restarts = [], []
        for t in load.threads:
            t.start()
        reroutes, recoveries = [], []
        for cycle in range(args.cycles):
            time.sleep(args.kill_after + random.uniform(0, args.jitter))
            if args.mode == "kill":
                gone = b.kill()
            else:
                gone = b.control({"status_override": 503})
            kills.append(gone - started)
            out = wait_not_healthy(port, "b")
            reroutes.append((out - gone) * 1000 if out else None)
            time.sleep(max(0.0, args.down_for + random.uniform(0, args.jitter) - (time.monotonic() - gone)))
            back = b.start() if args.mode == "kill" else b.control({"status_override": None})
            restarts.append(back - started)
            load.watch_for("b", back)
            first = load.first_answer("b")
            recoveries.append((first - back) * 1000 if first else None)
            print(f"cycle {cycle + 1}: reroute {fmt(reroutes[-1])}, recovery {fmt(recoveries[-1])}",
                  file=sys.stderr)
        time.sleep(2)
        load.stop.set()
        for t in load.threads:
            t.join(timeout=35)
        elapsed = time.monotonic() - started
        ringway.send_signal(signal.SIGTERM)
        ringway.wait(timeout=5)
    finally:
        for m in procs:
            if m.proc and m.proc.poll() is None:
                m.proc.kill()

    what = "SIGKILL + restart" if args.mode == "kill" else "503 answers, then healthy again"
    print(f"\n{machine()}")
    print(f"load: {args.clients} clients back to back, mock answers in {args.delay_ms} ms; "
          f"backend b: {what}, {args.cycles}x ({args.kill_after:g} s of load, {args.down_for:g} s down, "
          f"each + up to {args.jitter:g} s at random); {elapsed:.0f} s in all\n")
    print("| requests | failed | reroute (median) | recovery (median) | per cycle |")
    print("|---|---|---|---|---|")
    per_cycle = "; ".join(f"{fmt(r)} / {fmt(c)}" for r, c in zip(reroutes, recoveries))
    print(f"| {load.total:,} | {len(load.failures)} | {fmt(median(reroutes))} | "
          f"{fmt(median(recoveries))} | {per_cycle} |")
    for when, what in load.failures[:10]:
        print(f"  failure at {when - started:.3f} s: {what}")
    if args.plot:
        how = "SIGKILL + restart" if args.mode == "kill" else "503 answers, then healthy again"
        plot(args, load, elapsed, kills, restarts, how)


BIN_S = 0.25  # the chart's time step


def plot(args, load, elapsed, kills, restarts, what):
    import plot as charts
    bins = int(elapsed / BIN_S)
    names = sorted({name for _, name in load.served if name})
    per_s = 1 / BIN_S
    data = {
        "bin_s": BIN_S,
        "t": [(i + 0.5) * BIN_S for i in range(bins)],
        "rps": [sum(load.served[i, n] for n in names) * per_s for i in range(bins)],
        "by_endpoint": {n: [load.served[i, n] * per_s for i in range(bins)] for n in names},
        "errors": [load.failed[i] * per_s for i in range(bins)],
        "kills": kills, "restarts": restarts, "requests": load.total,
        "title": f"Failover: backend b {'killed' if args.mode == 'kill' else 'answering 503'} "
                 f"{args.cycles}x under load ({args.clients} clients)",
        "machine": machine(),
        "note": f"tools/bench/failover.py: {what}; mock answers in {args.delay_ms} ms; "
                f"{load.total:,} requests, {len(load.failures)} failed",
    }
    charts.save("failover", data, args.plot)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(ms):
    return "n/a" if ms is None else f"{ms:.0f} ms"


if __name__ == "__main__":
    main()
