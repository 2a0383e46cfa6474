//! Upstreams that misbehave, end to end: the real `mcp-orchestrator` in front of
//! `unruly-mcp-server` (crates/testkit), which ignores SIGTERM and stdin EOF, never lists, lists
//! or answers more than a line may hold, or refuses long requests as the bundled servers do.
//!
//! - A child never outlives the orchestrator, whether it ends on stdin EOF, SIGTERM or SIGKILL.
//! - An answer over `upstreamMaxMessageBytes`, or a request over a server's `maxRequestBytes`,
//!   fails at once as the caller's fault (`invalid`, not retried, breaker untouched).
//! - A listing that never comes, or is too large, shows its cause in status and is retried.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path, call, error_kind, read_status, text_of};

/// Whether process `pid` is running (a zombie, dead but not yet reaped, is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Kills `pid` on drop if it still runs, so a failing test leaves no orphan behind.
struct Reaper(u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// Waits up to `limit` for `pid` to be gone.
async fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !alive(pid)
}

/// The unruly server as upstream `unruly`, with `args`.
fn unruly(args: &[&str]) -> anyhow::Result<Value> {
    Ok(json!({ "command": bin_path("unruly-mcp-server")?, "args": args }))
}

fn write_config(dir: &TempDir, unruly: Value, orchestrator: Value) -> anyhow::Result<String> {
    let path = dir.path().join("mcp.json");
    let config = json!({ "mcpServers": { "unruly": unruly }, "orchestrator": orchestrator });
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path.display().to_string())
}

/// `mcp-orchestrator serve` over HTTP on the config written to `dir`, keeping every stderr line
/// from the start ([`HttpServer::spawn`] skips those before "listening", and the first listing
/// comes before it).
async fn serve_http(
    dir: &TempDir,
    unruly: Value,
    orchestrator: Value,
) -> anyhow::Result<HttpServer> {
    use tokio::io::AsyncBufReadExt;
    let config = write_config(dir, unruly, orchestrator)?;
    let mut child = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["serve", "--config", &config, "--http", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
    let stderr = Arc::new(Mutex::new(Vec::new()));
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
                Some(
                    rest.split(|c: char| c.is_whitespace() || c == '"')
                        .next()?
                        .to_owned(),
                )
            });
        if let Some(url) = found {
            break url;
        }
        ensure!(Instant::now() < deadline, "the orchestrator never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(HttpServer { child, url, stderr })
}

/// The pid the child wrote to `path`, once it has.
async fn read_pid(path: &Path) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return Ok(pid);
        }
        ensure!(Instant::now() < deadline, "the upstream never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the orchestrator is made to end.
#[derive(Debug, Clone, Copy)]
enum Ending {
    StdinEof,
    Term,
    Kill,
}

/// Serves over stdio in front of an upstream that ignores SIGTERM and stdin EOF, ends the
/// orchestrator as `ending` says, and checks the upstream is gone soon after.
async fn child_goes_with_the_orchestrator(ending: Ending) -> anyhow::Result<()> {
    let dir = TempDir::new("unruly-exit")?;
    let pid_file = dir.path().join("child.pid");
    let config = write_config(
        &dir,
        unruly(&[
            "--ignore-term",
            "--pid-file",
            &pid_file.display().to_string(),
        ])?,
        json!({}),
    )?;
    let mut orchestrator = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["serve", "--config", &config])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let child = read_pid(&pid_file).await?;
    let _reaper = Reaper(child);
    // Let the orchestrator connect and list, so the child is a live upstream, not a spawn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        alive(child),
        "the upstream should run while the orchestrator does"
    );
    let orchestrator_pid = orchestrator.id().context("the orchestrator exited early")?;
    match ending {
        Ending::StdinEof => drop(orchestrator.stdin.take()),
        Ending::Term | Ending::Kill => {
            let signal = if matches!(ending, Ending::Term) {
                "-TERM"
            } else {
                "-KILL"
            };
            let status = std::process::Command::new("kill")
                .args([signal, &orchestrator_pid.to_string()])
                .status()?;
            ensure!(status.success(), "kill {signal} failed");
        }
    }
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), orchestrator.wait())
        .await
        .with_context(|| format!("the orchestrator did not exit after {ending:?}"))??;
    let took = started.elapsed();
    ensure!(
        gone_within(child, Duration::from_secs(3)).await,
        "the upstream (pid {child}) outlived the orchestrator ended by {ending:?}"
    );
    ensure!(
        took < Duration::from_secs(10),
        "the orchestrator took {took:?} to exit after {ending:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_eof_and_sigterm_ends_when_the_orchestrators_stdin_closes()
-> anyhow::Result<()> {
    child_goes_with_the_orchestrator(Ending::StdinEof).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_eof_and_sigterm_ends_when_the_orchestrator_gets_sigterm()
-> anyhow::Result<()> {
    child_goes_with_the_orchestrator(Ending::Term).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_eof_and_sigterm_ends_when_the_orchestrator_is_killed()
-> anyhow::Result<()> {
    child_goes_with_the_orchestrator(Ending::Kill).await
}

/// Calls `tool` six times (more than the breaker's default failure threshold) and checks each
/// fails at once, `invalid`, with a message naming `setting`; then that the breaker is still
/// closed, a call that fits goes through, and status counted every refusal under `counter`.
async fn six_oversize_calls_are_the_callers_fault(
    server: &HttpServer,
    args: Value,
    setting: &str,
    counter: &str,
) -> anyhow::Result<()> {
    let client = server.connect(None).await?;
    for n in 0..6 {
        let started = Instant::now();
        let result = call(&client, "unruly__big", args.clone()).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => bail!("call {n}: a JSON-RPC error instead of a tool error: {e}"),
        };
        let took = started.elapsed();
        ensure!(
            result.is_error == Some(true),
            "call {n} succeeded: {}",
            text_of(&result)
        );
        ensure!(
            error_kind(&result).as_deref() == Some("invalid"),
            "call {n}: kind {:?}: {}",
            error_kind(&result),
            text_of(&result)
        );
        let text = text_of(&result);
        ensure!(
            text.contains(setting) && text.contains("unruly"),
            "call {n}: {text}"
        );
        // The attempt timeout is 20 s: waiting for it would take that long, at least.
        ensure!(took < Duration::from_secs(10), "call {n} took {took:?}");
    }
    let status = read_status(&client).await?;
    let breaker = &status["servers"][0]["policy"]["breaker"]["state"];
    ensure!(breaker == "closed", "the breaker is {breaker}: {status:#}");
    let fits = call(&client, "unruly__echo", json!({ "x": 1 })).await?;
    ensure!(
        fits.is_error != Some(true),
        "a small call failed: {}",
        text_of(&fits)
    );
    let enforced = &status["limits"]["enforced"][counter];
    ensure!(enforced == 6, "{counter} counted {enforced}");
    client.cancel().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_line_cap_fails_at_once_as_the_callers_fault() -> anyhow::Result<()> {
    let dir = TempDir::new("unruly-answer")?;
    let server = serve_http(
        &dir,
        unruly(&[])?,
        json!({
            "limits": { "upstreamMaxMessageBytes": 65536 },
            "servers": { "unruly": { "timeoutMs": 20000, "deadlineMs": 60000 } }
        }),
    )
    .await?;
    six_oversize_calls_are_the_callers_fault(
        &server,
        json!({ "bytes": 200_000 }),
        "upstreamMaxMessageBytes",
        "upstreamMessageBytes",
    )
    .await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_the_upstream_is_refused_before_it_leaves() -> anyhow::Result<()> {
    let dir = TempDir::new("unruly-request")?;
    // The upstream refuses lines over 20000 bytes the way the bundled servers do (`-32600`
    // with `id: null`, which no request can be matched to).
    let server = serve_http(
        &dir,
        unruly(&["--max-line", "20000"])?,
        json!({
            "servers": { "unruly": { "timeoutMs": 20000, "deadlineMs": 60000, "maxRequestBytes": 16384 } }
        }),
    )
    .await?;
    six_oversize_calls_are_the_callers_fault(
        &server,
        json!({ "bytes": 1, "padding": "x".repeat(30_000) }),
        "orchestrator.servers.unruly.maxRequestBytes",
        "upstreamRequestBytes",
    )
    .await?;
    server.stop().await
}

/// Waits until status shows the upstream's last error containing `needle`, and returns it.
async fn last_error_naming(server: &HttpServer, needle: &str) -> anyhow::Result<String> {
    let client = server.connect(None).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = read_status(&client).await?;
        let unruly = &status["servers"][0];
        if let Some(e) = unruly["lastError"].as_str()
            && e.contains(needle)
        {
            ensure!(unruly["connected"] == false, "{status:#}");
            client.cancel().await?;
            return Ok(e.to_owned());
        }
        ensure!(
            Instant::now() < deadline,
            "no last error naming {needle}: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_never_comes_shows_its_cause_and_is_retried() -> anyhow::Result<()> {
    let dir = TempDir::new("unruly-never-list")?;
    let server = serve_http(
        &dir,
        unruly(&["--never-list"])?,
        json!({ "limits": { "upstreamListTimeoutMs": 300 } }),
    )
    .await?;
    let e = last_error_naming(&server, "upstreamListTimeoutMs").await?;
    ensure!(e.contains("listing tools failed"), "{e}");
    // Logged, and tried again (after backoff, on a fresh connection).
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.count_lines(&["connected but unusable", "upstreamListTimeoutMs"]) < 2 {
        ensure!(Instant::now() < deadline, "the listing was not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_resources_and_prompts_cannot_be_listed_keeps_its_tools_and_shows_why()
-> anyhow::Result<()> {
    let dir = TempDir::new("unruly-broken-listings")?;
    let server = serve_http(&dir, unruly(&["--broken-listings"])?, json!({})).await?;
    let client = server.connect(None).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = read_status(&client).await?;
        let unruly = &status["servers"][0];
        let error = unruly["lastError"].as_str().unwrap_or_default();
        if unruly["connected"] == true && error.contains("listing resources failed") {
            ensure!(error.contains("listing prompts failed"), "{error}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no cause of the failed listings in status: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tools = client.peer().list_all_tools().await?;
    ensure!(
        tools.iter().any(|t| t.name == "unruly__echo"),
        "the tools are served"
    );
    ensure!(server.count_lines(&["part of the listing failed"]) >= 1);
    client.cancel().await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_over_the_line_cap_shows_its_cause() -> anyhow::Result<()> {
    let dir = TempDir::new("unruly-big-list")?;
    let server = serve_http(
        &dir,
        unruly(&["--list-bytes", "200000"])?,
        json!({ "limits": { "upstreamMaxMessageBytes": 65536 } }),
    )
    .await?;
    let e = last_error_naming(&server, "upstreamMaxMessageBytes").await?;
    ensure!(
        e.contains("listing tools failed") && e.contains("65536"),
        "{e}"
    );
    ensure!(server.count_lines(&["connected but unusable", "upstreamMaxMessageBytes"]) >= 1);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_with_names_the_spec_forbids_are_left_out_with_a_warning() -> anyhow::Result<()> {
    let dir = TempDir::new("unruly-names")?;
    let long = "x".repeat(129);
    let names = json!(["", "two words", long, "dotted.name"]).to_string();
    let server = serve_http(&dir, unruly(&["--tool-names", &names])?, json!({})).await?;
    let client = server.connect(None).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let tools = loop {
        let tools = client.peer().list_all_tools().await?;
        if tools.iter().any(|t| t.name == "unruly__echo") {
            break tools;
        }
        ensure!(
            Instant::now() < deadline,
            "the upstream's tools never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    // `dotted.name` is valid upstream but not as an exposed name (agent APIs refuse dots).
    ensure!(
        names.contains(&"unruly__big")
            && !names.iter().any(|n| *n == "unruly__" || n.contains(' ')),
        "{names:?}"
    );
    let status = read_status(&client).await?;
    let problems = status["catalogProblems"].to_string();
    ensure!(problems.contains(r#"tool \"\" left out"#), "{problems}");
    ensure!(problems.contains("two words"), "{problems}");
    ensure!(
        server.count_lines(&["tool left out", "unruly"]) >= 3,
        "no warning naming the tools and the server"
    );
    client.cancel().await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstreams_413_is_the_callers_fault_never_retried_nor_held_against_it()
-> anyhow::Result<()> {
    let dir = TempDir::new("http-413")?;
    // The SQL server over HTTP, taking bodies of 8 KiB at most; the orchestrator's own limit
    // (4 MiB by default) lets a 20 KB request leave, and the server refuses it with 413.
    let sql = HttpServer::start(
        "sql-mcp-server",
        &[
            "--data-dir".to_owned(),
            dir.path().join("sql").display().to_string(),
            "--max-body-bytes".to_owned(),
            "8192".to_owned(),
        ],
    )
    .await?;
    let server = serve_http(
        &dir,
        json!({ "url": sql.url }),
        json!({ "servers": { "unruly": { "timeoutMs": 20000, "deadlineMs": 60000 } } }),
    )
    .await?;
    let client = server.connect(None).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .peer()
        .list_all_tools()
        .await?
        .iter()
        .any(|t| t.name == "unruly__query")
    {
        ensure!(Instant::now() < deadline, "the SQL server never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let big = json!({ "sql": format!("SELECT 1 -- {}", "x".repeat(20_000)) });
    for n in 0..6 {
        let started = Instant::now();
        let result = call(&client, "unruly__query", big.clone()).await?;
        let text = text_of(&result);
        ensure!(result.is_error == Some(true), "call {n} succeeded: {text}");
        ensure!(
            error_kind(&result).as_deref() == Some("invalid"),
            "call {n}: kind {:?}: {text}",
            error_kind(&result)
        );
        ensure!(text.contains("HTTP 413"), "call {n}: {text}");
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "call {n} waited {:?}",
            started.elapsed()
        );
    }
    let status = read_status(&client).await?;
    let upstream = &status["servers"][0];
    ensure!(
        upstream["policy"]["breaker"]["state"] == "closed",
        "the breaker: {status:#}"
    );
    ensure!(
        upstream["policy"]["retries"] == 0,
        "a 413 was retried: {status:#}"
    );
    ensure!(
        status["limits"]["enforced"]["upstreamRequestBytes"] == 6,
        "{status:#}"
    );
    let small = call(
        &client,
        "unruly__query",
        json!({ "sql": "SELECT 1 AS one" }),
    )
    .await?;
    ensure!(small.is_error != Some(true), "{}", text_of(&small));
    client.cancel().await?;
    server.stop().await
}

/// 10,000 calls with progress through a stdio upstream, read as raw lines from the
/// orchestrator's stdio front: every call's progress notifications all come, and all before
/// its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_progress_notification_of_a_call_arrives_before_its_result() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    const CALLS: u64 = 10_000;
    const STEPS: u64 = 3;
    const IN_FLIGHT: u64 = 8;
    let dir = TempDir::new("unruly-progress")?;
    let config = write_config(&dir, unruly(&[])?, json!({}))?;
    let mut child = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["serve", "--config", &config])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut send = async |v: Value| -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(&v)?;
        line.push(b'\n');
        stdin.write_all(&line).await?;
        Ok(())
    };
    send(json!({
        "jsonrpc": "2.0", "id": "init", "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "progress-test", "version": "1" } }
    }))
    .await?;
    let next = async |lines: &mut tokio::io::Lines<_>| -> anyhow::Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("no line within 30 s")??
            .context("the orchestrator closed stdout")?;
        Ok(serde_json::from_str(&line)?)
    };
    let init = next(&mut lines).await?;
    ensure!(init["id"] == "init", "{init}");
    send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await?;
    // Wait for the upstream's tools.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        send(json!({ "jsonrpc": "2.0", "id": "list", "method": "tools/list" })).await?;
        let listed = loop {
            let v = next(&mut lines).await?;
            if v["id"] == "list" {
                break v;
            }
        };
        let found = listed["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "unruly__progress"));
        if found {
            break;
        }
        ensure!(Instant::now() < deadline, "the upstream never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = |n: u64| {
        json!({
            "jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": { "name": "unruly__progress", "arguments": { "steps": STEPS },
                        "_meta": { "progressToken": format!("p{n}") } }
        })
    };
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let (mut sent, mut done, mut early) = (0u64, 0u64, Vec::new());
    while sent < IN_FLIGHT.min(CALLS) {
        send(call(sent)).await?;
        sent += 1;
    }
    while done < CALLS {
        let v = next(&mut lines).await?;
        if v["method"] == "notifications/progress" {
            let token = v["params"]["progressToken"].as_str().unwrap_or_default();
            *seen.entry(token.to_owned()).or_default() += 1;
            continue;
        }
        let Some(n) = v["id"].as_u64() else { continue };
        ensure!(v["result"]["isError"] != true, "call {n} failed: {v}");
        let got = seen.remove(&format!("p{n}")).unwrap_or_default();
        if got != STEPS && early.len() < 10 {
            early.push((n, got));
        }
        done += 1;
        if sent < CALLS {
            send(call(sent)).await?;
            sent += 1;
        }
    }
    ensure!(
        early.is_empty(),
        "results that came before all {STEPS} of their progress notifications (call, seen): {early:?}"
    );
    // Nothing arrives late either: no progress is left over for a finished call.
    ensure!(
        seen.is_empty(),
        "progress after its result: {:?}",
        seen.keys().take(5).collect::<Vec<_>>()
    );
    Ok(())
}
