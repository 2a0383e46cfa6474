//! The one way down to an upstream. Every request an agent's call causes, whether a pass-through
//! `tools/call`, a composite's step or a `resources/read`, goes through [`UpstreamCalls`]: the
//! server's policy stack (deadline, retry when safe, breaker, bulkhead, attempt timeout), its
//! figures in status and metrics, and its spans. For `tools/call` also: the listing check,
//! argument validation, the cache and the invalidations a write causes.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
    JsonObject, ServerResult, Tool,
};
use serde_json::Value;

use crate::{
    cache::{CacheSpec, Lookup, ResultCache},
    config::Config,
    context::CallContext,
    error::CallError,
    metrics::Metrics,
    policy::{CallReport, Op, Plan, classify::Answer},
    upstream::{Offer, Upstream},
    workflow::{
        definition::Step,
        executor::{StepCall, StepRunner},
    },
};

/// What one upstream tool call gave: a result, or (from [`UpstreamCalls::call_tool_response`])
/// possibly a task.
#[derive(Debug)]
pub struct ToolCall<R = CallToolResult> {
    /// The upstream's answer (or the cache's), or why there is none.
    pub outcome: Result<R, CallError>,
    /// Its attempts and retry delays.
    pub report: CallReport,
    /// Whether the cache answered.
    pub cached: bool,
}

impl<R> ToolCall<R> {
    fn answered(outcome: Result<R, CallError>) -> Self {
        Self {
            outcome,
            report: CallReport::default(),
            cached: false,
        }
    }
}

/// The upstreams and what a call to them needs: the cache, its rules, the metrics.
#[derive(Debug)]
pub struct UpstreamCalls {
    upstreams: Vec<Arc<Upstream>>,
    config: Arc<Config>,
    cache: Arc<ResultCache>,
    metrics: Arc<Metrics>,
}

impl UpstreamCalls {
    /// Calls to `upstreams` (in config order), cached by `config.cache`'s rules.
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        config: Arc<Config>,
        cache: Arc<ResultCache>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            upstreams,
            config,
            cache,
            metrics,
        }
    }

    /// The upstreams, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The result cache.
    pub fn cache(&self) -> &Arc<ResultCache> {
        &self.cache
    }

    /// The configuration the calls follow.
    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    /// Where calls are recorded.
    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `tools/call` of upstream `server`'s own `tool`: through the cache when the tool (or the
    /// composite step's `cache`) asks for it, then the server's policy stack.
    pub async fn call_tool(
        &self,
        server: usize,
        tool: &str,
        arguments: Option<JsonObject>,
        cache: Option<&CacheSpec>,
        cx: &CallContext,
    ) -> ToolCall {
        let call = self
            .call_tool_response(server, tool, arguments, cache, false, cx)
            .await;
        let server = self.upstreams[server].name();
        ToolCall {
            outcome: call.outcome.and_then(|r| completed(server, r)),
            report: call.report,
            cached: call.cached,
        }
    }

    /// [`UpstreamCalls::call_tool`], for an agent that declared the tasks extension when
    /// `tasks`: the upstream is told so ([`crate::tasks::declaring`]) and may answer with a
    /// task. A call the cache serves never is: the cache needs the result itself.
    pub async fn call_tool_response(
        &self,
        server: usize,
        tool: &str,
        arguments: Option<JsonObject>,
        cache: Option<&CacheSpec>,
        tasks: bool,
        cx: &CallContext,
    ) -> ToolCall<CallToolResponse> {
        let upstream = &self.upstreams[server];
        let offer = upstream.offer();
        let definition = offer.tools.iter().find(|t| t.name == tool);
        if definition.is_none() && upstream.connected_since().is_some() {
            return ToolCall::answered(Err(CallError::Unknown {
                what: "tool",
                name: format!("{}.{tool} (the server does not list it)", upstream.name()),
            }));
        }
        let args_value = Value::Object(arguments.clone().unwrap_or_default());
        if let Some(refusal) = check_arguments(&offer, tool, &args_value) {
            return ToolCall::answered(Ok(refusal.into()));
        }
        let plan = upstream
            .policy()
            .plan_tool(tool, definition, arguments.as_ref())
            .waiting_on(cx);
        let call_name = format!("{}.{tool}", upstream.name());
        let started = Instant::now();
        // Whether this call itself asked the server: not when the cache answered, nor when it
        // shared another caller's load (that caller counts the request).
        let (call, sent) = match self.cache_spec(&call_name, cache, definition) {
            Some(spec) => {
                // Boxed: the cache's single-flight load is a large state machine that the
                // uncached calls should not carry.
                let (call, sent) = Box::pin(self.cached_call(
                    upstream,
                    tool,
                    &plan,
                    arguments,
                    spec,
                    &args_value,
                    cx,
                ))
                .await;
                let call = ToolCall {
                    outcome: call.outcome.map(Into::into),
                    report: call.report,
                    cached: call.cached,
                };
                (call, sent)
            }
            None => {
                let (outcome, report) = self
                    .send_tool(upstream, tool, &plan, arguments, tasks, cx)
                    .await;
                let call = ToolCall {
                    outcome,
                    report,
                    cached: false,
                };
                (call, true)
            }
        };
        // The pass-through call's span, or the composite step's.
        tracing::Span::current().record("mcp.cache.hit", call.cached);
        if sent {
            self.record(upstream, tool, started, &call.outcome);
        }
        // A task counts as a write done: its outcome is not the orchestrator's to see.
        if call
            .outcome
            .as_ref()
            .is_ok_and(|r| r.tool_error().is_none())
        {
            self.invalidate_after_write(&call_name, &args_value).await;
        }
        // Raw only to a front that writes it itself; typed for everyone else.
        let mut call = call;
        if !cx.raw_results
            && let Ok(CallToolResponse::Complete(result)) = &mut call.outcome
            && kit::raw_result::members(result).is_some()
        {
            match typed(upstream.name(), std::mem::take(result)) {
                Ok(typed) => *result = typed,
                Err(e) => call.outcome = Err(e),
            }
        }
        call
    }

    /// Any other request to upstream `server` (`resources/read`, `prompts/get`,
    /// `completion/complete`, subscriptions): the same stack, with the server's read settings,
    /// counted in its figures under the method's name. `pick` takes the expected result out of
    /// the server's answer.
    pub async fn request<T>(
        &self,
        server: usize,
        op: Op<'_>,
        request: ClientRequest,
        cx: &CallContext,
        pick: fn(ServerResult) -> Result<T, Box<ServerResult>>,
    ) -> Result<T, CallError> {
        let upstream = &self.upstreams[server];
        let plan = upstream.policy().plan_read().waiting_on(cx);
        let started = Instant::now();
        let (outcome, _report) = upstream
            .policy()
            .call(op, &plan, || upstream.send(request.clone(), cx))
            .await;
        self.record(upstream, op.method, started, &outcome);
        pick(outcome?).map_err(|other| CallError::Protocol {
            server: upstream.name().to_owned(),
            error: rmcp::ErrorData::internal_error(
                format!(
                    "server `{}` answered `{}` with an unexpected kind of result: {}",
                    upstream.name(),
                    op.method,
                    describe(&other)
                ),
                None,
            ),
        })
    }

    /// Which cache rule applies: the cache section's entry for the tool, else the composite
    /// step's, but only for a tool the server annotates read-only (a cached write would be
    /// skipped on a hit).
    fn cache_spec<'a>(
        &'a self,
        call_name: &str,
        step: Option<&'a CacheSpec>,
        definition: Option<&Tool>,
    ) -> Option<&'a CacheSpec> {
        match (step, self.config.cache.tools.get(call_name)) {
            (_, Some(configured)) => Some(configured),
            (Some(step), None) if definition.is_some_and(crate::annotations::is_read_only) => {
                Some(step)
            }
            _ => None,
        }
    }

    /// One tool call through the server's stack; `tasks` declares the tasks extension for it.
    async fn send_tool(
        &self,
        upstream: &Upstream,
        tool: &str,
        plan: &Plan,
        arguments: Option<JsonObject>,
        tasks: bool,
        cx: &CallContext,
    ) -> (Result<CallToolResponse, CallError>, CallReport) {
        let declaring;
        let cx = if tasks {
            declaring = crate::tasks::declaring(cx);
            &declaring
        } else {
            cx
        };
        // Asked for raw only by a front that writes it, and of a server read line by line.
        let raw = cx.raw_results && upstream.relays_raw();
        let mut report = CallReport::default();
        // An upstream that needs input answers `input_required`; each round is a request of its
        // own through the stack (a retry repeats the round, not the questions already answered).
        let mut resume = cx.resume.clone();
        for _ in 0..crate::ask::rounds::MAX_ROUNDS {
            let (outcome, round) = upstream
                .policy()
                .call(Op::tool(tool), plan, || {
                    let mut params = CallToolRequestParams::new(tool.to_owned());
                    if let Some(args) = arguments.clone() {
                        params = params.with_arguments(args);
                    }
                    if let Some((answers, state)) = resume.clone() {
                        params = params.with_input_responses(answers);
                        if let Some(state) = state {
                            params = params.with_request_state(state);
                        }
                    }
                    let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
                    if raw {
                        crate::upstream::want_raw(&mut request);
                    }
                    upstream.send(request, cx)
                })
                .await;
            report.attempts.extend(round.attempts);
            report.retry_delays_ms.extend(round.retry_delays_ms);
            report.retry_stopped = round.retry_stopped;
            if round.reach != crate::policy::Reach::NotSent {
                report.reach = round.reach;
            }
            let asked = match outcome {
                Ok(ServerResult::CallToolResult(r)) => return (Ok(r.into()), report),
                Ok(ServerResult::CreateTaskResult(r)) if tasks => return (Ok(r.into()), report),
                // A 2026-07-28 agent's own call: the agent takes the questions as they are.
                Ok(ServerResult::InputRequiredResult(asked)) if cx.hands_on_input => {
                    let server = upstream.name().to_owned();
                    let asked = Box::new(asked);
                    return (Err(CallError::NeedsInput { server, asked }), report);
                }
                Ok(ServerResult::InputRequiredResult(asked)) => asked,
                Ok(other) => return (Err(unexpected(upstream.name(), other)), report),
                Err(e) => return (Err(e), report),
            };
            let state = asked.request_state.clone();
            let limit = upstream.spec().limits.user_input_timeout;
            // Boxed: a rare path, kept out of every call's future.
            match Box::pin(crate::ask::rounds::answer(asked, cx, limit)).await {
                Ok(answers) => resume = Some((answers, state)),
                Err(error) => {
                    let server = upstream.name().to_owned();
                    return (Err(CallError::Protocol { server, error }), report);
                }
            }
        }
        let error = rmcp::ErrorData::internal_error(
            format!(
                "the server still needed input after {} rounds",
                crate::ask::rounds::MAX_ROUNDS
            ),
            None,
        );
        let server = upstream.name().to_owned();
        (Err(CallError::Protocol { server, error }), report)
    }

    /// A tool call answered by the cache, or loaded once for every caller waiting on the key;
    /// with whether this caller's load ran (and so sent the request upstream).
    #[allow(clippy::too_many_arguments)]
    async fn cached_call(
        &self,
        upstream: &Upstream,
        tool: &str,
        plan: &Plan,
        arguments: Option<JsonObject>,
        spec: &CacheSpec,
        args_value: &Value,
        cx: &CallContext,
    ) -> (ToolCall, bool) {
        let call_name = format!("{}.{tool}", upstream.name());
        let slot = Mutex::new(CallReport::default());
        let sent = std::sync::atomic::AtomicBool::new(false);
        let mut tags = self.config.cache.tags_for(&call_name, args_value);
        tags.push(format!("server:{}", upstream.name()));
        let key = ResultCache::key(upstream.name(), tool, arguments.as_ref());
        let ttl = self.config.cache.settings.ttl(spec);
        let (result, lookup) = self
            .cache
            .get_or_load(key, ttl, tags, async {
                sent.store(true, std::sync::atomic::Ordering::Relaxed);
                let (r, report) = self
                    .send_tool(upstream, tool, plan, arguments, false, cx)
                    .await;
                if let Ok(mut s) = slot.lock() {
                    *s = report;
                }
                r.and_then(|r| completed(upstream.name(), r))
            })
            .await;
        self.metrics.cache_lookup(&call_name, lookup);
        let call = ToolCall {
            outcome: result.map(|r| (*r).clone()),
            report: slot.into_inner().unwrap_or_else(|e| e.into_inner()),
            cached: lookup == Lookup::Hit,
        };
        (call, sent.into_inner())
    }

    /// Counts one request in the server's status figures and metrics.
    fn record<T: Answer>(
        &self,
        upstream: &Upstream,
        what: &str,
        started: Instant,
        outcome: &Result<T, CallError>,
    ) {
        let failure = match outcome {
            Ok(r) => r.tool_error().map(|e| format!("{what}: {}", e.message)),
            Err(CallError::Cancelled | CallError::NeedsInput { .. }) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Err(CallError::TooLarge(e)) = outcome {
            self.metrics.limit_enforced(match e.what {
                crate::error::Oversize::Request => crate::metrics::LimitEvent::UpstreamRequestBytes,
                crate::error::Oversize::Answer => crate::metrics::LimitEvent::UpstreamMessageBytes,
            });
        }
        let elapsed = started.elapsed();
        upstream.stats().record(elapsed, failure.as_deref());
        self.metrics
            .upstream_call(upstream.name(), what, elapsed, outcome);
    }

    /// Drops the cache entries a successful write makes stale.
    /// With a shared layer, Redis and the other instances are told before the write's answer
    /// goes back (within the Redis timeout), so a read through another instance sees the write.
    async fn invalidate_after_write(&self, call_name: &str, args_value: &Value) {
        let stale = self.config.cache.invalidations_for(call_name, args_value);
        if !stale.is_empty() {
            let n = self.cache.invalidate_tags(&stale).await;
            tracing::info!(call = %call_name, tags = ?stale, entries = n, "cache invalidated by a write");
        }
    }
}

/// Arguments that break the tool's schema never leave: the agent learns which field is wrong
/// without a round trip, and the upstream (and its breaker) never sees them.
fn check_arguments(offer: &Offer, tool: &str, arguments: &Value) -> Option<CallToolResult> {
    let (field, message) = offer
        .validators
        .get(tool)
        .and_then(|v| kit::arguments::violation(v, arguments))?;
    Some(kit::ToolError::invalid_argument(&field, &message).to_call_tool_result())
}

/// The result of a call that was not allowed to become a task (or to need input).
pub(super) fn completed(
    server: &str,
    response: CallToolResponse,
) -> Result<CallToolResult, CallError> {
    match response {
        CallToolResponse::Complete(r) => typed(server, r),
        other => Err(unexpected(server, ServerResult::from(other))),
    }
}

/// `result` as rmcp's typed result: a tool result relayed raw ([`kit::raw_result`]) is read
/// now, for whoever needs its content; `server` names the sender of one that does not parse,
/// which fails the call as it would have failed on the typed path.
pub fn typed(server: &str, result: CallToolResult) -> Result<CallToolResult, CallError> {
    kit::raw_result::materialize(result).map_err(|e| CallError::Protocol {
        server: server.to_owned(),
        error: rmcp::ErrorData::internal_error(
            format!("server `{server}` sent a tool result that does not parse: {e}"),
            None,
        ),
    })
}

fn unexpected(server: &str, other: ServerResult) -> CallError {
    // rmcp could not type it as a tool result: say why, as the raw path does. Bounded too: serde
    // quotes a string of the wrong type whole.
    let why = match &other {
        ServerResult::CustomResult(custom) => {
            serde_json::from_value::<CallToolResult>(custom.0.clone()).err()
        }
        _ => None,
    };
    let message = match why {
        Some(e) => format!(
            "server `{server}` sent a tool result that does not parse: {}",
            bounded(e.to_string())
        ),
        None => format!(
            "server `{server}` sent an unexpected kind of result: {}",
            describe(&other)
        ),
    };
    CallError::Protocol {
        server: server.to_owned(),
        error: rmcp::ErrorData::internal_error(message, None),
    }
}

/// The most of an unexpected answer an error message quotes: an answer may be megabytes, and the
/// message goes to the agent, the log and the span.
const DESCRIBED_CHARS: usize = 200;

/// An unexpected answer as an error message names it: its kind and how it starts.
fn describe(result: &ServerResult) -> String {
    bounded(format!("{result:?}"))
}

/// `text` cut to [`DESCRIBED_CHARS`], saying how long it was.
fn bounded(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(DESCRIBED_CHARS) {
        let total = text.len();
        text.truncate(cut);
        text.push_str(&format!("… ({total} bytes in all)"));
    }
    text
}

/// A composite's steps call down through the same path as a pass-through call.
impl StepRunner for UpstreamCalls {
    fn call<'a>(
        &'a self,
        step: &'a Step,
        args: JsonObject,
        cx: &'a CallContext,
    ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'a>> {
        Box::pin(async move {
            let Some(server) = self.upstreams.iter().position(|u| u.name() == step.server) else {
                return StepCall::unsent(Err(CallError::NotConnected {
                    server: step.server.clone(),
                    last_error: None,
                }));
            };
            let call = self
                .call_tool(server, &step.tool, Some(args), step.cache.as_ref(), cx)
                .await;
            StepCall {
                outcome: call.outcome,
                cached: call.cached,
                reach: call.report.reach,
            }
        })
    }

    /// The policy stack's own rule for repeating a call, so a saga replays only what a retry
    /// would repeat.
    fn replay_safe(&self, step: &Step, args: &JsonObject) -> bool {
        let Some(upstream) = self.upstreams.iter().find(|u| u.name() == step.server) else {
            return false;
        };
        let offer = upstream.offer();
        let definition = offer.tools.iter().find(|t| t.name == step.tool);
        upstream
            .policy()
            .plan_tool(&step.tool, definition, Some(args))
            .safe
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CustomResult, ServerResult};
    use serde_json::json;

    use super::{DESCRIBED_CHARS, describe, unexpected};
    use crate::error::CallError;

    fn message(error: CallError) -> String {
        match error {
            CallError::Protocol { error, .. } => error.message.to_string(),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    /// A malformed tool result of 40 KB: the message says why it does not parse, and quotes
    /// none of it.
    #[test]
    fn a_tool_result_that_does_not_parse_is_named_not_quoted() {
        let text = "x".repeat(40_000);
        let answer = ServerResult::CustomResult(CustomResult(json!({
            "content": [{"type": "hologram", "text": text}],
        })));
        let message = message(unexpected("unruly", answer));
        assert!(
            message.starts_with("server `unruly` sent a tool result that does not parse: "),
            "{message}"
        );
        assert!(message.contains("hologram"), "{message}");
        assert!(message.len() < 1_000, "{} bytes", message.len());
    }

    /// `message` starts with `start`, and is cut short where it quoted a long answer.
    fn assert_cut_short(message: &str, start: &str) {
        assert!(message.starts_with(start), "{message}");
        assert!(message.ends_with(" bytes in all)"), "{message}");
        let most = DESCRIBED_CHARS + 200;
        assert!(message.len() < most, "{} bytes", message.len());
    }

    /// Another kind of result where a tool result was due: named by its start and size.
    #[test]
    fn an_unexpected_kind_of_result_is_cut_short() {
        let text = "y".repeat(40_000);
        let answer = ServerResult::ReadResourceResult(rmcp::model::ReadResourceResult::new(vec![
            rmcp::model::ResourceContents::text(text, "mem://big"),
        ]));
        assert_cut_short(
            &message(unexpected("unruly", answer)),
            "server `unruly` sent an unexpected kind of result: ReadResource",
        );
    }

    /// serde quotes a string of the wrong type in its error: a 40 KB one is cut short too.
    #[test]
    fn a_parse_error_that_quotes_the_result_is_cut_short() {
        let answer = ServerResult::CustomResult(CustomResult(json!({
            "content": "z".repeat(40_000),
        })));
        assert_cut_short(
            &message(unexpected("unruly", answer)),
            "server `unruly` sent a tool result that does not parse: ",
        );
    }

    #[test]
    fn a_short_answer_is_described_whole() {
        let answer = ServerResult::empty(());
        assert_eq!(describe(&answer), format!("{answer:?}"));
    }
}
