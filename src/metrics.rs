//! Counters, written on the request path without locks or shared cache lines: each shard
//! owns one block of counters and is its only writer; readers (the status and metrics
//! pages) sum the blocks of all shards.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with a single writer (its shard). An increment is a plain load and store, no
/// atomic read-modify-write; readers on other threads see a recent value.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn bump(&self) {
        self.0.store(self.0.load(Relaxed) + 1, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One shard's counters, on cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct ShardCounters {
    pub(crate) sticky_hits: Counter,
    pub(crate) sticky_misses: Counter,
    pub(crate) sticky_repins: Counter,
    /// Sticky routing was on but the request yielded no key.
    pub(crate) sticky_no_key: Counter,
    /// Requests keyed by each source, in `KeySource::ALL` order.
    pub(crate) sticky_by_source: [Counter; 4],
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

    /// The sum over all shards of one counter.
    pub(crate) fn total(&self, counter: impl Fn(&ShardCounters) -> &Counter) -> u64 {
        self.shards.iter().map(|s| counter(s).get()).sum()
    }
}
