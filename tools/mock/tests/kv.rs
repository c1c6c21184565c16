//! The KV-cache simulation (`MockConfig::kv_cache`) over real sockets: prefix hits across
//! the turns of a conversation, shared system prompts, per-instance caches, eviction, and
//! the binary's flags. Rates are small (tens of µs per token) so every test stays well
//! under a second while cold and warm stay far apart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ringway_mock::{KvCacheConfig, MockServer};
use serde_json::{Value, json};

/// 5 ms base + 50 µs per uncached token: a 4,000-token cold prompt waits ≈ 205 ms.
fn kv_mock(name: &str, capacity_tokens: usize) -> MockServer {
    mock(name, |c| {
        c.kv_cache = Some(KvCacheConfig {
            base: ms(5),
            per_token: Duration::from_micros(50),
            capacity_tokens,
            prefill_slots: None,
        })
    })
}

/// About `tokens` tokens (4 bytes each) of text unique to `seed`.
fn filler(seed: &str, tokens: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < tokens * 4 {
        s += &format!("{seed} sentence {i} of the long prompt. ");
        i += 1;
    }
    s.truncate(tokens * 4);
    s
}

/// One turn's outcome, from the `X-Mock-*` headers and the stream.
#[derive(Debug)]
struct Turn {
    prompt: u64,
    cached: u64,
    prefill_ms: u64,
    /// Time to the first streamed chunk.
    ttft: Duration,
    answer: String,
}

fn header_num(r: &Resp, name: &str) -> u64 {
    let v = r.header(name).unwrap_or_else(|| panic!("no {name} header"));
    v.parse().unwrap()
}

/// A streamed request with a raw JSON body; the answer is the concatenated deltas.
fn turn_raw(addr: SocketAddr, path: &str, hs: &[(&str, &str)], body: &str) -> Turn {
    let mut c = Client::new(addr);
    let start = Instant::now();
    let r = c.request("POST", path, hs, body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = if path.starts_with("/api/") {
        let field = |v: Value| match path {
            "/api/chat" => v["message"]["content"].as_str().unwrap().to_owned(),
            _ => v["response"].as_str().unwrap().to_owned(),
        };
        ndjson(&r).into_iter().map(field).collect()
    } else {
        let events = sse(&r).into_iter().filter(|e| e.is_object());
        let content = |e: Value| {
            let c = &e["choices"][0];
            let t = c["delta"]["content"].as_str().or(c["text"].as_str());
            t.unwrap_or("").to_owned()
        };
        events.map(content).collect()
    };
    Turn {
        prompt: header_num(&r, "x-mock-prompt-tokens"),
        cached: header_num(&r, "x-mock-cached-tokens"),
        prefill_ms: header_num(&r, "x-mock-prefill-ms"),
        ttft: r.chunks[0].0 - start,
        answer,
    }
}

fn chat(addr: SocketAddr, messages: &Value) -> Turn {
    let body = json!({"model": Q, "stream": true, "messages": messages});
    turn_raw(addr, CHAT, &[], &body.to_string())
}

/// The prompt text's length in bytes, by the documented rule (`role\ncontent\n\n` each).
fn chat_text_len(messages: &Value) -> usize {
    let ms = messages.as_array().unwrap().iter();
    ms.map(|m| m["role"].as_str().unwrap().len() + m["content"].as_str().unwrap().len() + 3)
        .sum()
}

fn round16(tokens: u64) -> u64 {
    tokens / 16 * 16
}

/// The tokens of a text's full 64-byte blocks: all that can be cached of it.
fn cacheable(text_len: usize) -> u64 {
    (text_len / 64 * 16) as u64
}

#[test]
fn next_turn_finds_the_conversation_cached() {
    let a = kv_mock("a", 4_000_000);
    let mut messages = json!([
        {"role": "system", "content": "You are a mock."},
        {"role": "user", "content": filler("conversation one", 4000)},
    ]);
    let t1 = chat(a.addr(), &messages);
    let len1 = chat_text_len(&messages) as u64;
    assert_eq!((t1.prompt, t1.cached), (len1.div_ceil(4), 0));
    assert!(t1.ttft >= ms(200), "cold turn 1: {t1:?}");
    assert_eq!(t1.prefill_ms, (5_000 + 50 * t1.prompt + 500) / 1000);
    assert_eq!(t1.answer, "Hello from the mock backend, one token");

    // Turn 2 sends turn 1 back with the mock's answer and a new question.
    let msgs = messages.as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": t1.answer}));
    msgs.push(json!({"role": "user", "content": "And then?"}));
    let t2 = chat(a.addr(), &messages);
    assert_eq!(t2.prompt, (chat_text_len(&messages) as u64).div_ceil(4));
    assert!(t2.cached >= round16(t1.prompt), "{t2:?} after {t1:?}");
    // Everything but the new message (and a partial block) was cached.
    assert!(t2.prompt - t2.cached <= 16 + 8, "{t2:?}");
    assert!(t2.prefill_ms <= 7, "{t2:?}");
    assert!(t2.ttft < ms(100), "warm turn 2: {t2:?}");

    // Another instance has its own cache: the same turn 2 is cold there.
    let b = kv_mock("b", 4_000_000);
    let cold = chat(b.addr(), &messages);
    assert_eq!((cold.prompt, cold.cached), (t2.prompt, 0));
    assert!(cold.ttft >= ms(200), "{cold:?}");
    assert!(cold.ttft > t2.ttft * 3, "cold {cold:?} vs warm {t2:?}");
    assert_eq!(b.stats().cached_tokens(), 0);

    let s = a.stats();
    assert_eq!(s.prompt_tokens(), t1.prompt + t2.prompt);
    assert_eq!(s.cached_tokens(), t2.cached);
    let v = get(a.addr(), "/mock/stats").json();
    assert_eq!(v["cached_tokens"].as_u64(), Some(t2.cached));
    a.stop();
    b.stop();
}

#[test]
fn shared_system_prompt_is_a_shared_prefix() {
    let m = kv_mock("s", 4_000_000);
    let system = filler("shared system prompt", 2000);
    let conv = |user: String| json!([{"role": "system", "content": system}, {"role": "user", "content": user}]);
    let first = chat(m.addr(), &conv(filler("Alice", 2000)));
    assert_eq!(first.cached, 0);
    // Bob's text matches Alice's up to the first byte of the user message.
    let bob = chat(m.addr(), &conv(filler("Bob", 2000)));
    let common = "system\n".len() + system.len() + "\n\nuser\n".len();
    assert_eq!(bob.cached, (common / 64 * 16) as u64, "{bob:?}");
    assert!(bob.prompt - bob.cached >= 2000, "the rest is not cached");
    assert!(bob.ttft >= ms(100), "{bob:?}");
    m.stop();
}

#[test]
fn old_conversations_are_evicted() {
    // 32 blocks; each conversation is ~25 blocks of prompt + 1-2 of answer.
    let m = kv_mock("e", 512);
    let conv = |seed: &str| json!([{"role": "user", "content": filler(seed, 400)}]);
    assert_eq!(chat(m.addr(), &conv("old")).cached, 0);
    let warm = chat(m.addr(), &conv("old"));
    let len = chat_text_len(&conv("old"));
    assert_eq!(warm.cached, cacheable(len), "still cached: {warm:?}");
    assert_eq!(chat(m.addr(), &conv("newer")).cached, 0);
    assert_eq!(chat(m.addr(), &conv("newest")).cached, 0);
    let again = chat(m.addr(), &conv("old"));
    assert_eq!(again.cached, 0, "evicted: {again:?}");
    assert!(again.ttft >= ms(20), "{again:?}");
    m.stop();
}

#[test]
fn prompt_text_comes_from_parsed_json() {
    let m = kv_mock("j", 4_000_000);
    let long = filler("formatting", 1000);
    let messages = json!([{"role": "user", "content": long}]);
    let compact = json!({"model": Q, "stream": true, "messages": messages});
    let first = turn_raw(m.addr(), CHAT, &[], &compact.to_string());
    // Other key order, whitespace, escapes: the same prompt text, so all of it is cached.
    let escaped = serde_json::to_string(&long)
        .unwrap()
        .replace('f', "\\u0066");
    let pretty = format!(
        "{{\n  \"messages\" : [ {{ \"content\" : {escaped},\n \"role\":\"user\" }} ],\n  \
         \"stream\": true, \"model\": \"{Q}\" }}"
    );
    let second = turn_raw(m.addr(), CHAT, &[], &pretty);
    assert_eq!(second.prompt, first.prompt);
    assert_eq!(
        second.cached,
        cacheable(chat_text_len(&messages)),
        "{second:?}"
    );
    // The Ollama chat shape builds the same text, and Anthropic's top-level system string
    // reads as a system message.
    let ollama = json!({"model": Q, "messages": messages});
    let third = turn_raw(m.addr(), "/api/chat", &[], &ollama.to_string());
    assert_eq!(third.cached, second.cached);
    let sys = filler("system", 200);
    let openai = json!([{"role": "system", "content": sys}, {"role": "user", "content": "q"}]);
    let len = chat_text_len(&openai);
    chat(m.addr(), &openai);
    let anthropic = json!({"model": Q, "stream": true, "system": [{"type": "text", "text": sys}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]});
    let t = turn_raw(m.addr(), CHAT, &[], &anthropic.to_string());
    assert_eq!(t.cached, cacheable(len), "{t:?}");
    m.stop();
}

#[test]
fn completion_shapes_cache_prompt_and_continuation() {
    let m = kv_mock("c", 4_000_000);
    let prompt = filler("story", 1000);
    let body = |p: &str| json!({"model": Q, "stream": true, "system": "Be terse.", "prompt": [p]});
    let first = turn_raw(m.addr(), "/v1/completions", &[], &body(&prompt).to_string());
    let len = "Be terse.\n\n".len() + prompt.len();
    assert_eq!(first.prompt, (len as u64).div_ceil(4));
    // Continuing the text: the prompt and the generated answer are cached.
    let next = format!("{prompt}{} More.", first.answer);
    let body = json!({"model": Q, "system": "Be terse.", "prompt": next});
    let t = turn_raw(m.addr(), "/api/generate", &[], &body.to_string());
    assert_eq!(t.cached, cacheable(len + first.answer.len()), "{t:?}");
    assert!(t.ttft < ms(100), "{t:?}");
    m.stop();
}

#[test]
fn delay_header_wins_and_off_by_default() {
    let m = kv_mock("h", 4_000_000);
    let messages = json!([{"role": "user", "content": filler("override", 4000)}]);
    let body = json!({"model": Q, "stream": true, "messages": messages}).to_string();
    let hs = [("X-Mock-First-Token-Delay-Ms", "0")];
    let t = turn_raw(m.addr(), CHAT, &hs, &body);
    assert_eq!((t.cached, t.prefill_ms), (0, 0));
    assert!(t.ttft < ms(100), "{t:?}");
    // Non-streamed responses wait too and carry the headers; usage counts the prompt text.
    let body = json!({"model": Q, "messages": messages}).to_string();
    let r = Client::new(m.addr())
        .request("POST", CHAT, &[], &body)
        .unwrap();
    let len = chat_text_len(&messages);
    assert_eq!(header_num(&r, "x-mock-cached-tokens"), cacheable(len));
    assert_eq!(r.json()["usage"]["prompt_tokens"].as_u64(), Some(t.prompt));
    m.stop();

    let plain = mock("plain", |_| {});
    let r = post(
        plain.addr(),
        CHAT,
        json!({"model": Q, "messages": messages}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-mock-prompt-tokens"), None);
    assert_eq!(plain.stats().prompt_tokens(), 0);
    plain.stop();
}

#[test]
fn prefills_queue_for_a_slot() {
    // One slot: three cold 2,000-token prompts sent at once are prefilled one after another
    // (≈ 105 ms each), so the last waits for the other two.
    let m = mock("q", |c| {
        c.kv_cache = Some(KvCacheConfig {
            base: ms(5),
            per_token: Duration::from_micros(50),
            capacity_tokens: 4_000_000,
            prefill_slots: std::num::NonZeroUsize::new(1),
        })
    });
    let addr = m.addr();
    let turns: Vec<Turn> = std::thread::scope(|s| {
        let seeds = ["one", "two", "three"];
        let hs: Vec<_> = seeds
            .iter()
            .map(|seed| {
                let messages = json!([{"role": "user", "content": filler(seed, 2000)}]);
                s.spawn(move || chat(addr, &messages))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ttfts: Vec<Duration> = turns.iter().map(|t| t.ttft).collect();
    ttfts.sort();
    assert!(ttfts[0] >= ms(100), "{turns:?}");
    assert!(ttfts[1] >= ms(200), "second waits for the first: {turns:?}");
    assert!(ttfts[2] >= ms(300), "third waits for both: {turns:?}");
    // The reported delay includes the wait.
    let mut delays: Vec<u64> = turns.iter().map(|t| t.prefill_ms).collect();
    delays.sort();
    assert!(delays[2] >= 300, "{delays:?}");
    // Free again: a warm turn only pays the base (and the last partial block).
    let messages = json!([{"role": "user", "content": filler("one", 2000)}]);
    let warm = chat(addr, &messages);
    assert!(warm.ttft < ms(60), "{warm:?}");
    m.stop();
}

#[test]
fn tools_are_part_of_the_prompt() {
    let m = kv_mock("t", 4_000_000);
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "description": filler("tool", 1000), "parameters": {"type": "object"}}}]);
    let body = |user: &str| {
        json!({"model": Q, "stream": true, "tools": tools, "tool_choice": "none",
            "messages": [{"role": "user", "content": user}]})
        .to_string()
    };
    let first = turn_raw(m.addr(), CHAT, &[], &body("first question"));
    assert!(first.prompt > 1000, "{first:?}");
    assert!(first.ttft >= ms(50), "{first:?}");
    // Another user, the same tools: the definitions are a cached prefix.
    let other = turn_raw(m.addr(), CHAT, &[], &body("another question"));
    assert!(other.cached >= 1000, "{other:?}");
    assert!(other.prompt - other.cached < 32, "{other:?}");
    m.stop();
}

#[test]
fn binary_kv_flags() {
    // 202 tokens: cold ≈ 70 ms at the default rates.
    let messages = json!([{"role": "user", "content": filler("binary", 200)}]);
    for (args, kv) in [
        (&["--kv-cache", "--prefill-us-per-token", "10"][..], true),
        (&["--kv-cache-tokens", "100000"][..], true),
        (&["--prefill-base-ms", "1"][..], true),
        (&["--prefill-slots", "2"][..], true),
        (&[][..], false),
    ] {
        let listen = ["--listen", "127.0.0.1:0"];
        let (mut child, addr) = run_binary(&[args, &listen[..]].concat());
        let run = |addr: SocketAddr| {
            let r = post(addr, CHAT, json!({"model": Q, "messages": messages}));
            let r2 = post(addr, CHAT, json!({"model": Q, "messages": messages}));
            let cached = |r: &Resp| r.header("x-mock-cached-tokens").map(str::to_owned);
            (cached(&r), cached(&r2))
        };
        let got = addr.map(run);
        let _ = child.kill();
        let _ = child.wait();
        let got = got.unwrap();
        match kv {
            true => assert_eq!(got, (Some("0".into()), Some("192".into())), "{args:?}"),
            false => assert_eq!(got, (None, None)),
        }
    }
}
