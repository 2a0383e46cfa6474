//! Two orchestrator instances (HTTP fronts) sharing one Redis as the cache's L2, in front of one
//! SQL server: what one caches the other serves, a write through one invalidates the other's
//! copies, and a Redis outage costs sharing, never an answer.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use testkit::{Client, HttpServer, TempDir, bin_path, call, read_status, redis::RedisServer};

/// How long a condition that travels through Redis may take before the test fails: the test
/// waits for the condition, not for a time.
const PATIENCE: Duration = Duration::from_secs(30);

/// The repo's mcp.json: SQL over HTTP (one server, so a write through either instance is seen
/// by both), Cosmos and REST per instance, `sql.get_customer` cached, and Redis from the env.
fn config(sql_url: &str) -> anyhow::Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    config["mcpServers"] = json!({
        "sql": { "type": "http", "url": sql_url },
        "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:"] },
        "rest": { "command": bin_path("rest-mcp-server")?, "args": [] }
    });
    let cache = &mut config["orchestrator"]["cache"];
    cache["tools"]["sql.get_customer"] = json!("short");
    // The URL comes through `${env:..}`, as a password would.
    cache["redis"] = json!({ "url": "${env:SHARED_CACHE_TEST_REDIS}", "timeoutMs": 200 });
    Ok(config)
}

struct Instance {
    server: HttpServer,
    client: Client,
}

impl Instance {
    async fn start(config: &std::path::Path, redis: &RedisServer) -> anyhow::Result<Self> {
        let env = HashMap::from([("SHARED_CACHE_TEST_REDIS".to_owned(), redis.url())]);
        let server = HttpServer::orchestrator(config, &env).await?;
        let client = server.connect(None).await?;
        let instance = Self { server, client };
        instance
            .until(
                "its upstreams are connected and it hears invalidations",
                |s| {
                    s["servers"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|u| u["connected"] == json!(true)))
                        && s["cache"]["redis"]["subscribed"] == json!(true)
                },
            )
            .await?;
        Ok(instance)
    }

    async fn status(&self) -> anyhow::Result<Value> {
        read_status(&self.client).await
    }

    /// Waits until its status satisfies `condition`.
    async fn until(&self, what: &str, condition: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        self.until_within(what, PATIENCE, condition).await
    }

    /// [`Instance::until`], failing after `patience`.
    async fn until_within(
        &self,
        what: &str,
        patience: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let status = self.status().await?;
            if condition(&status) {
                return Ok(status);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Upstream calls it made to the SQL server.
    async fn sql_calls(&self) -> anyhow::Result<u64> {
        let status = self.status().await?;
        status["servers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "sql"))
            .and_then(|s| s["calls"].as_u64())
            .context("sql in status")
    }

    /// Waits until it has stored `n` entries in Redis.
    async fn wrote(&self, n: u64) -> anyhow::Result<()> {
        self.wrote_within(n, PATIENCE).await
    }

    /// [`Instance::wrote`], failing after `patience`.
    async fn wrote_within(&self, n: u64, patience: Duration) -> anyhow::Result<()> {
        self.until_within(&format!("{n} entries are in redis"), patience, |s| {
            s["cache"]["redis"]["writes"].as_u64() >= Some(n)
        })
        .await
        .map(drop)
    }

    async fn call(&self, tool: &str, args: Value) -> anyhow::Result<CallToolResult> {
        let result = call(&self.client, tool, args).await?;
        anyhow::ensure!(
            result.is_error != Some(true),
            "{tool} failed: {}",
            testkit::text_of(&result)
        );
        Ok(result)
    }
}

fn cached(r: &CallToolResult) -> bool {
    r.meta.as_ref().and_then(|m| m.get("cached")) == Some(&json!(true))
}

fn revenue(r: &CallToolResult) -> f64 {
    r.structured_content.clone().unwrap_or_default()["revenue"]
        .as_f64()
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_results_and_invalidations_and_outlive_a_redis_outage()
-> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let dir = TempDir::new("shared-cache")?;
    let sql = HttpServer::start(
        "sql-mcp-server",
        &[
            "--data-dir".to_owned(),
            dir.path().join("sql").display().to_string(),
        ],
    )
    .await?;
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config(&sql.url)?)?)?;
    let a = Instance::start(&path, &redis).await?;
    let b = Instance::start(&path, &redis).await?;

    // Cached through A, an L2 hit on B: the SQL server is asked once, by A.
    let customer = json!({ "customerId": "CUST-0001" });
    let first = a.call("sql__get_customer", customer.clone()).await?;
    assert!(!cached(&first));
    a.wrote(1).await?;
    let on_b = b.call("sql__get_customer", customer.clone()).await?;
    assert!(cached(&on_b), "B answered from Redis");
    assert_eq!(on_b.structured_content, first.structured_content);
    assert_eq!((a.sql_calls().await?, b.sql_calls().await?), (1, 0));
    assert_eq!(b.status().await?["cache"]["redis"]["hits"], json!(1));

    // The dashboard cached through A (and shared with B)...
    let dashboard = a.call("executive_dashboard", json!({})).await?;
    assert!(!cached(&dashboard));
    assert!(cached(&a.call("executive_dashboard", json!({})).await?));
    a.wrote(2).await?;
    assert!(cached(&b.call("executive_dashboard", json!({})).await?));
    // ...until an order through B: A's next answers have the new figures (A drops its copy when
    // B's message arrives, and Redis's copy went before B answered).
    let order = b
        .call(
            "sql__create_order",
            json!({ "customerId": "CUST-0100", "lines": [{ "productId": "PROD-001", "quantity": 2 }], "idempotencyKey": "shared-cache-1" }),
        )
        .await?;
    let total = order.structured_content.unwrap_or_default()["order"]["total"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(total > 0.0);
    let expected = revenue(&dashboard) + total;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let after = a.call("executive_dashboard", json!({})).await?;
        if (revenue(&after) - expected).abs() < 0.01 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "A still serves the dashboard from before the order"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B, whose own copy went with the write, recomputes (or takes A's fresh one from Redis).
    let on_b = b.call("executive_dashboard", json!({})).await?;
    assert!((revenue(&on_b) - expected).abs() < 0.01);

    // Redis stops: both instances answer every call, from their own memory or the upstreams.
    redis.stop()?;
    for (i, instance) in [&a, &b, &a, &b].into_iter().enumerate() {
        let id = format!("CUST-00{:02}", 10 + i);
        instance
            .call("sql__get_customer", json!({ "customerId": id }))
            .await?;
        instance.call("executive_dashboard", json!({})).await?;
        instance.call("sql__get_customer", customer.clone()).await?;
    }
    let down = a
        .until("A reports redis unavailable", |s| {
            s["cache"]["redis"]["connected"] == json!(false)
        })
        .await?;
    assert!(
        down["cache"]["redis"]["errors"].as_u64() >= Some(1),
        "{down}"
    );
    assert!(!down.to_string().contains("SHARED_CACHE"), "{down}");

    // Redis back: both resubscribe by themselves, and sharing resumes.
    redis.restart()?;
    for instance in [&a, &b] {
        instance
            .until("it hears invalidations again", |s| {
                s["cache"]["redis"]["subscribed"] == json!(true)
            })
            .await?;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut round = 0;
    loop {
        round += 1;
        let args = json!({ "customerId": format!("CUST-{:04}", 30 + round) });
        let writes = a.status().await?["cache"]["redis"]["writes"]
            .as_u64()
            .unwrap_or(0);
        a.call("sql__get_customer", args.clone()).await?;
        // Redis may still be resting after the outage, and then A stored nothing: next round.
        if a.wrote_within(writes + 1, Duration::from_secs(2))
            .await
            .is_ok()
            && cached(&b.call("sql__get_customer", args).await?)
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "sharing did not resume after redis came back"
        );
    }
    sql.stop().await?;
    a.server.stop().await?;
    b.server.stop().await
}
