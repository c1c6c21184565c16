//! Chunked transfer-coding (RFC 9112 §7.1): an incremental, validating decoder used both
//! to re-frame a client's chunked body and to find where a backend's chunked response ends.
//!
//! It never allocates and never looks ahead: feed it whatever bytes arrived, it consumes
//! up to the end of the message and tells you how far it got. With `out = Some(vec)` the
//! chunk payloads are appended to `vec` (decoding); with `None` it only validates and
//! measures, so a response can be passed through byte for byte (streaming relay).

use std::fmt;

/// Longest chunk-size line we accept: 16 hex digits plus extensions.
const MAX_SIZE_LINE: u32 = 4096;
/// Longest trailer section we accept.
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the digits: optional whitespace, then `;` or CR.
    SizeTail,
    /// Inside `;extension`: ignored, but printable, up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkError {
    BadSize,
    SizeLineTooLong,
    BadLineEnding,
    TrailersTooLarge,
    /// The decoded payload would exceed the caller's limit.
    TooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeLineTooLong => "chunk size line too long",
            ChunkError::BadLineEnding => "chunk not terminated by CRLF",
            ChunkError::TrailersTooLarge => "chunked trailers too large",
            ChunkError::TooLarge => "chunked body larger than the limit",
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Bytes left in the current chunk (Data) or the size being accumulated (Size).
    remaining: u64,
    digits: u32,
    /// Length of the current size line or of the trailer section, for the bounds above.
    line: u32,
    /// Total payload seen, checked against `limit`.
    total: u64,
    limit: u64,
}

impl ChunkedDecoder {
    /// A decoder that rejects messages whose decoded payload exceeds `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            total: 0,
            limit,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of `input` up to the end of the chunked message and returns how many
    /// it consumed; bytes after the end are left alone (they belong to the next message).
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match hex_value(b) {
                    Some(v) => {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(ChunkError::BadSize);
                        }
                        self.remaining = (self.remaining << 4) | u64::from(v);
                    }
                    None if self.digits == 0 => return Err(ChunkError::BadSize),
                    None => {
                        self.state = State::SizeTail;
                        continue; // re-examine this byte as part of the tail
                    }
                },
                State::SizeTail => match b {
                    b'\r' => self.state = State::SizeLf,
                    b';' => self.state = State::Ext,
                    b' ' | b'\t' => {}
                    _ => return Err(ChunkError::BadSize),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | b' '..=b'~' => {}
                    _ => return Err(ChunkError::BadLineEnding),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.line = 0;
                    self.digits = 0;
                    if self.remaining == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.total = self.total.saturating_add(self.remaining);
                        if self.total > self.limit {
                            return Err(ChunkError::TooLarge);
                        }
                        self.state = State::Data;
                    }
                    i += 1;
                    continue;
                }
                State::Data => {
                    let take = (input.len() - i).min(self.remaining as usize);
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&input[i..i + take]);
                    }
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Size;
                    i += 1;
                    continue;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::Trailer
                    };
                }
                State::Trailer => {
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            // Every byte outside chunk data counts against the line / trailer bounds.
            self.line += 1;
            let bound = match self.state {
                State::Size | State::SizeTail | State::Ext | State::SizeLf => MAX_SIZE_LINE,
                _ => MAX_TRAILERS,
            };
            if self.line > bound {
                return Err(if bound == MAX_SIZE_LINE {
                    ChunkError::SizeLineTooLong
                } else {
                    ChunkError::TrailersTooLarge
                });
            }
            i += 1;
        }
        Ok(i)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(u64::MAX);
        let mut out = Vec::new();
        let n = d.decode(input, Some(&mut out))?;
        Ok((n, out, d.is_done()))
    }

    #[test]
    fn decodes_chunks_and_stops_at_the_end() {
        let msg = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1";
        let (n, out, done) = decode_all(msg).unwrap();
        assert!(done);
        assert_eq!(out, b"hello world");
        assert_eq!(&msg[n..], b"GET / HTTP/1.1");
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_result() {
        let msg = b"a;name=value\r\n0123456789\r\n1\r\nX\r\n0\r\nTrailer: yes\r\n\r\n";
        for split in 0..msg.len() {
            let mut d = ChunkedDecoder::new(u64::MAX);
            let mut out = Vec::new();
            let a = d.decode(&msg[..split], Some(&mut out)).unwrap();
            assert_eq!(a, split, "consumes everything before the end");
            let b = d.decode(&msg[split..], Some(&mut out)).unwrap();
            assert_eq!(a + b, msg.len());
            assert!(d.is_done());
            assert_eq!(out, b"0123456789X");
        }
    }

    #[test]
    fn pass_through_mode_measures_without_copying() {
        let mut d = ChunkedDecoder::new(u64::MAX);
        let msg = b"3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(d.decode(msg, None).unwrap(), msg.len());
        assert!(d.is_done());
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"\r\n"[..],                    // no size
            b"g\r\n",                        // not hex
            b"5\nhello\r\n",                 // bare LF after size
            b"5\r\nhelloX\r\n",              // data longer than the size
            b"5\r\nhello\n",                 // bare LF after data
            b"11111111111111111\r\n",        // 17 hex digits: overflow
            b"5 x\r\n",                      // junk after the size that is not an extension
            b"0\r\nTrailer: a\nMore: b\r\n", // bare LF in a trailer
            b"5\0\r\n",                      // control byte in the size line
        ] {
            assert!(
                decode_all(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn enforces_the_payload_limit() {
        let mut d = ChunkedDecoder::new(4);
        assert_eq!(d.decode(b"5\r\nhello\r\n", None), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::new(5);
        assert!(d.decode(b"5\r\nhello\r\n0\r\n\r\n", None).is_ok());
    }

    #[test]
    fn bounds_the_size_line_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'x', 5000));
        assert_eq!(decode_all(&long_ext), Err(ChunkError::SizeLineTooLong));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Trailer: value\r\n");
        }
        assert_eq!(decode_all(&trailers), Err(ChunkError::TrailersTooLarge));
    }
}
