//! The documented deployment: two stateless orchestrator instances behind a real HAProxy (the
//! repository's `deploy/haproxy.cfg`), sharing one Redis, in front of one SQL server reached over
//! HTTP. Every answer through the balancer is right, the instances share what they cache, and an
//! instance that drains on SIGTERM loses no call.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use testkit::{Client, HttpServer, TempDir, call, haproxy::Haproxy, redis::RedisServer};

/// The key both instances seal resumable state and task ids with.
const STATE_KEY: &str = "load-balancer-test-state-key-0123456789abcdef";

/// The SQL server over HTTP, and a config naming it and the shared Redis (for every instance),
/// caching `sql.get_customer`.
async fn upstream(
    dir: &TempDir,
    redis: &RedisServer,
) -> anyhow::Result<(HttpServer, std::path::PathBuf)> {
    let sql = HttpServer::start(
        "sql-mcp-server",
        &[
            "--data-dir".to_owned(),
            dir.path().join("sql").display().to_string(),
        ],
    )
    .await?;
    let path = dir.path().join("mcp.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({
            "mcpServers": { "sql": { "type": "http", "url": sql.url } },
            "orchestrator": {
                "reload": { "watch": false },
                "readiness": { "requiredServers": ["sql"] },
                "cache": {
                    "redis": { "url": redis.url() },
                    "tools": { "sql.get_customer": "short" }
                }
            }
        }))?,
    )?;
    Ok((sql, path))
}

/// One instance as the deployment runs it: stateless, with a drain delay.
async fn instance(config: &std::path::Path) -> anyhow::Result<HttpServer> {
    let args = [
        "serve",
        "--config",
        &config.display().to_string(),
        "--http",
        "127.0.0.1:0",
        "--stateless",
        "--drain-delay-ms",
        "1500",
    ]
    .map(String::from);
    let env = HashMap::from([
        (
            "MCP_ORCHESTRATOR_STATE_KEY".to_owned(),
            STATE_KEY.to_owned(),
        ),
        (
            "RUST_LOG".to_owned(),
            "warn,kit::serve::http=info".to_owned(),
        ),
    ]);
    HttpServer::spawn("mcp-orchestrator", &args, &env).await
}

/// `sql__get_customer` for `CUST-00NN`; an error unless the answer names that customer.
async fn checked_call(client: &Client, n: usize) -> anyhow::Result<()> {
    let id = format!("CUST-{:04}", n % 50 + 1);
    let result = call(client, "sql__get_customer", json!({ "customerId": id })).await?;
    anyhow::ensure!(result.is_error != Some(true), "{id}: tool error {result:?}");
    let got = result
        .structured_content
        .as_ref()
        .and_then(|v| v.get("customerId"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    anyhow::ensure!(got == id, "{id}: the answer is about {got:?}");
    Ok(())
}

/// Agent calls of `sql__get_customer` an instance answered (every one looks in the cache).
async fn served(instance: &HttpServer) -> anyhow::Result<f64> {
    instance
        .metric(
            None,
            "mcp_orchestrator_cache_lookups_total",
            "tool=\"sql.get_customer\"",
        )
        .await
}

/// The cache's lines of an instance's `/metrics`, for a failure message.
async fn cache_figures(instance: &HttpServer) -> anyhow::Result<String> {
    let text = reqwest::get(instance.url.replace("/mcp", "/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.contains("cache") && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Calls an instance sent to the SQL server.
async fn sent_upstream(instance: &HttpServer) -> anyhow::Result<f64> {
    instance
        .metric(
            None,
            "mcp_orchestrator_upstream_calls_total",
            "server=\"sql\"",
        )
        .await
}

#[tokio::test]
async fn a_thousand_calls_through_haproxy_are_all_answered_right() -> anyhow::Result<()> {
    let dir = TempDir::new("lb-calls")?;
    let redis = RedisServer::start()?;
    let (_sql, config) = upstream(&dir, &redis).await?;
    let a = instance(&config).await?;
    let b = instance(&config).await?;
    let lb = Haproxy::start(a.addr()?, b.addr()?).await?;

    let agents = 8;
    let per_agent = 125;
    let mut tasks = Vec::new();
    for k in 0..agents {
        let url = lb.mcp_url();
        tasks.push(tokio::spawn(async move {
            let client = testkit::connect_url(&url).await?;
            for i in 0..per_agent {
                checked_call(&client, k * per_agent + i).await?;
            }
            client.cancel().await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (on_a, on_b) = (served(&a).await?, served(&b).await?);
    assert_eq!(
        on_a + on_b,
        (agents * per_agent) as f64,
        "a={on_a} b={on_b}"
    );
    assert!(
        on_a > 0.0 && on_b > 0.0,
        "both instances served: a={on_a} b={on_b}"
    );
    // 50 customers: through the shared cache each is loaded about once for both instances (at
    // most once per instance, when both miss it at the same moment), not once per instance.
    let upstream = sent_upstream(&a).await? + sent_upstream(&b).await?;
    assert!(
        (50.0..100.0).contains(&upstream),
        "the SQL server saw {upstream} calls for 1,000 agent calls over 50 customers; a: {}; b: {}",
        cache_figures(&a).await?,
        cache_figures(&b).await?
    );
    lb.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_instance_draining_on_sigterm_loses_no_call() -> anyhow::Result<()> {
    let dir = TempDir::new("lb-drain")?;
    let redis = RedisServer::start()?;
    let (_sql, config) = upstream(&dir, &redis).await?;
    let a = instance(&config).await?;
    let b = instance(&config).await?;
    let lb = Haproxy::start(a.addr()?, b.addr()?).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..6 {
        let url = lb.mcp_url();
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = testkit::connect_url(&url).await?;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                checked_call(&client, k * 1000 + i)
                    .await
                    .map_err(|e| e.context(format!("agent {k}, call {i}")))?;
                done.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            client.cancel().await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = done.load(Ordering::SeqCst);
    // A drains: /readyz 503 at once, serving for the drain delay, then it closes and exits.
    a.signal("TERM")?;
    // HAProxy checks every 200 ms: well within 600 ms it has taken A out of rotation, while A
    // still serves (its drain delay is 1.5 s), so A gets no new call from then on.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out_of_rotation = served(&a).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served(&a).await?,
        out_of_rotation,
        "no call reached the draining instance once its /readyz said 503"
    );
    assert!(out_of_rotation > 0.0, "a served calls before it drained");
    a.stop().await?;
    let drained_at = done.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await??;
    }
    let total = done.load(Ordering::SeqCst);
    assert!(before > 0, "calls ran before the drain");
    assert!(total > drained_at, "calls went on through b after a exited");
    lb.stop().await?;
    drop(b);
    Ok(())
}
