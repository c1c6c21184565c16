//! OpenAI `chat.completion` body → Anthropic `message` body, for a request that did not
//! stream: run once, on the backend's whole (successful) answer, before relaying it.
//!
//! The first choice becomes the message: the backend's reasoning (`reasoning`, as
//! Ollama, LM Studio and Lemonade name it, or `reasoning_content`, as vLLM, SGLang and
//! DeepSeek do) a `thinking` block (without Anthropic's signature, which local models
//! cannot make), the text a `text` block, each tool call a `tool_use` block; an answer
//! with none of them has one empty `text` block (Olla). Tool arguments that are not a
//! JSON object become `{}`, as in Olla (the backend's text is lost either way; a client
//! cannot run a tool on input that does not parse).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use super::json::{self, First, Str};
use super::shape::Content;
use super::{TranslateError, errors};

/// Appends the Anthropic message for an OpenAI completion `body`; `model` is the model
/// the client asked for, which the message names (Olla names the backend's).
pub(crate) fn from_openai(
    body: &[u8],
    model: &str,
    out: &mut Vec<u8>,
) -> Result<(), TranslateError> {
    let completion: Completion<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("invalid OpenAI response: {e}")))?;
    let Some(choice) = completion.choices.0 else {
        if completion.error.is_some() || completion.object.as_deref() == Some("error") {
            let (kind, message) = errors::from_openai_body(None, body);
            return Err(TranslateError {
                kind,
                ..TranslateError::upstream(message)
            });
        }
        return Err(TranslateError::upstream("no choices in OpenAI response"));
    };
    let message = choice
        .message
        .ok_or_else(|| TranslateError::upstream("no message in choice"))?;
    let id = super::message_id(completion.id.as_deref(), body);

    out.extend_from_slice(b"{\"id\":");
    json::push_str(out, &id);
    out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    json::push_str(out, model);
    out.extend_from_slice(b",\"content\":[");
    let start = out.len();
    let mut produced = 0;
    let reasoning = message.reasoning.or(message.reasoning_content);
    if let Some(thinking) = reasoning.as_deref().filter(|r| !r.is_empty()) {
        out.extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":");
        json::push_str(out, thinking);
        out.push(b'}');
        produced += thinking.len();
    }
    if let Some(content) = message
        .content
        .as_ref()
        .filter(|c| c.texts().any(|t| !t.is_empty()))
    {
        if out.len() > start {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"");
        for text in content.texts() {
            json::push_str_contents(out, text);
            produced += text.len();
        }
        out.extend_from_slice(b"\"}");
    }
    let mut used_tools = false;
    let calls = message.tool_calls.iter().flatten();
    for (i, (call, function)) in calls
        .filter_map(|c| Some((c, c.function.as_ref()?)))
        .enumerate()
    {
        if out.len() > start {
            out.push(b',');
        }
        used_tools = true;
        out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
        match call.id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => json::push_str(out, id),
            None => json::push_str(out, &tool_id(&id, i)),
        }
        out.extend_from_slice(b",\"name\":");
        json::push_str(out, function.name.as_deref().unwrap_or(""));
        out.extend_from_slice(b",\"input\":");
        produced += push_input(out, function.arguments);
        out.push(b'}');
    }
    if out.len() == start {
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}");
    }
    let matched = choice.stop_reason.or(choice.matched_stop).and_then(|m| m.0);
    let (reason, sequence) = stop_reason(
        choice.finish_reason.as_deref(),
        matched.as_deref(),
        used_tools,
    );
    out.extend_from_slice(b"],\"stop_reason\":\"");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\",\"stop_sequence\":");
    json::push_opt_str(out, sequence);
    out.extend_from_slice(b",\"usage\":");
    let usage = completion.usage.unwrap_or_default();
    push_usage(out, usage.counts(0, produced));
    out.push(b'}');
    Ok(())
}

/// An id for a tool call the backend sent without one (Anthropic clients answer a
/// `tool_use` by its id): the message's, and the call's position.
pub(super) fn tool_id(message_id: &str, i: usize) -> String {
    let stem = message_id.strip_prefix("msg_").unwrap_or(message_id);
    format!("toolu_{stem}_{i}")
}

/// Writes a tool call's `arguments` as the `input` object: a JSON object, in a string
/// (OpenAI) or as it is (some backends), verbatim; anything else `{}`. Returns the bytes
/// of arguments seen, for the output estimate.
fn push_input(out: &mut Vec<u8>, arguments: Option<&RawValue>) -> usize {
    let Some(raw) = arguments else {
        out.extend_from_slice(b"{}");
        return 0;
    };
    let text = match serde_json::from_str::<Str<'_>>(raw.get()) {
        Ok(s) => s,
        Err(_) => Str(raw.get().into()),
    };
    match serde_json::from_str::<&RawValue>(&text) {
        Ok(object) if object.get().starts_with('{') => {
            out.extend_from_slice(object.get().as_bytes())
        }
        _ => out.extend_from_slice(b"{}"),
    }
    text.len()
}

/// Anthropic's `stop_reason` (and `stop_sequence`) for an OpenAI `finish_reason`: `stop`
/// → `end_turn`, or `stop_sequence` when the backend names the stop string it matched
/// (vLLM's `stop_reason`, SGLang's `matched_stop`); `length` → `max_tokens`;
/// `tool_calls` and `function_call` → `tool_use`; anything else → `end_turn` (Olla).
/// An answer with tool calls is `tool_use` whatever the backend says (Ollama has said
/// `stop`): clients run tools on that reason.
pub(super) fn stop_reason<'s>(
    finish: Option<&str>,
    matched: Option<&'s str>,
    used_tools: bool,
) -> (&'static str, Option<&'s str>) {
    match finish {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        _ if used_tools => ("tool_use", None),
        Some("stop") if matched.is_some() => ("stop_sequence", matched),
        _ => ("end_turn", None),
    }
}

/// OpenAI's token counts (`include_usage` puts them on a stream's last chunk).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct Usage {
    pub(super) prompt_tokens: Option<u64>,
    pub(super) completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

/// Anthropic's token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) input: u64,
    pub(super) output: u64,
    pub(super) cache_read: u64,
}

impl Usage {
    /// Anthropic's counts for OpenAI's: `input` is the prompt less its cached part
    /// (Anthropic counts cache reads apart), `cache_read` the cached part. Without
    /// counts: `input_estimate`, and a quarter of the `produced` bytes as output (at
    /// least 1 when anything was produced), as Olla estimates a stream's output.
    pub(super) fn counts(&self, input_estimate: u64, produced: usize) -> Counts {
        let cache_read = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        let input = self
            .prompt_tokens
            .map_or(input_estimate, |p| p.saturating_sub(cache_read));
        let output = match self.completion_tokens.unwrap_or(0) {
            0 if produced > 0 => (produced as u64 / 4).max(1),
            n => n,
        };
        Counts {
            input,
            output,
            cache_read,
        }
    }
}

/// Writes Anthropic's `usage` object.
pub(super) fn push_usage(out: &mut Vec<u8>, counts: Counts) {
    out.extend_from_slice(b"{\"input_tokens\":");
    json::push_u64(out, counts.input);
    out.extend_from_slice(b",\"output_tokens\":");
    json::push_u64(out, counts.output);
    out.extend_from_slice(b",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":");
    json::push_u64(out, counts.cache_read);
    out.push(b'}');
}

/// The stop string a backend says it matched; a token id (vLLM and SGLang also report
/// those) is no stop sequence.
#[derive(Debug, Default)]
pub(super) struct MatchedStop<'a>(pub(super) Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for MatchedStop<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MatchedStop<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stop string or a token id")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MatchedStop(Some(Str(v.into()))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MatchedStop(Some(Str(v.to_owned().into()))))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MatchedStop(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MatchedStop(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MatchedStop(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    object: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: First<Choice<'a>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: Option<ChoiceMessage<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
    #[serde(borrow)]
    stop_reason: Option<MatchedStop<'a>>,
    #[serde(borrow)]
    matched_stop: Option<MatchedStop<'a>>,
}

#[derive(Deserialize)]
struct ChoiceMessage<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    reasoning: Option<Str<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Str<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests;
