#!/usr/bin/env bash
# Quick overhead check: the same wrk load straight to a zero-delay mock backend and
# through ringway, alternating ROUNDS times in one run; prints the medians and ratios,
# ringway's CPU time per request (utime+stime from /proc/PID/stat over its runs, divided by
# the requests served) and its resident memory after the runs. For nginx and HAProxy side by
# side, see tools/bench/compare.py.
#
#   tools/bench/quick.sh                 # 32 connections, 10 s per run, 3 rounds
#   CONNS=64 DURATION=5s ROUNDS=5 SHARDS=1 tools/bench/quick.sh
#
# Everything listens on 127.0.0.1 with ports chosen by the OS and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
SHARDS=${SHARDS:-1}
SCRIPT=${SCRIPT:-tools/wrk/openai-chat.lua}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p ringway -p ringway-mock

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Waits for "listening on ADDR" in a log file and prints ADDR.
addr_from() {
    for _ in $(seq 100); do
        a=$(grep -o 'listening on [0-9.:]*' "$1" | head -1 | awk '{print $3}')
        [ -n "$a" ] && { echo "$a"; return; }
        sleep 0.05
    done
    echo "no listening line in $1" >&2; cat "$1" >&2; exit 1
}

target/release/ringway-mock --listen 127.0.0.1:0 --name mock >"$work/mock.log" 2>&1 &
pids+=($!)
mock=$(addr_from "$work/mock.log")
cat >"$work/ringway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
shards = $SHARDS
[log]
level = "warn"
[[endpoints]]
name = "mock"
url = "http://$mock"
type = "ollama"
TOML
target/release/ringway --config "$work/ringway.toml" --log-level info >"$work/ringway.log" 2>&1 &
pids+=($!)
ringway_pid=$!
proxy=$(addr_from "$work/ringway.log")

# CPU time (user + system, clock ticks) a process has used: fields 14 and 15 of its stat.
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

run() { # label url [pid] -> "rps p50_us p99_us errors cpu_us_per_request"
    before=$([ -n "${3:-}" ] && ticks "$3" || echo 0)
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$SCRIPT" "http://$2" | grep '^RESULT')
    after=$([ -n "${3:-}" ] && ticks "$3" || echo 0)
    eval "${out#RESULT }"
    awk -v r="$requests" -v d="$duration_us" -v p50="$p50_us" -v p99="$p99_us" -v e="$errors" \
        -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.0f %d %d %d %.1f\n", r / (d / 1e6), p50, p99, e, t / hz * 1e6 / r }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

: >"$work/direct" ; : >"$work/ringway"
for i in $(seq "$ROUNDS"); do
    run direct "$mock" >>"$work/direct"
    run ringway "$proxy" "$ringway_pid" >>"$work/ringway"
done

col() { awk -v c="$2" '{ print $c }' "$work/$1" | median; }
d_rps=$(col direct 1); r_rps=$(col ringway 1)
d_p50=$(col direct 2); r_p50=$(col ringway 2)
d_p99=$(col direct 3); r_p99=$(col ringway 3)
r_cpu=$(col ringway 5)
r_rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$ringway_pid/status")
errs=$(awk '{ s += $4 } END { print s }' "$work/direct" "$work/ringway")

echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs, kernel $(uname -r)"
echo "load: wrk -t1 -c$CONNS -d$DURATION -s $SCRIPT; ringway $SHARDS shard(s); medians of $ROUNDS alternating rounds"
echo
echo "| path | requests/s | p50 | p99 |"
echo "|---|---|---|---|"
printf '| direct to mock | %s | %s us | %s us |\n' "$d_rps" "$d_p50" "$d_p99"
printf '| through ringway | %s | %s us | %s us |\n' "$r_rps" "$r_p50" "$r_p99"
awk -v a="$r_rps" -v b="$d_rps" -v p="$r_p50" -v q="$d_p50" 'BEGIN {
    printf "\nringway/direct: throughput %.2fx, p50 +%d us\n", a / b, p - q }'
echo "ringway CPU per request: $r_cpu us (median); resident memory after the runs: $r_rss MB"
echo "errors (all runs): $errs"
