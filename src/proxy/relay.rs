//! The `relay` phase: the response head goes to the client, then the body as it arrives:
//! each read from the endpoint is written to the client before the next read, so
//! streamed tokens are never held back. The endpoint connection goes back to the pool
//! only after a clean end of the message.

mod translated;

use std::time::Instant;

pub(super) use translated::relay as translated;

use super::attempt::Upstream;
use super::client::{Client, Watched};
use super::heads::{self, Answering, Reframe, Routing};
use super::request::Request;
use crate::deadline::Deadline;
use crate::http1::{BodyProgress, Framing};
use crate::log::debug;
use crate::shard::Shard;

/// How a relay ended.
pub(super) struct Relayed {
    /// The client connection may carry another request.
    pub(super) keep_alive: bool,
    /// Bytes written to the client.
    pub(super) bytes: u64,
    /// The client went away before the response was complete.
    pub(super) client_gone: bool,
    /// When its last bytes arrived from the endpoint.
    pub(super) end: Option<Instant>,
}

/// Relays `upstream`'s response to the client; `routing` says how it was routed.
pub(super) async fn relay(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &Request,
    mut upstream: Upstream<'_>,
    routing: &Routing<'_>,
) -> Relayed {
    let head = upstream.head;
    let framing = head.body;
    // An HTTP/1.0 client cannot receive chunked framing: decode it and close at the end.
    let decode = framing == Framing::Chunked && request.head.minor_version == 0;
    let how = Reframe {
        keep_alive: request.head.keep_alive && framing != Framing::UntilClose && !decode,
        decode,
        is_head: request.head.is_head,
        http10: request.head.minor_version == 0,
        own_body: None,
    };
    let mut relayed = Relayed {
        keep_alive: false,
        bytes: 0,
        client_gone: false,
        end: None,
    };
    let out = &mut client.out;
    out.clear();
    let answering = Answering {
        buf: &client.conn.buf,
        body: request.body.bytes(&client.conn.buf),
        own: &client.own_lines,
    };
    heads::response_head(
        out,
        &upstream.conn.buf,
        &head,
        &client.response_headers,
        &how,
        routing,
        &answering,
    );
    // Body bytes that came with the head go out in the same write.
    let mut body = BodyProgress::new(framing, u64::MAX);
    let after_head = &upstream.conn.buf[head.len..];
    let taken = match body.advance(after_head, decode.then_some(&mut *out)) {
        Ok(n) => n,
        Err(_) => return relayed,
    };
    if !decode {
        out.extend_from_slice(&after_head[..taken]);
    }
    let mut clean = head.keep_alive && head.len + taken == upstream.conn.buf.len();
    let idle = request.live.config.proxy.stream_idle_timeout;
    // Every write to the client, like every wait for the endpoint, ends within
    // `stream_idle_timeout` of the bytes' arrival and within the request's deadline: a
    // client that stops reading is cut off.
    let write_by = |at: Instant| (at + idle).min(request.deadline);
    let len = out.len();
    let until = write_by(upstream.at);
    if client
        .conn
        .write_by(deadline, until, out, 0..len)
        .await
        .is_err()
    {
        relayed.client_gone = true;
        return relayed;
    }
    relayed.bytes += len as u64;

    let ep = upstream.ep;
    let max_buffered = request.live.config.server.max_header_bytes;
    // When the last bytes arrived (one clock read per chunk); for a response that came
    // with its head, when the head came.
    let mut end = upstream.at;
    while !body.is_done() {
        let until = write_by(end);
        let read = client
            .conn
            .watch_while(deadline, (end, until), max_buffered, upstream.conn.refill())
            .await;
        let n = match read {
            Watched::Done(Ok(0)) if framing == Framing::UntilClose => {
                clean = false;
                break;
            }
            // Truncated or stalled: the client sees the cut (missing bytes or final
            // chunk, then close). Nothing else can be done once the head is out.
            Watched::Done(Ok(0)) => {
                debug!("endpoint {} closed mid-response", ep.name);
                return relayed;
            }
            Watched::Done(Ok(n)) => n,
            Watched::Done(Err(e)) => {
                debug!("endpoint {} failed mid-response: {e}", ep.name);
                return relayed;
            }
            Watched::Elapsed if until == request.deadline => {
                debug!(
                    "a response from {} cut at proxy.request_timeout_ms",
                    ep.name
                );
                return relayed;
            }
            Watched::Elapsed => {
                debug!("endpoint {} went silent mid-response", ep.name);
                return relayed;
            }
            // The client went away: dropping `upstream` closes it at once, so the
            // endpoint stops generating for nobody.
            Watched::HungUp => {
                debug!(
                    "the client went away; closing the connection to {}",
                    ep.name
                );
                relayed.client_gone = true;
                return relayed;
            }
        };
        end = Instant::now();
        let written = if decode {
            let out = &mut client.out;
            out.clear();
            match body.advance(&upstream.conn.buf[..n], Some(out)) {
                Ok(consumed) => clean &= consumed == n,
                Err(_) => return relayed,
            }
            let len = out.len();
            relayed.bytes += len as u64;
            client
                .conn
                .write_by(deadline, write_by(end), out, 0..len)
                .await
        } else {
            let consumed = match body.advance(&upstream.conn.buf[..n], None) {
                Ok(consumed) => consumed,
                Err(_) => return relayed,
            };
            clean &= consumed == n;
            relayed.bytes += consumed as u64;
            let buf = &mut upstream.conn.buf;
            let until = write_by(end);
            client
                .conn
                .write_by(deadline, until, buf, 0..consumed)
                .await
        };
        if let Err(e) = written {
            // The client went away or stopped reading (noticed on writing): as above.
            debug!("writing to the client failed: {e}");
            relayed.client_gone = true;
            return relayed;
        }
    }
    if clean && upstream.conn.is_reusable() {
        upstream.conn.buf.clear();
        shard.pool.put(ep, upstream.conn, end);
    }
    relayed.keep_alive = how.keep_alive;
    relayed.end = Some(end);
    relayed
}
