//! `/internal/stats/models`: the per-model statistics every shard collects
//! (`metrics/models.rs`), summed over the shards, in the shape of Olla's
//! `handler_stats_models.go`: `{timestamp, models: [...], summary: {...}, endpoints}`,
//! most requested model first. `include_endpoints=true` adds each model's
//! `endpoint_breakdown`; `include_summary=true` fills `endpoints` with every endpoint's
//! totals over all models (otherwise `{}`, as in Olla).
//!
//! Olla's human-readable values ("95.5%", "120ms", "5s ago") are kept; ringway adds the
//! numbers beside them (`total_bytes`, `*_latency_ms`, `last_requested_at`) and, in the
//! summary, `untracked_requests` (requests for models beyond a shard's table).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::format;
use super::query_param;
use crate::clock::{now_ms, unix_ms};
use crate::log::Timestamp;
use crate::metrics::models::{self as stats, LATENCY_BUCKETS, REGISTERS, Slot};
use crate::shard::Shard;

/// One model's statistics summed over the shards.
struct Model {
    name: String,
    successes: u64,
    failures: u64,
    bytes: u64,
    latency_us: u64,
    latency: [u64; LATENCY_BUCKETS],
    /// `clock::mono_ms` of the last request plus one; 0 = never.
    last_ms: u64,
    hits: u64,
    misses: u64,
    fallbacks: u64,
    clients: [u8; REGISTERS],
    endpoints: BTreeMap<u32, Endpoint>,
}

#[derive(Default)]
struct Endpoint {
    requests: u64,
    successes: u64,
    latency_us: u64,
    last_ms: u64,
    /// The most of any shard: the longest current run of failures.
    consecutive_errors: u64,
}

impl Model {
    fn new(name: &str) -> Model {
        Model {
            name: name.to_string(),
            successes: 0,
            failures: 0,
            bytes: 0,
            latency_us: 0,
            latency: [0; LATENCY_BUCKETS],
            last_ms: 0,
            hits: 0,
            misses: 0,
            fallbacks: 0,
            clients: [0; REGISTERS],
            endpoints: BTreeMap::new(),
        }
    }

    fn add(&mut self, slot: &Slot) {
        self.successes += slot.successes.get();
        self.failures += slot.failures.get();
        self.bytes += slot.bytes.get();
        self.latency_us += slot.latency_us.get();
        for (sum, c) in self.latency.iter_mut().zip(&slot.latency) {
            *sum += c.get();
        }
        self.last_ms = self.last_ms.max(slot.last_ms.get());
        self.hits += slot.hits.get();
        self.misses += slot.misses.get();
        self.fallbacks += slot.fallbacks.get();
        for (mine, theirs) in self.clients.iter_mut().zip(slot.registers()) {
            *mine = (*mine).max(theirs);
        }
        for cell in &slot.endpoints {
            let Some(i) = cell.endpoint() else { break };
            let e = self.endpoints.entry(i).or_default();
            e.requests += cell.requests.get();
            e.successes += cell.successes.get();
            e.latency_us += cell.latency_us.get();
            e.last_ms = e.last_ms.max(cell.last_ms.get());
            e.consecutive_errors = e.consecutive_errors.max(cell.consecutive_errors.get());
        }
    }

    fn requests(&self) -> u64 {
        self.successes + self.failures
    }
}

/// Milliseconds since `mono_ms + 1` (a `last_ms` field), or `None` for never.
fn since(last_ms: u64, now_mono: u64) -> Option<u64> {
    (last_ms > 0).then(|| now_mono.saturating_sub(last_ms - 1))
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

pub(super) fn page(shard: &Shard, query: &[u8]) -> Value {
    let include_endpoints = query_param(query, b"include_endpoints") == Some(b"true");
    let include_summary = query_param(query, b"include_summary") == Some(b"true");
    let m = &shard.metrics;
    let mut by_hash: BTreeMap<u64, Model> = BTreeMap::new();
    let mut untracked = 0;
    for i in 0..m.shards() {
        let table = &m.shard(i).models;
        for (hash, slot) in table.slots() {
            by_hash
                .entry(hash)
                .or_insert_with(|| Model::new(&slot.name))
                .add(slot);
        }
        untracked += table.untracked();
    }
    let mut models: Vec<Model> = by_hash.into_values().collect();
    models.sort_by(|a, b| b.requests().cmp(&a.requests()).then(a.name.cmp(&b.name)));

    let (now_mono, now_unix) = (now_ms(), unix_ms());
    let live = shard.live_now();
    let eps = &live.upstreams.endpoints;
    // Endpoints by identity: a backend a reload removed is "?".
    let name_of = |uid: u32| {
        eps.iter()
            .find(|ep| ep.uid() == uid)
            .map_or("?", |ep| &*ep.name)
            .to_string()
    };
    let last = |last_ms: u64| {
        let ago = since(last_ms, now_mono);
        (
            format::time_ago(ago),
            ago.map(|a| Timestamp(now_unix - a).to_string()),
        )
    };
    let average = |sum_us: u64, n: u64| sum_us.checked_div(n).unwrap_or(0);
    let list: Vec<Value> = models
        .iter()
        .map(|s| {
            let total = s.requests();
            let avg_us = average(s.latency_us, s.successes);
            let (p95, p99) = (
                stats::percentile(&s.latency, 0.95),
                stats::percentile(&s.latency, 0.99),
            );
            let (ago, at) = last(s.last_ms);
            let mut model = json!({
                "name": s.name,
                "total_requests": total,
                "successful_requests": s.successes,
                "failed_requests": s.failures,
                "success_rate": format::percentage(rate(s.successes, total)),
                "total_traffic": format::bytes(s.bytes),
                "total_bytes": s.bytes,
                "average_latency": format::latency(avg_us / 1000),
                "p95_latency": format::latency(p95 / 1000),
                "p99_latency": format::latency(p99 / 1000),
                "average_latency_ms": ms(avg_us),
                "p95_latency_ms": ms(p95),
                "p99_latency_ms": ms(p99),
                "last_requested": ago,
                "last_requested_at": at,
                "unique_clients": stats::distinct(&s.clients),
                "routing_hits": s.hits,
                "routing_misses": s.misses,
                "routing_fallbacks": s.fallbacks,
            });
            if include_endpoints && !s.endpoints.is_empty() {
                let breakdown: Map<String, Value> = s
                    .endpoints
                    .iter()
                    .map(|(&i, e)| {
                        let name = name_of(i);
                        let value = endpoint_entry(&name, e, &last, average);
                        (name, value)
                    })
                    .collect();
                model["endpoint_breakdown"] = breakdown.into();
            }
            model
        })
        .collect();

    let total: u64 = models.iter().map(Model::requests).sum();
    let successes: u64 = models.iter().map(|s| s.successes).sum();
    let bytes: u64 = models.iter().map(|s| s.bytes).sum();
    let hour_ago = now_mono.saturating_sub(3_600_000);
    let active = models.iter().filter(|s| s.last_ms > hour_ago).count();
    let least = models
        .iter()
        .filter(|s| s.requests() > 0)
        .min_by_key(|s| s.requests())
        .map_or("", |s| &s.name);
    let summary = json!({
        "total_models": models.len(),
        "active_models": active,
        "total_requests": total,
        "overall_success_rate": format::percentage(rate(successes, total)),
        "total_traffic": format::bytes(bytes),
        "total_bytes": bytes,
        "most_popular_model": models.first().map_or("", |s| &s.name),
        "least_popular_model": least,
        "untracked_requests": untracked,
    });

    let mut endpoints = Map::new();
    if include_summary {
        let mut totals: BTreeMap<u32, Endpoint> = BTreeMap::new();
        for e_of_model in models.iter().flat_map(|s| &s.endpoints) {
            let (&i, e) = e_of_model;
            let t = totals.entry(i).or_default();
            t.requests += e.requests;
            t.successes += e.successes;
            t.latency_us += e.latency_us;
            t.last_ms = t.last_ms.max(e.last_ms);
        }
        for (i, t) in totals {
            let name = name_of(i);
            // Olla's endpoint summary carries no error runs.
            let t = Endpoint {
                consecutive_errors: 0,
                ..t
            };
            let value = endpoint_entry(&name, &t, &last, average);
            endpoints.insert(name, value);
        }
    }
    json!({
        "timestamp": Timestamp(now_unix).to_string(),
        "models": list,
        "summary": summary,
        "endpoints": endpoints,
    })
}

/// Olla's `EndpointModelStats`: a model (or all models) on one endpoint.
fn endpoint_entry(
    name: &str,
    e: &Endpoint,
    last: &impl Fn(u64) -> (String, Option<String>),
    average: impl Fn(u64, u64) -> u64,
) -> Value {
    let avg_us = average(e.latency_us, e.successes);
    let (ago, at) = last(e.last_ms);
    json!({
        "endpoint_name": name,
        "request_count": e.requests,
        "success_rate": (rate(e.successes, e.requests) * 100.0).round() / 100.0,
        "average_latency": format::latency(avg_us / 1000),
        "average_latency_ms": ms(avg_us),
        "last_used": ago,
        "last_used_at": at,
        "consecutive_errors": e.consecutive_errors,
    })
}
