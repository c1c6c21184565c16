//! Entry points for the criterion benchmarks in `benches/` (not a stable API): each runs
//! the same code as the request path, on real `Endpoint`s built from configuration.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::EndpointConfig;
use crate::http1::{self, HeadLimits, RequestHead};
use crate::proxy::Want;
use crate::routing::sticky::{self, KeyInputs};
use crate::routing::{Balancer, KeySource, Scope};
use crate::upstream::{EndpointType, Upstreams, health};

/// `n` endpoints, as `select_backend` sees them.
pub struct Fleet {
    upstreams: Upstreams,
    /// The request's clock reading (`proxy_request` takes it once per request).
    now: u64,
    /// A catalogue where two models are listed by every endpoint.
    catalog: crate::upstream::models::Catalog,
}

impl Fleet {
    pub fn new(n: usize) -> Fleet {
        let configs: Vec<EndpointConfig> = (0..n)
            .map(|i| {
                let addr: SocketAddr = ([127, 0, 0, 1], 20_000 + i as u16).into();
                EndpointConfig {
                    name: format!("gpu-{i}"),
                    url: format!("http://{addr}"),
                    kind: EndpointType::Ollama,
                    priority: 100,
                    addrs: vec![addr],
                    authority: addr.to_string(),
                    base_path: String::new(),
                    health_path: "/".into(),
                    check_interval: Duration::from_secs(5),
                    check_timeout: Duration::from_secs(2),
                    auth: None,
                }
            })
            .collect();
        let model = |name: &str| crate::upstream::models::Model {
            name: name.into(),
            raw: serde_json::Value::Null,
        };
        let lists = (0..n)
            .map(|_| Some(vec![model("llama3.1:8b"), model("qwen2.5:7b")]))
            .collect();
        Fleet {
            upstreams: Upstreams::new(&configs),
            now: health::now_ms(),
            catalog: crate::upstream::models::Catalog::new(lists, vec![0; n]),
        }
    }

    fn want(&self) -> Want {
        Want {
            scope: Scope::OpenAi,
            serving: None,
            now: self.now,
        }
    }

    /// One balancer decision over the fleet, with `select_backend`'s eligibility test.
    pub fn pick(&self, balancer: Balancer, start: usize) -> Option<usize> {
        let endpoints = &self.upstreams.endpoints;
        let want = self.want();
        balancer.pick(endpoints, |i| want.admits(&endpoints[i], &[]), start)
    }

    /// Key derivation from a request body, then rendezvous placement: the sticky path.
    pub fn place(&self, body: &[u8]) -> Option<usize> {
        let facts = crate::api::inspect(body, 1024);
        let inputs = KeyInputs {
            session_id: None,
            facts: &facts,
            authorization: None,
            client_ip: "127.0.0.1",
        };
        let sources = [
            KeySource::SessionHeader,
            KeySource::PrefixHash,
            KeySource::AuthHeader,
        ];
        let key = sticky::derive_key(&sources, &inputs)?;
        let endpoints = &self.upstreams.endpoints;
        let want = self.want();
        sticky::rendezvous(
            key.hash,
            endpoints,
            |i| want.admits(&endpoints[i], &[]),
            0.0,
        )
    }
}

/// Parses a request head as `parse_request` does; returns its length.
pub fn parse_request_head(buf: &[u8], head: &mut RequestHeadBuf) -> usize {
    let limits = HeadLimits {
        max_bytes: 64 * 1024,
        max_headers: 100,
    };
    match http1::parse_request(buf, &limits, &mut head.0) {
        Ok(true) => head.0.len,
        _ => 0,
    }
}

/// A reusable parsed head, as each client connection keeps one.
#[derive(Default)]
pub struct RequestHeadBuf(RequestHead);

impl Fleet {
    /// Classifies the request's route, finds its model and the endpoints serving it,
    /// as `route` and `resolve_model` do.
    pub fn route(&self, target: &[u8], body: &[u8]) -> Option<usize> {
        let crate::routing::Route::Forward { scope, .. } = crate::routing::classify(target) else {
            return None;
        };
        let facts = crate::api::inspect(body, 1024);
        let model = facts.model?;
        let serving = self.catalog.serving(model);
        self.upstreams
            .endpoints
            .iter()
            .position(|ep| scope.admits(ep.kind) && serving.contains(ep.index))
    }

    /// Writes the endpoint's request head from a parsed client head, as
    /// `write_upstream_head` does; returns its length.
    pub fn rewrite_head(&self, buf: &[u8], head: &RequestHeadBuf, out: &mut Vec<u8>) -> usize {
        out.clear();
        let to = crate::proxy::UpstreamTarget {
            ep: &self.upstreams.endpoints[0],
            scope: Scope::OpenAi,
            strip: 0,
            forward_auth: false,
        };
        crate::proxy::upstream_head(out, buf, &head.0, "10.1.2.3", &to, 250);
        out.len()
    }
}
