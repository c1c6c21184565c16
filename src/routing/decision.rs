//! The model routing decision, part of `route`: for a request that names a model, which
//! strategy chose its endpoints and how (Olla's `X-Olla-Routing-Strategy`, `-Decision`
//! and `-Reason`, with Olla's values), sent on the answer whether it was routed,
//! fell back or was rejected. Requests without a model get none of the three, as in
//! Olla.

use super::{Fallback, RoutingConfig, Strategy};

/// Why the endpoints were (or could not be) chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Endpoints listing the model are routable.
    ModelFound,
    /// As `ModelFound`, for the discovery strategy (which did not need to refresh).
    ModelFoundNoRefresh,
    /// No endpoint lists the model; `fallback = "all"` sent it to any routable one.
    ModelNotFoundFallback,
    /// Only unroutable endpoints list it; `fallback = "all"` sent it to any routable one.
    AllHealthyFallback,
    /// No endpoint lists the model: 404.
    ModelNotFound,
    /// Only unroutable endpoints list it: 503 (the reason names the fallback that
    /// refused).
    ModelUnavailable,
    ModelUnavailableCompatibleOnly,
    ModelUnavailableNoFallback,
    ModelUnavailableNoRefresh,
}

/// Whether the request went to the model's endpoints, to others, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Routed,
    Fallback,
    Rejected,
}

/// A decision: the strategy that made it and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) strategy: Strategy,
    pub(crate) reason: Reason,
}

impl Decision {
    /// The decision for a model that routable endpoints serve.
    pub(crate) fn found(routing: RoutingConfig) -> Decision {
        let reason = match routing.strategy {
            Strategy::Discovery => Reason::ModelFoundNoRefresh,
            _ => Reason::ModelFound,
        };
        Decision {
            strategy: routing.strategy,
            reason,
        }
    }

    /// For a model no endpoint lists (`listed` false) or only unroutable ones do: the
    /// fallback to any routable endpoint when the configuration allows it, else the
    /// rejection.
    pub(crate) fn missing(routing: RoutingConfig, listed: bool) -> Decision {
        let falls_back = routing.strategy != Strategy::Strict && routing.fallback == Fallback::All;
        let reason = match (falls_back, listed) {
            (true, false) => Reason::ModelNotFoundFallback,
            (true, true) => Reason::AllHealthyFallback,
            (false, false) => Reason::ModelNotFound,
            (false, true) => match (routing.strategy, routing.fallback) {
                (Strategy::Strict, _) => Reason::ModelUnavailable,
                (Strategy::Discovery, _) => Reason::ModelUnavailableNoRefresh,
                (_, Fallback::None) => Reason::ModelUnavailableNoFallback,
                _ => Reason::ModelUnavailableCompatibleOnly,
            },
        };
        Decision {
            strategy: routing.strategy,
            reason,
        }
    }

    pub(crate) fn action(self) -> Action {
        match self.reason {
            Reason::ModelFound | Reason::ModelFoundNoRefresh => Action::Routed,
            Reason::ModelNotFoundFallback | Reason::AllHealthyFallback => Action::Fallback,
            _ => Action::Rejected,
        }
    }

    /// Appends the three header lines.
    pub(crate) fn push_headers(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"X-Olla-Routing-Strategy: ");
        out.extend_from_slice(self.strategy.name().as_bytes());
        out.extend_from_slice(match self.action() {
            Action::Routed => b"\r\nX-Olla-Routing-Decision: routed\r\nX-Olla-Routing-Reason: ",
            Action::Fallback => b"\r\nX-Olla-Routing-Decision: fallback\r\nX-Olla-Routing-Reason: ",
            Action::Rejected => b"\r\nX-Olla-Routing-Decision: rejected\r\nX-Olla-Routing-Reason: ",
        });
        out.extend_from_slice(self.reason.name().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl Reason {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reason::ModelFound => "model_found",
            Reason::ModelFoundNoRefresh => "model_found_no_refresh",
            Reason::ModelNotFoundFallback => "model_not_found_fallback",
            Reason::AllHealthyFallback => "all_healthy_fallback",
            Reason::ModelNotFound => "model_not_found",
            Reason::ModelUnavailable => "model_unavailable",
            Reason::ModelUnavailableCompatibleOnly => "model_unavailable_compatible_only",
            Reason::ModelUnavailableNoFallback => "model_unavailable_no_fallback",
            Reason::ModelUnavailableNoRefresh => "model_unavailable_no_refresh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(strategy: Strategy, fallback: Fallback) -> RoutingConfig {
        RoutingConfig { strategy, fallback }
    }

    fn shown(d: Decision) -> String {
        let mut out = Vec::new();
        d.push_headers(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn olla_s_values() {
        let strict = cfg(Strategy::Strict, Fallback::CompatibleOnly);
        assert_eq!(
            shown(Decision::found(strict)),
            "X-Olla-Routing-Strategy: strict\r\nX-Olla-Routing-Decision: routed\r\nX-Olla-Routing-Reason: model_found\r\n"
        );
        let cases = [
            (strict, false, Action::Rejected, "model_not_found"),
            (strict, true, Action::Rejected, "model_unavailable"),
            (
                cfg(Strategy::Strict, Fallback::All),
                true,
                Action::Rejected,
                "model_unavailable",
            ),
            (
                cfg(Strategy::Optimistic, Fallback::CompatibleOnly),
                true,
                Action::Rejected,
                "model_unavailable_compatible_only",
            ),
            (
                cfg(Strategy::Optimistic, Fallback::None),
                true,
                Action::Rejected,
                "model_unavailable_no_fallback",
            ),
            (
                cfg(Strategy::Optimistic, Fallback::All),
                false,
                Action::Fallback,
                "model_not_found_fallback",
            ),
            (
                cfg(Strategy::Optimistic, Fallback::All),
                true,
                Action::Fallback,
                "all_healthy_fallback",
            ),
            (
                cfg(Strategy::Discovery, Fallback::CompatibleOnly),
                true,
                Action::Rejected,
                "model_unavailable_no_refresh",
            ),
        ];
        for (routing, listed, action, reason) in cases {
            let d = Decision::missing(routing, listed);
            assert_eq!(
                (d.action(), d.reason.name()),
                (action, reason),
                "{routing:?} {listed}"
            );
        }
        assert_eq!(
            Decision::found(cfg(Strategy::Discovery, Fallback::All))
                .reason
                .name(),
            "model_found_no_refresh"
        );
    }
}
