//! `GET /healthz` and `GET /readyz` on the HTTP front, for load balancers' checks. Both are
//! outside the bearer token (balancers check without credentials) and say nothing an
//! unauthenticated client could use beyond which required servers are down.

use std::sync::Arc;

use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use orchestrator::gateway::Gateway;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The two routes. `draining` is cancelled when a shutdown signal arrives.
pub fn routes(gateway: Arc<Gateway>, draining: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let gateway = gateway.clone();
                let draining = draining.clone();
                async move { ready(&gateway, &draining) }
            }),
        )
}

/// 200 when calls may be sent here; 503, with the reason, while draining for shutdown or while
/// a server in `orchestrator.readiness.requiredServers` is not connected.
fn ready(gateway: &Gateway, draining: &CancellationToken) -> Response {
    if draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "draining for shutdown" })),
        )
            .into_response();
    }
    match gateway.readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({ "ready": true }))).into_response(),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "reason": "required servers not connected (orchestrator.readiness.requiredServers)",
                "missing": missing,
            })),
        )
            .into_response(),
    }
}
