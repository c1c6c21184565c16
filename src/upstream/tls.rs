//! TLS to an `https://` endpoint: a rustls client session over the endpoint's monoio TCP
//! stream, for [`EndpointConn`](super::EndpointConn). The session adapter itself, and
//! why it is our own, are in `tls.rs`; this is the client's handshake.

use std::io;

use monoio::net::TcpStream;
use rustls::ClientConnection;

use crate::config::EndpointTls;
use crate::tls::{Handshake, Tls};

/// An endpoint's session.
pub(crate) type ClientTls = Tls<ClientConnection>;

/// Runs the handshake on a connected `stream`, within the caller's connect timeout.
pub(super) async fn handshake(
    stream: &mut TcpStream,
    settings: &EndpointTls,
) -> io::Result<ClientTls> {
    let session = ClientConnection::new(settings.client.clone(), settings.server_name.clone())
        .map_err(io::Error::other)?;
    let mut tls = Tls::new(session);
    let failed = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TLS handshake with {} failed: {e}", settings.host),
        )
    };
    // What the endpoint sends is bounded by the connect timeout, not by size: its
    // certificate chain is its own business.
    match tls.handshake(stream, usize::MAX).await {
        Ok(()) => Ok(tls),
        Err(Handshake::Io(e)) => Err(e),
        Err(Handshake::Closed) => Err(failed(&"the endpoint closed the connection")),
        Err(e @ (Handshake::TooLarge | Handshake::Refused(_))) => Err(failed(&e)),
    }
}
