//! `tasks/get`, `tasks/update` and `tasks/cancel` from an agent: routed by the task's id to the
//! upstream that owns it ([`crate::tasks::id`]), each through [`UpstreamCalls::request`] and so
//! through the server's policy stack (all three may be repeated safely: a read, an input
//! response rmcp ignores once answered, a cancel), with the tasks extension declared for the
//! request ([`crate::tasks::declaring`]) and the answer's id mapped back.
//!
//! [`UpstreamCalls::request`]: super::UpstreamCalls::request

use rmcp::{
    ErrorData,
    model::{
        CancelTaskParams, CancelTaskRequest, ClientRequest, GetTaskParams, GetTaskRequest,
        GetTaskResult, ServerResult, UpdateTaskParams, UpdateTaskRequest,
    },
};

use super::Calls;
use crate::{context::CallContext, error::CallError, policy::Op, tasks::declaring};

/// The upstream that owns a task, and the task's id there.
struct Owner {
    server: usize,
    upstream_id: String,
}

impl Calls {
    /// `tasks/get`: the task's state as its upstream reports it, under the agent's id.
    pub async fn get_task(
        &self,
        params: GetTaskParams,
        cx: &CallContext,
    ) -> Result<GetTaskResult, ErrorData> {
        let exposed = params.task_id;
        let owner = self.owner(&exposed)?;
        let upstream_params = GetTaskParams::new(owner.upstream_id.clone());
        let request = ClientRequest::GetTaskRequest(GetTaskRequest::new(upstream_params));
        let mut result = self
            .task_request(&owner, "tasks/get", request, &exposed, cx, |r| match r {
                ServerResult::GetTaskResult(r) => Ok(r),
                other => Err(Box::new(other)),
            })
            .await?;
        let task = &mut result.task.task;
        task.task_id = if task.task_id == owner.upstream_id {
            exposed
        } else {
            let server = self.upstream.upstreams()[owner.server].name();
            self.task_ids.expose(server, &task.task_id)
        };
        Ok(result)
    }

    /// `tasks/update`: the agent's input responses, unchanged, to the task's upstream.
    pub async fn update_task(
        &self,
        params: UpdateTaskParams,
        cx: &CallContext,
    ) -> Result<(), ErrorData> {
        let exposed = params.task_id;
        let owner = self.owner(&exposed)?;
        let upstream_params =
            UpdateTaskParams::new(owner.upstream_id.clone(), params.input_responses);
        let request = ClientRequest::UpdateTaskRequest(UpdateTaskRequest::new(upstream_params));
        self.task_request(&owner, "tasks/update", request, &exposed, cx, acknowledged)
            .await
    }

    /// `tasks/cancel`: asks the task's upstream to stop it (cooperative: the task may still
    /// complete, as `tasks/get` will tell).
    pub async fn cancel_task(
        &self,
        params: CancelTaskParams,
        cx: &CallContext,
    ) -> Result<(), ErrorData> {
        let exposed = params.task_id;
        let owner = self.owner(&exposed)?;
        let upstream_params = CancelTaskParams::new(owner.upstream_id.clone());
        let request = ClientRequest::CancelTaskRequest(CancelTaskRequest::new(upstream_params));
        self.task_request(&owner, "tasks/cancel", request, &exposed, cx, acknowledged)
            .await
    }

    /// The upstream behind an exposed task id, or `-32602` naming the id and why not.
    fn owner(&self, exposed: &str) -> Result<Owner, ErrorData> {
        let upstreams = self.upstream.upstreams();
        let (server, upstream_id) = self
            .task_ids
            .resolve(exposed, |name| upstreams.iter().any(|u| u.name() == name))
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        let server = upstreams
            .iter()
            .position(|u| u.name() == server)
            .ok_or_else(|| ErrorData::internal_error("a resolved server is configured", None))?;
        Ok(Owner {
            server,
            upstream_id,
        })
    }

    /// One task request to its owner. An upstream's error names the task by its own id; the
    /// agent knows it by the exposed one, so that is what the message says.
    async fn task_request<T>(
        &self,
        owner: &Owner,
        method: &'static str,
        request: ClientRequest,
        exposed: &str,
        cx: &CallContext,
        pick: fn(ServerResult) -> Result<T, Box<ServerResult>>,
    ) -> Result<T, ErrorData> {
        let op = Op {
            method,
            target: &owner.upstream_id,
        };
        self.upstream
            .request(owner.server, op, request, &declaring(cx), pick)
            .await
            .map_err(|e| {
                let mut error = CallError::into_error_data(e);
                if !owner.upstream_id.is_empty() && error.message.contains(&*owner.upstream_id) {
                    error.message = error.message.replace(&*owner.upstream_id, exposed).into();
                }
                error
            })
    }
}

/// The acknowledgement `tasks/update` and `tasks/cancel` answer with (`resultType: "complete"`
/// and nothing else; an older server's `{}` means the same).
fn acknowledged(answer: ServerResult) -> Result<(), Box<ServerResult>> {
    match answer {
        ServerResult::TaskAckResult(_) | ServerResult::EmptyResult(_) => Ok(()),
        other => Err(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        sync::{Arc, Mutex},
    };

    use futures::{FutureExt as _, future::BoxFuture};
    use rmcp::model::{
        CallToolResponse, CallToolResult, CreateTaskResult, DetailedTask, ErrorCode, Task,
        TaskAckResult, TaskPayload, TaskStatus, Tool,
    };
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        cache::ResultCache,
        call::{Composites, UpstreamCalls},
        catalog::Catalog,
        config::Config,
        metrics::Metrics,
        stats::ServerStats,
        upstream::{Link, Offer, Upstream},
    };

    /// Every request the upstream received, as JSON, with the `_meta` it travelled with under
    /// `sentMeta` (what [`CallContext::meta`] adds on the wire).
    type Seen = Arc<Mutex<Vec<Value>>>;

    type Script = dyn Fn(&ClientRequest) -> Result<ServerResult, CallError> + Send + Sync;

    /// An upstream answering from a script and noting what reached it.
    struct Recording {
        offer: Arc<Offer>,
        script: Box<Script>,
        seen: Seen,
    }

    impl std::fmt::Debug for Recording {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Recording").finish_non_exhaustive()
        }
    }

    impl Link for Recording {
        fn offer(&self) -> Arc<Offer> {
            self.offer.clone()
        }

        fn connected_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
            Some(chrono::Utc::now())
        }

        fn send<'a>(
            &'a self,
            request: ClientRequest,
            cx: &'a CallContext,
        ) -> BoxFuture<'a, Result<ServerResult, CallError>> {
            let mut noted = serde_json::to_value(&request).expect("serializes");
            noted["sentMeta"] = serde_json::to_value(&cx.meta).expect("serializes");
            self.seen.lock().expect("lock").push(noted);
            let answer = (self.script)(&request);
            async move { answer }.boxed()
        }
    }

    struct Fixture {
        calls: Calls,
        catalog: Catalog,
        seen: Seen,
    }

    fn task(id: &str, status: TaskStatus) -> Task {
        Task::new(id, status, "2026-07-28T10:00:00Z", "2026-07-28T10:00:01Z")
    }

    /// Server `s` with the tool `work`, answered by `script`, retrying a lost connection once.
    fn fixture(
        script: impl Fn(&ClientRequest) -> Result<ServerResult, CallError> + Send + Sync + 'static,
    ) -> Fixture {
        let text = json!({
            "mcpServers": { "s": { "command": "never-started" } },
            "orchestrator": { "servers": { "s": { "retry": { "maxAttempts": 2, "baseDelayMs": 1 } } } }
        })
        .to_string();
        let config = Arc::new(Config::parse(&text, Path::new("."), &|_| None).expect("config"));
        let seen: Seen = Arc::default();
        let link = Arc::new(Recording {
            offer: Arc::new(Offer::of_tools(vec![Tool::new(
                "work",
                "works",
                Arc::new(serde_json::Map::new()),
            )])),
            script: Box::new(script),
            seen: seen.clone(),
        });
        let upstream = Arc::new(Upstream::new(
            config.servers[0].clone(),
            link,
            Arc::new(ServerStats::default()),
        ));
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(ResultCache::new(config.cache.settings.clone()));
        let catalog = Catalog::build(&config, std::slice::from_ref(&upstream));
        let upstream_calls = Arc::new(UpstreamCalls::new(
            vec![upstream],
            config.clone(),
            cache,
            metrics.clone(),
        ));
        let composites = Composites::new(config, upstream_calls.clone(), metrics);
        Fixture {
            calls: Calls::new(upstream_calls, composites),
            catalog,
            seen,
        }
    }

    impl Fixture {
        async fn call(&self, tasks: bool) -> Result<CallToolResponse, CallError> {
            let route = self.catalog.route("s__work").expect("listed");
            self.calls
                .call_tool_response(
                    &self.catalog,
                    route,
                    "s__work",
                    None,
                    tasks,
                    &CallContext::default(),
                )
                .await
                .0
        }

        fn seen(&self) -> Vec<Value> {
            self.seen.lock().expect("lock").clone()
        }

        fn methods(&self) -> Vec<String> {
            self.seen()
                .iter()
                .map(|r| r["method"].as_str().unwrap_or_default().to_owned())
                .collect()
        }
    }

    fn declares_tasks(request: &Value) -> bool {
        request["sentMeta"]["io.modelcontextprotocol/clientCapabilities"]["extensions"]
            ["io.modelcontextprotocol/tasks"]
            .is_object()
    }

    /// An upstream with one task, `up-1`, that has completed.
    fn one_task(request: &ClientRequest) -> Result<ServerResult, CallError> {
        Ok(match request {
            ClientRequest::CallToolRequest(_) => ServerResult::CreateTaskResult(
                CreateTaskResult::new(task("up-1", TaskStatus::Working)),
            ),
            ClientRequest::GetTaskRequest(r) if r.params.task_id == "up-1" => {
                let Value::Object(result) =
                    json!({ "content": [{ "type": "text", "text": "42" }] })
                else {
                    unreachable!("an object literal")
                };
                ServerResult::GetTaskResult(rmcp::model::GetTaskResult::new(DetailedTask::new(
                    task("up-1", TaskStatus::Working),
                    TaskPayload::Completed { result },
                )))
            }
            ClientRequest::GetTaskRequest(r) => {
                return Err(CallError::Protocol {
                    server: "s".into(),
                    error: ErrorData::invalid_params(
                        format!("unknown task: {}", r.params.task_id),
                        None,
                    ),
                });
            }
            ClientRequest::UpdateTaskRequest(_) | ClientRequest::CancelTaskRequest(_) => {
                ServerResult::TaskAckResult(TaskAckResult::new())
            }
            other => panic!("unexpected request {other:?}"),
        })
    }

    async fn created(f: &Fixture) -> String {
        match f.call(true).await {
            Ok(CallToolResponse::Task(t)) => t.task.task_id,
            other => panic!("no task: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_task_is_sealed_to_its_server_and_its_requests_reach_the_owner_by_its_own_id() {
        let f = fixture(one_task);
        let exposed = created(&f).await;
        assert!(exposed.starts_with("s."), "{exposed}");
        assert!(!exposed.ends_with("up-1"), "{exposed}");

        let got = f
            .calls
            .get_task(GetTaskParams::new(exposed.clone()), &CallContext::default())
            .await
            .expect("tasks/get");
        assert_eq!(got.task.task.task_id, exposed);
        assert_eq!(got.task.status(), TaskStatus::Completed);
        let inputs = [("k".to_owned(), json!({ "action": "accept" }))].into();
        f.calls
            .update_task(
                UpdateTaskParams::new(exposed.clone(), inputs),
                &CallContext::default(),
            )
            .await
            .expect("tasks/update");
        f.calls
            .cancel_task(CancelTaskParams::new(exposed), &CallContext::default())
            .await
            .expect("tasks/cancel");

        let seen = f.seen();
        assert_eq!(
            f.methods(),
            ["tools/call", "tasks/get", "tasks/update", "tasks/cancel"]
        );
        for request in &seen {
            assert!(declares_tasks(request), "{request}");
        }
        for request in &seen[1..] {
            assert_eq!(request["params"]["taskId"], "up-1", "{request}");
        }
        assert_eq!(
            seen[2]["params"]["inputResponses"],
            json!({ "k": { "action": "accept" } })
        );
    }

    #[tokio::test]
    async fn a_call_that_did_not_declare_tasks_neither_asks_for_one_nor_takes_one() {
        let f = fixture(one_task);
        let outcome = f.call(false).await;
        assert!(
            matches!(outcome, Err(CallError::Protocol { .. })),
            "{outcome:?}"
        );
        assert!(!declares_tasks(&f.seen()[0]), "{:?}", f.seen());
        // And inline results pass whether tasks were declared or not.
        let inline = fixture(|_| {
            Ok(ServerResult::CallToolResult(CallToolResult::success(
                vec![],
            )))
        });
        assert!(matches!(
            inline.call(true).await,
            Ok(CallToolResponse::Complete(_))
        ));
    }

    #[tokio::test]
    async fn a_changed_id_never_reaches_an_upstream_and_the_error_names_it() {
        let f = fixture(one_task);
        let exposed = created(&f).await;
        let changed = format!("{exposed}A");
        let e = f
            .calls
            .get_task(GetTaskParams::new(changed.clone()), &CallContext::default())
            .await
            .expect_err("refused");
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert!(e.message.contains(&format!("`{changed}`")), "{}", e.message);
        let e = f
            .calls
            .cancel_task(CancelTaskParams::new("1"), &CallContext::default())
            .await
            .expect_err("refused");
        assert!(e.message.contains("`1`"), "{}", e.message);
        assert_eq!(f.methods(), ["tools/call"]);
    }

    #[tokio::test]
    async fn an_upstreams_error_names_the_task_as_the_agent_knows_it() {
        let f = fixture(|request| match request {
            ClientRequest::CallToolRequest(_) => Ok(ServerResult::CreateTaskResult(
                CreateTaskResult::new(task("up-gone", TaskStatus::Working)),
            )),
            other => one_task(other),
        });
        let exposed = created(&f).await;
        let e = f
            .calls
            .get_task(GetTaskParams::new(exposed.clone()), &CallContext::default())
            .await
            .expect_err("gone upstream");
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(e.message, format!("unknown task: {exposed}"));
    }

    #[tokio::test]
    async fn task_requests_take_the_servers_policy_stack() {
        let lost_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fixture(move |request| match request {
            ClientRequest::GetTaskRequest(_)
                if !lost_once.swap(true, std::sync::atomic::Ordering::SeqCst) =>
            {
                Err(CallError::ConnectionLost {
                    server: "s".into(),
                    detail: "reset".into(),
                })
            }
            other => one_task(other),
        });
        let exposed = created(&f).await;
        let got = f
            .calls
            .get_task(GetTaskParams::new(exposed), &CallContext::default())
            .await
            .expect("retried");
        assert_eq!(got.task.status(), TaskStatus::Completed);
        assert_eq!(f.methods(), ["tools/call", "tasks/get", "tasks/get"]);
    }
}
