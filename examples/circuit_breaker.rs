//! A circuit breaker opening on a failing server, failing fast, and closing once it heals.
//!
//! Run: `cargo build --workspace --bins && cargo run -p mcp-orchestrator --example circuit_breaker`
//!
//! Starts the bundled Cosmos server over streamable HTTP with every call failing after 20 ms
//! (`--failure-rate 1 --latency-ms 20`), behind a breaker that opens once more than half of at
//! least 3 calls failed (the server answers, so it is the failure share that trips, not the
//! unreachable-in-a-row rule) and stays open for 1 s. Calls until it opens, then shows fast failures while open (µs, the server
//! sees nothing), heals the server with SIGUSR1 (which pauses its injected faults), waits out the
//! open period and shows the probe closing the breaker. After each call it prints the breaker's
//! state from the gateway's status report (`orchestrator://status`), and at the end its transitions.

use std::{path::Path, process::Stdio, time::Duration, time::Instant};

use anyhow::Context as _;
use orchestrator::{
    config::Config, gateway::Gateway, policy::outcome_label, status::StatusReport,
    upstream::CallContext,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The servers are in target/debug, beside target/debug/examples/circuit_breaker.
    let cosmos = kit::binaries::find("cosmos-mcp-server")?;
    // Started here rather than by the gateway, so the example knows its pid to signal.
    let mut server = tokio::process::Command::new(&cosmos)
        .args([
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            ":memory:",
            "--failure-rate",
            "1",
            "--latency-ms",
            "20",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().context("the server exited at once")?;
    let mut lines = BufReader::new(server.stderr.take().context("no stderr")?).lines();
    // The server logs `listening on http://127.0.0.1:PORT/mcp` once bound (port 0: a free one).
    let url = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line
                .split("listening on ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
            {
                return Ok(url.to_owned());
            }
        }
        anyhow::bail!("cosmos-mcp-server exited before listening")
    })
    .await
    .context("cosmos-mcp-server did not start listening")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let config = json!({
        "mcpServers": { "cosmos": { "url": url } },
        "orchestrator": { "servers": { "cosmos": {
            "retry": { "maxAttempts": 1 },
            "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.5, "minCalls": 3,
                                "openMs": 1000, "minOpenMs": 1000 }
        } } }
    });
    let config = Config::parse(&config.to_string(), Path::new("."), &|_| None)?;
    let gateway = Gateway::start(config);
    anyhow::ensure!(
        gateway.wait_ready(Duration::from_secs(30)).await,
        "the server did not connect"
    );
    // The breaker as `orchestrator://status` reports it.
    let breaker = || StatusReport::of(&gateway).servers[0].policy.breaker.clone();
    let mut n = 0;
    let mut call = async |phase: &str| {
        let args = json!({ "userId": "CUST-0001" });
        let started = Instant::now();
        let outcome = gateway
            .call_tool(
                "cosmos__get_user_behavior",
                args.as_object().cloned(),
                &CallContext::default(),
            )
            .await;
        let us = started.elapsed().as_micros();
        n += 1;
        let state = breaker()["state"].as_str().unwrap_or("?").to_owned();
        println!(
            "#{n:<2} {phase:<9} {:<14} {us:>8} µs  breaker: {state}",
            outcome_label(&outcome)
        );
        state
    };

    let mut opened = false;
    for _ in 0..5 {
        if call("failing").await == "open" {
            opened = true;
            break;
        }
    }
    for _ in 0..3 {
        call("open").await;
    }
    std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()?;
    println!("sent SIGUSR1 to cosmos-mcp-server (pid {pid}): its injected faults stop");
    let wait = breaker()["nextProbeInMs"].as_u64().unwrap_or(1000);
    println!("waiting {wait} ms for the open period to end; the next call is the probe");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    call("probe").await;
    let mut closed = true;
    for _ in 0..2 {
        closed &= call("recovered").await == "closed";
    }
    println!("transitions:");
    for t in gateway.upstreams()[0].policy().breaker().transitions() {
        println!(
            "  {} {} -> {} ({})",
            t.at.format("%H:%M:%S%.3f"),
            t.from,
            t.to,
            t.reason
        );
    }
    let opens = breaker()["opens"].clone();
    println!("opened: {opened}, closed again: {closed}, opens: {opens}");
    gateway.shutdown().await;
    server.kill().await?;
    Ok(())
}
