//! Active health checks: one loop per endpoint, on the control thread, writing the
//! endpoint's shared [`Health`](crate::upstream::health::Health) that every shard reads.
//! A healthy endpoint is checked every `check_interval_ms` (its own, honoured per
//! endpoint); a down one fast (`recovery_interval_ms`, growing to
//! `recovery_max_interval_ms`), and at once when a shard marks it down or its breaker
//! opens.

use std::time::{Duration, Instant};

use super::discovery::Discovery;
use super::fetch::fetch;
use crate::clock::unix_ms;
use crate::config::Config;
use crate::events::{Events, Kind};
use crate::log::{info, warning};
use crate::stop::StopSignal;
use crate::upstream::Endpoint;

/// Checks one endpoint until `stop` fires, and reads its model list when due. A backend
/// carried from the generation before keeps its schedule (a reload or an address change
/// does not check and list the whole fleet at once); a new one, or one that is down, is
/// checked at once.
pub(super) async fn watch(
    ep: &Endpoint,
    events: &Events,
    config: &Config,
    stop: &StopSignal,
    discovery: &Discovery,
) {
    let settings = &config.health;
    let mut recovery = settings.recovery_interval;
    let listed = discovery.listed_unix_ms(ep);
    let mut models_due = Instant::now() + left_of(listed, config.models_refresh_interval);
    let mut first_up = !ep.health().is_up() && ep.health().snapshot().last_change_unix_ms == 0;
    if ep.health().is_up() {
        let checked = ep.health().snapshot().last_check_unix_ms;
        pause(ep, events, left_of(checked, ep.check_interval), true, stop).await;
    }
    while !stop.is_triggered() {
        let h = ep.health();
        if h.is_suspect() {
            events.record(Kind::BreakerOpen, Some(&ep.name), "circuit breaker opened");
        }
        let result = probe(ep).await;
        let ok = match &result {
            Ok((status, latency)) => {
                h.record_probe(Some(*status), *latency);
                (200..300).contains(status)
            }
            Err(_) => {
                h.record_probe(None, Duration::ZERO);
                false
            }
        };
        let transition = h.record_check(ok, settings);
        match transition {
            // A new endpoint (a reload, an address) has never been up: it is "up".
            Some(true) if first_up => {
                first_up = false;
                info!("endpoint {} is up", ep.name);
                events.record(Kind::EndpointUp, Some(&ep.name), "up");
            }
            Some(true) => {
                info!("endpoint {} is back up", ep.name);
                events.record(Kind::EndpointUp, Some(&ep.name), "back up");
            }
            Some(false) => {
                warning!("endpoint {} is down: {}", ep.name, describe(&result));
                events.record(Kind::EndpointDown, Some(&ep.name), describe(&result));
            }
            None => {}
        }
        let up = h.is_up();
        // Only after a passing check: an endpoint that is up but failing its checks
        // would just fail this too.
        if ok && up && (transition == Some(true) || Instant::now() >= models_due) {
            discovery.refresh(ep, events).await;
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
        if pause(ep, events, wait, up, stop).await {
            recovery = settings.recovery_interval;
        }
    }
}

/// Waits `wait` before the next check, in short slices: a shard marking the endpoint
/// down (it was `up`), its breaker opening, or a stop cuts the wait short, so recovery
/// probing starts at once. Whether it was cut short by the endpoint.
async fn pause(
    ep: &Endpoint,
    events: &Events,
    wait: Duration,
    up: bool,
    stop: &StopSignal,
) -> bool {
    let h = ep.health();
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.is_triggered() {
            return false;
        }
        monoio::time::sleep(left.min(Duration::from_millis(20))).await;
        if (up && !h.is_up()) || h.is_suspect() {
            if up && !h.is_up() {
                let why = "a request could not connect";
                events.record(Kind::EndpointDown, Some(&ep.name), why);
            }
            return true;
        }
    }
}

/// What is left of `every` since `last_unix_ms` (0: never, nothing left). A wall clock
/// set back leaves at most `every`.
pub(super) fn left_of(last_unix_ms: u64, every: Duration) -> Duration {
    if last_unix_ms == 0 {
        return Duration::ZERO;
    }
    every.saturating_sub(Duration::from_millis(
        unix_ms().saturating_sub(last_unix_ms),
    ))
}

fn describe(result: &Result<(u16, Duration), String>) -> String {
    match result {
        Ok((status, _)) => format!("health check answered {status}"),
        Err(e) => e.clone(),
    }
}

/// One health check: `GET <base><health path>` on a fresh connection; the status code
/// and how long the head took.
async fn probe(ep: &Endpoint) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    match fetch(ep, &ep.health_path, ep.check_timeout, None).await {
        Ok((status, _)) => Ok((status, started.elapsed())),
        Err(e) => Err(format!("health check: {e}")),
    }
}
