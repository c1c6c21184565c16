//! `/internal/process`: the process's resources, in the sections of Olla's page
//! (`handler_process.go`: `timestamp`, `memory`, `runtime`), read from `/proc/self` when
//! the page is asked for (a few small in-memory files; an operator page).
//!
//! Olla reports Go's runtime statistics; ringway has no garbage collector or goroutines,
//! so the sections map as follows. `memory`: `heap_alloc` and `heap_inuse` are the
//! anonymous resident memory (`RssAnon`: the allocator's heaps and the threads' stacks),
//! `heap_sys` the data mappings (`VmData`: what the allocator reserved), and
//! `memory_pressure` ("LOW", "MEDIUM", "HIGH") the host's memory in use (`MemAvailable`
//! of `MemTotal`) rather than Go's heap ratio; `heap_released`, `stack_inuse` and
//! `total_alloc` are omitted. `runtime`: `uptime` and `num_cpu` as Olla's, `gomaxprocs`
//! becomes `shards` (one event loop thread each), `go_version` becomes `version`.
//! `garbage_collection`, `goroutines` and `allocations` are omitted (none exist). Added:
//! `process` (pid, threads, open files and their limit) and the raw byte counts.

use serde_json::{Value, json};

use super::format;
use crate::clock::{now_ms, unix_ms};
use crate::log::Timestamp;
use crate::shard::Shard;

/// The `kB` fields of a `/proc` status-style file, as bytes, and its plain numbers.
fn field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
    let mut words = line.split(':').nth(1)?.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    Some(match words.next() {
        Some("kB") => n * 1024,
        _ => n,
    })
}

/// Open file descriptors: the entries of `/proc/self/fd`, less the one reading it.
fn open_files() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

fn pressure(meminfo: &str) -> Option<&'static str> {
    let total = field(meminfo, "MemTotal")? as f64;
    let available = field(meminfo, "MemAvailable")? as f64;
    let used = 1.0 - available / total;
    Some(if used > 0.9 {
        "HIGH"
    } else if used > 0.7 {
        "MEDIUM"
    } else {
        "LOW"
    })
}

pub(super) fn page(shard: &Shard) -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |name| field(&status, name);
    let bytes = |n: Option<u64>| n.map(format::bytes);
    let uptime_ms = now_ms();
    let max_open_files = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "timestamp": Timestamp(unix_ms()).to_string(),
        "memory": {
            "heap_alloc": bytes(get("RssAnon")),
            "heap_inuse": bytes(get("RssAnon")),
            "heap_sys": bytes(get("VmData")),
            "memory_pressure": pressure(&meminfo),
            "rss": bytes(get("VmRSS")),
            "rss_bytes": get("VmRSS"),
            "peak_rss": bytes(get("VmHWM")),
            "peak_rss_bytes": get("VmHWM"),
            "anon_bytes": get("RssAnon"),
            "file_bytes": get("RssFile"),
            "data_bytes": get("VmData"),
            "virtual_bytes": get("VmSize"),
        },
        "runtime": {
            "uptime": format::duration(uptime_ms),
            "uptime_seconds": uptime_ms / 1000,
            "version": env!("CARGO_PKG_VERSION"),
            "num_cpu": cpus,
            "shards": shard.metrics.shards(),
            "driver": shard.driver,
        },
        "process": {
            "pid": std::process::id(),
            "threads": get("Threads"),
            "open_files": open_files(),
            "max_open_files": max_open_files,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let status = "Name:\tringway\nVmRSS:\t    5120 kB\nThreads:\t4\nVmHWM:\t6000 kB\n";
        assert_eq!(field(status, "VmRSS"), Some(5120 * 1024));
        assert_eq!(field(status, "Threads"), Some(4));
        assert_eq!(field(status, "VmSwap"), None);
        let meminfo = "MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 200 kB\n";
        assert_eq!(pressure(meminfo), Some("MEDIUM"));
        assert!(open_files().unwrap() >= 3, "stdin, stdout, stderr at least");
    }
}
