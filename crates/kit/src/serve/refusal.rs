//! The answer to a request the HTTP front will not take: an HTTP status and a JSON-RPC error
//! whose message names the limit and the flag that sets it, so a client (or its operator) knows
//! what to change without reading our logs.

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
) -> Response {
    stats.enforce(limit);
    tracing::warn!(limit = limit.name(), status = status.as_u16(), "{message}");
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": LIMIT_REFUSED,
            "message": message,
            "data": { "limit": limit.name(), "flag": limit.flag() },
        },
    });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(after) = retry_after {
        let secs = after.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}
