//! The one exit of every request: what became of it ([`Record`], filled in by the
//! phases) turned into the access-log line and the metrics, in [`finish`], whether the
//! request was relayed, answered by ringway or refused while it was read. Also the
//! request id every response carries.

use std::ops::Range;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use super::client::Client;
use crate::clock::{mono_ms, unix_ms};
use crate::http1::{RequestHead, Span};
use crate::live::Live;
use crate::log::{AccessFormat, Timestamp};
use crate::metrics::models::{self, ModelRequest, Routed};
use crate::metrics::translators::MessagesUse;
use crate::routing::KeySource;
use crate::routing::sticky::Outcome;
use crate::shard::Shard;

/// What became of one request. Made fresh for every request.
pub(super) struct Record {
    pub(super) id: RequestId,
    /// The answer's status; `None` when nothing could be answered.
    pub(super) status: Option<u16>,
    /// Set when an endpoint's response was relayed.
    pub(super) served: Option<Served>,
    /// ringway answered with an error of its own.
    pub(super) own_error: bool,
    /// One of ringway's pages: counted, not logged.
    pub(super) page: bool,
    /// The client went away before its answer was complete.
    pub(super) client_gone: bool,
    /// Bytes of the response written to the client.
    pub(super) bytes: u64,
    /// A request for a model that no endpoint served (every attempt failed): the
    /// model's span in the body, for its per-model failure count.
    pub(super) unserved_model: Option<Range<usize>>,
    /// A request on one of the Anthropic routes: errors take Anthropic's shape.
    pub(super) anthropic: bool,
    /// A Messages API request: how it was served (`ok`: its answer was complete; `finish`
    /// adds the status and the latency).
    pub(super) messages: Option<MessagesUse>,
}

/// How an endpoint served a request.
pub(super) struct Served {
    pub(super) endpoint: usize,
    /// The model sent to the endpoint: its span in the body as sent.
    pub(super) model: Option<Range<usize>>,
    /// From the request's head being read to the endpoint's response head.
    pub(super) ttfb: Duration,
    /// Endpoints tried, this one included.
    pub(super) attempts: usize,
    pub(super) sticky: StickyReport,
}

/// The sticky-session headers of a response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StickyReport {
    pub(crate) outcome: Outcome,
    pub(crate) source: Option<KeySource>,
    /// The prefix group placement went through: its key and the size it had.
    pub(crate) group: Option<(u64, usize)>,
}

impl Record {
    pub(super) fn new(id: RequestId) -> Record {
        Record {
            id,
            status: None,
            served: None,
            own_error: false,
            page: false,
            client_gone: false,
            bytes: 0,
            unserved_model: None,
            anthropic: false,
            messages: None,
        }
    }
}

/// What `finish` knows of the request itself: its head if one was read, its body (as
/// sent to the endpoint) and when it started.
pub(super) struct Seen<'a> {
    pub(super) head: Option<&'a RequestHead>,
    pub(super) body: &'a [u8],
    pub(super) started: Instant,
}

/// Writes the request's metrics and access-log line. `now` is when it ended.
pub(super) fn finish(
    shard: &Shard,
    live: &Live,
    client: &Client,
    seen: &Seen<'_>,
    record: &Record,
    now: Instant,
) {
    let counters = shard.counters();
    let duration = now.saturating_duration_since(seen.started);
    if seen.head.is_some() {
        counters.requests.bump();
    }
    if record.client_gone {
        counters.client_aborts.bump();
    }
    if let (true, Some(status)) = (record.own_error, record.status) {
        counters.own_errors[usize::from(status >= 500)].bump();
    }
    if let (Some(served), Some(status)) = (&record.served, record.status) {
        let ep = live.upstreams.endpoints[served.endpoint]
            .metrics()
            .shard(shard.id);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        ep.responses[class].bump();
        ep.ttfb.observe(served.ttfb);
        ep.duration.observe(duration);
        if served.attempts > 1 {
            counters.failovers.bump();
        }
        let sticky = served.sticky;
        match sticky.outcome {
            Outcome::Hit => counters.sticky_hits.bump(),
            Outcome::Miss => counters.sticky_misses.bump(),
            Outcome::Repin => counters.sticky_repins.bump(),
            Outcome::Disabled if live.config.sticky.enabled => counters.sticky_no_key.bump(),
            Outcome::Disabled => {}
        }
        if let Some(source) = sticky.source {
            counters.sticky_by_source[source as usize].bump();
        }
    }
    if let Some(messages) = record.messages {
        let ok = messages.ok && record.status.is_some_and(|s| s < 400);
        counters.anthropic.record(MessagesUse {
            ok,
            latency_us: duration.as_micros() as u64,
            ..messages
        });
    }
    model_stats(shard, live, client, seen, record, duration, now);
    if let Some(log) = shard.access_log.as_deref().filter(|_| !record.page) {
        log.write(line(live, client, seen, record, log.format, now));
    }
}

/// The per-model statistics of a request naming a model that an endpoint served, or
/// that failed on every endpoint tried (ringway's own 5xx).
fn model_stats(
    shard: &Shard,
    live: &Live,
    client: &Client,
    seen: &Seen<'_>,
    record: &Record,
    duration: Duration,
    now: Instant,
) {
    let Some(status) = record.status else { return };
    let (span, served) = match (&record.served, &record.unserved_model) {
        (Some(served), _) => (served.model.clone(), Some(served)),
        (None, Some(span)) if status >= 500 => (Some(span.clone()), None),
        _ => return,
    };
    let Some(model) = span.and_then(|m| seen.body.get(m)) else {
        return;
    };
    let hash = xxh3_64(model);
    // Hits, misses and fallbacks as Olla names them: each served request is one.
    let served = served.map(|s| {
        // The catalogue of the request's generation (a shard that took a newer one
        // since cannot say whether it was listed: counted as listed).
        let catalog = shard.catalog();
        let unlisted =
            catalog.generation == live.generation && !catalog.lists(hash, model, s.endpoint);
        let routed = if unlisted {
            Routed::Fallback
        } else if s.attempts > 1 {
            Routed::Miss
        } else {
            Routed::Hit
        };
        (live.upstreams.endpoints[s.endpoint].uid(), routed)
    });
    let outcome = ModelRequest {
        class: served.map(|_| usize::from(status / 100).clamp(1, 5) - 1),
        served,
        ok: served.is_some() && status < 500,
        bytes: record.bytes,
        latency_us: duration.as_micros() as u64,
        client: models::client_hash(client.peer.ip()),
        at_ms: mono_ms(now),
    };
    shard.counters().models.record(hash, model, &outcome);
}

/// The access-log line of a request.
fn line(
    live: &Live,
    client: &Client,
    seen: &Seen<'_>,
    record: &Record,
    format: AccessFormat,
    now: Instant,
) -> String {
    let buf = &client.conn.buf;
    let text = |span: Option<Span>| {
        let bytes = span.and_then(|s| buf.get(s.range())).unwrap_or(b"-");
        match format {
            AccessFormat::Text => escaped(bytes),
            AccessFormat::Json => String::from_utf8_lossy(bytes).into_owned(),
        }
    };
    let (method, path) = (
        text(seen.head.map(|h| h.method)),
        text(seen.head.map(|h| h.target)),
    );
    let served = record.served.as_ref();
    let model = served
        .and_then(|s| s.model.clone())
        .and_then(|m| seen.body.get(m))
        .map(|m| match format {
            AccessFormat::Text => escaped(m),
            AccessFormat::Json => String::from_utf8_lossy(m).into_owned(),
        });
    let endpoint = served.map(|s| &*live.upstreams.endpoints[s.endpoint].name);
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let total = ms(now.saturating_duration_since(seen.started));
    let ttfb = served.map(|s| ms(s.ttfb));
    let attempts = served.map_or(0, |s| s.attempts);
    let sticky = served.map(|s| s.sticky.outcome.name());
    // nginx's "client closed request" when nothing could be answered.
    let status = record.status.unwrap_or(499);
    let time = Timestamp(unix_ms()).to_string();
    let id = record.id.show(buf);
    match format {
        AccessFormat::Json => {
            let line = serde_json::json!({
                "time": time,
                "request_id": id,
                "client": client.peer_ip,
                "method": method,
                "path": path,
                "model": model,
                "endpoint": endpoint,
                "status": status,
                "bytes": record.bytes,
                "ms": total,
                "ttfb_ms": ttfb,
                "attempts": attempts,
                "sticky": sticky,
            });
            line.to_string() + "\n"
        }
        AccessFormat::Text => format!(
            "{time} {id} {} \"{method} {path}\" {status} {} endpoint={} model={} ms={total} ttfb_ms={} attempts={attempts} sticky={}\n",
            client.peer_ip,
            record.bytes,
            endpoint.unwrap_or("-"),
            model.as_deref().unwrap_or("-"),
            ttfb.map_or("-".into(), |t| t.to_string()),
            sticky.unwrap_or("-"),
        ),
    }
}

/// A field of a text access line: printable ASCII but `"` and `\` as it is, every other
/// byte (space, controls, DEL, non-ASCII) as `\xHH`, as nginx writes its log. No value
/// from a request can end the line or forge a field. (The JSON format escapes with
/// JSON's rules.)
fn escaped(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// `X-Olla-Request-ID`: the client's `X-Request-ID` when it is sane (1-128 printable
/// characters), otherwise generated: process tag, shard, per-shard sequence number. A
/// given id stays where it was received (the request's head).
pub(crate) enum RequestId {
    Given(Span),
    Generated([u8; 20]),
}

impl RequestId {
    pub(super) fn for_request(shard: &Shard, head: &RequestHead, buf: &[u8]) -> RequestId {
        RequestId::given(head, buf).unwrap_or_else(|| RequestId::generate(shard))
    }

    /// The client's id, when it is sane.
    pub(crate) fn given(head: &RequestHead, buf: &[u8]) -> Option<RequestId> {
        let span = head.request_id?;
        let given = span.get(buf);
        let sane =
            !given.is_empty() && given.len() <= 128 && given.iter().all(u8::is_ascii_graphic);
        sane.then_some(RequestId::Given(span))
    }

    pub(super) fn generate(shard: &Shard) -> RequestId {
        let seq = shard.next_request.get();
        shard.next_request.set(seq + 1);
        let mut text = [0u8; 20];
        let hex = |out: &mut [u8], v: u64| {
            let width = out.len();
            for (i, b) in out.iter_mut().enumerate() {
                *b = b"0123456789abcdef"[(v >> ((width - 1 - i) * 4)) as usize & 0xf];
            }
        };
        hex(&mut text[..8], u64::from(shard.process_tag));
        hex(&mut text[8..10], shard.id as u64);
        hex(&mut text[10..], seq);
        RequestId::Generated(text)
    }

    /// The id; `buf` is the client connection's buffer, which holds a given one.
    pub(crate) fn as_bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            RequestId::Given(span) => span.get(buf),
            RequestId::Generated(text) => text,
        }
    }

    /// The id as text, for logs.
    pub(super) fn show(&self, buf: &[u8]) -> String {
        String::from_utf8_lossy(self.as_bytes(buf)).into_owned()
    }
}
