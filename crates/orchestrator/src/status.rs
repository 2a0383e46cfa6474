//! `orchestrator://status`: what each upstream is doing, as JSON for agents and a table for people.

use serde::{Deserialize, Serialize};

use crate::{catalog::CatalogProblem, gateway::Gateway};

/// URI of the status resource.
pub const STATUS_URI: &str = "orchestrator://status";

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
    /// Result cache figures: entries, hits, misses, loads, evictions, invalidations.
    pub cache: serde_json::Value,
    /// `orchestrator.limits` in force, and how often the front enforced them.
    pub limits: LimitsStatus,
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
    /// Lines of each stdio upstream's stderr logged per second.
    pub upstream_stderr_lines_per_second: u32,
    /// Longest stderr line logged, in bytes.
    pub upstream_stderr_max_line_bytes: usize,
    /// Calls refused and results cut since start.
    pub enforced: crate::metrics::LimitCounts,
}

impl LimitsStatus {
    fn of(gw: &Gateway) -> Self {
        let l = &gw.config().limits;
        Self {
            max_concurrent_calls_per_client: l.max_concurrent_calls_per_client,
            max_for_each_items: l.max_for_each_items,
            max_result_bytes: l.max_result_bytes,
            upstream_stderr_lines_per_second: l.stderr.lines_per_second,
            upstream_stderr_max_line_bytes: l.stderr.max_line_bytes,
            enforced: gw.metrics().limits_enforced(),
        }
    }

    /// One line for terminals.
    pub fn line(&self) -> String {
        format!(
            "limits: {} calls in flight per agent ({} refused), results up to {} bytes ({} cut), \
             forEach up to {} items, upstream stderr {} lines/s of up to {} bytes",
            self.max_concurrent_calls_per_client,
            self.enforced.client_calls,
            self.max_result_bytes,
            self.enforced.result_bytes,
            self.max_for_each_items,
            self.upstream_stderr_lines_per_second,
            self.upstream_stderr_max_line_bytes,
        )
    }
}

impl StatusReport {
    /// Reads the figures now; secrets are redacted from error texts.
    pub fn of(gw: &Gateway) -> Self {
        let catalog = gw.catalog();
        Self {
            started_at: gw.started().to_rfc3339(),
            servers: gw
                .upstreams()
                .iter()
                .map(|u| {
                    let s = u.stats().snapshot();
                    ServerStatus {
                        name: u.name().to_owned(),
                        transport: u.spec().transport.kind().to_owned(),
                        connected: u.connected_since().is_some(),
                        connected_since: u.connected_since().map(|t| t.to_rfc3339()),
                        tool_count: u.offer().tools.len(),
                        calls: s.calls,
                        errors: s.errors,
                        p50_ms: s.p50_ms,
                        p99_ms: s.p99_ms,
                        last_error: s.last_error.map(|e| gw.config().redact(&e)),
                        last_error_at: s.last_error_at,
                        policy: u.policy().snapshot(),
                    }
                })
                .collect(),
            disabled: gw.config().disabled.clone(),
            exposed_tools: catalog.tools.len(),
            catalog_problems: catalog.problems.clone(),
            composites: gw
                .config()
                .workflows
                .iter()
                .map(|w| w.name.clone())
                .collect(),
            cache: serde_json::to_value(gw.cache().snapshot()).unwrap_or_default(),
            limits: LimitsStatus::of(gw),
        }
    }

    /// A table for terminals: one row per server, each cell under its header (the policy
    /// figures as `retries`, `breaker` state and `bulkhead` occupancy).
    pub fn table(&self) -> comfy_table::Table {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header([
            "server",
            "transport",
            "connected",
            "tools",
            "calls",
            "errors",
            "p50 ms",
            "p99 ms",
            "retries",
            "breaker",
            "bulkhead",
            "last error",
        ]);
        for s in &self.servers {
            t.add_row([
                s.name.clone(),
                s.transport.clone(),
                if s.connected {
                    "yes".into()
                } else {
                    "NO".into()
                },
                s.tool_count.to_string(),
                s.calls.to_string(),
                s.errors.to_string(),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p99_ms),
                s.policy.retries.to_string(),
                s.policy.breaker["state"].as_str().unwrap_or("?").to_owned(),
                format!(
                    "{}/{} running, {} queued, {} rejected",
                    s.policy.bulkhead["running"],
                    s.policy.bulkhead["maxConcurrent"],
                    s.policy.bulkhead["queued"],
                    s.policy.bulkhead["rejected"]
                ),
                s.last_error
                    .as_deref()
                    .map(|e| format!("{} ({})", e, s.last_error_at.as_deref().unwrap_or("")))
                    .unwrap_or_default(),
            ]);
        }
        for d in &self.disabled {
            t.add_row([d.clone(), "-".into(), "disabled".into()]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report() -> StatusReport {
        let server: ServerStatus = serde_json::from_value(json!({
            "name": "cosmos",
            "transport": "stdio",
            "connected": true,
            "connectedSince": null,
            "toolCount": 9,
            "calls": 12,
            "errors": 5,
            "p50Ms": 1.5,
            "p99Ms": 9.25,
            "lastError": "get_user_behavior: injected failure",
            "lastErrorAt": "2025-01-01T00:00:00Z",
            "policy": {
                "attempts": 20, "retries": 7, "timeouts": 0, "budgetExhausted": 1, "deadlines": 0,
                "breaker": { "state": "open" },
                "bulkhead": { "running": 2, "queued": 3, "maxConcurrent": 4, "maxQueue": 4,
                              "rejected": 6, "admitted": 14 }
            }
        }))
        .expect("a server status");
        StatusReport {
            started_at: "2025-01-01T00:00:00Z".into(),
            servers: vec![server],
            disabled: vec![],
            exposed_tools: 9,
            catalog_problems: vec![],
            composites: vec![],
            cache: json!({}),
            limits: LimitsStatus {
                max_concurrent_calls_per_client: 16,
                max_for_each_items: 1000,
                max_result_bytes: 4096,
                upstream_stderr_lines_per_second: 200,
                upstream_stderr_max_line_bytes: 2000,
                enforced: crate::metrics::LimitCounts {
                    client_calls: 3,
                    result_bytes: 1,
                },
            },
        }
    }

    /// The cell of `row` under the header named `column`.
    fn cell(table: &comfy_table::Table, row: usize, column: &str) -> String {
        let header = table.header().expect("a header");
        let index = header
            .cell_iter()
            .position(|c| c.content() == column)
            .unwrap_or_else(|| panic!("no column `{column}`"));
        let row = table.row(row).expect("a row");
        row.cell_iter()
            .nth(index)
            .map(|c| c.content())
            .unwrap_or_else(|| panic!("row has no cell under `{column}`"))
    }

    #[test]
    fn every_cell_of_a_server_row_has_its_header() {
        let table = report().table();
        let headers = table.header().expect("a header").cell_count();
        let cells = table.row(0).expect("a row").cell_count();
        assert_eq!(headers, cells, "one header per cell");
        assert_eq!(cell(&table, 0, "server"), "cosmos");
        assert_eq!(cell(&table, 0, "retries"), "7");
        assert_eq!(cell(&table, 0, "breaker"), "open");
        assert_eq!(
            cell(&table, 0, "bulkhead"),
            "2/4 running, 3 queued, 6 rejected"
        );
        assert!(
            cell(&table, 0, "last error").starts_with("get_user_behavior: injected failure"),
            "the last error is under its own header"
        );
    }

    #[test]
    fn the_limits_line_names_each_limit_with_its_count() {
        let line = report().limits.line();
        assert!(
            line.contains("16 calls in flight per agent (3 refused)"),
            "{line}"
        );
        assert!(line.contains("results up to 4096 bytes (1 cut)"), "{line}");
        assert!(line.contains("forEach up to 1000 items"), "{line}");
        assert!(line.contains("200 lines/s of up to 2000 bytes"), "{line}");
    }
}
