//! `retail-api`: the retail REST API on its own; see `rest_server::api`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rest_server::api::run(rest_server::api::ApiArgs::parse()).await
}
