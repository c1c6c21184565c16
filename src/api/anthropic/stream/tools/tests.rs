use serde_json::{Value, json};

use super::*;
use crate::api::anthropic::samples;
use crate::api::anthropic::stream::tests::{DONE, call, content, delta, finish, run};

#[test]
fn tool_arguments_in_many_pieces() {
    let input = samples::tool_stream(50);
    let (events, blocks) = content(&run(&input));
    let expected_command: String = (0..50).map(|i| format!("part{i} ")).collect();
    assert_eq!(
        blocks,
        json!([{"type":"tool_use","id":"call_0","name":"Bash","input":{"command":expected_command}}])
    );
    let deltas = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .count();
    assert_eq!(deltas, 52, "each piece is passed on as it arrives");
    assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
}

#[test]
fn sequential_tool_calls_each_stream_live() {
    let input = [
        call(0, Some("call_a"), Some("read"), ""),
        call(0, None, None, "{\"path\":"),
        call(0, None, None, "\"a.rs\"}"),
        call(1, Some("call_b"), Some("read"), ""),
        call(1, None, None, "{\"path\":\"b.rs\"}"),
        finish("tool_calls"),
        DONE.into(),
    ]
    .concat();
    let out = run(&input);
    let (events, blocks) = content(&out);
    assert_eq!(
        blocks,
        json!([
            {"type":"tool_use","id":"call_a","name":"read","input":{"path":"a.rs"}},
            {"type":"tool_use","id":"call_b","name":"read","input":{"path":"b.rs"}},
        ])
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[test]
fn interleaved_tool_calls_are_serialised_by_block() {
    let input = [
        call(0, Some("call_a"), Some("first"), ""),
        call(1, Some("call_b"), Some("second"), "{\"y\":"),
        call(0, None, None, "{\"x\":"),
        call(1, None, None, "[1,"),
        call(0, None, None, "\"}\"}"),
        call(1, None, None, "2]}"),
        finish("tool_calls"),
        DONE.into(),
    ]
    .concat();
    let (events, blocks) = content(&run(&input));
    assert_eq!(
        blocks,
        json!([
            {"type":"tool_use","id":"call_a","name":"first","input":{"x":"}"}},
            {"type":"tool_use","id":"call_b","name":"second","input":{"y":[1,2]}},
        ])
    );
    // The second call's held arguments go out as one delta once the first is complete.
    let second: Vec<&Value> = events
        .iter()
        .filter(|e| e["index"] == 1 && e["type"] == "content_block_delta")
        .collect();
    assert_eq!(second[0]["delta"]["partial_json"], "{\"y\":[1,");
    // Arguments that never complete: the held call waits for the end of the message.
    let open_ended = [
        call(0, Some("a"), Some("first"), "{\"x\":"),
        call(1, Some("b"), Some("second"), "{}"),
        call(0, None, None, "1"),
        DONE.into(),
    ]
    .concat();
    let (_, blocks) = content(&run(&open_ended));
    assert_eq!(blocks[0]["input"], "{\"x\":1");
    assert_eq!(
        blocks[1],
        json!({"type":"tool_use","id":"b","name":"second","input":{}})
    );
}

#[test]
fn text_then_tool_call() {
    let input = [
        delta(json!({"role":"assistant","content":""})),
        delta(json!({"content":"Let me look."})),
        call(0, Some("call_1"), Some("ls"), "{}"),
        finish("tool_calls"),
        DONE.into(),
    ]
    .concat();
    let (events, blocks) = content(&run(&input));
    assert_eq!(
        blocks,
        json!([
            {"type":"text","text":"Let me look."},
            {"type":"tool_use","id":"call_1","name":"ls","input":{}},
        ])
    );
    assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
}

#[test]
fn tool_calls_without_index_or_id() {
    // Ollama: whole calls in one chunk; and calls without an index (Olla: index 0).
    let whole = delta(json!({"tool_calls":[
        {"id":"c1","function":{"name":"a","arguments":"{\"n\":1}"}},
        {"id":"c2","function":{"name":"b","arguments":{"n":2}}}]}));
    let no_id = delta(json!({"tool_calls":[{"index":0,"function":{"name":"c","arguments":"{}"}}]}));
    let (_, blocks) = content(&run(&(whole + &finish("stop") + DONE)));
    assert_eq!(
        blocks,
        json!([
            {"type":"tool_use","id":"c1","name":"a","input":{"n":1}},
            {"type":"tool_use","id":"c2","name":"b","input":{"n":2}},
        ])
    );
    let (events, blocks) = content(&run(&(no_id + DONE)));
    assert_eq!(blocks[0]["id"], "toolu_abcdefghijklmnop0123_0");
    assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
    // A call that never gets a name is dropped.
    let nameless = call(0, Some("x"), None, "{}") + DONE;
    let (_, blocks) = content(&run(&nameless));
    assert_eq!(blocks, json!([]));
}

#[test]
fn an_id_sent_after_the_block_opened_still_finds_the_call() {
    // Fuzzing (anthropic_stream_ops): the block opens with a made-up id before the
    // backend's id arrives; deltas that then name the call by that id, without an index,
    // used to start a new, nameless call whose arguments were dropped.
    let input = [
        call(0, None, Some("f"), "{\"a\":"),
        call(0, Some("call_0"), None, ""),
        delta(json!({"tool_calls":[{"id":"call_0","function":{"arguments":"1}"}}]})),
        DONE.into(),
    ]
    .concat();
    let (events, blocks) = content(&run(&input));
    assert_eq!(
        blocks,
        json!([{"type":"tool_use","id":"toolu_abcdefghijklmnop0123_0","name":"f","input":{"a":1}}])
    );
    assert_eq!(events.last().unwrap()["type"], "message_stop");
}

#[test]
fn repeated_id_and_name_do_not_reopen_a_call() {
    let input = [
        call(0, Some("c"), Some("f"), "{\"a\":"),
        call(0, Some("c"), Some("f"), "1}"),
        DONE.into(),
    ]
    .concat();
    let (_, blocks) = content(&run(&input));
    assert_eq!(
        blocks,
        json!([{"type":"tool_use","id":"c","name":"f","input":{"a":1}}])
    );
}

#[test]
fn arguments_after_a_closed_block_end_the_stream() {
    let input = [
        call(0, Some("a"), Some("f"), "{}"),
        delta(json!({"content":"text closes the call"})),
        call(0, None, None, " "),
        call(0, None, None, "{\"late\":1}"),
        DONE.into(),
    ]
    .concat();
    let (events, _) = content(&run(&input));
    let last = events.last().unwrap();
    assert_eq!(last["error"]["type"], "api_error");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after its block was closed")
    );
}

#[test]
fn json_shape_tracks_completeness() {
    let mut s = JsonShape::default();
    for (piece, complete) in [
        ("", false),
        ("{\"a\":\"}", false),
        ("\\\"", false),
        ("\"", false),
        ("}", true),
    ] {
        s.feed(piece);
        assert_eq!(s.complete(), complete, "{piece}");
    }
}
