//! Configuration, read once at start: the TOML file as written (`file::*`, serde, unknown
//! keys rejected) is turned into the validated [`Config`] the rest of ringway uses
//! (durations, socket addresses, resolved endpoints). Every error names the key and
//! where the configuration came from.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::endpoint_type::EndpointType;
use crate::http1::{HEADER_CAP, HeadLimits};
use crate::log::{AccessFormat, Level};
use crate::routing::{Balancer, KeySource};

/// The documented example configuration, which is also the default when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../config/ringway.toml");

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
    pub server: ServerConfig,
    pub proxy: ProxyConfig,
    pub health: HealthConfig,
    pub sticky: StickyConfig,
    /// How often each endpoint's model list is read again.
    pub models_refresh_interval: Duration,
    /// `alias → real model names`: a request for the alias goes to an endpoint serving
    /// one of them, with the body's `model` rewritten to that name.
    pub model_aliases: Vec<(String, Vec<String>)>,
    pub log_level: Level,
    /// One line per request, or none.
    pub access_log: Option<AccessFormat>,
    /// Where the access log goes: a file (appended to), or stdout.
    pub access_log_path: Option<std::path::PathBuf>,
    pub endpoints: Vec<EndpointConfig>,
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

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub name: String,
    pub url: String,
    pub kind: EndpointType,
    pub priority: u32,
    /// Resolved once here, off the request path; tried in order when connecting.
    pub addrs: Vec<SocketAddr>,
    /// `host[:port]` as written in the URL: the `Host` header sent to the endpoint.
    pub authority: String,
    /// Path prefix from the URL without a trailing slash ("" when none).
    pub base_path: String,
    /// Path checked by the health checker (after `base_path`).
    pub health_path: String,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    /// Credentials ringway sends to this endpoint: header name and value.
    pub auth: Option<(String, Secret)>,
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

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Config::from_toml(&text, &origin)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: file::Root = toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_string(),
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let err = |key: &str, message: String| ConfigError {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        let s = raw.server;
        let p = raw.proxy;

        let listen = parse_listen(&s.listen).map_err(|m| err("server.listen", m))?;
        let driver = match s.driver.as_str() {
            "auto" => DriverChoice::Auto,
            "io_uring" | "io-uring" | "iouring" => DriverChoice::IoUring,
            "epoll" | "legacy" => DriverChoice::Epoll,
            other => {
                return Err(err(
                    "server.driver",
                    format!(
                        "unknown driver {other:?}; expected \"auto\", \"io_uring\" or \"epoll\""
                    ),
                ));
            }
        };
        if s.max_header_bytes < 1024 {
            return Err(err(
                "server.max_header_bytes",
                "must be at least 1024".into(),
            ));
        }
        if !(8..=HEADER_CAP).contains(&s.max_headers) {
            return Err(err(
                "server.max_headers",
                format!("must be between 8 and {HEADER_CAP}"),
            ));
        }
        let balancer = Balancer::parse(&p.balancer).ok_or_else(|| {
            err(
                "proxy.balancer",
                format!(
                    "unknown balancer {:?}; expected \"least-connections\", \"round-robin\" or \"priority\"",
                    p.balancer
                ),
            )
        })?;
        let log_level = Level::parse(&raw.log.level).ok_or_else(|| {
            err(
                "log.level",
                format!(
                    "unknown level {:?}; expected \"error\", \"warn\", \"info\" or \"debug\"",
                    raw.log.level
                ),
            )
        })?;
        let ms = |key: &str, v: u64| {
            if v == 0 {
                Err(err(key, "must be greater than 0".into()))
            } else {
                Ok(Duration::from_millis(v))
            }
        };

        let h = raw.health;
        for (key, v) in [
            ("health.unhealthy_threshold", h.unhealthy_threshold),
            ("health.healthy_threshold", h.healthy_threshold),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        let health = HealthConfig {
            check_interval: ms("health.check_interval_ms", h.check_interval_ms)?,
            check_timeout: ms("health.check_timeout_ms", h.check_timeout_ms)?,
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
            recovery_interval: ms("health.recovery_interval_ms", h.recovery_interval_ms)?,
            recovery_max_interval: ms(
                "health.recovery_max_interval_ms",
                h.recovery_max_interval_ms,
            )?,
            breaker_threshold: h.breaker_threshold,
            breaker_cooldown: ms("health.breaker_cooldown_ms", h.breaker_cooldown_ms)?,
            breaker_max_cooldown: ms("health.breaker_max_cooldown_ms", h.breaker_max_cooldown_ms)?,
        };
        if health.recovery_max_interval < health.recovery_interval {
            return Err(err(
                "health.recovery_max_interval_ms",
                "must not be below health.recovery_interval_ms".into(),
            ));
        }
        if health.breaker_max_cooldown < health.breaker_cooldown {
            return Err(err(
                "health.breaker_max_cooldown_ms",
                "must not be below health.breaker_cooldown_ms".into(),
            ));
        }
        if let Some(bad) = p.retry_on_status.iter().find(|s| !(400..=599).contains(*s)) {
            return Err(err(
                "proxy.retry_on_status",
                format!("{bad} is not an error status (400-599)"),
            ));
        }

        let st = raw.sticky;
        let mut key_sources = Vec::with_capacity(st.key_sources.len());
        for name in &st.key_sources {
            let source = KeySource::parse(name).ok_or_else(|| {
                err(
                    "sticky.key_sources",
                    format!(
                        "unknown key source {name:?}; expected \"session_header\", \"prefix_hash\", \"auth_header\" or \"ip\""
                    ),
                )
            })?;
            if key_sources.contains(&source) {
                return Err(err(
                    "sticky.key_sources",
                    format!("{name:?} is listed twice"),
                ));
            }
            key_sources.push(source);
        }
        if !(st.max_load_factor == 0.0 || st.max_load_factor >= 1.0)
            || !st.max_load_factor.is_finite()
        {
            return Err(err(
                "sticky.max_load_factor",
                "must be 0 (off) or at least 1.0".into(),
            ));
        }
        let sticky = StickyConfig {
            enabled: st.enabled,
            key_sources,
            max_load_factor: st.max_load_factor,
            prompt_prefix_bytes: st.prompt_prefix_bytes,
        };

        let models_refresh_interval =
            ms("models.refresh_interval_ms", raw.models.refresh_interval_ms)?;
        let mut model_aliases: Vec<(String, Vec<String>)> = raw.model_aliases.into_iter().collect();
        model_aliases.sort();
        for (alias, targets) in &model_aliases {
            if targets.is_empty() {
                return Err(err(
                    &format!("model_aliases.{alias}"),
                    "needs at least one model name".into(),
                ));
            }
        }
        if raw.endpoints.len() > crate::endpoint_set::MAX_ENDPOINTS {
            return Err(err(
                "endpoints",
                format!(
                    "{} endpoints; at most {} are supported",
                    raw.endpoints.len(),
                    crate::endpoint_set::MAX_ENDPOINTS
                ),
            ));
        }

        let mut endpoints: Vec<EndpointConfig> = Vec::with_capacity(raw.endpoints.len());
        for (i, e) in raw.endpoints.into_iter().enumerate() {
            let key = |field: &str| format!("endpoints[{i}].{field}");
            let url = parse_url(&e.url).map_err(|m| err(&key("url"), m))?;
            let auth = endpoint_auth(&e, &key).map_err(|(k, m)| err(&k, m))?;
            let kind = EndpointType::parse(&e.kind).ok_or_else(|| {
                err(
                    &key("type"),
                    format!(
                        "unknown endpoint type {:?}; expected one of {}",
                        e.kind,
                        EndpointType::names()
                    ),
                )
            })?;
            let name = e.name.unwrap_or_else(|| url.authority.clone());
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(
                    &key("name"),
                    format!(
                        "{name:?} must be non-empty printable ASCII without spaces (it is sent in headers)"
                    ),
                ));
            }
            if let Some(j) = endpoints.iter().position(|other| other.name == name) {
                return Err(err(
                    &key("name"),
                    format!("{name:?} is already the name of endpoints[{j}]"),
                ));
            }
            let addrs = (url.host.as_str(), url.port)
                .to_socket_addrs()
                .map_err(|e| err(&key("url"), format!("cannot resolve {:?}: {e}", url.host)))?
                .collect::<Vec<_>>();
            if addrs.is_empty() {
                return Err(err(
                    &key("url"),
                    format!("{:?} resolves to no address", url.host),
                ));
            }
            let health_path = e
                .health_path
                .unwrap_or_else(|| kind.health_path().to_string());
            if !health_path.starts_with('/') || !health_path.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(
                    &key("health_path"),
                    format!("{health_path:?} must be a path starting with /"),
                ));
            }
            let check_interval = match e.check_interval_ms {
                Some(v) => ms(&key("check_interval_ms"), v)?,
                None => health.check_interval,
            };
            let check_timeout = match e.check_timeout_ms {
                Some(v) => ms(&key("check_timeout_ms"), v)?,
                None => health.check_timeout,
            };
            endpoints.push(EndpointConfig {
                name,
                url: e.url,
                kind,
                priority: e.priority,
                addrs,
                authority: url.authority,
                base_path: url.base_path,
                health_path,
                check_interval,
                check_timeout,
                auth,
            });
        }

        let api_keys = inbound_keys(&s).map_err(|(k, m)| err(k, m))?;
        if p.forward_client_auth && !api_keys.is_empty() {
            return Err(err(
                "proxy.forward_client_auth",
                "cannot be used with server.api_keys: clients then present ringway's own keys"
                    .into(),
            ));
        }

        Ok(Config {
            origin: origin.to_string(),
            server: ServerConfig {
                listen,
                shards: s.shards,
                pin_cores: s.pin_cores,
                driver,
                max_header_bytes: s.max_header_bytes,
                max_headers: s.max_headers,
                max_body_bytes: s.max_body_bytes,
                header_timeout: ms("server.header_timeout_ms", s.header_timeout_ms)?,
                body_timeout: ms("server.body_timeout_ms", s.body_timeout_ms)?,
                keepalive_timeout: ms("server.keepalive_timeout_ms", s.keepalive_timeout_ms)?,
                max_connections: match s.max_connections {
                    0 => return Err(err("server.max_connections", "must be at least 1".into())),
                    n => n,
                },
                api_keys,
                debug_panic_route: false,
                drain_timeout: ms("server.drain_timeout_ms", s.drain_timeout_ms)?,
                internal_from_anywhere: match s.internal_access.as_str() {
                    "loopback" => false,
                    "any" => true,
                    other => {
                        return Err(err(
                            "server.internal_access",
                            format!("{other:?}; expected \"loopback\" or \"any\""),
                        ));
                    }
                },
            },
            proxy: ProxyConfig {
                balancer,
                connect_timeout: ms("proxy.connect_timeout_ms", p.connect_timeout_ms)?,
                response_timeout: ms("proxy.response_timeout_ms", p.response_timeout_ms)?,
                stream_idle_timeout: ms("proxy.stream_idle_timeout_ms", p.stream_idle_timeout_ms)?,
                request_timeout: ms("proxy.request_timeout_ms", p.request_timeout_ms)?,
                forward_client_auth: p.forward_client_auth,
                pool_idle_timeout: ms("proxy.pool_idle_timeout_ms", p.pool_idle_timeout_ms)?,
                pool_max_idle: p.pool_max_idle,
                retry_on_status: p.retry_on_status,
                max_attempts: p.max_attempts,
            },
            health,
            sticky,
            models_refresh_interval,
            model_aliases,
            log_level,
            access_log: match raw.log.access.as_str() {
                "off" => None,
                "text" => Some(AccessFormat::Text),
                "json" => Some(AccessFormat::Json),
                other => {
                    return Err(err(
                        "log.access",
                        format!("{other:?}; expected \"off\", \"text\" or \"json\""),
                    ));
                }
            },
            access_log_path: raw.log.access_path.map(Into::into),
            endpoints,
        })
    }

    /// Applies `--listen`.
    pub fn set_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.server.listen = parse_listen(listen).map_err(|message| ConfigError {
            origin: "the command line".into(),
            key: "--listen".into(),
            message,
        })?;
        Ok(())
    }

    /// The number of shards to run: `server.shards`, or one per available CPU.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// A credential must fit in a header value as is.
fn check_secret(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// The inbound API keys from `server.api_keys`, the file named by `api_keys_file` (one
/// key per line; blank lines and `#` comments skipped) and the environment variable named
/// by `api_keys_env` (comma-separated). Errors carry the key they are about.
fn inbound_keys(s: &file::Server) -> Result<Vec<Secret>, (&'static str, String)> {
    let mut keys = Vec::new();
    for (i, k) in s.api_keys.iter().enumerate() {
        check_secret(k).map_err(|m| ("server.api_keys", format!("key #{}: {m}", i + 1)))?;
        keys.push(Secret::new(k.as_str()));
    }
    if let Some(path) = &s.api_keys_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ("server.api_keys_file", format!("cannot read {path:?}: {e}")))?;
        let before = keys.len();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            check_secret(line).map_err(|m| {
                (
                    "server.api_keys_file",
                    format!("{path:?} line {}: {m}", n + 1),
                )
            })?;
            keys.push(Secret::new(line));
        }
        if keys.len() == before {
            return Err(("server.api_keys_file", format!("{path:?} holds no key")));
        }
    }
    if let Some(var) = &s.api_keys_env {
        let value = std::env::var(var).map_err(|_| {
            (
                "server.api_keys_env",
                format!("the environment variable {var} is not set (or not UTF-8)"),
            )
        })?;
        let before = keys.len();
        for k in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            check_secret(k).map_err(|m| ("server.api_keys_env", format!("a key in {var} {m}")))?;
            keys.push(Secret::new(k));
        }
        if keys.len() == before {
            return Err(("server.api_keys_env", format!("{var} holds no key")));
        }
    }
    Ok(keys)
}

/// `api_key` or `api_key_env` (not both) sent as `api_key_header`: `Authorization:
/// Bearer <key>` by default, the bare key in any other header.
fn endpoint_auth(
    e: &file::Endpoint,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<(String, Secret)>, (String, String)> {
    let value = match (&e.api_key, &e.api_key_env) {
        (Some(_), Some(_)) => {
            return Err((
                key("api_key_env"),
                "set either api_key or api_key_env, not both".into(),
            ));
        }
        (Some(k), None) => {
            check_secret(k).map_err(|m| (key("api_key"), m))?;
            k.clone()
        }
        (None, Some(var)) => {
            let k = std::env::var(var).map_err(|_| {
                (
                    key("api_key_env"),
                    format!("the environment variable {var} is not set (or not UTF-8)"),
                )
            })?;
            check_secret(&k).map_err(|m| (key("api_key_env"), format!("{var}: {m}")))?;
            k
        }
        (None, None) => {
            if e.api_key_header.is_some() {
                return Err((key("api_key_header"), "needs api_key or api_key_env".into()));
            }
            return Ok(None);
        }
    };
    let header = e.api_key_header.as_deref().unwrap_or("Authorization");
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if header.is_empty() || !header.bytes().all(token) {
        return Err((
            key("api_key_header"),
            format!("{header:?} is not a header name"),
        ));
    }
    let value = if header.eq_ignore_ascii_case("authorization") {
        format!("Bearer {value}")
    } else {
        value
    };
    Ok(Some((header.to_string(), Secret::new(value))))
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP:port address (for example \"127.0.0.1:40114\" or \"[::]:40114\")"
        )
    })
}

struct Url {
    host: String,
    port: u16,
    authority: String,
    base_path: String,
}

/// Accepts `http://host[:port][/path]`; anything else is refused with the reason.
fn parse_url(s: &str) -> Result<Url, String> {
    let rest = match s.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "{s:?}: https endpoints are not supported yet; use http:// (inference servers on a private network) or put a TLS client proxy in front"
            ));
        }
        _ => return Err(format!("{s:?} is not an http:// URL")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(format!(
            "{s:?}: a query or fragment is not allowed in an endpoint URL"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{s:?}: credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unterminated IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{s:?}: bad port"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a valid port"))?,
    };
    Ok(Url {
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        base_path: path.trim_end_matches('/').to_string(),
    })
}

/// The file as written. Defaults here are the documented defaults in
/// `config/ringway.toml`; a test checks the two agree.
mod file {
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
        pub(super) models: Models,
        #[serde(default)]
        pub(super) model_aliases: std::collections::HashMap<String, Vec<String>>,
        #[serde(default)]
        pub(super) log: Log,
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
                pool_max_idle: 64,
                retry_on_status: vec![502, 503, 504],
                max_attempts: 0,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct Models {
        pub(super) refresh_interval_ms: u64,
    }

    impl Default for Models {
        fn default() -> Self {
            Models {
                refresh_interval_ms: 30_000,
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
    }

    fn openai_compatible() -> String {
        "openai-compatible".into()
    }

    fn default_priority() -> u32 {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml")
    }

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
    fn file_defaults_match_the_documented_values() {
        // An empty file and the documented file must configure the proxy identically.
        let empty = parse("").unwrap();
        let doc = Config::embedded_default();
        assert_eq!(format!("{:?}", empty.server), format!("{:?}", doc.server));
        assert_eq!(format!("{:?}", empty.proxy), format!("{:?}", doc.proxy));
        assert_eq!(format!("{:?}", empty.health), format!("{:?}", doc.health));
        assert_eq!(format!("{:?}", empty.sticky), format!("{:?}", doc.sticky));
        assert_eq!(empty.models_refresh_interval, doc.models_refresh_interval);
        assert_eq!(empty.model_aliases, doc.model_aliases);
        assert_eq!(empty.log_level, doc.log_level);
        assert!(empty.endpoints.is_empty());
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
        let shown = parse("[server]\nlisten = \"x\"").unwrap_err().to_string();
        assert!(
            shown.contains("test.toml") && shown.contains("server.listen"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = parse("[server]\nlisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.message.contains("lisen"), "{}", e.message);
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = parse("[[endpoints]]\nurl = \"http://127.0.0.1:1\"\nweight = 3").unwrap_err();
        assert!(e.message.contains("weight"), "{}", e.message);
    }

    #[test]
    fn endpoint_urls() {
        let c = parse(
            "[[endpoints]]\nurl = \"http://127.0.0.1:8000/openai/\"\n[[endpoints]]\nname = \"v6\"\nurl = \"http://[::1]\"",
        )
        .unwrap();
        let e = &c.endpoints[0];
        assert_eq!(
            (e.name.as_str(), e.authority.as_str(), e.base_path.as_str()),
            ("127.0.0.1:8000", "127.0.0.1:8000", "/openai")
        );
        assert_eq!(e.kind, EndpointType::OpenAiCompatible);
        assert_eq!(e.priority, 100);
        assert_eq!(c.endpoints[1].addrs[0], "[::1]:80".parse().unwrap());
        for bad in [
            "https://a:1",
            "ftp://a",
            "http://:80",
            "http://a:0",
            "http://a:x",
            "http://u:p@a:1",
            "http://a:1/?q",
        ] {
            let text = format!("[[endpoints]]\nurl = \"{bad}\"");
            assert_eq!(parse(&text).unwrap_err().key, "endpoints[0].url", "{bad}");
        }
    }

    #[test]
    fn api_keys_from_the_file_the_environment_and_the_list_add_up() {
        let path = std::env::temp_dir().join(format!("ringway-keys-{}", std::process::id()));
        std::fs::write(&path, "# operators\nsk-file-1\n\n  sk-file-2  \n").unwrap();
        let text = format!(
            "[server]\napi_keys = [\"sk-list\"]\napi_keys_file = {:?}",
            path.display().to_string()
        );
        let c = parse(&text).unwrap();
        let keys: Vec<&str> = c.server.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["sk-list", "sk-file-1", "sk-file-2"]);
        // Keys never show in debug output (logs, --check-config).
        let shown = format!("{:?}", c.server);
        assert!(!shown.contains("sk-"), "{shown}");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert_eq!(parse(&text).unwrap_err().key, "server.api_keys_file");
        std::fs::remove_file(&path).unwrap();
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "server.api_keys_file");
        assert!(e.message.contains("cannot read"), "{}", e.message);
        let e = parse("[server]\napi_keys_env = \"RINGWAY_TEST_SURELY_UNSET_VAR\"").unwrap_err();
        assert_eq!(e.key, "server.api_keys_env");
        assert!(
            e.message.contains("RINGWAY_TEST_SURELY_UNSET_VAR"),
            "{}",
            e.message
        );
        let e = parse("[server]\napi_keys = [\"has space\"]").unwrap_err();
        assert_eq!(e.key, "server.api_keys");
    }

    #[test]
    fn client_credentials_cannot_be_forwarded_when_they_are_ringways_keys() {
        let e =
            parse("[server]\napi_keys = [\"k\"]\n[proxy]\nforward_client_auth = true").unwrap_err();
        assert_eq!(e.key, "proxy.forward_client_auth");
        let alone = parse("[proxy]\nforward_client_auth = true").unwrap();
        assert!(alone.proxy.forward_client_auth && alone.server.api_keys.is_empty());
    }

    #[test]
    fn endpoint_credentials() {
        let ep = |extra: &str| {
            parse(&format!(
                "[[endpoints]]\nurl = \"http://127.0.0.1:1\"\n{extra}"
            ))
        };
        let c = ep("api_key = \"sk-b\"").unwrap();
        let (name, value) = c.endpoints[0].auth.clone().unwrap();
        assert_eq!(
            (name.as_str(), value.expose()),
            ("Authorization", "Bearer sk-b")
        );
        let c = ep("api_key = \"sk-b\"\napi_key_header = \"X-Api-Key\"").unwrap();
        let (name, value) = c.endpoints[0].auth.clone().unwrap();
        assert_eq!((name.as_str(), value.expose()), ("X-Api-Key", "sk-b"));
        assert!(!format!("{:?}", c.endpoints).contains("sk-b"));
        for (extra, key) in [
            (
                "api_key = \"a\"\napi_key_env = \"B\"",
                "endpoints[0].api_key_env",
            ),
            ("api_key_header = \"X-Key\"", "endpoints[0].api_key_header"),
            (
                "api_key = \"a\"\napi_key_header = \"bad header\"",
                "endpoints[0].api_key_header",
            ),
            ("api_key = \"two words\"", "endpoints[0].api_key"),
            (
                "api_key_env = \"RINGWAY_TEST_SURELY_UNSET_VAR\"",
                "endpoints[0].api_key_env",
            ),
        ] {
            assert_eq!(ep(extra).unwrap_err().key, key, "{extra}");
        }
    }

    #[test]
    fn limits_and_timeouts_are_validated() {
        assert_eq!(
            parse("[server]\nmax_connections = 0").unwrap_err().key,
            "server.max_connections"
        );
        assert_eq!(
            parse("[server]\nkeepalive_timeout_ms = 0").unwrap_err().key,
            "server.keepalive_timeout_ms"
        );
        assert_eq!(
            parse("[proxy]\nrequest_timeout_ms = 0").unwrap_err().key,
            "proxy.request_timeout_ms"
        );
    }

    #[test]
    fn endpoint_names_are_unique_and_header_safe() {
        let dup = "[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"";
        assert_eq!(parse(dup).unwrap_err().key, "endpoints[1].name");
        let spaced = "[[endpoints]]\nname = \"a b\"\nurl = \"http://127.0.0.1:1\"";
        assert_eq!(parse(spaced).unwrap_err().key, "endpoints[0].name");
    }
}
