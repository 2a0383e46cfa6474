//! `saga`: `place_order` writes across the three servers. Once whole (an order, its stock
//! reserved, a purchase event); once with the event refused and the reservation's release losing
//! its answers, so the order is cancelled, the stock released (once) and the result says so.

use anyhow::bail;
use orchestrator::gateway::Gateway;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use super::{Bins, Out, call, config, is_error, sources, start, str_of, text_of};
use crate::output::table;

/// The product the demo orders, and how many.
const PRODUCT: &str = "PROD-007";
const QUANTITY: u64 = 2;

/// A saga that completes, then one that fails at its last step and is undone.
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "saga",
        "place_order writes to SQL, REST and Cosmos as one saga: whole, or undone when a step fails",
    );
    // The saga log goes to a folder of its own, not beside the working directory.
    let log_dir =
        std::env::temp_dir().join(format!("mcp-orchestrator-demo-{}", std::process::id()));
    let log = log_dir.join("sagas.db");
    let with_log = |c: &mut Value| {
        c["orchestrator"]["sagas"] = json!({ "logPath": log.display().to_string() });
    };

    out.line("\nall three systems healthy:");
    let gw = start(config(bins.all(&[], &[], &[])?, with_log)?, out).await?;
    let whole = place(&gw, out, "CUST-0004").await;
    gw.shutdown().await;
    let whole = whole?;

    out.line(
        "\nCosmos refuses every record_event; REST loses the answer of half the \
         release_reservation calls after doing the work (seeded), and is not retried by its policy:",
    );
    let servers = bins.all(
        &[],
        &["--fail-tools", "record_event"],
        &[
            "--fault-tools",
            "release_reservation",
            "--failure-after-rate",
            "0.5",
            "--seed",
            "5",
        ],
    )?;
    let gw = start(
        config(servers, |c| {
            with_log(c);
            c["orchestrator"]["servers"]["rest"] = json!({ "retry": { "maxAttempts": 1 } });
            c["orchestrator"]["servers"]["cosmos"] = json!({ "retry": { "maxAttempts": 1 } });
        })?,
        out,
    )
    .await?;
    let undone = place(&gw, out, "CUST-0005").await;
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(json!({ "completed": whole, "compensated": undone? }))
}

/// One `place_order` on `gw`: the stock before and after, the order's status, and each step
/// with its settling and its undo.
async fn place(gw: &Gateway, out: &Out, customer: &str) -> anyhow::Result<Value> {
    let before = stock(gw).await?;
    let (r, elapsed) = call(
        gw,
        "place_order",
        json!({ "customerId": customer, "lines": [{ "productId": PRODUCT, "quantity": QUANTITY }] }),
    )
    .await?;
    let after = stock(gw).await?;
    let meta = r.meta.clone().unwrap_or_default();
    let saga = meta.get("saga").cloned().unwrap_or_default();
    let steps = sources(&r);
    // The order the saga made, found by the key it derived from its id.
    let order = order_of(gw, &str_of(&saga["id"])).await?;
    out.line(format!(
        "place_order {customer} ({QUANTITY} × {PRODUCT}) in {elapsed:.0} ms: saga {} `{}`; order {} `{}`; stock {before} → {after}",
        str_of(&saga["id"]),
        str_of(&saga["state"]),
        str_of(&order["id"]),
        str_of(&order["status"]),
    ));
    if is_error(&r) {
        out.line(format!("  the agent reads: {}", text_of(&r)));
    }
    let mut t = table(&[
        "step",
        "call",
        "outcome",
        "settled",
        "undo",
        "undo outcome",
        "attempts",
    ]);
    for s in &steps {
        let undo = &s["compensation"];
        t.add_row([
            str_of(&s["step"]),
            format!("{}.{}", str_of(&s["server"]), str_of(&s["tool"])),
            str_of(&s["outcome"]),
            match &s["settled"] {
                Value::Null => String::new(),
                v => format!(
                    "{} after {} replays",
                    str_of(&v["outcome"]),
                    str_of(&v["replays"])
                ),
            },
            str_of(&undo["call"]),
            str_of(&undo["outcome"]),
            str_of(&undo["attempts"]),
        ]);
    }
    out.table(t);
    out.trace(&r);
    let undos: Vec<Value> = steps
        .iter()
        .filter(|s| !s["compensation"].is_null())
        .map(|s| {
            json!({
                "step": s["step"],
                "call": s["compensation"]["call"],
                "outcome": s["compensation"]["outcome"],
                "attempts": s["compensation"]["attempts"],
            })
        })
        .collect();
    Ok(json!({
        "ms": elapsed,
        "sagaId": saga["id"],
        "state": saga["state"],
        "isError": is_error(&r),
        "orderStatus": order["status"],
        "stockBefore": before,
        "stockAfter": after,
        "quantity": QUANTITY,
        "undos": undos,
    }))
}

/// Units of [`PRODUCT`] on hand over every warehouse.
async fn stock(gw: &Gateway) -> anyhow::Result<u64> {
    let (r, _) = call(gw, "rest__check_inventory", json!({ "productId": PRODUCT })).await?;
    structured(&r)["items"][0]["totalQuantity"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no stock of {PRODUCT}: {}", text_of(&r)))
}

/// The order a saga made (`{id, status}`), found by its idempotency key; null if none.
async fn order_of(gw: &Gateway, saga: &str) -> anyhow::Result<Value> {
    let (r, _) = call(
        gw,
        "sql__query",
        json!({ "sql": "SELECT id, status FROM orders WHERE idempotency_key = ?1",
                "params": [format!("{saga}:order")] }),
    )
    .await?;
    if is_error(&r) {
        bail!("reading the saga's order: {}", text_of(&r));
    }
    let row = &structured(&r)["rows"][0];
    Ok(match row {
        Value::Array(cells) => json!({ "id": cells[0], "status": cells[1] }),
        _ => Value::Null,
    })
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or_default()
}
