//! `mcp-orchestrator`: see the library docs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let code = orchestrator::cli::run(orchestrator::cli::Cli::parse()).await?;
    std::process::exit(code);
}
