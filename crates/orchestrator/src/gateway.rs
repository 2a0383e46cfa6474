//! The running orchestrator's lifecycle: upstreams started under supervision, the catalog kept
//! current, and shutdown. Calls themselves take [`crate::call`].

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use rmcp::model::{CallToolResponse, CallToolResult, JsonObject};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    cache::ResultCache,
    call::{Calls, Composites, UpstreamCalls},
    catalog::Catalog,
    config::{Config, ConfigError, ServerSpec},
    context::CallContext,
    error::CallError,
    metrics::Metrics,
    policy::CallReport,
    relay::Relay,
    tasks::id::TaskIds,
    upstream::Upstream,
};

/// One configuration in force, with the upstreams and call path built from it.
///
/// A call takes the generation current when it starts and keeps it to its end, so a reload never
/// changes the config, the routes or the servers under a running call: routes index into this
/// generation's upstreams, and only this generation's catalog hands them out.
#[derive(Debug)]
pub struct Generation {
    config: Arc<Config>,
    calls: Arc<Calls>,
    /// The catalog and the change count it was built at; rebuilt on read when stale, so a
    /// reader never sees tools an upstream no longer offers.
    catalog: RwLock<(u64, Arc<Catalog>)>,
    changes: watch::Receiver<u64>,
    loaded_at: chrono::DateTime<chrono::Utc>,
}

impl Generation {
    fn new(config: Arc<Config>, calls: Calls, changes: watch::Receiver<u64>) -> Self {
        let version = *changes.borrow();
        let catalog = Arc::new(Catalog::build(&config, calls.upstream().upstreams()));
        Self {
            config,
            calls: Arc::new(calls),
            catalog: RwLock::new((version, catalog)),
            changes,
            loaded_at: chrono::Utc::now(),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The call path.
    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    /// One upstream per enabled server, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        self.calls.upstream().upstreams()
    }

    /// When this configuration came into force.
    pub fn loaded_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.loaded_at
    }

    /// The current catalog of this generation's upstreams.
    pub fn catalog(&self) -> Arc<Catalog> {
        let version = *self.changes.borrow();
        {
            let cached = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            if cached.0 == version {
                return cached.1.clone();
            }
        }
        let fresh = Arc::new(Catalog::build(&self.config, self.upstreams()));
        let mut slot = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        if slot.0 < version {
            *slot = (version, fresh);
        }
        slot.1.clone()
    }
}

/// A supervised upstream and the token that stops its supervisor alone (a reload retires one
/// server without touching the others).
#[derive(Debug)]
struct Running {
    upstream: Arc<Upstream>,
    stop: CancellationToken,
}

/// What a reload changed, by server name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadSummary {
    /// Servers that were not configured before; they are connecting.
    pub added: Vec<String>,
    /// Servers no longer configured; they drain, then stop.
    pub removed: Vec<String>,
    /// Servers whose entry changed; the old connection drains while a new one starts.
    pub restarted: Vec<String>,
    /// Servers kept as they were, connection and breaker state included.
    pub unchanged: Vec<String>,
    /// Whether the file was the one already in force (nothing was done).
    pub same_digest: bool,
}

/// The last reload that was refused, for status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadFailure {
    /// What was wrong, naming the field path (secrets redacted).
    pub message: String,
    /// When it was refused (RFC 3339).
    pub at: String,
}

/// The orchestrator's moving parts, wired together.
#[derive(Debug)]
pub struct Gateway {
    generation: RwLock<Arc<Generation>>,
    relay: Arc<Relay>,
    /// Bumped by every upstream whose listing changed, and by every reload.
    changed: watch::Sender<u64>,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// Every supervised upstream, retired ones included until they stop.
    running: std::sync::Mutex<Vec<Running>>,
    /// One reload at a time: two at once would each start the servers the other adds.
    reloading: tokio::sync::Mutex<()>,
    last_reload_error: std::sync::Mutex<Option<ReloadFailure>>,
    reloads: std::sync::atomic::AtomicU64,
    started: chrono::DateTime<chrono::Utc>,
    /// Instruments recorded on the call path; also observes each upstream's policy figures.
    metrics: Arc<Metrics>,
    /// Calls of 2026-07-28 agents held while the agent answers what they asked.
    suspensions: crate::ask::Suspensions,
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
        let suspensions = crate::ask::Suspensions::new(
            config.limits.upstream.user_input_timeout,
            config.limits.max_held_calls,
            metrics.clone(),
        );
        let relay = Arc::new(Relay::default());
        let (changed, changes) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut running = Vec::new();
        let upstreams: Vec<Arc<Upstream>> = config
            .servers
            .iter()
            .map(|spec| {
                let r = start_upstream(
                    spec.clone(),
                    &relay,
                    &changed,
                    &config.secrets,
                    &shutdown,
                    &mut tasks,
                );
                let upstream = r.upstream.clone();
                running.push(r);
                upstream
            })
            .collect();
        metrics.observe(&upstreams);
        let cache = Arc::new(Self::result_cache(&config, &metrics));
        let generation = build_generation(
            config,
            upstreams,
            cache,
            TaskIds::new(),
            &metrics,
            changes.clone(),
        );
        let gateway = Arc::new(Self {
            generation: RwLock::new(Arc::new(generation)),
            relay,
            changed,
            changes,
            shutdown,
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            running: std::sync::Mutex::new(running),
            reloading: tokio::sync::Mutex::new(()),
            last_reload_error: std::sync::Mutex::new(None),
            reloads: std::sync::atomic::AtomicU64::new(0),
            started: chrono::Utc::now(),
            metrics,
            suspensions,
        });
        tasks.spawn(Self::keep_catalog_current(
            Arc::downgrade(&gateway),
            gateway.changes.clone(),
            gateway.shutdown.clone(),
        ));
        if let Ok(mut slot) = gateway.tasks.try_lock() {
            *slot = tasks;
        }
        gateway
    }

    /// The result cache: in-process only, or in front of Redis when `orchestrator.cache.redis`
    /// is set (a Redis that cannot be set up leaves the in-process cache alone, with a warning).
    fn result_cache(config: &Config, metrics: &Metrics) -> ResultCache {
        let settings = config.cache.settings.clone();
        let Some(redis) = &config.cache.redis else {
            return ResultCache::new(settings);
        };
        let stats = Arc::new(crate::cache::shared::SharedStats::new());
        metrics.observe_shared_cache(stats.clone());
        match ResultCache::with_shared(settings.clone(), redis.clone(), stats) {
            Ok(cache) => {
                tracing::info!(redis = %redis.host, prefix = %redis.key_prefix, "result cache shared through redis");
                cache
            }
            Err(e) => {
                tracing::warn!(redis = %redis.host, error = %config.redact(&crate::cache::shared::redact_url(&redis.url, &e.to_string())), "redis cache layer not set up; caching in this instance only");
                ResultCache::new(settings)
            }
        }
    }

    /// Rebuilds the catalog whenever an upstream changes, and tells agents when tools changed.
    async fn keep_catalog_current(
        gateway: std::sync::Weak<Self>,
        mut changes: watch::Receiver<u64>,
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
            if previous.tools() != next.tools() {
                gw.relay.tools_changed().await;
            }
            if previous.resources() != next.resources() || previous.templates() != next.templates()
            {
                gw.relay.resources_changed().await;
            }
            if previous.prompts() != next.prompts() {
                gw.relay.prompts_changed().await;
            }
            previous = next;
        }
    }

    /// The configuration in force, with its upstreams, call path and catalog. A caller that
    /// routes by the catalog and then calls must use one generation for both.
    pub fn current(&self) -> Arc<Generation> {
        self.generation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.current().catalog()
    }

    /// The validated configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    /// One upstream per enabled server, in config order.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.current().upstreams().to_vec()
    }

    /// The call path.
    pub fn calls(&self) -> Arc<Calls> {
        self.current().calls.clone()
    }

    /// Calls of 2026-07-28 agents held while the agent answers what they asked.
    pub fn suspensions(&self) -> &crate::ask::Suspensions {
        &self.suspensions
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
            gw.current()
                .upstreams()
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
        self.upstreams()
            .iter()
            .all(|u| u.connected_since().is_some())
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
        let generation = self.current();
        let catalog = generation.catalog();
        match catalog.route(name) {
            Ok(route) => {
                generation
                    .calls
                    .call_tool(&catalog, route, name, arguments, cx)
                    .await
            }
            Err(e) => (Err(e), CallReport::default()),
        }
    }

    /// [`Gateway::call_tool`] for an agent's request: when the agent declared the tasks
    /// extension, an upstream tool's answer may be a task ([`crate::tasks`]).
    pub async fn call_tool_response(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> Result<CallToolResponse, CallError> {
        let generation = self.current();
        let catalog = generation.catalog();
        let route = catalog.route(name)?;
        let tasks = crate::tasks::declared_by_agent(cx);
        generation
            .calls
            .call_tool_response(&catalog, route, name, arguments, tasks, cx)
            .await
            .0
    }

    /// The result cache, for status and tests.
    pub fn cache(&self) -> Arc<ResultCache> {
        self.current().calls.upstream().cache().clone()
    }

    /// The metrics, for `/metrics` and tests.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Puts `config` in force without dropping agents. Servers whose spec is unchanged keep
    /// their connection (and breaker state); added ones start connecting; removed and changed
    /// ones are retired: new calls no longer reach them, the calls already running on them finish
    /// (up to `orchestrator.reload.drainGraceMs`), then they stop and their children are reaped.
    /// Policy, cache rules, limits and composites of the new config apply to calls that start
    /// after this returns. Agents hear `tools/list_changed` when their tool list changed.
    ///
    /// Refused, with the running configuration left in force, when a composite step names a
    /// tool that a connected, unchanged server does not list: the file parsed, but the composite
    /// would fail on every call.
    pub async fn apply(self: &Arc<Self>, config: Config) -> Result<ReloadSummary, ConfigError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.current();
        let mut summary = ReloadSummary::default();
        if !config.digest.is_empty() && config.digest == old.config.digest {
            summary.same_digest = true;
            summary.unchanged = old
                .upstreams()
                .iter()
                .map(|u| u.name().to_owned())
                .collect();
            return Ok(summary);
        }
        let kept: Vec<Option<Arc<Upstream>>> = config
            .servers
            .iter()
            .map(|spec| {
                old.upstreams()
                    .iter()
                    .find(|u| u.name() == spec.name && u.spec() == spec)
                    .cloned()
            })
            .collect();
        check_composite_tools(&config, &kept)?;
        if config.listen != old.config.listen {
            tracing::warn!(
                listen = %config.listen,
                in_force = %old.config.listen,
                "orchestrator.listen changed: the HTTP front keeps its address until a restart"
            );
        }
        let config = Arc::new(config);
        let mut fresh = Vec::new();
        let upstreams: Vec<Arc<Upstream>> = {
            let mut tasks = self.tasks.lock().await;
            config
                .servers
                .iter()
                .zip(kept)
                .map(|(spec, kept)| match kept {
                    Some(upstream) => {
                        summary.unchanged.push(spec.name.clone());
                        upstream
                    }
                    None => {
                        if old.upstreams().iter().any(|u| u.name() == spec.name) {
                            summary.restarted.push(spec.name.clone());
                        } else {
                            summary.added.push(spec.name.clone());
                        }
                        let r = start_upstream(
                            spec.clone(),
                            &self.relay,
                            &self.changed,
                            &config.secrets,
                            &self.shutdown,
                            &mut tasks,
                        );
                        let upstream = r.upstream.clone();
                        fresh.push(r);
                        upstream
                    }
                })
                .collect()
        };
        let retired: Vec<Arc<Upstream>> = old
            .upstreams()
            .iter()
            .filter(|u| !upstreams.iter().any(|n| Arc::ptr_eq(n, u)))
            .cloned()
            .collect();
        summary.removed = retired
            .iter()
            .filter(|u| !config.servers.iter().any(|s| s.name == u.name()))
            .map(|u| u.name().to_owned())
            .collect();
        self.metrics
            .observe(&fresh.iter().map(|r| r.upstream.clone()).collect::<Vec<_>>());
        let same_cache = old.config.cache.settings == config.cache.settings
            && old.config.cache.redis == config.cache.redis;
        let cache = if same_cache {
            let cache = old.calls.upstream().cache().clone();
            forget_stale_results(&cache, &old.config, &config, &retired).await;
            cache
        } else {
            Arc::new(Self::result_cache(&config, &self.metrics))
        };
        let generation = build_generation(
            config.clone(),
            upstreams,
            cache,
            old.calls.task_ids().clone(),
            &self.metrics,
            self.changes.clone(),
        );
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(fresh);
        *self.generation.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(generation);
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        // Wakes the catalog keeper, which tells agents what their lists gained or lost.
        self.changed.send_modify(|v| *v += 1);
        if !retired.is_empty() {
            self.tasks.lock().await.spawn(Self::retire(
                Arc::downgrade(self),
                old,
                retired,
                config.reload.drain_grace,
            ));
        }
        Ok(summary)
    }

    /// Waits until no call holds `old` (or `grace` has passed), then stops `retired`.
    async fn retire(
        gateway: std::sync::Weak<Self>,
        old: Arc<Generation>,
        retired: Vec<Arc<Upstream>>,
        grace: Duration,
    ) {
        let names: Vec<&str> = retired.iter().map(|u| u.name()).collect();
        tracing::info!(servers = ?names, "draining retired servers");
        let drained = tokio::time::timeout(grace, async {
            // Calls hold their generation to the end; this task's is the last one then.
            while Arc::strong_count(&old) > 1 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(servers = ?names, grace_ms = grace.as_millis() as u64, "drain grace over: stopping retired servers with calls still running");
        }
        drop(old);
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let stopped: Vec<Running> = {
            let mut running = gateway.running.lock().unwrap_or_else(|e| e.into_inner());
            let (stop, keep) = std::mem::take(&mut *running)
                .into_iter()
                .partition(|r| retired.iter().any(|u| Arc::ptr_eq(u, &r.upstream)));
            *running = keep;
            stop
        };
        for r in &stopped {
            r.stop.cancel();
        }
        tracing::info!(servers = ?names, "retired servers stopped");
    }

    /// Whether a load balancer may send calls here: the configuration is loaded (it is, once
    /// the gateway exists) and every server in `orchestrator.readiness.requiredServers` is
    /// connected. Lists the required servers that are not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let generation = self.current();
        let missing: Vec<String> = generation
            .config()
            .required_servers
            .iter()
            .filter(|name| {
                !generation
                    .upstreams()
                    .iter()
                    .any(|u| u.name() == name.as_str() && u.connected_since().is_some())
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// Undoes the sagas a previous run of the process left unfinished (see
    /// [`crate::saga_log`]); returns how many.
    pub async fn recover_sagas(&self) -> usize {
        self.calls().composites().recover(self.started).await
    }

    /// Records a reload that was refused, for status; the running configuration stays.
    pub fn record_reload_error(&self, message: String) {
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(ReloadFailure {
            message,
            at: chrono::Utc::now().to_rfc3339(),
        });
    }

    /// The last refused reload since the last one that applied.
    pub fn last_reload_error(&self) -> Option<ReloadFailure> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads applied since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Servers retired by a reload and still draining.
    pub fn draining(&self) -> Vec<String> {
        let current = self.current();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| {
                !current
                    .upstreams()
                    .iter()
                    .any(|u| Arc::ptr_eq(u, &r.upstream))
            })
            .map(|r| r.upstream.name().to_owned())
            .collect()
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

/// Starts supervising one upstream, under a token of its own (a child of `shutdown`).
fn start_upstream(
    spec: ServerSpec,
    relay: &Arc<Relay>,
    changed: &watch::Sender<u64>,
    secrets: &[String],
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Running {
    let (upstream, supervisor) =
        Upstream::supervised(spec, relay.clone(), changed.clone(), secrets.to_vec());
    let stop = shutdown.child_token();
    tasks.spawn(supervisor.supervise(stop.clone()));
    Running {
        upstream: Arc::new(upstream),
        stop,
    }
}

/// The call path and catalog of `config` over `upstreams`.
fn build_generation(
    config: Arc<Config>,
    upstreams: Vec<Arc<Upstream>>,
    cache: Arc<ResultCache>,
    task_ids: TaskIds,
    metrics: &Arc<Metrics>,
    changes: watch::Receiver<u64>,
) -> Generation {
    let upstream_calls = Arc::new(UpstreamCalls::new(
        upstreams,
        config.clone(),
        cache,
        metrics.clone(),
    ));
    let composites = Composites::new(config.clone(), upstream_calls.clone(), metrics.clone());
    Generation::new(
        config,
        Calls::with_task_ids(upstream_calls, composites, task_ids),
        changes,
    )
}

/// How often a drain looks for the calls of a retired generation to have finished.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Refuses a config whose composite steps name a tool that a kept (connected, unchanged) server
/// does not list. Servers that are new or restarting have not listed yet: their steps are
/// checked when they connect, as at start (a catalog problem in status).
fn check_composite_tools(
    config: &Config,
    kept: &[Option<Arc<Upstream>>],
) -> Result<(), ConfigError> {
    for workflow in &config.workflows {
        for step in &workflow.steps {
            let Some(upstream) = config
                .servers
                .iter()
                .zip(kept)
                .find(|(spec, _)| spec.name == step.server)
                .and_then(|(_, kept)| kept.as_ref())
            else {
                continue;
            };
            if upstream.connected_since().is_none() {
                continue;
            }
            if !upstream.offer().tools.iter().any(|t| t.name == step.tool) {
                return Err(ConfigError::new(
                    format!(
                        "orchestrator.composites.{}.steps.{}.call",
                        workflow.name, step.name
                    ),
                    format!(
                        "server `{}` does not list a tool `{}`",
                        step.server, step.tool
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Drops cached results the new config makes wrong: those of retired servers (a changed server
/// may answer differently), and those of composites whose definition changed or went.
async fn forget_stale_results(
    cache: &ResultCache,
    old: &Config,
    new: &Config,
    retired: &[Arc<Upstream>],
) {
    for upstream in retired {
        for tool in &upstream.offer().tools {
            cache
                .invalidate_server_tool(upstream.name(), &tool.name)
                .await;
        }
    }
    let definition = |config: &Config, name: &str| {
        config
            .workflows
            .iter()
            .find(|w| w.name == name)
            .map(|w| serde_json::to_value(&w.config).unwrap_or_default())
    };
    let stale: Vec<String> = old
        .workflows
        .iter()
        .filter(|w| definition(old, &w.name) != definition(new, &w.name))
        .map(|w| format!("composite:{}", w.name))
        .collect();
    if !stale.is_empty() {
        cache.invalidate_tags(&stale).await;
    }
}
