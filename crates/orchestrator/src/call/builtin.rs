//! The tools the orchestrator answers itself.

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::Value;

use crate::cache::ResultCache;

/// `orchestrator__invalidate_cache`: drops cached results by tags, by server and tool, or all.
pub async fn invalidate_cache(
    cache: &ResultCache,
    arguments: Option<&JsonObject>,
) -> CallToolResult {
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
        cache.invalidate_all().await;
        "all entries".to_owned()
    } else if let (Some(server), Some(tool)) = (server, tool) {
        cache.invalidate_server_tool(server, tool).await;
        format!("entries of {server}.{tool}")
    } else if !tags.is_empty() {
        let n = cache.invalidate_tags(&tags).await;
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
