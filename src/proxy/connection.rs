//! The connection loop: one task per client connection, its requests one after another
//! (keep-alive, pipelining), one timer for all its deadlines, and for every request the
//! one exit, `access::finish`, that writes its log line and metrics.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use http::StatusCode;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;

use super::access::{self, Record, RequestId, Seen, Served};
use super::admission::{self, Admission};
use super::attempt;
use super::client::Client;
use super::error::{self, ProxyError, Rescue};
use super::heads::{self, Routing};
use super::relay;
use super::request::{self, Body, Read, Request};
use super::route::messages::Mode;
use super::route::{self, Plan};
use crate::admin;
use crate::deadline::{self, Deadline, Elapsed};
use crate::http1::{self, Conn, RequestHead};
use crate::log::debug;
use crate::metrics::translators::{Fallback, MessagesUse};
use crate::routing::{self, Internal, Route};
use crate::shard::{Drained, Shard};
use crate::tls::listener::Refused;

/// Serves one client connection until it closes, errs or times out; on the TLS
/// listener, from its handshake to its close_notify.
pub(crate) async fn serve_connection(shard: &Shard, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let accepted = Instant::now();
    let mut timer = pin!(deadline::timer(accepted));
    let mut deadline = Deadline::new(timer.as_mut());
    let tls = match &shard.listener_tls {
        None => None,
        Some(certs) => match certs.session() {
            Ok(session) => Some(session),
            Err(e) => {
                debug!("{peer}: no TLS session: {e}");
                return;
            }
        },
    };
    let mut client = Client::new(stream, tls, peer, accepted);
    // Registered once for the connection's life (its task's waker does not change).
    let mut drained = shard.drained();
    // The TLS handshake and close are boxed: their state would otherwise enlarge this
    // future, and what the plain path moves and polls, for every connection.
    if client.conn.is_tls()
        && !Box::pin(handshake(shard, &mut client, &mut deadline, &mut drained)).await
    {
        return;
    }
    let (client, deadline) = (&mut client, &mut deadline);
    // The connection's requests, one after another, until one ends it.
    loop {
        match request::read(shard, client, deadline, &mut drained).await {
            Read::Closed => break,
            Read::Refused { head, error } => {
                // The connection's remaining input is unknown: answer, then close. Its
                // time runs from when the connection was opened or last went idle.
                let started = client.idle_since;
                let id = match &head {
                    Some(head) => RequestId::for_request(shard, head, &client.conn.buf),
                    None => RequestId::generate(shard),
                };
                let mut record = Record::new(id);
                if let Some(head) = &head {
                    let route = routing::classify(head.target.get(&client.conn.buf));
                    record.anthropic = is_anthropic(route);
                }
                let live = shard.live();
                if live.cors.is_some() || live.limits.is_some() {
                    admission::refused_while_read(&live, client, head.as_ref());
                }
                let by = Writing::now(shard, deadline);
                send_error(client, by, &mut record, head.as_ref(), &error).await;
                let seen = Seen {
                    head: head.as_ref(),
                    body: &[],
                    started,
                };
                access::finish(shard, &live, client, &seen, &record, Instant::now());
                break;
            }
            Read::Request(mut request) => {
                let (record, keep_alive, end) = serve(shard, client, deadline, &mut request).await;
                let seen = Seen {
                    head: Some(&request.head),
                    body: request.body.bytes(&client.conn.buf),
                    started: request.started,
                };
                access::finish(shard, &request.live, client, &seen, &record, end);
                // A request body lost to a cancelled write leaves the buffer short: the
                // connection's remaining input is unknown, it cannot carry another.
                if !keep_alive || client.conn.buf.len() < request.len {
                    break;
                }
                client.conn.consume(request.len);
                client.idle_since = end;
            }
        }
    }
    if client.conn.is_tls() {
        Box::pin(client.conn.close(deadline)).await;
    }
}

/// The TLS handshake of a connection on the TLS listener, within the first head's time
/// (`server.header_timeout_ms` from the accept): a client that never completes it is
/// closed then, as one that never sends a head is, and a drain ends it too. Whether the
/// connection carries on.
async fn handshake(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    drained: &mut Drained<'_>,
) -> bool {
    let header_timeout = shard.live_now().config.server.header_timeout;
    deadline.set(client.idle_since + header_timeout);
    let shaking = client.conn.handshake();
    let done = deadline
        .run(async {
            monoio::select! {
                done = shaking => Some(done),
                () = &mut *drained => None,
            }
        })
        .await;
    match done {
        Ok(Some(Ok(()))) => true,
        Ok(Some(Err(Refused::PlainHttp))) => {
            debug!("{}: plain HTTP on the TLS listener", client.peer);
            client.conn.refuse_plain_http(deadline).await;
            false
        }
        Ok(Some(Err(Refused::Handshake(e)))) => {
            debug!("{}: TLS handshake failed: {e}", client.peer);
            false
        }
        Ok(None) | Err(Elapsed) => false,
    }
}

/// Routes and answers one request: the record of what became of it, whether the
/// connection carries on, and when the request ended.
async fn serve(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &mut Request,
) -> (Record, bool, Instant) {
    let mut record = Record::new(RequestId::for_request(
        shard,
        &request.head,
        &client.conn.buf,
    ));
    if shard.is_draining() {
        // Answer this one, then close: the server is shutting down.
        request.head.keep_alive = false;
    }
    // Classified once, for the admission step and for route.
    let route = routing::classify(request.head.target.get(&client.conn.buf));
    record.anthropic = is_anthropic(route);
    if matches!(route, Route::Messages { .. }) {
        // Until planned: refused before any endpoint could be chosen.
        record.messages = Some(MessagesUse {
            passthrough: false,
            stream: false,
            fallback: Some(Fallback::NoCompatibleEndpoints),
            ok: false,
            latency_us: 0,
        });
    }
    if request.live.cors.is_some() || request.live.limits.is_some() {
        let by = Writing::now;
        match admission::admit(shard, client, request, route) {
            Admission::Admitted => {}
            Admission::Preflight => {
                let head = &request.head;
                let keep_alive = preflight(client, by(shard, deadline), &mut record, head).await;
                return (record, keep_alive, Instant::now());
            }
            Admission::Refused(e) => {
                let head = Some(&request.head);
                let keep_alive =
                    send_error(client, by(shard, deadline), &mut record, head, &e).await;
                return (record, keep_alive, Instant::now());
            }
        }
    }
    if shard.catalog().generation != request.live.generation {
        // The shard took a newer generation while the body was read: nothing was
        // decided by the request's yet, it is served by the newer one.
        request.live = shard.live_now();
    }
    let live = request.live.clone();
    let plan = route::route(
        &live.config,
        &shard.catalog(),
        &live.upstreams.endpoints,
        (client.peer.ip(), &client.peer_ip),
        &client.conn.buf,
        request,
        route,
    );
    let mut plan = match plan {
        Plan::Page(Internal::DebugPanic) => {
            panic!("GET /internal/debug/panic (server.debug_panic_route is on)")
        }
        Plan::Page(page) => {
            let buf = &client.conn.buf;
            let target = request.head.target.get(buf);
            let sent = request.body.bytes(buf);
            let etag = if_none_match(&client.headers, buf);
            let answer = match page {
                Internal::Reload => {
                    let method = request.head.method.get(buf).to_vec();
                    admin::reload_config(shard, &method).await
                }
                _ => admin::render(page, shard, target, sent, etag),
            };
            record.page = true;
            let head = Some(&request.head);
            let keep_alive = respond(
                client,
                Writing::now(shard, deadline),
                &mut record,
                head,
                (answer.status, answer.content_type, &answer.body),
                &answer.lines,
                true,
                None,
            )
            .await;
            return (record, keep_alive, Instant::now());
        }
        Plan::Refuse(e) => {
            let by = Writing::now(shard, deadline);
            let keep_alive = send_error(client, by, &mut record, Some(&request.head), &e).await;
            return (record, keep_alive, Instant::now());
        }
        Plan::Forward(plan) => plan,
    };
    if let Some(messages) = plan.messages.as_mut() {
        // A translated body goes instead of the client's.
        if let Some(body) = messages.body.take() {
            request.body = Body::Owned(body);
        }
        record.messages = Some(MessagesUse {
            passthrough: matches!(messages.mode, Mode::Passthrough),
            stream: messages.translated().is_some_and(|t| t.stream),
            fallback: match messages.mode {
                Mode::Passthrough => None,
                Mode::Translation { fallback, .. } => Some(fallback),
            },
            ok: false,
            latency_us: 0,
        });
    }
    let upstream = match attempt::forward(shard, &live, client, deadline, request, &plan).await {
        Ok(upstream) => upstream,
        Err(e) => {
            // The model failed on the endpoints tried (none tried: not the model's
            // failure; an alias's body was rewritten, its span is stale).
            let none_tried = matches!(
                e,
                ProxyError::ModelUnavailable { .. } | ProxyError::NoEndpoint { .. }
            );
            if !none_tried && plan.alias.is_none() {
                record.unserved_model = plan.model.clone();
            }
            let by = Writing::now(shard, deadline);
            let keep_alive = send_error(client, by, &mut record, Some(&request.head), &e).await;
            return (record, keep_alive, Instant::now());
        }
    };
    let sticky = upstream.sticky;
    let ttfb = upstream.at.saturating_duration_since(request.started);
    let routing = Routing {
        id: &record.id,
        ep: upstream.ep,
        ttfb,
        model: upstream.model.clone(),
        decision: plan.decision,
        placement: heads::placement_line(plan.key.is_some(), live.config.proxy.balancer),
        mode: match plan.messages.as_ref().map(|m| &m.mode) {
            Some(Mode::Passthrough) => heads::PASSTHROUGH_LINE,
            _ => b"",
        },
        attempts: upstream.attempts,
        sticky,
        session: request.head.session_id,
    };
    let served = Served {
        endpoint: upstream.ep.index,
        model: upstream.model.clone(),
        ttfb,
        attempts: upstream.attempts,
        sticky,
    };
    let status = upstream.head.status;
    if let Some(messages) = record.messages.as_mut().filter(|m| m.passthrough) {
        messages.stream = is_event_stream(client, &upstream);
    }
    let translated = plan.messages.as_ref().and_then(|m| m.translated());
    let relayed = match translated {
        None => relay::relay(shard, client, deadline, request, upstream, &routing).await,
        Some(t) => {
            let relaying =
                relay::translated(shard, client, deadline, request, upstream, &routing, t);
            match relaying.await {
                Ok(relayed) => relayed,
                // Nothing reached the client: an answer of ringway's own.
                Err(e) => {
                    let by = Writing::now(shard, deadline);
                    let head = Some(&request.head);
                    let keep_alive = send_error(client, by, &mut record, head, &e).await;
                    return (record, keep_alive, Instant::now());
                }
            }
        }
    };
    if let Some(messages) = record.messages.as_mut() {
        messages.ok = relayed.end.is_some() && !relayed.client_gone;
    }
    record.status = Some(status);
    record.served = Some(served);
    record.bytes = relayed.bytes;
    record.client_gone = relayed.client_gone;
    let end = relayed.end.unwrap_or_else(Instant::now);
    (record, relayed.keep_alive, end)
}

/// Answers with the error's status and OpenAI-shaped body, or, when nothing can be
/// answered (the client left), records that. Returns whether the connection carries on.
async fn send_error(
    client: &mut Client,
    by: Writing<'_, '_>,
    record: &mut Record,
    head: Option<&RequestHead>,
    err: &ProxyError,
) -> bool {
    let Some(rescue) = err.rescue() else {
        record.client_gone = matches!(err, ProxyError::ClientGone);
        return false;
    };
    if rescue.status.is_server_error() {
        debug!(
            "request {}: {} {}",
            record.id.show(&client.conn.buf),
            rescue.status.as_u16(),
            rescue.message
        );
    }
    let body = if record.anthropic {
        error::anthropic_error_body(&rescue, &record.id.show(&client.conn.buf))
    } else {
        error::error_body(&rescue)
    };
    record.own_error = true;
    let keep_alive = rescue.keep_alive;
    let content_type = b"application/json";
    respond(
        client,
        by,
        record,
        head,
        (rescue.status, content_type, &body),
        b"",
        keep_alive,
        Some(&rescue),
    )
    .await
}

/// The request's `If-None-Match` value, for the pages that answer 304.
fn if_none_match<'b>(headers: &[crate::http1::Header], buf: &'b [u8]) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.get(buf).eq_ignore_ascii_case(b"if-none-match"))
        .map(|h| h.value.get(buf))
}

/// Whether a request on `route` is answered in Anthropic's shapes (its errors too).
fn is_anthropic(route: Route) -> bool {
    matches!(
        route,
        Route::Messages { .. }
            | Route::Internal(Internal::AnthropicModels | Internal::AnthropicCountTokens)
    )
}

/// Whether the endpoint's answer is a server-sent event stream.
fn is_event_stream(client: &Client, upstream: &attempt::Upstream<'_>) -> bool {
    let buf = &upstream.conn.buf;
    client.response_headers.iter().any(|h| {
        h.name.get(buf).eq_ignore_ascii_case(b"content-type")
            && h.value.get(buf).starts_with(b"text/event-stream")
    })
}

/// The connection's deadline, and when an answer of ringway's own must be written by.
struct Writing<'a, 't> {
    deadline: &'a mut Deadline<'t>,
    until: Instant,
}

impl<'a, 't> Writing<'a, 't> {
    /// An answer written now gets `proxy.stream_idle_timeout_ms`, as each write of a
    /// relayed response does.
    fn now(shard: &Shard, deadline: &'a mut Deadline<'t>) -> Writing<'a, 't> {
        let until = Instant::now() + shard.live_now().config.proxy.stream_idle_timeout;
        Writing { deadline, until }
    }
}

/// Writes a complete answer of ringway's own (an error, a page): its status, content
/// type and body, with `lines` (a page's own headers, whole) after the request's own
/// lines. Returns whether the connection carries on.
#[allow(clippy::too_many_arguments)]
async fn respond(
    client: &mut Client,
    by: Writing<'_, '_>,
    record: &mut Record,
    head: Option<&RequestHead>,
    (status, content_type, body): (StatusCode, &[u8], &[u8]),
    lines: &[u8],
    keep_alive: bool,
    rescue: Option<&Rescue>,
) -> bool {
    let keep_alive = keep_alive && head.is_some_and(|h| h.keep_alive);
    let out = &mut client.out;
    out.clear();
    let id = record.id.as_bytes(&client.conn.buf);
    let own = if lines.is_empty() {
        std::borrow::Cow::Borrowed(&client.own_lines.bytes[..])
    } else {
        std::borrow::Cow::Owned([&client.own_lines.bytes[..], lines].concat())
    };
    heads::own_head(
        out,
        status,
        content_type,
        body.len(),
        id,
        keep_alive,
        head,
        rescue,
        &own,
    );
    if !head.is_some_and(|h| h.is_head) {
        out.extend_from_slice(body);
    }
    record.status = Some(status.as_u16());
    record.bytes = body.len() as u64;
    let len = out.len();
    let written = client
        .conn
        .write_by(by.deadline, by.until, out, 0..len)
        .await;
    written.is_ok() && keep_alive
}

/// Answers a CORS preflight with 204 and the lines `admission` wrote for it. Returns
/// whether the connection carries on.
async fn preflight(
    client: &mut Client,
    by: Writing<'_, '_>,
    record: &mut Record,
    head: &RequestHead,
) -> bool {
    let out = &mut client.out;
    out.clear();
    let id = record.id.as_bytes(&client.conn.buf);
    let http10 = head.minor_version == 0;
    heads::preflight(out, id, head.keep_alive, http10, &client.own_lines.bytes);
    // Counted, not logged: an answer of ringway's own, like its pages.
    record.page = true;
    record.status = Some(StatusCode::NO_CONTENT.as_u16());
    let len = out.len();
    let written = client
        .conn
        .write_by(by.deadline, by.until, out, 0..len)
        .await;
    written.is_ok() && head.keep_alive
}

/// Answers a connection beyond `server.max_connections` with 503 and closes it. The
/// request is not read; a short wait for the client to finish sending keeps the close
/// from resetting the connection before the answer is read.
pub(crate) async fn refuse_connection(mut stream: TcpStream) {
    let rescue = ProxyError::TooManyConnections
        .rescue()
        .expect("a refusal has an answer");
    let mut out = heads::refusal(&rescue, &error::error_body(&rescue));
    let len = out.len();
    if http1::write_out(&mut stream, &mut out, 0..len)
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let mut conn = Conn::new(stream, 4096);
    let now = Instant::now();
    let mut timer = pin!(deadline::timer(now));
    let mut deadline = Deadline::new(timer.as_mut());
    deadline.set(now + Duration::from_millis(500));
    while let Ok(Ok(1..)) = deadline.run(conn.refill()).await {}
}
