//! The endpoints a generation routes to, from its configuration and the latest DNS
//! answers: an endpoint with `expand = "addresses"` becomes one backend per address of
//! its host name, named `NAME/ADDR` (the pods behind a Kubernetes headless Service); any
//! other host name keeps one backend, reached at its latest addresses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, EndpointConfig, Expand};
use crate::endpoint_set::MAX_ENDPOINTS;
use crate::upstream::Endpoint;

/// The latest addresses of each host name, as the DNS watcher last answered (a name
/// not in it keeps the addresses it resolved to at load).
pub(crate) type Answers = HashMap<String, Vec<IpAddr>>;

/// The endpoints `config` routes to, given `answers`, and a warning if there were more
/// than ringway can route to (the rest are left out).
pub(crate) fn endpoints(
    config: &Config,
    answers: &Answers,
) -> (Vec<EndpointConfig>, Option<String>) {
    let mut out = Vec::with_capacity(config.endpoints.len());
    for c in &config.endpoints {
        let addrs: Vec<SocketAddr> = match answers.get(&c.host) {
            Some(ips) if !ips.is_empty() => {
                ips.iter().map(|&ip| SocketAddr::new(ip, c.port)).collect()
            }
            _ => c.addrs.clone(),
        };
        match c.expand {
            Expand::None => out.push(EndpointConfig { addrs, ..c.clone() }),
            Expand::Addresses => out.extend(addrs.into_iter().map(|addr| EndpointConfig {
                name: format!("{}/{}", c.name, addr.ip()),
                addrs: vec![addr],
                ..c.clone()
            })),
        }
    }
    let warning = (out.len() > MAX_ENDPOINTS).then(|| {
        format!(
            "{} endpoints after expanding host names' addresses; ringway routes to at most {MAX_ENDPOINTS}, the rest are left out",
            out.len()
        )
    });
    out.truncate(MAX_ENDPOINTS);
    (out, warning)
}

/// Whether `configs` are the backends a generation routes to (`running`), at the same
/// addresses.
pub(crate) fn same(configs: &[EndpointConfig], running: &[Endpoint]) -> bool {
    configs.len() == running.len()
        && configs
            .iter()
            .zip(running)
            .all(|(c, e)| *c.name == *e.name && *c.addrs == *e.addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "[[endpoints]]\nname = \"pods\"\nurl = \"http://127.0.0.1:8000\"\ntype = \"vllm\"\n\
             [[endpoints]]\nname = \"one\"\nurl = \"http://127.0.0.1:9000\"\ntype = \"vllm\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn expanded_names_become_one_endpoint_per_address() {
        let mut config = config();
        // As if written with host names (IP literals cannot be expanded in a file).
        config.endpoints[0].host = "pods.test".into();
        config.endpoints[0].expand = Expand::Addresses;
        config.endpoints[1].host = "one.test".into();
        let (start, none) = endpoints(&config, &Answers::new());
        assert!(none.is_none());
        assert_eq!(
            start.len(),
            2,
            "before any answer: the addresses resolved at load"
        );
        assert_eq!(start[0].name, "pods/127.0.0.1");
        let ips = |list: &[&str]| {
            list.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        let answers = Answers::from([
            (
                "pods.test".to_string(),
                ips(&["127.0.0.2", "127.0.0.3", "::1"]),
            ),
            ("one.test".to_string(), ips(&["127.0.0.4", "127.0.0.5"])),
        ]);
        let (now, _) = endpoints(&config, &answers);
        let names: Vec<&str> = now.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["pods/127.0.0.2", "pods/127.0.0.3", "pods/::1", "one"]
        );
        assert_eq!(now[2].addrs, ["[::1]:8000".parse().unwrap()]);
        assert_eq!(
            now[3].addrs.len(),
            2,
            "not expanded: one endpoint at both addresses"
        );
        assert!(
            now.iter()
                .all(|e| e.authority == "127.0.0.1:8000" || e.name == "one")
        );
        let running = crate::upstream::Upstreams::new(&start, &config.sticky, 1);
        assert!(same(&start, &running.endpoints) && !same(&now, &running.endpoints));
        let many = Answers::from([(
            "pods.test".to_string(),
            (0..300u32)
                .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
                .collect(),
        )]);
        let (capped, warning) = endpoints(&config, &many);
        assert_eq!(capped.len(), MAX_ENDPOINTS);
        assert!(warning.unwrap().contains("301 endpoints"));
    }
}
