//! Writes: optimistic concurrency with `ifMatch`, idempotency keys, durability across a restart,
//! and analytics that follow the documents written.

mod common;

use anyhow::Context;
use common::{BIN, call_charged, charge};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, call, connect_stdio, error_kind};

fn args(dir: &TempDir) -> Vec<String> {
    vec!["--data-dir".into(), dir.arg()]
}

#[tokio::test]
async fn stale_if_match_conflicts_and_writes_survive_a_restart() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-restart")?;
    let client = connect_stdio(BIN, &args(&dir)).await?;

    let item =
        json!({"id": "SES-TEST-1", "userId": "CUST-0007", "device": "desktop", "pageViews": 3});
    let (first, _) = call_charged(
        &client,
        "upsert_item",
        json!({"container": "sessions", "item": item}),
    )
    .await?;
    let etag1 = first["_etag"].as_str().context("etag")?.to_owned();

    // Replace with the current etag: accepted, new etag.
    let mut changed = item.clone();
    changed["pageViews"] = json!(9);
    let (second, _) = call_charged(
        &client,
        "upsert_item",
        json!({"container": "sessions", "item": changed, "ifMatch": etag1}),
    )
    .await?;
    let etag2 = second["_etag"].as_str().context("etag")?.to_owned();
    assert_ne!(etag1, etag2);
    assert_eq!(second["pageViews"], 9);

    // Replace with the stale etag: conflict, nothing written, the current etag is reported.
    let mut lost_update = item.clone();
    lost_update["pageViews"] = json!(1);
    let stale = call(
        &client,
        "upsert_item",
        json!({"container": "sessions", "item": lost_update, "ifMatch": etag1}),
    )
    .await?;
    assert_eq!(error_kind(&stale).as_deref(), Some("conflict"));
    let err = kit::ToolError::from_call_tool_result(&stale).context("tool error")?;
    assert!(
        !err.retryable,
        "a stale etag is not fixed by repeating the call"
    );
    assert_eq!(err.extra_meta.get("currentEtag"), Some(&json!(etag2)));
    assert_eq!(charge(&stale)?, 1.0);

    // ifMatch on a document that does not exist is refused too.
    let ghost = call(
        &client,
        "upsert_item",
        json!({"container": "sessions", "item": {"id": "nope", "userId": "CUST-0007"}, "ifMatch": etag2}),
    )
    .await?;
    assert_eq!(error_kind(&ghost).as_deref(), Some("conflict"));
    client.cancel().await?;

    // A new process over the same directory sees the acknowledged write, not the refused one.
    let client = connect_stdio(BIN, &args(&dir)).await?;
    let (read, _) = call_charged(
        &client,
        "read_item",
        json!({"container": "sessions", "id": "SES-TEST-1", "partitionKey": "CUST-0007"}),
    )
    .await?;
    assert_eq!(read["_etag"], json!(etag2));
    assert_eq!(read["pageViews"], 9);
    assert_eq!(read["_ts"], second["_ts"]);
    let ghost = call(
        &client,
        "read_item",
        json!({"container": "sessions", "id": "nope", "partitionKey": "CUST-0007"}),
    )
    .await?;
    assert_eq!(error_kind(&ghost).as_deref(), Some("not_found"));
    // The seed was not applied a second time over the existing store.
    let (profiles, _) =
        call_charged(&client, "analyze_users", json!({"segment": "budget"})).await?;
    let budget = retail_seed::dataset()
        .customers
        .iter()
        .filter(|c| c.segment == "budget")
        .count() as u64;
    assert_eq!(profiles["userCount"].as_u64(), Some(budget));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_idempotency_key_replays_its_write_across_a_restart_and_refuses_another()
-> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-idempotency")?;
    let client = connect_stdio(BIN, &args(&dir)).await?;
    let keyed = |item: Value, key: &str| json!({"container": "sessions", "item": item, "idempotencyKey": key});
    let item = json!({"id": "SES-KEY-1", "userId": "CUST-0009", "pageViews": 2});
    let (first, first_charge) =
        call_charged(&client, "upsert_item", keyed(item.clone(), "order-77")).await?;
    client.cancel().await?;

    // A retry after a restart (the answer was lost, say): the first write's document, not a
    // new one: the same _etag and _ts, and charged as a read, not a write.
    let client = connect_stdio(BIN, &args(&dir)).await?;
    let (again, again_charge) =
        call_charged(&client, "upsert_item", keyed(item.clone(), "order-77")).await?;
    assert_eq!(again, first);
    assert!(
        again_charge < first_charge,
        "{again_charge} < {first_charge}"
    );

    // The same key for a different write: refused, naming the key's document; nothing written.
    let mut other = item.clone();
    other["pageViews"] = json!(5);
    let reused = call(&client, "upsert_item", keyed(other, "order-77")).await?;
    assert_eq!(error_kind(&reused).as_deref(), Some("conflict"));
    let err = kit::ToolError::from_call_tool_result(&reused).context("tool error")?;
    assert!(err.message.contains("SES-KEY-1"), "{}", err.message);
    let (read, _) = call_charged(
        &client,
        "read_item",
        json!({"container": "sessions", "id": "SES-KEY-1", "partitionKey": "CUST-0009"}),
    )
    .await?;
    assert_eq!(read, first);

    // A blank key is an argument error, not a write without a key.
    let blank = call(&client, "upsert_item", keyed(item, "  ")).await?;
    assert_eq!(error_kind(&blank).as_deref(), Some("invalid"));
    let err = kit::ToolError::from_call_tool_result(&blank).context("tool error")?;
    assert!(err.message.contains("idempotencyKey"), "{}", err.message);
    client.cancel().await?;
    Ok(())
}

/// Writes one document and returns it.
async fn put(client: &testkit::Client, container: &str, item: Value) -> anyhow::Result<Value> {
    Ok(call_charged(
        client,
        "upsert_item",
        json!({"container": container, "item": item}),
    )
    .await?
    .0)
}

#[tokio::test]
async fn analytics_are_derived_from_the_documents() -> anyhow::Result<()> {
    let client = connect_stdio(BIN, &["--data-dir".into(), ":memory:".into()]).await?;
    let user = "CUST-9001";
    let unknown = call(
        &client,
        "analyze_user_behavior",
        json!({"customerId": user}),
    )
    .await?;
    assert_eq!(error_kind(&unknown).as_deref(), Some("not_found"));

    put(&client, "profiles", json!({"id": user, "customerId": user, "segment": "premium", "region": "west", "marketingOptIn": true})).await?;
    // Three recent mobile sessions, each with an abandoned cart, and twelve views of books.
    for day in 1..=3 {
        let ts = format!("2026-10-2{day}T10:00:00Z");
        put(&client, "sessions", json!({"id": format!("S{day}"), "userId": user, "startedAt": ts, "endedAt": ts,
            "durationSeconds": 300, "device": "mobile", "pageViews": 4, "addedToCart": true, "purchased": false})).await?;
        for n in 0..4 {
            put(
                &client,
                "userEvents",
                json!({"id": format!("E{day}-{n}"), "userId": user, "type": "page_view",
                "category": "books", "timestamp": ts}),
            )
            .await?;
        }
    }
    let (b, _) = call_charged(&client, "get_user_behavior", json!({"userId": user})).await?;
    assert_eq!(b["pageViews"], 12);
    assert_eq!(b["sessions"], 3);
    assert_eq!(b["cartAbandonmentRate"], 1.0);
    assert_eq!(b["favoriteCategories"][0]["category"], "books");
    assert_eq!(b["mainDevice"], "mobile");
    assert_eq!(b["segment"], "premium");

    let (a, _) = call_charged(
        &client,
        "analyze_user_behavior",
        json!({"customerId": user}),
    )
    .await?;
    let actions: Vec<&str> = a["recommendations"]
        .as_array()
        .context("recommendations")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(actions.contains(&"cart_recovery"), "{actions:?}");
    assert!(actions.contains(&"first_purchase_incentive"), "{actions:?}");
    assert!(actions.contains(&"promote_category"), "{actions:?}");
    assert_eq!(a["signals"]["sessionsLast90Days"], 3);
    let before = a["engagementScore"].as_u64().context("score")?;

    // Converting every cart raises conversion and follow-through, so the score goes up.
    for day in 1..=3 {
        let ts = format!("2026-10-2{day}T10:00:00Z");
        put(&client, "sessions", json!({"id": format!("S{day}"), "userId": user, "startedAt": ts, "endedAt": ts,
            "durationSeconds": 300, "device": "mobile", "pageViews": 4, "addedToCart": true, "purchased": true})).await?;
    }
    let (after, _) = call_charged(
        &client,
        "analyze_user_behavior",
        json!({"customerId": user}),
    )
    .await?;
    assert!(after["engagementScore"].as_u64().context("score")? > before);
    assert_eq!(after["signals"]["cartAbandonmentRate"], 0.0);
    let actions: Vec<&str> = after["recommendations"]
        .as_array()
        .context("recommendations")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(!actions.contains(&"cart_recovery"), "{actions:?}");

    // The new premium customer now counts in the segment.
    let (seg, _) = call_charged(&client, "analyze_users", json!({"segment": "premium"})).await?;
    let premium = retail_seed::dataset()
        .customers
        .iter()
        .filter(|c| c.segment == "premium")
        .count() as u64;
    assert_eq!(seg["userCount"].as_u64(), Some(premium + 1));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_acknowledged_write_survives_a_killed_process() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-kill")?;
    let mut server = HttpServer::start(BIN, &args(&dir)).await?;
    let client = server.connect(None).await?;
    let (written, _) = call_charged(
        &client,
        "upsert_item",
        json!({"container": "userEvents", "item": {"id": "EVT-KILL-1", "userId": "CUST-0042",
               "type": "purchase", "amount": 99.5, "timestamp": "2026-10-30T09:00:00Z"}}),
    )
    .await?;
    // No graceful shutdown: SIGKILL right after the acknowledgement.
    server.child.kill().await?;
    drop(client);

    let server = HttpServer::start(BIN, &args(&dir)).await?;
    let client = server.connect(None).await?;
    let (read, _) = call_charged(
        &client,
        "read_item",
        json!({"container": "userEvents", "id": "EVT-KILL-1", "partitionKey": "CUST-0042"}),
    )
    .await?;
    assert_eq!(read, written);
    client.cancel().await?;
    server.stop().await?;
    Ok(())
}
