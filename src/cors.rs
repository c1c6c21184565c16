//! CORS (`[cors]`), off by default; when on, decided for every request in the request
//! path's `admission` step (`proxy/admission.rs`). A browser's preflight (`OPTIONS` with
//! `Access-Control-Request-Method`, to any path) is answered by ringway itself, 204,
//! before any limit or key is checked (a preflight carries no credentials), and never
//! reaches an endpoint. Every other answer to a request from an allowed origin, proxied
//! or ringway's own, carries `Access-Control-Allow-Origin` and `-Expose-Headers`.
//!
//! The decisions are those of rs/cors, the library Olla uses: a disallowed origin,
//! method or requested header gets its answer without CORS headers (the browser then
//! refuses it), not an error; origins compare without regard to case, and an allowed
//! origin may hold one `*` (`https://*.example.com`); `Vary: Origin` goes on every
//! answer.

use crate::config::CorsConfig;

/// The response headers a page may read when `cors.exposed_headers` is empty: every
/// `X-Olla-*` and `X-Ringway-*` header ringway writes (`proxy/heads.rs`, `upstream.rs`,
/// `routing/decision.rs`), the rate-limit headers and `Retry-After`.
const DEFAULT_EXPOSED: &[&str] = &[
    "X-Olla-Request-ID",
    "X-Olla-Endpoint",
    "X-Olla-Backend-Type",
    "X-Olla-Model",
    "X-Olla-Response-Time",
    "X-Olla-Routing-Strategy",
    "X-Olla-Routing-Decision",
    "X-Olla-Routing-Reason",
    "X-Olla-Sticky-Session",
    "X-Olla-Sticky-Key-Source",
    "X-Olla-Session-ID",
    "X-Olla-Mode",
    "X-Ringway-Placement",
    "X-Ringway-Prefix-Group",
    "X-Ringway-Attempts",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
];

/// What rs/cors allows when a list is left empty.
const DEFAULT_METHODS: &[&str] = &["GET", "POST", "HEAD"];
const DEFAULT_HEADERS: &[&str] = &["Accept", "Content-Type", "X-Requested-With"];

/// `[cors]`, ready for the request path.
#[derive(Debug)]
pub(crate) struct Cors {
    any_origin: bool,
    /// Lowercase.
    origins: Vec<Vec<u8>>,
    /// What comes before and after the `*` of an origin pattern, lowercase.
    patterns: Vec<(Vec<u8>, Vec<u8>)>,
    /// As configured (uppercase is what browsers send).
    methods: Vec<Vec<u8>>,
    any_header: bool,
    /// Lowercase; `origin` always among them.
    headers: Vec<Vec<u8>>,
    /// `Access-Control-Allow-Origin: *`, rather than the request's origin.
    star: bool,
    /// What follows the origin in an answer to an allowed request: the exposed headers,
    /// and credentials if allowed. Whole lines.
    actual_lines: Box<[u8]>,
    /// What follows the allowed method and headers in a preflight's answer: credentials
    /// and max age. Whole lines.
    preflight_lines: Box<[u8]>,
}

impl Cors {
    /// The policy `config` describes; `None` when CORS is off.
    pub(crate) fn new(config: &CorsConfig) -> Option<Cors> {
        if !config.enabled {
            return None;
        }
        let lower = |s: &String| s.to_ascii_lowercase().into_bytes();
        let any_origin = config.allowed_origins.iter().any(|o| o == "*");
        let (patterns, origins): (Vec<_>, Vec<_>) = config
            .allowed_origins
            .iter()
            .filter(|o| *o != "*")
            .partition(|o| o.contains('*'));
        let patterns = patterns
            .iter()
            .map(|p| {
                let (before, after) = p.split_once('*').expect("a pattern holds a *");
                (
                    before.to_ascii_lowercase().into_bytes(),
                    after.to_ascii_lowercase().into_bytes(),
                )
            })
            .collect();
        let or_default = |list: &[String], default: &[&str]| -> Vec<String> {
            if list.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                list.to_vec()
            }
        };
        let methods = or_default(&config.allowed_methods, DEFAULT_METHODS);
        let headers = or_default(&config.allowed_headers, DEFAULT_HEADERS);
        let exposed = or_default(&config.exposed_headers, DEFAULT_EXPOSED);
        let mut actual_lines = Vec::new();
        crate::http1::push_header(
            &mut actual_lines,
            b"Access-Control-Expose-Headers",
            exposed.join(", ").as_bytes(),
        );
        let mut preflight_lines = Vec::new();
        if config.allow_credentials {
            let line = b"Access-Control-Allow-Credentials: true\r\n";
            actual_lines.extend_from_slice(line);
            preflight_lines.extend_from_slice(line);
        }
        if !config.max_age.is_zero() {
            crate::http1::push_header_decimal(
                &mut preflight_lines,
                b"Access-Control-Max-Age",
                config.max_age.as_secs(),
            );
        }
        Some(Cors {
            any_origin,
            origins: origins.into_iter().map(lower).collect(),
            patterns,
            methods: methods.into_iter().map(String::into_bytes).collect(),
            any_header: headers.iter().any(|h| h == "*"),
            headers: headers
                .iter()
                .map(lower)
                .chain([b"origin".to_vec()])
                .collect(),
            star: any_origin && !config.allow_credentials,
            actual_lines: actual_lines.into(),
            preflight_lines: preflight_lines.into(),
        })
    }

    /// Appends the CORS lines for the answers to a request that is not a preflight:
    /// `method`, from `origin` (its `Origin` header) if it has one.
    pub(crate) fn actual(&self, origin: Option<&[u8]>, method: &[u8], out: &mut Vec<u8>) {
        if method == b"OPTIONS" {
            // An OPTIONS that is not a preflight is no cross-origin read (rs/cors).
            return;
        }
        out.extend_from_slice(b"Vary: Origin\r\n");
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            return;
        };
        if self.allowed_method(method).is_none() {
            return;
        }
        self.allow_origin(origin, out);
        out.extend_from_slice(&self.actual_lines);
    }

    /// Appends the lines of the answer to a preflight from `origin` asking for
    /// `method` (its `Access-Control-Request-Method`) and `headers` (its
    /// `Access-Control-Request-Headers`).
    pub(crate) fn preflight(
        &self,
        origin: Option<&[u8]>,
        method: &[u8],
        headers: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(
            b"Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n",
        );
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            return;
        };
        let Some(method) = self.allowed_method(method) else {
            return;
        };
        let asked = headers.unwrap_or_default().trim_ascii();
        if !self.allows_headers(asked) {
            return;
        }
        self.allow_origin(origin, out);
        crate::http1::push_header(out, b"Access-Control-Allow-Methods", method);
        if !asked.is_empty() {
            crate::http1::push_header(out, b"Access-Control-Allow-Headers", asked);
        }
        out.extend_from_slice(&self.preflight_lines);
    }

    fn allow_origin(&self, origin: &[u8], out: &mut Vec<u8>) {
        if self.star {
            out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n");
        } else {
            crate::http1::push_header(out, b"Access-Control-Allow-Origin", origin);
        }
    }

    fn allows_origin(&self, origin: &[u8]) -> bool {
        self.any_origin
            || self.origins.iter().any(|o| origin.eq_ignore_ascii_case(o))
            || self.patterns.iter().any(|(before, after)| {
                origin.len() >= before.len() + after.len()
                    && origin[..before.len()].eq_ignore_ascii_case(before)
                    && origin[origin.len() - after.len()..].eq_ignore_ascii_case(after)
            })
    }

    /// The method as allowed (OPTIONS always is), or `None`.
    fn allowed_method<'a>(&'a self, method: &[u8]) -> Option<&'a [u8]> {
        if method.eq_ignore_ascii_case(b"OPTIONS") {
            return Some(b"OPTIONS");
        }
        let found = self.methods.iter().find(|m| method.eq_ignore_ascii_case(m));
        found.map(Vec::as_slice)
    }

    /// Whether every header of a comma-separated list may be sent.
    fn allows_headers(&self, list: &[u8]) -> bool {
        self.any_header
            || list
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|h| !h.is_empty())
                .all(|h| self.headers.iter().any(|a| h.eq_ignore_ascii_case(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Cors {
        let text = format!("[cors]\nenabled = true\n{extra}");
        let config = crate::config::parse_test(&text).unwrap();
        Cors::new(&config.cors).expect("enabled")
    }

    fn actual(cors: &Cors, origin: Option<&str>, method: &str) -> String {
        let mut out = Vec::new();
        cors.actual(origin.map(str::as_bytes), method.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn preflight(cors: &Cors, origin: &str, method: &str, headers: Option<&str>) -> String {
        let mut out = Vec::new();
        let headers = headers.map(str::as_bytes);
        cors.preflight(
            Some(origin.as_bytes()),
            method.as_bytes(),
            headers,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn off_means_no_policy() {
        let config = crate::config::parse_test("").unwrap();
        assert!(Cors::new(&config.cors).is_none());
    }

    #[test]
    fn the_defaults_allow_any_origin_with_a_star() {
        let cors = policy("");
        let lines = actual(&cors, Some("https://chat.example"), "POST");
        assert!(lines.starts_with("Vary: Origin\r\nAccess-Control-Allow-Origin: *\r\n"));
        assert!(lines.contains("Access-Control-Expose-Headers: X-Olla-Request-ID, "));
        assert!(!lines.contains("Credentials"));
        // Without an Origin (curl, an SDK): only Vary.
        assert_eq!(actual(&cors, None, "POST"), "Vary: Origin\r\n");
        // A method not allowed: no CORS headers.
        assert_eq!(
            actual(&cors, Some("https://chat.example"), "DELETE"),
            "Vary: Origin\r\n"
        );
        assert_eq!(actual(&cors, Some("https://chat.example"), "OPTIONS"), "");
        let pre = preflight(
            &cors,
            "https://chat.example",
            "POST",
            Some("content-type, x-olla-session-id"),
        );
        assert_eq!(
            pre,
            "Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n\
             Access-Control-Allow-Origin: *\r\n\
             Access-Control-Allow-Methods: POST\r\n\
             Access-Control-Allow-Headers: content-type, x-olla-session-id\r\n\
             Access-Control-Max-Age: 300\r\n"
        );
    }

    #[test]
    fn listed_origins_are_echoed_and_others_get_no_cors_headers() {
        let cors = policy(
            "allowed_origins = [\"https://app.example.com\", \"https://*.corp.example\"]\n\
             allow_credentials = true\nmax_age_seconds = 0",
        );
        let lines = actual(&cors, Some("https://APP.example.com"), "GET");
        assert!(lines.contains("Access-Control-Allow-Origin: https://APP.example.com\r\n"));
        assert!(lines.ends_with("Access-Control-Allow-Credentials: true\r\n"));
        let lines = actual(&cors, Some("https://team.corp.example"), "GET");
        assert!(lines.contains("Access-Control-Allow-Origin: https://team.corp.example\r\n"));
        for other in [
            "https://evil.example",
            "https://app.example.com.evil",
            "null",
            "https://corp.example",
        ] {
            assert_eq!(
                actual(&cors, Some(other), "GET"),
                "Vary: Origin\r\n",
                "{other}"
            );
            let pre = preflight(&cors, other, "POST", None);
            assert!(!pre.contains("Allow"), "{other}: {pre}");
        }
        let pre = preflight(&cors, "https://app.example.com", "post", None);
        assert!(
            pre.contains("Access-Control-Allow-Methods: POST\r\n"),
            "{pre}"
        );
        assert!(!pre.contains("Allow-Headers"));
        assert!(
            pre.ends_with("Access-Control-Allow-Credentials: true\r\n"),
            "no Max-Age"
        );
    }

    #[test]
    fn preflights_check_the_method_and_listed_headers() {
        let cors = policy("allowed_headers = [\"Content-Type\", \"Authorization\"]");
        let pre = |method, headers| preflight(&cors, "https://a.example", method, headers);
        assert!(
            pre("POST", Some("Content-Type,authorization"))
                .contains("Allow-Headers: Content-Type,authorization")
        );
        // Origin is always allowed; empty items are nothing.
        assert!(pre("POST", Some("origin, , content-type")).contains("Allow-Origin"));
        assert!(!pre("POST", Some("content-type, x-secret")).contains("Allow"));
        assert!(!pre("PUT", None).contains("Allow"));
        assert!(pre("OPTIONS", None).contains("Allow-Methods: OPTIONS"));
        let exposed = policy("exposed_headers = [\"X-Custom\"]");
        assert!(
            actual(&exposed, Some("https://a.example"), "GET")
                .contains("Access-Control-Expose-Headers: X-Custom\r\n")
        );
    }

    /// Every X-Olla-* and X-Ringway-* header ringway writes is one a page may read by
    /// default.
    #[test]
    fn every_olla_header_is_exposed_by_default() {
        // The writers of response heads, the endpoints' own lines, the routing decision.
        let heads = [
            include_str!("proxy/heads.rs"),
            include_str!("upstream.rs"),
            include_str!("routing/decision.rs"),
        ]
        .concat();
        let mut written: Vec<&str> = ["X-Olla-", "X-Ringway-"]
            .iter()
            .flat_map(|prefix| heads.match_indices(prefix))
            .filter_map(|(i, prefix)| {
                let rest = &heads[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .unwrap_or(rest.len());
                // `X-Olla-Routing-*` in a comment names a family, not a header.
                let name = &rest[..end];
                (name.len() > prefix.len() && !name.ends_with('-')).then_some(name)
            })
            .collect();
        written.sort_unstable();
        written.dedup();
        assert!(written.len() >= 10, "{written:?}");
        for name in written {
            assert!(DEFAULT_EXPOSED.contains(&name), "{name} is not exposed");
        }
    }
}
