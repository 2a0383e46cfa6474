//! The call path: one way down from an agent's request to the upstreams.
//!
//! ```text
//! frontend ── catalog.route(name) ──> Route
//!    Upstream(target) ──> upstream::UpstreamCalls::call_tool ─┐
//!    Composite(index) ──> composite::Composites::run           │ (each step)
//!                           └─> workflow executor ─> StepRunner ┤
//!    Builtin(tool)    ──> builtin                              v
//!                               cache ─> policy stack ─> Upstream::send ─> Link
//! ```
//! `resources/read`, `prompts/get`, `completion/complete` and subscriptions take
//! [`upstream::UpstreamCalls::request`]: the same policy stack, figures and spans; so do
//! `tasks/get`, `tasks/update` and `tasks/cancel` ([`tasks`]), routed by the task's id.

pub mod builtin;
pub mod composite;
mod requests;
pub mod tasks;
#[cfg(test)]
mod tests;
pub mod upstream;

pub use upstream::typed;

use std::sync::Arc;

use rmcp::model::{CallToolResponse, CallToolResult, JsonObject};
use serde_json::Value;

use crate::{
    catalog::{Builtin, Catalog, Route},
    context::CallContext,
    error::CallError,
    policy::CallReport,
    tasks::id::TaskIds,
};

pub use self::{composite::Composites, requests::ReadFrom, upstream::UpstreamCalls};

/// Everything a routed `tools/call` can reach.
#[derive(Debug)]
pub struct Calls {
    upstream: Arc<UpstreamCalls>,
    composites: Composites,
    /// Seals the upstreams' task ids into the ids agents see, and opens them again.
    task_ids: TaskIds,
}

impl Calls {
    /// Calls over `upstream`, with the configured composites.
    pub fn new(upstream: Arc<UpstreamCalls>, composites: Composites) -> Self {
        Self::with_task_ids(upstream, composites, TaskIds::new())
    }

    /// [`Calls::new`] sealing task ids with `task_ids`: a reloaded configuration keeps the
    /// previous one's, so the tasks agents already hold still open.
    pub fn with_task_ids(
        upstream: Arc<UpstreamCalls>,
        composites: Composites,
        task_ids: TaskIds,
    ) -> Self {
        Self {
            upstream,
            composites,
            task_ids,
        }
    }

    /// The composites.
    pub fn composites(&self) -> &Composites {
        &self.composites
    }

    /// The codec sealing upstream task ids.
    pub fn task_ids(&self) -> &TaskIds {
        &self.task_ids
    }

    /// The way down to the upstreams.
    pub fn upstream(&self) -> &Arc<UpstreamCalls> {
        &self.upstream
    }

    /// Runs one `tools/call` by the route `catalog` gave its name, with the attempts and retry
    /// delays an upstream call took.
    pub async fn call_tool(
        &self,
        catalog: &Catalog,
        route: Route,
        name: &str,
        arguments: Option<JsonObject>,
        cx: &CallContext,
    ) -> (Result<CallToolResult, CallError>, CallReport) {
        let server = match &route {
            Route::Upstream(target) => self.upstream.upstreams()[target.server].name(),
            _ => "orchestrator",
        };
        let (outcome, report) = self
            .call_tool_response(catalog, route, name, arguments, false, cx)
            .await;
        (outcome.and_then(|r| upstream::completed(server, r)), report)
    }

    /// [`Calls::call_tool`] for an agent: when it declared the tasks extension (`tasks`), an
    /// upstream tool's answer may be a task, its id sealed to the server
    /// ([`crate::tasks::id`]). Composites and built-ins always answer in full.
    pub async fn call_tool_response(
        &self,
        catalog: &Catalog,
        route: Route,
        name: &str,
        arguments: Option<JsonObject>,
        tasks: bool,
        cx: &CallContext,
    ) -> (Result<CallToolResponse, CallError>, CallReport) {
        match route {
            Route::Upstream(target) => {
                let mut call = self
                    .upstream
                    .call_tool_response(target.server, &target.name, arguments, None, tasks, cx)
                    .await;
                match &mut call.outcome {
                    // Said the way a composite says it, so an agent can tell a stored answer
                    // from a fresh one.
                    Ok(CallToolResponse::Complete(result)) if call.cached => {
                        result
                            .meta
                            .get_or_insert_with(Default::default)
                            .insert("cached".into(), Value::Bool(true));
                    }
                    Ok(CallToolResponse::Task(created)) => {
                        let server = self.upstream.upstreams()[target.server].name();
                        created.task.task_id = self.task_ids.expose(server, &created.task.task_id);
                    }
                    _ => {}
                }
                (call.outcome, call.report)
            }
            Route::Composite(index) => {
                let read_only = catalog.is_read_only(name);
                // A composite reads its steps' results: they come typed.
                let typed_cx;
                let cx = if cx.raw_results {
                    typed_cx = CallContext {
                        raw_results: false,
                        ..cx.clone()
                    };
                    &typed_cx
                } else {
                    cx
                };
                // Boxed: a composite's state machine is several times a pass-through call's, and
                // held inline it would make every call's future that size, copied on each move.
                let result = Box::pin(self.composites.run(index, arguments, read_only, cx)).await;
                (Ok(result.into()), CallReport::default())
            }
            Route::Builtin(Builtin::InvalidateCache) => (
                Ok(Box::pin(builtin::invalidate_cache(
                    self.upstream.cache(),
                    arguments.as_ref(),
                ))
                .await
                .into()),
                CallReport::default(),
            ),
        }
    }
}
