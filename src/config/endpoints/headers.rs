//! An endpoint's static `headers`, and which header names ringway lets an endpoint set
//! (these and the credentials' own).

use super::vars::expand;
use crate::config::{ConfigError, Env, Origin, Secret, file};
use crate::http1::{HeaderKind, is_field_text};

/// `headers`: sent on every request to the endpoint, health checks and model-list reads
/// included, in place of any client copy. Values expand `${VAR}` as `auth` values do. A
/// header the endpoint's credentials set is left to them (as in Olla), with a warning.
pub(super) fn static_headers(
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
pub(super) fn check_header_name(header: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use crate::config::endpoints::ep_in;

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
}
