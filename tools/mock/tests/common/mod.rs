//! Shared by the integration tests: a tiny blocking HTTP/1.1 client and request helpers.
//! Every server binds 127.0.0.1:0 and is stopped by the test that started it.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use ringway_mock::{MockConfig, MockServer, spawn};
use serde_json::{Value, json};

pub(crate) const CHAT: &str = "/v1/chat/completions";
pub(crate) const Q: &str = "qwen2.5:7b";

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sockets the mock accepts on io_uring are not close-on-exec (monoio's accept op sets no
/// flags), so a child process spawned while a test holds a connection keeps the mock's end
/// open until the child exits, and the test sees the mock's close late. Tests that check
/// when the mock closes hold [`no_children`]; [`spawn_child`] waits for them.
static SPAWNING: RwLock<()> = RwLock::new(());

/// Held by a test that checks when the mock closes its connections.
pub(crate) fn no_children() -> RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(|e| e.into_inner())
}

/// Spawns `cmd` while no test holds [`no_children`] (only the fork needs the lock).
pub(crate) fn spawn_child(cmd: &mut Command) -> Child {
    let _lock = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
    cmd.spawn().unwrap()
}

pub(crate) fn mock(name: &str, tweak: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig::named(name);
    tweak(&mut config);
    spawn("127.0.0.1:0".parse().unwrap(), config).expect("spawn mock")
}

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Chunk payloads with the time each one was complete.
    pub(crate) chunks: Vec<(Instant, Vec<u8>)>,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let mut hs = self.headers.iter();
        hs.find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) struct Client {
    pub(crate) s: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { s, buf: Vec::new() }
    }
    pub(crate) fn send(&mut self, raw: &[u8]) {
        self.s.write_all(raw).unwrap();
    }
    /// Reads more; false at EOF or reset.
    pub(crate) fn more(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.s.read(&mut tmp).unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n > 0
    }
    pub(crate) fn until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                return Some(self.buf.drain(..i + pat.len()).collect());
            }
            if !self.more() {
                return None;
            }
        }
    }
    pub(crate) fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
    /// True if the server closed the connection (EOF or reset) with nothing more to read.
    pub(crate) fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.more()
    }
    /// Parses one response; None if the connection ended first.
    pub(crate) fn response(&mut self) -> Option<Resp> {
        let head = String::from_utf8(self.until(b"\r\n\r\n")?).unwrap();
        let mut lines = head.lines();
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers = lines.filter_map(|l| l.split_once(':'));
        let headers = headers
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
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        hs: &[(&str, &str)],
        body: &str,
    ) -> Option<Resp> {
        self.send(raw(method, path, hs, body).as_bytes());
        self.response()
    }
}

pub(crate) fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: mock\r\n");
    for (n, v) in headers
        .iter()
        .chain(&[("Content-Length", &*body.len().to_string())])
    {
        s += &format!("{n}: {v}\r\n");
    }
    s + "\r\n" + body
}

pub(crate) fn post_h(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: Value) -> Resp {
    let body = body.to_string();
    Client::new(addr)
        .request("POST", path, headers, &body)
        .unwrap()
}

pub(crate) fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    post_h(addr, path, &[], body)
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Resp {
    Client::new(addr).request("GET", path, &[], "").unwrap()
}

/// Data lines of an SSE body, parsed (`[DONE]` becomes a string).
pub(crate) fn sse(r: &Resp) -> Vec<Value> {
    let text = r.text();
    let events = text.split("\n\n").filter_map(|e| e.strip_prefix("data: "));
    events
        .map(|d| serde_json::from_str(d).unwrap_or(json!(d)))
        .collect()
}

pub(crate) fn ndjson(r: &Resp) -> Vec<Value> {
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `f` for up to 2 s.
pub(crate) fn eventually(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(2);
    while !f() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(ms(5));
    }
    true
}

/// Starts the `ringway-mock` binary; returns it and the address from its
/// `listening on <addr>` line (None, with the line, if it did not print one).
pub(crate) fn run_binary(args: &[&str]) -> (std::process::Child, Result<SocketAddr, String>) {
    let mut child = spawn_child(
        Command::new(env!("CARGO_BIN_EXE_ringway-mock"))
            .args(args)
            .stdout(std::process::Stdio::piped()),
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ");
    let addr = addr.and_then(|a| a.parse().ok()).ok_or(line);
    (child, addr)
}
