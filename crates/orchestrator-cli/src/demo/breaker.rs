//! `breaker`: a circuit breaker opening on failures, failing fast while open, probing once the
//! server heals (SIGUSR1 stops its injected faults) and closing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use orchestrator::gateway::Gateway;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use super::{Bins, Out, call, config, done, is_error, start};
use crate::output::table;

/// A breaker opening on failures, failing fast, probing and closing once the server heals.
pub(super) async fn run(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "breaker",
        "circuit breaker: failures until it opens, fast failures while open, the probe, recovery",
    );
    // A unique data folder: both the server's store and the marker to find its pid by.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let data_dir = std::env::temp_dir().join(format!(
        "mcp-orchestrator-demo-breaker-{}-{nanos}",
        std::process::id()
    ));
    let marker = data_dir.display().to_string();
    let result = with_server(bins, out, &marker).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

/// Starts the gateway on a Cosmos server that fails every call, and runs the [`steps`].
async fn with_server(bins: &Bins, out: &Out, data_dir: &str) -> anyhow::Result<Value> {
    const FAILURES: u32 = 3;
    const OPEN_MS: u64 = 1000;
    let servers = json!({
        "cosmos": bins.server(
            "cosmos-mcp-server",
            &["--data-dir", data_dir, "--fail-tools", "get_user_behavior"],
        )?
    });
    let gw = start(
        config(servers, |c| {
            // Only Cosmos here: drop what names the other servers.
            c["orchestrator"]["composites"] = json!({});
            c["orchestrator"]["cache"] = json!({});
            c["orchestrator"]["servers"] = json!({ "cosmos": {
                "retry": { "maxAttempts": 1 },
                "circuitBreaker": {
                    "consecutiveFailures": 0,
                    "failureRate": 0.5,
                    "minCalls": FAILURES,
                    "openMs": OPEN_MS,
                    "minOpenMs": OPEN_MS
                }
            } });
        })?,
        out,
    )
    .await?;
    let outcome = steps(&gw, out, data_dir, FAILURES, OPEN_MS).await;
    gw.shutdown().await;
    outcome
}

/// The calls, phase by phase, and the breaker's transitions.
async fn steps(
    gw: &Gateway,
    out: &Out,
    data_dir: &str,
    failures: u32,
    open_ms: u64,
) -> anyhow::Result<Value> {
    let breaker = gw
        .upstreams()
        .first()
        .context("no cosmos upstream")?
        .policy()
        .breaker()
        .clone();
    let mut calls = Vec::new();
    let mut t = table(&["#", "phase", "outcome", "time (µs)", "breaker after"]);
    let mut n = 0;
    let mut record = |phase: &str, r: &CallToolResult, took: Duration, state: &str| {
        n += 1;
        t.add_row([
            n.to_string(),
            phase.to_owned(),
            outcome(r),
            us(took).to_string(),
            state.to_owned(),
        ]);
        calls.push(json!({
            "phase": phase, "outcome": outcome(r), "us": us(took) as u64, "breaker": state
        }));
    };
    let one = || async {
        let started = Instant::now();
        let (r, _) = call(
            gw,
            "cosmos__get_user_behavior",
            json!({ "userId": "CUST-0001" }),
        )
        .await?;
        anyhow::Ok((r, started.elapsed()))
    };

    // 1. Failures until it opens.
    let mut opened = false;
    for _ in 0..failures + 2 {
        let (r, took) = one().await?;
        let state = breaker.state().as_str();
        record("failing", &r, took, state);
        if state == "open" {
            opened = true;
            break;
        }
    }
    // 2. Fast failures while open: the server sees nothing.
    let mut open_us = Vec::new();
    for _ in 0..5 {
        let (r, took) = one().await?;
        open_us.push(us(took) as u64);
        record("open", &r, took, breaker.state().as_str());
    }
    // 3. The server heals (SIGUSR1 pauses its faults); after openMs one probe goes through.
    let pid = pid_with_argument(data_dir).context("cannot find the cosmos server's pid")?;
    signal(pid, "USR1")?;
    out.line(format!(
        "sent SIGUSR1 to cosmos-mcp-server (pid {pid}): its injected faults stop"
    ));
    let bar = out.spinner(format!("waiting out the open period ({open_ms} ms)"));
    let wait = breaker
        .snapshot()
        .next_probe_in_ms
        .unwrap_or(open_ms)
        .min(open_ms);
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    done(bar);
    let (probe, took) = one().await?;
    record("probe", &probe, took, breaker.state().as_str());
    let mut recovered = !is_error(&probe);
    for _ in 0..3 {
        let (r, took) = one().await?;
        recovered &= !is_error(&r);
        record("recovered", &r, took, breaker.state().as_str());
    }
    out.table(t);

    let transitions = breaker.transitions();
    let mut tt = table(&["at", "from", "to", "why"]);
    for tr in &transitions {
        tt.add_row([
            tr.at.format("%H:%M:%S%.3f").to_string(),
            tr.from.as_str().to_owned(),
            tr.to.as_str().to_owned(),
            tr.reason.clone(),
        ]);
    }
    out.line("breaker transitions:");
    out.table(tt);
    let closed = breaker.state().as_str() == "closed"
        && transitions
            .last()
            .is_some_and(|t| t.to.as_str() == "closed");
    Ok(json!({
        "opened": opened,
        "closed": closed,
        "recovered": recovered,
        "openFailureUs": open_us,
        "calls": calls,
        "transitions": serde_json::to_value(&transitions)?,
    }))
}

/// `ok`, or the error kind and reason of a tool error.
fn outcome(r: &CallToolResult) -> String {
    if !is_error(r) {
        return "ok".into();
    }
    let meta = r.meta.as_ref();
    let kind = meta
        .and_then(|m| m.get("errorKind"))
        .and_then(Value::as_str)
        .unwrap_or("error");
    match meta.and_then(|m| m.get("reason")).and_then(Value::as_str) {
        Some(reason) => format!("{kind} ({reason})"),
        None => kind.to_owned(),
    }
}

/// Microseconds: fast failures while open take a few dozen.
fn us(d: Duration) -> u128 {
    d.as_micros()
}

/// Finds the pid of the process whose command line contains `marker` (Linux `/proc`).
fn pid_with_argument(marker: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
            .then_some(pid)
    })
}

/// Sends signal `name` (`USR1`, ...) to `pid`.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}
