//! Every head the request path writes: the request for the endpoint, the endpoint's
//! response re-framed for the client with the `X-Olla-*` headers, and the heads of
//! ringway's own answers (errors, pages, the connection-limit refusal). Pure functions
//! that append to a buffer; the phases write the buffers out.

use std::ops::Range;
use std::time::Duration;

use http::StatusCode;

use super::access::{RequestId, StickyReport};
use super::client::OwnLines;
use super::error::Rescue;
use crate::http1::{
    self, Framing, Header, HeaderKind, Lines, RequestHead, ResponseHead, Span, is_end_to_end,
    push_header,
};
use crate::routing::decision::Decision;
use crate::routing::sticky::Outcome;
use crate::routing::{Balancer, KeySource, Scope};
use crate::upstream::Endpoint;

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where a request goes: the endpoint, and how its path is rewritten for it.
pub(crate) struct UpstreamTarget<'a> {
    pub(crate) ep: &'a Endpoint,
    pub(crate) scope: Scope,
    pub(crate) strip: usize,
    /// Whether the client's `Authorization`/`X-Api-Key`/`Api-Key` go along.
    pub(crate) forward_auth: bool,
    /// A translated request (`route/messages.rs`): the path it takes instead of the client's
    /// (after the scope's prefix). The client's `Accept-Encoding` stays behind: ringway
    /// must read the answer to translate it.
    pub(crate) translated_path: Option<&'static [u8]>,
}

/// Appends the head of the request for the endpoint: request line with the rewritten
/// path, `Host`, the client's end-to-end headers (credentials only if `forward_auth`),
/// `X-Forwarded-*`, the endpoint's own lines (credentials and static headers, which
/// replace any client copy), and the framing ringway produces itself (`Content-Length`;
/// the body is always sent whole).
pub(crate) fn upstream_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    headers: &[Header],
    client_ip: &str,
    to: &UpstreamTarget<'_>,
    body_len: usize,
) {
    let ep = to.ep;
    let names = head.connection_names_headers;
    let prefix = to.scope.upstream_prefix(ep.kind);
    let (method, target) = (head.method.range(), head.target.range());
    if let Some(path) = to.translated_path {
        out.extend_from_slice(head.method.get(buf));
        out.push(b' ');
        out.extend_from_slice(&ep.base_path);
        out.extend_from_slice(prefix);
        out.extend_from_slice(path);
    } else if ep.base_path.is_empty()
        && prefix.is_empty()
        && to.strip == 0
        && target.start == method.end + 1
    {
        // The path unchanged: `METHOD SP target` as received.
        out.extend_from_slice(buf.get(method.start..target.end).unwrap_or_default());
    } else {
        out.extend_from_slice(head.method.get(buf));
        out.push(b' ');
        out.extend_from_slice(&ep.base_path);
        out.extend_from_slice(prefix);
        out.extend_from_slice(head.target.get(buf).get(to.strip..).unwrap_or_default());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(&ep.authority);
    out.extend_from_slice(b"\r\n");
    let mut forwarded_for: Option<&[u8]> = None;
    let mut lines = Lines::new(buf);
    // A header the endpoint's own lines set (none, for most endpoints).
    let own = |h: &Header| {
        let name = h.name.get(buf);
        ep.own_names
            .iter()
            .any(|own| name.eq_ignore_ascii_case(own))
    };
    for h in headers {
        let copy = match h.kind {
            HeaderKind::Other if to.translated_path.is_some() => {
                !own(h) && !h.name.get(buf).eq_ignore_ascii_case(b"accept-encoding")
            }
            HeaderKind::Other => !own(h),
            HeaderKind::RequestId | HeaderKind::SessionId => true,
            // Read by ringway's CORS (`cors.rs`) when it is on, and forwarded all the same.
            HeaderKind::Origin
            | HeaderKind::AccessControlRequestMethod
            | HeaderKind::AccessControlRequestHeaders => true,
            // Never with credentials of the endpoint's own (`forward_auth` is then off).
            HeaderKind::Authorization | HeaderKind::ApiKey => to.forward_auth && !own(h),
            HeaderKind::XForwardedFor => {
                forwarded_for = Some(h.value.get(buf));
                false
            }
            // Framing and routing headers are rewritten below; hop-by-hop ones stay here.
            _ => false,
        };
        if copy && is_end_to_end(buf, headers, h, names) {
            lines.push(out, h);
        }
    }
    lines.finish(out);
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prior) = forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Real-IP: ");
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if let Some(host) = head.host {
        push_header(out, b"X-Forwarded-Host", host.get(buf));
    }
    out.extend_from_slice(ep.own_lines.expose().as_bytes());
    let expects_body = matches!(head.method.get(buf), b"POST" | b"PUT" | b"PATCH");
    if body_len > 0 || head.body != Framing::Empty || expects_body {
        out.extend_from_slice(b"Content-Length: ");
        http1::push_decimal(out, body_len as u64);
        out.extend_from_slice(b"\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// What the client's response head says about how the request was routed.
pub(crate) struct Routing<'a> {
    pub(crate) id: &'a RequestId,
    pub(crate) ep: &'a Endpoint,
    /// From the request's head to the endpoint's response head.
    pub(crate) ttfb: Duration,
    /// The model sent to the endpoint: its span in the body as sent.
    pub(crate) model: Option<Range<usize>>,
    /// How the body's model chose the endpoints (`X-Olla-Routing-*`), if it names one.
    pub(crate) decision: Option<Decision>,
    /// The `X-Ringway-Placement` line ([`placement_line`]).
    pub(crate) placement: &'static [u8],
    /// `X-Olla-Mode: passthrough`, whole, for a Messages request passed through; else
    /// empty.
    pub(crate) mode: &'static [u8],
    /// Endpoints tried, this one included (`X-Ringway-Attempts` when above 1).
    pub(crate) attempts: usize,
    pub(crate) sticky: StickyReport,
    /// The client's session header, echoed when it was the key: its span in the
    /// request's head.
    pub(crate) session: Option<Span>,
}

/// The request a response answers: the client connection's buffer, the body as sent,
/// and ringway's own lines for its answers.
pub(crate) struct Answering<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) own: &'a OwnLines,
}

/// How the response goes to the client.
pub(crate) struct Reframe {
    /// The client connection carries on after this response.
    pub(crate) keep_alive: bool,
    /// A chunked body is decoded for an HTTP/1.0 client (the connection then closes).
    pub(crate) decode: bool,
    pub(crate) is_head: bool,
    pub(crate) http10: bool,
    /// A body of ringway's own replaces the endpoint's (a translated answer): its type and
    /// length; a body of unknown length is chunked (for HTTP/1.0: ends at the close).
    pub(crate) own_body: Option<(&'static [u8], Option<usize>)>,
}

/// The client's response head: the endpoint's status and end-to-end headers, ringway's
/// framing and connection headers, and the X-Olla-* headers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn response_head(
    out: &mut Vec<u8>,
    upstream_buf: &[u8],
    response: &ResponseHead,
    headers: &[Header],
    how: &Reframe,
    routing: &Routing<'_>,
    request: &Answering<'_>,
) {
    // The status line as received when it is `HTTP/1.1 <code> <reason>` (httparse
    // checked it): one copy. Otherwise rebuilt, as HTTP/1.1.
    let line_end = response.reason.range().end + 2;
    if upstream_buf.starts_with(b"HTTP/1.1 ")
        && response.reason.range().start >= 13
        && upstream_buf.get(line_end - 2..line_end) == Some(b"\r\n")
    {
        out.extend_from_slice(&upstream_buf[..line_end]);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        http1::push_decimal(out, u64::from(response.status));
        out.push(b' ');
        out.extend_from_slice(response.reason.get(upstream_buf));
        out.extend_from_slice(b"\r\n");
    }
    let mut has_length = false;
    let mut lines = Lines::new(upstream_buf);
    let own = request.own;
    let replacing = own.cors | own.rate_limit;
    for h in headers {
        let copy = match h.kind {
            _ if how.own_body.is_some() => {
                h.kind == HeaderKind::Other
                    && !is_body_header(h.name.get(upstream_buf))
                    && is_end_to_end(upstream_buf, headers, h, response.connection_names_headers)
                    && !(replacing && own.replaces(h.name.get(upstream_buf)))
            }
            HeaderKind::ContentLength => {
                has_length = true;
                !how.decode
            }
            _ => {
                is_end_to_end(upstream_buf, headers, h, response.connection_names_headers)
                    && !(replacing && own.replaces(h.name.get(upstream_buf)))
            }
        };
        if copy {
            lines.push(out, h);
        }
    }
    lines.finish(out);
    match (how.own_body, response.body) {
        (Some((content_type, length)), _) => {
            push_header(out, b"Content-Type", content_type);
            match length {
                Some(n) => http1::push_header_decimal(out, b"Content-Length", n as u64),
                None if !how.http10 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                None => {}
            }
        }
        (None, Framing::Chunked) if !how.decode => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        (None, Framing::Empty) if !has_length && !response.is_bodiless_status() && !how.is_head => {
            out.extend_from_slice(b"Content-Length: 0\r\n");
        }
        _ => {}
    }
    connection_header(out, how.keep_alive, how.http10);
    let id = routing.id.as_bytes(request.buf);
    olla_headers(out, id, routing.ep, routing.ttfb);
    if let Some(model) = routing.model.clone().and_then(|m| request.body.get(m)) {
        push_header(out, b"X-Olla-Model", model);
    }
    if let Some(decision) = routing.decision {
        decision.push_headers(out);
    }
    out.extend_from_slice(routing.placement);
    out.extend_from_slice(routing.mode);
    if routing.attempts > 1 {
        http1::push_header_decimal(out, b"X-Ringway-Attempts", routing.attempts as u64);
    }
    let sticky = routing.sticky;
    out.extend_from_slice(sticky_line(sticky.outcome));
    out.extend_from_slice(source_line(sticky.source));
    if let (Some(KeySource::SessionHeader), Some(session)) = (sticky.source, routing.session) {
        push_header(out, b"X-Olla-Session-ID", session.get(request.buf));
    }
    if let Some((key, size)) = sticky.group {
        push_group_line(out, key, size);
    }
    if replacing {
        out.extend_from_slice(&own.bytes);
    }
    out.extend_from_slice(b"\r\n");
}

/// Headers that describe the endpoint's body, dropped when ringway writes its own.
fn is_body_header(name: &[u8]) -> bool {
    [
        &b"content-type"[..],
        b"content-encoding",
        b"etag",
        b"content-md5",
        b"digest",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// `X-Olla-Mode`, whole, for a Messages request passed through to a native endpoint.
pub(crate) const PASSTHROUGH_LINE: &[u8] = b"X-Olla-Mode: passthrough\r\n";

/// `X-Ringway-Placement`, whole: how the endpoint was picked among those the route
/// allows: "sticky" (rendezvous on the session key), else the balancer's name.
pub(crate) fn placement_line(sticky: bool, balancer: Balancer) -> &'static [u8] {
    match (sticky, balancer) {
        (true, _) => b"X-Ringway-Placement: sticky\r\n",
        (false, Balancer::LeastConnections) => b"X-Ringway-Placement: least-connections\r\n",
        (false, Balancer::RoundRobin) => b"X-Ringway-Placement: round-robin\r\n",
        (false, Balancer::Priority) => b"X-Ringway-Placement: priority\r\n",
    }
}

/// `X-Ringway-Prefix-Group: <key, 16 hex digits>; size=<endpoints>`.
fn push_group_line(out: &mut Vec<u8>, key: u64, size: usize) {
    out.extend_from_slice(b"X-Ringway-Prefix-Group: ");
    for i in (0..16).rev() {
        out.push(b"0123456789abcdef"[(key >> (i * 4)) as usize & 0xf]);
    }
    out.extend_from_slice(b"; size=");
    http1::push_decimal(out, size as u64);
    out.extend_from_slice(b"\r\n");
}

/// `X-Olla-Sticky-Session`, whole.
fn sticky_line(outcome: Outcome) -> &'static [u8] {
    match outcome {
        Outcome::Hit => b"X-Olla-Sticky-Session: hit\r\n",
        Outcome::Miss => b"X-Olla-Sticky-Session: miss\r\n",
        Outcome::Repin => b"X-Olla-Sticky-Session: repin\r\n",
        Outcome::Disabled => b"X-Olla-Sticky-Session: disabled\r\n",
    }
}

/// `X-Olla-Sticky-Key-Source`, whole.
fn source_line(source: Option<KeySource>) -> &'static [u8] {
    match source {
        None => b"X-Olla-Sticky-Key-Source: none\r\n",
        Some(KeySource::SessionHeader) => b"X-Olla-Sticky-Key-Source: session_header\r\n",
        Some(KeySource::PrefixHash) => b"X-Olla-Sticky-Key-Source: prefix_hash\r\n",
        Some(KeySource::AuthHeader) => b"X-Olla-Sticky-Key-Source: auth_header\r\n",
        Some(KeySource::Ip) => b"X-Olla-Sticky-Key-Source: ip\r\n",
    }
}

/// The head of an answer ringway writes itself (an error, a page). `request` is the
/// request's head when one was read; `own` its [`OwnLines`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn own_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    content_type: &[u8],
    body_len: usize,
    id: &[u8],
    keep_alive: bool,
    request: Option<&RequestHead>,
    rescue: Option<&Rescue>,
    own: &[u8],
) {
    http1::push_status_line(out, status);
    // A 304 has no body, and its headers would update the cached answer's.
    if status != StatusCode::NOT_MODIFIED {
        push_header(out, b"Content-Type", content_type);
        http1::push_header_decimal(out, b"Content-Length", body_len as u64);
    }
    if let Some(seconds) = rescue.and_then(|r| r.retry_after) {
        http1::push_header_decimal(out, b"Retry-After", u64::from(seconds));
    }
    if rescue.is_some_and(|r| r.challenge) {
        push_header(out, b"WWW-Authenticate", b"Bearer realm=\"ringway\"");
    }
    push_header(out, b"X-Olla-Request-ID", id);
    if let Some(decision) = rescue.and_then(|r| r.decision) {
        decision.push_headers(out);
    }
    out.extend_from_slice(own);
    connection_header(
        out,
        keep_alive,
        request.is_some_and(|h| h.minor_version == 0),
    );
    out.extend_from_slice(b"\r\n");
}

/// The whole answer to a CORS preflight: 204, no body, and `own` (its lines from
/// `cors.rs`).
pub(crate) fn preflight(out: &mut Vec<u8>, id: &[u8], keep_alive: bool, http10: bool, own: &[u8]) {
    http1::push_status_line(out, StatusCode::NO_CONTENT);
    out.extend_from_slice(own);
    push_header(out, b"X-Olla-Request-ID", id);
    connection_header(out, keep_alive, http10);
    out.extend_from_slice(b"\r\n");
}

/// The whole answer to a connection beyond `server.max_connections`, from its rescue.
pub(crate) fn refusal(rescue: &Rescue, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    http1::push_status_line(&mut out, rescue.status);
    push_header(&mut out, b"Content-Type", b"application/json");
    http1::push_header_decimal(&mut out, b"Content-Length", body.len() as u64);
    if let Some(seconds) = rescue.retry_after {
        http1::push_header_decimal(&mut out, b"Retry-After", u64::from(seconds));
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// `Connection: close` when the connection ends here; `keep-alive` for an HTTP/1.0
/// client whose connection carries on.
fn connection_header(out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// The `X-Olla-*` headers every proxied answer carries; `ttfb`, from the request's head
/// to the endpoint's, is Olla's response time.
fn olla_headers(out: &mut Vec<u8>, id: &[u8], ep: &Endpoint, ttfb: Duration) {
    push_header(out, b"X-Olla-Request-ID", id);
    out.extend_from_slice(&ep.olla_lines);
    out.extend_from_slice(b"X-Olla-Response-Time: ");
    http1::push_decimal(out, ttfb.as_secs() * 1000 + u64::from(ttfb.subsec_millis()));
    out.extend_from_slice(b"ms\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::HeadLimits;
    use crate::upstream::Upstreams;

    /// ringway's own lines replace an endpoint's headers of the same concern, and only
    /// while its policy for that concern is on.
    #[test]
    fn own_lines_replace_the_endpoints_cors_and_rate_limit_headers() {
        let config =
            crate::config::parse_test("[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"")
                .unwrap();
        let upstreams = Upstreams::new(&config.endpoints, &config.sticky, 1);
        let upstream: &[u8] = b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n\
            X-RateLimit-Remaining: 99\r\nVary: Accept\r\nContent-Length: 0\r\n\r\n";
        let limits = HeadLimits {
            max_bytes: 4096,
            max_headers: 16,
        };
        let mut headers = Vec::new();
        let response = http1::parse_response(upstream, &limits, false, &mut headers)
            .unwrap()
            .unwrap();
        let id = RequestId::Generated([b'0'; 20]);
        let head = |own: &OwnLines| {
            let routing = Routing {
                id: &id,
                ep: &upstreams.endpoints[0],
                ttfb: Duration::ZERO,
                model: None,
                decision: None,
                placement: placement_line(false, Balancer::RoundRobin),
                mode: b"",
                attempts: 1,
                sticky: StickyReport {
                    outcome: Outcome::Disabled,
                    source: None,
                    group: Some((0x00ab_cdef_0123_4567, 3)),
                },
                session: None,
            };
            let how = Reframe {
                keep_alive: true,
                decode: false,
                is_head: false,
                http10: false,
                own_body: None,
            };
            let request = Answering {
                buf: b"",
                body: b"",
                own,
            };
            let mut out = Vec::new();
            response_head(
                &mut out, upstream, &response, &headers, &how, &routing, &request,
            );
            String::from_utf8(out).unwrap()
        };
        let off = head(&OwnLines::default());
        assert!(off.contains("Access-Control-Allow-Origin: *\r\n"), "{off}");
        assert!(
            off.contains("X-Ringway-Prefix-Group: 00abcdef01234567; size=3\r\n"),
            "{off}"
        );
        assert!(off.contains("X-RateLimit-Remaining: 99\r\n"), "{off}");
        let on = OwnLines {
            bytes: b"Vary: Origin\r\nAccess-Control-Allow-Origin: https://a\r\nX-RateLimit-Remaining: 3\r\n".to_vec(),
            cors: true,
            rate_limit: true,
        };
        let on = head(&on);
        assert!(!on.contains("Access-Control-Allow-Origin: *"), "{on}");
        assert!(!on.contains("X-RateLimit-Remaining: 99"), "{on}");
        assert!(on.contains("Vary: Accept\r\n") && on.contains("Vary: Origin\r\n"));
        assert!(on.ends_with("X-RateLimit-Remaining: 3\r\n\r\n"), "{on}");
        // Rate limits alone leave an endpoint's CORS alone.
        let limits_only = OwnLines {
            bytes: b"X-RateLimit-Remaining: 3\r\n".to_vec(),
            cors: false,
            rate_limit: true,
        };
        let limits_only = head(&limits_only);
        assert!(limits_only.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(!limits_only.contains(": 99"));
    }

    #[test]
    fn a_preflight_answer_has_no_body_framing() {
        let mut out = Vec::new();
        preflight(&mut out, b"id", true, false, b"Vary: Origin\r\n");
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nVary: Origin\r\nX-Olla-Request-ID: id\r\n\r\n"
        );
    }

    /// The whole lines written for speed say what the names say.
    #[test]
    fn static_lines_match_the_names() {
        let value = |line: &[u8]| {
            let text = std::str::from_utf8(line).unwrap();
            let (_, value) = text.split_once(": ").unwrap();
            value.strip_suffix("\r\n").unwrap().to_string()
        };
        for balancer in [
            Balancer::LeastConnections,
            Balancer::RoundRobin,
            Balancer::Priority,
        ] {
            assert_eq!(value(placement_line(false, balancer)), balancer.name());
        }
        assert_eq!(value(placement_line(true, Balancer::RoundRobin)), "sticky");
        for outcome in [
            Outcome::Hit,
            Outcome::Miss,
            Outcome::Repin,
            Outcome::Disabled,
        ] {
            assert_eq!(value(sticky_line(outcome)), outcome.name());
        }
        assert_eq!(value(source_line(None)), "none");
        for source in KeySource::ALL {
            assert_eq!(value(source_line(Some(source))), source.name());
        }
    }
}
