//! Sagas: composites whose steps write, and declare how each write is undone. When a critical
//! step fails, what already took effect is undone, last first ([`compensate`]); a process that
//! dies mid-saga leaves a journal ([`SagaJournal`]) from which a restart undoes it, or finishes
//! it when the composite says `recovery: "forward"` ([`super::executor::resume`]).
//!
//! A failed write is not always a write that did not happen: an answer can be lost after the
//! server applied it (a timeout, a dropped connection, or an error written after the fact, as
//! the servers' `--failure-after-rate` does). Before a saga decides what to undo, a step whose
//! outcome is in doubt is **settled** ([`settle`]): it is sent again with the same arguments,
//! so the same idempotency key, and a server that already applied it answers with the first
//! result instead of applying it twice.

use std::{future::Future, pin::Pin, time::Duration};

use rmcp::model::JsonObject;
use serde::Serialize;
use serde_json::Value;

use super::{
    definition::{Step, Workflow},
    step::{
        Compensation, Settled, Settlement, Source, SourceOutcome, StepRunner, StepState,
        render_calls, run_step,
    },
};
use crate::{context::CallContext, error::Fault, policy::Reach, template::Scope};

/// How a saga (a composite whose steps declare `compensate`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Every step succeeded.
    Completed,
    /// A critical step failed and every step that had succeeded was undone.
    Compensated,
    /// A critical step failed and at least one undo failed after every attempt: the systems may
    /// disagree, and a person needs to look.
    CompensationFailed,
}

impl SagaState {
    /// The same name as the serialized form, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::CompensationFailed => "compensation_failed",
        }
    }
}

/// A saga's id and how it ended, reported as `_meta.saga`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaReport {
    /// Unique per run; `${saga.id}` in step arguments, so idempotency keys derived from it make a
    /// retried step or undo apply once.
    pub id: String,
    /// How it ended.
    pub state: SagaState,
}

/// Replays of a step whose outcome is in doubt before it is taken as not applied (or unknown).
pub const SETTLE_REPLAYS: u32 = 3;

/// Whether a failed call may have taken effect anyway.
pub(super) fn in_doubt(fault: &Fault, reach: Reach) -> bool {
    match reach {
        Reach::NotSent => false,
        Reach::Silent => true,
        // A server that refuses (invalid, not found, conflict, throttled) did not apply the
        // call; one that says it is unavailable or failed may have, before the answer was lost.
        Reach::Answered => matches!(
            fault.kind,
            kit::ErrorKind::Unavailable | kit::ErrorKind::Internal
        ),
    }
}

/// Settles a step whose call failed in doubt (`first` says how its last attempt ended): sends
/// the same call again, up to [`SETTLE_REPLAYS`] times with backoff, until the server answers
/// it. A result means the write is there; a refusal means it is not. When the replays are used
/// up, an answered `unavailable` is taken at its word (a server that applied a keyed write
/// answers its repeat with the stored result), and a call that never got an answer stays
/// unknown. A call that is not safe to repeat (no idempotency key, not idempotent) is not
/// replayed: an answer is taken at its word, silence is unknown.
pub(super) async fn settle(
    index: usize,
    step: &Step,
    args: &JsonObject,
    first: Reach,
    runner: &dyn StepRunner,
    cx: &CallContext,
) -> (Option<Value>, Settled) {
    use backon::BackoffBuilder;
    let at_word = |last: Reach, replays| Settled {
        replays,
        outcome: if last == Reach::Silent {
            Settlement::Unknown
        } else {
            Settlement::DidNotTakeEffect
        },
    };
    if !runner.replay_safe(step, args) {
        return (None, at_word(first, 0));
    }
    let delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(SETTLE_REPLAYS as usize)
        .with_jitter()
        .build();
    let mut last = first;
    let mut replays = 0;
    for delay in delays {
        tokio::time::sleep(delay).await;
        replays += 1;
        let done = run_step(index, step, vec![args.clone()], false, runner, cx).await;
        match done.value {
            Ok(v) => {
                tracing::info!(step = %step.name, replays, "a step in doubt took effect");
                let settled = Settled {
                    replays,
                    outcome: Settlement::TookEffect,
                };
                return (Some(v), settled);
            }
            Err(fault) if done.reach == Reach::NotSent => {
                tracing::debug!(step = %step.name, error = %fault.message, "replay not sent");
            }
            Err(fault) if !in_doubt(&fault, done.reach) => {
                let settled = Settled {
                    replays,
                    outcome: Settlement::DidNotTakeEffect,
                };
                return (None, settled);
            }
            Err(_) => last = done.reach,
        }
    }
    let settled = at_word(last, replays);
    tracing::info!(step = %step.name, replays, outcome = ?settled.outcome, "a step in doubt settled");
    (None, settled)
}

/// Attempts at one undo before it is reported failed.
pub const COMPENSATION_ATTEMPTS: u32 = 5;

/// A journal write in flight.
pub type JournalWrite<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where a saga writes down how far it got, each entry before the run goes on, so that a
/// process that dies mid-saga leaves enough behind to undo it after a restart
/// ([`compensate_recorded`]). The executor owns no I/O: the orchestrator's is a SQLite file.
pub trait SagaJournal: Send + Sync {
    /// The saga started with `input`.
    fn started<'a>(
        &'a self,
        saga: &'a str,
        composite: &'a str,
        input: &'a Value,
    ) -> JournalWrite<'a>;
    /// `step` is about to be sent with `args`: until it is written down as succeeded or not
    /// taken, a restart treats its outcome as unknown and settles it with these arguments.
    fn launched<'a>(
        &'a self,
        saga: &'a str,
        step: &'a str,
        args: &'a JsonObject,
    ) -> JournalWrite<'a>;
    /// `step` failed without taking effect: nothing of it to undo.
    fn not_taken<'a>(&'a self, saga: &'a str, step: &'a str) -> JournalWrite<'a>;
    /// `step` answered `value`: it is one to undo if the saga fails.
    fn succeeded<'a>(&'a self, saga: &'a str, step: &'a str, value: &'a Value) -> JournalWrite<'a>;
    /// A critical step failed (or the deadline passed): the saga is undoing what succeeded.
    fn compensating<'a>(&'a self, saga: &'a str, failed_step: &'a str) -> JournalWrite<'a>;
    /// How one undo went.
    fn undone<'a>(
        &'a self,
        saga: &'a str,
        step: &'a str,
        report: &'a Compensation,
    ) -> JournalWrite<'a>;
    /// The saga ended.
    fn ended<'a>(&'a self, saga: &'a str, state: SagaState) -> JournalWrite<'a>;
}

/// What a failed saga does before it answers: settles every step that failed in doubt and has
/// an undo (one that took effect is undone with the others), then undoes the steps that took
/// effect, last first ([`compensate`]). Returns how the saga ended: `compensation_failed` when
/// an undo failed or a step's outcome stays unknown.
#[allow(clippy::too_many_arguments)]
pub(super) async fn unwind(
    workflow: &Workflow,
    input: &Value,
    saga: &Value,
    states: &mut [StepState],
    succeeded: &mut Vec<usize>,
    runner: &dyn StepRunner,
    cx: &CallContext,
    journal: Option<&dyn SagaJournal>,
) -> SagaState {
    // An agent that cancels its call cancels the steps, and so may be why the saga failed; it
    // must not cancel the settling and the undos, or the writes that landed would stay.
    let undo_cx = CallContext {
        ct: tokio_util::sync::CancellationToken::new(),
        ..cx.clone()
    };
    let cx = &undo_cx;
    let id = saga["id"].as_str().unwrap_or_default();
    for i in 0..states.len() {
        let step = &workflow.steps[i];
        let settled = states[i]
            .source
            .as_ref()
            .is_some_and(|s| s.settled.is_some());
        if step.compensate.is_none() || settled {
            continue;
        }
        let (Some((fault, reach)), Some(args)) = (&states[i].failure, &states[i].args) else {
            continue;
        };
        if !in_doubt(fault, *reach) {
            continue;
        }
        let (value, settled) = settle(i, step, &args.clone(), *reach, runner, cx).await;
        note_settlement(workflow, id, i, states, succeeded, value, settled, journal).await;
    }
    compensate(
        workflow, input, saga, states, succeeded, runner, cx, journal,
    )
    .await
}

/// Writes down what settling step `i` found: a step that took effect joins `succeeded` (to be
/// undone); one whose outcome stays unknown gets a failed compensation, since nobody can say
/// whether there is something to undo.
#[allow(clippy::too_many_arguments)]
pub(super) async fn note_settlement(
    workflow: &Workflow,
    saga_id: &str,
    i: usize,
    states: &mut [StepState],
    succeeded: &mut Vec<usize>,
    value: Option<Value>,
    settled: Settled,
    journal: Option<&dyn SagaJournal>,
) {
    let step = &workflow.steps[i];
    match (value, settled.outcome) {
        (Some(v), _) => {
            if let Some(j) = journal {
                j.succeeded(saga_id, &step.name, &v).await;
            }
            states[i].value = Some(v);
            succeeded.push(i);
        }
        (None, Settlement::DidNotTakeEffect) => {
            if let Some(j) = journal {
                j.not_taken(saga_id, &step.name).await;
            }
        }
        (None, _) => {
            let report = unknown_outcome(step, settled.replays);
            if let Some(j) = journal {
                j.undone(saga_id, &step.name, &report).await;
            }
            if let Some(source) = states[i].source.as_mut() {
                source.compensation = Some(report);
            }
        }
    }
    if let Some(source) = states[i].source.as_mut() {
        source.settled = Some(settled);
    }
}

/// The failed compensation of a step that may or may not have taken effect.
pub(super) fn unknown_outcome(step: &Step, replays: u32) -> Compensation {
    Compensation {
        call: step
            .compensate
            .as_ref()
            .map(|u| format!("{}.{}", u.server, u.tool))
            .unwrap_or_else(|| "none".into()),
        outcome: "failed",
        attempts: 0,
        error: Some(format!(
            "the outcome of {}.{} is unknown after {replays} replays: it may have taken effect",
            step.server, step.tool
        )),
    }
}

/// Undoes the steps in `succeeded` that declare `compensate`, last first, each retried with
/// backoff up to [`COMPENSATION_ATTEMPTS`] times (undos must be idempotent: an attempt whose
/// answer was lost may have applied). Writes each outcome into the step's source line.
#[allow(clippy::too_many_arguments)]
async fn compensate(
    workflow: &Workflow,
    input: &Value,
    saga: &Value,
    states: &mut [StepState],
    succeeded: &[usize],
    runner: &dyn StepRunner,
    cx: &CallContext,
    journal: Option<&dyn SagaJournal>,
) -> SagaState {
    for &i in succeeded.iter().rev() {
        let Some(undo) = &workflow.steps[i].compensate else {
            continue;
        };
        let rendered = {
            let mut scope = Scope::new().with("input", input).with("saga", saga);
            for (state, step) in states.iter().zip(&workflow.steps) {
                if let Some(v) = &state.value {
                    scope.insert(&step.name, v);
                }
            }
            render_calls(undo, &scope)
        };
        let report = match rendered {
            Ok(calls) => undo_with_retries(i, undo, calls, runner, cx).await,
            Err(e) => Compensation {
                call: format!("{}.{}", undo.server, undo.tool),
                outcome: "failed",
                attempts: 0,
                error: Some(e.to_string()),
            },
        };
        let id = saga["id"].as_str().unwrap_or_default();
        tracing::info!(
            composite = %workflow.name,
            saga = %id,
            step = %workflow.steps[i].name,
            outcome = report.outcome,
            attempts = report.attempts,
            "saga step compensation"
        );
        if let Some(j) = journal {
            j.undone(id, &workflow.steps[i].name, &report).await;
        }
        if let Some(source) = states[i].source.as_mut() {
            source.compensation = Some(report);
        }
    }
    let failed = states.iter().any(|s| {
        s.source
            .as_ref()
            .and_then(|s| s.compensation.as_ref())
            .is_some_and(|c| c.outcome == "failed")
    });
    if failed {
        SagaState::CompensationFailed
    } else {
        SagaState::Compensated
    }
}

/// What the journal of a saga left unfinished by a crash says.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Steps written down as answered, with their values, in the order they answered.
    pub succeeded: Vec<(String, Value)>,
    /// Steps sent (with their arguments) whose outcome was never written down.
    pub in_doubt: Vec<(String, JsonObject)>,
    /// Whether the saga had already failed and was undoing its steps.
    pub compensating: bool,
}

/// Ends a saga found unfinished in its journal after a restart, by undoing it. Steps whose
/// outcome was never written down are settled first; the one that has no undo (it runs last)
/// is finished instead when everything before it succeeded, which completes the saga. Returns
/// how it ended and each undo's report; a step the workflow no longer has cannot be undone and
/// makes it `compensation_failed`.
pub async fn compensate_recorded(
    workflow: &Workflow,
    input: &Value,
    saga_id: &str,
    recorded: &Recorded,
    runner: &dyn StepRunner,
    cx: &CallContext,
    journal: Option<&dyn SagaJournal>,
) -> (SagaState, Vec<(String, Compensation)>) {
    let mut states: Vec<StepState> = workflow
        .steps
        .iter()
        .map(|_| StepState::default())
        .collect();
    let mut order = Vec::new();
    let mut missing = Vec::new();
    let index_of = |name: &str| workflow.steps.iter().position(|s| s.name == name);
    for (name, value) in &recorded.succeeded {
        match index_of(name) {
            Some(i) => {
                states[i].value = Some(value.clone());
                states[i].source = Some(recorded_source(&workflow.steps[i]));
                order.push(i);
            }
            None => missing.push(name.clone()),
        }
    }
    let saga = serde_json::json!({ "id": saga_id });
    let cx = CallContext {
        ct: tokio_util::sync::CancellationToken::new(),
        ..cx.clone()
    };
    for (name, args) in &recorded.in_doubt {
        let Some(i) = index_of(name) else {
            missing.push(name.clone());
            continue;
        };
        let step = &workflow.steps[i];
        states[i].args = Some(args.clone());
        states[i].failure = Some((
            Fault::unavailable("cut off by a restart of the orchestrator"),
            Reach::Silent,
        ));
        states[i].source = Some(recorded_source(step));
        if step.compensate.is_some() {
            continue;
        }
        // No undo: the only way to agree is to make sure it happened, and it runs last, so
        // the saga is whole once it has.
        let (value, settled) = settle(i, step, args, Reach::Silent, runner, &cx).await;
        let took = value.is_some();
        note_settlement(
            workflow,
            saga_id,
            i,
            &mut states,
            &mut order,
            value,
            settled,
            journal,
        )
        .await;
        let whole = states.iter().all(|s| s.value.is_some());
        if took && whole && !recorded.compensating && missing.is_empty() {
            if let Some(j) = journal {
                j.ended(saga_id, SagaState::Completed).await;
            }
            return (SagaState::Completed, Vec::new());
        }
        if took {
            // It took effect, cannot be undone, and the saga cannot finish: a person must look.
            let mut report = unknown_outcome(step, 0);
            report.error = Some(format!(
                "{}.{} took effect and has no undo, but the saga cannot finish",
                step.server, step.tool
            ));
            if let Some(source) = states[i].source.as_mut() {
                source.compensation = Some(report);
            }
        }
    }
    let mut state = unwind(
        workflow,
        input,
        &saga,
        &mut states,
        &mut order,
        runner,
        &cx,
        journal,
    )
    .await;
    let mut reports: Vec<(String, Compensation)> = states
        .into_iter()
        .filter_map(|s| {
            let source = s.source?;
            Some((source.step, source.compensation?))
        })
        .collect();
    for name in missing {
        state = SagaState::CompensationFailed;
        reports.push((
            name,
            Compensation {
                call: String::new(),
                outcome: "failed",
                attempts: 0,
                error: Some("the composite no longer has this step".into()),
            },
        ));
    }
    if let Some(j) = journal {
        j.ended(saga_id, state).await;
    }
    (state, reports)
}

/// The source line of a step known only from the journal.
fn recorded_source(step: &Step) -> Source {
    Source {
        step: step.name.clone(),
        server: step.server.clone(),
        tool: step.tool.clone(),
        outcome: SourceOutcome::Ok,
        error_kind: None,
        error: None,
        latency_ms: 0.0,
        items: None,
        failed_items: None,
        started_ms: 0.0,
        compensation: None,
        settled: None,
    }
}

/// One undo, attempted until it succeeds, fails in a way a repeat cannot fix (an `invalid`
/// fault: the arguments are wrong), or has used its attempts.
async fn undo_with_retries(
    index: usize,
    undo: &Step,
    calls: Vec<JsonObject>,
    runner: &dyn StepRunner,
    cx: &CallContext,
) -> Compensation {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(COMPENSATION_ATTEMPTS as usize - 1)
        .with_jitter()
        .build();
    let call = format!("{}.{}", undo.server, undo.tool);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let done = run_step(index, undo, calls.clone(), false, runner, cx).await;
        let fault = match done.value {
            Ok(_) => {
                return Compensation {
                    call,
                    outcome: "compensated",
                    attempts,
                    error: None,
                };
            }
            Err(fault) => fault,
        };
        let delay = (fault.kind != kit::ErrorKind::Invalid)
            .then(|| delays.next())
            .flatten();
        match delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => {
                return Compensation {
                    call,
                    outcome: "failed",
                    attempts,
                    error: Some(fault.message),
                };
            }
        }
    }
}
