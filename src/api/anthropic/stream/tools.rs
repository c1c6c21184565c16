//! The tool calls of a stream: each OpenAI `tool_calls[i]` becomes a `tool_use` block,
//! opened once its name is known. Only one block is open at a time, so a call that
//! arrives while another call's arguments are still incomplete is held (its arguments
//! buffered, within `MAX_HELD`) until they are complete, and then sent whole.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{self, Str};
use super::{MAX_HELD, Open, StreamTranslator, TOOL_CALL_COST, block_delta, event};
use crate::api::anthropic::errors::ErrorType;
use crate::api::anthropic::response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallState {
    /// No block yet (no name yet, or another block is open): arguments held.
    Held,
    Live,
    Closed,
}

pub(super) struct ToolCall {
    /// The backend's `index`.
    pub(super) index: u32,
    /// The backend's `id` (empty until it sends one).
    pub(super) id: String,
    pub(super) name: String,
    /// Its content block's index, once opened.
    pub(super) block: u32,
    pub(super) state: CallState,
    /// Arguments that arrived before its block opened.
    pub(super) held: String,
    pub(super) shape: JsonShape,
}

impl StreamTranslator {
    pub(super) fn tool_call(&mut self, call: ToolCallDelta<'_>, out: &mut Vec<u8>) {
        let id = call.id.as_deref().filter(|s| !s.is_empty());
        let slot = match call.index {
            Some(index) => self.tools.iter().position(|t| t.index == index),
            // No index: the call with this id, or the latest call continues.
            None => match id {
                Some(id) => self.tools.iter().position(|t| t.id == id),
                None => self.tools.len().checked_sub(1),
            },
        };
        let slot = match slot {
            Some(slot) => slot,
            None => {
                let index = call.index.unwrap_or(self.tools.len() as u32);
                self.tools.push(ToolCall {
                    index,
                    id: String::new(),
                    name: String::new(),
                    block: 0,
                    state: CallState::Held,
                    held: String::new(),
                    shape: JsonShape::default(),
                });
                self.held += TOOL_CALL_COST;
                self.tools.len() - 1
            }
        };
        let function = call.function.unwrap_or_default();
        let arguments = function.arguments.map(|raw| {
            // A string of JSON (OpenAI), or the JSON itself (some backends).
            serde_json::from_str::<Str<'_>>(raw.get()).unwrap_or_else(|_| Str(raw.get().into()))
        });
        let arguments = arguments.as_deref().unwrap_or("");
        let t = &mut self.tools[slot];
        if let (true, Some(id)) = (t.id.is_empty(), id) {
            t.id.push_str(id);
            self.held += id.len();
        }
        if let (true, Some(name)) = (t.name.is_empty(), function.name.as_deref()) {
            t.name.push_str(name);
            self.held += name.len();
        }
        match t.state {
            CallState::Held => {
                t.held.push_str(arguments);
                t.shape.feed(arguments);
                self.held += arguments.len();
            }
            CallState::Live => {
                if !arguments.is_empty() {
                    block_delta(out, t.block, "input_json_delta", "partial_json", arguments);
                    t.shape.feed(arguments);
                }
            }
            CallState::Closed => {
                if !arguments.trim_ascii().is_empty() {
                    let message = format!(
                        "tool call {} received arguments after its block was closed",
                        t.index
                    );
                    return self.error(ErrorType::Api, &message, out);
                }
            }
        }
        self.produced += arguments.len();
        if self.held > MAX_HELD {
            let message = format!("tool calls exceeded {MAX_HELD} bytes of held state");
            return self.error(ErrorType::Api, &message, out);
        }
        self.promote(out);
    }

    /// Opens held tool calls' blocks while nothing needs the open block to stay open:
    /// no tool call is open, or the open one's arguments are complete.
    fn promote(&mut self, out: &mut Vec<u8>) {
        loop {
            if let Open::Tool(s) = self.open {
                if !self.tools[s].shape.complete() {
                    return;
                }
            }
            let next = self
                .tools
                .iter()
                .position(|t| t.state == CallState::Held && !t.name.is_empty());
            let Some(next) = next else {
                return;
            };
            self.close_open(out);
            self.open_tool(next, out);
        }
    }

    /// Opens a tool call's block and sends the arguments held for it.
    fn open_tool(&mut self, slot: usize, out: &mut Vec<u8>) {
        let block = self.next_block();
        // A call without an id yet gets one for the client, but `t.id` stays the
        // backend's: an id the backend sends later is still how its deltas without an
        // `index` find the call.
        let made_up = self.tools[slot]
            .id
            .is_empty()
            .then(|| response::tool_id(&self.message_id, slot));
        let t = &mut self.tools[slot];
        t.block = block;
        t.state = CallState::Live;
        event(out, "content_block_start");
        out.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
        json::push_u64(out, u64::from(block));
        out.extend_from_slice(b",\"content_block\":{\"type\":\"tool_use\",\"id\":");
        json::push_str(out, made_up.as_deref().unwrap_or(&t.id));
        out.extend_from_slice(b",\"name\":");
        json::push_str(out, &t.name);
        out.extend_from_slice(b",\"input\":{}}}\n\n");
        let held = std::mem::take(&mut t.held);
        if !held.is_empty() {
            block_delta(out, block, "input_json_delta", "partial_json", &held);
        }
        self.held -= held.len();
        self.open = Open::Tool(slot);
    }

    /// Sends every held tool call that has a name, each as a whole block (before another
    /// kind of block opens, and at the end). Calls that never got a name are dropped, as
    /// in Olla (which also wants an id).
    pub(super) fn flush_held(&mut self, out: &mut Vec<u8>) {
        while let Some(s) = self
            .tools
            .iter()
            .position(|t| t.state == CallState::Held && !t.name.is_empty())
        {
            self.open_tool(s, out);
            self.close_open(out);
        }
    }
}

/// Whether a tool call's arguments, fed piece by piece, are a whole JSON value yet: an
/// object or array closed at depth zero, outside any string.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct JsonShape {
    depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
}

impl JsonShape {
    pub(super) fn feed(&mut self, s: &str) {
        for &b in s.as_bytes() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    pub(super) fn complete(&self) -> bool {
        self.started && self.depth == 0 && !self.in_string
    }
}

#[derive(Deserialize)]
pub(super) struct ToolCallDelta<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Default, Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests;
