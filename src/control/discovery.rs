//! Model discovery: reading each endpoint's model list (Ollama `/api/tags`, LM Studio
//! `/api/v0/models`, `/v1/models` for the OpenAI-compatible servers) and publishing a new
//! immutable [`Catalog`] to every shard whenever one is read, or what an endpoint holds in
//! memory changes (`engine.rs`).

use std::cell::RefCell;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use serde_json::Value;

use super::fetch::fetch;
use crate::clock::unix_ms;
use crate::endpoint_type::EndpointType;
use crate::events::{Events, Kind};
use crate::live::{Live, Update};
use crate::log::{debug, info, warning};
use crate::upstream::Endpoint;
use crate::upstream::models::{Catalog, Held, Model};

/// Largest model list read (bytes).
pub(super) const MAX_LIST: usize = 8 << 20;

/// The model lists read so far, what each endpoint holds in memory (by the endpoint
/// indices of one configuration generation), and the shards to send each new catalogue
/// to.
pub(super) struct Discovery {
    generation: u64,
    lists: RefCell<Vec<Option<Vec<Model>>>>,
    seen_unix_ms: RefCell<Vec<u64>>,
    held: RefCell<Vec<Held>>,
    shards: Vec<mpsc::Sender<Update>>,
}

impl Discovery {
    /// Nothing known yet about the endpoints of `live`.
    pub(super) fn new(live: &Live, shards: Vec<mpsc::Sender<Update>>) -> Discovery {
        let endpoints = live.upstreams.endpoints.len();
        Discovery {
            generation: live.generation,
            lists: RefCell::new(vec![None; endpoints]),
            seen_unix_ms: RefCell::new(vec![0; endpoints]),
            held: RefCell::new(vec![Held::Unknown; endpoints]),
            shards,
        }
    }

    /// What is known, for the endpoints of generation `next`: what was read of a backend
    /// it keeps goes along to its new index.
    pub(super) fn next(&self, old: &Live, next: &Live) -> Discovery {
        let carried = Discovery::new(next, self.shards.clone());
        for (i, ep) in old.upstreams.endpoints.iter().enumerate() {
            let Some(now) = next.upstreams.find(ep) else {
                continue;
            };
            // A list read as another type, or from another path, is not this one's.
            if now.kind != ep.kind || now.models_path != ep.models_path {
                continue;
            }
            carried.lists.borrow_mut()[now.index] = self.lists.borrow()[i].clone();
            carried.seen_unix_ms.borrow_mut()[now.index] = self.seen_unix_ms.borrow()[i];
            carried.held.borrow_mut()[now.index] = self.held.borrow()[i].clone();
        }
        carried
    }

    /// When `ep`'s model list was last read (Unix ms; 0 = not in this process, or not
    /// as it is configured now).
    pub(super) fn listed_unix_ms(&self, ep: &Endpoint) -> u64 {
        self.seen_unix_ms.borrow()[ep.index]
    }

    /// Whether what `ep` holds in memory is known (read by this generation or carried).
    pub(super) fn knows_held(&self, ep: &Endpoint) -> bool {
        self.held.borrow()[ep.index] != Held::Unknown
    }

    /// The catalogue of what is known now.
    pub(super) fn catalog(&self) -> Arc<Catalog> {
        let mut catalog = Catalog::new(
            self.lists.borrow().clone(),
            self.seen_unix_ms.borrow().clone(),
        )
        .with_held(self.held.borrow().clone());
        catalog.generation = self.generation;
        Arc::new(catalog)
    }

    /// Records what an endpoint holds in memory; a change is published.
    pub(super) fn set_held(&self, ep: &Endpoint, held: Held) {
        if self.held.borrow()[ep.index] == held {
            return;
        }
        match &held {
            Held::Models(models) => debug!("endpoint {} holds {} model(s)", ep.name, models.len()),
            Held::Listed => debug!("endpoint {} holds the models it lists", ep.name),
            Held::Unknown => debug!("endpoint {} no longer says what it holds", ep.name),
        }
        self.held.borrow_mut()[ep.index] = held;
        self.publish();
    }

    /// Sends every shard a catalogue of what is known now.
    fn publish(&self) {
        let catalog = self.catalog();
        for shard in &self.shards {
            let _ = shard.send(Update::Catalog(catalog.clone()));
        }
    }

    /// Reads an endpoint's model list and publishes the new catalogue.
    pub(super) async fn refresh(&self, ep: &Endpoint, events: &Events) {
        match discover(ep, ep.check_timeout).await {
            Ok(list) => {
                let names = |l: &[Model]| l.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
                let changed =
                    self.lists.borrow()[ep.index].as_deref().map(names) != Some(names(&list));
                if changed {
                    info!("endpoint {} serves {} model(s)", ep.name, list.len());
                }
                self.lists.borrow_mut()[ep.index] = Some(list);
                self.seen_unix_ms.borrow_mut()[ep.index] = unix_ms();
                self.publish();
            }
            Err(e) => {
                warning!("endpoint {}: cannot read its model list: {e}", ep.name);
                events.record(Kind::ModelsUnreadable, Some(&ep.name), e);
            }
        }
    }
}

/// Reads an endpoint's model list.
async fn discover(ep: &Endpoint, within: Duration) -> Result<Vec<Model>, String> {
    let path = &*ep.models_path;
    let (status, body) = fetch(ep, path, within, Some(MAX_LIST)).await?;
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
            Some(Model::new(name.to_string(), item.clone()))
        })
        .collect();
    Some(models)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
