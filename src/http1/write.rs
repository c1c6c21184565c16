//! Head-writing primitives: header lines, decimals and status lines appended to a buffer,
//! and [`Lines`], which copies received header lines as they came. The heads themselves
//! are composed in `proxy/heads.rs`.

use std::ops::Range;

use super::Header;

/// Copies header lines from the buffer they were received in: a line that ends right
/// after its value (`Name: value\r\n`, as httparse validated it) is copied as received,
/// and adjacent such lines in one copy; any other is written anew with [`push_header`].
/// Call [`Lines::finish`] before writing anything else to `out`.
pub(crate) struct Lines<'a> {
    buf: &'a [u8],
    /// Received bytes not yet copied: lines adjacent to each other.
    run: Range<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Lines<'a> {
        Lines { buf, run: 0..0 }
    }

    pub(crate) fn push(&mut self, out: &mut Vec<u8>, h: &Header) {
        let (name, value) = (h.name.range(), h.value.range());
        let end = value.end + 2;
        // A value httparse did not take from the buffer (an empty one may be a static
        // slice) is not a position in it.
        let received = value.start >= name.end && self.buf.get(value.end..end) == Some(b"\r\n");
        if !received {
            self.finish(out);
            push_header(out, &self.buf[name], &self.buf[value]);
        } else if !self.run.is_empty() && self.run.end == name.start {
            self.run.end = end;
        } else {
            self.finish(out);
            self.run = name.start..end;
        }
    }

    /// Copies what is pending.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.run.is_empty() {
            out.extend_from_slice(&self.buf[self.run.clone()]);
            self.run = 0..0;
        }
    }
}

/// Whether `value` can be written as a header value as it is: no control bytes but
/// HTAB (RFC 9110 §5.5), so no CR or LF that would end the line. Values parsed from a
/// head (httparse checks them) and ringway's own always are; anything else from a
/// request or an endpoint must be checked before it reaches [`push_header`].
pub(crate) fn is_field_text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Two ASCII digits for each of 0..100.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Appends a chunk of a chunked body's framing before `len` bytes of data: the size in
/// hex and CRLF (the data and its CRLF follow).
pub(crate) fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(n, &mut digits));
}

/// `n` in decimal, written two digits a step at the end of `digits` (the rate-limit
/// headers write three numbers per answer, a Unix time among them).
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    &digits[i..]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_in_hex() {
        for (len, text) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (16, "10\r\n"),
            (0xabc, "abc\r\n"),
        ] {
            let mut out = Vec::new();
            push_chunk_size(&mut out, len);
            assert_eq!(out, text.as_bytes());
        }
        let mut out = Vec::new();
        push_chunk_size(&mut out, usize::MAX);
        assert_eq!(out.len(), usize::BITS as usize / 4 + 2);
    }
    use crate::http1::{HeadLimits, parse_request};

    #[test]
    fn received_lines_are_copied_as_they_came_and_others_rewritten() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-A:1\r\nX-Skip: s\r\nX-B:  two words\r\nX-C: 3\r\nX-D:\r\nX-E: e\n\r\n";
        let limits = HeadLimits {
            max_bytes: 1024,
            max_headers: 16,
        };
        let mut headers = Vec::new();
        parse_request(raw, &limits, &mut headers).unwrap().unwrap();
        let mut out = Vec::new();
        let mut lines = Lines::new(raw);
        for h in headers.iter().filter(|h| h.name.get(raw) != b"X-Skip") {
            lines.push(&mut out, h);
        }
        lines.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Host: a\r\nX-A:1\r\nX-B:  two words\r\nX-C: 3\r\nX-D:\r\nX-E: e\r\n",
            "received lines as they came, the bare-LF one rewritten"
        );
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 9, 10, 99, 100, 101, 12345, 1_764_633_600, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
