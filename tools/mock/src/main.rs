//! `ringway-mock`: the mock LLM backend as a standalone process, for benchmarks and manual
//! testing. Prints `listening on <addr>` once bound, then serves until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ringway_mock::MockConfig;

#[derive(Parser)]
#[command(version, about = "Mock LLM inference backend (OpenAI + Ollama APIs)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:11434")]
    listen: SocketAddr,
    /// Backend name, returned in `X-Mock-Backend` and `system_fingerprint`.
    #[arg(long, default_value = "mock")]
    name: String,
    /// Comma-separated served models [default: llama3.2:latest,qwen2.5:7b].
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Tokens per completion.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Delay before each streamed token after the first.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Delay before the first token or a non-streamed response.
    #[arg(long, default_value_t = 0)]
    first_token_delay_ms: u64,
    /// Runtime threads, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut config = MockConfig::named(&args.name);
    if let Some(models) = args.models {
        config.models = models;
    }
    config.tokens = args.tokens;
    config.token_delay = Duration::from_millis(args.token_delay_ms);
    config.first_token_delay = Duration::from_millis(args.first_token_delay_ms);
    config.threads = args.threads;
    let server = ringway_mock::spawn(args.listen, config)?;
    // Benchmark scripts parse this exact line.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.addr())?;
    stdout.flush()?;
    drop(stdout);
    // Serve until killed; the server threads do all the work.
    loop {
        std::thread::park();
    }
}
