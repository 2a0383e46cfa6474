//! The `place_order` saga of the repo's mcp.json against the real servers: SQL `create_order`,
//! REST `reserve_stock`, Cosmos `record_event`; a failure undoes what already happened
//! (`release_reservation`, `cancel_order`), so the three systems never disagree.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use testkit::{TempDir, bin_path};

/// The repo's mcp.json with its servers started from `dir`, the Cosmos server given `cosmos`
/// extra arguments (fault injection).
fn start(dir: &TempDir, cosmos: &[&str]) -> anyhow::Result<Arc<Gateway>> {
    let faults = Faults {
        cosmos,
        ..Faults::default()
    };
    start_with(dir, faults, json!({}))
}

/// Extra arguments (fault injection) for each server.
#[derive(Default)]
struct Faults<'a> {
    sql: &'a [&'a str],
    rest: &'a [&'a str],
    cosmos: &'a [&'a str],
}

/// The repo's mcp.json with its servers started from `dir` with `faults`, and `policies`
/// merged into `orchestrator.servers` (`{"rest": {"retry": ...}}`).
fn start_with(dir: &TempDir, faults: Faults<'_>, policies: Value) -> anyhow::Result<Arc<Gateway>> {
    gateway_of(config_of(dir, faults, policies)?)
}

/// [`start_with`]'s configuration, to change before it starts.
fn config_of(dir: &TempDir, faults: Faults<'_>, policies: Value) -> anyhow::Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let with = |mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let data = |name: &str| {
        vec![
            "--data-dir".to_owned(),
            dir.path().join(name).display().to_string(),
        ]
    };
    config["mcpServers"] = json!({
        "sql": { "command": bin_path("sql-mcp-server")?, "args": with(data("sql"), faults.sql) },
        "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": with(data("cosmos"), faults.cosmos) },
        "rest": { "command": bin_path("rest-mcp-server")?, "args": with(Vec::new(), faults.rest) }
    });
    // The saga log in the test's folder, not beside the working directory.
    config["orchestrator"]["sagas"] = json!({ "logPath": dir.path().join("sagas.db") });
    if let Some(policies) = policies.as_object() {
        for (server, policy) in policies {
            for (field, value) in policy.as_object().into_iter().flatten() {
                config["orchestrator"]["servers"][server][field] = value.clone();
            }
        }
    }
    Ok(config)
}

fn gateway_of(config: Value) -> anyhow::Result<Arc<Gateway>> {
    let config = Config::parse(&config.to_string(), std::path::Path::new("."), &|_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Gateway::start(config))
}

async fn call(gw: &Gateway, tool: &str, args: Value) -> anyhow::Result<CallToolResult> {
    gw.call_tool(tool, args.as_object().cloned(), &CallContext::default())
        .await
        .map_err(|e| anyhow::anyhow!("{tool}: {e}"))
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or_default()
}

/// Units of `product` on hand over every warehouse.
async fn stock(gw: &Gateway, product: &str) -> anyhow::Result<u64> {
    let r = call(gw, "rest__check_inventory", json!({ "productId": product })).await?;
    structured(&r)["items"][0]["totalQuantity"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no stock in {r:?}"))
}

/// Purchase events recorded for `order`.
async fn events_of(gw: &Gateway, user: &str, order: &str) -> anyhow::Result<usize> {
    let r = call(
        gw,
        "cosmos__query_items",
        json!({ "container": "userEvents", "partitionKey": user,
                "filter": { "type": "purchase", "orderId": order } }),
    )
    .await?;
    Ok(structured(&r)["count"].as_u64().unwrap_or(0) as usize)
}

async fn order_status(gw: &Gateway, order: &str) -> anyhow::Result<String> {
    let r = call(gw, "sql__get_order_details", json!({ "orderId": order })).await?;
    let s = structured(&r);
    Ok(s["order"]["status"]
        .as_str()
        .or_else(|| s["status"].as_str())
        .unwrap_or_default()
        .to_owned())
}

fn place(customer: &str, product: &str, quantity: u64) -> Value {
    json!({ "customerId": customer, "lines": [{ "productId": product, "quantity": quantity }] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_exists_in_all_three_systems() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-ok")?;
    let gw = start(&dir, &[])?;
    anyhow::ensure!(gw.wait_ready(std::time::Duration::from_secs(30)).await);
    let before = stock(&gw, "PROD-001").await?;
    let r = call(&gw, "place_order", place("CUST-0001", "PROD-001", 2)).await?;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let out = structured(&r);
    let order = out["orderId"].as_str().expect("an order id").to_owned();
    let meta = r.meta.clone().unwrap_or_default();
    assert_eq!(
        meta.get("saga").map(|s| s["state"].clone()),
        Some(json!("completed"))
    );
    assert_eq!(order_status(&gw, &order).await?, "processing");
    assert_eq!(stock(&gw, "PROD-001").await?, before - 2, "stock went down");
    assert_eq!(
        events_of(&gw, "CUST-0001", &order).await?,
        1,
        "one purchase event"
    );
    // One entry in the saga log, `completed`, its steps written down in order.
    let log = orchestrator::saga_log::SagaLog::open(
        &dir.path().join("sagas.db"),
        10_000,
        Box::new(|_| {}),
    )?;
    let sagas = log.recent(10)?;
    assert_eq!(sagas.len(), 1, "{sagas:?}");
    assert_eq!(sagas[0].state, "completed");
    assert_eq!(
        Some(sagas[0].id.as_str()),
        meta.get("saga").and_then(|s| s["id"].as_str())
    );
    let steps: Vec<String> = sagas[0]
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["step"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "order launched",
            "order succeeded",
            "stock launched",
            "stock succeeded",
            "event launched",
            "event succeeded"
        ]
    );
    // Every write of the shipped saga can be undone, or runs after every other step.
    let problems = orchestrator::status::StatusReport::of(&gw).catalog_problems;
    assert!(
        !problems.iter().any(|p| p.message.contains("saga")),
        "{problems:?}"
    );
    gw.shutdown().await;
    Ok(())
}

/// A service's saga log stays bounded: past `keepEnded`, the oldest sagas that ended well are
/// deleted with their steps and counted in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_log_keeps_the_most_recent_ended_sagas() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-keep")?;
    let mut config = config_of(&dir, Faults::default(), json!({}))?;
    config["orchestrator"]["sagas"]["keepEnded"] = json!(2);
    let gw = gateway_of(config)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = call(&gw, "place_order", place("CUST-0002", "PROD-002", 1)).await?;
        assert_ne!(r.is_error, Some(true), "{r:?}");
        let meta = r.meta.clone().unwrap_or_default();
        ids.push(meta["saga"]["id"].as_str().expect("a saga id").to_owned());
    }
    // Pruned every 2 ends: after the fifth end, the two latest are left and one more at most.
    let log = gw
        .calls()
        .composites()
        .existing_saga_log()
        .context("the saga log is open")?;
    let shown: Vec<String> = log.recent(10)?.into_iter().map(|s| s.id).collect();
    assert!(
        (2..=3).contains(&shown.len()) && shown[..2] == [ids[4].clone(), ids[3].clone()],
        "{shown:?} of {ids:?}"
    );
    let pruned = orchestrator::status::StatusReport::of(&gw).sagas.log_pruned;
    assert_eq!(pruned as usize, 5 - shown.len());
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_releases_the_stock_and_cancels_the_order() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-undo")?;
    let gw = start(&dir, &["--fail-tools", "record_event"])?;
    anyhow::ensure!(gw.wait_ready(std::time::Duration::from_secs(30)).await);
    let before = stock(&gw, "PROD-002").await?;
    let r = call(&gw, "place_order", place("CUST-0002", "PROD-002", 3)).await?;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let text = testkit::text_of(&r);
    assert!(
        text.contains("`event`") && text.contains("compensated"),
        "the error names the step and says it was undone: {text}"
    );
    let meta = r.meta.clone().unwrap_or_default();
    assert_eq!(
        meta.get("saga").map(|s| s["state"].clone()),
        Some(json!("compensated")),
        "{meta:?}"
    );
    let sources = meta.get("sources").cloned().unwrap_or_default();
    let line = |step: &str| {
        sources
            .as_array()
            .and_then(|a| a.iter().find(|s| s["step"] == step).cloned())
            .unwrap_or_default()
    };
    assert_eq!(
        line("stock")["compensation"]["outcome"],
        "compensated",
        "{sources}"
    );
    assert_eq!(
        line("order")["compensation"]["outcome"],
        "compensated",
        "{sources}"
    );
    assert_eq!(
        stock(&gw, "PROD-002").await?,
        before,
        "the reservation was released"
    );
    // The order the saga created (found by the idempotency key it derived from its id) is
    // cancelled, and is the only one.
    let saga_id = meta
        .get("saga")
        .and_then(|s| s["id"].as_str())
        .expect("a saga id")
        .to_owned();
    let orders = call(
        &gw,
        "sql__query",
        json!({ "sql": "SELECT id, status FROM orders WHERE idempotency_key = ?1",
                "params": [format!("{saga_id}:order")] }),
    )
    .await?;
    let rows = structured(&orders)["rows"].clone();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{orders:?}");
    assert_eq!(rows[0][1], "cancelled", "{orders:?}");
    gw.shutdown().await;
    Ok(())
}

/// The repo's mcp.json as a file in `dir` (so the saga log lands in `dir/data/orchestrator`),
/// its servers keeping their data in `dir`, the REST server reached over HTTP at `rest` (it runs
/// on its own, as in a deployment: a crash of the orchestrator does not take it, and its
/// reservations, along), `place_order` recovered as `recovery` says.
fn config_file(dir: &TempDir, rest: &str, recovery: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    config["mcpServers"] = json!({
        "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", dir.path().join("sql")] },
        "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", dir.path().join("cosmos")] },
        "rest": { "type": "http", "url": rest }
    });
    config["orchestrator"]["reload"] = json!({ "watch": false });
    config["orchestrator"]["composites"]["place_order"]["recovery"] = json!(recovery);
    let file = dir.path().join("mcp.json");
    std::fs::write(&file, serde_json::to_string_pretty(&config)?)?;
    Ok(file)
}

/// `mcp-orchestrator serve` over stdio on `config`, and its pid.
async fn serve(config: &std::path::Path) -> anyhow::Result<(testkit::Client, u32)> {
    testkit::serve_orchestrator((), config).await
}

/// The status of the orders the sagas created for `customer` (found by the keys they derived).
async fn saga_orders(client: &testkit::Client, customer: &str) -> anyhow::Result<Vec<String>> {
    let r = testkit::call(
        client,
        "sql__query",
        json!({ "sql": "SELECT status FROM orders WHERE customer_id = ?1 AND idempotency_key LIKE 'saga-%:order'",
                "params": [customer] }),
    )
    .await?;
    Ok(structured(&r)["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| row[0].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default())
}

/// Stock of `product` through the agent's connection.
async fn stock_via(client: &testkit::Client, product: &str) -> anyhow::Result<u64> {
    let r = testkit::call(
        client,
        "rest__check_inventory",
        json!({ "productId": product }),
    )
    .await?;
    structured(&r)["items"][0]["totalQuantity"]
        .as_u64()
        .context("stock")
}

/// Starts a saga of CUST-0007 for one PROD-003 with `recovery`, and kills the orchestrator
/// (`kill -9`) while the reservation is on its way: the order is made and written down, the
/// reservation sent and not. The REST server (on its own, over HTTP) holds `reserve_stock` for
/// 5 s, then is told to stop (SIGUSR1 pauses its faults). Returns the orchestrator started
/// again, the REST server, and the stock before the saga.
async fn crash_during_the_reservation(
    dir: &TempDir,
    recovery: &str,
) -> anyhow::Result<(testkit::Client, testkit::HttpServer, u64)> {
    let rest = testkit::HttpServer::start(
        "rest-mcp-server",
        &[
            "--fault-tools".to_owned(),
            "reserve_stock".to_owned(),
            "--latency-ms".to_owned(),
            "5000".to_owned(),
        ],
    )
    .await?;
    let config = config_file(dir, &rest.url, recovery)?;
    let (agent, pid) = serve(&config).await?;
    let before = stock_via(&agent, "PROD-003").await?;
    let peer = testkit::PeerClient(agent.peer().clone());
    let placing = tokio::spawn(async move {
        testkit::call(&peer, "place_order", place("CUST-0007", "PROD-003", 1)).await
    });
    let created = testkit::eventually(Duration::from_secs(10), || async {
        saga_orders(&agent, "CUST-0007").await.unwrap_or_default() == ["processing"]
    })
    .await;
    assert!(created, "the saga's order was created");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let _ = placing.await;
    drop(agent);
    rest.signal("USR1")?;
    // Started again; nobody calls place_order.
    let (agent, _) = serve(&config).await?;
    Ok((agent, rest, before))
}

/// The sagas in `orchestrator://sagas`.
async fn saga_log(agent: &testkit::Client) -> anyhow::Result<Value> {
    let read = agent
        .peer()
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "orchestrator://sagas",
        ))
        .await?;
    let text = match &read.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => anyhow::bail!("not text: {other:?}"),
    };
    Ok(serde_json::from_str(&text)?)
}

/// A crash between two steps, with the default (backward) recovery: after the restart the
/// orchestrator finds the saga in its log, settles the reservation whose outcome it never
/// learnt (sent again with the same order id, it answers with the reservation, made once), and
/// undoes it and the order without any agent asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_cut_off_by_a_crash_is_undone_after_the_restart() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-crash")?;
    let (agent, _rest, before) = crash_during_the_reservation(&dir, "backward").await?;
    let undone = testkit::eventually(Duration::from_secs(20), || async {
        saga_orders(&agent, "CUST-0007").await.unwrap_or_default() == ["cancelled"]
    })
    .await;
    assert!(
        undone,
        "the order of the saga cut off is cancelled: {:?}",
        saga_orders(&agent, "CUST-0007").await
    );
    let counted = testkit::eventually(Duration::from_secs(10), || async {
        testkit::read_status(&agent)
            .await
            .is_ok_and(|s| s["sagas"]["compensated"] == 1)
    })
    .await;
    assert!(counted, "status counts the recovered saga as compensated");
    assert_eq!(
        stock_via(&agent, "PROD-003").await?,
        before,
        "the reservation was released, once"
    );
    let sagas = saga_log(&agent).await?;
    let saga = &sagas["sagas"][0];
    assert_eq!(saga["composite"], "place_order", "{sagas}");
    assert_eq!(saga["state"], "compensated", "{sagas}");
    let steps: Vec<(String, String)> = saga["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or_default().to_owned(),
                        s["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let pairs: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("order", "launched"),
            ("order", "succeeded"),
            ("stock", "launched"),
            ("stock", "succeeded"),
            ("stock", "compensated"),
            ("order", "compensated")
        ],
        "{sagas}"
    );
    agent.cancel().await?;
    Ok(())
}

/// The same crash with `recovery: "forward"`: the restart runs the steps that had not finished
/// with the saga's own keys, so the order is reserved once and recorded once, and the saga
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_saga_cut_off_by_a_crash_is_finished_after_the_restart() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-forward")?;
    let (agent, _rest, before) = crash_during_the_reservation(&dir, "forward").await?;
    let finished = testkit::eventually(Duration::from_secs(20), || async {
        testkit::read_status(&agent)
            .await
            .is_ok_and(|s| s["sagas"]["completed"] == 1)
    })
    .await;
    assert!(finished, "status counts the recovered saga as completed");
    assert_eq!(saga_orders(&agent, "CUST-0007").await?, ["processing"]);
    assert_eq!(
        stock_via(&agent, "PROD-003").await?,
        before - 1,
        "the stock was reserved once"
    );
    let sagas = saga_log(&agent).await?;
    assert_eq!(sagas["sagas"][0]["state"], "completed", "{sagas}");
    let r = testkit::call(
        &agent,
        "sql__query",
        json!({ "sql": "SELECT id FROM orders WHERE customer_id = 'CUST-0007' AND idempotency_key LIKE 'saga-%:order'" }),
    )
    .await?;
    let order = structured(&r)["rows"][0][0].clone();
    let r = testkit::call(
        &agent,
        "cosmos__query_items",
        json!({ "container": "userEvents", "partitionKey": "CUST-0007",
                "filter": { "type": "purchase", "orderId": order } }),
    )
    .await?;
    assert_eq!(structured(&r)["count"], 1, "one purchase event");
    agent.cancel().await?;
    Ok(())
}

/// `f` until it answers without an error (the servers fail a share of calls here).
async fn until_ok(gw: &Gateway, tool: &str, args: Value) -> anyhow::Result<CallToolResult> {
    // Long enough to outlast an open breaker (5 s in mcp.json).
    for _ in 0..100 {
        // An open breaker refuses without a tool error; it is waited out the same way.
        if let Ok(r) = call(gw, tool, args.clone()).await
            && r.is_error != Some(true)
        {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{tool} failed 100 times in a row")
}

/// 200 `place_order` sagas at once while the REST server fails a fifth of its reservations:
/// every saga ends whole (order processing, stock taken, one event) or undone (its order, if
/// one was made, cancelled; no event), and the stock is exactly the initial stock less the
/// units of the sagas that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sagas_under_failures_each_end_whole_or_undone() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-load")?;
    // Reservations are not retried here, so about a fifth of them fail and their sagas are
    // undone (with retries nearly all of them would get through). A failed reservation may have
    // been a lost answer: the saga settles it (sent again, the same order id) and releases what
    // it finds.
    let faults = Faults {
        rest: &["--failure-rate", "0.2", "--fault-tools", "reserve_stock"],
        ..Faults::default()
    };
    let gw = start_with(
        &dir,
        faults,
        json!({ "rest": { "retry": { "maxAttempts": 1 } } }),
    )?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let before = stock(&gw, "PROD-001").await?;
    let runs = (0..200).map(|i| {
        let gw = gw.clone();
        async move {
            let customer = format!("CUST-{:04}", i % 40 + 1);
            call(&gw, "place_order", place(&customer, "PROD-001", 1))
                .await
                .map(|r| (customer, r))
        }
    });
    let results = futures::future::join_all(runs).await;
    let mut completed = 0u64;
    for result in results {
        let (customer, r) = result?;
        let meta = r.meta.clone().unwrap_or_default();
        let saga = meta.get("saga").cloned().unwrap_or_default();
        let id = saga["id"].as_str().context("a saga id")?.to_owned();
        let orders = until_ok(
            &gw,
            "sql__query",
            json!({ "sql": "SELECT id, status FROM orders WHERE idempotency_key = ?1",
                    "params": [format!("{id}:order")] }),
        )
        .await?;
        let rows = structured(&orders)["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if r.is_error != Some(true) {
            completed += 1;
            assert_eq!(saga["state"], "completed", "{meta:?}");
            let order = structured(&r)["orderId"]
                .as_str()
                .context("order")?
                .to_owned();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0][1], "processing", "{id}");
            let events = until_ok(
                &gw,
                "cosmos__query_items",
                json!({ "container": "userEvents", "partitionKey": customer,
                        "filter": { "type": "purchase", "orderId": order } }),
            )
            .await?;
            assert_eq!(structured(&events)["count"], 1, "{id}: one event");
        } else {
            assert_eq!(saga["state"], "compensated", "{id}: {meta:?}");
            assert!(rows.len() <= 1, "{id}: {rows:?}");
            if let Some(row) = rows.first() {
                assert_eq!(row[1], "cancelled", "{id}");
                let order = row[0].as_str().unwrap_or_default();
                let events = until_ok(
                    &gw,
                    "cosmos__query_items",
                    json!({ "container": "userEvents", "partitionKey": customer,
                            "filter": { "type": "purchase", "orderId": order } }),
                )
                .await?;
                assert_eq!(
                    structured(&events)["count"],
                    0,
                    "{id}: no event; {}",
                    testkit::text_of(&r)
                );
            }
        }
    }
    assert!(completed > 0, "some sagas completed");
    assert!(completed < 200, "some failed and were undone");
    assert_eq!(
        stock(&gw, "PROD-001").await?,
        before - completed,
        "stock arithmetic is exact"
    );
    gw.shutdown().await;
    Ok(())
}

/// How a batch of sagas ended, checked against the three systems.
#[derive(Debug, Default)]
struct Tally {
    completed: u64,
    compensated: u64,
    /// Undo attempts over every saga, and undos.
    undo_attempts: u64,
    undos: u64,
}

/// Runs `n` `place_order` sagas, `at_once` at a time, each of one unit of `product`, and checks
/// each against the systems: whole (order processing, one event) or undone (order cancelled or
/// never made, no event), never `compensation_failed`. The caller checks the stock.
async fn run_and_check(
    gw: &Arc<Gateway>,
    product: &str,
    n: usize,
    at_once: usize,
) -> anyhow::Result<Tally> {
    use futures::StreamExt as _;
    let results: Vec<anyhow::Result<(String, CallToolResult)>> = futures::stream::iter(0..n)
        .map(|i| {
            let gw = gw.clone();
            async move {
                let customer = format!("CUST-{:04}", i % 40 + 1);
                call(&gw, "place_order", place(&customer, product, 1))
                    .await
                    .map(|r| (customer, r))
            }
        })
        .buffer_unordered(at_once)
        .collect()
        .await;
    let mut tally = Tally::default();
    for result in results {
        let (customer, r) = result?;
        let meta = r.meta.clone().unwrap_or_default();
        let saga = meta.get("saga").cloned().unwrap_or_default();
        let id = saga["id"].as_str().context("a saga id")?.to_owned();
        let rows = structured(
            &until_ok(
                gw,
                "sql__query",
                json!({ "sql": "SELECT id, status FROM orders WHERE idempotency_key = ?1",
                        "params": [format!("{id}:order")] }),
            )
            .await?,
        )["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(rows.len() <= 1, "{id}: one order at most: {rows:?}");
        let events = match rows.first() {
            Some(row) => structured(
                &until_ok(
                    gw,
                    "cosmos__query_items",
                    json!({ "container": "userEvents", "partitionKey": customer,
                            "filter": { "type": "purchase", "orderId": row[0] } }),
                )
                .await?,
            )["count"]
                .as_u64()
                .unwrap_or(0),
            None => 0,
        };
        let sources = meta.get("sources").cloned().unwrap_or_default();
        for source in sources.as_array().into_iter().flatten() {
            if let Some(attempts) = source["compensation"]["attempts"].as_u64() {
                tally.undos += 1;
                tally.undo_attempts += attempts;
            }
        }
        if r.is_error != Some(true) {
            tally.completed += 1;
            assert_eq!(saga["state"], "completed", "{meta:?}");
            assert_eq!(rows.len(), 1, "{id}");
            assert_eq!(rows[0][1], "processing", "{id}");
            assert_eq!(events, 1, "{id}: one event");
        } else {
            tally.compensated += 1;
            assert_eq!(
                saga["state"],
                "compensated",
                "{id}: {}",
                testkit::text_of(&r)
            );
            if let Some(row) = rows.first() {
                assert_eq!(row[1], "cancelled", "{id}: {meta:?}");
            }
            assert_eq!(
                events,
                0,
                "{id}: no event; {}; {meta:?}",
                testkit::text_of(&r)
            );
        }
    }
    Ok(tally)
}

/// Units of `product` on hand, read until the REST server answers.
async fn stock_until_ok(gw: &Gateway, product: &str) -> anyhow::Result<u64> {
    let r = until_ok(gw, "rest__check_inventory", json!({ "productId": product })).await?;
    structured(&r)["items"][0]["totalQuantity"]
        .as_u64()
        .context("stock")
}

/// Every server loses the answer of about a quarter of its calls after doing the work
/// (`--failure-after-rate`): each write is sent again with the same key (by the policy stack,
/// then by the saga while settling) and applied once. Every saga ends whole or undone, there is
/// never a second order, event or reservation, and the stock is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_on_every_step_are_retried_with_the_same_key_and_applied_once()
-> anyhow::Result<()> {
    let dir = TempDir::new("saga-lost")?;
    let lossy: &[&str] = &["--failure-after-rate", "0.25"];
    let faults = Faults {
        sql: lossy,
        rest: lossy,
        cosmos: lossy,
    };
    let gw = start_with(&dir, faults, json!({}))?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let before = stock_until_ok(&gw, "PROD-002").await?;
    let tally = run_and_check(&gw, "PROD-002", 40, 8).await?;
    assert!(tally.completed > 0, "{tally:?}");
    assert_eq!(
        stock_until_ok(&gw, "PROD-002").await?,
        before - tally.completed,
        "stock arithmetic is exact: {tally:?}"
    );
    // The answers really were lost, and the work was not done twice for it.
    let status = orchestrator::status::StatusReport::of(&gw);
    for server in &status.servers {
        assert!(
            server.policy.retries > 0,
            "{} retried lost answers: {:?}",
            server.name,
            server.policy
        );
    }
    gw.shutdown().await;
    Ok(())
}

/// Every saga fails at its event (Cosmos refuses it), and the undos themselves fail about half
/// the time, before or after doing the work (REST `release_reservation`, SQL `cancel_order`;
/// seeded, and not retried by the policy stack, so the saga's own undo retries are seen). Each
/// undo is retried until it succeeds and applied once: every order is cancelled and the stock
/// is back exactly where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_undos_are_retried_until_they_succeed_and_apply_once() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-undo")?;
    let faults = Faults {
        sql: &[
            "--fault-tools",
            "cancel_order",
            "--failure-rate",
            "0.25",
            "--failure-after-rate",
            "0.25",
            "--seed",
            "21",
        ],
        rest: &[
            "--fault-tools",
            "release_reservation",
            "--failure-rate",
            "0.25",
            "--failure-after-rate",
            "0.25",
            "--seed",
            "22",
        ],
        cosmos: &["--fail-tools", "record_event"],
    };
    let once = json!({ "retry": { "maxAttempts": 1 } });
    let gw = start_with(&dir, faults, json!({ "sql": once, "rest": once }))?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let before = stock(&gw, "PROD-004").await?;
    let tally = run_and_check(&gw, "PROD-004", 12, 1).await?;
    assert_eq!(tally.compensated, 12, "{tally:?}");
    assert_eq!(tally.undos, 24, "two undos a saga: {tally:?}");
    assert!(
        tally.undo_attempts > tally.undos,
        "some undos failed and were retried: {tally:?}"
    );
    assert_eq!(
        stock(&gw, "PROD-004").await?,
        before,
        "stock is back, exactly"
    );
    gw.shutdown().await;
    Ok(())
}

/// `mcp-orchestrator sagas` on the configuration's log.
fn sagas_cli(config: &std::path::Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(bin_path("mcp-orchestrator")?)
        .arg("--config")
        .arg(config)
        .arg("sagas")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}

/// A saga whose undo fails every attempt waits for a person: `mcp-orchestrator sagas` lists it
/// with the undo that failed, and `sagas resolve` (only once, and only for such a saga) says
/// it was put right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_whose_undo_failed_is_listed_for_a_person_until_resolved() -> anyhow::Result<()> {
    let dir = TempDir::new("saga-person")?;
    let faults = Faults {
        rest: &[
            "--fault-tools",
            "release_reservation",
            "--failure-rate",
            "1.0",
        ],
        cosmos: &["--fail-tools", "record_event"],
        ..Faults::default()
    };
    let once = json!({ "retry": { "maxAttempts": 1 } });
    let config = config_of(&dir, faults, json!({ "rest": once }))?;
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    let gw = gateway_of(config)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let r = call(&gw, "place_order", place("CUST-0003", "PROD-005", 1)).await?;
    let saga = r.meta.clone().unwrap_or_default()["saga"].clone();
    assert_eq!(saga["state"], "compensation_failed", "{r:?}");
    let id = saga["id"].as_str().context("a saga id")?.to_owned();

    let out = sagas_cli(&path, &[])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("1 saga(s) whose undo failed")
            && stdout.contains(&id)
            && stdout.contains("stock: injected failure on `release_reservation`"),
        "{stdout}"
    );
    let out = sagas_cli(&path, &["--json"])?;
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed["counts"]["compensation_failed"], 1, "{listed}");
    assert_eq!(listed["compensationFailed"][0]["id"], id.as_str());
    let undos: Vec<&Value> = listed["compensationFailed"][0]["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter(|s| s["state"] == "compensation_failed")
        .collect();
    assert_eq!(
        undos.len(),
        1,
        "only the reservation's undo failed: {listed}"
    );
    assert_eq!(undos[0]["step"], "stock");

    let out = sagas_cli(&path, &["resolve", &id, "--note", "released by hand"])?;
    assert!(out.status.success(), "{out:?}");
    let out = sagas_cli(&path, &["--json"])?;
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed["counts"]["resolved"], 1, "{listed}");
    assert_eq!(listed["compensationFailed"], json!([]), "{listed}");
    let out = sagas_cli(&path, &[])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no saga waits for a person"),
        "{out:?}"
    );
    let out = sagas_cli(&path, &["resolve", &id, "--note", "again"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is resolved"),
        "{out:?}"
    );
    let out = sagas_cli(&path, &["resolve", "no-such-saga", "--note", "x"])?;
    assert_eq!(out.status.code(), Some(1));
    gw.shutdown().await;
    Ok(())
}
