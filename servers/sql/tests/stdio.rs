//! The real `sql-mcp-server` binary over stdio.

mod common;

use rmcp::model::ReadResourceRequestParams;
use serde_json::json;
use testkit::{Lifecycle, TempDir, call, call_ok, connect_stdio, connect_stdio_with};

fn args(dir: &TempDir) -> Vec<String> {
    vec!["--data-dir".into(), dir.arg()]
}

#[tokio::test]
async fn lists_and_calls_every_tool_over_stdio() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-stdio")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    common::check_catalog(&client).await?;
    common::call_every_tool(&client, "stdio-every-tool").await?;
    common::check_errors(&client).await?;

    let resources = client.list_all_resources().await?;
    assert!(resources.iter().any(|r| r.uri == "sql://schema"));
    let schema = client
        .read_resource(ReadResourceRequestParams::new("sql://schema"))
        .await?;
    let text = format!("{:?}", schema.contents);
    assert!(text.contains("CREATE TABLE IF NOT EXISTS customers"));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn the_stateless_protocol_works_over_stdio() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-stdio-stateless")?;
    let client = connect_stdio_with("sql-mcp-server", &args(&dir), Lifecycle::Stateless).await?;
    let customer = call_ok(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    assert_eq!(customer["customerId"], "CUST-0003");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_order_survives_a_restart() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-restart")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let created = call_ok(
        &client,
        "create_order",
        json!({ "customerId": "CUST-0010", "lines": [{ "productId": "PROD-020", "quantity": 3 }], "idempotencyKey": "restart-1" }),
    )
    .await?;
    let order_id = created["order"]["orderId"].as_str().expect("id").to_owned();
    client.cancel().await?;

    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let order = call_ok(&client, "get_order_details", json!({ "orderId": order_id })).await?;
    assert_eq!(order["customerId"], "CUST-0010");
    assert_eq!(order["lines"][0]["quantity"], 3);
    // The key still maps to the same order after the restart.
    let again = call_ok(
        &client,
        "create_order",
        json!({ "customerId": "CUST-0010", "lines": [{ "productId": "PROD-020", "quantity": 3 }], "idempotencyKey": "restart-1" }),
    )
    .await?;
    assert_eq!(again["created"], false);
    assert_eq!(again["order"]["orderId"], order["orderId"]);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn twenty_concurrent_calls_with_one_key_create_one_order() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-concurrent")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let count = |c| async move {
        let rows = call_ok(c, "query", json!({ "sql": "SELECT COUNT(*) FROM orders" })).await?;
        anyhow::Ok(rows["rows"][0][0].as_i64().unwrap_or(-1))
    };
    let before = count(&client).await?;
    let calls = (0..20).map(|_| {
        call(
            &client,
            "create_order",
            json!({ "customerId": "CUST-0042", "lines": [{ "productId": "PROD-005", "quantity": 1 }], "idempotencyKey": "one-key" }),
        )
    });
    let results = futures::future::join_all(calls).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for r in results {
        let r = r?;
        let v = r.structured_content.expect("structured");
        created += usize::from(v["created"] == true);
        ids.insert(
            v["order"]["orderId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(count(&client).await?, before + 1);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn injected_faults_are_retryable_tool_errors() -> anyhow::Result<()> {
    let mut a = vec!["--data-dir".to_owned(), ":memory:".to_owned()];
    a.extend(["--fail-tools".to_owned(), "get_customer".to_owned()]);
    let client = connect_stdio("sql-mcp-server", &a).await?;
    let failed = call(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    assert_eq!(failed.is_error, Some(true));
    let meta = failed.meta.as_ref().expect("meta");
    assert_eq!(meta.get("errorKind"), Some(&json!("unavailable")));
    assert_eq!(meta.get("retryable"), Some(&json!(true)));
    // Other tools are untouched and the process is still up.
    call_ok(
        &client,
        "get_order_details",
        json!({ "orderId": "ORD-00002" }),
    )
    .await?;
    client.cancel().await?;
    Ok(())
}
