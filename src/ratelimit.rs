//! Rate limits (`[rate_limits]`), shared by every shard: each bucket is one atomic word
//! taken from with a compare-and-swap, so the request path takes no lock and allocates
//! nothing. The request path's `admission` step asks for a request's global, per-client
//! or `/internal/health` token before `route`; `attempt` asks for an endpoint's token
//! once it has picked the endpoint.
//!
//! A bucket is a token bucket kept as its "theoretical arrival time" (GCRA, the generic
//! cell rate algorithm): the instant at which it will be full again. A request costs one
//! `interval` (a minute divided by the rate) and is admitted while that instant runs at
//! most `burst - 1` intervals ahead of now. That is the token bucket Olla uses
//! (golang.org/x/time/rate with per_minute/60 tokens a second and room for `burst`,
//! full at start), in one word instead of a token count and a timestamp; a bucket whose
//! instant has passed is full, the same as a new one.
//!
//! Client buckets (one per address, and one per address for `/internal/health`) live in
//! a table of fixed size, open-addressed by a hash of the address: an address may sit in
//! one window of [`WINDOW`] slots. A full bucket holds nothing worth keeping, so its
//! slot goes to the next new address that needs one: nothing needs sweeping, and memory
//! is bounded whatever the number of clients. When every slot of a window holds a bucket
//! still refilling, the one closest to full is taken over and starts afresh: a flood of
//! distinct addresses loosens the per-client limit of the quietest clients first, never
//! of the busiest, and the global limit still holds.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::{Cidr, RateLimitConfig};

/// Slots of the client table: 256 KiB, allocated only when a per-client limit is set.
const CLIENT_SLOTS: usize = 1 << 14;
/// Slots an address may occupy, consecutive: 128 bytes, two cache lines.
const WINDOW: usize = 8;
/// Most `X-Forwarded-For` entries read, from the right, before giving up on them.
const MAX_HOPS: usize = 16;
/// Longest `X-Forwarded-For` entry taken for an address (`[v6]:port` is at most 47).
const MAX_HOP_LEN: usize = 64;

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Global,
    /// Per client address.
    Client,
    /// `/internal/health`, per client address.
    Health,
    Endpoint,
}

impl Limit {
    pub(crate) const ALL: [Limit; 4] =
        [Limit::Global, Limit::Client, Limit::Health, Limit::Endpoint];

    /// The configuration key that sets it.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Limit::Global => "rate_limits.global_requests_per_minute",
            Limit::Client => "rate_limits.per_ip_requests_per_minute",
            Limit::Health => "rate_limits.health_requests_per_minute",
            Limit::Endpoint => "rate_limits.per_endpoint_requests_per_minute",
        }
    }

    /// Its label in the metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Limit::Global => "global",
            Limit::Client => "per_ip",
            Limit::Health => "health",
            Limit::Endpoint => "per_endpoint",
        }
    }
}

/// A rate: `per_minute` requests, in bursts of up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_minute: u32,
    burst: u32,
    /// Nanoseconds a request costs: how long its token takes to come back.
    interval: u64,
    /// How far ahead of now a bucket's instant may run: `burst - 1` intervals.
    tolerance: u64,
}

impl Rate {
    fn new(per_minute: u32, burst: u32) -> Option<Rate> {
        (per_minute > 0).then(|| {
            let interval = (60_000_000_000 / u64::from(per_minute)).max(1);
            let burst = burst.max(1);
            Rate {
                per_minute,
                burst,
                interval,
                tolerance: interval.saturating_mul(u64::from(burst - 1)),
            }
        })
    }

    /// The numbers of a bucket whose instant is `tat`, at `now`.
    fn quota(&self, tat: u64, now: u64) -> Quota {
        let horizon = now.saturating_add(self.tolerance);
        let remaining = match horizon.checked_sub(tat) {
            Some(room) => (room / self.interval + 1).min(u64::from(self.burst)) as u32,
            None => 0,
        };
        Quota {
            limit: self.per_minute,
            remaining,
            full_in: tat.saturating_sub(now),
        }
    }
}

/// One bucket: the instant (`clock::mono_ns`) at which it is full again.
#[derive(Debug, Default)]
struct Bucket(AtomicU64);

impl Bucket {
    /// Takes a token at `now`: the bucket's new instant, or how long until a token is
    /// there (nothing is taken then).
    fn take(&self, rate: &Rate, now: u64) -> Result<u64, u64> {
        let mut tat = self.0.load(Relaxed);
        loop {
            let from = tat.max(now);
            let ahead = from - now;
            if ahead > rate.tolerance {
                return Err(ahead - rate.tolerance);
            }
            let next = from.saturating_add(rate.interval);
            match self.0.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(next),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Returns a token taken for a request that another limit then refused.
    fn give_back(&self, rate: &Rate) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |tat| {
            Some(tat.saturating_sub(rate.interval))
        });
    }

    fn instant(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A bucket on a cache line of its own: shards taking from it do not slow down another.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Lone(Bucket);

/// An endpoint's `per_endpoint_per_minute` bucket. It lives with the endpoint's shared
/// state (`upstream::Endpoint::bucket`), so it follows the backend across configuration
/// generations.
#[derive(Debug, Default)]
pub(crate) struct EndpointBucket(Lone);

/// A slot of the client table: the hash of whose bucket it holds (0 = none), and the
/// bucket.
#[derive(Debug, Default)]
#[repr(C, align(16))]
struct Slot {
    key: AtomicU64,
    bucket: Bucket,
}

/// A bucket's numbers, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    /// Requests per minute.
    pub(crate) limit: u32,
    /// Requests it would admit right now.
    pub(crate) remaining: u32,
    /// Nanoseconds until it is full again.
    pub(crate) full_in: u64,
}

/// A request beyond a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) limit: Limit,
    /// Nanoseconds until the bucket has a token again.
    pub(crate) wait: u64,
    /// The refusing bucket's numbers.
    pub(crate) quota: Quota,
}

impl Refusal {
    /// Seconds for `Retry-After`: the wait rounded up, at least 1.
    pub(crate) fn retry_after_s(&self) -> u32 {
        seconds_up(self.wait).max(1)
    }
}

/// Nanoseconds as whole seconds, rounded up.
pub(crate) fn seconds_up(ns: u64) -> u32 {
    ns.div_ceil(1_000_000_000).min(u64::from(u32::MAX)) as u32
}

/// What the limits make of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No limit of its kind is set.
    Unlimited,
    /// Admitted; the numbers of the bucket its answer reports.
    Admitted(Quota),
    Refused(Refusal),
}

/// Which client buckets a key names (the seed of the address's hash).
#[derive(Clone, Copy)]
enum Table {
    Client = 1,
    Health = 2,
}

/// Every bucket, shared by the shards (and by nothing else).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    global: Option<Rate>,
    client: Option<Rate>,
    health: Option<Rate>,
    endpoint: Option<Rate>,
    global_bucket: Lone,
    /// Empty without a per-client limit.
    clients: Box<[Slot]>,
    /// The peers whose `X-Forwarded-For` and `X-Real-IP` name the client; `None` when
    /// `trust_proxy_headers` is off.
    trusted: Option<Box<[Cidr]>>,
}

impl RateLimiter {
    /// The buckets `config` asks for; `None` when it sets no limit.
    pub(crate) fn new(config: &RateLimitConfig) -> Option<RateLimiter> {
        if !config.any() {
            return None;
        }
        let rate = |per_minute| Rate::new(per_minute, config.burst);
        let (client, health) = (
            rate(config.per_ip_per_minute),
            rate(config.health_per_minute),
        );
        let endpoint = rate(config.per_endpoint_per_minute);
        let slots = if client.is_some() || health.is_some() {
            CLIENT_SLOTS
        } else {
            0
        };
        Some(RateLimiter {
            global: rate(config.global_per_minute),
            client,
            health,
            endpoint,
            global_bucket: Lone::default(),
            clients: (0..slots).map(|_| Slot::default()).collect(),
            trusted: config
                .trust_proxy_headers
                .then(|| config.trusted_proxies.as_slice().into()),
        })
    }

    /// The trusted proxies, when `trust_proxy_headers` is on.
    pub(crate) fn trusted_proxies(&self) -> Option<&[Cidr]> {
        self.trusted.as_deref()
    }

    /// A proxied request from `client` at `now` (`clock::mono_ns`): its client bucket,
    /// then the global one. Its answer reports the client bucket, or the global one when
    /// there is no per-client limit.
    pub(crate) fn admit_request(&self, client: IpAddr, now: u64) -> Verdict {
        let mut reported = None;
        let mut taken = None;
        if let Some(rate) = &self.client {
            let bucket = self.client_bucket(Table::Client, client, now);
            match bucket.take(rate, now) {
                Ok(tat) => {
                    reported = Some(rate.quota(tat, now));
                    taken = Some((bucket, rate));
                }
                Err(wait) => return refused(Limit::Client, rate, bucket, wait, now),
            }
        }
        if let Some(rate) = &self.global {
            let bucket = &self.global_bucket.0;
            match bucket.take(rate, now) {
                Ok(tat) => {
                    reported.get_or_insert(rate.quota(tat, now));
                }
                Err(wait) => {
                    // The client is not charged for a request nobody serves.
                    if let Some((bucket, rate)) = taken {
                        bucket.give_back(rate);
                    }
                    return refused(Limit::Global, rate, bucket, wait, now);
                }
            }
        }
        reported.map_or(Verdict::Unlimited, Verdict::Admitted)
    }

    /// A request for `/internal/health` from `client` at `now`: its health bucket only.
    pub(crate) fn admit_health(&self, client: IpAddr, now: u64) -> Verdict {
        let Some(rate) = &self.health else {
            return Verdict::Unlimited;
        };
        let bucket = self.client_bucket(Table::Health, client, now);
        match bucket.take(rate, now) {
            Ok(tat) => Verdict::Admitted(rate.quota(tat, now)),
            Err(wait) => refused(Limit::Health, rate, bucket, wait, now),
        }
    }

    /// Whether requests are limited by client or globally, or `/internal/health` is:
    /// if not, [`Self::admit_request`] and [`Self::admit_health`] find nothing to do.
    pub(crate) fn limits_clients(&self) -> bool {
        self.global.is_some() || self.client.is_some() || self.health.is_some()
    }

    /// Whether endpoints are limited: if not, [`Self::take_endpoint`] always admits.
    pub(crate) fn limits_endpoints(&self) -> bool {
        self.endpoint.is_some()
    }

    /// A token of an endpoint's bucket at `now`, or how it refused.
    pub(crate) fn take_endpoint(&self, bucket: &EndpointBucket, now: u64) -> Result<(), Refusal> {
        let Some(rate) = &self.endpoint else {
            return Ok(());
        };
        let bucket = &bucket.0;
        match bucket.0.take(rate, now) {
            Ok(_) => Ok(()),
            Err(wait) => match refused(Limit::Endpoint, rate, &bucket.0, wait, now) {
                Verdict::Refused(refusal) => Err(refusal),
                _ => Ok(()),
            },
        }
    }

    /// The bucket of `client` in `table`: the slot its hash already holds in its window,
    /// else a free or full one, else the one closest to full, taken over.
    fn client_bucket(&self, table: Table, client: IpAddr, now: u64) -> &Bucket {
        let key = address_key(client, table as u64);
        let start = (key as usize) % (CLIENT_SLOTS / WINDOW) * WINDOW;
        let window = &self.clients[start..start + WINDOW];
        let mut spare = None;
        let mut stalest = (0, u64::MAX);
        for (i, slot) in window.iter().enumerate() {
            let held = slot.key.load(Relaxed);
            if held == key {
                return &slot.bucket;
            }
            let tat = slot.bucket.instant();
            if spare.is_none() && (held == 0 || tat <= now) {
                spare = Some((i, held));
            }
            if tat < stalest.1 {
                stalest = (i, tat);
            }
        }
        let (i, held) = spare.unwrap_or((stalest.0, window[stalest.0].key.load(Relaxed)));
        let slot = &window[i];
        // Two shards may claim a slot at once, or its old client take a token as it
        // changes hands: either way a token lands in the wrong bucket, once.
        if slot
            .key
            .compare_exchange(held, key, Relaxed, Relaxed)
            .is_ok()
            && slot.bucket.instant() > now
        {
            slot.bucket.0.store(0, Relaxed);
        }
        &slot.bucket
    }
}

fn refused(limit: Limit, rate: &Rate, bucket: &Bucket, wait: u64, now: u64) -> Verdict {
    Verdict::Refused(Refusal {
        limit,
        wait,
        quota: rate.quota(bucket.instant(), now),
    })
}

/// The hash of an address (IPv4 and IPv4-mapped IPv6 alike) for `table`; never 0.
fn address_key(ip: IpAddr, table: u64) -> u64 {
    let bits = match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    };
    xxhash_rust::xxh3::xxh3_64_with_seed(&bits.to_le_bytes(), table).max(1)
}

/// Whether `ip` is in one of the `trusted` blocks.
pub(crate) fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client a trusted proxy at `peer` forwards for: the right-most address of its
/// `X-Forwarded-For` that is not itself a trusted proxy (`forwarded`: the values of
/// the request's `X-Forwarded-For` headers, last first), or the left-most when all are;
/// without `X-Forwarded-For`, its `X-Real-IP`. Only the proxies' own entries at the
/// right are believed: anything left of the first untrusted one was written by the
/// client. An entry that is not an address (garbage, `unknown`, a name), or more than
/// [`MAX_HOPS`] trusted ones, and the answer is the peer.
pub(crate) fn forwarded_client<'a>(
    peer: IpAddr,
    trusted: &[Cidr],
    forwarded: impl Iterator<Item = &'a [u8]>,
    real_ip: impl FnOnce() -> Option<&'a [u8]>,
) -> IpAddr {
    let mut hops = 0;
    let mut farthest = None;
    for value in forwarded {
        for entry in value.rsplit(|&b| b == b',') {
            hops += 1;
            if hops > MAX_HOPS {
                return peer;
            }
            let Some(ip) = parse_hop(entry) else {
                return peer;
            };
            if !is_trusted(trusted, ip) {
                return ip;
            }
            farthest = Some(ip);
        }
    }
    if let Some(ip) = farthest {
        return ip;
    }
    real_ip().and_then(parse_hop).unwrap_or(peer)
}

/// An address as proxies write one hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`, with spaces around; IPv4-mapped IPv6 as IPv4.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let entry = entry.trim_ascii();
    if entry.len() > MAX_HOP_LEN {
        return None;
    }
    let text = std::str::from_utf8(entry).ok()?;
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr.ip(),
            Err(_) => IpAddr::V6(
                text.strip_prefix('[')?
                    .strip_suffix(']')?
                    .parse::<Ipv6Addr>()
                    .ok()?,
            ),
        },
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn config(text: &str) -> RateLimitConfig {
        crate::config::parse_test(&format!("[rate_limits]\n{text}"))
            .unwrap()
            .rate_limits
    }

    fn limiter(text: &str) -> RateLimiter {
        RateLimiter::new(&config(text)).expect("a limit is set")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Admitted requests' remaining counts, `Err(retry_after_s)` for refused ones.
    fn run(l: &RateLimiter, client: &str, at: u64, n: usize) -> Vec<Result<u32, u32>> {
        (0..n)
            .map(|_| match l.admit_request(ip(client), at) {
                Verdict::Admitted(q) => Ok(q.remaining),
                Verdict::Refused(r) => Err(r.retry_after_s()),
                Verdict::Unlimited => panic!("unlimited"),
            })
            .collect()
    }

    #[test]
    fn nothing_set_means_no_limiter() {
        assert!(RateLimiter::new(&config("")).is_none());
    }

    #[test]
    fn a_burst_then_one_request_per_interval() {
        // 60 a minute: a token a second; bursts of 3.
        let l = limiter("per_ip_requests_per_minute = 60\nburst_size = 3");
        let t0 = 5 * SECOND;
        assert_eq!(
            run(&l, "10.0.0.1", t0, 5),
            [Ok(2), Ok(1), Ok(0), Err(1), Err(1)]
        );
        // Half a second on: still none; Retry-After rounds the half second up.
        assert_eq!(run(&l, "10.0.0.1", t0 + SECOND / 2, 1), [Err(1)]);
        // One second on: one token back, and only one.
        assert_eq!(run(&l, "10.0.0.1", t0 + SECOND, 2), [Ok(0), Err(1)]);
        // Long idle: full again, never more than the burst.
        assert_eq!(
            run(&l, "10.0.0.1", t0 + 3600 * SECOND, 4),
            [Ok(2), Ok(1), Ok(0), Err(1)]
        );
    }

    #[test]
    fn retry_after_is_the_wait_for_the_next_token_rounded_up() {
        // 6 a minute: a token every 10 s.
        let l = limiter("per_ip_requests_per_minute = 6\nburst_size = 1");
        assert_eq!(run(&l, "10.0.0.1", SECOND, 1), [Ok(0)]);
        assert_eq!(run(&l, "10.0.0.1", SECOND, 1), [Err(10)]);
        assert_eq!(run(&l, "10.0.0.1", 8 * SECOND + 1, 1), [Err(3)]);
        assert_eq!(run(&l, "10.0.0.1", 11 * SECOND, 1), [Ok(0)]);
        let Verdict::Refused(r) = l.admit_request(ip("10.0.0.1"), 11 * SECOND) else {
            panic!("refused")
        };
        assert_eq!(r.limit, Limit::Client);
        assert_eq!(
            r.quota,
            Quota {
                limit: 6,
                remaining: 0,
                full_in: 10 * SECOND
            }
        );
        assert_eq!(seconds_up(0), 0);
        assert_eq!(seconds_up(1), 1);
        assert_eq!(seconds_up(SECOND), 1);
        assert_eq!(seconds_up(u64::MAX), u32::MAX);
    }

    #[test]
    fn clients_have_buckets_of_their_own() {
        let l = limiter("per_ip_requests_per_minute = 60\nburst_size = 2");
        assert_eq!(run(&l, "203.0.113.1", SECOND, 3), [Ok(1), Ok(0), Err(1)]);
        assert_eq!(run(&l, "203.0.113.2", SECOND, 3), [Ok(1), Ok(0), Err(1)]);
        assert_eq!(run(&l, "2001:db8::1", SECOND, 3), [Ok(1), Ok(0), Err(1)]);
        // An IPv4-mapped address is the IPv4 client.
        assert_eq!(run(&l, "::ffff:203.0.113.1", SECOND, 1), [Err(1)]);
        // /internal/health has its own buckets, at its own rate.
        let l = limiter(
            "per_ip_requests_per_minute = 60\nhealth_requests_per_minute = 120\nburst_size = 1",
        );
        assert_eq!(run(&l, "203.0.113.1", SECOND, 2), [Ok(0), Err(1)]);
        assert!(matches!(
            l.admit_health(ip("203.0.113.1"), SECOND),
            Verdict::Admitted(Quota { limit: 120, .. })
        ));
        assert!(matches!(
            l.admit_health(ip("203.0.113.1"), SECOND),
            Verdict::Refused(Refusal {
                limit: Limit::Health,
                ..
            })
        ));
    }

    #[test]
    fn the_global_bucket_refuses_without_charging_the_client() {
        let l = limiter(
            "global_requests_per_minute = 60\nper_ip_requests_per_minute = 60\nburst_size = 2",
        );
        assert_eq!(run(&l, "10.0.0.1", SECOND, 1), [Ok(1)]);
        assert_eq!(run(&l, "10.0.0.2", SECOND, 1), [Ok(1)]);
        // The global bucket is empty: the third client is refused...
        let Verdict::Refused(r) = l.admit_request(ip("10.0.0.3"), SECOND) else {
            panic!("refused")
        };
        assert_eq!(r.limit, Limit::Global);
        // ...and keeps its own tokens for when the global ones are back.
        let own = l.client_bucket(Table::Client, ip("10.0.0.3"), SECOND);
        assert!(own.instant() <= SECOND, "its token was given back");
        // Without a per-client limit the answers report the global bucket.
        let l = limiter("global_requests_per_minute = 120\nburst_size = 2");
        assert_eq!(run(&l, "10.0.0.1", SECOND, 1), [Ok(1)]);
        assert_eq!(run(&l, "10.0.0.2", SECOND, 2), [Ok(0), Err(1)]);
        assert_eq!(l.admit_health(ip("10.0.0.1"), SECOND), Verdict::Unlimited);
    }

    #[test]
    fn endpoints_have_buckets_of_their_own() {
        let l = limiter("per_endpoint_requests_per_minute = 60\nburst_size = 1");
        assert!(l.limits_endpoints() && !l.limits_clients());
        assert_eq!(l.admit_request(ip("10.0.0.1"), SECOND), Verdict::Unlimited);
        let (a, b) = (EndpointBucket::default(), EndpointBucket::default());
        assert_eq!(l.take_endpoint(&a, SECOND), Ok(()));
        let refusal = l.take_endpoint(&a, SECOND).unwrap_err();
        assert_eq!(
            (refusal.limit, refusal.retry_after_s()),
            (Limit::Endpoint, 1)
        );
        assert_eq!(l.take_endpoint(&b, SECOND), Ok(()));
        assert_eq!(l.take_endpoint(&a, 2 * SECOND), Ok(()));
    }

    #[test]
    fn rates_at_the_extremes_do_not_overflow() {
        let l = limiter(&format!(
            "per_ip_requests_per_minute = {}\nglobal_requests_per_minute = 1\nburst_size = {}",
            u32::MAX,
            u32::MAX
        ));
        assert_eq!(run(&l, "10.0.0.1", u64::MAX / 2, 1), [Ok(u32::MAX - 1)]);
        // At the end of time the numbers saturate; nothing panics.
        run(&l, "10.0.0.1", u64::MAX, 3);
        let rate = Rate::new(1, 1).unwrap();
        assert_eq!(rate.interval, 60 * SECOND);
        assert_eq!(Rate::new(u32::MAX, 1).unwrap().interval, 13);
    }

    #[test]
    fn a_full_window_gives_up_the_bucket_closest_to_full() {
        let l = limiter("per_ip_requests_per_minute = 60\nburst_size = 1");
        // Addresses whose keys share one window, found by search.
        let window =
            |a: IpAddr| address_key(a, Table::Client as u64) as usize % (CLIENT_SLOTS / WINDOW);
        let first = ip("198.51.100.0");
        let mates: Vec<IpAddr> = (1..u32::MAX)
            .map(|n| IpAddr::V4((u32::from(std::net::Ipv4Addr::new(198, 51, 0, 0)) + n).into()))
            .filter(|a| *a != first && window(*a) == window(first))
            .take(WINDOW)
            .collect();
        // Fill the window, one second apart: the first client's bucket is the fullest.
        let mut clients = vec![first];
        clients.extend_from_slice(&mates[..WINDOW - 1]);
        for (i, c) in clients.iter().enumerate() {
            assert!(matches!(
                l.admit_request(*c, SECOND * 100 + i as u64 * SECOND / 10),
                Verdict::Admitted(_)
            ));
        }
        let now = SECOND * 100 + SECOND / 2;
        for c in &clients {
            assert!(
                matches!(l.admit_request(*c, now), Verdict::Refused(_)),
                "{c}"
            );
        }
        // A ninth client takes over the first one's slot...
        assert!(matches!(
            l.admit_request(mates[WINDOW - 1], now),
            Verdict::Admitted(_)
        ));
        // ...which starts afresh; the others keep theirs.
        assert!(matches!(l.admit_request(first, now), Verdict::Admitted(_)));
        for c in &clients[2..] {
            assert!(
                matches!(l.admit_request(*c, now), Verdict::Refused(_)),
                "{c}"
            );
        }
        // Once refilled, a slot is anyone's, and its client simply gets another.
        let later = now + 10 * SECOND;
        for c in mates.iter().chain([&first]) {
            assert!(
                matches!(l.admit_request(*c, later), Verdict::Admitted(_)),
                "{c}"
            );
        }
    }

    #[test]
    fn shards_racing_for_one_bucket_get_exactly_its_tokens() {
        let l = limiter("global_requests_per_minute = 60\nburst_size = 1000");
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (l, admitted) = (&l, &admitted);
                s.spawn(move || {
                    for _ in 0..600 {
                        let client = IpAddr::V4([10, 0, 0, t].into());
                        if let Verdict::Admitted(_) = l.admit_request(client, SECOND) {
                            admitted.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Relaxed), 1000);
    }

    fn trusted() -> Vec<Cidr> {
        ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
            .iter()
            .map(|s| Cidr::parse(s).unwrap())
            .collect()
    }

    /// The client behind trusted peer 10.0.0.1, given X-Forwarded-For values (first to
    /// last) and an X-Real-IP.
    fn behind(forwarded: &[&str], real_ip: Option<&str>) -> String {
        let peer = ip("10.0.0.1");
        let values = forwarded.iter().rev().map(|v| v.as_bytes());
        let client = forwarded_client(peer, &trusted(), values, || real_ip.map(str::as_bytes));
        client.to_string()
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        assert_eq!(behind(&["203.0.113.7"], None), "203.0.113.7");
        // The client wrote the left part: the last proxy's entry is what counts.
        assert_eq!(behind(&["1.1.1.1, 203.0.113.7"], None), "203.0.113.7");
        assert_eq!(
            behind(&["1.1.1.1, 203.0.113.7, 10.0.0.9"], None),
            "203.0.113.7"
        );
        // Several headers are one list.
        assert_eq!(
            behind(&["1.1.1.1", "203.0.113.7, 10.0.0.9"], None),
            "203.0.113.7"
        );
        assert_eq!(behind(&["203.0.113.7", "10.0.0.9"], None), "203.0.113.7");
        // Every hop a trusted proxy: the farthest.
        assert_eq!(behind(&["10.0.0.5, 10.0.0.9"], None), "10.0.0.5");
        // X-Real-IP only without X-Forwarded-For.
        assert_eq!(behind(&[], Some(" 203.0.113.8 ")), "203.0.113.8");
        assert_eq!(behind(&["203.0.113.7"], Some("203.0.113.8")), "203.0.113.7");
        assert_eq!(behind(&[], None), "10.0.0.1");
    }

    #[test]
    fn hops_in_every_notation() {
        for (hop, want) in [
            ("203.0.113.7:5678", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("\t203.0.113.7 ", "203.0.113.7"),
        ] {
            assert_eq!(behind(&[hop], None), want, "{hop}");
        }
    }

    #[test]
    fn hostile_forwarded_headers_fall_back_to_the_peer() {
        let long = "10.0.0.2, ".repeat(100) + "10.0.0.3";
        let huge = "9".repeat(10_000);
        for hostile in [
            "garbage",
            "unknown",
            "",
            " , ",
            "203.0.113.7, ",
            "999.1.1.1",
            "1.2.3.4.5",
            "[::1",
            "::1]",
            "[203.0.113.7]",
            "fe80::1%eth0",
            "203.0.113.7:99999",
            "\u{0}203.0.113.7",
            "203.0.113.7\u{ff}",
            "203.0.113.7 203.0.113.8",
            huge.as_str(),
            // More trusted hops than are read.
            long.as_str(),
        ] {
            assert_eq!(behind(&[hostile], None), "10.0.0.1", "{hostile:?}");
        }
        // Bytes that are not UTF-8.
        let peer = ip("10.0.0.1");
        let bad: &[u8] = b"203.0.113.\xff";
        let got = forwarded_client(peer, &trusted(), [bad].into_iter(), || None);
        assert_eq!(got, peer);
        assert_eq!(behind(&[], Some("nope")), "10.0.0.1");
        // A hop "2001:db8::1:443" is a valid IPv6 address, not a port: taken as is.
        assert_eq!(
            parse_hop(b"2001:db8::1:443"),
            Some(ip("2001:db8::1:443")),
            "ambiguous but valid"
        );
    }

    #[test]
    fn trust_follows_the_blocks() {
        let t = trusted();
        assert!(is_trusted(&t, ip("127.0.0.1")));
        assert!(is_trusted(&t, ip("::ffff:10.1.2.3")));
        assert!(is_trusted(&t, ip("::1")));
        assert!(!is_trusted(&t, ip("11.0.0.1")));
        assert!(!is_trusted(&t, ip("::2")));
        assert!(!is_trusted(&[], ip("127.0.0.1")));
    }
}
