//! The `query` tool's limits on the real binary: a result over its byte cap and a statement over
//! its time limit fail at once, with a tool error naming the flag that sets the limit, marked not
//! retryable (so the orchestrator does not repeat them), and a huge result never takes the
//! server's memory with it.

use anyhow::Context;
use serde_json::{Value, json};
use testkit::{HttpServer, call, call_ok, error_kind, text_of};

const BIN: &str = "sql-mcp-server";

fn args(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), ":memory:".to_owned()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// The server's peak resident memory so far, in bytes (`VmHWM`).
fn peak_rss(server: &HttpServer) -> anyhow::Result<u64> {
    let pid = server.child.id().context("server exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/PID/status")?;
    Ok(kib * 1024)
}

/// Asserts `result` is the not-retryable `invalid` refusal of a limit, naming `flag`.
fn assert_limit_refusal(result: &rmcp::model::CallToolResult, flag: &str, reason: &str) {
    assert_eq!(result.is_error, Some(true), "{}", text_of(result));
    assert_eq!(error_kind(result).as_deref(), Some("invalid"));
    let error = kit::ToolError::from_call_tool_result(result).expect("a tool error");
    assert!(!error.retryable, "a limit refusal is not retryable");
    assert!(
        error.message.contains(flag),
        "the message names {flag}: {}",
        error.message
    );
    assert_eq!(error.extra_meta.get("reason"), Some(&Value::from(reason)));
}

#[tokio::test]
async fn a_result_over_the_byte_cap_fails_fast_naming_the_flag_and_memory_stays_low()
-> anyhow::Result<()> {
    let server = HttpServer::start(BIN, &args(&[])).await?;
    let client = server.connect(None).await?;
    let before = peak_rss(&server)?;
    // 30 rows of 2 MB each: 60 MB of rows, 60 times the default cap of 1 MiB.
    let huge = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) \
                SELECT i, printf('%.*c', 2000000, 'x') AS pad FROM n";
    let result = call(&client, "query", json!({ "sql": huge })).await?;
    assert_limit_refusal(&result, "--query-max-result-bytes", "query_result_bytes");
    let error = kit::ToolError::from_call_tool_result(&result).expect("a tool error");
    assert_eq!(error.extra_meta.get("limit"), Some(&json!(1024 * 1024)));
    let after = peak_rss(&server)?;
    // Without the cap the rows, their JSON and the result's text copy of it come to several
    // hundred MB; with it, reading stops at the first 2 MB value.
    assert!(
        after < before + 64 * 1024 * 1024,
        "peak RSS went from {before} to {after} bytes"
    );
    // The server still answers, and a result under the cap is whole.
    let rows = call_ok(
        &client,
        "query",
        json!({ "sql": "SELECT id FROM customers ORDER BY id" }),
    )
    .await?;
    assert_eq!(rows["rowCount"], 200);
    assert_eq!(rows["truncated"], false);
    client.cancel().await?;
    server.stop().await
}

#[tokio::test]
async fn the_byte_cap_is_a_flag() -> anyhow::Result<()> {
    let server = HttpServer::start(BIN, &args(&["--query-max-result-bytes", "2048"])).await?;
    let client = server.connect(None).await?;
    let result = call(
        &client,
        "query",
        json!({ "sql": "SELECT id, customer_id FROM orders" }),
    )
    .await?;
    assert_limit_refusal(&result, "--query-max-result-bytes", "query_result_bytes");
    assert!(
        text_of(&result).contains("2048 bytes"),
        "{}",
        text_of(&result)
    );
    let small = call_ok(
        &client,
        "query",
        json!({ "sql": "SELECT id FROM orders LIMIT 10" }),
    )
    .await?;
    assert_eq!(small["rowCount"], 10);
    client.cancel().await?;
    server.stop().await
}

#[tokio::test]
async fn a_runaway_query_is_interrupted_at_the_time_limit_naming_the_flag() -> anyhow::Result<()> {
    let server = HttpServer::start(BIN, &args(&["--query-timeout-ms", "200"])).await?;
    let client = server.connect(None).await?;
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT COUNT(*) FROM n";
    let result = call(&client, "query", json!({ "sql": endless })).await?;
    assert_limit_refusal(&result, "--query-timeout-ms", "query_time_limit");
    assert!(text_of(&result).contains("200 ms"), "{}", text_of(&result));
    let one = call_ok(&client, "query", json!({ "sql": "SELECT 1 AS one" })).await?;
    assert_eq!(one["rows"], json!([[1]]));
    client.cancel().await?;
    server.stop().await
}
