//! `cosmos-mcp-server`: see the library docs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cosmos_server::run(cosmos_server::Args::parse()).await
}
