"""Helpers shared by the benchmark drivers in this folder: where the repository is, how
to wait for a process to listen, the machine description every report starts with, a
throwaway CA and certificate (openssl) for the drivers that measure https:// endpoints, and
the streamed chat client of the cache benchmarks (sticky.py, tenants.py)."""

import http.client
import json
import os
import platform
import socket
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    """A port nothing listens on right now (for servers that need one given)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path):
    """A file's text, or "" if it is gone (a process's /proc entries, say)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def wait_for_line(proc, needle, timeout=10):
    """Reads the process's output until a line containing `needle`; returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited before printing {needle!r}")
        if needle in line:
            return line
    raise RuntimeError(f"no {needle!r} within {timeout} s")


def port_of(line):
    """The port in a "listening on HOST:PORT ..." line."""
    return int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])


def drain(proc):
    """Keeps reading a process's output so it never blocks on a full pipe."""
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    return f"machine: {cpu}, {os.cpu_count()} CPUs, kernel {platform.release()}"


def make_pki(tmp):
    """A CA and a certificate for 127.0.0.1 it signed (ECDSA P-256), as PEM files."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *argv: subprocess.run(argv, cwd=tmp, check=True, capture_output=True)
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=ringway bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("openssl", "req", *ec, "-keyout", "key.pem", "-out", "cert.csr",
        "-subj", "/CN=127.0.0.1")
    with open(f"{tmp}/cert.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "cert.ext")
    return f"{tmp}/ca.pem", f"{tmp}/cert.pem", f"{tmp}/key.pem"


def stream_chat(port, body, headers=(), timeout=300, on_event=None):
    """One streamed chat completion (POST /v1/chat/completions on 127.0.0.1:`port`, `body` a
    dict). Returns a record of the turn and the answer's text. The record has the status,
    the time to the first content in ms (`ttft`), an `error` (None when the stream carried
    content), and for each (key, header) of `headers` that response header's value (or
    None). `on_event(event, record)` sees every parsed `data:` event."""
    rec = {"status": None, "ttft": None, "error": None}
    rec.update({key: None for key, _ in headers})
    answer = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = time.monotonic()
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        rec["status"] = resp.status
        for key, header in headers:
            rec[key] = resp.getheader(header)
        if resp.status != 200:
            rec["error"] = f"status {resp.status}: {resp.read()[:200]!r}"
            return rec, ""
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            if on_event:
                on_event(event, rec)
            choices = event.get("choices") or [{}]
            delta = (choices[0].get("delta") or {}).get("content") or ""
            if delta and rec["ttft"] is None:
                rec["ttft"] = (time.monotonic() - sent) * 1000
            answer.append(delta)
        if rec["ttft"] is None:
            rec["error"] = "no content in the stream"
    except Exception as e:  # a transport error is a failure the client saw
        rec["error"] = repr(e)
    finally:
        conn.close()
    return rec, "".join(answer)
