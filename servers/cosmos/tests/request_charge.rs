//! Request-unit charges in `_meta.requestCharge`, and throttling past the RU/s budget.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::{BIN, call_charged, charge};
use serde_json::{Value, json};
use testkit::{HttpServer, call, connect_stdio, error_kind};

#[tokio::test]
async fn cross_partition_queries_cost_more_than_single_partition_ones() -> anyhow::Result<()> {
    let client = connect_stdio(BIN, &["--data-dir".into(), ":memory:".into()]).await?;
    let (single, single_ru) = call_charged(
        &client,
        "query_items",
        json!({"container": "userEvents", "partitionKey": "CUST-0003", "limit": 10}),
    )
    .await?;
    assert_eq!(single["crossPartition"], false);
    let ids: Vec<Value> = single["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(ids.len(), 10);

    // The very same ten documents, found without naming the partition: a fan-out.
    let (cross, cross_ru) = call_charged(
        &client,
        "query_items",
        json!({"container": "userEvents", "filter": {"id": {"$in": ids}}, "limit": 10}),
    )
    .await?;
    assert_eq!(cross["crossPartition"], true);
    assert_eq!(cross["items"], single["items"]);
    assert!(
        cross_ru > single_ru,
        "cross {cross_ru} vs single {single_ru}"
    );
    assert!(
        (cross_ru - single_ru - 7.5).abs() < 0.011,
        "3 more physical partitions at 2.5 RU"
    );

    // An equality on the partition key field is routed to one partition, as the real planner does.
    let (pinned, pinned_ru) = call_charged(
        &client,
        "query_items",
        json!({"container": "userEvents", "filter": {"userId": "CUST-0003"}, "limit": 10}),
    )
    .await?;
    assert_eq!(pinned["crossPartition"], false);
    assert_eq!(pinned["items"], single["items"]);
    assert_eq!(pinned_ru, single_ru);

    // Bigger pages cost more; a point read of one of them costs 1 RU.
    let (_, big_ru) = call_charged(
        &client,
        "query_items",
        json!({"container": "userEvents", "partitionKey": "CUST-0003", "limit": 40}),
    )
    .await?;
    assert!(big_ru > single_ru);
    let (_, point_ru) = call_charged(
        &client,
        "read_item",
        json!({"container": "userEvents", "id": ids[0], "partitionKey": "CUST-0003"}),
    )
    .await?;
    assert_eq!(point_ru, 1.0);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_small_budget_throttles_until_the_window_refills() -> anyhow::Result<()> {
    let server = HttpServer::start(
        BIN,
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--ru-per-second".into(),
            "20".into(),
        ],
    )
    .await?;
    let client = server.connect(None).await?;
    // Each cross-partition page of 100 events costs about 19 RU: the 20 RU bucket is spent
    // after one or two of them.
    let expensive = json!({"container": "userEvents", "limit": 100});
    let mut throttled = None;
    for _ in 0..5 {
        let sent = Instant::now();
        let result = call(&client, "query_items", expensive.clone()).await?;
        if error_kind(&result).as_deref() == Some("throttled") {
            throttled = Some((result, sent));
            break;
        }
        assert!(charge(&result)? > 10.0);
    }
    let (throttled, sent) = throttled.context("no throttling within five expensive calls")?;
    let err = kit::ToolError::from_call_tool_result(&throttled).context("tool error")?;
    assert!(err.retryable);
    let wait = err.retry_after_ms.context("retryAfterMs")?;
    assert!(
        wait > 0 && wait <= 1000,
        "at most one second of refill: {wait}"
    );
    assert_eq!(charge(&throttled)?, 0.0, "a throttled call costs nothing");

    // Cheap calls are refused too while the bucket is overdrawn (provably so if the answer came
    // back before the hinted wait, counted from before the throttled call was even sent)...
    let cheap = json!({"container": "profiles", "id": "CUST-0001", "partitionKey": "CUST-0001"});
    let early = call(&client, "read_item", cheap.clone()).await?;
    if sent.elapsed() < Duration::from_millis(wait) {
        assert_eq!(error_kind(&early).as_deref(), Some("throttled"));
    }
    // ...and admitted once the hinted time has passed.
    let again = kit::ToolError::from_call_tool_result(&early)
        .and_then(|e| e.retry_after_ms)
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(again)).await;
    let (doc, ru) = call_charged(&client, "read_item", cheap).await?;
    assert_eq!(doc["id"], "CUST-0001");
    assert_eq!(ru, 1.0);
    client.cancel().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_default_budget_does_not_throttle_ordinary_use() -> anyhow::Result<()> {
    let client = connect_stdio(BIN, &["--data-dir".into(), ":memory:".into()]).await?;
    for _ in 0..10 {
        let result = call(&client, "get_user_behavior", json!({"userId": "CUST-0010"})).await?;
        assert_ne!(error_kind(&result).as_deref(), Some("throttled"));
        assert!(charge(&result)? > 0.0);
    }
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn injected_faults_report_a_zero_charge() -> anyhow::Result<()> {
    let client = connect_stdio(
        BIN,
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--fail-tools".into(),
            "read_item".into(),
        ],
    )
    .await?;
    let result = call(
        &client,
        "read_item",
        json!({"container": "profiles", "id": "CUST-0001", "partitionKey": "CUST-0001"}),
    )
    .await?;
    assert_eq!(error_kind(&result).as_deref(), Some("unavailable"));
    assert_eq!(charge(&result)?, 0.0);
    client.cancel().await?;
    Ok(())
}
