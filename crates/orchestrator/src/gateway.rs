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
    config::Config,
    context::CallContext,
    error::CallError,
    metrics::Metrics,
    policy::CallReport,
    relay::Relay,
    upstream::Upstream,
};

/// The orchestrator's moving parts, wired together.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    relay: Arc<Relay>,
    /// The catalog and the change count it was built at; rebuilt on read when stale, so a
    /// reader never sees tools an upstream no longer offers.
    catalog: RwLock<(u64, Arc<Catalog>)>,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    started: chrono::DateTime<chrono::Utc>,
    calls: Calls,
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
        let upstreams: Vec<Arc<Upstream>> = config
            .servers
            .iter()
            .map(|spec| {
                let (upstream, supervisor) = Upstream::supervised(
                    spec.clone(),
                    relay.clone(),
                    changed.clone(),
                    config.secrets.clone(),
                );
                tasks.spawn(supervisor.supervise(shutdown.clone()));
                Arc::new(upstream)
            })
            .collect();
        metrics.observe(&upstreams);
        let cache = Arc::new(Self::result_cache(&config, &metrics));
        let catalog = Arc::new(Catalog::build(&config, &upstreams));
        let upstream_calls = Arc::new(UpstreamCalls::new(
            upstreams,
            config.clone(),
            cache,
            metrics.clone(),
        ));
        let composites = Composites::new(config.clone(), upstream_calls.clone(), metrics.clone());
        let gateway = Arc::new(Self {
            catalog: RwLock::new((0, catalog)),
            config,
            relay,
            changes,
            shutdown,
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            started: chrono::Utc::now(),
            calls: Calls::new(upstream_calls, composites),
            metrics,
            suspensions,
        });
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

    /// The current catalog.
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

    /// The validated configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// One upstream per enabled server, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        self.calls.upstream().upstreams()
    }

    /// The call path.
    pub fn calls(&self) -> &Calls {
        &self.calls
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
            gw.upstreams()
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
        let catalog = self.catalog();
        match catalog.route(name) {
            Ok(route) => {
                self.calls
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
        let catalog = self.catalog();
        let route = catalog.route(name)?;
        let tasks = crate::tasks::declared_by_agent(cx);
        self.calls
            .call_tool_response(&catalog, route, name, arguments, tasks, cx)
            .await
            .0
    }

    /// The result cache, for status and tests.
    pub fn cache(&self) -> &ResultCache {
        self.calls.upstream().cache()
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
