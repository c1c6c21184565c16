//! Bad and oversized input gets the right status and an OpenAI-style error, and never
//! disturbs the shard's other clients.

use std::time::{Duration, Instant};

use crate::harness::*;

fn small_limits(a: &MockServer) -> ringway::Server {
    proxy(
        &[Ep::new("a", a)],
        "max_body_bytes = 1024\nmax_header_bytes = 1024\nmax_headers = 16",
        "",
    )
}

#[test]
fn a_declared_oversized_body_gets_413_without_being_read() {
    let a = mock("a");
    let proxy = small_limits(&a);
    let mut client = Client::connect(proxy.local_addr());
    // The head alone: ringway must answer without waiting for a megabyte that never comes.
    let started = Instant::now();
    let r = client.request(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_error(&r, 413, "request_too_large");
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(a.stats().requests(), 0);
}

#[test]
fn an_oversized_chunked_body_gets_413() {
    let a = mock("a");
    let proxy = small_limits(&a);
    let mut raw =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'x'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    let r = one_shot(proxy.local_addr(), &raw);
    assert_error(&r, 413, "request_too_large");
    assert_eq!(a.stats().requests(), 0);
}

#[test]
fn a_body_at_the_limit_is_accepted() {
    let a = mock("a");
    let proxy = small_limits(&a);
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 - 10));
    assert_eq!(body.len(), 1024);
    let r = one_shot(
        proxy.local_addr(),
        post("/olla/proxy/mock/echo", &body, "").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn oversized_heads_get_431() {
    let a = mock("a");
    let proxy = small_limits(&a);
    let long = format!(
        "GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Long: {}\r\n\r\n",
        "y".repeat(2000)
    );
    assert_error(
        &one_shot(proxy.local_addr(), long.as_bytes()),
        431,
        "bad_request",
    );
    let mut many = "GET /v1/models HTTP/1.1\r\nHost: t\r\n".to_string();
    for i in 0..20 {
        many += &format!("X-{i}: v\r\n");
    }
    many += "\r\n";
    assert_error(
        &one_shot(proxy.local_addr(), many.as_bytes()),
        431,
        "bad_request",
    );
}

#[test]
fn malformed_requests_get_400_and_others_are_still_served() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    // A well-behaved client keeps its connection open across the bad ones.
    let mut good = Client::connect(proxy.local_addr());
    assert_eq!(good.get("/api/version").status, 200);
    for (raw, status) in [
        (&b"NOT HTTP AT ALL\r\n\r\n"[..], 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"GET http://169.254.169.254/latest HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 400),
        (b"GET /v1/models HTTP/1.1\r\n\r\n", 400),
        (b"GET /v1/models HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"POST /v1/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ] {
        let mut client = Client::connect(proxy.local_addr());
        let r = client.request(raw);
        assert_eq!(r.status, status, "{:?} -> {}", String::from_utf8_lossy(raw), r.text());
        assert!(r.json()["error"]["message"].is_string());
        assert!(client.is_closed(Duration::from_secs(2)), "closed after a framing error");
        assert_eq!(good.get("/api/version").status, 200);
    }
    assert_eq!(
        a.stats().requests(),
        14,
        "only the well-behaved requests reached the endpoint"
    );
}
