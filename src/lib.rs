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
//! One request, on the shard that accepted its connection (`proxy.rs`):
//!
//! ```text
//! parse_request ─► route ─► select_backend ─► forward ─► stream_response
//!   http1.rs      routing.rs  balancer.rs     upstream.rs  chunk by chunk, as it arrives
//! ```
//!
//! Nothing on the request path takes a lock or crosses threads: shards share only the
//! immutable configuration and per-endpoint atomics. Errors map to statuses in one place
//! (`proxy/error.rs`).

mod admin;
mod api;
mod auth;
#[doc(hidden)]
pub mod bench;
mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
mod http1;
mod log;
mod metrics;
mod proxy;
mod routing;
mod runtime;
mod upstream;

pub use config::{
    Config, ConfigError, DEFAULT_CONFIG, DriverChoice, EndpointConfig, HealthConfig, ProxyConfig,
    Secret, ServerConfig, StickyConfig,
};
pub use log::{AccessFormat, Level, set_level};
pub use routing::{Balancer, KeySource};
pub use runtime::{Server, StartError, Stopper, ThreadDied, start};
pub use upstream::EndpointType;
