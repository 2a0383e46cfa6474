//! What every MCP process in this workspace shares, written once.
//!
//! # Layout
//! - [`args`]: the command-line flags common to every server (transport, security, logs, faults).
//! - [`arguments`]: names the argument that broke a tool's input schema.
//! - [`binaries`]: finds the workspace's binaries from the running one (the demo, examples,
//!   benches, end-to-end tests and the soak driver start the servers this way).
//! - [`framing`]: checks each incoming message (a stdio line, an HTTP body) and answers a
//!   malformed one with the JSON-RPC error the spec prescribes.
//! - [`serve`]: runs an rmcp `ServerHandler` over stdio or streamable HTTP, with the HTTP security
//!   checks (Origin, bearer token, body limit) and graceful shutdown.
//! - [`call`]: the one wrapper every `tools/call` goes through (span, trace continuation, faults,
//!   in-flight accounting, one access log line per call).
//! - [`correlation`]: the correlation id of a call (from the caller or generated), its HTTP
//!   middleware and the one precedence rule servers and the orchestrator share.
//! - [`data_dir`]: `--data-dir`, with `:memory:` as a throwaway folder.
//! - `sqlite` (feature `sqlite`): a server's SQLite file in its data directory, one writer and a
//!   pool of read-only connections.
//! - [`telemetry`]: tracing to stderr, OTLP export, trace-context extraction from `_meta`.
//! - [`log_fields`]: the text log's fields with control characters escaped (no forged lines).
//! - [`faults`]: deterministic latency and failure injection (before or after the tool runs) for
//!   demos and tests, paused and resumed at run time by SIGUSR1/SIGUSR2.
//! - [`tool_error`]: the error convention (`errorKind`, `retryable`, `retryAfterMs` in `_meta`).
//! - [`in_flight`]: counts running calls so shutdown can wait for them.
//! - [`raw_result`]: a tool result relayed as the upstream wrote it (the raw pass-through path).

pub mod args;
pub mod arguments;
pub mod binaries;
pub mod call;
pub mod correlation;
pub mod data_dir;
pub mod faults;
pub mod framing;
pub mod in_flight;
pub mod json_size;
pub mod log_fields;
pub mod raw_result;
pub mod serve;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod telemetry;
pub mod tool_error;

pub use args::CommonArgs;
pub use call::ServerKit;
pub use faults::{FaultArgs, Faults, Injection};
pub use tool_error::{ErrorKind, ToolError, ToolFailure};
