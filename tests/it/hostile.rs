//! Hostile input, round two: values that could forge header or log lines, the client's
//! copy of a header ringway sets, backends that break framing, write on idle
//! connections or answer before the body is read, and clients that trickle, stop
//! reading, or write while they are answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringway::Config;

use crate::harness::*;

#[test]
fn a_model_name_with_raw_control_bytes_forges_no_header_or_log_line() {
    let a = mock("a");
    let log = TempFile::new("");
    let extra = format!(
        "[log]\naccess = \"text\"\naccess_path = \"{}\"",
        log.0.display()
    );
    let proxy = proxy(&[Ep::new("a", &a)], "", &extra);
    let forged = [
        "x\r\nX-Injected: yes",
        "x\r\nContent-Length: 4\r\n\r\nEVILHTTP/1.1 200 OK\r\n\r\n",
        "x\n2026-01-01T00:00:00.000Z forged 1.2.3.4 \\\"GET /\\\" 200",
        "x\u{0}y",
        "x\ty\u{7f}",
    ];
    let mut client = Client::connect(proxy.local_addr());
    for model in forged {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let r = client.post_json("/v1/chat/completions", &body, "");
        assert_eq!(r.status, 400, "{model:?}: {}", r.text());
        assert_eq!(
            r.json()["error"]["type"],
            "invalid_request_error",
            "{model:?}: {}",
            r.text()
        );
        assert!(r.header("X-Injected").is_none(), "{:?}", r.headers);
        assert!(r.header("X-Olla-Model").is_none(), "{:?}", r.headers);
    }
    // The connection is still in step: the next answer is the next request's.
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-Olla-Model"), Some("llama3.2:latest"));
    assert_eq!(
        a.stats().requests(),
        1,
        "no forged model reached the endpoint"
    );
    // One access line per request, none forged.
    let mut text = String::new();
    assert!(eventually(Duration::from_secs(3), || {
        text = std::fs::read_to_string(&log.0).unwrap();
        text.lines().count() > forged.len()
    }));
    assert_eq!(text.lines().count(), forged.len() + 1, "{text}");
    assert!(!text.contains("forged"), "{text}");
}

#[test]
fn the_clients_copy_of_a_header_ringway_sets_never_reaches_the_endpoint() {
    let a = mock("a");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshards = 1\n[health]\ncheck_interval_ms = 3600000\n\
         [[endpoints]]\nname = \"a\"\nurl = \"http://{}\"\ntype = \"ollama\"\napi_key = \"k-123\"\napi_key_header = \"X-Backend-Key\"\n",
        a.addr()
    );
    let proxy = ringway::start(Config::from_toml(&text, "test").unwrap()).unwrap();
    let spoofed = "X-Backend-Key: spoofed\r\nx-backend-key: spoofed-too\r\n\
        Authorization: Bearer client\r\nX-Real-IP: 203.0.113.7\r\n\
        X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n";
    let r = one_shot(
        proxy.local_addr(),
        post("/olla/proxy/mock/echo", "{}", spoofed).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = echoed_headers(&r);
    assert_eq!(values(&headers, "x-backend-key"), ["k-123"], "{headers:?}");
    assert!(values(&headers, "authorization").is_empty(), "{headers:?}");
    assert_eq!(values(&headers, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(values(&headers, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&headers, "x-forwarded-host"), ["test"]);
}

#[test]
fn request_timeout_covers_a_trickled_body() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "body_timeout_ms = 1500",
        "[proxy]\nrequest_timeout_ms = 2000",
    );
    let mut s = TcpStream::connect(proxy.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\n")
        .unwrap();
    // One byte every 0.6 s: each within body_timeout_ms, all of them 7.2 s.
    let mut answer = Vec::new();
    for _ in 0..12 {
        if s.write_all(b"{").is_err() {
            break;
        }
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            let mut buf = [0; 4096];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if !answer.is_empty() {
            break;
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    assert_eq!(a.stats().requests(), 0);
}

#[test]
fn a_client_writing_while_it_is_answered_is_held_back_not_buffered() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let stream_for = Duration::from_millis(2500);
    let headers = "X-Mock-Tokens: 50\r\nX-Mock-Token-Delay-Ms: 50\r\n";
    client.send_raw(
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", true),
            headers,
        )
        .as_bytes(),
    );
    // Meanwhile the client writes 1 MiB blocks as fast as ringway takes them.
    let mut writer = client.stream().try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let pushing = std::thread::spawn(move || {
        let block = vec![b'x'; 1 << 20];
        let mut written = 0usize;
        let until = Instant::now() + stream_for;
        while Instant::now() < until {
            match writer.write(&block) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        written
    });
    let r = client.read_response(Instant::now(), false);
    let written = pushing.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.complete, "the stream was cut");
    assert!(r.text().contains("[DONE]"));
    // What the sockets' buffers hold, and no more: ringway stopped reading.
    assert!(
        written < 64 << 20,
        "ringway took {} MiB while streaming",
        written >> 20
    );
}

/// What `/internal/status` says of endpoint `name`'s failures in a row.
fn failures_in_a_row(proxy: &ringway::Server, name: &str) -> u64 {
    endpoint_status(proxy, name)["consecutive_failures"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_malformed_first_chunk_is_a_502_and_the_endpoints_failure() {
    let a = mock("a");
    for fail in [
        "bad-chunk-hex",
        "bad-chunk-lf",
        "bad-chunk-size",
        "bad-chunk-overrun",
    ] {
        // A proxy each: three failures in a row would open the endpoint's breaker.
        let proxy = proxy(&[Ep::new("a", &a)], "", "");
        let r = one_shot(
            proxy.local_addr(),
            post(
                "/v1/chat/completions",
                &chat("llama3.2:latest", true),
                &format!("X-Mock-Fail: {fail}\r\n"),
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 502, "{fail}: {}", r.text());
        assert_error(&r, 502, "upstream_protocol_error");
        assert!(
            r.text().contains("malformed chunked body"),
            "{fail}: {}",
            r.text()
        );
        assert_eq!(failures_in_a_row(&proxy, "a"), 1, "{fail}");
        // Counted as ringway's own 502, not as a relayed 2xx.
        let relayed = r#"ringway_responses_total{endpoint="a",status="2xx"}"#;
        assert_eq!(metric(&proxy, relayed), 0, "{fail}");
    }
}

/// Sends a request that makes the mock write on the connection after answering it, then
/// another client's request, which must get its own answer.
fn next_client_gets_its_own_answer(fail: &str, first: &str) {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let mut one = Client::connect(proxy.local_addr());
    let r = one.request(first.replace("{fail}", fail).as_bytes());
    assert!(r.status == 200, "{fail}: {} {}", r.status, r.text());
    // The mock writes 100 ms after its answer, on the idle pooled connection.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let r = one_shot(
            proxy.local_addr(),
            post("/v1/chat/completions", &chat("llama3.2:latest", false), "").as_bytes(),
        );
        assert_eq!(r.status, 200, "{fail}: {}", r.text());
        assert!(
            r.header("X-Mock-Stale").is_none(),
            "{fail}: served a stale answer"
        );
        assert_eq!(
            r.json()["object"],
            "chat.completion",
            "{fail}: {}",
            r.text()
        );
    }
}

#[test]
fn a_response_written_on_an_idle_pooled_connection_reaches_no_one() {
    let chat_with = post(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "X-Mock-Fail: {fail}\r\n",
    );
    next_client_gets_its_own_answer("stale-response", &chat_with);
    next_client_gets_its_own_answer("idle-408", &chat_with);
    let head = "HEAD /olla/proxy/mock/echo HTTP/1.1\r\nHost: t\r\nX-Mock-Fail: {fail}\r\n\r\n";
    next_client_gets_its_own_answer("head-then-body", head);
}

#[test]
fn an_answer_before_the_body_is_read_is_relayed_at_once() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    let body = format!(
        r#"{{"model":"llama3.2:latest","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8 << 20)
    );
    let mut client = Client::connect(proxy.local_addr());
    let started = Instant::now();
    let r = client.post_json("/v1/chat/completions", &body, "X-Mock-Fail: early-401\r\n");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "early");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The client's connection carries on (its body was read whole).
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());

    let started = Instant::now();
    let r = one_shot(
        proxy.local_addr(),
        post("/v1/chat/completions", &body, "X-Mock-Fail: early-413\r\n").as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "too large");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failures_in_a_row(&proxy, "a"), 0);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_at_request_timeout() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[proxy]\nrequest_timeout_ms = 1500",
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&proxy.local_addr().into()).unwrap();
    let mut client: TcpStream = socket.into();
    let headers = "X-Mock-Tokens: 2000\r\nX-Mock-Token-Bytes: 16384\r\n";
    client
        .write_all(
            post(
                "/v1/chat/completions",
                &chat("llama3.2:latest", true),
                headers,
            )
            .as_bytes(),
        )
        .unwrap();
    // Never read: the stream fills the sockets' buffers and ringway's write waits.
    assert!(
        eventually(
            Duration::from_secs(2),
            || endpoint_status(&proxy, "a")["in_flight"] == 1
        ),
        "the stream did not start"
    );
    assert!(
        eventually(
            Duration::from_secs(4),
            || endpoint_status(&proxy, "a")["in_flight"] == 0
        ),
        "the client still holds its request"
    );
    // And its connection is closed: reading what was buffered ends in EOF or a reset.
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) if Instant::now() < deadline => break true,
            Ok(_) if Instant::now() < deadline => {}
            _ => break false,
        }
    };
    assert!(closed, "the connection stayed open");
}

/// Reads one request (head and Content-Length body) from `s`: its head, lowercased;
/// `None` at its end.
fn read_request(s: &mut TcpStream) -> Option<String> {
    let (request, _) = read_one_request(s)?;
    let end = request.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(String::from_utf8_lossy(&request[..end]).to_ascii_lowercase())
}

#[test]
fn a_408_on_a_reused_connection_sends_the_request_again_on_a_fresh_one() {
    // A backend whose second request on any connection is answered `408` and a close,
    // as when its idle timeout and ringway's reuse cross.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().take(16) {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            std::thread::spawn(move || {
                let mut posts = 0;
                while let Some(head) = read_request(&mut s) {
                    if !head.starts_with("post ") {
                        let list = br#"{"object":"list","data":[]}"#;
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", list.len());
                        let _ = s.write_all(&[head.as_bytes(), list].concat());
                        continue;
                    }
                    posts += 1;
                    let answer = if posts == 2 {
                        "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_string()
                    } else {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nanswer-{posts}")
                    };
                    if s.write_all(answer.as_bytes()).is_err() || posts == 2 {
                        return;
                    }
                }
            });
        }
    });
    let proxy = proxy(&[Ep::at("scripted", addr).kind("openai")], "", "");
    let mut client = Client::connect(proxy.local_addr());
    let first = client.post_json("/olla/proxy/v1/chat/completions", "{}", "");
    assert_eq!((first.status, first.text().as_str()), (200, "answer-1"));
    let again = client.post_json("/olla/proxy/v1/chat/completions", "{}", "");
    assert_eq!(
        (again.status, again.text().as_str()),
        (200, "answer-1"),
        "not sent again on a fresh connection"
    );
}

/// One request as a raw backend reads it: the head, then `Content-Length` bytes, and
/// any bytes read after them. `None` when the connection ends first.
fn read_one_request(s: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                let after = got.split_off(end + 4 + len);
                return Some((got, after));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A pooled connection the endpoint closes as the next request reaches it is replaced,
/// and that request goes out whole on the new connection: its head and its body once
/// (the body used to be appended again after the first send's copy, and the endpoint
/// read it as a malformed next request: the soak's 400s).
#[test]
fn a_request_sent_again_on_a_fresh_connection_carries_its_body_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closed_one = Arc::new(AtomicBool::new(false));
    let resent: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let (closed, seen) = (closed_one.clone(), resent.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(20) {
            let Ok(mut s) = conn else { return };
            let (closed, seen) = (closed.clone(), seen.clone());
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let ok = |body: &str| {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let mut posts = 0;
                while let Some((req, after)) = read_one_request(&mut s) {
                    if !req.starts_with(b"POST") {
                        let list = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
                        let _ = s.write_all(ok(list).as_bytes());
                        continue;
                    }
                    posts += 1;
                    if posts == 2 && !closed.swap(true, Ordering::SeqCst) {
                        return; // closed as the second request arrives
                    }
                    if closed.load(Ordering::SeqCst) && posts == 1 {
                        // The request sent again: whatever else follows it, within 300 ms.
                        let mut rest = after;
                        s.set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = s.read(&mut buf) {
                            rest.extend_from_slice(&buf[..n]);
                        }
                        *seen.lock().unwrap() = Some(rest);
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    }
                    let _ = s.write_all(ok(r#"{"choices":[]}"#).as_bytes());
                }
            });
        }
    });
    let proxy = proxy(&[Ep::at("raw", addr).kind("openai")], "", "");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#;
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..2 {
        let r = client.request(post("/v1/chat/completions", body, "").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        closed_one.load(Ordering::SeqCst),
        "the pooled connection was not reused"
    );
    let rest = resent
        .lock()
        .unwrap()
        .take()
        .expect("the request was sent again");
    assert!(
        rest.is_empty(),
        "after the request, the endpoint got: {}",
        String::from_utf8_lossy(&rest)
    );
}
