//! `mcp-orchestrator status`: reads `orchestrator://status` from a running orchestrator's HTTP
//! front and prints it as tables and lines (or the JSON as it came).

use std::path::Path;

use anyhow::Context as _;
use orchestrator::status::{LimitsStatus, STATUS_URI, StatusReport};
use rmcp::{
    ServiceExt,
    model::{ReadResourceRequestParams, ResourceContents},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

use super::load;
use crate::output::table;

/// Prints the status of the orchestrator at `url` (default: `orchestrator.listen` from the
/// configuration); exit code 0.
pub async fn run(
    path: &Path,
    url: Option<String>,
    token: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let url = match url {
        Some(u) => u,
        None => format!("http://{}/mcp", load(path)?.listen),
    };
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
    if let Some(t) = token {
        config = config.auth_header(t);
    }
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .with_context(|| format!("cannot reach an orchestrator at {url}"))?;
    let result = client
        .read_resource(ReadResourceRequestParams::new(STATUS_URI))
        .await
        .context("reading orchestrator://status")?;
    let _ = client.cancel().await;
    let text = result
        .contents
        .into_iter()
        .find_map(|c| match c {
            ResourceContents::TextResourceContents { text, .. } => Some(text),
            _ => None,
        })
        .context("status resource had no text")?;
    if json {
        out!("{text}");
    } else {
        let report: StatusReport =
            serde_json::from_str(&text).context("status is not a status report")?;
        out!("{}", servers_table(&report));
        out!(
            "{} tools exposed; started {}",
            report.exposed_tools,
            report.started_at
        );
        out!("composites: {}", report.composites.join(", "));
        out!("cache: {}", report.cache);
        out!("{}", limits_line(&report.limits));
        out!("{}", config_line(&report.config));
        for p in &report.catalog_problems {
            out!("note: {}: {}", p.server, p.message);
        }
    }
    Ok(0)
}

/// Which config is in force, and the last refused reload, if any.
fn config_line(config: &orchestrator::status::ConfigStatus) -> String {
    let digest = config.digest.get(..12).unwrap_or(&config.digest);
    let mut line = format!(
        "config: sha256 {digest}… loaded {}, {} reloads",
        config.loaded_at, config.reloads
    );
    if !config.draining.is_empty() {
        line.push_str(&format!("; draining {}", config.draining.join(", ")));
    }
    if let Some(e) = &config.last_reload_error {
        line.push_str(&format!("; last reload refused at {}: {}", e.at, e.message));
    }
    line
}

/// One row per server, each cell under its header (the policy figures as `retries`, `breaker`
/// state and `bulkhead` occupancy), then one row per disabled entry.
fn servers_table(report: &StatusReport) -> comfy_table::Table {
    let mut t = table(&[
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
    for s in &report.servers {
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
    for d in &report.disabled {
        t.add_row([d.clone(), "-".into(), "disabled".into()]);
    }
    t
}

/// The limits in force and how often each was enforced, on one line.
fn limits_line(l: &LimitsStatus) -> String {
    format!(
        "limits: {} calls in flight per agent ({} refused), results up to {} bytes ({} cut), \
         {} subscriptions per agent ({} refused), forEach up to {} items, \
         upstream stderr {} lines/s of up to {} bytes",
        l.max_concurrent_calls_per_client,
        l.enforced.client_calls,
        l.max_result_bytes,
        l.enforced.result_bytes,
        l.max_subscriptions_per_client,
        l.enforced.subscriptions,
        l.max_for_each_items,
        l.upstream_stderr_lines_per_second,
        l.upstream_stderr_max_line_bytes,
    )
}

#[cfg(test)]
mod tests {
    use orchestrator::{metrics::LimitCounts, status::ServerStatus};
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
                max_subscriptions_per_client: 1000,
                max_held_calls: 1000,
                upstream_stderr_lines_per_second: 200,
                upstream_stderr_max_line_bytes: 2000,
                upstream_max_request_bytes: 4 << 20,
                upstream_max_message_bytes: 16 << 20,
                upstream_list_timeout_ms: 30_000,
                enforced: LimitCounts {
                    client_calls: 3,
                    result_bytes: 1,
                    ..LimitCounts::default()
                },
            },
            config: Default::default(),
            sagas: Default::default(),
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
        let table = servers_table(&report());
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
        let line = limits_line(&report().limits);
        assert!(
            line.contains("16 calls in flight per agent (3 refused)"),
            "{line}"
        );
        assert!(line.contains("results up to 4096 bytes (1 cut)"), "{line}");
        assert!(line.contains("forEach up to 1000 items"), "{line}");
        assert!(line.contains("200 lines/s of up to 2000 bytes"), "{line}");
    }
}
