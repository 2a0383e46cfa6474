//! The retail REST API: products, warehouses, inventory, low stock and shipping status over HTTP.
//!
//! It is a real axum service, runnable on its own (binary `retail-api`) or started in-process by
//! `rest-mcp-server` on an ephemeral port. Its data is the shared seed (`retail_seed`): the same
//! product ids and prices as the SQL server, and a shipping status for every seeded order.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /health` | liveness and counts (never faulted) |
//! | `GET /products`, `GET /products/{productId}` | the catalogue |
//! | `GET /warehouses` | the warehouses |
//! | `GET /inventory`, `GET /inventory/{productId}` | stock per warehouse with reorder levels |
//! | `GET /stock/low` | product-and-warehouse pairs below their reorder level |
//! | `GET /shipments/{orderId}` | carrier, tracking, dates, estimated delivery |
//! | `POST /reservations` | holds stock for an order (`{orderId, lines: [{productId, quantity}]}`): 201 new, 200 the order's existing one |
//! | `GET /reservations/{reservationId}` | one reservation: state (`reserved`/`released`), lines, warehouses |
//! | `POST /reservations/{reservationId}/release` | puts its stock back once; `alreadyReleased` says whether an earlier call did |
//! | `GET /debug/last-traceparent` | the last trace context received (`--debug-endpoints` only) |
//!
//! Errors are JSON (`{"error": {"status", "code", "message", "details"?}}`): 400 for a malformed
//! id, 404 for an unknown one (for a shipment: an order not yet handed over for shipping), 422 for
//! a request body it cannot use, 409 for a reservation the stock or the order's earlier
//! reservation does not allow (`insufficient_stock` with `details` {productId, requested,
//! available}; `conflict`), 429 and 503 with `Retry-After` when faults are injected.
//!
//! # Layout
//! - [`routes`]: the endpoints and the error answers.
//! - [`stock`]: warehouses and stock levels, generated from a fixed seed.
//! - [`reservations`]: stock held for orders, idempotent per order id.
//! - [`shipping`]: each order's shipment, derived from its status and date.
//! - [`faults`]: HTTP-level latency, 503s, 429s and a rate limit.
//! - [`trace`]: trace continuation from `traceparent` and the record of the last one seen.

pub mod faults;
pub mod reservations;
pub mod routes;
pub mod shipping;
pub mod stock;
pub mod trace;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{Router, middleware, routing::get, serve::ListenerExt};
use tokio_util::sync::CancellationToken;

use crate::model::Product;

use self::{
    faults::{HttpFaultArgs, HttpFaults},
    reservations::Reservations,
    shipping::ShippingBook,
    stock::StockBook,
    trace::TraceLog,
};

/// Default address of the standalone API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Command-line flags of the `retail-api` binary.
#[derive(Debug, clap::Parser)]
#[command(
    name = "retail-api",
    version,
    about = "The retail REST API: products, inventory, stock and shipping status"
)]
pub struct ApiArgs {
    /// Address to listen on (PORT binds 127.0.0.1; port 0 picks a free one, logged at startup).
    #[arg(long, env = "RETAIL_API_LISTEN", default_value = DEFAULT_LISTEN,
          value_parser = kit::serve::parse_listen_addr)]
    pub listen: SocketAddr,
    /// Serve `GET /debug/last-traceparent` (the last W3C trace context received), for checking
    /// trace propagation without a collector.
    #[arg(long, env = "RETAIL_API_DEBUG_ENDPOINTS")]
    pub debug_endpoints: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, env = "MCP_LOG_FORMAT", default_value_t = kit::telemetry::LogFormat::Text)]
    pub log_format: kit::telemetry::LogFormat,
    /// HTTP fault injection flags.
    #[command(flatten)]
    pub faults: HttpFaultArgs,
}

/// How one API instance behaves.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Injected HTTP faults.
    pub faults: HttpFaultArgs,
    /// Whether `/debug/*` is served.
    pub debug_endpoints: bool,
}

/// What every request handler reads; built once per instance.
#[derive(Debug)]
pub struct ApiState {
    /// The catalogue by id (ordered, so listings need no sort).
    pub products: BTreeMap<String, Product>,
    /// Stock levels and the reservations held against them (see [`ApiState::stock`]).
    pub stock: Mutex<StockStore>,
    /// Shipments by order id.
    pub shipping: ShippingBook,
    /// Injected faults.
    pub faults: HttpFaults,
    /// The last trace context received.
    pub traces: TraceLog,
}

impl ApiState {
    /// Builds the data from the shared seed.
    pub fn new(config: &ApiConfig) -> Self {
        let data = retail_seed::dataset();
        let products = data
            .products
            .iter()
            .map(|p| {
                let product = Product {
                    product_id: p.id.clone(),
                    name: p.name.clone(),
                    category: p.category.to_owned(),
                    price: p.price_cents as f64 / 100.0,
                    currency: "USD".into(),
                };
                (p.id.clone(), product)
            })
            .collect();
        Self {
            products,
            stock: Mutex::new(StockStore {
                book: StockBook::generate(&data.products),
                reservations: Reservations::default(),
            }),
            shipping: ShippingBook::generate(&data.orders),
            faults: HttpFaults::new(&config.faults),
            traces: TraceLog::default(),
        }
    }
}

impl ApiState {
    /// Locks the stock and its reservations. Handlers hold the guard for one synchronous step,
    /// never across an `.await`. A poisoned lock only means a panic mid-request; every step
    /// checks before it changes anything, so the data is still whole.
    pub fn stock(&self) -> MutexGuard<'_, StockStore> {
        self.stock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stock levels and the reservations held against them, behind one lock: a reservation's
/// check-then-take and a release's put-back each happen in one step, so concurrent requests can
/// neither oversell nor put stock back twice.
#[derive(Debug)]
pub struct StockStore {
    /// Units on hand and not reserved, per product and warehouse.
    pub book: StockBook,
    /// Every reservation, by id and by order.
    pub reservations: Reservations,
}

/// The API as an axum router.
///
/// Layer order, outermost first: trace continuation (so faulted requests are traced and their
/// `traceparent` recorded too), then fault injection, then the endpoint.
pub fn router(config: &ApiConfig) -> Router {
    let state = Arc::new(ApiState::new(config));
    let mut routes = routes::routes();
    if config.debug_endpoints {
        routes = routes.route("/debug/last-traceparent", get(trace::last_traceparent));
    }
    routes
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            faults::inject,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            trace::continue_trace,
        ))
        .with_state(state)
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An API instance serving in the background of this process.
#[derive(Debug)]
pub struct RunningApi {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningApi {
    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL clients use.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and waits for open ones to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retail API stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "retail API task failed"),
        }
    }
}

/// Binds `addr` and serves the API in a background task until [`RunningApi::shutdown`].
pub async fn spawn(addr: SocketAddr, config: &ApiConfig) -> Result<RunningApi, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    // Without TCP_NODELAY a pooled client stalls ~40 ms per request (Nagle + delayed ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = CancellationToken::new();
    let app = router(config);
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    Ok(RunningApi {
        addr: local,
        stop,
        task,
    })
}

/// Runs the standalone API (binary `retail-api`) until SIGINT/SIGTERM.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let telemetry = kit::telemetry::init("retail-api", args.log_format)?;
    let config = ApiConfig {
        faults: args.faults,
        debug_endpoints: args.debug_endpoints,
    };
    if config.faults.is_set() {
        tracing::info!(faults = ?config.faults, "HTTP fault injection on");
    }
    let api = spawn(args.listen, &config).await?;
    // Tests and scripts read the bound address from this line (port 0 picks a free port).
    tracing::info!(
        url = %api.base_url(),
        debug_endpoints = config.debug_endpoints,
        "retail API listening on {}",
        api.base_url()
    );
    kit::serve::shutdown_signal().await;
    tracing::info!("shutdown signal: finishing open requests");
    api.shutdown().await;
    telemetry.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_seed() {
        let state = ApiState::new(&ApiConfig::default());
        let seed = &retail_seed::dataset().products;
        assert_eq!(state.products.len(), seed.len());
        for p in seed {
            let served = state.products.get(&p.id).expect("served");
            assert_eq!(served.name, p.name);
            assert_eq!(served.category, p.category);
            assert_eq!((served.price * 100.0).round() as i64, p.price_cents);
        }
        assert_eq!(state.shipping.len(), retail_seed::ORDER_COUNT);
    }
}
