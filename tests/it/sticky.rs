//! Sticky sessions: a conversation stays on one backend across turns, shards and JSON
//! formatting; distinct conversations spread even when they share a system prompt; a
//! dead backend's conversations move once and come back when it returns.

use std::time::Duration;

use crate::harness::*;

const SYSTEM: &str = "You are a meticulous assistant. Answer with care.";

/// One conversation: its messages so far, as (role, content).
struct Conversation {
    messages: Vec<(&'static str, String)>,
}

impl Conversation {
    fn new(system: &str, first: &str) -> Conversation {
        Conversation {
            messages: vec![("system", system.to_string()), ("user", first.to_string())],
        }
    }

    /// The request body of the current turn, in one of several JSON styles: key order,
    /// whitespace and escaping differ, the content does not.
    fn body(&self, model: &str, style: usize) -> String {
        let esc = |s: &str| serde_json::to_string(s).unwrap();
        let ascii_esc = |s: &str| {
            // Escape every non-alphanumeric ASCII char as \u00XX, as some serializers do.
            let mut out = String::from("\"");
            for c in s.chars() {
                if c.is_ascii_alphanumeric() {
                    out.push(c);
                } else {
                    out += &format!("\\u{:04x}", c as u32);
                }
            }
            out + "\""
        };
        let messages: Vec<String> = self
            .messages
            .iter()
            .map(|(role, content)| match style % 3 {
                0 => format!(r#"{{"role":"{role}","content":{}}}"#, esc(content)),
                1 => format!(
                    "{{\n    \"content\" : {},\n    \"role\" : \"{role}\"\n  }}",
                    ascii_esc(content)
                ),
                _ => format!(
                    r#"{{ "role": "{role}", "content": [ {{ "type": "text", "text": {} }} ] }}"#,
                    esc(content)
                ),
            })
            .collect();
        match style % 2 {
            0 => format!(
                r#"{{"model":"{model}","stream":false,"messages":[{}]}}"#,
                messages.join(",")
            ),
            _ => format!(
                "{{\n  \"messages\" : [\n  {}\n  ],\n  \"stream\" : false,\n  \"model\" : \"{model}\"\n}}",
                messages.join(",\n  ")
            ),
        }
    }

    fn answer(&mut self, reply: String, next_question: String) {
        self.messages.push(("assistant", reply));
        self.messages.push(("user", next_question));
    }
}

fn reply_text(r: &Response) -> String {
    let v = r.json();
    let openai = v["choices"][0]["message"]["content"].as_str();
    openai
        .or(v["message"]["content"].as_str())
        .unwrap_or("")
        .to_string()
}

fn four_mocks() -> Vec<MockServer> {
    ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
        .into_iter()
        .map(mock)
        .collect()
}

fn endpoints<'a>(names: &[&'a str], mocks: &[MockServer]) -> Vec<Ep<'a>> {
    names
        .iter()
        .zip(mocks)
        .map(|(n, m)| Ep::new(n, m))
        .collect()
}

const NAMES: [&str; 4] = ["gpu-0", "gpu-1", "gpu-2", "gpu-3"];

#[test]
fn a_conversation_stays_on_one_backend_whatever_the_formatting() {
    let mocks = four_mocks();
    let proxy = proxy(&endpoints(&NAMES, &mocks), "shards = 2", "");
    for path in ["/v1/chat/completions", "/api/chat"] {
        let mut conversation = Conversation::new(SYSTEM, &format!("Plan a trip ({path})"));
        let mut served = Vec::new();
        for turn in 1..=10 {
            // A fresh connection per turn: turns land on either shard.
            let r = one_shot(
                proxy.local_addr(),
                post(path, &conversation.body("llama3.2:latest", turn), "").as_bytes(),
            );
            assert_eq!(r.status, 200, "turn {turn}: {}", r.text());
            assert_eq!(r.header("X-Olla-Sticky-Key-Source"), Some("prefix_hash"));
            let expected = if turn == 1 { "miss" } else { "hit" };
            assert_eq!(
                r.header("X-Olla-Sticky-Session"),
                Some(expected),
                "turn {turn}"
            );
            served.push(r.header("X-Olla-Endpoint").unwrap().to_string());
            conversation.answer(reply_text(&r), format!("And then, step {turn}?"));
        }
        assert!(served.iter().all(|e| *e == served[0]), "{path}: {served:?}");
    }
}

/// Where 40 conversations sharing one ~5 KB system prompt land, one request each
/// (sequential: no load), through a proxy with `extra` config.
fn forty_sharing_a_system_prompt(extra: &str) -> std::collections::HashMap<String, usize> {
    let mocks = four_mocks();
    let proxy = proxy(&endpoints(&NAMES, &mocks), "", extra);
    let long_system = SYSTEM.repeat(100); // ~5 KB: the same for every conversation
    let mut per_backend = std::collections::HashMap::<String, usize>::new();
    let mut groups = std::collections::HashSet::new();
    for i in 0..40 {
        let conversation = Conversation::new(
            &long_system,
            &format!("Conversation {i}: summarise chapter {i}."),
        );
        let r = one_shot(
            proxy.local_addr(),
            post(
                "/v1/chat/completions",
                &conversation.body("llama3.2:latest", 0),
                "",
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        groups.insert(r.header("X-Ringway-Prefix-Group").map(str::to_string));
        *per_backend
            .entry(r.header("X-Olla-Endpoint").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(groups.len(), 1, "one shared prefix, one group: {groups:?}");
    per_backend
}

#[test]
fn conversations_sharing_a_long_system_prompt_share_a_prefix_group_of_two() {
    let per_backend = forty_sharing_a_system_prompt("");
    assert_eq!(per_backend.len(), 2, "{per_backend:?}");
    assert!(
        per_backend.values().all(|&n| n >= 10),
        "the two members share the conversations: {per_backend:?}"
    );
}

#[test]
fn without_prefix_groups_they_spread_over_four_backends() {
    let per_backend = forty_sharing_a_system_prompt("[prefix_groups]\nenabled = false\n");
    assert_eq!(per_backend.len(), 4, "{per_backend:?}");
    assert!(
        per_backend.values().all(|&n| n <= 16),
        "one backend above 40%: {per_backend:?}"
    );
}

#[test]
fn a_dead_backends_conversations_move_once_then_come_home() {
    let mocks: Vec<MockServer> = ["gpu-0", "gpu-1", "gpu-2"].into_iter().map(mock).collect();
    let addrs: Vec<_> = mocks.iter().map(|m| m.addr()).collect();
    // Two shards: each turn opens its own connection, so consecutive turns land on either.
    let proxy = proxy(&endpoints(&NAMES[..3], &mocks), "shards = 2", "");
    let mut conversation = Conversation::new(SYSTEM, "Tell me about rendezvous hashing.");
    let mut turn = |expected_outcome: &str| {
        let r = one_shot(
            proxy.local_addr(),
            post(
                "/v1/chat/completions",
                &conversation.body("llama3.2:latest", 0),
                "",
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("X-Olla-Sticky-Session"), Some(expected_outcome));
        let served = r.header("X-Olla-Endpoint").unwrap().to_string();
        conversation.answer(reply_text(&r), "Go on.".into());
        served
    };
    let home = turn("miss");
    assert_eq!(turn("hit"), home);
    assert_eq!(turn("hit"), home);

    // The home dies: the conversation moves, once (a repin), and stays where it moved
    // (hits on its stand-in, as Olla labels them).
    let home_index = NAMES.iter().position(|n| *n == home).unwrap();
    let mut mocks = mocks;
    mocks.remove(home_index).stop();
    let elsewhere = turn("repin");
    assert_ne!(elsewhere, home);
    for _ in 0..3 {
        assert_eq!(turn("hit"), elsewhere);
    }

    // The home returns: the conversation goes back to it (it still holds the prefix up to
    // the turn it missed).
    let restarted = ringway_mock::spawn(addrs[home_index], MockConfig::named(&home)).unwrap();
    assert!(eventually(Duration::from_secs(2), || endpoint_status(
        &proxy, &home
    )["status"]
        == "healthy"));
    assert_eq!(turn("hit"), home);
    assert_eq!(turn("hit"), home);
    drop(restarted);
}

#[test]
fn a_session_header_keys_the_session_and_is_echoed() {
    let mocks = four_mocks();
    let proxy = proxy(&endpoints(&NAMES, &mocks), "shards = 2", "");
    for header in ["X-Olla-Session-ID", "X-Session-ID"] {
        let mut served = Vec::new();
        for i in 0..8 {
            // Different conversations, one session: the header wins over the body.
            let body =
                Conversation::new(SYSTEM, &format!("question {i}")).body("llama3.2:latest", i);
            let r = one_shot(
                proxy.local_addr(),
                post(
                    "/v1/chat/completions",
                    &body,
                    &format!("{header}: agent-run-42\r\n"),
                )
                .as_bytes(),
            );
            assert_eq!(r.header("X-Olla-Sticky-Key-Source"), Some("session_header"));
            assert_eq!(r.header("X-Olla-Session-ID"), Some("agent-run-42"));
            served.push(r.header("X-Olla-Endpoint").unwrap().to_string());
        }
        assert!(
            served.iter().all(|e| *e == served[0]),
            "{header}: {served:?}"
        );
    }
}

#[test]
fn requests_without_a_key_are_balanced_and_counted() {
    let mocks = four_mocks();
    let proxy = proxy(
        &endpoints(&NAMES, &mocks),
        "",
        "[proxy]\nbalancer = \"round-robin\"",
    );
    let mut client = Client::connect(proxy.local_addr());
    let mut served = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = client.get("/api/version");
        assert_eq!(r.header("X-Olla-Sticky-Session"), Some("disabled"));
        assert_eq!(r.header("X-Olla-Sticky-Key-Source"), Some("none"));
        served.insert(r.header("X-Olla-Endpoint").unwrap().to_string());
    }
    assert_eq!(served.len(), 4, "round-robin over all four");
    let mut conversation = Conversation::new(SYSTEM, "Count me.");
    let r = client.post_json(
        "/v1/chat/completions",
        &conversation.body("llama3.2:latest", 0),
        "",
    );
    conversation.answer(reply_text(&r), "Again.".into());
    client.post_json(
        "/v1/chat/completions",
        &conversation.body("llama3.2:latest", 1),
        "",
    );
    let stats = client.get("/internal/stats/sticky").json();
    assert_eq!(stats["enabled"], true);
    assert_eq!(stats["misses"], 1);
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["repins"], 0);
    assert_eq!(stats["no_key"], 4);
    assert_eq!(stats["by_key_source"]["prefix_hash"], 2);
}

#[test]
fn sticky_routing_can_be_turned_off() {
    let mocks = four_mocks();
    let proxy = proxy(
        &endpoints(&NAMES, &mocks),
        "",
        "[sticky]\nenabled = false\n[proxy]\nbalancer = \"round-robin\"",
    );
    let mut client = Client::connect(proxy.local_addr());
    let body = Conversation::new(SYSTEM, "Same body every time").body("llama3.2:latest", 0);
    let mut served = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = client.post_json("/v1/chat/completions", &body, "");
        assert_eq!(r.header("X-Olla-Sticky-Session"), Some("disabled"));
        served.insert(r.header("X-Olla-Endpoint").unwrap().to_string());
    }
    assert_eq!(served.len(), 4);
    assert_eq!(
        client.get("/internal/stats/sticky").json(),
        serde_json::json!({"enabled": false})
    );
}

#[test]
fn a_failed_over_request_counts_its_sticky_outcome_once() {
    let mocks = four_mocks();
    let proxy = proxy(&endpoints(&NAMES, &mocks), "", "");
    let conversation = Conversation::new(SYSTEM, "Where does this land?");
    let body = conversation.body("llama3.2:latest", 0);
    let home = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", &body, "").as_bytes(),
    );
    let home = home.header("X-Olla-Endpoint").unwrap().to_string();
    // The home answers 503 from now on: the next request fails over once.
    mocks[NAMES.iter().position(|n| *n == home).unwrap()]
        .control()
        .set_status_override(Some(503));
    let r = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", &body, "").as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Ringway-Attempts"), Some("2"));
    assert_eq!(r.header("X-Olla-Routing-Decision"), Some("routed"));
    let stats = one_shot(
        proxy.local_addr(),
        b"GET /internal/stats/sticky HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .json();
    assert_eq!(
        stats["misses"].as_u64().unwrap()
            + stats["hits"].as_u64().unwrap()
            + stats["repins"].as_u64().unwrap(),
        2
    );
}

/// `X-Olla-Sticky-Session` of one request on a new connection (so on either shard).
fn outcome_of(proxy: &ringway::Server, body: &str, headers: &str) -> (String, String) {
    let r = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", body, headers).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    (
        r.header("X-Olla-Sticky-Session").unwrap().to_string(),
        r.header("X-Olla-Endpoint").unwrap().to_string(),
    )
}

fn sticky_stats(proxy: &ringway::Server) -> serde_json::Value {
    one_shot(
        proxy.local_addr(),
        b"GET /internal/stats/sticky HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .json()
}

#[test]
fn outcomes_as_olla_means_them_across_two_shards() {
    let mocks = four_mocks();
    let proxy = proxy(&endpoints(&NAMES, &mocks), "shards = 2", "");
    // An identical repeat: new once, then seen, whichever shard takes the connection.
    let body = Conversation::new(SYSTEM, "Repeat me.").body("llama3.2:latest", 0);
    let (first, home) = outcome_of(&proxy, &body, "");
    assert_eq!(first, "miss");
    for _ in 0..6 {
        assert_eq!(outcome_of(&proxy, &body, ""), ("hit".into(), home.clone()));
    }
    // One session id over different bodies: the header keys it.
    let session = "X-Olla-Session-ID: run-7\r\n";
    let turn = |i: usize, model: &str| {
        let body = Conversation::new(SYSTEM, &format!("turn {i}")).body(model, i);
        outcome_of(&proxy, &body, session).0
    };
    assert_eq!(turn(0, "llama3.2:latest"), "miss");
    for i in 1..5 {
        assert_eq!(turn(i, "llama3.2:latest"), "hit");
    }
    // The same session id with another model is another key, as in Olla.
    assert_eq!(turn(5, "qwen2.5:7b"), "miss");
    assert_eq!(turn(6, "qwen2.5:7b"), "hit");

    let stats = sticky_stats(&proxy);
    for field in [
        "active_sessions",
        "insertions",
        "hits",
        "misses",
        "repins",
        "evictions",
        "max_sessions",
        "idle_ttl_seconds",
    ] {
        assert!(stats[field].is_u64(), "{field}: {stats}");
    }
    assert_eq!(
        (&stats["misses"], &stats["hits"], &stats["insertions"]),
        (&3.into(), &11.into(), &3.into()),
        "{stats}"
    );
    assert_eq!(stats["active_sessions"], 3);
    assert_eq!(stats["max_sessions"], 10_000);
    assert_eq!(stats["idle_ttl_seconds"], 600);
}

#[test]
fn a_full_memory_forgets_the_least_recent_key_and_idle_keys_expire() {
    let mocks = four_mocks();
    let proxy = proxy(
        &endpoints(&NAMES, &mocks),
        "shards = 2",
        "[sticky]\nmax_sessions = 3\nidle_ttl_seconds = 2",
    );
    let session = |id: usize| {
        // Keys are ordered by when they were last seen, to the millisecond.
        std::thread::sleep(Duration::from_millis(3));
        format!("X-Olla-Session-ID: s{id}\r\n")
    };
    let body = Conversation::new(SYSTEM, "hello").body("llama3.2:latest", 0);
    for id in 0..3 {
        assert_eq!(outcome_of(&proxy, &body, &session(id)).0, "miss");
    }
    // s0 seen again, so s1 is the least recent when s3 needs room.
    assert_eq!(outcome_of(&proxy, &body, &session(0)).0, "hit");
    assert_eq!(outcome_of(&proxy, &body, &session(3)).0, "miss");
    let stats = sticky_stats(&proxy);
    assert_eq!(
        (
            &stats["evictions"],
            &stats["active_sessions"],
            &stats["max_sessions"]
        ),
        (&1.into(), &3.into(), &3.into()),
        "{stats}"
    );
    assert_eq!(
        outcome_of(&proxy, &body, &session(1)).0,
        "miss",
        "forgotten"
    );
    assert_eq!(outcome_of(&proxy, &body, &session(0)).0, "hit");

    // Idle for longer than the TTL: forgotten (and swept from the count).
    std::thread::sleep(Duration::from_millis(3_100));
    assert!(eventually(Duration::from_secs(3), || sticky_stats(&proxy)
        ["active_sessions"]
        == 0));
    assert_eq!(outcome_of(&proxy, &body, &session(0)).0, "miss");
}
