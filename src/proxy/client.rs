//! A client connection's lasting state: its stream, its peer, and the buffers each of its
//! requests reuses. Nothing in it describes the current request.

use std::net::SocketAddr;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::http1::{Conn, Header};

/// A client connection: what lasts across its requests. Its buffers are reused by each
/// request; nothing in it describes the current request.
pub(super) struct Client {
    pub(super) conn: Conn,
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
    pub(super) fn new(stream: TcpStream, peer: SocketAddr, accepted: Instant) -> Client {
        Client {
            conn: Conn::new(stream, 8 * 1024),
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
