//! The buffered connection both sides of the proxy read through, and the one way bytes
//! are written out. Neither reads nor writes carry a timeout of their own: callers race
//! them against their connection's [`Deadline`].

use std::io;
use std::ops::Range;
use std::pin::pin;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::deadline::{Deadline, Elapsed};

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
    /// Cancelled (its deadline passed), it leaves `buf` empty: the connection is done.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(self.buf.capacity().max(4096));
        }
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (result, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        result
    }

    /// Replaces the buffer's contents with whatever arrives next (the previous contents
    /// were consumed). Used to relay a response body without copying.
    pub(crate) async fn refill(&mut self) -> io::Result<usize> {
        self.buf.clear();
        self.fill().await
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

/// [`write_out`] within a deadline: a peer that stops reading cannot hold the writer
/// past `until`. Timed out, the write was cancelled: `buf` is empty and the connection
/// must be closed.
///
/// The connection's timer is moved to `until` only when it would fire later, or once it
/// has fired before the write ended: a write that ends before the timer's current time
/// (almost all of them) costs no timer operation.
pub(crate) async fn write_out_by(
    deadline: &mut Deadline<'_>,
    until: Instant,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    range: Range<usize>,
) -> io::Result<()> {
    let mut write = pin!(write_out(stream, buf, range));
    if deadline.at() > until {
        deadline.set(until);
    }
    loop {
        match deadline.race(write.as_mut()).await {
            Ok(written) => return written,
            Err(Elapsed) if deadline.at() >= until => return Err(io::ErrorKind::TimedOut.into()),
            Err(Elapsed) => deadline.set(until),
        }
    }
}

/// Writes `buf[range]` to `stream`, lending `buf` to the kernel meanwhile: it is back,
/// unchanged, when this returns. Cancelled (a deadline passed), it leaves `buf` empty.
pub(crate) async fn write_out(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    range: Range<usize>,
) -> io::Result<()> {
    let lent = std::mem::take(buf);
    let (result, slice) = stream.write_all(lent.slice(range)).await;
    *buf = slice.into_inner();
    result.map(drop)
}
