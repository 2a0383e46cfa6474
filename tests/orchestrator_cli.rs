//! The `mcp-orchestrator` command: check, call, tools, the HTTP front with both protocol
//! versions, status, and children that never outlive it.

use std::{
    collections::HashMap,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::json;
use testkit::{HttpServer, Lifecycle, TempDir, bin_path, call_ok};

fn config(dir: &TempDir) -> anyhow::Result<String> {
    let path = dir.path().join("mcp.json");
    let cfg = json!({ "mcpServers": {
        "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", dir.path().join("sql")] },
        "rest": { "command": bin_path("rest-mcp-server")?, "args": [] }
    } });
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    Ok(path.display().to_string())
}

fn orchestrator(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}

#[test]
fn check_accepts_a_good_config_and_names_the_path_of_a_bad_one() -> anyhow::Result<()> {
    let dir = TempDir::new("cli-check")?;
    let good = config(&dir)?;
    let out = orchestrator(&["check", "--config", &good])?;
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("valid") && stdout.contains("sql") && stdout.contains("sql__"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{ "mcpServers": { "sql": { "command": "x", "args": ["--ok", 7] } } }"#,
    )?;
    let out = orchestrator(&["check", "--config", &bad.display().to_string()])?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mcpServers.sql.args[1]") && stderr.contains("expected a string"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn call_prints_the_result_and_exits_non_zero_on_a_tool_error() -> anyhow::Result<()> {
    let dir = TempDir::new("cli-call")?;
    let cfg = config(&dir)?;
    let ok = orchestrator(&[
        "call",
        "sql__get_customer",
        "--args",
        r#"{"customerId":"CUST-0003"}"#,
        "--config",
        &cfg,
    ])?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(printed["customerId"], "CUST-0003");

    let tool_error = orchestrator(&[
        "call",
        "sql__get_customer",
        "--args",
        r#"{"customerId":"NOPE"}"#,
        "--config",
        &cfg,
    ])?;
    assert_eq!(tool_error.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&tool_error.stdout).contains("NOPE"));

    let unknown = orchestrator(&["call", "sql__nope", "--config", &cfg])?;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown tool"));

    let bad_args = orchestrator(&[
        "call",
        "sql__get_customer",
        "--args",
        "[1]",
        "--config",
        &cfg,
    ])?;
    assert!(!bad_args.status.success());
    assert!(String::from_utf8_lossy(&bad_args.stderr).contains("JSON object"));

    let tools = orchestrator(&["tools", "--config", &cfg])?;
    let listing = String::from_utf8_lossy(&tools.stdout);
    assert!(
        listing.contains("sql__create_order") && listing.contains("rest__check_stock"),
        "{listing}"
    );
    Ok(())
}

#[tokio::test]
async fn the_http_front_serves_both_protocol_versions_and_status() -> anyhow::Result<()> {
    let dir = TempDir::new("cli-http")?;
    let cfg = config(&dir)?;
    let args: Vec<String> = [
        "serve",
        "--config",
        &cfg,
        "--http",
        "127.0.0.1:0",
        "--token",
        "t-123",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let server = HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await?;

    for lifecycle in [Lifecycle::Initialize, Lifecycle::Stateless] {
        let client = server.connect_with(Some("t-123"), lifecycle).await?;
        let mut found = false;
        for _ in 0..100 {
            if let Ok(v) = call_ok(
                &client,
                "sql__get_order_details",
                json!({ "orderId": "ORD-00007" }),
            )
            .await
            {
                assert_eq!(v["orderId"], "ORD-00007");
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found, "{lifecycle:?}: the call went through");
        client.cancel().await?;
    }
    assert!(server.connect(None).await.is_err(), "no token, no session");

    let table = status_table(&server.url, "t-123").await?;
    assert!(
        table.contains("sql") && table.contains("rest") && table.contains("yes"),
        "{table}"
    );
    server.stop().await
}

/// The cells of `table` (as `mcp-orchestrator status` prints it) by header: one map per row.
fn table_rows(table: &str) -> Vec<HashMap<String, String>> {
    let split = |line: &str| -> Vec<String> {
        line.split(['│', '┆'])
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>()
            .into_iter()
            .skip(1)
            .collect::<Vec<_>>()
    };
    let mut lines = table
        .lines()
        .filter(|l| l.contains('│') || l.contains('┆'))
        .map(|l| {
            let mut cells = split(l);
            cells.pop(); // after the right border
            cells
        });
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    lines
        .map(|cells| {
            assert_eq!(
                cells.len(),
                header.len(),
                "a cell under each header: {cells:?}"
            );
            header.iter().cloned().zip(cells).collect()
        })
        .collect()
}

#[tokio::test]
async fn status_shows_each_servers_breaker_bulkhead_and_retries() -> anyhow::Result<()> {
    let dir = TempDir::new("cli-status-policy")?;
    let path = dir.path().join("mcp.json");
    // `flaky` answers every call with an error: 2 calls (3 attempts each, counted once per call)
    // reach its breaker's failure share over `minCalls: 2`. `slow` takes 30 s per call and holds
    // 1 running and 1 queued.
    let cfg = json!({
        "mcpServers": {
            "flaky": { "command": bin_path("cosmos-mcp-server")?,
                       "args": ["--data-dir", ":memory:", "--fail-tools", "get_user_behavior"] },
            "slow": { "command": bin_path("cosmos-mcp-server")?,
                      "args": ["--data-dir", ":memory:", "--latency-ms", "30000"] }
        },
        "orchestrator": { "servers": {
            "flaky": { "retry": { "maxAttempts": 3, "baseDelayMs": 1, "maxDelayMs": 2 },
                       "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.5, "minCalls": 2,
                                          "openMs": 600000, "minOpenMs": 600000 } },
            "slow": { "timeoutMs": 60000, "retry": { "maxAttempts": 1 },
                      "bulkhead": { "maxConcurrent": 1, "maxQueue": 1 } }
        } }
    });
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    let path = path.display().to_string();
    let args: Vec<String> = [
        "serve",
        "--config",
        &path,
        "--http",
        "127.0.0.1:0",
        "--token",
        "t-9",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let server = HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await?;
    let client = server.connect(Some("t-9")).await?;
    let status = || async {
        let report = testkit::read_status(&client).await?;
        let by_name = |name: &str| {
            report["servers"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
                .unwrap_or_default()
        };
        anyhow::Ok((by_name("flaky"), by_name("slow")))
    };
    let connected = || async {
        status()
            .await
            .is_ok_and(|(f, s)| f["connected"] == true && s["connected"] == true)
    };
    let mut ready = false;
    for _ in 0..400 {
        if connected().await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "both servers connected");
    let reason = |r: &rmcp::model::CallToolResult| {
        r.meta
            .as_ref()
            .and_then(|m| m.get("reason"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };

    let behaviour = |server: &str| {
        (
            format!("{server}__get_user_behavior"),
            json!({ "userId": "CUST-0001" }),
        )
    };
    for _ in 0..2 {
        let (tool, a) = behaviour("flaky");
        let r = testkit::call(&client, &tool, a).await?;
        assert_eq!(testkit::error_kind(&r).as_deref(), Some("unavailable"));
        assert_eq!(reason(&r), None, "the server's own failure");
    }
    let (tool, a) = behaviour("flaky");
    let r = testkit::call(&client, &tool, a).await?;
    assert_eq!(reason(&r).as_deref(), Some("circuit_open"), "{r:?}");

    let peer = testkit::PeerClient(client.peer().clone());
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let peer = peer.clone();
            let (tool, a) = behaviour("slow");
            tokio::spawn(async move { testkit::call(&peer, &tool, a).await })
        })
        .collect();
    let mut slow_full = false;
    for _ in 0..400 {
        if let Ok((_, s)) = status().await
            && s["policy"]["bulkhead"]["running"] == 1
            && s["policy"]["bulkhead"]["queued"] == 1
        {
            slow_full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(slow_full, "slow holds one call running and one queued");
    let (tool, a) = behaviour("slow");
    let r = testkit::call(&client, &tool, a).await?;
    assert_eq!(reason(&r).as_deref(), Some("bulkhead_full"), "{r:?}");

    let (flaky, slow) = status().await?;
    let fp = &flaky["policy"];
    assert_eq!(fp["breaker"]["state"], "open", "{fp}");
    assert_eq!(fp["breaker"]["opens"], 1, "{fp}");
    assert_eq!(
        (&fp["attempts"], &fp["retries"]),
        (&json!(6), &json!(4)),
        "{fp}"
    );
    let sp = &slow["policy"];
    assert_eq!(sp["breaker"]["state"], "closed", "{sp}");
    assert_eq!(
        (
            &sp["bulkhead"]["running"],
            &sp["bulkhead"]["queued"],
            &sp["bulkhead"]["rejected"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{sp}"
    );
    assert_eq!(sp["retries"], 0, "{sp}");

    // The same figures in the table, each under its header.
    let table = status_table(&server.url, "t-9").await?;
    let rows = table_rows(&table);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.get("server").map(String::as_str) == Some(name))
            .cloned()
            .unwrap_or_default()
    };
    let (flaky, slow) = (row("flaky"), row("slow"));
    assert_eq!(
        flaky.get("breaker").map(String::as_str),
        Some("open"),
        "{table}"
    );
    assert_eq!(
        flaky.get("retries").map(String::as_str),
        Some("4"),
        "{table}"
    );
    assert_eq!(
        slow.get("breaker").map(String::as_str),
        Some("closed"),
        "{table}"
    );
    assert_eq!(
        slow.get("bulkhead").map(String::as_str),
        Some("1/1 running, 1 queued, 1 rejected"),
        "{table}"
    );
    assert!(
        flaky
            .get("last error")
            .is_some_and(|e| e.contains("circuit") || e.contains("get_user_behavior")),
        "{table}"
    );
    assert!(
        table.contains("limits: 16 calls in flight per agent (0 refused)"),
        "the limits in force, defaults filled in: {table}"
    );

    for task in in_flight {
        task.abort();
    }
    client.cancel().await?;
    server.stop().await
}

/// What `mcp-orchestrator status --url URL --token TOKEN` prints; fails unless it succeeds.
async fn status_table(url: &str, token: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["status", "--url", url, "--token", token])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn children_of(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_until(limit: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn children_do_not_outlive_the_orchestrator_on_sigterm_or_sigkill() -> anyhow::Result<()> {
    for signal in ["-TERM", "-KILL"] {
        let dir = TempDir::new("cli-children")?;
        let cfg = config(&dir)?;
        let marker = dir.path().join("sql").display().to_string();
        let mut orch = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
            .args(["serve", "--config", &cfg])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        assert!(
            wait_until(Duration::from_secs(20), || children_of(&marker) == 1).await,
            "sql child started"
        );
        let pid = orch.id().expect("pid").to_string();
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()?;
        tokio::time::timeout(Duration::from_secs(15), orch.wait()).await??;
        // Keep our end of its stdin open until now: the children must go because the
        // orchestrator ended, not because a pipe closed first.
        drop(orch.stdin.take());
        assert!(
            wait_until(Duration::from_secs(10), || children_of(&marker) == 0).await,
            "{signal}: the sql child is gone"
        );
    }
    Ok(())
}
