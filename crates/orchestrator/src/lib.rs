//! The orchestrator: one MCP server in front of many.
//!
//! # Layout
//! - [`config`]: `mcp.json`, parsed, `${env:..}`-expanded and validated.
//! - [`template`]: the language of composite tools and cache tags (`${step.path}`, fusion helpers).
//! - [`upstream`]: one connected server each, supervised and reconnected.
//! - [`catalog`]: namespaced names → routes, with filters.
//! - [`relay`]: progress, list changes and agents.
//! - [`policy`]: the per-server policy stack (deadline, retry, breaker, bulkhead, timeout).
//! - [`limits`]: caps per client, per composite, per result and on upstream stderr.
//! - [`error`]: call failures.
//! - [`stats`]: per-server figures for status.
//! - [`metrics`]: OpenTelemetry metrics, exported over OTLP and served as Prometheus text.
//! - [`gateway`]: the running parts wired together, and the one call path.
//! - [`frontend`]: the MCP server agents connect to.
//! - [`status`]: the `orchestrator://status` report.
//! - [`cli`]: the `mcp-orchestrator` command.
//! - [`demo`]: `mcp-orchestrator demo`, the workshop tour.

pub mod cache;
pub mod call;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod error;
pub mod frontend;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod naming;
pub mod policy;
pub mod relay;
pub mod stats;
pub mod status;
pub mod template;
pub mod upstream;
pub mod workflow;
