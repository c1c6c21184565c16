//! Anthropic's error shape, `{"type":"error","error":{"type":...,"message":...}}`: the
//! answer when a request cannot be translated, when the backend answers with an error
//! status (its OpenAI-, Ollama- or FastAPI-shaped body translated), and the `error` event
//! of a stream.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{self, Str};

/// Anthropic's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Api,
    Timeout,
    Overloaded,
}

impl ErrorType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::Permission => "permission_error",
            ErrorType::NotFound => "not_found_error",
            ErrorType::RequestTooLarge => "request_too_large",
            ErrorType::RateLimit => "rate_limit_error",
            ErrorType::Api => "api_error",
            ErrorType::Timeout => "timeout_error",
            ErrorType::Overloaded => "overloaded_error",
        }
    }

    /// The type for an HTTP status, as Olla's `WriteError` maps it: 400, 401, 403, 404,
    /// 413, 429 to their types; 408 and 504 `timeout_error`; everything else, 500, 502
    /// and 503 included, `api_error` (Olla: `overloaded_error` is Anthropic's own
    /// infrastructure being overloaded, not a busy backend). One addition: 529, which is
    /// Anthropic's own "overloaded" status, is `overloaded_error` (Olla: `api_error`).
    pub(crate) fn from_status(status: u16) -> ErrorType {
        match status {
            400 => ErrorType::InvalidRequest,
            401 => ErrorType::Authentication,
            403 => ErrorType::Permission,
            404 => ErrorType::NotFound,
            413 => ErrorType::RequestTooLarge,
            429 => ErrorType::RateLimit,
            408 | 504 => ErrorType::Timeout,
            529 => ErrorType::Overloaded,
            _ => ErrorType::Api,
        }
    }

    /// The type for an OpenAI error `type` string, for an error with no status (an error
    /// chunk in a stream): the OpenAI names and the usual server ones.
    fn from_openai_type(kind: &str) -> Option<ErrorType> {
        Some(match kind {
            "invalid_request_error" | "BadRequestError" | "bad_request" => {
                ErrorType::InvalidRequest
            }
            "authentication_error" | "AuthenticationError" => ErrorType::Authentication,
            "permission_error" | "PermissionDeniedError" => ErrorType::Permission,
            "not_found_error" | "NotFoundError" => ErrorType::NotFound,
            "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" => {
                ErrorType::RateLimit
            }
            "timeout_error" | "timeout" => ErrorType::Timeout,
            "overloaded_error" | "server_overloaded" => ErrorType::Overloaded,
            "server_error" | "api_error" | "internal_error" | "InternalServerError" => {
                ErrorType::Api
            }
            _ => return None,
        })
    }
}

/// A request or response that could not be translated: the status and Anthropic body to
/// answer with. A request's errors are the client's (400, `invalid_request_error`, not
/// worth retrying anywhere); a response's are the backend's (502, `api_error`: another
/// backend might answer properly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TranslateError {
    pub(crate) status: u16,
    pub(crate) kind: ErrorType,
    pub(crate) message: String,
}

impl TranslateError {
    pub(crate) fn client(message: impl Into<String>) -> TranslateError {
        TranslateError {
            status: 400,
            kind: ErrorType::InvalidRequest,
            message: message.into(),
        }
    }

    pub(crate) fn upstream(message: impl Into<String>) -> TranslateError {
        TranslateError {
            status: 502,
            kind: ErrorType::Api,
            message: message.into(),
        }
    }

    /// The Anthropic error body for this error.
    pub(crate) fn write_body(&self, request_id: Option<&str>, out: &mut Vec<u8>) {
        write_error(self.kind, &self.message, request_id, out);
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for TranslateError {}

/// Appends `{"type":"error","error":{"type":kind,"message":message}}`, with Olla's
/// top-level `request_id` when one is given (SDKs read it for correlation).
pub(crate) fn write_error(
    kind: ErrorType,
    message: &str,
    request_id: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    json::push_str(out, message);
    out.push(b'}');
    if let Some(id) = request_id {
        out.extend_from_slice(b",\"request_id\":");
        json::push_str(out, id);
    }
    out.push(b'}');
}

/// The message a backend's error body carries, when a client should see it, and longest
/// kept of a body that is not JSON (a proxy's plain-text or HTML page).
const MAX_PLAIN_MESSAGE: usize = 512;

/// Olla's message when the backend's body says nothing usable.
const NO_MESSAGE: &str = "Backend error";

/// The error shapes backends answer with: OpenAI's `{"error":{"message","type","code"}}`,
/// Ollama's `{"error":"..."}`, vLLM's flat `{"object":"error","message","type","code"}`,
/// FastAPI's `{"detail":"..."}`.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    code: Option<&'a RawValue>,
}

/// The Anthropic type and message for a backend's error body. `status` is the backend's
/// HTTP status, which decides the type when known (as in Olla); an error chunk inside a
/// stream has none, and its own `code` (when an HTTP status) or `type` decides.
pub(crate) fn from_openai_body(status: Option<u16>, body: &[u8]) -> (ErrorType, String) {
    let (message, kind, code) = match serde_json::from_slice::<Body<'_>>(body) {
        Ok(b) => parse_body(b),
        Err(_) => (plain_message(body), None, None),
    };
    let from_code = code
        .and_then(|c| c.get().trim_matches('"').parse::<u16>().ok())
        .filter(|c| (400..600).contains(c));
    let kind = match status.or(from_code) {
        Some(status) => ErrorType::from_status(status),
        None => kind
            .and_then(|k| ErrorType::from_openai_type(&k))
            .unwrap_or(ErrorType::Api),
    };
    (kind, message.unwrap_or_else(|| NO_MESSAGE.to_owned()))
}

type Parsed<'a> = (Option<String>, Option<Str<'a>>, Option<&'a RawValue>);

fn parse_body(b: Body<'_>) -> Parsed<'_> {
    let nonempty = |s: Option<Str<'_>>| s.filter(|s| !s.is_empty()).map(|s| s.0.into_owned());
    if let Some(err) = b.error {
        if let Ok(inner) = serde_json::from_str::<Inner<'_>>(err.get()) {
            return (nonempty(inner.message), inner.kind, inner.code);
        }
        if let Ok(s) = serde_json::from_str::<Str<'_>>(err.get()) {
            return (nonempty(Some(s)), None, None);
        }
    }
    if b.message.is_some() {
        return (nonempty(b.message), b.kind, b.code);
    }
    let detail = b
        .detail
        .map(|d| match serde_json::from_str::<Str<'_>>(d.get()) {
            Ok(s) => s.0.into_owned(),
            // FastAPI's validation errors: a list of objects; shown as JSON.
            Err(_) => d.get().to_owned(),
        });
    (detail.filter(|d| !d.is_empty()), None, None)
}

/// A body that is not JSON, as a message: its text, trimmed and cut to a few hundred
/// bytes (on a char boundary); none when empty.
fn plain_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut end = text.len().min(MAX_PLAIN_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: ErrorType, message: &str) -> String {
        let mut out = Vec::new();
        write_error(kind, message, None, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn statuses_map_as_in_olla() {
        let cases = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (408, "timeout_error"),
            (504, "timeout_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "api_error"),
            (422, "api_error"),
            (529, "overloaded_error"),
        ];
        for (status, kind) in cases {
            assert_eq!(ErrorType::from_status(status).as_str(), kind, "{status}");
        }
    }

    #[test]
    fn error_bodies_have_anthropics_shape() {
        assert_eq!(
            body(ErrorType::NotFound, "model \"x\" not found"),
            r#"{"type":"error","error":{"type":"not_found_error","message":"model \"x\" not found"}}"#
        );
        let mut out = Vec::new();
        TranslateError::client("messages: required").write_body(Some("req-1"), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: required"},"request_id":"req-1"}"#
        );
        assert_eq!(TranslateError::upstream("x").status, 502);
    }

    #[test]
    fn backend_error_bodies_translate() {
        let openai = br#"{"error":{"message":"context too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert_eq!(
            from_openai_body(Some(400), openai),
            (ErrorType::InvalidRequest, "context too long".into())
        );
        // The status decides the type, as in Olla.
        assert_eq!(from_openai_body(Some(503), openai).0, ErrorType::Api);
        let ollama = br#"{"error":"model 'llama9' not found"}"#;
        assert_eq!(
            from_openai_body(Some(404), ollama),
            (ErrorType::NotFound, "model 'llama9' not found".into())
        );
        let vllm = br#"{"object":"error","message":"bad temperature","type":"BadRequestError","param":null,"code":400}"#;
        assert_eq!(
            from_openai_body(None, vllm),
            (ErrorType::InvalidRequest, "bad temperature".into())
        );
        let fastapi = br#"{"detail":"Not Found"}"#;
        assert_eq!(from_openai_body(Some(404), fastapi).1, "Not Found");
        let plain = b"  <html>502 Bad Gateway</html>\n";
        assert_eq!(
            from_openai_body(Some(502), plain),
            (ErrorType::Api, "<html>502 Bad Gateway</html>".into())
        );
        assert_eq!(from_openai_body(Some(500), b"").1, "Backend error");
        assert_eq!(
            from_openai_body(Some(500), br#"{"error":{}}"#).1,
            "Backend error"
        );
        let long = "é".repeat(600);
        assert!(from_openai_body(Some(500), long.as_bytes()).1.len() <= MAX_PLAIN_MESSAGE);
    }

    #[test]
    fn stream_errors_without_a_status_use_their_code_or_type() {
        let coded = br#"{"error":{"message":"busy","type":"server_error","code":503}}"#;
        assert_eq!(from_openai_body(None, coded).0, ErrorType::Api);
        let limited = br#"{"error":{"message":"slow down","type":"rate_limit_exceeded"}}"#;
        assert_eq!(from_openai_body(None, limited).0, ErrorType::RateLimit);
        let llamacpp = br#"{"error":{"code":500,"message":"failed","type":"server_error"}}"#;
        assert_eq!(
            from_openai_body(None, llamacpp),
            (ErrorType::Api, "failed".into())
        );
        let unknown = br#"{"error":{"message":"?","type":"weird"}}"#;
        assert_eq!(from_openai_body(None, unknown).0, ErrorType::Api);
        let timeout = br#"{"error":{"message":"t","code":"504"}}"#;
        assert_eq!(from_openai_body(None, timeout).0, ErrorType::Timeout);
    }
}
