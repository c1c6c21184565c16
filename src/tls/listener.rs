//! The TLS listener (`server.tls_cert_file`, `server.tls_key_file`): the certificate the
//! shards present, and the first steps of an accepted connection.
//!
//! - [`CertStore`]: the certificate in force, shared by the shards and the reloaders: a
//!   configuration reload (SIGHUP, `POST /internal/reload`, `Server::reload`; validating
//!   the file reads the two PEM files again, `control/reload.rs` installs the result) and
//!   `Server::reload_certificates` (the two files alone). Either swaps in a new rustls
//!   configuration under a lock, then moves a generation counter. Sessions already open keep the configuration they were made
//!   with (each holds its own `Arc` of it): a reload never touches them, streams
//!   included.
//! - [`ShardCerts`]: a shard's copy. An accept costs one relaxed load of the generation;
//!   the lock is taken only on the first accept after a reload. Nothing on the request
//!   path looks at either.
//! - [`accept`]: an accepted connection's handshake, or the plain-HTTP answer when the
//!   client did not speak TLS at all.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use monoio::net::TcpStream;
use rustls::ServerConnection;

use super::{Handshake, Tls};
use crate::config::{ConfigError, ListenerTls};
use crate::log::{error, info};

/// The most ciphertext a client may send before its handshake completes. A client's
/// whole flight is a ClientHello (a few KB; ~2 KB with a post-quantum key share), then
/// its Finished, maybe its first request in the same segment: 64 KiB is far beyond
/// any real client and bounds a hostile one. rustls bounds each handshake message
/// itself (64 KiB), and the head timeout bounds the time.
pub(crate) const MAX_CLIENT_HANDSHAKE: usize = 64 * 1024;

/// What a client that sends plain HTTP to the TLS listener is answered, before the close.
pub(crate) const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Content-Length: 56\r\n\
Connection: close\r\n\
\r\n\
This port speaks HTTPS: send the request as https://...\n";

/// A client connection's session on the listener.
pub(crate) type ServerTls = Tls<ServerConnection>;

/// The listener's certificate, shared by all shards. See the module's comment.
pub(crate) struct CertStore {
    /// The configuration the files were named in, for the reload's errors.
    origin: String,
    /// The settings in force and their generation.
    current: RwLock<(u64, ListenerTls)>,
    /// `current`'s generation, for the shards to notice a change without the lock.
    generation: AtomicU64,
}

impl CertStore {
    pub(crate) fn new(tls: &ListenerTls, origin: &str) -> CertStore {
        CertStore {
            origin: origin.to_string(),
            current: RwLock::new((0, tls.clone())),
            generation: AtomicU64::new(0),
        }
    }

    /// Reads the certificate and key files again; new connections get what they now
    /// hold. A file that cannot be used (missing, unreadable, no certificate, a key that
    /// does not go with it) keeps the certificate in force: the error, naming the file
    /// and its key, is logged and returned.
    pub(crate) fn reload(&self) -> Result<(), ConfigError> {
        let files = self.settings();
        match files.reread(&self.origin) {
            Ok(fresh) => {
                self.install(fresh);
                info!(
                    "TLS certificate reloaded from {} (key {}); new connections use it",
                    files.cert_file.display(),
                    files.key_file.display()
                );
                Ok(())
            }
            Err(e) => {
                error!("TLS certificate not reloaded, the one in force stays: {e}");
                Err(e)
            }
        }
    }

    /// Puts `tls` in force for new connections (what a configuration reload read,
    /// possibly from other files); later reloads read its files.
    pub(crate) fn install(&self, tls: ListenerTls) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let generation = current.0 + 1;
        *current = (generation, tls);
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// The settings in force.
    pub(crate) fn settings(&self) -> ListenerTls {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.1.clone()
    }

    fn current(&self) -> (u64, Arc<rustls::ServerConfig>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.server.clone())
    }
}

/// A shard's view of the [`CertStore`]: built and used on the shard thread only.
pub(crate) struct ShardCerts {
    store: Arc<CertStore>,
    generation: Cell<u64>,
    server: RefCell<Arc<rustls::ServerConfig>>,
}

impl ShardCerts {
    pub(crate) fn new(store: Arc<CertStore>) -> ShardCerts {
        let (generation, server) = store.current();
        ShardCerts {
            store,
            generation: Cell::new(generation),
            server: RefCell::new(server),
        }
    }

    /// A session for a connection just accepted, with the certificate in force. The
    /// relaxed load may see a reload a moment late (the next accept takes it); the
    /// generation kept is the one read with the configuration, under the lock.
    pub(crate) fn session(&self) -> Result<ServerTls, rustls::Error> {
        if self.store.generation.load(Ordering::Relaxed) != self.generation.get() {
            let (generation, server) = self.store.current();
            self.generation.set(generation);
            *self.server.borrow_mut() = server;
        }
        let server = self.server.borrow().clone();
        Ok(Tls::new(ServerConnection::new(server)?))
    }
}

/// Why an accepted connection did not become a TLS session.
#[derive(Debug)]
pub(crate) enum Refused {
    /// It sent plain HTTP: it is to be answered [`PLAIN_HTTP_ANSWER`], then closed.
    PlainHttp,
    Handshake(Handshake),
}

/// Runs the handshake of a connection just accepted. No deadline of its own: the caller
/// races it against the first head's.
pub(crate) async fn accept(tls: &mut ServerTls, stream: &mut TcpStream) -> Result<(), Refused> {
    match tls.read_first(stream).await {
        Ok(0) => return Err(Refused::Handshake(Handshake::Closed)),
        Ok(_) => {}
        Err(e) => return Err(Refused::Handshake(Handshake::Io(e))),
    }
    // A TLS record starts with its content type (22, a handshake, for a ClientHello); a
    // request line with its method, in capitals.
    if tls.first_bytes()[0].is_ascii_uppercase() {
        return Err(Refused::PlainHttp);
    }
    tls.handshake(stream, MAX_CLIENT_HANDSHAKE)
        .await
        .map_err(Refused::Handshake)
}

#[cfg(test)]
mod tests {
    use super::PLAIN_HTTP_ANSWER;

    #[test]
    fn the_plain_http_answer_is_framed_right() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
