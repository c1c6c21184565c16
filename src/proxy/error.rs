//! Everything that can fail while handling one request, in the request path's one error
//! enum: which side caused it, whether another endpoint may be tried, and, in one place
//! ([`ProxyError::rescue`]), the HTTP status, the OpenAI-style JSON error body and
//! whether the client connection survives.

use http::StatusCode;

use crate::api::anthropic::errors::{self, ErrorType, TranslateError};
use crate::http1::{ChunkError, HeadError};
use crate::ratelimit::Limit;
use crate::routing::Scope;
use crate::routing::decision::Decision;

#[derive(Debug)]
pub(crate) enum ProxyError {
    // ---- the client's side ----
    /// The client went away or broke the connection: nothing can be answered.
    ClientGone,
    /// The client did not send its request in time.
    ClientTimeout,
    /// An unacceptable request head.
    BadHead(HeadError),
    BadChunkedBody(ChunkError),
    BodyTooLarge {
        limit: u64,
    },
    /// The body's `model` holds control bytes (no JSON string can: RFC 8259 §7).
    InvalidModel,
    NotFound,
    UnknownProvider,
    /// An operator page asked for from elsewhere than loopback.
    Forbidden,
    /// `server.api_keys` is set and the request carries none of them.
    Unauthorized,
    /// The shard already serves `server.max_connections` connections.
    TooManyConnections,
    /// Beyond a limit of `[rate_limits]`: a client's, the global one, or every eligible
    /// endpoint's.
    RateLimited {
        limit: Limit,
        retry_after_s: u32,
    },

    /// No endpoint lists the requested model.
    ModelNotFound {
        model: String,
        decision: Decision,
    },
    /// The model is listed, but only by endpoints that are unavailable.
    ModelUnavailable {
        model: String,
        decision: Decision,
    },

    // ---- the endpoint's side ----
    /// No endpoint in the route's scope is available; when the body names a model that
    /// only endpoints outside the scope serve, the decision that refused it.
    NoEndpoint {
        scope: Scope,
        decision: Option<Decision>,
    },
    /// Every eligible endpoint was tried and failed; `tried` names them.
    AllFailed {
        tried: Vec<String>,
        last: Box<ProxyError>,
    },
    /// Could not connect (refused, reset, unreachable, timed out).
    Connect {
        endpoint: String,
        cause: std::io::Error,
    },
    /// The endpoint closed or reset the connection before any response byte.
    ClosedBeforeResponse {
        endpoint: String,
    },
    /// The endpoint answered a status in `proxy.retry_on_status`.
    RetriedStatus {
        endpoint: String,
        status: u16,
    },
    /// No response head within `proxy.response_timeout_ms`.
    ResponseTimeout {
        endpoint: String,
    },
    /// `proxy.request_timeout_ms` passed before a response started.
    RequestTimeout,
    /// The endpoint answered something that is not valid HTTP/1.
    BadResponse {
        endpoint: String,
        what: &'static str,
    },

    // ---- the Messages API (`route/messages.rs`, `relay/translated.rs`) ----
    /// A Messages request that cannot be translated for an OpenAI-compatible endpoint.
    Messages(TranslateError),
    /// The endpoint's answer to a translated request cannot be translated back.
    Untranslatable {
        endpoint: String,
        message: String,
    },
}

/// How a failed request is answered.
pub(crate) struct Rescue {
    pub(crate) status: StatusCode,
    /// OpenAI error `type`.
    pub(crate) kind: &'static str,
    /// OpenAI error `code`.
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Whether the client connection may carry another request afterwards.
    pub(crate) keep_alive: bool,
    /// Seconds for a `Retry-After` header.
    pub(crate) retry_after: Option<u32>,
    /// Whether to send `WWW-Authenticate: Bearer` (401).
    pub(crate) challenge: bool,
    /// The model routing decision that refused the request (its `X-Olla-Routing-*`).
    pub(crate) decision: Option<Decision>,
    /// Anthropic's error type, when it is not the status's (`anthropic_type`).
    pub(crate) anthropic: Option<ErrorType>,
}

impl ProxyError {
    /// Whether the endpoint failed (it answered wrongly or not in time), as opposed to
    /// the client or the request's own deadline: the endpoint's breaker counts it.
    pub(crate) fn is_endpoints_fault(&self) -> bool {
        matches!(
            self,
            ProxyError::BadResponse { .. } | ProxyError::ResponseTimeout { .. }
        )
    }

    /// Whether the request may be tried on another endpoint: only when the failed
    /// endpoint cannot have produced anything the client saw.
    pub(crate) fn retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ClosedBeforeResponse { .. }
                | ProxyError::RetriedStatus { .. }
        )
    }

    /// The one mapping from error to response. `None` when nothing can be sent.
    pub(crate) fn rescue(&self) -> Option<Rescue> {
        use ProxyError::*;
        let r = |status, kind, code, message: String, keep_alive| Rescue {
            status,
            kind,
            code,
            message,
            keep_alive,
            retry_after: None,
            challenge: false,
            decision: None,
            anthropic: None,
        };
        const CLIENT: &str = "invalid_request_error";
        const SERVER: &str = "server_error";
        Some(match self {
            ClientGone => return None,
            ClientTimeout => r(
                StatusCode::REQUEST_TIMEOUT,
                CLIENT,
                "request_timeout",
                "the request was not received in time".into(),
                false,
            ),
            BadHead(e) => {
                let status = match e {
                    HeadError::TooLarge | HeadError::TooManyHeaders => {
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                    }
                    HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
                    HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
                };
                r(status, CLIENT, "bad_request", e.describe().into(), false)
            }
            BadChunkedBody(ChunkError::TooLarge) => return BodyTooLarge { limit: 0 }.rescue(),
            BadChunkedBody(e) => r(
                StatusCode::BAD_REQUEST,
                CLIENT,
                "bad_request",
                format!("malformed chunked body: {e}"),
                false,
            ),
            BodyTooLarge { limit } => r(
                StatusCode::PAYLOAD_TOO_LARGE,
                CLIENT,
                "request_too_large",
                if *limit > 0 {
                    format!("request body larger than the limit of {limit} bytes")
                } else {
                    "request body larger than the limit (server.max_body_bytes)".into()
                },
                false,
            ),
            InvalidModel => r(
                StatusCode::BAD_REQUEST,
                CLIENT,
                "invalid_request_error",
                "the body's 'model' holds raw control characters, which a JSON string cannot; escape them".into(),
                true,
            ),
            NotFound => r(
                StatusCode::NOT_FOUND,
                CLIENT,
                "not_found",
                "no route for this path; ringway serves /v1/*, /api/*, /olla/<provider>/*, /olla/proxy/* and /internal/*".into(),
                true,
            ),
            UnknownProvider => r(
                StatusCode::NOT_FOUND,
                CLIENT,
                "not_found",
                format!(
                    "unknown provider in /olla/<provider>/; known: proxy, {}",
                    crate::endpoint_type::EndpointType::names()
                ),
                true,
            ),
            Forbidden => r(
                StatusCode::FORBIDDEN,
                CLIENT,
                "forbidden",
                "operator pages answer loopback clients only (server.internal_access)".into(),
                true,
            ),
            Unauthorized => Rescue {
                challenge: true,
                ..r(
                    StatusCode::UNAUTHORIZED,
                    CLIENT,
                    "invalid_api_key",
                    "missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'".into(),
                    true,
                )
            },
            TooManyConnections => Rescue {
                retry_after: Some(1),
                ..r(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER,
                    "too_many_connections",
                    "ringway is at its connection limit (server.max_connections); retry shortly".into(),
                    false,
                )
            },
            // OpenAI's own 429s say type "requests" (or "tokens"), code "rate_limit_exceeded".
            RateLimited {
                limit,
                retry_after_s,
            } => Rescue {
                retry_after: Some(*retry_after_s),
                ..r(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    "rate_limit_exceeded",
                    format!("rate limit exceeded ({}); retry after {retry_after_s} s", limit.key()),
                    true,
                )
            },
            ModelNotFound { model, decision } => Rescue {
                decision: Some(*decision),
                ..r(
                    StatusCode::NOT_FOUND,
                    CLIENT,
                    "model_not_found",
                    format!("the model '{model}' does not exist on any endpoint (see /v1/models)"),
                    true,
                )
            },
            ModelUnavailable { model, decision } => Rescue {
                retry_after: Some(1),
                decision: Some(*decision),
                ..r(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER,
                    "model_unavailable",
                    format!("the model '{model}' is only on endpoints that are unavailable now"),
                    true,
                )
            },
            NoEndpoint { scope, decision } => Rescue {
                retry_after: Some(1),
                decision: *decision,
                ..r(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER,
                    "no_healthy_endpoint",
                    format!("no available endpoint can serve this request ({})", describe(*scope)),
                    true,
                )
            },
            AllFailed { tried, last } => {
                let mut rescue = last.rescue()?;
                rescue.message = format!(
                    "all endpoints failed (tried {}); last error: {}",
                    tried.join(", "),
                    rescue.message
                );
                rescue
            }
            Connect { endpoint, cause } if cause.kind() == std::io::ErrorKind::TimedOut => r(
                StatusCode::GATEWAY_TIMEOUT,
                SERVER,
                "upstream_timeout",
                format!(
                    "endpoint {endpoint} did not accept a connection in time (proxy.connect_timeout_ms)"
                ),
                true,
            ),
            Connect { endpoint, cause } => r(
                StatusCode::BAD_GATEWAY,
                SERVER,
                "upstream_unreachable",
                format!("cannot connect to endpoint {endpoint}: {cause}"),
                true,
            ),
            ClosedBeforeResponse { endpoint } => r(
                StatusCode::BAD_GATEWAY,
                SERVER,
                "upstream_closed",
                format!("endpoint {endpoint} closed the connection without responding"),
                true,
            ),
            RetriedStatus { endpoint, status } => r(
                StatusCode::BAD_GATEWAY,
                SERVER,
                "upstream_error",
                format!("endpoint {endpoint} answered {status}"),
                true,
            ),
            ResponseTimeout { endpoint } => r(
                StatusCode::GATEWAY_TIMEOUT,
                SERVER,
                "upstream_timeout",
                format!("endpoint {endpoint} did not respond in time (proxy.response_timeout_ms)"),
                true,
            ),
            RequestTimeout => r(
                StatusCode::GATEWAY_TIMEOUT,
                SERVER,
                "request_timeout",
                "the request did not complete in time (proxy.request_timeout_ms)".into(),
                true,
            ),
            BadResponse { endpoint, what } => r(
                StatusCode::BAD_GATEWAY,
                SERVER,
                "upstream_protocol_error",
                format!("endpoint {endpoint} sent an invalid response: {what}"),
                true,
            ),
            Messages(e) => Rescue {
                anthropic: Some(e.kind),
                ..r(
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                    CLIENT,
                    "invalid_request_error",
                    e.message.clone(),
                    true,
                )
            },
            Untranslatable { endpoint, message } => r(
                StatusCode::BAD_GATEWAY,
                SERVER,
                "upstream_protocol_error",
                format!("endpoint {endpoint}'s answer cannot be translated: {message}"),
                true,
            ),
        })
    }
}

fn describe(scope: Scope) -> String {
    match scope {
        Scope::OpenAi => "OpenAI-compatible API".into(),
        Scope::Ollama => "Ollama API: needs an endpoint of type ollama".into(),
        Scope::Type(t) => format!("needs an endpoint of type {t}"),
        Scope::Any => "any endpoint".into(),
    }
}

/// The answer's body: OpenAI's error shape.
pub(crate) fn error_body(rescue: &Rescue) -> Vec<u8> {
    crate::api::error_body(&rescue.message, rescue.kind, rescue.code)
}

/// The answer's body in Anthropic's shape, for the Messages API's routes: the type its
/// status maps to (`ErrorType::from_status`), except that ringway's own 503s (no
/// endpoint can take the request now) are `overloaded_error`, which Anthropic's SDKs
/// retry.
pub(crate) fn anthropic_error_body(rescue: &Rescue, request_id: &str) -> Vec<u8> {
    let kind = rescue.anthropic.unwrap_or(match rescue.status.as_u16() {
        503 => ErrorType::Overloaded,
        status => ErrorType::from_status(status),
    });
    let mut out = Vec::with_capacity(96 + rescue.message.len());
    errors::write_error(kind, &rescue.message, Some(request_id), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let status = |e: ProxyError| e.rescue().unwrap().status.as_u16();
        assert_eq!(status(ProxyError::BadHead(HeadError::TooLarge)), 431);
        assert_eq!(status(ProxyError::BadHead(HeadError::Malformed("x"))), 400);
        assert_eq!(status(ProxyError::BadHead(HeadError::Version)), 505);
        assert_eq!(
            status(ProxyError::BadChunkedBody(ChunkError::TooLarge)),
            413
        );
        assert_eq!(status(ProxyError::BodyTooLarge { limit: 1 }), 413);
        assert_eq!(status(ProxyError::NotFound), 404);
        assert_eq!(status(ProxyError::Unauthorized), 401);
        assert!(ProxyError::Unauthorized.rescue().unwrap().challenge);
        assert_eq!(status(ProxyError::TooManyConnections), 503);
        let limited = ProxyError::RateLimited {
            limit: Limit::Client,
            retry_after_s: 7,
        }
        .rescue()
        .unwrap();
        assert_eq!(limited.status.as_u16(), 429);
        assert_eq!(limited.retry_after, Some(7));
        assert!(limited.keep_alive);
        assert!(limited.message.contains("per_ip_requests_per_minute"));
        assert_eq!(status(ProxyError::RequestTimeout), 504);
        assert_eq!(
            status(ProxyError::NoEndpoint {
                scope: Scope::Any,
                decision: None,
            }),
            503
        );
        assert_eq!(
            status(ProxyError::ResponseTimeout {
                endpoint: "a".into()
            }),
            504
        );
        let connect = || ProxyError::Connect {
            endpoint: "a".into(),
            cause: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(status(connect()), 502);
        let connect_timeout = ProxyError::Connect {
            endpoint: "a".into(),
            cause: std::io::ErrorKind::TimedOut.into(),
        };
        assert_eq!(status(connect_timeout), 504);
        assert!(ProxyError::ClientGone.rescue().is_none());
        let all = ProxyError::AllFailed {
            tried: vec!["a".into(), "b".into()],
            last: Box::new(connect()),
        };
        let rescue = all.rescue().unwrap();
        assert_eq!(rescue.status.as_u16(), 502);
        assert!(rescue.message.contains("tried a, b"), "{}", rescue.message);
    }

    #[test]
    fn only_failures_the_client_cannot_have_seen_are_retried() {
        assert!(
            ProxyError::ClosedBeforeResponse {
                endpoint: "a".into()
            }
            .retryable()
        );
        assert!(
            !ProxyError::ResponseTimeout {
                endpoint: "a".into()
            }
            .retryable()
        );
        assert!(
            !ProxyError::BadResponse {
                endpoint: "a".into(),
                what: "x"
            }
            .retryable()
        );
    }

    #[test]
    fn client_framing_errors_close_the_connection() {
        assert!(
            !ProxyError::BadHead(HeadError::Malformed("x"))
                .rescue()
                .unwrap()
                .keep_alive
        );
        assert!(
            !ProxyError::BodyTooLarge { limit: 1 }
                .rescue()
                .unwrap()
                .keep_alive
        );
        assert!(ProxyError::NotFound.rescue().unwrap().keep_alive);
    }

    #[test]
    fn error_bodies_are_openai_shaped_json() {
        let rescue = ProxyError::BadResponse {
            endpoint: "quote\"d".into(),
            what: "x",
        }
        .rescue()
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&error_body(&rescue)).unwrap();
        assert_eq!(v["error"]["code"], "upstream_protocol_error");
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("quote\"d"));
    }
}
