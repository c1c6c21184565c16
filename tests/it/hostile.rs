//! Hostile input, round two: values that could forge header or log lines, the client's
//! copy of a header ringway sets, backends that break framing, write on idle
//! connections or answer before the body is read, and clients that trickle, stop
//! reading, or write while they are answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringway::Config;

use crate::harness::*;

/// The headers an echo request reached the endpoint with, names lowercased.
fn echoed_headers(r: &Response) -> Vec<(String, String)> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let name = h[0].as_str().unwrap().to_ascii_lowercase();
            (name, h[1].as_str().unwrap().to_string())
        })
        .collect()
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

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
