//! Parallel vs sequential composite steps, through the library API.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example parallel`
//!
//! Starts the bundled SQL and Cosmos servers (each call made slow: 300 ms) as stdio children,
//! defines two composites in an `mcp.json` written in code — one whose second step reads the
//! first (so it waits), one whose steps are independent (so they run together) — and times both.

use std::{path::Path, time::Instant};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The servers are in target/debug, beside target/debug/examples/parallel.
    let server = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = kit::binaries::find(name)?;
        Ok(json!({ "command": path, "args": ["--data-dir", ":memory:", "--latency-ms", "300"] }))
    };
    let steps = |chained: bool| {
        // `$default` over a field the first step never returns: a real dependency on `customer`.
        let user = if chained {
            json!({ "$default": ["${customer.noSuchField}", "CUST-0001"] })
        } else {
            json!("CUST-0001")
        };
        json!({
            "customer": { "call": "sql.get_customer", "args": { "customerId": "CUST-0001" } },
            "behavior": { "call": "cosmos.get_user_behavior", "args": { "userId": user } }
        })
    };
    let config = json!({
        "mcpServers": {
            "sql": server("sql-mcp-server")?,
            "cosmos": server("cosmos-mcp-server")?
        },
        "orchestrator": { "composites": {
            "chained": { "description": "Behaviour after the customer.", "steps": steps(true),
                         "output": { "customer": "${customer}", "behavior": "${behavior}" } },
            "together": { "description": "Customer and behaviour at once.", "steps": steps(false),
                          "output": { "customer": "${customer}", "behavior": "${behavior}" } }
        } }
    });
    let config = Config::parse(&config.to_string(), Path::new("."), &|_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(std::time::Duration::from_secs(30)).await,
        "servers did not connect"
    );
    for tool in ["chained", "together"] {
        let started = Instant::now();
        let result = gateway
            .call_tool(tool, None, &CallContext::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "{tool:>8}: {:>4} ms (error: {})",
            started.elapsed().as_millis(),
            result.is_error == Some(true)
        );
    }
    gateway.shutdown().await;
    Ok(())
}
