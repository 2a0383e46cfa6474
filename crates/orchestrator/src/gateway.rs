//! The running orchestrator: upstreams under supervision, the catalog kept current, and the one
//! call path every routed request takes.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use rmcp::model::{CallToolResult, JsonObject};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use serde_json::Value;

use crate::{
    cache::{CacheSpec, Loaded, Lookup, ResultCache},
    catalog::Catalog,
    config::Config,
    error::CallError,
    metrics::Metrics,
    policy::CallReport,
    relay::Relay,
    upstream::{CallContext, Upstream},
    workflow::{Workflow, executor},
};

/// The orchestrator's moving parts, wired together.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    /// One per enabled server, in config order.
    upstreams: Vec<Arc<Upstream>>,
    relay: Arc<Relay>,
    /// The catalog and the change count it was built at; rebuilt on read when stale, so a
    /// reader never sees tools an upstream no longer offers.
    catalog: RwLock<(u64, Arc<Catalog>)>,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    started: chrono::DateTime<chrono::Utc>,
    cache: ResultCache,
    /// One compiled input schema per composite, in `config.workflows` order.
    input_validators: Vec<jsonschema::Validator>,
    /// Instruments recorded on the call path; also observes each upstream's policy figures.
    metrics: Arc<Metrics>,
}

/// Whether the arguments carry a non-empty `idempotencyKey`, which makes repeating a write safe.
fn carries_idempotency_key(arguments: Option<&JsonObject>) -> bool {
    arguments
        .and_then(|a| a.get("idempotencyKey"))
        .and_then(|k| k.as_str())
        .is_some_and(|k| !k.trim().is_empty())
}

impl Gateway {
    /// Starts supervising every upstream (all connect concurrently) and keeping the catalog
    /// current. Returns at once: upstreams connect in the background. Its metrics are read
    /// through [`Gateway::metrics`] only (no export).
    pub fn start(config: Config) -> Arc<Self> {
        Self::start_with_metrics(config, Arc::new(Metrics::new()))
    }

    /// [`Gateway::start`], recording into `metrics` (which may export).
    pub fn start_with_metrics(config: Config, metrics: Arc<Metrics>) -> Arc<Self> {
        let config = Arc::new(config);
        let relay = Arc::new(Relay::default());
        let (changed, changes) = watch::channel(0u64);
        let upstreams: Vec<Arc<Upstream>> = config
            .servers
            .iter()
            .map(|spec| {
                let upstream = Upstream::new(spec.clone(), relay.clone(), changed.clone());
                Arc::new(upstream.with_secrets(config.secrets.clone()))
            })
            .collect();
        metrics.observe(&upstreams);
        let cache = ResultCache::new(config.cache.settings.clone());
        // Schemas were checked at load, so every composite has its validator, in order.
        let input_validators = config
            .workflows
            .iter()
            .filter_map(|w| jsonschema::validator_for(&w.config.input).ok())
            .collect();
        let gateway = Arc::new(Self {
            catalog: RwLock::new((0, Arc::new(Catalog::build(&config, &upstreams)))),
            config,
            upstreams,
            relay,
            changes,
            shutdown: CancellationToken::new(),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            started: chrono::Utc::now(),
            cache,
            input_validators,
            metrics,
        });
        let mut tasks = JoinSet::new();
        for upstream in &gateway.upstreams {
            tasks.spawn(upstream.clone().supervise(gateway.shutdown.clone()));
        }
        tasks.spawn(Self::keep_catalog_current(
            Arc::downgrade(&gateway),
            gateway.changes.clone(),
            changed,
            gateway.shutdown.clone(),
        ));
        if let Ok(mut slot) = gateway.tasks.try_lock() {
            *slot = tasks;
        }
        gateway
    }

    /// Rebuilds the catalog whenever an upstream changes, and tells agents when tools changed.
    async fn keep_catalog_current(
        gateway: std::sync::Weak<Self>,
        mut changes: watch::Receiver<u64>,
        // Held so the channel stays open while the gateway lives.
        _sender: watch::Sender<u64>,
        shutdown: CancellationToken,
    ) {
        let mut previous = match gateway.upgrade() {
            Some(gw) => gw.catalog(),
            None => return,
        };
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            let Some(gw) = gateway.upgrade() else { return };
            let next = gw.catalog();
            if previous.tools != next.tools {
                gw.relay.tools_changed().await;
            }
            if previous.resources != next.resources || previous.templates != next.templates {
                gw.relay.resources_changed().await;
            }
            if previous.prompts != next.prompts {
                gw.relay.prompts_changed().await;
            }
            previous = next;
        }
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        let version = *self.changes.borrow();
        {
            let cached = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            if cached.0 == version {
                return cached.1.clone();
            }
        }
        let fresh = Arc::new(Catalog::build(&self.config, &self.upstreams));
        let mut slot = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        if slot.0 < version {
            *slot = (version, fresh);
        }
        slot.1.clone()
    }

    /// The validated configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// One upstream per enabled server, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Progress, list changes and the agents that hear of them.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// When the orchestrator started.
    pub fn started(&self) -> chrono::DateTime<chrono::Utc> {
        self.started
    }

    /// Waits until every upstream has connected or failed at least once, at most `timeout`.
    /// Returns whether all of them are connected.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut changes = self.changes.clone();
        let settled = |gw: &Self| {
            gw.upstreams
                .iter()
                .all(|u| u.connected_since().is_some() || u.stats().last_error().is_some())
        };
        let _ = tokio::time::timeout(timeout, async {
            while !settled(self) {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await;
        self.upstreams.iter().all(|u| u.connected_since().is_some())
    }

    /// Routes one `tools/call` by its exposed name: an upstream tool (through the cache when
    /// configured, then the server's policy stack), a composite, or a built-in.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> Result<CallToolResult, CallError> {
        self.call_tool_with_report(name, arguments, cx).await.0
    }

    /// Like [`Gateway::call_tool`], with the attempts and retry delays an upstream call took.
    pub async fn call_tool_with_report(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> (Result<CallToolResult, CallError>, CallReport) {
        let catalog = self.catalog();
        if let Some(index) = catalog.composite(name) {
            return (
                Ok(self.run_composite(index, arguments, cx).await),
                CallReport::default(),
            );
        }
        if catalog.is_invalidate_tool(name) {
            return (
                Ok(self.invalidate(arguments.as_ref())),
                CallReport::default(),
            );
        }
        let route = match catalog.tool(name) {
            Ok(route) => route.clone(),
            Err(e) => return (Err(e), CallReport::default()),
        };
        let (mut outcome, report, cached) = self
            .call_upstream(route.server, &route.name, arguments, None, cx)
            .await;
        // Said the way a composite says it, so an agent can tell a stored answer from a fresh one.
        if cached && let Ok(result) = &mut outcome {
            result
                .meta
                .get_or_insert_with(Default::default)
                .insert("cached".into(), Value::Bool(true));
        }
        (outcome, report)
    }

    /// One upstream call by server index and the upstream's own tool name: cache (when the tool
    /// or `cache` asks for it), then the server's policy stack. Returns whether the cache
    /// answered.
    pub async fn call_upstream(
        &self,
        server: usize,
        tool: &str,
        arguments: Option<JsonObject>,
        cache: Option<&CacheSpec>,
        cx: &CallContext,
    ) -> (Result<CallToolResult, CallError>, CallReport, bool) {
        let upstream = &self.upstreams[server];
        let offer = upstream.offer();
        let definition = offer.tools.iter().find(|t| t.name == tool);
        if definition.is_none() && upstream.connected_since().is_some() {
            return (
                Err(CallError::Unknown {
                    what: "tool",
                    name: format!("{}.{tool} (the server does not list it)", upstream.name()),
                }),
                CallReport::default(),
                false,
            );
        }
        let annotations = definition.and_then(|t| t.annotations.as_ref());
        let read_only = definition.is_some_and(crate::catalog::is_read_only);
        let idempotent = annotations.and_then(|a| a.idempotent_hint).unwrap_or(false);
        let policy = upstream.policy().policy.for_tool(tool, read_only);
        let safe = read_only
            || idempotent
            || policy.retry_safe
            || carries_idempotency_key(arguments.as_ref());
        let call_name = format!("{}.{tool}", upstream.name());
        let configured = self.config.cache.tools.get(&call_name);
        // Only read-only tools are cached, unless the cache section names the tool explicitly.
        let spec = match (cache, configured) {
            (_, Some(c)) => Some(c),
            (Some(c), None) if read_only => Some(c),
            _ => None,
        };
        let args_value = Value::Object(arguments.clone().unwrap_or_default());
        // Arguments that break the tool's schema never leave: the agent learns which field is
        // wrong without a round trip, and the upstream (and its breaker) never sees them.
        if let Some((field, message)) = offer
            .validators
            .get(tool)
            .and_then(|v| kit::arguments::violation(v, &args_value))
        {
            return (
                Ok(kit::ToolError::invalid_argument(&field, &message).to_call_tool_result()),
                CallReport::default(),
                false,
            );
        }
        let started = std::time::Instant::now();
        let run = || async {
            upstream
                .policy()
                .call(tool, &policy, safe, || {
                    upstream.call_tool(tool, arguments.clone(), cx)
                })
                .await
        };
        let (outcome, report, cached) = match spec {
            Some(spec) => {
                let slot = std::sync::Mutex::new(CallReport::default());
                let mut tags = self.config.cache.tags_for(&call_name, &args_value);
                tags.push(format!("server:{}", upstream.name()));
                let key = ResultCache::key(upstream.name(), tool, arguments.as_ref());
                let ttl = self.config.cache.settings.ttl(spec);
                let (result, lookup) = self
                    .cache
                    .get_or_load(key, ttl, tags, async {
                        let (r, rep) = run().await;
                        if let Ok(mut s) = slot.lock() {
                            *s = rep;
                        }
                        r
                    })
                    .await;
                let report = slot.into_inner().unwrap_or_else(|e| e.into_inner());
                self.metrics.cache_lookup(&call_name, lookup);
                (result.map(|r| (*r).clone()), report, lookup == Lookup::Hit)
            }
            None => {
                let (r, rep) = run().await;
                (r, rep, false)
            }
        };
        // The pass-through call's span, or the composite step's.
        tracing::Span::current().record("mcp.cache.hit", cached);
        if !cached {
            let failure = match &outcome {
                Ok(r) if r.is_error == Some(true) => Some(
                    kit::ToolError::from_call_tool_result(r)
                        .map(|e| format!("{tool}: {}", e.message))
                        .unwrap_or_default(),
                ),
                Ok(_) | Err(CallError::Cancelled) => None,
                Err(e) => Some(e.to_string()),
            };
            let elapsed = started.elapsed();
            upstream.stats().record(elapsed, failure.as_deref());
            self.metrics
                .upstream_call(upstream.name(), tool, elapsed, &outcome);
        }
        if outcome.as_ref().is_ok_and(|r| r.is_error != Some(true)) {
            let stale = self.config.cache.invalidations_for(&call_name, &args_value);
            if !stale.is_empty() {
                let n = self.cache.invalidate_tags(&stale);
                tracing::info!(call = %call_name, tags = ?stale, entries = n, "cache invalidated by a write");
            }
        }
        (outcome, report, cached)
    }

    /// Runs composite `index`: validates the input, then the plan, within its deadline;
    /// the whole result is cached when the composite asks for it.
    async fn run_composite(
        &self,
        index: usize,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> CallToolResult {
        let workflow = &self.config.workflows[index];
        let input = Value::Object(arguments.clone().unwrap_or_default());
        if let Some((field, message)) = self
            .input_validators
            .get(index)
            .and_then(|validator| kit::arguments::violation(validator, &input))
        {
            return kit::ToolError::invalid_argument(&field, &message).to_call_tool_result();
        }
        let Some(spec) = &workflow.config.cache else {
            return self.execute_composite(workflow, &input, cx, self).await.0;
        };
        let key = ResultCache::key("composite", &workflow.name, arguments.as_ref());
        let ttl = self.config.cache.settings.ttl(spec);
        // The entry carries the tags of every call its steps made, rendered with the arguments
        // each was called with (`customer:CUST-0001`), so a write invalidating any of them drops it.
        let tags_of = |step: &crate::workflow::definition::Step, args: &JsonObject| {
            self.config.cache.tags_for(
                &format!("{}.{}", step.server, step.tool),
                &Value::Object(args.clone()),
            )
        };
        let (result, lookup) = self
            .cache
            .get_or_load_with(key, ttl, async {
                let collector = executor::TagCollector::new(self, &tags_of);
                let (result, complete) = self
                    .execute_composite(workflow, &input, cx, &collector)
                    .await;
                let mut tags = collector.into_tags();
                tags.push(format!("composite:{}", workflow.name));
                // A degraded answer (a fallback, a failed or skipped step) reaches the caller but
                // is not kept: it would be served for the whole TTL after the source is back.
                // Nor is the answer of a plan with a write in it: a hit would skip the write.
                let read_only = self.catalog().is_read_only(&workflow.name);
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
    async fn execute_composite(
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
        let step_cx = CallContext {
            progress: None,
            ..cx.clone()
        };
        // The executor keeps the deadline, so a run cut off by it still reports its sources.
        let run = executor::execute(workflow, input, runner, &step_cx, &on_progress).await;
        drop(on_progress);
        if let Some(f) = forwarder {
            let _ = f.await;
        }
        let elapsed = started.elapsed();
        let elapsed_ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0;
        let outcome = match &run.result {
            Ok(_) => "ok",
            Err(executor::Failure::Deadline { .. }) => "deadline",
            Err(executor::Failure::Critical(_)) => "failed",
        };
        self.metrics
            .composite_run(&workflow.name, elapsed, outcome, &run.sources);
        let complete = run.is_complete();
        let sources = serde_json::to_value(&run.sources).unwrap_or_default();
        let result = match run.result {
            Ok(output) => {
                let mut result = CallToolResult::structured(output);
                let mut meta = rmcp::model::MetaObject::new();
                meta.insert("composite".into(), Value::from(workflow.name.clone()));
                meta.insert("sources".into(), sources);
                meta.insert("elapsedMs".into(), Value::from(elapsed_ms));
                result.meta = Some(meta);
                result
            }
            Err(executor::Failure::Deadline { deadline }) => kit::ToolError::unavailable(format!(
                "composite `{}` ran past its deadline of {} ms",
                workflow.name,
                deadline.as_millis()
            ))
            .with_meta("reason", "deadline".into())
            .with_meta("sources", sources)
            .with_meta("elapsedMs", Value::from(elapsed_ms))
            .to_call_tool_result(),
            Err(executor::Failure::Critical(failure)) => {
                let kind =
                    kit::ErrorKind::parse(&failure.kind).unwrap_or(match failure.kind.as_str() {
                        "bulkhead_full" => kit::ErrorKind::Throttled,
                        "unknown" => kit::ErrorKind::Invalid,
                        _ => kit::ErrorKind::Unavailable,
                    });
                kit::ToolError::new(
                    kind,
                    format!(
                        "composite `{}` failed: critical step `{}` ({}) failed: {}",
                        workflow.name, failure.step, failure.call, failure.message
                    ),
                )
                .with_meta("failedStep", Value::from(failure.step))
                .with_meta("sources", sources)
                .with_meta("elapsedMs", Value::from(elapsed_ms))
                .to_call_tool_result()
            }
        };
        (result, complete)
    }

    /// The built-in `invalidate_cache` tool: by tags, by server and tool, or everything.
    fn invalidate(&self, arguments: Option<&JsonObject>) -> CallToolResult {
        let args = arguments.cloned().unwrap_or_default();
        let tags: Vec<String> = args
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let server = args.get("server").and_then(Value::as_str);
        let tool = args.get("tool").and_then(Value::as_str);
        let all = args.get("all").and_then(Value::as_bool).unwrap_or(false);
        let what = if all {
            self.cache.invalidate_all();
            "all entries".to_owned()
        } else if let (Some(server), Some(tool)) = (server, tool) {
            self.cache.invalidate_server_tool(server, tool);
            format!("entries of {server}.{tool}")
        } else if !tags.is_empty() {
            let n = self.cache.invalidate_tags(&tags);
            format!("{n} entries tagged {tags:?}")
        } else {
            return kit::ToolError::invalid_argument(
                "arguments",
                "give `tags`, `server` and `tool`, or `all: true`",
            )
            .to_call_tool_result();
        };
        tracing::info!(%what, "cache invalidated by an operator");
        CallToolResult::structured(serde_json::json!({ "invalidated": what }))
    }

    /// The result cache, for status and tests.
    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// The metrics, for `/metrics` and tests.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Closes every upstream (stdio children get SIGTERM, then SIGKILL after a grace period)
    /// and waits for the supervisors to finish.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let mut tasks = self.tasks.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

impl executor::StepRunner for Gateway {
    fn call<'a>(
        &'a self,
        step: &'a crate::workflow::definition::Step,
        args: JsonObject,
        cx: &'a CallContext,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = executor::StepCall> + Send + 'a>> {
        Box::pin(async move {
            let Some(server) = self.upstreams.iter().position(|u| u.name() == step.server) else {
                return executor::StepCall {
                    outcome: Err(CallError::NotConnected {
                        server: step.server.clone(),
                        last_error: None,
                    }),
                    cached: false,
                };
            };
            let (outcome, _, cached) = self
                .call_upstream(server, &step.tool, Some(args), step.cache.as_ref(), cx)
                .await;
            executor::StepCall { outcome, cached }
        })
    }
}
