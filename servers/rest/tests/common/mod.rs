//! Helpers shared by the end-to-end tests: a standalone `retail-api`, closed ports, traced calls.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use rmcp::model::{CallToolRequestParams, CallToolResult, RequestParamsMeta};
use serde_json::Value;
use testkit::{Client, HttpServer, Lifecycle};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The MCP server binary under test.
pub const SERVER: &str = "rest-mcp-server";

/// Owned string arguments.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A standalone `retail-api` process; killed on drop.
#[derive(Debug)]
pub struct RetailApi {
    /// Kept so dropping the struct kills the process.
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Every stderr line after the one naming the URL.
    lines: Arc<Mutex<Vec<String>>>,
}

impl RetailApi {
    /// Starts `retail-api --listen 127.0.0.1:0 extra...` and waits for the line naming its URL.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let path = testkit::bin_path("retail-api")?;
        let mut child = Command::new(path)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning retail-api")?;
        let stderr = child.stderr.take().context("stderr piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(start) = line.find("http://127.0.0.1:") {
                    let rest = &line[start..];
                    let end = rest
                        .find(|c: char| c.is_whitespace() || c == '"')
                        .unwrap_or(rest.len());
                    return Ok::<_, anyhow::Error>(rest[..end].to_owned());
                }
            }
            bail!("retail-api exited before listening")
        })
        .await
        .context("waiting for retail-api to listen")??;
        // Keep draining stderr (so the child never blocks on a full pipe), keeping the lines.
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = kept.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(Self {
            _child: child,
            url,
            lines: kept,
        })
    }

    /// The API's stderr lines so far (after the one naming its URL).
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `GET path` on the API: status, `Retry-After` header and JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Option<String>, Value)> {
        http_get(&format!("{}{path}", self.url)).await
    }

    /// `POST path` on the API with a JSON body: status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        http_post(&format!("{}{path}", self.url), body).await
    }

    /// The API's record of the last `traceparent` it received (needs `--debug-endpoints`).
    pub async fn last_trace(&self) -> anyhow::Result<Value> {
        let (status, _, body) = self.get("/debug/last-traceparent").await?;
        anyhow::ensure!(status == 200, "debug endpoint answered {status}");
        Ok(body)
    }
}

/// A plain HTTP GET (no proxy): status, `Retry-After` and the JSON body (`null` if not JSON).
pub async fn http_get(url: &str) -> anyhow::Result<(u16, Option<String>, Value)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?;
    Ok((
        status,
        retry_after,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// A plain HTTP POST of `body` as JSON (no proxy): status and the JSON body (`null` if not JSON).
pub async fn http_post(url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body)?)
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// A base URL where nothing listens: a port that was free a moment ago.
pub fn closed_base_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
}

/// A client of `rest-mcp-server args...` over `stdio`, `http` (2025-11-25 sessions) or
/// `http-stateless` (2026-07-28); the HTTP server handle is returned so it lives as long as the
/// client.
pub async fn connect(
    transport: &str,
    args: &[String],
) -> anyhow::Result<(Client, Option<HttpServer>)> {
    match transport {
        "stdio" => Ok((testkit::connect_stdio(SERVER, args).await?, None)),
        "http" => {
            let server = HttpServer::start(SERVER, args).await?;
            let client = server.connect(None).await?;
            Ok((client, Some(server)))
        }
        // Protocol 2026-07-28: `server/discover`, then every request stands alone.
        "http-stateless" => {
            let server = HttpServer::start(SERVER, args).await?;
            let client = server.connect_with(None, Lifecycle::Stateless).await?;
            Ok((client, Some(server)))
        }
        other => bail!("unknown transport {other}"),
    }
}

/// Calls `tool` with `_meta.traceparent` (and `tracestate`) set, as an orchestrator does.
pub async fn call_traced(
    client: &Client,
    tool: &str,
    args: Value,
    traceparent: &str,
    tracestate: Option<&str>,
) -> anyhow::Result<CallToolResult> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    params.set_traceparent(traceparent);
    if let Some(ts) = tracestate {
        params.set_tracestate(ts);
    }
    Ok(client.call_tool(params).await?)
}

/// The error convention read back from a failed result; fails the test on success.
pub fn tool_error(result: &CallToolResult) -> anyhow::Result<kit::ToolError> {
    kit::ToolError::from_call_tool_result(result)
        .with_context(|| format!("expected a tool error, got {:?}", result.structured_content))
}
