//! The orchestrator: one MCP server in front of many.
//!
//! # Layout
//! Roughly from the bottom up: the call path's modules import only from the ones above them in
//! this list; `config` holds the typed settings of `limits`, `policy` and `workflow`, and those
//! read their resolved settings back from it (no two files import each other).
//! - [`naming`]: how upstream names and URIs look to agents, and back (both directions use it).
//! - [`annotations`]: what a tool's annotations promise (read-only, idempotent).
//! - [`hints`]: cache hints (`ttlMs`, `cacheScope`): what is left of them, how parts combine.
//! - [`capabilities`]: what the front advertises: the upstreams' union and its own part.
//! - [`context`]: what an agent's request carries to every upstream request it causes.
//! - [`stats`]: per-server figures for status.
//! - [`limits`]: caps per client, per composite, per result and on upstream stderr.
//! - [`cache`]: the result cache (TTL tiers, single-flight, invalidation by tag); [`cache::shared`]:
//!   its optional L2 in Redis, shared by several instances.
//! - [`template`]: the language of composite tools and cache tags (`${step.path}`, fusion helpers).
//! - [`config`]: `mcp.json`, parsed, `${env:..}`-expanded and validated.
//! - [`error`]: call failures ([`error::CallError`]) and the one fault vocabulary agents read
//!   ([`error::Fault`]).
//! - [`policy`]: the per-server policy stack (deadline, retry, breaker, bulkhead, timeout), and
//!   the rule for when a repeat is safe.
//! - [`subscriptions`]: agents' resource subscriptions, per session and URI, capped per session.
//! - [`relay`]: what upstreams send towards agents (progress, list changes, resource updates),
//!   keyed by the call that caused it.
//! - [`upstream`]: one server each: its policy stack and figures, and the [`upstream::Link`]
//!   its requests travel on (a supervised connection, or a scripted one in unit tests).
//! - [`tasks`]: the tasks extension passing through: task ids sealed to the upstream that owns
//!   them, declared upstream per request, advertised when an upstream offers it.
//! - [`workflow`]: composite tools: their definitions and the executor that runs a plan.
//! - [`catalog`]: namespaced names → a typed [`catalog::Route`], with filters.
//! - [`metrics`]: OpenTelemetry metrics, exported over OTLP and served as Prometheus text.
//! - [`call`]: the one way down: upstream calls (cache → policy stack → link) for pass-through
//!   calls, composite steps and every other request; composites; built-in tools.
//! - [`gateway`]: the running parts started, the catalog kept current, a new configuration put
//!   in force without dropping agents, shutdown.
//! - [`reload`]: what triggers a reload (file watcher, SIGHUP, the admin endpoint).
//! - [`saga_log`]: the SQLite file sagas write their progress to, read back to undo the ones a
//!   crash left unfinished.
//! - [`status`]: the `orchestrator://status` report.
//! - [`lists`]: the front's list and read answers' cache hints, and lists no upstream offers.
//! - [`frontend`]: the MCP server agents connect to.
//!
//! The `mcp-orchestrator` command (its CLI and the workshop demo) is the binary crate
//! `crates/orchestrator-cli`; this library needs no argument parser, tables or spinners.

pub mod agent_logs;
pub mod annotations;
pub mod ask;
pub mod cache;
pub mod call;
pub mod capabilities;
pub mod catalog;
pub mod config;
pub mod context;
pub mod error;
pub mod frontend;
pub mod gateway;
pub mod hints;
pub mod limits;
pub mod lists;
pub mod metrics;
pub mod naming;
pub mod policy;
pub mod relay;
pub mod reload;
pub mod saga_log;
pub mod stats;
pub mod status;
pub mod subscriptions;
pub mod tasks;
pub mod template;
pub mod upstream;
pub mod workflow;
