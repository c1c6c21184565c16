//! Pass 2 over Olla's file: its typed mirror ([`Olla`]), with Olla's defaults
//! (`DefaultConfig` in internal/config) for what the file leaves out. A value of the wrong
//! type is an error naming its key, as the YAML parser reports it.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde::de::Deserializer;

use super::units::Go;
use crate::config::file;

/// `null` (a key with nothing under it) is the default, as when the key is absent.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Olla {
    #[serde(deserialize_with = "or_default")]
    pub(super) server: Server,
    #[serde(deserialize_with = "or_default")]
    pub(super) proxy: Proxy,
    #[serde(deserialize_with = "or_default")]
    pub(super) discovery: Discovery,
    #[serde(deserialize_with = "or_default")]
    pub(super) model_registry: ModelRegistry,
    #[serde(deserialize_with = "or_default")]
    pub(super) model_aliases: HashMap<String, Vec<String>>,
    #[serde(deserialize_with = "or_default")]
    pub(super) logging: Logging,
    #[serde(deserialize_with = "or_default")]
    pub(super) translators: Translators,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Translators {
    #[serde(deserialize_with = "or_default")]
    pub(super) anthropic: AnthropicTranslator,
}

/// `translators.anthropic`: ringway's `[anthropic]`.
#[derive(Deserialize)]
#[serde(default)]
pub(super) struct AnthropicTranslator {
    pub(super) enabled: bool,
    pub(super) passthrough_enabled: bool,
}

impl Default for AnthropicTranslator {
    fn default() -> Self {
        AnthropicTranslator {
            enabled: true,
            passthrough_enabled: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Server {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) read_timeout: Go,
    /// 0: Olla's 10 s.
    pub(super) read_header_timeout: Go,
    /// Unset and not in the mirror: `write_timeout` (see [`SCHEMA`](super::schema::SCHEMA)).
    pub(super) idle_timeout: Go,
    pub(super) shutdown_timeout: Go,
    pub(super) request_logging: bool,
    #[serde(deserialize_with = "or_default")]
    pub(super) cors: Cors,
    #[serde(deserialize_with = "or_default")]
    pub(super) request_limits: RequestLimits,
    #[serde(deserialize_with = "or_default")]
    pub(super) rate_limits: RateLimits,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            host: "localhost".into(),
            port: 40114,
            read_timeout: Go::secs(30),
            read_header_timeout: Go::secs(0),
            idle_timeout: Go::secs(0),
            shutdown_timeout: Go::secs(10),
            request_logging: true,
            cors: Cors::default(),
            request_limits: RequestLimits::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Cors {
    pub(super) enabled: bool,
    pub(super) allowed_origins: Vec<String>,
    pub(super) allowed_methods: Vec<String>,
    pub(super) allowed_headers: Vec<String>,
    pub(super) exposed_headers: Vec<String>,
    pub(super) allow_credentials: bool,
    pub(super) max_age: u64,
}

impl Default for Cors {
    fn default() -> Self {
        let c = file::Cors::default();
        Cors {
            enabled: c.enabled,
            allowed_origins: c.allowed_origins,
            allowed_methods: c.allowed_methods,
            allowed_headers: c.allowed_headers,
            exposed_headers: c.exposed_headers,
            allow_credentials: c.allow_credentials,
            max_age: c.max_age_seconds,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct RequestLimits {
    pub(super) max_body_size: u64,
    pub(super) max_header_size: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_size: 100 * 1024 * 1024,
            max_header_size: 1024 * 1024,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct RateLimits {
    pub(super) global_requests_per_minute: u32,
    pub(super) per_ip_requests_per_minute: u32,
    pub(super) health_requests_per_minute: u32,
    pub(super) burst_size: u32,
    #[serde(deserialize_with = "or_default")]
    pub(super) per_endpoint: PerEndpoint,
    pub(super) cleanup_interval: Go,
    pub(super) trust_proxy_headers: bool,
    pub(super) trusted_proxy_cidrs: Vec<String>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            global_requests_per_minute: 1000,
            per_ip_requests_per_minute: 100,
            health_requests_per_minute: 1000,
            burst_size: 50,
            per_endpoint: PerEndpoint::default(),
            cleanup_interval: Go::secs(300),
            trust_proxy_headers: false,
            trusted_proxy_cidrs: file::RateLimits::default().trusted_proxy_cidrs,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PerEndpoint {
    pub(super) default_requests_per_minute: u32,
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Proxy {
    pub(super) load_balancer: String,
    /// 0: Olla's 60 s.
    pub(super) connection_timeout: Go,
    pub(super) response_timeout: Go,
    /// 0: Olla's 60 s.
    pub(super) read_timeout: Go,
    /// 0: Olla's 30 s.
    pub(super) response_header_timeout: Go,
    #[serde(deserialize_with = "or_default")]
    pub(super) sticky_sessions: Sticky,
    #[serde(deserialize_with = "or_default")]
    pub(super) retry: Retry,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            load_balancer: "least-connections".into(),
            connection_timeout: Go::secs(60),
            response_timeout: Go::secs(15 * 60),
            read_timeout: Go::secs(10 * 60),
            response_header_timeout: Go::secs(0),
            sticky_sessions: Sticky::default(),
            retry: Retry::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Sticky {
    pub(super) enabled: bool,
    pub(super) idle_ttl_seconds: u64,
    pub(super) max_sessions: usize,
    pub(super) key_sources: Vec<String>,
    pub(super) prefix_hash_bytes: usize,
}

impl Default for Sticky {
    fn default() -> Self {
        Sticky {
            enabled: false,
            idle_ttl_seconds: 600,
            max_sessions: 10_000,
            key_sources: file::Sticky::default().key_sources,
            prefix_hash_bytes: 512,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Retry {
    pub(super) enabled: bool,
    pub(super) on_connection_failure: bool,
    pub(super) max_attempts: usize,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            enabled: true,
            on_connection_failure: true,
            max_attempts: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Discovery {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(rename = "static", deserialize_with = "or_default")]
    pub(super) statics: Static,
    #[serde(deserialize_with = "or_default")]
    pub(super) model_discovery: ModelDiscovery,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            kind: "static".into(),
            statics: Static::default(),
            model_discovery: ModelDiscovery::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Static {
    /// `endpoints:` with nothing under it is none (Olla's YAML reader empties the
    /// list); left out, it is Olla's default endpoint.
    #[serde(deserialize_with = "or_default")]
    pub(super) endpoints: Vec<Endpoint>,
}

impl Default for Static {
    fn default() -> Self {
        Static {
            endpoints: vec![Endpoint {
                url: "http://localhost:11434".into(),
                name: "localhost".into(),
                kind: "ollama".into(),
                ..Endpoint::default()
            }],
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct ModelDiscovery {
    pub(super) enabled: bool,
    pub(super) interval: Go,
}

impl Default for ModelDiscovery {
    fn default() -> Self {
        ModelDiscovery {
            enabled: true,
            interval: Go::secs(300),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Endpoint {
    pub(super) url: String,
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    /// Absent: 100 (0 is a valid, lowest priority).
    pub(super) priority: Option<u32>,
    pub(super) preserve_path: bool,
    pub(super) health_check_url: String,
    pub(super) model_url: String,
    /// 0: the `[health]` default, which is Olla's (5 s, and 2 s for the timeout).
    pub(super) check_interval: Go,
    pub(super) check_timeout: Go,
    pub(super) auth: Option<file::Auth>,
    #[serde(deserialize_with = "or_default")]
    pub(super) headers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ModelRegistry {
    #[serde(deserialize_with = "or_default")]
    pub(super) routing_strategy: RoutingStrategy,
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct RoutingStrategy {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(deserialize_with = "or_default")]
    pub(super) options: RoutingOptions,
}

impl Default for RoutingStrategy {
    fn default() -> Self {
        RoutingStrategy {
            kind: "strict".into(),
            options: RoutingOptions::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct RoutingOptions {
    pub(super) fallback_behavior: String,
}

impl Default for RoutingOptions {
    fn default() -> Self {
        RoutingOptions {
            fallback_behavior: "compatible_only".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub(super) struct Logging {
    pub(super) level: String,
    pub(super) format: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::olla::parse_test as parse;
    use crate::endpoint_type::EndpointType;

    #[test]
    fn omitted_keys_take_ollas_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:40114".parse().unwrap());
        assert_eq!(c.server.body_timeout, Duration::from_secs(30));
        assert_eq!(c.server.keepalive_timeout, Duration::from_secs(30));
        assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_header_bytes, 65536);
        assert!(!c.sticky.enabled);
        assert_eq!(c.sticky.prompt_prefix_bytes, 512);
        assert_eq!(c.rate_limits.global_per_minute, 1000);
        assert_eq!(c.rate_limits.per_ip_per_minute, 100);
        assert_eq!(c.rate_limits.health_per_minute, 1000);
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(60));
        assert_eq!(c.proxy.response_timeout, Duration::from_secs(30));
        assert_eq!(c.proxy.stream_idle_timeout, Duration::from_secs(600));
        assert_eq!(c.proxy.request_timeout, Duration::from_secs(900));
        assert_eq!(c.models_refresh_interval, Duration::from_secs(300));
        assert_eq!(c.access_log, Some(crate::log::AccessFormat::Json));
        // Olla's default endpoint, checked where Ollama answers.
        let [e] = &c.endpoints[..] else {
            panic!("one default endpoint")
        };
        assert_eq!(
            (e.name.as_str(), e.kind, e.addrs[0].port()),
            ("localhost", EndpointType::Ollama, 11434)
        );
        assert_eq!(e.health_path, "/");
        // The 1 MiB head limit is capped, with a word.
        assert!(
            c.warnings.iter().any(|w| w.contains("max_header_size")),
            "{:?}",
            c.warnings
        );
        // An explicitly empty list is no endpoint; `key:` with nothing is the default.
        assert!(
            parse("discovery:\n  static:\n    endpoints: []\n")
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert!(
            parse("discovery:\n  static:\n    endpoints:\n")
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert_eq!(
            parse("server:\n  cors:\n").unwrap().server.listen.port(),
            40114
        );
    }
}
