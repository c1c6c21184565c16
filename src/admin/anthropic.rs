//! The two Anthropic pages ringway answers itself, from the catalogue and the request,
//! without an endpoint: `/olla/anthropic/v1/models` (Anthropic's list shape) and
//! `.../v1/messages/count_tokens` (an estimate, as Olla makes it). The Messages API
//! itself is forwarded (`proxy/route/messages.rs`).

use http::StatusCode;

use crate::api::anthropic::{self, count};
use crate::clock;
use crate::routing::Scope;
use crate::shard::Shard;

/// The models of the available endpoints, Anthropic's list shape; `created_at` is when
/// the process started, as in Olla.
pub(super) fn models(shard: &Shard) -> Vec<u8> {
    let models = super::merged(shard, Scope::OpenAi);
    let started = clock::unix_ms().saturating_sub(clock::now_ms()) / 1000;
    let mut out = Vec::with_capacity(64 + 96 * models.len());
    let names = models.iter().map(|(name, _, _)| name.as_str());
    anthropic::models_list(names, &anthropic::rfc3339(started), &mut out);
    out
}

/// `{"input_tokens":N}`, or 400 with an Anthropic error body for a body that is not a
/// Messages request.
pub(super) fn count_tokens(body: &[u8]) -> (StatusCode, Vec<u8>) {
    let mut out = Vec::with_capacity(32);
    match count::count_tokens(body, &mut out) {
        Ok(_) => (StatusCode::OK, out),
        Err(e) => {
            out.clear();
            e.write_body(None, &mut out);
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, out)
        }
    }
}
