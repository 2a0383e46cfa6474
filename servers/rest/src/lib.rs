//! `rest-mcp-server`: the retail company's REST API (inventory, stock, shipping, products) as MCP
//! tools, with that API bundled.
//!
//! Without `--base-url` the bundled API starts in this process on an ephemeral 127.0.0.1 port (its
//! HTTP faults driven by the `--api-*` flags); with `--base-url` the tools front any deployment of
//! the same API. Either way every tool call is one request (`GET` to read; `POST` to reserve or
//! release stock, idempotent by order and reservation id) through one pooled HTTP client, carrying
//! the caller's W3C trace context, and every HTTP failure becomes a classified tool error.
//!
//! # Layout
//! - [`api`]: the REST API itself (axum), also the `retail-api` binary.
//! - [`client`]: the pooled HTTP client with timeouts, spans and cancellation.
//! - [`path`]: request URLs from tool arguments that cannot leave the base URL.
//! - [`status`]: HTTP statuses and transport failures mapped onto the error convention.
//! - [`propagation`]: the trace context and cancellation a tool call hands to its requests.
//! - [`model`]: the API's resources and the tools' arguments, with their JSON Schemas.
//! - [`server`]: the MCP handler.

pub mod api;
pub mod client;
pub mod model;
pub mod path;
pub mod propagation;
pub mod server;
pub mod status;

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::bail;
use clap::Parser;
use reqwest::Url;

use crate::{
    api::{ApiConfig, faults::BundledApiFaultArgs},
    client::{ApiClient, ClientConfig},
};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "rest-mcp-server",
    version,
    about = "MCP server over the retail REST API (bundled, or any deployment via --base-url)"
)]
pub struct Args {
    /// Base URL of a deployment of the retail API (e.g. http://127.0.0.1:8090); without it the
    /// bundled API runs in-process on an ephemeral 127.0.0.1 port.
    #[arg(long, env = "RETAIL_API_BASE_URL", value_parser = path::parse_base_url)]
    pub base_url: Option<Url>,
    /// Milliseconds to establish a connection to the API.
    #[arg(long, default_value_t = 2_000)]
    pub api_connect_timeout_ms: u64,
    /// Milliseconds for a whole API request; past it the call fails as `unavailable`.
    #[arg(long, default_value_t = 10_000)]
    pub api_timeout_ms: u64,
    /// HTTP fault flags of the bundled API (refused with `--base-url`).
    #[command(flatten)]
    pub bundled_api: BundledApiFaultArgs,
    /// Transport, security, log and MCP-level fault flags.
    #[command(flatten)]
    pub common: kit::CommonArgs,
}

/// Runs the server until shutdown.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let api_faults = api::faults::HttpFaultArgs::from(args.bundled_api);
    if args.base_url.is_some() && api_faults.is_set() {
        bail!(
            "the --api-* fault flags configure the bundled API; with --base-url there is none \
             (start `retail-api` with its own fault flags instead)"
        );
    }
    let telemetry = kit::telemetry::init("rest-mcp-server", args.common.log_format)?;
    let (base_url, bundled) = match args.base_url {
        Some(url) => {
            // Logged in parts on purpose: tests and scripts take the first `http://127.0.0.1:`
            // URL on stderr as this server's MCP endpoint.
            tracing::info!(
                api_scheme = url.scheme(),
                api_host = url.host_str().unwrap_or_default(),
                api_port = url.port_or_known_default(),
                api_path = url.path(),
                "fronting the retail API"
            );
            (url, None)
        }
        None => {
            let config = ApiConfig {
                faults: api_faults,
                debug_endpoints: false,
            };
            let api = api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &config).await?;
            // Logged without the scheme on purpose: tests and scripts take the first
            // `http://127.0.0.1:` URL on stderr as this server's MCP endpoint.
            tracing::info!(addr = %api.addr(), faults = config.faults.is_set(), "bundled retail API started in-process");
            (
                path::parse_base_url(&api.base_url()).map_err(anyhow::Error::msg)?,
                Some(api),
            )
        }
    };
    let client = ApiClient::new(ClientConfig {
        connect_timeout: Duration::from_millis(args.api_connect_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(args.api_timeout_ms.max(1)),
        ..ClientConfig::new(base_url)
    })?;
    let kit = kit::ServerKit::new("rest", kit::Faults::new(&args.common.faults));
    let in_flight = kit.in_flight.clone();
    let result = kit::serve::serve(&args.common.serve, in_flight, move || {
        server::RestServer::new(client.clone(), kit.clone())
    })
    .await;
    if let Some(api) = bundled {
        api.shutdown().await;
    }
    telemetry.shutdown().await;
    Ok(result?)
}
