//! Anthropic's Messages API served by OpenAI-compatible backends, as Olla's translator
//! does: on the request path of an `/olla/anthropic/v1/...` route, between reading the
//! client's body and forwarding, and again between the backend's response and the relay.
//!
//! ```text
//! client (Anthropic)            ringway                        backend (OpenAI)
//! POST /v1/messages ───► request::to_openai ───────────► POST /v1/chat/completions
//!                        (Translated: model, stream, input-token estimate)
//! message JSON      ◄─── response::from_openai ◄──────── chat.completion JSON
//! Anthropic SSE     ◄─── stream::StreamTranslator ◄───── chat.completion.chunk SSE
//! error body        ◄─── errors::{from_status, from_openai_body} ◄── 4xx/5xx body
//! POST .../count_tokens ─► count::count_tokens (local estimate, no backend)
//! GET /v1/models    ◄─── models_list (from the catalogue's model names)
//! ```
//!
//! The entry points: `request::to_openai`, `response::from_openai`,
//! `stream::StreamTranslator`, `errors::{ErrorType::from_status, from_openai_body, write_error}`,
//! `count::count_tokens`, `models_list`.
//!
//! Everything here is a pure, synchronous function over bytes, writing into a buffer the
//! caller owns and reuses: no I/O, no clock, no randomness (message ids are derived from
//! the backend's completion id), so every mapping is unit-tested on its own.

pub(crate) mod count;
pub(crate) mod errors;
mod json;
pub(crate) mod request;
pub(crate) mod response;
#[cfg(any(test, feature = "bench"))]
pub(crate) mod samples;
mod shape;
pub(crate) mod stream;

use errors::TranslateError;

use xxhash_rust::xxh3::xxh3_64;

/// Writes Anthropic's `GET /v1/models` list: each model as `{"type":"model","id",
/// "display_name","created_at"}` (Olla: the display name is the id; `created_at` is one
/// stable time, Olla's process start, since backends publish no creation date), all in
/// one page (`has_more: false`; `first_id`/`last_id` null when empty).
pub(crate) fn models_list<'a>(
    names: impl IntoIterator<Item = &'a str>,
    created_at: &str,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"data\":[");
    let (mut first, mut last) = (None, None);
    for name in names {
        if first.is_some() {
            out.push(b',');
        }
        first.get_or_insert(name);
        last = Some(name);
        out.extend_from_slice(b"{\"type\":\"model\",\"id\":");
        json::push_str(out, name);
        out.extend_from_slice(b",\"display_name\":");
        json::push_str(out, name);
        out.extend_from_slice(b",\"created_at\":");
        json::push_str(out, created_at);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"has_more\":false,\"first_id\":");
    json::push_opt_str(out, first);
    out.extend_from_slice(b",\"last_id\":");
    json::push_opt_str(out, last);
    out.push(b'}');
}

/// A Unix time as RFC 3339 in UTC (`2024-01-31T08:05:09Z`), for `models_list`'s
/// `created_at`.
pub(crate) fn rfc3339(unix_secs: u64) -> String {
    // The log's timestamp (`2024-01-31T08:05:09.000Z`) without its milliseconds.
    let stamp = crate::log::Timestamp(unix_secs * 1000).to_string();
    format!("{}Z", &stamp[..stamp.len() - 5])
}

/// The Anthropic message id for a completion: `msg_` and the backend's id without its
/// `chatcmpl-` prefix (only `[A-Za-z0-9_-]` kept, at most 64). Backends whose ids are
/// short and repeat (Ollama's are `chatcmpl-` and a number below 1000) get 16 hex digits
/// of a hash of `seed` (the completion body, or the stream's first chunk) appended:
/// clients such as Claude Code group content by message id, so ids must not repeat
/// across turns. (Olla draws random ids; these are reproducible, for tests and logs.)
pub(super) fn message_id(openai_id: Option<&str>, seed: &[u8]) -> String {
    let id = openai_id.unwrap_or("");
    let rest = ["chatcmpl-", "chatcmpl_", "cmpl-"]
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .unwrap_or(id);
    let mut out = String::with_capacity(4 + 64 + 17);
    out.push_str("msg_");
    out.extend(
        rest.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(64),
    );
    if out.len() < 4 + 16 {
        if out.len() > 4 {
            out.push('_');
        }
        out.push_str(&format!("{:016x}", xxh3_64(seed)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_list_has_anthropics_shape() {
        let mut out = Vec::new();
        models_list(["llama3.1:8b", "qwen\"2"], "2024-01-01T00:00:00Z", &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "data": [
                    {"type":"model","id":"llama3.1:8b","display_name":"llama3.1:8b","created_at":"2024-01-01T00:00:00Z"},
                    {"type":"model","id":"qwen\"2","display_name":"qwen\"2","created_at":"2024-01-01T00:00:00Z"},
                ],
                "has_more": false, "first_id": "llama3.1:8b", "last_id": "qwen\"2",
            })
        );
        out.clear();
        models_list([], "2024-01-01T00:00:00Z", &mut out);
        assert_eq!(
            out,
            br#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200 + 3_723), "2024-01-01T01:02:03Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn message_ids_derive_from_the_completion_id() {
        let long = "chatcmpl-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
        assert_eq!(
            message_id(Some(long), b"x"),
            "msg_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
        );
        // Short (Ollama) ids get a hash of the seed: two turns do not share an id.
        let (a, b) = (
            message_id(Some("chatcmpl-123"), b"turn 1"),
            message_id(Some("chatcmpl-123"), b"turn 2"),
        );
        assert!(
            a.starts_with("msg_123_") && a.len() == "msg_123_".len() + 16,
            "{a}"
        );
        assert_ne!(a, b);
        let none = message_id(None, b"body");
        assert!(none.starts_with("msg_") && none.len() == 4 + 16, "{none}");
        // Characters that need escaping or look odd in an id are dropped.
        let odd = message_id(Some("chatcmpl-ab\"c/d\\e f0123456789abcdef"), b"");
        assert_eq!(odd, "msg_abcdef0123456789abcdef");
    }
}
