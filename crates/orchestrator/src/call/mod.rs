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
//! [`upstream::UpstreamCalls::request`]: the same policy stack, figures and spans.

pub mod builtin;
pub mod composite;
mod requests;
#[cfg(test)]
mod tests;
pub mod upstream;

use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject};
use serde_json::Value;

use crate::{
    catalog::{Builtin, Catalog, Route},
    context::CallContext,
    error::CallError,
    policy::CallReport,
};

pub use self::{composite::Composites, requests::ReadFrom, upstream::UpstreamCalls};

/// Everything a routed `tools/call` can reach.
#[derive(Debug)]
pub struct Calls {
    upstream: Arc<UpstreamCalls>,
    composites: Composites,
}

impl Calls {
    /// Calls over `upstream`, with the configured composites.
    pub fn new(upstream: Arc<UpstreamCalls>, composites: Composites) -> Self {
        Self {
            upstream,
            composites,
        }
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
        match route {
            Route::Upstream(target) => {
                let mut call = self
                    .upstream
                    .call_tool(target.server, &target.name, arguments, None, cx)
                    .await;
                // Said the way a composite says it, so an agent can tell a stored answer from a
                // fresh one.
                if call.cached
                    && let Ok(result) = &mut call.outcome
                {
                    result
                        .meta
                        .get_or_insert_with(Default::default)
                        .insert("cached".into(), Value::Bool(true));
                }
                (call.outcome, call.report)
            }
            Route::Composite(index) => {
                let read_only = catalog.is_read_only(name);
                let result = self.composites.run(index, arguments, read_only, cx).await;
                (Ok(result), CallReport::default())
            }
            Route::Builtin(Builtin::InvalidateCache) => (
                Ok(builtin::invalidate_cache(
                    self.upstream.cache(),
                    arguments.as_ref(),
                )),
                CallReport::default(),
            ),
        }
    }
}
