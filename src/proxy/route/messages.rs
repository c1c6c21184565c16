//! The Messages API's part of the `route` phase (`/v1/messages`,
//! `/olla/anthropic/v1/messages`): once the model's endpoints are known, whether the
//! request passes through unchanged to those that speak the API natively, or is
//! translated for the OpenAI-compatible rest, as Olla decides:
//!
//! - **passthrough** when `anthropic.passthrough` is on and an endpoint serving the model
//!   with `anthropic = "native"` is routable: the request goes, as received, to those
//!   endpoints only (retries and failover stay among them) and the answer comes back
//!   with `X-Olla-Mode: passthrough`;
//! - **translation** otherwise: the body becomes an OpenAI chat request
//!   (`api::anthropic::request`), sent to `/v1/chat/completions` on any endpoint serving
//!   the model; the `relay` phase translates the answer back (`relay::translated`).
//!
//! Model routing, aliases and sticky keys were decided on the Anthropic body before this
//! step, exactly as for an OpenAI request.

use super::{Forward, Want};
use crate::api;
use crate::api::anthropic::request::{self, Options, Translated};
use crate::config::Config;
use crate::endpoint_set::EndpointSet;
use crate::metrics::translators::Fallback;
use crate::proxy::error::ProxyError;
use crate::upstream::Endpoint;

/// How a Messages request is served.
#[derive(Debug)]
pub(in crate::proxy) enum Mode {
    Passthrough,
    Translation {
        translated: Translated,
        /// Why not passthrough.
        fallback: Fallback,
    },
}

/// A Messages request's plan, beside its [`Forward`].
#[derive(Debug)]
pub(in crate::proxy) struct Messages {
    pub(in crate::proxy) mode: Mode,
    /// The translated body, until the connection puts it in place of the client's.
    pub(in crate::proxy) body: Option<Vec<u8>>,
}

/// The path a translated request takes on the endpoint (after its OpenAI prefix).
pub(in crate::proxy) const CHAT_PATH: &[u8] = b"/v1/chat/completions";

impl Messages {
    /// Where the request goes on the endpoint instead of the client's target: for a
    /// translation, the chat API.
    pub(in crate::proxy) fn upstream_path(&self) -> Option<&'static [u8]> {
        match self.mode {
            Mode::Passthrough => None,
            Mode::Translation { .. } => Some(CHAT_PATH),
        }
    }

    pub(in crate::proxy) fn translated(&self) -> Option<&Translated> {
        match &self.mode {
            Mode::Passthrough => None,
            Mode::Translation { translated, .. } => Some(translated),
        }
    }
}

/// Plans a `.../count_tokens` request (planned on its body as `forward`) for a native
/// endpoint that counts tokens itself (`anthropic.count_tokens = "endpoint"`): `None`
/// when none serving the model is available, and ringway estimates the count.
pub(in crate::proxy) fn plan_count(
    endpoints: &[Endpoint],
    forward: &mut Forward<'_>,
    now: u64,
) -> Option<Messages> {
    let route = Want {
        scope: forward.scope,
        serving: forward.serving,
        now,
    };
    let mut counting = EndpointSet::default();
    let mut up = false;
    for ep in endpoints.iter().filter(|ep| route.in_route(ep)) {
        if ep.anthropic_native && ep.kind.counts_anthropic_tokens() {
            counting.insert(ep.index);
            up |= ep.health().is_routable(now);
        }
    }
    up.then(|| {
        forward.serving = Some(counting);
        forward.key = None;
        forward.home = None;
        Messages {
            mode: Mode::Passthrough,
            body: None,
        }
    })
}

/// Decides passthrough or translation for `forward` (planned on the Anthropic `body`),
/// narrowing it to the native endpoints, or translating the body, as the mode needs.
/// `now` is `clock::now_ms()`.
pub(in crate::proxy) fn plan(
    config: &Config,
    endpoints: &[Endpoint],
    body: &[u8],
    forward: &mut Forward<'_>,
    now: u64,
) -> Result<Messages, ProxyError> {
    let route = Want {
        scope: forward.scope,
        serving: forward.serving,
        now,
    };
    let mut native = EndpointSet::default();
    let (mut native_up, mut any_up) = (false, false);
    for ep in endpoints.iter().filter(|ep| route.in_route(ep)) {
        let up = ep.health().is_routable(now);
        any_up |= up;
        if ep.anthropic_native {
            native.insert(ep.index);
            native_up |= up;
        }
    }
    if config.anthropic.passthrough && native_up {
        forward.serving = Some(native);
        // The key's home among the endpoints it may now go to.
        forward.home = super::home(forward, endpoints);
        return Ok(Messages {
            mode: Mode::Passthrough,
            body: None,
        });
    }
    let fallback = if any_up {
        Fallback::CannotPassthrough
    } else {
        Fallback::NoCompatibleEndpoints
    };
    // `top_k` only when every endpoint it may go to takes it.
    let opts = Options {
        top_k: endpoints
            .iter()
            .filter(|ep| route.in_route(ep))
            .all(|ep| Options::for_endpoint(ep.kind).top_k),
        ..Options::default()
    };
    let mut out = Vec::with_capacity(body.len() + 256);
    let translated = request::to_openai(body, &opts, &mut out).map_err(ProxyError::Messages)?;
    // The model's span in the body as sent (an alias is rewritten there, per endpoint).
    forward.model = super::model_span(&out, api::model(&out))?;
    Ok(Messages {
        mode: Mode::Translation {
            translated,
            fallback,
        },
        body: Some(out),
    })
}
