#!/usr/bin/env python3
"""What the dashboard (/internal/ui/) costs ringway: CPU per poll of /internal/ui/data, and
ringway's CPU over a window with and without a page polling once a second.

    tools/bench/dashboard_cost.py                 # 2 mocks, 60 s windows (~2.5 min)
    tools/bench/dashboard_cost.py --seconds 20 --burst 500   # quick look

Two `ringway-mock` backends behind a release ringway (one shard, default health checks,
sticky on). A light steady load (--rps chat requests a second) runs throughout, so the data
changes between polls and every poll renders and sends the whole document (a quiet proxy
would answer most polls 304; this measures the dearer case). The poller does what the page
does: GET /internal/ui/data on one keep-alive connection with the last ETag in
If-None-Match, once a second.

  burst    --burst polls back to back; ringway's CPU during them / polls = CPU per poll.
           At one refresh a second that is the share of one core the page costs.
  windows  --seconds of load alone, then --seconds of load with the poller: the difference
           of ringway's CPU over the two windows, as a share of one core.

CPU is the sum over ringway's threads of /proc/PID/task/*/schedstat (time on CPU, ns).
Standard library only; uses target/release binaries (builds them unless --no-build).
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, drain, machine, port_of, wait_for_line  # noqa: E402

BODY = json.dumps({"model": "llama3.2:latest", "stream": False,
                   "messages": [{"role": "user", "content": "Say hello"}]})


def cpu_ns(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


class Load(threading.Thread):
    """Chat requests at a steady rate on one keep-alive connection."""

    def __init__(self, port, rps):
        super().__init__(daemon=True)
        self.port, self.period, self.stop, self.sent = port, 1 / rps, threading.Event(), 0

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_at = time.monotonic()
        while not self.stop.is_set():
            conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
            conn.getresponse().read()
            self.sent += 1
            next_at += self.period
            time.sleep(max(0, next_at - time.monotonic()))


class Poller:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.etag, self.polls, self.not_modified, self.bytes = None, 0, 0, 0

    def poll(self):
        headers = {"If-None-Match": self.etag} if self.etag else {}
        try:
            self.conn.request("GET", "/internal/ui/data", headers=headers)
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # ringway closed the idle keep-alive connection: reconnect, as a browser does.
            self.conn.close()
            self.conn.request("GET", "/internal/ui/data", headers=headers)
            r = self.conn.getresponse()
        body = r.read()
        self.polls += 1
        if r.status == 304:
            self.not_modified += 1
        else:
            assert r.status == 200, r.status
            self.etag, self.bytes = r.getheader("ETag"), len(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="length of each window [60]")
    ap.add_argument("--burst", type=int, default=2000, help="polls back to back [2000]")
    ap.add_argument("--rps", type=float, default=20, help="background chat requests/s [20]")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p", "ringway-mock"],
                       cwd=ROOT, check=True)
    procs = []
    tmp = tempfile.mkdtemp(prefix="ringway-dashboard-cost-")
    try:
        ports = []
        for name in ("a", "b"):
            m = subprocess.Popen([f"{ROOT}/target/release/ringway-mock", "--listen", "127.0.0.1:0",
                                  "--name", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
            procs.append(m)
            ports.append(port_of(wait_for_line(m, "listening on")))
            drain(m)
        config = f"{tmp}/ringway.toml"
        with open(config, "w") as f:
            f.write('[server]\nlisten = "127.0.0.1:0"\nshards = 1\n[log]\nlevel = "warn"\n'
                    "[sticky]\nenabled = true\n")
            for name, port in zip("ab", ports):
                f.write(f'[[endpoints]]\nname = "{name}"\nurl = "http://127.0.0.1:{port}"\n'
                        'type = "ollama"\n')
        rw = subprocess.Popen([f"{ROOT}/target/release/ringway", "--config", config,
                               "--log-level", "info"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(rw)
        port = port_of(wait_for_line(rw, "listening on"))
        drain(rw)
        time.sleep(1)
        load = Load(port, args.rps)
        load.start()
        time.sleep(2)

        poller = Poller(port)
        before = cpu_ns(rw.pid)
        t0 = time.monotonic()
        for _ in range(args.burst):
            poller.poll()
        burst_s = time.monotonic() - t0
        burst_cpu = cpu_ns(rw.pid) - before
        # What the load itself cost during the burst, from the window without the poller.
        print(f"burst done: {args.burst} polls in {burst_s:.2f} s", file=sys.stderr)

        def window(with_poller):
            start_cpu, start = cpu_ns(rw.pid), time.monotonic()
            polls0 = poller.polls
            while time.monotonic() - start < args.seconds:
                if with_poller:
                    poller.poll()
                time.sleep(max(0, 1 - (time.monotonic() - start) % 1))
            return (cpu_ns(rw.pid) - start_cpu) / 1e9, time.monotonic() - start, poller.polls - polls0

        quiet_cpu, quiet_s, _ = window(False)
        polled_cpu, polled_s, polled_n = window(True)
        load.stop.set()
        load.join(timeout=5)
        rw.send_signal(signal.SIGTERM)
        rw.wait(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

    load_share = quiet_cpu / quiet_s
    burst_load = load_share * burst_s  # the background load's CPU during the burst
    per_poll_us = max(0.0, burst_cpu / 1e9 - burst_load) / args.burst * 1e6
    print(f"\n{machine()}")
    print(f"ringway: 1 shard, 2 mocks, {args.rps:g} chat requests/s throughout; /internal/ui/data "
          f"is {poller.bytes:,} bytes\n")
    print("| measure | figure |")
    print("|---|---|")
    print(f"| CPU per poll of /internal/ui/data ({args.burst} back to back, load's share "
          f"subtracted) | {per_poll_us:.1f} µs |")
    print(f"| => at one refresh a second | {per_poll_us / 1e4:.4f}% of one core |")
    print(f"| ringway CPU, {quiet_s:.0f} s of load alone | {quiet_cpu * 1e3:.1f} ms "
          f"({100 * quiet_cpu / quiet_s:.3f}% of a core) |")
    print(f"| ringway CPU, {polled_s:.0f} s of load + {polled_n} polls (1/s) | {polled_cpu * 1e3:.1f} ms "
          f"({100 * polled_cpu / polled_s:.3f}% of a core) |")
    diff = polled_cpu / polled_s - quiet_cpu / quiet_s
    print(f"| difference (the page's cost, with the windows' noise) | {100 * diff:+.3f}% of a core |")


if __name__ == "__main__":
    main()
