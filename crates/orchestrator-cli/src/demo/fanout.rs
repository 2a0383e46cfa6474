//! `fanout`: sequential-then-parallel (`order_details`) and fan-out/fan-in
//! (`top_customers_enriched` over 10 and 100 customers).

use anyhow::bail;
use serde_json::{Value, json};

use super::{Bins, Out, call, config, done, is_error, sources, sources_table, start, text_of};
use crate::output::table;

/// order_details (one call, then two in parallel) and top_customers_enriched (fan-out/fan-in).
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "fanout",
        "sequential-then-parallel (order_details) and fan-out/fan-in (top_customers_enriched), every call 100 ms",
    );
    let slow = ["--latency-ms", "100"];
    let gw = start(config(bins.all(&slow, &slow, &slow)?, |_| {})?, out).await?;
    let (order, order_ms) = call(&gw, "order_details", json!({ "orderId": "ORD-00042" })).await?;
    if is_error(&order) {
        bail!("order_details failed: {}", text_of(&order));
    }
    let order_sources = sources(&order);
    out.line(format!(
        "order_details ORD-00042 in {order_ms:.0} ms: the order first, then its shipping and stock together"
    ));
    out.table(sources_table(&order_sources));
    out.trace(&order);

    let mut runs = Vec::new();
    let mut t = table(&[
        "customers",
        "measured (ms)",
        "one by one would take (ms)",
        "Cosmos calls",
        "concurrency",
    ]);
    for limit in [10u64, 100] {
        let bar = out.spinner(format!("top_customers_enriched for {limit} customers"));
        let (r, elapsed) = call(&gw, "top_customers_enriched", json!({ "limit": limit })).await?;
        done(bar);
        if is_error(&r) {
            bail!("top_customers_enriched failed: {}", text_of(&r));
        }
        let customers = r
            .structured_content
            .as_ref()
            .and_then(|c| c["customers"].as_array())
            .map(Vec::len)
            .unwrap_or(0);
        let items = sources(&r)
            .iter()
            .find(|s| s["step"] == "analysis")
            .and_then(|s| s["items"].as_u64())
            .unwrap_or(0);
        t.add_row([
            customers.to_string(),
            format!("{elapsed:.0}"),
            format!("≈{}", (items + 1) * 100),
            items.to_string(),
            "8".into(),
        ]);
        runs.push(
            json!({ "limit": limit, "customers": customers, "ms": elapsed, "fanOutCalls": items }),
        );
    }
    out.line(
        "top_customers_enriched: one SQL call, then one Cosmos analysis per customer, 8 at a time",
    );
    out.table(t);
    gw.shutdown().await;
    Ok(json!({
        "orderDetails": { "ms": order_ms, "sources": order_sources },
        "topCustomers": runs,
    }))
}
