//! `${VAR}` expansion in credential and header values, as Olla does it.

use crate::config::Env;

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

#[cfg(test)]
mod tests {
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
}
