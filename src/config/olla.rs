//! Olla's YAML configuration (`ringway --config config.yaml`), translated into ringway's
//! raw file form (`file::Root`) so that every check and message of ringway's own format
//! applies; errors are then renamed to the Olla key they came from (`rename_key`).
//!
//! Three passes over the text:
//! 1. `survey`: the YAML as a tree against [`SCHEMA`], Olla's keys. A key Olla has and
//!    ringway has no use for (`proxy.engine`, `translators`, `dashboard`...) is warned
//!    about by name, unless its value asks for what ringway does anyway (`write_timeout:
//!    0s`, `logging.output: stdout`); a key Olla does not know is warned about too (Olla
//!    ignores it silently; it is usually a typo). Nothing is ignored without a word.
//! 2. The typed mirror below ([`Olla`]), whose defaults are Olla's (`internal/config`)
//!    for what the file leaves out, then the `OLLA_*` environment overrides Olla
//!    documents (`overrides`). A value of the wrong type is an error naming its key
//!    (`discovery.static.endpoints[0].priority`), as the YAML parser reports it. Durations
//!    are Go's (`30s`, `1h30m`, `500ms`).
//! 3. `convert`: the mirror into ringway's sections.
//!
//! Decisions, where the two differ:
//! - `server.host` + `port` is `server.listen`; `localhost` is 127.0.0.1, an empty host
//!   every interface (Go's `:port`), another name is resolved once.
//! - Olla's 0 for a timeout means "none"; ringway bounds everything, so it keeps its own
//!   default there and says so. Timeouts Olla fills in when 0 (`connection_timeout`,
//!   `response_header_timeout`, `read_timeout` of the proxy) get Olla's fill-in.
//! - `read_header_timeout` → `header_timeout_ms`, `read_timeout` → `body_timeout_ms`,
//!   `idle_timeout` (else `read_timeout`, as Go's server does) → `keepalive_timeout_ms`,
//!   `shutdown_timeout` → `drain_timeout_ms`.
//! - `request_limits.max_header_size` is capped to 64 KiB (ringway's default; Olla's 1 MiB
//!   is Go's default, far above any real request head, and ringway also uses this
//!   bound for what it buffers from a client while streaming) and raised to ringway's
//!   minimum, 1 KiB, with a warning either way.
//! - `proxy.connection_timeout` → `connect_timeout_ms`; `response_header_timeout` (the
//!   wait for the endpoint's response head, Olla's default 30 s) → `response_timeout_ms`;
//!   `read_timeout` (silence within a stream) → `stream_idle_timeout_ms`;
//!   `response_timeout` (the whole response, 15 min) → `request_timeout_ms`.
//! - `proxy.retry` and `server.rate_limits.per_endpoint` are in Olla's shipped file but
//!   not in its schema (Olla ignores them); ringway does what they say: `enabled: false`
//!   or `on_connection_failure: false` → one attempt, else `max_attempts`.
//! - `sticky_sessions` → `[sticky]` (off unless enabled, as in Olla; `prefix_hash_bytes`
//!   → `prompt_prefix_bytes`); rate limits default to Olla's (1000 global, 100 per IP,
//!   1000 for health, bursts of 50 per minute); model lists are read every 5 min
//!   (`discovery.model_discovery.interval`); shutdown drains for 10 s.
//! - `request_logging` (on by default) turns on ringway's access log, in JSON when
//!   `logging.format` is `json`; ringway's own log lines stay text.
//! - Endpoints: `health_check_url` → `health_path`, `model_url` → `models_path`, both
//!   relative to the URL's path. Without `preserve_path` Olla sends requests to the
//!   URL's host without its path, and checks and model lists under it: the path then
//!   moves into `health_path` and `models_path`. Olla types ringway lacks (`vllm-mlx`,
//!   `lmdeploy`, `omlx`, `docker-model-runner`, `auto`) are served as
//!   `openai-compatible` with their Olla paths, with a warning. A file without
//!   `discovery.static.endpoints` gets Olla's default endpoint (Ollama on
//!   localhost:11434, named "localhost"), checked on `/` rather than Olla's `/health`,
//!   which Ollama does not serve.
//! - The operator pages stay loopback-only (`internal_access`), unlike Olla's.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::ToSocketAddrs;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_norway::Value;

use super::{ConfigError, Env, Origin, file};
use crate::endpoint_type::EndpointType;

/// Olla's `text` as ringway's raw configuration, and the warnings about what it asks for
/// that ringway does not do.
pub(super) fn translate(
    text: &str,
    at: Origin<'_>,
    env: Env<'_>,
) -> Result<(file::Root, Vec<String>), ConfigError> {
    let mut tree: Value = serde_norway::from_str(text).map_err(|e| yaml_error(at, &e))?;
    tree.apply_merge().map_err(|e| yaml_error(at, &e))?;
    let mut found = Survey::default();
    survey(&tree, &SCHEMA, "", &mut found);
    let mut warnings = found.into_warnings();
    // A file of comments only is no configuration: Olla's defaults.
    let mut olla: Olla = if tree.is_null() {
        Olla::default()
    } else {
        serde_norway::from_str(text).map_err(|e| yaml_error(at, &e))?
    };
    overrides(&mut olla, env, &mut warnings);
    let root = convert(olla, at, &mut warnings)?;
    Ok((root, warnings))
}

/// A YAML error as a [`ConfigError`]: its key is the path the parser reports
/// (`server.port: invalid type...`), when it has one.
fn yaml_error(at: Origin<'_>, e: &serde_norway::Error) -> ConfigError {
    let text = e.to_string();
    let path = |p: &str| !p.is_empty() && !p.contains(char::is_whitespace);
    match text.split_once(": ") {
        Some((key, message)) if path(key) => at.err(key, message),
        _ => at.err("", text),
    }
}

// ---------------------------------------------------------------------------------------
// Pass 1: which keys of the file ringway reads.

/// What ringway makes of one of Olla's keys.
enum Key {
    /// Read.
    Used,
    /// A table of these keys.
    Table(&'static [(&'static str, Key)]),
    /// A list of such tables.
    List(&'static Key),
    /// No use to ringway (why, when it helps).
    Ignored(&'static str),
    /// No use to ringway unless the value differs from what ringway does anyway.
    Unless(fn(&Value) -> bool, &'static str),
}

use Key::{Ignored, List, Table, Unless, Used};

/// Olla's keys (`internal/config/types.go`, and the shipped file's `proxy.retry` and
/// `server.rate_limits.per_endpoint`).
static SCHEMA: Key = Table(&[
    (
        "server",
        Table(&[
            ("host", Used),
            ("port", Used),
            ("read_timeout", Used),
            ("read_header_timeout", Used),
            (
                "write_timeout",
                Unless(
                    is_zero_duration,
                    "ringway bounds each write to a client by proxy.read_timeout instead",
                ),
            ),
            ("idle_timeout", Used),
            ("shutdown_timeout", Used),
            ("request_logging", Used),
            ("cors", Table(CORS)),
            (
                "request_limits",
                Table(&[("max_body_size", Used), ("max_header_size", Used)]),
            ),
            ("rate_limits", Table(RATE_LIMITS)),
        ]),
    ),
    (
        "proxy",
        Table(&[
            ("engine", Ignored("ringway is its own engine")),
            (
                "profile",
                Ignored("ringway always streams as the endpoint sends"),
            ),
            ("load_balancer", Used),
            ("stream_buffer_size", Ignored("")),
            ("connection_timeout", Used),
            (
                "connection_keep_alive",
                Ignored("TCP keep-alive probes on endpoint connections"),
            ),
            ("response_timeout", Used),
            ("read_timeout", Used),
            ("response_header_timeout", Used),
            (
                "tls_handshake_timeout",
                Ignored("endpoints are plain http://"),
            ),
            ("profile_filter", Ignored("")),
            ("max_retries", Ignored("deprecated in Olla")),
            ("retry_backoff", Ignored("deprecated in Olla")),
            (
                "sticky_sessions",
                Table(&[
                    ("enabled", Used),
                    ("idle_ttl_seconds", Used),
                    ("max_sessions", Used),
                    ("key_sources", Used),
                    ("prefix_hash_bytes", Used),
                ]),
            ),
            (
                "retry",
                Table(&[
                    ("enabled", Used),
                    ("on_connection_failure", Used),
                    ("max_attempts", Used),
                ]),
            ),
        ]),
    ),
    (
        "discovery",
        Table(&[
            ("type", Used),
            (
                "refresh_interval",
                Ignored("static endpoints are read once, at start"),
            ),
            (
                "health_check",
                Table(&[("initial_delay", Ignored("the first checks run at start"))]),
            ),
            ("static", Table(&[("endpoints", List(&ENDPOINT))])),
            (
                "model_discovery",
                Table(&[
                    (
                        "enabled",
                        Unless(
                            is_true,
                            "ringway always reads the model lists: routing by model needs them",
                        ),
                    ),
                    ("interval", Used),
                    (
                        "timeout",
                        Ignored("a model-list read is bounded by the endpoint's check_timeout"),
                    ),
                    ("concurrent_workers", Ignored("")),
                    (
                        "retry_attempts",
                        Ignored("a failed read is tried again at the next check or refresh"),
                    ),
                    ("retry_backoff", Ignored("")),
                ]),
            ),
        ]),
    ),
    (
        "model_registry",
        Table(&[
            ("type", Unless(is_memory, "")),
            (
                "enable_unifier",
                Ignored("ringway lists each endpoint's models as they are"),
            ),
            ("unification", Ignored("")),
            (
                "routing_strategy",
                Table(&[
                    ("type", Used),
                    (
                        "options",
                        Table(&[
                            ("fallback_behavior", Used),
                            ("discovery_timeout", Ignored("")),
                            ("discovery_refresh_on_miss", Ignored("")),
                        ]),
                    ),
                ]),
            ),
        ]),
    ),
    ("model_aliases", Used),
    (
        "translators",
        Unless(
            anthropic_off,
            "ringway has no Anthropic translator: /v1/messages is not served",
        ),
    ),
    (
        "logging",
        Table(&[
            ("level", Used),
            ("format", Used),
            (
                "output",
                Unless(
                    is_stdout,
                    "ringway's log lines go to stderr, its access log to stdout",
                ),
            ),
        ]),
    ),
    (
        "engineering",
        Table(&[("show_nerdstats", Unless(is_false, ""))]),
    ),
    (
        "dashboard",
        Unless(
            disabled,
            "ringway has no dashboard; its status is at /internal/status and /internal/status/endpoints",
        ),
    ),
]);

const CORS: &[(&str, Key)] = &[
    ("enabled", Used),
    ("allowed_origins", Used),
    ("allowed_methods", Used),
    ("allowed_headers", Used),
    ("exposed_headers", Used),
    ("allow_credentials", Used),
    ("max_age", Used),
];

const RATE_LIMITS: &[(&str, Key)] = &[
    ("global_requests_per_minute", Used),
    ("per_ip_requests_per_minute", Used),
    ("health_requests_per_minute", Used),
    ("burst_size", Used),
    (
        "per_endpoint",
        Table(&[("default_requests_per_minute", Used)]),
    ),
    ("cleanup_interval", Used),
    ("trust_proxy_headers", Used),
    ("trusted_proxy_cidrs", Used),
];

static ENDPOINT: Key = Table(&[
    ("url", Used),
    ("name", Used),
    ("type", Used),
    ("priority", Used),
    ("preserve_path", Used),
    ("health_check_url", Used),
    ("model_url", Used),
    ("check_interval", Used),
    ("check_timeout", Used),
    (
        "model_filter",
        Ignored("every model an endpoint lists is routable"),
    ),
    ("auth", Used),
    ("headers", Used),
]);

fn is_zero_duration(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| parse_duration(s).ok())
        .is_some_and(|d| d.is_zero())
}

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

fn is_false(v: &Value) -> bool {
    v.as_bool() == Some(false)
}

fn is_memory(v: &Value) -> bool {
    v.as_str() == Some("memory")
}

fn is_stdout(v: &Value) -> bool {
    v.as_str() == Some("stdout")
}

/// A section turned off by its `enabled: false`.
fn disabled(v: &Value) -> bool {
    v.get("enabled").is_some_and(is_false)
}

/// `translators` with the Anthropic translator turned off.
fn anthropic_off(v: &Value) -> bool {
    v.get("anthropic").is_some_and(disabled)
}

/// What the survey found: ignored keys (with why) and keys nobody knows, in file order.
#[derive(Default)]
struct Survey {
    ignored: Vec<(String, &'static str)>,
    unknown: Vec<String>,
}

fn survey(value: &Value, key: &Key, path: &str, found: &mut Survey) {
    match key {
        Used => {}
        Ignored(why) => found.ignored.push((path.to_string(), why)),
        Unless(same, why) => {
            if !same(value) {
                found.ignored.push((path.to_string(), why));
            }
        }
        // Anything but a list or a table is a type error, reported by the typed pass.
        List(item) => {
            for (i, v) in value.as_sequence().into_iter().flatten().enumerate() {
                survey(v, item, &format!("{path}[{i}]"), found);
            }
        }
        Table(keys) => {
            for (k, v) in value.as_mapping().into_iter().flatten() {
                // `key:` with nothing under it (often only comments) is no setting.
                if v.is_null() {
                    continue;
                }
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .map_or_else(|_| "?".into(), |s| s.trim().to_string()),
                };
                let sub = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match keys.iter().find(|(n, _)| *n == name) {
                    Some((_, key)) => survey(v, key, &sub, found),
                    None => found.unknown.push(sub),
                }
            }
        }
    }
}

impl Survey {
    /// One warning per top-level section with ignored keys, one per unknown key.
    fn into_warnings(self) -> Vec<String> {
        let mut warnings = Vec::new();
        let section = |key: &str| key.split(['.', '[']).next().unwrap_or_default().to_string();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for (key, why) in self.ignored {
            let shown = if why.is_empty() {
                format!("`{key}`")
            } else {
                format!("`{key}` ({why})")
            };
            let top = section(&key);
            match groups.iter_mut().find(|(s, _)| *s == top) {
                Some((_, keys)) => keys.push(shown),
                None => groups.push((top, vec![shown])),
            }
        }
        for (_, keys) in groups {
            warnings.push(format!(
                "ignored, ringway has no equivalent: {}",
                keys.join(", ")
            ));
        }
        for key in self.unknown {
            warnings.push(format!(
                "`{key}` is not a key Olla knows; ignored (Olla ignores it too: a typo?)"
            ));
        }
        warnings
    }
}

// ---------------------------------------------------------------------------------------
// Pass 2: the typed mirror, with Olla's defaults (`DefaultConfig` in internal/config).

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
struct Olla {
    #[serde(deserialize_with = "or_default")]
    server: Server,
    #[serde(deserialize_with = "or_default")]
    proxy: Proxy,
    #[serde(deserialize_with = "or_default")]
    discovery: Discovery,
    #[serde(deserialize_with = "or_default")]
    model_registry: ModelRegistry,
    #[serde(deserialize_with = "or_default")]
    model_aliases: HashMap<String, Vec<String>>,
    #[serde(deserialize_with = "or_default")]
    logging: Logging,
}

#[derive(Deserialize)]
#[serde(default)]
struct Server {
    host: String,
    port: u16,
    read_timeout: Go,
    /// 0: Olla's 10 s.
    read_header_timeout: Go,
    /// Unset and not in the mirror: `write_timeout` (see [`SCHEMA`]).
    idle_timeout: Go,
    shutdown_timeout: Go,
    request_logging: bool,
    #[serde(deserialize_with = "or_default")]
    cors: Cors,
    #[serde(deserialize_with = "or_default")]
    request_limits: RequestLimits,
    #[serde(deserialize_with = "or_default")]
    rate_limits: RateLimits,
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
struct Cors {
    enabled: bool,
    allowed_origins: Vec<String>,
    allowed_methods: Vec<String>,
    allowed_headers: Vec<String>,
    exposed_headers: Vec<String>,
    allow_credentials: bool,
    max_age: u64,
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
struct RequestLimits {
    max_body_size: u64,
    max_header_size: u64,
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
struct RateLimits {
    global_requests_per_minute: u32,
    per_ip_requests_per_minute: u32,
    health_requests_per_minute: u32,
    burst_size: u32,
    #[serde(deserialize_with = "or_default")]
    per_endpoint: PerEndpoint,
    cleanup_interval: Go,
    trust_proxy_headers: bool,
    trusted_proxy_cidrs: Vec<String>,
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
struct PerEndpoint {
    default_requests_per_minute: u32,
}

#[derive(Deserialize)]
#[serde(default)]
struct Proxy {
    load_balancer: String,
    /// 0: Olla's 60 s.
    connection_timeout: Go,
    response_timeout: Go,
    /// 0: Olla's 60 s.
    read_timeout: Go,
    /// 0: Olla's 30 s.
    response_header_timeout: Go,
    #[serde(deserialize_with = "or_default")]
    sticky_sessions: Sticky,
    #[serde(deserialize_with = "or_default")]
    retry: Retry,
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
struct Sticky {
    enabled: bool,
    idle_ttl_seconds: u64,
    max_sessions: usize,
    key_sources: Vec<String>,
    prefix_hash_bytes: usize,
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
struct Retry {
    enabled: bool,
    on_connection_failure: bool,
    max_attempts: usize,
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
struct Discovery {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "static", deserialize_with = "or_default")]
    statics: Static,
    #[serde(deserialize_with = "or_default")]
    model_discovery: ModelDiscovery,
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
struct Static {
    /// `endpoints:` with nothing under it is none (Olla's YAML reader empties the
    /// list); left out, it is Olla's default endpoint.
    #[serde(deserialize_with = "or_default")]
    endpoints: Vec<Endpoint>,
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
struct ModelDiscovery {
    enabled: bool,
    interval: Go,
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
struct Endpoint {
    url: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    /// Absent: 100 (0 is a valid, lowest priority).
    priority: Option<u32>,
    preserve_path: bool,
    health_check_url: String,
    model_url: String,
    /// 0: the `[health]` default, which is Olla's (5 s, and 2 s for the timeout).
    check_interval: Go,
    check_timeout: Go,
    auth: Option<file::Auth>,
    #[serde(deserialize_with = "or_default")]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ModelRegistry {
    #[serde(deserialize_with = "or_default")]
    routing_strategy: RoutingStrategy,
}

#[derive(Deserialize)]
#[serde(default)]
struct RoutingStrategy {
    #[serde(rename = "type")]
    kind: String,
    #[serde(deserialize_with = "or_default")]
    options: RoutingOptions,
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
struct RoutingOptions {
    fallback_behavior: String,
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
struct Logging {
    level: String,
    format: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// A Go duration in the file (`"30s"`, `"1h30m"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Go(Duration);

impl Go {
    const fn secs(s: u64) -> Go {
        Go(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Go {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Go, D::Error> {
        struct GoVisitor;
        impl Visitor<'_> for GoVisitor {
            type Value = Go;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as \"30s\", \"5m\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Go, E> {
                parse_duration(s).map(Go).map_err(E::custom)
            }
        }
        d.deserialize_str(GoVisitor)
    }
}

/// A Go duration (`time.ParseDuration`): numbers with units `ns`, `us` (`µs`), `ms`,
/// `s`, `m`, `h`, fractions allowed (`1.5h`); `0` alone needs no unit. Negative ones are
/// refused (no timeout of ringway's can be).
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a Go duration (such as \"30s\", \"5m\" or \"1h30m\")");
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("{s:?}: a duration must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| {
                format!("{s:?} is not a Go duration: a number needs a unit (\"{number}s\", \"{number}m\")", number = rest)
            })?;
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        // Digits beyond nanoseconds do not change the result.
        let fraction = &fraction[..fraction.len().min(18)];
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| bad())?
        };
        nanos = whole
            .checked_mul(per)
            .and_then(|n| n.checked_add(fraction * per / scale))
            .and_then(|n| nanos.checked_add(n))
            .filter(|&n| n <= u128::from(u64::MAX))
            .ok_or_else(|| format!("{s:?}: too long a duration"))?;
        rest = after;
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A size as Olla's `OLLA_SERVER_MAX_*_SIZE` read it (go-units `RAMInBytes`): a number,
/// optionally with a fraction, then an optional `k`, `m`, `g`, `t` or `p` (powers of
/// 1024), `i` and `b`: `1048576`, `512k`, `100MB`, `1.5GiB`.
fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite())?;
    let mut unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    if unit.ends_with('b') {
        unit.pop();
    }
    if unit.len() == 2 && unit.ends_with('i') {
        unit.pop();
    }
    let power = match unit.as_str() {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The `OLLA_*` variables Olla reads over its file (`applyEnvOverrides`), each into its
/// key; those for keys ringway has no use for are warned about when set. A value that
/// does not parse is ignored, as Olla does, but not silently.
fn overrides(o: &mut Olla, env: Env<'_>, warnings: &mut Vec<String>) {
    let mut set = Overrides { env, warnings };
    let s = &mut o.server;
    set.text("OLLA_SERVER_HOST", &mut s.host);
    set.parsed("OLLA_SERVER_PORT", &mut s.port, "a port", |v| {
        v.parse().ok()
    });
    set.duration("OLLA_SERVER_READ_TIMEOUT", &mut s.read_timeout);
    set.duration(
        "OLLA_SERVER_READ_HEADER_TIMEOUT",
        &mut s.read_header_timeout,
    );
    let mut write_timeout = Go::default();
    set.duration("OLLA_SERVER_WRITE_TIMEOUT", &mut write_timeout);
    if !write_timeout.0.is_zero() {
        set.ignored("OLLA_SERVER_WRITE_TIMEOUT", "server.write_timeout");
    }
    let limits = &mut s.request_limits;
    set.parsed(
        "OLLA_SERVER_MAX_BODY_SIZE",
        &mut limits.max_body_size,
        "a size",
        parse_byte_size,
    );
    set.parsed(
        "OLLA_SERVER_MAX_HEADER_SIZE",
        &mut limits.max_header_size,
        "a size",
        parse_byte_size,
    );
    let r = &mut s.rate_limits;
    set.number(
        "OLLA_SERVER_GLOBAL_RATE_LIMIT",
        &mut r.global_requests_per_minute,
    );
    set.number(
        "OLLA_SERVER_PER_IP_RATE_LIMIT",
        &mut r.per_ip_requests_per_minute,
    );
    set.number("OLLA_SERVER_RATE_BURST_SIZE", &mut r.burst_size);
    set.number(
        "OLLA_SERVER_HEALTH_RATE_LIMIT",
        &mut r.health_requests_per_minute,
    );
    set.duration("OLLA_SERVER_RATE_CLEANUP_INTERVAL", &mut r.cleanup_interval);
    set.flag(
        "OLLA_SERVER_TRUST_PROXY_HEADERS",
        &mut r.trust_proxy_headers,
    );
    set.parsed(
        "OLLA_SERVER_TRUSTED_PROXY_CIDRS",
        &mut r.trusted_proxy_cidrs,
        "a comma-separated list of address blocks",
        |v| {
            let cidrs: Vec<String> = v.split(',').map(|c| c.trim().to_string()).collect();
            cidrs
                .iter()
                .all(|c| super::Cidr::parse(c).is_some())
                .then_some(cidrs)
        },
    );
    let c = &mut s.cors;
    set.flag("OLLA_SERVER_CORS_ENABLED", &mut c.enabled);
    set.list("OLLA_SERVER_CORS_ALLOWED_ORIGINS", &mut c.allowed_origins);
    set.list("OLLA_SERVER_CORS_ALLOWED_METHODS", &mut c.allowed_methods);
    set.list("OLLA_SERVER_CORS_ALLOWED_HEADERS", &mut c.allowed_headers);
    set.list("OLLA_SERVER_CORS_EXPOSED_HEADERS", &mut c.exposed_headers);
    set.flag(
        "OLLA_SERVER_CORS_ALLOW_CREDENTIALS",
        &mut c.allow_credentials,
    );
    set.number("OLLA_SERVER_CORS_MAX_AGE", &mut c.max_age);
    let p = &mut o.proxy;
    set.text("OLLA_PROXY_LOAD_BALANCER", &mut p.load_balancer);
    set.duration("OLLA_PROXY_RESPONSE_TIMEOUT", &mut p.response_timeout);
    set.duration("OLLA_PROXY_READ_TIMEOUT", &mut p.read_timeout);
    set.duration(
        "OLLA_PROXY_RESPONSE_HEADER_TIMEOUT",
        &mut p.response_header_timeout,
    );
    set.flag(
        "OLLA_PROXY_STICKY_SESSIONS_ENABLED",
        &mut p.sticky_sessions.enabled,
    );
    set.text("OLLA_LOGGING_LEVEL", &mut o.logging.level);
    set.text("OLLA_LOGGING_FORMAT", &mut o.logging.format);
    for (var, key) in [
        ("OLLA_PROXY_ENGINE", "proxy.engine"),
        ("OLLA_PROXY_PROFILE", "proxy.profile"),
        (
            "OLLA_PROXY_TLS_HANDSHAKE_TIMEOUT",
            "proxy.tls_handshake_timeout",
        ),
        (
            "OLLA_PROXY_CONNECTION_KEEP_ALIVE",
            "proxy.connection_keep_alive",
        ),
        ("OLLA_SHOW_NERD_STATS", "engineering.show_nerdstats"),
        ("OLLA_MODEL_REGISTRY_TYPE", "model_registry.type"),
        (
            "OLLA_MODEL_UNIFIER_ENABLED",
            "model_registry.enable_unifier",
        ),
        (
            "OLLA_TRANSLATORS_ANTHROPIC_ENABLED",
            "translators.anthropic.enabled",
        ),
        (
            "OLLA_TRANSLATORS_ANTHROPIC_PASSTHROUGH_ENABLED",
            "translators.anthropic.passthrough_enabled",
        ),
        (
            "OLLA_TRANSLATORS_ANTHROPIC_MAX_MESSAGE_SIZE",
            "translators.anthropic.max_message_size",
        ),
    ] {
        set.ignored(var, key);
    }
}

/// Applies one `OLLA_*` variable at a time (set and not empty, as Olla reads them).
struct Overrides<'a, 'e> {
    env: Env<'e>,
    warnings: &'a mut Vec<String>,
}

impl Overrides<'_, '_> {
    fn parsed<T>(
        &mut self,
        var: &str,
        into: &mut T,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) {
        let Some(value) = (self.env)(var).filter(|v| !v.is_empty()) else {
            return;
        };
        match parse(&value) {
            Some(v) => *into = v,
            None => self.warnings.push(format!(
                "{var}={value:?} is not {what}; ignored, as Olla does"
            )),
        }
    }

    fn text(&mut self, var: &str, into: &mut String) {
        self.parsed(var, into, "text", |v| Some(v.to_string()));
    }

    fn number<T: std::str::FromStr>(&mut self, var: &str, into: &mut T) {
        self.parsed(var, into, "a whole number", |v| v.parse().ok());
    }

    fn duration(&mut self, var: &str, into: &mut Go) {
        self.parsed(var, into, "a Go duration such as \"30s\"", |v| {
            parse_duration(v).ok().map(Go)
        });
    }

    /// Go's `strconv.ParseBool`.
    fn flag(&mut self, var: &str, into: &mut bool) {
        self.parsed(var, into, "true or false", |v| match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => None,
        });
    }

    fn list(&mut self, var: &str, into: &mut Vec<String>) {
        self.parsed(var, into, "a list", |v| {
            Some(v.split(',').map(str::to_string).collect())
        });
    }

    fn ignored(&mut self, var: &str, key: &str) {
        if (self.env)(var).is_some_and(|v| !v.is_empty()) {
            self.warnings.push(format!(
                "{var} sets `{key}`, which ringway has no equivalent for; ignored"
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pass 3: into ringway's sections.

/// ringway's defaults for what Olla reads 0 as "no limit" in.
const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 1_800_000;
const DEFAULT_CLEANUP_INTERVAL_MS: u64 = 300_000;
/// What ringway accepts as the largest request head from an Olla file.
const MAX_HEADER_BYTES: u64 = 64 * 1024;
const MIN_HEADER_BYTES: u64 = 1024;

fn ms(d: Go) -> u64 {
    u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A duration Olla reads 0 in as "no limit": ringway keeps its `default` and says so.
fn bounded(key: &str, d: Go, default_ms: u64, warnings: &mut Vec<String>) -> u64 {
    if d.0.is_zero() {
        warnings.push(format!(
            "`{key}` is 0s (no limit, for Olla); ringway needs one and uses its default, {}",
            shown_ms(default_ms)
        ));
        default_ms
    } else {
        ms(d)
    }
}

/// `d`, or Olla's own fill-in when 0.
fn or_olla(d: Go, olla_ms: u64) -> u64 {
    if d.0.is_zero() { olla_ms } else { ms(d) }
}

fn shown_ms(ms: u64) -> String {
    match ms {
        m if m % 60_000 == 0 => format!("{} min", m / 60_000),
        m if m % 1000 == 0 => format!("{} s", m / 1000),
        m => format!("{m} ms"),
    }
}

fn convert(o: Olla, at: Origin<'_>, warnings: &mut Vec<String>) -> Result<file::Root, ConfigError> {
    let mut root = file::Root::default();
    let s = o.server;
    let r = &mut root.server;
    r.listen = listen(&s.host, s.port).map_err(|(key, m)| at.err(key, m))?;
    r.header_timeout_ms = or_olla(s.read_header_timeout, 10_000);
    r.body_timeout_ms = bounded(
        "server.read_timeout",
        s.read_timeout,
        DEFAULT_BODY_TIMEOUT_MS,
        warnings,
    );
    // Go's server: an idle keep-alive connection waits `idle_timeout`, else `read_timeout`.
    let idle = [s.idle_timeout, s.read_timeout]
        .into_iter()
        .find(|d| !d.0.is_zero());
    if let Some(idle) = idle {
        r.keepalive_timeout_ms = ms(idle);
    }
    r.drain_timeout_ms = bounded(
        "server.shutdown_timeout",
        s.shutdown_timeout,
        DEFAULT_DRAIN_TIMEOUT_MS,
        warnings,
    );
    r.max_body_bytes = s.request_limits.max_body_size;
    let asked = s.request_limits.max_header_size;
    let header_bytes = asked.clamp(MIN_HEADER_BYTES, MAX_HEADER_BYTES);
    if header_bytes != asked {
        warnings.push(format!(
            "`server.request_limits.max_header_size` {asked} is {} ringway's {}; using {header_bytes}",
            if asked > header_bytes { "above" } else { "below" },
            if asked > header_bytes { "cap" } else { "minimum" },
        ));
    }
    r.max_header_bytes = header_bytes as usize;
    if s.cors.enabled && s.cors.allowed_origins.is_empty() {
        return Err(at.err(
            "server.cors.allowed_origins",
            "must not be empty when cors is enabled; set [\"*\"] to allow all origins explicitly",
        ));
    }
    root.cors = file::Cors {
        enabled: s.cors.enabled,
        allowed_origins: s.cors.allowed_origins,
        allowed_methods: s.cors.allowed_methods,
        allowed_headers: s.cors.allowed_headers,
        exposed_headers: s.cors.exposed_headers,
        allow_credentials: s.cors.allow_credentials,
        max_age_seconds: s.cors.max_age,
    };
    let l = s.rate_limits;
    root.rate_limits = file::RateLimits {
        global_requests_per_minute: l.global_requests_per_minute,
        per_ip_requests_per_minute: l.per_ip_requests_per_minute,
        per_endpoint_requests_per_minute: l.per_endpoint.default_requests_per_minute,
        health_requests_per_minute: l.health_requests_per_minute,
        burst_size: l.burst_size,
        cleanup_interval_ms: bounded(
            "server.rate_limits.cleanup_interval",
            l.cleanup_interval,
            DEFAULT_CLEANUP_INTERVAL_MS,
            warnings,
        ),
        trust_proxy_headers: l.trust_proxy_headers,
        trusted_proxy_cidrs: l.trusted_proxy_cidrs,
    };

    let p = o.proxy;
    let r = &mut root.proxy;
    r.balancer = p.load_balancer;
    r.connect_timeout_ms = or_olla(p.connection_timeout, 60_000);
    r.response_timeout_ms = or_olla(p.response_header_timeout, 30_000);
    r.stream_idle_timeout_ms = or_olla(p.read_timeout, 60_000);
    r.request_timeout_ms = bounded(
        "proxy.response_timeout",
        p.response_timeout,
        DEFAULT_REQUEST_TIMEOUT_MS,
        warnings,
    );
    r.max_attempts = if p.retry.enabled && p.retry.on_connection_failure {
        p.retry.max_attempts
    } else {
        1
    };
    let st = p.sticky_sessions;
    root.sticky = file::Sticky {
        enabled: st.enabled,
        key_sources: st.key_sources,
        prompt_prefix_bytes: st.prefix_hash_bytes,
        max_sessions: st.max_sessions,
        idle_ttl_seconds: st.idle_ttl_seconds,
        ..file::Sticky::default()
    };

    let d = o.discovery;
    if d.kind != "static" {
        return Err(at.err(
            "discovery.type",
            format!(
                "{:?}: only \"static\" discovery exists (as in Olla)",
                d.kind
            ),
        ));
    }
    if d.model_discovery.enabled && d.model_discovery.interval.0.is_zero() {
        return Err(at.err(
            "discovery.model_discovery.interval",
            "must be greater than 0s when model discovery is enabled",
        ));
    }
    if !d.model_discovery.interval.0.is_zero() {
        root.models.refresh_interval_ms = ms(d.model_discovery.interval);
    }
    root.endpoints = d
        .statics
        .endpoints
        .into_iter()
        .enumerate()
        .map(|(i, e)| endpoint(i, e, warnings))
        .collect();

    let rs = o.model_registry.routing_strategy;
    root.routing = file::Routing {
        strategy: rs.kind,
        fallback: rs.options.fallback_behavior,
    };
    root.model_aliases = o.model_aliases;
    let json = o.logging.format.eq_ignore_ascii_case("json");
    root.log.level = o.logging.level;
    root.log.access = match (s.request_logging, json) {
        (false, _) => "off".into(),
        (true, true) => "json".into(),
        (true, false) => "text".into(),
    };
    if json {
        warnings.push(
            "`logging.format` json applies to the access log (`server.request_logging`) only; ringway's own log lines are text".into(),
        );
    }
    Ok(root)
}

/// `server.host` and `port` as an address to listen on.
fn listen(host: &str, port: u16) -> Result<String, (&'static str, String)> {
    if port == 0 {
        return Err(("server.port", "must be between 1 and 65535, got 0".into()));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "" => [0, 0, 0, 0].into(),
        "localhost" => [127, 0, 0, 1].into(),
        h => match h.parse() {
            Ok(ip) => ip,
            Err(_) => (h, port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .map(|a| a.ip())
                .ok_or_else(|| ("server.host", format!("cannot resolve {h:?}")))?,
        },
    };
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// Olla types ringway has no type for, served as `openai-compatible`: their health and
/// model-list paths in Olla's profiles (`config/profiles/*.yaml`).
const OLLA_ONLY_TYPES: &[(&str, &str, &str)] = &[
    ("vllm-mlx", "/health", "/v1/models"),
    ("lmdeploy", "/health", "/v1/models"),
    ("omlx", "/health", "/v1/models"),
    (
        "docker-model-runner",
        "/engines/v1/models",
        "/engines/v1/models",
    ),
    ("dmr", "/engines/v1/models", "/engines/v1/models"),
    ("auto", "/", "/v1/models"),
    ("", "/", "/v1/models"),
];

fn endpoint(i: usize, e: Endpoint, warnings: &mut Vec<String>) -> file::Endpoint {
    let key = |f: &str| format!("discovery.static.endpoints[{i}].{f}");
    // Olla-only types become openai-compatible; an unknown one is left to ringway's error.
    let (kind, default_health, default_models) = match EndpointType::parse(&e.kind) {
        Some(t) => (e.kind.clone(), t.health_path(), t.models_path()),
        None => match OLLA_ONLY_TYPES.iter().find(|(name, ..)| *name == e.kind) {
            Some(&(name, health, models)) => {
                if !name.is_empty() {
                    warnings.push(format!(
                        "`{}`: ringway has no {name:?} type; served as openai-compatible (at /olla/openai-compatible/ and /olla/proxy/), checked on {health}",
                        key("type")
                    ));
                }
                ("openai-compatible".to_string(), health, models)
            }
            None => (e.kind.clone(), "/", "/v1/models"),
        },
    };
    // Absolute URLs for checks or model lists (another host) are beyond ringway.
    let mut path = |field: &str, given: String, default: &str| -> String {
        if given.contains("://") {
            warnings.push(format!(
                "`{}`: ringway checks an endpoint on its own host only; using {default}",
                key(field)
            ));
            return default.to_string();
        }
        if given.is_empty() {
            default.to_string()
        } else if given.starts_with('/') {
            given
        } else {
            format!("/{given}")
        }
    };
    let mut health_path = path("health_check_url", e.health_check_url, default_health);
    let mut models_path = path("model_url", e.model_url, default_models);
    // Without preserve_path, Olla sends requests to the URL's host alone, and checks and
    // model lists under its path.
    let mut url = e.url;
    if !e.preserve_path {
        if let Some((origin, base)) = split_base_path(&url) {
            health_path = join(&base, &health_path);
            models_path = join(&base, &models_path);
            url = origin;
        }
    }
    let nonzero = |d: Go| (!d.0.is_zero()).then(|| ms(d));
    file::Endpoint {
        name: (!e.name.is_empty()).then_some(e.name),
        url,
        kind,
        priority: e.priority.unwrap_or(100),
        health_path: Some(health_path),
        check_interval_ms: nonzero(e.check_interval),
        check_timeout_ms: nonzero(e.check_timeout),
        api_key: None,
        api_key_env: None,
        api_key_header: None,
        auth: e.auth,
        headers: e.headers,
        models_path: Some(models_path),
    }
}

/// `http://host:port/base/` as (`http://host:port`, `/base`), when it has a path.
fn split_base_path(url: &str) -> Option<(String, String)> {
    let after_scheme = url.find("://")? + 3;
    let slash = after_scheme + url[after_scheme..].find('/')?;
    let base = url[slash..].trim_end_matches('/');
    (!base.is_empty()).then(|| (url[..slash].to_string(), base.to_string()))
}

/// `path.Join(base, path)` for an absolute `path`.
fn join(base: &str, path: &str) -> String {
    match path.trim_start_matches('/') {
        "" => base.to_string(),
        tail => format!("{base}/{tail}"),
    }
}

/// A validation error about the translated configuration, renamed to the Olla key that
/// set what failed (`proxy.connect_timeout_ms` → `proxy.connection_timeout`).
pub(super) fn rename_key(mut e: ConfigError) -> ConfigError {
    e.key = olla_key(&e.key);
    e
}

fn olla_key(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("endpoints") {
        let (index, field) = match rest.split_once("].") {
            Some((index, field)) => (format!("{index}]"), Some(field)),
            None => (rest.to_string(), None),
        };
        let Some(field) = field else {
            return format!("discovery.static.endpoints{index}");
        };
        let (head, tail) = field.split_once('.').unwrap_or((field, ""));
        let head = match head {
            "health_path" => "health_check_url",
            "models_path" => "model_url",
            "check_interval_ms" => "check_interval",
            "check_timeout_ms" => "check_timeout",
            other => other,
        };
        let dot = if tail.is_empty() { "" } else { "." };
        return format!("discovery.static.endpoints{index}.{head}{dot}{tail}");
    }
    const RENAMED: &[(&str, &str)] = &[
        ("server.listen", "server.host"),
        (
            "server.max_header_bytes",
            "server.request_limits.max_header_size",
        ),
        (
            "server.max_body_bytes",
            "server.request_limits.max_body_size",
        ),
        ("server.header_timeout_ms", "server.read_header_timeout"),
        ("server.body_timeout_ms", "server.read_timeout"),
        ("server.keepalive_timeout_ms", "server.idle_timeout"),
        ("server.drain_timeout_ms", "server.shutdown_timeout"),
        ("proxy.balancer", "proxy.load_balancer"),
        ("proxy.connect_timeout_ms", "proxy.connection_timeout"),
        ("proxy.response_timeout_ms", "proxy.response_header_timeout"),
        ("proxy.stream_idle_timeout_ms", "proxy.read_timeout"),
        ("proxy.request_timeout_ms", "proxy.response_timeout"),
        ("proxy.max_attempts", "proxy.retry.max_attempts"),
        (
            "sticky.prompt_prefix_bytes",
            "proxy.sticky_sessions.prefix_hash_bytes",
        ),
        ("routing.strategy", "model_registry.routing_strategy.type"),
        (
            "routing.fallback",
            "model_registry.routing_strategy.options.fallback_behavior",
        ),
        (
            "rate_limits.per_endpoint_requests_per_minute",
            "server.rate_limits.per_endpoint.default_requests_per_minute",
        ),
        (
            "rate_limits.cleanup_interval_ms",
            "server.rate_limits.cleanup_interval",
        ),
        ("cors.max_age_seconds", "server.cors.max_age"),
        (
            "models.refresh_interval_ms",
            "discovery.model_discovery.interval",
        ),
        ("log.level", "logging.level"),
        ("log.access", "server.request_logging"),
    ];
    if let Some((_, olla)) = RENAMED.iter().find(|(ours, _)| *ours == key) {
        return olla.to_string();
    }
    for (ours, olla) in [
        ("rate_limits.", "server.rate_limits."),
        ("cors.", "server.cors."),
        ("sticky.", "proxy.sticky_sessions."),
    ] {
        if let Some(rest) = key.strip_prefix(ours) {
            return format!("{olla}{rest}");
        }
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routing::{Balancer, Fallback, KeySource, Strategy};

    /// An Olla file exercising every section ringway maps, and some it does not.
    const FIXTURE: &str = r#"
server:
  host: "0.0.0.0"
  port: 41000
  read_timeout: 45s
  read_header_timeout: 5s
  write_timeout: 0s
  shutdown_timeout: 1m
  request_logging: false
  cors:
    enabled: true
    allowed_origins: ["http://localhost:3000"]
    allow_credentials: true
    max_age: 600
  request_limits:
    max_body_size: 52428800
    max_header_size: 32768
  rate_limits:
    global_requests_per_minute: 5000
    per_ip_requests_per_minute: 0
    health_requests_per_minute: 100
    burst_size: 20
    per_endpoint:
      default_requests_per_minute: 300
    cleanup_interval: 2m30s
    trust_proxy_headers: true
    trusted_proxy_cidrs: ["10.0.0.0/8"]
proxy:
  engine: "sherpa"
  profile: "streaming"
  load_balancer: "priority"
  connection_timeout: 2s
  response_timeout: 20m
  read_timeout: 90s
  response_header_timeout: 3m
  sticky_sessions:
    enabled: true
    idle_ttl_seconds: 120
    max_sessions: 500
    key_sources: ["session_header", "ip"]
    prefix_hash_bytes: 256
  retry:
    enabled: true
    max_attempts: 2
discovery:
  type: "static"
  refresh_interval: 30s
  static:
    endpoints:
      - url: "http://127.0.0.1:11434"
        name: "gpu-ollama"
        type: "ollama"
        priority: 100
        check_interval: 2s
        check_timeout: 1500ms
      - url: "http://127.0.0.1:1234"
        name: "studio"
        type: "lm-studio"
        priority: 0
        model_url: "/v1/models"
        health_check_url: "/"
        auth:
          type: basic
          username: "admin"
          password: "${OLLA_TEST_PASSWORD:-s3cr3t}"
        headers:
          X-Tenant-ID: "acme"
  model_discovery:
    enabled: true
    interval: 10m
    timeout: 30s
model_registry:
  type: "memory"
  enable_unifier: true
  routing_strategy:
    type: "optimistic"
    options:
      fallback_behavior: "all"
model_aliases:
  llama:
    - "llama3.1:8b"
    - "meta-llama/Llama-3.1-8B-Instruct"
translators:
  anthropic:
    enabled: true
logging:
  level: "debug"
  format: "text"
  output: "stdout"
engineering:
  show_nerdstats: false
dashboard:
  enabled: false
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_olla_yaml_in(text, "olla.yaml", &no_env)
    }

    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        Config::from_olla_yaml_in(text, "olla.yaml", &env)
    }

    #[test]
    fn every_mapped_section_reaches_ringways_config() {
        let c = parse(FIXTURE).unwrap();
        let s = &c.server;
        assert_eq!(s.listen, "0.0.0.0:41000".parse().unwrap());
        assert_eq!(s.header_timeout, Duration::from_secs(5));
        assert_eq!(s.body_timeout, Duration::from_secs(45));
        assert_eq!(s.keepalive_timeout, Duration::from_secs(45));
        assert_eq!(s.drain_timeout, Duration::from_secs(60));
        assert_eq!((s.max_body_bytes, s.max_header_bytes), (52_428_800, 32_768));
        assert!(c.cors.enabled && c.cors.allow_credentials);
        assert_eq!(c.cors.allowed_origins, ["http://localhost:3000"]);
        assert_eq!(c.cors.max_age, Duration::from_secs(600));
        let r = &c.rate_limits;
        assert_eq!(
            (
                r.global_per_minute,
                r.per_ip_per_minute,
                r.health_per_minute
            ),
            (5000, 0, 100)
        );
        assert_eq!((r.per_endpoint_per_minute, r.burst), (300, 20));
        assert_eq!(r.cleanup_interval, Duration::from_secs(150));
        assert!(r.trust_proxy_headers);
        assert_eq!(r.trusted_proxies.len(), 1);
        let p = &c.proxy;
        assert_eq!(p.balancer, Balancer::Priority);
        assert_eq!(p.connect_timeout, Duration::from_secs(2));
        assert_eq!(p.response_timeout, Duration::from_secs(180));
        assert_eq!(p.stream_idle_timeout, Duration::from_secs(90));
        assert_eq!(p.request_timeout, Duration::from_secs(1200));
        assert_eq!(p.max_attempts, 2);
        let st = &c.sticky;
        assert!(st.enabled);
        assert_eq!(st.key_sources, [KeySource::SessionHeader, KeySource::Ip]);
        assert_eq!((st.prompt_prefix_bytes, st.max_sessions), (256, 500));
        assert_eq!(st.idle_ttl, Some(Duration::from_secs(120)));
        assert_eq!(c.routing.strategy, Strategy::Optimistic);
        assert_eq!(c.routing.fallback, Fallback::All);
        assert_eq!(c.models_refresh_interval, Duration::from_secs(600));
        assert_eq!(c.model_aliases[0].0, "llama");
        assert_eq!(c.model_aliases[0].1.len(), 2);
        assert_eq!(c.log_level, crate::log::Level::Debug);
        assert!(c.access_log.is_none(), "request_logging: false");

        let [ollama, studio] = &c.endpoints[..] else {
            panic!("two endpoints");
        };
        assert_eq!(
            (ollama.name.as_str(), ollama.kind),
            ("gpu-ollama", EndpointType::Ollama)
        );
        assert_eq!(ollama.check_interval, Duration::from_secs(2));
        assert_eq!(ollama.check_timeout, Duration::from_millis(1500));
        assert_eq!(
            (ollama.health_path.as_str(), ollama.models_path.as_str()),
            ("/", "/api/tags")
        );
        assert_eq!(studio.priority, 0);
        assert_eq!(
            (studio.health_path.as_str(), studio.models_path.as_str()),
            ("/", "/v1/models")
        );
        let (name, value) = studio.auth.clone().unwrap();
        assert_eq!(
            (name.as_str(), value.expose()),
            ("Authorization", "Basic YWRtaW46czNjcjN0")
        );
        assert_eq!(studio.headers[0].0, "X-Tenant-ID");
        assert_eq!(studio.headers[0].1.expose(), "acme");
    }

    #[test]
    fn keys_ringway_does_not_use_are_named_in_warnings() {
        let c = parse(FIXTURE).unwrap();
        let all = c.warnings.join("\n");
        for key in [
            "`proxy.engine`",
            "`proxy.profile`",
            "`discovery.refresh_interval`",
            "`discovery.model_discovery.timeout`",
            "`model_registry.enable_unifier`",
            "`translators`",
        ] {
            assert!(all.contains(key), "{key} not in:\n{all}");
        }
        // Values that ask for what ringway does anyway are no news.
        for quiet in [
            "write_timeout",
            "show_nerdstats",
            "dashboard",
            "logging.output",
            "model_registry.type",
        ] {
            assert!(!all.contains(quiet), "{quiet} in:\n{all}");
        }
        // One line per section.
        assert_eq!(
            c.warnings.iter().filter(|w| w.contains("`proxy.")).count(),
            1,
            "{all}"
        );
        let typo = "server:\n  prot: 1\n  cors:\n    enabeld: true\nfoo: 1\n";
        let c = parse(typo).unwrap();
        let all = c.warnings.join("\n");
        for key in ["`server.prot`", "`server.cors.enabeld`", "`foo`"] {
            assert!(
                all.contains(&format!("{key} is not a key Olla knows")),
                "{all}"
            );
        }
    }

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

    #[test]
    fn zero_timeouts_keep_ringways_bound_with_a_warning() {
        let c = parse("server:\n  read_timeout: 0s\nproxy:\n  response_timeout: 0s\n  connection_timeout: 0s\n").unwrap();
        assert_eq!(c.server.body_timeout, Duration::from_secs(60));
        assert_eq!(c.proxy.request_timeout, Duration::from_secs(1800));
        // Olla fills in 60 s itself.
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(60));
        let all = c.warnings.join("\n");
        assert!(all.contains("`server.read_timeout` is 0s"), "{all}");
        assert!(all.contains("`proxy.response_timeout` is 0s"), "{all}");
        let c = parse("proxy:\n  retry:\n    enabled: false\n    max_attempts: 5\n").unwrap();
        assert_eq!(c.proxy.max_attempts, 1);
    }

    #[test]
    fn wrong_types_name_the_file_and_key() {
        let e = parse("server:\n  port: \"forty\"\n").unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("olla.yaml", "server.port")
        );
        let e = parse("discovery:\n  static:\n    endpoints:\n      - url: http://127.0.0.1:1\n        priority: high\n").unwrap_err();
        assert_eq!(e.key, "discovery.static.endpoints[0].priority");
        let e = parse("proxy:\n  read_timeout: 10\n").unwrap_err();
        assert_eq!(e.key, "proxy.read_timeout");
        assert!(e.message.contains("Go duration"), "{}", e.message);
        let e = parse("proxy:\n  read_timeout: 10x\n").unwrap_err();
        assert_eq!(e.key, "proxy.read_timeout");
        let e = parse("server: [\n").unwrap_err();
        assert!(e.message.contains("line"), "{e}");
        let e = parse("server:\n  port: 0\n").unwrap_err();
        assert_eq!(e.key, "server.port");
    }

    #[test]
    fn ringways_checks_apply_under_ollas_names() {
        let e = parse("proxy:\n  load_balancer: random\n").unwrap_err();
        assert_eq!(e.key, "proxy.load_balancer");
        let e = parse("discovery:\n  static:\n    endpoints:\n      - url: http://127.0.0.1:1\n        type: tgi\n").unwrap_err();
        assert_eq!(e.key, "discovery.static.endpoints[0].type");
        let e = parse("discovery:\n  static:\n    endpoints:\n      - url: http://127.0.0.1:1\n        auth:\n          type: bearer\n").unwrap_err();
        assert_eq!(e.key, "discovery.static.endpoints[0].auth.token");
        assert!(
            e.message
                .contains("endpoint \"127.0.0.1:1\": bearer auth requires token"),
            "{}",
            e.message
        );
        let e = parse(
            "model_registry:\n  routing_strategy:\n    options:\n      fallback_behavior: maybe\n",
        )
        .unwrap_err();
        assert_eq!(
            e.key,
            "model_registry.routing_strategy.options.fallback_behavior"
        );
        let e = parse("server:\n  rate_limits:\n    trusted_proxy_cidrs: [nope]\n").unwrap_err();
        assert_eq!(e.key, "server.rate_limits.trusted_proxy_cidrs[0]");
        let e = parse("discovery:\n  type: consul\n").unwrap_err();
        assert_eq!(e.key, "discovery.type");
        let e = parse(
            "discovery:\n  static:\n    endpoints:\n      - url: http://user:hunter2@127.0.0.1:1\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "discovery.static.endpoints[0].url");
        assert!(
            !e.message.contains("hunter2") && e.message.contains("auth"),
            "{}",
            e.message
        );
    }

    #[test]
    fn environment_overrides_apply_over_the_file() {
        let c = parse_with(
            FIXTURE,
            &[
                ("OLLA_SERVER_PORT", "42000"),
                ("OLLA_SERVER_HOST", "localhost"),
                ("OLLA_PROXY_LOAD_BALANCER", "round-robin"),
                ("OLLA_LOGGING_LEVEL", "warn"),
                ("OLLA_SERVER_MAX_BODY_SIZE", "10MB"),
                ("OLLA_SERVER_GLOBAL_RATE_LIMIT", "7"),
                ("OLLA_PROXY_STICKY_SESSIONS_ENABLED", "false"),
                ("OLLA_PROXY_READ_TIMEOUT", "2m"),
                ("OLLA_SERVER_CORS_ALLOWED_ORIGINS", "http://a,http://b"),
                ("OLLA_PROXY_ENGINE", "olla"),
                ("OLLA_SERVER_PER_IP_RATE_LIMIT", "lots"),
                ("OLLA_TEST_PASSWORD", "from-env"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:42000".parse().unwrap());
        assert_eq!(c.proxy.balancer, Balancer::RoundRobin);
        assert_eq!(c.log_level, crate::log::Level::Warn);
        assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.rate_limits.global_per_minute, 7);
        assert_eq!(
            c.rate_limits.per_ip_per_minute, 0,
            "an unparsable value is ignored"
        );
        assert!(!c.sticky.enabled);
        assert_eq!(c.proxy.stream_idle_timeout, Duration::from_secs(120));
        assert_eq!(c.cors.allowed_origins, ["http://a", "http://b"]);
        let (_, basic) = c.endpoints[1].auth.clone().unwrap();
        assert_eq!(
            basic.expose(),
            format!(
                "Basic {}",
                super::super::endpoints::base64(b"admin:from-env")
            )
        );
        let all = c.warnings.join("\n");
        assert!(
            all.contains("OLLA_PROXY_ENGINE sets `proxy.engine`"),
            "{all}"
        );
        assert!(
            all.contains("OLLA_SERVER_PER_IP_RATE_LIMIT=\"lots\""),
            "{all}"
        );
    }

    #[test]
    fn base_paths_follow_preserve_path() {
        let text = |preserve: bool| {
            format!(
                "discovery:\n  static:\n    endpoints:\n      - url: http://127.0.0.1:8080/api/\n        type: vllm\n        preserve_path: {preserve}\n"
            )
        };
        // Olla's default: requests to the host alone, checks and model lists under the path.
        let c = parse(&text(false)).unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.base_path, "");
        assert_eq!(
            (e.health_path.as_str(), e.models_path.as_str()),
            ("/api/health", "/api/v1/models")
        );
        let c = parse(&text(true)).unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.base_path, "/api");
        assert_eq!(
            (e.health_path.as_str(), e.models_path.as_str()),
            ("/health", "/v1/models")
        );
    }

    #[test]
    fn olla_only_types_are_served_as_openai_compatible() {
        let c = parse("discovery:\n  static:\n    endpoints:\n      - url: http://127.0.0.1:1\n        type: vllm-mlx\n").unwrap();
        assert_eq!(c.endpoints[0].kind, EndpointType::OpenAiCompatible);
        assert_eq!(c.endpoints[0].health_path, "/health");
        assert!(
            c.warnings.iter().any(|w| w.contains("\"vllm-mlx\"")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn go_durations() {
        for (text, ms) in [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("0s", 0),
            ("0", 0),
            ("1.5s", 1500),
            (".5m", 30_000),
            ("2h45m30.5s", 9_930_500),
            ("1500us", 1),
            ("+10s", 10_000),
        ] {
            assert_eq!(parse_duration(text).unwrap().as_millis(), ms, "{text}");
        }
        assert_eq!(parse_duration("1µs").unwrap(), Duration::from_micros(1));
        assert_eq!(parse_duration("3ns").unwrap(), Duration::from_nanos(3));
        for bad in [
            "",
            "10",
            "5x",
            "s",
            "-5s",
            "1.2.3s",
            "1e3s",
            "9999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        for (text, bytes) in [
            ("1048576", 1_048_576),
            ("512k", 524_288),
            ("100MB", 104_857_600),
            ("1.5GiB", 1_610_612_736),
            ("2 mb", 2_097_152),
        ] {
            assert_eq!(parse_byte_size(text), Some(bytes), "{text}");
        }
        for bad in ["", "x", "10 xb", "-1"] {
            assert_eq!(parse_byte_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen("localhost", 1).unwrap(), "127.0.0.1:1");
        assert_eq!(listen("", 2).unwrap(), "0.0.0.0:2");
        assert_eq!(listen("::", 3).unwrap(), "[::]:3");
        assert_eq!(listen("[::1]", 4).unwrap(), "[::1]:4");
        assert_eq!(listen("192.168.1.5", 5).unwrap(), "192.168.1.5:5");
        assert_eq!(listen("localhost", 0).unwrap_err().0, "server.port");
    }
}
