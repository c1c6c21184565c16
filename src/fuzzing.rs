//! Entry points for the fuzz targets in `tools/fuzz` (not a stable API).
//!
//! Each function runs the code of the request path on arbitrary bytes, exactly as the
//! proxy calls it (default limits from the embedded configuration, the same call
//! sequence), and checks with `assert!` what must hold whatever the input: a failed
//! assertion or a panic is a finding. They are also replayed over the checked-in corpus
//! by `tests/fuzz_corpus.rs` in the normal test suite. `tools/fuzz/README.md` says how
//! to run them.

use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64;

use crate::api::{self, RequestFacts};
use crate::config::Config;
use crate::http1::{
    self, BodyProgress, ChunkError, ChunkedDecoder, Framing, HeadError, HeadLimits, HeaderKind,
    RequestHead, ResponseHead, Span,
};
use crate::routing::balancer::Candidate;
use crate::routing::sticky::{self, KeyInputs, KeySource, SessionKey};
use crate::routing::{self, Route};

/// What the request path reads from the configuration, taken once from the embedded
/// default configuration (the documented defaults).
struct Defaults {
    limits: HeadLimits,
    max_body_bytes: u64,
    prompt_prefix: usize,
    key_sources: Vec<KeySource>,
}

fn defaults() -> &'static Defaults {
    static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let config = Config::embedded_default();
        Defaults {
            limits: config.server.head_limits(),
            max_body_bytes: config.server.max_body_bytes,
            prompt_prefix: config.sticky.prompt_prefix_bytes,
            key_sources: config.sticky.key_sources.clone(),
        }
    })
}

/// A split position in `0..=data.len()` that depends on all of `data`.
fn derived_split(data: &[u8]) -> usize {
    (xxh3_64(data) % (data.len() as u64 + 1)) as usize
}

/// Where a head may be cut in two to test incremental parsing: a position derived from
/// the data, and the positions just before the end of the head (inside the final CRLF).
fn split_points(data: &[u8], head_len: Option<usize>) -> [usize; 3] {
    let end = head_len.unwrap_or(data.len());
    [
        derived_split(data),
        end.saturating_sub(1),
        end.saturating_sub(2),
    ]
}

fn assert_span_within(span: Span, len: usize, what: &str) {
    let (start, end) = span.bounds();
    assert!(
        start <= end && end <= len,
        "{what} span {start}..{end} is outside the head (length {len})"
    );
}

/// The checks shared by request and response heads on the header list.
fn check_headers(
    data: &[u8],
    head_len: usize,
    headers: &[http1::Header],
    names_headers: bool,
    limits: &HeadLimits,
) {
    assert!(headers.len() <= limits.max_headers, "too many headers kept");
    for h in headers {
        assert_span_within(h.name, head_len, "header name");
        assert_span_within(h.value, head_len, "header value");
        let name = h.name.get(data);
        assert!(!name.is_empty(), "empty header name");
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match h.kind {
            HeaderKind::ContentLength => assert!(is(b"content-length")),
            HeaderKind::Host => assert!(is(b"host")),
            HeaderKind::Expect => assert!(is(b"expect")),
            HeaderKind::Authorization => assert!(is(b"authorization")),
            HeaderKind::SessionId => assert!(is(b"x-session-id") || is(b"x-olla-session-id")),
            HeaderKind::HopByHop => assert!(
                [
                    &b"connection"[..],
                    b"keep-alive",
                    b"proxy-connection",
                    b"te",
                    b"trailer",
                    b"transfer-encoding",
                    b"upgrade",
                    b"proxy-authorization",
                    b"proxy-authenticate",
                ]
                .iter()
                .any(|n| is(n))
            ),
            _ => {}
        }
        let forwarded = http1::is_end_to_end(data, headers, h, names_headers);
        if h.kind == HeaderKind::HopByHop {
            assert!(!forwarded, "a hop-by-hop header would be forwarded");
        }
        if forwarded && names_headers {
            // A header the Connection header names stays on this hop.
            let named = headers
                .iter()
                .filter(|c| {
                    c.kind == HeaderKind::HopByHop
                        && c.name.get(data).eq_ignore_ascii_case(b"connection")
                })
                .flat_map(|c| c.value.get(data).split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name));
            assert!(!named, "a header named by Connection would be forwarded");
        }
    }
}

/// Whether the Connection headers say `close` and `keep-alive` (RFC 9112 §9.3).
fn connection_tokens(data: &[u8], headers: &[http1::Header]) -> (bool, bool) {
    let tokens = || {
        headers
            .iter()
            .filter(|h| h.name.get(data).eq_ignore_ascii_case(b"connection"))
            .flat_map(|h| h.value.get(data).split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    };
    (
        tokens().any(|t| t.eq_ignore_ascii_case(b"close")),
        tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive")),
    )
}

/// A body length comes from the one Content-Length header; chunked framing from the one
/// `Transfer-Encoding: chunked`, with no Content-Length beside it.
fn check_framing(data: &[u8], headers: &[http1::Header], framing: Option<Framing>) {
    let lengths: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.kind == HeaderKind::ContentLength)
        .map(|h| h.value.get(data).trim_ascii())
        .collect();
    let codings = headers
        .iter()
        .filter(|h| h.name.get(data).eq_ignore_ascii_case(b"transfer-encoding"))
        .count();
    assert!(
        lengths.len() <= 1 && codings <= 1,
        "repeated framing headers accepted"
    );
    match framing {
        Some(Framing::Length(n)) => {
            assert_eq!(codings, 0);
            let digits = lengths.first().expect("a length without Content-Length");
            assert!(digits.iter().all(u8::is_ascii_digit));
            let parsed = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
            assert_eq!(parsed, Some(n), "the length is not the header's");
        }
        Some(Framing::Chunked) => {
            assert_eq!(codings, 1);
            assert!(lengths.is_empty(), "chunked with a Content-Length");
        }
        _ => {}
    }
}

/// Feeds the bytes after a head to its body framing, as the proxy does when the body
/// arrives with the head: never more than given is consumed.
fn check_body_after_head(rest: &[u8], framing: Framing, chunked_limit: u64) {
    let mut body = BodyProgress::new(framing);
    if let BodyProgress::Chunked(decoder) = &mut body {
        *decoder = ChunkedDecoder::new(chunked_limit);
    }
    let mut decoded = Vec::new();
    let out = (framing == Framing::Chunked).then_some(&mut decoded);
    if let Ok(n) = body.advance(rest, out) {
        assert!(n <= rest.len(), "a body consumed more than it was given");
        if !body.is_done() {
            assert_eq!(n, rest.len(), "an unfinished body left bytes unconsumed");
        }
    }
    assert!(decoded.len() <= rest.len());
}

/// Every field of a parsed head, to compare two parses (a structural comparison: a
/// `Debug` string would add formatting code to the coverage the fuzzer chases).
trait Snapshot {
    type Fields: PartialEq + std::fmt::Debug;
    fn fields(&self) -> Self::Fields;
}

fn snapshot<H: Snapshot>(head: &H) -> H::Fields {
    head.fields()
}

type HeaderFields = Vec<(Span, Span, HeaderKind)>;

fn header_fields(headers: &[http1::Header]) -> HeaderFields {
    headers.iter().map(|h| (h.name, h.value, h.kind)).collect()
}

impl Snapshot for RequestHead {
    type Fields = (
        (Span, Span, u8, usize, Option<Framing>),
        (bool, bool, bool, bool),
        [Option<Span>; 4],
        HeaderFields,
    );

    fn fields(&self) -> Self::Fields {
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
            ],
            header_fields(&self.headers),
        )
    }
}

impl Snapshot for ResponseHead {
    type Fields = (
        (u16, Span, u8, usize, Option<Framing>, bool, bool),
        HeaderFields,
    );

    fn fields(&self) -> Self::Fields {
        (
            (
                self.status,
                self.reason,
                self.minor_version,
                self.len,
                self.body,
                self.keep_alive,
                self.connection_names_headers,
            ),
            header_fields(&self.headers),
        )
    }
}

/// How parsing in two pieces ended: the result, and whether it came from the first
/// piece alone.
struct Staged<H> {
    result: Result<bool, HeadError>,
    head: H,
    on_first_piece: bool,
}

/// Whether parsing in two pieces ended like parsing whole. One difference between
/// errors is accepted: the head limit reached on the first piece (the proxy stops
/// reading there; what the rest would have said is moot).
fn same_outcome<H>(staged: &Staged<H>, whole: &Result<bool, HeadError>) -> bool {
    staged.result == *whole
        || matches!(
            (&staged.result, whole),
            (Err(HeadError::TooLarge), Err(_)) if staged.on_first_piece
        )
}

/// Parses `data` as a request head the way the proxy does: one `RequestHead`, reset
/// once, then `parse_request` called on the buffer as it grows (here: `data[..split]`,
/// then all of `data` if more bytes were needed).
fn parse_request_in_two(data: &[u8], split: usize, limits: &HeadLimits) -> Staged<RequestHead> {
    let mut head = RequestHead::default();
    head.reset();
    if split > 0 {
        match http1::parse_request(&data[..split], limits, &mut head) {
            Ok(false) => {}
            result => {
                return Staged {
                    result,
                    head,
                    on_first_piece: true,
                };
            }
        }
    }
    let result = http1::parse_request(data, limits, &mut head);
    Staged {
        result,
        head,
        on_first_piece: false,
    }
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
    let mut head = RequestHead::default();
    head.reset();
    let whole = http1::parse_request(data, limits, &mut head);
    let head_len = match whole {
        Ok(true) => Some(head.len),
        _ => None,
    };

    if let Ok(true) = whole {
        check_request_head(data, &head, limits);
        // The head is self-delimiting: its own bytes parse to the same head.
        let mut again = RequestHead::default();
        assert_eq!(
            http1::parse_request(&data[..head.len], limits, &mut again),
            Ok(true),
            "the head alone does not parse"
        );
        assert_eq!(snapshot(&head), snapshot(&again));
        let target = head.target.get(data);
        if let Route::Forward { strip, .. } = routing::classify(target) {
            assert!(strip <= target.len());
            assert!(
                target[strip..].starts_with(b"/"),
                "the upstream path does not start with /"
            );
        }
        check_body_after_head(
            &data[head.len..],
            head.body.unwrap_or(Framing::Empty),
            defaults.max_body_bytes,
        );
    } else if let Ok(false) = whole {
        assert!(
            data.len() <= limits.max_bytes,
            "an oversized head waits for more"
        );
    }

    for split in split_points(data, head_len) {
        let staged = parse_request_in_two(data, split, limits);
        assert!(
            same_outcome(&staged, &whole),
            "parsing in two pieces (split at {split}) gave {:?}, parsing whole {whole:?}",
            staged.result
        );
        if let Ok(true) = staged.result {
            assert_eq!(snapshot(&staged.head), snapshot(&head));
        }
    }
}

/// A parsed head lies within the input and the limit, and ends at a line end.
fn check_head_length(data: &[u8], len: usize, limits: &HeadLimits) {
    assert!(len <= data.len(), "head longer than the input");
    assert!(len <= limits.max_bytes, "head longer than the limit");
    assert!(
        data[..len].ends_with(b"\n"),
        "head does not end with a line end"
    );
}

fn check_request_head(data: &[u8], head: &RequestHead, limits: &HeadLimits) {
    let len = head.len;
    check_head_length(data, len, limits);
    assert_span_within(head.method, len, "method");
    assert_span_within(head.target, len, "target");
    for (span, what) in [
        (head.host, "host"),
        (head.request_id, "request id"),
        (head.session_id, "session id"),
        (head.authorization, "authorization"),
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
        Some(Framing::Chunked) => assert_eq!(head.minor_version, 1),
        Some(Framing::Length(n)) => assert!(n > 0),
        Some(Framing::Empty) => {}
        other => panic!("a request with framing {other:?}"),
    }
    if head.expect_continue {
        assert_eq!(head.minor_version, 1);
    }
    // Spans of the recognised headers come from headers of that kind.
    let values = |kind: HeaderKind| {
        head.headers
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| h.value.get(data).trim_ascii())
    };
    if let Some(host) = head.host {
        assert!(values(HeaderKind::Host).any(|v| v == host.get(data)));
    }
    // X-Olla-Session-ID wins over X-Session-ID (the last one of its name, the first).
    let named = |n: &'static [u8]| {
        head.headers
            .iter()
            .filter(move |h| h.name.get(data).eq_ignore_ascii_case(n))
            .map(|h| h.value.get(data).trim_ascii())
    };
    let session_id = named(b"x-olla-session-id")
        .next_back()
        .or_else(|| named(b"x-session-id").next());
    assert_eq!(head.session_id.map(|s| s.get(data)), session_id);
    if let Some(auth) = head.authorization {
        assert!(values(HeaderKind::Authorization).any(|v| v == auth.get(data)));
    }
    check_framing(data, &head.headers, head.body);
    let (close, keep_alive) = connection_tokens(data, &head.headers);
    assert_eq!(
        head.keep_alive,
        !close && (head.minor_version == 1 || keep_alive),
        "keep-alive does not follow the version and Connection"
    );
    check_headers(
        data,
        len,
        &head.headers,
        head.connection_names_headers,
        limits,
    );
}

fn parse_response_in_two(
    data: &[u8],
    split: usize,
    limits: &HeadLimits,
    was_head: bool,
) -> Staged<ResponseHead> {
    let mut head = ResponseHead::default();
    if split > 0 {
        match http1::parse_response(&data[..split], limits, was_head, &mut head) {
            Ok(false) => {}
            result => {
                return Staged {
                    result,
                    head,
                    on_first_piece: true,
                };
            }
        }
    }
    let result = http1::parse_response(data, limits, was_head, &mut head);
    Staged {
        result,
        head,
        on_first_piece: false,
    }
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
    let mut head = ResponseHead::default();
    let whole = http1::parse_response(data, limits, was_head, &mut head);
    let head_len = match whole {
        Ok(true) => Some(head.len),
        _ => None,
    };
    if let Ok(true) = whole {
        check_response_head(data, &head, limits, was_head);
        let mut again = ResponseHead::default();
        assert_eq!(
            http1::parse_response(&data[..head.len], limits, was_head, &mut again),
            Ok(true),
            "the head alone does not parse"
        );
        assert_eq!(snapshot(&head), snapshot(&again));
        check_body_after_head(
            &data[head.len..],
            head.body.unwrap_or(Framing::Empty),
            u64::MAX,
        );
    } else if let Ok(false) = whole {
        assert!(
            data.len() <= limits.max_bytes,
            "an oversized head waits for more"
        );
    }
    for split in split_points(data, head_len) {
        let staged = parse_response_in_two(data, split, limits, was_head);
        assert!(
            same_outcome(&staged, &whole),
            "parsing in two pieces (split at {split}) gave {:?}, parsing whole {whole:?}",
            staged.result
        );
        if let Ok(true) = staged.result {
            assert_eq!(snapshot(&staged.head), snapshot(&head));
        }
    }
}

fn check_response_head(data: &[u8], head: &ResponseHead, limits: &HeadLimits, was_head: bool) {
    let len = head.len;
    check_head_length(data, len, limits);
    assert_span_within(head.reason, len, "reason phrase");
    // What the proxy copies into the client's status line.
    let reason = head.reason.get(data);
    assert!(!reason.contains(&b'\n') && !reason.contains(&b'\r'));
    assert!(head.status <= 999);
    assert!(head.minor_version <= 1);
    let bodyless =
        was_head || (100..200).contains(&head.status) || matches!(head.status, 204 | 304);
    match head.body {
        Some(Framing::Empty) => {}
        Some(framing) => {
            assert!(
                !bodyless,
                "a body framed as {framing:?} where none is allowed"
            );
            if let Framing::Length(n) = framing {
                assert!(n > 0);
            }
        }
        None => panic!("a complete response head without framing"),
    }
    check_framing(data, &head.headers, head.body);
    let (close, keep_alive) = connection_tokens(data, &head.headers);
    assert_eq!(
        head.keep_alive,
        head.body != Some(Framing::UntilClose) && !close && (head.minor_version == 1 || keep_alive),
        "keep-alive does not follow the framing, version and Connection"
    );
    check_headers(
        data,
        len,
        &head.headers,
        head.connection_names_headers,
        limits,
    );
}

/// The outcome of feeding a chunked body to a decoder: how many bytes it consumed (none
/// counted once it failed: the message is rejected whole), the payload it produced,
/// whether it reached the end, and the error it stopped at.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    consumed: Option<usize>,
    payload: Vec<u8>,
    done: bool,
    error: Option<ChunkError>,
}

/// Feeds `input` to a fresh decoder with payload limit `limit` in pieces of the given
/// sizes (the last piece takes the rest), as the proxy feeds what each read brought,
/// through `BodyProgress` when `via_progress`. `decode`: collect the payload (a client's
/// chunked body) or only measure (a response relayed as is).
fn feed_chunked(
    input: &[u8],
    limit: u64,
    pieces: &mut dyn Iterator<Item = usize>,
    via_progress: bool,
    decode: bool,
) -> Decoded {
    let mut progress = BodyProgress::Chunked(ChunkedDecoder::new(limit));
    let mut decoder = ChunkedDecoder::new(limit);
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut error = None;
    while consumed < input.len() {
        let size = pieces.next().unwrap_or(input.len()).max(1);
        let piece = &input[consumed..input.len().min(consumed + size)];
        let before = payload.len();
        let out = decode.then_some(&mut payload);
        let result = if via_progress {
            progress.advance(piece, out)
        } else {
            decoder.decode(piece, out)
        };
        assert!(
            payload.len() - before <= piece.len(),
            "decoded more bytes than given"
        );
        match result {
            Ok(n) => {
                assert!(n <= piece.len(), "consumed more than given");
                consumed += n;
                let done = if via_progress {
                    progress.is_done()
                } else {
                    decoder.is_done()
                };
                if done {
                    break;
                }
                assert_eq!(n, piece.len(), "an unfinished body left bytes unconsumed");
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let done = if via_progress {
        progress.is_done()
    } else {
        decoder.is_done()
    };
    Decoded {
        consumed: error.is_none().then_some(consumed),
        payload,
        done,
        error,
    }
}

/// Piece sizes from a seed: a xorshift sequence, each size bounded by a cap the seed also
/// picks (1 byte at a time up to 4 KiB reads).
fn piece_sizes(seed: u16) -> impl Iterator<Item = usize> {
    let cap = [1usize, 2, 3, 7, 16, 64, 512, 4096][usize::from(seed & 7)];
    let mut state = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Some(1 + (state % cap as u64) as usize)
    })
}

/// Fuzz target `chunked_body`: a chunked message body (RFC 9112 §7.1).
///
/// The first two bytes are control bytes: they pick the sizes of the pieces the body is
/// fed in and a small payload limit; the rest is the body. Fed whole, fed in pieces
/// (through `ChunkedDecoder` and through `BodyProgress::Chunked`, as the proxy does),
/// and only measured (`out = None`, the relay mode), the decoder must give the same
/// result: bytes consumed, payload, end reached, error. It never consumes more than it
/// was given, the payload is never longer than the input, bytes after the end are left
/// alone, and with the small limit it never decodes more than the limit and agrees with
/// the unlimited run whenever it accepts.
pub fn chunked_body(data: &[u8]) {
    let [a, b, body @ ..] = data else {
        return;
    };
    let seed = u16::from_le_bytes([*a, *b]);
    let small_limit = u64::from(*b);

    let whole = feed_chunked(body, u64::MAX, &mut std::iter::empty(), false, true);
    assert!(whole.consumed.is_none_or(|n| n <= body.len()));
    assert!(
        whole.payload.len() <= body.len(),
        "payload longer than the input"
    );
    if whole.error.is_none() && !whole.done {
        assert_eq!(whole.consumed, Some(body.len()));
    }

    let in_pieces = feed_chunked(body, u64::MAX, &mut piece_sizes(seed), false, true);
    assert_eq!(in_pieces, whole, "fed in pieces differs from fed whole");
    let progress = feed_chunked(body, u64::MAX, &mut piece_sizes(seed ^ 0x5a5a), true, true);
    assert_eq!(progress, whole, "BodyProgress differs from the decoder");
    let measured = feed_chunked(
        body,
        u64::MAX,
        &mut piece_sizes(seed.rotate_left(3)),
        true,
        false,
    );
    assert!(measured.payload.is_empty());
    assert_eq!(
        (measured.consumed, measured.done, &measured.error),
        (whole.consumed, whole.done, &whole.error),
        "measuring differs from decoding"
    );

    if let (true, Some(end)) = (whole.done, whole.consumed) {
        // The message ends where the decoder said: its bytes alone decode the same.
        let again = feed_chunked(&body[..end], u64::MAX, &mut std::iter::empty(), false, true);
        assert_eq!(again, whole);
    }

    for (limit, pieces) in [
        (
            small_limit,
            &mut piece_sizes(seed) as &mut dyn Iterator<Item = usize>,
        ),
        (small_limit, &mut std::iter::empty()),
    ] {
        let limited = feed_chunked(body, limit, pieces, true, true);
        assert!(
            limited.payload.len() as u64 <= limit,
            "decoded {} bytes past the limit of {limit}",
            limited.payload.len()
        );
        assert!(whole.payload.starts_with(&limited.payload));
        match &limited.error {
            None => assert_eq!(limited, whole, "the limit changed an accepted body"),
            Some(ChunkError::TooLarge) => {}
            Some(e) => assert_eq!(whole.error.as_ref(), Some(e)),
        }
    }
}

/// A backend for rendezvous placement.
struct Backend(u64);

impl Candidate for Backend {
    fn in_flight(&self) -> u32 {
        0
    }
    fn priority(&self) -> u32 {
        100
    }
    fn id(&self) -> u64 {
        self.0
    }
}

/// Fuzz target `body_keys`: a JSON request body, read for routing.
///
/// Runs `api::inspect` (with the configured prompt prefix and with a small one) and
/// checks: the same body gives the same facts; the `model` is a sub-slice of the body
/// between two quotes (the proxy turns it into a byte range to rewrite); a continued
/// conversation is a chat; bytes after a recognised object change nothing. Then derives
/// a session key from every source (session header and authorization taken from the
/// body, or absent) and checks that a list of sources yields the key of its first source
/// that yields one, that each source yields exactly when its input is there, and that
/// rendezvous placement of the key is stable.
pub fn body_keys(data: &[u8]) {
    let defaults = defaults();
    let facts = api::inspect(data, defaults.prompt_prefix);
    assert_eq!(facts, api::inspect(data, defaults.prompt_prefix));
    check_facts(data, &facts);
    let small = api::inspect(data, 8);
    check_facts(data, &small);
    // The prompt prefix only changes how much of a prompt is hashed.
    assert_eq!(
        (small.model, small.chat, small.continues),
        (facts.model, facts.chat, facts.continues)
    );
    assert_eq!(small.opening.is_some(), facts.opening.is_some());

    if facts != RequestFacts::default() {
        // A recognised object ends at its closing brace: what follows is not read.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"}\"x\\");
        let again = api::inspect(&longer, defaults.prompt_prefix);
        assert_eq!(
            (again.model, again.opening, again.chat, again.continues),
            (facts.model, facts.opening, facts.chat, facts.continues),
            "bytes after the body changed its facts"
        );
    }

    // Session header and authorization: absent, empty, or taken from the body.
    let cut = derived_split(data);
    let (first, second) = data.split_at(cut);
    for (session_id, authorization) in [
        (None, None),
        (Some(first), Some(second)),
        (Some(&b""[..]), Some(data)),
        (None, Some(first)),
    ] {
        let inputs = KeyInputs {
            session_id,
            facts: &facts,
            authorization,
            client_ip: "192.0.2.7",
        };
        check_keys(&inputs, &defaults.key_sources);
    }
}

fn check_facts(data: &[u8], facts: &RequestFacts<'_>) {
    if let Some(model) = facts.model {
        let start = (model.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        assert!(
            start <= data.len() && model.len() <= data.len() - start,
            "the model is not inside the body"
        );
        assert!(
            start > 0 && data[start - 1] == b'"',
            "no quote before the model"
        );
        assert_eq!(
            data.get(start + model.len()),
            Some(&b'"'),
            "no quote after the model"
        );
    }
    if facts.continues {
        assert!(facts.chat, "a continued conversation that is not a chat");
    }
    if *facts == RequestFacts::default() {
        return;
    }
    // Facts come from an object: the body starts with `{` after whitespace.
    assert_eq!(data.trim_ascii_start().first(), Some(&b'{'));
}

fn check_keys(inputs: &KeyInputs<'_>, configured: &[KeySource]) {
    let single = |source: KeySource| sticky::derive_key(&[source], inputs);
    for source in KeySource::ALL {
        let key = single(source);
        let expected = match source {
            KeySource::SessionHeader => inputs.session_id.is_some_and(|v| !v.is_empty()),
            KeySource::PrefixHash => inputs.facts.opening.is_some(),
            KeySource::AuthHeader => inputs.authorization.is_some_and(|v| !v.is_empty()),
            KeySource::Ip => true,
        };
        assert_eq!(key.is_some(), expected, "{source:?} yielded {key:?}");
        if let Some(key) = key {
            assert_eq!(key.source, source);
        }
        if let (KeySource::PrefixHash, Some(key)) = (source, key) {
            assert_eq!(Some(key.hash), inputs.facts.opening);
        }
    }
    let first_of =
        |sources: &[KeySource]| -> Option<SessionKey> { sources.iter().find_map(|&s| single(s)) };
    let mut reversed = KeySource::ALL;
    reversed.reverse();
    for sources in [&KeySource::ALL[..], &reversed[..], configured, &[]] {
        let key = sticky::derive_key(sources, inputs);
        assert_eq!(key, first_of(sources));
        assert_eq!(key, sticky::derive_key(sources, inputs));
    }
    let key = sticky::derive_key(&KeySource::ALL, inputs).expect("the client IP always yields");

    let fleet: Vec<Backend> = (0..5)
        .map(|i| Backend(sticky::endpoint_id(&format!("gpu-{i}"))))
        .collect();
    let home = sticky::rendezvous(key.hash, &fleet, |_| true, 0.0).expect("a backend");
    assert!(home < fleet.len());
    assert_eq!(
        sticky::rendezvous(key.hash, &fleet, |_| true, 1.5),
        Some(home)
    );
    // When another backend leaves, the key stays home; when its home leaves, it moves.
    let other = (home + 1) % fleet.len();
    assert_eq!(
        sticky::rendezvous(key.hash, &fleet, |i| i != other, 0.0),
        Some(home)
    );
    let moved = sticky::rendezvous(key.hash, &fleet, |i| i != home, 0.0).expect("a backend");
    assert_ne!(moved, home);
    assert_eq!(sticky::rendezvous(key.hash, &fleet, |_| false, 0.0), None);
}
