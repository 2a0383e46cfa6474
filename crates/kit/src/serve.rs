//! Runs a `ServerHandler` over stdio (the default) or streamable HTTP at `/mcp`.
//!
//! HTTP gets the checks a local server needs against browsers and neighbours: a present Origin
//! must be on the allow-list (else 403), a configured bearer token must be presented (else 401),
//! bodies are capped (413), and binding a non-loopback address needs a token unless explicitly
//! allowed. Every HTTP request gets a correlation id ([`crate::correlation`]), echoed in the
//! response's `X-Correlation-ID` header. Both transports shut down gracefully: SIGINT/SIGTERM
//! (and, for stdio, stdin EOF) let in-flight calls finish within a grace period
//! (`--shutdown-grace-secs`); HTTP also stops accepting connections at once.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
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
use futures::{SinkExt, StreamExt};
use rmcp::{
    RoleServer, ServerHandler, ServiceExt,
    model::{ClientNotification, JsonRpcMessage, RequestId},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{framing::FrameError, in_flight::InFlight};

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
    /// Seconds to let in-flight calls finish after SIGINT/SIGTERM or, over stdio, after stdin
    /// closes; calls still running then are cancelled and the process exits.
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

/// Serves one stdio session until stdin EOF or a shutdown signal.
///
/// Either way, requests already read are answered before the process exits, for up to `grace`.
/// rmcp alone would end the session at stdin EOF and give handlers a fixed 5 s to answer; here the
/// input stream is held open after EOF until every request read has been answered (or `grace`
/// passed), so `--shutdown-grace-secs` means the same on both triggers. Waiting on requests read
/// rather than on `in_flight` also covers a request whose handler task has not started yet.
async fn serve_stdio<H: ServerHandler>(
    handler: H,
    in_flight: InFlight,
    grace: Duration,
    max_message_bytes: usize,
) -> Result<(), ServeError> {
    let signal = listen_for_shutdown();
    let unanswered = Unanswered::default();
    // Cancelled when stdin closed and `grace` passed with requests still unanswered.
    let overdue = CancellationToken::new();
    let (sink, stream) = crate::framing::stdio(max_message_bytes);
    let sink = sink.with({
        let unanswered = unanswered.clone();
        move |message: TxJsonRpcMessage<RoleServer>| {
            unanswered.sent(&message);
            std::future::ready(Ok::<_, FrameError>(message))
        }
    });
    let after_eof = {
        let (unanswered, in_flight, overdue) =
            (unanswered.clone(), in_flight.clone(), overdue.clone());
        async move {
            if unanswered.count() > 0 {
                tracing::info!(
                    unanswered = unanswered.count(),
                    in_flight = in_flight.count(),
                    "stdin closed: finishing in-flight calls"
                );
            }
            if tokio::time::timeout(grace, unanswered.all_answered())
                .await
                .is_err()
            {
                tracing::warn!(
                    unanswered = unanswered.count(),
                    "grace period over; cancelling calls"
                );
                overdue.cancel();
                // Stay open: the session ends through cancellation, not through rmcp's drain.
                std::future::pending::<()>().await;
            }
        }
    };
    let stream = stream
        .inspect({
            let unanswered = unanswered.clone();
            move |message| unanswered.read(message)
        })
        .chain(futures::stream::once(after_eof).filter_map(|()| std::future::ready(None)));
    let running = match handler.serve((Box::pin(sink), Box::pin(stream))).await {
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
        // Stdin closed and every request read was answered.
        quit = &mut waiting => {
            return quit.map(|_| ()).map_err(|e| ServeError::Stdio(e.to_string()));
        }
        // Stdin closed, and `grace` passed first (already logged).
        _ = overdue.cancelled() => {}
        _ = signal => {
            tracing::info!(
                unanswered = unanswered.count(),
                in_flight = in_flight.count(),
                "shutdown signal: finishing in-flight calls"
            );
            if tokio::time::timeout(grace, unanswered.all_answered()).await.is_err() {
                tracing::warn!(
                    unanswered = unanswered.count(),
                    "grace period over; cancelling calls"
                );
            }
        }
    }
    ct.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), waiting).await;
    Ok(())
}

/// Ids of the requests read from stdin and not answered yet, so stdio shutdown can wait for
/// exactly those; clones share the set.
#[derive(Debug, Clone, Default)]
struct Unanswered {
    inner: Arc<UnansweredInner>,
}

#[derive(Debug, Default)]
struct UnansweredInner {
    ids: Mutex<HashSet<RequestId>>,
    /// Woken whenever the set empties, so waiting does not poll.
    emptied: Notify,
}

impl Unanswered {
    fn ids(&self) -> MutexGuard<'_, HashSet<RequestId>> {
        // A poisoned set only means a panic mid-update; the ids in it are still right.
        self.inner.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a message read from the client: a request now awaits its answer; a cancellation
    /// means its request will get none.
    fn read(&self, message: &RxJsonRpcMessage<RoleServer>) {
        match message {
            JsonRpcMessage::Request(request) => {
                self.ids().insert(request.id.clone());
            }
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification
                    && let Some(id) = &c.params.request_id
                {
                    self.settle(id);
                }
            }
            _ => {}
        }
    }

    /// Notes a message on its way to the client: a response or error answers its request.
    fn sent(&self, message: &TxJsonRpcMessage<RoleServer>) {
        let id = match message {
            JsonRpcMessage::Response(r) => Some(&r.id),
            JsonRpcMessage::Error(e) => e.id.as_ref(),
            _ => None,
        };
        if let Some(id) = id {
            self.settle(id);
        }
    }

    fn settle(&self, id: &RequestId) {
        let mut ids = self.ids();
        if ids.remove(id) && ids.is_empty() {
            self.inner.emptied.notify_waiters();
        }
    }

    fn count(&self) -> usize {
        self.ids().len()
    }

    /// Resolves once every request read has been answered.
    async fn all_answered(&self) {
        loop {
            // Created before the check, so an answer between the two still wakes us.
            let emptied = self.inner.emptied.notified();
            if self.count() == 0 {
                return;
            }
            emptied.await;
        }
    }
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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    listen_for_shutdown().await
}

/// Installs the SIGINT/SIGTERM handlers now, and resolves on the first of them.
///
/// Unlike a plain `async fn`, the handlers are in place as soon as this returns, before the
/// future is first polled: a signal that arrives while the server is still starting is kept
/// for the future instead of killing the process (the default action) before it could drain.
fn listen_for_shutdown() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
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

    fn from_client(v: serde_json::Value) -> RxJsonRpcMessage<RoleServer> {
        serde_json::from_value(v).expect("a client message")
    }

    fn to_client(v: serde_json::Value) -> TxJsonRpcMessage<RoleServer> {
        serde_json::from_value(v).expect("a server message")
    }

    #[tokio::test(start_paused = true)]
    async fn requests_read_are_waited_for_until_answered_or_cancelled() {
        let unanswered = Unanswered::default();
        let call = |id: u32| {
            from_client(serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "slow", "arguments": {} }
            }))
        };
        unanswered.read(&call(1));
        unanswered.read(&call(2));
        unanswered.read(&from_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        })));
        assert_eq!(unanswered.count(), 2);
        let waiter = tokio::spawn({
            let unanswered = unanswered.clone();
            async move { unanswered.all_answered().await }
        });
        unanswered.sent(&to_client(serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "result": { "content": [] }
        })));
        // A notification to the client answers nothing.
        unanswered.sent(&to_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/tools/list_changed"
        })));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "request 2 is still unanswered");
        // A cancelled request gets no answer, so it is not waited for either.
        unanswered.read(&from_client(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 2 }
        })));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("all answered")
            .expect("task ok");
        assert_eq!(unanswered.count(), 0);
    }

    #[test]
    fn secret_is_not_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
