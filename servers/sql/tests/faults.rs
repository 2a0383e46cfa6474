//! Fault injection on the real `sql-mcp-server` binary: lost responses and the run-time switch.

use std::time::Duration;

use serde_json::json;
use testkit::{Client, TempDir, call, call_ok, connect_stdio, error_kind, text_of};

fn args(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), dir.arg()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

#[tokio::test]
async fn a_lost_response_still_writes_the_order_and_the_key_finds_it() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-fail-after")?;
    let order = json!({
        "customerId": "CUST-0007",
        "lines": [{ "productId": "PROD-004", "quantity": 2 }],
        "idempotencyKey": "lost-response-1"
    });

    let flaky = connect_stdio(
        "sql-mcp-server",
        &args(&dir, &["--failure-after-rate", "1.0"]),
    )
    .await?;
    let lost = call(&flaky, "create_order", order.clone()).await?;
    assert_eq!(
        error_kind(&lost).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&lost)
    );
    let meta = lost.meta.as_ref().expect("error _meta");
    assert_eq!(meta.get("retryable"), Some(&json!(true)));
    assert_eq!(meta.get("injected"), Some(&json!(true)));
    assert!(lost.structured_content.is_none(), "the response was lost");
    flaky.cancel().await?;

    // The same database without the fault: the order was written before the response was lost.
    let healthy = connect_stdio("sql-mcp-server", &args(&dir, &[])).await?;
    let rows = call_ok(
        &healthy,
        "query",
        json!({
            "sql": "SELECT id, customer_id FROM orders WHERE idempotency_key = ?1",
            "params": ["lost-response-1"]
        }),
    )
    .await?;
    let found = rows["rows"].as_array().expect("rows");
    assert_eq!(found.len(), 1, "exactly one order for the key: {rows}");
    assert_eq!(found[0][1], "CUST-0007");
    // The caller's retry with the same key gets that order back instead of a second one.
    let retried = call_ok(&healthy, "create_order", order).await?;
    assert_eq!(retried["created"], false);
    assert_eq!(retried["order"]["orderId"], found[0][0]);
    healthy.cancel().await?;
    Ok(())
}

/// Pids of running processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            pids.push(pid);
        }
    }
    pids
}

fn send(signal: &str, pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Calls `get_customer` until it fails (or succeeds) as asked; signals arrive asynchronously.
async fn until_get_customer(client: &Client, fails: bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let result = call(client, "get_customer", json!({ "customerId": "CUST-0001" })).await?;
        let failed = result.is_error == Some(true);
        if failed == fails {
            if failed {
                assert_eq!(error_kind(&result).as_deref(), Some("unavailable"));
            } else {
                assert_eq!(
                    result.structured_content.expect("customer")["customerId"],
                    "CUST-0001"
                );
            }
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "get_customer still {} after 10 s",
            if failed { "failing" } else { "succeeding" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigusr1_pauses_faults_and_sigusr2_resumes_them() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-fault-switch")?;
    let client = connect_stdio(
        "sql-mcp-server",
        &args(&dir, &["--fail-tools", "get_customer"]),
    )
    .await?;
    let pids = processes_with(&dir.arg());
    anyhow::ensure!(pids.len() == 1, "one server with {}: {pids:?}", dir.arg());
    let pid = pids[0];

    until_get_customer(&client, true).await?;
    send("USR1", pid)?;
    until_get_customer(&client, false).await?;
    send("USR2", pid)?;
    until_get_customer(&client, true).await?;
    // Both signals were handled, not fatal: the same process still answers.
    assert_eq!(processes_with(&dir.arg()), vec![pid]);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn fault_flags_can_come_from_the_environment() -> anyhow::Result<()> {
    // Each fault flag has an `MCP_FAULT_*` variable, for launchers that set env but not args
    // (an `mcp.json` `env` block, a container).
    let env = std::collections::HashMap::from([(
        "MCP_FAULT_FAIL_TOOLS".to_owned(),
        "get_customer".to_owned(),
    )]);
    let server = testkit::HttpServer::start_with_env(
        "sql-mcp-server",
        &["--data-dir".to_owned(), ":memory:".to_owned()],
        &env,
    )
    .await?;
    let client = server.connect(None).await?;
    let failed = call(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    assert_eq!(
        error_kind(&failed).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&failed)
    );
    let meta = failed.meta.as_ref().expect("error _meta");
    assert_eq!(meta.get("retryable"), Some(&json!(true)));
    assert_eq!(meta.get("injected"), Some(&json!(true)));
    // Only the named tool fails.
    let order = call_ok(
        &client,
        "get_order_details",
        json!({ "orderId": "ORD-00001" }),
    )
    .await?;
    assert_eq!(order["orderId"], "ORD-00001");
    client.cancel().await?;
    server.stop().await
}
