//! The `admission` step, between `request` and `route`, for `[cors]` and `[rate_limits]`
//! (one branch each, and nothing more, while they are off). It answers a CORS preflight
//! itself, takes the request's rate-limit token, and writes the lines every answer to
//! the request carries (`X-RateLimit-*`, CORS) into the connection's [`OwnLines`].
//!
//! Limits apply to the requests ringway forwards (global and per client) and to
//! `/internal/health` (per client, its own rate); its other pages are not limited, as in
//! Olla. They are checked before the API key and before the body is looked at, as
//! Olla's limiter wraps its handlers: a flood of refused requests (wrong key, unknown
//! model) is limited like any other, and guessing keys is too.

use std::net::IpAddr;

use super::client::Client;
use super::client::OwnLines;
use super::error::ProxyError;
use super::request::Request;
use crate::clock;
use crate::http1::{self, Header, HeaderKind, RequestHead};
use crate::live::Live;
use crate::ratelimit::{self, Quota, RateLimiter, Verdict};
use crate::routing::{Internal, Route};
use crate::shard::Shard;

/// What becomes of a request before it is routed.
pub(super) enum Admission {
    /// Route it.
    Admitted,
    /// A CORS preflight: answer it with the connection's own lines.
    Preflight,
    /// Beyond a rate limit.
    Refused(ProxyError),
}

/// Admits `request`, whose target `routing::classify` made `route` of, writing its
/// lines into `client.own_lines`.
pub(super) fn admit(
    shard: &Shard,
    client: &mut Client,
    request: &Request,
    route: Route,
) -> Admission {
    let Client {
        conn,
        headers,
        peer,
        own_lines,
        ..
    } = client;
    let buf = &conn.buf;
    let head = &request.head;
    own_lines.clear();
    let live = &request.live;
    if let Some(cors) = &live.cors {
        let method = head.method.get(buf);
        let origin = value(headers, buf, HeaderKind::Origin);
        if method == b"OPTIONS" {
            if let Some(asked) = value(headers, buf, HeaderKind::AccessControlRequestMethod) {
                let asked_headers = value(headers, buf, HeaderKind::AccessControlRequestHeaders);
                cors.preflight(origin, asked, asked_headers, &mut own_lines.bytes);
                return Admission::Preflight;
            }
        }
        cors.actual(origin, method, &mut own_lines.bytes);
        own_lines.cors = true;
    }
    let Some(limits) = live.limits.as_deref().filter(|l| l.limits_clients()) else {
        return Admission::Admitted;
    };
    let health = match route {
        Route::Forward { .. } => false,
        Route::Internal(Internal::Health) => true,
        _ => return Admission::Admitted,
    };
    let ip = client_ip(limits, peer.ip(), headers, buf);
    let now = clock::mono_ns(request.started);
    let verdict = if health {
        limits.admit_health(ip, now)
    } else {
        limits.admit_request(ip, now)
    };
    match verdict {
        Verdict::Unlimited => Admission::Admitted,
        Verdict::Admitted(quota) => {
            push_quota(own_lines, &quota, now);
            Admission::Admitted
        }
        Verdict::Refused(refusal) => {
            push_quota(own_lines, &refusal.quota, now);
            shard.counters().rate_limited[refusal.limit as usize].bump();
            Admission::Refused(ProxyError::RateLimited {
                limit: refusal.limit,
                retry_after_s: refusal.retry_after_s(),
            })
        }
    }
}

/// The lines for the answer to a request refused while it was read (`head` if its head
/// was): CORS only, no limit was consulted.
pub(super) fn refused_while_read(live: &Live, client: &mut Client, head: Option<&RequestHead>) {
    let Client {
        conn,
        headers,
        own_lines,
        ..
    } = client;
    own_lines.clear();
    if let (Some(cors), Some(head)) = (&live.cors, head) {
        let origin = value(headers, &conn.buf, HeaderKind::Origin);
        cors.actual(origin, head.method.get(&conn.buf), &mut own_lines.bytes);
        own_lines.cors = true;
    }
}

/// The first value of a header of `kind`, trimmed.
fn value<'b>(headers: &[Header], buf: &'b [u8], kind: HeaderKind) -> Option<&'b [u8]> {
    let h = headers.iter().find(|h| h.kind == kind)?;
    Some(h.value.get(buf).trim_ascii())
}

/// The client's address: the peer's, unless it is a trusted proxy
/// (`rate_limits.trust_proxy_headers`): then the one it forwards for.
fn client_ip(limits: &RateLimiter, peer: IpAddr, headers: &[Header], buf: &[u8]) -> IpAddr {
    let peer = peer.to_canonical();
    match limits.trusted_proxies() {
        Some(trusted) if ratelimit::is_trusted(trusted, peer) => {
            let values = |kind| {
                headers
                    .iter()
                    .filter(move |h| h.kind == kind)
                    .map(move |h| h.value.get(buf))
            };
            let forwarded = values(HeaderKind::XForwardedFor).rev();
            ratelimit::forwarded_client(peer, trusted, forwarded, || {
                values(HeaderKind::XRealIp).next()
            })
        }
        _ => peer,
    }
}

/// `X-RateLimit-Limit` (requests a minute), `-Remaining` (requests admitted right now)
/// and `-Reset` (the Unix time, in seconds, at which the bucket is full again), as
/// Olla writes them; `now` is when the bucket was read (`clock::mono_ns`). Composed in
/// place and appended in one copy: they go on every answer.
fn push_quota(own: &mut OwnLines, quota: &Quota, now: u64) {
    let reset = clock::unix_ns_of(now.saturating_add(quota.full_in)).div_ceil(1_000_000_000);
    let mut lines = [0u8; 128];
    let mut len = 0;
    let mut digits = [0u8; 20];
    for (name, n) in [
        (&b"X-RateLimit-Limit: "[..], u64::from(quota.limit)),
        (b"X-RateLimit-Remaining: ", u64::from(quota.remaining)),
        (b"X-RateLimit-Reset: ", reset),
    ] {
        for part in [name, http1::decimal(n, &mut digits), b"\r\n"] {
            lines[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
    }
    own.bytes.extend_from_slice(&lines[..len]);
    own.rate_limit = true;
}
