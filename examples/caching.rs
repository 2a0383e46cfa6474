//! Caching a composite, and a write that invalidates it.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example caching`
//!
//! Starts the bundled SQL server (each call made slow: 200 ms) and defines a composite of sales
//! figures cached for the `short` tier, whose steps' tools carry the tag `sales`; the cache section
//! says that a successful `sql.create_order` drops every entry tagged `sales` (as in `mcp.json`).
//! The first call is a miss (the servers answer), the second a hit (about 0 ms, `_meta.cached`),
//! then an order is created through the gateway and the third call is a miss again, whose revenue
//! includes the new sale. Prints each call's time and cache outcome, and the cache's figures.

use std::{path::Path, time::Instant};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The servers are in target/debug, beside target/debug/examples/caching.
    let sql = kit::binaries::find("sql-mcp-server")?;
    let config = json!({
        "mcpServers": {
            "sql": { "command": sql, "args": ["--data-dir", ":memory:", "--latency-ms", "200"] }
        },
        "orchestrator": {
            "cache": {
                "tags": { "sql.calculate_metrics": ["sales"], "sql.get_top_customers": ["sales"] },
                "invalidates": { "sql.create_order": ["sales", "customer:${args.customerId}"] }
            },
            "composites": { "sales_summary": {
                "description": "Revenue and the three best customers, cached for a short while.",
                "cache": "short",
                "steps": {
                    "sales": { "call": "sql.calculate_metrics", "args": { "metricType": "sales" } },
                    "top": { "call": "sql.get_top_customers", "args": { "limit": 3 } }
                },
                "output": { "revenue": "${sales.value}", "top": "${top.customers[*].customerId}" }
            } }
        }
    });
    let config = Config::parse(&config.to_string(), Path::new("."), &|_| None)?;
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(std::time::Duration::from_secs(30)).await,
        "servers did not connect"
    );
    let call = async |tool: &str, args: Value| -> anyhow::Result<(CallToolResult, f64)> {
        let started = Instant::now();
        let result = gateway
            .call_tool(tool, args.as_object().cloned(), &CallContext::default())
            .await?;
        anyhow::ensure!(result.is_error != Some(true), "{tool} failed: {result:?}");
        Ok((result, started.elapsed().as_secs_f64() * 1000.0))
    };
    let report = |n: u32, r: &CallToolResult, ms: f64| {
        // A hit says so in `_meta.cached`; a miss carries the steps' `_meta.sources` instead.
        let hit = r.meta.as_ref().and_then(|m| m.get("cached")) == Some(&json!(true));
        let revenue = r
            .structured_content
            .as_ref()
            .map_or(Value::Null, |c| c["revenue"].clone());
        let outcome = if hit { "hit" } else { "miss" };
        println!("call {n}: {outcome:<4} {ms:>8.1} ms  revenue {revenue}");
    };

    let (first, ms) = call("sales_summary", json!({})).await?;
    report(1, &first, ms);
    let (second, ms) = call("sales_summary", json!({})).await?;
    report(2, &second, ms);
    let order = json!({
        "customerId": "CUST-0100",
        "lines": [{ "productId": "PROD-001", "quantity": 2 }],
        "idempotencyKey": format!("caching-example-{}", std::process::id()),
    });
    let (created, ms) = call("sql__create_order", order).await?;
    let created = created.structured_content.unwrap_or_default();
    println!(
        "create_order: {} total {} in {ms:.1} ms; invalidates the tags sales, customer:CUST-0100",
        created["order"]["orderId"].as_str().unwrap_or("?"),
        created["order"]["total"]
    );
    let (third, ms) = call("sales_summary", json!({})).await?;
    report(3, &third, ms);
    let cache = gateway.cache().snapshot();
    println!(
        "cache: {} hits, {} misses, {} invalidations",
        cache.hits, cache.misses, cache.invalidations
    );
    gateway.shutdown().await;
    Ok(())
}
