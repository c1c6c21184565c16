//! `ringway-pipe`: a bare byte-copying TCP pipe on monoio, the floor for ringway's cost
//! per request.
//!
//! ```text
//! ringway-pipe --listen 127.0.0.1:0 --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002
//! ```
//!
//! It is built like ringway (one thread per `--threads`, each with its own monoio runtime
//! on io_uring, or epoll where io_uring is unavailable, and its own SO_REUSEPORT listener;
//! TCP_NODELAY on both sides; mimalloc) but does none of a proxy's work: no HTTP parsing,
//! no routing, no header rewriting, no pooling. Each accepted client connection gets one
//! fresh upstream connection (the upstreams taken round-robin per thread), and bytes are
//! copied both ways, each read written out before the next read, until either side
//! closes or fails; then both connections close.
//!
//! So it is not a proxy: requests on one client connection all go to that connection's
//! upstream, and it holds exactly one upstream connection per client connection. What an
//! HTTP proxy spends per request above this floor is the cost of being a proxy.
//! Prints `listening on ADDR` once bound (the benchmark drivers wait for that line).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes read per copy (ringway reads endpoint responses into 16 KiB buffers too).
const BUF: usize = 16 * 1024;
/// io_uring submission queue size per thread, as in ringway.
const URING_ENTRIES: u32 = 4096;
/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;
/// Connections taken per wake-up of the accept loop, at most, as in ringway: the one the
/// driver's accept completed, then what else is queued, by non-blocking accept() calls.
const ACCEPT_BURST: usize = 512;

#[derive(Parser)]
#[command(
    version,
    about = "A bare byte-copying TCP pipe (the floor for proxy benchmarks)"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where connections go; repeat for several (assigned round-robin).
    #[arg(long, required = true)]
    upstream: Vec<SocketAddr>,
    /// Threads, each with its own runtime and listener.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listeners = bind(args.listen, args.threads.max(1))?;
    let addr = listeners[0].local_addr()?;
    let upstreams: Arc<[SocketAddr]> = args.upstream.into();
    let driver = if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    };
    let threads = listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            let upstreams = upstreams.clone();
            std::thread::Builder::new()
                .name(format!("pipe-{id}"))
                .spawn(move || run(id, listener, upstreams))
        })
        .collect::<io::Result<Vec<_>>>()?;
    println!(
        "listening on {addr} with {} thread(s) ({driver})",
        threads.len()
    );
    for thread in threads {
        match thread.join() {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::other("a pipe thread panicked")),
        }
    }
    Ok(())
}

/// One SO_REUSEPORT listener per thread; with port 0 the first one picks the port.
fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut bound = addr;
    (0..count)
        .map(|_| {
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
            let listener = std::net::TcpListener::from(socket);
            bound = listener.local_addr()?;
            Ok(listener)
        })
        .collect()
}

/// A thread's runtime (io_uring, else epoll) and accept loop.
fn run(id: usize, listener: std::net::TcpListener, upstreams: Arc<[SocketAddr]>) -> io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(URING_ENTRIES)
        .enable_timer()
        .build()?;
    let epoll = !monoio::utils::detect_uring();
    rt.block_on(async move {
        // The same socket again, to empty its queue with plain accept() calls.
        let backlog = listener.try_clone()?;
        let listener = TcpListener::from_std(listener)?;
        let mut next = id;
        let mut start = |client: TcpStream| {
            let upstream = upstreams[next % upstreams.len()];
            next = next.wrapping_add(1);
            monoio::spawn(async move {
                let _ = serve(client, upstream).await;
            });
        };
        loop {
            let Ok((client, _)) = listener.accept().await else {
                // Typically out of file descriptors: back off instead of spinning.
                monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            start(client);
            for _ in 1..ACCEPT_BURST {
                let Ok((client, _)) = backlog.accept() else {
                    break; // WouldBlock: nothing queued
                };
                // Blocking, as io_uring's accept gives it; the epoll driver needs it not.
                if epoll && client.set_nonblocking(true).is_err() {
                    continue;
                }
                if let Ok(client) = TcpStream::from_std(client) {
                    start(client);
                }
            }
        }
    })
}

/// Connects the client to `upstream` and copies both ways until either side is done.
async fn serve(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect_addr(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_in, mut client_out) = client.into_split();
    let (mut server_in, mut server_out) = server.into_split();
    // The first direction to end drops the other (cancelling its read); dropping the
    // halves closes both sockets.
    monoio::select! {
        done = copy(&mut client_in, &mut server_out) => done,
        done = copy(&mut server_in, &mut client_out) => done,
    }
}

/// Writes each read out before reading again, until end of stream or an error.
async fn copy(from: &mut impl AsyncReadRent, to: &mut impl AsyncWriteRent) -> io::Result<()> {
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let (read, filled) = from.read(buf).await;
        if read? == 0 {
            return Ok(());
        }
        let (written, mut emptied) = to.write_all(filled).await;
        written?;
        emptied.clear();
        buf = emptied;
    }
}
