//! `asking-mcp-server`: an MCP server (rmcp, 2025-11-25) whose tools ask their client things, for
//! the system tests of how the orchestrator relays an upstream's questions to the agent behind a
//! call. It serves stdio by default and streamable HTTP with `--http ADDR`, like the bundled
//! servers.
//!
//! | tool | what it asks | what it answers |
//! |---|---|---|
//! | `confirm_delete` `{files, message?}` | form elicitation: "Delete N files?" (`confirm`: boolean, default false) | `{"action", "content"}` as the client answered |
//! | `open_link` `{url}` | URL elicitation | `{"action"}` |
//! | `summarize` `{text, withTools?}` | `sampling/createMessage` (with a tool when `withTools`) | the model's answer: `{"model", "text", "stopReason"}` |
//! | `roots` | `roots/list` | `{"roots": [...]}` |
//! | `log` `{level, message}` | nothing: sends `notifications/message` at `level` | `{"logged": true}` |
//! | `level` | nothing | `{"level"}`: what `logging/setLevel` last set, or null |
//! | `progress` `{steps}` | nothing: reports `steps` progress notifications to the call's token | `{"steps"}` |
//!
//! A question the client refuses (an error) makes the tool answer `isError` with
//! `{"error": {"code", "message", "data"}}`, so a test sees exactly what the client said.
//!
//! On 2025-11-25 it asks with requests of its own (`elicitation/create`, ...); on 2026-07-28,
//! which has none, the first call answers `input_required` with the question under `ask` and a
//! `requestState`, and the retry's `inputResponses.ask` is the answer.
//!
//! Its task-capable tools (the tasks extension) are in `asking/tasks.rs`.

#![allow(deprecated)] // Sampling, roots and logging are deprecated from 2026-07-28 on; this server speaks 2025-11-25.

use std::{future::Future, sync::Arc};

use clap::Parser;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
        CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
        ElicitRequestParams, ElicitResult, ElicitationSchema, GetTaskParams, GetTaskResult,
        Implementation, InputRequest, InputRequiredResult, JsonObject, ListRootsRequest,
        ListRootsResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
        PaginatedRequestParams, ProtocolVersion, SamplingMessage, ServerCapabilities, ServerConfig,
        Tool, UpdateTaskParams,
    },
    service::{RequestContext, ServiceError},
};
use serde_json::{Value, json};

#[path = "asking/tasks.rs"]
mod tasks;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    serve: kit::serve::ServeArgs,
}

#[derive(Debug, Clone, Default)]
struct Asking {
    /// What `logging/setLevel` last set (shared by every session of the process).
    level: Arc<std::sync::Mutex<Option<LoggingLevel>>>,
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("literal schemas are objects")
    };
    Tool::new(name.to_owned(), description.to_owned(), Arc::new(schema))
}

fn tools() -> Vec<Tool> {
    vec![
        tool(
            "confirm_delete",
            "Asks the user to confirm deleting `files` files (form elicitation)",
            json!({ "type": "object", "properties": {
                "files": { "type": "integer" }, "message": { "type": "string" } } }),
        ),
        tool(
            "open_link",
            "Sends the user to `url` (URL elicitation)",
            json!({ "type": "object", "properties": { "url": { "type": "string" } } }),
        ),
        tool(
            "summarize",
            "Asks the client's model to summarize `text` (sampling)",
            json!({ "type": "object", "properties": {
                "text": { "type": "string" }, "withTools": { "type": "boolean" } } }),
        ),
        tool(
            "roots",
            "Lists the client's roots",
            json!({ "type": "object" }),
        ),
        tool(
            "progress",
            "Reports `steps` progress notifications, then answers",
            json!({ "type": "object", "properties": { "steps": { "type": "integer" } } }),
        ),
        tool(
            "level",
            "Says what logging/setLevel last set",
            json!({ "type": "object" }),
        ),
        tool(
            "log",
            "Sends a log message at `level`",
            json!({ "type": "object", "properties": {
                "level": { "type": "string" }, "message": { "type": "string" } } }),
        ),
    ]
    .into_iter()
    .chain(tasks::tools())
    .collect()
}

/// The tool's answer: `value` as structured content, or as an error when the question failed.
fn answer(outcome: Result<Value, ServiceError>) -> CallToolResponse {
    match outcome {
        Ok(value) => CallToolResult::structured(value).into(),
        Err(ServiceError::McpError(e)) => CallToolResult::structured_error(json!({
            "error": { "code": e.code.0, "message": e.message, "data": e.data }
        }))
        .into(),
        Err(e) => {
            CallToolResult::structured_error(json!({ "error": { "message": e.to_string() } }))
                .into()
        }
    }
}

/// A question's outcome: the client's answer, or (2026-07-28, first round) the
/// `input_required` result that asks it.
enum Got<T> {
    Answer(Result<T, ServiceError>),
    Ask(CallToolResponse),
}

/// Asks `question`: with `legacy` (a request to the client) on 2025-11-25, through the result on
/// 2026-07-28.
async fn put<T: serde::de::DeserializeOwned>(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
    question: InputRequest,
    legacy: impl Future<Output = Result<T, ServiceError>>,
) -> Got<T> {
    let modern = context
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
    if !modern {
        return Got::Answer(legacy.await);
    }
    match request.input_responses.as_ref().and_then(|r| r.get("ask")) {
        Some(answer) => Got::Answer(serde_json::from_value(answer.clone()).map_err(|e| {
            ServiceError::McpError(ErrorData::invalid_params(
                format!("inputResponses.ask: {e}"),
                None,
            ))
        })),
        None => Got::Ask(
            InputRequiredResult::new(
                Some([("ask".to_owned(), question)].into()),
                Some(format!("asked:{}", request.name)),
            )
            .into(),
        ),
    }
}

fn arg<'a>(args: &'a JsonObject, name: &str) -> Option<&'a Value> {
    args.get(name)
}

impl ServerHandler for Asking {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("asking-mcp-server", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.level.lock().unwrap_or_else(|e| e.into_inner()) = Some(request.level);
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(answer) = tasks::call_tool(&request, &context).await {
            return answer;
        }
        let args = request.arguments.clone().unwrap_or_default();
        let peer = &context.peer;
        let response = match request.name.as_ref() {
            "confirm_delete" => {
                let files = arg(&args, "files").and_then(Value::as_u64).unwrap_or(1);
                let message = arg(&args, "message")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("Delete {files} files?"), str::to_owned);
                let schema: ElicitationSchema = serde_json::from_value(json!({
                    "type": "object",
                    "properties": { "confirm": {
                        "type": "boolean", "title": "Delete them", "default": false } },
                    "required": ["confirm"]
                }))
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                let params = ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message,
                    requested_schema: schema,
                };
                let question = InputRequest::Elicitation(ElicitRequest::new(params.clone()));
                let asked = peer.create_elicitation(params);
                match put::<ElicitResult>(&request, &context, question, asked).await {
                    Got::Ask(ask) => return Ok(ask),
                    Got::Answer(r) => {
                        answer(r.map(|r| json!({ "action": r.action, "content": r.content })))
                    }
                }
            }
            "open_link" => {
                let url = arg(&args, "url")
                    .and_then(Value::as_str)
                    .unwrap_or("https://example.test/authorize")
                    .to_owned();
                let params = ElicitRequestParams::UrlElicitationParams {
                    meta: None,
                    message: "Authorize the retail API".into(),
                    url,
                    elicitation_id: "link-1".into(),
                };
                let question = InputRequest::Elicitation(ElicitRequest::new(params.clone()));
                let asked = peer.create_elicitation(params);
                match put::<ElicitResult>(&request, &context, question, asked).await {
                    Got::Ask(ask) => return Ok(ask),
                    Got::Answer(r) => answer(r.map(|r| json!({ "action": r.action }))),
                }
            }
            "summarize" => {
                let text = arg(&args, "text").and_then(Value::as_str).unwrap_or("");
                let mut params = CreateMessageRequestParams::new(
                    vec![SamplingMessage::user_text(format!("Summarize: {text}"))],
                    200,
                );
                if arg(&args, "withTools").and_then(Value::as_bool) == Some(true) {
                    params.tools = Some(vec![tool(
                        "lookup",
                        "Looks a word up",
                        json!({ "type": "object" }),
                    )]);
                }
                let question =
                    InputRequest::CreateMessage(CreateMessageRequest::new(params.clone()));
                let asked = peer.create_message(params);
                match put::<CreateMessageResult>(&request, &context, question, asked).await {
                    Got::Ask(ask) => return Ok(ask),
                    Got::Answer(r) => answer(r.map(|r| {
                        json!({
                            "model": r.model,
                            "text": serde_json::to_value(&r.message.content).unwrap_or(Value::Null),
                            "stopReason": r.stop_reason,
                        })
                    })),
                }
            }
            "roots" => {
                let question = InputRequest::ListRoots(ListRootsRequest::default());
                let asked = peer.list_roots();
                match put::<ListRootsResult>(&request, &context, question, asked).await {
                    Got::Ask(ask) => return Ok(ask),
                    Got::Answer(r) => answer(r.map(|r| json!({ "roots": r.roots }))),
                }
            }
            "progress" => {
                let steps = arg(&args, "steps").and_then(Value::as_u64).unwrap_or(3);
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=steps {
                        let note =
                            rmcp::model::ProgressNotificationParam::new(token.clone(), step as f64)
                                .with_total(steps as f64);
                        if let Err(e) = peer.notify_progress(note).await {
                            return Ok(answer(Err(e)));
                        }
                    }
                }
                answer(Ok(json!({ "steps": steps })))
            }
            "level" => {
                let level = *self.level.lock().unwrap_or_else(|e| e.into_inner());
                answer(Ok(json!({ "level": level })))
            }
            "log" => {
                let level: LoggingLevel = arg(&args, "level")
                    .cloned()
                    .and_then(|l| serde_json::from_value(l).ok())
                    .unwrap_or(LoggingLevel::Info);
                let message = arg(&args, "message").cloned().unwrap_or(Value::Null);
                let sent = peer
                    .notify_logging_message(
                        LoggingMessageNotificationParam::new(level, message).with_logger("asking"),
                    )
                    .await;
                answer(sent.map(|()| json!({ "logged": true })))
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        Ok(response)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        tasks::get_task(&request)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tasks::update_task(request)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tasks::cancel_task(&request)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs to stderr, where the tests read the "listening on" line.
    let _telemetry = kit::telemetry::init("asking-mcp-server", kit::telemetry::LogFormat::Text)?;
    let asking = Asking::default();
    kit::serve::serve(
        &args.serve,
        kit::in_flight::InFlight::default(),
        move || asking.clone(),
    )
    .await?;
    Ok(())
}
