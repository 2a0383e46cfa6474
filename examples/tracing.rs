//! One trace across the orchestrator and the servers it calls, with the kit's telemetry.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example tracing`
//!
//! Installs the kit's tracing setup (`kit::telemetry::init`: JSON logs to stderr, and OTLP/HTTP
//! span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, e.g. `http://127.0.0.1:4318` for Jaeger),
//! starts the three bundled servers (which inherit the `OTEL_*` variables and log JSON too) and
//! makes one composite call inside a span of its own, playing the agent. It prints the trace id —
//! the root span's when exporting; otherwise one minted here and sent as the agent's
//! `_meta.traceparent`, which the gateway passes on to every server — and the spans of the call:
//! the composite, one `step` span per step and the server's `tools/call` under it, with the
//! timings the result's `_meta.sources` reports for them.

use std::path::Path;

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::RequestMetaObject;
use serde_json::{Value, json};
use tracing::Instrument as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = kit::telemetry::init("tracing-example", kit::telemetry::LogFormat::Json)?;
    // The servers are in target/debug, beside target/debug/examples/tracing.
    let server = |name: &str, args: &[&str]| -> anyhow::Result<Value> {
        let path = kit::binaries::find(name)?;
        let args = [args, &["--log-format", "json"]].concat();
        Ok(json!({ "command": path, "args": args }))
    };
    let config = json!({
        "mcpServers": {
            "sql": server("sql-mcp-server", &["--data-dir", ":memory:"])?,
            "cosmos": server("cosmos-mcp-server", &["--data-dir", ":memory:"])?,
            "rest": server("rest-mcp-server", &[])?
        },
        "orchestrator": { "composites": { "customer_view": {
            "description": "A customer's last order and behaviour at once, then the stock of its first product.",
            "input": { "type": "object", "properties": { "customerId": { "type": "string" } } },
            "steps": {
                "orders": { "call": "sql.get_customer_orders",
                            "args": { "customerId": "${input.customerId}", "limit": 1 } },
                "behavior": { "call": "cosmos.get_user_behavior", "args": { "userId": "${input.customerId}" } },
                "stock": { "call": "rest.check_inventory",
                           "args": { "productId": "${orders.orders[0].lines[0].productId}" } }
            },
            "output": { "orders": "${orders}", "behavior": "${behavior}", "stock": "${stock}" }
        } } }
    });
    let config = Config::parse(&config.to_string(), Path::new("."), &|_| None)?;
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(std::time::Duration::from_secs(30)).await,
        "servers did not connect"
    );

    // The agent's span: the root of the trace when spans are exported.
    let root = tracing::info_span!(
        "agent",
        otel.name = "tools/call customer_view",
        otel.kind = "client"
    );
    let exported = kit::telemetry::trace_headers(&root).remove("traceparent");
    let traceparent = exported.clone().unwrap_or_else(|| {
        format!(
            "00-{:032x}-{:016x}-01",
            rand::random::<u128>(),
            rand::random::<u64>()
        )
    });
    let trace_id = traceparent.split('-').nth(1).unwrap_or_default().to_owned();
    // The agent's `_meta`: its trace context, and (for grepping logs) the trace id as correlation id.
    let mut meta = RequestMetaObject::default();
    meta.set_traceparent(traceparent.clone());
    meta.insert(kit::correlation::META_KEY.into(), trace_id.clone().into());
    let cx = CallContext {
        meta: Some(meta),
        ..CallContext::default()
    };
    let args = json!({ "customerId": "CUST-0013" });
    let result = gateway
        .call_tool("customer_view", args.as_object().cloned(), &cx)
        .instrument(root)
        .await?;
    anyhow::ensure!(
        result.is_error != Some(true),
        "customer_view failed: {result:?}"
    );

    println!("trace id: {trace_id}");
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()));
    match endpoint.filter(|_| telemetry.exporting()) {
        Some(endpoint) => println!(
            "  spans exported to {endpoint} by this process and the three servers; in Jaeger: \
             http://localhost:16686/trace/{trace_id}"
        ),
        None => println!(
            "  not exported (set OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 to send spans \
             to a collector); each server received _meta.traceparent {traceparent}"
        ),
    }
    println!(
        "  also sent as _meta.correlationId: each server's `tool call` log line (JSON, stderr) names it"
    );
    let meta = result.meta.clone().unwrap_or_default();
    println!("spans of the call (timings from _meta.sources):");
    println!(
        "  tools/call customer_view {:>42.1} ms",
        meta.get("elapsedMs").and_then(Value::as_f64).unwrap_or(0.0)
    );
    for s in meta
        .get("sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (server, tool) = (
            s["server"].as_str().unwrap_or("?"),
            s["tool"].as_str().unwrap_or("?"),
        );
        println!(
            "    step {:<9} {:<8} at {:>6.1} ms {:>12.1} ms",
            s["step"].as_str().unwrap_or("?"),
            s["outcome"].as_str().unwrap_or("?"),
            s["startedMs"].as_f64().unwrap_or(0.0),
            s["latencyMs"].as_f64().unwrap_or(0.0),
        );
        println!("      tools/call {tool} ({server}-mcp-server)");
    }
    gateway.shutdown().await;
    telemetry.shutdown().await;
    Ok(())
}
