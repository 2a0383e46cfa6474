//! The per-server policy stack: the one path every upstream call takes, pass-through and
//! composite step alike.
//!
//! [`PolicyStack::call`] is where the order is decided; see its documentation.

pub mod breaker;
pub mod bulkhead;
pub mod classify;

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use rand::Rng;
use rmcp::model::{JsonObject, Tool};
use serde::Serialize;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::{Instrument, field::Empty};

use self::{
    breaker::{Breaker, BreakerPermit},
    bulkhead::Bulkhead,
    classify::{Answer, Health, Verdict, classify},
};
use crate::{
    config::policy::{CallPolicy, Jitter, ServerPolicy},
    error::CallError,
};

/// Window over which the retry budget counts calls.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// One attempt, for reports and the demo.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptReport {
    /// When it started, from the start of the call.
    pub started_ms: f64,
    /// How long it took.
    pub elapsed_ms: f64,
    /// `ok`, a tool error kind, or the call error's label.
    pub outcome: String,
    /// The upstream's wait hint, when it gave one.
    pub retry_after_ms: Option<f64>,
}

/// Why a call that ended on a failed attempt was not tried again.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryStop {
    /// The failure would not change on a repeat (`invalid`, `not_found`, "circuit open", ...).
    NotRetryable,
    /// Repeating could apply a write twice: the tool is not read-only or idempotent, the call
    /// carries no idempotency key, the config does not mark it `retrySafe`, and it was sent.
    Unsafe,
    /// `retry.maxAttempts` were made.
    MaxAttempts,
    /// The next delay would end past the call's deadline, or the deadline ended an attempt.
    Deadline,
    /// The server's retry budget refused the retry.
    Budget,
}

/// What happened during one call: its attempts and the delays between them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallReport {
    /// Attempts in order.
    pub attempts: Vec<AttemptReport>,
    /// Delays slept before each retry, in ms.
    pub retry_delays_ms: Vec<f64>,
    /// Why the last failed attempt was not repeated; `None` when the call succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_stopped: Option<RetryStop>,
    /// How the last attempt that reached the server ended: what a saga needs to know to tell a
    /// write that failed from one whose outcome is unknown.
    pub reach: Reach,
}

/// Whether a call reached its server, and if so whether the server's last word came back.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// No attempt was sent (refused by the breaker, the bulkhead, a hold, or not connected):
    /// the call had no effect.
    #[default]
    NotSent,
    /// The last attempt sent got an answer, success or error.
    Answered,
    /// The last attempt sent got no answer (timed out, the connection was lost, the caller
    /// cancelled, or the deadline cut it off): it may or may not have taken effect.
    Silent,
}

impl Reach {
    /// Where an attempt that was sent ended; `None` when it was not sent after all.
    fn of<T>(outcome: &Result<T, CallError>) -> Option<Self> {
        match outcome {
            Ok(_) | Err(CallError::Protocol { .. } | CallError::NeedsInput { .. }) => {
                Some(Reach::Answered)
            }
            Err(
                CallError::NotConnected { .. }
                | CallError::Unknown { .. }
                | CallError::CircuitOpen(_)
                | CallError::BulkheadFull(_)
                | CallError::Held { .. }
                | CallError::TooLarge(crate::error::TooLarge {
                    what: crate::error::Oversize::Request,
                    ..
                }),
            ) => None,
            Err(_) => Some(Reach::Silent),
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Reach::Answered,
            2 => Reach::Silent,
            _ => Reach::NotSent,
        }
    }
}

/// Counters of one server's stack, for status.
#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    budget_exhausted: AtomicU64,
    deadlines: AtomicU64,
}

/// A snapshot for `orchestrator://status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySnapshot {
    /// Attempts sent (first tries and retries).
    pub attempts: u64,
    /// Retries among them.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
    /// Calls that ran out of deadline.
    pub deadlines: u64,
    /// The breaker: state, counts, transitions.
    pub breaker: serde_json::Value,
    /// The bulkhead: running, queued, rejected.
    pub bulkhead: serde_json::Value,
}

/// One server's stack; shared by every call to that server.
pub struct PolicyStack {
    server: String,
    /// The resolved settings.
    pub policy: ServerPolicy,
    breaker: Arc<Breaker>,
    bulkhead: Bulkhead,
    budget: TpsBudget,
    counters: Counters,
    /// Until when the server asked every caller to wait (its last `retryAfterMs`), in nanoseconds
    /// from `created`; 0 when it did not. Shared by all calls, so one caller's hint holds them all.
    hold_until: AtomicU64,
    created: Instant,
}

/// The breaker permit of a call's last failed attempt, and how it failed: settled once the call
/// ends, so the breaker counts each logical call once, not each attempt.
type Pending = Mutex<Option<(BreakerPermit, Health)>>;

/// Reports a permit's outcome by the attempt's health.
fn settle(permit: BreakerPermit, health: Health) {
    match health {
        Health::Healthy => permit.success(),
        Health::Failing => permit.failure(),
        Health::Unreachable => permit.unreachable(),
        Health::Neutral => drop(permit),
    }
}

impl std::fmt::Debug for PolicyStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStack")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A failed attempt, carried through the retry loop.
struct Failed<T> {
    outcome: Result<T, CallError>,
    verdict: Verdict,
}

/// What a request is, for its span, its errors and its policy.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// The MCP method (`tools/call`, `resources/read`, ...).
    pub method: &'static str,
    /// What it names: the upstream's tool, prompt or resource URI (empty for a listing).
    pub target: &'a str,
}

impl<'a> Op<'a> {
    /// A `tools/call` of the upstream's own tool `name`.
    pub fn tool(name: &'a str) -> Self {
        Self {
            method: "tools/call",
            target: name,
        }
    }
}

/// How one request is run: its settings, and whether sending it twice is harmless.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Timeout, deadline and retry settings.
    pub policy: CallPolicy,
    /// Whether a request that may have reached the server may be sent again.
    pub safe: bool,
    /// The agent call's time with its user, which the timeout and deadline do not count.
    pub wait: Option<crate::ask::UserWait>,
}

impl Plan {
    /// This plan, with its deadlines stopped while `cx`'s user answers an upstream's question.
    pub fn waiting_on(mut self, cx: &crate::context::CallContext) -> Self {
        self.wait = cx.origin.as_ref().map(|o| o.wait.clone());
        self
    }
}

/// Whether the arguments carry a non-empty `idempotencyKey`, which makes repeating a write safe.
fn carries_idempotency_key(arguments: Option<&JsonObject>) -> bool {
    arguments
        .and_then(|a| a.get("idempotencyKey"))
        .and_then(|k| k.as_str())
        .is_some_and(|k| !k.trim().is_empty())
}

impl PolicyStack {
    /// The stack of `server` with its resolved settings.
    pub fn new(server: &str, policy: ServerPolicy) -> Self {
        Self {
            server: server.to_owned(),
            breaker: Arc::new(Breaker::new(server, policy.breaker.clone())),
            bulkhead: Bulkhead::new(server, policy.bulkhead.clone()),
            budget: TpsBudget::new(
                BUDGET_WINDOW,
                policy.budget_min_per_second,
                policy.budget_ratio as f32,
            ),
            counters: Counters::default(),
            hold_until: AtomicU64::new(0),
            created: Instant::now(),
            policy,
        }
    }

    /// The breaker, for status and the demo.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The bulkhead, for metrics.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// How a `tools/call` of the server's `tool` runs. Decided here, not by callers, so a
    /// pass-through call and a composite step follow one rule: a repeat is safe when the tool is
    /// annotated read-only or idempotent, when the config marks it `retrySafe`, or when the
    /// call carries an `idempotencyKey`. `definition` is the server's listing of the tool.
    pub fn plan_tool(
        &self,
        tool: &str,
        definition: Option<&Tool>,
        arguments: Option<&JsonObject>,
    ) -> Plan {
        let read_only = definition.is_some_and(crate::annotations::is_read_only);
        let idempotent = definition.is_some_and(crate::annotations::is_idempotent);
        let policy = self.policy.for_tool(tool, read_only);
        let safe =
            read_only || idempotent || policy.retry_safe || carries_idempotency_key(arguments);
        Plan {
            policy,
            safe,
            wait: None,
        }
    }

    /// How any other request runs (`resources/read`, `prompts/get`, `completion/complete`,
    /// subscriptions): with the server's read settings, and safe to repeat, since none of them
    /// changes the server's data (subscribing twice is subscribing once).
    pub fn plan_read(&self) -> Plan {
        Plan {
            policy: self.policy.call.resolve(true),
            safe: true,
            wait: None,
        }
    }

    /// Runs one call through the stack. Outermost first:
    ///
    /// 1. **deadline**: bounds the whole call, attempts, queueing and retry delays included;
    /// 2. **retry**: repeats a retryable failure only if repeating is safe (`safe`, or the
    ///    request never left), with exponential backoff and jitter, never sooner than the
    ///    upstream's `retryAfterMs`, and only while the server's retry budget allows;
    /// 3. **circuit breaker**: fails fast, without touching the upstream, while it is open;
    /// 4. **bulkhead**: bounds calls running and queued for the server; beyond, rejects at once;
    /// 5. **attempt timeout**: bounds one attempt on the wire;
    /// 6. the transport: `attempt`, one request on the upstream's connection.
    ///
    /// The breaker sits inside retry so every attempt is counted and an open breaker stops
    /// retries at once; the bulkhead sits inside the breaker so a call refused by the breaker
    /// never takes a slot; the timeout sits inside the bulkhead so time spent queued is bounded
    /// by the deadline, not charged to the attempt.
    pub async fn call<T, F, Fut>(
        &self,
        op: Op<'_>,
        plan: &Plan,
        attempt: F,
    ) -> (Result<T, CallError>, CallReport)
    where
        T: Answer,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let (policy, safe) = (&plan.policy, plan.safe);
        let tool = op.target;
        let start = Instant::now();
        let report = Mutex::new(CallReport::default());
        self.budget.deposit();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.base_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize);
        let attempts = AtomicU64::new(0);
        let reach = AtomicU8::new(Reach::NotSent.code());
        let pending: Pending = Mutex::new(None);
        let one = || async {
            let started = Instant::now();
            let number = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let span = self.attempt_span(op, number);
            // This attempt replaces the last one's failure: its permit goes back uncounted, so a
            // retry of a failed half-open probe may take the probe slot again.
            drop(pending.lock().ok().and_then(|mut p| p.take()));
            let (outcome, permit) = match self.wait_for_hold(start, policy.deadline).await {
                Ok(()) => {
                    self.attempt(op, policy, plan.wait.clone(), &attempt, &reach)
                        .instrument(span.clone())
                        .await
                }
                Err(held) => (Err(held), None),
            };
            record_attempt(&span, &outcome);
            let verdict = classify(&outcome);
            if let Some(retry_after) = verdict.retry_after {
                self.hold(retry_after);
            }
            // A failed attempt is counted only if it is the call's last; a success at once (and
            // the earlier failure it replaces is forgotten).
            let earlier = match (permit, verdict.health) {
                (Some(permit), Health::Healthy) => {
                    permit.success();
                    pending.lock().ok().and_then(|mut p| p.take())
                }
                (Some(permit), health @ (Health::Failing | Health::Unreachable)) => pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.replace((permit, health))),
                (permit, _) => {
                    drop(permit);
                    None
                }
            };
            drop(earlier);
            if let Ok(mut r) = report.lock() {
                r.attempts.push(AttemptReport {
                    started_ms: ms(started - start),
                    elapsed_ms: ms(started.elapsed()),
                    outcome: outcome_label(&outcome),
                    retry_after_ms: verdict.retry_after.map(ms),
                });
            }
            match outcome {
                Ok(r) if !(verdict.retryable && r.tool_error().is_some()) => Ok(r),
                other => Err(Failed {
                    outcome: other,
                    verdict,
                }),
            }
        };
        let stop = |why: RetryStop| {
            if let Ok(mut r) = report.lock() {
                r.retry_stopped = Some(why);
            }
        };
        let retried = one
            .retry(backoff)
            .when(|f: &Failed<T>| {
                let why = if !f.verdict.retryable {
                    RetryStop::NotRetryable
                } else if !(safe || f.verdict.not_sent) {
                    // The one refusal an operator may not expect: say which rule kept it.
                    tracing::info!(
                        server = %self.server,
                        tool,
                        outcome = %outcome_label(&f.outcome),
                        "not retrying a possible write: the tool is not read-only or idempotent, \
                         the call has no idempotencyKey and the config does not mark it retrySafe"
                    );
                    RetryStop::Unsafe
                } else {
                    return true;
                };
                stop(why);
                false
            })
            .adjust(|f: &Failed<T>, next: Option<Duration>| {
                let Some(next) = next else {
                    stop(RetryStop::MaxAttempts);
                    return None;
                };
                let delay =
                    jittered(next, policy.jitter).max(f.verdict.retry_after.unwrap_or_default());
                if start.elapsed() + delay >= policy.deadline {
                    stop(RetryStop::Deadline);
                    return None;
                }
                if !self.budget.withdraw() {
                    self.counters
                        .budget_exhausted
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(server = %self.server, tool, "retry budget exhausted; not retrying");
                    stop(RetryStop::Budget);
                    return None;
                }
                Some(delay)
            })
            .notify(|f: &Failed<T>, delay: Duration| {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    server = %self.server,
                    tool,
                    delay_ms = delay.as_millis() as u64,
                    outcome = %outcome_label(&f.outcome),
                    "retrying"
                );
                if let Ok(mut r) = report.lock() {
                    r.retry_delays_ms.push(ms(delay));
                }
            });
        let wait = plan.wait.clone();
        let outcome = match crate::ask::pause::within(policy.deadline, wait, retried).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(failed)) => failed.outcome,
            Err(_) => {
                self.counters.deadlines.fetch_add(1, Ordering::Relaxed);
                stop(RetryStop::Deadline);
                Err(CallError::Deadline {
                    server: self.server.clone(),
                    tool: describe(op),
                    after: policy.deadline,
                })
            }
        };
        if let Some((permit, health)) = pending.into_inner().ok().flatten() {
            settle(permit, health);
        }
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        report.reach = Reach::from_code(reach.load(Ordering::SeqCst));
        (outcome, report)
    }

    /// Waits out the server's last `retryAfterMs`, which holds every caller, not only the one it
    /// was given to; refuses at once when the wait would end past the call's deadline.
    async fn wait_for_hold(&self, start: Instant, deadline: Duration) -> Result<(), CallError> {
        let until = self.hold_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(());
        }
        let until = self.created + Duration::from_nanos(until);
        let now = Instant::now();
        if until <= now {
            return Ok(());
        }
        let wait = until - now;
        if now + wait >= start + deadline {
            return Err(CallError::Held {
                server: self.server.clone(),
                retry_in: wait,
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Holds every caller for `retry_after` from now (a later hold never shortens an earlier one).
    fn hold(&self, retry_after: Duration) {
        let until = (Instant::now() + retry_after).saturating_duration_since(self.created);
        let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hold_until.fetch_max(nanos, Ordering::Relaxed);
    }

    /// The span of one attempt: a client span whose context the upstream request carries in
    /// its `_meta`, so the server's handler span is its child.
    fn attempt_span(&self, op: Op<'_>, number: u64) -> tracing::Span {
        let span = tracing::info_span!(
            "upstream.attempt",
            otel.name = %format!("{} {}", op.method, op.target).trim_end(),
            otel.kind = "client",
            otel.status_code = Empty,
            mcp.server = %self.server,
            mcp.method.name = op.method,
            gen_ai.tool.name = Empty,
            mcp.resource.uri = Empty,
            mcp.retry.attempt = number,
            mcp.breaker.state = self.breaker.state().as_str(),
            mcp.request_charge = Empty,
            error.type = Empty,
        );
        match op.method {
            "tools/call" => span.record("gen_ai.tool.name", op.target),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                span.record("mcp.resource.uri", op.target)
            }
            _ => &span,
        };
        span
    }

    /// One attempt: breaker, bulkhead, timeout, transport.
    ///
    /// The breaker permit comes back unsettled: the caller knows whether this attempt is the
    /// call's last.
    async fn attempt<T, F, Fut>(
        &self,
        op: Op<'_>,
        policy: &CallPolicy,
        wait: Option<crate::ask::UserWait>,
        attempt: &F,
        reach: &AtomicU8,
    ) -> (Result<T, CallError>, Option<BreakerPermit>)
    where
        T: Answer,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let permit = match self.breaker.acquire() {
            Ok(permit) => permit,
            Err(open) => return (Err(CallError::CircuitOpen(open)), None),
        };
        let _slot = match self.bulkhead.enter().await {
            Ok(slot) => slot,
            Err(full) => return (Err(CallError::BulkheadFull(full)), None),
        };
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        // Silent until the attempt ends: an attempt dropped mid-flight (by the deadline or the
        // caller) may have reached the server and taken effect.
        let before = reach.swap(Reach::Silent.code(), Ordering::SeqCst);
        let outcome = match crate::ask::pause::within(policy.timeout, wait, attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Timeout {
                    server: self.server.clone(),
                    tool: describe(op),
                    after: policy.timeout,
                })
            }
        };
        reach.store(
            Reach::of(&outcome).map_or(before, Reach::code),
            Ordering::SeqCst,
        );
        (outcome, Some(permit))
    }

    /// Figures for status.
    pub fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot {
            attempts: self.counters.attempts.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            timeouts: self.counters.timeouts.load(Ordering::Relaxed),
            budget_exhausted: self.counters.budget_exhausted.load(Ordering::Relaxed),
            deadlines: self.counters.deadlines.load(Ordering::Relaxed),
            breaker: serde_json::to_value(self.breaker.snapshot()).unwrap_or_default(),
            bulkhead: serde_json::to_value(self.bulkhead.snapshot()).unwrap_or_default(),
        }
    }
}

/// Records an attempt's outcome on its span: the error kind when it failed, and the request
/// charge when the upstream reported one in `_meta.requestCharge`.
fn record_attempt<T: Answer>(span: &tracing::Span, outcome: &Result<T, CallError>) {
    if let Ok(r) = outcome
        && let Some(charge) = r.request_charge()
    {
        span.record("mcp.request_charge", charge);
    }
    let label = outcome_label(outcome);
    if label != "ok" {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", label.as_str());
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// A short name for an outcome, for logs and reports.
pub fn outcome_label<T: Answer>(outcome: &Result<T, CallError>) -> String {
    match outcome {
        Ok(r) => match r.tool_error() {
            None => "ok".into(),
            Some(e) => e.kind.as_str().into(),
        },
        Err(e) => e.label().into(),
    }
}

/// How an error names what timed out: a tool by its name, any other request by its method
/// and target (`resources/read file:///a`).
fn describe(op: Op<'_>) -> String {
    match op.method {
        "tools/call" => op.target.to_owned(),
        method if op.target.is_empty() => method.to_owned(),
        method => format!("{method} {}", op.target),
    }
}

/// Spreads a delay so that clients retrying together do not hit the server together.
fn jittered(delay: Duration, jitter: Jitter) -> Duration {
    let mut rng = rand::rng();
    match jitter {
        Jitter::None => delay,
        Jitter::Proportional => delay.mul_f64(rng.random_range(0.8..=1.2)),
        Jitter::Full => delay.mul_f64(rng.random_range(0.0..=1.0)),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::atomic::AtomicUsize};

    use rmcp::model::CallToolResult;

    use super::*;
    use crate::{
        config::policy::CallPolicyConfig,
        policy::{breaker::BreakerSettings, bulkhead::BulkheadSettings},
    };

    /// A stack whose breaker never opens, so what is tested is retry alone.
    fn stack(budget_ratio: f64, budget_min_per_second: u32) -> PolicyStack {
        PolicyStack::new(
            "s",
            ServerPolicy {
                breaker: BreakerSettings {
                    consecutive_failures: 0,
                    failure_rate: 1.0,
                    ..BreakerSettings::default()
                },
                bulkhead: BulkheadSettings::default(),
                budget_ratio,
                budget_min_per_second,
                call: CallPolicyConfig::default(),
                tools: BTreeMap::new(),
            },
        )
    }

    fn policy(max_attempts: u32, base_delay: Duration, deadline: Duration) -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_secs(10),
            deadline,
            retry_safe: false,
            max_attempts,
            base_delay,
            max_delay: base_delay * 100,
            jitter: Jitter::None,
        }
    }

    fn plan(policy: &CallPolicy, safe: bool) -> Plan {
        Plan {
            policy: policy.clone(),
            safe,
            wait: None,
        }
    }

    fn unavailable() -> Result<CallToolResult, CallError> {
        Ok(kit::ToolError::unavailable("down").to_call_tool_result())
    }

    fn ok() -> Result<CallToolResult, CallError> {
        Ok(CallToolResult::structured(
            serde_json::json!({ "ok": true }),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_retry_budget_stops_retries_and_says_so() {
        // Half a retry per call and nothing in reserve: ten calls that always fail may retry five
        // times in all, however many attempts each is allowed.
        let stack = stack(0.5, 0);
        let policy = policy(5, Duration::from_millis(1), Duration::from_secs(60));
        let mut retries = 0;
        for _ in 0..10 {
            let (outcome, report) = stack
                .call(Op::tool("t"), &plan(&policy, true), || async {
                    unavailable()
                })
                .await;
            assert_eq!(outcome_label(&outcome), "unavailable", "the last failure");
            assert_eq!(report.retry_stopped, Some(RetryStop::Budget));
            retries += report.attempts.len() - 1;
        }
        assert_eq!(retries, 5);
        let snap = stack.snapshot();
        assert_eq!(
            (snap.attempts, snap.retries, snap.budget_exhausted),
            (15, 5, 10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_report_says_whether_the_last_attempt_sent_got_an_answer() {
        let stack = stack(10.0, 100);
        let once = policy(1, Duration::from_millis(1), Duration::from_secs(60));
        let reach = |outcome: Result<CallToolResult, CallError>| {
            let stack = &stack;
            let once = &once;
            async move {
                let outcome = std::sync::Mutex::new(Some(outcome));
                let (_, report) = stack
                    .call(Op::tool("t"), &plan(once, false), || {
                        let next = outcome.lock().expect("lock").take().expect("one attempt");
                        async move { next }
                    })
                    .await;
                report.reach
            }
        };
        assert_eq!(reach(ok()).await, Reach::Answered);
        assert_eq!(reach(unavailable()).await, Reach::Answered);
        let timeout = CallError::Timeout {
            server: "s".into(),
            tool: "t".into(),
            after: Duration::from_millis(5),
        };
        assert_eq!(reach(Err(timeout)).await, Reach::Silent);
        let refused = CallError::NotConnected {
            server: "s".into(),
            last_error: None,
        };
        assert_eq!(reach(Err(refused)).await, Reach::NotSent);
        // A silent attempt followed by one refused before sending leaves the call in doubt.
        let retrying = policy(2, Duration::from_millis(1), Duration::from_secs(60));
        let attempts = AtomicUsize::new(0);
        let (_, report) = stack
            .call(Op::tool("t"), &plan(&retrying, true), || {
                let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err::<CallToolResult, _>(CallError::ConnectionLost {
                            server: "s".into(),
                            detail: "reset".into(),
                        })
                    } else {
                        Err(CallError::NotConnected {
                            server: "s".into(),
                            last_error: None,
                        })
                    }
                }
            })
            .await;
        assert_eq!(report.attempts.len(), 2);
        assert_eq!(report.reach, Reach::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_an_attempt_in_flight_and_it_stays_in_doubt() {
        let stack = stack(10.0, 100);
        let policy = policy(1, Duration::from_millis(1), Duration::from_millis(500));
        let (_, report) = stack
            .call(Op::tool("t"), &plan(&policy, false), || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ok()
            })
            .await;
        assert_eq!(report.reach, Reach::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_retries_that_could_not_finish_in_time() {
        // Delays of 1 s, then 2 s: after the first retry, the next would end past 2.5 s.
        let stack = stack(10.0, 100);
        let policy = policy(10, Duration::from_secs(1), Duration::from_millis(2500));
        let started = Instant::now();
        let (outcome, report) = stack
            .call(Op::tool("t"), &plan(&policy, true), || async {
                unavailable()
            })
            .await;
        assert_eq!(report.attempts.len(), 2);
        assert_eq!(report.retry_stopped, Some(RetryStop::Deadline));
        assert_eq!(outcome_label(&outcome), "unavailable", "the last failure");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "it did not sleep towards a retry it could not make"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_an_attempt_in_flight_and_no_other_starts() {
        // Each attempt takes 1 s; delays 100 ms, 200 ms: the third attempt starts at 2.3 s and
        // the deadline ends it at 2.5 s.
        let stack = stack(10.0, 100);
        let policy = policy(10, Duration::from_millis(100), Duration::from_millis(2500));
        let sent = AtomicUsize::new(0);
        let (outcome, report) = stack
            .call(Op::tool("t"), &plan(&policy, true), || {
                sent.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    unavailable()
                }
            })
            .await;
        assert!(
            matches!(outcome, Err(CallError::Deadline { .. })),
            "{outcome:?}"
        );
        assert_eq!(report.retry_stopped, Some(RetryStop::Deadline));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            sent.load(Ordering::SeqCst),
            3,
            "no attempt after the deadline"
        );
        assert_eq!(stack.snapshot().deadlines, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_hint_longer_than_the_backoff_delays_the_next_attempt() {
        let stack = stack(10.0, 100);
        let mut policy = policy(3, Duration::from_millis(10), Duration::from_secs(10));
        policy.jitter = Jitter::Proportional;
        let starts = Mutex::new(Vec::new());
        let (outcome, report) = stack
            .call(Op::tool("t"), &plan(&policy, true), || {
                let n = {
                    let mut s = starts.lock().expect("lock");
                    s.push(Instant::now());
                    s.len()
                };
                async move {
                    if n == 1 {
                        Ok(kit::ToolError::throttled("slow down", 500).to_call_tool_result())
                    } else {
                        ok()
                    }
                }
            })
            .await;
        assert_eq!(outcome_label(&outcome), "ok");
        let starts = starts.into_inner().expect("lock");
        assert_eq!(starts.len(), 2);
        assert!(
            starts[1] - starts[0] >= Duration::from_millis(500),
            "the second attempt waited {:?}",
            starts[1] - starts[0]
        );
        assert_eq!(report.attempts[0].retry_after_ms, Some(500.0));
        assert!(report.retry_delays_ms[0] >= 500.0);
        assert_eq!(report.retry_stopped, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_unsafe_call_is_repeated_only_if_it_never_left() {
        let stack = stack(10.0, 100);
        let policy = policy(5, Duration::from_millis(1), Duration::from_secs(10));
        let sent = AtomicUsize::new(0);
        let (outcome, report) = stack
            .call(Op::tool("write"), &plan(&policy, false), || {
                sent.fetch_add(1, Ordering::SeqCst);
                async { unavailable() }
            })
            .await;
        assert_eq!(outcome_label(&outcome), "unavailable");
        assert_eq!(sent.load(Ordering::SeqCst), 1, "sent once");
        assert_eq!(report.retry_stopped, Some(RetryStop::Unsafe));

        // Not connected: the request never left, so repeating it cannot write twice.
        let sent = AtomicUsize::new(0);
        let (outcome, report) = stack
            .call(Op::tool("write"), &plan(&policy, false), || {
                let first = sent.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err(CallError::NotConnected {
                            server: "s".into(),
                            last_error: None,
                        })
                    } else {
                        ok()
                    }
                }
            })
            .await;
        assert_eq!(outcome_label(&outcome), "ok");
        assert_eq!(report.attempts.len(), 2);
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let d = Duration::from_millis(100);
        for _ in 0..1000 {
            let p = jittered(d, Jitter::Proportional);
            assert!(p >= Duration::from_millis(80) && p <= Duration::from_millis(120));
            assert!(jittered(d, Jitter::Full) <= d);
        }
        assert_eq!(jittered(d, Jitter::None), d);
    }
}
