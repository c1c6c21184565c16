//! The `route` and `select_backend` phases: which requests go where. `classify` maps a
//! request path to a [`Route`]: a scope of endpoints plus how to rewrite the path, an
//! internal (operator) page, or nothing. `balancer` picks one endpoint in a scope.

pub(crate) mod balancer;
pub(crate) mod sticky;

pub use balancer::Balancer;
pub use sticky::KeySource;

use crate::upstream::EndpointType;

/// Which endpoints may serve a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The OpenAI-compatible API under `/v1`: every endpoint type serves it.
    OpenAi,
    /// Ollama's native API under `/api`: Ollama endpoints only.
    Ollama,
    /// `/olla/<type>/...`: endpoints of one type.
    Type(EndpointType),
    /// `/olla/proxy/...`: any endpoint.
    Any,
}

impl Scope {
    pub(crate) fn admits(self, kind: EndpointType) -> bool {
        match self {
            Scope::OpenAi | Scope::Any => true,
            Scope::Ollama => kind.speaks_ollama(),
            Scope::Type(t) => t == kind,
        }
    }

    /// What to put before the remaining path on an endpoint of type `kind`.
    pub(crate) fn upstream_prefix(self, kind: EndpointType) -> &'static [u8] {
        match self {
            Scope::OpenAi => kind.openai_prefix(),
            _ => b"",
        }
    }
}

/// Pages ringway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    Health,
    Version,
    Endpoints,
    StickyStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward to an endpoint in `scope`; the upstream path is the scope's prefix for
    /// that endpoint followed by the request target minus its first `strip` bytes.
    Forward {
        scope: Scope,
        strip: usize,
    },
    Internal(Internal),
    /// `/olla/<segment>/...` with a segment that names no endpoint type.
    UnknownProvider,
    NotFound,
}

/// Maps a request target (path and query) to its route.
pub(crate) fn classify(target: &[u8]) -> Route {
    let path = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[..q],
        None => target,
    };
    if path.starts_with(b"/v1/") {
        return Route::Forward {
            scope: Scope::OpenAi,
            strip: 0,
        };
    }
    if path.starts_with(b"/api/") {
        return Route::Forward {
            scope: Scope::Ollama,
            strip: 0,
        };
    }
    if let Some(rest) = path.strip_prefix(b"/olla/") {
        let (segment, tail) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => rest.split_at(i),
            None => (rest, &b""[..]),
        };
        if tail.is_empty() {
            return Route::NotFound;
        }
        let strip = b"/olla/".len() + segment.len();
        if segment == b"proxy" {
            return Route::Forward {
                scope: Scope::Any,
                strip,
            };
        }
        return match EndpointType::from_prefix(segment) {
            Some(t) => Route::Forward {
                scope: Scope::Type(t),
                strip,
            },
            None => Route::UnknownProvider,
        };
    }
    match path {
        b"/internal/health" => Route::Internal(Internal::Health),
        b"/internal/status/endpoints" => Route::Internal(Internal::Endpoints),
        b"/internal/stats/sticky" => Route::Internal(Internal::StickyStats),
        b"/version" => Route::Internal(Internal::Version),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(target: &str) -> (Scope, &str) {
        match classify(target.as_bytes()) {
            Route::Forward { scope, strip } => (scope, &target[strip..]),
            other => panic!("{target} routed to {other:?}"),
        }
    }

    #[test]
    fn root_apis_and_olla_prefixes() {
        assert_eq!(
            forward("/v1/chat/completions"),
            (Scope::OpenAi, "/v1/chat/completions")
        );
        assert_eq!(forward("/api/chat?x=1"), (Scope::Ollama, "/api/chat?x=1"));
        assert_eq!(
            forward("/olla/ollama/api/generate"),
            (Scope::Type(EndpointType::Ollama), "/api/generate")
        );
        assert_eq!(
            forward("/olla/lmstudio/v1/models"),
            (Scope::Type(EndpointType::LmStudio), "/v1/models")
        );
        assert_eq!(
            forward("/olla/openai/v1/chat/completions?stream=1"),
            (
                Scope::Type(EndpointType::OpenAiCompatible),
                "/v1/chat/completions?stream=1"
            )
        );
        assert_eq!(
            forward("/olla/proxy/v1/embeddings"),
            (Scope::Any, "/v1/embeddings")
        );
    }

    #[test]
    fn internal_and_unknown_paths() {
        assert_eq!(
            classify(b"/internal/health"),
            Route::Internal(Internal::Health)
        );
        assert_eq!(classify(b"/version"), Route::Internal(Internal::Version));
        assert_eq!(
            classify(b"/internal/status/endpoints?x"),
            Route::Internal(Internal::Endpoints)
        );
        assert_eq!(classify(b"/olla/tgi/v1/models"), Route::UnknownProvider);
        for path in [
            "/",
            "/v1",
            "/api",
            "/olla/proxy",
            "/olla/ollama",
            "/v2/x",
            "/internal/nope",
        ] {
            assert_eq!(classify(path.as_bytes()), Route::NotFound, "{path}");
        }
    }

    #[test]
    fn scopes_admit_the_right_types() {
        assert!(Scope::Ollama.admits(EndpointType::Ollama));
        assert!(!Scope::Ollama.admits(EndpointType::Vllm));
        assert!(Scope::OpenAi.admits(EndpointType::Vllm));
        assert!(!Scope::Type(EndpointType::Vllm).admits(EndpointType::Sglang));
        assert_eq!(
            Scope::OpenAi.upstream_prefix(EndpointType::Lemonade),
            b"/api"
        );
    }
}
