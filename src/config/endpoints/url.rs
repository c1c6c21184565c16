//! An endpoint's URL taken apart: `http://` or `https://host[:port][/path]`, credentials
//! in it refused without being echoed.

/// An endpoint URL taken apart.
pub(super) struct Url {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) authority: String,
    pub(super) base_path: String,
    /// `https://`: TLS, port 443 by default.
    pub(super) tls: bool,
}

/// Accepts `http[s]://host[:port][/path]`; anything else is refused with the reason.
/// Credentials in the URL are refused without being echoed (the errors show
/// placeholders), pointing to the `auth` block instead.
pub(super) fn parse_url(s: &str) -> Result<Url, String> {
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
    let tls = match scheme {
        "http" => false,
        "https" => true,
        _ => return Err(format!("{s:?} is not an http:// or https:// URL")),
    };
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
        None if tls => 443,
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
        tls,
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
}
