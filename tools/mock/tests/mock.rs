//! Integration tests for ringway-mock over real sockets (client in `common`).
//! `legacy_driver_suite` re-runs this whole file with `MONOIO_FORCE_LEGACY_DRIVER=1`.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use ringway_mock::{MockConfig, spawn};
use serde_json::{Value, json};

#[test]
fn openai_shapes() {
    let m = mock("gpu-a", |_| {});
    let a = m.addr();
    let r = post(
        a,
        CHAT,
        json!({"model": Q, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-mock-backend"), Some("gpu-a"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["system_fingerprint"], "gpu-a");
    let content = &v["choices"][0]["message"]["content"];
    assert_eq!(content, "Hello from the mock backend, one token");
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));

    let r = post(
        a,
        CHAT,
        json!({"model": Q, "stream": true, "max_tokens": 3}),
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        r.chunks.len(),
        4,
        "one chunk per token, then finish + [DONE]"
    );
    let ev = sse(&r);
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    assert_eq!(ev[1]["choices"][0]["delta"]["content"], " from");
    assert_eq!(ev[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[4], "[DONE]");

    // stream_options.include_usage: a last chunk with the usage and no choices, in the
    // same write as the finish event.
    let usage = json!({"include_usage": true});
    for path in [CHAT, "/v1/completions"] {
        let body = json!({"model": Q, "stream": true, "max_tokens": 3, "stream_options": usage});
        let r = post(a, path, body);
        assert_eq!(r.chunks.len(), 4, "{path}");
        let ev = sse(&r);
        assert_eq!(ev.len(), 6, "{path}");
        assert_eq!(ev[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[4]["choices"], json!([]), "{path}");
        assert_eq!(ev[4]["model"], Q);
        let u = &ev[4]["usage"];
        assert_eq!(u["completion_tokens"], 3);
        assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
        let total = u["prompt_tokens"].as_u64().unwrap() + 3;
        assert_eq!(u["total_tokens"].as_u64(), Some(total));
        assert_eq!(ev[5], "[DONE]");
    }
    let ev = sse(&post(
        a,
        CHAT,
        json!({"model": Q, "stream": true, "max_tokens": 1,
        "stream_options": {"include_usage": false}}),
    ));
    assert!(ev.iter().all(|e| e.get("usage").is_none()), "{ev:?}");

    let v = post(a, "/v1/completions", json!({"model": Q, "max_tokens": 2})).json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from");
    let r = post(a, "/v1/completions", json!({"model": Q, "stream": true}));
    assert_eq!(sse(&r)[0]["choices"][0]["text"], "Hello");

    let v = post(
        a,
        "/v1/embeddings",
        json!({"model": Q, "input": ["a", "b"]}),
    )
    .json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);

    let v = get(a, "/v1/models").json();
    assert_eq!(v["data"][0]["id"], "llama3.2:latest");
    assert_eq!(v["data"][1]["owned_by"], "ringway-mock");

    let r = post(a, CHAT, json!({"model": "nope"}));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = Client::new(a)
        .request("POST", CHAT, &[], "{not json")
        .unwrap();
    assert_eq!(r.status, 400);
    m.stop();
}

#[test]
fn ollama_and_lmstudio_shapes() {
    let m = mock("o", |c| c.tokens = 3);
    let a = m.addr();
    let r = post(a, "/api/chat", json!({"model": Q, "messages": []}));
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = ndjson(&r);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["message"]["content"], "Hello");
    assert_eq!(lines[0]["done"], false);
    assert_eq!(lines[3]["done"], true);
    assert_eq!(lines[3]["eval_count"], 3);
    assert!(lines[3]["created_at"].as_str().unwrap().ends_with('Z'));

    let opts = json!({"model": Q, "stream": false, "options": {"num_predict": 2}});
    let v = post(a, "/api/chat", opts).json();
    assert_eq!(v["message"]["content"], "Hello from");
    assert_eq!(v["done"], true);
    let r = post(a, "/api/generate", json!({ "model": Q }));
    assert_eq!(ndjson(&r)[1]["response"], " from");
    let v = post(a, "/api/embed", json!({"model": Q, "input": "x"})).json();
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 8);
    let v = post(a, "/api/embeddings", json!({"model": Q, "prompt": "x"})).json();
    assert_eq!(v["embedding"].as_array().unwrap().len(), 8);

    let v = get(a, "/api/tags").json();
    assert_eq!(v["models"][0]["name"], "llama3.2:latest");
    assert_eq!(v["models"][0]["details"]["family"], "llama");
    assert_eq!(v["models"][0]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(get(a, "/api/version").json()["version"], "0.0.0-mock");
    let v = post(a, "/api/show", json!({ "model": Q })).json();
    assert_eq!(v["details"]["family"], "qwen");
    let r = post(a, "/api/show", json!({"model": "zz"}));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "model \"zz\" not found, try pulling it first"})
    );
    let v = get(a, "/api/v0/models").json();
    assert_eq!(v["data"][1]["id"], Q);
    assert_eq!(v["data"][1]["state"], "loaded");
    // OpenAI's API under LM Studio's REST prefixes (and lemonade's /api/v1).
    for prefix in ["/api/v0", "/api/v1"] {
        let v = post(
            a,
            &format!("{prefix}/chat/completions"),
            json!({"model": Q, "stream": false}),
        );
        assert_eq!(v.json()["object"], "chat.completion", "{prefix}");
    }
    m.stop();
}

#[test]
fn engine_state_follows_the_control() {
    let m = mock("gpu-a", |_| {});
    let (a, control) = (m.addr(), m.control());
    let names = |v: &Value, list: &str, key: &str| -> Vec<String> {
        let items = v[list].as_array().unwrap().iter();
        items.map(|e| e[key].as_str().unwrap().to_owned()).collect()
    };
    let states = || -> Vec<String> {
        let v = get(a, "/api/v0/models").json();
        let items = v["data"].as_array().unwrap().iter();
        items
            .map(|e| e["state"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&get(a, "/api/ps").json(), "models", "name"),
        ["llama3.2:latest", Q],
        "every served model by default"
    );
    assert_eq!(states(), ["loaded", "loaded"]);
    control.set_loaded(vec![Q.into()]);
    assert_eq!(names(&get(a, "/api/ps").json(), "models", "model"), [Q]);
    assert_eq!(states(), ["not-loaded", "loaded"]);
    control.set_loaded(vec![]);
    assert!(
        get(a, "/api/ps").json()["models"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    control.set_all_loaded();
    assert_eq!(states(), ["loaded", "loaded"]);

    let metrics = get(a, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(metrics.text().contains("\nllamacpp:requests_deferred 0\n"));
    control.set_queue_depth(12);
    let text = get(a, "/metrics").text();
    let waiting = "vllm:num_requests_waiting{engine=\"0\",model_name=\"llama3.2:latest\"} 12.0\n";
    assert!(text.contains(waiting), "{text}");
    assert!(text.contains("\nllamacpp:requests_deferred 12\n"), "{text}");

    // Over HTTP too; none of these reads counts as traffic.
    let v = post(
        a,
        "/mock/control",
        json!({"loaded": ["x"], "queue_depth": 3}),
    )
    .json();
    assert_eq!(
        (&v["loaded"], &v["queue_depth"]),
        (&json!(["x"]), &json!(3))
    );
    assert_eq!(m.stats().requests(), 1, "only the control request");
    assert!(m.stats().model_lists() >= 7);
}

#[test]
fn health_routing_and_control() {
    let m = mock("h", |_| {});
    let (a, control) = (m.addr(), m.control());
    assert_eq!(get(a, "/").text(), "Ollama is running");
    assert_eq!(get(a, "/health").json(), json!({"status": "ok"}));
    assert_eq!(get(a, "/api/v1/health").status, 200);
    let r = get(a, "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert_eq!(r.header("x-mock-backend"), Some("h"));
    assert_eq!(
        Client::new(a)
            .request("DELETE", CHAT, &[], "")
            .unwrap()
            .status,
        405
    );

    control.set_healthy(false);
    for path in ["/", "/health", "/api/v1/health"] {
        assert_eq!(get(a, path).status, 503);
    }
    assert_eq!(get(a, "/v1/models").status, 200);
    control.set_healthy(true);

    control.set_status_override(Some(502));
    let r = post(a, CHAT, json!({ "model": Q }));
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "mock_status");
    assert_eq!(get(a, "/mock/stats").status, 200, "/mock is exempt");
    control.set_status_override(None);

    control.set_models(vec!["only".into()]);
    assert_eq!(post(a, CHAT, json!({ "model": Q })).status, 404);
    assert_eq!(post(a, CHAT, json!({"model": "only"})).status, 200);

    // The same switches over HTTP, for process-based drivers.
    let v = post(
        a,
        "/mock/control",
        json!({"status_override": 503, "models": ["x"]}),
    )
    .json();
    assert_eq!(
        v,
        json!({"status_override": 503, "healthy": true, "models": ["x"], "loaded": ["x"],
            "queue_depth": 0})
    );
    assert_eq!(get(a, "/v1/models").status, 503);
    post(
        a,
        "/mock/control",
        json!({"status_override": null, "healthy": false}),
    );
    assert_eq!(get(a, "/v1/models").json()["data"][0]["id"], "x");
    assert_eq!(get(a, "/health").status, 503);
    let s = get(a, "/mock/stats").json();
    assert_eq!(s["name"], "h");
    assert_eq!(s["requests"].as_u64(), Some(m.stats().requests()));
    m.stop();
}

#[test]
fn echo_keepalive_and_pipelining() {
    let _fds = no_children();
    let m = mock("e", |_| {});
    let mut c = Client::new(m.addr());
    let hs = [("X-Weird-Case", "v1"), ("x-dup", "1"), ("x-dup", "2")];
    let v = c
        .request("PUT", "/mock/echo?a=1&b", &hs, "héllo")
        .unwrap()
        .json();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/mock/echo");
    assert_eq!(v["query"], "a=1&b");
    assert_eq!(v["body"], "héllo");
    assert_eq!(v["version"], "HTTP/1.1");
    let names: Vec<_> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].clone())
        .collect();
    assert_eq!(
        json!(names),
        json!(["Host", "X-Weird-Case", "x-dup", "x-dup", "Content-Length"])
    );
    assert_eq!(get(m.addr(), "/mock/echo").json()["query"], Value::Null);

    // Keep-alive: several requests, one connection.
    let before = m.stats().connections_accepted();
    for _ in 0..3 {
        assert_eq!(c.request("GET", "/health", &[], "").unwrap().status, 200);
    }
    // Pipelined: three requests (with bodies) in one write, answered in order.
    let chat = raw("POST", CHAT, &[], &json!({ "model": Q }).to_string());
    c.send(
        (raw("POST", "/mock/echo", &[], "abc") + &raw("GET", "/mock/echo?2", &[], "") + &chat)
            .as_bytes(),
    );
    assert_eq!(c.response().unwrap().json()["body"], "abc");
    assert_eq!(c.response().unwrap().json()["query"], "2");
    assert_eq!(c.response().unwrap().json()["object"], "chat.completion");
    assert_eq!(m.stats().connections_accepted(), before);

    // Connection: close and HTTP/1.0 end the connection after the response.
    let r = c
        .request("GET", "/health", &[("Connection", "close")], "")
        .unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    let mut c = Client::new(m.addr());
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 200);
    assert!(c.closed());
    let mut c = Client::new(m.addr());
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        c.response().unwrap().header("connection"),
        Some("keep-alive")
    );
    assert_eq!(c.request("GET", "/health", &[], "").unwrap().status, 200);
    m.stop();
}

#[test]
fn protocol_limits() {
    let _fds = no_children();
    let m = mock("p", |_| {});
    let status = |raw: &[u8]| {
        let mut c = Client::new(m.addr());
        c.send(raw);
        let status = c.response().map(|r| r.status);
        (status, c.closed())
    };
    let chunked =
        b"POST /mock/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    assert_eq!(status(chunked), (Some(411), true));
    let huge = b"POST /mock/echo HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n";
    assert_eq!(status(huge), (Some(413), true));
    // No end of head: the server gives up after 64 KiB (having read all we sent).
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(66 * 1024));
    assert_eq!(status(big.as_bytes()), (Some(431), true));
    assert_eq!(status(b"GARBAGE\r\n\r\n"), (Some(400), true));

    // Expect: 100-continue gets an interim response before the body is sent.
    let mut c = Client::new(m.addr());
    c.send(b"POST /mock/echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 100);
    c.send(b"ok");
    assert_eq!(c.response().unwrap().json()["body"], "ok");
    // A body split across many writes.
    let req = raw("POST", "/mock/echo", &[], &"x".repeat(200_000));
    for part in req.as_bytes().chunks(50_000) {
        c.send(part);
        std::thread::sleep(ms(2));
    }
    assert_eq!(
        c.response().unwrap().json()["body"].as_str().unwrap().len(),
        200_000
    );
    m.stop();
}

#[test]
fn stream_chunks_arrive_separately_and_in_time() {
    let m = mock("t", |c| c.token_delay = ms(50));
    let start = Instant::now();
    let r = post_h(
        m.addr(),
        CHAT,
        &[("X-Mock-Tokens", "5")],
        json!({"model": Q, "stream": true}),
    );
    assert_eq!(r.chunks.len(), 6);
    let first = r.chunks[0].0 - start;
    assert!(first < ms(40), "first chunk after {first:?}");
    for w in r.chunks[..5].windows(2) {
        assert!(w[1].0 - w[0].0 >= ms(40), "tokens were batched");
    }
    assert!(start.elapsed() >= ms(200));
    // Counted after the last write, which the client may see first.
    assert!(eventually(|| m.stats().completed_streams() == 1));

    // Per-request delays; non-streamed, the first-token delay precedes the response.
    let start = Instant::now();
    let hs = [("X-Mock-First-Token-Delay-Ms", "100")];
    let r = post_h(
        m.addr(),
        "/api/generate",
        &hs,
        json!({"model": Q, "stream": false}),
    );
    assert_eq!(r.status, 200);
    assert!(start.elapsed() >= ms(100));
    let start = Instant::now();
    let hs = [("X-Mock-Token-Delay-Ms", "0"), ("X-Mock-Tokens", "20")];
    assert_eq!(
        ndjson(&post_h(m.addr(), "/api/chat", &hs, json!({ "model": Q }))).len(),
        21
    );
    assert!(start.elapsed() < ms(500));
    m.stop();
}

#[test]
fn failure_overrides() {
    let _fds = no_children();
    let m = mock("f", |_| {});
    let a = m.addr();
    let stream = json!({"model": Q, "stream": true});
    let r = post_h(a, CHAT, &[("X-Mock-Status", "429")], stream.clone());
    assert_eq!(r.status, 429);
    let e = json!({"error": {"message": "mock status 429", "type": "server_error", "code": "mock_status"}});
    assert_eq!(r.json(), e);

    let send = |fail: &str, tokens: &str, body: &Value| {
        let mut c = Client::new(a);
        let hs = [("X-Mock-Fail", fail), ("X-Mock-Tokens", tokens)];
        c.send(raw("POST", CHAT, &hs, &body.to_string()).as_bytes());
        c
    };
    let mut c = send("close", "8", &stream);
    assert!(c.closed(), "no response byte");

    let mut c = send("bad-head", "8", &stream);
    assert!(
        c.until(b"\r\n\r\n")
            .unwrap()
            .starts_with(b"HTTP/1.1 garbage")
    );
    assert!(c.closed());

    // mid-stream: head + half the tokens, then the socket closes without the 0-chunk.
    let mut c = send("mid-stream", "6", &stream);
    while c.more() {}
    let seen = String::from_utf8_lossy(&c.buf).into_owned();
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(seen.matches("chat.completion.chunk").count(), 3);
    assert!(!seen.contains("[DONE]"));
    let mut c = send("mid-stream", "6", &json!({ "model": Q }));
    assert!(c.response().is_none(), "non-streamed: truncated body");

    // hang: no answer, the socket stays open until stop().
    let mut c = send("hang", "8", &stream);
    c.s.set_read_timeout(Some(ms(300))).unwrap();
    let e = c.s.read(&mut [0u8; 1]).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    c.s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let t = Instant::now();
    m.stop();
    assert!(c.closed() && t.elapsed() < ms(500));
}

/// True if nothing arrives for `d` and the connection is still open.
fn silent_for(c: &mut Client, d: Duration) -> bool {
    c.s.set_read_timeout(Some(d)).unwrap();
    let e = c.s.read(&mut [0u8; 1]).map(|_| ());
    c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.buf.is_empty()
        && e.is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn bytes_after_the_answer() {
    let _fds = no_children();
    let m = mock("u", |_| {});
    let hs = [("X-Mock-Fail", "stale-response")];
    let body = json!({ "model": Q }).to_string();

    // stale-response: a normal answer, then a second one 100 ms later; served on.
    let mut c = Client::new(m.addr());
    let r = c.request("POST", CHAT, &hs, &body).unwrap();
    let answered = Instant::now();
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let stale = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Mock-Stale: yes\r\n\r\nSTALE";
    assert_eq!(c.exact(stale.len()).unwrap(), stale);
    assert!(answered.elapsed() >= ms(80), "{:?}", answered.elapsed());
    assert!(silent_for(&mut c, ms(200)), "only one stale answer");
    assert_eq!(c.request("GET", "/health", &[], "").unwrap().status, 200);

    // idle-408: a normal answer, then a 408 and close.
    let mut c = Client::new(m.addr());
    let r = c.request("POST", CHAT, &[("X-Mock-Fail", "idle-408")], &body);
    assert_eq!(r.unwrap().status, 200);
    let answered = Instant::now();
    let late = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(c.exact(late.len()).unwrap(), late);
    assert!(answered.elapsed() >= ms(80));
    assert!(c.closed());

    // head-then-body (on /mock too): the head with its Content-Length, no body, then
    // `hello` 100 ms later; served on.
    let mut c = Client::new(m.addr());
    let hs = [("X-Mock-Fail", "head-then-body")];
    c.send(raw("HEAD", "/mock/echo", &hs, "").as_bytes());
    let head = String::from_utf8(c.until(b"\r\n\r\n").unwrap()).unwrap();
    let answered = Instant::now();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "));
    assert!(length.unwrap().parse::<usize>().unwrap() > 0, "{head}");
    assert_eq!(c.exact(5).unwrap(), b"hello");
    assert!(answered.elapsed() >= ms(80));
    assert_eq!(c.request("GET", "/health", &[], "").unwrap().status, 200);

    // Connection: close wins: nothing is written after the answer.
    let mut c = Client::new(m.addr());
    let hs = [("X-Mock-Fail", "stale-response"), ("Connection", "close")];
    assert_eq!(c.request("POST", CHAT, &hs, &body).unwrap().status, 200);
    assert!(c.closed());
    m.stop();
}

#[test]
fn early_answers_leave_the_body_unread() {
    let _fds = no_children();
    let m = mock("x", |_| {});
    // Head only, announcing 64 MiB - 1: the answer comes before any body byte is sent.
    let head = |fail: &str| {
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nX-Mock-Fail: {fail}\r\nContent-Length: 67108863\r\n\r\n"
        )
    };
    let mut c = Client::new(m.addr());
    c.send(head("early-401").as_bytes());
    let body = r#"{"error":{"message":"early","type":"auth"}}"#;
    let want = format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(c.exact(want.len()).unwrap(), want.as_bytes());
    // The body is never read: writing it blocks once the socket buffers are full.
    c.s.set_write_timeout(Some(ms(300))).unwrap();
    let (chunk, mut written) = (vec![b'x'; 64 * 1024], 0usize);
    while written < 64 << 20 {
        match std::io::Write::write(&mut c.s, &chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(written < 32 << 20, "the mock read {} MiB", written >> 20);
    assert!(silent_for(&mut c, ms(200)), "the connection stays open");

    let mut c = Client::new(m.addr());
    c.send(head("early-413").as_bytes());
    let body = r#"{"error":{"message":"too large","type":"size"}}"#;
    let want = format!(
        "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(c.exact(want.len()).unwrap(), want.as_bytes());
    assert!(c.closed());
    assert_eq!(m.stats().requests(), 2);
    m.stop();
}

#[test]
fn malformed_first_chunks() {
    let _fds = no_children();
    let m = mock("c", |_| {});
    let cases: [(&str, &[u8]); 4] = [
        ("bad-chunk-hex", b"zz\r\nhello\r\n"),
        ("bad-chunk-lf", b"5\nhello\n"),
        ("bad-chunk-size", b"10000000000000000\r\nhello\r\n"),
        ("bad-chunk-overrun", b"3\r\nhello\r\n"),
    ];
    let body = json!({"model": Q, "stream": true}).to_string();
    let mut open = Vec::new();
    for (fail, chunk) in cases {
        let mut c = Client::new(m.addr());
        c.send(raw("POST", CHAT, &[("X-Mock-Fail", fail)], &body).as_bytes());
        let mut want = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        want.extend_from_slice(chunk);
        assert_eq!(c.exact(want.len()).unwrap(), want, "{fail}");
        open.push(c);
    }
    for c in &mut open {
        assert!(
            silent_for(c, ms(100)),
            "nothing more, the connection stays open"
        );
    }
    let t = Instant::now();
    m.stop();
    for c in &mut open {
        assert!(c.closed());
    }
    assert!(t.elapsed() < ms(500));
}

#[test]
fn token_events_are_padded() {
    let m = mock("b", |_| {});
    let stream = |path, bytes: &str| {
        let hs = [("X-Mock-Tokens", "3"), ("X-Mock-Token-Bytes", bytes)];
        post_h(m.addr(), path, &hs, json!({"model": Q, "stream": true}))
    };
    let r = stream(CHAT, "16384");
    let sizes: Vec<_> = r.chunks.iter().map(|(_, c)| c.len()).collect();
    assert_eq!(sizes[..3], [16384; 3]);
    let ev = sse(&r);
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[1]["choices"][0]["delta"]["content"], " from");
    let padding = ev[1]["mock_padding"].as_str().unwrap();
    assert!(padding.len() > 16000 && padding.bytes().all(|b| b == b'x'));
    assert!(
        ev[3].get("mock_padding").is_none(),
        "the closing event is not padded"
    );
    let r = stream("/v1/completions", "1000");
    assert!(r.chunks[..3].iter().all(|(_, c)| c.len() == 1000));
    assert_eq!(sse(&r)[2]["choices"][0]["text"], " the");
    let r = stream("/api/chat", "5000");
    assert!(r.chunks[..3].iter().all(|(_, c)| c.len() == 5000));
    assert_eq!(ndjson(&r)[0]["message"]["content"], "Hello");
    assert_eq!(ndjson(&r)[3]["done"], true);
    // Smaller than the event: unchanged; more than 1 MiB: 1 MiB.
    let r = stream("/api/generate", "10");
    assert!(!r.text().contains("mock_padding"));
    let r = stream(CHAT, "5000000");
    assert!(r.chunks[..3].iter().all(|(_, c)| c.len() == 1 << 20));
    m.stop();
}

#[test]
fn aborted_streams_are_counted() {
    let m = mock("a", |c| (c.token_delay, c.tokens) = (ms(20), 50));
    let mut c = Client::new(m.addr());
    c.send(
        raw(
            "POST",
            CHAT,
            &[],
            &json!({"model": Q, "stream": true}).to_string(),
        )
        .as_bytes(),
    );
    c.until(b"\r\n\r\n").unwrap();
    drop(c);
    assert!(eventually(|| m.stats().aborted_streams() == 1));
    assert!(eventually(|| m.stats().open_connections() == 0));
    assert_eq!(m.stats().completed_streams(), 0);
    m.stop();
}

#[test]
fn stop_closes_everything_and_allows_rebind() {
    let _fds = no_children();
    for threads in [1, 2] {
        let m = mock("s", |c| {
            (c.threads, c.token_delay, c.tokens) = (threads, ms(300), 100)
        });
        let addr = m.addr();
        let mut idle = Client::new(addr);
        assert_eq!(idle.request("GET", "/health", &[], "").unwrap().status, 200);
        let mut streaming = Client::new(addr);
        let body = json!({"model": Q, "stream": true}).to_string();
        streaming.send(raw("POST", CHAT, &[], &body).as_bytes());
        streaming.until(b"data: ").unwrap();
        assert!(eventually(|| m.stats().open_connections() == 2));

        let t = Instant::now();
        m.stop();
        assert!(t.elapsed() < ms(200), "stop took {:?}", t.elapsed());
        for c in [&mut idle, &mut streaming] {
            c.s.set_read_timeout(Some(ms(200))).unwrap();
            // EOF or reset, and no terminating chunk for the cut stream.
            loop {
                let mut b = [0u8; 4096];
                match c.s.read(&mut b) {
                    Ok(0) => break,
                    Ok(n) => assert!(!b[..n].ends_with(b"0\r\n\r\n")),
                    Err(e) => {
                        assert!(!matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut
                        ));
                        break;
                    }
                }
            }
        }
        assert!(t.elapsed() < ms(400));
        assert!(TcpStream::connect(addr).is_err(), "listener still open");

        let again = spawn(
            addr,
            MockConfig {
                threads,
                ..MockConfig::named("s2")
            },
        );
        let again = again.expect("rebind the same address");
        assert_eq!(get(addr, "/health").header("x-mock-backend"), Some("s2"));
        again.stop();
    }
}

#[test]
fn multi_threaded_server_counts_all_threads() {
    let m = mock("mt", |c| c.threads = 2);
    for _ in 0..20 {
        assert_eq!(post(m.addr(), CHAT, json!({ "model": Q })).status, 200);
    }
    assert_eq!(m.stats().connections_accepted(), 20);
    assert_eq!(m.stats().requests(), 20);
    // Dropping stops too.
    let addr = m.addr();
    drop(m);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn required_header_gates_all_but_health_checks() {
    let m = mock("auth", |c| {
        c.require_header = Some(("X-Tenant-ID".into(), "tenant-abc".into()));
    });
    let a = m.addr();
    let body = json!({"model": Q, "stream": false});
    let r = post(a, CHAT, body.clone());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(
        r.json()["error"]["message"],
        "missing or invalid X-Tenant-ID header"
    );
    assert_eq!(
        post_h(a, CHAT, &[("x-tenant-id", "wrong")], body.clone()).status,
        401
    );
    assert_eq!(
        post_h(a, CHAT, &[("X-Tenant-ID", " tenant-abc")], body).status,
        200
    );
    assert_eq!(get(a, "/v1/models").status, 401, "model lists need it too");
    assert_eq!(get(a, "/health").status, 200, "health checks do not");
    m.stop();

    // The same from the command line, with a bearer token as Olla's auth tests use it.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--models",
        "mock-model",
        "--require-header",
        "Authorization",
        "--require-value",
        "Bearer t-1",
    ];
    let (mut child, addr) = run_binary(&args);
    let statuses = addr.map(|a| {
        let chat = json!({"model": "mock-model"});
        let good = post_h(a, CHAT, &[("Authorization", "Bearer t-1")], chat.clone());
        [post(a, CHAT, chat).status, good.status]
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(statuses.unwrap(), [401, 200]);
}

#[test]
fn binary_prints_address_and_serves() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--name",
        "bin",
        "--models",
        "a,b",
        "--tokens",
        "2",
    ];
    let (mut child, addr) = run_binary(&args);
    let r = addr.map(|a| post(a, "/api/generate", json!({"model": "b", "stream": false})));
    let _ = child.kill();
    let _ = child.wait();
    let r = r.unwrap();
    assert_eq!(r.header("x-mock-backend"), Some("bin"));
    assert_eq!(r.json()["response"], "Hello from");
}

/// Re-runs every other test of this file in a child process on the epoll driver, so both
/// monoio drivers are covered (stop() included).
#[test]
fn legacy_driver_suite() {
    if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() {
        return;
    }
    eprintln!("io_uring available: {}", monoio::utils::detect_uring());
    let child = spawn_child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--skip", "legacy_driver_suite", "--test-threads", "2"])
            .env("MONOIO_FORCE_LEGACY_DRIVER", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}\n{err}");
    assert!(report.contains("test result: ok.") && !report.contains("ok. 0 passed"));
}
