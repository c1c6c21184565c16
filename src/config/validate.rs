//! Validation of the plain sections, one function each, in the file's order: each turns
//! its part of the file (`file::*`) into its part of the validated [`Config`].
//! [`across_sections`] then checks the rules that tie one section to another. (Endpoints
//! have their own module, `endpoints`; inbound API keys theirs, `keys`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    AnthropicConfig, Config, ConfigError, DriverChoice, HealthConfig, Origin, ProxyConfig,
    ServerConfig, StickyConfig, file, keys, listener_tls,
};
use crate::http1::HEADER_CAP;
use crate::log::{AccessFormat, Level};
use crate::routing::{Balancer, Fallback, KeySource, PrefixGroupsConfig, RoutingConfig, Strategy};

/// `[server]`, inbound API keys included.
pub(super) fn server(s: file::Server, at: Origin<'_>) -> Result<ServerConfig, ConfigError> {
    let listen = parse_listen(&s.listen).map_err(|m| at.err("server.listen", m))?;
    let driver = match s.driver.as_str() {
        "auto" => DriverChoice::Auto,
        "io_uring" | "io-uring" | "iouring" => DriverChoice::IoUring,
        "epoll" | "legacy" => DriverChoice::Epoll,
        other => {
            return Err(at.err(
                "server.driver",
                format!("unknown driver {other:?}; expected \"auto\", \"io_uring\" or \"epoll\""),
            ));
        }
    };
    if s.max_header_bytes < 1024 {
        return Err(at.err("server.max_header_bytes", "must be at least 1024"));
    }
    if !(8..=HEADER_CAP).contains(&s.max_headers) {
        return Err(at.err(
            "server.max_headers",
            format!("must be between 8 and {HEADER_CAP}"),
        ));
    }
    let header_timeout = at.nonzero_ms("server.header_timeout_ms", s.header_timeout_ms)?;
    let body_timeout = at.nonzero_ms("server.body_timeout_ms", s.body_timeout_ms)?;
    let keepalive_timeout = at.nonzero_ms("server.keepalive_timeout_ms", s.keepalive_timeout_ms)?;
    if s.max_connections == 0 {
        return Err(at.err("server.max_connections", "must be at least 1"));
    }
    let api_keys = keys::inbound(&s, at)?;
    let tls =
        listener_tls::listener_tls(s.tls_cert_file.as_deref(), s.tls_key_file.as_deref(), at)?;
    let internal_from_anywhere = match s.internal_access.as_str() {
        "loopback" => false,
        "any" => true,
        other => {
            return Err(at.err(
                "server.internal_access",
                format!("{other:?}; expected \"loopback\" or \"any\""),
            ));
        }
    };
    Ok(ServerConfig {
        listen,
        shards: s.shards,
        pin_cores: s.pin_cores,
        driver,
        max_header_bytes: s.max_header_bytes,
        max_headers: s.max_headers,
        max_body_bytes: s.max_body_bytes,
        header_timeout,
        body_timeout,
        keepalive_timeout,
        max_connections: s.max_connections,
        api_keys,
        internal_from_anywhere,
        drain_timeout: at.nonzero_ms("server.drain_timeout_ms", s.drain_timeout_ms)?,
        tls,
        debug_panic_route: false,
    })
}

/// `server.listen`, and `--listen` on the command line.
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP:port address (for example \"127.0.0.1:40114\" or \"[::]:40114\")"
        )
    })
}

/// `[proxy]`.
pub(super) fn proxy(p: file::Proxy, at: Origin<'_>) -> Result<ProxyConfig, ConfigError> {
    let balancer = Balancer::parse(&p.balancer).ok_or_else(|| {
        at.err(
            "proxy.balancer",
            format!(
                "unknown balancer {:?}; expected \"least-connections\", \"round-robin\" or \"priority\"",
                p.balancer
            ),
        )
    })?;
    if let Some(bad) = p.retry_on_status.iter().find(|s| !(400..=599).contains(*s)) {
        return Err(at.err(
            "proxy.retry_on_status",
            format!("{bad} is not an error status (400-599)"),
        ));
    }
    Ok(ProxyConfig {
        balancer,
        connect_timeout: at.nonzero_ms("proxy.connect_timeout_ms", p.connect_timeout_ms)?,
        response_timeout: at.nonzero_ms("proxy.response_timeout_ms", p.response_timeout_ms)?,
        stream_idle_timeout: at
            .nonzero_ms("proxy.stream_idle_timeout_ms", p.stream_idle_timeout_ms)?,
        request_timeout: at.nonzero_ms("proxy.request_timeout_ms", p.request_timeout_ms)?,
        forward_client_auth: p.forward_client_auth,
        pool_idle_timeout: at.nonzero_ms("proxy.pool_idle_timeout_ms", p.pool_idle_timeout_ms)?,
        pool_max_idle: p.pool_max_idle,
        retry_on_status: p.retry_on_status,
        max_attempts: p.max_attempts,
    })
}

/// `[health]`: the defaults of every endpoint's checks, recovery probing, the breaker.
pub(super) fn health(h: file::Health, at: Origin<'_>) -> Result<HealthConfig, ConfigError> {
    for (key, v) in [
        ("health.unhealthy_threshold", h.unhealthy_threshold),
        ("health.healthy_threshold", h.healthy_threshold),
    ] {
        if v == 0 {
            return Err(at.err(key, "must be at least 1"));
        }
    }
    let health = HealthConfig {
        check_interval: at.nonzero_ms("health.check_interval_ms", h.check_interval_ms)?,
        check_timeout: at.nonzero_ms("health.check_timeout_ms", h.check_timeout_ms)?,
        unhealthy_threshold: h.unhealthy_threshold,
        healthy_threshold: h.healthy_threshold,
        recovery_interval: at.nonzero_ms("health.recovery_interval_ms", h.recovery_interval_ms)?,
        recovery_max_interval: at.nonzero_ms(
            "health.recovery_max_interval_ms",
            h.recovery_max_interval_ms,
        )?,
        breaker_threshold: h.breaker_threshold,
        breaker_cooldown: at.nonzero_ms("health.breaker_cooldown_ms", h.breaker_cooldown_ms)?,
        breaker_max_cooldown: at
            .nonzero_ms("health.breaker_max_cooldown_ms", h.breaker_max_cooldown_ms)?,
    };
    if health.recovery_max_interval < health.recovery_interval {
        return Err(at.err(
            "health.recovery_max_interval_ms",
            "must not be below health.recovery_interval_ms",
        ));
    }
    if health.breaker_max_cooldown < health.breaker_cooldown {
        return Err(at.err(
            "health.breaker_max_cooldown_ms",
            "must not be below health.breaker_cooldown_ms",
        ));
    }
    Ok(health)
}

/// `[sticky]`.
pub(super) fn prefix_groups(
    g: file::PrefixGroups,
    at: Origin<'_>,
) -> Result<PrefixGroupsConfig, ConfigError> {
    if !(1..=crate::endpoint_set::MAX_ENDPOINTS).contains(&g.size) {
        return Err(at.err(
            "prefix_groups.size",
            format!(
                "must be between 1 and {}",
                crate::endpoint_set::MAX_ENDPOINTS
            ),
        ));
    }
    if !(g.max_load_factor == 0.0 || g.max_load_factor >= 1.0) || !g.max_load_factor.is_finite() {
        return Err(at.err(
            "prefix_groups.max_load_factor",
            "must be 0 (off) or at least 1.0",
        ));
    }
    if g.min_prefix_bytes == 0 {
        return Err(at.err("prefix_groups.min_prefix_bytes", "must be at least 1"));
    }
    Ok(PrefixGroupsConfig {
        enabled: g.enabled,
        size: g.size,
        max_load_factor: g.max_load_factor,
        min_prefix_bytes: g.min_prefix_bytes,
        user_prefix_bytes: g.user_prefix_bytes,
    })
}

pub(super) fn sticky(st: file::Sticky, at: Origin<'_>) -> Result<StickyConfig, ConfigError> {
    let mut key_sources = Vec::with_capacity(st.key_sources.len());
    for name in &st.key_sources {
        let source = KeySource::parse(name).ok_or_else(|| {
            at.err(
                "sticky.key_sources",
                format!(
                    "unknown key source {name:?}; expected \"session_header\", \"prefix_hash\", \"auth_header\" or \"ip\""
                ),
            )
        })?;
        if key_sources.contains(&source) {
            return Err(at.err("sticky.key_sources", format!("{name:?} is listed twice")));
        }
        key_sources.push(source);
    }
    if !(st.max_load_factor == 0.0 || st.max_load_factor >= 1.0) || !st.max_load_factor.is_finite()
    {
        return Err(at.err("sticky.max_load_factor", "must be 0 (off) or at least 1.0"));
    }
    if st.max_sessions == 0 {
        return Err(at.err("sticky.max_sessions", "must be at least 1"));
    }
    if st.idle_ttl_seconds > crate::routing::seen::MAX_TTL_MS / 1000 {
        return Err(at.err(
            "sticky.idle_ttl_seconds",
            format!(
                "must be at most {} (12 days)",
                crate::routing::seen::MAX_TTL_MS / 1000
            ),
        ));
    }
    Ok(StickyConfig {
        enabled: st.enabled,
        key_sources,
        max_load_factor: st.max_load_factor,
        prompt_prefix_bytes: st.prompt_prefix_bytes,
        max_sessions: st.max_sessions,
        idle_ttl: (st.idle_ttl_seconds > 0).then(|| Duration::from_secs(st.idle_ttl_seconds)),
    })
}

/// `[routing]`.
pub(super) fn routing(r: file::Routing, at: Origin<'_>) -> Result<RoutingConfig, ConfigError> {
    let strategy = Strategy::parse(&r.strategy).ok_or_else(|| {
        at.err(
            "routing.strategy",
            format!(
                "unknown strategy {:?}; expected \"strict\", \"optimistic\" or \"discovery\"",
                r.strategy
            ),
        )
    })?;
    let fallback = Fallback::parse(&r.fallback).ok_or_else(|| {
        at.err(
            "routing.fallback",
            format!(
                "unknown fallback {:?}; expected \"compatible_only\", \"all\" or \"none\"",
                r.fallback
            ),
        )
    })?;
    Ok(RoutingConfig { strategy, fallback })
}

/// `[anthropic]`; a ping interval of 0 means no pings.
pub(super) fn anthropic(
    a: file::Anthropic,
    at: Origin<'_>,
) -> Result<AnthropicConfig, ConfigError> {
    let count_tokens_by_endpoint = match a.count_tokens.as_str() {
        "local" => false,
        "endpoint" => true,
        other => {
            return Err(at.err(
                "anthropic.count_tokens",
                format!("{other:?} is not \"local\" or \"endpoint\""),
            ));
        }
    };
    Ok(AnthropicConfig {
        enabled: a.enabled,
        passthrough: a.passthrough,
        ping_interval: (a.ping_interval_ms > 0).then(|| Duration::from_millis(a.ping_interval_ms)),
        count_tokens_by_endpoint,
    })
}

/// Shortest `models.loaded_refresh_interval_ms` but 0: faster would poll the engines
/// harder than their state changes.
const MIN_LOADED_REFRESH_MS: u64 = 100;

/// `[models]`: how often each endpoint's model list is read again, and how often what it
/// holds in memory is (`None`: never).
pub(super) fn models(
    m: file::Models,
    at: Origin<'_>,
) -> Result<(Duration, Option<Duration>), ConfigError> {
    let lists = at.nonzero_ms("models.refresh_interval_ms", m.refresh_interval_ms)?;
    let loaded = match m.loaded_refresh_interval_ms {
        0 => None,
        ms if ms < MIN_LOADED_REFRESH_MS => {
            return Err(at.err(
                "models.loaded_refresh_interval_ms",
                format!("must be 0 (off) or at least {MIN_LOADED_REFRESH_MS}"),
            ));
        }
        ms => Some(Duration::from_millis(ms)),
    };
    Ok((lists, loaded))
}

/// `[model_aliases]`, sorted by alias (the file's order is lost in the map).
pub(super) fn model_aliases(
    aliases: HashMap<String, Vec<String>>,
    at: Origin<'_>,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut aliases: Vec<(String, Vec<String>)> = aliases.into_iter().collect();
    aliases.sort();
    for (alias, targets) in &aliases {
        if targets.is_empty() {
            return Err(at.err(
                &format!("model_aliases.{alias}"),
                "needs at least one model name",
            ));
        }
    }
    Ok(aliases)
}

/// `[log]`: the level, and the access log's format (`None`: off) and file (`None`: stdout).
pub(super) fn log(
    l: file::Log,
    at: Origin<'_>,
) -> Result<(Level, Option<AccessFormat>, Option<PathBuf>), ConfigError> {
    let level = Level::parse(&l.level).ok_or_else(|| {
        at.err(
            "log.level",
            format!(
                "unknown level {:?}; expected \"error\", \"warn\", \"info\" or \"debug\"",
                l.level
            ),
        )
    })?;
    let access = match l.access.as_str() {
        "off" => None,
        "text" => Some(AccessFormat::Text),
        "json" => Some(AccessFormat::Json),
        other => {
            return Err(at.err(
                "log.access",
                format!("{other:?}; expected \"off\", \"text\" or \"json\""),
            ));
        }
    };
    Ok((level, access, l.access_path.map(Into::into)))
}

/// The rules between sections, checked once each section is valid on its own.
pub(super) fn across_sections(config: &Config) -> Result<(), ConfigError> {
    let at = Origin(&config.origin);
    if config.proxy.forward_client_auth && !config.server.api_keys.is_empty() {
        return Err(at.err(
            "proxy.forward_client_auth",
            "cannot be used with server.api_keys: clients then present ringway's own keys",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::parse_test as parse;

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
    fn the_loaded_models_interval_is_off_or_not_too_short() {
        let e = parse("[models]\nloaded_refresh_interval_ms = 10").unwrap_err();
        assert_eq!(e.key, "models.loaded_refresh_interval_ms");
        let shown = e.to_string();
        assert!(
            shown.contains("test.toml") && shown.contains("at least 100"),
            "{shown}"
        );
        let off = parse("[models]\nloaded_refresh_interval_ms = 0").unwrap();
        assert_eq!(off.models_loaded_refresh_interval, None);
        let every = std::time::Duration::from_millis(250);
        let on = parse("[models]\nloaded_refresh_interval_ms = 250").unwrap();
        assert_eq!(on.models_loaded_refresh_interval, Some(every));
    }

    #[test]
    fn client_credentials_cannot_be_forwarded_when_they_are_ringways_keys() {
        let e =
            parse("[server]\napi_keys = [\"k\"]\n[proxy]\nforward_client_auth = true").unwrap_err();
        assert_eq!(e.key, "proxy.forward_client_auth");
        let alone = parse("[proxy]\nforward_client_auth = true").unwrap();
        assert!(alone.proxy.forward_client_auth && alone.server.api_keys.is_empty());
    }
}
