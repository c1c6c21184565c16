#!/usr/bin/env bash
# Claude Code through ringway: the real CLI (npm @anthropic-ai/claude-code, its native
# binary) runs `claude -p "Say hello"` against `ringway demo`, once per Messages API mode:
#   gpt-4o-mini      translation  (the demo's OpenAI-type mock, /v1/chat/completions)
#   llama3.2:latest  passthrough  (an Ollama-type mock's own /v1/messages)
#
#   bash tools/claude-code/run.sh
#
# Not part of CI. Installs Claude Code into target/claude-code (npm; nodejs and npm come
# from apt-get when missing and we are root), builds ringway (release), starts the demo on
# a free loopback port, runs Claude Code in an empty temporary directory with a fresh HOME
# and config dir (the real user's config is never read or written), and prints one
# PASS/FAIL line per check; exits 1 on any failure. All traffic stays on 127.0.0.1.
#
# The mocks answer a request that offers tools with a call to the first tool, every
# property "mock". Claude Code is restricted so that nothing it could be asked to run does
# harm: --restricted (no tools that run commands or code, file tools confined to the
# working directory), the writing tools and Agent disallowed (they are then not even
# offered), and --permission-mode dontAsk with --permission-prompts none (whatever would
# need a permission is denied). What is left is read-only (Glob, Grep, Read, ...) in an
# empty directory: the round trip is tool_use, Claude Code's tool_result, then the mock's
# text, two requests per run.
#
# Environment: CLAUDE_CODE_VERSION (default the version verified here; "latest" works),
# CC_TIMEOUT_S (per run, default 120), CC_TOKEN_DELAY_MS (the mocks' delay between
# streamed tokens, default 5), PYTHON (default python3, reads the JSON answers).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PREFIX="$TARGET/claude-code"
VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
TIMEOUT_S="${CC_TIMEOUT_S:-120}"
TOKEN_DELAY_MS="${CC_TOKEN_DELAY_MS:-5}"
PYTHON="${PYTHON:-python3}"
# What every mock text answer starts with (ringway-mock's VOCAB).
MOCK_TEXT="Hello from the mock backend"

die() {
    echo "" >&2
    echo "claude-code-check: ERROR: $*" >&2
    exit 1
}
step() { echo "claude-code-check: $*" >&2; }

SANDBOX="$(mktemp -d "${TMPDIR:-/tmp}/ringway-claude-code.XXXXXX")"
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$SANDBOX"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=...)"

# --- Claude Code ----------------------------------------------------------------------
if ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "npm not found (install nodejs and npm)"
    step "installing nodejs and npm (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null ||
        die "apt-get install nodejs npm failed"
fi

# Claude Code, at most $TIMEOUT_S seconds, with a fresh HOME and config dir under $1 and
# nothing else from our environment but PATH; no proxy. The rest is its command line.
BASE_URL="http://127.0.0.1:9" # until the demo listens; --version sends nothing
claude_in() {
    local home="$1"
    shift
    mkdir -p "$home/.claude" "$home/tmp"
    timeout -k 5 "$TIMEOUT_S" env -i PATH="/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 \
        HOME="$home" CLAUDE_CONFIG_DIR="$home/.claude" TMPDIR="$home/tmp" \
        NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost" \
        ANTHROPIC_BASE_URL="$BASE_URL" ANTHROPIC_API_KEY=anything \
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
        DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 CLAUDE_CODE_MAX_RETRIES=0 \
        "$CLAUDE" "$@"
}

# The npm bin (bin/claude.exe, which the package's postinstall replaces by the platform
# package's native binary), else that binary itself; the first that runs.
find_claude() {
    local c
    for c in "$PREFIX/node_modules/.bin/claude" "$PREFIX"/node_modules/@anthropic-ai/claude-code-*/claude; do
        [ -x "$c" ] || continue
        CLAUDE="$c"
        if INSTALLED="$(claude_in "$SANDBOX/version" --version 2>/dev/null)"; then
            INSTALLED="${INSTALLED%% *}"
            return 0
        fi
    done
    return 1
}
CLAUDE=""
INSTALLED=""
if ! find_claude || { [ "$VERSION" != latest ] && [ "$INSTALLED" != "$VERSION" ]; }; then
    step "installing @anthropic-ai/claude-code@$VERSION into $PREFIX"
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$VERSION" || die "npm install @anthropic-ai/claude-code@$VERSION failed"
    find_claude || die "no runnable claude executable under $PREFIX/node_modules"
fi
step "Claude Code $INSTALLED: $CLAUDE"

# --- ringway --------------------------------------------------------------------------
step "building ringway (release)"
cargo build --release -p ringway || die "cargo build --release -p ringway failed"
BIN="$TARGET/release/ringway"
[ -x "$BIN" ] || die "$BIN missing after the build"

LOG="$SANDBOX/ringway.log"
ACCESS="$SANDBOX/access.log"
# The access log, if the demo takes [log] from --config (it writes one line per request).
printf '[log]\naccess = "text"\naccess_path = "%s"\n' "$ACCESS" >"$SANDBOX/ringway.toml"

show_log() {
    echo "---- ringway demo output (last 40 lines) ----" >&2
    tail -n 40 "$LOG" >&2 || true
    echo "---------------------------------------------" >&2
}

: >"$LOG" # before the demo starts: it is read right away
"$BIN" --config "$SANDBOX/ringway.toml" demo --listen 127.0.0.1:0 \
    --token-delay-ms "$TOKEN_DELAY_MS" >"$LOG" 2>&1 &
PID=$!
ADDR=""
for _ in $(seq 300); do
    ADDR="$(sed -n 's/.* listening on \(127\.0\.0\.1:[0-9][0-9]*\) .*/\1/p' "$LOG" | head -n 1)"
    [ -n "$ADDR" ] && break
    kill -0 "$PID" 2>/dev/null || { show_log; die "ringway demo exited before listening"; }
    sleep 0.1
done
[ -n "$ADDR" ] || { show_log; die "ringway demo did not report its address within 30 s"; }
BASE_URL="http://$ADDR"
step "ringway demo (pid $PID) listening on $ADDR"

# --- the runs -------------------------------------------------------------------------
RESULTS=()
FAILED=0
report() {
    local ok="$1" name="$2" detail="$3"
    local line
    if [ "$ok" = 1 ]; then line="PASS  $name: $detail"; else line="FAIL  $name: $detail"; FAILED=1; fi
    echo "$line"
    RESULTS+=("$line")
}

# ringway's Messages API counters (/internal/stats/translators): "passthrough translation
# failed", or "? ? ?" when the page cannot be read.
translator_counts() {
    "$PYTHON" - "http://$ADDR/internal/stats/translators" <<'EOF' 2>/dev/null || echo "? ? ?"
import json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
t = json.load(opener.open(sys.argv[1], timeout=5))["translators"][0]
print(t["passthrough_requests"], t["translation_requests"], t["failed_requests"])
EOF
}

# One run: $1 the mode, $2 the model.
run_claude() {
    local mode="$1" model="$2"
    local dir="$SANDBOX/$mode"
    mkdir -p "$dir/work"
    local before after
    before="$(translator_counts)"
    local status=0
    (cd "$dir/work" && claude_in "$dir/home" -p "Say hello" --model "$model" \
        --output-format json --no-session-persistence --debug-file "$dir/debug.log" \
        --restricted --permission-mode dontAsk --permission-prompts none \
        --disallowedTools "Agent Bash Edit Write NotebookEdit WebFetch WebSearch" \
        </dev/null >"$dir/out.json" 2>"$dir/err.txt") || status=$?
    after="$(translator_counts)"

    local name="claude -p [$mode: $model]" summary
    summary="$("$PYTHON" - "$dir/out.json" "$MOCK_TEXT" <<'EOF' 2>&1
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:  # noqa: BLE001 - no JSON at all is the finding
    print(f"BAD no JSON result ({type(e).__name__}: {e})")
    sys.exit()
text = r.get("result") or ""
ok = r.get("is_error") is False and r.get("subtype") == "success" and text.startswith(sys.argv[2])
print(("OK " if ok else "BAD ") + json.dumps({k: r.get(k) for k in
    ("subtype", "is_error", "num_turns", "stop_reason", "permission_denials")}) + " result " + repr(text[:60]))
EOF
)"
    local requests
    requests="$(grep -c '\[API REQUEST\] /v1/messages' "$dir/debug.log" 2>/dev/null || true)"
    if [ "$status" -eq 0 ] && [ "${summary%% *}" = OK ]; then
        report 1 "$name" "exit 0, ${requests:-?} requests to /v1/messages, ${summary#OK }"
    else
        [ "$status" -eq 124 ] && summary="timed out after ${TIMEOUT_S} s; $summary"
        report 0 "$name" "exit $status, ${summary#* }"
        echo "---- claude stderr ----" >&2
        tail -n 20 "$dir/err.txt" >&2 || true
        echo "---- claude debug log: requests, warnings, errors (last 20) ----" >&2
        grep -E 'API REQUEST|\[(WARN|ERROR)\]' "$dir/debug.log" | tail -n 20 >&2 || true
        echo "------------------------------------------" >&2
    fi

    # The requests went through ringway's Messages API, in this mode, and none failed.
    local p0 t0 f0 p1 t1 f1
    read -r p0 t0 f0 <<<"$before"
    read -r p1 t1 f1 <<<"$after"
    name="ringway /internal/stats/translators [$mode: $model]"
    if [ "$p0" = "?" ] || [ "$p1" = "?" ]; then
        report 0 "$name" "cannot read the page"
        return
    fi
    local dp=$((p1 - p0)) dt=$((t1 - t0)) df=$((f1 - f0))
    local detail="+$dp passthrough, +$dt translation, +$df failed"
    local ours=$dt others=$dp
    [ "$mode" = passthrough ] && ours=$dp others=$dt
    if [ "$ours" -ge 1 ] && [ "$others" -eq 0 ] && [ "$df" -eq 0 ]; then
        report 1 "$name" "$detail"
    else
        report 0 "$name" "$detail (expected only $mode, no failures)"
    fi
}

for pair in "translation gpt-4o-mini" "passthrough llama3.2:latest"; do
    read -r mode model <<<"$pair"
    step "running claude -p \"Say hello\" --model $model ($mode, at most ${TIMEOUT_S} s)"
    run_claude "$mode" "$model"
done

# --- what ringway saw -----------------------------------------------------------------
sleep 0.5 # the access log's writer thread
if [ -s "$ACCESS" ]; then
    echo "---- ringway access log ----"
    cat "$ACCESS"
    echo "----------------------------"
    n="$(grep -c '/v1/messages' "$ACCESS" || true)"
    if [ "$n" -ge 4 ]; then
        report 1 "ringway access log" "$n requests to /v1/messages"
    else
        report 0 "ringway access log" "$n requests to /v1/messages (expected 4: two per run)"
    fi
else
    echo "NOTE  ringway access log: none written (ringway demo does not take [log] from --config)"
fi
kill -0 "$PID" 2>/dev/null || { show_log; report 0 "ringway" "died during the runs"; }

echo ""
echo "claude-code-check: Claude Code $INSTALLED through ringway demo:"
printf '  %s\n' "${RESULTS[@]}"
passed=0
for r in "${RESULTS[@]}"; do [ "${r%% *}" = PASS ] && passed=$((passed + 1)); done
echo "claude-code-check: $passed passed, $((${#RESULTS[@]} - passed)) failed"
exit "$FAILED"
