//! The running orchestrator: upstreams under supervision, the catalog kept current, and the one
//! call path every routed request takes.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use rmcp::model::{CallToolResult, JsonObject};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Catalog,
    config::Config,
    error::CallError,
    policy::CallReport,
    relay::Relay,
    upstream::{CallContext, Upstream},
};

/// The orchestrator's moving parts, wired together.
#[derive(Debug)]
pub struct Gateway {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// One per enabled server, in config order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Progress and agents.
    pub relay: Arc<Relay>,
    /// The catalog and the change count it was built at; rebuilt on read when stale, so a
    /// reader never sees tools an upstream no longer offers.
    catalog: RwLock<(u64, Arc<Catalog>)>,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    started: chrono::DateTime<chrono::Utc>,
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
    /// current. Returns at once: upstreams connect in the background.
    pub fn start(config: Config) -> Arc<Self> {
        let config = Arc::new(config);
        let relay = Arc::new(Relay::default());
        let (changed, changes) = watch::channel(0u64);
        let upstreams: Vec<Arc<Upstream>> = config
            .servers
            .iter()
            .map(|spec| Arc::new(Upstream::new(spec.clone(), relay.clone(), changed.clone())))
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
                .all(|u| u.connected_since().is_some() || u.stats.last_error().is_some())
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

    /// Routes one `tools/call` by its exposed name, through the owning server's policy stack.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> Result<CallToolResult, CallError> {
        self.call_tool_with_report(name, arguments, cx).await.0
    }

    /// Like [`Gateway::call_tool`], with the attempts and retry delays it took.
    pub async fn call_tool_with_report(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> (Result<CallToolResult, CallError>, CallReport) {
        let catalog = self.catalog();
        let (route, tool) = match catalog.tool(name) {
            Ok(route) => (route.clone(), catalog.tool_definition(name)),
            Err(e) => return (Err(e), CallReport::default()),
        };
        let upstream = &self.upstreams[route.server];
        let annotations = tool.and_then(|t| t.annotations.as_ref());
        let read_only = annotations.and_then(|a| a.read_only_hint).unwrap_or(false);
        let idempotent = annotations.and_then(|a| a.idempotent_hint).unwrap_or(false);
        let policy = upstream.policy.policy.for_tool(&route.name, read_only);
        let safe = read_only
            || idempotent
            || policy.retry_safe
            || carries_idempotency_key(arguments.as_ref());
        let started = std::time::Instant::now();
        let (outcome, report) = upstream
            .policy
            .call(&route.name, &policy, safe, || {
                upstream.call_tool(&route.name, arguments.clone(), cx)
            })
            .await;
        let failure = match &outcome {
            Ok(r) if r.is_error == Some(true) => Some(
                kit::ToolError::from_call_tool_result(r)
                    .map(|e| format!("{}: {}", route.name, e.message))
                    .unwrap_or_default(),
            ),
            Ok(_) | Err(CallError::Cancelled) => None,
            Err(e) => Some(e.to_string()),
        };
        upstream.stats.record(started.elapsed(), failure.as_deref());
        (outcome, report)
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
