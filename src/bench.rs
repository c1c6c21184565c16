//! Entry points for the criterion benchmarks in `benches/` (feature `bench`; not an API):
//! each calls the request path's own functions, on real `Endpoint`s and a real catalogue
//! built from configuration.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use crate::clock;
use crate::config::EndpointConfig;
use crate::endpoint_set::EndpointSet;
use crate::endpoint_type::EndpointType;
use crate::http1::{self, HeadLimits, Header, RequestHead};
use crate::proxy::{Placement, UpstreamTarget, Want, resolve_model, select_backend, upstream_head};
use crate::routing::sticky::{self, KeyInputs};
use crate::routing::{Balancer, KeySource, Route, Scope};
use crate::upstream::Upstreams;
use crate::upstream::models::{Catalog, Model};

/// `n` endpoints, as the `attempt` phase sees them.
pub struct Fleet {
    upstreams: Upstreams,
    /// A catalogue where two models are listed by every endpoint.
    catalog: Catalog,
    cursor: Cell<usize>,
    /// No endpoint is cold (every one holds every model).
    cold: EndpointSet,
    /// The attempt's clock reading (`clock::mono_ms`), read once: the request path reads
    /// it once per attempt, not per decision.
    now: u64,
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
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    addrs: vec![addr],
                    expand: crate::config::Expand::None,
                    authority: addr.to_string(),
                    base_path: String::new(),
                    health_path: "/".into(),
                    models_path: "/api/tags".into(),
                    check_interval: Duration::from_secs(5),
                    check_timeout: Duration::from_secs(2),
                    auth: None,
                    headers: Vec::new(),
                    anthropic_native: true,
                    tls: None,
                }
            })
            .collect();
        let model = |name: &str| Model::new(name.into(), serde_json::Value::Null);
        let lists = (0..n)
            .map(|_| Some(vec![model("llama3.1:8b"), model("qwen2.5:7b")]))
            .collect();
        Fleet {
            upstreams: Upstreams::new(
                &configs,
                &crate::config::Config::embedded_default().sticky,
                1,
            ),
            catalog: Catalog::new(lists, vec![0; n]),
            cursor: Cell::new(0),
            cold: EndpointSet::default(),
            now: clock::now_ms(),
        }
    }

    /// What the attempt phase wants for a request without a model.
    fn want(&self) -> Want {
        Want {
            scope: Scope::OpenAi,
            serving: None,
            now: self.now,
        }
    }

    fn placement(&self, balancer: Balancer) -> Placement<'_> {
        Placement {
            balancer,
            cursor: &self.cursor,
            max_load_factor: 0.0,
            group: None,
            group_load_factor: 0.0,
            cold: &self.cold,
        }
    }

    /// One balancer decision over the fleet: `select_backend` without a session key.
    pub fn pick(&self, balancer: Balancer) -> Option<usize> {
        let (want, none) = (self.want(), EndpointSet::default());
        let endpoints = &self.upstreams.endpoints;
        select_backend(endpoints, &want, &none, None, &self.placement(balancer))
            .map(|(e, _)| e.index)
    }

    /// Key derivation from a request body, then `select_backend` with the key: the
    /// sticky path.
    pub fn place(&self, body: &[u8]) -> Option<usize> {
        let facts = crate::api::inspect(body, 1024, 0);
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
        let (want, none) = (self.want(), EndpointSet::default());
        let placement = self.placement(Balancer::RoundRobin);
        let endpoints = &self.upstreams.endpoints;
        select_backend(endpoints, &want, &none, Some(key), &placement).map(|(e, _)| e.index)
    }

    /// Key derivation (conversation and shared prefix) from a request body, then
    /// `select_backend` in its prefix group (size 2, bounded load 1.25, groups formed from
    /// 256 bytes of shared prefix): the prefix-group path. Returns the endpoint and the
    /// group's size.
    pub fn place_in_group(&self, body: &[u8]) -> Option<(usize, usize)> {
        let config = crate::routing::PrefixGroupsConfig {
            enabled: true,
            size: 2,
            max_load_factor: 1.25,
            min_prefix_bytes: 256,
            user_prefix_bytes: 0,
        };
        let facts = crate::api::inspect(body, 1024, config.user_prefix_bytes);
        let inputs = KeyInputs {
            session_id: None,
            facts: &facts,
            authorization: None,
            client_ip: "127.0.0.1",
        };
        let key = sticky::derive_key(&[KeySource::SessionHeader, KeySource::PrefixHash], &inputs)?;
        let group = crate::routing::groups::Group::of(&config, facts.shared)?;
        let (want, none) = (self.want(), EndpointSet::default());
        let placement = Placement {
            group: Some(group),
            group_load_factor: config.max_load_factor,
            ..self.placement(Balancer::RoundRobin)
        };
        let endpoints = &self.upstreams.endpoints;
        let (ep, size) = select_backend(endpoints, &want, &none, Some(key), &placement)?;
        Some((ep.index, size?))
    }

    /// Classifies the request's route, finds its model and the endpoints serving it, as
    /// the `route` phase does (`routing::classify`, `api::inspect`, `resolve_model`).
    /// Returns how many endpoints serve the model.
    /// Records in the seen-key memory (default size: 10,000 keys, 600 s) that the
    /// request with session key `key` is served by its home, endpoint `chosen`; its
    /// outcome label ("hit", "miss", "repin").
    pub fn observe(&self, key: u64, chosen: usize) -> &'static str {
        let seen = self
            .upstreams
            .seen
            .observe(key, chosen, Some(chosen), self.now);
        seen.outcome.name()
    }

    pub fn route(&self, target: &[u8], body: &[u8]) -> Option<usize> {
        let Route::Forward { scope, .. } = crate::routing::classify(target) else {
            return None;
        };
        let model = crate::api::inspect(body, 1024, 0).model?;
        let endpoints = &self.upstreams.endpoints;
        let routing = crate::routing::RoutingConfig {
            strategy: crate::routing::Strategy::Strict,
            fallback: crate::routing::Fallback::CompatibleOnly,
        };
        let (serving, _) =
            resolve_model(&self.catalog, &[], endpoints, scope, model, routing).ok()?;
        Some(serving.len())
    }

    /// Writes the endpoint's request head from a parsed client head, with the request
    /// path's `upstream_head`; returns its length.
    pub fn rewrite_head(&self, buf: &[u8], head: &RequestHeadBuf, out: &mut Vec<u8>) -> usize {
        out.clear();
        let to = UpstreamTarget {
            ep: &self.upstreams.endpoints[0],
            scope: Scope::OpenAi,
            strip: 0,
            forward_auth: false,
            translated_path: None,
        };
        let parsed = head.head.as_ref().expect("a parsed head");
        upstream_head(out, buf, parsed, &head.headers, "10.1.2.3", &to, 250);
        out.len()
    }
}

/// Parses a request head as the `request` phase does; returns its length.
pub fn parse_request_head(buf: &[u8], head: &mut RequestHeadBuf) -> usize {
    let limits = HeadLimits {
        max_bytes: 64 * 1024,
        max_headers: 100,
    };
    head.head = http1::parse_request(buf, &limits, &mut head.headers)
        .ok()
        .flatten();
    head.head.map_or(0, |h| h.len)
}

/// A parsed head and its reusable header list, as each client connection keeps one.
#[derive(Default)]
pub struct RequestHeadBuf {
    head: Option<RequestHead>,
    headers: Vec<Header>,
}

/// A request shaped like Claude Code's (system blocks, thinking, a tool round trip, tool
/// definitions) of about `size` bytes, for the Anthropic translator.
pub fn claude_code_request(size: usize) -> Vec<u8> {
    crate::api::anthropic::samples::claude_code_request(size).into_bytes()
}

/// Translates an Anthropic Messages body into an OpenAI chat body, as the Anthropic
/// route will before forwarding; returns the body's length.
pub fn anthropic_request(body: &[u8], out: &mut Vec<u8>) -> usize {
    use crate::api::anthropic::request::{Options, to_openai};
    out.clear();
    let opts = Options::for_endpoint(EndpointType::Vllm);
    to_openai(body, &opts, out).expect("a valid request");
    out.len()
}

/// Estimates a Messages body's input tokens (`count_tokens`).
pub fn anthropic_count_tokens(body: &[u8], out: &mut Vec<u8>) -> u64 {
    out.clear();
    crate::api::anthropic::count::count_tokens(body, out).expect("a valid request")
}

/// An OpenAI stream as vLLM writes it, one SSE event per element: `n` text chunks, or
/// one tool call whose arguments come in `n` pieces.
pub fn openai_stream_events(n: usize, tool: bool) -> Vec<Vec<u8>> {
    use crate::api::anthropic::samples;
    let stream = if tool {
        samples::tool_stream(n)
    } else {
        samples::text_stream(n)
    };
    stream
        .split_inclusive("\n\n")
        .map(|e| e.as_bytes().to_vec())
        .collect()
}

/// Translates a whole stream fed event by event, as the relay will: `out` is emptied
/// after each event (sent). Returns the bytes written.
pub fn anthropic_stream(events: &[Vec<u8>], out: &mut Vec<u8>) -> usize {
    let mut t = crate::api::anthropic::stream::StreamTranslator::new("claude-x", 1000);
    let mut sent = 0;
    for event in events {
        t.feed(event, out);
        sent += out.len();
        out.clear();
    }
    t.finish(out);
    sent + out.len()
}
