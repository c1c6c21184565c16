#!/usr/bin/env bash
# Client-compatibility check: the official OpenAI, Ollama and Anthropic Python SDKs,
# unchanged, against `ringway demo` (ringway in front of in-process mock backends).
#
#   bash tools/sdk/run.sh [extra check.py options, e.g. --only anthropic]
#
# Creates (or reuses) a venv in target/sdk-venv, installs tools/sdk/requirements.txt,
# builds ringway (release), starts the demo on a free loopback port, runs check.py
# against it, stops ringway; then the OpenAI checks again over HTTPS, against the demo
# with its TLS listener on a certificate made here with openssl (check.py --ca-file);
# exits with check.py's status (non-zero if either run failed). All traffic stays on
# 127.0.0.1. Needs python3 (3.10+: the anthropic SDK's floor) with pip, and PyPI for the
# first install; openssl for the HTTPS run's certificates.
#
# Environment: PYTHON (default python3), SDK_TOKEN_DELAY_MS (the mocks' delay between
# streamed tokens, default 40: large enough to tell a real stream from a batched one).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET/sdk-venv"
PYTHON="${PYTHON:-python3}"
TOKEN_DELAY_MS="${SDK_TOKEN_DELAY_MS:-40}"

die() {
    echo "" >&2
    echo "sdk-check: ERROR: $*" >&2
    exit 1
}
step() { echo "sdk-check: $*" >&2; }

# --- Python environment -------------------------------------------------------------
venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }
if ! venv_ok; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=...)"
    rm -rf "$VENV"
    step "creating venv $VENV"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian without python3-venv has no ensurepip: make the venv without pip and
        # drive the system pip into it (pip >= 22.3 has --python).
        rm -rf "$VENV"
        "$PYTHON" -m venv --without-pip "$VENV" ||
            die "cannot create a venv with '$PYTHON -m venv' (on Debian: apt-get install python3-venv)"
        PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
        "${PIP[@]}" --version >/dev/null 2>&1 || {
            rm -rf "$VENV"
            die "'$PYTHON -m venv' has no pip and the system pip cannot install into a venv (on Debian: apt-get install python3-venv)"
        }
    fi
fi
if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    PIP=("$VENV/bin/python" -m pip)
else
    PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
fi
step "installing tools/sdk/requirements.txt into $VENV"
"${PIP[@]}" install --quiet --disable-pip-version-check -r tools/sdk/requirements.txt ||
    die "pip install -r tools/sdk/requirements.txt failed (see pip's output above)"

# --- ringway --------------------------------------------------------------------------
step "building ringway (release)"
cargo build --release -p ringway || die "cargo build --release -p ringway failed"
BIN="$TARGET/release/ringway"
[ -x "$BIN" ] || die "$BIN missing after the build"

LOG="$(mktemp "${TMPDIR:-/tmp}/ringway-sdk-check.XXXXXX")"
TLS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ringway-sdk-tls.XXXXXX")"
PID=""
stop_demo() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    PID=""
}
cleanup() {
    stop_demo
    rm -f "$LOG"
    rm -rf "$TLS_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() {
    echo "---- ringway demo output (last 40 lines) ----" >&2
    tail -n 40 "$LOG" >&2 || true
    echo "---------------------------------------------" >&2
}

# Starts `ringway demo` with extra arguments ("$@"); sets PID and ADDR.
start_demo() {
    # Port 0: ringway binds a free port and logs it ("... listening on 127.0.0.1:PORT ...").
    "$BIN" demo --listen 127.0.0.1:0 --token-delay-ms "$TOKEN_DELAY_MS" "$@" >"$LOG" 2>&1 &
    PID=$!
    ADDR=""
    for _ in $(seq 300); do
        ADDR="$(sed -n 's/.* listening on \(127\.0\.0\.1:[0-9][0-9]*\) .*/\1/p' "$LOG" | head -n 1)"
        [ -n "$ADDR" ] && break
        kill -0 "$PID" 2>/dev/null || { show_log; die "ringway demo exited before listening"; }
        sleep 0.1
    done
    [ -n "$ADDR" ] || { show_log; die "ringway demo did not report its address within 30 s"; }
    step "ringway demo (pid $PID) listening on $ADDR, ${TOKEN_DELAY_MS} ms between streamed tokens"
}

# Runs check.py against the running demo ("$@": its options); returns its status.
run_check() {
    local status=0
    timeout 600 "$VENV/bin/python" tools/sdk/check.py --token-delay-ms "$TOKEN_DELAY_MS" "$@" ||
        status=$?
    if [ "$status" -ne 0 ]; then
        [ "$status" -eq 124 ] && echo "sdk-check: check.py timed out after 600 s" >&2
        if ! kill -0 "$PID" 2>/dev/null; then echo "sdk-check: ringway is no longer running" >&2; fi
        show_log
    elif ! kill -0 "$PID" 2>/dev/null; then
        show_log
        die "ringway died during the check"
    fi
    return "$status"
}

# --- the check, over plain HTTP ------------------------------------------------------
start_demo
status=0
run_check --base "http://$ADDR" "$@" || status=$?
stop_demo

# --- the OpenAI SDK over HTTPS (server.tls_cert_file) --------------------------------
# A CA and a certificate for 127.0.0.1 that it signed, made here with openssl; ringway's
# TLS listener on it; httpx trusting that CA alone.
step "making a test CA and a certificate for 127.0.0.1 (openssl) in $TLS_DIR"
command -v openssl >/dev/null || die "openssl not found (on Debian: apt-get install openssl)"
(
    cd "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=ringway sdk-check CA" -keyout ca.key -out ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=127.0.0.1" -keyout key.pem -out cert.csr
    printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >leaf.ext
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out cert.pem
    printf '[server]\ntls_cert_file = "%s"\ntls_key_file = "%s"\n' \
        "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >tls.toml
) >/dev/null 2>&1 || die "openssl could not make the test certificates"
start_demo --config "$TLS_DIR/tls.toml"
grep -q "listening on $ADDR (TLS)" "$LOG" || { show_log; die "the demo did not start its TLS listener"; }
run_check --base "https://$ADDR" --ca-file "$TLS_DIR/ca.pem" --only openai || status=$?
stop_demo

if [ "$status" -ne 0 ]; then
    echo "sdk-check: FAILED (check.py exit status $status)" >&2
else
    echo "sdk-check: OK" >&2
fi
exit "$status"
