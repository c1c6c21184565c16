//! What each backend holds in memory and how busy it is, read by the control thread
//! (`models.loaded_refresh_interval_ms`): a model held in memory wins over one that would
//! first load, sticky conversations included, and least-connections avoids a backend
//! whose own queue is deep. Also what `/internal/status/models` says of each endpoint.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// Engine state read every 100 ms.
const POLL: &str = "[models]\nloaded_refresh_interval_ms = 100\n";

const QWEN: &str = "qwen2.5:7b";

fn models_page(proxy: &ringway::Server) -> Value {
    let raw = "GET /internal/status/models HTTP/1.1\r\nHost: t\r\n\r\n";
    one_shot(proxy.local_addr(), raw.as_bytes()).json()
}

/// An endpoint's entry in `/internal/status/models`' `endpoints`.
fn engine_of(proxy: &ringway::Server, name: &str) -> Value {
    let page = models_page(proxy);
    let entries = page["endpoints"].as_array().unwrap();
    let found = entries.iter().find(|e| e["name"] == name);
    found
        .unwrap_or_else(|| panic!("no endpoint {name} in {page}"))
        .clone()
}

/// Waits until the proxy has read that endpoint `name` holds exactly `models`.
fn wait_until_held(proxy: &ringway::Server, name: &str, models: &[&str]) {
    let seen = eventually(Duration::from_secs(5), || {
        engine_of(proxy, name)["loaded"] == serde_json::json!(models)
    });
    assert!(
        seen,
        "{name} not read holding {models:?}: {}",
        models_page(proxy)
    );
}

fn served_by(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("X-Olla-Endpoint").unwrap().to_string()
}

/// Where each of `sessions` sticky conversations about `model` goes.
fn placements(proxy: &ringway::Server, model: &str, sessions: usize) -> Vec<String> {
    let mut client = Client::connect(proxy.local_addr());
    (0..sessions)
        .map(|i| {
            let session = format!("X-Olla-Session-ID: engine-{i}\r\n");
            served_by(&client.post_json("/v1/chat/completions", &chat(model, false), &session))
        })
        .collect()
}

#[test]
fn a_model_held_in_memory_wins_over_one_that_is_not() {
    let (a, b) = (mock("a"), mock("b"));
    let proxy = proxy(&[Ep::new("a", &a), Ep::new("b", &b)], "", POLL);
    // Both hold everything: the conversations spread by rendezvous, some homed on each.
    wait_until_held(&proxy, "a", &["llama3.2:latest", QWEN]);
    let homes = placements(&proxy, QWEN, 16);
    assert!(
        homes.iter().any(|h| h == "a") && homes.iter().any(|h| h == "b"),
        "sixteen conversations all on one endpoint: {homes:?}"
    );

    // `a` keeps only llama in memory: every qwen conversation goes to `b`, those homed
    // on `a` too, while llama stays on `a`.
    a.control().set_loaded(vec!["llama3.2:latest".into()]);
    wait_until_held(&proxy, "a", &["llama3.2:latest"]);
    let page = models_page(&proxy);
    let qwen = page["recent_models"].as_array().unwrap().iter();
    let qwen = qwen.clone().find(|m| m["name"] == QWEN).unwrap().clone();
    assert_eq!(qwen["loaded_on"], serde_json::json!(["b"]), "{page}");
    assert_eq!(qwen["cold_on"], serde_json::json!(["a"]), "{page}");
    assert_eq!(placements(&proxy, QWEN, 16), vec!["b"; 16]);

    // `a` loads qwen and `b` unloads it: traffic follows after the next read.
    a.control().set_all_loaded();
    b.control().set_loaded(vec![]);
    wait_until_held(&proxy, "a", &["llama3.2:latest", QWEN]);
    wait_until_held(&proxy, "b", &[]);
    assert_eq!(placements(&proxy, QWEN, 16), vec!["a"; 16]);

    // Nobody holds it: back to plain rendezvous.
    a.control().set_loaded(vec![]);
    wait_until_held(&proxy, "a", &[]);
    assert_eq!(placements(&proxy, QWEN, 16), homes);
}

#[test]
fn least_connections_avoids_a_backend_with_a_deep_queue() {
    let (a, b) = (mock("a"), mock("b"));
    a.control().set_queue_depth(50);
    let endpoints = [Ep::new("a", &a).kind("vllm"), Ep::new("b", &b).kind("vllm")];
    let proxy = proxy(
        &endpoints,
        "",
        &format!("{POLL}[sticky]\nenabled = false\n"),
    );
    let read = |name: &str, n: u64| {
        eventually(Duration::from_secs(5), || {
            endpoint_status(&proxy, name)["queued"] == n
        })
    };
    assert!(read("a", 50), "{}", endpoint_status(&proxy, "a"));
    let mut client = Client::connect(proxy.local_addr());
    let mut send = || served_by(&client.post_json("/v1/chat/completions", &chat(QWEN, false), ""));
    let chosen: Vec<String> = (0..8).map(|_| send()).collect();
    assert_eq!(chosen, vec!["b"; 8]);

    // The queue drains: both take turns again.
    a.control().set_queue_depth(0);
    assert!(read("a", 0));
    let chosen: Vec<String> = (0..8).map(|_| send()).collect();
    assert!(chosen.iter().any(|e| e == "a"), "{chosen:?}");
    assert_eq!(engine_of(&proxy, "a")["queued"], 0);
}

#[test]
fn each_engine_type_says_what_it_holds_and_how_deep_its_queue_is() {
    let mocks: Vec<MockServer> = ["ollama", "lm", "llama", "vllm", "openai"]
        .into_iter()
        .map(mock)
        .collect();
    for m in &mocks {
        m.control().set_loaded(vec![QWEN.into()]);
        m.control().set_queue_depth(7);
    }
    let kinds = ["ollama", "lm-studio", "llamacpp", "vllm", "openai"];
    let endpoints: Vec<Ep<'_>> = ["ollama", "lm", "llama", "vllm", "openai"]
        .iter()
        .zip(&mocks)
        .zip(kinds)
        .map(|((name, m), kind)| Ep::new(name, m).kind(kind))
        .collect();
    let proxy = proxy(&endpoints, "", POLL);
    let both = ["llama3.2:latest", QWEN];
    wait_until_held(&proxy, "ollama", &[QWEN]);
    wait_until_held(&proxy, "lm", &[QWEN]);
    // A plain llama-server and vLLM hold the one model they serve: the mock's list.
    wait_until_held(&proxy, "llama", &both);
    wait_until_held(&proxy, "vllm", &both);
    let queued = |name: &str| endpoint_status(&proxy, name)["queued"].as_u64().unwrap();
    assert!(eventually(Duration::from_secs(5), || queued("vllm") == 7
        && queued("llama") == 7));
    for name in ["ollama", "lm", "llama", "vllm"] {
        let e = engine_of(&proxy, name);
        assert_eq!(e["reports_loaded"], true, "{e}");
        assert!(e["loaded_read"].is_string(), "{e}");
    }
    let gateway = engine_of(&proxy, "openai");
    assert_eq!(
        (
            &gateway["reports_loaded"],
            &gateway["loaded"],
            &gateway["loaded_read"]
        ),
        (&Value::Bool(false), &Value::Null, &Value::Null),
        "an OpenAI-compatible gateway cannot say"
    );
    assert_eq!(
        (queued("ollama"), queued("openai")),
        (0, 0),
        "no queue metric"
    );
    // None of it counts as traffic at the mocks.
    assert!(mocks.iter().all(|m| m.stats().requests() == 0));
}

#[test]
fn engines_are_not_read_when_the_interval_is_0() {
    let a = mock("a");
    a.control().set_loaded(vec![]);
    let proxy = proxy(&[Ep::new("a", &a).kind("vllm")], "", "");
    a.control().set_queue_depth(9);
    std::thread::sleep(Duration::from_millis(300));
    let e = engine_of(&proxy, "a");
    assert_eq!(
        (&e["reports_loaded"], &e["queued"]),
        (&Value::Bool(false), &Value::from(0))
    );
}
