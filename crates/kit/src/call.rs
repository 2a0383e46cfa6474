//! The one wrapper every `tools/call` of a server goes through.
//!
//! It opens the server span (continuing the caller's trace from `_meta`), counts the call as in
//! flight so shutdown can wait for it, applies injected faults, and records the outcome on the span.
//! Servers call [`ServerKit::call_tool`] from their `ServerHandler::call_tool` and pass their tool
//! router as `run`.

use std::{future::Future, sync::Arc};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolRequestParams, CallToolResponse},
    service::RequestContext,
};
use tracing::{Instrument, field::Empty};

use crate::{faults::Faults, in_flight::InFlight, telemetry, tool_error::ToolError};

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
    pub fn new(server_name: &'static str, faults: Faults) -> Self {
        Self {
            server_name,
            faults: Arc::new(faults),
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
        context: RequestContext<RoleServer>,
        run: F,
    ) -> Result<CallToolResponse, ErrorData>
    where
        H: ServerHandler,
        F: FnOnce(CallToolRequestParams, RequestContext<RoleServer>) -> Fut,
        Fut: Future<Output = Result<CallToolResponse, ErrorData>>,
    {
        let span = tracing::info_span!(
            "tools/call",
            otel.name = format!("tools/call {}", request.name),
            otel.kind = "server",
            otel.status_code = Empty,
            mcp.server = self.server_name,
            mcp.method.name = "tools/call",
            gen_ai.tool.name = %request.name,
            error.type = Empty,
        );
        telemetry::continue_trace_from_meta(&span, &context.meta);
        let _guard = self.in_flight.enter();
        async move {
            let name = request.name.clone();
            let arguments = request.arguments.clone();
            let mut outcome = match self.faults.inject(&name, &context.ct).await {
                Err(injected) => {
                    tracing::info!(tool = %name, error = %injected, "injected fault");
                    injected.into_call_tool_result()
                }
                Ok(()) => run(request, context).await,
            };
            if let Ok(CallToolResponse::Complete(result)) = &mut outcome
                && result.is_error == Some(true)
            {
                let schema = handler.get_tool(&name).map(|t| t.input_schema);
                ToolError::normalize_argument_error(result, schema.as_deref(), arguments.as_ref());
            }
            record_outcome(&outcome);
            outcome
        }
        .instrument(span)
        .await
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
