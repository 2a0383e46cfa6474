//! `orchestrator://status`: what each upstream is doing, as data (JSON for agents; the
//! `mcp-orchestrator status` command prints it as tables).

use serde::{Deserialize, Serialize};

use crate::{catalog::CatalogProblem, gateway::Gateway};

/// URI of the status resource.
pub const STATUS_URI: &str = "orchestrator://status";

/// URI of the recent sagas, read from the saga log (listed when a composite is a saga).
pub const SAGAS_URI: &str = "orchestrator://sagas";

/// Sagas `orchestrator://sagas` shows, newest first.
pub const RECENT_SAGAS: usize = 50;

/// One upstream's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// Its name in mcp.json.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Since when (RFC 3339).
    pub connected_since: Option<String>,
    /// The protocol version spoken to it (`2026-07-28` when it knows `server/discover`,
    /// else the `initialize` version), while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Tools it offers (before filters).
    pub tool_count: usize,
    /// Calls routed to it.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// When (RFC 3339).
    pub last_error_at: Option<String>,
    /// Attempts, retries, timeouts, breaker state and bulkhead occupancy.
    pub policy: crate::policy::PolicySnapshot,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// When the orchestrator started (RFC 3339).
    pub started_at: String,
    /// One entry per enabled upstream.
    pub servers: Vec<ServerStatus>,
    /// Entries marked `disabled`.
    pub disabled: Vec<String>,
    /// Tools exposed in all.
    pub exposed_tools: usize,
    /// Names that could not be exposed, and composite steps whose tool is not listed.
    pub catalog_problems: Vec<CatalogProblem>,
    /// Composite tools configured.
    pub composites: Vec<String>,
    /// Result cache figures: entries, hits, misses, loads, evictions, invalidations; and under
    /// `redis`, the shared layer's state (`configured: false` when there is none).
    pub cache: serde_json::Value,
    /// `orchestrator.limits` in force, and how often the front enforced them.
    pub limits: LimitsStatus,
    /// Which configuration is in force, and how the last reload went.
    #[serde(default)]
    pub config: ConfigStatus,
    /// Saga composites run since start, by outcome.
    #[serde(default)]
    pub sagas: crate::metrics::SagaCounts,
}

/// The configuration in force: which version of the file, since when, and the last reload
/// that was refused (the running configuration stayed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// SHA-256 of the file's text (what `sha256sum mcp.json` prints).
    pub digest: String,
    /// When it came into force (RFC 3339).
    pub loaded_at: String,
    /// Reloads applied since start.
    pub reloads: u64,
    /// The last refused reload since the last applied one.
    pub last_reload_error: Option<crate::gateway::ReloadFailure>,
    /// Servers a reload removed or changed whose calls are still finishing.
    pub draining: Vec<String>,
}

/// The limits in force (`orchestrator.limits`, defaults filled in), so an operator who sees
/// refusals or cut results can tell which limit and how often without reading the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsStatus {
    /// Calls one agent session may have in flight.
    pub max_concurrent_calls_per_client: usize,
    /// Items a `forEach` step may fan out over, unless the step sets `maxItems`.
    pub max_for_each_items: usize,
    /// Largest `tools/call` result returned to an agent, in bytes.
    pub max_result_bytes: usize,
    /// Resource subscriptions one agent session may hold.
    #[serde(default)]
    pub max_subscriptions_per_client: usize,
    /// 2026-07-28 calls held at once while their agents answer.
    #[serde(default)]
    pub max_held_calls: usize,
    /// Lines of each stdio upstream's stderr logged per second.
    pub upstream_stderr_lines_per_second: u32,
    /// Longest stderr line logged, in bytes.
    pub upstream_stderr_max_line_bytes: usize,
    /// Largest request sent to an upstream (a server's `maxRequestBytes` may differ).
    #[serde(default)]
    pub upstream_max_request_bytes: usize,
    /// Largest message read from a stdio upstream.
    #[serde(default)]
    pub upstream_max_message_bytes: usize,
    /// How long listing an upstream may take, in milliseconds.
    #[serde(default)]
    pub upstream_list_timeout_ms: u64,
    /// Calls refused, results cut and subscriptions refused since start.
    pub enforced: crate::metrics::LimitCounts,
}

impl LimitsStatus {
    fn of(gw: &Gateway) -> Self {
        let l = &gw.config().limits;
        Self {
            max_concurrent_calls_per_client: l.max_concurrent_calls_per_client,
            max_for_each_items: l.max_for_each_items,
            max_result_bytes: l.max_result_bytes,
            max_subscriptions_per_client: l.max_subscriptions_per_client,
            max_held_calls: l.max_held_calls,
            upstream_stderr_lines_per_second: l.stderr.lines_per_second,
            upstream_stderr_max_line_bytes: l.stderr.max_line_bytes,
            upstream_max_request_bytes: l.upstream.max_request_bytes,
            upstream_max_message_bytes: l.upstream.max_message_bytes,
            upstream_list_timeout_ms: l.upstream.list_timeout.as_millis() as u64,
            enforced: gw.metrics().limits_enforced(),
        }
    }
}

impl StatusReport {
    /// Reads the figures now; secrets are redacted from error texts.
    pub fn of(gw: &Gateway) -> Self {
        let generation = gw.current();
        let catalog = generation.catalog();
        Self {
            started_at: gw.started().to_rfc3339(),
            servers: generation
                .upstreams()
                .iter()
                .map(|u| {
                    let s = u.stats().snapshot();
                    ServerStatus {
                        name: u.name().to_owned(),
                        transport: u.spec().transport.kind().to_owned(),
                        connected: u.connected_since().is_some(),
                        connected_since: u.connected_since().map(|t| t.to_rfc3339()),
                        protocol: u.protocol(),
                        tool_count: u.offer().tools.len(),
                        calls: s.calls,
                        errors: s.errors,
                        p50_ms: s.p50_ms,
                        p99_ms: s.p99_ms,
                        last_error: s.last_error.map(|e| generation.config().redact(&e)),
                        last_error_at: s.last_error_at,
                        policy: u.policy().snapshot(),
                    }
                })
                .collect(),
            disabled: generation.config().disabled.clone(),
            exposed_tools: catalog.tools().len(),
            catalog_problems: catalog.problems().to_vec(),
            composites: gw
                .config()
                .workflows
                .iter()
                .map(|w| w.name.clone())
                .collect(),
            cache: cache_status(gw),
            limits: LimitsStatus::of(gw),
            config: ConfigStatus {
                digest: generation.config().digest.clone(),
                loaded_at: generation.loaded_at().to_rfc3339(),
                reloads: gw.reloads(),
                last_reload_error: gw.last_reload_error(),
                draining: gw.draining(),
            },
            sagas: gw.metrics().saga_counts(),
        }
    }
}

/// The cache section: the in-process figures, and the Redis layer's under `redis`.
fn cache_status(gw: &Gateway) -> serde_json::Value {
    let mut cache = serde_json::to_value(gw.cache().snapshot()).unwrap_or_default();
    let redis = match gw.cache().shared_snapshot() {
        Some(mut redis) => {
            redis.last_error = redis.last_error.map(|e| gw.config().redact(&e));
            serde_json::to_value(redis).unwrap_or_default()
        }
        None => serde_json::json!({ "configured": false }),
    };
    if let Some(object) = cache.as_object_mut() {
        object.insert("redis".into(), redis);
    }
    cache
}
