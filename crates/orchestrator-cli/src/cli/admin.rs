//! `POST /admin/reload` on the HTTP front: reloads `mcp.json` now, for deployments that change
//! the file where no watcher sees it, or want to know at once whether the change was accepted.

use std::sync::Arc;

use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use orchestrator::reload::Reloader;
use serde_json::json;

/// The route. It sits behind the front's bearer token; `authenticated` says whether the front
/// has one. Without one, anyone who can reach the port could restart servers, so it refuses.
pub fn routes(reloader: Arc<Reloader>, authenticated: bool) -> Router {
    Router::new().route(
        "/admin/reload",
        post(move || {
            let reloader = reloader.clone();
            async move { reload(&reloader, authenticated).await }
        }),
    )
}

/// 200 with what changed; 422 with the refusal (naming the field path) when the file is invalid,
/// the running configuration staying in force; 403 on a front without a token.
async fn reload(reloader: &Reloader, authenticated: bool) -> Response {
    if !authenticated {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "POST /admin/reload needs the HTTP front to require a bearer token (--token or MCP_AUTH_TOKEN)"
            })),
        )
            .into_response();
    }
    match reloader.reload("POST /admin/reload").await {
        Ok(summary) => (
            StatusCode::OK,
            Json(json!({ "applied": !summary.same_digest, "changes": summary })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "applied": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}
