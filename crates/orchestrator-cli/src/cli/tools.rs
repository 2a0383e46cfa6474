//! `mcp-orchestrator tools`: connects to every server and prints the catalog agents would see.

use std::path::Path;

use crate::output::table;

/// Prints the exposed tools as a table (or JSON); exit code 0.
pub async fn run(path: &Path, json: bool) -> anyhow::Result<i32> {
    let gateway = super::start(path).await?;
    let catalog = gateway.catalog();
    if json {
        out!("{}", serde_json::to_string_pretty(catalog.tools())?);
    } else {
        let mut t = table(&["tool", "server", "read-only", "description"]);
        for (tool, server) in catalog.tool_servers() {
            let read_only = tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .map(|b| if b { "yes" } else { "no" })
                .unwrap_or("?");
            let description = tool
                .description
                .as_deref()
                .unwrap_or_default()
                .split(". ")
                .next()
                .unwrap_or_default()
                .to_owned();
            t.add_row([
                tool.name.to_string(),
                gateway.upstreams()[server].name().to_owned(),
                read_only.to_owned(),
                description,
            ]);
        }
        out!("{t}");
        out!(
            "{} tools from {} servers",
            catalog.tools().len(),
            gateway.upstreams().len()
        );
        for p in catalog.problems() {
            out!("note: {}: {}", p.server, p.message);
        }
    }
    gateway.shutdown().await;
    Ok(0)
}
