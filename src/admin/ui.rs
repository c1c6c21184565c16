//! The dashboard, `/internal/ui/`: one page (plain HTML, CSS and JavaScript in
//! `admin/ui/`, embedded in the binary, nothing fetched from elsewhere) and the one compact
//! JSON document it polls every second, `/internal/ui/data`. An operator page: loopback
//! clients only unless `server.internal_access = "any"`, and the API key when one is set.
//!
//! Why polling rather than a server-sent event stream: a poll is an ordinary page
//! request, rendered on whichever shard accepted it in a few tens of microseconds, and
//! holds nothing between polls; a stream would keep a connection and a timer on a shard
//! for as long as a tab stays open, count against `server.max_connections`, and need its
//! own rules for drain and idle timeouts. The page computes every rate and percentile
//! from two consecutive polls (counters summed over shards, histogram buckets), so the
//! server keeps no history and the request path does no work for the dashboard.
//!
//! Every answer carries an `ETag` (the XXH3 hash of its body): the page sends it back in
//! `If-None-Match` and an unchanged document answers 304 with no body. The data has no
//! clock in it, so a quiet proxy answers 304 until something changes.

use http::StatusCode;
use serde_json::{Value, json};
use xxhash_rust::xxh3::xxh3_64;

use super::Answer;
use crate::clock::now_ms;
use crate::metrics::BUCKETS;
use crate::shard::Shard;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The page may load only its own script, style and data: no inline script, nothing from
/// another origin (endpoint and model names come from the backends and are only ever
/// written as text, but a policy keeps a mistake from becoming a script).
const POLICY: &[u8] = b"Content-Security-Policy: default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'\r\n";

/// `/internal/ui`, `/internal/ui/` and what lies under it.
pub(super) fn render(shard: &Shard, target: &[u8], if_none_match: Option<&[u8]>) -> Answer {
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let rest = path.strip_prefix(b"/internal/ui").unwrap_or_default();
    let (content_type, body): (&'static [u8], Vec<u8>) = match rest {
        b"" | b"/" | b"/index.html" => (b"text/html; charset=utf-8", INDEX.into()),
        b"/app.js" => (b"text/javascript; charset=utf-8", SCRIPT.into()),
        b"/style.css" => (b"text/css; charset=utf-8", STYLE.into()),
        b"/data" => (
            b"application/json",
            serde_json::to_vec(&data(shard)).expect("a JSON value serializes"),
        ),
        _ => {
            return Answer {
                status: StatusCode::NOT_FOUND,
                content_type: b"application/json",
                body: br#"{"error":{"message":"no such dashboard file","type":"not_found"}}"#
                    .to_vec(),
                lines: Vec::new(),
            };
        }
    };
    let tag = format!("\"{:016x}\"", xxh3_64(&body));
    let mut lines = Vec::with_capacity(POLICY.len() + 128);
    lines.extend_from_slice(b"ETag: ");
    lines.extend_from_slice(tag.as_bytes());
    // Cached, but asked about each time: the answer is a 304 while nothing changed.
    lines.extend_from_slice(b"\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n");
    lines.extend_from_slice(POLICY);
    if if_none_match.is_some_and(|asked| matches(asked, tag.as_bytes())) {
        return Answer {
            status: StatusCode::NOT_MODIFIED,
            content_type,
            body: Vec::new(),
            lines,
        };
    }
    Answer {
        status: StatusCode::OK,
        content_type,
        body,
        lines,
    }
}

/// Whether an `If-None-Match` value (a list of tags, or `*`) names `tag` (weak
/// comparison, as RFC 9110 §13.1.2 asks).
fn matches(asked: &[u8], tag: &[u8]) -> bool {
    asked.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == tag
    })
}

/// `/internal/ui/data`: everything the page shows, in one document. Totals only (the
/// page turns two polls into rates); times are Unix milliseconds.
fn data(shard: &Shard) -> Value {
    let live = shard.live_now();
    let m = &shard.metrics;
    let eps = &live.upstreams.endpoints;
    let catalog = shard.catalog();
    let config = &live.config;
    let now = now_ms();
    let groups = groups_by_endpoint(shard);
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|ep| {
            let i = ep.index;
            let h = ep.health();
            let s = h.snapshot();
            let responses: Vec<u64> = (0..5)
                .map(|class| eps[i].metrics().total(|c| &c.responses[class]))
                .collect();
            let list = catalog.lists[i].as_ref();
            json!({
                "name": &*ep.name,
                "url": &*ep.url,
                "type": ep.kind.name(),
                "priority": ep.priority,
                "status": h.status(now).name(),
                "in_flight": ep.in_flight(),
                "queued": ep.queued(),
                "requests": responses.iter().sum::<u64>(),
                "errors": responses[4] + eps[i].metrics().total(|c| &c.connect_errors),
                "retried": eps[i].metrics().total(|c| &c.retried),
                "ttfb": (0..=BUCKETS.len())
                    .map(|b| ep.metrics().total(|c| &c.ttfb.buckets[b]))
                    .collect::<Vec<u64>>(),
                "failures": s.consecutive_failures,
                "check_at": s.last_check_unix_ms,
                "check_status": s.last_check_status,
                "check_ms": f64::from(s.last_check_latency_us) / 1000.0,
                "changed_at": s.last_change_unix_ms,
                "models": list.map(Vec::len),
                // What it holds in memory; null when it does not say.
                "loaded": catalog.held_by(i).map(|held| held.len()),
                "groups": groups.as_ref().map(|g| &g[i]),
            })
        })
        .collect();
    let aliases_of = |name: &str| -> Vec<&str> {
        config
            .model_aliases
            .iter()
            .filter(|(_, targets)| targets.iter().any(|t| t == name))
            .map(|(alias, _)| alias.as_str())
            .collect()
    };
    let models: Vec<Value> = catalog
        .models()
        .into_iter()
        .map(|(name, on)| {
            let on: Vec<usize> = (0..eps.len()).filter(|&i| on.contains(i)).collect();
            let held = catalog.holding(name.as_bytes());
            let loaded: Vec<usize> = (0..eps.len()).filter(|&i| held.contains(i)).collect();
            json!({ "name": name, "on": on, "loaded": loaded, "aliases": aliases_of(name) })
        })
        .collect();
    let events: Vec<Value> = live
        .upstreams
        .events
        .recent()
        .into_iter()
        .map(|e| {
            json!({
                "at": e.at_unix_ms,
                "kind": e.kind.name(),
                "endpoint": e.endpoint.as_deref(),
                "text": &*e.text,
            })
        })
        .collect();
    let relayed: u64 = eps
        .iter()
        .flat_map(|ep| (0..5).map(move |class| ep.metrics().total(|c| &c.responses[class])))
        .sum();
    let relayed_5xx: u64 = eps
        .iter()
        .map(|ep| ep.metrics().total(|c| &c.responses[4]))
        .sum();
    let own = [m.total(|c| &c.own_errors[0]), m.total(|c| &c.own_errors[1])];
    // The fleet's time to first byte: every endpoint's buckets added up.
    let ttfb: Vec<u64> = (0..=BUCKETS.len())
        .map(|b| {
            eps.iter()
                .map(|ep| ep.metrics().total(|c| &c.ttfb.buckets[b]))
                .sum()
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "driver": shard.driver,
        "shards": m.shards(),
        "balancer": config.proxy.balancer.name(),
        "sticky": config.sticky.enabled,
        "buckets": BUCKETS,
        "fleet": {
            // Requests answered by an endpoint or by ringway's own error; not the pages.
            "requests": relayed + own[0] + own[1],
            "errors": relayed_5xx + own[1],
            "client_errors": own[0],
            "in_flight": eps.iter().map(|e| u64::from(e.in_flight())).sum::<u64>(),
            "failovers": m.total(|c| &c.failovers),
            "ttfb": ttfb,
            "sticky": {
                "hit": m.total(|c| &c.sticky_hits),
                "miss": m.total(|c| &c.sticky_misses),
                "repin": m.total(|c| &c.sticky_repins),
                "no_key": m.total(|c| &c.sticky_no_key),
            },
        },
        "endpoints": endpoints,
        "models": models,
        "events": events,
    })
}

/// Per endpoint, the prefix groups (`[prefix_groups]`) it is a member of among the
/// busiest placed in recently, as short keys; `None` while prefix groups are off.
fn groups_by_endpoint(shard: &Shard) -> Option<Vec<Vec<String>>> {
    let live = shard.live_now();
    if !live.config.prefix_groups.enabled {
        return None;
    }
    let eps = &live.upstreams.endpoints;
    let now = crate::clock::mono_ms(std::time::Instant::now());
    let mut by_endpoint = vec![Vec::new(); eps.len()];
    let all = shard.metrics.all().map(|c| &c.groups);
    for g in crate::metrics::groups::busiest(all, 32) {
        let members = crate::routing::groups::members(g.key, g.size, eps, |i| {
            eps[i].health().is_routable(now)
        });
        for i in members {
            by_endpoint[i].push(format!("{:08x}", g.key >> 32));
        }
    }
    Some(by_endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let tag = b"\"00ff\"";
        assert!(matches(b"\"00ff\"", tag));
        assert!(matches(b"\"aa\", W/\"00ff\"", tag));
        assert!(matches(b"*", tag));
        assert!(!matches(b"\"00fe\"", tag));
        assert!(!matches(b"", tag));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in [INDEX, SCRIPT, STYLE] {
            for remote in ["http://", "https://", "//cdn", "@import"] {
                assert!(!asset.contains(remote), "an asset names {remote}");
            }
        }
        assert!(
            !INDEX.contains("<script>"),
            "no inline script (the policy forbids it)"
        );
        assert!(
            !INDEX.contains("style="),
            "no inline style (the policy forbids it)"
        );
    }
}
