//! Pass 1 over Olla's file: its keys ([`SCHEMA`]), what ringway makes of each, and the
//! `survey` of the YAML tree against them, which names every key ringway ignores and
//! every key Olla does not know.

use serde_norway::Value;

use super::units::parse_duration;

/// What ringway makes of one of Olla's keys.
pub(super) enum Key {
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
pub(super) static SCHEMA: Key = Table(&[
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
        Table(&[(
            "anthropic",
            Table(&[
                ("enabled", Used),
                ("passthrough_enabled", Used),
                (
                    "max_message_size",
                    Ignored(
                        "server.max_body_bytes (Olla's request_limits.max_body_size) bounds every body",
                    ),
                ),
            ]),
        )]),
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

/// What the survey found: ignored keys (with why) and keys nobody knows, in file order.
#[derive(Default)]
pub(super) struct Survey {
    ignored: Vec<(String, &'static str)>,
    unknown: Vec<String>,
}

pub(super) fn survey(value: &Value, key: &Key, path: &str, found: &mut Survey) {
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
    pub(super) fn into_warnings(self) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use crate::config::olla::{FIXTURE, parse_test as parse};

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
            "translators",
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
}
