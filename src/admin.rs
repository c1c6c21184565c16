//! Pages ringway answers itself (the `Route::Internal` branch of `route`): liveness and
//! version. Operator status pages grow here.

use http::StatusCode;

use crate::routing::Internal;
use crate::runtime::Shard;

/// Status and JSON body of an internal page.
pub(crate) fn render(page: Internal, shard: &Shard) -> (StatusCode, Vec<u8>) {
    let body = match page {
        // Liveness only: the process is up and this shard answers.
        Internal::Health => serde_json::json!({ "status": "healthy" }),
        Internal::Version => serde_json::json!({
            "name": "ringway",
            "version": env!("CARGO_PKG_VERSION"),
            "driver": shard.driver,
        }),
    };
    (
        StatusCode::OK,
        serde_json::to_vec(&body).expect("a JSON value serializes"),
    )
}
