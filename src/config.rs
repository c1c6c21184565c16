//! Configuration, read once at start: the TOML file as written (`file`, serde, unknown
//! keys rejected) is turned into the validated [`Config`] the rest of ringway uses
//! (durations, socket addresses, resolved endpoints), one section at a time (`validate`,
//! `keys`, `dns`, `endpoints`). Every error names the key and where the configuration came from.
//! Olla's YAML file (`olla`) is translated into the same raw form first, so the same
//! checks apply to it.

mod dns;
mod endpoints;
mod file;
mod keys;
mod limits;
mod listener_tls;
mod olla;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::dns::DnsConfig;
use crate::endpoint_type::EndpointType;
use crate::http1::HeadLimits;
use crate::log::{AccessFormat, Level};
use crate::routing::{Balancer, KeySource, PrefixGroupsConfig, RoutingConfig};
pub(crate) use endpoints::tls::EndpointTls;
pub use limits::{Cidr, CorsConfig, RateLimitConfig};
pub use listener_tls::ListenerTls;

/// The documented example configuration, which is also the default when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../config/ringway.toml");

/// Which language a configuration file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// ringway's own TOML (`config/ringway.toml`).
    Toml,
    /// Olla's YAML (`config.yaml`), with its `OLLA_*` environment overrides.
    Olla,
}

impl ConfigFormat {
    /// By the file's extension: `.yaml` and `.yml` are Olla's, anything else TOML.
    pub fn of_path(path: &Path) -> ConfigFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => {
                ConfigFormat::Olla
            }
            _ => ConfigFormat::Toml,
        }
    }
}

/// Where configuration reads environment variables (`api_key_env`, `${VAR}` in
/// credentials, Olla's `OLLA_*` overrides): the process's, or a test's own.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment (a variable that is not UTF-8 counts as unset).
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A configuration problem: where it came from, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path, or "the embedded default configuration", or a command-line flag.
    pub origin: String,
    /// Dotted key, e.g. `endpoints[1].url`; empty for syntax errors (the message then
    /// carries line and column).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config error in {}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "config error in {}: `{}`: {}",
                self.origin, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where configuration text came from ("ringway.toml", "the command line"...): makes the
/// errors that name it, for the validation of every section.
#[derive(Clone, Copy)]
struct Origin<'a>(&'a str);

impl Origin<'_> {
    /// An error about `key` (empty for the text as a whole: syntax, unreadable file).
    fn err(self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.0.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A `*_ms` key as a duration; 0 is refused.
    fn nonzero_ms(self, key: &str, ms: u64) -> Result<Duration, ConfigError> {
        if ms == 0 {
            Err(self.err(key, "must be greater than 0"))
        } else {
            Ok(Duration::from_millis(ms))
        }
    }
}

/// Which event-loop driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    Auto,
    IoUring,
    Epoll,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages.
    pub origin: String,
    /// The file it was read from and its language, when it was read from one: what a
    /// reload reads again.
    pub path: Option<(std::path::PathBuf, ConfigFormat)>,
    pub server: ServerConfig,
    pub proxy: ProxyConfig,
    pub health: HealthConfig,
    pub sticky: StickyConfig,
    pub prefix_groups: PrefixGroupsConfig,
    pub routing: RoutingConfig,
    pub rate_limits: RateLimitConfig,
    pub cors: CorsConfig,
    pub anthropic: AnthropicConfig,
    /// How often each endpoint's model list is read again.
    pub models_refresh_interval: Duration,
    /// How often each endpoint is asked which models it holds in memory and how many
    /// requests wait in its own queue (`None`: never).
    pub models_loaded_refresh_interval: Option<Duration>,
    /// `alias → real model names`: a request for the alias goes to an endpoint serving
    /// one of them, with the body's `model` rewritten to that name.
    pub model_aliases: Vec<(String, Vec<String>)>,
    pub log_level: Level,
    /// One line per request, or none.
    pub access_log: Option<AccessFormat>,
    /// Where the access log goes: a file (appended to), or stdout.
    pub access_log_path: Option<std::path::PathBuf>,
    /// How endpoint host names are resolved, at start and while running.
    pub dns: DnsConfig,
    pub endpoints: Vec<EndpointConfig>,
    /// What the file asks for that ringway accepted but does not do (Olla keys it has
    /// no use for, an endpoint header its `auth` replaces...), one sentence each naming
    /// the key: printed at start.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// 0 = one per available CPU.
    pub shards: usize,
    pub pin_cores: bool,
    pub driver: DriverChoice,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    /// From a connection's opening, or a request's first byte, to its complete head.
    pub header_timeout: Duration,
    /// Longest wait between two reads of a request body.
    pub body_timeout: Duration,
    /// Longest idle time between two requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Client connections open at once on one shard; more are refused with 503.
    pub max_connections: usize,
    /// Inbound API keys (`server.api_keys`, `api_keys_file`, `api_keys_env` together);
    /// empty = no key needed.
    pub api_keys: Vec<Secret>,
    /// Operator pages (`/internal/status...`) answer any client, not only loopback.
    pub internal_from_anywhere: bool,
    /// On SIGTERM/SIGINT, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// `server.tls_cert_file` and `server.tls_key_file`: the listener speaks TLS only;
    /// `None`: plain HTTP.
    pub tls: Option<ListenerTls>,
    /// Test hook, not settable from a file: `GET /internal/debug/panic` panics inside
    /// the connection's task (to show that the shard survives it).
    #[doc(hidden)]
    pub debug_panic_route: bool,
}

/// A credential from the configuration; `{:?}` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub balancer: Balancer,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// From a request's head being read to the end of its response.
    pub request_timeout: Duration,
    /// Whether the client's `Authorization`/`X-Api-Key`/`Api-Key` reach the endpoint.
    pub forward_client_auth: bool,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Endpoint answers that are retried on another endpoint (while one is left).
    pub retry_on_status: Vec<u16>,
    /// Most endpoints tried for one request; 0 = every candidate once.
    pub max_attempts: usize,
}

#[derive(Debug, Clone)]
pub struct StickyConfig {
    pub enabled: bool,
    /// Tried in order; the first that yields a key wins.
    pub key_sources: Vec<KeySource>,
    /// 0 = off; otherwise skip a backend with more than this times the mean in flight.
    pub max_load_factor: f64,
    /// How much of a completion prompt goes into its key.
    pub prompt_prefix_bytes: usize,
    /// Keys remembered for the outcome labels (least recently used forgotten first).
    pub max_sessions: usize,
    /// A key unseen for this long is forgotten; `None` = only by `max_sessions`.
    pub idle_ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Default for endpoints that do not set their own.
    pub check_interval: Duration,
    pub check_timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub recovery_interval: Duration,
    pub recovery_max_interval: Duration,
    /// Consecutive request failures that open an endpoint's breaker; 0 = no breaker.
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
}

/// `[anthropic]`: the Messages API (`/v1/messages`, `/olla/anthropic/v1/messages`).
#[derive(Debug, Clone, Copy)]
pub struct AnthropicConfig {
    /// Off: the Messages API routes answer 404.
    pub enabled: bool,
    /// Forward to endpoints that speak the Messages API natively when one is available
    /// (Olla's `passthrough_enabled`); off: always translate.
    pub passthrough: bool,
    /// A `ping` event after this long without one, while a translated stream is silent;
    /// `None`: never.
    pub ping_interval: Option<Duration>,
    /// `count_tokens = "endpoint"`: `.../count_tokens` goes to a native endpoint that
    /// counts tokens itself (llama.cpp's server), when one serving the model is
    /// available; otherwise, and by default, the count is estimated locally.
    pub count_tokens_by_endpoint: bool,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub name: String,
    pub url: String,
    pub kind: EndpointType,
    pub priority: u32,
    /// The URL's host as written: a name, or an IP address (IPv6 without brackets).
    pub host: String,
    /// The URL's port (80 or 443 when it has none).
    pub port: u16,
    /// Resolved once here, off the request path (through `dns.servers` when set, sorted,
    /// IPv4 first); tried in order when connecting.
    pub addrs: Vec<SocketAddr>,
    /// `expand`: whether the host name stands for one endpoint or for one per address.
    pub expand: Expand,
    /// `host[:port]` as written in the URL: the `Host` header sent to the endpoint.
    pub authority: String,
    /// Path prefix from the URL without a trailing slash ("" when none).
    pub base_path: String,
    /// Path checked by the health checker (after `base_path`).
    pub health_path: String,
    /// Path of its model list (after `base_path`): `models_path`, or the type's.
    pub models_path: String,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    /// Credentials ringway sends to this endpoint: header name and value.
    pub auth: Option<(String, Secret)>,
    /// Static headers sent on every request to it (`headers`), by name; never one that
    /// `auth` sets.
    pub headers: Vec<(String, Secret)>,
    /// It serves Anthropic's Messages API itself: `/v1/messages` requests are passed
    /// through to it unchanged (`anthropic = "native"`; default by type).
    pub anthropic_native: bool,
    /// An `https://` endpoint's TLS client settings; `None` for `http://`.
    pub tls: Option<EndpointTls>,
}

/// An endpoint's `expand`: what its host name's addresses are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expand {
    /// One endpoint, reached at any of them (tried in order when connecting).
    None,
    /// One endpoint per address (the pods behind a Kubernetes headless Service), all on
    /// the URL's port; only for a host name, not an IP address.
    Addresses,
}

impl ServerConfig {
    pub(crate) fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
        }
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::from_toml(DEFAULT_CONFIG, "the embedded default configuration")
            .expect("the embedded default configuration is valid")
    }

    /// Reads and validates a configuration file, in the format its extension says
    /// ([`ConfigFormat::of_path`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_as(path, ConfigFormat::of_path(path))
    }

    /// Reads and validates a configuration file written in `format`.
    pub fn load_as(path: &Path, format: ConfigFormat) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Origin(&origin).err("", format!("cannot read the file: {e}")))?;
        let mut config = match format {
            ConfigFormat::Toml => Config::from_toml(&text, &origin),
            ConfigFormat::Olla => Config::from_olla_yaml(&text, &origin),
        }?;
        config.path = Some((path.to_path_buf(), format));
        Ok(config)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_in(text, origin, &process_env)
    }

    /// [`Config::from_toml`] reading the environment from `env`.
    pub(crate) fn from_toml_in(
        text: &str,
        origin: &str,
        env: Env<'_>,
    ) -> Result<Config, ConfigError> {
        let at = Origin(origin);
        let raw: file::Root =
            toml::from_str(text).map_err(|e| at.err("", e.to_string().trim_end()))?;
        Config::from_raw(raw, at, env, Vec::new())
    }

    /// Parses Olla's YAML configuration (its `config.yaml`), applies the `OLLA_*`
    /// environment overrides Olla documents, and validates the result as ringway's own
    /// (`olla.rs` says what maps to what); `origin` names it in errors and warnings.
    pub fn from_olla_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_olla_yaml_in(text, origin, &process_env)
    }

    /// [`Config::from_olla_yaml`] reading the environment from `env`.
    pub(crate) fn from_olla_yaml_in(
        text: &str,
        origin: &str,
        env: Env<'_>,
    ) -> Result<Config, ConfigError> {
        let at = Origin(origin);
        let (raw, warnings) = olla::translate(text, at, env)?;
        Config::from_raw(raw, at, env, warnings).map_err(olla::rename_key)
    }

    /// Validates the file as parsed. Each section is checked on its own, in the file's
    /// order, then the rules between sections; `warnings` so far come along.
    fn from_raw(
        raw: file::Root,
        at: Origin<'_>,
        env: Env<'_>,
        mut warnings: Vec<String>,
    ) -> Result<Config, ConfigError> {
        let server = validate::server(raw.server, at)?;
        let proxy = validate::proxy(raw.proxy, at)?;
        let health = validate::health(raw.health, at)?;
        let sticky = validate::sticky(raw.sticky, at)?;
        let prefix_groups = validate::prefix_groups(raw.prefix_groups, at)?;
        let routing = validate::routing(raw.routing, at)?;
        let rate_limits = limits::rate_limits(raw.rate_limits, at)?;
        let cors = limits::cors(raw.cors, at)?;
        let anthropic = validate::anthropic(raw.anthropic, at)?;
        let (models_refresh_interval, models_loaded_refresh_interval) =
            validate::models(raw.models, at)?;
        let model_aliases = validate::model_aliases(raw.model_aliases, at)?;
        let (log_level, access_log, access_log_path) = validate::log(raw.log, at)?;
        let dns = dns::dns(raw.dns, at)?;
        let resolver = crate::dns::Resolver::new(&dns);
        let endpoints =
            endpoints::endpoints(raw.endpoints, &health, &resolver, at, env, &mut warnings)?;
        let config = Config {
            origin: at.0.to_string(),
            path: None,
            server,
            proxy,
            health,
            sticky,
            prefix_groups,
            routing,
            rate_limits,
            cors,
            anthropic,
            models_refresh_interval,
            models_loaded_refresh_interval,
            model_aliases,
            log_level,
            access_log,
            access_log_path,
            dns,
            endpoints,
            warnings,
        };
        validate::across_sections(&config)?;
        Ok(config)
    }

    /// Applies `--listen`.
    pub fn set_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.server.listen = validate::parse_listen(listen)
            .map_err(|message| Origin("the command line").err("--listen", message))?;
        Ok(())
    }

    /// The endpoints' host names (IP addresses left out), each once, in the file's
    /// order: what a [`DnsWatcher`](crate::dns::DnsWatcher) is given to keep resolved.
    pub fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for e in &self.endpoints {
            if e.host.parse::<std::net::IpAddr>().is_err() && !names.contains(&e.host) {
                names.push(e.host.clone());
            }
        }
        names
    }

    /// The number of shards to run: `server.shards`, or one per available CPU.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// The configuration `text`, as from a file named `test.toml`: what the config tests parse.
#[cfg(test)]
pub(crate) fn parse_test(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml")
}

#[cfg(test)]
mod tests {
    use super::parse_test as parse;
    use super::*;

    #[test]
    fn embedded_default_is_the_documented_one() {
        let c = Config::embedded_default();
        assert_eq!(c.server.listen, "127.0.0.1:40114".parse().unwrap());
        let names: Vec<_> = c
            .endpoints
            .iter()
            .map(|e| (e.kind, e.addrs[0].port()))
            .collect();
        assert_eq!(
            names,
            vec![
                (EndpointType::Ollama, 11434),
                (EndpointType::LmStudio, 1234),
                (EndpointType::Vllm, 8000),
                (EndpointType::LlamaCpp, 8080)
            ]
        );
    }

    #[test]
    fn messages_api_defaults_by_endpoint_type() {
        let c = parse(
            "[[endpoints]]\nurl = \"http://127.0.0.1:1\"\ntype = \"vllm\"\n\
             [[endpoints]]\nurl = \"http://127.0.0.1:2\"\ntype = \"openai\"\n\
             [[endpoints]]\nurl = \"http://127.0.0.1:3\"\ntype = \"ollama\"\nanthropic = \"translate\"\n\
             [[endpoints]]\nurl = \"http://127.0.0.1:4\"\ntype = \"sglang\"\nanthropic = \"native\"",
        )
        .unwrap();
        let native: Vec<bool> = c.endpoints.iter().map(|e| e.anthropic_native).collect();
        assert_eq!(native, [true, false, false, true]);
        let a = c.anthropic;
        assert!(a.enabled && a.passthrough && !a.count_tokens_by_endpoint);
        assert_eq!(a.ping_interval, Some(std::time::Duration::from_secs(5)));
        let off = parse("[anthropic]\nping_interval_ms = 0").unwrap();
        assert_eq!(off.anthropic.ping_interval, None);
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = parse("[server]\nlisten = \"nowhere\"").unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("test.toml", "server.listen")
        );
        let e = parse("[[endpoints]]\nurl = \"http://127.0.0.1:1\"\n[[endpoints]]\nurl = \"http://127.0.0.1:2\"\ntype = \"tgi\"").unwrap_err();
        assert_eq!(e.key, "endpoints[1].type");
        assert!(
            e.message.contains("ollama"),
            "lists valid types: {}",
            e.message
        );
        let e = parse("[proxy]\nbalancer = \"random\"").unwrap_err();
        assert_eq!(e.key, "proxy.balancer");
        let e = parse("[proxy]\nconnect_timeout_ms = 0").unwrap_err();
        assert_eq!(e.key, "proxy.connect_timeout_ms");
        let e = parse("[anthropic]\ncount_tokens = \"backend\"").unwrap_err();
        assert_eq!(e.key, "anthropic.count_tokens");
        let e =
            parse("[[endpoints]]\nurl = \"http://127.0.0.1:1\"\nanthropic = \"yes\"").unwrap_err();
        assert_eq!(e.key, "endpoints[0].anthropic");
        let shown = parse("[server]\nlisten = \"x\"").unwrap_err().to_string();
        assert!(
            shown.contains("test.toml") && shown.contains("server.listen"),
            "{shown}"
        );
    }
}
