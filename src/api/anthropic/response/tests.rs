use serde_json::{Value, json};

use super::*;
use crate::api::anthropic::errors::ErrorType;

fn translate(body: &str) -> Value {
    let mut out = Vec::new();
    from_openai(body.as_bytes(), "claude-x", &mut out).unwrap_or_else(|e| panic!("{e}: {body}"));
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

fn completion(message: &str, finish: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-0123456789abcdef0123","object":"chat.completion","created":1,"model":"qwen",
        "choices":[{{"index":0,"message":{message},"finish_reason":{finish}{extra}}}],
        "usage":{{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120}}}}"#
    )
}

#[test]
fn a_text_answer() {
    let v = translate(&completion(
        r#"{"role":"assistant","content":"Hello!"}"#,
        r#""stop""#,
        "",
    ));
    assert_eq!(
        v,
        json!({
            "id": "msg_0123456789abcdef0123", "type": "message", "role": "assistant",
            "model": "claude-x",
            "content": [{"type":"text","text":"Hello!"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens":100,"output_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":0},
        })
    );
}

#[test]
fn tool_calls_become_tool_use_blocks() {
    let message = r#"{"role":"assistant","content":"Checking.","tool_calls":[
        {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"zeta\":1,\"alpha\":{\"b\":[true]}}"}},
        {"id":"call_2","type":"function","function":{"name":"broken","arguments":"{\"cut"}},
        {"id":"call_3","type":"function","function":{"name":"array","arguments":"[1,2]"}},
        {"id":"call_4","type":"function","function":{"name":"empty","arguments":""}},
        {"type":"function","function":{"name":"no_id","arguments":{"as":"object"}}},
        {"id":"call_6","type":"function"}]}"#;
    let mut out = Vec::new();
    from_openai(
        completion(message, r#""tool_calls""#, "").as_bytes(),
        "m",
        &mut out,
    )
    .unwrap();
    // Parsed input is copied verbatim: key order kept.
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains(r#""input":{"zeta":1,"alpha":{"b":[true]}}"#),
        "{text}"
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["content"],
        json!([
            {"type":"text","text":"Checking."},
            {"type":"tool_use","id":"call_1","name":"get_weather","input":{"zeta":1,"alpha":{"b":[true]}}},
            {"type":"tool_use","id":"call_2","name":"broken","input":{}},
            {"type":"tool_use","id":"call_3","name":"array","input":{}},
            {"type":"tool_use","id":"call_4","name":"empty","input":{}},
            {"type":"tool_use","id":"toolu_0123456789abcdef0123_4","name":"no_id","input":{"as":"object"}},
        ])
    );
    assert_eq!(v["stop_reason"], "tool_use");
}

#[test]
fn stop_reasons() {
    let text = r#"{"role":"assistant","content":"x"}"#;
    let tool = r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}"#;
    let cases = [
        (text, r#""stop""#, "", "end_turn", Value::Null),
        (text, r#""length""#, "", "max_tokens", Value::Null),
        (text, r#""content_filter""#, "", "end_turn", Value::Null),
        (text, "null", "", "end_turn", Value::Null),
        (tool, r#""tool_calls""#, "", "tool_use", Value::Null),
        (tool, r#""function_call""#, "", "tool_use", Value::Null),
        // Ollama has answered tool calls with "stop".
        (tool, r#""stop""#, "", "tool_use", Value::Null),
        (tool, r#""length""#, "", "max_tokens", Value::Null),
        // vLLM and SGLang name the stop string matched; a token id is not one.
        (
            text,
            r#""stop""#,
            r#","stop_reason":"END""#,
            "stop_sequence",
            json!("END"),
        ),
        (
            text,
            r#""stop""#,
            r#","matched_stop":"\n\nHuman:""#,
            "stop_sequence",
            json!("\n\nHuman:"),
        ),
        (
            text,
            r#""stop""#,
            r#","stop_reason":128009"#,
            "end_turn",
            Value::Null,
        ),
        (
            text,
            r#""stop""#,
            r#","matched_stop":2,"stop_reason":null"#,
            "end_turn",
            Value::Null,
        ),
        (
            text,
            r#""length""#,
            r#","stop_reason":"END""#,
            "max_tokens",
            Value::Null,
        ),
    ];
    for (message, finish, extra, reason, sequence) in cases {
        let v = translate(&completion(message, finish, extra));
        assert_eq!(
            (&v["stop_reason"], &v["stop_sequence"]),
            (&json!(reason), &sequence),
            "{finish}{extra}"
        );
    }
}

#[test]
fn reasoning_becomes_a_thinking_block() {
    for field in ["reasoning", "reasoning_content"] {
        let message =
            format!(r#"{{"role":"assistant","content":"Paris.","{field}":"The capital..."}}"#);
        let v = translate(&completion(&message, r#""stop""#, ""));
        assert_eq!(
            v["content"],
            json!([{"type":"thinking","thinking":"The capital..."},{"type":"text","text":"Paris."}]),
            "{field}"
        );
    }
}

#[test]
fn empty_answers_have_one_empty_text_block() {
    for message in [
        r#"{"role":"assistant","content":null}"#,
        r#"{"role":"assistant","content":""}"#,
        r#"{"role":"assistant"}"#,
        r#"{"role":"assistant","content":"","tool_calls":[]}"#,
    ] {
        let v = translate(&completion(message, r#""stop""#, ""));
        assert_eq!(
            v["content"],
            json!([{"type":"text","text":""}]),
            "{message}"
        );
    }
    // Content as parts (some servers): joined.
    let parts =
        r#"{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#;
    assert_eq!(
        translate(&completion(parts, r#""stop""#, ""))["content"],
        json!([{"type":"text","text":"ab"}])
    );
}

#[test]
fn usage_maps_cached_tokens_and_is_estimated_when_missing() {
    let body = r#"{"id":"chatcmpl-1","choices":[{"message":{"content":"x"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1000,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":800}}}"#;
    assert_eq!(
        translate(body)["usage"],
        json!({"input_tokens":200,"output_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":800})
    );
    let none = r#"{"id":"chatcmpl-1","choices":[{"message":{"content":"twelve bytes"},"finish_reason":"stop"}]}"#;
    assert_eq!(
        translate(none)["usage"],
        json!({"input_tokens":0,"output_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0})
    );
}

#[test]
fn message_ids() {
    let v = translate(r#"{"choices":[{"message":{"content":"x"}}]}"#);
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("msg_") && id.len() == 20, "{id}");
    let ollama = |text: &str| {
        let v = translate(&format!(
            r#"{{"id":"chatcmpl-42","choices":[{{"message":{{"content":"{text}"}}}}]}}"#
        ));
        v["id"].as_str().unwrap().to_owned()
    };
    assert!(ollama("a").starts_with("msg_42_"));
    assert_ne!(
        ollama("a"),
        ollama("b"),
        "short ids do not repeat across answers"
    );
}

#[test]
fn bad_responses_are_upstream_errors() {
    let err = |body: &str| from_openai(body.as_bytes(), "m", &mut Vec::new()).unwrap_err();
    let e = err("<html>");
    assert_eq!((e.status, e.kind), (502, ErrorType::Api));
    assert!(e.message.starts_with("invalid OpenAI response"), "{e}");
    assert_eq!(
        err(r#"{"choices":[]}"#).message,
        "no choices in OpenAI response"
    );
    assert_eq!(
        err(r#"{"object":"chat.completion"}"#).message,
        "no choices in OpenAI response"
    );
    assert_eq!(
        err(r#"{"choices":[{"index":0}]}"#).message,
        "no message in choice"
    );
    // An error body with a success status.
    let e = err(r#"{"error":{"message":"out of memory","type":"server_error","code":503}}"#);
    assert_eq!(
        (e.status, e.kind, e.message.as_str()),
        (502, ErrorType::Api, "out of memory")
    );
    let e = err(r#"{"error":{"message":"slow down","type":"rate_limit_exceeded"}}"#);
    assert_eq!(e.kind, ErrorType::RateLimit);
    let e = err(r#"{"object":"error","message":"bad n","type":"BadRequestError","code":400}"#);
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorType::InvalidRequest, "bad n")
    );
}
