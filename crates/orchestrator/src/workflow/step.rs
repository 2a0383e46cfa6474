//! One step of a composite: the call a [`StepRunner`] makes for it, what it produced, its line
//! in `_meta.sources`, and the arguments it is sent with. Shared by the plan that runs the
//! steps ([`super::executor`]) and by what a saga does after one failed ([`super::saga`]).

use std::{future::Future, pin::Pin, time::Instant};

use futures::StreamExt;
use rmcp::model::{CallToolResult, JsonObject};
use serde::Serialize;
use serde_json::Value;
use tracing::{Instrument, field::Empty};

use super::definition::Step;
use crate::{
    context::CallContext,
    error::{CallError, Fault},
    policy::Reach,
    template::{Scope, kind_of},
};

/// One upstream call made for a step.
#[derive(Debug)]
pub struct StepCall {
    /// What the upstream (or the cache) answered.
    pub outcome: Result<CallToolResult, CallError>,
    /// Whether the answer came from the cache.
    pub cached: bool,
    /// How the last attempt that reached the server ended, so a saga can tell a write that
    /// failed from one whose outcome is unknown.
    pub reach: Reach,
}

impl StepCall {
    /// An outcome decided without reaching a server (a refusal, an error in the arguments).
    pub fn unsent(outcome: Result<CallToolResult, CallError>) -> Self {
        Self {
            outcome,
            cached: false,
            reach: Reach::NotSent,
        }
    }
}

/// Makes the upstream calls of a workflow.
pub trait StepRunner: Send + Sync {
    /// Calls `server`'s own `tool` with `args`, honouring the step's cache spec.
    fn call<'a>(
        &'a self,
        step: &'a Step,
        args: JsonObject,
        cx: &'a CallContext,
    ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'a>>;

    /// Whether sending this call of `step` again cannot apply it twice (the tool is read-only or
    /// idempotent, or the arguments carry an idempotency key): a saga replays a step whose
    /// outcome is in doubt only then.
    fn replay_safe(&self, step: &Step, args: &JsonObject) -> bool {
        let _ = (step, args);
        false
    }
}

/// How one step ended, as reported in `_meta.sources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOutcome {
    /// Answered by the upstream.
    Ok,
    /// Answered from the cache.
    Cached,
    /// Failed; its fallback was used (for `forEach`: some items failed and took it).
    Fallback,
    /// Not run: a step it reads produced no value.
    Skipped,
    /// Failed, with no fallback.
    Failed,
}

impl SourceOutcome {
    /// The same name as the serialized form, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceOutcome::Ok => "ok",
            SourceOutcome::Cached => "cached",
            SourceOutcome::Fallback => "fallback",
            SourceOutcome::Skipped => "skipped",
            SourceOutcome::Failed => "failed",
        }
    }
}

/// One step's line in `_meta.sources`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The step.
    pub step: String,
    /// Its server.
    pub server: String,
    /// Its tool.
    pub tool: String,
    /// How it ended.
    pub outcome: SourceOutcome,
    /// The error kind when it failed (`unavailable`, `timeout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The error message when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time from its start to its end.
    pub latency_ms: f64,
    /// Items of a `forEach`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    /// Items of a `forEach` that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_items: Option<usize>,
    /// When it started, from the start of the composite (shows the overlap of steps).
    pub started_ms: f64,
    /// How its undo went, when a saga failed after it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
    /// How a saga settled it, when it failed without saying whether it took effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
}

/// One step's undo, as reported in its `_meta.sources` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compensation {
    /// `server.tool` of the undo.
    pub call: String,
    /// `compensated`, or `failed` after every attempt.
    pub outcome: &'static str,
    /// Attempts made (each through the server's policy stack, which may retry too).
    pub attempts: u32,
    /// The last attempt's error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What settling a step whose outcome was in doubt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// A replay answered with a result: the write is there (once).
    TookEffect,
    /// The server answered that it did not apply it (or was never reached).
    DidNotTakeEffect,
    /// No answer could be had: the write may or may not be there, and a person must look.
    Unknown,
}

/// How a step whose outcome was in doubt was settled, reported in its `_meta.sources` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settled {
    /// Replays sent (0 when a replay was not safe).
    pub replays: u32,
    /// What they found.
    pub outcome: Settlement,
}

/// What a step produced.
pub(super) struct Done {
    pub(super) index: usize,
    pub(super) value: Result<Value, Fault>,
    pub(super) cached: bool,
    /// How its (last) call's last attempt that reached the server ended.
    pub(super) reach: Reach,
    /// Set when this is the end of settling a step whose outcome was in doubt.
    pub(super) settled: Option<Settled>,
    pub(super) items: Option<(usize, usize)>,
    pub(super) started: Instant,
    pub(super) finished: Instant,
}

/// The JSON value a step's result stands for: its structured content, else its text parsed as
/// JSON, else the text itself.
pub fn value_of(result: &CallToolResult) -> Value {
    if let Some(v) = &result.structured_content {
        return v.clone();
    }
    let text: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Milliseconds from `from` to `to`, to two decimals.
pub(super) fn ms(from: Instant, to: Instant) -> f64 {
    ((to - from).as_secs_f64() * 100_000.0).round() / 100.0
}

/// Runs one step (all its items for a `forEach`).
pub(super) async fn run_step(
    index: usize,
    step: &Step,
    calls: Vec<JsonObject>,
    is_for_each: bool,
    runner: &dyn StepRunner,
    cx: &CallContext,
) -> Done {
    let span = tracing::info_span!(
        "workflow.step",
        otel.name = %format!("step {}", step.name),
        otel.status_code = Empty,
        mcp.workflow.step = %step.name,
        mcp.server = %step.server,
        mcp.method.name = "tools/call",
        gen_ai.tool.name = %step.tool,
        mcp.step.critical = step.critical,
        mcp.cache.hit = Empty,
        error.type = Empty,
        error.message = Empty,
    );
    let done = run_step_inner(index, step, calls, is_for_each, runner, cx)
        .instrument(span.clone())
        .await;
    span.record("mcp.cache.hit", done.cached);
    if let Err(fault) = &done.value {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", fault.reason.as_str());
        span.record("error.message", fault.message.as_str());
    }
    done
}

async fn run_step_inner(
    index: usize,
    step: &Step,
    calls: Vec<JsonObject>,
    is_for_each: bool,
    runner: &dyn StepRunner,
    cx: &CallContext,
) -> Done {
    let started = Instant::now();
    if !is_for_each {
        let args = calls.into_iter().next().unwrap_or_default();
        let call = runner.call(step, args, cx).await;
        let value = match Fault::of(&call.outcome) {
            None => Ok(call.outcome.as_ref().map(value_of).unwrap_or(Value::Null)),
            Some(f) => Err(f),
        };
        return Done {
            index,
            value,
            cached: call.cached,
            reach: call.reach,
            settled: None,
            items: None,
            started,
            finished: Instant::now(),
        };
    }
    let total = calls.len();
    // `buffered` keeps the input order: the fan-in lines up with the list it fanned out over.
    let results: Vec<StepCall> = futures::stream::iter(calls)
        .map(|args| runner.call(step, args, cx))
        .buffered(step.concurrency)
        .collect()
        .await;
    let mut failed = 0;
    let mut first_failure = None;
    let mut all_cached = total > 0;
    let mut values = Vec::with_capacity(total);
    for call in &results {
        all_cached &= call.cached;
        match Fault::of(&call.outcome) {
            None => values.push(call.outcome.as_ref().map(value_of).unwrap_or(Value::Null)),
            Some(f) => {
                failed += 1;
                first_failure.get_or_insert(f);
                values.push(step.fallback.clone().unwrap_or(Value::Null));
            }
        }
    }
    // A critical step fails with any item; an optional one keeps what succeeded (failed items
    // take the fallback, or null) unless every item failed and there is no fallback.
    let value = match first_failure {
        Some(f) if step.critical || (step.fallback.is_none() && failed == total) => Err(f),
        _ => Ok(Value::Array(values)),
    };
    Done {
        index,
        value,
        cached: all_cached,
        // A `forEach` is never settled: it cannot be compensated either.
        reach: Reach::NotSent,
        settled: None,
        items: Some((total, failed)),
        started,
        finished: Instant::now(),
    }
}

/// Where one step of a run stands.
#[derive(Default)]
pub(super) struct StepState {
    /// When it was launched (or skipped); `None` while it waits for the steps it reads.
    pub(super) launched: Option<Instant>,
    /// Whether it has ended, so the steps reading it may start.
    pub(super) finished: bool,
    /// What it produced: its result, its fallback, or nothing.
    pub(super) value: Option<Value>,
    /// Why it produced no value: passed on to the steps skipped because of it, so a critical one
    /// fails with the cause.
    pub(super) cause: Option<Fault>,
    /// Its line in `_meta.sources`, once it ended.
    pub(super) source: Option<Source>,
    /// The arguments it was sent with (a single call's), so a saga can settle it by replaying.
    pub(super) args: Option<JsonObject>,
    /// How it failed, and how its last attempt that reached the server ended.
    pub(super) failure: Option<(Fault, Reach)>,
}

/// Why a step's calls could not be built.
#[derive(Debug, thiserror::Error)]
pub(super) enum RenderError {
    /// The arguments (or the `forEach` list) did not render, or are not what a call takes.
    #[error("arguments could not be built: {0}")]
    Arguments(String),
    /// The `forEach` list is longer than the step may fan out to.
    #[error(
        "step `{step}`: forEach has {items} items, over the limit of {max} ({set_by}); \
         ask for fewer items or raise the limit"
    )]
    TooManyItems {
        step: String,
        items: usize,
        max: usize,
        set_by: String,
    },
}

/// The arguments of each call `step` makes: one set, or one per item of its `forEach` list.
/// A list longer than the step's item limit fails the step, naming the step, the count, the limit
/// and the setting; the list is never cut silently.
pub(super) fn render_calls(step: &Step, scope: &Scope<'_>) -> Result<Vec<JsonObject>, RenderError> {
    let built = |e: String| RenderError::Arguments(e);
    let Some((list, item)) = &step.for_each else {
        return step
            .args
            .render(scope)
            .map_err(|e| e.to_string())
            .and_then(|v| as_object(v).map(|o| vec![o]))
            .map_err(built);
    };
    match list.render(scope) {
        Err(e) => Err(built(e.to_string())),
        Ok(Value::Array(items)) if items.len() > step.max_items.max => {
            Err(RenderError::TooManyItems {
                step: step.name.clone(),
                items: items.len(),
                max: step.max_items.max,
                set_by: step.max_items.set_by.to_string(),
            })
        }
        Ok(Value::Array(items)) => items
            .iter()
            .map(|it| {
                step.args
                    .render(&scope.clone().with(item, it))
                    .map_err(|e| e.to_string())
                    .and_then(as_object)
            })
            .collect::<Result<_, _>>()
            .map_err(built),
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(other) => Err(built(format!(
            "forEach needs an array, got {}",
            kind_of(&other)
        ))),
    }
}

fn as_object(v: Value) -> Result<JsonObject, String> {
    match v {
        Value::Object(o) => Ok(o),
        other => Err(format!(
            "arguments must be an object, got {}",
            kind_of(&other)
        )),
    }
}
