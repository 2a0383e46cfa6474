//! The streamable HTTP front at `/mcp`, with the routes mounted beside it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use rmcp::{
    ServerHandler,
    transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService},
};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{
    Front, MCP_PATH, Secret, ServeArgs, ServeError,
    body::{self, BodyRules},
    conn::{self, ConnLimits},
    guard::{self, Guard},
    limits,
    sessions::BoundedSessions,
    signal::listen_for_shutdown,
};
use crate::in_flight::InFlight;

pub(super) async fn serve_http<H, F>(
    addr: SocketAddr,
    args: &ServeArgs,
    in_flight: InFlight,
    grace: Duration,
    factory: F,
    front: Front,
) -> Result<(), ServeError>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    if !addr.ip().is_loopback() && args.token.is_none() && !args.allow_unauthenticated_remote {
        return Err(ServeError::UnauthenticatedRemote(addr));
    }
    // Bound to every interface, the Host check would refuse every client that names the
    // machine: say so at start rather than answer each of them 403.
    if addr.ip().is_unspecified() && args.allowed_hosts.is_empty() {
        return Err(ServeError::HostsNeeded(addr));
    }
    let Front {
        routes,
        public_routes,
        draining,
        stats,
    } = front;
    let limits = &args.limits;
    let sessions_ct = CancellationToken::new();
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.extend(args.allowed_hosts.iter().cloned());
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        hosts.push(addr.ip().to_string());
    }
    let guard =
        Guard::new(&hosts, &args.allowed_origins, stats.clone()).map_err(ServeError::BadOrigin)?;
    // The guard below checks Host and Origin for every route, `/mcp` included, in one way.
    let mut config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_allowed_origins(Vec::<String>::new())
        .with_max_request_body_bytes(args.max_body_bytes)
        .with_cancellation_token(sessions_ct.clone());
    if args.stateless {
        config = config
            .with_legacy_session_mode(false)
            .with_json_response(true);
    }
    let service = StreamableHttpService::new(
        move || Ok(factory()),
        Arc::new(BoundedSessions::new(
            limits.max_sessions,
            limits.session_idle(),
            stats.clone(),
        )),
        config,
    );
    let body_rules = BodyRules {
        max_body_bytes: args.max_body_bytes,
        max_initialize_bytes: limits.max_initialize_bytes,
        read_timeout: limits.body_read_timeout(),
        max_sessions: (!args.stateless).then_some(limits.max_sessions),
        retry_after: SESSION_FULL_RETRY_AFTER,
        stats: stats.clone(),
    };
    // Innermost: only requests that passed the guard and the token check are read and checked.
    let mut router = routes
        .nest_service(MCP_PATH, service)
        .layer(middleware::from_fn_with_state(
            args.max_body_bytes,
            crate::framing::reject_malformed,
        ))
        .layer(middleware::from_fn_with_state(body_rules, body::read));
    if let Some(token) = &args.token {
        router = router.layer(middleware::from_fn_with_state(
            Arc::new(token.clone()),
            require_bearer,
        ));
    }
    router = router.merge(public_routes);
    router = router.layer(middleware::from_fn_with_state(
        Arc::new(guard),
        guard::check,
    ));
    // Outermost, so every response (a 401 or 403 too) echoes the request's id.
    router = router.layer(middleware::from_fn(crate::correlation::correlate));

    let max_connections = limits::connections_that_fit(limits.max_connections);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Before the line below, so a signal sent as soon as it appears is handled, not fatal.
    let signal = listen_for_shutdown();
    // Tests and scripts read the bound address from this line (port 0 picks a free port).
    tracing::info!(url = %format!("http://{local}{MCP_PATH}"), max_connections, max_sessions = limits.max_sessions, "listening on http://{local}{MCP_PATH}");

    // On a signal: say so to the readiness route, keep serving for the drain delay (a load
    // balancer's health check takes the instance out of rotation meanwhile), stop accepting,
    // let running calls finish, give their responses a moment to be written, then end the
    // sessions, whose open SSE streams would otherwise hold their connections (and so the
    // shutdown) open forever.
    let stop_accepting = CancellationToken::new();
    let drain_delay = Duration::from_millis(args.drain_delay_ms);
    let drain = tokio::spawn({
        let stop_accepting = stop_accepting.clone();
        async move {
            signal.await;
            draining.cancel();
            if !drain_delay.is_zero() {
                tracing::info!(
                    drain_delay_ms = drain_delay.as_millis() as u64,
                    "shutdown signal: not ready; serving until the drain delay ends"
                );
                tokio::time::sleep(drain_delay).await;
            }
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
    let served = conn::serve(
        listener,
        router,
        ConnLimits {
            max: max_connections,
            header_read_timeout: limits.header_read_timeout(),
            idle: limits.idle_connection(),
        },
        stats,
        stop_accepting,
    )
    .await
    .map_err(ServeError::Http);
    drain.abort();
    served
}

/// What a client refused by the session cap is told to wait before it tries again.
const SESSION_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

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
