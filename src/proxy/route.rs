//! The `route` phase: everything decided about a request before any endpoint is
//! contacted, in one synchronous function, [`route`]: which route its path takes, whether
//! it may (API key, loopback-only pages), and for a forwarded request the plan
//! the `attempt` phase carries out: the scope of endpoints, the model and the endpoints
//! serving it, the alias targets, the sticky key and its home.

use std::net::IpAddr;
use std::ops::Range;

use super::error::ProxyError;
use super::request::Request;
use crate::api;
use crate::auth;
use crate::config::Config;
use crate::endpoint_set::EndpointSet;
use crate::http1::{self, RequestHead};
use crate::routing::RoutingConfig;
use crate::routing::decision::{Action, Decision};
use crate::routing::groups::{self, Group};
use crate::routing::sticky::{self, KeyInputs, SessionKey};
use crate::routing::{Internal, Route, Scope};
use crate::upstream::Endpoint;
use crate::upstream::models::Catalog;
use messages::Messages;

pub(super) mod messages;

/// What to do with a request.
// Lives on the stack for one request; boxing the forward plan would allocate per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Plan<'c> {
    /// Answer with one of ringway's own pages.
    Page(Internal),
    /// Answer with an error.
    Refuse(ProxyError),
    Forward(Forward<'c>),
}

/// How a request is forwarded.
pub(super) struct Forward<'c> {
    pub(super) scope: Scope,
    /// Bytes of the target that the endpoint does not see (`/olla/<provider>`).
    pub(super) strip: usize,
    /// The body's `model`: its span in the body.
    pub(super) model: Option<Range<usize>>,
    /// The endpoints that serve the model; `None` when the body names none, or when
    /// the request falls back to any endpoint of the route.
    pub(super) serving: Option<EndpointSet>,
    /// How the model chose the endpoints; `None` when the body names no model.
    pub(super) decision: Option<Decision>,
    /// The model is an alias: what to send each endpoint instead.
    pub(super) alias: Option<Alias<'c>>,
    pub(super) key: Option<SessionKey>,
    /// The prefix group the conversation's endpoint is chosen in (with a key only).
    pub(super) group: Option<Group>,
    /// Endpoints known not to hold the model in memory: used only when no other is
    /// available.
    pub(super) cold: EndpointSet,
    /// The key's home: its best endpoint among all the route's, up or down.
    pub(super) home: Option<usize>,
    /// A Messages API request: passthrough or translation (`route/messages.rs`).
    pub(super) messages: Option<Messages>,
}

/// A model alias's targets, each with the endpoints that list it.
pub(super) struct Alias<'c> {
    targets: Vec<(&'c str, EndpointSet)>,
}

impl<'c> Alias<'c> {
    /// The name to send endpoint `ep`: the first target it lists, else the first.
    pub(super) fn target_for(&self, ep: usize) -> &'c str {
        let listed = self.targets.iter().find(|(_, on)| on.contains(ep));
        listed.unwrap_or(&self.targets[0]).0
    }
}

/// Which endpoints a request may go to: the route's scope, those serving its model, and
/// those routable at `now` (`clock::mono_ms`).
#[derive(Clone, Copy)]
pub(crate) struct Want {
    pub(crate) scope: Scope,
    pub(crate) serving: Option<EndpointSet>,
    pub(crate) now: u64,
}

impl Want {
    /// Whether `ep` may serve the request, which has already tried `tried`.
    #[inline]
    pub(crate) fn admits(&self, ep: &Endpoint, tried: &EndpointSet) -> bool {
        self.in_route(ep) && ep.health().is_routable(self.now) && !tried.contains(ep.index)
    }

    /// Whether `ep` is one of the route's endpoints, up or down.
    #[inline]
    pub(crate) fn in_route(&self, ep: &Endpoint) -> bool {
        self.scope.admits(ep.kind) && self.serving.is_none_or(|s| s.contains(ep.index))
    }
}

/// Routes `request` (its bytes in `buf`) from a client at `peer` (`peer_ip` formatted);
/// `route` is what `routing::classify` made of its target.
pub(super) fn route<'c>(
    config: &'c Config,
    catalog: &Catalog,
    endpoints: &[Endpoint],
    (peer, peer_ip): (IpAddr, &str),
    buf: &[u8],
    request: &Request,
    route: Route,
) -> Plan<'c> {
    let head = &request.head;
    let route = match route {
        Route::Internal(Internal::DebugPanic) if !config.server.debug_panic_route => {
            Route::NotFound
        }
        route => route,
    };
    let keys = &config.server.api_keys;
    let needs_key = match route {
        Route::Internal(page) => page.needs_key(),
        _ => true,
    };
    if needs_key && !keys.is_empty() && !auth::admits(keys, head, buf) {
        return Plan::Refuse(ProxyError::Unauthorized);
    }
    match route {
        Route::Forward { scope, strip } => {
            let body = request.body.bytes(buf);
            match plan_forward(config, catalog, endpoints, head, buf, body, peer_ip, scope) {
                Ok(plan) => Plan::Forward(Forward { strip, ..plan }),
                Err(e) => Plan::Refuse(e),
            }
        }
        // `[anthropic] enabled = false`: none of its routes.
        Route::Messages { .. }
        | Route::Internal(Internal::AnthropicModels | Internal::AnthropicCountTokens)
            if !config.anthropic.enabled =>
        {
            Plan::Refuse(ProxyError::NotFound)
        }
        Route::Messages { strip } => {
            let body = request.body.bytes(buf);
            let scope = Scope::OpenAi;
            let planned = plan_forward(config, catalog, endpoints, head, buf, body, peer_ip, scope)
                .and_then(|plan| {
                    let mut plan = Forward { strip, ..plan };
                    let now = crate::clock::now_ms();
                    plan.messages = Some(messages::plan(config, endpoints, body, &mut plan, now)?);
                    Ok(plan)
                });
            match planned {
                Ok(plan) => Plan::Forward(plan),
                Err(e) => Plan::Refuse(e),
            }
        }
        Route::Internal(Internal::AnthropicCountTokens)
            if config.anthropic.count_tokens_by_endpoint =>
        {
            let body = request.body.bytes(buf);
            let target = head.target.get(buf);
            let strip = if target.starts_with(b"/olla/anthropic/") {
                b"/olla/anthropic".len()
            } else {
                0
            };
            let scope = Scope::OpenAi;
            let planned = plan_forward(config, catalog, endpoints, head, buf, body, peer_ip, scope)
                .ok()
                .and_then(|plan| {
                    let mut plan = Forward { strip, ..plan };
                    let now = crate::clock::now_ms();
                    plan.messages = Some(messages::plan_count(endpoints, &mut plan, now)?);
                    Some(plan)
                });
            match planned {
                Some(plan) => Plan::Forward(plan),
                // Estimated here, as by default (a request it cannot read gets its 400).
                None => Plan::Page(Internal::AnthropicCountTokens),
            }
        }
        // Pages answer any method, as Olla's do (its router ignores the method).
        Route::Internal(page) => {
            let anywhere = config.server.internal_from_anywhere && page != Internal::Reload;
            if page.is_operator_page() && !anywhere && !peer.is_loopback() {
                Plan::Refuse(ProxyError::Forbidden)
            } else {
                Plan::Page(page)
            }
        }
        Route::UnknownProvider => Plan::Refuse(ProxyError::UnknownProvider),
        Route::NotFound => Plan::Refuse(ProxyError::NotFound),
    }
}

/// Where `model`, found in `body` by the scan, lies in it. The model goes into a
/// response header and the access log: one with a raw control byte (a CR or LF would
/// forge header or log lines; no valid JSON string holds one, but the scan does not
/// judge validity) is refused.
pub(crate) fn model_span(
    body: &[u8],
    model: Option<&[u8]>,
) -> Result<Option<Range<usize>>, ProxyError> {
    let Some(m) = model else {
        return Ok(None);
    };
    if !http1::is_field_text(m) {
        return Err(ProxyError::InvalidModel);
    }
    let start = m.as_ptr() as usize - body.as_ptr() as usize;
    Ok(Some(start..start + m.len()))
}

/// What the body says about forwarding it: its model and the endpoints serving it, and
/// its sticky key.
#[allow(clippy::too_many_arguments)]
fn plan_forward<'c>(
    config: &'c Config,
    catalog: &Catalog,
    endpoints: &[Endpoint],
    head: &RequestHead,
    buf: &[u8],
    body: &[u8],
    peer_ip: &str,
    scope: Scope,
) -> Result<Forward<'c>, ProxyError> {
    let sticky = &config.sticky;
    let facts = if body.is_empty() {
        api::RequestFacts::default()
    } else if !sticky.enabled {
        // Only the model matters: the conversation is not read, let alone hashed.
        api::RequestFacts {
            model: api::model(body),
            ..Default::default()
        }
    } else {
        api::inspect(
            body,
            sticky.prompt_prefix_bytes,
            config.prefix_groups.user_prefix_bytes,
        )
    };
    let model = model_span(body, facts.model)?;
    let key = if sticky.enabled {
        let inputs = KeyInputs {
            session_id: head.session_id.map(|s| s.get(buf)),
            facts: &facts,
            authorization: head.authorization.map(|s| s.get(buf)),
            client_ip: peer_ip,
        };
        sticky::derive_key(&sticky.key_sources, &inputs)
    } else {
        None
    };
    let routing = config.routing;
    let (serving, alias, decision) = match facts.model {
        Some(name) => {
            let aliases = &config.model_aliases;
            match resolve_model(catalog, aliases, endpoints, scope, name, routing) {
                Ok((serving, alias)) => {
                    let alias = alias.map(|targets| Alias {
                        targets: targets
                            .iter()
                            .map(|t| (t.as_str(), catalog.listing(t.as_bytes())))
                            .collect(),
                    });
                    let fallback = Decision::missing(routing, true);
                    if fallback.action() == Action::Fallback
                        && !any_routable(endpoints, scope, serving, crate::clock::now_ms())
                    {
                        (None, None, Some(fallback))
                    } else {
                        (Some(serving), alias, Some(Decision::found(routing)))
                    }
                }
                Err(ProxyError::ModelNotFound { decision, .. })
                    if decision.action() == Action::Fallback =>
                {
                    (None, None, Some(decision))
                }
                Err(e) => return Err(e),
            }
        }
        None => (None, None, None),
    };
    let group = key.and(Group::of(&config.prefix_groups, facts.shared));
    let cold = facts.model.map(|m| catalog.cold(m)).unwrap_or_default();
    let mut plan = Forward {
        scope,
        strip: 0,
        model,
        serving,
        decision,
        alias,
        key,
        group,
        cold,
        home: None,
        messages: None,
    };
    plan.home = home(&plan, endpoints);
    Ok(plan)
}

/// The key's home: where it goes with every endpoint of the route up and idle.
pub(super) fn home(plan: &Forward<'_>, endpoints: &[Endpoint]) -> Option<usize> {
    let route = Want {
        scope: plan.scope,
        serving: plan.serving,
        now: 0,
    };
    let in_route = |i: usize| route.in_route(&endpoints[i]);
    let key = plan.key?;
    match plan.group {
        Some(group) => groups::place(group, key.hash, endpoints, in_route, 0.0).map(|(i, _)| i),
        None => sticky::rendezvous(key.hash, endpoints, in_route, 0.0),
    }
}

/// Whether an endpoint of the route that serves the model is routable at `now`.
fn any_routable(endpoints: &[Endpoint], scope: Scope, serving: EndpointSet, now: u64) -> bool {
    endpoints.iter().any(|ep| {
        serving.contains(ep.index) && scope.admits(ep.kind) && ep.health().is_routable(now)
    })
}

/// The endpoints that can serve `model` (through an alias if it is one: its targets),
/// or why none can (with the decision of the `routing` strategy: a model no endpoint
/// lists may fall back to any endpoint).
pub(crate) fn resolve_model<'c>(
    catalog: &Catalog,
    aliases: &'c [(String, Vec<String>)],
    endpoints: &[Endpoint],
    scope: Scope,
    model: &[u8],
    routing: RoutingConfig,
) -> Result<(EndpointSet, Option<&'c [String]>), ProxyError> {
    let alias = aliases
        .iter()
        .find(|(alias, _)| alias.as_bytes() == model)
        .map(|(_, targets)| targets.as_slice());
    let serving = match alias {
        Some(targets) => targets.iter().fold(EndpointSet::default(), |set, t| {
            set.union(catalog.serving(t.as_bytes()))
        }),
        None => catalog.serving(model),
    };
    if serving.is_empty() {
        return Err(ProxyError::ModelNotFound {
            model: String::from_utf8_lossy(model).into_owned(),
            decision: Decision::missing(routing, false),
        });
    }
    if !endpoints
        .iter()
        .any(|ep| serving.contains(ep.index) && scope.admits(ep.kind))
    {
        // Served, but not by the kind of endpoint this route goes to.
        return Err(ProxyError::NoEndpoint {
            scope,
            decision: Some(Decision::missing(routing, true)),
        });
    }
    Ok((serving, alias))
}
