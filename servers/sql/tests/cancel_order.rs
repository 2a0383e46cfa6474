//! `cancel_order` on the real `sql-mcp-server` binary: once per order, unknown orders named, and a
//! lost response that a retry recovers from.

use serde_json::{Value, json};
use testkit::{Client, TempDir, call, call_ok, connect_stdio, error_kind, text_of};

fn args(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), dir.arg()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// A new order of the test's own, so the test does not depend on which seeded orders are open.
async fn new_order(client: &Client, key: &str) -> anyhow::Result<String> {
    let created = call_ok(
        client,
        "create_order",
        json!({
            "customerId": "CUST-0003",
            "lines": [{ "productId": "PROD-002", "quantity": 1 }],
            "idempotencyKey": key
        }),
    )
    .await?;
    Ok(created["order"]["orderId"]
        .as_str()
        .expect("orderId")
        .to_owned())
}

/// The order's row as `query` reads it: status, cancelled_at, cancel_reason.
async fn order_row(client: &Client, order_id: &str) -> anyhow::Result<Value> {
    let rows = call_ok(
        client,
        "query",
        json!({
            "sql": "SELECT status, cancelled_at, cancel_reason FROM orders WHERE id = ?1",
            "params": [order_id]
        }),
    )
    .await?;
    assert_eq!(rows["rowCount"], 1, "{rows}");
    Ok(rows["rows"][0].clone())
}

#[tokio::test]
async fn cancelling_twice_cancels_once_and_says_so() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-cancel-twice")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir, &[])).await?;
    let order_id = new_order(&client, "cancel-twice").await?;

    let first = call_ok(
        &client,
        "cancel_order",
        json!({ "orderId": order_id, "reason": "customer changed their mind" }),
    )
    .await?;
    assert_eq!(first["alreadyCancelled"], false, "{first}");
    assert_eq!(first["order"]["status"], "cancelled");
    assert_eq!(first["reason"], "customer changed their mind");
    let row = order_row(&client, &order_id).await?;
    assert_eq!(row[0], "cancelled");
    assert_eq!(row[1], first["cancelledAt"]);

    let second = call_ok(
        &client,
        "cancel_order",
        json!({ "orderId": order_id, "reason": "a second thought" }),
    )
    .await?;
    assert_eq!(second["alreadyCancelled"], true, "{second}");
    assert_eq!(second["cancelledAt"], first["cancelledAt"]);
    assert_eq!(second["reason"], "customer changed their mind");
    assert_eq!(order_row(&client, &order_id).await?, row, "row unchanged");

    let details = call_ok(&client, "get_order_details", json!({ "orderId": order_id })).await?;
    assert_eq!(details["status"], "cancelled");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_unknown_order_is_a_non_retryable_error_naming_it() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-cancel-unknown")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir, &[])).await?;
    let result = call(
        &client,
        "cancel_order",
        json!({ "orderId": "ORD-99999", "reason": "test" }),
    )
    .await?;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(error_kind(&result).as_deref(), Some("not_found"));
    assert!(
        text_of(&result).contains("ORD-99999"),
        "{}",
        text_of(&result)
    );
    let meta = result.meta.as_ref().expect("error _meta");
    assert_eq!(meta.get("retryable"), Some(&json!(false)));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_lost_cancellation_happened_and_the_retry_says_already_cancelled() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-cancel-lost")?;
    let healthy = connect_stdio("sql-mcp-server", &args(&dir, &[])).await?;
    let order_id = new_order(&healthy, "cancel-lost").await?;
    healthy.cancel().await?;

    let cancel = json!({ "orderId": order_id, "reason": "payment failed" });
    let flaky = connect_stdio(
        "sql-mcp-server",
        &args(&dir, &["--failure-after-rate", "1.0"]),
    )
    .await?;
    let lost = call(&flaky, "cancel_order", cancel.clone()).await?;
    assert_eq!(
        error_kind(&lost).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&lost)
    );
    let meta = lost.meta.as_ref().expect("error _meta");
    assert_eq!(meta.get("injected"), Some(&json!(true)));
    assert_eq!(meta.get("retryable"), Some(&json!(true)));
    assert!(lost.structured_content.is_none(), "the response was lost");
    flaky.cancel().await?;

    let healthy = connect_stdio("sql-mcp-server", &args(&dir, &[])).await?;
    let row = order_row(&healthy, &order_id).await?;
    assert_eq!(row[0], "cancelled", "the cancellation happened: {row}");
    assert_eq!(row[2], "payment failed");
    let retried = call_ok(&healthy, "cancel_order", cancel).await?;
    assert_eq!(retried["alreadyCancelled"], true, "{retried}");
    assert_eq!(retried["cancelledAt"], row[1]);
    assert_eq!(order_row(&healthy, &order_id).await?, row, "row unchanged");
    healthy.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_tool_configured_to_fail_cancels_nothing() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-cancel-fail-tools")?;
    let healthy = connect_stdio("sql-mcp-server", &args(&dir, &[])).await?;
    let order_id = new_order(&healthy, "cancel-fail-tools").await?;
    healthy.cancel().await?;

    let failing = connect_stdio(
        "sql-mcp-server",
        &args(&dir, &["--fail-tools", "cancel_order"]),
    )
    .await?;
    let refused = call(
        &failing,
        "cancel_order",
        json!({ "orderId": order_id, "reason": "never happens" }),
    )
    .await?;
    assert_eq!(error_kind(&refused).as_deref(), Some("unavailable"));
    let row = order_row(&failing, &order_id).await?;
    assert_eq!(row[0], "processing", "nothing was cancelled: {row}");
    failing.cancel().await?;
    Ok(())
}
