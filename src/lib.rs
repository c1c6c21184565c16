//! ringway: a reverse proxy and load balancer for LLM inference servers (Ollama, vLLM,
//! SGLang, llama.cpp, LM Studio, any OpenAI-compatible server), thread-per-core on
//! io_uring, speaking OpenAI's `/v1`, Ollama's `/api` and Olla's `/olla/...` APIs.
//!
//! ```text
//!               SO_REUSEPORT: the kernel spreads connections over the shards
//!  clients ──────────┬──────────────────────┬─────────────── ...
//!               shard 0 (thread)       shard 1 (thread)         runtime.rs
//!               monoio event loop      monoio event loop
//!               ├ pool of endpoint     ├ pool of endpoint       upstream/pool.rs
//!               │ connections (own)    │ connections (own)
//!               └ balancer cursor      └ balancer cursor        routing/balancer.rs
//!                        │                      │
//!                        └── shared, lock-free: per-endpoint atomics ──┘ upstream.rs
//! ```
//!
//! One request, on the shard that accepted its connection, through the phases of
//! `proxy/` (a file each):
//!
//! ```text
//! connection ─► request ─► route ─► attempt ───────────────────────► relay ─► access
//! keep-alive,   head and   plan     pick → pool/connect → forward     chunk by  log line
//! one deadline  body                → exchange; retry elsewhere       chunk     + metrics
//! ```
//!
//! Nothing on the request path takes a lock or crosses threads: shards share only the
//! immutable configuration and per-endpoint atomics. Errors map to statuses in one place
//! (`proxy/error.rs`). The control thread (`control.rs`) does everything slow: health
//! checks and model discovery; endpoint host names are resolved off the shards too, at
//! start and again by a watcher thread (`dns.rs`).
//!
//! Modules, leaves first (none imports one below it): `clock`, `stop`, `deadline`,
//! `endpoint_type`, `endpoint_set`, `log`, `dns`, `events`, `http1`, `api`, `routing`,
//! `metrics`, `config`, `tls`, `auth`, `cors`, `ratelimit`, `upstream`, `control`,
//! `shard`, `admin`, `proxy`, `runtime`.

mod admin;
mod api;
mod auth;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod clock;
mod config;
mod control;
mod cors;
mod deadline;
pub mod demo;
pub mod dns;
mod endpoint_set;
mod endpoint_type;
mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http1;
mod live;
mod log;
mod metrics;
mod proxy;
mod ratelimit;
mod reload;
mod routing;
mod runtime;
mod shard;
mod stop;
mod tls;
mod upstream;

pub use config::{
    Cidr, Config, ConfigError, ConfigFormat, CorsConfig, DEFAULT_CONFIG, DriverChoice,
    EndpointConfig, Expand, HealthConfig, ListenerTls, ProxyConfig, RateLimitConfig, Secret,
    ServerConfig, StickyConfig,
};
pub use control::ConfigSource;
pub use endpoint_type::EndpointType;
pub use log::{AccessFormat, Level, set_level};
pub use routing::{Balancer, Fallback, KeySource, PrefixGroupsConfig, RoutingConfig, Strategy};
pub use runtime::{Reloader, Server, StartError, ThreadDied, start, start_with};
pub use stop::Stopper;
