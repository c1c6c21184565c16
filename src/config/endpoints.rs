//! The `[[endpoints]]` section: each backend's URL parsed and its host resolved (once,
//! here, off the request path), its name checked, its credentials and health-check
//! settings settled.

use std::net::ToSocketAddrs;

use super::{ConfigError, EndpointConfig, HealthConfig, Origin, Secret, file, keys};
use crate::endpoint_type::EndpointType;

/// `[[endpoints]]`, in order; errors name the endpoint by index (`endpoints[1].url`).
pub(super) fn endpoints(
    raw: Vec<file::Endpoint>,
    health: &HealthConfig,
    at: Origin<'_>,
) -> Result<Vec<EndpointConfig>, ConfigError> {
    if raw.len() > crate::endpoint_set::MAX_ENDPOINTS {
        return Err(at.err(
            "endpoints",
            format!(
                "{} endpoints; at most {} are supported",
                raw.len(),
                crate::endpoint_set::MAX_ENDPOINTS
            ),
        ));
    }
    let mut endpoints: Vec<EndpointConfig> = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let endpoint = endpoint(i, e, &endpoints, health, at)?;
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// `endpoints[i]`; `earlier` are the ones before it (names are unique), `health` gives
/// the check interval and timeout it does not set.
fn endpoint(
    i: usize,
    e: file::Endpoint,
    earlier: &[EndpointConfig],
    health: &HealthConfig,
    at: Origin<'_>,
) -> Result<EndpointConfig, ConfigError> {
    let key = |field: &str| format!("endpoints[{i}].{field}");
    let url = parse_url(&e.url).map_err(|m| at.err(&key("url"), m))?;
    let auth = endpoint_auth(&e, &key, at)?;
    let kind = EndpointType::parse(&e.kind).ok_or_else(|| {
        at.err(
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
        return Err(at.err(
            &key("name"),
            format!(
                "{name:?} must be non-empty printable ASCII without spaces (it is sent in headers)"
            ),
        ));
    }
    if let Some(j) = earlier.iter().position(|other| other.name == name) {
        return Err(at.err(
            &key("name"),
            format!("{name:?} is already the name of endpoints[{j}]"),
        ));
    }
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| at.err(&key("url"), format!("cannot resolve {:?}: {e}", url.host)))?
        .collect::<Vec<_>>();
    if addrs.is_empty() {
        return Err(at.err(
            &key("url"),
            format!("{:?} resolves to no address", url.host),
        ));
    }
    let health_path = e
        .health_path
        .unwrap_or_else(|| kind.health_path().to_string());
    if !health_path.starts_with('/') || !health_path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(at.err(
            &key("health_path"),
            format!("{health_path:?} must be a path starting with /"),
        ));
    }
    let check_interval = match e.check_interval_ms {
        Some(v) => at.nonzero_ms(&key("check_interval_ms"), v)?,
        None => health.check_interval,
    };
    let check_timeout = match e.check_timeout_ms {
        Some(v) => at.nonzero_ms(&key("check_timeout_ms"), v)?,
        None => health.check_timeout,
    };
    Ok(EndpointConfig {
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
    })
}

/// `api_key` or `api_key_env` (not both) sent as `api_key_header`: `Authorization:
/// Bearer <key>` by default, the bare key in any other header.
fn endpoint_auth(
    e: &file::Endpoint,
    key: &dyn Fn(&str) -> String,
    at: Origin<'_>,
) -> Result<Option<(String, Secret)>, ConfigError> {
    let value = match (&e.api_key, &e.api_key_env) {
        (Some(_), Some(_)) => {
            return Err(at.err(
                &key("api_key_env"),
                "set either api_key or api_key_env, not both",
            ));
        }
        (Some(k), None) => {
            keys::check_secret(k).map_err(|m| at.err(&key("api_key"), m))?;
            k.clone()
        }
        (None, Some(var)) => {
            let k = std::env::var(var).map_err(|_| {
                at.err(
                    &key("api_key_env"),
                    format!("the environment variable {var} is not set (or not UTF-8)"),
                )
            })?;
            keys::check_secret(&k)
                .map_err(|m| at.err(&key("api_key_env"), format!("{var}: {m}")))?;
            k
        }
        (None, None) => {
            if e.api_key_header.is_some() {
                return Err(at.err(&key("api_key_header"), "needs api_key or api_key_env"));
            }
            return Ok(None);
        }
    };
    let header = e.api_key_header.as_deref().unwrap_or("Authorization");
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if header.is_empty() || !header.bytes().all(token) {
        return Err(at.err(
            &key("api_key_header"),
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

/// An endpoint URL taken apart.
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

#[cfg(test)]
mod tests {
    use crate::config::parse_test as parse;
    use crate::endpoint_type::EndpointType;

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
    fn endpoint_names_are_unique_and_header_safe() {
        let dup = "[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"";
        assert_eq!(parse(dup).unwrap_err().key, "endpoints[1].name");
        let spaced = "[[endpoints]]\nname = \"a b\"\nurl = \"http://127.0.0.1:1\"";
        assert_eq!(parse(spaced).unwrap_err().key, "endpoints[0].name");
    }
}
