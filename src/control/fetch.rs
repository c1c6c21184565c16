//! A minimal HTTP/1.1 GET for the control thread (health checks, model lists): a fresh
//! connection each time, the whole exchange bounded by one deadline.

use std::pin::pin;
use std::time::{Duration, Instant};

use crate::deadline::{self, Deadline};
use crate::http1::{self, BodyProgress, Framing, HeadLimits};
use crate::upstream::{self, Endpoint, EndpointConn};

/// Bounds on an endpoint's answer to a health check or a model-list read.
const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 16 * 1024,
    max_headers: 64,
};

/// `GET <base><path>` on endpoint `ep`: the status and, if `body_limit` is given, the
/// body (at most that many bytes). Everything within `within`.
pub(super) async fn fetch(
    ep: &Endpoint,
    path: &str,
    within: Duration,
    body_limit: Option<usize>,
) -> Result<(u16, Vec<u8>), String> {
    let now = Instant::now();
    let mut timer = pin!(deadline::timer(now));
    let mut deadline = Deadline::new(timer.as_mut());
    deadline.set(now + within);
    let mut conn = upstream::connect(ep, within)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut request = Vec::with_capacity(256);
    request.extend_from_slice(b"GET ");
    request.extend_from_slice(&ep.base_path);
    request.extend_from_slice(path.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    request.extend_from_slice(&ep.authority);
    request.extend_from_slice(b"\r\nUser-Agent: ringway\r\nAccept: */*\r\nConnection: close\r\n");
    request.extend_from_slice(ep.own_lines.expose().as_bytes());
    request.extend_from_slice(b"\r\n");
    let len = request.len();
    match deadline.run(conn.write(&mut request, 0..len)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("request failed: {e}")),
        Err(_) => return Err("timed out".into()),
    }
    // `Ok(0)`: the endpoint closed the connection.
    let fill = async |conn: &mut EndpointConn, deadline: &mut Deadline<'_>| match deadline
        .run(conn.fill())
        .await
    {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("read failed: {e}")),
        Err(_) => Err("timed out".to_string()),
    };
    let mut headers = Vec::new();
    let head = loop {
        match http1::parse_response(&conn.buf, &LIMITS, false, &mut headers) {
            Ok(Some(head)) => break head,
            Ok(None) => {
                if fill(&mut conn, &mut deadline).await? == 0 {
                    return Err("connection closed early".into());
                }
            }
            Err(e) => return Err(format!("invalid response: {}", e.describe())),
        }
    };
    let Some(limit) = body_limit else {
        return Ok((head.status, Vec::new()));
    };
    let mut progress = BodyProgress::new(head.body, limit as u64 + 1);
    let mut body = Vec::new();
    let mut at = head.len;
    loop {
        at += progress
            .advance(&conn.buf[at..], Some(&mut body))
            .map_err(|e| format!("invalid body: {e}"))?;
        if body.len() > limit {
            return Err(format!("body larger than {limit} bytes"));
        }
        if progress.is_done() {
            return Ok((head.status, body));
        }
        match fill(&mut conn, &mut deadline).await? {
            0 if head.body == Framing::UntilClose => return Ok((head.status, body)),
            0 => return Err("connection closed early".into()),
            _ => {}
        }
    }
}
