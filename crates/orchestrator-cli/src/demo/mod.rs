//! `mcp-orchestrator demo`: the workshop tour. Starts the bundled servers itself (found beside
//! the running executable, see [`kit::binaries`], with fault flags per section) through
//! [`Gateway::start`] and shows each pattern with measured figures: parallel vs sequential vs
//! cached, fan-out, partial failure, the circuit breaker, retry with backoff, cache
//! invalidation, and a saga that is whole or undone.
//!
//! `--json` prints one object with every section's figures; `--section NAME` runs one section.
//!
//! # Layout
//! This file is the tour's frame: picking the sections, finding and starting the servers,
//! calling a tool, reading a result's `_meta`, printing. Each section is its own file, named as
//! on the command line: [`parallel`], [`fanout`], [`partial`], [`breaker`], [`retry`], [`cache`],
//! [`saga`].

mod breaker;
mod cache;
mod fanout;
mod parallel;
mod partial;
mod retry;
mod saga;

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use comfy_table::Table;
use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::CallToolResult;
use serde_json::{Map, Value, json};

use crate::output::table;

/// The sections, in the order the tour runs them.
const SECTIONS: [&str; 7] = [
    "parallel", "fanout", "partial", "breaker", "retry", "cache", "saga",
];

/// The composites of the repository's `mcp.json` (`customer_insights`, `order_details`, ...),
/// with its cache rules: the demo runs the same definitions a user starts from.
const BASE_CONFIG: &str = include_str!("../../../../mcp.json");

/// How long the demo waits for its servers to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the tour (or one section); returns the process exit code.
pub async fn run(json: bool, section: Option<String>) -> anyhow::Result<i32> {
    let chosen: Vec<&str> = match &section {
        Some(name) => match SECTIONS.iter().find(|s| **s == name.as_str()) {
            Some(s) => vec![*s],
            None => bail!("unknown section `{name}`; one of: {}", SECTIONS.join(", ")),
        },
        None => SECTIONS.to_vec(),
    };
    let bins = Bins::locate()?;
    let out = Out {
        json,
        tty: std::io::stdout().is_terminal(),
    };
    if !json {
        out!(
            "mcp-orchestrator workshop demo: {} section(s), servers from {}",
            chosen.len(),
            bins.dir.display()
        );
    }
    let started = Instant::now();
    let mut report = Map::new();
    for name in chosen {
        let figures = match name {
            "parallel" => parallel::run(&bins, &out).await,
            "fanout" => fanout::run(&bins, &out).await,
            "partial" => partial::run(&bins, &out).await,
            "breaker" => breaker::run(&bins, &out).await,
            "retry" => retry::run(&bins, &out).await,
            "saga" => saga::run(&bins, &out).await,
            _ => cache::run(&bins, &out).await,
        }
        .with_context(|| format!("demo section `{name}`"))?;
        report.insert(name.to_owned(), figures);
    }
    let total_ms = ms(started.elapsed());
    if json {
        report.insert("totalMs".into(), json!(total_ms));
        out!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    } else {
        out!("\ndemo done in {:.1} s", total_ms / 1000.0);
    }
    Ok(0)
}

/// Where the output goes: tables for people, or nothing until the final JSON object.
struct Out {
    json: bool,
    tty: bool,
}

impl Out {
    fn intro(&self, name: &str, what: &str) {
        if !self.json {
            out!("\n== {name}: {what}");
        }
    }

    fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            out!("{}", text.as_ref());
        }
    }

    fn table(&self, table: Table) {
        if !self.json {
            out!("{table}");
        }
    }

    /// A spinner for a wait longer than a moment (terminal and not `--json` only).
    fn spinner(&self, message: impl Into<String>) -> Option<indicatif::ProgressBar> {
        if self.json || !self.tty {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(80));
        Some(bar)
    }

    /// Prints the trace id of a result, when the orchestrator reported one.
    fn trace(&self, result: &CallToolResult) {
        if let Some(id) = trace_id(result) {
            self.line(format!("trace id: {id}"));
            if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                self.line(format!(
                    "  (exported to {endpoint}; look it up in Jaeger/Tempo)"
                ));
            }
        }
    }
}

/// Clears a spinner, if one was shown.
fn done(bar: Option<indicatif::ProgressBar>) {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// A trace id in a result's `_meta` (`traceId`, or the one in a `traceparent`), if any.
fn trace_id(result: &CallToolResult) -> Option<String> {
    let meta = result.meta.as_ref()?;
    if let Some(id) = meta.get("traceId").and_then(Value::as_str) {
        return Some(id.to_owned());
    }
    meta.get("traceparent")
        .and_then(Value::as_str)
        .and_then(|tp| tp.split('-').nth(1))
        .map(str::to_owned)
}

/// The bundled servers the sections start.
const SERVERS: [&str; 3] = ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"];

/// The folder of the bundled server binaries: the running executable's ([`kit::binaries`]).
struct Bins {
    dir: PathBuf,
}

impl Bins {
    /// The folder, once every bundled server is found in it.
    fn locate() -> anyhow::Result<Self> {
        let bins = Self {
            dir: kit::binaries::dir()?,
        };
        for name in SERVERS {
            bins.path(name)?;
        }
        Ok(bins)
    }

    /// The path of server `name`, as a config's `command`.
    fn path(&self, name: &str) -> anyhow::Result<String> {
        let path = kit::binaries::find_in(&self.dir, name)
            .context("the demo starts the bundled servers found next to mcp-orchestrator")?;
        Ok(path.display().to_string())
    }

    /// A stdio server entry with the given extra flags (in-memory store unless given one).
    fn server(&self, name: &str, flags: &[&str]) -> anyhow::Result<Value> {
        let mut args: Vec<String> = Vec::new();
        if name != "rest-mcp-server" && !flags.contains(&"--data-dir") {
            args.extend(["--data-dir".into(), ":memory:".into()]);
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        Ok(json!({ "command": self.path(name)?, "args": args }))
    }

    /// The three bundled servers, each with its flags.
    fn all(&self, sql: &[&str], cosmos: &[&str], rest: &[&str]) -> anyhow::Result<Value> {
        Ok(json!({
            "sql": self.server("sql-mcp-server", sql)?,
            "cosmos": self.server("cosmos-mcp-server", cosmos)?,
            "rest": self.server("rest-mcp-server", rest)?,
        }))
    }
}

/// The repository's configuration with `mcpServers` replaced, and `edit` applied.
fn config(servers: Value, edit: impl FnOnce(&mut Value)) -> anyhow::Result<Value> {
    let mut config: Value =
        serde_json::from_str(BASE_CONFIG).context("the bundled mcp.json is not JSON")?;
    config["mcpServers"] = servers;
    edit(&mut config);
    Ok(config)
}

/// Starts a gateway on `config` and waits for its servers.
async fn start(config: Value, out: &Out) -> anyhow::Result<Arc<Gateway>> {
    let config = Config::parse(&config.to_string(), Path::new("."), &|v| {
        std::env::var(v).ok()
    })
    .map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
    let gateway = Gateway::start(config);
    let bar = out.spinner("starting the bundled servers");
    let ready = gateway.wait_ready(READY_TIMEOUT).await;
    done(bar);
    if !ready {
        let problems: Vec<String> = gateway
            .upstreams()
            .iter()
            .filter(|u| u.connected_since().is_none())
            .map(|u| {
                format!(
                    "{}: {}",
                    u.name(),
                    u.stats()
                        .last_error()
                        .unwrap_or_else(|| "still connecting".into())
                )
            })
            .collect();
        gateway.shutdown().await;
        bail!("servers did not connect: {}", problems.join("; "));
    }
    Ok(gateway)
}

/// One call as the agent would see it (a failed call becomes its tool error), with its wall time.
async fn call(gw: &Gateway, tool: &str, args: Value) -> anyhow::Result<(CallToolResult, f64)> {
    let started = Instant::now();
    let outcome = gw
        .call_tool(tool, args.as_object().cloned(), &CallContext::default())
        .await;
    let elapsed = ms(started.elapsed());
    let result = match outcome {
        Ok(r) => r,
        Err(e) => e
            .into_tool_answer()
            .map_err(|e| anyhow::anyhow!("{tool}: {}", e.message))?,
    };
    Ok((result, elapsed))
}

/// Milliseconds with two decimals, as the figures are printed.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// A composite result's `_meta.sources`: one entry per step, with its outcome and timing.
fn sources(r: &CallToolResult) -> Vec<Value> {
    r.meta
        .as_ref()
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether the result came from the cache (`_meta.cached`).
fn cached(r: &CallToolResult) -> bool {
    r.meta.as_ref().and_then(|m| m.get("cached")) == Some(&json!(true))
}

/// Whether the result is a tool error.
fn is_error(r: &CallToolResult) -> bool {
    r.is_error == Some(true)
}

/// A JSON value as table text: strings unquoted, null empty.
fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One row per step of `_meta.sources`.
fn sources_table(sources: &[Value]) -> Table {
    let mut t = table(&[
        "step",
        "call",
        "outcome",
        "started (ms)",
        "latency (ms)",
        "items",
        "error",
    ]);
    for s in sources {
        t.add_row([
            str_of(&s["step"]),
            format!("{}.{}", str_of(&s["server"]), str_of(&s["tool"])),
            str_of(&s["outcome"]),
            format!("{:.1}", s["startedMs"].as_f64().unwrap_or(0.0)),
            format!("{:.1}", s["latencyMs"].as_f64().unwrap_or(0.0)),
            str_of(&s["items"]),
            match (&s["errorKind"], &s["error"]) {
                (Value::Null, _) => String::new(),
                (k, Value::Null) => str_of(k),
                (k, e) => format!("{}: {}", str_of(k), truncate(&str_of(e), 60)),
            },
        ]);
    }
    t
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The text content of a result, for error messages.
fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
