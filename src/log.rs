//! Logs. Operational lines (start-up, driver choice, endpoint state changes, failures)
//! go to stderr, filtered by level; a shard writes them only when something changes or
//! goes wrong. The access log (one line per request, `[log] access`) is formatted on the
//! shard and handed to a writer thread through a bounded channel: a shard never waits
//! for a disk or a pipe, and if the writer falls behind, lines are dropped and counted.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::clock::unix_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most verbose level that is written.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub(crate) fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line; use the `error!`, `warn!`, `info!` and `debug!` macros.
/// Control characters in the message (it may quote what a client or an endpoint sent)
/// are written as `\xHH`: no message can end its line or forge another.
pub(crate) fn write(level: Level, args: fmt::Arguments<'_>) {
    let message = args.to_string();
    let mut line = format!("{} {:5} ", Timestamp(unix_ms()), level.label());
    for c in message.chars() {
        if c.is_control() {
            let _ = write!(line, "\\x{:02x}", u32::from(c));
        } else {
            line.push(c);
        }
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)+))
        }
    };
}
macro_rules! error { ($($arg:tt)+) => { $crate::log::log_at!($crate::log::Level::Error, $($arg)+) } }
macro_rules! warning { ($($arg:tt)+) => { $crate::log::log_at!($crate::log::Level::Warn, $($arg)+) } }
macro_rules! info { ($($arg:tt)+) => { $crate::log::log_at!($crate::log::Level::Info, $($arg)+) } }
macro_rules! debug { ($($arg:tt)+) => { $crate::log::log_at!($crate::log::Level::Debug, $($arg)+) } }
pub(crate) use {debug, error, info, log_at, warning};

/// The access log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    Text,
    Json,
}

/// Lines a shard's access log may queue before dropping them.
const ACCESS_QUEUE: usize = 64 * 1024;

/// The access log: a writer thread fed through a bounded channel.
pub(crate) struct AccessLog {
    pub(crate) format: AccessFormat,
    tx: std::sync::mpsc::SyncSender<String>,
    dropped: std::sync::atomic::AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread, appending to `path` or writing to stdout.
    pub(crate) fn start(
        format: AccessFormat,
        path: Option<&std::path::Path>,
    ) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(ACCESS_QUEUE);
        std::thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || {
                let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buffered.write_all(line.as_bytes());
                    // Batch what is already queued, then flush.
                    while let Ok(more) = rx.try_recv() {
                        let _ = buffered.write_all(more.as_bytes());
                    }
                    let _ = buffered.flush();
                }
            })?;
        Ok(AccessLog {
            format,
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Queues a line; never blocks.
    pub(crate) fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// RFC 3339 UTC time with milliseconds, from Unix milliseconds.
pub(crate) struct Timestamp(pub(crate) u64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        let secs = ms / 1000;
        let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = (secs / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
            ms % 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_123).to_string(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            Timestamp(1_795_600_000_000).to_string(),
            "2026-11-25T09:46:40.000Z"
        );
    }

    #[test]
    fn levels_parse() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Error < Level::Debug);
    }
}
