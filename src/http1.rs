//! HTTP/1.1 on the wire, for both sides of the proxy: bounded head parsing, message
//! framing, head writing, and a buffered connection. The request path calls it at
//! `parse_request` (client heads and bodies) and in `forward`/`stream_response`
//! (backend heads and bodies).
//!
//! Why not monoio-http's codec: its decoder builds an `http::HeaderMap` (allocations per
//! header) on top of the same `httparse`, has no bound on the head size, buffers whole
//! bodies, rejects chunk extensions, drops trailers and ignores `Expect: 100-continue`,
//! and its client and chunked encoder hold back streamed tokens. A proxy only needs to
//! know a handful of headers and copy the rest, so we parse with `httparse` directly,
//! remember each header as a pair of offsets into the connection's buffer, classify it
//! once, and write the forwarded head by copying byte ranges.

mod chunked;

use std::io;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;

pub(crate) use chunked::{ChunkError, ChunkedDecoder};

/// Most headers a head may carry; `server.max_headers` may lower it.
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

    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.start as usize, self.end as usize)
    }

    pub(crate) fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// What a header means to a proxy; decided once, at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    /// Copied through unchanged.
    Other,
    /// Meaningful for one hop only, never forwarded (RFC 9110 §7.6.1), or framing that
    /// ringway re-creates itself: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
    /// Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate.
    HopByHop,
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
}

fn classify(name: &[u8]) -> HeaderKind {
    use HeaderKind::*;
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => HopByHop,
        4 if is(b"host") => Host,
        6 if is(b"expect") => Expect,
        7 if is(b"upgrade") || is(b"trailer") => HopByHop,
        7 if is(b"api-key") => ApiKey,
        9 if is(b"x-real-ip") => XRealIp,
        9 if is(b"x-api-key") => ApiKey,
        10 if is(b"connection") || is(b"keep-alive") => HopByHop,
        12 if is(b"x-request-id") => RequestId,
        12 if is(b"x-session-id") => SessionId,
        13 if is(b"authorization") => Authorization,
        14 if is(b"content-length") => ContentLength,
        15 if is(b"x-forwarded-for") => XForwardedFor,
        16 if is(b"x-forwarded-host") => XForwardedHost,
        16 if is(b"proxy-connection") => HopByHop,
        17 if is(b"transfer-encoding") => HopByHop,
        17 if is(b"x-forwarded-proto") => XForwardedProto,
        17 if is(b"x-olla-session-id") => SessionId,
        18 if is(b"proxy-authenticate") => HopByHop,
        19 if is(b"proxy-authorization") => HopByHop,
        _ => Other,
    }
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

/// A parsed request head. Spans point into the client connection's buffer, which is not
/// modified until the request is done.
#[derive(Debug, Default)]
pub(crate) struct RequestHead {
    pub(crate) method: Span,
    pub(crate) target: Span,
    pub(crate) minor_version: u8,
    pub(crate) headers: Vec<Header>,
    /// Length of the head in bytes, including the blank line.
    pub(crate) len: usize,
    pub(crate) body: Option<Framing>,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) is_head: bool,
    /// The Connection header named other headers, which must not be forwarded either.
    pub(crate) connection_names_headers: bool,
    pub(crate) host: Option<Span>,
    pub(crate) request_id: Option<Span>,
    pub(crate) session_id: Option<Span>,
    pub(crate) authorization: Option<Span>,
    pub(crate) api_key: Option<Span>,
}

impl RequestHead {
    /// Forgets the previous request, so an error answered before the next head is parsed
    /// does not inherit its flags.
    pub(crate) fn reset(&mut self) {
        self.method = Span::default();
        self.target = Span::default();
        self.headers.clear();
        self.len = 0;
        self.body = None;
        self.minor_version = 1;
        self.keep_alive = false;
        self.expect_continue = false;
        self.is_head = false;
        self.connection_names_headers = false;
        self.host = None;
        self.request_id = None;
        self.session_id = None;
        self.authorization = None;
        self.api_key = None;
    }
}

/// A parsed response head; spans point into the upstream connection's buffer.
#[derive(Debug, Default)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) reason: Span,
    pub(crate) minor_version: u8,
    pub(crate) headers: Vec<Header>,
    pub(crate) len: usize,
    pub(crate) body: Option<Framing>,
    pub(crate) keep_alive: bool,
    pub(crate) connection_names_headers: bool,
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
            HeaderKind::HopByHop if h.name.eq_ignore_ascii_case("transfer-encoding") => {
                if te_seen {
                    return Err(HeadError::Malformed("repeated Transfer-Encoding"));
                }
                if !trim(value).eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::UnsupportedCoding);
                }
                te_seen = true;
                facts.chunked = true;
            }
            HeaderKind::HopByHop if h.name.eq_ignore_ascii_case("connection") => {
                for token in value.split(|&b| b == b',').map(trim) {
                    if token.eq_ignore_ascii_case(b"close") {
                        facts.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        facts.keep_alive = true;
                    } else if !token.is_empty() {
                        facts.names_headers = true;
                    }
                }
            }
            HeaderKind::Expect if trim(value).eq_ignore_ascii_case(b"100-continue") => {
                facts.expect_continue = true;
            }
            HeaderKind::Host => {
                facts.hosts += 1;
                facts.host = Some(Span::of(buf, trim(value)));
            }
            HeaderKind::RequestId => facts.request_id = Some(Span::of(buf, value)),
            // X-Olla-Session-ID wins over X-Session-ID when both are present.
            HeaderKind::SessionId
                if facts.session_id.is_none()
                    || h.name.eq_ignore_ascii_case("x-olla-session-id") =>
            {
                facts.session_id = Some(Span::of(buf, trim(value)));
            }
            HeaderKind::Authorization => facts.authorization = Some(Span::of(buf, trim(value))),
            HeaderKind::ApiKey => facts.api_key = Some(Span::of(buf, trim(value))),
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
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Parses a request head at the start of `buf`. `Ok(false)` means more bytes are needed.
pub(crate) fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    head: &mut RequestHead,
) -> Result<bool, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; HEADER_CAP];
    let mut req = httparse::Request::new(&mut raw[..limits.max_headers]);
    let parsed = match req.parse(buf) {
        Ok(parsed) => parsed,
        // httparse says "version" for any unparsable request line. Which answer fits,
        // 505 for a well-formed version we do not speak or 400, is known only once the
        // line is complete: until then, wait for more like for any partial head, so the
        // answer does not depend on where a TCP segment ended (fuzzing finding 2).
        Err(httparse::Error::Version) if !buf.contains(&b'\n') => httparse::Status::Partial,
        Err(httparse::Error::Version) if !names_an_http_version(buf) => {
            return Err(HeadError::Malformed("invalid request line"));
        }
        Err(e) => return Err(e.into()),
    };
    let len = match parsed {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > limits.max_bytes => {
            return Err(HeadError::TooLarge);
        }
        httparse::Status::Partial => return Ok(false),
    };
    if len > limits.max_bytes {
        return Err(HeadError::TooLarge);
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    let minor_version = req.version.unwrap_or(1);
    let facts = scan_headers(buf, req.headers, &mut head.headers)?;

    if method == "CONNECT" {
        return Err(HeadError::Malformed("CONNECT is not supported"));
    }
    // Origin-form only: the destination is always a configured endpoint, never the
    // request target (no open proxy).
    let origin_form = target.starts_with('/') || (target == "*" && method == "OPTIONS");
    if !origin_form {
        return Err(HeadError::Malformed(
            "request target must be a path (origin-form)",
        ));
    }
    if minor_version == 1 && facts.hosts != 1 {
        return Err(HeadError::Malformed(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let body = match (facts.chunked, facts.content_length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        (true, None) if minor_version == 0 => {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    head.method = Span::of(buf, method.as_bytes());
    head.target = Span::of(buf, target.as_bytes());
    head.minor_version = minor_version;
    head.len = len;
    head.body = Some(body);
    head.keep_alive = !facts.close && (minor_version == 1 || facts.keep_alive);
    head.expect_continue = facts.expect_continue && minor_version == 1;
    head.is_head = method == "HEAD";
    head.connection_names_headers = facts.names_headers;
    head.host = facts.host;
    head.request_id = facts.request_id;
    head.session_id = facts.session_id;
    head.authorization = facts.authorization;
    head.api_key = facts.api_key;
    Ok(true)
}

/// Whether the first line ends in `HTTP/<digit>.<digit>` (or `HTTP/<digit>`).
fn names_an_http_version(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or(b"")
        .trim_ascii_end();
    // `method SP target SP version`, nothing empty.
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    if method.is_empty() || target.is_empty() {
        return false;
    }
    match version.strip_prefix(b"HTTP/") {
        Some([major]) => major.is_ascii_digit(),
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    }
}

/// Parses a response head at the start of `buf`; `request_was_head` decides framing.
pub(crate) fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
    request_was_head: bool,
    head: &mut ResponseHead,
) -> Result<bool, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; HEADER_CAP];
    let mut res = httparse::Response::new(&mut raw[..limits.max_headers]);
    let len = match res.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > limits.max_bytes => {
            return Err(HeadError::TooLarge);
        }
        httparse::Status::Partial => return Ok(false),
    };
    if len > limits.max_bytes {
        return Err(HeadError::TooLarge);
    }
    let status = res.code.unwrap_or(0);
    let minor_version = res.version.unwrap_or(1);
    let reason = res.reason.unwrap_or("");
    let facts = scan_headers(buf, res.headers, &mut head.headers)?;
    let body = if request_was_head || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if facts.chunked {
        if facts.content_length.is_some() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        Framing::Chunked
    } else {
        match facts.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    head.status = status;
    head.reason = Span::of(buf, reason.as_bytes());
    head.minor_version = minor_version;
    head.len = len;
    head.body = Some(body);
    head.keep_alive =
        body != Framing::UntilClose && !facts.close && (minor_version == 1 || facts.keep_alive);
    head.connection_names_headers = facts.names_headers;
    Ok(true)
}

/// Follows a message body as its bytes arrive, to find where it ends without buffering it.
#[derive(Debug)]
pub(crate) enum BodyProgress {
    Remaining(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyProgress {
    pub(crate) fn new(framing: Framing) -> BodyProgress {
        match framing {
            Framing::Empty => BodyProgress::Remaining(0),
            Framing::Length(n) => BodyProgress::Remaining(n),
            Framing::Chunked => BodyProgress::Chunked(ChunkedDecoder::new(u64::MAX)),
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

/// Bounds on a head: bytes up to and including the blank line, and header count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_headers: usize,
}

/// Whether header `h` may be copied to the next hop as is: not hop-by-hop, and not named
/// by the message's Connection header.
pub(crate) fn is_end_to_end(buf: &[u8], headers: &[Header], h: &Header, names: bool) -> bool {
    if h.kind == HeaderKind::HopByHop {
        return false;
    }
    if !names {
        return true;
    }
    let name = h.name.get(buf);
    !headers
        .iter()
        .filter(|c| {
            c.kind == HeaderKind::HopByHop && c.name.get(buf).eq_ignore_ascii_case(b"connection")
        })
        .flat_map(|c| c.value.get(buf).split(|&b| b == b','))
        .any(|token| trim(token).eq_ignore_ascii_case(name))
}

// ---- writing heads ----

pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(crate) fn push_header_decimal(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Writes `HTTP/1.1 <code> <reason>\r\n` with the canonical reason phrase.
pub(crate) fn push_status_line(out: &mut Vec<u8>, status: http::StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

// ---- the buffered connection ----

/// How long a proxied wait lasts before the waiting client is watched for a hang-up.
/// Quick exchanges never pay for the watch; during a fast stream a hang-up is noticed
/// anyway by the next write failing.
const WATCH_AFTER: Duration = Duration::from_millis(20);
/// Bound on the read that follows readiness (which completes at once).
const WATCH_READ: Duration = Duration::from_secs(1);

/// Why reading or writing a connection failed.
#[derive(Debug)]
pub(crate) enum IoFail {
    /// The deadline passed. The cancelled operation may have consumed data: the
    /// connection must be closed, never reused.
    Timeout,
    Io(io::Error),
}

/// A TCP connection with its read buffer. Bytes in `buf` are received and not yet
/// consumed; a message's spans index into it.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, capacity: usize) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Reads whatever arrives next, appending it to `buf`. `Ok(0)` is end of stream.
    pub(crate) async fn fill(&mut self, within: Duration) -> Result<usize, IoFail> {
        self.read_more(within, None).await
    }

    /// Like `fill`, but `cancel` can end the wait (an idle connection when draining).
    pub(crate) async fn fill_unless(
        &mut self,
        within: Duration,
        cancel: CancelHandle,
    ) -> Result<usize, IoFail> {
        self.read_more(within, Some(cancel)).await
    }

    async fn read_more(
        &mut self,
        within: Duration,
        cancel: Option<CancelHandle>,
    ) -> Result<usize, IoFail> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(self.buf.capacity().max(4096));
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let slice = buf.slice_mut(len..cap);
        let read = async {
            match cancel {
                Some(cancel) => self.stream.cancelable_read(slice, cancel).await,
                None => self.stream.read(slice).await,
            }
        };
        match monoio::time::timeout(within, read).await {
            Ok((result, slice)) => {
                self.buf = slice.into_inner();
                result.map_err(IoFail::Io)
            }
            // The buffer went with the cancelled read; `buf` stays empty and the caller
            // drops the connection.
            Err(_) => Err(IoFail::Timeout),
        }
    }

    /// Awaits `work` (a wait on the other side of a proxied exchange) unless this
    /// connection's peer hangs up first (`None`). The peer is watched only once the wait
    /// has lasted [`WATCH_AFTER`], so quick exchanges cost one timer and no I/O. Bytes the
    /// peer sends meanwhile (a pipelined request) are appended to `buf`; after that, it is
    /// no longer watched for this wait.
    pub(crate) async fn unless_hung_up<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        monoio::select! {
            out = &mut work => return Some(out),
            () = monoio::time::sleep(WATCH_AFTER) => {}
        }
        monoio::select! {
            out = &mut work => return Some(out),
            ready = self.stream.readable(false) => {
                if ready.is_err() {
                    return None;
                }
            }
        }
        // Readable: a hang-up (EOF or reset) or early bytes; this read does not wait.
        match self.fill(WATCH_READ).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(work.await),
        }
    }

    /// Replaces the buffer's contents with whatever arrives next (the previous contents
    /// were consumed). Used to relay a response body without copying.
    pub(crate) async fn refill(&mut self, within: Duration) -> Result<usize, IoFail> {
        self.buf.clear();
        self.fill(within).await
    }

    /// Drops the first `n` bytes of the buffer (a finished message).
    pub(crate) fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }
}

/// Writes all of `buf[..len]` and hands the buffer back for reuse.
pub(crate) async fn write_all(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    len: usize,
) -> (io::Result<()>, Vec<u8>) {
    let (res, slice) = stream.write_all(buf.slice(0..len)).await;
    (res.map(drop), slice.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 8192,
        max_headers: 64,
    };

    fn request(raw: &[u8]) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        assert!(parse_request(raw, &LIMITS, &mut head)?, "incomplete");
        Ok(head)
    }

    #[test]
    fn parses_a_request_and_classifies_headers() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: proxy:40114\r\n\
            Content-Length: 5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
            X-Request-ID: abc\r\nAccept: */*\r\n\r\nhello";
        let head = request(raw).unwrap();
        assert_eq!(head.method.get(raw), b"POST");
        assert_eq!(head.target.get(raw), b"/v1/chat/completions?x=1");
        assert_eq!(head.body, Some(Framing::Length(5)));
        assert_eq!(head.len, raw.len() - 5);
        assert!(head.keep_alive);
        assert_eq!(head.host.unwrap().get(raw), b"proxy:40114");
        assert_eq!(head.request_id.unwrap().get(raw), b"abc");
        let forwarded: Vec<&[u8]> = head
            .headers
            .iter()
            .filter(|h| is_end_to_end(raw, &head.headers, h, head.connection_names_headers))
            .map(|h| h.name.get(raw))
            .collect();
        // Connection and the header it names stay on this hop.
        assert_eq!(
            forwarded,
            vec![&b"Host"[..], b"Content-Length", b"X-Request-ID", b"Accept"]
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(
            !request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!request(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn partial_heads_ask_for_more_and_oversize_heads_fail() {
        let mut head = RequestHead::default();
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHo", &LIMITS, &mut head),
            Ok(false)
        );
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(
            parse_request(&big, &LIMITS, &mut head),
            Err(HeadError::TooLarge)
        );
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&big, &LIMITS, &mut head),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn rejects_ambiguous_framing_and_foreign_targets() {
        for (raw, want) in [
            (&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "both"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "repeated"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", "invalid Content-Length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", "invalid Content-Length"),
            (b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", "origin-form"),
            (b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", "CONNECT"),
            (b"GET / HTTP/1.1\r\n\r\n", "Host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "Host"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
        ] {
            match request(raw) {
                Err(HeadError::Malformed(what)) => assert!(what.contains(want), "{what}"),
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(raw)),
            }
        }
        assert_eq!(
            request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap_err(),
            HeadError::UnsupportedCoding
        );
        assert_eq!(
            request(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(
            request(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err(),
            HeadError::Malformed("invalid request line"),
            "a well-formed version in a malformed line"
        );
        // An unparsable request line is judged once it is complete, whatever arrived
        // first (fuzzing finding 2).
        for partial in [&b"T /  HTTP/1"[..], b"GET / HTTP/2", b"T /  HTTP/1x"] {
            let mut head = RequestHead::default();
            assert_eq!(parse_request(partial, &LIMITS, &mut head), Ok(false));
        }
        assert!(
            request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n").is_err(),
            "obs-fold"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let parse = |raw: &[u8], was_head: bool| {
            let mut head = ResponseHead::default();
            assert!(parse_response(raw, &LIMITS, was_head, &mut head).unwrap());
            (head.body.unwrap(), head.keep_alive)
        };
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            (Framing::Length(3), true)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            (Framing::Empty, true)
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (Framing::Empty, false)
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), false)
        );
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
