//! Inbound API keys (`server.api_keys`): which credential a request presents, and a
//! comparison whose time does not depend on where a guess goes wrong.

use crate::config::Secret;
use crate::http1::RequestHead;

/// Whether the request carries one of `keys`, as `Authorization: Bearer <key>` or
/// `X-Api-Key`/`Api-Key: <key>`. Every key is compared, whatever matches.
pub(crate) fn admits(keys: &[Secret], head: &RequestHead, buf: &[u8]) -> bool {
    let bearer = head.authorization.and_then(|v| bearer_token(v.get(buf)));
    let presented = [bearer, head.api_key.map(|v| v.get(buf))];
    let mut found = false;
    for given in presented.into_iter().flatten() {
        for key in keys {
            found |= constant_time_eq(key.expose().as_bytes(), given);
        }
    }
    found
}

/// The token of a `Bearer` credential (the scheme is case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// Equality that reads every byte of equal-length inputs whatever they hold (only the
/// length can be learned from the time taken).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{HeadLimits, parse_request};

    fn check(keys: &[&str], head: &str) -> bool {
        let keys: Vec<Secret> = keys.iter().map(|k| Secret::new(*k)).collect();
        let text = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}\r\n");
        let limits = HeadLimits {
            max_bytes: 4096,
            max_headers: 32,
        };
        let parsed = parse_request(text.as_bytes(), &limits, &mut Vec::new())
            .unwrap()
            .expect("a complete head");
        admits(&keys, &parsed, text.as_bytes())
    }

    #[test]
    fn bearer_and_api_key_headers() {
        let keys = ["sk-one", "sk-two"];
        assert!(check(&keys, "Authorization: Bearer sk-two\r\n"));
        assert!(check(&keys, "authorization: bearer   sk-one \r\n"));
        assert!(check(&keys, "X-Api-Key: sk-one\r\n"));
        assert!(check(&keys, "api-key: sk-two\r\n"));
        // A wrong bearer does not hide a right X-Api-Key.
        assert!(check(
            &keys,
            "Authorization: Bearer nope\r\nX-Api-Key: sk-one\r\n"
        ));
    }

    #[test]
    fn wrong_missing_or_partial_keys() {
        let keys = ["sk-one"];
        assert!(!check(&keys, ""));
        assert!(!check(&keys, "Authorization: Bearer sk-on\r\n"));
        assert!(!check(&keys, "Authorization: Bearer sk-one1\r\n"));
        assert!(!check(&keys, "Authorization: Basic sk-one\r\n"));
        assert!(!check(&keys, "Authorization: sk-one\r\n"));
        assert!(!check(&keys, "X-Api-Key: SK-ONE\r\n"));
        assert!(!check(&keys, "Authorization: Bearer \r\n"));
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
