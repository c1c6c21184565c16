#!/usr/bin/env python3
"""Sticky-routing benchmark: multi-turn conversations through ringway to mock backends
that simulate a prefix KV cache (`ringway-mock --kv-cache`), round-robin vs sticky.

    tools/bench/sticky.py                          # 2 backends, 2k/8k/16k/32k, 5 x 10 turns
    tools/bench/sticky.py --backends 4
    tools/bench/sticky.py --scale 0.1 --contexts 2k,8k --turns 4   # quick look
    tools/bench/sticky.py --plot docs/sticky.png   # also the chart (tools/bench/plot.py)

A mock's time to first token is base + per-token cost x the prompt tokens it does not
already hold in its own cache, so a turn routed to the backend that served the previous
turn only prefills the new tokens. Each mode gets fresh mocks (cold caches) and its own
ringway: "round-robin" = balancer round-robin, sticky sessions off; "sticky" = sticky on,
the default least-connections balancer.

Every conversation shares one system prompt (~500 tokens); turn 1 sends a distinct
document of about the context size (seeded per conversation, so runs repeat) and a
question; each later turn resends the conversation so far, the previous answer exactly as
streamed, and a short new question. Conversations run one after another (a fresh
connection per request; `--concurrent` runs those of one context size at once), through
a one-shard ringway by default, so that round-robin alternates backends turn by turn as
it does for a single client; context sizes one after another. Time to first token (TTFT) is measured from sending the request to the first SSE
event with non-empty content.

Prints markdown: turn-2 TTFT per context and mode next to the seed figures (real Ollama
nodes), medians over turns 2..N and of turn 1, sticky hit rate and the spread of the
conversations over the backends, and every failed request. --plot PATH also draws turn-2
TTFT by context size, round-robin vs sticky, into PATH (a PNG; its data beside it as
.json). Standard library only (the chart: tools/bench/plot.py); builds
the release binaries with cargo. Everything listens on 127.0.0.1 and is stopped on exit.
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
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, drain, machine, port_of, stream_chat, wait_for_line  # noqa: E402

MODEL = "llama3.2:latest"
CONTEXTS = {"2k": 2048, "8k": 8192, "16k": 16384, "32k": 32768}
# Turn-2 TTFT in ms, round-robin vs sticky, measured on real Ollama nodes.
SEED = {"2k": (2177, 912), "8k": (3446, 1628), "16k": (4814, 1694), "32k": (8126, 1072)}
WORDS = ("cache prefix token model layer tensor shard router backend session latency "
         "stream decode prefill kernel batch queue memory vector matrix weight buffer "
         "request answer context window replica cluster node gpu block page hash key "
         "value ring proxy socket packet thread core budget metric sample trace").split()
QUESTIONS = ["Summarise the main points of the document above in three sentences.",
             "Which part of it matters most for latency, and why? Be specific.",
             "Now list the assumptions it makes and say which one is the weakest.",
             "Rewrite the second paragraph for an audience of new engineers, briefly.",
             "What would you measure first to check the claims it makes about caching?"]







def text(rng, tokens):
    """About `tokens` tokens (4 characters each) of pseudo-random words."""
    out, n = [], 0
    while n < tokens * 4:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def get_json(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else f"status {resp.status}"
    finally:
        conn.close()


class Stack:
    """N kv-cache mocks and a ringway in front of them, configured for one mode."""

    def __init__(self, args, mode):
        self.procs = []
        self.args, self.mode = args, mode

    def start(self):
        a = self.args
        ports = []
        for i in range(a.backends):
            cmd = [f"{ROOT}/target/release/ringway-mock", "--listen", "127.0.0.1:0",
                   "--name", f"gpu-{i}", "--kv-cache",
                   "--prefill-base-ms", str(a.prefill_base_ms),
                   "--prefill-us-per-token", str(round(250 * a.scale))]
            if a.kv_cache_tokens:
                cmd += ["--kv-cache-tokens", str(a.kv_cache_tokens)]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.procs.append(p)
            ports.append(port_of(wait_for_line(p, "listening on")))
            drain(p)
        sticky = self.mode == "sticky"
        config = f"/tmp/ringway-sticky-{os.getpid()}-{self.mode}.toml"
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:0"\nshards = {a.shards}\n'
                    f'[log]\nlevel = "warn"\n'
                    f'[proxy]\nbalancer = "{"least-connections" if sticky else "round-robin"}"\n'
                    f'[sticky]\nenabled = {"true" if sticky else "false"}\n')
            for i, port in enumerate(ports):
                f.write(f'[[endpoints]]\nname = "gpu-{i}"\nurl = "http://127.0.0.1:{port}"\n'
                        f'type = "ollama"\n')
        rw = subprocess.Popen([f"{ROOT}/target/release/ringway", "--config", config,
                               "--log-level", "info"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(rw)
        self.port = port_of(wait_for_line(rw, "listening on"))
        drain(rw)
        os.unlink(config)
        return self

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def chat(port, messages):
    """One streamed chat completion. Returns a record of the turn and the answer text."""
    return stream_chat(port, {"model": MODEL, "stream": True, "messages": messages},
                       (("endpoint", "X-Olla-Endpoint"), ("sticky", "X-Olla-Sticky-Session"),
                        ("source", "X-Olla-Sticky-Key-Source"),
                        ("cached", "X-Mock-Cached-Tokens"), ("prompt", "X-Mock-Prompt-Tokens"),
                        ("prefill", "X-Mock-Prefill-Ms")))


def conversation(port, system, idx, ctx_name, tokens, turns, out):
    rng = random.Random(f"{ctx_name}-{idx}")
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": text(rng, tokens) + "\n\n" + QUESTIONS[0]}]
    for turn in range(1, turns + 1):
        if turn > 1:
            # ~30 tokens: a question plus a few words to keep each turn distinct.
            q = rng.choice(QUESTIONS[1:]) + " (" + text(rng, 12) + ")"
            messages.append({"role": "user", "content": q})
        rec, answer = chat(port, messages)
        rec["turn"] = turn
        out.append(rec)
        if rec["error"]:
            break
        messages.append({"role": "assistant", "content": answer})


def run_mode(args, mode, system):
    """Returns {context: [conversation records]} and ringway's sticky stats."""
    results = {}
    stack = Stack(args, mode)
    try:
        stack.start()
        for ctx in args.contexts:
            started = time.monotonic()
            convs = [[] for _ in range(args.conversations)]
            threads = [threading.Thread(target=conversation, daemon=True,
                                        args=(stack.port, system, i, ctx, CONTEXTS[ctx],
                                              args.turns, convs[i]))
                       for i in range(args.conversations)]
            if args.concurrent:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                # One conversation after another: round-robin then alternates backends
                # turn by turn, as it does for a single client, instead of depending on
                # how concurrent conversations interleave.
                for t in threads:
                    t.start()
                    t.join()
            results[ctx] = convs
            print(f"{mode} {ctx}: turn 1 {fmt(ttft(convs, 1, 1))}, turn 2 {fmt(ttft(convs, 2, 2))}, "
                  f"turns 2..{args.turns} {fmt(ttft(convs, 2, args.turns))} "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
        stats = get_json(stack.port, "/internal/stats/sticky") if mode == "sticky" else None
    finally:
        stack.stop()
    return results, stats


def ttft(convs, first, last):
    values = [r["ttft"] for c in convs for r in c
              if first <= r["turn"] <= last and r["ttft"] is not None and not r["error"]]
    return statistics.median(values) if values else None


def fmt(ms):
    return "n/a" if ms is None else f"{ms:,.0f} ms"


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.1f}x"


def spread(convs, backends):
    """Conversations per backend (by turn 1) and requests per backend."""
    firsts = Counter(c[0]["endpoint"] for c in convs if c)
    reqs = Counter(r["endpoint"] for c in convs for r in c)
    names = [f"gpu-{i}" for i in range(backends)]
    return ("/".join(str(firsts.get(n, 0)) for n in names),
            "/".join(str(reqs.get(n, 0)) for n in names))


def report(args, results, stats, elapsed):
    last = args.turns
    print(f"\n{machine()}")
    print(f"load: {args.backends} kv-cache mocks ({args.prefill_base_ms} ms + "
          f"{round(250 * args.scale)} us/token not cached"
          f"{f', cache {args.kv_cache_tokens:,} tokens' if args.kv_cache_tokens else ''}), "
          f"{args.conversations} conversations x {args.turns} turns per context, "
          f"shared ~500-token system prompt, ringway shards {args.shards or 'auto'}; "
          f"{elapsed:.0f} s in all\n")
    rr, st = results.get("round-robin", {}), results.get("sticky", {})
    note = "" if args.scale == 1 else f" (seed figures are at the real cost; this run is at --scale {args.scale:g})"
    print(f"Turn-2 time to first token, median{note}\n")
    print("| context | round-robin | sticky | speed-up | seed RR | seed sticky | seed speed-up |")
    print("|---|---|---|---|---|---|---|")
    for ctx in args.contexts:
        a, b = ttft(rr.get(ctx, []), 2, 2), ttft(st.get(ctx, []), 2, 2)
        s_rr, s_st = SEED[ctx]
        print(f"| {ctx} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {s_rr:,} ms | {s_st:,} ms | "
              f"{s_rr / s_st:.1f}x |")
    if rr:
        moved = ", ".join(f"{ctx} {sum(c[0]['endpoint'] != c[1]['endpoint'] for c in rr[ctx] if len(c) > 1)}"
                          f"/{len(rr[ctx])}" for ctx in args.contexts)
        print(f"\nround-robin turn 2 went to another backend than turn 1 for: {moved} conversations "
              f"(one that stays finds its history cached; the median lands on either side)")
    print(f"\nTime to first token, median: turn 1 and turns 2..{last}\n")
    print(f"| context | RR turn 1 | sticky turn 1 | RR turns 2..{last} | sticky turns 2..{last} | speed-up |")
    print("|---|---|---|---|---|---|")
    for ctx in args.contexts:
        a, b = ttft(rr.get(ctx, []), 2, last), ttft(st.get(ctx, []), 2, last)
        print(f"| {ctx} | {fmt(ttft(rr.get(ctx, []), 1, 1))} | {fmt(ttft(st.get(ctx, []), 1, 1))} | "
              f"{fmt(a)} | {fmt(b)} | {ratio(a, b)} |")
    print(f"\nRouting (turns 2..{last}); turn 2 moved = conversations whose turn 2 went to another "
          f"backend than turn 1; spread = conversations per backend by their turn 1, then "
          f"requests per backend (gpu-0/gpu-1/...)\n")
    print("| mode | context | sticky hits | one backend per conversation | turn 2 moved | conversations "
          "| requests | prompt tokens from cache |")
    print("|---|---|---|---|---|---|---|---|")
    failures = []
    for mode, by_ctx in results.items():
        for ctx in args.contexts:
            convs = by_ctx.get(ctx, [])
            later = [r for c in convs for r in c if r["turn"] >= 2]
            hits = sum(r["sticky"] == "hit" for r in later)
            one = sum(len({r["endpoint"] for r in c}) == 1 for c in convs if c)
            moved = sum(c[0]["endpoint"] != c[1]["endpoint"] for c in convs if len(c) > 1)
            cached = sum(int(r["cached"] or 0) for r in later)
            prompt = sum(int(r["prompt"] or 0) for r in later)
            convs_per, reqs_per = spread(convs, args.backends)
            hit_rate = f"{hits}/{len(later)} ({100 * hits / len(later):.0f}%)" if later else "n/a"
            reuse = f"{100 * cached / prompt:.0f}%" if prompt else "n/a"
            print(f"| {mode} | {ctx} | {hit_rate} | {one}/{len(convs)} | {moved}/{len(convs)} | {convs_per} | {reqs_per} | {reuse} |")
            failures += [(mode, ctx, i, r) for i, c in enumerate(convs) for r in c if r["error"]]
    sessions = Counter(r["sticky"] for by_ctx in results.values() for convs in by_ctx.values()
                       for c in convs for r in c)
    sources = Counter(r["source"] for by_ctx in results.values() for convs in by_ctx.values()
                      for c in convs for r in c)
    print(f"\nX-Olla-Sticky-Session values: {dict(sessions)}; X-Olla-Sticky-Key-Source: {dict(sources)}")
    if stats is not None:
        print(f"ringway /internal/stats/sticky after the sticky run: {json.dumps(stats)}")
    print(f"\nfailed requests: {len(failures)}")
    for mode, ctx, i, r in failures[:20]:
        print(f"  {mode} {ctx} conversation {i} turn {r['turn']}: {r['error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", type=int, default=2)
    ap.add_argument("--contexts", default="2k,8k,16k,32k", help="comma-separated, of 2k,8k,16k,32k")
    ap.add_argument("--conversations", type=int, default=5)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--modes", default="round-robin,sticky")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies the mock's prefill cost per token (1.0 = 250 us/token)")
    ap.add_argument("--prefill-base-ms", type=int, default=20)
    ap.add_argument("--kv-cache-tokens", type=int, default=None,
                    help="mock cache capacity in tokens (default: the mock's own default)")
    ap.add_argument("--shards", type=int, default=1,
                    help="ringway shards (0 = one per CPU); 1 keeps round-robin's order exact")
    ap.add_argument("--concurrent", action="store_true",
                    help="run the conversations of a context size at once (round-robin's turn 2 "
                         "then lands on turn 1's backend by chance, 1 in N backends)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build")
    ap.add_argument("--plot", metavar="PATH", help="also draw turn-2 TTFT into PATH (PNG)")
    args = ap.parse_args()
    args.contexts = [c.strip() for c in args.contexts.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for c in args.contexts:
        if c not in CONTEXTS:
            ap.error(f"unknown context {c!r}; expected some of {', '.join(CONTEXTS)}")
    for m in args.modes:
        if m not in ("round-robin", "sticky"):
            ap.error(f"unknown mode {m!r}; expected round-robin and/or sticky")
    if args.turns < 2:
        ap.error("--turns must be at least 2")

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p", "ringway-mock"],
                       cwd=ROOT, check=True)
    system = ("You are a careful assistant for a team that runs inference clusters. "
              + text(random.Random("system"), 480))
    started = time.monotonic()
    results, stats = {}, None
    for mode in args.modes:
        results[mode], s = run_mode(args, mode, system)
        stats = s if s is not None else stats
    report(args, results, stats, time.monotonic() - started)
    if args.plot:
        plot(args, results)


def plot(args, results):
    import plot as charts
    scale = "" if args.scale == 1 else f", mock prefill cost x{args.scale:g}"
    data = {
        "contexts": args.contexts,
        "modes": {mode: [ttft(results[mode].get(ctx, []), 2, 2) for ctx in args.contexts]
                  for mode in args.modes},
        "title": f"Turn-2 time to first token: round-robin vs sticky ({args.backends} backends)",
        "machine": machine(),
        "note": f"tools/bench/sticky.py: kv-cache mocks ({args.prefill_base_ms} ms + "
                f"{round(250 * args.scale)} µs per token not cached{scale}), "
                f"{args.conversations} conversations x {args.turns} turns per context; medians",
    }
    charts.save("sticky", data, args.plot)


if __name__ == "__main__":
    main()
