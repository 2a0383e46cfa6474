//! One trace across every process: an OTLP/HTTP receiver inside the test collects the spans the
//! orchestrator and the three servers export while `customer_insights` runs, and the test checks
//! that they form one tree under the agent's own `traceparent`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
    trace::v1::Span,
};
use prost::Message;
use rmcp::{
    ServiceExt,
    model::{CallToolRequest, CallToolRequestParams, ClientRequest, RequestMetaObject},
    service::PeerRequestOptions,
    transport::TokioChildProcess,
};
use serde_json::{Value, json};
use testkit::{TempDir, bin_path};

/// The agent's own trace: its span id must become the parent of the orchestrator's root span.
const AGENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// One exported span with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Store = Arc<Mutex<Vec<Received>>>;

async fn receive(State(store): State<Store>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(AnyValue::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    store.lock().expect("lock").extend(spans);
    StatusCode::OK
}

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1; returns its base URL and what it got.
async fn start_receiver() -> anyhow::Result<(String, Store)> {
    let store = Store::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), store))
}

/// The three servers and `customer_insights` as the repo's mcp.json defines it (cache rules
/// dropped: this test wants every step to reach its server).
fn write_config(dir: &TempDir) -> anyhow::Result<std::path::PathBuf> {
    let repo: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json"),
    )?)?;
    let mut composite = repo["orchestrator"]["composites"]["customer_insights"].clone();
    anyhow::ensure!(composite.is_object(), "mcp.json defines customer_insights");
    if let Some(steps) = composite["steps"].as_object_mut() {
        for step in steps.values_mut() {
            if let Some(s) = step.as_object_mut() {
                s.remove("cache");
            }
        }
    }
    let config = json!({
        "mcpServers": {
            "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", dir.path().join("sql").display().to_string()] },
            // Cosmos fails the optional `behavior` step, whose span must carry the error.
            "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--fail-tools", "get_user_behavior"] },
            "rest": { "command": bin_path("rest-mcp-server")?, "args": [] }
        },
        "orchestrator": { "composites": { "customer_insights": composite } }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path)
}

/// Waits until the receiver holds spans of every one of `services` and the set stops growing.
async fn settled(store: &Store, services: &[&str], limit: Duration) -> Vec<Received> {
    let start = Instant::now();
    let mut last = 0;
    loop {
        let spans = store.lock().expect("lock").clone();
        let all = services
            .iter()
            .all(|s| spans.iter().any(|r| r.service == *s));
        if (all && spans.len() == last) || start.elapsed() > limit {
            return spans;
        }
        last = spans.len();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `mcp-orchestrator serve` on `config` exporting to `endpoint` (its children too, since they
/// inherit its environment), with the three upstreams connected; and its stderr lines.
async fn start_traced(
    config: &std::path::Path,
    endpoint: &str,
) -> anyhow::Result<(testkit::Client, Arc<Mutex<Vec<String>>>)> {
    let mut command = tokio::process::Command::new(bin_path("mcp-orchestrator")?);
    // Children inherit the orchestrator's environment, so the servers export (and log JSON) too.
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,rmcp=warn")
        .env("MCP_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SDK_DISABLED");
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(stderr) = stderr {
        let log = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().expect("lock").push(line);
            }
        });
    }
    let agent = ().serve(transport).await?;

    // Wait for the three upstreams to connect (the composite's tools are listed by then).
    let start = Instant::now();
    loop {
        let status = testkit::read_status(&agent).await?;
        let connected = status["servers"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|s| s["connected"] == true).count());
        if connected == 3 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "servers did not connect: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((agent, log))
}

/// Calls `tool` as the agent whose span is [`AGENT_SPAN_ID`] in [`AGENT_TRACE_ID`].
async fn call_in_agent_trace(
    agent: &testkit::Client,
    tool: &str,
    args: Value,
) -> anyhow::Result<rmcp::model::CallToolResult> {
    let mut meta = RequestMetaObject::new();
    meta.set_traceparent(format!("00-{AGENT_TRACE_ID}-{AGENT_SPAN_ID}-01"));
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    let result = agent
        .peer()
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options().with_meta(meta),
        )
        .await?
        .await_response()
        .await?;
    match result {
        rmcp::model::ServerResult::CallToolResult(r) => Ok(r),
        other => anyhow::bail!("unexpected result {other:?}"),
    }
}

/// One line per span, for failure messages.
fn summary_of(spans: &[Received]) -> String {
    spans
        .iter()
        .map(|r| {
            format!(
                "{} {} trace={} id={} parent={}",
                r.service,
                r.span.name,
                r.trace_id(),
                r.span_id(),
                r.parent_id()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_insights_is_one_trace_across_every_process() -> anyhow::Result<()> {
    let (endpoint, store) = start_receiver().await?;
    let dir = TempDir::new("tracing")?;
    let config = write_config(&dir)?;
    let (agent, log) = start_traced(&config, &endpoint).await?;
    let result = call_in_agent_trace(
        &agent,
        "customer_insights",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    assert_ne!(result.is_error, Some(true), "composite failed: {result:?}");

    // Closing the agent ends the orchestrator, which closes its children; every process flushes
    // its batch exporter on the way out.
    agent.cancel().await?;
    let services = [
        "mcp-orchestrator",
        "sql-mcp-server",
        "cosmos-mcp-server",
        "rest-mcp-server",
    ];
    let spans = settled(&store, &services, Duration::from_secs(10)).await;
    let in_trace: Vec<&Received> = spans
        .iter()
        .filter(|r| r.trace_id() == AGENT_TRACE_ID)
        .collect();
    let summary = || summary_of(&spans);
    for service in services {
        assert!(
            in_trace.iter().any(|r| r.service == service),
            "no span of {service} in the agent's trace:\n{}",
            summary()
        );
    }

    // The orchestrator's root continues the agent's span.
    let root = in_trace
        .iter()
        .find(|r| r.service == "mcp-orchestrator" && r.parent_id() == AGENT_SPAN_ID)
        .unwrap_or_else(|| panic!("no orchestrator span under the agent's:\n{}", summary()));
    assert_eq!(root.span.name, "tools/call customer_insights");

    // One step span per step under the root; one attempt span per step under its step.
    let by_id: HashMap<String, &Received> = in_trace.iter().map(|r| (r.span_id(), *r)).collect();
    let steps: Vec<&&Received> = in_trace
        .iter()
        .filter(|r| r.service == "mcp-orchestrator" && r.attr("mcp.workflow.step").is_some())
        .collect();
    assert_eq!(steps.len(), 3, "three step spans:\n{}", summary());
    for step in &steps {
        assert_eq!(step.parent_id(), root.span_id(), "step under the root");
    }
    // The optional step that failed (and fell back) says so, with the error's kind; the others
    // are not marked as errors.
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let status = |r: &Received| r.span.status.as_ref().map_or(0, |s| s.code);
    let failed = steps
        .iter()
        .find(|r| r.attr("mcp.workflow.step").as_deref() == Some("behavior"))
        .unwrap_or_else(|| panic!("no behavior step span:\n{}", summary()));
    assert_eq!(
        status(failed),
        StatusCode::Error as i32,
        "behavior step status"
    );
    assert_eq!(failed.attr("error.type").as_deref(), Some("unavailable"));
    for ok in steps
        .iter()
        .filter(|r| r.attr("mcp.workflow.step").as_deref() != Some("behavior"))
    {
        assert_ne!(
            status(ok),
            StatusCode::Error as i32,
            "{:?}",
            ok.attr("mcp.workflow.step")
        );
    }
    let attempts: Vec<&&Received> = in_trace
        .iter()
        .filter(|r| r.service == "mcp-orchestrator" && r.attr("mcp.retry.attempt").is_some())
        .collect();
    assert!(attempts.len() >= 3, "attempt spans:\n{}", summary());
    for attempt in &attempts {
        let parent = by_id
            .get(&attempt.parent_id())
            .unwrap_or_else(|| panic!("attempt without its step:\n{}", summary()));
        assert!(parent.attr("mcp.workflow.step").is_some());
        assert_eq!(parent.attr("mcp.server"), attempt.attr("mcp.server"));
        assert_eq!(
            attempt.attr("mcp.method.name").as_deref(),
            Some("tools/call")
        );
        assert!(attempt.attr("gen_ai.tool.name").is_some());
        assert_eq!(attempt.attr("mcp.breaker.state").as_deref(), Some("closed"));
    }

    // Each server's handler span is a child of an orchestrator attempt span for that server.
    for (service, server) in [
        ("sql-mcp-server", "sql"),
        ("cosmos-mcp-server", "cosmos"),
        ("rest-mcp-server", "rest"),
    ] {
        let handler = in_trace
            .iter()
            .find(|r| r.service == service && r.span.name.starts_with("tools/call"))
            .unwrap_or_else(|| panic!("no handler span of {service}:\n{}", summary()));
        let parent = by_id
            .get(&handler.parent_id())
            .unwrap_or_else(|| panic!("{service}'s handler has no parent here:\n{}", summary()));
        assert!(
            parent.attr("mcp.retry.attempt").is_some(),
            "{service}'s handler's parent is an attempt span"
        );
        assert_eq!(parent.attr("mcp.server").as_deref(), Some(server));
    }

    // The REST backend (in the rest server's process) continues the REST server's client span.
    let api = in_trace
        .iter()
        .find(|r| {
            r.service == "rest-mcp-server"
                && r.span.kind
                    == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
                && !r.span.name.starts_with("tools/call")
        })
        .unwrap_or_else(|| panic!("no retail API span:\n{}", summary()));
    let client = by_id
        .get(&api.parent_id())
        .unwrap_or_else(|| panic!("API span has no parent here:\n{}", summary()));
    assert_eq!(client.service, "rest-mcp-server");

    // JSON logs: each server's "tool call" line (relayed on the orchestrator's stderr) carries
    // the trace id of the agent's trace and a span id.
    let lines = log.lock().expect("lock").clone();
    let relayed: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .filter_map(|m| serde_json::from_str::<Value>(&m).ok())
        .filter(|v| v["fields"]["message"] == "tool call")
        .collect();
    assert!(
        relayed.len() >= 3,
        "tool call lines of the servers:\n{}",
        lines.join("\n")
    );
    for line in &relayed {
        assert_eq!(line["trace_id"], AGENT_TRACE_ID, "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    Ok(())
}

/// A saga that fails and is undone is one trace too: under the agent's call, one `saga` span
/// naming the saga's id and how it ended; beneath it every step (the event's settling replays
/// included) and both undos, each with the server's own handler span under its attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_compensated_saga_is_one_trace_with_its_steps_and_undos() -> anyhow::Result<()> {
    let (endpoint, store) = start_receiver().await?;
    let dir = TempDir::new("tracing-saga")?;
    let repo: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp.json"),
    )?)?;
    let config = json!({
        "mcpServers": {
            "sql": { "command": bin_path("sql-mcp-server")?, "args": ["--data-dir", dir.path().join("sql").display().to_string()] },
            "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:", "--fail-tools", "record_event"] },
            "rest": { "command": bin_path("rest-mcp-server")?, "args": [] }
        },
        "orchestrator": {
            "defaults": { "retry": { "maxAttempts": 1 } },
            "composites": { "place_order": repo["orchestrator"]["composites"]["place_order"] }
        }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    let (agent, _log) = start_traced(&path, &endpoint).await?;
    let result = call_in_agent_trace(
        &agent,
        "place_order",
        json!({ "customerId": "CUST-0002", "lines": [{ "productId": "PROD-006", "quantity": 1 }] }),
    )
    .await?;
    let meta = result.meta.clone().unwrap_or_default();
    let saga = meta.get("saga").cloned().unwrap_or_default();
    assert_eq!(saga["state"], "compensated", "{meta:?}");
    let saga_id = saga["id"].as_str().unwrap_or_default().to_owned();
    agent.cancel().await?;

    let services = [
        "mcp-orchestrator",
        "sql-mcp-server",
        "cosmos-mcp-server",
        "rest-mcp-server",
    ];
    let spans = settled(&store, &services, Duration::from_secs(10)).await;
    let summary = || summary_of(&spans);
    let in_trace: Vec<&Received> = spans
        .iter()
        .filter(|r| r.trace_id() == AGENT_TRACE_ID)
        .collect();
    let by_id: HashMap<String, &Received> = in_trace.iter().map(|r| (r.span_id(), *r)).collect();
    let root = in_trace
        .iter()
        .find(|r| r.service == "mcp-orchestrator" && r.parent_id() == AGENT_SPAN_ID)
        .unwrap_or_else(|| panic!("no orchestrator span under the agent's:\n{}", summary()));
    assert_eq!(root.span.name, "tools/call place_order");
    let saga_span = in_trace
        .iter()
        .find(|r| r.attr("mcp.saga.id").is_some())
        .unwrap_or_else(|| panic!("no saga span:\n{}", summary()));
    assert_eq!(
        saga_span.parent_id(),
        root.span_id(),
        "the saga under the call"
    );
    assert_eq!(saga_span.attr("mcp.saga.id"), Some(saga_id));
    assert_eq!(
        saga_span.attr("mcp.saga.state").as_deref(),
        Some("compensated")
    );
    // Every step and undo span hangs under the saga span.
    let steps: Vec<String> = in_trace
        .iter()
        .filter(|r| r.service == "mcp-orchestrator")
        .filter_map(|r| Some((r, r.attr("mcp.workflow.step")?)))
        .map(|(r, step)| {
            assert_eq!(r.parent_id(), saga_span.span_id(), "{step} under the saga");
            step
        })
        .collect();
    for step in [
        "order",
        "stock",
        "event",
        "stock.compensate",
        "order.compensate",
    ] {
        assert!(
            steps.iter().any(|s| s == step),
            "a span for {step}: {steps:?}\n{}",
            summary()
        );
    }
    // The event was sent once, then settled by replays: one span each.
    assert_eq!(
        steps.iter().filter(|s| *s == "event").count(),
        4,
        "{steps:?}"
    );
    // The undos reached their servers inside the trace.
    for (service, tool) in [
        ("sql-mcp-server", "cancel_order"),
        ("rest-mcp-server", "release_reservation"),
    ] {
        let handler = in_trace
            .iter()
            .find(|r| r.service == service && r.span.name == format!("tools/call {tool}"))
            .unwrap_or_else(|| panic!("no {tool} handler span:\n{}", summary()));
        let attempt = by_id
            .get(&handler.parent_id())
            .unwrap_or_else(|| panic!("{tool}'s handler has no parent here:\n{}", summary()));
        let undo = by_id
            .get(&attempt.parent_id())
            .unwrap_or_else(|| panic!("{tool}'s attempt has no parent here:\n{}", summary()));
        assert!(
            undo.attr("mcp.workflow.step")
                .is_some_and(|s| s.ends_with(".compensate")),
            "{tool} runs under an undo span"
        );
    }
    Ok(())
}
