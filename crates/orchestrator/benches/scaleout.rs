//! Operating at scale on this machine, in two sections:
//!
//! 1. **Calls/s: one instance against two behind HAProxy.** Stateless HTTP instances
//!    (`serve --stateless`) in front of one SQL server reached over HTTP, `sql__get_customer`
//!    uncached, from 16 agents at once (each its own HTTP client, calls back to back): one instance
//!    called directly, one behind HAProxy (what the balancer itself costs), two behind HAProxy
//!    (the repository's `deploy/haproxy.cfg`, round-robin).
//! 2. **Cache latencies with Redis.** Two instances sharing one Redis, `sql__query` cached:
//!    sequential calls, each kind on its own keys: an L1 hit (the instance has it), an L2 hit
//!    (the other instance loaded it: this one reads Redis and fills its L1), and a miss (nobody
//!    has it: a Redis lookup, then the SQL server).
//!
//! Every process shares this machine's cores with the agents driving it, so two instances cannot
//! show more throughput than the cores allow: the figures say what the balancer and the second
//! process cost here, not what they gain on a machine with cores to spare.
//!
//! Run with `cargo bench -p mcp-orchestrator --bench scaleout` (release binaries, built first as
//! the pass-through bench does). Needs `haproxy` and `redis-server` installed (`.ci/run`
//! installs them). Knobs (environment): `SCALEOUT_CALLS` calls per throughput row (8000),
//! `SCALEOUT_LATENCY_CALLS` calls per latency row (1000). Without `--bench` (`cargo test
//! --benches`) it runs a tiny smoke round instead.

#[allow(dead_code)]
#[path = "passthrough/setup.rs"]
mod setup;

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use comfy_table::Table;
use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use testkit::{Client, HttpServer, TempDir, haproxy::Haproxy, redis::RedisServer};

/// Agents calling at once in the throughput rows.
const AGENTS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Settings {
    smoke: bool,
    calls: usize,
    latency_calls: usize,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// A stateless instance on `config`, quiet but for the line naming its URL.
async fn instance(config: &Path) -> anyhow::Result<HttpServer> {
    let args = setup::serve_args(config, &["--http", "127.0.0.1:0", "--stateless"]);
    let env = HashMap::from([
        (
            "RUST_LOG".to_owned(),
            "warn,kit::serve::http=info".to_owned(),
        ),
        (
            "MCP_ORCHESTRATOR_STATE_KEY".to_owned(),
            "scale-out-bench-state-key-0123456789abcdef".to_owned(),
        ),
    ]);
    HttpServer::spawn(setup::ORCH_BIN, &args, &env).await
}

async fn call(client: &Client, tool: &str, args: Value) -> anyhow::Result<()> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let result = client.peer().call_tool(params).await?;
    anyhow::ensure!(result.is_error != Some(true), "{tool}: {result:?}");
    Ok(())
}

/// `calls` calls of `sql__get_customer` from [`AGENTS`] agents on `url`; calls per second.
async fn throughput(url: &str, calls: usize) -> anyhow::Result<f64> {
    let mut agents = Vec::new();
    for _ in 0..AGENTS {
        agents.push(testkit::connect_url(url).await?);
    }
    let per_agent = calls.div_ceil(AGENTS);
    let started = Instant::now();
    let runs = agents.iter().enumerate().map(|(k, client)| async move {
        for i in 0..per_agent {
            let id = format!("CUST-{:04}", (k * per_agent + i) % 50 + 1);
            call(client, "sql__get_customer", json!({ "customerId": id })).await?;
        }
        Ok::<_, anyhow::Error>(())
    });
    for r in futures::future::join_all(runs).await {
        r?;
    }
    let rate = (per_agent * AGENTS) as f64 / started.elapsed().as_secs_f64();
    for a in agents {
        let _ = a.cancel().await;
    }
    Ok(rate)
}

/// Median and p99 in microseconds of `calls` sequential calls made by `one`.
async fn latency<F, Fut>(calls: usize, mut one: F) -> anyhow::Result<(u64, u64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut h = Histogram::<u64>::new(3)?;
    for i in 0..calls {
        let started = Instant::now();
        one(i).await?;
        h.record(started.elapsed().as_micros() as u64)?;
    }
    Ok((h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
}

fn query(n: usize) -> Value {
    json!({ "sql": format!("SELECT {n} AS n") })
}

async fn run(s: Settings) -> anyhow::Result<()> {
    let bins = setup::Binaries::ensure()?;
    println!(
        "mcp-orchestrator scale-out bench: {} binaries, {} cores{}",
        bins.profile(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.smoke {
            " (smoke run without --bench: a few calls only; figures are not meaningful)"
        } else {
            ""
        }
    );
    let dir = TempDir::new("scaleout")?;
    let sql = HttpServer::spawn(
        setup::SQL_BIN,
        &[
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--data-dir".to_owned(),
            ":memory:".to_owned(),
        ],
        &HashMap::from([(
            "RUST_LOG".to_owned(),
            "warn,kit::serve::http=info".to_owned(),
        )]),
    )
    .await?;
    let redis = RedisServer::start()?;
    let config = dir.path().join("mcp.json");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&json!({
            "mcpServers": { "sql": { "type": "http", "url": sql.url } },
            "orchestrator": {
                "reload": { "watch": false },
                "limits": { "maxConcurrentCallsPerClient": AGENTS },
                "cache": {
                    "redis": { "url": redis.url() },
                    "tools": { "sql.query": "long" }
                }
            }
        }))?,
    )?;
    let a = instance(&config).await?;
    let b = instance(&config).await?;

    // 1. Throughput.
    let one_lb = Haproxy::start(a.addr()?, a.addr()?).await?;
    let two_lb = Haproxy::start(a.addr()?, b.addr()?).await?;
    let warm = if s.smoke { 16 } else { 800 };
    throughput(&a.url, warm).await?;
    throughput(&two_lb.mcp_url(), warm).await?;
    let mut table = Table::new();
    table.set_header(["path", "agents", "calls", "calls/s"]);
    for (label, url) in [
        ("one instance, direct", a.url.clone()),
        ("one instance behind HAProxy", one_lb.mcp_url()),
        ("two instances behind HAProxy", two_lb.mcp_url()),
    ] {
        let rate = throughput(&url, s.calls).await.with_context(|| label)?;
        table.add_row([
            label.to_owned(),
            AGENTS.to_string(),
            s.calls.to_string(),
            format!("{rate:.0}"),
        ]);
    }
    println!("\nsql__get_customer (uncached), {AGENTS} agents at once, stateless HTTP instances");
    println!("{table}");
    one_lb.stop().await?;
    two_lb.stop().await?;

    // 2. Cache latencies: keys 0..n are loaded through A first; B then finds them in Redis.
    let on_a = testkit::connect_url(&a.url).await?;
    let on_b = testkit::connect_url(&b.url).await?;
    let n = s.latency_calls;
    let miss = latency(n, |i| call(&on_a, "sql__query", query(i))).await?;
    // A's background writes to Redis have landed well before B reads them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let l2 = latency(n, |i| call(&on_b, "sql__query", query(i))).await?;
    let l1 = latency(n, |i| call(&on_b, "sql__query", query(i))).await?;
    // The rows say what answered: check it did.
    let l2_hits = b
        .metric(None, "mcp_orchestrator_cache_l2_hits_total", "")
        .await?;
    let l2_misses = a
        .metric(None, "mcp_orchestrator_cache_l2_misses_total", "")
        .await?;
    anyhow::ensure!(
        l2_hits >= n as f64 && l2_misses >= n as f64,
        "expected {n} L2 hits on B and {n} L2 misses on A, saw {l2_hits} and {l2_misses}"
    );
    let mut table = Table::new();
    table.set_header(["sql__query answered by", "calls", "p50 µs", "p99 µs"]);
    for (label, (p50, p99)) in [
        ("L1 (this instance's memory)", l1),
        ("L2 (Redis, then filled into L1)", l2),
        ("miss (Redis lookup, then the SQL server)", miss),
    ] {
        table.add_row([
            label.to_owned(),
            n.to_string(),
            p50.to_string(),
            p99.to_string(),
        ]);
    }
    println!(
        "\nCache latencies through the HTTP front, sequential calls, two instances sharing one Redis"
    );
    println!("{table}");
    let _ = on_a.cancel().await;
    let _ = on_b.cancel().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"scaleout".contains(filter.as_str())
    {
        return Ok(());
    }
    let settings = if args.iter().any(|a| a == "--bench") {
        Settings {
            smoke: false,
            calls: env_usize("SCALEOUT_CALLS", 8000),
            latency_calls: env_usize("SCALEOUT_LATENCY_CALLS", 1000),
        }
    } else {
        Settings {
            smoke: true,
            calls: 32,
            latency_calls: 5,
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(settings))
}
