//! `sql-mcp-server`: see the library docs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sql_server::run(sql_server::Args::parse()).await
}
