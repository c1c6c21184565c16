//! Backends, the far side of the request path (`select_backend` and `forward`): the kinds
//! of inference server and what each serves where, the endpoints built from the config
//! with the atomics every shard shares, connecting, and (in `pool`) the per-shard
//! keep-alive connection pools.

pub(crate) mod health;
pub(crate) mod models;
pub(crate) mod pool;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use health::Health;

use monoio::net::TcpStream;

use crate::config::{EndpointConfig, Secret};
use crate::routing::balancer::Candidate;

/// The kinds of inference server ringway knows, with Olla's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointType {
    Ollama,
    LmStudio,
    LlamaCpp,
    Vllm,
    Sglang,
    Lemonade,
    Litellm,
    OpenAiCompatible,
}

impl EndpointType {
    pub(crate) const ALL: [EndpointType; 8] = [
        EndpointType::Ollama,
        EndpointType::LmStudio,
        EndpointType::LlamaCpp,
        EndpointType::Vllm,
        EndpointType::Sglang,
        EndpointType::Lemonade,
        EndpointType::Litellm,
        EndpointType::OpenAiCompatible,
    ];

    /// The canonical name, as in `X-Olla-Backend-Type` and the config file.
    pub fn name(self) -> &'static str {
        self.prefixes()[0]
    }

    /// Path segments under `/olla/` that address this type; the first is the canonical
    /// name. The config's `type` accepts any of them.
    pub(crate) fn prefixes(self) -> &'static [&'static str] {
        match self {
            EndpointType::Ollama => &["ollama"],
            EndpointType::LmStudio => &["lm-studio", "lmstudio", "lm_studio"],
            EndpointType::LlamaCpp => &["llamacpp", "llama-cpp", "llama.cpp"],
            EndpointType::Vllm => &["vllm"],
            EndpointType::Sglang => &["sglang"],
            EndpointType::Lemonade => &["lemonade"],
            EndpointType::Litellm => &["litellm"],
            EndpointType::OpenAiCompatible => &["openai-compatible", "openai"],
        }
    }

    pub(crate) fn parse(s: &str) -> Option<EndpointType> {
        Self::from_prefix(s.as_bytes())
    }

    pub(crate) fn from_prefix(segment: &[u8]) -> Option<EndpointType> {
        Self::ALL
            .into_iter()
            .find(|t| t.prefixes().iter().any(|p| p.as_bytes() == segment))
    }

    /// The valid names, for error messages.
    pub(crate) fn names() -> String {
        Self::ALL.map(EndpointType::name).join(", ")
    }

    /// Path of its health check.
    pub fn health_path(self) -> &'static str {
        match self {
            EndpointType::Ollama => "/",
            EndpointType::LmStudio | EndpointType::OpenAiCompatible => "/v1/models",
            EndpointType::Lemonade => "/api/v1/health",
            EndpointType::LlamaCpp
            | EndpointType::Vllm
            | EndpointType::Sglang
            | EndpointType::Litellm => "/health",
        }
    }

    /// Path of its model list.
    pub fn models_path(self) -> &'static str {
        match self {
            EndpointType::Ollama => "/api/tags",
            EndpointType::LmStudio => "/api/v0/models",
            EndpointType::Lemonade => "/api/v1/models",
            _ => "/v1/models",
        }
    }

    /// What goes before `/v1/...` to reach its OpenAI-compatible API (lemonade serves it
    /// under `/api/v1`).
    pub(crate) fn openai_prefix(self) -> &'static [u8] {
        match self {
            EndpointType::Lemonade => b"/api",
            _ => b"",
        }
    }

    /// Whether it serves Ollama's native API (`/api/chat`, `/api/generate`, ...).
    pub(crate) fn speaks_ollama(self) -> bool {
        self == EndpointType::Ollama
    }
}

impl fmt::Display for EndpointType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One backend: its configuration, ready for the request path, and the counters every
/// shard reads and writes.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Position in [`Upstreams::endpoints`]; keys the per-shard pools.
    pub(crate) index: usize,
    pub(crate) name: Box<str>,
    pub(crate) kind: EndpointType,
    pub(crate) priority: u32,
    /// Identity for rendezvous placement (hash of the name).
    pub(crate) sticky_id: u64,
    pub(crate) addrs: Box<[SocketAddr]>,
    /// The `Host` header value for this endpoint.
    pub(crate) authority: Box<[u8]>,
    pub(crate) base_path: Box<[u8]>,
    pub(crate) url: Box<str>,
    pub(crate) health_path: Box<str>,
    pub(crate) check_interval: Duration,
    pub(crate) check_timeout: Duration,
    /// `Name: value\r\n` carrying ringway's credentials for the endpoint, if any.
    pub(crate) auth_line: Option<Secret>,
    shared: Shared,
}

/// What all shards share about an endpoint, on a cache line of its own: shards updating
/// one endpoint's counters do not slow down reads of another's.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Shared {
    /// Requests dispatched to the endpoint and not finished, on all shards.
    in_flight: AtomicU32,
    health: Health,
}

/// Counts a request as in flight on an endpoint until dropped.
pub(crate) struct InFlight<'a>(&'a Endpoint);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    pub(crate) fn begin_request(&self) -> InFlight<'_> {
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub(crate) fn health(&self) -> &Health {
        &self.shared.health
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }
}

impl Candidate for Endpoint {
    fn in_flight(&self) -> u32 {
        Endpoint::in_flight(self)
    }

    fn priority(&self) -> u32 {
        self.priority
    }

    fn id(&self) -> u64 {
        self.sticky_id
    }
}

/// All endpoints, shared read-only by the shards.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pub(crate) endpoints: Box<[Endpoint]>,
}

impl Upstreams {
    pub(crate) fn new(configs: &[EndpointConfig]) -> Upstreams {
        let endpoints = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Endpoint {
                index,
                name: c.name.as_str().into(),
                kind: c.kind,
                priority: c.priority,
                sticky_id: crate::routing::sticky::endpoint_id(&c.name),
                addrs: c.addrs.as_slice().into(),
                authority: c.authority.as_bytes().into(),
                base_path: c.base_path.as_bytes().into(),
                url: c.url.as_str().into(),
                health_path: c.health_path.as_str().into(),
                check_interval: c.check_interval,
                check_timeout: c.check_timeout,
                auth_line: c.auth.as_ref().map(|(name, value)| {
                    let mut line = Vec::new();
                    crate::http1::push_header(
                        &mut line,
                        name.as_bytes(),
                        value.expose().as_bytes(),
                    );
                    Secret::new(String::from_utf8(line).expect("checked ASCII"))
                }),
                shared: Shared::default(),
            })
            .collect();
        Upstreams { endpoints }
    }
}

/// Opens a connection to the endpoint, trying its addresses in order.
pub(crate) async fn connect(ep: &Endpoint, within: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for &addr in ep.addrs.iter() {
        match monoio::time::timeout(within, TcpStream::connect_addr(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

/// A `GET <base><path>` to an endpoint on a fresh connection, for the control thread
/// (health checks, model lists): the status and, if `body_limit` is given, the body
/// (at most that many bytes). Everything within `within`.
pub(crate) async fn fetch(
    ep: &Endpoint,
    path: &str,
    within: Duration,
    body_limit: Option<usize>,
) -> Result<(u16, Vec<u8>), String> {
    use crate::http1::{self, BodyProgress, Conn, Framing, IoFail, ResponseHead};
    let deadline = std::time::Instant::now() + within;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let stream = connect(ep, within)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut conn = Conn::new(stream, 4096);
    let mut request = Vec::with_capacity(256);
    request.extend_from_slice(b"GET ");
    request.extend_from_slice(&ep.base_path);
    request.extend_from_slice(path.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    request.extend_from_slice(&ep.authority);
    request.extend_from_slice(b"\r\nUser-Agent: ringway\r\nAccept: */*\r\nConnection: close\r\n");
    if let Some(auth) = &ep.auth_line {
        request.extend_from_slice(auth.expose().as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let len = request.len();
    match monoio::time::timeout(left(), http1::write_all(&mut conn.stream, request, len)).await {
        Ok((Ok(()), _)) => {}
        Ok((Err(e), _)) => return Err(format!("request failed: {e}")),
        Err(_) => return Err("timed out".into()),
    }
    let limits = http1::HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 64,
    };
    let mut head = ResponseHead::default();
    let fill = async |conn: &mut Conn| match conn.fill(left()).await {
        Ok(0) => Err("connection closed early".to_string()),
        Ok(n) => Ok(n),
        Err(IoFail::Timeout) => Err("timed out".into()),
        Err(IoFail::Io(e)) => Err(format!("read failed: {e}")),
    };
    loop {
        match http1::parse_response(&conn.buf, &limits, false, &mut head) {
            Ok(true) => break,
            Ok(false) => fill(&mut conn).await.map(drop)?,
            Err(e) => return Err(format!("invalid response: {}", e.describe())),
        }
    }
    let Some(limit) = body_limit else {
        return Ok((head.status, Vec::new()));
    };
    let framing = head.body.unwrap_or(Framing::Empty);
    let mut progress = BodyProgress::new(framing);
    let mut body = Vec::new();
    let mut at = head.len;
    loop {
        at += progress
            .advance(&conn.buf[at..], Some(&mut body))
            .map_err(|e| format!("invalid body: {e}"))?;
        if body.len() > limit {
            return Err(format!("body larger than {limit} bytes"));
        }
        if progress.is_done() {
            return Ok((head.status, body));
        }
        match fill(&mut conn).await {
            Ok(_) => {}
            Err(_) if framing == Framing::UntilClose => return Ok((head.status, body)),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_olla_prefix_maps_back_to_its_type() {
        for t in EndpointType::ALL {
            for p in t.prefixes() {
                assert_eq!(EndpointType::from_prefix(p.as_bytes()), Some(t));
            }
        }
        assert_eq!(
            EndpointType::parse("openai"),
            Some(EndpointType::OpenAiCompatible)
        );
        assert_eq!(EndpointType::parse("tgi"), None);
    }

    #[test]
    fn health_and_model_paths_follow_olla() {
        assert_eq!(EndpointType::Ollama.health_path(), "/");
        assert_eq!(EndpointType::Vllm.health_path(), "/health");
        assert_eq!(EndpointType::LmStudio.models_path(), "/api/v0/models");
        assert_eq!(EndpointType::Ollama.models_path(), "/api/tags");
    }
}
