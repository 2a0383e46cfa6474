//! `rest-mcp-server`: see the library docs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rest_server::run(rest_server::Args::parse()).await
}
