//! Endpoint health, behind `select_backend`'s eligibility test.
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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, mpsc};

use crate::config::{Config, HealthConfig};
use crate::log::{info, warning};
use crate::runtime::StopSignal;
use crate::upstream::models::{self, Catalog, Model};
use crate::upstream::{self, Endpoint, Upstreams};

/// Milliseconds on a process-wide monotonic clock.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An endpoint's health, shared by all shards and the checker. `repr(C)`: the fields the
/// request path touches come first, on the endpoint's first cache line.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Health {
    down: AtomicBool,
    /// Consecutive failed requests: the breaker's count.
    failures: AtomicU32,
    /// The breaker is open until this `now_ms()`; 0 when closed.
    open_until_ms: AtomicU64,
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

/// How an endpoint appears on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Healthy,
    /// Up, but the breaker is open.
    CircuitOpen,
    Offline,
}

impl Status {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::CircuitOpen => "circuit-open",
            Status::Offline => "offline",
        }
    }
}

impl Health {
    /// Whether requests may go to the endpoint now (`now` from [`now_ms`]).
    #[inline]
    pub(crate) fn is_routable(&self, now: u64) -> bool {
        !self.down.load(Relaxed) && self.open_until_ms.load(Relaxed) <= now
    }

    pub(crate) fn is_up(&self) -> bool {
        !self.down.load(Relaxed)
    }

    pub(crate) fn status(&self, now: u64) -> Status {
        if self.down.load(Relaxed) {
            Status::Offline
        } else if self.open_until_ms.load(Relaxed) > now {
            Status::CircuitOpen
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

    fn is_suspect(&self) -> bool {
        self.suspect.load(Relaxed)
    }

    /// Applies one check result; returns the transition, if any.
    fn record_check(&self, ok: bool, settings: &HealthConfig) -> Option<bool> {
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

// ---- the active checker (control thread) ----

/// Checks every endpoint, one task each, until `stop` fires. Runs once per process, on
/// the control thread.
pub(crate) async fn run_checks(
    upstreams: Arc<Upstreams>,
    config: Arc<Config>,
    stop: Arc<StopSignal>,
    shards: Vec<mpsc::Sender<Arc<Catalog>>>,
) {
    let n = upstreams.endpoints.len();
    let discovery = Rc::new(Discovery {
        lists: RefCell::new(vec![None; n]),
        seen_unix_ms: RefCell::new(vec![0; n]),
        shards,
    });
    for index in 0..n {
        let (upstreams, config, stop) = (upstreams.clone(), config.clone(), stop.clone());
        let discovery = discovery.clone();
        monoio::spawn(async move {
            let ep = &upstreams.endpoints[index];
            watch(ep, &config, &stop, &discovery).await;
        });
    }
    // The watchers notice the stop within one sleep slice; a probe in progress is
    // abandoned with the runtime.
    stop.wait().await;
}

/// The model lists read so far, and the shards to send each new catalogue to.
struct Discovery {
    lists: RefCell<Vec<Option<Vec<Model>>>>,
    seen_unix_ms: RefCell<Vec<u64>>,
    shards: Vec<mpsc::Sender<Arc<Catalog>>>,
}

impl Discovery {
    /// Reads an endpoint's model list and publishes the new catalogue.
    async fn refresh(&self, ep: &Endpoint) {
        match models::discover(ep, ep.check_timeout).await {
            Ok(list) => {
                let names = |l: &[Model]| l.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
                let changed =
                    self.lists.borrow()[ep.index].as_deref().map(names) != Some(names(&list));
                if changed {
                    info!("endpoint {} serves {} model(s)", ep.name, list.len());
                }
                self.lists.borrow_mut()[ep.index] = Some(list);
                self.seen_unix_ms.borrow_mut()[ep.index] = unix_ms();
                let catalog = Arc::new(Catalog::new(
                    self.lists.borrow().clone(),
                    self.seen_unix_ms.borrow().clone(),
                ));
                for shard in &self.shards {
                    let _ = shard.send(catalog.clone());
                }
            }
            Err(e) => warning!("endpoint {}: cannot read its model list: {e}", ep.name),
        }
    }
}

/// The loop that checks one endpoint (and reads its model list when due).
async fn watch(ep: &Endpoint, config: &Config, stop: &StopSignal, discovery: &Discovery) {
    let settings = &config.health;
    let mut recovery = settings.recovery_interval;
    let mut models_due = Instant::now();
    while !stop.is_triggered() {
        let result = probe(ep).await;
        let h = ep.health();
        h.last_check_unix_ms.store(unix_ms(), Relaxed);
        let ok = match &result {
            Ok((status, latency)) => {
                h.last_check_status.store(*status, Relaxed);
                h.last_check_latency_us
                    .store(latency.as_micros().min(u32::MAX as u128) as u32, Relaxed);
                (200..300).contains(status)
            }
            Err(_) => {
                h.last_check_status.store(0, Relaxed);
                false
            }
        };
        let transition = h.record_check(ok, settings);
        match transition {
            Some(true) => info!("endpoint {} is back up", ep.name),
            Some(false) => warning!("endpoint {} is down: {}", ep.name, describe(&result)),
            None => {}
        }
        let up = h.is_up();
        // Only after a passing check: an endpoint that is up but failing its checks
        // would just fail this too.
        if ok && up && (transition == Some(true) || Instant::now() >= models_due) {
            discovery.refresh(ep).await;
            models_due = Instant::now() + config.models_refresh_interval;
        }
        let wait = if up {
            recovery = settings.recovery_interval;
            ep.check_interval
        } else {
            let wait = recovery;
            recovery = (recovery * 3 / 2).min(settings.recovery_max_interval);
            wait
        };
        // Sleep in short slices: a shard marking the endpoint down, or a stop, cuts the
        // wait short so recovery probing starts at once.
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.is_triggered() {
                break;
            }
            monoio::time::sleep(left.min(Duration::from_millis(20))).await;
            if (up && !h.is_up()) || h.is_suspect() {
                recovery = settings.recovery_interval;
                break;
            }
        }
    }
}

fn describe(result: &Result<(u16, Duration), String>) -> String {
    match result {
        Ok((status, _)) => format!("health check answered {status}"),
        Err(e) => e.clone(),
    }
}

/// One health check: `GET <base><health path>` on a fresh connection; the status code
/// and how long the head took.
pub(crate) async fn probe(ep: &Endpoint) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    match upstream::fetch(ep, &ep.health_path, ep.check_timeout, None).await {
        Ok((status, _)) => Ok((status, started.elapsed())),
        Err(e) => Err(format!("health check: {e}")),
    }
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
