//! Routing decisions, as pure functions the request path's `route` and `attempt` phases
//! call: `classify` maps a request path to a [`Route`] (a scope of endpoints plus how to
//! rewrite the path, an internal page, or nothing); `balancer` picks one endpoint in a
//! scope; `sticky` derives session keys and places them by rendezvous hashing.

pub(crate) mod balancer;
pub(crate) mod decision;
pub(crate) mod groups;
pub(crate) mod seen;
pub(crate) mod sticky;

pub use balancer::Balancer;
pub use groups::PrefixGroupsConfig;
pub use sticky::KeySource;

use crate::endpoint_type::EndpointType;

/// The validated `[routing]` section: what a request for a model no routable endpoint serves gets (Olla's
/// `model_registry.routing_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingConfig {
    pub strategy: Strategy,
    pub fallback: Fallback,
}

/// What a request for a model gets when no routable endpoint serves it (Olla's
/// `model_registry.routing_strategy.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only endpoints that list the model: 404 when none does, 503 when none of them is
    /// routable.
    Strict,
    /// As strict, but with `routing.fallback = "all"` a model no routable endpoint
    /// serves goes to any routable endpoint of the route.
    Optimistic,
    /// As optimistic, after reading the model lists again when the model is unknown.
    Discovery,
}

impl Strategy {
    pub(crate) fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "strict" => Strategy::Strict,
            "optimistic" => Strategy::Optimistic,
            "discovery" => Strategy::Discovery,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::Strict => "strict",
            Strategy::Optimistic => "optimistic",
            Strategy::Discovery => "discovery",
        }
    }
}

/// `routing.fallback` (Olla's `fallback_behavior`), for the optimistic and discovery
/// strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Refuse, as strict does.
    CompatibleOnly,
    /// Any routable endpoint of the route.
    All,
    /// Refuse.
    None,
}

impl Fallback {
    pub(crate) fn parse(s: &str) -> Option<Fallback> {
        Some(match s {
            "compatible_only" => Fallback::CompatibleOnly,
            "all" => Fallback::All,
            "none" => Fallback::None,
            _ => return None,
        })
    }
}

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
    /// `/internal/status`: a summary.
    Status,
    Endpoints,
    /// `/internal/status/models`.
    Models,
    StickyStats,
    /// `/internal/stats/translators`: the Messages API's passthrough and translation
    /// counts, in Olla's shape.
    TranslatorStats,
    /// `/internal/metrics`: Prometheus text format.
    Metrics,
    /// A model list in OpenAI's shape (`/v1/models`), of the endpoints in scope.
    ModelsOpenAi(Scope),
    /// A model list in Ollama's shape (`/api/tags`).
    ModelsOllama(Scope),
    /// `/olla/models` (`?format=unified|openai|ollama|lmstudio|vllm`).
    ModelsUnified,
    /// `/olla/models/{id}`: one model of the unified list, by id or alias.
    ModelById,
    /// LM Studio's `/api/v0/models` shape, of the LM Studio endpoints
    /// (`/olla/lmstudio/api/v0/models`).
    ModelsLmStudio,
    /// `/olla/anthropic/v1/models`: the catalogue in Anthropic's list shape.
    AnthropicModels,
    /// `/olla/anthropic/v1/messages/count_tokens` (and `/v1/messages/count_tokens`):
    /// a Messages request's input tokens, estimated as Olla does.
    AnthropicCountTokens,
    /// `/internal/stats/models`: per-model request statistics.
    ModelStats,
    /// `/internal/process`: the process's memory, threads and open files.
    Process,
    /// `/internal/ui/`: the dashboard's page, its script and its style (no key needed:
    /// they hold no data; the page asks for the key when its data answers 401).
    Ui,
    /// `/internal/ui/data`: what the dashboard shows, polled by the page.
    UiData,
    /// `POST /internal/reload`: re-reads the configuration file (as SIGHUP does) and
    /// answers how it went. Loopback clients only, whatever `server.internal_access`.
    Reload,
    /// `/internal/debug/panic`: a test hook (`ServerConfig::debug_panic_route`), 404
    /// unless enabled.
    DebugPanic,
}

impl Internal {
    /// Operator pages, answered to loopback clients only unless
    /// `server.internal_access = "any"`; liveness, version and model lists are for all.
    pub(crate) fn is_operator_page(self) -> bool {
        matches!(
            self,
            Internal::Status
                | Internal::Endpoints
                | Internal::Models
                | Internal::StickyStats
                | Internal::TranslatorStats
                | Internal::Metrics
                | Internal::DebugPanic
                | Internal::ModelStats
                | Internal::Process
                | Internal::Ui
                | Internal::UiData
                | Internal::Reload
        )
    }

    /// Whether `server.api_keys` applies: to all but the liveness and version pages.
    pub(crate) fn needs_key(self) -> bool {
        !matches!(self, Internal::Health | Internal::Version | Internal::Ui)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward to an endpoint in `scope`; the upstream path is the scope's prefix for
    /// that endpoint followed by the request target minus its first `strip` bytes.
    Forward {
        scope: Scope,
        strip: usize,
    },
    /// Anthropic's Messages API (`/v1/messages`, `/olla/anthropic/v1/messages`): to the
    /// endpoints of the OpenAI scope that speak it natively, else translated; the first
    /// `strip` bytes of the target are not the endpoint's.
    Messages {
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
    match path {
        b"/v1/models" => return Route::Internal(Internal::ModelsOpenAi(Scope::OpenAi)),
        b"/api/tags" => return Route::Internal(Internal::ModelsOllama(Scope::Ollama)),
        b"/olla/models" => return Route::Internal(Internal::ModelsUnified),
        b"/olla/anthropic/v1/models" => return Route::Internal(Internal::AnthropicModels),
        b"/olla/anthropic/v1/messages/count_tokens" | b"/v1/messages/count_tokens" => {
            return Route::Internal(Internal::AnthropicCountTokens);
        }
        b"/v1/messages" => return Route::Messages { strip: 0 },
        b"/olla/anthropic/v1/messages" => {
            return Route::Messages {
                strip: b"/olla/anthropic".len(),
            };
        }
        _ => {}
    }
    if path.starts_with(b"/olla/anthropic/") {
        // Olla's Anthropic routes are the three above.
        return Route::NotFound;
    }
    if path.starts_with(b"/olla/models/") {
        return Route::Internal(Internal::ModelById);
    }
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
        let scope = match segment {
            b"proxy" => Scope::Any,
            _ => match EndpointType::from_prefix(segment) {
                // OpenAI routing is inclusive, as in Olla: every type speaks it.
                Some(EndpointType::OpenAiCompatible) => Scope::OpenAi,
                Some(t) => Scope::Type(t),
                None => return Route::UnknownProvider,
            },
        };
        // The provider's model list comes from the catalogue, as Olla does.
        return match (tail, scope) {
            (b"/v1/models", _) => Route::Internal(Internal::ModelsOpenAi(scope)),
            (b"/api/tags", Scope::Type(EndpointType::Ollama)) => {
                Route::Internal(Internal::ModelsOllama(scope))
            }
            // LM Studio's own lists: its OpenAI one under /api, and its richer v0 one.
            (b"/api/v1/models", Scope::Type(EndpointType::LmStudio)) => {
                Route::Internal(Internal::ModelsOpenAi(scope))
            }
            (b"/api/v0/models", Scope::Type(EndpointType::LmStudio)) => {
                Route::Internal(Internal::ModelsLmStudio)
            }
            _ => Route::Forward { scope, strip },
        };
    }
    match path {
        b"/internal/health" => Route::Internal(Internal::Health),
        b"/internal/status" => Route::Internal(Internal::Status),
        b"/internal/status/endpoints" => Route::Internal(Internal::Endpoints),
        b"/internal/status/models" => Route::Internal(Internal::Models),
        b"/internal/stats/sticky" => Route::Internal(Internal::StickyStats),
        b"/internal/stats/translators" => Route::Internal(Internal::TranslatorStats),
        b"/internal/stats/models" => Route::Internal(Internal::ModelStats),
        b"/internal/process" => Route::Internal(Internal::Process),
        b"/internal/reload" => Route::Internal(Internal::Reload),
        b"/internal/metrics" => Route::Internal(Internal::Metrics),
        b"/internal/debug/panic" => Route::Internal(Internal::DebugPanic),
        b"/version" => Route::Internal(Internal::Version),
        b"/internal/ui" => Route::Internal(Internal::Ui),
        b"/internal/ui/data" => Route::Internal(Internal::UiData),
        _ if path.starts_with(b"/internal/ui/") => Route::Internal(Internal::Ui),
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
            forward("/olla/lmstudio/api/v0/chat/completions"),
            (
                Scope::Type(EndpointType::LmStudio),
                "/api/v0/chat/completions"
            )
        );
        assert_eq!(
            forward("/olla/openai/v1/chat/completions?stream=1"),
            (Scope::OpenAi, "/v1/chat/completions?stream=1")
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
        let lists = [
            ("/v1/models", Internal::ModelsOpenAi(Scope::OpenAi)),
            ("/api/tags", Internal::ModelsOllama(Scope::Ollama)),
            ("/olla/models?format=openai", Internal::ModelsUnified),
            (
                "/olla/vllm/v1/models",
                Internal::ModelsOpenAi(Scope::Type(EndpointType::Vllm)),
            ),
            ("/olla/proxy/v1/models", Internal::ModelsOpenAi(Scope::Any)),
            (
                "/olla/ollama/api/tags",
                Internal::ModelsOllama(Scope::Type(EndpointType::Ollama)),
            ),
        ];
        for (path, page) in lists {
            assert_eq!(classify(path.as_bytes()), Route::Internal(page), "{path}");
        }
        assert!(matches!(
            classify(b"/v1/models/llama3"),
            Route::Forward { .. }
        ));
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
    fn olla_model_pages_and_operator_pages() {
        let lm = Scope::Type(EndpointType::LmStudio);
        let pages = [
            ("/olla/models/llama3.2:latest", Internal::ModelById),
            (
                "/olla/models/Qwen/Qwen2.5-7B-Instruct?x=1",
                Internal::ModelById,
            ),
            ("/olla/lmstudio/api/v1/models", Internal::ModelsOpenAi(lm)),
            ("/olla/lm-studio/api/v1/models", Internal::ModelsOpenAi(lm)),
            ("/olla/lm_studio/api/v0/models", Internal::ModelsLmStudio),
            ("/olla/anthropic/v1/models", Internal::AnthropicModels),
            (
                "/olla/anthropic/v1/messages/count_tokens",
                Internal::AnthropicCountTokens,
            ),
            ("/v1/messages/count_tokens", Internal::AnthropicCountTokens),
            ("/olla/lmstudio/api/v0/models?x", Internal::ModelsLmStudio),
            ("/olla/lmstudio/v1/models", Internal::ModelsOpenAi(lm)),
            (
                "/internal/stats/models?include_endpoints=true",
                Internal::ModelStats,
            ),
            ("/internal/process", Internal::Process),
            ("/internal/reload", Internal::Reload),
        ];
        for (path, page) in pages {
            assert_eq!(classify(path.as_bytes()), Route::Internal(page), "{path}");
        }
        assert!(Internal::Process.is_operator_page());
        for (path, page) in [
            ("/internal/ui", Internal::Ui),
            ("/internal/ui/", Internal::Ui),
            ("/internal/ui/app.js", Internal::Ui),
            ("/internal/ui/data?x=1", Internal::UiData),
        ] {
            assert_eq!(classify(path.as_bytes()), Route::Internal(page), "{path}");
            assert!(page.is_operator_page());
        }
        assert!(!Internal::Ui.needs_key() && Internal::UiData.needs_key());
        assert!(Internal::ModelStats.is_operator_page());
        assert!(!Internal::ModelById.is_operator_page());
        assert!(!Internal::ModelsLmStudio.is_operator_page());
        // Only LM Studio's scope has the /api lists; elsewhere they are forwarded.
        assert!(matches!(
            classify(b"/olla/vllm/api/v0/models"),
            Route::Forward { .. }
        ));
        assert_eq!(
            classify(b"/olla/models/"),
            Route::Internal(Internal::ModelById),
            "answered 400, as Olla does"
        );
    }

    #[test]
    fn the_messages_api() {
        for (path, strip) in [
            ("/v1/messages", 0),
            ("/v1/messages?beta=true", 0),
            ("/olla/anthropic/v1/messages", 15),
        ] {
            assert_eq!(
                classify(path.as_bytes()),
                Route::Messages { strip },
                "{path}"
            );
        }
        for path in ["/olla/anthropic/v1/complete", "/olla/anthropic/api/chat"] {
            assert_eq!(classify(path.as_bytes()), Route::NotFound, "{path}");
        }
        assert_eq!(
            classify(b"/internal/stats/translators"),
            Route::Internal(Internal::TranslatorStats)
        );
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
