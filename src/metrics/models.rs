//! Per-model statistics, written by the request path's one exit (`proxy/access.rs`
//! `finish`) and read by `/internal/stats/models` and the per-model Prometheus family.
//!
//! Each shard owns one [`ModelStats`] table in its counter block and is its only writer,
//! like every other counter (`metrics.rs`): recording is plain loads and stores, no
//! atomic read-modify-write, no lock, no shared cache line. A page sums the shards'
//! tables; every statistic kept merges exactly across shards (sums, histogram buckets,
//! maxima, HyperLogLog registers).
//!
//! ```text
//!  Table (one per shard, allocated at its first record, 3 KiB)
//!  ├ hashes[128]   XXH3 of each model name; 0 = free. Open addressing, linear probing
//!  │               (at most 16 probes); slots are never freed, so a free slot ends a probe.
//!  ├ slots[128]    a Slot each, boxed when its model is first seen on the shard (~1.6 KiB):
//!  │                 name, responses by status class, successes, failures, bytes,
//!  │                 latency sum, last request, routing hits / misses / fallbacks,
//!  │                 latency histogram (124 log-linear buckets, 1 µs .. 71 min),
//!  │                 128 HyperLogLog registers (unique client addresses),
//!  │                 8 endpoint cells (requests, successes, latency sum, last use,
//!  │                 consecutive errors of the model on one endpoint)
//!  └ untracked     requests whose model found no slot
//! ```
//!
//! Bounds: at most [`CAPACITY`] models per shard, ~1.6 KiB each, so ~210 KiB per shard
//! at worst, and only what has been used. A model that finds no slot (the table is full,
//! or its probe run is: only possible with more distinct model names than the catalogue
//! normally holds, such as names invented by clients and sent to an endpoint whose list
//! is unknown) is counted in `untracked` only. A model served by more than
//! [`ENDPOINT_CELLS`] endpoints on one shard has the rest of its endpoints missing from
//! its per-endpoint breakdown (its own counts stay exact).

use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicU8, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use super::Counter;

/// Models one shard keeps statistics for.
pub(crate) const CAPACITY: usize = 128;
/// Slots tried for a model before it is counted as untracked.
const MAX_PROBES: usize = 16;
/// Endpoints per model with a breakdown of their own, per shard.
pub(crate) const ENDPOINT_CELLS: usize = 8;
/// HyperLogLog registers: standard error 1.04/√128 ≈ 9%, and exact-ish (linear counting)
/// below a few hundred clients.
pub(crate) const REGISTERS: usize = 128;
const REGISTER_BITS: u32 = REGISTERS.trailing_zeros();
/// Sub-buckets per power of two in the latency histogram (bucket width ≤ 25%).
const SUB_BITS: u32 = 2;
/// Latencies at or above 2^32 µs (71 min) share the last bucket.
const MAX_EXPONENT: u32 = 31;
pub(crate) const LATENCY_BUCKETS: usize =
    ((MAX_EXPONENT - SUB_BITS + 1) << SUB_BITS) as usize + (1 << SUB_BITS);

/// How a served request was routed, as Olla's per-model counters name it: each served
/// request is exactly one of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// The first endpoint tried served it.
    Hit,
    /// Served after failing over from at least one other endpoint.
    Miss,
    /// Served by an endpoint that does not list the model (its list is unknown, or the
    /// routing fallback sent it there).
    Fallback,
}

/// What became of one request for a model, for [`ModelStats::record`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelRequest {
    /// The relayed response's status class (0 = 1xx .. 4 = 5xx); `None` when no endpoint
    /// answered (ringway's own error after trying).
    pub(crate) class: Option<usize>,
    /// The endpoint that answered (its `Endpoint::uid`), and how it was reached.
    pub(crate) served: Option<(u32, Routed)>,
    pub(crate) ok: bool,
    /// Bytes written to the client.
    pub(crate) bytes: u64,
    /// From the request's arrival to its end.
    pub(crate) latency_us: u64,
    /// A hash of the client's address ([`client_hash`]).
    pub(crate) client: u64,
    /// When it ended (`clock::mono_ms`).
    pub(crate) at_ms: u64,
}

/// One shard's per-model statistics. Allocated by its shard at the first record: a shard
/// that has served no model, and an idle process, hold none.
#[derive(Debug, Default)]
pub(crate) struct ModelStats {
    table: OnceLock<Box<Table>>,
}

#[derive(Debug)]
struct Table {
    hashes: [AtomicU64; CAPACITY],
    slots: [OnceLock<Box<Slot>>; CAPACITY],
    untracked: Counter,
}

/// One model's statistics on one shard.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: Box<str>,
    /// Relayed responses by status class.
    pub(crate) responses: [Counter; 5],
    pub(crate) successes: Counter,
    pub(crate) failures: Counter,
    pub(crate) bytes: Counter,
    /// Sum of the successful requests' latencies.
    pub(crate) latency_us: Counter,
    /// Successful requests' latencies, by [`bucket`].
    pub(crate) latency: [Counter; LATENCY_BUCKETS],
    /// `clock::mono_ms` of the last request, plus one (0 = never).
    pub(crate) last_ms: Counter,
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) fallbacks: Counter,
    /// HyperLogLog registers over the clients' address hashes.
    pub(crate) clients: [AtomicU8; REGISTERS],
    pub(crate) endpoints: [EndpointCell; ENDPOINT_CELLS],
}

/// One model on one endpoint, on one shard.
#[derive(Debug, Default)]
pub(crate) struct EndpointCell {
    /// The endpoint's index plus one; 0 = free.
    endpoint: AtomicU32,
    pub(crate) requests: Counter,
    pub(crate) successes: Counter,
    pub(crate) latency_us: Counter,
    pub(crate) last_ms: Counter,
    /// Failures since its last success.
    pub(crate) consecutive_errors: Counter,
}

impl EndpointCell {
    /// The endpoint's `Endpoint::uid`, if the cell is taken.
    pub(crate) fn endpoint(&self) -> Option<u32> {
        match self.endpoint.load(Acquire) {
            0 => None,
            n => Some(n),
        }
    }
}

impl Slot {
    fn new(name: &[u8]) -> Slot {
        Slot {
            name: String::from_utf8_lossy(name).into(),
            responses: Default::default(),
            successes: Counter::default(),
            failures: Counter::default(),
            bytes: Counter::default(),
            latency_us: Counter::default(),
            latency: std::array::from_fn(|_| Counter::default()),
            last_ms: Counter::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            fallbacks: Counter::default(),
            clients: std::array::from_fn(|_| AtomicU8::new(0)),
            endpoints: Default::default(),
        }
    }

    fn record(&self, o: &ModelRequest) {
        if let Some(class) = o.class {
            self.responses[class].bump();
        }
        if o.ok {
            self.successes.bump();
            self.latency_us.add(o.latency_us);
            self.latency[bucket(o.latency_us)].bump();
        } else {
            self.failures.bump();
        }
        self.bytes.add(o.bytes);
        set(&self.last_ms, o.at_ms + 1);
        // HyperLogLog: the top bits pick a register, which keeps the longest run of
        // leading zeros seen in the rest (plus one). A single writer: load and store.
        let register = &self.clients[(o.client >> (64 - REGISTER_BITS)) as usize];
        let rank =
            ((o.client << REGISTER_BITS) | (1 << (REGISTER_BITS - 1))).leading_zeros() as u8 + 1;
        if register.load(Relaxed) < rank {
            register.store(rank, Relaxed);
        }
        let Some((endpoint, routed)) = o.served else {
            return;
        };
        match routed {
            Routed::Hit => self.hits.bump(),
            Routed::Miss => self.misses.bump(),
            Routed::Fallback => self.fallbacks.bump(),
        }
        // Cells are taken in order and never freed: the endpoint's cell, if it has one,
        // comes before the first free cell.
        let key = endpoint; // a uid is never 0
        let Some(cell) = self.endpoints.iter().find(|c| {
            let k = c.endpoint.load(Relaxed);
            k == key || k == 0
        }) else {
            return;
        };
        if cell.endpoint.load(Relaxed) == 0 {
            cell.endpoint.store(key, Release);
        }
        cell.requests.bump();
        set(&cell.last_ms, o.at_ms + 1);
        if o.ok {
            cell.successes.bump();
            cell.latency_us.add(o.latency_us);
            set(&cell.consecutive_errors, 0);
        } else {
            cell.consecutive_errors.bump();
        }
    }

    /// Its HyperLogLog registers, to merge with other shards' ([`distinct`]).
    pub(crate) fn registers(&self) -> [u8; REGISTERS] {
        std::array::from_fn(|i| self.clients[i].load(Relaxed))
    }
}

/// Sets a single-writer counter.
fn set(c: &Counter, v: u64) {
    c.0.store(v, Relaxed);
}

impl ModelStats {
    /// Records one request for the model named `name`, whose XXH3 hash is `hash`.
    pub(crate) fn record(&self, hash: u64, name: &[u8], outcome: &ModelRequest) {
        let table = self.table.get_or_init(|| {
            Box::new(Table {
                hashes: std::array::from_fn(|_| AtomicU64::new(0)),
                slots: std::array::from_fn(|_| OnceLock::new()),
                untracked: Counter::default(),
            })
        });
        match table.find(hash, Some(name)) {
            Some(slot) => slot.record(outcome),
            None => table.untracked.bump(),
        }
    }

    /// Relayed responses of status class `class` for `model` on this shard.
    pub(crate) fn get(&self, model: &[u8], class: usize) -> u64 {
        let Some(table) = self.table.get() else {
            return 0;
        };
        table
            .find(xxhash_rust::xxh3::xxh3_64(model), None)
            .map_or(0, |slot| slot.responses[class].get())
    }

    /// Every model this shard has statistics for, with its name's hash.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (u64, &Slot)> {
        self.table.get().into_iter().flat_map(|t| {
            t.hashes.iter().zip(&t.slots).filter_map(|(h, s)| {
                let hash = h.load(Acquire);
                (hash != 0).then_some((hash, &**s.get()?))
            })
        })
    }

    /// Requests whose model found no slot on this shard.
    pub(crate) fn untracked(&self) -> u64 {
        self.table.get().map_or(0, |t| t.untracked.get())
    }
}

impl Table {
    /// The slot of `hash`; with `claim` (the model's name), a free one is taken for it.
    /// Only the owning shard claims.
    fn find(&self, hash: u64, claim: Option<&[u8]>) -> Option<&Slot> {
        let hash = hash.max(1);
        for i in 0..MAX_PROBES {
            let at = (hash as usize).wrapping_add(i) % CAPACITY;
            match self.hashes[at].load(Acquire) {
                h if h == hash => return self.slots[at].get().map(|s| &**s),
                0 => {
                    let name = claim?;
                    // The slot is filled before its hash is published: a reader that
                    // sees the hash finds the slot.
                    let slot = self.slots[at].get_or_init(|| Box::new(Slot::new(name)));
                    self.hashes[at].store(hash, Release);
                    return Some(&**slot);
                }
                _ => {}
            }
        }
        None
    }
}

/// The latency histogram's bucket of `us` microseconds: exact below 4 µs, then four
/// buckets per power of two (log-linear, as HdrHistogram with two bits of precision).
pub(crate) fn bucket(us: u64) -> usize {
    let v = us.min((1 << (MAX_EXPONENT + 1)) - 1);
    if v < 1 << SUB_BITS {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (((e - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
}

/// The smallest latency (µs) of bucket `i`; bucket `i` holds `[lower(i), lower(i + 1))`.
pub(crate) fn lower(i: usize) -> u64 {
    let sub_count = 1usize << SUB_BITS;
    if i < sub_count {
        return i as u64;
    }
    let e = (i >> SUB_BITS) as u32 + SUB_BITS - 1;
    let sub = (i & (sub_count - 1)) as u64;
    (sub_count as u64 + sub) << (e - SUB_BITS)
}

/// The latency (µs) below which a fraction `q` of the histogram's observations lie: the
/// middle of the bucket holding that rank (within ~12% of the true value).
pub(crate) fn percentile(buckets: &[u64; LATENCY_BUCKETS], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let (lo, hi) = (lower(i), lower(i + 1));
            return lo + (hi - lo) / 2;
        }
    }
    unreachable!("the rank is within the total")
}

/// The distinct clients the merged registers have seen (HyperLogLog, with linear
/// counting while registers are still empty).
pub(crate) fn distinct(registers: &[u8; REGISTERS]) -> u64 {
    let m = REGISTERS as f64;
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    if zeros == REGISTERS {
        return 0;
    }
    let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let estimate = alpha * m * m / sum;
    let estimate = if estimate <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        estimate
    };
    estimate.round() as u64
}

/// A well-mixed 64-bit hash of a client address (SplitMix64's finaliser over its bits):
/// a few multiplications, no per-process seed, so every shard agrees.
pub(crate) fn client_hash(ip: std::net::IpAddr) -> u64 {
    let bits = match ip {
        std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => {
            let v = u128::from(v6);
            (v as u64) ^ ((v >> 64) as u64).rotate_left(32) ^ 0x6a09_e667_f3bc_c908
        }
    };
    let mut z = bits.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    /// `endpoint` stands for an endpoint of uid `endpoint + 1` (a uid is never 0).
    fn outcome(ok: bool, endpoint: u32, latency_us: u64, client: u32) -> ModelRequest {
        let client = client_hash(std::net::Ipv4Addr::from(client).into());
        ModelRequest {
            class: Some(if ok { 1 } else { 4 }),
            served: Some((endpoint + 1, Routed::Hit)),
            ok,
            bytes: 100,
            latency_us,
            client,
            at_ms: 7,
        }
    }

    fn record(stats: &ModelStats, name: &str, o: ModelRequest) {
        stats.record(xxh3_64(name.as_bytes()), name.as_bytes(), &o);
    }

    #[test]
    fn a_table_starts_empty_and_counts_once_used() {
        let stats = ModelStats::default();
        assert_eq!(stats.get(b"llama3.2:latest", 1), 0);
        assert!(stats.table.get().is_none(), "reading allocates nothing");
        assert_eq!(stats.slots().count(), 0);
        record(&stats, "llama3.2:latest", outcome(true, 0, 1000, 1));
        record(&stats, "llama3.2:latest", outcome(false, 1, 5000, 2));
        record(&stats, "qwen2.5:7b", outcome(true, 1, 2000, 1));
        assert_eq!(stats.get(b"llama3.2:latest", 1), 1);
        assert_eq!(stats.get(b"llama3.2:latest", 4), 1);
        assert_eq!(stats.get(b"mistral", 1), 0);
        let (_, llama) = stats
            .slots()
            .find(|(_, s)| &*s.name == "llama3.2:latest")
            .unwrap();
        assert_eq!(
            (
                llama.successes.get(),
                llama.failures.get(),
                llama.bytes.get()
            ),
            (1, 1, 200)
        );
        assert_eq!(llama.latency_us.get(), 1000, "only successes' latency");
        assert_eq!((llama.hits.get(), llama.last_ms.get()), (2, 8));
        let cells: Vec<_> = llama
            .endpoints
            .iter()
            .filter_map(|c| Some((c.endpoint()?, c.requests.get(), c.consecutive_errors.get())))
            .collect();
        assert_eq!(cells, [(1, 1, 0), (2, 1, 1)]);
        assert_eq!(distinct(&llama.registers()), 2);
        assert_eq!(stats.slots().count(), 2);
    }

    #[test]
    fn a_full_table_counts_the_rest_as_untracked() {
        let stats = ModelStats::default();
        for i in 0..CAPACITY + 40 {
            record(&stats, &format!("model-{i}"), outcome(true, 0, 10, 0));
        }
        let tracked = stats.slots().count();
        assert!(tracked <= CAPACITY && tracked > CAPACITY / 2, "{tracked}");
        assert_eq!(tracked as u64 + stats.untracked(), CAPACITY as u64 + 40);
        // A tracked model is still found and counted.
        let (_, first) = stats.slots().next().unwrap();
        let name = first.name.to_string();
        record(&stats, &name, outcome(true, 0, 10, 0));
        assert_eq!(stats.get(name.as_bytes(), 1), 2);
    }

    #[test]
    fn consecutive_errors_reset_on_success_and_endpoints_beyond_the_cells_are_dropped() {
        let stats = ModelStats::default();
        for ok in [false, false, true, false] {
            record(&stats, "m", outcome(ok, 3, 10, 0));
        }
        for ep in 0..ENDPOINT_CELLS + 3 {
            record(&stats, "m", outcome(true, 10 + ep as u32, 10, 0));
        }
        let (_, m) = stats.slots().next().unwrap();
        let cell = m
            .endpoints
            .iter()
            .find(|c| c.endpoint() == Some(4))
            .unwrap();
        assert_eq!((cell.requests.get(), cell.consecutive_errors.get()), (4, 1));
        assert_eq!(
            m.endpoints
                .iter()
                .filter(|c| c.endpoint().is_some())
                .count(),
            ENDPOINT_CELLS
        );
        assert_eq!(
            m.successes.get() + m.failures.get(),
            4 + ENDPOINT_CELLS as u64 + 3
        );
    }

    #[test]
    fn buckets_are_log_linear_and_cover_every_latency() {
        assert_eq!(LATENCY_BUCKETS, 124);
        let mut last = 0;
        for us in (0..5000).chain([1 << 20, (1 << 32) - 1, 1 << 32, u64::MAX]) {
            let b = bucket(us);
            assert!(b < LATENCY_BUCKETS, "{us}");
            assert!(b >= last || us > 5000, "monotonic at {us}");
            last = b;
            if b + 1 < LATENCY_BUCKETS && us < 1 << 32 {
                assert!(lower(b) <= us && us < lower(b + 1), "{us} in bucket {b}");
            }
        }
        for b in 4..LATENCY_BUCKETS - 1 {
            let width = (lower(b + 1) - lower(b)) as f64 / lower(b) as f64;
            assert!(width <= 0.25, "bucket {b} is {width} wide");
        }
    }

    #[test]
    fn percentiles_land_within_a_bucket_of_the_truth() {
        let mut buckets = [0u64; LATENCY_BUCKETS];
        // 1..=1000 ms, once each.
        for ms in 1..=1000u64 {
            buckets[bucket(ms * 1000)] += 1;
        }
        for (q, truth) in [(0.5, 500_000.0), (0.95, 950_000.0), (0.99, 990_000.0)] {
            let p = percentile(&buckets, q) as f64;
            assert!((p - truth).abs() / truth < 0.13, "p{q}: {p} vs {truth}");
        }
        assert_eq!(percentile(&[0; LATENCY_BUCKETS], 0.95), 0);
    }

    #[test]
    fn distinct_clients_are_estimated_closely() {
        for n in [1u32, 2, 10, 100, 1000, 20_000] {
            let mut registers = [0u8; REGISTERS];
            for i in 0..n {
                let h = client_hash(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                    0x0a00_0000 + i,
                )));
                let r = &mut registers[(h >> (64 - REGISTER_BITS)) as usize];
                let rank =
                    ((h << REGISTER_BITS) | (1 << (REGISTER_BITS - 1))).leading_zeros() as u8 + 1;
                *r = (*r).max(rank);
            }
            let got = distinct(&registers) as f64;
            let error = (got - f64::from(n)).abs() / f64::from(n);
            let allowed = if n <= 2 { 0.0 } else { 0.3 };
            assert!(error <= allowed, "{n} clients estimated as {got}");
        }
        let v6 = "2001:db8::1".parse().unwrap();
        assert_ne!(client_hash(v6), client_hash("2001:db8::2".parse().unwrap()));
    }
}
