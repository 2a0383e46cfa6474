//! The orchestrator: one MCP server in front of many.
//!
//! # Layout
//! - [`config`]: `mcp.json`, parsed, `${env:..}`-expanded and validated.
//! - [`upstream`]: one connected server each, supervised and reconnected.
//! - [`catalog`]: namespaced names → routes, with filters.
//! - [`relay`]: progress, list changes and agents.
//! - [`workflow`]: composite tools: definitions, `${..}` templates, the executor.
//! - [`cache`]: the result cache: TTL tiers, single flight, invalidation by tag.
//! - [`policy`]: the per-server policy stack (deadline, retry, breaker, bulkhead, timeout).
//! - [`limits`]: caps per client, per composite, per result and on upstream stderr.
//! - [`error`]: call failures.
//! - [`stats`]: per-server figures for status.
//! - [`metrics`]: OpenTelemetry metrics, exported over OTLP and served as Prometheus text.
//! - [`gateway`]: the running parts wired together, and the one call path.
//! - [`frontend`]: the MCP server agents connect to.
//! - [`status`]: the `orchestrator://status` report.
//!
//! The `mcp-orchestrator` command (its CLI and the workshop demo) is the binary crate
//! `crates/orchestrator-cli`; this library needs no argument parser, tables or spinners.

pub mod cache;
pub mod catalog;
pub mod config;
pub mod error;
pub mod frontend;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod relay;
pub mod stats;
pub mod status;
pub mod upstream;
pub mod workflow;
