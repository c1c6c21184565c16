//! The model catalogue: which endpoint serves which model, consulted by `select_backend`
//! and by the model-list pages.
//!
//! The control thread reads each endpoint's model list (Ollama `/api/tags`, LM Studio
//! `/api/v0/models`, `/v1/models` for the OpenAI-compatible servers) when it is first seen
//! healthy, when it recovers, and every `models.refresh_interval_ms`. Each change
//! produces a new immutable [`Catalog`], sent to every shard over its own channel; a shard
//! swaps it in between requests. Nothing on the request path locks.
//!
//! An endpoint whose list was never read (down since start, or its list is unreadable)
//! is assumed to serve any model, so a discovery problem degrades routing instead of
//! rejecting requests; a list that was read once is kept while the endpoint is down, so a
//! model found only on down endpoints is "unavailable" (503) rather than "unknown" (404).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::upstream::{Endpoint, EndpointType};

/// Most endpoints ringway can route to (the width of [`EndpointSet`]).
pub(crate) const MAX_ENDPOINTS: usize = 256;

/// A set of endpoint indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EndpointSet([u64; MAX_ENDPOINTS / 64]);

impl EndpointSet {
    pub(crate) fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    #[inline]
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn union(mut self, other: EndpointSet) -> EndpointSet {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// One model as an endpoint lists it.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub(crate) name: String,
    /// The endpoint's own entry (an `/api/tags` or `/v1/models` element).
    pub(crate) raw: Value,
}

impl Model {
    /// The model family: Ollama's `details.family`, else the name up to the first
    /// `:`, `-`, `.` or digit ("llama3.1:8b" → "llama").
    pub(crate) fn family(&self) -> String {
        if let Some(f) = self.raw["details"]["family"]
            .as_str()
            .filter(|f| !f.is_empty())
        {
            return f.to_string();
        }
        let base = self.name.rsplit('/').next().unwrap_or(&self.name);
        let end =
            base.find(|c: char| c == ':' || c == '-' || c == '.' || c == '_' || c.is_ascii_digit());
        base[..end.unwrap_or(base.len())].to_ascii_lowercase()
    }
}

/// An immutable snapshot of which endpoint serves which model.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// Per endpoint: its models, `None` until its list has been read.
    pub(crate) lists: Vec<Option<Vec<Model>>>,
    /// Per endpoint: when its list was last read (Unix ms; 0 = never).
    pub(crate) seen_unix_ms: Vec<u64>,
    index: HashMap<Box<[u8]>, EndpointSet>,
    /// Endpoints whose list is unknown: they may serve any model.
    unknown: EndpointSet,
}

impl Catalog {
    pub(crate) fn new(lists: Vec<Option<Vec<Model>>>, seen_unix_ms: Vec<u64>) -> Catalog {
        let mut index: HashMap<Box<[u8]>, EndpointSet> = HashMap::new();
        let mut unknown = EndpointSet::default();
        for (i, list) in lists.iter().enumerate() {
            match list {
                None => unknown.insert(i),
                Some(models) => {
                    for m in models {
                        index.entry(m.name.as_bytes().into()).or_default().insert(i);
                    }
                }
            }
        }
        Catalog {
            lists,
            seen_unix_ms,
            index,
            unknown,
        }
    }

    /// The endpoints known to list `model`, matching Ollama's implicit tag both ways
    /// (`llama3` is `llama3:latest`).
    pub(crate) fn listing(&self, model: &[u8]) -> EndpointSet {
        if let Some(set) = self.index.get(model) {
            return *set;
        }
        let alternative = match model.strip_suffix(b":latest") {
            Some(bare) => bare.to_vec(),
            None if !model.contains(&b':') => [model, b":latest"].concat(),
            None => return EndpointSet::default(),
        };
        self.index
            .get(alternative.as_slice())
            .copied()
            .unwrap_or_default()
    }

    /// The endpoints that may serve `model`: those listing it and those whose list is
    /// unknown. Empty when no endpoint can.
    pub(crate) fn serving(&self, model: &[u8]) -> EndpointSet {
        self.listing(model).union(self.unknown)
    }

    /// Every distinct model name, with the endpoints listing it, in name order.
    pub(crate) fn models(&self) -> Vec<(&str, EndpointSet)> {
        let mut all: Vec<(&str, EndpointSet)> = self
            .index
            .iter()
            .map(|(name, set)| (std::str::from_utf8(name).unwrap_or(""), *set))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// The first entry an endpoint gave for a model.
    pub(crate) fn entry(&self, endpoint: usize, name: &str) -> Option<&Model> {
        self.lists
            .get(endpoint)?
            .as_ref()?
            .iter()
            .find(|m| m.name == name)
    }
}

/// Reads an endpoint's model list.
pub(crate) async fn discover(ep: &Endpoint, within: Duration) -> Result<Vec<Model>, String> {
    let path = ep.kind.models_path();
    let (status, body) = crate::upstream::fetch(ep, path, within, Some(8 << 20)).await?;
    if !(200..300).contains(&status) {
        return Err(format!("{path} answered {status}"));
    }
    parse_list(ep.kind, &body).ok_or_else(|| format!("{path}: not a model list"))
}

/// Parses a model-list response of an endpoint type.
pub(crate) fn parse_list(kind: EndpointType, body: &[u8]) -> Option<Vec<Model>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let (items, name_key) = match kind {
        EndpointType::Ollama => (v.get("models")?.as_array()?, "name"),
        _ => (v.get("data")?.as_array()?, "id"),
    };
    let models = items
        .iter()
        .filter_map(|item| {
            let name = item.get(name_key).or_else(|| item.get("model"))?.as_str()?;
            // LM Studio lists embedding models alongside chat models; both are routable.
            Some(Model {
                name: name.to_string(),
                raw: item.clone(),
            })
        })
        .collect();
    Some(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> Model {
        Model {
            name: name.into(),
            raw: Value::Null,
        }
    }

    #[test]
    fn lookups_follow_ollama_tags_and_unknown_lists() {
        let catalog = Catalog::new(
            vec![
                Some(vec![model("llama3.2:latest"), model("qwen2.5:7b")]),
                Some(vec![model("mistral")]),
                None,
            ],
            vec![1, 1, 0],
        );
        let set = |v: &[usize]| {
            let mut s = EndpointSet::default();
            v.iter().for_each(|&i| s.insert(i));
            s
        };
        assert_eq!(catalog.listing(b"llama3.2:latest"), set(&[0]));
        assert_eq!(catalog.listing(b"llama3.2"), set(&[0]));
        assert_eq!(catalog.listing(b"mistral:latest"), set(&[1]));
        assert_eq!(
            catalog.listing(b"qwen2.5"),
            set(&[]),
            "only :latest is implicit"
        );
        assert_eq!(
            catalog.serving(b"qwen2.5:7b"),
            set(&[0, 2]),
            "the unknown endpoint may serve it"
        );
        assert_eq!(catalog.serving(b"nope"), set(&[2]));
        let names: Vec<&str> = catalog.models().iter().map(|m| m.0).collect();
        assert_eq!(names, ["llama3.2:latest", "mistral", "qwen2.5:7b"]);
    }

    #[test]
    fn lists_parse_per_type() {
        let tags = br#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","details":{"family":"llama"}}]}"#;
        let ollama = parse_list(EndpointType::Ollama, tags).unwrap();
        assert_eq!(ollama[0].name, "llama3.2:latest");
        assert_eq!(ollama[0].family(), "llama");
        let openai =
            br#"{"object":"list","data":[{"id":"Qwen/Qwen2.5-7B-Instruct","object":"model"}]}"#;
        let vllm = parse_list(EndpointType::Vllm, openai).unwrap();
        assert_eq!(vllm[0].name, "Qwen/Qwen2.5-7B-Instruct");
        assert_eq!(vllm[0].family(), "qwen");
        assert!(parse_list(EndpointType::Vllm, b"<html>").is_none());
        assert!(parse_list(EndpointType::Ollama, openai).is_none());
    }

    #[test]
    fn endpoint_sets() {
        let mut s = EndpointSet::default();
        assert!(s.is_empty());
        s.insert(0);
        s.insert(255);
        assert!(s.contains(255) && s.contains(0) && !s.contains(64));
    }
}
