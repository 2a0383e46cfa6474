//! `cache`: the cached `executive_dashboard`, a new order through `sql__create_order`, and the
//! dashboard again, recomputed with the new sale because the order invalidated its tag.

use anyhow::bail;
use orchestrator::gateway::Gateway;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use super::{Bins, Out, cached, call, config, is_error, start, str_of, text_of};
use crate::output::table;

/// Dashboard (cached), a new order, the dashboard again with the new sale.
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "cache",
        "cache invalidation: the cached dashboard, a new order (sql__create_order), the dashboard again with the new sale",
    );
    let gw = start(config(bins.all(&[], &[], &[])?, |_| {})?, out).await?;
    let outcome = steps(&gw, out).await;
    gw.shutdown().await;
    outcome
}

/// The calls and the table, on a started gateway.
async fn steps(gw: &Gateway, out: &Out) -> anyhow::Result<Value> {
    let revenue = |r: &CallToolResult| {
        r.structured_content
            .as_ref()
            .and_then(|c| c["revenue"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let (first, first_ms) = call(gw, "executive_dashboard", json!({})).await?;
    let (hit, hit_ms) = call(gw, "executive_dashboard", json!({})).await?;
    let (order, order_ms) = call(
        gw,
        "sql__create_order",
        json!({
            "customerId": "CUST-0100",
            "lines": [{ "productId": "PROD-001", "quantity": 2 }],
            "idempotencyKey": format!("demo-{}", std::process::id()),
        }),
    )
    .await?;
    if is_error(&order) {
        bail!("create_order failed: {}", text_of(&order));
    }
    let order_json = order.structured_content.clone().unwrap_or_default();
    let total = order_json["order"]["total"].as_f64().unwrap_or(0.0);
    let order_id = str_of(&order_json["order"]["orderId"]);
    let (after, after_ms) = call(gw, "executive_dashboard", json!({})).await?;
    let mut t = table(&["call", "cached", "revenue", "ms"]);
    t.add_row([
        "executive_dashboard".into(),
        cached(&first).to_string(),
        format!("{:.2}", revenue(&first)),
        format!("{first_ms:.1}"),
    ]);
    t.add_row([
        "executive_dashboard (again)".into(),
        cached(&hit).to_string(),
        format!("{:.2}", revenue(&hit)),
        format!("{hit_ms:.1}"),
    ]);
    t.add_row([
        format!("sql__create_order {order_id}"),
        String::new(),
        format!("+{total:.2}"),
        format!("{order_ms:.1}"),
    ]);
    t.add_row([
        "executive_dashboard (after the order)".into(),
        cached(&after).to_string(),
        format!("{:.2}", revenue(&after)),
        format!("{after_ms:.1}"),
    ]);
    out.table(t);
    out.line("create_order invalidates the `sales` tag the dashboard's steps carry, so the next call recomputes");
    out.trace(&after);
    Ok(json!({
        "revenueBefore": revenue(&first),
        "revenueAfter": revenue(&after),
        "orderTotal": total,
        "orderId": order_id,
        "firstMs": first_ms,
        "hitMs": hit_ms,
        "hitCached": cached(&hit),
        "afterCached": cached(&after),
    }))
}
