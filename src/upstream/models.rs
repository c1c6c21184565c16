//! The model catalogue: which endpoint serves which model, consulted by the `route` phase
//! and by the model-list pages.
//!
//! The control thread reads each endpoint's model list (`control/discovery.rs`) when it is
//! first seen healthy, when it recovers, and every `models.refresh_interval_ms`. Each
//! change produces a new immutable [`Catalog`], sent to every shard over its own channel;
//! a shard swaps it in between requests. Nothing on the request path locks.
//!
//! An endpoint whose list was never read (down since start, or its list is unreadable)
//! is assumed to serve any model, so a discovery problem degrades routing instead of
//! rejecting requests; a list that was read once is kept while the endpoint is down, so a
//! model found only on down endpoints is "unavailable" (503) rather than "unknown" (404).
//!
//! Which models each endpoint holds in memory ([`Held`]) is read by the control thread's
//! engine poller (`control/engine.rs`) every `models.loaded_refresh_interval_ms` and
//! joins the catalogue the same way: [`Catalog::cold`] names the endpoints where a
//! request for a model would first wait for it to load.

pub(crate) mod facts;

use serde_json::Value;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::endpoint_set::EndpointSet;
pub(crate) use facts::Facts;

/// Ollama's implicit tag: `llama3` is `llama3:latest`.
const LATEST: &[u8] = b":latest";

/// One model as an endpoint lists it.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub(crate) name: String,
    /// The endpoint's own entry (an `/api/tags` or `/v1/models` element).
    pub(crate) raw: Value,
    /// What the entry says about the model, derived when the list was read.
    pub(crate) facts: Facts,
}

impl Model {
    /// A model as an endpoint lists it; derives its facts (on the control thread).
    pub(crate) fn new(name: String, raw: Value) -> Model {
        let facts = Facts::of(&name, &raw);
        Model { name, raw, facts }
    }

    /// The model family: the list's own (Ollama's `details.family`, LM Studio's `arch`),
    /// else the name's leading known family ("llama3.1:8b" → "llama"), else "unknown"
    /// (as Olla groups it).
    pub(crate) fn family(&self) -> String {
        match &*self.facts.family {
            "" => "unknown".to_string(),
            f => f.to_string(),
        }
    }
}

/// What an endpoint says it holds in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Held {
    /// It reports nothing (it cannot say, it could not be read, or not yet): it is never
    /// counted cold.
    #[default]
    Unknown,
    /// Every model it lists: an engine serving one model, loaded before its health check
    /// passes (vLLM, SGLang, a plain llama-server). Nothing while its list is unknown.
    Listed,
    /// These models (Ollama's `/api/ps`, LM Studio's loaded entries, llama.cpp's router).
    Models(Vec<String>),
}

/// An immutable snapshot of which endpoint serves which model.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// The configuration generation (`live.rs`) whose endpoint indices it uses.
    pub(crate) generation: u64,
    /// Per endpoint: its models, `None` until its list has been read.
    pub(crate) lists: Vec<Option<Vec<Model>>>,
    /// Per endpoint: when its list was last read (Unix ms; 0 = never).
    pub(crate) seen_unix_ms: Vec<u64>,
    /// Every listed name with the endpoints listing it, ordered by the name's XXH3 hash:
    /// a lookup is one hash of the request's model and a binary search.
    index: Vec<Listed>,
    /// Endpoints whose list is unknown: they may serve any model.
    unknown: EndpointSet,
    /// Per endpoint: what it holds in memory, as it last said.
    pub(crate) held: Vec<Held>,
    /// Every model some endpoint holds, with those endpoints, ordered like `index`.
    held_index: Vec<Listed>,
    /// Endpoints that say what they hold: the only ones that can be cold.
    reporting: EndpointSet,
}

#[derive(Debug)]
struct Listed {
    hash: u64,
    name: Box<str>,
    on: EndpointSet,
}

impl Catalog {
    /// A catalogue of the lists read so far, where no endpoint has said what it holds.
    pub(crate) fn new(lists: Vec<Option<Vec<Model>>>, seen_unix_ms: Vec<u64>) -> Catalog {
        let mut names = Vec::new();
        let mut unknown = EndpointSet::default();
        for (i, list) in lists.iter().enumerate() {
            match list {
                None => unknown.insert(i),
                Some(models) => names.extend(models.iter().map(|m| (&*m.name, i))),
            }
        }
        let index = build_index(names);
        let held = vec![Held::Unknown; lists.len()];
        Catalog {
            generation: 0,
            lists,
            seen_unix_ms,
            index,
            unknown,
            held,
            held_index: Vec::new(),
            reporting: EndpointSet::default(),
        }
    }

    /// The same catalogue with what each endpoint holds in memory (by endpoint index;
    /// missing entries are [`Held::Unknown`]).
    pub(crate) fn with_held(mut self, mut held: Vec<Held>) -> Catalog {
        held.resize(self.lists.len(), Held::Unknown);
        let mut names = Vec::new();
        let mut reporting = EndpointSet::default();
        for (i, h) in held.iter().enumerate() {
            match (h, &self.lists[i]) {
                (Held::Unknown, _) | (Held::Listed, None) => continue,
                (Held::Listed, Some(list)) => names.extend(list.iter().map(|m| (&*m.name, i))),
                (Held::Models(models), _) => names.extend(models.iter().map(|m| (&**m, i))),
            }
            reporting.insert(i);
        }
        self.held_index = build_index(names);
        self.held = held;
        self.reporting = reporting;
        self
    }

    /// The endpoints known to list `model`, matching Ollama's implicit tag both ways
    /// (`llama3` is `llama3:latest`).
    #[inline]
    pub(crate) fn listing(&self, model: &[u8]) -> EndpointSet {
        self.listing_hashed(xxh3_64(model), model)
    }

    /// [`Catalog::listing`] with the model's XXH3 hash already at hand.
    fn listing_hashed(&self, hash: u64, model: &[u8]) -> EndpointSet {
        lookup(&self.index, hash, model)
    }

    /// Whether endpoint `ep` lists the model named `model`, of XXH3 hash `hash`. For
    /// statistics: matched by hash alone (a 64-bit collision among listed names is
    /// negligible there), by name only for Ollama's implicit `:latest` tag.
    pub(crate) fn lists(&self, hash: u64, model: &[u8], ep: usize) -> bool {
        let first = self.index.partition_point(|l| l.hash < hash);
        match self.index.get(first).filter(|l| l.hash == hash) {
            Some(listed) => listed.on.contains(ep),
            None => self.listing_hashed(hash, model).contains(ep),
        }
    }

    /// The endpoints that may serve `model`: those listing it and those whose list is
    /// unknown. Empty when no endpoint can.
    pub(crate) fn serving(&self, model: &[u8]) -> EndpointSet {
        self.listing(model).union(self.unknown)
    }

    /// The endpoints known not to hold `model` in memory: they report which models they
    /// hold, and it is not one (a request there waits for the model to load). Endpoints
    /// that report nothing are never cold. Matches Ollama's implicit `:latest` tag both
    /// ways, as [`Catalog::listing`] does; on the request path: a hash and a binary
    /// search, nothing allocated.
    #[inline]
    pub(crate) fn cold(&self, model: &[u8]) -> EndpointSet {
        if self.reporting.is_empty() {
            return EndpointSet::default();
        }
        self.reporting.minus(self.holding(model))
    }

    /// The endpoints that say they hold `model` in memory.
    pub(crate) fn holding(&self, model: &[u8]) -> EndpointSet {
        lookup(&self.held_index, xxh3_64(model), model)
    }

    /// What endpoint `ep` holds in memory, by name (those it lists, for
    /// [`Held::Listed`]); `None` when it reports nothing.
    pub(crate) fn held_by(&self, ep: usize) -> Option<Vec<&str>> {
        if !self.reporting.contains(ep) {
            return None;
        }
        Some(match &self.held[ep] {
            Held::Models(models) => models.iter().map(|m| &**m).collect(),
            _ => self.lists[ep].iter().flatten().map(|m| &*m.name).collect(),
        })
    }

    /// Every distinct model name, with the endpoints listing it, in name order.
    pub(crate) fn models(&self) -> Vec<(&str, EndpointSet)> {
        let mut all: Vec<(&str, EndpointSet)> =
            self.index.iter().map(|l| (&*l.name, l.on)).collect();
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

/// Names with the endpoints that name them, ordered by the name's XXH3 hash. Built on
/// the control thread: a std map is fine here, the shards only search.
fn build_index<'a>(names: impl IntoIterator<Item = (&'a str, usize)>) -> Vec<Listed> {
    let mut by_name: std::collections::HashMap<&str, EndpointSet> = Default::default();
    for (name, i) in names {
        by_name.entry(name).or_default().insert(i);
    }
    let mut index: Vec<Listed> = by_name
        .into_iter()
        .map(|(name, on)| Listed {
            hash: xxh3_64(name.as_bytes()),
            name: name.into(),
            on,
        })
        .collect();
    index.sort_by(|a, b| (a.hash, &a.name).cmp(&(b.hash, &b.name)));
    index
}

/// The endpoints `index` gives for `model` (of XXH3 hash `hash`), matching Ollama's
/// implicit tag both ways (`llama3` is `llama3:latest`).
fn lookup(index: &[Listed], hash: u64, model: &[u8]) -> EndpointSet {
    if let Some(on) = find(index, hash, |name| name == model) {
        return on;
    }
    let found = match model.strip_suffix(LATEST) {
        Some(bare) => find(index, xxh3_64(bare), |name| name == bare),
        None if !model.contains(&b':') => {
            // The hash of `model + ":latest"`, without building the string.
            let mut h = Xxh3::new();
            h.update(model);
            h.update(LATEST);
            let tagged = |name: &[u8]| name.strip_suffix(LATEST) == Some(model);
            find(index, h.digest(), tagged)
        }
        None => None,
    };
    found.unwrap_or_default()
}

fn find(index: &[Listed], hash: u64, is: impl Fn(&[u8]) -> bool) -> Option<EndpointSet> {
    let first = index.partition_point(|l| l.hash < hash);
    index[first..]
        .iter()
        .take_while(|l| l.hash == hash)
        .find(|l| is(l.name.as_bytes()))
        .map(|l| l.on)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> Model {
        Model::new(name.into(), Value::Null)
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
        let lists =
            |model: &str, ep| catalog.lists(xxh3_64(model.as_bytes()), model.as_bytes(), ep);
        assert!(lists("qwen2.5:7b", 0) && !lists("qwen2.5:7b", 1) && !lists("qwen2.5:7b", 2));
        assert!(lists("llama3.2", 0), "the implicit tag");
        assert!(!lists("nope", 2), "an unknown list lists nothing");
        let names: Vec<&str> = catalog.models().iter().map(|m| m.0).collect();
        assert_eq!(names, ["llama3.2:latest", "mistral", "qwen2.5:7b"]);
    }

    fn set(v: &[usize]) -> EndpointSet {
        let mut s = EndpointSet::default();
        v.iter().for_each(|&i| s.insert(i));
        s
    }

    #[test]
    fn cold_endpoints_are_those_that_say_they_hold_other_models() {
        let both = || Some(vec![model("llama3.2:latest"), model("qwen2.5:7b")]);
        let held = |names: &[&str]| Held::Models(names.iter().map(|n| n.to_string()).collect());
        let catalog = Catalog::new(
            vec![
                both(),
                both(),
                None,
                Some(vec![model("qwen2.5:7b")]),
                both(),
            ],
            vec![1, 1, 0, 1, 1],
        );
        assert!(catalog.cold(b"qwen2.5:7b").is_empty(), "nobody reports yet");
        let catalog = catalog.with_held(vec![
            held(&["llama3.2:latest"]),
            held(&["qwen2.5:7b"]),
            Held::Listed, // its list is unknown: it says nothing
            Held::Listed,
            // Endpoint 4 is missing: it reports nothing.
        ]);
        assert_eq!(catalog.cold(b"qwen2.5:7b"), set(&[0]));
        assert_eq!(catalog.cold(b"llama3.2:latest"), set(&[1, 3]));
        assert_eq!(catalog.cold(b"llama3.2"), set(&[1, 3]), "the implicit tag");
        assert_eq!(catalog.cold(b"mistral"), set(&[0, 1, 3]));
        assert_eq!(catalog.holding(b"qwen2.5:7b"), set(&[1, 3]));
        assert_eq!(catalog.held_by(0), Some(vec!["llama3.2:latest"]));
        assert_eq!(
            catalog.held_by(3),
            Some(vec!["qwen2.5:7b"]),
            "what it lists"
        );
        assert_eq!((catalog.held_by(2), catalog.held_by(4)), (None, None));
        // A bare name held matches its `:latest` request, and an empty report makes an
        // endpoint cold for everything.
        let catalog = Catalog::new(vec![both(), both()], vec![1, 1])
            .with_held(vec![held(&["llama3.2"]), held(&[])]);
        assert_eq!(catalog.cold(b"llama3.2:latest"), set(&[1]));
        assert_eq!(catalog.cold(b"qwen2.5:7b"), set(&[0, 1]));
    }

    #[test]
    fn every_name_of_a_large_catalogue_is_found() {
        let names: Vec<String> = (0..500).map(|i| format!("model-{i}:{}", i % 7)).collect();
        let list = |range: std::ops::Range<usize>| {
            Some(names[range].iter().map(|n| model(n)).collect::<Vec<_>>())
        };
        let catalog = Catalog::new(vec![list(0..300), list(200..500)], vec![1, 1]);
        for (i, name) in names.iter().enumerate() {
            let on = catalog.listing(name.as_bytes());
            assert_eq!(
                (on.contains(0), on.contains(1)),
                (i < 300, i >= 200),
                "{name}"
            );
        }
        assert!(catalog.listing(b"model-1").is_empty());
        assert_eq!(catalog.models().len(), 500);
    }
}
