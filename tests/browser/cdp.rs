//! Just enough of the Chrome DevTools protocol to drive a headless Chromium from a test:
//! launch it on a fresh profile, open the page's WebSocket (a minimal RFC 6455 client:
//! masked text frames out, unmasked frames in), call methods, and keep the events that
//! arrive in between (script exceptions, console and log errors). Blocking, with a read
//! timeout on every socket; the browser is killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Longest a single read from the browser may block.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The Chromium to use: `RINGWAY_CHROMIUM`, else the first of the usual names on `PATH`.
pub(crate) fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGWAY_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
}

/// A headless Chromium on a profile of its own.
pub(crate) struct Browser {
    child: Child,
    profile: PathBuf,
    port: u16,
}

impl Browser {
    pub(crate) fn launch(binary: &Path) -> Browser {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("ringway-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the browser profile");
        let log = std::fs::File::create(profile.join("stderr.log")).expect("browser log");
        let child = Command::new(binary)
            .args([
                "--headless",
                // Root (CI's container) cannot use the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                // Without these it keeps trying to reach Google's hosts, which a closed
                // network refuses.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut browser = Browser {
            child,
            profile,
            port: 0,
        };
        // With port 0, Chromium writes the port it took into the profile.
        let file = browser.profile.join("DevToolsActivePort");
        let started = Instant::now();
        while browser.port == 0 {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                    browser.port = port;
                    break;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("chromium exited at start ({status}): {}", browser.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromium did not open its DevTools port within 30 s: {}",
                browser.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        browser
    }

    /// What the browser wrote to stderr so far (for failure messages).
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.profile.join("stderr.log")).unwrap_or_default()
    }

    /// The first page target (the `about:blank` it started with), attached.
    pub(crate) fn page(&self) -> Page {
        let started = Instant::now();
        loop {
            let list = http_get(self.port, "/json/list");
            let url = list.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    .map(str::to_string)
            });
            if let Some(url) = url {
                return Page {
                    ws: WebSocket::connect(&url),
                    next_id: 0,
                    events: Vec::new(),
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no page target: {list}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET path` on the DevTools HTTP port, as JSON.
fn http_get(port: u16, path: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // It keeps the connection open whatever the request says: read by Content-Length.
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read DevTools answer");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read DevTools answer");
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// One page, driven over its WebSocket.
pub(crate) struct Page {
    ws: WebSocket,
    next_id: u64,
    /// Every event received so far, in order.
    pub(crate) events: Vec<Value>,
}

impl Page {
    /// Calls a method and returns its result; events that arrive first are kept.
    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params });
        self.ws.send(&message.to_string());
        loop {
            let text = self.ws.recv();
            let reply: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if reply["id"] == id {
                if let Some(e) = reply.get("error") {
                    panic!("{method}: {e}");
                }
                return reply["result"].clone();
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// Waits for an event named `method` (one already received counts).
    pub(crate) fn wait_for(&mut self, method: &str) {
        if self.events.iter().any(|e| e["method"] == method) {
            return;
        }
        loop {
            let text = self.ws.recv();
            let event: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            let found = event["method"] == method;
            self.events.push(event);
            if found {
                return;
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value (promises awaited).
    pub(crate) fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Script exceptions, console errors and browser log errors seen so far.
    pub(crate) fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        Some(format!("log: {}", p["entry"]))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// A PNG of the viewport.
    pub(crate) fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }
}

/// A WebSocket client for one connection: text messages only.
struct WebSocket {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl WebSocket {
    fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let stream = TcpStream::connect(host).expect("connect to the page's WebSocket");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut writer = stream.try_clone().unwrap();
        write!(
            writer,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: cmluZ3dheS1icm93c2VyIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).expect("WebSocket handshake");
        assert!(status.contains(" 101 "), "WebSocket handshake: {status}");
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .expect("WebSocket handshake headers");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        WebSocket { reader, writer }
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        // Clients mask every frame (RFC 6455 §5.3); the key need not be secret here.
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x5a, 0x13, 0xc7, 0x2e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame).expect("send to the browser");
    }

    fn send(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes());
    }

    /// The next whole text message; answers pings on the way.
    fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.reader
                .read_exact(&mut head)
                .expect("read from the browser");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b).unwrap();
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b).unwrap();
                len = u64::from_be_bytes(b);
            }
            let mask = if head[1] & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.reader.read_exact(&mut m).unwrap();
                Some(m)
            } else {
                None
            };
            let mut payload = vec![0u8; len as usize];
            self.reader.read_exact(&mut payload).expect("read a frame");
            if let Some(m) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("text frames are UTF-8");
                    }
                }
                0x8 => panic!("the browser closed the DevTools connection"),
                0x9 => self.send_frame(0xA, &payload),
                _ => {}
            }
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + produced]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8hIQ=="), b"hello!!");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
