//! The `OLLA_*` environment variables Olla reads over its file (`applyEnvOverrides`),
//! applied to the mirror: the end of pass 2.

use super::mirror::Olla;
use super::units::{Go, parse_byte_size, parse_duration};
use crate::config::{Cidr, Env};

/// The `OLLA_*` variables Olla reads over its file (`applyEnvOverrides`), each into its
/// key; those for keys ringway has no use for are warned about when set. A value that
/// does not parse is ignored, as Olla does, but not silently.
pub(super) fn overrides(o: &mut Olla, env: Env<'_>, warnings: &mut Vec<String>) {
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
                .all(|c| Cidr::parse(c).is_some())
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
    let t = &mut o.translators.anthropic;
    set.flag("OLLA_TRANSLATORS_ANTHROPIC_ENABLED", &mut t.enabled);
    set.flag(
        "OLLA_TRANSLATORS_ANTHROPIC_PASSTHROUGH_ENABLED",
        &mut t.passthrough_enabled,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::olla::{FIXTURE, parse_test_with as parse_with};
    use crate::routing::Balancer;

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
                crate::config::endpoints::auth::base64(b"admin:from-env")
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
}
