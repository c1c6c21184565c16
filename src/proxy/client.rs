//! A client connection's lasting state: its stream (plain, or TLS on the TLS listener),
//! its peer, and the buffers each of its requests reuses. Nothing in it describes the
//! current request.

use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut, Range};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;

use crate::deadline::{Deadline, Elapsed};
use crate::http1::{self, Conn, Header};
use crate::tls::listener::{self, PLAIN_HTTP_ANSWER, Refused, ServerTls};

/// How long a proxied wait lasts before the waiting client is watched for a hang-up.
/// Quick exchanges never pay for the watch; during a fast stream a hang-up is noticed
/// anyway by the next write failing.
const WATCH_AFTER: Duration = Duration::from_millis(20);
/// Longest a TLS connection's close_notify, or the answer to plain HTTP on the TLS
/// listener, may take to go out before the connection is closed anyway.
const CLOSING_WRITE: Duration = Duration::from_secs(1);
/// How long a client answered [`PLAIN_HTTP_ANSWER`] may take to finish sending: a close
/// with its bytes unread would reset the connection before the answer is read.
const PLAIN_HTTP_LINGER: Duration = Duration::from_millis(500);

/// A client connection: what lasts across its requests. Its buffers are reused by each
/// request; nothing in it describes the current request.
pub(super) struct Client {
    pub(super) conn: ClientConn,
    pub(super) peer: SocketAddr,
    /// The client address, formatted once for X-Forwarded-For.
    pub(super) peer_ip: String,
    /// The current request's header list.
    pub(super) headers: Vec<Header>,
    /// The current response's header list, as the endpoint sent it.
    pub(super) response_headers: Vec<Header>,
    /// The request for the endpoint: its head, and its body when small.
    pub(super) to_endpoint: Vec<u8>,
    /// The response for the client: its head, and the first body bytes.
    pub(super) out: Vec<u8>,
    /// The current request's lines for its answers (rate limits, CORS); written by the
    /// `admission` step, empty while neither is on.
    pub(super) own_lines: OwnLines,
    /// Requests read on this connection so far.
    pub(super) requests: u64,
    /// When the connection was accepted (the first head's timeout runs from here), then
    /// when its last request ended (the keep-alive idle time runs from there).
    pub(super) idle_since: Instant,
}

impl Client {
    /// `tls`: the session it is to speak, on the TLS listener (its handshake is still to
    /// run: [`ClientConn::handshake`]).
    pub(super) fn new(
        stream: TcpStream,
        tls: Option<ServerTls>,
        peer: SocketAddr,
        accepted: Instant,
    ) -> Client {
        Client {
            conn: ClientConn {
                io: Conn::new(stream, 8 * 1024),
                tls: tls.map(Box::new),
            },
            peer,
            peer_ip: peer.ip().to_string(),
            headers: Vec::with_capacity(32),
            response_headers: Vec::with_capacity(32),
            to_endpoint: Vec::with_capacity(2048),
            out: Vec::with_capacity(2048),
            own_lines: OwnLines::default(),
            requests: 0,
            idle_since: accepted,
        }
    }
}

/// Lines ringway adds to every answer to one request, whole (`X-RateLimit-*` from
/// `[rate_limits]`, CORS from `[cors]`), and which of an endpoint's headers they
/// replace. Always empty while both are off; never holds bytes without a flag set.
#[derive(Debug, Default)]
pub(crate) struct OwnLines {
    pub(crate) bytes: Vec<u8>,
    /// CORS is on: ringway alone speaks it, so an endpoint's `Access-Control-*` headers
    /// are dropped (a second `Access-Control-Allow-Origin` makes browsers refuse the
    /// answer, and an endpoint's own could allow what ringway's policy does not).
    pub(crate) cors: bool,
    /// The lines carry `X-RateLimit-*`: an endpoint's are dropped.
    pub(crate) rate_limit: bool,
}

impl OwnLines {
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.cors = false;
        self.rate_limit = false;
    }

    /// Whether an endpoint's header `name` gives way to these lines.
    pub(super) fn replaces(&self, name: &[u8]) -> bool {
        let prefixed = |prefix: &[u8]| {
            name.len() > prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        (self.cors && prefixed(b"access-control-"))
            || (self.rate_limit
                && [
                    &b"x-ratelimit-limit"[..],
                    b"x-ratelimit-remaining",
                    b"x-ratelimit-reset",
                ]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n)))
    }
}

/// The client's connection: the buffered [`Conn`] the request path reads through (its
/// `buf` holds plaintext), with, on the TLS listener, its session. Read with
/// [`ClientConn::fill`] and write with [`ClientConn::write_by`], never through
/// `stream` directly: on a TLS connection `stream` carries ciphertext. A plain
/// connection pays one `None` test per read and per write.
pub(super) struct ClientConn {
    io: Conn,
    tls: Option<Box<ServerTls>>,
}

/// How a wait on the far side of a proxied exchange ended.
pub(super) enum Watched<T> {
    Done(T),
    /// The watched peer hung up first.
    HungUp,
    Elapsed,
}

impl ClientConn {
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads whatever arrives next, appending it to `buf`, as [`Conn::fill`] (`Ok(0)`:
    /// end of stream; over TLS, with or without close_notify).
    #[inline]
    pub(super) fn fill(&mut self) -> impl Future<Output = io::Result<usize>> {
        match &mut self.tls {
            None => Either::Plain { f: self.io.fill() },
            Some(tls) => Either::Tls {
                f: tls.session.fill(&mut self.io),
            },
        }
    }

    /// Writes `buf[range]` within `until`, as [`http1::write_out_by`]. Timed out or
    /// failed, the connection must be closed (a plain one's `buf` is then empty; over TLS
    /// `buf` was only read, its sealed copy went to the kernel).
    #[inline]
    pub(super) fn write_by(
        &mut self,
        deadline: &mut Deadline<'_>,
        until: Instant,
        buf: &mut Vec<u8>,
        range: Range<usize>,
    ) -> impl Future<Output = io::Result<()>> {
        let stream = &mut self.io.stream;
        match &mut self.tls {
            None => Either::Plain {
                f: http1::write_out_by(deadline, until, stream, buf, range),
            },
            Some(tls) => Either::Tls {
                f: async move {
                    tls.seal(&buf[range])?;
                    tls.write_outgoing_by(deadline, until, stream).await
                },
            },
        }
    }

    /// Writes `buf[range]` with no deadline (a short interim answer).
    pub(super) async fn write(&mut self, buf: &mut Vec<u8>, range: Range<usize>) -> io::Result<()> {
        match &mut self.tls {
            None => http1::write_out(&mut self.io.stream, buf, range).await,
            Some(tls) => {
                tls.seal(&buf[range])?;
                tls.write_outgoing(&mut self.io.stream).await
            }
        }
    }

    /// The TLS handshake of a connection just accepted on the TLS listener (a plain
    /// connection has none). No deadline of its own: the caller races it against the
    /// first head's, which it counts against.
    pub(super) async fn handshake(&mut self) -> Result<(), Refused> {
        match &mut self.tls {
            None => Ok(()),
            Some(tls) => listener::accept(tls, &mut self.io.stream).await,
        }
    }

    /// Answers a client that sent plain HTTP to the TLS listener with a plain 400 saying
    /// so, then closes, letting it finish sending first (bounded).
    pub(super) async fn refuse_plain_http(&mut self, deadline: &mut Deadline<'_>) {
        let mut answer = PLAIN_HTTP_ANSWER.to_vec();
        let len = answer.len();
        let stream = &mut self.io.stream;
        let until = Instant::now() + CLOSING_WRITE;
        if http1::write_out_by(deadline, until, stream, &mut answer, 0..len)
            .await
            .is_err()
        {
            return;
        }
        let _ = stream.shutdown().await;
        deadline.set(Instant::now() + PLAIN_HTTP_LINGER);
        self.io.buf.clear();
        while let Ok(Ok(1..)) = deadline.run(self.io.refill()).await {}
    }

    /// Ends a TLS connection that ringway closes: close_notify, unless a write was cut
    /// (the stream is then unusable). Bounded by [`CLOSING_WRITE`].
    pub(super) async fn close(&mut self, deadline: &mut Deadline<'_>) {
        let Some(tls) = &mut self.tls else { return };
        deadline.set(Instant::now() + CLOSING_WRITE);
        let _ = deadline.run(tls.close(&mut self.io.stream)).await;
    }

    /// Awaits `work` (a wait on the far side of a proxied exchange) until `until`, unless
    /// the client hangs up first. The client is watched only once the wait has lasted
    /// [`WATCH_AFTER`], so a quick exchange costs no I/O and no timer beyond the
    /// connection's own. Bytes the client sends meanwhile (a pipelined request) are
    /// appended to `buf`; after that, it is no longer watched for this wait. Once `buf`
    /// holds `max_buffered` bytes the client is not read at all (back-pressure): a client
    /// that writes while it is answered cannot grow the buffer without bound, and its
    /// hang-up is then noticed when its answer is written.
    pub(super) async fn watch_while<F: Future>(
        &mut self,
        deadline: &mut Deadline<'_>,
        (now, until): (Instant, Instant),
        max_buffered: usize,
        work: F,
    ) -> Watched<F::Output> {
        let mut work = pin!(work);
        let watch = self.io.buf.len() < max_buffered;
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
                ready = self.io.stream.readable(false) => {
                    if ready.is_err() {
                        return Watched::HungUp;
                    }
                }
            }
            // Readable: a hang-up (EOF or reset) or early bytes; this read does not wait.
            match self.take_ready().await {
                Ok(false) | Err(_) => Watched::HungUp,
                Ok(true) => Watched::Done(work.await),
            }
        };
        deadline.run(watched).await.unwrap_or(Watched::Elapsed)
    }

    /// One read of a readable connection: `Ok(false)` when it was the client's end of
    /// stream. Over TLS the bytes may carry no plaintext (a KeyUpdate, part of a record).
    async fn take_ready(&mut self) -> io::Result<bool> {
        match &mut self.tls {
            None => self.io.fill().await.map(|n| n > 0),
            Some(tls) => Ok(tls.session.fill_once(&mut self.io).await?.is_some()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A plain or a TLS connection's future for the same operation. The plain one is
    /// polled in place, inside its caller's future, with no state machine of its own
    /// around it: what a wrapping `async fn` cost the plain path at every poll.
    #[project = EitherProj]
    enum Either<P, T> {
        Plain { #[pin] f: P },
        Tls { #[pin] f: T },
    }
}

impl<P: Future, T: Future<Output = P::Output>> Future for Either<P, T> {
    type Output = P::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<P::Output> {
        match self.project() {
            EitherProj::Plain { f } => f.poll(cx),
            EitherProj::Tls { f } => f.poll(cx),
        }
    }
}

impl Deref for ClientConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.io
    }
}

impl DerefMut for ClientConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.io
    }
}
