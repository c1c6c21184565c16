//! An endpoint's credentials: `api_key`/`api_key_env` (ringway's own keys) or an `auth`
//! block (Olla's shape: bearer, api_key or basic), settled into the one header they set.

use super::headers::check_header_name;
use super::vars::expand;
use crate::config::{ConfigError, Env, Origin, Secret, file, keys};
use crate::http1::is_field_text;

/// `api_key` or `api_key_env` (not both) sent as `api_key_header`: `Authorization:
/// Bearer <key>` by default, the bare key in any other header.
pub(super) fn api_key(
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
pub(super) fn auth_block(
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

/// Standard base64 with padding (RFC 4648 §4), for `Authorization: Basic`.
pub(in crate::config) fn base64(bytes: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use crate::config::endpoints::ep_in;
    use crate::config::parse_test as parse;

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
}
