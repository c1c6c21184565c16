//! Olla's model pages and statistics in Olla's shapes: the unified model list in each
//! format, one model by id or alias, LM Studio's own lists, per-model request statistics
//! and the process page, against mocks of several backend types.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn with_models(name: &str, models: &[&str]) -> MockServer {
    mock_with(MockConfig {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..MockConfig::named(name)
    })
}

/// An Ollama, an LM Studio and a vLLM endpoint; qwen2.5:7b is on two of them.
struct Fleet {
    _mocks: [MockServer; 3],
    proxy: ringway::Server,
}

fn fleet(extra: &str) -> Fleet {
    let ol = with_models("ol", &["llama3.2:latest", "qwen2.5:7b"]);
    let lm = with_models(
        "lm",
        &[
            "qwen2.5-7b-instruct",
            "text-embedding-nomic-embed-text-v1.5",
        ],
    );
    let vl = with_models("vl", &["Qwen/Qwen2.5-7B-Instruct", "qwen2.5:7b"]);
    let proxy = proxy(
        &[
            Ep::new("ol", &ol),
            Ep::new("lm", &lm).kind("lm-studio"),
            Ep::new("vl", &vl).kind("vllm"),
        ],
        "",
        extra,
    );
    Fleet {
        _mocks: [ol, lm, vl],
        proxy,
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    let items = list["data"].as_array().or(list["models"].as_array());
    items
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|m| m[key].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list}"))
}

#[test]
fn the_unified_list_in_olla_shape() {
    let f = fleet("");
    let mut client = Client::connect(f.proxy.local_addr());
    let r = client.get("/olla/models");
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["object"], "list");
    assert_eq!(
        ids(&list, "id"),
        [
            "Qwen/Qwen2.5-7B-Instruct",
            "llama3.2:latest",
            "qwen2.5-7b-instruct",
            "qwen2.5:7b",
            "text-embedding-nomic-embed-text-v1.5"
        ]
    );
    assert_eq!(
        client.get("/olla/models?format=unified").json()["data"],
        list["data"]
    );
    for m in list["data"].as_array().unwrap() {
        assert_eq!(
            (&m["object"], &m["owned_by"]),
            (&"model".into(), &"olla".into())
        );
        assert!(m["created"].as_u64().unwrap() > 1_700_000_000, "{m}");
        for key in ["family", "variant", "parameter_size", "quantization"] {
            assert!(m["olla"][key].is_string(), "{key} of {m}");
        }
        assert!(m["olla"]["aliases"].as_array().unwrap().contains(&m["id"]));
        assert!(m["olla"]["capabilities"].is_array());
    }
    // From Ollama's details: family, size, quantisation; on disk, so "available".
    let llama = &find(&list, "llama3.2:latest")["olla"];
    assert_eq!(
        (
            &llama["family"],
            &llama["parameter_size"],
            &llama["quantization"]
        ),
        (&"llama".into(), &"7b".into(), &"q4km".into())
    );
    assert_eq!(
        llama["availability"],
        serde_json::json!([{"endpoint": "ol", "state": "available"}])
    );
    assert_eq!(
        llama["aliases"],
        serde_json::json!(["llama3.2:latest", "llama3.2"])
    );
    assert!(
        llama.get("max_context_length").is_none(),
        "/api/tags has none"
    );
    // Both endpoints serving it are listed.
    let qwen = &find(&list, "qwen2.5:7b")["olla"];
    let on: Vec<&str> = qwen["availability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(on, ["ol", "vl"]);
    // LM Studio's entry: arch, type, state and context length.
    let lm = &find(&list, "qwen2.5-7b-instruct")["olla"];
    assert_eq!(lm["max_context_length"], 8192);
    assert_eq!(lm["availability"][0]["state"], "loaded");
    let caps = lm["capabilities"].as_array().unwrap();
    assert!(caps.contains(&"chat".into()) && caps.contains(&"instruction-following".into()));
    let embed = &find(&list, "text-embedding-nomic-embed-text-v1.5")["olla"];
    let caps = embed["capabilities"].as_array().unwrap();
    assert!(caps.contains(&"embeddings".into()));
    assert!(!caps.contains(&"text-generation".into()));
    // vLLM's max_model_len; the family and variant from the name.
    let vllm = &find(&list, "Qwen/Qwen2.5-7B-Instruct")["olla"];
    assert_eq!(
        (&vllm["family"], &vllm["variant"]),
        (&"qwen".into(), &"2.5".into())
    );
    assert_eq!(vllm["max_context_length"], 8192);

    // Olla's filters.
    assert_eq!(
        ids(&client.get("/olla/models?endpoint=lm").json(), "id"),
        [
            "qwen2.5-7b-instruct",
            "text-embedding-nomic-embed-text-v1.5"
        ]
    );
    assert_eq!(
        ids(&client.get("/olla/models?type=embeddings").json(), "id"),
        ["text-embedding-nomic-embed-text-v1.5"]
    );
    assert_eq!(
        ids(&client.get("/olla/models?family=llama").json(), "id"),
        ["llama3.2:latest"]
    );
}

#[test]
fn every_format_and_the_lm_studio_lists() {
    let f = fleet("");
    let mut client = Client::connect(f.proxy.local_addr());
    let openai = client.get("/olla/models?format=openai").json();
    assert_eq!(
        (openai["object"].as_str(), ids(&openai, "id").len()),
        (Some("list"), 5)
    );
    let ollama = client.get("/olla/models?format=ollama").json();
    assert_eq!(ids(&ollama, "name"), ["llama3.2:latest", "qwen2.5:7b"]);
    assert!(ollama["models"][0]["details"]["family"].is_string());

    let lmstudio = client.get("/olla/models?format=lmstudio").json();
    assert_eq!(
        ids(&lmstudio, "id"),
        [
            "qwen2.5-7b-instruct",
            "text-embedding-nomic-embed-text-v1.5"
        ]
    );
    let entry = &lmstudio["data"][0];
    assert_eq!(
        (&entry["object"], &entry["type"], &entry["state"]),
        (&"model".into(), &"llm".into(), &"loaded".into())
    );
    assert_eq!(
        (&entry["arch"], &entry["max_context_length"]),
        (&"qwen".into(), &8192.into())
    );
    assert_eq!(lmstudio["data"][1]["type"], "embeddings");
    // LM Studio's own lists under every spelling of its prefix.
    for prefix in ["lmstudio", "lm-studio", "lm_studio"] {
        let v0 = client.get(&format!("/olla/{prefix}/api/v0/models"));
        assert_eq!(v0.status, 200);
        assert_eq!(v0.json(), lmstudio, "{prefix}");
        let v1 = client.get(&format!("/olla/{prefix}/api/v1/models")).json();
        assert_eq!(v1["object"], "list");
        assert_eq!(
            ids(&v1, "id"),
            ids(&lmstudio, "id"),
            "LM Studio's models only"
        );
    }

    let vllm = client.get("/olla/models?format=vllm").json();
    assert_eq!(
        ids(&vllm, "id").len(),
        5,
        "every model, as Olla's vLLM format"
    );
    let qwen = find(&vllm, "Qwen/Qwen2.5-7B-Instruct");
    assert_eq!(
        (&qwen["owned_by"], &qwen["root"]),
        (&"Qwen".into(), &qwen["id"])
    );
    assert_eq!(qwen["max_model_len"], 8192);
    let permission = &qwen["permission"][0];
    assert_eq!(permission["object"], "model_permission");
    assert_eq!(permission["id"], "modelperm-olla-Qwen-Qwen2.5-7B-Instruct");
    assert_eq!(find(&vllm, "llama3.2:latest")["owned_by"], "vllm");
    assert!(
        find(&vllm, "llama3.2:latest")
            .get("max_model_len")
            .is_none()
    );

    let r = client.get("/olla/models?format=xml");
    assert_error(&r, 400, "bad_request");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vllm")
    );
}

#[test]
fn one_model_by_id_or_alias() {
    let f = fleet("[model_aliases]\nfast = [\"qwen2.5:7b\"]");
    let mut client = Client::connect(f.proxy.local_addr());
    let r = client.get("/olla/models/qwen2.5:7b");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(m["id"], "qwen2.5:7b");
    assert_eq!(m["endpoints"], serde_json::json!(["ol", "vl"]));
    assert_eq!(m["aliases"], serde_json::json!(["qwen2.5:7b", "fast"]));
    assert_eq!(
        (&m["family"], &m["parameter_size"], &m["parameter_count"]),
        (&"qwen".into(), &"7b".into(), &7_000_000_000u64.into())
    );
    assert_eq!(
        (&m["format"], &m["quantization"]),
        (&"gguf".into(), &"q4km".into())
    );
    assert_eq!(
        m["total_disk_size"], "976.56 KB",
        "the Ollama mock's 1,000,000 bytes"
    );
    assert!(m["last_seen"].as_str().unwrap().ends_with(" ago"), "{m}");
    assert_eq!(m["max_context_length"], 8192, "from the vLLM endpoint");
    assert_eq!(m["availability"]["status"], "available");
    assert_eq!(m["availability"]["healthy_count"], 2);
    assert!(m["loaded_endpoints"].as_array().unwrap().is_empty());

    // An alias, Ollama's implicit tag, an id with a slash (raw and escaped).
    assert_eq!(client.get("/olla/models/fast").json()["id"], "qwen2.5:7b");
    assert_eq!(
        client.get("/olla/models/llama3.2").json()["id"],
        "llama3.2:latest"
    );
    for path in [
        "/olla/models/Qwen/Qwen2.5-7B-Instruct",
        "/olla/models/Qwen%2FQwen2.5-7B-Instruct",
    ] {
        let r = client.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["id"], "Qwen/Qwen2.5-7B-Instruct");
    }
    let lm = client.get("/olla/models/qwen2.5-7b-instruct").json();
    assert_eq!(lm["loaded_endpoints"], serde_json::json!(["lm"]));

    // Olla's 404: plain text.
    let r = client.get("/olla/models/gpt-9");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "Model not found\n");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(client.get("/olla/models/").status, 400);
}

fn chat_for(model: &str) -> String {
    post("/v1/chat/completions", &chat(model, false), "")
}

fn model_stats(proxy: &ringway::Server, query: &str) -> Value {
    let r = one_shot(
        proxy.local_addr(),
        format!("GET /internal/stats/models{query} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn stats_of<'a>(page: &'a Value, model: &str) -> &'a Value {
    page["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .unwrap_or_else(|| panic!("no {model} in {page}"))
}

#[test]
fn per_model_statistics_count_requests_outcomes_and_routing() {
    let (a, b) = (mock("a"), mock("b"));
    let proxy = proxy(
        &[Ep::new("a", &a), Ep::new("b", &b)],
        "shards = 2",
        "[proxy]\nbalancer = \"round-robin\"\n[sticky]\nenabled = false",
    );
    let empty = model_stats(&proxy, "");
    assert_eq!(empty["models"], serde_json::json!([]));
    assert_eq!(empty["summary"]["total_requests"], 0);
    assert_eq!(empty["endpoints"], serde_json::json!({}));

    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..5 {
        assert_eq!(
            client
                .request(chat_for("llama3.2:latest").as_bytes())
                .status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            client.request(chat_for("qwen2.5:7b").as_bytes()).status,
            200
        );
    }
    // A second client connection (the same address: one client).
    assert_eq!(
        one_shot(proxy.local_addr(), chat_for("qwen2.5:7b").as_bytes()).status,
        200
    );
    let page = model_stats(&proxy, "");
    assert!(page["timestamp"].as_str().unwrap().ends_with('Z'));
    let names: Vec<&str> = page["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["llama3.2:latest", "qwen2.5:7b"],
        "most requested first"
    );
    let llama = stats_of(&page, "llama3.2:latest");
    assert_eq!(
        (
            &llama["total_requests"],
            &llama["successful_requests"],
            &llama["failed_requests"]
        ),
        (&5.into(), &5.into(), &0.into())
    );
    assert_eq!(
        (&llama["success_rate"], &llama["unique_clients"]),
        (&"100%".into(), &1.into())
    );
    assert_eq!(
        (&llama["routing_hits"], &llama["routing_misses"]),
        (&5.into(), &0.into())
    );
    assert_eq!(llama["routing_fallbacks"], 0);
    assert!(llama["total_bytes"].as_u64().unwrap() > 5 * 100, "{llama}");
    assert!(llama["total_traffic"].as_str().unwrap().ends_with('B'));
    for key in ["average_latency", "p95_latency", "p99_latency"] {
        let v = llama[key].as_str().unwrap();
        assert!(v.ends_with("ms") || v.ends_with('s'), "{key}: {v}");
    }
    assert!(llama["p99_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(llama["last_requested"].as_str().unwrap().ends_with(" ago"));
    assert!(
        llama.get("endpoint_breakdown").is_none(),
        "only when asked for"
    );
    let summary = &page["summary"];
    assert_eq!(
        (
            &summary["total_models"],
            &summary["active_models"],
            &summary["total_requests"]
        ),
        (&2.into(), &2.into(), &8.into())
    );
    assert_eq!(summary["overall_success_rate"], "100%");
    assert_eq!(
        (
            &summary["most_popular_model"],
            &summary["least_popular_model"]
        ),
        (&"llama3.2:latest".into(), &"qwen2.5:7b".into())
    );

    // Failing over from b to a is a routing miss; both failing, a failure.
    b.control().set_inference_status_override(Some(503));
    for _ in 0..4 {
        assert_eq!(
            client
                .request(chat_for("llama3.2:latest").as_bytes())
                .status,
            200
        );
    }
    a.control().set_inference_status_override(Some(503));
    assert_eq!(
        client
            .request(chat_for("llama3.2:latest").as_bytes())
            .status,
        503
    );
    let page = model_stats(&proxy, "?include_endpoints=true&include_summary=true");
    let llama = stats_of(&page, "llama3.2:latest");
    assert_eq!(
        (&llama["total_requests"], &llama["failed_requests"]),
        (&10.into(), &1.into())
    );
    assert_eq!(llama["success_rate"], "90.0%");
    let (hits, misses) = (
        llama["routing_hits"].as_u64().unwrap(),
        llama["routing_misses"].as_u64().unwrap(),
    );
    assert_eq!(hits + misses, 10);
    assert!(misses >= 1, "{llama}");
    let breakdown = llama["endpoint_breakdown"].as_object().unwrap();
    let served: u64 = breakdown
        .values()
        .map(|e| e["request_count"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 10);
    let on_a = &breakdown["a"];
    assert_eq!(on_a["endpoint_name"], "a");
    assert!(on_a["success_rate"].as_f64().unwrap() < 100.0);
    assert!(on_a["last_used"].as_str().unwrap().ends_with(" ago"));
    let endpoints = page["endpoints"].as_object().unwrap();
    let all: u64 = endpoints
        .values()
        .map(|e| e["request_count"].as_u64().unwrap())
        .sum();
    assert_eq!(all, 13, "every served request, all models");
    assert!(endpoints.contains_key("a"));
}

#[test]
fn a_request_no_endpoint_could_serve_counts_as_a_failure() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    a.stop();
    let r = one_shot(proxy.local_addr(), chat_for("llama3.2:latest").as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    let page = model_stats(&proxy, "?include_endpoints=true");
    let llama = stats_of(&page, "llama3.2:latest");
    assert_eq!(
        (
            &llama["total_requests"],
            &llama["failed_requests"],
            &llama["success_rate"]
        ),
        (&1.into(), &1.into(), &"0%".into())
    );
    assert_eq!(llama["routing_hits"], 0, "not served");
    assert!(llama.get("endpoint_breakdown").is_none());
    // The model is now only on a down endpoint: refused before any attempt, not counted.
    assert!(eventually(Duration::from_secs(2), || {
        one_shot(proxy.local_addr(), chat_for("llama3.2:latest").as_bytes()).status == 503
    }));
    let llama = model_stats(&proxy, "");
    assert_eq!(stats_of(&llama, "llama3.2:latest")["total_requests"], 1);
}

#[test]
fn the_process_page_reports_memory_threads_and_files() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "shards = 2", "");
    let r = one_shot(
        proxy.local_addr(),
        b"GET /internal/process HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert!(p["timestamp"].is_string());
    let int = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not an integer: {v} in {p}"))
    };
    assert!(int(&p["memory"]["rss_bytes"]) > 1 << 20);
    assert!(int(&p["memory"]["peak_rss_bytes"]) >= int(&p["memory"]["rss_bytes"]) / 2);
    assert!(p["memory"]["rss"].as_str().unwrap().ends_with("MB"));
    assert!(p["memory"]["heap_alloc"].is_string());
    assert!(["LOW", "MEDIUM", "HIGH"].contains(&p["memory"]["memory_pressure"].as_str().unwrap()));
    assert!(int(&p["runtime"]["num_cpu"]) >= 1);
    assert_eq!(int(&p["runtime"]["shards"]), 2);
    int(&p["runtime"]["uptime_seconds"]);
    assert!(p["runtime"]["uptime"].is_string());
    // The test process: its own threads, ringway's shards and control thread.
    assert!(int(&p["process"]["threads"]) >= 3);
    assert!(int(&p["process"]["open_files"]) >= 3);
    assert!(int(&p["process"]["max_open_files"]) >= int(&p["process"]["open_files"]));
    assert_eq!(int(&p["process"]["pid"]), u64::from(std::process::id()));
    assert!(p.get("garbage_collection").is_none());
}

#[test]
fn a_request_served_by_an_endpoint_not_listing_its_model_is_a_fallback() {
    // "locked" wants a key: its model list cannot be read, so it may serve any model;
    // clients bring the key.
    let known = mock("known");
    let locked = mock_with(MockConfig {
        api_key: Some("k".into()),
        ..MockConfig::named("locked")
    });
    let text = config_text(
        &[Ep::new("known", &known), Ep::new("locked", &locked)],
        "",
        "[proxy]\nbalancer = \"round-robin\"\nforward_client_auth = true\n[sticky]\nenabled = false",
    );
    let proxy = ringway::start(ringway::Config::from_toml(&text, "test").unwrap()).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        let status = status_page(&proxy);
        status["endpoints"].as_array().unwrap().iter().all(|e| {
            e["last_check_status"] == 200 && (e["name"] == "locked" || !e["model_count"].is_null())
        })
    }));
    let mut client = Client::connect(proxy.local_addr());
    let mut by = std::collections::HashMap::new();
    for _ in 0..6 {
        let r = client.request(
            post(
                "/v1/chat/completions",
                &chat("llama3.2:latest", false),
                "Authorization: Bearer k\r\n",
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        *by.entry(r.header("X-Olla-Endpoint").unwrap().to_string())
            .or_insert(0) += 1;
    }
    let page = model_stats(&proxy, "");
    let llama = stats_of(&page, "llama3.2:latest");
    assert_eq!(llama["routing_fallbacks"], by["locked"], "{by:?}");
    assert_eq!(llama["routing_hits"], by["known"]);
    assert_eq!(llama["total_requests"], 6);
}
