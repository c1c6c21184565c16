//! `/internal/stats/translators`, in Olla's shape: one translator, "anthropic" (the
//! Messages API), its requests by outcome, mode and streaming, the fallback reasons and
//! the average latency, with a summary over all (here: the one) translators.

use serde_json::{Value, json};

use super::format;
use crate::clock::unix_ms;
use crate::log::Timestamp;
use crate::metrics::translators::{Fallback, TranslatorCounters};
use crate::metrics::{Counter, Metrics};
use crate::shard::Shard;

/// The same counts in Prometheus text: `ringway_anthropic_requests_total` by mode,
/// streaming and outcome, `ringway_anthropic_fallbacks_total` by reason, and the
/// latency sum.
pub(super) fn prometheus(out: &mut String, m: &Metrics) {
    use std::fmt::Write;
    let a = |c: fn(&TranslatorCounters) -> &Counter| m.total(|s| c(&s.anthropic));
    let _ = writeln!(
        out,
        "# HELP ringway_anthropic_requests_total Messages API requests, by how they were served.\n\
         # TYPE ringway_anthropic_requests_total counter"
    );
    for (label, n) in [
        ("mode=\"passthrough\"", a(|c| &c.passthrough)),
        ("mode=\"translation\"", a(|c| &c.translation)),
        ("stream=\"true\"", a(|c| &c.streaming)),
        ("stream=\"false\"", a(|c| &c.non_streaming)),
        ("outcome=\"success\"", a(|c| &c.successes)),
        ("outcome=\"failure\"", a(|c| &c.failures)),
    ] {
        let _ = writeln!(out, "ringway_anthropic_requests_total{{{label}}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP ringway_anthropic_fallbacks_total Messages API requests translated, not passed through, by reason.\n\
         # TYPE ringway_anthropic_fallbacks_total counter"
    );
    for reason in Fallback::ALL {
        let n = m.total(|s| &s.anthropic.fallbacks[reason as usize]);
        let name = reason.name();
        let _ = writeln!(
            out,
            "ringway_anthropic_fallbacks_total{{reason=\"{name}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringway_anthropic_latency_seconds_sum Total time of Messages API requests.\n\
         # TYPE ringway_anthropic_latency_seconds_sum counter\n\
         ringway_anthropic_latency_seconds_sum {}",
        a(|c| &c.latency_us) as f64 / 1e6
    );
}

pub(super) fn page(shard: &Shard) -> Value {
    let m = &shard.metrics;
    let total =
        |c: fn(&TranslatorCounters) -> &crate::metrics::Counter| m.total(|s| c(&s.anthropic));
    let requests = total(|c| &c.requests);
    let successes = total(|c| &c.successes);
    let passthrough = total(|c| &c.passthrough);
    let translation = total(|c| &c.translation);
    let streaming = total(|c| &c.streaming);
    let non_streaming = total(|c| &c.non_streaming);
    let latency_us = total(|c| &c.latency_us);
    let rate = |n: u64| {
        let pct = if requests == 0 {
            0.0
        } else {
            n as f64 * 100.0 / requests as f64
        };
        format::percentage(pct)
    };
    let average_ms = latency_us.checked_div(requests).unwrap_or(0) / 1000;
    let mut entry = json!({
        "translator_name": "anthropic",
        "total_requests": requests,
        "successful_requests": successes,
        "failed_requests": total(|c| &c.failures),
        "success_rate": rate(successes),
        "passthrough_rate": rate(passthrough),
        "passthrough_requests": passthrough,
        "translation_requests": translation,
        "streaming_requests": streaming,
        "non_streaming_requests": non_streaming,
        "fallback_translator_does_not_support_passthrough": 0,
        "average_latency": format::latency(average_ms),
    });
    for reason in Fallback::ALL {
        let n = m.total(|s| &s.anthropic.fallbacks[reason as usize]);
        entry[format!("fallback_{}", reason.name())] = n.into();
    }
    json!({
        "timestamp": Timestamp(unix_ms()).to_string(),
        "translators": [entry],
        "summary": {
            "total_translators": 1,
            "active_translators": u64::from(requests > 0),
            "total_requests": requests,
            "overall_success_rate": rate(successes),
            "total_passthrough": passthrough,
            "total_translations": translation,
            "overall_passthrough_rate": rate(passthrough),
            "total_streaming": streaming,
            "total_non_streaming": non_streaming,
        },
    })
}
