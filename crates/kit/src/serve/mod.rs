//! Runs a `ServerHandler` over stdio (the default) or streamable HTTP at `/mcp`.
//!
//! HTTP gets the checks a local server needs against browsers and neighbours: a present Origin
//! must be on the allow-list (else 403), a configured bearer token must be presented (else 401),
//! bodies are capped (413), and binding a non-loopback address needs a token unless explicitly
//! allowed. Every HTTP request gets a correlation id ([`crate::correlation`]), echoed in the
//! response's `X-Correlation-ID` header. Both transports shut down gracefully: SIGINT/SIGTERM
//! (and, for stdio, stdin EOF) let in-flight calls finish within a grace period
//! (`--shutdown-grace-secs`); HTTP also stops accepting connections at once.

mod args;
mod body;
mod conn;
mod guard;
mod http;
pub mod limits;
mod refusal;
mod sessions;
mod signal;
mod stats;
mod stdio;
mod timer_floor;
mod unanswered;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use rmcp::ServerHandler;
use tokio_util::sync::CancellationToken;

pub use self::{
    args::{Secret, ServeArgs, parse_listen_addr},
    guard::BadOriginPattern,
    limits::HttpLimits,
    refusal::LIMIT_REFUSED,
    signal::shutdown_signal,
    stats::{FrontLimit, FrontStats},
};
use crate::in_flight::InFlight;

/// The HTTP endpoint path, the same for every process.
pub const MCP_PATH: &str = "/mcp";

/// Origins allowed by default: pages served from this machine (an inspector UI, say).
pub const DEFAULT_ALLOWED_ORIGINS: [&str; 3] =
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A non-loopback bind was asked for without a token.
    #[error(
        "refusing to serve HTTP on non-loopback address {0} without --token \
         (pass --allow-unauthenticated-remote to do it anyway)"
    )]
    UnauthenticatedRemote(SocketAddr),
    /// Bound to every interface with no `--allowed-hosts`.
    #[error(
        "serving HTTP on {0} (every interface) needs --allowed-hosts with the names clients \
         use to reach this machine (or `*` to accept any Host header); without it every \
         request not addressed to localhost would be refused"
    )]
    HostsNeeded(SocketAddr),
    /// An `--allowed-origins` entry is not an origin.
    #[error("--allowed-origins: {0}")]
    BadOrigin(BadOriginPattern),
    /// The stdio session ended with a protocol or transport error.
    #[error("stdio session failed: {0}")]
    Stdio(String),
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Serves handlers made by `factory` until a shutdown signal (or stdin EOF for stdio).
///
/// `factory` runs once for stdio and once per HTTP session (or request, when stateless): keep it
/// cheap and share state through `Arc`s. `in_flight` must be the count the handlers' calls enter,
/// so shutdown can wait for them.
pub async fn serve<H, F>(
    args: &ServeArgs,
    in_flight: InFlight,
    factory: F,
) -> Result<(), ServeError>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    serve_with(args, in_flight, factory, Front::default()).await
}

/// What the HTTP front serves beside `/mcp`, and where it counts what it holds and refuses.
#[derive(Debug, Default)]
pub struct Front {
    /// Routes mounted beside `/mcp` (behind the same guard and bearer token), for endpoints
    /// that are not MCP, such as `/metrics`.
    pub routes: Router,
    /// Routes behind the Host/Origin guard but not the bearer token: health checks, which load
    /// balancers send without credentials.
    pub public_routes: Router,
    /// Cancelled when a shutdown signal arrives, before the listener closes: a readiness route
    /// reads it to answer 503 while `--drain-delay-ms` runs.
    pub draining: CancellationToken,
    /// Sessions and connections held, and refusals by limit.
    pub stats: Arc<FrontStats>,
}

/// [`serve`], with `front` for the HTTP front's extra routes (unused over stdio) and the figures
/// of either front.
pub async fn serve_with<H, F>(
    args: &ServeArgs,
    in_flight: InFlight,
    factory: F,
    front: Front,
) -> Result<(), ServeError>
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let _floor = timer_floor::hold();
    match args.http {
        None => {
            stdio::serve_stdio(
                factory(),
                in_flight,
                grace,
                args.max_body_bytes,
                args.max_pending_requests,
                front.stats,
            )
            .await
        }
        Some(addr) => http::serve_http(addr, args, in_flight, grace, factory, front).await,
    }
}
