//! `[rate_limits]` and `[cors]`: buckets shared by both shards, 429 with Retry-After and
//! an error body, the X-RateLimit-* headers, clients told apart by X-Forwarded-For from
//! a trusted proxy, and CORS preflights and headers. Rates are small (a token every
//! few seconds) so that a burst is always sent before a token comes back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A request for the mock's version, from `client` behind the trusted proxy (all test
/// connections come from loopback, which the default `trusted_proxy_cidrs` trust).
fn version_for(client: &str) -> String {
    format!("GET /api/version HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client}\r\n\r\n")
}

fn number(r: &Response, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
        .parse()
        .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The shard that answered: generated request ids carry it (hex digits 8 and 9).
fn shard_of(r: &Response) -> String {
    let id = r.header("X-Olla-Request-ID").expect("a request id");
    id[8..10].to_string()
}

#[test]
fn a_client_beyond_its_burst_gets_429_then_a_token_per_interval() {
    let a = mock("a");
    // 30 a minute: a token every 2 s; bursts of 3.
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "shards = 2",
        "[rate_limits]\nper_ip_requests_per_minute = 30\nburst_size = 3\ntrust_proxy_headers = true",
    );
    let mut client = Client::connect(proxy.local_addr());
    let started = Instant::now();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = client.request(version_for("203.0.113.1").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(number(&r, "X-RateLimit-Limit"), 30);
        let reset = number(&r, "X-RateLimit-Reset");
        assert!(
            (unix_now()..=unix_now() + 8).contains(&reset),
            "reset {reset}"
        );
        remaining.push(number(&r, "X-RateLimit-Remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    let r = client.request(version_for("203.0.113.1").as_bytes());
    assert_error(&r, 429, "rate_limit_exceeded");
    assert_eq!(r.header("Retry-After"), Some("2"));
    assert_eq!(number(&r, "X-RateLimit-Remaining"), 0);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per_ip")
    );
    assert_eq!(a.stats().requests(), 3, "the refused request went nowhere");
    // The connection carries on, and another client has a bucket of its own.
    let r = client.request(version_for("203.0.113.2").as_bytes());
    assert_eq!((r.status, number(&r, "X-RateLimit-Remaining")), (200, 2));
    // A token comes back two seconds after the burst began, not before.
    let mut refilled = None;
    while started.elapsed() < Duration::from_secs(6) {
        let r = client.request(version_for("203.0.113.1").as_bytes());
        if r.status == 200 {
            refilled = Some(started.elapsed());
            break;
        }
        assert_eq!(r.status, 429);
        std::thread::sleep(Duration::from_millis(100));
    }
    let refilled = refilled.expect("a token came back within 6 s");
    assert!(refilled >= Duration::from_millis(1800), "{refilled:?}");
    // Refusals are counted.
    assert!(metric_with(&proxy, "ringway_rate_limited_total{limit=\"per_ip\"}") >= 1);
}

#[test]
fn the_global_bucket_is_shared_by_both_shards() {
    let a = mock("a");
    // 6 a minute, bursts of 4: no token comes back during the test.
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "shards = 2",
        "[rate_limits]\nglobal_requests_per_minute = 6\nburst_size = 4",
    );
    // Fresh connections, which the kernel spreads over the shards, until each shard has
    // answered more than a burst: with a bucket per shard each would admit 4.
    let mut per_shard: HashMap<String, usize> = HashMap::new();
    let mut admitted = 0;
    for _ in 0..200 {
        let r = one_shot(
            proxy.local_addr(),
            b"GET /api/version HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        match r.status {
            200 => admitted += 1,
            429 => assert_eq!(r.header("Retry-After"), Some("10")),
            other => panic!("status {other}: {}", r.text()),
        }
        // Without a per-client limit, the answers report the global bucket.
        assert_eq!(number(&r, "X-RateLimit-Limit"), 6);
        *per_shard.entry(shard_of(&r)).or_default() += 1;
        if per_shard.len() == 2 && per_shard.values().all(|&n| n > 4) {
            break;
        }
    }
    assert!(
        per_shard.len() == 2 && per_shard.values().all(|&n| n > 4),
        "{per_shard:?}"
    );
    assert_eq!(admitted, 4, "{per_shard:?}");
    assert_eq!(a.stats().requests(), 4);
}

#[test]
fn health_has_a_limit_of_its_own_and_other_pages_none() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[rate_limits]\nper_ip_requests_per_minute = 6\nhealth_requests_per_minute = 12\nburst_size = 2",
    );
    let mut client = Client::connect(proxy.local_addr());
    for remaining in [1, 0] {
        let r = client.get("/internal/health");
        assert_eq!(r.status, 200);
        assert_eq!(number(&r, "X-RateLimit-Limit"), 12);
        assert_eq!(number(&r, "X-RateLimit-Remaining"), remaining);
    }
    let r = client.get("/internal/health");
    assert_error(&r, 429, "rate_limit_exceeded");
    assert_eq!(r.header("Retry-After"), Some("5"));
    // Proxied requests have their own bucket, operator pages none.
    for remaining in [1, 0] {
        let r = client.get("/api/version");
        assert_eq!(
            (r.status, number(&r, "X-RateLimit-Remaining")),
            (200, remaining)
        );
    }
    for _ in 0..5 {
        let r = client.get("/internal/status");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-RateLimit-Limit"), None);
    }
}

#[test]
fn an_endpoint_at_its_limit_passes_requests_to_another() {
    let (a, b) = (mock("a"), mock("b"));
    let proxy = proxy(
        &[Ep::new("a", &a), Ep::new("b", &b)],
        "",
        "[rate_limits]\nper_endpoint_requests_per_minute = 6\nburst_size = 2",
    );
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..4 {
        let r = client.get("/api/version");
        assert_eq!(r.status, 200, "{}", r.text());
        // Only endpoints are limited: nothing to report to the client.
        assert_eq!(r.header("X-RateLimit-Limit"), None);
    }
    assert_eq!((a.stats().requests(), b.stats().requests()), (2, 2));
    let r = client.get("/api/version");
    assert_error(&r, 429, "rate_limit_exceeded");
    assert_eq!(r.header("Retry-After"), Some("10"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per_endpoint")
    );
}

#[test]
fn without_trust_every_client_behind_a_proxy_is_the_proxy() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[rate_limits]\nper_ip_requests_per_minute = 6\nburst_size = 1",
    );
    let mut client = Client::connect(proxy.local_addr());
    assert_eq!(
        client.request(version_for("203.0.113.1").as_bytes()).status,
        200
    );
    let r = client.request(version_for("203.0.113.2").as_bytes());
    assert_eq!(r.status, 429, "X-Forwarded-For was believed");
}

#[test]
fn hostile_forwarded_headers_count_against_the_proxy() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[rate_limits]\nper_ip_requests_per_minute = 6\nburst_size = 1\ntrust_proxy_headers = true",
    );
    let mut client = Client::connect(proxy.local_addr());
    // Garbage is the peer's (loopback's) request...
    let r = client.request(version_for("not-an-address").as_bytes());
    assert_eq!(r.status, 200);
    // ...as is every other garbage: the peer's bucket is empty now.
    let long = vec!["10.0.0.1"; 500].join(", ");
    for hostile in [
        "unknown",
        "[::1",
        "1.2.3.4.5",
        long.as_str(),
        "203.0.113.9, nope",
    ] {
        let r = client.request(version_for(hostile).as_bytes());
        assert_eq!(r.status, 429, "{hostile:.40}");
    }
    // A spoofed left part does not pick the bucket: the right-most untrusted hop does.
    let r = client.request(version_for("1.1.1.1, 203.0.113.9").as_bytes());
    assert_eq!(r.status, 200);
    let r = client.request(version_for("2.2.2.2, 203.0.113.9").as_bytes());
    assert_eq!(r.status, 429);
}

#[test]
fn limits_and_cors_are_off_by_default() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let r = one_shot(
        proxy.local_addr(),
        b"GET /api/version HTTP/1.1\r\nHost: t\r\nOrigin: https://chat.example\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    for name in ["X-RateLimit-Limit", "Access-Control-Allow-Origin", "Vary"] {
        assert_eq!(r.header(name), None, "{name}");
    }
    // A preflight is an ordinary request: this one goes to the endpoint.
    let r = one_shot(
        proxy.local_addr(),
        b"OPTIONS /api/version HTTP/1.1\r\nHost: t\r\nOrigin: https://chat.example\r\n\
          Access-Control-Request-Method: GET\r\n\r\n",
    );
    assert_ne!(r.status, 204);
    assert_eq!(a.stats().requests(), 2);
}

fn preflight(origin: &str, method: &str) -> String {
    format!(
        "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: {method}\r\n\
         Access-Control-Request-Headers: content-type, authorization\r\n\r\n"
    )
}

#[test]
fn cors_preflights_are_answered_and_allowed_origins_can_read_answers() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[cors]\nenabled = true\nallowed_origins = [\"https://chat.example\"]\n\
         allow_credentials = true\n\
         [rate_limits]\nper_ip_requests_per_minute = 6\nburst_size = 2",
    );
    let mut client = Client::connect(proxy.local_addr());
    // The preflight: answered by ringway, not limited, not forwarded.
    for _ in 0..3 {
        let r = client.request(preflight("https://chat.example", "POST").as_bytes());
        assert_eq!(r.status, 204);
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            Some("https://chat.example")
        );
        assert_eq!(r.header("Access-Control-Allow-Methods"), Some("POST"));
        assert_eq!(
            r.header("Access-Control-Allow-Headers"),
            Some("content-type, authorization")
        );
        assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(r.header("Access-Control-Max-Age"), Some("300"));
        assert!(r.header("Vary").unwrap().contains("Origin"));
        assert_eq!(r.header("Content-Length"), None);
    }
    assert_eq!(a.stats().requests(), 0);
    // An actual request: the origin may read the answer and ringway's headers; the
    // endpoint sees the Origin too.
    let from_chat = "Origin: https://chat.example\r\n";
    let r = client.post_json("/olla/proxy/mock/echo", "{}", from_chat);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://chat.example")
    );
    let exposed = r.header("Access-Control-Expose-Headers").unwrap();
    for name in [
        "X-Olla-Endpoint",
        "X-Olla-Request-ID",
        "X-RateLimit-Remaining",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let headers = r.json()["headers"].to_string();
    assert!(headers.contains("https://chat.example"), "{headers}");
    // ringway's own answers too: a page, an error, a refusal at the limit.
    let r = client
        .request(format!("GET /internal/health HTTP/1.1\r\nHost: t\r\n{from_chat}\r\n").as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://chat.example")
    );
    let r =
        client.request(format!("GET /nowhere HTTP/1.1\r\nHost: t\r\n{from_chat}\r\n").as_bytes());
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://chat.example")
    );
    let r = client.post_json("/olla/proxy/mock/echo", "{}", from_chat);
    assert_eq!(r.status, 200);
    let r = client.post_json("/olla/proxy/mock/echo", "{}", from_chat);
    assert_error(&r, 429, "rate_limit_exceeded");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://chat.example")
    );
    assert_eq!(r.header("Vary"), Some("Origin"));
}

#[test]
fn a_disallowed_origin_gets_answers_without_cors_headers() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[cors]\nenabled = true\nallowed_origins = [\"https://chat.example\"]",
    );
    let mut client = Client::connect(proxy.local_addr());
    // As Olla (rs/cors) answers it: 204, Vary, and nothing that allows anything.
    for (origin, method) in [
        ("https://evil.example", "POST"),
        ("https://chat.example", "DELETE"),
    ] {
        let r = client.request(preflight(origin, method).as_bytes());
        assert_eq!(r.status, 204);
        assert!(r.header("Vary").is_some());
        let allows = r
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("Access-Control-"));
        assert!(!allows, "{:?}", r.headers);
    }
    let r = client.post_json(
        "/olla/proxy/mock/echo",
        "{}",
        "Origin: https://evil.example\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    assert_eq!(r.header("Vary"), Some("Origin"));
}

/// A sample of `/internal/metrics`, with labels (`metric` takes bare names only).
fn metric_with(proxy: &ringway::Server, sample: &str) -> u64 {
    let r = one_shot(
        proxy.local_addr(),
        b"GET /internal/metrics HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let page = r.text();
    let line = page
        .lines()
        .find(|l| l.starts_with(sample))
        .unwrap_or_else(|| panic!("no {sample} in the metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}
