//! Credentials in the configuration: ringway's own inbound API keys, gathered from
//! `server.api_keys`, `api_keys_file` and `api_keys_env`, and the rule every credential
//! (inbound or an endpoint's) must follow.

use super::{ConfigError, Origin, Secret, file};

/// The inbound API keys from `server.api_keys`, the file named by `api_keys_file` (one
/// key per line; blank lines and `#` comments skipped) and the environment variable named
/// by `api_keys_env` (comma-separated). Empty: no key is needed.
pub(super) fn inbound(s: &file::Server, at: Origin<'_>) -> Result<Vec<Secret>, ConfigError> {
    let mut keys = Vec::new();
    for (i, k) in s.api_keys.iter().enumerate() {
        check_secret(k).map_err(|m| at.err("server.api_keys", format!("key #{}: {m}", i + 1)))?;
        keys.push(Secret::new(k.as_str()));
    }
    if let Some(path) = &s.api_keys_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| at.err("server.api_keys_file", format!("cannot read {path:?}: {e}")))?;
        let before = keys.len();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            check_secret(line).map_err(|m| {
                at.err(
                    "server.api_keys_file",
                    format!("{path:?} line {}: {m}", n + 1),
                )
            })?;
            keys.push(Secret::new(line));
        }
        if keys.len() == before {
            return Err(at.err("server.api_keys_file", format!("{path:?} holds no key")));
        }
    }
    if let Some(var) = &s.api_keys_env {
        let value = std::env::var(var).map_err(|_| {
            at.err(
                "server.api_keys_env",
                format!("the environment variable {var} is not set (or not UTF-8)"),
            )
        })?;
        let before = keys.len();
        for k in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            check_secret(k)
                .map_err(|m| at.err("server.api_keys_env", format!("a key in {var} {m}")))?;
            keys.push(Secret::new(k));
        }
        if keys.len() == before {
            return Err(at.err("server.api_keys_env", format!("{var} holds no key")));
        }
    }
    Ok(keys)
}

/// A credential must fit in a header value as is.
pub(super) fn check_secret(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Secret;
    use crate::config::parse_test as parse;

    #[test]
    fn api_keys_from_the_file_the_environment_and_the_list_add_up() {
        let path = std::env::temp_dir().join(format!("ringway-keys-{}", std::process::id()));
        std::fs::write(&path, "# operators\nsk-file-1\n\n  sk-file-2  \n").unwrap();
        let text = format!(
            "[server]\napi_keys = [\"sk-list\"]\napi_keys_file = {:?}",
            path.display().to_string()
        );
        let c = parse(&text).unwrap();
        let keys: Vec<&str> = c.server.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["sk-list", "sk-file-1", "sk-file-2"]);
        // Keys never show in debug output (logs, --check-config).
        let shown = format!("{:?}", c.server);
        assert!(!shown.contains("sk-"), "{shown}");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert_eq!(parse(&text).unwrap_err().key, "server.api_keys_file");
        std::fs::remove_file(&path).unwrap();
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "server.api_keys_file");
        assert!(e.message.contains("cannot read"), "{}", e.message);
        let e = parse("[server]\napi_keys_env = \"RINGWAY_TEST_SURELY_UNSET_VAR\"").unwrap_err();
        assert_eq!(e.key, "server.api_keys_env");
        assert!(
            e.message.contains("RINGWAY_TEST_SURELY_UNSET_VAR"),
            "{}",
            e.message
        );
        let e = parse("[server]\napi_keys = [\"has space\"]").unwrap_err();
        assert_eq!(e.key, "server.api_keys");
    }
}
