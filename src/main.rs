//! The `ringway` command: parses the command line, loads the configuration and starts
//! the shards. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ringway::{Config, ConfigError, ConfigFormat, Level};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ringway", version, about, long_about = None)]
struct Cli {
    /// Configuration file: ringway's TOML, or Olla's YAML (a `.yaml`/`.yml` file). Without
    /// it, the embedded default (config/ringway.toml).
    #[arg(short, long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// The language of --config, when its extension does not say it.
    #[arg(long, value_name = "FORMAT", global = true)]
    config_format: Option<Format>,
    /// Address to listen on, overriding server.listen.
    #[arg(long, value_name = "ADDR", global = true)]
    listen: Option<String>,
    /// Number of shards (threads), overriding server.shards; 0 = one per CPU.
    #[arg(long, value_name = "N", global = true)]
    shards: Option<usize>,
    /// Log level (error, warn, info, debug), overriding log.level and RINGWAY_LOG.
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    /// Validate the configuration, print a summary and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--config-format`.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// ringway's own TOML.
    Toml,
    /// Olla's YAML, with its OLLA_* environment overrides.
    Olla,
}

#[derive(Subcommand)]
enum Command {
    /// Run ringway in front of two built-in mock backends, to try it with curl.
    Demo {
        /// Delay between streamed tokens of the mock backends, in milliseconds.
        #[arg(long, default_value_t = 40)]
        token_delay_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ringway: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in &config.warnings {
        eprintln!("ringway: warning: {}: {warning}", config.origin);
    }
    if cli.check_config {
        println!(
            "{}: OK: listen {}, {} shard(s), balancer {}, {} endpoint(s)",
            config.origin,
            config.server.listen,
            config.shard_count(),
            config.proxy.balancer.name(),
            config.endpoints.len()
        );
        print_dns(&config.dns);
        if let Some(tls) = &config.server.tls {
            println!(
                "  TLS listener: certificate {}, key {}",
                tls.cert_file.display(),
                tls.key_file.display()
            );
        }
        for e in &config.endpoints {
            println!(
                "  {} ({}) {} priority {}",
                e.name, e.kind, e.url, e.priority
            );
            if e.expand == ringway::Expand::Addresses {
                let addrs: Vec<String> = e.addrs.iter().map(|a| a.ip().to_string()).collect();
                println!("    expand addresses: {} (now)", addrs.join(", "));
            }
        }
        return ExitCode::SUCCESS;
    }
    raise_open_file_limit(&config);
    let result = match cli.command {
        Some(Command::Demo { token_delay_ms }) => ringway::demo::run(config, token_delay_ms),
        None => {
            // A reload reads the same file again, with the same command-line overrides.
            let source = config.path.is_some().then(|| {
                let cli = Cli::parse();
                std::sync::Arc::new(move || load_config(&cli)) as ringway::ConfigSource
            });
            ringway::start_with(config, source)
                .map_err(Into::into)
                .and_then(|server| {
                    on_signals(&server);
                    server.wait().map_err(Into::into)
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`'s line about `[dns]`.
fn print_dns(dns: &ringway::dns::DnsConfig) {
    let servers = if dns.servers.is_empty() {
        "the system resolver".to_string()
    } else {
        let list: Vec<String> = dns.servers.iter().map(|s| s.to_string()).collect();
        format!("servers {}", list.join(", "))
    };
    let refresh = match dns.refresh_interval {
        Some(every) => format!("re-resolved at most {} ms apart", every.as_millis()),
        None => "resolved once".to_string(),
    };
    println!(
        "  dns: {servers}, timeout {} ms, family {}, {refresh}",
        dns.timeout.as_millis(),
        dns.family.name()
    );
}

/// Raises the soft limit on open files to the hard one, and warns when even that cannot
/// hold every shard's `server.max_connections` (two descriptors each: client and
/// endpoint). Beyond the limit, accepting fails and clients wait in the listen backlog.
fn raise_open_file_limit(config: &Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("ringway: cannot read or raise the open-file limit: {e}");
            return;
        }
    };
    let wanted = (config.shard_count() * config.server.max_connections * 2) as u64 + 256;
    if limit < wanted {
        eprintln!(
            "ringway: warning: the open-file limit is {limit}; {} shard(s) x server.max_connections {} needs about {wanted} (raise `ulimit -n` or lower server.max_connections)",
            config.shard_count(),
            config.server.max_connections
        );
    }
}

/// SIGTERM and SIGINT start a graceful shutdown (drain, then exit 0); SIGHUP reloads
/// the configuration file (its outcome is logged; a file that fails validation changes
/// nothing).
pub(crate) fn on_signals(server: &ringway::Server) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!(
                "ringway: cannot handle signals ({e}): SIGTERM and SIGINT will end the process abruptly, SIGHUP will not reload"
            );
            return;
        }
    };
    let (stopper, reloader) = (server.stopper(), server.reloader());
    let spawned = std::thread::Builder::new()
        .name("ringway-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reloader.reload();
                } else {
                    eprintln!("ringway: signal received; draining connections, then exiting");
                    stopper.stop();
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("ringway: cannot start the signal thread: {e}");
    }
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = match (&cli.config, cli.config_format) {
        (Some(path), None) => Config::load(path)?,
        (Some(path), Some(Format::Toml)) => Config::load_as(path, ConfigFormat::Toml)?,
        (Some(path), Some(Format::Olla)) => Config::load_as(path, ConfigFormat::Olla)?,
        (None, Some(_)) => {
            return Err(ConfigError {
                origin: "the command line".into(),
                key: "--config-format".into(),
                message: "needs --config".into(),
            });
        }
        (None, None) => Config::embedded_default(),
    };
    if let Some(listen) = &cli.listen {
        config.set_listen(listen)?;
    }
    if let Some(shards) = cli.shards {
        config.server.shards = shards;
    }
    let from_env = std::env::var("RINGWAY_LOG").ok();
    let level = match (&cli.log_level, &from_env) {
        (Some(l), _) => Some(("--log-level", l)),
        (None, Some(l)) => Some(("RINGWAY_LOG", l)),
        _ => None,
    };
    if let Some((source, name)) = level {
        config.log_level = Level::parse(name).ok_or_else(|| ConfigError {
            origin: "the command line".into(),
            key: source.into(),
            message: format!("unknown level {name:?}; expected error, warn, info or debug"),
        })?;
    }
    ringway::set_level(config.log_level);
    Ok(config)
}
