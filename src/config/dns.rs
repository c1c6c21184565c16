//! The `[dns]` section (how endpoint host names are resolved: the servers, the timeout,
//! the refresh interval, the address families), an endpoint's `expand` key, and the
//! resolution of each endpoint's host at load, bounded in time, through the resolver
//! `[dns]` describes (`crate::dns`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{ConfigError, Expand, Origin, file};
use crate::dns::{DnsConfig, Family, MIN_REFRESH, Resolver};

/// Longest `dns.timeout_ms`: start-up waits up to twice this for each server, per host.
const MAX_TIMEOUT_MS: u64 = 30_000;

/// `[dns]`.
pub(super) fn dns(d: file::Dns, at: Origin<'_>) -> Result<DnsConfig, ConfigError> {
    let refresh_interval = match d.refresh_interval_ms {
        0 => None,
        ms if Duration::from_millis(ms) < MIN_REFRESH => {
            return Err(at.err(
                "dns.refresh_interval_ms",
                format!(
                    "must be 0 (resolve once, at start) or at least {}",
                    MIN_REFRESH.as_millis()
                ),
            ));
        }
        ms => Some(Duration::from_millis(ms)),
    };
    let timeout = at.nonzero_ms("dns.timeout_ms", d.timeout_ms)?;
    if d.timeout_ms > MAX_TIMEOUT_MS {
        return Err(at.err(
            "dns.timeout_ms",
            format!("must be at most {MAX_TIMEOUT_MS}"),
        ));
    }
    let mut servers = Vec::with_capacity(d.servers.len());
    for (i, s) in d.servers.iter().enumerate() {
        let server = parse_server(s).map_err(|m| at.err(&format!("dns.servers[{i}]"), m))?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    let family = Family::parse(&d.family).ok_or_else(|| {
        at.err(
            "dns.family",
            format!("{:?}; expected \"ipv4\", \"ipv6\" or \"both\"", d.family),
        )
    })?;
    Ok(DnsConfig {
        refresh_interval,
        servers,
        timeout,
        family,
    })
}

/// A DNS server: `ip`, `ip:port`, `[ipv6]:port` (port 53 when none is given).
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => {
                return Err(format!(
                    "{s:?} is not an IP address with an optional port (for example \"10.96.0.10\", \"127.0.0.1:5353\" or \"[fd00::10]:53\"); a server is given by address, not by name"
                ));
            }
        },
    };
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0"));
    }
    Ok(addr)
}

/// An endpoint's `expand` (`key` is its dotted name); `host` is its URL's.
pub(super) fn expand(
    given: Option<&str>,
    host: &str,
    key: &str,
    at: Origin<'_>,
) -> Result<Expand, ConfigError> {
    match given {
        None | Some("none") => Ok(Expand::None),
        Some("addresses") if host.parse::<IpAddr>().is_ok() => Err(at.err(
            key,
            format!(
                "\"addresses\" expands a host name into its addresses; {host} is already an address (write the name, or leave expand out)"
            ),
        )),
        Some("addresses") => Ok(Expand::Addresses),
        Some(other) => Err(at.err(
            key,
            format!("{other:?}; expected \"none\" or \"addresses\""),
        )),
    }
}

/// The addresses of endpoint `name`'s `host` at load, on `port`; an error names the
/// endpoint and its `key` (`endpoints[i].url`). An IP address is taken as is; a name waits
/// at most [`Resolver::budget`].
pub(super) fn resolve_at_start(
    resolver: &Resolver,
    host: &str,
    port: u16,
    name: &str,
    key: &str,
    at: Origin<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let answer = resolver.resolve(host).map_err(|e| {
        let through = if resolver.uses_servers() {
            "dns.servers"
        } else {
            "the system resolver"
        };
        at.err(
            key,
            format!("endpoint {name:?}: cannot resolve {host:?} through {through}: {e}"),
        )
    })?;
    Ok(answer.on_port(port))
}

#[cfg(test)]
mod tests {
    use crate::config::Expand;
    use crate::config::parse_test as parse;
    use crate::dns::Family;
    use std::time::Duration;

    #[test]
    fn the_dns_section() {
        let c = parse(
            "[dns]\nrefresh_interval_ms = 5000\nservers = [\"127.0.0.1:5353\", \"10.96.0.10\", \"[fd00::10]:53\", \"fd00::11\"]\ntimeout_ms = 500\nfamily = \"ipv4\"",
        )
        .unwrap();
        assert_eq!(c.dns.refresh_interval, Some(Duration::from_secs(5)));
        let servers: Vec<String> = c.dns.servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            servers,
            [
                "127.0.0.1:5353",
                "10.96.0.10:53",
                "[fd00::10]:53",
                "[fd00::11]:53"
            ]
        );
        assert_eq!(c.dns.timeout, Duration::from_millis(500));
        assert_eq!(c.dns.family, Family::Ipv4);
        let once = parse("[dns]\nrefresh_interval_ms = 0").unwrap();
        assert_eq!(once.dns.refresh_interval, None);
        for (text, key) in [
            ("refresh_interval_ms = 10", "dns.refresh_interval_ms"),
            ("timeout_ms = 0", "dns.timeout_ms"),
            ("timeout_ms = 60000", "dns.timeout_ms"),
            (
                "servers = [\"127.0.0.1\", \"dns.google\"]",
                "dns.servers[1]",
            ),
            ("servers = [\"127.0.0.1:0\"]", "dns.servers[0]"),
            ("family = \"ipv5\"", "dns.family"),
            ("server = [\"127.0.0.1\"]", ""),
        ] {
            let e = parse(&format!("[dns]\n{text}")).unwrap_err();
            assert_eq!(
                (e.origin.as_str(), e.key.as_str()),
                ("test.toml", key),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn expand_is_for_host_names() {
        let c = parse(
            "[[endpoints]]\nurl = \"http://localhost:8000\"\nexpand = \"addresses\"\n\
             [[endpoints]]\nurl = \"http://127.0.0.1:8001\"\nexpand = \"none\"\n\
             [[endpoints]]\nurl = \"http://127.0.0.1:8002\"",
        )
        .unwrap();
        let expand: Vec<Expand> = c.endpoints.iter().map(|e| e.expand).collect();
        assert_eq!(expand, [Expand::Addresses, Expand::None, Expand::None]);
        assert_eq!(
            (c.endpoints[0].host.as_str(), c.endpoints[0].port),
            ("localhost", 8000)
        );
        assert_eq!(c.host_names(), ["localhost"]);
        for (url, expand) in [
            ("http://127.0.0.1:1", "addresses"),
            ("http://[::1]:1", "addresses"),
            ("http://localhost:1", "all"),
        ] {
            let e = parse(&format!(
                "[[endpoints]]\nurl = \"{url}\"\nexpand = \"{expand}\""
            ))
            .unwrap_err();
            assert_eq!(e.key, "endpoints[0].expand", "{url} {expand}");
            assert!(e.to_string().contains("test.toml"), "{e}");
        }
    }

    #[test]
    fn start_up_resolution_is_bounded_and_names_the_endpoint() {
        // A server that never answers (nothing listens on this port of 127.0.0.1; an
        // ICMP refusal ends the wait sooner, which is fine too).
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "[dns]\nservers = [\"{}\"]\ntimeout_ms = 200\n[[endpoints]]\nname = \"fleet\"\nurl = \"http://backends.test:8000\"",
            silent.local_addr().unwrap()
        );
        let started = std::time::Instant::now();
        let e = parse(&text).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.key, "endpoints[0].url");
        assert!(
            e.message.contains("\"fleet\"")
                && e.message.contains("dns.servers")
                && e.message.contains("no answer in time"),
            "{}",
            e.message
        );
    }
}
