//! The per-server policy stack against the real servers with injected faults: retries that
//! rescue reads, writes that are never duplicated, a breaker that opens and recovers, a bulkhead
//! that isolates a slow server, timeouts and retry-after.
//!
//! These tests drive the orchestrator as a library (`Gateway`), so they can read each call's
//! attempt report and the policy figures directly.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path};

fn gateway(config: Value) -> anyhow::Result<Arc<Gateway>> {
    let config = Config::parse(&config.to_string(), std::path::Path::new("."), &|_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Gateway::start(config))
}

/// What the agent would receive: the result, or the tool error a failed call becomes.
fn answer(
    outcome: Result<CallToolResult, orchestrator::error::CallError>,
) -> anyhow::Result<CallToolResult> {
    match outcome {
        Ok(r) => Ok(r),
        Err(e) => e.into_tool_answer().map_err(|e| anyhow::anyhow!("{e:?}")),
    }
}

fn args(v: Value) -> Option<rmcp::model::JsonObject> {
    v.as_object().cloned()
}

fn kind(r: &CallToolResult) -> Option<String> {
    kit::ToolError::from_call_tool_result(r).map(|e| e.kind.as_str().to_owned())
}

fn reason(r: &CallToolResult) -> Option<String> {
    r.meta
        .as_ref()
        .and_then(|m| m.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn ready(gw: &Gateway) -> anyhow::Result<()> {
    anyhow::ensure!(
        gw.wait_ready(Duration::from_secs(30)).await,
        "upstreams connected"
    );
    Ok(())
}

/// Customers the test calls about: the 200 seeded ones and 300 more given a profile first, so
/// that every call asks about its own customer.
const READERS: usize = 500;

fn reader(i: usize) -> String {
    format!("CUST-{:04}", i + 1)
}

/// Gives customers 201..=500 a profile in the Cosmos store under `dir`, through a server of its
/// own without faults, so the test proper starts from a store where all 500 exist.
async fn seed_profiles(dir: &TempDir) -> anyhow::Result<()> {
    let cosmos =
        testkit::connect_stdio("cosmos-mcp-server", &["--data-dir".to_owned(), dir.arg()]).await?;
    for i in 200..READERS {
        let id = reader(i);
        testkit::call_ok(
            &cosmos,
            "upsert_item",
            json!({ "container": "profiles",
                    "item": { "id": id, "customerId": id, "segment": "standard" } }),
        )
        .await?;
    }
    cosmos.cancel().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_rescue_reads_from_a_flaky_server() -> anyhow::Result<()> {
    let dir = TempDir::new("resilience-reads")?;
    seed_profiles(&dir).await?;
    // Tuned beyond the defaults on purpose. At 30% failures per attempt the default 3 attempts
    // leave 0.3^3 = 2.7% of calls failed, over the 1% allowed; 5 attempts leave 0.3^5 = 0.24%.
    // Those calls need about 0.43 retries each (0.3 + 0.09 + 0.027 + 0.008), over the default
    // budget of 0.2 per call, hence budgetRatio 2. And 5 failures in a row, which the default
    // breaker opens on, come every few hundred attempts at this rate: only the rate rule stays.
    let gw = gateway(json!({
        "mcpServers": { "cosmos": {
            "command": bin_path("cosmos-mcp-server")?,
            "args": ["--data-dir", dir.arg(), "--failure-rate", "0.3", "--seed", "7"]
        } },
        "orchestrator": { "servers": { "cosmos": {
            "retry": { "maxAttempts": 5, "baseDelayMs": 1, "maxDelayMs": 10, "budgetRatio": 2.0 },
            "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.95 }
        } } }
    }))?;
    ready(&gw).await?;
    // 16 in flight: within the default bulkhead, so what is measured is retry alone. Each call
    // asks about its own customer, so an answer can be matched to the call it answers.
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..READERS)
        .map(|i| {
            let gw = gw.clone();
            async move {
                let (outcome, report) = gw
                    .call_tool_with_report(
                        "cosmos__get_user_behavior",
                        args(json!({ "userId": reader(i) })),
                        &CallContext::default(),
                    )
                    .await;
                (i, outcome, report)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut ok = 0;
    for (i, outcome, _) in &results {
        let r = outcome
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{}: {e}", reader(*i)))?;
        if r.is_error == Some(true) {
            // Only an injected failure that outlived every retry may be left.
            assert_eq!(kind(r).as_deref(), Some("unavailable"), "{r:?}");
            continue;
        }
        let about = r.structured_content.as_ref().map(|v| &v["userId"]);
        assert_eq!(
            about,
            Some(&json!(reader(*i))),
            "the answer to call {i} is about its own customer"
        );
        ok += 1;
    }
    let retried = results
        .iter()
        .filter(|(_, _, report)| report.attempts.len() > 1)
        .count();
    assert!(ok * 100 >= READERS * 99, "{ok}/{READERS} succeeded");
    assert!(
        retried > 50,
        "faults were injected and retried ({retried} calls retried)"
    );
    let snap = gw.upstreams()[0].policy().snapshot();
    assert!(snap.retries as usize >= retried);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_never_duplicated_or_lost_under_faults() -> anyhow::Result<()> {
    let dir = TempDir::new("resilience-orders")?;
    let gw = gateway(json!({
        "mcpServers": { "sql": {
            "command": bin_path("sql-mcp-server")?,
            "args": ["--data-dir", dir.arg(), "--failure-rate", "0.2", "--failure-after-rate", "0.2", "--seed", "3"]
        } },
        "orchestrator": { "servers": { "sql": {
            "retry": { "maxAttempts": 8, "baseDelayMs": 1, "maxDelayMs": 5, "budgetRatio": 5.0 },
            "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.99 }
        } } }
    }))?;
    ready(&gw).await?;
    let cx = CallContext::default();
    let mut succeeded = 0;
    let mut lost_responses = 0;
    for i in 0..100 {
        let (outcome, report) = gw
            .call_tool_with_report(
                "sql__create_order",
                args(json!({
                    "customerId": "CUST-0050",
                    "lines": [{ "productId": "PROD-010", "quantity": 1 }],
                    "idempotencyKey": format!("resilience-{i}")
                })),
                &cx,
            )
            .await;
        let result = outcome?;
        if result.is_error != Some(true) {
            succeeded += 1;
            if result
                .structured_content
                .as_ref()
                .is_some_and(|v| v["created"] == false)
            {
                lost_responses += 1;
            }
        }
        assert!(report.attempts.len() <= 8);
    }
    let (rows, _) = gw
        .call_tool_with_report(
            "sql__query",
            args(json!({
                "sql": "SELECT COUNT(*), COUNT(DISTINCT idempotency_key) FROM orders WHERE idempotency_key LIKE 'resilience-%'"
            })),
            &cx,
        )
        .await;
    let rows = rows?.structured_content.unwrap_or_default();
    assert_eq!(succeeded, 100, "every call eventually reported success");
    assert_eq!(
        rows["rows"][0][0],
        json!(succeeded),
        "one order per successful call"
    );
    assert_eq!(rows["rows"][0][1], json!(succeeded), "no key used twice");
    assert!(
        lost_responses > 0,
        "some responses were lost after the write and the retry returned the first order"
    );
    gw.shutdown().await;
    Ok(())
}

/// The ids of the documents in `userEvents` partition `WRITER` whose id starts with `prefix`,
/// read through `server` (a read, so retried as needed), and the attempts the reading took.
async fn written(gw: &Gateway, server: &str, prefix: &str) -> anyhow::Result<(Vec<String>, usize)> {
    let mut attempts = 0;
    for _ in 0..10 {
        let (outcome, report) = gw
            .call_tool_with_report(
                &format!("{server}__query_items"),
                args(json!({ "container": "userEvents", "partitionKey": "WRITER", "limit": 1000 })),
                &CallContext::default(),
            )
            .await;
        attempts += report.attempts.len();
        let r = outcome?;
        if r.is_error == Some(true) {
            continue;
        }
        let items = r
            .structured_content
            .as_ref()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default();
        let mut ids: Vec<String> = items
            .iter()
            .filter_map(|d| d["id"].as_str())
            .filter(|id| id.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        ids.sort();
        return Ok((ids, attempts));
    }
    anyhow::bail!("the store could not be read")
}

/// Waits until the server has logged all `queries` attempts of `query_items` made so far, the
/// last of them made after every write was answered. The server logs each call before it
/// answers, in order, so every write's line is in by then.
async fn logged_up_to_the_last_query(cosmos: &HttpServer, queries: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cosmos.count_lines(&["tool call", "query_items"]) < queries {
        anyhow::ensure!(Instant::now() < deadline, "the server's log caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_not_safe_to_repeat_is_sent_once_unless_configured_retry_safe() -> anyhow::Result<()>
{
    // Failures before the write runs (20%) and after it ran, its response lost (30% of the rest).
    let cosmos = HttpServer::start(
        "cosmos-mcp-server",
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--failure-rate".into(),
            "0.2".into(),
            "--failure-after-rate".into(),
            "0.3".into(),
            "--seed".into(),
            "5".into(),
        ],
    )
    .await?;
    // Retry is let through generously (attempts, budget, a breaker that never opens), so only
    // the safety rule can keep `upsert_item` (annotated neither read-only nor idempotent) from
    // being repeated. `safe` is the same server, with the tool marked `retrySafe`.
    let generous = json!({
        "retry": { "maxAttempts": 5, "baseDelayMs": 1, "maxDelayMs": 5, "budgetRatio": 10.0 },
        "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 1.0 }
    });
    let mut marked = generous.clone();
    marked["tools"] = json!({ "upsert_item": { "retrySafe": true } });
    let gw = gateway(json!({
        "mcpServers": {
            "cosmos": { "type": "http", "url": cosmos.url },
            "safe": { "type": "http", "url": cosmos.url }
        },
        "orchestrator": { "servers": { "cosmos": generous, "safe": marked } }
    }))?;
    ready(&gw).await?;
    let upsert = |server: &'static str, id: String| {
        let gw = gw.clone();
        async move {
            gw.call_tool_with_report(
                &format!("{server}__upsert_item"),
                args(json!({ "container": "userEvents",
                             "item": { "id": id, "userId": "WRITER", "type": "note" } })),
                &CallContext::default(),
            )
            .await
        }
    };
    let upstream_writes = || cosmos.count_lines(&["tool call", "upsert_item"]);
    let retries = |server: &str| {
        gw.upstreams()
            .iter()
            .find(|u| u.name() == server)
            .map(|u| u.policy().snapshot().retries as usize)
    };

    // As annotated: one attempt per call, whatever the failure.
    let (mut succeeded, mut lost, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..60 {
        let id = format!("once-{i:02}");
        let (outcome, report) = upsert("cosmos", id.clone()).await;
        assert_eq!(report.attempts.len(), 1, "{id}: {report:?}");
        let r = outcome?;
        match kit::ToolError::from_call_tool_result(&r) {
            None => succeeded.push(id),
            Some(e) => {
                assert_eq!(e.kind.as_str(), "unavailable", "{e:?}");
                assert_eq!(
                    report.retry_stopped,
                    Some(orchestrator::policy::RetryStop::Unsafe)
                );
                if e.message.contains("response was lost") {
                    lost.push(id);
                } else {
                    refused.push(id);
                }
            }
        }
    }
    assert!(
        !succeeded.is_empty() && !lost.is_empty() && !refused.is_empty(),
        "faults struck before and after the write: {} ok, {} lost, {} refused",
        succeeded.len(),
        lost.len(),
        refused.len()
    );
    assert_eq!(retries("cosmos"), Some(0), "no retry counted");
    let (stored, mut queries) = written(&gw, "cosmos", "once-").await?;
    // What is stored is what succeeded plus what ran but lost its answer: nothing more.
    let mut expected: Vec<String> = succeeded.iter().chain(&lost).cloned().collect();
    expected.sort();
    assert_eq!(stored, expected);
    assert!(refused.iter().all(|id| !stored.contains(id)));
    logged_up_to_the_last_query(&cosmos, queries).await?;
    assert_eq!(upstream_writes(), 60, "the server saw each write once");

    // Marked retrySafe: the same tool is repeated after a failure, before or after the write.
    let mut retried = 0;
    let mut attempts = 0;
    let mut succeeded = Vec::new();
    for i in 0..40 {
        let id = format!("safe-{i:02}");
        let (outcome, report) = upsert("safe", id.clone()).await;
        attempts += report.attempts.len();
        if report.attempts.len() > 1 {
            retried += 1;
        }
        if outcome?.is_error != Some(true) {
            succeeded.push(id);
        }
    }
    assert!(retried > 5, "{retried} of 40 calls were retried");
    assert_eq!(retries("safe"), Some(attempts - 40));
    let (stored, more) = written(&gw, "safe", "safe-").await?;
    queries += more;
    assert!(
        succeeded.iter().all(|id| stored.contains(id)),
        "every write that reported success is stored"
    );
    logged_up_to_the_last_query(&cosmos, queries).await?;
    assert_eq!(
        upstream_writes(),
        60 + attempts,
        "each attempt the orchestrator reports is one write the server saw"
    );

    // With an idempotency key, not marked: repeated like a safe write, and the server's key
    // keeps each document written once however often the call reached it.
    let keyed = |id: String| {
        let gw = gw.clone();
        async move {
            gw.call_tool_with_report(
                "cosmos__upsert_item",
                args(json!({ "container": "userEvents",
                             "item": { "id": id, "userId": "WRITER", "type": "note" },
                             "idempotencyKey": format!("key-{id}") })),
                &CallContext::default(),
            )
            .await
        }
    };
    let mut retried = 0;
    let mut succeeded = Vec::new();
    for i in 0..40 {
        let id = format!("keyed-{i:02}");
        let (outcome, report) = keyed(id.clone()).await;
        if report.attempts.len() > 1 {
            retried += 1;
        }
        if outcome?.is_error != Some(true) {
            succeeded.push(id);
        }
    }
    assert!(retried > 5, "{retried} of 40 keyed calls were retried");
    let (stored, more) = written(&gw, "cosmos", "keyed-").await?;
    queries += more;
    assert!(
        succeeded.iter().all(|id| stored.contains(id)),
        "every keyed write that reported success is stored"
    );
    logged_up_to_the_last_query(&cosmos, queries).await?;
    assert_eq!(
        cosmos.count_lines(&["item written", "keyed-"]),
        stored.len(),
        "each stored document was written once"
    );
    assert!(
        cosmos.count_lines(&["replayed", "keyed-"]) > 0,
        "a retry after a lost answer found its key's write"
    );
    gw.shutdown().await;
    cosmos.stop().await
}

/// An MCP server inside the test whose write counts every execution and loses the first answer
/// of each note for sure, so the key rule is shown without chance: a write annotated neither
/// read-only nor idempotent, whose schema accepts an `idempotencyKey`. `append_note`
/// stores its note, and the first execution of each note loses its answer (as
/// `--failure-after-rate` does); given a key it has seen, it answers with the first note instead of
/// storing it again (as `sql.create_order` does).
mod notes {
    use std::sync::{Arc, Mutex};

    use rmcp::{
        ErrorData, RoleServer, ServerHandler,
        model::{
            CallToolRequestParams, CallToolResponse, CallToolResult, Implementation,
            ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
            ToolAnnotations,
        },
        service::RequestContext,
        transport::streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
        },
    };
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    /// What the server did.
    #[derive(Debug, Default)]
    pub struct Book {
        /// Executions of `append_note`, whatever their answer.
        pub executions: usize,
        /// Notes stored, in order.
        pub notes: Vec<String>,
        keys: std::collections::HashSet<String>,
        answered_once: std::collections::HashSet<String>,
    }

    #[derive(Clone)]
    struct Handler(Arc<Mutex<Book>>);

    impl ServerHandler for Handler {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
                .with_server_info(Implementation::new("notes", "1"))
        }

        async fn list_tools(
            &self,
            _request: Option<PaginatedRequestParams>,
            _context: RequestContext<RoleServer>,
        ) -> Result<ListToolsResult, ErrorData> {
            let schema = json!({
                "type": "object",
                "properties": { "note": { "type": "string" }, "idempotencyKey": { "type": "string" } },
                "required": ["note"],
                "additionalProperties": false
            });
            let Value::Object(schema) = schema else {
                unreachable!("an object")
            };
            Ok(ListToolsResult::with_all_items(vec![
                Tool::new("append_note", "Appends a note", Arc::new(schema)).annotate(
                    ToolAnnotations::new()
                        .read_only(false)
                        .destructive(false)
                        .idempotent(false),
                ),
            ]))
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            _context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            let args = request.arguments.unwrap_or_default();
            let note = args
                .get("note")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let key = args
                .get("idempotencyKey")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
            book.executions += 1;
            if let Some(k) = &key
                && book.keys.contains(k)
            {
                return Ok(
                    CallToolResult::structured(json!({ "note": note, "stored": false })).into(),
                );
            }
            book.notes.push(note.clone());
            if let Some(k) = key {
                book.keys.insert(k);
            }
            if book.answered_once.insert(note) {
                return Ok(
                    kit::ToolError::unavailable("stored, but the answer was lost")
                        .to_call_tool_result()
                        .into(),
                );
            }
            Ok(CallToolResult::structured(json!({ "stored": true })).into())
        }
    }

    /// A running server; stops when dropped.
    pub struct Notes {
        /// `http://127.0.0.1:PORT/mcp`.
        pub url: String,
        /// What it did.
        pub book: Arc<Mutex<Book>>,
        stop: CancellationToken,
    }

    impl Drop for Notes {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    impl Notes {
        /// Starts it on an ephemeral port.
        pub async fn start() -> anyhow::Result<Self> {
            let book = Arc::new(Mutex::new(Book::default()));
            let handler = Handler(book.clone());
            let stop = CancellationToken::new();
            let config =
                StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
            let service: StreamableHttpService<Handler, LocalSessionManager> =
                StreamableHttpService::new(move || Ok(handler.clone()), Default::default(), config);
            let router = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}/mcp", listener.local_addr()?);
            let shutdown = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
                    .await;
            });
            Ok(Self { url, book, stop })
        }

        /// `(executions, notes stored)`.
        pub fn seen(&self) -> (usize, Vec<String>) {
            let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            (book.executions, book.notes.clone())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_write_safe_to_repeat() -> anyhow::Result<()> {
    let notes = notes::Notes::start().await?;
    let gw = gateway(json!({
        "mcpServers": { "notes": { "type": "http", "url": notes.url } },
        "orchestrator": { "servers": { "notes": {
            "retry": { "maxAttempts": 3, "baseDelayMs": 1, "maxDelayMs": 2 }
        } } }
    }))?;
    ready(&gw).await?;
    let append = |a: Value| {
        let gw = gw.clone();
        async move {
            gw.call_tool_with_report("notes__append_note", args(a), &CallContext::default())
                .await
        }
    };

    // No key, or a blank one: the lost answer is not repeated.
    for a in [
        json!({ "note": "plain" }),
        json!({ "note": "blank", "idempotencyKey": "  " }),
    ] {
        let (outcome, report) = append(a.clone()).await;
        assert_eq!(kind(&outcome?).as_deref(), Some("unavailable"), "{a}");
        assert_eq!(report.attempts.len(), 1, "{a}");
        assert_eq!(
            report.retry_stopped,
            Some(orchestrator::policy::RetryStop::Unsafe)
        );
    }
    assert_eq!(notes.seen(), (2, vec!["plain".into(), "blank".into()]));

    // With a key: repeated, and the server's key keeps the note single.
    let (outcome, report) = append(json!({ "note": "keyed", "idempotencyKey": "k-1" })).await;
    let r = outcome?;
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert_eq!(
        r.structured_content.as_ref().map(|v| &v["stored"]),
        Some(&json!(false)),
        "the repeat found the first note"
    );
    let outcomes: Vec<&str> = report.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["unavailable", "ok"]);
    assert_eq!(
        notes.seen(),
        (4, vec!["plain".into(), "blank".into(), "keyed".into()])
    );
    gw.shutdown().await;
    Ok(())
}

fn cosmos_http(url: &str, extra: Value) -> Value {
    let mut servers = json!({ "cosmos": { "type": "http", "url": url } });
    if let (Value::Object(s), Value::Object(e)) = (&mut servers, extra) {
        s.extend(e);
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_probes_and_closes() -> anyhow::Result<()> {
    let cosmos = HttpServer::start(
        "cosmos-mcp-server",
        &[
            "--data-dir".into(),
            ":memory:".into(),
            "--fail-tools".into(),
            "get_user_behavior".into(),
        ],
    )
    .await?;
    let gw = gateway(json!({
        "mcpServers": cosmos_http(&cosmos.url, json!({})),
        "orchestrator": { "servers": { "cosmos": {
            "retry": { "maxAttempts": 1 },
            // The server answers every call with an error: the failure share trips the breaker
            // (answers never count as unreachable). A fixed open period keeps the timing simple.
            "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.5, "minCalls": 3,
                                "openMs": 800, "minOpenMs": 800 }
        } } }
    }))?;
    ready(&gw).await?;
    let cx = CallContext::default();
    let upstream_calls = || cosmos.count_lines(&["tool call", "get_user_behavior"]);
    let call = || async {
        answer(
            gw.call_tool(
                "cosmos__get_user_behavior",
                args(json!({ "userId": "CUST-0001" })),
                &cx,
            )
            .await,
        )
    };

    for _ in 0..3 {
        let r = call().await?;
        assert_eq!(kind(&r).as_deref(), Some("unavailable"));
        assert_eq!(reason(&r), None, "the server's own error passes through");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream_calls(), 3);

    // Open: refused without reaching the upstream (how fast is the `policy` bench's figure).
    for _ in 0..20 {
        let r = call().await?;
        assert_eq!(reason(&r).as_deref(), Some("circuit_open"), "{r:?}");
        assert!(
            r.meta
                .as_ref()
                .and_then(|m| m.get("retryAfterMs"))
                .is_some()
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream_calls(), 3, "no call reached the server while open");

    // After openMs one probe goes through; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let probe = call().await?;
    assert_eq!(reason(&probe), None, "the probe reached the server");
    assert_eq!(reason(&call().await?).as_deref(), Some("circuit_open"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream_calls(), 4, "exactly one probe");

    // The faults stop; the next probe succeeds and closes the breaker.
    cosmos.signal("USR1")?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let healed = call().await?;
    assert_eq!(healed.is_error, Some(false), "{healed:?}");
    for _ in 0..5 {
        assert_eq!(call().await?.is_error, Some(false));
    }
    let transitions: Vec<String> = gw.upstreams()[0]
        .policy()
        .breaker()
        .transitions()
        .iter()
        .map(|t| format!("{:?}->{:?}", t.from, t.to))
        .collect();
    assert_eq!(
        transitions,
        [
            "Closed->Open",
            "Open->HalfOpen",
            "HalfOpen->Open",
            "Open->HalfOpen",
            "HalfOpen->Closed"
        ]
    );
    gw.shutdown().await;
    cosmos.stop().await
}

/// Waits until `done` holds, checking every 50 ms for at most `within`.
async fn until(within: Duration, done: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_that_goes_away_is_seen_gone_and_its_return_half_opens_the_breaker()
-> anyhow::Result<()> {
    let cosmos = HttpServer::start(
        "cosmos-mcp-server",
        &["--data-dir".into(), ":memory:".into()],
    )
    .await?;
    let url = cosmos.url.clone();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    // An open period of a minute: only the supervisor's word can let a call through sooner.
    let gw = gateway(json!({
        "mcpServers": cosmos_http(&url, json!({})),
        "orchestrator": { "servers": { "cosmos": {
            "retry": { "maxAttempts": 1 },
            "circuitBreaker": { "openMs": 60000, "minOpenMs": 60000 }
        } } }
    }))?;
    ready(&gw).await?;
    let cx = CallContext::default();
    let call = || async {
        answer(
            gw.call_tool(
                "cosmos__get_user_behavior",
                args(json!({ "userId": "CUST-0001" })),
                &cx,
            )
            .await,
        )
    };
    assert_eq!(call().await?.is_error, Some(false));
    let upstream = gw.upstreams()[0].clone();

    cosmos.stop().await?;
    // The first call finds the server gone; the supervisor ends the session and the breaker
    // opens, so status tells the truth and later calls are refused at once.
    let failed = call().await?;
    assert_eq!(kind(&failed).as_deref(), Some("unavailable"), "{failed:?}");
    assert!(
        until(Duration::from_secs(10), || upstream
            .connected_since()
            .is_none())
        .await,
        "the upstream is shown disconnected after {failed:?}"
    );
    assert_eq!(upstream.policy().breaker().state().as_str(), "open");
    let refused = call().await?;
    assert_eq!(
        reason(&refused).as_deref(),
        Some("circuit_open"),
        "{refused:?}"
    );

    // Back on the same port: the supervisor reconnects, the breaker goes half-open long before
    // its minute is up, and the first call closes it.
    let back = HttpServer::spawn(
        "cosmos-mcp-server",
        &[
            "--http".into(),
            addr,
            "--data-dir".into(),
            ":memory:".into(),
        ],
        &std::collections::HashMap::new(),
    )
    .await?;
    assert!(
        until(Duration::from_secs(20), || upstream
            .connected_since()
            .is_some())
        .await,
        "reconnected"
    );
    assert_eq!(upstream.policy().breaker().state().as_str(), "half_open");
    let healed = call().await?;
    assert_eq!(healed.is_error, Some(false), "{healed:?}");
    assert_eq!(upstream.policy().breaker().state().as_str(), "closed");
    gw.shutdown().await;
    back.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_admits_its_limit_rejects_the_rest_and_isolates_other_servers()
-> anyhow::Result<()> {
    let gw = gateway(json!({
        "mcpServers": {
            "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--latency-ms", "2000"] },
            "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", ":memory:"] }
        },
        "orchestrator": { "servers": { "cosmos": {
            "bulkhead": { "maxConcurrent": 4, "maxQueue": 4 },
            "retry": { "maxAttempts": 1 },
            "timeoutMs": 10000
        } } }
    }))?;
    ready(&gw).await?;
    let cosmos = || {
        gw.upstreams()
            .iter()
            .find(|u| u.name() == "cosmos")
            .map(|u| u.policy().snapshot().bulkhead)
            .unwrap_or_default()
    };
    // Each call notes when its answer came back.
    let cosmos_calls = (0..50).map(|i| {
        let gw = gw.clone();
        async move {
            let r = answer(
                gw.call_tool(
                    "cosmos__get_user_behavior",
                    args(json!({ "userId": format!("CUST-{:04}", i + 1) })),
                    &CallContext::default(),
                )
                .await,
            );
            (r, Instant::now())
        }
    });
    let load = tokio::spawn(futures::future::join_all(cosmos_calls));
    // Until cosmos's bulkhead is full: 4 calls running (each 2 s), 4 queued.
    let full = Instant::now() + Duration::from_secs(20);
    while !(cosmos()["running"] == 4 && cosmos()["queued"] == 4) {
        anyhow::ensure!(
            Instant::now() < full,
            "cosmos's bulkhead filled: {}",
            cosmos()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // SQL calls made now are not queued behind cosmos's.
    let mut sql_done = Vec::new();
    for _ in 0..5 {
        let r = gw
            .call_tool(
                "sql__get_customer",
                args(json!({ "customerId": "CUST-0001" })),
                &CallContext::default(),
            )
            .await?;
        assert_eq!(r.is_error, Some(false));
        sql_done.push(Instant::now());
    }
    let mid = cosmos();
    assert_eq!(
        (&mid["running"], &mid["queued"]),
        (&json!(4), &json!(4)),
        "cosmos calls still running: {mid}"
    );

    let results = load.await?;
    let rejected: Vec<Instant> = results
        .iter()
        .filter(|(r, _)| {
            r.as_ref()
                .is_ok_and(|r| reason(r).as_deref() == Some("bulkhead_full"))
        })
        .map(|(_, done)| *done)
        .collect();
    let admitted: Vec<Instant> = results
        .iter()
        .filter(|(r, _)| r.as_ref().is_ok_and(|r| r.is_error == Some(false)))
        .map(|(_, done)| *done)
        .collect();
    assert_eq!(rejected.len(), 42);
    assert_eq!(admitted.len(), 8);
    let first_admitted_done = admitted.iter().min().copied();
    assert!(
        sql_done.iter().all(|t| Some(*t) < first_admitted_done),
        "every SQL call finished before the first admitted cosmos call did"
    );
    assert!(
        rejected.iter().all(|t| Some(*t) < first_admitted_done),
        "rejected at once: before any admitted call finished, so none waited for a slot"
    );
    assert_eq!(cosmos()["rejected"], 42);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_a_slow_call_and_retry_after_is_honoured() -> anyhow::Result<()> {
    let gw = gateway(json!({
        "mcpServers": {
            "slow": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--latency-ms", "1500"] },
            "tight": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--ru-per-second", "3"] }
        },
        "orchestrator": { "servers": {
            "slow": { "timeoutMs": 300, "retry": { "maxAttempts": 1 } },
            "tight": { "retry": { "maxAttempts": 4, "baseDelayMs": 1, "maxDelayMs": 2, "budgetRatio": 10.0 },
                       "circuitBreaker": { "consecutiveFailures": 0 } }
        } }
    }))?;
    ready(&gw).await?;
    // Without the timeout this call would succeed after the injected 1.5 s: the reason `timeout`
    // is what shows the timeout ended it.
    let r = answer(
        gw.call_tool(
            "slow__get_user_behavior",
            args(json!({ "userId": "CUST-0001" })),
            &CallContext::default(),
        )
        .await,
    )?;
    assert_eq!(reason(&r).as_deref(), Some("timeout"), "{r:?}");
    assert_eq!(kind(&r).as_deref(), Some("unavailable"));

    // A cross-partition query costs more than 3 RU/s: throttled, with retryAfterMs.
    let mut honoured = 0;
    for _ in 0..3 {
        let (_, report) = gw
            .call_tool_with_report(
                "tight__query_items",
                args(json!({ "container": "sessions", "limit": 50 })),
                &CallContext::default(),
            )
            .await;
        // retry_delays_ms[i] is the delay planned after attempt i, before attempt i + 1.
        for (i, (attempt, delay)) in report
            .attempts
            .iter()
            .zip(&report.retry_delays_ms)
            .enumerate()
        {
            if let Some(after) = attempt.retry_after_ms {
                assert_eq!(attempt.outcome, "throttled");
                assert!(
                    *delay >= after,
                    "planned {delay} ms, server asked for {after} ms"
                );
                // Measured: from the end of this attempt to the start of the next, as the
                // orchestrator reports them (rounded to 0.01 ms each, hence the 0.02 ms).
                let next = &report.attempts[i + 1];
                let gap = next.started_ms - (attempt.started_ms + attempt.elapsed_ms);
                assert!(
                    gap + 0.02 >= after,
                    "attempt {} started {gap} ms after attempt {i} ended; server asked for {after} ms",
                    i + 1
                );
                honoured += 1;
            }
        }
    }
    assert!(honoured > 0, "a throttled attempt was retried");
    gw.shutdown().await;
    Ok(())
}
