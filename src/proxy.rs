//! The request path, as named phases:
//!
//! ```text
//! parse_request ─► route ─► select_backend ─► forward ─► stream_response
//!   head+body      path →     balancer over     pooled or     head rewritten, body
//!   (bounded)      scope      eligible          new conn,     relayed chunk by chunk
//!                             endpoints         request out,  as it arrives
//!                                 ▲             head in
//!                                 └── retry on another endpoint while nothing has
//!                                     reached the client
//! ```
//!
//! One `serve_connection` task runs per client connection on its shard; it handles that
//! connection's requests one after another (keep-alive, pipelining).

pub(crate) mod error;

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use http::StatusCode;
use monoio::net::TcpStream;

use crate::admin;
use crate::api;
use crate::auth;
use crate::http1::{
    self, BodyProgress, Conn, Framing, HeaderKind, IoFail, RequestHead, ResponseHead,
};
use crate::log::{AccessFormat, debug, warning};
use crate::routing::sticky::{self, KeyInputs, Outcome, SessionKey};
use crate::routing::{self, Internal, KeySource, Route, Scope};
use crate::runtime::Shard;
use crate::upstream::models::EndpointSet;
use crate::upstream::{self, Endpoint, health};
use error::{ProxyError, Rescue};

/// Request bodies up to this size are sent in the same write as the head.
const COALESCE_BODY: usize = 64 * 1024;

/// A client connection and the buffers reused by each of its requests.
struct Client {
    conn: Conn,
    peer: SocketAddr,
    /// The client address, formatted once for X-Forwarded-For.
    peer_ip: String,
    head: RequestHead,
    /// Bytes of `conn.buf` taken by the current request (head and raw body).
    request_len: usize,
    /// The request body when it is not a plain range of `conn.buf`: a chunked body,
    /// decoded, or a body rewritten for an endpoint (model alias).
    own_body: Vec<u8>,
    owns_body: bool,
    /// The request for the endpoint: rewritten head, and the body if small.
    upstream_request: Vec<u8>,
    /// The response head for the client (and the start of the body).
    out: Vec<u8>,
    response: ResponseHead,
    /// What the access log will say about the current request.
    entry: Entry,
    /// Requests read on this connection so far.
    requests: u64,
    /// When the connection was accepted (the first head's timeout runs from here).
    accepted: Instant,
    /// When the current request must be done (`proxy.request_timeout_ms`).
    deadline: Instant,
}

/// An access-log entry, filled in as the request goes.
#[derive(Default)]
struct Entry {
    /// Set when the request was answered (forwarded or refused), not for internal pages.
    status: Option<u16>,
    endpoint: Option<usize>,
    model: Option<Range<usize>>,
    ttfb: Option<Duration>,
    attempts: usize,
    sticky: Option<&'static str>,
    bytes: u64,
}

/// Whether the client connection carries on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection until it closes, errs or times out.
pub(crate) async fn serve_connection(shard: &Shard, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut client = Client {
        conn: Conn::new(stream, 8 * 1024),
        peer,
        peer_ip: peer.ip().to_string(),
        head: RequestHead::default(),
        request_len: 0,
        own_body: Vec::new(),
        owns_body: false,
        upstream_request: Vec::with_capacity(2048),
        out: Vec::with_capacity(2048),
        response: ResponseHead::default(),
        entry: Entry::default(),
        requests: 0,
        accepted: Instant::now(),
        deadline: Instant::now(),
    };
    while handle_request(shard, &mut client).await == Next::KeepAlive {}
}

/// Answers a connection beyond `server.max_connections` with 503 and closes it. The
/// request is not read; a short wait for the client to finish sending keeps the close
/// from resetting the connection before the answer is read.
pub(crate) async fn refuse_connection(mut stream: TcpStream) {
    let rescue = ProxyError::TooManyConnections
        .rescue()
        .expect("a refusal has an answer");
    let body = error::error_body(&rescue);
    let mut out = Vec::with_capacity(256 + body.len());
    http1::push_status_line(&mut out, rescue.status);
    http1::push_header(&mut out, b"Content-Type", b"application/json");
    http1::push_header_decimal(&mut out, b"Content-Length", body.len() as u64);
    http1::push_header(&mut out, b"Retry-After", b"1");
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    let len = out.len();
    if http1::write_all(&mut stream, out, len).await.0.is_ok() {
        use monoio::io::AsyncWriteRent;
        let _ = stream.shutdown().await;
        let mut conn = Conn::new(stream, 4096);
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(1..) = conn
            .refill(until.saturating_duration_since(Instant::now()))
            .await
        {}
    }
}

async fn handle_request(shard: &Shard, client: &mut Client) -> Next {
    let next = match parse_request(shard, client).await {
        Ok(false) => return Next::Close,
        Err(e) => {
            let id = RequestId::generate(shard);
            return send_error(shard, client, &e, &id).await;
        }
        Ok(true) => {
            shard.counters().requests.bump();
            client.entry = Entry::default();
            if shard.is_draining() {
                // Answer this one, then close: the server is shutting down.
                client.head.keep_alive = false;
            }
            let started = Instant::now();
            client.deadline = started + shard.config.proxy.request_timeout;
            let id = RequestId::for_request(shard, client);
            let route = match routing::classify(client.head.target.get(&client.conn.buf)) {
                Route::Internal(Internal::DebugPanic) if !shard.config.server.debug_panic_route => {
                    Route::NotFound
                }
                route => route,
            };
            let keys = &shard.config.server.api_keys;
            let needs_key = match route {
                Route::Internal(page) => page.needs_key(),
                _ => true,
            };
            let next = match route {
                _ if needs_key
                    && !keys.is_empty()
                    && !auth::admits(keys, &client.head, &client.conn.buf) =>
                {
                    send_error(shard, client, &ProxyError::Unauthorized, &id).await
                }
                Route::Forward { scope, strip } => {
                    proxy_request(shard, client, scope, strip, &id, started).await
                }
                Route::Internal(page) => {
                    let method = client.head.method.get(&client.conn.buf);
                    if method != b"GET" && method != b"HEAD" {
                        send_error(shard, client, &ProxyError::MethodNotAllowed, &id).await
                    } else if page.is_operator_page()
                        && !shard.config.server.internal_from_anywhere
                        && !client.peer.ip().is_loopback()
                    {
                        send_error(shard, client, &ProxyError::Forbidden, &id).await
                    } else if page == Internal::DebugPanic {
                        panic!("GET /internal/debug/panic (server.debug_panic_route is on)");
                    } else {
                        let target = client.head.target.get(&client.conn.buf);
                        let query = target.splitn(2, |&b| b == b'?').nth(1).unwrap_or_default();
                        let (status, content_type, body) = admin::render(page, shard, query);
                        respond(client, status, content_type, &body, &id, true, None).await
                    }
                }
                Route::UnknownProvider => {
                    send_error(shard, client, &ProxyError::UnknownProvider, &id).await
                }
                Route::NotFound => send_error(shard, client, &ProxyError::NotFound, &id).await,
            };
            if let (Some(log), Some(status)) = (&shard.access_log, client.entry.status) {
                log.write(access_line(client, shard, log.format, status, &id, started));
            }
            next
        }
    };
    // A request body lost to a cancelled upstream write leaves the buffer short: the
    // connection's remaining input is unknown, so it cannot carry another request.
    let intact = client.conn.buf.len() >= client.request_len;
    client.conn.consume(client.request_len);
    if intact { next } else { Next::Close }
}

// ---- parse_request ----

/// Reads a request head and its body (bounded). `Ok(false)`: the client closed or went
/// idle between requests, which ends the connection quietly.
async fn parse_request(shard: &Shard, client: &mut Client) -> Result<bool, ProxyError> {
    let server = &shard.config.server;
    let limits = server.head_limits();
    client.request_len = 0;
    client.head.reset();
    // The head must be complete `header_timeout` after the connection opened (first
    // request) or after its first byte (later ones); before that byte, a keep-alive
    // connection may idle for `keepalive_timeout`.
    let mut head_deadline = (client.requests == 0).then(|| client.accepted + server.header_timeout);
    loop {
        if !client.conn.buf.is_empty() {
            if http1::parse_request(&client.conn.buf, &limits, &mut client.head)
                .map_err(ProxyError::from_client_head)?
            {
                break;
            }
            head_deadline.get_or_insert_with(|| Instant::now() + server.header_timeout);
        }
        let between_requests = client.conn.buf.is_empty();
        if between_requests && shard.is_draining() {
            return Ok(false);
        }
        let wait = match head_deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => server.keepalive_timeout,
        };
        let read = if between_requests {
            client.conn.fill_unless(wait, shard.idle_handle()).await
        } else {
            client.conn.fill(wait).await
        };
        match read {
            Ok(0) | Err(IoFail::Io(_)) => return Ok(false),
            Ok(_) => {}
            Err(IoFail::Timeout) if between_requests => return Ok(false),
            Err(IoFail::Timeout) => return Err(ProxyError::ClientTimeout),
        }
    }
    client.requests += 1;
    let head_len = client.head.len;
    client.request_len = head_len;
    client.own_body.clear();
    client.owns_body = framing_is_chunked(&client.head);
    let framing = client.head.body.unwrap_or(Framing::Empty);
    if let Framing::Length(n) = framing {
        if n > server.max_body_bytes {
            return Err(ProxyError::BodyTooLarge {
                limit: server.max_body_bytes,
            });
        }
    }
    if framing == Framing::Empty {
        return Ok(true);
    }
    let mut body = BodyProgress::new(framing);
    if let BodyProgress::Chunked(decoder) = &mut body {
        *decoder = http1::ChunkedDecoder::new(server.max_body_bytes);
    }
    let decoded = (framing == Framing::Chunked).then_some(&mut client.own_body);
    let mut decoded = decoded;
    if client.head.expect_continue && client.conn.buf.len() == head_len {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        let len = buf.len();
        if http1::write_all(&mut client.conn.stream, buf, len)
            .await
            .0
            .is_err()
        {
            return Err(ProxyError::ClientGone);
        }
    }
    loop {
        let consumed = body
            .advance(
                &client.conn.buf[client.request_len..],
                decoded.as_deref_mut(),
            )
            .map_err(ProxyError::BadChunkedBody)?;
        client.request_len += consumed;
        if body.is_done() {
            return Ok(true);
        }
        match client.conn.fill(server.body_timeout).await {
            Ok(0) | Err(IoFail::Io(_)) => return Err(ProxyError::ClientGone),
            Ok(_) => {}
            Err(IoFail::Timeout) => return Err(ProxyError::ClientTimeout),
        }
    }
}

impl Client {
    fn body(&self) -> &[u8] {
        if self.owns_body {
            &self.own_body
        } else {
            &self.conn.buf[self.head.len..self.request_len]
        }
    }

    /// Replaces `span` of the body with `text`, moving the body into `own_body`.
    fn rewrite_body(&mut self, span: std::ops::Range<usize>, text: &[u8]) {
        let body = self.body();
        let rewritten = [&body[..span.start], text, &body[span.end..]].concat();
        self.own_body = rewritten;
        self.owns_body = true;
    }
}

fn framing_is_chunked(head: &RequestHead) -> bool {
    head.body == Some(Framing::Chunked)
}

// ---- select_backend, forward, retry ----

/// What `route` decided for a request, carried to `stream_response`.
struct Routed<'a> {
    ep: &'a Endpoint,
    id: &'a RequestId,
    started: Instant,
    sticky: StickyReport,
    /// From the request's arrival to the endpoint's response head.
    ttfb: Duration,
    /// The model sent to the endpoint: its span in the (possibly rewritten) body.
    model: Option<Range<usize>>,
    /// How the endpoint was chosen ("sticky" or the balancer's name) and why.
    strategy: &'static str,
    reason: &'static str,
    failover: bool,
    /// Endpoints tried, this one included.
    attempts: usize,
}

/// The sticky-session headers of a response.
#[derive(Clone, Copy)]
struct StickyReport {
    outcome: Outcome,
    source: Option<KeySource>,
}

/// What a request body says about routing it.
#[derive(Default)]
struct BodyFacts {
    key: Option<SessionKey>,
    /// The request opens a conversation.
    opener: bool,
    /// The `model` string's span in the body.
    model: Option<Range<usize>>,
}

fn body_facts(shard: &Shard, client: &Client) -> BodyFacts {
    let sticky = &shard.config.sticky;
    let buf = &client.conn.buf;
    let body = client.body();
    let facts = if body.is_empty() {
        api::RequestFacts::default()
    } else {
        api::inspect(body, sticky.prompt_prefix_bytes)
    };
    let model = facts.model.map(|m| {
        let start = m.as_ptr() as usize - body.as_ptr() as usize;
        start..start + m.len()
    });
    let key = if sticky.enabled {
        let inputs = KeyInputs {
            session_id: client.head.session_id.map(|s| s.get(buf)),
            facts: &facts,
            authorization: client.head.authorization.map(|s| s.get(buf)),
            client_ip: &client.peer_ip,
        };
        sticky::derive_key(&sticky.key_sources, &inputs)
    } else {
        None
    };
    BodyFacts {
        key,
        opener: facts.chat && !facts.continues,
        model,
    }
}

/// Which endpoints a request may go to: the route's scope, those serving its model, and
/// healthy ones (as of `now`).
#[derive(Clone, Copy)]
pub(crate) struct Want {
    pub(crate) scope: Scope,
    pub(crate) serving: Option<EndpointSet>,
    pub(crate) now: u64,
}

impl Want {
    /// Whether `ep` may serve the request, which has already tried `tried`.
    #[inline]
    pub(crate) fn admits(&self, ep: &Endpoint, tried: &[usize]) -> bool {
        self.scope.admits(ep.kind)
            && self.serving.is_none_or(|s| s.contains(ep.index))
            && ep.health().is_routable(self.now)
            && !tried.contains(&ep.index)
    }
}

/// The endpoints that can serve `model` (through an alias if it is one, with its
/// targets), or why none can.
fn resolve_model<'c>(
    shard: &'c Shard,
    scope: Scope,
    model: &[u8],
) -> Result<(EndpointSet, Option<&'c [String]>), ProxyError> {
    let catalog = shard.catalog();
    let alias = shard
        .config
        .model_aliases
        .iter()
        .find(|(alias, _)| alias.as_bytes() == model)
        .map(|(_, targets)| targets.as_slice());
    let serving = match alias {
        Some(targets) => targets.iter().fold(EndpointSet::default(), |set, t| {
            set.union(catalog.serving(t.as_bytes()))
        }),
        None => catalog.serving(model),
    };
    if serving.is_empty() {
        return Err(ProxyError::ModelNotFound {
            model: String::from_utf8_lossy(model).into_owned(),
        });
    }
    let endpoints = &shard.upstreams.endpoints;
    if !endpoints
        .iter()
        .any(|ep| serving.contains(ep.index) && scope.admits(ep.kind))
    {
        // Served, but not by the kind of endpoint this route goes to.
        return Err(ProxyError::NoEndpoint { scope });
    }
    Ok((serving, alias))
}

/// The alias target to send to endpoint `ep`: the first it lists, else the first.
fn alias_target<'c>(shard: &Shard, targets: &'c [String], ep: usize) -> &'c str {
    let catalog = shard.catalog();
    targets
        .iter()
        .find(|t| catalog.listing(t.as_bytes()).contains(ep))
        .unwrap_or(&targets[0])
}

async fn proxy_request(
    shard: &Shard,
    client: &mut Client,
    scope: Scope,
    strip: usize,
    id: &RequestId,
    started: Instant,
) -> Next {
    let endpoints = &shard.upstreams.endpoints;
    let proxy = &shard.config.proxy;
    let now = health::now_ms();
    let max_attempts = if proxy.max_attempts == 0 {
        usize::MAX
    } else {
        proxy.max_attempts
    };
    let BodyFacts {
        key,
        opener,
        mut model,
    } = body_facts(shard, client);
    let mut want = Want {
        scope,
        serving: None,
        now,
    };
    let mut aliased: Option<&[String]> = None;
    if let Some(span) = model.clone() {
        match resolve_model(shard, scope, &client.body()[span]) {
            Ok((serving, alias)) => {
                want.serving = Some(serving);
                aliased = alias;
            }
            Err(e) => return send_error(shard, client, &e, id).await,
        }
    }
    // The key's home: its best backend among all the route's endpoints, up or down.
    let home = key.and_then(|k| {
        let in_scope = |i: usize| {
            scope.admits(endpoints[i].kind) && want.serving.is_none_or(|s| s.contains(i))
        };
        sticky::rendezvous(k.hash, endpoints, in_scope, 0.0)
    });
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;
    loop {
        if !tried.is_empty() && Instant::now() >= client.deadline {
            return send_error(shard, client, &ProxyError::RequestTimeout, id).await;
        }
        let candidate = if tried.len() < max_attempts {
            select_backend(shard, &want, &tried, key)
        } else {
            None
        };
        let Some(ep) = candidate else {
            let err = match last_error {
                None if want.serving.is_some() => ProxyError::ModelUnavailable {
                    model: String::from_utf8_lossy(&client.body()[model.unwrap_or_default()])
                        .into_owned(),
                },
                None => ProxyError::NoEndpoint { scope },
                Some(last) if tried.len() == 1 => last,
                Some(last) => ProxyError::AllFailed {
                    tried: tried
                        .iter()
                        .map(|&i| endpoints[i].name.to_string())
                        .collect(),
                    last: Box::new(last),
                },
            };
            return send_error(shard, client, &err, id).await;
        };
        if let (Some(targets), Some(span)) = (aliased, model.clone()) {
            // Send the endpoint the model name it knows.
            let target = alias_target(shard, targets, ep.index);
            let escaped = serde_json::to_string(target).expect("a string serializes");
            let text = &escaped.as_bytes()[1..escaped.len() - 1];
            client.rewrite_body(span.clone(), text);
            model = Some(span.start..span.start + text.len());
        }
        let failover = !tried.is_empty();
        tried.push(ep.index);
        let _in_flight = ep.begin_request();
        write_upstream_head(client, ep, scope, strip, proxy.forward_client_auth);
        // Built (and the sticky outcome counted) only for the attempt whose response is
        // relayed, however many attempts came before.
        let routed = || {
            let sticky = report_sticky(shard, key, opener, home, ep.index);
            Routed {
                ep,
                id,
                started,
                sticky,
                ttfb: started.elapsed(),
                model: model.clone(),
                strategy: if key.is_some() {
                    "sticky"
                } else {
                    proxy.balancer.name()
                },
                reason: match (sticky.outcome, want.serving.is_some()) {
                    (Outcome::Hit, _) => "sticky-hit",
                    (Outcome::Miss, _) => "sticky-new",
                    (Outcome::Repin, _) => "sticky-repin",
                    (Outcome::Disabled, true) => "model-match",
                    (Outcome::Disabled, false) => "any-endpoint",
                },
                failover,
                attempts: tried.len(),
            }
        };
        let failure = match forward(shard, client, ep).await {
            Ok(upstream) => {
                let status = client.response.status;
                if !proxy.retry_on_status.contains(&status) {
                    ep.health().record_success();
                    return stream_response(shard, client, upstream, &routed()).await;
                }
                // An answer we may retry: only if someone else can take the request;
                // otherwise the endpoint's own answer is the most useful one to pass on.
                let retry = tried.len() < max_attempts && has_candidate(shard, &want, &tried);
                record_failure(shard, ep, now);
                if !retry {
                    return stream_response(shard, client, upstream, &routed()).await;
                }
                // Dropping `upstream` closes it: its body is not worth draining.
                ProxyError::RetriedStatus {
                    endpoint: ep.name.to_string(),
                    status,
                }
            }
            Err(e) => {
                if let ProxyError::Connect { cause, .. } = &e {
                    shard.counters().endpoints[ep.index].connect_errors.bump();
                    // Passive detection: out of rotation on every shard until the
                    // checker sees it answer again.
                    if ep.health().mark_down() {
                        warning!("endpoint {} is down: {cause}", ep.name);
                    }
                }
                if e.retryable() {
                    record_failure(shard, ep, now);
                } else {
                    return send_error(shard, client, &e, id).await;
                }
                e
            }
        };
        shard.counters().endpoints[ep.index].retried.bump();
        debug!(
            "request {id}: endpoint {} failed, trying another: {failure:?}",
            ep.name
        );
        last_error = Some(failure);
    }
}

/// The sticky outcome of serving a request on `chosen`, counted.
fn report_sticky(
    shard: &Shard,
    key: Option<SessionKey>,
    opener: bool,
    home: Option<usize>,
    chosen: usize,
) -> StickyReport {
    let counters = shard.counters();
    let Some(key) = key else {
        if shard.config.sticky.enabled {
            counters.sticky_no_key.bump();
        }
        return StickyReport {
            outcome: Outcome::Disabled,
            source: None,
        };
    };
    let outcome = sticky::outcome(opener, home, chosen);
    match outcome {
        Outcome::Hit => counters.sticky_hits.bump(),
        Outcome::Miss => counters.sticky_misses.bump(),
        Outcome::Repin => counters.sticky_repins.bump(),
        Outcome::Disabled => {}
    }
    let source = KeySource::ALL
        .iter()
        .position(|&s| s == key.source)
        .unwrap_or(0);
    counters.sticky_by_source[source].bump();
    StickyReport {
        outcome,
        source: Some(key.source),
    }
}

fn record_failure(shard: &Shard, ep: &Endpoint, now: u64) {
    if ep.health().record_failure(now, &shard.breaker) {
        debug!("endpoint {}: circuit breaker open", ep.name);
    }
}

/// Picks an eligible endpoint: the key's rendezvous winner when the request has a
/// session key, the configured balancer's choice otherwise.
fn select_backend<'a>(
    shard: &'a Shard,
    want: &Want,
    tried: &[usize],
    key: Option<SessionKey>,
) -> Option<&'a Endpoint> {
    let endpoints = &shard.upstreams.endpoints;
    let eligible = |i: usize| want.admits(&endpoints[i], tried);
    let i = match key {
        Some(key) => sticky::rendezvous(
            key.hash,
            endpoints,
            eligible,
            shard.config.sticky.max_load_factor,
        )?,
        None => {
            let i = shard
                .config
                .proxy
                .balancer
                .pick(endpoints, eligible, shard.next_pick.get())?;
            shard.next_pick.set(i + 1);
            i
        }
    };
    Some(&endpoints[i])
}

fn has_candidate(shard: &Shard, want: &Want, tried: &[usize]) -> bool {
    shard
        .upstreams
        .endpoints
        .iter()
        .any(|ep| want.admits(ep, tried))
}

/// Writes the request line and headers for `ep` into `client.upstream_request`.
fn write_upstream_head(
    client: &mut Client,
    ep: &Endpoint,
    scope: Scope,
    strip: usize,
    forward_auth: bool,
) {
    let body_len = client.body().len();
    let target = UpstreamTarget {
        ep,
        scope,
        strip,
        // An endpoint with credentials of its own never gets the client's.
        forward_auth: forward_auth && ep.auth_line.is_none(),
    };
    let out = &mut client.upstream_request;
    out.clear();
    upstream_head(
        out,
        &client.conn.buf,
        &client.head,
        &client.peer_ip,
        &target,
        body_len,
    );
}

/// Where a request goes: the endpoint, and how its path is rewritten for it.
pub(crate) struct UpstreamTarget<'a> {
    pub(crate) ep: &'a Endpoint,
    pub(crate) scope: Scope,
    pub(crate) strip: usize,
    /// Whether the client's `Authorization`/`X-Api-Key`/`Api-Key` go along.
    pub(crate) forward_auth: bool,
}

/// Appends the head of the request for the endpoint: request line with the rewritten
/// path, `Host`, the client's end-to-end headers (credentials only if `forward_auth`),
/// `X-Forwarded-*`, the endpoint's own credentials, and the framing ringway produces
/// itself (`Content-Length`; the body is always sent whole).
pub(crate) fn upstream_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client_ip: &str,
    to: &UpstreamTarget<'_>,
    body_len: usize,
) {
    let ep = to.ep;
    out.extend_from_slice(head.method.get(buf));
    out.push(b' ');
    out.extend_from_slice(&ep.base_path);
    out.extend_from_slice(to.scope.upstream_prefix(ep.kind));
    out.extend_from_slice(&head.target.get(buf)[to.strip..]);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(&ep.authority);
    out.extend_from_slice(b"\r\n");
    let mut forwarded_for: Option<&[u8]> = None;
    for h in &head.headers {
        match h.kind {
            HeaderKind::Other | HeaderKind::RequestId | HeaderKind::SessionId
                if http1::is_end_to_end(buf, &head.headers, h, head.connection_names_headers) =>
            {
                http1::push_header(out, h.name.get(buf), h.value.get(buf));
            }
            HeaderKind::Authorization | HeaderKind::ApiKey
                if to.forward_auth
                    && http1::is_end_to_end(
                        buf,
                        &head.headers,
                        h,
                        head.connection_names_headers,
                    ) =>
            {
                http1::push_header(out, h.name.get(buf), h.value.get(buf));
            }
            HeaderKind::XForwardedFor => forwarded_for = Some(h.value.get(buf)),
            // Framing and routing headers are rewritten below; hop-by-hop ones stay here.
            _ => {}
        }
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prior) = forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if let Some(host) = head.host {
        http1::push_header(out, b"X-Forwarded-Host", host.get(buf));
    }
    http1::push_header(out, b"X-Real-IP", client_ip.as_bytes());
    if let Some(auth) = &ep.auth_line {
        out.extend_from_slice(auth.expose().as_bytes());
    }
    if body_len > 0 || head.body != Some(Framing::Empty) || expects_body(head.method.get(buf)) {
        http1::push_header_decimal(out, b"Content-Length", body_len as u64);
    }
    out.extend_from_slice(b"\r\n");
}

fn expects_body(method: &[u8]) -> bool {
    matches!(method, b"POST" | b"PUT" | b"PATCH")
}

/// Sends the request to `ep` and reads the response head, on a pooled connection if
/// there is one. A pooled connection that turns out closed is replaced once.
async fn forward(shard: &Shard, client: &mut Client, ep: &Endpoint) -> Result<Conn, ProxyError> {
    let pooled = shard.pool.take(ep.index);
    let mut reused = pooled.is_some();
    let mut conn = match pooled {
        Some(conn) => conn,
        None => connect(shard, ep).await?,
    };
    loop {
        match exchange(shard, client, &mut conn, ep).await {
            Ok(()) => return Ok(conn),
            Err(Exchange::ClosedEarly) if reused => {
                debug!("stale pooled connection to {}; reconnecting", ep.name);
                reused = false;
                conn = connect(shard, ep).await?;
            }
            Err(Exchange::ClosedEarly) => {
                return Err(ProxyError::ClosedBeforeResponse {
                    endpoint: ep.name.to_string(),
                });
            }
            Err(Exchange::Failed(e)) => return Err(e),
        }
    }
}

async fn connect(shard: &Shard, ep: &Endpoint) -> Result<Conn, ProxyError> {
    match upstream::connect(ep, shard.config.proxy.connect_timeout).await {
        Ok(stream) => Ok(Conn::new(stream, 16 * 1024)),
        Err(cause) => Err(ProxyError::Connect {
            endpoint: ep.name.to_string(),
            cause,
        }),
    }
}

enum Exchange {
    /// The connection closed or reset before a single response byte: the endpoint did
    /// not answer this request.
    ClosedEarly,
    Failed(ProxyError),
}

/// One request/response-head exchange on `conn`; the head is left in `client.response`
/// with its bytes (and any body bytes after it) in `conn.buf`.
async fn exchange(
    shard: &Shard,
    client: &mut Client,
    conn: &mut Conn,
    ep: &Endpoint,
) -> Result<(), Exchange> {
    let proxy = &shard.config.proxy;
    let response_deadline = Instant::now() + proxy.response_timeout;
    // Whichever comes first: this endpoint's time to answer, or the request's.
    let whole_request = client.deadline < response_deadline;
    let deadline = response_deadline.min(client.deadline);
    let left = || deadline.saturating_duration_since(Instant::now());
    let timeout = || {
        Exchange::Failed(if whole_request {
            ProxyError::RequestTimeout
        } else {
            ProxyError::ResponseTimeout {
                endpoint: ep.name.to_string(),
            }
        })
    };

    // Request out: head and small bodies in one write; large bodies straight from where
    // they were received.
    let body_len = client.body().len();
    let mut request = std::mem::take(&mut client.upstream_request);
    let head_len = request.len();
    let separate_body = body_len > COALESCE_BODY;
    if !separate_body {
        request.extend_from_slice(client.body());
    }
    let len = request.len();
    let write = http1::write_all(&mut conn.stream, request, len);
    let (written, mut request) = match monoio::time::timeout(left(), write).await {
        Ok(done) => done,
        Err(_) => return Err(timeout()),
    };
    request.truncate(head_len);
    client.upstream_request = request;
    if written.is_err() {
        return Err(Exchange::ClosedEarly);
    }
    if separate_body {
        write_body(client, conn, left())
            .await
            .map_err(|e| match e {
                IoFail::Timeout => timeout(),
                IoFail::Io(_) => Exchange::ClosedEarly,
            })?;
    }

    // Response head in, skipping interim 1xx responses.
    let limits = shard.config.server.head_limits();
    let was_head = client.head.method.get(&client.conn.buf) == b"HEAD";
    let mut received_any = false;
    loop {
        if !conn.buf.is_empty() {
            received_any = true;
            match http1::parse_response(&conn.buf, &limits, was_head, &mut client.response) {
                Ok(true) if client.response.status == 101 => {
                    return Err(bad_response(ep, "unexpected 101 Switching Protocols"));
                }
                Ok(true) if client.response.status < 200 => {
                    let len = client.response.len;
                    conn.consume(len);
                    continue;
                }
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(bad_response(ep, e.describe())),
            }
        }
        // A client that hangs up while the endpoint thinks (a long prefill) ends the
        // exchange: dropping the connection tells the endpoint to stop.
        let Some(read) = client.conn.unless_hung_up(conn.fill(left())).await else {
            return Err(Exchange::Failed(ProxyError::ClientGone));
        };
        match read {
            Ok(0) | Err(IoFail::Io(_)) if !received_any => return Err(Exchange::ClosedEarly),
            Ok(0) | Err(IoFail::Io(_)) => {
                return Err(bad_response(
                    ep,
                    "connection closed inside the response head",
                ));
            }
            Ok(_) => {}
            Err(IoFail::Timeout) => return Err(timeout()),
        }
    }
}

fn bad_response(ep: &Endpoint, what: &'static str) -> Exchange {
    Exchange::Failed(ProxyError::BadResponse {
        endpoint: ep.name.to_string(),
        what,
    })
}

/// Writes a large request body from the buffer it was received into.
async fn write_body(client: &mut Client, conn: &mut Conn, within: Duration) -> Result<(), IoFail> {
    let owned = client.owns_body;
    let (buf, range) = if owned {
        let len = client.own_body.len();
        (std::mem::take(&mut client.own_body), 0..len)
    } else {
        (
            std::mem::take(&mut client.conn.buf),
            client.head.len..client.request_len,
        )
    };
    use monoio::buf::IoBuf;
    use monoio::io::AsyncWriteRentExt;
    let write = conn.stream.write_all(buf.slice(range));
    let (result, slice) = monoio::time::timeout(within, write)
        .await
        .map_err(|_| IoFail::Timeout)?;
    let buf = slice.into_inner();
    if owned {
        client.own_body = buf;
    } else {
        client.conn.buf = buf;
    }
    result.map(drop).map_err(IoFail::Io)
}

// ---- stream_response ----

/// Sends the response head to the client, then relays the body as it arrives: each read
/// from the endpoint is written to the client before the next read, so streamed tokens
/// are never held back. The endpoint connection goes back to the pool only after a clean
/// end of the message.
async fn stream_response(
    shard: &Shard,
    client: &mut Client,
    mut upstream: Conn,
    routed: &Routed<'_>,
) -> Next {
    let (ep, id) = (routed.ep, routed.id);
    let counters = &shard.counters().endpoints[ep.index];
    let class = usize::from(client.response.status / 100).clamp(1, 5) - 1;
    counters.responses[class].bump();
    counters.ttfb.observe(routed.ttfb);
    if let Some(model) = routed.model.clone().and_then(|m| client.body().get(m)) {
        shard.counters().models.record(model, class);
    }
    if routed.failover {
        shard.counters().failovers.bump();
    }
    // Observed when the relay ends, however it ends.
    let _duration = Observe(&counters.duration, routed.started);
    client.entry = Entry {
        status: Some(client.response.status),
        endpoint: Some(ep.index),
        model: routed.model.clone(),
        ttfb: Some(routed.ttfb),
        attempts: routed.attempts,
        sticky: Some(routed.sticky.outcome.name()),
        bytes: 0,
    };
    let response = &client.response;
    let framing = response.body.unwrap_or(Framing::Empty);
    // An HTTP/1.0 client cannot receive chunked framing: decode it and close at the end.
    let decode = framing == Framing::Chunked && client.head.minor_version == 0;
    let keep_alive = client.head.keep_alive && framing != Framing::UntilClose && !decode;
    write_response_head(client, &upstream.buf, routed, keep_alive, decode);

    let mut body = BodyProgress::new(framing);
    let head_len = client.response.len;
    let mut clean = client.response.keep_alive;
    // Body bytes that came with the head go out in the same write.
    let mut pending = head_len;
    let result = body.advance(&upstream.buf[pending..], decode.then_some(&mut client.out));
    match result {
        Ok(n) if decode => pending += n,
        Ok(n) => {
            client
                .out
                .extend_from_slice(&upstream.buf[pending..pending + n]);
            pending += n;
        }
        Err(_) => return Next::Close,
    }
    clean &= pending == upstream.buf.len();
    let out = std::mem::take(&mut client.out);
    let len = out.len();
    let (written, out) = http1::write_all(&mut client.conn.stream, out, len).await;
    client.out = out;
    if written.is_err() {
        return Next::Close;
    }
    client.entry.bytes += len as u64;

    let idle = shard.config.proxy.stream_idle_timeout;
    while !body.is_done() {
        let left = client.deadline.saturating_duration_since(Instant::now());
        let Some(read) = client
            .conn
            .unless_hung_up(upstream.refill(idle.min(left)))
            .await
        else {
            // The client went away: dropping `upstream` closes it at once, so the
            // endpoint stops generating for nobody.
            debug!(
                "request {id}: the client went away; closing the connection to {}",
                ep.name
            );
            shard.counters().client_aborts.bump();
            return Next::Close;
        };
        let n = match read {
            Ok(0) if framing == Framing::UntilClose => {
                clean = false;
                break;
            }
            // Truncated or stalled: the client sees the cut (missing bytes or final
            // chunk, then close). Nothing else can be done once the head is out.
            Ok(0) => {
                debug!("request {id}: endpoint {} closed mid-response", ep.name);
                return Next::Close;
            }
            Err(IoFail::Timeout) if left < idle => {
                debug!("request {id}: cut at proxy.request_timeout_ms");
                return Next::Close;
            }
            Err(IoFail::Timeout) => {
                debug!(
                    "request {id}: endpoint {} went silent mid-response",
                    ep.name
                );
                return Next::Close;
            }
            Err(IoFail::Io(e)) => {
                debug!(
                    "request {id}: endpoint {} failed mid-response: {e}",
                    ep.name
                );
                return Next::Close;
            }
            Ok(n) => n,
        };
        let written = if decode {
            client.out.clear();
            match body.advance(&upstream.buf[..n], Some(&mut client.out)) {
                Ok(consumed) => clean &= consumed == n,
                Err(_) => return Next::Close,
            }
            let out = std::mem::take(&mut client.out);
            let len = out.len();
            let (written, out) = http1::write_all(&mut client.conn.stream, out, len).await;
            client.out = out;
            written
        } else {
            let consumed = match body.advance(&upstream.buf[..n], None) {
                Ok(consumed) => consumed,
                Err(_) => return Next::Close,
            };
            clean &= consumed == n;
            let buf = std::mem::take(&mut upstream.buf);
            let (written, buf) = http1::write_all(&mut client.conn.stream, buf, consumed).await;
            upstream.buf = buf;
            client.entry.bytes += consumed as u64;
            written
        };
        if written.is_err() {
            // The client went away (noticed on writing): as above.
            shard.counters().client_aborts.bump();
            return Next::Close;
        }
    }
    if clean {
        upstream.buf.clear();
        shard.pool.put(ep.index, upstream);
    }
    if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// The client's response head: the endpoint's status and end-to-end headers, ringway's
/// framing and connection headers, and the X-Olla-* headers.
fn write_response_head(
    client: &mut Client,
    upstream_buf: &[u8],
    routed: &Routed<'_>,
    keep_alive: bool,
    decode: bool,
) {
    let response = &client.response;
    let framing = response.body.unwrap_or(Framing::Empty);
    let out = &mut client.out;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    http1::push_decimal(out, u64::from(response.status));
    out.push(b' ');
    out.extend_from_slice(response.reason.get(upstream_buf));
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    for h in &response.headers {
        let copy = match h.kind {
            HeaderKind::ContentLength => {
                has_length = true;
                true
            }
            _ => http1::is_end_to_end(
                upstream_buf,
                &response.headers,
                h,
                response.connection_names_headers,
            ),
        };
        if copy {
            http1::push_header(out, h.name.get(upstream_buf), h.value.get(upstream_buf));
        }
    }
    let bodiless_status = response.status < 200 || response.status == 204 || response.status == 304;
    match framing {
        Framing::Chunked if !decode => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        Framing::Empty if !has_length && !bodiless_status && !client.head.is_head => {
            out.extend_from_slice(b"Content-Length: 0\r\n");
        }
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client.head.minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    push_olla_headers(out, routed.id, Some(routed.ep), routed.started);
    if let Some(span) = routed.model.clone() {
        let body = if client.owns_body {
            &client.own_body[..]
        } else {
            &client.conn.buf[client.head.len..client.request_len]
        };
        if let Some(model) = body.get(span) {
            http1::push_header(out, b"X-Olla-Model", model);
        }
    }
    http1::push_header(out, b"X-Olla-Routing-Strategy", routed.strategy.as_bytes());
    let decision: &[u8] = if routed.failover {
        b"failover"
    } else {
        b"routed"
    };
    http1::push_header(out, b"X-Olla-Routing-Decision", decision);
    http1::push_header(out, b"X-Olla-Routing-Reason", routed.reason.as_bytes());
    let sticky = routed.sticky;
    http1::push_header(
        out,
        b"X-Olla-Sticky-Session",
        sticky.outcome.name().as_bytes(),
    );
    let source = sticky.source.map_or("none", KeySource::name);
    http1::push_header(out, b"X-Olla-Sticky-Key-Source", source.as_bytes());
    if sticky.source == Some(KeySource::SessionHeader) {
        if let Some(session) = client.head.session_id {
            http1::push_header(out, b"X-Olla-Session-ID", session.get(&client.conn.buf));
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn push_olla_headers(out: &mut Vec<u8>, id: &RequestId, ep: Option<&Endpoint>, started: Instant) {
    http1::push_header(out, b"X-Olla-Request-ID", id.as_bytes());
    if let Some(ep) = ep {
        http1::push_header(out, b"X-Olla-Endpoint", ep.name.as_bytes());
        http1::push_header(out, b"X-Olla-Backend-Type", ep.kind.name().as_bytes());
    }
    out.extend_from_slice(b"X-Olla-Response-Time: ");
    http1::push_decimal(out, started.elapsed().as_millis() as u64);
    out.extend_from_slice(b"ms\r\n");
}

/// The access-log line of the request just answered.
fn access_line(
    client: &Client,
    shard: &Shard,
    format: AccessFormat,
    status: u16,
    id: &RequestId,
    started: Instant,
) -> String {
    let buf = &client.conn.buf;
    let text =
        |span: http1::Span| String::from_utf8_lossy(buf.get(span_range(span)).unwrap_or_default());
    let e = &client.entry;
    let model = e
        .model
        .clone()
        .and_then(|m| client.body().get(m))
        .map(String::from_utf8_lossy);
    let endpoint = e.endpoint.map(|i| &*shard.upstreams.endpoints[i].name);
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let total = ms(started.elapsed());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let time = crate::log::Timestamp(now.as_millis() as u64).to_string();
    match format {
        AccessFormat::Json => {
            let line = serde_json::json!({
                "time": time,
                "request_id": id.to_string(),
                "client": client.peer_ip,
                "method": text(client.head.method),
                "path": text(client.head.target),
                "model": model,
                "endpoint": endpoint,
                "status": status,
                "bytes": e.bytes,
                "ms": total,
                "ttfb_ms": e.ttfb.map(ms),
                "attempts": e.attempts,
                "sticky": e.sticky,
            });
            line.to_string() + "\n"
        }
        AccessFormat::Text => format!(
            "{time} {} {} \"{} {}\" {status} {} endpoint={} model={} ms={} ttfb_ms={} attempts={} sticky={}\n",
            id,
            client.peer_ip,
            text(client.head.method),
            text(client.head.target),
            e.bytes,
            endpoint.unwrap_or("-"),
            model.as_deref().unwrap_or("-"),
            total,
            e.ttfb.map_or("-".into(), |t| ms(t).to_string()),
            e.attempts,
            e.sticky.unwrap_or("-"),
        ),
    }
}

fn span_range(span: http1::Span) -> std::ops::Range<usize> {
    let (start, end) = span.bounds();
    start..end
}

/// Records the time since `.1` in a histogram when dropped.
struct Observe<'a>(&'a crate::metrics::Histogram, Instant);

impl Drop for Observe<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed());
    }
}

// ---- responses ringway writes itself ----

async fn send_error(shard: &Shard, client: &mut Client, err: &ProxyError, id: &RequestId) -> Next {
    let Some(rescue) = err.rescue() else {
        if matches!(err, ProxyError::ClientGone) {
            // nginx's "client closed request", for the access log.
            client.entry.status = Some(499);
            shard.counters().client_aborts.bump();
        }
        return Next::Close;
    };
    if rescue.status.is_server_error() {
        debug!(
            "request {id}: {} {}",
            rescue.status.as_u16(),
            rescue.message
        );
    }
    let body = error::error_body(&rescue);
    let keep_alive = rescue.keep_alive && client.head.keep_alive;
    client.entry.status = Some(rescue.status.as_u16());
    client.entry.bytes = body.len() as u64;
    shard.counters().own_errors[usize::from(rescue.status.is_server_error())].bump();
    respond(
        client,
        rescue.status,
        b"application/json",
        &body,
        id,
        keep_alive,
        Some(&rescue),
    )
    .await
}

/// Writes a complete response generated by ringway (errors, internal pages).
async fn respond(
    client: &mut Client,
    status: StatusCode,
    content_type: &[u8],
    body: &[u8],
    id: &RequestId,
    keep_alive: bool,
    rescue: Option<&Rescue>,
) -> Next {
    let keep_alive = keep_alive && client.head.keep_alive;
    let out = &mut client.out;
    out.clear();
    http1::push_status_line(out, status);
    http1::push_header(out, b"Content-Type", content_type);
    http1::push_header_decimal(out, b"Content-Length", body.len() as u64);
    if let Some(seconds) = rescue.and_then(|r| r.retry_after) {
        http1::push_header_decimal(out, b"Retry-After", u64::from(seconds));
    }
    if rescue.is_some_and(|r| r.challenge) {
        http1::push_header(out, b"WWW-Authenticate", b"Bearer realm=\"ringway\"");
    }
    http1::push_header(out, b"X-Olla-Request-ID", id.as_bytes());
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client.head.minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !client.head.is_head {
        out.extend_from_slice(body);
    }
    let out = std::mem::take(&mut client.out);
    let len = out.len();
    let (written, out) = http1::write_all(&mut client.conn.stream, out, len).await;
    client.out = out;
    if written.is_ok() && keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

// ---- request ids ----

/// `X-Olla-Request-ID`: the client's `X-Request-ID` when it is sane (1-128 printable
/// characters), otherwise generated: process tag, shard, per-shard sequence number.
pub(crate) struct RequestId {
    bytes: [u8; 128],
    len: u8,
}

impl RequestId {
    fn for_request(shard: &Shard, client: &Client) -> RequestId {
        if let Some(span) = client.head.request_id {
            let given = span.get(&client.conn.buf);
            if !given.is_empty() && given.len() <= 128 && given.iter().all(u8::is_ascii_graphic) {
                let mut id = RequestId {
                    bytes: [0; 128],
                    len: given.len() as u8,
                };
                id.bytes[..given.len()].copy_from_slice(given);
                return id;
            }
        }
        RequestId::generate(shard)
    }

    fn generate(shard: &Shard) -> RequestId {
        let seq = shard.next_request.get();
        shard.next_request.set(seq + 1);
        let mut id = RequestId {
            bytes: [0; 128],
            len: 0,
        };
        let mut push_hex = |v: u64, width: usize| {
            for i in (0..width).rev() {
                id.bytes[id.len as usize] = b"0123456789abcdef"[(v >> (i * 4)) as usize & 0xf];
                id.len += 1;
            }
        };
        push_hex(u64::from(shard.process_tag), 8);
        push_hex(shard.id as u64, 2);
        push_hex(seq, 10);
        id
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}
