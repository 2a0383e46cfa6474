//! `record_event` on the real binary: one document per idempotency key, a different payload under
//! the same key refused, and a lost response that a retry recovers from; and `upsert_item`'s
//! `idempotencyKey` as an argument its schema lists.

mod common;

use anyhow::Context;
use common::{BIN, call_charged, charge};
use serde_json::{Value, json};
use testkit::{Client, TempDir, call, connect_stdio, error_kind, text_of};

fn args(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), dir.arg()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

fn event(key: &str, order_id: &str) -> Value {
    json!({
        "userId": "CUST-0011",
        "type": "order_placed",
        "payload": { "orderId": order_id, "amount": 42.5 },
        "idempotencyKey": key
    })
}

/// The user's events recorded with `key`, read through `query_items`.
async fn events_with_key(client: &Client, key: &str) -> anyhow::Result<Vec<Value>> {
    let (page, _) = call_charged(
        client,
        "query_items",
        json!({
            "container": "userEvents",
            "partitionKey": "CUST-0011",
            "filter": { "idempotencyKey": key }
        }),
    )
    .await?;
    Ok(page["items"].as_array().context("items")?.clone())
}

#[tokio::test]
async fn the_same_key_records_one_document_and_replays_it() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-record-event")?;
    let client = connect_stdio(BIN, &args(&dir, &[])).await?;

    let (first, first_charge) =
        call_charged(&client, "record_event", event("saga-7", "ORD-02001")).await?;
    assert_eq!(first["replayed"], false, "{first}");
    let doc = &first["event"];
    assert_eq!(doc["userId"], "CUST-0011");
    assert_eq!(doc["type"], "order_placed");
    assert_eq!(doc["orderId"], "ORD-02001");
    assert!(doc["timestamp"].is_string() && doc["_etag"].is_string());
    let (read, _) = call_charged(
        &client,
        "read_item",
        json!({"container": "userEvents", "id": doc["id"], "partitionKey": "CUST-0011"}),
    )
    .await?;
    assert_eq!(&read, doc, "stored in the user's partition");

    let (again, again_charge) =
        call_charged(&client, "record_event", event("saga-7", "ORD-02001")).await?;
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(
        &again["event"], doc,
        "the same document, same _etag and _ts"
    );
    assert!(
        again_charge < first_charge,
        "a replay is charged as a read: {again_charge} < {first_charge}"
    );
    assert_eq!(events_with_key(&client, "saga-7").await?, vec![doc.clone()]);

    let reused = call(&client, "record_event", event("saga-7", "ORD-02002")).await?;
    assert_eq!(
        error_kind(&reused).as_deref(),
        Some("conflict"),
        "{}",
        text_of(&reused)
    );
    assert!(
        text_of(&reused).contains("idempotencyKey"),
        "{}",
        text_of(&reused)
    );
    let meta = reused.meta.as_ref().context("error _meta")?;
    assert_eq!(meta.get("retryable"), Some(&json!(false)));
    assert!(charge(&reused)? > 0.0);
    assert_eq!(
        events_with_key(&client, "saga-7").await?,
        vec![doc.clone()],
        "the refused call wrote nothing"
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_lost_response_is_recovered_by_a_retry_with_the_same_key() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-record-event-lost")?;
    let flaky = connect_stdio(BIN, &args(&dir, &["--failure-after-rate", "1.0"])).await?;
    let lost = call(&flaky, "record_event", event("saga-lost", "ORD-02003")).await?;
    assert_eq!(
        error_kind(&lost).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&lost)
    );
    let meta = lost.meta.as_ref().context("error _meta")?;
    assert_eq!(meta.get("injected"), Some(&json!(true)));
    assert_eq!(meta.get("retryable"), Some(&json!(true)));
    assert!(lost.structured_content.is_none(), "the response was lost");
    flaky.cancel().await?;

    let healthy = connect_stdio(BIN, &args(&dir, &[])).await?;
    let stored = events_with_key(&healthy, "saga-lost").await?;
    assert_eq!(stored.len(), 1, "the event was recorded: {stored:?}");
    let (retried, _) =
        call_charged(&healthy, "record_event", event("saga-lost", "ORD-02003")).await?;
    assert_eq!(retried["replayed"], true, "{retried}");
    assert_eq!(retried["event"], stored[0]);
    assert_eq!(events_with_key(&healthy, "saga-lost").await?, stored);
    healthy.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn upsert_item_lists_its_idempotency_key_and_honours_it() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-upsert-key-schema")?;
    let client = connect_stdio(BIN, &args(&dir, &[])).await?;
    let tools = client.list_all_tools().await?;
    let upsert = tools
        .iter()
        .find(|t| t.name == "upsert_item")
        .context("upsert_item")?;
    let schema = &upsert.input_schema;
    let key = schema
        .get("properties")
        .and_then(|p| p.get("idempotencyKey"))
        .context("idempotencyKey is in the schema")?;
    assert!(
        key.get("description").and_then(Value::as_str).is_some(),
        "documented: {key}"
    );
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert!(
        !required.contains(&json!("idempotencyKey")),
        "optional: {required:?}"
    );

    let write = json!({
        "container": "sessions",
        "item": {"id": "SES-AGENT-1", "userId": "CUST-0012", "pageViews": 1},
        "idempotencyKey": "agent-key-1"
    });
    let (first, _) = call_charged(&client, "upsert_item", write.clone()).await?;
    let (again, _) = call_charged(&client, "upsert_item", write).await?;
    assert_eq!(again, first, "the agent's key replays the first write");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn per_tool_faults_and_the_ru_budget_refuse_it_before_it_writes() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-record-event-refused")?;
    let failing = connect_stdio(BIN, &args(&dir, &["--fail-tools", "record_event"])).await?;
    let refused = call(&failing, "record_event", event("saga-refused", "ORD-02004")).await?;
    assert_eq!(error_kind(&refused).as_deref(), Some("unavailable"));
    assert_eq!(charge(&refused)?, 0.0, "it never reached the store");
    failing.cancel().await?;

    // A 20 RU/s budget is spent by one or two cross-partition pages; the write is throttled too.
    let tight = connect_stdio(BIN, &args(&dir, &["--ru-per-second", "20"])).await?;
    let expensive = json!({"container": "userEvents", "limit": 100});
    let mut spent = false;
    for _ in 0..5 {
        let result = call(&tight, "query_items", expensive.clone()).await?;
        if error_kind(&result).as_deref() == Some("throttled") {
            spent = true;
            break;
        }
    }
    assert!(spent, "no throttling within five expensive calls");
    let throttled = call(&tight, "record_event", event("saga-refused", "ORD-02004")).await?;
    assert_eq!(
        error_kind(&throttled).as_deref(),
        Some("throttled"),
        "{}",
        text_of(&throttled)
    );
    tight.cancel().await?;

    let healthy = connect_stdio(BIN, &args(&dir, &[])).await?;
    assert!(
        events_with_key(&healthy, "saga-refused").await?.is_empty(),
        "neither refusal wrote"
    );
    let (recorded, _) =
        call_charged(&healthy, "record_event", event("saga-refused", "ORD-02004")).await?;
    assert_eq!(
        recorded["replayed"], false,
        "the first real write: {recorded}"
    );
    healthy.cancel().await?;
    Ok(())
}
