//! Test harness: mock backends and an in-process ringway on 127.0.0.1 with ports from
//! the OS, and a small blocking HTTP/1.1 client that records when each piece of a
//! response arrived (to prove streaming is not batched). Everything started here stops
//! when dropped; every read has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway::{Config, Server};
pub(crate) use ringway_mock::{MockConfig, MockServer};

/// Longest any single read may block in a test.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn mock(name: &str) -> MockServer {
    mock_with(MockConfig::named(name))
}

pub(crate) fn mock_with(config: MockConfig) -> MockServer {
    ringway_mock::spawn("127.0.0.1:0".parse().unwrap(), config).expect("start a mock backend")
}

/// An endpoint entry for [`proxy`]: name, type, priority.
pub(crate) struct Ep<'a> {
    pub(crate) name: &'a str,
    pub(crate) addr: SocketAddr,
    pub(crate) kind: &'a str,
    pub(crate) priority: u32,
}

impl<'a> Ep<'a> {
    pub(crate) fn new(name: &'a str, mock: &MockServer) -> Ep<'a> {
        Ep::at(name, mock.addr())
    }

    /// An endpoint at an address of the test's own (a dead port, a process it started).
    pub(crate) fn at(name: &'a str, addr: SocketAddr) -> Ep<'a> {
        Ep {
            name,
            addr,
            kind: "ollama",
            priority: 100,
        }
    }

    pub(crate) fn kind(self, kind: &'a str) -> Ep<'a> {
        Ep { kind, ..self }
    }

    pub(crate) fn priority(self, priority: u32) -> Ep<'a> {
        Ep { priority, ..self }
    }
}

/// The TOML for a proxy on a free port in front of `endpoints`; `extra` is appended to
/// the `[server]` table first, then may open other tables.
pub(crate) fn config_text(endpoints: &[Ep<'_>], server_extra: &str, extra: &str) -> String {
    let shards = if server_extra.contains("shards") {
        ""
    } else {
        "shards = 1\n"
    };
    // One round of health checks at start, then quiet, unless the test says otherwise.
    let health = if extra.contains("[health]") {
        ""
    } else {
        "[health]\ncheck_interval_ms = 3600000\n"
    };
    // No engine polling (what endpoints hold, their queues) unless the test asks: its
    // reads would count as connections in the tests that count them.
    let engine = "loaded_refresh_interval_ms = 0\n";
    let extra = match () {
        _ if extra.contains("loaded_refresh_interval_ms") => extra.to_string(),
        _ if extra.contains("[models]\n") => {
            extra.replace("[models]\n", &format!("[models]\n{engine}"))
        }
        _ => format!("{extra}\n[models]\n{engine}"),
    };
    let mut text =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{shards}{server_extra}\n{extra}\n{health}");
    for e in endpoints {
        text += &format!(
            "[[endpoints]]\nname = \"{}\"\nurl = \"http://{}\"\ntype = \"{}\"\npriority = {}\n",
            e.name, e.addr, e.kind, e.priority
        );
    }
    text
}

/// Starts ringway (one shard unless `server_extra` says otherwise) in front of
/// `endpoints`, with extra config tables in `extra` (e.g. "[proxy]\nbalancer = ...").
pub(crate) fn proxy(endpoints: &[Ep<'_>], server_extra: &str, extra: &str) -> Server {
    proxy_from(&config_text(endpoints, server_extra, extra))
}

/// [`proxy`] from a whole config `text` (a [`config_text`] the test has changed).
pub(crate) fn proxy_from(text: &str) -> Server {
    let config = Config::from_toml(text, "test config").expect("valid test config");
    let server = ringway::start(config).expect("start ringway");
    // Tests start once every endpoint has had its first health check, so the checker's
    // requests do not interleave with the test's.
    let settled = eventually(Duration::from_secs(5), || {
        let status = status_page(&server);
        let endpoints = status["endpoints"].as_array().unwrap();
        // Checked, and the healthy ones' model lists read.
        endpoints.iter().all(|e| {
            let answered = e["last_check_status"] == 200;
            !e["last_check"].is_null() && (!answered || !e["model_count"].is_null())
        })
    });
    assert!(settled, "endpoints were not checked within 5 s");
    server
}

/// An API key the status-page reads below carry, for tests that set `server.api_keys`.
pub(crate) const TEST_KEY: &str = "sk-test-key";

pub(crate) fn status_page(proxy: &Server) -> serde_json::Value {
    let request = format!(
        "GET /internal/status/endpoints HTTP/1.1\r\nHost: t\r\nX-Api-Key: {TEST_KEY}\r\n\r\n"
    );
    one_shot(proxy.local_addr(), request.as_bytes()).json()
}

/// One endpoint's entry on the status page.
pub(crate) fn endpoint_status(proxy: &Server, name: &str) -> serde_json::Value {
    let status = status_page(proxy);
    let endpoints = status["endpoints"].as_array().unwrap();
    let found = endpoints.iter().find(|e| e["name"] == name);
    found
        .unwrap_or_else(|| panic!("no endpoint {name} in {status}"))
        .clone()
}

/// A response as the client saw it.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// The body without transfer framing.
    pub(crate) body: Vec<u8>,
    /// When each body read returned, with its size (after the head).
    pub(crate) arrivals: Vec<(Instant, usize)>,
    pub(crate) sent_at: Instant,
    /// Whether the body ended properly (not cut by a close).
    pub(crate) complete: bool,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Time from sending the request to the first body bytes.
    pub(crate) fn first_byte_after(&self) -> Duration {
        self.arrivals[0].0 - self.sent_at
    }

    pub(crate) fn total_time(&self) -> Duration {
        self.arrivals
            .last()
            .map_or(Duration::ZERO, |a| a.0 - self.sent_at)
    }
}

/// What a [`Client`] speaks over: a TCP stream, or a TLS session on one
/// (tests/it/tls_listener.rs).
pub(crate) trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A client connection (keep-alive: several requests can go over it).
pub(crate) struct Client<S: Transport = TcpStream> {
    reader: BufReader<S>,
}

/// A TCP connection to `addr` with the tests' timeouts.
pub(crate) fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

impl Client {
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        Client::over(tcp_connect(addr))
    }
}

impl<S: Transport> Client<S> {
    /// A client over a connection of the test's own.
    pub(crate) fn over(stream: S) -> Client<S> {
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub(crate) fn stream(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    /// Sends raw bytes.
    pub(crate) fn send_raw(&mut self, raw: &[u8]) {
        self.stream().write_all(raw).expect("send request");
    }

    /// Sends a request and reads its response.
    pub(crate) fn request(&mut self, raw: &[u8]) -> Response {
        let sent_at = Instant::now();
        self.send_raw(raw);
        let was_head = raw.starts_with(b"HEAD ");
        self.read_response(sent_at, was_head)
    }

    pub(crate) fn post_json(&mut self, path: &str, body: &str, extra_headers: &str) -> Response {
        self.request(post(path, body, extra_headers).as_bytes())
    }

    pub(crate) fn get(&mut self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// Reads one response (skipping interim 1xx unless `keep_interim`).
    pub(crate) fn read_response(&mut self, sent_at: Instant, was_head: bool) -> Response {
        loop {
            let r = self.read_one(sent_at, was_head);
            if !(100..200).contains(&r.status) {
                return r;
            }
        }
    }

    pub(crate) fn read_one(&mut self, sent_at: Instant, was_head: bool) -> Response {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("read status line");
        assert!(
            status_line.starts_with("HTTP/1."),
            "bad status line {status_line:?}"
        );
        let status: u16 = status_line[9..12].parse().expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read header");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header colon");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
            arrivals: Vec::new(),
            sent_at,
            complete: true,
        };
        if was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            return response;
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            response.complete = self.read_chunked(&mut response);
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().expect("content-length");
            while response.body.len() < len {
                let missing = len - response.body.len();
                if !self.read_some(&mut response, missing) {
                    response.complete = false;
                    break;
                }
            }
        } else {
            while self.read_some(&mut response, usize::MAX) {}
        }
        response
    }

    /// Reads what is available (up to `max` bytes) into the body; false at EOF/error.
    fn read_some(&mut self, response: &mut Response, max: usize) -> bool {
        let available = match self.reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buf) => buf.len().min(max),
        };
        let buf = self.reader.buffer()[..available].to_vec();
        self.reader.consume(available);
        response.arrivals.push((Instant::now(), available));
        response.body.extend_from_slice(&buf);
        true
    }

    fn read_chunked(&mut self, response: &mut Response) -> bool {
        loop {
            let mut size_line = String::new();
            match self.reader.read_line(&mut size_line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let hex = size_line.trim_end().split(';').next().unwrap_or("");
            let Ok(size) = usize::from_str_radix(hex, 16) else {
                return false;
            };
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut line = String::new();
                    match self.reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return false,
                        Ok(_) if line == "\r\n" => return true,
                        Ok(_) => {}
                    }
                }
            }
            let mut chunk = vec![0; size];
            let arrived = Instant::now();
            if self.reader.read_exact(&mut chunk).is_err() {
                return false;
            }
            response.arrivals.push((arrived, size));
            response.body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            if self.reader.read_exact(&mut crlf).is_err() || &crlf != b"\r\n" {
                return false;
            }
        }
    }

    /// True when the server has closed the connection (reads EOF within `within`).
    pub(crate) fn is_closed(&mut self, within: Duration) -> bool {
        self.stream().tcp().set_read_timeout(Some(within)).unwrap();
        let mut byte = [0; 1];
        let closed = matches!(self.reader.read(&mut byte), Ok(0))
            || matches!(self.reader.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        self.stream()
            .tcp()
            .set_read_timeout(Some(IO_TIMEOUT))
            .unwrap();
        closed
    }
}

/// A POST with a JSON body.
pub(crate) fn post(path: &str, body: &str, extra_headers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// An OpenAI chat request body.
pub(crate) fn chat(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Say hello"}}]}}"#
    )
}

/// Sends one request on a fresh connection.
pub(crate) fn one_shot(addr: SocketAddr, raw: &[u8]) -> Response {
    Client::connect(addr).request(raw)
}

/// Waits until `cond` holds, polling for at most `within`.
pub(crate) fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// A mock backend in its own process, so a test can SIGKILL it: every connection dies at
/// the same instant, as when a real backend crashes (the in-process mock's `stop` closes
/// its connections one after another).
pub(crate) struct MockProcess {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl MockProcess {
    /// Starts `ringway-mock --listen addr args...` and waits until it listens.
    pub(crate) fn spawn(addr: SocketAddr, args: &[&str]) -> MockProcess {
        use std::process::{Command, Stdio};
        let mut child = Command::new(mock_binary())
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ringway-mock");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line)
            .expect("read the mock's first line");
        let Some(bound) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringway-mock said {line:?}");
        };
        let addr = bound.parse().unwrap();
        MockProcess { child, addr }
    }

    /// SIGKILL, and reap it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `ringway-mock` binary beside the `ringway` one; built if this test run did not
/// build it (`cargo test --workspace` does).
fn mock_binary() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_ringway"))
        .parent()
        .unwrap();
    let bin = dir.join("ringway-mock");
    BUILT.call_once(|| {
        if !bin.exists() {
            let mut build = std::process::Command::new(env!("CARGO"));
            build.args(["build", "-p", "ringway-mock", "--bin", "ringway-mock"]);
            if dir.ends_with("release") {
                build.arg("--release");
            }
            assert!(
                build.status().expect("run cargo").success(),
                "cannot build ringway-mock"
            );
        }
    });
    bin
}

/// An error answer of ringway's own: its status and OpenAI-style error code.
pub(crate) fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], code, "{}", r.text());
}

/// A counter from `/internal/metrics`.
pub(crate) fn metric(proxy: &ringway::Server, name: &str) -> u64 {
    let mut page = String::new();
    let read = eventually(Duration::from_secs(3), || {
        let r = one_shot(
            proxy.local_addr(),
            b"GET /internal/metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        page = r.text();
        r.status == 200
    });
    assert!(read, "{page}");
    let line = page
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in the metrics"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A file (a config, an access log) in the temp directory, removed when dropped.
pub(crate) struct TempFile(pub(crate) std::path::PathBuf);

impl TempFile {
    pub(crate) fn new(text: &str) -> TempFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringway-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The headers a request to the mock's echo route (`/mock/echo`) reached it with, names
/// lowercased.
pub(crate) fn echoed_headers(r: &Response) -> Vec<(String, String)> {
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

/// The values of the header `name` (lowercase) among `headers`.
pub(crate) fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Clients sending distinct chat completions (every other one streamed) back to back on
/// keep-alive connections until [`ChatLoad::stop`]: counts what was served whole and
/// what failed (a failed client reconnects, as does one told `Connection: close`).
pub(crate) struct ChatLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<(u64, u64)>>,
}

impl ChatLoad {
    pub(crate) fn start(addr: SocketAddr, clients: usize) -> ChatLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut served, mut failed) = (0, 0);
                    let mut client = Client::connect(addr);
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let body = format!(
                            r#"{{"model":"llama3.2:latest","stream":{},"messages":[{{"role":"user","content":"client {i} turn {n}"}}]}}"#,
                            n % 2 == 0
                        );
                        let r = client.post_json("/v1/chat/completions", &body, "");
                        if r.status == 200 && r.complete {
                            served += 1;
                        } else {
                            failed += 1;
                            eprintln!("client {i}: {} {}", r.status, r.text());
                            client = Client::connect(addr);
                        }
                        if r.header("connection") == Some("close") {
                            client = Client::connect(addr);
                        }
                    }
                    (served, failed)
                })
            })
            .collect();
        ChatLoad { stop, clients }
    }

    /// Stops the clients; the requests served whole, and those that failed.
    pub(crate) fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut served, mut failed) = (0, 0);
        for client in self.clients {
            let (s, f) = client.join().unwrap();
            (served, failed) = (served + s, failed + f);
        }
        eprintln!("served {served}, failed {failed}");
        (served, failed)
    }
}
