//! Sequential composite steps: each step feeds the next, through the library API.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example sequential`
//!
//! Starts the bundled SQL and REST servers (each call made slow: 200 ms) and defines one composite
//! whose three steps form a chain: an order (SQL), then the product of its first line (REST), then
//! the stock of that product (REST). Each step reads the one before it, so the executor runs them
//! one after the other; the example prints every step's start and latency from the result's
//! `_meta.sources`, and the order's first product with its stock.

use std::{path::Path, time::Instant};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The servers are in target/debug, beside target/debug/examples/sequential.
    let server = |name: &str, args: &[&str]| -> anyhow::Result<Value> {
        let path = kit::binaries::find(name)?;
        Ok(json!({ "command": path, "args": args }))
    };
    let config = json!({
        "mcpServers": {
            "sql": server("sql-mcp-server", &["--data-dir", ":memory:", "--latency-ms", "200"])?,
            "rest": server("rest-mcp-server", &["--latency-ms", "200"])?
        },
        "orchestrator": { "composites": { "order_stock": {
            "description": "An order, the product of its first line, and that product's stock.",
            "input": { "type": "object", "properties": { "orderId": { "type": "string" } },
                       "required": ["orderId"] },
            "steps": {
                "order": { "call": "sql.get_order_details", "args": { "orderId": "${input.orderId}" },
                           "critical": true },
                "product": { "call": "rest.get_product",
                             "args": { "productId": "${order.lines[0].productId}" } },
                "stock": { "call": "rest.check_inventory",
                           "args": { "productId": "${product.productId}" } }
            },
            "output": { "orderId": "${order.orderId}", "product": "${product.name}",
                        "productId": "${product.productId}", "inStock": "${stock.items[0].totalQuantity}" }
        } } }
    });
    let config = Config::parse(&config.to_string(), Path::new("."), &|_| None)?;
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(std::time::Duration::from_secs(30)).await,
        "servers did not connect"
    );

    let args = json!({ "orderId": "ORD-00042" });
    let started = Instant::now();
    let result = gateway
        .call_tool(
            "order_stock",
            args.as_object().cloned(),
            &CallContext::default(),
        )
        .await?;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        result.is_error != Some(true),
        "order_stock failed: {result:?}"
    );

    // `_meta.sources`: one entry per step, with its start (from the composite's start) and latency.
    let meta = result.meta.clone().unwrap_or_default();
    let sources = meta
        .get("sources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<8} {:<22} {:>12} {:>12}  outcome",
        "step", "call", "started ms", "latency ms"
    );
    let mut sum_ms = 0.0;
    for s in &sources {
        let (start, latency) = (
            s["startedMs"].as_f64().unwrap_or(0.0),
            s["latencyMs"].as_f64().unwrap_or(0.0),
        );
        sum_ms += latency;
        println!(
            "{:<8} {:<22} {start:>12.1} {latency:>12.1}  {}",
            s["step"].as_str().unwrap_or("?"),
            format!(
                "{}.{}",
                s["server"].as_str().unwrap_or("?"),
                s["tool"].as_str().unwrap_or("?")
            ),
            s["outcome"].as_str().unwrap_or("?"),
        );
    }
    let out = result.structured_content.clone().unwrap_or_default();
    println!(
        "{}: first product {} ({}), {} in stock",
        out["orderId"].as_str().unwrap_or("?"),
        out["productId"].as_str().unwrap_or("?"),
        out["product"].as_str().unwrap_or("?"),
        out["inStock"]
    );
    println!(
        "total: {total_ms:.1} ms, sum of step latencies: {sum_ms:.1} ms (one after the other)"
    );
    gateway.shutdown().await;
    Ok(())
}
