//! TLS for the mock (feature `tls`; `ringway-mock --tls-cert --tls-key`): a rustls server
//! session on the connection's own TCP stream, so an `https://` endpoint is served by the
//! same process and the same connection loop as a plain one. What the benchmarks compare
//! is then TLS itself, with no terminator in front adding a hop to one side only.
//!
//! The connection loop (`conn.rs`) reads and writes plaintext through [`Session`] the way
//! it reads and writes a plain stream: [`Session::read`] appends plaintext and returns 0
//! at the end of the stream (a TCP close or the client's close_notify), and
//! [`Session::write_all`] encrypts and writes. Records a read queues for the peer (a
//! KeyUpdate's answer) go out ahead of the next write. The mock closes a connection by
//! dropping it, without close_notify, as many servers do.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use monoio::io::{CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use rustls::ServerConfig;

/// Ciphertext read from the socket at a time (one TLS record is at most ~16.7 KB).
const READ_SIZE: usize = 17 * 1024;

/// A server configuration from a PEM certificate chain and its PEM private key, with
/// rustls's `ring` provider and its safe defaults (TLS 1.2 and 1.3, no client
/// certificates, session tickets sent after a TLS 1.3 handshake, as most servers do).
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> io::Result<Arc<ServerConfig>> {
    let bad = |what: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert_pem, &e))?;
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| bad(key_pem, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(cert_pem, &e))?;
    Ok(Arc::new(config))
}

/// A server session and its buffers.
pub(crate) struct Session {
    tls: ServerConnection,
    /// Ciphertext received, handed to the session at once (kept for its capacity).
    incoming: Vec<u8>,
    /// Ciphertext to send.
    outgoing: Vec<u8>,
    /// Plaintext that arrived with the last handshake flight, for the first read.
    early: Vec<u8>,
    /// The TCP stream ended, or the client sent close_notify.
    ended: bool,
}

impl Session {
    /// Runs the handshake on an accepted `stream`.
    pub(crate) async fn accept(
        stream: &mut TcpStream,
        config: Arc<ServerConfig>,
        cancel: &CancelHandle,
    ) -> io::Result<Session> {
        let mut s = Session {
            tls: ServerConnection::new(config).map_err(io::Error::other)?,
            incoming: Vec::with_capacity(READ_SIZE),
            outgoing: Vec::new(),
            early: Vec::new(),
            ended: false,
        };
        loop {
            // Our flight (and, once done, the session tickets), then the client's.
            s.flush(stream, cancel).await?;
            if !s.tls.is_handshaking() {
                return Ok(s);
            }
            if s.read_records(stream, cancel).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut early = std::mem::take(&mut s.early);
            let fed = s.feed(&mut early);
            s.early = early;
            if let Err(e) = fed {
                // Tell the client why (the alert the session queued), best effort.
                let _ = s.flush(stream, cancel).await;
                return Err(e);
            }
        }
    }

    /// Appends the plaintext that arrives next to `buf`; 0 at the end of the stream.
    pub(crate) async fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut Vec<u8>,
        cancel: &CancelHandle,
    ) -> io::Result<usize> {
        loop {
            if !self.early.is_empty() {
                let n = self.early.len();
                buf.append(&mut self.early);
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            if self.read_records(stream, cancel).await? == 0 {
                self.ended = true;
                return Ok(0);
            }
            let before = buf.len();
            self.feed(buf)?;
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
        }
    }

    /// Encrypts `plain` and writes it out, after anything the session had queued.
    pub(crate) async fn write_all(
        &mut self,
        stream: &mut TcpStream,
        plain: &[u8],
        cancel: &CancelHandle,
    ) -> io::Result<()> {
        let mut at = 0;
        while at < plain.len() {
            // The session buffers a bounded amount: encrypt, move out, repeat.
            let n = self.tls.writer().write(&plain[at..])?;
            if n == 0 && !self.tls.wants_write() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n;
            self.queue_records()?;
        }
        self.flush(stream, cancel).await
    }

    /// One read of ciphertext from the socket into `incoming`; its size (0: closed).
    async fn read_records(
        &mut self,
        stream: &mut TcpStream,
        cancel: &CancelHandle,
    ) -> io::Result<usize> {
        let mut incoming = std::mem::take(&mut self.incoming);
        incoming.clear();
        if incoming.capacity() < READ_SIZE {
            incoming.reserve(READ_SIZE);
        }
        let (read, incoming) = stream.cancelable_read(incoming, cancel.clone()).await;
        self.incoming = incoming;
        read
    }

    /// Hands `incoming` to the session, moving the plaintext it yields into `out`.
    fn feed(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut ciphertext = &self.incoming[..];
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
                    // Nothing more for now, or the close_notify (noted above).
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Moves the records the session has queued into `outgoing`.
    fn queue_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.outgoing)?;
        }
        Ok(())
    }

    /// Writes the queued records out.
    async fn flush(&mut self, stream: &mut TcpStream, cancel: &CancelHandle) -> io::Result<()> {
        self.queue_records()?;
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let outgoing = std::mem::take(&mut self.outgoing);
        let (res, mut outgoing) = stream.write_all(outgoing, cancel.clone()).await;
        outgoing.clear();
        self.outgoing = outgoing;
        res.map(drop)
    }
}
