//! Olla's YAML configuration (`ringway --config config.yaml`), translated into ringway's
//! raw file form (`file::Root`) so that every check and message of ringway's own format
//! applies; errors are then renamed to the Olla key they came from (`rename_key`).
//!
//! Three passes over the text:
//! 1. `survey` (`schema`): the YAML as a tree against [`SCHEMA`], Olla's keys. A key Olla
//!    has and ringway has no use for (`proxy.engine`, `dashboard`...) is
//!    warned about by name, unless its value asks for what ringway does anyway
//!    (`write_timeout: 0s`, `logging.output: stdout`); a key Olla does not know is warned
//!    about too (Olla ignores it silently; it is usually a typo). Nothing is ignored
//!    without a word.
//! 2. The typed mirror ([`Olla`], in `mirror`), whose defaults are Olla's
//!    (`internal/config`) for what the file leaves out, then the `OLLA_*` environment
//!    overrides Olla documents (`overrides`, in `env`). A value of the wrong type is an
//!    error naming its key (`discovery.static.endpoints[0].priority`), as the YAML parser
//!    reports it. Durations are Go's (`30s`, `1h30m`, `500ms`; `units`).
//! 3. `convert` (a module of its own): the mirror into ringway's sections.
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
//! - `translators.anthropic.enabled`/`passthrough_enabled` → `[anthropic]`
//!   `enabled`/`passthrough`; its `max_message_size` is ignored (`server.max_body_bytes`
//!   bounds every body).
//! - The operator pages stay loopback-only (`internal_access`), unlike Olla's.

mod convert;
mod env;
mod mirror;
mod schema;
mod units;

use serde_norway::Value;

use super::{ConfigError, Env, Origin, file};
use convert::convert;
use env::overrides;
use mirror::Olla;
use schema::{SCHEMA, Survey, survey};

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

/// An Olla file exercising every section ringway maps, and some it does not. It and the
/// `parse_test*` helpers below are shared by the tests of this folder's modules.
#[cfg(test)]
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

#[cfg(test)]
fn no_env(_: &str) -> Option<String> {
    None
}

/// What the Olla tests parse: `text` as from a file named `olla.yaml`, with no
/// environment.
#[cfg(test)]
fn parse_test(text: &str) -> Result<super::Config, ConfigError> {
    super::Config::from_olla_yaml_in(text, "olla.yaml", &no_env)
}

/// [`parse_test`] with `vars` as the environment.
#[cfg(test)]
fn parse_test_with(text: &str, vars: &[(&str, &str)]) -> Result<super::Config, ConfigError> {
    let env = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    super::Config::from_olla_yaml_in(text, "olla.yaml", &env)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{FIXTURE, parse_test as parse};
    use crate::endpoint_type::EndpointType;
    use crate::routing::{Balancer, Fallback, KeySource, Strategy};

    #[test]
    fn the_anthropic_translator_maps_to_the_anthropic_section() {
        let c = parse(FIXTURE).unwrap();
        assert!(c.anthropic.enabled && c.anthropic.passthrough);
        let text =
            "translators:\n  anthropic:\n    enabled: true\n    passthrough_enabled: false\n";
        let c = parse(text).unwrap();
        assert!(c.anthropic.enabled && !c.anthropic.passthrough);
        let c = parse("translators:\n  anthropic:\n    enabled: false\n").unwrap();
        assert!(!c.anthropic.enabled);
        let vars = [("OLLA_TRANSLATORS_ANTHROPIC_PASSTHROUGH_ENABLED", "false")];
        let c = super::parse_test_with(FIXTURE, &vars).unwrap();
        assert!(!c.anthropic.passthrough);
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
}
