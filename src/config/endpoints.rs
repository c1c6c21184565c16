//! The `[[endpoints]]` section: each backend's URL parsed and its host resolved (once,
//! here, off the request path, through the resolver `[dns]` describes), its `expand`
//! checked (`super::dns`), its name checked, its credentials (`api_key*` or an
//! `auth` block, Olla's shape) and static `headers` settled, its TLS settings for an
//! `https://` URL, its health-check and model-list settings.
//!
//! Taken apart in `url` (the URL), `auth` (the credentials), `headers` (static headers
//! and which header names an endpoint may set), `tls` (certificates, read at load) and
//! `vars` (`${VAR}` expansion, shared by
//! the last two).

pub(super) mod auth;
mod headers;
pub(super) mod tls;
mod url;
mod vars;

use super::dns::{expand, resolve_at_start};
use super::{ConfigError, EndpointConfig, Env, HealthConfig, Origin, file};
use crate::dns::Resolver;
use crate::endpoint_type::EndpointType;
use auth::{api_key, auth_block};
use headers::static_headers;
use tls::endpoint_tls;
use url::parse_url;

/// `[[endpoints]]`, in order; errors name the endpoint by index (`endpoints[1].url`).
pub(super) fn endpoints(
    raw: Vec<file::Endpoint>,
    health: &HealthConfig,
    resolver: &Resolver,
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
        let endpoint = endpoint(i, e, &endpoints, health, resolver, at, env, warnings)?;
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// `endpoints[i]`; `earlier` are the ones before it (names are unique), `health` gives
/// the check interval and timeout it does not set, `resolver` resolves its host.
#[allow(clippy::too_many_arguments)]
fn endpoint(
    i: usize,
    e: file::Endpoint,
    earlier: &[EndpointConfig],
    health: &HealthConfig,
    resolver: &Resolver,
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
    let tls = endpoint_tls(&e, &name, &url.host, url.tls, &key, at, warnings)?;
    let expand = expand(e.expand.as_deref(), &url.host, &key("expand"), at)?;
    let addrs = resolve_at_start(resolver, &url.host, url.port, &name, &key("url"), at)?;
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
    let anthropic_native = match e.anthropic.as_deref() {
        None => kind.speaks_anthropic(),
        Some("native") => true,
        Some("translate") => false,
        Some(other) => {
            return Err(at.err(
                &key("anthropic"),
                format!("{other:?} is not \"native\" or \"translate\""),
            ));
        }
    };
    Ok(EndpointConfig {
        name,
        url: e.url,
        kind,
        priority: e.priority,
        host: url.host,
        port: url.port,
        addrs,
        expand,
        authority: url.authority,
        base_path: url.base_path,
        health_path,
        models_path,
        check_interval,
        check_timeout,
        auth,
        headers,
        anthropic_native,
        tls,
    })
}

/// An endpoint named `gpu` with `extra` keys, read with `vars` as the environment: what
/// the tests of this folder's modules parse.
#[cfg(test)]
fn ep_in(extra: &str, vars: &[(&str, &str)]) -> Result<crate::config::Config, ConfigError> {
    let env = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    let text = format!("[[endpoints]]\nname = \"gpu\"\nurl = \"http://127.0.0.1:1\"\n{extra}");
    crate::config::Config::from_toml_in(&text, "test.toml", &env)
}

#[cfg(test)]
mod tests {
    use super::ep_in;
    use crate::config::parse_test as parse;

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
    fn endpoint_names_are_unique_and_header_safe() {
        let dup = "[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"";
        assert_eq!(parse(dup).unwrap_err().key, "endpoints[1].name");
        let spaced = "[[endpoints]]\nname = \"a b\"\nurl = \"http://127.0.0.1:1\"";
        assert_eq!(parse(spaced).unwrap_err().key, "endpoints[0].name");
    }
}
