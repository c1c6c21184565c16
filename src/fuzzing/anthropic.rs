//! Fuzz targets over the Anthropic translator (`api::anthropic`): a backend's OpenAI SSE
//! stream through `StreamTranslator`, as raw bytes and as a stream of chunks whose tokens
//! are known, and the whole-body translators `request::to_openai` and
//! `response::from_openai`.
//!
//! The stream targets check what an Anthropic client relies on (`check_events`): the
//! output is a sequence of `event: <type>\ndata: <one line of JSON with that type>\n\n`;
//! `message_start` first (or an `error`); content blocks indexed 0, 1, 2, ..., one open
//! at a time, each delta inside the open block and of its kind; nothing after
//! `message_stop` or `error`; `message_delta` right before `message_stop`; the same
//! output however the input is split into feeds. The structured target also checks that
//! no token is lost (`check_tokens`).

use serde_json::{Map, Value};

use super::piece_sizes;
use crate::api::anthropic::request::{self, Options};
use crate::api::anthropic::response;
use crate::api::anthropic::stream::StreamTranslator;

/// The model the client asked for, which every message names.
const MODEL: &str = "claude-fuzz";

/// The message `fail` is called with.
const BROKEN: &str = "the backend's stream broke";

/// The only place a translator is made, so a change of its constructor is one line here.
fn translator() -> StreamTranslator {
    StreamTranslator::new(MODEL, 17)
}

/// How the backend's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Cleanly: `finish`.
    Finish,
    /// Broken: `fail`.
    Fail,
}

/// Translates `input` fed in pieces of the given sizes (the last piece takes the rest),
/// then ends it. Once the translator is done, more input, `finish` and `fail` write
/// nothing.
fn translate(input: &[u8], pieces: &mut dyn Iterator<Item = usize>, end: End) -> Vec<u8> {
    let mut t = translator();
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let size = pieces.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        t.feed(piece, &mut out);
        rest = tail;
    }
    match end {
        End::Finish => t.finish(&mut out),
        End::Fail => t.fail(BROKEN, &mut out),
    }
    assert!(t.is_done(), "not done after the end of the stream");
    let _ = (t.skipped(), t.tokens());
    let len = out.len();
    t.feed(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n",
        &mut out,
    );
    t.finish(&mut out);
    t.fail(BROKEN, &mut out);
    assert_eq!(out.len(), len, "events written after the stream was done");
    out
}

/// Translates `input` whole, in pieces from `seed`, and one byte at a time: the output
/// must be the same, and well formed. Returns it, read.
fn translate_every_way(input: &[u8], seed: u16, end: End) -> Transcript {
    let whole = translate(input, &mut std::iter::empty(), end);
    let pieces = translate(input, &mut piece_sizes(seed), end);
    assert!(
        pieces == whole,
        "fed in pieces differs from fed whole:\n{}\n---\n{}",
        String::from_utf8_lossy(&pieces),
        String::from_utf8_lossy(&whole)
    );
    let bytes = translate(input, &mut std::iter::repeat(1), end);
    assert!(
        bytes == whole,
        "fed byte by byte differs from fed whole:\n{}\n---\n{}",
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&whole)
    );
    check_events(&whole, end)
}

/// Fuzz target `anthropic_stream`: arbitrary bytes from a backend.
///
/// The first two bytes pick the sizes of the feeds, the third how the stream ends (bit 0:
/// `fail` rather than `finish`); the rest is the backend's stream. Checks the output's
/// form (`check_events`) and that it does not depend on how the input is split.
pub fn anthropic_stream(data: &[u8]) {
    let [a, b, flags, stream @ ..] = data else {
        return;
    };
    let end = if flags & 1 == 0 {
        End::Finish
    } else {
        End::Fail
    };
    translate_every_way(stream, u16::from_le_bytes([*a, *b]), end);
}

/// What a client reads from the events: the message's text, thinking and tool calls,
/// and how it ended.
#[derive(Debug, Default)]
struct Transcript {
    message_id: String,
    text: String,
    thinking: String,
    tools: Vec<ToolUse>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    output_tokens: u64,
    /// The `error` event's message, when one ended the stream.
    error: Option<String>,
}

#[derive(Debug)]
struct ToolUse {
    id: String,
    name: String,
    /// The `partial_json` pieces, joined.
    input: String,
}

/// The kind of the open block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    ToolUse,
}

fn str_field<'v>(v: &'v Value, key: &str, event: &str) -> &'v str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {event}"))
}

/// Splits the output into events and checks their form and order (module docs); returns
/// what they say.
fn check_events(out: &[u8], end: End) -> Transcript {
    let out = std::str::from_utf8(out).expect("the events are not UTF-8");
    let mut events = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let (head, tail) = rest
            .split_once("\n\n")
            .unwrap_or_else(|| panic!("an unterminated event: {rest:?}"));
        let (name, data) = head
            .strip_prefix("event: ")
            .and_then(|e| e.split_once("\ndata: "))
            .unwrap_or_else(|| panic!("not an event: {head:?}"));
        assert!(
            !name.contains('\n') && !data.contains('\n'),
            "more than two lines in an event: {head:?}"
        );
        let value: Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("{e} in {name}: {data}"));
        assert_eq!(value["type"], name, "the type is not the event's: {head}");
        events.push((name, value));
        rest = tail;
    }
    assert!(!events.is_empty(), "no event at all");

    let mut t = Transcript::default();
    let mut open: Option<(u64, Kind)> = None;
    let mut blocks = 0u64;
    let last = events.len() - 1;
    for (i, (name, e)) in events.iter().enumerate() {
        let name = *name;
        let at_index = || {
            e["index"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: no index"))
        };
        match name {
            "message_start" => {
                assert_eq!(i, 0, "message_start is not first");
                let m = &e["message"];
                assert_eq!(m["type"], "message");
                assert_eq!(m["role"], "assistant");
                assert_eq!(m["model"], MODEL);
                assert_eq!(m["content"], Value::Array(Vec::new()));
                t.message_id = str_field(m, "id", name).to_owned();
                assert!(t.message_id.starts_with("msg_"), "{}", t.message_id);
                assert!(m["usage"]["input_tokens"].is_u64());
            }
            "error" => {
                assert_eq!(i, last, "events after an error");
                assert!(i == 0 || events[0].0 == "message_start");
                let error = &e["error"];
                str_field(error, "type", name);
                t.error = Some(str_field(error, "message", name).to_owned());
            }
            _ => assert!(
                i > 0 && events[0].0 == "message_start",
                "{name} before message_start"
            ),
        }
        match name {
            "message_start" | "error" => {}
            "content_block_start" => {
                assert_eq!(open, None, "a block opened while another is open");
                assert_eq!(at_index(), blocks, "block indices are not consecutive");
                let block = &e["content_block"];
                let kind = match str_field(block, "type", name) {
                    "text" => {
                        assert_eq!(block["text"], "");
                        Kind::Text
                    }
                    "thinking" => {
                        assert_eq!(block["thinking"], "");
                        Kind::Thinking
                    }
                    "tool_use" => {
                        let id = str_field(block, "id", name).to_owned();
                        let tool_name = str_field(block, "name", name).to_owned();
                        assert!(!id.is_empty() && !tool_name.is_empty());
                        assert_eq!(block["input"], Value::Object(Map::new()));
                        t.tools.push(ToolUse {
                            id,
                            name: tool_name,
                            input: String::new(),
                        });
                        Kind::ToolUse
                    }
                    other => panic!("a {other} block"),
                };
                open = Some((blocks, kind));
                blocks += 1;
            }
            "content_block_delta" => {
                let (index, kind) = open.expect("a delta with no block open");
                assert_eq!(at_index(), index, "a delta outside the open block");
                let delta = &e["delta"];
                let (field, into) = match (str_field(delta, "type", name), kind) {
                    ("text_delta", Kind::Text) => ("text", &mut t.text),
                    ("thinking_delta", Kind::Thinking) => ("thinking", &mut t.thinking),
                    ("input_json_delta", Kind::ToolUse) => {
                        let tool = t.tools.last_mut().expect("the open tool block");
                        ("partial_json", &mut tool.input)
                    }
                    (other, kind) => panic!("a {other} in a {kind:?} block"),
                };
                let piece = str_field(delta, field, name);
                assert!(!piece.is_empty(), "an empty {field} delta");
                into.push_str(piece);
            }
            "content_block_stop" => {
                let (index, _) = open.take().expect("a stop with no block open");
                assert_eq!(at_index(), index, "a stop for another block");
            }
            "message_delta" => {
                assert_eq!(open, None, "message_delta with a block open");
                assert_eq!(
                    events.get(i + 1).map(|e| e.0),
                    Some("message_stop"),
                    "message_delta not followed by message_stop"
                );
                let delta = &e["delta"];
                let reason = str_field(delta, "stop_reason", name);
                assert!(
                    ["end_turn", "max_tokens", "stop_sequence", "tool_use"].contains(&reason),
                    "stop_reason {reason}"
                );
                t.stop_reason = Some(reason.to_owned());
                t.stop_sequence = delta["stop_sequence"].as_str().map(str::to_owned);
                assert!(t.stop_sequence.is_some() || delta["stop_sequence"].is_null());
                let usage = &e["usage"];
                assert!(usage["input_tokens"].is_u64());
                t.output_tokens = usage["output_tokens"].as_u64().expect("output_tokens");
            }
            "message_stop" => {
                assert_eq!(i, last, "events after message_stop");
                assert!(
                    i > 0 && events[i - 1].0 == "message_delta",
                    "message_stop without message_delta"
                );
            }
            other => panic!("an event {other}"),
        }
    }
    let ended = events[last].0;
    assert!(
        ended == "message_stop" || ended == "error",
        "the stream ended with {ended} ({end:?})"
    );
    t
}

// ---- the structured stream: chunk operations rendered as OpenAI SSE ----

/// Strings the operations draw from: plain text, characters JSON escapes, UTF-8 of every
/// length, SSE syntax, and pieces of JSON (tool arguments).
const STRINGS: &[&str] = &[
    "Hello",
    " world",
    "",
    "é",
    "😀",
    "\n",
    "\"",
    "\\",
    "\u{0}\u{1f}",
    "\u{2028}",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\t\r\n",
    "\"city\"",
    "\"Paris\"",
    "{\"a\":1}",
    "[1,2]",
    "1",
    "true",
    "\"\\\"\"",
    "\\u0022",
    "data: [DONE]\n\n",
    "event: error\ndata: {}",
    "}}",
    "{\"k\":",
    "ü€",
    "\"}\"",
];

/// Reads the fuzz input's bytes (zeros once exhausted).
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A string: one of [`STRINGS`], or up to 7 bytes of the input, as UTF-8 (lossy).
    fn string(&mut self) -> String {
        let b = usize::from(self.byte());
        if let Some(s) = STRINGS.get(b) {
            return (*s).to_owned();
        }
        let n = (b % 8).min(self.data.len());
        let (bytes, rest) = self.data.split_at(n);
        self.data = rest;
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// One tool call's part of a chunk.
#[derive(Debug)]
struct CallOp {
    index: Option<u32>,
    id: Option<String>,
    /// `Some("")` is sent as an empty name; any other name gets `_<call>` appended, to
    /// tell the calls' blocks apart.
    name: Option<String>,
    arguments: Arguments,
}

#[derive(Debug)]
enum Arguments {
    Absent,
    Null,
    /// A string of JSON text (OpenAI).
    Text(String),
    /// JSON itself (some backends): taken as its text.
    Raw(String),
}

/// One line (or chunk) a backend sends.
#[derive(Debug)]
enum Op {
    /// `delta.content`: a string, or content parts (text, and others that carry none).
    Text(String, u8),
    /// `delta.reasoning`, `delta.reasoning_content`, or both.
    Reasoning(String, String, u8),
    /// Reasoning and text in one delta.
    Both(String, String),
    Tools(Vec<CallOp>),
    Usage(u8, u8),
    Finish(&'static str, Option<String>),
    Error(u8),
    Junk(u8),
    Done,
    /// A chunk with nothing to translate: a role, no choices, `choices: null`.
    Empty(u8),
}

const FINISH_REASONS: [&str; 6] = [
    "stop",
    "length",
    "tool_calls",
    "function_call",
    "content_filter",
    "",
];

const JUNK: [&str; 8] = [
    ": keep-alive",
    "event: completion",
    "id: 7",
    "retry: 1000",
    "data: not json",
    "data: {\"choices\":",
    "",
    "data:",
];

impl Op {
    fn read(r: &mut Reader<'_>) -> Op {
        match r.byte() % 11 {
            0 | 1 => Op::Text(r.string(), r.byte()),
            2 => Op::Reasoning(r.string(), r.string(), r.byte()),
            3 => Op::Both(r.string(), r.string()),
            4 | 5 => {
                let n = 1 + usize::from(r.byte() % 4 == 0);
                let calls = (0..n).map(|_| CallOp::read(r)).collect();
                Op::Tools(calls)
            }
            6 => Op::Usage(r.byte(), r.byte()),
            7 => {
                let reason = FINISH_REASONS[usize::from(r.byte()) % FINISH_REASONS.len()];
                let matched = (r.byte() % 2 == 0).then(|| r.string());
                Op::Finish(reason, matched)
            }
            8 => match r.byte() {
                0..8 => Op::Error(r.byte()),
                b => Op::Junk(b),
            },
            9 => match r.byte() {
                0..16 => Op::Done,
                b => Op::Empty(b),
            },
            _ => Op::Junk(r.byte()),
        }
    }
}

impl CallOp {
    fn read(r: &mut Reader<'_>) -> CallOp {
        let flags = r.byte();
        let index = (flags & 3 != 3).then_some(u32::from(flags & 3));
        let id = match (flags >> 2) & 3 {
            0 => None,
            1 => Some(String::new()),
            2 => Some(format!("call_{}", (flags >> 4) & 3)),
            _ => Some(r.string()),
        };
        let name = match (flags >> 6) & 3 {
            0 | 1 => None,
            2 => Some(String::new()),
            _ => Some(r.string()),
        };
        let arguments = match r.byte() % 8 {
            0 => Arguments::Absent,
            1 => Arguments::Null,
            2 => {
                let s = r.string();
                match serde_json::from_str::<Value>(&s) {
                    Ok(v) if !v.is_string() && !v.is_null() && s.trim() == s => Arguments::Raw(s),
                    _ => Arguments::Text(s),
                }
            }
            _ => Arguments::Text(r.string()),
        };
        CallOp {
            index,
            id,
            name,
            arguments,
        }
    }
}

/// What the backend sent, as a client should see it: the documented mapping applied to
/// the operations that reached the translator.
#[derive(Debug, Default)]
struct Expected {
    text: String,
    thinking: String,
    calls: Vec<Call>,
    finish: Option<&'static str>,
    stop_sequence: Option<String>,
    /// The message of the error chunk that ended the stream.
    error: Option<String>,
}

/// A tool call as the backend sent it (told apart by `index`; without one, by `id`, or
/// the latest call continues: `stream/tools.rs`).
#[derive(Debug)]
struct Call {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

impl Expected {
    /// The call an operation continues, or a new one.
    fn call(&mut self, op: &CallOp) -> usize {
        let id = op.id.as_deref().filter(|s| !s.is_empty());
        let slot = match (op.index, id) {
            (Some(index), _) => self.calls.iter().position(|c| c.index == index),
            (None, Some(id)) => self.calls.iter().position(|c| c.id == id),
            (None, None) => self.calls.len().checked_sub(1),
        };
        slot.unwrap_or_else(|| {
            self.calls.push(Call {
                index: op.index.unwrap_or(self.calls.len() as u32),
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
            self.calls.len() - 1
        })
    }
}

/// JSON text of a string.
fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn delta_chunk(delta: &str) -> String {
    format!(
        "{{\"id\":\"chatcmpl-fuzz\",\"object\":\"chat.completion.chunk\",\
         \"choices\":[{{\"index\":0,\"delta\":{{{delta}}},\"finish_reason\":null}}]}}"
    )
}

/// Renders an operation as the line it is sent as (`None`: not a `data:` line) and
/// applies it to what the client should see. Returns whether it ends the stream.
fn render(op: &Op, expected: &mut Expected) -> (String, bool) {
    let chunk = match op {
        Op::Text(s, form) => {
            let content = match form % 5 {
                0 | 1 => quote(s),
                2 => format!("{{\"type\":\"text\",\"text\":{}}}", quote(s)),
                3 => format!(
                    "[{{\"type\":\"text\",\"text\":{q}}},{{\"type\":\"image_url\",\"text\":\"x\"}},\
                     {{\"type\":\"text\",\"text\":{q}}}]",
                    q = quote(s)
                ),
                _ => "null".to_owned(),
            };
            match form % 5 {
                0..=2 => expected.text.push_str(s),
                3 => {
                    expected.text.push_str(s);
                    expected.text.push_str(s);
                }
                _ => {}
            }
            delta_chunk(&format!("\"content\":{content}"))
        }
        Op::Reasoning(a, b, form) => match form % 3 {
            0 => {
                expected.thinking.push_str(a);
                delta_chunk(&format!("\"reasoning\":{}", quote(a)))
            }
            1 => {
                expected.thinking.push_str(a);
                delta_chunk(&format!("\"reasoning_content\":{}", quote(a)))
            }
            _ => {
                expected.thinking.push_str(if a.is_empty() { b } else { a });
                delta_chunk(&format!(
                    "\"reasoning\":{},\"reasoning_content\":{}",
                    quote(a),
                    quote(b)
                ))
            }
        },
        Op::Both(thinking, text) => {
            expected.thinking.push_str(thinking);
            expected.text.push_str(text);
            delta_chunk(&format!(
                "\"content\":{},\"reasoning_content\":{}",
                quote(text),
                quote(thinking)
            ))
        }
        Op::Tools(calls) => {
            let mut parts = Vec::new();
            for op in calls {
                let slot = expected.call(op);
                let call = &mut expected.calls[slot];
                let mut fields = Vec::new();
                if let Some(index) = op.index {
                    fields.push(format!("\"index\":{index}"));
                }
                if let Some(id) = &op.id {
                    if call.id.is_empty() {
                        call.id.clone_from(id);
                    }
                    fields.push(format!("\"id\":{}", quote(id)));
                }
                fields.push("\"type\":\"function\"".to_owned());
                let mut function = Vec::new();
                if let Some(name) = &op.name {
                    let name = if name.is_empty() {
                        String::new()
                    } else {
                        format!("{name}_{slot}")
                    };
                    if call.name.is_empty() {
                        call.name.clone_from(&name);
                    }
                    function.push(format!("\"name\":{}", quote(&name)));
                }
                match &op.arguments {
                    Arguments::Absent => {}
                    Arguments::Null => function.push("\"arguments\":null".to_owned()),
                    Arguments::Text(s) => {
                        call.arguments.push_str(s);
                        function.push(format!("\"arguments\":{}", quote(s)));
                    }
                    Arguments::Raw(s) => {
                        call.arguments.push_str(s);
                        function.push(format!("\"arguments\":{s}"));
                    }
                }
                fields.push(format!("\"function\":{{{}}}", function.join(",")));
                parts.push(format!("{{{}}}", fields.join(",")));
            }
            delta_chunk(&format!("\"tool_calls\":[{}]", parts.join(",")))
        }
        Op::Usage(prompt, completion) => format!(
            "{{\"id\":\"chatcmpl-fuzz\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\
             \"completion_tokens\":{completion},\"total_tokens\":{}}}}}",
            u32::from(*prompt) + u32::from(*completion)
        ),
        Op::Finish(reason, matched) => {
            expected.finish = Some(reason);
            let matched = match matched {
                Some(m) => {
                    expected.stop_sequence = Some(m.clone());
                    format!(",\"stop_reason\":{}", quote(m))
                }
                None => String::new(),
            };
            format!(
                "{{\"id\":\"chatcmpl-fuzz\",\"choices\":[{{\"index\":0,\"delta\":{{}},\
                 \"finish_reason\":{}{matched}}}]}}",
                quote(reason)
            )
        }
        Op::Error(n) => {
            let message = format!("backend error {n}");
            expected.error = Some(message.clone());
            let chunk = if n % 2 == 0 {
                format!(
                    "{{\"error\":{{\"message\":{},\"type\":\"server_error\"}}}}",
                    quote(&message)
                )
            } else {
                format!(
                    "{{\"object\":\"error\",\"message\":{},\"type\":\"BadRequestError\",\"code\":400}}",
                    quote(&message)
                )
            };
            return (format!("data: {chunk}"), true);
        }
        Op::Junk(n) => return (JUNK[usize::from(*n) % JUNK.len()].to_owned(), false),
        Op::Done => return ("data: [DONE]".to_owned(), true),
        Op::Empty(n) => match n % 3 {
            0 => delta_chunk("\"role\":\"assistant\",\"content\":\"\""),
            1 => "{\"id\":\"chatcmpl-fuzz\",\"choices\":[]}".to_owned(),
            _ => "{\"id\":\"chatcmpl-fuzz\",\"choices\":null}".to_owned(),
        },
    };
    (format!("data: {chunk}"), false)
}

/// Fuzz target `anthropic_stream_ops`: a backend's stream built from chunk operations
/// (text, reasoning, tool-call pieces, usage, finish reasons, error chunks, junk lines,
/// `[DONE]`), so what the client must receive is known.
///
/// Bytes 0-1 pick the sizes of the feeds; byte 2: bit 0 `fail` rather than `finish`, bit
/// 1 cut the stream at a position bytes 3-4 pick (the connection broke there); bits 2-3
/// the line ends (`\n\n`, `\r\n\r\n`, `\n`, `data:` without a space). The rest is read
/// as operations. Besides the form (`check_events`) and split invariance, checks that no
/// token is lost (`check_tokens`).
pub fn anthropic_stream_ops(data: &[u8]) {
    let [a, b, flags, c0, c1, ops @ ..] = data else {
        return;
    };
    let end = if flags & 1 == 0 {
        End::Finish
    } else {
        End::Fail
    };
    let mut r = Reader { data: ops };
    let mut lines = Vec::new();
    while !r.data.is_empty() && lines.len() < 256 {
        lines.push(Op::read(&mut r));
    }
    // Every line is rendered (the translator must ignore what follows the end); a tool
    // call's name depends on the calls before it, so the lines come from one model.
    let mut all = Expected::default();
    let mut stream = Vec::new();
    // Where each line's text ends, and where its newline is.
    let mut ends = Vec::new();
    let style = (flags >> 2) & 3;
    for op in &lines {
        let (line, _) = render(op, &mut all);
        let line = match style {
            3 => line.replacen("data: ", "data:", 1),
            _ => line,
        };
        stream.extend_from_slice(line.as_bytes());
        let text_end = stream.len();
        let (ending, newline): (&[u8], usize) = match style {
            1 => (b"\r\n\r\n", text_end + 1),
            2 => (b"\n", text_end),
            _ => (b"\n\n", text_end),
        };
        stream.extend_from_slice(ending);
        ends.push((text_end, newline));
    }
    let cut = if flags & 2 != 0 {
        usize::from(u16::from_le_bytes([*c0, *c1])) % (stream.len() + 1)
    } else {
        stream.len()
    };
    stream.truncate(cut);

    // What the translator saw whole: the lines up to the cut (a last line without its
    // newline too when `finish` translates it), up to the first that ends the stream.
    let mut expected = Expected::default();
    for (op, (text_end, newline)) in lines.iter().zip(ends) {
        let seen = match end {
            End::Finish => cut >= text_end,
            End::Fail => cut > newline,
        };
        if !seen || render(op, &mut expected).1 {
            break;
        }
    }
    let got = translate_every_way(&stream, u16::from_le_bytes([*a, *b]), end);
    check_tokens(&got, &expected);
}

/// No token lost: the client gets the text, reasoning and tool-call arguments the
/// backend sent, in order, each in full (see `stream.rs` for how a stream may end early).
fn check_tokens(got: &Transcript, expected: &Expected) {
    // An error chunk's or a broken connection's error comes after everything before it
    // was sent; any other error (tool arguments for a closed block) may cut the rest.
    let exact = match &got.error {
        None => true,
        Some(message) => Some(message) == expected.error.as_ref() || message == BROKEN,
    };
    for (what, got, sent) in [
        ("text", &got.text, &expected.text),
        ("thinking", &got.thinking, &expected.thinking),
    ] {
        if exact {
            assert_eq!(got, sent, "the {what} sent is not the {what} received");
        } else {
            assert!(
                sent.starts_with(got.as_str()),
                "{what} {got:?} is not a prefix of {sent:?}"
            );
        }
    }
    if got.error.is_none() {
        assert_eq!(
            expected.error, None,
            "an error chunk did not end the stream"
        );
    }

    let mut seen = vec![false; expected.calls.len()];
    for tool in &got.tools {
        let slot: usize = tool
            .name
            .rsplit_once('_')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or_else(|| panic!("a tool_use block for no call: {tool:?}"));
        let call = expected.calls.get(slot).expect("a call for the block");
        assert!(!seen[slot], "two blocks for call {slot}: {:?}", got.tools);
        seen[slot] = true;
        assert_eq!(tool.name, call.name, "the call's name");
        let generated = response_tool_id(&got.message_id, slot);
        assert!(
            tool.id == call.id || tool.id == generated,
            "id {:?} for call {call:?}",
            tool.id
        );
        // Arguments are sent until the block closes; after that only blank ones are
        // accepted (and dropped), anything else ends the stream with an error.
        let rest = call
            .arguments
            .strip_prefix(tool.input.as_str())
            .unwrap_or_else(|| panic!("tool input {:?} is not a prefix of {call:?}", tool.input));
        if got.error.is_none() {
            assert!(
                rest.trim_ascii().is_empty(),
                "the arguments {rest:?} of call {call:?} were lost (sent {:?})",
                tool.input
            );
        }
    }
    if got.error.is_none() {
        for (slot, call) in expected.calls.iter().enumerate() {
            assert!(
                seen[slot] || call.name.is_empty(),
                "call {call:?} with a name got no block: {:?}",
                got.tools
            );
        }
        let used_tools = !got.tools.is_empty();
        let (reason, sequence) = match expected.finish {
            Some("length") => ("max_tokens", None),
            Some("tool_calls" | "function_call") => ("tool_use", None),
            _ if used_tools => ("tool_use", None),
            Some("stop") if expected.stop_sequence.is_some() => {
                ("stop_sequence", expected.stop_sequence.as_deref())
            }
            _ => ("end_turn", None),
        };
        assert_eq!(got.stop_reason.as_deref(), Some(reason));
        assert_eq!(got.stop_sequence.as_deref(), sequence);
    }
}

/// The id a tool call sent without one gets (`response::tool_id`).
fn response_tool_id(message_id: &str, slot: usize) -> String {
    let stem = message_id.strip_prefix("msg_").unwrap_or(message_id);
    format!("toolu_{stem}_{slot}")
}

// ---- whole bodies ----

/// Fuzz target `anthropic_request`: an Anthropic Messages request body.
///
/// The first byte picks the backend's options (`top_k`, `stream_usage`); the rest is the
/// body. `to_openai` never panics; when it accepts, it appended (after what the buffer
/// held) one JSON object with the `model` it reports and a list of `messages`, each with
/// a role; when it refuses, it appended nothing.
pub fn anthropic_request(data: &[u8]) {
    let [flags, body @ ..] = data else {
        return;
    };
    let opts = Options {
        top_k: flags & 1 != 0,
        stream_usage: flags & 2 != 0,
    };
    let mut out = b"kept".to_vec();
    match request::to_openai(body, &opts, &mut out) {
        Ok(translated) => {
            let written = out.strip_prefix(b"kept").expect("the buffer's bytes kept");
            let v: Value = serde_json::from_slice(written).unwrap_or_else(|e| {
                panic!("{e}: {}", String::from_utf8_lossy(written));
            });
            assert_eq!(v["model"], translated.model.as_str());
            let messages = v["messages"].as_array().expect("messages");
            // Roles are passed on as the client wrote them (an inline `system` is kept;
            // a role the backend does not know is for it to refuse).
            for m in messages {
                str_field(m, "role", "a message");
            }
            assert_eq!(v["stream"].as_bool().unwrap_or(false), translated.stream);
            assert_eq!(v.get("tools").is_some(), translated.tools);
            if !opts.top_k {
                assert!(
                    v.get("top_k").is_none(),
                    "top_k sent to a backend without it"
                );
            }
        }
        Err(_) => assert_eq!(out, b"kept", "a refused request wrote something"),
    }
}

/// Fuzz target `anthropic_response`: an OpenAI chat completion body from a backend.
///
/// `from_openai` never panics; when it accepts, it appended one Anthropic message: type
/// `message`, role `assistant`, the client's model, a non-empty content array of text,
/// thinking and tool_use blocks (tool input an object), a stop reason and usage.
pub fn anthropic_response(data: &[u8]) {
    let mut out = b"kept".to_vec();
    if response::from_openai(data, MODEL, &mut out).is_err() {
        return;
    }
    let written = out.strip_prefix(b"kept").expect("the buffer's bytes kept");
    let v: Value = serde_json::from_slice(written)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(written)));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], MODEL);
    assert!(str_field(&v, "id", "the message").starts_with("msg_"));
    let content = v["content"].as_array().expect("a content array");
    assert!(!content.is_empty(), "no content block");
    for block in content {
        match str_field(block, "type", "a block") {
            "text" => {
                str_field(block, "text", "a text block");
            }
            "thinking" => {
                str_field(block, "thinking", "a thinking block");
            }
            "tool_use" => {
                assert!(!str_field(block, "id", "a tool_use block").is_empty());
                str_field(block, "name", "a tool_use block");
                assert!(block["input"].is_object(), "tool input {}", block["input"]);
            }
            other => panic!("a {other} block"),
        }
    }
    let reason = str_field(&v, "stop_reason", "the message");
    assert!(
        ["end_turn", "max_tokens", "stop_sequence", "tool_use"].contains(&reason),
        "stop_reason {reason}"
    );
    assert!(v["usage"]["input_tokens"].is_u64() && v["usage"]["output_tokens"].is_u64());
}
