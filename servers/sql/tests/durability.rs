//! Durability: `kill -9` of `sql-mcp-server` in the middle of a stream of `create_order` calls
//! loses no acknowledged order and duplicates none, and every idempotency key still works after
//! the restart.
//!
//! Why it holds: each order is one `BEGIN IMMEDIATE` transaction on a database in WAL mode with
//! `synchronous = FULL` (`src/db.rs`). `COMMIT` returns only once the transaction's frames are
//! written to the `-wal` file (and, with FULL, fsynced), and the tool answers only after `COMMIT`,
//! so an acknowledged order is in the file before the caller hears of it. Killing the process
//! (unlike losing power) cannot lose what the OS already holds, so even `synchronous = NORMAL`
//! would pass this test; FULL also survives an OS crash. On the next open SQLite replays the
//! committed WAL frames and ignores a torn, uncommitted tail, so a transaction cut short by the
//! kill leaves nothing behind: no order without its lines.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, ensure};
use futures::StreamExt;
use serde_json::{Value, json};
use testkit::{
    HttpServer, TempDir, call_ok,
    write_stream::{Outcome, WriteStream, kill_mid_stream},
};

/// Keys the stream may send; the kill comes long before the last.
const KEYS: usize = 400;
/// Calls kept in flight at once, so several are mid-way when the process dies.
const IN_FLIGHT: usize = 6;
/// Acknowledged orders to wait for before the kill.
const KILL_AFTER: usize = 40;
/// Prefix of this test's idempotency keys.
const PREFIX: &str = "kill9-";

fn key(i: usize) -> String {
    format!("{PREFIX}{i:04}")
}

/// The order sent with key `i`: two lines, so a half-written order would show.
fn order(i: usize) -> Value {
    json!({
        "customerId": format!("CUST-{:04}", i % retail_seed::CUSTOMER_COUNT + 1),
        "lines": [
            { "productId": format!("PROD-{:03}", i % retail_seed::PRODUCT_COUNT + 1), "quantity": i % 5 + 1 },
            { "productId": format!("PROD-{:03}", (i + 25) % retail_seed::PRODUCT_COUNT + 1), "quantity": 1 }
        ],
        "idempotencyKey": key(i),
    })
}

/// Runs one read-only statement through the `query` tool; returns its rows.
async fn rows(client: &testkit::Client, sql: &str) -> anyhow::Result<Vec<Value>> {
    let out = call_ok(client, "query", json!({ "sql": sql })).await?;
    ensure!(out["truncated"] == false, "{sql}: rows were cut");
    Ok(out["rows"].as_array().context("rows")?.clone())
}

/// This test's orders in the file: key → (order id, number of lines).
async fn stored(client: &testkit::Client) -> anyhow::Result<HashMap<String, (String, i64)>> {
    let sql = format!(
        "SELECT o.idempotency_key, o.id, COUNT(l.line_no) FROM orders o
         LEFT JOIN order_lines l ON l.order_id = o.id
         WHERE o.idempotency_key LIKE '{PREFIX}%' GROUP BY o.id"
    );
    let mut out = HashMap::new();
    for row in rows(client, &sql).await? {
        let key = row[0].as_str().context("key")?.to_owned();
        let id = row[1].as_str().context("id")?.to_owned();
        let lines = row[2].as_i64().context("line count")?;
        ensure!(
            out.insert(key.clone(), (id, lines)).is_none(),
            "key {key} is stored twice"
        );
    }
    Ok(out)
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_order_and_duplicates_none() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-kill9")?;
    let args = vec!["--data-dir".to_owned(), dir.arg()];

    // 1. A stream of writes, IN_FLIGHT at a time, and SIGKILL once KILL_AFTER are acknowledged.
    let mut server = HttpServer::start("sql-mcp-server", &args).await?;
    let Outcome { sent, acked } = kill_mid_stream(
        &mut server,
        WriteStream {
            tool: "create_order",
            max: KEYS,
            in_flight: IN_FLIGHT,
            kill_after: KILL_AFTER,
            args: order,
            ack: |created: Value| Some(created["order"].clone()),
        },
    )
    .await?;

    // 2. Restart on the same directory.
    let server = HttpServer::start("sql-mcp-server", &args).await?;
    let client = server.connect(None).await?;
    let before = stored(&client).await?;

    // Every acknowledged order is there, once, whole and unchanged.
    for (i, acked_order) in &acked {
        let (id, _) = before
            .get(&key(*i))
            .with_context(|| format!("acknowledged order {} is lost", key(*i)))?;
        assert_eq!(Some(id.as_str()), acked_order["orderId"].as_str());
        let read = call_ok(&client, "get_order_details", json!({ "orderId": id })).await?;
        assert_eq!(&read, acked_order, "{} reads back as acknowledged", key(*i));
    }
    // Nothing beyond what was sent, and no order without its lines (a cut transaction is gone).
    for (k, (id, lines)) in &before {
        let i: usize = k[PREFIX.len()..].parse()?;
        assert!(i < sent, "{k} was never sent but {id} exists");
        assert_eq!(*lines, 2, "{k} ({id}) has {lines} of its 2 lines");
    }
    eprintln!(
        "sent {sent}, acknowledged {}, committed {} (so {} committed without an answer)",
        acked.len(),
        before.len(),
        before.len() - acked.len()
    );

    // 3. Re-send every key sent: acknowledged or committed keys give back their order, the rest
    //    are created now, and no key makes a second order.
    let resent: Vec<(usize, Value)> = futures::stream::iter(0..sent)
        .map(|i| {
            let client = &client;
            async move {
                let created = call_ok(client, "create_order", order(i)).await?;
                anyhow::Ok((i, created))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut ids = HashSet::new();
    for (i, again) in &resent {
        let id = again["order"]["orderId"].as_str().context("orderId")?;
        ids.insert(id.to_owned());
        match before.get(&key(*i)) {
            Some((stored_id, _)) => {
                assert_eq!(again["created"], false, "{} is not created twice", key(*i));
                assert_eq!(id, stored_id);
                if let Some(acked_order) = acked.get(i) {
                    assert_eq!(&again["order"], acked_order);
                }
            }
            None => assert_eq!(again["created"], true, "{} is new", key(*i)),
        }
    }
    assert_eq!(ids.len(), sent, "one order per key");
    let counts = rows(
        &client,
        &format!(
            "SELECT COUNT(*), COUNT(DISTINCT idempotency_key),
                    (SELECT COUNT(*) FROM orders)
             FROM orders WHERE idempotency_key LIKE '{PREFIX}%'"
        ),
    )
    .await?;
    assert_eq!(
        counts[0],
        json!([sent, sent, retail_seed::ORDER_COUNT + sent]),
        "one row per key, and no other rows"
    );
    client.cancel().await?;
    server.stop().await
}
