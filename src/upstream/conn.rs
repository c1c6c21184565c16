//! A connection to an endpoint: the buffered connection the request path reads and
//! writes, plus a second handle on the same socket for the two questions the runtime
//! cannot ask while a read or write is in flight, or without waiting for the next turn of
//! its event loop:
//! - has the endpoint sent anything, or closed, since its last response ended? Such a
//!   connection is never reused: the bytes would be served to the next client as its
//!   answer (a stale response, a `408` before a close, a body after a HEAD answer);
//! - has it answered while the request body is still going out (RFC 9112 §9.3)? Then
//!   sending stops, and the answer is relayed.
//!
//! The handle is a duplicate of the socket's descriptor (one more per endpoint
//! connection), asked with non-blocking calls: `recv(MSG_PEEK | MSG_DONTWAIT)` and
//! `shutdown(SHUT_WR)`.
//!
//! An `https://` endpoint's connection also holds its TLS session (`tls`, see `tls.rs`
//! and `upstream/tls.rs`): reads, writes and the quietness check then go through it, and
//! `buf` holds plaintext. A plain connection pays one `None` test per read and write.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::ops::{Deref, DerefMut, Range};
use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use super::tls::{ClientTls, handshake};
use crate::config::EndpointTls;
use crate::deadline::{Deadline, Elapsed};
use crate::http1::{self, Conn};

/// How long a write of the request may stall before the endpoint is asked whether it
/// has answered meanwhile, and again after each such wait.
const ASK_EVERY: Duration = Duration::from_millis(20);

pub(crate) struct EndpointConn {
    /// For TLS, `io.stream` carries ciphertext and `io.buf` plaintext: read with
    /// [`EndpointConn::fill`], never `io.stream` directly.
    io: Conn,
    tls: Option<Box<ClientTls>>,
    /// The same socket, for [`EndpointConn::is_quiet`] and [`EndpointConn::stop_sending`].
    control: Socket,
    /// Sending was stopped: the connection cannot carry another request.
    stopped: bool,
}

/// How writing the request ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    All,
    /// The endpoint answered or closed before taking all of it; sending stopped.
    Cut,
}

impl EndpointConn {
    /// Whether nothing has arrived and the endpoint has not closed: the connection can
    /// carry a new request. Over TLS, records that are not a response (session tickets,
    /// a KeyUpdate) are processed and do not count; a close_notify does.
    pub(crate) fn is_quiet(&mut self) -> bool {
        match &mut self.tls {
            None => is_quiet(&self.control),
            Some(tls) => tls.session.is_quiet(&self.control),
        }
    }

    /// Reads whatever arrives next into `buf`, as [`Conn::fill`] (`Ok(0)`: end of stream).
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        match &mut self.tls {
            None => self.io.fill().await,
            Some(tls) => tls.session.fill(&mut self.io).await,
        }
    }

    /// Replaces `buf`'s contents with whatever arrives next, as [`Conn::refill`].
    pub(crate) async fn refill(&mut self) -> io::Result<usize> {
        self.io.buf.clear();
        self.fill().await
    }

    /// Writes `buf[range]`, with no stall checks (the control thread's requests).
    /// Cancelled, the connection must be dropped.
    pub(crate) async fn write(&mut self, buf: &mut Vec<u8>, range: Range<usize>) -> io::Result<()> {
        match &mut self.tls {
            None => http1::write_out(&mut self.io.stream, buf, range).await,
            Some(tls) => {
                tls.seal(&buf[range])?;
                tls.write_outgoing(&mut self.io.stream).await
            }
        }
    }

    /// Whether it may go back to the pool after a clean end of its response.
    pub(crate) fn is_reusable(&self) -> bool {
        !self.stopped
    }

    /// Writes `buf[range]` (the request or part of it), started at `now`. A write that
    /// stalls (the endpoint is not reading) is checked every [`ASK_EVERY`]: when the endpoint has
    /// answered or closed meanwhile, sending stops (the write side is shut, which ends
    /// the write with its buffer intact) and the answer is left to be read. `Err` is a
    /// failed write (the endpoint is gone) or `until` passing (the write was cancelled:
    /// `buf` is then empty on a plain connection; over TLS `buf` was only read, its
    /// ciphertext copy went to the kernel).
    pub(crate) async fn send(
        &mut self,
        deadline: &mut Deadline<'_>,
        (now, until): (Instant, Instant),
        buf: &mut Vec<u8>,
        range: Range<usize>,
    ) -> Result<Sent, SendError> {
        let EndpointConn {
            io,
            tls,
            control,
            stopped,
        } = &mut *self;
        // Over TLS the request is encrypted whole first: the write then needs only the
        // stream and the ciphertext, and the session is free to judge what arrives.
        let (mut session, buf, range) = match tls {
            None => (None, buf, range),
            Some(tls) => {
                if tls.seal(&buf[range]).is_err() {
                    return Err(SendError::Failed);
                }
                let len = tls.outgoing.len();
                (Some(&mut tls.session), &mut tls.outgoing, 0..len)
            }
        };
        let sealed = session.is_some();
        let sent = {
            let mut write = pin!(http1::write_out(&mut io.stream, buf, range));
            let mut ask_at = now + ASK_EVERY;
            loop {
                deadline.set(ask_at.min(until));
                match deadline.race(write.as_mut()).await {
                    Ok(Ok(())) => break Ok(Sent::All),
                    Ok(Err(_)) if *stopped => break Ok(Sent::Cut),
                    Ok(Err(_)) => break Err(SendError::Failed),
                    Err(Elapsed) if deadline.at() >= until => break Err(SendError::Elapsed),
                    Err(Elapsed) => {
                        let answered = !*stopped
                            && !match &mut session {
                                None => is_quiet(control),
                                Some(session) => session.is_quiet(control),
                            };
                        if answered {
                            *stopped = true;
                            // Wakes the stalled write, which then fails: the buffer is back.
                            let _ = control.shutdown(Shutdown::Write);
                        }
                        ask_at = Instant::now() + ASK_EVERY;
                    }
                }
            }
        };
        if sealed && matches!(sent, Ok(Sent::All)) {
            if let Some(tls) = &mut self.tls {
                crate::tls::sent(&mut tls.outgoing);
            }
        }
        sent
    }
}

/// Nothing to read and no end of stream: a peek that would block.
fn is_quiet(socket: &Socket) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit()];
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    matches!(
        socket.recv_with_flags(&mut byte, flags),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// Why a request could not be written.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The endpoint reset or closed the connection.
    Failed,
    /// The deadline passed; the write was cancelled.
    Elapsed,
}

impl Deref for EndpointConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.io
    }
}

impl DerefMut for EndpointConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.io
    }
}

/// Connects to `addr`: a non-blocking connect on a socket of our own (so its
/// descriptor can be duplicated), completed by the runtime; then, with `tls`, the TLS
/// handshake.
pub(crate) async fn open(addr: SocketAddr, tls: Option<&EndpointTls>) -> io::Result<EndpointConn> {
    // `Socket::new` sets close-on-exec; so does `try_clone`.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let control = socket.try_clone()?;
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    if let Some(e) = control.take_error()? {
        return Err(e);
    }
    // Both handles share the descriptor's flags. The epoll driver needs it non-blocking;
    // the io_uring driver blocking, as it makes its own sockets (an operation on a
    // non-blocking socket can fail with EAGAIN instead of waiting).
    if !monoio::utils::is_legacy() {
        control.set_nonblocking(false)?;
    }
    let tls = match tls {
        None => None,
        Some(settings) => Some(Box::new(handshake(&mut stream, settings).await?)),
    };
    Ok(EndpointConn {
        io: Conn::new(stream, 16 * 1024),
        tls,
        control,
        stopped: false,
    })
}
