//! Backpressure from backends, part of the `attempt` phase: an endpoint that answers
//! `429 Too Many Requests` or `503 Service Unavailable` with `Retry-After` is kept out of
//! placement for that long, on every shard (`Health::mark_busy`), instead of being sent
//! the next request a microsecond later. The request itself is retried on another
//! endpoint when `proxy.retry_on_status` lists the status (429 and 503 by default) and
//! one serves the model; otherwise the endpoint's own answer reaches the client.
//!
//! `Retry-After` comes from the backend, so it is untrusted: only delta-seconds are read
//! (an HTTP-date is ignored: a backend's clock is not ours to trust), and the wait is
//! capped at [`MAX_BUSY`], so one answer cannot take an endpoint out for longer.

use std::time::{Duration, Instant};

use crate::clock;
use crate::http1::Header;
use crate::log::debug;
use crate::upstream::Endpoint;

/// Marks `ep` busy when its answer (`status`, head in `buf` with `headers`) at `now`
/// asks for a pause.
pub(crate) fn heed(ep: &Endpoint, status: u16, headers: &[Header], buf: &[u8], now: Instant) {
    if !is_pushback(status) {
        return;
    }
    if let Some(wait) = retry_after(headers, buf) {
        debug!("endpoint {} answered {status}: busy for {wait:?}", ep.name);
        ep.health()
            .mark_busy(clock::mono_ms(now) + wait.as_millis() as u64);
    }
}

/// The longest a single `Retry-After` keeps an endpoint out.
pub(crate) const MAX_BUSY: Duration = Duration::from_secs(60);

/// Whether a status is the endpoint pacing us rather than failing (429 Too Many
/// Requests): it does not count towards the circuit breaker.
pub(crate) fn is_pacing(status: u16) -> bool {
    status == 429
}

/// Whether a status asks the client to come back later.
pub(crate) fn is_pushback(status: u16) -> bool {
    status == 429 || status == 503
}

/// The wait a response's `Retry-After` asks for (its first one), capped at [`MAX_BUSY`];
/// `None` without one, or when it is not delta-seconds. `buf` holds the head.
pub(crate) fn retry_after(headers: &[Header], buf: &[u8]) -> Option<Duration> {
    let h = headers
        .iter()
        .find(|h| h.name.get(buf).eq_ignore_ascii_case(b"retry-after"))?;
    delta_seconds(h.value.get(buf)).map(|s| Duration::from_secs(s).min(MAX_BUSY))
}

/// `delta-seconds` (RFC 9110 §10.2.3): digits only, surrounding whitespace allowed.
fn delta_seconds(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Anything beyond the cap is the cap: no need to parse twenty digits.
    if v.len() > 6 {
        return Some(u64::MAX);
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delta_seconds_count_and_long_waits_are_capped() {
        assert_eq!(delta_seconds(b"2"), Some(2));
        assert_eq!(delta_seconds(b" 120 "), Some(120));
        assert_eq!(delta_seconds(b"0"), Some(0));
        for bad in [
            &b""[..],
            b" ",
            b"-1",
            b"1.5",
            b"2s",
            b"Wed, 21 Oct 2015 07:28:00 GMT",
            b"0x10",
        ] {
            assert_eq!(
                delta_seconds(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(delta_seconds(b"99999999999999999999999"), Some(u64::MAX));
        assert_eq!(
            Duration::from_secs(delta_seconds(b"99999999999").unwrap()).min(MAX_BUSY),
            MAX_BUSY
        );
    }

    #[test]
    fn the_header_is_found_in_any_case() {
        let head =
            b"HTTP/1.1 429 Too Many Requests\r\nX-A: 1\r\nretry-AFTER: 7\r\nRetry-After: 9\r\n\r\n";
        let limits = crate::http1::HeadLimits {
            max_bytes: 4096,
            max_headers: 16,
        };
        let mut headers = Vec::new();
        crate::http1::parse_response(head, &limits, false, &mut headers)
            .unwrap()
            .unwrap();
        assert_eq!(retry_after(&headers, head), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers[..1], head), None);
        assert!(is_pushback(429) && is_pushback(503) && !is_pushback(502));
        assert!(is_pacing(429) && !is_pacing(503));
    }
}
