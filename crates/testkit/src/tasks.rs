//! Helpers for tests of the tasks extension (SEP-2663): an agent that declares it, starting a
//! task with a `tools/call`, and polling `tasks/get` as a client should (at the task's
//! `pollIntervalMs`) until it reaches the state a test waits for.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::{
    ClientHandler, Peer, RoleClient,
    model::{
        CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig,
        CreateTaskResult, GetTaskParams, GetTaskResult, Implementation, TaskStatus,
    },
};
use serde_json::Value;

/// An agent that declares `capabilities` (in its handshake, or in every request's `_meta` on
/// 2026-07-28) and answers nothing.
#[derive(Debug, Clone, Default)]
pub struct Declaring(pub ClientCapabilities);

impl Declaring {
    /// An agent that declares the tasks extension.
    pub fn tasks() -> Self {
        Self(ClientCapabilities::builder().enable_tasks().build())
    }
}

impl ClientHandler for Declaring {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(self.0.clone(), Implementation::new("tasks-test-agent", "1"))
    }
}

/// Calls `tool` and expects a task back.
pub async fn start(
    peer: &Peer<RoleClient>,
    tool: &str,
    args: Value,
) -> anyhow::Result<CreateTaskResult> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    match peer.call_tool_once(params).await? {
        CallToolResponse::Task(task) => Ok(task),
        other => bail!("{tool} answered without a task: {other:?}"),
    }
}

/// Polls task `id` until `reached` holds, at most `within`.
pub async fn poll_until(
    peer: &Peer<RoleClient>,
    id: &str,
    within: Duration,
    reached: impl Fn(&GetTaskResult) -> bool,
) -> anyhow::Result<GetTaskResult> {
    let started = Instant::now();
    loop {
        let task = peer
            .get_task(GetTaskParams::new(id))
            .await
            .with_context(|| format!("tasks/get {id}"))?;
        if reached(&task) {
            return Ok(task);
        }
        if task.task.status().is_terminal() {
            bail!("task {id} ended without reaching the state waited for: {task:?}");
        }
        if started.elapsed() > within {
            bail!("task {id} did not reach the state waited for within {within:?}: {task:?}");
        }
        let interval = task
            .task
            .task
            .poll_interval_ms
            .unwrap_or(100)
            .clamp(10, 1000);
        tokio::time::sleep(Duration::from_millis(interval)).await;
    }
}

/// Polls task `id` until it ends (completed, failed or cancelled), at most `within`.
pub async fn finish(
    peer: &Peer<RoleClient>,
    id: &str,
    within: Duration,
) -> anyhow::Result<GetTaskResult> {
    poll_until(peer, id, within, |t| t.task.status().is_terminal()).await
}

/// Whether a task is in `status`.
pub fn is(status: TaskStatus) -> impl Fn(&GetTaskResult) -> bool {
    move |t| t.task.status() == status
}
