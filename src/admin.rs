//! Pages ringway answers itself (the `Route::Internal` branch of `route`): liveness,
//! version and the endpoint status page, in the JSON shapes Olla's clients read.

use http::StatusCode;
use serde_json::{Value, json};

use crate::log::Timestamp;
use crate::routing::{Internal, KeySource};
use crate::runtime::Shard;
use crate::upstream::health::{self, Status};

/// Status and JSON body of an internal page.
pub(crate) fn render(page: Internal, shard: &Shard) -> (StatusCode, Vec<u8>) {
    let body = match page {
        // Liveness only: the process is up and this shard answers.
        Internal::Health => json!({ "status": "healthy" }),
        Internal::Version => json!({
            "name": "ringway",
            "version": env!("CARGO_PKG_VERSION"),
            "driver": shard.driver,
        }),
        Internal::Endpoints => endpoints(shard),
        Internal::StickyStats => sticky_stats(shard),
    };
    (
        StatusCode::OK,
        serde_json::to_vec(&body).expect("a JSON value serializes"),
    )
}

fn time(unix_ms: u64) -> Value {
    if unix_ms == 0 {
        Value::Null
    } else {
        Timestamp(unix_ms).to_string().into()
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `/internal/stats/sticky`: Olla's fields, where they apply to a proxy without a
/// session table (`active_sessions`, `max_sessions` and `idle_ttl_seconds` are null,
/// nothing is ever evicted, an insertion is a conversation's first turn), plus repins and
/// the keys by source.
fn sticky_stats(shard: &Shard) -> Value {
    let sticky = &shard.config.sticky;
    if !sticky.enabled {
        return json!({ "enabled": false });
    }
    let m = &shard.metrics;
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
        "insertions": misses,
        "evictions": 0,
        "active_sessions": null,
        "max_sessions": null,
        "idle_ttl_seconds": null,
    })
}

/// `/internal/status/endpoints`: Olla's shape (`endpoints`, `total_count`,
/// `healthy_count`, `routable_count`, and per endpoint `name`, `type`, `status`, `url`,
/// `priority`, `request_count`, `success_rate`, `active_connections`, ...) plus
/// ringway's breaker and check details.
fn endpoints(shard: &Shard) -> Value {
    let now = health::now_ms();
    let mut healthy = 0;
    let mut routable = 0;
    let list: Vec<Value> = shard
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
                "status": status.name(),
                "routable": status == Status::Healthy,
                "consecutive_failures": s.consecutive_failures,
                "in_flight": ep.in_flight(),
                "active_connections": ep.in_flight(),
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
        "timestamp": Timestamp(now_unix_ms()).to_string(),
        "total_count": list.len(),
        "healthy_count": healthy,
        "routable_count": routable,
        "endpoints": list,
    })
}
