//! Endpoint health, behind the `attempt` phase's eligibility test: the state only. The
//! checker that probes endpoints and writes it runs on the control thread
//! (`control/checks.rs`).
//!
//! Every endpoint has a [`Health`] block of atomics that all shards read without locks:
//! - **up/down**: written by the active checker (on the control thread, one task per
//!   endpoint, never one per shard) and by any shard the moment a request cannot connect
//!   (passive detection: the endpoint leaves rotation on every shard at once).
//! - **circuit breaker**: consecutive request failures (connect errors, closes before a
//!   response, statuses in `proxy.retry_on_status`). At `breaker_threshold` the breaker
//!   opens and the endpoint is skipped for a cool-down that doubles on each re-trip. Once
//!   the cool-down has passed, requests flow again (half-open): the first success closes
//!   the breaker, the first failure re-opens it. Those trial requests are retried
//!   elsewhere on failure like any other, so no client sees them fail.
//!
//! A down endpoint is probed fast (`recovery_interval_ms`, growing gently to
//! `recovery_max_interval_ms`) so a restarted backend is back within a fraction of a
//! second; a healthy one every `check_interval_ms`, honoured per endpoint.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::clock::unix_ms;
use crate::config::HealthConfig;

/// An endpoint's health, shared by all shards and the checker. `repr(C)`: the fields the
/// request path touches come first, on the endpoint's first cache line.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Health {
    down: AtomicBool,
    /// Consecutive failed requests: the breaker's count.
    failures: AtomicU32,
    /// The breaker is open until this `clock::mono_ms`; 0 when closed.
    open_until_ms: AtomicU64,
    /// The endpoint asked for no requests until this `clock::mono_ms` (a 429 or 503 with
    /// `Retry-After`); 0 when it has not.
    busy_until_ms: AtomicU64,
    requests: AtomicU64,
    request_failures: AtomicU64,
    /// Times the breaker opened since the last success: its cool-down doubles with each.
    trips: AtomicU32,
    /// Set when the breaker opens: the checker probes at once, and a failed probe then
    /// takes the endpoint down (so a dead backend gets fast recovery probing).
    suspect: AtomicBool,
    // Written by the checker only.
    /// Consecutive checks that disagree with the current state.
    check_streak: AtomicU32,
    /// HTTP status of the last check, 0 when it got none.
    last_check_status: AtomicU16,
    last_check_latency_us: AtomicU32,
    last_check_unix_ms: AtomicU64,
    last_change_unix_ms: AtomicU64,
}

/// The breaker settings a failure is judged by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Breaker {
    pub(crate) threshold: u32,
    pub(crate) cooldown: Duration,
    pub(crate) max_cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(health: &HealthConfig) -> Breaker {
        Breaker {
            threshold: health.breaker_threshold,
            cooldown: health.breaker_cooldown,
            max_cooldown: health.breaker_max_cooldown,
        }
    }
}

/// How an endpoint appears on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Healthy,
    /// Up, but the breaker is open.
    CircuitOpen,
    /// Up, but it asked for no requests for a while (`Retry-After`).
    Busy,
    Offline,
}

impl Status {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::CircuitOpen => "circuit-open",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }
}

impl Health {
    /// The health of an endpoint that appeared while ringway runs (a reload added it, or
    /// its name resolved to a new address): out of rotation until its first passing
    /// check, whatever `healthy_threshold` says (the streak is one pass short of any
    /// threshold; a failed first check resets it like any other).
    pub(crate) fn unproven() -> Health {
        Health {
            down: AtomicBool::new(true),
            check_streak: AtomicU32::new(u32::MAX - 1),
            ..Health::default()
        }
    }

    /// Whether requests may go to the endpoint at `now` (`clock::mono_ms`).
    #[inline]
    pub(crate) fn is_routable(&self, now: u64) -> bool {
        !self.down.load(Relaxed)
            && self.open_until_ms.load(Relaxed) <= now
            && self.busy_until_ms.load(Relaxed) <= now
    }

    /// Keeps new requests off the endpoint, on every shard, until `until`
    /// (`clock::mono_ms`): it answered 429 or 503 with `Retry-After`. A later mark
    /// extends it, an earlier one does not shorten it.
    pub(crate) fn mark_busy(&self, until: u64) {
        self.busy_until_ms.fetch_max(until, Relaxed);
    }

    pub(crate) fn is_up(&self) -> bool {
        !self.down.load(Relaxed)
    }

    pub(crate) fn status(&self, now: u64) -> Status {
        if self.down.load(Relaxed) {
            Status::Offline
        } else if self.open_until_ms.load(Relaxed) > now {
            Status::CircuitOpen
        } else if self.busy_until_ms.load(Relaxed) > now {
            Status::Busy
        } else {
            Status::Healthy
        }
    }

    /// Takes the endpoint out of rotation on every shard. Returns whether it was up.
    pub(crate) fn mark_down(&self) -> bool {
        let was_up = !self.down.swap(true, Relaxed);
        if was_up {
            self.check_streak.store(0, Relaxed);
            self.last_change_unix_ms.store(unix_ms(), Relaxed);
        }
        was_up
    }

    fn mark_up(&self) {
        self.down.store(false, Relaxed);
        self.check_streak.store(0, Relaxed);
        // A recovered backend starts with a clean slate.
        self.close_breaker();
        self.last_change_unix_ms.store(unix_ms(), Relaxed);
    }

    fn close_breaker(&self) {
        // Only write what needs clearing, to keep the cache line shared.
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.trips.load(Relaxed) != 0 {
            self.trips.store(0, Relaxed);
        }
        if self.open_until_ms.load(Relaxed) != 0 {
            self.open_until_ms.store(0, Relaxed);
        }
    }

    /// An attempt reached the endpoint and got a response it did not have to retry.
    #[inline]
    pub(crate) fn record_success(&self) {
        self.requests.fetch_add(1, Relaxed);
        self.close_breaker();
    }

    /// An attempt failed on the endpoint's side. Returns whether this failure opened the
    /// breaker.
    pub(crate) fn record_failure(&self, now: u64, breaker: &Breaker) -> bool {
        self.requests.fetch_add(1, Relaxed);
        self.request_failures.fetch_add(1, Relaxed);
        let open_until = self.open_until_ms.load(Relaxed);
        if breaker.threshold == 0 || open_until > now {
            // Already open: requests that were in flight when it opened fail too, and
            // must not stretch the cool-down.
            return false;
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < breaker.threshold {
            return false;
        }
        let trips = self.trips.load(Relaxed) + 1;
        let cooldown = breaker
            .cooldown
            .saturating_mul(1 << (trips - 1).min(16))
            .min(breaker.max_cooldown);
        let until = now + cooldown.as_millis() as u64;
        // One failure opens it, whichever shard sees it first.
        if self
            .open_until_ms
            .compare_exchange(open_until, until, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.trips.store(trips, Relaxed);
        self.suspect.store(true, Relaxed);
        true
    }

    pub(crate) fn is_suspect(&self) -> bool {
        self.suspect.load(Relaxed)
    }

    /// Applies one check result; returns the transition, if any.
    pub(crate) fn record_check(&self, ok: bool, settings: &HealthConfig) -> Option<bool> {
        // Requests have already failed: one failed probe confirms it.
        if self.suspect.swap(false, Relaxed) && !ok && self.mark_down() {
            return Some(false);
        }
        let streak = self.check_streak.load(Relaxed);
        if ok == self.is_up() {
            // Nothing to count: a healthy endpoint passing, or a down one failing.
            if streak != 0 {
                self.check_streak.store(0, Relaxed);
            }
            return None;
        }
        let streak = streak + 1;
        let threshold = if ok {
            settings.healthy_threshold
        } else {
            settings.unhealthy_threshold
        };
        if streak < threshold {
            self.check_streak.store(streak, Relaxed);
            return None;
        }
        if ok {
            self.mark_up();
            Some(true)
        } else {
            self.mark_down();
            Some(false)
        }
    }

    /// Records what a health check saw: the status it got (`None`: no answer) and how
    /// long the answer took.
    pub(crate) fn record_probe(&self, status: Option<u16>, latency: Duration) {
        self.last_check_unix_ms.store(unix_ms(), Relaxed);
        self.last_check_status.store(status.unwrap_or(0), Relaxed);
        if status.is_some() {
            let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
            self.last_check_latency_us.store(us, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            consecutive_failures: self.failures.load(Relaxed),
            last_change_unix_ms: self.last_change_unix_ms.load(Relaxed),
            last_check_unix_ms: self.last_check_unix_ms.load(Relaxed),
            last_check_latency_us: self.last_check_latency_us.load(Relaxed),
            last_check_status: self.last_check_status.load(Relaxed),
            requests: self.requests.load(Relaxed),
            request_failures: self.request_failures.load(Relaxed),
        }
    }
}

/// Counters for the status page.
pub(crate) struct Snapshot {
    pub(crate) consecutive_failures: u32,
    pub(crate) last_change_unix_ms: u64,
    pub(crate) last_check_unix_ms: u64,
    pub(crate) last_check_latency_us: u32,
    pub(crate) last_check_status: u16,
    pub(crate) requests: u64,
    pub(crate) request_failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthConfig {
        crate::config::Config::from_toml(
            "[health]\nunhealthy_threshold = 2\nhealthy_threshold = 2",
            "t",
        )
        .unwrap()
        .health
    }

    const BREAKER: Breaker = Breaker {
        threshold: 3,
        cooldown: Duration::from_millis(1000),
        max_cooldown: Duration::from_millis(5000),
    };

    #[test]
    fn checks_need_a_streak_to_change_state() {
        let h = Health::default();
        let s = settings();
        assert!(h.is_up());
        assert_eq!(h.record_check(false, &s), None);
        assert_eq!(
            h.record_check(true, &s),
            None,
            "a pass breaks the failing streak"
        );
        assert_eq!(h.record_check(false, &s), None);
        assert_eq!(h.record_check(false, &s), Some(false));
        assert!(!h.is_routable(0));
        assert_eq!(h.record_check(true, &s), None);
        assert_eq!(h.record_check(true, &s), Some(true));
        assert!(h.is_routable(0));
    }

    #[test]
    fn passive_marking_is_immediate_and_recovery_clears_the_breaker() {
        let h = Health::default();
        let s = settings();
        for _ in 0..3 {
            h.record_failure(100, &BREAKER);
        }
        assert!(h.mark_down());
        assert!(!h.mark_down(), "already down");
        assert_eq!(h.status(100), Status::Offline);
        h.record_check(true, &s);
        h.record_check(true, &s);
        assert_eq!(h.status(100), Status::Healthy);
        assert!(h.is_routable(100));
    }

    #[test]
    fn the_breaker_opens_at_the_threshold_and_backs_off() {
        let h = Health::default();
        assert!(!h.record_failure(0, &BREAKER));
        assert!(!h.record_failure(0, &BREAKER));
        assert!(
            h.record_failure(0, &BREAKER),
            "third consecutive failure opens it"
        );
        assert!(h.is_suspect(), "the checker is asked to look");
        assert!(!h.is_routable(999));
        assert_eq!(h.status(500), Status::CircuitOpen);
        // Stragglers that were in flight when it opened do not stretch the cool-down.
        for _ in 0..20 {
            assert!(!h.record_failure(10, &BREAKER));
        }
        assert!(h.is_routable(1000), "half-open after the cool-down");
        // A failure while half-open re-opens it for twice as long, then four times.
        assert!(h.record_failure(1000, &BREAKER));
        assert!(!h.is_routable(2999));
        assert!(h.record_failure(3000, &BREAKER));
        assert!(!h.is_routable(6999));
        assert!(h.is_routable(7000));
        // Capped.
        for t in [7000, 12000, 17000] {
            assert!(h.record_failure(t, &BREAKER));
        }
        assert!(h.is_routable(22000));
        // One success closes it and forgets the trips.
        h.record_success();
        assert!(h.is_routable(17000));
        assert_eq!(h.snapshot().consecutive_failures, 0);
        h.record_failure(30000, &BREAKER);
        h.record_failure(30000, &BREAKER);
        assert!(h.record_failure(30000, &BREAKER));
        assert!(h.is_routable(31000), "back to the base cool-down");
    }

    #[test]
    fn a_failed_probe_of_a_suspect_endpoint_takes_it_down_at_once() {
        let h = Health::default();
        let s = settings(); // unhealthy_threshold = 2
        for _ in 0..3 {
            h.record_failure(0, &BREAKER);
        }
        assert_eq!(h.record_check(false, &s), Some(false));
        assert_eq!(h.status(0), Status::Offline);
        assert!(!h.is_suspect());
        assert_eq!(h.record_check(true, &s), None);
        assert_eq!(h.record_check(true, &s), Some(true));
        assert!(h.is_routable(0), "recovery clears the breaker");
    }

    #[test]
    fn a_passing_probe_of_a_suspect_endpoint_leaves_it_to_the_breaker() {
        let h = Health::default();
        for _ in 0..3 {
            h.record_failure(0, &BREAKER);
        }
        assert_eq!(h.record_check(true, &settings()), None);
        assert_eq!(h.status(10), Status::CircuitOpen);
    }

    #[test]
    fn successes_in_between_reset_the_count() {
        let h = Health::default();
        h.record_failure(0, &BREAKER);
        h.record_failure(0, &BREAKER);
        h.record_success();
        assert!(!h.record_failure(0, &BREAKER));
        assert!(h.is_routable(0));
    }
}
