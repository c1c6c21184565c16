//! Pass 3 over Olla's file: the mirror into ringway's raw sections (`file::Root`), with
//! the decisions the overview in `olla.rs` lists where the two differ.

use std::net::ToSocketAddrs;

use super::mirror::{Endpoint, Olla};
use super::units::Go;
use crate::config::{ConfigError, Origin, file};
use crate::endpoint_type::EndpointType;

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

pub(super) fn convert(
    o: Olla,
    at: Origin<'_>,
    warnings: &mut Vec<String>,
) -> Result<file::Root, ConfigError> {
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
    let t = o.translators.anthropic;
    root.anthropic = file::Anthropic {
        enabled: t.enabled,
        passthrough: t.passthrough_enabled,
        ..file::Anthropic::default()
    };
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
        anthropic: None,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
        tls_insecure_skip_verify: None,
        expand: None,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::olla::parse_test as parse;

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
    fn listen_addresses() {
        assert_eq!(listen("localhost", 1).unwrap(), "127.0.0.1:1");
        assert_eq!(listen("", 2).unwrap(), "0.0.0.0:2");
        assert_eq!(listen("::", 3).unwrap(), "[::]:3");
        assert_eq!(listen("[::1]", 4).unwrap(), "[::1]:4");
        assert_eq!(listen("192.168.1.5", 5).unwrap(), "192.168.1.5:5");
        assert_eq!(listen("localhost", 0).unwrap_err().0, "server.port");
    }
}
