//! Olla's model pages, from the catalogue and the facts its lists gave
//! (`upstream/models/facts.rs`): the unified list `/olla/models` in each of its formats
//! (`unified`, `openai`, `ollama`, `lmstudio`, `vllm`), one model by id or alias
//! (`/olla/models/{id}`), and LM Studio's own v0 list.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::format;
use super::{JSON, merged, models_ollama, models_openai, query_param};
use crate::clock::unix_ms;
use crate::endpoint_type::EndpointType;
use crate::routing::Scope;
use crate::shard::Shard;
use crate::upstream::models::{Catalog, Facts};

/// The formats `?format=` takes.
const FORMATS: &str = "unified, openai, ollama, lmstudio, vllm";

/// One model of the catalogue, its facts merged over the endpoints listing it.
struct View<'c> {
    name: &'c str,
    /// The endpoints listing it, up or down, in configuration order.
    on: Vec<usize>,
    /// Each of those endpoints' state for it ("loaded", "available", ...).
    states: Vec<&'c str>,
    /// The first endpoint's facts, each unknown filled from the next endpoints'.
    facts: Facts,
    /// Bytes on disk, summed over the endpoints.
    disk: u64,
    /// When a list naming it was last read (Unix ms).
    seen_unix_ms: u64,
}

fn views<'c>(catalog: &'c Catalog) -> Vec<View<'c>> {
    catalog
        .models()
        .into_iter()
        .filter_map(|(name, set)| {
            let on: Vec<usize> = (0..catalog.lists.len())
                .filter(|&i| set.contains(i))
                .collect();
            let entries: Vec<_> = on.iter().filter_map(|&i| catalog.entry(i, name)).collect();
            let mut facts = entries.first()?.facts.clone();
            for other in &entries[1..] {
                let o = &other.facts;
                let fill = |mine: &mut Box<str>, theirs: &str| {
                    if mine.is_empty() {
                        *mine = theirs.into();
                    }
                };
                fill(&mut facts.family, &o.family);
                fill(&mut facts.variant, &o.variant);
                fill(&mut facts.quantization, &o.quantization);
                fill(&mut facts.format, &o.format);
                fill(&mut facts.kind, &o.kind);
                fill(&mut facts.publisher, &o.publisher);
                if facts.parameter_size.is_empty() {
                    facts.parameter_size = o.parameter_size.clone();
                    facts.parameter_count = o.parameter_count;
                }
                facts.context_length = facts.context_length.or(o.context_length);
                facts.capabilities = facts.capabilities.union(o.capabilities);
            }
            Some(View {
                name,
                states: entries.iter().map(|m| &*m.facts.state).collect(),
                disk: entries.iter().map(|m| m.facts.size).sum(),
                seen_unix_ms: on
                    .iter()
                    .map(|&i| catalog.seen_unix_ms[i])
                    .max()
                    .unwrap_or(0),
                on,
                facts,
            })
        })
        .collect()
}

/// A model's other names: Ollama's implicit `:latest` tag, and the configured aliases
/// (`[model_aliases]`) that point at it.
fn aliases(shard: &Shard, name: &str) -> Vec<String> {
    let live = shard.live_now();
    let mut names = vec![name.to_string()];
    if let Some(bare) = name.strip_suffix(":latest") {
        names.push(bare.to_string());
    }
    for (alias, targets) in &live.config.model_aliases {
        if targets.iter().any(|t| t == name) && !names.contains(alias) {
            names.push(alias.clone());
        }
    }
    names
}

/// `/olla/models`: the format the query asks for, or a 400 naming the formats.
pub(super) fn list(shard: &Shard, query: &[u8]) -> (StatusCode, &'static [u8], Vec<u8>) {
    let format = query_param(query, b"format").map(decoded);
    let body = match format.as_deref() {
        None | Some("unified") => unified(shard, query),
        Some("openai") => models_openai(shard, Scope::Any),
        // Olla's Ollama and LM Studio formats list only those endpoints' models.
        Some("ollama") => models_ollama(shard, Scope::Ollama),
        Some("lmstudio" | "lm-studio" | "lm_studio") => lmstudio(shard),
        Some("vllm") => vllm(shard),
        Some(other) => {
            let message = format!("unknown format '{other}'; expected one of {FORMATS}");
            let body = crate::api::error_body(&message, "invalid_request_error", "bad_request");
            return (StatusCode::BAD_REQUEST, JSON, body);
        }
    };
    (StatusCode::OK, JSON, to_vec(&body))
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value serializes")
}

/// Olla's unified list: `{"object": "list", "data": [{"id", "object", "owned_by":
/// "olla", "created", "olla": {family, variant, parameter_size, quantization, aliases,
/// availability: [{endpoint, state}], capabilities, max_context_length}}]}`. Models of
/// endpoints that are up only, unless `include_unavailable=true` (then a down endpoint's
/// state is "offline"); filtered by `endpoint` (a name), `family`, `type` (llm, vlm,
/// embeddings) or `capability`, and `available` (loaded somewhere, or not).
fn unified(shard: &Shard, query: &[u8]) -> Value {
    let live = shard.live_now();
    let param = |name: &[u8]| query_param(query, name).map(decoded);
    let include_unavailable = param(b"include_unavailable").as_deref() == Some("true");
    let endpoint = param(b"endpoint");
    let family = param(b"family");
    let kind = param(b"type").or_else(|| {
        param(b"capability").map(|c| {
            match c.to_ascii_lowercase().as_str() {
                "vision" | "multimodal" => "vlm",
                "embedding" | "embeddings" | "vector_search" => "embeddings",
                _ => "llm",
            }
            .to_string()
        })
    });
    let available = param(b"available").map(|a| a == "true");
    let catalog = shard.catalog();
    let eps = &live.upstreams.endpoints;
    let created = unix_ms() / 1000;
    let data: Vec<Value> = views(&catalog)
        .into_iter()
        .filter_map(|v| {
            let shown: Vec<(usize, &str)> =
                v.on.iter()
                    .zip(&v.states)
                    .filter_map(|(&i, &state)| match eps[i].health().is_up() {
                        true => Some((i, state)),
                        false if include_unavailable => Some((i, "offline")),
                        false => None,
                    })
                    .collect();
            if shown.is_empty()
                || endpoint
                    .as_ref()
                    .is_some_and(|e| !shown.iter().any(|&(i, _)| &*eps[i].name == e))
                || family.as_ref().is_some_and(|f| *f != *v.facts.family)
                || kind.as_ref().is_some_and(|k| !is_kind(&v.facts, k))
                || available.is_some_and(|a| a != shown.iter().any(|s| s.1 == "loaded"))
            {
                return None;
            }
            let f = &v.facts;
            let mut olla = json!({
                "family": &*f.family,
                "variant": &*f.variant,
                "parameter_size": &*f.parameter_size,
                "quantization": &*f.quantization,
                "aliases": aliases(shard, v.name),
                "availability": shown.iter().map(|&(i, state)| json!({
                    "endpoint": &*eps[i].name, "state": state,
                })).collect::<Vec<_>>(),
                "capabilities": f.capabilities.names(),
            });
            if let Some(n) = f.context_length {
                olla["max_context_length"] = n.into();
            }
            Some(json!({
                "id": v.name,
                "object": "model",
                "owned_by": "olla",
                "created": created,
                "olla": olla,
            }))
        })
        .collect();
    json!({ "object": "list", "data": data })
}

/// Whether a model is of `kind` (Olla's `type` filter: llm, vlm, embeddings).
fn is_kind(f: &Facts, kind: &str) -> bool {
    let caps = f.capabilities;
    match kind {
        _ if *f.kind == *kind => true,
        "llm" => f.kind.is_empty() && !caps.contains("embeddings") && !caps.contains("vision"),
        "vlm" => caps.contains("vision"),
        "embeddings" | "embedding" => caps.contains("embeddings"),
        _ => false,
    }
}

/// LM Studio's v0 list (`/olla/lmstudio/api/v0/models`, `?format=lmstudio`): the LM
/// Studio endpoints' own entries (the list ringway read is that one), merged by name.
pub(super) fn lmstudio(shard: &Shard) -> Value {
    let available = merged(shard, Scope::Type(EndpointType::LmStudio));
    let catalog = shard.catalog();
    let data: Vec<Value> = available
        .into_iter()
        .map(|(name, on, raw)| {
            let facts = catalog.entry(on[0], &name).map(|m| m.facts.clone());
            let facts = facts.unwrap_or_default();
            let mut entry = match raw {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            let mut default = |key: &str, value: Value| {
                entry.entry(key).or_insert(value);
            };
            default("id", name.clone().into());
            default("object", "model".into());
            let kind = if facts.kind.is_empty() {
                "llm"
            } else {
                &facts.kind
            };
            default("type", kind.into());
            let state = match &*facts.state {
                "unknown" => "not-loaded",
                s => s,
            };
            default("state", state.into());
            for (key, value) in [("arch", &facts.family), ("publisher", &facts.publisher)] {
                if !value.is_empty() {
                    default(key, (**value).into());
                }
            }
            if let Some(n) = facts.context_length {
                default("max_context_length", n.into());
            }
            Value::Object(entry)
        })
        .collect();
    json!({ "object": "list", "data": data })
}

/// Olla's vLLM format: every available model in vLLM's `/v1/models` shape, with
/// `max_model_len` where a list gave the context length.
fn vllm(shard: &Shard) -> Value {
    let created = unix_ms() / 1000;
    let available = merged(shard, Scope::Any);
    let catalog = shard.catalog();
    let data: Vec<Value> = available
        .into_iter()
        .map(|(name, on, _)| {
            let context = on
                .iter()
                .find_map(|&i| catalog.entry(i, &name)?.facts.context_length);
            let mut model = json!({
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": owner(&name),
                "root": name,
                "permission": [{
                    "id": format!("modelperm-olla-{}", name.replace('/', "-")),
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": false,
                    "allow_sampling": true,
                    "allow_logprobs": true,
                    "allow_search_indices": false,
                    "allow_view": true,
                    "allow_fine_tuning": false,
                    "organization": "*",
                    "group": null,
                    "is_blocking": false,
                }],
            });
            if let Some(n) = context {
                model["max_model_len"] = n.into();
            }
            model
        })
        .collect();
    json!({ "object": "list", "data": data })
}

/// The organisation a model id names, as Olla guesses it: the part before a `/`, or a
/// known organisation leading a hyphenated name, else "vllm".
fn owner(id: &str) -> String {
    const KNOWN: [&str; 39] = [
        "openai",
        "anthropic",
        "google",
        "meta",
        "microsoft",
        "amazon",
        "xai",
        "apple",
        "cohere",
        "ai21",
        "databricks",
        "snowflake",
        "ibm",
        "salesforce",
        "nvidia",
        "mistral",
        "qwen",
        "alibaba",
        "deepseek",
        "zhipuai",
        "tii",
        "01ai",
        "baichuan",
        "stability",
        "eleutherai",
        "mosaicml",
        "bigcode",
        "servicenow",
        "cerebras",
        "nomic",
        "huggingface",
        "openrouter",
        "together",
        "replicate",
        "fireworks",
        "perplexity",
        "groq",
        "lmstudio",
        "ollama",
    ];
    if let Some((org, _)) = id.split_once('/') {
        return org.to_string();
    }
    if let Some((first, _)) = id.split_once('-') {
        let lower = first.to_ascii_lowercase();
        if (3..=20).contains(&first.len()) && KNOWN.iter().any(|k| lower.contains(k)) {
            return first.to_string();
        }
    }
    "vllm".into()
}

/// `/olla/models/{id}`: the model with that id or alias, in the shape of Olla's
/// `unifiedModelByAliasHandler` (its `UnifiedModelSummary`), whether its endpoints are
/// up or not; else Olla's plain-text 404. The id is the rest of the path, decoded, so
/// ids with a `/` (`Qwen/Qwen2.5-7B-Instruct`) are found too.
pub(super) fn by_id(shard: &Shard, target: &[u8]) -> (StatusCode, &'static [u8], Vec<u8>) {
    let live = shard.live_now();
    const TEXT: &[u8] = b"text/plain; charset=utf-8";
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let id = decoded(path.strip_prefix(b"/olla/models/").unwrap_or_default());
    if id.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            TEXT,
            b"Model ID or alias required\n".to_vec(),
        );
    }
    let catalog = shard.catalog();
    let views = views(&catalog);
    let found = views
        .iter()
        .find(|v| v.name == id)
        .or_else(|| views.iter().find(|v| aliases(shard, v.name).contains(&id)));
    let Some(v) = found else {
        return (StatusCode::NOT_FOUND, TEXT, b"Model not found\n".to_vec());
    };
    let eps = &live.upstreams.endpoints;
    let name = |i: &usize| &*eps[*i].name;
    let healthy: Vec<&str> =
        v.on.iter()
            .filter(|&&i| eps[i].health().is_up())
            .map(name)
            .collect();
    let unhealthy: Vec<&str> =
        v.on.iter()
            .filter(|&&i| !eps[i].health().is_up())
            .map(name)
            .collect();
    let loaded: Vec<&str> =
        v.on.iter()
            .zip(&v.states)
            .filter(|(_, s)| **s == "loaded")
            .map(|(i, _)| name(i))
            .collect();
    let f = &v.facts;
    let ago = unix_ms().saturating_sub(v.seen_unix_ms);
    let mut summary = json!({
        "id": v.name,
        "family": &*f.family,
        "variant": &*f.variant,
        "parameter_size": &*f.parameter_size,
        "parameter_count": f.parameter_count,
        "quantization": &*f.quantization,
        "format": &*f.format,
        "total_disk_size": format::bytes(v.disk),
        "last_seen": format::time_ago((v.seen_unix_ms > 0).then_some(ago)),
        "aliases": aliases(shard, v.name),
        "endpoints": v.on.iter().map(name).collect::<Vec<_>>(),
        "loaded_endpoints": loaded,
        "capabilities": f.capabilities.names(),
        "availability": {
            "status": match (healthy.len(), unhealthy.len()) {
                (0, _) => "unavailable",
                (_, 0) => "available",
                _ => "partial",
            },
            "healthy_count": healthy.len(),
            "total_endpoints": v.on.len(),
            "healthy_endpoints": healthy,
            "unhealthy_endpoints": unhealthy,
        },
    });
    if let Some(n) = f.context_length {
        summary["max_context_length"] = n.into();
    }
    (StatusCode::OK, JSON, to_vec(&summary))
}

/// A path segment or query value with its `%XX` escapes decoded (and `+` as a space in
/// queries is left alone: model names do not use it).
fn decoded(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < raw.len() {
        match (
            raw[i],
            raw.get(i + 1).and_then(|&b| hex(b)),
            raw.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_decoding() {
        assert_eq!(owner("Qwen/Qwen2.5-7B-Instruct"), "Qwen");
        assert_eq!(owner("meta-llama-3-8b"), "meta");
        assert_eq!(owner("llama3.2:latest"), "vllm");
        assert_eq!(owner("mistral-7b-instruct"), "mistral");
        assert_eq!(decoded(b"Qwen%2FQwen2.5-7B"), "Qwen/Qwen2.5-7B");
        assert_eq!(decoded(b"llama3.2%3alatest"), "llama3.2:latest");
        assert_eq!(decoded(b"100%"), "100%");
        assert_eq!(decoded(b"%zz%4"), "%zz%4");
    }
}
