//! The `relay` phase for a translated Messages request (`route/messages.rs`): the endpoint
//! answered in OpenAI's shapes, the client gets Anthropic's.
//!
//! - A stream (`text/event-stream` to a request with `stream: true`) goes through a
//!   [`StreamTranslator`] as it arrives: each read from the endpoint is translated and
//!   written to the client (chunked) before the next read, never held back; while the
//!   endpoint is silent (a long prefill) a `ping` goes out every
//!   `anthropic.ping_interval_ms`. A stream that breaks ends with an `error` event and a
//!   proper end of the body.
//! - A whole answer (a completion, or an error status) is read whole (bounded), then
//!   translated: a `message`, or the endpoint's error in Anthropic's shape with its status.
//!
//! As in `relay`, the client is watched while the endpoint is awaited, and its hang-up
//! drops the endpoint connection at once (the endpoint stops generating); the connection
//! goes back to the pool only after a clean end of the endpoint's message.

use std::pin::pin;
use std::time::Instant;

use super::Relayed;
use crate::api::anthropic::errors;
use crate::api::anthropic::request::Translated;
use crate::api::anthropic::response;
use crate::api::anthropic::stream::StreamTranslator;
use crate::deadline::Deadline;
use crate::http1::{self, BodyProgress, Framing};
use crate::log::debug;
use crate::proxy::attempt::Upstream;
use crate::proxy::client::{Client, Watched};
use crate::proxy::error::ProxyError;
use crate::proxy::heads::{self, Answering, Reframe, Routing};
use crate::proxy::request::Request;
use crate::shard::Shard;

/// The most of a whole answer (completion or error) read to translate it.
const MAX_WHOLE: usize = 16 << 20;

/// Relays `upstream`'s OpenAI answer to `translated`'s request in Anthropic's shape.
/// `Err` when nothing reached the client: the caller answers with the error.
pub(in crate::proxy) async fn relay(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &Request,
    mut upstream: Upstream<'_>,
    routing: &Routing<'_>,
    translated: &Translated,
) -> Result<Relayed, ProxyError> {
    let head = upstream.head;
    let buf = &upstream.conn.buf;
    let header = |name: &[u8]| {
        client
            .response_headers
            .iter()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name))
            .map(|h| h.value.get(buf))
    };
    if header(b"content-encoding").is_some_and(|c| !c.eq_ignore_ascii_case(b"identity")) {
        return Err(untranslatable(&upstream, "its body is compressed".into()));
    }
    let sse = header(b"content-type").is_some_and(|t| t.starts_with(b"text/event-stream"));
    let success = (200..300).contains(&head.status);
    if success && translated.stream && sse {
        return Ok(stream(
            shard, client, deadline, request, upstream, routing, translated,
        )
        .await);
    }
    let mut reader = Reader::new(request, &upstream);
    let mut whole = Vec::new();
    let end = loop {
        match reader
            .next(client, deadline, &mut upstream, None, &mut whole)
            .await
        {
            Next::Bytes => {}
            Next::End(end) => break end,
            Next::Failed(what) => return Err(untranslatable(&upstream, what.into())),
            Next::TooLarge => {
                return Err(untranslatable(&upstream, "its answer is too large".into()));
            }
            Next::Ping => unreachable!("no pings asked for"),
            Next::ClientGone => return Err(ProxyError::ClientGone),
        }
    };
    let mut body = Vec::with_capacity(whole.len() + 256);
    if !success {
        // The endpoint's error, in Anthropic's shape, with its status.
        let (kind, message) = errors::from_openai_body(Some(head.status), &whole);
        let id = routing.id.as_bytes(&client.conn.buf);
        let id = String::from_utf8_lossy(id);
        errors::write_error(kind, &message, Some(&id), &mut body);
    } else if translated.stream {
        let what = "it answered a streaming request without a stream".into();
        return Err(untranslatable(&upstream, what));
    } else if let Err(e) = response::from_openai(&whole, &translated.model, &mut body) {
        return Err(untranslatable(&upstream, e.message));
    }
    let how = reframe(request, (b"application/json", Some(body.len())));
    write_head(client, request, &upstream, routing, &how);
    client.out.extend_from_slice(&body);
    let mut relayed = Relayed {
        keep_alive: false,
        bytes: client.out.len() as u64,
        client_gone: false,
        end: None,
    };
    let len = client.out.len();
    let until = (end + request.live.config.proxy.stream_idle_timeout).min(request.deadline);
    let out = &mut client.out;
    if client
        .conn
        .write_by(deadline, until, out, 0..len)
        .await
        .is_err()
    {
        relayed.client_gone = true;
        return Ok(relayed);
    }
    reader.release(shard, upstream, end);
    relayed.keep_alive = how.keep_alive;
    relayed.end = Some(end);
    Ok(relayed)
}

/// The translated stream: head, then events as the endpoint's chunks arrive.
async fn stream(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &Request,
    mut upstream: Upstream<'_>,
    routing: &Routing<'_>,
    translated: &Translated,
) -> Relayed {
    let how = reframe(request, (b"text/event-stream", None));
    let chunked = !how.http10;
    let mut relayed = Relayed {
        keep_alive: false,
        bytes: 0,
        client_gone: false,
        end: None,
    };
    let id = routing.id.as_bytes(&client.conn.buf);
    let mut translator =
        StreamTranslator::new(&translated.model, translated.input_tokens).with_seed(id);
    write_head(client, request, &upstream, routing, &how);
    // The head goes out at once, with whatever the bytes that came with it make.
    let mut pending = std::mem::take(&mut client.out);
    let mut reader = Reader::new(request, &upstream);
    let (mut chunk, mut events) = (Vec::new(), Vec::new());
    let ping = request.live.config.anthropic.ping_interval;
    let mut next = reader.first(&upstream, &mut chunk);
    let ended = loop {
        events.clear();
        let ended = match next {
            Next::Bytes => {
                translator.feed(&chunk, &mut events);
                None
            }
            Next::Ping => {
                translator.ping(&mut events);
                None
            }
            Next::End(end) => {
                translator.feed(&chunk, &mut events);
                translator.finish(&mut events);
                Some(Some(end))
            }
            Next::Failed(what) => {
                debug!("endpoint {} failed mid-stream: {what}", upstream.ep.name);
                translator.fail(&format!("the backend's stream failed: {what}"), &mut events);
                Some(None)
            }
            Next::TooLarge => unreachable!("a stream is not bounded"),
            Next::ClientGone => {
                debug!(
                    "the client went away; closing the connection to {}",
                    upstream.ep.name
                );
                relayed.client_gone = true;
                return relayed;
            }
        };
        // An error event ends the client's stream: the rest of the endpoint's is not
        // read (its connection is closed). After message_stop it is, to its end, so
        // the connection can be reused.
        let ended = ended.or(translator.failed().then_some(None));
        chunk.clear();
        frame(&mut pending, &events, chunked);
        if ended.is_some() && chunked {
            pending.extend_from_slice(b"0\r\n\r\n");
        }
        if !pending.is_empty() {
            let until =
                (reader.last + request.live.config.proxy.stream_idle_timeout).min(request.deadline);
            let len = pending.len();
            let written = client
                .conn
                .write_by(deadline, until, &mut pending, 0..len)
                .await;
            if let Err(e) = written {
                debug!("writing to the client failed: {e}");
                relayed.client_gone = true;
                return relayed;
            }
            relayed.bytes += len as u64;
            pending.clear();
        }
        if let Some(ended) = ended {
            break ended;
        }
        next = reader
            .next(client, deadline, &mut upstream, ping, &mut chunk)
            .await;
    };
    client.out = pending;
    let (input, output) = translator.tokens();
    debug!(
        "a translated stream from {} ended: {input} input and {output} output tokens, {} lines skipped",
        upstream.ep.name,
        translator.skipped()
    );
    relayed.keep_alive = how.keep_alive;
    // Ended with an error event, the client's stream is whole but the request failed.
    if let Some(end) = ended.filter(|_| !translator.failed()) {
        reader.release(shard, upstream, end);
        relayed.end = Some(end);
    }
    relayed
}

/// Appends `events` to `out` as one chunk of a chunked body (or as they are).
fn frame(out: &mut Vec<u8>, events: &[u8], chunked: bool) {
    if events.is_empty() {
        return;
    }
    if chunked {
        http1::push_chunk_size(out, events.len());
    }
    out.extend_from_slice(events);
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

/// How a body of ringway's own goes to the client: `own_body` is its type and length.
fn reframe(request: &Request, own_body: (&'static [u8], Option<usize>)) -> Reframe {
    let http10 = request.head.minor_version == 0;
    Reframe {
        keep_alive: request.head.keep_alive && !(http10 && own_body.1.is_none()),
        decode: false,
        is_head: request.head.is_head,
        http10,
        own_body: Some(own_body),
    }
}

/// Writes the client's response head into `client.out` (cleared first).
fn write_head(
    client: &mut Client,
    request: &Request,
    upstream: &Upstream<'_>,
    routing: &Routing<'_>,
    how: &Reframe,
) {
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
        &upstream.head,
        &client.response_headers,
        how,
        routing,
        &answering,
    );
}

fn untranslatable(upstream: &Upstream<'_>, message: String) -> ProxyError {
    ProxyError::Untranslatable {
        endpoint: upstream.ep.name.to_string(),
        message,
    }
}

/// What the next wait on the endpoint gave.
enum Next {
    /// Body bytes, appended to the caller's buffer.
    Bytes,
    /// The body is complete (its last bytes, if any, appended), at this time.
    End(Instant),
    /// The ping interval passed without a byte.
    Ping,
    Failed(&'static str),
    /// Beyond `MAX_WHOLE` (a whole answer only).
    TooLarge,
    ClientGone,
}

/// Reads the endpoint's body, decoded from its framing, one wait at a time.
struct Reader {
    body: BodyProgress,
    /// Bytes that came with the head, not yet handed out.
    first: bool,
    /// The endpoint's message ended exactly where its bytes did: its connection may be
    /// reused.
    clean: bool,
    framing: Framing,
    /// When the endpoint's last bytes arrived.
    last: Instant,
    idle: std::time::Duration,
    deadline: Instant,
    max_buffered: usize,
}

impl Reader {
    fn new(request: &Request, upstream: &Upstream<'_>) -> Reader {
        Reader {
            body: BodyProgress::new(upstream.head.body, u64::MAX),
            first: true,
            clean: upstream.head.keep_alive,
            framing: upstream.head.body,
            last: upstream.at,
            idle: request.live.config.proxy.stream_idle_timeout,
            deadline: request.deadline,
            max_buffered: request.live.config.server.max_header_bytes,
        }
    }

    /// Appends the body's next bytes to `out`; with `ping`, gives up waiting after that
    /// long (`Next::Ping`). A whole answer (`ping` none) is bounded by `MAX_WHOLE`.
    async fn next(
        &mut self,
        client: &mut Client,
        deadline: &mut Deadline<'_>,
        upstream: &mut Upstream<'_>,
        ping: Option<std::time::Duration>,
        out: &mut Vec<u8>,
    ) -> Next {
        if self.first {
            self.first = false;
            let got = self.take(upstream, upstream.head.len, out);
            if !matches!(got, Next::Bytes) || !out.is_empty() {
                return got;
            }
        }
        if ping.is_none() && out.len() > MAX_WHOLE {
            return Next::TooLarge;
        }
        let until = (self.last + self.idle).min(self.deadline);
        let started = Instant::now();
        let wake = ping.map_or(until, |p| (started + p).min(until));
        let read = {
            let mut read = pin!(upstream.conn.refill());
            client
                .conn
                .watch_while(deadline, (started, wake), self.max_buffered, read.as_mut())
                .await
        };
        let n = match read {
            Watched::Done(Ok(0)) if self.framing == Framing::UntilClose => {
                self.clean = false;
                return Next::End(Instant::now());
            }
            Watched::Done(Ok(0)) => return Next::Failed("it closed the connection mid-answer"),
            Watched::Done(Ok(n)) => n,
            Watched::Done(Err(_)) => return Next::Failed("the connection failed mid-answer"),
            Watched::Elapsed if wake < until => return Next::Ping,
            Watched::Elapsed if until == self.deadline => {
                return Next::Failed("proxy.request_timeout_ms passed");
            }
            Watched::Elapsed => {
                return Next::Failed("it went silent (proxy.stream_idle_timeout_ms)");
            }
            Watched::HungUp => return Next::ClientGone,
        };
        self.last = Instant::now();
        debug_assert_eq!(n, upstream.conn.buf.len());
        self.take(upstream, 0, out)
    }

    /// The body bytes that came with the head, decoded into `out` (maybe none).
    fn first(&mut self, upstream: &Upstream<'_>, out: &mut Vec<u8>) -> Next {
        self.first = false;
        self.take(upstream, upstream.head.len, out)
    }

    /// Decodes `upstream.conn.buf[from..]` into `out`.
    fn take(&mut self, upstream: &Upstream<'_>, from: usize, out: &mut Vec<u8>) -> Next {
        let input = &upstream.conn.buf[from..];
        match self.body.advance(input, Some(out)) {
            Ok(taken) => {
                self.clean &= taken == input.len();
                if self.body.is_done() {
                    Next::End(self.last)
                } else {
                    Next::Bytes
                }
            }
            Err(_) => Next::Failed("its body's chunked framing is malformed"),
        }
    }

    /// Returns the endpoint connection to the pool if its message ended cleanly.
    fn release(self, shard: &Shard, mut upstream: Upstream<'_>, end: Instant) {
        if self.clean && upstream.conn.is_reusable() {
            upstream.conn.buf.clear();
            shard.pool.put(upstream.ep, upstream.conn, end);
        }
    }
}
