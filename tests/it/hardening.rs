//! Slow, broken and hostile clients and backends: timeouts, the connection limit, client
//! hang-ups, a panic in one connection, and API keys. In each case the misbehaving side
//! gets a clean answer (or a clean close) and everyone else is served as usual.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringway::Config;

use crate::harness::*;

/// Sends `raw` on a plain socket and reads until `needle` shows up (bounded).
fn send_and_read_until(addr: std::net::SocketAddr, raw: &[u8], needle: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(raw).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut buf).expect("read before the timeout");
        assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

// ---- client timeouts ----

#[test]
fn a_head_trickled_past_header_timeout_gets_408() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "header_timeout_ms = 300", "");
    let mut good = Client::connect(proxy.local_addr());
    let mut slow = Client::connect(proxy.local_addr());
    let started = Instant::now();
    slow.send_raw(b"GET /v1/models HTTP/1.1\r\n");
    // One byte every 50 ms (each read is quick; the head as a whole is not) until the
    // answer is there, for at most 2 s.
    slow.stream()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut probe = [0; 1];
    while !matches!(slow.stream().peek(&mut probe), Ok(1..)) {
        assert!(started.elapsed() < Duration::from_secs(2), "no answer");
        slow.send_raw(b"X");
        assert_eq!(good.get("/api/version").status, 200);
    }
    let answered = started.elapsed();
    slow.stream().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let r = slow.read_response(Instant::now(), false);
    assert_error(&r, 408, "request_timeout");
    assert!(answered < Duration::from_secs(1), "{answered:?}");
    assert!(slow.is_closed(Duration::from_secs(2)));
    assert_eq!(good.get("/api/version").status, 200);
}

#[test]
fn keep_alive_idle_time_is_not_header_time() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "header_timeout_ms = 200\nkeepalive_timeout_ms = 800",
        "",
    );
    let mut client = Client::connect(proxy.local_addr());
    assert_eq!(client.get("/api/version").status, 200);
    // Idle longer than header_timeout but within keepalive_timeout: still open.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(client.get("/api/version").status, 200);
    // Idle past keepalive_timeout: closed quietly (no response bytes).
    let started = Instant::now();
    assert!(client.is_closed(Duration::from_secs(3)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}

#[test]
fn a_connection_that_never_sends_is_closed_at_header_timeout() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "header_timeout_ms = 300\nkeepalive_timeout_ms = 60000",
        "",
    );
    let mut silent = Client::connect(proxy.local_addr());
    let started = Instant::now();
    assert!(silent.is_closed(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_stalled_body_gets_408() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "body_timeout_ms = 300", "");
    let mut good = Client::connect(proxy.local_addr());
    let mut client = Client::connect(proxy.local_addr());
    let started = Instant::now();
    client.send_raw(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"model\":",
    );
    assert_eq!(
        good.get("/api/version").status,
        200,
        "served during the stall"
    );
    let r = client.read_response(started, false);
    assert_error(&r, 408, "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        a.stats().requests(),
        1,
        "only the well-behaved client's request"
    );
}

/// A timed-out read takes the connection's buffer with it (monoio lends the buffer to the
/// operation), and the request it held is answered from spans into what is left: with a
/// client request id (a span of the head) that once panicked instead of answering.
#[test]
fn a_stalled_body_with_a_request_id_gets_408_too() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "body_timeout_ms = 300", "");
    let mut client = Client::connect(proxy.local_addr());
    client.send_raw(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Request-ID: trace-7\r\nContent-Length: 100\r\n\r\n{",
    );
    let r = client.read_response(Instant::now(), false);
    assert_error(&r, 408, "request_timeout");
    let id = r.header("x-olla-request-id").expect("an id");
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()),
        "{id:?}"
    );
}

// ---- the connection limit ----

#[test]
fn connections_beyond_the_limit_get_503_and_the_rest_are_served() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "max_connections = 3", "");
    // Three connections fill the shard (retrying while the harness's own status-page
    // connections may still count).
    let mut held: Vec<Client> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while held.len() < 3 && Instant::now() < deadline {
        let mut c = Client::connect(proxy.local_addr());
        if c.get("/api/version").status == 200 {
            held.push(c);
        }
    }
    assert_eq!(held.len(), 3);
    let mut extra = Client::connect(proxy.local_addr());
    let r = extra.get("/api/version");
    assert_error(&r, 503, "too_many_connections");
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(extra.is_closed(Duration::from_secs(2)));
    // The held connections still work; once one closes, a newcomer is served.
    assert_eq!(held[0].get("/api/version").status, 200);
    drop(held.pop());
    let served = eventually(Duration::from_secs(3), || {
        Client::connect(proxy.local_addr())
            .get("/api/version")
            .status
            == 200
    });
    assert!(served);
    drop(held);
    assert!(metric(&proxy, "ringway_refused_connections_total") >= 1);
}

// ---- upstream timeouts and broken backends ----

#[test]
fn a_request_past_request_timeout_gets_504_and_its_connection_is_not_reused() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "[proxy]\nrequest_timeout_ms = 300");
    let accepted = a.stats().connections_accepted();
    let mut client = Client::connect(proxy.local_addr());
    let sent = Instant::now();
    client.send_raw(
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "X-Mock-First-Token-Delay-Ms: 1500\r\n",
        )
        .as_bytes(),
    );
    let mut good = Client::connect(proxy.local_addr());
    assert_eq!(good.get("/api/version").status, 200, "served meanwhile");
    let r = client.read_response(sent, false);
    assert_error(&r, 504, "request_timeout");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    // The next request must not get the late answer on a reused connection.
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        a.stats().connections_accepted() - accepted,
        2,
        "the timed-out connection was closed, not pooled"
    );
}

#[test]
fn a_stream_past_request_timeout_is_cut() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "[proxy]\nrequest_timeout_ms = 400");
    let mut client = Client::connect(proxy.local_addr());
    let sent = Instant::now();
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        "X-Mock-Tokens: 40\r\nX-Mock-Token-Delay-Ms: 50\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(!r.complete, "cut, not ended as if complete");
    assert!(!r.body.is_empty());
    assert!(sent.elapsed() < Duration::from_millis(1500));
    assert!(client.is_closed(Duration::from_secs(2)));
}

#[test]
fn a_hanging_endpoint_gets_504_at_response_timeout() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[proxy]\nresponse_timeout_ms = 300",
    );
    let mut good = Client::connect(proxy.local_addr());
    let sent = Instant::now();
    let r = one_shot(
        proxy.local_addr(),
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "X-Mock-Fail: hang\r\n",
        )
        .as_bytes(),
    );
    assert_error(&r, 504, "upstream_timeout");
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert_eq!(good.get("/api/version").status, 200);
}

#[test]
fn a_malformed_response_head_gets_502_for_that_client_only() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut good = Client::connect(proxy.local_addr());
    let r = one_shot(
        proxy.local_addr(),
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "X-Mock-Fail: bad-head\r\n",
        )
        .as_bytes(),
    );
    assert_error(&r, 502, "upstream_protocol_error");
    assert_eq!(good.get("/api/version").status, 200);
    let r = good.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200);
}

#[test]
fn a_stream_idle_past_stream_idle_timeout_is_cut_and_its_connection_closed() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[proxy]\nstream_idle_timeout_ms = 200",
    );
    let accepted = a.stats().connections_accepted();
    let mut good = Client::connect(proxy.local_addr());
    let mut client = Client::connect(proxy.local_addr());
    let sent = Instant::now();
    // The first token comes at once, the next after 800 ms of silence.
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        "X-Mock-Tokens: 3\r\nX-Mock-First-Token-Delay-Ms: 0\r\nX-Mock-Token-Delay-Ms: 800\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(!r.complete, "cut, not ended as if complete");
    assert!(!r.body.is_empty(), "the first token was relayed");
    assert!(
        sent.elapsed() < Duration::from_millis(700),
        "{:?}",
        sent.elapsed()
    );
    assert!(client.is_closed(Duration::from_secs(2)));
    assert!(
        eventually(Duration::from_secs(1), || a.stats().aborted_streams() == 1),
        "the endpoint connection was closed, so the backend stopped generating"
    );
    assert_eq!(good.get("/api/version").status, 200, "served meanwhile");
    // The endpoint connection was not pooled: the next request opens a new one.
    let r = good.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200);
    assert_eq!(a.stats().connections_accepted() - accepted, 2);
}

/// A listener whose accept queue is full: connecting to it hangs (the kernel drops the
/// SYNs), the loopback stand-in for a backend host that does not answer.
fn blackhole() -> (socket2::Socket, TcpStream, std::net::SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect(addr).unwrap(); // fills the queue of one
    (listener, filler, addr)
}

#[test]
fn an_endpoint_not_accepting_connections_gets_504_at_connect_timeout() {
    let (_listener, _filler, addr) = blackhole();
    let proxy = proxy(
        &[Ep::at("hole", addr)],
        "",
        "[proxy]\nconnect_timeout_ms = 300\n[health]\ncheck_interval_ms = 3600000\ncheck_timeout_ms = 300",
    );
    let sent = Instant::now();
    let r = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", &chat("llama3.2:latest", false), "").as_bytes(),
    );
    assert_error(&r, 504, "upstream_timeout");
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&sent.elapsed()),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn a_connect_timeout_fails_over_to_another_endpoint() {
    let (_listener, _filler, addr) = blackhole();
    let b = mock("b");
    let proxy = proxy(
        &[Ep::at("hole", addr), Ep::new("b", &b)],
        "",
        "[proxy]\nconnect_timeout_ms = 300\nbalancer = \"round-robin\"\n[sticky]\nenabled = false\n[health]\ncheck_interval_ms = 3600000\ncheck_timeout_ms = 300",
    );
    for _ in 0..2 {
        let r = one_shot(
            proxy.local_addr(),
            post("/v1/chat/completions", &chat("llama3.2:latest", false), "").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-olla-endpoint"), Some("b"));
    }
    assert!(
        metric(
            &proxy,
            "ringway_upstream_connect_errors_total{endpoint=\"hole\"}"
        ) >= 1
    );
}

/// Fuzzing finding 1: httparse gives a static `""` for an absent reason phrase, which the
/// response parser once took as a buffer offset (a panic, and the client's connection
/// dropped without an answer).
#[test]
fn a_response_without_a_reason_phrase_is_relayed() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let r = one_shot(
        proxy.local_addr(),
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "X-Mock-Fail: no-reason\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}");
}

// ---- client hang-ups ----

#[test]
fn a_client_leaving_mid_stream_closes_the_endpoint_connection_at_once() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    // Two seconds between tokens: without watching the client, ringway would notice it
    // gone only when writing the second token after the cut, four seconds in.
    let raw = post(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        "X-Mock-Tokens: 5\r\nX-Mock-Token-Delay-Ms: 2000\r\n",
    );
    let socket = send_and_read_until(proxy.local_addr(), raw.as_bytes(), b"data: ");
    let left = Instant::now();
    drop(socket);
    assert!(
        eventually(Duration::from_millis(1000), || a.stats().aborted_streams()
            == 1),
        "the endpoint did not see the hang-up within 1 s"
    );
    assert!(left.elapsed() < Duration::from_millis(1500));
    assert_eq!(metric(&proxy, "ringway_client_aborts_total"), 1);
    // Nothing left behind: the next request is served normally.
    let r = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", &chat("llama3.2:latest", false), "").as_bytes(),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_leaving_during_prefill_closes_the_endpoint_connection() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let raw = post(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        "X-Mock-First-Token-Delay-Ms: 3000\r\n",
    );
    // The head arrives at once; the first token only after the "prefill".
    let socket = send_and_read_until(proxy.local_addr(), raw.as_bytes(), b"\r\n\r\n");
    drop(socket);
    assert!(
        eventually(Duration::from_millis(1000), || a.stats().aborted_streams()
            == 1),
        "the endpoint did not see the hang-up within 1 s"
    );
}

#[test]
fn a_client_leaving_before_the_response_head_is_not_retried() {
    let a = mock("a");
    let b = mock("b");
    let proxy = proxy(&[Ep::new("a", &a), Ep::new("b", &b)], "", "");
    let before = a.stats().requests() + b.stats().requests();
    let raw = post(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "X-Mock-Fail: hang\r\n",
    );
    let mut s = TcpStream::connect(proxy.local_addr()).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    // The hung endpoint's connection is closed (the mock's hang ends on EOF) and the
    // request is not sent anywhere else.
    assert!(eventually(Duration::from_secs(1), || {
        a.stats().open_connections() + b.stats().open_connections() == 0
    }));
    assert_eq!(a.stats().requests() + b.stats().requests() - before, 1);
    assert_eq!(metric(&proxy, "ringway_client_aborts_total"), 1);
}

// ---- panics ----

fn proxy_with_panic_route(a: &MockServer) -> ringway::Server {
    let text = config_text(&[Ep::new("a", a)], "", "");
    let mut config = Config::from_toml(&text, "test config").unwrap();
    config.server.debug_panic_route = true;
    ringway::start(config).unwrap()
}

#[test]
fn a_panic_is_contained_to_its_connection() {
    let a = mock("a");
    let proxy = proxy_with_panic_route(&a);
    let mut bystander = Client::connect(proxy.local_addr());
    assert_eq!(bystander.get("/api/version").status, 200);
    for _ in 0..3 {
        let mut victim = Client::connect(proxy.local_addr());
        victim.send_raw(b"GET /internal/debug/panic HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(
            victim.is_closed(Duration::from_secs(2)),
            "closed, no answer"
        );
        // The same shard (there is one) goes on serving old and new connections.
        assert_eq!(bystander.get("/api/version").status, 200);
        let r = one_shot(
            proxy.local_addr(),
            post("/v1/chat/completions", &chat("llama3.2:latest", false), "").as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn the_panic_route_does_not_exist_unless_enabled() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let r = one_shot(
        proxy.local_addr(),
        b"GET /internal/debug/panic HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 404);
}

// ---- API keys ----

#[test]
fn api_keys_are_required_and_never_forwarded() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        &format!("api_keys = [\"sk-ring-1\", \"sk-ring-2\", \"{TEST_KEY}\"]"),
        "",
    );
    let addr = proxy.local_addr();
    let echo = |headers: &str| {
        one_shot(
            addr,
            post("/olla/proxy/mock/echo", "{}", headers).as_bytes(),
        )
    };
    for bad in [
        "",
        "Authorization: Bearer sk-ring-3\r\n",
        "Authorization: Bearer sk-ring-1x\r\n",
        "Authorization: Basic c2stcmluZy0x\r\n",
        "X-Api-Key: sk-ring\r\n",
    ] {
        let r = echo(bad);
        assert_error(&r, 401, "invalid_api_key");
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer realm=\"ringway\"")
        );
    }
    for good in [
        "Authorization: Bearer sk-ring-2\r\n",
        "X-Api-Key: sk-ring-1\r\n",
    ] {
        let r = echo(good);
        assert_eq!(r.status, 200, "{good:?}: {}", r.text());
        let seen = r.json()["headers"].to_string().to_ascii_lowercase();
        assert!(
            !seen.contains("sk-ring") && !seen.contains("authorization"),
            "ringway's key reached the endpoint: {seen}"
        );
    }
    // Model lists and operator pages need a key too; liveness and version do not.
    let get = |path: &str| {
        one_shot(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .status
    };
    assert_eq!(get("/v1/models"), 401);
    assert_eq!(get("/internal/status/endpoints"), 401);
    assert_eq!(get("/internal/health"), 200);
    assert_eq!(get("/version"), 200);
    assert_eq!(a.stats().requests(), 2, "only the authenticated requests");
}

#[test]
fn client_credentials_reach_endpoints_only_when_configured() {
    let a = mock("a");
    let sent = "Authorization: Bearer client-token\r\nX-Api-Key: client-key\r\n";
    let seen = |extra: &str| {
        let proxy = proxy(&[Ep::new("a", &a)], "", extra);
        let r = one_shot(
            proxy.local_addr(),
            post("/olla/proxy/mock/echo", "{}", sent).as_bytes(),
        );
        assert_eq!(r.status, 200);
        r.json()["headers"].to_string()
    };
    let default = seen("");
    assert!(
        !default.contains("client-token") && !default.contains("client-key"),
        "{default}"
    );
    let forwarded = seen("[proxy]\nforward_client_auth = true");
    assert!(
        forwarded.contains("Bearer client-token") && forwarded.contains("client-key"),
        "{forwarded}"
    );
}

#[test]
fn an_endpoint_key_is_sent_on_requests_health_checks_and_model_lists() {
    let mut config = MockConfig::named("locked");
    config.api_key = Some("backend-secret".into());
    let locked = mock_with(config);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshards = 1\n[proxy]\nforward_client_auth = true\n[health]\ncheck_interval_ms = 3600000\n\
         [[endpoints]]\nname = \"locked\"\nurl = \"http://{}\"\ntype = \"vllm\"\napi_key = \"backend-secret\"\n",
        locked.addr()
    );
    let proxy = ringway::start(Config::from_toml(&text, "test").unwrap()).unwrap();
    // The model list is read with the key, so the model is routable.
    assert!(eventually(Duration::from_secs(5), || {
        endpoint_status(&proxy, "locked")["model_count"] == 2
    }));
    // The endpoint's key replaces the client's, even with forward_client_auth on.
    let r = one_shot(
        proxy.local_addr(),
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "Authorization: Bearer client-token\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(locked.stats().requests() >= 1);
}

#[test]
fn an_endpoint_key_in_another_header_is_sent_as_is() {
    let a = mock("a");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshards = 1\n[health]\ncheck_interval_ms = 3600000\n\
         [[endpoints]]\nname = \"a\"\nurl = \"http://{}\"\ntype = \"ollama\"\napi_key = \"k-123\"\napi_key_header = \"X-Api-Key\"\n",
        a.addr()
    );
    let proxy = ringway::start(Config::from_toml(&text, "test").unwrap()).unwrap();
    let r = one_shot(
        proxy.local_addr(),
        post("/olla/proxy/mock/echo", "{}", "").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let headers = r.json()["headers"].to_string();
    assert!(headers.contains("[\"X-Api-Key\",\"k-123\"]"), "{headers}");
    assert!(!headers.contains("Bearer"), "{headers}");
}
