//! Sticky sessions' memory of seen keys, part of `select_backend`: what gives a request
//! its outcome label (`X-Olla-Sticky-Session`) as Olla means it. Placement never reads
//! it: the backend is still chosen by rendezvous hashing, so replicas agree without it.
//!
//! - `miss`: the key is new (or was forgotten); it is recorded with the backend chosen;
//! - `hit`: the key was seen, and the request is served by its recorded backend or by its
//!   home (its rendezvous best, back after a failure: it still holds the prefix up to the
//!   turn it missed);
//! - `repin`: the key was seen but is served elsewhere; the new backend is recorded.
//!
//! The memory is one fixed table shared by every shard (consecutive requests of one
//! conversation land on different shards), without locks: each slot is one `AtomicU64`
//! holding a key's fingerprint, its backend and when it was last seen, so a slot is
//! read and replaced whole. Slots are grouped in buckets of eight (one cache line); a key
//! lives in the bucket its hash picks, and a full bucket forgets its least recently seen
//! key ("least recently used", per bucket). A key unseen for `idle_ttl` is forgotten. The
//! control thread sweeps expired keys and, when a backend goes down, unpins the keys
//! recorded on it (Olla's purge: their next request is a `repin`).
//!
//! Races are benign: two shards recording the same key at once leave one of them; a
//! label is at worst the one a slightly different interleaving would have given.

use std::sync::atomic::{AtomicU64, Ordering};

use super::sticky::Outcome;

/// Slots per bucket: one 64-byte cache line.
const WAYS: usize = 8;
/// Bits of a slot: fingerprint (24) | backend's tag (9, `Endpoint::seen_tag`) | last seen, in milliseconds (31: the
/// clock wraps every 24.8 days, so a TTL is at most half of that).
const SEEN_BITS: u32 = 31;
const EP_BITS: u32 = 9;
const SEEN_MASK: u64 = (1 << SEEN_BITS) - 1;
const EP_MASK: u64 = (1 << EP_BITS) - 1;
/// The backend of a key whose backend went down.
const UNPINNED: u64 = EP_MASK;
/// The longest TTL the clock's width allows (12 days).
pub(crate) const MAX_TTL_MS: u64 = SEEN_MASK / 2;

#[repr(C, align(64))]
struct Bucket([AtomicU64; WAYS]);

/// What one observation did to the table, for the shard's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) outcome: Outcome,
    /// The key was recorded in a new slot.
    pub(crate) inserted: bool,
    /// Recording it made the table forget another key (full bucket, or an expired one).
    pub(crate) evicted: bool,
}

/// The table of seen keys.
pub(crate) struct SeenKeys {
    buckets: Box<[Bucket]>,
    /// Slots used per bucket: fewer than [`WAYS`] only for a tiny `max_sessions`.
    ways: usize,
    /// Milliseconds; 0 = keys expire only by eviction.
    ttl: u64,
    /// Keys the sweeper forgot because they expired.
    expired: AtomicU64,
}

impl SeenKeys {
    /// A table of at most `max_sessions` keys (rounded down to whole buckets), which
    /// forgets a key after `ttl_ms` unseen (0 = never; at most [`MAX_TTL_MS`]).
    pub(crate) fn new(max_sessions: usize, ttl_ms: u64) -> SeenKeys {
        let ways = max_sessions.clamp(1, WAYS);
        let buckets = (max_sessions / ways).max(1);
        SeenKeys {
            buckets: (0..buckets)
                .map(|_| Bucket(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            ways,
            ttl: ttl_ms.min(MAX_TTL_MS),
            expired: AtomicU64::new(0),
        }
    }

    /// Keys the table can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.buckets.len() * self.ways
    }

    /// Records that the request with session key `hash` is served by backend `chosen`,
    /// whose rendezvous home is `home`, at `now_ms` (`clock::mono_ms`), and
    /// gives its outcome.
    #[inline]
    pub(crate) fn observe(
        &self,
        hash: u64,
        chosen: usize,
        home: Option<usize>,
        now_ms: u64,
    ) -> Observed {
        let (bucket, fp) = self.place(hash);
        let slots = &bucket.0[..self.ways];
        let now = now_ms & SEEN_MASK;
        let new = pack(fp, chosen as u64 & EP_MASK, now);
        // Two tries: a slot changed by another shard between the read and the swap is
        // read again once; after that the label stands and the record is skipped.
        for _ in 0..2 {
            let mut victim: Option<(usize, u64, u64)> = None; // (slot, value, age)
            for (i, slot) in slots.iter().enumerate() {
                let v = slot.load(Ordering::Relaxed);
                let age = if v == 0 {
                    u64::MAX
                } else {
                    now.wrapping_sub(v & SEEN_MASK) & SEEN_MASK
                };
                let live = v != 0 && !self.is_expired(age);
                if live && v >> (SEEN_BITS + EP_BITS) == fp {
                    let recorded = (v >> SEEN_BITS) & EP_MASK;
                    let outcome = if recorded == chosen as u64 || home == Some(chosen) {
                        Outcome::Hit
                    } else {
                        Outcome::Repin
                    };
                    if v != new {
                        let _ = slot.compare_exchange(v, new, Ordering::Relaxed, Ordering::Relaxed);
                    }
                    return Observed {
                        outcome,
                        inserted: false,
                        evicted: false,
                    };
                }
                // The slot to take if the key is not here: an empty one, else an expired
                // one, else the least recently seen.
                let rank = if live { age } else { u64::MAX };
                if victim.is_none_or(|(_, _, best)| rank > best) {
                    victim = Some((i, v, rank));
                }
            }
            let (i, v, _) = victim.expect("a bucket has slots");
            if slots[i]
                .compare_exchange(v, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Observed {
                    outcome: Outcome::Miss,
                    inserted: true,
                    evicted: v != 0,
                };
            }
        }
        Observed {
            outcome: Outcome::Miss,
            inserted: false,
            evicted: false,
        }
    }

    /// Keys held and not expired at `now_ms`.
    pub(crate) fn active(&self, now_ms: u64) -> usize {
        let now = now_ms & SEEN_MASK;
        self.slots()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&v| v != 0 && !self.is_expired(now.wrapping_sub(v & SEEN_MASK) & SEEN_MASK))
            .count()
    }

    /// Keys forgotten by [`sweep`](Self::sweep) because they expired.
    pub(crate) fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// The control thread's pass: forgets expired keys, and unpins the keys recorded on
    /// a backend in `down` (their next request is a `repin`).
    pub(crate) fn sweep(&self, now_ms: u64, down: impl Fn(usize) -> bool) {
        let now = now_ms & SEEN_MASK;
        for slot in self.slots() {
            let v = slot.load(Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            let ep = (v >> SEEN_BITS) & EP_MASK;
            let next = if self.is_expired(now.wrapping_sub(v & SEEN_MASK) & SEEN_MASK) {
                0
            } else if ep != UNPINNED && down(ep as usize) {
                v | (UNPINNED << SEEN_BITS)
            } else {
                continue;
            };
            let swapped = slot.compare_exchange(v, next, Ordering::Relaxed, Ordering::Relaxed);
            if swapped.is_ok() && next == 0 {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn is_expired(&self, age: u64) -> bool {
        self.ttl > 0 && age >= self.ttl
    }

    /// The key's bucket (from its low 32 bits) and fingerprint (its top 24 bits, never 0).
    #[inline]
    fn place(&self, hash: u64) -> (&Bucket, u64) {
        let i = ((hash & 0xffff_ffff) * self.buckets.len() as u64) >> 32;
        let fp = (hash >> (SEEN_BITS + EP_BITS)).max(1);
        (&self.buckets[i as usize], fp)
    }

    fn slots(&self) -> impl Iterator<Item = &AtomicU64> {
        self.buckets.iter().flat_map(|b| &b.0[..self.ways])
    }
}

#[inline]
fn pack(fp: u64, ep: u64, seen: u64) -> u64 {
    fp << (SEEN_BITS + EP_BITS) | ep << SEEN_BITS | seen
}

impl std::fmt::Debug for SeenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenKeys")
            .field("capacity", &self.capacity())
            .field("ttl_ms", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes())
    }

    #[test]
    fn new_then_seen_then_moved() {
        let t = SeenKeys::new(100, 600_000);
        let k = key(1);
        let first = t.observe(k, 2, Some(2), 10);
        assert_eq!((first.outcome, first.inserted), (Outcome::Miss, true));
        assert_eq!(t.observe(k, 2, Some(2), 11).outcome, Outcome::Hit);
        // The home is down: served by another backend.
        assert_eq!(t.observe(k, 3, Some(2), 12).outcome, Outcome::Repin);
        // Again on the stand-in: it is the recorded backend now.
        assert_eq!(t.observe(k, 3, Some(2), 13).outcome, Outcome::Hit);
        // The home is back: a hit (it holds the prefix up to the turn it missed).
        assert_eq!(t.observe(k, 2, Some(2), 14).outcome, Outcome::Hit);
        assert_eq!(t.active(14), 1);
    }

    #[test]
    fn idle_keys_expire_and_the_ttl_mslides() {
        let t = SeenKeys::new(100, 5_000);
        let k = key(7);
        t.observe(k, 0, Some(0), 100_000);
        assert_eq!(t.observe(k, 0, Some(0), 104_000).outcome, Outcome::Hit);
        // Seen at 104 s: still there at 108 s, gone 5 s after its last sighting.
        assert_eq!(t.observe(k, 0, Some(0), 108_000).outcome, Outcome::Hit);
        assert_eq!(t.active(112_999), 1);
        assert_eq!(t.active(113_000), 0);
        let again = t.observe(k, 0, Some(0), 113_000);
        assert_eq!((again.outcome, again.inserted), (Outcome::Miss, true));
        t.sweep(200_000, |_| false);
        assert_eq!((t.active(200_000), t.expired()), (0, 1));
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_seen() {
        let t = SeenKeys::new(4, 0);
        assert_eq!(t.capacity(), 4);
        for i in 0..4 {
            assert!(!t.observe(key(i), 0, None, i).evicted);
        }
        // Key 0 seen again: key 1 is now the least recently seen.
        assert_eq!(t.observe(key(0), 0, None, 10).outcome, Outcome::Hit);
        let fifth = t.observe(key(4), 0, None, 11);
        assert!(fifth.inserted && fifth.evicted);
        assert_eq!(t.observe(key(1), 0, None, 12).outcome, Outcome::Miss);
        assert_eq!(t.observe(key(0), 0, None, 13).outcome, Outcome::Hit);
        assert_eq!(t.active(13), 4);
    }

    #[test]
    fn capacity_never_exceeds_max_sessions() {
        for max in [1, 7, 8, 9, 100, 10_000, 10_007] {
            let t = SeenKeys::new(max, 0);
            assert!(t.capacity() <= max && t.capacity() + WAYS > max, "{max}");
            for i in 0..max as u64 * 3 {
                t.observe(key(i), 1, None, 1);
            }
            assert!(t.active(1) <= max);
        }
    }

    #[test]
    fn a_down_backend_s_keys_are_unpinned() {
        let t = SeenKeys::new(100, 0);
        let (a, b) = (key(1), key(2));
        t.observe(a, 1, Some(1), 1);
        t.observe(b, 2, Some(2), 1);
        t.sweep(2, |ep| ep == 1);
        assert_eq!(t.active(2), 2, "unpinned keys are still known");
        assert_eq!(t.observe(a, 3, Some(1), 3).outcome, Outcome::Repin);
        assert_eq!(t.observe(b, 2, Some(2), 3).outcome, Outcome::Hit);
    }

    #[test]
    fn the_clock_may_wrap() {
        let t = SeenKeys::new(16, 10_000);
        let k = key(3);
        let near = SEEN_MASK - 2;
        t.observe(k, 0, None, near);
        assert_eq!(t.observe(k, 0, None, near + 5_000).outcome, Outcome::Hit);
    }

    #[test]
    fn shards_share_the_table() {
        let t = std::sync::Arc::new(SeenKeys::new(10_000, 600_000));
        let misses: usize = (0..2)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..5_000u64)
                        .filter(|&i| t.observe(key(i), 1, Some(1), 1).outcome == Outcome::Miss)
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        // Each key is new to exactly one thread, give or take a race on the same key
        // (both may call it new) and keys pushed out of a full bucket.
        assert!((5_000..5_600).contains(&misses), "{misses}");
    }
}
