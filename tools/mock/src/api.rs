//! Routes and response rendering: OpenAI, Anthropic, Ollama and LM Studio shapes, health,
//! `/mock/*`. Tool calls and Anthropic's streams are pre-rendered events (`StreamSpec::events`).
//!
//! Completions (the benchmark hot path) are written with `write!` straight into the
//! connection's reusable buffer; names from outside go through serde_json for escaping.
//! Everything else is built as a `serde_json::Value`, which is shorter to read.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::Shared;
use crate::conn::{Fail, Meta};
use crate::kv::{self, KvCache, Prefill};

pub(crate) const JSON: &str = "application/json";
/// Completion tokens cycle through these; none needs JSON escaping.
const VOCAB: [&str; 12] = [
    "Hello", " from", " the", " mock", " backend", ",", " one", " token", " at", " a", " time", ".",
];
const EMBEDDING: [f32; 8] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];

/// Writing into a `Vec<u8>` cannot fail.
macro_rules! w {
    ($out:expr, $($fmt:tt)*) => {{ let _ = write!($out, $($fmt)*); }};
}

/// A JSON string literal.
fn js(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// What the connection should send; any body is already rendered into its scratch buffer.
pub(crate) enum Reply {
    Full {
        status: u16,
        ctype: &'static str,
        delay: Duration,
        /// The simulated prefill, reported in the head (completions with `kv_cache` on).
        kv: Option<Prefill>,
    },
    Stream(StreamSpec),
    Close,
    Hang,
    /// These bytes, then close (wire-level misbehaviour: `X-Mock-Fail: bad-head|no-reason`).
    Raw(&'static [u8]),
    /// These bytes, then the connection stays open, never read, this long (or until stop),
    /// and closes (`X-Mock-Fail: early-401|bad-chunk-*`).
    RawHold(&'static [u8], Duration),
}

const EARLY_401: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n{\"error\":{\"message\":\"early\",\"type\":\"auth\"}}";
const EARLY_413: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 47\r\n\r\n{\"error\":{\"message\":\"too large\",\"type\":\"size\"}}";
/// The head every `bad-chunk-*` answer starts with.
macro_rules! chunked_head {
    ($first_chunk:literal) => {
        concat!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            $first_chunk
        )
        .as_bytes()
    };
}
const STALE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Mock-Stale: yes\r\n\r\nSTALE";
const IDLE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
/// How long `early-401` keeps the connection open: far longer than any test waits.
const EARLY_HOLD: Duration = Duration::from_secs(30);
/// How long `bad-chunk-*` keep the connection open: the proxy must not wait for more.
const BAD_CHUNK_HOLD: Duration = Duration::from_secs(5);

/// The answer decided from the head alone, before (and without) reading the body:
/// `X-Mock-Fail: early-401|early-413`, except on `/mock/*`.
pub(crate) fn early(req: &httparse::Request<'_, '_>, meta: &Meta) -> Option<Reply> {
    if req.path.unwrap_or("").starts_with("/mock/") {
        return None;
    }
    match meta.fail {
        Fail::Early401 => Some(Reply::RawHold(EARLY_401, EARLY_HOLD)),
        Fail::Early413 => Some(Reply::Raw(EARLY_413)),
        _ => None,
    }
}

/// What `X-Mock-Fail` writes on the idle connection after a complete answer, and whether
/// the connection stays open after it (on every route, `/mock/*` included).
pub(crate) fn unsolicited(fail: Fail) -> Option<(&'static [u8], bool)> {
    match fail {
        Fail::StaleResponse => Some((STALE, true)),
        Fail::Idle408 => Some((IDLE_408, false)),
        Fail::HeadThenBody => Some((b"hello", true)),
        _ => None,
    }
}

pub(crate) enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Mock Status",
    }
}

pub(crate) fn head(
    out: &mut Vec<u8>,
    sh: &Shared,
    status: u16,
    ctype: &str,
    framing: Framing,
    keep: bool,
    kv: Option<&Prefill>,
) {
    w!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\n",
        reason(status)
    );
    match framing {
        Framing::Length(n) => w!(out, "Content-Length: {n}\r\n"),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::UntilClose => {}
    }
    out.extend_from_slice(&sh.backend_header);
    if let (429 | 503, Some(secs)) = (status, sh.control.retry_after()) {
        w!(out, "Retry-After: {secs}\r\n");
    }
    if let Some(p) = kv {
        // Whole milliseconds, rounded: enough for a benchmark driver's sanity checks.
        let ms = (p.delay.as_micros() + 500) / 1000;
        w!(
            out,
            "X-Mock-Prompt-Tokens: {}\r\nX-Mock-Cached-Tokens: {}\r\nX-Mock-Prefill-Ms: {ms}\r\n",
            p.prompt_tokens,
            p.cached_tokens
        );
    }
    let connection: &[u8] = if keep {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    };
    out.extend_from_slice(connection);
}

pub(crate) fn error_json(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

fn reply_json(out: &mut Vec<u8>, status: u16, v: &Value) -> Reply {
    let _ = serde_json::to_writer(&mut *out, v);
    Reply::Full {
        status,
        ctype: JSON,
        delay: Duration::ZERO,
        kv: None,
    }
}

fn invalid(out: &mut Vec<u8>, status: u16, code: &str, message: &str) -> Reply {
    reply_json(
        out,
        status,
        &error_json(message, "invalid_request_error", code),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Chat,
    Completion,
    Embeddings,
    Models,
    /// Anthropic's Messages API, as Ollama, vLLM, llama.cpp and LM Studio serve it.
    Messages,
    CountTokens,
    OChat,
    OGenerate,
    OEmbed,
    OEmbeddings,
    Tags,
    Version,
    Show,
    LmModels,
    /// Ollama's models held in memory.
    Ps,
    /// Prometheus text: the queue depth as vLLM and llama.cpp report it.
    Metrics,
    Root,
    Health,
}

fn route(path: &str) -> Option<(&'static str, Route)> {
    use Route::*;
    Some(match path {
        // OpenAI's API, also under LM Studio's REST prefixes and lemonade's /api/v1.
        "/v1/chat/completions" | "/api/v0/chat/completions" | "/api/v1/chat/completions" => {
            ("POST", Chat)
        }
        "/v1/completions" | "/api/v0/completions" | "/api/v1/completions" => ("POST", Completion),
        "/v1/embeddings" | "/api/v0/embeddings" | "/api/v1/embeddings" => ("POST", Embeddings),
        "/v1/models" | "/api/v1/models" => ("GET", Models),
        "/v1/messages" => ("POST", Messages),
        "/v1/messages/count_tokens" => ("POST", CountTokens),
        "/api/chat" => ("POST", OChat),
        "/api/generate" => ("POST", OGenerate),
        "/api/embed" => ("POST", OEmbed),
        "/api/embeddings" => ("POST", OEmbeddings),
        "/api/tags" => ("GET", Tags),
        "/api/version" => ("GET", Version),
        "/api/show" => ("POST", Show),
        "/api/v0/models" => ("GET", LmModels),
        "/api/ps" => ("GET", Ps),
        "/metrics" => ("GET", Metrics),
        "/" => ("GET", Root),
        "/health" | "/api/v1/health" => ("GET", Health),
        _ => return None,
    })
}

/// Whether a request is a health check (counted apart from the traffic).
pub(crate) fn is_health_check(req: &httparse::Request<'_, '_>) -> bool {
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    req.method == Some("GET") && matches!(route(path), Some((_, Route::Root | Route::Health)))
}

/// Picks and renders the response to one complete request.
pub(crate) fn handle(
    sh: &Shared,
    req: &httparse::Request<'_, '_>,
    meta: &Meta,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Reply {
    out.clear();
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or("/"));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    // `/mock/*` is the test harness's own channel: no overrides apply to it.
    if let Some(name) = path.strip_prefix("/mock/") {
        return mock_route(sh, name, req, meta, body, out);
    }
    match meta.fail {
        Fail::Close => return Reply::Close,
        Fail::Hang => return Reply::Hang,
        Fail::BadHead => return Reply::Raw(b"HTTP/1.1 garbage\r\n\r\n"),
        // Valid HTTP/1.1: the reason phrase may be empty (RFC 9112 §4).
        Fail::NoReason => {
            return Reply::Raw(b"HTTP/1.1 200\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
        Fail::BadChunkHex => return bad_chunk(chunked_head!("zz\r\nhello\r\n")),
        Fail::BadChunkLf => return bad_chunk(chunked_head!("5\nhello\n")),
        // 17 hex digits: more than a u64 holds.
        Fail::BadChunkSize => return bad_chunk(chunked_head!("10000000000000000\r\nhello\r\n")),
        Fail::BadChunkOverrun => return bad_chunk(chunked_head!("3\r\nhello\r\n")),
        // The early modes were answered before the body (`early`); the others answer
        // normally and misbehave afterwards (`unsolicited`, `conn`).
        Fail::None
        | Fail::MidStream
        | Fail::StaleResponse
        | Fail::Idle408
        | Fail::HeadThenBody
        | Fail::Early401
        | Fail::Early413 => {}
    }
    if !is_health_check(req) {
        if let Some(message) = unauthorised(sh, req) {
            let e = error_json(&message, "invalid_request_error", "invalid_api_key");
            return reply_json(out, 401, &e);
        }
    }
    let overridden = || sh.control.status_override(req.method == Some("POST"));
    if let Some(status) = meta.status.or_else(overridden) {
        let e = error_json(
            &format!("mock status {status}"),
            "server_error",
            "mock_status",
        );
        // After the request's own first-token delay, if it sets one: a slow failure.
        let _ = serde_json::to_writer(&mut *out, &e);
        return Reply::Full {
            status,
            ctype: JSON,
            delay: meta.first_delay.unwrap_or_default(),
            kv: None,
        };
    }
    let route = match route(path) {
        None => return invalid(out, 404, "not_found", &format!("no route for {path}")),
        Some((want, _)) if want != method => {
            return invalid(
                out,
                405,
                "method_not_allowed",
                &format!("{method} not allowed on {path}"),
            );
        }
        Some((_, route)) => route,
    };
    let created = unix_now();
    let v = match route {
        Route::Root | Route::Health => {
            let ok = sh.control.healthy();
            let body: &[u8] = match (route, ok) {
                (Route::Root, true) => b"Ollama is running",
                (Route::Root, false) => b"Ollama is unhealthy",
                (_, true) => br#"{"status":"ok"}"#,
                (_, false) => br#"{"status":"unhealthy"}"#,
            };
            out.extend_from_slice(body);
            let ctype = if route == Route::Root {
                "text/plain; charset=utf-8"
            } else {
                JSON
            };
            let status = if ok { 200 } else { 503 };
            return Reply::Full {
                status,
                ctype,
                delay: Duration::ZERO,
                kv: None,
            };
        }
        Route::Version => json!({"version": "0.0.0-mock"}),
        // vLLM's shape (a plain OpenAI list plus root, parent and max_model_len).
        Route::Models => json!({"object": "list", "data": model_list(sh, |m| json!({
            "id": m, "object": "model", "created": created, "owned_by": "ringway-mock",
            "root": m, "parent": null, "max_model_len": 8192}))}),
        Route::LmModels => {
            let loaded = sh.control.loaded();
            let state = |m: &str| match loaded.iter().any(|l| l == m) {
                true => "loaded",
                false => "not-loaded",
            };
            json!({"object": "list", "data": model_list(sh, |m| json!({
            "id": m, "object": "model", "type": lm_type(m), "publisher": "ringway-mock", "arch": family(m),
            "compatibility_type": "gguf", "quantization": "Q4_K_M", "state": state(m),
            "max_context_length": 8192}))})
        }
        Route::Ps => {
            let held: Vec<Value> = sh.control.loaded().iter().map(|m| json!({
                "name": m, "model": m, "size": 1_000_000, "digest": digest(m), "details": details(m),
                "expires_at": "2099-01-01T00:00:00Z", "size_vram": 1_000_000})).collect();
            json!({ "models": held })
        }
        Route::Metrics => {
            let n = sh.control.queue_depth();
            let models = sh.control.with_models(<[String]>::to_vec);
            let model = models.first().map_or("", String::as_str);
            let page = format!(
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
                 # TYPE vllm:num_requests_waiting gauge\n\
                 vllm:num_requests_waiting{{engine=\"0\",model_name={model:?}}} {n}.0\n\
                 # HELP vllm:num_requests_running Number of requests in model execution batches.\n\
                 # TYPE vllm:num_requests_running gauge\n\
                 vllm:num_requests_running{{engine=\"0\",model_name={model:?}}} 0.0\n\
                 # HELP llamacpp:requests_deferred Number of requests deferred.\n\
                 # TYPE llamacpp:requests_deferred gauge\n\
                 llamacpp:requests_deferred {n}\n"
            );
            out.extend_from_slice(page.as_bytes());
            return Reply::Full {
                status: 200,
                ctype: "text/plain; version=0.0.4",
                delay: Duration::ZERO,
                kv: None,
            };
        }
        Route::Tags => json!({"models": model_list(sh, |m| json!({
            "name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 1_000_000,
            "digest": digest(m), "details": details(m)}))}),
        _ => return model_route(sh, route, meta, body, out),
    };
    reply_json(out, 200, &v)
}

/// Why a request lacks the credential `api_key` or `require_header` asks for (None when
/// it has it). The first header of each name counts, its value trimmed.
fn unauthorised(sh: &Shared, req: &httparse::Request<'_, '_>) -> Option<String> {
    let first = |name: &str| {
        let h = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name));
        h.map(|h| h.value.trim_ascii())
    };
    if let Some(key) = &sh.config.api_key {
        let given = first("authorization").and_then(|v| v.strip_prefix(b"Bearer "));
        if given != Some(key.as_bytes()) {
            return Some("invalid API key".to_owned());
        }
    }
    match &sh.config.require_header {
        Some((name, value)) if first(name) != Some(value.as_bytes()) => {
            Some(format!("missing or invalid {name} header"))
        }
        _ => None,
    }
}

fn bad_chunk(bytes: &'static [u8]) -> Reply {
    Reply::RawHold(bytes, BAD_CHUNK_HOLD)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn model_list(sh: &Shared, entry: impl Fn(&str) -> Value) -> Vec<Value> {
    sh.control
        .with_models(|ms| ms.iter().map(|m| entry(m)).collect())
}

/// Ollama guesses the family from the model name; so do we ("llama3.2:latest" → "llama").
fn family(model: &str) -> &str {
    let end = model
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(model.len());
    if end == 0 { "llama" } else { &model[..end] }
}

/// LM Studio's `type`: embedding models are told apart from chat models.
fn lm_type(model: &str) -> &'static str {
    if model.contains("embed") {
        "embeddings"
    } else {
        "llm"
    }
}

fn details(model: &str) -> Value {
    json!({"format": "gguf", "family": family(model), "parameter_size": "7B", "quantization_level": "Q4_K_M"})
}

/// A stable, model-specific fake sha256 (FNV-1a of the name, widened).
fn digest(model: &str) -> String {
    let h = model.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}{:016x}{h:016x}{:016x}", !h, !h)
}

/// The fields of a completion/embedding request body that matter here; the rest is skipped.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    /// `/api/show` also accepts the model as `name`.
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    stream: Option<bool>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    options: Option<Options>,
    input: Option<Value>,
    stream_options: Option<StreamOptions>,
    /// OpenAI's `[{"type":"function","function":{"name","parameters"}}]` or Anthropic's
    /// `[{"name","input_schema"}]`.
    tools: Option<Value>,
    tool_choice: Option<Value>,
    /// Left unparsed: only looked at when a tool call may be answered (`tool_call`).
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
}

/// OpenAI's `stream_options`: `include_usage` asks for a last chunk with the usage.
#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Options {
    num_predict: Option<i64>,
}

fn model_route(sh: &Shared, route: Route, meta: &Meta, body: &[u8], out: &mut Vec<u8>) -> Reply {
    let ollama = matches!(
        route,
        Route::OChat | Route::OGenerate | Route::OEmbed | Route::OEmbeddings | Route::Show
    );
    let anthropic = matches!(route, Route::Messages | Route::CountTokens);
    let fail = |out: &mut Vec<u8>, status, code, msg: &str| match (ollama, anthropic) {
        (true, _) => reply_json(out, status, &json!({ "error": msg })),
        (_, true) => reply_json(out, status, &anthropic_error(status, msg)),
        _ => invalid(out, status, code, msg),
    };
    let req: Body<'_> = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return fail(out, 400, "invalid_json", &format!("invalid JSON body: {e}")),
    };
    let Some(model) = req.model.as_deref().or(req.name.as_deref()) else {
        return fail(out, 400, "missing_model", "model is required");
    };
    // Ollama's implicit tag: "llama3.2" names "llama3.2:latest".
    let served = |m: &String| m == model || m.strip_suffix(":latest") == Some(model);
    if !sh.control.with_models(|ms| ms.iter().any(served)) {
        let msg = match (ollama, anthropic) {
            (true, _) => format!("model \"{model}\" not found, try pulling it first"),
            (_, true) => format!("model: {model}"),
            _ => format!("The model `{model}` does not exist"),
        };
        return fail(out, 404, "model_not_found", &msg);
    }
    // A prompt-token estimate: ~4 bytes per token over the whole body is close enough.
    // (Completions with `kv_cache` on count the prompt text instead, see `completion`.)
    let prompt = (body.len() / 4).max(1);
    // One vector per input string; a bare token array is one input.
    let count = match &req.input {
        Some(Value::Array(a)) if a.first().is_some_and(|v| !v.is_number()) => a.len(),
        _ => 1,
    };
    let v = match route {
        Route::Embeddings => json!({"object": "list", "model": model,
            "data": (0..count).map(|i| json!({"object": "embedding", "index": i, "embedding": EMBEDDING}))
                .collect::<Vec<_>>(),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}),
        Route::OEmbed => json!({"model": model, "embeddings": vec![EMBEDDING; count],
            "total_duration": 0, "load_duration": 0, "prompt_eval_count": prompt}),
        Route::OEmbeddings => json!({ "embedding": EMBEDDING }),
        Route::CountTokens => json!({ "input_tokens": anthropic_prompt(body) }),
        Route::Show => {
            json!({"modelfile": "# ringway-mock", "parameters": "", "template": "{{ .Prompt }}",
            "details": details(model), "model_info": {"general.architecture": family(model)},
            "capabilities": ["completion"]})
        }
        _ => return completion(sh, route, model, &req, meta, body, out),
    };
    reply_json(out, 200, &v)
}

fn text(out: &mut Vec<u8>, tokens: usize) {
    for i in 0..tokens {
        out.extend_from_slice(VOCAB[i % VOCAB.len()].as_bytes());
    }
}

/// `"YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"` as a JSON string (Ollama's `created_at`).
fn rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, rem) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, ns) = (rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos());
    w!(
        out,
        "\"{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ns:09}Z\""
    );
}

/// A streamed completion: every event is `prefix + "<token>" + suffix`; the prefix is
/// rendered once per stream.
pub(crate) struct StreamSpec {
    pub(crate) ctype: &'static str,
    pub(crate) tokens: usize,
    pub(crate) first_delay: Duration,
    pub(crate) token_delay: Duration,
    /// The simulated prefill, reported in the head (`kv_cache` on).
    pub(crate) kv: Option<Prefill>,
    route: Route,
    prefix: Vec<u8>,
    /// Length of the part of `prefix` shared with the final event.
    meta_len: usize,
    prompt: usize,
    started: Instant,
    /// `X-Mock-Token-Bytes`: token events are padded to at least this many bytes.
    pad_to: usize,
    /// `stream_options.include_usage` (OpenAI routes): a usage chunk before `[DONE]`.
    usage: bool,
    /// Pre-rendered writes (tool calls, Anthropic's events): when not empty, write `i` is
    /// token event `i` and the last one is the closing write; `tokens` is one less.
    events: Vec<Vec<u8>>,
}

impl StreamSpec {
    /// The non-streamed answer in `out`: JSON, after the first-token delay.
    fn json_answer(&self) -> Reply {
        Reply::Full {
            status: 200,
            ctype: JSON,
            delay: self.first_delay,
            kv: self.kv,
        }
    }
}

impl StreamSpec {
    pub(crate) fn token(&self, i: usize, out: &mut Vec<u8>) {
        if let Some(event) = self.events.get(i) {
            return out.extend_from_slice(event);
        }
        // Up to the event's closing brace, which the padding field goes before.
        let (suffix, end) = match self.route {
            Route::Chat => ("},\"finish_reason\":null}]", "}\n\n"),
            Route::Completion => (",\"index\":0,\"finish_reason\":null}]", "}\n\n"),
            Route::OChat => ("},\"done\":false", "}\n"),
            _ => (",\"done\":false", "}\n"),
        };
        let start = out.len();
        out.extend_from_slice(&self.prefix);
        w!(out, "\"{}\"{suffix}", VOCAB[i % VOCAB.len()]);
        let len = out.len() - start + end.len();
        if len < self.pad_to {
            pad(out, self.pad_to - len);
        }
        out.extend_from_slice(end.as_bytes());
    }

    /// The closing event(s): finish_reason + `[DONE]` for SSE, the `done` line for Ollama.
    pub(crate) fn finish(&self, out: &mut Vec<u8>) {
        if let Some(last) = self.events.last() {
            return out.extend_from_slice(last);
        }
        out.extend_from_slice(&self.prefix[..self.meta_len]);
        let end: &[u8] = match self.route {
            Route::Chat => br#""index":0,"delta":{},"finish_reason":"stop"}]}"#,
            Route::Completion => br#""text":"","index":0,"finish_reason":"stop"}]}"#,
            _ => {
                out.extend_from_slice(if self.route == Route::OChat {
                    b"\"\"}"
                } else {
                    b"\"\""
                });
                ollama_done(out, self.started.elapsed(), self.prompt, self.tokens);
                out.push(b'\n');
                return;
            }
        };
        out.extend_from_slice(end);
        if self.usage {
            // As OpenAI and vLLM send it: the chunk's usual fields, no choices, the usage.
            out.extend_from_slice(b"\n\n");
            out.extend_from_slice(&self.prefix[..self.meta_len - 1]); // up to `"choices":[`
            let (p, n) = (self.prompt, self.tokens);
            w!(
                out,
                r#"],"usage":{{"prompt_tokens":{p},"completion_tokens":{n},"total_tokens":{}}}}}"#,
                p + n
            );
        }
        out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    }
}

/// A `"mock_padding"` field of about `n` bytes (never less than the field's own 18).
fn pad(out: &mut Vec<u8>, n: usize) {
    const FIELD: &[u8] = b",\"mock_padding\":\"";
    out.extend_from_slice(FIELD);
    let fill = n.saturating_sub(FIELD.len() + 1);
    out.resize(out.len() + fill, b'x');
    out.push(b'"');
}

fn ollama_done(out: &mut Vec<u8>, took: Duration, prompt: usize, n: usize) {
    let ns = took.as_nanos();
    w!(
        out,
        r#","done":true,"done_reason":"stop","total_duration":{ns},"load_duration":0,"#
    );
    w!(out, r#""prompt_eval_count":{prompt},"eval_count":{n}}}"#);
}

fn completion(
    sh: &Shared,
    route: Route,
    model: &str,
    req: &Body<'_>,
    meta: &Meta,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Reply {
    let ollama = matches!(route, Route::OChat | Route::OGenerate);
    let cap = match ollama {
        // num_predict < 0 means "unlimited" in Ollama.
        true => req
            .options
            .as_ref()
            .and_then(|o| usize::try_from(o.num_predict?).ok()),
        false => req.max_completion_tokens.or(req.max_tokens),
    };
    let wanted = meta.tokens.unwrap_or(sh.config.tokens);
    let tokens = wanted.min(cap.unwrap_or(usize::MAX));
    let mut kv = sh
        .kv
        .as_ref()
        .map(|kv| prefill(sh, kv, route, body, tokens));
    let prompt = match (kv, route) {
        (Some(p), _) => p.prompt_tokens,
        // What `/v1/messages/count_tokens` says for the same messages.
        (None, Route::Messages) => anthropic_prompt(body),
        (None, _) => (body.len() / 4).max(1),
    };
    // The header beats the simulation, which beats the fixed delay.
    let first_delay = (meta.first_delay)
        .or(kv.map(|p| p.delay))
        .unwrap_or(sh.config.first_token_delay);
    if let Some(p) = &mut kv {
        // Report the delay actually applied, so a driver can check its measurements.
        p.delay = first_delay;
    }
    let stream = req.stream.unwrap_or(ollama);
    let mut spec = StreamSpec {
        ctype: if ollama {
            "application/x-ndjson"
        } else {
            "text/event-stream"
        },
        tokens,
        first_delay,
        token_delay: meta.token_delay.unwrap_or(sh.config.token_delay),
        kv,
        route,
        prefix: Vec::new(),
        meta_len: 0,
        prompt,
        started: Instant::now(),
        pad_to: meta.token_bytes,
        usage: !ollama
            && (req.stream_options.as_ref()).is_some_and(|o| o.include_usage == Some(true)),
        events: Vec::new(),
    };
    let tool = match route {
        Route::Chat | Route::Messages => tool_call(req, meta),
        _ => None,
    };
    if route == Route::Messages {
        return messages(sh, model, tool, tokens < wanted, spec, stream, out);
    }
    if let Some(tool) = tool {
        return openai_tool_call(sh, model, &tool, spec, stream, out);
    }
    // Streams render the shared prefix once; full responses render straight into `out`.
    let buf = if stream { &mut spec.prefix } else { &mut *out };
    if ollama {
        // {"model":..,"created_at":..,"message":{"role":"assistant","content":  (or "response":)
        buf.extend_from_slice(br#"{"model":"#);
        js(buf, model);
        buf.extend_from_slice(br#","created_at":"#);
        rfc3339(buf, SystemTime::now());
        let field: &[u8] = match route {
            Route::OChat => br#","message":{"role":"assistant","content":"#,
            _ => br#","response":"#,
        };
        buf.extend_from_slice(field);
    } else {
        // [data: ]{"id":..,"object":..,"created":..,"model":..,"system_fingerprint":..,"choices":[{
        let (id, object) = match (route, stream) {
            (Route::Chat, false) => ("chatcmpl", "chat.completion"),
            (Route::Chat, true) => ("chatcmpl", "chat.completion.chunk"),
            _ => ("cmpl", "text_completion"),
        };
        let (n, created) = (sh.stats.requests(), unix_now());
        w!(
            buf,
            r#"{}{{"id":"{id}-{n}","object":"{object}","created":{created},"model":"#,
            if stream { "data: " } else { "" }
        );
        js(buf, model);
        w!(
            buf,
            r#","system_fingerprint":{},"choices":[{{"#,
            sh.name_json
        );
    }
    if stream {
        spec.meta_len = spec.prefix.len();
        match route {
            Route::Chat => spec
                .prefix
                .extend_from_slice(br#""index":0,"delta":{"content":"#),
            Route::Completion => spec.prefix.extend_from_slice(br#""text":"#),
            _ => {}
        }
        return Reply::Stream(spec);
    }
    match route {
        Route::Chat => {
            out.extend_from_slice(br#""index":0,"message":{"role":"assistant","content":""#)
        }
        Route::Completion => out.extend_from_slice(br#""text":""#),
        _ => out.push(b'"'),
    }
    text(out, tokens);
    match route {
        Route::Chat => out.extend_from_slice(br#""},"finish_reason":"stop"}],"#),
        Route::Completion => {
            out.extend_from_slice(br#"","index":0,"logprobs":null,"finish_reason":"stop"}],"#)
        }
        Route::OChat => out.extend_from_slice(b"\"}"),
        _ => out.push(b'"'),
    }
    if ollama {
        ollama_done(out, first_delay, prompt, tokens);
    } else {
        let total = prompt + tokens;
        w!(
            out,
            r#""usage":{{"prompt_tokens":{prompt},"completion_tokens":{tokens},"total_tokens":{total}}}}}"#
        );
    }
    Reply::Full {
        status: 200,
        ctype: JSON,
        delay: first_delay,
        kv,
    }
}

/// An Anthropic error body (`not_found_error` for 404s, `invalid_request_error` else).
fn anthropic_error(status: u16, message: &str) -> Value {
    let kind = match status {
        404 => "not_found_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Input tokens of an Anthropic request: ~4 bytes per token of its prompt text (system
/// and messages, as the KV simulation reads them), so `/v1/messages/count_tokens` and
/// `/v1/messages` agree on the same messages whatever else the bodies hold.
fn anthropic_prompt(body: &[u8]) -> usize {
    (kv::prompt_text(body, true).len() / 4).max(1)
}

/// The tool call a chat is answered with.
struct ToolCall {
    name: String,
    /// The arguments as a JSON object text: every property of the tool's schema, "mock".
    args: String,
}

impl ToolCall {
    /// The arguments in pieces of about 6 bytes (at char boundaries), at least two when
    /// they are longer than one char: how they are streamed.
    fn pieces(&self) -> Vec<&str> {
        let a = self.args.as_str();
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < a.len() {
            let mut end = (start + 6).min(a.len());
            while !a.is_char_boundary(end) {
                end += 1;
            }
            pieces.push(&a[start..end]);
            start = end;
        }
        if let [only] = pieces[..] {
            if let Some((i, _)) = only.char_indices().nth(1) {
                pieces = vec![&only[..i], &only[i..]];
            }
        }
        pieces
    }
}

/// Whether (and with what) to answer with a tool call: `X-Mock-Tool-Call: NAME`, or the
/// request offers tools and `tool_choice` does not say `none` (the forced tool, else the
/// first). Never when the last message carries a tool's result (OpenAI's `role: "tool"`,
/// Anthropic's `tool_result` block): then the round trip ends with text.
fn tool_call(req: &Body<'_>, meta: &Meta) -> Option<ToolCall> {
    let tools = req.tools.as_ref().and_then(Value::as_array);
    let tools = tools.map_or(&[][..], Vec::as_slice);
    let choice = req.tool_choice.as_ref();
    let none = choice.is_some_and(|c| c == "none" || c["type"] == "none");
    if meta.tool_call.is_none() && (tools.is_empty() || none) {
        return None;
    }
    if let Some(messages) = req.messages {
        let messages: Value = serde_json::from_str(messages.get()).unwrap_or_default();
        let last = messages.as_array().and_then(|m| m.last());
        let last = last.unwrap_or(&Value::Null);
        let result = |p: &Value| p["type"] == "tool_result";
        let parts = last["content"].as_array().map_or(&[][..], Vec::as_slice);
        if last["role"] == "tool" || parts.iter().any(result) {
            return None;
        }
    }
    fn name_of(t: &Value) -> Option<&str> {
        t["function"]["name"].as_str().or(t["name"].as_str())
    }
    // OpenAI's {"type":"function","function":{"name":..}}, Anthropic's {"type":"tool","name":..}.
    let forced = choice.and_then(|c| c["function"]["name"].as_str().or(c["name"].as_str()));
    let wanted = meta.tool_call.as_deref().or(forced);
    let tool = match wanted {
        Some(w) => tools.iter().find(|t| name_of(t) == Some(w)),
        None => tools.first(),
    };
    let name = wanted.or(tool.and_then(name_of)).unwrap_or("mock_tool");
    let schema = tool.map(|t| match &t["function"]["parameters"] {
        Value::Null => &t["input_schema"],
        p => p,
    });
    let keys: Vec<&str> = match schema.and_then(|s| s["properties"].as_object()) {
        Some(props) => props.keys().map(String::as_str).collect(),
        None => vec!["location", "unit"],
    };
    let args: serde_json::Map<String, Value> = (keys.iter())
        .map(|k| ((*k).to_owned(), json!("mock")))
        .collect();
    Some(ToolCall {
        name: name.to_owned(),
        args: Value::Object(args).to_string(),
    })
}

/// One SSE event as bytes: `data: <json>\n\n`, after `event: <name>\n` if named.
fn sse_event(out: &mut Vec<u8>, name: Option<&str>, v: &Value) {
    if let Some(name) = name {
        w!(out, "event: {name}\n");
    }
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// An OpenAI chat answered with a tool call. Streamed as OpenAI does: the call's id, type
/// and name with empty arguments, then the arguments in pieces, then `finish_reason`
/// (and the usage chunk if asked for) and `[DONE]`. One completion token per piece.
fn openai_tool_call(
    sh: &Shared,
    model: &str,
    tool: &ToolCall,
    mut spec: StreamSpec,
    stream: bool,
    out: &mut Vec<u8>,
) -> Reply {
    let n = sh.stats.requests();
    let (id, call_id) = (format!("chatcmpl-{n}"), format!("call_mock{n}"));
    let pieces = tool.pieces();
    let (prompt, tokens) = (spec.prompt, pieces.len());
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": tokens,
        "total_tokens": prompt + tokens});
    let object = if stream {
        "chat.completion.chunk"
    } else {
        "chat.completion"
    };
    let chunk = |choices: Value| {
        json!({"id": id, "object": object, "created": unix_now(), "model": model,
            "system_fingerprint": sh.config.name, "choices": choices})
    };
    if !stream {
        let mut v = chunk(
            json!([{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": call_id, "type": "function",
                "function": {"name": tool.name, "arguments": tool.args}}]},
            "logprobs": null, "finish_reason": "tool_calls"}]),
        );
        v["usage"] = usage;
        let _ = serde_json::to_writer(&mut *out, &v);
        return spec.json_answer();
    }
    let delta = |d: Value| chunk(json!([{"index": 0, "delta": d, "finish_reason": null}]));
    let mut first = Vec::new();
    let call = json!([{"index": 0, "id": call_id, "type": "function",
        "function": {"name": tool.name, "arguments": ""}}]);
    let d = json!({"role": "assistant", "content": null, "tool_calls": call});
    sse_event(&mut first, None, &delta(d));
    spec.events.push(first);
    for piece in &pieces {
        let mut e = Vec::new();
        let d = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
        sse_event(&mut e, None, &delta(d));
        spec.events.push(e);
    }
    let mut last = Vec::new();
    let done = json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]);
    sse_event(&mut last, None, &chunk(done));
    if spec.usage {
        let mut v = chunk(json!([]));
        v["usage"] = usage;
        sse_event(&mut last, None, &v);
    }
    last.extend_from_slice(b"data: [DONE]\n\n");
    spec.events.push(last);
    spec.tokens = spec.events.len() - 1;
    Reply::Stream(spec)
}

/// `POST /v1/messages`: Anthropic's Messages API, a text block (the usual tokens) or a
/// `tool_use` block. Streamed: `message_start` and `content_block_start` go with the first
/// delta, one `content_block_delta` per token (or arguments piece), and
/// `content_block_stop`, `message_delta` and `message_stop` in the closing write.
fn messages(
    sh: &Shared,
    model: &str,
    tool: Option<ToolCall>,
    capped: bool,
    mut spec: StreamSpec,
    stream: bool,
    out: &mut Vec<u8>,
) -> Reply {
    let n = sh.stats.requests();
    let id = format!("msg_mock{n}");
    let prompt = spec.prompt;
    let (stop_reason, tokens) = match (&tool, capped) {
        (Some(t), _) => ("tool_use", t.pieces().len()),
        (None, true) => ("max_tokens", spec.tokens),
        (None, false) => ("end_turn", spec.tokens),
    };
    let tool_id = format!("toolu_mock{n}");
    if !stream {
        let block = match &tool {
            Some(t) => {
                let input: Value = serde_json::from_str(&t.args).unwrap_or_default();
                json!({"type": "tool_use", "id": tool_id, "name": t.name, "input": input})
            }
            None => {
                let mut t = Vec::new();
                text(&mut t, tokens);
                json!({"type": "text", "text": String::from_utf8_lossy(&t)})
            }
        };
        let v = json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": prompt, "output_tokens": tokens}});
        let _ = serde_json::to_writer(&mut *out, &v);
        return spec.json_answer();
    }
    let mut first = Vec::new();
    let start = json!({"type": "message_start", "message": {"id": id, "type": "message",
        "role": "assistant", "model": model, "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": prompt, "output_tokens": 0}}});
    sse_event(&mut first, Some("message_start"), &start);
    let block = match &tool {
        Some(t) => json!({"type": "tool_use", "id": tool_id, "name": t.name, "input": {}}),
        None => json!({"type": "text", "text": ""}),
    };
    let block = json!({"type": "content_block_start", "index": 0, "content_block": block});
    sse_event(&mut first, Some("content_block_start"), &block);
    let deltas: Vec<Value> = match &tool {
        Some(t) => (t.pieces().iter())
            .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
            .collect(),
        None => (0..tokens)
            .map(|i| json!({"type": "text_delta", "text": VOCAB[i % VOCAB.len()]}))
            .collect(),
    };
    // The first delta goes with the opening events.
    let mut write = first;
    for d in &deltas {
        let e = json!({"type": "content_block_delta", "index": 0, "delta": d});
        sse_event(&mut write, Some("content_block_delta"), &e);
        spec.events.push(std::mem::take(&mut write));
    }
    if deltas.is_empty() {
        spec.events.push(write);
    }
    let mut last = Vec::new();
    let stop = json!({"type": "content_block_stop", "index": 0});
    sse_event(&mut last, Some("content_block_stop"), &stop);
    let delta = json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": tokens}});
    sse_event(&mut last, Some("message_delta"), &delta);
    sse_event(
        &mut last,
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    );
    spec.events.push(last);
    spec.tokens = spec.events.len() - 1;
    Reply::Stream(spec)
}

/// Runs the KV-cache simulation for a completion that will generate `tokens` tokens.
fn prefill(sh: &Shared, kv: &KvCache, route: Route, body: &[u8], tokens: usize) -> Prefill {
    let chat = matches!(route, Route::Chat | Route::OChat);
    let mut text = kv::prompt_text(body, chat);
    let prompt_len = text.len();
    // Then what the answer adds to the next turn's prompt text, so that turn finds it
    // cached: an assistant message for chats, the bare continuation for plain completions
    // (a client continuing a completion sends prompt + answer + more).
    if chat {
        text.push_str("assistant\n");
    }
    for i in 0..tokens {
        text.push_str(VOCAB[i % VOCAB.len()]);
    }
    if chat {
        text.push_str("\n\n");
    }
    let p = kv.prefill(text.as_bytes(), prompt_len);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    (sh.stats.prompt_tokens).fetch_add(count(p.prompt_tokens), Relaxed);
    (sh.stats.cached_tokens).fetch_add(count(p.cached_tokens), Relaxed);
    p
}

fn mock_route(
    sh: &Shared,
    name: &str,
    req: &httparse::Request<'_, '_>,
    meta: &Meta,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Reply {
    let (c, s) = (&sh.control, &sh.stats);
    let v = match (name, req.method.unwrap_or("")) {
        ("echo", method) => {
            let target = req.path.unwrap_or("");
            let (path, query) = target
                .split_once('?')
                .map_or((target, None), |(p, q)| (p, Some(q)));
            let headers: Vec<_> = req
                .headers
                .iter()
                .map(|h| (h.name, String::from_utf8_lossy(h.value)))
                .collect();
            json!({"method": method, "path": path, "query": query,
                "version": if meta.http10 { "HTTP/1.0" } else { "HTTP/1.1" },
                "headers": headers, "body": String::from_utf8_lossy(body)})
        }
        ("stats", "GET") => json!({"name": sh.config.name,
            "connections_accepted": s.connections_accepted(), "open_connections": s.open_connections(),
            "requests": s.requests(), "health_checks": s.health_checks(), "completed_streams": s.completed_streams(),
            "aborted_streams": s.aborted_streams(), "prompt_tokens": s.prompt_tokens(),
            "cached_tokens": s.cached_tokens(), "tls_handshakes": s.tls_handshakes()}),
        ("control", "POST") => {
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return invalid(out, 400, "invalid_json", &format!("invalid JSON body: {e}"));
                }
            };
            if let Some(status) = v.get("status_override") {
                c.set_status_override(status.as_u64().and_then(|s| u16::try_from(s).ok()));
            }
            if let Some(healthy) = v.get("healthy").and_then(Value::as_bool) {
                c.set_healthy(healthy);
            }
            match v.get("loaded") {
                Some(Value::Array(ms)) => c.set_loaded(
                    ms.iter()
                        .filter_map(|m| Some(m.as_str()?.to_owned()))
                        .collect(),
                ),
                Some(Value::Null) => c.set_all_loaded(),
                _ => {}
            }
            if let Some(n) = v.get("queue_depth").and_then(Value::as_u64) {
                c.set_queue_depth(u32::try_from(n).unwrap_or(u32::MAX));
            }
            if let Some(ms) = v.get("models").and_then(Value::as_array) {
                c.set_models(
                    ms.iter()
                        .filter_map(|m| Some(m.as_str()?.to_owned()))
                        .collect(),
                );
            }
            json!({"status_override": c.status_override(false), "healthy": c.healthy(),
                "models": c.with_models(<[String]>::to_vec), "loaded": c.loaded(),
                "queue_depth": c.queue_depth()})
        }
        ("stats" | "control", _) => {
            return invalid(out, 405, "method_not_allowed", "method not allowed");
        }
        _ => return invalid(out, 404, "not_found", &format!("no mock route {name}")),
    };
    reply_json(out, 200, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |secs| {
            let mut out = Vec::new();
            rfc3339(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0), "\"1970-01-01T00:00:00.000000000Z\"");
        assert_eq!(at(1_767_225_600), "\"2026-01-01T00:00:00.000000000Z\"");
        assert_eq!(at(951_829_261), "\"2000-02-29T13:01:01.000000000Z\"");
    }

    #[test]
    fn canned_answers_have_their_content_length() {
        for raw in [EARLY_401, EARLY_413, STALE, IDLE_408] {
            let text = std::str::from_utf8(raw).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "));
            assert_eq!(length, Some(&*body.len().to_string()), "{head}");
        }
    }

    #[test]
    fn padding_is_exact_above_the_field_size() {
        for n in [0, 1, 17, 18, 19, 100] {
            let mut out = Vec::new();
            pad(&mut out, n);
            assert_eq!(out.len(), n.max(18), "{n}");
        }
    }

    #[test]
    fn families_and_routes() {
        assert_eq!(
            (
                family("llama3.2:latest"),
                family("qwen2.5:7b"),
                family("7b")
            ),
            ("llama", "qwen", "llama")
        );
        assert_eq!(route("/api/v1/health"), Some(("GET", Route::Health)));
        assert_eq!(route("/v1/nope"), None);
    }
}
