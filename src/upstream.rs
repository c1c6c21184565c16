//! Backends, the far side of the request path's `attempt` phase: the endpoints built from
//! the config with the atomics every shard shares (in flight, `health`), connecting to
//! them (`conn`), the per-shard keep-alive `pool`, and the `models` catalogue.

pub(crate) mod conn;
pub(crate) mod health;
pub(crate) mod models;
pub(crate) mod pool;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{EndpointConfig, EndpointTls, Secret, StickyConfig};
use crate::endpoint_type::EndpointType;
use crate::events::Events;
use crate::metrics::EndpointMetrics;
use crate::ratelimit::EndpointBucket;
use crate::routing::balancer::Candidate;
use crate::routing::seen::SeenKeys;
pub(crate) use conn::EndpointConn;
use health::Health;

/// One backend: its configuration, ready for the request path, and the counters every
/// shard reads and writes. A configuration generation (`live.rs`) has its own
/// `Endpoint`s; what is learnt about a backend (health, load, counters) is in `shared`,
/// carried from one generation to the next while the backend keeps its name and address.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Position in [`Upstreams::endpoints`], in this generation only: another generation
    /// may place the same backend elsewhere. What outlives a generation is keyed by
    /// [`Endpoint::uid`].
    pub(crate) index: usize,
    pub(crate) name: Box<str>,
    pub(crate) kind: EndpointType,
    pub(crate) priority: u32,
    /// Identity for rendezvous placement (hash of the name).
    pub(crate) sticky_id: u64,
    pub(crate) addrs: Box<[SocketAddr]>,
    /// The `Host` header value for this endpoint.
    pub(crate) authority: Box<[u8]>,
    pub(crate) base_path: Box<[u8]>,
    pub(crate) url: Box<str>,
    pub(crate) health_path: Box<str>,
    pub(crate) models_path: Box<str>,
    pub(crate) check_interval: Duration,
    pub(crate) check_timeout: Duration,
    /// The header lines ringway adds to every request to the endpoint (health checks and
    /// model lists included), whole, `Name: value\r\n` each: its credentials, then its
    /// static `headers`. Empty when it has neither.
    pub(crate) own_lines: Secret,
    /// The names of those headers: a client's header of one of these names never reaches
    /// the endpoint (ringway's line replaces it).
    pub(crate) own_names: Box<[Box<[u8]>]>,
    /// Whether those lines carry credentials of its own: the client's then never go along.
    pub(crate) has_auth: bool,
    /// It serves Anthropic's Messages API itself (`EndpointConfig::anthropic_native`).
    pub(crate) anthropic_native: bool,
    /// `X-Olla-Endpoint` and `X-Olla-Backend-Type`, whole, for every response it serves.
    pub(crate) olla_lines: Box<[u8]>,
    /// For an `https://` endpoint: how to make and check its TLS sessions.
    pub(crate) tls: Option<EndpointTls>,
    shared: Arc<Shared>,
}

/// What all shards share about an endpoint, on a cache line of its own: shards updating
/// one endpoint's counters do not slow down reads of another's.
#[derive(Debug)]
#[repr(C, align(64))]
struct Shared {
    /// Requests dispatched to the endpoint and not finished, on all shards.
    in_flight: AtomicU32,
    /// Requests the endpoint reports waiting in its own queue (its metrics, read by the
    /// control thread); 0 where it reports none.
    queued: AtomicU32,
    /// The bytes of those requests' bodies: what their prompts cost to prefill.
    in_flight_bytes: AtomicU64,
    /// When the control thread last read what the endpoint holds in memory (Unix ms;
    /// 0 = never); what it read is in the model catalogue.
    engine_read_unix_ms: AtomicU64,
    health: Health,
    /// Never reused in the process: keys the pools, the model statistics, the catalogue's
    /// carried lists, across generations.
    uid: u32,
    /// Its `rate_limits.per_endpoint_per_minute` bucket.
    bucket: EndpointBucket,
    /// Each shard's counters of its responses.
    metrics: EndpointMetrics,
    /// Where it connects: a later generation's endpoint of the same name carries this
    /// state only if it has the same URL. (A name re-resolved to other addresses keeps
    /// its state: the backend is the same service; an expanded name's addresses are
    /// endpoints of their own, `NAME/ADDR`.)
    url: Box<str>,
}

/// The next [`Shared::uid`].
static NEXT_UID: AtomicU32 = AtomicU32::new(1);

impl Shared {
    fn new(c: &EndpointConfig, shards: usize, health: Health) -> Shared {
        Shared {
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            in_flight_bytes: AtomicU64::new(0),
            engine_read_unix_ms: AtomicU64::new(0),
            health,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            bucket: EndpointBucket::default(),
            metrics: EndpointMetrics::new(shards),
            url: c.url.as_str().into(),
        }
    }

    /// Whether an endpoint configured as `c` is the backend this state is about.
    fn connects_as(&self, c: &EndpointConfig) -> bool {
        *self.url == *c.url
    }
}

/// Counts a request, and its body's bytes, as in flight on an endpoint until dropped.
pub(crate) struct InFlight<'a> {
    ep: &'a Endpoint,
    bytes: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let shared = &self.ep.shared;
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        shared
            .in_flight_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Endpoint {
    /// Counts a request with a body of `body_len` bytes as in flight.
    pub(crate) fn begin_request(&self, body_len: usize) -> InFlight<'_> {
        let bytes = body_len as u64;
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        self.shared
            .in_flight_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        InFlight { ep: self, bytes }
    }

    pub(crate) fn health(&self) -> &Health {
        &self.shared.health
    }

    /// Its identity across generations (never reused in the process).
    #[inline]
    pub(crate) fn uid(&self) -> u32 {
        self.shared.uid
    }

    /// Each shard's counters of its responses.
    #[inline]
    pub(crate) fn metrics(&self) -> &EndpointMetrics {
        &self.shared.metrics
    }

    /// Its `rate_limits.per_endpoint_per_minute` bucket.
    pub(crate) fn bucket(&self) -> &EndpointBucket {
        &self.shared.bucket
    }

    /// Its tag in the sticky sessions' memory (`routing::seen`, 9 bits, 511 reserved):
    /// from its identity, so a record stays the backend's whatever its index in later
    /// generations (two backends share a tag once in 511: a label, never a placement,
    /// can then be wrong).
    #[inline]
    pub(crate) fn seen_tag(&self) -> usize {
        (self.shared.uid % 511) as usize
    }

    /// Whether `other` (of another generation) is the same backend, its state carried.
    pub(crate) fn is(&self, other: &Endpoint) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// The bytes of the request bodies in flight on the endpoint.
    pub(crate) fn in_flight_bytes(&self) -> u64 {
        self.shared.in_flight_bytes.load(Ordering::Relaxed)
    }

    /// Requests waiting in the endpoint's own queue, as it last reported.
    pub(crate) fn queued(&self) -> u32 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Records the endpoint's own queue depth (the control thread, from its metrics).
    pub(crate) fn set_queued(&self, n: u32) {
        self.shared.queued.store(n, Ordering::Relaxed);
    }

    /// When what the endpoint holds in memory was last read (Unix ms; 0 = never).
    pub(crate) fn engine_read_unix_ms(&self) -> u64 {
        self.shared.engine_read_unix_ms.load(Ordering::Relaxed)
    }

    /// Records a read of what the endpoint holds (the control thread).
    pub(crate) fn set_engine_read_unix_ms(&self, at: u64) {
        self.shared.engine_read_unix_ms.store(at, Ordering::Relaxed);
    }
}

impl Candidate for Endpoint {
    #[inline]
    fn load(&self) -> u64 {
        self.requests() * crate::routing::balancer::REQUEST_LOAD + self.in_flight_bytes()
    }

    #[inline]
    fn requests(&self) -> u64 {
        u64::from(self.in_flight()) + u64::from(self.queued())
    }

    fn priority(&self) -> u32 {
        self.priority
    }

    fn id(&self) -> u64 {
        self.sticky_id
    }
}

/// One generation's endpoints, shared read-only by the shards, and (shared by all
/// generations) the sticky sessions' memory of which endpoint each key was last served by
/// and the recent events.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pub(crate) endpoints: Box<[Endpoint]>,
    pub(crate) seen: Arc<SeenKeys>,
    /// Recent endpoint state changes and warnings, for the dashboard (never written on
    /// the request path).
    pub(crate) events: Arc<Events>,
    shards: usize,
}

impl Upstreams {
    /// The first generation: every endpoint new, routable until a check says otherwise.
    pub(crate) fn new(
        configs: &[EndpointConfig],
        sticky: &StickyConfig,
        shards: usize,
    ) -> Upstreams {
        let ttl = sticky.idle_ttl.map_or(0, |t| t.as_millis() as u64);
        let endpoints = configs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let shared = Arc::new(Shared::new(c, shards, Health::default()));
                endpoint(index, c, shared)
            })
            .collect();
        Upstreams {
            endpoints,
            seen: Arc::new(SeenKeys::new(sticky.max_sessions, ttl)),
            events: Arc::new(Events::default()),
            shards,
        }
    }

    /// The generation after this one, of the endpoints `configs`. An endpoint of a name
    /// this one has, with the same URL, is the same backend: its
    /// health, breaker, load and counters carry on. Any other is new, and out of
    /// rotation until its first passing health check.
    pub(crate) fn next(&self, configs: &[EndpointConfig]) -> Upstreams {
        let endpoints = configs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let carried = self
                    .endpoints
                    .iter()
                    .find(|ep| *ep.name == *c.name && ep.shared.connects_as(c));
                let shared = match carried {
                    Some(ep) => ep.shared.clone(),
                    None => Arc::new(Shared::new(c, self.shards, Health::unproven())),
                };
                endpoint(index, c, shared)
            })
            .collect();
        Upstreams {
            endpoints,
            seen: self.seen.clone(),
            events: self.events.clone(),
            shards: self.shards,
        }
    }

    /// The endpoint of this generation that is `ep` (of another), if any.
    pub(crate) fn find(&self, ep: &Endpoint) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.is(ep))
    }
}

fn endpoint(index: usize, c: &EndpointConfig, shared: Arc<Shared>) -> Endpoint {
    Endpoint {
        index,
        name: c.name.as_str().into(),
        kind: c.kind,
        anthropic_native: c.anthropic_native,
        priority: c.priority,
        sticky_id: crate::routing::sticky::endpoint_id(&c.name),
        addrs: c.addrs.as_slice().into(),
        authority: c.authority.as_bytes().into(),
        base_path: c.base_path.as_bytes().into(),
        url: c.url.as_str().into(),
        health_path: c.health_path.as_str().into(),
        models_path: c.models_path.as_str().into(),
        check_interval: c.check_interval,
        check_timeout: c.check_timeout,
        own_lines: own_lines(c),
        own_names: c
            .auth
            .iter()
            .chain(&c.headers)
            .map(|(name, _)| name.as_bytes().into())
            .collect(),
        has_auth: c.auth.is_some(),
        olla_lines: format!(
            "X-Olla-Endpoint: {}\r\nX-Olla-Backend-Type: {}\r\n",
            c.name,
            c.kind.name()
        )
        .into_bytes()
        .into(),
        tls: c.tls.clone(),
        shared,
    }
}

/// The endpoint's own header lines, built once: credentials first, then static headers.
fn own_lines(c: &EndpointConfig) -> Secret {
    let mut lines = Vec::new();
    for (name, value) in c.auth.iter().chain(&c.headers) {
        crate::http1::push_header(&mut lines, name.as_bytes(), value.expose().as_bytes());
    }
    Secret::new(String::from_utf8(lines).expect("names and values checked by the config"))
}

/// Opens a connection to the endpoint, trying its addresses in order; `within` bounds
/// each address's TCP connect and TLS handshake together.
pub(crate) async fn connect(ep: &Endpoint, within: Duration) -> io::Result<EndpointConn> {
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for &addr in ep.addrs.iter() {
        match monoio::time::timeout(within, conn::open(addr, ep.tls.as_ref())).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => last = e,
            Err(_) if ep.tls.is_some() => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect and TLS handshake timed out",
                );
            }
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn generation(endpoints: &[(&str, &str)]) -> Config {
        let text: String = endpoints
            .iter()
            .map(|(name, url)| {
                format!("[[endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\ntype = \"vllm\"\n")
            })
            .collect();
        Config::from_toml(&text, "test").unwrap()
    }

    /// A backend keeps its state while its name and URL stay; a new name, or a known name
    /// at another URL, starts out of rotation until its first passing check.
    #[test]
    fn state_follows_name_and_url_across_generations() {
        let first = generation(&[("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")]);
        let old = Upstreams::new(&first.endpoints, &first.sticky, 2);
        assert!(
            old.endpoints.iter().all(|e| e.health().is_up()),
            "at start: routable"
        );
        old.endpoints[0].metrics().shard(1).retried.bump();
        let second = generation(&[
            ("c", "http://127.0.0.1:3"),
            ("a", "http://127.0.0.1:1"),
            ("b", "http://127.0.0.1:9"),
        ]);
        let new = old.next(&second.endpoints);
        let (c, a, b) = (&new.endpoints[0], &new.endpoints[1], &new.endpoints[2]);
        assert!(a.is(&old.endpoints[0]) && a.index == 1 && a.uid() == old.endpoints[0].uid());
        assert_eq!(a.metrics().total(|c| &c.retried), 1, "a's counters carried");
        assert!(a.health().is_up());
        assert!(!b.is(&old.endpoints[1]), "b moved: a new backend");
        assert!(
            !b.health().is_up() && !c.health().is_up(),
            "new ones wait for a check"
        );
        assert!(new.find(&old.endpoints[1]).is_none());
        assert!(Arc::ptr_eq(&new.seen, &old.seen) && Arc::ptr_eq(&new.events, &old.events));
        let uids: std::collections::HashSet<u32> = new.endpoints.iter().map(|e| e.uid()).collect();
        assert_eq!(uids.len(), 3);
    }
}
