//! Model-aware routing: requests go only to endpoints serving their model, unknown
//! models get 404, unavailable ones 503, aliases are rewritten for the endpoint, and the
//! model lists merge the fleet's catalogue.

use std::time::Duration;

use crate::harness::*;

fn with_models(name: &str, models: &[&str]) -> MockServer {
    mock_with(MockConfig {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..MockConfig::named(name)
    })
}

fn chat_for(model: &str) -> String {
    post("/v1/chat/completions", &chat(model, false), "")
}

/// `X-Olla-Routing-Strategy`, `-Decision` and `-Reason`.
fn routing_headers(r: &Response) -> [Option<&str>; 3] {
    ["Strategy", "Decision", "Reason"].map(|h| r.header(&format!("X-Olla-Routing-{h}")))
}

#[test]
fn requests_without_a_model_get_no_routing_decision() {
    let one = with_models("one", &["llama3.2:latest"]);
    let proxy = proxy(&[Ep::new("one", &one)], "", "");
    let r = one_shot(
        proxy.local_addr(),
        b"GET /api/version HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(routing_headers(&r), [None; 3]);
    assert_eq!(r.header("X-Ringway-Placement"), Some("least-connections"));
}

#[test]
fn the_optimistic_strategy_falls_back_to_any_endpoint_when_told_to() {
    let big = with_models("big", &["llama3.1:70b"]);
    let small = with_models("small", &["qwen2.5:7b"]);
    let eps = [Ep::new("big", &big), Ep::new("small", &small)];
    let fallback_all = "[routing]\nstrategy = \"optimistic\"\nfallback = \"all\"";
    let proxy_all = proxy(&eps, "", fallback_all);
    let r = one_shot(proxy_all.local_addr(), chat_for("gpt-9").as_bytes());
    // Forwarded: the endpoint answers for itself (the mock knows no such model).
    assert!(r.header("X-Olla-Endpoint").is_some(), "{}", r.text());
    assert_eq!(
        routing_headers(&r),
        ["optimistic", "fallback", "model_not_found_fallback"].map(Some)
    );
    let r = one_shot(proxy_all.local_addr(), chat_for("qwen2.5:7b").as_bytes());
    assert_eq!(
        (r.header("X-Olla-Endpoint"), routing_headers(&r)),
        (
            Some("small"),
            ["optimistic", "routed", "model_found"].map(Some)
        )
    );
    // Optimistic without "all" refuses as strict does, with its own reasons.
    let proxy_none = proxy(
        &eps,
        "",
        "[routing]\nstrategy = \"optimistic\"\nfallback = \"none\"",
    );
    let r = one_shot(proxy_none.local_addr(), chat_for("gpt-9").as_bytes());
    assert_eq!(r.status, 404);
    assert_eq!(
        routing_headers(&r),
        ["optimistic", "rejected", "model_not_found"].map(Some)
    );
    // The model's only endpoint goes down: with "all", any routable endpoint serves it.
    big.stop();
    assert!(eventually(Duration::from_secs(3), || {
        let r = one_shot(proxy_all.local_addr(), chat_for("llama3.1:70b").as_bytes());
        r.header("X-Olla-Endpoint") == Some("small")
            && r.header("X-Olla-Routing-Reason") == Some("all_healthy_fallback")
    }));
    assert!(eventually(Duration::from_secs(3), || {
        let r = one_shot(proxy_none.local_addr(), chat_for("llama3.1:70b").as_bytes());
        r.status == 503
            && r.header("X-Olla-Routing-Reason") == Some("model_unavailable_no_fallback")
    }));
}

#[test]
fn requests_go_to_endpoints_serving_their_model() {
    let big = with_models("big", &["llama3.1:70b", "llama3.2:latest"]);
    let small = with_models("small", &["llama3.2:latest", "qwen2.5:7b"]);
    let proxy = proxy(
        &[Ep::new("big", &big), Ep::new("small", &small)],
        "",
        "[sticky]\nenabled = false",
    );
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..4 {
        let r = client.request(chat_for("llama3.1:70b").as_bytes());
        assert_eq!(
            (r.status, r.header("X-Olla-Endpoint")),
            (200, Some("big")),
            "{}",
            r.text()
        );
        assert_eq!(r.header("X-Olla-Model"), Some("llama3.1:70b"));
        assert_eq!(
            routing_headers(&r),
            ["strict", "routed", "model_found"].map(Some)
        );
        let r = client.request(chat_for("qwen2.5:7b").as_bytes());
        assert_eq!(r.header("X-Olla-Endpoint"), Some("small"));
    }
    // Ollama's implicit :latest tag.
    let r = client.request(
        post(
            "/api/chat",
            r#"{"model":"llama3.2","stream":false,"messages":[]}"#,
            "",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Both serve llama3.2: both are used.
    let served: std::collections::HashSet<String> = (0..6)
        .map(|_| {
            client
                .request(chat_for("llama3.2:latest").as_bytes())
                .header("X-Olla-Endpoint")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(served.len(), 2);
}

#[test]
fn unknown_models_get_404_and_unavailable_ones_503() {
    let big = with_models("big", &["llama3.1:70b"]);
    let small = with_models("small", &["qwen2.5:7b"]);
    let proxy = proxy(&[Ep::new("big", &big), Ep::new("small", &small)], "", "");
    let r = one_shot(proxy.local_addr(), chat_for("gpt-9").as_bytes());
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert_eq!(
        routing_headers(&r),
        ["strict", "rejected", "model_not_found"].map(Some)
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-9")
    );
    assert_eq!(
        big.stats().requests() + small.stats().requests(),
        0,
        "no endpoint was bothered"
    );

    big.stop();
    // Known (its list was read) but only on an endpoint that is now gone.
    assert!(eventually(Duration::from_secs(2), || {
        let r = one_shot(proxy.local_addr(), chat_for("llama3.1:70b").as_bytes());
        r.status == 503 && r.json()["error"]["code"] == "model_unavailable"
    }));
    let r = one_shot(proxy.local_addr(), chat_for("llama3.1:70b").as_bytes());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(
        routing_headers(&r),
        ["strict", "rejected", "model_unavailable"].map(Some)
    );
    assert_eq!(
        one_shot(proxy.local_addr(), chat_for("qwen2.5:7b").as_bytes()).status,
        200
    );
}

#[test]
fn an_alias_is_rewritten_to_the_name_each_endpoint_serves() {
    let ollama = with_models("ollama", &["llama3.1:8b"]);
    let vllm = with_models("vllm", &["meta-llama/Llama-3.1-8B-Instruct"]);
    let proxy = proxy(
        &[
            Ep::new("ollama", &ollama),
            Ep::new("vllm", &vllm).kind("vllm"),
        ],
        "",
        "[sticky]\nenabled = false\n[proxy]\nbalancer = \"round-robin\"\n[model_aliases]\nllama = [\"llama3.1:8b\", \"meta-llama/Llama-3.1-8B-Instruct\"]",
    );
    let mut client = Client::connect(proxy.local_addr());
    let mut seen = std::collections::HashMap::new();
    for _ in 0..4 {
        let body = r#"{"model": "llama", "messages": [{"role": "user", "content": "hi"}]}"#;
        let r = client.request(post("/olla/proxy/mock/echo", body, "").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        let forwarded: serde_json::Value =
            serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
        let endpoint = r.header("X-Olla-Endpoint").unwrap().to_string();
        assert_eq!(r.header("X-Olla-Model"), forwarded["model"].as_str());
        assert_eq!(
            forwarded["messages"][0]["content"], "hi",
            "the rest of the body is intact"
        );
        seen.insert(endpoint, forwarded["model"].as_str().unwrap().to_string());
    }
    assert_eq!(seen["ollama"], "llama3.1:8b");
    assert_eq!(seen["vllm"], "meta-llama/Llama-3.1-8B-Instruct");
}

#[test]
fn model_lists_merge_the_available_endpoints() {
    let a = with_models("a", &["llama3.2:latest", "qwen2.5:7b"]);
    let b = with_models("b", &["qwen2.5:7b", "mistral:7b"]);
    let proxy = proxy(&[Ep::new("a", &a), Ep::new("b", &b).kind("vllm")], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let ids = |v: serde_json::Value, list: &str, key: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[key].as_str().unwrap().to_string())
            .collect()
    };
    let openai = client.get("/v1/models").json();
    assert_eq!(openai["object"], "list");
    assert_eq!(
        ids(openai, "data", "id"),
        ["llama3.2:latest", "mistral:7b", "qwen2.5:7b"]
    );
    // /api/tags is Ollama's API: the Ollama endpoint's models, in Ollama's shape.
    let tags = client.get("/api/tags").json();
    assert!(tags["models"][0]["digest"].is_string());
    assert_eq!(
        ids(tags, "models", "name"),
        ["llama3.2:latest", "qwen2.5:7b"]
    );
    assert_eq!(
        ids(client.get("/olla/vllm/v1/models").json(), "data", "id"),
        ["mistral:7b", "qwen2.5:7b"]
    );
    let unified = client.get("/olla/models").json();
    let qwen = unified["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "qwen2.5:7b")
        .unwrap()
        .clone();
    assert_eq!(qwen["olla"]["availability"].as_array().unwrap().len(), 2);
    // Olla's Ollama format lists the Ollama endpoints' models only.
    assert_eq!(
        ids(
            client.get("/olla/models?format=ollama").json(),
            "models",
            "name"
        ),
        ["llama3.2:latest", "qwen2.5:7b"]
    );
    assert_eq!(client.get("/olla/models?format=xml").status, 400);

    let status = client.get("/internal/status/models").json();
    assert_eq!(status["total_models"], 3);
    assert_eq!(status["total_endpoints"], 2);
    assert!(status["models_by_family"]["qwen"].is_array(), "{status}");
    let summary = client.get("/internal/status").json();
    assert_eq!(
        (summary["status"].as_str(), summary["models"].as_u64()),
        (Some("healthy"), Some(3))
    );

    // A stopped endpoint's models leave the lists.
    b.stop();
    assert!(eventually(Duration::from_secs(2), || {
        let _ = one_shot(
            proxy.local_addr(),
            post(
                "/olla/vllm/v1/chat/completions",
                &chat("mistral:7b", false),
                "",
            )
            .as_bytes(),
        );
        ids(
            one_shot(
                proxy.local_addr(),
                b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n",
            )
            .json(),
            "data",
            "id",
        )
        .len()
            == 2
    }));
}

#[test]
fn a_model_added_to_a_backend_appears_after_a_refresh() {
    let a = with_models("a", &["llama3.2:latest"]);
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[models]\nrefresh_interval_ms = 200\n[health]\ncheck_interval_ms = 100",
    );
    assert_eq!(
        one_shot(proxy.local_addr(), chat_for("phi4:14b").as_bytes()).status,
        404
    );
    a.control()
        .set_models(vec!["llama3.2:latest".into(), "phi4:14b".into()]);
    assert!(eventually(Duration::from_secs(2), || {
        one_shot(proxy.local_addr(), chat_for("phi4:14b").as_bytes()).status == 200
    }));
    let models = one_shot(
        proxy.local_addr(),
        b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .json();
    assert_eq!(models["data"].as_array().unwrap().len(), 2);
}
