//! Entry points for the fuzz targets in `tools/fuzz` (feature `fuzzing`; not an API): the
//! head targets in `fuzzing/heads.rs`, the head writers' in `fuzzing/writer.rs`, the body
//! targets in `fuzzing/bodies.rs`, the Anthropic translator's in `fuzzing/anthropic.rs`,
//! and here the checks they share.
//!
//! Each function runs the code of the request path on arbitrary bytes, exactly as the
//! proxy calls it (default limits from the embedded configuration, the same call
//! sequence), and checks with `assert!` what must hold whatever the input: a failed
//! assertion or a panic is a finding. They are also replayed over the checked-in corpus
//! by `tests/fuzz_corpus.rs` in the normal test suite. `tools/fuzz/README.md` says how
//! to run them.

mod anthropic;
mod bodies;
mod heads;
mod writer;

use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64;

use crate::config::Config;
use crate::http1::{self, BodyProgress, Framing, HeadError, HeadLimits, Header, HeaderKind, Span};
use crate::routing::sticky::KeySource;

pub use anthropic::{
    anthropic_request, anthropic_response, anthropic_stream, anthropic_stream_ops,
};
pub use bodies::{body_keys, chunked_body};
pub use heads::{request_head, response_head};
pub use writer::head_writer;

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
    let (start, end) = (span.range().start, span.range().end);
    assert!(
        start <= end && end <= len,
        "{what} span {start}..{end} is outside the head (length {len})"
    );
}

/// The checks shared by request and response heads on the header list.
fn check_headers(
    data: &[u8],
    head_len: usize,
    headers: &[Header],
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
            HeaderKind::Connection => assert!(is(b"connection")),
            HeaderKind::TransferEncoding => assert!(is(b"transfer-encoding")),
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
        if h.kind.is_hop_by_hop() {
            assert!(!forwarded, "a hop-by-hop header would be forwarded");
        }
        if forwarded && names_headers {
            // A header the Connection header names stays on this hop.
            let named = headers
                .iter()
                .filter(|c| c.name.get(data).eq_ignore_ascii_case(b"connection"))
                .flat_map(|c| c.value.get(data).split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name));
            assert!(!named, "a header named by Connection would be forwarded");
        }
    }
}

/// Whether the Connection headers say `close` and `keep-alive` (RFC 9112 §9.3).
fn connection_tokens(data: &[u8], headers: &[Header]) -> (bool, bool) {
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
fn check_framing(data: &[u8], headers: &[Header], framing: Framing) {
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
        Framing::Length(n) => {
            assert_eq!(codings, 0);
            let digits = lengths.first().expect("a length without Content-Length");
            assert!(digits.iter().all(u8::is_ascii_digit));
            let parsed = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
            assert_eq!(parsed, Some(n), "the length is not the header's");
        }
        Framing::Chunked => {
            assert_eq!(codings, 1);
            assert!(lengths.is_empty(), "chunked with a Content-Length");
        }
        _ => {}
    }
}

/// Feeds the bytes after a head to its body framing, as the proxy does when the body
/// arrives with the head: never more than given is consumed.
fn check_body_after_head(rest: &[u8], framing: Framing, chunked_limit: u64) {
    let mut body = BodyProgress::new(framing, chunked_limit);
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
    fn fields(&self, headers: &[Header]) -> Self::Fields;
}

type HeaderFields = Vec<(Span, Span, HeaderKind)>;

fn header_fields(headers: &[Header]) -> HeaderFields {
    headers.iter().map(|h| (h.name, h.value, h.kind)).collect()
}

/// A parse's outcome: the head and its header list once complete, `None` while more
/// bytes are needed.
type Parsed<H> = Result<Option<(H, Vec<Header>)>, HeadError>;

/// An outcome as comparable fields.
fn summary<H: Snapshot>(parsed: &Parsed<H>) -> Result<Option<H::Fields>, HeadError> {
    parsed
        .as_ref()
        .map(|p| p.as_ref().map(|(head, headers)| head.fields(headers)))
        .map_err(Clone::clone)
}

/// How parsing in two pieces ended: the outcome, and whether it came from the first
/// piece alone.
struct Staged<H> {
    parsed: Parsed<H>,
    on_first_piece: bool,
}

/// Whether parsing in two pieces ended like parsing whole. One difference between
/// errors is accepted: the head limit reached on the first piece (the proxy stops
/// reading there; what the rest would have said is moot).
fn same_outcome<H: Snapshot>(staged: &Staged<H>, whole: &Parsed<H>) -> bool {
    summary(&staged.parsed) == summary(whole)
        || matches!(
            (&staged.parsed, whole),
            (Err(HeadError::TooLarge), Err(_)) if staged.on_first_piece
        )
}

/// Parses `data` in two pieces the way the proxy does: the connection's one header list,
/// `parse` called on the buffer as it grows (here: `data[..split]`, then all of `data` if
/// more bytes were needed).
fn parse_in_two<H>(
    data: &[u8],
    split: usize,
    parse: impl Fn(&[u8], &mut Vec<Header>) -> Result<Option<H>, HeadError>,
) -> Staged<H> {
    let mut headers = Vec::new();
    if split > 0 {
        match parse(&data[..split], &mut headers) {
            Ok(None) => {}
            result => {
                return Staged {
                    parsed: result.map(|h| h.map(|h| (h, headers))),
                    on_first_piece: true,
                };
            }
        }
    }
    let parsed = parse(data, &mut headers).map(|h| h.map(|h| (h, headers)));
    Staged {
        parsed,
        on_first_piece: false,
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
