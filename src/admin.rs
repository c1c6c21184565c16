//! Pages ringway answers itself (the `route` phase's `Plan::Page`): liveness,
//! version, the merged model lists (OpenAI, Ollama and Olla shapes) and the operator
//! status pages, in the JSON shapes Olla's clients and scripts read. Olla's model pages
//! are in `admin/models.rs`, the per-model statistics in `admin/model_stats.rs`, the
//! process page in `admin/process.rs`.

mod anthropic;
mod format;
mod model_stats;
mod models;
mod process;
mod reload;
mod translators;
mod ui;

use http::StatusCode;
use serde_json::{Value, json};

use crate::clock::{now_ms, unix_ms};
use crate::endpoint_set::EndpointSet;
use crate::log::Timestamp;
use crate::metrics::{Counter, EndpointCounters, Histogram, ShardCounters};
use crate::routing::{Internal, KeySource, Scope};
use crate::shard::Shard;
use crate::upstream::health::Status;

/// Picks one of an endpoint's counters (or histograms) for a metrics family.
type PerEndpoint<T> = fn(&EndpointCounters) -> &T;
/// Picks one of a shard's own counters.
type PerShard = fn(&ShardCounters) -> &Counter;

const JSON: &[u8] = b"application/json";

pub(crate) use self::reload::reload as reload_config;

/// An internal page's answer.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static [u8],
    pub(crate) body: Vec<u8>,
    /// Header lines of the page's own, whole (`ETag`, `Cache-Control`); usually none.
    pub(crate) lines: Vec<u8>,
}

/// The answer to an internal page; `target` is the request's path and query, `body` what
/// the client sent, `if_none_match` its `If-None-Match` (the dashboard answers 304).
pub(crate) fn render(
    page: Internal,
    shard: &Shard,
    target: &[u8],
    body: &[u8],
    if_none_match: Option<&[u8]>,
) -> Answer {
    if matches!(page, Internal::Ui | Internal::UiData) {
        return ui::render(shard, target, if_none_match);
    }
    let (status, content_type, body) = render_json(page, shard, target, body);
    Answer {
        status,
        content_type,
        body,
        lines: Vec::new(),
    }
}

fn render_json(
    page: Internal,
    shard: &Shard,
    target: &[u8],
    body: &[u8],
) -> (StatusCode, &'static [u8], Vec<u8>) {
    let query = target.splitn(2, |&b| b == b'?').nth(1).unwrap_or_default();
    match page {
        Internal::AnthropicModels => return (StatusCode::OK, JSON, anthropic::models(shard)),
        Internal::AnthropicCountTokens => {
            let (status, text) = anthropic::count_tokens(body);
            return (status, JSON, text);
        }
        _ => {}
    }
    if page == Internal::Metrics {
        return (
            StatusCode::OK,
            b"text/plain; version=0.0.4",
            prometheus(shard).into_bytes(),
        );
    }
    let body = match page {
        Internal::Metrics => unreachable!("rendered above"),
        Internal::AnthropicModels | Internal::AnthropicCountTokens => {
            unreachable!("rendered above")
        }
        Internal::DebugPanic | Internal::Reload => unreachable!("answered by the connection loop"),
        Internal::Ui | Internal::UiData => unreachable!("rendered by render"),
        Internal::Status => status(shard),
        Internal::Models => status_models(shard),
        Internal::ModelsOpenAi(scope) => models_openai(shard, scope),
        Internal::ModelsOllama(scope) => models_ollama(shard, scope),
        Internal::ModelsUnified => return models::list(shard, query),
        Internal::ModelById => return models::by_id(shard, target),
        Internal::ModelsLmStudio => models::lmstudio(shard),
        Internal::ModelStats => model_stats::page(shard, query),
        Internal::Process => process::page(shard),
        // Liveness only: the process is up and this shard answers.
        Internal::Health => json!({ "status": "healthy" }),
        Internal::Version => json!({
            "name": "ringway",
            "version": env!("CARGO_PKG_VERSION"),
            "driver": shard.driver,
        }),
        Internal::Endpoints => endpoints(shard),
        Internal::StickyStats => sticky_stats(shard),
        Internal::TranslatorStats => translators::page(shard),
    };
    (
        StatusCode::OK,
        JSON,
        serde_json::to_vec(&body).expect("a JSON value serializes"),
    )
}

/// `/internal/metrics`: every shard's counters summed, in Prometheus text format.
fn prometheus(shard: &Shard) -> String {
    let live = shard.live_now();
    use std::fmt::Write;
    let m = &shard.metrics;
    let eps = &live.upstreams.endpoints;
    let now = now_ms();
    let mut out = String::with_capacity(8192);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "ringway_requests_total",
        "counter",
        "Requests received (parsed heads).",
    );
    let _ = writeln!(out, "ringway_requests_total {}", m.total(|c| &c.requests));
    family(
        &mut out,
        "ringway_responses_total",
        "counter",
        "Responses relayed from endpoints, by status class.",
    );
    for ep in eps.iter() {
        for (class, label) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = ep.metrics().total(|c| &c.responses[class]);
            let _ = writeln!(
                out,
                "ringway_responses_total{{endpoint=\"{}\",status=\"{label}\"}} {n}",
                ep.name
            );
        }
    }
    family(
        &mut out,
        "ringway_model_responses_total",
        "counter",
        "Responses relayed for each model of the catalogue, by status class.",
    );
    for (name, _) in shard.catalog().models() {
        for (class, label) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n: u64 = (0..m.shards())
                .map(|i| m.shard(i).models.get(name.as_bytes(), class))
                .sum();
            if n > 0 {
                let _ = writeln!(
                    out,
                    "ringway_model_responses_total{{model=\"{}\",status=\"{label}\"}} {n}",
                    name.replace('"', "\\\"")
                );
            }
        }
    }
    family(
        &mut out,
        "ringway_errors_total",
        "counter",
        "Error responses written by ringway itself, by status class.",
    );
    let _ = writeln!(
        out,
        "ringway_errors_total{{status=\"4xx\"}} {}",
        m.total(|c| &c.own_errors[0])
    );
    let _ = writeln!(
        out,
        "ringway_errors_total{{status=\"5xx\"}} {}",
        m.total(|c| &c.own_errors[1])
    );
    if let Some(log) = &shard.access_log {
        family(
            &mut out,
            "ringway_access_log_dropped_total",
            "counter",
            "Access-log lines dropped because the writer fell behind.",
        );
        let _ = writeln!(out, "ringway_access_log_dropped_total {}", log.dropped());
    }
    family(
        &mut out,
        "ringway_failovers_total",
        "counter",
        "Requests served after failing over from another endpoint.",
    );
    let _ = writeln!(out, "ringway_failovers_total {}", m.total(|c| &c.failovers));
    let totals: [(&str, &str, PerShard); 2] = [
        (
            "ringway_client_aborts_total",
            "Clients that went away before their response was complete (the endpoint connection is closed at once).",
            |c| &c.client_aborts,
        ),
        (
            "ringway_refused_connections_total",
            "Connections answered 503 at server.max_connections.",
            |c| &c.refused_connections,
        ),
    ];
    for (name, help, counter) in totals {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", m.total(counter));
    }
    family(
        &mut out,
        "ringway_rate_limited_total",
        "counter",
        "Requests answered 429 by [rate_limits], by the limit they ran into.",
    );
    for limit in crate::ratelimit::Limit::ALL {
        let n = m.total(|c| &c.rate_limited[limit as usize]);
        let _ = writeln!(
            out,
            "ringway_rate_limited_total{{limit=\"{}\"}} {n}",
            limit.name()
        );
    }
    let per_endpoint: [(&str, &str, PerEndpoint<Counter>); 2] = [
        (
            "ringway_upstream_connect_errors_total",
            "Connections to the endpoint that could not be opened.",
            |e| &e.connect_errors,
        ),
        (
            "ringway_retries_total",
            "Attempts that failed on the endpoint and were retried on another.",
            |e| &e.retried,
        ),
    ];
    for (name, help, counter) in per_endpoint {
        family(&mut out, name, "counter", help);
        for ep in eps.iter() {
            let n = ep.metrics().total(|c| counter(c));
            let _ = writeln!(out, "{name}{{endpoint=\"{}\"}} {n}", ep.name);
        }
    }
    family(
        &mut out,
        "ringway_in_flight",
        "gauge",
        "Requests in flight to the endpoint, all shards.",
    );
    for ep in eps.iter() {
        let _ = writeln!(
            out,
            "ringway_in_flight{{endpoint=\"{}\"}} {}",
            ep.name,
            ep.in_flight()
        );
    }
    family(
        &mut out,
        "ringway_endpoint_up",
        "gauge",
        "1 when the endpoint is in rotation (healthy, breaker closed).",
    );
    for ep in eps.iter() {
        let up = u8::from(ep.health().status(now) == Status::Healthy);
        let _ = writeln!(out, "ringway_endpoint_up{{endpoint=\"{}\"}} {up}", ep.name);
    }
    family(
        &mut out,
        "ringway_sticky_total",
        "counter",
        "Sticky-session outcomes.",
    );
    for (outcome, counter) in [
        ("hit", (|c: &ShardCounters| &c.sticky_hits) as PerShard),
        ("miss", |c| &c.sticky_misses),
        ("repin", |c| &c.sticky_repins),
        ("no_key", |c| &c.sticky_no_key),
    ] {
        let _ = writeln!(
            out,
            "ringway_sticky_total{{outcome=\"{outcome}\"}} {}",
            m.total(counter)
        );
    }
    translators::prometheus(&mut out, m);
    let histograms: [(&str, &str, PerEndpoint<Histogram>); 2] = [
        (
            "ringway_time_to_first_byte_seconds",
            "From the request's arrival to the endpoint's response head.",
            |e| &e.ttfb,
        ),
        (
            "ringway_request_duration_seconds",
            "From the request's arrival to the end of the response.",
            |e| &e.duration,
        ),
    ];
    for (name, help, hist) in histograms {
        family(&mut out, name, "histogram", help);
        for ep in eps.iter() {
            let mut cumulative = 0;
            for (i, bound) in crate::metrics::BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()])
                .enumerate()
            {
                cumulative += ep.metrics().total(|c| &hist(c).buckets[i]);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{endpoint=\"{}\",le=\"{bound}\"}} {cumulative}",
                    ep.name
                );
            }
            let sum = ep.metrics().total(|c| &hist(c).sum_us) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{endpoint=\"{}\"}} {sum}", ep.name);
            let _ = writeln!(out, "{name}_count{{endpoint=\"{}\"}} {cumulative}", ep.name);
        }
    }
    out
}

fn query_param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (k == name).then(|| &v[1..])
    })
}

/// The endpoints that are up and in `scope`.
fn available(shard: &Shard, scope: Scope) -> EndpointSet {
    let live = shard.live_now();
    let mut set = EndpointSet::default();
    for ep in live.upstreams.endpoints.iter() {
        if scope.admits(ep.kind) && ep.health().is_up() {
            set.insert(ep.index);
        }
    }
    set
}

/// The models of the available endpoints in `scope`: name, the endpoints listing it,
/// and the first of those endpoints' own entry.
fn merged(shard: &Shard, scope: Scope) -> Vec<(String, Vec<usize>, Value)> {
    let live = shard.live_now();
    let catalog = shard.catalog();
    let up = available(shard, scope);
    catalog
        .models()
        .into_iter()
        .filter_map(|(name, set)| {
            let on: Vec<usize> = (0..live.upstreams.endpoints.len())
                .filter(|&i| set.contains(i) && up.contains(i))
                .collect();
            let raw = catalog.entry(*on.first()?, name)?.raw.clone();
            Some((name.to_string(), on, raw))
        })
        .collect()
}

/// `/v1/models`: OpenAI's list shape.
fn models_openai(shard: &Shard, scope: Scope) -> Value {
    let live = shard.live_now();
    let data: Vec<Value> = merged(shard, scope)
        .into_iter()
        .map(|(name, on, raw)| {
            let ep = &live.upstreams.endpoints[on[0]];
            json!({
                "id": name,
                "object": "model",
                "created": raw["created"].as_u64().unwrap_or(0),
                "owned_by": raw["owned_by"].as_str().unwrap_or(ep.kind.name()),
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
}

/// `/api/tags`: Ollama's list shape (an Ollama endpoint's own entry when there is one).
fn models_ollama(shard: &Shard, scope: Scope) -> Value {
    let models: Vec<Value> = merged(shard, scope)
        .into_iter()
        .map(|(name, _, raw)| {
            if raw.get("digest").is_some() {
                raw
            } else {
                json!({
                    "name": name, "model": name, "modified_at": "1970-01-01T00:00:00Z",
                    "size": 0, "digest": "", "details": {},
                })
            }
        })
        .collect();
    json!({ "models": models })
}

/// `/internal/status/models`: Olla's shape.
fn status_models(shard: &Shard) -> Value {
    let live = shard.live_now();
    let catalog = shard.catalog();
    let eps = &live.upstreams.endpoints;
    let mut by_family: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let recent: Vec<Value> = catalog
        .models()
        .into_iter()
        .map(|(name, set)| {
            let on: Vec<usize> = (0..eps.len()).filter(|&i| set.contains(i)).collect();
            let family = catalog
                .entry(on[0], name)
                .map(|m| m.family())
                .unwrap_or_default();
            by_family
                .entry(family.clone())
                .or_default()
                .push(name.to_string());
            let last_seen = on
                .iter()
                .map(|&i| catalog.seen_unix_ms[i])
                .max()
                .unwrap_or(0);
            let names = |set: EndpointSet| set.iter().map(|i| &*eps[i].name).collect::<Vec<_>>();
            json!({
                "name": name,
                "type": eps[on[0]].kind.name(),
                "family": family,
                "endpoints": on.iter().map(|&i| &*eps[i].url).collect::<Vec<_>>(),
                "endpoint_names": on.iter().map(|&i| &*eps[i].name).collect::<Vec<_>>(),
                "last_seen": time(last_seen),
                // Those that say they hold it in memory, and those that say they do not.
                "loaded_on": names(catalog.holding(name.as_bytes())),
                "cold_on": names(catalog.cold(name.as_bytes()).intersection(set)),
            })
        })
        .collect();
    // Per endpoint: whether it says what it holds in memory, what, when that was last
    // read, and the requests others left waiting in its own queue.
    let engines: Vec<Value> = eps
        .iter()
        .map(|ep| {
            let held = catalog.held_by(ep.index);
            json!({
                "name": &*ep.name,
                "type": ep.kind.name(),
                "reports_loaded": held.is_some(),
                "loaded": held,
                "loaded_read": time(ep.engine_read_unix_ms()),
                "queued": ep.queued(),
            })
        })
        .collect();
    json!({
        "timestamp": Timestamp(unix_ms()).to_string(),
        "total_models": recent.len(),
        "total_families": by_family.len(),
        "total_endpoints": eps.len(),
        "models_by_family": by_family,
        "recent_models": recent,
        "endpoints": engines,
    })
}

/// `/internal/status`: a summary of the whole proxy.
fn status(shard: &Shard) -> Value {
    let live = shard.live_now();
    let now = now_ms();
    let eps = &live.upstreams.endpoints;
    let up = eps.iter().filter(|e| e.health().is_up()).count();
    let routable = eps
        .iter()
        .filter(|e| e.health().status(now) == Status::Healthy)
        .count();
    let requests: u64 = eps.iter().map(|e| e.health().snapshot().requests).sum();
    let config = &live.config;
    json!({
        "status": if routable == eps.len() { "healthy" } else if routable > 0 { "degraded" } else { "unhealthy" },
        "name": "ringway",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": now / 1000,
        "shards": shard.metrics.shards(),
        "driver": shard.driver,
        "balancer": config.proxy.balancer.name(),
        "sticky": config.sticky.enabled,
        "endpoints": { "total": eps.len(), "healthy": up, "routable": routable },
        "models": shard.catalog().models().len(),
        "requests": requests,
        "in_flight": eps.iter().map(|e| u64::from(e.in_flight())).sum::<u64>(),
        "config": {
            "origin": config.origin,
            "generation": live.generation,
            "loaded_at": time(live.loaded_unix_ms),
            "loaded_unix_ms": live.loaded_unix_ms,
            "reloadable": config.path.is_some(),
        },
    })
}

fn time(at_unix_ms: u64) -> Value {
    if at_unix_ms == 0 {
        Value::Null
    } else {
        Timestamp(at_unix_ms).to_string().into()
    }
}

/// `/internal/stats/sticky`: Olla's fields (from the seen-key memory; evictions count
/// the keys forgotten to make room and those that expired, as Olla's do), plus repins,
/// requests without a key and the keys by source.
fn sticky_stats(shard: &Shard) -> Value {
    let live = shard.live_now();
    let sticky = &live.config.sticky;
    if !sticky.enabled {
        return json!({ "enabled": false });
    }
    let m = &shard.metrics;
    let seen = &live.upstreams.seen;
    let misses = m.total(|c| &c.sticky_misses);
    let by_source: serde_json::Map<String, Value> = KeySource::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.name().to_string(),
                m.total(|c| &c.sticky_by_source[i]).into(),
            )
        })
        .collect();
    json!({
        "enabled": true,
        "placement": "rendezvous",
        "key_sources": sticky.key_sources.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "max_load_factor": sticky.max_load_factor,
        "hits": m.total(|c| &c.sticky_hits),
        "misses": misses,
        "repins": m.total(|c| &c.sticky_repins),
        "no_key": m.total(|c| &c.sticky_no_key),
        "by_key_source": by_source,
        "insertions": m.total(|c| &c.sticky_insertions),
        "evictions": m.total(|c| &c.sticky_evictions) + seen.expired(),
        "active_sessions": seen.active(crate::clock::now_ms()),
        "max_sessions": seen.capacity(),
        "idle_ttl_seconds": sticky.idle_ttl.map_or(0, |t| t.as_secs()),
        "prefix_groups": prefix_groups(shard),
    })
}

/// The prefix groups' settings, and the busiest groups placed in recently with their
/// members (the first `size` of the group's ranking over the routable endpoints).
fn prefix_groups(shard: &Shard) -> Value {
    let live = shard.live_now();
    let config = &live.config.prefix_groups;
    let m = &shard.metrics;
    let eps = &live.upstreams.endpoints;
    let now = crate::clock::mono_ms(std::time::Instant::now());
    let groups: Vec<Value> = crate::metrics::groups::busiest(m.all().map(|c| &c.groups), 32)
        .into_iter()
        .map(|g| {
            let members = crate::routing::groups::members(g.key, g.size, eps, |i| {
                eps[i].health().is_routable(now)
            });
            json!({
                "key": format!("{:016x}", g.key),
                "requests": g.requests,
                "size": g.size,
                "widened": g.widened,
                "members": members.iter().map(|&i| &*eps[i].name).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "enabled": config.enabled,
        "size": config.size,
        "max_load_factor": config.max_load_factor,
        "min_prefix_bytes": config.min_prefix_bytes,
        "user_prefix_bytes": config.user_prefix_bytes,
        "requests": m.total(|c| &c.group_requests),
        "groups": groups,
    })
}

/// `/internal/status/endpoints`: Olla's shape (`endpoints`, `total_count`,
/// `healthy_count`, `routable_count`, and per endpoint `name`, `type`, `status`, `url`,
/// `priority`, `request_count`, `success_rate`, `active_connections`, ...) plus
/// ringway's breaker and check details.
fn endpoints(shard: &Shard) -> Value {
    let now = now_ms();
    let live = shard.live_now();
    let catalog = shard.catalog();
    let mut healthy = 0;
    let mut routable = 0;
    let list: Vec<Value> = live
        .upstreams
        .endpoints
        .iter()
        .map(|ep| {
            let h = ep.health();
            let status = h.status(now);
            healthy += usize::from(h.is_up());
            routable += usize::from(status == Status::Healthy);
            let s = h.snapshot();
            let success_rate = if s.requests == 0 {
                100.0
            } else {
                100.0 * (s.requests - s.request_failures) as f64 / s.requests as f64
            };
            let latency_ms = f64::from(s.last_check_latency_us) / 1000.0;
            json!({
                "name": &*ep.name,
                "id": ep.index,
                "url": &*ep.url,
                "type": ep.kind.name(),
                "priority": ep.priority,
                "model_count": catalog.lists[ep.index].as_ref().map(Vec::len),
                "status": status.name(),
                "routable": status == Status::Healthy,
                "consecutive_failures": s.consecutive_failures,
                "in_flight": ep.in_flight(),
                "active_connections": ep.in_flight(),
                "in_flight_bytes": ep.in_flight_bytes(),
                "queued": ep.queued(),
                "request_count": s.requests,
                "failure_count": s.request_failures,
                "success_rate": (success_rate * 100.0).round() / 100.0,
                "response_time": format!("{}ms", latency_ms.round()),
                "last_check": time(s.last_check_unix_ms),
                "last_check_status": (s.last_check_status != 0).then_some(s.last_check_status),
                "last_check_latency_ms": latency_ms,
                "last_change": time(s.last_change_unix_ms),
                "health_check": {
                    "path": &*ep.health_path,
                    "interval_ms": ep.check_interval.as_millis() as u64,
                    "timeout_ms": ep.check_timeout.as_millis() as u64,
                },
            })
        })
        .collect();
    json!({
        "timestamp": Timestamp(unix_ms()).to_string(),
        "total_count": list.len(),
        "healthy_count": healthy,
        "routable_count": routable,
        "endpoints": list,
    })
}
