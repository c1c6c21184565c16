//! KV-cache simulation ([`crate::MockConfig::kv_cache`]): each mock instance remembers the
//! prompt prefixes it has processed, the way an inference server's prefix cache (vLLM's
//! automatic prefix caching, llama.cpp's slot cache) does, and charges prefill time only for
//! the prompt tokens it has not seen. That makes the benefit of ringway's sticky routing
//! measurable: a conversation that keeps landing on the same backend pays prefill for its new
//! turn only, one that moves pays for the whole history again.
//!
//! The model, deliberately simple:
//! - a request's prompt text is rebuilt from the parsed JSON ([`prompt_text`]), so JSON
//!   formatting does not matter and turn N+1's text starts with turn N's text plus the answer;
//! - a token is 4 bytes; the text is cut into blocks of 64 bytes (16 tokens), each identified
//!   by a chain hash (its bytes and the hash of everything before it), like vLLM's blocks;
//! - the cached part of a prompt is its longest run of leading blocks found in an LRU;
//! - after a request, the blocks of the prompt and of the answer are (re)inserted.
//!
//! Prefill contention ([`KvCacheConfig::prefill_slots`], off by default): a real backend's
//! compute is finite, so with N slots an instance runs at most N prefills at once and the
//! rest queue, first come first served. Each request takes the slot that frees first for
//! its whole prefill time (`base + per_token × uncached`); its wait is added to its time to
//! first token. The schedule is computed when the request arrives (virtual time, no task
//! waits on another), so a client that goes away keeps its slot, as a request already
//! batched on a GPU would. With slots, a block a request prefills becomes a cache hit for
//! others only once that prefill ends: two requests sharing a cold prefix that arrive
//! together both pay for it unless one queues behind the other. Without slots, the model is
//! the original one: no queue, and blocks are hits from the moment they are inserted.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

const BYTES_PER_TOKEN: usize = 4;
const BLOCK_BYTES: usize = 64;
const BLOCK_TOKENS: usize = BLOCK_BYTES / BYTES_PER_TOKEN;

/// Prefix-cache simulation parameters: time to first token is
/// `base + per_token × (prompt tokens not already cached)`.
#[derive(Clone, Debug)]
pub struct KvCacheConfig {
    /// Fixed cost of every request before its first token.
    pub base: Duration,
    /// Prefill time per uncached prompt token.
    pub per_token: Duration,
    /// LRU capacity in tokens (rounded down to whole 16-token blocks).
    pub capacity_tokens: usize,
    /// Prefills one instance runs at once; later requests queue for the first free slot.
    /// `None` (the default): unlimited, every prefill starts on arrival.
    pub prefill_slots: Option<NonZeroUsize>,
}

impl Default for KvCacheConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(20),
            // 32k cold tokens ≈ 8 s, what a real GPU took in the seed benchmark.
            per_token: Duration::from_micros(250),
            capacity_tokens: 4_000_000,
            prefill_slots: None,
        }
    }
}

/// The outcome of one request's simulated prefill.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefill {
    pub(crate) prompt_tokens: usize,
    pub(crate) cached_tokens: usize,
    /// The delay before the first token (or a non-streamed response): the wait for a
    /// prefill slot, then the prefill itself.
    pub(crate) delay: Duration,
}

/// One mock instance's cache, shared by its runtime threads.
pub(crate) struct KvCache {
    config: KvCacheConfig,
    state: Mutex<State>,
}

struct State {
    lru: Lru,
    /// When each prefill slot is next free (empty: unlimited slots).
    slots: Vec<Instant>,
}

impl KvCache {
    pub(crate) fn new(config: KvCacheConfig) -> Self {
        let lru = Lru::new(config.capacity_tokens / BLOCK_TOKENS);
        let slots = config.prefill_slots.map_or(0, NonZeroUsize::get);
        let slots = vec![Instant::now(); slots];
        Self {
            config,
            state: Mutex::new(State { lru, slots }),
        }
    }

    /// Simulates one request. `text` is the prompt text (its first `prompt_len` bytes)
    /// followed by what this request's answer adds to the next turn's prompt: only the
    /// prompt is looked up, but all of it is cached afterwards, so the next turn finds its
    /// whole history.
    pub(crate) fn prefill(&self, text: &[u8], prompt_len: usize) -> Prefill {
        self.prefill_at(text, prompt_len, Instant::now())
    }

    /// [`KvCache::prefill`] for a request arriving at `now` (tests pass their own clock).
    fn prefill_at(&self, text: &[u8], prompt_len: usize, now: Instant) -> Prefill {
        // Hashing is the expensive part (~130 KB for a 32k-token prompt): outside the lock.
        let hashes = block_hashes(text);
        let prompt_blocks = (prompt_len / BLOCK_BYTES).min(hashes.len());
        let prompt_tokens = prompt_len.div_ceil(BYTES_PER_TOKEN);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { lru, slots } = &mut *st;
        // The slot that frees first; the prefill starts when it does (or now, if sooner).
        let slot = slots.iter_mut().min();
        let start = slot.as_ref().map_or(now, |free| now.max(**free));
        let hit_blocks = lru.leading_hits(&hashes[..prompt_blocks], start);
        let cached_tokens = (hit_blocks * BLOCK_TOKENS).min(prompt_tokens);
        let uncached = u32::try_from(prompt_tokens - cached_tokens).unwrap_or(u32::MAX);
        let work =
            (self.config.base).saturating_add(self.config.per_token.saturating_mul(uncached));
        let end = start + work;
        let ready = match slot {
            Some(free) => {
                *free = end;
                end
            }
            None => now,
        };
        lru.insert(&hashes, ready);
        Prefill {
            prompt_tokens,
            cached_tokens,
            delay: end - now,
        }
    }
}

/// Chain hashes of the full 64-byte blocks of `text` (a trailing partial block is not
/// cacheable, as in vLLM): h_0 = H(block_0), h_i = H(h_{i-1}, block_i), so a block's hash
/// stands for the whole prefix ending with it.
fn block_hashes(text: &[u8]) -> Vec<u64> {
    let mut prev = None;
    text.chunks_exact(BLOCK_BYTES)
        .map(|block| {
            // DefaultHasher::new() has fixed keys: the same text hashes the same on every
            // thread of the process, which is all a per-instance cache needs.
            let mut h = DefaultHasher::new();
            if let Some(p) = prev {
                h.write_u64(p);
            }
            h.write(block);
            let hash = h.finish();
            prev = Some(hash);
            hash
        })
        .collect()
}

/// The keys are already hashes: hashing them again would only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for u64 keys; this keeps the hasher correct regardless.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An LRU set of block hashes with O(1) touch: `last_use` holds each block's latest tick
/// (and when its prefill is done), `order` every touch in tick order; an `order` entry whose
/// tick is no longer the block's latest is stale and skipped when it reaches the front
/// (lazy deletion).
struct Lru {
    /// In blocks.
    capacity: usize,
    tick: u64,
    last_use: HashMap<u64, Block, BuildHasherDefault<PassThrough>>,
    order: VecDeque<(u64, u64)>,
}

#[derive(Clone, Copy)]
struct Block {
    tick: u64,
    /// From when the block's KV is computed and can be reused.
    ready: Instant,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            last_use: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// How many of `hashes`, from the first, are cached and ready at `at` (a prefix stops at
    /// its first miss).
    fn leading_hits(&self, hashes: &[u64], at: Instant) -> usize {
        let ready = |h: &&u64| self.last_use.get(h).is_some_and(|b| b.ready <= at);
        hashes.iter().take_while(ready).count()
    }

    /// Marks `hashes` most recently used and ready from `ready` (or earlier, if they already
    /// were), then evicts down to capacity.
    fn insert(&mut self, hashes: &[u64], ready: Instant) {
        // Touched last block first, so a sequence's first block is its most recent one:
        // under pressure a conversation loses its tail before its head (like vLLM, which
        // frees a finished request's blocks tail first) and a shortened prefix stays usable.
        for &h in hashes.iter().rev() {
            self.tick += 1;
            let tick = self.tick;
            let block = self.last_use.entry(h).or_insert(Block { tick, ready });
            *block = Block {
                tick,
                ready: block.ready.min(ready),
            };
            self.order.push_back((tick, h));
        }
        while self.last_use.len() > self.capacity {
            let Some((tick, h)) = self.order.pop_front() else {
                break;
            };
            if self.last_use.get(&h).map(|b| b.tick) == Some(tick) {
                self.last_use.remove(&h);
            }
        }
        // Re-touched blocks leave stale entries behind: drop them once they dominate, so
        // `order` stays O(capacity) at an amortised O(1) per touch.
        if self.order.len() > 2 * self.last_use.len() + 1024 {
            let last_use = &self.last_use;
            (self.order).retain(|(tick, h)| last_use.get(h).map(|b| b.tick) == Some(*tick));
        }
    }
}

/// The request fields the prompt text is built from; everything else is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptBody {
    tools: Value,
    system: Value,
    messages: Value,
    prompt: Value,
}

/// The prompt text of a completion request body, built from parsed values (so whitespace
/// and key order do not matter) and the same way for every turn, so turn N+1's text starts
/// with turn N's text + `"assistant\n" + answer + "\n\n"`:
/// - chat shapes: the top-level `tools` definitions (OpenAI's or Anthropic's, as compact
///   JSON) first as `"tools\n" + json + "\n\n"`, as a chat template renders them into the
///   prompt ahead of the conversation; then `role + "\n" + content + "\n\n"` per message, an
///   Anthropic-style top-level `system` (string or text blocks) first as a `system` message;
/// - completion shapes: top-level `system` + `"\n\n"` if present, then `prompt` (a string,
///   or the first of an array of strings).
pub(crate) fn prompt_text(body: &[u8], chat: bool) -> String {
    // The body already parsed once as a completion request; a failure here just means an
    // empty (uncacheable, free) prompt.
    let b: PromptBody = serde_json::from_slice(body).unwrap_or_default();
    let mut s = String::new();
    if chat {
        if b.tools.as_array().is_some_and(|t| !t.is_empty()) {
            s.push_str("tools\n");
            s.push_str(&b.tools.to_string());
            s.push_str("\n\n");
        }
        if !b.system.is_null() {
            push_message(&mut s, "system", &b.system);
        }
        for m in b.messages.as_array().into_iter().flatten() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            push_message(&mut s, role, m.get("content").unwrap_or(&Value::Null));
        }
    } else {
        if !b.system.is_null() {
            push_content(&mut s, &b.system);
            s.push_str("\n\n");
        }
        let prompt = match &b.prompt {
            Value::Array(a) => a.first().unwrap_or(&Value::Null),
            p => p,
        };
        s.push_str(prompt.as_str().unwrap_or(""));
    }
    s
}

fn push_message(s: &mut String, role: &str, content: &Value) {
    s.push_str(role);
    s.push('\n');
    push_content(s, content);
    s.push_str("\n\n");
}

/// A string, or the `text` fields of an array of parts (images, tool calls... are skipped).
fn push_content(s: &mut String, content: &Value) {
    match content {
        Value::String(t) => s.push_str(t),
        Value::Array(parts) => {
            for t in parts.iter().filter_map(|p| p.get("text")?.as_str()) {
                s.push_str(t);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value, chat: bool) -> String {
        prompt_text(v.to_string().as_bytes(), chat)
    }

    #[test]
    fn prompt_text_rules() {
        let chat = serde_json::json!({"model": "m", "system": [{"type": "text", "text": "be "},
            {"type": "text", "text": "brief"}], "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "yo"}, {"type": "image_url"}]},
            {"role": "tool", "content": null}]});
        assert_eq!(
            text(chat, true),
            "system\nbe brief\n\nuser\nhi\n\nassistant\nyo\n\ntool\n\n\n"
        );
        let openai = serde_json::json!({"messages": [{"role": "system", "content": "be brief"}]});
        let anthropic = serde_json::json!({"system": "be brief", "messages": []});
        assert_eq!(text(openai, true), text(anthropic, true));
        let gen_ = serde_json::json!({"system": "sys", "prompt": ["first", "second"]});
        assert_eq!(text(gen_, false), "sys\n\nfirst");
        assert_eq!(text(serde_json::json!({"prompt": [1, 2]}), false), "");
        assert_eq!(prompt_text(b"not json", true), "");
        let defs = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let tools =
            serde_json::json!({"tools": defs, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(text(tools, true), format!("tools\n{defs}\n\nuser\nhi\n\n"));
        let none =
            serde_json::json!({"tools": [], "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(text(none, true), "user\nhi\n\n");
    }

    #[test]
    fn prefix_blocks_hit_and_tail_misses() {
        let kv = KvCache::new(KvCacheConfig::default());
        let a = "a".repeat(200); // 3 full blocks + 8 bytes
        let p = kv.prefill(a.as_bytes(), a.len());
        assert_eq!((p.prompt_tokens, p.cached_tokens), (50, 0));
        let p = kv.prefill(a.as_bytes(), a.len());
        assert_eq!(p.cached_tokens, 48, "only full blocks are cached");
        // Same first block, different second: the chain stops at the first miss.
        let b = "a".repeat(64) + &"b".repeat(64) + &"a".repeat(64);
        assert_eq!(kv.prefill(b.as_bytes(), b.len()).cached_tokens, 16);
        // The part after `prompt_len` is cached for the next request, not looked up now.
        let c = "c".repeat(256);
        assert_eq!(kv.prefill(c.as_bytes(), 64).cached_tokens, 0);
        assert_eq!(kv.prefill(c.as_bytes(), 256).cached_tokens, 64);
    }

    #[test]
    fn lru_evicts_least_recent_and_tails_first() {
        let mut lru = Lru::new(4);
        let t = Instant::now();
        lru.insert(&[1, 2, 3], t);
        lru.insert(&[10, 11], t);
        // Capacity 4: the oldest touch is block 3 (inserted tail first).
        assert_eq!(lru.leading_hits(&[1, 2, 3], t), 2);
        assert_eq!(lru.leading_hits(&[10, 11], t), 2);
        lru.insert(&[1], t); // touched again: now the most recent
        lru.insert(&[20], t);
        assert_eq!(lru.leading_hits(&[1, 2], t), 1, "2 was evicted, 1 kept");
        assert_eq!(lru.leading_hits(&[10, 11], t), 2);
        // Stale entries are compacted away.
        for i in 0..10_000 {
            lru.insert(&[1, 10, 11, 20 + i % 2], t);
        }
        assert!(lru.order.len() <= 2 * 4 + 1024 + 4);
        assert_eq!(lru.last_use.len(), 4);
    }

    #[test]
    fn delay_follows_uncached_tokens() {
        let kv = KvCache::new(KvCacheConfig {
            base: Duration::from_millis(1),
            per_token: Duration::from_micros(10),
            capacity_tokens: 1000,
            prefill_slots: None,
        });
        let t = "x".repeat(400); // 100 tokens, 6 full blocks
        assert_eq!(
            kv.prefill(t.as_bytes(), 400).delay,
            Duration::from_millis(2)
        );
        let warm = kv.prefill(t.as_bytes(), 400);
        assert_eq!(warm.cached_tokens, 96);
        assert_eq!(warm.delay, Duration::from_micros(1040));
    }

    #[test]
    fn prefills_queue_for_slots() {
        let kv = KvCache::new(KvCacheConfig {
            base: Duration::from_millis(1),
            per_token: Duration::from_micros(10),
            capacity_tokens: 100_000,
            prefill_slots: NonZeroUsize::new(2),
        });
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let doc = |c: &str| c.repeat(4096); // 1,024 tokens in 64 blocks: 11.24 ms cold
        let cold = ms(1) + Duration::from_micros(10_240);
        // Two slots: a and b start at once, c waits for a's slot (11 ms), d for b's.
        let a = kv.prefill_at(doc("a").as_bytes(), 4096, t0);
        let b = kv.prefill_at(doc("b").as_bytes(), 4096, t0);
        let c = kv.prefill_at(doc("c").as_bytes(), 4096, t0 + ms(1));
        assert_eq!((a.delay, b.delay), (cold, cold));
        assert_eq!(
            c.delay,
            cold - ms(1) + cold,
            "queued until a ends, then its own prefill"
        );
        // d repeats a: a's blocks are ready (a ended) by the time d gets b's slot.
        let d = kv.prefill_at(doc("a").as_bytes(), 4096, t0 + ms(2));
        assert_eq!(d.cached_tokens, 1024);
        assert_eq!(
            d.delay,
            cold - ms(2) + ms(1),
            "waits for b's slot, then the 1 ms base"
        );
        // An idle instance starts at once again.
        let e = kv.prefill_at(doc("e").as_bytes(), 4096, t0 + ms(100));
        assert_eq!(e.delay, cold);
    }

    #[test]
    fn blocks_in_prefill_are_not_hits_yet() {
        let one = |slots| KvCacheConfig {
            base: Duration::from_millis(1),
            per_token: Duration::from_micros(10),
            capacity_tokens: 100_000,
            prefill_slots: NonZeroUsize::new(slots),
        };
        let ms = Duration::from_millis;
        let doc = "s".repeat(4096);
        let cold = ms(1) + Duration::from_micros(10_240);
        // Two slots, the same cold prompt twice at once: both compute it.
        let (two, single, unlimited) = (
            KvCache::new(one(2)),
            KvCache::new(one(1)),
            KvCache::new(one(0)),
        );
        // After the caches are made: their slots are free from their creation on.
        let t0 = Instant::now();
        let kv = two;
        assert_eq!(kv.prefill_at(doc.as_bytes(), 4096, t0).cached_tokens, 0);
        let twin = kv.prefill_at(doc.as_bytes(), 4096, t0 + ms(1));
        assert_eq!((twin.cached_tokens, twin.delay), (0, cold));
        // One slot: the second queues behind the first and then finds it all cached.
        let kv = single;
        kv.prefill_at(doc.as_bytes(), 4096, t0);
        let queued = kv.prefill_at(doc.as_bytes(), 4096, t0 + ms(1));
        assert_eq!(
            (queued.cached_tokens, queued.delay),
            (1024, cold - ms(1) + ms(1))
        );
        // Unlimited slots (the default): hits at once, no queue.
        let kv = unlimited;
        kv.prefill_at(doc.as_bytes(), 4096, t0);
        let warm = kv.prefill_at(doc.as_bytes(), 4096, t0);
        assert_eq!((warm.cached_tokens, warm.delay), (1024, ms(1)));
    }
}
