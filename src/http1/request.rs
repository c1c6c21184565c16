//! Request heads: parsing a client's head (bounded, strict framing, origin-form only).

use std::mem::MaybeUninit;

use super::{Framing, HEADER_CAP, HeadError, HeadLimits, Header, Span, scan_headers};

/// A parsed request head: spans into the client connection's buffer, which is not
/// modified until the request is done, and what its headers said. Its header list is
/// kept beside it (the connection's reusable list), so a head is a plain value made
/// fresh by every parse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead {
    pub(crate) method: Span,
    pub(crate) target: Span,
    pub(crate) minor_version: u8,
    /// Length of the head in bytes, including the blank line.
    pub(crate) len: usize,
    pub(crate) body: Framing,
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

/// Parses a request head at the start of `buf`, its headers into `headers`. `Ok(None)`
/// means more bytes are needed.
pub(crate) fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    headers: &mut Vec<Header>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut raw = [const { MaybeUninit::uninit() }; HEADER_CAP];
    let mut req = httparse::Request::new(&mut []);
    let parsed = match req.parse_with_uninit_headers(buf, &mut raw[..limits.max_headers]) {
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
        httparse::Status::Partial => return Ok(None),
    };
    if len > limits.max_bytes {
        return Err(HeadError::TooLarge);
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    let minor_version = req.version.unwrap_or(1);
    let facts = scan_headers(buf, req.headers, headers)?;

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
    Ok(Some(RequestHead {
        method: Span::of(buf, method.as_bytes()),
        target: Span::of(buf, target.as_bytes()),
        minor_version,
        len,
        body,
        keep_alive: !facts.close && (minor_version == 1 || facts.keep_alive),
        expect_continue: facts.expect_continue && minor_version == 1,
        is_head: method == "HEAD",
        connection_names_headers: facts.names_headers,
        host: facts.host,
        request_id: facts.request_id,
        session_id: facts.session_id,
        authorization: facts.authorization,
        api_key: facts.api_key,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::is_end_to_end;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 8192,
        max_headers: 64,
    };

    fn request(raw: &[u8]) -> Result<(RequestHead, Vec<Header>), HeadError> {
        let mut headers = Vec::new();
        let head = parse_request(raw, &LIMITS, &mut headers)?.expect("complete");
        Ok((head, headers))
    }

    fn partial(raw: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_request(raw, &LIMITS, &mut Vec::new())
    }

    #[test]
    fn parses_a_request_and_classifies_headers() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: proxy:40114\r\n\
            Content-Length: 5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
            X-Request-ID: abc\r\nAccept: */*\r\n\r\nhello";
        let (head, headers) = request(raw).unwrap();
        assert_eq!(head.method.get(raw), b"POST");
        assert_eq!(head.target.get(raw), b"/v1/chat/completions?x=1");
        assert_eq!(head.body, Framing::Length(5));
        assert_eq!(head.len, raw.len() - 5);
        assert!(head.keep_alive);
        assert_eq!(head.host.unwrap().get(raw), b"proxy:40114");
        assert_eq!(head.request_id.unwrap().get(raw), b"abc");
        let forwarded: Vec<&[u8]> = headers
            .iter()
            .filter(|h| is_end_to_end(raw, &headers, h, head.connection_names_headers))
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
        let keep_alive = |raw: &[u8]| request(raw).unwrap().0.keep_alive;
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
    }

    #[test]
    fn partial_heads_ask_for_more_and_oversize_heads_fail() {
        assert_eq!(
            partial(b"GET / HTTP/1.1\r\nHo").map(|h| h.is_some()),
            Ok(false)
        );
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(partial(&big).unwrap_err(), HeadError::TooLarge);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(partial(&big).unwrap_err(), HeadError::TooLarge);
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
        for raw in [&b"T /  HTTP/1"[..], b"GET / HTTP/2", b"T /  HTTP/1x"] {
            assert_eq!(partial(raw).map(|h| h.is_some()), Ok(false));
        }
        assert!(
            request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n").is_err(),
            "obs-fold"
        );
    }
}
