//! Recent events for the dashboard (`/internal/ui/`): endpoints going down and coming
//! back, breakers opening, model lists that cannot be read, start-up warnings, and (once
//! config reload exists) reloads and the config errors that refused one. Off the request
//! path entirely: only the control thread and start-up code write, on rare events; a shard
//! reads the ring when it renders the dashboard's data, about once a second per open page.
//!
//! A `std::sync::Mutex` guards the ring. Nothing on a shard can wait on it for long: a
//! writer holds it for one push into a preallocated ring (the text is formatted before
//! locking), a reader for copying at most [`CAPACITY`] short entries, and no one holds it
//! across an `.await` or any I/O.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::clock::unix_ms;

/// Events kept; older ones are forgotten first.
pub(crate) const CAPACITY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The process started serving.
    Started,
    /// An endpoint left rotation: a failed health check, or a request that could not
    /// connect (passive detection, noticed by the control thread within ~20 ms).
    EndpointDown,
    /// An endpoint passed its checks again.
    EndpointUp,
    /// Requests failed `breaker_threshold` times in a row: the endpoint is skipped for
    /// its cool-down.
    BreakerOpen,
    /// An endpoint's model list could not be read.
    ModelsUnreadable,
    /// A warning at start-up (driver fallback, pinning, file limits).
    Warning,
    /// The hook for config reload (SIGHUP), which does not exist yet: the reload code
    /// records `Reloaded` when a new config is in force, `ConfigError` when the new file
    /// was refused (and the running config kept).
    #[allow(dead_code)]
    Reloaded,
    #[allow(dead_code)]
    ConfigError,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::EndpointDown => "endpoint_down",
            Kind::EndpointUp => "endpoint_up",
            Kind::BreakerOpen => "breaker_open",
            Kind::ModelsUnreadable => "models_unreadable",
            Kind::Warning => "warning",
            Kind::Reloaded => "reloaded",
            Kind::ConfigError => "config_error",
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) at_unix_ms: u64,
    pub(crate) kind: Kind,
    /// The endpoint's name, when the event is about one.
    pub(crate) endpoint: Option<Box<str>>,
    pub(crate) text: Box<str>,
}

/// The ring of recent events, shared by the control thread (writer) and the shards
/// (readers).
#[derive(Debug)]
pub(crate) struct Events {
    ring: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            ring: Mutex::new(VecDeque::with_capacity(CAPACITY)),
        }
    }
}

impl Events {
    /// Records an event now. Never call it on the request path.
    pub(crate) fn record(&self, kind: Kind, endpoint: Option<&str>, text: impl Into<Box<str>>) {
        let event = Event {
            at_unix_ms: unix_ms(),
            kind,
            endpoint: endpoint.map(Into::into),
            text: text.into(),
        };
        // A writer that panicked mid-push left a ring that is still a valid ring.
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The events kept, newest first.
    pub(crate) fn recent(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_first_and_forgets_the_oldest() {
        let events = Events::default();
        for i in 0..CAPACITY + 3 {
            events.record(Kind::EndpointDown, Some("ep"), format!("e{i}"));
        }
        let recent = events.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(&*recent[0].text, format!("e{}", CAPACITY + 2));
        assert_eq!(&*recent[CAPACITY - 1].text, "e3");
    }
}
