//! `mcp-orchestrator serve`: the MCP front agents connect to, over stdio or streamable HTTP.

use std::{path::Path, sync::Arc, time::Duration};

use orchestrator::{frontend::Frontend, gateway::Gateway, metrics::Metrics, reload::Reloader};
use tokio_util::sync::CancellationToken;

use super::{FrontTransport, admin, health, load};

/// How long `serve` waits for the upstreams before it answers agents.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Serves agents until shutdown (stdin closed, or a signal); exit code 0.
pub async fn run(
    path: &Path,
    transport: Option<FrontTransport>,
    mut serve: kit::serve::ServeArgs,
) -> anyhow::Result<i32> {
    let metrics = Arc::new(Metrics::from_env("mcp-orchestrator")?);
    let gateway = Gateway::start_with_metrics(load(path)?, metrics.clone());
    let http = transport == Some(FrontTransport::Http) || serve.http.is_some();
    if transport == Some(FrontTransport::Stdio) {
        serve.http = None;
    } else if http && serve.http.is_none() {
        serve.http = Some(gateway.config().listen);
    }
    // Agents list tools right after `initialize` and rarely list again: answering before the
    // upstreams are connected would show them a partial catalog. Wait until each one has
    // connected or failed once, bounded so that a hung server cannot hold the front back.
    if !gateway.wait_ready(STARTUP_WAIT).await {
        tracing::warn!("serving without every upstream connected; see orchestrator://status");
    }
    // Sagas a previous run left half done are undone in the background, through the same
    // upstream connections agents use (so only once they are connected).
    tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let recovered = gateway.recover_sagas().await;
            if recovered > 0 {
                tracing::warn!(
                    recovered,
                    "sagas left unfinished by a previous run were recovered"
                );
            }
        }
    });
    let reloader = Reloader::new(gateway.clone(), path);
    let reload_settings = &gateway.config().reload;
    let stop_reloading = CancellationToken::new();
    let triggers = reloader.spawn_triggers(
        reload_settings.watch,
        reload_settings.debounce,
        stop_reloading.clone(),
    );
    let in_flight = kit::in_flight::InFlight::default();
    let gw = gateway.clone();
    let calls = in_flight.clone();
    let draining = CancellationToken::new();
    let stdio = serve.http.is_none();
    let served = kit::serve::serve_with(
        &serve,
        in_flight,
        move || {
            let front = Frontend::new(gw.clone(), calls.clone());
            // Over stdio, kit's framing writes raw tool results itself.
            if stdio {
                front.writing_raw_results()
            } else {
                front
            }
        },
        kit::serve::Front {
            routes: metrics_route(metrics.clone())
                .merge(admin::routes(reloader, serve.token.is_some())),
            public_routes: health::routes(gateway.clone(), draining.clone()),
            draining,
            stats: metrics.front_stats(),
        },
    )
    .await;
    stop_reloading.cancel();
    let _ = triggers.await;
    gateway.shutdown().await;
    metrics.shutdown().await;
    served?;
    Ok(0)
}

/// `GET /metrics` on the HTTP front (behind its bearer token): every metric in the Prometheus
/// text format, for operators without an OpenTelemetry collector. Stdio has no such endpoint.
fn metrics_route(metrics: Arc<Metrics>) -> axum::Router {
    use axum::{http::StatusCode, http::header::CONTENT_TYPE, response::IntoResponse};
    let render = move || {
        let metrics = metrics.clone();
        async move {
            match metrics.render_prometheus() {
                Ok(text) => (
                    StatusCode::OK,
                    [(
                        CONTENT_TYPE,
                        orchestrator::metrics::prometheus::CONTENT_TYPE,
                    )],
                    text,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            }
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(render))
}
