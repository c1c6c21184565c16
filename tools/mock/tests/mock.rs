//! Integration tests for ringway-mock over real sockets, using a tiny blocking HTTP/1.1
//! client. Every server binds 127.0.0.1:0 and is stopped by the test that started it.
//! `legacy_driver_suite` re-runs this whole file with `MONOIO_FORCE_LEGACY_DRIVER=1`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway_mock::{MockConfig, MockServer, spawn};
use serde_json::{Value, json};

fn mock(config: MockConfig) -> MockServer {
    spawn("127.0.0.1:0".parse().unwrap(), config).expect("spawn mock")
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunk payloads with the time each one was complete.
    chunks: Vec<(Instant, Vec<u8>)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { s, buf: Vec::new() }
    }
    fn send(&mut self, raw: &[u8]) {
        self.s.write_all(raw).unwrap();
    }
    /// Reads more; false at EOF or reset.
    fn more(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        match self.s.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }
    fn until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                return Some(self.buf.drain(..i + pat.len()).collect());
            }
            if !self.more() {
                return None;
            }
        }
    }
    fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
    /// True if the server closed the connection (EOF or reset) with nothing more to read.
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.more()
    }
    /// Parses one response; None if the connection ended first.
    fn response(&mut self) -> Option<Resp> {
        let head = String::from_utf8(self.until(b"\r\n\r\n")?).unwrap();
        let mut lines = head.lines();
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
            .collect();
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
            chunks: Vec::new(),
        };
        if status < 200 {
            return Some(r); // interim response, no body
        }
        if let Some(n) = r.header("content-length") {
            r.body = self.exact(n.parse().unwrap())?;
        } else if r.header("transfer-encoding") == Some("chunked") {
            loop {
                let line = String::from_utf8(self.until(b"\r\n")?).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let data = self.exact(n + 2)?;
                if n == 0 {
                    break;
                }
                r.body.extend_from_slice(&data[..n]);
                r.chunks.push((Instant::now(), data[..n].to_vec()));
            }
        } else {
            while self.more() {}
            r.body = std::mem::take(&mut self.buf);
        }
        Some(r)
    }
    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Option<Resp> {
        self.send(raw(method, path, headers, body).as_bytes());
        self.response()
    }
}

fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!(
        "{method} {path} HTTP/1.1\r\nHost: mock\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        s += &format!("{n}: {v}\r\n");
    }
    s + "\r\n" + body
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: Value) -> Resp {
    Client::new(addr)
        .request("POST", path, headers, &body.to_string())
        .unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    Client::new(addr).request("GET", path, &[], "").unwrap()
}

/// Data lines of an SSE body, parsed (`[DONE]` becomes a string).
fn sse(r: &Resp) -> Vec<Value> {
    let text = r.text();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or(json!(d)))
        .collect()
}

fn ndjson(r: &Resp) -> Vec<Value> {
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `f` for up to 2 s.
fn eventually(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

const CHAT: &str = "/v1/chat/completions";

#[test]
fn openai_shapes() {
    let m = mock(MockConfig::named("gpu-a"));
    let a = m.addr();
    let r = post(
        a,
        CHAT,
        &[],
        json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!((r.status, r.header("x-mock-backend")), (200, Some("gpu-a")));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["system_fingerprint"], "gpu-a");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock backend, one token"
    );
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));

    let r = post(
        a,
        CHAT,
        &[],
        json!({"model": "qwen2.5:7b", "stream": true, "max_tokens": 3}),
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = sse(&r);
    assert_eq!(ev.len(), 5, "3 tokens + finish + [DONE]");
    assert_eq!(r.chunks.len(), 4, "one chunk per token, then finish+[DONE]");
    assert_eq!(ev[1]["choices"][0]["delta"]["content"], " from");
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    assert_eq!(ev[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[4], "[DONE]");

    let r = post(
        a,
        "/v1/completions",
        &[],
        json!({"model": "llama3.2:latest", "max_tokens": 2}),
    );
    assert_eq!(r.json()["choices"][0]["text"], "Hello from");
    assert_eq!(r.json()["object"], "text_completion");
    let r = post(
        a,
        "/v1/completions",
        &[],
        json!({"model": "llama3.2:latest", "stream": true}),
    );
    assert_eq!(sse(&r)[0]["choices"][0]["text"], "Hello");

    let r = post(
        a,
        "/v1/embeddings",
        &[],
        json!({"model": "qwen2.5:7b", "input": ["a", "b"]}),
    );
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);

    let v = get(a, "/v1/models").json();
    assert_eq!(v["data"][0]["id"], "llama3.2:latest");
    assert_eq!(v["data"][1]["owned_by"], "ringway-mock");

    let r = post(a, CHAT, &[], json!({"model": "nope"}));
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("model_not_found"))
    );
    let r = Client::new(a)
        .request("POST", CHAT, &[], "{not json")
        .unwrap();
    assert_eq!(r.status, 400);
    m.stop();
}

#[test]
fn ollama_and_lmstudio_shapes() {
    let m = mock(MockConfig {
        tokens: 3,
        ..MockConfig::named("o")
    });
    let a = m.addr();
    let r = post(
        a,
        "/api/chat",
        &[],
        json!({"model": "qwen2.5:7b", "messages": []}),
    );
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = ndjson(&r);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["message"]["content"], "Hello");
    assert_eq!(lines[0]["done"], false);
    assert_eq!(
        (lines[3]["done"].clone(), lines[3]["eval_count"].clone()),
        (json!(true), json!(3))
    );
    assert!(lines[3]["created_at"].as_str().unwrap().ends_with('Z'));

    let v = post(
        a,
        "/api/chat",
        &[],
        json!({"model": "qwen2.5:7b", "stream": false, "options": {"num_predict": 2}}),
    )
    .json();
    assert_eq!(
        (v["message"]["content"].clone(), v["done"].clone()),
        (json!("Hello from"), json!(true))
    );
    let r = post(a, "/api/generate", &[], json!({"model": "qwen2.5:7b"}));
    assert_eq!(ndjson(&r)[1]["response"], " from");
    let v = post(
        a,
        "/api/embed",
        &[],
        json!({"model": "qwen2.5:7b", "input": "x"}),
    )
    .json();
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 8);
    let v = post(
        a,
        "/api/embeddings",
        &[],
        json!({"model": "qwen2.5:7b", "prompt": "x"}),
    )
    .json();
    assert_eq!(v["embedding"].as_array().unwrap().len(), 8);

    let v = get(a, "/api/tags").json();
    assert_eq!(v["models"][0]["name"], "llama3.2:latest");
    assert_eq!(v["models"][0]["details"]["family"], "llama");
    assert_eq!(v["models"][0]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(get(a, "/api/version").json()["version"], "0.0.0-mock");
    assert_eq!(
        post(a, "/api/show", &[], json!({"model": "qwen2.5:7b"})).json()["details"]["family"],
        "qwen"
    );
    let r = post(a, "/api/show", &[], json!({"model": "zz"}));
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": "model \"zz\" not found, try pulling it first"})
        )
    );
    let v = get(a, "/api/v0/models").json();
    assert_eq!(
        (v["data"][1]["id"].clone(), v["data"][1]["state"].clone()),
        (json!("qwen2.5:7b"), json!("loaded"))
    );
    m.stop();
}

#[test]
fn health_routing_and_control() {
    let m = mock(MockConfig::named("h"));
    let a = m.addr();
    assert_eq!(
        (get(a, "/").status, get(a, "/").text()),
        (200, "Ollama is running".into())
    );
    assert_eq!(get(a, "/health").json(), json!({"status": "ok"}));
    assert_eq!(get(a, "/api/v1/health").status, 200);
    let r = get(a, "/nope");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    assert_eq!(r.header("x-mock-backend"), Some("h"));
    assert_eq!(
        Client::new(a)
            .request("DELETE", CHAT, &[], "")
            .unwrap()
            .status,
        405
    );

    m.control().set_healthy(false);
    assert_eq!(
        (
            get(a, "/").status,
            get(a, "/health").status,
            get(a, "/api/v1/health").status
        ),
        (503, 503, 503)
    );
    assert_eq!(get(a, "/v1/models").status, 200);
    m.control().set_healthy(true);

    m.control().set_status_override(Some(502));
    let r = post(a, CHAT, &[], json!({"model": "qwen2.5:7b"}));
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (502, json!("mock_status"))
    );
    assert_eq!(get(a, "/mock/stats").status, 200, "/mock is exempt");
    m.control().set_status_override(None);

    m.control().set_models(vec!["only".into()]);
    assert_eq!(
        post(a, CHAT, &[], json!({"model": "qwen2.5:7b"})).status,
        404
    );
    assert_eq!(post(a, CHAT, &[], json!({"model": "only"})).status, 200);

    // The same switches over HTTP, for process-based drivers.
    let v = post(
        a,
        "/mock/control",
        &[],
        json!({"status_override": 503, "models": ["x"]}),
    )
    .json();
    assert_eq!(
        v,
        json!({"status_override": 503, "healthy": true, "models": ["x"]})
    );
    assert_eq!(get(a, "/v1/models").status, 503);
    post(
        a,
        "/mock/control",
        &[],
        json!({"status_override": null, "healthy": false}),
    );
    assert_eq!(
        (
            get(a, "/v1/models").json()["data"][0]["id"].clone(),
            get(a, "/health").status
        ),
        (json!("x"), 503)
    );
    let s = get(a, "/mock/stats").json();
    assert_eq!(s["name"], "h");
    assert_eq!(s["requests"].as_u64(), Some(m.stats().requests()));
    m.stop();
}

#[test]
fn echo_keepalive_and_pipelining() {
    let m = mock(MockConfig::named("e"));
    let mut c = Client::new(m.addr());
    let v = c
        .request(
            "PUT",
            "/mock/echo?a=1&b",
            &[("X-Weird-Case", "v1"), ("x-dup", "1"), ("x-dup", "2")],
            "héllo",
        )
        .unwrap()
        .json();
    assert_eq!(
        (v["method"].clone(), v["path"].clone(), v["query"].clone()),
        (json!("PUT"), json!("/mock/echo"), json!("a=1&b"))
    );
    assert_eq!(v["body"], "héllo");
    assert_eq!(v["version"], "HTTP/1.1");
    let names: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Host", "Content-Length", "X-Weird-Case", "x-dup", "x-dup"]
    );
    assert_eq!(get(m.addr(), "/mock/echo").json()["query"], Value::Null);

    // Keep-alive: several requests, one connection.
    let before = m.stats().connections_accepted();
    for _ in 0..3 {
        assert_eq!(c.request("GET", "/health", &[], "").unwrap().status, 200);
    }
    // Pipelined: three requests (one with a body) in one write, answered in order.
    let batch = raw("POST", "/mock/echo?1", &[], "abc")
        + &raw("GET", "/mock/echo?2", &[], "")
        + &raw("POST", CHAT, &[], "{\"model\":\"qwen2.5:7b\"}");
    c.send(batch.as_bytes());
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
    let m = mock(MockConfig::named("p"));
    let a = m.addr();
    let mut c = Client::new(a);
    c.send(b"POST /mock/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 411);
    assert!(c.closed());
    let mut c = Client::new(a);
    c.send(b"POST /mock/echo HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 413);
    let mut c = Client::new(a);
    // No end of head: the server must give up after 64 KiB (and has read everything we sent).
    c.send(format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(66 * 1024)).as_bytes());
    assert_eq!(c.response().map(|r| r.status), Some(431));
    let mut c = Client::new(a);
    c.send(b"GARBAGE\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 400);
    // Expect: 100-continue gets an interim response before the body is sent.
    let mut c = Client::new(a);
    c.send(b"POST /mock/echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 100);
    c.send(b"ok");
    assert_eq!(c.response().unwrap().json()["body"], "ok");
    // A body split across many writes.
    let body = "x".repeat(200_000);
    let req = raw("POST", "/mock/echo", &[], &body);
    for part in req.as_bytes().chunks(50_000) {
        c.send(part);
    }
    assert_eq!(
        c.response().unwrap().json()["body"].as_str().unwrap().len(),
        200_000
    );
    m.stop();
}

#[test]
fn stream_chunks_arrive_separately_and_in_time() {
    let m = mock(MockConfig {
        token_delay: Duration::from_millis(50),
        ..MockConfig::named("t")
    });
    let start = Instant::now();
    let r = post(
        m.addr(),
        CHAT,
        &[("X-Mock-Tokens", "5")],
        json!({"model": "qwen2.5:7b", "stream": true}),
    );
    assert_eq!(r.chunks.len(), 6);
    assert!(
        r.chunks[0].0 - start < Duration::from_millis(40),
        "first chunk after {:?}",
        r.chunks[0].0 - start
    );
    for w in r.chunks[..5].windows(2) {
        assert!(
            w[1].0 - w[0].0 >= Duration::from_millis(40),
            "tokens were batched"
        );
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(eventually(|| m.stats().completed_streams() == 1)); // counted after the last write

    // Per-request delay overrides, non-streamed: the first-token delay precedes the response.
    let start = Instant::now();
    let r = post(
        m.addr(),
        "/api/generate",
        &[("X-Mock-First-Token-Delay-Ms", "100")],
        json!({"model": "qwen2.5:7b", "stream": false}),
    );
    assert_eq!(r.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(100));
    let start = Instant::now();
    let r = post(
        m.addr(),
        "/api/chat",
        &[("X-Mock-Token-Delay-Ms", "0"), ("X-Mock-Tokens", "20")],
        json!({"model": "qwen2.5:7b"}),
    );
    assert_eq!(
        (
            ndjson(&r).len(),
            start.elapsed() < Duration::from_millis(500)
        ),
        (21, true)
    );
    m.stop();
}

#[test]
fn failure_overrides() {
    let m = mock(MockConfig::named("f"));
    let a = m.addr();
    let body = json!({"model": "qwen2.5:7b", "stream": true}).to_string();
    let r = Client::new(a)
        .request("POST", CHAT, &[("X-Mock-Status", "429")], &body)
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "mock status 429", "type": "server_error", "code": "mock_status"}})
    );

    let mut c = Client::new(a);
    assert!(
        c.request("POST", CHAT, &[("X-Mock-Fail", "close")], &body)
            .is_none()
    );
    assert!(c.buf.is_empty(), "no response byte");

    let mut c = Client::new(a);
    c.send(raw("POST", CHAT, &[("X-Mock-Fail", "bad-head")], &body).as_bytes());
    assert!(
        c.until(b"\r\n\r\n")
            .unwrap()
            .starts_with(b"HTTP/1.1 garbage")
    );
    assert!(c.closed());

    // mid-stream: head + half the tokens, then the socket closes without the 0-chunk.
    let mut c = Client::new(a);
    c.send(
        raw(
            "POST",
            CHAT,
            &[("X-Mock-Fail", "mid-stream"), ("X-Mock-Tokens", "6")],
            &body,
        )
        .as_bytes(),
    );
    while c.more() {}
    let seen = String::from_utf8_lossy(&c.buf).into_owned();
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(seen.matches("chat.completion.chunk").count(), 3);
    assert!(!seen.contains("[DONE]"));
    let mut c = Client::new(a);
    let r = c.request(
        "POST",
        CHAT,
        &[("X-Mock-Fail", "mid-stream")],
        "{\"model\":\"qwen2.5:7b\"}",
    );
    assert!(r.is_none(), "non-streamed: truncated body");

    // hang: no answer, the socket stays open until stop().
    let mut c = Client::new(a);
    c.send(raw("POST", CHAT, &[("X-Mock-Fail", "hang")], &body).as_bytes());
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let e = c.s.read(&mut b).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    c.s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let t = Instant::now();
    m.stop();
    assert!(c.closed() && t.elapsed() < Duration::from_millis(500));
}

#[test]
fn aborted_streams_are_counted() {
    let m = mock(MockConfig {
        token_delay: Duration::from_millis(20),
        tokens: 50,
        ..MockConfig::named("a")
    });
    let mut c = Client::new(m.addr());
    c.send(
        raw(
            "POST",
            CHAT,
            &[],
            "{\"model\":\"qwen2.5:7b\",\"stream\":true}",
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
    for threads in [1, 2] {
        let config = MockConfig {
            threads,
            token_delay: Duration::from_millis(300),
            tokens: 100,
            ..MockConfig::named("s")
        };
        let m = mock(config.clone());
        let addr = m.addr();
        let mut idle = Client::new(addr);
        assert_eq!(idle.request("GET", "/health", &[], "").unwrap().status, 200);
        let mut streaming = Client::new(addr);
        streaming.send(
            raw(
                "POST",
                CHAT,
                &[],
                "{\"model\":\"qwen2.5:7b\",\"stream\":true}",
            )
            .as_bytes(),
        );
        streaming.until(b"data: ").unwrap();
        assert!(eventually(|| m.stats().open_connections() == 2));

        let t = Instant::now();
        m.stop();
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "stop took {:?}",
            t.elapsed()
        );
        for c in [&mut idle, &mut streaming] {
            c.buf.clear();
            c.s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 4096];
            // EOF or reset; anything already in flight must end with the cut, not a terminator.
            loop {
                match c.s.read(&mut b) {
                    Ok(0) => break,
                    Ok(n) => assert!(!b[..n].ends_with(b"0\r\n\r\n")),
                    Err(e) => {
                        assert!(
                            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                            "still open"
                        );
                        break;
                    }
                }
            }
        }
        assert!(t.elapsed() < Duration::from_millis(400));
        assert!(TcpStream::connect(addr).is_err(), "listener still open");

        let again = spawn(addr, config).expect("rebind the same address");
        assert_eq!(again.addr(), addr);
        assert_eq!(get(addr, "/health").status, 200);
        again.stop();
    }
}

#[test]
fn multi_threaded_server_serves_all_listeners() {
    let m = mock(MockConfig {
        threads: 2,
        ..MockConfig::named("mt")
    });
    for _ in 0..20 {
        assert_eq!(
            post(m.addr(), CHAT, &[], json!({"model": "qwen2.5:7b"})).status,
            200
        );
    }
    assert_eq!(
        (m.stats().connections_accepted(), m.stats().requests()),
        (20, 20)
    );
    // Dropping stops too.
    let addr = m.addr();
    drop(m);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn binary_prints_address_and_serves() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-mock"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--name",
            "bin",
            "--models",
            "a,b",
            "--tokens",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .parse()
        .unwrap();
    let r = post(
        addr,
        "/api/generate",
        &[],
        json!({"model": "b", "stream": false}),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (r.header("x-mock-backend"), r.json()["response"].clone()),
        (Some("bin"), json!("Hello from"))
    );
}

/// Re-runs every other test of this file in a child process on the epoll driver, so both
/// monoio drivers are covered (stop() included).
#[test]
fn legacy_driver_suite() {
    if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() {
        return;
    }
    eprintln!("io_uring available: {}", monoio::utils::detect_uring());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--skip", "legacy_driver_suite", "--test-threads", "2"])
        .env("MONOIO_FORCE_LEGACY_DRIVER", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("test result: ok. 11 passed"), "{report}");
}
