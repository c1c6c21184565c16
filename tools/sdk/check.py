#!/usr/bin/env python3
"""Client-compatibility check: the official OpenAI, Ollama and Anthropic Python SDKs,
unchanged, against a running ringway (normally `ringway demo`, see run.sh next to this file).

Checks, one line each (PASS/FAIL + detail), then a summary; exits 1 on any failure:
  OpenAI SDK:     models.list, chat.completions (plain and streamed, same text, first chunk
                  well before the last), completions (plain and streamed), embeddings.
  Ollama SDK:     list, chat (plain and streamed, ends with done=True, same text),
                  generate (plain and streamed), show, embed.
  Anthropic SDK:  each Messages check twice, through translation (gpt-4o-mini, an OpenAI
                  endpoint: no X-Olla-Mode header) and through passthrough (llama3.2:latest,
                  an Ollama endpoint that speaks the Messages API: X-Olla-Mode: passthrough):
                  messages.create (at /v1/messages and /olla/anthropic/v1/messages),
                  messages.stream (same text, first delta well before the last), a tool-use
                  round trip plain and streamed (tool_use with a dict input, then the
                  tool_result back, then text), count_tokens; then models.list and an
                  unknown model (NotFoundError with an Anthropic error body).

HTTPS (--base https://..., --ca-file CA): the OpenAI checks through ringway's TLS listener,
httpx verifying its certificate against that CA alone, after checking that without the CA
the certificate is refused.

Every call has a timeout (--timeout, 30 s) and no retries, every stream is read at most
--max-chunks events, so the run is bounded. Only loopback addresses are accepted as --base.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import os
import ssl
import sys
import time
import traceback
from typing import Callable
from urllib.parse import urlsplit

MODEL = "llama3.2:latest"
MESSAGES = [{"role": "user", "content": "Say hello."}]
PROMPT = "Say hello."

results: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str) -> None:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)


class CheckFailed(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def check(name: str, fn: Callable[[], str]) -> None:
    """Runs one check; a CheckFailed or any exception (the SDK's parse errors, timeouts,
    HTTP errors) is a FAIL with the exception's type and message."""
    try:
        detail = fn()
    except CheckFailed as e:
        report(name, False, str(e))
    except Exception as e:  # noqa: BLE001 - any SDK error is a failed check
        msg = f"{type(e).__name__}: {e}"
        if e.__cause__ is not None:
            msg += f" (caused by {type(e.__cause__).__name__}: {e.__cause__})"
        try:
            body = getattr(getattr(e, "response", None), "text", None)
        except Exception:  # noqa: BLE001 - a streamed response that was never read
            body = None
        if body:
            msg += f" | response body: {body[:300]!r}"
        report(name, False, msg)
        if os.environ.get("SDK_CHECK_TRACEBACK"):
            traceback.print_exc()
    else:
        report(name, True, detail)


def guard(n: int, t0: float, args: argparse.Namespace) -> None:
    """Bounds every stream: at most --max-chunks events and --timeout seconds in all."""
    expect(n <= args.max_chunks, f"more than {args.max_chunks} events in the stream")
    expect(
        time.monotonic() - t0 <= args.timeout,
        f"stream still running after {args.timeout:.0f} s ({n} events)",
    )


def same_text(streamed: str, plain: str | None) -> str:
    """The mock is deterministic: a streamed answer must equal the plain one, token for
    token (when the plain call passed; otherwise there is nothing to compare)."""
    if plain is None:
        return "not compared (the plain call failed)"
    expect(streamed == plain, f"streamed text {short(streamed)} != plain text {short(plain)}")
    return "same text as the plain call"


def short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def timing_check(
    kind: str, t_first: float | None, t_last: float | None, n: int, t0: float, args: argparse.Namespace
) -> str:
    """Streams must not be batched: with token_delay between tokens, the first content
    chunk must arrive well before the last one (at least half the expected spread)."""
    expect(t_first is not None and t_last is not None, f"{kind}: no content chunks")
    assert t_first is not None and t_last is not None
    spread = t_last - t_first
    expected = (n - 1) * args.token_delay_ms / 1000.0
    detail = (
        f"first chunk {t_first * 1000:.0f} ms, last {t_last * 1000:.0f} ms, "
        f"total {(time.monotonic() - t0) * 1000:.0f} ms "
        f"(spread {spread * 1000:.0f} ms, {expected * 1000:.0f} ms expected at "
        f"{args.token_delay_ms} ms/token)"
    )
    if args.token_delay_ms > 0:
        expect(
            spread >= 0.5 * expected and t_first < 0.5 * t_last,
            f"{kind}: stream looks batched: {detail}",
        )
    return detail


def openai_checks(base: str, args: argparse.Namespace) -> None:
    import openai

    extra = {}
    if args.ca_file:
        # HTTPS: httpx verifies ringway's certificate against the test CA alone.
        import httpx

        extra["http_client"] = httpx.Client(verify=ssl.create_default_context(cafile=args.ca_file))
    client = openai.OpenAI(
        base_url=base + "/v1", api_key="unused", timeout=args.timeout, max_retries=0, **extra
    )
    plain: dict[str, str] = {}

    def models() -> str:
        ids = [m.id for m in client.models.list()]
        expect(MODEL in ids, f"{MODEL} not in {ids}")
        return f"{len(ids)} models: {ids}"

    def chat() -> str:
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        content = r.choices[0].message.content
        expect(bool(content), f"empty content: {r!r}")
        expect(r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason!r}")
        plain["chat"] = content or ""
        usage = r.usage.completion_tokens if r.usage else None
        return f"{len(content or '')} chars {short(content or '')}, completion_tokens={usage}"

    def chat_stream() -> str:
        t0 = time.monotonic()
        t_first = t_last = None
        parts: list[str] = []
        chunks = 0
        finish = None
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with stream:
            for chunk in stream:
                chunks += 1
                guard(chunks, t0, args)
                if not chunk.choices:
                    continue
                c = chunk.choices[0]
                if c.delta and c.delta.content:
                    now = time.monotonic() - t0
                    t_first = now if t_first is None else t_first
                    t_last = now
                    parts.append(c.delta.content)
                finish = c.finish_reason or finish
        text = "".join(parts)
        expect(len(parts) >= 3, f"only {len(parts)} content chunks")
        expect(finish == "stop", f"no finish_reason 'stop' (got {finish!r})")
        same = same_text(text, plain.get("chat"))
        timing = timing_check("chat stream", t_first, t_last, len(parts), t0, args)
        return f"{chunks} chunks, {len(parts)} with content, {same}; {timing}"

    def completion() -> str:
        r = client.completions.create(model=MODEL, prompt=PROMPT)
        text = r.choices[0].text
        expect(bool(text), f"empty text: {r!r}")
        plain["completion"] = text
        return f"{len(text)} chars {short(text)}"

    def completion_stream() -> str:
        t0 = time.monotonic()
        parts: list[str] = []
        chunks = 0
        stream = client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
        with stream:
            for chunk in stream:
                chunks += 1
                guard(chunks, t0, args)
                if chunk.choices and chunk.choices[0].text:
                    parts.append(chunk.choices[0].text)
        text = "".join(parts)
        expect(len(parts) >= 3, f"only {len(parts)} text chunks")
        same = same_text(text, plain.get("completion"))
        return f"{chunks} chunks, {len(parts)} with text, {same}"

    def embeddings() -> str:
        r = client.embeddings.create(model=MODEL, input=["one", "two"])
        expect(len(r.data) == 2, f"{len(r.data)} embeddings for 2 inputs")
        dims = {len(d.embedding) for d in r.data}
        expect(all(isinstance(x, float) for d in r.data for x in d.embedding), "non-float values")
        expect(dims and 0 not in dims, f"empty vectors: {dims}")
        return f"2 vectors of {dims.pop()} floats"

    def untrusted() -> str:
        """Without the CA the SDK must refuse ringway's certificate: the checks above
        really went through a verified TLS session."""
        import httpx

        bare = openai.OpenAI(
            base_url=base + "/v1",
            api_key="unused",
            timeout=args.timeout,
            max_retries=0,
            http_client=httpx.Client(verify=ssl.create_default_context()),
        )
        try:
            bare.models.list()
        except openai.APIConnectionError as e:
            cause = e.__cause__
            expect("CERTIFICATE_VERIFY_FAILED" in repr(cause) or "certificate" in repr(cause).lower(),
                   f"failed, but not on the certificate: {cause!r}")
            return f"refused as it should be: {type(cause).__name__}"
        finally:
            bare.close()
        raise CheckFailed("an SDK without the test CA accepted ringway's certificate")

    if args.ca_file:
        check("openai https: the certificate is verified", untrusted)
    check("openai models.list", models)
    check("openai chat.completions.create", chat)
    check("openai chat.completions.create(stream=True)", chat_stream)
    check("openai completions.create", completion)
    check("openai completions.create(stream=True)", completion_stream)
    check("openai embeddings.create", embeddings)
    client.close()


def ollama_checks(base: str, args: argparse.Namespace) -> None:
    import ollama

    client = ollama.Client(host=base, timeout=args.timeout, trust_env=False)
    plain: dict[str, str] = {}

    def models() -> str:
        names = [m.model for m in client.list().models]
        expect(MODEL in names, f"{MODEL} not in {names}")
        return f"{len(names)} models: {names}"

    def chat() -> str:
        r = client.chat(model=MODEL, messages=MESSAGES)
        content = r.message.content
        expect(bool(content), f"empty content: {r!r}")
        expect(r.done is True, f"done={r.done!r}")
        plain["chat"] = content or ""
        return f"{len(content or '')} chars {short(content or '')}, eval_count={r.eval_count}"

    def chat_stream() -> str:
        t0 = time.monotonic()
        t_first = t_last = None
        parts: list[str] = []
        n = 0
        last = None
        for part in client.chat(model=MODEL, messages=MESSAGES, stream=True):
            n += 1
            guard(n, t0, args)
            expect(last is None or not last.done, "part after done=True")
            if part.message.content:
                now = time.monotonic() - t0
                t_first = now if t_first is None else t_first
                t_last = now
                parts.append(part.message.content)
            last = part
        expect(last is not None and last.done is True, f"last part not done=True: {last!r}")
        text = "".join(parts)
        expect(len(parts) >= 3, f"only {len(parts)} content parts")
        same = same_text(text, plain.get("chat"))
        timing = timing_check("chat stream", t_first, t_last, len(parts), t0, args)
        return f"{n} parts, last done=True done_reason={last.done_reason!r}, {same}; {timing}"

    def generate() -> str:
        r = client.generate(model=MODEL, prompt=PROMPT)
        expect(bool(r.response), f"empty response: {r!r}")
        expect(r.done is True, f"done={r.done!r}")
        plain["generate"] = r.response
        return f"{len(r.response)} chars {short(r.response)}"

    def generate_stream() -> str:
        t0 = time.monotonic()
        parts: list[str] = []
        n = 0
        last = None
        for part in client.generate(model=MODEL, prompt=PROMPT, stream=True):
            n += 1
            guard(n, t0, args)
            if part.response:
                parts.append(part.response)
            last = part
        expect(last is not None and last.done is True, f"last part not done=True: {last!r}")
        text = "".join(parts)
        expect(len(parts) >= 3, f"only {len(parts)} parts with text")
        same = same_text(text, plain.get("generate"))
        return f"{n} parts, last done=True, {same}"

    def show() -> str:
        r = client.show(MODEL)
        expect(r.details is not None, f"no details: {r!r}")
        return f"family={r.details.family!r} capabilities={r.capabilities}"

    def embed() -> str:
        r = client.embed(model=MODEL, input=["one", "two"])
        expect(len(r.embeddings) == 2, f"{len(r.embeddings)} embeddings for 2 inputs")
        expect(all(len(e) > 0 for e in r.embeddings), "empty vectors")
        return f"2 vectors of {len(r.embeddings[0])} floats"

    check("ollama list", models)
    check("ollama chat", chat)
    check("ollama chat(stream=True)", chat_stream)
    check("ollama generate", generate)
    check("ollama generate(stream=True)", generate_stream)
    check("ollama show", show)
    check("ollama embed", embed)
    client.close()


# The Anthropic checks' two ways through ringway (see ringway demo): the model, and the
# X-Olla-Mode header the answer must carry (None: absent).
ANTHROPIC_MODES = [
    ("translation", "gpt-4o-mini", None),
    ("passthrough", MODEL, "passthrough"),
]
DEMO_MODELS = ["llama3.2:latest", "qwen2.5:7b", "gpt-4o-mini"]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_RESULT = "15 degrees celsius, sunny"


def anthropic_checks(base: str, args: argparse.Namespace) -> None:
    import anthropic

    def client_at(url: str) -> anthropic.Anthropic:
        # api_key given: the SDK then reads no credentials from the environment or files.
        return anthropic.Anthropic(
            base_url=url, api_key="unused", timeout=args.timeout, max_retries=0
        )

    # The SDK posts to /v1/messages under its base URL: ringway's root, as Claude Code
    # uses it, and Olla's /olla/anthropic prefix.
    root = client_at(base)
    olla = client_at(base + "/olla/anthropic")
    max_tokens = 256

    def expect_mode(headers, want: str | None) -> str:
        got = headers.get("x-olla-mode")
        expect(got == want, f"X-Olla-Mode {got!r}, expected {want!r}")
        return f"X-Olla-Mode {got}" if got else "no X-Olla-Mode"

    def text_of(message) -> str:
        return "".join(b.text for b in message.content if b.type == "text")

    def expect_text_answer(message, what: str) -> str:
        text = text_of(message)
        expect(bool(text), f"{what}: no text: {message!r}")
        expect(
            message.stop_reason in ("end_turn", "max_tokens"),
            f"{what}: stop_reason {message.stop_reason!r}",
        )
        return text

    def expect_tool_use(message, what: str):
        uses = [b for b in message.content if b.type == "tool_use"]
        expect(len(uses) == 1, f"{what}: {len(uses)} tool_use blocks: {message.content!r}")
        use = uses[0]
        expect(message.stop_reason == "tool_use", f"{what}: stop_reason {message.stop_reason!r}")
        expect(use.name == WEATHER_TOOL["name"], f"{what}: tool {use.name!r}")
        expect(bool(use.id), f"{what}: tool_use without an id")
        expect(isinstance(use.input, dict), f"{what}: input is {type(use.input).__name__}: {use.input!r}")
        expect("location" in use.input, f"{what}: input without location: {use.input!r}")
        return use

    def tool_result_turn(first, use) -> list:
        """The conversation after the tool call: the assistant's blocks as received (as
        Anthropic's examples do), then the tool's result for that tool_use_id."""
        result = {"type": "tool_result", "tool_use_id": use.id, "content": WEATHER_RESULT}
        return WEATHER_QUESTION + [
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ]

    def read_stream(stream, t0: float, kind: str):
        """Reads a MessageStream to its end: the text deltas with their arrival times,
        the input_json events, and the accumulated final message."""
        parts: list[str] = []
        t_first = t_last = None
        events = json_pieces = 0
        for event in stream:
            events += 1
            guard(events, t0, args)
            if event.type == "text":
                now = time.monotonic() - t0
                t_first = now if t_first is None else t_first
                t_last = now
                parts.append(event.text)
            elif event.type == "input_json":
                json_pieces += 1
        final = stream.get_final_message()
        return parts, t_first, t_last, events, json_pieces, final

    def mode_checks(mode: str, model: str, header: str | None) -> None:
        plain: dict[str, str] = {}

        def create(client: anthropic.Anthropic, where: str) -> Callable[[], str]:
            def run() -> str:
                raw = client.messages.with_raw_response.create(
                    model=model, max_tokens=max_tokens, messages=MESSAGES
                )
                m = raw.parse()
                seen = expect_mode(raw.headers, header)
                text = expect_text_answer(m, "create")
                expect(m.model == model, f"model {m.model!r}")
                expect(m.usage is not None and m.usage.output_tokens > 0, f"usage {m.usage!r}")
                plain.setdefault("text", text)
                return (
                    f"{seen}, {len(text)} chars {short(text)}, stop_reason={m.stop_reason}, "
                    f"usage in={m.usage.input_tokens} out={m.usage.output_tokens} ({where})"
                )

            return run

        def stream() -> str:
            t0 = time.monotonic()
            with root.messages.stream(model=model, max_tokens=max_tokens, messages=MESSAGES) as s:
                seen = expect_mode(s.response.headers, header)
                parts, t_first, t_last, events, _, final = read_stream(s, t0, "text")
            text = "".join(parts)
            expect(len(parts) >= 3, f"only {len(parts)} text deltas")
            expect(text_of(final) == text, f"final text {short(text_of(final))} != deltas {short(text)}")
            expect(final.stop_reason in ("end_turn", "max_tokens"), f"stop_reason {final.stop_reason!r}")
            expect(final.usage.output_tokens > 0, f"usage {final.usage!r}")
            same = same_text(text, plain.get("text"))
            timing = timing_check("messages stream", t_first, t_last, len(parts), t0, args)
            return f"{seen}, {events} events, {len(parts)} text deltas, {same}; {timing}"

        def tools() -> str:
            raw = root.messages.with_raw_response.create(
                model=model, max_tokens=max_tokens, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]
            )
            seen = expect_mode(raw.headers, header)
            first = raw.parse()
            use = expect_tool_use(first, "tool call")
            raw = root.messages.with_raw_response.create(
                model=model,
                max_tokens=max_tokens,
                messages=tool_result_turn(first, use),
                tools=[WEATHER_TOOL],
            )
            expect_mode(raw.headers, header)
            text = expect_text_answer(raw.parse(), "after the tool_result")
            return f"{seen}, tool_use {use.name}({use.input}) id {use.id}, then {short(text)}"

        def tools_stream() -> str:
            t0 = time.monotonic()
            with root.messages.stream(
                model=model, max_tokens=max_tokens, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]
            ) as s:
                seen = expect_mode(s.response.headers, header)
                _, _, _, events, pieces, first = read_stream(s, t0, "tool")
            use = expect_tool_use(first, "streamed tool call")
            expect(pieces >= 1, "no input_json events")
            with root.messages.stream(
                model=model,
                max_tokens=max_tokens,
                messages=tool_result_turn(first, use),
                tools=[WEATHER_TOOL],
            ) as s:
                expect_mode(s.response.headers, header)
                parts, _, _, more, _, final = read_stream(s, t0, "text")
            text = expect_text_answer(final, "streamed, after the tool_result")
            expect(text == "".join(parts), f"final text {short(text)} != deltas {short(''.join(parts))}")
            return (
                f"{seen}, {events} events ({pieces} input_json), tool_use {use.name}({use.input}), "
                f"then {more} events, {short(text)}"
            )

        def count() -> str:
            r = root.messages.count_tokens(model=model, messages=MESSAGES, tools=[WEATHER_TOOL])
            expect(r.input_tokens > 0, f"input_tokens {r.input_tokens}")
            return f"input_tokens={r.input_tokens}"

        tag = f"[{mode}: {model}]"
        check(f"anthropic messages.create {tag}", create(root, "/v1/messages"))
        check(
            f"anthropic messages.create via /olla/anthropic {tag}",
            create(olla, "/olla/anthropic/v1/messages"),
        )
        check(f"anthropic messages.stream {tag}", stream)
        check(f"anthropic tool use round trip {tag}", tools)
        check(f"anthropic tool use round trip, streamed {tag}", tools_stream)
        check(f"anthropic messages.count_tokens {tag}", count)

    def models() -> str:
        ids = [m.id for m in olla.models.list()]
        missing = [m for m in DEMO_MODELS if m not in ids]
        expect(not missing, f"{missing} not in {ids}")
        return f"{len(ids)} models: {ids}"

    def unknown_model() -> str:
        try:
            root.messages.create(model="no-such-model", max_tokens=16, messages=MESSAGES)
        except anthropic.NotFoundError as e:
            body = e.body
            expect(isinstance(body, dict) and body.get("type") == "error", f"body {body!r}")
            error = body.get("error")
            expect(
                isinstance(error, dict) and error.get("type") and error.get("message"),
                f"error {error!r}",
            )
            return f"NotFoundError {e.status_code}: {error['type']}: {short(error['message'])}"
        raise CheckFailed("no error for an unknown model")

    for mode, model, header in ANTHROPIC_MODES:
        mode_checks(mode, model, header)
    check("anthropic models.list (/olla/anthropic/v1/models)", models)
    check("anthropic unknown model", unknown_model)
    root.close()
    olla.close()


def loopback_base(base: str) -> str:
    """The base URL without a trailing slash; anything but a loopback address is refused."""
    u = urlsplit(base)
    host = u.hostname or ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if u.scheme not in ("http", "https") or not ok or not u.port:
        sys.exit(f"check.py: --base must be http(s)://<loopback address>:<port>, got {base!r}")
    return base.rstrip("/")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="ringway's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--timeout", type=float, default=30.0, help="per-call timeout in seconds [30]")
    p.add_argument(
        "--token-delay-ms",
        type=float,
        default=40.0,
        help="the backends' delay between streamed tokens, for the not-batched check; 0 skips it [40]",
    )
    p.add_argument("--max-chunks", type=int, default=1000, help="upper bound on events read per stream")
    p.add_argument("--only", choices=["openai", "ollama", "anthropic"], help="run only one SDK's checks")
    p.add_argument(
        "--ca-file",
        help="with an https:// --base: the CA that signed ringway's certificate, the only one trusted "
        "(the OpenAI checks only)",
    )
    args = p.parse_args()
    base = loopback_base(args.base)
    if (args.ca_file is not None) != base.startswith("https://"):
        sys.exit("check.py: --ca-file goes with an https:// --base, and only with one")

    # Traffic goes to the loopback address given, never through a proxy from the environment.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"

    versions = []
    for mod in ("openai", "ollama", "anthropic"):
        try:
            versions.append(f"{mod} {importlib.metadata.version(mod)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{mod} NOT INSTALLED")
    print(f"SDK check against {base}: {', '.join(versions)}, Python {sys.version.split()[0]}", flush=True)

    t0 = time.monotonic()
    suites = {"openai": openai_checks, "ollama": ollama_checks, "anthropic": anthropic_checks}
    for name, suite in suites.items():
        if args.only and args.only != name:
            continue
        try:
            suite(base, args)
        except Exception as e:  # noqa: BLE001 - e.g. the SDK is not installed
            report(f"{name} SDK", False, f"{type(e).__name__}: {e}")

    failed = [n for n, ok, _ in results if not ok]
    passed = len(results) - len(failed)
    print(f"took {time.monotonic() - t0:.1f} s", flush=True)
    print(f"sdk-check: {passed} passed, {len(failed)} failed", flush=True)
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr, flush=True)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
