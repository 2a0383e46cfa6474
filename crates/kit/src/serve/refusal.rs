//! The answer to a request the HTTP front will not take: an HTTP status, and a message naming
//! the limit and the flag that sets it, so a client (or its operator) knows what to change
//! without reading our logs.
//!
//! Where the request was read, the message is a JSON-RPC error carrying the request's id, so the
//! client's call fails with it at once. Where it was not (a body too large or too slow, a Host
//! or Origin refused before reading), the body is plain text: a JSON-RPC error there could only
//! carry `id: null`, which a client cannot match to its call, and rmcp's client, handed one with
//! a 4xx/5xx status, waits for an answer that never comes instead of failing on the status.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{FrontLimit, FrontStats};

/// JSON-RPC code of a refusal by a server limit (the implementation-defined server range).
pub const LIMIT_REFUSED: i32 = -32000;

/// A refusal by `limit`, counted in `stats`; `retry_after` tells the client when to try again
/// where waiting helps (a full session table drains as sessions end).
pub(super) fn refuse(
    stats: &FrontStats,
    limit: FrontLimit,
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
    id: Option<serde_json::Value>,
) -> Response {
    stats.enforce(limit);
    tracing::warn!(limit = limit.name(), status = status.as_u16(), "{message}");
    let mut response = match id {
        Some(id) => {
            let body = serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": LIMIT_REFUSED,
                    "message": message,
                    "data": { "limit": limit.name(), "flag": limit.flag() },
                },
            });
            (status, axum::Json(body)).into_response()
        }
        None => (status, plain_text(limit, &message)).into_response(),
    };
    if let Some(after) = retry_after {
        let secs = after.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

/// The plain-text form of a refusal: the message and the limit's name, on one line.
pub(super) fn plain_text(limit: FrontLimit, message: &str) -> String {
    format!("{message} (limit: {})\n", limit.name())
}
