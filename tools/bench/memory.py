#!/usr/bin/env python3
"""Idle resident memory of ringway, broken down by what is mapped (from /proc/PID/smaps).

    tools/bench/memory.py                         # target/release/ringway, default config
    tools/bench/memory.py --shards 1 --runs 5
    tools/bench/memory.py --mocks --late          # two live ringway-mock endpoints; +30 s
    tools/bench/memory.py --bin target/x86_64-unknown-linux-gnu/release/ringway  # static

Starts ringway (with no config: the embedded default, whose four endpoints are not running
here, so the health checker probes them and fails; --mocks: two ringway-mock backends
instead), reads VmRSS and /proc/PID/smaps 2 s after start (and 30 s, --late), stops it, and
prints the median over --runs of each part:

  bin text / rodata / relro / data   the mapped binary (file pages count as soon as the
                                     kernel maps them: the cached pages of a 64 KiB window
                                     around each faulting page)
  libc, ld.so, libgcc_s, vdso        shared libraries (none in a static build)
  io_uring rings                     SQ/CQ rings and SQE arrays: resident in full at mmap
  mimalloc arena                     the allocator's arena(s): its bookkeeping, and the
                                     pages of each size class each thread has used
  stack <thread>                     touched part of each thread's stack
  other anon                         .bss-like anonymous maps, glibc malloc arenas, TLS

File-backed figures vary by up to ~150 KiB between runs with the page cache's state; the
anonymous ones do not. It listens on 127.0.0.1:24114 (below the ephemeral port range, so a
benchmark's client sockets cannot hold it) unless --listen is given.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time

from common import ROOT


def smaps(pid):
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perms": m[3],
                       "path": m[4].strip(), "f": {}}
                maps.append(cur)
            else:
                key, _, value = line.partition(":")
                value = value.split()
                if value and value[0].isdigit():
                    cur["f"][key] = int(value[0])
    return maps


def stack_pointers(pid):
    """Thread name -> its stack pointer (read while the thread sleeps in a syscall)."""
    sps = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        for _ in range(100):
            try:
                name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                fields = open(f"/proc/{pid}/task/{tid}/syscall").read().split()
            except OSError:
                break
            if fields and fields[0] != "running":
                sps[name] = int(fields[-2], 16)
                break
            time.sleep(0.001)
    return sps


def breakdown(pid, binary):
    sps = stack_pointers(pid)
    parts = {}
    for m in smaps(pid):
        rss, path = m["f"].get("Rss", 0), m["path"]
        threads = [n for n, sp in sps.items() if m["start"] <= sp < m["end"]]
        if os.path.basename(path) == os.path.basename(binary):
            part = {"r-xp": "bin text", "rw-p": "bin data"}.get(m["perms"], "bin rodata")
            if m["perms"] == "r--p" and m["f"].get("Anonymous", 0):
                part = "bin relro"
        elif path.startswith("/") and ".so" in path:
            part = next((p for p in ("libc", "ld-linux", "libgcc_s") if p in path), "other .so")
        elif path in ("[vdso]", "[vvar]", "[vvar_vclock]"):
            part = "vdso"
        elif "io_uring" in path:
            part = "io_uring rings"
        elif threads or path == "[stack]":
            part = "stack " + (",".join(threads) or "main")
        elif m["end"] - m["start"] >= 32 << 20 and m["perms"] == "rw-p":
            part = "mimalloc arena"
        else:
            part = "other anon"
        parts[part] = parts.get(part, 0) + rss
    with open(f"/proc/{pid}/status") as f:
        vmrss = int(re.search(r"VmRSS:\s+(\d+)", f.read())[1])
    return vmrss, parts


def start_mocks(mock):
    procs, ports = [], []
    for name in ("a", "b"):
        p = subprocess.Popen([mock, "--listen", "127.0.0.1:0", "--name", name],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        line = p.stdout.readline()
        while "listening on" not in line:
            line = p.stdout.readline()
        ports.append(int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]))
    return procs, ports


def run_once(args, tmp):
    mocks, argv = [], [args.bin, "--listen", args.listen]
    if args.mocks:
        mocks, ports = start_mocks(args.mock)
        config = f"{tmp}/ringway.toml"
        with open(config, "w") as f:
            for name, port in zip("ab", ports):
                f.write(f'[[endpoints]]\nname = "mock-{name}"\n'
                        f'url = "http://127.0.0.1:{port}"\ntype = "ollama"\n')
        argv += ["--config", config]
    if args.shards is not None:
        argv += ["--shards", str(args.shards)]
    log = open(f"{tmp}/ringway.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    out = {}
    try:
        time.sleep(2)
        if proc.poll() is not None:
            raise RuntimeError(open(f"{tmp}/ringway.log").read())
        out["2 s"] = breakdown(proc.pid, args.bin)
        if args.late:
            time.sleep(28)
            out["30 s"] = breakdown(proc.pid, args.bin)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for m in mocks:
            m.terminate()
            m.wait()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=f"{ROOT}/target/release/ringway")
    ap.add_argument("--mock", default=f"{ROOT}/target/release/ringway-mock")
    ap.add_argument("--shards", type=int, help="--shards for ringway (default: its config's)")
    ap.add_argument("--mocks", action="store_true", help="two live ringway-mock endpoints")
    ap.add_argument("--late", action="store_true", help="also read 30 s after start")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--listen", default="127.0.0.1:24114")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_once(args, tmp) for _ in range(args.runs)]
    for when in results[0]:
        rss = [r[when][0] for r in results]
        print(f"{when}: VmRSS median {statistics.median(rss):.0f} KiB  (runs: {rss})")
        names = sorted({k for r in results for k in r[when][1]})
        for name in names:
            values = [r[when][1].get(name, 0) for r in results]
            if any(values):
                print(f"    {name:24s} {statistics.median(values):6.0f} KiB  {values}")


if __name__ == "__main__":
    main()
