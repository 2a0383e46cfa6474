//! The HTTP front as a shared service (`kit::serve`, the same for every server and the
//! orchestrator): what one client may hold of it, and the checks every route gets.
//!
//! - sessions: a cap (503 + `Retry-After`, JSON-RPC error naming `--max-sessions`), an idle
//!   timeout that frees a session's place, and a bound on the `initialize` a session keeps;
//! - connections: a cap (503 naming `--max-connections`), slow headers and slow bodies cut off,
//!   idle keep-alive connections closed, and the descriptor limit raised at start;
//! - guards: Host and Origin checked on `/metrics` as on `/mcp`, Origin compared by scheme, host
//!   and port, a blank token and an every-interface bind without `--allowed-hosts` refused.
//!
//! Each server runs with small limits so that each test shows its limit with a handful of
//! requests; the defaults are in the README's "running it as a shared service" table.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The SQL server over HTTP with `extra` flags (kit's front, as every bundled server has it).
async fn sql_server(dir: &TempDir, extra: &[&str]) -> anyhow::Result<HttpServer> {
    let mut args = vec!["--data-dir".to_owned(), dir.arg()];
    args.extend(extra.iter().map(|s| s.to_string()));
    HttpServer::start("sql-mcp-server", &args).await
}

fn initialize(name: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": name, "version": "1.0" }
        }
    })
}

/// POSTs `body` to `url` as an MCP client would; the status, the headers and the body text.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, String)> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

/// A refusal's limit and message: from its JSON-RPC error (`data.limit`; a request that was
/// read), or from its plain text (`... (limit: NAME)`; one that was not).
fn refusal(body: &str) -> anyhow::Result<(String, String)> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let limit = v["error"]["data"]["limit"]
            .as_str()
            .with_context(|| format!("no data.limit in {body}"))?;
        let message = v["error"]["message"].as_str().context("message")?;
        return Ok((limit.to_owned(), message.to_owned()));
    }
    let line = body.trim_end();
    let (message, rest) = line
        .rsplit_once(" (limit: ")
        .with_context(|| format!("no limit named in {body}"))?;
    let limit = rest.strip_suffix(')').context("limit")?;
    Ok((limit.to_owned(), message.to_owned()))
}

/// The id of a JSON-RPC refusal.
fn refusal_id(body: &str) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?;
    Ok(v["id"].clone())
}

fn addr(server: &HttpServer) -> anyhow::Result<String> {
    Ok(server
        .url
        .strip_prefix("http://")
        .and_then(|s| s.strip_suffix("/mcp"))
        .context("url")?
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_cap_are_refused_until_idle_ones_are_closed() -> anyhow::Result<()> {
    let dir = TempDir::new("front-sessions")?;
    let server = sql_server(&dir, &["--max-sessions", "3", "--session-idle-secs", "2"]).await?;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let (status, headers, _) = post(&client, &server.url, &initialize("c"), &[]).await?;
        ensure!(status == 200, "session {i}: {status}");
        ensure!(
            headers.contains_key("mcp-session-id"),
            "session {i} has an id"
        );
    }
    let (status, headers, body) = post(&client, &server.url, &initialize("c"), &[]).await?;
    ensure!(status == 503, "the fourth session: {status} {body}");
    let retry_after = headers
        .get("retry-after")
        .context("Retry-After on the refusal")?;
    ensure!(retry_after.to_str()?.parse::<u64>()? >= 1);
    let (limit, message) = refusal(&body)?;
    ensure!(limit == "maxSessions", "{limit}");
    ensure!(message.contains("--max-sessions"), "{message}");
    // The refusal answers the request: it carries its id, so the client's call fails with it.
    ensure!(refusal_id(&body)? == json!(1), "{body}");
    // Unused, the three sessions idle out, and their places are free again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _, _) = post(&client, &server.url, &initialize("c"), &[]).await?;
        if status == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no session was freed after the idle timeout"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_initialize_is_refused_naming_its_limit() -> anyhow::Result<()> {
    let dir = TempDir::new("front-init")?;
    let server = sql_server(&dir, &["--max-initialize-bytes", "4096"]).await?;
    let client = reqwest::Client::new();
    let (status, _, body) =
        post(&client, &server.url, &initialize(&"n".repeat(10_000)), &[]).await?;
    ensure!(status == 413, "{status} {body}");
    let (limit, message) = refusal(&body)?;
    ensure!(refusal_id(&body)? == json!(1), "{body}");
    ensure!(limit == "maxInitializeBytes", "{limit}");
    ensure!(message.contains("--max-initialize-bytes"), "{message}");
    // A long name under the size limit is accepted (and cut to size, see kit's unit test).
    let (status, _, body) =
        post(&client, &server.url, &initialize(&"n".repeat(2_000)), &[]).await?;
    ensure!(status == 200, "{status} {body}");
    Ok(())
}

/// Reads from `stream` until the server closes it or `within` passes: whether it closed, and
/// what it sent.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, String::from_utf8_lossy(&got).into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (false, String::from_utf8_lossy(&got).into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_idle_ones_closed() -> anyhow::Result<()> {
    let dir = TempDir::new("front-conns")?;
    let server = sql_server(
        &dir,
        &["--max-connections", "8", "--idle-connection-secs", "2"],
    )
    .await?;
    let addr = addr(&server)?;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&addr).await?);
    }
    // Give the server a moment to take all eight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = TcpStream::connect(&addr).await?;
    let (closed, answer) = closed_within(&mut ninth, Duration::from_secs(5)).await;
    ensure!(closed, "the ninth connection was left open");
    ensure!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    ensure!(answer.contains("--max-connections"), "{answer}");
    // The eight send nothing: each is closed after the idle timeout.
    for (i, stream) in held.iter_mut().enumerate() {
        let (closed, _) = closed_within(stream, Duration::from_secs(10)).await;
        ensure!(
            closed,
            "idle connection {i} still open after the idle timeout"
        );
    }
    // Their places are free again.
    let client = reqwest::Client::new();
    let (status, _, body) = post(&client, &server.url, &initialize("c"), &[]).await?;
    ensure!(status == 200, "{status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off() -> anyhow::Result<()> {
    let dir = TempDir::new("front-slow")?;
    let server = sql_server(
        &dir,
        &[
            "--header-read-timeout-secs",
            "1",
            "--body-read-timeout-secs",
            "1",
            "--idle-connection-secs",
            "60",
        ],
    )
    .await?;
    let addr = addr(&server)?;
    // Headers one byte at a time, 200 ms apart: the server closes the connection long before
    // they could end (they never do).
    let mut slow = TcpStream::connect(&addr).await?;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nX-Padding: {}",
        "a".repeat(200)
    );
    let started = Instant::now();
    let mut cut = false;
    for byte in head.as_bytes() {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let (closed, _) = closed_within(&mut slow, Duration::from_millis(200)).await;
        if closed {
            cut = true;
            break;
        }
    }
    ensure!(
        cut,
        "a client sending headers a byte at a time kept its connection for {:?}",
        started.elapsed()
    );
    // A body that never arrives whole: 408 naming the limit.
    let mut stream = TcpStream::connect(&addr).await?;
    stream
        .write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\n\
                 accept: application/json, text/event-stream\r\ncontent-length: 100\r\n\r\n{{\"jsonrpc\""
            )
            .as_bytes(),
        )
        .await?;
    let (_, answer) = closed_within(&mut stream, Duration::from_secs(10)).await;
    ensure!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    ensure!(answer.contains("--body-read-timeout-secs"), "{answer}");
    // An idle connection within its timeout stays usable.
    let client = reqwest::Client::new();
    let (status, _, body) = post(&client, &server.url, &initialize("c"), &[]).await?;
    ensure!(status == 200, "{status} {body}");
    Ok(())
}

/// Starts `bin args...` under descriptor limits `soft`/`hard` (set by a shell, as an operator's
/// `ulimit` would), keeps draining its stderr, and returns it with its "listening" line.
async fn spawn_with_descriptor_limit(
    soft: u32,
    hard: u32,
    bin: &str,
    args: &[String],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "ulimit -Sn {soft} && ulimit -Hn {hard} && exec '{}' {}",
        bin_path(bin)?.display(),
        quoted.join(" ")
    );
    let mut child = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stderr.take().context("stderr")?,
    ));
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("listening on http://") {
                return Ok::<_, anyhow::Error>(line);
            }
        }
        bail!("{bin} exited before listening")
    })
    .await
    .with_context(|| format!("waiting for {bin} to listen"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, listening))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_descriptor_limit_is_raised_and_the_connection_cap_fits_it() -> anyhow::Result<()> {
    let dir = TempDir::new("front-nofile")?;
    // A soft limit of 300 under a hard limit of 600: raised to 600 at start, which leaves room
    // for 600 - 256 connections.
    let args = ["--http", "127.0.0.1:0", "--data-dir", &dir.arg()].map(str::to_owned);
    let (child, listening) = spawn_with_descriptor_limit(300, 600, "sql-mcp-server", &args).await?;
    let pid = child.id().context("pid")?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("Max open files")?;
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    ensure!(numbers == ["600", "600"], "{line}");
    ensure!(
        listening.contains("max_connections=344"),
        "the cap fits the limit: {listening}"
    );
    Ok(())
}

/// The orchestrator with one SQL upstream, serving HTTP with `extra` flags; its `/metrics`
/// lives beside `/mcp`.
async fn orchestrator(dir: &TempDir, extra: &[&str]) -> anyhow::Result<HttpServer> {
    let cfg = json!({
        "mcpServers": { "sql": {
            "command": bin_path("sql-mcp-server")?,
            "args": ["--data-dir", dir.path().join("sql")]
        } }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    let mut args = vec![
        "serve".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await
}

async fn get_metrics(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
    let mut request = reqwest::Client::new().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_host_and_origin_alike() -> anyhow::Result<()> {
    let dir = TempDir::new("front-guard")?;
    let server = orchestrator(&dir, &["--max-sessions", "1"]).await?;
    let metrics = server.url.replace("/mcp", "/metrics");
    let port = addr(&server)?
        .rsplit(':')
        .next()
        .context("port")?
        .to_owned();
    let (status, _) = get_metrics(&metrics, &[]).await?;
    ensure!(status == 200, "plain /metrics: {status}");
    let refused = [
        ("host", "evil.example".to_owned()),
        ("host", format!("127.0.0.1.nip.io:{port}")),
        ("origin", "http://evil.com".to_owned()),
        ("origin", "http://evil.com@127.0.0.1".to_owned()),
        ("origin", format!("http://127.0.0.1:{port}/../")),
        ("origin", "null".to_owned()),
    ];
    for (header, value) in &refused {
        for url in [&metrics, &server.url] {
            let (status, body) = get_metrics(url, &[(header, value)]).await?;
            ensure!(status == 403, "{url} with {header}: {value} gave {status}");
            let (limit, _) = refusal(&body)?;
            ensure!(
                limit
                    == if *header == "host" {
                        "allowedHosts"
                    } else {
                        "allowedOrigins"
                    },
                "{limit}"
            );
        }
    }
    let (status, _) =
        get_metrics(&metrics, &[("origin", &format!("http://127.0.0.1:{port}"))]).await?;
    ensure!(status == 200, "an allowed origin: {status}");

    // Refusals are counted per limit, and the sessions held are shown.
    let client = reqwest::Client::new();
    let (status, _, _) = post(&client, &server.url, &initialize("a"), &[]).await?;
    ensure!(status == 200);
    let (status, _, _) = post(&client, &server.url, &initialize("b"), &[]).await?;
    ensure!(status == 503);
    let (_, text) = get_metrics(&metrics, &[]).await?;
    for expected in [
        "mcp_orchestrator_front_refused_total{limit=\"maxSessions\"} 1",
        "mcp_orchestrator_front_refused_total{limit=\"allowedHosts\"} 4",
        "mcp_orchestrator_front_refused_total{limit=\"allowedOrigins\"} 8",
        "mcp_orchestrator_http_sessions 1",
    ] {
        ensure!(
            text.lines().any(|l| l.starts_with(expected)),
            "{expected} missing from:\n{}",
            text.lines()
                .filter(|l| l.contains("_http_"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    ensure!(
        text.lines()
            .any(|l| l.starts_with("mcp_orchestrator_http_connections ")),
        "connections gauge"
    );
    Ok(())
}

/// Runs `bin args` to its exit (it must refuse to start); its stderr.
async fn refused_at_start(bin: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(bin_path(bin)?)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .context("it did not exit")??;
    if output.status.success() {
        bail!("{bin} {args:?} started");
    }
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_token_and_an_every_interface_bind_without_hosts_are_refused_at_start()
-> anyhow::Result<()> {
    let dir = TempDir::new("front-start")?;
    let data = dir.arg();
    let stderr = refused_at_start(
        "sql-mcp-server",
        &["--data-dir", &data, "--http", "0.0.0.0:0", "--token", " "],
    )
    .await?;
    ensure!(stderr.contains("blank"), "{stderr}");
    let stderr = refused_at_start(
        "sql-mcp-server",
        &[
            "--data-dir",
            &data,
            "--http",
            "0.0.0.0:0",
            "--token",
            "t0k3n",
        ],
    )
    .await?;
    ensure!(stderr.contains("--allowed-hosts"), "{stderr}");
    Ok(())
}

/// Pids of `parent`'s children running `exe` (by the executable's file name).
fn children_named(parent: u32, exe: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let name = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            ppid == Some(parent) && name.as_deref() == Some(exe)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_upstream_restarts_while_clients_hold_every_connection() -> anyhow::Result<()> {
    const HELD: usize = 450;
    rlimit::increase_nofile_limit(u64::MAX)?;
    let dir = TempDir::new("front-reserve")?;
    let cfg = json!({
        "mcpServers": { "sql": {
            "command": bin_path("sql-mcp-server")?,
            "args": ["--data-dir", dir.path().join("sql")]
        } }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    // 400 descriptors in all: the connection cap comes out at 144, and 450 connections try.
    let args = [
        "serve",
        "--config",
        &path.display().to_string(),
        "--http",
        "127.0.0.1:0",
    ]
    .map(str::to_owned);
    let (child, listening) =
        spawn_with_descriptor_limit(400, 400, "mcp-orchestrator", &args).await?;
    let start = listening.find("http://").context("url")?;
    let url = listening[start..]
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()
        .context("url")?
        .to_owned();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let orchestrator = child.id().context("pid")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(pid) = children_named(orchestrator, "sql-mcp-server").first() {
            break *pid;
        }
        ensure!(Instant::now() < deadline, "the sql server never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Clients take every connection there is, and more.
    let mut held = Vec::new();
    for _ in 0..HELD {
        match TcpStream::connect(&addr).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The upstream crashes; the orchestrator must still have descriptors for its restart.
    std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = children_named(orchestrator, "sql-mcp-server");
        if now.iter().any(|pid| *pid != first) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the sql server was not restarted while {} connections were held",
            held.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Released, the front serves again, and the restarted server answers.
    drop(held);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, _) = post(&client, &url, &initialize("after"), &[]).await?;
        if status == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the front never served again: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
