//! Fuzz targets over heads: a client's request head and a backend's response head.

use super::{
    Parsed, Snapshot, assert_span_within, check_body_after_head, check_framing, check_head_length,
    check_headers, connection_tokens, defaults, header_fields, parse_in_two, same_outcome,
    split_points, summary,
};
use crate::http1::{self, Framing, HeadLimits, Header, RequestHead, ResponseHead, Span};
use crate::routing::{self, Route};

impl Snapshot for RequestHead {
    type Fields = (
        (Span, Span, u8, usize, Framing),
        (bool, bool, bool, bool),
        [Option<Span>; 5],
        super::HeaderFields,
    );

    fn fields(&self, headers: &[Header]) -> Self::Fields {
        (
            (
                self.method,
                self.target,
                self.minor_version,
                self.len,
                self.body,
            ),
            (
                self.keep_alive,
                self.expect_continue,
                self.is_head,
                self.connection_names_headers,
            ),
            [
                self.host,
                self.request_id,
                self.session_id,
                self.authorization,
                self.api_key,
            ],
            header_fields(headers),
        )
    }
}

impl Snapshot for ResponseHead {
    type Fields = ((u16, Span, usize, Framing, bool, bool), super::HeaderFields);

    fn fields(&self, headers: &[Header]) -> Self::Fields {
        (
            (
                self.status,
                self.reason,
                self.len,
                self.body,
                self.keep_alive,
                self.connection_names_headers,
            ),
            header_fields(headers),
        )
    }
}

fn parse_request(data: &[u8], limits: &HeadLimits) -> Parsed<RequestHead> {
    let mut headers = Vec::new();
    http1::parse_request(data, limits, &mut headers).map(|h| h.map(|h| (h, headers)))
}

fn parse_response(data: &[u8], limits: &HeadLimits, was_head: bool) -> Parsed<ResponseHead> {
    let mut headers = Vec::new();
    http1::parse_response(data, limits, was_head, &mut headers).map(|h| h.map(|h| (h, headers)))
}

/// Fuzz target `request_head`: a client's request head (and whatever follows it).
///
/// Parses `data` with the default limits. When a head is complete: its length is at most
/// the input's and the limit, every span lies inside the head, the header count is
/// within the limit, framing and flags agree with the method and version, hop-by-hop
/// headers are never forwarded, re-parsing exactly the head's bytes gives the same head,
/// `routing::classify` maps the target to an upstream path that is still a path, and the
/// bytes after the head are consumed by the body framing within bounds. Whatever the
/// outcome, parsing the same bytes delivered in two pieces (the proxy parses again on
/// the grown buffer) gives the same outcome as parsing them whole.
pub fn request_head(data: &[u8]) {
    let defaults = defaults();
    let limits = &defaults.limits;
    let whole = parse_request(data, limits);
    let head_len = match &whole {
        Ok(Some((head, _))) => Some(head.len),
        _ => None,
    };
    match &whole {
        Ok(Some((head, headers))) => {
            check_request_head(data, head, headers, limits);
            // The head is self-delimiting: its own bytes parse to the same head.
            let again = parse_request(&data[..head.len], limits);
            assert!(
                matches!(again, Ok(Some(_))),
                "the head alone does not parse"
            );
            assert_eq!(summary(&again), summary(&whole));
            let target = head.target.get(data);
            if let Route::Forward { strip, .. } = routing::classify(target) {
                assert!(strip <= target.len());
                assert!(
                    target[strip..].starts_with(b"/"),
                    "the upstream path does not start with /"
                );
            }
            check_body_after_head(&data[head.len..], head.body, defaults.max_body_bytes);
        }
        Ok(None) => assert!(
            data.len() <= limits.max_bytes,
            "an oversized head waits for more"
        ),
        Err(_) => {}
    }
    for split in split_points(data, head_len) {
        let staged = parse_in_two(data, split, |d, h| http1::parse_request(d, limits, h));
        assert!(
            same_outcome(&staged, &whole),
            "parsing in two pieces (split at {split}) gave {:?}, parsing whole {:?}",
            summary(&staged.parsed),
            summary(&whole)
        );
    }
}

fn check_request_head(data: &[u8], head: &RequestHead, headers: &[Header], limits: &HeadLimits) {
    let len = head.len;
    check_head_length(data, len, limits);
    assert_span_within(head.method, len, "method");
    assert_span_within(head.target, len, "target");
    for (span, what) in [
        (head.host, "host"),
        (head.request_id, "request id"),
        (head.session_id, "session id"),
        (head.authorization, "authorization"),
        (head.api_key, "api key"),
    ] {
        if let Some(span) = span {
            assert_span_within(span, len, what);
        }
    }
    let method = head.method.get(data);
    let target = head.target.get(data);
    assert!(!method.is_empty(), "empty method");
    assert_ne!(method, b"CONNECT");
    assert!(
        target.starts_with(b"/") || (target == b"*" && method == b"OPTIONS"),
        "a target that is not origin-form was accepted"
    );
    assert!(head.minor_version <= 1);
    if head.minor_version == 1 {
        assert!(head.host.is_some(), "an HTTP/1.1 request without Host");
    }
    assert_eq!(head.is_head, method == b"HEAD");
    match head.body {
        Framing::Chunked => assert_eq!(head.minor_version, 1),
        Framing::Length(n) => assert!(n > 0),
        Framing::Empty => {}
        Framing::UntilClose => panic!("a request framed until close"),
    }
    if head.expect_continue {
        assert_eq!(head.minor_version, 1);
    }
    // Spans of the recognised headers come from headers of that kind.
    let values = |kind: http1::HeaderKind| {
        headers
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| h.value.get(data).trim_ascii())
    };
    if let Some(host) = head.host {
        assert!(values(http1::HeaderKind::Host).any(|v| v == host.get(data)));
    }
    // X-Olla-Session-ID wins over X-Session-ID (the last one of its name, the first).
    let named = |n: &'static [u8]| {
        headers
            .iter()
            .filter(move |h| h.name.get(data).eq_ignore_ascii_case(n))
            .map(|h| h.value.get(data).trim_ascii())
    };
    let session_id = named(b"x-olla-session-id")
        .next_back()
        .or_else(|| named(b"x-session-id").next());
    assert_eq!(head.session_id.map(|s| s.get(data)), session_id);
    if let Some(auth) = head.authorization {
        assert!(values(http1::HeaderKind::Authorization).any(|v| v == auth.get(data)));
    }
    check_framing(data, headers, head.body);
    let (close, keep_alive) = connection_tokens(data, headers);
    assert_eq!(
        head.keep_alive,
        !close && (head.minor_version == 1 || keep_alive),
        "keep-alive does not follow the version and Connection"
    );
    check_headers(data, len, headers, head.connection_names_headers, limits);
}

/// Fuzz target `response_head`: a backend's response head (and whatever follows it),
/// for a request that was `HEAD` and one that was not.
///
/// The same checks as `request_head`: bounds of the head and of every span (the reason
/// phrase included, which the proxy copies to the client), header count, framing rules
/// (RFC 9112 §6.3: no body after HEAD, 1xx, 204 or 304; a connection that ends the body
/// is not kept alive), re-parsing the head's bytes alone, body framing over the rest, and
/// the same outcome when the bytes arrive in two pieces.
pub fn response_head(data: &[u8]) {
    for was_head in [false, true] {
        response_head_once(data, was_head);
    }
}

fn response_head_once(data: &[u8], was_head: bool) {
    let limits = &defaults().limits;
    let whole = parse_response(data, limits, was_head);
    let head_len = match &whole {
        Ok(Some((head, _))) => Some(head.len),
        _ => None,
    };
    match &whole {
        Ok(Some((head, headers))) => {
            check_response_head(data, head, headers, limits, was_head);
            let again = parse_response(&data[..head.len], limits, was_head);
            assert!(
                matches!(again, Ok(Some(_))),
                "the head alone does not parse"
            );
            assert_eq!(summary(&again), summary(&whole));
            check_body_after_head(&data[head.len..], head.body, u64::MAX);
        }
        Ok(None) => assert!(
            data.len() <= limits.max_bytes,
            "an oversized head waits for more"
        ),
        Err(_) => {}
    }
    for split in split_points(data, head_len) {
        let staged = parse_in_two(data, split, |d, h| {
            http1::parse_response(d, limits, was_head, h)
        });
        assert!(
            same_outcome(&staged, &whole),
            "parsing in two pieces (split at {split}) gave {:?}, parsing whole {:?}",
            summary(&staged.parsed),
            summary(&whole)
        );
    }
}

fn check_response_head(
    data: &[u8],
    head: &ResponseHead,
    headers: &[Header],
    limits: &HeadLimits,
    was_head: bool,
) {
    let len = head.len;
    check_head_length(data, len, limits);
    assert_span_within(head.reason, len, "reason phrase");
    // What the proxy copies into the client's status line.
    let reason = head.reason.get(data);
    assert!(!reason.contains(&b'\n') && !reason.contains(&b'\r'));
    assert!(head.status <= 999);
    // httparse accepted `HTTP/1.0` or `HTTP/1.1`, after any empty lines.
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let minor_version = match &data[start..start + 8] {
        b"HTTP/1.0" => 0,
        b"HTTP/1.1" => 1,
        other => panic!("a response of version {other:?}"),
    };
    let bodyless =
        was_head || (100..200).contains(&head.status) || matches!(head.status, 204 | 304);
    if head.body != Framing::Empty {
        assert!(
            !bodyless,
            "a body framed as {:?} where none is allowed",
            head.body
        );
        if let Framing::Length(n) = head.body {
            assert!(n > 0);
        }
    }
    check_framing(data, headers, head.body);
    let (close, keep_alive) = connection_tokens(data, headers);
    assert_eq!(
        head.keep_alive,
        head.body != Framing::UntilClose && !close && (minor_version == 1 || keep_alive),
        "keep-alive does not follow the framing, version and Connection"
    );
    check_headers(data, len, headers, head.connection_names_headers, limits);
}
