//! Shards and their lifecycle: the listeners (bound on the main thread, one SO_REUSEPORT
//! socket per shard, after checking the port is really free), one OS thread per shard
//! with its own monoio runtime (io_uring, or epoll as the fallback), the accept loop,
//! draining on stop, and the control thread. Threads are watched by `supervisor`.

mod supervisor;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::clock;
use crate::config::{Config, DriverChoice};
use crate::control::{self, ConfigSource, Control};
use crate::events::Kind;
use crate::live::Live;
use crate::log::{AccessLog, error, info, warning};
use crate::metrics::Metrics;
use crate::proxy;
use crate::reload::Reloads;
use crate::shard::{Shard, ShardParts};
use crate::stop::{StopSignal, Stopper};
use crate::tls::listener::CertStore;
use supervisor::{CatchUnwind, Supervisor, panic_message};

pub use supervisor::ThreadDied;

/// io_uring submission queue (SQ) size per shard. It does not bound the operations in
/// flight: monoio hands the queue to the kernel whenever it is full before queueing
/// another, so a burst costs one extra `io_uring_enter` per 256 operations. Each entry is
/// a 64-byte SQE, mapped and resident for the life of the shard (16 KiB here).
const URING_ENTRIES: u32 = 256;
/// io_uring completion queue (CQ) size per shard (16 bytes an entry, resident: 64 KiB).
/// Completions wait here between two turns of the event loop, about one per busy
/// connection. Past it the kernel keeps them on its overflow list: none is lost, but
/// all take a slower path until the list drains (2,000 connections through 2 shards
/// overflow a 512-entry CQ constantly and a 4096-entry one never).
const URING_CQ_ENTRIES: u32 = 4096;
/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;
/// Connections the accept loop takes per wake-up, at most: the one its accept operation
/// completed, then what else the kernel has queued, by non-blocking accept() calls.
const ACCEPT_BURST: usize = 512;

/// A running ringway: its shards and their listeners.
pub struct Server {
    local_addr: SocketAddr,
    drivers: Vec<&'static str>,
    /// The TLS listener's certificate; `None`: plain HTTP.
    certs: Option<Arc<CertStore>>,
    stop: Arc<StopSignal>,
    reloads: Reloads,
    supervisor: Supervisor,
}

#[derive(Debug)]
pub enum StartError {
    /// The address is taken (typically by another ringway).
    AddrInUse(SocketAddr),
    Bind(SocketAddr, io::Error),
    /// The access log (`log.access_path`) cannot be opened.
    AccessLog(Option<std::path::PathBuf>, io::Error),
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
            StartError::AccessLog(Some(path), e) => write!(
                f,
                "cannot open the access log {} (log.access_path): {e}",
                path.display()
            ),
            StartError::AccessLog(None, e) => write!(f, "cannot start the access log: {e}"),
            StartError::Shard(id, why) => write!(f, "shard {id} failed to start: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Binds the listeners and starts the shards; returns once every shard accepts. A
/// reload (SIGHUP, `POST /internal/reload`, [`Server::reload`]) reads the file the
/// configuration was loaded from again, in the same format; a configuration made any
/// other way cannot be reloaded (see [`start_with`]).
pub fn start(config: Config) -> Result<Server, StartError> {
    let source = config
        .path
        .clone()
        .map(|(path, format)| Arc::new(move || Config::load_as(&path, format)) as ConfigSource);
    start_with(config, source)
}

/// [`start`], with where a reload reads the configuration from (`None`: reloads are
/// refused). The command line passes a source that applies its overrides again.
pub fn start_with(config: Config, source: Option<ConfigSource>) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let shards = config.shard_count();
    let listeners = bind_listeners(config.server.listen, shards)?;
    let local_addr = listeners[0]
        .local_addr()
        .map_err(|e| StartError::Bind(config.server.listen, e))?;
    let live = Arc::new(Live::first(config.clone(), shards));
    let upstreams = &live.upstreams;
    let metrics = Arc::new(Metrics::new(shards));
    let (reloads, asked) = Reloads::new();
    let access_log = match config.access_log {
        Some(format) => {
            let path = config.access_log_path.as_deref();
            let log = AccessLog::start(format, path)
                .map_err(|e| StartError::AccessLog(path.map(Into::into), e))?;
            Some(Arc::new(log))
        }
        None => None,
    };
    let certs =
        (config.server.tls.as_ref()).map(|tls| Arc::new(CertStore::new(tls, &config.origin)));
    let stop = Arc::new(StopSignal::default());
    let cores = if config.server.pin_cores {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cores.is_empty() {
            let why = "server.pin_cores: cannot read the allowed CPUs; shards are not pinned";
            warning!("{why}");
            upstreams.events.record(Kind::Warning, None, why);
        }
        cores
    } else {
        Vec::new()
    };
    let process_tag = process_tag();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut supervisor = Supervisor::new();
    let mut update_senders = Vec::with_capacity(shards);
    for (id, listener) in listeners.into_iter().enumerate() {
        let (update_tx, updates) = mpsc::channel();
        update_senders.push(update_tx);
        let start = ShardStart {
            parts: ShardParts {
                id,
                driver: "",
                live: live.clone(),
                metrics: metrics.clone(),
                access_log: access_log.clone(),
                updates,
                process_tag,
                reloads: reloads.clone(),
                certs: certs.clone(),
            },
            listener,
            stop: stop.clone(),
            ready: ready_tx.clone(),
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
    let started = format!(
        "ringway {} started: {shards} shard(s) ({}), {} endpoint(s)",
        env!("CARGO_PKG_VERSION"),
        summarize(&drivers),
        config.endpoints.len()
    );
    upstreams.events.record(Kind::Started, None, started);
    let control = Control {
        live: live.clone(),
        stop: stop.clone(),
        shards: update_senders,
        asked,
        source,
        certs: certs.clone(),
    };
    supervisor.spawn("ringway-control".into(), move || run_control(control));
    info!(
        "ringway {} listening on {local_addr}{} with {shards} shard(s) ({}), balancer {}, {} endpoint(s)",
        env!("CARGO_PKG_VERSION"),
        if certs.is_some() { " (TLS)" } else { "" },
        summarize(&drivers),
        config.proxy.balancer.name(),
        config.endpoints.len()
    );
    Ok(Server {
        local_addr,
        drivers,
        certs,
        stop,
        reloads,
        supervisor,
    })
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

    /// Reads the TLS listener's certificate and key files again (`server.tls_cert_file`,
    /// `server.tls_key_file`), and nothing else: new connections get the new
    /// certificate; open ones, streams included, carry on with theirs. A file that cannot
    /// be used keeps the certificate in force; the error names the file and its key (and
    /// is logged). Without a TLS listener there is nothing to reload: `Ok`. A
    /// configuration reload ([`Server::reload`], SIGHUP) reads them too.
    pub fn reload_certificates(&self) -> Result<(), crate::ConfigError> {
        match &self.certs {
            Some(certs) => certs.reload(),
            None => Ok(()),
        }
    }

    /// A handle that stops the server from any thread (e.g. a signal handler): shards
    /// stop accepting and drain, then `wait` returns.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Reads the configuration again and applies it without dropping anything (what
    /// SIGHUP does): the new generation's number, or why the running configuration was
    /// kept. Blocks until the control thread has done it.
    pub fn reload(&self) -> Result<u64, String> {
        self.reloads.reload().map(|applied| applied.generation)
    }

    /// A handle that asks for a reload from any thread (a SIGHUP handler), not waiting
    /// for it.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.reloads.clone())
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

/// Asks a running ringway for a reload ([`Server::reloader`]).
#[derive(Clone)]
pub struct Reloader(Reloads);

impl Reloader {
    /// Asks for a reload; its outcome is logged.
    pub fn reload(&self) {
        self.0.ask();
    }
}

fn summarize(drivers: &[&str]) -> String {
    let mut kinds: Vec<&str> = drivers.to_vec();
    kinds.dedup();
    kinds.join("+")
}

fn process_tag() -> u32 {
    let nanos = clock::unix_time().as_nanos() as u64;
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
    parts: ShardParts,
    listener: std::net::TcpListener,
    stop: Arc<StopSignal>,
    ready: mpsc::Sender<Ready>,
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
        let mut ring = io_uring::IoUring::builder();
        ring.setup_cqsize(URING_CQ_ENTRIES);
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .uring_builder(ring)
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
    let (id, ready) = (start.parts.id, start.ready.clone());
    let choice = start.parts.live.config.server.driver;
    if let Err(why) = block_on_driver(choice, &format!("shard {id}"), |driver| {
        shard_main(start, driver)
    }) {
        let _ = ready.send(Err((id, why)));
    }
}

/// The control thread: health checks and model discovery for all shards.
///
/// Always on epoll, whatever `server.driver` says: a few probes a second gain nothing from
/// io_uring, and a ring would be mapped (and resident) for them.
fn run_control(control: Control) {
    let checks = |_driver| control::run(control);
    if let Err(why) = block_on_driver(DriverChoice::Epoll, "control thread", checks) {
        error!("control thread: {why}; health checks are not running");
    }
}

async fn shard_main(start: ShardStart, driver: &'static str) {
    let id = start.parts.id;
    // A second descriptor of the same (non-blocking) listening socket, to empty its queue
    // with plain accept() calls; without it, the loop gets one connection per trip.
    let queued = match start.listener.try_clone() {
        Ok(queued) => Some(queued),
        Err(e) => {
            warning!("shard {id}: cannot duplicate the listener ({e}); accepting one at a time");
            None
        }
    };
    let listener = match TcpListener::from_std(start.listener) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = start.ready.send(Err((id, format!("listener: {e}"))));
            return;
        }
    };
    let drain_timeout = start.parts.live.config.server.drain_timeout;
    let shard = Rc::new(Shard::new(ShardParts {
        driver,
        ..start.parts
    }));
    let _ = start.ready.send(Ok((id, driver)));

    monoio::spawn(evict_idle_connections(shard.clone()));
    let canceller = Canceller::new();
    let accepting = monoio::spawn(accept_loop(
        listener,
        queued,
        shard.clone(),
        canceller.handle(),
    ));
    start.stop.wait().await;
    // Drain: stop accepting, close connections idle between requests, let requests in
    // flight (streams included) finish within server.drain_timeout_ms.
    shard.drain();
    canceller.cancel();
    accepting.await; // the listener is dropped when the loop ends
    let deadline = Instant::now() + drain_timeout;
    while shard.connections() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if shard.connections() > 0 {
        warning!(
            "shard {id}: {} connection(s) still busy after the drain timeout; closing them",
            shard.connections()
        );
    }
    // On io_uring, closing a socket is itself a queued operation: let the driver submit
    // it before the runtime goes away, or the port would stay bound.
    monoio::time::sleep(Duration::from_millis(1)).await;
}

/// Accepts connections until cancelled. Each accept the driver completes is followed by
/// up to `ACCEPT_BURST - 1` non-blocking accepts on `queued` (the same socket), so a
/// burst of connects is taken in one trip through the event loop. Accepting one
/// connection per trip leaves the rest in the kernel's queue, their requests already
/// sent, behind every ready task of the connections already served: under load a trip
/// takes 10-50 ms, and at 2,000 connections some waited seconds to be accepted.
async fn accept_loop(
    listener: TcpListener,
    queued: Option<std::net::TcpListener>,
    shard: Rc<Shard>,
    cancel: monoio::io::CancelHandle,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                admit(&shard, stream, peer);
                let Some(queued) = &queued else { continue };
                for _ in 1..ACCEPT_BURST {
                    if shard.is_draining() {
                        break;
                    }
                    // WouldBlock: nothing queued. Other errors (out of descriptors) the
                    // next driver accept reports and backs off from.
                    let Ok((stream, peer)) = queued.accept() else {
                        break;
                    };
                    // accept() gives a blocking socket, as io_uring's accept does; the
                    // epoll driver needs it non-blocking. On failure the socket is
                    // dropped, which closes it.
                    let adopted = if shard.driver == "epoll" {
                        stream.set_nonblocking(true).map(|()| stream)
                    } else {
                        Ok(stream)
                    };
                    if let Ok(stream) = adopted.and_then(TcpStream::from_std) {
                        admit(&shard, stream, peer);
                    }
                }
            }
            Err(_) if shard.is_draining() => return,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                warning!("shard {}: accept failed: {e}", shard.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves an accepted connection on its own task, or refuses it beyond
/// `server.max_connections`.
fn admit(shard: &Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let Some(admitted) = shard.admit() else {
        shard.counters().refused_connections.bump();
        // A TLS client would read the plain 503 as garbage, and a handshake to answer it
        // costs what the limit is there to save: it is closed unanswered.
        if shard.listener_tls.is_none() {
            monoio::spawn(proxy::refuse_connection(stream));
        }
        return;
    };
    let shard = shard.clone();
    monoio::spawn(async move {
        let served = CatchUnwind(Box::pin(proxy::serve_connection(&shard, stream, peer)));
        let result = served.await;
        drop(admitted);
        if let Err(panic) = result {
            error!(
                "shard {}: panic while serving {peer}: {}; that connection was closed, the shard carries on",
                shard.id,
                panic_message(&*panic)
            );
        }
    });
}

async fn evict_idle_connections(shard: Rc<Shard>) {
    let every = (shard.pool.idle_timeout() / 2).max(Duration::from_millis(100));
    while !shard.is_draining() {
        monoio::time::sleep(every).await;
        // An idle shard takes a new generation here too: it lets the old one go, and
        // the connections to backends that left with it.
        shard.take_updates();
        shard.pool.evict_expired();
    }
}
