//! Response heads: parsing a backend's head (bounded, strict framing).

use std::mem::MaybeUninit;

use super::{Framing, HEADER_CAP, HeadError, HeadLimits, Header, Span, scan_headers};

/// A parsed response head: spans into the endpoint connection's buffer. Like a request
/// head, a plain value; its headers are kept beside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) reason: Span,
    pub(crate) len: usize,
    pub(crate) body: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) connection_names_headers: bool,
}

impl ResponseHead {
    /// A status whose response never has a body (RFC 9110 §6.4.1).
    pub(crate) fn is_bodiless_status(&self) -> bool {
        self.status < 200 || self.status == 204 || self.status == 304
    }
}

/// Parses a response head at the start of `buf`, its headers into `headers`;
/// `request_was_head` decides framing. `Ok(None)` means more bytes are needed.
pub(crate) fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
    request_was_head: bool,
    headers: &mut Vec<Header>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut raw = [const { MaybeUninit::uninit() }; HEADER_CAP];
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut raw[..limits.max_headers],
    )? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > limits.max_bytes => {
            return Err(HeadError::TooLarge);
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > limits.max_bytes {
        return Err(HeadError::TooLarge);
    }
    let status = res.code.unwrap_or(0);
    let minor_version = res.version.unwrap_or(1);
    let reason = res.reason.unwrap_or("");
    let facts = scan_headers(buf, res.headers, headers)?;
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
    Ok(Some(ResponseHead {
        status,
        reason: Span::of(buf, reason.as_bytes()),
        len,
        body,
        keep_alive: body != Framing::UntilClose
            && !facts.close
            && (minor_version == 1 || facts.keep_alive),
        connection_names_headers: facts.names_headers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 8192,
        max_headers: 64,
    };

    #[test]
    fn response_framing_follows_rfc_9112() {
        let parse = |raw: &[u8], was_head: bool| {
            let head = parse_response(raw, &LIMITS, was_head, &mut Vec::new())
                .unwrap()
                .expect("complete");
            (head.body, head.keep_alive)
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
}
