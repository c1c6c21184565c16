#!/usr/bin/env python3
"""Side-by-side benchmark: ringway against nginx, HAProxy and no proxy at all.

    tools/bench/compare.py                      # 1 shard/worker, 10 s runs, 3 rounds (~17 min)
    tools/bench/compare.py --quick              # smoke test: 2 s runs, 1 round (~1.5 min)
    tools/bench/compare.py --shards 2 --scaling --duration 5 --rounds 5
    tools/bench/compare.py --only c2000 --c2000-runs 5   # one test (names below: --help)
    tools/bench/compare.py --plot docs/compare.png       # also the chart (tools/bench/plot.py)

Two zero-delay `ringway-mock` backends; in front of them ringway (sticky off), nginx and
HAProxy, each a plain keep-alive HTTP/1.1 reverse proxy, round-robin over both mocks, with
--shards threads (ringway shards = nginx worker_processes = haproxy nbthread). nginx:
upstream keepalive 64, proxy_http_version 1.1, proxy_buffering off, keepalive_requests raised
so nobody closes connections; haproxy: mode http, http-reuse always, http-keep-alive. Also a
ringway with sticky sessions on (mixed workload), a HAProxy with `option http-no-delay`
(streaming) and an nginx with `proxy_request_buffering off` (long conversation). Limits are
set high enough for 2,000 connections and not reached by the other tests: RLIMIT_NOFILE
raised to 65536 (or the hard limit, if lower) for this process and everything it starts
(wrk included), nginx worker_connections 8192 and worker_rlimit_nofile 16384, HAProxy maxconn
8192 (it needs ~2x that many descriptors); ringway
raises its own limit to the hard maximum; listen backlogs: ringway and the pipe 4096, the
mocks 1024 (monoio's default), all capped by net.core.somaxconn. "direct" = straight to one mock. "pipe (floor)" = ringway-pipe (tools/pipe), not a
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
  long chat      wrk -tT -c32, long-chat.lua: a non-streamed chat whose body is ~110 KB (a
                 ~35-turn coding conversation: what a ~30k-token chat resends on every turn),
                 through direct, ringway, nginx (default config: proxy_request_buffering on,
                 so each body is written to a temp file before it goes upstream), nginx with
                 proxy_request_buffering off, HAProxy and the pipe; --rounds rounds of
                 --duration s like the others: requests/s, p50, p99, errors, CPU/request.
  2,000 conns    wrk -t2 -c2000 --timeout 2s, openai-chat.lua: --c2000-runs runs of
                 --c2000-duration s per path (direct, ringway, nginx, HAProxy, pipe), one path
                 under load at a time, the order rotating, 3 s pause after each run. Per path:
                 median CPU/request and requests/s, p99 (median and range over the runs); per
                 run the requests that took over 2 s (wrk 4.1 records no latency above its
                 --timeout and counts each slower response once as a timeout: that count;
                 p99 is over the rest, shown as "> 2 s" when over 1% were slower), the other
                 errors, the path's accept queue sampled every 5 ms (sockdiag.py: connections
                 the kernel has completed that the server has not accepted yet, their first
                 request already sent): its peak and its length 0.1 s before wrk stops (those
                 were never answered; wrk counts them nowhere), and how much the kernel's
                 TcpExt counters ListenOverflows (SYNs and handshake ACKs dropped at a full
                 accept queue) and TCPSynRetrans (SYNs sent again) grew during the run:
                 system-wide, so the proxy's listener and the mocks' together. The report
                 notes somaxconn, tcp_max_syn_backlog and every process's open-file limit.
                 tools/bench/c2000_probe.py digs further (the mocks' queues, upstream
                 connects, ringway variants).

--only TEST[,TEST] runs a subset (c1, c32, c256, ollama-chat, openai-stream, mixed, long-chat,
streaming, ttft, c2000) and prints only their tables; --quick makes the 2,000-connection
test 2 runs of 3 s.

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
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, drain, free_port, machine, port_of, read, wait_for_line  # noqa: E402

# Test names for --only, in the order they run.
TESTS = ("c1", "c32", "c256", "ollama-chat", "openai-stream", "mixed", "long-chat",
         "streaming", "ttft", "c2000")
BIN = f"{ROOT}/target/release"  # main() copies the binaries to the temp dir and points here
TICK = os.sysconf("SC_CLK_TCK")
PROCS = []  # everything we started, stopped on exit
NOTES = []  # problems seen, printed at the end of the report

NGINX = """user root;
worker_processes {n};
worker_rlimit_nofile 16384;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.log warn;
events {{ worker_connections 8192; }}
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
            proxy_buffering off;{extra}
        }}
    }}
}}
"""

HAPROXY = """global
    nbthread {n}
    maxconn 8192
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


# The kernel's TCP counters (what `nstat` shows) read around each 2,000-connection run:
# SYNs and handshake ACKs dropped at a full accept queue (ListenOverflows, ListenDrops),
# at a full SYN queue (TCPReqQFullDrop), answered with a cookie instead
# (TCPReqQFullDoCookies), and the SYNs connecting sockets had to send again (TCPSynRetrans).
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies",
                "TCPSynRetrans", "TCPTimeouts")


def tcp_counters():
    """The TcpExt counters of /proc/net/netstat (system-wide, this network namespace)."""
    lines = [l.split() for l in read("/proc/net/netstat").splitlines()]
    for names, values in zip(lines[::2], lines[1::2]):
        if names and names[0] == "TcpExt:":
            return {k: int(v) for k, v in zip(names[1:], values[1:]) if k in TCP_COUNTERS}
    return {}


class AcceptQueue(threading.Thread):
    """Samples a listening port's accept queue (connections the kernel has completed that
    the server has not accepted yet) every 5 ms through NETLINK_SOCK_DIAG (sockdiag.py)
    until `until` seconds have passed: its peak, and its length at the end."""

    def __init__(self, port, until):
        super().__init__(daemon=True)
        self.port, self.until, self.peak, self.last = port, until, 0, 0

    def run(self):
        from sockdiag import SockDiag
        diag, end = SockDiag(), time.perf_counter() + self.until
        while time.perf_counter() < end:
            self.last = diag.sample().get(self.port, [0])[0]
            self.peak = max(self.peak, self.last)
            time.sleep(0.005)
        diag.close()


def run_wrk(target, script, conns, threads, duration, sample=False, wrk_args=(),
            counters=False):
    """One wrk run; returns requests/s, latencies, errors, the target's CPU per request
    and (sample=True) the peak of its resident set sampled every 100 ms; counters=True:
    also how much each of TCP_COUNTERS grew during the run, and the target's accept
    queue: its peak and what was left in it 0.1 s before wrk stopped."""
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", *wrk_args, "-s",
            f"{ROOT}/tools/wrk/{script}.lua", f"http://127.0.0.1:{target.port}/"]
    before = tcp_counters() if counters else {}
    cpu = target.cpu_seconds()
    queue = AcceptQueue(target.port, duration - 0.1) if counters else None
    if queue:
        queue.start()
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
    tcp = {k: v - before.get(k, 0) for k, v in tcp_counters().items()} if counters else {}
    if queue:
        queue.join()
        tcp.update(queue_peak=queue.peak, queue_left=queue.last)
    out = wrk.stdout.read()
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"no RESULT line from {' '.join(argv)}:\n{out}")
    r = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    detail = [l.strip() for l in out.splitlines() if "errors:" in l or "Non-2xx" in l]
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50_us"],
            "p99": r["p99_us"], "errors": r["errors"], "requests": r["requests"], "cpu": cpu,
            "cpu_us": cpu * 1e6 / max(r["requests"], 1), "peak_kb": peak, "detail": detail,
            "timeouts": r.get("timeouts", 0), "tcp": tcp}


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


def raise_fd_limit(want=65536):
    """Raises this process's RLIMIT_NOFILE (inherited by wrk and every server started) to
    `want`, or as far as the hard limit allows: 2,000 connections take 2,000+ descriptors
    in wrk and ~4,000 in a proxy (client + upstream side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):  # not root: up to the hard limit only
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, hard)), hard))


def fd_limit(pid):
    """The soft "Max open files" of a process, from /proc/PID/limits."""
    m = re.search(r"Max open files\s+(\d+|unlimited)", read(f"/proc/{pid}/limits"))
    return m.group(1) if m else "?"


def sysctl(name):
    return " ".join(read(f"/proc/sys/{name.replace('.', '/')}").split()) or "?"


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
    ap.add_argument("--c2000-runs", type=int, default=5,
                    help="runs per target of the 2,000-connection test")
    ap.add_argument("--c2000-duration", type=int, default=6,
                    help="seconds per run of the 2,000-connection test")
    ap.add_argument("--quick", action="store_true",
                    help="2 s runs, 1 round, 3 streams; 2,000 connections: 2 runs of 3 s")
    ap.add_argument("--only", metavar="TEST[,TEST]",
                    help=f"run only these tests, of: {','.join(TESTS)}")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--plot", metavar="PATH",
                    help="also draw CPU per request and requests/s by proxy into PATH (PNG)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.stream_requests, args.ttft_requests = 2, 1, 3, 30
        args.c2000_runs, args.c2000_duration = 2, 3
    args.only = set(args.only.split(",")) if args.only else set(TESTS)
    if args.only - set(TESTS):
        ap.error(f"--only: unknown test(s) {','.join(sorted(args.only - set(TESTS)))}; "
                 f"the tests are {','.join(TESTS)}")
    raise_fd_limit()
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
        stop_all()
        if args.keep:
            print(f"\nconfigs and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def stop_all():
    """Stops everything started here, last first; each is in its own process group, so
    nginx's workers go too."""
    for proc in reversed(PROCS):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=5)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def bench(args, tmp):
    a, b = start_mock(tmp, "a"), start_mock(tmp, "b")
    ringway = start_ringway(tmp, "ringway", args.shards, False, a.port, b.port)
    sticky = start_ringway(tmp, "ringway sticky", args.shards, True, a.port, b.port)
    nginx_argv = ["nginx", "-p", "{tmp}/", "-c", "{conf}", "-e", "stderr", "-g", "daemon off;"]
    nginx = start_configured(tmp, "nginx", NGINX, nginx_argv, a.port, b.port, args.shards,
                             extra="")
    nginx.find_children(expect=args.shards)
    # The long conversation also through an nginx that streams request bodies upstream
    # instead of spooling them to a temp file first (its default).
    unbuffered = start_configured(tmp, "nginx unbuffered", NGINX, nginx_argv, a.port, b.port,
                                  args.shards, extra=" proxy_request_buffering off;")
    unbuffered.find_children(expect=args.shards)
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
        ("long-chat", "long-chat", 32, t, main_targets[:3] + [unbuffered, haproxy, pipe]),
    ]
    plan = [p for p in plan if p[0] in args.only]
    c2000_targets = [a, ringway, nginx, haproxy, pipe] if "c2000" in args.only else []
    used = {x.name: x for p in plan for x in p[4]} | {x.name: x for x in c2000_targets}
    for target in used.values():  # warm up: connections, caches
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
    streams = {}
    if "streaming" in args.only:
        print("streaming ...", file=sys.stderr)
        streams = measure_streams(main_targets + [nodelay, pipe], (0, 5), args.stream_requests)
    if "ttft" in args.only:
        # Time to first token on its own: many short streams give stable medians.
        ttft = measure_streams(main_targets + [nodelay, pipe], (5,), args.ttft_requests,
                               tokens=3)
        streams.update({(name, "ttft"): v for (name, _), v in ttft.items()})
    # 2,000 connections, last: its bursts of connects leave thousands of sockets in
    # TIME_WAIT. One target under load at a time, the order rotating; a pause after each
    # run lets the closed connections settle before the next burst.
    limits = {x.name: fd_limit(x.proc.pid) for x in c2000_targets}
    for rnd in range(args.c2000_runs):
        k = rnd % max(len(c2000_targets), 1)
        for target in c2000_targets[k:] + c2000_targets[:k]:
            r = run_wrk(target, "openai-chat", 2000, 2, args.c2000_duration,
                        wrk_args=["--timeout", "2s"], counters=True)
            results["c2000", target.name].append(r)
            print(f"run {rnd + 1}/{args.c2000_runs} c2000 {target.name:18} "
                  f"{r['rps']:9,.0f} req/s p99 {r['p99'] / 1e3:7.1f} ms "
                  f"over 2 s {r['timeouts']:4} errors {r['errors'] - r['timeouts']} "
                  f"CPU {r['cpu_us']:.1f} µs/req "
                  + " ".join(f"{k} {v}" for k, v in r["tcp"].items() if v), file=sys.stderr)
            time.sleep(3)
    if c2000_targets:
        limits["wrk"] = str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        NOTES.append("2,000 connections: open-file limits (soft) " + ", ".join(
            f"{name} {n}" for name, n in limits.items()) + "; "
            + ", ".join(f"{k} = {sysctl(k)}" for k in (
                "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies",
                "net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse")))
    NOTES.extend(f"**{s.name} exited with status {s.proc.returncode} during the runs**"
                 for s in proxies + [sticky, nodelay, unbuffered, pipe] + extra
                 if s.proc.poll() is not None)
    driver = re.search(r"shard\(s\) \((\w+)\)", ringway.log)
    return results, idle, after, streams, extra, driver.group(1) if driver else "?"


def table(header, rows):
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def long_chat(args, results, label, med, total):
    """The long-conversation table: ~110 KB bodies at 32 connections."""
    t = args.wrk_threads
    print(f"\n### Long conversation: ~110 KB request body, 32 connections (long-chat.lua, "
          f"wrk -t{t})")
    test, base = "long-chat", med("long-chat", "direct", "rps")
    table(["path", "requests/s", "vs direct", "p50", "p99", "errors", "CPU/request"],
          [[label[x], f"{med(test, x, 'rps'):,.0f}", f"{med(test, x, 'rps') / base:.2f}x",
            f"{med(test, x, 'p50'):,.0f} µs", f"{med(test, x, 'p99'):,.0f} µs",
            total(test, x, "errors"), f"**{med(test, x, 'cpu_us'):.1f} µs**"]
           for x in ("direct", "ringway", "nginx", "nginx unbuffered", "haproxy", "pipe")])
    ratio = [f"{med(test, 'ringway', 'cpu_us') / med(test, o, 'cpu_us'):.2f}x {label[o]}"
             for o in ("nginx", "nginx unbuffered", "haproxy", "pipe")]
    print(f"\n(A non-streamed chat whose `messages` array is a ~35-turn coding conversation: "
          f"what a ~30k-token chat resends on every turn. nginx is measured with its default "
          f"`proxy_request_buffering on`, what a user gets: it reads each body whole and, as "
          f"it is larger than `client_body_buffer_size` (16 KB), writes it to a temp file "
          f"before sending it upstream; the row below it streams the body instead. ringway "
          f"reads the body whole into memory (it is kept for a retry on another endpoint). "
          f"CPU/request of \"direct\" is the mock's own. ringway's CPU per request: "
          f"{', '.join(ratio)}.)")


def c2000(args, results, label):
    """The 2,000-connection table: per path, CPU, throughput, p99 and the slow requests of
    each run, with the kernel's SYN drop counters during that run."""
    print(f"\n### 2,000 connections (openai-chat.lua, wrk -t2 -c2000, {args.c2000_duration:g} "
          f"s per run, {args.c2000_runs} runs per path, one path under load at a time)")
    rows = []
    for x in ("direct", "ringway", "nginx", "haproxy", "pipe"):
        rs = results["c2000", x]
        # wrk keeps no latency above its 2 s timeout: when over 1% of the requests took
        # longer, the true p99 is above 2 s.
        p99s = [2e6 if r["timeouts"] > r["requests"] / 100 else r["p99"] for r in rs]
        show = lambda us: "> 2 s" if us >= 2e6 else f"{us / 1e3:,.0f} ms"
        per_run = lambda key: ", ".join(str(r["tcp"].get(key, 0)) for r in rs)
        rows.append([label[x], f"**{statistics.median(r['cpu_us'] for r in rs):.1f} µs**",
                     f"{statistics.median(r['rps'] for r in rs):,.0f}",
                     f"{show(statistics.median(p99s))} ({show(min(p99s))} - {show(max(p99s))})",
                     "**" + ", ".join(str(r["timeouts"]) for r in rs) + "**",
                     sum(r["errors"] - r["timeouts"] for r in rs),
                     per_run("queue_peak"), per_run("queue_left"),
                     per_run("ListenOverflows"), per_run("TCPSynRetrans")])
    table(["path", "CPU/request (median)", "requests/s (median)", "p99: median (min - max)",
           "requests over 2 s, each run", "other errors, all runs",
           "accept queue: peak, each run", "still queued at the end, each run",
           "accept-queue drops (ListenOverflows), each run", "SYN retransmits, each run"], rows)
    med = lambda x, f: statistics.median(r[f] for r in results["c2000", x])
    over = lambda x: sum(r["timeouts"] for r in results["c2000", x])
    print(f"\n(Each run opens 2,000 connections at once and keeps them busy. \"over 2 s\": "
          f"responses that took longer than 2 s, counted by wrk 4.1 as timeouts (it records "
          f"no latency above its --timeout, so p99 is over the faster requests; \"> 2 s\" "
          f"when over 1% were slower). Accept queue: the path's listener sampled every 5 ms "
          f"(NETLINK_SOCK_DIAG, `ss -ltn`'s Recv-Q): connections the kernel had completed "
          f"and the server had not accepted yet, their first request already sent; those "
          f"still queued at the end were never answered, and wrk does not count them. The "
          f"last two columns are the kernel's counters "
          f"(/proc/net/netstat, as `nstat` shows) during the run, for every listener on the "
          f"machine: a proxy's own and the mocks'; a SYN or handshake ACK dropped at a full "
          f"accept queue is sent again after 1 s, then 3 s, 7 s. CPU/request of \"direct\" "
          f"is the mock's own. ringway / nginx: CPU per request "
          f"{med('ringway', 'cpu_us') / med('nginx', 'cpu_us'):.2f}x, requests/s "
          f"{med('ringway', 'rps') / med('nginx', 'rps'):.2f}x, requests over 2 s "
          f"{over('ringway')} vs {over('nginx')} in all runs.)")


def report(args, tmp, results, idle, after, streams, extra, driver):
    def med(test, name, field):
        return statistics.median(r[field] for r in results[test, name])

    def total(test, name, field):
        return sum(r[field] for r in results[test, name])

    proxies = ["ringway", "nginx", "haproxy"]
    label = {"direct": "direct to mock", "ringway": "ringway", "nginx": "nginx",
             "haproxy": "HAProxy", "ringway sticky": "ringway, sticky on",
             "haproxy no-delay": "HAProxy, option http-no-delay", "pipe": "pipe (floor)",
             "nginx unbuffered": "nginx, proxy_request_buffering off"}
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
          f"targets alternating; errors summed over the rounds"
          + (f"; 2,000 connections: wrk -t2, {args.c2000_duration:g} s per run, "
             f"{args.c2000_runs} runs per path" if "c2000" in args.only else "")
          + (f"; only {','.join(t for t in TESTS if t in args.only)}"
             if len(args.only) < len(TESTS) else ""))

    have = args.only.__contains__
    if have("c1"):
        print("\n### Added latency, one connection (wrk -t1 -c1, openai-chat.lua)")
        d50, d99 = med("c1", "direct", "p50"), med("c1", "direct", "p99")
        table(["path", "p50", "p99", "added p50", "added p99", "errors", "CPU/request"],
              [[label[x], f"{med('c1', x, 'p50'):.0f} µs", f"{med('c1', x, 'p99'):.0f} µs",
                "" if x == "direct" else f"**{med('c1', x, 'p50') - d50:+.0f} µs**",
                "" if x == "direct" else f"{med('c1', x, 'p99') - d99:+.0f} µs",
                total("c1", x, "errors"), f"{med('c1', x, 'cpu_us'):.1f} µs"]
               for x in ["direct"] + proxies + ["pipe"]])
        print(floor_note)

    extra = [x.name for x in extra]  # --scaling: ringway with the other number of shards
    label.update({x: x for x in extra})
    runs = [(test, c) for test, c in (("c32", 32), ("c256", 256)) if have(test)]
    if runs:
        print(f"\n### Throughput (openai-chat.lua, wrk -t{t})")
        table(["path", "connections", "requests/s", "vs direct", "p50", "p99", "errors",
               "CPU/request"],
              [[label[x], c, f"{med(test, x, 'rps'):,.0f}",
                f"{med(test, x, 'rps') / med(test, 'direct', 'rps'):.2f}x",
                f"{med(test, x, 'p50'):,.0f} µs", f"{med(test, x, 'p99'):,.0f} µs",
                total(test, x, "errors"), f"{med(test, x, 'cpu_us'):.1f} µs"]
               for test, c in runs
               for x in ["direct"] + proxies + ["pipe"] + extra])
        print(f"\n(CPU/request of \"direct\" is the mock's own; ringway: {n} shard(s) unless "
              f"named; pipe (floor): {n} thread(s), not a proxy, see above.)")

    if have("c32"):
        print(f"\n### CPU per request, 32 connections, {n} shard(s) / worker(s) / thread(s)")
        table(["proxy", "CPU per request (median)", "CPU time, all rounds",
               "requests, all rounds"],
              [[label[x] if x != "direct" else "the mock itself (direct runs)",
                f"**{med('c32', x, 'cpu_us'):.1f} µs**", f"{total('c32', x, 'cpu'):.2f} s",
                f"{total('c32', x, 'requests'):,}"] for x in ["direct"] + proxies + ["pipe"]])

    if have("c256"):
        print("\n### Memory (VmRSS, summed over processes)")
        peaks = {x: max(r["peak_kb"] for r in results["c256", x]) for x in proxies}
        table(["proxy", "idle after start", "peak under 256 connections", "after the runs"],
              [[label[x], f"{idle[x] / 1024:.1f} MB", f"{peaks[x] / 1024:.1f} MB",
                f"{after[x] / 1024:.1f} MB"] for x in proxies])
    print(f"\nringway release binary, stripped: {size / 1e6:.2f} MB ({size:,} bytes)")

    names = ["direct", "ringway", "ringway sticky", "nginx", "haproxy"]

    def cell(test, x):
        if (test, x) not in results:
            return ""
        errs = total(test, x, "errors")
        return (f"{med(test, x, 'rps'):,.0f} ({med(test, x, 'p99'):,.0f} µs)"
                + (f", {errs} errors" if errs else ""))
    workloads = [test for test in ("ollama-chat", "openai-stream", "mixed") if have(test)]
    if workloads:
        print("\n### Other workloads, 32 connections: requests/s (p99)")
        table(["workload"] + [label[x] for x in names],
              [[f"{test}.lua"] + [cell(test, x) for x in names] for test in workloads])

    if have("long-chat"):
        long_chat(args, results, label, med, total)

    if have("streaming"):
        print(f"\n### Streaming: 200 SSE events, median of {args.stream_requests} requests")
        rows = []
        for delay in (0, 5):
            base = [statistics.median(v) * 1e3 for v in streams["direct", delay][:2]]
            for x in ["direct"] + proxies + ["haproxy no-delay", "pipe"]:
                firsts, totals, fails = streams[x, delay]
                ms = [statistics.median(firsts) * 1e3, statistics.median(totals) * 1e3]
                vs = ["" if x == "direct" else f"{(m - b) * 1e3:+,.0f} µs"
                      for m, b in zip(ms, base)]
                rows.append([label[x], f"{delay} ms", f"{ms[0]:,.2f} ms", vs[0],
                             f"{ms[1]:,.2f} ms", vs[1], fails[0]])
        table(["path", "token delay", "first chunk", "vs direct", "whole stream", "vs direct",
               "failed"], rows)
        print("\n(pipe (floor): each client socket keeps its own upstream connection, never "
              "idle long enough to be closed; ringway's pooled one may be, see the module "
              "docstring.)")

    if have("ttft"):
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

    if have("c2000"):
        c2000(args, results, label)

    rows = [(what, test, field) for what, test, field in (
            ("requests/s, 32 connections", "c32", "rps"),
            ("requests/s, 256 connections", "c256", "rps"),
            ("p50, 1 connection", "c1", "p50"), ("p99, 1 connection", "c1", "p99"),
            ("p99, 256 connections", "c256", "p99"),
            ("CPU per request, 32 connections", "c32", "cpu_us")) if have(test)]
    if rows:
        print("\n### Ratios (ringway / other; below 1 = ringway lower)")
        table(["measure", "ringway/direct", "ringway/nginx", "ringway/haproxy",
               "ringway/pipe (floor)"],
              [[what] + ["" if field == "cpu_us" and o == "direct" else
                         f"{med(test, 'ringway', field) / med(test, o, field):.2f}x"
                         for o in ("direct", "nginx", "haproxy", "pipe")]
               for what, test, field in rows]
              + ([["peak RSS, 256 connections", "", f"{peaks['ringway'] / peaks['nginx']:.2f}x",
                   f"{peaks['ringway'] / peaks['haproxy']:.2f}x", ""]] if have("c256") else []))
    # (At 2,000 connections the requests over 2 s are wrk timeouts, in their own column.)
    NOTES.extend(f"errors, {test} through {name}: {'; '.join(r['detail'])}"
                 for (test, name), rs in results.items() for r in rs
                 if r["errors"] > (r["timeouts"] if test == "c2000" else 0))
    for note in NOTES:
        print(f"\n{note}")
    if args.plot and have("c32"):
        plot(args, med, label, driver, versions)


def plot(args, med, label, driver, versions):
    """CPU per request (32 connections) and requests/s (32 and 256) by proxy."""
    import plot as charts
    names = ["ringway", "nginx", "haproxy", "pipe", "direct"]
    conns = [c for c in ("c32", "c256") if args.only.__contains__(c)]
    data = {
        "order": [label[n] for n in names],
        "cpu_connections": 32,
        "cpu_us": {label[n]: med("c32", n, "cpu_us") for n in names},
        "rps": {c[1:]: {label[n]: med(c, n, "rps") for n in names} for c in conns},
        "title": f"ringway vs nginx vs HAProxy, {args.shards} shard(s)/worker(s), "
                 f"openai-chat.lua, two zero-delay mocks",
        "machine": machine(),
        "note": f"tools/bench/compare.py: wrk, {args.duration:g} s runs, medians of "
                f"{args.rounds} round(s); " + ", ".join(versions[:3])
                + "; 'direct to mock': the mock's own CPU",
    }
    charts.save("compare", data, args.plot)


if __name__ == "__main__":
    main()
