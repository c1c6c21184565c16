//! The prefix groups a shard placed requests in recently, for `/internal/stats/sticky`:
//! a small table indexed by the group's key (a hash), two slots per key, a newer key
//! taking the less used of the two when both hold others. One store or two per request, by the
//! shard that owns the table; the page merges all shards' tables.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Counter;

/// Slots per shard: the page shows the busiest groups among the most recent.
const SLOTS: usize = 64;

#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    requests: Counter,
    /// The group's size at its last request.
    size: AtomicU64,
    /// Requests for which the group had to grow (its members were over their load).
    widened: Counter,
}

/// One shard's recent groups.
#[derive(Debug)]
pub(crate) struct GroupTable {
    slots: Box<[Slot]>,
}

impl Default for GroupTable {
    fn default() -> Self {
        GroupTable {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

/// A group as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupSeen {
    pub(crate) key: u64,
    pub(crate) requests: u64,
    pub(crate) size: usize,
    pub(crate) widened: u64,
}

impl GroupTable {
    /// Records a request placed in group `key` of size `size` (configured: `base`).
    #[inline]
    pub(crate) fn record(&self, key: u64, size: usize, base: usize) {
        // Two slots may hold a key; a new key takes the one with fewer requests.
        let i = key as usize % SLOTS;
        let (a, b) = (&self.slots[i], &self.slots[i ^ 1]);
        let slot = if a.key.load(Relaxed) == key {
            a
        } else if b.key.load(Relaxed) == key || b.requests.get() < a.requests.get() {
            b
        } else {
            a
        };
        if slot.key.load(Relaxed) != key {
            // Not reset atomically with the key: a page read in between may see the
            // old group's counts under the new key once, which a statistic can bear.
            slot.key.store(key, Relaxed);
            slot.requests.0.store(0, Relaxed);
            slot.widened.0.store(0, Relaxed);
        }
        slot.requests.bump();
        if slot.size.load(Relaxed) != size as u64 {
            slot.size.store(size as u64, Relaxed);
        }
        if size > base {
            slot.widened.bump();
        }
    }

    /// The groups in the table.
    fn seen(&self) -> impl Iterator<Item = GroupSeen> + '_ {
        self.slots
            .iter()
            .map(|s| GroupSeen {
                key: s.key.load(Relaxed),
                requests: s.requests.get(),
                size: s.size.load(Relaxed) as usize,
                widened: s.widened.get(),
            })
            .filter(|g| g.requests > 0)
    }
}

/// The groups of all `tables` merged by key, busiest first, at most `n`.
pub(crate) fn busiest<'a>(
    tables: impl Iterator<Item = &'a GroupTable>,
    n: usize,
) -> Vec<GroupSeen> {
    let mut all: Vec<GroupSeen> = Vec::new();
    for g in tables.flat_map(GroupTable::seen) {
        match all.iter_mut().find(|a| a.key == g.key) {
            Some(a) => {
                a.requests += g.requests;
                a.widened += g.widened;
                a.size = a.size.max(g.size);
            }
            None => all.push(g),
        }
    }
    all.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key)));
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_counted_merged_and_replaced() {
        let (a, b) = (GroupTable::default(), GroupTable::default());
        for _ in 0..3 {
            a.record(7, 2, 2);
        }
        b.record(7, 3, 2);
        b.record(9, 2, 2);
        let seen = busiest([&a, &b].into_iter(), 10);
        assert_eq!(
            seen,
            [
                GroupSeen {
                    key: 7,
                    requests: 4,
                    size: 3,
                    widened: 1
                },
                GroupSeen {
                    key: 9,
                    requests: 1,
                    size: 2,
                    widened: 0
                }
            ]
        );
        // A key that collides takes the other slot; a third one the less used.
        a.record(7 + SLOTS as u64, 2, 2);
        assert_eq!(busiest([&a].into_iter(), 10).len(), 2);
        a.record(7 + 2 * SLOTS as u64, 2, 2);
        let seen = busiest([&a].into_iter(), 10);
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].key, seen[0].requests), (7, 3));
        assert_eq!((seen[1].key, seen[1].requests), (7 + 2 * SLOTS as u64, 1));
        assert_eq!(busiest([&a, &b].into_iter(), 1).len(), 1);
    }
}
