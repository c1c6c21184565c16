#!/usr/bin/env python3
"""Writes the hand-written seeds of the fuzz corpus: tools/fuzz/corpus/<target>/seed-*.

Also writes the reproducers of past findings (`finding-*`). Idempotent: run it again
after `cargo fuzz cmin` (which drops inputs whose coverage others already have) so every
seed and reproducer stays in the corpus. Files found by fuzzing keep libFuzzer's names
(their SHA-1); only `seed-*` and `finding-*` files are written here.

    python3 tools/fuzz/seeds.py
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def crlf(text: str) -> bytes:
    """A head written with \\n line ends, sent with CRLF."""
    return text.replace("\n", "\r\n").encode()


def chunked(*chunks: bytes, ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out = b""
    for c in chunks:
        out += b"%x%s\r\n%s\r\n" % (len(c), ext, c)
    return out + b"0\r\n" + trailers + b"\r\n"


CHAT = {
    "model": "llama3.1:8b",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    "stream": True,
    "temperature": 0.7,
}
CHAT_BODY = json.dumps(CHAT, separators=(",", ":")).encode()

OLLAMA_CHAT = json.dumps(
    {
        "model": "qwen2.5:7b",
        "messages": [{"role": "user", "content": "Bonjour, ça va ?"}],
        "options": {"num_ctx": 8192, "temperature": 0.2, "stop": ["\n\n", "}"]},
        "keep_alive": "5m",
    },
    ensure_ascii=False,
).encode()

# ---- request_head: raw client bytes (head, then whatever follows it) ----

REQUESTS = {
    "openai-chat": crlf(
        "POST /v1/chat/completions HTTP/1.1\n"
        "Host: localhost:40114\n"
        "User-Agent: OpenAI/Python 1.54.3\n"
        "Accept: application/json\n"
        "Content-Type: application/json\n"
        "Authorization: Bearer sk-local-0123456789abcdef\n"
        "X-Request-ID: 7f3c2a10-9b1e-4c5d-8e2f-1a2b3c4d5e6f\n"
        f"Content-Length: {len(CHAT_BODY)}\n\n"
    )
    + CHAT_BODY,
    "ollama-chat-chunked": crlf(
        "POST /api/chat HTTP/1.1\n"
        "Host: 127.0.0.1:11434\n"
        "Transfer-Encoding: chunked\n"
        "Content-Type: application/json\n"
        "X-Olla-Session-ID: conv-42\n"
        "X-Session-ID: ignored-when-olla-present\n\n"
    )
    + chunked(OLLAMA_CHAT[:40], OLLAMA_CHAT[40:], ext=b";name=value", trailers=b"X-Trailer: done\r\n"),
    "pipelined-gets": crlf(
        "GET /v1/models HTTP/1.1\nHost: a\n\n"
        "GET /api/tags HTTP/1.1\nHost: a\nConnection: close\n\n"
    ),
    "expect-100-continue": crlf(
        "POST /v1/completions HTTP/1.1\n"
        "Host: proxy\n"
        "Expect: 100-continue\n"
        "Content-Length: 34\n\n"
    ),
    "obs-fold": crlf("GET / HTTP/1.1\nHost: a\nX-Folded: first\n  second\n\n"),
    "cl-te-conflict": crlf(
        "POST /v1/chat/completions HTTP/1.1\nHost: a\nContent-Length: 5\n"
        "Transfer-Encoding: chunked\n\n"
    )
    + b"0\r\n\r\n",
    "te-gzip-chunked": crlf("POST /api/generate HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n"),
    "te-twice": crlf(
        "POST /api/generate HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n"
    ),
    "cl-repeated": crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 1\nContent-Length: 1\n\nx"),
    "cl-list": crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 1, 1\n\nx"),
    "cl-plus": crlf("POST / HTTP/1.1\nHost: a\nContent-Length: +1\n\nx"),
    "cl-19-digits": crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 9999999999999999999\n\n"),
    "cl-20-digits": crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 18446744073709551616\n\n"),
    "cl-leading-zeros": crlf("POST /v1/embeddings HTTP/1.1\nHost: a\nContent-Length:  0003 \n\nabc"),
    "http10-keep-alive": crlf(
        "POST /v1/embeddings HTTP/1.0\nConnection: keep-alive\nContent-Length: 2\n\n{}"
    ),
    "http10-chunked": crlf("POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n"),
    "http11-no-host": crlf("GET /v1/models HTTP/1.1\n\n"),
    "http11-two-hosts": crlf("GET / HTTP/1.1\nHost: a\nHost: b\n\n"),
    "http2-version": crlf("GET / HTTP/2.0\nHost: a\n\n"),
    "bad-version": crlf("GET / HTTP/1.x\nHost: a\n\n"),
    "garbage-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "options-star": crlf("OPTIONS * HTTP/1.1\nHost: a\n\n"),
    "get-star": crlf("GET * HTTP/1.1\nHost: a\n\n"),
    "absolute-form": crlf("GET http://evil.example/ HTTP/1.1\nHost: evil.example\n\n"),
    "connect": crlf("CONNECT evil.example:443 HTTP/1.1\nHost: evil.example:443\n\n"),
    "head-method": crlf("HEAD /internal/health HTTP/1.1\nHost: a\n\n"),
    "connection-names": crlf(
        "GET /olla/ollama/api/tags HTTP/1.1\nHost: a\nConnection: keep-alive, X-Secret, Upgrade\n"
        "X-Secret: s\nUpgrade: websocket\nKeep-Alive: timeout=5\nProxy-Connection: keep-alive\n"
        "TE: trailers\nTrailer: X-Checksum\nProxy-Authorization: Basic YTpi\n\n"
    ),
    "forwarded-headers": crlf(
        "POST /olla/proxy/v1/embeddings HTTP/1.1\nhost: A.Example:8080\n"
        "x-forwarded-for: 10.0.0.1, 10.0.0.2\nX-Forwarded-Host: a.example\n"
        "X-Forwarded-Proto: https\nX-Real-IP: 10.0.0.1\nx-request-id:\t id-1 \t\n"
        "content-length: 2\n\n{}"
    ),
    "lf-only": b"GET /olla/vllm/v1/models HTTP/1.1\nHost: a\nAccept: */*\n\n",
    "leading-empty-lines": b"\r\n\r\nGET /version HTTP/1.1\r\nHost: a\r\n\r\n",
    "empty-values": crlf("GET /internal/status HTTP/1.1\nHost: a\nX-Empty:\nAuthorization: \nX-Session-ID:   \n\n"),
    "olla-routes": crlf(
        "GET /olla/lmstudio/api/v0/models?x=1&y=%20 HTTP/1.1\nHost: a\n\n"
        "GET /olla/unknown/v1/chat HTTP/1.1\nHost: a\n\n"
    ),
    "internal-pages": crlf(
        "GET /internal/status/endpoints?format=json HTTP/1.1\nHost: a\n\n"
        "GET /internal/stats/sticky HTTP/1.1\nHost: a\n\n"
    ),
    "utf8-value": "GET /api/tags HTTP/1.1\r\nHost: a\r\nX-Name: café ☕\r\n\r\n".encode(),
    "space-before-colon": crlf("GET / HTTP/1.1\nHost : a\n\n"),
    "partial-head": b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Le",
    "many-headers": crlf(
        "GET /v1/models HTTP/1.1\nHost: a\n" + "".join(f"X-H{i}: {i}\n" for i in range(99)) + "\n"
    ),
    "too-many-headers": crlf(
        "GET /v1/models HTTP/1.1\nHost: a\n" + "".join(f"X-H{i}: {i}\n" for i in range(101)) + "\n"
    ),
}

# ---- response_head: raw backend bytes ----

SSE = b"".join(
    b"data: " + json.dumps({"choices": [{"delta": {"content": w}}]}).encode() + b"\n\n"
    for w in ["The", " sky", " is", " blue"]
) + b"data: [DONE]\n\n"

RESPONSES = {
    "openai-json": crlf(
        "HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 27\n"
        "Date: Tue, 01 Apr 2025 10:00:00 GMT\n\n"
    )
    + b'{"object":"list","data":[]}',
    "sse-chunked": crlf(
        "HTTP/1.1 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n"
        "Transfer-Encoding: chunked\n\n"
    )
    + chunked(*[SSE[i : i + 50] for i in range(0, len(SSE), 50)], trailers=b"X-Usage: 12\r\n"),
    "ollama-ndjson": crlf("HTTP/1.1 200 OK\nContent-Type: application/x-ndjson\nTransfer-Encoding: chunked\n\n")
    + chunked(b'{"message":{"content":"Hi"},"done":false}\n', b'{"done":true}\n'),
    "100-then-200": crlf("HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    "204": crlf("HTTP/1.1 204 No Content\nContent-Length: 5\n\n"),
    "304": crlf("HTTP/1.1 304 Not Modified\nTransfer-Encoding: chunked\n\n"),
    "101": crlf("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n"),
    "http10-until-close": crlf("HTTP/1.0 200 OK\nContent-Type: text/plain\n\n") + b"streamed until close",
    "http10-keep-alive": crlf("HTTP/1.0 200 OK\nConnection: keep-alive\nContent-Length: 0\n\n"),
    "no-reason": crlf("HTTP/1.1 200\nContent-Length: 2\n\nok"),
    "empty-reason": crlf("HTTP/1.1 200 \nContent-Length: 0\n\n"),
    "obs-text-reason": b"HTTP/1.1 200 \xc7a va\r\nContent-Length: 0\r\n\r\n",
    "connection-close": crlf("HTTP/1.1 200 OK\nConnection: close, X-Backend-Secret\nX-Backend-Secret: 1\nContent-Length: 1\n\nx"),
    "cl-te-conflict": crlf("HTTP/1.1 200 OK\nContent-Length: 3\nTransfer-Encoding: chunked\n\n"),
    "te-identity": crlf("HTTP/1.1 200 OK\nTransfer-Encoding: identity\n\n"),
    "502-body": crlf("HTTP/1.1 502 Bad Gateway\nContent-Type: application/json\nContent-Length: 23\n\n")
    + b'{"error":"model loading"}',
    "lf-only": b"HTTP/1.1 404 Not Found\nContent-Length: 0\n\n",
    "status-999": crlf("HTTP/1.1 999 Whatever\nContent-Length: 1\n\nx"),
    "bad-status": crlf("HTTP/1.1 20 OK\n\n"),
    "partial": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-str",
}

# ---- chunked_body: two control bytes (piece sizes, small limit), then the body ----

CHUNKED = {
    "simple": b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "extensions-trailers": b"a;name=value;q=\"x y\"\r\n0123456789\r\n1 ; ext\r\nX\r\n0\r\nTrailer: yes\r\nX-Sum: 9\r\n\r\n",
    "uppercase-hex": b"1A\r\n" + b"x" * 26 + b"\r\n0000\r\n\r\n",
    "pipelined-next": b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "sse-stream": chunked(*[SSE[i : i + 37] for i in range(0, len(SSE), 37)]),
    "json-body": chunked(CHAT_BODY[:17], CHAT_BODY[17:]),
    "sixteen-digits": b"0000000000000003\r\nabc\r\n0\r\n\r\n",
    "seventeen-digits": b"00000000000000003\r\nabc\r\n0\r\n\r\n",
    "huge-size": b"ffffffffffffffff\r\nabc",
    "bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "bare-lf-trailer": b"0\r\nA: b\nC: d\r\n\r\n",
    "data-too-long": b"5\r\nhelloX\r\n0\r\n\r\n",
    "no-size": b"\r\n",
    "tab-after-size": b"2\t \r\nok\r\n0\r\n\r\n",
    "control-in-ext": b"2;a\x01\r\nok\r\n0\r\n\r\n",
    "truncated": b"10\r\n0123456",
    "empty-final": b"0\r\n\r\n",
}

# ---- body_keys: JSON request bodies ----

BODIES = {
    "openai-chat": CHAT_BODY,
    "openai-chat-turn2": json.dumps(
        {
            "model": "llama3.1:8b",
            "messages": CHAT["messages"]
            + [
                {"role": "assistant", "content": "Rayleigh scattering."},
                {"role": "user", "content": "Explain more."},
            ],
        }
    ).encode(),
    "ollama-chat": OLLAMA_CHAT,
    "anthropic-system-blocks": json.dumps(
        {
            "model": "claude-3-5-sonnet",
            "max_tokens": 1024,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Summarise this."}, {"type": "image", "source": {"type": "base64", "data": "iVBOR"}}]}
            ],
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        },
        indent=2,
    ).encode(),
    "escaped-strings": rb'{"model":"m\"odel","messages":[{"role":"developer","content":"caf\u00e9 \ud83d\ude00 \/ \"q\" \n\t\\"},{"role":"user","content":"tab\there \uD83D lone \uDE00 bad \x \u12"}]}',
    "completion-prompt": json.dumps({"model": "codellama", "prompt": "def fib(n):" + " " * 1100 + "pass", "max_tokens": 64}).encode(),
    "prompt-batch": rb'{"model":"m","prompt":["first \"one\"", "second"],"n":2}',
    "generate-system": rb'{"model":"llama3","system":"You are terse.","prompt":"Hi","stream":false,"options":{"seed":42}}',
    "tools-nested": rb'{"tools":[{"type":"function","function":{"name":"f","parameters":{"a":[1,2,{"b":"}]"}]}}}],"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0.5,"n":null,"logit_bias":{"50256":-100}}',
    "image-content": rb'{"model":"llava","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}',
    "model-not-string": rb'{"model":["a"],"messages":[{"role":"user","content":null}]}',
    "embeddings": rb'{"model":"nomic-embed-text","input":["a","b"]}',
    "truncated": rb'{"model":"m","messages":[{"role":"user","content":"x"}',
    "not-json": b"model=m&prompt=hi",
    "deep-nesting": b'{"x":' + b"[" * 200 + b"]" * 200 + b',"model":"m","prompt":"p"}',
    "whitespace": b' \r\n\t{ "model" : "m" ,\n "messages" : [ { "content" : "hi" , "role" : "user" } ] } ',
    "system-after-messages": rb'{"messages":[{"role":"system","content":"A"},{"role":"system","content":[{"type":"text","text":"B"}]},{"role":"user","content":"C"}],"system":"D","model":"m"}',
}


# ---- head_writer: a request (head and body), "\n\0\n", then a response ----


def post(body: bytes, extra: str = "") -> bytes:
    return crlf(f"POST /v1/chat/completions HTTP/1.1\nHost: proxy\n{extra}Content-Length: {len(body)}\n\n") + body


HOSTILE_REQUESTS = {
    "model-crlf-header": post(b'{"model":"x\r\nX-Injected: yes","messages":[]}'),
    "model-crlf-response": post(b'{"model":"x\r\nContent-Length: 4\r\n\r\nEVIL","messages":[]}'),
    "model-lf-log-line": post(b'{"model":"x\n2026-01-01 forged","messages":[]}'),
    "model-nul-del": post(b'{"model":"a\x00b\x7f","messages":[]}'),
    "model-escapes": post(rb'{"model":"a\r\n\"b\u000a","messages":[]}'),
    "model-obs-text": post('{"model":"modèle-ü","messages":[]}'.encode()),
    "spoofed-key-header": post(CHAT_BODY, "X-Backend-Key: spoofed\nx-backend-key: again\nAuthorization: Bearer c\n"),
    "session-and-id": post(CHAT_BODY, "X-Olla-Session-ID: s-1\nX-Request-ID: trace-\t1\nX-Forwarded-For: 10.0.0.1\n"),
    "head-request": crlf("HEAD /v1/models HTTP/1.1\nHost: proxy\n\n"),
    "http10": crlf("GET /api/tags HTTP/1.0\nConnection: keep-alive\n\n"),
}


def head_writer_seeds() -> dict:
    responses = list(RESPONSES.values())
    seeds = {}
    for i, (name, request) in enumerate({**REQUESTS, **HOSTILE_REQUESTS}.items()):
        seeds[name] = request + b"\n\0\n" + responses[i % len(responses)]
    return seeds


# ---- anthropic_stream: three control bytes (piece sizes, end), then a backend's SSE ----

CHUNK_ID = "chatcmpl-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def sse(*chunks, done: bool = True, eol: str = "\n\n") -> bytes:
    """OpenAI `chat.completion.chunk` lines (dicts as JSON, strings as they are)."""
    out = ""
    for c in chunks:
        out += "data: " + (c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)) + eol
    if done:
        out += "data: [DONE]" + eol
    return out.encode()


def delta(d: dict, finish=None, **extra) -> dict:
    choice = {"index": 0, "delta": d, "finish_reason": finish, **extra}
    return {"id": CHUNK_ID, "object": "chat.completion.chunk", "model": "qwen3:8b", "choices": [choice]}


def call(index, args, id=None, name=None) -> dict:
    c = {"index": index, "type": "function", "function": {"arguments": args}}
    if id is not None:
        c["id"] = id
    if name is not None:
        c["function"]["name"] = name
    return delta({"tool_calls": [c]})


USAGE = {"id": CHUNK_ID, "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129, "prompt_tokens_details": {"cached_tokens": 100}}}

STREAMS = {
    "text": sse(delta({"role": "assistant", "content": ""}), delta({"content": "The"}), delta({"content": " sky é😀"}), delta({}, "stop"), USAGE),
    "reasoning-then-text": sse(delta({"reasoning_content": "Let me think"}), delta({"reasoning": " more"}), delta({"content": "Blue."}), delta({}, "stop")),
    "tool-call": sse(call(0, "", "call_0", "Bash"), call(0, '{"command": "'), call(0, 'ls -la'), call(0, '"}'), delta({}, "tool_calls"), USAGE),
    "text-then-two-tools": sse(delta({"content": "Checking."}), call(0, '{"city":"Paris"}', "call_a", "weather"), call(1, '{"city":"Rome"}', "call_b", "weather"), delta({}, "tool_calls")),
    "interleaved-tools": sse(call(0, '{"a":', "c0", "f"), call(1, '{"b":', "c1", "g"), call(0, "1}"), call(1, "2}"), delta({}, "tool_calls")),
    "args-after-close": sse(call(0, '{"a":1}', "c0", "f"), delta({"content": "text"}), call(0, ', "late": 2')),
    "no-index-no-id": sse('{"choices":[{"delta":{"tool_calls":[{"id":"x","function":{"name":"f","arguments":"{\\"q\\""}}]}}]}', '{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}'),
    "raw-object-args": sse('{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":{"k":[1,2]}}}]}}]}'),
    "name-later": sse(call(0, '{"x":'), call(0, "1}", name="late_name"), delta({}, "stop")),
    "error-chunk": sse(delta({"content": "partial"}), {"error": {"message": "CUDA out of memory", "type": "server_error", "code": 503}}, done=False),
    "vllm-flat-error": sse({"object": "error", "message": "max_tokens too large", "type": "BadRequestError", "code": 400}, done=False),
    "crlf": sse(delta({"content": "a"}), delta({"content": "b"}), eol="\r\n\r\n"),
    "no-done": sse(delta({"content": "cut"}), done=False),
    "last-line-no-newline": b'data: {"choices":[{"delta":{"content":"end"}}]}',
    "junk-lines": b": ping\n\nevent: x\nid: 3\nretry: 5\ndata: not json\n\ndata:\n\ndata:{\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n",
    "content-parts": sse(delta({"content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]})),
    "stop-sequence": sse(delta({"content": "x"}), delta({}, "stop", stop_reason="</answer>"), delta({}, "stop", matched_stop=42)),
    "invalid-utf8": b'data: {"choices":[{"delta":{"content":"\xff\xfe"}}]}\n\ndata: {"choices":[{"delta":{"content":"\\ud83d"}}]}\n\n',
    "empty": b"",
    "done-only": b"data: [DONE]\n\n",
    "after-done": sse(delta({"content": "a"})) + sse(delta({"content": "ignored"})),
}

# ---- anthropic_stream_ops: five control bytes, then chunk operations ----
# The encoding read by `Op::read` in src/fuzzing/anthropic.rs. A string is one byte: an
# index into STRINGS there (0-31), or 32 + n (n < 8 mod 8) followed by n bytes.

TEXT, REASON, BOTH, TOOLS, USAGE_OP, FINISH, ERROR_OR_JUNK, DONE_OR_EMPTY, JUNK = 0, 2, 3, 4, 6, 7, 8, 9, 10


def raw(b: bytes) -> bytes:
    return bytes([32 + len(b) + 8 * 3]) + b  # 32 + 24 + n: n = (b % 8)


def tool(index=0, id_mode=0, name_mode=0, args=None, id_str=b"", name_str=b"", id_n=0) -> bytes:
    """One call op: index 3 = none; id_mode 0 none, 1 "", 2 call_<id_n>, 3 id_str;
    name_mode 0 none, 2 "", 3 name_str; args None (absent) or a string byte(s)."""
    flags = index | id_mode << 2 | id_n << 4 | name_mode << 6
    out = bytes([flags])
    if id_mode == 3:
        out += id_str
    if name_mode == 3:
        out += name_str
    out += b"\x00" if args is None else b"\x03" + args
    return out


def tools(*calls: bytes) -> bytes:
    return bytes([TOOLS, 1 if len(calls) == 1 else 0]) + b"".join(calls)


OPS = {
    "text": bytes([TEXT, 0, 0, TEXT, 1, 1, TEXT, 4, 2, TEXT, 3, 3, FINISH, 0, 1, DONE_OR_EMPTY, 0]),
    "reasoning-text": bytes([REASON, 0, 1, 0, REASON, 2, 3, 2, BOTH, 30, 29, TEXT, 5, 0, USAGE_OP, 40, 7]),
    "tool": tools(tool(0, 2, 3, b"\x0a", name_str=b"\x00")) + tools(tool(0, args=b"\x12")) + tools(tool(0, args=b"\x0e")) + tools(tool(0, args=b"\x13")) + tools(tool(0, args=b"\x0b")) + bytes([FINISH, 2, 1]),
    "interleaved": tools(tool(0, 2, 3, b"\x0a", name_str=b"\x00")) + tools(tool(1, 2, 3, b"\x0a", name_str=b"\x01", id_n=1)) + tools(tool(0, args=b"\x0b"), tool(1, args=b"\x0b")) + bytes([TEXT, 0, 0]),
    "late-args": tools(tool(0, 2, 3, b"\x14", name_str=b"\x00")) + bytes([TEXT, 0, 0]) + tools(tool(0, args=b"\x10")) + tools(tool(0, args=b"\x12")),
    "no-index": tools(tool(3, 2, 3, b"\x0a", name_str=b"\x00")) + tools(tool(3, args=b"\x0b")) + tools(tool(3, 2, args=b"\x11", id_n=0)),
    "raw-args": tools(tool(0, 3, 3, b"\x14", id_str=raw(b"id-1"), name_str=b"\x02")) + bytes([TOOLS, 1, 0x80 | 0, 2, 0x14]),
    "error": bytes([TEXT, 0, 0, REASON, 1, 0, 0, ERROR_OR_JUNK, 2, 7, TEXT, 1, 0]),
    "junk-done": bytes([JUNK, 0, JUNK, 4, ERROR_OR_JUNK, 9, DONE_OR_EMPTY, 16, DONE_OR_EMPTY, 17, DONE_OR_EMPTY, 18, TEXT, 8, 0, DONE_OR_EMPTY, 3, TEXT, 0, 0]),
    "raw-strings": bytes([TEXT]) + raw(b"\xc3\xa9\xf0\x9f") + b"\x00" + bytes([TEXT]) + raw(b"\x98\x80ok") + b"\x01",
}

# (piece-size seed, flags) per seed: finish or fail, cut or not, each line style.
OPS_CONTROLS = [(0x61, 0b0000), (0x62, 0b0001), (0x33, 0b0010), (0x07, 0b0011), (0x44, 0b0100), (0x15, 0b1001), (0x26, 0b1110), (0x58, 0b1100)]

# ---- anthropic_request: one control byte (backend options), then a Messages body ----

MESSAGES = {
    "claude-code": json.dumps({
        "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "ls", "signature": "x"}, {"type": "text", "text": "Running ls."}, {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.rs\nb.rs"}], "is_error": False}, {"type": "text", "text": "Now read a.rs"}]},
        ],
        "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u-1"},
        "temperature": 1, "top_k": 40, "top_p": 0.9, "stop_sequences": ["</x>"],
    }).encode(),
    "minimal": b'{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}',
    "image": json.dumps({"model": "llava", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}, {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}, {"type": "text", "text": "What?"}]}]}).encode(),
    "tool-choice-tool": b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"tool","name":"f"}}',
    "tool-choice-bad": b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"maybe"}}',
    "error-result": b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"boom","is_error":true},{"type":"tool_result","tool_use_id":"u","content":[{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j"}}]}]}]}',
    "empty-turns": b'{"model":"m","max_tokens":1,"system":"","messages":[{"role":"assistant","content":[]},{"role":"user","content":[{"type":"document"}]}]}',
    "no-model": b'{"max_tokens":1,"messages":[]}',
    "wrong-types": b'{"model":1,"max_tokens":"x","messages":{}}',
    "out-of-range": b'{"model":"m","max_tokens":0,"temperature":3,"messages":[{"role":"user","content":"x"}]}',
    "bad-role": b'{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}',
    "escapes": '{"model":"m\\u00e9","max_tokens":1,"messages":[{"role":"user","content":"\\ud83d\\ude00 \\" \\\\ \\n \u2028"}]}'.encode(),
    "truncated": b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"',
}

# ---- anthropic_response: an OpenAI chat completion body ----

def completion(message: dict, finish="stop", **extra) -> bytes:
    return json.dumps({"id": CHUNK_ID, "object": "chat.completion", "model": "qwen3:8b", "choices": [{"index": 0, "message": message, "finish_reason": finish, **extra}], "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}, ensure_ascii=False).encode()


COMPLETIONS = {
    "text": completion({"role": "assistant", "content": "Blue é😀"}),
    "reasoning": completion({"role": "assistant", "content": "42", "reasoning_content": "think"}),
    "reasoning-ollama": completion({"role": "assistant", "content": "", "reasoning": "hmm"}, "length"),
    "tool-calls": completion({"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}, {"type": "function", "function": {"name": "g", "arguments": {"b": [2]}}}, {"id": "c3", "type": "function", "function": {"name": "h", "arguments": "not json"}}]}, "tool_calls"),
    "empty": completion({"role": "assistant", "content": None}),
    "content-parts": completion({"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
    "stop-sequence": completion({"role": "assistant", "content": "x"}, "stop", stop_reason="</s>"),
    "no-choices": b'{"id":"x","choices":[]}',
    "error": b'{"error":{"message":"model not found","type":"invalid_request_error","code":404}}',
    "flat-error": b'{"object":"error","message":"bad","type":"BadRequestError","code":400}',
    "not-json": b"<html>502</html>",
    "cached-usage": b'{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":5,"completion_tokens":0,"prompt_tokens_details":{"cached_tokens":9}}}',
}


# ---- reproducers of findings (tools/fuzz/README.md, "Findings"), kept in the corpus ----

FINDINGS = {
    "response_head": {
        # Finding 1: no reason phrase, or obs-text in it: httparse's static "".
        "1-no-reason-phrase": b"HTTP/1.1 200\r\n\r\n",
        "1-obs-text-reason": b"HTTP/1.1 200 \xc7a va\r\nContent-Length: 0\r\n\r\n",
    },
    "request_head": {
        # Finding 2: 505 or 400 depending on how much of the request line has arrived.
        "2-version-or-request-line": b"T /  HTTP/1",
    },
    "anthropic_stream_ops": {
        # Finding 3: a call's id arrives after its block opened with a made-up id; a
        # delta naming the call by that id, without an index, started a nameless call.
        "3-late-id-no-index": bytes([0x61, 0, 0, 0, 0])
        + tools(tool(0, name_mode=3, name_str=b"\x00"))
        + tools(tool(0, id_mode=2))
        + tools(tool(3, id_mode=2, args=b"\x0a")),
    },
}


def write(target: str, seeds: dict, prefix: bytes = b"", kind: str = "seed") -> None:
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, f"{kind}-{name}"), "wb") as f:
            f.write(prefix + data)


def main() -> None:
    write("request_head", REQUESTS)
    write("response_head", RESPONSES)
    # Two printable control bytes: "a" (piece sizes) and "0" (limit 48): every seed is
    # fed in small pieces and most exceed the small limit too.
    for i, (name, body) in enumerate(CHUNKED.items()):
        write("chunked_body", {name: body}, prefix=bytes([0x61 + i % 8, 0x30 + i * 7 % 64]))
    write("body_keys", BODIES)
    write("head_writer", head_writer_seeds())
    # Control bytes "a"/"b" (piece sizes) and an end: finish for even seeds, fail for odd.
    for i, (name, stream) in enumerate(STREAMS.items()):
        write("anthropic_stream", {name: stream}, prefix=bytes([0x61 + i % 8, 0x41 + i % 5, i % 2]))
    for i, (name, ops) in enumerate(OPS.items()):
        for j, (seed, flags) in enumerate(OPS_CONTROLS[i % 3 :: 3]):
            write("anthropic_stream_ops", {f"{name}-{j}": ops}, prefix=bytes([seed, 0, flags, 0x35 + i, 0]))
    for i, (name, body) in enumerate(MESSAGES.items()):
        write("anthropic_request", {name: body}, prefix=bytes([i % 4]))
    write("anthropic_response", COMPLETIONS)
    for target, findings in FINDINGS.items():
        write(target, findings, kind="finding")


if __name__ == "__main__":
    main()
