//! One upstream MCP server: its connection (kept alive by a supervisor that reconnects with
//! backoff), what it offers (tools, resources, prompts), and the one way to call it.

pub mod client;
pub mod connect;
pub mod http;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use rmcp::{
    Peer, RoleClient, RoleServer, ServiceError,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
        ClientRequest, CompleteRequestParams, CompleteResult, GetPromptRequestParams,
        GetPromptResult, JsonObject, ProgressToken, Prompt, ReadResourceRequestParams,
        ReadResourceResult, RequestId, RequestMetaObject, Resource, ResourceTemplate, ServerResult,
        Tool,
    },
    service::PeerRequestOptions,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::client::{RefreshRequests, UpstreamClient};
use crate::{
    config::ServerSpec, error::CallError, policy::PolicyStack, relay::Relay, stats::ServerStats,
};

/// What an upstream offered when last listed.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    /// Its tools, as it described them.
    pub tools: Vec<Tool>,
    /// Its resources.
    pub resources: Vec<Resource>,
    /// Its resource templates.
    pub templates: Vec<ResourceTemplate>,
    /// Its prompts.
    pub prompts: Vec<Prompt>,
    /// Each tool's input schema, compiled once per listing: arguments are checked against it
    /// before a call leaves the orchestrator. A tool whose schema does not compile has none.
    pub validators: HashMap<String, Arc<jsonschema::Validator>>,
}

/// The live side of an upstream.
#[derive(Debug, Clone)]
struct Link {
    peer: Peer<RoleClient>,
    offer: Arc<Offer>,
    since: DateTime<Utc>,
}

/// The per-call context an upstream request carries from the agent.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The agent's `_meta` to pass on (trace context and the like; per-hop keys removed).
    pub meta: Option<RequestMetaObject>,
    /// The agent and its progress token, when it asked for progress.
    pub progress: Option<(Peer<RoleServer>, ProgressToken)>,
    /// Cancelled when the agent cancels.
    pub ct: CancellationToken,
}

/// One upstream server.
#[derive(Debug)]
pub struct Upstream {
    spec: ServerSpec,
    stats: ServerStats,
    policy: PolicyStack,
    relay: Arc<Relay>,
    link: RwLock<Option<Link>>,
    /// What it offered when last connected: kept while it is down, so its tools stay listed and
    /// a call to one says the server is unavailable (retryable) instead of "unknown tool" (the
    /// caller's mistake), and agents are not told the list changed twice per restart.
    last_offer: RwLock<Arc<Offer>>,
    refresh: Arc<RefreshRequests>,
    /// Bumped whenever the offer or the connection changes, so the catalog can rebuild.
    changed: watch::Sender<u64>,
    /// Values from `${env:..}`, masked in every error text before it is logged or kept (a
    /// connection error quotes the server's URL or command, which may hold one).
    secrets: Vec<String>,
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

impl Upstream {
    /// A disconnected upstream; [`Upstream::supervise`] connects it.
    pub fn new(spec: ServerSpec, relay: Arc<Relay>, changed: watch::Sender<u64>) -> Self {
        Self {
            policy: PolicyStack::new(&spec.name, spec.policy.clone()),
            spec,
            stats: ServerStats::default(),
            relay,
            link: RwLock::new(None),
            last_offer: RwLock::new(Arc::default()),
            refresh: Arc::new(RefreshRequests::default()),
            changed,
            secrets: Vec::new(),
        }
    }

    /// Masks `secrets` (the configuration's `${env:..}` values) in its error texts.
    pub fn with_secrets(mut self, secrets: Vec<String>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Its configuration.
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// Its call figures.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Timeouts, retry, breaker and bulkhead: every call to it goes through this.
    pub fn policy(&self) -> &PolicyStack {
        &self.policy
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What it offers: the live listing, or while disconnected the last one (empty if it never
    /// connected).
    pub fn offer(&self) -> Arc<Offer> {
        match self.read_link() {
            Some(link) => link.offer,
            None => self
                .last_offer
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Whether it is connected, and since when.
    pub fn connected_since(&self) -> Option<DateTime<Utc>> {
        self.read_link().map(|l| l.since)
    }

    fn read_link(&self) -> Option<Link> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_link(&self, link: Option<Link>) {
        if let Some(link) = &link {
            *self.last_offer.write().unwrap_or_else(|e| e.into_inner()) = link.offer.clone();
        }
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link;
        self.changed.send_modify(|n| *n += 1);
    }

    fn peer(&self) -> Result<Peer<RoleClient>, CallError> {
        self.read_link()
            .map(|l| l.peer)
            .filter(|p| !p.is_transport_closed())
            .ok_or_else(|| CallError::NotConnected {
                server: self.spec.name.clone(),
                last_error: self.stats.last_error(),
            })
    }

    /// Keeps the upstream connected until `shutdown`: connects, lists what it offers, watches
    /// for the connection to end or the lists to change, and reconnects with exponential backoff
    /// and jitter (200 ms doubling to 30 s) after any failure.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = new_backoff();
        while !shutdown.is_cancelled() {
            let handler = UpstreamClient {
                server: self.spec.name.clone(),
                relay: self.relay.clone(),
                refresh: self.refresh.clone(),
            };
            let attempt = tokio::select! {
                r = connect::connect(&self.spec, handler) => r,
                _ = shutdown.cancelled() => break,
            };
            match attempt {
                Ok(running) => {
                    let started = Instant::now();
                    self.run_connection(running, &shutdown).await;
                    // A connection that lived a while earns a fresh backoff.
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = new_backoff();
                    }
                }
                Err(e) => {
                    let e = crate::config::redact(&self.secrets, &e);
                    tracing::warn!(server = %self.spec.name, error = %e, "cannot connect");
                    self.stats.set_error(&e);
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
        let peer = running.peer().clone();
        let ct = running.cancellation_token();
        match list_offer(&peer).await {
            Ok(offer) => {
                tracing::info!(
                    server = %self.spec.name,
                    tools = offer.tools.len(),
                    "connected"
                );
                self.set_link(Some(Link {
                    peer: peer.clone(),
                    offer: Arc::new(offer),
                    since: Utc::now(),
                }));
            }
            Err(e) => {
                let e = crate::config::redact(&self.secrets, &format!("listing tools failed: {e}"));
                tracing::warn!(server = %self.spec.name, error = %e, "connected but unusable");
                self.stats.set_error(&e);
                ct.cancel();
                let _ = running.waiting().await;
                return;
            }
        }
        let waiting = running.waiting();
        tokio::pin!(waiting);
        let reason = loop {
            tokio::select! {
                quit = &mut waiting => break match quit {
                    Ok(reason) => format!("connection closed ({reason:?})"),
                    Err(e) => format!("connection task failed: {e}"),
                },
                _ = self.refresh.notify.notified() => {
                    match list_offer(&peer).await {
                        Ok(offer) => {
                            self.set_link(Some(Link { peer: peer.clone(), offer: Arc::new(offer), since: Utc::now() }));
                        }
                        Err(e) => tracing::warn!(
                            server = %self.spec.name,
                            error = %crate::config::redact(&self.secrets, &e.to_string()),
                            "refresh failed"
                        ),
                    }
                }
                _ = shutdown.cancelled() => {
                    ct.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
                    self.set_link(None);
                    return;
                }
            }
        };
        let reason = crate::config::redact(&self.secrets, &reason);
        tracing::warn!(server = %self.spec.name, %reason, "upstream went away; reconnecting");
        self.stats.set_error(&reason);
        self.set_link(None);
    }

    /// Sends one `tools/call` to the upstream, by its own tool name: one attempt, no policy.
    /// Callers go through [`crate::gateway::Gateway::call_tool`], which wraps this in the
    /// server's policy stack.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> Result<CallToolResult, CallError> {
        self.call_tool_inner(tool, arguments, cx).await
    }

    async fn call_tool_inner(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> Result<CallToolResult, CallError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(args) = arguments {
            params = params.with_arguments(args);
        }
        let response = self
            .request(
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                cx,
            )
            .await?;
        match response {
            ServerResult::CallToolResult(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    /// Reads one of the upstream's resources by its own URI.
    pub async fn read_resource(
        &self,
        uri: &str,
        cx: &CallContext,
    ) -> Result<ReadResourceResult, CallError> {
        let request = ClientRequest::ReadResourceRequest(rmcp::model::ReadResourceRequest::new(
            ReadResourceRequestParams::new(uri.to_owned()),
        ));
        match self.request(request, cx).await? {
            ServerResult::ReadResourceResult(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    /// Gets one of the upstream's prompts by its own name.
    pub async fn get_prompt(
        &self,
        mut params: GetPromptRequestParams,
        name: &str,
        cx: &CallContext,
    ) -> Result<GetPromptResult, CallError> {
        params.name = name.to_owned();
        let request = ClientRequest::GetPromptRequest(rmcp::model::GetPromptRequest::new(params));
        match self.request(request, cx).await? {
            ServerResult::GetPromptResult(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the upstream for completions.
    pub async fn complete(
        &self,
        params: CompleteRequestParams,
        cx: &CallContext,
    ) -> Result<CompleteResult, CallError> {
        let request = ClientRequest::CompleteRequest(rmcp::model::CompleteRequest::new(params));
        match self.request(request, cx).await? {
            ServerResult::CompleteResult(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    /// Subscribes to (or unsubscribes from) one of the upstream's resources.
    // Upstreams are reached over 2025-11-25, where resources/subscribe is the way to subscribe.
    #[allow(deprecated)]
    pub async fn subscribe(&self, uri: &str, on: bool, cx: &CallContext) -> Result<(), CallError> {
        let request = if on {
            ClientRequest::SubscribeRequest(rmcp::model::SubscribeRequest::new(
                rmcp::model::SubscribeRequestParams::new(uri.to_owned()),
            ))
        } else {
            ClientRequest::UnsubscribeRequest(rmcp::model::UnsubscribeRequest::new(
                rmcp::model::UnsubscribeRequestParams::new(uri.to_owned()),
            ))
        };
        self.request(request, cx).await.map(|_| ())
    }

    fn unexpected(&self, other: ServerResult) -> CallError {
        CallError::Protocol {
            server: self.spec.name.clone(),
            error: rmcp::ErrorData::internal_error(
                format!(
                    "server `{}` sent an unexpected kind of result: {other:?}",
                    self.spec.name
                ),
                None,
            ),
        }
    }

    /// Sends one request with the agent's `_meta`, progress relay and cancellation.
    async fn request(
        &self,
        request: ClientRequest,
        cx: &CallContext,
    ) -> Result<ServerResult, CallError> {
        let peer = self.peer()?;
        let mut options = PeerRequestOptions::no_options();
        if let Some(meta) = outgoing_meta(cx.meta.as_ref(), &tracing::Span::current()) {
            options = options.with_meta(meta);
        }
        let handle = peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| self.service_error(e))?;
        let _progress = cx.progress.as_ref().map(|(agent, token)| {
            self.relay.register_progress(
                &self.spec.name,
                handle.progress_token.clone(),
                agent.clone(),
                token.clone(),
            )
        });
        let mut guard = CancelOnDrop {
            peer,
            id: Some(handle.id.clone()),
        };
        let response = tokio::select! {
            r = handle.await_response() => r,
            _ = cx.ct.cancelled() => return Err(CallError::Cancelled),
        };
        guard.id = None;
        response.map_err(|e| self.service_error(e))
    }

    fn service_error(&self, e: ServiceError) -> CallError {
        match e {
            ServiceError::McpError(error) => CallError::Protocol {
                server: self.spec.name.clone(),
                error,
            },
            ServiceError::Cancelled { .. } => CallError::Cancelled,
            other => CallError::ConnectionLost {
                server: self.spec.name.clone(),
                detail: other.to_string(),
            },
        }
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

fn new_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn list_offer(peer: &Peer<RoleClient>) -> Result<Offer, ServiceError> {
    let caps = peer
        .peer_info()
        .map(|i| i.capabilities.clone())
        .unwrap_or_default();
    let tools = if caps.tools.is_some() {
        peer.list_all_tools().await?
    } else {
        Vec::new()
    };
    let (resources, templates) = if caps.resources.is_some() {
        (
            peer.list_all_resources().await.unwrap_or_default(),
            peer.list_all_resource_templates().await.unwrap_or_default(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let prompts = if caps.prompts.is_some() {
        peer.list_all_prompts().await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let validators = tools
        .iter()
        .filter_map(|tool| {
            let schema = serde_json::Value::Object((*tool.input_schema).clone());
            match jsonschema::validator_for(&schema) {
                Ok(v) => Some((tool.name.to_string(), Arc::new(v))),
                Err(e) => {
                    tracing::warn!(tool = %tool.name, error = %e, "input schema does not compile; arguments pass unchecked");
                    None
                }
            }
        })
        .collect();
    Ok(Offer {
        tools,
        resources,
        templates,
        prompts,
        validators,
    })
}
