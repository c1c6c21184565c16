//! Realistic inputs for the translators' tests and benches: a Claude-Code-like request,
//! and OpenAI streams as vLLM writes them.

use std::fmt::Write as _;

/// A request shaped like Claude Code's: system blocks with `cache_control`, `thinking`,
/// `context_management`, `metadata.user_id`, a conversation with a tool round trip, and
/// tool definitions (long descriptions, nested schemas) until the body is about
/// `size` bytes.
pub(crate) fn claude_code_request(size: usize) -> String {
    let mut tools = String::new();
    let mut i = 0;
    while tools.len() + 3000 < size {
        if i > 0 {
            tools.push(',');
        }
        let _ = write!(
            tools,
            r#"{{"name":"Tool{i}","description":"{desc}","input_schema":{{"type":"object","properties":{{"command":{{"type":"string","description":"The command to run; see the rules above."}},"timeout":{{"type":"number","description":"Optional timeout in milliseconds (max 600000)"}},"options":{{"type":"array","items":{{"type":"object","properties":{{"key":{{"type":"string"}},"value":{{"type":"string"}}}},"required":["key","value"],"additionalProperties":false}}}}}},"required":["command"],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}}}}"#,
            desc = "Executes a given command in a persistent shell session with optional timeout, ensuring proper handling and security measures.\\n\\nBefore executing the command, please follow these steps:\\n- Use \\\"quotes\\\" around paths <with spaces> & more. ".repeat(3),
        );
        i += 1;
    }
    format!(
        r#"{{"model":"claude-sonnet-4-5-20250929","max_tokens":32000,"temperature":1,"stream":true,
"system":[{{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude.","cache_control":{{"type":"ephemeral"}}}},{{"type":"text","text":"\nYou are an interactive CLI tool that helps users with software engineering tasks.\n","cache_control":{{"type":"ephemeral"}}}}],
"messages":[
 {{"role":"user","content":[{{"type":"text","text":"<system-reminder>\nAs you answer the user's questions, you can use the following context.\n</system-reminder>\n"}},{{"type":"text","text":"list the files in src/ and fix the failing test","cache_control":{{"type":"ephemeral"}}}}]}},
 {{"role":"assistant","content":[{{"type":"thinking","thinking":"I should list the files first.","signature":"EqQBCkYIBxgCKkA"}},{{"type":"text","text":"I'll list the files."}},{{"type":"tool_use","id":"toolu_01A","name":"Tool0","input":{{"command":"ls src/","timeout":120000}}}}]}},
 {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01A","content":[{{"type":"text","text":"api.rs\nlib.rs\nmain.rs"}}],"cache_control":{{"type":"ephemeral"}}}},{{"type":"text","text":"go on"}}]}}
],
"tools":[{tools}],
"tool_choice":{{"type":"auto"}},
"thinking":{{"type":"enabled","budget_tokens":16000}},
"context_management":{{"edits":[{{"type":"clear_tool_uses_20250919"}}]}},
"betas":["interleaved-thinking-2025-05-14"],
"service_tier":"auto","container":null,"mcp_servers":[],
"metadata":{{"user_id":"user_0a1b2c_account__session_4f5e6d7c"}}}}"#
    )
}

/// An OpenAI stream as vLLM writes it: a role chunk, `n` text chunks, the finish chunk
/// and the usage chunk (`include_usage`), then `[DONE]`.
pub(crate) fn text_stream(n: usize) -> String {
    let head = r#"{"id":"chatcmpl-9f8e7d6c5b4a39281706f5e4d3c2b1a0","object":"chat.completion.chunk","created":1730000000,"model":"qwen2.5-coder:32b","choices":[{"index":0,"#;
    let mut s = format!(
        "data: {head}\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    );
    for i in 0..n {
        let _ = write!(
            s,
            "data: {head}\"delta\":{{\"content\":\" token{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        );
    }
    let _ = write!(
        s,
        "data: {head}\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}}]}}\n\n\
         data: {{\"id\":\"chatcmpl-9f8e7d6c5b4a39281706f5e4d3c2b1a0\",\"object\":\"chat.completion.chunk\",\"created\":1730000000,\"model\":\"qwen2.5-coder:32b\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1200,\"total_tokens\":{},\"completion_tokens\":{n}}}}}\n\n\
         data: [DONE]\n\n",
        1200 + n
    );
    s
}

/// One tool call streamed as vLLM does: the id and name, then the arguments in `n`
/// pieces.
pub(crate) fn tool_stream(n: usize) -> String {
    let head = r#"{"id":"chatcmpl-tool0123456789abcdef","object":"chat.completion.chunk","created":1730000000,"model":"m","choices":[{"index":0,"#;
    let mut s = format!(
        "data: {head}\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_0\",\"type\":\"function\",\"function\":{{\"name\":\"Bash\",\"arguments\":\"\"}}}}]}},\"finish_reason\":null}}]}}\n\n"
    );
    let _ = write!(
        s,
        "data: {head}\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{{\\\"command\\\": \\\"\"}}}}]}},\"finish_reason\":null}}]}}\n\n"
    );
    for i in 0..n {
        let _ = write!(
            s,
            "data: {head}\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"part{i} \"}}}}]}},\"finish_reason\":null}}]}}\n\n"
        );
    }
    let _ = write!(
        s,
        "data: {head}\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"\\\"}}\"}}}}]}},\"finish_reason\":null}}]}}\n\n\
         data: {head}\"delta\":{{}},\"finish_reason\":\"tool_calls\"}}]}}\n\n\
         data: [DONE]\n\n"
    );
    s
}
