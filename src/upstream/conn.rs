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

use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::ops::{Deref, DerefMut, Range};
use std::pin::pin;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::deadline::{Deadline, Elapsed};
use crate::http1::{self, Conn};

/// How long a write of the request may stall before the endpoint is asked whether it
/// has answered meanwhile, and again after each such wait.
const ASK_EVERY: Duration = Duration::from_millis(20);

pub(crate) struct EndpointConn {
    io: Conn,
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
    /// carry a new request.
    pub(crate) fn is_quiet(&self) -> bool {
        is_quiet(&self.control)
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
    /// `buf` is then empty).
    pub(crate) async fn send(
        &mut self,
        deadline: &mut Deadline<'_>,
        (now, until): (Instant, Instant),
        buf: &mut Vec<u8>,
        range: Range<usize>,
    ) -> Result<Sent, SendError> {
        let EndpointConn {
            io,
            control,
            stopped,
        } = self;
        let mut write = pin!(http1::write_out(&mut io.stream, buf, range));
        let mut ask_at = now + ASK_EVERY;
        loop {
            deadline.set(ask_at.min(until));
            match deadline.race(write.as_mut()).await {
                Ok(Ok(())) => return Ok(Sent::All),
                Ok(Err(_)) if *stopped => return Ok(Sent::Cut),
                Ok(Err(_)) => return Err(SendError::Failed),
                Err(Elapsed) if deadline.at() >= until => return Err(SendError::Elapsed),
                Err(Elapsed) => {
                    if !*stopped && !is_quiet(control) {
                        *stopped = true;
                        // Wakes the stalled write, which then fails: the buffer is back.
                        let _ = control.shutdown(Shutdown::Write);
                    }
                    ask_at = Instant::now() + ASK_EVERY;
                }
            }
        }
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
/// descriptor can be duplicated), completed by the runtime.
pub(crate) async fn open(addr: SocketAddr) -> io::Result<EndpointConn> {
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
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
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
    Ok(EndpointConn {
        io: Conn::new(stream, 16 * 1024),
        control,
        stopped: false,
    })
}
