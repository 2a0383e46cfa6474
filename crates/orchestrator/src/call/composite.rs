//! Composite tools as agents call them: the input checked against the composite's schema, the
//! plan run by the executor with [`UpstreamCalls`] making every step's call (so a step takes the
//! same way down as a pass-through call), the whole answer cached when the composite asks for
//! it, and the run's outcome turned into one tool result.

use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::Value;

use super::upstream::UpstreamCalls;
use crate::{
    cache::{Loaded, Lookup, ResultCache},
    config::Config,
    context::CallContext,
    error::CallError,
    metrics::Metrics,
    saga_log::SagaLog,
    workflow::{Workflow, definition::Step, executor},
};

/// The configured composites and what running them needs.
#[derive(Debug)]
pub struct Composites {
    config: Arc<Config>,
    /// One compiled input schema per composite, in `config.workflows` order.
    validators: Vec<jsonschema::Validator>,
    calls: Arc<UpstreamCalls>,
    metrics: Arc<Metrics>,
    /// The saga log, opened by the first saga that runs (a config without sagas never creates
    /// the file).
    saga_log: std::sync::OnceLock<Option<Arc<SagaLog>>>,
}

impl Composites {
    /// The composites of `config`, whose steps call down through `calls`.
    pub fn new(config: Arc<Config>, calls: Arc<UpstreamCalls>, metrics: Arc<Metrics>) -> Self {
        // Schemas were checked at load, so every composite has its validator, in order.
        let validators = config
            .workflows
            .iter()
            .filter_map(|w| jsonschema::validator_for(&w.config.input).ok())
            .collect();
        Self {
            config,
            validators,
            calls,
            metrics,
            saga_log: std::sync::OnceLock::new(),
        }
    }

    /// Runs composite `index`: validates the input, then the plan, within its deadline; the
    /// whole result is cached when the composite asks for it and `read_only` (every step's tool
    /// is annotated read-only: a hit would skip a write).
    pub async fn run(
        &self,
        index: usize,
        arguments: Option<JsonObject>,
        read_only: bool,
        cx: &CallContext,
    ) -> CallToolResult {
        let workflow = &self.config.workflows[index];
        let input = Value::Object(arguments.clone().unwrap_or_default());
        if let Some((field, message)) = self
            .validators
            .get(index)
            .and_then(|validator| kit::arguments::violation(validator, &input))
        {
            return kit::ToolError::invalid_argument(&field, &message).to_call_tool_result();
        }
        let Some(spec) = &workflow.config.cache else {
            return self.execute(workflow, &input, cx, &*self.calls).await.0;
        };
        let cache = self.calls.cache();
        let key = ResultCache::key("composite", &workflow.name, arguments.as_ref());
        let ttl = self.config.cache.settings.ttl(spec);
        // The entry carries the tags of every call its steps made, rendered with the arguments
        // each was called with (`customer:CUST-0001`), so a write invalidating any of them drops it.
        let tags_of = |step: &Step, args: &JsonObject| {
            self.config.cache.tags_for(
                &format!("{}.{}", step.server, step.tool),
                &Value::Object(args.clone()),
            )
        };
        let (result, lookup) = cache
            .get_or_load_with(key, ttl, async {
                let collector = executor::TagCollector::new(&*self.calls, &tags_of);
                let (result, complete) = self.execute(workflow, &input, cx, &collector).await;
                let mut tags = collector.into_tags();
                tags.push(format!("composite:{}", workflow.name));
                // A degraded answer (a fallback, a failed or skipped step) reaches the caller but
                // is not kept: it would be served for the whole TTL after the source is back.
                // Nor is the answer of a plan with a write in it: a hit would skip the write.
                if !read_only {
                    tracing::warn!(
                        composite = %workflow.name,
                        "composite has `cache` but calls a tool not annotated read-only; not cached"
                    );
                }
                Ok::<_, CallError>(Loaded {
                    result,
                    tags,
                    store: complete && read_only,
                })
            })
            .await;
        self.metrics.cache_lookup(&workflow.name, lookup);
        match result {
            Ok(r) => {
                let mut r = (*r).clone();
                if lookup == Lookup::Hit
                    && let Some(meta) = r.meta.as_mut()
                {
                    meta.insert("cached".into(), Value::Bool(true));
                }
                r
            }
            Err(e) => kit::ToolError::internal(e.to_string()).to_call_tool_result(),
        }
    }

    /// Runs the plan with `runner` making the step calls; returns the result and whether it is
    /// whole (every step answered, none fell back, failed or was skipped).
    async fn execute(
        &self,
        workflow: &Workflow,
        input: &Value,
        cx: &CallContext,
        runner: &dyn executor::StepRunner,
    ) -> (CallToolResult, bool) {
        let started = std::time::Instant::now();
        // Progress goes out in order through one task; the executor only enqueues.
        let (progress_tx, mut progress_rx) =
            tokio::sync::mpsc::unbounded_channel::<(usize, usize)>();
        let forwarder = cx.progress.clone().map(|(agent, token)| {
            tokio::spawn(async move {
                while let Some((done, total)) = progress_rx.recv().await {
                    let _ = agent
                        .notify_progress(
                            rmcp::model::ProgressNotificationParam::new(token.clone(), done as f64)
                                .with_total(total as f64)
                                .with_message(format!("{done} of {total} steps done")),
                        )
                        .await;
                }
            })
        });
        let on_progress = move |done: usize, total: usize| {
            let _ = progress_tx.send((done, total));
        };
        // Steps report to the composite, which reports steps done to the agent: an upstream's own
        // progress would mix two scales under one token.
        // A step's questions are answered by the composite's agent, whichever era it speaks; an
        // agent resumes the composite, never a step.
        let step_cx = CallContext {
            progress: None,
            hands_on_input: false,
            resume: None,
            ..cx.clone()
        };
        // The executor keeps the deadline, so a run cut off by it still reports its sources.
        let log = if workflow.is_saga() {
            self.saga_log()
        } else {
            None
        };
        let journal = log.as_ref().map(|l| l as &dyn executor::SagaJournal);
        let run =
            executor::execute_journaled(workflow, input, runner, &step_cx, &on_progress, journal)
                .await;
        drop(on_progress);
        if let Some(f) = forwarder {
            let _ = f.await;
        }
        let elapsed = started.elapsed();
        let outcome = match &run.result {
            Ok(_) => "ok",
            Err(executor::Failure::Deadline { .. }) => "deadline",
            Err(executor::Failure::Critical(_)) => "failed",
        };
        self.metrics
            .composite_run(&workflow.name, elapsed, outcome, &run.sources);
        if let Some(saga) = &run.saga {
            self.metrics.saga(&workflow.name, saga.state.as_str());
            let log = |state: &str| tracing::info!(composite = %workflow.name, saga = %saga.id, state, "saga ended");
            match saga.state {
                executor::SagaState::CompensationFailed => tracing::error!(
                    composite = %workflow.name,
                    saga = %saga.id,
                    "saga compensation failed: the systems may disagree; see the result's _meta.sources"
                ),
                state => log(state.as_str()),
            }
        }
        let complete = run.is_complete();
        (answer(workflow, run, elapsed), complete)
    }
}

impl Composites {
    /// The saga log, opened on first use; `None` (logged once) when it cannot be: sagas still
    /// run and undo themselves, but a crash mid-saga is not recovered.
    fn saga_log(&self) -> Option<Arc<SagaLog>> {
        self.saga_log
            .get_or_init(|| {
                let settings = &self.config.saga_log;
                let metrics = self.metrics.clone();
                let pruned = Box::new(move |n| metrics.saga_log_pruned(n));
                match SagaLog::open(&settings.path, settings.keep_ended, pruned) {
                    Ok(log) => Some(log),
                    Err(e) => {
                        tracing::error!(error = %e, "saga log unavailable: sagas are not recovered after a crash");
                        None
                    }
                }
            })
            .clone()
    }

    /// The saga log, if one was opened or exists on disk.
    pub fn existing_saga_log(&self) -> Option<Arc<SagaLog>> {
        if self.saga_log.get().is_none() && !self.config.saga_log.path.exists() {
            return None;
        }
        self.saga_log()
    }

    /// Undoes the sagas the log shows as unfinished (the process died mid-saga): each one's
    /// steps that answered are compensated, last first, as if its critical step had just
    /// failed. Returns how many were recovered. Runs once at start, once the upstreams are
    /// connected, without any agent asking; `before` is the process's start.
    pub async fn recover(&self, before: chrono::DateTime<chrono::Utc>) -> usize {
        let Some(log) = self.existing_saga_log() else {
            return 0;
        };
        let unfinished = match log.unfinished(before) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the saga log");
                return 0;
            }
        };
        let cx = CallContext::default();
        for saga in &unfinished {
            let Some(workflow) = self
                .config
                .workflows
                .iter()
                .find(|w| w.name == saga.composite)
            else {
                tracing::error!(saga = %saga.id, composite = %saga.composite, "unfinished saga of a composite no longer configured: cannot undo it");
                let journal: &dyn executor::SagaJournal = &log;
                journal
                    .ended(&saga.id, executor::SagaState::CompensationFailed)
                    .await;
                self.metrics.saga(&saga.composite, "compensation_failed");
                continue;
            };
            let recorded = &saga.recorded;
            let forward = workflow.config.recovery
                == crate::workflow::definition::Recovery::Forward
                && !recorded.compensating;
            tracing::warn!(
                saga = %saga.id,
                composite = %saga.composite,
                succeeded = recorded.succeeded.len(),
                in_doubt = recorded.in_doubt.len(),
                recovery = if forward { "forward" } else { "backward" },
                "recovering a saga left unfinished"
            );
            let state = if forward {
                let run = executor::resume(
                    workflow,
                    &saga.input,
                    &saga.id,
                    &recorded.succeeded,
                    &*self.calls,
                    &cx,
                    Some(&log),
                )
                .await;
                run.saga
                    .map_or(executor::SagaState::CompensationFailed, |s| s.state)
            } else {
                executor::compensate_recorded(
                    workflow,
                    &saga.input,
                    &saga.id,
                    recorded,
                    &*self.calls,
                    &cx,
                    Some(&log),
                )
                .await
                .0
            };
            self.metrics.saga(&workflow.name, state.as_str());
            tracing::info!(saga = %saga.id, state = state.as_str(), "saga recovered");
        }
        unfinished.len()
    }
}

/// The tool result of a finished run: the output with `_meta.sources`, or a tool error that
/// says why there is none. A critical step's failure keeps the step's fault (kind, reason,
/// retryable, retry hint, server), so it reads as the same call made directly would.
fn answer(workflow: &Workflow, run: executor::Run, elapsed: std::time::Duration) -> CallToolResult {
    let elapsed_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0;
    let sources = serde_json::to_value(&run.sources).unwrap_or_default();
    let saga = run
        .saga
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default());
    // What a failed saga did about the steps that had succeeded, for the error's message.
    let undone = match run.saga.as_ref().map(|s| s.state) {
        Some(executor::SagaState::Compensated) => {
            "; every step that had succeeded was compensated".to_owned()
        }
        Some(executor::SagaState::CompensationFailed) => {
            let failed: Vec<&str> = run
                .sources
                .iter()
                .filter(|s| {
                    s.compensation
                        .as_ref()
                        .is_some_and(|c| c.outcome == "failed")
                })
                .map(|s| s.step.as_str())
                .collect();
            format!(
                "; compensation FAILED for {}: the systems may disagree, see _meta.sources",
                failed.join(", ")
            )
        }
        _ => String::new(),
    };
    let with_saga = |e: kit::ToolError| match &saga {
        Some(s) => e.with_meta("saga", s.clone()),
        None => e,
    };
    match run.result {
        Ok(output) => {
            let mut result = CallToolResult::structured(output);
            let mut meta = rmcp::model::MetaObject::new();
            meta.insert("composite".into(), Value::from(workflow.name.clone()));
            meta.insert("sources".into(), sources);
            meta.insert("elapsedMs".into(), Value::from(elapsed_ms));
            if let Some(s) = saga {
                meta.insert("saga".into(), s);
            }
            result.meta = Some(meta);
            result
        }
        Err(executor::Failure::Deadline { deadline }) => with_saga(
            kit::ToolError::unavailable(format!(
                "composite `{}` ran past its deadline of {} ms{undone}",
                workflow.name,
                deadline.as_millis()
            ))
            .with_meta("reason", "deadline".into())
            .with_meta("sources", sources)
            .with_meta("elapsedMs", Value::from(elapsed_ms)),
        )
        .to_call_tool_result(),
        Err(executor::Failure::Critical(failure)) => with_saga(
            failure
                .fault
                .to_tool_error_saying(format!(
                    "composite `{}` failed: critical step `{}` ({}) failed: {}{undone}",
                    workflow.name, failure.step, failure.call, failure.fault.message
                ))
                .with_meta("failedStep", Value::from(failure.step))
                .with_meta("sources", sources)
                .with_meta("elapsedMs", Value::from(elapsed_ms)),
        )
        .to_call_tool_result(),
    }
}
