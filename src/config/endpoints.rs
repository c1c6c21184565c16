//! The `[[endpoints]]` section: each backend's URL parsed and its host resolved (once,
//! here, off the request path), its name checked, its credentials (`api_key*` or an
//! `auth` block, Olla's shape) and static `headers` settled, its health-check and
//! model-list settings.

use std::net::ToSocketAddrs;

use super::{ConfigError, EndpointConfig, Env, HealthConfig, Origin, Secret, file, keys};
use crate::endpoint_type::EndpointType;
use crate::http1::{HeaderKind, is_field_text};

/// `[[endpoints]]`, in order; errors name the endpoint by index (`endpoints[1].url`).
pub(super) fn endpoints(
    raw: Vec<file::Endpoint>,
    health: &HealthConfig,
    at: Origin<'_>,
    env: Env<'_>,
    warnings: &mut Vec<String>,
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
        let endpoint = endpoint(i, e, &endpoints, health, at, env, warnings)?;
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
    env: Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<EndpointConfig, ConfigError> {
    let key = |field: &str| format!("endpoints[{i}].{field}");
    let url = parse_url(&e.url).map_err(|m| at.err(&key("url"), m))?;
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
    let name = e.name.clone().unwrap_or_else(|| url.authority.clone());
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
    let auth = match &e.auth {
        Some(block) => {
            if e.api_key.is_some() || e.api_key_env.is_some() || e.api_key_header.is_some() {
                return Err(at.err(
                    &key("auth"),
                    format!(
                        "endpoint {name:?}: set either auth or api_key/api_key_env/api_key_header, not both"
                    ),
                ));
            }
            Some(auth_block(block, &name, &key, at, env)?)
        }
        None => api_key(&e, &key, at, env)?,
    };
    let headers = static_headers(&e, auth.as_ref(), &name, &key, at, env, warnings)?;
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
    let path = |field: &str, given: Option<String>, default: &str| {
        let path = given.unwrap_or_else(|| default.to_string());
        if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(path)
        } else {
            Err(at.err(
                &key(field),
                format!("{path:?} must be a path starting with /"),
            ))
        }
    };
    let health_path = path("health_path", e.health_path, kind.health_path())?;
    let models_path = path("models_path", e.models_path, kind.models_path())?;
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
        models_path,
        check_interval,
        check_timeout,
        auth,
        headers,
    })
}

/// `api_key` or `api_key_env` (not both) sent as `api_key_header`: `Authorization:
/// Bearer <key>` by default, the bare key in any other header.
fn api_key(
    e: &file::Endpoint,
    key: &dyn Fn(&str) -> String,
    at: Origin<'_>,
    env: Env<'_>,
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
            let k = env(var).ok_or_else(|| {
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
    check_header_name(header).map_err(|m| at.err(&key("api_key_header"), m))?;
    let value = if header.eq_ignore_ascii_case("authorization") {
        format!("Bearer {value}")
    } else {
        value
    };
    Ok(Some((header.to_string(), Secret::new(value))))
}

/// An `auth` block, as Olla reads it: `bearer` (`token`), `api_key` (`key`, in `header`,
/// `X-Api-Key` by default, as is) or `basic` (`username` and `password`). Each value is
/// given inline, where `${VAR}` and `${VAR:-default}` are expanded, or in the file its
/// `_file` sibling names (read and trimmed); not both. Errors name the endpoint as Olla's
/// do: `endpoint "gpu": bearer token: must not be empty`.
fn auth_block(
    a: &file::Auth,
    name: &str,
    key: &dyn Fn(&str) -> String,
    at: Origin<'_>,
    env: Env<'_>,
) -> Result<(String, Secret), ConfigError> {
    let field = |f: &str| key(&format!("auth.{f}"));
    let fail = |f: &str, m: String| at.err(&field(f), format!("endpoint {name:?}: {m}"));
    // Olla reads the block into Go strings: an empty value is one not given.
    let given = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).is_some();
    let kind = a.kind.as_str();
    if !matches!(kind, "bearer" | "api_key" | "basic") {
        return Err(fail(
            "type",
            format!("auth type {kind:?} is not valid (must be bearer, api_key or basic)"),
        ));
    }
    // Fields of another type are refused rather than ignored: they show a mix-up.
    let token = given(&a.token) || given(&a.token_file);
    let api_key = given(&a.key) || given(&a.key_file);
    let user_password = [&a.username, &a.username_file, &a.password, &a.password_file]
        .into_iter()
        .any(given);
    for (field, fields, set, allowed) in [
        ("token", "token/token_file", token, "bearer"),
        ("key", "key/key_file", api_key, "api_key"),
        ("header", "header", given(&a.header), "api_key"),
        ("username", "username/password", user_password, "basic"),
    ] {
        if set && kind != allowed {
            return Err(fail(field, format!("{kind} auth does not accept {fields}")));
        }
    }
    // One credential value: inline (expanded) or from its file.
    let value = |f: &str, what: &str, inline: &Option<String>, file: &Option<String>| {
        let file_key = format!("{f}_file");
        let value = match (given(inline), given(file)) {
            (true, true) => {
                return Err(fail(
                    &file_key,
                    format!("{kind} auth has both {f} and {f}_file set; use exactly one"),
                ));
            }
            (false, false) => {
                return Err(fail(f, format!("{kind} auth requires {f} or {f}_file")));
            }
            (true, false) => expand(inline.as_deref().unwrap_or_default(), env)
                .map_err(|m| fail(f, format!("{what}: {m}")))?,
            (false, true) => {
                let path = file.as_deref().unwrap_or_default();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    fail(
                        &file_key,
                        format!("{what}: reading secret file {path:?}: {e}"),
                    )
                })?;
                text.trim().to_string()
            }
        };
        if value.is_empty() {
            return Err(fail(f, format!("{what}: must not be empty")));
        }
        Ok(value)
    };
    match kind {
        "bearer" => {
            let token = value("token", "bearer token", &a.token, &a.token_file)?;
            keys::check_secret(&token).map_err(|m| fail("token", format!("bearer token: {m}")))?;
            Ok((
                "Authorization".into(),
                Secret::new(format!("Bearer {token}")),
            ))
        }
        "api_key" => {
            let k = value("key", "api_key", &a.key, &a.key_file)?;
            if !is_field_text(k.as_bytes()) || k.trim() != k {
                return Err(fail(
                    "key",
                    "api_key: must be printable, without control characters or surrounding spaces"
                        .into(),
                ));
            }
            let header = a
                .header
                .as_deref()
                .filter(|h| !h.is_empty())
                .unwrap_or("X-Api-Key");
            check_header_name(header).map_err(|m| fail("header", m))?;
            Ok((header.to_string(), Secret::new(k)))
        }
        _ => {
            let user = value("username", "basic username", &a.username, &a.username_file)?;
            let password = value("password", "basic password", &a.password, &a.password_file)?;
            if user.contains(':') || !is_field_text(user.as_bytes()) {
                return Err(fail(
                    "username",
                    "basic username: must not contain ':' or control characters".into(),
                ));
            }
            if !is_field_text(password.as_bytes()) {
                return Err(fail(
                    "password",
                    "basic password: must not contain control characters".into(),
                ));
            }
            let encoded = base64(format!("{user}:{password}").as_bytes());
            Ok((
                "Authorization".into(),
                Secret::new(format!("Basic {encoded}")),
            ))
        }
    }
}

/// `headers`: sent on every request to the endpoint, health checks and model-list reads
/// included, in place of any client copy. Values expand `${VAR}` as `auth` values do. A
/// header the endpoint's credentials set is left to them (as in Olla), with a warning.
fn static_headers(
    e: &file::Endpoint,
    auth: Option<&(String, Secret)>,
    name: &str,
    key: &dyn Fn(&str) -> String,
    at: Origin<'_>,
    env: Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut headers: Vec<(String, Secret)> = Vec::with_capacity(e.headers.len());
    for (header, value) in &e.headers {
        let field = key(&format!("headers.{header}"));
        check_header_name(header).map_err(|m| at.err(&field, format!("endpoint {name:?}: {m}")))?;
        if headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(header)) {
            return Err(at.err(
                &field,
                format!("endpoint {name:?}: {header:?} is set twice"),
            ));
        }
        let value = expand(value, env)
            .map_err(|m| at.err(&field, format!("endpoint {name:?}: header {header:?}: {m}")))?;
        if !is_field_text(value.as_bytes()) {
            return Err(at.err(
                &field,
                format!("endpoint {name:?}: header {header:?}: the value must not contain control characters (CR, LF...)"),
            ));
        }
        if auth.is_some_and(|(a, _)| a.eq_ignore_ascii_case(header)) {
            warnings.push(format!(
                "endpoint {name:?}: its credentials set {header}, and win: headers.{header} is not sent"
            ));
            continue;
        }
        headers.push((header.clone(), Secret::new(value)));
    }
    Ok(headers)
}

/// A header name ringway may set for an endpoint: a token (RFC 9110 §5.6.2) and none
/// that ringway writes itself or that belongs to one hop.
fn check_header_name(header: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if header.is_empty() || !header.bytes().all(token) {
        return Err(format!("{header:?} is not a header name"));
    }
    match crate::http1::classify(header.as_bytes()) {
        HeaderKind::Other | HeaderKind::Authorization | HeaderKind::ApiKey => Ok(()),
        HeaderKind::HopByHop | HeaderKind::Connection | HeaderKind::TransferEncoding => Err(
            format!("{header} is a hop-by-hop header; it cannot be set for an endpoint"),
        ),
        HeaderKind::RequestId | HeaderKind::SessionId => Err(format!(
            "{header} carries each request's own value; it cannot be set for an endpoint"
        )),
        _ => Err(format!(
            "{header} is written by ringway itself (framing, forwarding); it cannot be set for an endpoint"
        )),
    }
}

/// `${VAR}` and `${VAR:-default}` in `text`, as Olla expands credentials: a variable
/// that is set and not empty gives its value, otherwise the default; one unset without a
/// default is an error (set but empty gives ""). `$VAR` and an unclosed `${` stay as is.
pub(super) fn expand(text: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        if len == 0 {
            // `${}` names nothing: kept as written.
            out.push_str(&rest[..start + 3]);
            rest = &rest[start + 3..];
            continue;
        }
        out.push_str(&rest[..start]);
        let expr = &rest[start + 2..start + 2 + len];
        let (var, default) = match expr.split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (expr, None),
        };
        match (env(var), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(default)) => out.push_str(default),
            (None, None) => missing.push(format!("{var:?}")),
            (Some(_), None) => {}
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    match missing.len() {
        0 => Ok(out),
        1 => Err(format!(
            "required environment variable {} is not set",
            missing[0]
        )),
        _ => Err(format!(
            "required environment variables {} are not set",
            missing.join(", ")
        )),
    }
}

/// Standard base64 with padding (RFC 4648 §4), for `Authorization: Basic`.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An endpoint URL taken apart.
struct Url {
    host: String,
    port: u16,
    authority: String,
    base_path: String,
}

/// Accepts `http://host[:port][/path]`; anything else is refused with the reason.
/// Credentials in the URL are refused without being echoed (the errors show
/// placeholders), pointing to the `auth` block instead.
fn parse_url(s: &str) -> Result<Url, String> {
    let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if let Some((userinfo, host)) = authority.rsplit_once('@') {
        let placeholder = if userinfo.contains(':') {
            "<username>:<password>"
        } else {
            "<username>"
        };
        return Err(format!(
            "\"{scheme}://{placeholder}@{host}{path}\": credentials in the URL are not supported; write \"{scheme}://{host}{path}\" and put them in the endpoint's auth block (type basic with username and password, or username_file and password_file; a token alone is type bearer)"
        ));
    }
    match scheme {
        "http" => {}
        "https" => {
            return Err(format!(
                "{s:?}: https endpoints are not supported yet; use http:// (inference servers on a private network) or put a TLS client proxy in front"
            ));
        }
        _ => return Err(format!("{s:?} is not an http:// URL")),
    }
    if path.contains(['?', '#']) {
        return Err(format!(
            "{s:?}: a query or fragment is not allowed in an endpoint URL"
        ));
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
    use crate::config::ConfigError;
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

    /// An endpoint with `extra` keys, read with `vars` as the environment.
    fn ep_in(extra: &str, vars: &[(&str, &str)]) -> Result<crate::config::Config, ConfigError> {
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let text = format!("[[endpoints]]\nname = \"gpu\"\nurl = \"http://127.0.0.1:1\"\n{extra}");
        crate::config::Config::from_toml_in(&text, "test.toml", &env)
    }

    fn auth_of(extra: &str, vars: &[(&str, &str)]) -> (String, String) {
        let c = ep_in(extra, vars).unwrap();
        let (name, value) = c.endpoints[0].auth.clone().unwrap();
        (name, value.expose().to_string())
    }

    #[test]
    fn auth_blocks_in_ollas_shape() {
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            auth_of("auth = { type = \"bearer\", token = \"sk-1\" }", &[]),
            pair("Authorization", "Bearer sk-1")
        );
        assert_eq!(
            auth_of("auth = { type = \"api_key\", key = \"k 1\" }", &[]),
            pair("X-Api-Key", "k 1")
        );
        assert_eq!(
            auth_of(
                "auth = { type = \"api_key\", key = \"k\", header = \"x-goog-api-key\" }",
                &[]
            ),
            pair("x-goog-api-key", "k")
        );
        assert_eq!(
            auth_of(
                "auth = { type = \"basic\", username = \"admin\", password = \"s3cr3t\" }",
                &[]
            ),
            pair("Authorization", "Basic YWRtaW46czNjcjN0")
        );
        // `${VAR}` and `${VAR:-default}`, as Olla expands them.
        let vars = [("VLLM_KEY", "from-env"), ("EMPTY", "")];
        assert_eq!(
            auth_of(
                "auth = { type = \"bearer\", token = \"${VLLM_KEY}\" }",
                &vars
            )
            .1,
            "Bearer from-env"
        );
        assert_eq!(
            auth_of(
                "auth = { type = \"bearer\", token = \"${UNSET:-fallback}\" }",
                &vars
            )
            .1,
            "Bearer fallback"
        );
        // `_file`: read and trimmed.
        let path = std::env::temp_dir().join(format!("ringway-token-{}", std::process::id()));
        std::fs::write(&path, "  sk-from-file \n").unwrap();
        let file = format!(
            "auth = {{ type = \"bearer\", token_file = {:?} }}",
            path.display().to_string()
        );
        assert_eq!(auth_of(&file, &[]).1, "Bearer sk-from-file");
        std::fs::remove_file(&path).unwrap();
        let e = ep_in(&file, &[]).unwrap_err();
        assert_eq!(e.key, "endpoints[0].auth.token_file");
        assert!(e.message.contains("reading secret file"), "{}", e.message);
        // Credentials never show in debug output.
        let c = ep_in(
            "auth = { type = \"basic\", username = \"u\", password = \"hunter2\" }",
            &[],
        )
        .unwrap();
        assert!(!format!("{:?}", c.endpoints).contains("dTpodW50ZXIy"));
    }

    #[test]
    fn auth_errors_name_the_endpoint_as_olla_does() {
        let vars = [("EMPTY", "")];
        for (extra, key, message) in [
            (
                "auth = { type = \"bearer\", token = \"${EMPTY}\" }",
                "auth.token",
                "endpoint \"gpu\": bearer token: must not be empty",
            ),
            (
                "auth = { type = \"bearer\", token = \"${NOPE}\" }",
                "auth.token",
                "endpoint \"gpu\": bearer token: required environment variable \"NOPE\" is not set",
            ),
            (
                "auth = { type = \"bearer\", token = \"a\", token_file = \"/f\" }",
                "auth.token_file",
                "endpoint \"gpu\": bearer auth has both token and token_file set; use exactly one",
            ),
            (
                "auth = { type = \"basic\", username = \"u\" }",
                "auth.password",
                "endpoint \"gpu\": basic auth requires password or password_file",
            ),
            (
                "auth = { type = \"oauth\" }",
                "auth.type",
                "endpoint \"gpu\": auth type \"oauth\" is not valid (must be bearer, api_key or basic)",
            ),
            (
                "auth = { type = \"bearer\", token = \"t\", key = \"k\" }",
                "auth.key",
                "endpoint \"gpu\": bearer auth does not accept key/key_file",
            ),
            (
                "auth = { type = \"bearer\", token = \"t\", header = \"X-K\" }",
                "auth.header",
                "endpoint \"gpu\": bearer auth does not accept header",
            ),
            (
                "auth = { type = \"basic\", username = \"a:b\", password = \"p\" }",
                "auth.username",
                "endpoint \"gpu\": basic username: must not contain ':'",
            ),
            (
                "auth = { type = \"api_key\", key = \"k\", header = \"Host\" }",
                "auth.header",
                "endpoint \"gpu\": Host is written by ringway itself",
            ),
            (
                "api_key = \"k\"\nauth = { type = \"bearer\", token = \"t\" }",
                "auth",
                "endpoint \"gpu\": set either auth or api_key",
            ),
        ] {
            let e = ep_in(extra, &vars).unwrap_err();
            assert_eq!(e.key, format!("endpoints[0].{key}"), "{extra}");
            assert!(e.message.starts_with(message), "{extra}: {}", e.message);
        }
        let e = ep_in("auth = { type = \"bearer\", tokn = \"t\" }", &[]).unwrap_err();
        assert!(e.message.contains("tokn"), "{}", e.message);
    }

    #[test]
    fn static_headers_are_checked_and_leave_the_credentials_to_auth() {
        let c = ep_in(
            "headers = { \"X-Tenant\" = \"a\", \"X-Region\" = \"${REGION:-eu}\", \"Authorization\" = \"mine\" }\nauth = { type = \"bearer\", token = \"t\" }",
            &[],
        )
        .unwrap();
        let headers: Vec<(&str, &str)> = c.endpoints[0]
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("X-Region", "eu"), ("X-Tenant", "a")]);
        assert!(
            c.warnings[0].contains("Authorization") && c.warnings[0].contains("gpu"),
            "{:?}",
            c.warnings
        );
        for (headers, why) in [
            ("{ \"Connection\" = \"close\" }", "hop-by-hop"),
            ("{ \"Transfer-Encoding\" = \"chunked\" }", "hop-by-hop"),
            ("{ \"Host\" = \"elsewhere\" }", "written by ringway"),
            ("{ \"Content-Length\" = \"1\" }", "written by ringway"),
            (
                "{ \"X-Forwarded-For\" = \"1.2.3.4\" }",
                "written by ringway",
            ),
            ("{ \"X-Request-ID\" = \"1\" }", "each request's own value"),
            ("{ \"X Bad\" = \"1\" }", "not a header name"),
            ("{ \"X-Ok\" = \"a\\r\\nX-Evil: 1\" }", "control characters"),
            ("{ \"X-A\" = \"1\", \"x-a\" = \"2\" }", "set twice"),
            ("{ \"X-A\" = \"${NOPE}\" }", "NOPE"),
        ] {
            let e = ep_in(&format!("headers = {headers}"), &[]).unwrap_err();
            assert!(
                e.key.starts_with("endpoints[0].headers."),
                "{headers}: {}",
                e.key
            );
            assert!(e.message.contains(why), "{headers}: {}", e.message);
        }
    }

    #[test]
    fn model_list_paths() {
        let c = ep_in("type = \"lm-studio\"", &[]).unwrap();
        assert_eq!(c.endpoints[0].models_path, "/api/v0/models");
        let c = ep_in("type = \"lm-studio\"\nmodels_path = \"/v1/models\"", &[]).unwrap();
        assert_eq!(c.endpoints[0].models_path, "/v1/models");
        let e = ep_in("models_path = \"v1/models\"", &[]).unwrap_err();
        assert_eq!(e.key, "endpoints[0].models_path");
    }

    #[test]
    fn credentials_in_a_url_are_never_echoed() {
        for (url, shown) in [
            (
                "http://admin:hunter2@127.0.0.1:1/v1",
                "http://<username>:<password>@127.0.0.1:1/v1",
            ),
            (
                "http://sk-token@127.0.0.1:1",
                "http://<username>@127.0.0.1:1",
            ),
            (
                "https://admin:hunter2@127.0.0.1:1",
                "https://<username>:<password>@127.0.0.1:1",
            ),
        ] {
            let e = parse(&format!("[[endpoints]]\nurl = \"{url}\"")).unwrap_err();
            assert_eq!(e.key, "endpoints[0].url");
            assert!(
                !e.message.contains("hunter2") && !e.message.contains("sk-token"),
                "{}",
                e.message
            );
            assert!(
                e.message.contains(shown) && e.message.contains("auth block"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn variables_expand_as_in_olla() {
        let vars = |name: &str| match name {
            "A" => Some("1".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let ok = |s: &str| super::expand(s, &vars).unwrap();
        assert_eq!(ok("x-${A}-${A}"), "x-1-1");
        assert_eq!(ok("${B:-two}"), "two");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("$A ${}${A} ${A"), "$A ${}1 ${A");
        assert_eq!(ok("${B:-}"), "");
        let e = super::expand("${B}${C}", &vars).unwrap_err();
        assert!(e.contains("\"B\", \"C\""), "{e}");
    }

    #[test]
    fn base64_as_in_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
        assert_eq!(super::base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn endpoint_names_are_unique_and_header_safe() {
        let dup = "[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"";
        assert_eq!(parse(dup).unwrap_err().key, "endpoints[1].name");
        let spaced = "[[endpoints]]\nname = \"a b\"\nurl = \"http://127.0.0.1:1\"";
        assert_eq!(parse(spaced).unwrap_err().key, "endpoints[0].name");
    }
}
