//! TLS sessions over monoio TCP streams, for both sides of the proxy: a rustls session
//! ([`Tls`], generic over its [`Side`]: a client session to an `https://` endpoint,
//! `upstream/tls.rs`; a server session on the TLS listener, [`listener`]) and its
//! buffers. The request path reads and writes plaintext through it exactly as it does a
//! plain connection: only the connection types (`upstream/conn.rs`, `proxy/client.rs`)
//! know which they have.
//!
//! Our own thin adapter rather than monoio-rustls, for the two things the endpoint pool
//! and the request writer need that a stream wrapper hides:
//! - **Quietness.** A plain pooled connection is quiet when a peek at its socket would
//!   block. Over TLS, records that carry no response arrive on an idle connection: a
//!   TLS 1.3 server sends its session tickets (NewSessionTicket) after the handshake, a
//!   KeyUpdate may come at any time; a close_notify means the connection is gone even
//!   while the TCP stream is still open. A raw peek would refuse every such connection,
//!   or reuse a closed one. So [`Session::is_quiet`] takes the received records off the
//!   socket (without waiting), hands them to the session, and judges what they were:
//!   quiet means no response plaintext, no close_notify, no end of stream and no error.
//!   Plaintext found this way stays in the session and is the first thing the next
//!   [`Session::fill`] returns, so nothing is lost when the check runs during a stalled
//!   write (the endpoint answered early).
//! - **A free session while ciphertext goes out.** [`Tls::seal`] encrypts the whole
//!   message into `outgoing` first; the write then borrows only the stream and that
//!   buffer, so the stalled-write check can use the session meanwhile.
//!
//! Reads never write: what the session queues while reading (a KeyUpdate's answer, an
//! alert) goes out ahead of the next message, in order. A handshake is bounded by its
//! caller's deadline (the connect timeout; on the listener, the first head's timeout).
//! A TCP end of stream without close_notify is reported as end of stream, as most peers
//! close that way; the HTTP framing (Content-Length, chunked) still tells a cut message
//! from a whole one.

pub(crate) mod listener;

use std::io::{self, BufRead, Read, Write};
use std::mem::MaybeUninit;
use std::ops::DerefMut;
use std::time::Instant;

use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rustls::client::ClientConnectionData;
use rustls::server::ServerConnectionData;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection};
use socket2::Socket;

use crate::deadline::Deadline;
use crate::http1::{self, Conn};

/// Ciphertext read from the socket at a time (one TLS record is at most ~16.7 KB).
const READ_SIZE: usize = 17 * 1024;
/// The encrypted-message buffer is given back above this size once written.
const KEEP_OUTGOING: usize = 64 * 1024;
/// At most this many reads of pending records in one quietness check: more is not an
/// idle connection.
const MAX_QUIET_READS: usize = 8;

/// Which end of the session we are: rustls's client or server connection, both a
/// [`ConnectionCommon`] underneath, which is all the adapter uses.
pub(crate) trait Side: DerefMut<Target = ConnectionCommon<Self::Data>> {
    type Data;
}

impl Side for ClientConnection {
    type Data = ClientConnectionData;
}

impl Side for ServerConnection {
    type Data = ServerConnectionData;
}

/// A TLS session and its buffers.
pub(crate) struct Tls<C> {
    pub(crate) session: Session<C>,
    /// Ciphertext to send: a sealed message, or handshake messages.
    pub(crate) outgoing: Vec<u8>,
    /// A write of `outgoing` did not complete (failed, or cancelled by a deadline): the
    /// stream may hold part of a record, and nothing more can be written on it.
    cut: bool,
}

/// The receiving side, which the stalled-write check uses while `outgoing` is out.
pub(crate) struct Session<C> {
    tls: C,
    /// Ciphertext received; handed to the session at once, kept for its capacity.
    incoming: Vec<u8>,
    /// Plaintext received before anyone asked for it (with the handshake's last flight,
    /// or found by [`Session::is_quiet`]), for the next [`Session::fill`].
    early: Vec<u8>,
    /// The TCP stream ended, or the peer sent close_notify.
    ended: bool,
}

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The peer closed the connection first.
    Closed,
    /// The peer sent more than the handshake's limit.
    TooLarge,
    /// The session refused what the peer sent (the alert saying why was sent, best
    /// effort).
    Refused(io::Error),
}

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handshake::Io(e) | Handshake::Refused(e) => e.fmt(f),
            Handshake::Closed => f.write_str("the peer closed the connection"),
            Handshake::TooLarge => f.write_str("the peer's handshake is too large"),
        }
    }
}

impl<C: Side> Tls<C> {
    pub(crate) fn new(tls: C) -> Tls<C> {
        Tls {
            session: Session {
                tls,
                incoming: Vec::with_capacity(READ_SIZE),
                early: Vec::new(),
                ended: false,
            },
            outgoing: Vec::new(),
            cut: false,
        }
    }

    /// Runs the handshake on `stream` to its end, taking first what `incoming` already
    /// holds ([`Tls::read_first`]). `limit`: the most ciphertext the peer may send
    /// before the handshake completes. Plaintext that arrives with the peer's last
    /// flight is kept for the first [`Session::fill`]. No deadline of its own: the
    /// caller races it against one.
    pub(crate) async fn handshake(
        &mut self,
        stream: &mut TcpStream,
        limit: usize,
    ) -> Result<(), Handshake> {
        let mut received = self.session.incoming.len();
        loop {
            if received > limit {
                return Err(Handshake::TooLarge);
            }
            let s = &mut self.session;
            if !s.incoming.is_empty() {
                let mut early = std::mem::take(&mut s.early);
                let fed = s.take_incoming(&mut early);
                s.early = early;
                if let Err(e) = fed {
                    // Tell the peer why (the alert the session queued), best effort.
                    let _ = self.queue_records();
                    let _ = self.write_outgoing(stream).await;
                    return Err(Handshake::Refused(e));
                }
            }
            self.queue_records().map_err(Handshake::Io)?;
            if !self.outgoing.is_empty() {
                self.write_outgoing(stream).await.map_err(Handshake::Io)?;
            }
            if !self.session.tls.is_handshaking() {
                return Ok(());
            }
            match self.read_first(stream).await.map_err(Handshake::Io)? {
                0 => return Err(Handshake::Closed),
                n => received += n,
            }
        }
    }

    /// Reads what arrives next into `incoming`, without handing it to the session: for
    /// a look at the peer's first bytes before the handshake takes them. `Ok(0)`: end
    /// of stream.
    pub(crate) async fn read_first(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        let s = &mut self.session;
        let incoming = std::mem::take(&mut s.incoming);
        let (read, incoming) = stream.read(incoming).await;
        s.incoming = incoming;
        read
    }

    /// The bytes [`Tls::read_first`] took, not yet handed to the session.
    pub(crate) fn first_bytes(&self) -> &[u8] {
        &self.session.incoming
    }

    /// Encrypts `plain` (a message, or part of one) into `outgoing`, after anything the
    /// session had queued (a KeyUpdate's answer).
    pub(crate) fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        self.queue_records()?;
        let mut at = 0;
        while at < plain.len() {
            // The session buffers a bounded amount: encrypt, move out, repeat.
            at += self.session.tls.writer().write(&plain[at..])?;
            self.queue_records()?;
        }
        Ok(())
    }

    /// Moves the records the session has queued into `outgoing`.
    fn queue_records(&mut self) -> io::Result<()> {
        while self.session.tls.wants_write() {
            self.session.tls.write_tls(&mut self.outgoing)?;
        }
        Ok(())
    }

    /// Writes `outgoing` out and empties it.
    pub(crate) async fn write_outgoing(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        let len = self.outgoing.len();
        self.cut = true;
        http1::write_out(stream, &mut self.outgoing, 0..len).await?;
        self.cut = false;
        sent(&mut self.outgoing);
        Ok(())
    }

    /// [`Tls::write_outgoing`] within a deadline, as [`http1::write_out_by`].
    pub(crate) async fn write_outgoing_by(
        &mut self,
        deadline: &mut Deadline<'_>,
        until: Instant,
        stream: &mut TcpStream,
    ) -> io::Result<()> {
        let len = self.outgoing.len();
        self.cut = true;
        http1::write_out_by(deadline, until, stream, &mut self.outgoing, 0..len).await?;
        self.cut = false;
        sent(&mut self.outgoing);
        Ok(())
    }

    /// Sends close_notify, unless a write was cut (the stream is then unusable) or the
    /// handshake never finished. No deadline of its own: the caller races it.
    pub(crate) async fn close(&mut self, stream: &mut TcpStream) {
        if self.cut || self.session.tls.is_handshaking() {
            return;
        }
        self.session.tls.send_close_notify();
        if self.queue_records().is_ok() {
            let _ = self.write_outgoing(stream).await;
        }
    }
}

/// Empties an `outgoing` that was written, keeping a modest buffer.
pub(crate) fn sent(outgoing: &mut Vec<u8>) {
    outgoing.clear();
    if outgoing.capacity() > KEEP_OUTGOING {
        *outgoing = Vec::new();
    }
}

impl<C: Side> Session<C> {
    /// Reads whatever plaintext arrives next, appending it to `conn.buf`, as
    /// [`Conn::fill`] does for a plain connection (`Ok(0)`: end of stream, with or
    /// without close_notify). Plaintext received earlier comes first.
    pub(crate) async fn fill(&mut self, conn: &mut Conn) -> io::Result<usize> {
        loop {
            match self.fill_once(conn).await? {
                None => return Ok(0),
                Some(0) => {}
                Some(n) => return Ok(n),
            }
        }
    }

    /// One read of the socket (none if plaintext was waiting), its plaintext appended
    /// to `conn.buf`: `Some(n)` bytes, possibly 0 (the records carried none: a KeyUpdate,
    /// a part of a record), or `None` at end of stream.
    pub(crate) async fn fill_once(&mut self, conn: &mut Conn) -> io::Result<Option<usize>> {
        if !self.early.is_empty() {
            let n = self.early.len();
            conn.buf.append(&mut self.early);
            return Ok(Some(n));
        }
        if self.ended {
            return Ok(None);
        }
        if self.incoming.capacity() == 0 {
            // A cancelled read took the buffer (the connection is then being dropped).
            self.incoming.reserve(READ_SIZE);
        }
        let incoming = std::mem::take(&mut self.incoming);
        let (read, incoming) = conn.stream.read(incoming).await;
        self.incoming = incoming;
        if read? == 0 {
            self.ended = true;
            return Ok(None);
        }
        let before = conn.buf.len();
        self.take_incoming(&mut conn.buf)?;
        let n = conn.buf.len() - before;
        if n == 0 && self.ended {
            return Ok(None);
        }
        Ok(Some(n))
    }

    /// Whether the connection can carry a new request: the records that arrived on the
    /// socket since it was last read (`control`, the same socket, asked without
    /// waiting) carried no message and no close. See the module's comment.
    // Out of line: its 17 KB buffer stays off the stack frame of the plain path's pool
    // lookup.
    #[inline(never)]
    pub(crate) fn is_quiet(&mut self, control: &Socket) -> bool {
        let mut peeked = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        for _ in 0..MAX_QUIET_READS {
            if !self.early.is_empty() || self.ended {
                return false;
            }
            let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
            let ready = match control.recv_with_flags(&mut peeked, flags) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                // End of stream, or reset.
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            // Those `ready` bytes are queued on the socket and nothing else reads it now
            // (the connection is idle, or only a write is in flight): this read takes
            // them at once, even from a blocking descriptor (io_uring's).
            let mut records = vec![0; ready];
            if (&*control).read_exact(&mut records).is_err() {
                return false;
            }
            let mut early = std::mem::take(&mut self.early);
            let fed = self.feed(&records, &mut early);
            self.early = early;
            if fed.is_err() {
                return false;
            }
        }
        false
    }

    /// Hands `incoming` to the session (then empties it), plaintext into `out`.
    fn take_incoming(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let incoming = std::mem::take(&mut self.incoming);
        let fed = self.feed(&incoming, out);
        self.incoming = incoming;
        self.incoming.clear();
        fed
    }

    /// Hands `ciphertext` to the session and processes it, moving the plaintext it
    /// yields into `out` as it goes: the session holds at most 16 KB of it.
    fn feed(&mut self, mut ciphertext: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        while !ciphertext.is_empty() {
            self.tls.read_tls(&mut ciphertext)?;
            let state = self
                .tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.ended |= state.peer_has_closed();
            let mut reader = self.tls.reader();
            loop {
                match reader.fill_buf() {
                    Ok(chunk) if !chunk.is_empty() => {
                        let n = chunk.len();
                        out.extend_from_slice(chunk);
                        reader.consume(n);
                    }
                    // Nothing more, or close_notify (`ended` says so).
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
