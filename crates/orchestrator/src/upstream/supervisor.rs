//! The real [`Link`]: one MCP connection kept alive by a supervisor that connects, lists what
//! the server offers, watches for the connection to end or the lists to change, and reconnects
//! with backoff.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rmcp::{
    Peer, RoleClient, ServiceError,
    model::{
        CancelledNotificationParam, ClientRequest, RequestId, RequestMetaObject, ServerResult,
    },
    service::{ClientCacheConfig, MergedList, PeerRequestOptions},
    transport::streamable_http_client::StreamableHttpError,
};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    Link, Offer,
    child::AnswersOverCap,
    client::{RefreshRequests, UpstreamClient},
    connect, listen,
};
use crate::{
    config::ServerSpec,
    context::CallContext,
    error::{CallError, Oversize, TooLarge},
    hints::{CacheHint, ListHints, Stated},
    naming::{MAX_SPEC_TOOL_NAME, is_spec_tool_name},
    policy::breaker::Breaker,
    relay::Relay,
    stats::ServerStats,
};

/// The longest reconnect delay for a server that has never connected (a wrong command or URL
/// should not be hammered).
const NEVER_CONNECTED_MAX_DELAY: Duration = Duration::from_secs(30);

/// The longest reconnect delay for a server that was up: while it is away, the supervisor looks
/// for it about every second (a refused connection, or a process that fails to start, costs
/// little), so its return is noticed within a second or two and its breaker half-opens then.
const WAS_UP_MAX_DELAY: Duration = Duration::from_secs(1);

/// How long a connection must have lived for the next reconnect to start from the shortest delay.
const FRESH_BACKOFF_AFTER: Duration = Duration::from_secs(1);

/// What rmcp adds to a request around its method, params and our `_meta`: the JSON-RPC
/// envelope, the id, the progress token. Counted so the size check errs on the safe side.
const ENVELOPE_BYTES: usize = 256;

/// The live side of an upstream.
#[derive(Debug, Clone)]
struct Live {
    peer: Peer<RoleClient>,
    offer: Arc<Offer>,
    since: DateTime<Utc>,
    /// Which connection this is (one per `run_connection`), so a request that failed on an
    /// earlier connection cannot end the current one.
    connection: u64,
}

/// One supervised connection to an upstream server.
#[derive(Debug)]
pub struct Supervised {
    spec: ServerSpec,
    stats: Arc<ServerStats>,
    /// The server's breaker, told of every connection lost and restored.
    breaker: Arc<Breaker>,
    relay: Arc<Relay>,
    live: RwLock<Option<Live>>,
    /// What it offered when last connected: kept while it is down, so its tools stay listed and
    /// a call to one says the server is unavailable (retryable) instead of "unknown tool" (the
    /// caller's mistake), and agents are not told the list changed twice per restart.
    last_offer: RwLock<Arc<Offer>>,
    refresh: Arc<RefreshRequests>,
    /// Woken when a request finds the server gone (connection refused or reset). Over
    /// streamable HTTP nothing else would say so: the client keeps its session while the server
    /// is down, so the supervisor ends it and reconnects, and the breaker hears of both.
    gone: Notify,
    /// Numbers the connections, for [`Live::connection`].
    connections: std::sync::atomic::AtomicU64,
    /// Bumped whenever the offer or the connection changes, so the catalog can rebuild.
    changed: watch::Sender<u64>,
    /// Values from `${env:..}`, masked in every error text before it is logged or kept (a
    /// connection error quotes the server's URL or command, which may hold one).
    secrets: Vec<String>,
    /// Requests whose answer was over the line cap (stdio), so their failure reads as the
    /// caller's (too much asked), not the server's.
    over_cap: Arc<AnswersOverCap>,
    /// The resources agents are subscribed to, for a 2026-07-28 server's listen stream.
    watched: listen::Watched,
}

/// A notification (sent on drop) that tells the upstream a request was abandoned.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let peer = self.peer.clone();
            tokio::spawn(async move {
                let _ = peer
                    .notify_cancelled(CancelledNotificationParam::new(
                        Some(id),
                        Some("cancelled by the orchestrator's caller".into()),
                    ))
                    .await;
            });
        }
    }
}

impl Supervised {
    /// A disconnected link; [`Supervised::supervise`] connects it.
    pub fn new(
        spec: ServerSpec,
        stats: Arc<ServerStats>,
        breaker: Arc<Breaker>,
        relay: Arc<Relay>,
        changed: watch::Sender<u64>,
        secrets: Vec<String>,
    ) -> Self {
        Self {
            spec,
            stats,
            breaker,
            relay,
            live: RwLock::new(None),
            last_offer: RwLock::new(Arc::default()),
            refresh: Arc::new(RefreshRequests::default()),
            gone: Notify::new(),
            connections: std::sync::atomic::AtomicU64::new(0),
            changed,
            secrets,
            over_cap: Arc::default(),
            watched: listen::Watched::default(),
        }
    }

    fn read_live(&self) -> Option<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_live(&self, live: Option<Live>) {
        if let Some(live) = &live {
            *self.last_offer.write().unwrap_or_else(|e| e.into_inner()) = live.offer.clone();
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        self.changed.send_modify(|n| *n += 1);
    }

    fn peer(&self) -> Result<(Peer<RoleClient>, u64), CallError> {
        self.read_live()
            .map(|l| (l.peer, l.connection))
            .filter(|(p, _)| !p.is_transport_closed())
            .ok_or_else(|| CallError::NotConnected {
                server: self.spec.name.clone(),
                last_error: self.stats.last_error(),
            })
    }

    fn redact(&self, text: &str) -> String {
        crate::config::redact(&self.secrets, text)
    }

    /// Keeps the upstream connected until `shutdown`: connects, lists what it offers, watches
    /// for the connection to end or the lists to change, and reconnects with exponential backoff
    /// and jitter after any failure: 200 ms doubling to 30 s for a server that never connected,
    /// to 1 s once it has been up, since every delay then is downtime for its callers.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = new_backoff(NEVER_CONNECTED_MAX_DELAY);
        while !shutdown.is_cancelled() {
            let handler = UpstreamClient {
                server: self.spec.name.clone(),
                relay: self.relay.clone(),
                refresh: self.refresh.clone(),
                prefix: self.spec.prefix.clone(),
                user_input_timeout: self.spec.limits.user_input_timeout,
                stats: self.stats.clone(),
            };
            let attempt = tokio::select! {
                r = connect::connect(&self.spec, handler, self.over_cap.clone()) => r,
                _ = shutdown.cancelled() => break,
            };
            match attempt {
                Ok(running) => {
                    let started = Instant::now();
                    self.run_connection(running, &shutdown).await;
                    // A connection that served for a while earns a fresh backoff: the server
                    // is restarting, not crash-looping, and every delay here is downtime for
                    // its callers. One that died within a second keeps backing off.
                    if started.elapsed() > FRESH_BACKOFF_AFTER {
                        backoff = new_backoff(WAS_UP_MAX_DELAY);
                    }
                }
                Err(e) => {
                    let e = self.redact(&e.to_string());
                    tracing::warn!(server = %self.spec.name, error = %e, "cannot connect");
                    self.stats.set_error(&e);
                    self.breaker.connection_lost(&e);
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    async fn run_connection(&self, running: connect::Running, shutdown: &CancellationToken) {
        let connection = self
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let peer = running.peer().clone();
        let ct = running.cancellation_token();
        // The listing is kept here (the offer) and results in the orchestrator's own cache, so
        // rmcp's client response cache would be a second copy of the same lists. It also answers
        // a failed listing from its stale copy, which would pass an upstream's failure off as a
        // successful refresh; reads do not pass through it (they go out as plain requests).
        peer.set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        let since = Utc::now();
        let mut relist_at = match list_offer(&peer, &self.spec).await {
            Ok((offer, problems)) => {
                if let Some(p) = problems {
                    self.stats.set_error(&self.redact(&p));
                }
                tracing::info!(
                    server = %self.spec.name,
                    tools = offer.tools.len(),
                    "connected"
                );
                let relist_at = relist_due(&offer);
                self.set_live(Some(Live {
                    peer: peer.clone(),
                    offer: Arc::new(offer),
                    since,
                    connection,
                }));
                // Initialized and listed: a probe may go now, not when the open period ends.
                self.breaker.connection_restored();
                self.resume_log_level(&peer).await;
                relist_at
            }
            Err(e) => {
                let e = self.redact(&format!("listing tools failed: {e}"));
                tracing::warn!(server = %self.spec.name, error = %e, "connected but unusable");
                self.stats.set_error(&e);
                self.breaker.connection_lost(&e);
                ct.cancel();
                let _ = running.waiting().await;
                return;
            }
        };
        let waiting = running.waiting();
        tokio::pin!(waiting);
        // A 2026-07-28 server tells of changes only on a listen stream.
        let modern = listen::is_modern(&peer);
        let server = self.spec.name.clone();
        let listener = async {
            if !modern {
                return std::future::pending().await;
            }
            let why = listen::listen(&peer, &self.watched, |change| match change {
                listen::Change::List => self.refresh.notify.notify_one(),
                listen::Change::Updated(uri) => {
                    let exposed = crate::naming::expose_uri_of(&server, &self.spec.prefix, &uri);
                    let relay = self.relay.clone();
                    tokio::spawn(async move { relay.exposed_resource_updated(&exposed).await });
                }
            })
            .await;
            tracing::info!(server = %server, reason = %why, "no change notifications from this server");
            std::future::pending::<()>().await
        };
        tokio::pin!(listener);
        let reason = loop {
            tokio::select! {
                () = &mut listener => {}
                quit = &mut waiting => break match quit {
                    Ok(reason) => format!("connection closed ({reason:?})"),
                    Err(e) => format!("connection task failed: {e}"),
                },
                _ = self.refresh.notify.notified() => {
                    relist_at = self.relist(&peer, since, connection, relist_at).await;
                }
                // A list the upstream said was fresh for a while has gone stale: listed again,
                // so the catalog never outlives the upstream's word.
                _ = sleep_until_due(relist_at) => {
                    relist_at = self.relist(&peer, since, connection, None).await;
                }
                _ = self.gone.notified() => {
                    ct.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
                    break "the server stopped accepting connections".to_owned();
                }
                _ = shutdown.cancelled() => {
                    ct.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
                    self.set_live(None);
                    return;
                }
            }
        };
        let reason = self.redact(&reason);
        tracing::warn!(server = %self.spec.name, %reason, "upstream went away; reconnecting");
        self.stats.set_error(&reason);
        self.set_live(None);
        // Calls fail as unavailable at once from now on, instead of each finding out.
        self.breaker.connection_lost(&reason);
    }

    /// Lists the upstream again (a list changed, or went stale) and returns when the next
    /// listing is due. A failed listing keeps the old one, and the cause shows in status until
    /// the next listing succeeds or the connection is replaced; it is tried again when it was
    /// due already (`due`), not sooner.
    async fn relist(
        &self,
        peer: &Peer<RoleClient>,
        since: DateTime<Utc>,
        connection: u64,
        due: Option<Instant>,
    ) -> Option<Instant> {
        match list_offer(peer, &self.spec).await {
            Ok((offer, problems)) => {
                if let Some(p) = problems {
                    self.stats.set_error(&self.redact(&p));
                }
                let next = relist_due(&offer);
                self.set_live(Some(Live {
                    peer: peer.clone(),
                    offer: Arc::new(offer),
                    since,
                    connection,
                }));
                next
            }
            Err(e) => {
                let e = self.redact(&format!("refreshing the listing failed: {e}"));
                tracing::warn!(server = %self.spec.name, error = %e, "refresh failed");
                self.stats.set_error(&e);
                due.map(|_| Instant::now() + MIN_RELIST_INTERVAL)
            }
        }
    }

    /// A server that (re)connects logs at the level agents asked for, as the others do.
    #[allow(deprecated)] // Logging: deprecated from 2026-07-28 on, used by 2025-11-25 servers.
    async fn resume_log_level(&self, peer: &Peer<RoleClient>) {
        let Some(level) = self.relay.log_levels().wanted() else {
            return;
        };
        let logs = peer
            .peer_info()
            .is_some_and(|info| info.capabilities.logging.is_some());
        if logs && !listen::is_modern(peer) {
            let params = rmcp::model::SetLevelRequestParams::new(level);
            if let Err(e) = peer.set_level(params).await {
                tracing::info!(server = %self.spec.name, error = %e, "setLevel after connecting failed");
            }
        }
    }

    /// Sends one request with the agent's `_meta`, progress relay and cancellation.
    async fn request(
        &self,
        request: ClientRequest,
        cx: &CallContext,
    ) -> Result<ServerResult, CallError> {
        let (peer, connection) = self.peer()?;
        // A 2026-07-28 server has no `resources/subscribe`: its listen stream's filter is the
        // subscription.
        if listen::is_modern(&peer) {
            match &request {
                ClientRequest::SubscribeRequest(r) => {
                    self.watched.set(&r.params.uri, true);
                    return Ok(ServerResult::empty(()));
                }
                ClientRequest::UnsubscribeRequest(r) => {
                    self.watched.set(&r.params.uri, false);
                    return Ok(ServerResult::empty(()));
                }
                _ => {}
            }
        }
        let mut options = PeerRequestOptions::no_options();
        let meta = outgoing_meta(cx.meta.as_ref(), &tracing::Span::current());
        let bytes = kit::json_size::serialized_len(&request)
            .saturating_add(meta.as_ref().map_or(0, kit::json_size::serialized_len))
            .saturating_add(ENVELOPE_BYTES);
        if bytes > self.spec.limits.max_request_bytes {
            return Err(self.request_too_large(bytes, Some(self.spec.limits.max_request_bytes)));
        }
        if let Some(meta) = meta {
            options = options.with_meta(meta);
        }
        let handle = peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| self.service_error(e, connection, bytes))?;
        let progress_token = handle.progress_token.clone();
        let _progress = cx.progress.as_ref().map(|(agent, token)| {
            self.relay.register_progress(
                &self.spec.name,
                progress_token.clone(),
                agent.clone(),
                token.clone(),
            )
        });
        let id = handle.id.clone();
        // Questions the upstream asks while this request runs go to the agent behind it.
        let _origin = cx.origin.as_ref().map(|origin| {
            self.relay
                .origins()
                .register(&self.spec.name, id.clone(), origin.clone())
        });
        let mut guard = CancelOnDrop {
            peer,
            id: Some(id.clone()),
        };
        let response = tokio::select! {
            r = handle.await_response() => r,
            _ = cx.ct.cancelled() => return Err(CallError::Cancelled),
        };
        guard.id = None;
        if cx.progress.is_some() {
            // The progress read before the answer reaches the agent before the result does.
            self.relay
                .progress_settled(&self.spec.name, &progress_token, PROGRESS_SETTLE)
                .await;
        }
        response.map_err(|e| {
            if matches!(e, ServiceError::McpError(_)) && self.over_cap.take(&id) {
                return CallError::TooLarge(TooLarge {
                    server: self.spec.name.clone(),
                    what: Oversize::Answer,
                    bytes: None,
                    limit: Some(self.spec.limits.max_message_bytes),
                    setting: "orchestrator.limits.upstreamMaxMessageBytes".into(),
                });
            }
            self.service_error(e, connection, bytes)
        })
    }

    /// A request of `bytes` too large for this server (over `limit`, when known).
    fn request_too_large(&self, bytes: usize, limit: Option<usize>) -> CallError {
        CallError::TooLarge(TooLarge {
            server: self.spec.name.clone(),
            what: Oversize::Request,
            bytes: Some(bytes),
            limit,
            setting: match limit {
                Some(_) => format!(
                    "orchestrator.servers.{}.maxRequestBytes, or orchestrator.limits.upstreamMaxRequestBytes",
                    self.spec.name
                ),
                None => "the server answered HTTP 413".into(),
            },
        })
    }

    /// What a failed request of `bytes` on `connection` means for the caller; a request that
    /// finds the server gone also tells the supervisor, if that connection is still the current
    /// one. An HTTP 413 (the server's own size limit) or an answer body over the client's limit
    /// is the caller's: too much sent or asked.
    fn service_error(&self, e: ServiceError, connection: u64, bytes: usize) -> CallError {
        match too_large(&e) {
            Some(Oversize::Request) => return self.request_too_large(bytes, None),
            Some(Oversize::Answer) => {
                return CallError::TooLarge(TooLarge {
                    server: self.spec.name.clone(),
                    what: Oversize::Answer,
                    bytes: None,
                    limit: None,
                    setting: "the HTTP client's response size limit".into(),
                });
            }
            None => {}
        }
        match e {
            ServiceError::McpError(error) => CallError::Protocol {
                server: self.spec.name.clone(),
                error,
            },
            ServiceError::Cancelled { .. } => CallError::Cancelled,
            other if connection_gone(&other) => {
                if self.read_live().is_some_and(|l| l.connection == connection) {
                    // Wakes the supervisor if it is watching; never stores a wake-up that could
                    // end a later, healthy connection.
                    self.gone.notify_waiters();
                }
                CallError::ConnectionLost {
                    server: self.spec.name.clone(),
                    detail: other.to_string(),
                }
            }
            other => CallError::ConnectionLost {
                server: self.spec.name.clone(),
                detail: other.to_string(),
            },
        }
    }
}

impl Link for Supervised {
    fn offer(&self) -> Arc<Offer> {
        match self.read_live() {
            Some(live) => live.offer,
            None => self
                .last_offer
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn connected_since(&self) -> Option<DateTime<Utc>> {
        self.read_live().map(|l| l.since)
    }

    fn protocol(&self) -> Option<String> {
        let live = self.read_live()?;
        let info = live.peer.peer_info()?;
        Some(info.protocol_version.to_string())
    }

    fn send<'a>(
        &'a self,
        request: ClientRequest,
        cx: &'a CallContext,
    ) -> BoxFuture<'a, Result<ServerResult, CallError>> {
        Box::pin(self.request(request, cx))
    }
}

/// The `_meta` an upstream request carries: the agent's (per-hop keys already removed), with
/// `traceparent`/`tracestate` naming `span` (the current upstream attempt) when it is recorded,
/// so the server's handler span is the attempt's child. With export off the span has no valid
/// context and the agent's own trace context passes through unchanged; `baggage` always does.
fn outgoing_meta(
    agent: Option<&RequestMetaObject>,
    span: &tracing::Span,
) -> Option<RequestMetaObject> {
    let headers = kit::telemetry::trace_headers(span);
    let Some(traceparent) = headers.get("traceparent") else {
        return agent.cloned();
    };
    let mut meta = agent.cloned().unwrap_or_default();
    meta.0
        .insert("traceparent".into(), traceparent.clone().into());
    match headers.get("tracestate").filter(|s| !s.is_empty()) {
        Some(state) => {
            meta.0.insert("tracestate".into(), state.clone().into());
        }
        None => {
            meta.0.remove("tracestate");
        }
    }
    Some(meta)
}

/// Whether a failed HTTP request was over a size limit: the request (the server answered 413)
/// or the answer (over the client's response limit).
fn too_large(e: &ServiceError) -> Option<Oversize> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        match err.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            Some(StreamableHttpError::UnexpectedServerResponse(text))
                if text.starts_with("HTTP 413") =>
            {
                return Some(Oversize::Request);
            }
            Some(StreamableHttpError::HttpStatus(status)) if status.status == 413 => {
                return Some(Oversize::Request);
            }
            Some(StreamableHttpError::ResponseBodyTooLarge { .. }) => {
                return Some(Oversize::Answer);
            }
            _ => {}
        }
        source = err.source();
    }
    None
}

/// Whether a failed request says the server itself is gone: the connection was refused, reset or
/// closed. An HTTP error status (a 413, a 503) is an answer, not this.
fn connection_gone(e: &ServiceError) -> bool {
    use std::io::ErrorKind;
    if matches!(e, ServiceError::TransportClosed) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
        {
            return true;
        }
        // rmcp's HTTP client error names its cause without exposing it as a `source`.
        if let Some(StreamableHttpError::Client(client)) =
            err.downcast_ref::<StreamableHttpError<reqwest::Error>>()
            && client.is_connect()
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::NotConnected
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// The shortest time between two listings the upstream's TTLs ask for: a server that says its
/// lists are fresh for 10 ms is listed once a second, not a hundred times.
const MIN_RELIST_INTERVAL: Duration = Duration::from_secs(1);

/// When `offer`, just listed, is due to be listed again: when its first list with a positive
/// TTL goes stale, and no sooner than [`MIN_RELIST_INTERVAL`]; never for an upstream that gave
/// none (list-change notifications keep it current).
fn relist_due(offer: &Offer) -> Option<Instant> {
    let now = Instant::now();
    offer
        .hints
        .next_expiry(now)
        .map(|at| at.max(now + MIN_RELIST_INTERVAL))
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until_due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn new_backoff(max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200).min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The longest a call's result waits for its last progress notifications to be passed on.
const PROGRESS_SETTLE: Duration = Duration::from_secs(1);

/// Lists what the server offers, within `orchestrator.limits.upstreamListTimeoutMs`: a server
/// that connects but never answers its listings must not hold the supervisor (and the tools it
/// would offer) forever. Tools whose names break the specification are named in a warning here,
/// once per listing (the catalog leaves them out).
///
/// A server whose resources, templates or prompts cannot be listed keeps its tools; what failed
/// comes back beside the offer, for status and the log.
async fn list_offer(
    peer: &Peer<RoleClient>,
    spec: &ServerSpec,
) -> Result<(Offer, Option<String>), ListError> {
    let limit = spec.limits.list_timeout;
    let (offer, problems) = tokio::time::timeout(limit, list_offer_inner(peer))
        .await
        .map_err(|_| ListError::Timeout(limit))?
        .map_err(ListError::Service)?;
    for tool in offer.tools.iter().filter(|t| !is_spec_tool_name(&t.name)) {
        tracing::warn!(
            server = %spec.name,
            tool = ?tool.name.as_ref(),
            "tool left out: its name is not 1-{MAX_SPEC_TOOL_NAME} characters of A-Z a-z 0-9 _ - ."
        );
    }
    let problems = (!problems.is_empty()).then(|| problems.join("; "));
    if let Some(p) = &problems {
        tracing::warn!(server = %spec.name, problem = %p, "part of the listing failed; the tools are served");
    }
    Ok((offer, problems))
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(
        "no answer within {} ms (orchestrator.limits.upstreamListTimeoutMs)",
        .0.as_millis()
    )]
    Timeout(Duration),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A listing's items and how long they stay fresh, or none with the failure noted in
/// `problems` (and a list that failed is stale: what the upstream offers there is unknown).
fn kept<T>(
    problems: &mut Vec<String>,
    what: &str,
    hint: &mut Option<Stated>,
    listed: Result<MergedList<T>, ServiceError>,
) -> Vec<T> {
    match listed {
        Ok(list) => {
            *hint = Some(stated(list.ttl_ms, list.cache_scope));
            list.items
        }
        Err(e) => {
            *hint = Some(Stated::now(CacheHint::UNCACHEABLE));
            problems.push(format!("listing {what} failed: {e}"));
            Vec::new()
        }
    }
}

/// A list's cache hint, as of now.
fn stated(ttl_ms: Option<u64>, scope: Option<rmcp::model::CacheScope>) -> Stated {
    Stated::now(CacheHint::from_wire(ttl_ms, scope))
}

/// Lists what the server advertised in its handshake (nothing else: a server is never sent a
/// request it did not advertise), with each list's cache hint.
async fn list_offer_inner(peer: &Peer<RoleClient>) -> Result<(Offer, Vec<String>), ServiceError> {
    let capabilities = peer
        .peer_info()
        .map(|i| i.capabilities.clone())
        .unwrap_or_default();
    let mut hints = ListHints::default();
    let tools = if capabilities.tools.is_some() {
        let listed = peer.list_all_tools_with_cache_hint().await?;
        hints.tools = Some(stated(listed.ttl_ms, listed.cache_scope));
        listed.items
    } else {
        Vec::new()
    };
    let mut problems = Vec::new();
    let (resources, templates) = if capabilities.resources.is_some() {
        (
            kept(
                &mut problems,
                "resources",
                &mut hints.resources,
                peer.list_all_resources_with_cache_hint().await,
            ),
            kept(
                &mut problems,
                "resource templates",
                &mut hints.templates,
                peer.list_all_resource_templates_with_cache_hint().await,
            ),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let prompts = if capabilities.prompts.is_some() {
        kept(
            &mut problems,
            "prompts",
            &mut hints.prompts,
            peer.list_all_prompts_with_cache_hint().await,
        )
    } else {
        Vec::new()
    };
    let validators = super::compile_validators(&tools);
    Ok((
        Offer {
            tools,
            resources,
            templates,
            prompts,
            validators,
            capabilities,
            hints,
        },
        problems,
    ))
}
