//! The buffered connection both sides of the proxy read through, and the one way bytes
//! are written out. Neither reads nor writes carry a timeout of their own: callers race
//! them against their connection's [`Deadline`].

use std::io;
use std::ops::Range;
use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::deadline::{Deadline, Elapsed};

/// How long a proxied wait lasts before the waiting client is watched for a hang-up.
/// Quick exchanges never pay for the watch; during a fast stream a hang-up is noticed
/// anyway by the next write failing.
const WATCH_AFTER: Duration = Duration::from_millis(20);

/// A TCP connection with its read buffer. Bytes in `buf` are received and not yet
/// consumed; a message's spans index into it.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
}

/// How a wait on the far side of a proxied exchange ended.
pub(crate) enum Watched<T> {
    Done(T),
    /// The watched peer hung up first.
    HungUp,
    Elapsed,
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

    /// Awaits `work` (a wait on the far side of a proxied exchange) until `until`, unless
    /// this connection's peer hangs up first. The peer is watched only once the wait has
    /// lasted [`WATCH_AFTER`], so a quick exchange costs no I/O and no timer beyond the
    /// connection's own. Bytes the peer sends meanwhile (a pipelined request) are
    /// appended to `buf`; after that, it is no longer watched for this wait. Once `buf`
    /// holds `max_buffered` bytes the peer is not read at all (back-pressure): a client
    /// that writes while it is answered cannot grow the buffer without bound, and its
    /// hang-up is then noticed when its answer is written.
    pub(crate) async fn watch_while<F: Future>(
        &mut self,
        deadline: &mut Deadline<'_>,
        (now, until): (Instant, Instant),
        max_buffered: usize,
        work: F,
    ) -> Watched<F::Output> {
        let mut work = pin!(work);
        let watch = self.buf.len() < max_buffered;
        deadline.set(if watch {
            until.min(now + WATCH_AFTER)
        } else {
            until
        });
        match deadline.race(work.as_mut()).await {
            Ok(out) => return Watched::Done(out),
            Err(Elapsed) if deadline.at() >= until => return Watched::Elapsed,
            Err(Elapsed) => deadline.set(until),
        }
        let watched = async {
            monoio::select! {
                out = work.as_mut() => return Watched::Done(out),
                ready = self.stream.readable(false) => {
                    if ready.is_err() {
                        return Watched::HungUp;
                    }
                }
            }
            // Readable: a hang-up (EOF or reset) or early bytes; this read does not wait.
            match self.fill().await {
                Ok(0) | Err(_) => Watched::HungUp,
                Ok(_) => Watched::Done(work.await),
            }
        };
        deadline.run(watched).await.unwrap_or(Watched::Elapsed)
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
