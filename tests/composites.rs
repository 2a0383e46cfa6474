//! The composite tools shipped in mcp.json, run by the orchestrator (as a library) against the
//! real servers: parallel and sequential structure read from the recorded step intervals,
//! fan-out bounds, partial results, single-flight caching and invalidation by writes.

use std::{sync::Arc, time::Duration};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path};

/// The repo's mcp.json with its `mcpServers` replaced by `servers`, and extra cache tools.
fn config_with(servers: Value, cache_tools: Value) -> anyhow::Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    config["mcpServers"] = servers;
    if let (Some(tools), Value::Object(extra)) = (
        config["orchestrator"]["cache"]["tools"].as_object_mut(),
        cache_tools,
    ) {
        tools.extend(extra);
    }
    Ok(config)
}

fn stdio(bin: &str, args: &[&str]) -> anyhow::Result<Value> {
    Ok(json!({ "command": bin_path(bin)?, "args": args }))
}

fn start(config: Value) -> anyhow::Result<Arc<Gateway>> {
    let config = Config::parse(&config.to_string(), std::path::Path::new("."), &|_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Gateway::start(config))
}

async fn call(gw: &Gateway, tool: &str, args: Value) -> anyhow::Result<CallToolResult> {
    gw.call_tool(tool, args.as_object().cloned(), &CallContext::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `_meta.sources` by step name: (startedMs, latencyMs, outcome).
fn sources(r: &CallToolResult) -> std::collections::HashMap<String, (f64, f64, String)> {
    r.meta
        .as_ref()
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or_default().to_owned(),
                        (
                            s["startedMs"].as_f64().unwrap_or(-1.0),
                            s["latencyMs"].as_f64().unwrap_or(-1.0),
                            s["outcome"].as_str().unwrap_or_default().to_owned(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn overlap(a: (f64, f64, String), b: (f64, f64, String)) -> bool {
    a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

const SLOW: &str = "300";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_insights_runs_its_three_calls_at_the_same_time() -> anyhow::Result<()> {
    let gw = start(config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:", "--latency-ms", SLOW])?,
            "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:", "--latency-ms", SLOW])?,
            "rest": stdio("rest-mcp-server", &["--latency-ms", SLOW])?
        }),
        json!({}),
    )?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let r = call(
        &gw,
        "customer_insights",
        json!({ "customerId": "CUST-0002" }),
    )
    .await?;
    assert_eq!(r.is_error, Some(false), "{r:?}");
    let s = sources(&r);
    let (orders, behavior, inventory) = (
        s["orders"].clone(),
        s["behavior"].clone(),
        s["inventory"].clone(),
    );
    assert!(
        orders.1 >= 300.0 && behavior.1 >= 300.0 && inventory.1 >= 300.0,
        "each call took the injected latency: {s:?}"
    );
    assert!(overlap(orders.clone(), behavior.clone()), "{s:?}");
    assert!(overlap(orders.clone(), inventory.clone()), "{s:?}");
    assert!(overlap(behavior, inventory), "{s:?}");
    let out = r.structured_content.unwrap_or_default();
    assert_eq!(out["customerId"], "CUST-0002");
    assert!(
        out["recentOrders"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
    );
    // Stock is picked for exactly the products the customer bought.
    let bought: std::collections::HashSet<&str> = out["recentOrders"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["lines"].as_array().into_iter().flatten())
        .filter_map(|l| l["productId"].as_str())
        .collect();
    let stocked: std::collections::HashSet<&str> = out["stock"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["productId"].as_str())
        .collect();
    assert_eq!(bought, stocked);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_details_fetches_the_order_first_then_shipping_and_stock_together()
-> anyhow::Result<()> {
    let gw = start(config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:", "--latency-ms", SLOW])?,
            "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:"])?,
            "rest": stdio("rest-mcp-server", &["--latency-ms", SLOW])?
        }),
        json!({}),
    )?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let r = call(&gw, "order_details", json!({ "orderId": "ORD-00042" })).await?;
    assert_eq!(r.is_error, Some(false), "{r:?}");
    let s = sources(&r);
    let order = s["order"].clone();
    let order_end = order.0 + order.1;
    for step in ["shipping", "stock"] {
        assert!(
            s[step].0 + 0.01 >= order_end,
            "{step} started after the order finished: {s:?}"
        );
    }
    assert!(
        overlap(s["shipping"].clone(), s["stock"].clone()),
        "shipping and stock ran together: {s:?}"
    );
    let out = r.structured_content.unwrap_or_default();
    assert_eq!(out["order"]["orderId"], "ORD-00042");
    assert_eq!(out["shipping"]["orderId"], "ORD-00042");
    assert_eq!(
        out["stock"].as_array().map(Vec::len),
        out["order"]["lines"].as_array().map(Vec::len),
        "one stock entry per order line"
    );
    gw.shutdown().await;
    Ok(())
}

/// Intervals (start, end) of `tool`'s calls from a server's access log lines.
fn call_intervals(server: &HttpServer, tool: &str) -> Vec<(f64, f64)> {
    server
        .stderr
        .lock()
        .map(|lines| lines.clone())
        .unwrap_or_default()
        .iter()
        .filter(|l| l.contains("tool call") && l.contains(&format!("tool={tool}")))
        .filter_map(|l| {
            let end = chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next()?).ok()?;
            let elapsed: f64 = l
                .split("elapsed_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let end_ms = end.timestamp_micros() as f64 / 1000.0;
            Some((end_ms - elapsed, end_ms))
        })
        .collect()
}

fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_customers_enriched_fans_out_within_its_bound_and_keeps_the_ranking()
-> anyhow::Result<()> {
    let cosmos = HttpServer::start(
        "cosmos-mcp-server",
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--latency-ms".into(),
            "100".into(),
        ],
    )
    .await?;
    let gw = start(config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
            "cosmos": { "type": "http", "url": cosmos.url },
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let r = call(&gw, "top_customers_enriched", json!({ "limit": 25 })).await?;
    assert_eq!(r.is_error, Some(false), "{r:?}");
    let customers = r.structured_content.unwrap_or_default()["customers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(customers.len(), 25);
    for (i, c) in customers.iter().enumerate() {
        assert_eq!(c["rank"], json!(i + 1), "ranking order kept");
        assert_eq!(
            c["behavior"]["customerId"], c["customerId"],
            "each customer with its own analysis"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let intervals = call_intervals(&cosmos, "analyze_user_behavior");
    assert_eq!(intervals.len(), 25, "one upstream call per customer");
    let peak = max_overlap(&intervals);
    assert!(
        peak <= 8,
        "never more than the forEach concurrency (8) in flight: {peak}"
    );
    assert!(peak >= 2, "the fan-out did run in parallel: {peak}");
    gw.shutdown().await;
    cosmos.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_source_down_gives_a_partial_result_and_a_critical_one_fails_the_tool()
-> anyhow::Result<()> {
    let dir = TempDir::new("composite-partial")?;
    let missing = dir.path().join("no-such-server").display().to_string();
    let gw = start(config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
            "cosmos": { "command": missing, "args": [] },
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?)?;
    gw.wait_ready(Duration::from_secs(30)).await;
    let r = call(
        &gw,
        "customer_insights",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    assert_eq!(r.is_error, Some(false), "cosmos is optional: {r:?}");
    let out = r.structured_content.clone().unwrap_or_default();
    assert!(
        out["recentOrders"]
            .as_array()
            .is_some_and(|o| !o.is_empty()),
        "orders are there"
    );
    assert_eq!(
        out["behavior"]["segment"], "unknown",
        "the fallback profile"
    );
    let s = sources(&r);
    assert_eq!(s["behavior"].2, "fallback");
    assert_eq!(s["orders"].2, "ok");
    let meta = r.meta.clone().unwrap_or_default();
    let behavior = meta["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["step"] == "behavior")
        .cloned()
        .unwrap_or_default();
    assert_eq!(behavior["server"], "cosmos");
    // The server never started: its breaker opened when the connection could not be made, so the
    // step failed at once, and the refusal says why.
    assert_eq!(behavior["errorKind"], "circuit_open");
    let why = behavior["error"].as_str().unwrap_or_default();
    assert!(why.contains("cannot start"), "{why}");
    gw.shutdown().await;

    let gw = start(config_with(
        json!({
            "sql": { "command": dir.path().join("no-sql").display().to_string(), "args": [] },
            "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:"])?,
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?)?;
    gw.wait_ready(Duration::from_secs(30)).await;
    let r = call(
        &gw,
        "customer_insights",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    assert_eq!(r.is_error, Some(true));
    let text = testkit::text_of(&r);
    assert!(
        text.contains("`orders`") && text.contains("sql.get_customer_orders"),
        "names the critical step: {text}"
    );
    assert_eq!(
        r.meta.as_ref().and_then(|m| m.get("failedStep")),
        Some(&json!("orders"))
    );

    // Bad input is refused before any step runs, naming the field.
    let bad = call(&gw, "customer_insights", json!({ "customerId": 42 })).await?;
    assert_eq!(
        kit::ToolError::from_call_tool_result(&bad).map(|e| e.kind),
        Some(kit::ErrorKind::Invalid)
    );
    assert!(testkit::text_of(&bad).contains("customerId"));
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_misses_make_one_upstream_call() -> anyhow::Result<()> {
    let cosmos = HttpServer::start(
        "cosmos-mcp-server",
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--latency-ms".into(),
            "200".into(),
        ],
    )
    .await?;
    let gw = start(
        config_with(
            json!({ "cosmos": { "type": "http", "url": cosmos.url } }),
            json!({ "cosmos.get_user_behavior": "short" }),
        )
        .map(|mut c| {
            // Only cosmos here: drop composites and cache rules that name other servers.
            c["orchestrator"]["composites"] = json!({});
            c["orchestrator"]["servers"] = json!({});
            c["orchestrator"]["cache"]["tags"] = json!({});
            c["orchestrator"]["cache"]["invalidates"] = json!({});
            c["orchestrator"]["cache"]["tools"] = json!({ "cosmos.get_user_behavior": "short" });
            c
        })?,
    )?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let calls = (0..100).map(|_| {
        call(
            &gw,
            "cosmos__get_user_behavior",
            json!({ "userId": "CUST-0009" }),
        )
    });
    let results = futures::future::join_all(calls).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.is_error == Some(false)))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        cosmos.count_lines(&["tool call", "tool=get_user_behavior"]),
        1,
        "one upstream call"
    );
    let again = call(
        &gw,
        "cosmos__get_user_behavior",
        json!({ "userId": "CUST-0009" }),
    )
    .await?;
    assert_eq!(
        again.structured_content,
        results[0]
            .as_ref()
            .ok()
            .and_then(|r| r.structured_content.clone())
    );
    gw.cache().run_pending_tasks().await;
    let snap = gw.cache().snapshot();
    assert_eq!(snap.loads, 1);
    assert!(snap.hits >= 1);
    gw.shutdown().await;
    cosmos.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_invalidates_the_cached_dashboard() -> anyhow::Result<()> {
    let gw = start(config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
            "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:"])?,
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let first = call(&gw, "executive_dashboard", json!({})).await?;
    let revenue = first.structured_content.clone().unwrap_or_default()["revenue"]
        .as_f64()
        .unwrap_or(-1.0);
    let cached = call(&gw, "executive_dashboard", json!({})).await?;
    assert_eq!(
        cached.meta.as_ref().and_then(|m| m.get("cached")),
        Some(&json!(true)),
        "the second call is a hit"
    );

    let order = call(
        &gw,
        "sql__create_order",
        json!({ "customerId": "CUST-0100", "lines": [{ "productId": "PROD-001", "quantity": 2 }], "idempotencyKey": "dashboard-1" }),
    )
    .await?;
    let total = order.structured_content.unwrap_or_default()["order"]["total"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(total > 0.0);

    let after = call(&gw, "executive_dashboard", json!({})).await?;
    assert_eq!(
        after.meta.as_ref().and_then(|m| m.get("cached")),
        None,
        "recomputed after the write"
    );
    let new_revenue = after.structured_content.unwrap_or_default()["revenue"]
        .as_f64()
        .unwrap_or(-1.0);
    assert!(
        (new_revenue - (revenue + total)).abs() < 0.01,
        "{revenue} + {total} = {new_revenue}"
    );
    gw.shutdown().await;
    Ok(())
}

#[test]
fn check_refuses_a_cycle_and_a_dangling_reference_naming_the_path() -> anyhow::Result<()> {
    let dir = TempDir::new("composite-check")?;
    for (composite, path, what) in [
        (
            json!({ "description": "d", "steps": {
                "a": { "call": "sql.get_customer", "args": { "customerId": "${b.customerId}" } },
                "b": { "call": "sql.get_customer", "args": { "customerId": "${a.customerId}" } } }, "output": {} }),
            "orchestrator.composites.loop.steps",
            "cycle",
        ),
        (
            json!({ "description": "d", "steps": {
                "a": { "call": "sql.get_customer", "args": { "customerId": "${input.customerId}" } } },
                "output": { "x": "${customr.name}" } }),
            "orchestrator.composites.loop.output.x",
            "unknown reference `customr`",
        ),
    ] {
        let path_file = dir.path().join("bad.json");
        std::fs::write(
            &path_file,
            json!({ "mcpServers": { "sql": { "command": "sql-mcp-server" } }, "orchestrator": { "composites": { "loop": composite } } }).to_string(),
        )?;
        let out = std::process::Command::new(bin_path("mcp-orchestrator")?)
            .args(["check", "--config", &path_file.display().to_string()])
            .output()?;
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(path) && stderr.contains(what), "{stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_can_drop_cached_results_by_tag() -> anyhow::Result<()> {
    let gw = start(config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
            "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:"])?,
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    call(&gw, "executive_dashboard", json!({})).await?;
    let hit = call(&gw, "executive_dashboard", json!({})).await?;
    assert_eq!(
        hit.meta.as_ref().and_then(|m| m.get("cached")),
        Some(&json!(true))
    );

    let refused = call(&gw, "orchestrator__invalidate_cache", json!({})).await?;
    assert_eq!(refused.is_error, Some(true), "says what to give");
    let dropped = call(
        &gw,
        "orchestrator__invalidate_cache",
        json!({ "tags": ["sales"] }),
    )
    .await?;
    assert_eq!(dropped.is_error, Some(false), "{dropped:?}");

    let fresh = call(&gw, "executive_dashboard", json!({})).await?;
    assert_eq!(
        fresh.meta.as_ref().and_then(|m| m.get("cached")),
        None,
        "recomputed"
    );
    gw.cache().run_pending_tasks().await;
    assert!(gw.cache().snapshot().invalidations >= 1);
    gw.shutdown().await;
    Ok(())
}

/// The three bundled servers, in memory and without injected faults.
fn healthy_servers() -> anyhow::Result<Value> {
    Ok(json!({
        "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
        "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:"])?,
        "rest": stdio("rest-mcp-server", &[])?
    }))
}

/// One step's full line in `_meta.sources`.
fn source_of(r: &CallToolResult, step: &str) -> Value {
    r.meta
        .as_ref()
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|s| s["step"] == step)
        .cloned()
        .unwrap_or_default()
}

fn cached(r: &CallToolResult) -> bool {
    r.meta.as_ref().and_then(|m| m.get("cached")) == Some(&json!(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cosmos_down_top_customers_still_answers_in_rank_order_and_nothing_degraded_is_cached()
-> anyhow::Result<()> {
    let dir = TempDir::new("composite-cosmos-down")?;
    let mut config = config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
            "cosmos": { "command": dir.path().join("no-cosmos").display().to_string(), "args": [] },
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?;
    // Two composites whose second step reads an optional Cosmos step that has no fallback.
    for (name, critical) in [("profile_then_product", false), ("needs_profile", true)] {
        config["orchestrator"]["composites"][name] = json!({
            "description": "A product picked from the customer's profile.",
            "steps": {
                "profile": { "call": "cosmos.get_user_behavior", "args": { "userId": "CUST-0001" } },
                "product": { "call": "rest.get_product", "args": { "productId": "${profile.topProductId}" }, "critical": critical }
            },
            "output": { "profile": "${profile}", "product": "${product}" }
        });
    }
    let gw = start(config)?;
    gw.wait_ready(Duration::from_secs(30)).await;

    let r = call(&gw, "top_customers_enriched", json!({ "limit": 5 })).await?;
    assert_eq!(r.is_error, Some(false), "cosmos is optional: {r:?}");
    let ranking = call(&gw, "sql__get_top_customers", json!({ "limit": 5 })).await?;
    let expected: Vec<Value> = ranking.structured_content.unwrap_or_default()["customers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["customerId"].clone())
        .collect();
    let customers = r.structured_content.clone().unwrap_or_default()["customers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(expected.len(), 5);
    assert_eq!(
        customers
            .iter()
            .map(|c| c["customerId"].clone())
            .collect::<Vec<_>>(),
        expected,
        "every customer, in rank order"
    );
    for (i, c) in customers.iter().enumerate() {
        assert_eq!(c["rank"], json!(i + 1));
        assert_eq!(c["behavior"], Value::Null, "no analysis, no made-up one");
    }
    let analysis = source_of(&r, "analysis");
    assert_eq!(analysis["outcome"], "failed", "{analysis}");
    assert_eq!(analysis["server"], "cosmos");
    // Not connected, or refused by the breaker that those failures opened (earlier calls here).
    assert!(
        analysis["errorKind"] == "not_connected" || analysis["errorKind"] == "circuit_open",
        "{analysis}"
    );
    assert_eq!(
        (analysis["items"].clone(), analysis["failedItems"].clone()),
        (json!(5), json!(5))
    );
    assert_eq!(source_of(&r, "top")["outcome"], "ok");

    // An optional step skipped because the step it reads failed: the tool still answers.
    let skipped = call(&gw, "profile_then_product", json!({})).await?;
    assert_eq!(skipped.is_error, Some(false), "{skipped:?}");
    assert_eq!(source_of(&skipped, "profile")["outcome"], "failed");
    let product = source_of(&skipped, "product");
    assert_eq!(product["outcome"], "skipped", "{product}");
    assert!(
        product["error"]
            .as_str()
            .is_some_and(|e| e.contains("`profile`")),
        "{product}"
    );
    // The same step made critical fails the tool, naming it.
    let failed = call(&gw, "needs_profile", json!({})).await?;
    assert_eq!(failed.is_error, Some(true), "{failed:?}");
    assert_eq!(
        failed.meta.as_ref().and_then(|m| m.get("failedStep")),
        Some(&json!("product"))
    );
    let text = testkit::text_of(&failed);
    assert!(
        text.contains("critical step `product`") && text.contains("`profile`"),
        "{text}"
    );

    // The dashboard (cached `short`) answers without its Cosmos segments; that degraded answer
    // is not kept, so the next call computes it again.
    let first = call(&gw, "executive_dashboard", json!({})).await?;
    assert_eq!(first.is_error, Some(false), "{first:?}");
    assert_eq!(source_of(&first, "premium")["outcome"], "failed");
    let second = call(&gw, "executive_dashboard", json!({})).await?;
    assert!(
        !cached(&second),
        "a degraded answer is not served from the cache"
    );
    assert_eq!(source_of(&second, "sales")["outcome"], "ok");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_past_its_deadline_reports_what_finished_and_what_was_cut_off()
-> anyhow::Result<()> {
    let mut config = config_with(
        json!({
            "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])?,
            // Every Cosmos tool call takes twice the composite's deadline (the per-attempt read
            // timeout, 5 s, is longer than the deadline, so the deadline is what cuts it off).
            "cosmos": stdio("cosmos-mcp-server", &["--data-dir", ":memory:", "--latency-ms", "6000"])?,
            "rest": stdio("rest-mcp-server", &[])?
        }),
        json!({}),
    )?;
    config["orchestrator"]["composites"]["slow_profile"] = json!({
        "description": "A customer and their profile, within 3 s.",
        "deadlineMs": 3000,
        "steps": {
            "customer": { "call": "sql.get_customer", "args": { "customerId": "CUST-0001" }, "critical": true },
            "profile": { "call": "cosmos.get_user_behavior", "args": { "userId": "CUST-0001" } },
            "product": { "call": "rest.get_product", "args": { "productId": "${profile.topProductId}" } }
        },
        "output": { "customer": "${customer}", "profile": "${profile}" }
    });
    let gw = start(config)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let r = call(&gw, "slow_profile", json!({})).await?;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let text = testkit::text_of(&r);
    assert!(text.contains("deadline of 3000 ms"), "{text}");
    assert_eq!(
        r.meta.as_ref().and_then(|m| m.get("reason")),
        Some(&json!("deadline"))
    );
    assert_eq!(
        source_of(&r, "customer")["outcome"],
        "ok",
        "finished in time"
    );
    let profile = source_of(&r, "profile");
    assert_eq!(profile["outcome"], "failed", "{profile}");
    assert_eq!(profile["errorKind"], "deadline");
    assert_eq!(profile["server"], "cosmos");
    assert_eq!(
        source_of(&r, "product")["outcome"],
        "skipped",
        "never started: it waited for the profile"
    );
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_naming_a_tool_the_server_does_not_list_loads_is_reported_and_fails_clearly()
-> anyhow::Result<()> {
    let dir = TempDir::new("composite-missing-tool")?;
    let config = json!({
        "mcpServers": { "sql": stdio("sql-mcp-server", &["--data-dir", ":memory:"])? },
        "orchestrator": { "composites": { "ghost": {
            "description": "Calls a tool the SQL server does not have.",
            "steps": {
                "customer": { "call": "sql.get_customer", "args": { "customerId": "CUST-0001" } },
                "missing": { "call": "sql.no_such_tool", "critical": true }
            },
            "output": { "customer": "${customer}", "missing": "${missing}" }
        } } }
    });
    let file = dir.path().join("mcp.json");
    std::fs::write(&file, config.to_string())?;
    let out = std::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["check", "--config", &file.display().to_string()])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "not a load error: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let gw = start(config)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let status = orchestrator::status::StatusReport::of(&gw);
    assert!(
        status.catalog_problems.iter().any(|p| p.server == "sql"
            && p.message.contains("`ghost`")
            && p.message.contains("`missing`")
            && p.message.contains("`no_such_tool`")),
        "status names the missing tool: {:?}",
        status.catalog_problems
    );
    let r = call(&gw, "ghost", json!({})).await?;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let text = testkit::text_of(&r);
    assert!(
        text.contains("critical step `missing`")
            && text.contains("sql.no_such_tool")
            && text.contains("does not list it"),
        "{text}"
    );
    assert_eq!(testkit::error_kind(&r).as_deref(), Some("invalid"));
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_invalidates_only_that_customers_cached_insights() -> anyhow::Result<()> {
    let mut config = config_with(healthy_servers()?, json!({}))?;
    config["orchestrator"]["composites"]["customer_insights"]["cache"] = json!("short");
    let gw = start(config)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let insights = |id: &'static str| call(&gw, "customer_insights", json!({ "customerId": id }));

    let a = insights("CUST-0005").await?;
    assert_eq!(a.is_error, Some(false), "{a:?}");
    let b = insights("CUST-0006").await?;
    // The inventory step is cached on its own (`short`): the first call stored it.
    assert_eq!(source_of(&b, "inventory")["outcome"], "cached", "{b:?}");
    assert!(cached(&insights("CUST-0005").await?));
    assert!(cached(&insights("CUST-0006").await?));

    let created = call(
        &gw,
        "sql__create_order",
        json!({ "customerId": "CUST-0005", "lines": [{ "productId": "PROD-003", "quantity": 1 }], "idempotencyKey": "insights-1" }),
    )
    .await?;
    assert_eq!(created.is_error, Some(false), "{created:?}");
    let order_id = created.structured_content.unwrap_or_default()["order"]["orderId"].clone();

    let after = insights("CUST-0005").await?;
    assert!(!cached(&after), "the write dropped this customer's entry");
    let (before, now) = (
        a.structured_content.unwrap_or_default(),
        after.structured_content.clone().unwrap_or_default(),
    );
    assert_eq!(
        now["totalOrders"].as_i64(),
        before["totalOrders"].as_i64().map(|n| n + 1)
    );
    assert_eq!(now["recentOrders"][0]["orderId"], order_id, "newest first");
    assert!(
        cached(&insights("CUST-0006").await?),
        "another customer's entry is untouched"
    );
    gw.shutdown().await;
    Ok(())
}

/// `regions` rows by region: (revenue, orderCount).
fn by_region(rows: &Value) -> std::collections::BTreeMap<String, (f64, i64)> {
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["region"].as_str().unwrap_or_default().to_owned(),
                (
                    r["revenue"].as_f64().unwrap_or(f64::NAN),
                    r["orderCount"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_by_region_adds_store_and_online_sales_per_region() -> anyhow::Result<()> {
    let gw = start(config_with(healthy_servers()?, json!({}))?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let mut totals = Vec::new();
    for (args, period) in [
        (json!({}), "all"),
        (json!({ "period": "2026-Q1" }), "2026-Q1"),
    ] {
        let store = call(&gw, "sql__get_sales_by_region", args.clone()).await?;
        let online = call(&gw, "cosmos__get_online_sales_by_region", args.clone()).await?;
        let store = by_region(&store.structured_content.unwrap_or_default()["regions"]);
        let online = by_region(&online.structured_content.unwrap_or_default()["regions"]);
        assert!(!store.is_empty() && !online.is_empty());

        let r = call(&gw, "sales_by_region", args.clone()).await?;
        assert_eq!(r.is_error, Some(false), "{args}: {r:?}");
        let out = r.structured_content.clone().unwrap_or_default();
        assert_eq!(out["period"], period);
        let joined = by_region(&out["regions"]);
        let regions: std::collections::BTreeSet<&String> =
            store.keys().chain(online.keys()).collect();
        assert_eq!(
            joined.keys().collect::<std::collections::BTreeSet<_>>(),
            regions,
            "{args}: every region of either side, once"
        );
        let mut total = 0.0;
        for region in regions {
            let (s, o) = (
                store.get(region).copied().unwrap_or((0.0, 0)),
                online.get(region).copied().unwrap_or((0.0, 0)),
            );
            let (revenue, orders) = joined[region];
            assert!(
                (revenue - (s.0 + o.0)).abs() < 0.011,
                "{args} {region}: {revenue} = {} + {}",
                s.0,
                o.0
            );
            assert_eq!(orders, s.1 + o.1, "{args} {region}");
            total += revenue;
        }
        assert_eq!(source_of(&r, "store")["outcome"], "ok");
        assert_eq!(source_of(&r, "online")["outcome"], "ok");
        totals.push(total);
    }
    assert!(
        totals[1] > 0.0 && totals[1] < totals[0],
        "the period reached both servers: {totals:?}"
    );
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_details_of_a_new_order_answers_without_its_shipment() -> anyhow::Result<()> {
    let gw = start(config_with(healthy_servers()?, json!({}))?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let created = call(
        &gw,
        "sql__create_order",
        json!({ "customerId": "CUST-0010", "lines": [
            { "productId": "PROD-001", "quantity": 1 }, { "productId": "PROD-002", "quantity": 2 }
        ], "idempotencyKey": "details-1" }),
    )
    .await?;
    assert_eq!(created.is_error, Some(false), "{created:?}");
    let order_id = created.structured_content.unwrap_or_default()["order"]["orderId"].clone();
    assert!(order_id.is_string());

    let r = call(&gw, "order_details", json!({ "orderId": order_id })).await?;
    assert_eq!(
        r.is_error,
        Some(false),
        "no shipment yet is not an error of the tool: {r:?}"
    );
    let out = r.structured_content.clone().unwrap_or_default();
    assert_eq!(out["order"]["orderId"], order_id);
    assert_eq!(out["order"]["lines"].as_array().map(Vec::len), Some(2));
    assert_eq!(out["shipping"], Value::Null);
    assert_eq!(out["stock"].as_array().map(Vec::len), Some(2));
    let shipping = source_of(&r, "shipping");
    assert_eq!(shipping["outcome"], "failed", "{shipping}");
    assert_eq!(shipping["errorKind"], "not_found");
    assert_eq!(source_of(&r, "order")["outcome"], "ok");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_that_writes_is_never_answered_from_the_cache() -> anyhow::Result<()> {
    let mut config = config_with(healthy_servers()?, json!({}))?;
    // `cache` on a plan with a write in it: a hit would tell the agent the document was written
    // without writing it. Cosmos `upsert_item` has no invalidation rule, so nothing else keeps
    // the answer out of the cache. The read-only twin shows the same settings do cache.
    let plan = |call: &str, args: Value| {
        json!({
            "description": "one step",
            "input": {
                "type": "object",
                "properties": { "customerId": { "type": "string" } },
                "required": ["customerId"]
            },
            "steps": { "only": { "call": call, "args": args, "critical": true } },
            "output": "${only}",
            "cache": "short"
        })
    };
    config["orchestrator"]["composites"]["touch_profile"] = plan(
        "cosmos.upsert_item",
        json!({
            "container": "profiles",
            "item": { "id": "note-${input.customerId}", "customerId": "${input.customerId}" }
        }),
    );
    config["orchestrator"]["composites"]["look_up"] = plan(
        "sql.get_customer",
        json!({ "customerId": "${input.customerId}" }),
    );
    let gw = start(config)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let input = json!({ "customerId": "CUST-0007" });
    let etag =
        |r: &CallToolResult| r.structured_content.clone().unwrap_or_default()["_etag"].clone();

    let first = call(&gw, "touch_profile", input.clone()).await?;
    assert_eq!(first.is_error, Some(false), "{first:?}");
    assert!(etag(&first).is_string(), "{first:?}");
    let second = call(&gw, "touch_profile", input.clone()).await?;
    assert_eq!(second.is_error, Some(false), "{second:?}");
    assert!(
        !cached(&second),
        "a plan with a write is not cached: {second:?}"
    );
    assert_ne!(etag(&first), etag(&second), "the write ran again");

    call(&gw, "look_up", input.clone()).await?;
    assert!(
        cached(&call(&gw, "look_up", input).await?),
        "the read-only plan is cached"
    );
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_through_answer_from_the_cache_says_so() -> anyhow::Result<()> {
    // mcp.json caches `rest.get_product` (`long`).
    let gw = start(config_with(healthy_servers()?, json!({}))?)?;
    anyhow::ensure!(gw.wait_ready(Duration::from_secs(30)).await);
    let product = || call(&gw, "rest__get_product", json!({ "productId": "PROD-004" }));
    let fresh = product().await?;
    assert_eq!(fresh.is_error, Some(false), "{fresh:?}");
    assert!(!cached(&fresh), "the first call asks the server: {fresh:?}");
    let stored = product().await?;
    assert!(
        cached(&stored),
        "the second is served from the cache: {stored:?}"
    );
    assert_eq!(stored.structured_content, fresh.structured_content);
    // A tool the cache does not hold is never marked.
    let customer = json!({ "customerId": "CUST-0001" });
    call(&gw, "sql__get_customer", customer.clone()).await?;
    assert!(!cached(&call(&gw, "sql__get_customer", customer).await?));
    gw.shutdown().await;
    Ok(())
}
