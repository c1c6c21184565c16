//! The `attempt` phase: pick an endpoint, take a pooled connection or open one, forward
//! the request, read the response head; and the retry policy ([`judge`]): while nothing
//! has reached the client, a failed attempt is tried again on another endpoint.

use std::cell::Cell;
use std::ops::Range;
use std::time::{Duration, Instant};

use super::access::StickyReport;
use super::backpressure;
use super::client::{Client, Watched};
use super::error::ProxyError;
use super::heads::{self, UpstreamTarget};
use super::request::{Body, Request};
use super::route::{Forward, Want};
use crate::clock;
use crate::deadline::Deadline;
use crate::endpoint_set::EndpointSet;
use crate::http1::{self, BodyProgress, Framing, ResponseHead};
use crate::live::Live;
use crate::log::{debug, warning};
use crate::ratelimit::Refusal;
use crate::routing::Balancer;
use crate::routing::RoutingConfig;
use crate::routing::balancer::Candidate;
use crate::routing::decision::Decision;
use crate::routing::groups::{self, Group};
use crate::routing::sticky::{self, Outcome, SessionKey};
use crate::shard::Shard;
use crate::upstream::conn::{SendError, Sent};
use crate::upstream::{self, Endpoint, EndpointConn, InFlight};

/// Request bodies up to this size are sent in the same write as the head.
const COALESCE_BODY: usize = 64 * 1024;

/// The response an attempt got, for the `relay` phase.
pub(super) struct Upstream<'s> {
    pub(super) ep: &'s Endpoint,
    pub(super) conn: EndpointConn,
    pub(super) head: ResponseHead,
    /// When the response head arrived.
    pub(super) at: Instant,
    /// Endpoints tried, this one included.
    pub(super) attempts: usize,
    pub(super) sticky: StickyReport,
    /// The model as sent to this endpoint: its span in the body.
    pub(super) model: Option<Range<usize>>,
    /// The request counts as in flight on the endpoint until the relay ends.
    pub(super) _in_flight: InFlight<'s>,
}

/// What the retry policy makes of one attempt.
enum Verdict {
    /// Relay the endpoint's response: a success (`failed` false), or an answer listed in
    /// `proxy.retry_on_status` that no other endpoint can improve on.
    Relay {
        conn: EndpointConn,
        head: ResponseHead,
        failed: bool,
    },
    /// The endpoint failed before the client saw anything: try another.
    Retry(ProxyError),
    /// Answer the client with this error.
    Fail(ProxyError),
}

/// The retry policy. `another` says whether another endpoint could take the request.
fn judge(
    ep: &Endpoint,
    result: Result<(EndpointConn, ResponseHead), ProxyError>,
    retry_on_status: &[u16],
    another: impl FnOnce() -> bool,
) -> Verdict {
    match result {
        Ok((conn, head)) if !retry_on_status.contains(&head.status) => Verdict::Relay {
            conn,
            head,
            failed: false,
        },
        // The endpoint's own answer is the most useful one when nobody else can try.
        Ok((conn, head)) if !another() => Verdict::Relay {
            conn,
            head,
            failed: true,
        },
        // Dropping the connection closes it: the body is not worth draining.
        Ok((_, head)) => Verdict::Retry(ProxyError::RetriedStatus {
            endpoint: ep.name.to_string(),
            status: head.status,
        }),
        Err(e) if e.retryable() => Verdict::Retry(e),
        Err(e) => Verdict::Fail(e),
    }
}

/// Tries endpoints for `request` as `plan` says until one answers, or says why none did.
/// `live` is the request's generation (`request.live`), which the answer borrows from.
pub(super) async fn forward<'s>(
    shard: &Shard,
    live: &'s Live,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &mut Request,
    plan: &Forward<'_>,
) -> Result<Upstream<'s>, ProxyError> {
    let endpoints = &live.upstreams.endpoints;
    let proxy = &live.config.proxy;
    let max_attempts = match proxy.max_attempts {
        0 => usize::MAX,
        n => n,
    };
    let mut tried = EndpointSet::default();
    let mut attempts = 0;
    let mut model = plan.model.clone();
    let mut last_error: Option<ProxyError> = None;
    // Endpoints skipped at their rate limit (in `tried` too), and the soonest refusal.
    let mut limited: Option<(EndpointSet, Refusal)> = None;
    let mut now = request.started;
    loop {
        if attempts > 0 && now >= request.deadline {
            return Err(ProxyError::RequestTimeout);
        }
        let want = Want {
            scope: plan.scope,
            serving: plan.serving,
            now: clock::mono_ms(now),
        };
        let pick = if attempts < max_attempts {
            let placement = Placement {
                balancer: proxy.balancer,
                cursor: &shard.next_pick,
                max_load_factor: live.config.sticky.max_load_factor,
                group: plan.group,
                group_load_factor: live.config.prefix_groups.max_load_factor,
                cold: &plan.cold,
            };
            select_backend(endpoints, &want, &tried, plan.key, &placement)
        } else {
            None
        };
        let Some((ep, group_size)) = pick else {
            if let (None, Some((_, refusal))) = (&last_error, limited) {
                shard.counters().rate_limited[refusal.limit as usize].bump();
                return Err(ProxyError::RateLimited {
                    limit: refusal.limit,
                    retry_after_s: refusal.retry_after_s(),
                });
            }
            return Err(none_left(
                request,
                &client.conn.buf,
                plan,
                &attempted(tried, limited.as_ref().map(|(skipped, _)| skipped)),
                endpoints,
                last_error,
                live.config.routing,
            ));
        };
        if let Some(limits) = live.limits.as_deref().filter(|l| l.limits_endpoints()) {
            // At its limit: another endpoint, if any, takes the request.
            if let Err(refusal) = limits.take_endpoint(ep.bucket(), clock::mono_ns(now)) {
                tried.insert(ep.index);
                let (skipped, soonest) = limited.get_or_insert((EndpointSet::default(), refusal));
                skipped.insert(ep.index);
                if refusal.wait < soonest.wait {
                    *soonest = refusal;
                }
                continue;
            }
        }
        if let (Some(alias), Some(span)) = (&plan.alias, model.clone()) {
            // Send the endpoint the model name it knows.
            let escaped = serde_json::to_string(alias.target_for(ep.index)).expect("a string");
            let text = &escaped.as_bytes()[1..escaped.len() - 1];
            request.body.rewrite(&client.conn.buf, span.clone(), text);
            model = Some(span.start..span.start + text.len());
        }
        tried.insert(ep.index);
        attempts += 1;
        let body_len = request.body.bytes(&client.conn.buf).len();
        let in_flight = ep.begin_request(body_len);
        let target = UpstreamTarget {
            ep,
            scope: plan.scope,
            strip: plan.strip,
            // An endpoint with credentials of its own never gets the client's.
            forward_auth: proxy.forward_client_auth && !ep.has_auth,
            translated_path: plan.messages.as_ref().and_then(|m| m.upstream_path()),
        };
        client.to_endpoint.clear();
        heads::upstream_head(
            &mut client.to_endpoint,
            &client.conn.buf,
            &request.head,
            &client.headers,
            &client.peer_ip,
            &target,
            body_len,
        );
        let result = exchange(shard, client, deadline, request, ep, now).await;
        // The failure happened now, not when the request started: a breaker opened
        // after a 3 s connect timeout must stay open for its whole cool-down.
        now = Instant::now();
        if let Ok((conn, head)) = &result {
            backpressure::heed(ep, head.status, &client.response_headers, &conn.buf, now);
        }
        let another = || {
            let want = Want {
                now: clock::mono_ms(now),
                ..want
            };
            attempts < max_attempts && endpoints.iter().any(|e| want.admits(e, &tried))
        };
        match judge(ep, result, &proxy.retry_on_status, another) {
            Verdict::Relay { conn, head, failed } => {
                if failed && !backpressure::is_pacing(head.status) {
                    record_failure(live, ep, now);
                } else {
                    ep.health().record_success();
                }
                let home = plan.home.map(|i| endpoints[i].seen_tag());
                let mut sticky = sticky_report(shard, live, plan.key, home, ep.seen_tag(), now);
                if let (Some(group), Some(size)) = (plan.group, group_size) {
                    sticky.group = Some((group.key, size));
                    let counters = shard.counters();
                    counters.group_requests.bump();
                    counters.groups.record(group.key, size, group.size);
                }
                return Ok(Upstream {
                    ep,
                    conn,
                    head,
                    at: now,
                    attempts,
                    sticky,
                    model,
                    _in_flight: in_flight,
                });
            }
            Verdict::Retry(failure) => {
                if let ProxyError::Connect { cause, .. } = &failure {
                    ep.metrics().shard(shard.id).connect_errors.bump();
                    // Passive detection: out of rotation on every shard until the
                    // checker sees it answer again.
                    if ep.health().mark_down() {
                        warning!("endpoint {} is down: {cause}", ep.name);
                    }
                }
                let pacing = matches!(
                    failure,
                    ProxyError::RetriedStatus { status, .. } if backpressure::is_pacing(status)
                );
                if !pacing {
                    record_failure(live, ep, now);
                }
                ep.metrics().shard(shard.id).retried.bump();
                debug!("endpoint {} failed, trying another: {failure:?}", ep.name);
                last_error = Some(failure);
            }
            Verdict::Fail(e) => {
                if e.is_endpoints_fault() {
                    record_failure(live, ep, now);
                }
                return Err(e);
            }
        }
    }
}

/// The endpoints `tried` that were really tried: not skipped at their rate limit.
fn attempted(tried: EndpointSet, limited: Option<&EndpointSet>) -> EndpointSet {
    let Some(limited) = limited else {
        return tried;
    };
    let mut really = EndpointSet::default();
    tried
        .iter()
        .filter(|&i| !limited.contains(i))
        .for_each(|i| really.insert(i));
    really
}

/// Why no endpoint is left to try.
fn none_left(
    request: &Request,
    buf: &[u8],
    plan: &Forward<'_>,
    tried: &EndpointSet,
    endpoints: &[Endpoint],
    last_error: Option<ProxyError>,
    routing: RoutingConfig,
) -> ProxyError {
    match last_error {
        None if plan.serving.is_some() => {
            let body = request.body.bytes(buf);
            let model = plan
                .model
                .clone()
                .and_then(|m| body.get(m))
                .unwrap_or_default();
            ProxyError::ModelUnavailable {
                model: String::from_utf8_lossy(model).into_owned(),
                decision: Decision::missing(routing, true),
            }
        }
        None => ProxyError::NoEndpoint {
            scope: plan.scope,
            decision: None,
        },
        Some(last) if tried.len() == 1 => last,
        Some(last) => ProxyError::AllFailed {
            tried: tried
                .iter()
                .map(|i| endpoints[i].name.to_string())
                .collect(),
            last: Box::new(last),
        },
    }
}

/// How an endpoint is chosen among the eligible ones.
pub(crate) struct Placement<'a> {
    /// For requests without a session key.
    pub(crate) balancer: Balancer,
    /// Where the balancer starts scanning: just after the shard's previous pick.
    pub(crate) cursor: &'a Cell<usize>,
    /// `sticky.max_load_factor`.
    pub(crate) max_load_factor: f64,
    /// The request's prefix group, if it has a key and one.
    pub(crate) group: Option<Group>,
    /// `prefix_groups.max_load_factor`.
    pub(crate) group_load_factor: f64,
    /// Endpoints that would have to load the model: passed over while another is
    /// eligible.
    pub(crate) cold: &'a EndpointSet,
}

/// Picks an eligible endpoint: for a request with a session key, its member of its
/// prefix group, or without a group its rendezvous winner; else the configured
/// balancer's choice. Endpoints holding the model in memory come first. With a group,
/// also the size the group had.
pub(crate) fn select_backend<'e>(
    endpoints: &'e [Endpoint],
    want: &Want,
    tried: &EndpointSet,
    key: Option<SessionKey>,
    placement: &Placement<'_>,
) -> Option<(&'e Endpoint, Option<usize>)> {
    let eligible = |i: usize| want.admits(&endpoints[i], tried);
    let warm = |i: usize| eligible(i) && !placement.cold.contains(i);
    if placement.cold.is_empty() {
        return pick(endpoints, eligible, key, placement);
    }
    // A warm endpoint wins while one carries no more than twice the mean load: a model
    // load costs seconds, but one warm endpoint must not take a whole fleet's traffic.
    let limit = sticky::load_limit(endpoints, &eligible, COLD_LOAD_FACTOR);
    if (0..endpoints.len()).any(|i| warm(i) && endpoints[i].load() <= limit) {
        pick(endpoints, warm, key, placement)
    } else {
        pick(endpoints, eligible, key, placement)
    }
}

/// How loaded (times the mean, plus a request) the endpoints holding a model may be
/// before one that would have to load it takes requests too.
const COLD_LOAD_FACTOR: f64 = 2.0;

fn pick<'e>(
    endpoints: &'e [Endpoint],
    eligible: impl Fn(usize) -> bool,
    key: Option<SessionKey>,
    placement: &Placement<'_>,
) -> Option<(&'e Endpoint, Option<usize>)> {
    let (i, size) = match (key, placement.group) {
        (Some(key), Some(group)) => {
            let (i, size) = groups::place(
                group,
                key.hash,
                endpoints,
                eligible,
                placement.group_load_factor,
            )?;
            (i, Some(size))
        }
        (Some(key), None) => (
            sticky::rendezvous(key.hash, endpoints, eligible, placement.max_load_factor)?,
            None,
        ),
        (None, _) => {
            let i = placement
                .balancer
                .pick(endpoints, eligible, placement.cursor.get())?;
            placement.cursor.set(i + 1);
            (i, None)
        }
    };
    Some((&endpoints[i], size))
}

/// The sticky outcome of serving a request on `chosen` at `now`, from the seen-key
/// memory, which records it (`home` and `chosen` are `Endpoint::seen_tag`s).
fn sticky_report(
    shard: &Shard,
    live: &Live,
    key: Option<SessionKey>,
    home: Option<usize>,
    chosen: usize,
    now: Instant,
) -> StickyReport {
    let Some(key) = key else {
        return StickyReport {
            outcome: Outcome::Disabled,
            source: None,
            group: None,
        };
    };
    let seen = live
        .upstreams
        .seen
        .observe(key.hash, chosen, home, clock::mono_ms(now));
    if seen.inserted {
        shard.counters().sticky_insertions.bump();
    }
    if seen.evicted {
        shard.counters().sticky_evictions.bump();
    }
    StickyReport {
        outcome: seen.outcome,
        source: Some(key.source),
        group: None,
    }
}

fn record_failure(live: &Live, ep: &Endpoint, at: Instant) {
    if ep
        .health()
        .record_failure(clock::mono_ms(at), &live.breaker)
    {
        debug!("endpoint {}: circuit breaker open", ep.name);
    }
}

/// Sends the request to `ep` and reads the response head, on a pooled connection if
/// there is one. A pooled connection that turns out closed is replaced once.
async fn exchange(
    shard: &Shard,
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &mut Request,
    ep: &Endpoint,
    now: Instant,
) -> Result<(EndpointConn, ResponseHead), ProxyError> {
    let pooled = shard.pool.take(ep, now);
    let mut reused = pooled.is_some();
    let within = request.live.config.proxy.connect_timeout;
    let mut conn = match pooled {
        Some(conn) => conn,
        None => connect(ep, within).await?,
    };
    // `to_endpoint` holds the head; each send appends a small body after it.
    let head_len = client.to_endpoint.len();
    loop {
        match send(client, deadline, request, &mut conn, ep, now, head_len).await {
            // A 408 on a reused connection is the endpoint closing it as idle, sent as
            // our request went out: it never read the request (RFC 9110 §15.5.9), so
            // the request goes again on a fresh connection, as a close would.
            Ok(head) if head.status == 408 && reused => {
                debug!("{} timed out a pooled connection; reconnecting", ep.name);
                reused = false;
                conn = connect(ep, within).await?;
            }
            Ok(head) => return Ok((conn, head)),
            Err(Exchange::ClosedEarly) if reused => {
                debug!("stale pooled connection to {}; reconnecting", ep.name);
                reused = false;
                conn = connect(ep, within).await?;
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

async fn connect(ep: &Endpoint, within: Duration) -> Result<EndpointConn, ProxyError> {
    upstream::connect(ep, within)
        .await
        .map_err(|cause| ProxyError::Connect {
            endpoint: ep.name.to_string(),
            cause,
        })
}

enum Exchange {
    /// The connection closed or reset before a single response byte: the endpoint did
    /// not answer this request.
    ClosedEarly,
    Failed(ProxyError),
}

/// One request/response-head exchange on `conn`, all of it within one deadline: the
/// endpoint's time to answer (`proxy.response_timeout_ms`) or the request's, whichever
/// comes first. The response head is parsed into `client.response_headers`; its bytes
/// (and any body bytes after it) stay in `conn.buf`. `client.to_endpoint[..head_len]`
/// is the request head: a send again on a fresh connection sends it with the body
/// once, not after the body the first send appended.
async fn send(
    client: &mut Client,
    deadline: &mut Deadline<'_>,
    request: &mut Request,
    conn: &mut EndpointConn,
    ep: &Endpoint,
    now: Instant,
    head_len: usize,
) -> Result<ResponseHead, Exchange> {
    let response_due = now + request.live.config.proxy.response_timeout;
    let until = response_due.min(request.deadline);
    let timeout = || {
        Exchange::Failed(if request.deadline < response_due {
            ProxyError::RequestTimeout
        } else {
            ProxyError::ResponseTimeout {
                endpoint: ep.name.to_string(),
            }
        })
    };
    let Client {
        conn: client_conn,
        to_endpoint,
        response_headers,
        ..
    } = client;
    // Request out: head and small bodies in one write; a large body straight from
    // where it was received. While the endpoint does not take it, it is asked whether
    // it has answered meanwhile (a 401 or 413 before the body is read): then sending
    // stops and that answer is read below.
    let body = request.body.bytes(&client_conn.buf);
    let separate_body = body.len() > COALESCE_BODY;
    if to_endpoint.len() < head_len {
        // A write cut before (its buffer lost with it) leaves nothing to send again.
        return Err(Exchange::Failed(ProxyError::ClosedBeforeResponse {
            endpoint: ep.name.to_string(),
        }));
    }
    to_endpoint.truncate(head_len);
    if !separate_body {
        to_endpoint.extend_from_slice(body);
    }
    let len = to_endpoint.len();
    let mut sent = conn.send(deadline, (now, until), to_endpoint, 0..len).await;
    if separate_body && matches!(sent, Ok(Sent::All)) {
        sent = match &mut request.body {
            Body::Received(range) => {
                let buf = &mut client_conn.buf;
                conn.send(deadline, (now, until), buf, range.clone()).await
            }
            Body::Owned(bytes) => {
                let len = bytes.len();
                conn.send(deadline, (now, until), bytes, 0..len).await
            }
            Body::Empty => Ok(Sent::All),
        };
    }
    match sent {
        // A failed write is not the end: what the endpoint sent before it reset the
        // connection (an answer and a close) is still there to read.
        Ok(_) | Err(SendError::Failed) => {}
        Err(SendError::Elapsed) => return Err(timeout()),
    }
    let limits = request.live.config.server.head_limits();
    let was_head = request.head.is_head;
    let work = async {
        // Response head in, skipping interim 1xx responses.
        let mut received_any = false;
        loop {
            if !conn.buf.is_empty() {
                received_any = true;
                match http1::parse_response(&conn.buf, &limits, was_head, response_headers) {
                    Ok(Some(head)) if head.status == 101 => {
                        return Err(bad_response(ep, "unexpected 101 Switching Protocols"));
                    }
                    Ok(Some(head)) if head.status < 200 => conn.consume(head.len),
                    Ok(Some(head)) => return first_chunk_checked(ep, head, &conn.buf),
                    Ok(None) => {}
                    Err(e) => return Err(bad_response(ep, e.describe())),
                }
                if !conn.buf.is_empty() {
                    continue;
                }
            }
            match conn.fill().await {
                Ok(0) | Err(_) if !received_any => return Err(Exchange::ClosedEarly),
                Ok(0) | Err(_) => {
                    return Err(bad_response(
                        ep,
                        "connection closed inside the response head",
                    ));
                }
                Ok(_) => {}
            }
        }
    };
    // A client that hangs up while the endpoint thinks (a long prefill) ends the
    // exchange: dropping the connection tells the endpoint to stop.
    let max_buffered = request.live.config.server.max_header_bytes;
    match client_conn
        .watch_while(deadline, (now, until), max_buffered, work)
        .await
    {
        Watched::Done(result) => result,
        Watched::HungUp => Err(Exchange::Failed(ProxyError::ClientGone)),
        Watched::Elapsed => Err(timeout()),
    }
}

/// A chunked body's first bytes, when they came with the head, are checked before the
/// head is relayed: while nothing has reached the client, a malformed chunk is still a
/// 502 (and the endpoint's failure), not a reply cut off after its head.
fn first_chunk_checked(
    ep: &Endpoint,
    head: ResponseHead,
    buf: &[u8],
) -> Result<ResponseHead, Exchange> {
    if head.body != Framing::Chunked || buf.len() == head.len {
        return Ok(head);
    }
    let mut body = BodyProgress::new(Framing::Chunked, u64::MAX);
    match body.advance(&buf[head.len..], None) {
        Ok(_) => Ok(head),
        Err(_) => Err(bad_response(ep, "malformed chunked body")),
    }
}

fn bad_response(ep: &Endpoint, what: &'static str) -> Exchange {
    Exchange::Failed(ProxyError::BadResponse {
        endpoint: ep.name.to_string(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upstream::Upstreams;

    #[test]
    fn the_retry_policy() {
        let config = Config::from_toml(
            "[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"",
            "test",
        )
        .unwrap();
        let upstreams = Upstreams::new(&config.endpoints, &config.sticky, 1);
        let ep = &upstreams.endpoints[0];
        let connect = || ProxyError::Connect {
            endpoint: "a".into(),
            cause: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let timeout = || ProxyError::ResponseTimeout {
            endpoint: "a".into(),
        };
        assert!(matches!(
            judge(ep, Err(connect()), &[502], || true),
            Verdict::Retry(ProxyError::Connect { .. })
        ));
        assert!(matches!(
            judge(ep, Err(timeout()), &[502], || true),
            Verdict::Fail(ProxyError::ResponseTimeout { .. })
        ));
        assert!(matches!(
            judge(ep, Err(ProxyError::ClientGone), &[502], || true),
            Verdict::Fail(ProxyError::ClientGone)
        ));
    }
}
