//! `mcp-orchestrator call TOOL --args JSON`: one tool call through the gateway, its result printed.

use std::path::Path;

use anyhow::{Context as _, bail};
use orchestrator::upstream::CallContext;
use rmcp::model::CallToolResult;

/// Calls `tool`; exit code 0 on success, 1 on a tool error, 2 when the call failed outright.
pub async fn run(path: &Path, tool: &str, args: &str) -> anyhow::Result<i32> {
    let arguments: serde_json::Value =
        serde_json::from_str(args).with_context(|| format!("--args is not JSON: {args}"))?;
    let serde_json::Value::Object(arguments) = arguments else {
        bail!("--args must be a JSON object, got {args}");
    };
    let gateway = super::start(path).await?;
    let outcome = gateway
        .call_tool(tool, Some(arguments), &CallContext::default())
        .await;
    gateway.shutdown().await;
    match outcome {
        Ok(result) => {
            out!("{}", render(&result));
            Ok(if result.is_error == Some(true) { 1 } else { 0 })
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(2)
        }
    }
}

/// Structured content when there is some, else the text content.
fn render(result: &CallToolResult) -> String {
    if let Some(s) = &result.structured_content {
        return serde_json::to_string_pretty(s).unwrap_or_default();
    }
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    match (&result.meta, result.is_error) {
        (Some(meta), Some(true)) => format!(
            "{text}\n{}",
            serde_json::to_string(&meta.0).unwrap_or_default()
        ),
        _ => text,
    }
}
