//! One shard's counts of Messages API requests (`/olla/anthropic/v1/messages`,
//! `/v1/messages`), for `/internal/stats/translators` and `ringway_anthropic_*`:
//! passthrough or translation, streamed or not, and why a request was translated.

use super::Counter;

/// How a Messages request was served, as `access::finish` records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessagesUse {
    pub(crate) passthrough: bool,
    pub(crate) stream: bool,
    /// Why it was translated.
    pub(crate) fallback: Option<Fallback>,
    pub(crate) ok: bool,
    pub(crate) latency_us: u64,
}

/// Why a Messages request was translated rather than passed through (Olla's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// No endpoint of the route was routable at all (the request then fails).
    NoCompatibleEndpoints = 0,
    /// None that serves the model speaks the API natively, or passthrough is off.
    CannotPassthrough = 1,
}

impl Fallback {
    pub(crate) const ALL: [Fallback; 2] =
        [Fallback::NoCompatibleEndpoints, Fallback::CannotPassthrough];

    /// Olla's name, as in `fallback_<name>` on its page.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fallback::NoCompatibleEndpoints => "no_compatible_endpoints",
            Fallback::CannotPassthrough => "cannot_passthrough",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TranslatorCounters {
    pub(crate) requests: Counter,
    pub(crate) successes: Counter,
    pub(crate) failures: Counter,
    pub(crate) passthrough: Counter,
    pub(crate) translation: Counter,
    pub(crate) streaming: Counter,
    pub(crate) non_streaming: Counter,
    pub(crate) fallbacks: [Counter; Fallback::ALL.len()],
    /// Sum of the requests' latencies, for the average.
    pub(crate) latency_us: Counter,
}

impl TranslatorCounters {
    pub(crate) fn record(&self, u: MessagesUse) {
        self.requests.bump();
        pick(u.ok, &self.successes, &self.failures).bump();
        pick(u.passthrough, &self.passthrough, &self.translation).bump();
        pick(u.stream, &self.streaming, &self.non_streaming).bump();
        if let Some(i) = u.fallback {
            self.fallbacks[i as usize].bump();
        }
        self.latency_us.add(u.latency_us);
    }
}

fn pick<'a>(yes: bool, a: &'a Counter, b: &'a Counter) -> &'a Counter {
    if yes { a } else { b }
}
