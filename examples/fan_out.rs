//! Fan-out: one step run once per item of a list, a bounded number at a time.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example fan_out`
//!
//! Starts the bundled SQL and Cosmos servers (each call made slow: 100 ms) and defines one
//! composite: the top N customers (SQL), then a behaviour analysis per customer (Cosmos) with
//! `forEach` and `concurrency: 10`. Run for N = 10 and N = 50, the fan-out step takes about
//! ceil(N / 10) × 100 ms instead of the N × 100 ms of calling one customer after another; the
//! example prints the fan-out step's wall time (from `_meta.sources`) next to both figures.

use std::{path::Path, time::Instant};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use serde_json::{Value, json};

/// Delay every server call takes.
const LATENCY_MS: u64 = 100;
/// How many per-customer calls run at once.
const CONCURRENCY: u64 = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The servers are in target/debug, beside target/debug/examples/fan_out.
    let server = |name: &str| -> anyhow::Result<Value> {
        let path = kit::binaries::find(name)?;
        let latency = LATENCY_MS.to_string();
        Ok(json!({ "command": path, "args": ["--data-dir", ":memory:", "--latency-ms", latency] }))
    };
    let config = json!({
        "mcpServers": { "sql": server("sql-mcp-server")?, "cosmos": server("cosmos-mcp-server")? },
        "orchestrator": { "composites": { "top_with_behavior": {
            "description": "The top N customers, each with a behaviour analysis.",
            "input": { "type": "object", "properties": { "limit": { "type": "integer" } } },
            "steps": {
                "top": { "call": "sql.get_top_customers", "args": { "limit": "${input.limit}" },
                         "critical": true },
                "behavior": { "call": "cosmos.analyze_user_behavior", "forEach": "${top.customers}",
                              "as": "customer", "concurrency": CONCURRENCY,
                              "args": { "customerId": "${customer.customerId}" } }
            },
            "output": { "customers": { "$zip": { "items": "${top.customers}", "with": "${behavior}",
                                                 "as": "behavior" } } }
        } } }
    });
    let config = Config::parse(&config.to_string(), Path::new("."), &|_| None)?;
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(std::time::Duration::from_secs(30)).await,
        "servers did not connect"
    );

    println!("per call: {LATENCY_MS} ms, concurrency: {CONCURRENCY}");
    for n in [10u64, 50] {
        let args = json!({ "limit": n });
        let started = Instant::now();
        let result = gateway
            .call_tool(
                "top_with_behavior",
                args.as_object().cloned(),
                &CallContext::default(),
            )
            .await?;
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(result.is_error != Some(true), "N={n} failed: {result:?}");
        // The fan-out step's own wall time and item count, from `_meta.sources`.
        let meta = result.meta.clone().unwrap_or_default();
        let step = meta
            .get("sources")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|s| s["step"] == "behavior"))
            .cloned()
            .unwrap_or_default();
        let enriched = result.structured_content.as_ref().map_or(0, |c| {
            c["customers"].as_array().map_or(0, |a| {
                a.iter().filter(|c| c["behavior"].is_object()).count()
            })
        });
        println!(
            "N={n}: fan-out {:.1} ms wall for {} calls ({enriched} customers enriched); \
             one by one: {} ms; {CONCURRENCY} at a time: {} ms; whole composite {total_ms:.1} ms",
            step["latencyMs"].as_f64().unwrap_or(f64::NAN),
            step["items"],
            n * LATENCY_MS,
            n.div_ceil(CONCURRENCY) * LATENCY_MS,
        );
    }
    gateway.shutdown().await;
    Ok(())
}
