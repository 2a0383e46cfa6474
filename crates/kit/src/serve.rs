//! Runs a `ServerHandler` over stdio (the default) or streamable HTTP at `/mcp`.
//!
//! HTTP gets the checks a local server needs against browsers and neighbours: a present Origin
//! must be on the allow-list (else 403), a configured bearer token must be presented (else 401),
//! bodies are capped (413), and binding a non-loopback address needs a token unless explicitly
//! allowed. Every HTTP request gets a correlation id ([`crate::correlation`]), echoed in the
//! response's `X-Correlation-ID` header. Both transports shut down gracefully: SIGINT/SIGTERM
//! (and, for stdio, stdin EOF) stop new work and let in-flight calls finish within a grace period.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use rmcp::{
    ServerHandler, ServiceExt,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::in_flight::InFlight;

/// The HTTP endpoint path, the same for every process.
pub const MCP_PATH: &str = "/mcp";

/// Origins allowed by default: pages served from this machine (an inspector UI, say).
pub const DEFAULT_ALLOWED_ORIGINS: [&str; 3] =
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        Err("the token must not be empty".into())
    } else {
        Ok(Secret::new(s))
    }
}

/// Parses `PORT`, `HOST:PORT` or `[V6]:PORT`; a bare port binds 127.0.0.1.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not PORT, HOST:PORT or [IPV6]:PORT"))
}

/// Transport and HTTP security flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Serve streamable HTTP on ADDR (PORT binds 127.0.0.1) at /mcp instead of stdio.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub http: Option<SocketAddr>,
    /// Bearer token every HTTP request must carry (`Authorization: Bearer TOKEN`).
    #[arg(long, env = "MCP_AUTH_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<Secret>,
    /// Browser origins allowed to call the HTTP endpoint (`scheme://host:port`, `:*` for any port);
    /// a request carrying any other Origin gets 403.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_ALLOWED_ORIGINS.map(String::from))]
    pub allowed_origins: Vec<String>,
    /// Host names accepted in the Host header besides the loopback names (for a proxy in front).
    #[arg(long, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Largest accepted request, in bytes: an HTTP body (larger → 413) or a stdio line (larger →
    /// JSON-RPC -32600, and the line is skipped).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Serve HTTP without sessions: each POST stands alone and answers with JSON.
    #[arg(long)]
    pub stateless: bool,
    /// Allow a non-loopback HTTP bind without `--token` (anyone who can reach it can call tools).
    #[arg(long)]
    pub allow_unauthenticated_remote: bool,
    /// Seconds to let in-flight calls finish after a shutdown signal.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            http: None,
            token: None,
            allowed_origins: DEFAULT_ALLOWED_ORIGINS.map(String::from).to_vec(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            stateless: false,
            allow_unauthenticated_remote: false,
            shutdown_grace_secs: 10,
        }
    }
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A non-loopback bind was asked for without a token.
    #[error(
        "refusing to serve HTTP on non-loopback address {0} without --token \
         (pass --allow-unauthenticated-remote to do it anyway)"
    )]
    UnauthenticatedRemote(SocketAddr),
    /// The stdio session ended with a protocol or transport error.
    #[error("stdio session failed: {0}")]
    Stdio(String),
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Serves handlers made by `factory` until a shutdown signal (or stdin EOF for stdio).
///
/// `factory` runs once for stdio and once per HTTP session (or request, when stateless): keep it
/// cheap and share state through `Arc`s. `in_flight` must be the count the handlers' calls enter,
/// so shutdown can wait for them.
pub async fn serve<H, F>(
    args: &ServeArgs,
    in_flight: InFlight,
    factory: F,
) -> Result<(), ServeError>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    serve_with_routes(args, in_flight, factory, Router::new()).await
}

/// [`serve`], with `routes` mounted beside `/mcp` on the HTTP front (behind the same bearer
/// token), for endpoints that are not MCP, such as `/metrics`. Ignored over stdio.
pub async fn serve_with_routes<H, F>(
    args: &ServeArgs,
    in_flight: InFlight,
    factory: F,
    routes: Router,
) -> Result<(), ServeError>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    match args.http {
        None => serve_stdio(factory(), in_flight, grace, args.max_body_bytes).await,
        Some(addr) => serve_http(addr, args, in_flight, grace, factory, routes).await,
    }
}

async fn serve_stdio<H: ServerHandler>(
    handler: H,
    in_flight: InFlight,
    grace: Duration,
    max_message_bytes: usize,
) -> Result<(), ServeError> {
    let running = match handler
        .serve(crate::framing::stdio(max_message_bytes))
        .await
    {
        Ok(running) => running,
        Err(e) => {
            // A client that connects and leaves before initializing is not a server failure.
            tracing::info!(reason = %e, "stdio client left before the session started");
            return Ok(());
        }
    };
    let ct = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting);
    tokio::select! {
        // stdin EOF: rmcp drains in-flight responses before this resolves.
        quit = &mut waiting => {
            return quit.map(|_| ()).map_err(|e| ServeError::Stdio(e.to_string()));
        }
        _ = shutdown_signal() => {}
    }
    tracing::info!(
        in_flight = in_flight.count(),
        "shutdown signal: finishing in-flight calls"
    );
    if tokio::time::timeout(grace, in_flight.idle()).await.is_err() {
        tracing::warn!(
            in_flight = in_flight.count(),
            "grace period over; cancelling calls"
        );
    }
    ct.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), waiting).await;
    Ok(())
}

async fn serve_http<H, F>(
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
            shutdown_signal().await;
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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        assert_eq!(
            parse_listen_addr("8080"),
            Ok("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen_addr("localhost:9"),
            Ok("127.0.0.1:9".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:80"),
            Ok("0.0.0.0:80".parse().expect("addr"))
        );
        assert!(parse_listen_addr("nope").is_err());
    }

    #[test]
    fn secret_is_not_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
