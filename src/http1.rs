//! HTTP/1.1 on the wire, for both sides of the proxy: bounded head parsing (`request`,
//! `response`), message framing (`chunked`, [`BodyProgress`]), head-writing primitives
//! (`write`) and the buffered connection (`conn`). The request path calls it in its
//! `request` phase (client heads and bodies), `attempt` (backend heads) and `relay`
//! (backend bodies).
//!
//! Why not monoio-http's codec: its decoder builds an `http::HeaderMap` (allocations per
//! header) on top of the same `httparse`, has no bound on the head size, buffers whole
//! bodies, rejects chunk extensions, drops trailers and ignores `Expect: 100-continue`,
//! and its client and chunked encoder hold back streamed tokens. A proxy only needs to
//! know a handful of headers and copy the rest, so we parse with `httparse` directly,
//! remember each header as a pair of offsets into the connection's buffer, classify it
//! once, and write the forwarded head by copying byte ranges.

mod chunked;
mod conn;
mod request;
mod response;
mod write;

use std::ops::Range;

pub(crate) use chunked::{ChunkError, ChunkedDecoder};
pub(crate) use conn::{Conn, write_out, write_out_by};
pub(crate) use request::{RequestHead, parse_request};
pub(crate) use response::{ResponseHead, parse_response};
pub(crate) use write::{
    Lines, decimal, is_field_text, push_chunk_size, push_decimal, push_header, push_header_decimal,
    push_status_line,
};

/// Most headers a head may carry; `server.max_headers` may lower it. The parsers hand
/// httparse this many uninitialized slots: a fresh array per parse costs nothing.
pub(crate) const HEADER_CAP: usize = 256;

/// A byte range of a connection's read buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `part` within `buf`; empty when `part` is not a sub-slice of it.
    ///
    /// httparse hands back a static `""` instead of a slice of the buffer for a status
    /// line with no reason phrase (`HTTP/1.1 200\r\n`) or one with obs-text bytes, so
    /// this must be total (fuzzing finding 1, `tools/fuzz/README.md`).
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= buf.len() => Span {
                start: start as u32,
                end: end as u32,
            },
            _ => Span::default(),
        }
    }

    pub(crate) fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The bytes in `buf`; none if `buf` no longer holds them. A cancelled read or write
    /// takes the connection's buffer with it (monoio lends the buffer to the operation),
    /// and the request it held is then answered from spans into an empty buffer: that
    /// answer must not panic (the connection closes after it).
    pub(crate) fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.range()).unwrap_or_default()
    }
}

/// What a header means to a proxy; decided once, at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    /// Copied through unchanged.
    Other,
    /// Meaningful for one hop only, never forwarded (RFC 9110 §7.6.1), or framing that
    /// ringway re-creates itself: Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade,
    /// Proxy-Authorization, Proxy-Authenticate; and the two below.
    HopByHop,
    /// Hop-by-hop, and it says how the connection goes on (and may name more hop-by-hop
    /// headers).
    Connection,
    /// Hop-by-hop framing.
    TransferEncoding,
    ContentLength,
    Host,
    Expect,
    XForwardedFor,
    XForwardedHost,
    XForwardedProto,
    XRealIp,
    RequestId,
    /// `X-Olla-Session-ID` or `X-Session-ID`: a sticky-session key.
    SessionId,
    Authorization,
    /// `X-Api-Key` (Anthropic style) or `Api-Key` (Azure style): a credential.
    ApiKey,
    /// CORS (`cors.rs`): the page's origin, and what a preflight asks for.
    Origin,
    AccessControlRequestMethod,
    AccessControlRequestHeaders,
}

impl HeaderKind {
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            HeaderKind::HopByHop | HeaderKind::Connection | HeaderKind::TransferEncoding
        )
    }
}

/// What a header of this name means to a proxy (parsing calls it once per header; the
/// configuration, to refuse endpoint headers ringway sets itself).
pub(crate) fn classify(name: &[u8]) -> HeaderKind {
    use HeaderKind::*;
    // Dispatch on length and first letter, so a header that is none of these (most are)
    // costs no comparison.
    let Some(&first) = name.first() else {
        return Other;
    };
    let rest = |lower: &[u8]| folded_eq(name, lower);
    match (name.len(), first | 0x20) {
        (2, b't') if rest(b"te") => HopByHop,
        (4, b'h') if rest(b"host") => Host,
        (6, b'e') if rest(b"expect") => Expect,
        (6, b'o') if rest(b"origin") => Origin,
        (7, b'u') if rest(b"upgrade") => HopByHop,
        (7, b't') if rest(b"trailer") => HopByHop,
        (7, b'a') if rest(b"api-key") => ApiKey,
        (9, b'x') if rest(b"x-real-ip") => XRealIp,
        (9, b'x') if rest(b"x-api-key") => ApiKey,
        (10, b'c') if rest(b"connection") => Connection,
        (10, b'k') if rest(b"keep-alive") => HopByHop,
        (12, b'x') if rest(b"x-request-id") => RequestId,
        (12, b'x') if rest(b"x-session-id") => SessionId,
        (13, b'a') if rest(b"authorization") => Authorization,
        (14, b'c') if rest(b"content-length") => ContentLength,
        (15, b'x') if rest(b"x-forwarded-for") => XForwardedFor,
        (16, b'x') if rest(b"x-forwarded-host") => XForwardedHost,
        (16, b'p') if rest(b"proxy-connection") => HopByHop,
        (17, b't') if rest(b"transfer-encoding") => TransferEncoding,
        (17, b'x') if rest(b"x-forwarded-proto") => XForwardedProto,
        (17, b'x') if rest(b"x-olla-session-id") => SessionId,
        (18, b'p') if rest(b"proxy-authenticate") => HopByHop,
        (19, b'p') if rest(b"proxy-authorization") => HopByHop,
        (29, b'a') if rest(b"access-control-request-method") => AccessControlRequestMethod,
        (30, b'a') if rest(b"access-control-request-headers") => AccessControlRequestHeaders,
        _ => Other,
    }
}

/// Whether `name` (a header name, or a token of a Connection value) is `lower` (lowercase
/// letters and `-`) whatever the case of its letters, compared eight bytes at a time.
/// Exact for such a `lower`: a byte ORed with 0x20 is a lowercase letter only if it is
/// that letter in either case, and is `-` only if it is `-` or CR, which neither a token
/// nor a header value can hold.
fn folded_eq(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("eight bytes"));
    let (mut a, mut b) = (name.chunks_exact(8), lower.chunks_exact(8));
    if (&mut a)
        .zip(&mut b)
        .any(|(x, y)| word(x) | 0x2020_2020_2020_2020 != word(y))
    {
        return false;
    }
    let tail = a.remainder().iter().zip(b.remainder());
    tail.into_iter().all(|(x, y)| x | 0x20 == *y)
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) name: Span,
    pub(crate) value: Span,
    pub(crate) kind: HeaderKind,
}

/// How the end of a message body is found (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the backend closes the connection.
    UntilClose,
}

/// Why a head could not be accepted. The caller decides the status: the same fault is
/// the client's (4xx) in a request and the backend's (502) in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadError {
    TooLarge,
    TooManyHeaders,
    Version,
    Malformed(&'static str),
    /// A transfer-coding other than `chunked`.
    UnsupportedCoding,
}

impl HeadError {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "header section too large",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::Version => "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)",
            HeadError::Malformed(what) => what,
            HeadError::UnsupportedCoding => "unsupported transfer-coding (only chunked)",
        }
    }
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::Version => HeadError::Version,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status line"),
            httparse::Error::Token => HeadError::Malformed("invalid token in request line"),
        }
    }
}

/// Bounds on a head: bytes up to and including the blank line, and header count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_headers: usize,
}

/// What the framing and connection headers of a head said.
#[derive(Default)]
struct HeaderFacts {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    names_headers: bool,
    expect_continue: bool,
    host: Option<Span>,
    hosts: u32,
    request_id: Option<Span>,
    session_id: Option<Span>,
    authorization: Option<Span>,
    api_key: Option<Span>,
}

/// Classifies the headers httparse found into `out` (cleared first) and collects what
/// the framing and routing headers say.
fn scan_headers(
    buf: &[u8],
    raw: &[httparse::Header<'_>],
    out: &mut Vec<Header>,
) -> Result<HeaderFacts, HeadError> {
    let mut facts = HeaderFacts::default();
    let mut te_seen = false;
    out.clear();
    for h in raw {
        let kind = classify(h.name.as_bytes());
        let value = h.value;
        match kind {
            HeaderKind::ContentLength => {
                if facts.content_length.is_some() {
                    return Err(HeadError::Malformed("repeated Content-Length"));
                }
                facts.content_length = Some(
                    parse_content_length(value)
                        .ok_or(HeadError::Malformed("invalid Content-Length"))?,
                );
            }
            HeaderKind::TransferEncoding => {
                if te_seen {
                    return Err(HeadError::Malformed("repeated Transfer-Encoding"));
                }
                if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::UnsupportedCoding);
                }
                te_seen = true;
                facts.chunked = true;
            }
            HeaderKind::Connection => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if folded_eq(token, b"close") {
                        facts.close = true;
                    } else if folded_eq(token, b"keep-alive") {
                        facts.keep_alive = true;
                    } else if !token.is_empty() {
                        facts.names_headers = true;
                    }
                }
            }
            HeaderKind::Expect if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") => {
                facts.expect_continue = true;
            }
            HeaderKind::Host => {
                facts.hosts += 1;
                facts.host = Some(Span::of(buf, value.trim_ascii()));
            }
            HeaderKind::RequestId => facts.request_id = Some(Span::of(buf, value)),
            // X-Olla-Session-ID (the longer name) wins over X-Session-ID.
            HeaderKind::SessionId if facts.session_id.is_none() || h.name.len() == 17 => {
                facts.session_id = Some(Span::of(buf, value.trim_ascii()));
            }
            HeaderKind::Authorization => {
                facts.authorization = Some(Span::of(buf, value.trim_ascii()));
            }
            HeaderKind::ApiKey => facts.api_key = Some(Span::of(buf, value.trim_ascii())),
            _ => {}
        }
        out.push(Header {
            name: Span::of(buf, h.name.as_bytes()),
            value: Span::of(buf, value),
            kind,
        });
    }
    Ok(facts)
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether header `h` may be copied to the next hop as is: not hop-by-hop, and not named
/// by the message's Connection header.
pub(crate) fn is_end_to_end(buf: &[u8], headers: &[Header], h: &Header, names: bool) -> bool {
    if h.kind.is_hop_by_hop() {
        return false;
    }
    if !names {
        return true;
    }
    let name = h.name.get(buf);
    !headers
        .iter()
        .filter(|c| c.kind == HeaderKind::Connection)
        .flat_map(|c| c.value.get(buf).split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
}

/// Follows a message body as its bytes arrive, to find where it ends without buffering it.
#[derive(Debug)]
pub(crate) enum BodyProgress {
    Remaining(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyProgress {
    /// `chunked_limit` bounds a chunked body's decoded size (`ChunkError::TooLarge`).
    pub(crate) fn new(framing: Framing, chunked_limit: u64) -> BodyProgress {
        match framing {
            Framing::Empty => BodyProgress::Remaining(0),
            Framing::Length(n) => BodyProgress::Remaining(n),
            Framing::Chunked => BodyProgress::Chunked(ChunkedDecoder::new(chunked_limit)),
            Framing::UntilClose => BodyProgress::UntilClose,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        match self {
            BodyProgress::Remaining(n) => *n == 0,
            BodyProgress::Chunked(d) => d.is_done(),
            BodyProgress::UntilClose => false,
        }
    }

    /// Accounts for `input`; returns how many of its bytes belong to this body (the rest
    /// would be a next message). With `decoded`, a chunked body's payload is appended
    /// there without its framing.
    pub(crate) fn advance(
        &mut self,
        input: &[u8],
        decoded: Option<&mut Vec<u8>>,
    ) -> Result<usize, ChunkError> {
        match self {
            BodyProgress::Remaining(n) => {
                let take = (*n).min(input.len() as u64) as usize;
                *n -= take as u64;
                if let Some(out) = decoded {
                    out.extend_from_slice(&input[..take]);
                }
                Ok(take)
            }
            BodyProgress::Chunked(d) => d.decode(input, decoded),
            BodyProgress::UntilClose => {
                if let Some(out) = decoded {
                    out.extend_from_slice(input);
                }
                Ok(input.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_classified_whatever_their_case() {
        use HeaderKind::*;
        for (name, kind) in [
            ("TE", HopByHop),
            ("Host", Host),
            ("EXPECT", Expect),
            ("Upgrade", HopByHop),
            ("trailer", HopByHop),
            ("Api-Key", ApiKey),
            ("X-Real-IP", XRealIp),
            ("x-api-key", ApiKey),
            ("Connection", Connection),
            ("Keep-Alive", HopByHop),
            ("X-Request-ID", RequestId),
            ("X-Session-Id", SessionId),
            ("Authorization", Authorization),
            ("Content-Length", ContentLength),
            ("X-Forwarded-For", XForwardedFor),
            ("X-Forwarded-Host", XForwardedHost),
            ("Proxy-Connection", HopByHop),
            ("Transfer-Encoding", TransferEncoding),
            ("X-Forwarded-Proto", XForwardedProto),
            ("X-Olla-Session-ID", SessionId),
            ("Proxy-Authenticate", HopByHop),
            ("Proxy-Authorization", HopByHop),
            ("Origin", Origin),
            ("Access-Control-Request-Method", AccessControlRequestMethod),
            (
                "access-control-request-headers",
                AccessControlRequestHeaders,
            ),
            ("Orig1n", Other),
            ("Content-Type", Other),
            ("Hosts", Other),
            ("Tost", Other),
            ("@ost", Other),
            ("Content-Lengtx", Other),
            ("", Other),
        ] {
            assert_eq!(classify(name.as_bytes()), kind, "{name}");
        }
    }
}
