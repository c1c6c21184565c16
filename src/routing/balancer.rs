//! The `select_backend` decision: small pure functions over a slice of backends.
//!
//! Each takes the backends, a predicate saying which are eligible for this request
//! (in scope, healthy, not already tried) and `start`, the position just after the
//! shard's previous pick. Scanning from there is what makes round-robin rotate, and it
//! breaks ties in the other policies so equal backends take turns. Every backend's
//! eligibility and load are read once per decision, so a concurrent change on another
//! shard can never make a decision inconsistent.

/// What one request in flight adds to a backend's [`Candidate::load`]: as much as 4 KiB
/// of request body (about a thousand prompt tokens). A 120 KB prompt being prefilled
/// weighs thirty short chats.
pub(crate) const REQUEST_LOAD: u64 = 4096;

/// What a balancer needs to know about a backend.
pub(crate) trait Candidate {
    /// The backend's load, across all shards, in what it costs: [`REQUEST_LOAD`] for each
    /// request in flight or waiting in the backend's own queue, plus the bytes of the
    /// request bodies in flight.
    fn load(&self) -> u64;
    /// The requests that load is made of (in flight or queued at the backend).
    fn requests(&self) -> u64;
    /// Higher is preferred by the priority policy.
    fn priority(&self) -> u32;
    /// Stable identity for rendezvous (sticky) placement.
    fn id(&self) -> u64;
}

/// The balancing policy (`proxy.balancer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    LeastConnections,
    RoundRobin,
    Priority,
}

impl Balancer {
    pub(crate) fn parse(s: &str) -> Option<Balancer> {
        match s {
            "least-connections" | "least_connections" | "least-conn" => {
                Some(Balancer::LeastConnections)
            }
            "round-robin" | "round_robin" => Some(Balancer::RoundRobin),
            "priority" => Some(Balancer::Priority),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Balancer::LeastConnections => "least-connections",
            Balancer::RoundRobin => "round-robin",
            Balancer::Priority => "priority",
        }
    }

    /// Index of the chosen backend, or `None` when none is eligible.
    #[inline]
    pub(crate) fn pick<C: Candidate>(
        self,
        backends: &[C],
        eligible: impl Fn(usize) -> bool,
        start: usize,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin => round_robin(backends.len(), eligible, start),
            Balancer::LeastConnections => least_connections(backends, eligible, start),
            Balancer::Priority => priority(backends, eligible, start),
        }
    }
}

/// Visits indices `0..len` once each, starting at `start` and wrapping around.
#[inline]
fn rotation(len: usize, start: usize) -> impl Iterator<Item = usize> {
    let start = if len == 0 { 0 } else { start % len };
    (start..len).chain(0..start)
}

/// The first eligible backend at or after `start`.
#[inline]
pub(crate) fn round_robin(
    len: usize,
    eligible: impl Fn(usize) -> bool,
    start: usize,
) -> Option<usize> {
    rotation(len, start).find(|&i| eligible(i))
}

/// The eligible backend with the least load; among equals, the first at or after
/// `start`.
#[inline]
pub(crate) fn least_connections<C: Candidate>(
    backends: &[C],
    eligible: impl Fn(usize) -> bool,
    start: usize,
) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for i in rotation(backends.len(), start) {
        if !eligible(i) {
            continue;
        }
        let load = backends[i].load();
        if best.is_none_or(|(_, l)| load < l) {
            best = Some((i, load));
            if load == 0 {
                break; // cannot do better than idle
            }
        }
    }
    best.map(|(i, _)| i)
}

/// The highest-priority eligible backend; inside a priority tier, the least loaded.
#[inline]
pub(crate) fn priority<C: Candidate>(
    backends: &[C],
    eligible: impl Fn(usize) -> bool,
    start: usize,
) -> Option<usize> {
    let mut best: Option<(usize, u32, u64)> = None;
    for i in rotation(backends.len(), start) {
        if !eligible(i) {
            continue;
        }
        let (prio, load) = (backends[i].priority(), backends[i].load());
        if best.is_none_or(|(_, p, l)| prio > p || (prio == p && load < l)) {
            best = Some((i, prio, load));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct B {
        load: u64,
        prio: u32,
    }

    impl Candidate for B {
        fn load(&self) -> u64 {
            self.load
        }
        fn requests(&self) -> u64 {
            self.load.div_ceil(REQUEST_LOAD)
        }
        fn priority(&self) -> u32 {
            self.prio
        }
        fn id(&self) -> u64 {
            0
        }
    }

    fn backends(spec: &[(u64, u32)]) -> Vec<B> {
        spec.iter().map(|&(load, prio)| B { load, prio }).collect()
    }

    /// Runs `n` decisions the way a shard does: each starts after the previous pick.
    fn sequence(
        policy: Balancer,
        bs: &[B],
        eligible: impl Fn(usize) -> bool,
        n: usize,
    ) -> Vec<usize> {
        let mut start = 0;
        (0..n)
            .map(|_| {
                let i = policy.pick(bs, &eligible, start).unwrap();
                start = i + 1;
                i
            })
            .collect()
    }

    #[test]
    fn round_robin_rotates_over_eligible_backends_evenly() {
        let bs = backends(&[(0, 100); 3]);
        assert_eq!(
            sequence(Balancer::RoundRobin, &bs, |_| true, 6),
            [0, 1, 2, 0, 1, 2]
        );
        // An ineligible backend is skipped without favouring its successor.
        assert_eq!(
            sequence(Balancer::RoundRobin, &bs, |i| i != 1, 4),
            [0, 2, 0, 2]
        );
        assert_eq!(
            sequence(Balancer::RoundRobin, &bs, |i| i != 0, 4),
            [1, 2, 1, 2]
        );
    }

    #[test]
    fn round_robin_ignores_load() {
        let bs = backends(&[(50, 100), (0, 100)]);
        assert_eq!(
            sequence(Balancer::RoundRobin, &bs, |_| true, 4),
            [0, 1, 0, 1]
        );
    }

    #[test]
    fn least_connections_prefers_the_idle_backend() {
        let bs = backends(&[(3, 100), (0, 100), (1, 100)]);
        assert_eq!(
            sequence(Balancer::LeastConnections, &bs, |_| true, 3),
            [1, 1, 1]
        );
        assert_eq!(
            sequence(Balancer::LeastConnections, &bs, |i| i != 1, 2),
            [2, 2]
        );
    }

    #[test]
    fn least_connections_takes_turns_among_equals() {
        let bs = backends(&[(2, 100), (2, 100), (5, 100)]);
        assert_eq!(
            sequence(Balancer::LeastConnections, &bs, |_| true, 4),
            [0, 1, 0, 1]
        );
    }

    #[test]
    fn priority_sticks_to_the_top_tier() {
        // Two backends in the top tier (200), one busy; a lower tier that is idle.
        let bs = backends(&[(0, 100), (4, 200), (1, 200)]);
        assert_eq!(sequence(Balancer::Priority, &bs, |_| true, 3), [2, 2, 2]);
        let equal = backends(&[(0, 100), (1, 200), (1, 200)]);
        assert_eq!(
            sequence(Balancer::Priority, &equal, |_| true, 4),
            [1, 2, 1, 2]
        );
        // The lower tier is used only when the top tier is out.
        assert_eq!(sequence(Balancer::Priority, &bs, |i| i == 0, 2), [0, 0]);
    }

    #[test]
    fn nothing_eligible_gives_none() {
        let bs = backends(&[(0, 100); 2]);
        for policy in [
            Balancer::RoundRobin,
            Balancer::LeastConnections,
            Balancer::Priority,
        ] {
            assert_eq!(policy.pick(&bs, |_| false, 0), None);
            assert_eq!(policy.pick(&[] as &[B], |_| true, 7), None);
        }
    }
}
