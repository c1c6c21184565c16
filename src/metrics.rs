//! Counters, written on the request path without locks or shared cache lines: each shard
//! owns one block of counters and is its only writer; readers (the status and metrics
//! pages) sum the blocks of all shards.

pub(crate) mod groups;
pub(crate) mod models;
pub(crate) mod translators;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::routing::KeySource;
pub(crate) use models::ModelStats;
pub(crate) use translators::TranslatorCounters;

/// A counter with a single writer (its shard). An increment is a plain load and store, no
/// atomic read-modify-write; readers on other threads see a recent value.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed) + n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub(crate) const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram (Prometheus style: counts per upper bound, plus sum and count).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// `buckets[i]` counts observations <= `BUCKETS[i]`, non-cumulative; the last slot is
    /// everything above.
    pub(crate) buckets: [Counter; BUCKETS.len() + 1],
    pub(crate) sum_us: Counter,
}

impl Histogram {
    pub(crate) fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].bump();
        self.sum_us.add(d.as_micros() as u64);
    }
}

/// One shard's counters for one endpoint.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct EndpointCounters {
    /// Responses relayed from the endpoint, by status class (1xx..5xx).
    pub(crate) responses: [Counter; 5],
    pub(crate) connect_errors: Counter,
    /// Attempts that failed on this endpoint and were retried on another.
    pub(crate) retried: Counter,
    /// From the request's arrival to the endpoint's response head.
    pub(crate) ttfb: Histogram,
    /// From the request's arrival to the end of the response body.
    pub(crate) duration: Histogram,
}

/// One shard's counters, on cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct ShardCounters {
    /// Requests parsed, whatever became of them.
    pub(crate) requests: Counter,
    /// Error responses ringway wrote itself, by status class (4xx, 5xx).
    pub(crate) own_errors: [Counter; 2],
    /// Requests that were served after failing over from another endpoint.
    pub(crate) failovers: Counter,
    /// Clients that went away before their response was complete.
    pub(crate) client_aborts: Counter,
    /// Connections refused at `server.max_connections`.
    pub(crate) refused_connections: Counter,
    /// Requests refused with 429 by `[rate_limits]`, by `ratelimit::Limit as usize`.
    pub(crate) rate_limited: [Counter; 4],
    /// Per-model statistics (`/internal/stats/models`, `ringway_model_responses_total`).
    pub(crate) models: ModelStats,
    pub(crate) sticky_hits: Counter,
    pub(crate) sticky_misses: Counter,
    pub(crate) sticky_repins: Counter,
    /// Keys recorded in the seen-key table, and keys it forgot to make room.
    pub(crate) sticky_insertions: Counter,
    pub(crate) sticky_evictions: Counter,
    /// Sticky routing was on but the request yielded no key.
    pub(crate) sticky_no_key: Counter,
    /// Requests keyed by each source, indexed by `KeySource as usize`.
    pub(crate) sticky_by_source: [Counter; KeySource::ALL.len()],
    /// Requests placed in a prefix group, and the groups recently placed in.
    pub(crate) group_requests: Counter,
    pub(crate) groups: groups::GroupTable,
    /// Messages API requests (Olla's "anthropic" translator).
    pub(crate) anthropic: TranslatorCounters,
}

/// The counters of every shard.
#[derive(Debug)]
pub(crate) struct Metrics {
    shards: Box<[ShardCounters]>,
}

impl Metrics {
    pub(crate) fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardCounters::default()).collect(),
        }
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn shard(&self, id: usize) -> &ShardCounters {
        &self.shards[id]
    }

    /// Every shard's counters.
    pub(crate) fn all(&self) -> impl Iterator<Item = &ShardCounters> {
        self.shards.iter()
    }

    /// The sum over all shards of one counter.
    pub(crate) fn total(&self, counter: impl Fn(&ShardCounters) -> &Counter) -> u64 {
        self.shards.iter().map(|s| counter(s).get()).sum()
    }
}

/// One endpoint's counters, one block per shard (each written by its shard only, on
/// cache lines of its own). They live with the endpoint's shared state
/// (`upstream::Endpoint::metrics`), so they follow the backend across configuration
/// generations, whatever its index in each.
#[derive(Debug)]
pub(crate) struct EndpointMetrics(Box<[EndpointCounters]>);

impl EndpointMetrics {
    pub(crate) fn new(shards: usize) -> EndpointMetrics {
        EndpointMetrics((0..shards).map(|_| EndpointCounters::default()).collect())
    }

    /// Shard `id`'s counters.
    #[inline]
    pub(crate) fn shard(&self, id: usize) -> &EndpointCounters {
        &self.0[id]
    }

    /// The sum over all shards of one counter.
    pub(crate) fn total(&self, counter: impl Fn(&EndpointCounters) -> &Counter) -> u64 {
        self.0.iter().map(|c| counter(c).get()).sum()
    }
}
