//! The real `sql-mcp-server` binary over stdio.

mod common;

use rmcp::model::{ErrorCode, GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::json;
use testkit::{Lifecycle, TempDir, call, call_ok, connect_stdio, connect_stdio_with};

fn args(dir: &TempDir) -> Vec<String> {
    vec!["--data-dir".into(), dir.arg()]
}

#[tokio::test]
async fn lists_and_calls_every_tool_over_stdio() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-stdio")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    common::check_catalog(&client).await?;
    common::call_every_tool(&client, "stdio-every-tool").await?;
    common::check_errors(&client).await?;

    let resources = client.list_all_resources().await?;
    assert!(resources.iter().any(|r| r.uri == "sql://schema"));
    let schema = client
        .read_resource(ReadResourceRequestParams::new("sql://schema"))
        .await?;
    let text = format!("{:?}", schema.contents);
    assert!(text.contains("CREATE TABLE IF NOT EXISTS customers"));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn prompts_name_the_tools_and_check_their_arguments_against_the_database()
-> anyhow::Result<()> {
    let dir = TempDir::new("sql-prompts")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let caps = client
        .peer_info()
        .expect("initialized")
        .capabilities
        .clone();
    assert!(caps.prompts.is_some(), "prompts advertised");
    let prompts = client.list_all_prompts().await?;
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["customer_report", "sales_review"]);
    let get = |name: &str, args: serde_json::Value| {
        let mut params = GetPromptRequestParams::new(name);
        if let serde_json::Value::Object(a) = args {
            params = params.with_arguments(a);
        }
        client.get_prompt(params)
    };
    let customer = call_ok(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    let report = get("customer_report", json!({ "customerId": "CUST-0001" })).await?;
    let text = serde_json::to_string(&report.messages)?;
    let name = customer["name"].as_str().expect("a name");
    assert!(
        text.contains(name),
        "the customer's name from the database: {text}"
    );
    assert!(text.contains("get_customer_orders"), "{text}");
    let review = get("sales_review", json!({ "period": "2024-Q1" })).await?;
    assert!(serde_json::to_string(&review.messages)?.contains("get_sales_by_region"));

    for (name, args, needle) in [
        (
            "customer_report",
            json!({ "customerId": "CUST-9999" }),
            "CUST-9999",
        ),
        ("customer_report", json!({}), "customerId"),
        (
            "sales_review",
            json!({ "period": "last week" }),
            "last week",
        ),
        ("nonsense", json!({}), "customer_report"),
    ] {
        match get(name, args).await {
            Err(rmcp::ServiceError::McpError(e)) => {
                assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{name}: {e:?}");
                assert!(e.message.contains(needle), "{name}: {}", e.message);
            }
            other => panic!("{name}: expected invalid params, got {other:?}"),
        }
    }
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn the_stateless_protocol_works_over_stdio() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-stdio-stateless")?;
    let client = connect_stdio_with("sql-mcp-server", &args(&dir), Lifecycle::Stateless).await?;
    let customer = call_ok(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    assert_eq!(customer["customerId"], "CUST-0003");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_order_survives_a_restart() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-restart")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let created = call_ok(
        &client,
        "create_order",
        json!({ "customerId": "CUST-0010", "lines": [{ "productId": "PROD-020", "quantity": 3 }], "idempotencyKey": "restart-1" }),
    )
    .await?;
    let order_id = created["order"]["orderId"].as_str().expect("id").to_owned();
    client.cancel().await?;

    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let order = call_ok(&client, "get_order_details", json!({ "orderId": order_id })).await?;
    assert_eq!(order["customerId"], "CUST-0010");
    assert_eq!(order["lines"][0]["quantity"], 3);
    // The key still maps to the same order after the restart.
    let again = call_ok(
        &client,
        "create_order",
        json!({ "customerId": "CUST-0010", "lines": [{ "productId": "PROD-020", "quantity": 3 }], "idempotencyKey": "restart-1" }),
    )
    .await?;
    assert_eq!(again["created"], false);
    assert_eq!(again["order"]["orderId"], order["orderId"]);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn twenty_concurrent_calls_with_one_key_create_one_order() -> anyhow::Result<()> {
    let dir = TempDir::new("sql-concurrent")?;
    let client = connect_stdio("sql-mcp-server", &args(&dir)).await?;
    let count = |c| async move {
        let rows = call_ok(c, "query", json!({ "sql": "SELECT COUNT(*) FROM orders" })).await?;
        anyhow::Ok(rows["rows"][0][0].as_i64().unwrap_or(-1))
    };
    let before = count(&client).await?;
    let calls = (0..20).map(|_| {
        call(
            &client,
            "create_order",
            json!({ "customerId": "CUST-0042", "lines": [{ "productId": "PROD-005", "quantity": 1 }], "idempotencyKey": "one-key" }),
        )
    });
    let results = futures::future::join_all(calls).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for r in results {
        let r = r?;
        let v = r.structured_content.expect("structured");
        created += usize::from(v["created"] == true);
        ids.insert(
            v["order"]["orderId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(count(&client).await?, before + 1);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn injected_faults_are_retryable_tool_errors() -> anyhow::Result<()> {
    let mut a = vec!["--data-dir".to_owned(), ":memory:".to_owned()];
    a.extend(["--fail-tools".to_owned(), "get_customer".to_owned()]);
    let client = connect_stdio("sql-mcp-server", &a).await?;
    let failed = call(
        &client,
        "get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    assert_eq!(failed.is_error, Some(true));
    let meta = failed.meta.as_ref().expect("meta");
    assert_eq!(meta.get("errorKind"), Some(&json!("unavailable")));
    assert_eq!(meta.get("retryable"), Some(&json!(true)));
    // Other tools are untouched and the process is still up.
    call_ok(
        &client,
        "get_order_details",
        json!({ "orderId": "ORD-00002" }),
    )
    .await?;
    client.cancel().await?;
    Ok(())
}

/// A `sql-mcp-server` spoken to line by line, so a test can close its stdin or signal it while
/// a call is running (an rmcp client owns both and would close them itself).
struct RawStdio {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Every message read so far.
    seen: Vec<serde_json::Value>,
}

impl RawStdio {
    /// Starts the server with `extra` flags (and a throwaway database) and initializes a session.
    async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        use std::process::Stdio;
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(testkit::bin_path("sql-mcp-server")?)
            .args(["--data-dir", ":memory:"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut raw = Self {
            child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout).lines(),
            seen: Vec::new(),
        };
        raw.send(json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": { "name": "shutdown-test", "version": "1" }
            }
        }))
        .await?;
        raw.answer(0).await?;
        raw.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(raw)
    }

    async fn send(&mut self, message: serde_json::Value) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{message}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Sends `tools/call get_customer CUST-0001` as request `id`, then a `ping` as `id + 1`, and
    /// waits for the ping's answer. Lines are read in order, so once the ping is answered the
    /// call has been read by the server: it is in flight (its injected latency is running).
    async fn start_slow_call(&mut self, id: u64) -> anyhow::Result<()> {
        self.send(json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "get_customer", "arguments": { "customerId": "CUST-0001" } }
        }))
        .await?;
        self.send(json!({ "jsonrpc": "2.0", "id": id + 1, "method": "ping" }))
            .await?;
        self.answer(id + 1).await?;
        Ok(())
    }

    /// Reads until the answer to request `id` (within 30 s).
    async fn answer(&mut self, id: u64) -> anyhow::Result<serde_json::Value> {
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                if let Some(found) = self.seen.iter().find(|m| m["id"] == id) {
                    return Ok(found.clone());
                }
                let line = self
                    .stdout
                    .next_line()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("stdout closed before answer {id}"))?;
                self.seen.push(serde_json::from_str(&line)?);
            }
        })
        .await?
    }

    /// Closes stdin, as a client that is done does.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }

    /// Reads stdout to its end and waits for the exit (within 30 s): the answers seen, whether
    /// the process exited successfully, and its stderr.
    async fn finish(mut self) -> anyhow::Result<(Vec<serde_json::Value>, bool, String)> {
        use tokio::io::AsyncReadExt;
        let mut stderr = self.child.stderr.take().expect("piped stderr");
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = self.stdout.next_line().await? {
                self.seen.push(serde_json::from_str(&line)?);
            }
            let mut log = String::new();
            stderr.read_to_string(&mut log).await?;
            let status = self.child.wait().await?;
            anyhow::Ok((self.seen, status.success(), log))
        })
        .await?
    }
}

/// The successful answer to request `id` among `answers`, as the customer it names.
fn customer_answered(answers: &[serde_json::Value], id: u64) -> Option<String> {
    let answer = answers.iter().find(|m| m["id"] == id)?;
    if answer["result"]["isError"] == true {
        return None;
    }
    answer["result"]["structuredContent"]["customerId"]
        .as_str()
        .map(str::to_owned)
}

/// Starts a call that takes `latency_ms`, closes stdin while it runs, and checks that the call is
/// answered and the process then exits cleanly.
async fn eof_during_a_call_answers_it(latency_ms: &str) -> anyhow::Result<()> {
    let mut server = RawStdio::start(&["--latency-ms", latency_ms]).await?;
    server.start_slow_call(1).await?;
    server.close_stdin();
    let (answers, exited_ok, log) = server.finish().await?;
    assert_eq!(
        customer_answered(&answers, 1).as_deref(),
        Some("CUST-0001"),
        "the call read before EOF is answered: {answers:?}\n{log}"
    );
    assert!(exited_ok, "{log}");
    Ok(())
}

#[tokio::test]
async fn stdin_eof_lets_the_running_call_finish() -> anyhow::Result<()> {
    eof_during_a_call_answers_it("700").await
}

#[tokio::test]
async fn stdin_eof_waits_the_configured_grace_not_a_fixed_drain() -> anyhow::Result<()> {
    // rmcp on its own gives handlers 5 s after stdin EOF, then cancels them; the grace period
    // (10 s by default) is what counts.
    eof_during_a_call_answers_it("5500").await
}

#[tokio::test]
async fn stdin_eof_gives_up_on_calls_after_the_grace_period() -> anyhow::Result<()> {
    let mut server =
        RawStdio::start(&["--latency-ms", "60000", "--shutdown-grace-secs", "1"]).await?;
    server.start_slow_call(1).await?;
    server.close_stdin();
    // The process exits (`finish` allows 30 s, far less than the call's minute), and says why.
    let (_, exited_ok, log) = server.finish().await?;
    assert!(exited_ok, "{log}");
    assert!(log.contains("grace period over"), "{log}");
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_the_running_call_finish() -> anyhow::Result<()> {
    let mut server = RawStdio::start(&["--latency-ms", "700"]).await?;
    server.start_slow_call(1).await?;
    server.signal("TERM")?;
    // Stdin stays open: the signal alone ends the session, after the call is answered.
    let (answers, exited_ok, log) = server.finish().await?;
    assert_eq!(
        customer_answered(&answers, 1).as_deref(),
        Some("CUST-0001"),
        "the call running at SIGTERM is answered: {answers:?}\n{log}"
    );
    assert!(exited_ok, "{log}");
    assert!(log.contains("shutdown signal"), "{log}");
    Ok(())
}
