//! Runs a [`Workflow`]: each step starts as soon as the steps it reads have finished, so
//! independent steps overlap and dependent ones follow each other, with no mode flag.
//!
//! The executor owns no I/O: it asks a [`StepRunner`] to make each upstream call (the gateway,
//! whose path is cache → policy stack → upstream; a scripted fake in unit tests).

use std::{future::Future, pin::Pin, time::Instant};

use futures::{StreamExt, stream::FuturesUnordered};
use rmcp::model::{CallToolResult, JsonObject};
use serde::Serialize;
use serde_json::Value;
use tracing::{Instrument, field::Empty};

use super::{
    definition::{Step, Workflow},
    template::Scope,
};
use crate::{error::CallError, upstream::CallContext};

/// One upstream call made for a step.
#[derive(Debug)]
pub struct StepCall {
    /// What the upstream (or the cache) answered.
    pub outcome: Result<CallToolResult, CallError>,
    /// Whether the answer came from the cache.
    pub cached: bool,
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
}

/// A critical step's failure, which fails the composite.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalFailure {
    /// The step.
    pub step: String,
    /// `server.tool`.
    pub call: String,
    /// Error kind.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

/// The end of a run.
#[derive(Debug)]
pub struct Run {
    /// The rendered output, or the critical failure.
    pub result: Result<Value, CriticalFailure>,
    /// One entry per step, in the workflow's order.
    pub sources: Vec<Source>,
}

/// What a step produced.
struct Done {
    index: usize,
    value: Result<Value, (String, String)>,
    cached: bool,
    items: Option<(usize, usize)>,
    started: Instant,
    finished: Instant,
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

/// The error kind and message of a failed call.
fn failure_of(outcome: &Result<CallToolResult, CallError>) -> Option<(String, String)> {
    match outcome {
        Ok(r) => kit::ToolError::from_call_tool_result(r)
            .map(|e| (e.kind.as_str().to_owned(), e.message)),
        Err(e) => Some((e.label().to_owned(), e.to_string())),
    }
}

fn ms(from: Instant, to: Instant) -> f64 {
    ((to - from).as_secs_f64() * 100_000.0).round() / 100.0
}

/// Runs one step (all its items for a `forEach`).
async fn run_step(
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
    if let Err((kind, message)) = &done.value {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", kind.as_str());
        span.record("error.message", message.as_str());
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
        let value = match failure_of(&call.outcome) {
            None => Ok(call.outcome.as_ref().map(value_of).unwrap_or(Value::Null)),
            Some(f) => Err(f),
        };
        return Done {
            index,
            value,
            cached: call.cached,
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
        match failure_of(&call.outcome) {
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
        items: Some((total, failed)),
        started,
        finished: Instant::now(),
    }
}

/// Runs `workflow` on `input`; `on_progress(done, total)` is told after each step.
pub async fn execute(
    workflow: &Workflow,
    input: &Value,
    runner: &dyn StepRunner,
    cx: &CallContext,
    on_progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Run {
    let start = Instant::now();
    let n = workflow.steps.len();
    let mut values: Vec<Option<Value>> = vec![None; n];
    let mut finished = vec![false; n];
    let mut launched = vec![false; n];
    let mut sources: Vec<Option<Source>> = vec![None; n];
    let mut running = FuturesUnordered::new();
    let mut done_count = 0;

    let source = |step: &Step, outcome, started: Instant, ended: Instant| Source {
        step: step.name.clone(),
        server: step.server.clone(),
        tool: step.tool.clone(),
        outcome,
        error_kind: None,
        error: None,
        latency_ms: ms(started, ended),
        items: None,
        failed_items: None,
        started_ms: ms(start, started),
    };

    loop {
        // Launch every step whose inputs are ready; skipping one may free others, so repeat.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (i, step) in workflow.steps.iter().enumerate() {
                if launched[i] || !step.depends_on.iter().all(|&d| finished[d]) {
                    continue;
                }
                launched[i] = true;
                progressed = true;
                if let Some(&missing) = step.depends_on.iter().find(|&&d| values[d].is_none()) {
                    let now = Instant::now();
                    let mut s = source(step, SourceOutcome::Skipped, now, now);
                    s.error = Some(format!(
                        "step `{}` produced no value",
                        workflow.steps[missing].name
                    ));
                    values[i] = step.fallback.clone();
                    sources[i] = Some(s);
                    finished[i] = true;
                    done_count += 1;
                    on_progress(done_count, n);
                    continue;
                }
                let mut scope = Scope::new().with("input", input);
                for &d in &step.depends_on {
                    if let Some(v) = &values[d] {
                        scope.insert(&workflow.steps[d].name, v);
                    }
                }
                match render_calls(step, &scope) {
                    Ok(calls) => {
                        running.push(Box::pin(run_step(
                            i,
                            step,
                            calls,
                            step.for_each.is_some(),
                            runner,
                            cx,
                        ))
                            as Pin<Box<dyn Future<Output = Done> + Send + '_>>);
                    }
                    Err(message) => {
                        let now = Instant::now();
                        running.push(Box::pin(async move {
                            Done {
                                index: i,
                                value: Err(("invalid".to_owned(), message)),
                                cached: false,
                                items: None,
                                started: now,
                                finished: now,
                            }
                        })
                            as Pin<Box<dyn Future<Output = Done> + Send + '_>>);
                        continue;
                    }
                }
            }
        }
        let Some(done) = running.next().await else {
            break;
        };
        let step = &workflow.steps[done.index];
        let mut s = source(step, SourceOutcome::Ok, done.started, done.finished);
        if let Some((total, failed)) = done.items {
            s.items = Some(total);
            s.failed_items = Some(failed);
        }
        match done.value {
            Ok(v) => {
                s.outcome = match done.items {
                    Some((_, failed)) if failed > 0 && step.fallback.is_some() => {
                        SourceOutcome::Fallback
                    }
                    Some((_, failed)) if failed > 0 => SourceOutcome::Failed,
                    _ if done.cached => SourceOutcome::Cached,
                    _ => SourceOutcome::Ok,
                };
                values[done.index] = Some(v);
            }
            Err((kind, message)) => {
                s.error_kind = Some(kind.clone());
                s.error = Some(message.clone());
                if step.critical {
                    s.outcome = SourceOutcome::Failed;
                    sources[done.index] = Some(s);
                    // Dropping `running` cancels the steps still in flight.
                    return Run {
                        result: Err(CriticalFailure {
                            step: step.name.clone(),
                            call: format!("{}.{}", step.server, step.tool),
                            kind,
                            message,
                        }),
                        sources: finish_sources(workflow, sources),
                    };
                }
                s.outcome = if step.fallback.is_some() {
                    SourceOutcome::Fallback
                } else {
                    SourceOutcome::Failed
                };
                values[done.index] = step.fallback.clone();
            }
        }
        sources[done.index] = Some(s);
        finished[done.index] = true;
        done_count += 1;
        on_progress(done_count, n);
    }

    let null = Value::Null;
    let mut scope = Scope::new().with("input", input);
    for (i, step) in workflow.steps.iter().enumerate() {
        scope.insert(&step.name, values[i].as_ref().unwrap_or(&null));
    }
    let result = workflow.output.render(&scope).map_err(|e| CriticalFailure {
        step: "output".into(),
        call: "output".into(),
        kind: "invalid".into(),
        message: e.to_string(),
    });
    Run {
        result,
        sources: finish_sources(workflow, sources),
    }
}

/// The arguments of each call `step` makes: one set, or one per item of its `forEach` list.
/// A list longer than the step's item limit fails the step, naming the step, the count, the limit
/// and the setting; the list is never cut silently.
fn render_calls(step: &Step, scope: &Scope<'_>) -> Result<Vec<JsonObject>, String> {
    let built = |e: String| format!("arguments could not be built: {e}");
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
        Ok(Value::Array(items)) if items.len() > step.max_items.max => Err(format!(
            "step `{}`: forEach has {} items, over the limit of {} ({}); \
             ask for fewer items or raise the limit",
            step.name,
            items.len(),
            step.max_items.max,
            step.max_items.set_by
        )),
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

fn finish_sources(workflow: &Workflow, sources: Vec<Option<Source>>) -> Vec<Source> {
    sources
        .into_iter()
        .zip(&workflow.steps)
        .map(|(s, step)| {
            s.unwrap_or_else(|| Source {
                step: step.name.clone(),
                server: step.server.clone(),
                tool: step.tool.clone(),
                outcome: SourceOutcome::Skipped,
                error_kind: None,
                error: Some("not run: the composite ended first".into()),
                latency_ms: 0.0,
                items: None,
                failed_items: None,
                started_ms: 0.0,
            })
        })
        .collect()
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

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::workflow::CompositeConfig;

    /// Answers `sql.list` with `n` items and counts every other call.
    struct Fake {
        n: usize,
        item_calls: AtomicUsize,
    }

    impl StepRunner for Fake {
        fn call<'a>(
            &'a self,
            step: &'a Step,
            _args: JsonObject,
            _cx: &'a CallContext,
        ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'a>> {
            Box::pin(async move {
                let value = if step.tool == "list" {
                    json!({ "items": (0..self.n).collect::<Vec<_>>() })
                } else {
                    self.item_calls.fetch_add(1, Ordering::SeqCst);
                    json!({ "ok": true })
                };
                StepCall {
                    outcome: Ok(CallToolResult::structured(value)),
                    cached: false,
                }
            })
        }
    }

    fn workflow(max_items: Option<usize>, global: usize) -> Workflow {
        let mut each = json!({ "call": "sql.one", "forEach": "${list.items}", "critical": true });
        if let Some(m) = max_items {
            each["maxItems"] = json!(m);
        }
        let config: CompositeConfig = serde_json::from_value(json!({
            "description": "d",
            "steps": { "list": { "call": "sql.list", "critical": true }, "each": each },
            "output": { "each": "${each}" }
        }))
        .expect("config");
        let servers = ["sql".to_owned()].into_iter().collect();
        Workflow::compile_with_limit("fan", &config, &servers, global).expect("valid")
    }

    async fn run_with(w: &Workflow, n: usize) -> (Run, usize) {
        let fake = Fake {
            n,
            item_calls: AtomicUsize::new(0),
        };
        let run = execute(w, &json!({}), &fake, &CallContext::default(), &|_, _| {}).await;
        (run, fake.item_calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_for_each_over_the_limit_fails_the_step_and_calls_nothing() {
        let (run, calls) = run_with(&workflow(None, 10), 50).await;
        let failure = run.result.expect_err("over the limit");
        assert_eq!(failure.step, "each");
        assert_eq!(failure.kind, "invalid");
        assert_eq!(
            failure.message,
            "step `each`: forEach has 50 items, over the limit of 10 \
             (orchestrator.limits.maxForEachItems); ask for fewer items or raise the limit"
        );
        assert_eq!(calls, 0, "no item was called, none was silently left out");
        let source = run
            .sources
            .iter()
            .find(|s| s.step == "each")
            .expect("source");
        assert_eq!(source.outcome, SourceOutcome::Failed);
        assert_eq!(source.error_kind.as_deref(), Some("invalid"));
    }

    #[tokio::test]
    async fn a_step_limit_overrides_the_global_one_and_the_limit_itself_passes() {
        let (run, _) = run_with(&workflow(Some(3), 1_000), 4).await;
        let failure = run.result.expect_err("over the step's own limit");
        assert!(
            failure
                .message
                .contains("over the limit of 3 (orchestrator.composites.fan.steps.each.maxItems)"),
            "{}",
            failure.message
        );
        let (run, calls) = run_with(&workflow(None, 10), 10).await;
        let output = run.result.expect("exactly at the limit");
        assert_eq!(output["each"].as_array().map(Vec::len), Some(10));
        assert_eq!(calls, 10);
    }
}
