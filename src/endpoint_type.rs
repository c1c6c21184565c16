//! The kinds of inference server ringway knows, with Olla's names: what each serves
//! where (health check, model list, OpenAI prefix). A leaf: configuration, routing and
//! the endpoints themselves all speak of it.

use std::fmt;

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

    /// Whether it serves Anthropic's Messages API (`/v1/messages`) natively by default,
    /// as Olla's profiles say: Ollama ≥ 0.14, vLLM ≥ 0.11.1, llama.cpp b4847+, LM Studio
    /// ≥ 0.4.1. An endpoint's `anthropic` key overrides it (an older server).
    pub(crate) fn speaks_anthropic(self) -> bool {
        matches!(
            self,
            EndpointType::Ollama
                | EndpointType::Vllm
                | EndpointType::LlamaCpp
                | EndpointType::LmStudio
        )
    }

    /// Whether its Messages API counts tokens (`/v1/messages/count_tokens`), as Olla's
    /// profiles say: llama.cpp's server does.
    pub(crate) fn counts_anthropic_tokens(self) -> bool {
        self == EndpointType::LlamaCpp
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
