#!/usr/bin/env bash
# Runs Olla's client-side test scripts (test/scripts/ of github.com/thushan/olla),
# unmodified and from Olla's own checkout, against ringway in front of ringway-mock
# backends, and tabulates every check they make: passed, failed, and the failing lines.
#
#   tools/olla-scripts/run.sh [OPTIONS] [OLLA_DIR]
#
#   OLLA_DIR          Olla's checkout (also --olla-dir or $OLLA_DIR). Without one, Olla is
#                     cloned (shallow) into the work directory, when the network allows.
#   --only A,B        run only these scripts (ids as in --list)
#   --list            print the scripts and how each is run, then exit
#   --out DIR         work directory: logs, configs, summary.md, summary.json
#                     (default: a new mktemp -d under $TMPDIR, never inside the repo)
#   --venv DIR        the virtualenv for the scripts' requirements
#                     (default: $OLLA_SCRIPTS_VENV or ~/.cache/ringway/olla-scripts-venv)
#   -h, --help        this text
#
# Binaries: $RINGWAY_BIN and $RINGWAY_MOCK_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/
# release/{ringway,ringway-mock}, built with cargo (release) when missing.
#
# What it does, all on 127.0.0.1:
#  1. checks curl, jq, bc, python3, timeout, ss, base64, awk (apt-get installs what is
#     missing when run as root) and installs the scripts' requirements.txt into the
#     virtualenv, outside the repository;
#  2. starts six ringway-mock backends on free ports, one per kind ringway routes to:
#     Ollama x2, vLLM, LM Studio, llama.cpp, OpenAI-compatible. The mock speaks every
#     API; the kind is the `type` ringway's config gives it. Each serves phi4:latest (the
#     model Olla's scripts look for first or hard-code) and one model of its own;
#  3. for each script, starts a fresh ringway (release) with a generated config, waits
#     until every endpoint is healthy with its models listed, runs the script with the
#     arguments or environment that point it at ringway (see --list), bounded by a
#     timeout, and stops ringway. Scripts that hard-code Olla's port 40114 (security/)
#     get ringway on 127.0.0.1:40114, with the limits they ask Olla to be started with,
#     and are skipped when that port is taken. The auth/ scripts start "Olla" themselves
#     with `go run`: shim/go stands in for go, starting ringway (on the script's own
#     Olla YAML, which ringway reads) and ringway-mock instead, on free ports passed as OLLA_PORT
#     and BACKEND_PORT;
#  4. parses each log (lib/parse.py: each script's own convention) and prints the table;
#     summary.md and summary.json are written to the work directory.
#
# Everything started is stopped on exit (trap), by PID. test/scripts/cases/ is listed but
# not run: see --list and FINDINGS.md. Exit status: 0 when the run completed, whatever
# the checks said; 1 on a setup failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/lib"

OLLA_DIR="${OLLA_DIR:-}"
ONLY=""
LIST=false
WORK=""
VENV="${OLLA_SCRIPTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ringway/olla-scripts-venv}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --olla-dir) OLLA_DIR=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --list) LIST=true; shift ;;
        --out) WORK=$2; shift 2 ;;
        --venv) VENV=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
        *) OLLA_DIR=$1; shift ;;
    esac
done

# ── the scripts ──────────────────────────────────────────────────────────────────────
# id | path under test/scripts | parser (lib/parse.py) | ringway profile | timeout (s)
# Profiles: main = ringway on a free port; rate, size = ringway on 127.0.0.1:40114 with
# the security scripts' limits; self = the script starts its own (auth/, via shim/go);
# skip = not run (reason in skip_reason).
SCRIPTS="
sticky|sticky/test-sticky-sessions.py|testresult|main|120
integration|integration/test-integration.py|testresult|main|180
passthrough|passthrough/test-passthrough.py|testresult|main|180
streaming-detection|streaming/test-streaming-detection.py|detection|main|120
streaming-latency|streaming/test-streaming-latency.py|latency|main|120
streaming-responses|streaming/test-streaming-responses.py|responses|main|180
streaming-run-all|streaming/run-all-tests.sh|exit|main|300
model-routing|logic/test-model-routing.sh|model-routing|main|180
provider-routing|logic/test-provider-routing.sh|blocks|main|120
provider-models|logic/test-provider-models.sh|blocks|main|120
routing-strategy|logic/test-model-routing-strategy.sh|marks|main|60
routing-provider|logic/test-model-routing-provider.py|routing-provider|main|180
rate-limits|security/test-request-rate-limits.sh|security|rate|120
size-limits|security/test-request-size-limits.sh|security|size|120
auth-bearer|auth/auth-bearer.sh|auth|self|90
auth-api-key|auth/auth-api-key.sh|auth|self|90
auth-basic|auth/auth-basic.sh|auth|self|90
auth-headers-only|auth/auth-headers-only.sh|auth|self|90
auth-env-fatal|auth/auth-env-fatal.sh|auth|self|60
load-limits|load/test-load-limits.sh|load|main|90
load-chaos|load/test-load-chaos.sh|chaos|main|90
cases-proxy-engine-profiles|cases/test-proxy-engine-profiles.sh|none|skip|0
cases-simple|cases/test-simple.sh|none|skip|0
cases-debug|cases/debug-test.sh|none|skip|0
cases-environment|cases/test-environment.sh|none|skip|0
cases-view-results|cases/view-test-results.sh|none|skip|0
"

skip_reason() {
    case "$1" in
        cases-proxy-engine-profiles) echo "builds Olla with go into Olla's checkout and restarts it for each of Olla's engine x profile settings (sherpa/olla x auto/standard/streaming), then runs the three streaming scripts, which run here directly" ;;
        cases-simple) echo "prints a loop over Olla's engine/profile names; talks to no server" ;;
        cases-debug) echo "prints Olla's engine/profile matrix; talks to no server" ;;
        cases-environment) echo "reports the local venv, Go toolchain and Olla config files; talks to no server" ;;
        cases-view-results) echo "pretty-prints the result folders test-proxy-engine-profiles.sh writes" ;;
    esac
}

# How each script is pointed at ringway (shown by --list; used by run_script).
describe() {
    case "$1" in
        sticky | integration | passthrough | routing-provider) echo "python SCRIPT --url \$URL" ;;
        streaming-detection) echo "python SCRIPT --url \$URL   (auto-selects phi4:latest)" ;;
        streaming-latency) echo "python SCRIPT --url \$URL --count 3 --questions <its questions.txt>" ;;
        streaming-responses) echo "python SCRIPT --url \$URL --max-time 30" ;;
        streaming-run-all) echo "TARGET_URL=\$URL ./run-all-tests.sh, from its folder, the venv's python first on PATH" ;;
        model-routing | provider-routing | provider-models) echo "TARGET_URL=\$URL SCRIPT" ;;
        routing-strategy) echo "OLLA_URL=\$URL MODEL=phi4:latest SCRIPT   (ALIAS_MODEL default; ringway has that alias)" ;;
        rate-limits) echo "SCRIPT (hard-codes localhost:40114; ringway there with per_ip 20/min, burst 3, health 60/min, X-Forwarded-For trusted from loopback)" ;;
        size-limits) echo "SCRIPT (hard-codes localhost:40114; ringway there with max_body_bytes 1 MiB, max_header_bytes 10 KiB)" ;;
        auth-*) echo "OLLA_PORT=<free> BACKEND_PORT=<free> TMPDIR=<work> PATH=shim:\$PATH SCRIPT" ;;
        load-limits) echo "SCRIPT 5 2, from a folder with .env (TARGET_URL=\$URL MODEL_NAME=phi4:latest RATE_LIMIT=0), TERM=xterm" ;;
        load-chaos) echo "SCRIPT 5 3 --chaos, from a folder with that .env; then ringway's health is checked" ;;
        *) echo "not run: $(skip_reason "$1")" ;;
    esac
}

if $LIST; then
    while IFS='|' read -r id path parser profile limit; do
        [[ -z "$id" ]] && continue
        printf '%-28s %-44s %s\n' "$id" "$path" "$(describe "$id")"
    done <<<"$SCRIPTS"
    exit 0
fi

selected() {
    [[ -z "$ONLY" ]] && return 0
    [[ ",$ONLY," == *",$1,"* ]]
}

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ── work directory, cleanup ──────────────────────────────────────────────────────────
if [[ -z "$WORK" ]]; then
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/ringway-olla-scripts.XXXXXX")"
fi
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
case "$WORK/" in "$REPO"/*) die "the work directory must be outside the repository" ;; esac
mkdir -p "$WORK/logs" "$WORK/tmp" "$WORK/cwd"
MANIFEST="$WORK/manifest.tsv"
: >"$MANIFEST"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: a process that ignores SIGTERM for 5 s is killed.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ── Olla's checkout ──────────────────────────────────────────────────────────────────
if [[ -z "$OLLA_DIR" ]]; then
    log "no OLLA_DIR: cloning https://github.com/thushan/olla into $WORK/olla"
    timeout 120 git clone -q --depth 1 https://github.com/thushan/olla "$WORK/olla" \
        || die "cannot clone Olla; pass its checkout as OLLA_DIR"
    OLLA_DIR="$WORK/olla"
fi
OLLA_DIR="$(cd "$OLLA_DIR" && pwd)"
SCRIPTS_DIR="$OLLA_DIR/test/scripts"
[[ -f "$SCRIPTS_DIR/requirements.txt" ]] || die "$OLLA_DIR has no test/scripts/requirements.txt"
case "$OLLA_DIR/" in "$REPO"/*) die "Olla's checkout must be outside ringway's repository" ;; esac

# ── tools ────────────────────────────────────────────────────────────────────────────
missing=()
for tool in curl jq bc python3 timeout ss base64 awk git; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    declare -A pkg=([curl]=curl [jq]=jq [bc]=bc [python3]="python3 python3-venv"
        [timeout]=coreutils [base64]=coreutils [ss]=iproute2 [awk]=gawk [git]=git)
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; install them (Debian: apt-get install)"
    log "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq $(for t in "${missing[@]}"; do echo "${pkg[$t]}"; done) >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating the virtualenv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"
stamp="$VENV/.olla-scripts-$(cat "$SCRIPTS_DIR/requirements.txt" | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    log "installing the scripts' requirements into $VENV"
    "$PY" -m pip install -q --disable-pip-version-check -r "$SCRIPTS_DIR/requirements.txt" \
        || die "pip install failed"
    touch "$stamp"
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
# Built (or found up to date) from this checkout unless both binaries are given: a stale
# binary would report an older ringway's gaps.
if [[ -z "${RINGWAY_BIN:-}" || -z "${RINGWAY_MOCK_BIN:-}" ]]; then
    RINGWAY_BIN="$TARGET_DIR/release/ringway"
    RINGWAY_MOCK_BIN="$TARGET_DIR/release/ringway-mock"
    log "building ringway and ringway-mock (release)"
    (cd "$REPO" && cargo build --release -q -p ringway --bin ringway && cargo build --release -q -p ringway-mock) \
        || die "cargo build failed"
fi
export RINGWAY_BIN RINGWAY_MOCK_BIN

# ── helpers ──────────────────────────────────────────────────────────────────────────
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_taken() {
    [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]
}

# The fleet: name | type | models (phi4:latest first: the scripts look for it).
FLEET="
local-ollama|ollama|phi4:latest,llama3.2:latest
local-ollama-2|ollama|phi4:latest,qwen2.5:7b
local-vllm|vllm|phi4:latest,meta-llama/Llama-3.1-8B-Instruct
local-lm-studio|lm-studio|phi4:latest,qwen2.5-7b-instruct
local-llamacpp|llamacpp|phi4:latest,gemma-3-4b-it
local-openai|openai-compatible|phi4:latest,gpt-4o-mini
"
declare -A MOCK_PORT
start_mocks() {
    local name kind models out pid port
    while IFS='|' read -r name kind models; do
        [[ -z "$name" ]] && continue
        out="$WORK/logs/mock-$name.out"
        # 20 tokens, 20 ms apart: streams look like a model's (0.4 s each).
        "$RINGWAY_MOCK_BIN" --listen 127.0.0.1:0 --name "$name" --models "$models" \
            --tokens 20 --token-delay-ms 20 >"$out" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        port=""
        for _ in $(seq 100); do
            port=$(sed -n 's/^listening on 127\.0\.0\.1://p' "$out")
            [[ -n "$port" ]] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        [[ -n "$port" ]] || die "ringway-mock $name did not start: $(cat "$out")"
        MOCK_PORT[$name]=$port
    done <<<"$FLEET"
}

# write_config PROFILE LISTEN FILE
write_config() {
    local profile=$1 listen=$2 file=$3 name kind models
    {
        echo "# ringway for Olla's scripts, profile \"$profile\" (written by tools/olla-scripts/run.sh)"
        echo "[server]"
        echo "listen = \"$listen\""
        echo "shards = 2"
        case "$profile" in
            size)
                # What the script asks Olla to be started with:
                # OLLA_SERVER_MAX_BODY_SIZE=1MB, OLLA_SERVER_MAX_HEADER_SIZE=10KB.
                echo "max_body_bytes = 1048576"
                echo "max_header_bytes = 10240"
                ;;
        esac
        echo
        echo "[health]"
        echo "check_interval_ms = 2000"
        echo
        echo "[sticky]"
        echo "enabled = true"
        echo
        echo "[routing]"
        echo "strategy = \"strict\""
        if [[ "$profile" == rate ]]; then
            # OLLA_SERVER_PER_IP_RATE_LIMIT=20, _RATE_BURST_SIZE=3, _HEALTH_RATE_LIMIT=60,
            # _GLOBAL_RATE_LIMIT=0; X-Forwarded-For trusted from loopback, for the per-IP test.
            echo
            echo "[rate_limits]"
            echo "global_requests_per_minute = 0"
            echo "per_ip_requests_per_minute = 20"
            echo "burst_size = 3"
            echo "health_requests_per_minute = 60"
            echo "trust_proxy_headers = true"
            echo "trusted_proxy_cidrs = [\"127.0.0.0/8\"]"
        fi
        echo
        echo "[model_aliases]"
        echo "# test-model-routing-strategy.sh's ALIAS_MODEL: an alias no endpoint can serve."
        echo "nonexistent-alias-target = [\"some-model-that-is-not-served-anywhere\"]"
        while IFS='|' read -r name kind models; do
            [[ -z "$name" ]] && continue
            echo
            echo "[[endpoints]]"
            echo "name = \"$name\""
            echo "url = \"http://127.0.0.1:${MOCK_PORT[$name]}\""
            echo "type = \"$kind\""
        done <<<"$FLEET"
    } >"$file"
}

RINGWAY_PID=""
URL=""
# start_ringway PROFILE LISTEN ID: starts it and waits (bounded) until every endpoint is
# healthy and lists its models.
start_ringway() {
    local profile=$1 listen=$2 id=$3 config="$WORK/ringway-$3.toml"
    local expected
    expected=$(grep -c '|' <<<"$FLEET")
    write_config "$profile" "$listen" "$config"
    "$RINGWAY_BIN" --config "$config" >"$WORK/logs/$id.ringway.log" 2>&1 &
    RINGWAY_PID=$!
    PIDS+=("$RINGWAY_PID")
    URL="http://$listen"
    local ok=false body
    for _ in $(seq 150); do
        kill -0 "$RINGWAY_PID" 2>/dev/null || break
        body=$(curl -s --max-time 1 "$URL/internal/status/endpoints" 2>/dev/null || true)
        if [[ -n "$body" ]] && jq -e --argjson n "$expected" \
            '[.endpoints[] | select(.status == "healthy" and .model_count > 0)] | length == $n' \
            >/dev/null 2>&1 <<<"$body"; then
            ok=true
            break
        fi
        sleep 0.1
    done
    $ok || die "ringway ($id) did not get ready: $(tail -5 "$WORK/logs/$id.ringway.log")"
}

stop_ringway() {
    [[ -z "$RINGWAY_PID" ]] && return 0
    kill "$RINGWAY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$RINGWAY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$RINGWAY_PID" 2>/dev/null || true
    wait "$RINGWAY_PID" 2>/dev/null || true
    RINGWAY_PID=""
}

# run_script ID PATH PROFILE LIMIT: runs one script; appends its row to the manifest.
run_script() {
    local id=$1 path=$2 profile=$3 limit=$4
    local script="$SCRIPTS_DIR/$path" logf="$WORK/logs/$id.log" checks="$WORK/logs/$id.checks.json"
    local cwd="$WORK/cwd" note="" rc=0
    local -a cmd env_extra
    env_extra=(TMPDIR="$WORK/tmp" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1)
    rm -f "$checks"
    case "$profile" in
        main) start_ringway main "127.0.0.1:$(free_port)" "$id" ;;
        rate | size)
            if port_taken 40114; then
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$path" skipped "" "" \
                    "port 40114 is taken; the script hard-codes localhost:40114" >>"$MANIFEST"
                log "$id: skipped (port 40114 in use)"
                return 0
            fi
            start_ringway "$profile" "127.0.0.1:40114" "$id"
            ;;
    esac
    case "$id" in
        sticky | integration | passthrough | routing-provider)
            cmd=("$PY" "$LIB/pyrun.py" "$checks" "$script" --url "$URL") ;;
        streaming-detection)
            cmd=("$PY" "$LIB/pyrun.py" "$checks" "$script" --url "$URL") ;;
        streaming-latency)
            cmd=("$PY" "$LIB/pyrun.py" "$checks" "$script" --url "$URL" --count 3
                --questions "$SCRIPTS_DIR/streaming/questions.txt") ;;
        streaming-responses)
            cmd=("$PY" "$LIB/pyrun.py" "$checks" "$script" --url "$URL" --max-time 30) ;;
        streaming-run-all)
            cwd="$(dirname "$script")"
            env_extra+=(TARGET_URL="$URL" PATH="$VENV/bin:$PATH")
            cmd=(bash "$script") ;;
        model-routing | provider-routing | provider-models)
            env_extra+=(TARGET_URL="$URL")
            cmd=(bash "$script") ;;
        routing-strategy)
            env_extra+=(OLLA_URL="$URL" MODEL=phi4:latest)
            cmd=(bash "$script") ;;
        rate-limits | size-limits)
            cmd=(bash "$script") ;;
        auth-*)
            env_extra+=(OLLA_PORT="$(free_port)" BACKEND_PORT="$(free_port)"
                PATH="$HERE/shim:$PATH" OLLA_SCRIPTS_PYTHON="$PY" OLLA_SCRIPTS_LIB="$LIB")
            cmd=(bash "$script") ;;
        load-limits | load-chaos)
            cwd="$WORK/cwd-$id"
            mkdir -p "$cwd"
            printf 'TARGET_URL=%s\nRATE_LIMIT=0\nMODEL_NAME=phi4:latest\n' "$URL" >"$cwd/.env"
            env_extra+=(TERM=xterm)
            if [[ "$id" == load-limits ]]; then
                cmd=(bash "$script" 5 2)
            else
                cmd=(bash "$script" 5 3 --chaos)
            fi
            ;;
    esac
    log "$id: ${cmd[*]##*/}"
    set +e
    (cd "$cwd" && env "${env_extra[@]}" timeout -k 5 "$limit" "${cmd[@]}" </dev/null) >"$logf" 2>&1
    rc=$?
    set -e
    [[ $rc -eq 124 || $rc -eq 137 ]] && note="timed out after ${limit}s"
    if [[ "$id" == load-chaos ]]; then
        local health
        health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/internal/health" || true)
        echo "[run.sh] ringway /internal/health after the chaos run: HTTP $health" >>"$logf"
        kill -0 "$RINGWAY_PID" 2>/dev/null || echo "[run.sh] ringway is no longer running" >>"$logf"
    fi
    [[ "$profile" != self ]] && stop_ringway
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$path" "$logf" "$rc" "$checks" "$note" >>"$MANIFEST"
}

# ── run ──────────────────────────────────────────────────────────────────────────────
log "Olla's scripts: $SCRIPTS_DIR"
log "work directory: $WORK"
start_mocks
declare -A PARSER
while IFS='|' read -r id path parser profile limit; do
    [[ -z "$id" ]] && continue
    selected "$id" || continue
    PARSER[$id]=$parser
    if [[ "$profile" == skip ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$path" skipped "" "" "$(skip_reason "$id")" >>"$MANIFEST"
        continue
    fi
    [[ -f "$SCRIPTS_DIR/$path" ]] || {
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$path" skipped "" "" "not in this checkout" >>"$MANIFEST"
        continue
    }
    run_script "$id" "$path" "$profile" "$limit"
done <<<"$SCRIPTS"

# parser per id, for parse.py
for id in "${!PARSER[@]}"; do printf '%s\t%s\n' "$id" "${PARSER[$id]}"; done >"$WORK/parsers.tsv"
"$PY" "$LIB/parse.py" "$MANIFEST" "$WORK/parsers.tsv" "$WORK/summary.md" "$WORK/summary.json"
log "logs, configs and summaries: $WORK"
