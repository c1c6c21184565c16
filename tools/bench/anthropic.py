#!/usr/bin/env python3
"""Messages API benchmark: what Anthropic translation and passthrough cost ringway, side by
side with a plain OpenAI stream, in one run.

    tools/bench/anthropic.py                       # 32-chunk streams, 5 rounds x 150 requests
    tools/bench/anthropic.py --tokens 128 --rounds 3 --requests 100

Two ringway-mock backends behind one ringway (one shard, defaults otherwise): an
`openai`-type endpoint serving `m-translate` and an `ollama`-type one serving `m-native`.
The three request kinds, each a streamed answer of --tokens chunks:

  openai       POST /v1/chat/completions, model m-translate: relayed as received
  translated   POST /v1/messages,         model m-translate: Anthropic -> OpenAI request,
               the OpenAI SSE translated back event by event
  passthrough  POST /v1/messages,         model m-native: forwarded unchanged to the
               mock's own /v1/messages (X-Olla-Mode: passthrough)

Each round runs --requests requests of every kind, one kind after another, one request at
a time on a keep-alive connection, and reads ringway's CPU time (all threads, from
/proc/PID/task/*/schedstat, in ns) around each kind: CPU per request is that time over
the requests. Time to first token (TTFT) is from sending the request to the arrival of
the first bytes carrying text, found by a byte scan (no JSON parsing in the client, so
its own cost does not differ between the shapes). The mocks stream without delays, so the run measures the proxy's own work.
Medians over rounds are reported, and the translation's extra CPU per streamed chunk
((translated - openai) / chunks) and extra TTFT. The streams are checked: every answer
ends properly (`[DONE]` / `message_stop`) with the expected number of text chunks.

Standard library only; builds the release binaries with cargo unless --no-build.
Everything listens on 127.0.0.1 and is stopped on exit.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

from common import ROOT, drain, machine, port_of, read, wait_for_line

KINDS = ["openai", "translated", "passthrough"]
# The ringway binary: $RINGWAY_BIN (a profiling build, say), else the release build.
RINGWAY_BIN = os.environ.get("RINGWAY_BIN", f"{ROOT}/target/release/ringway")


class Fleet:
    def __init__(self, args):
        self.args, self.procs = args, []

    def start(self):
        ports = {}
        for name, model in [("openai", "m-translate"), ("native", "m-native")]:
            cmd = [f"{ROOT}/target/release/ringway-mock", "--listen", "127.0.0.1:0",
                   "--name", name, "--models", model, "--tokens", str(self.args.tokens),
                   "--token-delay-ms", str(self.args.token_delay_ms)]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.procs.append(p)
            ports[name] = port_of(wait_for_line(p, "listening on"))
            drain(p)
        config = f"/tmp/ringway-anthropic-bench-{os.getpid()}.toml"
        with open(config, "w") as f:
            f.write('[server]\nlisten = "127.0.0.1:0"\nshards = 1\n[log]\nlevel = "warn"\n'
                    f'[[endpoints]]\nname = "openai"\nurl = "http://127.0.0.1:{ports["openai"]}"\n'
                    'type = "openai"\n'
                    f'[[endpoints]]\nname = "native"\nurl = "http://127.0.0.1:{ports["native"]}"\n'
                    'type = "ollama"\n')
        rw = subprocess.Popen([RINGWAY_BIN, "--config", config,
                               "--log-level", "info"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(rw)
        self.port = port_of(wait_for_line(rw, "listening on"))
        self.pid = rw.pid
        drain(rw)
        os.unlink(config)
        # Until both endpoints are checked and their models listed.
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/v1/models")
                ids = {m["id"] for m in json.loads(c.getresponse().read())["data"]}
                if {"m-translate", "m-native"} <= ids:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the endpoints did not come up")

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def request_of(kind):
    messages = [{"role": "user", "content": "Tell me a story about a proxy."}]
    if kind == "openai":
        return "/v1/chat/completions", {"model": "m-translate", "stream": True,
                                        "messages": messages}
    model = "m-translate" if kind == "translated" else "m-native"
    return "/v1/messages", {"model": model, "max_tokens": 1024, "stream": True,
                            "system": "You are brief.", "messages": messages}


# The first bytes that carry text, the end of the stream, one text chunk: scanned for in
# the raw bytes (no JSON parsing), so the client's own cost does not depend on the shape.
FIRST_TEXT = {"openai": re.compile(rb'"content":"[^"]'), "anthropic": re.compile(rb'"text_delta"')}
END = {"openai": b"data: [DONE]", "anthropic": b"event: message_stop"}


def stream_one(sock, kind):
    """One streamed request on `sock` (keep-alive); returns (ttft seconds, text chunks,
    X-Olla-Mode or None)."""
    path, body = request_of(kind)
    data = json.dumps(body).encode()
    extra = b"" if kind == "openai" else b"x-api-key: bench\r\nanthropic-version: 2023-06-01\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n").encode() + extra + b"\r\n"
    shape = "openai" if kind == "openai" else "anthropic"
    first, end = FIRST_TEXT[shape], END[shape]
    sent = time.perf_counter()
    sock.sendall(head + data)
    buf, ttft = b"", None
    while True:
        got = sock.recv(65536)
        if not got:
            raise RuntimeError(f"{kind}: ringway closed the connection")
        buf += got
        if ttft is None and first.search(buf):
            ttft = time.perf_counter() - sent
        if buf.endswith(b"\r\n0\r\n\r\n") and end in buf:
            break
    header_end = buf.index(b"\r\n\r\n")
    status = buf[9:12]
    if status != b"200":
        raise RuntimeError(f"{kind}: HTTP {status!r}: {buf[:300]!r}")
    mode = None
    for line in buf[:header_end].split(b"\r\n"):
        if line.lower().startswith(b"x-olla-mode:"):
            mode = line.split(b":", 1)[1].strip().decode()
    chunks = len(first.findall(buf, header_end))
    return ttft, chunks, mode


def cpu_ns(pid):
    """The process's CPU time so far, all threads, in nanoseconds (schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        stat = read(f"/proc/{pid}/task/{task}/schedstat").split()
        total += int(stat[0]) if stat else 0
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32, help="chunks per streamed answer")
    ap.add_argument("--token-delay-ms", type=int, default=1,
                    help="the mocks' delay between chunks: each chunk then arrives, and is "
                         "translated and written, on its own, as from a real server")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=150, help="per kind per round")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p", "ringway-mock"],
                       cwd=ROOT, check=True)
    fleet = Fleet(args).start()
    results = {k: {"cpu_us": [], "ttft_us": []} for k in KINDS}
    try:
        conns = {}
        for k in KINDS:
            conns[k] = socket.create_connection(("127.0.0.1", fleet.port), timeout=30)
            conns[k].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for kind in KINDS:  # warm-up; also checks each kind's mode
            for _ in range(20):
                _, chunks, mode = stream_one(conns[kind], kind)
            want = "passthrough" if kind == "passthrough" else None
            if mode != want or chunks < args.tokens // 2:
                raise RuntimeError(f"{kind}: X-Olla-Mode {mode!r}, {chunks} chunks")
        for _ in range(args.rounds):
            for kind in KINDS:
                ttfts, before = [], cpu_ns(fleet.pid)
                for _ in range(args.requests):
                    ttft, chunks, _ = stream_one(conns[kind], kind)
                    if chunks != args.tokens:
                        raise RuntimeError(f"{kind}: {chunks} chunks, not {args.tokens}")
                    ttfts.append(ttft)
                cpu = cpu_ns(fleet.pid) - before
                results[kind]["cpu_us"].append(cpu / args.requests / 1e3)
                results[kind]["ttft_us"].append(statistics.median(ttfts) * 1e6)
    finally:
        fleet.stop()

    med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
    print(f"# Messages API: translation and passthrough vs plain OpenAI through ringway\n")
    print(machine())
    print(f"{args.tokens}-chunk streams ({args.token_delay_ms} ms apart), {args.rounds} rounds x "
          f"{args.requests} requests per kind, "
          "one at a time, keep-alive; medians over rounds. CPU = ringway's CPU time per "
          "request, all threads (/proc/PID/task/*/schedstat, ns).\n")
    print("| kind | CPU per request (µs) | vs openai | median TTFT (µs) | TTFT vs openai (µs) |")
    print("|---|---:|---:|---:|---:|")
    base = med["openai"]
    for k in KINDS:
        m = med[k]
        print(f"| {k} | {m['cpu_us']:.0f} | {m['cpu_us'] / base['cpu_us']:.2f}x | "
              f"{m['ttft_us']:.0f} | {m['ttft_us'] - base['ttft_us']:+.0f} |")
    extra = (med["translated"]["cpu_us"] - base["cpu_us"]) / args.tokens
    print(f"\ntranslation's extra CPU per streamed chunk: {extra:.2f} µs (target ≤ 10 µs); "
          f"extra TTFT: {med['translated']['ttft_us'] - base['ttft_us']:+.0f} µs (target ≤ 50 µs)")
    print("per-round CPU per request (µs): " + "; ".join(
        f"{k} " + ", ".join(f"{x:.0f}" for x in results[k]["cpu_us"]) for k in KINDS))


if __name__ == "__main__":
    sys.exit(main())
