//! TLS to an `https://` endpoint: a rustls client session over the endpoint's monoio TCP
//! stream, for [`EndpointConn`](super::EndpointConn). The request path reads and writes
//! plaintext through it exactly as it does a plain connection; only `conn.rs` knows which
//! it has.
//!
//! Our own thin adapter rather than monoio-rustls, for the two things the pool and the
//! request writer need that a stream wrapper hides:
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
//!   request into `outgoing` first; the write then borrows only the stream and that
//!   buffer, so the stalled-write check can use the session meanwhile.
//!
//! Reads never write: what the session queues while reading (a KeyUpdate's answer, an
//! alert) goes out ahead of the next request, in order. The handshake is bounded by the
//! caller's connect timeout. A TCP end of stream without close_notify is reported as end
//! of stream, as most servers close that way; the HTTP framing (Content-Length, chunked)
//! still tells a cut response from a whole one.

use std::io::{self, BufRead, Read, Write};
use std::mem::MaybeUninit;

use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rustls::ClientConnection;
use socket2::Socket;

use crate::config::EndpointTls;
use crate::http1::{self, Conn};

/// Ciphertext read from the socket at a time (one TLS record is at most ~16.7 KB).
const READ_SIZE: usize = 17 * 1024;
/// The encrypted-request buffer is given back above this size once written.
const KEEP_OUTGOING: usize = 64 * 1024;
/// At most this many reads of pending records in one quietness check: more is not an
/// idle connection.
const MAX_QUIET_READS: usize = 8;

/// A client TLS session and its buffers.
pub(crate) struct Tls {
    pub(super) session: Session,
    /// Ciphertext to send: a sealed request, or handshake messages.
    pub(super) outgoing: Vec<u8>,
}

/// The receiving side, which the stalled-write check uses while `outgoing` is out.
pub(crate) struct Session {
    tls: ClientConnection,
    /// Ciphertext received; handed to the session at once, kept for its capacity.
    incoming: Vec<u8>,
    /// Response plaintext found by [`Session::is_quiet`], for the next [`Session::fill`].
    early: Vec<u8>,
    /// The TCP stream ended, or the endpoint sent close_notify.
    ended: bool,
}

impl Tls {
    /// Runs the handshake on a connected `stream`.
    pub(super) async fn handshake(
        stream: &mut TcpStream,
        settings: &EndpointTls,
    ) -> io::Result<Tls> {
        let session = ClientConnection::new(settings.client.clone(), settings.server_name.clone())
            .map_err(io::Error::other)?;
        let mut tls = Tls {
            session: Session {
                tls: session,
                incoming: Vec::with_capacity(READ_SIZE),
                early: Vec::new(),
                ended: false,
            },
            outgoing: Vec::new(),
        };
        let failed = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TLS handshake with {} failed: {e}", settings.host),
            )
        };
        loop {
            tls.queue_records()?;
            if !tls.outgoing.is_empty() {
                tls.write_outgoing(stream).await?;
            }
            let s = &mut tls.session;
            if !s.tls.is_handshaking() {
                return Ok(tls);
            }
            let incoming = std::mem::take(&mut s.incoming);
            let (read, incoming) = stream.read(incoming).await;
            s.incoming = incoming;
            if read? == 0 {
                return Err(failed(&"the endpoint closed the connection"));
            }
            let mut early = std::mem::take(&mut s.early);
            let fed = s.take_incoming(&mut early);
            s.early = early;
            if let Err(e) = fed {
                // Tell the endpoint why (the alert the session queued), best effort.
                let _ = tls.queue_records();
                let _ = tls.write_outgoing(stream).await;
                return Err(failed(&e));
            }
        }
    }

    /// Encrypts `plain` (a request, or part of one) into `outgoing`, after anything the
    /// session had queued (a KeyUpdate's answer).
    pub(super) fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
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
    pub(super) async fn write_outgoing(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        let len = self.outgoing.len();
        http1::write_out(stream, &mut self.outgoing, 0..len).await?;
        sent(&mut self.outgoing);
        Ok(())
    }
}

/// Empties an `outgoing` that was written, keeping a modest buffer.
pub(super) fn sent(outgoing: &mut Vec<u8>) {
    outgoing.clear();
    if outgoing.capacity() > KEEP_OUTGOING {
        *outgoing = Vec::new();
    }
}

impl Session {
    /// Reads whatever response plaintext arrives next, appending it to `conn.buf`, as
    /// [`Conn::fill`] does for a plain connection (`Ok(0)`: end of stream, with or
    /// without close_notify). Plaintext found by [`Session::is_quiet`] comes first.
    pub(super) async fn fill(&mut self, conn: &mut Conn) -> io::Result<usize> {
        loop {
            if !self.early.is_empty() {
                let n = self.early.len();
                conn.buf.append(&mut self.early);
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
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
                return Ok(0);
            }
            let before = conn.buf.len();
            self.take_incoming(&mut conn.buf)?;
            let n = conn.buf.len() - before;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Whether the connection can carry a new request: the records that arrived on the
    /// socket since it was last read (`control`, the same socket, asked without
    /// waiting) carried no response and no close. See the module's comment.
    // Out of line: its 17 KB buffer stays off the stack frame of the plain path's pool
    // lookup.
    #[inline(never)]
    pub(super) fn is_quiet(&mut self, control: &Socket) -> bool {
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
