//! The asking server's task-capable tools (the tasks extension, SEP-2663, through rmcp's
//! `TaskManager`), for the system tests of how the orchestrator passes tasks through. A call
//! becomes a task only when its client declared the extension; otherwise it answers inline.
//!
//! | tool | as a task | inline |
//! |---|---|---|
//! | `count_slowly` `{to?, delayMs?, fail?}` | counts to `to` (3), one step per `delayMs` (100), its status message saying how far; stops as `cancelled` on `tasks/cancel`; with `fail`, ends `failed` | the same count, then the same answer: `{"counted": to}` (an error with `fail`) |
//! | `confirm_in_task` | `input_required` with a form elicitation under key `confirm`, until `tasks/update` answers it; then `{"answer": <the response>}` | a tool error: it runs only as a task |

use std::{sync::LazyLock, time::Duration};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
        CreateTaskResult, ElicitRequest, ElicitRequestParams, ElicitationSchema, GetTaskParams,
        GetTaskResult, InputRequest, JsonObject, Tool, UpdateTaskParams,
    },
    service::RequestContext,
    task_manager::{TaskExit, TaskManager, TaskOptions},
};
use serde_json::{Value, json};

/// Every session's tasks in one place: over HTTP each session has a handler of its own, and a
/// task must be found whichever session polls it.
static TASKS: LazyLock<TaskManager> = LazyLock::new(TaskManager::new);

/// How often a client should poll, in ms: short, so tests finish quickly.
const POLL_INTERVAL_MS: u64 = 50;

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("literal schemas are objects")
    };
    Tool::new(
        name.to_owned(),
        description.to_owned(),
        std::sync::Arc::new(schema),
    )
}

/// The task-capable tools.
pub fn tools() -> Vec<Tool> {
    vec![
        tool(
            "count_slowly",
            "Counts to `to`, one step every `delayMs` (as a task when the client declared tasks)",
            json!({ "type": "object", "properties": {
                "to": { "type": "integer" }, "delayMs": { "type": "integer" },
                "fail": { "type": "boolean" } } }),
        ),
        tool(
            "confirm_in_task",
            "Asks for confirmation from inside a task (tasks/update answers it)",
            json!({ "type": "object" }),
        ),
    ]
}

/// The answer to `request` if it names one of these tools.
pub async fn call_tool(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResponse, ErrorData>> {
    let args = request.arguments.clone().unwrap_or_default();
    let as_task = context
        .client_capabilities()
        .is_some_and(|c| c.supports_tasks());
    let answer = match request.name.as_ref() {
        "count_slowly" => count_slowly(&args, as_task).await,
        "confirm_in_task" if as_task => Ok(spawn(confirm_in_task())),
        "confirm_in_task" => Ok(CallToolResult::error(vec![rmcp::model::ContentBlock::text(
            "confirm_in_task runs only as a task: declare the tasks extension",
        )])
        .into()),
        _ => return None,
    };
    Some(answer)
}

fn spawn(
    work: impl FnOnce(rmcp::task_manager::TaskContext) -> rmcp::task_manager::TaskFuture,
) -> CallToolResponse {
    let options = TaskOptions::new().with_poll_interval_ms(POLL_INTERVAL_MS);
    CreateTaskResult::new(TASKS.spawn(options, work)).into()
}

async fn count_slowly(args: &JsonObject, as_task: bool) -> Result<CallToolResponse, ErrorData> {
    let to = args.get("to").and_then(Value::as_u64).unwrap_or(3);
    let delay = Duration::from_millis(args.get("delayMs").and_then(Value::as_u64).unwrap_or(100));
    let fail = args.get("fail").and_then(Value::as_bool) == Some(true);
    let outcome = move |to: u64| {
        if fail {
            Err(ErrorData::internal_error(
                format!("counting failed at {to}, as asked"),
                None,
            ))
        } else {
            Ok(CallToolResult::structured(json!({ "counted": to })))
        }
    };
    if !as_task {
        tokio::time::sleep(delay * u32::try_from(to).unwrap_or(u32::MAX)).await;
        return outcome(to).map(Into::into);
    }
    Ok(spawn(move |task| {
        Box::pin(async move {
            for i in 1..=to {
                tokio::select! {
                    _ = task.cancelled() => return Err(TaskExit::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
                task.set_status_message(format!("counted {i} of {to}"));
            }
            outcome(to).map_err(TaskExit::Error)
        })
    }))
}

fn confirm_in_task()
-> impl FnOnce(rmcp::task_manager::TaskContext) -> rmcp::task_manager::TaskFuture {
    |task| {
        Box::pin(async move {
            let schema: ElicitationSchema = serde_json::from_value(json!({
                "type": "object",
                "properties": { "confirm": { "type": "boolean", "title": "Go ahead" } },
                "required": ["confirm"]
            }))
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            let question = InputRequest::Elicitation(ElicitRequest::new(
                ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message: "Go ahead?".into(),
                    requested_schema: schema,
                },
            ));
            let answer = task.request_input("confirm", question).await?;
            Ok(CallToolResult::structured(json!({ "answer": answer })))
        })
    }
}

/// `tasks/get`.
pub fn get_task(request: &GetTaskParams) -> Result<GetTaskResult, ErrorData> {
    TASKS.get_task(&request.task_id).map(GetTaskResult::new)
}

/// `tasks/update`.
pub fn update_task(request: UpdateTaskParams) -> Result<(), ErrorData> {
    TASKS.update_task(&request.task_id, request.input_responses)
}

/// `tasks/cancel`.
pub fn cancel_task(request: &CancelTaskParams) -> Result<(), ErrorData> {
    TASKS.cancel_task(&request.task_id)
}
