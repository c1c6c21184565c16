//! `ringway-mock`: the mock LLM backend as a standalone process, for benchmarks and manual
//! testing. Prints `listening on <addr>` once bound, then serves until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringway_mock::{KvCacheConfig, MockConfig};

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
    /// Simulate a prefix (KV) cache: time to first token = base + per-token cost of the
    /// prompt tokens not already cached (replaces --first-token-delay-ms).
    #[arg(long)]
    kv_cache: bool,
    /// KV cache: fixed delay before the first token [default: 20] (implies --kv-cache).
    #[arg(long, value_name = "MS")]
    prefill_base_ms: Option<u64>,
    /// KV cache: prefill time per uncached prompt token [default: 250] (implies --kv-cache).
    #[arg(long, value_name = "US")]
    prefill_us_per_token: Option<u64>,
    /// KV cache: LRU capacity in tokens [default: 4000000] (implies --kv-cache).
    #[arg(long, value_name = "N")]
    kv_cache_tokens: Option<usize>,
    /// KV cache: prefills run at once; later requests queue for a free slot, first come
    /// first served [default: unlimited] (implies --kv-cache).
    #[arg(long, value_name = "N")]
    prefill_slots: Option<NonZeroUsize>,
    /// Require `Authorization: Bearer KEY` on every route but health checks (like
    /// `vllm serve --api-key`).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Require this header, with the value of --require-value, on every route but health
    /// checks (401 otherwise).
    #[arg(long, value_name = "NAME", requires = "require_value")]
    require_header: Option<String>,
    /// The exact value --require-header must carry (surrounding spaces ignored).
    #[arg(long, value_name = "VALUE", requires = "require_header")]
    require_value: Option<String>,
    /// Serve TLS (an https:// endpoint) with this PEM certificate chain; needs --tls-key
    /// and a build with the `tls` feature (`cargo build -p ringway-mock --features tls`).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl Args {
    fn kv_cache_config(&self) -> Option<KvCacheConfig> {
        let tuned = self.prefill_base_ms.is_some()
            || self.prefill_us_per_token.is_some()
            || self.kv_cache_tokens.is_some()
            || self.prefill_slots.is_some();
        if !self.kv_cache && !tuned {
            return None;
        }
        let d = KvCacheConfig::default();
        Some(KvCacheConfig {
            base: self.prefill_base_ms.map_or(d.base, Duration::from_millis),
            per_token: (self.prefill_us_per_token).map_or(d.per_token, Duration::from_micros),
            capacity_tokens: self.kv_cache_tokens.unwrap_or(d.capacity_tokens),
            prefill_slots: self.prefill_slots.or(d.prefill_slots),
        })
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut config = MockConfig::named(&args.name);
    config.kv_cache = args.kv_cache_config();
    if let Some(models) = args.models {
        config.models = models;
    }
    config.tokens = args.tokens;
    config.token_delay = Duration::from_millis(args.token_delay_ms);
    config.first_token_delay = Duration::from_millis(args.first_token_delay_ms);
    config.threads = args.threads;
    config.api_key = args.api_key;
    config.require_header = args.require_header.zip(args.require_value);
    if let Some((cert, key)) = args.tls_cert.zip(args.tls_key) {
        #[cfg(feature = "tls")]
        {
            config.tls = Some(ringway_mock::tls::server_config(&cert, &key)?);
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (cert, key);
            return Err(std::io::Error::other(
                "--tls-cert: this ringway-mock was built without TLS; build it with `--features tls`",
            ));
        }
    }
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
