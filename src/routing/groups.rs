//! Prefix groups, part of `select_backend`: conversations that share a long prefix (one
//! application's system prompt, its tool definitions, a shared document) are kept on a
//! few backends, so that each backend's KV cache holds a few tenants' prefixes rather than
//! every tenant's, evicting each other.
//!
//! Two rendezvous rankings, both pure functions of names and keys, so every shard and
//! every replica agrees without talking:
//! - the **shared-prefix key** (`api::SharedPrefix`) ranks the eligible backends; its
//!   first `size` (k) are the group;
//! - the **conversation key** (`sticky`) picks one of the group's members and keeps it,
//!   turn after turn.
//!
//! **Bounded load** (consistent hashing with bounded loads, Mirrokni et al.): a member
//! loaded beyond `max_load_factor` × the mean (`sticky::load_limit`) is passed over for
//! the conversation's next best member; while every member is over, the group grows by
//! the next backend of the prefix's ranking, so a hot tenant spreads instead of melting
//! one GPU. Nothing is remembered: as load falls, the same computation gives the smaller
//! group back. A backend that leaves (down, breaker open, tried) is replaced by the next
//! of the ranking, and only the groups it was in change.

use crate::api::SharedPrefix;
use crate::config::PrefixGroupsConfig;
use crate::routing::balancer::Candidate;
use crate::routing::sticky::{load_limit, score};

/// A request's prefix group: its shared-prefix key and the configured size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) key: u64,
    pub(crate) size: usize,
}

impl Group {
    /// The group of a request with shared part `shared`, under `config`: none when
    /// groups are off or the shared part is too short to be worth keeping together.
    pub(crate) fn of(config: &PrefixGroupsConfig, shared: Option<SharedPrefix>) -> Option<Group> {
        let shared = shared.filter(|s| config.enabled && s.bytes >= config.min_prefix_bytes)?;
        Some(Group {
            key: shared.hash,
            size: config.size,
        })
    }
}

/// Where a request of group `group` and conversation key `key` goes: the backend's
/// index and the size the group had to grow to (at least `group.size`, or the number of
/// eligible backends if fewer). `None` when nothing is eligible.
///
/// With `max_load_factor` 0 load is ignored: the conversation's best member of the
/// first `size`.
#[inline]
pub(crate) fn place<C: Candidate>(
    group: Group,
    key: u64,
    backends: &[C],
    eligible: impl Fn(usize) -> bool,
    max_load_factor: f64,
) -> Option<(usize, usize)> {
    let limit = (max_load_factor > 0.0).then(|| load_limit(backends, &eligible, max_load_factor));
    // The conversation's best member of the first `size`, regardless of load, and its
    // best member within the limit so far.
    let mut best: Option<(usize, u64)> = None;
    let mut best_within: Option<(usize, u64)> = None;
    let mut members = 0;
    // Members in the prefix's ranking: each step finds the best score below the last.
    let mut below = u64::MAX;
    let mut first = true;
    loop {
        let mut next: Option<(usize, u64)> = None;
        for (i, b) in backends.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let s = score(group.key, b.id());
            if (first || s < below) && next.is_none_or(|(_, top)| s > top) {
                next = Some((i, s));
            }
        }
        let Some((i, s)) = next else { break };
        (below, first) = (s, false);
        members += 1;
        let conv = score(key, backends[i].id());
        if members <= group.size && best.is_none_or(|(_, top)| conv > top) {
            best = Some((i, conv));
        }
        let within = limit.is_none_or(|l| backends[i].load() <= l);
        if within && best_within.is_none_or(|(_, top)| conv > top) {
            best_within = Some((i, conv));
        }
        if members >= group.size && best_within.is_some() {
            return best_within.map(|(i, _)| (i, members));
        }
    }
    // Every eligible backend is over the limit: load is ignored.
    best.map(|(i, _)| (i, group.size.min(members)))
}

#[cfg(test)]
mod tests {
    use xxhash_rust::xxh3::xxh3_64;

    use super::*;
    use crate::routing::balancer::REQUEST_LOAD;
    use crate::routing::sticky::endpoint_id;

    struct B {
        id: u64,
        load: u64,
    }

    impl Candidate for B {
        fn load(&self) -> u64 {
            self.load
        }
        fn priority(&self) -> u32 {
            100
        }
        fn id(&self) -> u64 {
            self.id
        }
    }

    fn fleet(n: usize) -> Vec<B> {
        (0..n)
            .map(|i| B {
                id: endpoint_id(&format!("gpu-{i}")),
                load: 0,
            })
            .collect()
    }

    fn h(i: u64) -> u64 {
        xxh3_64(&i.to_le_bytes())
    }

    /// The members of a group: where its conversations land.
    fn members(group: Group, bs: &[B], eligible: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let mut on: Vec<usize> = (0..500)
            .map(|c| place(group, h(c), bs, eligible, 0.0).unwrap().0)
            .collect();
        on.sort();
        on.dedup();
        on
    }

    #[test]
    fn a_group_keeps_its_conversations_on_size_backends() {
        let bs = fleet(8);
        for tenant in 0..50 {
            let group = Group {
                key: h(1000 + tenant),
                size: 2,
            };
            assert_eq!(members(group, &bs, |_| true).len(), 2);
            // Each conversation is sticky: the same member every time.
            for c in 0..20 {
                let first = place(group, h(c), &bs, |_| true, 1.25);
                assert_eq!(first, place(group, h(c), &bs, |_| true, 1.25));
                assert_eq!(first.unwrap().1, 2);
            }
        }
    }

    #[test]
    fn groups_spread_over_the_fleet() {
        let bs = fleet(4);
        let mut seats = [0usize; 4];
        for tenant in 0..2000 {
            let group = Group {
                key: h(tenant),
                size: 2,
            };
            for i in members(group, &bs, |_| true) {
                seats[i] += 1;
            }
        }
        // 4000 seats over 4 backends.
        for s in seats {
            assert!((850..1150).contains(&s), "{seats:?}");
        }
    }

    #[test]
    fn a_member_that_leaves_is_replaced_by_the_next_of_the_ranking() {
        let bs = fleet(6);
        let group = Group { key: h(7), size: 2 };
        let before = members(group, &bs, |_| true);
        let gone = before[0];
        let after = members(group, &bs, |i| i != gone);
        assert_eq!(after.len(), 2);
        assert!(after.contains(&before[1]), "the other member stays");
        // Groups that did not hold it do not change.
        for tenant in 0..200 {
            let g = Group {
                key: h(5000 + tenant),
                size: 2,
            };
            let m = members(g, &bs, |_| true);
            if !m.contains(&gone) {
                assert_eq!(m, members(g, &bs, |i| i != gone));
            }
        }
    }

    #[test]
    fn the_group_grows_under_load_and_shrinks_back() {
        let mut bs = fleet(6);
        let group = Group { key: h(9), size: 2 };
        let home = members(group, &bs, |_| true);
        // Both members far over the mean: the group takes in the third of the ranking.
        for &i in &home {
            bs[i].load = 20 * REQUEST_LOAD;
        }
        let (chosen, size) = place(group, h(1), &bs, |_| true, 1.25).unwrap();
        assert_eq!(size, 3);
        assert!(!home.contains(&chosen));
        let third = chosen;
        // Every conversation spills to that same third backend, not anywhere.
        for c in 0..100 {
            assert_eq!(place(group, h(c), &bs, |_| true, 1.25), Some((third, 3)));
        }
        // One member over, the other within: conversations stay in the group.
        bs[home[1]].load = 0;
        for c in 0..100 {
            assert_eq!(place(group, h(c), &bs, |_| true, 1.25), Some((home[1], 2)));
        }
        // Load falls: back to the two, each conversation to its own member again.
        bs[home[0]].load = 0;
        let split: Vec<usize> = (0..100)
            .map(|c| place(group, h(c), &bs, |_| true, 1.25).unwrap().0)
            .collect();
        assert!(split.iter().all(|i| home.contains(i)));
        assert!(home.iter().all(|i| split.contains(i)));
        // Off: load is ignored.
        bs[home[0]].load = 50 * REQUEST_LOAD;
        bs[home[1]].load = 50 * REQUEST_LOAD;
        assert_eq!(place(group, h(1), &bs, |_| true, 0.0).unwrap().1, 2);
        // Everyone over: load is ignored rather than failing.
        bs.iter_mut().for_each(|b| b.load = 50 * REQUEST_LOAD);
        let (i, size) = place(group, h(1), &bs, |_| true, 1.25).unwrap();
        assert!(home.contains(&i));
        assert_eq!(size, 2);
    }

    #[test]
    fn small_fleets_and_nothing_eligible() {
        let bs = fleet(1);
        let group = Group { key: h(3), size: 2 };
        assert_eq!(place(group, h(1), &bs, |_| true, 1.25), Some((0, 1)));
        assert_eq!(place(group, h(1), &bs, |_| false, 1.25), None);
        assert_eq!(place(group, h(1), &[] as &[B], |_| true, 1.25), None);
    }

    #[test]
    fn groups_form_only_for_long_enough_shared_parts() {
        let config = PrefixGroupsConfig {
            enabled: true,
            size: 2,
            max_load_factor: 1.25,
            min_prefix_bytes: 1024,
            user_prefix_bytes: 0,
        };
        let long = SharedPrefix {
            hash: 5,
            bytes: 1024,
        };
        let short = SharedPrefix { hash: 5, bytes: 10 };
        assert_eq!(
            Group::of(&config, Some(long)),
            Some(Group { key: 5, size: 2 })
        );
        assert_eq!(Group::of(&config, Some(short)), None);
        assert_eq!(Group::of(&config, None), None);
        let off = PrefixGroupsConfig {
            enabled: false,
            ..config
        };
        assert_eq!(Group::of(&off, Some(long)), None);
    }
}
