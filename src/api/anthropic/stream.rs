//! A backend's OpenAI SSE stream → Anthropic's SSE events, chunk by chunk, as the relay
//! phase forwards it: each `data:` line is translated as soon as its newline arrives, in
//! whatever pieces the bytes come (a line, or a UTF-8 character, may span feeds).
//!
//! The events, in order:
//!
//! ```text
//! message_start                          first chunk (the backend's id → message id)
//! ┌ content_block_start  (index n)       thinking ← reasoning / reasoning_content
//! │ content_block_delta  (index n)...    text     ← content
//! └ content_block_stop   (index n)       tool_use ← tool_calls[i] (input_json_delta)
//! ...one block open at a time
//! message_delta                          [DONE] (or finish(), if the backend never
//! message_stop                           sent it): stop_reason, usage
//! ```
//!
//! A block stays open while deltas of its kind keep coming; a delta of another kind
//! closes it and opens the next (Olla). Tool calls are told apart by their `index`; a
//! tool call's block opens once its name is known. When a backend interleaves two
//! calls' arguments, the first stays the open block and the second's arguments are
//! held until the first's arguments are a complete JSON value (or the message ends),
//! then sent whole: every block's deltas stay together, as Anthropic clients expect.
//! (Olla ends the stream with an error instead.) Arguments for a call whose block was
//! already closed end the stream with an `error` event (Olla: corrupt tool input is
//! worse than a failed stream).
//!
//! An error chunk from the backend (`data: {"error":...}`) becomes an `error` event,
//! which ends the stream (no `message_stop` follows an error). Lines that are not JSON
//! are skipped and counted (Olla skips them).
//!
//! Memory is bounded: a line longer than [`MAX_LINE`] and tool-call state beyond
//! [`MAX_HELD`] end the stream with an `error` event (Olla: its scanner's 1 MiB line
//! limit ends the stream). Text is not kept, only its length (for the output estimate).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::errors::{self, ErrorType};
use super::json::{self, First, Str};
use super::response::{self, Counts, MatchedStop, Usage};
use super::shape::Content;
use tools::{CallState, ToolCall, ToolCallDelta};

/// The longest SSE line taken from a backend (a tool call's arguments can arrive in one
/// line; Olla's limit).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The most tool-call state kept: ids, names, and the arguments of calls held back
/// while another call's block is open.
pub(crate) const MAX_HELD: usize = 1 << 20;

/// What one tool call's bookkeeping counts against [`MAX_HELD`], besides its strings.
const TOOL_CALL_COST: usize = 64;

/// The line buffer's capacity kept between lines; a longer line's buffer is freed.
const LINE_KEPT: usize = 64 << 10;

/// One stream's translation state: feed it the backend's bytes, send what it writes.
pub(crate) struct StreamTranslator {
    model: String,
    /// What a message id is derived from when no chunk gave one (`with_seed`).
    seed: u64,
    input_estimate: u64,
    message_id: String,
    phase: Phase,
    /// An `error` event ended it.
    failed: bool,
    /// The start of a line whose newline has not arrived yet.
    line: Vec<u8>,
    open: Open,
    /// The index of the next content block.
    blocks: u32,
    tools: Vec<ToolCall>,
    /// Bytes of tool-call state, against `MAX_HELD`.
    held: usize,
    finish_reason: Option<&'static str>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
    /// Bytes of text, reasoning and tool arguments sent: the output estimate's basis.
    produced: usize,
    skipped: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No chunk yet: `message_start` not written.
    Waiting,
    Streaming,
    /// `message_stop` or an `error` written: the rest is ignored.
    Done,
}

/// The open content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text(u32),
    Thinking(u32),
    /// A tool call's block (its position in `tools`).
    Tool(usize),
}

impl StreamTranslator {
    /// A translator for one stream: `model` as the client asked for it,
    /// `input_estimate` the request's estimated prompt tokens (`Translated`), reported
    /// until the backend's usage arrives.
    pub(crate) fn new(model: &str, input_estimate: u64) -> StreamTranslator {
        StreamTranslator {
            model: model.to_owned(),
            seed: xxhash_rust::xxh3::xxh3_64(model.as_bytes()),
            input_estimate,
            message_id: String::new(),
            phase: Phase::Waiting,
            failed: false,
            line: Vec::new(),
            open: Open::None,
            blocks: 0,
            tools: Vec::new(),
            held: 0,
            finish_reason: None,
            stop_sequence: None,
            usage: None,
            produced: 0,
            skipped: 0,
        }
    }

    /// Seeds the message id used when the message starts before any chunk (a `ping`, or
    /// a stream without chunks) with `seed`: the request's id, so ids do not repeat.
    pub(crate) fn with_seed(mut self, seed: &[u8]) -> StreamTranslator {
        self.seed = xxhash_rust::xxh3::xxh3_64(seed);
        self
    }

    /// Translates the next bytes of the backend's stream, appending whatever events they
    /// complete to `out`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while self.phase != Phase::Done {
            let Some(nl) = memchr::memchr(b'\n', bytes) else {
                if self.line.len() + bytes.len() > MAX_LINE {
                    return self.line_too_long(out);
                }
                self.line.extend_from_slice(bytes);
                return;
            };
            let head = &bytes[..nl];
            bytes = &bytes[nl + 1..];
            if self.line.len() + head.len() > MAX_LINE {
                return self.line_too_long(out);
            }
            if self.line.is_empty() {
                self.on_line(head, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.on_line(&line, out);
                line.clear();
                if line.capacity() <= LINE_KEPT {
                    self.line = line;
                }
            }
        }
    }

    /// The backend's stream ended: translates a last line without its newline, and ends
    /// the message if `[DONE]` did not (Olla ends it the same way).
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Done {
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.on_line(&line, out);
        if self.phase != Phase::Done {
            self.end(out);
        }
    }

    /// The backend's stream broke (reset, timeout, bad framing): ends the client's with
    /// an `api_error` event.
    pub(crate) fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.phase != Phase::Done {
            self.error(ErrorType::Api, message, out);
        }
    }

    /// A `ping` event, for the caller to send while the backend is silent (prefill).
    /// Before the first chunk, `message_start` goes first (Anthropic's clients expect it
    /// to open the stream); its id then comes from the seed, not the backend.
    pub(crate) fn ping(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Waiting {
            self.start_seeded(out);
        }
        if self.phase != Phase::Done {
            out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        }
    }

    /// An `error` event ended the stream.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// `message_stop` or an `error` has been written.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Lines skipped because they were not JSON, for the access log.
    pub(crate) fn skipped(&self) -> u32 {
        self.skipped
    }

    /// The (input, output) tokens the message reports (so far), for the access log.
    pub(crate) fn tokens(&self) -> (u64, u64) {
        let counts = self.counts();
        (counts.input + counts.cache_read, counts.output)
    }

    fn counts(&self) -> Counts {
        let usage = self.usage.unwrap_or_default();
        usage.counts(self.input_estimate, self.produced)
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Only `data:` lines carry anything; comments, `event:` and blank lines do not.
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        match data.trim_ascii() {
            b"" => {}
            b"[DONE]" => self.end(out),
            data => self.on_chunk(data, out),
        }
    }

    fn on_chunk(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            self.skipped += 1;
            return;
        };
        // `{"error":...}`, or vLLM's older flat `{"object":"error","message":...}`.
        if chunk.error.is_some() || chunk.object.as_deref() == Some("error") {
            let (kind, message) = errors::from_openai_body(None, data);
            return self.error(kind, &message, out);
        }
        if self.phase == Phase::Waiting {
            self.start(chunk.id.as_deref(), data, out);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices.0 else {
            return;
        };
        if let Some(delta) = choice.delta {
            let nonempty = |s: &Option<Str<'_>>| s.as_ref().is_some_and(|s| !s.is_empty());
            let reasoning = if nonempty(&delta.reasoning) {
                delta.reasoning
            } else {
                delta.reasoning_content
            };
            if let Some(thinking) = reasoning.filter(|r| !r.is_empty()) {
                self.text(BlockKind::Thinking, &thinking, out);
            }
            if let Some(content) = delta.content {
                for text in content.texts().filter(|t| !t.is_empty()) {
                    self.text(BlockKind::Text, text, out);
                }
            }
            for call in delta.tool_calls.into_iter().flatten() {
                self.tool_call(call, out);
                if self.phase == Phase::Done {
                    return;
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(match &*reason {
                "stop" => "stop",
                "length" => "length",
                "tool_calls" => "tool_calls",
                "function_call" => "function_call",
                _ => "other",
            });
            let matched = choice.stop_reason.or(choice.matched_stop);
            if let Some(stop) = matched.and_then(|m| m.0) {
                self.stop_sequence = Some(stop.0.into_owned());
            }
        }
    }

    /// `message_start` before any chunk, its id from the seed.
    fn start_seeded(&mut self, out: &mut Vec<u8>) {
        let seed = self.seed.to_le_bytes();
        self.start(None, &seed, out);
    }

    /// `message_start`, at the first chunk (or at the end of a stream without any).
    fn start(&mut self, openai_id: Option<&str>, seed: &[u8], out: &mut Vec<u8>) {
        self.message_id = super::message_id(openai_id, seed);
        self.phase = Phase::Streaming;
        event(out, "message_start");
        out.extend_from_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":");
        json::push_str(out, &self.message_id);
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        json::push_str(out, &self.model);
        out.extend_from_slice(
            b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":\
              {\"input_tokens\":",
        );
        json::push_u64(out, self.input_estimate);
        out.extend_from_slice(
            b",\"output_tokens\":0,\"cache_creation_input_tokens\":0,\
              \"cache_read_input_tokens\":0}}}\n\n",
        );
    }

    /// A text or thinking delta: into the open block of its kind, or a new one.
    fn text(&mut self, kind: BlockKind, text: &str, out: &mut Vec<u8>) {
        let index = match (kind, self.open) {
            (BlockKind::Text, Open::Text(i)) | (BlockKind::Thinking, Open::Thinking(i)) => i,
            _ => {
                self.close_open(out);
                self.flush_held(out);
                let i = self.next_block();
                event(out, "content_block_start");
                out.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
                json::push_u64(out, u64::from(i));
                out.extend_from_slice(match kind {
                    BlockKind::Text => b",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                    BlockKind::Thinking => {
                        b",\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n"
                    }
                });
                self.open = match kind {
                    BlockKind::Text => Open::Text(i),
                    BlockKind::Thinking => Open::Thinking(i),
                };
                i
            }
        };
        let (delta, field) = match kind {
            BlockKind::Text => ("text_delta", "text"),
            BlockKind::Thinking => ("thinking_delta", "thinking"),
        };
        block_delta(out, index, delta, field, text);
        self.produced += text.len();
    }

    /// Closes the open block, if any.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        let index = match self.open {
            Open::None => return,
            Open::Text(i) | Open::Thinking(i) => i,
            Open::Tool(s) => {
                self.tools[s].state = CallState::Closed;
                self.tools[s].block
            }
        };
        self.open = Open::None;
        event(out, "content_block_stop");
        out.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":");
        json::push_u64(out, u64::from(index));
        out.extend_from_slice(b"}\n\n");
    }

    fn next_block(&mut self) -> u32 {
        self.blocks += 1;
        self.blocks - 1
    }

    /// The end of the message: open blocks closed, held calls sent, the stop reason and
    /// usage, `message_stop`.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Waiting {
            self.start_seeded(out);
        }
        self.close_open(out);
        self.flush_held(out);
        let used_tools = self.tools.iter().any(|t| t.state == CallState::Closed);
        let (reason, sequence) = response::stop_reason(
            self.finish_reason,
            self.stop_sequence.as_deref(),
            used_tools,
        );
        event(out, "message_delta");
        out.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\",\"stop_sequence\":");
        json::push_opt_str(out, sequence);
        out.extend_from_slice(b"},\"usage\":");
        response::push_usage(out, self.counts());
        out.extend_from_slice(b"}\n\n");
        event(out, "message_stop");
        out.extend_from_slice(b"{\"type\":\"message_stop\"}\n\n");
        self.phase = Phase::Done;
    }

    /// An `error` event, which ends the stream.
    fn error(&mut self, kind: ErrorType, message: &str, out: &mut Vec<u8>) {
        event(out, "error");
        errors::write_error(kind, message, None, out);
        out.extend_from_slice(b"\n\n");
        self.phase = Phase::Done;
        self.failed = true;
        self.line = Vec::new();
    }

    fn line_too_long(&mut self, out: &mut Vec<u8>) {
        let message = format!("the backend sent an SSE line longer than {MAX_LINE} bytes");
        self.error(ErrorType::Api, &message, out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
}

/// `event: <name>\ndata: ` (the caller writes the JSON and the blank line).
fn event(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
}

/// A `content_block_delta` event: `{"type":<delta>,<field>:<text>}` for block `index`.
fn block_delta(out: &mut Vec<u8>, index: u32, delta: &str, field: &str, text: &str) {
    event(out, "content_block_delta");
    out.extend_from_slice(b"{\"type\":\"content_block_delta\",\"index\":");
    json::push_u64(out, u64::from(index));
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(delta.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    json::push_str(out, text);
    out.extend_from_slice(b"}}\n\n");
}

/// One OpenAI `chat.completion.chunk`, as far as it is translated.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    object: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: First<ChunkChoice<'a>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
    #[serde(borrow)]
    stop_reason: Option<MatchedStop<'a>>,
    #[serde(borrow)]
    matched_stop: Option<MatchedStop<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    reasoning: Option<Str<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Str<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

mod tools;

#[cfg(test)]
mod tests;
