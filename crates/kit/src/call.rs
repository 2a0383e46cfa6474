//! The one wrapper every `tools/call` of a server goes through.
//!
//! It opens the server span (continuing the caller's trace from `_meta`, and naming the call's
//! correlation id, which every log line inside it repeats, and which it leaves in the request's
//! extensions for the tool to pass on), counts the call as in flight so
//! shutdown can wait for it, applies injected faults, records the outcome on the span, writes one
//! access log line per call (`tool call tool=NAME outcome=... elapsed_ms=N`), and returns the
//! correlation id in the result's `_meta.correlationId`.
//! Servers call [`ServerKit::call_tool`] from their `ServerHandler::call_tool` and pass their tool
//! router as `run`.

use std::{borrow::Cow, future::Future, sync::Arc, time::Instant};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolRequestParams, CallToolResponse},
    service::RequestContext,
};
use tracing::{Instrument, field::Empty};

use crate::{
    correlation,
    faults::{Faults, Injection},
    in_flight::InFlight,
    telemetry,
    tool_error::ToolError,
};

/// Per-process state shared by all calls: the server's name, its faults and its in-flight count.
#[derive(Debug, Clone)]
pub struct ServerKit {
    /// Reported as `mcp.server` on spans.
    pub server_name: &'static str,
    /// Shared by every session so a seed fixes the fault sequence of the whole process.
    pub faults: Arc<Faults>,
    /// Shared with [`crate::serve`] so shutdown can wait for running calls.
    pub in_flight: InFlight,
}

impl ServerKit {
    /// A kit for `server_name` with the given faults.
    ///
    /// Called inside a Tokio runtime (as every server's `run` is), it also starts listening for
    /// SIGUSR1/SIGUSR2, which pause and resume the faults ([`Faults::watch_signals`]).
    pub fn new(server_name: &'static str, faults: Faults) -> Self {
        let faults = Arc::new(faults);
        faults.watch_signals();
        Self {
            server_name,
            faults,
            in_flight: InFlight::default(),
        }
    }

    /// Runs one tool call through the shared path; `run` is the server's own dispatch.
    ///
    /// `handler` is asked for the tool's definition only when the arguments fail to deserialize,
    /// to name the offending argument from the input schema.
    pub async fn call_tool<H, F, Fut>(
        &self,
        handler: &H,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
        run: F,
    ) -> Result<CallToolResponse, ErrorData>
    where
        H: ServerHandler,
        F: FnOnce(CallToolRequestParams, RequestContext<RoleServer>) -> Fut,
        Fut: Future<Output = Result<CallToolResponse, ErrorData>>,
    {
        let correlation = correlation::of_request(&context);
        // Left for the tool: one that calls further services passes the same id on, so their
        // log lines name the call too (see [`correlation::of_call`]).
        context.extensions.insert(correlation.clone());
        let span = tracing::info_span!(
            "tools/call",
            otel.name = format!("tools/call {}", request.name),
            otel.kind = "server",
            otel.status_code = Empty,
            mcp.server = self.server_name,
            mcp.method.name = "tools/call",
            gen_ai.tool.name = %request.name,
            error.type = Empty,
            correlation_id = %correlation,
        );
        telemetry::continue_trace_from_meta(&span, &context.meta);
        let _guard = self.in_flight.enter();
        async move {
            let name = request.name.clone();
            let mut access = AccessLog::start(&name);
            let arguments = request.arguments.clone();
            let (mut outcome, injected) = match self.faults.inject(&name, &context.ct).await {
                Injection::Run => (run(request, context).await, None),
                Injection::FailBefore(injected) => (
                    injected.into_call_tool_result(),
                    Some(InjectedAt::BeforeRun),
                ),
                Injection::FailAfter(injected) => {
                    let ran = run(request, context).await;
                    if self.faults.is_paused() {
                        // Paused while the tool ran: nothing is injected any more.
                        (ran, None)
                    } else {
                        tracing::debug!(
                            discarded = %outcome_label(&ran, false),
                            "the tool ran; its response is replaced by an injected failure"
                        );
                        (injected.into_call_tool_result(), Some(InjectedAt::AfterRun))
                    }
                }
            };
            if injected.is_none()
                && let Ok(CallToolResponse::Complete(result)) = &mut outcome
                && result.is_error == Some(true)
            {
                let schema = handler.get_tool(&name).map(|t| t.input_schema);
                ToolError::normalize_argument_error(result, schema.as_deref(), arguments.as_ref());
            }
            record_outcome(&outcome);
            access.finish(&outcome, injected);
            if let Ok(CallToolResponse::Complete(result)) = &mut outcome {
                correlation::set_in_meta(&mut result.meta, &correlation);
            }
            outcome
        }
        .instrument(span)
        .await
    }
}

/// When an injected failure struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InjectedAt {
    /// The tool did not run.
    BeforeRun,
    /// The tool ran; its response was replaced (a lost response).
    AfterRun,
}

impl InjectedAt {
    fn as_str(self) -> &'static str {
        match self {
            InjectedAt::BeforeRun => "before_run",
            InjectedAt::AfterRun => "after_run",
        }
    }
}

/// The access log line of one call: written exactly once, when the call ends, or when its future
/// is dropped unfinished (`outcome=cancelled`, or `panic` while unwinding).
///
/// Tests count an upstream's calls by these lines: each holds the text `tool call` and
/// `tool=NAME`, and no other line of this module holds `tool=`.
#[derive(Debug)]
struct AccessLog {
    tool: String,
    started: Instant,
    done: bool,
}

impl AccessLog {
    fn start(tool: &str) -> Self {
        Self {
            tool: tool.to_owned(),
            started: Instant::now(),
            done: false,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn finish(
        &mut self,
        outcome: &Result<CallToolResponse, ErrorData>,
        injected: Option<InjectedAt>,
    ) {
        self.done = true;
        let label = outcome_label(outcome, injected.is_some());
        let elapsed_ms = self.elapsed_ms();
        match injected {
            None => tracing::info!(tool = %self.tool, outcome = %label, elapsed_ms, "tool call"),
            Some(at) => {
                tracing::info!(
                    tool = %self.tool,
                    outcome = %label,
                    injected = at.as_str(),
                    elapsed_ms,
                    "tool call"
                );
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if !self.done {
            let outcome = if std::thread::panicking() {
                "panic"
            } else {
                "cancelled"
            };
            let elapsed_ms = self.elapsed_ms();
            tracing::info!(tool = %self.tool, outcome, elapsed_ms, "tool call");
        }
    }
}

/// `ok`, `error:<errorKind>` (`injected:<errorKind>` for an injected failure), `protocol_error`,
/// or for the rarer responses `input_required`, `task` (and `other` for kinds rmcp may add).
fn outcome_label(
    outcome: &Result<CallToolResponse, ErrorData>,
    injected: bool,
) -> Cow<'static, str> {
    match outcome {
        Ok(CallToolResponse::Complete(result)) => match ToolError::from_call_tool_result(result) {
            None => Cow::Borrowed("ok"),
            Some(e) if injected => Cow::Owned(format!("injected:{}", e.kind)),
            Some(e) => Cow::Owned(format!("error:{}", e.kind)),
        },
        Ok(CallToolResponse::InputRequired(_)) => Cow::Borrowed("input_required"),
        Ok(CallToolResponse::Task(_)) => Cow::Borrowed("task"),
        Ok(_) => Cow::Borrowed("other"),
        Err(_) => Cow::Borrowed("protocol_error"),
    }
}

/// Marks the current span as failed with the error's class, so traces show what broke.
fn record_outcome(outcome: &Result<CallToolResponse, ErrorData>) {
    let span = tracing::Span::current();
    match outcome {
        Ok(CallToolResponse::Complete(result)) => {
            if let Some(err) = ToolError::from_call_tool_result(result) {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", err.kind.as_str());
            }
        }
        Ok(_) => {}
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", e.code.0.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use rmcp::{
        ServiceExt,
        model::{CallToolResult, ServerCapabilities, ServerConfig},
        service::RunningService,
    };
    use serde_json::json;

    use super::*;
    use crate::{ErrorKind, FaultArgs};

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    /// A server with one trivial tool per name that counts how often a tool really ran.
    #[derive(Debug, Clone)]
    struct Probe {
        kit: ServerKit,
        runs: Arc<AtomicUsize>,
    }

    impl ServerHandler for Probe {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            self.kit
                .call_tool(self, request, context, |request, _context| async move {
                    self.runs.fetch_add(1, Ordering::SeqCst);
                    match request.name.as_ref() {
                        "protocol" => Err(ErrorData::invalid_params("no such tool", None)),
                        "missing" => ToolError::not_found("no such row").into_call_tool_result(),
                        name => Ok(CallToolResult::structured(json!({ "ran": name })).into()),
                    }
                })
                .await
        }
    }

    /// Serves a [`Probe`] with `faults` over an in-memory pipe and connects a client to it.
    async fn start(faults: FaultArgs) -> TestResult<(RunningService<rmcp::RoleClient, ()>, Probe)> {
        let probe = Probe {
            kit: ServerKit::new("probe", Faults::new(&faults)),
            runs: Arc::default(),
        };
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = probe.clone();
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        let client = ().serve(client_io).await?;
        Ok((client, probe))
    }

    async fn call(
        client: &RunningService<rmcp::RoleClient, ()>,
        tool: &str,
    ) -> Result<CallToolResult, rmcp::ServiceError> {
        client
            .call_tool(CallToolRequestParams::new(tool.to_owned()))
            .await
    }

    #[tokio::test]
    async fn a_failure_after_the_call_runs_the_tool_then_returns_the_injected_error() -> TestResult
    {
        let (client, probe) = start(FaultArgs {
            failure_after_rate: 1.0,
            ..FaultArgs::default()
        })
        .await?;
        let result = call(&client, "create_order").await?;
        assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "the tool ran");
        let err = ToolError::from_call_tool_result(&result).expect("an injected error");
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.retryable);
        assert_eq!(err.extra_meta.get("injected"), Some(&json!(true)));
        assert!(result.structured_content.is_none(), "the result is lost");

        // Paused, the same call returns the tool's own result.
        probe.kit.faults.pause();
        let result = call(&client, "create_order").await?;
        assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            result.structured_content,
            Some(json!({ "ran": "create_order" }))
        );
        client.cancel().await?;
        Ok(())
    }

    /// Calls `tool` with `meta` as the request's `_meta`.
    async fn call_with_meta(
        client: &RunningService<rmcp::RoleClient, ()>,
        tool: &str,
        meta: rmcp::model::RequestMetaObject,
    ) -> TestResult<CallToolResult> {
        let request = rmcp::model::ClientRequest::CallToolRequest(
            rmcp::model::CallToolRequest::new(CallToolRequestParams::new(tool.to_owned())),
        );
        let response = client
            .send_request_with_option(
                request,
                rmcp::service::PeerRequestOptions::no_options().with_meta(meta),
            )
            .await?
            .await_response()
            .await?;
        match response {
            rmcp::model::ServerResult::CallToolResult(r) => Ok(r),
            other => Err(format!("unexpected {other:?}").into()),
        }
    }

    fn correlation_of(result: &CallToolResult) -> Option<String> {
        result
            .meta
            .as_ref()?
            .get(crate::correlation::META_KEY)?
            .as_str()
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn results_name_the_correlation_id_from_meta_or_a_generated_one() -> TestResult {
        let (client, _probe) = start(FaultArgs {
            fail_tools: vec!["broken".into()],
            ..FaultArgs::default()
        })
        .await?;
        let mut meta = rmcp::model::RequestMetaObject::new();
        meta.insert("correlationId".into(), json!("corr-from-meta"));
        let result = call_with_meta(&client, "fine", meta.clone()).await?;
        assert_eq!(correlation_of(&result).as_deref(), Some("corr-from-meta"));
        // Tool errors (injected ones too) carry it beside the error convention's keys.
        let result = call_with_meta(&client, "broken", meta).await?;
        assert_eq!(correlation_of(&result).as_deref(), Some("corr-from-meta"));
        assert!(ToolError::from_call_tool_result(&result).is_some());

        let generated = correlation_of(&call(&client, "fine").await?).unwrap_or_default();
        assert_eq!(generated.len(), 32, "{generated}");
        let again = correlation_of(&call(&client, "fine").await?).unwrap_or_default();
        assert_ne!(generated, again, "one id per call");
        client.cancel().await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_failure_before_the_call_does_not_run_the_tool() -> TestResult {
        let (client, probe) = start(FaultArgs {
            fail_tools: vec!["create_order".into()],
            ..FaultArgs::default()
        })
        .await?;
        let result = call(&client, "create_order").await?;
        assert_eq!(probe.runs.load(Ordering::SeqCst), 0);
        let err = ToolError::from_call_tool_result(&result).expect("an injected error");
        assert_eq!(err.kind, ErrorKind::Unavailable);
        probe.kit.faults.pause();
        assert!(call(&client, "create_order").await?.is_error != Some(true));
        probe.kit.faults.resume();
        assert_eq!(call(&client, "create_order").await?.is_error, Some(true));
        assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
        client.cancel().await?;
        Ok(())
    }

    /// Collects what the fmt layer writes.
    #[derive(Debug, Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[tokio::test]
    async fn every_call_writes_exactly_one_access_line() -> TestResult {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        // The current-thread test runtime runs the server task on this thread too.
        let _default = tracing::subscriber::set_default(subscriber);

        let (client, probe) = start(FaultArgs {
            fail_tools: vec!["broken".into()],
            failure_after_rate: 1.0,
            faults_paused: true,
            ..FaultArgs::default()
        })
        .await?;
        call(&client, "fine").await?;
        call(&client, "missing").await?;
        assert!(call(&client, "protocol").await.is_err());
        call(&client, "broken").await?;
        probe.kit.faults.resume();
        call(&client, "broken").await?;
        call(&client, "lost").await?;
        client.cancel().await?;

        let lines = captured.lines();
        let access: Vec<&String> = lines.iter().filter(|l| l.contains("tool call")).collect();
        let expect = [
            ("fine", "outcome=ok"),
            ("missing", "outcome=error:not_found"),
            ("protocol", "outcome=protocol_error"),
            ("broken", "outcome=ok"),
            (
                "broken",
                "outcome=injected:unavailable injected=\"before_run\"",
            ),
            (
                "lost",
                "outcome=injected:unavailable injected=\"after_run\"",
            ),
        ];
        assert_eq!(access.len(), expect.len(), "{lines:#?}");
        for (line, (tool, outcome)) in access.iter().zip(expect) {
            assert!(line.contains(&format!("tool={tool} ")), "{line}");
            assert!(line.contains(outcome), "{line} has {outcome}");
            assert!(line.contains("elapsed_ms="), "{line}");
            assert!(line.contains(" INFO "), "{line}");
            // The call span's fields prefix the line: its correlation id among them.
            assert!(line.contains("correlation_id="), "{line}");
        }
        for tool in ["fine", "missing", "protocol", "broken", "lost"] {
            let needle = format!("tool={tool} ");
            let with_tool = lines.iter().filter(|l| l.contains(&needle)).count();
            let calls = expect.iter().filter(|(t, _)| *t == tool).count();
            assert_eq!(with_tool, calls, "only access lines name tool={tool}");
        }
        assert!(lines.iter().any(|l| l.contains("faults resumed")));
        Ok(())
    }
}
