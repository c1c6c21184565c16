//! The request path: one task per client connection on the shard that accepted it,
//! serving its requests one after another (keep-alive, pipelining), each through the
//! same phases, each phase a file:
//!
//! ```text
//!  connection ── request ── route ─┬─ page (admin.rs) or refusal ─────────────┐
//!  keep-alive,   head and   plan:  │                                          │
//!  one deadline  body,      scope, └─ attempt ──────────────► relay ──────────┤
//!  per exchange  bounded    model,    pick → connect/pool →   response head,  │
//!                           keys      forward → exchange;     body chunk by   │
//!                                     retry policy: another   chunk as it     │
//!                                     endpoint while nothing  arrives         │
//!                                     reached the client                      ▼
//!                                                               access: the one exit,
//!                                                               log line + metrics
//! ```
//!
//! With `[cors]` or `[rate_limits]` on, an `admission` step comes between request and
//! route: it answers CORS preflights, takes rate-limit tokens (429 beyond a limit), and
//! writes the lines every answer to the request carries; `attempt` takes the endpoint's
//! token when endpoints are limited.
//!
//! Anthropic's Messages API takes the same phases: `route/messages.rs` decides, once the
//! model's endpoints are known, between passthrough (to endpoints that speak it, the body
//! unchanged) and translation (the body becomes an OpenAI chat request), and
//! `relay/translated.rs` translates a translated request's answer back, event by event.
//!
//! `attempt` heeds backends' pushback (`backpressure.rs`: a 429 or 503 with
//! `Retry-After` keeps an endpoint out of placement for that long, on every shard).
//!
//! `heads.rs` writes every head (to the client, to the endpoint, ringway's own answers);
//! `error.rs` maps every failure to its status and body in one place. A connection's
//! state lasts across its requests (`connection::Client`: stream, peer, buffers); a
//! request's state is made fresh for each request (`request::Request`,
//! `access::Record`), so nothing is reset by hand.

mod access;
mod admission;
mod attempt;
mod backpressure;
mod client;
mod connection;
pub(crate) mod error;
mod heads;
mod relay;
mod request;
mod route;

pub(crate) use connection::{refuse_connection, serve_connection};
#[cfg(any(feature = "bench", feature = "fuzzing"))]
pub(crate) use heads::{UpstreamTarget, upstream_head};
#[cfg(feature = "fuzzing")]
pub(crate) use {
    access::{RequestId, StickyReport},
    client::OwnLines,
    heads::{
        Answering, PASSTHROUGH_LINE, Reframe, Routing, own_head, placement_line, response_head,
    },
    route::model_span,
};
#[cfg(feature = "bench")]
pub(crate) use {
    attempt::{Placement, select_backend},
    route::{Want, resolve_model},
};
