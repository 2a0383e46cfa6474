//! Security of the orchestrator across processes: where its HTTP front listens (from the flag or
//! from `orchestrator.listen`), that a non-loopback front needs a token or an explicit opt-out, and
//! that values pulled in with `${env:..}` never show in `check`, in the status resource, in
//! `mcp-orchestrator status`, on `/metrics`, or in its logs at debug level.
//!
//! The HTTP checks themselves (token, Origin, Host, no CORS) are `kit::serve`'s, shown once in
//! `servers/sql/tests/security.rs` and `http.rs`; `/metrics` wanting the token is in `metrics.rs`;
//! the token and an `${env:..}` header staying out of info-level logs is in `logs.rs`.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use rmcp::{
    ServiceExt,
    model::{ReadResourceRequestParams, ResourceContents},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path, call_ok};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

const BIN: &str = "mcp-orchestrator";
/// The value behind `${env:SECURITY_TEST_SECRET}`; must never be shown.
const SECRET: &str = "sec-4e1f9a7c2d";
/// The orchestrator's own bearer token; must never be logged.
const FRONT_TOKEN: &str = "front-token-b83d05";

/// An orchestrator serving HTTP, every stderr line of it kept from the first; killed on drop.
#[derive(Debug)]
struct Orchestrator {
    child: Child,
    /// `http://ADDR/mcp`, as logged.
    url: String,
    /// Every stderr line so far.
    lines: Arc<Mutex<Vec<String>>>,
    /// Reads stderr into `lines` until EOF.
    reader: JoinHandle<()>,
}

impl Orchestrator {
    /// Starts `mcp-orchestrator args...` with `env` and waits for its "listening on" line.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin_path(BIN)?)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut orchestrator = Self {
            child,
            url: String::new(),
            lines,
            reader,
        };
        let line = orchestrator
            .wait_for_line(Duration::from_secs(30), &["listening on http://"])
            .await?;
        let start = line.find("http://").context("url")?;
        let rest = &line[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        orchestrator.url = rest[..end].to_owned();
        Ok(orchestrator)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first stderr line holding every one of `needles`, waiting up to `limit` for it.
    async fn wait_for_line(&mut self, limit: Duration, needles: &[&str]) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "exited ({status}) before logging {needles:?}: {:?}",
                    self.lines()
                );
            }
            ensure!(
                started.elapsed() < limit,
                "no line with {needles:?} in {limit:?}: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit.
    async fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await??;
        // Its last lines are in once the reader has seen EOF.
        tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await??;
        Ok(self.lines())
    }

    /// An MCP client of the front, with the bearer token.
    async fn connect(&self, token: &str) -> anyhow::Result<testkit::Client> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .auth_header(token.to_owned());
        Ok(
            ().serve(StreamableHttpClientTransport::from_config(config))
                .await?,
        )
    }
}

/// Writes `mcp.json` with `servers` and `orchestrator`; returns its path.
fn write_config(dir: &TempDir, servers: Value, orchestrator: Value) -> anyhow::Result<String> {
    let path = dir.path().join("mcp.json");
    let config = json!({ "mcpServers": servers, "orchestrator": orchestrator });
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path.display().to_string())
}

fn sql_server(dir: &TempDir) -> anyhow::Result<Value> {
    Ok(json!({ "sql": {
        "command": bin_path("sql-mcp-server")?,
        "args": ["--data-dir", dir.path().join("sql")]
    } }))
}

/// A raw `initialize` POST to `url`, with an optional bearer token; returns the status.
async fn post_initialize(url: &str, token: Option<&str>) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(
            json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": { "name": "security-test", "version": "1" } }
            })
            .to_string(),
        );
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    Ok(request.send().await?.status().as_u16())
}

#[tokio::test]
async fn the_front_listens_on_loopback_unless_told_otherwise() -> anyhow::Result<()> {
    let dir = TempDir::new("security-listen")?;
    let servers = sql_server(&dir)?;

    // `--http PORT`, and `orchestrator.listen` as a bare port: both are 127.0.0.1.
    let flag = write_config(&dir, servers.clone(), json!({}))?;
    let orchestrator =
        Orchestrator::start(&["serve", "--config", &flag, "--http", "0"], &[]).await?;
    assert!(
        orchestrator.url.starts_with("http://127.0.0.1:"),
        "{}",
        orchestrator.url
    );
    orchestrator.stop().await?;
    let from_config = write_config(&dir, servers.clone(), json!({ "listen": "0" }))?;
    let orchestrator = Orchestrator::start(
        &["serve", "--config", &from_config, "--transport", "http"],
        &[],
    )
    .await?;
    assert!(
        orchestrator.url.starts_with("http://127.0.0.1:"),
        "{}",
        orchestrator.url
    );
    orchestrator.stop().await?;

    // A non-loopback `orchestrator.listen` without a token: refused, and nothing started.
    let remote = write_config(&dir, servers, json!({ "listen": "0.0.0.0:0" }))?;
    let out = Command::new(bin_path(BIN)?)
        .args(["serve", "--config", &remote, "--transport", "http"])
        .env("RUST_LOG", "warn")
        .env_remove("MCP_AUTH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without --token") && stderr.contains("--allow-unauthenticated-remote"),
        "{stderr}"
    );

    // Explicitly opted out: it serves without a token.
    let open = Orchestrator::start(
        &[
            "serve",
            "--config",
            &remote,
            "--transport",
            "http",
            "--allowed-hosts",
            "mcp.internal",
            "--allow-unauthenticated-remote",
        ],
        &[],
    )
    .await?;
    assert!(open.url.starts_with("http://0.0.0.0:"), "{}", open.url);
    let loopback = open.url.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(post_initialize(&loopback, None).await?, 200);
    open.stop().await?;

    // With a token: it serves, to holders of the token only.
    let guarded = Orchestrator::start(
        &[
            "serve",
            "--config",
            &remote,
            "--transport",
            "http",
            "--allowed-hosts",
            "mcp.internal",
            "--token",
            FRONT_TOKEN,
        ],
        &[],
    )
    .await?;
    let loopback = guarded.url.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(post_initialize(&loopback, None).await?, 401);
    assert_eq!(post_initialize(&loopback, Some(FRONT_TOKEN)).await?, 200);
    guarded.stop().await?;
    Ok(())
}

/// Fails if `text` (from `what`) holds the secret or the front's token.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows the ${{env:..}} secret: {text}"
    );
    assert!(
        !text.contains(FRONT_TOKEN),
        "{what} shows the bearer token: {text}"
    );
}

#[tokio::test]
async fn env_secrets_never_show_in_check_status_metrics_or_debug_logs() -> anyhow::Result<()> {
    let dir = TempDir::new("security-secrets")?;
    // A REST server that wants the secret as its token: the orchestrator must send it (so the
    // secret is in use), and must not show it.
    let rest = HttpServer::start(
        "rest-mcp-server",
        &["--token".to_owned(), SECRET.to_owned()],
    )
    .await?;
    // A server that cannot be reached, whose URL carries the secret: its connection error would
    // quote the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut servers = sql_server(&dir)?;
    servers["sql"]["env"] = json!({ "SQL_SECRET_COPY": "${env:SECURITY_TEST_SECRET}" });
    servers["rest"] = json!({
        "type": "http",
        "url": rest.url,
        "headers": { "Authorization": "Bearer ${env:SECURITY_TEST_SECRET}" }
    });
    servers["vault"] = json!({
        "type": "http",
        "url": format!("http://127.0.0.1:{closed}/mcp?apiKey=${{env:SECURITY_TEST_SECRET}}")
    });
    let config = write_config(&dir, servers, json!({}))?;
    let env = [("SECURITY_TEST_SECRET", SECRET), ("RUST_LOG", "debug")];

    // `check`: the targets are shown, with the secret masked.
    let out = std::process::Command::new(bin_path(BIN)?)
        .args(["check", "--config", &config])
        .envs(env)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("apiKey=***"), "{stdout}");
    assert_clean("check's output", &stdout);
    assert_clean("check's stderr", &String::from_utf8_lossy(&out.stderr));

    // `serve` at debug level: sql and rest connect (rest only with the secret), vault fails.
    let mut orchestrator = Orchestrator::start(
        &[
            "serve",
            "--config",
            &config,
            "--http",
            "127.0.0.1:0",
            "--token",
            FRONT_TOKEN,
        ],
        &env,
    )
    .await?;
    for server in ["sql", "rest"] {
        orchestrator
            .wait_for_line(Duration::from_secs(30), &["connected", server])
            .await?;
    }
    // Its error names the URL, with the secret masked.
    orchestrator
        .wait_for_line(
            Duration::from_secs(30),
            &["vault", "cannot connect", "apiKey=***"],
        )
        .await?;
    let client = orchestrator.connect(FRONT_TOKEN).await?;
    call_ok(&client, "rest__check_stock", json!({})).await?;

    // The status resource: vault's error is there, masked.
    let status = client
        .read_resource(ReadResourceRequestParams::new("orchestrator://status"))
        .await?;
    let status_text = status
        .contents
        .iter()
        .find_map(|c| match c {
            ResourceContents::TextResourceContents { text, .. } => Some(text.clone()),
            _ => None,
        })
        .context("status text")?;
    assert_clean("the status resource", &status_text);
    let report: Value = serde_json::from_str(&status_text)?;
    let vault = report["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "vault"))
        .context("vault in status")?;
    assert_eq!(vault["connected"], false);
    assert!(
        vault["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("apiKey=***")),
        "{vault}"
    );

    client.cancel().await?;

    // `mcp-orchestrator status`, as a table and as JSON; `/metrics`.
    for json_flag in [None, Some("--json")] {
        let out = Command::new(bin_path(BIN)?)
            .args(["status", "--url", &orchestrator.url, "--token", FRONT_TOKEN])
            .args(json_flag)
            .env("RUST_LOG", "debug")
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("vault"), "{stdout}");
        assert_clean("`status`", &stdout);
    }
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(orchestrator.url.replace("/mcp", "/metrics"))
        .bearer_auth(FRONT_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("vault"), "{metrics}");
    assert_clean("/metrics", &metrics);

    // Every log line, the upstreams' relayed ones included, from start to exit.
    let lines = orchestrator.stop().await?;
    ensure!(
        lines.len() > 20,
        "debug logging is on: {} lines",
        lines.len()
    );
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(SECRET) || l.contains(FRONT_TOKEN))
        .collect();
    assert!(leaks.is_empty(), "log lines show a secret: {leaks:#?}");
    rest.stop().await
}
