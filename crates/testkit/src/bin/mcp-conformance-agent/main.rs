//! `mcp-conformance-agent`: the client under test in the MCP conformance suite's client scenarios
//! is the orchestrator's upstream side, and this is the agent in front of it.
//!
//! The suite (`npx @modelcontextprotocol/conformance client --command "mcp-conformance-agent"
//! --scenario NAME`) starts a test MCP server per scenario, then runs the command with the
//! server's URL as the last argument and the scenario's name in `MCP_CONFORMANCE_SCENARIO`. This
//! binary writes a config naming that URL as the orchestrator's only upstream (streamable HTTP),
//! starts `mcp-orchestrator serve` over stdio with it, connects to it as an agent would, and does
//! what the scenario asks (list tools, call one, answer an elicitation) through the orchestrator.
//! The suite judges what reached its server, so what is tested is the orchestrator's own
//! upstream connection; this side only drives it and checks the answers that come back.
//!
//! Exit code 0 when the scenario's steps succeeded, 1 when one failed (the reason on stderr),
//! 2 for a usage error. The orchestrator's log goes to stderr too (the suite keeps it).
//!
//! # Layout
//! - [`config`]: the orchestrator's config for one scenario.
//! - [`agent`]: the agent's side of the session: its capabilities and its answers to
//!   elicitations.
//! - [`scenario`]: what each scenario asks, in steps.

mod agent;
mod config;
mod scenario;

use std::process::ExitCode;

use anyhow::Context as _;
use rmcp::{
    ServiceExt,
    transport::{ConfigureCommandExt, TokioChildProcess},
};
use tokio::process::Command;

use crate::scenario::Scenario;

/// The environment variable the suite names the scenario in.
const SCENARIO_VAR: &str = "MCP_CONFORMANCE_SCENARIO";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().skip(1).last() else {
        eprintln!(
            "usage: {SCENARIO_VAR}=NAME mcp-conformance-agent URL (the conformance suite runs it)"
        );
        return ExitCode::from(2);
    };
    let scenario = match std::env::var(SCENARIO_VAR) {
        Ok(name) => match Scenario::from_name(&name) {
            Some(s) => s,
            None => {
                eprintln!(
                    "mcp-conformance-agent: unknown scenario `{name}`; known: {}",
                    Scenario::NAMES.join(", ")
                );
                return ExitCode::from(2);
            }
        },
        Err(_) => {
            eprintln!("mcp-conformance-agent: {SCENARIO_VAR} is not set (the suite sets it)");
            return ExitCode::from(2);
        }
    };
    match run(scenario, &url).await {
        Ok(()) => {
            eprintln!("mcp-conformance-agent: {} done", scenario.name());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-conformance-agent: {}: {e:#}", scenario.name());
            ExitCode::FAILURE
        }
    }
}

/// Starts the orchestrator with `url` as its upstream, runs `scenario` through it, and stops it.
async fn run(scenario: Scenario, url: &str) -> anyhow::Result<()> {
    let dir = testkit::TempDir::new("conformance")?;
    let config = config::write(dir.path(), url)?;
    let orchestrator = kit::binaries::find("mcp-orchestrator")?;
    let transport = TokioChildProcess::new(Command::new(&orchestrator).configure(|c| {
        c.arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("MCP_ORCHESTRATOR_CONFIG")
            .env("RUST_LOG", "info,rmcp=warn");
    }))
    .with_context(|| format!("starting {}", orchestrator.display()))?;
    let client = agent::Agent
        .serve(transport)
        .await
        .context("connecting to the orchestrator")?;
    let outcome = scenario.run(&client).await;
    // Closing stdin ends `serve`; it then closes its upstream session.
    let _ = client.cancel().await;
    outcome
}
