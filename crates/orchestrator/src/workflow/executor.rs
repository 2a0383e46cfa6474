//! Runs a [`Workflow`]: each step starts as soon as the steps it reads have finished, so
//! independent steps overlap and dependent ones follow each other, with no mode flag.
//!
//! The executor owns no I/O: it asks a [`StepRunner`] to make each upstream call (the gateway,
//! whose path is cache → policy stack → upstream; a scripted fake in unit tests).
//!
//! The composite's deadline is kept here, not around the run, so that a run cut off by it still
//! says which steps had finished and which were cut off.

use std::{
    collections::BTreeSet,
    fmt,
    future::Future,
    pin::Pin,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use rmcp::model::JsonObject;
use serde_json::Value;
use tracing::{Instrument, field::Empty};

pub use super::saga::{
    COMPENSATION_ATTEMPTS, JournalWrite, Recorded, SETTLE_REPLAYS, SagaJournal, SagaReport,
    SagaState, compensate_recorded,
};
pub use super::step::{
    Compensation, Settled, Settlement, Source, SourceOutcome, StepCall, StepRunner, value_of,
};
use super::{
    definition::{Step, Workflow},
    saga,
    step::{Done, StepState, ms, render_calls, run_step},
};
use crate::{context::CallContext, error::Fault, policy::Reach, template::Scope};

/// A critical step's failure, which fails the composite.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalFailure {
    /// The step.
    pub step: String,
    /// `server.tool`.
    pub call: String,
    /// What went wrong, as the same call made directly would say it.
    pub fault: Fault,
}

/// Why a run has no output.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A critical step failed, or could not run because a step it reads produced no value.
    Critical(CriticalFailure),
    /// The composite's deadline passed before every step had finished; the steps still running
    /// were cancelled.
    Deadline {
        /// The deadline that passed.
        deadline: Duration,
    },
}

/// The end of a run.
#[derive(Debug)]
pub struct Run {
    /// The rendered output, or why there is none.
    pub result: Result<Value, Failure>,
    /// One entry per step, in the workflow's order, also when the run failed.
    pub sources: Vec<Source>,
    /// For a saga: its id and how it ended.
    pub saga: Option<SagaReport>,
}

impl Run {
    /// Whether the output is whole: every step answered, from its upstream or the cache (no
    /// fallback, no failed item, no skipped step). Only a whole answer may be cached, or a
    /// degraded one would be served for the entry's whole lifetime.
    pub fn is_complete(&self) -> bool {
        self.result.is_ok()
            && self
                .sources
                .iter()
                .all(|s| matches!(s.outcome, SourceOutcome::Ok | SourceOutcome::Cached))
    }
}

/// A [`StepRunner`] that passes every call on and collects what `tags_of` makes of it: the
/// gateway renders each call's cache tags from the arguments the step was called with, so a
/// composite's cached result carries the tags of everything its steps read
/// (`customer:CUST-0001`) and the writes that invalidate any of them drop it too.
pub struct TagCollector<'a> {
    /// Makes the calls.
    inner: &'a dyn StepRunner,
    /// The tags of one call.
    tags_of: &'a (dyn Fn(&Step, &JsonObject) -> Vec<String> + Send + Sync),
    /// Every tag seen so far; a set, as a fan-out repeats tags.
    tags: Mutex<BTreeSet<String>>,
}

impl fmt::Debug for TagCollector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagCollector")
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl<'a> TagCollector<'a> {
    /// Passes calls on to `inner`, noting `tags_of` each.
    pub fn new(
        inner: &'a dyn StepRunner,
        tags_of: &'a (dyn Fn(&Step, &JsonObject) -> Vec<String> + Send + Sync),
    ) -> Self {
        Self {
            inner,
            tags_of,
            tags: Mutex::new(BTreeSet::new()),
        }
    }

    /// The tags of every call made, sorted, without repeats.
    pub fn into_tags(self) -> Vec<String> {
        self.tags
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .collect()
    }
}

impl StepRunner for TagCollector<'_> {
    fn call<'b>(
        &'b self,
        step: &'b Step,
        args: JsonObject,
        cx: &'b CallContext,
    ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'b>> {
        let tags = (self.tags_of)(step, &args);
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tags);
        self.inner.call(step, args, cx)
    }

    fn replay_safe(&self, step: &Step, args: &JsonObject) -> bool {
        self.inner.replay_safe(step, args)
    }
}

/// Runs `workflow` on `input` within its deadline; `on_progress(done, total)` is told after
/// each step.
///
/// A critical step that fails, or that is skipped because a step it reads produced no value,
/// ends the run with [`Failure::Critical`]; the deadline ends it with [`Failure::Deadline`]. In
/// both cases the steps still running are cancelled and reported as `failed` (kind `cancelled`
/// or `deadline`), the ones not started as `skipped`.
pub async fn execute(
    workflow: &Workflow,
    input: &Value,
    runner: &dyn StepRunner,
    cx: &CallContext,
    on_progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Run {
    execute_journaled(workflow, input, runner, cx, on_progress, None).await
}

/// [`execute`], a saga writing down its progress in `journal`.
pub async fn execute_journaled(
    workflow: &Workflow,
    input: &Value,
    runner: &dyn StepRunner,
    cx: &CallContext,
    on_progress: &(dyn Fn(usize, usize) + Send + Sync),
    journal: Option<&dyn SagaJournal>,
) -> Run {
    let saga_id = format!("saga-{:016x}", rand::random::<u64>());
    if !workflow.is_saga() {
        return run_plan(workflow, input, runner, cx, on_progress, saga_id, &[], None).await;
    }
    if let Some(j) = journal {
        j.started(&saga_id, &workflow.name, input).await;
    }
    tracing::info!(composite = %workflow.name, saga = %saga_id, "saga started");
    run_saga(
        workflow,
        input,
        runner,
        cx,
        on_progress,
        saga_id,
        &[],
        journal,
    )
    .await
}

/// Finishes a saga found unfinished after a restart whose composite says
/// `recovery: "forward"`: the steps written down as succeeded keep their values and are not
/// sent again; the others run, with the same saga id and so the same idempotency keys, so a
/// step that was in flight when the process died applies once. If a step fails now, the saga
/// is undone as usual.
pub async fn resume(
    workflow: &Workflow,
    input: &Value,
    saga_id: &str,
    succeeded: &[(String, Value)],
    runner: &dyn StepRunner,
    cx: &CallContext,
    journal: Option<&dyn SagaJournal>,
) -> Run {
    let progress = |_: usize, _: usize| {};
    run_saga(
        workflow,
        input,
        runner,
        cx,
        &progress,
        saga_id.to_owned(),
        succeeded,
        journal,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_saga(
    workflow: &Workflow,
    input: &Value,
    runner: &dyn StepRunner,
    cx: &CallContext,
    on_progress: &(dyn Fn(usize, usize) + Send + Sync),
    saga_id: String,
    preload: &[(String, Value)],
    journal: Option<&dyn SagaJournal>,
) -> Run {
    // One span around a saga's steps and undos, carrying its id, so the trace of a saga that
    // was compensated shows what ran, what failed and what was undone under one parent.
    let span = tracing::info_span!(
        "workflow.saga",
        otel.name = %format!("saga {}", workflow.name),
        mcp.saga.id = %saga_id,
        mcp.workflow.name = %workflow.name,
        mcp.saga.state = Empty,
    );
    let run = run_plan(
        workflow,
        input,
        runner,
        cx,
        on_progress,
        saga_id,
        preload,
        journal,
    )
    .instrument(span.clone())
    .await;
    if let Some(saga) = &run.saga {
        span.record("mcp.saga.state", saga.state.as_str());
        if let Some(j) = journal {
            j.ended(&saga.id, saga.state).await;
        }
    }
    run
}

#[allow(clippy::too_many_arguments)]
async fn run_plan(
    workflow: &Workflow,
    input: &Value,
    runner: &dyn StepRunner,
    cx: &CallContext,
    on_progress: &(dyn Fn(usize, usize) + Send + Sync),
    saga_id: String,
    preload: &[(String, Value)],
    journal: Option<&dyn SagaJournal>,
) -> Run {
    let start = Instant::now();
    // The user's time answering a step's question does not count against the composite.
    let wait = cx.origin.as_ref().map(|o| o.wait.clone());
    let expiry = crate::ask::pause::expiry(workflow.deadline, wait);
    tokio::pin!(expiry);
    let n = workflow.steps.len();
    let mut states: Vec<StepState> = (0..n).map(|_| StepState::default()).collect();
    // Settling a step in doubt must not be cut short by the agent: its answer decides what
    // is undone.
    let settle_cx = CallContext {
        ct: tokio_util::sync::CancellationToken::new(),
        ..cx.clone()
    };
    let mut running = FuturesUnordered::new();
    let mut done_count = 0;
    let saga = serde_json::json!({ "id": saga_id });
    // Steps that answered, in the order they did: a failed saga undoes them in reverse.
    let mut succeeded: Vec<usize> = Vec::new();

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
        compensation: None,
        settled: None,
    };
    // A resumed saga's steps that succeeded before the restart: done, not sent again.
    for (name, value) in preload {
        if let Some(i) = workflow.steps.iter().position(|s| &s.name == name) {
            let now = Instant::now();
            states[i].launched = Some(now);
            states[i].finished = true;
            states[i].value = Some(value.clone());
            states[i].source = Some(source(&workflow.steps[i], SourceOutcome::Ok, now, now));
            succeeded.push(i);
            done_count += 1;
        }
    }

    let failed: Option<(Failure, Ending)> = 'run: loop {
        // Launch every step whose inputs are ready; skipping one may free others, so repeat.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (i, step) in workflow.steps.iter().enumerate() {
                if states[i].launched.is_some()
                    || !step.depends_on.iter().all(|&d| states[d].finished)
                {
                    continue;
                }
                let now = Instant::now();
                states[i].launched = Some(now);
                progressed = true;
                if let Some(&missing) = step.depends_on.iter().find(|&&d| states[d].value.is_none())
                {
                    let cause = states[missing].cause.clone();
                    let mut why = format!(
                        "not run: step `{}` it reads produced no value",
                        workflow.steps[missing].name
                    );
                    if let Some(cause) = &cause {
                        why = format!("{why} ({})", cause.message);
                    }
                    let mut s = source(step, SourceOutcome::Skipped, now, now);
                    s.error = Some(why.clone());
                    states[i].source = Some(s);
                    if step.critical {
                        // The cause's fault, reworded: the step did not fail, it could not run.
                        let mut fault = cause.unwrap_or_else(|| Fault {
                            kind: kit::ErrorKind::Unavailable,
                            reason: kit::ErrorKind::Unavailable.as_str().to_owned(),
                            message: String::new(),
                            retryable: true,
                            retry_after_ms: None,
                            server: None,
                        });
                        fault.message = why;
                        let failure = CriticalFailure {
                            step: step.name.clone(),
                            call: format!("{}.{}", step.server, step.tool),
                            fault,
                        };
                        break 'run Some((
                            Failure::Critical(failure),
                            Ending::critical(&step.name),
                        ));
                    }
                    states[i].cause = cause;
                    // A `forEach` fallback stands for one item; without a list there are no items.
                    states[i].value = match step.for_each {
                        Some(_) => None,
                        None => step.fallback.clone(),
                    };
                    states[i].finished = true;
                    done_count += 1;
                    on_progress(done_count, n);
                    continue;
                }
                let mut scope = Scope::new().with("input", input).with("saga", &saga);
                for &d in &step.depends_on {
                    if let Some(v) = &states[d].value {
                        scope.insert(&workflow.steps[d].name, v);
                    }
                }
                match render_calls(step, &scope) {
                    Ok(calls) => {
                        if workflow.is_saga() && step.for_each.is_none() {
                            let args = calls.first().cloned().unwrap_or_default();
                            // Written down before it is sent: a restart settles it with these.
                            if let Some(j) = journal {
                                j.launched(&saga_id, &step.name, &args).await;
                            }
                            states[i].args = Some(args);
                        }
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
                    Err(e) => {
                        let fault = Fault::invalid(e.to_string());
                        running.push(Box::pin(async move {
                            Done {
                                index: i,
                                value: Err(fault),
                                cached: false,
                                reach: Reach::NotSent,
                                settled: None,
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
        let next = tokio::select! {
            // A step that finished right at the deadline still counts.
            biased;
            done = running.next() => done,
            () = &mut expiry => {
                break 'run Some((
                    Failure::Deadline { deadline: workflow.deadline },
                    Ending::deadline(workflow.deadline),
                ));
            }
        };
        let Some(done) = next else {
            break 'run None;
        };
        let step = &workflow.steps[done.index];
        let state = &mut states[done.index];
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
                s.settled = done.settled.clone();
                // Written down before any step that reads it starts.
                if let Some(j) = journal {
                    j.succeeded(&saga_id, &step.name, &v).await;
                }
                state.value = Some(v);
                succeeded.push(done.index);
            }
            Err(fault) => {
                s.error_kind = Some(fault.reason.clone());
                s.error = Some(fault.message.clone());
                s.settled = done.settled.clone();
                // A saga's step without an undo (it runs last) that may have taken effect is
                // settled forward: if it did, the saga is whole; if not, the others are undone.
                let unsettled = done.settled.is_none()
                    && workflow.is_saga()
                    && step.critical
                    && step.compensate.is_none()
                    && saga::in_doubt(&fault, done.reach);
                if let (true, Some(args)) = (unsettled, state.args.clone()) {
                    let (index, started, reach) = (done.index, done.started, done.reach);
                    let settle_cx = &settle_cx;
                    running.push(Box::pin(async move {
                        let (value, settled) =
                            saga::settle(index, step, &args, reach, runner, settle_cx).await;
                        Done {
                            index,
                            value: value.ok_or(fault),
                            cached: false,
                            reach,
                            settled: Some(settled),
                            items: None,
                            started,
                            finished: Instant::now(),
                        }
                    })
                        as Pin<Box<dyn Future<Output = Done> + Send + '_>>);
                    continue;
                }
                if let (true, Some(j)) = (
                    not_taken(done.settled.as_ref(), done.reach, &fault, state),
                    journal,
                ) {
                    j.not_taken(&saga_id, &step.name).await;
                }
                state.failure = Some((fault.clone(), done.reach));
                if step.critical {
                    s.outcome = SourceOutcome::Failed;
                    state.source = Some(s);
                    state.finished = true;
                    let failure = CriticalFailure {
                        step: step.name.clone(),
                        call: format!("{}.{}", step.server, step.tool),
                        fault,
                    };
                    break 'run Some((Failure::Critical(failure), Ending::critical(&step.name)));
                }
                // A `forEach` whose fallback exists failed as a whole (its list or arguments
                // could not be built): the fallback stands for one item, so there is no value.
                let fallback = match step.for_each {
                    Some(_) => None,
                    None => step.fallback.clone(),
                };
                s.outcome = if fallback.is_some() {
                    SourceOutcome::Fallback
                } else {
                    SourceOutcome::Failed
                };
                let message = format!("{}.{}: {}", step.server, step.tool, fault.message);
                state.cause = Some(Fault { message, ..fault });
                state.value = fallback;
            }
        }
        state.source = Some(s);
        state.finished = true;
        done_count += 1;
        on_progress(done_count, n);
    };

    if let Some((failure, ending)) = failed {
        let saga = if workflow.is_saga() {
            // A step still running may be a write that lands: wait for every one (each is
            // bounded by its server's timeouts) so that what succeeded is known, then undo it.
            while let Some(done) = running.next().await {
                let step = &workflow.steps[done.index];
                let mut s = source(step, SourceOutcome::Ok, done.started, done.finished);
                match done.value {
                    Ok(v) => {
                        if let Some(j) = journal {
                            j.succeeded(&saga_id, &step.name, &v).await;
                        }
                        states[done.index].value = Some(v);
                        succeeded.push(done.index);
                    }
                    Err(fault) => {
                        s.outcome = SourceOutcome::Failed;
                        s.error_kind = Some(fault.reason.clone());
                        s.error = Some(fault.message.clone());
                        s.settled = done.settled.clone();
                        if let (true, Some(j)) = (
                            not_taken(
                                done.settled.as_ref(),
                                done.reach,
                                &fault,
                                &states[done.index],
                            ),
                            journal,
                        ) {
                            j.not_taken(&saga_id, &step.name).await;
                        }
                        states[done.index].failure = Some((fault, done.reach));
                    }
                }
                states[done.index].source = Some(s);
                states[done.index].finished = true;
            }
            // The deadline passed while the last steps were finishing, and they all did: the
            // saga is whole, and undoing it would throw away writes (one may have no undo).
            let whole = matches!(failure, Failure::Deadline { .. }) && succeeded.len() == n;
            if whole {
                tracing::warn!(
                    composite = %workflow.name,
                    saga = %saga_id,
                    "saga completed after its deadline passed"
                );
                None
            } else {
                let failed_step = match &failure {
                    Failure::Critical(f) => f.step.as_str(),
                    Failure::Deadline { .. } => "deadline",
                };
                tracing::warn!(
                    composite = %workflow.name,
                    saga = %saga_id,
                    failed_step,
                    "saga compensating"
                );
                if let Some(j) = journal {
                    j.compensating(&saga_id, failed_step).await;
                }
                let state = saga::unwind(
                    workflow,
                    input,
                    &saga,
                    &mut states,
                    &mut succeeded,
                    runner,
                    cx,
                    journal,
                )
                .await;
                Some(Some(SagaReport {
                    id: saga_id.clone(),
                    state,
                }))
            }
        } else {
            Some(None)
        };
        if let Some(saga) = saga {
            // Dropping `running` cancels the steps still in flight (none, for a saga).
            drop(running);
            return Run {
                result: Err(failure),
                sources: finish_sources(workflow, states, start, &ending),
                saga,
            };
        }
    }

    let null = Value::Null;
    let mut scope = Scope::new().with("input", input);
    for (state, step) in states.iter().zip(&workflow.steps) {
        scope.insert(&step.name, state.value.as_ref().unwrap_or(&null));
    }
    let result = workflow.output.render(&scope).map_err(|e| {
        Failure::Critical(CriticalFailure {
            step: "output".into(),
            call: "output".into(),
            fault: Fault::invalid(e.to_string()),
        })
    });
    let ending = Ending::critical("output");
    Run {
        result,
        sources: finish_sources(workflow, states, start, &ending),
        saga: workflow.is_saga().then_some(SagaReport {
            id: saga_id,
            state: SagaState::Completed,
        }),
    }
}

/// Whether a saga's failed step is known not to have taken effect, so the journal can say so
/// and a restart does not settle it again.
fn not_taken(settled: Option<&Settled>, reach: Reach, fault: &Fault, state: &StepState) -> bool {
    state.args.is_some()
        && match settled {
            Some(settled) => settled.outcome == Settlement::DidNotTakeEffect,
            None => !saga::in_doubt(fault, reach),
        }
}

/// How a run that ended early reports the steps it did not wait for.
struct Ending {
    /// The error kind of the steps cut off while running.
    kind: &'static str,
    /// Why the run ended.
    why: String,
}

impl Ending {
    fn critical(step: &str) -> Self {
        Self {
            kind: "cancelled",
            why: format!("the composite failed at step `{step}`"),
        }
    }

    fn deadline(deadline: Duration) -> Self {
        Self {
            kind: "deadline",
            why: format!(
                "the composite's deadline of {} ms passed",
                deadline.as_millis()
            ),
        }
    }
}

/// Every step's source: the ones reported, then the steps cut off while running (`failed`, with
/// the ending's kind) and the ones never started (`skipped`).
fn finish_sources(
    workflow: &Workflow,
    states: Vec<StepState>,
    start: Instant,
    ending: &Ending,
) -> Vec<Source> {
    let now = Instant::now();
    states
        .into_iter()
        .zip(&workflow.steps)
        .map(|(state, step)| {
            let launched = state.launched;
            state.source.unwrap_or_else(|| {
                let (outcome, error_kind, error, started) = match launched {
                    Some(at) => (
                        SourceOutcome::Failed,
                        Some(ending.kind.to_owned()),
                        format!("cut off: {}", ending.why),
                        at,
                    ),
                    None => (
                        SourceOutcome::Skipped,
                        None,
                        format!("not run: {}", ending.why),
                        now,
                    ),
                };
                Source {
                    step: step.name.clone(),
                    server: step.server.clone(),
                    tool: step.tool.clone(),
                    outcome,
                    error_kind,
                    error: Some(error),
                    latency_ms: ms(started, now),
                    items: None,
                    failed_items: None,
                    started_ms: ms(start, started),
                    compensation: None,
                    settled: None,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rmcp::model::CallToolResult;

    use serde_json::json;

    use super::*;
    use crate::{error::CallError, workflow::CompositeConfig};

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
                    reach: Reach::Answered,
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

    fn critical(run: Run) -> CriticalFailure {
        match run.result {
            Err(Failure::Critical(f)) => f,
            other => panic!("expected a critical failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_for_each_over_the_limit_fails_the_step_and_calls_nothing() {
        let (run, calls) = run_with(&workflow(None, 10), 50).await;
        let sources = run.sources.clone();
        let failure = critical(run);
        assert_eq!(failure.step, "each");
        assert_eq!(failure.fault.reason, "invalid");
        assert_eq!(
            failure.fault.message,
            "step `each`: forEach has 50 items, over the limit of 10 \
             (orchestrator.limits.maxForEachItems); ask for fewer items or raise the limit"
        );
        assert_eq!(calls, 0, "no item was called, none was silently left out");
        let source = sources.iter().find(|s| s.step == "each").expect("source");
        assert_eq!(source.outcome, SourceOutcome::Failed);
        assert_eq!(source.error_kind.as_deref(), Some("invalid"));
    }

    #[tokio::test]
    async fn a_step_limit_overrides_the_global_one_and_the_limit_itself_passes() {
        let (run, _) = run_with(&workflow(Some(3), 1_000), 4).await;
        let failure = critical(run);
        assert!(
            failure
                .fault
                .message
                .contains("over the limit of 3 (orchestrator.composites.fan.steps.each.maxItems)"),
            "{}",
            failure.fault.message
        );
        let (run, calls) = run_with(&workflow(None, 10), 10).await;
        let output = run.result.expect("exactly at the limit");
        assert_eq!(output["each"].as_array().map(Vec::len), Some(10));
        assert_eq!(calls, 10);
    }

    /// Answers by tool name: `fail*` tools fail (`unavailable`), `slow*` tools answer after 10 s
    /// (tests run on paused time), `list` gives three items, anything else echoes its arguments.
    struct Scripted;

    impl StepRunner for Scripted {
        fn call<'a>(
            &'a self,
            step: &'a Step,
            args: JsonObject,
            _cx: &'a CallContext,
        ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'a>> {
            Box::pin(async move {
                let outcome = if step.tool.starts_with("fail") {
                    kit::ToolError::unavailable("down for maintenance").to_call_tool_result()
                } else {
                    if step.tool.starts_with("slow") {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    let value = match step.tool.as_str() {
                        "list" => json!({ "items": [{ "id": 1 }, { "id": 2 }, { "id": 3 }] }),
                        _ => json!({ "tool": step.tool, "args": args }),
                    };
                    CallToolResult::structured(value)
                };
                StepCall {
                    outcome: Ok(outcome),
                    cached: step.tool.starts_with("cached"),
                    reach: Reach::Answered,
                }
            })
        }
    }

    fn compile(config: Value) -> Workflow {
        let config: CompositeConfig = serde_json::from_value(config).expect("config");
        let servers = ["sql", "cosmos", "rest"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Workflow::compile("demo", &config, &servers).expect("valid")
    }

    async fn run(w: &Workflow) -> Run {
        execute(
            w,
            &json!({}),
            &Scripted,
            &CallContext::default(),
            &|_, _| {},
        )
        .await
    }

    fn source<'a>(run: &'a Run, step: &str) -> &'a Source {
        run.sources
            .iter()
            .find(|s| s.step == step)
            .unwrap_or_else(|| panic!("no source for {step}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_critical_step_skipped_for_want_of_its_input_fails_the_run() {
        let w = compile(json!({ "description": "d", "steps": {
            "profile": { "call": "cosmos.fail_profile" },
            "report": { "call": "sql.report", "args": { "segment": "${profile.segment}" }, "critical": true },
            "other": { "call": "rest.slow_other" }
        }, "output": { "report": "${report}" } }));
        let run = run(&w).await;
        assert_eq!(source(&run, "profile").outcome, SourceOutcome::Failed);
        let report = source(&run, "report").clone();
        assert_eq!(report.outcome, SourceOutcome::Skipped);
        let other = source(&run, "other").clone();
        assert_eq!(other.outcome, SourceOutcome::Failed, "cut off: {other:?}");
        assert_eq!(other.error_kind.as_deref(), Some("cancelled"));
        let failure = critical(run);
        assert_eq!(failure.step, "report");
        assert_eq!(failure.call, "sql.report");
        assert_eq!(failure.fault.reason, "unavailable", "the cause's kind");
        assert!(
            failure.fault.message.contains("`profile`")
                && failure.fault.message.contains("down for maintenance"),
            "{}",
            failure.fault.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_optional_step_skipped_for_want_of_its_input_does_not_fail_the_run() {
        let w = compile(json!({ "description": "d", "steps": {
            "profile": { "call": "cosmos.fail_profile" },
            "report": { "call": "sql.report", "args": { "segment": "${profile.segment}" } },
            "main": { "call": "sql.main", "critical": true }
        }, "output": { "report": "${report}", "main": "${main.tool}" } }));
        let run = run(&w).await;
        assert_eq!(source(&run, "report").outcome, SourceOutcome::Skipped);
        assert!(!run.is_complete());
        assert_eq!(
            run.result.expect("optional"),
            json!({ "report": null, "main": "main" })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_keeps_the_sources_of_finished_and_cut_off_steps() {
        let w = compile(json!({ "description": "d", "deadlineMs": 1000, "steps": {
            "fast": { "call": "sql.fast", "critical": true },
            "slow": { "call": "cosmos.slow" },
            "after": { "call": "rest.after", "args": { "v": "${slow.tool}" } }
        }, "output": {} }));
        let run = run(&w).await;
        assert_eq!(source(&run, "fast").outcome, SourceOutcome::Ok);
        let slow = source(&run, "slow");
        assert_eq!(slow.outcome, SourceOutcome::Failed);
        assert_eq!(slow.error_kind.as_deref(), Some("deadline"));
        assert!(
            slow.error
                .as_deref()
                .is_some_and(|e| e.contains("deadline of 1000 ms")),
            "{slow:?}"
        );
        assert_eq!(source(&run, "after").outcome, SourceOutcome::Skipped);
        assert_eq!(
            run.result,
            Err(Failure::Deadline {
                deadline: Duration::from_secs(1)
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_optional_fan_out_leaves_the_items_unenriched() {
        let w = compile(json!({ "description": "d", "steps": {
            "top": { "call": "sql.list", "critical": true },
            "analysis": { "call": "cosmos.fail_analysis", "forEach": "${top.items}", "as": "c", "args": { "id": "${c.id}" } },
            "missing": { "call": "sql.fail_missing" },
            "skipped": { "call": "cosmos.each", "forEach": "${missing.items}", "fallback": { "x": 0 } }
        }, "output": {
            "items": { "$zip": { "items": "${top.items}", "with": "${analysis}", "as": "behavior" } },
            "skipped": "${skipped}"
        } }));
        let run = run(&w).await;
        let analysis = source(&run, "analysis");
        assert_eq!(analysis.outcome, SourceOutcome::Failed);
        assert_eq!((analysis.items, analysis.failed_items), (Some(3), Some(3)));
        assert_eq!(source(&run, "skipped").outcome, SourceOutcome::Skipped);
        assert_eq!(
            run.result
                .expect("the optional fan-out does not fail the run"),
            json!({
                "items": [
                    { "id": 1, "behavior": null }, { "id": 2, "behavior": null }, { "id": 3, "behavior": null }
                ],
                // The per-item fallback is not the value of a fan-out that had no list.
                "skipped": null
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_run_where_every_step_answered_is_complete() {
        let ok = compile(json!({ "description": "d", "steps": {
            "a": { "call": "sql.a" }, "b": { "call": "sql.cached_b" }
        }, "output": {} }));
        let run_ok = run(&ok).await;
        assert_eq!(source(&run_ok, "b").outcome, SourceOutcome::Cached);
        assert!(run_ok.is_complete());
        let fallback = compile(json!({ "description": "d", "steps": {
            "a": { "call": "sql.a" }, "b": { "call": "sql.fail_b", "fallback": {} }
        }, "output": {} }));
        let run_fallback = run(&fallback).await;
        assert_eq!(source(&run_fallback, "b").outcome, SourceOutcome::Fallback);
        assert!(!run_fallback.is_complete());
        let failed = compile(json!({ "description": "d", "steps": {
            "a": { "call": "sql.a" }, "b": { "call": "sql.fail_b" }
        }, "output": {} }));
        assert!(!run(&failed).await.is_complete());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tag_collector_notes_every_call_with_its_own_arguments() {
        let w = compile(json!({ "description": "d", "steps": {
            "top": { "call": "sql.list", "critical": true },
            "each": { "call": "cosmos.each", "forEach": "${top.items}", "as": "c", "args": { "id": "${c.id}" } }
        }, "output": {} }));
        let tags_of = |step: &Step, args: &JsonObject| match args.get("id") {
            Some(id) => vec![format!("{}:{id}", step.tool), "items".to_owned()],
            None => vec![format!("{}:all", step.tool)],
        };
        let collector = TagCollector::new(&Scripted, &tags_of);
        let run = execute(
            &w,
            &json!({}),
            &collector,
            &CallContext::default(),
            &|_, _| {},
        )
        .await;
        assert!(run.is_complete());
        assert_eq!(
            collector.into_tags(),
            ["each:1", "each:2", "each:3", "items", "list:all"]
        );
    }

    /// Writes for the saga tests: `create` and `reserve` answer ids, `slow_write` answers after
    /// 50 ms; a tool fails (an `unavailable` tool error) as many times as `failures` says
    /// (`usize::MAX`: always). Records every call with its arguments.
    #[derive(Default)]
    struct Writes {
        calls: Mutex<Vec<(String, Value)>>,
        /// Calls of a tool that fail without taking effect, answered `unavailable`.
        failures: Mutex<std::collections::HashMap<String, usize>>,
        /// Calls of a tool that take effect but whose answer is lost (a timeout).
        silent: Mutex<std::collections::HashMap<String, usize>>,
        /// Tools whose calls take effect, then answer `unavailable` (a lost response).
        lost: Mutex<std::collections::HashMap<String, usize>>,
        /// Tools a replay could apply twice.
        unsafe_tools: Mutex<BTreeSet<String>>,
        /// Tools whose effect happened, once per call that took effect.
        effects: Mutex<Vec<String>>,
    }

    impl Writes {
        fn failing(tool: &str, times: usize) -> Self {
            let w = Self::default();
            w.failures
                .lock()
                .expect("lock")
                .insert(tool.to_owned(), times);
            w
        }

        fn with(
            self,
            which: fn(&Self) -> &Mutex<std::collections::HashMap<String, usize>>,
            tool: &str,
            times: usize,
        ) -> Self {
            which(&self)
                .lock()
                .expect("lock")
                .insert(tool.to_owned(), times);
            self
        }

        fn effects(&self) -> Vec<String> {
            self.effects.lock().expect("lock").clone()
        }

        fn tools(&self) -> Vec<String> {
            let calls = self.calls.lock().expect("lock");
            calls.iter().map(|(t, _)| t.clone()).collect()
        }

        fn args_of(&self, tool: &str) -> Value {
            let calls = self.calls.lock().expect("lock");
            calls
                .iter()
                .find(|(t, _)| t == tool)
                .map(|(_, a)| a.clone())
                .unwrap_or_default()
        }
    }

    impl StepRunner for Writes {
        fn call<'a>(
            &'a self,
            step: &'a Step,
            args: JsonObject,
            cx: &'a CallContext,
        ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'a>> {
            Box::pin(async move {
                // As the real path: a cancelled call does not reach the server.
                if step.tool == "wait_for_cancel" {
                    cx.ct.cancelled().await;
                }
                if cx.ct.is_cancelled() {
                    return StepCall::unsent(Err(CallError::Cancelled));
                }
                if step.tool == "slow_write" {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.calls
                    .lock()
                    .expect("lock")
                    .push((step.tool.clone(), Value::Object(args)));
                let take = |which: &Mutex<std::collections::HashMap<String, usize>>| {
                    let mut counts = which.lock().expect("lock");
                    match counts.get_mut(&step.tool) {
                        Some(n) if *n > 0 => {
                            if *n != usize::MAX {
                                *n -= 1;
                            }
                            true
                        }
                        _ => false,
                    }
                };
                let fail = take(&self.failures);
                if !fail {
                    // The fake's writes are keyed: a repeat after one took effect does not
                    // take effect again.
                    let mut effects = self.effects.lock().expect("lock");
                    if !effects.contains(&step.tool) {
                        effects.push(step.tool.clone());
                    }
                }
                if !fail && take(&self.silent) {
                    return StepCall {
                        outcome: Err(CallError::Timeout {
                            server: step.server.clone(),
                            tool: step.tool.clone(),
                            after: Duration::from_millis(100),
                        }),
                        cached: false,
                        reach: Reach::Silent,
                    };
                }
                let outcome = if fail || take(&self.lost) {
                    kit::ToolError::unavailable("injected failure").to_call_tool_result()
                } else {
                    CallToolResult::structured(match step.tool.as_str() {
                        "create" => json!({ "orderId": "O-1" }),
                        "reserve" => json!({ "reservationId": "R-1" }),
                        _ => json!({ "ok": true }),
                    })
                };
                StepCall {
                    outcome: Ok(outcome),
                    cached: false,
                    reach: Reach::Answered,
                }
            })
        }

        fn replay_safe(&self, step: &Step, _args: &JsonObject) -> bool {
            !self.unsafe_tools.lock().expect("lock").contains(&step.tool)
        }
    }

    /// `place_order` in small: create the order, reserve its stock, record the event; the first
    /// two undo themselves.
    fn place_order() -> Workflow {
        compile(json!({
            "description": "order, stock, event",
            "steps": {
                "order": {
                    "call": "sql.create", "critical": true,
                    "args": { "key": "${saga.id}:order" },
                    "compensate": { "call": "sql.cancel", "args": { "orderId": "${order.orderId}", "key": "${saga.id}:cancel" } }
                },
                "stock": {
                    "call": "rest.reserve", "critical": true,
                    "args": { "orderId": "${order.orderId}" },
                    "compensate": { "call": "rest.release", "args": { "reservationId": "${stock.reservationId}" } }
                },
                "event": {
                    "call": "cosmos.record", "critical": true,
                    "args": { "orderId": "${order.orderId}", "reservation": "${stock.reservationId}" }
                }
            },
            "output": { "orderId": "${order.orderId}" }
        }))
    }

    async fn run_saga(w: &Workflow, runner: &Writes) -> Run {
        execute(w, &json!({}), runner, &CallContext::default(), &|_, _| {}).await
    }

    #[tokio::test]
    async fn a_saga_that_succeeds_undoes_nothing_and_says_completed() {
        let writes = Writes::default();
        let run = run_saga(&place_order(), &writes).await;
        assert_eq!(run.result, Ok(json!({ "orderId": "O-1" })));
        assert_eq!(writes.tools(), ["create", "reserve", "record"]);
        let saga = run.saga.expect("a saga report");
        assert_eq!(saga.state, SagaState::Completed);
        assert_eq!(
            writes.args_of("create")["key"],
            json!(format!("{}:order", saga.id)),
            "${{saga.id}} renders into step arguments"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_saga_undoes_what_succeeded_last_first() {
        let writes = Writes::failing("record", usize::MAX);
        let run = run_saga(&place_order(), &writes).await;
        assert!(matches!(run.result, Err(Failure::Critical(ref f)) if f.step == "event"));
        // `unavailable` may be a lost answer: the step without an undo is replayed until the
        // replays are used up, then taken at its word; the undos run newest first.
        assert_eq!(
            writes.tools(),
            [
                "create", "reserve", "record", "record", "record", "record", "release", "cancel"
            ]
        );
        assert_eq!(
            source(&run, "event").settled,
            Some(Settled {
                replays: SETTLE_REPLAYS,
                outcome: Settlement::DidNotTakeEffect
            })
        );
        assert_eq!(writes.args_of("release"), json!({ "reservationId": "R-1" }));
        let saga = run.saga.clone().expect("a saga report");
        assert_eq!(saga.state, SagaState::Compensated);
        assert_eq!(
            writes.args_of("cancel"),
            json!({ "orderId": "O-1", "key": format!("{}:cancel", saga.id) })
        );
        for step in ["order", "stock"] {
            let c = source(&run, step)
                .compensation
                .clone()
                .expect("compensated");
            assert_eq!((c.outcome, c.attempts), ("compensated", 1), "{step}");
        }
        assert!(source(&run, "event").compensation.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_undo_that_fails_is_retried_until_it_succeeds() {
        let writes = Writes::failing("record", usize::MAX);
        writes
            .failures
            .lock()
            .expect("lock")
            .insert("cancel".into(), 2);
        let run = run_saga(&place_order(), &writes).await;
        assert_eq!(
            run.saga.as_ref().map(|s| s.state),
            Some(SagaState::Compensated)
        );
        let c = source(&run, "order")
            .compensation
            .clone()
            .expect("compensated");
        assert_eq!((c.outcome, c.attempts), ("compensated", 3));
        assert_eq!(writes.tools().iter().filter(|t| *t == "cancel").count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_undo_that_never_succeeds_leaves_the_saga_needing_a_person() {
        let writes = Writes::failing("record", usize::MAX);
        writes
            .failures
            .lock()
            .expect("lock")
            .insert("release".into(), usize::MAX);
        let run = run_saga(&place_order(), &writes).await;
        assert_eq!(
            run.saga.as_ref().map(|s| s.state),
            Some(SagaState::CompensationFailed)
        );
        let release = source(&run, "stock").compensation.clone().expect("tried");
        assert_eq!(
            (release.outcome, release.attempts),
            ("failed", COMPENSATION_ATTEMPTS)
        );
        assert!(release.error.is_some());
        // One undo failing does not stop the others.
        let cancel = source(&run, "order").compensation.clone().expect("tried");
        assert_eq!(cancel.outcome, "compensated");
    }

    #[tokio::test]
    async fn a_write_still_running_when_the_saga_fails_is_waited_for_and_undone() {
        let w = compile(json!({
            "description": "two writes at once",
            "steps": {
                "slow": {
                    "call": "sql.slow_write", "critical": true,
                    "compensate": { "call": "sql.undo_slow" }
                },
                "fast": { "call": "rest.fail_now", "critical": true }
            },
            "output": {}
        }));
        let writes = Writes::failing("fail_now", usize::MAX);
        let run = run_saga(&w, &writes).await;
        assert!(matches!(run.result, Err(Failure::Critical(ref f)) if f.step == "fast"));
        assert_eq!(source(&run, "slow").outcome, SourceOutcome::Ok);
        assert_eq!(writes.tools().last().map(String::as_str), Some("undo_slow"));
        assert_eq!(run.saga.map(|s| s.state), Some(SagaState::Compensated));
    }

    #[tokio::test]
    async fn an_agent_cancelling_a_saga_still_gets_its_writes_undone() {
        let w = compile(json!({
            "description": "a write, then a step the agent cancels",
            "steps": {
                "order": {
                    "call": "sql.create", "critical": true,
                    "compensate": { "call": "sql.cancel", "args": { "orderId": "${order.orderId}" } }
                },
                "next": { "call": "rest.wait_for_cancel", "critical": true, "args": { "o": "${order.orderId}" } }
            },
            "output": {}
        }));
        let writes = Writes::default();
        let cx = CallContext::default();
        let ct = cx.ct.clone();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ct.cancel();
        };
        let input = json!({});
        let (run, ()) = tokio::join!(execute(&w, &input, &writes, &cx, &|_, _| {}), cancel);
        assert_eq!(run.saga.map(|s| s.state), Some(SagaState::Compensated));
        assert_eq!(writes.args_of("cancel"), json!({ "orderId": "O-1" }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_last_step_whose_answer_was_lost_is_settled_forward_and_the_saga_completes() {
        let writes = Writes::default().with(|w| &w.lost, "record", 1);
        let run = run_saga(&place_order(), &writes).await;
        assert_eq!(run.result, Ok(json!({ "orderId": "O-1" })));
        assert_eq!(
            run.saga.as_ref().map(|s| s.state),
            Some(SagaState::Completed)
        );
        assert_eq!(writes.tools(), ["create", "reserve", "record", "record"]);
        assert_eq!(
            writes.effects(),
            ["create", "reserve", "record"],
            "applied once"
        );
        let event = source(&run, "event");
        assert_eq!(event.outcome, SourceOutcome::Ok);
        assert_eq!(
            event.settled,
            Some(Settled {
                replays: 1,
                outcome: Settlement::TookEffect
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_that_took_effect_is_found_by_a_replay_and_undone() {
        // The reservation is made, its answer lost; the saga fails on it. Undoing only what
        // answered would leave the stock reserved.
        let writes =
            Writes::default()
                .with(|w| &w.silent, "reserve", 1)
                .with(|w| &w.failures, "record", 0);
        let mut w = place_order();
        // No retry in the fake: the lost answer fails the critical step at once.
        w.steps.iter_mut().for_each(|s| s.critical = true);
        let run = run_saga(&w, &writes).await;
        assert!(matches!(run.result, Err(Failure::Critical(ref f)) if f.step == "stock"));
        assert_eq!(
            run.saga.as_ref().map(|s| s.state),
            Some(SagaState::Compensated)
        );
        assert_eq!(
            writes.tools(),
            ["create", "reserve", "reserve", "release", "cancel"]
        );
        let stock = source(&run, "stock");
        assert_eq!(stock.outcome, SourceOutcome::Failed);
        assert_eq!(
            stock.settled.as_ref().map(|s| s.outcome),
            Some(Settlement::TookEffect)
        );
        assert_eq!(
            stock.compensation.as_ref().map(|c| c.outcome),
            Some("compensated")
        );
        assert_eq!(writes.args_of("release"), json!({ "reservationId": "R-1" }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_whose_outcome_stays_unknown_needs_a_person() {
        let writes = Writes::default().with(|w| &w.silent, "reserve", usize::MAX);
        let run = run_saga(&place_order(), &writes).await;
        assert_eq!(
            run.saga.as_ref().map(|s| s.state),
            Some(SagaState::CompensationFailed)
        );
        let stock = source(&run, "stock");
        assert_eq!(
            stock.settled,
            Some(Settled {
                replays: SETTLE_REPLAYS,
                outcome: Settlement::Unknown
            })
        );
        let c = stock.compensation.clone().expect("reported");
        assert_eq!(c.outcome, "failed");
        assert!(
            c.error.as_deref().is_some_and(|e| e.contains("unknown")),
            "{c:?}"
        );
        // The order, which did answer, is still undone.
        assert_eq!(
            source(&run, "order")
                .compensation
                .as_ref()
                .map(|c| c.outcome),
            Some("compensated")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_is_not_safe_to_repeat_is_never_replayed() {
        let writes = Writes::default().with(|w| &w.silent, "reserve", 1);
        writes
            .unsafe_tools
            .lock()
            .expect("lock")
            .insert("reserve".into());
        let run = run_saga(&place_order(), &writes).await;
        assert_eq!(writes.tools(), ["create", "reserve", "cancel"]);
        assert_eq!(
            source(&run, "stock").settled,
            Some(Settled {
                replays: 0,
                outcome: Settlement::Unknown
            })
        );
        assert_eq!(
            run.saga.map(|s| s.state),
            Some(SagaState::CompensationFailed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_taken_at_its_word() {
        // `invalid` says the write did not happen: nothing to settle, nothing of it to undo.
        struct Refuses(Writes);
        impl StepRunner for Refuses {
            fn call<'a>(
                &'a self,
                step: &'a Step,
                args: JsonObject,
                cx: &'a CallContext,
            ) -> Pin<Box<dyn Future<Output = StepCall> + Send + 'a>> {
                if step.tool == "reserve" {
                    self.0
                        .calls
                        .lock()
                        .expect("lock")
                        .push((step.tool.clone(), Value::Object(args)));
                    let refusal = kit::ToolError::conflict("out of stock").to_call_tool_result();
                    return Box::pin(async move {
                        StepCall {
                            outcome: Ok(refusal),
                            cached: false,
                            reach: Reach::Answered,
                        }
                    });
                }
                self.0.call(step, args, cx)
            }
        }
        let refuses = Refuses(Writes::default());
        let run = execute(
            &place_order(),
            &json!({}),
            &refuses,
            &CallContext::default(),
            &|_, _| {},
        )
        .await;
        assert_eq!(refuses.0.tools(), ["create", "reserve", "cancel"]);
        assert!(source(&run, "stock").settled.is_none());
        assert_eq!(run.saga.map(|s| s.state), Some(SagaState::Compensated));
    }

    #[tokio::test(start_paused = true)]
    async fn a_saga_whose_last_step_lands_after_the_deadline_is_whole_not_undone() {
        let w = compile(json!({
            "description": "an order, then a slow last write without an undo",
            "deadlineMs": 20,
            "steps": {
                "order": {
                    "call": "sql.create", "critical": true,
                    "compensate": { "call": "sql.cancel", "args": { "orderId": "${order.orderId}" } }
                },
                "event": { "call": "cosmos.slow_write", "critical": true, "args": { "o": "${order.orderId}" } }
            },
            "output": { "orderId": "${order.orderId}" }
        }));
        let writes = Writes::default();
        let run = run_saga(&w, &writes).await;
        assert_eq!(run.result, Ok(json!({ "orderId": "O-1" })));
        assert_eq!(writes.tools(), ["create", "slow_write"], "nothing undone");
        assert_eq!(run.saga.map(|s| s.state), Some(SagaState::Completed));
    }

    #[tokio::test]
    async fn a_resumed_saga_runs_only_the_steps_that_had_not_finished() {
        let writes = Writes::default();
        let recorded = [("order".to_owned(), json!({ "orderId": "O-7" }))];
        let run = resume(
            &place_order(),
            &json!({}),
            "saga-0000000000000007",
            &recorded,
            &writes,
            &CallContext::default(),
            None,
        )
        .await;
        assert_eq!(run.result, Ok(json!({ "orderId": "O-7" })));
        assert_eq!(
            writes.tools(),
            ["reserve", "record"],
            "the order is not placed again"
        );
        assert_eq!(writes.args_of("reserve"), json!({ "orderId": "O-7" }));
        let saga = run.saga.expect("a saga report");
        assert_eq!(
            (saga.id.as_str(), saga.state),
            ("saga-0000000000000007", SagaState::Completed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_settles_the_steps_it_had_sent_before_undoing() {
        // The process died with the reservation sent and nothing written down about it.
        let writes = Writes::default();
        let recorded = Recorded {
            succeeded: vec![("order".into(), json!({ "orderId": "O-9" }))],
            in_doubt: vec![(
                "stock".into(),
                json!({ "orderId": "O-9" })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            )],
            compensating: false,
        };
        let (state, reports) = compensate_recorded(
            &place_order(),
            &json!({}),
            "saga-9",
            &recorded,
            &writes,
            &CallContext::default(),
            None,
        )
        .await;
        assert_eq!(state, SagaState::Compensated);
        assert_eq!(writes.tools(), ["reserve", "release", "cancel"]);
        assert_eq!(writes.args_of("cancel")["orderId"], "O-9");
        assert_eq!(reports.len(), 2, "{reports:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_finishes_a_saga_whose_last_step_took_effect() {
        let writes = Writes::default();
        let recorded = Recorded {
            succeeded: vec![
                ("order".into(), json!({ "orderId": "O-9" })),
                ("stock".into(), json!({ "reservationId": "R-9" })),
            ],
            in_doubt: vec![("event".into(), JsonObject::new())],
            compensating: false,
        };
        let (state, reports) = compensate_recorded(
            &place_order(),
            &json!({}),
            "saga-9",
            &recorded,
            &writes,
            &CallContext::default(),
            None,
        )
        .await;
        assert_eq!(state, SagaState::Completed);
        assert_eq!(writes.tools(), ["record"], "nothing undone");
        assert!(reports.is_empty());
    }

    #[test]
    fn compensate_is_checked_at_load() {
        let servers: BTreeSet<String> = ["sql".to_owned()].into();
        let check = |step: Value| {
            let config: CompositeConfig = serde_json::from_value(json!({
                "description": "d",
                "steps": { "list": { "call": "sql.list" }, "s": step },
                "output": {}
            }))
            .expect("config");
            Workflow::compile("demo", &config, &servers)
                .expect_err("refused")
                .to_string()
        };
        let e = check(
            json!({ "call": "sql.w", "compensate": { "call": "sql.u", "args": { "x": "${nope.id}" } } }),
        );
        assert!(
            e.contains("orchestrator.composites.demo.steps.s.compensate.args.x"),
            "{e}"
        );
        let e = check(json!({ "call": "sql.w", "compensate": { "call": "ghost.u" } }));
        assert!(
            e.contains("steps.s.compensate.call") && e.contains("ghost"),
            "{e}"
        );
        let e = check(
            json!({ "call": "sql.w", "forEach": "${list.items}", "compensate": { "call": "sql.u" } }),
        );
        assert!(
            e.contains("steps.s.compensate") && e.contains("forEach"),
            "{e}"
        );
    }
}
