//! ringway-mock: an in-process or standalone mock LLM backend (OpenAI + Ollama + LM Studio
//! shapes, and Anthropic's Messages API as Ollama, vLLM, llama.cpp and LM Studio serve it)
//! that ringway's integration tests, benchmarks and `ringway demo` talk to. Chats that offer
//! tools (or send `X-Mock-Tool-Call: NAME`) are answered with a tool call.
//!
//! One monoio runtime per thread, each with its own SO_REUSEPORT listener. Behaviour is
//! controlled per server ([`Control`]) and per request (`X-Mock-*` headers, see `Meta` and
//! `Fail` in `conn.rs`).
//! It also reports engine state as the real servers do, for ringway's engine poller:
//! `GET /api/ps` (Ollama: the models it "holds" in memory, [`Control::set_loaded`]; all it
//! serves by default), `"state"` in `GET /api/v0/models` (LM Studio: `loaded` or
//! `not-loaded`, the same set), and `GET /metrics` (Prometheus text with vLLM's
//! `vllm:num_requests_waiting` and llama.cpp's `llamacpp:requests_deferred`, both
//! [`Control::set_queue_depth`]).
//! With [`MockConfig::kv_cache`] set, each instance also simulates a prefix (KV) cache, so
//! time to first token depends on how much of the prompt it has seen before (`kv.rs`).

mod api;
mod conn;
mod kv;
#[cfg(feature = "tls")]
pub mod tls;

pub use kv::KvCacheConfig;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::io::{CancelHandle, Canceller};
use monoio::net::{ListenerOpts, TcpListener};

/// Static configuration of one mock server.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Backend name: `X-Mock-Backend` header on every response, `system_fingerprint` in bodies.
    pub name: String,
    /// Served models (changeable at runtime with [`Control::set_models`]).
    pub models: Vec<String>,
    /// Tokens per completion.
    pub tokens: usize,
    /// Delay before each streamed token after the first.
    pub token_delay: Duration,
    /// Delay before the first token, or before a non-streamed response.
    pub first_token_delay: Duration,
    /// Runtime threads, each with its own SO_REUSEPORT listener.
    pub threads: usize,
    /// Simulate a prefix cache: the delay before the first token becomes
    /// `base + per_token × uncached prompt tokens` (replacing `first_token_delay`; plus the
    /// wait for a prefill slot when `prefill_slots` is set), and
    /// completions report `X-Mock-Prompt-Tokens`, `X-Mock-Cached-Tokens` and
    /// `X-Mock-Prefill-Ms`. `None` (the default): no cache, fixed delays.
    pub kv_cache: Option<KvCacheConfig>,
    /// Like `vllm serve --api-key`: every route but health checks answers 401 unless
    /// the request carries `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Like an API gateway that wants a credential in a header of its own: every route but
    /// health checks answers 401 unless the request carries this header with exactly this
    /// value (Olla's auth test backend, `test/cmd/mockbackend --require-header`).
    pub require_header: Option<(String, String)>,
    /// Serve TLS with this configuration (`tls::server_config`): an `https://`
    /// endpoint, served by the same connection loop. `None` (the default): plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<tls::ServerConfig>>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            name: "mock".to_owned(),
            models: vec!["llama3.2:latest".to_owned(), "qwen2.5:7b".to_owned()],
            tokens: 8,
            token_delay: Duration::ZERO,
            first_token_delay: Duration::ZERO,
            threads: 1,
            kv_cache: None,
            api_key: None,
            require_header: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl MockConfig {
    /// The default configuration with another backend name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
}

/// Live counters, readable from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    connections_accepted: AtomicU64,
    open_connections: AtomicU64,
    requests: AtomicU64,
    health_checks: AtomicU64,
    model_lists: AtomicU64,
    completed_streams: AtomicU64,
    aborted_streams: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    tls_handshakes: AtomicU64,
}

impl Stats {
    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted.load(Relaxed)
    }
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Relaxed)
    }
    /// Requests whose head was parsed, except health checks and model-list reads.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// `GET` requests to a health path (`/`, `/health`, `/api/v1/health`), kept apart so
    /// that a proxy's health checker does not disturb the traffic counts.
    pub fn health_checks(&self) -> u64 {
        self.health_checks.load(Relaxed)
    }
    /// `GET` requests for the model list (`/api/tags`, `/v1/models`, `/api/v0/models`)
    /// or the engine's state (`/api/ps`, `/metrics`), kept apart for the same reason.
    pub fn model_lists(&self) -> u64 {
        self.model_lists.load(Relaxed)
    }
    /// Streamed responses written to the end.
    pub fn completed_streams(&self) -> u64 {
        self.completed_streams.load(Relaxed)
    }
    /// Streamed responses cut because the peer went away.
    pub fn aborted_streams(&self) -> u64 {
        self.aborted_streams.load(Relaxed)
    }
    /// Prompt tokens of all completion requests (counted only with `kv_cache` on).
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens.load(Relaxed)
    }
    /// The part of [`Stats::prompt_tokens`] that was found in the simulated KV cache.
    pub fn cached_tokens(&self) -> u64 {
        self.cached_tokens.load(Relaxed)
    }
    /// TLS handshakes completed (with `MockConfig::tls`): one per connection, so a
    /// proxy that pools its connections makes few.
    pub fn tls_handshakes(&self) -> u64 {
        self.tls_handshakes.load(Relaxed)
    }
}

/// Live behaviour switches, usable from any thread.
#[derive(Debug)]
pub struct Control {
    /// 0 means no override.
    status_override: AtomicU32,
    /// The same for inference requests (POSTs) only; 0 means none.
    inference_status_override: AtomicU32,
    healthy: AtomicBool,
    models: Mutex<Vec<String>>,
    /// The models held in memory; `None`: every served one.
    loaded: Mutex<Option<Vec<String>>>,
    queue_depth: AtomicU32,
    /// `Retry-After` seconds + 1 on 429 and 503 answers; 0 means none.
    retry_after: AtomicU32,
}

impl Control {
    /// Answer every non-`/mock` request with this status and an OpenAI-style error body.
    pub fn set_status_override(&self, status: Option<u16>) {
        self.status_override
            .store(status.map_or(0, u32::from), Relaxed);
    }
    /// Answer inference requests (every POST) with this status, while health checks and
    /// model lists are answered as usual: a backend that looks fine but fails its work.
    pub fn set_inference_status_override(&self, status: Option<u16>) {
        self.inference_status_override
            .store(status.map_or(0, u32::from), Relaxed);
    }
    /// Health paths answer 503 when false; other paths are unaffected.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }
    /// Replace the served model list.
    pub fn set_models(&self, models: Vec<String>) {
        *self.models.lock().unwrap_or_else(|e| e.into_inner()) = models;
    }
    /// The models it says it holds in memory (`/api/ps`, LM Studio's `state`), served or
    /// not; the default is every served model.
    pub fn set_loaded(&self, models: Vec<String>) {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = Some(models);
    }
    /// Back to holding every served model.
    pub fn set_all_loaded(&self) {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    /// The requests it says wait in its queue (`/metrics`); 0 by default. Requests are
    /// not actually held back.
    pub fn set_queue_depth(&self, n: u32) {
        self.queue_depth.store(n, Relaxed);
    }
    /// Send `Retry-After: SECS` with every 429 and 503 answer (`None`: no header).
    pub fn set_retry_after(&self, secs: Option<u32>) {
        self.retry_after
            .store(secs.map_or(0, |s| s.saturating_add(1)), Relaxed);
    }
    pub(crate) fn retry_after(&self) -> Option<u32> {
        self.retry_after.load(Relaxed).checked_sub(1)
    }
    fn queue_depth(&self) -> u32 {
        self.queue_depth.load(Relaxed)
    }
    /// The models held in memory now.
    fn loaded(&self) -> Vec<String> {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match &*loaded {
            Some(models) => models.clone(),
            None => self.with_models(<[String]>::to_vec),
        }
    }
    fn status_override(&self, inference: bool) -> Option<u16> {
        let read = |a: &AtomicU32| u16::try_from(a.load(Relaxed)).ok().filter(|&s| s != 0);
        read(&self.status_override)
            .or_else(|| inference.then(|| read(&self.inference_status_override))?)
    }
    fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }
    /// Runs `f` on the model list without cloning it (this is on every completion's path).
    fn with_models<R>(&self, f: impl FnOnce(&[String]) -> R) -> R {
        f(&self.models.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A one-shot, cross-thread stop flag. Each runtime thread's supervisor future waits on it;
/// monoio's `sync` feature makes waking a task from a foreign thread unpark its runtime.
#[derive(Default)]
struct StopSignal {
    stopped: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl StopSignal {
    fn is_set(&self) -> bool {
        self.stopped.load(SeqCst)
    }
    fn trigger(&self) {
        self.stopped.store(true, SeqCst);
        for w in self
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            w.wake();
        }
    }
    async fn wait(&self) {
        poll_fn(|cx| {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock so a concurrent trigger() cannot slip in between.
            if self.is_set() {
                return Poll::Ready(());
            }
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Everything the connection tasks of all threads share.
struct Shared {
    config: MockConfig,
    stats: Stats,
    control: Control,
    stop: StopSignal,
    /// The simulated prefix cache, when `config.kv_cache` is set.
    kv: Option<kv::KvCache>,
    /// Pre-rendered `X-Mock-Backend: <name>\r\n`.
    backend_header: Vec<u8>,
    /// The name as a JSON string literal (quoted, escaped).
    name_json: String,
}

/// A running mock server. Dropping it stops it.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds synchronously (so the port is known on return), then serves on background threads.
pub fn spawn(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockServer> {
    let threads = config.threads.max(1);
    let shared = Arc::new(Shared {
        backend_header: format!("X-Mock-Backend: {}\r\n", config.name).into_bytes(),
        name_json: serde_json::to_string(&config.name).unwrap_or_else(|_| "\"\"".into()),
        control: Control {
            status_override: AtomicU32::new(0),
            inference_status_override: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            models: Mutex::new(config.models.clone()),
            loaded: Mutex::new(None),
            queue_depth: AtomicU32::new(0),
            retry_after: AtomicU32::new(0),
        },
        kv: config.kv_cache.clone().map(kv::KvCache::new),
        config,
        stats: Stats::default(),
        stop: StopSignal::default(),
    });
    let mut server = MockServer {
        addr,
        shared,
        threads: Vec::new(),
    };
    for i in 0..threads {
        // Thread 0 binds the requested address (maybe port 0); the others bind the port it got.
        let (tx, rx) = mpsc::channel();
        let (sh, bind, reuse_port) = (server.shared.clone(), server.addr, threads > 1);
        let handle = std::thread::Builder::new()
            .name(format!("mock-{i}"))
            .spawn(move || run_thread(bind, reuse_port, sh, tx))?;
        server.threads.push(handle);
        match rx.recv() {
            Ok(Ok(bound)) => server.addr = bound,
            Ok(Err(e)) => return Err(e), // dropping `server` stops the threads already running
            Err(_) => return Err(std::io::Error::other("mock thread died while binding")),
        }
    }
    Ok(server)
}

impl MockServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
    pub fn control(&self) -> &Control {
        &self.shared.control
    }
    /// Hard stop: closes the listener and every open connection (peers see EOF/RST, streams
    /// are cut), then joins the threads. The address can be bound again afterwards.
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        self.shared.stop.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type BindReply = mpsc::Sender<std::io::Result<SocketAddr>>;

fn run_thread(addr: SocketAddr, reuse_port: bool, sh: Arc<Shared>, tx: BindReply) {
    let mut rt = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return drop(tx.send(Err(e))),
    };
    rt.block_on(async move {
        // Without SO_REUSEPORT a single-threaded mock fails loudly on a port already in use.
        let opts = ListenerOpts::new().reuse_port(reuse_port);
        let listener = match TcpListener::bind_with_config(addr, &opts) {
            Ok(l) => l,
            Err(e) => return drop(tx.send(Err(e))),
        };
        let _ = tx.send(listener.local_addr());
        // Every socket op of this thread goes through this canceller's handle, so stop can
        // cancel in-flight io_uring ops (merely dropping them would leave the fds open).
        let canceller = Canceller::new();
        let open = Rc::new(std::cell::Cell::new(0usize));
        let acceptor = monoio::spawn(accept_loop(
            listener,
            sh.clone(),
            canceller.handle(),
            open.clone(),
        ));
        sh.stop.wait().await;
        let _fresh = canceller.cancel();
        acceptor.await;
        // Connection tasks now fail their next op or notice the flag within a sleep slice.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while open.get() > 0 && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        // On io_uring, dropped fds are closed by queued ops: let the driver submit them
        // before the runtime (and its ring) goes away.
        monoio::time::sleep(Duration::from_millis(1)).await;
    });
}

async fn accept_loop(
    listener: TcpListener,
    sh: Arc<Shared>,
    cancel: CancelHandle,
    open: Rc<std::cell::Cell<usize>>,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, _)) if !sh.stop.is_set() => {
                let _ = stream.set_nodelay(true);
                sh.stats.connections_accepted.fetch_add(1, Relaxed);
                sh.stats.open_connections.fetch_add(1, Relaxed);
                open.set(open.get() + 1);
                let (sh, cancel, open) = (sh.clone(), cancel.clone(), open.clone());
                monoio::spawn(async move {
                    conn::serve(stream, &sh, cancel).await;
                    sh.stats.open_connections.fetch_sub(1, Relaxed);
                    open.set(open.get() - 1);
                });
            }
            _ if sh.stop.is_set() => return,
            Ok(_) => {}
            // E.g. EMFILE: back off instead of spinning.
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
