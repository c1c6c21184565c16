//! Request bodies of the APIs ringway speaks, read by the `route` phase: the `model`, and
//! a hash of how the conversation opens (the `prefix_hash` sticky key); and the error
//! body ringway answers in.
//!
//! Shapes understood: OpenAI `/v1/chat/completions` and Ollama `/api/chat` (`messages`),
//! Anthropic-style (top-level `system` plus `messages`, content as a string or as blocks
//! with `text`), OpenAI `/v1/completions` and Ollama `/api/generate` (`prompt`, optional
//! `system`).
//!
//! No JSON tree is built: a small scanner walks the top-level object, hashes string
//! values as it decodes them (so `"\u00e9"` and `"é"`, or any whitespace and key order,
//! give the same key), stops reading `messages` once it knows what it needs, and skips
//! everything else with `memchr`. A malformed body yields no facts, never an error: the
//! backend is the judge of its API.

use memchr::memchr2;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

pub(crate) mod anthropic;

/// What `route` needs to know about a request body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestFacts<'a> {
    /// The top-level `model` string, as written (undecoded).
    pub(crate) model: Option<&'a [u8]>,
    /// Hash of the conversation's opening: model, system prompt(s) and first user message
    /// for chat shapes; model, system and the prompt's first bytes for completion shapes.
    pub(crate) opening: Option<u64>,
    /// The messages include an assistant turn: a later turn of a conversation.
    pub(crate) continues: bool,
    /// The body has a `messages` array (chat shape), so `continues` is meaningful.
    pub(crate) chat: bool,
    /// What this conversation shares with others (the prefix groups' key), when it has
    /// any shared part.
    pub(crate) shared: Option<SharedPrefix>,
}

/// The part of a request that conversations of one application share: model, system
/// (and developer) messages or `system`, the `tools` definitions, and optionally the
/// first bytes of the first user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedPrefix {
    pub(crate) hash: u64,
    /// Its size in the body as written (system and tools values, the user prefix).
    pub(crate) bytes: usize,
}

/// Reads what routing needs from a JSON request body. `prompt_prefix` bounds how much of
/// a completion prompt goes into the key (turns of a conversation share that prefix);
/// `user_prefix` is how much of the first user message joins the shared prefix.
pub(crate) fn inspect(body: &[u8], prompt_prefix: usize, user_prefix: usize) -> RequestFacts<'_> {
    let mut s = Scanner { s: body, i: 0 };
    let mut facts = RequestFacts::default();
    let mut opening = Opening {
        user_prefix_limit: user_prefix,
        ..Opening::default()
    };
    if s.top_level(&mut facts, &mut opening, prompt_prefix)
        .is_none()
    {
        return RequestFacts::default();
    }
    facts.shared = opening.shared(facts.model);
    facts.opening = opening.finish(facts.model);
    facts
}

/// The top-level `model` string alone, when nothing else about the body matters (sticky
/// sessions off). Once a `model` is read, the rest is not scanned unless the bytes
/// `"model"` occur in it again: in valid JSON an unescaped quote always delimits a
/// string, so a later `model` key (the one that counts, for the backends' parsers as
/// for [`inspect`]) must contain them. Bodies almost always open with the model. (Of a
/// malformed body, this may find a model that `inspect` does not: the backend judges.)
pub(crate) fn model(body: &[u8]) -> Option<&[u8]> {
    let mut s = Scanner { s: body, i: 0 };
    let (mut model, mut settled) = (None, false);
    let complete = s.object(|s, key| match key {
        b"model" if s.peek()? == b'"' => {
            model = Some(s.string()?.0);
            settled = model_key().find(&s.s[s.i..]).is_none();
            // `None` ends the scan here.
            (!settled).then_some(())
        }
        _ => s.skip_value(),
    });
    if settled || complete.is_some() {
        model
    } else {
        None
    }
}

/// The first `"` or `\` in `s`. Most strings of a request body are short (keys, roles,
/// the model), so the first 64 bytes are scanned eight at a time in plain arithmetic
/// (SWAR), which costs less than a call to memchr; memchr's vector code takes the rest
/// of a long one (a message's content).
#[inline]
fn quote_or_escape(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const SWAR_BYTES: usize = 64;
    let mut i = 0;
    while i + 8 <= s.len() && i < SWAR_BYTES {
        let word = u64::from_le_bytes(s[i..i + 8].try_into().expect("eight bytes"));
        let (quote, escape) = (
            word ^ (LO * u64::from(b'"')),
            word ^ (LO * u64::from(b'\\')),
        );
        // The lowest high bit set marks the first zero byte of either: exact, since a
        // spurious bit can only follow a real zero byte.
        let zero = ((quote.wrapping_sub(LO) & !quote) | (escape.wrapping_sub(LO) & !escape)) & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i >= SWAR_BYTES {
        return memchr2(b'"', b'\\', &s[i..]).map(|j| i + j);
    }
    s[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|j| i + j)
}

/// A searcher for the bytes `"model"`, built once (building one costs more than a search
/// through a request body).
fn model_key() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"model\""))
}

/// The parts of a conversation opening, hashed separately because they may appear in
/// any order (Anthropic's `system` can follow `messages`).
#[derive(Default)]
struct Opening {
    system: Option<u64>,
    first_user: Option<u64>,
    prompt: Option<u64>,
    /// The shared parts besides the system text: the raw `tools` value's hash, and the
    /// first user message's first `user_prefix_limit` bytes.
    tools: Option<u64>,
    user_prefix: Option<u64>,
    user_prefix_limit: usize,
    /// Bytes of the shared parts, as written.
    shared_bytes: usize,
}

impl Opening {
    /// Adds a system text (`bytes` long as written); several system messages chain in
    /// order.
    fn add_system(&mut self, h: u64, bytes: usize) {
        self.shared_bytes += bytes;
        self.system = Some(match self.system {
            None => h,
            Some(prev) => xxh3_64(&[prev.to_le_bytes(), h.to_le_bytes()].concat()),
        });
    }

    /// The prefix groups' key, when the request has a shared part.
    fn shared(&self, model: Option<&[u8]>) -> Option<SharedPrefix> {
        if self.system.is_none() && self.tools.is_none() && self.user_prefix.is_none() {
            return None;
        }
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&xxh3_64(model.unwrap_or_default()).to_le_bytes());
        key[8..16].copy_from_slice(&self.system.unwrap_or(0).to_le_bytes());
        key[16..24].copy_from_slice(&self.tools.unwrap_or(0).to_le_bytes());
        key[24..].copy_from_slice(&self.user_prefix.unwrap_or(0).to_le_bytes());
        Some(SharedPrefix {
            hash: xxh3_64(&key),
            bytes: self.shared_bytes,
        })
    }

    fn finish(self, model: Option<&[u8]>) -> Option<u64> {
        if self.first_user.is_none() && self.prompt.is_none() {
            return None;
        }
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&xxh3_64(model.unwrap_or_default()).to_le_bytes());
        key[8..16].copy_from_slice(&self.system.unwrap_or(0).to_le_bytes());
        key[16..24].copy_from_slice(&self.first_user.unwrap_or(0).to_le_bytes());
        key[24..].copy_from_slice(&self.prompt.unwrap_or(0).to_le_bytes());
        Some(xxh3_64(&key))
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    /// A string at the cursor: its raw contents (between the quotes) and whether they
    /// contain escapes.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let at = self.i + quote_or_escape(&self.s[self.i..])?;
            if self.s[at] == b'"' {
                self.i = at + 1;
                return Some((&self.s[start..at], escaped));
            }
            escaped = true;
            // Skip the escaped byte: `\"` does not end the string.
            self.i = at + 2;
            if self.i > self.s.len() {
                return None;
            }
        }
    }

    /// Skips any value at the cursor.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                while let Some(&b) = self.s.get(self.i) {
                    match b {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                None
            }
            _ => {
                // number, true, false, null
                let end = self.s[self.i..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(self.s.len() - self.i);
                (end > 0).then(|| self.i += end)
            }
        }
    }

    /// Iterates the members of an object at the cursor, calling `member` with each key
    /// and the scanner positioned at its value (which `member` must consume).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let (key, _) = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Iterates the elements of an array at the cursor; `element` consumes each one and
    /// returns `false` to skip the rest of the array.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<bool>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            if !element(self)? {
                // Back up to the `[`-level: skip the remaining elements.
                loop {
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.skip_value()?;
                        }
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn top_level(
        &mut self,
        facts: &mut RequestFacts<'a>,
        opening: &mut Opening,
        prefix: usize,
    ) -> Option<()> {
        self.object(|s, key| match key {
            b"model" if s.peek()? == b'"' => {
                facts.model = Some(s.string()?.0);
                Some(())
            }
            b"messages" => {
                facts.chat = true;
                s.messages(facts, opening)
            }
            b"system" => {
                s.ws();
                let at = s.i;
                let h = s.text_hash(usize::MAX)?;
                opening.add_system(h, s.i - at);
                Some(())
            }
            b"tools" => {
                // Hashed as written: one application sends the same bytes each time.
                s.ws();
                let at = s.i;
                s.skip_value()?;
                opening.shared_bytes += s.i - at;
                opening.tools = Some(xxh3_64(&s.s[at..s.i]));
                Some(())
            }
            b"prompt" => {
                if s.peek()? == b'[' {
                    // A batch of prompts: the first one opens the conversation.
                    s.array(|s| {
                        if opening.prompt.is_none() {
                            opening.prompt = Some(s.text_hash(prefix)?);
                        } else {
                            s.skip_value()?;
                        }
                        Some(true)
                    })
                } else {
                    opening.prompt = Some(s.text_hash(prefix)?);
                    Some(())
                }
            }
            _ => s.skip_value(),
        })
    }

    /// `messages`: leading system/developer messages and the first user message go into
    /// the opening; an assistant message anywhere marks a continued conversation, after
    /// which the rest of the array is skipped.
    fn messages(&mut self, facts: &mut RequestFacts<'a>, opening: &mut Opening) -> Option<()> {
        self.array(|s| {
            let mut role: &[u8] = b"";
            let mut content: Option<(usize, usize)> = None;
            s.object(|s, key| {
                match key {
                    b"role" => role = s.string()?.0,
                    b"content" => {
                        s.ws();
                        let at = s.i;
                        s.skip_value()?;
                        content = Some((at, s.i));
                    }
                    _ => s.skip_value()?,
                }
                Some(())
            })?;
            let element = &s.s[..s.i];
            let content_hash = |limit| match content {
                Some((at, _)) => Scanner { s: element, i: at }.text_hash(limit),
                None => Some(xxh3_64(b"")),
            };
            let content_len = content.map_or(0, |(at, end)| end - at);
            match role {
                b"system" | b"developer" if opening.first_user.is_none() => {
                    opening.add_system(content_hash(usize::MAX)?, content_len);
                }
                b"user" if opening.first_user.is_none() => {
                    opening.first_user = Some(content_hash(usize::MAX)?);
                    let limit = opening.user_prefix_limit;
                    if limit > 0 {
                        opening.user_prefix = Some(content_hash(limit)?);
                        opening.shared_bytes += content_len.min(limit);
                    }
                }
                b"assistant" => facts.continues = true,
                _ => {}
            }
            // Done once the opening is known and the conversation is seen to continue.
            Some(!(opening.first_user.is_some() && facts.continues))
        })
    }

    /// The hash of a value's text (see `text_into`). A plain string, the common case, is
    /// hashed in one call; XXH3 gives the same digest either way.
    fn text_hash(&mut self, limit: usize) -> Option<u64> {
        if self.peek()? == b'"' {
            let at = self.i;
            let (raw, escaped) = self.string()?;
            if !escaped {
                return Some(xxh3_64(&raw[..raw.len().min(limit)]));
            }
            self.i = at;
        }
        let mut h = Xxh3::new();
        self.text_into(&mut h, limit)?;
        Some(h.digest())
    }

    /// Feeds the text of a value into `h`, at most `limit` decoded bytes: a string, or an
    /// array of strings / content blocks (`{"type":"text","text":...}`); other values
    /// (images, null) contribute nothing.
    fn text_into(&mut self, h: &mut Xxh3, limit: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let (raw, escaped) = self.string()?;
                feed(h, raw, escaped, limit);
                Some(())
            }
            b'[' => {
                let mut left = limit;
                self.array(|s| {
                    match s.peek()? {
                        b'"' => {
                            let (raw, escaped) = s.string()?;
                            left -= feed(h, raw, escaped, left);
                        }
                        b'{' => s.object(|s, key| {
                            if key == b"text" && s.peek()? == b'"' {
                                let (raw, escaped) = s.string()?;
                                left -= feed(h, raw, escaped, left);
                                Some(())
                            } else {
                                s.skip_value()
                            }
                        })?,
                        _ => s.skip_value()?,
                    }
                    Some(true)
                })
            }
            _ => self.skip_value(),
        }
    }
}

/// Hashes the decoded contents of a JSON string, at most `limit` bytes; returns how many
/// decoded bytes were fed.
fn feed(h: &mut Xxh3, raw: &[u8], escaped: bool, limit: usize) -> usize {
    if !escaped {
        let n = raw.len().min(limit);
        h.update(&raw[..n]);
        return n;
    }
    let mut fed = 0;
    let mut rest = raw;
    while fed < limit {
        let Some(at) = memchr::memchr(b'\\', rest) else {
            let n = rest.len().min(limit - fed);
            h.update(&rest[..n]);
            return fed + n;
        };
        let n = at.min(limit - fed);
        h.update(&rest[..n]);
        fed += n;
        if n < at || fed >= limit {
            return fed;
        }
        let (ch, used) = unescape(&rest[at..]);
        let mut utf8 = [0u8; 4];
        let bytes = ch.encode_utf8(&mut utf8).as_bytes();
        let n = bytes.len().min(limit - fed);
        h.update(&bytes[..n]);
        fed += n;
        rest = &rest[at + used..];
    }
    fed
}

/// Decodes one escape sequence at the start of `s` (which begins with `\`): the char and
/// the bytes it took. Invalid escapes decode to U+FFFD.
fn unescape(s: &[u8]) -> (char, usize) {
    let simple = match s.get(1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let Some(hi) = hex4(s.get(2..6)) else {
                return (char::REPLACEMENT_CHARACTER, s.len().min(2));
            };
            if (0xD800..0xDC00).contains(&hi) {
                // A surrogate pair: \uD83D\uDE00.
                if s.get(6..8) == Some(b"\\u") {
                    if let Some(lo) = hex4(s.get(8..12)).filter(|lo| (0xDC00..0xE000).contains(lo))
                    {
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        return (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 12);
                    }
                }
                return (char::REPLACEMENT_CHARACTER, 6);
            }
            return (char::from_u32(hi).unwrap_or(char::REPLACEMENT_CHARACTER), 6);
        }
        _ => char::REPLACEMENT_CHARACTER,
    };
    (simple, s.len().min(2))
}

fn hex4(s: Option<&[u8]>) -> Option<u32> {
    let s = std::str::from_utf8(s?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// OpenAI's error body, `{"error":{"message","type","code"}}`: what every error ringway
/// answers itself looks like.
pub(crate) fn error_body(message: &str, kind: &str, code: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(body: &str) -> RequestFacts<'_> {
        inspect(body.as_bytes(), 1024, 0)
    }

    fn key(body: &str) -> u64 {
        facts(body).opening.expect("a key")
    }

    const TURN1: &str = r#"{"model":"llama3","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"}],"stream":true}"#;

    #[test]
    fn model_and_turns() {
        let f = facts(TURN1);
        assert_eq!(f.model, Some(&b"llama3"[..]));
        assert!(f.chat && !f.continues);
        let turn2 = r#"{"model":"llama3","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"More"}]}"#;
        let f2 = facts(turn2);
        assert!(f2.continues);
        assert_eq!(
            f.opening, f2.opening,
            "every turn of a conversation has the same key"
        );
    }

    #[test]
    fn the_key_ignores_formatting_key_order_and_escaping() {
        let pretty = r#"{
            "stream" : true,
            "messages" : [
                { "content" : "Be brief.", "role" : "system" },
                { "role" : "user", "content" : "Hi\u0020there" }
            ],
            "model" : "llama3"
        }"#;
        assert_eq!(key(TURN1), key(pretty));
        let blocks = r#"{"model":"llama3","messages":[{"role":"system","content":[{"type":"text","text":"Be brief."}]},{"role":"user","content":[{"type":"text","text":"Hi there"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert_eq!(key(TURN1), key(blocks));
    }

    #[test]
    fn distinct_conversations_sharing_a_system_prompt_get_distinct_keys() {
        let a = r#"{"model":"m","messages":[{"role":"system","content":"Long shared prompt"},{"role":"user","content":"question one"}]}"#;
        let b = r#"{"model":"m","messages":[{"role":"system","content":"Long shared prompt"},{"role":"user","content":"question two"}]}"#;
        assert_ne!(key(a), key(b));
        let other_model = a.replace("\"m\"", "\"n\"");
        assert_ne!(key(a), key(&other_model));
        let other_system = a.replace("Long shared prompt", "Another prompt");
        assert_ne!(key(a), key(&other_system));
    }

    #[test]
    fn anthropic_system_may_come_after_the_messages() {
        let before = r#"{"model":"claude","system":"Be brief.","messages":[{"role":"user","content":"Hi"}]}"#;
        let after = r#"{"model":"claude","messages":[{"role":"user","content":"Hi"}],"system":[{"type":"text","text":"Be brief."}]}"#;
        assert_eq!(key(before), key(after));
    }

    #[test]
    fn completion_prompts_key_on_a_bounded_prefix() {
        let long = "x".repeat(2000);
        let turn1 = format!(r#"{{"model":"m","prompt":"{long}"}}"#);
        let turn2 = format!(r#"{{"model":"m","prompt":"{long} and then some more"}}"#);
        assert_eq!(key(&turn1), key(&turn2));
        let batch = format!(r#"{{"model":"m","prompt":["{long}", "other"]}}"#);
        assert_eq!(key(&turn1), key(&batch));
        let f = facts(&turn1);
        assert!(!f.chat);
        let generate = r#"{"model":"m","system":"S","prompt":"P"}"#;
        let generate_no_system = r#"{"model":"m","prompt":"P"}"#;
        assert_ne!(key(generate), key(generate_no_system));
    }

    #[test]
    fn unicode_escapes_decode_like_raw_utf8() {
        let escaped = r#"{"model":"m","messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00 \/ \"q\" \n"}]}"#;
        let raw = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"café 😀 / \\\"q\\\" \\n\"}]}";
        assert_eq!(key(escaped), key(raw));
    }

    #[test]
    fn bodies_without_a_conversation_or_not_json_give_no_key() {
        for body in [
            "",
            "null",
            "[]",
            "{",
            r#"{"model":"m"}"#,
            r#"{"input":"embed me"}"#,
            "not json",
            r#"{"messages":[{"role":"user","content":"x"}"#,
        ] {
            assert_eq!(facts(body).opening, None, "{body}");
        }
        assert_eq!(facts(r#"{"model":"m"}"#).model, Some(&b"m"[..]));
    }

    #[test]
    fn the_model_alone_is_the_one_a_full_reading_finds() {
        for body in [
            TURN1,
            r#"{"messages":[{"role":"user","content":"\"model\": \"x\""}],"model":"late"}"#,
            r#"{"model":"first","model":"last"}"#,
            r#"{"model":"first","tools":[{"model":"nested"}],"model":"last"}"#,
            r#"{"model":"m","tools":[{"model":"nested"}]}"#,
            r#"{"model":null}"#,
            "not json",
        ] {
            assert_eq!(model(body.as_bytes()), facts(body).model, "{body}");
        }
        // Malformed after the model: found, where the full reading gives up.
        let cut = r#"{"model":"m","messages":[{"role":"user""#;
        assert_eq!(model(cut.as_bytes()), Some(&b"m"[..]));
    }

    #[test]
    fn quotes_and_escapes_are_found_where_they_are() {
        let naive = |s: &[u8]| s.iter().position(|&b| b == b'"' || b == b'\\');
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        // Mostly text, sometimes a quote, a backslash or a byte near them.
                        match state % 40 {
                            0 => b'"',
                            1 => b'\\',
                            2 => b'"' ^ 0x80,
                            3 => b'\\' + 1,
                            _ => b'a' + (state % 26) as u8,
                        }
                    })
                    .collect();
                assert_eq!(quote_or_escape(&bytes), naive(&bytes), "{bytes:?}");
            }
        }
    }

    #[test]
    fn nested_values_are_skipped_correctly() {
        let body = r#"{"tools":[{"type":"function","function":{"name":"f","parameters":{"a":[1,2,{"b":"}]"}]}}}],"options":{"num_predict":5,"stop":["]","}"]},"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0.5,"n":null}"#;
        let f = facts(body);
        assert_eq!(f.model, Some(&b"m"[..]));
        assert!(f.opening.is_some());
    }
}
