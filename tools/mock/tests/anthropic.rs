//! Tool calls in OpenAI chat answers, and the native Anthropic Messages API
//! (`/v1/messages`, `/v1/messages/count_tokens`), over real sockets (client in `common`).

mod common;

use common::*;
use serde_json::{Value, json};

const MESSAGES: &str = "/v1/messages";

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"]}}})
}

fn anthropic_tool() -> Value {
    json!({"name": "get_weather", "description": "Weather", "input_schema": {"type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}}})
}

const ARGS: &str = r#"{"location":"mock","unit":"mock"}"#;

/// `event: NAME\ndata: JSON` blocks of an Anthropic stream.
fn events(r: &Resp) -> Vec<(String, Value)> {
    let text = r.text();
    let blocks = text.split("\n\n").filter(|b| !b.is_empty());
    blocks
        .map(|b| {
            let (event, data) = b.split_once('\n').unwrap_or_else(|| panic!("{b:?}"));
            let name = event
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("{b:?}"));
            let data = data
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{b:?}"));
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[test]
fn tool_call_not_streamed() {
    let m = mock("tools", |_| {});
    let a = m.addr();
    let body = json!({"model": Q, "messages": [{"role": "user", "content": "weather?"}],
        "tools": [weather_tool()]});
    let r = post(a, CHAT, body.clone());
    assert_eq!(r.status, 200);
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "mock", "unit": "mock"}));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // tool_choice "none": text as usual.
    let mut none = body.clone();
    none["tool_choice"] = json!("none");
    let v = post(a, CHAT, none).json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["content"].is_string());

    // X-Mock-Tool-Call without tools in the request: a call to that name.
    let plain = json!({"model": Q, "messages": [{"role": "user", "content": "hi"}]});
    let v = post_h(a, CHAT, &[("X-Mock-Tool-Call", "lookup")], plain.clone()).json();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], ARGS);

    // The header picks among the offered tools, whose parameters give the arguments.
    let mut two = body.clone();
    let other = json!({"type": "function", "function": {"name": "search",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}});
    two["tools"] = json!([weather_tool(), other]);
    let v = post_h(a, CHAT, &[("X-Mock-Tool-Call", "search")], two).json();
    let f = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(
        (&f["name"], &f["arguments"]),
        (&json!("search"), &json!(r#"{"query":"mock"}"#))
    );

    // No tools, no header: unchanged.
    let v = post(a, CHAT, plain).json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock backend, one token"
    );
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn tool_call_streamed() {
    let m = mock("tools", |_| {});
    let body = json!({"model": Q, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather?"}], "tools": [weather_tool()]});
    let r = post(m.addr(), CHAT, body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = sse(&r);
    assert!(ev.len() >= 6, "{ev:?}");
    let first = &ev[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert!(
        first["id"].as_str().unwrap().starts_with("call_"),
        "{first}"
    );
    assert_eq!(first["type"], "function");
    assert_eq!(first["function"]["name"], "get_weather");
    assert_eq!(first["function"]["arguments"], "");
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    let n = ev.len();
    let pieces: Vec<&str> = ev[1..n - 3]
        .iter()
        .map(|e| {
            let c = &e["choices"][0];
            assert_eq!(c["finish_reason"], Value::Null);
            let call = &c["delta"]["tool_calls"][0];
            assert_eq!(call["index"], 0);
            assert!(call.get("id").is_none());
            call["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    assert!(
        pieces.iter().all(|p| !p.is_empty() && p.len() <= 8),
        "{pieces:?}"
    );
    let args: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(args, json!({"location": "mock", "unit": "mock"}));
    assert_eq!(ev[n - 3]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev[n - 2]["choices"], json!([]));
    assert_eq!(
        ev[n - 2]["usage"]["completion_tokens"].as_u64(),
        Some(pieces.len() as u64)
    );
    assert_eq!(ev[n - 1], "[DONE]");
    // One write per event but the last three (finish, usage, [DONE]).
    assert_eq!(r.chunks.len(), n - 2);
    assert!(eventually(|| m.stats().completed_streams() == 1));
}

#[test]
fn tool_round_trip_ends_with_text() {
    let m = mock("tools", |_| {});
    let a = m.addr();
    let call = json!({"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": ARGS}});
    let messages = json!([{"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]);
    for stream in [false, true] {
        let body = json!({"model": Q, "stream": stream, "messages": messages,
            "tools": [weather_tool()]});
        let r = post_h(a, CHAT, &[("X-Mock-Tool-Call", "get_weather")], body);
        if stream {
            let ev = sse(&r);
            assert_eq!(ev[0]["choices"][0]["delta"]["content"], "Hello");
            assert_eq!(ev[ev.len() - 2]["choices"][0]["finish_reason"], "stop");
        } else {
            let v = r.json();
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
            assert_eq!(
                v["choices"][0]["message"]["content"],
                "Hello from the mock backend, one token"
            );
        }
    }
    // Anthropic: the tool_result block in the last user message.
    let messages = json!([{"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
            "name": "get_weather", "input": {"location": "mock"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
            "content": "sunny"}]}]);
    let body = json!({"model": Q, "max_tokens": 100, "messages": messages,
        "tools": [anthropic_tool()]});
    let v = post(a, MESSAGES, body).json();
    assert_eq!(v["stop_reason"], "end_turn", "{v}");
    assert_eq!(v["content"][0]["type"], "text");
}

#[test]
fn messages_not_streamed() {
    let m = mock("claude", |_| {});
    let a = m.addr();
    let body = json!({"model": Q, "max_tokens": 100, "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}]});
    let r = post(a, MESSAGES, body.clone());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-mock-backend"), Some("claude"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_mock"), "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], Q);
    let text = json!([{"type": "text", "text": "Hello from the mock backend, one token"}]);
    assert_eq!(v["content"], text);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"]["output_tokens"], 8);
    let input = v["usage"]["input_tokens"].as_u64().unwrap();
    assert!(input > 0);

    // count_tokens agrees on the same messages.
    let count = json!({"model": Q, "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}]});
    let r = post(a, "/v1/messages/count_tokens", count);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"input_tokens": input}));

    // max_tokens below the configured tokens: cut, and said so.
    let mut short = body.clone();
    short["max_tokens"] = json!(2);
    let v = post(a, MESSAGES, short).json();
    assert_eq!(v["content"][0]["text"], "Hello from");
    assert_eq!(v["stop_reason"], "max_tokens");

    // Tools: a tool_use block.
    let mut tools = body;
    tools["tools"] = json!([anthropic_tool()]);
    let v = post(a, MESSAGES, tools).json();
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"location": "mock", "unit": "mock"}));
    // Counted as inference requests, as chats are.
    assert_eq!(m.stats().requests(), 4);
}

#[test]
fn messages_streamed() {
    let m = mock("claude", |c| c.tokens = 3);
    let a = m.addr();
    let body = json!({"model": Q, "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = post_h(
        a,
        MESSAGES,
        &[("X-Mock-Token-Delay-Ms", "30")],
        body.clone(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = events(&r);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &ev {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &ev[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(
        (&start["model"], &start["role"]),
        (&json!(Q), &json!("assistant"))
    );
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        ev[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = ev[2..5]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "Hello from the");
    assert_eq!(ev[6].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(ev[6].1["usage"]["output_tokens"], 3);
    // One write per delta (the first with the opening events), one closing write,
    // spaced by the token delay.
    assert_eq!(r.chunks.len(), 4);
    let gap = r.chunks[2].0 - r.chunks[0].0;
    assert!(gap >= ms(55), "{gap:?}");
    assert!(eventually(|| m.stats().completed_streams() == 1));

    // Tools: a tool_use block whose input arrives as input_json_delta pieces.
    let mut tools = body;
    tools["tools"] = json!([anthropic_tool()]);
    let ev = events(&post(a, MESSAGES, tools));
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let n = names.len();
    assert_eq!(names[..2], ["message_start", "content_block_start"]);
    assert_eq!(
        names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let block = &ev[1].1["content_block"];
    assert_eq!(
        (&block["type"], &block["name"]),
        (&json!("tool_use"), &json!("get_weather"))
    );
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["input"], json!({}));
    let pieces: Vec<&str> = ev[2..n - 3]
        .iter()
        .map(|(name, d)| {
            assert_eq!(name, "content_block_delta");
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    assert_eq!(pieces.concat(), ARGS);
    assert_eq!(ev[n - 2].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        ev[n - 2].1["usage"]["output_tokens"].as_u64(),
        Some(pieces.len() as u64)
    );
}

#[test]
fn messages_errors() {
    let m = mock("claude", |_| {});
    let a = m.addr();
    let body = json!({"model": "claude-nope", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    for path in [MESSAGES, "/v1/messages/count_tokens"] {
        let r = post(a, path, body.clone());
        assert_eq!(r.status, 404, "{path}");
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("claude-nope")
        );
    }
    let r = Client::new(a)
        .request("POST", MESSAGES, &[], "{not json")
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(a, MESSAGES, json!({"max_tokens": 10, "messages": []}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    let r = get(a, MESSAGES);
    assert_eq!(r.status, 405);
}

#[test]
fn tool_argument_pieces() {
    // Through the wire: a one-property schema still streams in two pieces or more.
    let m = mock("tools", |_| {});
    let tool = json!({"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"é": {"type": "string"}}}}});
    let body = json!({"model": Q, "stream": true, "messages": [], "tools": [tool]});
    let ev = sse(&post(m.addr(), CHAT, body));
    let pieces: String = ev[1..ev.len() - 2]
        .iter()
        .map(|e| {
            e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(pieces, r#"{"é":"mock"}"#);
    assert!(ev.len() - 3 >= 2);
}
