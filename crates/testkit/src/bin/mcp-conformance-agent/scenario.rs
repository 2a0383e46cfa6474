//! What each client scenario of the suite asks of the client under test, as steps the agent takes
//! through the orchestrator. The suite's server checks what arrived; the agent checks what came
//! back, so a scenario whose answer was lost or mangled on the way fails here too.

use anyhow::{Context as _, bail, ensure};
use rmcp::{RoleClient, model::CallToolRequestParams, service::RunningService};
use serde_json::{Map, Value, json};

use crate::{agent::Agent, config};

/// The agent's session with the orchestrator.
pub type Session = RunningService<RoleClient, Agent>;

/// A client scenario this agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `initialize`: the upstream is connected (the handshake went through); nothing is called.
    Initialize,
    /// `tools_call`: `add_numbers` is listed and called, and the sum comes back.
    ToolsCall,
    /// `sse-retry`: `test_reconnection` is called; the server closes the call's SSE stream after
    /// a priming event with `retry: 500`, and the answer only comes on the stream the client
    /// reopens with `GET` and `Last-Event-ID` after that delay.
    SseRetry,
    /// `elicitation-sep1034-client-defaults`: `test_client_elicitation_defaults` is called, the
    /// server asks for a form during the call, and the agent accepts it with the defaults.
    ElicitationDefaults,
}

impl Scenario {
    /// Every scenario's name, as the suite spells it.
    pub const NAMES: [&str; 4] = [
        "initialize",
        "tools_call",
        "sse-retry",
        "elicitation-sep1034-client-defaults",
    ];

    /// The scenario the suite calls `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Initialize,
            Self::ToolsCall,
            Self::SseRetry,
            Self::ElicitationDefaults,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Its name, as the suite spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Initialize => Self::NAMES[0],
            Self::ToolsCall => Self::NAMES[1],
            Self::SseRetry => Self::NAMES[2],
            Self::ElicitationDefaults => Self::NAMES[3],
        }
    }

    /// Takes the scenario's steps through the orchestrator.
    pub async fn run(self, session: &Session) -> anyhow::Result<()> {
        upstream_connected(session).await?;
        match self {
            Self::Initialize => Ok(()),
            Self::ToolsCall => {
                let text = call(session, "add_numbers", json!({ "a": 5, "b": 37 })).await?;
                ensure!(
                    text.contains("42"),
                    "the sum of 5 and 37 is not in {text:?}"
                );
                Ok(())
            }
            Self::SseRetry => {
                let text = call(session, "test_reconnection", json!({})).await?;
                ensure!(
                    text.contains("completed successfully"),
                    "unexpected answer {text:?}"
                );
                Ok(())
            }
            Self::ElicitationDefaults => {
                let text = call(session, "test_client_elicitation_defaults", json!({})).await?;
                ensure!(
                    text.starts_with("Elicitation completed"),
                    "the elicitation did not complete: {text:?}"
                );
                Ok(())
            }
        }
    }
}

/// Fails unless `orchestrator://status` shows the suite's server connected: `serve` answers
/// once each upstream has connected or failed once, so this is the outcome of the handshake.
async fn upstream_connected(session: &Session) -> anyhow::Result<()> {
    let status = testkit::read_status(session).await?;
    let server = status["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == config::SERVER)
        .with_context(|| format!("no server `{}` in status: {status}", config::SERVER))?;
    if server["connected"] != true {
        bail!(
            "the orchestrator is not connected to the suite's server: {}",
            server["lastError"]
        );
    }
    Ok(())
}

/// Lists the tools, calls the upstream's `tool` with `arguments` under its exposed name, and
/// returns the result's text; fails on a missing tool or an error result.
async fn call(session: &Session, tool: &str, arguments: Value) -> anyhow::Result<String> {
    let name = config::exposed(tool);
    let tools = session.list_all_tools().await.context("listing tools")?;
    ensure!(
        tools.iter().any(|t| t.name == name),
        "`{name}` is not listed; the orchestrator lists {:?}",
        tools.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>()
    );
    let arguments: Map<String, Value> =
        serde_json::from_value(arguments).context("tool arguments are a JSON object")?;
    let result = session
        .call_tool(CallToolRequestParams::new(name.clone()).with_arguments(arguments))
        .await
        .with_context(|| format!("calling {name}"))?;
    let text = testkit::text_of(&result);
    ensure!(result.is_error != Some(true), "{name} failed: {text}");
    Ok(text)
}
