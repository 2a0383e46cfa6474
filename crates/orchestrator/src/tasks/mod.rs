//! Tasks pass through: the tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663, as rmcp
//! 3.11 implements it) between agents and the upstreams that offer it.
//!
//! - **Advertised** to agents only while some upstream advertises it ([`crate::capabilities`]);
//!   rmcp then answers `tasks/*` from an agent that did not declare it with `-32021`, and with
//!   `-32601` when no upstream offers tasks.
//! - **Declared** to an upstream per request, never in the handshake: a pass-through
//!   `tools/call` (and `tasks/*`) of an agent that declared the extension carries the
//!   orchestrator's client capabilities plus tasks in `_meta` ([`declaring`]), so only that
//!   agent's calls may come back as a task. Composite steps and everyone else get the inline
//!   result they can use.
//! - **Named** per hop: the upstream's task id is sealed to its server ([`id`]), and
//!   `tasks/get`, `tasks/update`, `tasks/cancel` are routed by it through the server's policy
//!   stack ([`crate::call::Calls::get_task`] and its siblings), the answer's id mapped back.
//!
//! Not carried: the 2025-11-25 experimental tasks. rmcp 3.11 has no `task` field on
//! `tools/call` params, no `tasks` capability and no `tasks/result` or `tasks/list`, so the
//! front never sees an agent ask for such a task; `tasks/result` and `tasks/list` answer
//! `-32601`. A `tasks/list` relayed upstream would list every agent's tasks, as all share the
//! orchestrator's connection. Task status notifications are not relayed either: rmcp 3.11
//! cannot route `notifications/tasks` through `subscriptions/listen`; agents poll `tasks/get`.

pub mod id;

use rmcp::{
    ErrorData,
    model::{
        CallToolResult, CancelTaskParams, ClientCapabilities, CustomRequest, GetTaskParams,
        GetTaskResult, JsonObject, TASKS_EXTENSION_ID, TaskPayload, UpdateTaskParams,
    },
};

use crate::{
    context::CallContext,
    limits::result_size::{self, Truncation},
};

/// Whether the agent behind `cx` declared the tasks extension (in its handshake, or in the
/// request's `_meta` on 2026-07-28), so a task may be its answer.
pub fn declared_by_agent(cx: &CallContext) -> bool {
    cx.origin
        .as_ref()
        .and_then(|o| o.capabilities.as_ref())
        .is_some_and(ClientCapabilities::supports_tasks)
}

/// The orchestrator's client capabilities with the tasks extension: what one request declares
/// upstream on behalf of an agent that declared it.
pub fn capabilities_with_tasks() -> ClientCapabilities {
    let mut caps = crate::ask::capability::declared_upstream();
    caps.extensions
        .get_or_insert_default()
        .insert(TASKS_EXTENSION_ID.to_owned(), JsonObject::new());
    caps
}

/// `cx` for a request that declares the tasks extension upstream: its `_meta` carries
/// [`capabilities_with_tasks`] (`_meta` capabilities replace the handshake's for that request,
/// so the rest is repeated). It travels in the request's own `_meta`, which rmcp lays over the
/// per-request metadata of a 2026-07-28 connection and which is all a 2025-11-25 one has.
pub fn declaring(cx: &CallContext) -> CallContext {
    let mut cx = cx.clone();
    cx.meta
        .get_or_insert_default()
        .set_client_capabilities(capabilities_with_tasks());
    cx
}

/// Cuts a completed task's result to `limit` bytes, as a `tools/call` result is cut
/// ([`result_size`]): the result a task delivers later is the same result. Only a result over the
/// limit is retyped (fields rmcp does not know are then lost; the rest is untouched).
pub fn limit_result(result: &mut GetTaskResult, limit: usize) -> Option<Truncation> {
    let TaskPayload::Completed { result: object } = &mut result.task.payload else {
        return None;
    };
    if result_size::serialized_len(&*object) <= limit {
        return None;
    }
    let mut typed: CallToolResult =
        serde_json::from_value(serde_json::Value::Object(object.clone())).ok()?;
    let cut = result_size::truncate(&mut typed, limit)?;
    if let Ok(serde_json::Value::Object(smaller)) = serde_json::to_value(&typed) {
        *object = smaller;
    }
    Some(cut)
}

/// The answer to a `tasks/get`, `tasks/update` or `tasks/cancel` whose params rmcp could not
/// type (a missing or non-string `taskId`, say), in the order rmcp answers typed ones:
/// `-32601` unless tasks are `advertised`, `-32021` unless the agent `declared` them, else
/// `-32602` naming what is wrong. `None` for any other method.
pub fn untyped_request_error(
    request: &CustomRequest,
    advertised: bool,
    declared: bool,
) -> Option<ErrorData> {
    fn misfit<T: serde::de::DeserializeOwned>(params: Option<&serde_json::Value>) -> String {
        match params {
            None => "params are missing".to_owned(),
            Some(p) => match serde_json::from_value::<T>(p.clone()) {
                Err(e) => e.to_string(),
                Ok(_) => "params do not fit".to_owned(),
            },
        }
    }
    let params = request.params.as_ref();
    let why = match request.method.as_str() {
        "tasks/get" => misfit::<GetTaskParams>(params),
        "tasks/update" => misfit::<UpdateTaskParams>(params),
        "tasks/cancel" => misfit::<CancelTaskParams>(params),
        _ => return None,
    };
    if !advertised {
        return None;
    }
    if !declared {
        return Some(ErrorData::missing_required_client_capability(
            ClientCapabilities::builder().enable_tasks().build(),
        ));
    }
    Some(ErrorData::invalid_params(
        format!("Invalid params for `{}`: {why}", request.method),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ClientRequest, DetailedTask, ErrorCode, ServerResult, Task, TaskStatus};
    use serde_json::json;

    use super::*;

    #[test]
    fn the_declaration_keeps_the_question_capabilities_and_the_agents_meta() {
        let mut agent = CallContext::default();
        let mut meta = rmcp::model::RequestMetaObject::default();
        meta.0.insert("traceparent".into(), "00-1-2-01".into());
        agent.meta = Some(meta);
        let declaring = declaring(&agent);
        let meta = declaring.meta.expect("meta");
        assert_eq!(meta.0["traceparent"], "00-1-2-01");
        let caps = meta
            .client_capabilities()
            .expect("client capabilities in _meta");
        assert!(caps.supports_tasks());
        let declared = crate::ask::capability::declared_upstream();
        assert_eq!(caps.elicitation, declared.elicitation);
        #[allow(deprecated)]
        {
            assert_eq!(caps.sampling, declared.sampling);
            assert_eq!(caps.roots, declared.roots);
        }
        // The handshake's capabilities stay free of tasks: steps and other agents never get one.
        assert!(!declared.supports_tasks());
        assert!(
            agent
                .meta
                .expect("untouched")
                .client_capabilities()
                .is_none()
        );
    }

    fn completed(result: serde_json::Value) -> GetTaskResult {
        let serde_json::Value::Object(result) = result else {
            panic!("object")
        };
        GetTaskResult::new(DetailedTask::new(
            Task::new(
                "t",
                TaskStatus::Working,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            TaskPayload::Completed { result },
        ))
    }

    #[test]
    fn a_completed_result_over_the_limit_is_cut_and_says_so() {
        let mut small = completed(json!({ "content": [{ "type": "text", "text": "ok" }] }));
        let before = small.clone();
        assert_eq!(limit_result(&mut small, 1000), None);
        assert_eq!(small, before);

        let mut big = completed(json!({
            "content": [{ "type": "text", "text": "x".repeat(5000) }],
            "isError": false
        }));
        let cut = limit_result(&mut big, 1000).expect("cut");
        assert_eq!(cut.limit_bytes, 1000);
        let TaskPayload::Completed { result } = &big.task.payload else {
            panic!("still completed")
        };
        assert!(result_size::serialized_len(result) <= 1000, "{result:?}");
        assert!(result["_meta"]["truncated"].is_object(), "{result:?}");
        assert_eq!(big.task.task.status, TaskStatus::Completed);
    }

    #[test]
    fn untyped_task_requests_are_answered_as_rmcp_answers_typed_ones() {
        let bad = CustomRequest::new("tasks/get", Some(json!({ "taskId": 42 })));
        assert_eq!(untyped_request_error(&bad, false, true), None);
        let e = untyped_request_error(&bad, true, false).expect("refused");
        assert_eq!(e.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
        let e = untyped_request_error(&bad, true, true).expect("refused");
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert!(e.message.contains("tasks/get"), "{}", e.message);
        let missing = CustomRequest::new("tasks/cancel", None);
        let e = untyped_request_error(&missing, true, true).expect("refused");
        assert!(e.message.contains("params are missing"), "{}", e.message);
        let other = CustomRequest::new("tasks/list", None);
        assert_eq!(untyped_request_error(&other, true, true), None);
    }

    /// Pins what rmcp 3.11 can carry of the 2025-11-25 experimental tasks: a `tools/call`
    /// asking for one parses, and its `task` field is gone, so the front cannot see the ask.
    /// The day rmcp keeps it, this fails, and the experimental form can be passed on.
    #[test]
    fn rmcp_drops_the_experimental_task_field_of_tools_call() {
        let request: ClientRequest = serde_json::from_value(json!({
            "method": "tools/call",
            "params": { "name": "sql__query", "arguments": {}, "task": { "ttl": 60000 } }
        }))
        .expect("parses");
        let ClientRequest::CallToolRequest(call) = request else {
            panic!("typed as tools/call: {request:?}")
        };
        let back = serde_json::to_value(&call.params).expect("serializes");
        assert!(back.get("task").is_none(), "{back}");
        // And a 2025-11-25 CreateTaskResult (`{ "task": {..} }`) is no task to rmcp.
        let answer: ServerResult = serde_json::from_value(json!({
            "task": { "taskId": "1", "status": "working", "createdAt": "2025-11-25T00:00:00Z",
                      "lastUpdatedAt": "2025-11-25T00:00:00Z", "ttl": null }
        }))
        .expect("parses");
        assert!(
            !matches!(answer, ServerResult::CreateTaskResult(_)),
            "{answer:?}"
        );
    }
}
