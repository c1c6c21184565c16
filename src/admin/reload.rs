//! `POST /internal/reload`: asks the control thread to re-read the configuration file
//! (`crate::reload`) and answers how it went. The only page answered asynchronously: the
//! shard waits for the control thread's answer in short sleeps, serving its other
//! connections meanwhile.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use super::{Answer, JSON};
use crate::reload::ANSWER_WITHIN;
use crate::shard::Shard;

/// How often the shard looks for the control thread's answer.
const POLL: Duration = Duration::from_millis(5);

/// The answer to `/internal/reload` asked with `method`.
pub(crate) async fn reload(shard: &Shard, method: &[u8]) -> Answer {
    if method != b"POST" {
        let body = json!({
            "error": { "message": "use POST to reload the configuration", "type": "invalid_request_error" }
        });
        return Answer {
            status: StatusCode::METHOD_NOT_ALLOWED,
            content_type: JSON,
            body: body.to_string().into_bytes(),
            lines: b"Allow: POST\r\n".to_vec(),
        };
    }
    let answer = shard.reloads.ask_answered();
    let asked = Instant::now();
    let outcome = loop {
        match answer.try_recv() {
            Ok(outcome) => break Some(outcome),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break None,
            Err(std::sync::mpsc::TryRecvError::Empty) if asked.elapsed() > ANSWER_WITHIN => {
                break None;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => monoio::time::sleep(POLL).await,
        }
    };
    let (status, body) = match outcome {
        Some(Ok(applied)) => (
            StatusCode::OK,
            json!({
                "status": "reloaded",
                "generation": applied.generation,
                "warnings": applied.warnings,
            }),
        ),
        // The file is the operator's, not this request's: its errors are not a 400.
        Some(Err(why)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "status": "rejected", "error": why }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unknown", "error": "the control thread did not answer" }),
        ),
    };
    // The shard takes the new generation before answering: a request sent after this
    // answer, on this shard, is served by it.
    shard.take_updates();
    Answer {
        status,
        content_type: JSON,
        body: body.to_string().into_bytes(),
        lines: Vec::new(),
    }
}
