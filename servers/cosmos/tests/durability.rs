//! Durability: `kill -9` of `cosmos-mcp-server` in the middle of a stream of `upsert_item` calls
//! loses no acknowledged document, and no document is ever stored twice.
//!
//! Why it holds: each upsert is one `BEGIN IMMEDIATE` transaction on a SQLite file in WAL mode
//! with `synchronous = FULL` (`src/store.rs`), and the tool answers (with the new `_etag`) only
//! after `COMMIT` has written the transaction to the `-wal` file (and fsynced it). A killed process
//! cannot take back what the OS already holds, so even `synchronous = NORMAL` would pass this test;
//! FULL also survives an OS crash. On restart SQLite replays the committed WAL frames and drops an
//! uncommitted tail. Documents are keyed `(container, partition key, id)`, so a re-sent document
//! replaces itself instead of adding a copy.

mod common;

use std::collections::{HashMap, HashSet};

use anyhow::{Context, ensure};
use common::{BIN, call_charged};
use serde_json::{Value, json};
use testkit::{
    HttpServer, TempDir,
    write_stream::{Outcome, WriteStream, kill_mid_stream},
};

/// Documents the stream may write; the kill comes long before the last.
const DOCS: usize = 400;
/// Calls kept in flight at once, so several are mid-way when the process dies.
const IN_FLIGHT: usize = 6;
/// Acknowledged writes to wait for before the kill.
const KILL_AFTER: usize = 40;
/// The container written, partitioned by `/customerId`.
const CONTAINER: &str = "profiles";
/// A field only this test's documents carry, to find them all.
const MARK: &str = "kill9-durability";

fn id(i: usize) -> String {
    format!("KILL9-{i:04}")
}

/// Document `i`, its own partition (profiles are one per customer).
fn doc(i: usize) -> Value {
    json!({
        "id": id(i),
        "customerId": id(i),
        "test": MARK,
        "seq": i,
        "segment": "budget",
        "tags": ["durable", format!("n{}", i % 7)],
    })
}

/// Every document of this test in the container, by a cross-partition query (one page).
async fn stored(client: &testkit::Client) -> anyhow::Result<Vec<Value>> {
    let (page, _) = call_charged(
        client,
        "query_items",
        json!({ "container": CONTAINER, "filter": { "test": MARK }, "limit": 1000 }),
    )
    .await?;
    ensure!(page["continuationToken"].is_null(), "one page holds them");
    Ok(page["items"].as_array().context("items")?.clone())
}

/// Occurrences of each id among `docs`.
fn per_id(docs: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in docs {
        *counts
            .entry(d["id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_write_and_duplicates_none() -> anyhow::Result<()> {
    let dir = TempDir::new("cosmos-kill9")?;
    let args = vec!["--data-dir".to_owned(), dir.arg()];

    // 1. A stream of writes, IN_FLIGHT at a time, and SIGKILL once KILL_AFTER are acknowledged.
    let mut server = HttpServer::start(BIN, &args).await?;
    let Outcome { sent, acked } = kill_mid_stream(
        &mut server,
        WriteStream {
            tool: "upsert_item",
            max: DOCS,
            in_flight: IN_FLIGHT,
            kill_after: KILL_AFTER,
            args: |i| json!({ "container": CONTAINER, "item": doc(i) }),
            ack: |written: Value| written["_etag"].is_string().then_some(written),
        },
    )
    .await?;

    // 2. Restart on the same directory.
    let server = HttpServer::start(BIN, &args).await?;
    let client = server.connect(None).await?;

    // Every acknowledged document reads back exactly as acknowledged: body, `_etag` and `_ts`.
    for (i, written) in &acked {
        let (read, _) = call_charged(
            &client,
            "read_item",
            json!({ "container": CONTAINER, "id": id(*i), "partitionKey": id(*i) }),
        )
        .await
        .with_context(|| format!("acknowledged document {} is lost", id(*i)))?;
        assert_eq!(&read, written, "{} reads back as acknowledged", id(*i));
    }
    // Each id once; nothing that was not sent; every stored body whole.
    let before = stored(&client).await?;
    let counts = per_id(&before);
    assert!(counts.values().all(|n| *n == 1), "an id is stored twice");
    for d in &before {
        let i = d["seq"].as_u64().context("seq")? as usize;
        assert!(i < sent, "{} was never sent", d["id"]);
        let mut body = d.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("_etag");
            fields.remove("_ts");
        }
        assert_eq!(body, doc(i), "{} is stored whole", d["id"]);
    }
    for i in acked.keys() {
        assert!(counts.contains_key(&id(*i)), "{} is listed", id(*i));
    }
    eprintln!(
        "sent {sent}, acknowledged {}, committed {} (so {} committed without an answer)",
        acked.len(),
        before.len(),
        before.len() - acked.len()
    );

    // 3. Re-send every document sent. An acknowledged one is replaced under its acknowledged
    //    `_etag` as `ifMatch` (accepted only because that etag is the stored one); the others
    //    plainly. No re-send adds a copy.
    for i in 0..sent {
        let mut args = json!({ "container": CONTAINER, "item": doc(i) });
        if let Some(written) = acked.get(&i) {
            args["ifMatch"] = written["_etag"].clone();
        }
        let (again, _) = call_charged(&client, "upsert_item", args).await?;
        assert_eq!(again["id"], id(i));
    }
    let after = stored(&client).await?;
    let counts = per_id(&after);
    assert_eq!(counts.len(), sent, "every document sent is stored");
    assert!(counts.values().all(|n| *n == 1), "one document per id");
    let ids: HashSet<String> = (0..sent).map(id).collect();
    assert!(counts.keys().all(|k| ids.contains(k)));
    client.cancel().await?;
    server.stop().await
}
