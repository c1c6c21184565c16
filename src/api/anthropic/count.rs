//! `POST /v1/messages/count_tokens`, answered locally, and the prompt estimate a stream's
//! `message_start` carries until the backend reports its count: Olla's heuristic, one
//! token per four bytes of the prompt's text.
//!
//! Counted, as Olla counts them: the system prompt's text; each message's text (a
//! string, or `text` blocks); a `tool_result`'s content (string or blocks, recursively);
//! a `tool_use`'s name and its `input` as compact JSON; each tool's name, description
//! and `input_schema` as compact JSON (Claude Code's tool schemas are 10-20k tokens: left
//! out, the estimate would be far off). Images count nothing. At least 1.
//!
//! Olla measures JSON as Go's `json.Marshal` writes it (keys sorted, `<`, `>` and `&`
//! escaped as `\u003c`...); here it is the body's own JSON without whitespace, so counts
//! can differ by a token or so on schemas with those characters.

use serde_json::value::RawValue;

use super::TranslateError;
use super::json;
use super::shape::{Block, Content, Request};

/// Appends `{"input_tokens":N}` for a Messages request body (which need not be a valid
/// request otherwise: Olla does not check it) and returns N.
pub(crate) fn count_tokens(body: &[u8], out: &mut Vec<u8>) -> Result<u64, TranslateError> {
    let req: Request<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::client(format!("invalid request body: {e}")))?;
    let n = estimate(&req);
    out.extend_from_slice(b"{\"input_tokens\":");
    json::push_u64(out, n);
    out.push(b'}');
    Ok(n)
}

/// The estimated input tokens of a request.
pub(super) fn estimate(req: &Request<'_>) -> u64 {
    let mut bytes = req.system.as_ref().map_or(0, content_bytes);
    for message in req.messages.iter().flatten() {
        bytes += message.content.as_ref().map_or(0, content_bytes);
    }
    for tool in req.tools.iter().flatten() {
        bytes += tool.name.as_deref().map_or(0, str::len)
            + tool.description.as_deref().map_or(0, str::len)
            + json_bytes(tool.input_schema);
    }
    (bytes as u64 / 4).max(1)
}

fn content_bytes(content: &Content<'_>) -> usize {
    match content {
        Content::Text(s) => s.len(),
        Content::Blocks(blocks) => blocks.iter().map(block_bytes).sum(),
    }
}

fn block_bytes(block: &Block<'_>) -> usize {
    match block.kind() {
        "text" => block.text.as_deref().map_or(0, str::len),
        "tool_result" => block.content.as_ref().map_or(0, content_bytes),
        "tool_use" => block.name.as_deref().map_or(0, str::len) + json_bytes(block.input),
        _ => 0,
    }
}

/// A JSON value's compact length; nothing for an absent or null one (Go's nil map).
fn json_bytes(raw: Option<&RawValue>) -> usize {
    raw.filter(|r| r.get() != "null")
        .map_or(0, |r| json::compact_len(r.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(body: &str) -> u64 {
        let mut out = Vec::new();
        let n = count_tokens(body.as_bytes(), &mut out).unwrap();
        assert_eq!(out, format!("{{\"input_tokens\":{n}}}").into_bytes());
        n
    }

    #[test]
    fn counts_a_quarter_of_the_text_bytes() {
        // "Hello world": 11 bytes, 2 tokens (Olla's documented example).
        assert_eq!(
            count(r#"{"model":"m","messages":[{"role":"user","content":"Hello world"}]}"#),
            2
        );
        // Never below 1, even for nothing at all (not a valid request, still counted).
        assert_eq!(count(r#"{"messages":[]}"#), 1);
        assert_eq!(count("{}"), 1);
    }

    #[test]
    fn counts_system_blocks_tools_and_tool_turns() {
        let system = "s".repeat(40); // 40
        let schema = r#"{ "type": "object", "properties": { "path": { "type": "string" } } }"#;
        let compact_schema = r#"{"type":"object","properties":{"path":{"type":"string"}}}"#.len();
        let body = format!(
            r#"{{"model":"m","system":[{{"type":"text","text":"{system}","cache_control":{{"type":"ephemeral"}}}}],
            "tools":[{{"name":"read","description":"Reads a file","input_schema":{schema}}}],
            "messages":[
              {{"role":"user","content":[{{"type":"text","text":"abcd"}},{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"AAAA"}}}}]}},
              {{"role":"assistant","content":[{{"type":"tool_use","id":"t1","name":"read","input":{{"path": "/x"}}}}]}},
              {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"t1","content":[{{"type":"text","text":"12345678"}}]}},
                                         {{"type":"tool_result","tool_use_id":"t2","content":"xy"}}]}}
            ]}}"#
        );
        let bytes = 40
            + ("read".len() + "Reads a file".len() + compact_schema)
            + 4
            + ("read".len() + r#"{"path":"/x"}"#.len())
            + 8
            + 2;
        assert_eq!(count(&body), bytes as u64 / 4);
    }

    #[test]
    fn invalid_json_is_a_client_error() {
        let err = count_tokens(b"{", &mut Vec::new()).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.starts_with("invalid request body"), "{err}");
    }
}
