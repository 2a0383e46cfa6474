//! `cosmos-mcp-server`: the retail company's online behaviour as a Cosmos-DB-like document store.
//!
//! Documents live in containers split by a partition key, carry `_etag`/`_ts`, and every call
//! reports what it cost in request units; past the provisioned RU/s calls are throttled, as in the
//! real service. The data is persisted in SQLite, so nothing acknowledged is lost on restart.
//!
//! # Layout
//! - [`containers`]: the four containers and their partition keys.
//! - [`store`]: the file, its table, seeding on first run, and the reads and writes.
//! - [`seed`]: the first-run documents, generated from the shared dataset (`retail-seed`).
//! - [`events`]: `record_event`, one user event document per idempotency key.
//! - [`item`]: document validation, system properties, etags and the `ifMatch` rule.
//! - [`filter`]: the `query_items` filter/sort language and its translation to parameterised SQL.
//! - [`token`]: opaque, validated continuation tokens.
//! - [`ru`]: the request-unit cost model, the per-call meter and the RU/s budget.
//! - [`behavior`]: behaviour summaries, engagement scores, churn risk and recommendations.
//! - [`model`]: tool arguments and results with their JSON Schemas.
//! - [`server`]: the MCP handler.

pub mod behavior;
pub mod containers;
pub mod events;
pub mod filter;
pub mod item;
pub mod model;
pub mod ru;
pub mod seed;
pub mod server;
pub mod store;
pub mod token;

use std::sync::Arc;

use clap::Parser;

use crate::{ru::RuBudget, store::Store};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "cosmos-mcp-server",
    version,
    about = "MCP server over a Cosmos-DB-like document store of the retail company's online behaviour"
)]
pub struct Args {
    /// Directory holding cosmos.db (created and seeded on first run); `:memory:` for a throwaway one.
    #[arg(long, env = "COSMOS_DATA_DIR", default_value = "./data")]
    pub data_dir: String,
    /// Provisioned throughput: request units per second before calls are throttled.
    #[arg(long, env = "COSMOS_RU_PER_SECOND", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ru_per_second: u64,
    /// Transport, security, log and fault flags.
    #[command(flatten)]
    pub common: kit::CommonArgs,
}

/// Runs the server until shutdown.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let telemetry = kit::telemetry::init("cosmos-mcp-server", args.common.log_format)?;
    let data_dir = args.data_dir.clone();
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&data_dir)).await??);
    tracing::info!(
        path = %store.path().display(),
        ru_per_second = args.ru_per_second,
        "document store ready"
    );
    let kit = kit::ServerKit::new("cosmos", kit::Faults::new(&args.common.faults));
    let budget = Arc::new(RuBudget::new(args.ru_per_second));
    let in_flight = kit.in_flight.clone();
    let result = kit::serve::serve(&args.common.serve, in_flight, move || {
        server::CosmosServer::new(store.clone(), kit.clone(), budget.clone())
    })
    .await;
    telemetry.shutdown().await;
    Ok(result?)
}
