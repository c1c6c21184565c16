//! One HTTP/1.1 server connection: head parsing (httparse), Content-Length bodies,
//! keep-alive and pipelining, and writing the [`Reply`] chosen by `api::handle`.
//!
//! Buffers are per connection and reused across requests, so a keep-alive request costs
//! no allocation on the common paths.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::Shared;
use crate::api::{self, Framing, Reply, StreamSpec};
use crate::kv::Prefill;

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 << 20;
const MAX_HEADERS: usize = 128;
/// Long delays sleep in slices so a stop() is noticed promptly (timers are not io ops, so
/// the canceller cannot interrupt them).
const SLEEP_SLICE: Duration = Duration::from_millis(20);
/// How long after the answer `X-Mock-Fail: stale-response|idle-408|head-then-body` write
/// their unsolicited bytes: long enough for a proxy to have pooled the connection.
const UNSOLICITED_DELAY: Duration = Duration::from_millis(100);

/// Bytes larger than this in `X-Mock-Token-Bytes` are clamped to it.
const MAX_TOKEN_BYTES: usize = 1 << 20;

/// How the test wants this request to fail (`X-Mock-Fail: <value>`; unknown values are
/// ignored). The modes that replace the answer (all but `mid-stream` and the three that
/// write after it) do not apply to `/mock/*`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Fail {
    #[default]
    None,
    /// `close`: close without a response byte.
    Close,
    /// `hang`: never answer; the socket stays open until the peer or stop() ends it.
    Hang,
    /// `mid-stream`: half the tokens (half the body if not streamed), then close.
    MidStream,
    /// `bad-head`: `HTTP/1.1 garbage`, then close.
    BadHead,
    /// `no-reason`: a valid `HTTP/1.1 200` without reason phrase, then close.
    NoReason,
    /// `stale-response`: the normal answer, then 100 ms later a second, unsolicited and
    /// complete 200 (`X-Mock-Stale: yes`, body `STALE`) on the idle connection, which is
    /// served on as usual.
    StaleResponse,
    /// `idle-408`: the normal answer, then 100 ms later `408 Request Timeout` with
    /// `Connection: close`, and close.
    Idle408,
    /// `head-then-body`: meant for HEAD: the normal answer's head (its Content-Length
    /// included) without its body, whatever the method; then 100 ms later the 5 bytes
    /// `hello`, and the connection is served on.
    HeadThenBody,
    /// `early-401`: once the head is parsed, without reading the body: a 401 (JSON
    /// body), then the connection stays open, never read, for 30 s, and closes.
    Early401,
    /// `early-413`: once the head is parsed, without reading the body: a 413 with
    /// `Connection: close` (JSON body), and close at once.
    Early413,
    /// `bad-chunk-hex|lf|size|overrun`: a 200 chunked head and a malformed first chunk
    /// (`zz` as size; bare LFs; a 17-digit size; 5 bytes in a 3-byte chunk) in one write,
    /// then the connection stays open, never read, for 5 s, and closes.
    BadChunkHex,
    BadChunkLf,
    BadChunkSize,
    BadChunkOverrun,
}

/// What the connection layer extracts from a head; `X-Mock-*` overrides included.
#[derive(Default, Debug)]
pub(crate) struct Meta {
    pub(crate) http10: bool,
    pub(crate) keep_alive: bool,
    content_length: usize,
    expect_continue: bool,
    /// `X-Mock-Tokens`: tokens in this completion.
    pub(crate) tokens: Option<usize>,
    /// `X-Mock-Token-Delay-Ms`: delay before each streamed token after the first.
    pub(crate) token_delay: Option<Duration>,
    /// `X-Mock-First-Token-Delay-Ms`: delay before the first token or the response.
    pub(crate) first_delay: Option<Duration>,
    /// `X-Mock-Status`: answer with this status and an error body.
    pub(crate) status: Option<u16>,
    /// `X-Mock-Fail`.
    pub(crate) fail: Fail,
    /// `X-Mock-Token-Bytes` (at most 1 MiB): each streamed token event is padded with a
    /// `"mock_padding"` JSON field to at least this many bytes (chunk framing excluded).
    pub(crate) token_bytes: usize,
    /// `X-Mock-Tool-Call: NAME`: answer a chat (OpenAI or Anthropic) with a call to this
    /// tool, whether or not the request offers tools (see `api::tool_call`).
    pub(crate) tool_call: Option<String>,
}

fn num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

impl Meta {
    fn parse(req: &httparse::Request<'_, '_>) -> Result<Self, (u16, &'static str)> {
        let http10 = req.version == Some(0);
        let mut m = Meta {
            http10,
            ..Meta::default()
        };
        let (mut close, mut keep, mut length) = (false, false, None);
        for h in req.headers.iter() {
            let (name, v) = (h.name, h.value);
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("content-length") {
                let n: usize = num(v).ok_or((400, "invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err((400, "conflicting Content-Length headers"));
                }
                length = Some(n);
            } else if is("transfer-encoding") {
                return Err((
                    411,
                    "chunked request bodies are not supported, send Content-Length",
                ));
            } else if is("connection") {
                for token in v.split(|&b| b == b',').map(|t| t.trim_ascii()) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if is("expect") {
                m.expect_continue = v.eq_ignore_ascii_case(b"100-continue");
            } else if is("x-mock-tokens") {
                m.tokens = num(v);
            } else if is("x-mock-token-delay-ms") {
                m.token_delay = num(v).map(Duration::from_millis);
            } else if is("x-mock-first-token-delay-ms") {
                m.first_delay = num(v).map(Duration::from_millis);
            } else if is("x-mock-status") {
                m.status = num(v).filter(|s| (100..1000).contains(s));
            } else if is("x-mock-fail") {
                m.fail = match v.trim_ascii() {
                    b"close" => Fail::Close,
                    b"hang" => Fail::Hang,
                    b"mid-stream" => Fail::MidStream,
                    b"bad-head" => Fail::BadHead,
                    b"no-reason" => Fail::NoReason,
                    b"stale-response" => Fail::StaleResponse,
                    b"idle-408" => Fail::Idle408,
                    b"head-then-body" => Fail::HeadThenBody,
                    b"early-401" => Fail::Early401,
                    b"early-413" => Fail::Early413,
                    b"bad-chunk-hex" => Fail::BadChunkHex,
                    b"bad-chunk-lf" => Fail::BadChunkLf,
                    b"bad-chunk-size" => Fail::BadChunkSize,
                    b"bad-chunk-overrun" => Fail::BadChunkOverrun,
                    _ => Fail::None,
                };
            } else if is("x-mock-tool-call") {
                let name = String::from_utf8_lossy(v.trim_ascii());
                m.tool_call = Some(name.into_owned()).filter(|n| !n.is_empty());
            } else if is("x-mock-token-bytes") {
                m.token_bytes = num(v).map_or(0, |n: usize| n.min(MAX_TOKEN_BYTES));
            }
        }
        m.content_length = length.unwrap_or(0);
        if m.content_length > MAX_BODY {
            return Err((413, "request body larger than 64 MiB"));
        }
        m.keep_alive = !close && (!http10 || keep);
        Ok(m)
    }
}

/// What to do next with the bytes buffered so far.
// A short-lived return value, moved once per request: boxing the big variant would only
// add an allocation to every request.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Read more; `need` is the full request size once the head is known (0 otherwise).
    Read { need: usize, expect_continue: bool },
    /// Protocol error: answer and close.
    Error(u16, &'static str),
    Reply {
        reply: Reply,
        consumed: usize,
        meta: Meta,
    },
}

/// Parses the request at the front of `data` and, when it is complete, dispatches it.
/// Re-parsing the head after every read of a slow body is cheap and keeps borrows simple.
fn step(sh: &Shared, data: &[u8], scratch: &mut Vec<u8>) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if data.len() <= MAX_HEAD => {
            return Step::Read {
                need: 0,
                expect_continue: false,
            };
        }
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Step::Error(431, "request head larger than 64 KiB");
        }
        Err(_) => return Step::Error(400, "malformed request head"),
    };
    let meta = match Meta::parse(&req) {
        Ok(m) => m,
        Err((status, msg)) => {
            sh.stats
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Step::Error(status, msg);
        }
    };
    // Decided on the head alone: the body is never waited for, nor read.
    if let Some(reply) = api::early(&req, &meta) {
        count(sh, &req);
        return Step::Reply {
            reply,
            consumed: head_len,
            meta,
        };
    }
    let total = head_len + meta.content_length;
    if data.len() < total {
        return Step::Read {
            need: total,
            expect_continue: meta.expect_continue,
        };
    }
    count(sh, &req);
    let reply = api::handle(sh, &req, &meta, &data[head_len..total], scratch);
    Step::Reply {
        reply,
        consumed: total,
        meta,
    }
}

/// Counts a dispatched request: health checks and model lists apart from the traffic.
fn count(sh: &Shared, req: &httparse::Request<'_, '_>) {
    let counter = if api::is_health_check(req) {
        &sh.stats.health_checks
    } else if is_model_list(req) {
        &sh.stats.model_lists
    } else {
        &sh.stats.requests
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How much of a Content-Length body [`Conn::full`] sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Whole,
    /// Half, then close (`X-Mock-Fail: mid-stream` on a non-streamed route).
    Half,
    /// None, as for a HEAD (`X-Mock-Fail: head-then-body`).
    Left,
}

struct Conn<'a> {
    sh: &'a Shared,
    stream: TcpStream,
    cancel: CancelHandle,
    /// The TLS session over `stream`, when the mock serves TLS: what is read and
    /// written then goes through it.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Session>,
    /// Received bytes; the current request starts at `start` (earlier ones are answered).
    buf: Vec<u8>,
    start: usize,
    /// Bytes to write next.
    out: Vec<u8>,
    /// Response body / chunk payload, rendered before its framing is known.
    scratch: Vec<u8>,
    /// Requests answered on the connection so far, and the last one's head and length
    /// (for the log of a request that cannot be read after it).
    answered: u64,
    last: String,
}

pub(crate) async fn serve(stream: TcpStream, sh: &Shared, cancel: CancelHandle) {
    #[cfg(feature = "tls")]
    let mut stream = stream;
    #[cfg(feature = "tls")]
    let tls = match &sh.config.tls {
        Some(config) => {
            match crate::tls::Session::accept(&mut stream, config.clone(), &cancel).await {
                Ok(session) => {
                    sh.stats
                        .tls_handshakes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Some(session)
                }
                // A failed handshake: nothing to serve.
                Err(_) => return,
            }
        }
        None => None,
    };
    let mut c = Conn {
        sh,
        stream,
        cancel,
        #[cfg(feature = "tls")]
        tls,
        buf: Vec::with_capacity(8 * 1024),
        start: 0,
        out: Vec::with_capacity(4 * 1024),
        answered: 0,
        last: String::new(),
        scratch: Vec::with_capacity(4 * 1024),
    };
    // Any error means the connection is done; dropping the stream closes it.
    let _ = c.run().await;
}

impl Conn<'_> {
    async fn run(&mut self) -> io::Result<()> {
        let mut continue_sent = false;
        loop {
            match step(self.sh, &self.buf[self.start..], &mut self.scratch) {
                Step::Read {
                    need,
                    expect_continue,
                } => {
                    if expect_continue && !continue_sent {
                        continue_sent = true;
                        self.out.clear();
                        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.send().await?;
                    }
                    if self.fill(need).await? == 0 {
                        return Ok(()); // peer closed (mid-request or between requests)
                    }
                }
                Step::Error(status, msg) => {
                    // What it could not read, for whoever sent it (its log is the only
                    // witness of the bytes a proxy wrote): the first 300, escaped.
                    let at = &self.buf[self.start..];
                    let shown = at[..at.len().min(300)].escape_ascii();
                    eprintln!(
                        "{}: {status} {msg}: {} byte(s) after {} answered on the connection: {shown}; the last: {}",
                        self.sh.config.name,
                        at.len(),
                        self.answered,
                        self.last,
                    );
                    self.scratch.clear();
                    let e = api::error_json(msg, "invalid_request_error", "bad_request");
                    let _ = serde_json::to_writer(&mut self.scratch, &e);
                    self.full(status, api::JSON, false, Body::Whole, None)
                        .await?;
                    return Ok(());
                }
                Step::Reply {
                    reply,
                    consumed,
                    meta,
                } => {
                    continue_sent = false;
                    self.answered += 1;
                    let at = &self.buf[self.start..];
                    let head = at.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                    self.last = format!(
                        "{} ({consumed} of {} bytes taken)",
                        at[..head.min(600)].escape_ascii(),
                        at.len()
                    );
                    if !self.respond(reply, &meta).await? || !self.after_answer(meta.fail).await? {
                        return Ok(());
                    }
                    self.start += consumed;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                        // Don't pin a huge body's buffers for the rest of a keep-alive connection.
                        if self.buf.capacity() + self.scratch.capacity() > 1 << 20 {
                            (self.buf, self.scratch) = (Vec::with_capacity(8192), Vec::new());
                        }
                    }
                }
            }
        }
    }

    /// Reads more bytes (at least room for `need` in total). Returns 0 at EOF.
    async fn fill(&mut self, need: usize) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls
                .read(&mut self.stream, &mut self.buf, &self.cancel)
                .await;
        }
        let len = self.buf.len();
        let want = need.max(len + 4096);
        if self.buf.capacity() < want {
            self.buf.reserve(want - len);
        }
        let buf = std::mem::take(&mut self.buf).slice_mut(len..);
        let (res, buf) = self.stream.cancelable_read(buf, self.cancel.clone()).await;
        self.buf = buf.into_inner();
        res
    }

    async fn send(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls
                .write_all(&mut self.stream, &self.out, &self.cancel)
                .await;
        }
        let out = std::mem::take(&mut self.out);
        let (res, out) = self.stream.write_all(out, self.cancel.clone()).await;
        self.out = out;
        res.map(drop)
    }

    /// Writes the reply; returns whether the connection stays open.
    async fn respond(&mut self, reply: Reply, meta: &Meta) -> io::Result<bool> {
        match reply {
            Reply::Full {
                status,
                ctype,
                delay,
                kv,
            } => {
                if !pause(self.sh, delay).await {
                    return Ok(false);
                }
                let body = match meta.fail {
                    Fail::MidStream => Body::Half,
                    Fail::HeadThenBody => Body::Left,
                    _ => Body::Whole,
                };
                self.full(status, ctype, meta.keep_alive, body, kv.as_ref())
                    .await
            }
            Reply::Stream(spec) => {
                let res = self.stream_reply(&spec, meta).await;
                if res.is_err() && !self.sh.stop.is_set() {
                    self.sh
                        .stats
                        .aborted_streams
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                res
            }
            Reply::Close => Ok(false),
            Reply::Hang => {
                // Discard whatever arrives until the peer closes or stop() cancels the read.
                loop {
                    self.buf.clear();
                    self.start = 0;
                    if self.fill(0).await? == 0 {
                        return Ok(false);
                    }
                }
            }
            Reply::Raw(bytes) => {
                self.out.clear();
                self.out.extend_from_slice(bytes);
                self.send().await.map(|()| false)
            }
            Reply::RawHold(bytes, hold) => {
                self.out.clear();
                self.out.extend_from_slice(bytes);
                self.send().await?;
                // Never read: what the peer still sends stays in the socket buffers.
                pause(self.sh, hold).await;
                Ok(false)
            }
        }
    }

    /// What `X-Mock-Fail` writes on the idle connection after the answer (nothing for
    /// most modes); returns whether the connection stays open. Only while it is open:
    /// a `Connection: close` answer has closed it already.
    async fn after_answer(&mut self, fail: Fail) -> io::Result<bool> {
        let Some((bytes, keep)) = api::unsolicited(fail) else {
            return Ok(true);
        };
        if !pause(self.sh, UNSOLICITED_DELAY).await {
            return Ok(false);
        }
        self.out.clear();
        self.out.extend_from_slice(bytes);
        self.send().await.map(|()| keep)
    }

    /// A Content-Length response (body in `scratch`) in a single write; `body` says how
    /// much of the body goes with it.
    async fn full(
        &mut self,
        status: u16,
        ctype: &str,
        keep: bool,
        body: Body,
        kv: Option<&Prefill>,
    ) -> io::Result<bool> {
        let keep = keep && body != Body::Half;
        self.out.clear();
        let framing = Framing::Length(self.scratch.len());
        api::head(&mut self.out, self.sh, status, ctype, framing, keep, kv);
        let body_len = match body {
            Body::Whole => self.scratch.len(),
            Body::Half => self.scratch.len() / 2,
            Body::Left => 0,
        };
        self.out.extend_from_slice(&self.scratch[..body_len]);
        self.send().await.map(|()| keep)
    }

    /// Head at once, then one write per token (never batched: callers time each chunk).
    /// HTTP/1.0 peers get the raw body, delimited by closing the connection.
    async fn stream_reply(&mut self, spec: &StreamSpec, meta: &Meta) -> io::Result<bool> {
        let chunked = !meta.http10;
        let mid = meta.fail == Fail::MidStream;
        let keep = meta.keep_alive && chunked && !mid;
        self.out.clear();
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
        let kv = spec.kv.as_ref();
        api::head(&mut self.out, self.sh, 200, spec.ctype, framing, keep, kv);
        self.send().await?;
        let sent = if mid { spec.tokens / 2 } else { spec.tokens };
        for i in 0..sent {
            let delay = if i == 0 {
                spec.first_delay
            } else {
                spec.token_delay
            };
            if !self.pause_watching(delay).await? {
                return Ok(false);
            }
            self.scratch.clear();
            spec.token(i, &mut self.scratch);
            self.frame(chunked, false);
            self.send().await?;
        }
        if mid {
            return Ok(false);
        }
        self.scratch.clear();
        spec.finish(&mut self.scratch);
        self.frame(chunked, true);
        self.send().await?;
        self.sh
            .stats
            .completed_streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(keep)
    }

    /// Like [`pause`], while watching the peer: a hang-up mid-stream ends the stream at
    /// once with an error (counted in `aborted_streams`), as vLLM and Ollama abort a
    /// generation whose client disconnected.
    async fn pause_watching(&mut self, d: Duration) -> io::Result<bool> {
        let end = Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(!self.sh.stop.is_set());
            }
            monoio::select! {
                go_on = pause(self.sh, left) => return Ok(go_on),
                ready = self.stream.readable(false) => ready?,
            }
            // Readable: bytes (kept for later) or the peer's hang-up.
            if self.fill(0).await? == 0 {
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
        }
    }

    /// Moves `scratch` into `out` as one chunk (plus the terminating chunk if `last`).
    fn frame(&mut self, chunked: bool, last: bool) {
        self.out.clear();
        if chunked {
            let _ = write!(self.out, "{:x}\r\n", self.scratch.len());
        }
        self.out.extend_from_slice(&self.scratch);
        if chunked {
            self.out
                .extend_from_slice(if last { b"\r\n0\r\n\r\n" } else { b"\r\n" });
        }
    }
}

/// Sleeps `d` unless the server stops first; returns false if it stopped.
async fn pause(sh: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if sh.stop.is_set() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        monoio::time::sleep((end - now).min(SLEEP_SLICE)).await;
    }
}

/// A proxy reading the model list (`GET /api/tags`, `/v1/models`, `/api/v0/models`):
/// counted apart from the traffic, like health checks.
fn is_model_list(req: &httparse::Request<'_, '_>) -> bool {
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    let list_or_state = matches!(
        path,
        "/api/tags" | "/v1/models" | "/api/v0/models" | "/api/ps" | "/metrics"
    );
    req.method == Some("GET") && list_or_state
}
