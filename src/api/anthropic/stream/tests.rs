use serde_json::{Value, json};

use super::*;
use crate::api::anthropic::samples;

pub(super) const ESTIMATE: u64 = 50;

/// Feeds `input` in pieces of `step` bytes (0: all at once), then ends the stream.
pub(super) fn run_in(input: &[u8], step: usize) -> String {
    let mut t = StreamTranslator::new("claude-x", ESTIMATE);
    let mut out = Vec::new();
    if step == 0 {
        t.feed(input, &mut out);
    } else {
        for piece in input.chunks(step) {
            t.feed(piece, &mut out);
        }
    }
    t.finish(&mut out);
    String::from_utf8(out).expect("events are UTF-8")
}

pub(super) fn run(input: &str) -> String {
    let whole = run_in(input.as_bytes(), 0);
    assert_eq!(
        run_in(input.as_bytes(), 1),
        whole,
        "one byte at a time differs"
    );
    whole
}

/// The events of an Anthropic stream, checked for well-formedness: each is
/// `event: <type>\ndata: <JSON with that type>\n\n`.
pub(super) fn events(sse: &str) -> Vec<Value> {
    let body = sse
        .strip_suffix("\n\n")
        .unwrap_or_else(|| panic!("unterminated: {sse}"));
    body.split("\n\n")
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("bad event {e:?}"));
            let v: Value = serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}"));
            assert_eq!(v["type"], name, "{e}");
            v
        })
        .collect()
}

/// Checks the event order Anthropic clients rely on and rebuilds the message content
/// as an SDK accumulates it (tool input parsed from its `partial_json` pieces).
pub(super) fn content(sse: &str) -> (Vec<Value>, Value) {
    let events = events(sse);
    assert_eq!(events[0]["type"], "message_start", "{sse}");
    let last = events.last().unwrap();
    let mut blocks: Vec<Value> = Vec::new();
    let mut open: Option<usize> = None;
    let mut json_parts: Vec<String> = Vec::new();
    for e in &events[1..] {
        let index = e["index"].as_u64().map(|i| i as usize);
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "a block opened while another is open: {sse}");
                assert_eq!(index, Some(blocks.len()), "block indices are consecutive");
                blocks.push(e["content_block"].clone());
                json_parts.push(String::new());
                open = index;
            }
            "content_block_delta" => {
                assert_eq!(index, open, "a delta outside its block: {sse}");
                let (i, d) = (index.unwrap(), &e["delta"]);
                match d["type"].as_str().unwrap() {
                    "text_delta" => append(&mut blocks[i]["text"], &d["text"]),
                    "thinking_delta" => append(&mut blocks[i]["thinking"], &d["thinking"]),
                    "input_json_delta" => {
                        json_parts[i].push_str(d["partial_json"].as_str().unwrap())
                    }
                    other => panic!("delta type {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(index, open, "{sse}");
                let i = index.unwrap();
                if blocks[i]["type"] == "tool_use" && !json_parts[i].is_empty() {
                    // Input that does not parse shows as its text.
                    blocks[i]["input"] = serde_json::from_str(&json_parts[i])
                        .unwrap_or_else(|_| Value::String(json_parts[i].clone()));
                }
                open = None;
            }
            "message_delta" => assert_eq!(open, None, "message_delta with a block open"),
            "message_stop" => assert!(std::ptr::eq(e, last), "message_stop is last"),
            "error" => assert!(std::ptr::eq(e, last), "error is last"),
            other => panic!("event {other}"),
        }
    }
    (events.clone(), Value::Array(blocks))
}

fn append(into: &mut Value, piece: &Value) {
    let s = format!("{}{}", into.as_str().unwrap(), piece.as_str().unwrap());
    *into = Value::String(s);
}

pub(super) fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

pub(super) fn delta(d: Value) -> String {
    data(
        json!({"id":"chatcmpl-abcdefghijklmnop0123","choices":[{"index":0,"delta":d,"finish_reason":null}]}),
    )
}

pub(super) fn finish(reason: &str) -> String {
    data(
        json!({"id":"chatcmpl-abcdefghijklmnop0123","choices":[{"index":0,"delta":{},"finish_reason":reason}]}),
    )
}

pub(super) fn call(index: u64, id: Option<&str>, name: Option<&str>, args: &str) -> String {
    let mut function = json!({"arguments": args});
    if let Some(name) = name {
        function["name"] = json!(name);
    }
    let mut call = json!({"index": index, "type": "function", "function": function});
    if let Some(id) = id {
        call["id"] = json!(id);
    }
    delta(json!({"tool_calls": [call]}))
}

pub(super) const DONE: &str = "data: [DONE]\n\n";

#[test]
fn a_text_stream_translates_event_by_event() {
    let input = samples::text_stream(2);
    let out = run(&input);
    let expected = [
        json!({"type":"message_start","message":{"id":"msg_9f8e7d6c5b4a39281706f5e4d3c2b1a0","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":ESTIMATE,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" token0"}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" token1"}}),
        json!({"type":"content_block_stop","index":0}),
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":1200,"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}),
        json!({"type":"message_stop"}),
    ];
    assert_eq!(events(&out), expected);
}

#[test]
fn events_are_written_as_soon_as_a_chunk_is_complete() {
    let mut t = StreamTranslator::new("m", 1);
    let mut out = Vec::new();
    let line = delta(json!({"content":"Hi"}));
    let (head, tail) = line.split_at(line.len() - 2);
    t.feed(head.as_bytes(), &mut out);
    assert!(out.is_empty(), "nothing before the line's newline");
    t.feed(&tail.as_bytes()[..1], &mut out);
    let sse = String::from_utf8(out.clone()).unwrap();
    assert!(
        sse.ends_with("\"text\":\"Hi\"}}\n\n") && sse.contains("message_start"),
        "{sse}"
    );
    assert!(!t.is_done());
}

#[test]
fn any_chunking_gives_the_same_events() {
    let interleaved = [
        call(0, Some("a"), Some("first"), "{\"x\":"),
        call(1, Some("b"), Some("second"), "{\"y\":"),
        call(0, None, None, "1}"),
        call(1, None, None, "2}"),
    ]
    .concat();
    let streams = [
        samples::text_stream(20),
        samples::tool_stream(20),
        interleaved,
        delta(json!({"reasoning_content":"thinking… 😀"}))
            + &delta(json!({"content":"é世界"}))
            + DONE,
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for input in &streams {
        let whole = run_in(input.as_bytes(), 0);
        content(&whole);
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(run_in(input.as_bytes(), step), whole, "step {step}");
        }
        // Random cuts.
        for _ in 0..20 {
            let mut t = StreamTranslator::new("claude-x", ESTIMATE);
            let (mut out, mut rest) = (Vec::new(), input.as_bytes());
            while !rest.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let n = (state as usize % 40 + 1).min(rest.len());
                t.feed(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            t.finish(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), whole);
        }
    }
}

#[test]
fn multi_byte_characters_split_across_feeds() {
    let text = "héllo 😀 世界 ünïcödé";
    let input = delta(json!({"content": text})) + &finish("stop") + DONE;
    for step in 1..=5 {
        let (_, blocks) = content(&run_in(input.as_bytes(), step));
        assert_eq!(blocks, json!([{"type":"text","text":text}]), "step {step}");
    }
}

#[test]
fn reasoning_streams_as_a_thinking_block_first() {
    let input = [
        delta(json!({"reasoning":"Let me think","content":"Paris"})),
        delta(json!({"reasoning_content":"ignored? no: vLLM's name"})),
        delta(json!({"content":"!"})),
        finish("stop"),
        DONE.into(),
    ]
    .concat();
    let (_, blocks) = content(&run(&input));
    assert_eq!(
        blocks,
        json!([
            {"type":"thinking","thinking":"Let me think"},
            {"type":"text","text":"Paris"},
            {"type":"thinking","thinking":"ignored? no: vLLM's name"},
            {"type":"text","text":"!"},
        ])
    );
}

#[test]
fn usage_comes_from_the_usage_chunk() {
    let input = delta(json!({"content":"Hi"}))
        + &finish("stop")
        + &data(
            json!({"id":"x","choices":[],"usage":{"prompt_tokens":900,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":400}}}),
        )
        + DONE;
    let (events, _) = content(&run(&input));
    assert_eq!(events[0]["message"]["usage"]["input_tokens"], ESTIMATE);
    assert_eq!(
        events[events.len() - 2]["usage"],
        json!({"input_tokens":500,"output_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":400})
    );
    let mut t = StreamTranslator::new("m", ESTIMATE);
    t.feed(input.as_bytes(), &mut Vec::new());
    assert_eq!(t.tokens(), (900, 12));
}

#[test]
fn without_usage_output_tokens_are_estimated() {
    let input = delta(json!({"content":"0123456789abcdef"})) + &finish("length") + DONE;
    let (events, _) = content(&run(&input));
    let end = &events[events.len() - 2];
    assert_eq!(end["delta"]["stop_reason"], "max_tokens");
    assert_eq!(end["usage"]["input_tokens"], ESTIMATE);
    assert_eq!(end["usage"]["output_tokens"], 4);
}

#[test]
fn a_stream_without_done_ends_at_finish() {
    let input = delta(json!({"content":"cut"})) + &finish("stop");
    let out = run(&input);
    let (events, blocks) = content(&out);
    assert_eq!(blocks, json!([{"type":"text","text":"cut"}]));
    assert_eq!(events.last().unwrap()["type"], "message_stop");
    // A last line without its newline is still read.
    let unterminated = delta(json!({"content":"a"})) + "data: [DONE]";
    let mut t = StreamTranslator::new("m", 1);
    let mut out = Vec::new();
    t.feed(unterminated.as_bytes(), &mut out);
    assert!(!t.is_done());
    t.finish(&mut out);
    assert!(t.is_done());
    let n = out.len();
    t.finish(&mut out);
    t.feed(b"data: {}\n", &mut out);
    assert_eq!(out.len(), n, "nothing after the end");
}

#[test]
fn an_empty_stream_is_still_a_message() {
    let (events, blocks) = content(&run(DONE));
    assert_eq!(blocks, json!([]));
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message_start", "message_delta", "message_stop"]);
}

#[test]
fn an_error_chunk_becomes_an_error_event() {
    let input = delta(json!({"content":"partial"}))
        + &data(json!({"error":{"message":"CUDA out of memory","type":"server_error","code":500}}))
        + &delta(json!({"content":"ignored"}))
        + DONE;
    let (all, _) = content(&run(&input));
    assert_eq!(
        all.last().unwrap(),
        &json!({"type":"error","error":{"type":"api_error","message":"CUDA out of memory"}})
    );
    assert!(!all.iter().any(|e| e["type"] == "message_stop"));
    let flat = data(
        json!({"object":"error","message":"bad n","type":"BadRequestError","param":null,"code":400}),
    );
    let only = events(&run(&flat));
    assert_eq!(
        only,
        [json!({"type":"error","error":{"type":"invalid_request_error","message":"bad n"}})]
    );
    // An error before anything else: just the error.
    let out = run(&data(json!({"error":"model not loaded"})));
    let only = events(&out);
    assert_eq!(
        only,
        [json!({"type":"error","error":{"type":"api_error","message":"model not loaded"}})]
    );
}

#[test]
fn a_broken_upstream_fails_the_stream() {
    let mut t = StreamTranslator::new("m", 1);
    let mut out = Vec::new();
    t.feed(delta(json!({"content":"a"})).as_bytes(), &mut out);
    t.fail("upstream closed mid-stream", &mut out);
    t.finish(&mut out);
    let events = events(&String::from_utf8(out).unwrap());
    assert_eq!(
        events.last().unwrap()["error"]["message"],
        "upstream closed mid-stream"
    );
    assert!(t.is_done());
}

#[test]
fn other_lines_are_ignored_and_bad_json_skipped() {
    let input = format!(
        ": keep-alive comment\r\nevent: chunk\r\n{}data: {{not json\r\n\r\ndata:{}\n\n{}",
        delta(json!({"content":"a"})).replace("\n\n", "\r\n\r\n"),
        json!({"choices":[{"delta":{"content":"b"}}]}),
        DONE
    );
    let mut t = StreamTranslator::new("m", 1);
    let mut out = Vec::new();
    t.feed(input.as_bytes(), &mut out);
    assert_eq!(t.skipped(), 1);
    let (_, blocks) = content(&String::from_utf8(out).unwrap());
    assert_eq!(blocks, json!([{"type":"text","text":"ab"}]));
}

#[test]
fn a_stop_sequence_named_by_the_backend() {
    let end = data(
        json!({"id":"x","choices":[{"delta":{},"finish_reason":"stop","stop_reason":"</answer>"}]}),
    );
    let (events, _) = content(&run(&(delta(json!({"content":"42"})) + &end + DONE)));
    assert_eq!(
        events[events.len() - 2]["delta"],
        json!({"stop_reason":"stop_sequence","stop_sequence":"</answer>"})
    );
}

#[test]
fn memory_is_bounded() {
    // A line over the limit, however it arrives, ends the stream with an error.
    let long = format!("data: {}\n", "x".repeat(MAX_LINE));
    for step in [0, 4096] {
        let out = run_in(long.as_bytes(), step);
        let events = events(&out);
        assert_eq!(events.len(), 1, "{step}");
        assert!(
            events[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than")
        );
    }
    // At the limit it is just a (bad) line.
    let at_limit = format!("data: {}\n", "x".repeat(MAX_LINE - 6)) + DONE;
    assert_eq!(
        events(&run_in(at_limit.as_bytes(), 1 << 16))
            .last()
            .unwrap()["type"],
        "message_stop"
    );
    // Held arguments of an interleaved call.
    let mut t = StreamTranslator::new("m", 1);
    let mut out = Vec::new();
    t.feed(call(0, Some("a"), Some("f"), "{").as_bytes(), &mut out);
    let piece = "y".repeat(64 << 10);
    for _ in 0..20 {
        t.feed(call(1, Some("b"), Some("g"), &piece).as_bytes(), &mut out);
    }
    assert!(t.is_done());
    let events = events(&String::from_utf8(out).unwrap());
    assert!(
        events.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("held state")
    );
}

#[test]
fn pings() {
    let mut t = StreamTranslator::new("m", 1).with_seed(b"request 1");
    let mut out = Vec::new();
    t.ping(&mut out);
    // The message starts first, its id from the seed: a client sees message_start first.
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(
        text.ends_with("event: ping\ndata: {\"type\":\"ping\"}\n\n"),
        "{text}"
    );
    let id = |t: &str| {
        t.split("\"id\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut other = StreamTranslator::new("m", 1).with_seed(b"request 2");
    let mut second = Vec::new();
    other.ping(&mut second);
    assert_ne!(
        id(&text),
        id(std::str::from_utf8(&second).unwrap()),
        "ids repeat"
    );
    out.clear();
    t.ping(&mut out);
    assert_eq!(
        out, b"event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "one message_start"
    );
    t.feed(DONE.as_bytes(), &mut out);
    let n = out.len();
    t.ping(&mut out);
    assert_eq!(out.len(), n, "no ping after message_stop");
}
