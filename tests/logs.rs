//! JSON logs of one call: the orchestrator's HTTP front and the three servers behind it log every
//! line of a call under one correlation id (the agent's `X-Correlation-ID`, or generated) and one
//! trace id, echo the id in the response header and the result's `_meta`, and never log secrets.
//! Text logs: no line break, carriage return or ANSI escape an agent sends can start a line.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use axum::{Router, http::StatusCode};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path};

/// The orchestrator's bearer token; must never show in a log line.
const TOKEN: &str = "logs-test-token-5a1d7c";
/// A value the config pulls in with `${env:..}`; must never show in a log line.
const SECRET: &str = "logs-test-secret-93be02";
/// The protocol version the raw client speaks.
const PROTOCOL: &str = "2025-11-25";

/// Accepts (and drops) whatever OTLP export the processes send, so their spans have trace ids
/// (log lines carry `trace_id` only while export is on) and export never logs failures.
async fn start_collector() -> anyhow::Result<String> {
    let app = Router::new().fallback(|| async { StatusCode::OK });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// The repo's `customer_insights` composite without its cache rules (every step must run).
fn customer_insights() -> anyhow::Result<Value> {
    let repo: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json"),
    )?)?;
    let mut composite = repo["orchestrator"]["composites"]["customer_insights"].clone();
    ensure!(composite.is_object(), "mcp.json defines customer_insights");
    if let Some(steps) = composite["steps"].as_object_mut() {
        for step in steps.values_mut() {
            if let Some(s) = step.as_object_mut() {
                s.remove("cache");
            }
        }
    }
    Ok(composite)
}

/// Writes `mcp.json`: the three servers logging JSON (cosmos's `get_user_behavior` always failing,
/// so the composite retries it, then falls back), `rest` over HTTP at `rest_url` when given, and a
/// `${env:..}` secret handed to the sql server.
fn write_config(dir: &TempDir, rest_url: Option<&str>) -> anyhow::Result<PathBuf> {
    let json_logs = |mut args: Vec<String>| {
        args.extend(["--log-format".to_owned(), "json".to_owned()]);
        args
    };
    let rest = match rest_url {
        Some(url) => json!({ "url": url, "headers": { "X-Api-Key": "${env:LOGS_TEST_SECRET}" } }),
        None => json!({ "command": bin_path("rest-mcp-server")?, "args": json_logs(vec![]) }),
    };
    let config = json!({
        "mcpServers": {
            "sql": {
                "command": bin_path("sql-mcp-server")?,
                "args": json_logs(vec!["--data-dir".into(), dir.path().join("sql").display().to_string()]),
                "env": { "LOGS_TEST_SECRET_COPY": "${env:LOGS_TEST_SECRET}" }
            },
            "cosmos": {
                "command": bin_path("cosmos-mcp-server")?,
                "args": json_logs(vec![
                    "--data-dir".into(), ":memory:".into(),
                    "--fail-tools".into(), "get_user_behavior".into(),
                ])
            },
            "rest": rest
        },
        "orchestrator": {
            "defaults": { "retry": { "maxAttempts": 3, "baseDelayMs": 10, "maxDelayMs": 50 } },
            "composites": { "customer_insights": customer_insights()? }
        }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path)
}

/// Starts `mcp-orchestrator --log-format json serve --http 127.0.0.1:0 --token TOKEN` with OTLP
/// export on.
async fn start_orchestrator(config: &std::path::Path) -> anyhow::Result<HttpServer> {
    let env = HashMap::from([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            start_collector().await?,
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
        ("LOGS_TEST_SECRET".to_owned(), SECRET.to_owned()),
    ]);
    let args: Vec<String> = [
        "--log-format",
        "json",
        "serve",
        "--config",
        &config.display().to_string(),
        "--http",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ]
    .map(String::from)
    .to_vec();
    HttpServer::spawn("mcp-orchestrator", &args, &env).await
}

/// Polls `server`'s stderr until `done` holds; returns the lines then.
async fn wait_for(
    server: &HttpServer,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    loop {
        let lines = server
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if done(&lines) {
            return Ok(lines);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("waited in vain for {what}; stderr:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The orchestrator's own JSON lines (relayed upstream lines excluded).
fn own_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] != "upstream")
        .collect()
}

/// The upstreams' JSON lines relayed on the orchestrator's stderr, as (server, line).
fn relayed_lines(lines: &[String]) -> Vec<(String, Value)> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "upstream")
        .filter_map(|v| {
            let server = v["fields"]["server"].as_str()?.to_owned();
            let inner = serde_json::from_str::<Value>(v["fields"]["message"].as_str()?).ok()?;
            Some((server, inner))
        })
        .collect()
}

/// Access lines (`tool call`) carrying `correlation`, counted by server.
fn access_lines_by_server(
    relayed: &[(String, Value)],
    correlation: &str,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (server, line) in relayed {
        if line["fields"]["message"] == "tool call" && line["correlation_id"] == correlation {
            *counts.entry(server.clone()).or_default() += 1;
        }
    }
    counts
}

/// The orchestrator's `agent call` line for `correlation`, if logged yet.
fn agent_call_line(lines: &[String], correlation: &str) -> Option<Value> {
    own_lines(lines)
        .into_iter()
        .find(|l| l["fields"]["message"] == "agent call" && l["correlation_id"] == correlation)
}

/// Fails if a line holds the bearer token or the `${env:..}` secret.
fn assert_no_secrets(lines: &[String]) {
    for line in lines {
        assert!(!line.contains(TOKEN), "the bearer token is logged: {line}");
        assert!(
            !line.contains(SECRET),
            "an ${{env:..}} value is logged: {line}"
        );
    }
}

/// A bare MCP session over HTTP: JSON-RPC posts whose response headers the test can read.
struct RawSession {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    next_id: u64,
}

/// One answered request: the HTTP response headers and the JSON-RPC response.
struct Answer {
    headers: HeaderMap,
    response: Value,
}

impl Answer {
    fn correlation_header(&self) -> Option<&str> {
        self.headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
    }

    fn result(&self) -> anyhow::Result<&Value> {
        let result = &self.response["result"];
        ensure!(result.is_object(), "no result: {}", self.response);
        Ok(result)
    }

    fn meta_correlation(&self) -> anyhow::Result<&str> {
        self.result()?["_meta"]["correlationId"]
            .as_str()
            .with_context(|| format!("no _meta.correlationId in {}", self.response))
    }
}

impl RawSession {
    /// Opens a session with the orchestrator at `url` once its three upstreams are connected
    /// (their tools are listed).
    async fn ready(url: &str) -> anyhow::Result<Self> {
        let mut session = Self::open(url).await?;
        let start = Instant::now();
        loop {
            let listed = session.request("tools/list", json!({}), &[]).await?;
            let tools = listed.result()?["tools"].to_string();
            let wanted = [
                "sql__get_customer_orders",
                "cosmos__get_user_behavior",
                "rest__check_inventory",
            ];
            if wanted.iter().all(|t| tools.contains(t)) {
                return Ok(session);
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "upstreams did not connect: {tools}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Initializes a session with the server at `url`.
    async fn open(url: &str) -> anyhow::Result<Self> {
        let mut session = Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            session: None,
            next_id: 1,
        };
        let init = session
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": { "name": "logs-test", "version": "0" }
                }),
                &[],
            )
            .await?;
        session.session = Some(
            init.headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .context("no mcp-session-id")?
                .to_owned(),
        );
        let (status, _, _) = session
            .post(
                &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
                &[],
                Some(TOKEN),
            )
            .await?;
        ensure!(status.is_success(), "initialized: {status}");
        Ok(session)
    }

    /// Posts one JSON-RPC message; returns the status, headers and body.
    async fn post(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, String)> {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(Duration::from_secs(60), request.send())
            .await
            .context("no response")??;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        let headers = response.headers().clone();
        // A request's SSE stream ends after its response.
        let text = tokio::time::timeout(Duration::from_secs(60), response.text())
            .await
            .context("the response body did not end")??;
        Ok((status, headers, text))
    }

    /// Sends request `method` and waits for its JSON-RPC response.
    async fn request(
        &mut self,
        method: &str,
        params: Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let (status, headers, text) = self.post(&body, headers, Some(TOKEN)).await?;
        ensure!(status.is_success(), "{method}: {status}: {text}");
        // Either one JSON body or an SSE stream whose `data:` lines hold messages.
        let response = std::iter::once(text.as_str())
            .chain(text.lines().filter_map(|l| l.strip_prefix("data:")))
            .filter_map(|m| serde_json::from_str::<Value>(m.trim()).ok())
            .find(|m| m["id"] == id)
            .with_context(|| format!("no response to {method} in {text}"))?;
        Ok(Answer { headers, response })
    }

    /// Calls `tool` with `arguments`, the request `_meta` and extra HTTP headers.
    async fn call(
        &mut self,
        tool: &str,
        arguments: Value,
        meta: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut params = json!({ "name": tool, "arguments": arguments });
        if let Some(meta) = meta {
            params["_meta"] = meta;
        }
        self.request("tools/call", params, headers).await
    }
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_call_has_one_correlation_id_and_one_trace_id_on_every_log_line() -> anyhow::Result<()>
{
    let dir = TempDir::new("logs-call")?;
    let orchestrator = start_orchestrator(&write_config(&dir, None)?).await?;
    let mut session = RawSession::ready(&orchestrator.url).await?;

    let insights = session
        .call(
            "customer_insights",
            json!({ "customerId": "CUST-0001" }),
            None,
            &[("X-Correlation-ID", "test-corr-123")],
        )
        .await?;
    assert_eq!(insights.correlation_header(), Some("test-corr-123"));
    assert_eq!(insights.meta_correlation()?, "test-corr-123");
    let result = insights.result()?;
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(result["_meta"]["composite"], "customer_insights");
    // A second call, so "the lines of one call" must tell calls apart.
    let orders = session
        .call(
            "sql__get_customer_orders",
            json!({ "customerId": "CUST-0002", "limit": 1 }),
            None,
            &[("X-Correlation-ID", "test-corr-456")],
        )
        .await?;
    assert_eq!(orders.correlation_header(), Some("test-corr-456"));
    assert_eq!(orders.meta_correlation()?, "test-corr-456");

    // Every access line is relayed: sql, rest once each, cosmos once per attempt (it always
    // fails, so the orchestrator retries it before falling back); sql once for the second call.
    let lines = wait_for(&orchestrator, "the calls' log lines", |lines| {
        let relayed = relayed_lines(lines);
        access_lines_by_server(&relayed, "test-corr-123")
            .values()
            .sum::<usize>()
            >= 5
            && access_lines_by_server(&relayed, "test-corr-456").get("sql") == Some(&1)
            && agent_call_line(lines, "test-corr-123").is_some()
            && agent_call_line(lines, "test-corr-456").is_some()
    })
    .await?;
    let dump = || lines.join("\n");
    let own = own_lines(&lines);
    let relayed = relayed_lines(&lines);

    let trace_of = |correlation: &str| -> anyhow::Result<String> {
        let line = agent_call_line(&lines, correlation).context("agent call line")?;
        let trace = line["trace_id"].as_str().context("a trace id")?.to_owned();
        ensure!(trace.len() == 32, "{line}");
        Ok(trace)
    };
    let first_trace = trace_of("test-corr-123")?;
    let second_trace = trace_of("test-corr-456")?;
    assert_ne!(first_trace, second_trace, "one trace per call");

    for (correlation, trace) in [
        ("test-corr-123", &first_trace),
        ("test-corr-456", &second_trace),
    ] {
        // The orchestrator: a line is in the call's trace exactly when it names the call's id.
        let in_call: Vec<&Value> = own
            .iter()
            .filter(|l| l["trace_id"] == trace.as_str() || l["correlation_id"] == correlation)
            .collect();
        for line in &in_call {
            assert_eq!(line["trace_id"], trace.as_str(), "{line}\n{}", dump());
            assert_eq!(line["correlation_id"], correlation, "{line}\n{}", dump());
            assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
        }
        // The servers: every line naming the id is in the call's trace.
        for (server, line) in relayed
            .iter()
            .filter(|(_, l)| l["correlation_id"] == correlation)
        {
            assert_eq!(line["trace_id"], trace.as_str(), "{server}: {line}");
        }
    }

    // The composite's lines: the per-call line and the retries of cosmos, from nested spans.
    let first: Vec<&Value> = own
        .iter()
        .filter(|l| l["correlation_id"] == "test-corr-123")
        .collect();
    let messages: Vec<&str> = first
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert_eq!(
        messages.iter().filter(|m| **m == "agent call").count(),
        1,
        "{}",
        dump()
    );
    assert_eq!(
        messages.iter().filter(|m| **m == "retrying").count(),
        2,
        "two retries of cosmos: {}",
        dump()
    );
    let access = access_lines_by_server(&relayed, "test-corr-123");
    assert_eq!(
        access,
        BTreeMap::from([
            ("cosmos".to_owned(), 3),
            ("rest".to_owned(), 1),
            ("sql".to_owned(), 1),
        ]),
        "{}",
        dump()
    );
    assert_no_secrets(&lines);
    orchestrator.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_come_from_headers_or_meta_or_are_generated_and_secrets_stay_out() -> anyhow::Result<()>
{
    let dir = TempDir::new("logs-ids")?;
    // rest over HTTP, so the id also travels as a header to an upstream's own HTTP front.
    let rest =
        HttpServer::start("rest-mcp-server", &["--log-format".into(), "json".into()]).await?;
    let orchestrator = start_orchestrator(&write_config(&dir, Some(&rest.url))?).await?;
    let mut session = RawSession::ready(&orchestrator.url).await?;
    let orders = json!({ "customerId": "CUST-0003", "limit": 1 });

    // No id anywhere: the front generates one, used by the call and named in both places.
    let generated = session
        .call("sql__get_customer_orders", orders.clone(), None, &[])
        .await?;
    let id = generated
        .correlation_header()
        .unwrap_or_default()
        .to_owned();
    assert!(is_generated(&id), "{id}");
    assert_eq!(generated.meta_correlation()?, id);
    let result = generated.result()?;
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(
        result["structuredContent"]["customerId"], "CUST-0003",
        "the pass-through result is the upstream's: {result}"
    );

    // X-Request-ID when X-Correlation-ID is absent or invalid.
    let by_request_id = session
        .call(
            "sql__get_customer_orders",
            orders.clone(),
            None,
            &[
                ("X-Correlation-ID", "not valid"),
                ("X-Request-ID", "req-77"),
            ],
        )
        .await?;
    assert_eq!(by_request_id.correlation_header(), Some("req-77"));
    assert_eq!(by_request_id.meta_correlation()?, "req-77");

    // `_meta.correlationId` without a header: the call's id (the header names the front's own).
    let from_meta = session
        .call(
            "sql__get_customer_orders",
            orders.clone(),
            Some(json!({ "correlationId": "meta-corr-9" })),
            &[],
        )
        .await?;
    assert_eq!(from_meta.meta_correlation()?, "meta-corr-9");
    assert!(is_generated(
        from_meta.correlation_header().unwrap_or_default()
    ));

    // A header beats `_meta`.
    let both = session
        .call(
            "sql__get_customer_orders",
            orders.clone(),
            Some(json!({ "correlationId": "meta-corr-10" })),
            &[("X-Correlation-ID", "hdr-corr-10")],
        )
        .await?;
    assert_eq!(both.correlation_header(), Some("hdr-corr-10"));
    assert_eq!(both.meta_correlation()?, "hdr-corr-10");

    // An upstream over HTTP gets the id (as a header and in `_meta`) and logs it.
    let stock = session
        .call(
            "rest__check_inventory",
            json!({}),
            None,
            &[("X-Correlation-ID", "hdr-rest-1")],
        )
        .await?;
    assert_eq!(stock.meta_correlation()?, "hdr-rest-1");
    let rest_lines = wait_for(&rest, "rest's access line", |lines| {
        lines.iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["fields"]["message"] == "tool call" && v["correlation_id"] == "hdr-rest-1"
            })
        })
    })
    .await?;

    // A request without the token is refused, and still answered with its id.
    let (status, headers, _) = session
        .post(
            &json!({ "jsonrpc": "2.0", "id": 99, "method": "tools/list" }),
            &[("X-Correlation-ID", "unauthorized-1")],
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("unauthorized-1")
    );

    // Each call's ids reached the sql server's access line.
    let lines = wait_for(&orchestrator, "sql's access lines", |lines| {
        let relayed = relayed_lines(lines);
        [id.as_str(), "req-77", "meta-corr-9", "hdr-corr-10"]
            .iter()
            .all(|c| access_lines_by_server(&relayed, c).get("sql") == Some(&1))
    })
    .await?;
    for correlation in [
        id.as_str(),
        "req-77",
        "meta-corr-9",
        "hdr-corr-10",
        "hdr-rest-1",
    ] {
        assert!(
            agent_call_line(&lines, correlation).is_some(),
            "no agent call line for {correlation}"
        );
    }
    assert_eq!(
        access_lines_by_server(&relayed_lines(&lines), "meta-corr-10"),
        BTreeMap::new(),
        "the losing _meta id is not used"
    );

    assert_no_secrets(&lines);
    assert_no_secrets(&rest_lines);
    orchestrator.stop().await?;
    rest.stop().await
}

/// Text that would pose as a log line of its own if written raw: a line break, a timestamp and
/// level of a year no real line has, a carriage return and an ANSI colour.
const FORGED: &str = "\n1999-01-01T00:00:00.000000Z  INFO forged-line\r\u{1b}[31mred";

/// Sends JSON-RPC lines to a stdio server and reads its answers.
struct StdioAgent {
    stdin: tokio::process::ChildStdin,
    answers: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl StdioAgent {
    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        Ok(())
    }

    /// Sends a request and waits for the answer with its id (skipping notifications).
    async fn request(&mut self, id: u64, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.answers.next_line().await? {
                let answer: Value = serde_json::from_str(&line)?;
                if answer["id"] == id {
                    return Ok(answer);
                }
            }
            bail!("stdout closed before the answer to {id}")
        })
        .await
        .with_context(|| format!("waiting for the answer to {method}"))?
    }
}

/// A saga's state changes (started, compensating, each undo, ended) are logged under the agent
/// call's correlation id, each naming the saga's id, so one search finds what happened to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_saga_logs_each_state_change_under_the_call_s_correlation_id() -> anyhow::Result<()> {
    let dir = TempDir::new("logs-saga")?;
    let repo: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json"),
    )?)?;
    let config = json!({
        "mcpServers": {
            "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", dir.path().join("sql")] },
            "cosmos": {
                "command": bin_path("cosmos-mcp-server")?,
                "args": ["--data-dir", ":memory:", "--fail-tools", "record_event"]
            },
            "rest": { "command": bin_path("rest-mcp-server")?, "args": [] }
        },
        "orchestrator": {
            "defaults": { "retry": { "maxAttempts": 2, "baseDelayMs": 10, "maxDelayMs": 50 } },
            "composites": { "place_order": repo["orchestrator"]["composites"]["place_order"] }
        }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    let orchestrator = start_orchestrator(&path).await?;
    let mut session = RawSession::ready(&orchestrator.url).await?;
    let placed = session
        .call(
            "place_order",
            json!({ "customerId": "CUST-0003", "lines": [{ "productId": "PROD-005", "quantity": 1 }] }),
            None,
            &[("X-Correlation-ID", "saga-corr-1")],
        )
        .await?;
    let result = placed.result()?;
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["_meta"]["saga"]["state"], "compensated", "{result}");
    let saga = result["_meta"]["saga"]["id"]
        .as_str()
        .context("a saga id")?
        .to_owned();
    let lines = wait_for(&orchestrator, "the saga's end", |lines| {
        own_lines(lines)
            .iter()
            .any(|l| l["fields"]["message"] == "saga ended")
    })
    .await?;
    let changes: Vec<(String, String)> = own_lines(&lines)
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("saga "))
        })
        .map(|l| {
            assert_eq!(l["correlation_id"], "saga-corr-1", "{l}");
            assert_eq!(l["fields"]["saga"], saga.as_str(), "{l}");
            (
                l["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                l["fields"]["step"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let changes: Vec<(&str, &str)> = changes
        .iter()
        .map(|(m, s)| (m.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("saga started", ""),
            ("saga compensating", ""),
            ("saga step compensation", "stock"),
            ("saga step compensation", "order"),
            ("saga ended", ""),
        ],
        "{}",
        lines.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_from_an_agent_never_start_a_line_of_the_text_log() -> anyhow::Result<()>
{
    use tokio::io::AsyncBufReadExt as _;
    let dir = TempDir::new("logs-forged")?;
    let config = json!({
        "mcpServers": {
            "sql": {
                "command": bin_path("sql-mcp-server")?,
                "args": ["--data-dir", dir.path().join("sql").display().to_string()]
            }
        }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    let mut child = tokio::process::Command::new(bin_path("mcp-orchestrator")?)
        .args(["serve", "--config", &path.display().to_string()])
        .env("RUST_LOG", "info")
        .env_remove("MCP_LOG_FORMAT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let log = tokio::spawn(async move {
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::BufReader::new(stderr), &mut bytes)
            .await
            .map(|_| bytes)
    });
    let mut agent = StdioAgent {
        stdin: child.stdin.take().context("stdin")?,
        answers: tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines(),
    };
    let init = agent
        .request(
            1,
            "initialize",
            json!({
                "protocolVersion": PROTOCOL, "capabilities": {},
                "clientInfo": { "name": format!("agent{FORGED}"), "version": "1" }
            }),
        )
        .await?;
    ensure!(init["result"].is_object(), "{init}");
    agent
        .send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await?;
    let name = agent
        .request(
            2,
            "tools/call",
            json!({ "name": format!("sql__get_customer{FORGED}"), "arguments": {} }),
        )
        .await?;
    ensure!(
        name["error"].is_object() || name["result"]["isError"] == true,
        "{name}"
    );
    let argument = agent
        .request(
            3,
            "tools/call",
            json!({
                "name": "sql__get_customer",
                "arguments": { "customerId": format!("CUST-0001{FORGED}") },
                "_meta": { "correlationId": format!("id{FORGED}") }
            }),
        )
        .await?;
    ensure!(argument["result"].is_object(), "{argument}");
    let uri = agent
        .request(
            4,
            "resources/read",
            json!({ "uri": format!("sql+sql://schema{FORGED}") }),
        )
        .await?;
    ensure!(uri["error"].is_object(), "{uri}");
    drop(agent);
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .context("the orchestrator exits when its stdin closes")??;
    let log = String::from_utf8(log.await??)?;

    // The hostile text did reach the log (as the tool name of the `agent call` line)...
    ensure!(
        log.contains(r"\n1999-01-01T00:00:00.000000Z  INFO forged-line\r"),
        "the injected text is logged, escaped:\n{log}"
    );
    // ... and no part of it stands as a line, rewrites one or colours one.
    ensure!(!log.contains(['\r', '\u{1b}']), "a raw CR or ESC: {log:?}");
    for line in log.lines() {
        ensure!(!line.starts_with("1999-"), "a forged line:\n{log}");
        let stamp = line.split(' ').next().unwrap_or_default();
        ensure!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "a line that does not start with a timestamp: {line:?}\n{log}"
        );
    }
    Ok(())
}
