//! Reads a POST body whole, within a time and size limit, and applies the rules that need it:
//! the session cap for an `initialize`, and the bound on what a session keeps of its client.
//!
//! A session keeps its `initialize` (client name, version, capabilities) for its whole life, so
//! an unbounded one lets 150 sessions with 3 MB names hold half a gigabyte. Here `initialize` is
//! capped in size and the client's names are cut to [`MAX_CLIENT_INFO_CHARS`].

use std::{sync::Arc, time::Duration};

use axum::body::Bytes;
use axum::{
    body::Body,
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};

use super::{FrontLimit, FrontStats, limits::MAX_CLIENT_INFO_CHARS, refusal::refuse};

/// The session header; a POST without it opens a session (or runs stateless).
const SESSION_HEADER: &str = "mcp-session-id";

/// What the body middleware enforces.
#[derive(Debug, Clone)]
pub(super) struct BodyRules {
    pub(super) max_body_bytes: usize,
    pub(super) max_initialize_bytes: usize,
    pub(super) read_timeout: Duration,
    /// The session cap, when the front keeps sessions.
    pub(super) max_sessions: Option<usize>,
    /// What a refused `initialize` is told to wait: sessions free up as they idle out.
    pub(super) retry_after: Duration,
    pub(super) stats: Arc<FrontStats>,
}

/// Middleware: see the module docs.
pub(super) async fn read(State(rules): State<BodyRules>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let opens_session = !request.headers().contains_key(SESSION_HEADER);
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(
        rules.read_timeout,
        axum::body::to_bytes(body, rules.max_body_bytes),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return refuse(
                &rules.stats,
                FrontLimit::BodyBytes,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body exceeds the limit of {} bytes (--max-body-bytes)",
                    rules.max_body_bytes
                ),
                None,
                None,
            );
        }
        Err(_) => {
            return refuse(
                &rules.stats,
                FrontLimit::BodyReadTimeout,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s (--body-read-timeout-secs)",
                    rules.read_timeout.as_secs()
                ),
                None,
                None,
            );
        }
    };
    let mut place = None;
    let initialize = if opens_session {
        initialize_id(&bytes)
    } else {
        None
    };
    let bytes = if let Some(id) = initialize {
        if bytes.len() > rules.max_initialize_bytes {
            return refuse(
                &rules.stats,
                FrontLimit::InitializeBytes,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "initialize request of {} bytes exceeds the limit of {} bytes \
                     (--max-initialize-bytes)",
                    bytes.len(),
                    rules.max_initialize_bytes
                ),
                None,
                Some(id),
            );
        }
        if let Some(max) = rules.max_sessions {
            match rules.stats.reserve_session(max) {
                Some(p) => place = Some(p),
                None => {
                    return refuse(
                        &rules.stats,
                        FrontLimit::Sessions,
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "too many sessions: the server holds its limit of {max} \
                             (--max-sessions); retry later, or end unused sessions with DELETE"
                        ),
                        Some(rules.retry_after),
                        Some(id),
                    );
                }
            }
        }
        cut_client_info(bytes)
    } else {
        bytes
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The session, if one was opened, is counted alive by now.
    drop(place);
    response
}

/// The id of `body` if it is an `initialize` request; a cheap byte search first, since this
/// runs on every request that carries no session (all of them, on a stateless front).
fn initialize_id(body: &[u8]) -> Option<serde_json::Value> {
    const NEEDLE: &[u8] = b"\"initialize\"";
    if !body.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        id: serde_json::Value,
    }
    serde_json::from_slice::<Head<'_>>(body)
        .ok()
        .filter(|h| h.method.as_deref() == Some("initialize"))
        .map(|h| h.id)
}

/// `body` with the strings of `params.clientInfo` cut to [`MAX_CLIENT_INFO_CHARS`]; unchanged
/// when nothing is too long (or it is not JSON: rmcp answers that).
fn cut_client_info(body: Bytes) -> Bytes {
    let Ok(mut message) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let Some(info) = message
        .pointer_mut("/params/clientInfo")
        .and_then(|v| v.as_object_mut())
    else {
        return body;
    };
    let mut cut = false;
    for value in info.values_mut() {
        if let serde_json::Value::String(s) = value
            && let Some((end, _)) = s.char_indices().nth(MAX_CLIENT_INFO_CHARS)
        {
            s.truncate(end);
            cut = true;
        }
    }
    if !cut {
        return body;
    }
    match serde_json::to_vec(&message) {
        Ok(v) => Bytes::from(v),
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_initialize_is_recognised_with_its_id() {
        assert_eq!(
            initialize_id(br#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":{}}"#),
            Some(serde_json::json!(7))
        );
        assert_eq!(
            initialize_id(
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"initialize"}}"#
            ),
            None
        );
        assert_eq!(initialize_id(b"not json \"initialize\""), None);
    }

    #[test]
    fn long_client_names_are_cut_and_the_rest_kept() {
        let long = "n".repeat(10_000);
        let body = serde_json::to_vec(&serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"roots": {}},
                "clientInfo": {"name": long, "version": "1.0"}
            }
        }))
        .expect("json");
        let cut: serde_json::Value =
            serde_json::from_slice(&cut_client_info(Bytes::from(body))).expect("json");
        let name = cut["params"]["clientInfo"]["name"].as_str().expect("name");
        assert_eq!(name.chars().count(), MAX_CLIENT_INFO_CHARS);
        assert_eq!(cut["params"]["clientInfo"]["version"], "1.0");
        assert_eq!(
            cut["params"]["capabilities"]["roots"],
            serde_json::json!({})
        );
    }
}
