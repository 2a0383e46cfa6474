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
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use rand::Rng;
use rmcp::model::CallToolResult;
use serde::Serialize;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::{Instrument, field::Empty};

use self::{
    breaker::Breaker,
    bulkhead::Bulkhead,
    classify::{Health, Verdict, classify},
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

/// What happened during one call: its attempts and the delays between them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallReport {
    /// Attempts in order.
    pub attempts: Vec<AttemptReport>,
    /// Delays slept before each retry, in ms.
    pub retry_delays_ms: Vec<f64>,
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
}

impl std::fmt::Debug for PolicyStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStack")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A failed attempt, carried through the retry loop.
struct Failed {
    outcome: Result<CallToolResult, CallError>,
    verdict: Verdict,
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
    pub async fn call<F, Fut>(
        &self,
        tool: &str,
        policy: &CallPolicy,
        safe: bool,
        attempt: F,
    ) -> (Result<CallToolResult, CallError>, CallReport)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<CallToolResult, CallError>>,
    {
        let start = Instant::now();
        let report = Mutex::new(CallReport::default());
        self.budget.deposit();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.base_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize);
        let attempts = AtomicU64::new(0);
        let one = || async {
            let started = Instant::now();
            let number = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let span = self.attempt_span(tool, number);
            let outcome = self
                .attempt(tool, policy, &attempt)
                .instrument(span.clone())
                .await;
            record_attempt(&span, &outcome);
            let verdict = classify(&outcome);
            if let Ok(mut r) = report.lock() {
                r.attempts.push(AttemptReport {
                    started_ms: ms(started - start),
                    elapsed_ms: ms(started.elapsed()),
                    outcome: outcome_label(&outcome),
                    retry_after_ms: verdict.retry_after.map(ms),
                });
            }
            match outcome {
                Ok(r) if !(verdict.retryable && r.is_error == Some(true)) => Ok(r),
                other => Err(Failed {
                    outcome: other,
                    verdict,
                }),
            }
        };
        let retried = one
            .retry(backoff)
            .when(|f: &Failed| f.verdict.retryable && (safe || f.verdict.not_sent))
            .adjust(|f: &Failed, next: Option<Duration>| {
                let delay = jittered(next?, policy.jitter)
                    .max(f.verdict.retry_after.unwrap_or_default());
                if start.elapsed() + delay >= policy.deadline {
                    return None;
                }
                if !self.budget.withdraw() {
                    self.counters
                        .budget_exhausted
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(server = %self.server, tool, "retry budget exhausted; not retrying");
                    return None;
                }
                Some(delay)
            })
            .notify(|f: &Failed, delay: Duration| {
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
        let outcome = match tokio::time::timeout(policy.deadline, retried).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(failed)) => failed.outcome,
            Err(_) => {
                self.counters.deadlines.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Deadline {
                    server: self.server.clone(),
                    tool: tool.to_owned(),
                    after: policy.deadline,
                })
            }
        };
        let report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        (outcome, report)
    }

    /// The span of one attempt: a client span whose context the upstream request carries in
    /// its `_meta`, so the server's handler span is its child.
    fn attempt_span(&self, tool: &str, number: u64) -> tracing::Span {
        tracing::info_span!(
            "upstream.attempt",
            otel.name = %format!("tools/call {tool}"),
            otel.kind = "client",
            otel.status_code = Empty,
            mcp.server = %self.server,
            mcp.method.name = "tools/call",
            gen_ai.tool.name = %tool,
            mcp.retry.attempt = number,
            mcp.breaker.state = self.breaker.state().as_str(),
            mcp.request_charge = Empty,
            error.type = Empty,
        )
    }

    /// One attempt: breaker, bulkhead, timeout, transport.
    async fn attempt<F, Fut>(
        &self,
        tool: &str,
        policy: &CallPolicy,
        attempt: &F,
    ) -> Result<CallToolResult, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<CallToolResult, CallError>>,
    {
        let permit = self.breaker.acquire().map_err(CallError::CircuitOpen)?;
        let _slot = self
            .bulkhead
            .enter()
            .await
            .map_err(CallError::BulkheadFull)?;
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = match tokio::time::timeout(policy.timeout, attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Timeout {
                    server: self.server.clone(),
                    tool: tool.to_owned(),
                    after: policy.timeout,
                })
            }
        };
        match classify(&outcome).health {
            Health::Healthy => permit.success(),
            Health::Failing => permit.failure(),
            Health::Neutral => drop(permit),
        }
        outcome
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
fn record_attempt(span: &tracing::Span, outcome: &Result<CallToolResult, CallError>) {
    if let Ok(r) = outcome
        && let Some(charge) = r
            .meta
            .as_ref()
            .and_then(|m| m.get("requestCharge"))
            .and_then(serde_json::Value::as_f64)
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
pub fn outcome_label(outcome: &Result<CallToolResult, CallError>) -> String {
    match outcome {
        Ok(r) => match kit::ToolError::from_call_tool_result(r) {
            None => "ok".into(),
            Some(e) => e.kind.as_str().into(),
        },
        Err(e) => e.label().into(),
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
    use super::*;

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
