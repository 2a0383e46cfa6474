//! `orchestrator.limits` end to end, through `mcp-orchestrator serve --http` in front of the real
//! sql server: a result over `maxResultBytes` arrives cut with a marker, a `forEach` over
//! `maxForEachItems` fails its step naming the limit, the per-client cap refuses one agent's
//! extra call while another agent's calls go through, and a noisy upstream's stderr reaches the
//! log capped, with a "dropped" line.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use testkit::{HttpServer, PeerClient, TempDir, bin_path, call, error_kind, read_status, text_of};

/// The marker every truncated result carries (`orchestrator::limits::result_size::MARKER_PREFIX`).
const MARKER: &str = "[truncated by mcp-orchestrator:";

/// The sql server over stdio with a throwaway database, plus `extra` arguments.
fn sql(extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec!["--data-dir", ":memory:"];
    args.extend_from_slice(extra);
    Ok(json!({ "command": bin_path("sql-mcp-server")?, "args": args }))
}

/// Writes `mcp.json` with `servers` and `orchestrator`, and serves it over HTTP.
async fn serve(dir: &TempDir, servers: Value, orchestrator: Value) -> anyhow::Result<HttpServer> {
    HttpServer::spawn(
        "mcp-orchestrator",
        &serve_args(dir, servers, orchestrator)?,
        &HashMap::new(),
    )
    .await
}

fn serve_args(dir: &TempDir, servers: Value, orchestrator: Value) -> anyhow::Result<Vec<String>> {
    let path = dir.path().join("mcp.json");
    let config = json!({ "mcpServers": servers, "orchestrator": orchestrator });
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok([
        "serve",
        "--config",
        &path.display().to_string(),
        "--http",
        "127.0.0.1:0",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect())
}

/// How many times the front enforced `limit` (`clientCalls`, `resultBytes`), read from its
/// `/metrics`; 0 before the first time.
async fn enforced(server: &HttpServer, limit: &str) -> anyhow::Result<f64> {
    let base = server.url.strip_suffix("/mcp").context("an /mcp url")?;
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let label = format!("limit=\"{limit}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("mcp_orchestrator_limits_enforced_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// Like [`serve`], keeping every stderr line from the start ([`HttpServer::spawn`] skips the lines
/// before "listening", which is when a server started over stdio writes its first output).
async fn serve_keeping_all_logs(
    dir: &TempDir,
    servers: Value,
    orchestrator: Value,
) -> anyhow::Result<HttpServer> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(serve_args(dir, servers, orchestrator)?)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let found = stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find_map(|l: &String| {
                let rest = &l[l.find("listening on http://")? + "listening on ".len()..];
                Some(rest.split_whitespace().next()?.to_owned())
            });
        if let Some(url) = found {
            break url;
        }
        ensure!(Instant::now() < deadline, "the orchestrator never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(HttpServer { child, url, stderr })
}

fn meta(result: &CallToolResult, key: &str) -> Value {
    result
        .meta
        .as_ref()
        .and_then(|m| m.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_arrives_truncated_with_a_marker() -> anyhow::Result<()> {
    let dir = TempDir::new("limits-result")?;
    let server = serve(
        &dir,
        json!({ "sql": sql(&[])? }),
        json!({ "limits": { "maxResultBytes": 4096 } }),
    )
    .await?;
    let agent = server.connect(None).await?;

    let result = call(
        &agent,
        "sql__query",
        json!({ "sql": "SELECT * FROM orders ORDER BY id LIMIT 300" }),
    )
    .await?;
    ensure!(result.is_error != Some(true), "{}", text_of(&result));
    let size = serde_json::to_vec(&result)?.len();
    ensure!(size <= 4096, "the agent received {size} bytes");
    let text = text_of(&result);
    let (kept, marker) = text
        .split_once("… ")
        .context("the text ends with a marker")?;
    ensure!(
        marker.starts_with(MARKER) && marker.contains("over the 4 KiB limit"),
        "{marker}"
    );
    ensure!(
        kept.starts_with("{\"columns\":"),
        "the start of the answer is kept: {kept}"
    );
    let truncated = meta(&result, "truncated");
    let original = truncated["originalBytes"].as_u64().unwrap_or(0);
    ensure!(
        original > 20_000,
        "300 orders are far over 4 KiB: {truncated}"
    );
    ensure!(truncated["limitBytes"] == 4096, "{truncated}");
    ensure!(
        enforced(&server, "resultBytes").await? == 1.0,
        "counted in /metrics"
    );
    ensure!(enforced(&server, "clientCalls").await? == 0.0);
    let limits = read_status(&agent).await?["limits"].clone();
    ensure!(
        limits["maxResultBytes"] == 4096
            && limits["enforced"]["resultBytes"] == 1
            && limits["enforced"]["clientCalls"] == 0,
        "the limit and its cut are in orchestrator://status: {limits}"
    );
    ensure!(
        truncated["structuredContentDropped"] == true && result.structured_content.is_none(),
        "{truncated}"
    );
    ensure!(
        meta(&result, "correlationId").is_string(),
        "the rest of _meta survives"
    );

    // A small answer is untouched.
    let small = call(
        &agent,
        "sql__get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    ensure!(small.structured_content.is_some() && meta(&small, "truncated").is_null());
    ensure!(!text_of(&small).contains(MARKER));

    agent.cancel().await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_for_each_over_the_limit_fails_its_step_naming_the_limit() -> anyhow::Result<()> {
    let dir = TempDir::new("limits-foreach")?;
    let composite = |limit: u32| {
        json!({
            "description": "The best customers, each looked up again.",
            "steps": {
                "top": { "call": "sql.get_top_customers", "args": { "limit": limit }, "critical": true },
                "each": { "call": "sql.get_customer", "forEach": "${top.customers}", "as": "c",
                          "args": { "customerId": "${c.customerId}" }, "critical": true }
            },
            "output": { "customers": "${each}" }
        })
    };
    let server = serve(
        &dir,
        json!({ "sql": sql(&[])? }),
        json!({
            "limits": { "maxForEachItems": 10 },
            "composites": { "top_fifty": composite(50), "top_ten": composite(10) }
        }),
    )
    .await?;
    let agent = server.connect(None).await?;

    let failed = call(&agent, "top_fifty", json!({})).await?;
    ensure!(failed.is_error == Some(true), "{}", text_of(&failed));
    ensure!(
        error_kind(&failed).as_deref() == Some("invalid"),
        "{failed:?}"
    );
    let message = text_of(&failed);
    for needed in [
        "step `each`",
        "50 items",
        "limit of 10",
        "orchestrator.limits.maxForEachItems",
    ] {
        ensure!(
            message.contains(needed),
            "`{needed}` missing from: {message}"
        );
    }
    ensure!(meta(&failed, "failedStep") == "each", "{failed:?}");

    // At the limit, the fan-out runs whole.
    let ok = call(&agent, "top_ten", json!({})).await?;
    ensure!(ok.is_error != Some(true), "{}", text_of(&ok));
    let customers = ok
        .structured_content
        .as_ref()
        .and_then(|v| v["customers"].as_array())
        .map(Vec::len);
    ensure!(customers == Some(10), "{ok:?}");

    agent.cancel().await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_cap_refuses_the_extra_call_while_other_clients_proceed()
-> anyhow::Result<()> {
    let dir = TempDir::new("limits-client")?;
    let server = serve(
        &dir,
        json!({ "sql": sql(&["--latency-ms", "1500"])? }),
        json!({ "limits": { "maxConcurrentCallsPerClient": 2 } }),
    )
    .await?;
    let greedy = server.connect(None).await?;
    let polite = server.connect(None).await?;

    // Each call with the moment it ended, to order refusals against served calls.
    let timed = |agent: PeerClient, id: &'static str| async move {
        let result = call(&agent, "sql__get_customer", json!({ "customerId": id })).await;
        (result, Instant::now())
    };
    let greedy_calls: Vec<_> = ["CUST-0001", "CUST-0002", "CUST-0003"]
        .into_iter()
        .map(|id| tokio::spawn(timed(PeerClient(greedy.peer().clone()), id)))
        .collect();
    let polite_calls: Vec<_> = ["CUST-0004", "CUST-0005"]
        .into_iter()
        .map(|id| tokio::spawn(timed(PeerClient(polite.peer().clone()), id)))
        .collect();

    let mut refused = Vec::new();
    let mut served = Vec::new();
    for handle in greedy_calls {
        let (result, ended) = handle.await?;
        let result = result?;
        if result.is_error == Some(true) {
            refused.push((result, ended));
        } else {
            served.push(ended);
        }
    }
    ensure!(served.len() == 2, "two of the greedy agent's calls ran");
    ensure!(refused.len() == 1, "its third was refused: {refused:?}");
    let (rejection, ended) = &refused[0];
    ensure!(
        served.iter().all(|s| ended < s),
        "refused at once, not queued behind the two running calls"
    );
    ensure!(error_kind(rejection).as_deref() == Some("throttled"));
    ensure!(
        enforced(&server, "clientCalls").await? == 1.0,
        "counted in /metrics"
    );
    let limits = read_status(&polite).await?["limits"].clone();
    ensure!(
        limits["maxConcurrentCallsPerClient"] == 2 && limits["enforced"]["clientCalls"] == 1,
        "the limit and its refusal are in orchestrator://status: {limits}"
    );
    ensure!(meta(rejection, "retryable") == true);
    ensure!(
        meta(rejection, "retryAfterMs")
            .as_u64()
            .is_some_and(|ms| ms <= 1_000)
    );
    ensure!(meta(rejection, "reason") == "client_limit" && meta(rejection, "limit") == 2);
    let message = text_of(rejection);
    ensure!(
        message.contains("at most 2") && message.contains("maxConcurrentCallsPerClient"),
        "{message}"
    );
    for handle in polite_calls {
        let (result, _) = handle.await?;
        let result = result?;
        ensure!(
            result.is_error != Some(true),
            "the other agent is not starved: {}",
            text_of(&result)
        );
    }
    // Once its calls are done, the greedy agent may call again.
    let again = call(
        &greedy,
        "sql__get_customer",
        json!({ "customerId": "CUST-0006" }),
    )
    .await?;
    ensure!(again.is_error != Some(true), "{}", text_of(&again));

    greedy.cancel().await?;
    polite.cancel().await?;
    server.stop().await
}

/// A "server" that floods stderr (one 20,000-byte line, then 5,000 short lines) and then becomes
/// the real sql server.
fn noisy_sql(dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("noisy-sql.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             head -c 20000 /dev/zero | tr '\\0' 'x' >&2\n\
             echo >&2\n\
             yes 'noise from a chatty server' | head -n 5000 >&2\n\
             exec '{}' \"$@\"\n",
            bin_path("sql-mcp-server")?.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_upstream_does_not_flood_the_log() -> anyhow::Result<()> {
    let dir = TempDir::new("limits-stderr")?;
    let server = serve_keeping_all_logs(
        &dir,
        json!({ "sql": {
            "command": noisy_sql(dir.path())?,
            "args": ["--data-dir", ":memory:"],
            "env": { "RUST_LOG": "trace" }
        } }),
        json!({ "limits": { "upstreamStderrLinesPerSecond": 50, "upstreamStderrMaxLineBytes": 500 } }),
    )
    .await?;
    // The server answers: the noise cost it nothing.
    let agent = server.connect(None).await?;
    let result = call(
        &agent,
        "sql__get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    ensure!(result.is_error != Some(true), "{}", text_of(&result));

    let deadline = Instant::now() + Duration::from_secs(15);
    while server.count_lines(&["lines of sql stderr dropped"]) == 0 {
        ensure!(Instant::now() < deadline, "no \"dropped\" line was logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noise = server.count_lines(&["noise from a chatty server"]);
    let logged_from_sql = server.count_lines(&["server=sql"]);
    // The burst falls in one or two one-second windows of 50 lines each (the long line first).
    ensure!(
        (49..=100).contains(&noise),
        "{noise} noise lines were logged"
    );
    let stderr = server.stderr.lock().map(|l| l.clone()).unwrap_or_default();
    let dropped: u64 = stderr
        .iter()
        .filter(|l| l.contains("lines of sql stderr dropped"))
        .filter_map(|l| {
            let at = l.find(" lines of sql stderr dropped")?;
            l[..at].rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    ensure!(
        dropped >= 4_800,
        "the dropped lines are counted ({dropped}): {:?}",
        stderr
            .iter()
            .filter(|l| l.contains("dropped"))
            .collect::<Vec<_>>()
    );
    // The long line came first in its window: logged, cut to 500 bytes, the cut counted.
    let long: Vec<_> = stderr.iter().filter(|l| l.contains("xxxx")).collect();
    ensure!(long.len() == 1, "{long:?}");
    ensure!(
        long[0].contains(&format!("{}… [19500 bytes cut]", "x".repeat(500)))
            && long[0].len() < 1_000,
        "{}",
        long[0]
    );
    ensure!(
        logged_from_sql < 400,
        "{logged_from_sql} lines from sql: the trace-level chatter is capped too"
    );

    agent.cancel().await?;
    server.stop().await
}
