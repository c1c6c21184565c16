//! The `request` phase: a request's head (bounded, complete within
//! `server.header_timeout_ms`) and its body (bounded, read whole and kept, so the request
//! can be retried on another endpoint).

use std::ops::Range;
use std::time::Instant;

use super::client::Client;
use super::error::ProxyError;
use super::heads;
use crate::config::ServerConfig;
use crate::deadline::{Deadline, Elapsed};
use crate::http1::{self, BodyProgress, Framing, RequestHead};
use crate::live::Pinned;
use crate::shard::{Drained, Shard};

/// A request read whole. Made fresh for every request.
pub(super) struct Request {
    pub(super) head: RequestHead,
    pub(super) body: Body,
    /// Bytes of the connection's buffer the request took: its head and its body as
    /// received.
    pub(super) len: usize,
    /// When its head was complete; `proxy.request_timeout_ms` runs from here.
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    /// The configuration generation it is served by, from its head to its end: taken
    /// when its head was complete (`Shard::live`).
    pub(super) live: Pinned,
}

/// A request body.
pub(super) enum Body {
    Empty,
    /// As received: a range of the connection's buffer.
    Received(Range<usize>),
    /// Decoded from chunked framing, or rewritten for an endpoint (a model alias).
    Owned(Vec<u8>),
}

impl Body {
    /// The body's bytes; `buf` is the client connection's buffer (none if a cancelled
    /// operation took it: see `Span::get`).
    pub(super) fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Body::Empty => &[],
            Body::Received(range) => buf.get(range.clone()).unwrap_or_default(),
            Body::Owned(bytes) => bytes,
        }
    }

    /// Replaces `span` of the body with `text`; the body is then owned.
    pub(super) fn rewrite(&mut self, buf: &[u8], span: Range<usize>, text: &[u8]) {
        let body = self.bytes(buf);
        let rewritten = [&body[..span.start], text, &body[span.end..]].concat();
        *self = Body::Owned(rewritten);
    }
}

/// What reading a request came to.
pub(super) enum Read {
    /// The client closed, or went idle between requests: the connection ends quietly.
    Closed,
    Request(Request),
    /// A request that cannot be taken: answered with the error (if anything can be
    /// answered), after which the connection closes. `head` if it was read.
    Refused {
        head: Option<RequestHead>,
        error: ProxyError,
    },
}

/// Reads the next request on `client`'s connection. `drained` is the connection's own
/// [`Shard::drained`], which ends a wait between requests when the shard drains.
pub(super) async fn read(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    drained: &mut Drained<'_>,
) -> Read {
    // Until the head is complete, the generation the shard has; then the newest.
    let waiting = shard.live_now();
    let server = &waiting.config.server;
    let limits = server.head_limits();
    // The head must be complete `header_timeout` after the connection opened (first
    // request) or after its first byte (later ones); before that byte, a keep-alive
    // connection may idle for `keepalive_timeout`. The deadline is set only when the
    // bytes at hand are not enough: a pipelined request costs no timer.
    let mut head_due = (client.requests == 0).then(|| client.idle_since + server.header_timeout);
    let head = loop {
        let between_requests = client.conn.buf.is_empty();
        if !between_requests {
            match http1::parse_request(&client.conn.buf, &limits, &mut client.headers) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => {
                    return Read::Refused {
                        head: None,
                        error: ProxyError::BadHead(e),
                    };
                }
            }
        }
        if between_requests && shard.is_draining() {
            return Read::Closed;
        }
        let due = match head_due {
            Some(due) => due,
            None if between_requests => client.idle_since + server.keepalive_timeout,
            None => *head_due.insert(Instant::now() + server.header_timeout),
        };
        deadline.set(due);
        let read = if between_requests {
            // Idle: a drain ends the wait too.
            let fill = client.conn.fill();
            deadline
                .run(async {
                    monoio::select! {
                        read = fill => Some(read),
                        () = &mut *drained => None,
                    }
                })
                .await
        } else {
            deadline.run(client.conn.fill()).await.map(Some)
        };
        match read {
            Ok(None | Some(Ok(0) | Err(_))) => return Read::Closed,
            Ok(Some(Ok(_))) => {}
            Err(Elapsed) if between_requests => return Read::Closed,
            Err(Elapsed) => {
                return Read::Refused {
                    head: None,
                    error: ProxyError::ClientTimeout,
                };
            }
        }
    };
    client.requests += 1;
    let started = Instant::now();
    drop(waiting);
    let live = shard.live();
    let request_deadline = started + live.config.proxy.request_timeout;
    let server = &live.config.server;
    match read_body(server, client, deadline, &head, request_deadline).await {
        Ok((body, len)) => Read::Request(Request {
            head,
            body,
            len,
            started,
            deadline: request_deadline,
            live,
        }),
        Err(error) => Read::Refused {
            head: Some(head),
            error,
        },
    }
}

/// Reads the body `head` announces; returns it and how many bytes of the connection's
/// buffer the request took.
async fn read_body(
    server: &ServerConfig,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    head: &RequestHead,
    request_deadline: Instant,
) -> Result<(Body, usize), ProxyError> {
    let start = head.len;
    match head.body {
        Framing::Empty | Framing::UntilClose => return Ok((Body::Empty, start)),
        Framing::Length(n) if n > server.max_body_bytes => {
            return Err(ProxyError::BodyTooLarge {
                limit: server.max_body_bytes,
            });
        }
        Framing::Length(n) if client.conn.buf.len() - start >= n as usize => {
            // The common case: the body came with the head.
            let end = start + n as usize;
            return Ok((Body::Received(start..end), end));
        }
        _ => {}
    }
    if head.expect_continue && client.conn.buf.len() == start {
        let mut interim = heads::CONTINUE.to_vec();
        let len = interim.len();
        if client.conn.write(&mut interim, 0..len).await.is_err() {
            return Err(ProxyError::ClientGone);
        }
    }
    let mut progress = BodyProgress::new(head.body, server.max_body_bytes);
    let mut decoded = (head.body == Framing::Chunked).then(Vec::new);
    let mut end = start;
    loop {
        end += progress
            .advance(&client.conn.buf[end..], decoded.as_mut())
            .map_err(ProxyError::BadChunkedBody)?;
        if progress.is_done() {
            let body = match decoded {
                Some(bytes) => Body::Owned(bytes),
                None => Body::Received(start..end),
            };
            return Ok((body, end));
        }
        // Each read within `body_timeout` of the last, all within the request's own
        // deadline: a body trickled byte by byte cannot outlast `request_timeout_ms`.
        deadline.set((Instant::now() + server.body_timeout).min(request_deadline));
        match deadline.run(client.conn.fill()).await {
            Ok(Ok(0) | Err(_)) => return Err(ProxyError::ClientGone),
            Ok(Ok(_)) => {}
            Err(Elapsed) => return Err(ProxyError::ClientTimeout),
        }
    }
}
