//! The running configuration as a sequence of generations. A [`Live`] is one: the
//! validated config, that config's endpoints, and what the shards derive from it (rate
//! limits, CORS, breaker settings). The control thread builds the next one on a reload
//! (SIGHUP, `POST /internal/reload`) or when an expanded name resolves to other
//! addresses, and sends it to every shard with the model catalogue indexed for it
//! ([`Update::Live`]); each shard takes it at its next request. A request keeps the
//! generation it started with until it ends, so its endpoint indices never change under
//! it, and the backends a new generation dropped finish what they were given.
//!
//! What is learnt about a backend (health, breaker, load, counters) is carried from one
//! generation to the next by name (`Upstreams::next`).

pub(crate) mod expand;

use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use crate::clock::unix_ms;
use crate::config::{Config, EndpointConfig};
use crate::cors::Cors;
use crate::ratelimit::RateLimiter;
use crate::upstream::Upstreams;
use crate::upstream::health::Breaker;
use crate::upstream::models::Catalog;

/// One generation of the running configuration.
#[derive(Debug)]
pub(crate) struct Live {
    /// 1 for the configuration ringway started with, then one more per change.
    pub(crate) generation: u64,
    /// When it was built (Unix ms).
    pub(crate) loaded_unix_ms: u64,
    pub(crate) config: Arc<Config>,
    /// The endpoints routed to: the config's, with expanded names' addresses.
    pub(crate) upstreams: Upstreams,
    /// `[rate_limits]`'s buckets, shared by all shards; `None` when no limit is set.
    pub(crate) limits: Option<Arc<RateLimiter>>,
    /// `[cors]`; `None` when it is off.
    pub(crate) cors: Option<Cors>,
    /// How request failures open an endpoint's circuit breaker.
    pub(crate) breaker: Breaker,
}

/// A shard's handle on a generation, which each request clones: an `Rc` (a clone is a
/// plain increment, on the shard's own memory) of the `Arc` the control thread sent (a
/// clone of that would be an atomic increment on a counter every shard shares).
#[derive(Debug, Clone)]
pub(crate) struct Pinned(Rc<Shared>);

#[derive(Debug)]
struct Shared(Arc<Live>);

impl Pinned {
    pub(crate) fn new(live: Arc<Live>) -> Pinned {
        Pinned(Rc::new(Shared(live)))
    }
}

impl Deref for Pinned {
    type Target = Live;

    fn deref(&self) -> &Live {
        &(self.0).0
    }
}

/// What the control thread sends a shard.
#[derive(Debug)]
pub(crate) enum Update {
    /// A new model catalogue for the shard's current generation.
    Catalog(Arc<Catalog>),
    /// A new generation, and the catalogue indexed by its endpoints.
    Live(Arc<Live>, Arc<Catalog>),
}

impl Live {
    /// The first generation: the configuration ringway starts with, its host names at
    /// the addresses they resolved to at load.
    pub(crate) fn first(config: Arc<Config>, shards: usize) -> Live {
        let (endpoints, _) = expand::endpoints(&config, &expand::Answers::new());
        let upstreams = Upstreams::new(&endpoints, &config.sticky, shards);
        Live {
            generation: 1,
            loaded_unix_ms: unix_ms(),
            limits: RateLimiter::new(&config.rate_limits).map(Arc::new),
            cors: Cors::new(&config.cors),
            breaker: Breaker::new(&config.health),
            upstreams,
            config,
        }
    }

    /// The generation after this one: `config`, routing to `endpoints` (the config's own,
    /// or their expansion). Backends keep their state by name; the rate-limit buckets are
    /// kept while `[rate_limits]` is unchanged.
    pub(crate) fn next(&self, config: Arc<Config>, endpoints: &[EndpointConfig]) -> Live {
        let same_limits =
            format!("{:?}", config.rate_limits) == format!("{:?}", self.config.rate_limits);
        let limits = match same_limits {
            true => self.limits.clone(),
            false => RateLimiter::new(&config.rate_limits).map(Arc::new),
        };
        Live {
            generation: self.generation + 1,
            loaded_unix_ms: unix_ms(),
            upstreams: self.upstreams.next(endpoints),
            limits,
            cors: Cors::new(&config.cors),
            breaker: Breaker::new(&config.health),
            config,
        }
    }
}

/// The keys a running ringway cannot change, each as `(key, running value, new value)`
/// when `new` differs from `running`: they take effect at the next start.
pub(crate) fn restart_only(running: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |key: &str, a: String, b: String| {
        if a != b {
            changed.push(format!(
                "{key} changed ({a} -> {b}): it takes effect at the next start"
            ));
        }
    };
    let (r, n) = (&running.server, &new.server);
    check("server.listen", r.listen.to_string(), n.listen.to_string());
    check("server.shards", r.shards.to_string(), n.shards.to_string());
    check(
        "server.pin_cores",
        r.pin_cores.to_string(),
        n.pin_cores.to_string(),
    );
    check(
        "server.driver",
        format!("{:?}", r.driver),
        format!("{:?}", n.driver),
    );
    check(
        "server.max_connections",
        r.max_connections.to_string(),
        n.max_connections.to_string(),
    );
    check(
        "log.access",
        format!("{:?}", running.access_log),
        format!("{:?}", new.access_log),
    );
    check(
        "log.access_path",
        format!("{:?}", running.access_log_path),
        format!("{:?}", new.access_log_path),
    );
    check(
        "sticky.max_sessions",
        running.sticky.max_sessions.to_string(),
        new.sticky.max_sessions.to_string(),
    );
    check(
        "sticky.idle_ttl_ms",
        format!("{:?}", running.sticky.idle_ttl),
        format!("{:?}", new.sticky.idle_ttl),
    );
    check(
        "proxy.pool_idle_timeout_ms",
        format!("{:?}", running.proxy.pool_idle_timeout),
        format!("{:?}", new.proxy.pool_idle_timeout),
    );
    check(
        "proxy.pool_max_idle",
        running.proxy.pool_max_idle.to_string(),
        new.proxy.pool_max_idle.to_string(),
    );
    // The listener speaks TLS or plain HTTP for its life; its certificate, and the files
    // it is read from, change live.
    let tls = |c: &Config| match c.server.tls {
        Some(_) => "set".to_string(),
        None => "unset".to_string(),
    };
    check("server.tls_cert_file", tls(running), tls(new));
    changed
}

/// `new` with the keys [`restart_only`] names set back to the running values, so what
/// the status pages show is what runs.
pub(crate) fn keep_restart_only(running: &Config, mut new: Config) -> Config {
    let (r, n) = (&running.server, &mut new.server);
    n.listen = r.listen;
    n.shards = r.shards;
    n.pin_cores = r.pin_cores;
    n.driver = r.driver;
    n.max_connections = r.max_connections;
    new.access_log = running.access_log;
    new.access_log_path = running.access_log_path.clone();
    new.sticky.max_sessions = running.sticky.max_sessions;
    new.sticky.idle_ttl = running.sticky.idle_ttl;
    new.proxy.pool_idle_timeout = running.proxy.pool_idle_timeout;
    new.proxy.pool_max_idle = running.proxy.pool_max_idle;
    if running.server.tls.is_some() != new.server.tls.is_some() {
        new.server.tls = running.server.tls.clone();
    }
    new
}
