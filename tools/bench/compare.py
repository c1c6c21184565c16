#!/usr/bin/env python3
"""Side-by-side benchmark: ringway against nginx, HAProxy and no proxy at all.

    tools/bench/compare.py                      # 1 shard/worker, 10 s runs, 3 rounds (~17 min)
    tools/bench/compare.py --quick              # smoke test: 2 s runs, 1 round (~1.5 min)
    tools/bench/compare.py --shards 2 --scaling --duration 5 --rounds 5

Two zero-delay `ringway-mock` backends; in front of them ringway (sticky off), nginx and
HAProxy, each a plain keep-alive HTTP/1.1 reverse proxy, round-robin over both mocks, with
--shards threads (ringway shards = nginx worker_processes = haproxy nbthread). nginx:
upstream keepalive 64, proxy_http_version 1.1, proxy_buffering off, keepalive_requests raised
so nobody closes connections; haproxy: mode http, http-reuse always, http-keep-alive. Also a
ringway with sticky sessions on (mixed workload) and a HAProxy with `option http-no-delay`
(streaming). "direct" = straight to one mock. "pipe (floor)" = ringway-pipe (tools/pipe), not a
proxy: a bare monoio byte copier with --shards threads that gives each client connection its
own upstream connection (round-robin over the mocks) and copies bytes both ways, no HTTP
parsing; what a proxy costs above it is the cost of being a proxy. Load: wrk with
tools/wrk/*.lua. Each wrk test runs on every target in turn, --rounds times, the order
rotating; tables show medians.

  added latency  wrk -t1 -c1, openai-chat.lua: p50/p99 through a proxy (or the pipe) minus
                 direct. At one request at a time the round trip is mostly waking idle
                 (v)CPUs, so it is sensitive to what else runs: background load makes it
                 shorter, not longer.
  throughput     wrk -tT -c32 / -c256 (T = --wrk-threads; 2 loads 2 cores a bit better than
                 1), openai-chat.lua: requests/s, p50, p99, errors (socket errors + non-2xx,
                 summed over rounds). wrk, mocks and proxy share the cores: requests/s
                 measures the machine as much as the proxy.
  CPU/request    the proxy's user+system CPU (utime+stime, /proc/PID/stat fields 14+15, summed
                 over its processes, e.g. nginx master+workers) during a run, divided by the
                 requests wrk completed, in µs: what tells proxies apart on a shared machine.
                 Headline: 32 connections with --shards 1 (the default). For "direct" it is
                 the mock's own cost; for the pipe, the floor (ringway/pipe in the ratios).
  memory         VmRSS (/proc/PID/status, summed over processes) idle after start, peak of
                 100 ms samples during the 256-connection runs, and 1 s after the last of
                 them; and ringway's stripped release binary.
  workloads      requests/s (p99) at 32 connections: ollama-chat.lua, openai-stream.lua (20
                 SSE events) and mixed.lua (500 multi-turn conversations, 30% streamed).
  streaming      a Python client, one keep-alive socket per target (TCP_NODELAY): POST
                 /v1/chat/completions "stream":true, X-Mock-Tokens: 200, and a delay of 0 or
                 5 ms before every token, the first included (X-Mock-First-Token-Delay-Ms and
                 X-Mock-Token-Delay-Ms): at 0 the head and the tokens leave back to back, at 5
                 the head goes first and the first token 5 ms later, like a short prefill, so
                 its first chunk measures relaying one token; time from sending to the first
                 body bytes (first chunk) and to the end; medians of --stream-requests per target and delay, targets alternating
                 (so each request finds its proxy idle: at 5 ms for ~5 s, longer than
                 ringway's default proxy.pool_idle_timeout_ms of 4 s, so ringway's first chunk
                 includes opening an upstream connection, nginx's and HAProxy's not; the pipe
                 keeps the client's own upstream connection). Failed = not a 200 with all 202
                 SSE events (200 tokens, finish chunk, [DONE]).
  first token    the same client, --ttft-requests streams of 3 tokens per target (first token
                 5 ms after the head), targets alternating: median and p90 time to the first
                 body bytes. Many short streams give a steadier median than the 200-event
                 ones; there is no idle gap, so no proxy reconnects.
  scaling        (--scaling) ringway with the other shard count (1 or 2) as extra rows of
                 the throughput table.

Installs wrk, nginx-light and haproxy with apt-get if missing; builds the release binaries
and runs private copies of them, so a rebuild by someone else mid-run changes nothing.
Everything listens on 127.0.0.1 on free ports and is stopped on exit; configs and nginx's and
HAProxy's logs go to a temp dir (kept with --keep). Progress on stderr, the markdown report on
stdout.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, drain, free_port, machine, port_of, read, wait_for_line  # noqa: E402

BIN = f"{ROOT}/target/release"  # main() copies the binaries to the temp dir and points here
TICK = os.sysconf("SC_CLK_TCK")
PROCS = []  # everything we started, stopped on exit
NOTES = []  # problems seen, printed at the end of the report

NGINX = """user root;
worker_processes {n};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    upstream mocks {{
        server 127.0.0.1:{a}; server 127.0.0.1:{b};
        keepalive 64; keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mocks; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""

HAPROXY = """global
    nbthread {n}
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
{extra}    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port}
    default_backend mocks
backend mocks
    balance roundrobin
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""

RINGWAY = """endpoints = [{{ name = "mock-a", url = "http://127.0.0.1:{a}", type = "ollama" }},
             {{ name = "mock-b", url = "http://127.0.0.1:{b}", type = "ollama" }}]
server = {{ listen = "127.0.0.1:0", shards = {n} }}
log = {{ level = "warn" }}
sticky = {{ enabled = {sticky} }}
proxy = {{ balancer = "round-robin" }}
"""


def stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (after the command name); [] if it is gone."""
    return read(f"/proc/{pid}/stat").rpartition(")")[2].split()


class Server:
    """A process under test (with its children, for nginx), the port it serves on, and its
    log file (nginx, haproxy) or `listening on` line (the others)."""

    def __init__(self, name, proc, port, log):
        self.name, self.proc, self.port, self.log = name, proc, port, log
        self.pids = [proc.pid]

    def find_children(self, expect):
        """Adds the children (nginx workers) to the processes measured."""
        for _ in range(200):
            kids = [int(d) for d in os.listdir("/proc")
                    if d.isdigit() and stat_fields(d)[1:2] == [str(self.proc.pid)]]
            if len(kids) >= expect:
                break
            time.sleep(0.05)
        self.pids = [self.proc.pid] + kids

    def cpu_seconds(self):
        return sum(int(f[11]) + int(f[12]) for f in map(stat_fields, self.pids) if f) / TICK

    def rss_kb(self):
        return sum(int(m.group(1)) for p in self.pids
                   if (m := re.search(r"VmRSS:\s+(\d+)", read(f"/proc/{p}/status"))))


def spawn(tmp, name, argv, log=True):
    """Starts `argv` in its own process group, its output to {tmp}/{name}.log (or, log=False,
    to a pipe for wait_for_line)."""
    out = open(f"{tmp}/{name}.log", "w") if log else subprocess.PIPE
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, cwd=tmp, start_new_session=True)
    if log:
        out.close()
    PROCS.append(proc)
    return proc


def start_listening(tmp, name, argv):
    """A process that prints `listening on ADDR` (mock, ringway, pipe), once it has."""
    proc = spawn(tmp, name, argv, log=False)
    line = wait_for_line(proc, "listening on")
    drain(proc)
    return Server(name, proc, port_of(line), line)


def wait_port(proc, log, port, timeout=10):
    """Waits for `port` to accept connections (nginx, haproxy print nothing)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log}: exited with {proc.returncode}:\n{open(log).read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{log}: not ready within {timeout} s:\n{open(log).read()}")


def start_mock(tmp, name):
    return start_listening(tmp, "direct", [f"{BIN}/ringway-mock", "--listen", "127.0.0.1:0",
                                           "--name", name])


def start_ringway(tmp, name, shards, sticky, a, b):
    slug = re.sub(r"\W+", "-", name).strip("-")
    with open(f"{tmp}/{slug}.toml", "w") as f:
        f.write(RINGWAY.format(n=shards, sticky=str(sticky).lower(), a=a, b=b))
    return start_listening(tmp, name, [f"{BIN}/ringway", "--config", f"{tmp}/{slug}.toml",
                                       "--log-level", "info"])  # info: "listening on"


def start_pipe(tmp, threads, a, b):
    return start_listening(tmp, "pipe", [f"{BIN}/ringway-pipe", "--threads", str(threads),
                                         "--upstream", f"127.0.0.1:{a}",
                                         "--upstream", f"127.0.0.1:{b}"])


def start_configured(tmp, name, template, argv, a, b, n, **extra):
    """nginx or haproxy: a config from `template` with a free port, then `argv`."""
    port, slug = free_port(), re.sub(r"\W+", "-", name)
    path = f"{tmp}/{slug}.conf"
    with open(path, "w") as f:
        f.write(template.format(n=n, tmp=tmp, a=a, b=b, port=port, **extra))
    proc = spawn(tmp, slug, [x.format(conf=path, tmp=tmp) for x in argv])
    log = f"{tmp}/{slug}.log"
    return Server(name, proc, wait_port(proc, log, port), log)


def run_wrk(target, script, conns, threads, duration, sample=False):
    """One wrk run; returns requests/s, latencies, errors, the target's CPU per request
    and (sample=True) the peak of its resident set sampled every 100 ms."""
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-s",
            f"{ROOT}/tools/wrk/{script}.lua", f"http://127.0.0.1:{target.port}/"]
    cpu = target.cpu_seconds()
    wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while True:
        if sample:
            peak = max(peak, target.rss_kb())
        try:
            wrk.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
    cpu = target.cpu_seconds() - cpu
    out = wrk.stdout.read()
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"no RESULT line from {' '.join(argv)}:\n{out}")
    r = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    detail = [l.strip() for l in out.splitlines() if "errors:" in l or "Non-2xx" in l]
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50_us"],
            "p99": r["p99_us"], "errors": r["errors"], "requests": r["requests"], "cpu": cpu,
            "cpu_us": cpu * 1e6 / max(r["requests"], 1), "peak_kb": peak, "detail": detail}


def stream_once(sock, delay_ms, tokens=200):
    """One SSE stream of `tokens` tokens on a raw keep-alive socket; returns (seconds to the
    first body bytes, seconds to the end of the chunked body, whether it was a 200 with all
    tokens + 2 events: the tokens, the finish chunk and [DONE])."""
    body = json.dumps({"model": "llama3.2:latest", "stream": True,
                       "messages": [{"role": "user", "content": "Count to 200."}]}).encode()
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nX-Mock-Tokens: {tokens}\r\n"
            f"X-Mock-Token-Delay-Ms: {delay_ms}\r\nX-Mock-First-Token-Delay-Ms: {delay_ms}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    start = time.perf_counter()
    sock.sendall(head.encode() + body)
    data, first = b"", None
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
        end = data.find(b"\r\n\r\n")
        if first is None and 0 <= end < len(data) - 4:
            first = time.perf_counter()
    done = time.perf_counter()
    head, _, rest = data.partition(b"\r\n\r\n")
    payload = b""
    while rest:  # de-chunk: "size\r\ndata\r\n" ... "0\r\n\r\n"
        size, _, rest = rest.partition(b"\r\n")
        payload, rest = payload + rest[:int(size, 16)], rest[int(size, 16) + 2:]
    ok = head.startswith(b"HTTP/1.1 200") and payload.count(b"data: ") == tokens + 2 \
        and payload.endswith(b"data: [DONE]\n\n")
    return first - start, done - start, ok


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def measure_streams(targets, delays, count, tokens=200):
    """{(name, delay): (first-chunk times, total times, failures)}, targets alternating."""
    out = {}
    for delay in delays:
        socks = {t.name: connect(t.port) for t in targets}
        for t in targets:  # warm up: the proxies open their upstream connection
            stream_once(socks[t.name], delay, tokens)
        for i in range(count):
            for t in targets[i % len(targets):] + targets[:i % len(targets)]:
                firsts, totals, fails = out.setdefault((t.name, delay), ([], [], [0]))
                try:
                    first, total, ok = stream_once(socks[t.name], delay, tokens)
                    firsts.append(first)
                    totals.append(total)
                    fails[0] += not ok
                except (OSError, ValueError):
                    fails[0] += 1
                    socks[t.name] = connect(t.port)
        for sock in socks.values():
            sock.close()
    return out


def version(argv, pattern=r"\S.*"):
    p = subprocess.run(argv, capture_output=True, text=True)
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(0).strip() if m else "?"


def setup_tools():
    missing = [pkg for cmd, pkg in (("wrk", "wrk"), ("nginx", "nginx-light"),
                                    ("haproxy", "haproxy")) if not shutil.which(cmd)]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p", "ringway-mock",
                    "-p", "ringway-pipe"], cwd=ROOT, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shards", type=int, default=1,
                    help="ringway shards = nginx workers = haproxy threads")
    ap.add_argument("--wrk-threads", type=int, default=2, help="wrk -t for 32/256 connections")
    ap.add_argument("--stream-requests", type=int, default=20)
    ap.add_argument("--ttft-requests", type=int, default=300,
                    help="short streams for the time-to-first-token table")
    ap.add_argument("--scaling", action="store_true", help="also ringway with 1 and 2 shards")
    ap.add_argument("--quick", action="store_true", help="2 s runs, 1 round, 3 streams")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.stream_requests, args.ttft_requests = 2, 1, 3, 30
    setup_tools()
    tmp = tempfile.mkdtemp(prefix="ringway-compare-")
    global BIN  # a private copy: others may rebuild target/ while this runs
    for name in ("ringway", "ringway-mock", "ringway-pipe"):
        shutil.copy2(f"{BIN}/{name}", f"{tmp}/{name}")
    BIN = tmp
    args.commit = "commit " + version(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    try:
        report(args, tmp, *bench(args, tmp))
    finally:
        for proc in reversed(PROCS):  # each in its own process group: nginx's workers too
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=5)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        if args.keep:
            print(f"\nconfigs and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(args, tmp):
    a, b = start_mock(tmp, "a"), start_mock(tmp, "b")
    ringway = start_ringway(tmp, "ringway", args.shards, False, a.port, b.port)
    sticky = start_ringway(tmp, "ringway sticky", args.shards, True, a.port, b.port)
    nginx_argv = ["nginx", "-p", "{tmp}/", "-c", "{conf}", "-e", "stderr", "-g", "daemon off;"]
    nginx = start_configured(tmp, "nginx", NGINX, nginx_argv, a.port, b.port, args.shards)
    nginx.find_children(expect=args.shards)
    haproxy_argv = ["haproxy", "-f", "{conf}", "-db"]
    haproxy = start_configured(tmp, "haproxy", HAPROXY, haproxy_argv, a.port, b.port,
                               args.shards, extra="")
    nodelay = start_configured(tmp, "haproxy no-delay", HAPROXY, haproxy_argv, a.port, b.port,
                               args.shards, extra="    option http-no-delay\n")
    extra = [start_ringway(tmp, f"ringway {n} shard(s)", n, False, a.port, b.port)
             for n in (1, 2) if args.scaling and n != args.shards]
    pipe = start_pipe(tmp, args.shards, a.port, b.port)
    time.sleep(0.5)
    proxies = [ringway, nginx, haproxy]
    idle = {s.name: s.rss_kb() for s in proxies}
    main_targets = [a] + proxies
    t, d = args.wrk_threads, args.duration
    plan = [  # test name, wrk script, connections, wrk threads, targets
        ("c1", "openai-chat", 1, 1, main_targets + [pipe]),
        ("c32", "openai-chat", 32, t, main_targets + [pipe] + extra),
        ("c256", "openai-chat", 256, t, main_targets + [pipe] + extra),
        ("ollama-chat", "ollama-chat", 32, t, main_targets),
        ("openai-stream", "openai-stream", 32, t, main_targets),
        ("mixed", "mixed", 32, t, main_targets + [sticky]),
    ]
    for target in main_targets + [pipe] + extra + [sticky]:  # warm up: connections, caches
        run_wrk(target, "openai-chat", 32, t, 1)
    results, after = defaultdict(list), {}
    for rnd in range(args.rounds):
        for test, script, conns, threads, targets in plan:
            k = rnd % len(targets)
            for target in targets[k:] + targets[:k]:
                r = run_wrk(target, script, conns, threads, d, sample=test == "c256")
                results[test, target.name].append(r)
                print(f"round {rnd + 1}/{args.rounds} {test:13} {target.name:18} "
                      f"{r['rps']:9,.0f} req/s p50 {r['p50']:6} µs p99 {r['p99']:6} µs "
                      f"errors {r['errors']} CPU {r['cpu_us']:.1f} µs/req", file=sys.stderr)
                if test == "c256" and target in proxies:
                    time.sleep(1)
                    after[target.name] = target.rss_kb()
    print("streaming ...", file=sys.stderr)
    streams = measure_streams(main_targets + [nodelay, pipe], (0, 5), args.stream_requests)
    # Time to first token on its own: many short streams give stable medians.
    ttft = measure_streams(main_targets + [nodelay, pipe], (5,), args.ttft_requests, tokens=3)
    streams.update({(name, "ttft"): v for (name, _), v in ttft.items()})
    NOTES.extend(f"**{s.name} exited with status {s.proc.returncode} during the runs**"
                 for s in proxies + [sticky, nodelay, pipe] + extra if s.proc.poll() is not None)
    driver = re.search(r"shard\(s\) \((\w+)\)", ringway.log)
    return results, idle, after, streams, extra, driver.group(1) if driver else "?"


def table(header, rows):
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def report(args, tmp, results, idle, after, streams, extra, driver):
    def med(test, name, field):
        return statistics.median(r[field] for r in results[test, name])

    def total(test, name, field):
        return sum(r[field] for r in results[test, name])

    proxies = ["ringway", "nginx", "haproxy"]
    label = {"direct": "direct to mock", "ringway": "ringway", "nginx": "nginx",
             "haproxy": "HAProxy", "ringway sticky": "ringway, sticky on",
             "haproxy no-delay": "HAProxy, option http-no-delay", "pipe": "pipe (floor)"}
    n, t = args.shards, args.wrk_threads
    floor_note = ("\n(pipe (floor): tools/pipe, not a proxy. It copies bytes between each client "
                  "connection and an upstream connection of its own, parsing nothing: the lower "
                  "bound for a proxy on the same runtime.)")
    versions = [version([f"{BIN}/ringway", "--version"]) + f" ({driver} driver, {args.commit})",
                version(["nginx", "-v"], r"nginx/\S+"),
                version(["haproxy", "-v"], r"HAProxy version \S+"),
                version(["wrk", "-v"], r"wrk \S+")]
    size = os.path.getsize(f"{BIN}/ringway")
    if shutil.which("strip"):
        subprocess.run(["strip", "-o", f"{tmp}/ringway.stripped", f"{BIN}/ringway"])
        size = os.path.getsize(f"{tmp}/ringway.stripped")
    print(f"## ringway vs nginx vs HAProxy ({time.strftime('%Y-%m-%d')})\n")
    print(f"- {machine()}")
    print(f"- versions: {', '.join(versions)}")
    print(f"- settings: {n} shard(s) = nginx worker_processes {n} = haproxy nbthread {n}; two "
          f"zero-delay ringway-mock backends, round-robin; wrk -t1 at 1 connection, -t{t} at "
          f"32 and 256; {args.duration:g} s per run, medians of {args.rounds} round(s), "
          f"targets alternating; errors summed over the rounds")

    print("\n### Added latency, one connection (wrk -t1 -c1, openai-chat.lua)")
    d50, d99 = med("c1", "direct", "p50"), med("c1", "direct", "p99")
    table(["path", "p50", "p99", "added p50", "added p99", "errors", "CPU/request"],
          [[label[x], f"{med('c1', x, 'p50'):.0f} µs", f"{med('c1', x, 'p99'):.0f} µs",
            "" if x == "direct" else f"**{med('c1', x, 'p50') - d50:+.0f} µs**",
            "" if x == "direct" else f"{med('c1', x, 'p99') - d99:+.0f} µs",
            total("c1", x, "errors"), f"{med('c1', x, 'cpu_us'):.1f} µs"]
           for x in ["direct"] + proxies + ["pipe"]])
    print(floor_note)

    print(f"\n### Throughput (openai-chat.lua, wrk -t{t})")
    extra = [x.name for x in extra]  # --scaling: ringway with the other number of shards
    label.update({x: x for x in extra})
    table(["path", "connections", "requests/s", "vs direct", "p50", "p99", "errors",
           "CPU/request"],
          [[label[x], c, f"{med(test, x, 'rps'):,.0f}",
            f"{med(test, x, 'rps') / med(test, 'direct', 'rps'):.2f}x",
            f"{med(test, x, 'p50'):,.0f} µs", f"{med(test, x, 'p99'):,.0f} µs",
            total(test, x, "errors"), f"{med(test, x, 'cpu_us'):.1f} µs"]
           for test, c in (("c32", 32), ("c256", 256))
           for x in ["direct"] + proxies + ["pipe"] + extra])
    print(f"\n(CPU/request of \"direct\" is the mock's own; ringway: {n} shard(s) unless named; "
          f"pipe (floor): {n} thread(s), not a proxy, see above.)")

    print(f"\n### CPU per request, 32 connections, {n} shard(s) / worker(s) / thread(s)")
    table(["proxy", "CPU per request (median)", "CPU time, all rounds", "requests, all rounds"],
          [[label[x] if x != "direct" else "the mock itself (direct runs)",
            f"**{med('c32', x, 'cpu_us'):.1f} µs**", f"{total('c32', x, 'cpu'):.2f} s",
            f"{total('c32', x, 'requests'):,}"] for x in ["direct"] + proxies + ["pipe"]])

    print("\n### Memory (VmRSS, summed over processes)")
    peaks = {x: max(r["peak_kb"] for r in results["c256", x]) for x in proxies}
    table(["proxy", "idle after start", "peak under 256 connections", "after the runs"],
          [[label[x], f"{idle[x] / 1024:.1f} MB", f"{peaks[x] / 1024:.1f} MB",
            f"{after[x] / 1024:.1f} MB"] for x in proxies])
    print(f"\nringway release binary, stripped: {size / 1e6:.2f} MB ({size:,} bytes)")

    print("\n### Other workloads, 32 connections: requests/s (p99)")
    names = ["direct", "ringway", "ringway sticky", "nginx", "haproxy"]

    def cell(test, x):
        if (test, x) not in results:
            return ""
        errs = total(test, x, "errors")
        return (f"{med(test, x, 'rps'):,.0f} ({med(test, x, 'p99'):,.0f} µs)"
                + (f", {errs} errors" if errs else ""))
    table(["workload"] + [label[x] for x in names],
          [[f"{test}.lua"] + [cell(test, x) for x in names]
           for test in ("ollama-chat", "openai-stream", "mixed")])

    print(f"\n### Streaming: 200 SSE events, median of {args.stream_requests} requests")
    rows = []
    for delay in (0, 5):
        base = [statistics.median(v) * 1e3 for v in streams["direct", delay][:2]]
        for x in ["direct"] + proxies + ["haproxy no-delay", "pipe"]:
            firsts, totals, fails = streams[x, delay]
            ms = [statistics.median(firsts) * 1e3, statistics.median(totals) * 1e3]
            vs = ["" if x == "direct" else f"{(m - b) * 1e3:+,.0f} µs" for m, b in zip(ms, base)]
            rows.append([label[x], f"{delay} ms", f"{ms[0]:,.2f} ms", vs[0], f"{ms[1]:,.2f} ms",
                         vs[1], fails[0]])
    table(["path", "token delay", "first chunk", "vs direct", "whole stream", "vs direct",
           "failed"], rows)
    print("\n(pipe (floor): each client socket keeps its own upstream connection, never idle "
          "long enough to be closed; ringway's pooled one may be, see the module docstring.)")

    print(f"\n### Time to first token: 3-token streams, first token 5 ms after the head, "
          f"{args.ttft_requests} requests per path")
    firsts = {x: sorted(streams[x, "ttft"][0]) for x in ["direct"] + proxies
              + ["haproxy no-delay", "pipe"]}
    base = statistics.median(firsts["direct"])
    rows = []
    for x, f in firsts.items():
        m, p90 = statistics.median(f), f[int(0.9 * (len(f) - 1))]
        rows.append([label[x], f"{m * 1e3:,.2f} ms", "" if x == "direct" else
                     f"**{(m - base) * 1e6:+,.0f} µs**", f"{p90 * 1e3:,.2f} ms",
                     streams[x, "ttft"][2][0]])
    table(["path", "first token (median)", "vs direct", "p90", "failed"], rows)
    print("\n(Back to back, so each proxy keeps its upstream connection pooled. The gap to "
          "direct is the extra process a token passes through: compare with the pipe's.)")

    print("\n### Ratios (ringway / other; below 1 = ringway lower)")
    rows = [("requests/s, 32 connections", "c32", "rps"),
            ("requests/s, 256 connections", "c256", "rps"),
            ("p50, 1 connection", "c1", "p50"), ("p99, 1 connection", "c1", "p99"),
            ("p99, 256 connections", "c256", "p99"),
            ("CPU per request, 32 connections", "c32", "cpu_us")]
    table(["measure", "ringway/direct", "ringway/nginx", "ringway/haproxy",
           "ringway/pipe (floor)"],
          [[what] + ["" if field == "cpu_us" and o == "direct" else
                     f"{med(test, 'ringway', field) / med(test, o, field):.2f}x"
                     for o in ("direct", "nginx", "haproxy", "pipe")] for what, test, field in rows]
          + [["peak RSS, 256 connections", "", f"{peaks['ringway'] / peaks['nginx']:.2f}x",
              f"{peaks['ringway'] / peaks['haproxy']:.2f}x", ""]])
    NOTES.extend(f"errors, {test} through {name}: {'; '.join(r['detail'])}"
                 for (test, name), rs in results.items() for r in rs if r["errors"])
    for note in NOTES:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
