#!/usr/bin/env python3
"""Soak test: ringway under a long mixed load while a backend flaps, watching for errors a
well-behaved client sees and for growth in ringway's memory and file descriptors.

    tools/bench/soak.py                    # 10 minutes (the real soak)
    tools/bench/soak.py --quick            # smoke test: 60 s, a flap every 10 s
    tools/bench/soak.py --duration 120 --flap-every 15 --down-for 2 --keep
    tools/bench/soak.py --plot docs/soak.png   # also RSS and open files over time (tools/bench/plot.py)

Three `ringway-mock` backends (ports chosen by the OS) behind one ringway (--shards, 2 by
default; warn log level, access log off; sticky sessions and the rest at their defaults),
all on 127.0.0.1. After a warm-up (a few seconds of wrk, then --quiet seconds idle) the
load runs for --duration seconds, all of it at once:

  bulk          wrk -t1 -c<--wrk-connections> with tools/wrk/mixed.lua (500 multi-turn
                conversations, 30% streamed), restarted every --wrk-slice seconds so each
                slice reports on its own. A wrapper script (written to the temp dir) tags
                each request with an X-Request-ID (ringway echoes it as X-Olla-Request-ID),
                so every answer is matched to its request: status, kind (streamed or not),
                and whether a 200 stream ended with `data: [DONE]`. wrk keeps one request
                outstanding per connection and abandons it on a socket error (then sends
                a new one), so of the requests unanswered when a slice ends, the oldest
                (as many as wrk's read and write errors, plus any sent more than 2 s
                before wrk stopped: answers take milliseconds) were abandoned, and the
                rest, at most one per connection, were merely in flight when wrk stopped
                (not errors).
  streams       --streams threads, each a keep-alive connection doing streamed chat
                completions back to back, X-Mock-Tokens 10-40 and X-Mock-Token-Delay-Ms so
                a stream lasts 0.2-2 s; a stream is good if it is a 200 whose chunked body
                ends properly, with every token event, the finish event and `data: [DONE]`.
  non-streamed  --nonstream threads of non-streamed chat completions on keep-alive
                connections; the mock waits 0-300 ms before answering, so requests are in
                flight when a backend is killed: they must fail over, never fail. A share
                of them (--stale-share) carry X-Mock-Fail: stale-response: the mock answers,
                then 100 ms later writes a second, unsolicited 200 (X-Mock-Stale: yes, body
                STALE) on the idle connection; a smaller share (--idle-408-share) carry
                X-Mock-Fail: idle-408: the answer, then 100 ms later a 408 with Connection:
                close, and a close. ringway must never serve those bytes to anyone: any
                answer anywhere in the soak with X-Mock-Stale, body STALE, status 408 or
                another request's X-Olla-Request-ID is a "mixed" answer, an unexpected error.
                --stale-share is 0 by default: under load a pooled connection is reused
                within the mock's 100 ms, and the mock (one request at a time per
                connection) writes its stale response as the next request's answer, before
                that request's own: no HTTP/1.1 client can tell the two apart. Run with
                --stale-share 0.05 to see it (2026-12-01: 364 of 369 stale responses were
                taken as the next request's answer); ringway's promise is that bytes that
                arrive while a connection is idle never reach anyone (tests/it/hostile.rs).
  writers       --writers threads, each a new connection per stream: a streamed chat (40
                tokens, 50 ms apart: 2 s) read by one thread while another writes 1 MiB
                blocks of junk (no line end) on the same connection as fast as the socket
                takes them, until the stream has ended. The stream must arrive complete and
                correct (ringway reads a client's pipelined bytes up to its head size
                limit, then no more until the answer is done), and the bytes the client got
                written per stream (socket buffers) must stay below --writer-limit-mib. The
                junk afterwards must get a 4xx (not a 408) or a close.
  disconnects   --disconnectors threads that misbehave in turn: a stream read up to its
                first chunk and then closed with RST (SO_LINGER 0) or a plain close; a
                stream closed after its head, before the first token; a request the
                backend never answers (X-Mock-Fail: hang) closed while it waits (RST or
                close); half a request head, then RST or close; a full head and part of
                the body, then close; a connection that never sends anything.
  slow clients  --slow threads that trickle a whole request (head and body) over about
                --slow-seconds seconds, then read the answer (non-streamed or streamed).
  flapping      every --flap-every seconds one backend (in turn) is SIGKILLed and started
                again on the same port --down-for seconds later.

Errors: anything a well-behaved client (wrk, streams, non-streamed, slow clients) got that
is not a complete, valid 200 answer. A stream that had started and was cut because its
backend was SIGKILLed during it (its X-Olla-Endpoint is the backend killed, the kill fell
between sending the request and the cut) is counted apart, as expected: ringway cannot
replay a stream that has started. wrk streams that got no answer at all are attributed to a
kill when one fell within 1 s after they were sent (wrk cannot say which backend served
them; its streams take milliseconds). Everything else is unexpected, non-streamed requests
included: they must fail over without the client noticing.

Resources: ringway's VmRSS (/proc/PID/status), open fds (/proc/PID/fd) and threads,
sampled every --sample-every seconds; "start" is after the warm-up and --quiet seconds of
idleness, "end" after the load has stopped and --quiet seconds of idleness (ringway's
proxy.pool_idle_timeout_ms is 4000 and its reaper runs every 2 s, so pooled upstream
connections are closed by then), "max" over the whole run. At the end the mocks'
/mock/stats (summed over restarts: each is read just before its kill), ringway's
/internal/metrics counters and endpoint status, and whether ringway stops cleanly on
SIGTERM.

Prints progress on stderr and a markdown report on stdout. Exit status 1 if ringway died
or did not stop cleanly, unexpected errors occurred, its fd count grew by more than
--fd-slack from start to end, it logged an ERROR (a caught panic, say), or it still counts
requests in flight when idle; 130 if interrupted (no report then). Standard library only;
installs wrk with apt-get if missing; builds the release binaries (unless --no-build) and
runs private copies of them (and of tools/wrk/*.lua), so a rebuild during the run changes
nothing. Every process started runs in its own process group and is stopped on exit,
Ctrl-C and errors included; the temp dir (configs, logs) is removed unless --keep.
"""

import argparse
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, free_port, machine, read  # noqa: E402

MODEL = "llama3.2:latest"
PROCS = []                      # every process started, stopped on exit
PROCS_LOCK = threading.Lock()
STOP = threading.Event()        # the load stops
SHUTDOWN = threading.Event()    # everything stops: no process may be started any more
NAMES = ("mock-a", "mock-b", "mock-c")

# The wrk wrapper: mixed.lua's requests, each tagged with an X-Request-ID, every answer
# matched to its request. Times are CLOCK_MONOTONIC, as Python's time.monotonic().
WRAPPER = r"""
dofile(os.getenv("SOAK_MIXED"))
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clk, soak_timespec *ts);
]]
local ts = ffi.new("soak_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local base_setup, base_request, base_done = setup, request, done
local threads = {}
local slice = os.getenv("SOAK_SLICE") or "0"
pending = {}           -- id -> time sent, until its answer arrives
counts = {}            -- "kind status" -> answers; kind s (streamed) or n
sent = { s = 0, n = 0 }
bad = {}               -- failed answers: "id status endpoint time what [body]"
local seq = 0
local verified = false

function setup(thread)
  if base_setup then base_setup(thread) end
  threads[#threads + 1] = thread
end

function request()
  local req = base_request()
  if not verified then  -- wrk 4's check of the script (script_verify_request): never sent
    verified = true
    return req
  end
  seq = seq + 1
  local kind = req:find('"stream":true', 1, true) and "s" or "n"
  local id = slice .. "-" .. kind .. "-" .. seq
  pending[id] = string.format("%.6f", now())
  sent[kind] = sent[kind] + 1
  local eol = req:find("\r\n", 1, true)
  return req:sub(1, eol + 1) .. "X-Request-ID: " .. id .. "\r\n" .. req:sub(eol + 2)
end

local function header(headers, name)
  local v = headers[name]
  if v then return v end
  name = name:lower()
  for k, v in pairs(headers) do
    if k:lower() == name then return v end
  end
end

function response(status, headers, body)
  local id = header(headers, "X-Olla-Request-ID") or "?"
  local kind = id:match("^%d+%-(%a)%-") or "?"
  pending[id] = nil
  local what = nil
  if header(headers, "X-Mock-Stale") or status == 408 or body == "STALE" then
    what = "mixed"    -- bytes a backend wrote on an idle connection, served to this request
  elseif status ~= 200 then
    what = "status"
  elseif kind == "s" then
    if body:sub(-14) ~= "data: [DONE]\n\n" then what = "stream-without-DONE" end
  elseif not body:find('"finish_reason":"stop"', 1, true) then
    what = "incomplete-body"
  end
  local key = kind .. " " .. status .. (what and what ~= "status" and (" " .. what) or "")
  counts[key] = (counts[key] or 0) + 1
  if what and #bad < 200 then
    -- A status's body says who refused and why: its first 160 bytes, on one line.
    local said = what == "status" and (" " .. body:sub(1, 160):gsub("%s+", " ")) or ""
    bad[#bad + 1] = string.format("%s %d %s %.6f %s%s", id, status,
      header(headers, "X-Olla-Endpoint") or "-", now(), what, said)
  end
end

function done(summary, latency, requests)
  if base_done then base_done(summary, latency, requests) end
  io.write(string.format("SOAK end %.6f\n", now()))
  for _, t in ipairs(threads) do
    local s = t:get("sent")
    io.write(string.format("SOAK sent s %d\nSOAK sent n %d\n", s.s, s.n))
    for k, n in pairs(t:get("counts")) do io.write("SOAK count " .. k .. " " .. n .. "\n") end
    for id, at in pairs(t:get("pending")) do
      io.write("SOAK pending " .. id .. " " .. at .. "\n")
    end
    for _, line in ipairs(t:get("bad")) do io.write("SOAK bad " .. line .. "\n") end
  end
end
"""


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spawn(argv, logpath, env=None):
    """A process in its own process group (stopped by stop_all), output to `logpath`."""
    with PROCS_LOCK:
        if SHUTDOWN.is_set():
            raise RuntimeError("shutting down")
        with open(logpath, "a") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        PROCS.append(proc)
    return proc


def stop_all():
    with PROCS_LOCK:
        SHUTDOWN.set()
        procs = list(PROCS)
    for proc in reversed(procs):
        if proc.poll() is not None:
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=5)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                pass


def http_get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- processes

class Mock:
    def __init__(self, tmp, bindir, name):
        self.tmp, self.bindir, self.name = tmp, bindir, name
        self.port, self.proc = 0, None
        self.log = f"{tmp}/{name}.log"
        self.retired = Counter()    # /mock/stats of earlier incarnations, read before kills
        self.kills = []             # (killed at, restarted at or None)
        self.restart_failures = []

    def start(self):
        """Starts the mock (on its old port after a kill); returns once it listens."""
        for attempt in range(50):
            offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
            proc = spawn([f"{self.bindir}/ringway-mock", "--listen",
                          f"127.0.0.1:{self.port}", "--name", self.name], self.log)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with open(self.log) as f:
                    f.seek(offset)
                    m = re.search(r"listening on [\d.]+:(\d+)", f.read())
                if m:
                    self.port, self.proc = int(m.group(1)), proc
                    return time.monotonic()
                if proc.poll() is not None:
                    break
                time.sleep(0.01)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with open(self.log) as f:
                f.seek(offset)
                self.restart_failures.append(f.read().strip()[-200:])
            if not self.port:
                break
            time.sleep(0.1)         # the port is taken for now (TIME_WAIT, a client): retry
        raise RuntimeError(f"{self.name} could not start on port {self.port}: "
                           f"{self.restart_failures[-1:]}")

    def stats(self):
        try:
            status, body = http_get(self.port, "/mock/stats", timeout=2)
            return json.loads(body) if status == 200 else None
        except (OSError, ValueError):
            return None

    def kill(self, book):
        s = self.stats()
        if s:
            self.retired.update({k: v for k, v in s.items() if isinstance(v, int)})
        t = time.monotonic()
        # In the book before the signal: a client that sees its stream cut at once must
        # find the kill there (filed after `wait`, a loaded machine let clients judge
        # their cut streams first, and call them unexpected).
        book.killed(self.name, t)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills.append([t, None])
        return t


class Ringway:
    def __init__(self, tmp, bindir, shards, mocks):
        self.tmp, self.log = tmp, f"{tmp}/ringway.log"
        endpoints = "".join(f'[[endpoints]]\nname = "{m.name}"\n'
                            f'url = "http://127.0.0.1:{m.port}"\ntype = "ollama"\n'
                            for m in mocks)
        for attempt in range(5):
            self.port = free_port()
            config = f"{tmp}/ringway.toml"
            with open(config, "w") as f:
                f.write(f'[server]\nlisten = "127.0.0.1:{self.port}"\nshards = {shards}\n'
                        f'[log]\nlevel = "warn"\naccess = "off"\n{endpoints}')
            self.proc = spawn([f"{bindir}/ringway", "--config", config], self.log)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    status, body = http_get(self.port, "/internal/status/endpoints", timeout=1)
                    names = {e.get("name") for e in json.loads(body)["endpoints"]}
                    if status == 200 and names == {m.name for m in mocks}:
                        return          # ours, not someone else's on a reused port
                except (OSError, ValueError, KeyError, TypeError):
                    pass
                time.sleep(0.05)
            if self.proc.poll() is None:
                raise RuntimeError(f"ringway not ready within 10 s:\n{read(self.log)}")
            log(f"ringway exited at start (port {self.port} taken?), retrying:\n{read(self.log)}")
        raise RuntimeError("ringway did not start")

    def alive(self):
        return self.proc.poll() is None

    def sample(self):
        """(RSS in KiB, open fds, threads), or None if it is gone."""
        status = read(f"/proc/{self.proc.pid}/status")
        rss = re.search(r"VmRSS:\s+(\d+)", status)
        threads = re.search(r"Threads:\s+(\d+)", status)
        try:
            fds = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return None
        if not rss or not self.alive():
            return None
        return int(rss.group(1)), fds, int(threads.group(1)) if threads else 0


# ---------------------------------------------------------------- bookkeeping

class Book:
    """Counters and errors from every client thread, and the backend kills."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.errors = []            # (time, source, what, detail), unexpected
        self.expected = []          # (time, source, what, detail), streams cut by a kill
        self.kills = []             # (endpoint name, killed at)
        self.unlisted = 0           # unexpected errors counted but not listed one by one
        self.t0 = time.monotonic()

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def peak(self, key, value):
        with self.lock:
            self.counts[key] = max(self.counts[key], value)

    def error(self, source, what, detail=""):
        with self.lock:
            self.counts[f"{source} unexpected"] += 1
            self.errors.append((time.monotonic(), source, what, detail))

    def cut(self, source, detail, at=None):
        with self.lock:
            self.counts[f"{source} cut by kill"] += 1
            self.expected.append((at or time.monotonic(), source, "cut by kill", detail))

    def killed(self, name, at):
        with self.lock:
            self.kills.append((name, at))

    def killed_during(self, name, start, end):
        with self.lock:
            return any(n == name and start - 0.05 <= k <= end + 0.05 for n, k in self.kills)

    def kill_after(self, sent, window):
        with self.lock:
            return next((n for n, k in self.kills if sent - 0.05 <= k <= sent + window), None)


class Resp:
    def __init__(self):
        self.status, self.headers, self.body = None, {}, bytearray()
        self.complete, self.error, self.chunks = False, None, 0
        self.sent = self.end = self.rid = None

    def header(self, name):
        return self.headers.get(name.lower())

    def describe(self):
        return (f"status {self.status}, endpoint {self.header('x-olla-endpoint') or '-'}, "
                f"{len(self.body)} body bytes, {self.chunks} chunks, error {self.error}")


class Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            if len(self.buf) > 1 << 20:
                raise ValueError("line too long")
            self.fill()

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def read_response(reader, first_chunk_only=False):
    """Reads one response; never raises: a transport or framing failure is in .error."""
    r = Resp()
    try:
        line = reader.line()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"bad status line {line[:80]!r}")
        r.status = int(parts[1])
        while True:
            line = reader.line()
            if not line:
                break
            name, _, value = line.partition(b":")
            r.headers[name.strip().lower().decode()] = value.strip().decode(errors="replace")
        if "chunked" in (r.header("transfer-encoding") or "").lower():
            while True:
                size = int(reader.line().split(b";")[0], 16)
                if size == 0:
                    while reader.line():
                        pass
                    r.complete = True
                    break
                r.body += reader.exact(size)
                if reader.exact(2) != b"\r\n":
                    raise ValueError("bad chunk framing")
                r.chunks += 1
                if first_chunk_only:
                    break
        elif r.header("content-length") is not None:
            r.body += reader.exact(int(r.header("content-length")))
            r.complete = True
        else:
            raise ValueError("response without framing")
    except (OSError, EOFError, ValueError) as e:
        r.error = f"{type(e).__name__}: {e}"
    r.end = time.monotonic()
    return r


def connect(port, timeout=30):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect_or_report(book, port, source):
    """A connection for a client thread, or None after recording the failure (and a pause
    before the thread tries again)."""
    try:
        return connect(port)
    except OSError as e:
        book.error(source, "connect failed", repr(e))
        time.sleep(0.5)
        return None


def rst_close(sock):
    """Closes with RST instead of FIN: SO_LINGER on, timeout 0."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def chat(port, rid, stream, extra):
    body = json.dumps({"model": MODEL, "stream": stream, "messages": [
        {"role": "system", "content": "You are a soak test."},
        {"role": "user", "content": f"Request {rid}: say something, {random.random()}"}]})
    body = body.encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nX-Request-ID: {rid}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            + f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode(), body


def check_stream(r, tokens):
    """None if `r` is a complete, valid stream of `tokens` tokens, else what is wrong."""
    if r.status != 200:
        return f"status {r.status}: {bytes(r.body[:200])!r}"
    body = bytes(r.body)
    if not body.endswith(b"data: [DONE]\n\n"):
        return f"200 stream not ending with data: [DONE] (ends {body[-60:]!r})"
    if body.count(b"data: ") != tokens + 2:
        return f"200 stream with {body.count(b'data: ')} events, {tokens + 2} expected"
    return None


def check_full(r):
    if r.status != 200:
        return f"status {r.status}: {bytes(r.body[:200])!r}"
    try:
        v = json.loads(r.body)
        if v["choices"][0]["finish_reason"] != "stop":
            raise ValueError("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError):
        return f"200 with an invalid body: {bytes(r.body[:200])!r}"
    return None


def mixed(r):
    """What shows that `r` is not the answer to its request (bytes a backend wrote on an
    idle connection: X-Mock-Fail: stale-response or idle-408; or another request's
    answer), or None."""
    if r.header("x-mock-stale"):
        return "X-Mock-Stale"
    if r.status == 408:
        return "status 408"
    if bytes(r.body) == b"STALE":
        return "body STALE"
    if r.rid and r.header("x-olla-request-id") not in (None, r.rid):
        return f"the answer to {r.header('x-olla-request-id')}"
    return None


def judge(book, source, r, bad, reused=False):
    """Files a finished request: ok, cut by a kill (expected) or unexpected."""
    wrong = mixed(r)
    if wrong:
        book.count("mixed")
        book.error(source, "mixed answer", f"{wrong}: {r.rid or ''} {r.describe()}"
                   + (" (reused keep-alive connection)" if reused else ""))
        return False
    if r.complete and bad is None:
        book.count(f"{source} ok")
        return True
    endpoint = r.header("x-olla-endpoint")
    rid = r.header("x-olla-request-id") or r.rid
    if (not r.complete and r.status == 200 and endpoint
            and book.killed_during(endpoint, r.sent, r.end)):
        book.cut(source, f"{rid}: {endpoint} killed mid-stream after {r.chunks} chunks")
        return False
    what = bad if r.complete else ("no response" if r.status is None else "truncated")
    book.error(source, what, f"{rid or ''} {r.describe()}"
               + (" (reused keep-alive connection)" if reused else "")
               + f", {r.end - r.sent:.3f} s after sending")
    return False


# ---------------------------------------------------------------- clients

def guarded(book, name, fn):
    """Runs a client loop; a bug in it is reported, not silently lost."""
    def run():
        while not STOP.is_set():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - the driver's own failure
                book.count("driver exceptions")
                log(f"{name}: driver exception {type(e).__name__}: {e}")
                time.sleep(0.5)
    return threading.Thread(target=run, name=name, daemon=True)


def keepalive_client(book, port, source, ident, make):
    """Requests back to back on a keep-alive connection (a new one after any failure);
    `make(rid)` gives (extra headers, stream?, check) with check(response) -> None if
    good, else what is wrong."""
    seq = [0]

    def loop():
        sock, reader, used = None, None, False
        try:
            while not STOP.is_set():
                seq[0] += 1
                rid = f"py-{source}-{ident}-{seq[0]}"
                extra, stream, check = make(rid)
                head, body = chat(port, rid, stream, extra)
                book.count(f"{source} sent")
                sent = time.monotonic()
                r = Resp()
                try:
                    if sock is None:
                        used = False
                        sock = connect(port)
                        reader = Reader(sock)
                    sock.sendall(head + body)
                except OSError as e:
                    r.error, r.end = f"connect or send: {e!r}", time.monotonic()
                else:
                    r = read_response(reader)
                r.sent, r.rid = sent, rid
                ok = judge(book, source, r, check(r) if r.complete else None, reused=used)
                used = True
                if sock and (not ok or (r.header("connection") or "").lower() == "close"):
                    sock.close()
                    sock = None
                if not ok and r.status is None:
                    time.sleep(0.1)
        finally:
            if sock:
                sock.close()
    return guarded(book, f"{source}-{ident}", loop)


def stream_client(book, port, ident):
    """Streams of 10-40 tokens lasting 0.2-2 s."""
    def make(rid):
        tokens = random.randint(10, 40)
        delay = max(1, round(random.uniform(0.2, 2.0) * 1000 / tokens))
        return ({"X-Mock-Tokens": tokens, "X-Mock-Token-Delay-Ms": delay}, True,
                lambda r: check_stream(r, tokens))
    return keepalive_client(book, port, "stream", ident, make)


def nonstream_client(book, port, ident, stale_share, idle_408_share):
    """Non-streamed completions the mock answers after 0-300 ms; some make it write on
    the idle connection afterwards (a stale response, or a 408 and a close)."""
    def make(rid):
        time.sleep(random.uniform(0, 0.05))
        extra = {"X-Mock-First-Token-Delay-Ms": random.randint(0, 300)}
        x = random.random()
        fail = ("stale-response" if x < stale_share
                else "idle-408" if x < stale_share + idle_408_share else None)
        if fail:
            extra["X-Mock-Fail"] = fail
            book.count(f"nonstream {fail}")
        return extra, False, check_full
    return keepalive_client(book, port, "nonstream", ident, make)


JUNK = b"JUNK" * (1 << 18)      # 1 MiB without a line end


def writer_client(book, port, ident, limit):
    """Streams of 2 s on a new connection each, on which a second thread writes 1 MiB
    blocks of junk as fast as the socket takes them until the stream has ended."""
    seq = [0]
    tokens = 40

    def once():
        seq[0] += 1
        rid = f"py-writer-{ident}-{seq[0]}"
        head, body = chat(port, rid, True, {"X-Mock-Tokens": tokens,
                                            "X-Mock-Token-Delay-Ms": 50})
        book.count("writer sent")
        sock = connect_or_report(book, port, "writer")
        if sock is None:
            return
        done = threading.Event()
        pushed = [0]

        def push():
            while not done.is_set():
                try:
                    if select.select([], [sock], [], 0.05)[1]:
                        pushed[0] += sock.send(JUNK)
                except OSError:
                    return              # ringway closed (it may, once the stream is done)
        pusher = threading.Thread(target=push, name=f"writer-{ident}-push", daemon=True)
        try:
            sent = time.monotonic()
            r = Resp()
            try:
                sock.sendall(head + body)
            except OSError as e:
                r.error, r.end = f"send: {e!r}", time.monotonic()
            else:
                pusher.start()
                reader = Reader(sock)
                r = read_response(reader)
                done.set()
                pusher.join()
            r.sent, r.rid = sent, rid
            book.count("writer bytes", pushed[0])
            book.peak("writer max bytes", pushed[0])
            if pushed[0] > limit:
                book.error("writer", "client's writes not held back",
                           f"{rid}: {pushed[0]:,} bytes written during a 2 s stream")
            ok = judge(book, "writer", r, check_stream(r, tokens) if r.complete else None)
            if ok:
                junk_answer(book, rid, sock, reader)
        finally:
            done.set()
            sock.close()
    return guarded(book, f"writer-{ident}", once)


def junk_answer(book, rid, sock, reader):
    """What the junk a writer sent got after its stream: a 4xx or a close are right."""
    sock.settimeout(5)
    r = read_response(reader)       # no r.rid: the junk had no X-Request-ID
    wrong = mixed(r)
    if wrong:
        book.count("mixed")
        book.error("writer", "mixed answer to the junk", f"{wrong}: {rid} {r.describe()}")
    elif r.status is not None and 400 <= r.status < 500:
        book.count(f"writer junk {r.status}")
    elif r.status is None and r.error and "timed out" not in r.error:
        book.count("writer junk closed")
    else:
        book.error("writer", "junk after the stream neither refused nor closed within 5 s",
                   f"{rid} {r.describe()}")


DISCONNECTS = ("stream-first-chunk-rst", "stream-first-chunk-close", "before-first-token-close",
               "waiting-for-head-rst", "waiting-for-head-close", "partial-head-rst",
               "partial-head-close", "partial-body-close", "idle-close")


def disconnect_client(book, port, ident):
    seq = [0]

    def once():
        seq[0] += 1
        rid = f"py-early-{ident}-{seq[0]}"
        variant = random.choice(DISCONNECTS)
        try:
            sock = connect(port, timeout=10)
        except OSError as e:
            book.error("disconnect", "connect failed", repr(e))
            return
        try:
            misbehave(book, port, rid, variant, sock)
        except OSError as e:
            book.error("disconnect", f"{variant}: transport error before disconnecting",
                       f"{rid} {e!r}")
        if variant.endswith("rst"):
            rst_close(sock)
        else:
            sock.close()
        book.count(f"disconnect {variant}")
        book.count("disconnect performed")
        time.sleep(random.uniform(0.05, 0.3))
    return guarded(book, f"disconnect-{ident}", once)


def misbehave(book, port, rid, variant, sock):
    """The part of an early-disconnect request before the disconnect."""
    if variant.startswith("stream-first-chunk"):
        head, body = chat(port, rid, True, {"X-Mock-Tokens": 50, "X-Mock-Token-Delay-Ms": 20})
        sent = time.monotonic()
        sock.sendall(head + body)
        r = read_response(Reader(sock), first_chunk_only=True)
        r.sent, r.rid = sent, rid
        if mixed(r):
            book.count("mixed")
            book.error("disconnect", "mixed answer", f"{mixed(r)}: {rid} {r.describe()}")
        elif r.status == 200 and r.chunks >= 1:
            pass                                # the disconnect below is the test
        elif (r.status == 200 and r.header("x-olla-endpoint")
              and book.killed_during(r.header("x-olla-endpoint"), r.sent, r.end)):
            book.cut("disconnect", f"{rid}: {r.header('x-olla-endpoint')} killed "
                     "before the first chunk")
        else:
            book.error("disconnect", "no first chunk", f"{rid} {r.describe()}")
    elif variant == "before-first-token-close":
        # The mock sends a stream's head at once, then waits 300 ms for the first token.
        head, body = chat(port, rid, True, {"X-Mock-Tokens": 20,
                                            "X-Mock-First-Token-Delay-Ms": 300,
                                            "X-Mock-Token-Delay-Ms": 10})
        sock.sendall(head + body)
        time.sleep(random.uniform(0, 0.2))
    elif variant.startswith("waiting-for-head"):
        # The mock never answers (a prefill that takes forever): ringway must notice the
        # client leave and drop the upstream connection, or it stays open (until
        # proxy.response_timeout_ms), which the end-of-run fd and open-connection counts show.
        head, body = chat(port, rid, False, {"X-Mock-Fail": "hang"})
        sock.sendall(head + body)
        time.sleep(random.uniform(0.05, 0.3))
    elif variant.startswith("partial-head"):
        head, _ = chat(port, rid, False, {})
        sock.sendall(head[:random.randint(1, len(head) - 5)])
        time.sleep(random.uniform(0, 0.3))
    elif variant == "partial-body-close":
        head, body = chat(port, rid, False, {})
        sock.sendall(head + body[:len(body) // 2])
        time.sleep(random.uniform(0, 0.3))
    else:
        time.sleep(random.uniform(0, 1.0))


def slow_client(book, port, ident, seconds):
    seq = [0]

    def once():
        seq[0] += 1
        rid = f"py-slow-{ident}-{seq[0]}"
        stream = random.random() < 0.5
        tokens = 10
        extra = {"X-Mock-Tokens": tokens, "X-Mock-Token-Delay-Ms": 20} if stream else {}
        head, body = chat(port, rid, stream, extra)
        data = head + body
        pieces = 15
        step = max(1, len(data) // pieces + 1)
        book.count("slow sent")
        sock = connect_or_report(book, port, "slow")
        if sock is None:
            return
        try:
            try:
                for i in range(0, len(data), step):
                    sock.sendall(data[i:i + step])
                    if i + step < len(data):
                        time.sleep(seconds / pieces)
                sent = time.monotonic()
            except OSError as e:
                book.error("slow", "send failed", f"{rid} {e!r}")
                return
            r = read_response(Reader(sock))
            r.sent, r.rid = sent, rid
            bad = None
            if r.complete:
                bad = check_stream(r, tokens) if stream else check_full(r)
            judge(book, "slow", r, bad)
        finally:
            sock.close()
    return guarded(book, f"slow-{ident}", once)


# ---------------------------------------------------------------- flapping, sampling, wrk

def flapper(book, mocks, every, down_for, started_at):
    """Kills one backend every `every` seconds (in turn), restarting it `down_for` later;
    the cycle in progress completes even when the load stops."""
    def run():
        try:
            cycle()
        except Exception as e:  # noqa: BLE001 - reported, and the report says so
            log(f"flapper failed: {type(e).__name__}: {e}")
            book.error("flapper", "driver exception", f"{type(e).__name__}: {e}")

    def cycle():
        i = 0
        next_kill = started_at + every
        while not STOP.wait(max(0.0, next_kill - time.monotonic())):
            m = mocks[i % len(mocks)]
            i += 1
            t = m.kill(book)
            log(f"killed {m.name} (port {m.port})")
            if SHUTDOWN.wait(max(0.0, t + down_for - time.monotonic())):
                return
            try:
                m.kills[-1][1] = m.start()
                log(f"restarted {m.name}")
            except RuntimeError as e:
                if SHUTDOWN.is_set():
                    return
                log(f"RESTART FAILED: {e}")
                book.error("flapper", "restart failed", str(e))
                return
            next_kill = t + every
    return threading.Thread(target=run, name="flapper", daemon=True)


class Sampler:
    def __init__(self, ringway, every):
        self.ringway, self.every = ringway, every
        self.samples = []           # (time, phase, rss KiB, fds, threads)
        self.phase = "warm-up"
        self.died_at = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name="sampler", daemon=True)

    def take(self):
        s = self.ringway.sample()
        if s is None:
            if self.died_at is None:
                self.died_at = time.monotonic()
                log(f"RINGWAY DIED (exit status {self.ringway.proc.poll()})")
                STOP.set()
            return None
        self.samples.append((time.monotonic(), self.phase) + s)
        return s

    def run(self):
        while not self.done.wait(self.every):
            self.take()


def run_wrk(port, tmp, script, conns, seconds, slice_no):
    env = dict(os.environ, SOAK_MIXED=f"{tmp}/mixed.lua", SOAK_SLICE=str(slice_no))
    out = f"{tmp}/wrk-{slice_no}.out"
    started = time.monotonic()
    proc = spawn(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s", "-s",
                  script, f"http://127.0.0.1:{port}/"], out, env=env)
    try:
        proc.wait(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = read(out)
    res = {"slice": slice_no, "start": started, "end": time.monotonic(), "rc": proc.returncode,
           "sent": Counter(), "answers": Counter(), "pending": [], "bad": [],
           "socket": Counter(), "non2xx": 0, "raw": text}
    m = re.search(r"RESULT (.*)", text)
    if m:
        res.update({k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())})
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res["socket"] = Counter(dict(zip(("connect", "read", "write", "timeout"),
                                         map(int, m.groups()))))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non2xx"] = int(m.group(1)) if m else 0
    for line in text.splitlines():
        f = line.split()
        if not f or f[0] != "SOAK":
            continue
        if f[1] == "end":
            res["wrk_end"] = float(f[2])
        elif f[1] == "sent":
            res["sent"][f[2]] += int(f[3])
        elif f[1] == "count":
            res["answers"][" ".join(f[2:-1])] += int(f[-1])
        elif f[1] == "pending":
            res["pending"].append((float(f[3]), f[2]))
        elif f[1] == "bad":
            res["bad"].append(f[2:])
    return res


def judge_wrk(book, res, conns):
    """Files a wrk slice's answers and unanswered requests."""
    if "requests" not in res or "wrk_end" not in res:
        book.count("driver exceptions")
        book.error("wrk", "wrk output not understood (the driver's problem, or wrk's)",
                   f"slice {res['slice']}, exit status {res['rc']}: {res['raw'][:300]!r}")
    for key, n in res["answers"].items():
        kind, status, *what = key.split()
        source = {"s": "wrk stream", "n": "wrk nonstream"}.get(kind, "wrk (no request id)")
        book.count(f"{source} answered", n)
        if status == "200" and not what:
            book.count(f"{source} ok", n)
        else:
            book.count(f"{source} unexpected", n)
        if what == ["mixed"]:
            book.count("mixed", n)
            book.count("wrk mixed", n)
    listed = 0
    for b in res["bad"]:
        rid, status, endpoint, at, what = (b + ["?"] * 5)[:5]
        said = f", body: {' '.join(b[5:])}" if len(b) > 5 else ""
        kind = ("wrk stream" if "-s-" in rid else "wrk nonstream" if "-n-" in rid
                else "wrk (no request id)")
        listed += 1
        with book.lock:
            book.errors.append((float(at) if at != "?" else res["end"], kind, what,
                                f"{rid}: status {status}, endpoint {endpoint}{said}"))
    failed = sum(n for key, n in res["answers"].items() if key.split()[1:] != ["200"])
    if failed > listed:
        with book.lock:
            book.errors.append((res["end"], "wrk", "failed answers not listed",
                                f"slice {res['slice']}: {failed - listed} more"))
            book.unlisted += failed - listed - 1
    # wrk keeps one request outstanding per connection and abandons it on a socket error
    # (it then sends a new one on a new connection), so of the requests never answered the
    # newest (at most one per connection) were in flight when wrk stopped, and the others,
    # as many as wrk counted read and write errors, were abandoned; so were any sent more
    # than 2 s before wrk stopped (this workload answers in milliseconds).
    s = res["socket"]
    pending = sorted(res["pending"])
    abandoned = s["read"] + s["write"]
    old = sum(1 for at, _ in pending if at < res.get("wrk_end", res["end"]) - 2.0)
    n = min(len(pending), max(abandoned, old, len(pending) - conns))
    unanswered, in_flight = pending[:n], pending[n:]
    for _, rid in in_flight:
        book.count("wrk stream in flight" if "-s-" in rid else "wrk nonstream in flight")
    for at, rid in unanswered:
        source = "wrk stream" if "-s-" in rid else "wrk nonstream"
        book.count(f"{source} unanswered")
        killed = book.kill_after(at, 1.0)
        if source == "wrk stream" and killed:
            book.cut(source, f"{rid}: no answer; {killed} was killed "
                     f"{book_kill_delay(book, killed, at):.3f} s after it was sent", at=at)
        else:
            book.error(source, "no answer (socket error or stuck)",
                       f"{rid}: sent at {at - book.t0:.3f} s"
                       + (f", {killed} killed soon after" if killed else ""))
    res["unanswered"] = len(unanswered)
    res["in_flight"] = len(in_flight)
    if abandoned > len(pending):
        book.error("wrk", "socket errors not matched to an unanswered request",
                   f"slice {res['slice']}: read {s['read']} + write {s['write']}, "
                   f"unanswered {len(pending)}")
    if s["connect"]:
        book.error("wrk", "connect errors", f"slice {res['slice']}: {s['connect']}")
    if s["timeout"]:
        book.error("wrk", "timeouts (30 s)", f"slice {res['slice']}: {s['timeout']}")


def book_kill_delay(book, name, at):
    with book.lock:
        return min(k - at for n, k in book.kills if n == name and k >= at - 0.05)


# ---------------------------------------------------------------- main

def setup(args):
    if not shutil.which("wrk"):
        log("installing wrk")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)
    if not args.no_build:
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p",
                        "ringway-mock"], cwd=ROOT, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, help="seconds of load (default 600; quick 60)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 60 s, wrk slices of 15 s, a flap every 10 s, 2 s down")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--wrk-connections", type=int, default=16)
    ap.add_argument("--wrk-slice", type=float, help="seconds per wrk run (default 30)")
    ap.add_argument("--streams", type=int, default=4, help="streaming client threads")
    ap.add_argument("--nonstream", type=int, default=2, help="non-streamed client threads")
    ap.add_argument("--stale-share", type=float, default=0.0,
                    help="share of non-streamed requests with X-Mock-Fail: stale-response")
    ap.add_argument("--idle-408-share", type=float, default=0.02,
                    help="share of non-streamed requests with X-Mock-Fail: idle-408")
    ap.add_argument("--writers", type=int, default=2,
                    help="threads streaming while they write junk on the same connection")
    ap.add_argument("--writer-limit-mib", type=float, default=64,
                    help="MiB a writer may get written during one stream")
    ap.add_argument("--disconnectors", type=int, default=2, help="early-disconnect threads")
    ap.add_argument("--slow", type=int, default=2, help="slow client threads")
    ap.add_argument("--slow-seconds", type=float, default=3.0,
                    help="time a slow client takes to send its request")
    ap.add_argument("--flap-every", type=float, help="seconds between kills (default 20)")
    ap.add_argument("--down-for", type=float, help="seconds a killed backend stays down "
                    "(default 3)")
    ap.add_argument("--sample-every", type=float, default=2.0)
    ap.add_argument("--quiet", type=float, default=7.0,
                    help="idle seconds before the start and end measurements")
    ap.add_argument("--fd-slack", type=int, default=4,
                    help="fds ringway may hold at the end beyond those at the start")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-build", action="store_true", help="use the binaries in target/release")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--plot", metavar="PATH", help="also draw RSS and open files into PATH (PNG)")
    args = ap.parse_args()
    quick = dict(duration=60, wrk_slice=15, flap_every=10, down_for=2)
    full = dict(duration=600, wrk_slice=30, flap_every=20, down_for=3)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.down_for >= args.flap_every:
        ap.error("--down-for must be shorter than --flap-every")
    random.seed(args.seed)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    setup(args)
    tmp = tempfile.mkdtemp(prefix="ringway-soak-")
    for name in ("ringway", "ringway-mock"):     # private copies: rebuilds change nothing
        shutil.copy2(f"{ROOT}/target/release/{name}", f"{tmp}/{name}")
    for name in os.listdir(f"{ROOT}/tools/wrk"):  # mixed.lua and what it loads
        if name.endswith(".lua"):
            shutil.copy2(f"{ROOT}/tools/wrk/{name}", f"{tmp}/{name}")
    with open(f"{tmp}/soak.lua", "w") as f:
        f.write(WRAPPER)
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    code = 2
    try:
        code = soak(args, tmp, commit)
    except KeyboardInterrupt as e:
        log(f"interrupted ({str(e) or 'Ctrl-C'}), stopping everything")
        code = 130
    finally:
        STOP.set()
        stop_all()
        if args.keep:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)


def soak(args, tmp, commit):
    book = Book()
    mocks = [Mock(tmp, tmp, name) for name in NAMES]
    for m in mocks:
        m.start()
    ringway = Ringway(tmp, tmp, args.shards, mocks)
    port = ringway.port
    try:
        version = json.loads(http_get(port, "/version")[1])
    except (OSError, ValueError):
        version = {}
    log(f"ringway on 127.0.0.1:{port} (pid {ringway.proc.pid}), mocks on "
        + ", ".join(f"{m.name}:{m.port}" for m in mocks) + f"; temp dir {tmp}")
    sampler = Sampler(ringway, args.sample_every)
    sampler.thread.start()

    # Warm-up: a little of everything wrk sends, then idle until the pools are reaped.
    script = f"{tmp}/soak.lua"
    warm = run_wrk(port, tmp, script, args.wrk_connections, 3 if args.quick else 5, 0)
    if "wrk_end" not in warm:
        raise RuntimeError(f"wrk with {script} failed:\n{warm['raw']}")
    log(f"warm-up: {warm.get('requests', '?')} wrk requests; idle {args.quiet:g} s")
    time.sleep(args.quiet)
    start = sampler.take()
    sampler.phase = "load"

    book.t0 = started = time.monotonic()
    end_at = started + args.duration
    threads = ([stream_client(book, port, i) for i in range(args.streams)]
               + [nonstream_client(book, port, i, args.stale_share, args.idle_408_share)
                  for i in range(args.nonstream)]
               + [writer_client(book, port, i, args.writer_limit_mib * (1 << 20))
                  for i in range(args.writers)]
               + [disconnect_client(book, port, i) for i in range(args.disconnectors)]
               + [slow_client(book, port, i, args.slow_seconds) for i in range(args.slow)])
    for t in threads:
        t.start()
    flap = flapper(book, mocks, args.flap_every, args.down_for, started)
    flap.start()
    slices = []
    n = 0
    while not STOP.is_set():
        left = end_at - time.monotonic()
        if left < 1:
            break
        n += 1
        seconds = max(1, round(min(args.wrk_slice, left)))
        res = run_wrk(port, tmp, script, args.wrk_connections, seconds, n)
        judge_wrk(book, res, args.wrk_connections)
        slices.append(res)
        sample = sampler.samples[-1] if sampler.samples else None
        log(f"slice {n}: {res.get('requests', '?')} wrk requests, {res['non2xx']} non-2xx, "
            f"socket errors {dict(res['socket']) or 0}; totals: "
            + ", ".join(f"{k} {book.counts[k]}" for k in
                        ("stream ok", "stream cut by kill", "nonstream ok", "writer ok",
                         "disconnect performed", "slow ok", "mixed"))
            + f", unexpected {len(book.errors)}"
            + (f"; ringway RSS {sample[2] / 1024:.1f} MB, {sample[3]} fds" if sample else ""))
    STOP.set()
    load_seconds = time.monotonic() - started
    log("load stopped; waiting for the clients and the flapper")
    for t in threads:
        t.join(timeout=40)
    flap.join(timeout=args.down_for + 20)
    alive_after_load = ringway.alive()
    sampler.phase = "quiet"
    log(f"idle {args.quiet:g} s")
    time.sleep(args.quiet)
    end = sampler.take()
    sampler.done.set()

    mock_stats = {}
    for m in mocks:
        s = m.stats() or {}
        total = Counter(m.retired)
        total.update({k: v for k, v in s.items() if isinstance(v, int)})
        # Minus one: the connection asking for the stats is open too.
        open_now = s.get("open_connections")
        mock_stats[m.name] = (total, open_now - 1 if isinstance(open_now, int) else "?")
    metrics, endpoints = {}, []
    if ringway.alive():
        try:
            metrics = parse_metrics(http_get(port, "/internal/metrics")[1].decode())
            endpoints = json.loads(http_get(port, "/internal/status/endpoints")[1])["endpoints"]
        except (OSError, ValueError, KeyError) as e:
            book.error("end", "ringway status pages failed", repr(e))
    # A clean stop: SIGTERM, exit 0.
    stop_status = None
    if ringway.alive():
        ringway.proc.send_signal(signal.SIGTERM)
        try:
            stop_status = ringway.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            stop_status = "still running 40 s after SIGTERM"
    else:
        stop_status = f"had died (exit status {ringway.proc.returncode})"
    ringlog = read(ringway.log)
    if args.plot:
        plot(args, book, sampler, load_seconds)
    return report(args, commit, version, book, mocks, slices, sampler, start, end,
                  load_seconds, mock_stats, metrics, endpoints, alive_after_load, stop_status,
                  ringlog)


def plot(args, book, sampler, load_seconds):
    """RSS and open files of ringway over the load (tools/bench/plot.py)."""
    import plot as charts
    samples = [x for x in sampler.samples if x[1] != "warm-up"]
    if not samples:
        return
    data = {
        "t": [x[0] - book.t0 for x in samples],
        "rss_mb": [x[2] / 1024 for x in samples],
        "fds": [x[3] for x in samples],
        "kills": [k - book.t0 for _, k in book.kills],
        "title": f"Soak: ringway's memory and open files, {load_seconds / 60:.0f} min of mixed "
                 f"load, a backend killed every {args.flap_every:g} s",
        "machine": machine(),
        "note": f"tools/bench/soak.py: {args.shards} shard(s), 3 mocks; VmRSS and "
                f"/proc/PID/fd every {args.sample_every:g} s",
    }
    charts.save("soak", data, args.plot)


def parse_metrics(text):
    out = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def metric_sum(metrics, prefix, where=""):
    return sum(v for k, v in metrics.items()
               if (k == prefix or k.startswith(prefix + "{")) and where in k)


def mb(kib):
    return f"{kib / 1024:.1f} MB"


def report(args, commit, version, book, mocks, slices, sampler, start, end, load_seconds,
           mock_stats, metrics, endpoints, alive_after_load, stop_status, ringlog):
    c = book.counts
    died = sampler.died_at is not None or not alive_after_load
    print(f"## ringway soak test ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"- {machine()}")
    print(f"- ringway {version.get('version', '?')} ({version.get('driver', '?')} driver), "
          f"commit {commit}")
    print(f"- settings: {args.shards} shard(s), 3 ringway-mock backends (sticky sessions on, "
          f"least-connections, other options at their defaults); wrk -t1 "
          f"-c{args.wrk_connections} mixed.lua in {args.wrk_slice:g} s slices; "
          f"{args.streams} stream, {args.nonstream} non-streamed ({args.stale_share:.0%} "
          f"X-Mock-Fail: stale-response, {args.idle_408_share:.0%} idle-408), {args.writers} "
          f"writing-while-streamed, {args.disconnectors} "
          f"early-disconnect and {args.slow} slow client threads; a backend SIGKILLed every "
          f"{args.flap_every:g} s, down {args.down_for:g} s")
    print(f"- load: {load_seconds:.0f} s (asked {args.duration:g} s), {len(slices)} wrk "
          f"slice(s); {len(book.kills)} backend kill(s)")

    print("\n### Requests\n")
    print("| client | requests | good | cut by a backend kill (expected) | unexpected errors "
          "| in flight when the load stopped |")
    print("|---|---|---|---|---|---|")
    wrk_sent = sum((s["sent"] for s in slices), Counter())
    for label, key, sent in (("wrk, non-streamed", "wrk nonstream", wrk_sent["n"]),
                             ("wrk, streamed", "wrk stream", wrk_sent["s"]),
                             ("Python streams", "stream", c["stream sent"]),
                             ("Python non-streamed", "nonstream", c["nonstream sent"]),
                             ("writing while streamed", "writer", c["writer sent"]),
                             ("slow clients", "slow", c["slow sent"])):
        print(f"| {label} | {sent:,} | {c[key + ' ok']:,} | {c[key + ' cut by kill']:,} | "
              f"{c[key + ' unexpected']:,} | {c[key + ' in flight']:,} |")
    in_flight = c["wrk stream in flight"] + c["wrk nonstream in flight"]
    print(f"\nwrk: {sum(s.get('requests', 0) for s in slices):,} answers, "
          f"{sum(s['non2xx'] for s in slices)} non-2xx, socket errors "
          f"{dict(sum((s['socket'] for s in slices), Counter())) or 'none'}; "
          f"{c['wrk stream unanswered'] + c['wrk nonstream unanswered']} requests got no answer "
          f"({c['wrk stream unanswered']} streamed, {c['wrk nonstream unanswered']} "
          f"non-streamed); {in_flight} were in flight when a slice ended (wrk stops without "
          "waiting for them: not errors).")
    print(f"\nEarly disconnects performed: {c['disconnect performed']:,} ("
          + ", ".join(f"{v} {c['disconnect ' + v]}" for v in DISCONNECTS) + ")"
          + (f"; unexpected: {c['disconnect unexpected']}" if c["disconnect unexpected"] else "")
          + (f"; cut by a kill before the first chunk: {c['disconnect cut by kill']}"
             if c["disconnect cut by kill"] else ""))
    junk = sorted(k for k in c if k.startswith("writer junk "))
    print(f"\nWriting while streamed: {c['writer sent']:,} streams, each with 1 MiB junk "
          f"blocks written on its connection until it ended: **at most "
          f"{c['writer max bytes'] / (1 << 20):.1f} MiB written during one stream** (limit "
          f"{args.writer_limit_mib:g} MiB; mean "
          f"{c['writer bytes'] / max(c['writer sent'], 1) / (1 << 20):.1f} MiB); the junk "
          "afterwards got: " + (", ".join(f"{k[len('writer junk '):]} x{c[k]:,}" for k in junk)
                                or "nothing judged") + ".")
    print(f"\nBackend writes on idle connections: {c['nonstream stale-response']:,} requests "
          f"with X-Mock-Fail: stale-response, {c['nonstream idle-408']:,} with idle-408; "
          f"**stale bytes or a 408 served to a client: {c['mixed']:,}** (wrk {c['wrk mixed']:,})"
          " (must be 0).")
    if c["driver exceptions"]:
        print(f"\n**The driver itself raised {c['driver exceptions']} exception(s), see stderr.**")

    print("\n### Errors\n")
    errors = sorted(book.errors)
    n_errors = len(errors) + book.unlisted
    if errors:
        by = Counter((src, what) for _, src, what, _ in errors)
        print(f"**{n_errors} unexpected error(s)**: "
              + "; ".join(f"{src}: {what} x{n}" for (src, what), n in by.items()) + "\n")
        # The first 30, and the first of each kind beyond them (a rare kind is not hidden
        # behind a common one).
        shown = errors[:30]
        kinds = {(src, what) for _, src, what, _ in shown}
        for e in errors[30:]:
            if (e[1], e[2]) not in kinds:
                kinds.add((e[1], e[2]))
                shown.append(e)
        for t, src, what, detail in shown:
            print(f"- {t - book.t0:8.3f} s  {src}: {what}: {detail}")
        if len(errors) > len(shown):
            print(f"- ... {len(errors) - len(shown)} more")
    else:
        print("No unexpected errors.")
    if book.expected:
        print(f"\n{len(book.expected)} stream(s) cut because their backend was SIGKILLed "
              "during them (expected):")
        for t, src, what, detail in sorted(book.expected)[:10]:
            print(f"- {t - book.t0:8.3f} s  {src}: {detail}")
        if len(book.expected) > 10:
            print(f"- ... {len(book.expected) - 10} more")

    print("\n### Backend kills\n")
    for m in mocks:
        times = ", ".join(f"{k - book.t0:.1f}" + (f"->{r - k:.2f}" if r else " (not restarted)")
                          for k, r in m.kills)
        print(f"- {m.name}: {len(m.kills)} kill(s) at [s since load start -> s down]: "
              f"{times or 'none'}" + (f"; {len(m.restart_failures)} failed restart attempt(s)"
                                      if m.restart_failures else ""))

    print("\n### ringway resources\n")
    samples = [s for s in sampler.samples if s[1] != "warm-up"]
    print("| | start (idle, after warm-up) | max | end (idle, after the load) | change |")
    print("|---|---|---|---|---|")
    fd_growth = None
    if start and samples:
        for i, label, fmt in ((0, "RSS", mb), (1, "open fds", str), (2, "threads", str)):
            top = max(s[2 + i] for s in samples)
            if end:
                diff = end[i] - start[i]
                change = (f"{diff / 1024:+.1f} MB ({diff / start[i] * 100:+.0f}%)" if i == 0
                          else f"{diff:+d}")
            print(f"| {label} | {fmt(start[i])} | {fmt(top)} | "
                  + (f"{fmt(end[i])} | {change} |" if end else "(died) | |"))
        if end:
            fd_growth = end[1] - start[1]
            rss_growth = end[0] - start[0]
    else:
        print("| (no samples: ringway died) | | | | |")
    if len(slices) > 1:
        print("\nPer wrk slice (ringway sampled at the slice's end):\n")
        print("| slice | s since load start | wrk requests/s | p99 | unanswered | non-2xx "
              "| kills | RSS | fds |")
        print("|---|---|---|---|---|---|---|---|---|")
        for s in slices:
            near = min(sampler.samples, key=lambda x: abs(x[0] - s["end"]), default=None)
            kills = sum(1 for _, k in book.kills if s["start"] <= k <= s["end"])
            rps = s.get("requests", 0) / max(s.get("duration_us", 1) / 1e6, 1e-9)
            print(f"| {s['slice']} | {s['start'] - book.t0:.0f}-{s['end'] - book.t0:.0f} | "
                  f"{rps:,.0f} | {s.get('p99_us', 0) / 1000:.1f} ms | {s['unanswered']} | "
                  f"{s['non2xx']} | {kills} | {mb(near[2]) if near else '?'} | "
                  f"{near[3] if near else '?'} |")

    print("\n### Backends and ringway counters\n")
    tot = sum((t for t, _ in mock_stats.values()), Counter())
    print(f"- mocks (/mock/stats, summed over restarts): {tot['requests']:,} requests, "
          f"{tot['completed_streams']:,} completed streams, **{tot['aborted_streams']:,} "
          f"aborted streams**, {tot['connections_accepted']:,} connections accepted; "
          f"open connections at the end (besides the stats request's own): "
          + ", ".join(f"{n} {o}" for n, (_, o) in mock_stats.items()))
    left = (c["disconnect stream-first-chunk-rst"] + c["disconnect stream-first-chunk-close"]
            + c["disconnect before-first-token-close"])
    print(f"  Clients left {left} streams early (after the first chunk, or before the first "
          "token); ringway should drop each upstream connection, which the mock "
          "counts as an aborted stream, so aborted streams should be about that many (a "
          "few more from wrk streams in flight when a slice ended, fewer if a kill came first)"
          + ("" if tot["aborted_streams"] >= left * 0.9 else
             f". **Only {tot['aborted_streams']}: ringway seems to keep some upstream streams "
             "going after their client left.**"))
    hung = c["disconnect waiting-for-head-rst"] + c["disconnect waiting-for-head-close"]
    print(f"  {hung} clients left while their backend had not answered at all (X-Mock-Fail: "
          "hang): each upstream connection must be closed, so the open connections above and "
          "ringway's fds at the end should be back to where they started.")
    if metrics:
        print(f"- ringway /internal/metrics: {metric_sum(metrics, 'ringway_requests_total'):,.0f} "
              f"requests, 5xx {metric_sum(metrics, 'ringway_errors_total', '5xx'):,.0f}, 4xx "
              f"{metric_sum(metrics, 'ringway_errors_total', '4xx'):,.0f}, failovers "
              f"{metric_sum(metrics, 'ringway_failovers_total'):,.0f}, retries "
              f"{metric_sum(metrics, 'ringway_retries_total'):,.0f}, upstream connect errors "
              f"{metric_sum(metrics, 'ringway_upstream_connect_errors_total'):,.0f}; "
              f"in flight at the end: {metric_sum(metrics, 'ringway_in_flight'):,.0f}")
        by_status = Counter()
        for k, v in metrics.items():
            if k.startswith("ringway_responses_total{") and 'status="' in k:
                by_status[k.split('status="')[1].split('"')[0]] += v
        if by_status:
            print("  responses by status: " + ", ".join(f"{k} {v:,.0f}"
                                                       for k, v in sorted(by_status.items())))
    if endpoints:
        print("- endpoints at the end: " + ", ".join(f"{e.get('name')} {e.get('status')}"
                                                    for e in endpoints))
    lines = [re.sub(r"^\d{4}-\d\d-\d\dT\S+\s+", "", l) for l in ringlog.splitlines() if l.strip()]
    grouped = Counter(lines)
    error_lines = [l for l in lines if l.startswith("ERROR") or "panic" in l]
    print(f"- ringway log (warn level): {len(lines)} line(s)" + (", grouped:" if lines else ""))
    for line, k in grouped.most_common(12):
        print(f"  - {k} x `{line[:200]}`")
    if len(grouped) > 12:
        print(f"  - ... {len(grouped) - 12} more distinct lines")
    print(f"- ringway after SIGTERM: {'exit 0' if stop_status == 0 else stop_status}")

    in_flight_end = metric_sum(metrics, "ringway_in_flight") if metrics else 0
    problems = []
    if died:
        problems.append("ringway DIED during the run")
    if stop_status != 0:
        problems.append(f"ringway did not stop cleanly ({stop_status})")
    if n_errors:
        problems.append(f"{n_errors} unexpected error(s)")
    if fd_growth is not None and fd_growth > args.fd_slack:
        problems.append(f"fds grew by {fd_growth} (more than --fd-slack {args.fd_slack})")
    if error_lines:
        problems.append(f"ringway logged {len(error_lines)} ERROR/panic line(s)")
    still_open = sum(o for _, o in mock_stats.values() if isinstance(o, int))
    if still_open:
        problems.append(f"the mocks still have {still_open} connection(s) open when idle")
    if in_flight_end:
        problems.append(f"ringway counts {in_flight_end:.0f} request(s) in flight when idle")
    growth = (f"RSS {mb(start[0])} -> {mb(end[0])} ({rss_growth / 1024:+.1f} MB, max "
              f"{mb(max(s[2] for s in samples))}), fds {start[1]} -> {end[1]} ({fd_growth:+d})"
              if start and end and samples else "no resource samples")
    verdict = "FAIL: " + "; ".join(problems) if problems else "PASS"
    print(f"\n**Verdict: {verdict}.** {growth}; {len(book.expected)} stream(s) cut by kills "
          f"(expected).")
    return 1 if problems else 0


if __name__ == "__main__":
    main()
