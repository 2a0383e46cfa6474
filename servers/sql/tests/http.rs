//! The real `sql-mcp-server` binary over streamable HTTP, with its security checks.

mod common;

use std::time::Duration;

use serde_json::json;
use testkit::{HttpServer, Lifecycle, call, call_ok};

fn memory() -> Vec<String> {
    vec!["--data-dir".into(), ":memory:".into()]
}

fn initialize_body() -> serde_json::Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "raw-http-test", "version": "1" }
        }
    })
}

async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> anyhow::Result<reqwest::Response> {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Ok(req.body(body).send().await?)
}

#[tokio::test]
async fn lists_and_calls_every_tool_over_http_with_both_protocol_versions() -> anyhow::Result<()> {
    let server = HttpServer::start("sql-mcp-server", &memory()).await?;
    let client = server.connect(None).await?;
    common::check_catalog(&client).await?;
    common::call_every_tool(&client, "http-every-tool").await?;
    common::check_errors(&client).await?;
    client.cancel().await?;

    let stateless = server.connect_with(None, Lifecycle::Stateless).await?;
    let order = call_ok(
        &stateless,
        "get_order_details",
        json!({ "orderId": "ORD-00100" }),
    )
    .await?;
    assert_eq!(order["orderId"], "ORD-00100");
    stateless.cancel().await?;
    server.stop().await
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_a_local_one_accepted() -> anyhow::Result<()> {
    let server = HttpServer::start("sql-mcp-server", &memory()).await?;
    let foreign = post(
        &server.url,
        &[("Origin", "https://evil.example")],
        initialize_body().to_string(),
    )
    .await?;
    assert_eq!(foreign.status(), 403);
    let local = post(
        &server.url,
        &[("Origin", "http://localhost:6274")],
        initialize_body().to_string(),
    )
    .await?;
    assert_eq!(local.status(), 200);
    let none = post(&server.url, &[], initialize_body().to_string()).await?;
    assert_eq!(none.status(), 200, "non-browser clients send no Origin");
    server.stop().await
}

#[tokio::test]
async fn a_token_is_required_when_configured() -> anyhow::Result<()> {
    let mut args = memory();
    args.extend(["--token".into(), "s3cret-token".into()]);
    let server = HttpServer::start("sql-mcp-server", &args).await?;
    let missing = post(&server.url, &[], initialize_body().to_string()).await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let wrong = post(
        &server.url,
        &[("Authorization", "Bearer nope")],
        initialize_body().to_string(),
    )
    .await?;
    assert_eq!(wrong.status(), 401);

    let client = server.connect(Some("s3cret-token")).await?;
    call_ok(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    client.cancel().await?;
    server.stop().await
}

#[tokio::test]
async fn an_oversized_body_gets_413() -> anyhow::Result<()> {
    let mut args = memory();
    args.extend(["--max-body-bytes".into(), "65536".into()]);
    let server = HttpServer::start("sql-mcp-server", &args).await?;
    let big = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "query", "arguments": { "sql": "x".repeat(100_000) } }
    });
    let response = post(&server.url, &[], big.to_string()).await?;
    assert_eq!(response.status(), 413);
    server.stop().await
}

#[tokio::test]
async fn server_discover_answers_for_stateless_clients() -> anyhow::Result<()> {
    let server = HttpServer::start("sql-mcp-server", &memory()).await?;
    let discover = json!({
        "jsonrpc": "2.0", "id": 1, "method": "server/discover",
        "params": { "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": { "name": "t", "version": "1" },
            "io.modelcontextprotocol/clientCapabilities": {}
        } }
    });
    let response = post(
        &server.url,
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "server/discover"),
        ],
        discover.to_string(),
    )
    .await?;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await?;
    let versions = body["result"]["supportedVersions"]
        .as_array()
        .expect("versions");
    assert!(versions.contains(&json!("2026-07-28")));
    assert!(versions.contains(&json!("2025-11-25")));
    server.stop().await
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish() -> anyhow::Result<()> {
    let mut args = memory();
    args.extend(["--latency-ms".into(), "700".into()]);
    let server = HttpServer::start("sql-mcp-server", &args).await?;
    let client = server.connect(None).await?;
    let pending = tokio::spawn(async move {
        let r = call(
            &client,
            "get_customer",
            json!({ "customerId": "CUST-0001" }),
        )
        .await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = server.child.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let (result, client) = pending.await?;
    let result = result?;
    assert_eq!(
        result.is_error,
        Some(false),
        "the call in flight at SIGTERM completes"
    );
    drop(client);
    server.stop().await
}

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_is_refused() -> anyhow::Result<()> {
    let path = testkit::bin_path("sql-mcp-server")?;
    let out = tokio::process::Command::new(path)
        .args(["--data-dir", ":memory:", "--http", "0.0.0.0:0"])
        .output()
        .await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --token"));
    Ok(())
}

/// The JSON-RPC message of a response, whether sent as JSON or as one SSE event.
async fn json_body(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let text = response.text().await?;
    let json = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .unwrap_or(text.trim());
    Ok(serde_json::from_str(json)?)
}
