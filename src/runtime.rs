//! Shards and their lifecycle: the listeners (bound on the main thread, one SO_REUSEPORT
//! socket per shard, after checking the port is really free), one OS thread per shard
//! with its own monoio runtime (io_uring, or epoll as the fallback), the accept loop,
//! per-connection panic isolation, and the supervisor that turns a dead shard into an
//! error instead of a process limping on with fewer cores.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::io::Canceller;
use monoio::net::TcpListener;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::{Config, DriverChoice};
use crate::log::{AccessLog, error, info, warning};
use crate::metrics::{Metrics, ShardCounters};
use crate::proxy;
use crate::upstream::Upstreams;
use crate::upstream::health::Breaker;
use crate::upstream::models::Catalog;
use crate::upstream::pool::Pool;

/// io_uring submission queue size per shard.
const URING_ENTRIES: u32 = 4096;
/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

/// Everything one shard owns. Built inside the shard thread; never crosses threads.
pub(crate) struct Shard {
    pub(crate) id: usize,
    /// "io_uring" or "epoll".
    pub(crate) driver: &'static str,
    pub(crate) config: Arc<Config>,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) pool: Pool,
    /// All shards' counters; this shard writes only its own block.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// The model catalogue this shard routes by, and where new ones arrive.
    catalog: RefCell<Arc<Catalog>>,
    catalog_updates: mpsc::Receiver<Arc<Catalog>>,
    /// How request failures open an endpoint's circuit breaker.
    pub(crate) breaker: Breaker,
    /// Where the balancer starts scanning: just after this shard's previous pick.
    pub(crate) next_pick: Cell<usize>,
    pub(crate) next_request: Cell<u64>,
    /// Distinguishes this process's generated request ids from another's.
    pub(crate) process_tag: u32,
    stopping: Cell<bool>,
    /// Client connections open on this shard.
    connections: Cell<usize>,
    /// Cancels reads of connections idle between requests, when draining.
    idle: RefCell<Canceller>,
}

/// A running ringway: its shards and their listeners.
pub struct Server {
    local_addr: SocketAddr,
    drivers: Vec<&'static str>,
    stop: Arc<StopSignal>,
    supervisor: Supervisor,
}

#[derive(Debug)]
pub enum StartError {
    /// The address is taken (typically by another ringway).
    AddrInUse(SocketAddr),
    Bind(SocketAddr, io::Error),
    /// A shard could not start (no runtime, listener registration failed).
    Shard(usize, String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AddrInUse(addr) => write!(
                f,
                "cannot listen on {addr}: the address is already in use (is another ringway running?)"
            ),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Shard(id, why) => write!(f, "shard {id} failed to start: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A shard or control thread that ended without being asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadDied {
    pub thread: String,
    pub panicked: bool,
}

impl fmt::Display for ThreadDied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.panicked { "panicked" } else { "exited" };
        write!(f, "thread {} {how} unexpectedly", self.thread)
    }
}

impl std::error::Error for ThreadDied {}

/// Binds the listeners and starts the shards; returns once every shard accepts.
pub fn start(config: Config) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let shards = config.shard_count();
    let listeners = bind_listeners(config.server.listen, shards)?;
    let local_addr = listeners[0]
        .local_addr()
        .map_err(|e| StartError::Bind(config.server.listen, e))?;
    let upstreams = Arc::new(Upstreams::new(&config.endpoints));
    let metrics = Arc::new(Metrics::new(shards, config.endpoints.len()));
    let access_log = match config.access_log {
        Some(format) => Some(Arc::new(
            AccessLog::start(format, config.access_log_path.as_deref())
                .map_err(|e| StartError::Shard(0, format!("cannot open the access log: {e}")))?,
        )),
        None => None,
    };
    let stop = Arc::new(StopSignal::default());
    let cores = if config.server.pin_cores {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cores.is_empty() {
            warning!("server.pin_cores: cannot read the allowed CPUs; shards are not pinned");
        }
        cores
    } else {
        Vec::new()
    };
    let process_tag = process_tag();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut supervisor = Supervisor::new();
    let mut catalog_senders = Vec::with_capacity(shards);
    for (id, listener) in listeners.into_iter().enumerate() {
        let (catalog_tx, catalog_updates) = mpsc::channel();
        catalog_senders.push(catalog_tx);
        let start = ShardStart {
            id,
            config: config.clone(),
            upstreams: upstreams.clone(),
            metrics: metrics.clone(),
            access_log: access_log.clone(),
            catalog_updates,
            listener,
            stop: stop.clone(),
            ready: ready_tx.clone(),
            process_tag,
        };
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        supervisor.spawn(format!("ringway-shard-{id}"), move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    warning!("shard {id}: could not pin to CPU {}", core.id);
                }
            }
            run_shard(start);
        });
    }
    drop(ready_tx);
    let mut drivers = vec![""; shards];
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok((id, driver))) => drivers[id] = driver,
            Ok(Err((id, why))) => {
                stop.trigger();
                supervisor.join();
                return Err(StartError::Shard(id, why));
            }
            Err(_) => {
                stop.trigger();
                supervisor.join();
                return Err(StartError::Shard(
                    0,
                    "a shard thread ended during start-up".into(),
                ));
            }
        }
    }
    let control = (config.clone(), upstreams.clone(), stop.clone());
    supervisor.spawn("ringway-control".into(), move || {
        run_control(control.0, control.1, control.2, catalog_senders)
    });
    info!(
        "ringway {} listening on {local_addr} with {shards} shard(s) ({}), balancer {}, {} endpoint(s)",
        env!("CARGO_PKG_VERSION"),
        summarize(&drivers),
        config.proxy.balancer.name(),
        config.endpoints.len()
    );
    Ok(Server {
        local_addr,
        drivers,
        stop,
        supervisor,
    })
}

impl Shard {
    /// Whether the shard is draining: connections close after their current request.
    pub(crate) fn is_draining(&self) -> bool {
        self.stopping.get()
    }

    /// A handle that ends the wait of a connection idle between requests when draining.
    pub(crate) fn idle_handle(&self) -> monoio::io::CancelHandle {
        self.idle.borrow().handle()
    }

    /// The latest model catalogue. Never hold it across an `.await`.
    pub(crate) fn catalog(&self) -> std::cell::Ref<'_, Arc<Catalog>> {
        if let Ok(mut latest) = self.catalog_updates.try_recv() {
            while let Ok(newer) = self.catalog_updates.try_recv() {
                latest = newer;
            }
            *self.catalog.borrow_mut() = latest;
        }
        self.catalog.borrow()
    }

    /// This shard's own counters.
    pub(crate) fn counters(&self) -> &ShardCounters {
        self.metrics.shard(self.id)
    }
}

impl Server {
    /// The address clients connect to (with the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The event-loop driver each shard runs on: "io_uring" or "epoll".
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// Stops accepting, closes the listeners and waits for the shard threads to end.
    pub fn shutdown(mut self) {
        self.stop.trigger();
        self.supervisor.join();
    }

    /// A handle that stops the server from any thread (e.g. a signal handler): shards
    /// stop accepting and drain, then `wait` returns.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Blocks until the server is stopped; an `Err` if a shard died first.
    pub fn wait(mut self) -> Result<(), ThreadDied> {
        let result = self.supervisor.wait(&self.stop);
        self.stop.trigger();
        self.supervisor.join();
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.trigger();
        self.supervisor.join();
    }
}

fn summarize(drivers: &[&str]) -> String {
    let mut kinds: Vec<&str> = drivers.to_vec();
    kinds.dedup();
    kinds.join("+")
}

fn process_tag() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) as u32
}

/// One listening socket per shard, all with SO_REUSEPORT on the same address.
fn bind_listeners(
    addr: SocketAddr,
    shards: usize,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() != 0 {
        // SO_REUSEPORT would let us silently share a port another ringway (same user)
        // already listens on. A plain bind first fails if anything holds the port.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(if e.kind() == io::ErrorKind::AddrInUse {
                StartError::AddrInUse(addr)
            } else {
                StartError::Bind(addr, e)
            });
        }
    }
    let mut bound = addr;
    let mut listeners = Vec::with_capacity(shards);
    for _ in 0..shards {
        let socket = (|| {
            let socket = Socket::new(
                Domain::for_address(bound),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&bound.into())?;
            socket.listen(BACKLOG)?;
            Ok::<_, io::Error>(std::net::TcpListener::from(socket))
        })()
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => StartError::AddrInUse(bound),
            _ => StartError::Bind(bound, e),
        })?;
        // With port 0 the first socket picks the port; the others join it.
        bound = socket.local_addr().map_err(|e| StartError::Bind(addr, e))?;
        listeners.push(socket);
    }
    Ok(listeners)
}

// ---- one shard ----

type Ready = Result<(usize, &'static str), (usize, String)>;

struct ShardStart {
    id: usize,
    config: Arc<Config>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    catalog_updates: mpsc::Receiver<Arc<Catalog>>,
    listener: std::net::TcpListener,
    stop: Arc<StopSignal>,
    ready: mpsc::Sender<Ready>,
    process_tag: u32,
}

/// Builds a runtime on the configured driver (io_uring, falling back to epoll when
/// allowed) and runs the future `make` gives for it. `Err` when no runtime can be built.
fn block_on_driver<F: Future>(
    choice: DriverChoice,
    thread: &str,
    make: impl FnOnce(&'static str) -> F,
) -> Result<F::Output, String> {
    let try_uring = match choice {
        DriverChoice::Epoll => false,
        DriverChoice::IoUring => true,
        // Also honours MONOIO_FORCE_LEGACY_DRIVER=1.
        DriverChoice::Auto => monoio::utils::detect_uring(),
    };
    if try_uring {
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => return Ok(rt.block_on(make("io_uring"))),
            Err(e) if choice == DriverChoice::Auto => {
                // Typically RLIMIT_MEMLOCK too low for the rings.
                warning!("{thread}: cannot build an io_uring runtime ({e}); using epoll");
            }
            Err(e) => return Err(format!("io_uring runtime: {e}")),
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => Ok(rt.block_on(make("epoll"))),
        Err(e) => Err(format!("epoll runtime: {e}")),
    }
}

fn run_shard(start: ShardStart) {
    let (id, ready) = (start.id, start.ready.clone());
    let choice = start.config.server.driver;
    if let Err(why) = block_on_driver(choice, &format!("shard {id}"), |driver| {
        shard_main(start, driver)
    }) {
        let _ = ready.send(Err((id, why)));
    }
}

/// The control thread: active health checks (one checker for all shards).
fn run_control(
    config: Arc<Config>,
    upstreams: Arc<Upstreams>,
    stop: Arc<StopSignal>,
    shards: Vec<mpsc::Sender<Arc<Catalog>>>,
) {
    let choice = config.server.driver;
    let checks = |_driver| crate::upstream::health::run_checks(upstreams, config, stop, shards);
    if let Err(why) = block_on_driver(choice, "control thread", checks) {
        error!("control thread: {why}; health checks are not running");
    }
}

async fn shard_main(start: ShardStart, driver: &'static str) {
    let id = start.id;
    let listener = match TcpListener::from_std(start.listener) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = start.ready.send(Err((id, format!("listener: {e}"))));
            return;
        }
    };
    let proxy = &start.config.proxy;
    let shard = Rc::new(Shard {
        id,
        driver,
        pool: Pool::new(
            start.upstreams.endpoints.len(),
            proxy.pool_idle_timeout,
            proxy.pool_max_idle,
        ),
        breaker: start.config.health.breaker(),
        metrics: start.metrics,
        access_log: start.access_log,
        catalog: RefCell::new(Arc::new(Catalog::new(
            vec![None; start.upstreams.endpoints.len()],
            vec![0; start.upstreams.endpoints.len()],
        ))),
        catalog_updates: start.catalog_updates,
        config: start.config.clone(),
        upstreams: start.upstreams,
        next_pick: Cell::new(id),
        next_request: Cell::new(0),
        process_tag: start.process_tag,
        stopping: Cell::new(false),
        connections: Cell::new(0),
        idle: RefCell::new(Canceller::new()),
    });
    let _ = start.ready.send(Ok((id, driver)));

    monoio::spawn(evict_idle_connections(shard.clone()));
    let canceller = Canceller::new();
    let accepting = monoio::spawn(accept_loop(listener, shard.clone(), canceller.handle()));
    start.stop.wait().await;
    // Drain: stop accepting, close connections idle between requests, let requests in
    // flight (streams included) finish within server.drain_timeout_ms.
    shard.stopping.set(true);
    canceller.cancel();
    accepting.await; // the listener is dropped when the loop ends
    let idle = shard.idle.replace(Canceller::new());
    idle.cancel();
    let deadline = std::time::Instant::now() + start.config.server.drain_timeout;
    while shard.connections.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if shard.connections.get() > 0 {
        warning!(
            "shard {id}: {} connection(s) still busy after the drain timeout; closing them",
            shard.connections.get()
        );
    }
    // On io_uring, closing a socket is itself a queued operation: let the driver submit
    // it before the runtime goes away, or the port would stay bound.
    monoio::time::sleep(Duration::from_millis(1)).await;
}

async fn accept_loop(listener: TcpListener, shard: Rc<Shard>, cancel: monoio::io::CancelHandle) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                let shard = shard.clone();
                if shard.connections.get() >= shard.config.server.max_connections {
                    shard.counters().refused_connections.bump();
                    monoio::spawn(proxy::refuse_connection(stream));
                    continue;
                }
                shard.connections.set(shard.connections.get() + 1);
                monoio::spawn(async move {
                    let served =
                        CatchUnwind(Box::pin(proxy::serve_connection(&shard, stream, peer)));
                    let result = served.await;
                    shard.connections.set(shard.connections.get() - 1);
                    if let Err(panic) = result {
                        error!(
                            "shard {}: panic while serving {peer}: {}; that connection was closed, the shard carries on",
                            shard.id,
                            panic_message(&*panic)
                        );
                    }
                });
            }
            Err(_) if shard.stopping.get() => return,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                warning!("shard {}: accept failed: {e}", shard.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn evict_idle_connections(shard: Rc<Shard>) {
    let every = (shard.pool.idle_timeout() / 2).max(Duration::from_millis(100));
    while !shard.stopping.get() {
        monoio::time::sleep(every).await;
        shard.pool.evict_expired();
    }
}

// ---- panic isolation ----

/// Runs a future and turns a panic inside it into an `Err`, so one connection's bug
/// cannot take down the shard and every other connection on it.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic)"
    }
}

// ---- cross-thread stop ----

/// Stops a [`Server`] from any thread.
#[derive(Clone)]
pub struct Stopper(Arc<StopSignal>);

impl Stopper {
    pub fn stop(&self) {
        self.0.trigger();
    }
}

/// Tells every shard to stop. The only lock is taken when a shard starts waiting and
/// when the signal fires, never on the request path.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl StopSignal {
    pub(crate) fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_triggered() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            drop(wakers);
            if self.is_triggered() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

// ---- supervision ----

/// Owns the shard threads and learns when any of them ends, however it ends.
struct Supervisor {
    threads: Vec<JoinHandle<()>>,
    exits_tx: mpsc::Sender<ThreadDied>,
    exits: mpsc::Receiver<ThreadDied>,
}

/// Reports its shard's end when dropped, which also happens while a panic unwinds.
struct ExitNotice {
    thread: String,
    tx: mpsc::Sender<ThreadDied>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.tx.send(ThreadDied {
            thread: std::mem::take(&mut self.thread),
            panicked: std::thread::panicking(),
        });
    }
}

impl Supervisor {
    fn new() -> Supervisor {
        let (exits_tx, exits) = mpsc::channel();
        Supervisor {
            threads: Vec::new(),
            exits_tx,
            exits,
        }
    }

    fn spawn(&mut self, name: String, body: impl FnOnce() + Send + 'static) {
        let notice = ExitNotice {
            thread: name.clone(),
            tx: self.exits_tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _notice = notice;
                body();
            })
            .expect("spawn a shard thread");
        self.threads.push(thread);
    }

    /// Blocks until `stop` fires (`Ok`) or a shard thread ends first (`Err`).
    fn wait(&self, stop: &StopSignal) -> Result<(), ThreadDied> {
        loop {
            match self.exits.recv_timeout(Duration::from_millis(200)) {
                Ok(_) if stop.is_triggered() => return Ok(()),
                Ok(died) => return Err(died),
                Err(mpsc::RecvTimeoutError::Timeout) if stop.is_triggered() => return Ok(()),
                Err(_) => {}
            }
        }
    }

    fn join(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_dies_is_reported() {
        let stop = StopSignal::default();
        let mut supervisor = Supervisor::new();
        supervisor.spawn("a".into(), || std::thread::sleep(Duration::from_secs(2)));
        supervisor.spawn("b".into(), || panic!("injected shard failure"));
        let died = supervisor.wait(&stop).unwrap_err();
        let expected = ThreadDied {
            thread: "b".into(),
            panicked: true,
        };
        assert_eq!(died, expected);
    }

    #[test]
    fn a_requested_stop_is_not_a_death() {
        let stop = Arc::new(StopSignal::default());
        let mut supervisor = Supervisor::new();
        let s = stop.clone();
        supervisor.spawn("a".into(), move || {
            while !s.is_triggered() {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        stop.trigger();
        assert_eq!(supervisor.wait(&stop), Ok(()));
        supervisor.join();
    }

    #[test]
    fn catch_unwind_contains_a_panicking_future() {
        let mut rt = RuntimeBuilder::<LegacyDriver>::new().build().unwrap();
        let caught = rt.block_on(CatchUnwind(Box::pin(async { panic!("boom") })));
        assert_eq!(panic_message(&*caught.unwrap_err()), "boom");
        let fine = rt.block_on(CatchUnwind(Box::pin(async { 7 })));
        assert_eq!(fine.unwrap(), 7);
    }
}
