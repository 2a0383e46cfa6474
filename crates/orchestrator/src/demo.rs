//! `mcp-orchestrator demo`: the workshop tour. Starts the bundled servers itself (found next to
//! the running executable, see [`kit::binaries`], with fault flags per section) through [`Gateway::start`] and shows each
//! pattern with measured figures: parallel vs sequential vs cached, fan-out, partial failure, the
//! circuit breaker, retry with backoff, and cache invalidation.
//!
//! `--json` prints one object with every section's figures; `--section NAME` runs one section.

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use comfy_table::Table;
use rmcp::model::CallToolResult;
use serde_json::{Map, Value, json};

use crate::{config::Config, gateway::Gateway, upstream::CallContext};

/// The sections, in the order the tour runs them.
pub const SECTIONS: [&str; 6] = ["parallel", "fanout", "partial", "breaker", "retry", "cache"];

/// The composites of the repository's `mcp.json` (`customer_insights`, `order_details`, ...),
/// with its cache rules: the demo runs the same definitions a user starts from.
const BASE_CONFIG: &str = include_str!("../../../mcp.json");

/// How long the demo waits for its servers to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints a line to stdout; a closed pipe ends the output quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
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

fn done(bar: Option<indicatif::ProgressBar>) {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(|h| h.to_string()));
    t
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
            "parallel" => parallel(&bins, &out).await,
            "fanout" => fanout(&bins, &out).await,
            "partial" => partial(&bins, &out).await,
            "breaker" => breaker(&bins, &out).await,
            "retry" => retry(&bins, &out).await,
            _ => cache(&bins, &out).await,
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
        for name in ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"] {
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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

fn us(d: Duration) -> u128 {
    d.as_micros()
}

fn sources(r: &CallToolResult) -> Vec<Value> {
    r.meta
        .as_ref()
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn cached(r: &CallToolResult) -> bool {
    r.meta.as_ref().and_then(|m| m.get("cached")) == Some(&json!(true))
}

fn is_error(r: &CallToolResult) -> bool {
    r.is_error == Some(true)
}

/// `ok`, or the error kind and reason of a tool error.
fn outcome(r: &CallToolResult) -> String {
    if !is_error(r) {
        return "ok".into();
    }
    let meta = r.meta.as_ref();
    let kind = meta
        .and_then(|m| m.get("errorKind"))
        .and_then(Value::as_str)
        .unwrap_or("error");
    match meta.and_then(|m| m.get("reason")).and_then(Value::as_str) {
        Some(reason) => format!("{kind} ({reason})"),
        None => kind.to_owned(),
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

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

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Three 500 ms calls: one after the other, all at once, and all at once from the cache.
async fn parallel(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "parallel",
        "three 500 ms calls (SQL, Cosmos, REST) one after the other, in parallel, and in parallel from the cache",
    );
    let slow = ["--latency-ms", "500"];
    let steps = |chained: bool| {
        let (behavior_user, stock_product) = if chained {
            // Each step reads the step before it, so the executor must wait for it.
            (
                json!({ "$default": ["${customer.missingField}", "CUST-0001"] }),
                json!({ "$default": ["${behavior.missingField}", "PROD-001"] }),
            )
        } else {
            (json!("CUST-0001"), json!("PROD-001"))
        };
        json!({
            "customer": { "call": "sql.get_customer", "args": { "customerId": "CUST-0001" } },
            "behavior": { "call": "cosmos.get_user_behavior", "args": { "userId": behavior_user } },
            "stock": { "call": "rest.check_inventory", "args": { "productId": stock_product } }
        })
    };
    let composite = |description: &str, chained: bool, cache: bool| {
        let mut c = json!({
            "description": description,
            "input": { "type": "object", "additionalProperties": false },
            "steps": steps(chained),
            "output": { "customer": "${customer}", "behavior": "${behavior}", "stock": "${stock}" }
        });
        if cache {
            c["cache"] = json!("short");
        }
        c
    };
    let gw = start(
        config(bins.all(&slow, &slow, &slow)?, |c| {
            c["orchestrator"]["composites"] = json!({
                "demo_sequential": composite("Three calls, each waiting for the one before.", true, false),
                "demo_parallel": composite("Three independent calls, run together.", false, false),
                "demo_parallel_cached": composite("The parallel calls, cached for a short while.", false, true),
            });
        })?,
        out,
    )
    .await?;
    let bar = out.spinner("calling (≈1.5 s + 0.5 s + 0.5 s)");
    let (sequential, sequential_ms) = call(&gw, "demo_sequential", json!({})).await?;
    let (parallel, parallel_ms) = call(&gw, "demo_parallel", json!({})).await?;
    let (first, first_ms) = call(&gw, "demo_parallel_cached", json!({})).await?;
    let (hit, cached_ms) = call(&gw, "demo_parallel_cached", json!({})).await?;
    done(bar);
    gw.shutdown().await;
    for r in [&sequential, &parallel, &first, &hit] {
        if is_error(r) {
            bail!("a composite failed: {}", text_of(r));
        }
    }
    let mut t = table(&["run", "how", "measured (ms)", "expected"]);
    t.add_row([
        "sequential",
        "each step reads the previous one",
        &format!("{sequential_ms:.0}"),
        "≈1500",
    ]);
    t.add_row([
        "parallel",
        "independent steps, run together",
        &format!("{parallel_ms:.0}"),
        "≈500",
    ]);
    t.add_row([
        "parallel + cache",
        "second call of a `cache: short` composite",
        &format!("{cached_ms:.1}"),
        "≈0",
    ]);
    out.table(t);
    out.trace(&parallel);
    Ok(json!({
        "sequentialMs": sequential_ms,
        "parallelMs": parallel_ms,
        "cacheMissMs": first_ms,
        "cachedMs": cached_ms,
        "cacheHit": cached(&hit),
        "speedup": if parallel_ms > 0.0 { sequential_ms / parallel_ms } else { 0.0 },
    }))
}

/// order_details (one call, then two in parallel) and top_customers_enriched (fan-out/fan-in).
async fn fanout(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "fanout",
        "sequential-then-parallel (order_details) and fan-out/fan-in (top_customers_enriched), every call 100 ms",
    );
    let slow = ["--latency-ms", "100"];
    let gw = start(config(bins.all(&slow, &slow, &slow)?, |_| {})?, out).await?;
    let (order, order_ms) = call(&gw, "order_details", json!({ "orderId": "ORD-00042" })).await?;
    if is_error(&order) {
        bail!("order_details failed: {}", text_of(&order));
    }
    let order_sources = sources(&order);
    out.line(format!(
        "order_details ORD-00042 in {order_ms:.0} ms: the order first, then its shipping and stock together"
    ));
    out.table(sources_table(&order_sources));
    out.trace(&order);

    let mut runs = Vec::new();
    let mut t = table(&[
        "customers",
        "measured (ms)",
        "one by one would take (ms)",
        "Cosmos calls",
        "concurrency",
    ]);
    for limit in [10u64, 100] {
        let bar = out.spinner(format!("top_customers_enriched for {limit} customers"));
        let (r, elapsed) = call(&gw, "top_customers_enriched", json!({ "limit": limit })).await?;
        done(bar);
        if is_error(&r) {
            bail!("top_customers_enriched failed: {}", text_of(&r));
        }
        let customers = r
            .structured_content
            .as_ref()
            .and_then(|c| c["customers"].as_array())
            .map(Vec::len)
            .unwrap_or(0);
        let items = sources(&r)
            .iter()
            .find(|s| s["step"] == "analysis")
            .and_then(|s| s["items"].as_u64())
            .unwrap_or(0);
        t.add_row([
            customers.to_string(),
            format!("{elapsed:.0}"),
            format!("≈{}", (items + 1) * 100),
            items.to_string(),
            "8".into(),
        ]);
        runs.push(
            json!({ "limit": limit, "customers": customers, "ms": elapsed, "fanOutCalls": items }),
        );
    }
    out.line(
        "top_customers_enriched: one SQL call, then one Cosmos analysis per customer, 8 at a time",
    );
    out.table(t);
    gw.shutdown().await;
    Ok(json!({
        "orderDetails": { "ms": order_ms, "sources": order_sources },
        "topCustomers": runs,
    }))
}

/// Cosmos fails; customer_insights answers with a default profile and says so in `_meta.sources`.
async fn partial(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "partial",
        "Cosmos fails every get_user_behavior call; customer_insights still answers, and _meta.sources says what is missing",
    );
    let gw = start(
        config(
            bins.all(&[], &["--fail-tools", "get_user_behavior"], &[])?,
            |c| {
                c["orchestrator"]["servers"]["cosmos"] =
                    json!({ "retry": { "maxAttempts": 2, "baseDelayMs": 50, "jitter": "none" } });
            },
        )?,
        out,
    )
    .await?;
    let (r, elapsed) = call(
        &gw,
        "customer_insights",
        json!({ "customerId": "CUST-0003" }),
    )
    .await?;
    gw.shutdown().await;
    let content = r.structured_content.clone().unwrap_or_default();
    let recent = content["recentOrders"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    out.line(format!(
        "customer_insights CUST-0003 in {elapsed:.0} ms: {} ({recent} recent orders, behaviour segment `{}`)",
        if is_error(&r) { "failed" } else { "answered" },
        str_of(&content["behavior"]["segment"]),
    ));
    let s = sources(&r);
    out.table(sources_table(&s));
    out.trace(&r);
    Ok(json!({
        "ms": elapsed,
        "isError": is_error(&r),
        "recentOrders": recent,
        "behaviorSegment": content["behavior"]["segment"],
        "sources": s,
    }))
}

/// Finds the pid of the process whose command line contains `marker` (Linux `/proc`).
fn pid_with_argument(marker: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
            .then_some(pid)
    })
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// A breaker opening on failures, failing fast, probing and closing once the server heals.
async fn breaker(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "breaker",
        "circuit breaker: failures until it opens, fast failures while open, the probe, recovery",
    );
    // A unique data folder: both the server's store and the marker to find its pid by.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let data_dir = std::env::temp_dir().join(format!(
        "mcp-orchestrator-demo-breaker-{}-{nanos}",
        std::process::id()
    ));
    let marker = data_dir.display().to_string();
    let result = breaker_run(bins, out, &marker).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn breaker_run(bins: &Bins, out: &Out, data_dir: &str) -> anyhow::Result<Value> {
    const FAILURES: u32 = 3;
    const OPEN_MS: u64 = 1000;
    let servers = json!({
        "cosmos": bins.server(
            "cosmos-mcp-server",
            &["--data-dir", data_dir, "--fail-tools", "get_user_behavior"],
        )?
    });
    let gw = start(
        config(servers, |c| {
            // Only Cosmos here: drop what names the other servers.
            c["orchestrator"]["composites"] = json!({});
            c["orchestrator"]["cache"] = json!({});
            c["orchestrator"]["servers"] = json!({ "cosmos": {
                "retry": { "maxAttempts": 1 },
                "circuitBreaker": { "consecutiveFailures": FAILURES, "openMs": OPEN_MS }
            } });
        })?,
        out,
    )
    .await?;
    let outcome = breaker_steps(&gw, out, data_dir, FAILURES, OPEN_MS).await;
    gw.shutdown().await;
    outcome
}

async fn breaker_steps(
    gw: &Gateway,
    out: &Out,
    data_dir: &str,
    failures: u32,
    open_ms: u64,
) -> anyhow::Result<Value> {
    let breaker = gw
        .upstreams()
        .first()
        .context("no cosmos upstream")?
        .policy()
        .breaker()
        .clone();
    let mut calls = Vec::new();
    let mut t = table(&["#", "phase", "outcome", "time (µs)", "breaker after"]);
    let mut n = 0;
    let mut record = |phase: &str, r: &CallToolResult, took: Duration, state: &str| {
        n += 1;
        t.add_row([
            n.to_string(),
            phase.to_owned(),
            outcome(r),
            us(took).to_string(),
            state.to_owned(),
        ]);
        calls.push(json!({
            "phase": phase, "outcome": outcome(r), "us": us(took) as u64, "breaker": state
        }));
    };
    let one = || async {
        let started = Instant::now();
        let (r, _) = call(
            gw,
            "cosmos__get_user_behavior",
            json!({ "userId": "CUST-0001" }),
        )
        .await?;
        anyhow::Ok((r, started.elapsed()))
    };

    // 1. Failures until it opens.
    let mut opened = false;
    for _ in 0..failures + 2 {
        let (r, took) = one().await?;
        let state = breaker.state().as_str();
        record("failing", &r, took, state);
        if state == "open" {
            opened = true;
            break;
        }
    }
    // 2. Fast failures while open: the server sees nothing.
    let mut open_us = Vec::new();
    for _ in 0..5 {
        let (r, took) = one().await?;
        open_us.push(us(took) as u64);
        record("open", &r, took, breaker.state().as_str());
    }
    // 3. The server heals (SIGUSR1 pauses its faults); after openMs one probe goes through.
    let pid = pid_with_argument(data_dir).context("cannot find the cosmos server's pid")?;
    signal(pid, "USR1")?;
    out.line(format!(
        "sent SIGUSR1 to cosmos-mcp-server (pid {pid}): its injected faults stop"
    ));
    let bar = out.spinner(format!("waiting out the open period ({open_ms} ms)"));
    let wait = breaker
        .snapshot()
        .next_probe_in_ms
        .unwrap_or(open_ms)
        .min(open_ms);
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    done(bar);
    let (probe, took) = one().await?;
    record("probe", &probe, took, breaker.state().as_str());
    let mut recovered = !is_error(&probe);
    for _ in 0..3 {
        let (r, took) = one().await?;
        recovered &= !is_error(&r);
        record("recovered", &r, took, breaker.state().as_str());
    }
    out.table(t);

    let transitions = breaker.transitions();
    let mut tt = table(&["at", "from", "to", "why"]);
    for tr in &transitions {
        tt.add_row([
            tr.at.format("%H:%M:%S%.3f").to_string(),
            tr.from.as_str().to_owned(),
            tr.to.as_str().to_owned(),
            tr.reason.clone(),
        ]);
    }
    out.line("breaker transitions:");
    out.table(tt);
    let closed = breaker.state().as_str() == "closed"
        && transitions
            .last()
            .is_some_and(|t| t.to.as_str() == "closed");
    Ok(json!({
        "opened": opened,
        "closed": closed,
        "recovered": recovered,
        "openFailureUs": open_us,
        "calls": calls,
        "transitions": serde_json::to_value(&transitions)?,
    }))
}

/// A flaky server (half the calls fail): the attempts and the backoff delays actually taken.
async fn retry(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "retry",
        "retry with exponential backoff and jitter against a server failing half its calls",
    );
    let servers = json!({
        "cosmos": bins.server(
            "cosmos-mcp-server",
            &["--failure-rate", "0.5", "--seed", "11"],
        )?
    });
    let gw = start(
        config(servers, |c| {
            c["orchestrator"]["composites"] = json!({});
            c["orchestrator"]["cache"] = json!({});
            c["orchestrator"]["servers"] = json!({ "cosmos": {
                "retry": { "maxAttempts": 5, "baseDelayMs": 100, "maxDelayMs": 1000,
                           "jitter": "proportional", "budgetRatio": 10.0 },
                "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 0.99 }
            } });
        })?,
        out,
    )
    .await?;
    let mut t = table(&[
        "call",
        "attempts",
        "outcomes",
        "delays before retries (ms)",
        "total (ms)",
    ]);
    let mut calls = Vec::new();
    let bar = out.spinner("calling the flaky server");
    for i in 1..=8 {
        let started = Instant::now();
        let (outcome_, report) = gw
            .call_tool_with_report(
                "cosmos__get_user_behavior",
                json!({ "userId": format!("CUST-{i:04}") })
                    .as_object()
                    .cloned(),
                &CallContext::default(),
            )
            .await;
        let total = ms(started.elapsed());
        let ok = outcome_.as_ref().is_ok_and(|r| !is_error(r));
        let outcomes: Vec<String> = report.attempts.iter().map(|a| a.outcome.clone()).collect();
        t.add_row([
            i.to_string(),
            report.attempts.len().to_string(),
            outcomes.join(" → "),
            report
                .retry_delays_ms
                .iter()
                .map(|d| format!("{d:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            format!("{total:.0}"),
        ]);
        calls.push(json!({
            "ok": ok,
            "attempts": report.attempts,
            "retryDelaysMs": report.retry_delays_ms,
            "ms": total,
        }));
    }
    done(bar);
    gw.shutdown().await;
    out.table(t);
    out.line(
        "delays: 100 ms doubling per retry (max 1000), ±20% jitter so clients do not retry in step",
    );
    let retried = calls
        .iter()
        .filter(|c| c["retryDelaysMs"].as_array().is_some_and(|d| !d.is_empty()))
        .count();
    let ok = calls.iter().filter(|c| c["ok"] == json!(true)).count();
    Ok(json!({ "calls": calls, "retried": retried, "succeeded": ok }))
}

/// Dashboard (cached), a new order, the dashboard again with the new sale.
async fn cache(bins: &Bins, out: &Out) -> anyhow::Result<Value> {
    out.intro(
        "cache",
        "cache invalidation: the cached dashboard, a new order (sql__create_order), the dashboard again with the new sale",
    );
    let gw = start(config(bins.all(&[], &[], &[])?, |_| {})?, out).await?;
    let outcome = cache_steps(&gw, out).await;
    gw.shutdown().await;
    outcome
}

async fn cache_steps(gw: &Gateway, out: &Out) -> anyhow::Result<Value> {
    let revenue = |r: &CallToolResult| {
        r.structured_content
            .as_ref()
            .and_then(|c| c["revenue"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let (first, first_ms) = call(gw, "executive_dashboard", json!({})).await?;
    let (hit, hit_ms) = call(gw, "executive_dashboard", json!({})).await?;
    let (order, order_ms) = call(
        gw,
        "sql__create_order",
        json!({
            "customerId": "CUST-0100",
            "lines": [{ "productId": "PROD-001", "quantity": 2 }],
            "idempotencyKey": format!("demo-{}", std::process::id()),
        }),
    )
    .await?;
    if is_error(&order) {
        bail!("create_order failed: {}", text_of(&order));
    }
    let order_json = order.structured_content.clone().unwrap_or_default();
    let total = order_json["order"]["total"].as_f64().unwrap_or(0.0);
    let order_id = str_of(&order_json["order"]["orderId"]);
    let (after, after_ms) = call(gw, "executive_dashboard", json!({})).await?;
    let mut t = table(&["call", "cached", "revenue", "ms"]);
    t.add_row([
        "executive_dashboard".into(),
        cached(&first).to_string(),
        format!("{:.2}", revenue(&first)),
        format!("{first_ms:.1}"),
    ]);
    t.add_row([
        "executive_dashboard (again)".into(),
        cached(&hit).to_string(),
        format!("{:.2}", revenue(&hit)),
        format!("{hit_ms:.1}"),
    ]);
    t.add_row([
        format!("sql__create_order {order_id}"),
        String::new(),
        format!("+{total:.2}"),
        format!("{order_ms:.1}"),
    ]);
    t.add_row([
        "executive_dashboard (after the order)".into(),
        cached(&after).to_string(),
        format!("{:.2}", revenue(&after)),
        format!("{after_ms:.1}"),
    ]);
    out.table(t);
    out.line("create_order invalidates the `sales` tag the dashboard's steps carry, so the next call recomputes");
    out.trace(&after);
    Ok(json!({
        "revenueBefore": revenue(&first),
        "revenueAfter": revenue(&after),
        "orderTotal": total,
        "orderId": order_id,
        "firstMs": first_ms,
        "hitMs": hit_ms,
        "hitCached": cached(&hit),
        "afterCached": cached(&after),
    }))
}

/// The text content of a result, for error messages.
fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
