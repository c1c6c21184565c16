//! What each endpoint's engine holds and how busy it is, read on the control thread every
//! `models.loaded_refresh_interval_ms` while the endpoint is up: which models it holds in
//! memory (into the model catalogue, where [`Catalog::cold`] names the endpoints that
//! would first load a request's model) and how many requests wait in its own queue
//! ([`Endpoint::set_queued`], which placement adds to the endpoint's load).
//!
//! Per endpoint type, what it holds / where its queue shows (`GET /metrics`):
//! - Ollama: `GET /api/ps`, `models[].name` (or `.model`) / no queue metric.
//! - LM Studio: `GET /api/v0/models`, the entries `"state": "loaded"` / none.
//! - llama.cpp: `GET /v1/models`; in router mode the entries whose `status.value` is
//!   `loaded`, else (a plain llama-server) what it lists / `llamacpp:requests_deferred`
//!   (with `--metrics`).
//! - vLLM: what it lists (one model, loaded before it is healthy) /
//!   `vllm:num_requests_waiting`.
//! - SGLang: what it lists / `sglang:num_queue_reqs` (with `--enable-metrics`).
//! - the others (gateways, OpenAI-compatible servers): nothing / none.
//!
//! An endpoint that cannot say (404, an unreadable answer, no answer) reports nothing: it
//! is never cold, and its queue counts as empty. Everything read is the backend's word:
//! bounded in size, parsed without panicking, numbers clamped.
//!
//! [`Catalog::cold`]: crate::upstream::models::Catalog::cold

use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::left_of;
use super::discovery::{Discovery, MAX_LIST};
use super::fetch::fetch;
use crate::clock::unix_ms;
use crate::endpoint_type::EndpointType;
use crate::log::debug;
use crate::stop::StopSignal;
use crate::upstream::Endpoint;
use crate::upstream::models::Held;

/// Largest `/metrics` page read (bytes): vLLM's, with its histograms, is some 100 KB.
const MAX_METRICS: usize = 4 << 20;

/// Deepest queue recorded: beyond this every backend is as bad as another, and the
/// number stays far from overflowing placement's load sums.
pub(crate) const MAX_QUEUE: u32 = 1_000_000;

/// How often the watcher looks at the endpoint's health between reads.
const SLICE: Duration = Duration::from_millis(50);

/// Reads what endpoint `ep` holds and its queue every `every` while it is up (at once
/// when it comes up) until `stop` fires.
pub(super) async fn watch(
    ep: &Endpoint,
    every: Duration,
    stop: &StopSignal,
    discovery: &Discovery,
) {
    let reads_queue = queue_metric(ep.kind).is_some();
    if !reads_queue && held_path(ep.kind).is_none() && !holds_what_it_lists(ep.kind) {
        return;
    }
    // A backend carried from the generation before, whose holdings are known, keeps its
    // schedule; a new one is read as soon as it is up.
    let carried = discovery.knows_held(ep);
    let mut due = Instant::now()
        + if carried {
            left_of(ep.engine_read_unix_ms(), every)
        } else {
            Duration::ZERO
        };
    let mut was_up = carried && ep.health().is_up();
    while !stop.is_triggered() {
        let up = ep.health().is_up();
        if up && (!was_up || Instant::now() >= due) {
            read(ep, discovery).await;
            due = Instant::now() + every;
        } else if !up && was_up {
            // Its queue is nobody's concern while it is out of rotation, and stale when
            // it is back.
            ep.set_queued(0);
        }
        was_up = up;
        monoio::time::sleep(SLICE.min(every)).await;
    }
}

/// One read of what the endpoint holds and of its queue.
async fn read(ep: &Endpoint, discovery: &Discovery) {
    let held = if holds_what_it_lists(ep.kind) {
        ep.set_engine_read_unix_ms(unix_ms());
        Held::Listed
    } else if let Some(path) = held_path(ep.kind) {
        match read_held(ep, path).await {
            Ok(held) => {
                ep.set_engine_read_unix_ms(unix_ms());
                held
            }
            Err(e) => {
                debug!("endpoint {}: cannot tell what it holds: {e}", ep.name);
                Held::Unknown
            }
        }
    } else {
        Held::Unknown
    };
    discovery.set_held(ep, held);
    if let Some(metric) = queue_metric(ep.kind) {
        let waiting = match read_metric(ep, metric).await {
            Ok(n) => n,
            Err(e) => {
                debug!("endpoint {}: cannot read its queue: {e}", ep.name);
                0
            }
        };
        ep.set_queued(others_waiting(waiting, ep.in_flight()));
    }
}

/// Engines that serve one model and load it before they pass a health check.
fn holds_what_it_lists(kind: EndpointType) -> bool {
    matches!(kind, EndpointType::Vllm | EndpointType::Sglang)
}

/// Where an endpoint type says which models it holds in memory.
fn held_path(kind: EndpointType) -> Option<&'static str> {
    match kind {
        EndpointType::Ollama => Some("/api/ps"),
        EndpointType::LmStudio => Some("/api/v0/models"),
        EndpointType::LlamaCpp => Some("/v1/models"),
        _ => None,
    }
}

/// The metric in an endpoint type's `/metrics` that counts the requests waiting in its
/// own queue (not those it is running).
fn queue_metric(kind: EndpointType) -> Option<&'static str> {
    match kind {
        EndpointType::Vllm => Some("vllm:num_requests_waiting"),
        EndpointType::Sglang => Some("sglang:num_queue_reqs"),
        EndpointType::LlamaCpp => Some("llamacpp:requests_deferred"),
        _ => None,
    }
}

async fn read_held(ep: &Endpoint, path: &str) -> Result<Held, String> {
    let (status, body) = fetch(ep, path, ep.check_timeout, Some(MAX_LIST)).await?;
    if !(200..300).contains(&status) {
        return Err(format!("{path} answered {status}"));
    }
    parse_held(ep.kind, &body).ok_or_else(|| format!("{path}: not a list of models"))
}

async fn read_metric(ep: &Endpoint, metric: &str) -> Result<u32, String> {
    let (status, body) = fetch(ep, "/metrics", ep.check_timeout, Some(MAX_METRICS)).await?;
    if !(200..300).contains(&status) {
        return Err(format!("/metrics answered {status}"));
    }
    metric_total(&body, metric).ok_or_else(|| format!("/metrics has no {metric}"))
}

/// What an endpoint's answer says it holds in memory; `None` when the answer is not the
/// shape its type gives.
pub(crate) fn parse_held(kind: EndpointType, body: &[u8]) -> Option<Held> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let name = |item: &Value, key: &str| {
        let name = item.get(key).or_else(|| item.get("model"))?.as_str()?;
        Some(name.to_string())
    };
    match kind {
        // `/api/ps`: `{"models": [{"name", "model", "size_vram", "expires_at", ...}]}`.
        EndpointType::Ollama => {
            let items = v.get("models")?.as_array()?;
            Some(Held::Models(
                items.iter().filter_map(|m| name(m, "name")).collect(),
            ))
        }
        // `/api/v0/models`: `{"data": [{"id", "state": "loaded" | "not-loaded", ...}]}`.
        EndpointType::LmStudio => {
            let items = v.get("data")?.as_array()?;
            let loaded = items.iter().filter(|m| m["state"] == "loaded");
            Some(Held::Models(loaded.filter_map(|m| name(m, "id")).collect()))
        }
        // `/v1/models`: in router mode each entry has `"status": {"value": "loaded" |
        // "loading" | "unloaded" | ...}`; a plain llama-server's have no status, and it
        // holds its one model whenever it is up.
        EndpointType::LlamaCpp => {
            let items = v.get("data")?.as_array()?;
            if !items.iter().any(|m| m.get("status").is_some()) {
                return Some(Held::Listed);
            }
            let loaded = items.iter().filter(|m| m["status"]["value"] == "loaded");
            Some(Held::Models(loaded.filter_map(|m| name(m, "id")).collect()))
        }
        _ => None,
    }
}

/// The requests waiting in an endpoint's queue that ringway did not put there, as far as
/// it can tell: what the endpoint reports waiting, less ringway's own requests in flight
/// on it (on all shards), at least 0.
///
/// Placement already counts each of ringway's requests in flight, running or waiting at
/// the backend; adding the backend's whole queue would count those waiting twice, and an
/// endpoint ringway alone keeps busy would look twice as loaded as it is. The difference
/// is a lower bound of what others (other clients, other ringway replicas) left waiting:
/// exact while ringway's own requests are all running, short by those of its own that
/// wait too, which placement counts already. A reading that old (the queue is read every
/// `models.loaded_refresh_interval_ms`) errs on the side of less.
pub(crate) fn others_waiting(waiting: u32, in_flight: u32) -> u32 {
    waiting.saturating_sub(in_flight)
}

/// The total of a metric's samples in a Prometheus text page (every `name value` and
/// `name{labels} value` line, summed over label sets: one per engine or model), clamped
/// to `0..=MAX_QUEUE`; `None` when the page has no such sample. Comments, other metrics,
/// timestamps and garbage lines are skipped; values that are not finite numbers
/// (`NaN`, `+Inf`, words) are ignored, negatives count as 0.
pub(crate) fn metric_total(page: &[u8], name: &str) -> Option<u32> {
    let mut total: Option<f64> = None;
    for line in page.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        let Some(rest) = line.strip_prefix(name.as_bytes()) else {
            continue;
        };
        let Some(value) = sample_value(rest) else {
            continue;
        };
        let v: f64 = match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
            Some(v) if f64::is_finite(v) => v,
            _ => continue,
        };
        total = Some(total.unwrap_or(0.0) + v.max(0.0));
    }
    // `as` saturates, and the clamp bounds what a hostile page can claim.
    total.map(|t| (t.round() as u32).min(MAX_QUEUE))
}

/// The value of a sample line, given what follows the metric's name: optional `{labels}`
/// (quoted values may hold `}` and escaped quotes), whitespace, then the value (an
/// optional timestamp follows). `None` when the line is another metric (`name_total`) or
/// malformed.
fn sample_value(rest: &[u8]) -> Option<&[u8]> {
    let after_labels = match rest.first()? {
        b'{' => {
            let (mut quoted, mut escaped) = (false, false);
            let end = rest.iter().enumerate().skip(1).find_map(|(i, &b)| {
                match (quoted, escaped, b) {
                    (true, true, _) => escaped = false,
                    (true, false, b'\\') => escaped = true,
                    (true, false, b'"') => quoted = false,
                    (false, _, b'"') => quoted = true,
                    (false, _, b'}') => return Some(i),
                    _ => {}
                }
                None
            })?;
            &rest[end + 1..]
        }
        b' ' | b'\t' => rest,
        _ => return None,
    };
    let value = after_labels.trim_ascii_start();
    let end = value
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(value.len());
    (end > 0).then(|| &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(held: Option<Held>) -> Vec<String> {
        match held {
            Some(Held::Models(m)) => m,
            other => panic!("not a list of models: {other:?}"),
        }
    }

    #[test]
    fn what_each_engine_holds() {
        let ps = br#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","size_vram":1},
            {"model":"qwen2.5:7b"},{"name":7},"junk"]}"#;
        assert_eq!(
            names(parse_held(EndpointType::Ollama, ps)),
            ["llama3.2:latest", "qwen2.5:7b"]
        );
        let nothing = br#"{"models":[]}"#;
        assert!(names(parse_held(EndpointType::Ollama, nothing)).is_empty());
        let lm = br#"{"object":"list","data":[{"id":"a","state":"loaded"},
            {"id":"b","state":"not-loaded"},{"id":"c"}]}"#;
        assert_eq!(names(parse_held(EndpointType::LmStudio, lm)), ["a"]);
        let router = br#"{"data":[{"id":"g","status":{"value":"loaded","args":["-m","x"]}},
            {"id":"h","status":{"value":"unloaded"}},{"id":"i","status":{"value":"loading"}}]}"#;
        assert_eq!(names(parse_held(EndpointType::LlamaCpp, router)), ["g"]);
        let plain = br#"{"object":"list","data":[{"id":"m.gguf","object":"model","meta":{}}]}"#;
        assert_eq!(
            parse_held(EndpointType::LlamaCpp, plain),
            Some(Held::Listed)
        );
        for garbage in [&b"<html>"[..], b"{}", br#"{"models":{}}"#, b"\xff\xfe", b""] {
            assert_eq!(parse_held(EndpointType::Ollama, garbage), None);
        }
        assert_eq!(parse_held(EndpointType::LmStudio, ps), None, "wrong shape");
        assert_eq!(parse_held(EndpointType::Litellm, lm), None);
    }

    #[test]
    fn queue_depth_from_prometheus_text() {
        let vllm = b"# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
            # TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen/Qwen2.5-7B\"} 3.0\n\
            vllm:num_requests_waiting{engine=\"1\",model_name=\"a}b \\\"c\\\"\"} 4.4 1712345678000\n\
            vllm:num_requests_waiting_total 99\n\
            vllm:num_requests_running{engine=\"0\"} 7.0\n";
        assert_eq!(metric_total(vllm, "vllm:num_requests_waiting"), Some(7));
        assert_eq!(metric_total(vllm, "vllm:num_requests_running"), Some(7));
        let llama = b"# HELP llamacpp:requests_deferred Number of requests deferred.\r\n\
            # TYPE llamacpp:requests_deferred gauge\r\nllamacpp:requests_deferred 2\r\n";
        assert_eq!(metric_total(llama, "llamacpp:requests_deferred"), Some(2));
        assert_eq!(metric_total(llama, "vllm:num_requests_waiting"), None);
        // Untrusted numbers: clamped, and nonsense skipped.
        let hostile = b"q 1e300\nq -5\nq NaN\nq +Inf\nq abc\nq\nq{\nq{a=\"}\" 1\nq 2\n";
        assert_eq!(metric_total(hostile, "q"), Some(MAX_QUEUE));
        assert_eq!(metric_total(b"q -5\nq 2.6\n", "q"), Some(3));
        assert_eq!(metric_total(b"q NaN\nq{x=\"1\"}\n", "q"), None);
        assert_eq!(metric_total(b"\xff\xfeq 1\n\x00", "q"), None);
        assert_eq!(metric_total(b"q\t4\n", "q"), Some(4));
        assert_eq!(metric_total(b"q{x=\"a\\\\\"} 5\n", "q"), Some(5));
    }

    #[test]
    fn ringways_own_requests_are_not_counted_twice() {
        assert_eq!(others_waiting(10, 3), 7);
        assert_eq!(others_waiting(2, 5), 0);
        assert_eq!(others_waiting(0, 0), 0);
    }
}
