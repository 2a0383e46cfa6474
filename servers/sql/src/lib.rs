//! `sql-mcp-server`: the retail company's system of record as MCP tools over an embedded SQLite file.
//!
//! # Layout
//! - [`db`]: the file, its schema, first-run seeding and the connection pool.
//! - [`seed`]: inserts the shared dataset (`retail-seed`) in one transaction.
//! - [`readonly`]: read-only SQL for agents, enforced by the engine.
//! - [`queries`]: the read tools' SQL.
//! - [`orders`]: `create_order`, exactly once per idempotency key.
//! - [`cancellation`]: `cancel_order`, once per order.
//! - [`model`]: tool arguments and results with their JSON Schemas.
//! - [`prompts`]: ready-made requests naming the tools that answer them.
//! - [`server`]: the MCP handler.

pub mod cancellation;
pub mod db;
pub mod model;
pub mod orders;
pub mod prompts;
pub mod queries;
pub mod readonly;
pub mod seed;
pub mod server;

use std::{sync::Arc, time::Duration};

use clap::Parser;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "sql-mcp-server",
    version,
    about = "MCP server over the retail SQL database"
)]
pub struct Args {
    /// Directory holding retail.db (created and seeded on first run); `:memory:` for a throwaway one.
    #[arg(long, env = "SQL_DATA_DIR", default_value = "./data")]
    pub data_dir: String,
    /// Rows the `query` tool returns at most.
    #[arg(long, default_value_t = 1_000)]
    pub query_max_rows: usize,
    /// Milliseconds after which a `query` statement is interrupted.
    #[arg(long, default_value_t = 5_000)]
    pub query_timeout_ms: u64,
    /// Largest `query` result, as the JSON of its rows; a larger one fails at once with an error
    /// naming this flag (rows stop being read at the limit).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub query_max_result_bytes: usize,
    /// Transport, security, log and fault flags.
    #[command(flatten)]
    pub common: kit::CommonArgs,
}

/// Runs the server until shutdown.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let telemetry = kit::telemetry::init("sql-mcp-server", args.common.log_format)?;
    let db = Arc::new(Database::open(&args.data_dir)?);
    tracing::info!(path = %db.path().display(), "database ready");
    let kit = kit::ServerKit::new("sql", kit::Faults::new(&args.common.faults));
    let limits = server::QueryLimits {
        max_rows: args.query_max_rows.max(1),
        max_bytes: args.query_max_result_bytes.max(1),
        time_limit: Duration::from_millis(args.query_timeout_ms.max(1)),
    };
    let in_flight = kit.in_flight.clone();
    let result = kit::serve::serve(&args.common.serve, in_flight, move || {
        server::SqlServer::new(db.clone(), kit.clone(), limits)
    })
    .await;
    telemetry.shutdown().await;
    Ok(result?)
}

use db::Database;
