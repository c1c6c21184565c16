//! Validation of the client-facing limits: `[rate_limits]` (token buckets, and which
//! peers may name the client in `X-Forwarded-For`) and `[cors]`.

use std::net::IpAddr;
use std::time::Duration;

use super::{ConfigError, Origin, file};

/// `[rate_limits]`: requests per minute, each with a bucket of `burst` tokens; 0 = no
/// limit of that kind.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub global_per_minute: u32,
    pub per_ip_per_minute: u32,
    pub per_endpoint_per_minute: u32,
    /// `/internal/health`, per client IP.
    pub health_per_minute: u32,
    pub burst: u32,
    /// How often idle per-client buckets are swept.
    pub cleanup_interval: Duration,
    /// Take the client's address from `X-Forwarded-For`/`X-Real-IP` when the peer is in
    /// `trusted_proxies`.
    pub trust_proxy_headers: bool,
    pub trusted_proxies: Vec<Cidr>,
}

impl RateLimitConfig {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.global_per_minute > 0
            || self.per_ip_per_minute > 0
            || self.per_endpoint_per_minute > 0
            || self.health_per_minute > 0
    }
}

/// An address block, `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `[cors]`.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub enabled: bool,
    /// `*` allows any origin.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    /// `*` allows what the preflight asks for.
    pub allowed_headers: Vec<String>,
    /// Empty: ringway's `X-Olla-*` response headers.
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

pub(super) fn rate_limits(
    r: file::RateLimits,
    at: Origin<'_>,
) -> Result<RateLimitConfig, ConfigError> {
    let mut trusted_proxies = Vec::with_capacity(r.trusted_proxy_cidrs.len());
    for (i, s) in r.trusted_proxy_cidrs.iter().enumerate() {
        let cidr = Cidr::parse(s).ok_or_else(|| {
            at.err(
                &format!("rate_limits.trusted_proxy_cidrs[{i}]"),
                format!("{s:?} is not an address block such as \"10.0.0.0/8\""),
            )
        })?;
        trusted_proxies.push(cidr);
    }
    let limits = RateLimitConfig {
        global_per_minute: r.global_requests_per_minute,
        per_ip_per_minute: r.per_ip_requests_per_minute,
        per_endpoint_per_minute: r.per_endpoint_requests_per_minute,
        health_per_minute: r.health_requests_per_minute,
        burst: r.burst_size,
        cleanup_interval: at
            .nonzero_ms("rate_limits.cleanup_interval_ms", r.cleanup_interval_ms)?,
        trust_proxy_headers: r.trust_proxy_headers,
        trusted_proxies,
    };
    if limits.any() && limits.burst == 0 {
        return Err(at.err(
            "rate_limits.burst_size",
            "must be at least 1 when a limit is set",
        ));
    }
    Ok(limits)
}

pub(super) fn cors(c: file::Cors, at: Origin<'_>) -> Result<CorsConfig, ConfigError> {
    let field = |key: &str, list: &[String]| -> Result<(), ConfigError> {
        match list
            .iter()
            .position(|v| !crate::http1::is_field_text(v.as_bytes()) || v.is_empty())
        {
            Some(i) => Err(at.err(
                &format!("cors.{key}[{i}]"),
                "must be non-empty printable text",
            )),
            None => Ok(()),
        }
    };
    field("allowed_origins", &c.allowed_origins)?;
    field("allowed_methods", &c.allowed_methods)?;
    field("allowed_headers", &c.allowed_headers)?;
    field("exposed_headers", &c.exposed_headers)?;
    if c.enabled && c.allowed_origins.is_empty() {
        return Err(at.err(
            "cors.allowed_origins",
            "must not be empty when cors is enabled: list the origins, or [\"*\"] for any",
        ));
    }
    if let Some(i) = c
        .allowed_origins
        .iter()
        .position(|o| o != "*" && o.matches('*').count() > 1)
    {
        return Err(at.err(
            &format!("cors.allowed_origins[{i}]"),
            "may hold one * at most (as in \"https://*.example.com\")",
        ));
    }
    if c.enabled && c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
        return Err(at.err(
            "cors.allow_credentials",
            "cannot be true with allowed_origins = [\"*\"]: list the origins (browsers refuse credentials with a wildcard)",
        ));
    }
    Ok(CorsConfig {
        enabled: c.enabled,
        allowed_origins: c.allowed_origins,
        allowed_methods: c.allowed_methods,
        allowed_headers: c.allowed_headers,
        exposed_headers: c.exposed_headers,
        allow_credentials: c.allow_credentials,
        max_age: Duration::from_secs(c.max_age_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_test as parse;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("192.168.1.7")
                .unwrap()
                .contains("192.168.1.7".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "::/129", "x"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn limit_errors_name_their_key() {
        let e =
            parse("[rate_limits]\ntrusted_proxy_cidrs = [\"10.0.0.0/8\", \"nope\"]").unwrap_err();
        assert_eq!(e.key, "rate_limits.trusted_proxy_cidrs[1]");
        let e = parse("[rate_limits]\nper_ip_requests_per_minute = 5\nburst_size = 0").unwrap_err();
        assert_eq!(e.key, "rate_limits.burst_size");
        let e = parse("[cors]\nenabled = true\nallow_credentials = true").unwrap_err();
        assert_eq!(e.key, "cors.allow_credentials");
        let e = parse("[cors]\nenabled = true\nallowed_origins = []").unwrap_err();
        assert_eq!(e.key, "cors.allowed_origins");
        let e = parse("[cors]\nallowed_origins = [\"https://a\", \"https://*.*.b\"]").unwrap_err();
        assert_eq!(e.key, "cors.allowed_origins[1]");
        assert!(!parse("").unwrap().rate_limits.any());
        assert!(!parse("").unwrap().cors.enabled);
    }
}
