//! The per-server policy stack against the real servers with injected faults: retries that
//! rescue reads, writes that are never duplicated, a breaker that opens and recovers, a bulkhead
//! that isolates a slow server, timeouts and retry-after.
//!
//! These tests drive the orchestrator as a library (`Gateway`), so they can read each call's
//! attempt report and the policy figures directly.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path};

fn gateway(config: Value) -> anyhow::Result<Arc<Gateway>> {
    let config = Config::parse(&config.to_string(), std::path::Path::new("."), &|_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Gateway::start(config))
}

/// What the agent would receive: the result, or the tool error a failed call becomes.
fn answer(
    outcome: Result<CallToolResult, orchestrator::error::CallError>,
) -> anyhow::Result<CallToolResult> {
    match outcome {
        Ok(r) => Ok(r),
        Err(e) => e.into_tool_answer().map_err(|e| anyhow::anyhow!("{e:?}")),
    }
}

fn args(v: Value) -> Option<rmcp::model::JsonObject> {
    v.as_object().cloned()
}

fn kind(r: &CallToolResult) -> Option<String> {
    kit::ToolError::from_call_tool_result(r).map(|e| e.kind.as_str().to_owned())
}

fn reason(r: &CallToolResult) -> Option<String> {
    r.meta
        .as_ref()
        .and_then(|m| m.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn ready(gw: &Gateway) -> anyhow::Result<()> {
    anyhow::ensure!(
        gw.wait_ready(Duration::from_secs(30)).await,
        "upstreams connected"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_rescue_reads_from_a_flaky_server() -> anyhow::Result<()> {
    let gw = gateway(json!({
        "mcpServers": { "cosmos": {
            "command": bin_path("cosmos-mcp-server")?,
            "args": ["--data-dir", ":memory:", "--failure-rate", "0.3", "--seed", "7"]
        } },
        "orchestrator": { "servers": { "cosmos": {
            "retry": { "maxAttempts": 5, "baseDelayMs": 1, "maxDelayMs": 10, "budgetRatio": 2.0 },
            "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.95 }
        } } }
    }))?;
    ready(&gw).await?;
    // 16 in flight: within the default bulkhead, so what is measured is retry alone.
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..500)
        .map(|i| {
            let gw = gw.clone();
            async move {
                let id = format!("CUST-{:04}", i % 200 + 1);
                gw.call_tool_with_report(
                    "cosmos__get_user_behavior",
                    args(json!({ "userId": id })),
                    &CallContext::default(),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(results.len(), 500, "every call got exactly one answer");
    let ok = results
        .iter()
        .filter(|(r, _)| r.as_ref().is_ok_and(|r| r.is_error != Some(true)))
        .count();
    let retried = results
        .iter()
        .filter(|(_, report)| report.attempts.len() > 1)
        .count();
    assert!(ok >= 495, "{ok}/500 succeeded");
    assert!(
        retried > 50,
        "faults were injected and retried ({retried} calls retried)"
    );
    let snap = gw.upstreams[0].policy.snapshot();
    assert!(snap.retries as usize >= retried);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_never_duplicated_or_lost_under_faults() -> anyhow::Result<()> {
    let dir = TempDir::new("resilience-orders")?;
    let gw = gateway(json!({
        "mcpServers": { "sql": {
            "command": bin_path("sql-mcp-server")?,
            "args": ["--data-dir", dir.arg(), "--failure-rate", "0.2", "--failure-after-rate", "0.2", "--seed", "3"]
        } },
        "orchestrator": { "servers": { "sql": {
            "retry": { "maxAttempts": 8, "baseDelayMs": 1, "maxDelayMs": 5, "budgetRatio": 5.0 },
            "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.99 }
        } } }
    }))?;
    ready(&gw).await?;
    let cx = CallContext::default();
    let mut succeeded = 0;
    let mut lost_responses = 0;
    for i in 0..100 {
        let (outcome, report) = gw
            .call_tool_with_report(
                "sql__create_order",
                args(json!({
                    "customerId": "CUST-0050",
                    "lines": [{ "productId": "PROD-010", "quantity": 1 }],
                    "idempotencyKey": format!("resilience-{i}")
                })),
                &cx,
            )
            .await;
        let result = outcome?;
        if result.is_error != Some(true) {
            succeeded += 1;
            if result
                .structured_content
                .as_ref()
                .is_some_and(|v| v["created"] == false)
            {
                lost_responses += 1;
            }
        }
        assert!(report.attempts.len() <= 8);
    }
    let (rows, _) = gw
        .call_tool_with_report(
            "sql__query",
            args(json!({
                "sql": "SELECT COUNT(*), COUNT(DISTINCT idempotency_key) FROM orders WHERE idempotency_key LIKE 'resilience-%'"
            })),
            &cx,
        )
        .await;
    let rows = rows?.structured_content.unwrap_or_default();
    assert_eq!(succeeded, 100, "every call eventually reported success");
    assert_eq!(
        rows["rows"][0][0],
        json!(succeeded),
        "one order per successful call"
    );
    assert_eq!(rows["rows"][0][1], json!(succeeded), "no key used twice");
    assert!(
        lost_responses > 0,
        "some responses were lost after the write and the retry returned the first order"
    );
    gw.shutdown().await;
    Ok(())
}

fn cosmos_http(url: &str, extra: Value) -> Value {
    let mut servers = json!({ "cosmos": { "type": "http", "url": url } });
    if let (Value::Object(s), Value::Object(e)) = (&mut servers, extra) {
        s.extend(e);
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_probes_and_closes() -> anyhow::Result<()> {
    let cosmos = HttpServer::start(
        "cosmos-mcp-server",
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--fail-tools".into(),
            "get_user_behavior".into(),
        ],
    )
    .await?;
    let gw = gateway(json!({
        "mcpServers": cosmos_http(&cosmos.url, json!({})),
        "orchestrator": { "servers": { "cosmos": {
            "retry": { "maxAttempts": 1 },
            "circuitBreaker": { "consecutiveFailures": 3, "openMs": 800 }
        } } }
    }))?;
    ready(&gw).await?;
    let cx = CallContext::default();
    let upstream_calls = || cosmos.count_lines(&["tool call", "get_user_behavior"]);
    let call = || async {
        answer(
            gw.call_tool(
                "cosmos__get_user_behavior",
                args(json!({ "userId": "CUST-0001" })),
                &cx,
            )
            .await,
        )
    };

    for _ in 0..3 {
        let r = call().await?;
        assert_eq!(kind(&r).as_deref(), Some("unavailable"));
        assert_eq!(reason(&r), None, "the server's own error passes through");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream_calls(), 3);

    // Open: refused at once, the upstream sees nothing.
    for _ in 0..20 {
        let started = Instant::now();
        let r = call().await?;
        assert_eq!(reason(&r).as_deref(), Some("circuit_open"), "{r:?}");
        assert!(
            r.meta
                .as_ref()
                .and_then(|m| m.get("retryAfterMs"))
                .is_some()
        );
        assert!(started.elapsed() < Duration::from_millis(50));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream_calls(), 3, "no call reached the server while open");

    // After openMs one probe goes through; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let probe = call().await?;
    assert_eq!(reason(&probe), None, "the probe reached the server");
    assert_eq!(reason(&call().await?).as_deref(), Some("circuit_open"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream_calls(), 4, "exactly one probe");

    // The faults stop; the next probe succeeds and closes the breaker.
    cosmos.signal("USR1")?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let healed = call().await?;
    assert_eq!(healed.is_error, Some(false), "{healed:?}");
    for _ in 0..5 {
        assert_eq!(call().await?.is_error, Some(false));
    }
    let transitions: Vec<String> = gw.upstreams[0]
        .policy
        .breaker()
        .transitions()
        .iter()
        .map(|t| format!("{:?}->{:?}", t.from, t.to))
        .collect();
    assert_eq!(
        transitions,
        [
            "Closed->Open",
            "Open->HalfOpen",
            "HalfOpen->Open",
            "Open->HalfOpen",
            "HalfOpen->Closed"
        ]
    );
    gw.shutdown().await;
    cosmos.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_admits_its_limit_rejects_the_rest_and_isolates_other_servers()
-> anyhow::Result<()> {
    let gw = gateway(json!({
        "mcpServers": {
            "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--latency-ms", "2000"] },
            "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", ":memory:"] }
        },
        "orchestrator": { "servers": { "cosmos": {
            "bulkhead": { "maxConcurrent": 4, "maxQueue": 4 },
            "retry": { "maxAttempts": 1 },
            "timeoutMs": 10000
        } } }
    }))?;
    ready(&gw).await?;
    let cosmos_calls = (0..50).map(|i| {
        let gw = gw.clone();
        async move {
            let started = Instant::now();
            let r = answer(
                gw.call_tool(
                    "cosmos__get_user_behavior",
                    args(json!({ "userId": format!("CUST-{:04}", i + 1) })),
                    &CallContext::default(),
                )
                .await,
            );
            (r, started.elapsed())
        }
    });
    let load = tokio::spawn(futures::future::join_all(cosmos_calls));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SQL is not queued behind cosmos: its calls finish while cosmos's are still running.
    for _ in 0..5 {
        let r = gw
            .call_tool(
                "sql__get_customer",
                args(json!({ "customerId": "CUST-0001" })),
                &CallContext::default(),
            )
            .await?;
        assert_eq!(r.is_error, Some(false));
    }
    let mid = gw.upstreams[0].policy.snapshot();
    assert_eq!(
        mid.bulkhead["running"], 4,
        "cosmos calls still running: {:?}",
        mid.bulkhead
    );
    assert_eq!(mid.bulkhead["queued"], 4);

    let results = load.await?;
    let rejected: Vec<_> = results
        .iter()
        .filter(|(r, _)| {
            r.as_ref()
                .is_ok_and(|r| reason(r).as_deref() == Some("bulkhead_full"))
        })
        .collect();
    let admitted = results
        .iter()
        .filter(|(r, _)| r.as_ref().is_ok_and(|r| r.is_error == Some(false)))
        .count();
    assert_eq!(rejected.len(), 42);
    assert_eq!(admitted, 8);
    assert!(
        rejected
            .iter()
            .all(|(_, elapsed)| *elapsed < Duration::from_millis(500)),
        "rejected at once"
    );
    assert_eq!(gw.upstreams[0].policy.snapshot().bulkhead["rejected"], 42);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_a_slow_call_and_retry_after_is_honoured() -> anyhow::Result<()> {
    let gw = gateway(json!({
        "mcpServers": {
            "slow": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--latency-ms", "1500"] },
            "tight": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--ru-per-second", "3"] }
        },
        "orchestrator": { "servers": {
            "slow": { "timeoutMs": 300, "retry": { "maxAttempts": 1 } },
            "tight": { "retry": { "maxAttempts": 4, "baseDelayMs": 1, "maxDelayMs": 2, "budgetRatio": 10.0 },
                       "circuitBreaker": { "consecutiveFailures": 0 } }
        } }
    }))?;
    ready(&gw).await?;
    let started = Instant::now();
    let r = answer(
        gw.call_tool(
            "slow__get_user_behavior",
            args(json!({ "userId": "CUST-0001" })),
            &CallContext::default(),
        )
        .await,
    )?;
    assert_eq!(reason(&r).as_deref(), Some("timeout"), "{r:?}");
    assert_eq!(kind(&r).as_deref(), Some("unavailable"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "ended by the timeout, not the latency"
    );

    // A cross-partition query costs more than 3 RU/s: throttled, with retryAfterMs.
    let mut honoured = 0;
    for _ in 0..3 {
        let (_, report) = gw
            .call_tool_with_report(
                "tight__query_items",
                args(json!({ "container": "sessions", "limit": 50 })),
                &CallContext::default(),
            )
            .await;
        for (attempt, delay) in report.attempts.iter().zip(&report.retry_delays_ms) {
            if let Some(after) = attempt.retry_after_ms {
                assert_eq!(attempt.outcome, "throttled");
                assert!(
                    *delay >= after,
                    "waited {delay} ms, server asked for {after} ms"
                );
                honoured += 1;
            }
        }
    }
    assert!(honoured > 0, "a throttled attempt was retried");
    gw.shutdown().await;
    Ok(())
}
