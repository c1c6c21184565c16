//! Anthropic `POST /v1/messages` body → OpenAI `POST /v1/chat/completions` body: run once
//! per request, before forwarding.
//!
//! What maps where:
//!
//! - `system` (a string or text blocks, joined without a separator, as Olla does) → the
//!   first message, `role: "system"`.
//! - A user turn → its `tool_result` blocks first, each a `role: "tool"` message with
//!   `tool_call_id` (OpenAI backends reject anything between an assistant's `tool_calls`
//!   and their results), then one user message: its text blocks joined (Olla), or, when
//!   it has images, content parts in order (`text`, and `image_url` with a `data:` URL for
//!   base64 sources or the URL itself). A result's content is its text (blocks joined by
//!   newlines), prefixed `Error: ` when `is_error` (Olla: OpenAI has no such flag); images
//!   in a result go to the user message that follows.
//! - An assistant turn → one message: its text joined, and its `tool_use` blocks as
//!   `tool_calls` (ids kept, `input` as the `arguments` string, verbatim); `content`
//!   null when there is no text. Empty turns are skipped (Olla).
//! - `tools` → `function` tools (`input_schema` verbatim as `parameters`); `tool_choice`
//!   `auto`/`any`/`none`/`tool` → `auto`/`required`/`none`/`{"type":"function",...}`, and
//!   `disable_parallel_tool_use` → `parallel_tool_calls: false`.
//! - `max_tokens`, `temperature`, `top_p` as they are; `stop_sequences` → `stop`;
//!   `metadata.user_id` → `user`; `top_k` as an extra field where the backend takes it
//!   ([`Options::top_k`]); `stream: true` → also `stream_options.include_usage`, so the
//!   stream ends with real token counts.
//!
//! Dropped, never an error (Claude Code sends most of them; a 400 would break it):
//! `thinking`, `betas`, `cache_control` (anywhere), `citations`, `service_tier`,
//! `container`, `mcp_servers`, `context_management`, `output_config`, and any other
//! unknown field; `thinking`/`redacted_thinking`, `document`, `search_result` and server
//! tool blocks in messages; tools with a `type` other than `custom` (Anthropic's server
//! and schema-less built-in tools: `web_search_*`, `bash_*`, `text_editor_*`, ...), which
//! an OpenAI backend cannot run; images with a `file` source.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::TranslateError;
use super::json::{self, Str};
use super::shape::{Block, Content, Message, Request, Tool};
use crate::endpoint_type::EndpointType;

/// What the backend's API takes beyond OpenAI's own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Send `top_k`, which OpenAI's API itself rejects ("Unrecognized request argument")
    /// but vLLM, SGLang, llama.cpp's server and LM Studio take (Ollama's `/v1` ignores
    /// it). Olla never sends it.
    pub(crate) top_k: bool,
    /// Ask a stream for its usage (`stream_options.include_usage`), which every backend
    /// ringway knows takes; without it the output tokens are estimated.
    pub(crate) stream_usage: bool,
}

impl Default for Options {
    /// What any OpenAI-compatible API takes.
    fn default() -> Self {
        Options {
            top_k: false,
            stream_usage: true,
        }
    }
}

impl Options {
    pub(crate) fn for_endpoint(kind: EndpointType) -> Options {
        let top_k = matches!(
            kind,
            EndpointType::Vllm
                | EndpointType::Sglang
                | EndpointType::LlamaCpp
                | EndpointType::LmStudio
                | EndpointType::Ollama
        );
        Options {
            top_k,
            ..Options::default()
        }
    }
}

/// What the rest of the request's handling needs to know of a translated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Translated {
    /// The `model` asked for: routing's key, and the `model` of the answer.
    pub(crate) model: String,
    /// `stream: true`: the answer is translated with a `StreamTranslator`.
    pub(crate) stream: bool,
    /// Tools were offered to the backend.
    pub(crate) tools: bool,
    /// The local estimate of the prompt's tokens (`count`), for `message_start` before
    /// the backend reports its count at the end of the stream (as Olla seeds it).
    pub(crate) input_tokens: u64,
}

/// Appends the OpenAI chat-completions body for the Anthropic `body` to `out` (nothing
/// when the body is invalid: no JSON, no `model`, no `messages`, a field of the wrong
/// type, a value out of Olla's ranges).
pub(crate) fn to_openai(
    body: &[u8],
    opts: &Options,
    out: &mut Vec<u8>,
) -> Result<Translated, TranslateError> {
    let req: Request<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::client(format!("invalid request body: {e}")))?;
    let checked = check(&req)?;
    let tools: Vec<&Tool<'_>> = req.tools.iter().flatten().filter(|t| t.usable()).collect();
    let tool_choice = match (&req.tool_choice, tools.is_empty()) {
        (Some(raw), false) => Some(ToolChoice::parse(raw)?),
        _ => None,
    };

    out.extend_from_slice(b"{\"model\":");
    json::push_str(out, checked.model);
    out.extend_from_slice(b",\"messages\":[");
    let list = List::new(out.len());
    if let Some(system) = &req.system {
        if system.has_text() {
            list.next(out);
            out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
            system.push_joined_text(out);
            out.push(b'}');
        }
    }
    for message in checked.messages {
        message.write(&list, out);
    }
    out.extend_from_slice(b"],\"max_tokens\":");
    json::push_u64(out, checked.max_tokens);
    for (key, value) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if let Some(x) = value {
            out.extend_from_slice(format!(",\"{key}\":").as_bytes());
            json::push_f64(out, x);
        }
    }
    if let (Some(k), true) = (req.top_k, opts.top_k) {
        out.extend_from_slice(b",\"top_k\":");
        json::push_u64(out, k as u64);
    }
    if let Some(stops) = req.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        out.extend_from_slice(b",\"stop\":[");
        for (i, stop) in stops.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::push_str(out, stop);
        }
        out.push(b']');
    }
    let stream = req.stream.unwrap_or(false);
    if stream {
        out.extend_from_slice(b",\"stream\":true");
        if opts.stream_usage {
            out.extend_from_slice(b",\"stream_options\":{\"include_usage\":true}");
        }
    }
    if !tools.is_empty() {
        out.extend_from_slice(b",\"tools\":[");
        for (i, tool) in tools.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            tool.write(out);
        }
        out.push(b']');
    }
    if let Some(choice) = tool_choice {
        choice.write(out);
    }
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.user_id.as_deref()) {
        if !user.is_empty() {
            out.extend_from_slice(b",\"user\":");
            json::push_str(out, user);
        }
    }
    out.push(b'}');
    Ok(Translated {
        model: checked.model.to_owned(),
        stream,
        tools: !tools.is_empty(),
        input_tokens: super::count::estimate(&req),
    })
}

/// The parts of a request that must be there, with Olla's checks and messages.
struct Checked<'r, 'a> {
    model: &'r str,
    messages: &'r [Message<'a>],
    max_tokens: u64,
}

fn check<'r, 'a>(req: &'r Request<'a>) -> Result<Checked<'r, 'a>, TranslateError> {
    let model = req.model.as_deref().filter(|m| !m.is_empty());
    let model = model.ok_or_else(|| TranslateError::client("model field is required"))?;
    let messages = req.messages.as_deref().filter(|m| !m.is_empty());
    let messages =
        messages.ok_or_else(|| TranslateError::client("at least one message is required"))?;
    if let Some(i) = messages.iter().position(|m| m.role.is_none()) {
        return Err(TranslateError::client(format!(
            "messages.{i}.role: field required"
        )));
    }
    // Anthropic's word for a missing one; Olla's for one out of range.
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| TranslateError::client("max_tokens: field required"))?;
    if max_tokens < 1 {
        return Err(TranslateError::client(format!(
            "max_tokens must be at least 1, got {max_tokens}"
        )));
    }
    let out_of = |name: &str, x: f64, max: f64| {
        TranslateError::client(format!("{name} must be between 0 and {max}, got {x}"))
    };
    match (req.temperature, req.top_p) {
        (Some(t), _) if !(0.0..=2.0).contains(&t) => return Err(out_of("temperature", t, 2.0)),
        (_, Some(p)) if !(0.0..=1.0).contains(&p) => return Err(out_of("top_p", p, 1.0)),
        _ => {}
    }
    if let Some(k) = req.top_k.filter(|k| *k < 0) {
        return Err(TranslateError::client(format!(
            "top_k must be non-negative, got {k}"
        )));
    }
    Ok(Checked {
        model,
        messages,
        max_tokens: max_tokens as u64,
    })
}

/// Separates the elements of a JSON array being written.
struct List {
    start: usize,
}

impl List {
    fn new(start: usize) -> List {
        List { start }
    }

    /// Writes the comma before an element, unless it is the first one.
    fn next(&self, out: &mut Vec<u8>) {
        if out.len() > self.start {
            out.push(b',');
        }
    }
}

impl Message<'_> {
    fn write(&self, list: &List, out: &mut Vec<u8>) {
        let role = self.role.as_deref().unwrap_or("user");
        match &self.content {
            Some(Content::Text(text)) if !text.is_empty() => {
                list.next(out);
                out.extend_from_slice(b"{\"role\":");
                json::push_str(out, role);
                out.extend_from_slice(b",\"content\":");
                json::push_str(out, text);
                out.push(b'}');
            }
            None | Some(Content::Text(_)) => {}
            Some(content) if role == "assistant" => write_assistant(content.blocks(), list, out),
            Some(content) => write_user(role, content.blocks(), list, out),
        }
    }
}

/// An assistant turn: text joined, `tool_use` blocks (with an id and a name, as Olla
/// requires) as `tool_calls`.
fn write_assistant(blocks: &[Block<'_>], list: &List, out: &mut Vec<u8>) {
    let calls = || {
        blocks.iter().filter(|b| {
            b.kind() == "tool_use"
                && b.id.as_deref().is_some_and(|s| !s.is_empty())
                && b.name.as_deref().is_some_and(|s| !s.is_empty())
        })
    };
    let has_text = blocks.iter().filter_map(Block::text).any(|t| !t.is_empty());
    if !has_text && calls().next().is_none() {
        return;
    }
    list.next(out);
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    if has_text {
        out.push(b'"');
        for text in blocks.iter().filter_map(Block::text) {
            json::push_str_contents(out, text);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(b"null");
    }
    if calls().next().is_some() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (i, call) in calls().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            json::push_str(out, call.id.as_deref().unwrap_or(""));
            out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            json::push_str(out, call.name.as_deref().unwrap_or(""));
            out.extend_from_slice(b",\"arguments\":");
            json::push_str(out, call.input.map_or("{}", RawValue::get));
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// A user (or any non-assistant) turn: its tool results as `tool` messages, then its
/// text and images as one message.
fn write_user(role: &str, blocks: &[Block<'_>], list: &List, out: &mut Vec<u8>) {
    let mut images: Vec<Cow<'_, str>> = Vec::new();
    for result in blocks.iter().filter(|b| b.kind() == "tool_result") {
        let mut text = String::new();
        if let Some(content) = &result.content {
            for (i, piece) in content.texts().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                text.push_str(piece);
            }
            images.extend(content.blocks().iter().filter_map(Block::image_url));
        }
        let prefixed = result.is_error == Some(true)
            && !text
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("error"));
        list.next(out);
        out.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
        json::push_str(out, result.tool_use_id.as_deref().unwrap_or(""));
        out.extend_from_slice(b",\"content\":\"");
        if prefixed {
            out.extend_from_slice(b"Error: ");
        }
        json::push_str_contents(out, &text);
        out.extend_from_slice(b"\"}");
    }
    let has_image = !images.is_empty() || blocks.iter().any(|b| b.image_url().is_some());
    let has_text = blocks.iter().filter_map(Block::text).any(|t| !t.is_empty());
    if !has_text && !has_image {
        return;
    }
    list.next(out);
    out.extend_from_slice(b"{\"role\":");
    json::push_str(out, role);
    out.extend_from_slice(b",\"content\":");
    if !has_image {
        out.push(b'"');
        for text in blocks.iter().filter_map(Block::text) {
            json::push_str_contents(out, text);
        }
        out.extend_from_slice(b"\"}");
        return;
    }
    let parts = List::new(out.len() + 1);
    out.push(b'[');
    let push_image = |out: &mut Vec<u8>, url: &str| {
        parts.next(out);
        out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
        json::push_str(out, url);
        out.extend_from_slice(b"}}");
    };
    for url in &images {
        push_image(out, url);
    }
    for block in blocks {
        if let Some(text) = block.text().filter(|t| !t.is_empty()) {
            parts.next(out);
            out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
            json::push_str(out, text);
            out.push(b'}');
        } else if let Some(url) = block.image_url() {
            push_image(out, &url);
        }
    }
    out.extend_from_slice(b"]}");
}

impl Tool<'_> {
    /// A tool an OpenAI backend can be offered: a custom tool (no `type`, or `custom`)
    /// with a name.
    fn usable(&self) -> bool {
        matches!(self.kind.as_deref(), None | Some("custom"))
            && self.name.as_deref().is_some_and(|n| !n.is_empty())
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
        json::push_str(out, self.name.as_deref().unwrap_or(""));
        if let Some(description) = &self.description {
            out.extend_from_slice(b",\"description\":");
            json::push_str(out, description);
        }
        if let Some(schema) = self.input_schema.filter(|s| s.get() != "null") {
            out.extend_from_slice(b",\"parameters\":");
            out.extend_from_slice(schema.get().as_bytes());
        }
        out.extend_from_slice(b"}}");
    }
}

/// Anthropic's `tool_choice`, read as Olla reads it: the object form, or a bare string;
/// anything unknown means `auto`.
#[derive(Debug, PartialEq, Eq)]
enum ToolChoice<'a> {
    Auto { parallel: bool },
    Required { parallel: bool },
    None,
    Function { name: Str<'a>, parallel: bool },
}

#[derive(Deserialize)]
struct ToolChoiceObject<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    disable_parallel_tool_use: Option<bool>,
}

impl<'a> ToolChoice<'a> {
    fn parse(raw: &'a RawValue) -> Result<ToolChoice<'a>, TranslateError> {
        let (kind, name, parallel) = match serde_json::from_str::<Str<'a>>(raw.get()) {
            Ok(s) => (Some(s), None, true),
            Err(_) => match serde_json::from_str::<ToolChoiceObject<'a>>(raw.get()) {
                Ok(o) => (o.kind, o.name, o.disable_parallel_tool_use != Some(true)),
                Err(_) => (None, None, true),
            },
        };
        Ok(match kind.as_deref() {
            Some("any") => ToolChoice::Required { parallel },
            Some("none") => ToolChoice::None,
            Some("tool") => ToolChoice::Function {
                name: name.ok_or_else(|| {
                    TranslateError::client("tool_choice type 'tool' requires 'name' field")
                })?,
                parallel,
            },
            _ => ToolChoice::Auto { parallel },
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"tool_choice\":");
        let parallel = match self {
            ToolChoice::Auto { parallel } => {
                out.extend_from_slice(b"\"auto\"");
                *parallel
            }
            ToolChoice::Required { parallel } => {
                out.extend_from_slice(b"\"required\"");
                *parallel
            }
            ToolChoice::None => {
                out.extend_from_slice(b"\"none\"");
                true
            }
            ToolChoice::Function { name, parallel } => {
                out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
                json::push_str(out, name);
                out.extend_from_slice(b"}}");
                *parallel
            }
        };
        if !parallel {
            out.extend_from_slice(b",\"parallel_tool_calls\":false");
        }
    }
}

#[cfg(test)]
mod tests;
