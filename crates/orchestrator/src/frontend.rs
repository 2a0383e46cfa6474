//! The MCP server agents connect to: the catalog's tools, resources and prompts, each request
//! routed to the upstream that owns it.
//!
//! Each `tools/call` runs in one span naming its correlation id (the agent's, or generated; see
//! [`kit::correlation`]), which every upstream request carries in `_meta.correlationId` and the
//! result returns in its `_meta`; one `agent call` line per call logs its outcome.
//!
//! Two limits apply to every `tools/call` here (see [`crate::limits`]): the session's cap on calls
//! in flight, checked before any routing, and the result size, checked on the way out. A third
//! caps the resource subscriptions one session holds ([`crate::subscriptions`]).

use std::{sync::Arc, time::Instant};

use kit::correlation::CorrelationId;

use futures::FutureExt as _;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, CompleteRequestMethod,
        CompleteRequestParams, CompleteResult, GetPromptRequestMethod, GetPromptRequestParams,
        GetPromptResponse, GetTaskParams, GetTaskResult, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference, Resource,
        ResourceContents, ResultType, ServerConfig, ServerNotification, SubscribeRequestMethod,
        SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestMethod,
        UnsubscribeRequestParams, UpdateTaskParams,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext, SubscriptionSendError},
};
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument as _;

use crate::{
    ask::{
        Origin, UserWait,
        suspend::{Resume, Step},
    },
    catalog::Route,
    error::CallError,
    gateway::Gateway,
    limits::{client::ClientCalls, result_size},
    lists,
    relay::ListChange,
    status::{RECENT_SAGAS, SAGAS_URI, STATUS_URI, StatusReport},
    subscriptions::{SessionId, Subscribed, Unsubscribed},
    upstream::CallContext,
};

/// One agent session's handler; all sessions share the gateway.
#[derive(Debug, Clone)]
pub struct Frontend {
    gateway: Arc<Gateway>,
    /// Shared with the server loop, so a shutdown waits for the calls agents have in flight.
    in_flight: kit::in_flight::InFlight,
    /// This session's calls in flight, capped so that one agent cannot starve the others.
    calls: ClientCalls,
    /// Who this session is to the subscriptions; shared by clones of the handler, so its
    /// subscriptions are let go when the last clone (the session) is dropped.
    session: Arc<AgentSession>,
    /// Whether the front writes raw tool results ([`kit::raw_result`]) itself.
    raw_results: bool,
}

/// One agent session's identity; dropping it ends the session's resource subscriptions.
#[derive(Debug)]
struct AgentSession {
    id: SessionId,
    gateway: Arc<Gateway>,
}

impl Drop for AgentSession {
    /// An agent that leaves without unsubscribing must not keep upstream subscriptions alive:
    /// the URIs it was the last subscriber of are unsubscribed upstream, off this thread.
    fn drop(&mut self) {
        self.gateway.relay().log_levels().end_session(self.id);
        let orphaned = self.gateway.relay().subscriptions().end_session(self.id);
        if orphaned.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let gateway = self.gateway.clone();
            runtime.spawn(async move {
                for uri in orphaned {
                    release_upstream(&gateway, &uri, &CallContext::default()).await;
                }
            });
        }
    }
}

/// Unsubscribes the upstream from exposed `uri`, which just lost its last subscriber.
///
/// An agent may subscribe while this is on its way; its own upstream subscribe can then arrive
/// before this unsubscribe and be undone by it. So once the upstream has answered, a URI that
/// has a subscriber again is subscribed upstream again (subscribing twice is harmless).
async fn release_upstream(gateway: &Gateway, uri: &str, cx: &CallContext) {
    let generation = gateway.current();
    let Ok(target) = generation.catalog().resource(uri) else {
        return;
    };
    let upstream = generation.calls().upstream();
    // Reads stored before or during the subscription (none was served meanwhile: subscribed
    // resources are read from the upstream) may predate updates it told of.
    upstream.forget_reads(target.server, &target.name).await;
    if let Err(e) = upstream
        .subscribe(target.server, &target.name, false, cx)
        .await
    {
        tracing::debug!(uri, error = %e, "upstream unsubscribe failed");
    }
    if gateway.relay().subscriptions().is_subscribed(uri) {
        let _ = upstream
            .subscribe(target.server, &target.name, true, cx)
            .await;
    }
}

/// `_meta` keys that belong to one hop of the protocol and must not travel upstream.
fn is_per_hop_key(key: &str) -> bool {
    key == "progressToken" || key.starts_with("io.modelcontextprotocol/")
}

/// What an upstream request carries from the agent's request of `session`: its `_meta` without
/// the per-hop keys, with `correlationId` set to `correlation` so every upstream logs the call
/// under the agent's id, and the request's origin, where an upstream's questions go.
pub fn call_context_for(
    context: &RequestContext<RoleServer>,
    correlation: &CorrelationId,
    session: SessionId,
) -> CallContext {
    let mut meta = context.meta.clone();
    meta.0.retain(|k, _| !is_per_hop_key(k));
    meta.0.insert(
        kit::correlation::META_KEY.to_owned(),
        correlation.as_str().into(),
    );
    CallContext {
        meta: Some(meta),
        progress: context
            .meta
            .get_progress_token()
            .map(|token| (context.peer.clone(), token)),
        ct: context.ct.clone(),
        hands_on_input: false,
        resume: None,
        raw_results: false,
        origin: Some(Arc::new(Origin {
            agent: context.peer.clone(),
            request: context.id.clone(),
            session,
            capabilities: context.client_capabilities(),
            protocol: context.protocol_version(),
            wait: UserWait::default(),
            ct: context.ct.clone(),
            questions: None,
        })),
    }
}

impl Frontend {
    /// A handler over the running gateway: one per agent session (the front calls this once per
    /// stdio connection or HTTP session), so each session gets its own cap on calls in flight.
    pub fn new(gateway: Arc<Gateway>, in_flight: kit::in_flight::InFlight) -> Self {
        let calls = ClientCalls::new(gateway.config().limits.max_concurrent_calls_per_client);
        let session = Arc::new(AgentSession {
            id: SessionId::next(),
            gateway: gateway.clone(),
        });
        Self {
            gateway,
            in_flight,
            calls,
            session,
            raw_results: false,
        }
    }

    /// The name of the server `tool` leads to, for errors about its answers (the tool's own
    /// name if it leads to none now).
    fn server_of(&self, tool: &str) -> String {
        let generation = self.gateway.current();
        match generation.catalog().route(tool) {
            Ok(Route::Upstream(target)) => generation.upstreams()[target.server].name().to_owned(),
            _ => tool.to_owned(),
        }
    }

    /// For a front whose writer splices tool results relayed raw ([`kit::framing`] over
    /// stdio): pass-through answers reach it as the upstream wrote them, unparsed. A front that
    /// serializes rmcp's types itself (streamable HTTP) gets them typed.
    pub fn writing_raw_results(mut self) -> Self {
        self.raw_results = true;
        self
    }

    /// A finished call's answer to the agent: logged, its correlation id set, cut to
    /// `maxResultBytes`.
    fn answer(
        &self,
        tool: &str,
        outcome: Result<CallToolResponse, CallError>,
        span: &tracing::Span,
        started: Instant,
        correlation: &CorrelationId,
    ) -> Result<CallToolResponse, ErrorData> {
        let label = crate::policy::outcome_label(&outcome);
        if label != "ok" {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", label.as_str());
        }
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        span.in_scope(|| tracing::info!(outcome = %label, elapsed_ms, "agent call"));
        let mut answer = match outcome {
            Ok(result) => Ok(result),
            Err(e) => e.into_tool_answer().map(Into::into),
        };
        // A task names the call's id too; its result, read later, is the upstream's own.
        if let Ok(CallToolResponse::Task(task)) = &mut answer {
            kit::correlation::set_in_meta(&mut task.meta, correlation);
        }
        // A pass-through result is the upstream's own, which already names this id (unless it
        // came from the cache, or the upstream ignores `_meta`): set it either way.
        if let Ok(CallToolResponse::Complete(result)) = &mut answer {
            kit::correlation::set_in_meta(&mut result.meta, correlation);
            mark_complete(&mut result.result_type);
            let limit = self.gateway.config().limits.max_result_bytes;
            // A raw result's size is known exactly; one over the limit is cut as the typed
            // result it stands for.
            let fits = match kit::raw_result::written_len(result) {
                Some(len) if len <= limit => true,
                Some(_) => {
                    match crate::call::typed(&self.server_of(tool), std::mem::take(result)) {
                        Ok(typed) => {
                            *result = typed;
                            false
                        }
                        Err(e) => return e.into_tool_answer().map(Into::into),
                    }
                }
                None => false,
            };
            if !fits && let Some(cut) = result_size::truncate(result, limit) {
                let metrics = self.gateway.metrics();
                metrics.limit_enforced(crate::metrics::LimitEvent::ResultBytes);
                span.in_scope(|| {
                    tracing::warn!(
                        original_bytes = cut.original_bytes,
                        limit_bytes = cut.limit_bytes,
                        "result truncated to orchestrator.limits.maxResultBytes"
                    )
                });
            }
        }
        answer
    }

    /// What a request-scoped agent's request comes to: the finished call's answer, or the
    /// questions it waits on, with a state to come back with.
    fn finish_scoped(
        &self,
        tool: &str,
        agent_caps: Option<&rmcp::model::ClientCapabilities>,
        step: Step,
        span: &tracing::Span,
        started: Instant,
        correlation: &CorrelationId,
    ) -> Result<CallToolResponse, ErrorData> {
        match step {
            Step::NeedsInput(asked) => Ok(asked.into()),
            Step::Finished(Err(CallError::NeedsInput { server, asked })) => {
                // Never put to an agent what it did not declare it can answer.
                for request in asked.input_requests.iter().flat_map(|r| r.values()) {
                    if let Some((method, request)) = crate::ask::rounds::as_request(request.clone())
                        && let Some(needed) = crate::ask::capability::missing(agent_caps, &request)
                    {
                        return Err(crate::ask::capability::refusal(needed, method));
                    }
                }
                let mut asked = *asked;
                let upstream_state = asked.request_state.take();
                asked.request_state = Some(self.gateway.suspensions().seal_upstream(
                    tool,
                    &server,
                    upstream_state,
                ));
                Ok(asked.into())
            }
            Step::Finished(outcome) => self.answer(tool, outcome, span, started, correlation),
        }
    }

    /// Runs a request-scoped agent's call in a task of its own, so that it can be held while
    /// the agent answers what it asks ([`crate::ask::suspend`]).
    async fn start_held(
        &self,
        request: CallToolRequestParams,
        mut cx: CallContext,
        slot: tokio::sync::OwnedSemaphorePermit,
        span: &tracing::Span,
        agent_ct: &tokio_util::sync::CancellationToken,
    ) -> Step {
        let (questions, asked) = tokio::sync::mpsc::unbounded_channel();
        // The call outlives the request that started it: its own token, cancelled by whichever
        // of the agent's requests is waiting on it, or when it is given up.
        let ct = tokio_util::sync::CancellationToken::new();
        cx.ct = ct.clone();
        if let Some(origin) = cx.origin.take() {
            let mut origin = (*origin).clone();
            origin.questions = Some(questions);
            origin.ct = ct.clone();
            cx.origin = Some(Arc::new(origin));
        }
        let gateway = self.gateway.clone();
        let name = request.name.to_string();
        let arguments = request.arguments;
        let task = tokio::spawn(
            async move {
                let _slot = slot;
                gateway.call_tool_response(&name, arguments, &cx).await
            }
            .instrument(span.clone()),
        );
        self.gateway
            .suspensions()
            .start(&request.name, task, asked, ct, agent_ct)
            .await
    }

    fn sagas_resource() -> Resource {
        Resource::new(SAGAS_URI, "sagas")
            .with_title("Recent sagas")
            .with_description(
                "The most recent saga composites from the saga log: state, failed step, each step and undo",
            )
            .with_mime_type("application/json")
    }

    fn status_resource() -> Resource {
        Resource::new(STATUS_URI, "status")
            .with_title("Orchestrator status")
            .with_description("Per server: connection, tools, calls, errors, latency")
            .with_mime_type("application/json")
    }
}

// Each handler's upstream request is awaited boxed (`.boxed()`): rmcp holds every request's
// handler future in one type, as large as the largest handler's, and moves it into a task per
// request. Inline, the rare handlers' state machines (tasks, prompts, completion, subscriptions)
// made each `tools/call` copy kilobytes several times.
impl ServerHandler for Frontend {
    /// What the upstreams offer now and what the orchestrator serves itself
    /// ([`crate::capabilities`]): computed per call, so each new session (and each 2026-07-28
    /// `server/discover`) sees the current union.
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(self.gateway.catalog().offered().advertised())
            .with_server_info(Implementation::new(
                "mcp-orchestrator",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "One server in front of many: tools are named <server>__<tool>. \
             Read orchestrator://status for the state of every upstream.",
            )
    }

    /// 2026-07-28 agents hear of list changes through `subscriptions/listen`. Resource update
    /// subscriptions stay with the legacy `resources/subscribe` (they need an upstream
    /// subscription per URI), so they are not accepted here.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = requested.clone();
        accepted.resource_subscriptions = None;
        Some(accepted)
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.gateway.relay().list_changes();
        loop {
            let change = tokio::select! {
                _ = subscription.cancelled() => return Ok(()),
                change = changes.recv() => change,
            };
            let sent: Vec<ListChange> = match change {
                Ok(change) => vec![change],
                // Fell behind: every list may have changed.
                Err(RecvError::Lagged(_)) => {
                    vec![
                        ListChange::Tools,
                        ListChange::Resources,
                        ListChange::Prompts,
                    ]
                }
                Err(RecvError::Closed) => return Ok(()),
            };
            for change in sent {
                let notification = match change {
                    ListChange::Tools => {
                        ServerNotification::ToolListChangedNotification(Default::default())
                    }
                    ListChange::Resources => {
                        ServerNotification::ResourceListChangedNotification(Default::default())
                    }
                    ListChange::Prompts => {
                        ServerNotification::PromptListChangedNotification(Default::default())
                    }
                };
                match subscription.sink().send(notification).boxed().await {
                    Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
                    Err(_) => return Ok(()),
                }
            }
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.gateway.relay().add_agent(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(lists::tools(&self.gateway.catalog()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.gateway.catalog().tool_definition(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let _in_flight = self.in_flight.enter();
        let started = Instant::now();
        let correlation = kit::correlation::of_request(&context);
        let mut cx = call_context_for(&context, &correlation, self.session.id);
        cx.raw_results = self.raw_results;
        let span = tracing::info_span!(
            "tools/call",
            otel.name = %format!("tools/call {}", request.name),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            mcp.method.name = "tools/call",
            gen_ai.tool.name = %request.name,
            mcp.cache.hit = tracing::field::Empty,
            error.type = tracing::field::Empty,
            correlation_id = %correlation,
        );
        kit::telemetry::continue_trace_from_meta(&span, &context.meta);
        // A 2026-07-28 agent is asked through its call's result: its call may be held between
        // requests, and a retry with `requestState` resumes it.
        let request_scoped = cx.origin.as_ref().is_some_and(|o| o.is_request_scoped());
        let tool = request.name.to_string();
        let agent_caps = cx.origin.as_ref().and_then(|o| o.capabilities.clone());
        if request_scoped {
            cx.hands_on_input = true;
        }
        if request_scoped && let Some(state) = &request.request_state {
            let suspensions = self.gateway.suspensions();
            match suspensions.open(&tool, state)? {
                Resume::Held(id) => {
                    let step = suspensions
                        .resume(id, request.input_responses.as_ref(), &context.ct)
                        .instrument(span.clone())
                        .boxed()
                        .await?;
                    return self.finish_scoped(
                        &tool,
                        agent_caps.as_ref(),
                        step,
                        &span,
                        started,
                        &correlation,
                    );
                }
                // The upstream's own questions: the call goes to it again with the answers.
                Resume::Upstream { server, state } => {
                    let generation = self.gateway.current();
                    let routed = match generation.catalog().route(&tool) {
                        Ok(Route::Upstream(target)) => {
                            generation.upstreams()[target.server].name() == server
                        }
                        _ => false,
                    };
                    if !routed {
                        return Err(ErrorData::invalid_params(
                            format!(
                                "requestState resumes a call of server `{server}`, which `{tool}` no longer leads to"
                            ),
                            None,
                        ));
                    }
                    let answers = request.input_responses.clone().unwrap_or_default();
                    cx.resume = Some((answers, state));
                }
            }
        }
        // Refused at once, never queued: a queue would let one agent hold the others' turn.
        let outcome = match self.calls.try_enter() {
            Ok(slot) if request_scoped => {
                let step = self
                    .start_held(request, cx, slot, &span, &context.ct)
                    .boxed()
                    .await;
                return self.finish_scoped(
                    &tool,
                    agent_caps.as_ref(),
                    step,
                    &span,
                    started,
                    &correlation,
                );
            }
            Ok(_slot) => {
                // Boxed: the gateway's call is a large state machine, and rmcp moves the
                // handler's future several times per request (into a task, through its
                // dispatch). Behind a box each move copies a pointer, not kilobytes: callgrind
                // counts about 70,000 fewer instructions per pass-through call.
                Box::pin(tracing::Instrument::instrument(
                    self.gateway
                        .call_tool_response(&request.name, request.arguments, &cx),
                    span.clone(),
                ))
                .await
            }
            Err(full) => {
                let metrics = self.gateway.metrics();
                metrics.limit_enforced(crate::metrics::LimitEvent::ClientCalls);
                Ok(full.to_tool_error().to_call_tool_result().into())
            }
        };
        self.answer(&tool, outcome, &span, started, &correlation)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut own = vec![Self::status_resource()];
        if self.gateway.config().workflows.iter().any(|w| w.is_saga()) {
            own.push(Self::sagas_resource());
        }
        Ok(lists::resources(&self.gateway.catalog(), own))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(lists::templates(&self.gateway.catalog()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri == STATUS_URI || request.uri == SAGAS_URI {
            let report = if request.uri == STATUS_URI {
                serde_json::to_value(StatusReport::of(&self.gateway))
            } else {
                let log = self.gateway.calls().composites().existing_saga_log();
                let sagas = match &log {
                    Some(log) => log
                        .recent(RECENT_SAGAS)
                        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?,
                    None => Vec::new(),
                };
                serde_json::to_value(serde_json::json!({
                    "log": log.as_ref().map(|l| l.path().display().to_string()),
                    "sagas": sagas,
                }))
            };
            let json = report
                .and_then(|r| serde_json::to_string_pretty(&r))
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            let mut contents = ResourceContents::text(json, request.uri.clone());
            if let ResourceContents::TextResourceContents { mime_type, .. } = &mut contents {
                *mime_type = Some("application/json".into());
            }
            return Ok(lists::status_read(ReadResourceResult::new(vec![contents])).into());
        }
        // A subscribed resource's upstream tells of its changes: it is read fresh each time.
        let from = if self
            .gateway
            .relay()
            .subscriptions()
            .is_subscribed(&request.uri)
        {
            crate::call::ReadFrom::Upstream
        } else {
            crate::call::ReadFrom::CacheOrUpstream
        };
        let generation = self.gateway.current();
        let target = generation
            .catalog()
            .resource(&request.uri)
            .map_err(CallError::into_error_data)?;
        let (span, cx) = request_span("resources/read", &request.uri, &context, self.session.id);
        let calls = generation.calls().upstream();
        let mut result = calls
            .read_resource(target.server, &target.name, from, &cx)
            .instrument(span)
            .boxed()
            .await
            .map_err(CallError::into_error_data)?;
        let upstream = &calls.upstreams()[target.server];
        let (server, prefix) = (upstream.name(), &upstream.spec().prefix);
        // Contents name the URI the agent asked for, not the upstream's own.
        for c in &mut result.contents {
            match c {
                ResourceContents::TextResourceContents { uri, .. }
                | ResourceContents::BlobResourceContents { uri, .. } => {
                    *uri = crate::naming::expose_uri_of(server, prefix, uri);
                }
                _ => {}
            }
        }
        mark_complete(&mut result.result_type);
        Ok(result.into())
    }

    /// Subscribes this session to `uri`: once, however often it asks, within
    /// `maxSubscriptionsPerClient`. Each session's first subscribe to a URI goes upstream too
    /// (upstreams take a repeated subscribe as one), so no agent relies on another's subscribe
    /// having reached the upstream.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if !self.gateway.catalog().offered().subscribe {
            return Err(ErrorData::method_not_found::<SubscribeRequestMethod>());
        }
        if request.uri == STATUS_URI || request.uri == SAGAS_URI {
            return Ok(());
        }
        let generation = self.gateway.current();
        let target = generation
            .catalog()
            .resource(&request.uri)
            .map_err(CallError::into_error_data)?;
        let upstream = &generation.upstreams()[target.server];
        if !crate::capabilities::subscribes(&upstream.offer().capabilities) {
            return Err(ErrorData::invalid_params(
                format!(
                    "resource `{}`: server `{}` does not offer subscriptions",
                    request.uri,
                    upstream.name()
                ),
                None,
            ));
        }
        let subscriptions = self.gateway.relay().subscriptions();
        let limit = self.gateway.config().limits.max_subscriptions_per_client;
        match subscriptions.subscribe(&request.uri, self.session.id, context.peer.clone(), limit) {
            Ok(Subscribed::Already) => return Ok(()),
            Ok(Subscribed::New) => {}
            Err(full) => {
                self.gateway
                    .metrics()
                    .limit_enforced(crate::metrics::LimitEvent::Subscriptions);
                tracing::warn!(
                    limit = full.limit,
                    "resources/subscribe refused: {}",
                    crate::subscriptions::CONFIG_PATH
                );
                return Err(full.to_error_data());
            }
        }
        let (span, cx) = request_span(
            "resources/subscribe",
            &request.uri,
            &context,
            self.session.id,
        );
        let subscribed = generation
            .calls()
            .upstream()
            .subscribe(target.server, &target.name, true, &cx)
            .instrument(span)
            .boxed()
            .await;
        if let Err(e) = subscribed {
            // The upstream refused; the session holds no subscription it does not have.
            subscriptions.unsubscribe(&request.uri, self.session.id);
            return Err(e.into_error_data());
        }
        Ok(())
    }

    /// Ends this session's subscription to `uri`, and no other session's; the upstream is
    /// unsubscribed when no session is subscribed any more.
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if !self.gateway.catalog().offered().subscribe {
            return Err(ErrorData::method_not_found::<UnsubscribeRequestMethod>());
        }
        let left = self
            .gateway
            .relay()
            .subscriptions()
            .unsubscribe(&request.uri, self.session.id);
        if left == Unsubscribed::Last {
            let (span, cx) = request_span(
                "resources/unsubscribe",
                &request.uri,
                &context,
                self.session.id,
            );
            release_upstream(&self.gateway, &request.uri, &cx)
                .instrument(span)
                .boxed()
                .await;
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        lists::prompts(&self.gateway.catalog())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if !self.gateway.catalog().offered().prompts {
            return Err(ErrorData::method_not_found::<GetPromptRequestMethod>());
        }
        let generation = self.gateway.current();
        let target = generation
            .catalog()
            .prompt(&request.name)
            .map_err(CallError::into_error_data)?
            .clone();
        let (span, cx) = request_span("prompts/get", &request.name, &context, self.session.id);
        let mut result = generation
            .calls()
            .upstream()
            .get_prompt(target.server, request, &target.name, &cx)
            .instrument(span)
            .boxed()
            .await
            .map_err(CallError::into_error_data)?;
        mark_complete(&mut result.result_type);
        Ok(result.into())
    }

    async fn complete(
        &self,
        mut request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let generation = self.gateway.current();
        let catalog = generation.catalog();
        if !catalog.offered().completions {
            return Err(ErrorData::method_not_found::<CompleteRequestMethod>());
        }
        // A prompt or resource whose server offers no completions has none to suggest: answered
        // here, not sent to a server that never advertised the method.
        if let Some(server) = completion_server(&catalog, &request.r#ref)
            && !crate::capabilities::completes(&generation.upstreams()[server].offer().capabilities)
        {
            let mut none = CompleteResult::default();
            mark_complete(&mut none.result_type);
            return Ok(none);
        }
        let server = match &mut request.r#ref {
            Reference::Prompt(p) => {
                let route = catalog
                    .prompt(&p.name)
                    .map_err(CallError::into_error_data)?;
                p.name = route.name.clone();
                route.server
            }
            Reference::Resource(r) => {
                let route = catalog
                    .resource(&r.uri)
                    .map_err(CallError::into_error_data)?;
                r.uri = route.name.clone();
                route.server
            }
            _ => {
                return Err(ErrorData::invalid_params(
                    "completion reference must be ref/prompt or ref/resource",
                    None,
                ));
            }
        };
        let (span, cx) = request_span("completion/complete", "", &context, self.session.id);
        let mut result = generation
            .calls()
            .upstream()
            .complete(server, request, &cx)
            .instrument(span)
            .boxed()
            .await
            .map_err(CallError::into_error_data)?;
        mark_complete(&mut result.result_type);
        Ok(result)
    }

    // Logging is deprecated from 2026-07-28 on, but 2025-11-25 agents still send setLevel.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tracing::info!(level = ?request.level, "agent set the log level");
        // A 2026-07-28 agent has no session to hear log messages on.
        let request_scoped = context
            .protocol_version()
            .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28);
        if request_scoped {
            return Ok(());
        }
        let wanted = self.gateway.relay().log_levels().set(
            self.session.id,
            context.peer.clone(),
            request.level,
        );
        // Each upstream that logs is asked for the most verbose level any agent wants; each
        // agent then gets what it asked for.
        let generation = self.gateway.current();
        let calls = generation.calls().upstream();
        let cx = call_context_for(
            &context,
            &kit::correlation::of_request(&context),
            self.session.id,
        );
        for (server, upstream) in calls.upstreams().iter().enumerate() {
            let logs = upstream.offer().capabilities.logging.is_some();
            let legacy = upstream.protocol().as_deref() == Some("2025-11-25");
            if logs
                && legacy
                && let Err(e) = calls.set_level(server, wanted, &cx).boxed().await
            {
                tracing::info!(server = %upstream.name(), error = %e, "upstream setLevel failed");
            }
        }
        Ok(())
    }

    /// `tasks/get` of a task an upstream created for this agent ([`crate::tasks`]); rmcp has
    /// checked that tasks are advertised and that the agent declared them.
    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let (span, cx) = request_span("tasks/get", &request.task_id, &context, self.session.id);
        let mut result = self
            .gateway
            .calls()
            .get_task(request, &cx)
            .instrument(span)
            .boxed()
            .await?;
        let limit = self.gateway.config().limits.max_result_bytes;
        if crate::tasks::limit_result(&mut result, limit).is_some() {
            let metrics = self.gateway.metrics();
            metrics.limit_enforced(crate::metrics::LimitEvent::ResultBytes);
        }
        Ok(result)
    }

    /// `tasks/update`: the agent's input responses go to the task's upstream unchanged.
    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let (span, cx) = request_span("tasks/update", &request.task_id, &context, self.session.id);
        let calls = self.gateway.calls();
        calls
            .update_task(request, &cx)
            .instrument(span)
            .boxed()
            .await
    }

    /// `tasks/cancel`: passed to the task's upstream, whose cancellation is cooperative.
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let (span, cx) = request_span("tasks/cancel", &request.task_id, &context, self.session.id);
        let calls = self.gateway.calls();
        calls
            .cancel_task(request, &cx)
            .instrument(span)
            .boxed()
            .await
    }

    /// rmcp hands over a request it could not type: an unknown method (`-32601`), or a method it
    /// knows whose params do not fit (`-32602`, which rmcp's default would call unknown).
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        let advertised = self.gateway.catalog().offered().tasks;
        let declared = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        if let Some(e) = crate::tasks::untyped_request_error(&request, advertised, declared) {
            return Err(e);
        }
        Err(kit::framing::custom_request_error(&request))
    }
}

/// The server span of a request other than `tools/call` that reaches an upstream, and the
/// context its upstream request carries (its correlation id named in both).
fn request_span(
    method: &'static str,
    target: &str,
    context: &RequestContext<RoleServer>,
    session: SessionId,
) -> (tracing::Span, CallContext) {
    let correlation = kit::correlation::of_request(context);
    let span = tracing::info_span!(
        "mcp.request",
        otel.name = %format!("{method} {target}").trim_end(),
        otel.kind = "server",
        mcp.method.name = method,
        correlation_id = %correlation,
    );
    kit::telemetry::continue_trace_from_meta(&span, &context.meta);
    (span, call_context_for(context, &correlation, session))
}

/// Results relayed from an upstream that speaks an older protocol carry no `resultType`, which
/// 2026-07-28 agents require on every result; rmcp strips `complete` again for older agents.
fn mark_complete(result_type: &mut Option<ResultType>) {
    result_type.get_or_insert(ResultType::COMPLETE);
}

/// The upstream a completion reference leads to, if it names a known prompt or resource.
fn completion_server(catalog: &crate::catalog::Catalog, reference: &Reference) -> Option<usize> {
    match reference {
        Reference::Prompt(p) => catalog.prompt(&p.name).ok().map(|t| t.server),
        Reference::Resource(r) => catalog.resource(&r.uri).ok().map(|t| t.server),
        _ => None,
    }
}
