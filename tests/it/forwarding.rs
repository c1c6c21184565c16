//! Forwarding: requests and responses cross ringway intact, streams are relayed as they
//! are generated, heads are rewritten as an HTTP/1.1 proxy must, routes reach only the
//! endpoints they name.

use std::time::{Duration, Instant};

use crate::harness::*;

fn sse_content(body: &str) -> (String, bool) {
    let mut content = String::new();
    let mut done = false;
    for event in body.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").expect("SSE data line");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).expect("SSE JSON");
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            content += piece;
        }
    }
    (content, done)
}

#[test]
fn openai_chat_arrives_intact_streamed_and_not() {
    let a = mock("gpu-a");
    let proxy = proxy(&[Ep::new("gpu-a", &a)], "", "");
    let direct = Client::connect(a.addr()).post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "",
    );
    let expected = direct.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!expected.is_empty());

    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        expected.as_str()
    );
    assert_eq!(r.header("X-Olla-Endpoint"), Some("gpu-a"));
    assert_eq!(r.header("X-Olla-Backend-Type"), Some("ollama"));
    assert_eq!(r.header("X-Mock-Backend"), Some("gpu-a"));
    assert!(
        r.header("X-Olla-Request-ID")
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        r.header("X-Olla-Response-Time")
            .is_some_and(|t| t.ends_with("ms"))
    );

    // Same connection, streamed.
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", true), "");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("Content-Type"), Some("text/event-stream"));
    let (content, done) = sse_content(&r.text());
    assert_eq!(content, expected);
    assert!(done, "stream ends with [DONE]");
}

#[test]
fn ollama_chat_arrives_intact_streamed_and_not() {
    let a = mock("gpu-a");
    let proxy = proxy(&[Ep::new("gpu-a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let body =
        r#"{"model":"llama3.2:latest","stream":false,"messages":[{"role":"user","content":"hi"}]}"#;
    let whole = client.post_json("/api/chat", body, "");
    assert_eq!(whole.status, 200, "{}", whole.text());
    let expected = whole.json()["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!expected.is_empty());

    // Ollama streams by default: NDJSON, one object per line.
    let body = r#"{"model":"llama3.2:latest","messages":[{"role":"user","content":"hi"}]}"#;
    let r = client.post_json("/api/chat", body, "");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let lines: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    let streamed: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(streamed, expected);
    assert_eq!(lines.last().unwrap()["done"], true);
}

#[test]
fn tokens_reach_the_client_as_they_are_generated() {
    let a = mock("slow");
    let proxy = proxy(&[Ep::new("slow", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    // 20 tokens, 50 ms apart: the backend needs ~950 ms to finish.
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        "X-Mock-Tokens: 20\r\nX-Mock-Token-Delay-Ms: 50\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(
        r.first_byte_after() < Duration::from_millis(400),
        "first chunk after {:?}",
        r.first_byte_after()
    );
    assert!(
        r.total_time() >= Duration::from_millis(900),
        "total {:?}",
        r.total_time()
    );
    // Chunks arrived spread over the generation, not in one batch at the end.
    let spread = r.arrivals.last().unwrap().0 - r.arrivals[0].0;
    assert!(r.arrivals.len() >= 20, "{} arrivals", r.arrivals.len());
    assert!(spread >= Duration::from_millis(800), "spread {spread:?}");
}

#[test]
fn request_heads_are_rewritten_for_the_endpoint() {
    let a = mock("echo");
    let proxy = proxy(&[Ep::new("echo", &a)], "", "");
    let raw = "POST /olla/proxy/mock/echo?x=1&y=2 HTTP/1.1\r\nHost: proxy.example:40114\r\n\
        Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
        Upgrade: websocket\r\nProxy-Authorization: Basic x\r\nX-Forwarded-For: 203.0.113.9\r\n\
        X-Forwarded-Proto: https\r\nX-Custom: kept\r\nAuthorization: Bearer abc\r\n\
        Content-Length: 5\r\n\r\nhello";
    let r = one_shot(proxy.local_addr(), raw.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/mock/echo");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["body"], "hello");
    let headers: Vec<(String, String)> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("host"), [a.addr().to_string()]);
    assert_eq!(get("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(get("x-forwarded-host"), ["proxy.example:40114"]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    assert_eq!(get("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(get("x-custom"), ["kept"]);
    // Client credentials stay with ringway unless proxy.forward_client_auth (hardening).
    assert!(get("authorization").is_empty());
    assert_eq!(get("content-length"), ["5"]);
    for hop in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "transfer-encoding",
    ] {
        assert!(get(hop).is_empty(), "{hop} was forwarded");
    }
}

#[test]
fn chunked_request_bodies_are_reframed_with_a_length() {
    let a = mock("echo");
    let proxy = proxy(&[Ep::new("echo", &a)], "", "");
    let raw =
        b"POST /olla/proxy/mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let r = one_shot(proxy.local_addr(), raw);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["body"], "hello world");
    let names: Vec<String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(names.contains(&"content-length".to_string()));
    assert!(!names.contains(&"transfer-encoding".to_string()));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let body = chat("llama3.2:latest", false);
    let mut client = Client::connect(proxy.local_addr());
    let sent = Instant::now();
    client.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = client.read_one(sent, false);
    assert_eq!(interim.status, 100);
    client.send_raw(body.as_bytes());
    let r = client.read_response(sent, false);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn provider_routes_reach_only_endpoints_of_that_type() {
    let ollama = mock("ollama-box");
    let vllm = mock("vllm-box");
    let proxy = proxy(
        &[
            Ep::new("ollama-box", &ollama),
            Ep::new("vllm-box", &vllm).kind("vllm"),
        ],
        "",
        "[proxy]\nbalancer = \"round-robin\"",
    );
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..4 {
        let r = client.get("/olla/vllm/health");
        assert_eq!(
            (r.status, r.header("X-Olla-Endpoint")),
            (200, Some("vllm-box"))
        );
        // Ollama's native API only goes to Ollama endpoints.
        let r = client.get("/api/version");
        assert_eq!(
            (r.status, r.header("X-Olla-Endpoint")),
            (200, Some("ollama-box"))
        );
        let r = client.get("/olla/ollama/api/version");
        assert_eq!(r.header("X-Olla-Endpoint"), Some("ollama-box"));
    }
    // /olla/proxy may use either.
    let mut seen: Vec<String> = (0..4)
        .map(|_| {
            let r = client.get("/olla/proxy/api/version");
            r.header("X-Olla-Endpoint").unwrap().to_string()
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["ollama-box", "vllm-box"]);
    let r = client.get("/olla/tgi/v1/models");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[test]
fn internal_pages_and_unknown_routes() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let r = client.get("/internal/health");
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("healthy"))
    );
    let r = client.get("/version");
    assert_eq!(r.json()["name"], "ringway");
    let r = client.get("/nowhere");
    assert_eq!(r.status, 404);
    let error = &r.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("/v1/*"));
    // The connection survives a 404.
    assert_eq!(client.get("/internal/health").status, 200);
    // Any method, as Olla's pages answer.
    let r =
        client.request(b"POST /internal/health HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("healthy"))
    );
    let r = client.request(b"DELETE /internal/stats/sticky HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn no_endpoint_for_the_route_is_503_with_retry_after() {
    let vllm = mock("vllm");
    let proxy = proxy(&[Ep::new("vllm", &vllm).kind("vllm")], "", "");
    let r = one_shot(
        proxy.local_addr(),
        post("/api/chat", &chat("llama3.2:latest", false), "").as_bytes(),
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "no_healthy_endpoint");
}

/// An address nobody listens on.
fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn an_unreachable_endpoint_is_skipped_and_reported() {
    let live = mock("live");
    let dead = dead_addr();
    let endpoints = [Ep::at("dead", dead), Ep::new("live", &live)];
    let proxy = proxy(&endpoints, "", "[proxy]\nbalancer = \"round-robin\"");
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..6 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(
            (r.status, r.header("X-Olla-Endpoint")),
            (200, Some("live")),
            "{}",
            r.text()
        );
    }
    drop(proxy);

    let only_dead = [Ep::at("dead", dead)];
    let proxy = crate::harness::proxy(&only_dead, "", "");
    let r = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", "{}", "").as_bytes(),
    );
    assert_eq!(r.status, 502);
    let error = &r.json()["error"];
    assert_eq!(error["code"], "upstream_unreachable");
    assert!(
        error["message"].as_str().unwrap().contains("dead"),
        "{error}"
    );
}

#[test]
fn error_statuses_from_the_endpoint_pass_through() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "X-Mock-Status: 500\r\n",
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["code"], "mock_status");
    let r = client.post_json("/v1/chat/completions", &chat("no-such-model", false), "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // And the connection is still good.
    assert_eq!(
        client
            .post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "")
            .status,
        200
    );
}

#[test]
fn a_stream_cut_by_the_endpoint_is_truncated_not_replayed() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let before = a.stats().requests();
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        "X-Mock-Fail: mid-stream\r\nX-Mock-Tokens: 10\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(!r.complete, "the client must see the cut");
    assert!(
        !r.body.is_empty(),
        "what was generated before the cut arrived"
    );
    assert!(client.is_closed(Duration::from_secs(2)));
    assert_eq!(a.stats().requests() - before, 1, "not replayed");
}

#[test]
fn http10_clients_get_a_decoded_stream_then_close() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let body = chat("llama3.2:latest", true);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = Client::connect(proxy.local_addr());
    let r = client.request(raw.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Transfer-Encoding"), None);
    let (content, done) = sse_content(&r.text());
    assert!(done && !content.is_empty(), "{}", r.text());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let mut raw = Vec::new();
    for path in [
        "/internal/health",
        "/olla/proxy/mock/echo?n=1",
        "/version",
        "/olla/proxy/mock/echo?n=2",
    ] {
        raw.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    client.send_raw(&raw);
    let now = Instant::now();
    assert_eq!(client.read_response(now, false).json()["status"], "healthy");
    assert_eq!(client.read_response(now, false).json()["query"], "n=1");
    assert_eq!(client.read_response(now, false).json()["name"], "ringway");
    assert_eq!(client.read_response(now, false).json()["query"], "n=2");
}

#[test]
fn head_requests_get_headers_only() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let r = client.request(b"HEAD /internal/health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // The connection is still in sync.
    assert_eq!(client.get("/internal/health").status, 200);
}

#[test]
fn endpoint_connections_are_pooled_and_reused() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let connections = a.stats().connections_accepted(); // the health checker's
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..20 {
        assert_eq!(
            client
                .post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "")
                .status,
            200
        );
    }
    // Fresh client connections reuse the same endpoint connection too.
    for _ in 0..10 {
        assert_eq!(
            one_shot(
                proxy.local_addr(),
                b"GET /api/version HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            .status,
            200
        );
    }
    assert_eq!(a.stats().requests(), 30);
    assert_eq!(a.stats().connections_accepted() - connections, 1);
}

#[test]
fn a_pooled_connection_closed_by_the_endpoint_is_replaced() {
    let a = mock("a");
    let addr = a.addr();
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    assert_eq!(client.get("/api/version").status, 200);
    // The backend restarts: the pooled connection is dead, which ringway only learns
    // when it tries to use it.
    a.stop();
    let a = ringway_mock::spawn(addr, MockConfig::named("a")).expect("rebind the same port");
    let r = client.get("/api/version");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.stats().requests(), 1);
}

#[test]
fn pool_max_idle_zero_means_no_pooling() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "[proxy]\npool_max_idle = 0");
    let accepted = a.stats().connections_accepted();
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..3 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A connection of its own for each request, each closed after its response.
    assert_eq!(a.stats().connections_accepted() - accepted, 3);
    assert!(eventually(Duration::from_secs(2), || a
        .stats()
        .open_connections()
        == 0));
}

#[test]
fn metrics_count_the_traffic() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..3 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(r.status, 200);
    }
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "X-Mock-Status: 500\r\n",
    );
    assert_eq!(r.status, 500);
    assert_eq!(client.get("/nowhere").status, 404);
    let r = client.get("/internal/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    let text = r.text();
    let value = |series: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        value("ringway_responses_total{endpoint=\"a\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        value("ringway_responses_total{endpoint=\"a\",status=\"5xx\"}"),
        1.0
    );
    assert_eq!(value("ringway_errors_total{status=\"4xx\"}"), 1.0);
    assert_eq!(
        value("ringway_time_to_first_byte_seconds_count{endpoint=\"a\"}"),
        4.0
    );
    assert_eq!(
        value("ringway_request_duration_seconds_bucket{endpoint=\"a\",le=\"+Inf\"}"),
        4.0
    );
    assert_eq!(value("ringway_in_flight{endpoint=\"a\"}"), 0.0);
    assert_eq!(
        value("ringway_model_responses_total{model=\"llama3.2:latest\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(value("ringway_endpoint_up{endpoint=\"a\"}"), 1.0);
    assert!(value("ringway_requests_total ") >= 5.0);
    // One conversation opening, sent four times: new once, then seen.
    assert_eq!(value("ringway_sticky_total{outcome=\"miss\"}"), 1.0);
    assert_eq!(value("ringway_sticky_total{outcome=\"hit\"}"), 3.0);
}
