//! The configuration file as written: a serde mirror of `config/ringway.toml` with unknown
//! keys rejected. Defaults here are the documented defaults in `config/ringway.toml` (a
//! test below checks the two agree). Types only, no checks: `validate`, `keys` and
//! `endpoints` turn it into the validated [`Config`](super::Config).

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Root {
    #[serde(default)]
    pub(super) server: Server,
    #[serde(default)]
    pub(super) proxy: Proxy,
    #[serde(default)]
    pub(super) health: Health,
    #[serde(default)]
    pub(super) sticky: Sticky,
    #[serde(default)]
    pub(super) prefix_groups: PrefixGroups,
    #[serde(default)]
    pub(super) routing: Routing,
    #[serde(default)]
    pub(super) rate_limits: RateLimits,
    #[serde(default)]
    pub(super) cors: Cors,
    #[serde(default)]
    pub(super) anthropic: Anthropic,
    #[serde(default)]
    pub(super) models: Models,
    #[serde(default)]
    pub(super) model_aliases: std::collections::HashMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) log: Log,
    #[serde(default)]
    pub(super) dns: Dns,
    #[serde(default)]
    pub(super) endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Server {
    pub(super) listen: String,
    pub(super) shards: usize,
    pub(super) pin_cores: bool,
    pub(super) driver: String,
    pub(super) max_header_bytes: usize,
    pub(super) max_headers: usize,
    pub(super) max_body_bytes: u64,
    pub(super) header_timeout_ms: u64,
    pub(super) body_timeout_ms: u64,
    pub(super) keepalive_timeout_ms: u64,
    pub(super) max_connections: usize,
    pub(super) api_keys: Vec<String>,
    pub(super) api_keys_file: Option<String>,
    pub(super) api_keys_env: Option<String>,
    pub(super) internal_access: String,
    pub(super) drain_timeout_ms: u64,
    /// The TLS listener: a PEM certificate chain and its private key (both or neither).
    pub(super) tls_cert_file: Option<String>,
    pub(super) tls_key_file: Option<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:40114".into(),
            shards: 0,
            pin_cores: false,
            driver: "auto".into(),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 100 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            keepalive_timeout_ms: 60_000,
            max_connections: 4096,
            api_keys: Vec::new(),
            api_keys_file: None,
            api_keys_env: None,
            internal_access: "loopback".into(),
            drain_timeout_ms: 30_000,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Proxy {
    pub(super) balancer: String,
    pub(super) connect_timeout_ms: u64,
    pub(super) response_timeout_ms: u64,
    pub(super) stream_idle_timeout_ms: u64,
    pub(super) request_timeout_ms: u64,
    pub(super) forward_client_auth: bool,
    pub(super) pool_idle_timeout_ms: u64,
    pub(super) pool_max_idle: usize,
    pub(super) retry_on_status: Vec<u16>,
    pub(super) max_attempts: usize,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            balancer: "least-connections".into(),
            connect_timeout_ms: 3_000,
            response_timeout_ms: 600_000,
            stream_idle_timeout_ms: 300_000,
            request_timeout_ms: 1_800_000,
            forward_client_auth: false,
            pool_idle_timeout_ms: 4_000,
            pool_max_idle: 4096,
            retry_on_status: vec![429, 502, 503, 504],
            max_attempts: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Health {
    pub(super) check_interval_ms: u64,
    pub(super) check_timeout_ms: u64,
    pub(super) unhealthy_threshold: u32,
    pub(super) healthy_threshold: u32,
    pub(super) recovery_interval_ms: u64,
    pub(super) recovery_max_interval_ms: u64,
    pub(super) breaker_threshold: u32,
    pub(super) breaker_cooldown_ms: u64,
    pub(super) breaker_max_cooldown_ms: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            check_interval_ms: 5_000,
            check_timeout_ms: 2_000,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            recovery_interval_ms: 100,
            recovery_max_interval_ms: 250,
            breaker_threshold: 3,
            breaker_cooldown_ms: 1_000,
            breaker_max_cooldown_ms: 5_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Sticky {
    pub(super) enabled: bool,
    pub(super) key_sources: Vec<String>,
    pub(super) max_load_factor: f64,
    pub(super) prompt_prefix_bytes: usize,
    pub(super) max_sessions: usize,
    pub(super) idle_ttl_seconds: u64,
}

impl Default for Sticky {
    fn default() -> Self {
        Sticky {
            enabled: true,
            key_sources: vec![
                "session_header".into(),
                "prefix_hash".into(),
                "auth_header".into(),
            ],
            max_load_factor: 0.0,
            prompt_prefix_bytes: 1024,
            max_sessions: 10_000,
            idle_ttl_seconds: 600,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PrefixGroups {
    pub(super) enabled: bool,
    pub(super) size: usize,
    pub(super) max_load_factor: f64,
    pub(super) min_prefix_bytes: usize,
    pub(super) user_prefix_bytes: usize,
}

impl Default for PrefixGroups {
    fn default() -> Self {
        PrefixGroups {
            enabled: true,
            size: 2,
            max_load_factor: 1.25,
            min_prefix_bytes: 1024,
            user_prefix_bytes: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Routing {
    pub(super) strategy: String,
    pub(super) fallback: String,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            strategy: "strict".into(),
            fallback: "compatible_only".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RateLimits {
    pub(super) global_requests_per_minute: u32,
    pub(super) per_ip_requests_per_minute: u32,
    pub(super) per_endpoint_requests_per_minute: u32,
    pub(super) health_requests_per_minute: u32,
    pub(super) burst_size: u32,
    pub(super) cleanup_interval_ms: u64,
    pub(super) trust_proxy_headers: bool,
    pub(super) trusted_proxy_cidrs: Vec<String>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            global_requests_per_minute: 0,
            per_ip_requests_per_minute: 0,
            per_endpoint_requests_per_minute: 0,
            health_requests_per_minute: 0,
            burst_size: 50,
            cleanup_interval_ms: 300_000,
            trust_proxy_headers: false,
            trusted_proxy_cidrs: [
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Cors {
    pub(super) enabled: bool,
    pub(super) allowed_origins: Vec<String>,
    pub(super) allowed_methods: Vec<String>,
    pub(super) allowed_headers: Vec<String>,
    pub(super) exposed_headers: Vec<String>,
    pub(super) allow_credentials: bool,
    pub(super) max_age_seconds: u64,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            enabled: false,
            allowed_origins: vec!["*".into()],
            allowed_methods: ["GET", "POST", "OPTIONS"].map(String::from).to_vec(),
            allowed_headers: vec!["*".into()],
            exposed_headers: Vec::new(),
            allow_credentials: false,
            max_age_seconds: 300,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Anthropic {
    pub(super) enabled: bool,
    pub(super) passthrough: bool,
    pub(super) ping_interval_ms: u64,
    pub(super) count_tokens: String,
}

impl Default for Anthropic {
    fn default() -> Self {
        Anthropic {
            enabled: true,
            passthrough: true,
            ping_interval_ms: 5_000,
            count_tokens: "local".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Models {
    pub(super) refresh_interval_ms: u64,
    /// What each endpoint holds in memory, and its own queue: 0 = never read.
    pub(super) loaded_refresh_interval_ms: u64,
}

impl Default for Models {
    fn default() -> Self {
        Models {
            refresh_interval_ms: 30_000,
            loaded_refresh_interval_ms: 5_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Log {
    pub(super) level: String,
    pub(super) access: String,
    pub(super) access_path: Option<String>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            access: "off".into(),
            access_path: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Dns {
    /// 0 = resolve once, at start.
    pub(super) refresh_interval_ms: u64,
    /// `ip[:port]` each (port 53 by default); empty: the system resolver.
    pub(super) servers: Vec<String>,
    pub(super) timeout_ms: u64,
    /// "ipv4", "ipv6" or "both".
    pub(super) family: String,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            refresh_interval_ms: 30_000,
            servers: Vec::new(),
            timeout_ms: 2_000,
            family: "both".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Endpoint {
    pub(super) name: Option<String>,
    pub(super) url: String,
    #[serde(rename = "type", default = "openai_compatible")]
    pub(super) kind: String,
    #[serde(default = "default_priority")]
    pub(super) priority: u32,
    pub(super) health_path: Option<String>,
    pub(super) check_interval_ms: Option<u64>,
    pub(super) check_timeout_ms: Option<u64>,
    pub(super) api_key: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) api_key_header: Option<String>,
    /// Olla's shape of credentials; not with `api_key*`.
    pub(super) auth: Option<Auth>,
    /// Static headers for every request to the endpoint.
    #[serde(default)]
    pub(super) headers: std::collections::BTreeMap<String, String>,
    /// Default: the endpoint type's model-list path.
    pub(super) models_path: Option<String>,
    /// "native" or "translate"; default: the type's (`EndpointType::speaks_anthropic`).
    pub(super) anthropic: Option<String>,
    /// `https://` only: PEM CA certificates trusted instead of the system's roots.
    pub(super) tls_ca_file: Option<String>,
    /// `https://` only: a PEM client certificate chain, with `tls_key_file` its key.
    pub(super) tls_cert_file: Option<String>,
    pub(super) tls_key_file: Option<String>,
    /// `https://` only: accept any certificate (default false; warned about at start).
    pub(super) tls_insecure_skip_verify: Option<bool>,
    /// "none" (default) or "addresses": one endpoint per address of the URL's host name.
    pub(super) expand: Option<String>,
}

/// An endpoint's `auth` block, as Olla writes it: `type` is "bearer" (`token`),
/// "api_key" (`key`, sent in `header`) or "basic" (`username`, `password`); each value
/// inline or from its `_file`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) key: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) header: Option<String>,
    pub(super) username: Option<String>,
    pub(super) username_file: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<String>,
}

fn openai_compatible() -> String {
    "openai-compatible".into()
}

fn default_priority() -> u32 {
    100
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::parse_test as parse;

    #[test]
    fn file_defaults_match_the_documented_values() {
        // An empty file and the documented file must configure the proxy identically.
        let empty = parse("").unwrap();
        let doc = Config::embedded_default();
        assert_eq!(format!("{:?}", empty.server), format!("{:?}", doc.server));
        assert_eq!(format!("{:?}", empty.proxy), format!("{:?}", doc.proxy));
        assert_eq!(format!("{:?}", empty.health), format!("{:?}", doc.health));
        assert_eq!(format!("{:?}", empty.sticky), format!("{:?}", doc.sticky));
        assert_eq!(empty.routing, doc.routing);
        assert_eq!(
            format!("{:?}", empty.rate_limits),
            format!("{:?}", doc.rate_limits)
        );
        assert_eq!(format!("{:?}", empty.cors), format!("{:?}", doc.cors));
        assert_eq!(empty.models_refresh_interval, doc.models_refresh_interval);
        assert_eq!(
            empty.models_loaded_refresh_interval,
            doc.models_loaded_refresh_interval
        );
        assert_eq!(empty.model_aliases, doc.model_aliases);
        assert_eq!(empty.log_level, doc.log_level);
        assert_eq!(empty.dns, doc.dns);
        assert_eq!(empty.dns, crate::dns::DnsConfig::default());
        assert!(empty.endpoints.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = parse("[server]\nlisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.message.contains("lisen"), "{}", e.message);
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = parse("[[endpoints]]\nurl = \"http://127.0.0.1:1\"\nweight = 3").unwrap_err();
        assert!(e.message.contains("weight"), "{}", e.message);
    }
}
