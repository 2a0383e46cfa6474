//! The streamable HTTP front at `/mcp`, with the routes mounted beside it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use rmcp::{
    ServerHandler,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{MCP_PATH, Secret, ServeArgs, ServeError, signal::listen_for_shutdown};
use crate::in_flight::InFlight;

pub(super) async fn serve_http<H, F>(
    addr: SocketAddr,
    args: &ServeArgs,
    in_flight: InFlight,
    grace: Duration,
    factory: F,
    routes: Router,
) -> Result<(), ServeError>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    if !addr.ip().is_loopback() && args.token.is_none() && !args.allow_unauthenticated_remote {
        return Err(ServeError::UnauthenticatedRemote(addr));
    }
    let sessions_ct = CancellationToken::new();
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.extend(args.allowed_hosts.iter().cloned());
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        hosts.push(addr.ip().to_string());
    }
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(args.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(args.max_body_bytes)
        .with_cancellation_token(sessions_ct.clone());
    if args.stateless {
        config = config
            .with_legacy_session_mode(false)
            .with_json_response(true);
    }
    let service = StreamableHttpService::new(
        move || Ok(factory()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // Innermost: only requests that passed the token check are buffered and checked.
    let mut router = routes
        .nest_service(MCP_PATH, service)
        .layer(middleware::from_fn_with_state(
            args.max_body_bytes,
            crate::framing::reject_malformed,
        ));
    if let Some(token) = &args.token {
        router = router.layer(middleware::from_fn_with_state(
            Arc::new(token.clone()),
            require_bearer,
        ));
    }
    // Outermost, so every response (a 401 from the bearer check too) echoes the request's id.
    router = router.layer(middleware::from_fn(crate::correlation::correlate));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Before the line below, so a signal sent as soon as it appears is handled, not fatal.
    let signal = listen_for_shutdown();
    // Tests and scripts read the bound address from this line (port 0 picks a free port).
    tracing::info!(url = %format!("http://{local}{MCP_PATH}"), "listening on http://{local}{MCP_PATH}");

    // Without TCP_NODELAY a pooled client stalls ~40 ms per call (Nagle + delayed ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // On a signal: stop accepting at once (axum's graceful shutdown), let running calls finish,
    // give their responses a moment to be written, then end the sessions, whose open SSE streams
    // would otherwise hold their connections (and so the shutdown) open forever.
    let stop_accepting = CancellationToken::new();
    let drain = tokio::spawn({
        let stop_accepting = stop_accepting.clone();
        async move {
            signal.await;
            stop_accepting.cancel();
            tracing::info!(
                in_flight = in_flight.count(),
                "shutdown signal: finishing in-flight calls"
            );
            if tokio::time::timeout(grace, in_flight.idle()).await.is_err() {
                tracing::warn!(in_flight = in_flight.count(), "grace period over");
            }
            tokio::time::sleep(RESPONSE_FLUSH_MARGIN).await;
            sessions_ct.cancel();
        }
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop_accepting.cancelled_owned())
        .await
        .map_err(ServeError::Http);
    drain.abort();
    served
}

/// Time between the last call finishing and the transport being torn down, so that call's
/// response is written out first.
const RESPONSE_FLUSH_MARGIN: Duration = Duration::from_millis(250);

/// Rejects requests without the configured bearer token; compares in constant time.
async fn require_bearer(
    State(token): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 9110: the scheme is case-insensitive.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.expose().as_bytes())));
    if ok {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or invalid bearer token\n",
        )
            .into_response()
    }
}
