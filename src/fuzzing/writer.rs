//! Fuzz target over the head writers: whatever a client and a backend send, the heads
//! ringway writes from it are well formed, and no value from either can start a line.

use std::sync::OnceLock;
use std::time::Duration;

use crate::api;
use crate::config::Config;
use crate::http1::{self, Header, is_field_text};
use crate::proxy::error::ProxyError;
use crate::proxy::{
    Answering, OwnLines, PASSTHROUGH_LINE, Reframe, RequestId, Routing, StickyReport,
    UpstreamTarget, model_span, own_head, placement_line, response_head, upstream_head,
};
use crate::routing::RoutingConfig;
use crate::routing::decision::Decision;
use crate::routing::sticky::Outcome;
use crate::routing::{Balancer, KeySource, Scope};
use crate::routing::{Fallback, Strategy};
use crate::upstream::Upstreams;

/// Between the request's bytes and the response's in an input.
const SEPARATOR: &[u8] = b"\n\0\n";
/// The response when an input has no separator.
const PLAIN_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// An endpoint with a credential in a header of its own and a base path.
fn endpoints() -> &'static Upstreams {
    static UPSTREAMS: OnceLock<Upstreams> = OnceLock::new();
    UPSTREAMS.get_or_init(|| {
        let config = Config::from_toml(
            "[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/base\"\n\
             api_key = \"k-123\"\napi_key_header = \"X-Backend-Key\"",
            "the fuzz target's endpoint",
        )
        .expect("a valid config");
        Upstreams::new(&config.endpoints, &config.sticky, 1)
    })
}

/// Fuzz target `head_writer`: `data` is a client's request (head and body), then
/// optionally [`SEPARATOR`] and a backend's response.
///
/// When the request head parses, the model is found as the request path finds it (both
/// scans) and the request for the endpoint is written; when the response head parses
/// too, the client's response head is written with that model, and the heads of
/// ringway's own answers as well. Each written head must parse whole (httparse), end
/// exactly where it was written to, have CR only before LF and LF only after CR, and have
/// as many header fields as lines; no header value holds a control byte. The client's
/// copy of the endpoint's key header never goes through, and `X-Olla-Model` is the
/// request's model exactly.
pub fn head_writer(data: &[u8]) {
    let (request, response) = match memchr::memmem::find(data, SEPARATOR) {
        Some(at) => (&data[..at], &data[at + SEPARATOR.len()..]),
        None => (data, PLAIN_RESPONSE),
    };
    let limits = super::defaults().limits;
    let mut headers = Vec::new();
    let Ok(Some(head)) = http1::parse_request(request, &limits, &mut headers) else {
        return;
    };
    let body = &request[head.len..];
    let found = [
        api::model(body),
        api::inspect(body, super::defaults().prompt_prefix, 0).model,
    ];
    let mut models = Vec::new();
    for model in found {
        match model_span(body, model) {
            Ok(span) => models.push(span),
            Err(e) => assert!(matches!(e, ProxyError::InvalidModel)),
        }
    }
    let ep = &endpoints().endpoints[0];
    // As received, and translated to the chat API (`proxy::route::messages`).
    for translated_path in [None, Some(&b"/v1/chat/completions"[..])] {
        let target = UpstreamTarget {
            ep,
            scope: Scope::Any,
            strip: 0,
            forward_auth: false,
            translated_path,
        };
        let mut out = Vec::new();
        upstream_head(
            &mut out,
            request,
            &head,
            &headers,
            "127.0.0.1",
            &target,
            body.len(),
        );
        let sent = check_endpoint_head(&out);
        if let Some(path) = translated_path {
            let line_end = memchr::memchr(b' ', &out[head.method.get(request).len() + 1..]);
            let start = head.method.get(request).len() + 1;
            // The endpoint's base path, then the chat API's.
            let expected = [&ep.base_path[..], path].concat();
            assert_eq!(
                line_end.map(|n| &out[start..start + n]),
                Some(&expected[..])
            );
            assert!(
                !sent
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(b"accept-encoding")),
                "a translated request asks for an encoding ringway cannot read"
            );
        }
    }

    let id = RequestId::given(&head, request).unwrap_or(RequestId::Generated([b'0'; 20]));
    let own = ProxyError::Unauthorized.rescue().expect("an answer");
    let mut out = Vec::new();
    let body_of = b"{}";
    own_head(
        &mut out,
        own.status,
        b"application/json",
        body_of.len(),
        id.as_bytes(request),
        head.keep_alive,
        Some(&head),
        Some(&own),
        b"X-RateLimit-Limit: 60\r\n",
    );
    check_head(&out, false);

    let mut response_headers: Vec<Header> = Vec::new();
    let Ok(Some(answer)) =
        http1::parse_response(response, &limits, head.is_head, &mut response_headers)
    else {
        return;
    };
    let source = head.session_id.map(|_| KeySource::SessionHeader);
    for model in models {
        // Relayed as received, decoded for HTTP/1.0, and replaced by a body of ringway's
        // own (a translated answer).
        let event_stream: Option<(&'static [u8], Option<usize>)> =
            Some((b"text/event-stream", None));
        for (decode, own_body) in [(false, None), (true, None), (false, event_stream)] {
            let routing = Routing {
                id: &id,
                ep,
                ttfb: Duration::from_millis(7),
                model: model.clone(),
                decision: model.is_some().then(|| {
                    Decision::found(RoutingConfig {
                        strategy: Strategy::Optimistic,
                        fallback: Fallback::All,
                    })
                }),
                placement: placement_line(source.is_some(), Balancer::RoundRobin),
                mode: if own_body.is_some() {
                    b""
                } else {
                    PASSTHROUGH_LINE
                },
                attempts: if decode { 2 } else { 1 },
                sticky: StickyReport {
                    outcome: if source.is_some() {
                        Outcome::Hit
                    } else {
                        Outcome::Disabled
                    },
                    source,
                    group: source.map(|_| (u64::from(head.keep_alive), 2)),
                },
                session: head.session_id,
            };
            let how = Reframe {
                keep_alive: head.keep_alive && !decode,
                decode,
                is_head: head.is_head,
                http10: head.minor_version == 0,
                own_body,
            };
            // With ringway's own lines (rate limits, CORS) every other time: the
            // endpoint's headers of theirs give way.
            let own = if decode {
                own_lines()
            } else {
                OwnLines::default()
            };
            let answering = Answering {
                buf: request,
                body,
                own: &own,
            };
            let mut out = Vec::new();
            response_head(
                &mut out,
                response,
                &answer,
                &response_headers,
                &how,
                &routing,
                &answering,
            );
            let written = check_head(&out, false);
            let olla_model: Vec<&[u8]> = written
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-olla-model"))
                .map(|(_, v)| *v)
                .collect();
            match model.clone() {
                Some(span) => assert_eq!(olla_model, [&body[span]], "X-Olla-Model"),
                None => assert!(olla_model.is_empty()),
            }
            let named = |n: &[u8]| {
                written
                    .iter()
                    .filter(|(w, _)| w.eq_ignore_ascii_case(n))
                    .count()
            };
            if own_body.is_some() {
                assert_eq!(named(b"content-type"), 1, "one Content-Type");
                assert_eq!(named(b"content-length"), 0, "no length for a stream");
                assert_eq!(named(b"content-encoding"), 0, "the endpoint's coding");
                let chunked = usize::from(head.minor_version == 1);
                assert_eq!(named(b"transfer-encoding"), chunked, "framing");
            }
            if decode {
                assert_eq!(named(b"x-ratelimit-limit"), 1, "X-RateLimit-Limit");
                assert_eq!(named(b"access-control-allow-origin"), 1, "the origin");
                let cors = written.iter().filter(|(w, _)| {
                    w.len() > 15 && w[..15].eq_ignore_ascii_case(b"access-control-")
                });
                assert_eq!(cors.count(), 1, "only ringway's CORS headers");
            }
        }
    }
}

/// Checks a head written for the endpoint: valid, with the endpoint's own key and never
/// the client's credentials beside it.
fn check_endpoint_head(out: &[u8]) -> Vec<(&[u8], &[u8])> {
    let sent = check_head(out, true);
    let keys: Vec<&[u8]> = sent
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-backend-key"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(keys, [b"k-123"], "the endpoint's key header");
    assert!(
        !sent
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"authorization")),
        "the client's credentials went to an endpoint with its own"
    );
    sent
}

/// ringway's own lines for a request's answers, rate limits and CORS both on.
fn own_lines() -> OwnLines {
    OwnLines {
        bytes: b"Vary: Origin\r\nAccess-Control-Allow-Origin: *\r\nX-RateLimit-Limit: 60\r\n"
            .to_vec(),
        cors: true,
        rate_limit: true,
    }
}

/// Checks a written head (a request's, or a response's); returns its header fields.
fn check_head(out: &[u8], request: bool) -> Vec<(&[u8], &[u8])> {
    for (i, &b) in out.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "a CR not before LF"),
            b'\n' => assert!(i > 0 && out[i - 1] == b'\r', "an LF not after CR"),
            _ => {}
        }
    }
    assert!(out.ends_with(b"\r\n\r\n"), "the head does not end");
    let lines = memchr::memmem::find_iter(out, b"\r\n").count();
    let mut slots = vec![httparse::EMPTY_HEADER; lines];
    let (parsed, fields) = if request {
        let mut r = httparse::Request::new(&mut slots);
        let parsed = r.parse(out);
        (
            parsed,
            r.headers
                .iter()
                .map(|h| (h.name.as_bytes(), h.value))
                .collect(),
        )
    } else {
        let mut r = httparse::Response::new(&mut slots);
        let parsed = r.parse(out);
        (
            parsed,
            r.headers
                .iter()
                .map(|h| (h.name.as_bytes(), h.value))
                .collect::<Vec<_>>(),
        )
    };
    match parsed {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "the head ends early"),
        other => panic!(
            "a written head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(out)
        ),
    }
    // Start line, fields, the empty line: no field hides a line break.
    assert_eq!(fields.len(), lines - 2, "lines that are not fields");
    for (name, value) in &fields {
        assert!(
            is_field_text(value),
            "a control byte in {:?}",
            String::from_utf8_lossy(name)
        );
    }
    fields
}
