use serde_json::{Value, json};

use super::*;
use crate::api::anthropic::samples;

fn translate_with(body: &str, opts: &Options) -> (Value, Translated) {
    let mut out = Vec::new();
    let t = to_openai(body.as_bytes(), opts, &mut out).unwrap_or_else(|e| panic!("{e}: {body}"));
    let v = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
    (v, t)
}

fn translate(body: &str) -> Value {
    translate_with(body, &Options::default()).0
}

fn messages(body: &str) -> Value {
    translate(body)["messages"].clone()
}

fn error(body: &str) -> String {
    let mut out = b"kept".to_vec();
    let e = to_openai(body.as_bytes(), &Options::default(), &mut out).unwrap_err();
    assert_eq!(out, b"kept", "nothing is written for an invalid request");
    assert_eq!((e.status, e.kind.as_str()), (400, "invalid_request_error"));
    e.message
}

#[test]
fn parameters_map_to_openais() {
    let body = r#"{"model":"llama3.1:8b","max_tokens":1024,"system":"Be brief.",
        "messages":[{"role":"user","content":"Hi"}],"temperature":0.7,"top_p":0.9,"top_k":40,
        "stop_sequences":["\n\nHuman:","END"],"metadata":{"user_id":"u-42"},"stream":true}"#;
    let (v, t) = translate_with(body, &Options::for_endpoint(EndpointType::Vllm));
    assert_eq!(
        v,
        json!({
            "model": "llama3.1:8b",
            "messages": [{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
            "max_tokens": 1024, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
            "stop": ["\n\nHuman:", "END"],
            "stream": true, "stream_options": {"include_usage": true},
            "user": "u-42",
        })
    );
    assert_eq!(
        t,
        Translated {
            model: "llama3.1:8b".into(),
            stream: true,
            tools: false,
            input_tokens: ("Be brief.".len() + "Hi".len()) as u64 / 4,
        }
    );
}

#[test]
fn top_k_and_stream_usage_follow_the_options() {
    let body = r#"{"model":"m","max_tokens":5,"top_k":3,"stream":true,"messages":[{"role":"user","content":"x"}]}"#;
    let (v, _) = translate_with(body, &Options::default());
    assert!(v.get("top_k").is_none(), "OpenAI itself rejects top_k");
    assert_eq!(v["stream_options"]["include_usage"], true);
    let opts = Options {
        top_k: true,
        stream_usage: false,
    };
    let (v, _) = translate_with(body, &opts);
    assert_eq!(v["top_k"], 3);
    assert!(v.get("stream_options").is_none());
    for (kind, top_k) in [
        (EndpointType::Vllm, true),
        (EndpointType::Sglang, true),
        (EndpointType::LlamaCpp, true),
        (EndpointType::LmStudio, true),
        (EndpointType::Ollama, true),
        (EndpointType::Lemonade, false),
        (EndpointType::Litellm, false),
        (EndpointType::OpenAiCompatible, false),
    ] {
        assert_eq!(Options::for_endpoint(kind).top_k, top_k, "{kind:?}");
    }
    // Not streaming: no `stream` at all.
    let (v, t) = translate_with(&body.replace("true", "false"), &Options::default());
    assert!(v.get("stream").is_none() && !t.stream);
}

#[test]
fn system_blocks_join_and_lose_cache_control() {
    let body = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
        "system":[{"type":"text","text":"One.","cache_control":{"type":"ephemeral"}},{"type":"text","text":""},{"type":"text","text":" Two."}]}"#;
    assert_eq!(
        messages(body)[0],
        json!({"role":"system","content":"One. Two."})
    );
    for empty in [r#""""#, "[]", r#"[{"type":"text","text":""}]"#, "null"] {
        let body = format!(
            r#"{{"model":"m","max_tokens":5,"system":{empty},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        assert_eq!(
            messages(&body),
            json!([{"role":"user","content":"x"}]),
            "{empty}"
        );
    }
}

#[test]
fn tools_and_tool_choice() {
    let schema = r#"{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}},"required":["zeta"]}"#;
    let body = format!(
        r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"x"}}],"tools":[
        {{"name":"get_weather","description":"Weather","input_schema":{schema},"cache_control":{{"type":"ephemeral"}}}},
        {{"type":"custom","name":"bare"}},
        {{"type":"web_search_20250305","name":"web_search","max_uses":5}},
        {{"type":"bash_20250124","name":"bash"}},
        {{"description":"no name","input_schema":{{}}}}],
        "tool_choice":CHOICE}}"#
    );
    let with = |choice: &str| {
        let mut out = Vec::new();
        let t = to_openai(
            body.replace("CHOICE", choice).as_bytes(),
            &Options::default(),
            &mut out,
        );
        (out, t.unwrap())
    };
    let (out, t) = with(r#"{"type":"auto"}"#);
    assert!(t.tools);
    // The schema is copied verbatim: its key order survives (constrained decoding follows it).
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains(&format!(r#""parameters":{schema}"#)),
        "{text}"
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["tools"],
        json!([
            {"type":"function","function":{"name":"get_weather","description":"Weather","parameters":serde_json::from_str::<Value>(schema).unwrap()}},
            {"type":"function","function":{"name":"bare"}},
        ])
    );
    let choice = |c: &str| -> (Value, Option<Value>) {
        let v: Value = serde_json::from_slice(&with(c).0).unwrap();
        (
            v["tool_choice"].clone(),
            v.get("parallel_tool_calls").cloned(),
        )
    };
    assert_eq!(choice(r#"{"type":"auto"}"#), (json!("auto"), None));
    assert_eq!(choice(r#"{"type":"any"}"#), (json!("required"), None));
    assert_eq!(choice(r#"{"type":"none"}"#), (json!("none"), None));
    assert_eq!(
        choice(r#"{"type":"tool","name":"get_weather"}"#),
        (
            json!({"type":"function","function":{"name":"get_weather"}}),
            None
        )
    );
    assert_eq!(
        choice(r#"{"type":"any","disable_parallel_tool_use":true}"#),
        (json!("required"), Some(json!(false)))
    );
    // Olla's string forms, and unknown values: auto.
    assert_eq!(choice(r#""any""#).0, json!("required"));
    assert_eq!(choice(r#""none""#).0, json!("none"));
    assert_eq!(choice(r#""sometimes""#).0, json!("auto"));
    assert_eq!(choice(r#"{"type":"later"}"#).0, json!("auto"));
    assert_eq!(choice("42").0, json!("auto"));
    assert_eq!(choice("null").0, Value::Null);
    let e = to_openai(
        body.replace("CHOICE", r#"{"type":"tool"}"#).as_bytes(),
        &Options::default(),
        &mut Vec::new(),
    );
    assert_eq!(
        e.unwrap_err().message,
        "tool_choice type 'tool' requires 'name' field"
    );
    // Without usable tools, neither tools nor a choice are sent.
    let none = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
        "tools":[{"type":"web_search_20250305","name":"web_search"}],"tool_choice":{"type":"tool"}}"#;
    let (v, t) = translate_with(none, &Options::default());
    assert!(v.get("tools").is_none() && v.get("tool_choice").is_none() && !t.tools);
}

#[test]
fn assistant_tool_use_becomes_tool_calls() {
    let body = r#"{"model":"m","max_tokens":5,"messages":[
        {"role":"user","content":"weather?"},
        {"role":"assistant","content":[
            {"type":"thinking","thinking":"hmm","signature":"sig"},
            {"type":"text","text":"Let me "},{"type":"text","text":"check."},
            {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris","units":["c"]}},
            {"type":"tool_use","id":"toolu_2","name":"noop","input":{}},
            {"type":"tool_use","id":"","name":"dropped","input":{}},
            {"type":"tool_use","id":"toolu_3","input":{}}]},
        {"role":"assistant","content":[{"type":"tool_use","id":"toolu_4","name":"bare"}]},
        {"role":"assistant","content":[{"type":"thinking","thinking":"only thoughts"}]},
        {"role":"assistant","content":""}]}"#;
    assert_eq!(
        messages(body),
        json!([
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":"Let me check.","tool_calls":[
                {"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"units\":[\"c\"]}"}},
                {"id":"toolu_2","type":"function","function":{"name":"noop","arguments":"{}"}},
            ]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"toolu_4","type":"function","function":{"name":"bare","arguments":"{}"}},
            ]},
        ])
    );
}

#[test]
fn tool_results_come_first_as_tool_messages() {
    let body = r#"{"model":"m","max_tokens":5,"messages":[
        {"role":"user","content":[
            {"type":"text","text":"Here you go."},
            {"type":"tool_result","tool_use_id":"toolu_1","content":"18 degrees"},
            {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"line 1"},{"type":"text","text":"line 2"}],"cache_control":{"type":"ephemeral"}},
            {"type":"tool_result","tool_use_id":"toolu_3","content":"file not found","is_error":true},
            {"type":"tool_result","tool_use_id":"toolu_4","content":"ERROR: already said","is_error":true},
            {"type":"tool_result","tool_use_id":"toolu_5"},
            {"type":"text","text":" Thanks."}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_6","content":"only a result"}]}]}"#;
    assert_eq!(
        messages(body),
        json!([
            {"role":"tool","tool_call_id":"toolu_1","content":"18 degrees"},
            {"role":"tool","tool_call_id":"toolu_2","content":"line 1\nline 2"},
            {"role":"tool","tool_call_id":"toolu_3","content":"Error: file not found"},
            {"role":"tool","tool_call_id":"toolu_4","content":"ERROR: already said"},
            {"role":"tool","tool_call_id":"toolu_5","content":""},
            {"role":"user","content":"Here you go. Thanks."},
            {"role":"tool","tool_call_id":"toolu_6","content":"only a result"},
        ])
    );
}

#[test]
fn images_become_image_url_parts() {
    let body = r#"{"model":"m","max_tokens":5,"messages":[
        {"role":"user","content":[
            {"type":"text","text":"What is this?"},
            {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}},
            {"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}},
            {"type":"image","source":{"type":"file","file_id":"file_1"}},
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"dropped"}}]},
        {"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"screenshot:"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}}]}]}]}"#;
    assert_eq!(
        messages(body),
        json!([
            {"role":"user","content":[
                {"type":"text","text":"What is this?"},
                {"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.png"}},
            ]},
            {"role":"tool","tool_call_id":"t1","content":"screenshot:"},
            {"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}}]},
        ])
    );
}

#[test]
fn other_roles_and_shapes_pass_through() {
    let body = r#"{"model":"m","max_tokens":5,"messages":[
        {"role":"user","content":{"type":"text","text":"a lone block"}},
        {"role":"system","content":"inline system"},
        {"role":"developer","content":[{"type":"text","text":"dev blocks"}]},
        {"role":"user","content":""},
        {"role":"user"},
        {"role":"user","content":"esc \"q\" \\ \u0001 é 😀"}]}"#;
    assert_eq!(
        messages(body),
        json!([
            {"role":"user","content":"a lone block"},
            {"role":"system","content":"inline system"},
            {"role":"developer","content":"dev blocks"},
            {"role":"user","content":"esc \"q\" \\ \u{1} é 😀"},
        ])
    );
}

#[test]
fn invalid_requests_are_client_errors() {
    assert!(error("not json").starts_with("invalid request body:"));
    assert!(
        error(r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":5}]}"#)
            .contains("expected a string or an array of content blocks")
    );
    assert!(error(r#"{"model":"m","max_tokens":"1","messages":[]}"#).contains("invalid type"));
    assert!(error(r#"{"model":"m","max_tokens":1,"messages":{}}"#).contains("invalid type"));
    assert!(error(r#"{"model":7,"max_tokens":1,"messages":[]}"#).contains("invalid type"));
    let msg = r#""messages":[{"role":"user","content":"x"}]"#;
    assert_eq!(
        error(&format!(r#"{{"max_tokens":1,{msg}}}"#)),
        "model field is required"
    );
    assert_eq!(
        error(&format!(r#"{{"model":"","max_tokens":1,{msg}}}"#)),
        "model field is required"
    );
    assert_eq!(
        error(r#"{"model":"m","max_tokens":1}"#),
        "at least one message is required"
    );
    assert_eq!(
        error(r#"{"model":"m","max_tokens":1,"messages":[]}"#),
        "at least one message is required"
    );
    assert_eq!(
        error(r#"{"model":"m","max_tokens":1,"messages":[{"content":"x"}]}"#),
        "messages.0.role: field required"
    );
    assert_eq!(
        error(&format!(r#"{{"model":"m",{msg}}}"#)),
        "max_tokens: field required"
    );
    assert_eq!(
        error(&format!(r#"{{"model":"m","max_tokens":0,{msg}}}"#)),
        "max_tokens must be at least 1, got 0"
    );
    assert_eq!(
        error(&format!(r#"{{"model":"m","max_tokens":-5,{msg}}}"#)),
        "max_tokens must be at least 1, got -5"
    );
    let with = |field: &str| error(&format!(r#"{{"model":"m","max_tokens":1,{field},{msg}}}"#));
    assert_eq!(
        with(r#""temperature":2.5"#),
        "temperature must be between 0 and 2, got 2.5"
    );
    assert_eq!(
        with(r#""temperature":-1"#),
        "temperature must be between 0 and 2, got -1"
    );
    assert_eq!(
        with(r#""top_p":1.5"#),
        "top_p must be between 0 and 1, got 1.5"
    );
    assert_eq!(with(r#""top_k":-1"#), "top_k must be non-negative, got -1");
    // The boundaries are valid (Olla's tests).
    translate(&format!(
        r#"{{"model":"m","max_tokens":1,"temperature":2,"top_p":1,"top_k":0,{msg}}}"#
    ));
}

#[test]
fn output_is_appended() {
    let mut out = b"prefix".to_vec();
    let body = br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#;
    to_openai(body, &Options::default(), &mut out).unwrap();
    assert!(out.starts_with(b"prefix{\"model\""));
}

#[test]
fn a_claude_code_request_translates() {
    let body = samples::claude_code_request(50 * 1024);
    assert!(body.len() > 45 * 1024);
    let (v, t) = translate_with(&body, &Options::for_endpoint(EndpointType::LlamaCpp));
    assert!(t.stream && t.tools);
    assert_eq!(t.model, "claude-sonnet-4-5-20250929");
    // The tool definitions are most of the body, and most of the estimate.
    assert!(t.input_tokens > 40 * 1024 / 4, "{}", t.input_tokens);
    let tools = v["tools"].as_array().unwrap();
    assert!(tools.len() > 10);
    assert_eq!(tools[0]["function"]["name"], "Tool0");
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["command"])
    );
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["user"], "user_0a1b2c_account__session_4f5e6d7c");
    assert_eq!(v["max_tokens"], 32000);
    for dropped in [
        "thinking",
        "betas",
        "context_management",
        "service_tier",
        "container",
        "mcp_servers",
        "metadata",
        "system",
    ] {
        assert!(v.get(dropped).is_none(), "{dropped}");
    }
    let text = serde_json::to_string(&v).unwrap();
    assert!(
        !text.contains("cache_control") && !text.contains("signature"),
        "{text}"
    );
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    assert_eq!(
        v["messages"][2]["tool_calls"][0]["function"]["arguments"],
        r#"{"command":"ls src/","timeout":120000}"#
    );
}
