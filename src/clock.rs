//! The two clocks ringway reads: wall-clock Unix time for what people read (log lines,
//! status pages), and milliseconds on the monotonic clock for deadlines kept in atomics
//! that every shard shares (a breaker's cool-down); nanoseconds on the same clock for the
//! rate limits' buckets.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the system clock is set before it).
pub(crate) fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    unix_time().as_millis() as u64
}

/// `at` as milliseconds on a process-wide monotonic clock: a value an atomic can hold.
/// Callers pass the instant they already read for the phase they are in.
pub(crate) fn mono_ms(at: Instant) -> u64 {
    let since = since_start(at);
    since.as_secs() * 1000 + u64::from(since.subsec_millis())
}

/// `at` as nanoseconds on the same clock as [`mono_ms`] (584 years fit).
pub(crate) fn mono_ns(at: Instant) -> u64 {
    let since = since_start(at);
    since.as_secs() * 1_000_000_000 + u64::from(since.subsec_nanos())
}

fn since_start(at: Instant) -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    at.saturating_duration_since(start)
}

/// `mono` (a [`mono_ns`] reading) as nanoseconds since the Unix epoch, by the offset
/// between the two clocks, read again at most once a second: what a header in whole
/// seconds needs (`X-RateLimit-Reset`) without a wall-clock read per request. A step
/// of the system clock shows within a second.
pub(crate) fn unix_ns_of(mono: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    /// Unix time minus the monotonic clock, and when (`mono_ns`) it was read; 0: never.
    static OFFSET: AtomicU64 = AtomicU64::new(0);
    static READ_AT: AtomicU64 = AtomicU64::new(0);
    let read_at = READ_AT.load(Relaxed);
    let offset = if read_at == 0 || mono.abs_diff(read_at) > 1_000_000_000 {
        let at = Instant::now();
        let unix = unix_time();
        let now = mono_ns(at).max(1);
        let unix_ns = unix.as_secs() * 1_000_000_000 + u64::from(unix.subsec_nanos());
        let offset = unix_ns.saturating_sub(now);
        // Shards racing here store offsets a few nanoseconds apart: either will do.
        OFFSET.store(offset, Relaxed);
        READ_AT.store(now, Relaxed);
        offset
    } else {
        OFFSET.load(Relaxed)
    };
    offset.saturating_add(mono)
}

/// [`mono_ms`] of now.
pub(crate) fn now_ms() -> u64 {
    mono_ms(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_counts_from_the_first_reading() {
        now_ms();
        let a = Instant::now();
        let (ms_a, ms_b) = (mono_ms(a), mono_ms(a + Duration::from_millis(250)));
        assert_eq!(ms_b - ms_a, 250);
        let ns = mono_ns(a + Duration::from_nanos(1500)) - mono_ns(a);
        assert_eq!(ns, 1500);
        assert!(mono_ms(a - Duration::from_millis(1)) <= ms_a);
        assert!(unix_ms() > 1_700_000_000_000);
        let now = mono_ns(Instant::now());
        let unix = unix_ns_of(now) / 1_000_000;
        assert!(unix.abs_diff(unix_ms()) < 50, "{unix} vs {}", unix_ms());
        assert_eq!(unix_ns_of(now + 7) - unix_ns_of(now), 7);
    }
}
